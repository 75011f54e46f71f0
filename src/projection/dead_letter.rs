//! Dead letters: known events that break their contract (design.md §2) or
//! arrive out of order within their stream (§3). Never folded, never dropped.

use serde_json::{json, Value};

use super::truncate::{truncate_bytes, DEAD_LETTER_PAYLOAD_BYTES};
use crate::event::{Position, RuntimeEvent};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub event_seq: i64,
    pub stream_id: String,
    pub stream_seq: i64,
    pub event_type: String,
    /// `code: detail`, e.g. `missing_field: thread_id is required`.
    pub reason: String,
    /// The payload text, cut to 16 KiB on a char boundary.
    pub payload: String,
    pub position: Position,
}

impl DeadLetter {
    pub fn new(ev: &RuntimeEvent, reason: String) -> Self {
        Self::from_parts(
            ev.seq,
            ev.stream_id(),
            ev.stream_seq,
            ev.event_type(),
            reason,
            ev.payload(),
            ev.position,
        )
    }

    pub(crate) fn from_parts(
        event_seq: i64,
        stream_id: &str,
        stream_seq: i64,
        event_type: &str,
        reason: String,
        payload: &str,
        position: Position,
    ) -> Self {
        DeadLetter {
            event_seq,
            stream_id: stream_id.to_owned(),
            stream_seq,
            event_type: event_type.to_owned(),
            reason,
            payload: truncate_bytes(payload, DEAD_LETTER_PAYLOAD_BYTES).to_owned(),
            position,
        }
    }

    /// The reason code (the part before the first `:`), for metrics.
    pub fn code(&self) -> &str {
        self.reason.split(':').next().unwrap_or(&self.reason)
    }

    /// Document key in `deadLetters`: the event seq in decimal.
    pub fn key(&self) -> String {
        self.event_seq.to_string()
    }

    /// The Convex fields (without key, generation, position).
    pub fn to_json(&self) -> Value {
        json!({
            "eventSeq": self.event_seq,
            "streamId": self.stream_id,
            "streamSeq": self.stream_seq,
            "eventType": self.event_type,
            "reason": self.reason,
            "payload": self.payload,
        })
    }

    /// Rough size in memory / on the wire, for byte budgets.
    pub fn approx_bytes(&self) -> usize {
        96 + self.stream_id.len() + self.event_type.len() + self.reason.len() + self.payload.len()
    }
}
