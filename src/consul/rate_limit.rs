//! A token bucket for watcher loops.
//!
//! Owns only the timing rule: a full bucket lets a burst through at once, an empty one makes the
//! caller wait for the next token. It must not do IO. Uses tokio time, so tests can pause it.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `burst` tokens, one more every `refill_every`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: u32,
    tokens: u32,
    refill_every: Duration,
    last_refill: Instant,
}

impl TokenBucket {
    /// A full bucket. `burst` is at least 1 and `refill_every` at least 1 ms.
    pub fn new(burst: u32, refill_every: Duration) -> Self {
        let burst = burst.max(1);
        TokenBucket {
            burst,
            tokens: burst,
            refill_every: refill_every.max(Duration::from_millis(1)),
            last_refill: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        if self.tokens >= self.burst {
            self.last_refill = now;
            return;
        }
        let elapsed = now.saturating_duration_since(self.last_refill);
        let periods = elapsed.as_nanos() / self.refill_every.as_nanos().max(1);
        if periods > 0 {
            let add = u32::try_from(periods).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(add).min(self.burst);
            let advanced = self.refill_every.saturating_mul(add);
            self.last_refill = if self.tokens >= self.burst {
                now
            } else {
                self.last_refill + advanced
            };
        }
    }

    /// Changes the refill interval (at least 1 ms) from now on; tokens already earned are kept.
    pub fn set_refill_every(&mut self, refill_every: Duration) {
        let refill_every = refill_every.max(Duration::from_millis(1));
        if refill_every != self.refill_every {
            self.refill(Instant::now());
            self.refill_every = refill_every;
        }
    }

    /// Takes a token if one is available, else returns how long until the next one.
    pub fn try_take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            Ok(())
        } else {
            Err((self.last_refill + self.refill_every).saturating_duration_since(now))
        }
    }

    /// Waits for and takes a token. Cancel-safe: a dropped wait takes nothing.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_take() {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait.max(Duration::from_millis(1))).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_new_refill_interval_applies_to_the_next_token() {
        let mut b = TokenBucket::new(1, Duration::from_secs(2));
        b.acquire().await;
        assert!(b.try_take().is_err());
        b.set_refill_every(Duration::from_millis(100));
        let start = Instant::now();
        b.acquire().await;
        assert!(
            start.elapsed() <= Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill() {
        let mut b = TokenBucket::new(2, Duration::from_millis(100));
        let start = Instant::now();
        b.acquire().await;
        b.acquire().await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a burst of two passes at once"
        );
        b.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        for _ in 0..10 {
            b.acquire().await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(1100),
            "then one per refill"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        let t = Instant::now();
        b.acquire().await;
        b.acquire().await;
        assert_eq!(t.elapsed(), Duration::ZERO, "refills up to the burst only");
        assert!(b.try_take().is_err());
    }
}
