//! One streaming session: a replication connection on the target's slot,
//! from its confirmed position until shutdown, a switch of the active
//! generation, the catch-up point, or an error.
//!
//! ```text
//!  ┌─▶ catching up and the last read was small? sleep 2 ms (socket fills)
//!  │   a live batch filling? wake on 16 KiB of WAL, not on every commit
//!  │   select! (biased), one named method per arm, in this priority:
//!  │     1. shutdown            on_shutdown: settle, confirm, stop
//!  │     2. acknowledgement     on_ack: the flush LSN may advance
//!  │     3. active check        on_active_check: did a rebuild switch away?
//!  │     4. status timer        confirm(): progress to Postgres
//!  │     5. replication message on_replication: every message one read
//!  │                            brought (≤ 1,024) → decoder → engine
//!  │     6. batch deadline      on_deadline: close_batch
//!  └──────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Why this order: stopping must win over everything; an acknowledgement
//! is cheap and frees budget the reads below need; status updates must not
//! starve behind a busy stream (`wal_sender_timeout`); and the stream comes
//! before the deadline so that while WAL is ready the batch keeps filling up
//! to its size limits (a backlog drains in full batches: fewer mutations,
//! more coalescing), while the deadline closes it as soon as nothing is ready.
//!
//! Progress sent to Postgres is always the engine's flush LSN: the commit
//! end of the last transaction whose every batch Convex acknowledged (see
//! `pipeline::watermark`), so a crash between any two steps resends what
//! was not acknowledged and nothing else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep_until, Instant, Interval, MissedTickBehavior};

use crate::event::Lsn;
use crate::pipeline::context::{SessionContext, SessionEnd, SessionError};
use crate::pipeline::dispatch::Ack;
use crate::pipeline::driver::Driver;
use crate::pipeline::violations::Violations;
use crate::source::event::{EventDecoder, SourceEvent};
use crate::source::stream::{ReplicationStream, StreamOptions, WalMessage};
use crate::source::SourceError;

/// How often a following service checks the active generation.
const ACTIVE_CHECK: Duration = Duration::from_secs(3);

/// While catching up, a read shorter than this is followed by a pause.
const BULK_READ_BYTES: usize = 64 * 1024;

/// The pause threshold for a connection whose receive buffer we fixed:
/// a quarter of it at most. A full window must never count as a short
/// read, or every read would pause and the window would cap the drain at
/// window / pause. With 64 KiB asked (128 KiB granted) reads average
/// ~120 KB, so a quarter leaves a margin for kernels that grant less.
fn bulk_read_threshold(granted_recv_buffer: Option<u32>) -> usize {
    granted_recv_buffer.map_or(BULK_READ_BYTES, |g| (g as usize / 4).min(BULK_READ_BYTES))
}

/// The pause: the walsender fills the socket meanwhile. Over a network
/// TCP's receive buffer grows to megabytes, so 2 ms of WAL fits; on
/// loopback our window is small (`LOOPBACK_RECV_BUFFER`) and the rest
/// waits in the server's send queue, merged into large segments. The
/// measurements behind 2 ms are in BENCHMARKS.md.
const BULK_READ_PAUSE: Duration = Duration::from_millis(2);
/// A Unix socket holds only the server's send buffer (~200 KB of small
/// writes): the walsender fills it in well under a millisecond and then
/// blocks, so the TCP pause would throttle the drain.
const BULK_READ_PAUSE_UNIX: Duration = Duration::from_micros(400);
/// While a live batch fills, the replication socket wakes us only once
/// this much WAL is queued (see `Session::quiet_while_filling`): above a
/// few milliseconds of typical live traffic (2k events/s is ~5 KB per
/// 5 ms fill), far below any receive buffer, so a burst still wakes us to
/// fill the batch to its size limit while the window stays open.
const QUIET_WAKE_BYTES: u32 = 16 * 1024;

/// How long a batch whose fill time is up waits for the rest of a
/// transaction that is still arriving (once per batch; see
/// `Session::on_deadline`).
const TXN_GRACE: Duration = Duration::from_millis(1);

/// At most this many WAL messages are handled per wake-up before acks,
/// status and shutdown get their turn.
const MESSAGES_PER_WAKE: usize = 1024;

pub(crate) struct Session<'a> {
    ctx: SessionContext<'a>,
    driver: &'a mut Driver,
    stream: ReplicationStream,
    decoder: EventDecoder,
    status: Interval,
    active_check: Interval,
    /// Set by the active-generation check, which runs off the loop.
    switched: Arc<AtomicBool>,
    /// Stop once the flush LSN reaches this (`--exit-when-caught-up`).
    caught_up_at: Option<Lsn>,
    bulk_read_bytes: usize,
    violations: Violations,
    /// The slot's confirmed position this session started from.
    start: Lsn,
    /// The socket's wake-up mark is raised ([`QUIET_WAKE_BYTES`]).
    quiet: bool,
    /// The mark may be raised on this connection (false once refused).
    quiet_allowed: bool,
    /// The deadline of the batch that waited its [`TXN_GRACE`] already.
    graced: Option<std::time::Instant>,
}

