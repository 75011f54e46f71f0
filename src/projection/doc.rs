//! A projection document of any table, its JSON form (exactly the Convex
//! fields of design.md §3, camelCase, nulls explicit) and its stored position.

use serde::Serialize;
use serde_json::Value;

use super::inboxes::InboxDoc;
use super::runs::RunDoc;
use super::table::{DocKey, Table};
use super::threads::ThreadDoc;
use super::timelines::TimelineDoc;
use super::validate::Folding;
use super::workers::WorkerDoc;
use crate::event::Position;

/// One document. Serialises (untagged) to the same object as [`Doc::to_json`],
/// so a request body can be written without building a `Value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Doc {
    Run(RunDoc),
    Timeline(TimelineDoc),
    Thread(ThreadDoc),
    Worker(WorkerDoc),
    Inbox(InboxDoc),
}

/// A document with the position of the last event folded into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub(crate) position: Position,
    pub doc: Doc,
}

/// A stored document that does not match its table's shape.
#[derive(Debug, thiserror::Error)]
#[error("stored {table} document does not match the projection schema: {source}")]
pub struct DocError {
    pub(crate) table: Table,
    #[source]
    pub(crate) source: serde_json::Error,
}

impl Doc {
    #[cfg(test)]
    /// The document's own key (runId, threadId, workerId, userId).
    pub(crate) fn key(&self) -> &str {
        match self {
            Doc::Run(d) => &d.run_id,
            Doc::Timeline(d) => &d.run_id,
            Doc::Thread(d) => &d.thread_id,
            Doc::Worker(d) => &d.worker_id,
            Doc::Inbox(d) => &d.user_id,
        }
    }

    pub fn table(&self) -> Table {
        match self {
            Doc::Run(_) => Table::Runs,
            Doc::Timeline(_) => Table::Timelines,
            Doc::Thread(_) => Table::Threads,
            Doc::Worker(_) => Table::Workers,
            Doc::Inbox(_) => Table::Inboxes,
        }
    }

    /// The Convex fields, without `key`, `generation`, `position`.
    /// (`threads` includes `latestRunSeq`.)
    pub fn to_json(&self) -> Value {
        // Serialising these plain structs cannot fail (string keys, no maps).
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Reads a stored document (`projector:load`'s `doc`). Extra fields are
    /// ignored; integral floats (`5.0`) are accepted for integer fields.
    pub fn from_json(table: Table, mut value: Value) -> Result<Doc, DocError> {
        normalise_numbers(&mut value);
        let err = |source| DocError { table, source };
        Ok(match table {
            Table::Runs => Doc::Run(serde_json::from_value(value).map_err(err)?),
            Table::Timelines => Doc::Timeline(serde_json::from_value(value).map_err(err)?),
            Table::Threads => Doc::Thread(serde_json::from_value(value).map_err(err)?),
            Table::Workers => Doc::Worker(serde_json::from_value(value).map_err(err)?),
            Table::Inboxes => Doc::Inbox(serde_json::from_value(value).map_err(err)?),
        })
    }

    /// Rough in-memory size, for the cache byte budget.
    pub(crate) fn approx_bytes(&self) -> usize {
        match self {
            Doc::Run(d) => d.approx_bytes(),
            Doc::Timeline(d) => d.approx_bytes(),
            Doc::Thread(d) => d.approx_bytes(),
            Doc::Worker(d) => d.approx_bytes(),
            Doc::Inbox(d) => d.approx_bytes(),
        }
    }

    /// `lastStreamSeq` of a stream's own document (runs, workers, inboxes).
    pub(crate) fn last_stream_seq(&self) -> Option<i64> {
        match self {
            Doc::Run(d) => Some(d.last_stream_seq),
            Doc::Worker(d) => Some(d.last_stream_seq),
            Doc::Inbox(d) => Some(d.last_stream_seq),
            Doc::Timeline(_) | Doc::Thread(_) => None,
        }
    }

    /// The document for `key` before any event.
    pub(crate) fn empty(key: &DocKey, f: &Folding) -> Doc {
        match key.table {
            Table::Runs => Doc::Run(RunDoc::empty(f)),
            Table::Timelines => Doc::Timeline(TimelineDoc::empty(f)),
            Table::Threads => Doc::Thread(ThreadDoc::empty(&key.key)),
            Table::Workers => Doc::Worker(WorkerDoc::empty(f)),
            Table::Inboxes => Doc::Inbox(InboxDoc::empty(f)),
        }
    }

    /// Folds one event into this document (the fold of design.md §3).
    pub(crate) fn apply(&mut self, key: &DocKey, f: &Folding) {
        if self.table() != key.table {
            // A caller handed a document of another table; start afresh
            // rather than fold into the wrong shape.
            *self = Doc::empty(key, f);
        }
        match self {
            Doc::Run(d) => d.apply(f),
            Doc::Timeline(d) => d.apply(f),
            Doc::Thread(d) => d.apply(f),
            Doc::Worker(d) => d.apply(f),
            Doc::Inbox(d) => d.apply(f),
        }
    }
}

/// Turns floats with an integral value into integers, recursively (Convex
/// numbers are float64; JSON text from other tools may print `5.0`).
fn normalise_numbers(v: &mut Value) {
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(x) = n.as_f64() {
                if x.fract() == 0.0 && x.abs() <= 9_007_199_254_740_992.0 {
                    *v = Value::from(x as i64);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalise_numbers),
        Value::Object(o) => o.values_mut().for_each(normalise_numbers),
        _ => {}
    }
}
