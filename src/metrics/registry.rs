//! [`Metrics`]: typed handles on every metric of [`super::names`], each set
//! registered in its own `prometheus::Registry` (no global state, so tests
//! can run several pipelines in one process). Cloning is cheap (an `Arc`).

use crate::projection::{ConvexTable, Table};
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::{
    Counter, Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

use super::names::{self as n};

/// Buckets of Convex request latency (seconds).
pub(crate) const CONVEX_LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets of commit→ack latency (seconds). `le="1"` is the lag SLO bound
/// used by `deploy/alerts.yml`.
/// Fine below 100 ms so the benchmark can read p50/p99 at low rates.
pub const COMMIT_TO_ACK_BUCKETS: &[f64] = &[
    0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];
/// The `projection` label values of [`Inner::commit_to_ack_seconds`].
pub const PROJECTIONS: [&str; 6] = [
    ConvexTable::Projection(Table::Runs).as_str(),
    ConvexTable::Projection(Table::Timelines).as_str(),
    ConvexTable::Projection(Table::Threads).as_str(),
    ConvexTable::Projection(Table::Workers).as_str(),
    ConvexTable::Projection(Table::Inboxes).as_str(),
    ConvexTable::DeadLetters.as_str(),
];
/// The `status` label values of [`Inner::slot_wal_status`].
pub const WAL_STATUSES: &[&str] = &["reserved", "extended", "unreserved", "lost", "unknown"];

/// Error building the metric set (only on a programming error: a duplicate
/// or malformed name).
#[derive(Debug, thiserror::Error)]
#[error("metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Every metric of the service. Fields are public prometheus handles; see
/// `names.rs` for the meaning of each.
pub struct Inner {
    pub(crate) registry: Registry,
    pub events_decoded_total: IntCounter,
    pub(crate) events_folded_total: IntCounter,
    /// label `reason`
    pub(crate) events_ignored_total: IntCounterVec,
    /// label `reason`
    pub events_dead_lettered_total: IntCounterVec,
    pub(crate) events_skipped_total: IntCounter,
    /// label `kind`: update | delete | truncate
    pub(crate) append_only_violations_total: IntCounterVec,
    pub(crate) batches_applied_total: IntCounter,
    pub(crate) writes_applied_total: IntCounter,
    pub(crate) writes_skipped_total: IntCounter,
    pub(crate) dead_letters_written_total: IntCounter,
    /// label `function`
    pub(crate) convex_request_duration_seconds: HistogramVec,
    /// labels `class` (transient | definite), `code`
    pub(crate) convex_errors_total: IntCounterVec,
    /// label `function`
    pub(crate) convex_retries_total: IntCounterVec,
    pub(crate) received_lsn_bytes: Gauge,
    pub(crate) flushed_lsn_bytes: Gauge,
    pub(crate) confirmed_lsn_bytes: Gauge,
    pub(crate) lag_bytes: Gauge,
    pub(crate) lag_seconds: Gauge,
    /// label `projection` (see [`PROJECTIONS`])
    pub(crate) commit_to_ack_seconds: HistogramVec,
    pub(crate) slot_retained_wal_bytes: Gauge,
    /// label `status` (see [`WAL_STATUSES`])
    pub(crate) slot_wal_status: GaugeVec,
    pub(crate) slot_safe_wal_size_bytes: Gauge,
    pub(crate) slot_predicted_invalidation_seconds: Gauge,
    pub(crate) inflight_bytes: IntGauge,
    pub(crate) inflight_batches: IntGauge,
    pub(crate) convex_concurrency_limit: IntGauge,
    pub(crate) convex_write_rate_bytes: IntGauge,
    pub(crate) backpressure_active: IntGauge,
    pub(crate) backpressure_seconds_total: Counter,
    pub(crate) up: IntGauge,
    pub(crate) ready: IntGauge,
    pub(crate) convex_schema_skew: IntGauge,
    pub(crate) generation_active: IntGauge,
    pub(crate) rebuild_events_copied: IntGauge,
    pub(crate) rebuild_events_planned: IntGauge,
    #[cfg(test)]
    registered: Vec<&'static str>,
    backpressure_since: Mutex<Option<Instant>>,
}

/// Cheaply clonable handle; derefs to [`Inner`] for the typed fields.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

struct Builder {
    registry: Registry,
    #[cfg(test)]
    registered: Vec<&'static str>,
}

impl Builder {
    fn reg<M: prometheus::core::Collector + Clone + 'static>(
        &mut self,
        name: &'static str,
        m: M,
    ) -> Result<M, MetricsError> {
        self.registry.register(Box::new(m.clone()))?;
        #[cfg(test)]
        self.registered.push(name);
        #[cfg(not(test))]
        let _ = name;
        Ok(m)
    }
    fn int_counter(&mut self, name: &'static str) -> Result<IntCounter, MetricsError> {
        let m = IntCounter::new(name, n::help(name))?;
        self.reg(name, m)
    }
    fn int_counter_vec(
        &mut self,
        name: &'static str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricsError> {
        let m = IntCounterVec::new(Opts::new(name, n::help(name)), labels)?;
        self.reg(name, m)
    }
    fn counter(&mut self, name: &'static str) -> Result<Counter, MetricsError> {
        let m = Counter::new(name, n::help(name))?;
        self.reg(name, m)
    }
    fn gauge(&mut self, name: &'static str) -> Result<Gauge, MetricsError> {
        let m = Gauge::new(name, n::help(name))?;
        self.reg(name, m)
    }
    fn int_gauge(&mut self, name: &'static str) -> Result<IntGauge, MetricsError> {
        let m = IntGauge::new(name, n::help(name))?;
        self.reg(name, m)
    }
    fn gauge_vec(&mut self, name: &'static str, labels: &[&str]) -> Result<GaugeVec, MetricsError> {
        let m = GaugeVec::new(Opts::new(name, n::help(name)), labels)?;
        self.reg(name, m)
    }
    fn histogram_vec(
        &mut self,
        name: &'static str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec, MetricsError> {
        let m = HistogramVec::new(
            HistogramOpts::new(name, n::help(name)).buckets(buckets.to_vec()),
            labels,
        )?;
        self.reg(name, m)
    }
}

