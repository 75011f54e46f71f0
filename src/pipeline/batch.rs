//! The open batch: planned events collected until the batch closes on max
//! events, max bytes, max distinct documents or max fill time.
//!
//! The bytes a batch holds are its events *and* the documents it will
//! write: one event can rewrite a 200 KB inbox, so a batch of small events
//! may serialise hundreds of MB. Each document is charged once, when the
//! batch first numbers it, at its cached size or the table's typical size
//! (`DocSizes::typical`), and the batch is full when either total reaches
//! the byte limit.
//!
//! Events are only *planned* (validated, routed to document keys) while the
//! batch fills; they are folded when it closes, after one batched hydration
//! of every key the cache lacks. Several events on one key coalesce into one
//! write because the fold leaves one state per key.

use std::time::Instant;

use crate::projection::{DeadLetter, DocKey, DocKeyMap, Folding, KeyInterner};

/// The most documents one event touches (run.created: run, timeline, thread).
pub(crate) const MAX_KEYS_PER_EVENT: usize = 3;

/// What one event contributes to a batch.
pub(crate) enum Item {
    Fold {
        folding: Box<Folding>,
        /// Batch ids of `folding.keys()`, in order: the fold at close
        /// indexes the batch's states by these instead of hashing keys.
        ids: [u32; MAX_KEYS_PER_EVENT],
        /// `folding.approx_bytes()`, computed once.
        bytes: usize,
    },
    /// Boxed: inline, a dead letter would make every item ~4x larger.
    DeadLetter(Box<DeadLetter>),
}

/// Bytes we charge per event on top of its payload (struct, strings, keys).
pub(crate) const EVENT_OVERHEAD: usize = 192;

/// Documents (and dead letters) one batch may touch: two mutations' worth
/// (each costs index ranges in `apply`, `sink::limits`; the dispatch sends
/// a batch in mutations of at most [`crate::sink::limits::MAX_KEYS_PER_APPLY`]).
/// A drain writes ~0.2 documents per event, so one mutation's worth would
/// close its batches at ~7k events and coalesce 15 % fewer writes than the
/// ~12k a catch-up batch may hold (BENCHMARKS.md, session 10).
pub(crate) const MAX_DISTINCT_KEYS: usize = 2 * crate::sink::limits::MAX_KEYS_PER_APPLY;

#[derive(Default)]
pub(crate) struct OpenBatch {
    pub(crate) items: Vec<Item>,
    /// Every document of the batch, numbered in order of first use.
    pub(crate) keys: DocKeyMap<u32>,
    /// The same documents by number.
    pub(crate) key_list: Vec<DocKey>,
    /// The key strings of this batch's events, shared (planning interns
    /// into it).
    pub(crate) key_names: KeyInterner,
    pub(crate) dead_letters: usize,
    /// Events' bytes (payloads and overhead).
    pub(crate) bytes: usize,
    /// Expected serialised bytes of every document of the batch.
    pub(crate) doc_bytes: usize,
    pub(crate) opened_at: Option<Instant>,
    /// Commit times (µs since the Unix epoch) of the transactions with
    /// events in this batch, for commit → ack lag.
    pub(crate) commit_times_us: Vec<i64>,
}

impl OpenBatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    fn opened(&mut self) {
        if self.opened_at.is_none() {
            self.opened_at = Some(Instant::now());
        }
    }

    /// Adds a planned event of `bytes` (its `approx_bytes`); `doc_size`
    /// gives the expected size of a document the batch did not hold yet.
    pub(crate) fn push_fold(
        &mut self,
        folding: Box<Folding>,
        bytes: usize,
        mut doc_size: impl FnMut(&DocKey) -> usize,
    ) {
        self.opened();
        self.bytes += bytes;
        let mut ids = [u32::MAX; MAX_KEYS_PER_EVENT];
        debug_assert!(folding.keys().len() <= MAX_KEYS_PER_EVENT);
        for (slot, k) in ids.iter_mut().zip(folding.keys()) {
            *slot = match self.keys.get(k) {
                Some(&id) => id,
                None => {
                    let id = self.key_list.len() as u32;
                    self.doc_bytes += doc_size(k);
                    self.keys.insert(k.clone(), id);
                    self.key_list.push(k.clone());
                    id
                }
            };
        }
        self.items.push(Item::Fold {
            folding,
            ids,
            bytes,
        });
    }

    pub(crate) fn push_dead_letter(&mut self, dl: DeadLetter) {
        self.opened();
        self.bytes += EVENT_OVERHEAD + dl.payload.len();
        self.dead_letters += 1;
        self.items.push(Item::DeadLetter(Box::new(dl)));
    }

    pub(crate) fn note_commit_time(&mut self, us: i64) {
        if self.commit_times_us.last() != Some(&us) {
            self.commit_times_us.push(us);
        }
    }

    /// Full on any limit: events, event bytes, document bytes, distinct
    /// documents, dead letters.
    pub(crate) fn is_full(&self, max_events: usize, max_bytes: usize) -> bool {
        self.items.len() >= max_events
            || self.bytes >= max_bytes
            || self.doc_bytes >= max_bytes
            || self.keys.len() + self.dead_letters >= MAX_DISTINCT_KEYS
    }

    /// The batch, leaving an empty one sized like it (a drain fills batch
    /// after batch of the same size: growing each from empty copied it
    /// ~14 times).
    pub(crate) fn take(&mut self) -> OpenBatch {
        let sized = OpenBatch {
            items: Vec::with_capacity(self.items.len()),
            ..OpenBatch::default()
        };
        std::mem::replace(self, sized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_stays_small() {
        // A catch-up batch holds ~12k items: each byte here is ~12 KB of
        // memory per batch that no budget counts.
        assert!(
            std::mem::size_of::<Item>() <= 40,
            "{}",
            std::mem::size_of::<Item>()
        );
    }
}
