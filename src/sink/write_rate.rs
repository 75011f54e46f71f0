//! Pacing `apply` mutations to the deployment's write throughput.
//!
//! Convex limits the bytes a deployment commits per second (4 MiB by
//! default) and refuses past it with HTTP 429 `TooManyWrites`, without a
//! `Retry-After`. A drain sends faster than that, so without pacing every
//! few batches one is refused and retried after a blind backoff: the
//! refusals cost round trips, and the backoffs leave the budget unused
//! (BENCHMARKS.md, the Convex model).
//!
//! So the applies keep the deployment's own rule, with a budget learned
//! AIMD like the concurrency limit: a request is sent while the bytes
//! accepted in the last [`WINDOW`] plus those in flight are under the
//! budget, and otherwise waits until enough of them age out, which is
//! when the deployment's window has room again.
//!
//! - **Unlimited until the first refusal**: a fresh process does not know
//!   the deployment's budget, and a deployment that never refuses needs
//!   no pacing.
//! - **Decrease** on `TooManyWrites`, once per round trip (a refusal of a
//!   request admitted before the last decrease says nothing new) and at
//!   most once per [`WINDOW`] (the refusals of one full window are one
//!   signal), to [`DECREASE`] of the budget. The first refusal starts
//!   from the bytes the deployment accepted from us in the last
//!   [`WINDOW`], or from Convex's default budget ([`FIRST_GUESS`]) if
//!   that is more: a fresh
//!   process can be refused before it wrote anything, while the window is
//!   full of its predecessor's writes (a restart, a rolling deploy), and
//!   its own share then says nothing about the budget. Others sharing the
//!   budget show up as repeated refusals, 10 % less each.
//! - **Increase** while the budget is what paces us: each accepted request
//!   that had to wait adds [`GROWTH_PER_SEC`] of its bytes, so a saturated
//!   sender grows ~2 % per second and probes the budget again about every
//!   five seconds: one refusal per adaptation step.
//!
//! Pure (time is passed in) and unit-tested; [`crate::sink::adaptive`]
//! applies it around the store.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Convex sums a deployment's commits over the last second.
pub(crate) const WINDOW: Duration = Duration::from_secs(1);

/// The budget after a refusal, as a share of the one before: under the
/// deployment's by enough that the next refusal is seconds away.
pub(crate) const DECREASE: f64 = 0.9;

/// Growth per second while paced: ~5 s from a decrease back to the
/// deployment's budget, so the sawtooth averages ~95 % of it.
pub(crate) const GROWTH_PER_SEC: f64 = 0.02;

/// Where the first decrease starts when we wrote less than this in the
/// last window: Convex's default write budget (4 MiB per second).
pub(crate) const FIRST_GUESS: f64 = 4.0 * 1024.0 * 1024.0;

/// Never paced below this (bytes per window): a deployment that refuses
/// while others use its budget must still see our writes, slowly.
pub(crate) const MIN_BUDGET: f64 = 64.0 * 1024.0;

/// How long to wait when only requests still in flight fill the budget
/// (their answers, not time, will make room).
const IN_FLIGHT_POLL: Duration = Duration::from_millis(10);

/// A request admitted by [`WriteRate::admit`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Admitted {
    bytes: u64,
    /// The decrease count it was admitted under.
    epoch: u64,
}

/// The learned write budget and the bytes counted against it.
#[derive(Debug, Default)]
pub(crate) struct WriteRate {
    /// Bytes per [`WINDOW`]; `None` until the first refusal.
    budget: Option<f64>,
    /// Requests accepted within the last [`WINDOW`]: (when, bytes).
    accepted: VecDeque<(Instant, u64)>,
    accepted_bytes: u64,
    /// Bytes of admitted requests not answered yet.
    in_flight: u64,
    epoch: u64,
    last_decrease: Option<Instant>,
}

impl WriteRate {
    /// Bytes per second the applies are paced to, if any.
    pub(crate) fn budget(&self) -> Option<f64> {
        self.budget
    }

