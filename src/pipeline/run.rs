//! `projector run`: the long-running service around the [`Engine`].
//!
//! One streaming session is a single loop on one thread:
//!
//! ```text
//!  ┌─▶ catching up and the last read was small? sleep 2 ms (socket fills)
//!  │   select! (biased): shutdown │ acks │ status tick │ WAL │ batch deadline
//!  │     WAL: every message one read brought (≤ 1,024) → decoder → engine.push
//!  │          (a full batch closes in place: hydrate, fold, dispatch)
//!  └──────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Progress sent to Postgres is always the engine's flush LSN: the commit
//! end of the last transaction whose every batch Convex acknowledged
//! (see `pipeline::watermark`), so a crash between any two steps resends
//! what was not acknowledged and nothing else.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};

use crate::config::{CommonArgs, Settings};
use crate::event::Lsn;
use crate::metrics::{self, Health, Metrics};
use crate::pipeline::engine::Engine;
use crate::sink::{ConvexClient, RetryPolicy};
use crate::source::event::{EventDecoder, SourceEvent};
use crate::source::stream::{ReplicationStream, StreamOptions, WalMessage};
use crate::source::SourceError;

/// Readiness fails when nothing moved (no event, ack or keepalive) this long.
pub const WEDGED_AFTER: Duration = Duration::from_secs(30);

/// Exit code when the slot is missing or invalidated: `rebuild` is the remedy.
pub const EXIT_SLOT_LOST: u8 = 3;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Write into this generation instead of the active one (rebuild uses it).
    #[arg(long, hide = true)]
    pub generation: Option<u64>,
    /// Stop once caught up with the WAL position current at start (tests,
    /// benchmarks). The slot is confirmed before exiting.
    #[arg(long)]
    pub exit_when_caught_up: bool,
}

/// Why one streaming session ended.
enum SessionEnd {
    Shutdown,
    CaughtUp,
    /// A rebuild switched the active generation away from ours.
    Switched,
}

/// How often a following service checks the active generation.
const ACTIVE_CHECK: Duration = Duration::from_secs(3);

/// While catching up, a read shorter than this is followed by a pause.
const BULK_READ_BYTES: usize = 64 * 1024;

/// The pause threshold for a connection whose receive buffer we fixed:
/// a quarter of it at most. A full window must never count as a short
/// read: every read would pause and the window would cap the drain at
/// window / pause (a 32 KiB window with the 64 KiB threshold measured
/// 0.3x pg_recvlogical). With 64 KiB asked (128 KiB granted) reads average
/// ~120 KB, so 32 KiB leaves a margin for kernels that grant less.
fn bulk_read_threshold(granted_recv_buffer: Option<u32>) -> usize {
    granted_recv_buffer.map_or(BULK_READ_BYTES, |g| (g as usize / 4).min(BULK_READ_BYTES))
}

/// The pause: the walsender fills the socket meanwhile (tens of KB per ms).
/// Over a network TCP's receive buffer grows to megabytes, so 2 ms of WAL
/// fits; on loopback our window is small (`LOOPBACK_RECV_BUFFER`) and the
/// rest waits in the server's send queue (up to megabytes), merged into
/// large segments. Shorter pauses measured worse there: 400 µs and 1 ms
/// gave 1.5 and 1.3 µs CPU per event and 1.15x pg_recvlogical, against
/// 1.2 µs and 1.75x at 2 ms (the walsender runs alone meanwhile).
const BULK_READ_PAUSE: Duration = Duration::from_millis(2);
/// A Unix socket holds only the server's send buffer (~200 KB of small
/// writes, ~75 KB of WAL measured): the walsender fills it in well under a
/// millisecond and then blocks, so the TCP pause would throttle the drain
/// (to 0.3-0.5x pg_recvlogical, measured).
const BULK_READ_PAUSE_UNIX: Duration = Duration::from_micros(400);
/// At most this many WAL messages are handled per wake-up before acks,
/// status and shutdown get their turn.
const MESSAGES_PER_WAKE: usize = 1024;

pub async fn main(args: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = args.common.resolve()?;
    let metrics = Metrics::new()?;
    let health = Health::new(WEDGED_AFTER);
    let (addr, _server) =
        metrics::serve(settings.metrics_addr, metrics.clone(), health.clone()).await?;
    tracing::info!(%addr, "metrics, health and readiness endpoints listening");
    let shutdown = shutdown_signal();
    run_service(
        &settings,
        args.generation,
        args.exit_when_caught_up,
        metrics,
        health,
        shutdown,
    )
    .await
}

