//! Generations: the only module that reads or writes `projectorState`.
//!
//! A generation is one complete copy of the read model in Convex. Clients
//! read the *active* one; a rebuild fills the next one beside it from a
//! fresh slot and switches atomically. What this module keeps, all in the
//! `projectorState` table:
//!
//! ```text
//!  (0, "active")         the generation clients read      (projector:setActive, CAS)
//!  (0, "rebuild")        the rebuild in progress          RebuildRecord, versioned
//!  (0, "lastViolation")  the newest append-only violation  best effort
//!  (g, "slot")           the slot that feeds generation g  absent: the configured slot
//!  (g, "backfill")       the first start's history copy   copying | done | skipped
//!  (g, "writer")         who may write generation g       {epoch, holder, since} (acquireWriter)
//!  (0, "rebuildLease")   the one rebuild running          {holder, since, heartbeat, target}
//! ```
//!
//! Everything read back parses Convex's number encoding: every JSON number
//! is a float64 there, so a count may come back as `2.0`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::sink::encoding::{count, opt_count};
use crate::sink::{with_retry, ConvexClient, RetryPolicy, SinkError};

/// The generation of the global entries (the active pointer, the rebuild
/// record); real generations start at 1.
const GLOBAL: u64 = 0;
const REBUILD_KEY: &str = "rebuild";
const SLOT_KEY: &str = "slot";
const VIOLATION_KEY: &str = "lastViolation";
const BACKFILL_KEY: &str = "backfill";

/// Every Convex table a generation has documents in, purged with it.
const PURGED_TABLES: [crate::projection::ConvexTable; 7] = crate::projection::ConvexTable::ALL;
/// Documents deleted per `purge` call.
const PURGE_CHUNK: u64 = 500;

/// The version of [`RebuildRecord`] this build writes; a record of another
/// version is refused with the fix instead of misread.
const REBUILD_RECORD_VERSION: u64 = 1;

/// A rebuild in progress, recorded before each of its steps so an
/// interrupted rebuild resumes where it stopped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RebuildRecord {
    /// Absent in records written before versioning: version 1.
    #[serde(default = "first_version", deserialize_with = "count")]
    pub(crate) version: u64,
    #[serde(deserialize_with = "count")]
    pub(crate) target: u64,
    pub(crate) slot: String,
    #[serde(default, deserialize_with = "opt_count")]
    pub(crate) from: Option<u64>,
    pub(crate) old_slot: Option<String>,
    pub(crate) phase: Phase,
}

fn first_version() -> u64 {
    1
}

impl RebuildRecord {
    pub(crate) fn new(
        target: u64,
        slot: String,
        from: Option<u64>,
        old_slot: Option<String>,
    ) -> Self {
        RebuildRecord {
            version: REBUILD_RECORD_VERSION,
            target,
            slot,
            from,
            old_slot,
            phase: Phase::Snapshot,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    Snapshot,
    Catchup,
    Cleanup,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Snapshot => "snapshot",
            Phase::Catchup => "catchup",
            Phase::Cleanup => "cleanup",
        })
    }
}

/// Why the rebuild record cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("projectorState `rebuild` record is unreadable ({0}); delete it to start over")]
    Unreadable(String),
    #[error("projectorState `rebuild` record has version {found}; this build reads version {REBUILD_RECORD_VERSION}: finish it with the projector version that started it, or delete it to start over")]
    Version { found: u64 },
}

/// The generation clients read, `None` before the first start.
pub(crate) async fn active(client: &ConvexClient) -> Result<Option<u64>, SinkError> {
    client.get_active().await
}

/// What `run` streams into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolved {
    Active(u64),
    /// Nothing is active yet and a rebuild fills this generation: wait for
    /// its switch (streaming the configured slot into it would race it).
    Rebuilding(u64),
}

