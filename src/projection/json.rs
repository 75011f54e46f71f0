//! The JSON text of a document, written by hand for the hot path.
//!
//! Every written document is serialised once per batch, and timelines and
//! inboxes carry up to 50 items each. Through serde, every field *name* of
//! every item goes through the string escaper (`format_escaped_str` was the
//! largest single symbol of a backlog drain's profile). Here names are
//! literals, integers go through `itoa`, enum values are static strings
//! that need no escaping, and only user text (ids, titles, bodies, errors)
//! is escaped, by serde_json.
//!
//! The output is byte-for-byte what `serde_json::to_vec(&doc)` gives (same
//! fields, same order): a test checks it for documents of every table,
//! including strings that need escaping.

use std::collections::VecDeque;

use super::doc::Doc;
use super::event_type::EventType;
use super::inboxes::{InboxDoc, InboxItem};
use super::runs::{RunDoc, RunStatus};
use super::threads::ThreadDoc;
use super::timelines::{TimelineDoc, TimelineItem};
use super::workers::{WorkerDoc, WorkerStatus};

/// A value that can write its own JSON text.
trait WriteJson {
    fn write_json(&self, out: &mut Vec<u8>);
}

impl WriteJson for str {
    fn write_json(&self, out: &mut Vec<u8>) {
        if needs_escape(self.as_bytes()) {
            // Writing a &str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, self);
        } else {
            out.reserve(self.len() + 2);
            out.push(b'"');
            out.extend_from_slice(self.as_bytes());
            out.push(b'"');
        }
    }
}

/// Appends `s` as a JSON string, byte for byte what serde_json writes.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    s.write_json(out);
}

/// Whether JSON needs an escape in `s` (what serde_json escapes: control
/// characters, `"` and `\`). Most text needs none and is copied whole; the
/// fold has no early exit so that it vectorises.
fn needs_escape(s: &[u8]) -> bool {
    s.iter().fold(false, |acc, &c| {
        acc | (c < 0x20) | (c == b'"') | (c == b'\\')
    })
}

impl WriteJson for String {
    fn write_json(&self, out: &mut Vec<u8>) {
        self.as_str().write_json(out);
    }
}

impl WriteJson for i64 {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
    }
}

impl WriteJson for u64 {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
    }
}

impl WriteJson for bool {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if *self { b"true" } else { b"false" });
    }
}

impl<T: WriteJson> WriteJson for Option<T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Some(v) => v.write_json(out),
            None => out.extend_from_slice(b"null"),
        }
    }
}

/// A static name that needs no escaping (event types, statuses).
fn write_plain(out: &mut Vec<u8>, s: &'static str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

impl WriteJson for EventType {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_plain(out, self.as_str());
    }
}

impl WriteJson for RunStatus {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_plain(
            out,
            match self {
                RunStatus::Queued => "queued",
                RunStatus::Running => "running",
                RunStatus::Completed => "completed",
                RunStatus::Failed => "failed",
                RunStatus::Cancelled => "cancelled",
            },
        );
    }
}

impl WriteJson for WorkerStatus {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_plain(
            out,
            match self {
                WorkerStatus::Requested => "requested",
                WorkerStatus::Running => "running",
                WorkerStatus::Stopped => "stopped",
                WorkerStatus::Failed => "failed",
            },
        );
    }
}

fn write_array<'a, T: WriteJson + 'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a T>) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item.write_json(out);
    }
    out.push(b']');
}

impl<T: WriteJson> WriteJson for Vec<T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_array(out, self.iter());
    }
}

impl<T: WriteJson> WriteJson for VecDeque<T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_array(out, self.iter());
    }
}

/// Writes a JSON object: `obj!(out, "name" => value, ...)`. Each name
/// and its punctuation is one literal (`,"name":`), copied in one go.
macro_rules! obj {
    ($out:expr, $first:literal => $v:expr $(, $name:literal => $val:expr)* $(,)?) => {{
        let out: &mut Vec<u8> = $out;
        out.extend_from_slice(concat!("{\"", $first, "\":").as_bytes());
        WriteJson::write_json($v, out);
        $(
            out.extend_from_slice(concat!(",\"", $name, "\":").as_bytes());
            WriteJson::write_json($val, out);
        )*
        out.push(b'}');
    }};
}

