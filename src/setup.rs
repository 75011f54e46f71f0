//! `projector setup`: a pre-flight doctor for the source database.
//!
//! Checks wal_level, the role's right to stream, runtime.events, the
//! publication and what it covers, replica identity, the slot (and its
//! wal_status) and max_slot_wal_keep_size, and what a failover would do to
//! the slot (`failover`: failover slots on 17+, the standby settings).
//! Every problem is printed with the exact SQL that fixes it; `--apply`
//! creates the publication and the slot (idempotently; a failover slot on
//! 17+, and an existing idle slot is made one) and checks again. On a
//! standby nothing is applied. Exit 0 when nothing fails, 1 otherwise.

use std::fmt;
use std::process::ExitCode;

use clap::Args;

use crate::config::{CommonArgs, Secret};
use crate::source::conn::{quote_ident, quote_literal};
use crate::source::{slot, sql, SourceError};

mod failover;

/// The schema file, printed as the fix when runtime.events is missing.
pub(crate) const SCHEMA_SQL: &str = include_str!("../sql/001_runtime_events.sql");

#[derive(Args, Debug)]
pub(crate) struct SetupArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Create the publication and the replication slot when missing.
    #[arg(long)]
    pub(crate) apply: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub level: Level,
    /// Stable short name of the check, e.g. `wal_level`, `slot`.
    pub(crate) check: &'static str,
    pub message: String,
    /// The SQL (or command) that fixes it.
    pub fix: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(f, "{tag} {:<18} {}", self.check, self.message)?;
        if let Some(fix) = &self.fix {
            for line in fix.lines() {
                write!(f, "\n       fix: {line}")?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// What `--apply` did.
    pub applied: Vec<String>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Fail)
    }
    pub fn get(&self, check: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.check == check)
    }
}

pub(crate) async fn main(args: SetupArgs) -> anyhow::Result<ExitCode> {
    let settings = args.common.resolve()?;
    let url = settings.database_url()?;
    // With Convex configured, check the slot that feeds the active
    // generation (after a rebuild it is not the configured one: creating
    // the configured slot then would make a slot nothing consumes).
    let client = match settings.convex() {
        Ok((convex_url, key)) => Some(crate::sink::ConvexClient::new(
            convex_url,
            key.clone(),
            settings.tuning.convex_timeout,
        )?),
        Err(_) => None,
    };
    let slot = match &client {
        Some(c) => match crate::generation::active(c).await {
            Ok(Some(g)) => crate::generation::slot_of(c, g, &settings.slot).await?,
            Ok(None) => settings.slot.clone(),
            Err(e) => {
                println!("WARN convex            cannot read the active generation ({e}); checking the configured slot {}", settings.slot);
                settings.slot.clone()
            }
        },
        None => settings.slot.clone(),
    };
    let report = doctor(url, &slot, &settings.publication, args.apply).await?;
    for a in &report.applied {
        println!("applied: {a}");
    }
    for f in &report.findings {
        println!("{f}");
    }
    if let Some(c) = &client {
        let sql = sql::connect(url).await?;
        match crate::generation::orphan_slots(&sql, c, &settings.slot).await {
            Ok(orphans) => print!("{}", crate::status::render_orphans(&orphans)),
            Err(e) => println!(
                "WARN orphaned_slots     cannot tell which slots a generation owns ({e:#})"
            ),
        }
    }
    Ok(if report.failed() {
        println!("setup: problems found; run the SQL above (or `projector setup --apply` for the publication and slot)");
        ExitCode::from(1)
    } else {
        println!("setup: ready to stream");
        ExitCode::SUCCESS
    })
}

/// Runs the checks (and with `apply`, creates what is missing, then checks
/// again).
pub async fn doctor(
    url: &Secret,
    slot_name: &str,
    publication: &str,
    apply: bool,
) -> Result<Report, SourceError> {
    let client = sql::connect(url).await?;
    let server = failover::server(&client).await?;
    let mut applied = Vec::new();
    if apply && !server.in_recovery {
        applied = apply_fixes(&client, url, server, slot_name, publication).await?;
    }
    let mut report = check(&client, server, slot_name, publication).await?;
    if apply && server.in_recovery {
        report.findings.push(Finding {
            level: Level::Warn,
            check: "apply",
            message: "nothing applied: this server is a standby (read-only); run `projector setup --apply` against the primary".into(),
            fix: None,
        });
    }
    report.applied = applied;
    Ok(report)
}