/// The active generation; on a fresh deployment, makes generation 1 active
/// (atomically, so two replicas starting at once agree), unless a rebuild
/// reserved it.
pub(crate) async fn ensure_active(
    client: &ConvexClient,
    policy: &RetryPolicy,
) -> Result<Resolved, SinkError> {
    if let Some(g) = with_retry(policy, "getActive", || client.get_active()).await? {
        return Ok(Resolved::Active(g));
    }
    match with_retry(policy, "ensureActive", || client.ensure_active()).await? {
        (Some(g), _) => Ok(Resolved::Active(g)),
        (None, Some(target)) => Ok(Resolved::Rebuilding(target)),
        (None, None) => Err(SinkError::Protocol {
            path: crate::sink::api::ENSURE_ACTIVE.into(),
            why: "ensureActive reports neither an active generation nor a rebuild".into(),
        }),
    }
}

/// How long a rebuild lease lives without a renewal. A rebuild renews it
/// every [`LEASE_RENEW`]; one that died on another host is taken over
/// after this long (on this host at once: its pid is seen gone).
pub(crate) const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);
pub(crate) const LEASE_RENEW: std::time::Duration = std::time::Duration::from_secs(5);

/// The rebuild lease, granted: the reserved target generation, the
/// generation active when it was reserved, and whether a record resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) target: u64,
    pub(crate) from: Option<u64>,
    pub(crate) resumed: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LeaseError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("another rebuild is running: {holder} holds the rebuild lease since {since} (last heard from {ago_s:.0} s ago); wait for it to finish, or stop it — a holder that stops renewing loses the lease after {ttl_s} s")]
    Held {
        holder: String,
        since: String,
        ago_s: f64,
        ttl_s: u64,
    },
}

/// Takes the one-rebuild lease for `holder`. A holder on this host whose
/// process is gone (a killed rebuild) is taken over at once.
pub(crate) async fn begin_rebuild(
    client: &ConvexClient,
    holder: &str,
) -> Result<Lease, LeaseError> {
    let ttl_ms = LEASE_TTL.as_millis() as u64;
    let mut take_over: Option<String> = None;
    loop {
        let answer = client
            .begin_rebuild(holder, ttl_ms, take_over.as_deref())
            .await?;
        match answer {
            crate::sink::api::LeaseAnswer::Granted {
                target,
                from,
                resumed,
            } => {
                return Ok(Lease {
                    target,
                    from,
                    resumed,
                })
            }
            crate::sink::api::LeaseAnswer::Held {
                holder: other,
                since,
                heartbeat_ago_ms,
            } => {
                if take_over.is_none() && crate::identity::is_dead_local(&other) {
                    tracing::warn!(previous = %other, "the rebuild that held the lease is gone (its process no longer exists); taking over");
                    take_over = Some(other);
                    continue;
                }
                return Err(LeaseError::Held {
                    holder: other,
                    since: chrono::DateTime::from_timestamp_millis(since as i64)
                        .map_or_else(|| format!("{since} ms"), |t| t.to_rfc3339()),
                    ago_s: heartbeat_ago_ms / 1000.0,
                    ttl_s: LEASE_TTL.as_secs(),
                });
            }
        }
    }
}

/// Renews the lease; `false` when another rebuild took it over.
pub(crate) async fn renew_rebuild(client: &ConvexClient, holder: &str) -> Result<bool, SinkError> {
    client.renew_rebuild(holder).await
}

/// Gives the lease up.
pub(crate) async fn end_rebuild(client: &ConvexClient, holder: &str) -> Result<(), SinkError> {
    with_retry(&RetryPolicy::bounded(8), "endRebuild", || {
        client.end_rebuild(holder)
    })
    .await
}

/// Switches clients to `to` if `expected` is still active. Returns
/// `(switched, active now)`.
pub async fn switch(
    client: &ConvexClient,
    to: u64,
    expected: Option<u64>,
) -> Result<(bool, Option<u64>), SinkError> {
    client.set_active(to, expected).await
}

/// The slot that feeds `generation`: recorded by a rebuild, else the
/// configured one.
pub async fn slot_of(
    client: &ConvexClient,
    generation: u64,
    configured: &str,
) -> Result<String, SinkError> {
    let v = client.get_state(generation, SLOT_KEY).await?;
    let slot = v
        .as_ref()
        .and_then(|v| v.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| configured.to_string());
    // Anyone with the admin key can write projectorState: stream from (or
    // drop) only a slot name this projector makes.
    crate::source::slot::validate_slot_name(&slot, configured)
        .map_err(|e| SinkError::Decode(e.to_string()))?;
    Ok(slot)
}

