//! Every way an event can break the §2 contract, as loadgen writes them.
//!
//! Two outcomes are expected downstream: most kinds are **dead letters**
//! (a known event type whose payload or id breaks the contract); two kinds
//! are **ignored** (an unknown event type, or a known type on a stream of the
//! wrong family), which the projector counts and skips.
//!
//! Each kind says where it goes ([`Target`]): into a live stream of some
//! family (it then takes that stream's next `stream_seq`, like any event, so
//! stream discipline holds and the stream goes on afterwards), or into a
//! fresh one-off stream of its own (the kinds that break a stream-level id).

use std::fmt;

use serde_json::{json, Value};

/// The §2 contract breaches, in the order loadgen cycles through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MalformedKind {
    /// Payload is a JSON array.
    PayloadArray,
    /// Payload is a JSON string.
    PayloadString,
    /// `run.usage` without `output_tokens`.
    RequiredMissing,
    /// `notification.created` with `"title": null`.
    RequiredNull,
    /// `notification.read` with a numeric `notification_id`.
    WrongType,
    /// `run.step` with a numeric `name`.
    OptionalWrongType,
    /// `run.usage` with a negative token count.
    TokensNegative,
    /// `run.usage` with a fractional token count.
    TokensFractional,
    /// `run.usage` with a token count of 2^53 (one past the limit).
    TokensTooLarge,
    /// `run.usage` with a token count given as a string.
    TokensString,
    /// `run.created` on a fresh stream with `"thread_id": ""`.
    EmptyId,
    /// `run.created` on a fresh stream whose run id is 210 characters.
    LongId,
    /// An event type the projector does not know (`run.paused`). Ignored.
    UnknownType,
    /// A worker event on a run stream. Ignored.
    PrefixMismatch,
}

/// Where a malformed event is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The next event of a live run stream.
    Run,
    /// The next event of a user (notification) stream.
    User,
    /// Event 1 of a new stream `run:<id>` used for nothing else.
    FreshRun,
}

/// What to write for one malformed event (stream and seq come from the
/// traffic model).
#[derive(Clone, Debug)]
pub(crate) struct MalformedEvent {
    pub(crate) event_type: &'static str,
    /// JSON text of the payload (not always an object).
    pub(crate) payload: String,
}

impl MalformedKind {
    pub const ALL: [MalformedKind; 14] = [
        MalformedKind::PayloadArray,
        MalformedKind::PayloadString,
        MalformedKind::RequiredMissing,
        MalformedKind::RequiredNull,
        MalformedKind::WrongType,
        MalformedKind::OptionalWrongType,
        MalformedKind::TokensNegative,
        MalformedKind::TokensFractional,
        MalformedKind::TokensTooLarge,
        MalformedKind::TokensString,
        MalformedKind::EmptyId,
        MalformedKind::LongId,
        MalformedKind::UnknownType,
        MalformedKind::PrefixMismatch,
    ];

    /// Stable snake_case name (report keys, logs).
    pub(crate) fn name(self) -> &'static str {
        match self {
            MalformedKind::PayloadArray => "payload_array",
            MalformedKind::PayloadString => "payload_string",
            MalformedKind::RequiredMissing => "required_missing",
            MalformedKind::RequiredNull => "required_null",
            MalformedKind::WrongType => "wrong_type",
            MalformedKind::OptionalWrongType => "optional_wrong_type",
            MalformedKind::TokensNegative => "tokens_negative",
            MalformedKind::TokensFractional => "tokens_fractional",
            MalformedKind::TokensTooLarge => "tokens_too_large",
            MalformedKind::TokensString => "tokens_string",
            MalformedKind::EmptyId => "empty_id",
            MalformedKind::LongId => "long_id",
            MalformedKind::UnknownType => "unknown_type",
            MalformedKind::PrefixMismatch => "prefix_mismatch",
        }
    }

    /// True for the kinds the projector must ignore rather than dead-letter.
    pub fn is_ignored(self) -> bool {
        matches!(
            self,
            MalformedKind::UnknownType | MalformedKind::PrefixMismatch
        )
    }

    pub(crate) fn target(self) -> Target {
        match self {
            MalformedKind::RequiredNull | MalformedKind::WrongType => Target::User,
            MalformedKind::EmptyId | MalformedKind::LongId => Target::FreshRun,
            _ => Target::Run,
        }
    }

    /// The event to write. `thread_id` is used by the fresh-stream kinds,
    /// `detail` is the padding string well-formed events carry too.
    pub(crate) fn event(self, thread_id: &str, detail: &str) -> MalformedEvent {
        let (event_type, payload): (&'static str, Value) = match self {
            MalformedKind::PayloadArray => ("run.step", json!(["step", 1, detail])),
            MalformedKind::PayloadString => ("run.step", json!(detail)),
            MalformedKind::RequiredMissing => {
                ("run.usage", json!({"input_tokens": 10, "detail": detail}))
            }
            MalformedKind::RequiredNull => (
                "notification.created",
                json!({"notification_id": "n-null-title", "title": null, "detail": detail}),
            ),
            MalformedKind::WrongType => (
                "notification.read",
                json!({"notification_id": 7, "detail": detail}),
            ),
            MalformedKind::OptionalWrongType => ("run.step", json!({"name": 5, "detail": detail})),
            MalformedKind::TokensNegative => (
                "run.usage",
                json!({"input_tokens": -1, "output_tokens": 3, "detail": detail}),
            ),
            MalformedKind::TokensFractional => (
                "run.usage",
                json!({"input_tokens": 12, "output_tokens": 1.5, "detail": detail}),
            ),
            // 2^53 = 9007199254740992 is exactly one past the largest allowed count.
            MalformedKind::TokensTooLarge => (
                "run.usage",
                json!({"input_tokens": 9_007_199_254_740_992u64, "output_tokens": 1, "detail": detail}),
            ),
            MalformedKind::TokensString => (
                "run.usage",
                json!({"input_tokens": "12", "output_tokens": 4, "detail": detail}),
            ),
            MalformedKind::EmptyId => (
                "run.created",
                json!({"thread_id": "", "title": "empty thread id", "detail": detail}),
            ),
            MalformedKind::LongId => (
                "run.created",
                json!({"thread_id": thread_id, "title": "long run id", "detail": detail}),
            ),
            MalformedKind::UnknownType => ("run.paused", json!({"detail": detail})),
            MalformedKind::PrefixMismatch => ("worker.heartbeat", json!({"detail": detail})),
        };
        MalformedEvent {
            event_type,
            payload: payload.to_string(),
        }
    }
}

impl fmt::Display for MalformedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Length of the run id the `LongId` kind writes (limit is 200).
pub(crate) const LONG_ID_LEN: usize = 210;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_name_and_valid_json() {
        let mut names: Vec<_> = MalformedKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MalformedKind::ALL.len());
        for k in MalformedKind::ALL {
            let e = k.event("t-1", "pad");
            let v: Value = serde_json::from_str(&e.payload).unwrap();
            let is_object = v.is_object();
            let non_object = matches!(
                k,
                MalformedKind::PayloadArray | MalformedKind::PayloadString
            );
            assert_eq!(is_object, !non_object, "{k}");
        }
    }

    #[test]
    fn too_large_is_one_past_the_limit() {
        let e = MalformedKind::TokensTooLarge.event("t", "");
        assert!(e.payload.contains("9007199254740992"));
    }
}
