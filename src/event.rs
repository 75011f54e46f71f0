//! The runtime event as the projector sees it, and where it sits in the WAL.
//!
//! `Lsn` and `Position` are shared by the source (which assigns them), the
//! reducers (which skip what a document already holds) and the sink (which
//! sends positions to Convex as fixed-width strings that compare in order).

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use bytes::Bytes;

/// A WAL location, printed the way Postgres prints it (`16/B374D848`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid LSN {s:?}: expected the form 16/B374D848"))?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| format!("invalid LSN {s:?}"))?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| format!("invalid LSN {s:?}"))?;
        if hi > 0xFFFF_FFFF || lo > 0xFFFF_FFFF {
            return Err(format!(
                "invalid LSN {s:?}: each half is at most 8 hex digits"
            ));
        }
        Ok(Lsn((hi << 32) | lo))
    }
}

/// Where an event sits in processing order: its transaction's commit LSN and
/// its index inside the transaction. Snapshot events (rebuild) use `(0, seq)`.
/// Derived `Ord` compares `commit_lsn` first, then `ordinal`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub commit_lsn: Lsn,
    pub ordinal: u64,
}

impl Position {
    pub(crate) const ZERO: Position = Position {
        commit_lsn: Lsn(0),
        ordinal: 0,
    };

    pub fn new(commit_lsn: Lsn, ordinal: u64) -> Self {
        Position {
            commit_lsn,
            ordinal,
        }
    }

    /// The snapshot position of an event copied by a rebuild or verify.
    pub(crate) fn snapshot(seq: i64) -> Self {
        Position::new(Lsn(0), seq.max(0) as u64)
    }

    /// The wire form stored in Convex: 16 hex digits, `:`, 16 hex digits,
    /// lowercase, so that string order equals position order.
    pub fn encode(&self) -> String {
        // By hand into a stack buffer: `format!` was ~2 % of a backlog
        // drain (one per write), pushing chars one by one still ~1 %.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [b':'; 33];
        for (half, v) in [(0, self.commit_lsn.0), (17, self.ordinal)] {
            for (i, b) in buf[half..half + 16].iter_mut().enumerate() {
                *b = DIGITS[((v >> ((15 - i) * 4)) & 0xf) as usize];
            }
        }
        // Hex digits and ':' only: always UTF-8.
        std::str::from_utf8(&buf).unwrap_or_default().to_owned()
    }

    pub fn decode(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid position {s:?}: expected 16 hex digits, ':', 16 hex digits");
        let (a, b) = s.split_once(':').ok_or_else(bad)?;
        if a.len() != 16 || b.len() != 16 {
            return Err(bad());
        }
        let lsn = u64::from_str_radix(a, 16).map_err(|_| bad())?;
        let ord = u64::from_str_radix(b, 16).map_err(|_| bad())?;
        Ok(Position::new(Lsn(lsn), ord))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.commit_lsn, self.ordinal)
    }
}

/// Of a CopyData message over the connection's maximum, this many bytes
/// are kept (the message's start: the WAL message header and the leading
/// columns of a row); the rest is read and dropped, never held. Shared by
/// the stream and the history readers (`projection::oversized`), which
/// must cut an oversized row the same way.
pub(crate) const OVERSIZED_PREFIX: usize = 64 * 1024;

/// One row of `runtime.events`, as decoded from the WAL or read from a
/// snapshot. `payload` and `occurred_at` keep Postgres' text forms (jsonb and
/// timestamptz output); the reducers validate and parse them, so that a bad
/// row becomes a dead letter instead of a decoding failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeEvent {
    pub seq: i64,
    pub stream_seq: i64,
    pub position: Position,
    text: EventText,
}

impl RuntimeEvent {
    /// An event at [`Position::ZERO`] (the source sets the position).
    pub fn new(
        seq: i64,
        stream_id: &str,
        stream_seq: i64,
        event_type: &str,
        owner_id: &str,
        payload: &str,
        occurred_at: &str,
    ) -> Self {
        RuntimeEvent {
            seq,
            stream_seq,
            position: Position::ZERO,
            text: EventText::new(stream_id, event_type, owner_id, occurred_at, payload),
        }
    }

    /// An event whose text columns are already together (the decoder's
    /// shared WAL buffer), at [`Position::ZERO`].
    pub(crate) fn from_text(seq: i64, stream_seq: i64, text: EventText) -> Self {
        RuntimeEvent {
            seq,
            stream_seq,
            position: Position::ZERO,
            text,
        }
    }

    /// The same event at `position`.
    pub fn at(mut self, position: Position) -> Self {
        self.position = position;
        self
    }

    pub fn stream_id(&self) -> &str {
        self.text.stream_id()
    }

    pub fn event_type(&self) -> &str {
        self.text.event_type()
    }

