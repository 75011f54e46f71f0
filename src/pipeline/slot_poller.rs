//! Slot health in the metrics: retained WAL, `wal_status`, `safe_wal_size`
//! and the predicted time to invalidation, read from `pg_replication_slots`
//! beside the stream (its own SQL connection, reconnected on error).

use std::time::Duration;

use crate::metrics::Metrics;

/// How often slot health is read from `pg_replication_slots`.
const SLOT_POLL: Duration = Duration::from_secs(10);

pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls the slot's retained WAL, `wal_status` and `safe_wal_size` into
/// the metrics (with the predicted time to invalidation).
pub(crate) fn spawn_slot_poller(
    db_url: crate::config::Secret,
    slot: String,
    metrics: Metrics,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let monitor = crate::metrics::SlotMonitor::new(metrics);
        let mut sql = None;
        loop {
            if sql.is_none() {
                sql = crate::source::sql::connect(&db_url).await.ok();
            }
            if let Some(c) = &sql {
                let info = crate::source::slot::slot_info(c, &slot).await;
                let current = crate::history::current_wal_lsn(c).await;
                match (info, current) {
                    (Ok(Some(i)), Ok(cur)) => {
                        let retained = i
                            .restart_lsn
                            .map_or(0, |r| cur.0.saturating_sub(r.0) as i64);
                        let status = i.wal_status.clone().unwrap_or_else(|| "unknown".into());
                        if let Some(eta) = monitor.observe(
                            retained,
                            &status,
                            i.safe_wal_size,
                            std::time::Instant::now(),
                        ) {
                            if eta < Duration::from_secs(3600) {
                                tracing::warn!(slot = %slot, eta_secs = eta.as_secs(), "the slot is predicted to be invalidated soon (max_slot_wal_keep_size)");
                            }
                        }
                    }
                    (Ok(None), _) => {}
                    _ => sql = None,
                }
            }
            tokio::time::sleep(SLOT_POLL).await;
        }
    })
}
