//! `projector status`: slot health, progress and lag, the active
//! generation and dead letters, for people and for scripts.
//!
//! Exit codes: 0 healthy, 1 lagging (or slot inactive), 3 slot lost or
//! missing, 2 could not tell (an error; with Convex unreachable the
//! Postgres side is still printed, and `convex_error` says why).

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::config::CommonArgs;
use crate::sink::ConvexClient;

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Lag (bytes of WAL not yet confirmed) above which status is "lagging".
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub(crate) max_lag_bytes: u64,
}

pub(crate) const EXIT_HEALTHY: u8 = 0;
pub(crate) const EXIT_LAGGING: u8 = 1;
pub(crate) const EXIT_ERROR: u8 = 2;
pub(crate) const EXIT_SLOT_LOST: u8 = 3;

const CONVEX_UNREACHABLE: &str =
    "convex unreachable: the slot shown is the configured one, which a rebuild may have replaced";

#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub(crate) slot: String,
    pub(crate) slot_exists: bool,
    pub(crate) active: Option<bool>,
    pub(crate) active_pid: Option<i32>,
    pub(crate) restart_lsn: Option<String>,
    pub(crate) confirmed_flush_lsn: Option<String>,
    pub(crate) current_wal_lsn: String,
    pub(crate) wal_status: Option<String>,
    /// Why the slot was invalidated: the server's `invalidation_reason`
    /// (17+; `idle_timeout` from 18), `wal_removed` for a lost slot before 17.
    pub(crate) invalidation_reason: Option<String>,
    /// The slot is a failover slot (17+), kept on standbys that sync slots.
    pub(crate) failover: Option<bool>,
    pub(crate) safe_wal_size: Option<i64>,
    pub(crate) retained_wal_bytes: Option<i64>,
    pub(crate) lag_bytes: Option<i64>,
    pub(crate) active_generation: Option<u64>,
    pub(crate) dead_letters: Option<usize>,
    /// The record of a rebuild in progress (or interrupted), if any.
    pub(crate) rebuild: Option<crate::generation::RebuildRecord>,
    /// Slots named like ours that no generation owns (they pin WAL).
    pub(crate) orphaned_slots: Vec<crate::generation::OrphanSlot>,
    /// Why Convex could not be read (the rest is still reported).
    pub(crate) convex_error: Option<String>,
    pub(crate) verdict: String,
}

