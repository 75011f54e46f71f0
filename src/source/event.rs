//! pgoutput messages → [`SourceEvent`]s of `runtime.events`.
//!
//! ```text
//! Begin ─▶ SourceEvent::Begin
//! Insert(runtime.events) ─▶ SourceEvent::Event(position = (final_lsn, ordinal))
//! Update/Delete/Truncate(runtime.events) ─▶ SourceEvent::Violation
//! Commit ─▶ SourceEvent::Commit
//! StreamStart..StreamStop* ─ buffered per xid ─ StreamCommit ─▶ Begin, Events, Commit
//! ```
//! A streamed (in-progress) transaction's commit LSN is only known at Stream
//! Commit, so its events are buffered until then (and dropped on Stream
//! Abort of the transaction or of the subtransaction that made them). The
//! commit LSN of a transaction equals the `final_lsn` of its Begin, so both
//! paths give the same positions.

use std::collections::{HashMap, VecDeque};

use std::ops::Range;

use bytes::Bytes;

use crate::event::{utf8, EventText, Lsn, Position, RuntimeEvent};
use crate::source::pgoutput::{
    self, ColumnRef, DecodeError, PgOutputMessage, Relation, StreamState, TupleValue,
    MAX_BORROWED_COLUMNS,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    Update,
    Delete,
    Truncate,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceEvent {
    Begin {
        final_lsn: Lsn,
        commit_time_us: i64,
        xid: u32,
    },
    Event(RuntimeEvent),
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time_us: i64,
    },
    Violation {
        kind: ViolationKind,
        detail: String,
    },
    /// An Insert whose WAL message was `bytes` long, over the maximum: read
    /// through, never held. `columns` are what its start held, in
    /// runtime.events order (seq, stream_id, stream_seq, event_type,
    /// owner_id, payload, occurred_at; the one the cut fell in is its
    /// start, later ones empty): `projection::oversized::dead_letter`.
    Oversized {
        seq: i64,
        columns: [Vec<u8>; 7],
        bytes: usize,
        position: Position,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("change for relation oid {0} before its Relation message")]
    UnknownRelation(u32),
    #[error(
        "runtime.events row does not match the contract: {0}; apply sql/001_runtime_events.sql"
    )]
    Schema(String),
    #[error("pgoutput stream out of order: {0}")]
    Order(String),
}

/// Column indexes of runtime.events in the current Relation message.
#[derive(Clone, Debug)]
struct EventColumns {
    seq: usize,
    stream_id: usize,
    stream_seq: usize,
    event_type: usize,
    owner_id: usize,
    payload: usize,
    occurred_at: usize,
}

/// A change inside a streamed transaction, not yet positioned.
enum Pending {
    Event {
        subxid: u32,
        ev: RuntimeEvent,
    },
    Violation {
        subxid: u32,
        kind: ViolationKind,
        detail: String,
    },
}

#[derive(Default)]
pub struct EventDecoder {
    stream: StreamState,
    relations: HashMap<u32, Relation>,
    events_oid: Option<u32>,
    cols: Option<EventColumns>,
    /// Open non-streamed transaction: (final_lsn, next ordinal).
    txn: Option<(Lsn, u64)>,
    /// Streamed transactions by top-level xid.
    streamed: HashMap<u32, Vec<Pending>>,
    /// Top-level xid of the current stream block.
    stream_xid: Option<u32>,
    ready: VecDeque<SourceEvent>,
}

impl std::fmt::Debug for EventDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventDecoder")
            .field("relations", &self.relations.len())
            .field("streamed_txns", &self.streamed.len())
            .finish_non_exhaustive()
    }
}

pub(crate) fn pg_time_to_unix_us(t: i64) -> i64 {
    crate::source::stream::pg_to_unix_us(t)
}