/// A watch that turns true on the first SIGINT/SIGTERM; the second one exits
/// the process at once (safe: delivery is at-least-once).
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot install the SIGTERM handler");
                    return;
                }
            };
        for n in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if n == 0 {
                tracing::info!(
                    "shutting down: finishing in-flight writes (signal again to exit at once)"
                );
                let _ = tx.send(true);
            } else {
                tracing::warn!("second signal: exiting at once");
                std::process::exit(130);
            }
        }
    });
    rx
}

/// Where a service streams from and writes to.
#[derive(Clone, Debug)]
pub struct Target {
    pub slot: String,
    pub generation: u64,
    /// Follow the active generation: end the session when a rebuild
    /// switched it, then move to the new generation's slot.
    pub follow_active: bool,
}

/// Resolves the active generation (creating generation 1 on first start)
/// and the slot that feeds it (recorded by `rebuild`; the configured slot
/// for generation 1).
pub async fn resolve_target(
    client: &ConvexClient,
    configured_slot: &str,
) -> Result<Target, crate::sink::SinkError> {
    let retry = RetryPolicy::forever();
    let generation = crate::sink::ensure_active_generation(client, &retry).await?;
    let slot = crate::rebuild::slot_for_generation(client, generation, configured_slot).await?;
    Ok(Target {
        slot,
        generation,
        follow_active: true,
    })
}