impl Metrics {
    /// A fresh metric set in its own registry. `up` is 1, the known label
    /// values of `projection` and `status` are pre-created so dashboards
    /// and alerts see series from the first scrape.
    pub fn new() -> Result<Self, MetricsError> {
        let mut b = Builder {
            registry: Registry::new(),
            #[cfg(test)]
            registered: Vec::new(),
        };
        let inner = Inner {
            events_decoded_total: b.int_counter(n::EVENTS_DECODED_TOTAL)?,
            events_folded_total: b.int_counter(n::EVENTS_FOLDED_TOTAL)?,
            events_ignored_total: b.int_counter_vec(n::EVENTS_IGNORED_TOTAL, &["reason"])?,
            events_dead_lettered_total: b
                .int_counter_vec(n::EVENTS_DEAD_LETTERED_TOTAL, &["reason"])?,
            events_skipped_total: b.int_counter(n::EVENTS_SKIPPED_TOTAL)?,
            append_only_violations_total: b
                .int_counter_vec(n::APPEND_ONLY_VIOLATIONS_TOTAL, &["kind"])?,
            batches_applied_total: b.int_counter(n::BATCHES_APPLIED_TOTAL)?,
            writes_applied_total: b.int_counter(n::WRITES_APPLIED_TOTAL)?,
            writes_skipped_total: b.int_counter(n::WRITES_SKIPPED_TOTAL)?,
            dead_letters_written_total: b.int_counter(n::DEAD_LETTERS_WRITTEN_TOTAL)?,
            convex_request_duration_seconds: b.histogram_vec(
                n::CONVEX_REQUEST_DURATION_SECONDS,
                &["function"],
                CONVEX_LATENCY_BUCKETS,
            )?,
            convex_errors_total: b.int_counter_vec(n::CONVEX_ERRORS_TOTAL, &["class", "code"])?,
            convex_retries_total: b.int_counter_vec(n::CONVEX_RETRIES_TOTAL, &["function"])?,
            received_lsn_bytes: b.gauge(n::RECEIVED_LSN_BYTES)?,
            flushed_lsn_bytes: b.gauge(n::FLUSHED_LSN_BYTES)?,
            confirmed_lsn_bytes: b.gauge(n::CONFIRMED_LSN_BYTES)?,
            lag_bytes: b.gauge(n::LAG_BYTES)?,
            lag_seconds: b.gauge(n::LAG_SECONDS)?,
            commit_to_ack_seconds: b.histogram_vec(
                n::COMMIT_TO_ACK_SECONDS,
                &["projection"],
                COMMIT_TO_ACK_BUCKETS,
            )?,
            slot_retained_wal_bytes: b.gauge(n::SLOT_RETAINED_WAL_BYTES)?,
            slot_wal_status: b.gauge_vec(n::SLOT_WAL_STATUS, &["status"])?,
            slot_safe_wal_size_bytes: b.gauge(n::SLOT_SAFE_WAL_SIZE_BYTES)?,
            slot_predicted_invalidation_seconds: b.gauge(n::SLOT_PREDICTED_INVALIDATION_SECONDS)?,
            inflight_bytes: b.int_gauge(n::INFLIGHT_BYTES)?,
            inflight_batches: b.int_gauge(n::INFLIGHT_BATCHES)?,
            convex_concurrency_limit: b.int_gauge(n::CONVEX_CONCURRENCY_LIMIT)?,
            convex_write_rate_bytes: b.int_gauge(n::CONVEX_WRITE_RATE_BYTES)?,
            backpressure_active: b.int_gauge(n::BACKPRESSURE_ACTIVE)?,
            backpressure_seconds_total: b.counter(n::BACKPRESSURE_SECONDS_TOTAL)?,
            up: b.int_gauge(n::UP)?,
            ready: b.int_gauge(n::READY)?,
            convex_schema_skew: b.int_gauge(n::CONVEX_SCHEMA_SKEW)?,
            generation_active: b.int_gauge(n::GENERATION_ACTIVE)?,
            rebuild_events_copied: b.int_gauge(n::REBUILD_EVENTS_COPIED)?,
            rebuild_events_planned: b.int_gauge(n::REBUILD_EVENTS_PLANNED)?,
            registry: b.registry,
            #[cfg(test)]
            registered: b.registered,
            backpressure_since: Mutex::new(None),
        };
        inner.up.set(1);
        for p in PROJECTIONS {
            inner.commit_to_ack_seconds.with_label_values(&[p]);
        }
        for s in WAL_STATUSES {
            inner.slot_wal_status.with_label_values(&[s]).set(0.0);
        }
        inner.slot_predicted_invalidation_seconds.set(f64::INFINITY);
        Ok(Metrics(Arc::new(inner)))
    }

