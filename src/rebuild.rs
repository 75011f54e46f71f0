//! `projector rebuild`: replay the whole history into a new generation from
//! a fresh slot, then switch clients to it atomically.
//!
//! ```text
//!  phase snapshot: new slot S' (SNAPSHOT 'export') ── history at the snapshot,
//!                  seq order, positions (0, seq) ──▶ Engine ──▶ generation g+1
//!  phase catchup:  stream S' (in this process) until it confirms the WAL
//!                  insert position read just before, quickly
//!  switch:         setActive(g+1, expected g)   (clients move atomically;
//!                  the S' stream keeps running)
//!  phase cleanup:  once the old slot's consumer has let go (no deadline: the
//!                  new generation is streamed meanwhile), stop streaming S'
//!                  and wait for a `run` service to take it over; drop the
//!                  old slot (also when it is lost), purge generation g
//! ```
//!
//! Meanwhile generation g keeps serving clients and a running `run` service
//! keeps streaming the old slot into it: two pipelines side by side, one
//! writer each. After the switch the service notices the new active
//! generation (it polls every few seconds), releases the old slot and takes
//! over S' as soon as this process lets go of it, so the new generation
//! is never frozen for longer than that hand-over. Clients never see a
//! partial generation (the switch waits for the catch-up) nor an older one
//! (the new stream is at most a moment behind the old one at the switch).
//!
//! Interruptible: the phase is recorded in `projectorState` (generation 0,
//! key `rebuild`) before each step, and every step is idempotent. An
//! interrupted snapshot copy cannot continue (its exported snapshot died
//! with the connection), so it restarts: drop S', purge g+1, copy again.
//! The slot name is recorded before the slot is created, so a resumed or
//! repeated rebuild never leaks one. Tested by SIGKILLing the binary in
//! every phase (tests/rebuild_kill.rs).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use crate::config::{CommonArgs, Settings};
use crate::generation::{self, Phase, RebuildRecord};
use crate::metrics::{Health, Metrics};
use crate::pipeline::driver::Driver;
use crate::sink::ConvexClient;

#[derive(Args, Debug)]
pub(crate) struct RebuildArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Keep the old generation's documents (skip the purge).
    #[arg(long)]
    pub(crate) keep_old: bool,
    /// After the switch the rebuild streams the new generation for as long
    /// as the old slot is still consumed (a service that has not followed
    /// yet), warning every this many seconds. A resumed cleanup waits this
    /// long for the old slot to be released before giving up on dropping it
    /// (it is retried on the next run).
    #[arg(long, default_value_t = 60)]
    pub(crate) release_wait_secs: u64,
}

pub(crate) async fn main(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let settings = args.common.resolve()?;
    let metrics = Metrics::new()?;
    let shutdown = crate::pipeline::service::shutdown_signal();
    let summary = rebuild(
        &settings,
        &metrics,
        shutdown,
        args.keep_old,
        Duration::from_secs(args.release_wait_secs),
    )
    .await?;
    match summary {
        Some(s) => {
            println!(
                "rebuild complete: generation {} is active ({} events of history in {:.1} s, {:.0} events/s); slot {}",
                s.generation,
                s.history_events,
                s.elapsed.as_secs_f64(),
                s.history_events as f64 / s.copy_elapsed.as_secs_f64().max(1e-9),
                s.slot
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!("rebuild interrupted; run `projector rebuild` again to resume");
            Ok(ExitCode::from(130))
        }
    }
}

pub(crate) struct Summary {
    pub(crate) generation: u64,
    pub(crate) slot: String,
    pub(crate) history_events: u64,
    pub(crate) elapsed: Duration,
    pub(crate) copy_elapsed: Duration,
}

/// Runs (or resumes) a rebuild to completion. `None` when interrupted.
/// Holds the one-rebuild lease throughout (renewed in the background) and
/// gives it up however the rebuild ends.
pub(crate) async fn rebuild(
    settings: &Settings,
    metrics: &Metrics,
    shutdown: tokio::sync::watch::Receiver<bool>,
    keep_old: bool,
    release_wait: Duration,
) -> anyhow::Result<Option<Summary>> {
    let (url, key) = settings.convex()?;
    let client = Arc::new(ConvexClient::new(
        url,
        key.clone(),
        settings.tuning.convex_timeout,
    )?);
    let holder = crate::identity::writer_identity();
    let lease = generation::begin_rebuild(&client, &holder).await?;
    let renew = {
        let client = client.clone();
        let holder = holder.clone();
        crate::pipeline::slot_poller::AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(generation::LEASE_RENEW).await;
                match generation::renew_rebuild(&client, &holder).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!("another rebuild took the rebuild lease over (ours was not renewed in time); this one should be stopped");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the rebuild lease; retrying")
                    }
                }
            }
        }))
    };
    let result = run_rebuild(
        settings,
        &client,
        lease,
        metrics,
        shutdown,
        keep_old,
        release_wait,
    )
    .await;
    drop(renew);
    if let Err(e) = generation::end_rebuild(&client, &holder).await {
        tracing::warn!(error = %e, "cannot give the rebuild lease up; it expires by itself");
    }
    result
}

