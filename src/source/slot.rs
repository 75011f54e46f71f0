//! Slot administration and health (tokio-postgres), and slot creation with
//! an exported snapshot on a replication connection (rebuild).

use crate::event::Lsn;
use crate::secret::Secret;
use crate::source::conn::connect_replication;
use crate::source::conn::{quote_ident, PgConn};
use crate::source::error::SourceError;

/// A row of `pg_replication_slots`, on any server from 14 on. Columns a
/// server does not have are `None`: `conflicting` (16+), and
/// `invalidation_reason`, `inactive_since`, `failover`, `synced` (17+).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub(crate) slot_name: String,
    pub(crate) plugin: Option<String>,
    pub(crate) database: Option<String>,
    pub active: bool,
    pub active_pid: Option<i32>,
    pub(crate) restart_lsn: Option<Lsn>,
    pub confirmed_flush_lsn: Option<Lsn>,
    /// reserved | extended | unreserved | lost (every invalidated slot,
    /// whatever the reason, shows `lost`)
    pub wal_status: Option<String>,
    /// Bytes of WAL that can still be written before the slot is lost
    /// (NULL when max_slot_wal_keep_size = -1).
    pub(crate) safe_wal_size: Option<i64>,
    /// pg_current_wal_lsn() - restart_lsn, bytes (on a standby: the last
    /// replayed LSN - restart_lsn).
    pub(crate) retained_wal_bytes: Option<i64>,
    /// Why the server invalidated the slot (17+): `wal_removed`,
    /// `rows_removed`, `wal_level_insufficient`, `idle_timeout` (18+).
    pub invalidation_reason: Option<String>,
    /// 16: the slot was invalidated by a conflict with recovery.
    pub(crate) conflicting: Option<bool>,
    /// 17+: when the slot was last released by a consumer (text timestamp).
    pub(crate) inactive_since: Option<String>,
    /// 17+: the slot is synchronized to standbys that ask for it.
    pub(crate) failover: Option<bool>,
    /// 17+: on a standby, the slot is a copy synchronized from the primary.
    pub(crate) synced: Option<bool>,
}

impl SlotInfo {
    /// Invalidated: the server will never stream from it again.
    pub fn is_lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost") || self.invalidation_reason.is_some()
    }

    /// Why the slot is lost, when it is: the server's `invalidation_reason`
    /// (17+); before 17 a lost slot on a primary was invalidated by
    /// `max_slot_wal_keep_size` (`wal_removed`), and on 16 `conflicting`
    /// names a conflict with recovery.
    pub(crate) fn lost_reason(&self) -> Option<&str> {
        if let Some(r) = &self.invalidation_reason {
            return Some(r);
        }
        if !self.is_lost() {
            return None;
        }
        Some(if self.conflicting == Some(true) {
            "conflict with recovery"
        } else {
            "wal_removed"
        })
    }

    /// The error to stop with when the slot is lost (`None` while it can
    /// stream): it names the reason and that reason's remedy.
    pub(crate) fn invalidated_error(&self) -> Option<SourceError> {
        let reason = self.lost_reason()?;
        Some(SourceError::SlotInvalidated {
            slot: self.slot_name.clone(),
            detail: format!("invalidation_reason {reason}"),
        })
    }
}

fn lsn(s: Option<String>) -> Option<Lsn> {
    s.and_then(|s| s.parse().ok())
}

/// Checks a slot name read back from Convex (a rebuild record, a
/// generation's slot) before it is streamed from or dropped: anyone who
/// holds the admin key can write those records, so a name is accepted only
/// if it is one this projector makes: the configured slot, or a rebuild's
/// `<configured>_g<generation>`, and a plain identifier (1-63 of a-z, 0-9, _).
pub(crate) fn validate_slot_name(name: &str, configured: &str) -> Result<(), SourceError> {
    let identifier = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let ours = name == configured
        || name
            .strip_prefix(configured)
            .and_then(|rest| rest.strip_prefix("_g"))
            .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()));
    if identifier && ours {
        Ok(())
    } else {
        Err(SourceError::UntrustedSlotName {
            name: name.chars().take(80).collect(),
            configured: configured.to_string(),
        })
    }
}