impl WriteJson for RunDoc {
    fn write_json(&self, out: &mut Vec<u8>) {
        obj!(
            out,
            "runId" => &self.run_id,
            "ownerId" => &self.owner_id,
            "threadId" => &self.thread_id,
            "title" => &self.title,
            "status" => &self.status,
            "stepCount" => &self.step_count,
            "inputTokens" => &self.input_tokens,
            "outputTokens" => &self.output_tokens,
            "eventCount" => &self.event_count,
            "error" => &self.error,
            "createdAt" => &self.created_at,
            "startedAt" => &self.started_at,
            "finishedAt" => &self.finished_at,
            "lastEventType" => &self.last_event_type,
            "lastEventAt" => &self.last_event_at,
            "lastStreamSeq" => &self.last_stream_seq
        );
    }
}

impl WriteJson for TimelineItem {
    fn write_json(&self, out: &mut Vec<u8>) {
        // What obj! writes, with `,"type":"<type>","at":` as one literal:
        // a run's timeline (up to 50 items) is written at every change.
        out.extend_from_slice(b"{\"streamSeq\":");
        self.stream_seq.write_json(out);
        out.extend_from_slice(type_then_at(self.event_type));
        self.at.write_json(out);
        out.push(b'}');
    }
}

/// `,"type":"<event type>","at":`, the middle of a timeline item.
fn type_then_at(t: EventType) -> &'static [u8] {
    use EventType::*;
    macro_rules! middle {
        ($name:literal) => {
            concat!(",\"type\":\"", $name, "\",\"at\":").as_bytes()
        };
    }
    match t {
        RunCreated => middle!("run.created"),
        RunStarted => middle!("run.started"),
        RunStep => middle!("run.step"),
        RunUsage => middle!("run.usage"),
        RunCompleted => middle!("run.completed"),
        RunFailed => middle!("run.failed"),
        RunCancelled => middle!("run.cancelled"),
        WorkerRequested => middle!("worker.requested"),
        WorkerStarted => middle!("worker.started"),
        WorkerHeartbeat => middle!("worker.heartbeat"),
        WorkerStopped => middle!("worker.stopped"),
        WorkerFailed => middle!("worker.failed"),
        NotificationCreated => middle!("notification.created"),
        NotificationRead => middle!("notification.read"),
    }
}

impl WriteJson for TimelineDoc {
    fn write_json(&self, out: &mut Vec<u8>) {
        obj!(
            out,
            "runId" => &self.run_id,
            "ownerId" => &self.owner_id,
            "total" => &self.total,
            "items" => &self.items
        );
    }
}

impl WriteJson for ThreadDoc {
    fn write_json(&self, out: &mut Vec<u8>) {
        obj!(
            out,
            "threadId" => &self.thread_id,
            "runCount" => &self.run_count,
            "latestRunId" => &self.latest_run_id,
            "ownerId" => &self.owner_id,
            "updatedAt" => &self.updated_at,
            "latestRunSeq" => &self.latest_run_seq
        );
    }
}

impl WriteJson for WorkerDoc {
    fn write_json(&self, out: &mut Vec<u8>) {
        obj!(
            out,
            "workerId" => &self.worker_id,
            "ownerId" => &self.owner_id,
            "status" => &self.status,
            "repo" => &self.repo,
            "host" => &self.host,
            "error" => &self.error,
            "requestedAt" => &self.requested_at,
            "startedAt" => &self.started_at,
            "stoppedAt" => &self.stopped_at,
            "lastHeartbeatAt" => &self.last_heartbeat_at,
            "heartbeatCount" => &self.heartbeat_count,
            "eventCount" => &self.event_count,
            "lastEventType" => &self.last_event_type,
            "lastEventAt" => &self.last_event_at,
            "lastStreamSeq" => &self.last_stream_seq
        );
    }
}

