//! [`SlotMonitor`]: turns periodic reads of `pg_replication_slots`
//! (retained WAL, `wal_status`, `safe_wal_size`) into gauges and a
//! prediction of when the slot will be invalidated.
//!
//! ```text
//! observe(retained, status, safe, now)
//!   rate  = EWMA over Δretained/Δt   (time constant TAU; irregular sampling ok)
//!   eta   = safe / rate              when rate > 0 and safe is limited
//!         = 0                        when status = lost or safe <= 0
//!         = None (+Inf gauge)        otherwise
//! ```
//! `safe_wal_size` is already the remaining headroom (bytes of WAL that can
//! be written before the slot is lost); while the consumer is stuck,
//! retained WAL grows at the same rate as headroom shrinks, so
//! headroom / growth rate is the time left.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::registry::{Metrics, WAL_STATUSES};

/// Smoothing time constant of the growth rate.
pub(crate) const TAU: Duration = Duration::from_secs(300);

/// The pure part: exponentially smoothed growth rate of retained WAL.
#[derive(Clone, Debug, Default)]
pub(crate) struct WalTrend {
    last: Option<(Instant, i64)>,
    rate: Option<f64>,
}

impl WalTrend {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds a sample; returns the smoothed growth rate in bytes/s (None
    /// until two samples at different instants).
    pub(crate) fn update(&mut self, retained_bytes: i64, now: Instant) -> Option<f64> {
        match self.last {
            Some((t, prev)) if now > t => {
                let dt = now.duration_since(t).as_secs_f64();
                let sample = (retained_bytes as f64 - prev as f64) / dt;
                // alpha from the elapsed time, so uneven polling weighs right
                let alpha = 1.0 - (-dt / TAU.as_secs_f64()).exp();
                self.rate = Some(match self.rate {
                    Some(r) => r + alpha * (sample - r),
                    None => sample,
                });
                self.last = Some((now, retained_bytes));
            }
            Some(_) => {} // same or earlier instant: ignore
            None => self.last = Some((now, retained_bytes)),
        }
        self.rate
    }

    #[cfg(test)]
    pub(crate) fn rate(&self) -> Option<f64> {
        self.rate
    }
}

/// Seconds until invalidation given the status, headroom and growth rate.
pub(crate) fn predict_invalidation(
    wal_status: &str,
    safe_wal_size: Option<i64>,
    rate_bytes_per_s: Option<f64>,
) -> Option<f64> {
    if wal_status == "lost" {
        return Some(0.0);
    }
    let safe = safe_wal_size?;
    if safe <= 0 {
        return Some(0.0);
    }
    match rate_bytes_per_s {
        // below 1 byte/s is noise, not growth
        Some(r) if r.is_finite() && r >= 1.0 => Some(safe as f64 / r),
        _ => None,
    }
}

/// Updates the slot gauges of a [`Metrics`]; keeps the trend between polls.
pub(crate) struct SlotMonitor {
    metrics: Metrics,
    trend: Mutex<WalTrend>,
}

impl SlotMonitor {
    pub(crate) fn new(metrics: Metrics) -> Self {
        SlotMonitor {
            metrics,
            trend: Mutex::new(WalTrend::new()),
        }
    }

