//! Command-line interface: one binary, one subcommand per job. Each
//! subcommand owns its flags in its own module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{demo, loadgen, pipeline, rebuild, sandbox, setup, sink, status, verify};

/// Postgres-to-Convex CDC: streams runtime.events through a logical
/// replication slot (pgoutput), folds events into read models and writes them
/// into Convex exactly once in effect.
///
/// Start with `projector demo` (everything on this machine), then
/// `projector setup` against your database.
#[derive(Parser, Debug)]
#[command(name = "projector", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Stream the slot into Convex (the long-running service).
    Run(pipeline::RunArgs),
    /// Replay history into a new generation and switch to it atomically.
    Rebuild(rebuild::RebuildArgs),
    /// Prove Convex equals a fresh fold of runtime.events.
    Verify(verify::VerifyArgs),
    /// Slot health, progress, lag and the active generation.
    ///
    /// Exit codes: 0 healthy; 1 lagging (over --max-lag-bytes) or nobody
    /// streaming the slot; 2 could not tell (with Convex unreachable the
    /// Postgres side is still printed, for the configured slot); 3 slot
    /// lost or missing (run `projector rebuild`).
    Status(status::StatusArgs),
    /// Pre-flight doctor: check the database and print the SQL that fixes it.
    Setup(setup::SetupArgs),
    /// Write realistic runtime event traffic into runtime.events.
    Loadgen(loadgen::LoadgenArgs),
    /// Everything on this machine: throwaway Postgres, local Convex, traffic,
    /// live progress and a final verification.
    Demo(demo::DemoArgs),
    /// Convex-wire server that acknowledges every write (benchmarks).
    #[command(hide = true)]
    NullSink(sink::null::NullSinkArgs),
    /// Throwaway Postgres and/or local Convex backend for scripts
    /// (benchmarks): prints its connection facts as one JSON line, runs
    /// until SIGTERM or EOF on stdin.
    #[command(hide = true)]
    Sandbox(sandbox::command::SandboxArgs),
}

impl Cli {
    /// The tokio runtime this command runs on. `run` and `rebuild` are one
    /// pipeline each: decode, fold and serialise on one thread, so events are
    /// allocated and freed on the thread that made them and no task wakes
    /// another core (the walsender needs the other one; measured in
    /// BENCHMARKS.md). Traffic generation, verification and the demo fan out
    /// over all cores.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = match self.command {
            Command::Run(_) | Command::Rebuild(_) | Command::NullSink(_) => {
                tokio::runtime::Builder::new_current_thread()
            }
            _ => tokio::runtime::Builder::new_multi_thread(),
        };
        builder.enable_all().build()
    }

    pub async fn dispatch(self) -> ExitCode {
        let result = match self.command {
            Command::Run(a) => pipeline::main(a).await,
            Command::Rebuild(a) => rebuild::main(a).await,
            Command::Verify(a) => verify::main(a).await,
            Command::Status(a) => status::main(a).await,
            Command::Setup(a) => setup::main(a).await,
            Command::Loadgen(a) => loadgen::main(a).await,
            Command::Demo(a) => demo::main(a).await,
            Command::NullSink(a) => sink::null::main(a).await,
            Command::Sandbox(a) => sandbox::command::main(a).await,
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                // `{:#}` prints the whole cause chain on one line.
                tracing::error!("{e:#}");
                eprintln!("error: {e:#}");
                // 1 is a negative verdict (verify divergent, status lagging,
                // setup findings); 2 means the command could not complete.
                ExitCode::from(2)
            }
        }
    }
}