async fn run_rebuild(
    settings: &Settings,
    client: &Arc<ConvexClient>,
    lease: generation::Lease,
    metrics: &Metrics,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    keep_old: bool,
    release_wait: Duration,
) -> anyhow::Result<Option<Summary>> {
    let started = Instant::now();
    let client = client.clone();
    let db_url = settings.database_url()?.clone();
    let sql = crate::source::sql::connect(&db_url).await?;

    let existing = generation::rebuild_record(&client).await?;
    if let Some(r) = &existing {
        // Names read back from Convex: only slots this projector makes.
        for name in std::iter::once(&r.slot).chain(r.old_slot.as_ref()) {
            crate::source::slot::validate_slot_name(name, &settings.slot)?;
        }
    }
    let mut rec = match existing {
        Some(r) => {
            tracing::info!(target = r.target, phase = ?r.phase, "resuming an interrupted rebuild");
            r
        }
        None => {
            // The lease reserved the target in the transaction that read
            // the active generation: `run` does not create it meanwhile.
            let target = lease.target;
            let old_slot = match lease.from {
                Some(g) => Some(generation::slot_of(&client, g, &settings.slot).await?),
                // A fresh deployment: the configured slot (made by `setup`)
                // feeds nothing once generation 1 comes from the new slot;
                // the cleanup drops it instead of leaving it to pin WAL.
                None => crate::source::slot::slot_info(&sql, &settings.slot)
                    .await?
                    .map(|_| settings.slot.clone()),
            };
            let r = RebuildRecord::new(
                target,
                format!("{}_g{}", settings.slot, target),
                lease.from,
                old_slot,
            );
            generation::save_rebuild(&client, Some(&r)).await?;
            r
        }
    };

    let mut history_events = 0;
    let mut copy_elapsed = Duration::ZERO;
    if rec.phase == Phase::Snapshot {
        // Start clean: a previous attempt's slot and documents are useless.
        drop_slot_retrying(&sql, &rec.slot).await?;
        generation::purge(&client, rec.target).await?;
        let copy_started = Instant::now();
        match copy_snapshot(settings, &client, &rec, metrics, &mut shutdown).await? {
            Some(n) => history_events = n,
            None => return Ok(None),
        }
        copy_elapsed = copy_started.elapsed();
        rec.phase = Phase::Catchup;
        generation::save_rebuild(&client, Some(&rec)).await?;
    }

    if rec.phase == Phase::Catchup {
        if *shutdown.borrow() {
            return Ok(None);
        }
        if !catch_up_and_switch(
            settings,
            &client,
            &sql,
            &mut rec,
            metrics,
            &shutdown,
            release_wait,
        )
        .await?
        {
            return Ok(None);
        }
    }

    if rec.phase == Phase::Cleanup {
        if let Some(old) = &rec.old_slot {
            if old != &rec.slot {
                drop_when_released(&sql, old, release_wait).await?;
            }
        }
        if let (Some(old), false) = (rec.from, keep_old) {
            generation::purge(&client, old).await?;
        }
        generation::save_rebuild(&client, None).await?;
    }
    Ok(Some(Summary {
        generation: rec.target,
        slot: rec.slot,
        history_events,
        elapsed: started.elapsed(),
        copy_elapsed,
    }))
}

/// How far behind the WAL the new slot may be when the switch happens: the
/// catch-up loop measures how long confirming the current WAL position
/// took and switches once that is short.
const SWITCH_LAG: Duration = Duration::from_millis(1500);
const MAX_CATCHUP_ROUNDS: u32 = 20;

