//! One budget for the retries of a pipeline's loads and applies (gRPC's
//! retry throttling, Finagle's `RetryBudget`), so that while Convex fails,
//! the requests retrying together add a bounded load, however many there
//! are, instead of each adding its own.
//!
//! A retry spends a token; every success earns [`PER_SUCCESS`] of one; the
//! bucket holds at most [`BURST`]. When it is empty a retry waits (after
//! its own backoff) until a token comes back, which time also does, at
//! [`FLOOR_PER_SEC`]: the pipeline retries forever and never gives up on
//! an event, so an outage is still probed once a second while nothing
//! succeeds. In steady operation retries stay at a tenth of successes.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Retries that may go out at once after a calm period.
pub(crate) const BURST: f64 = 10.0;

/// A token earned per success: retries are ~10 % of requests at most,
/// beyond the burst and the floor.
pub(crate) const PER_SUCCESS: f64 = 0.1;

/// Tokens that time alone gives back, per second.
pub(crate) const FLOOR_PER_SEC: f64 = 1.0;

#[derive(Debug)]
struct Tokens {
    tokens: f64,
    refilled: Instant,
}

/// Shared by every retry policy of one pipeline (see
/// [`crate::sink::RetryPolicy::with_budget`]).
#[derive(Debug)]
pub struct RetryBudget {
    state: Mutex<Tokens>,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            state: Mutex::new(Tokens {
                tokens: BURST,
                refilled: Instant::now(),
            }),
        }
    }
}

impl RetryBudget {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        // Nothing panics while holding it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request succeeded.
    pub(crate) fn earn(&self) {
        let mut t = self.lock();
        t.tokens = (t.tokens + PER_SUCCESS).min(BURST);
    }

    /// Spends a token for a retry now, or says how long until one is there.
    pub(crate) fn try_spend(&self, now: Instant) -> Result<(), Duration> {
        let mut t = self.lock();
        let elapsed = now.saturating_duration_since(t.refilled).as_secs_f64();
        t.tokens = (t.tokens + FLOOR_PER_SEC * elapsed).min(BURST);
        t.refilled = now;
        // The margin absorbs the rounding of ten tenths.
        if t.tokens >= 1.0 - 1e-9 {
            t.tokens = (t.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - t.tokens) / FLOOR_PER_SEC))
        }
    }

    /// Waits for a token and spends it.
    pub(crate) async fn spend(&self) {
        loop {
            match self.try_spend(Instant::now()) {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_retry_a_second_while_nothing_succeeds() {
        let b = RetryBudget::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(b.try_spend(t0), Ok(()));
        }
        let wait = b.try_spend(t0).expect_err("empty");
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-9, "{wait:?}");
        assert_eq!(b.try_spend(t0 + Duration::from_secs(1)), Ok(()));
        assert!(b.try_spend(t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn successes_earn_a_tenth_of_a_retry_each() {
        let b = RetryBudget::default();
        let t0 = Instant::now();
        while b.try_spend(t0).is_ok() {}
        for _ in 0..9 {
            b.earn();
        }
        assert!(b.try_spend(t0).is_err(), "nine successes are not a retry");
        b.earn();
        assert_eq!(b.try_spend(t0), Ok(()));
    }
}
