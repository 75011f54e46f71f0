//! Adaptive concurrency of `apply` mutations, as a layer around any
//! [`DocumentStore`] (Vector's adaptive request concurrency, Netflix's
//! AIMD limit): Convex caps concurrent mutations (16 on the free and
//! starter plans) and write throughput, and answers past them with 429 or
//! 503; timeouts mean the same thing later. Sending as much as before then
//! only adds load, so the limit of mutations in flight moves with what the
//! deployment shows:
//!
//! - **Decrease**, multiplicatively (×½, at least 1), on push-back: HTTP
//!   429, a 5xx/503 (overload, OCC after Convex's own retries) or a
//!   timeout. Once per round trip: an answer to a request sent before the
//!   last decrease says nothing new, so a burst of 429s from the requests
//!   in flight together halves the limit once, not to 1.
//! - **Increase**, additively (+1, up to the maximum), after a full limit's
//!   worth of answers in a row without push-back, while the limit was
//!   actually reached (otherwise a larger one would tell nothing) and
//!   latency stays within twice its long-run mean.
//! - **Latency**: a success slower than twice the long-run mean ends the
//!   round without growth (queueing on the server shows up as latency
//!   first), but lowers nothing: a mutation's time also grows with its
//!   size, and a drain's large batches must not read as overload.
//! - **A timed-out request keeps its slot** for [`TIMEOUT_HOLD`] after the
//!   client gave up: the server may still be running it, and sending its
//!   retry (or another request) at once is how retry storms start.
//!
//! - **Write throughput** is a second limit: `TooManyWrites` paces the
//!   applies' bytes ([`crate::sink::write_rate`]) instead of lowering the
//!   number in flight.
//!
//! Loads and writer acquisition pass through unlimited: they are reads or
//! rare, and the engine bounds loads itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;
use crate::projection::DocKey;
use crate::sink::store::{DocumentStore, StoreFuture};
use crate::sink::write_rate::{Admitted, WriteRate};
use crate::sink::{ApplyResult, LoadedDoc, SinkError};

/// How long a timed-out mutation still counts as in flight.
pub(crate) const TIMEOUT_HOLD: Duration = Duration::from_secs(5);

/// Successes before the latency mean is trusted as a baseline.
const WARM_UP: u64 = 10;

/// Weight of one sample in the long-run latency mean.
const MEAN_WEIGHT: f64 = 0.05;

/// What one mutation's answer says about the deployment's load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Answered in time, latency flat.
    Fine,
    /// 429, 5xx or a timeout.
    PushBack,
    /// Answered, at more than twice the usual latency: no growth.
    Slow,
    /// Neither (a definite answer about a document, fenced, ...): the
    /// deployment answered, nothing to learn about its load.
    Neutral,
}

/// The AIMD state, without the permits (pure, unit-tested).
#[derive(Debug)]
pub(crate) struct Limit {
    pub(crate) limit: usize,
    pub(crate) max: usize,
    /// Incremented on every decrease; a request remembers the value it
    /// was sent under.
    pub(crate) epoch: u64,
    fine_in_row: usize,
    saturated: bool,
    mean_latency: Option<f64>,
    samples: u64,
}

impl Limit {
    pub(crate) fn new(max: usize) -> Limit {
        let max = max.max(1);
        Limit {
            limit: max,
            max,
            epoch: 0,
            fine_in_row: 0,
            saturated: false,
            mean_latency: None,
            samples: 0,
        }
    }

    /// A request is sent with `in_flight` (itself included) in flight.
    pub(crate) fn on_send(&mut self, in_flight: usize) {
        if in_flight >= self.limit {
            self.saturated = true;
        }
    }