    /// Admits a request of `bytes` now, or says how long to wait before
    /// asking again.
    pub(crate) fn admit(&mut self, bytes: usize, now: Instant) -> Result<Admitted, Duration> {
        self.prune(now);
        if let Some(budget) = self.budget {
            let mut counted = self.accepted_bytes + self.in_flight;
            if counted as f64 >= budget {
                // The first instant enough accepted bytes have aged out.
                for &(at, bytes) in &self.accepted {
                    counted -= bytes;
                    if (counted as f64) < budget {
                        let wait = (at + WINDOW).saturating_duration_since(now);
                        return Err(wait.max(Duration::from_millis(1)));
                    }
                }
                return Err(IN_FLIGHT_POLL);
            }
        }
        self.in_flight += bytes as u64;
        Ok(Admitted {
            bytes: bytes as u64,
            epoch: self.epoch,
        })
    }

    /// The deployment accepted `request`; `waited`: whether it had to
    /// wait for the budget.
    pub(crate) fn accepted(&mut self, request: Admitted, waited: bool, now: Instant) {
        self.answered(request);
        self.prune(now);
        self.accepted.push_back((now, request.bytes));
        self.accepted_bytes += request.bytes;
        if let Some(budget) = self.budget.as_mut() {
            if waited {
                *budget += GROWTH_PER_SEC * request.bytes as f64;
            }
        }
    }

    /// `request` failed otherwise than by `TooManyWrites`.
    pub(crate) fn failed(&mut self, request: Admitted) {
        self.answered(request);
    }

    /// The deployment refused `request` with `TooManyWrites`. Returns the
    /// new budget if it decreased.
    pub(crate) fn refused(&mut self, request: Admitted, now: Instant) -> Option<f64> {
        self.answered(request);
        if request.epoch < self.epoch {
            return None; // admitted before the last decrease
        }
        if self
            .last_decrease
            .is_some_and(|at| now.saturating_duration_since(at) < WINDOW)
        {
            return None; // the same full window
        }
        self.last_decrease = Some(now);
        self.prune(now);
        let current = self
            .budget
            .unwrap_or_else(|| (self.accepted_bytes as f64).max(FIRST_GUESS));
        let new = (DECREASE * current).max(MIN_BUDGET);
        self.budget = Some(new);
        self.epoch += 1;
        Some(new)
    }