/// Records that `slot` feeds `generation` (before the switch to it).
pub async fn set_slot(client: &ConvexClient, generation: u64, slot: &str) -> Result<(), SinkError> {
    client
        .set_state(generation, SLOT_KEY, json!({ "name": slot }))
        .await
}

/// The rebuild in progress, if any.
pub(crate) async fn rebuild_record(
    client: &ConvexClient,
) -> Result<Option<RebuildRecord>, RecordError> {
    let Some(v) = client.get_state(GLOBAL, REBUILD_KEY).await? else {
        return Ok(None);
    };
    parse_record(v)
}

fn parse_record(v: Value) -> Result<Option<RebuildRecord>, RecordError> {
    if v.is_null() {
        return Ok(None);
    }
    let version = v
        .get("version")
        .map_or(Some(1), crate::sink::encoding::as_count);
    match version {
        Some(REBUILD_RECORD_VERSION) => {}
        Some(found) => return Err(RecordError::Version { found }),
        None => return Err(RecordError::Unreadable("version is not a count".into())),
    }
    serde_json::from_value(v)
        .map(Some)
        .map_err(|e| RecordError::Unreadable(e.to_string()))
}

/// Saves (or, with `None`, clears) the rebuild record.
pub(crate) async fn save_rebuild(
    client: &ConvexClient,
    rec: Option<&RebuildRecord>,
) -> Result<(), SinkError> {
    let value = match rec {
        Some(r) => serde_json::to_value(r).map_err(|e| SinkError::Decode(e.to_string()))?,
        None => Value::Null,
    };
    let retry = RetryPolicy::bounded(20);
    with_retry(&retry, "setState", || {
        let value = value.clone();
        async move { client.set_state(GLOBAL, REBUILD_KEY, value).await }
    })
    .await
}

/// The slots a generation or the rebuild in progress owns: the active
/// generation's, the rebuild's new slot and the old one it will drop. Before
/// any generation exists, the configured slot (generation 1's to be).
pub(crate) async fn owned_slots(
    client: &ConvexClient,
    configured: &str,
) -> Result<Vec<String>, RecordError> {
    let mut owned = Vec::new();
    match active(client).await? {
        Some(g) => owned.push(slot_of(client, g, configured).await?),
        None => owned.push(configured.to_string()),
    }
    if let Some(r) = rebuild_record(client).await? {
        owned.push(r.slot);
        owned.extend(r.old_slot);
    }
    owned.sort();
    owned.dedup();
    Ok(owned)
}

/// A slot with a name this projector makes that no generation owns: it
/// feeds nothing and pins WAL until dropped.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct OrphanSlot {
    pub(crate) name: String,
    pub(crate) active_pid: Option<i32>,
    pub(crate) retained_wal_bytes: Option<i64>,
    /// The SQL that drops it.
    pub(crate) fix: String,
}

/// Our slots in the current database that no generation owns.
pub(crate) async fn orphan_slots(
    sql: &tokio_postgres::Client,
    client: &ConvexClient,
    configured: &str,
) -> anyhow::Result<Vec<OrphanSlot>> {
    let owned = owned_slots(client, configured).await?;
    Ok(crate::source::slot::our_slots(sql, configured)
        .await?
        .into_iter()
        .filter(|s| !owned.contains(&s.slot_name))
        .map(|s| OrphanSlot {
            fix: format!(
                "SELECT pg_drop_replication_slot('{}');",
                s.slot_name.replace('\'', "''")
            ),
            name: s.slot_name,
            active_pid: s.active_pid,
            retained_wal_bytes: s.retained_wal_bytes,
        })
        .collect())
}

/// Where the history copy of a generation's first start stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Backfill {
    /// Started and not finished: the next start copies again (idempotent).
    Copying,
    /// Copied, or nothing to copy, or the generation came from a rebuild.
    Done,
    /// `--no-backfill`: the operator chose to start from the slot alone.
    Skipped,
}

