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

impl super::ConsulClient {
    /// [`watch_kv_prefix`] through this client.
    pub fn watch_kv_prefix(
        &self,
        prefix: &KvPrefix,
        options: WatchOptions,
        cancel: CancellationToken,
    ) -> WatchHandle<Vec<KvPair>> {
        watch_kv_prefix(Arc::new(self.clone()), prefix, options, cancel)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use bytes::Bytes;
    use futures_util::future::BoxFuture;

    use super::super::error::ConsulError;
    use super::super::transport::RawResponse;
    use super::*;

    struct Script(Mutex<(VecDeque<RawResponse>, Vec<GetRequest>)>);

    impl Transport for Script {
        fn get(&self, request: GetRequest) -> BoxFuture<'_, Result<RawResponse, ConsulError>> {
            Box::pin(async move {
                let next = {
                    let mut s = self.0.lock().unwrap();
                    s.1.push(request);
                    s.0.pop_front()
                };
                match next {
                    Some(r) => Ok(r),
                    None => std::future::pending().await,
                }
            })
        }
    }

    fn resp(status: u16, index: u64, body: &'static str) -> RawResponse {
        RawResponse {
            status,
            index: Some(index),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn missing_folder_is_empty_then_entries_arrive() {
        let script = Arc::new(Script(Mutex::new((
            [
                resp(404, 3, ""),
                resp(404, 4, ""),
                resp(
                    200,
                    6,
                    r#"[{"Key":"svc/a","Value":"eA==","ModifyIndex":6}]"#,
                ),
            ]
            .into(),
            Vec::new(),
        ))));
        let cancel = CancellationToken::new();
        let prefix = KvPrefix::new("svc/").unwrap();
        let mut h = watch_kv_prefix(
            script.clone(),
            &prefix,
            WatchOptions::default(),
            cancel.clone(),
        );
        let first = h
            .changes
            .wait_for(Option::is_some)
            .await
            .unwrap()
            .clone()
            .unwrap();
        assert!(first.is_empty());
        let got = h
            .changes
            .wait_for(|v| v.as_ref().is_some_and(|v| !v.is_empty()))
            .await
            .unwrap()
            .clone()
            .unwrap();
        assert_eq!(
            (got[0].key.as_str(), got[0].value.as_slice()),
            ("svc/a", &b"x"[..])
        );
        let moves = h.moves.borrow().clone().unwrap().moves;
        assert_eq!(
            moves, 3,
            "the 404 at index 4 is an index move without a change"
        );
        cancel.cancel();
        let requests = script.0.lock().unwrap().1.clone();
        assert_eq!(requests[0].path(), "/v1/kv/svc/");
        assert_eq!(requests[0].query, [("recurse".to_owned(), String::new())]);
        let idx: Vec<u64> = requests.iter().map(|r| r.blocking.unwrap().index).collect();
        assert_eq!(&idx[..3], &[0, 3, 4]);
    }
}