    fn answered(&mut self, request: Admitted) {
        self.in_flight = self.in_flight.saturating_sub(request.bytes);
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&(at, bytes)) = self.accepted.front() {
            if now.saturating_duration_since(at) < WINDOW {
                break;
            }
            self.accepted.pop_front();
            self.accepted_bytes -= bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Four 1 MiB requests accepted 250 ms apart, then one refused:
    /// returns the instant of the refusal.
    fn refused_after_4_mib(w: &mut WriteRate, t0: Instant) -> Instant {
        for i in 0..4 {
            let a = w.admit(MIB, t0 + ms(250 * i)).expect("unlimited");
            w.accepted(a, false, t0 + ms(250 * i));
        }
        let now = t0 + ms(900);
        let a = w.admit(MIB, now).expect("unlimited");
        assert!(w.refused(a, now).is_some());
        now
    }

    #[test]
    fn unlimited_until_the_deployment_refuses() {
        let t0 = Instant::now();
        let mut w = WriteRate::default();
        for _ in 0..100 {
            let a = w.admit(8 * MIB, t0).expect("unlimited");
            w.accepted(a, false, t0);
        }
        assert_eq!(w.budget(), None);
    }

    #[test]
    fn a_refusal_paces_to_under_what_the_last_second_let_through() {
        let t0 = Instant::now();
        let mut w = WriteRate::default();
        let now = refused_after_4_mib(&mut w, t0);
        assert_eq!(w.budget(), Some(0.9 * 4.0 * MIB as f64));
        // 4 MiB are in the window: the next request waits until the first
        // of them ages out (at t0 + 1 s), when 3 MiB remain.
        assert_eq!(w.admit(MIB, now), Err(ms(100)));
        let a = w.admit(MIB, t0 + ms(1000)).expect("room again");
        // In flight, it counts: 3 + 1 MiB fill the 3.6 MiB budget until
        // the second accepted one ages out at t0 + 1.25 s.
        assert_eq!(w.admit(MIB, t0 + ms(1000)), Err(ms(250)));
        w.accepted(a, true, t0 + ms(1020));
        assert!(w.budget().expect("budget") > 0.9 * 4.0 * MIB as f64);
    }

    #[test]
    fn a_refusal_before_writing_anything_starts_from_convexs_default() {
        // A fresh process, refused while its predecessor's writes fill the
        // deployment's window: its own (empty) share is no estimate.
        let t0 = Instant::now();
        let mut w = WriteRate::default();
        let a = w.admit(MIB, t0).expect("unlimited");
        assert_eq!(w.refused(a, t0), Some(DECREASE * FIRST_GUESS));
        // More than the default went through: that is the estimate.
        let mut w = WriteRate::default();
        for i in 0..8 {
            let a = w.admit(MIB, t0 + ms(100 * i)).expect("unlimited");
            w.accepted(a, false, t0 + ms(100 * i));
        }
        let a = w.admit(MIB, t0 + ms(900)).expect("unlimited");
        assert_eq!(
            w.refused(a, t0 + ms(900)),
            Some(DECREASE * 8.0 * MIB as f64)
        );
    }

    #[test]
    fn only_in_flight_requests_filling_the_budget_wait_for_their_answers() {
        let t0 = Instant::now();
        let mut w = WriteRate::default();
        let now = refused_after_4_mib(&mut w, t0) + ms(5000);
        let big = w.admit(4 * MIB, now).expect("empty window");
        assert_eq!(w.admit(MIB, now), Err(IN_FLIGHT_POLL));
        w.failed(big);
        assert!(w.admit(MIB, now).is_ok());
    }

    #[test]
    fn refusals_of_requests_admitted_together_decrease_once() {
        let t0 = Instant::now();
        let mut w = WriteRate::default();
        let now = refused_after_4_mib(&mut w, t0) + ms(5000);
        let budget = w.budget().expect("budget");
        let together: Vec<Admitted> = (0..3).map(|_| w.admit(MIB, now).expect("room")).collect();
        assert!(w.refused(together[0], now).is_some());
        // Answered later than a window after the decrease, still nothing.
        for a in &together[1..] {
            assert_eq!(w.refused(*a, now + ms(2000)), None, "same round trip");
        }
        assert!(w.budget().expect("budget") < budget);
    }

    #[test]
    fn refusals_within_one_window_decrease_once() {
        // A restart's retries, each admitted after the last decrease, all
        // refused while the predecessor's writes fill the window.
        let t0 = Instant::now();
        let mut w = WriteRate::default();
        let a = w.admit(MIB, t0).expect("unlimited");
        let first = w.refused(a, t0).expect("decrease");
        for i in 1..10 {
            let at = t0 + ms(100 * i);
            let a = w.admit(MIB, at).expect("window empty of ours");
            assert_eq!(w.refused(a, at), None, "{at:?}: the same window");
        }
        assert_eq!(w.budget(), Some(first));
        let at = t0 + ms(1000);
        let a = w.admit(MIB, at).expect("room");
        assert_eq!(w.refused(a, at), Some(DECREASE * first));
    }

    #[test]
    fn the_budget_grows_only_for_requests_that_waited() {
        let t0 = Instant::now();
        let mut w = WriteRate::default();
        let now = refused_after_4_mib(&mut w, t0) + ms(5000);
        let start = w.budget().expect("budget");
        let a = w.admit(MIB, now).expect("room");
        w.accepted(a, false, now);
        assert_eq!(w.budget(), Some(start));
        let a = w.admit(MIB, now).expect("room");
        w.accepted(a, true, now);
        assert_eq!(w.budget(), Some(start + GROWTH_PER_SEC * MIB as f64));
    }

    #[test]
    fn the_budget_never_falls_below_the_floor() {
        let t0 = Instant::now();
        let mut w = WriteRate::default();
        for i in 0..50 {
            let now = t0 + Duration::from_secs(2 * i);
            if let Ok(a) = w.admit(10, now) {
                w.refused(a, now);
            }
        }
        assert_eq!(w.budget(), Some(MIN_BUDGET));
    }
}
