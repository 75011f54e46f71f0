//! Retrying transient Convex failures with exponential backoff and jitter.
//!
//! Only [`SinkError::is_transient`] errors are retried; a definite error
//! returns at once. The delay before retry `n` is `min_delay * factor^n`
//! with up to +100 % jitter, capped at `max_delay`; a server `Retry-After`
//! raises it (never lowers it), itself capped at `max_retry_after`.
//! `max_retries: None` retries forever (the pipeline: never confirm, never
//! give up); `Some(n)` gives up after `n` retries (CLI tools).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::sink::error::SinkError;
use crate::sink::retry_budget::RetryBudget;

/// Called before each retry sleep with the error, the retry number (1-based)
/// and the delay: hook metrics here.
pub type RetryHook = Arc<dyn Fn(&SinkError, u32, Duration) + Send + Sync>;

#[derive(Clone)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub factor: f32,
    /// `None` = forever.
    pub max_retries: Option<usize>,
    /// Upper bound on a server-requested `Retry-After`.
    pub max_retry_after: Duration,
    pub jitter: bool,
    pub on_retry: Option<RetryHook>,
    /// Shared with the other policies of a pipeline: each retry waits for
    /// one of its tokens after its backoff.
    pub budget: Option<Arc<RetryBudget>>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("min_delay", &self.min_delay)
            .field("max_delay", &self.max_delay)
            .field("factor", &self.factor)
            .field("max_retries", &self.max_retries)
            .field("max_retry_after", &self.max_retry_after)
            .field("jitter", &self.jitter)
            .field("on_retry", &self.on_retry.is_some())
            .field("budget", &self.budget.is_some())
            .finish()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::forever()
    }
}

impl RetryPolicy {
    /// Retries transient errors forever: 100 ms doubling to 10 s, jittered.
    pub fn forever() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            factor: 2.0,
            max_retries: None,
            max_retry_after: Duration::from_secs(60),
            jitter: true,
            on_retry: None,
            budget: None,
        }
    }

    /// Like [`RetryPolicy::forever`] but gives up after `retries` retries.
    pub fn bounded(retries: usize) -> Self {
        RetryPolicy {
            max_retries: Some(retries),
            ..RetryPolicy::forever()
        }
    }

    pub fn with_delays(mut self, min: Duration, max: Duration) -> Self {
        self.min_delay = min;
        self.max_delay = max.max(min);
        self
    }

    pub fn with_max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }

    pub fn with_hook(mut self, hook: RetryHook) -> Self {
        self.on_retry = Some(hook);
        self
    }

    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    fn builder(&self) -> ExponentialBuilder {
        // Jitter adds up to +100 %: grow to half the cap, clamp after.
        let max = if self.jitter {
            (self.max_delay / 2).max(self.min_delay)
        } else {
            self.max_delay
        };
        let b = ExponentialBuilder::new()
            .with_min_delay(self.min_delay)
            .with_max_delay(max)
            .with_factor(self.factor.max(1.0));
        let b = if self.jitter { b.with_jitter() } else { b };
        match self.max_retries {
            Some(n) => b.with_max_times(n),
            None => b.without_max_times(),
        }
    }

    /// The sleep before the next retry, given backon's proposal.
    fn delay(&self, err: &SinkError, proposed: Duration) -> Duration {
        let d = proposed.min(self.max_delay);
        match err.retry_after() {
            Some(ra) => d.max(ra.min(self.max_retry_after)),
            None => d,
        }
    }
}