pub(crate) async fn main(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let settings = args.common.resolve()?;
    let db_url = settings.database_url()?;
    let sql = crate::source::sql::connect(db_url).await?;
    // The slot that feeds the active generation (a rebuild records its own).
    let mut slot = settings.slot.clone();
    let mut rebuild = None;
    let mut convex_error = None;
    let mut orphaned_slots = Vec::new();
    let (active_generation, dead_letters) = match settings.convex() {
        Ok((url, key)) => {
            let client = ConvexClient::new(url, key.clone(), settings.tuning.convex_timeout)?;
            match convex_view(&client, &settings.slot).await {
                Ok(view) => {
                    slot = view.slot;
                    rebuild = view.rebuild;
                    orphaned_slots =
                        crate::generation::orphan_slots(&sql, &client, &settings.slot).await?;
                    (view.generation, view.dead_letters)
                }
                // Postgres can still be reported: the configured slot, which
                // is the active generation's unless a rebuild switched it.
                Err(e) => {
                    convex_error = Some(format!("{e:#}"));
                    (None, None)
                }
            }
        }
        Err(_) => (None, None),
    };
    let info = crate::source::slot::slot_info(&sql, &slot).await?;
    let current = crate::history::current_wal_lsn(&sql).await?;
    let lag = info
        .as_ref()
        .and_then(|i| i.confirmed_flush_lsn)
        .map(|c| current.0 as i64 - c.0 as i64);
    let retained = info
        .as_ref()
        .and_then(|i| i.restart_lsn)
        .map(|r| current.0 as i64 - r.0 as i64);
    let (verdict, code) = match &info {
        _ if convex_error.is_some() => (CONVEX_UNREACHABLE.to_string(), EXIT_ERROR),
        None => (
            "slot missing: run `projector setup --apply` (or `projector rebuild`)".to_string(),
            EXIT_SLOT_LOST,
        ),
        Some(i) => match i.lost_reason() {
            Some(reason) => (lost_verdict(reason), EXIT_SLOT_LOST),
            None if !i.active => (
                "slot inactive: no projector is streaming".to_string(),
                EXIT_LAGGING,
            ),
            None if lag.is_some_and(|l| l > args.max_lag_bytes as i64) => {
                ("lagging".to_string(), EXIT_LAGGING)
            }
            None => ("healthy".to_string(), EXIT_HEALTHY),
        },
    };
    let status = Status {
        slot,
        slot_exists: info.is_some(),
        active: info.as_ref().map(|i| i.active),
        active_pid: info.as_ref().and_then(|i| i.active_pid),
        restart_lsn: info
            .as_ref()
            .and_then(|i| i.restart_lsn)
            .map(|l| l.to_string()),
        confirmed_flush_lsn: info
            .as_ref()
            .and_then(|i| i.confirmed_flush_lsn)
            .map(|l| l.to_string()),
        current_wal_lsn: current.to_string(),
        wal_status: info.as_ref().and_then(|i| i.wal_status.clone()),
        invalidation_reason: info
            .as_ref()
            .and_then(|i| i.lost_reason().map(str::to_string)),
        failover: info.as_ref().and_then(|i| i.failover),
        safe_wal_size: info.as_ref().and_then(|i| i.safe_wal_size),
        retained_wal_bytes: retained,
        lag_bytes: lag,
        active_generation,
        dead_letters,
        rebuild,
        orphaned_slots,
        convex_error,
        verdict,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(ExitCode::from(code))
}

/// "slot lost (idle_timeout): run `projector rebuild`, and raise …": the
/// reason, then the remedy for that reason.
fn lost_verdict(reason: &str) -> String {
    format!(
        "slot lost ({reason}): run `projector rebuild`, and {}",
        crate::source::error::invalidation_remedy(reason)
    )
}

/// What Convex says: the active generation, the slot that feeds it, its
/// dead letters, and a rebuild in progress.
struct ConvexView {
    generation: Option<u64>,
    slot: String,
    dead_letters: Option<usize>,
    rebuild: Option<crate::generation::RebuildRecord>,
}

async fn convex_view(client: &ConvexClient, configured_slot: &str) -> anyhow::Result<ConvexView> {
    let generation = crate::generation::active(client).await?;
    let rebuild = crate::generation::rebuild_record(client).await?;
    let (slot, dead_letters) = match generation {
        Some(g) => (
            crate::generation::slot_of(client, g, configured_slot).await?,
            Some(crate::verify::dump(client, "deadLetters", g).await?.len()),
        ),
        None => (configured_slot.to_string(), None),
    };
    Ok(ConvexView {
        generation,
        slot,
        dead_letters,
        rebuild,
    })
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// One line per orphaned slot, with the SQL that drops it.
pub(crate) fn render_orphans(orphans: &[crate::generation::OrphanSlot]) -> String {
    orphans
        .iter()
        .map(|o| {
            format!(
                "orphaned slot {}: no generation owns it, it pins WAL (retained {} bytes{}); drop it: {}\n",
                o.name,
                opt(&o.retained_wal_bytes),
                o.active_pid
                    .map_or_else(String::new, |p| format!(", in use by pid {p}: stop that consumer first")),
                o.fix
            )
        })
        .collect()
}

pub(crate) fn render(s: &Status) -> String {
    format!(
        "slot {slot}: {exists}, active {active} (pid {pid})\n  \
         restart_lsn {restart}  confirmed_flush_lsn {confirmed}  current {current}\n  \
         wal_status {ws}{reason}  safe_wal_size {safe}  retained WAL {retained} bytes  lag {lag} bytes\n\
         convex: {convex}{rb}\n\
         {orphans}verdict: {verdict}\n",
        slot = s.slot,
        exists = if s.slot_exists { "exists" } else { "MISSING" },
        active = opt(&s.active),
        pid = opt(&s.active_pid),
        restart = opt(&s.restart_lsn),
        confirmed = opt(&s.confirmed_flush_lsn),
        current = s.current_wal_lsn,
        ws = opt(&s.wal_status),
        reason = s
            .invalidation_reason
            .as_ref()
            .map_or_else(String::new, |r| format!(" (invalidated: {r})")),
        safe = opt(&s.safe_wal_size),
        retained = opt(&s.retained_wal_bytes),
        lag = opt(&s.lag_bytes),
        convex = match &s.convex_error {
            Some(e) => format!("UNREACHABLE ({e})"),
            None => format!(
                "active generation {}, dead letters {}",
                opt(&s.active_generation),
                opt(&s.dead_letters)
            ),
        },
        verdict = s.verdict,
        orphans = render_orphans(&s.orphaned_slots),
        rb = s.rebuild.as_ref().map_or_else(String::new, |r| format!(
            "\nrebuild in progress (run `projector rebuild` to resume if interrupted): generation {} phase {} slot {}",
            r.target, r.phase, r.slot
        )),
    )
}