/// Streams the new slot into the new generation (in this process, in the
/// background) until it has confirmed the WAL position current moments
/// before, then switches the active generation while the stream keeps
/// running, and keeps it running until the old slot's consumer (a `run`
/// service following the active generation) has let go, so the new
/// generation never freezes for longer than the service's hand-over.
/// `false` when interrupted.
async fn catch_up_and_switch(
    settings: &Settings,
    client: &ConvexClient,
    sql: &tokio_postgres::Client,
    rec: &mut RebuildRecord,
    metrics: &Metrics,
    shutdown: &tokio::sync::watch::Receiver<bool>,
    release_wait: Duration,
) -> anyhow::Result<bool> {
    let mut s = settings.clone();
    s.slot = rec.slot.clone();
    // Frequent status updates: the switch waits on the confirmed LSN.
    s.tuning.status_interval = s.tuning.status_interval.min(Duration::from_millis(100));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stream = {
        let metrics = metrics.clone();
        let target = rec.target;
        tokio::spawn(async move {
            crate::pipeline::service::run_service(
                &s,
                crate::pipeline::service::ServiceOptions {
                    generation: Some(target),
                    exit_when_caught_up: false,
                    backfill: false,
                },
                metrics,
                Health::new(crate::pipeline::service::WEDGED_AFTER),
                stop_rx,
            )
            .await
        })
    };
    let stream = StreamTask {
        handle: Some(stream),
        stop: stop_tx,
    };

    // 1. Catch up: confirm the WAL position read just before, until doing so is quick.
    let mut rounds = 0;
    loop {
        let w = wal_insert_lsn(sql).await?;
        let t0 = Instant::now();
        loop {
            if *shutdown.borrow() {
                stream.stop().await?;
                return Ok(false);
            }
            if stream.is_finished() {
                stream.stop().await?;
                anyhow::bail!(
                    "streaming the new slot {} stopped before it caught up",
                    rec.slot
                );
            }
            let confirmed = crate::source::slot::slot_info(sql, &rec.slot)
                .await?
                .and_then(|i| i.confirmed_flush_lsn);
            if confirmed.is_some_and(|c| c >= w) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = t0.elapsed();
        rounds += 1;
        tracing::info!(lsn = %w, took_ms = took.as_millis() as u64, "the new generation confirmed the WAL position");
        if took <= SWITCH_LAG {
            break;
        }
        if rounds >= MAX_CATCHUP_ROUNDS {
            // Traffic outpaces the stream; the switch is still safe (the
            // stream keeps running), only clients may see a brief lag.
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                "the new generation stays behind the WAL; switching anyway"
            );
            break;
        }
    }

    // 2. Switch (the stream keeps running).
    generation::set_slot(client, rec.target, &rec.slot).await?;
    let (ok, active) = generation::switch(client, rec.target, rec.from).await?;
    if !ok && active != Some(rec.target) {
        stream.stop().await?;
        anyhow::bail!(
            "the active generation changed under the rebuild (expected {:?}, found {:?}); run `projector rebuild` again",
            rec.from,
            active
        );
    }
    tracing::info!(generation = rec.target, "switched the active generation");
    metrics.generation_active.set(rec.target as i64);
    rec.phase = Phase::Cleanup;
    generation::save_rebuild(client, Some(rec)).await?;

    // 3. Keep the new generation moving until the old slot's consumer has
    // moved on (it follows the active generation), then hand the new slot over.
    let Some(old) = rec.old_slot.clone().filter(|o| *o != rec.slot) else {
        stream.stop().await?;
        return Ok(true);
    };
    let had_consumer = wait_released(sql, &old, shutdown, &stream, release_wait).await?;
    stream.stop().await?;
    if had_consumer && !*shutdown.borrow() {
        hand_over(sql, &rec.slot).await?;
    }
    Ok(true)
}

/// How long the rebuild waits, after letting go of the new slot, for the
/// service that left the old slot to take it (it retries every 2 s).
const HANDOVER_WAIT: Duration = Duration::from_secs(10);