pub async fn run_service(
    settings: &Settings,
    generation: Option<u64>,
    exit_when_caught_up: bool,
    metrics: Metrics,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<ExitCode> {
    let (convex_url, admin_key) = settings.convex()?;
    let client = Arc::new(ConvexClient::new(
        convex_url,
        admin_key.clone(),
        settings.tuning.convex_timeout,
    )?);
    loop {
        let target = match generation {
            Some(g) => Target {
                slot: settings.slot.clone(),
                generation: g,
                follow_active: false,
            },
            // Convex may be unreachable at startup (retried forever): a
            // signal must still stop us.
            None => tokio::select! {
                r = resolve_target(&client, &settings.slot) => r?,
                _ = shutdown.wait_for(|stop| *stop) => return Ok(ExitCode::SUCCESS),
            },
        };
        match serve_target(
            settings,
            &client,
            &target,
            exit_when_caught_up,
            &metrics,
            &health,
            &mut shutdown,
        )
        .await?
        {
            Some(code) => return Ok(code),
            None => tracing::info!("the active generation changed; moving to it"),
        }
    }
}

/// Streams `target` until shutdown (Some(exit code)) or until the active
/// generation moved away from it (None).
async fn serve_target(
    settings: &Settings,
    client: &Arc<ConvexClient>,
    target: &Target,
    exit_when_caught_up: bool,
    metrics: &Metrics,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<ExitCode>> {
    let db_url = settings.database_url()?.clone();
    metrics.generation_active.set(target.generation as i64);
    tracing::info!(generation = target.generation, slot = %target.slot, "projecting into Convex");
    let poller = spawn_slot_poller(db_url.clone(), target.slot.clone(), metrics.clone());
    let _poller = AbortOnDrop(poller);
    let mut backoff = Duration::from_millis(200);
    metrics.up.set(1);
    loop {
        if *shutdown.borrow() {
            return Ok(Some(ExitCode::SUCCESS));
        }
        // A fresh engine, so an empty cache, for every session: between two
        // sessions another replica may have owned the slot and written newer
        // states, and folding onto what we cached before would overwrite them.
        let (mut engine, mut acks) = Engine::new(
            client.clone(),
            target.generation,
            settings.tuning.clone(),
            metrics.clone(),
        );
        let result = session(
            settings,
            &db_url,
            target,
            client,
            &mut engine,
            &mut acks,
            metrics,
            health,
            shutdown,
            exit_when_caught_up,
        )
        .await;
        health.set_streaming(false);
        // Whatever happened, settle what is in flight so progress restarts
        // from a clean watermark.
        drain(&mut engine, &mut acks).await;
        match result {
            Ok(SessionEnd::Shutdown) | Ok(SessionEnd::CaughtUp) => {
                return Ok(Some(ExitCode::SUCCESS))
            }
            Ok(SessionEnd::Switched) => return Ok(None),
            Err(SessionError::Source(e)) if is_slot_lost(&e) => {
                health.set_connected(false);
                for st in ["reserved", "extended", "unreserved"] {
                    metrics.slot_wal_status.with_label_values(&[st]).set(0.0);
                }
                metrics
                    .slot_wal_status
                    .with_label_values(&["lost"])
                    .set(1.0);
                tracing::error!("{e}");
                eprintln!("error: {e}");
                return Ok(Some(ExitCode::from(EXIT_SLOT_LOST)));
            }
            Err(SessionError::Source(SourceError::SlotInUse { .. })) => {
                health.set_connected(false);
                tracing::info!(slot = %target.slot, "slot is in use by another consumer; standing by (not ready), retrying in 2 s");
                wait_or_shutdown(shutdown, Duration::from_secs(2)).await;
                backoff = Duration::from_millis(200);
                if target.follow_active {
                    // The other consumer may have moved on to a new generation.
                    if let Ok(Some(g)) = client.get_active().await {
                        if g != target.generation {
                            return Ok(None);
                        }
                    }
                }
            }
            Err(SessionError::Source(e)) if e.is_transient() => {
                health.set_connected(false);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "lost the replication connection; reconnecting");
                wait_or_shutdown(shutdown, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(SessionError::Source(e)) => return Err(e.into()),
            Err(SessionError::Sink(e)) => return Err(e.into()),
        }
    }
}

async fn wait_or_shutdown(shutdown: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        Ok(()) = shutdown.changed() => {}
    }
}

/// Closes the open batch and waits for every in-flight batch.
async fn drain(
    engine: &mut Engine,
    acks: &mut tokio::sync::mpsc::UnboundedReceiver<crate::pipeline::dispatch::Ack>,
) {
    loop {
        if engine.has_open_batch() && engine.has_slot() {
            if let Err(e) = engine.close_batch().await {
                tracing::error!(error = %e, "cannot close the last batch");
                return;
            }
            continue;
        }
        if engine.inflight_batches() == 0 {
            return;
        }
        match acks.recv().await {
            Some(ack) => engine.handle_ack(ack),
            None => return,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
}

#[allow(clippy::too_many_arguments)]
async fn session(
    settings: &Settings,
    db_url: &crate::config::Secret,
    target: &Target,
    client: &Arc<ConvexClient>,
    engine: &mut Engine,
    acks: &mut tokio::sync::mpsc::UnboundedReceiver<crate::pipeline::dispatch::Ack>,
    metrics: &Metrics,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
    exit_when_caught_up: bool,
) -> Result<SessionEnd, SessionError> {
    let sql = crate::source::sql::connect(db_url).await?;
    let slot = crate::source::slot::slot_info(&sql, &target.slot)
        .await?
        .ok_or_else(|| SourceError::SlotMissing {
            slot: target.slot.clone(),
        })?;
    if slot.is_lost() {
        return Err(SourceError::SlotInvalidated {
            slot: target.slot.clone(),
            detail: format!(
                "wal_status is {}",
                slot.wal_status.as_deref().unwrap_or("lost")
            ),
        }
        .into());
    }
    let start = slot.confirmed_flush_lsn.unwrap_or(Lsn(0));
    let caught_up_at = if exit_when_caught_up {
        Some(
            crate::history::current_wal_lsn(&sql)
                .await
                .map_err(|e| SourceError::Sql(e.to_string()))?,
        )
    } else {
        None
    };
    drop(sql);
    let mut stream = ReplicationStream::start(
        db_url,
        &target.slot,
        &settings.publication,
        start,
        // No in-progress streaming: the server spills large transactions and
        // sends them at commit, so our memory never holds a whole one.
        StreamOptions {
            streaming: false,
            ..StreamOptions::default()
        },
    )
    .await?;
    engine.reset_progress(start);
    health.set_connected(true);
    health.set_streaming(true);
    // The window is worth seeing when a drain is slower than expected
    // (none: the kernel auto-tunes it; see LOOPBACK_RECV_BUFFER).
    tracing::info!(
        start = %start,
        recv_buffer = stream.recv_buffer().map_or_else(|| "auto".to_string(), |b| b.to_string()),
        "streaming"
    );
    let mut decoder = EventDecoder::new();
    let mut status = tokio::time::interval(settings.tuning.status_interval);
    status.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let flush = engine.flush_handle();
    let mut active_check = tokio::time::interval(ACTIVE_CHECK);
    active_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let switched = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bulk_read_bytes = bulk_read_threshold(stream.recv_buffer());
    loop {
        if switched.load(Ordering::Relaxed) {
            tracing::info!(
                "stopping this generation's stream: a rebuild switched the active generation"
            );
            drain(engine, acks).await;
            let f = engine.flush_lsn();
            stream
                .send_status(engine.received_lsn().max(f), f, f, false)
                .await?;
            stream.finish().await;
            return Ok(SessionEnd::Switched);
        }
        if let Some(t) = caught_up_at {
            if engine.flush_lsn() >= t && engine.is_drained() {
                let f = engine.flush_lsn();
                stream
                    .send_status(engine.received_lsn().max(f), f, f, false)
                    .await?;
                metrics.set_lsns(engine.received_lsn().0, f.0, f.0);
                stream.finish().await;
                return Ok(SessionEnd::CaughtUp);
            }
        }
        // A full batch waiting for a slot closes first (reads below would
        // overfill it: the stream is polled before the fill deadline).
        if engine.batch_full() && engine.has_slot() {
            close_with_status(engine, &mut stream, &flush, &mut status).await?;
            continue;
        }
        let deadline = engine.batch_deadline().filter(|_| engine.has_slot());
        let can_read = engine.can_read();
        // Bulk reads while catching up: when the last read emptied the
        // socket with little data (we decode faster than the walsender
        // sends), wait a moment so the next read returns many messages
        // instead of waking up per message (a third of CPU went to
        // recvfrom/epoll_wait). Only for a backlog: events that committed
        // over a second ago are not delayed in any way that matters.
        if engine.catching_up()
            && can_read
            && !stream.has_buffered_message()
            && stream.last_read() < bulk_read_bytes
        {
            // A blocking sleep, not a timer: while the runtime waits in
            // epoll, every small write of the walsender wakes it (tens of
            // thousands of context switches per million events); asleep,
            // the socket just fills. Acks and HTTP I/O wait at most this long.
            std::thread::sleep(if stream.is_unix_socket() {
                BULK_READ_PAUSE_UNIX
            } else {
                BULK_READ_PAUSE
            });
        }
        tokio::select! {
            biased;
            Ok(()) = shutdown.changed() => {
                tracing::info!("stopping: no more reads; finishing in-flight writes");
                drain(engine, acks).await;
                let f = engine.flush_lsn();
                stream.send_status(engine.received_lsn().max(f), f, f, false).await?;
                metrics.set_lsns(engine.received_lsn().0, f.0, f.0);
                stream.finish().await;
                tracing::info!(confirmed = %f, "stopped cleanly");
                return Ok(SessionEnd::Shutdown);
            }
            Some(ack) = acks.recv() => {
                engine.handle_ack(ack);
                health.mark_progress();
            }
            _ = active_check.tick(), if target.follow_active => {
                // Off the loop: a slow Convex must not delay status updates.
                let client = client.clone();
                let switched = switched.clone();
                let ours = target.generation;
                tokio::spawn(async move {
                    if let Ok(Some(g)) = client.get_active().await {
                        if g != ours {
                            switched.store(true, Ordering::Relaxed);
                        }
                    }
                });
            }
            _ = status.tick() => {
                let f = engine.flush_lsn();
                stream.send_status(engine.received_lsn().max(f), f, f, false).await?;
                metrics.set_lsns(engine.received_lsn().0, f.0, f.0);
                health.mark_progress();
            }
            msg = stream.next(), if can_read => {
                let Some(mut msg) = msg? else {
                    return Err(SourceError::Closed.into());
                };
                // Everything one socket read brought is handled here, not
                // one message per trip through `select!` (whose polling of
                // every branch cost more than decoding a message).
                let mut budget = MESSAGES_PER_WAKE;
                loop {
                    match msg {
                        WalMessage::Keepalive { wal_end, reply_requested, .. } => {
                            engine.observe_wal_end(wal_end);
                            if reply_requested {
                                let f = engine.flush_lsn();
                                stream.send_status(engine.received_lsn().max(f), f, f, false).await?;
                                metrics.set_lsns(engine.received_lsn().0, f.0, f.0);
                            }
                        }
                        WalMessage::XLogData { data, wal_end, server_time, .. } => {
                            engine.observe_send_time(crate::source::stream::pg_to_unix_us(server_time));
                            decoder.feed_bytes(&data).map_err(|e| SourceError::Protocol(e.to_string()))?;
                            while let Some(ev) = decoder.pop() {
                                match ev {
                                    SourceEvent::Begin { commit_time_us, .. } => engine.begin(commit_time_us),
                                    SourceEvent::Event(ev) => {
                                        if engine.push(ev) && engine.has_slot() {
                                            close_with_status(engine, &mut stream, &flush, &mut status).await?;
                                        }
                                    }
                                    SourceEvent::Commit { end_lsn, .. } => engine.commit(end_lsn),
                                    SourceEvent::Violation { kind, detail } => {
                                        let kind = format!("{kind:?}").to_lowercase();
                                        metrics.append_only_violations_total.with_label_values(&[&kind]).inc();
                                        tracing::error!(%kind, %detail, "runtime.events is append-only, but the WAL carries a change that breaks that contract; it is not projected");
                                        record_violation(client, &kind, &detail);
                                    }
                                }
                            }
                            engine.observe_wal_end(wal_end);
                        }
                    }
                    budget -= 1;
                    if budget == 0 || !engine.can_read() {
                        break;
                    }
                    match stream.try_next()? {
                        Some(next) => msg = next,
                        None => break,
                    }
                }
                health.mark_progress();
            }
            // After the stream (biased): while WAL is ready to read, the
            // batch keeps filling up to its size limits (a backlog drains in
            // full batches: fewer mutations, more coalescing); the fill time
            // closes it as soon as the stream has nothing ready.
            _ = async { sleep_until(deadline.map(Instant::from_std).unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                close_with_status(engine, &mut stream, &flush, &mut status).await?;
            }
        }
    }
}

/// Closes the open batch while still sending status updates on the timer
/// (hydration may wait on a slow or failing Convex).
async fn close_with_status(
    engine: &mut Engine,
    stream: &mut ReplicationStream,
    flush: &Arc<std::sync::atomic::AtomicU64>,
    status: &mut tokio::time::Interval,
) -> Result<(), SessionError> {
    let fut = engine.close_batch();
    tokio::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return r.map_err(SessionError::from),
            _ = status.tick() => {
                let f = Lsn(flush.load(Ordering::Relaxed));
                stream.send_status(f, f, f, false).await?;
            }
        }
    }
}

/// Slot missing or invalidated: streaming cannot resume; `rebuild` is the remedy.
pub fn is_slot_lost(e: &SourceError) -> bool {
    matches!(
        e,
        SourceError::SlotMissing { .. } | SourceError::SlotInvalidated { .. }
    )
}

/// Records an append-only violation in projectorState (generation 0, key
/// `violations`), off the hot path; best effort, it is logged and counted
/// either way.
fn record_violation(client: &Arc<ConvexClient>, kind: &str, detail: &str) {
    let client = client.clone();
    let value = serde_json::json!({
        "kind": kind,
        "detail": detail.chars().take(500).collect::<String>(),
        "at": chrono::Utc::now().timestamp_millis(),
    });
    tokio::spawn(async move {
        let retry = RetryPolicy::bounded(5);
        let r = crate::sink::with_retry(&retry, "setState", || {
            let value = value.clone();
            let client = client.clone();
            async move { client.set_state(0, "lastViolation", value).await }
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not record the violation in projectorState");
        }
    });
}

/// How often slot health is read from `pg_replication_slots`.
const SLOT_POLL: Duration = Duration::from_secs(10);

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls the slot's retained WAL, `wal_status` and `safe_wal_size` into
/// the metrics (with the predicted time to invalidation).
fn spawn_slot_poller(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_window_is_never_a_short_read() {
        // Auto-tuned (network, Unix socket): the fixed threshold.
        assert_eq!(bulk_read_threshold(None), BULK_READ_BYTES);
        // Loopback: 64 KiB asked, 128 KiB granted -> a quarter.
        assert_eq!(bulk_read_threshold(Some(128 * 1024)), 32 * 1024);
        // A kernel granting only what was asked: still under a full read.
        assert_eq!(bulk_read_threshold(Some(64 * 1024)), 16 * 1024);
        assert_eq!(bulk_read_threshold(Some(8 << 20)), BULK_READ_BYTES);
    }
}