    /// Classifies a success by its latency against the long-run mean, and
    /// folds it into the mean.
    pub(crate) fn latency_signal(&mut self, latency: Duration) -> Signal {
        let s = latency.as_secs_f64();
        let slow = self.samples >= WARM_UP && self.mean_latency.is_some_and(|m| s > 2.0 * m);
        self.samples += 1;
        self.mean_latency = Some(match self.mean_latency {
            None => s,
            Some(m) => m + MEAN_WEIGHT * (s - m),
        });
        if slow {
            Signal::Slow
        } else {
            Signal::Fine
        }
    }

    /// The answer of a request sent under `sent_epoch`. Returns by how
    /// much the limit changed (negative: decreased).
    pub(crate) fn on_answer(&mut self, signal: Signal, sent_epoch: u64) -> isize {
        match signal {
            Signal::Neutral => 0,
            Signal::Slow => {
                self.fine_in_row = 0;
                self.saturated = false;
                0
            }
            Signal::PushBack => {
                self.fine_in_row = 0;
                self.saturated = false;
                if sent_epoch < self.epoch {
                    return 0; // sent before the last decrease
                }
                let new = (self.limit / 2).max(1);
                let delta = new as isize - self.limit as isize;
                self.limit = new;
                self.epoch += 1;
                delta
            }
            Signal::Fine => {
                // A round is `limit` answers; it grows the limit if the
                // limit was reached during it.
                self.fine_in_row += 1;
                if self.fine_in_row < self.limit {
                    return 0;
                }
                let grow = self.saturated && self.limit < self.max;
                self.fine_in_row = 0;
                self.saturated = false;
                if grow {
                    self.limit += 1;
                    1
                } else {
                    0
                }
            }
        }
    }
}

/// Push-back, as the deployment signals it. `TooManyWrites` is not: it
/// limits bytes per second, not mutations at once, and our mutations
/// mostly run one at a time (`pipeline::order` chains the batches of a
/// drain), so a lower limit would only stop the next request's upload
/// from overlapping the running one; the write rate paces it instead.
pub(crate) fn signal_of(e: &SinkError) -> Signal {
    match e {
        SinkError::RateLimited { code, .. } if code == "TooManyWrites" => Signal::Neutral,
        SinkError::RateLimited { .. } | SinkError::Server { .. } | SinkError::Timeout { .. } => {
            Signal::PushBack
        }
        _ => Signal::Neutral,
    }
}

struct Shared {
    limit: Limit,
    /// Permits to forget as they come back, after a decrease.
    debt: usize,
    in_flight: usize,
}

/// The slots of mutations in flight: a semaphore whose size follows the
/// [`Limit`] (grown by adding permits, shrunk by forgetting idle ones and
/// then returned ones).
#[derive(Clone)]
struct Slots {
    permits: Arc<Semaphore>,
    shared: Arc<Mutex<Shared>>,
    metrics: Option<Metrics>,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // Nothing panics while holding it; if something did, the counts
        // are still usable.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn acquire(&self) -> Option<(OwnedSemaphorePermit, u64)> {
        // The semaphore is never closed, so this is always Some.
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        let mut s = self.lock();
        s.in_flight += 1;
        let in_flight = s.in_flight;
        s.limit.on_send(in_flight);
        Some((permit, s.limit.epoch))
    }

    /// Learns from one answer (a success `latency` after it was sent):
    /// the limit moves, and the semaphore with it.
    fn answer(&self, result: &Result<ApplyResult, SinkError>, latency: Duration, epoch: u64) {
        let mut s = self.lock();
        let signal = match result {
            Ok(_) => s.limit.latency_signal(latency),
            Err(e) => signal_of(e),
        };
        let delta = s.limit.on_answer(signal, epoch);
        if delta < 0 {
            // Idle slots go at once; slots in use as they come back.
            let fewer = delta.unsigned_abs();
            s.debt += fewer - self.permits.forget_permits(fewer);
        } else if delta > 0 {
            // Growing pays back debt first: those slots were never freed.
            let owed = s.debt.min(delta as usize);
            s.debt -= owed;
            self.permits.add_permits(delta as usize - owed);
        }
        if let Some(m) = &self.metrics {
            m.convex_concurrency_limit.set(s.limit.limit as i64);
        }
    }

    /// Returns a slot (or forgets it, while the limit is being lowered).
    fn give_back(&self, permit: OwnedSemaphorePermit) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.debt > 0 {
            s.debt -= 1;
            permit.forget();
        }
    }
}