    #[cfg(test)]
    /// Names of the metric families registered (for tests and docs).
    pub(crate) fn registered_names(&self) -> &[&'static str] {
        &self.0.registered
    }

    /// Prometheus text exposition format 0.0.4.
    pub(crate) fn encode(&self) -> Result<String, MetricsError> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.0.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Sets the received / flushed / confirmed LSN gauges and
    /// `lag_bytes = received - confirmed` (0 if confirmed is ahead).
    pub(crate) fn set_lsns(&self, received: u64, flushed: u64, confirmed: u64) {
        self.received_lsn_bytes.set(received as f64);
        self.flushed_lsn_bytes.set(flushed as f64);
        self.confirmed_lsn_bytes.set(confirmed as f64);
        self.lag_bytes
            .set(received.saturating_sub(confirmed) as f64);
    }

    /// Records a commit→ack latency for one projection (table name as in
    /// Convex: runs, timelines, threads, workers, inboxes, deadLetters).
    /// Negative values (clock skew between Postgres and us) count as 0.
    pub(crate) fn observe_commit_to_ack(&self, projection: &str, seconds: f64) {
        let label = PROJECTIONS
            .iter()
            .find(|p| **p == projection)
            .copied()
            .unwrap_or("other");
        self.commit_to_ack_seconds
            .with_label_values(&[label])
            .observe(seconds.max(0.0));
    }