    pub fn owner_id(&self) -> &str {
        self.text.owner_id()
    }

    /// jsonb as text.
    pub fn payload(&self) -> &str {
        self.text.payload()
    }

    /// timestamptz as text, e.g. `2026-11-23 08:00:00.001999+00`.
    pub fn occurred_at(&self) -> &str {
        self.text.occurred_at()
    }

    /// The text columns, to move into what is planned from this event.
    pub(crate) fn into_text(self) -> EventText {
        self.text
    }

    pub(crate) fn text(&self) -> &EventText {
        &self.text
    }
}

/// The five text columns of one event, held in one shared buffer.
///
/// Decoding used to allocate a string per column, then one buffer per event
/// (an event's strings live and die together: planned, folded, kept for a
/// dead letter until the ack). Now the decoder hands over the WAL message
/// itself: the columns are spans of the `Bytes` the socket read filled, so
/// an event costs a reference count instead of an allocation, a copy and a
/// free (~6 % of a drain's instructions). What it pins is bounded like the
/// copies were: the events of the batches in flight, counted by their
/// [`EventText::len`], plus the rest of the read chunks they sit in.
#[derive(Clone)]
pub(crate) struct EventText {
    /// Holds stream_id, event_type, owner_id, occurred_at and payload at
    /// `spans`; every span is valid UTF-8 (checked on construction).
    buf: Bytes,
    /// `(start, end)` of each column in `buf`, in the order above.
    spans: [(u32, u32); 5],
}

impl EventText {
    pub(crate) fn new(
        stream_id: &str,
        event_type: &str,
        owner_id: &str,
        occurred_at: &str,
        payload: &str,
    ) -> Self {
        let parts = [stream_id, event_type, owner_id, occurred_at, payload];
        let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut spans = [(0, 0); 5];
        for (part, span) in parts.into_iter().zip(&mut spans) {
            let start = buf.len();
            buf.extend_from_slice(part.as_bytes());
            *span = (start as u32, buf.len() as u32);
        }
        EventText {
            buf: Bytes::from(buf),
            spans,
        }
    }

    /// The columns at `spans` of a shared buffer (the decoder's WAL
    /// message), without copying; `Err(i)` names the first column `i` that
    /// is out of bounds or not UTF-8.
    pub(crate) fn from_shared(buf: &Bytes, spans: [Range<usize>; 5]) -> Result<Self, usize> {
        let mut out = [(0, 0); 5];
        for (i, (span, o)) in spans.into_iter().zip(&mut out).enumerate() {
            let (start, end) = (span.start, span.end);
            let ok = buf.get(span).and_then(utf8).is_some();
            if !ok || end > u32::MAX as usize {
                return Err(i);
            }
            *o = (start as u32, end as u32);
        }
        Ok(EventText {
            buf: buf.clone(),
            spans: out,
        })
    }

    fn part(&self, i: usize) -> &str {
        let (start, end) = self.spans[i];
        let bytes = self
            .buf
            .get(start as usize..end as usize)
            .unwrap_or_default();
        // SAFETY: both constructors checked that every span is in bounds
        // and valid UTF-8 (`new` from `&str`s, `from_shared` by `utf8`), and
        // `buf` never changes.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    pub(crate) fn stream_id(&self) -> &str {
        self.part(0)
    }

    pub(crate) fn event_type(&self) -> &str {
        self.part(1)
    }

    pub(crate) fn owner_id(&self) -> &str {
        self.part(2)
    }

    pub(crate) fn occurred_at(&self) -> &str {
        self.part(3)
    }

    pub(crate) fn payload(&self) -> &str {
        self.part(4)
    }

    /// Bytes of text held (the columns, not the buffer around them).
    pub(crate) fn len(&self) -> usize {
        self.spans.iter().map(|(s, e)| (e - s) as usize).sum()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn parts(&self) -> [&str; 5] {
        [0, 1, 2, 3, 4].map(|i| self.part(i))
    }
}

/// Equal when the columns are: where they sit in which buffer is no part
/// of the value.
impl PartialEq for EventText {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for EventText {}

/// Text as `&str`, or `None` if it is not UTF-8 (validation was ~7 % of a
/// drain's instructions). Short ASCII columns (ids, types, times) are
/// checked by `is_ascii`; the rest (the payload) by simdutf8 (the same
/// answer as `std::str::from_utf8`, several times faster on long text, but
/// it hands inputs under 64 bytes to std, which costs ~100 instructions
/// each).
pub(crate) fn utf8(b: &[u8]) -> Option<&str> {
    if b.len() < 64 && b.is_ascii() {
        // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(b) })
    } else {
        simdutf8::basic::from_utf8(b).ok()
    }
}

impl fmt::Debug for EventText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventText")
            .field("stream_id", &self.stream_id())
            .field("event_type", &self.event_type())
            .field("owner_id", &self.owner_id())
            .field("occurred_at", &self.occurred_at())
            .field("payload", &self.payload())
            .finish()
    }
}

