//! `workers` (key = workerId): lifecycle of one worker, following its
//! stream in `stream_seq` order.

use serde::{Deserialize, Serialize};

use super::event_type::EventType;
use super::runs::{opt_len, set_owner};
use super::validate::{EventData, Folding};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WorkerStatus {
    Requested,
    Running,
    Stopped,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerDoc {
    pub(crate) worker_id: String,
    pub(crate) owner_id: String,
    pub(crate) status: Option<WorkerStatus>,
    pub(crate) repo: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) requested_at: Option<i64>,
    pub(crate) started_at: Option<i64>,
    pub(crate) stopped_at: Option<i64>,
    pub(crate) last_heartbeat_at: Option<i64>,
    pub(crate) heartbeat_count: u64,
    pub(crate) event_count: u64,
    pub(crate) last_event_type: EventType,
    pub(crate) last_event_at: i64,
    pub(crate) last_stream_seq: i64,
}

impl WorkerDoc {
    pub(crate) fn empty(f: &Folding) -> Self {
        WorkerDoc {
            worker_id: f.entity_id().to_owned(),
            owner_id: String::new(),
            status: None,
            repo: None,
            host: None,
            error: None,
            requested_at: None,
            started_at: None,
            stopped_at: None,
            last_heartbeat_at: None,
            heartbeat_count: 0,
            event_count: 0,
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
            EventData::WorkerRequested { repo } => {
                self.status = Some(WorkerStatus::Requested);
                self.requested_at = Some(f.at);
                self.repo = repo.clone();
            }
            EventData::WorkerStarted { host } => {
                self.status = Some(WorkerStatus::Running);
                self.started_at = Some(f.at);
                self.host = Some(host.clone());
            }
            EventData::WorkerHeartbeat => {
                self.heartbeat_count += 1;
                self.last_heartbeat_at = Some(f.at);
            }
            EventData::WorkerStopped { reason } => {
                self.status = Some(WorkerStatus::Stopped);
                self.stopped_at = Some(f.at);
                self.error = reason.clone();
            }
            EventData::WorkerFailed { error } => {
                self.status = Some(WorkerStatus::Failed);
                self.stopped_at = Some(f.at);
                self.error = Some(error.clone());
            }
            _ => {}
        }
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        200 + self.worker_id.len()
            + self.owner_id.len()
            + opt_len(&self.repo)
            + opt_len(&self.host)
            + opt_len(&self.error)
    }
}
