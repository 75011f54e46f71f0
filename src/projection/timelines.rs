//! `timelines` (key = runId): the newest 50 run events, oldest first, and
//! the count of all folded run events.

use serde::{Deserialize, Serialize};

use super::event_type::EventType;
use super::runs::set_owner;
use super::validate::Folding;

/// Items kept per timeline.
pub(crate) const TIMELINE_CAP: usize = 50;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TimelineItem {
    pub(crate) stream_seq: i64,
    #[serde(rename = "type")]
    pub(crate) event_type: EventType,
    pub(crate) at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineDoc {
    pub(crate) run_id: String,
    pub(crate) owner_id: String,
    pub(crate) total: u64,
    pub(crate) items: Vec<TimelineItem>,
}

impl TimelineDoc {
    pub(crate) fn empty(f: &Folding) -> Self {
        TimelineDoc {
            run_id: f.entity_id().to_owned(),
            owner_id: String::new(),
            total: 0,
            items: Vec::new(),
        }
    }

    pub(crate) fn apply(&mut self, f: &Folding) {
        set_owner(&mut self.owner_id, f.owner_id());
        self.total += 1;
        if self.items.len() >= TIMELINE_CAP {
            let drop = self.items.len() + 1 - TIMELINE_CAP;
            self.items.drain(..drop);
        }
        self.items.push(TimelineItem {
            stream_seq: f.stream_seq,
            event_type: f.event_type,
            at: f.at,
        });
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        96 + self.run_id.len() + self.owner_id.len() + self.items.len() * 40
    }
}
