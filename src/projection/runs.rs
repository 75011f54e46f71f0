//! `runs` (key = runId): status, counters and times of one run, following
//! its stream in `stream_seq` order (design.md §3).

use serde::{Deserialize, Serialize};

use super::event_type::EventType;
use super::validate::{EventData, Folding, MAX_TOKENS};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RunStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDoc {
    pub(crate) run_id: String,
    pub(crate) owner_id: String,
    pub(crate) thread_id: Option<String>,
    pub(crate) title: Option<String>,
    pub(crate) status: Option<RunStatus>,
    pub(crate) step_count: u64,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) event_count: u64,
    pub(crate) error: Option<String>,
    pub(crate) created_at: Option<i64>,
    pub(crate) started_at: Option<i64>,
    pub(crate) finished_at: Option<i64>,
    pub(crate) last_event_type: EventType,
    pub(crate) last_event_at: i64,
    pub(crate) last_stream_seq: i64,
}

impl RunDoc {
    /// The document before any event (overwritten by the first fold).
    pub(crate) fn empty(f: &Folding) -> Self {
        RunDoc {
            run_id: f.entity_id().to_owned(),
            owner_id: String::new(),
            thread_id: None,
            title: None,
            status: None,
            step_count: 0,
            input_tokens: 0,
            output_tokens: 0,
            event_count: 0,
            error: None,
            created_at: None,
            started_at: None,
            finished_at: None,
            last_event_type: f.event_type,
            last_event_at: f.at,
            last_stream_seq: i64::MIN,
        }
    }

    pub(crate) fn apply(&mut self, f: &Folding) {
        set_owner(&mut self.owner_id, f.owner_id());
        self.event_count += 1;
        self.last_event_type = f.event_type;
        self.last_event_at = f.at;
        self.last_stream_seq = f.stream_seq;
        match &f.data {
            EventData::RunCreated { thread_id, title } => {
                self.thread_id = Some(thread_id.clone());
                self.title = title.clone();
                self.status = Some(RunStatus::Queued);
                self.created_at = Some(f.at);
            }
            EventData::RunStarted => {
                self.status = Some(RunStatus::Running);
                self.started_at = Some(f.at);
            }
            EventData::RunStep => self.step_count += 1,
            EventData::RunUsage {
                input_tokens,
                output_tokens,
            } => {
                // Sums stay exact in a float64 (Convex number): saturate at 2^53-1.
                self.input_tokens = self
                    .input_tokens
                    .saturating_add(*input_tokens)
                    .min(MAX_TOKENS);
                self.output_tokens = self
                    .output_tokens
                    .saturating_add(*output_tokens)
                    .min(MAX_TOKENS);
            }
            EventData::RunCompleted => {
                self.status = Some(RunStatus::Completed);
                self.finished_at = Some(f.at);
            }
            EventData::RunFailed { error } => {
                self.status = Some(RunStatus::Failed);
                self.finished_at = Some(f.at);
                self.error = Some(error.clone());
            }
            EventData::RunCancelled { reason } => {
                self.status = Some(RunStatus::Cancelled);
                self.finished_at = Some(f.at);
                self.error = reason.clone();
            }
            _ => {}
        }
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        200 + self.run_id.len()
            + self.owner_id.len()
            + opt_len(&self.thread_id)
            + opt_len(&self.title)
            + opt_len(&self.error)
    }
}

pub(crate) fn opt_len(s: &Option<String>) -> usize {
    s.as_ref().map_or(0, String::len)
}

/// `ownerId` follows the last event; reuse the allocation when unchanged.
pub(crate) fn set_owner(owner: &mut String, new: &str) {
    if owner != new {
        new.clone_into(owner);
    }
}
