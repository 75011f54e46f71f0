//! Folding a planned event into its documents, with the position skip of
//! design.md §4 and the out-of-order rule of §3.
//!
//! ```text
//! Folding ─▶ primary doc (runs / workers / inboxes) position >= event?  ──yes──▶ Skipped
//!            primary lastStreamSeq >= event stream_seq?
//!              a streamed event, primary at a snapshot position (0, seq)? ─yes─▶ Skipped
//!              else                                                     ──yes──▶ DeadLetter(out_of_order)
//!            for each key: doc position >= event? skip : fold, position := event
//! ```
//!
//! Why a snapshot position skips: a history copy (backfill on first start)
//! folds every event visible in a snapshot taken after the slot was made,
//! so the events committed between the two arrive again from the stream.
//! `(stream_id, stream_seq)` is unique and one writer appends each stream
//! in order, so while the primary still holds the copy's position, a
//! streamed event whose `stream_seq` it already counts is that overlap,
//! already folded. (Within one copy both positions are snapshot positions,
//! and an event out of order is a dead letter as anywhere else.)
//!
//! Why the whole event is skipped when its primary document already holds
//! it: the primary decides whether the event was folded or dead-lettered
//! (out of order). Folding a secondary (a thread) on replay of an event that
//! was dead-lettered would count it once too often. Every document an event
//! touches is written in one atomic apply, so "primary holds it" implies
//! "all its documents hold it". If writes of one event ever have to be split
//! across calls, write the primary documents last.

use super::dead_letter::DeadLetter;
use super::doc::{Doc, Stored};
use super::table::DocKey;
use super::validate::Folding;

/// Gives the fold the current state of a document (`None`: does not exist).
pub trait StateAccess {
    /// The state of `key`, which is `keys()[i]` of the event being folded
    /// (a caller that resolved the event's keys up front indexes by `i` and
    /// need not hash `key` again).
    fn get_mut(&mut self, i: usize, key: &DocKey) -> &mut Option<Stored>;
}

/// Which of an event's keys ([`Folding::keys`]) a fold changed, as a bit
/// set over their indexes (an event has at most three).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed(u8);

impl Changed {
    #[cfg(test)]
    /// Every one of the first `n` keys.
    pub(crate) fn first(n: usize) -> Self {
        Changed(((1u16 << n) - 1) as u8)
    }

    pub(crate) fn contains(self, i: usize) -> bool {
        i < 8 && self.0 & (1 << i) != 0
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The indexes, in order.
    pub(crate) fn indexes(self) -> impl Iterator<Item = usize> {
        (0..8).filter(move |&i| self.contains(i))
    }

    /// The changed keys of `f`.
    pub fn keys(self, f: &Folding) -> impl Iterator<Item = &DocKey> {
        f.keys()
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.contains(*i))
            .map(|(_, k)| k)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum FoldOutcome {
    /// Documents whose state changed; their position is now the event's.
    Folded { changed: Changed },
    /// Every document already held the event (replay).
    Skipped,
    /// Nothing folded: the event is a dead letter (`out_of_order`).
    DeadLetter(DeadLetter),
}

/// A streamed event meeting a document last written by a history copy.
fn is_copy_overlap(stored: &Stored, f: &Folding) -> bool {
    stored.position.commit_lsn.0 == 0 && f.position.commit_lsn.0 != 0
}

/// Folds one planned event. `states` must answer for every key of
/// [`Folding::keys`].
pub fn fold(f: &Folding, states: &mut dyn StateAccess) -> FoldOutcome {
    let keys = f.keys();
    let Some(primary) = keys.first() else {
        return FoldOutcome::Skipped;
    };
    if let Some(stored) = states.get_mut(0, primary) {
        if stored.position >= f.position {
            return FoldOutcome::Skipped;
        }
        if let Some(last) = stored.doc.last_stream_seq() {
            if f.stream_seq <= last && is_copy_overlap(stored, f) {
                return FoldOutcome::Skipped;
            }
            if f.stream_seq <= last {
                return FoldOutcome::DeadLetter(f.dead_letter(format!(
                    "out_of_order: stream_seq {} is not after lastStreamSeq {last} of {}",
                    f.stream_seq, primary
                )));
            }
        }
    }
    debug_assert!(keys.len() <= 8);
    let mut changed = Changed::default();
    for (i, key) in keys.iter().enumerate() {
        let slot = states.get_mut(i, key);
        match slot {
            Some(stored) if stored.position >= f.position => continue,
            Some(stored) => {
                stored.doc.apply(key, f);
                stored.position = f.position;
            }
            None => {
                let mut doc = Doc::empty(key, f);
                doc.apply(key, f);
                *slot = Some(Stored {
                    position: f.position,
                    doc,
                });
            }
        }
        changed.0 |= 1 << i;
    }
    if changed.is_empty() {
        FoldOutcome::Skipped
    } else {
        FoldOutcome::Folded { changed }
    }
}
