//! A generic blocking-query watcher.
//!
//! Owns the blocking-query rules (Consul API reference, section 3.7) as a state machine,
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
