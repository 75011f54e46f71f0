//! `projector run`: the command line of the service (`pipeline::service`),
//! and what it does when the slot is lost.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::config::CommonArgs;
use crate::metrics::{self, Health, Metrics};
use crate::pipeline::service::{
    run_service, shutdown_signal, ServiceOptions, EXIT_SLOT_LOST, WEDGED_AFTER,
};

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Write into this generation instead of the active one (rebuild uses it).
    #[arg(long, hide = true)]
    pub(crate) generation: Option<u64>,
    /// Stop once caught up with the WAL position current at start (tests,
    /// benchmarks). The slot is confirmed before exiting.
    #[arg(long)]
    pub(crate) exit_when_caught_up: bool,
    /// Do not copy the history that predates the slot on the first start
    /// (a deliberately empty read model). By default, when the generation
    /// is empty and runtime.events has rows, they are copied first.
    #[arg(long, env = "PROJECTOR_NO_BACKFILL")]
    pub(crate) no_backfill: bool,
    /// What to do when the slot is missing or invalidated (a primary
    /// failover before PostgreSQL 17, max_slot_wal_keep_size, an idle
    /// timeout): `exit` with code 3 for an operator, or `rebuild` into a new
    /// generation from a fresh slot by itself (clients keep reading the old
    /// one meanwhile), then stream it.
    #[arg(long, env = "PROJECTOR_ON_SLOT_LOST", value_enum, default_value_t = OnSlotLost::Exit)]
    pub(crate) on_slot_lost: OnSlotLost,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnSlotLost {
    Exit,
    Rebuild,
}

/// How long a rebuild after a lost slot waits for the old slot's consumer;
/// there is none (the slot is gone), so this only bounds a stale holder.
const REBUILD_RELEASE_WAIT: Duration = Duration::from_secs(30);

pub(crate) async fn main(args: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = args.common.resolve()?;
    let metrics = Metrics::new()?;
    let health = Health::new(WEDGED_AFTER);
    let (addr, _server) =
        metrics::serve(settings.metrics_addr, metrics.clone(), health.clone()).await?;
    tracing::info!(%addr, "metrics, health and readiness endpoints listening");
    let shutdown = shutdown_signal();
    let options = ServiceOptions {
        generation: args.generation,
        exit_when_caught_up: args.exit_when_caught_up,
        backfill: !args.no_backfill,
    };
    loop {
        let code = run_service(
            &settings,
            options,
            metrics.clone(),
            health.clone(),
            shutdown.clone(),
        )
        .await?;
        if code != ExitCode::from(EXIT_SLOT_LOST) || args.on_slot_lost != OnSlotLost::Rebuild {
            return Ok(code);
        }
        // The slot is gone (a failover before PostgreSQL 17, an invalidation):
        // rebuild into a new generation from a fresh slot while clients keep
        // reading the old one, then follow it.
        tracing::warn!(
            "the slot is lost; --on-slot-lost=rebuild: rebuilding into a new generation"
        );
        match crate::rebuild::rebuild(
            &settings,
            &metrics,
            shutdown.clone(),
            false,
            REBUILD_RELEASE_WAIT,
        )
        .await?
        {
            Some(s) => {
                tracing::info!(generation = s.generation, slot = %s.slot, events = s.history_events, "rebuilt after the slot was lost; streaming the new generation")
            }
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}
