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
pub struct RebuildRecord {
    /// Absent in records written before versioning: version 1.
    #[serde(default = "first_version", deserialize_with = "count")]
    pub version: u64,
    #[serde(deserialize_with = "count")]
    pub target: u64,
    pub slot: String,
    #[serde(default, deserialize_with = "opt_count")]
    pub from: Option<u64>,
    pub old_slot: Option<String>,
    pub phase: Phase,
}

fn first_version() -> u64 {
    1
}

impl RebuildRecord {
    pub fn new(target: u64, slot: String, from: Option<u64>, old_slot: Option<String>) -> Self {
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
pub enum Phase {
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
pub enum RecordError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("projectorState `rebuild` record is unreadable ({0}); delete it to start over")]
    Unreadable(String),
    #[error("projectorState `rebuild` record has version {found}; this build reads version {REBUILD_RECORD_VERSION}: finish it with the projector version that started it, or delete it to start over")]
    Version { found: u64 },
}

/// The generation clients read, `None` before the first start.
pub async fn active(client: &ConvexClient) -> Result<Option<u64>, SinkError> {
    client.get_active().await
}

/// The active generation; on a fresh deployment, makes generation 1 active
/// (compare-and-set, so two replicas starting at once agree).
pub async fn ensure_active(client: &ConvexClient, policy: &RetryPolicy) -> Result<u64, SinkError> {
    if let Some(g) = with_retry(policy, "getActive", || client.get_active()).await? {
        return Ok(g);
    }
    let (ok, active) = with_retry(policy, "setActive", || client.set_active(1, None)).await?;
    match active {
        Some(g) => Ok(g),
        None if ok => Ok(1),
        None => Err(SinkError::Protocol {
            path: crate::sink::api::SET_ACTIVE.into(),
            why: "setActive(1, expected null) failed but reports no active generation".into(),
        }),
    }
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
    Ok(v.as_ref()
        .and_then(|v| v.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| configured.to_string()))
}

/// Records that `slot` feeds `generation` (before the switch to it).
pub async fn set_slot(client: &ConvexClient, generation: u64, slot: &str) -> Result<(), SinkError> {
    client
        .set_state(generation, SLOT_KEY, json!({ "name": slot }))
        .await
}

/// The rebuild in progress, if any.
pub async fn rebuild_record(client: &ConvexClient) -> Result<Option<RebuildRecord>, RecordError> {
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
pub async fn save_rebuild(
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

/// Where the history copy of a generation's first start stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backfill {
    /// Started and not finished: the next start copies again (idempotent).
    Copying,
    /// Copied, or nothing to copy, or the generation came from a rebuild.
    Done,
    /// `--no-backfill`: the operator chose to start from the slot alone.
    Skipped,
}

pub async fn backfill(
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

pub async fn set_backfill(
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
pub async fn has_recorded_slot(client: &ConvexClient, generation: u64) -> Result<bool, SinkError> {
    Ok(client.get_state(generation, SLOT_KEY).await?.is_some())
}

/// No document of any projection table or dead letter in `generation`.
pub async fn is_empty(client: &ConvexClient, generation: u64) -> Result<bool, SinkError> {
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
pub async fn record_violation(client: &ConvexClient, value: Value) {
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
pub async fn purge(client: &ConvexClient, generation: u64) -> Result<u64, SinkError> {
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
