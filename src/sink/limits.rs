//! Convex's limits on one function call, as the real backend counts them
//! (get-convex/convex-backend: `TransactionLimits`, `common/src/knobs.rs`),
//! and the share of each that one of our requests may use.
//!
//! Every request is built within these with a margin, so a batch that
//! passes here passes in production.

use crate::projection::Table;
use crate::sink::SinkError;

/// Index ranges read by one transaction. The real backend counts one for
/// every lookup *and* one for every `db.replace` / `patch` / `delete` (the
/// write reads the document's old value through its index range), so an
/// `apply` of N replacements uses 2N.
pub(crate) const MAX_INDEX_RANGES: usize = 4_096;

/// Index ranges one `apply` spends per written document: its
/// `by_generation_key` lookup and its `db.replace`.
pub(crate) const RANGES_PER_WRITE: usize = 2;

/// Documents (and dead letters) one batch may touch: within the index
/// ranges of one `apply`, with a quarter of them as margin.
pub(crate) const MAX_KEYS_PER_APPLY: usize = MAX_INDEX_RANGES * 3 / 4 / RANGES_PER_WRITE;

/// Bytes one transaction may read (`TRANSACTION_MAX_READ_SIZE_BYTES`):
/// 16 MiB. A `load` reads every document it returns whole, and its return
/// value (16 MiB at most too) is about as large.
pub(crate) const MAX_READ_BYTES: usize = 16 << 20;

/// Bytes of stored documents one `load` may expect to read: half of the
/// read limit, as margin for system fields and index entries (counted by
/// Convex, not by us) and for estimates a little below the truth.
pub(crate) const MAX_LOAD_BYTES: usize = MAX_READ_BYTES / 2;

/// A stored document of `table` at its largest, for sizing loads before
/// any document of the table was seen: every text at its truncation limit,
/// four bytes a char, plus the fixed fields. Only inboxes can be large (up
/// to [`crate::projection::inboxes::INBOX_CAP`] notifications with a long
/// body each, ~0.5 MB); the other tables stay far under 16 KiB.
pub(crate) fn largest_doc_bytes(table: Table) -> usize {
    use crate::projection::inboxes::INBOX_CAP;
    use crate::projection::truncate::{LONG_TEXT, MAX_ID, SHORT_TEXT};
    match table {
        Table::Inboxes => INBOX_CAP * ((MAX_ID + SHORT_TEXT + LONG_TEXT) * 4 + 128) + 1024,
        _ => 16 * 1024,
    }
}

/// A definite answer saying a query read (or returned) more than one
/// transaction may: asking for fewer documents at a time succeeds. Matched
/// on Convex's message, as the real backend and `local-backend/limits.ts`
/// word it (`Too many bytes read in a single function execution ...`,
/// `Too many documents read ...`, `Function ... return value is too
/// large ...`).
pub(crate) fn is_read_limit(e: &SinkError) -> bool {
    const MESSAGES: [&str; 3] = [
        "Too many bytes read",
        "Too many documents read",
        "return value is too large",
    ];
    !e.is_transient()
        && e.convex_message()
            .is_some_and(|m| MESSAGES.iter().any(|p| m.contains(p)))
}

// A full batch stays inside the index-range limit with its margin.
const _: () = assert!(MAX_KEYS_PER_APPLY * RANGES_PER_WRITE <= MAX_INDEX_RANGES * 3 / 4);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_limit_answers_are_recognised() {
        let read = SinkError::Function {
            path: "projector:loadMany".into(),
            message: "Uncaught Error: Too many bytes read in a single function execution (limit: 16777216 bytes). Consider using smaller limits in your queries, paginating your queries, or using indexed queries with a selective index range expressions.".into(),
            data: None,
        };
        assert!(is_read_limit(&read));
        let other = SinkError::Function {
            path: "projector:loadMany".into(),
            message: "Uncaught Error: bad".into(),
            data: None,
        };
        assert!(!is_read_limit(&other));
        // A load of the largest inboxes fits several per call.
        assert!(MAX_LOAD_BYTES / largest_doc_bytes(Table::Inboxes) >= 8);
    }
}
