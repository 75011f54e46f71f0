//! The open batch: planned events collected until the batch closes on max
//! events, max bytes, max distinct documents or max fill time.
//!
//! Events are only *planned* (validated, routed to document keys) while the
//! batch fills; they are folded when it closes, after one batched hydration
//! of every key the cache lacks. Several events on one key coalesce into one
//! write because the fold leaves one state per key.

use std::time::Instant;

use crate::projection::{DeadLetter, DocKeySet, Folding};

/// What one event contributes to a batch.
pub enum Item {
    Fold(Box<Folding>),
    DeadLetter(DeadLetter),
}

/// Bytes we charge per event on top of its payload (struct, strings, keys).
pub const EVENT_OVERHEAD: usize = 192;

/// Documents (and dead letters) one batch may touch: each is one index
/// lookup in `apply`, and Convex allows 4,096 index ranges read per
/// mutation. 3,000 keeps a quarter as margin and lets a backlog batch hold
/// enough events to coalesce (2,000 capped writes at ~290 per 1,000 events).
pub const MAX_DISTINCT_KEYS: usize = 3_000;

#[derive(Default)]
pub struct OpenBatch {
    pub items: Vec<Item>,
    pub keys: DocKeySet,
    pub dead_letters: usize,
    pub bytes: usize,
    pub opened_at: Option<Instant>,
    /// Commit times (µs since the Unix epoch) of the transactions with
    /// events in this batch, for commit → ack lag.
    pub commit_times_us: Vec<i64>,
}

impl OpenBatch {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    fn opened(&mut self) {
        if self.opened_at.is_none() {
            self.opened_at = Some(Instant::now());
        }
    }

    pub fn push_fold(&mut self, folding: Box<Folding>) {
        self.opened();
        self.bytes += folding.approx_bytes();
        for k in folding.keys() {
            if !self.keys.contains(k) {
                self.keys.insert(k.clone());
            }
        }
        self.items.push(Item::Fold(folding));
    }

    pub fn push_dead_letter(&mut self, dl: DeadLetter) {
        self.opened();
        self.bytes += EVENT_OVERHEAD + dl.payload.len();
        self.dead_letters += 1;
        self.items.push(Item::DeadLetter(dl));
    }

    pub fn note_commit_time(&mut self, us: i64) {
        if self.commit_times_us.last() != Some(&us) {
            self.commit_times_us.push(us);
        }
    }

    /// Full on any limit: events, bytes, distinct documents, dead letters.
    pub fn is_full(&self, max_events: usize, max_bytes: usize) -> bool {
        self.items.len() >= max_events
            || self.bytes >= max_bytes
            || self.keys.len() + self.dead_letters >= MAX_DISTINCT_KEYS
    }

    pub fn take(&mut self) -> OpenBatch {
        std::mem::take(self)
    }
}
