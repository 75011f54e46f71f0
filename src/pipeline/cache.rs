//! The reducer state cache: the current document of every key the pipeline
//! has touched recently, bounded by bytes.
//!
//! A key is *pinned* while a batch that writes it is in flight: Convex may
//! not hold that state yet, so a pinned key is never evicted (and therefore
//! never re-read from Convex, which could return an older state). Unpinned
//! keys are evicted least-recently-used first when the byte budget is
//! exceeded; a miss is hydrated from Convex by the caller in one batched
//! `load` per table. An entry may hold `None`: "Convex has no such document".
//!
//! Forgetting (Convex rejected a key's write) respects pins the same way: a
//! key still pinned by another batch in flight is only marked *stale* and
//! dropped when its last pin goes, so the next read from Convex happens
//! after every write of it was answered, never over one still in flight.

use crate::projection::{DocKey, DocKeyMap, Stored, Table};
use crate::sink::limits;

/// What an entry costs beyond its document's own `approx_bytes` (which
/// already counts the document struct): its hash-table slot twice over
/// (a table runs between half and seven-eighths full), the boxed state
/// around the document, and the key's heap string. With 96 here the cache
/// held twice its budget in real memory (BENCHMARKS.md: a 16 MiB budget
/// cost ~18 MiB more RSS than an 8 MiB one).
const ENTRY_OVERHEAD: usize = 2 * std::mem::size_of::<(DocKey, Entry)>()
    + std::mem::size_of::<Option<Stored>>()
    - std::mem::size_of::<crate::projection::Doc>()
    + 32;

struct Entry {
    /// Boxed: the hash table then holds ~64-byte slots instead of ~300,
    /// so growing it (a new table beside the old one) is a small transient,
    /// not a ~15 MiB spike of peak RSS at 30k entries.
    state: Box<Option<Stored>>,
    bytes: usize,
    /// Batches in flight that write this key.
    pins: u32,
    used: u64,
    /// Forgotten while pinned: dropped when `pins` reaches 0.
    stale: bool,
}

pub(crate) struct StateCache {
    entries: DocKeyMap<Entry>,
    bytes: usize,
    budget: usize,
    tick: u64,
}

fn entry_bytes(key: &DocKey, state: &Option<Stored>) -> usize {
    ENTRY_OVERHEAD + key.key.len() + state.as_ref().map_or(0, |s| s.doc.approx_bytes())
}

impl StateCache {
    pub(crate) fn new(budget: usize) -> Self {
        StateCache {
            entries: DocKeyMap::default(),
            bytes: 0,
            budget,
            tick: 0,
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn contains(&self, key: &DocKey) -> bool {
        self.entries.contains_key(key)
    }

    /// The size of `key`'s cached document (0 when Convex has none), or
    /// `None` when the key is not cached.
    pub(crate) fn doc_bytes(&self, key: &DocKey) -> Option<usize> {
        self.entries
            .get(key)
            .map(|e| (*e.state).as_ref().map_or(0, |s| s.doc.approx_bytes()))
    }

    /// Inserts a state loaded from Convex. Never replaces a cached entry: the
    /// cache is at least as new as Convex for every key it holds.
    pub(crate) fn insert_loaded(&mut self, key: DocKey, state: Option<Stored>) {
        if self.entries.contains_key(&key) {
            return;
        }
        self.tick += 1;
        let bytes = entry_bytes(&key, &state);
        self.bytes += bytes;
        self.entries.insert(
            key,
            Entry {
                state: Box::new(state),
                bytes,
                pins: 0,
                used: self.tick,
                stale: false,
            },
        );
    }

    /// Lends a key's state out for a batch's fold (it must be given back
    /// with [`StateCache::give_back`] before anything else reads the cache;
    /// the entry holds `None` meanwhile). `None` if the key is not cached.
    pub(crate) fn lend(&mut self, key: &DocKey) -> Option<Option<Stored>> {
        self.entries
            .get_mut(key)
            .map(|e| std::mem::take(&mut *e.state))
    }

    /// Returns a lent state. When `written`, also pins the key (a write of
    /// it is about to be in flight) with [`StateCache::pin_and_touch`], and
    /// returns the state to serialise.
    pub(crate) fn give_back(
        &mut self,
        key: &DocKey,
        state: Option<Stored>,
        written: bool,
    ) -> Option<&Stored> {
        match self.entries.get_mut(key) {
            Some(e) => *e.state = state,
            // Not lent by us (cannot happen: nothing evicts between lend and
            // give back); keep the state all the same.
            None => self.insert_loaded(key.clone(), state),
        }
        if written {
            self.pin_and_touch(key)
        } else {
            None
        }
    }

    /// Pins a key about to be written, recomputes its byte charge and marks
    /// it used, in one lookup; returns its state.
    pub(crate) fn pin_and_touch(&mut self, key: &DocKey) -> Option<&Stored> {
        self.tick += 1;
        let e = self.entries.get_mut(key)?;
        e.pins += 1;
        e.used = self.tick;
        let bytes = entry_bytes(key, &e.state);
        self.bytes = self.bytes + bytes - e.bytes;
        e.bytes = bytes;
        (*e.state).as_ref()
    }

    /// One write of `key` was answered. The last answer of a stale key
    /// drops it (see [`StateCache::forget`]).
    pub(crate) fn unpin(&mut self, key: &DocKey) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.pins = e.pins.saturating_sub(1);
        if e.pins == 0 && e.stale {
            self.remove(key);
        }
    }

    /// Convex rejected a write of `key`: the next event should re-read what
    /// Convex really holds. Dropped now if no other batch in flight writes
    /// it; otherwise marked stale and dropped by its last
    /// [`StateCache::unpin`]: re-reading while a write is in flight could
    /// return a state older than that write, and the fold would then skip
    /// or lose its events. Until then the cached state stays the one every
    /// in-flight write was folded onto.
    pub(crate) fn forget(&mut self, key: &DocKey) {
        match self.entries.get_mut(key) {
            Some(e) if e.pins > 0 => e.stale = true,
            Some(_) => self.remove(key),
            None => {}
        }
    }

    fn remove(&mut self, key: &DocKey) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.bytes;
        }
    }

    /// Evicts unpinned entries, least recently used first, until the cache
    /// is at three quarters of its budget (so eviction runs rarely).
    pub(crate) fn evict_if_needed(&mut self) {
        if self.bytes <= self.budget {
            return;
        }
        let target = self.budget / 4 * 3;
        let mut candidates: Vec<(u64, DocKey)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.pins == 0)
            .map(|(k, e)| (e.used, k.clone()))
            .collect();
        candidates.sort_unstable_by_key(|(used, _)| *used);
        for (_, key) in candidates {
            if self.bytes <= target {
                break;
            }
            self.remove(&key);
        }
    }
}