impl WriteJson for InboxItem {
    fn write_json(&self, out: &mut Vec<u8>) {
        let head = self.json_head.get_or_init(|| {
            // Sized for its longest form up front: no growth, no shrink.
            let text = self.id.len() + self.title.len() + self.body.as_ref().map_or(4, String::len);
            let mut h = Vec::with_capacity(text + 64);
            h.extend_from_slice(b"{\"id\":");
            self.id.write_json(&mut h);
            h.extend_from_slice(b",\"title\":");
            self.title.write_json(&mut h);
            h.extend_from_slice(b",\"body\":");
            self.body.write_json(&mut h);
            h.extend_from_slice(b",\"createdAt\":");
            self.created_at.write_json(&mut h);
            h.extend_from_slice(b",\"read\":");
            h
        });
        out.extend_from_slice(head);
        self.read.write_json(out);
        out.push(b'}');
    }
}

impl WriteJson for InboxDoc {
    fn write_json(&self, out: &mut Vec<u8>) {
        obj!(
            out,
            "userId" => &self.user_id,
            "ownerId" => &self.owner_id,
            "unreadCount" => &self.unread_count,
            "totalCount" => &self.total_count,
            "items" => &self.items,
            "lastStreamSeq" => &self.last_stream_seq
        );
    }
}