async fn exists(client: &tokio_postgres::Client, sql: &str, p: &str) -> Result<bool, SourceError> {
    Ok(client.query_opt(sql, &[&p]).await?.is_some())
}

async fn apply_fixes(
    client: &tokio_postgres::Client,
    url: &Secret,
    server: failover::Server,
    slot_name: &str,
    publication: &str,
) -> Result<Vec<String>, SourceError> {
    let mut done = Vec::new();
    let has_table = client
        .query_one("select exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'runtime' and c.relname = 'events')", &[])
        .await?
        .get::<_, bool>(0);
    if !has_table {
        return Ok(done); // the schema is the application's; we only print it
    }
    if !exists(client, "select 1 from pg_publication where pubname = $1", publication).await? {
        let s = format!("CREATE PUBLICATION {} FOR TABLE runtime.events", quote_ident(publication));
        client.batch_execute(&s).await?;
        done.push(s);
    } else if !exists(
        client,
        "select 1 from pg_publication_tables where pubname = $1 and schemaname = 'runtime' and tablename = 'events'",
        publication,
    )
    .await?
    {
        let s = format!("ALTER PUBLICATION {} ADD TABLE runtime.events", quote_ident(publication));
        client.batch_execute(&s).await?;
        done.push(s);
    }
    let wal: String = client.query_one("show wal_level", &[]).await?.get(0);
    let existing = slot::slot_info(client, slot_name).await?;
    if wal == "logical" && existing.is_none() {
        match slot::create_slot(client, slot_name).await {
            Ok(lsn) => done.push(format!(
                "{} -- at {lsn}",
                create_slot_sql(server.major, slot_name).trim_end_matches(';')
            )),
            // A concurrent setup created it meanwhile: fine.
            Err(SourceError::Server { code, .. }) if code == "42710" => {}
            Err(e) => return Err(e),
        }
    }
    // An existing slot from before 17's failover slots (or made without):
    // make it one while no consumer holds it (the server refuses otherwise).
    if let Some(info) = existing {
        if info.failover == Some(false) && !info.active && !info.is_lost() {
            let cmd = failover::alter_to_failover(slot_name);
            let mut conn = crate::source::stream::connect_replication(url).await?;
            conn.ctx.slot = Some(slot_name.to_string());
            let r = conn.simple_query(&cmd).await;
            conn.close().await;
            r?;
            done.push(cmd);
        }
    }
    Ok(done)
}

/// The SQL that creates the slot: a failover slot where the server has them.
fn create_slot_sql(major: u32, slot_name: &str) -> String {
    if slot::supports_failover_slots(major) {
        format!(
            "SELECT pg_create_logical_replication_slot({}, 'pgoutput', false, false, true);  -- failover = true",
            quote_literal(slot_name)
        )
    } else {
        format!(
            "SELECT pg_create_logical_replication_slot({}, 'pgoutput');",
            quote_literal(slot_name)
        )
    }
}

/// A finding of `check` (and of the `failover` checks).
fn finding(level: Level, check: &'static str, message: String, fix: Option<String>) -> Finding {
    Finding {
        level,
        check,
        message,
        fix,
    }
}

/// The checks, in the order they are printed: each section queries what it
/// needs and returns its findings; the first query that fails ends the run.
async fn check(
    client: &tokio_postgres::Client,
    server: failover::Server,
    slot_name: &str,
    publication: &str,
) -> Result<Report, SourceError> {
    let mut r = Report::default();
    r.findings.push(wal_level_finding(client).await?);
    let (user, role) = role_finding(client).await?;
    r.findings.push(role);
    r.findings
        .extend(events_table_findings(client, &user).await?);
    r.findings
        .push(publication_finding(client, publication).await?);
    let (slot_row, slot) = slot_finding(client, server, slot_name).await?;
    r.findings.push(slot);
    r.findings.push(wal_keep_finding(client).await?);
    if let Some(f) = history_finding(client).await {
        r.findings.push(f);
    }
    r.findings
        .extend(failover::findings(client, server, slot_name, slot_row.as_ref()).await?);
    Ok(r)
}

