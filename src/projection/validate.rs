//! Planning an event (design.md §2): is it ours (else ignored), does it keep
//! its payload contract (else dead letter), and if so which documents it
//! touches and with what typed data.
//!
//! ```text
//! RuntimeEvent ─▶ event type known? ──no──▶ Ignored(UnknownType)
//!                 stream prefix = family? ──no──▶ Ignored(PrefixMismatch)
//!                 stream id, payload fields, ids, occurred_at ok? ──no──▶ DeadLetter(reason)
//!                 ──▶ Fold(Folding { keys, typed data })
//! ```
//!
//! Reasons are `code: detail` with a stable snake_case code first
//! ([`DeadLetter::code`] extracts it, e.g. for a metric label):
//!
//! | code | when |
//! |---|---|
//! | `payload_not_object` | payload is JSON but not an object |
//! | `invalid_json` | payload text is not JSON (cannot come from jsonb) |
//! | `missing_field` | required field absent or null |
//! | `wrong_type` | required field, or optional field present and not null, of the wrong type |
//! | `invalid_tokens` | token count not a number with an integer value in 0..=2^53-1 |
//! | `invalid_id` | stream id suffix, `thread_id` or `notification_id` empty or over 200 scalar values |
//! | `invalid_timestamp` | `occurred_at` unparseable or infinite |
//! | `out_of_order` | from [`fold()`](super::fold::fold): `stream_seq` not after the stream document's `lastStreamSeq` |

use std::borrow::Cow;
use std::sync::Arc;

use smallvec::SmallVec;

use super::dead_letter::DeadLetter;
use super::event_type::{EventType, Family};
use super::payload::{self, Field, Num, PayloadError, RawPayload};
use super::table::{DocKey, Table};
use super::time::occurred_at_ms;
use super::truncate::{
    exceeds_chars, truncate_chars, truncate_owned, LONG_TEXT, MAX_ID, SHORT_TEXT,
};
use crate::event::{EventText, Position, RuntimeEvent};

/// The largest token count (2^53 - 1): exact in a float64.
pub(crate) const MAX_TOKENS: u64 = (1 << 53) - 1;

/// Why an event is not projected (not an error: the log carries more than we project).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    UnknownType,
    PrefixMismatch,
}

impl IgnoreReason {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::UnknownType => "unknown_type",
            IgnoreReason::PrefixMismatch => "prefix_mismatch",
        }
    }
}

/// What to do with one event.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    Ignored(IgnoreReason),
    DeadLetter(DeadLetter),
    /// Boxed where it is made: the pipeline keeps it boxed until the ack,
    /// so the ~250-byte struct is never copied on the way.
    Fold(Box<Folding>),
}

/// The typed, validated content of an event; strings already truncated.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum EventData {
    RunCreated {
        thread_id: String,
        title: Option<String>,
    },
    RunStarted,
    RunStep,
    RunUsage {
        input_tokens: u64,
        output_tokens: u64,
    },
    RunCompleted,
    RunFailed {
        error: String,
    },
    RunCancelled {
        reason: Option<String>,
    },
    WorkerRequested {
        repo: Option<String>,
    },
    WorkerStarted {
        host: String,
    },
    WorkerHeartbeat,
    WorkerStopped {
        reason: Option<String>,
    },
    WorkerFailed {
        error: String,
    },
    NotificationCreated {
        id: String,
        title: String,
        body: Option<String>,
    },
    NotificationRead {
        id: String,
    },
}

/// A valid event, ready to fold.
#[derive(Clone, Debug, PartialEq)]
pub struct Folding {
    /// Primary (stream) document first, then the others; inline, since
    /// an event touches at most three (a `Vec` was an allocation per event).
    keys: SmallVec<[DocKey; 3]>,
    pub(crate) seq: i64,
    pub(crate) stream_seq: i64,
    pub(crate) event_type: EventType,
    /// `occurred_at` in epoch ms (truncated).
    pub(crate) at: i64,
    pub(crate) position: Position,
    pub(crate) data: EventData,
    /// The event's text columns, moved from the [`RuntimeEvent`]; the
    /// payload is kept for an `out_of_order` dead letter.
    text: EventText,
}

