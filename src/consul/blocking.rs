//! A generic blocking-query watcher.
//!
//! Owns the blocking-query rules (those of Consul's blocking-query documentation) as a state machine,
//! [`BlockingQuery`], whose [`BlockingQuery::step`] performs exactly one blocking GET:
//!
//! * the first call uses `index=0`; afterwards the last `X-Consul-Index` is sent back;
//! * the index is clamped to at least 1; an index that goes backwards resets the next request
//!   to `index=0`;
//! * `wait` is sent with a unit (`wait=60000ms`); the transport gives the request a timeout
//!   above `wait + wait/16`, and a timeout counts as "no change";
//! * an unchanged index is "no change" and the body is not even decoded;
//! * the decoded payload is compared with the previous one before anything is emitted.
//!
//! [`spawn_watch`] drives a query forever: a token bucket (burst 2, about 10/s) bounds the loop
//! under churn while a single change passes at once, and every error is retried with jittered
//! exponential backoff (backon, reset after a success). It must not interpret payloads.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::ConsulError;
use super::rate_limit::TokenBucket;
use super::transport::{Blocking, GetRequest, RawResponse, Transport};

/// Timing options of a watcher loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// Server-side wait of each blocking call.
    pub wait: Duration,
    /// Token-bucket burst.
    pub burst: u32,
    /// Token-bucket refill interval (100 ms: about 10 calls per second under churn).
    pub refill_every: Duration,
    /// First backoff delay after an error.
    pub backoff_min: Duration,
    /// Longest backoff delay before jitter (jitter adds up to 100 %).
    pub backoff_max: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            wait: Duration::from_secs(60),
            burst: 2,
            refill_every: Duration::from_millis(100),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
}

impl WatchOptions {
    /// A fresh backoff schedule: exponential from `backoff_min`, capped at `backoff_max`,
    /// jittered, never ending.
    pub fn backoff(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.backoff_min)
            .with_max_delay(self.backoff_max)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// Decodes a response into a comparable payload.
pub type Decoder<T> = Arc<dyn Fn(&RawResponse) -> Result<T, ConsulError> + Send + Sync>;

/// The outcome of one [`BlockingQuery::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// Timeout, or the same index as before: nothing happened.
    NoChange,
    /// The index moved but the payload is equal to the previous one.
    IndexMoved {
        /// The new index.
        index: u64,
    },
    /// The payload changed (always the case for the first answer).
    Changed {
        /// The new index.
        index: u64,
        /// The new payload.
        payload: Arc<T>,
    },
}

/// The state of one blocking query: last index and last payload.
pub struct BlockingQuery<T> {
    request: GetRequest,
    decode: Decoder<T>,
    wait: Duration,
    /// The index sent with the next request.
    next_index: u64,
    /// The last index seen in a response (0 before the first one).
    last_index: u64,
    payload: Option<Arc<T>>,
}

impl<T> std::fmt::Debug for BlockingQuery<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingQuery")
            .field("path", &self.request.path())
            .field("next_index", &self.next_index)
            .field("last_index", &self.last_index)
            .finish_non_exhaustive()
    }
}

impl<T: PartialEq + Send + Sync + 'static> BlockingQuery<T> {
    /// A query on `request` (its `blocking` field is managed here) decoded by `decode`.
    pub fn new(
        request: GetRequest,
        wait: Duration,
        decode: impl Fn(&RawResponse) -> Result<T, ConsulError> + Send + Sync + 'static,
    ) -> Self {
        BlockingQuery {
            request,
            decode: Arc::new(decode),
            wait,
            next_index: 0,
            last_index: 0,
            payload: None,
        }
    }

    /// The index the next request will send.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// The last index seen (0 before the first answer).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The last payload, if any.
    pub fn payload(&self) -> Option<&Arc<T>> {
        self.payload.as_ref()
    }

    /// Performs one blocking GET and applies the rules. On error the state is unchanged.
    pub async fn step(&mut self, transport: &dyn Transport) -> Result<Step<T>, ConsulError> {
        let mut request = self.request.clone();
        request.blocking = Some(Blocking {
            index: self.next_index,
            wait: self.wait,
        });
        let resp = match transport.get(request).await {
            Ok(resp) => resp,
            Err(ConsulError::Timeout) => return Ok(Step::NoChange),
            Err(e) => return Err(e),
        };
        let index = resp
            .index
            .ok_or_else(|| ConsulError::decode(self.request.path(), "missing X-Consul-Index"))?
            .max(1);
        if self.payload.is_some() && index == self.last_index {
            self.next_index = index;
            return Ok(Step::NoChange);
        }
        let payload = (self.decode)(&resp)?;
        self.next_index = if index < self.last_index {
            tracing::debug!(path = %self.request.path(), old = self.last_index, new = index, "index went backwards, resetting");
            0
        } else {
            index
        };
        self.last_index = index;
        match &self.payload {
            Some(old) if **old == payload => Ok(Step::IndexMoved { index }),
            _ => {
                let payload = Arc::new(payload);
                self.payload = Some(payload.clone());
                Ok(Step::Changed { index, payload })
            }
        }
    }
}

