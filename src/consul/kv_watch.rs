//! A blocking watch of a KV folder.
//!
//! Owns only the wiring of [`BlockingQuery`] for `?recurse` reads of a prefix. It must not
//! interpret the values.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::blocking::{BlockingQuery, WatchHandle, WatchOptions, spawn_watch};
use super::kv::{KvPair, KvPrefix, decode_kv_list, kv_segments};
use super::transport::{GetRequest, Transport};

/// The blocking query for every entry under `prefix` (a missing folder is an empty list).
pub fn kv_prefix_query(prefix: &KvPrefix, options: &WatchOptions) -> BlockingQuery<Vec<KvPair>> {
    let request = GetRequest {
        segments: kv_segments(prefix.as_str()),
        query: vec![("recurse".into(), String::new())],
        blocking: None,
    };
    BlockingQuery::new(request, options.wait, decode_kv_list)
}

/// Watches every entry under `prefix`. `changes` receives the entries (sorted by key) whenever
/// they change; `moves` every index move.
pub fn watch_kv_prefix(
    transport: Arc<dyn Transport>,
    prefix: &KvPrefix,
    options: WatchOptions,
    cancel: CancellationToken,
) -> WatchHandle<Vec<KvPair>> {
    spawn_watch(
        transport,
        kv_prefix_query(prefix, &options),
        options,
        cancel,
    )
}