/// Streams on (in `stream`) while `old` is held: the service still feeding
/// the old generation has not followed the switch yet, and stopping now
/// would freeze the generation clients read. No deadline, only a warning
/// every `warn_every`: the fix is the operator's (stop that consumer).
/// Whether anyone held `old` at all.
async fn wait_released(
    sql: &tokio_postgres::Client,
    old: &str,
    shutdown: &tokio::sync::watch::Receiver<bool>,
    stream: &StreamTask,
    warn_every: Duration,
) -> anyhow::Result<bool> {
    let mut had_consumer = false;
    let mut next_warning = Instant::now() + warn_every;
    loop {
        let holder = crate::source::slot::slot_info(sql, old)
            .await?
            .filter(|i| i.active)
            .map(|i| i.active_pid);
        let Some(pid) = holder else {
            return Ok(had_consumer);
        };
        had_consumer = true;
        if *shutdown.borrow() || stream.is_finished() {
            return Ok(had_consumer);
        }
        if Instant::now() >= next_warning {
            tracing::warn!(slot = old, ?pid, "the old slot is still consumed after the switch; streaming the new generation until that consumer lets go (stop it if it does not follow the active generation)");
            next_warning = Instant::now() + warn_every;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for a service to take the new slot over; says so if none does
/// (the slot keeps its position: a service started later resumes there).
async fn hand_over(sql: &tokio_postgres::Client, slot: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + HANDOVER_WAIT;
    while Instant::now() < deadline {
        if crate::source::slot::slot_info(sql, slot)
            .await?
            .is_some_and(|i| i.active)
        {
            tracing::info!(slot, "a service took the new slot over");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(slot, "no service took the new slot over within {HANDOVER_WAIT:?}; the new generation is not updated until `projector run` streams it");
    Ok(())
}

/// The WAL insert position: every transaction committed so far ends at or
/// before it (`pg_current_wal_lsn()`, the write position, can lag it when
/// `synchronous_commit` is off).
async fn wal_insert_lsn(sql: &tokio_postgres::Client) -> anyhow::Result<crate::event::Lsn> {
    let row = sql
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint", &[])
        .await?;
    Ok(crate::event::Lsn(row.get::<_, i64>(0).max(0) as u64))
}

/// The in-process stream of the new slot.
struct StreamTask {
    handle: Option<tokio::task::JoinHandle<anyhow::Result<ExitCode>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl StreamTask {
    fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stops the stream (in-flight writes finish, the slot is confirmed).
    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match self.handle.take() {
            Some(h) => match h.await {
                Ok(Ok(code)) if code == ExitCode::SUCCESS => Ok(()),
                Ok(Ok(code)) => anyhow::bail!("streaming the new slot ended with {code:?}"),
                Ok(Err(e)) => Err(e.context("streaming the new slot")),
                Err(e) => anyhow::bail!("the new slot's stream task failed: {e}"),
            },
            None => Ok(()),
        }
    }
}

impl Drop for StreamTask {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// Folds the history visible at the new slot's snapshot into the target
/// generation. Returns the number of events, or None when interrupted.
async fn copy_snapshot(
    settings: &Settings,
    client: &Arc<ConvexClient>,
    rec: &RebuildRecord,
    metrics: &Metrics,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<u64>> {
    let db_url = settings.database_url()?;
    let snap = crate::source::slot::create_slot_with_snapshot(db_url, &rec.slot).await?;
    tracing::info!(slot = %rec.slot, consistent_point = %snap.consistent_point, "created the new slot; copying history at its snapshot");
    let sql = crate::source::sql::connect(db_url).await?;
    let store = crate::sink::adaptive::Adaptive::new(
        client.clone(),
        settings.tuning.max_inflight_batches,
        Some(metrics.clone()),
    );
    let mut driver = Driver::new(
        std::sync::Arc::new(store),
        rec.target,
        settings.tuning.clone(),
        metrics.clone(),
    );
    driver
        .acquire_writer(&crate::identity::writer_identity())
        .await?;
    let copied = crate::pipeline::copy::copy_history(
        &sql,
        Some(&snap.snapshot_name),
        &mut driver,
        metrics,
        shutdown,
        "rebuild",
    )
    .await?;
    snap.release().await;
    Ok(copied)
}

/// Drops a slot left by an interrupted attempt; its walsender may take a
/// moment to notice that the killed process is gone.
async fn drop_slot_retrying(sql: &tokio_postgres::Client, slot: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match crate::source::slot::drop_slot(sql, slot).await {
            Ok(_) => return Ok(()),
            Err(crate::source::SourceError::SlotInUse { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Drops a slot once no consumer holds it (a running service moves to the
/// new generation within seconds of the switch).
async fn drop_when_released(
    sql: &tokio_postgres::Client,
    slot: &str,
    wait: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        match crate::source::slot::slot_info(sql, slot).await? {
            None => return Ok(()),
            Some(info) if !info.active => {
                crate::source::slot::drop_slot(sql, slot).await?;
                tracing::info!(slot, "dropped the old slot");
                return Ok(());
            }
            Some(_) if Instant::now() >= deadline => {
                anyhow::bail!("the old slot {slot} is still in use after {wait:?}; stop the consumer or run `projector rebuild` again to finish the cleanup")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
