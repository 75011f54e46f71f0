//! The failover part of `setup`: can the slot outlive the promotion of a
//! physical standby?
//!
//! Before PostgreSQL 17 a logical slot lives on the primary only, so a
//! promoted standby has none and the projector must `rebuild`. From 17 a
//! slot created with `failover = true` is copied to every standby that
//! runs with `sync_replication_slots = on`, `hot_standby_feedback = on`, a
//! `primary_slot_name` and a `dbname` in `primary_conninfo`; and the
//! primary's `synchronized_standby_slots` makes logical walsenders wait
//! until those standbys have the WAL, so the projector never receives a
//! change that a promoted standby lacks. These checks report what the
//! connected server shows of that, with the fix for each gap: on a primary
//! its side (and the standbys streaming from it); on a standby its own
//! settings.

use super::{finding, Finding, Level};
use crate::source::conn::{quote_ident, quote_literal};
use crate::source::slot::{supports_failover_slots, SlotInfo};
use crate::source::SourceError;

/// What kind of server `setup` is talking to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Server {
    pub(crate) major: u32,
    pub(crate) in_recovery: bool,
}

pub(crate) async fn server(client: &tokio_postgres::Client) -> Result<Server, SourceError> {
    let major = crate::source::slot::server_major(client).await?;
    let in_recovery: bool = client
        .query_one("select pg_is_in_recovery()", &[])
        .await?
        .get(0);
    Ok(Server { major, in_recovery })
}

/// The failover findings for the connected server.
pub(crate) async fn findings(
    client: &tokio_postgres::Client,
    server: Server,
    slot_name: &str,
    slot: Option<&SlotInfo>,
) -> Result<Vec<Finding>, SourceError> {
    if server.in_recovery {
        standby_findings(client, server, slot_name, slot).await
    } else {
        primary_findings(client, server, slot_name, slot).await
    }
}

/// `ALTER_REPLICATION_SLOT`, the only way to make an existing slot a
/// failover slot (17+; a replication connection; the slot must be idle).
pub(crate) fn alter_to_failover(slot_name: &str) -> String {
    format!(
        "ALTER_REPLICATION_SLOT {} (FAILOVER true)",
        quote_ident(slot_name)
    )
}

/// On a primary: whether the slot is a failover slot (17+; before 17 only
/// what a failover would cost), and whether `synchronized_standby_slots`
/// keeps the projector behind the standbys.
async fn primary_findings(
    client: &tokio_postgres::Client,
    server: Server,
    slot_name: &str,
    slot: Option<&SlotInfo>,
) -> Result<Vec<Finding>, SourceError> {
    let standbys = physical_standbys(client).await?;
    let physical = physical_slots(client).await?;
    let shown = standbys_shown(&standbys);
    if !supports_failover_slots(server.major) {
        return Ok(vec![pre_failover_slots_finding(
            server.major,
            slot_name,
            !standbys.is_empty(),
            &shown,
        )]);
    }
    let mut out = Vec::new();
    out.extend(failover_slot_finding(slot_name, slot, &shown));
    let listed = synchronized_standby_slots(client).await?;
    if listed.is_empty() {
        out.push(unsynchronized_finding(&physical, !standbys.is_empty()));
    } else {
        out.extend(
            listed
                .iter()
                .map(|name| standby_slot_finding(name, &physical)),
        );
    }
    Ok(out)
}