/// Document sizes seen per table (loaded or written): the largest, to
/// size hydration loads within Convex's read limit, and the mean, to
/// charge a batch for the documents it will write before they are loaded.
#[derive(Default)]
pub(crate) struct DocSizes {
    seen: std::collections::HashMap<Table, Seen>,
}

#[derive(Default, Clone, Copy)]
struct Seen {
    largest: usize,
    total: u64,
    count: u64,
}

impl DocSizes {
    pub(crate) fn observe(&mut self, table: Table, bytes: usize) {
        let seen = self.seen.entry(table).or_default();
        seen.largest = seen.largest.max(bytes);
        seen.total = seen.total.saturating_add(bytes as u64);
        seen.count += 1;
    }

    /// Expected bytes of a document of `table` that is not cached: the mean
    /// seen so far, or the largest it can be before any was seen (the first
    /// batch of a cold start may meet the biggest documents). Used to close
    /// a batch on the bytes its writes will hold (`OpenBatch::doc_bytes`).
    pub(crate) fn typical(&self, table: Table) -> usize {
        match self.seen.get(&table) {
            Some(s) if s.count > 0 => (s.total / s.count) as usize,
            _ => limits::largest_doc_bytes(table),
        }
    }

    /// Expected bytes of one document of `table`: the largest seen so far,
    /// or, before any was seen, the largest it can be (a cold start may
    /// meet the biggest documents first). A load that still reads too much
    /// is split on Convex's answer, so the estimate may fall short.
    pub(crate) fn estimate(&self, table: Table) -> usize {
        self.seen
            .get(&table)
            .map(|s| s.largest)
            .unwrap_or_else(|| limits::largest_doc_bytes(table))
            .max(1)
    }