/// Parses a timestamptz text (Postgres ISO output, or RFC 3339) into epoch
/// milliseconds, truncated toward negative infinity. `None` for `infinity`
/// and anything unparseable.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let dt = chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .ok()?;
    Some(dt.timestamp_micros().div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_postgres_text() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert!("16B374D848".parse::<Lsn>().is_err());
    }

    #[test]
    fn position_encoding_orders_like_positions() {
        let a = Position::new(Lsn(0x1_0000_0000), 2);
        let b = Position::new(Lsn(0x1_0000_0000), 10);
        let c = Position::new(Lsn(0x2_0000_0000), 0);
        assert!(a.encode() < b.encode() && b.encode() < c.encode());
        for p in [a, b, c, Position::new(Lsn(u64::MAX), 0xfedc_ba98_7654_3210)] {
            assert_eq!(
                p.encode(),
                format!("{:016x}:{:016x}", p.commit_lsn.0, p.ordinal)
            );
        }
        assert_eq!(Position::decode(&b.encode()).unwrap(), b);
        assert!(Position::decode("1:2").is_err());
    }

    #[test]
    fn event_text_keeps_each_column_apart() {
        let e = RuntimeEvent::new(
            7,
            "run:r1",
            2,
            "run.step",
            "u1",
            r#"{"a":1}"#,
            "2026-11-23 08:00:00+00",
        )
        .at(Position::new(Lsn(5), 1));
        assert_eq!(
            (
                e.stream_id(),
                e.event_type(),
                e.owner_id(),
                e.payload(),
                e.occurred_at()
            ),
            (
                "run:r1",
                "run.step",
                "u1",
                r#"{"a":1}"#,
                "2026-11-23 08:00:00+00"
            )
        );
        assert_eq!(
            (e.seq, e.stream_seq, e.position),
            (7, 2, Position::new(Lsn(5), 1))
        );
        let empty = RuntimeEvent::new(0, "", 0, "", "", "", "");
        assert_eq!((empty.stream_id(), empty.payload()), ("", ""));
        assert!(empty.text().is_empty());
        let multibyte = EventText::new("é", "", "ü", "ß", "{\"x\":\"ø\"}");
        assert_eq!(multibyte.owner_id(), "ü");
        assert_eq!(multibyte.payload(), "{\"x\":\"ø\"}");
        assert_eq!(multibyte.len(), "éüß{\"x\":\"ø\"}".len());
    }

    #[test]
    fn shared_text_is_spans_of_the_buffer_and_compares_by_value() {
        let wal =
            Bytes::from_static(b"..run:r1..run.step..u1..2026-11-23 08:00:00+00..{\"a\":1}..");
        let spans = [2..8, 10..18, 20..22, 24..46, 48..55];
        let shared = EventText::from_shared(&wal, spans.clone()).unwrap();
        assert_eq!(shared.payload(), r#"{"a":1}"#);
        assert_eq!(shared.occurred_at(), "2026-11-23 08:00:00+00");
        assert_eq!(shared.len(), 6 + 8 + 2 + 22 + 7);
        let owned = EventText::new(
            "run:r1",
            "run.step",
            "u1",
            "2026-11-23 08:00:00+00",
            r#"{"a":1}"#,
        );
        assert_eq!(shared, owned);
        assert_ne!(shared, EventText::new("run:r1", "run.step", "u2", "", ""));

        let mut out_of_bounds = spans.clone();
        out_of_bounds[3] = 24..99;
        assert_eq!(EventText::from_shared(&wal, out_of_bounds).err(), Some(3));
        let bad = Bytes::from_static(b"ok\xff\xfe");
        assert_eq!(
            EventText::from_shared(&bad, [0..2, 0..2, 2..4, 0..0, 0..0]).err(),
            Some(2)
        );
    }

    #[test]
    fn timestamps_truncate_to_milliseconds() {
        assert_eq!(
            parse_timestamp_ms("2026-11-23 08:00:00.001999+00"),
            Some(1_795_420_800_001)
        );
        assert_eq!(
            parse_timestamp_ms("2026-11-23T08:00:00.001999+00:00"),
            Some(1_795_420_800_001)
        );
        assert_eq!(
            parse_timestamp_ms("2026-11-23 10:00:00+02"),
            Some(1_795_420_800_000)
        );
        assert_eq!(parse_timestamp_ms("1969-12-31 23:59:59.9995+00"), Some(-1));
        assert_eq!(parse_timestamp_ms("infinity"), None);
    }
}