/// The physical standbys streaming from this server: (application_name,
/// state), by name.
async fn physical_standbys(
    client: &tokio_postgres::Client,
) -> Result<Vec<(String, String)>, SourceError> {
    Ok(client
        .query(
            // Physical walsenders are the ones connected to no database: a
            // logical one (`replication=database`) has a datid from its
            // first message, before it holds a slot, so a projector that is
            // still starting is not mistaken for a standby.
            "select coalesce(r.application_name, '')::text, coalesce(r.state, '')::text
               from pg_stat_replication r
               join pg_stat_activity a on a.pid = r.pid
              where a.datid is null
              order by 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The physical replication slots here: (name, active), by name.
async fn physical_slots(
    client: &tokio_postgres::Client,
) -> Result<Vec<(String, bool)>, SourceError> {
    Ok(client
        .query(
            "select slot_name::text, active from pg_replication_slots
              where slot_type = 'physical' order by slot_name",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The standbys, as the failover_slot messages show them.
fn standbys_shown(standbys: &[(String, String)]) -> String {
    if standbys.is_empty() {
        "no physical standby streams from this server".to_string()
    } else {
        format!(
            "physical standbys streaming: {}",
            standbys
                .iter()
                .map(|(app, state)| format!("{} ({state})", if app.is_empty() { "?" } else { app }))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Before 17: no slot survives a failover; a warning when there are
/// standbys to fail over to.
fn pre_failover_slots_finding(
    major: u32,
    slot_name: &str,
    has_standbys: bool,
    shown: &str,
) -> Finding {
    let level = if has_standbys { Level::Warn } else { Level::Ok };
    finding(
        level,
        "failover_slot",
        format!(
            "PostgreSQL {major}: logical slots live on the primary only, so a promoted standby has no slot {slot_name} and the projector needs `projector rebuild` after a failover ({shown}); PostgreSQL 17 keeps failover slots on standbys"
        ),
        None,
    )
}

/// 17+: whether the slot is a failover slot; `None` when there is no slot
/// yet (the slot finding says how to create one).
fn failover_slot_finding(slot_name: &str, slot: Option<&SlotInfo>, shown: &str) -> Option<Finding> {
    match slot.and_then(|s| s.failover)? {
        true => Some(finding(
            Level::Ok,
            "failover_slot",
            format!("slot {slot_name} is a failover slot ({shown})"),
            None,
        )),
        false => Some(finding(
            Level::Warn,
            "failover_slot",
            format!(
                "slot {slot_name} is not a failover slot: standbys will not keep a copy, and a failover needs `projector rebuild` ({shown})"
            ),
            Some(format!(
                "projector setup --apply   -- or, with the projector stopped, on a replication connection (psql \"dbname=<db> replication=database\"): {};",
                alter_to_failover(slot_name)
            )),
        )),
    }
}

/// The slot names in `synchronized_standby_slots` (unquoted; empty when
/// the setting is).
async fn synchronized_standby_slots(
    client: &tokio_postgres::Client,
) -> Result<Vec<String>, SourceError> {
    let listed: String = client
        .query_one("show synchronized_standby_slots", &[])
        .await?
        .get(0);
    Ok(listed
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// `synchronized_standby_slots` is empty: without a physical slot there
/// is nothing to list (a warning only when standbys stream); with one,
/// the projector may get ahead of the standby, and the fix lists them all.
fn unsynchronized_finding(physical: &[(String, bool)], has_standbys: bool) -> Finding {
    if physical.is_empty() {
        let level = if has_standbys { Level::Warn } else { Level::Ok };
        return finding(
            level,
            "synchronized_standby_slots",
            "no physical replication slot: a standby syncs logical slots only when it streams through one (primary_slot_name)".into(),
            (level == Level::Warn).then(|| {
                "SELECT pg_create_physical_replication_slot('standby1');  -- then on the standby: ALTER SYSTEM SET primary_slot_name = 'standby1'; SELECT pg_reload_conf();".to_string()
            }),
        );
    }
    let names: Vec<&str> = physical.iter().map(|(n, _)| n.as_str()).collect();
    finding(
        Level::Warn,
        "synchronized_standby_slots",
        "synchronized_standby_slots is empty: the projector can receive (and write to Convex) a change the standby has not received; after a failover Convex would hold events the new primary never had".into(),
        Some(format!(
            "ALTER SYSTEM SET synchronized_standby_slots = {}; SELECT pg_reload_conf();",
            quote_literal(&names.join(","))
        )),
    )
}

/// One slot named in `synchronized_standby_slots`: missing here (logical
/// walsenders then wait forever), inactive (they wait meanwhile) or active.
fn standby_slot_finding(name: &str, physical: &[(String, bool)]) -> Finding {
    match physical.iter().find(|(n, _)| n == name) {
        None => finding(
            Level::Fail,
            "synchronized_standby_slots",
            format!("synchronized_standby_slots names {name:?}, which is not a physical slot here: logical walsenders wait for it, so the projector receives nothing"),
            Some(format!(
                "SELECT pg_create_physical_replication_slot({});  -- or remove it: ALTER SYSTEM SET synchronized_standby_slots = '...'; SELECT pg_reload_conf();",
                quote_literal(name)
            )),
        ),
        Some((_, false)) => finding(
            Level::Warn,
            "synchronized_standby_slots",
            format!("standby slot {name} is inactive: while no standby streams through it the projector receives nothing (synchronized_standby_slots holds logical walsenders back)"),
            Some("start the standby, or drop the slot from synchronized_standby_slots while it is away".into()),
        ),
        Some((_, true)) => finding(
            Level::Ok,
            "synchronized_standby_slots",
            format!("standby slot {name} is active: the projector never gets ahead of that standby"),
            None,
        ),
    }
}

async fn show(client: &tokio_postgres::Client, name: &str) -> Result<String, SourceError> {
    Ok(client.query_one(&format!("show {name}"), &[]).await?.get(0))
}

/// `dbname` of a key=value conninfo (`primary_conninfo`), without showing
/// anything else of it (it may hold a password).
fn conninfo_dbname(conninfo: &str) -> Option<String> {
    conninfo.split_whitespace().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == "dbname" && !v.trim().is_empty())
            .then(|| v.trim().trim_matches('\'').to_string())
    })
}

async fn standby_findings(
    client: &tokio_postgres::Client,
    server: Server,
    slot_name: &str,
    slot: Option<&SlotInfo>,
) -> Result<Vec<Finding>, SourceError> {
    let mut out = Vec::new();
    if !supports_failover_slots(server.major) {
        out.push(finding(
            Level::Fail,
            "standby",
            format!(
                "this is a standby of PostgreSQL {}: it keeps no copy of logical slots; point DATABASE_URL at the primary (after a promotion, `projector rebuild`)",
                server.major
            ),
            None,
        ));
        return Ok(out);
    }
    out.push(finding(
        Level::Ok,
        "standby",
        "this is a standby: the projector streams from the primary; these are the settings that keep the slot here for a failover".into(),
        None,
    ));
    let on = |v: &str| v == "on";
    for (name, why) in [
        (
            "sync_replication_slots",
            "the standby copies failover slots from the primary",
        ),
        (
            "hot_standby_feedback",
            "the primary keeps the catalog rows the synced slot needs",
        ),
    ] {
        let v = show(client, name).await?;
        out.push(if on(&v) {
            finding(Level::Ok, name, format!("{name} = on: {why}"), None)
        } else {
            finding(
                Level::Fail,
                name,
                format!("{name} = {v}: it must be on so that {why}"),
                Some(format!(
                    "ALTER SYSTEM SET {name} = on; SELECT pg_reload_conf();"
                )),
            )
        });
    }
    let primary_slot = show(client, "primary_slot_name").await?;
    out.push(if primary_slot.is_empty() {
        finding(
            Level::Fail,
            "primary_slot_name",
            "primary_slot_name is empty: slot sync needs the standby to stream through a physical slot".into(),
            Some("on the primary: SELECT pg_create_physical_replication_slot('standby1');  then here: ALTER SYSTEM SET primary_slot_name = 'standby1'; SELECT pg_reload_conf();".into()),
        )
    } else {
        finding(
            Level::Ok,
            "primary_slot_name",
            format!("primary_slot_name = {primary_slot} (list it in the primary's synchronized_standby_slots)"),
            None,
        )
    });
    match client.query_one("show primary_conninfo", &[]).await {
        Ok(row) => {
            let conninfo: String = row.get(0);
            out.push(match conninfo_dbname(&conninfo) {
                Some(db) => finding(
                    Level::Ok,
                    "primary_conninfo",
                    format!("primary_conninfo names dbname {db}"),
                    None,
                ),
                None => finding(
                    Level::Fail,
                    "primary_conninfo",
                    "primary_conninfo has no dbname: the slot sync worker connects to a database of the primary to read its slots".into(),
                    Some("add dbname=<any database of the primary> to primary_conninfo (ALTER SYSTEM SET primary_conninfo = '...'); SELECT pg_reload_conf();".into()),
                ),
            });
        }
        Err(e) => out.push(finding(
            Level::Warn,
            "primary_conninfo",
            format!(
                "cannot read primary_conninfo ({}): check that it names a dbname",
                SourceError::from(e)
            ),
            Some("GRANT pg_read_all_settings TO <this role>;  -- to let setup check it".into()),
        )),
    }
    out.push(match slot {
        Some(s) if s.synced == Some(true) && !s.is_lost() => finding(
            Level::Ok,
            "synced_slot",
            format!(
                "slot {slot_name} is synchronized from the primary (confirmed_flush_lsn {})",
                s.confirmed_flush_lsn.map_or_else(|| "-".into(), |l| l.to_string())
            ),
            None,
        ),
        Some(s) if s.is_lost() => finding(
            Level::Fail,
            "synced_slot",
            format!("slot {slot_name} here is invalidated ({}): a promotion would need `projector rebuild`", s.lost_reason().unwrap_or("lost")),
            None,
        ),
        _ => finding(
            Level::Warn,
            "synced_slot",
            format!("slot {slot_name} is not (yet) synchronized here: it must be a failover slot on the primary (`projector setup --apply` there)"),
            None,
        ),
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbname_is_read_from_primary_conninfo_and_nothing_else_is_kept() {
        assert_eq!(
            conninfo_dbname("host=10.0.0.1 port=5432 user=rep password=s3cret dbname=app"),
            Some("app".into())
        );
        assert_eq!(
            conninfo_dbname("host=h dbname='postgres' sslmode=require"),
            Some("postgres".into())
        );
        assert_eq!(conninfo_dbname("host=h user=rep password=x"), None);
        assert_eq!(conninfo_dbname("host=h dbname="), None);
        assert_eq!(conninfo_dbname(""), None);
    }

    fn slot(failover: Option<bool>) -> SlotInfo {
        SlotInfo {
            slot_name: "projector".into(),
            plugin: Some("pgoutput".into()),
            database: Some("app".into()),
            active: false,
            active_pid: None,
            restart_lsn: None,
            confirmed_flush_lsn: None,
            wal_status: Some("reserved".into()),
            safe_wal_size: None,
            retained_wal_bytes: None,
            invalidation_reason: None,
            conflicting: None,
            inactive_since: None,
            failover,
            synced: None,
        }
    }

    #[test]
    fn standbys_are_shown_by_name_and_state() {
        assert_eq!(
            standbys_shown(&[]),
            "no physical standby streams from this server"
        );
        assert_eq!(
            standbys_shown(&[
                ("standby1".into(), "streaming".into()),
                (String::new(), "catchup".into())
            ]),
            "physical standbys streaming: standby1 (streaming), ? (catchup)"
        );
    }

    #[test]
    fn the_failover_slot_verdict_follows_the_slot() {
        assert!(failover_slot_finding("projector", None, "s").is_none());
        assert!(failover_slot_finding("projector", Some(&slot(None)), "s").is_none());
        let ok = failover_slot_finding("projector", Some(&slot(Some(true))), "s").unwrap();
        assert_eq!((ok.level, ok.check), (Level::Ok, "failover_slot"));
        assert_eq!(ok.message, "slot projector is a failover slot (s)");
        let warn = failover_slot_finding("projector", Some(&slot(Some(false))), "s").unwrap();
        assert_eq!(warn.level, Level::Warn);
        assert!(warn
            .fix
            .unwrap()
            .ends_with(": ALTER_REPLICATION_SLOT \"projector\" (FAILOVER true);"));
    }

    #[test]
    fn an_empty_synchronized_standby_slots_is_judged_by_the_physical_slots() {
        let none = unsynchronized_finding(&[], false);
        assert_eq!((none.level, none.fix.is_none()), (Level::Ok, true));
        let away = unsynchronized_finding(&[], true);
        assert_eq!(away.level, Level::Warn);
        assert!(away
            .fix
            .unwrap()
            .starts_with("SELECT pg_create_physical_replication_slot('standby1');"));
        let listed = unsynchronized_finding(&[("a".into(), true), ("b".into(), false)], true);
        assert_eq!(listed.level, Level::Warn);
        assert_eq!(
            listed.fix.as_deref(),
            Some("ALTER SYSTEM SET synchronized_standby_slots = 'a,b'; SELECT pg_reload_conf();")
        );
    }

    #[test]
    fn each_listed_standby_slot_is_missing_inactive_or_active() {
        let physical = [("up".to_string(), true), ("down".to_string(), false)];
        let missing = standby_slot_finding("gone", &physical);
        assert_eq!(missing.level, Level::Fail);
        assert!(missing
            .message
            .starts_with("synchronized_standby_slots names \"gone\","));
        assert_eq!(standby_slot_finding("down", &physical).level, Level::Warn);
        let up = standby_slot_finding("up", &physical);
        assert_eq!(up.level, Level::Ok);
        assert_eq!(
            up.message,
            "standby slot up is active: the projector never gets ahead of that standby"
        );
    }

    #[test]
    fn the_alter_command_quotes_the_slot() {
        assert_eq!(
            alter_to_failover("projector"),
            "ALTER_REPLICATION_SLOT \"projector\" (FAILOVER true)"
        );
        assert_eq!(
            alter_to_failover("Odd\"Name"),
            "ALTER_REPLICATION_SLOT \"Odd\"\"Name\" (FAILOVER true)"
        );
    }
}