/// An admitted request's bytes, given back if its future is dropped
/// before the answer: counted in flight for ever, they would fill the
/// write budget and stall every later apply.
struct Unanswered<'a> {
    writes: &'a Mutex<WriteRate>,
    request: Option<Admitted>,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            lock_writes(self.writes).failed(request);
        }
    }
}

fn lock_writes(writes: &Mutex<WriteRate>) -> std::sync::MutexGuard<'_, WriteRate> {
    // Nothing panics while holding it.
    writes.lock().unwrap_or_else(|p| p.into_inner())
}

/// A [`DocumentStore`] whose `apply` calls wait for one of an adaptive
/// number of slots.
pub(crate) struct Adaptive<S> {
    inner: S,
    slots: Slots,
    writes: Mutex<WriteRate>,
    metrics: Option<Metrics>,
}

impl<S: DocumentStore> Adaptive<S> {
    /// At most `max` mutations in flight; starts at `max` (a fresh process
    /// does not know the deployment, and the first push-back halves it).
    pub(crate) fn new(inner: S, max: usize, metrics: Option<Metrics>) -> Self {
        let limit = Limit::new(max);
        if let Some(m) = &metrics {
            m.convex_concurrency_limit.set(limit.limit as i64);
        }
        Adaptive {
            inner,
            slots: Slots {
                permits: Arc::new(Semaphore::new(limit.limit)),
                shared: Arc::new(Mutex::new(Shared {
                    limit,
                    debt: 0,
                    in_flight: 0,
                })),
                metrics: metrics.clone(),
            },
            writes: Mutex::new(WriteRate::default()),
            metrics,
        }
    }

    fn writes(&self) -> std::sync::MutexGuard<'_, WriteRate> {
        lock_writes(&self.writes)
    }

    /// Learns from one answer about the write throughput.
    fn answer_writes(
        &self,
        result: &Result<ApplyResult, SinkError>,
        request: Admitted,
        waited: bool,
    ) {
        let now = tokio::time::Instant::now();
        let mut w = self.writes();
        match result {
            Ok(_) => w.accepted(request, waited, now),
            Err(SinkError::RateLimited { code, .. }) if code == "TooManyWrites" => {
                if let Some(budget) = w.refused(request, now) {
                    tracing::info!(
                        bytes_per_second = budget as u64,
                        "Convex refused writes past its throughput budget (429 TooManyWrites); pacing the applies"
                    );
                }
            }
            Err(_) => w.failed(request),
        }
        if let Some(m) = &self.metrics {
            m.convex_write_rate_bytes
                .set(w.budget().map_or(0, |r| r as i64));
        }
    }

    /// The current limit of mutations in flight (the metric reports it
    /// in the service).
    #[cfg(test)]
    fn limit(&self) -> usize {
        self.slots.lock().limit.limit
    }
}