/// One index move seen by a watcher.
#[derive(Debug)]
pub struct WatchEvent<T> {
    /// The new index.
    pub index: u64,
    /// The payload at that index.
    pub payload: Arc<T>,
    /// Whether the payload differs from the previous one.
    pub changed: bool,
    /// Number of index moves seen so far (1 for the first answer).
    pub moves: u64,
}

impl<T> Clone for WatchEvent<T> {
    fn clone(&self) -> Self {
        WatchEvent {
            index: self.index,
            payload: self.payload.clone(),
            changed: self.changed,
            moves: self.moves,
        }
    }
}

/// The two outputs of a watcher.
#[derive(Debug, Clone)]
pub struct WatchHandle<T> {
    /// Updated on every index move, payload changed or not (for silent-change detection).
    pub moves: watch::Receiver<Option<WatchEvent<T>>>,
    /// Updated only when the payload changed.
    pub changes: watch::Receiver<Option<Arc<T>>>,
}

/// Drives `query` until `cancel` fires, publishing to a [`WatchHandle`].
pub fn spawn_watch<T: PartialEq + Send + Sync + 'static>(
    transport: Arc<dyn Transport>,
    query: BlockingQuery<T>,
    options: WatchOptions,
    cancel: CancellationToken,
) -> WatchHandle<T> {
    let (moves_tx, moves) = watch::channel(None);
    let (changes_tx, changes) = watch::channel(None);
    tokio::spawn(run_watch(
        transport, query, options, cancel, moves_tx, changes_tx,
    ));
    WatchHandle { moves, changes }
}

