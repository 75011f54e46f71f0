//! Projection reducers: pure, deterministic folds of runtime events into the
//! Convex read models of design.md §3.
//!
//! ```text
//! RuntimeEvent ─plan()─▶ Ignored | DeadLetter | Fold(Folding{keys, data})
//!                                                  │ states of keys (cache / Convex / memory)
//!                                                  ▼
//!                        fold() ─▶ Folded{changed} | Skipped | DeadLetter(out_of_order)
//! ```
//!
//! Within a stream, documents follow `stream_seq` order; across streams only
//! `threads` is shared and it uses commutative folds (count, max, arg-max by
//! `seq`), so the final state depends only on the set of events. Every
//! document carries the position of the last event folded into it; events at
//! or below it are skipped, which makes replays harmless.

pub(crate) mod dead_letter;
pub(crate) mod doc;
pub(crate) mod event_type;
pub mod fold;
pub(crate) mod inboxes;
mod json;
mod json_head;
pub(crate) mod memory;
pub(crate) mod oversized;
pub mod payload;
pub(crate) mod runs;
pub(crate) mod table;
pub(crate) mod threads;
pub(crate) mod time;
pub(crate) mod timelines;
pub(crate) mod truncate;
pub(crate) mod validate;
pub(crate) mod workers;

pub(crate) use dead_letter::DeadLetter;
pub use doc::{Doc, DocError, Stored};
pub use fold::{fold, Changed, FoldOutcome, StateAccess};
pub(crate) use json::write_str as write_json_str;
pub use memory::MemoryFold;
pub use table::{ConvexTable, DocKey, DocKeyMap, Table};
pub use validate::{plan, Plan};
pub(crate) use validate::{plan_owned_with, FoldedEvent, Folding, KeyInterner};
#[cfg(test)]
pub(crate) use validate::{EventData, IgnoreReason};
#[cfg(test)]
pub(crate) use {json_head::JsonHead, threads::ThreadDoc};

#[cfg(test)]
mod tests;