    /// Records one poll of the slot. `retained_bytes` =
    /// `pg_current_wal_lsn() - restart_lsn`; `wal_status` as reported
    /// (unknown values are shown as `unknown`); `safe_wal_size` None when
    /// `max_slot_wal_keep_size = -1`. Returns the predicted time to
    /// invalidation (None when not growing or unlimited).
    pub(crate) fn observe(
        &self,
        retained_bytes: i64,
        wal_status: &str,
        safe_wal_size: Option<i64>,
        now: Instant,
    ) -> Option<Duration> {
        let rate = match self.trend.lock() {
            Ok(mut t) => t.update(retained_bytes, now),
            Err(_) => None,
        };
        let m = &self.metrics;
        m.slot_retained_wal_bytes.set(retained_bytes as f64);
        let status = if WAL_STATUSES.contains(&wal_status) {
            wal_status
        } else {
            "unknown"
        };
        for s in WAL_STATUSES {
            m.slot_wal_status
                .with_label_values(&[s])
                .set(if *s == status { 1.0 } else { 0.0 });
        }
        m.slot_safe_wal_size_bytes
            .set(safe_wal_size.map_or(f64::INFINITY, |s| s as f64));
        let eta = predict_invalidation(wal_status, safe_wal_size, rate);
        m.slot_predicted_invalidation_seconds
            .set(eta.unwrap_or(f64::INFINITY));
        eta.map(Duration::from_secs_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: i64 = 1024 * 1024;

    #[test]
    fn steady_growth_predicts_headroom_over_rate() {
        let m = Metrics::new().unwrap();
        let mon = SlotMonitor::new(m.clone());
        let t0 = Instant::now();
        // first sample: no rate yet
        assert_eq!(mon.observe(0, "reserved", Some(1000 * MB), t0), None);
        // 1 MiB/s for 60 s; headroom shrinks accordingly
        let mut eta = None;
        for i in 1..=60i64 {
            eta = mon.observe(
                i * MB,
                "reserved",
                Some((1000 - i) * MB),
                t0 + Duration::from_secs(i as u64),
            );
        }
        let eta = eta.unwrap().as_secs_f64();
        assert!((eta - 940.0).abs() < 1.0, "{eta}");
        assert_eq!(m.slot_retained_wal_bytes.get(), (60 * MB) as f64);
        assert_eq!(
            m.slot_wal_status.with_label_values(&["reserved"]).get(),
            1.0
        );
        assert_eq!(m.slot_wal_status.with_label_values(&["lost"]).get(), 0.0);
        assert!((m.slot_predicted_invalidation_seconds.get() - 940.0).abs() < 1.0);
    }

    #[test]
    fn not_growing_or_unlimited_is_none_and_lost_is_zero() {
        let m = Metrics::new().unwrap();
        let mon = SlotMonitor::new(m.clone());
        let t0 = Instant::now();
        mon.observe(5 * MB, "reserved", Some(100 * MB), t0);
        let eta = mon.observe(
            5 * MB,
            "reserved",
            Some(100 * MB),
            t0 + Duration::from_secs(10),
        );
        assert_eq!(eta, None);
        assert_eq!(m.slot_predicted_invalidation_seconds.get(), f64::INFINITY);
        // shrinking (consumer caught up) is not growth
        assert_eq!(
            mon.observe(MB, "reserved", Some(100 * MB), t0 + Duration::from_secs(20)),
            None
        );
        // unlimited headroom
        let mon2 = SlotMonitor::new(m.clone());
        mon2.observe(0, "extended", None, t0);
        assert_eq!(
            mon2.observe(50 * MB, "extended", None, t0 + Duration::from_secs(1)),
            None
        );
        assert_eq!(m.slot_safe_wal_size_bytes.get(), f64::INFINITY);
        // lost
        assert_eq!(
            mon2.observe(60 * MB, "lost", None, t0 + Duration::from_secs(2)),
            Some(Duration::ZERO)
        );
        assert_eq!(m.slot_wal_status.with_label_values(&["lost"]).get(), 1.0);
        assert_eq!(
            m.slot_wal_status.with_label_values(&["extended"]).get(),
            0.0
        );
        // unknown status strings do not create new series
        mon2.observe(60 * MB, "weird", None, t0 + Duration::from_secs(3));
        assert_eq!(m.slot_wal_status.with_label_values(&["unknown"]).get(), 1.0);
    }

    #[test]
    fn smoothing_damps_a_spike_and_ignores_time_going_backwards() {
        let mut t = WalTrend::new();
        let t0 = Instant::now();
        t.update(0, t0);
        t.update(10 * MB, t0 + Duration::from_secs(10)); // 1 MiB/s
        let before = t.rate().unwrap();
        // a 10 s burst at 10 MiB/s moves the rate only partly (alpha ≈ 0.033)
        let after = t.update(110 * MB, t0 + Duration::from_secs(20)).unwrap();
        assert!(after > before && after < 2.0 * before, "{before} {after}");
        assert_eq!(t.update(0, t0), Some(after));
        assert_eq!(predict_invalidation("reserved", Some(0), None), Some(0.0));
        assert_eq!(predict_invalidation("reserved", Some(100), Some(0.5)), None);
    }
}
