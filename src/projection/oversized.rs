//! Rows too large to read whole, seen the same way by every reader.
//!
//! The stream reads a `runtime.events` row's WAL message through when it
//! is over the configured maximum, keeping only its start
//! ([`KEPT_MESSAGE_BYTES`]); the history readers (rebuild, backfill,
//! verify) get the row from SQL. Both turn it into the same dead letter:
//! the same size, the same cut columns, the same reason, so a rebuild and
//! `verify` agree with what streaming wrote.
//!
//! A pgoutput Insert (not inside a streamed transaction) is `'I'`, the
//! relation oid (4), `'N'`, the column count (2), then per column a kind
//! byte, a 4-byte length and the text. The replication protocol wraps it
//! in 25 bytes of XLogData header; the connection limit applies to both.

use crate::event::{Position, RuntimeEvent};
use crate::projection::DeadLetter;

/// XLogData header bytes before a pgoutput message (`'w'` + 3 × 8).
pub(crate) const XLOGDATA_HEADER: usize = 25;

/// Bytes of the pgoutput message the stream keeps of an oversized one:
/// what is left of `PgConn`'s kept prefix after the XLogData header.
pub(crate) const KEPT_MESSAGE_BYTES: usize = crate::event::OVERSIZED_PREFIX - XLOGDATA_HEADER;

const INSERT_HEADER: usize = 8;
const COLUMN_HEADER: usize = 5;

#[cfg(test)]
/// Size of the Insert message of a row with these column texts.
pub(crate) fn insert_message_bytes(cols: &[&[u8]]) -> usize {
    INSERT_HEADER + cols.iter().map(|c| COLUMN_HEADER + c.len()).sum::<usize>()
}

/// Whether a message of `message_bytes` is over the connection's maximum
/// (which counts the XLogData header too).
pub(crate) fn is_oversized(message_bytes: usize, max: usize) -> bool {
    message_bytes + XLOGDATA_HEADER > max
}

/// The column texts a reader keeping the message's first `kept` bytes
/// sees: whole columns, then the start of the one the cut falls in, then
/// nothing (as `pgoutput::borrow_insert_prefix` reads them).
pub(crate) fn cut_columns<'a>(cols: &[&'a [u8]], kept: usize) -> Vec<&'a [u8]> {
    let mut budget = kept.saturating_sub(INSERT_HEADER);
    let mut out = Vec::with_capacity(cols.len());
    for col in cols {
        if budget < COLUMN_HEADER {
            out.push(&col[..0]);
            budget = 0;
            continue;
        }
        budget -= COLUMN_HEADER;
        let take = col.len().min(budget);
        out.push(&col[..take]);
        budget -= take;
        if take < col.len() {
            budget = 0;
        }
    }
    out
}

/// Why an oversized row is a dead letter.
fn reason(message_bytes: usize, max: usize) -> String {
    format!("event_too_large: its WAL message is {message_bytes} bytes, over the maximum of {max} (PROJECTOR_MAX_EVENT_BYTES); the payload kept is its start")
}

/// The dead letter of an oversized row, for the stream and the history
/// readers alike, from the (cut) texts of its columns in `runtime.events`
/// order: seq, stream_id, stream_seq, event_type, owner_id, payload,
/// occurred_at.
pub(crate) fn dead_letter(
    seq: i64,
    cut: &[&[u8]],
    message_bytes: usize,
    max: usize,
    position: Position,
) -> DeadLetter {
    let text = |i: usize| String::from_utf8_lossy(cut.get(i).copied().unwrap_or(&[])).into_owned();
    let ev = RuntimeEvent::new(
        seq,
        &text(1),
        text(2).parse().unwrap_or(0),
        &text(3),
        &text(4),
        &text(5),
        "",
    )
    .at(position);
    DeadLetter::new(&ev, reason(message_bytes, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_keeps_whole_columns_then_a_start_then_nothing() {
        let cols: [&[u8]; 4] = [b"12", b"run:r1", b"xxxxxxxxxx", b"after"];
        assert_eq!(insert_message_bytes(&cols), 8 + 4 * 5 + 2 + 6 + 10 + 5);
        // Header 8; "12" needs 7, "run:r1" 11, then 5 + 4 of the 10 x.
        let cut = cut_columns(&cols, 8 + 7 + 11 + 5 + 4);
        assert_eq!(cut, vec![&b"12"[..], b"run:r1", b"xxxx", b""]);
        // A cut inside a column header leaves that column empty.
        let cut = cut_columns(&cols, 8 + 7 + 3);
        assert_eq!(cut, vec![&b"12"[..], b"", b"", b""]);
        // Enough room: everything.
        assert_eq!(cut_columns(&cols, 1000), cols.to_vec());
    }
}
