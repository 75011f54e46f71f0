//! The event types of design.md §2 and the stream family each belongs to.

use serde::{Deserialize, Serialize};

use super::table::Table;

/// A projected event type. Serialised as its wire name (`"run.created"`),
/// which is how `lastEventType` and timeline `type` are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum EventType {
    #[serde(rename = "run.created")]
    RunCreated,
    #[serde(rename = "run.started")]
    RunStarted,
    #[serde(rename = "run.step")]
    RunStep,
    #[serde(rename = "run.usage")]
    RunUsage,
    #[serde(rename = "run.completed")]
    RunCompleted,
    #[serde(rename = "run.failed")]
    RunFailed,
    #[serde(rename = "run.cancelled")]
    RunCancelled,
    #[serde(rename = "worker.requested")]
    WorkerRequested,
    #[serde(rename = "worker.started")]
    WorkerStarted,
    #[serde(rename = "worker.heartbeat")]
    WorkerHeartbeat,
    #[serde(rename = "worker.stopped")]
    WorkerStopped,
    #[serde(rename = "worker.failed")]
    WorkerFailed,
    #[serde(rename = "notification.created")]
    NotificationCreated,
    #[serde(rename = "notification.read")]
    NotificationRead,
}

/// The stream family: which prefix the stream id must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    Run,
    Worker,
    User,
}

impl Family {
    pub(crate) const fn prefix(self) -> &'static str {
        match self {
            Family::Run => "run:",
            Family::Worker => "worker:",
            Family::User => "user:",
        }
    }

    /// The table of the stream's own document (the one holding `lastStreamSeq`).
    pub(crate) const fn primary_table(self) -> Table {
        match self {
            Family::Run => Table::Runs,
            Family::Worker => Table::Workers,
            Family::User => Table::Inboxes,
        }
    }
}

impl EventType {
    #[cfg(test)]
    pub(crate) const ALL: [EventType; 14] = {
        use EventType::*;
        [
            RunCreated,
            RunStarted,
            RunStep,
            RunUsage,
            RunCompleted,
            RunFailed,
            RunCancelled,
            WorkerRequested,
            WorkerStarted,
            WorkerHeartbeat,
            WorkerStopped,
            WorkerFailed,
            NotificationCreated,
            NotificationRead,
        ]
    };

    pub(crate) fn parse(s: &str) -> Option<EventType> {
        use EventType::*;
        Some(match s {
            "run.created" => RunCreated,
            "run.started" => RunStarted,
            "run.step" => RunStep,
            "run.usage" => RunUsage,
            "run.completed" => RunCompleted,
            "run.failed" => RunFailed,
            "run.cancelled" => RunCancelled,
            "worker.requested" => WorkerRequested,
            "worker.started" => WorkerStarted,
            "worker.heartbeat" => WorkerHeartbeat,
            "worker.stopped" => WorkerStopped,
            "worker.failed" => WorkerFailed,
            "notification.created" => NotificationCreated,
            "notification.read" => NotificationRead,
            _ => return None,
        })
    }

    pub(crate) const fn as_str(self) -> &'static str {
        use EventType::*;
        match self {
            RunCreated => "run.created",
            RunStarted => "run.started",
            RunStep => "run.step",
            RunUsage => "run.usage",
            RunCompleted => "run.completed",
            RunFailed => "run.failed",
            RunCancelled => "run.cancelled",
            WorkerRequested => "worker.requested",
            WorkerStarted => "worker.started",
            WorkerHeartbeat => "worker.heartbeat",
            WorkerStopped => "worker.stopped",
            WorkerFailed => "worker.failed",
            NotificationCreated => "notification.created",
            NotificationRead => "notification.read",
        }
    }

    pub(crate) const fn family(self) -> Family {
        use EventType::*;
        match self {
            RunCreated | RunStarted | RunStep | RunUsage | RunCompleted | RunFailed
            | RunCancelled => Family::Run,
            WorkerRequested | WorkerStarted | WorkerHeartbeat | WorkerStopped | WorkerFailed => {
                Family::Worker
            }
            NotificationCreated | NotificationRead => Family::User,
        }
    }
}