/// The slot's row, read through `to_jsonb` so one query serves every
/// server version (columns differ from 14 to 18).
pub async fn slot_info(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<Option<SlotInfo>, SourceError> {
    let row = client
        .query_opt(
            "select to_jsonb(s),
                    (case when s.restart_lsn is null then null
                          else pg_wal_lsn_diff(
                                 case when pg_is_in_recovery() then pg_last_wal_replay_lsn()
                                      else pg_current_wal_lsn() end,
                                 s.restart_lsn) end)::bigint
               from pg_replication_slots s where s.slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|r| from_row(&r.get::<_, serde_json::Value>(0), r.get(1))))
}

fn from_row(j: &serde_json::Value, retained_wal_bytes: Option<i64>) -> SlotInfo {
    let text = |k: &str| j.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let flag = |k: &str| j.get(k).and_then(|v| v.as_bool());
    let int = |k: &str| j.get(k).and_then(|v| v.as_i64());
    SlotInfo {
        slot_name: text("slot_name").unwrap_or_default(),
        plugin: text("plugin"),
        database: text("database"),
        active: flag("active").unwrap_or(false),
        active_pid: int("active_pid").and_then(|p| i32::try_from(p).ok()),
        restart_lsn: lsn(text("restart_lsn")),
        confirmed_flush_lsn: lsn(text("confirmed_flush_lsn")),
        wal_status: text("wal_status"),
        safe_wal_size: int("safe_wal_size"),
        retained_wal_bytes,
        invalidation_reason: text("invalidation_reason"),
        conflicting: flag("conflicting"),
        inactive_since: text("inactive_since"),
        failover: flag("failover"),
        synced: flag("synced"),
    }
}

/// `server_version_num / 10000`: 14 … 18.
/// The logical slots of the current database that carry a name this
/// projector makes (`configured`, `configured_gN`), by name.
pub(crate) async fn our_slots(
    client: &tokio_postgres::Client,
    configured: &str,
) -> Result<Vec<SlotInfo>, SourceError> {
    let rows = client
        .query(
            "SELECT slot_name::text FROM pg_replication_slots
              WHERE slot_type = 'logical' AND database = current_database() ORDER BY 1",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        if validate_slot_name(&name, configured).is_err() {
            continue;
        }
        if let Some(info) = slot_info(client, &name).await? {
            out.push(info);
        }
    }
    Ok(out)
}

pub(crate) async fn server_major(client: &tokio_postgres::Client) -> Result<u32, SourceError> {
    let v: String = client
        .query_one("select current_setting('server_version_num')", &[])
        .await?
        .get(0);
    v.parse::<u32>()
        .map(|n| n / 10000)
        .map_err(|_| SourceError::Protocol(format!("server_version_num {v:?} is not a number")))
}

/// Failover slots (synchronized to standbys) exist from PostgreSQL 17.
pub(crate) fn supports_failover_slots(major: u32) -> bool {
    major >= 17
}

/// Creates a logical pgoutput slot in the current database; returns its
/// consistent point. Errors if it exists. On 17 and later the slot is a
/// failover slot: a standby with `sync_replication_slots = on` keeps a
/// copy, so the slot survives a promotion.
pub async fn create_slot(client: &tokio_postgres::Client, slot: &str) -> Result<Lsn, SourceError> {
    let sql = if supports_failover_slots(server_major(client).await?) {
        // (name, plugin, temporary, two_phase, failover)
        "select lsn::text from pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
    } else {
        "select lsn::text from pg_create_logical_replication_slot($1, 'pgoutput')"
    };
    let row = client.query_one(sql, &[&slot]).await?;
    let s: String = row.get(0);
    s.parse().map_err(SourceError::Protocol)
}

