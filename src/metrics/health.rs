//! [`Health`]: the liveness/readiness state that `/readyz` consults.
//!
//! Ready = connected to Postgres ∧ replication streaming ∧ not blocked
//! (e.g. a standby replica waiting for the slot, SQLSTATE 55006) ∧ not
//! wedged. "Not wedged" means the pipeline made progress (an ack, a
//! confirmed LSN) or answered an idle keepalive within `wedge_after`: an
//! idle slot still gets keepalives from the walsender, so silence longer
//! than that means the loop is stuck.
//!
//! Lock-free flags; the blocked reason sits behind a mutex only touched on
//! state changes and on probes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default wedge window: a multiple of `wal_sender_timeout` (60 s) / 2,
/// the interval at which an idle walsender sends keepalives.
pub const DEFAULT_WEDGE_AFTER: Duration = Duration::from_secs(120);

struct HealthInner {
    base: Instant,
    wedge_after: Duration,
    connected: AtomicBool,
    streaming: AtomicBool,
    /// Nanoseconds since `base` of the last progress, plus 1; 0 = never.
    last_progress: AtomicU64,
    blocked: Mutex<Option<String>>,
}

/// Cheaply clonable handle shared by the pipeline and the HTTP server.
#[derive(Clone)]
pub struct Health(Arc<HealthInner>);

impl Default for Health {
    fn default() -> Self {
        Health::new(DEFAULT_WEDGE_AFTER)
    }
}

impl Health {
    pub(crate) fn new(wedge_after: Duration) -> Self {
        Health(Arc::new(HealthInner {
            base: Instant::now(),
            wedge_after,
            connected: AtomicBool::new(false),
            streaming: AtomicBool::new(false),
            last_progress: AtomicU64::new(0),
            blocked: Mutex::new(None),
        }))
    }

    /// Connected to Postgres (replication connection established).
    pub fn set_connected(&self, v: bool) {
        self.0.connected.store(v, Ordering::Release);
        if !v {
            self.0.streaming.store(false, Ordering::Release);
        }
    }

    /// START_REPLICATION answered; the stream is flowing. Setting it counts
    /// as progress, so a fresh stream is not immediately "wedged".
    pub fn set_streaming(&self, v: bool) {
        self.0.streaming.store(v, Ordering::Release);
        if v {
            self.mark_progress();
        }
    }

    /// Records progress now: an ack from Convex, an advanced flush LSN, or
    /// an idle keepalive answered with nothing pending.
    pub(crate) fn mark_progress(&self) {
        self.mark_progress_at(Instant::now());
    }

    /// [`Self::mark_progress`] at a given instant (tests, replay of time).
    pub(crate) fn mark_progress_at(&self, at: Instant) {
        let nanos = at.saturating_duration_since(self.0.base).as_nanos();
        let v = u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1;
        self.0.last_progress.fetch_max(v, Ordering::AcqRel);
    }

    /// Marks the service not ready for an external reason (one line, no
    /// secrets), e.g. `"slot projector in use by another consumer; standing by"`.
    /// `None` clears it.
    pub fn set_blocked(&self, reason: Option<String>) {
        if let Ok(mut g) = self.0.blocked.lock() {
            *g = reason;
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.0.connected.load(Ordering::Acquire)
    }

    pub(crate) fn is_streaming(&self) -> bool {
        self.0.streaming.load(Ordering::Acquire)
    }

    /// Instant of the last progress, if any.
    pub(crate) fn last_progress(&self) -> Option<Instant> {
        match self.0.last_progress.load(Ordering::Acquire) {
            0 => None,
            v => Some(self.0.base + Duration::from_nanos(v - 1)),
        }
    }

    /// `Ok(())` when ready at `now`, else the one-line reason.
    pub(crate) fn readiness_at(&self, now: Instant) -> Result<(), String> {
        if let Ok(g) = self.0.blocked.lock() {
            if let Some(r) = g.as_ref() {
                return Err(r.clone());
            }
        }
        if !self.is_connected() {
            return Err("not connected to Postgres".into());
        }
        if !self.is_streaming() {
            return Err("replication stream not started".into());
        }
        match self.last_progress() {
            None => Err("no progress yet".into()),
            Some(t) => {
                let idle = now.saturating_duration_since(t);
                if idle > self.0.wedge_after {
                    Err(format!(
                        "wedged: no progress or keepalive for {}s (limit {}s)",
                        idle.as_secs(),
                        self.0.wedge_after.as_secs()
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// `Ok(())` when ready now, else the one-line reason.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        self.readiness_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_connected_streaming_and_recent() {
        let h = Health::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(h.readiness_at(t0).unwrap_err().contains("not connected"));
        h.set_connected(true);
        assert!(h.readiness_at(t0).unwrap_err().contains("stream"));
        h.set_streaming(true);
        let t1 = h.last_progress().unwrap();
        assert_eq!(h.readiness_at(t1), Ok(()));
        assert_eq!(h.readiness_at(t1 + Duration::from_secs(10)), Ok(()));
        let e = h.readiness_at(t1 + Duration::from_secs(11)).unwrap_err();
        assert!(e.contains("wedged"), "{e}");
        h.mark_progress_at(t1 + Duration::from_secs(11));
        assert_eq!(h.readiness_at(t1 + Duration::from_secs(12)), Ok(()));
        // progress never goes backwards
        h.mark_progress_at(t1);
        assert_eq!(h.last_progress(), Some(t1 + Duration::from_secs(11)));
        h.set_blocked(Some("slot in use; standing by".into()));
        assert_eq!(
            h.readiness_at(t1 + Duration::from_secs(12)),
            Err("slot in use; standing by".into())
        );
        h.set_blocked(None);
        h.set_connected(false);
        assert!(!h.is_streaming());
        assert!(h.readiness_at(t1).is_err());
    }
}
