//! The complete in-memory fold: every event applied in the given order,
//! documents and dead letters kept in ordered maps (verify, tests, demo).

use std::collections::BTreeMap;

use super::dead_letter::DeadLetter;
use super::doc::Stored;
use super::fold::{fold, FoldOutcome, StateAccess};
use super::table::DocKey;
use super::validate::{plan, IgnoreReason, Plan};
use crate::event::RuntimeEvent;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryFold {
    pub docs: BTreeMap<DocKey, Stored>,
    /// By event seq; a dead letter seen again (replay) is kept once.
    pub dead_letters: BTreeMap<i64, DeadLetter>,
    /// All ignored events.
    pub ignored: u64,
    pub(crate) ignored_unknown_type: u64,
    pub(crate) ignored_prefix_mismatch: u64,
    /// Events folded into at least one document.
    pub folded: u64,
    /// Events every document already held.
    pub(crate) skipped: u64,
}

impl MemoryFold {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply(&mut self, ev: &RuntimeEvent) {
        match plan(ev) {
            Plan::Ignored(reason) => {
                self.ignored += 1;
                match reason {
                    IgnoreReason::UnknownType => self.ignored_unknown_type += 1,
                    IgnoreReason::PrefixMismatch => self.ignored_prefix_mismatch += 1,
                }
            }
            Plan::DeadLetter(dl) => self.dead_letter(dl),
            Plan::Fold(f) => {
                // Take the few documents out of the map, fold, put them back.
                let mut slots = Slots(
                    f.keys()
                        .iter()
                        .map(|k| match self.docs.remove_entry(k) {
                            Some((k, s)) => (k, Some(s)),
                            None => (k.clone(), None),
                        })
                        .collect(),
                );
                let outcome = fold(&f, &mut slots);
                for (k, s) in slots.0 {
                    if let Some(s) = s {
                        self.docs.insert(k, s);
                    }
                }
                match outcome {
                    FoldOutcome::Folded { .. } => self.folded += 1,
                    FoldOutcome::Skipped => self.skipped += 1,
                    FoldOutcome::DeadLetter(dl) => self.dead_letter(dl),
                }
            }
        }
    }

    /// Records a dead letter made outside planning (a row too large to
    /// read whole, `projection::oversized`).
    pub(crate) fn apply_dead_letter(&mut self, dl: DeadLetter) {
        self.dead_letter(dl);
    }

    fn dead_letter(&mut self, dl: DeadLetter) {
        self.dead_letters.entry(dl.event_seq).or_insert(dl);
    }
}

struct Slots(Vec<(DocKey, Option<Stored>)>);

impl StateAccess for Slots {
    /// The slots are the event's keys in order: `i` is the slot.
    fn get_mut(&mut self, i: usize, _key: &DocKey) -> &mut Option<Stored> {
        &mut self.0[i].1
    }
}