impl<'a> Session<'a> {
    /// Connects, checks the slot and starts streaming from its confirmed
    /// position. `driver` must be settled (nothing open or in flight).
    pub(crate) async fn start(
        ctx: SessionContext<'a>,
        driver: &'a mut Driver,
    ) -> Result<Session<'a>, SessionError> {
        let slot_name = &ctx.target.slot;
        let sql = crate::source::sql::connect(ctx.db_url).await?;
        let slot = crate::source::slot::slot_info(&sql, slot_name)
            .await?
            .ok_or_else(|| SourceError::SlotMissing {
                slot: slot_name.clone(),
            })?;
        // Named by `invalidation_reason` where the server has it (17+:
        // wal_removed, idle_timeout, ...), each with its own remedy.
        if let Some(e) = slot.invalidated_error() {
            return Err(e.into());
        }
        let start = slot.confirmed_flush_lsn.unwrap_or(Lsn(0));
        let caught_up_at = if ctx.exit_when_caught_up {
            Some(
                crate::history::current_wal_lsn(&sql)
                    .await
                    .map_err(|e| SourceError::Sql(e.to_string()))?,
            )
        } else {
            None
        };
        drop(sql);
        let stream = ReplicationStream::start(
            ctx.db_url,
            slot_name,
            &ctx.settings.publication,
            start,
            // No in-progress streaming: the server spills large transactions
            // and sends them at commit, so our memory never holds a whole one.
            StreamOptions {
                streaming: false,
                max_message_bytes: Some(ctx.settings.tuning.max_event_bytes),
                ..StreamOptions::default()
            },
        )
        .await?;
        // We hold the slot: fence whoever wrote this generation before,
        // then (hydrating lazily) read only what it landed.
        let epoch = driver.acquire_writer(ctx.holder).await?;
        driver.engine_mut().reset_progress(start);
        ctx.health.set_blocked(None);
        ctx.health.set_connected(true);
        // The window is worth seeing when a drain is slower than expected
        // (none: the kernel auto-tunes it; see LOOPBACK_RECV_BUFFER).
        tracing::info!(
            start = %start,
            epoch,
            recv_buffer = stream.recv_buffer().map_or_else(|| "auto".to_string(), |b| b.to_string()),
            "streaming"
        );
        let mut status = tokio::time::interval(ctx.settings.tuning.status_interval);
        status.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut active_check = tokio::time::interval(ACTIVE_CHECK);
        active_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let bulk_read_bytes = bulk_read_threshold(stream.recv_buffer());
        let violations = Violations::new(ctx.client.clone());
        Ok(Session {
            ctx,
            driver,
            stream,
            decoder: EventDecoder::new(),
            status,
            active_check,
            switched: Arc::new(AtomicBool::new(false)),
            caught_up_at,
            bulk_read_bytes,
            violations,
            start,
            quiet: false,
            quiet_allowed: true,
            graced: None,
        })
    }

    /// Streams until the session ends (see the module doc for the loop).
    pub(crate) async fn run(
        mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<SessionEnd, SessionError> {
        let (stream, go_on) = crate::pipeline::backfill::run(
            &self.ctx,
            self.driver,
            self.stream,
            self.start,
            shutdown,
        )
        .await?;
        self.stream = stream;
        if !go_on {
            return self.on_shutdown().await;
        }
        // Ready only now: during a backfill the read model is still filling.
        self.ctx.health.set_streaming(true);
        loop {
            if let Some(fenced) = self.driver.engine().fenced() {
                self.stop().await?;
                return Err(fenced.into());
            }
            if let Some(end) = self.finished() {
                self.stop().await?;
                return Ok(end);
            }
            let engine = self.driver.engine();
            // A full batch waiting for a slot closes first (reads below would
            // overfill it: the stream is polled before the fill deadline).
            if engine.batch_full() && engine.has_slot() {
                self.close_batch().await?;
                continue;
            }
            let deadline = engine.batch_deadline().filter(|_| engine.has_slot());
            let can_read = engine.can_read();
            if can_read {
                self.pause_for_bulk_read();
            }
            let filling =
                deadline.filter(|d| *d > std::time::Instant::now() && !engine.catching_up());
            if self.quiet_while_filling(filling.is_some()).await? {
                continue;
            }
            let follow = self.ctx.target.follow_active;
            tokio::select! {
                biased;
                Ok(()) = shutdown.changed() => return self.on_shutdown().await,
                Some(ack) = self.driver.acks.recv() => self.on_ack(ack),
                _ = self.active_check.tick(), if follow => self.on_active_check(),
                _ = self.status.tick() => self.confirm().await?,
                msg = self.stream.next(), if can_read => self.on_replication(msg?).await?,
                _ = sleep_until_deadline(deadline), if deadline.is_some() => self.on_deadline().await?,
            }
        }
    }

    /// The ends that are not events: a switch away from our generation, or
    /// the catch-up point reached with everything acknowledged.
    fn finished(&self) -> Option<SessionEnd> {
        if self.switched.load(Ordering::Relaxed) {
            tracing::info!(
                "stopping this generation's stream: a rebuild switched the active generation"
            );
            return Some(SessionEnd::Switched);
        }
        let engine = self.driver.engine();
        match self.caught_up_at {
            Some(t) if engine.flush_lsn() >= t && engine.is_drained() => Some(SessionEnd::CaughtUp),
            _ => None,
        }
    }

    async fn on_shutdown(self) -> Result<SessionEnd, SessionError> {
        tracing::info!("stopping: no more reads; finishing in-flight writes");
        let confirmed = self.stop().await?;
        tracing::info!(%confirmed, "stopped cleanly");
        Ok(SessionEnd::Shutdown)
    }

    fn on_ack(&mut self, ack: Ack) {
        self.driver.on_ack(ack);
        self.ctx.health.mark_progress();
    }

    /// Asks Convex for the active generation, off the loop: a slow Convex
    /// must not delay status updates.
    fn on_active_check(&mut self) {
        let client = self.ctx.client.clone();
        let switched = self.switched.clone();
        let ours = self.ctx.target.generation;
        tokio::spawn(async move {
            if let Ok(Some(g)) = crate::generation::active(&client).await {
                if g != ours {
                    switched.store(true, Ordering::Relaxed);
                }
            }
        });
    }

    /// Handles `first` and every further message the same socket read
    /// brought, not one message per trip through `select!` (whose polling
    /// of every arm cost more than decoding a message).
    async fn on_replication(&mut self, first: Option<WalMessage>) -> Result<(), SessionError> {
        let Some(mut msg) = first else {
            return Err(SourceError::Closed.into());
        };
        let mut budget = MESSAGES_PER_WAKE;
        loop {
            match msg {
                WalMessage::Keepalive {
                    wal_end,
                    reply_requested,
                    ..
                } => {
                    self.driver.engine_mut().observe_wal_end(wal_end);
                    if reply_requested {
                        self.confirm().await?;
                    }
                }
                WalMessage::XLogData {
                    data,
                    wal_end,
                    server_time,
                    oversized,
                    ..
                } => {
                    self.driver
                        .engine_mut()
                        .observe_send_time(crate::source::stream::pg_to_unix_us(server_time));
                    match oversized {
                        None => self.decoder.feed_bytes(&data),
                        Some(bytes) => self.decoder.feed_oversized(&data, bytes),
                    }
                    .map_err(|e| SourceError::Protocol(e.to_string()))?;
                    self.decode_events().await?;
                    self.driver.engine_mut().observe_wal_end(wal_end);
                }
            }
            budget -= 1;
            if budget == 0 || !self.driver.engine().can_read() {
                break;
            }
            match self.stream.try_next()? {
                Some(next) => msg = next,
                None => break,
            }
        }
        self.ctx.health.mark_progress();
        Ok(())
    }

    /// Moves every complete event out of the decoder into the engine.
    async fn decode_events(&mut self) -> Result<(), SessionError> {
        while let Some(ev) = self.decoder.pop() {
            match ev {
                SourceEvent::Begin { commit_time_us, .. } => {
                    self.driver.engine_mut().begin(commit_time_us)
                }
                SourceEvent::Event(ev) => {
                    if self.driver.engine_mut().push(ev) && self.driver.engine().has_slot() {
                        self.close_batch().await?;
                    }
                }
                SourceEvent::Commit { end_lsn, .. } => {
                    self.violations.commit(self.ctx.metrics);
                    self.driver.engine_mut().commit(end_lsn)
                }
                SourceEvent::Violation { kind, detail } => self.violations.observe(kind, detail),
                SourceEvent::Oversized {
                    seq,
                    columns,
                    bytes,
                    position,
                } => {
                    let max = self.ctx.settings.tuning.max_event_bytes;
                    let cut = columns.each_ref().map(Vec::as_slice);
                    let dl =
                        crate::projection::oversized::dead_letter(seq, &cut, bytes, max, position);
                    if self.driver.engine_mut().push_dead_letter(dl)
                        && self.driver.engine().has_slot()
                    {
                        self.close_batch().await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Bulk reads while catching up: when the last read emptied the socket
    /// with little data (we decode faster than the walsender sends), wait
    /// a moment so the next read returns many messages instead of waking
    /// up per message. Only for a backlog: events that committed over a
    /// second ago are not delayed in any way that matters.
    fn pause_for_bulk_read(&self) {
        if self.driver.engine().catching_up()
            && !self.stream.has_buffered_message()
            && self.stream.last_read() < self.bulk_read_bytes
        {
            // A blocking sleep, not a timer: while the runtime waits in
            // epoll, every small write of the walsender wakes it; asleep,
            // the socket just fills. Acks and HTTP I/O wait at most this long.
            std::thread::sleep(if self.stream.is_unix_socket() {
                BULK_READ_PAUSE_UNIX
            } else {
                BULK_READ_PAUSE
            });
        }
    }

    /// Quiet reads while a live batch fills: the batch closes at its
    /// deadline whatever arrives before it, so waking for each small
    /// transaction only moves events from the kernel's buffer into ours
    /// sooner. Until the deadline the socket wakes us only once
    /// [`QUIET_WAKE_BYTES`] are queued (a burst still fills the batch to its
    /// size limit); at it, the mark drops to every arrival, which signals
    /// what queued meanwhile, and one yield lets the reactor see that
    /// before the loop reads it into this batch. Returns true when the mark
    /// just dropped (the caller goes round the loop again).
    ///
    /// Where the mark cannot be raised (see `PgConn::set_wake_threshold`)
    /// reads stay as they were for the rest of the session. A mark that
    /// cannot be dropped ends the session (the service reconnects): left
    /// raised, a lone small commit would never wake us.
    async fn quiet_while_filling(&mut self, filling: bool) -> Result<bool, SessionError> {
        if filling && !self.quiet && self.quiet_allowed {
            match self.stream.set_wake_threshold(QUIET_WAKE_BYTES) {
                Ok(()) => self.quiet = true,
                Err(e) => {
                    self.quiet_allowed = false;
                    tracing::debug!(error = %e, "reads wake on every commit on this connection");
                }
            }
            Ok(false)
        } else if !filling && self.quiet {
            self.stream.set_wake_threshold(1).map_err(|e| {
                SourceError::Io(std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot reset the replication socket's wake-up mark (SO_RCVLOWAT): {e}"
                    ),
                ))
            })?;
            self.quiet = false;
            tokio::task::yield_now().await;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// The open batch's fill time is up: close it, unless reads are still
    /// quiet (then the loop first drops the mark and reads what queued), or
    /// a transaction is arriving: then wait up to [`TXN_GRACE`] once per
    /// batch for its rest, so a transaction that reaches us in the middle
    /// of its writes is not cut (its commit would wait a whole fill more).
    async fn on_deadline(&mut self) -> Result<(), SessionError> {
        if self.quiet {
            return Ok(());
        }
        let engine = self.driver.engine();
        let batch = engine.batch_deadline();
        if engine.in_transaction() && engine.can_read() && self.graced != batch {
            self.graced = batch;
            if let Ok(msg) = tokio::time::timeout(TXN_GRACE, self.stream.next()).await {
                return self.on_replication(msg?).await;
            }
        }
        self.close_batch().await
    }

    /// Closes the open batch while still sending status updates on the
    /// timer (hydration may wait on a slow or failing Convex).
    async fn close_batch(&mut self) -> Result<(), SessionError> {
        let flush = self.driver.engine().flush_handle();
        let fut = self.driver.close_batch();
        tokio::pin!(fut);
        loop {
            tokio::select! {
                r = &mut fut => return r.map_err(SessionError::from),
                _ = self.status.tick() => {
                    let f = Lsn(flush.load(Ordering::Relaxed));
                    self.stream.send_status(f, f, f, false).await?;
                }
            }
        }
    }

    /// Sends the flush LSN to Postgres: the one place progress is confirmed.
    async fn confirm(&mut self) -> Result<(), SessionError> {
        let engine = self.driver.engine();
        let flush = engine.flush_lsn();
        let received = engine.received_lsn().max(flush);
        self.stream
            .send_status(received, flush, flush, false)
            .await?;
        self.ctx.metrics.set_lsns(received.0, flush.0, flush.0);
        self.ctx.health.mark_progress();
        Ok(())
    }

    /// Settles every batch, confirms, and ends the replication stream.
    /// Returns the LSN confirmed last.
    async fn stop(mut self) -> Result<Lsn, SessionError> {
        self.driver.settle().await?;
        self.confirm().await?;
        self.stream.finish().await;
        Ok(self.driver.engine().flush_lsn())
    }
}

async fn sleep_until_deadline(deadline: Option<std::time::Instant>) {
    sleep_until(deadline.map(Instant::from_std).unwrap_or_else(Instant::now)).await
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
