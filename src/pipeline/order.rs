//! Write order across batches in flight.
//!
//! The fold skips an event whose stream document already holds it (that
//! document decides whether the event was folded or dead-lettered), so a
//! stream document must never reach Convex before the other documents of
//! its events. Within one batch the stream documents are sent last. Across
//! batches the only document of an event that a later batch may not rewrite
//! is the thread of a `run.created`; a later batch rewrites the run (with
//! that event in its state), so it must wait for the earlier batch:
//!
//! ```text
//!  batch A: threads:t (run.created of r), runs:r ─┐ in flight
//!  batch B: runs:r (r's next events) ── after(A) ─┘ sent once A is answered
//! ```
//!
//! Only the newest such batch is kept per run: a batch that folds another
//! `run.created` of the same run takes the entry over and itself waits for
//! the batch it displaced (so waiting for the newest covers all of them).

use tokio::sync::watch;

use crate::pipeline::watermark::BatchId;
use crate::projection::{DocKey, DocKeyMap};

/// Completion signal of one batch: `true` once all its writes are answered.
pub(crate) type Done = watch::Receiver<bool>;

#[derive(Default)]
pub(crate) struct WriteOrder {
    /// Runs whose `run.created` reached a thread in a batch still in flight.
    thread_written: DocKeyMap<(BatchId, Done)>,
}

impl WriteOrder {
    /// The earlier batch that batch `id` must wait for before writing the
    /// stream document `primary`, if any.
    pub(crate) fn wait_for(&self, primary: &DocKey, id: BatchId) -> Option<(BatchId, Done)> {
        self.thread_written
            .get(primary)
            .filter(|(b, _)| *b != id)
            .map(|(b, done)| (*b, done.clone()))
    }

    /// Batch `id` writes the thread of `primary`'s `run.created`. Returns
    /// the earlier batch in flight that had done so for the same run, which
    /// batch `id` must now wait for: `id` takes its place here (later
    /// batches wait for `id`, which waits for it), so [`WriteOrder::wait_for`]
    /// no longer names it to `id` itself, yet `id`'s run holds that earlier
    /// `run.created` too.
    #[must_use = "the batch must wait for the batch it displaces"]
    pub(crate) fn wrote_thread(
        &mut self,
        primary: &DocKey,
        id: BatchId,
        done: &Done,
    ) -> Option<(BatchId, Done)> {
        self.thread_written
            .insert(primary.clone(), (id, done.clone()))
            .filter(|(b, _)| *b != id)
    }

    /// Batch `id` was answered: nothing needs to wait for it any more.
    pub(crate) fn acked(&mut self, id: BatchId) {
        self.thread_written.retain(|_, (b, _)| *b != id);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.thread_written.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::Table;

    #[test]
    fn a_later_batch_writing_the_run_waits_for_the_thread_batch_until_it_is_acked() {
        let run = DocKey::new(Table::Runs, "r1");
        let other = DocKey::new(Table::Runs, "r2");
        let (tx, rx) = watch::channel(false);
        let mut order = WriteOrder::default();
        assert!(order.wrote_thread(&run, 7, &rx).is_none());
        assert!(
            order.wait_for(&run, 7).is_none(),
            "same batch: sent in order"
        );
        let (b, mut done) = order.wait_for(&run, 8).expect("batch 8 waits");
        assert_eq!(b, 7);
        assert!(
            order.wait_for(&other, 8).is_none(),
            "other runs do not wait"
        );
        tx.send(true).expect("receiver alive");
        assert!(*done.borrow_and_update());
        order.acked(7);
        assert!(order.wait_for(&run, 8).is_none());
        assert!(order.is_empty());
    }

    #[test]
    fn the_newest_thread_batch_is_the_one_to_wait_for() {
        let run = DocKey::new(Table::Runs, "r1");
        let (_t1, r1) = watch::channel(false);
        let (_t2, r2) = watch::channel(false);
        let mut order = WriteOrder::default();
        assert!(order.wrote_thread(&run, 3, &r1).is_none());
        let _ = order.wrote_thread(&run, 5, &r2);
        assert_eq!(order.wait_for(&run, 6).map(|(b, _)| b), Some(5));
        order.acked(3);
        assert_eq!(order.thread_written.len(), 1);
    }

    #[test]
    fn a_batch_with_a_second_run_created_of_a_run_waits_for_the_first() {
        let run = DocKey::new(Table::Runs, "r1");
        let (_t1, r1) = watch::channel(false);
        let (_t2, r2) = watch::channel(false);
        let mut order = WriteOrder::default();
        assert!(order.wrote_thread(&run, 3, &r1).is_none());
        // Batch 5 folds another run.created of r1: it now owns the entry,
        // so wait_for(r1, 5) is None, and the displaced batch 3 is returned.
        let displaced = order.wrote_thread(&run, 5, &r2);
        assert_eq!(displaced.map(|(b, _)| b), Some(3));
        assert!(order.wait_for(&run, 5).is_none());
        // Twice in the same batch: nothing new to wait for.
        assert!(order.wrote_thread(&run, 5, &r2).is_none());
    }
}
