//! The long-running service behind `projector run`. It resolves the target
//! (the active generation and the slot that feeds it), then runs one
//! [`Session`] after another on it: reconnecting with backoff after a
//! transient error, standing by while another replica holds the slot, and
//! moving to the new generation when a rebuild switches it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Settings;
use crate::generation::Resolved;
use crate::metrics::{Health, Metrics};
use crate::pipeline::context::{SessionContext, SessionEnd, SessionError, Target};
use crate::pipeline::driver::Driver;
use crate::pipeline::session::Session;
use crate::pipeline::slot_poller::{spawn_slot_poller, AbortOnDrop};
use crate::sink::{ConvexClient, RetryPolicy};
use crate::source::SourceError;

/// Readiness fails when nothing moved (no event, ack or keepalive) this long.
pub(crate) const WEDGED_AFTER: Duration = Duration::from_secs(30);

/// Exit code when the slot is missing or invalidated: `rebuild` is the remedy.
pub(crate) const EXIT_SLOT_LOST: u8 = 3;

/// A watch that turns true on the first SIGINT/SIGTERM; the second one exits
/// the process at once (safe: delivery is at-least-once).
pub(crate) fn shutdown_signal() -> watch::Receiver<bool> {
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

/// Resolves the active generation (creating generation 1 on first start)
/// and the slot that feeds it (recorded by `rebuild`; the configured slot
/// for generation 1). On a fresh deployment where a rebuild fills the first
/// generation, waits (not ready) for its switch.
pub(crate) async fn resolve_target(
    client: &ConvexClient,
    configured_slot: &str,
    health: &Health,
) -> Result<Target, crate::sink::SinkError> {
    let retry = RetryPolicy::forever();
    let mut told = false;
    let generation = loop {
        match crate::generation::ensure_active(client, &retry).await? {
            Resolved::Active(g) => break g,
            Resolved::Rebuilding(target) => {
                let why = format!("a rebuild is filling generation {target}, the first one; waiting for its switch");
                if !told {
                    tracing::info!("{why}");
                    told = true;
                }
                health.set_blocked(Some(why));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    health.set_blocked(None);
    let slot = crate::generation::slot_of(client, generation, configured_slot).await?;
    Ok(Target {
        slot,
        generation,
        follow_active: true,
    })
}

/// How a service runs, beside its settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServiceOptions {
    /// Write into this generation instead of following the active one.
    pub(crate) generation: Option<u64>,
    /// Stop once caught up with the WAL position current at start.
    pub(crate) exit_when_caught_up: bool,
    /// Copy the history that predates the slot on a generation's first start.
    pub(crate) backfill: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            generation: None,
            exit_when_caught_up: false,
            backfill: true,
        }
    }
}

pub(crate) async fn run_service(
    settings: &Settings,
    options: ServiceOptions,
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
    // Deployment skew holds the service here (not ready, alerting) until
    // the functions and the binary agree, instead of crash-looping.
    tokio::select! {
        r = wait_for_matching_schema(&client, &metrics, &health) => r?,
        _ = shutdown.wait_for(|stop| *stop) => return Ok(ExitCode::SUCCESS),
    }
    loop {
        let target = match options.generation {
            Some(g) => Target {
                slot: settings.slot.clone(),
                generation: g,
                follow_active: false,
            },
            // Convex may be unreachable at startup (retried forever): a
            // signal must still stop us.
            None => tokio::select! {
                r = resolve_target(&client, &settings.slot, &health) => r?,
                _ = shutdown.wait_for(|stop| *stop) => return Ok(ExitCode::SUCCESS),
            },
        };
        match serve_target(
            settings,
            &client,
            &target,
            options,
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
/// generation moved away from it (None). Each session starts from the
/// slot's confirmed position; between sessions everything in flight is
/// settled, so progress restarts from a clean watermark.
async fn serve_target(
    settings: &Settings,
    client: &Arc<ConvexClient>,
    target: &Target,
    options: ServiceOptions,
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
    let holder = crate::identity::writer_identity();
    metrics.up.set(1);
    // One adaptive limit for the process: what it learned about the
    // deployment outlives a session.
    let store: Arc<dyn crate::sink::DocumentStore> =
        Arc::new(crate::sink::adaptive::Adaptive::new(
            client.clone(),
            settings.tuning.max_inflight_batches,
            Some(metrics.clone()),
        ));
    loop {
        if *shutdown.borrow() {
            return Ok(Some(ExitCode::SUCCESS));
        }
        // A fresh driver, so an empty cache, for every session: between two
        // sessions another replica may have owned the slot and written newer
        // states, and folding onto what we cached before would overwrite them.
        let mut driver = Driver::new(
            store.clone(),
            target.generation,
            settings.tuning.clone(),
            metrics.clone(),
        );
        let ctx = SessionContext {
            settings,
            db_url: &db_url,
            target,
            client,
            metrics,
            health,
            exit_when_caught_up: options.exit_when_caught_up,
            holder: &holder,
            backfill: options.backfill,
        };
        let result = match Session::start(ctx, &mut driver).await {
            Ok(session) => session.run(shutdown).await,
            Err(e) => Err(e),
        };
        health.set_streaming(false);
        // Whatever happened, settle what is in flight before the next session.
        if let Err(e) = driver.settle().await {
            tracing::error!(error = %e, "cannot settle the last batches");
        }
        match result {
            Ok(SessionEnd::Shutdown) | Ok(SessionEnd::CaughtUp) => {
                return Ok(Some(ExitCode::SUCCESS))
            }
            Ok(SessionEnd::Switched) => return Ok(None),
            Err(SessionError::Source(e)) if is_slot_lost(&e) => {
                // A rebuild drops the old generation's slot once it switched
                // away from it: a follower that was standing by (or
                // reconnecting) meanwhile moves on. Only the active
                // generation's own slot being lost is fatal.
                if target.follow_active && moved_on(client, target.generation).await {
                    tracing::info!(slot = %target.slot, "the slot is gone because a rebuild switched the active generation; moving to it");
                    return Ok(None);
                }
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
                tracing::info!(slot = %target.slot, "slot is in use by another consumer; standing by (not ready), retrying in 2 s");
                let why = format!(
                    "slot {} is in use by another consumer; standing by",
                    target.slot
                );
                stand_by(health, shutdown, why).await;
                backoff = Duration::from_millis(200);
                // The other consumer may have moved on to a new generation.
                if target.follow_active && moved_on(client, target.generation).await {
                    return Ok(None);
                }
            }
            Err(SessionError::Source(e)) if e.is_transient() => {
                health.set_connected(false);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "lost the replication connection; reconnecting");
                wait_or_shutdown(shutdown, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(SessionError::Sink(e)) if e.is_fenced() => {
                // Another replica took the slot while we were cut off and
                // fenced our writes: it owns the generation now.
                tracing::warn!(generation = target.generation, error = %e, "fenced by another writer; standing by, retrying the slot in 2 s");
                let why = format!(
                    "fenced: another process writes generation {}; standing by",
                    target.generation
                );
                stand_by(health, shutdown, why).await;
                backoff = Duration::from_millis(200);
            }
            Err(SessionError::Sink(e)) if e.is_transient() => {
                health.set_connected(false);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Convex is unreachable; ending the session and retrying");
                wait_or_shutdown(shutdown, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(SessionError::Source(e)) => return Err(e.into()),
            Err(SessionError::Sink(e)) => return Err(e.into()),
        }
    }
}

/// Checks that the deployed Convex functions implement this binary's
/// schema version, rechecking every 10 s while they do not.
async fn wait_for_matching_schema(
    client: &ConvexClient,
    metrics: &Metrics,
    health: &Health,
) -> Result<(), crate::sink::SinkError> {
    loop {
        match crate::sink::schema::check(client).await {
            Ok(None) => {
                metrics.convex_schema_skew.set(0);
                return Ok(());
            }
            Ok(Some(skew)) => {
                metrics.convex_schema_skew.set(1);
                health.set_blocked(Some(skew.to_string()));
                tracing::error!("{skew}; checking again in 10 s");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "cannot ask Convex for its schema version; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether the active generation is no longer `ours` (asked with retries:
/// the answer decides between moving on and exiting).
async fn moved_on(client: &ConvexClient, ours: u64) -> bool {
    let policy = RetryPolicy::bounded(8);
    match crate::sink::with_retry(&policy, "getActive", || client.get_active()).await {
        Ok(Some(g)) => g != ours,
        _ => false,
    }
}

/// Not ready, saying `why`, for the 2 s before the slot is tried again
/// (another replica streams it).
async fn stand_by(health: &Health, shutdown: &mut watch::Receiver<bool>, why: String) {
    health.set_connected(false);
    health.set_blocked(Some(why));
    wait_or_shutdown(shutdown, Duration::from_secs(2)).await;
}

async fn wait_or_shutdown(shutdown: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        Ok(()) = shutdown.changed() => {}
    }
}

/// Slot missing or invalidated: streaming cannot resume; `rebuild` is the remedy.
pub(crate) fn is_slot_lost(e: &SourceError) -> bool {
    matches!(
        e,
        SourceError::SlotMissing { .. } | SourceError::SlotInvalidated { .. }
    )
}
