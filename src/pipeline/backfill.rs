//! Backfill on first start: when the service's generation holds nothing
//! and `runtime.events` already has history (the slot was made after it,
//! so the stream alone would never carry it), the history is copied first,
//! then the slot is streamed.
//!
//! ```text
//!  slot acquired (the stream is open: we are its only consumer)
//!    └▶ (g, "backfill") absent or `copying`, g empty, events exist?
//!         record `copying` ─▶ copy history at a fresh snapshot ─▶ settle
//!         ─▶ record `done` ─▶ stream from the slot's confirmed position
//! ```
//!
//! Correctness: the snapshot is taken after the slot was created, so every
//! event is in the copy, the stream, or both; the ones in both (committed
//! between the slot and the snapshot) are skipped by the fold, because
//! their stream document still holds the copy's snapshot position (see
//! `projection::fold`). The copy runs while we hold the slot, so no other
//! replica writes the generation meanwhile; status updates keep the
//! walsender from timing us out. Interrupted, the record stays `copying`
//! and the next start copies again: the position guard makes that a no-op
//! for what was already written.

use std::time::Duration;

use tokio::sync::watch;

use crate::event::Lsn;
use crate::generation::{self, Backfill};
use crate::pipeline::context::{SessionContext, SessionError};
use crate::pipeline::driver::Driver;
use crate::source::stream::ReplicationStream;
use crate::source::SourceError;

/// How often the held stream tells the walsender we are alive.
const KEEPALIVE: Duration = Duration::from_secs(1);

/// Copies the history if this generation needs it. Returns the stream and
/// whether streaming may begin (`false`: shutdown interrupted the copy).
pub(crate) async fn run(
    ctx: &SessionContext<'_>,
    driver: &mut Driver,
    mut stream: ReplicationStream,
    start: Lsn,
    shutdown: &watch::Receiver<bool>,
) -> Result<(ReplicationStream, bool), SessionError> {
    let g = ctx.target.generation;
    if !ctx.target.follow_active {
        // A rebuild's own stream: the rebuild copied the history.
        return Ok((stream, true));
    }
    match generation::backfill(ctx.client, g).await? {
        Some(Backfill::Done | Backfill::Skipped) => return Ok((stream, true)),
        Some(Backfill::Copying) => {
            tracing::info!(generation = g, "resuming an interrupted backfill");
        }
        None => {
            if !ctx.backfill {
                tracing::info!(
                    generation = g,
                    "backfill disabled (--no-backfill): streaming from the slot only"
                );
                generation::set_backfill(ctx.client, g, Backfill::Skipped).await?;
                return Ok((stream, true));
            }
            if generation::has_recorded_slot(ctx.client, g).await?
                || !generation::is_empty(ctx.client, g).await?
            {
                generation::set_backfill(ctx.client, g, Backfill::Done).await?;
                return Ok((stream, true));
            }
        }
    }
    let sql = crate::source::sql::connect(ctx.db_url).await?;
    let pending = crate::history::count(&sql, 0)
        .await
        .map_err(SourceError::from)?;
    if pending == 0 {
        generation::set_backfill(ctx.client, g, Backfill::Done).await?;
        return Ok((stream, true));
    }
    tracing::info!(
        generation = g,
        events = pending,
        "backfill: copying the history that predates the slot before streaming"
    );
    generation::set_backfill(ctx.client, g, Backfill::Copying).await?;

    // The stream waits unread meanwhile; a task keeps it alive.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let keepalive = tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEEPALIVE);
        loop {
            tokio::select! {
                _ = tick.tick() => stream.send_status(start, start, start, false).await?,
                _ = stop_rx.changed() => return Ok::<_, SourceError>(stream),
            }
        }
    });
    let copied =
        crate::pipeline::copy::copy_history(&sql, None, driver, ctx.metrics, shutdown, "backfill")
            .await;
    let _ = stop_tx.send(true);
    let stream = keepalive
        .await
        .map_err(|e| SourceError::Protocol(format!("the stream keepalive task failed: {e}")))??;
    let Some(n) = copied? else {
        return Ok((stream, false));
    };
    generation::set_backfill(ctx.client, g, Backfill::Done).await?;
    driver.engine_mut().reset_progress(start);
    tracing::info!(generation = g, events = n, "backfill done; streaming");
    Ok((stream, true))
}
