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

pub mod dead_letter;
pub mod doc;
pub mod event_type;
pub mod fold;
pub mod inboxes;
mod json;
mod json_head;
pub mod memory;
pub mod oversized;
pub mod payload;
pub mod runs;
pub mod table;
pub mod threads;
pub mod time;
pub mod timelines;
pub mod truncate;
pub mod validate;
pub mod workers;

pub use dead_letter::DeadLetter;
pub use doc::{Doc, DocError, Stored};
pub use event_type::{EventType, Family};
pub use fold::{fold, Changed, FoldOutcome, StateAccess};
pub use inboxes::{InboxDoc, InboxItem};
pub use json::write_str as write_json_str;
pub use json_head::JsonHead;
pub use memory::MemoryFold;
pub use runs::{RunDoc, RunStatus};
pub use table::{ConvexTable, DocKey, DocKeyMap, Table};
pub use threads::ThreadDoc;
pub use timelines::{TimelineDoc, TimelineItem};
pub use validate::{
    plan, plan_owned_with, EventData, FoldedEvent, Folding, IgnoreReason, KeyInterner, Plan,
};
pub use workers::{WorkerDoc, WorkerStatus};

#[cfg(test)]
mod tests;