impl Doc {
    /// Appends this document's JSON text (the Convex fields, as
    /// [`Doc::to_json`] gives them) to `out`.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Doc::Run(d) => d.write_json(out),
            Doc::Timeline(d) => d.write_json(out),
            Doc::Thread(d) => d.write_json(out),
            Doc::Worker(d) => d.write_json(out),
            Doc::Inbox(d) => d.write_json(out),
        }
    }

    /// This document's JSON text as bytes (UTF-8: literals, digits and
    /// `&str`s, escaped by serde_json, are all that is written), without
    /// the UTF-8 check a `String` needs (~4 % of writing a document).
    pub(crate) fn json_bytes(&self) -> Vec<u8> {
        // Sized from the in-memory estimate (JSON runs ~1.2-1.5x it), so
        // that a document is written without growing the buffer.
        let mut out = Vec::with_capacity(self.approx_bytes() * 3 / 2 + 64);
        self.write_json(&mut out);
        out
    }

    /// This document's JSON text.
    pub fn json_string(&self) -> String {
        String::from_utf8(self.json_bytes()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::JsonHead;

    const AWKWARD: &str =
        "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} é 😀 \u{2028}";

    #[test]
    fn an_inbox_item_written_before_it_was_read_is_written_right_after() {
        let doc = InboxDoc {
            user_id: "u".into(),
            owner_id: "u".into(),
            unread_count: 1,
            total_count: 1,
            items: VecDeque::from([InboxItem {
                id: "n\"1".into(),
                title: AWKWARD.into(),
                body: None,
                created_at: -5,
                read: false,
                json_head: JsonHead::default(),
            }]),
            last_stream_seq: 3,
        };
        let before = serde_json::to_string(&doc).expect("serde");
        let mut cached = Doc::Inbox(doc);
        assert_eq!(cached.json_string(), before);
        if let Doc::Inbox(d) = &mut cached {
            d.items.iter_mut().for_each(|item| item.read = true);
        }
        assert_same(&cached);
        assert!(cached
            .json_string()
            .contains(r#""createdAt":-5,"read":true}"#));
    }

    fn assert_same(doc: &Doc) {
        let ours = doc.json_string();
        let serde = serde_json::to_string(doc).expect("serde");
        assert_eq!(ours, serde);
    }

    fn run(text: Option<&str>, status: Option<RunStatus>) -> RunDoc {
        RunDoc {
            run_id: "r-1".into(),
            owner_id: text.unwrap_or("o").into(),
            thread_id: text.map(str::to_owned),
            title: text.map(str::to_owned),
            status,
            step_count: 3,
            input_tokens: (1 << 53) - 1,
            output_tokens: 0,
            event_count: 9,
            error: text.map(str::to_owned),
            created_at: Some(-1),
            started_at: None,
            finished_at: Some(i64::MAX),
            last_event_type: EventType::RunUsage,
            last_event_at: i64::MIN,
            last_stream_seq: 7,
        }
    }

    #[test]
    fn runs_match_serde() {
        for text in [None, Some(""), Some(AWKWARD)] {
            for status in [
                None,
                Some(RunStatus::Queued),
                Some(RunStatus::Running),
                Some(RunStatus::Completed),
                Some(RunStatus::Failed),
                Some(RunStatus::Cancelled),
            ] {
                assert_same(&Doc::Run(run(text, status)));
            }
        }
    }

    #[test]
    fn workers_match_serde() {
        for text in [None, Some(AWKWARD)] {
            for status in [
                None,
                Some(WorkerStatus::Requested),
                Some(WorkerStatus::Running),
                Some(WorkerStatus::Stopped),
                Some(WorkerStatus::Failed),
            ] {
                assert_same(&Doc::Worker(WorkerDoc {
                    worker_id: AWKWARD.into(),
                    owner_id: "o".into(),
                    status,
                    repo: text.map(str::to_owned),
                    host: text.map(str::to_owned),
                    error: text.map(str::to_owned),
                    requested_at: Some(1),
                    started_at: None,
                    stopped_at: Some(2),
                    last_heartbeat_at: text.map(|_| 3),
                    heartbeat_count: 4,
                    event_count: 5,
                    last_event_type: EventType::WorkerHeartbeat,
                    last_event_at: 6,
                    last_stream_seq: -7,
                }));
            }
        }
    }

    #[test]
    fn threads_and_timelines_match_serde() {
        assert_same(&Doc::Thread(ThreadDoc {
            thread_id: AWKWARD.into(),
            run_count: 2,
            latest_run_id: "r".into(),
            owner_id: "".into(),
            updated_at: 1_795_420_800_001,
            latest_run_seq: 12,
        }));
        let types = [
            EventType::RunCreated,
            EventType::RunStarted,
            EventType::RunStep,
            EventType::RunUsage,
            EventType::RunCompleted,
            EventType::RunFailed,
            EventType::RunCancelled,
        ];
        for n in [0usize, 1, 50] {
            assert_same(&Doc::Timeline(TimelineDoc {
                run_id: "run-é".into(),
                owner_id: AWKWARD.into(),
                total: n as u64,
                items: (0..n)
                    .map(|i| TimelineItem {
                        stream_seq: i as i64,
                        event_type: types[i % types.len()],
                        at: -(i as i64),
                    })
                    .collect(),
            }));
        }
    }

    #[test]
    fn inboxes_match_serde() {
        for n in [0usize, 1, 50] {
            assert_same(&Doc::Inbox(InboxDoc {
                user_id: "u".into(),
                owner_id: AWKWARD.into(),
                unread_count: 1,
                total_count: 99,
                items: (0..n)
                    .map(|i| InboxItem {
                        id: format!("n{i}"),
                        title: AWKWARD.into(),
                        body: (i % 2 == 0).then(|| format!("body {i} {AWKWARD}")),
                        created_at: i as i64,
                        read: i % 3 == 0,
                        json_head: JsonHead::default(),
                    })
                    .collect(),
                last_stream_seq: i64::MIN,
            }));
        }
    }

    #[test]
    fn strings_escape_like_serde_wherever_the_character_sits() {
        for c in (0u8..0x20)
            .map(char::from)
            .chain(['"', '\\', '\u{7f}', 'é', '/'])
        {
            for at in [0usize, 1, 15, 16, 31, 32, 63, 100] {
                let mut s: String = "x".repeat(at);
                s.push(c);
                let mut ours = Vec::new();
                s.write_json(&mut ours);
                assert_eq!(
                    String::from_utf8(ours).expect("utf8"),
                    serde_json::to_string(&s).expect("serde"),
                    "{c:?} at {at}"
                );
            }
        }
    }

    #[test]
    fn every_event_type_and_status_matches_serde() {
        for t in EventType::ALL {
            let item = TimelineItem {
                stream_seq: -3,
                event_type: t,
                at: 1_795_420_800_001,
            };
            let mut v = Vec::new();
            item.write_json(&mut v);
            assert_eq!(v, serde_json::to_vec(&item).expect("serde"), "{t:?}");
            assert_eq!(
                String::from_utf8({
                    let mut v = Vec::new();
                    t.write_json(&mut v);
                    v
                })
                .expect("utf8"),
                serde_json::to_string(&t).expect("serde")
            );
        }
    }
}
