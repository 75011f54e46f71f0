//! The runtime event as the projector sees it, and where it sits in the WAL.
//!
//! `Lsn` and `Position` are shared by the source (which assigns them), the
//! reducers (which skip what a document already holds) and the sink (which
//! sends positions to Convex as fixed-width strings that compare in order).

use std::fmt;
use std::str::FromStr;

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
    pub const ZERO: Position = Position {
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
    pub fn snapshot(seq: i64) -> Self {
        Position::new(Lsn(0), seq.max(0) as u64)
    }

    /// The wire form stored in Convex: 16 hex digits, `:`, 16 hex digits,
    /// lowercase, so that string order equals position order.
    pub fn encode(&self) -> String {
        // By hand: `format!` was ~2 % of a backlog drain (one per write).
        fn hex16(out: &mut String, v: u64) {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            for shift in (0..16).rev() {
                out.push(DIGITS[((v >> (shift * 4)) & 0xf) as usize] as char);
            }
        }
        let mut out = String::with_capacity(33);
        hex16(&mut out, self.commit_lsn.0);
        out.push(':');
        hex16(&mut out, self.ordinal);
        out
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

/// One row of `runtime.events`, as decoded from the WAL or read from a
/// snapshot. `payload` and `occurred_at` keep Postgres' text forms (jsonb and
/// timestamptz output); the reducers validate and parse them, so that a bad
/// row becomes a dead letter instead of a decoding failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeEvent {
    pub seq: i64,
    pub stream_id: String,
    pub stream_seq: i64,
    pub event_type: String,
    pub owner_id: String,
    /// jsonb as text.
    pub payload: String,
    /// timestamptz as text, e.g. `2026-11-23 08:00:00.001999+00`.
    pub occurred_at: String,
    pub position: Position,
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