async fn run_watch<T: PartialEq + Send + Sync + 'static>(
    transport: Arc<dyn Transport>,
    mut query: BlockingQuery<T>,
    options: WatchOptions,
    cancel: CancellationToken,
    moves_tx: watch::Sender<Option<WatchEvent<T>>>,
    changes_tx: watch::Sender<Option<Arc<T>>>,
) {
    let mut bucket = TokenBucket::new(options.burst, options.refill_every);
    let mut backoff = options.backoff();
    let mut moves = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = bucket.acquire() => {}
        }
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            r = query.step(&*transport) => r,
        };
        match result {
            Ok(step) => {
                backoff = options.backoff();
                match step {
                    Step::NoChange => {}
                    Step::IndexMoved { index } => {
                        if let Some(payload) = query.payload().cloned() {
                            moves += 1;
                            moves_tx.send_replace(Some(WatchEvent {
                                index,
                                payload,
                                changed: false,
                                moves,
                            }));
                        }
                    }
                    Step::Changed { index, payload } => {
                        moves += 1;
                        changes_tx.send_replace(Some(payload.clone()));
                        moves_tx.send_replace(Some(WatchEvent {
                            index,
                            payload,
                            changed: true,
                            moves,
                        }));
                    }
                }
            }
            Err(error) => {
                let delay = backoff.next().unwrap_or(options.backoff_max);
                tracing::warn!(
                    path = %query.request.path(),
                    %error,
                    retryable = error.is_retryable(),
                    delay_ms = delay.as_millis() as u64,
                    "blocking query failed, retrying"
                );
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use futures_util::future::BoxFuture;
    use tokio::time::Instant;

    use super::*;

    #[derive(Debug, Clone)]
    enum Reply {
        Ok(u64, &'static str),
        NoIndex,
        After(Duration, u64, &'static str),
        Err(u16),
        Timeout,
        /// Answers at once, forever, with a new index and payload each time.
        Churn,
    }

    #[derive(Default)]
    struct Scripted {
        replies: Mutex<VecDeque<Reply>>,
        requests: Mutex<Vec<(Instant, Blocking)>>,
        churn: AtomicUsize,
    }

    impl Scripted {
        fn new(replies: impl IntoIterator<Item = Reply>) -> Arc<Self> {
            Arc::new(Scripted {
                replies: Mutex::new(replies.into_iter().collect()),
                ..Default::default()
            })
        }
        fn indexes(&self) -> Vec<u64> {
            self.requests
                .lock()
                .unwrap()
                .iter()
                .map(|r| r.1.index)
                .collect()
        }
        fn times(&self) -> Vec<Instant> {
            self.requests.lock().unwrap().iter().map(|r| r.0).collect()
        }
    }

    fn ok(index: u64, body: &str) -> Result<RawResponse, ConsulError> {
        Ok(RawResponse {
            status: 200,
            index: Some(index),
            body: Bytes::from(body.to_owned()),
        })
    }

    impl Transport for Scripted {
        fn get(&self, request: GetRequest) -> BoxFuture<'_, Result<RawResponse, ConsulError>> {
            Box::pin(async move {
                let blocking = request.blocking.unwrap();
                self.requests
                    .lock()
                    .unwrap()
                    .push((Instant::now(), blocking));
                let next = {
                    let mut q = self.replies.lock().unwrap();
                    match q.front() {
                        Some(Reply::Churn) => Some(Reply::Churn),
                        _ => q.pop_front(),
                    }
                };
                match next {
                    Some(Reply::Ok(i, b)) => ok(i, b),
                    Some(Reply::NoIndex) => Ok(RawResponse {
                        status: 200,
                        index: None,
                        body: Bytes::new(),
                    }),
                    Some(Reply::After(d, i, b)) => {
                        tokio::time::sleep(d).await;
                        ok(i, b)
                    }
                    Some(Reply::Err(status)) => Err(ConsulError::Status {
                        status,
                        body: "boom".into(),
                    }),
                    Some(Reply::Timeout) => Err(ConsulError::Timeout),
                    Some(Reply::Churn) => {
                        let n = self.churn.fetch_add(1, Ordering::SeqCst) as u64 + 1;
                        Ok(RawResponse {
                            status: 200,
                            index: Some(n),
                            body: Bytes::from(n.to_string()),
                        })
                    }
                    None => std::future::pending().await,
                }
            })
        }
    }

    fn decode_text(resp: &RawResponse) -> Result<String, ConsulError> {
        let s = String::from_utf8(resp.body.to_vec()).map_err(|e| ConsulError::decode("t", e))?;
        if s == "garbage" {
            return Err(ConsulError::decode("t", "garbage"));
        }
        Ok(s)
    }

    fn query() -> BlockingQuery<String> {
        BlockingQuery::new(
            GetRequest::new(["v1", "kv", "x"]),
            Duration::from_secs(60),
            decode_text,
        )
    }

    fn changed(s: &Step<String>) -> Option<(u64, &str)> {
        match s {
            Step::Changed { index, payload } => Some((*index, payload.as_str())),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_call_uses_index_zero_then_the_returned_index() {
        let t = Scripted::new([Reply::Ok(5, "a"), Reply::Ok(7, "b")]);
        let mut q = query();
        assert_eq!(changed(&q.step(&*t).await.unwrap()), Some((5, "a")));
        assert_eq!(changed(&q.step(&*t).await.unwrap()), Some((7, "b")));
        assert_eq!(t.indexes(), vec![0, 5]);
        assert_eq!(q.next_index(), 7);
        let waits: Vec<_> = t
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.1.wait)
            .collect();
        assert_eq!(waits, vec![Duration::from_secs(60); 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn index_going_backwards_resets_to_zero() {
        let t = Scripted::new([Reply::Ok(10, "a"), Reply::Ok(4, "b"), Reply::Ok(4, "b")]);
        let mut q = query();
        q.step(&*t).await.unwrap();
        assert_eq!(changed(&q.step(&*t).await.unwrap()), Some((4, "b")));
        assert_eq!(q.next_index(), 0);
        assert_eq!(q.step(&*t).await.unwrap(), Step::NoChange);
        assert_eq!(t.indexes(), vec![0, 10, 0]);
        assert_eq!(q.next_index(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn index_is_clamped_to_at_least_one() {
        let t = Scripted::new([Reply::Ok(0, "a"), Reply::Ok(0, "a"), Reply::NoIndex]);
        let mut q = query();
        assert_eq!(changed(&q.step(&*t).await.unwrap()), Some((1, "a")));
        assert_eq!(q.next_index(), 1);
        assert_eq!(q.step(&*t).await.unwrap(), Step::NoChange);
        assert_eq!(t.indexes(), vec![0, 1]);
        assert!(matches!(q.step(&*t).await, Err(ConsulError::Decode { .. })));
        assert_eq!(q.next_index(), 1, "an error leaves the state alone");
    }

    #[tokio::test(start_paused = true)]
    async fn unchanged_index_is_no_change_and_is_not_decoded() {
        let t = Scripted::new([Reply::Ok(5, "a"), Reply::Ok(5, "garbage")]);
        let mut q = query();
        q.step(&*t).await.unwrap();
        assert_eq!(q.step(&*t).await.unwrap(), Step::NoChange);
        assert_eq!(q.payload().map(|p| p.as_str()), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_is_no_change() {
        let t = Scripted::new([Reply::Ok(5, "a"), Reply::Timeout, Reply::Ok(6, "b")]);
        let mut q = query();
        q.step(&*t).await.unwrap();
        assert_eq!(q.step(&*t).await.unwrap(), Step::NoChange);
        assert_eq!(q.next_index(), 5);
        q.step(&*t).await.unwrap();
        assert_eq!(t.indexes(), vec![0, 5, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn equal_payload_moves_the_index_but_is_not_a_change() {
        let t = Scripted::new([Reply::Ok(5, "a"), Reply::Ok(6, "a"), Reply::Ok(7, "b")]);
        let mut q = query();
        q.step(&*t).await.unwrap();
        assert_eq!(q.step(&*t).await.unwrap(), Step::IndexMoved { index: 6 });
        assert_eq!(q.next_index(), 6);

        // Through the runner: `moves` sees all three answers, `changes` only two payloads.
        let t = Scripted::new([Reply::Ok(5, "a"), Reply::Ok(6, "a"), Reply::Ok(7, "b")]);
        let cancel = CancellationToken::new();
        let mut h = spawn_watch(t.clone(), query(), WatchOptions::default(), cancel.clone());
        let mut seen = Vec::new();
        loop {
            h.changes.changed().await.unwrap();
            let v = h.changes.borrow_and_update().clone().unwrap();
            seen.push(v.to_string());
            if *v == "b" {
                break;
            }
        }
        let last = h.moves.borrow().clone().unwrap();
        assert_eq!((last.index, last.moves, last.changed), (7, 3, true));
        assert!(seen.len() <= 2 && seen.last().map(String::as_str) == Some("b"));
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_with_jitter_forever_and_reset_after_success() {
        let mut script = vec![Reply::Err(500); 20];
        script.push(Reply::Ok(5, "a"));
        script.extend(vec![Reply::Err(503); 3]);
        let t = Scripted::new(script);
        let cancel = CancellationToken::new();
        let _h = spawn_watch(t.clone(), query(), WatchOptions::default(), cancel.clone());
        while t.requests.lock().unwrap().len() < 25 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cancel.cancel();
        let times = t.times();
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let base = |k: u32| {
            (Duration::from_millis(100) * 2u32.saturating_pow(k)).min(Duration::from_secs(2))
        };
        // Gaps 0..20 follow the 20 errors: exponential from 100 ms, capped at 2 s, jitter < 100 %
        // (the timer's millisecond rounding can reach exactly twice the base).
        for (k, gap) in gaps[..20].iter().enumerate() {
            let b = base(k as u32);
            assert!(*gap >= b && *gap <= b * 2, "gap {k}: {gap:?} vs base {b:?}");
        }
        assert!(
            gaps[..20]
                .iter()
                .enumerate()
                .any(|(k, g)| *g != base(k as u32)),
            "jitter is applied"
        );
        // Request 20 succeeded; the next follows at once and its failure waits ~100 ms again.
        assert_eq!(gaps[20], Duration::ZERO);
        assert!(
            gaps[21] >= base(0) && gaps[21] <= base(0) * 2,
            "{:?}",
            gaps[21]
        );
        assert!(
            gaps[22] >= base(1) && gaps[22] <= base(1) * 2,
            "{:?}",
            gaps[22]
        );
        assert_eq!(t.indexes()[21], 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_change_passes_at_once() {
        let t = Scripted::new([
            Reply::Ok(5, "a"),
            Reply::After(Duration::from_secs(30), 6, "b"),
            Reply::After(Duration::from_secs(30), 7, "c"),
        ]);
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let mut h = spawn_watch(t.clone(), query(), WatchOptions::default(), cancel.clone());
        h.changes
            .wait_for(|v| v.as_deref().map(String::as_str) == Some("a"))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        h.changes
            .wait_for(|v| v.as_deref().map(String::as_str) == Some("b"))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        h.changes
            .wait_for(|v| v.as_deref().map(String::as_str) == Some("c"))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn churn_degrades_into_bounded_polling() {
        let t = Scripted::new([Reply::Churn]);
        let cancel = CancellationToken::new();
        let _h = spawn_watch(t.clone(), query(), WatchOptions::default(), cancel.clone());
        tokio::time::sleep(Duration::from_secs(5)).await;
        cancel.cancel();
        let n = t.requests.lock().unwrap().len();
        // Burst of 2, then one per 100 ms: 2 + 50 (plus one at the boundary).
        assert!((50..=53).contains(&n), "{n} requests in 5 s");
        let times = t.times();
        assert_eq!(
            times[1] - times[0],
            Duration::ZERO,
            "the burst is not delayed"
        );
    }
}
