//! Typed calls to the internal functions of `convex/projector.ts` (the wire
//! contract of the team brief). One attempt each; wrap them in
//! [`crate::sink::with_retry`].
//!
//! `apply` is the hot path: [`ApplyRequest::encode`] serialises the whole
//! HTTP body once, so the caller can size the batch from `body.len()` and
//! resend the same `Bytes` on retries without serialising again.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::projection::{write_json_str, DocKey, Table};
use crate::sink::client::{decode_value, encode_body, ConvexClient, Kind};
use crate::sink::encoding::{count, opt_count};
use crate::sink::error::SinkError;

pub(crate) const APPLY: &str = "projector:apply";
pub(crate) const LOAD_MANY: &str = "projector:loadMany";
pub(crate) const PAGE: &str = "projector:page";
pub(crate) const GET_ACTIVE: &str = "projector:getActive";
pub(crate) const SET_ACTIVE: &str = "projector:setActive";
pub(crate) const PURGE: &str = "projector:purge";
pub(crate) const GET_STATE: &str = "projector:getState";
pub(crate) const SET_STATE: &str = "projector:setState";
pub(crate) const ACQUIRE_WRITER: &str = "projector:acquireWriter";
pub(crate) const ENSURE_ACTIVE: &str = "projector:ensureActive";
pub(crate) const BEGIN_REBUILD: &str = "projector:beginRebuild";
pub(crate) const RENEW_REBUILD: &str = "projector:renewRebuild";
pub(crate) const END_REBUILD: &str = "projector:endRebuild";
pub(crate) const SCHEMA_VERSION_QUERY: &str = "projector:schemaVersion";

/// One guarded upsert: `doc` replaces the stored document of
/// `(generation, key)` in `table` if `position` is greater than the stored
/// one. `doc` holds the projection fields (no `key/generation/position`).
///
/// `D` is any serialisable document: the pipeline sends typed
/// [`crate::projection::Doc`]s, serialised once straight into the body
/// (no intermediate `Value`); tools and tests use `Value`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Write<D = Value> {
    /// A table name: static for the projection tables (no allocation per write).
    pub table: std::borrow::Cow<'static, str>,
    pub key: String,
    pub position: String,
    pub doc: D,
}

/// One dead letter, inserted once per `(generation, key = eventSeq)`.
/// `doc` = `{eventSeq, streamId, streamSeq, eventType, reason, payload}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterWrite {
    pub key: String,
    pub position: String,
    pub doc: Value,
}

/// The arguments of one `projector:apply` (atomic on the Convex side).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyRequest<D = Value> {
    pub generation: u64,
    /// The writer epoch from `acquireWriter`: Convex refuses the call once
    /// another process acquired the generation (see `convex/writer.ts`).
    /// `None` writes unfenced (tools and tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    pub writes: Vec<Write<D>>,
    pub dead_letters: Vec<DeadLetterWrite>,
}

impl<D: Serialize> ApplyRequest<D> {
    /// The complete HTTP body of the mutation; `len()` is what counts
    /// against the argument-size limit (plus ~40 bytes of envelope).
    pub fn encode(&self) -> Result<Bytes, SinkError> {
        #[derive(Serialize)]
        struct Versioned<'a, T> {
            #[serde(rename = "schemaVersion")]
            schema_version: u64,
            #[serde(flatten)]
            args: &'a T,
        }
        encode_body(
            APPLY,
            &Versioned {
                schema_version: crate::sink::schema::SCHEMA_VERSION,
                args: self,
            },
        )
    }
}

/// A document's JSON text as the projection wrote it
/// ([`crate::projection::Doc::write_json`]: valid JSON by construction),
/// spliced into request bodies as is. (serde_json's `RawValue` would parse
/// the text again to check it, which cost more than writing it.)
#[derive(Clone, PartialEq, Eq)]
pub struct DocJson(Vec<u8>);

impl DocJson {
    pub(crate) fn of(doc: &crate::projection::Doc) -> Self {
        DocJson(doc.json_bytes())
    }