impl EventDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes the payload of one XLogData and queues the resulting events;
    /// take them with [`EventDecoder::pop`].
    pub fn feed(&mut self, data: &[u8]) -> Result<(), EventError> {
        let msg = self.stream.decode(data)?;
        self.push(msg)
    }

    /// [`EventDecoder::feed`] for an XLogData payload held in `Bytes`:
    /// column values are not copied before they become event strings.
    pub fn feed_bytes(&mut self, data: &bytes::Bytes) -> Result<(), EventError> {
        // Fast path for what a backlog is made of, an Insert into
        // runtime.events: columns are read in place, straight into the event.
        if let Some(oid) = self.events_oid {
            let mut cols = [ColumnRef::Null; MAX_BORROWED_COLUMNS];
            if let Some((xid, relation, n)) =
                pgoutput::borrow_insert(data, self.stream.in_stream, &mut cols)
            {
                if relation == oid {
                    let ev = self.row_to_event(&cols[..n], Some(data))?;
                    return self.emit_event(xid, ev);
                }
            }
        }
        let msg = self.stream.decode_bytes(data)?;
        self.push(msg)
    }

    /// An XLogData payload that was `bytes` long, over the maximum, of
    /// which `data` is the start: an Insert into runtime.events becomes
    /// [`SourceEvent::Oversized`] (made a dead letter naming its seq and
    /// stream), an UPDATE or DELETE a violation. Anything else cannot be
    /// that large and is a protocol error.
    pub(crate) fn feed_oversized(&mut self, data: &[u8], bytes: usize) -> Result<(), EventError> {
        let too_large = || {
            EventError::Schema(format!(
                "a WAL message of {bytes} bytes that is not a runtime.events row"
            ))
        };
        match data.first() {
            Some(b'U') | Some(b'D') => {
                let kind = if data[0] == b'U' {
                    ViolationKind::Update
                } else {
                    ViolationKind::Delete
                };
                return self.emit_violation(
                    None,
                    kind,
                    format!("a change of a {bytes}-byte row (over the maximum message size)"),
                );
            }
            Some(b'I') => {}
            _ => return Err(too_large()),
        }
        let mut cols = [ColumnRef::Null; MAX_BORROWED_COLUMNS];
        let (xid, relation, n, _) =
            pgoutput::borrow_insert_prefix(data, self.stream.in_stream, &mut cols)
                .ok_or_else(too_large)?;
        if Some(relation) != self.events_oid || xid.is_some() {
            return Err(too_large());
        }
        let c = self
            .cols
            .as_ref()
            .ok_or_else(|| EventError::Schema("no Relation message for runtime.events".into()))?;
        let bytes_of = |i: usize| match cols[..n].get(i) {
            Some(ColumnRef::Text(b)) => b.to_vec(),
            _ => Vec::new(),
        };
        let seq = std::str::from_utf8(&bytes_of(c.seq))
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| {
                EventError::Schema(format!(
                    "a {bytes}-byte runtime.events row without a readable seq"
                ))
            })?;
        let columns = [
            c.seq,
            c.stream_id,
            c.stream_seq,
            c.event_type,
            c.owner_id,
            c.payload,
            c.occurred_at,
        ]
        .map(bytes_of);
        let (lsn, ord) = self
            .txn
            .as_mut()
            .ok_or_else(|| EventError::Order("change outside a transaction".into()))?;
        let position = Position::new(*lsn, *ord);
        *ord += 1;
        self.ready.push_back(SourceEvent::Oversized {
            seq,
            columns,
            bytes,
            position,
        });
        Ok(())
    }

    /// The next ready event, in order.
    pub fn pop(&mut self) -> Option<SourceEvent> {
        self.ready.pop_front()
    }

    /// Events buffered for streamed transactions not yet committed.
    pub fn buffered(&self) -> usize {
        self.streamed.values().map(Vec::len).sum()
    }

    /// Queues the events of one decoded message (use `feed` for bytes, which
    /// also tracks stream blocks): one handler per message type. Origins,
    /// types, logical messages and two-phase messages carry no runtime
    /// events (we do not enable two_phase).
    pub fn push(&mut self, msg: PgOutputMessage) -> Result<(), EventError> {
        match msg {
            PgOutputMessage::Begin {
                final_lsn,
                commit_time,
                xid,
            } => self.on_begin(final_lsn, commit_time, xid),
            PgOutputMessage::Commit {
                commit_lsn,
                end_lsn,
                commit_time,
                ..
            } => self.on_commit(commit_lsn, end_lsn, commit_time),
            PgOutputMessage::Relation(rel) => self.on_relation(rel)?,
            PgOutputMessage::Insert { xid, relation, new } => {
                self.on_insert(xid, relation, &new)?
            }
            PgOutputMessage::Update {
                xid, relation, new, ..
            } => self.on_update(xid, relation, &new)?,
            PgOutputMessage::Delete {
                xid,
                relation,
                key,
                old,
            } => self.on_delete(xid, relation, key.or(old))?,
            PgOutputMessage::Truncate { xid, relations, .. } => {
                self.on_truncate(xid, &relations)?
            }
            PgOutputMessage::StreamStart { xid, .. } => self.on_stream_start(xid),
            PgOutputMessage::StreamStop => self.on_stream_stop(),
            PgOutputMessage::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time,
                ..
            } => self.on_stream_commit(xid, commit_lsn, end_lsn, commit_time),
            PgOutputMessage::StreamAbort { xid, subxid, .. } => self.on_stream_abort(xid, subxid),
            _ => {}
        }
        Ok(())
    }

    /// Begin: opens the transaction whose changes are numbered from 0 at
    /// `final_lsn`.
    #[inline]
    fn on_begin(&mut self, final_lsn: u64, commit_time: i64, xid: u32) {
        self.txn = Some((Lsn(final_lsn), 0));
        self.ready.push_back(SourceEvent::Begin {
            final_lsn: Lsn(final_lsn),
            commit_time_us: pg_time_to_unix_us(commit_time),
            xid,
        });
    }

    /// Commit: closes the open transaction.
    #[inline]
    fn on_commit(&mut self, commit_lsn: u64, end_lsn: u64, commit_time: i64) {
        self.txn = None;
        self.ready.push_back(SourceEvent::Commit {
            commit_lsn: Lsn(commit_lsn),
            end_lsn: Lsn(end_lsn),
            commit_time_us: pg_time_to_unix_us(commit_time),
        });
    }

    /// Relation: remembers it; for runtime.events also its oid and where
    /// its columns are (an error when one is missing, and then the
    /// relation is not remembered).
    fn on_relation(&mut self, rel: Relation) -> Result<(), EventError> {
        if rel.namespace == "runtime" && rel.name == "events" {
            self.events_oid = Some(rel.oid);
            self.cols = Some(event_columns(&rel)?);
        }
        self.relations.insert(rel.oid, rel);
        Ok(())
    }

    /// Insert: a runtime.events row becomes an event (copied out of the
    /// decoded tuple); other tables are skipped, unknown ones an error.
    #[inline]
    fn on_insert(
        &mut self,
        xid: Option<u32>,
        relation: u32,
        new: &[TupleValue],
    ) -> Result<(), EventError> {
        if self.is_events(relation)? {
            let cols: Vec<ColumnRef<'_>> = new.iter().map(TupleValue::as_column).collect();
            let ev = self.row_to_event(&cols, None)?;
            self.emit_event(xid, ev)?;
        }
        Ok(())
    }

    /// Update of a runtime.events row: a violation naming its seq.
    #[inline]
    fn on_update(
        &mut self,
        xid: Option<u32>,
        relation: u32,
        new: &[TupleValue],
    ) -> Result<(), EventError> {
        if self.is_events(relation)? {
            let seq = self.seq_of(new);
            self.emit_violation(
                xid,
                ViolationKind::Update,
                format!("UPDATE of runtime.events row seq={seq}"),
            )?;
        }
        Ok(())
    }

    /// Delete of a runtime.events row: a violation naming the seq of its
    /// key or old row (empty when it carries neither).
    #[inline]
    fn on_delete(
        &mut self,
        xid: Option<u32>,
        relation: u32,
        key_or_old: Option<Vec<TupleValue>>,
    ) -> Result<(), EventError> {
        if self.is_events(relation)? {
            let seq = key_or_old.map(|t| self.seq_of(&t)).unwrap_or_default();
            self.emit_violation(
                xid,
                ViolationKind::Delete,
                format!("DELETE of runtime.events row seq={seq}"),
            )?;
        }
        Ok(())
    }

    /// Truncate that includes runtime.events: a violation.
    fn on_truncate(&mut self, xid: Option<u32>, relations: &[u32]) -> Result<(), EventError> {
        if self.events_oid.is_some_and(|o| relations.contains(&o)) {
            self.emit_violation(
                xid,
                ViolationKind::Truncate,
                "TRUNCATE of runtime.events".into(),
            )?;
        }
        Ok(())
    }

    /// Stream Start: changes until Stream Stop belong to `xid`, buffered
    /// until its Stream Commit.
    fn on_stream_start(&mut self, xid: u32) {
        self.stream.in_stream = true;
        self.stream_xid = Some(xid);
        self.streamed.entry(xid).or_default();
    }

    fn on_stream_stop(&mut self) {
        self.stream.in_stream = false;
        self.stream_xid = None;
    }

    /// Stream Commit: the buffered changes of `xid` (none if it was never
    /// streamed) become ready as one transaction, Begin to Commit, its
    /// events numbered from 0 at the commit LSN.
    fn on_stream_commit(&mut self, xid: u32, commit_lsn: u64, end_lsn: u64, commit_time: i64) {
        let pending = self.streamed.remove(&xid).unwrap_or_default();
        let lsn = Lsn(commit_lsn);
        let t = pg_time_to_unix_us(commit_time);
        self.ready.push_back(SourceEvent::Begin {
            final_lsn: lsn,
            commit_time_us: t,
            xid,
        });
        let mut ordinal = 0;
        for p in pending {
            match p {
                Pending::Event { mut ev, .. } => {
                    ev.position = Position::new(lsn, ordinal);
                    ordinal += 1;
                    self.ready.push_back(SourceEvent::Event(ev));
                }
                Pending::Violation { kind, detail, .. } => self
                    .ready
                    .push_back(SourceEvent::Violation { kind, detail }),
            }
        }
        self.ready.push_back(SourceEvent::Commit {
            commit_lsn: lsn,
            end_lsn: Lsn(end_lsn),
            commit_time_us: t,
        });
    }

    /// Stream Abort: of the whole transaction (`subxid == xid`) drops
    /// everything buffered for it; of a subtransaction only its changes.
    fn on_stream_abort(&mut self, xid: u32, subxid: u32) {
        if xid == subxid {
            self.streamed.remove(&xid);
        } else if let Some(v) = self.streamed.get_mut(&xid) {
            v.retain(|p| match p {
                Pending::Event { subxid: s, .. } | Pending::Violation { subxid: s, .. } => {
                    *s != subxid
                }
            });
        }
    }

    fn is_events(&self, oid: u32) -> Result<bool, EventError> {
        if !self.relations.contains_key(&oid) {
            return Err(EventError::UnknownRelation(oid));
        }
        Ok(self.events_oid == Some(oid))
    }

    fn emit_event(&mut self, xid: Option<u32>, mut ev: RuntimeEvent) -> Result<(), EventError> {
        match (xid, self.stream_xid) {
            (Some(sub), Some(top)) if self.stream.in_stream => {
                self.streamed
                    .entry(top)
                    .or_default()
                    .push(Pending::Event { subxid: sub, ev });
                Ok(())
            }
            _ => {
                let (lsn, ord) = self
                    .txn
                    .as_mut()
                    .ok_or_else(|| EventError::Order("change outside a transaction".into()))?;
                ev.position = Position::new(*lsn, *ord);
                *ord += 1;
                self.ready.push_back(SourceEvent::Event(ev));
                Ok(())
            }
        }
    }

    fn emit_violation(
        &mut self,
        xid: Option<u32>,
        kind: ViolationKind,
        detail: String,
    ) -> Result<(), EventError> {
        match (xid, self.stream_xid) {
            (Some(sub), Some(top)) if self.stream.in_stream => {
                self.streamed
                    .entry(top)
                    .or_default()
                    .push(Pending::Violation {
                        subxid: sub,
                        kind,
                        detail,
                    });
            }
            _ => self
                .ready
                .push_back(SourceEvent::Violation { kind, detail }),
        }
        Ok(())
    }

    fn seq_of(&self, t: &[TupleValue]) -> String {
        self.cols
            .as_ref()
            .and_then(|c| t.get(c.seq))
            .and_then(TupleValue::as_text)
            .unwrap_or("?")
            .to_string()
    }

    /// The event in a tuple. With `shared` (the WAL message the columns
    /// were borrowed from), its text stays in that buffer; without, it is
    /// copied.
    fn row_to_event(
        &self,
        t: &[ColumnRef<'_>],
        shared: Option<&Bytes>,
    ) -> Result<RuntimeEvent, EventError> {
        let c = self
            .cols
            .as_ref()
            .ok_or_else(|| EventError::Schema("no Relation message for runtime.events".into()))?;
        let bytes_of = |i: usize, name: &str| -> Result<&[u8], EventError> {
            match t.get(i) {
                Some(ColumnRef::Text(b)) => Ok(b),
                Some(other) => Err(EventError::Schema(format!(
                    "column {name} is {other:?}, expected text"
                ))),
                None => Err(EventError::Schema(format!(
                    "column {name} missing from tuple"
                ))),
            }
        };
        let not_utf8 = |name: &str| EventError::Schema(format!("column {name} is not UTF-8"));
        let int = |i: usize, name: &str| -> Result<i64, EventError> {
            parse_i64(bytes_of(i, name)?)
                .ok_or_else(|| EventError::Schema(format!("column {name} is not an integer")))
        };
        let seq = int(c.seq, "seq")?;
        let stream_seq = int(c.stream_seq, "stream_seq")?;
        // In `EventText` order.
        let columns = [
            (c.stream_id, "stream_id"),
            (c.event_type, "event_type"),
            (c.owner_id, "owner_id"),
            (c.occurred_at, "occurred_at"),
            (c.payload, "payload"),
        ];
        if let Some(buf) = shared {
            let base = buf.as_ptr() as usize;
            let mut spans: [Range<usize>; 5] = Default::default();
            for (&(i, name), span) in columns.iter().zip(&mut spans) {
                let b = bytes_of(i, name)?;
                // A column borrowed from `buf` starts inside it; anything
                // else fails the bounds check of `from_shared`.
                let start = (b.as_ptr() as usize).wrapping_sub(base);
                *span = start..start.saturating_add(b.len());
            }
            let text = EventText::from_shared(buf, spans).map_err(|i| not_utf8(columns[i].1))?;
            return Ok(RuntimeEvent::from_text(seq, stream_seq, text));
        }
        let mut text = [""; 5];
        for (&(i, name), out) in columns.iter().zip(&mut text) {
            *out = utf8(bytes_of(i, name)?).ok_or_else(|| not_utf8(name))?;
        }
        let [stream_id, event_type, owner_id, occurred_at, payload] = text;
        Ok(RuntimeEvent::new(
            seq,
            stream_id,
            stream_seq,
            event_type,
            owner_id,
            payload,
            occurred_at,
        ))
    }
}

