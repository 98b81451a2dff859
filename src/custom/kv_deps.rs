//! The one watch of every KV key and prefix custom templates read.
//!
//! Owns: the choice of the watched prefix (the longest common prefix of everything the
//! templates read; the whole store when they share none), the projection of one answer onto
//! each key or prefix read (the keys it covers with their modify indexes), and the task that
//! compares each answer with the last one and marks only the keys and prefixes whose projection
//! moved. However many keys the templates read, this is one long-poll.
//!
//! Must not: read values for templates (the cache does, with plain GETs, for what is marked
//! here) or decide when to render.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::consul::{Transport, WatchOptions, watch_template_kv};

/// A KV read of a template: the path as written, and true for a prefix (`ls`, `tree`).
pub type KvDep = (String, bool);

/// For each read, the keys it covers with their modify indexes, sorted by key.
pub type Projection = BTreeMap<KvDep, Vec<(String, u64)>>;

fn trimmed(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// The longest common prefix of every path read (an empty string: the whole store).
pub fn common_prefix(deps: &BTreeSet<KvDep>) -> String {
    let mut paths = deps.iter().map(|(p, _)| trimmed(p));
    let Some(first) = paths.next() else {
        return String::new();
    };
    let mut len = first.len();
    for p in paths {
        len = first
            .char_indices()
            .zip(p.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, a), _)| i + a.len_utf8())
            .min(len);
    }
    first[..len].to_owned()
}

/// Projects `pairs` (key, modify index) onto each of `deps`: a key covers the pair with exactly
/// its path, a prefix every pair whose key starts with it (as `?recurse` reads it).
pub fn project<'a>(
    deps: &BTreeSet<KvDep>,
    pairs: impl Iterator<Item = (&'a str, u64)> + Clone,
) -> Projection {
    deps.iter()
        .map(|dep| {
            let path = trimmed(&dep.0);
            let mut covered: Vec<(String, u64)> = pairs
                .clone()
                .filter(|(k, _)| {
                    if dep.1 {
                        k.starts_with(path)
                    } else {
                        *k == path
                    }
                })
                .map(|(k, i)| (k.to_owned(), i))
                .collect();
            covered.sort();
            (dep.clone(), covered)
        })
        .collect()
}

/// The reads of `new` whose projection differs from `old` (or that `old` lacks).
pub fn moved(old: &Projection, new: &Projection) -> BTreeSet<KvDep> {
    new.iter()
        .filter(|(dep, covered)| old.get(*dep) != Some(*covered))
        .map(|(dep, _)| dep.clone())
        .collect()
}

