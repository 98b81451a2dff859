//! Blocking-query parameters and the wait loop.
//!
//! Owns: parsing `index` and `wait` (Go durations; 5 min default, 10 min cap, jitter up to
//! wait/16) and waiting for a read to become "ready" (its index entry above the client's
//! index, or its content hash different) by sleeping on a `watch` channel that carries
//! the raft index. An idle blocked request is one parked future: no polling.
//! Must not: know which index entry an endpoint reports (the caller's read decides) or
//! build HTTP responses.

use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::duration::parse_go_duration;

/// Default blocking wait.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Maximum blocking wait.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// A bad blocking parameter (400; the message is the body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockingError {
    #[error("Invalid wait time")]
    Wait,
    #[error("Invalid index")]
    Index,
}

/// Parsed `index` / `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockingParams {
    /// 0 means "do not block".
    pub index: u64,
    /// The wait before jitter, capped.
    pub wait: Duration,
}

/// Parses `?index=` and `?wait=` as Consul's `parseWait` does.
pub fn parse_params(
    index: Option<&str>,
    wait: Option<&str>,
) -> Result<BlockingParams, BlockingError> {
    let wait = match wait {
        None => DEFAULT_WAIT,
        Some(w) => {
            let d = parse_go_duration(w).map_err(|_| BlockingError::Wait)?;
            if d.is_zero() {
                DEFAULT_WAIT
            } else {
                d.min(MAX_WAIT)
            }
        }
    };
    let index = match index {
        None | Some("") => 0,
        Some(i) => i.parse::<u64>().map_err(|_| BlockingError::Index)?,
    };
    Ok(BlockingParams { index, wait })
}

/// The wait plus random jitter in `[0, wait/16)`.
pub fn with_jitter(wait: Duration) -> Duration {
    let max = wait.as_nanos() / 16;
    if max == 0 {
        return wait;
    }
    let max = u64::try_from(max).unwrap_or(u64::MAX);
    wait + Duration::from_nanos(rand::rng().random_range(0..max))
}

/// Runs `read` until it reports ready, the deadline passes, or `cancel` fires; returns
/// the last read. `read` returns `(value, ready)`. With `block == false` it reads once.
pub async fn block_until<T>(
    mut rx: watch::Receiver<u64>,
    block: bool,
    timeout: Duration,
    cancel: &CancellationToken,
    mut read: impl FnMut() -> (T, bool),
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        // Mark the current raft index seen before reading, so no write is missed.
        rx.borrow_and_update();
        let (value, ready) = read();
        if !block || ready || Instant::now() >= deadline {
            return value;
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return read().0;
                }
            }
            () = tokio::time::sleep_until(deadline) => return read().0,
            () = cancel.cancelled() => return read().0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wait_and_index_like_consul() {
        assert_eq!(
            parse_params(None, None),
            Ok(BlockingParams {
                index: 0,
                wait: DEFAULT_WAIT
            })
        );
        assert_eq!(
            parse_params(Some("7"), Some("60000ms")).unwrap().wait,
            Duration::from_secs(60)
        );
        assert_eq!(parse_params(Some("7"), Some("1h")).unwrap().wait, MAX_WAIT);
        assert_eq!(parse_params(None, Some("5")), Err(BlockingError::Wait));
        assert_eq!(parse_params(None, Some("abc")), Err(BlockingError::Wait));
        assert_eq!(parse_params(Some("-1"), None), Err(BlockingError::Index));
        assert_eq!(parse_params(Some("abc"), None), Err(BlockingError::Index));
    }

    #[test]
    fn jitter_is_bounded() {
        for _ in 0..100 {
            let d = with_jitter(Duration::from_millis(1600));
            assert!(d >= Duration::from_millis(1600) && d < Duration::from_millis(1700));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_with_current_value() {
        let (_tx, rx) = watch::channel(1u64);
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let v = block_until(rx, true, Duration::from_secs(5), &cancel, || (42, false)).await;
        assert_eq!(v, 42);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_on_relevant_write_only() {
        let (tx, rx) = watch::channel(1u64);
        let cancel = CancellationToken::new();
        let state = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
        let s2 = state.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            // an unrelated write: wakes, re-checks, keeps blocking
            tx.send_replace(2);
            tokio::time::sleep(Duration::from_secs(1)).await;
            s2.store(3, std::sync::atomic::Ordering::SeqCst);
            tx.send_replace(3);
            tx
        });
        let start = Instant::now();
        let v = block_until(rx, true, Duration::from_secs(60), &cancel, || {
            let idx = state.load(std::sync::atomic::Ordering::SeqCst);
            (idx, idx > 1)
        })
        .await;
        assert_eq!(v, 3);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        drop(writer.await);
    }

    #[tokio::test(start_paused = true)]
    async fn no_block_reads_once() {
        let (_tx, rx) = watch::channel(1u64);
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let v = block_until(rx, false, Duration::from_secs(5), &cancel, || (1, false)).await;
        assert_eq!(v, 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