/// A bigint's text (`-?[0-9]+`, what Postgres prints) read from bytes,
/// without a UTF-8 check first; `None` when malformed or out of range.
fn parse_i64(b: &[u8]) -> Option<i64> {
    let (negative, digits) = match b.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        // Accumulate negatively: i64::MIN has no positive counterpart.
        v = v.checked_mul(10)?.checked_sub(d)?;
    }
    if negative {
        Some(v)
    } else {
        v.checked_neg()
    }
}

fn event_columns(rel: &Relation) -> Result<EventColumns, EventError> {
    let find = |name: &str| {
        rel.columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| EventError::Schema(format!("runtime.events has no column {name}")))
    };
    Ok(EventColumns {
        seq: find("seq")?,
        stream_id: find("stream_id")?,
        stream_seq: find("stream_seq")?,
        event_type: find("event_type")?,
        owner_id: find("owner_id")?,
        payload: find("payload")?,
        occurred_at: find("occurred_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_i64, utf8, EventDecoder, SourceEvent};
    use crate::source::pgoutput::{Column, PgOutputMessage as M, Relation, TupleValue};
    use crate::source::pgoutput_encode::encode;

    /// A transaction inserting `rows` (stream_id, payload) into
    /// runtime.events, as pgoutput messages.
    fn transaction(rows: &[(&[u8], &[u8])]) -> Vec<Vec<u8>> {
        let names = [
            "seq",
            "stream_id",
            "stream_seq",
            "event_type",
            "owner_id",
            "payload",
            "occurred_at",
        ];
        let columns = names
            .iter()
            .map(|n| Column {
                flags: 0,
                name: n.to_string(),
                type_oid: 25,
                type_modifier: -1,
            })
            .collect();
        let mut out = vec![
            encode(&M::Begin {
                final_lsn: 0x100,
                commit_time: 0,
                xid: 7,
            }),
            encode(&M::Relation(Relation {
                xid: None,
                oid: 42,
                namespace: "runtime".into(),
                name: "events".into(),
                replica_identity: b'd',
                columns,
            })),
        ];
        for (i, (stream_id, payload)) in rows.iter().enumerate() {
            let text = |b: &[u8]| TupleValue::Text(bytes::Bytes::copy_from_slice(b));
            let seq = (i + 1).to_string();
            out.push(encode(&M::Insert {
                xid: None,
                relation: 42,
                new: vec![
                    text(seq.as_bytes()),
                    text(stream_id),
                    text(seq.as_bytes()),
                    text(b"run.step"),
                    text("üser".as_bytes()),
                    text(payload),
                    text(b"2026-11-23 08:00:00+00"),
                ],
            }));
        }
        out
    }

    /// What one decoder makes of the messages: events, or the error.
    fn decode(msgs: &[Vec<u8>], shared: bool) -> Result<Vec<SourceEvent>, String> {
        let mut dec = EventDecoder::new();
        let mut out = vec![];
        for m in msgs {
            let r = if shared {
                dec.feed_bytes(&bytes::Bytes::copy_from_slice(m))
            } else {
                dec.feed(m)
            };
            r.map_err(|e| e.to_string())?;
            while let Some(e) = dec.pop() {
                out.push(e);
            }
        }
        Ok(out)
    }

    #[test]
    fn columns_left_in_the_wal_buffer_decode_like_copied_ones() {
        let good = transaction(&[
            (b"run:a", br#"{"x":"\u00e9 caf\u00e9"}"#),
            ("run:é".as_bytes(), "{\"x\":\"ø\"}".as_bytes()),
            (b"", b""),
        ]);
        let shared = decode(&good, true).unwrap();
        assert_eq!(shared.len(), 4, "Begin and three events");
        assert_eq!(shared, decode(&good, false).unwrap());
        let Some(SourceEvent::Event(ev)) = shared.get(2) else {
            panic!("{shared:?}");
        };
        assert_eq!(
            (ev.stream_id(), ev.owner_id(), ev.payload(), ev.seq),
            ("run:é", "üser", "{\"x\":\"ø\"}", 2)
        );

        let bad = transaction(&[(b"run:a", b"{\"x\":\"\xff\"}")]);
        let err = decode(&bad, true).unwrap_err();
        assert!(err.contains("column payload is not UTF-8"), "{err}");
        assert_eq!(Err(err), decode(&bad, false));
    }

    #[test]
    fn column_text_is_checked_like_std() {
        let cases: [&[u8]; 8] = [
            b"",
            b"run:r-1",
            "caf\u{e9} \u{1f600}".as_bytes(),
            b"\xff",
            b"ok \xc3",
            b"\xed\xa0\x80",
            b"\x7f\x00 ascii controls",
            &[b'a'; 200],
        ];
        for c in cases {
            assert_eq!(utf8(c), std::str::from_utf8(c).ok(), "{c:?}");
        }
    }

    #[test]
    fn bigint_text_parses_like_str_parse() {
        let cases = [
            "0",
            "7",
            "-7",
            "0042",
            "-0",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "-9223372036854775809",
            "",
            "-",
            "+1",
            "1 ",
            " 1",
            "1.0",
            "12a",
            "١",
        ];
        for c in cases {
            let want = if c.starts_with('+') {
                None
            } else {
                c.parse::<i64>().ok()
            };
            assert_eq!(parse_i64(c.as_bytes()), want, "{c:?}");
        }
    }
}