impl<S: DocumentStore> DocumentStore for Adaptive<S> {
    fn apply(&self, body: Bytes) -> StoreFuture<'_, ApplyResult> {
        Box::pin(async move {
            let Some((permit, epoch)) = self.slots.acquire().await else {
                return self.inner.apply(body).await;
            };
            let mut waited = false;
            let request = loop {
                let admitted = self.writes().admit(body.len(), tokio::time::Instant::now());
                match admitted {
                    Ok(request) => break request,
                    Err(wait) => {
                        waited = true;
                        tokio::time::sleep(wait).await;
                    }
                }
            };
            let mut unanswered = Unanswered {
                writes: &self.writes,
                request: Some(request),
            };
            let started = Instant::now();
            let result = self.inner.apply(body).await;
            self.slots.answer(&result, started.elapsed(), epoch);
            if let Some(request) = unanswered.request.take() {
                self.answer_writes(&result, request, waited);
            }
            if matches!(result, Err(SinkError::Timeout { .. })) {
                // The server may still be running it: its slot stays taken.
                let slots = self.slots.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(TIMEOUT_HOLD).await;
                    slots.give_back(permit);
                });
            } else {
                self.slots.give_back(permit);
            }
            result
        })
    }

    fn load<'a>(&'a self, generation: u64, keys: &'a [DocKey]) -> StoreFuture<'a, Vec<LoadedDoc>> {
        self.inner.load(generation, keys)
    }

    fn acquire_writer<'a>(&'a self, generation: u64, holder: &'a str) -> StoreFuture<'a, u64> {
        self.inner.acquire_writer(generation, holder)
    }

    fn apply_limit(&self) -> Option<usize> {
        let own = self.slots.lock().limit.limit;
        Some(self.inner.apply_limit().map_or(own, |inner| inner.min(own)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    #[test]
    fn push_back_from_requests_sent_together_halves_the_limit_once() {
        let mut l = Limit::new(16);
        let sent = l.epoch;
        for _ in 0..16 {
            l.on_answer(Signal::PushBack, sent);
        }
        assert_eq!(l.limit, 8, "one decrease per round trip");
        // A request sent after the decrease may lower it again.
        l.on_answer(Signal::PushBack, l.epoch);
        assert_eq!(l.limit, 4);
        for _ in 0..10 {
            let e = l.epoch;
            l.on_answer(Signal::PushBack, e);
        }
        assert_eq!(l.limit, 1, "never below one");
    }

    #[test]
    fn the_limit_grows_by_one_per_full_round_only_while_it_is_reached() {
        let mut l = Limit::new(8);
        let e = l.epoch;
        l.on_answer(Signal::PushBack, e);
        assert_eq!(l.limit, 4);
        // Not saturated: fine answers say nothing about a larger limit.
        for _ in 0..20 {
            l.on_answer(Signal::Fine, l.epoch);
        }
        assert_eq!(l.limit, 4);
        // Saturated: a full round of 4 fine answers adds one.
        l.on_send(4);
        for _ in 0..3 {
            assert_eq!(l.on_answer(Signal::Fine, l.epoch), 0);
        }
        assert_eq!(l.on_answer(Signal::Fine, l.epoch), 1);
        assert_eq!(l.limit, 5);
        for _ in 0..100 {
            l.on_send(l.limit);
            l.on_answer(Signal::Fine, l.epoch);
        }
        assert_eq!(l.limit, 8, "never above the maximum");
    }

    #[test]
    fn the_write_budget_is_not_a_concurrency_signal() {
        let limited = |code: &str| SinkError::RateLimited {
            path: "projector:apply".into(),
            code: code.into(),
            message: String::new(),
            retry_after: None,
        };
        assert_eq!(signal_of(&limited("TooManyWrites")), Signal::Neutral);
        assert_eq!(
            signal_of(&limited("TooManyConcurrentRequests")),
            Signal::PushBack
        );
        let timeout = SinkError::Timeout {
            path: "projector:apply".into(),
            timeout: Duration::from_secs(30),
        };
        assert_eq!(signal_of(&timeout), Signal::PushBack);
    }

    #[test]
    fn a_success_at_twice_the_usual_latency_stops_growth_but_lowers_nothing() {
        let mut l = Limit::new(4);
        for _ in 0..20 {
            assert_eq!(l.latency_signal(Duration::from_millis(20)), Signal::Fine);
        }
        assert_eq!(l.latency_signal(Duration::from_millis(30)), Signal::Fine);
        assert_eq!(l.latency_signal(Duration::from_millis(60)), Signal::Slow);
        let e = l.epoch;
        l.on_answer(Signal::PushBack, e);
        assert_eq!(l.limit, 2);
        l.on_send(2);
        l.on_answer(Signal::Fine, l.epoch);
        l.on_answer(Signal::Slow, l.epoch);
        l.on_answer(Signal::Fine, l.epoch);
        assert_eq!(l.limit, 2, "a slow answer ends the round without growth");
    }

    /// A deployment's `apply`; [`Fake`] makes it a store whose other
    /// calls answer empty.
    trait Applies: Send + Sync + 'static {
        fn apply(&self, body: Bytes) -> StoreFuture<'_, ApplyResult>;
    }

    struct Fake<T>(T);

    impl<T> std::ops::Deref for Fake<T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.0
        }
    }

    impl<T: Applies> DocumentStore for Fake<T> {
        fn apply(&self, body: Bytes) -> StoreFuture<'_, ApplyResult> {
            self.0.apply(body)
        }

        fn load<'a>(
            &'a self,
            _generation: u64,
            _keys: &'a [DocKey],
        ) -> StoreFuture<'a, Vec<LoadedDoc>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn acquire_writer<'a>(&'a self, _g: u64, _holder: &'a str) -> StoreFuture<'a, u64> {
            Box::pin(async { Ok(1) })
        }
    }

    /// A deployment that runs `cap` mutations at once, 20 ms each, and
    /// answers 429 to any more (as Convex does past its concurrency limit).
    struct Capped {
        cap: usize,
        running: AtomicUsize,
        peak: AtomicUsize,
        rejected: AtomicU64,
        applied: AtomicU64,
    }

    impl Capped {
        fn new(cap: usize) -> Capped {
            Capped {
                cap,
                running: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                rejected: AtomicU64::new(0),
                applied: AtomicU64::new(0),
            }
        }
    }

    impl Applies for Capped {
        fn apply(&self, _body: Bytes) -> StoreFuture<'_, ApplyResult> {
            Box::pin(async move {
                let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                self.peak.fetch_max(now, Ordering::SeqCst);
                let answer = if now > self.cap {
                    self.rejected.fetch_add(1, Ordering::SeqCst);
                    Err(SinkError::RateLimited {
                        path: "projector:apply".into(),
                        code: "TooManyConcurrentRequests".into(),
                        message: "Too many concurrent requests".into(),
                        retry_after: None,
                    })
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    self.applied.fetch_add(1, Ordering::SeqCst);
                    Ok(applied_one())
                };
                self.running.fetch_sub(1, Ordering::SeqCst);
                answer
            })
        }
    }

    /// 16 writers, 25 mutations each, every one retried until applied
    /// (10 ms between attempts), against a deployment that takes 4 at once.
    async fn sixteen_writers(store: Arc<dyn DocumentStore>) {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    while store.apply(Bytes::new()).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_deployments_concurrency_the_limit_adapts_instead_of_storming() {
        let raw = Arc::new(Fake(Capped::new(4)));
        let t0 = tokio::time::Instant::now();
        sixteen_writers(raw.clone()).await;
        let raw_time = t0.elapsed();
        let storm = raw.rejected.load(Ordering::SeqCst);

        let capped = Arc::new(Fake(Capped::new(4)));
        let adaptive = Arc::new(Adaptive::new(capped.clone(), 16, None));
        let t0 = tokio::time::Instant::now();
        sixteen_writers(adaptive.clone()).await;
        let adaptive_time = t0.elapsed();
        let adapted = capped.rejected.load(Ordering::SeqCst);
        assert_eq!(capped.applied.load(Ordering::SeqCst), 400);
        // Without the layer every round sends 16 for 4 slots; with it, the
        // limit halves 16 -> 8 -> 4, and the sawtooth then probes 5 and
        // halves to 2 now and then.
        eprintln!(
            "429s: {storm} without adapting ({raw_time:?}), {adapted} adapting ({adaptive_time:?}); peak in flight {}",
            capped.peak.load(Ordering::SeqCst)
        );
        // 400 mutations of 20 ms, 4 at a time, take 2 s at best: adapting
        // keeps at least 80 % of that capacity.
        assert!(
            adaptive_time <= Duration::from_millis(2500),
            "{adaptive_time:?}"
        );
        assert!(storm > 1000, "{storm} rejections without adapting");
        assert!(adapted < 60, "{adapted} rejections while adapting");
        assert!(
            (2..=5).contains(&adaptive.limit()),
            "limit {}",
            adaptive.limit()
        );
    }

    /// Times every call out after 30 s, noting when each started.
    struct Slow {
        starts: Mutex<Vec<tokio::time::Instant>>,
    }

    impl Applies for Slow {
        fn apply(&self, _body: Bytes) -> StoreFuture<'_, ApplyResult> {
            Box::pin(async move {
                self.starts
                    .lock()
                    .expect("starts")
                    .push(tokio::time::Instant::now());
                tokio::time::sleep(Duration::from_secs(30)).await;
                Err(SinkError::Timeout {
                    path: "projector:apply".into(),
                    timeout: Duration::from_secs(30),
                })
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_mutation_keeps_its_slot_while_the_server_may_run_it() {
        let slow = Arc::new(Fake(Slow {
            starts: Mutex::new(Vec::new()),
        }));
        let adaptive = Adaptive::new(slow.clone(), 1, None);
        let t0 = tokio::time::Instant::now();
        assert!(adaptive.apply(Bytes::new()).await.is_err());
        // The retry waits for the held slot, not just for the answer.
        assert!(adaptive.apply(Bytes::new()).await.is_err());
        let starts = slow.starts.lock().expect("starts").clone();
        assert_eq!(starts.len(), 2);
        assert_eq!(starts[1] - t0, Duration::from_secs(30) + TIMEOUT_HOLD);
    }

    fn applied_one() -> ApplyResult {
        ApplyResult {
            applied: 1,
            skipped: 0,
            dead_letters_inserted: 0,
            dead_letters_skipped: 0,
        }
    }

    /// A deployment with Convex's write-throughput limit: an `apply` is
    /// refused with 429 `TooManyWrites` while the bytes it committed in
    /// the last second reach `budget` (the refused request itself does
    /// not count, as in Convex); one runs 20 ms.
    struct Budgeted {
        budget: u64,
        commits: Mutex<std::collections::VecDeque<(tokio::time::Instant, u64)>>,
        refused: AtomicU64,
        applied_bytes: AtomicU64,
    }

    impl Budgeted {
        fn new(budget: u64) -> Budgeted {
            Budgeted {
                budget,
                commits: Mutex::new(Default::default()),
                refused: AtomicU64::new(0),
                applied_bytes: AtomicU64::new(0),
            }
        }

        fn window(&self, now: tokio::time::Instant) -> u64 {
            let mut c = self.commits.lock().expect("commits");
            while c
                .front()
                .is_some_and(|(at, _)| now - *at >= Duration::from_secs(1))
            {
                c.pop_front();
            }
            c.iter().map(|(_, b)| b).sum()
        }
    }

    impl Applies for Budgeted {
        fn apply(&self, body: Bytes) -> StoreFuture<'_, ApplyResult> {
            Box::pin(async move {
                if self.window(tokio::time::Instant::now()) >= self.budget {
                    self.refused.fetch_add(1, Ordering::SeqCst);
                    return Err(SinkError::RateLimited {
                        path: "projector:apply".into(),
                        code: "TooManyWrites".into(),
                        message: "Too many writes per second".into(),
                        retry_after: None,
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                let now = tokio::time::Instant::now();
                self.commits
                    .lock()
                    .expect("commits")
                    .push_back((now, body.len() as u64));
                self.applied_bytes
                    .fetch_add(body.len() as u64, Ordering::SeqCst);
                Ok(applied_one())
            })
        }
    }

    /// One writer, as a drain is (its batches chain), sends 1 MiB batches
    /// back to back for 30 s, each retried 100 ms after a refusal (the
    /// retry policy's first delay). Returns the bytes per second applied.
    async fn drain_for_30s(store: &dyn DocumentStore) -> f64 {
        let body = Bytes::from(vec![b'x'; 1024 * 1024]);
        let t0 = tokio::time::Instant::now();
        let mut applied = 0u64;
        while t0.elapsed() < Duration::from_secs(30) {
            while store.apply(body.clone()).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            applied += body.len() as u64;
        }
        applied as f64 / t0.elapsed().as_secs_f64()
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_write_budget_the_applies_are_paced_instead_of_refused() {
        const BUDGET: u64 = 4 * 1024 * 1024;
        let raw = Fake(Budgeted::new(BUDGET));
        let raw_rate = drain_for_30s(&raw).await;
        let blind = raw.refused.load(Ordering::SeqCst);

        let budgeted = Arc::new(Fake(Budgeted::new(BUDGET)));
        let adaptive = Adaptive::new(budgeted.clone(), 4, None);
        let paced_rate = drain_for_30s(&adaptive).await;
        let paced = budgeted.refused.load(Ordering::SeqCst);
        eprintln!(
            "TooManyWrites in 30 s: {blind} blind at {:.0} % of the budget, {paced} paced at {:.0} %",
            100.0 * raw_rate / BUDGET as f64,
            100.0 * paced_rate / BUDGET as f64
        );
        // Blind, every second's fifth batch is refused; paced, one refusal
        // per adaptation step (~5 s) after the first.
        assert!(blind >= 25, "{blind} refusals without pacing");
        assert!(paced <= 10, "{paced} refusals while paced");
        assert!(
            paced_rate >= 0.9 * BUDGET as f64,
            "paced at {paced_rate:.0} B/s against a budget of {BUDGET}"
        );
        assert!(adaptive.writes().budget().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_refused_before_it_wrote_keeps_a_useful_write_budget() {
        // A restart: the predecessor's last second of writes still fills
        // the deployment's window when the new process sends its first.
        const BUDGET: u64 = 4 * 1024 * 1024;
        let budgeted = Arc::new(Fake(Budgeted::new(BUDGET)));
        budgeted
            .commits
            .lock()
            .expect("commits")
            .push_back((tokio::time::Instant::now(), BUDGET));
        let adaptive = Adaptive::new(budgeted.clone(), 4, None);
        let rate = drain_for_30s(&adaptive).await;
        let refused = budgeted.refused.load(Ordering::SeqCst);
        eprintln!(
            "{refused} refusals, {:.0} % of the budget",
            100.0 * rate / BUDGET as f64
        );
        assert!(rate >= 0.85 * BUDGET as f64, "{rate:.0} B/s");
        assert!(refused <= 15, "{refused} refusals");
    }

    /// Never answers.
    struct Hangs;

    impl Applies for Hangs {
        fn apply(&self, _body: Bytes) -> StoreFuture<'_, ApplyResult> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_apply_gives_its_bytes_back_to_the_write_budget() {
        let adaptive = Adaptive::new(Arc::new(Fake(Hangs)), 4, None);
        {
            // A learned budget of ~3.8 MB, then a 4 MiB apply in flight.
            let mut w = adaptive.writes();
            let a = w.admit(1, tokio::time::Instant::now()).expect("unlimited");
            w.refused(a, tokio::time::Instant::now());
        }
        let body = Bytes::from(vec![b'x'; 4 << 20]);
        let hung = tokio::time::timeout(Duration::from_secs(1), adaptive.apply(body.clone()));
        assert!(hung.await.is_err(), "the store never answers");
        // Dropped unanswered, its 4 MiB no longer count (they would fill
        // the budget: nothing would be admitted again).
        let now = tokio::time::Instant::now();
        assert!(adaptive.writes().admit(1, now).is_ok());
    }
}