/// Runs `f` until it succeeds, fails definitely, or the policy gives up.
/// Each retry is logged (`warn`, with `what`, the error class, the retry
/// number and the delay) and reported to the policy's hook.
pub async fn with_retry<F, Fut, T>(policy: &RetryPolicy, what: &str, f: F) -> Result<T, SinkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SinkError>>,
{
    let mut retries: u32 = 0;
    let budget = policy.budget.clone();
    let result = f
        .retry(policy.builder())
        .sleep(move |delay| {
            let budget = budget.clone();
            async move {
                tokio::time::sleep(delay).await;
                if let Some(b) = budget {
                    b.spend().await;
                }
            }
        })
        .when(SinkError::is_transient)
        .adjust(|e, proposed| proposed.map(|d| policy.delay(e, d)))
        .notify(|e, delay| {
            retries += 1;
            tracing::warn!(
                what,
                class = e.class(),
                retry = retries,
                delay_ms = delay.as_millis() as u64,
                error = %e,
                "transient Convex failure; retrying"
            );
            if let Some(hook) = &policy.on_retry {
                hook(e, retries, delay);
            }
        })
        .await;
    if let (Ok(_), Some(b)) = (&result, &policy.budget) {
        b.earn();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy::forever().with_delays(Duration::from_millis(1), Duration::from_millis(4))
    }

    fn transient() -> SinkError {
        SinkError::Server {
            path: "p".into(),
            status: 503,
            code: "Overloaded".into(),
            message: "busy".into(),
            retry_after: None,
        }
    }

    #[tokio::test]
    async fn retries_transient_until_success() {
        let calls = AtomicU32::new(0);
        let hooked = Arc::new(AtomicU32::new(0));
        let h = hooked.clone();
        let policy = fast().with_hook(Arc::new(move |_, _, _| {
            h.fetch_add(1, Ordering::Relaxed);
        }));
        let v = with_retry(&policy, "t", || async {
            if calls.fetch_add(1, Ordering::Relaxed) < 5 {
                Err(transient())
            } else {
                Ok(42)
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 42);
        assert_eq!(calls.load(Ordering::Relaxed), 6);
        assert_eq!(hooked.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn definite_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = with_retry(&fast(), "t", || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(SinkError::Function {
                path: "p".into(),
                message: "bad".into(),
                data: None,
            })
        })
        .await;
        assert!(matches!(r, Err(SinkError::Function { .. })));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn bounded_gives_up() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            max_retries: Some(3),
            ..fast()
        };
        let r: Result<(), _> = with_retry(&policy, "t", || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(transient())
        })
        .await;
        assert!(r.unwrap_err().is_transient());
        assert_eq!(calls.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn delays_are_capped_and_honour_retry_after() {
        let p = RetryPolicy::forever();
        let mut b = backon::BackoffBuilder::build(p.builder());
        let mut last = Duration::ZERO;
        for _ in 0..50 {
            let d = p.delay(&transient(), b.next().unwrap());
            assert!(d <= p.max_delay, "{d:?}");
            last = d;
        }
        assert!(last >= p.max_delay / 2, "{last:?}");
        let ra = SinkError::RateLimited {
            path: "p".into(),
            code: String::new(),
            message: String::new(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            p.delay(&ra, Duration::from_millis(100)),
            Duration::from_secs(3)
        );
        assert_eq!(p.delay(&ra, Duration::from_secs(5)), Duration::from_secs(5));
        let huge = SinkError::RateLimited {
            path: "p".into(),
            code: String::new(),
            message: String::new(),
            retry_after: Some(Duration::from_secs(3600)),
        };
        assert_eq!(p.delay(&huge, Duration::from_millis(1)), p.max_retry_after);
    }

    /// 64 requests retrying at once (the default policy) against a
    /// deployment down for 60 s; returns the attempts made meanwhile.
    async fn outage_of_60s(policy: RetryPolicy) -> u32 {
        let calls = Arc::new(AtomicU32::new(0));
        let t0 = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (calls, policy) = (calls.clone(), policy.clone());
            tasks.push(tokio::spawn(async move {
                with_retry(&policy, "t", || {
                    let calls = calls.clone();
                    async move {
                        if t0.elapsed() < Duration::from_secs(60) {
                            calls.fetch_add(1, Ordering::Relaxed);
                            Err(transient())
                        } else {
                            Ok(())
                        }
                    }
                })
                .await
            }));
        }
        for t in tasks {
            t.await.expect("task").expect("succeeds after the outage");
        }
        calls.load(Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_of_concurrent_requests_share_one_budget() {
        let alone = outage_of_60s(RetryPolicy::forever()).await;
        let budget = Arc::new(RetryBudget::default());
        let shared = outage_of_60s(RetryPolicy::forever().with_budget(budget)).await;
        eprintln!("attempts during a 60 s outage: {alone} alone, {shared} within one budget");
        assert!(alone > 500, "{alone}");
        // 64 first attempts, the burst of 10, then one a second.
        assert!(shared <= 64 + 10 + 61, "{shared}");
    }
}