pub(crate) async fn backfill(
    client: &ConvexClient,
    generation: u64,
) -> Result<Option<Backfill>, SinkError> {
    let Some(v) = client.get_state(generation, BACKFILL_KEY).await? else {
        return Ok(None);
    };
    serde_json::from_value(v["state"].clone())
        .map(Some)
        .map_err(|e| SinkError::Decode(format!("projectorState ({generation}, backfill): {e}")))
}

pub(crate) async fn set_backfill(
    client: &ConvexClient,
    generation: u64,
    state: Backfill,
) -> Result<(), SinkError> {
    let retry = RetryPolicy::bounded(20);
    with_retry(&retry, "setState", || async move {
        client
            .set_state(generation, BACKFILL_KEY, json!({ "state": state }))
            .await
    })
    .await
}

/// Whether a rebuild recorded the slot of `generation` (then the rebuild,
/// not a backfill, filled it).
pub(crate) async fn has_recorded_slot(
    client: &ConvexClient,
    generation: u64,
) -> Result<bool, SinkError> {
    Ok(client.get_state(generation, SLOT_KEY).await?.is_some())
}

/// No document of any projection table or dead letter in `generation`.
pub(crate) async fn is_empty(client: &ConvexClient, generation: u64) -> Result<bool, SinkError> {
    for table in PURGED_TABLES {
        if table == crate::projection::ConvexTable::ProjectorState {
            continue;
        }
        let page = client
            .page(table.as_str(), Some(generation), None, 1)
            .await?;
        if !page.docs.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Records the newest append-only violation (best effort: retried a few
/// times, then logged).
pub(crate) async fn record_violation(client: &ConvexClient, value: Value) {
    let retry = RetryPolicy::bounded(5);
    let r = with_retry(&retry, "setState", || {
        let value = value.clone();
        async move { client.set_state(GLOBAL, VIOLATION_KEY, value).await }
    })
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not record the violation in projectorState");
    }
}

/// Deletes every document of a generation, in chunks under Convex's limits.
pub(crate) async fn purge(client: &ConvexClient, generation: u64) -> Result<u64, SinkError> {
    let retry = RetryPolicy::bounded(20);
    let mut total = 0;
    for table in PURGED_TABLES {
        loop {
            let (deleted, done) = with_retry(&retry, "purge", || async move {
                client.purge(generation, table.as_str(), PURGE_CHUNK).await
            })
            .await?;
            total += deleted;
            if done {
                break;
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_convex_prints_numbers() {
        // The real backend stores every JSON number as a float64 and its
        // `format: "json"` prints 2 as 2.0.
        let v = json!({"version": 1.0, "target": 2.0, "slot": "projector_g2", "from": 1.0,
                       "oldSlot": "projector", "phase": "catchup"});
        let rec = parse_record(v).expect("readable").expect("present");
        assert_eq!(rec.target, 2);
        assert_eq!(rec.from, Some(1));
        assert_eq!(rec.phase, Phase::Catchup);
        // Written before versioning: version 1.
        let v =
            json!({"target": 3, "slot": "s", "from": null, "oldSlot": null, "phase": "snapshot"});
        assert_eq!(parse_record(v).unwrap().unwrap().version, 1);
        assert!(parse_record(Value::Null).unwrap().is_none());
    }

    #[test]
    fn a_record_of_another_version_names_the_fix() {
        let v = json!({"version": 2, "target": 2, "slot": "s", "phase": "snapshot"});
        let e = parse_record(v).unwrap_err().to_string();
        assert!(e.contains("version 2") && e.contains("delete it"), "{e}");
        let e = parse_record(json!({"target": 2.5, "slot": "s", "phase": "snapshot"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unreadable"), "{e}");
    }

    #[test]
    fn a_record_round_trips() {
        let rec = RebuildRecord::new(4, "projector_g4".into(), Some(3), Some("projector".into()));
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(parse_record(v).unwrap(), Some(rec));
    }
}