/// Watches the common prefix of `deps` with one blocking query; every answer whose projection
/// moved adds the moved reads to `dirty`. `seed` is the projection of the values the caller
/// holds, so a change between its reads and the watch's first answer is marked too. Stops when
/// `cancel` fires. Returns the watched prefix.
pub fn spawn(
    transport: Arc<dyn Transport>,
    deps: BTreeSet<KvDep>,
    seed: Projection,
    dirty: watch::Sender<BTreeSet<KvDep>>,
    options: WatchOptions,
    cancel: CancellationToken,
) -> String {
    let prefix = common_prefix(&deps);
    let mut handle = watch_template_kv(transport, &prefix, true, options, cancel.clone());
    tokio::spawn(async move {
        let mut last = seed;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = handle.changes.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let Some(pairs) = handle.changes.borrow_and_update().clone() else {
                        continue;
                    };
                    let now = project(
                        &deps,
                        pairs.iter().map(|p| (p.key.as_str(), p.modify_index)),
                    );
                    let changed = moved(&last, &now);
                    last = now;
                    if !changed.is_empty() {
                        dirty.send_modify(|d| d.extend(changed));
                    }
                }
            }
        }
    });
    prefix
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::future::BoxFuture;

    use crate::consul::{ConsulError, GetRequest, RawResponse};

    use super::*;

    fn deps(list: &[(&str, bool)]) -> BTreeSet<KvDep> {
        list.iter().map(|(p, r)| ((*p).to_owned(), *r)).collect()
    }

    #[test]
    fn the_watched_prefix_is_the_longest_common_one() {
        assert_eq!(common_prefix(&deps(&[])), "");
        assert_eq!(common_prefix(&deps(&[("cfg/a", false)])), "cfg/a");
        assert_eq!(
            common_prefix(&deps(&[
                ("cfg/app/path", false),
                ("/cfg/app/greeting", false),
                ("cfg/app/routes/", true)
            ])),
            "cfg/app/"
        );
        assert_eq!(common_prefix(&deps(&[("a/x", false), ("b/y", false)])), "");
        assert_eq!(
            common_prefix(&deps(&[("cfg/é1", false), ("cfg/é2", false)])),
            "cfg/é"
        );
    }

    #[test]
    fn each_read_sees_only_its_own_keys() {
        let d = deps(&[("cfg/a", false), ("cfg/r/", true), ("/cfg/missing", false)]);
        let before = [("cfg/a", 5), ("cfg/ab", 6), ("cfg/r/1", 7), ("other", 8)];
        let p = project(&d, before.iter().copied());
        assert_eq!(p[&("cfg/a".to_owned(), false)], [("cfg/a".to_owned(), 5)]);
        assert_eq!(p[&("cfg/r/".to_owned(), true)], [("cfg/r/1".to_owned(), 7)]);
        assert!(p[&("/cfg/missing".to_owned(), false)].is_empty());
        // A key next to a read key, but not read, moves nothing.
        let after = [("cfg/a", 5), ("cfg/ab", 9), ("cfg/r/1", 7), ("other", 10)];
        assert!(moved(&p, &project(&d, after.iter().copied())).is_empty());
        // A new key under the prefix and a created key move exactly their reads.
        let after = [
            ("cfg/a", 5),
            ("cfg/missing", 11),
            ("cfg/r/1", 7),
            ("cfg/r/2", 12),
        ];
        assert_eq!(
            moved(&p, &project(&d, after.iter().copied())),
            deps(&[("/cfg/missing", false), ("cfg/r/", true)])
        );
        // A read the old projection lacks counts as moved.
        assert_eq!(moved(&Projection::new(), &p), d);
    }

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

    fn resp(index: u64, body: &str) -> RawResponse {
        RawResponse {
            status: 200,
            index: Some(index),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn many_reads_share_one_long_poll_and_only_moved_reads_are_marked() {
        let pair = |k: &str, i: u64| format!(r#"{{"Key":"{k}","Value":"eA==","ModifyIndex":{i}}}"#);
        let script = Arc::new(Script(Mutex::new((
            [
                // First answer: equal to what the caller read.
                resp(10, &format!("[{},{}]", pair("cfg/a", 5), pair("cfg/b", 6))),
                // A key that no template reads changes: nothing is marked.
                resp(
                    11,
                    &format!(
                        "[{},{},{}]",
                        pair("cfg/a", 5),
                        pair("cfg/b", 6),
                        pair("cfg/z", 11)
                    ),
                ),
                // `cfg/b` changes.
                resp(
                    12,
                    &format!(
                        "[{},{},{}]",
                        pair("cfg/a", 5),
                        pair("cfg/b", 12),
                        pair("cfg/z", 11)
                    ),
                ),
            ]
            .into(),
            Vec::new(),
        ))));
        let d = deps(&[("cfg/a", false), ("cfg/b", false), ("cfg/c", false)]);
        let seed = project(&d, [("cfg/a", 5), ("cfg/b", 6)].into_iter());
        let (dirty_tx, mut dirty_rx) = watch::channel(BTreeSet::new());
        let cancel = CancellationToken::new();
        let prefix = spawn(
            script.clone(),
            d,
            seed,
            dirty_tx,
            WatchOptions::default(),
            cancel.clone(),
        );
        assert_eq!(prefix, "cfg/");
        let marked = tokio::time::timeout(
            Duration::from_secs(60),
            dirty_rx.wait_for(|d| !d.is_empty()),
        )
        .await
        .expect("a moved key is marked")
        .unwrap()
        .clone();
        assert_eq!(marked, deps(&[("cfg/b", false)]));
        // Every request went to the one shared prefix.
        let requests = script.0.lock().unwrap().1.clone();
        assert!(requests.len() >= 3, "{requests:?}");
        for r in &requests {
            assert_eq!(r.path(), "/v1/kv/cfg/");
            assert_eq!(r.query, [("recurse".to_owned(), String::new())]);
        }
        cancel.cancel();
    }
}
