//! `threads` (key = threadId): folded from `run.created` events of many
//! streams, so only commutative folds are used (count, max, arg-max by
//! `seq`): the result depends on the set of events, not on how streams
//! interleave.

use serde::{Deserialize, Serialize};

use super::validate::Folding;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadDoc {
    pub(crate) thread_id: String,
    pub(crate) run_count: u64,
    /// runId of the run.created with the greatest `seq`.
    pub(crate) latest_run_id: String,
    /// owner_id of that same event.
    pub(crate) owner_id: String,
    /// max `occurred_at` over the run.created events.
    pub(crate) updated_at: i64,
    /// The `seq` that set `latestRunId` (stored, needed for the arg-max).
    #[serde(default)]
    pub(crate) latest_run_seq: i64,
}

impl ThreadDoc {
    pub(crate) fn empty(thread_id: &str) -> Self {
        ThreadDoc {
            thread_id: thread_id.to_owned(),
            run_count: 0,
            latest_run_id: String::new(),
            owner_id: String::new(),
            updated_at: i64::MIN,
            latest_run_seq: i64::MIN,
        }
    }

    pub(crate) fn apply(&mut self, f: &Folding) {
        self.run_count += 1;
        self.updated_at = self.updated_at.max(f.at);
        if f.seq > self.latest_run_seq {
            self.latest_run_seq = f.seq;
            f.entity_id().clone_into(&mut self.latest_run_id);
            f.owner_id().clone_into(&mut self.owner_id);
        }
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        96 + self.thread_id.len() + self.latest_run_id.len() + self.owner_id.len()
    }
}
