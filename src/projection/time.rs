//! `occurred_at` → epoch milliseconds, with a fast path for the two forms
//! we actually receive (Postgres text `2026-11-23 08:00:00.123456+00` and
//! RFC 3339 `2026-11-23T08:00:00.123456+00:00`). Anything the fast path
//! does not recognise exactly goes to [`crate::event::parse_timestamp_ms`]
//! (chrono), which stays the definition; the fast path is tested against it.
//! chrono's format parser costs ~0.5 µs per event, this ~20 ns.

use std::cell::Cell;

use crate::event::parse_timestamp_ms;

/// Epoch ms, truncated toward negative infinity; `None` when unparseable.
pub(crate) fn occurred_at_ms(s: &str) -> Option<i64> {
    // No trim here: padded text (never what Postgres sends) misses the fast
    // path and chrono's parser, which trims, still reads it.
    fast(s).or_else(|| parse_timestamp_ms(s))
}

/// Two ASCII digits at `b[i..i + 2]` (the caller has checked the length).
fn two(b: &[u8], i: usize) -> Option<i64> {
    let (hi, lo) = (b[i].wrapping_sub(b'0'), b[i + 1].wrapping_sub(b'0'));
    (hi < 10 && lo < 10).then(|| i64::from(hi * 10 + lo))
}

/// Scale of an `n`-digit fraction to nanoseconds.
const FRACTION_SCALE: [i64; 10] = [
    0,
    100_000_000,
    10_000_000,
    1_000_000,
    100_000,
    10_000,
    1_000,
    100,
    10,
    1,
];

fn fast(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // `YYYY-MM-DD?HH:MM:SS` plus at least `Z` or `+HH`: every fixed
    // position below is in bounds once this holds.
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    // Postgres prints `date time+HH[:MM]`; RFC 3339 `dateTtime(Z|+HH:MM)`.
    let rfc3339 = match b[10] {
        b' ' => false,
        b'T' => true,
        _ => return None,
    };
    let minute_secs = minute_secs(b)?;
    let second = two(b, 17)?;
    if second > 59 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start == 9 {
                return None; // beyond nanoseconds: chrono decides
            }
            nanos = nanos * 10 + i64::from(b[i] - b'0');
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        nanos *= FRACTION_SCALE[n];
    }
    // Offset: `+HH` or `+HH:MM` (Postgres), `Z`.
    let rest = &b[i..];
    let offset_secs = match rest {
        [b'Z'] if rfc3339 => 0,
        [sign @ (b'+' | b'-'), ..] => {
            let (oh, om) = match rest.len() {
                3 if !rfc3339 => (two(rest, 1)?, 0),
                6 if rest[3] == b':' => (two(rest, 1)?, two(rest, 4)?),
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let secs = minute_secs + second - offset_secs;
    Some(secs * 1000 + nanos / 1_000_000)
}

thread_local! {
    /// The last `YYYY-MM-DD?HH:MM` read (as bytes) and its seconds since
    /// the epoch: a batch's events mostly share their minute, and checking
    /// and converting it was half of reading a timestamp.
    static LAST_MINUTE: Cell<Option<([u8; 16], i64)>> = const { Cell::new(None) };
}

/// Seconds since 1970-01-01T00:00 of the `YYYY-MM-DD?HH:MM` at the start
/// of `b` (length and separators checked by the caller), `None` if it is
/// not a valid date and time of day.
fn minute_secs(b: &[u8]) -> Option<i64> {
    let prefix: [u8; 16] = b.get(..16)?.try_into().ok()?;
    if let Some((last, secs)) = LAST_MINUTE.get() {
        if last == prefix {
            return Some(secs);
        }
    }
    let year = two(b, 0)? * 100 + two(b, 2)?;
    let month = two(b, 5)?;
    let day = two(b, 8)?;
    if year < 1000 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let hour = two(b, 11)?;
    let minute = two(b, 14)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60;
    LAST_MINUTE.set(Some((prefix, secs)));
    Some(secs)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fast_path_agrees_with_chrono_on_known_forms() {
        for s in [
            "2026-11-23 08:00:00.001999+00",
            "2026-11-23T08:00:00.001999+00:00",
            "2026-11-23 10:00:00+02",
            "2026-11-23 10:00:00+05:30",
            "2026-11-23 10:00:00-09:30",
            "2024-02-29 23:59:59.999999+00",
            "2000-03-01T00:00:00Z",
            "1969-12-31 23:59:59.9995+00",
            "1000-01-01 00:00:00+00",
            "9999-12-31 23:59:59.123456789+00",
        ] {
            assert_eq!(fast(s), parse_timestamp_ms(s), "{s}");
            assert!(fast(s).is_some(), "{s} should take the fast path");
        }
        for s in [
            "2025-02-29 00:00:00+00",
            "2026-13-01 00:00:00+00",
            "infinity",
            "",
            "2026-11-23 08:00:00+0000",
            "2026-11-23 08:00:00.1234567890123456789012345+00",
            "2026-11-23 08:00:00.+00",
            "2026-11-23 08:00:00+0",
        ] {
            assert_eq!(fast(s), None, "{s}");
            assert_eq!(occurred_at_ms(s), parse_timestamp_ms(s), "{s}");
        }
        assert_eq!(
            occurred_at_ms(" 2026-11-23 08:00:00.001999+00 "),
            Some(1_795_420_800_001)
        );
    }

    #[test]
    fn a_repeated_date_reads_like_a_new_one() {
        for s in [
            "2026-11-23 08:00:00+00",
            "2026-11-23 08:00:59.5+00",
            "2026-11-23T08:00:01Z",
            "2026-11-23 08:01:00+00",
            "2026-11-23 08:60:00+00",
            "2026-11-23 08:00:60+00",
            "2026-11-23 08:00:00+00",
            "2026-11-23 23:59:59.999+00",
            "2026-11-23T00:00:00Z",
            "2026-11-24 00:00:00+00",
            "2026-11-23 12:00:00-09:30",
            "2026-02-29 00:00:00+00",
            "2026-11-23 24:00:00+00",
            "2024-02-29 00:00:00+00",
            "2024-02-29 00:00:00+00",
        ] {
            assert_eq!(occurred_at_ms(s), parse_timestamp_ms(s), "{s}");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_chrono(
            y in 1000i64..=9999, mo in 0i64..=13, d in 0i64..=32, h in 0i64..=24, mi in 0i64..=60,
            sec in 0i64..=60, frac in prop::option::of("[0-9]{1,10}"), sep in prop::sample::select(vec![" ", "T"]),
            off in prop::sample::select(vec!["+00", "-00", "+00:00", "Z", "+02", "-07", "+05:30", "-09:30", "+23:59", "+24", "+0100", "+01:60", ""]),
        ) {
            let s = format!(
                "{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{sec:02}{}{off}",
                frac.map(|f| format!(".{f}")).unwrap_or_default()
            );
            prop_assert_eq!(occurred_at_ms(&s), parse_timestamp_ms(&s), "{}", s);
            if let Some(v) = fast(&s) {
                prop_assert_eq!(Some(v), parse_timestamp_ms(&s), "{}", s);
            }
        }
    }
}
