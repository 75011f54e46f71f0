//! Dead letters: known events that break their contract (design.md §2) or
//! arrive out of order within their stream (§3). Never folded, never dropped.

use serde_json::{json, Value};

use super::truncate::{truncate_bytes, DEAD_LETTER_PAYLOAD_BYTES, DEAD_LETTER_TEXT_BYTES};
use crate::event::{Position, RuntimeEvent};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub(crate) event_seq: i64,
    pub(crate) stream_id: String,
    pub(crate) stream_seq: i64,
    pub(crate) event_type: String,
    /// `code: detail`, e.g. `missing_field: thread_id is required`.
    pub reason: String,
    /// The payload text, cut to 16 KiB on a char boundary (the other
    /// texts to 4 KiB: a dead letter always fits one Convex document).
    pub payload: String,
    pub(crate) position: Position,
}

impl DeadLetter {
    pub(crate) fn new(ev: &RuntimeEvent, reason: String) -> Self {
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
            stream_id: truncate_bytes(stream_id, DEAD_LETTER_TEXT_BYTES).to_owned(),
            stream_seq,
            event_type: truncate_bytes(event_type, DEAD_LETTER_TEXT_BYTES).to_owned(),
            reason: if reason.len() > DEAD_LETTER_TEXT_BYTES {
                truncate_bytes(&reason, DEAD_LETTER_TEXT_BYTES).to_owned()
            } else {
                reason
            },
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Lsn;

    #[test]
    fn a_dead_letter_of_any_size_fits_one_convex_document() {
        // A malformed event whose every text is huge (an id of 2 MiB).
        let huge = "é".repeat(1 << 20);
        let d = DeadLetter::from_parts(
            7,
            &format!("run:{huge}"),
            1,
            &huge,
            format!("invalid_id: {huge}"),
            &huge,
            Position::new(Lsn(1), 0),
        );
        let bytes = serde_json::to_vec(&d.to_json()).unwrap().len();
        assert!(bytes < 64 * 1024, "{bytes} bytes");
        assert!(d.stream_id.starts_with("run:é") && d.reason.starts_with("invalid_id: é"));
        // Cut on char boundaries, at most the limit.
        assert!(d.stream_id.len() <= DEAD_LETTER_TEXT_BYTES);
        assert!(d.payload.len() <= DEAD_LETTER_PAYLOAD_BYTES);
        // Small texts are kept whole.
        let small = DeadLetter::from_parts(
            8,
            "run:r1",
            2,
            "run.step",
            "missing_field: name".into(),
            "{}",
            Position::new(Lsn(1), 1),
        );
        assert_eq!(
            (small.stream_id.as_str(), small.reason.as_str()),
            ("run:r1", "missing_field: name")
        );
    }
}