    /// Records one Convex request's latency.
    pub(crate) fn observe_convex_request(&self, function: &str, seconds: f64) {
        self.convex_request_duration_seconds
            .with_label_values(&[function])
            .observe(seconds.max(0.0));
    }

    /// Counts one failed Convex request. `code` is the HTTP status or the
    /// Convex error code (bounded set; never put messages here).
    pub fn convex_error(&self, transient: bool, code: &str) {
        let class = if transient { "transient" } else { "definite" };
        self.convex_errors_total
            .with_label_values(&[class, code])
            .inc();
    }

    /// Sets `backpressure_active` and accumulates `backpressure_seconds_total`.
    /// Call on every change (and, to keep the counter current during a long
    /// pause, whenever convenient while active: repeated calls are cheap).
    pub(crate) fn set_backpressure(&self, active: bool) {
        self.set_backpressure_at(active, Instant::now());
    }

    /// [`Self::set_backpressure`] at a given instant (tests).
    pub(crate) fn set_backpressure_at(&self, active: bool, now: Instant) {
        self.backpressure_active.set(i64::from(active));
        let Ok(mut since) = self.0.backpressure_since.lock() else {
            return;
        };
        if let Some(t) = since.take() {
            self.backpressure_seconds_total
                .inc_by(now.saturating_duration_since(t).as_secs_f64());
        }
        if active {
            *since = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_metric_is_registered_and_nothing_else() {
        let m = Metrics::new().unwrap();
        let mut registered: Vec<_> = m.registered_names().to_vec();
        let mut named: Vec<_> = n::ALL.iter().map(|i| i.name).collect();
        registered.sort_unstable();
        named.sort_unstable();
        assert_eq!(registered, named);
        for i in n::ALL {
            assert!(!i.help.is_empty());
        }
    }

    #[test]
    fn independent_registries_and_lag() {
        let a = Metrics::new().unwrap();
        let b = Metrics::new().unwrap();
        a.events_decoded_total.inc_by(3);
        assert_eq!(b.events_decoded_total.get(), 0);
        a.set_lsns(1000, 900, 400);
        assert_eq!(a.lag_bytes.get(), 600.0);
        a.set_lsns(100, 900, 400);
        assert_eq!(a.lag_bytes.get(), 0.0);
        a.observe_commit_to_ack("runs", 0.2);
        a.observe_commit_to_ack("bogus", -1.0);
        let text = a.encode().unwrap();
        assert!(text.contains("projector_events_decoded_total 3"), "{text}");
        assert!(text.contains("projector_commit_to_ack_seconds_count{projection=\"runs\"} 1"));
        assert!(text.contains("projector_commit_to_ack_seconds_count{projection=\"other\"} 1"));
        assert!(text.contains("projector_slot_wal_status{status=\"lost\"} 0"));
        assert!(text.contains("projector_up 1"));
    }

    #[test]
    fn backpressure_seconds_accumulate_only_while_active() {
        let m = Metrics::new().unwrap();
        let t0 = Instant::now();
        m.set_backpressure_at(true, t0);
        assert_eq!(m.backpressure_active.get(), 1);
        m.set_backpressure_at(true, t0 + std::time::Duration::from_secs(2));
        m.set_backpressure_at(false, t0 + std::time::Duration::from_secs(3));
        m.set_backpressure_at(false, t0 + std::time::Duration::from_secs(10));
        assert_eq!(m.backpressure_active.get(), 0);
        assert!((m.backpressure_seconds_total.get() - 3.0).abs() < 1e-9);
    }
}