/// `wal_level`: logical decoding needs `logical`.
async fn wal_level_finding(client: &tokio_postgres::Client) -> Result<Finding, SourceError> {
    let wal: String = client.query_one("show wal_level", &[]).await?.get(0);
    Ok(if wal == "logical" {
        finding(Level::Ok, "wal_level", "wal_level = logical".into(), None)
    } else {
        finding(
            Level::Fail,
            "wal_level",
            format!("wal_level = {wal}; logical decoding needs logical"),
            Some("ALTER SYSTEM SET wal_level = logical;  -- then restart Postgres (on managed Postgres set the provider's logical decoding flag)".into()),
        )
    })
}

/// `replication_role`: whether the connected role may stream (superuser,
/// REPLICATION, or RDS's rds_replication). Also returns the role's name,
/// which later findings mention.
async fn role_finding(client: &tokio_postgres::Client) -> Result<(String, Finding), SourceError> {
    let row = client
        .query_one(
            "select current_user::text, r.rolreplication, r.rolsuper,
                    exists (select 1 from pg_roles g where g.rolname = 'rds_replication'
                            and pg_has_role(current_user, g.oid, 'member'))
               from pg_roles r where r.rolname = current_user",
            &[],
        )
        .await?;
    let (user, repl, sup, rds): (String, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let f = if repl || sup || rds {
        let how = if sup {
            "superuser"
        } else if repl {
            "REPLICATION"
        } else {
            "rds_replication"
        };
        finding(
            Level::Ok,
            "replication_role",
            format!("role {user} may stream ({how})"),
            None,
        )
    } else {
        finding(
            Level::Fail,
            "replication_role",
            format!("role {user} has no REPLICATION attribute"),
            Some(format!(
                "ALTER ROLE {} WITH REPLICATION;",
                quote_ident(&user)
            )),
        )
    };
    Ok((user, f))
}

/// `events_table`, and when the table exists `events_select` (may `user`
/// read it) and `replica_identity` (informational: any identity will do
/// for an insert-only table).
async fn events_table_findings(
    client: &tokio_postgres::Client,
    user: &str,
) -> Result<Vec<Finding>, SourceError> {
    let has_table: bool = client
        .query_one("select exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'runtime' and c.relname = 'events')", &[])
        .await?
        .get(0);
    if !has_table {
        return Ok(vec![finding(
            Level::Fail,
            "events_table",
            "table runtime.events does not exist".into(),
            Some(SCHEMA_SQL.trim().to_string()),
        )]);
    }
    let mut out = vec![finding(
        Level::Ok,
        "events_table",
        "runtime.events exists".into(),
        None,
    )];
    let can_read: bool = client
        .query_one("select has_schema_privilege('runtime', 'usage') and has_table_privilege((select c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'runtime' and c.relname = 'events'), 'select')", &[])
        .await?
        .get(0);
    out.push(if can_read {
        finding(
            Level::Ok,
            "events_select",
            format!("{user} may SELECT runtime.events (rebuild, verify)"),
            None,
        )
    } else {
        finding(
            Level::Fail,
            "events_select",
            format!("{user} may not SELECT runtime.events (needed by rebuild and verify)"),
            Some(format!(
                "GRANT USAGE ON SCHEMA runtime TO {u}; GRANT SELECT ON runtime.events TO {u};",
                u = quote_ident(user)
            )),
        )
    });
    let ident: i8 = client
        .query_one("select relreplident::\"char\" from pg_class where oid = (select c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'runtime' and c.relname = 'events')", &[])
        .await?
        .get(0);
    let ident = match ident as u8 {
        b'd' => "default (primary key)",
        b'n' => "nothing",
        b'f' => "full",
        _ => "index",
    };
    out.push(finding(
        Level::Ok,
        "replica_identity",
        format!("replica identity {ident}: fine for an insert-only table (UPDATE/DELETE are reported as violations)"),
        None,
    ));
    Ok(out)
}

/// `publication`: it exists, covers runtime.events and publishes inserts.
async fn publication_finding(
    client: &tokio_postgres::Client,
    publication: &str,
) -> Result<Finding, SourceError> {
    let pub_row = client
        .query_opt(
            "select pubinsert, pubtruncate from pg_publication where pubname = $1",
            &[&publication],
        )
        .await?;
    let Some(row) = pub_row else {
        return Ok(finding(
            Level::Fail,
            "publication",
            format!("publication {publication} does not exist"),
            Some(format!(
                "CREATE PUBLICATION {} FOR TABLE runtime.events;",
                quote_ident(publication)
            )),
        ));
    };
    let covers = exists(
        client,
        "select 1 from pg_publication_tables where pubname = $1 and schemaname = 'runtime' and tablename = 'events'",
        publication,
    )
    .await?;
    let insert: bool = row.get(0);
    Ok(if !covers {
        finding(
            Level::Fail,
            "publication",
            format!("publication {publication} does not cover runtime.events"),
            Some(format!(
                "ALTER PUBLICATION {} ADD TABLE runtime.events;",
                quote_ident(publication)
            )),
        )
    } else if !insert {
        finding(
            Level::Fail,
            "publication",
            format!("publication {publication} does not publish inserts"),
            Some(format!(
                "ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate');",
                quote_ident(publication)
            )),
        )
    } else {
        finding(
            Level::Ok,
            "publication",
            format!("publication {publication} covers runtime.events"),
            None,
        )
    })
}

/// `slot`: reads the slot (returned too, for the failover findings) and
/// the current database, and judges it with [`slot_state_finding`].
async fn slot_finding(
    client: &tokio_postgres::Client,
    server: failover::Server,
    slot_name: &str,
) -> Result<(Option<slot::SlotInfo>, Finding), SourceError> {
    let db: String = client
        .query_one("select current_database()::text", &[])
        .await?
        .get(0);
    let create_slot = create_slot_sql(server.major, slot_name);
    let slot_row = slot::slot_info(client, slot_name).await?;
    let f = slot_state_finding(slot_name, &db, create_slot, slot_row.clone());
    Ok((slot_row, f))
}

/// The slot's verdict, in order of gravity: missing, another plugin,
/// another database, invalidated; else fine, or a warning when its WAL is
/// no longer reserved. `create_slot` is the SQL that creates it.
fn slot_state_finding(
    slot_name: &str,
    db: &str,
    create_slot: String,
    info: Option<slot::SlotInfo>,
) -> Finding {
    let Some(info) = info else {
        return finding(
            Level::Fail,
            "slot",
            format!("replication slot {slot_name} does not exist"),
            Some(create_slot),
        );
    };
    let recreate = format!(
        "SELECT pg_drop_replication_slot({});  -- then: {create_slot}  (or `projector rebuild`)",
        quote_literal(slot_name)
    );
    if info.plugin.as_deref() != Some("pgoutput") {
        finding(
            Level::Fail,
            "slot",
            format!(
                "slot {slot_name} uses plugin {:?}, not pgoutput",
                info.plugin.unwrap_or_default()
            ),
            Some(recreate),
        )
    } else if info.database.as_deref() != Some(db) {
        finding(
            Level::Fail,
            "slot",
            format!(
                "slot {slot_name} belongs to database {:?}, not {db:?}",
                info.database.unwrap_or_default()
            ),
            Some("connect DATABASE_URL to the slot's database, or choose another --slot".into()),
        )
    } else if let Some(reason) = info.lost_reason() {
        finding(
            Level::Fail,
            "slot",
            format!("slot {slot_name} is invalidated ({reason})"),
            Some("projector rebuild   -- creates a fresh slot and a new generation".into()),
        )
    } else {
        let status = info.wal_status.clone().unwrap_or_else(|| "?".into());
        let level = if status == "unreserved" {
            Level::Warn
        } else {
            Level::Ok
        };
        finding(
            level,
            "slot",
            format!(
                "slot {slot_name} exists (wal_status {status}, active {}, confirmed_flush_lsn {}, retained WAL {} bytes)",
                info.active,
                info.confirmed_flush_lsn.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                info.retained_wal_bytes.unwrap_or(0)
            ),
            (level == Level::Warn).then(|| "consume the slot soon (start `projector run`) or it will be lost".to_string()),
        )
    }
}

/// `max_slot_wal_keep_size`: unlimited (-1) is a warning.
async fn wal_keep_finding(client: &tokio_postgres::Client) -> Result<Finding, SourceError> {
    let keep: String = client
        .query_one("show max_slot_wal_keep_size", &[])
        .await?
        .get(0);
    Ok(if keep == "-1" {
        finding(
            Level::Warn,
            "max_slot_wal_keep_size",
            "max_slot_wal_keep_size = -1: a stalled slot can fill the disk".into(),
            Some(
                "ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf();".into(),
            ),
        )
    } else {
        finding(
            Level::Ok,
            "max_slot_wal_keep_size",
            format!("max_slot_wal_keep_size = {keep}"),
            None,
        )
    })
}

/// How much history a first `run` copies before streaming (the slot only
/// carries what commits after it was made).
async fn history_finding(client: &tokio_postgres::Client) -> Option<Finding> {
    let n: i64 = client
        .query_one("select count(*) from runtime.events", &[])
        .await
        .ok()?
        .get(0);
    Some(Finding {
        level: Level::Ok,
        check: "history",
        message: if n == 0 {
            "runtime.events is empty: nothing to backfill".into()
        } else {
            format!(
                "runtime.events holds {n} events: the first `projector run` on an empty read model copies them (backfill) before streaming; `run --no-backfill` starts from the slot alone"
            )
        },
        fix: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> slot::SlotInfo {
        slot::SlotInfo {
            slot_name: "projector".into(),
            plugin: Some("pgoutput".into()),
            database: Some("app".into()),
            active: true,
            active_pid: None,
            restart_lsn: None,
            confirmed_flush_lsn: None,
            wal_status: Some("reserved".into()),
            safe_wal_size: None,
            retained_wal_bytes: Some(42),
            invalidation_reason: None,
            conflicting: None,
            inactive_since: None,
            failover: None,
            synced: None,
        }
    }

    fn verdict(i: Option<slot::SlotInfo>) -> Finding {
        slot_state_finding("projector", "app", "CREATE;".into(), i)
    }

    #[test]
    fn the_slot_verdict_goes_from_missing_to_fine() {
        let missing = verdict(None);
        assert_eq!(missing.level, Level::Fail);
        assert_eq!(missing.fix.as_deref(), Some("CREATE;"));

        let mut other_plugin = info();
        other_plugin.plugin = Some("wal2json".into());
        let f = verdict(Some(other_plugin));
        assert_eq!(
            f.message,
            "slot projector uses plugin \"wal2json\", not pgoutput"
        );
        assert!(f
            .fix
            .unwrap()
            .contains("-- then: CREATE;  (or `projector rebuild`)"));

        let mut other_db = info();
        other_db.database = Some("other".into());
        assert_eq!(
            verdict(Some(other_db)).message,
            "slot projector belongs to database \"other\", not \"app\""
        );

        let mut lost = info();
        lost.wal_status = Some("lost".into());
        assert_eq!(
            verdict(Some(lost)).message,
            "slot projector is invalidated (wal_removed)"
        );

        let fine = verdict(Some(info()));
        assert_eq!((fine.level, fine.fix.is_none()), (Level::Ok, true));
        assert_eq!(
            fine.message,
            "slot projector exists (wal_status reserved, active true, confirmed_flush_lsn -, retained WAL 42 bytes)"
        );

        let mut unreserved = info();
        unreserved.wal_status = Some("unreserved".into());
        assert_eq!(verdict(Some(unreserved)).level, Level::Warn);
    }
}