/// Drops the slot; `false` if it did not exist. Fails with SlotInUse when a
/// consumer holds it.
pub async fn drop_slot(client: &tokio_postgres::Client, slot: &str) -> Result<bool, SourceError> {
    if slot_info(client, slot).await?.is_none() {
        return Ok(false);
    }
    match client
        .execute("select pg_drop_replication_slot($1)", &[&slot])
        .await
    {
        Ok(_) => Ok(true),
        Err(e) => Err(match SourceError::from(e) {
            SourceError::SlotInUse { message, .. } => SourceError::SlotInUse {
                slot: slot.into(),
                message,
            },
            SourceError::SlotMissing { .. } => return Ok(false),
            other => other,
        }),
    }
}

/// A slot created with an exported snapshot. The snapshot stays valid while
/// this value lives (the replication connection stays open and idle): read
/// it from another connection with
/// `BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '<name>';`.
#[derive(Debug)]
pub struct SnapshotSlot {
    pub consistent_point: Lsn,
    pub snapshot_name: String,
    conn: PgConn,
}

impl SnapshotSlot {
    /// Ends the snapshot (the slot stays).
    pub async fn release(self) {
        self.conn.close().await;
    }
}

pub async fn create_slot_with_snapshot(
    url: &Secret,
    slot: &str,
) -> Result<SnapshotSlot, SourceError> {
    create_with_snapshot(url, slot, "").await
}

/// [`create_slot_with_snapshot`] for a slot that only serves its snapshot
/// (`verify`): TEMPORARY, so the server drops it when the connection ends,
/// however it ends (a `verify` killed with SIGKILL leaves no slot behind to
/// hold WAL). Do not drop it yourself: [`SnapshotSlot::release`] ends it.
pub async fn create_temporary_slot_with_snapshot(
    url: &Secret,
    slot: &str,
) -> Result<SnapshotSlot, SourceError> {
    create_with_snapshot(url, slot, " TEMPORARY").await
}

async fn create_with_snapshot(
    url: &Secret,
    slot: &str,
    temporary: &str,
) -> Result<SnapshotSlot, SourceError> {
    let mut conn = connect_replication(url).await?;
    conn.ctx.slot = Some(slot.to_string());
    let major = conn.server_major();
    let cmd = if major >= 15 {
        // A rebuild's slot becomes the service's slot: a failover slot too
        // (17+). A temporary slot cannot be one.
        let failover = if supports_failover_slots(major) && temporary.is_empty() {
            ", FAILOVER"
        } else {
            ""
        };
        format!(
            "CREATE_REPLICATION_SLOT {}{temporary} LOGICAL pgoutput (SNAPSHOT 'export'{failover})",
            quote_ident(slot)
        )
    } else {
        format!(
            "CREATE_REPLICATION_SLOT {}{temporary} LOGICAL pgoutput EXPORT_SNAPSHOT",
            quote_ident(slot)
        )
    };
    let rows = conn.simple_query(&cmd).await?;
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(|| SourceError::Protocol("CREATE_REPLICATION_SLOT returned no row".into()))?;
    let consistent_point = row
        .get(1)
        .cloned()
        .flatten()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            SourceError::Protocol("CREATE_REPLICATION_SLOT: no consistent_point".into())
        })?;
    let snapshot_name =
        row.get(2).cloned().flatten().ok_or_else(|| {
            SourceError::Protocol("CREATE_REPLICATION_SLOT: no snapshot name".into())
        })?;
    Ok(SnapshotSlot {
        consistent_point,
        snapshot_name,
        conn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_slot_names_pass() {
        for ok in ["projector", "projector_g1", "projector_g42"] {
            validate_slot_name(ok, "projector").unwrap();
        }
        for bad in [
            "other_app_slot",
            "projector_g",
            "projector_gx",
            "projector_g1; drop",
            "Projector",
            "projector_g1\"",
            "",
            &"p".repeat(64),
        ] {
            assert!(validate_slot_name(bad, "projector").is_err(), "{bad:?}");
        }
    }
}
