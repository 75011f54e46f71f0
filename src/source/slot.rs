//! Slot administration and health (tokio-postgres), and slot creation with
//! an exported snapshot on a replication connection (rebuild).

use crate::event::Lsn;
use crate::secret::Secret;
use crate::source::conn::{quote_ident, PgConn};
use crate::source::error::SourceError;
use crate::source::stream::connect_replication;

/// A row of `pg_replication_slots`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub slot_name: String,
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub active: bool,
    pub active_pid: Option<i32>,
    pub restart_lsn: Option<Lsn>,
    pub confirmed_flush_lsn: Option<Lsn>,
    /// reserved | extended | unreserved | lost
    pub wal_status: Option<String>,
    /// Bytes of WAL that can still be written before the slot is lost
    /// (NULL when max_slot_wal_keep_size = -1).
    pub safe_wal_size: Option<i64>,
    /// pg_current_wal_lsn() - restart_lsn, bytes.
    pub retained_wal_bytes: Option<i64>,
}

impl SlotInfo {
    pub fn is_lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost")
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
pub fn validate_slot_name(name: &str, configured: &str) -> Result<(), SourceError> {
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

pub async fn slot_info(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<Option<SlotInfo>, SourceError> {
    let row = client
        .query_opt(
            "select slot_name::text, plugin::text, database::text, active, active_pid,
                    restart_lsn::text, confirmed_flush_lsn::text, wal_status, safe_wal_size,
                    (case when restart_lsn is null then null
                          else pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) end)::bigint
               from pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|r| SlotInfo {
        slot_name: r.get(0),
        plugin: r.get(1),
        database: r.get(2),
        active: r.get(3),
        active_pid: r.get(4),
        restart_lsn: lsn(r.get(5)),
        confirmed_flush_lsn: lsn(r.get(6)),
        wal_status: r.get(7),
        safe_wal_size: r.get(8),
        retained_wal_bytes: r.get(9),
    }))
}

/// Creates a logical pgoutput slot in the current database; returns its
/// consistent point. Errors if it exists.
pub async fn create_slot(client: &tokio_postgres::Client, slot: &str) -> Result<Lsn, SourceError> {
    let row = client
        .query_one(
            "select lsn::text from pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await?;
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
    pub slot: String,
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
    let cmd = if conn.server_major() >= 15 {
        format!(
            "CREATE_REPLICATION_SLOT {}{temporary} LOGICAL pgoutput (SNAPSHOT 'export')",
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
        slot: slot.to_string(),
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