    /// The JSON text (UTF-8).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Memory it holds (its buffer's capacity).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.0.capacity()
    }
}

impl std::fmt::Debug for DocJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DocJson")
            .field(&String::from_utf8_lossy(&self.0))
            .finish()
    }
}

impl ApplyRequest<DocJson> {
    /// The HTTP body, byte for byte what [`ApplyRequest::encode`] gives for
    /// the same documents typed, with each document's text copied in.
    pub(crate) fn encode_raw(&self) -> Result<Bytes, SinkError> {
        let docs: usize = self
            .writes
            .iter()
            // Field names, quotes and braces are 44 bytes; escapes rarely.
            .map(|w| w.doc.0.len() + w.table.len() + w.key.len() + w.position.len() + 64)
            .sum();
        let mut out = Vec::with_capacity(docs + 128);
        let encode_err = |e: serde_json::Error| SinkError::Encode {
            path: APPLY.to_string(),
            why: e.to_string(),
        };
        out.extend_from_slice(b"{\"path\":");
        serde_json::to_writer(&mut out, APPLY).map_err(encode_err)?;
        out.extend_from_slice(b",\"args\":{\"schemaVersion\":");
        out.extend_from_slice(
            itoa::Buffer::new()
                .format(crate::sink::schema::SCHEMA_VERSION)
                .as_bytes(),
        );
        out.extend_from_slice(b",\"generation\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.generation).as_bytes());
        if let Some(epoch) = self.epoch {
            out.extend_from_slice(b",\"epoch\":");
            out.extend_from_slice(itoa::Buffer::new().format(epoch).as_bytes());
        }
        out.extend_from_slice(b",\"writes\":[");
        for (i, w) in self.writes.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // serde's string writer escapes byte by byte (~300
            // instructions per string); these are mostly plain.
            out.extend_from_slice(b"{\"table\":");
            write_json_str(&mut out, &w.table);
            out.extend_from_slice(b",\"key\":");
            write_json_str(&mut out, &w.key);
            out.extend_from_slice(b",\"position\":");
            write_json_str(&mut out, &w.position);
            out.extend_from_slice(b",\"doc\":");
            out.extend_from_slice(&w.doc.0);
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"deadLetters\":");
        serde_json::to_writer(&mut out, &self.dead_letters).map_err(encode_err)?;
        out.extend_from_slice(b"},\"format\":\"json\"}");
        Ok(Bytes::from(out))
    }
}

#[derive(Deserialize)]
struct EnsureActiveAnswer {
    #[serde(deserialize_with = "opt_count")]
    active: Option<u64>,
    #[serde(deserialize_with = "opt_count")]
    rebuilding: Option<u64>,
}

/// What `beginRebuild` answers: the lease and the reserved target, or who
/// holds the lease.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum LeaseAnswer {
    #[serde(rename_all = "camelCase")]
    Granted {
        #[serde(deserialize_with = "count")]
        target: u64,
        #[serde(deserialize_with = "opt_count")]
        from: Option<u64>,
        resumed: bool,
    },
    #[serde(rename_all = "camelCase")]
    Held {
        holder: String,
        /// Unix ms (a float64 on the wire).
        since: f64,
        heartbeat_ago_ms: f64,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AcquireWriterAnswer {
    #[serde(deserialize_with = "count")]
    epoch: u64,
    previous_holder: Option<String>,
}

/// What `projector:apply` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    #[serde(deserialize_with = "count")]
    pub applied: u64,
    #[serde(deserialize_with = "count")]
    pub skipped: u64,
    #[serde(deserialize_with = "count", default)]
    pub dead_letters_inserted: u64,
    #[serde(deserialize_with = "count", default)]
    pub dead_letters_skipped: u64,
}

/// A stored document as `projector:loadMany` returns it; `doc` is without
/// `_id, _creationTime, key, generation, position`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LoadedDoc {
    pub table: String,
    pub key: String,
    pub position: String,
    pub doc: Value,
}

