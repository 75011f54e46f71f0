//! Copying history: every event of `runtime.events` visible in one
//! snapshot, in `seq` order, folded through a [`Driver`] at snapshot
//! positions `(0, seq)`. Used by `rebuild` (at the new slot's exported
//! snapshot) and by the first start's backfill (at a snapshot taken while
//! holding the slot). Progress goes to a bar on a terminal, else to the log,
//! and to `projector_rebuild_events_{planned,copied}`.

use std::time::Duration;

use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::pipeline::context::SessionError;
use crate::pipeline::driver::Driver;
use crate::source::SourceError;

/// Folds the history visible in `snapshot` (an exported snapshot's name,
/// or `None` for a fresh one) and waits until Convex acknowledged all of
/// it. Returns the number of events, or `None` when `shutdown` turned true.
pub(crate) async fn copy_history(
    sql: &tokio_postgres::Client,
    snapshot: Option<&str>,
    driver: &mut Driver,
    metrics: &Metrics,
    shutdown: &watch::Receiver<bool>,
    what: &'static str,
) -> Result<Option<u64>, SessionError> {
    let sql_err = |e: tokio_postgres::Error| SessionError::Source(SourceError::from(e));
    crate::history::begin_snapshot(sql, snapshot)
        .await
        .map_err(sql_err)?;
    let total = crate::history::count(sql, 0).await.map_err(sql_err)?;
    metrics.rebuild_events_planned.set(total as i64);
    metrics.rebuild_events_copied.set(0);
    let bar = progress_bar(total, what);
    let mut n = 0u64;
    {
        let max = driver.engine().max_event_bytes();
        let stream = crate::history::events(sql, 0, max).await.map_err(sql_err)?;
        futures::pin_mut!(stream);
        while let Some(ev) = stream.try_next().await.map_err(sql_err)? {
            if *shutdown.borrow() {
                bar.abandon_with_message("interrupted");
                return Ok(None);
            }
            match ev {
                crate::history::HistoryEvent::Event(ev) => driver.push_waiting(ev).await?,
                crate::history::HistoryEvent::Oversized(dl) => {
                    driver.push_dead_letter_waiting(dl).await?
                }
            }
            n += 1;
            if n % 1024 == 0 {
                bar.set_position(n);
                metrics.rebuild_events_copied.set(n as i64);
            }
        }
    }
    driver.settle().await?;
    sql.batch_execute("COMMIT").await.map_err(sql_err)?;
    bar.set_position(n);
    metrics.rebuild_events_copied.set(n as i64);
    bar.finish_with_message("history copied");
    Ok(Some(n))
}

fn progress_bar(total: u64, what: &'static str) -> ProgressBar {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} events  {{per_sec}}  ETA {{eta}}  {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        // Not a terminal: log lines instead of a bar.
        let bar = ProgressBar::hidden();
        tokio::spawn({
            let bar = bar.clone();
            async move {
                while !bar.is_finished() {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    tracing::info!(copied = bar.position(), total, "{what} progress");
                }
            }
        });
        bar
    }
}
