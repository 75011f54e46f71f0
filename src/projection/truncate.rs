//! Deterministic string limits, counted in Unicode scalar values (`char`s),
//! so that every implementation (Rust, TypeScript, SQL) cuts at the same place.

/// Limit for `title`, `repo`, `host`, `name`.
pub(crate) const SHORT_TEXT: usize = 200;
/// Limit for `error`, `reason`, `body`.
pub(crate) const LONG_TEXT: usize = 2000;
/// Limit for ids (stream id suffix, `thread_id`, `notification_id`).
pub(crate) const MAX_ID: usize = 200;
/// Dead-letter payloads are cut to this many bytes (on a char boundary).
pub(crate) const DEAD_LETTER_PAYLOAD_BYTES: usize = 16 * 1024;
/// Every other text of a dead letter (`streamId`, `eventType`, `reason`)
/// is cut to this many bytes: together with the payload a dead letter
/// stays far under Convex's 1 MiB per document, so it is always stored,
/// never refused (a malformed event may carry a stream id of any size).
pub(crate) const DEAD_LETTER_TEXT_BYTES: usize = 4 * 1024;

/// The prefix of `s` holding at most `max` scalar values.
pub(crate) fn truncate_chars(s: &str, max: usize) -> &str {
    // A string of at most `max` bytes has at most `max` chars.
    if s.len() <= max {
        return s;
    }
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Truncates an owned string in place (no copy when it already fits).
pub(crate) fn truncate_owned(mut s: String, max: usize) -> String {
    let keep = truncate_chars(&s, max).len();
    s.truncate(keep);
    s
}

/// Number of scalar values, stopping early once above `max`.
pub(crate) fn exceeds_chars(s: &str, max: usize) -> bool {
    s.len() > max && s.chars().nth(max).is_some()
}

/// The prefix of `s` of at most `max` bytes, cut on a char boundary.
pub(crate) fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_scalar_values_not_bytes() {
        let emoji = "🙂".repeat(250);
        assert_eq!(truncate_chars(&emoji, 200).chars().count(), 200);
        assert_eq!(truncate_chars(&emoji, 200).len(), 800);
        let mixed = format!("{}{}", "é".repeat(150), "x".repeat(100));
        let t = truncate_chars(&mixed, 200);
        assert_eq!(t, format!("{}{}", "é".repeat(150), "x".repeat(50)));
        assert_eq!(truncate_chars("short", 200), "short");
        // 200 two-byte chars: 400 bytes but exactly at the limit.
        let at_limit = "é".repeat(200);
        assert_eq!(truncate_chars(&at_limit, 200), at_limit);
        assert_eq!(truncate_owned("漢".repeat(2001), 2000), "漢".repeat(2000));
        // A combining sequence is cut between scalar values, deterministically.
        assert_eq!(truncate_chars("e\u{301}e\u{301}", 3), "e\u{301}e");
    }

    #[test]
    fn id_length_limit_is_in_scalar_values() {
        assert!(!exceeds_chars(&"🙂".repeat(200), 200));
        assert!(exceeds_chars(&"🙂".repeat(201), 200));
        assert!(!exceeds_chars(&"x".repeat(200), 200));
        assert!(exceeds_chars(&"x".repeat(201), 200));
    }

    #[test]
    fn byte_truncation_respects_char_boundaries() {
        let s = "🙂".repeat(5000); // 20,000 bytes
        let t = truncate_bytes(&s, DEAD_LETTER_PAYLOAD_BYTES);
        assert_eq!(t.len(), 16_384);
        let s = format!("x{}", "🙂".repeat(5000));
        let t = truncate_bytes(&s, DEAD_LETTER_PAYLOAD_BYTES);
        assert_eq!(t.len(), 16_381);
        assert!(t.chars().all(|c| c == 'x' || c == '🙂'));
        assert_eq!(truncate_bytes("abc", 16_384), "abc");
    }
}