/// One page of `projector:page`: whole documents (incl. `key`,
/// `generation`, `position`), `next_cursor == None` when done.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Page {
    pub docs: Vec<Value>,
    #[serde(rename = "nextCursor")]
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct SetActiveAnswer {
    ok: bool,
    #[serde(deserialize_with = "opt_count", default)]
    active: Option<u64>,
}

#[derive(Deserialize)]
struct PurgeAnswer {
    #[serde(deserialize_with = "count")]
    deleted: u64,
    done: bool,
}

#[derive(Deserialize)]
#[serde(transparent)]
struct OptCount(#[serde(deserialize_with = "opt_count")] Option<u64>);

impl ConvexClient {
    /// `projector:apply` with a request encoded here.
    pub async fn apply<D: Serialize>(
        &self,
        req: &ApplyRequest<D>,
    ) -> Result<ApplyResult, SinkError> {
        self.apply_encoded(req.encode()?).await
    }

    /// `projector:apply` with a body from [`ApplyRequest::encode`]
    /// (`Bytes` clones are cheap: retry with the same body).
    pub async fn apply_encoded(&self, body: Bytes) -> Result<ApplyResult, SinkError> {
        let v = self.send(Kind::Mutation, APPLY, body).await?;
        decode_value(APPLY, v)
    }

    /// Stored states of the `keys` that exist for `generation`, whatever
    /// their tables: one function call (`projector:loadMany`).
    pub async fn load(
        &self,
        generation: u64,
        keys: &[DocKey],
    ) -> Result<Vec<LoadedDoc>, SinkError> {
        self.query(LOAD_MANY, load_many_args(generation, keys))
            .await
    }

    /// Stored states of `keys` in one table, `"deadLetters"` included (for
    /// tools and tests; also one `projector:loadMany`).
    pub async fn load_table(
        &self,
        generation: u64,
        table: &str,
        keys: &[String],
    ) -> Result<Vec<LoadedDoc>, SinkError> {
        let tables = json!([{"table": table, "keys": keys}]);
        let args = json!({"generation": generation, "tables": tables});
        self.query(LOAD_MANY, args).await
    }

    /// One page of `table` (all generations when `generation` is `None`).
    pub async fn page(
        &self,
        table: &str,
        generation: Option<u64>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page, SinkError> {
        let mut args = Map::new();
        args.insert("table".into(), json!(table));
        if let Some(g) = generation {
            // `v.optional` accepts an absent field, not `null`.
            args.insert("generation".into(), json!(g));
        }
        args.insert("cursor".into(), json!(cursor));
        args.insert("limit".into(), json!(limit));
        self.query(PAGE, Value::Object(args)).await
    }

    /// The generation clients read, `None` before the first `set_active`.
    pub async fn get_active(&self) -> Result<Option<u64>, SinkError> {
        let v: OptCount = self.query(GET_ACTIVE, json!({})).await?;
        Ok(v.0)
    }

    /// Compare-and-set of the active generation: switches to `generation`
    /// only if the active one is `expected`. Returns `(ok, active now)`.
    pub async fn set_active(
        &self,
        generation: u64,
        expected: Option<u64>,
    ) -> Result<(bool, Option<u64>), SinkError> {
        let a: SetActiveAnswer = self
            .mutation(
                SET_ACTIVE,
                json!({"generation": generation, "expected": expected}),
            )
            .await?;
        Ok((a.ok, a.active))
    }

    /// Deletes up to `limit` documents of `generation` from `table`.
    /// Returns `(deleted, done)`; call again until `done`.
    pub async fn purge(
        &self,
        generation: u64,
        table: &str,
        limit: u64,
    ) -> Result<(u64, bool), SinkError> {
        let a: PurgeAnswer = self
            .mutation(
                PURGE,
                json!({"generation": generation, "table": table, "limit": limit}),
            )
            .await?;
        Ok((a.deleted, a.done))
    }

    /// The active generation, creating generation 1 on a fresh deployment
    /// unless a rebuild fills it: `(active, rebuilding target)`.
    pub(crate) async fn ensure_active(&self) -> Result<(Option<u64>, Option<u64>), SinkError> {
        let a: EnsureActiveAnswer = self.mutation(ENSURE_ACTIVE, json!({})).await?;
        Ok((a.active, a.rebuilding))
    }

    /// The contract version the deployed functions implement.
    pub(crate) async fn schema_version(&self) -> Result<u64, SinkError> {
        let v: Value = self.query(SCHEMA_VERSION_QUERY, json!({})).await?;
        crate::sink::encoding::as_count(&v).ok_or_else(|| SinkError::Protocol {
            path: SCHEMA_VERSION_QUERY.into(),
            why: format!("expected a version number, got {v}"),
        })
    }

    /// Asks for the one-rebuild lease (`convex/lease.ts`).
    pub(crate) async fn begin_rebuild(
        &self,
        holder: &str,
        lease_ms: u64,
        take_over_from: Option<&str>,
    ) -> Result<LeaseAnswer, SinkError> {
        let mut args = json!({"holder": holder, "leaseMs": lease_ms});
        if let Some(from) = take_over_from {
            args["takeOverFrom"] = json!(from);
        }
        self.mutation(BEGIN_REBUILD, args).await
    }

    /// Renews our lease; `false` when another rebuild took it.
    pub(crate) async fn renew_rebuild(&self, holder: &str) -> Result<bool, SinkError> {
        self.mutation(RENEW_REBUILD, json!({ "holder": holder }))
            .await
    }

    /// Gives our lease up.
    pub(crate) async fn end_rebuild(&self, holder: &str) -> Result<(), SinkError> {
        let _: Value = self
            .mutation(END_REBUILD, json!({ "holder": holder }))
            .await?;
        Ok(())
    }

    /// Makes this process the writer of `generation` under a new epoch,
    /// fencing every earlier writer (`convex/writer.ts`). Returns the epoch
    /// and who held it before.
    pub(crate) async fn acquire_writer(
        &self,
        generation: u64,
        holder: &str,
    ) -> Result<(u64, Option<String>), SinkError> {
        let a: AcquireWriterAnswer = self
            .mutation(
                ACQUIRE_WRITER,
                json!({"generation": generation, "holder": holder}),
            )
            .await?;
        Ok((a.epoch, a.previous_holder))
    }

    /// A `projectorState` value, `None` if absent (or stored as `null`).
    pub async fn get_state(&self, generation: u64, key: &str) -> Result<Option<Value>, SinkError> {
        let v: Value = self
            .query(GET_STATE, json!({"generation": generation, "key": key}))
            .await?;
        Ok((!v.is_null()).then_some(v))
    }

    /// Upserts a `projectorState` value.
    pub async fn set_state(
        &self,
        generation: u64,
        key: &str,
        value: Value,
    ) -> Result<(), SinkError> {
        let _: Value = self
            .mutation(
                SET_STATE,
                json!({"generation": generation, "key": key, "value": value}),
            )
            .await?;
        Ok(())
    }
}

/// `projector:loadMany`'s arguments: the keys grouped by table, tables in
/// the order they first appear.
fn load_many_args(generation: u64, keys: &[DocKey]) -> Value {
    let mut tables: Vec<(Table, Vec<&str>)> = Vec::new();
    for k in keys {
        match tables.iter_mut().find(|(t, _)| *t == k.table) {
            Some((_, ks)) => ks.push(&k.key),
            None => tables.push((k.table, vec![&k.key])),
        }
    }
    let tables: Vec<Value> = tables
        .into_iter()
        .map(|(t, ks)| json!({"table": t.as_str(), "keys": ks}))
        .collect();
    json!({"generation": generation, "tables": tables})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_many_groups_keys_by_table_in_first_seen_order() {
        let keys = [
            DocKey::new(Table::Timelines, "r1"),
            DocKey::new(Table::Runs, "r1"),
            DocKey::new(Table::Timelines, "r2"),
        ];
        assert_eq!(
            load_many_args(3, &keys),
            json!({"generation": 3, "tables": [
                {"table": "timelines", "keys": ["r1", "r2"]},
                {"table": "runs", "keys": ["r1"]},
            ]})
        );
    }

    #[test]
    fn doc_json_bodies_equal_the_serde_encoding_byte_for_byte() {
        use crate::projection::{Doc, ThreadDoc};
        let docs: Vec<Doc> = ["t1", "quote \" and \\ and \n", ""]
            .iter()
            .map(|id| {
                Doc::Thread(ThreadDoc {
                    thread_id: (*id).into(),
                    run_count: 2,
                    latest_run_id: "r".into(),
                    owner_id: "o".into(),
                    updated_at: 5,
                    latest_run_seq: 9,
                })
            })
            .collect();
        let dead_letters = vec![DeadLetterWrite {
            key: "7".into(),
            position: "p\"".into(),
            doc: json!({"eventSeq": 7, "payload": "{\"a\":1}"}),
        }];
        for n in 0..=docs.len() {
            let typed = ApplyRequest {
                generation: 12,
                epoch: (n % 2 == 1).then_some(n as u64 + 7),
                writes: docs[..n]
                    .iter()
                    .enumerate()
                    .map(|(i, d)| Write {
                        table: "threads".into(),
                        key: format!("k\"{i}"),
                        position: format!("{i:016x}:{i:016x}"),
                        doc: d.clone(),
                    })
                    .collect(),
                dead_letters: if n % 2 == 0 {
                    dead_letters.clone()
                } else {
                    vec![]
                },
            };
            // The same request with each document's text instead.
            let raw = ApplyRequest {
                generation: typed.generation,
                epoch: typed.epoch,
                writes: typed
                    .writes
                    .iter()
                    .map(|w| Write {
                        table: w.table.clone(),
                        key: w.key.clone(),
                        position: w.position.clone(),
                        doc: DocJson::of(&w.doc),
                    })
                    .collect(),
                dead_letters: typed.dead_letters.clone(),
            };
            assert_eq!(
                raw.encode_raw().unwrap(),
                typed.encode().unwrap(),
                "{n} writes"
            );
        }
    }

    #[test]
    fn apply_body_is_the_wire_format() {
        let req = ApplyRequest {
            generation: 3,
            epoch: None,
            writes: vec![Write {
                table: "runs".into(),
                key: "r1".into(),
                position: "0000000000000001:0000000000000000".into(),
                doc: json!({"runId": "r1", "eventCount": 2}),
            }],
            dead_letters: vec![DeadLetterWrite {
                key: "7".into(),
                position: "0000000000000001:0000000000000001".into(),
                doc: json!({"eventSeq": 7}),
            }],
        };
        let body = req.encode().unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({
                "path": "projector:apply",
                "args": {
                    "schemaVersion": crate::sink::schema::SCHEMA_VERSION,
                    "generation": 3,
                    "writes": [{"table": "runs", "key": "r1",
                        "position": "0000000000000001:0000000000000000",
                        "doc": {"runId": "r1", "eventCount": 2}}],
                    "deadLetters": [{"key": "7",
                        "position": "0000000000000001:0000000000000001",
                        "doc": {"eventSeq": 7}}]
                },
                "format": "json"
            })
        );
    }

    #[test]
    fn results_accept_float_counts() {
        let r: ApplyResult = serde_json::from_value(json!({
            "applied": 2.0, "skipped": 1, "deadLettersInserted": 0, "deadLettersSkipped": 0.0
        }))
        .unwrap();
        assert_eq!(r.applied, 2);
        assert_eq!(r.skipped, 1);
        assert!(
            serde_json::from_value::<ApplyResult>(json!({"applied": -1, "skipped": 0})).is_err()
        );
        let a: OptCount = serde_json::from_value(json!(null)).unwrap();
        assert_eq!(a.0, None);
        let a: OptCount = serde_json::from_value(json!(4.0)).unwrap();
        assert_eq!(a.0, Some(4));
    }
}
