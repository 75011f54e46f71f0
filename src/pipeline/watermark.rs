//! The acknowledgement watermark: which LSN is safe to confirm to Postgres.
//!
//! ```text
//!  txns in WAL order:   T1 ──── T2 ── T3 ─────── T4 (open)
//!  their events go into batches in order:  b1 b1 b2 | b2 b3 | b3 b4 b4 b5 …
//!  acks (any order):    b1 ✓  b3 ✓  b2 ✓  → acked prefix = b3
//!  flush LSN = end LSN of the newest committed txn whose last batch ≤ acked prefix
//! ```
//!
//! Why this is safe: events are assigned to batches in WAL order, so "every
//! batch up to `b` is acknowledged" means every event before the end of the
//! newest transaction that only used batches ≤ `b` is in Convex. Confirming
//! that transaction's end LSN tells Postgres it never has to send any of them
//! again; everything after is still re-sent on restart. The watermark only
//! moves forward. With nothing pending at all (no open transaction, no
//! unconfirmed commit, no batch open or in flight), everything received is
//! done, so the flush LSN may advance to the last WAL position the server
//! reported (keepalive or XLogData end): an idle or filtered slot then does
//! not pin WAL.

use std::collections::{BTreeSet, VecDeque};

use crate::event::Lsn;

/// Batch identifiers are assigned by the pipeline, starting at 1, strictly
/// increasing in dispatch order.
pub(crate) type BatchId = u64;

#[derive(Debug, Default)]
pub(crate) struct Watermark {
    /// Committed transactions not yet confirmed: (end LSN, last batch that
    /// holds one of its events, if any).
    committed: VecDeque<(Lsn, Option<BatchId>)>,
    /// The open transaction's last batch, if one is open.
    open_txn: Option<Option<BatchId>>,
    /// Highest batch id handed out so far.
    last_batch: BatchId,
    /// Every batch ≤ this is acknowledged.
    acked_prefix: BatchId,
    /// Acks above the prefix, waiting for the gap to close.
    acked_above: BTreeSet<BatchId>,
    /// The LSN we confirm; never moves backwards.
    flush: Lsn,
    /// The newest WAL position the server told us about.
    received: Lsn,
}

impl Watermark {
    /// Starts at the slot's confirmed position.
    pub(crate) fn new(start: Lsn) -> Self {
        Watermark {
            flush: start,
            received: start,
            ..Default::default()
        }
    }

    pub(crate) fn flush_lsn(&self) -> Lsn {
        self.flush
    }

    pub(crate) fn received_lsn(&self) -> Lsn {
        self.received
    }

    /// The server reported WAL up to `lsn` (XLogData end or keepalive).
    pub(crate) fn observe_wal_end(&mut self, lsn: Lsn) {
        self.received = self.received.max(lsn);
        self.advance();
    }

    pub(crate) fn begin(&mut self) {
        self.open_txn = Some(None);
    }

    /// A transaction has begun and not committed yet.
    pub(crate) fn in_transaction(&self) -> bool {
        self.open_txn.is_some()
    }

    /// An event of the open transaction went into batch `id`.
    pub(crate) fn event_in_batch(&mut self, id: BatchId) {
        if let Some(last) = &mut self.open_txn {
            *last = Some(id);
        }
    }

    pub(crate) fn commit(&mut self, end_lsn: Lsn) {
        let last = self.open_txn.take().flatten();
        self.received = self.received.max(end_lsn);
        self.committed.push_back((end_lsn, last));
        self.advance();
    }

    /// A new batch id, in dispatch order.
    pub(crate) fn next_batch_id(&mut self) -> BatchId {
        self.last_batch += 1;
        self.last_batch
    }

    /// The id the next batch will get (the open batch's id).
    pub(crate) fn peek_batch_id(&self) -> BatchId {
        self.last_batch + 1
    }

    pub(crate) fn ack(&mut self, id: BatchId) {
        if id <= self.acked_prefix {
            return;
        }
        self.acked_above.insert(id);
        while self.acked_above.remove(&(self.acked_prefix + 1)) {
            self.acked_prefix += 1;
        }
        self.advance();
    }

    /// True when nothing read is waiting for Convex.
    pub(crate) fn is_idle(&self) -> bool {
        self.open_txn.is_none() && self.committed.is_empty() && self.acked_prefix == self.last_batch
    }

    fn advance(&mut self) {
        while let Some(&(end, last)) = self.committed.front() {
            match last {
                Some(b) if b > self.acked_prefix => break,
                _ => {
                    self.flush = self.flush.max(end);
                    self.committed.pop_front();
                }
            }
        }
        if self.is_idle() {
            self.flush = self.flush.max(self.received);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_only_fully_acknowledged_prefixes() {
        let mut w = Watermark::new(Lsn(10));
        // T1 in b1, T2 in b1+b2, T3 in b3.
        w.begin();
        let b1 = w.peek_batch_id();
        w.event_in_batch(b1);
        w.commit(Lsn(100));
        w.begin();
        w.event_in_batch(b1);
        assert_eq!(w.next_batch_id(), b1);
        let b2 = w.peek_batch_id();
        w.event_in_batch(b2);
        w.commit(Lsn(200));
        assert_eq!(w.next_batch_id(), b2);
        w.begin();
        let b3 = w.peek_batch_id();
        w.event_in_batch(b3);
        w.commit(Lsn(300));
        assert_eq!(w.next_batch_id(), b3);

        w.ack(b3);
        assert_eq!(w.flush_lsn(), Lsn(10), "b3 acked but b1, b2 are not");
        w.ack(b1);
        assert_eq!(w.flush_lsn(), Lsn(100));
        w.ack(b2);
        assert_eq!(w.flush_lsn(), Lsn(300));
        assert!(w.is_idle());
    }

    #[test]
    fn idle_slot_advances_to_received_but_not_inside_a_transaction() {
        let mut w = Watermark::new(Lsn(10));
        w.observe_wal_end(Lsn(50));
        assert_eq!(w.flush_lsn(), Lsn(50));
        w.begin();
        w.observe_wal_end(Lsn(80));
        assert_eq!(w.flush_lsn(), Lsn(50));
        // A transaction with only ignored events completes at commit.
        w.commit(Lsn(90));
        assert_eq!(w.flush_lsn(), Lsn(90));
        w.observe_wal_end(Lsn(95));
        assert_eq!(w.flush_lsn(), Lsn(95));
    }

    #[test]
    fn never_moves_backwards() {
        let mut w = Watermark::new(Lsn(500));
        w.begin();
        w.commit(Lsn(100));
        assert_eq!(w.flush_lsn(), Lsn(500));
        w.observe_wal_end(Lsn(1));
        assert_eq!(w.flush_lsn(), Lsn(500));
    }

    #[test]
    fn pending_open_batch_blocks_idle_advance() {
        let mut w = Watermark::new(Lsn(0));
        w.begin();
        let b = w.peek_batch_id();
        w.event_in_batch(b);
        w.commit(Lsn(40));
        w.observe_wal_end(Lsn(60));
        assert_eq!(w.flush_lsn(), Lsn(0), "batch not dispatched yet");
        let id = w.next_batch_id();
        w.ack(id);
        assert_eq!(w.flush_lsn(), Lsn(60));
    }
}