impl Folding {
    /// Every document this event touches, the stream's own document first:
    /// run → runs:r, timelines:r, threads:t (run.created only);
    /// worker → workers:w; user → inboxes:u.
    pub fn keys(&self) -> &[DocKey] {
        &self.keys
    }

    /// Its size in memory (the boxed struct, the keys, the strings rounded
    /// up to the allocator's 16-byte classes), for the in-flight byte
    /// budget: so that budget is real memory.
    pub(crate) fn approx_bytes(&self) -> usize {
        fn heap(n: usize) -> usize {
            n.next_multiple_of(16)
        }
        std::mem::size_of::<Folding>()
            + usize::from(self.keys.spilled())
                * self.keys.capacity()
                * std::mem::size_of::<DocKey>()
            + self.keys.iter().map(|k| heap(k.key.len())).sum::<usize>()
            + heap(self.text.len())
    }

    pub(crate) fn owner_id(&self) -> &str {
        self.text.owner_id()
    }

    /// The id after the stream prefix (runId, workerId, userId).
    pub(crate) fn entity_id(&self) -> &str {
        &self.keys[0].key
    }

    /// A dead letter for this event (e.g. `out_of_order`, or a write Convex
    /// refused definitively), with the payload kept from planning.
    pub(crate) fn dead_letter(&self, reason: String) -> DeadLetter {
        DeadLetter::from_parts(
            self.seq,
            self.text.stream_id(),
            self.stream_seq,
            self.event_type.as_str(),
            reason,
            self.text.payload(),
            self.position,
        )
    }
}

/// What a folded event keeps until its writes are acknowledged: enough to
/// dead-letter it if Convex rejects one of its documents (keys, owner and
/// typed data are dropped at fold, halving a batch's memory in flight).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FoldedEvent {
    pub(crate) seq: i64,
    pub(crate) stream_seq: i64,
    pub(crate) event_type: EventType,
    pub(crate) position: Position,
    /// All of the event's text, one allocation (freeing the payload alone
    /// would cost a copy of the rest).
    text: EventText,
}

impl FoldedEvent {
    pub(crate) fn dead_letter(&self, reason: String) -> DeadLetter {
        DeadLetter::from_parts(
            self.seq,
            self.text.stream_id(),
            self.stream_seq,
            self.event_type.as_str(),
            reason,
            self.text.payload(),
            self.position,
        )
    }
}

impl Folding {
    /// Keeps what a dead letter needs, frees the rest.
    pub(crate) fn into_folded(self) -> FoldedEvent {
        FoldedEvent {
            seq: self.seq,
            stream_seq: self.stream_seq,
            event_type: self.event_type,
            position: self.position,
            text: self.text,
        }
    }
}

/// One shared `Arc<str>` per document key for the events that touch it:
/// a batch holds several events per key, and allocating each event its
/// own key (and freeing it at the ack) was ~3 % of a drain. The pipeline
/// keeps one per batch, so it holds no more than the open batch.
#[derive(Default)]
pub(crate) struct KeyInterner(std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>);

impl KeyInterner {
    pub(crate) fn intern(&mut self, key: &str) -> Arc<str> {
        if let Some(k) = self.0.get(key) {
            return k.clone();
        }
        let k: Arc<str> = key.into();
        self.0.insert(k.clone());
        k
    }
}

fn intern(keys: &mut Option<&mut KeyInterner>, key: &str) -> Arc<str> {
    match keys {
        Some(k) => k.intern(key),
        None => key.into(),
    }
}

/// Plans one event (validation of design.md §2).
pub fn plan(ev: &RuntimeEvent) -> Plan {
    match check(ev, None) {
        Checked::Ignored(reason) => Plan::Ignored(reason),
        Checked::Invalid(reason) => Plan::DeadLetter(DeadLetter::new(ev, reason)),
        Checked::Valid(v) => Plan::Fold(Box::new(v.into_folding(
            ev.seq,
            ev.stream_seq,
            ev.position,
            ev.text().clone(),
        ))),
    }
}