    /// Splits `keys` (sorted, so a table's keys are together) into the
    /// `load` calls that read them: at most `max_keys` per call, and no
    /// more than [`limits::MAX_LOAD_BYTES`] of documents at each table's
    /// estimate. Every call holds at least one key.
    pub(crate) fn load_calls<'k>(&self, keys: &'k [DocKey], max_keys: usize) -> Vec<&'k [DocKey]> {
        let mut calls = Vec::new();
        let (mut start, mut bytes) = (0, 0usize);
        for (i, k) in keys.iter().enumerate() {
            let size = self.estimate(k.table);
            let full =
                i - start >= max_keys.max(1) || bytes.saturating_add(size) > limits::MAX_LOAD_BYTES;
            if full && i > start {
                calls.push(&keys[start..i]);
                (start, bytes) = (i, 0);
            }
            bytes = bytes.saturating_add(size);
        }
        if start < keys.len() {
            calls.push(&keys[start..]);
        }
        calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Lsn, Position};
    use crate::projection::{Doc, ThreadDoc};

    fn thread(key: &str) -> Option<Stored> {
        Some(Stored {
            position: Position::new(Lsn(1), 0),
            doc: Doc::Thread(ThreadDoc::empty(key)),
        })
    }

    #[test]
    fn an_entry_is_charged_at_least_its_hash_table_slot() {
        let mut c = StateCache::new(usize::MAX);
        c.insert_loaded(DocKey::new(Table::Threads, "t1"), thread("t1"));
        assert!(c.bytes() >= std::mem::size_of::<(DocKey, Entry)>());
    }

    #[test]
    fn eviction_keeps_pinned_keys_and_stays_within_budget() {
        let mut c = StateCache::new(64 * 1024);
        let pinned = DocKey::new(Table::Threads, "t0");
        c.insert_loaded(pinned.clone(), thread("t0"));
        assert!(c.pin_and_touch(&pinned).is_some());
        for i in 1..1_000 {
            c.insert_loaded(DocKey::new(Table::Threads, format!("t{i}")), thread("t"));
        }
        c.evict_if_needed();
        assert!(c.bytes() <= 64 * 1024, "{} bytes", c.bytes());
        assert!(c.contains(&pinned));
        c.unpin(&pinned);
    }

    #[test]
    fn a_forgotten_key_stays_until_its_last_write_in_flight_is_answered() {
        let mut c = StateCache::new(usize::MAX);
        let key = DocKey::new(Table::Threads, "t1");
        c.insert_loaded(key.clone(), thread("t1"));
        // Two batches in flight write the key; the first is rejected.
        assert!(c.pin_and_touch(&key).is_some());
        assert!(c.pin_and_touch(&key).is_some());
        c.unpin(&key);
        c.forget(&key);
        assert!(c.contains(&key), "the second write is still in flight");
        c.unpin(&key);
        assert!(!c.contains(&key), "dropped once nothing is in flight");
        assert_eq!(c.bytes(), 0);
        // Unpinned: forgotten at once.
        c.insert_loaded(key.clone(), thread("t1"));
        c.forget(&key);
        assert!(!c.contains(&key));
    }

    #[test]
    fn loads_are_sized_by_the_largest_document_seen() {
        let keys = |table, n: usize| -> Vec<DocKey> {
            (0..n)
                .map(|i| DocKey::new(table, format!("k{i}")))
                .collect()
        };
        let lens = |calls: Vec<&[DocKey]>| calls.iter().map(|c| c.len()).collect::<Vec<_>>();
        let mut sizes = DocSizes::default();
        assert_eq!(
            lens(sizes.load_calls(&keys(Table::Runs, 300), 256)),
            [256, 44]
        );
        // Before any inbox was seen, each counts at its largest possible size.
        let cold = lens(sizes.load_calls(&keys(Table::Inboxes, 256), 256));
        assert!(
            cold.len() > 1 && cold[0] * sizes.estimate(Table::Inboxes) <= limits::MAX_LOAD_BYTES
        );
        sizes.observe(Table::Inboxes, 1_000);
        assert_eq!(
            lens(sizes.load_calls(&keys(Table::Inboxes, 256), 256)),
            [256]
        );
        sizes.observe(Table::Inboxes, 4 << 20);
        sizes.observe(Table::Inboxes, 10);
        assert_eq!(
            lens(sizes.load_calls(&keys(Table::Inboxes, 5), 256)),
            [2, 2, 1]
        );
        // A document larger than a call may read still gets a call of its own.
        sizes.observe(Table::Runs, 64 << 20);
        assert_eq!(lens(sizes.load_calls(&keys(Table::Runs, 2), 256)), [1, 1]);
    }

    #[test]
    fn one_call_loads_the_misses_of_every_table_when_they_fit() {
        let mut keys: Vec<DocKey> = Table::ALL
            .into_iter()
            .flat_map(|t| (0..10).map(move |i| DocKey::new(t, format!("k{i}"))))
            .collect();
        keys.sort_unstable();
        let mut sizes = DocSizes::default();
        for t in Table::ALL {
            sizes.observe(t, 2_000);
        }
        let calls = sizes.load_calls(&keys, 256);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].len(), 50);
        // The byte bound packs across tables: two large inboxes per call.
        sizes.observe(Table::Inboxes, limits::MAX_LOAD_BYTES / 2);
        let calls = sizes.load_calls(&keys, 256);
        let lens: Vec<usize> = calls.iter().map(|c| c.len()).collect();
        assert_eq!(lens.iter().sum::<usize>(), 50);
        assert!(lens.iter().all(|&n| n > 0));
        assert_eq!(lens.len(), 6, "{lens:?}");
    }
}