/// [`plan`] for the pipeline's hot path: the event's text moves into the
/// [`Folding`] instead of being copied, and document keys are shared
/// through `keys` when given.
pub(crate) fn plan_owned_with(ev: RuntimeEvent, keys: Option<&mut KeyInterner>) -> Plan {
    match check(&ev, keys) {
        Checked::Ignored(reason) => Plan::Ignored(reason),
        Checked::Invalid(reason) => Plan::DeadLetter(DeadLetter::new(&ev, reason)),
        Checked::Valid(v) => Plan::Fold(Box::new(v.into_folding(
            ev.seq,
            ev.stream_seq,
            ev.position,
            ev.into_text(),
        ))),
    }
}

enum Checked {
    Ignored(IgnoreReason),
    Invalid(String),
    Valid(Valid),
}

/// What validation derives from an event; the rest of a [`Folding`] is the
/// event's own fields.
struct Valid {
    keys: SmallVec<[DocKey; 3]>,
    event_type: EventType,
    at: i64,
    data: EventData,
}

impl Valid {
    fn into_folding(
        self,
        seq: i64,
        stream_seq: i64,
        position: Position,
        text: EventText,
    ) -> Folding {
        Folding {
            keys: self.keys,
            seq,
            stream_seq,
            event_type: self.event_type,
            at: self.at,
            position,
            data: self.data,
            text,
        }
    }
}

fn check(ev: &RuntimeEvent, keys: Option<&mut KeyInterner>) -> Checked {
    let Some(event_type) = EventType::parse(ev.event_type()) else {
        return Checked::Ignored(IgnoreReason::UnknownType);
    };
    let family = event_type.family();
    let Some(entity) = ev.stream_id().strip_prefix(family.prefix()) else {
        return Checked::Ignored(IgnoreReason::PrefixMismatch);
    };
    match validate(ev, event_type, family, entity, keys) {
        Ok(v) => Checked::Valid(v),
        Err(reason) => Checked::Invalid(reason),
    }
}

fn validate(
    ev: &RuntimeEvent,
    event_type: EventType,
    family: Family,
    entity: &str,
    mut interner: Option<&mut KeyInterner>,
) -> Result<Valid, String> {
    check_id("stream_id", entity)?;
    let mut p = RawPayload::default();
    match payload::read_into(ev.payload(), &mut p) {
        Ok(()) => {}
        Err(PayloadError::NotObject) => {
            return Err("payload_not_object: payload must be a JSON object".into())
        }
        Err(PayloadError::InvalidJson(e)) => return Err(format!("invalid_json: {e}")),
    };
    let data = event_data(event_type, &mut p)?;
    let at = occurred_at_ms(ev.occurred_at()).ok_or_else(|| {
        format!(
            "invalid_timestamp: occurred_at {:?} is not a finite timestamp",
            truncate_chars(ev.occurred_at(), 64)
        )
    })?;

    let mut keys = SmallVec::new();
    let entity = intern(&mut interner, entity);
    keys.push(DocKey::new(family.primary_table(), entity.clone()));
    if family == Family::Run {
        keys.push(DocKey::new(Table::Timelines, entity));
        if let EventData::RunCreated { thread_id, .. } = &data {
            keys.push(DocKey::new(
                Table::Threads,
                intern(&mut interner, thread_id),
            ));
        }
    }
    Ok(Valid {
        keys,
        event_type,
        at,
        data,
    })
}

fn event_data(t: EventType, p: &mut RawPayload<'_>) -> Result<EventData, String> {
    use std::mem::take;
    use EventType::*;
    Ok(match t {
        RunCreated => {
            let thread_id = required_str("thread_id", take(&mut p.thread_id))?;
            check_id("thread_id", &thread_id)?;
            EventData::RunCreated {
                thread_id: thread_id.into_owned(),
                title: optional_text("title", take(&mut p.title), SHORT_TEXT)?,
            }
        }
        RunStarted => EventData::RunStarted,
        RunStep => {
            // `name` is validated (contract) but not stored by any projection.
            optional_str("name", take(&mut p.name))?;
            EventData::RunStep
        }
        RunUsage => EventData::RunUsage {
            input_tokens: tokens("input_tokens", &p.input_tokens)?,
            output_tokens: tokens("output_tokens", &p.output_tokens)?,
        },
        RunCompleted => EventData::RunCompleted,
        RunFailed => EventData::RunFailed {
            error: required_text("error", take(&mut p.error), LONG_TEXT)?,
        },
        RunCancelled => EventData::RunCancelled {
            reason: optional_text("reason", take(&mut p.reason), LONG_TEXT)?,
        },
        WorkerRequested => EventData::WorkerRequested {
            repo: optional_text("repo", take(&mut p.repo), SHORT_TEXT)?,
        },
        WorkerStarted => EventData::WorkerStarted {
            host: required_text("host", take(&mut p.host), SHORT_TEXT)?,
        },
        WorkerHeartbeat => EventData::WorkerHeartbeat,
        WorkerStopped => EventData::WorkerStopped {
            reason: optional_text("reason", take(&mut p.reason), LONG_TEXT)?,
        },
        WorkerFailed => EventData::WorkerFailed {
            error: required_text("error", take(&mut p.error), LONG_TEXT)?,
        },
        NotificationCreated => {
            let id = required_str("notification_id", take(&mut p.notification_id))?;
            check_id("notification_id", &id)?;
            EventData::NotificationCreated {
                id: id.into_owned(),
                title: required_text("title", take(&mut p.title), SHORT_TEXT)?,
                body: optional_text("body", take(&mut p.body), LONG_TEXT)?,
            }
        }
        NotificationRead => {
            let id = required_str("notification_id", take(&mut p.notification_id))?;
            check_id("notification_id", &id)?;
            EventData::NotificationRead {
                id: id.into_owned(),
            }
        }
    })
}

fn check_id(name: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("invalid_id: {name} is empty"));
    }
    if exceeds_chars(id, MAX_ID) {
        return Err(format!(
            "invalid_id: {name} is longer than {MAX_ID} characters"
        ));
    }
    Ok(())
}

fn required_str<'a>(name: &str, f: Field<'a>) -> Result<Cow<'a, str>, String> {
    match f {
        Field::Str(s) => Ok(s),
        Field::Absent => Err(format!("missing_field: {name} is required")),
        Field::Null => Err(format!("missing_field: {name} is required, got null")),
        _ => Err(format!("wrong_type: {name} must be a string")),
    }
}

fn optional_str<'a>(name: &str, f: Field<'a>) -> Result<Option<Cow<'a, str>>, String> {
    match f {
        Field::Str(s) => Ok(Some(s)),
        Field::Absent | Field::Null => Ok(None),
        _ => Err(format!("wrong_type: {name} must be a string or null")),
    }
}

fn required_text(name: &str, f: Field<'_>, max: usize) -> Result<String, String> {
    required_str(name, f).map(|s| truncate_owned(s.into_owned(), max))
}

fn optional_text(name: &str, f: Field<'_>, max: usize) -> Result<Option<String>, String> {
    optional_str(name, f).map(|o| o.map(|s| truncate_owned(s.into_owned(), max)))
}

/// A token count: a JSON number whose value is an integer in 0..=2^53-1
/// (`5.0` is valid, `1.5`, `-1`, `"3"` and 2^53 are not).
fn tokens(name: &str, f: &Field<'_>) -> Result<u64, String> {
    let bad = || format!("invalid_tokens: {name} must be an integer in 0..=2^53-1");
    match f {
        Field::Absent => Err(format!("missing_field: {name} is required")),
        Field::Null => Err(format!("missing_field: {name} is required, got null")),
        Field::Num(Num::U(u)) if *u <= MAX_TOKENS => Ok(*u),
        Field::Num(Num::F(x))
            if x.is_finite() && x.fract() == 0.0 && *x >= 0.0 && *x <= MAX_TOKENS as f64 =>
        {
            Ok(*x as u64)
        }
        _ => Err(bad()),
    }
}
