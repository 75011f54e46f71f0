//! What a streaming session is given and what it ends with, apart from
//! the session itself, so the steps it runs (the backfill, the history
//! copy) depend on these and not on the session.

use std::sync::Arc;

use crate::config::Settings;
use crate::metrics::{Health, Metrics};
use crate::secret::Secret;
use crate::sink::{ConvexClient, SinkError};
use crate::source::SourceError;

/// Where a service streams from and writes to.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) slot: String,
    pub(crate) generation: u64,
    /// Follow the active generation: end the session when a rebuild
    /// switched it, then move to the new generation's slot.
    pub(crate) follow_active: bool,
}

/// Why one streaming session ended.
pub(crate) enum SessionEnd {
    Shutdown,
    CaughtUp,
    /// A rebuild switched the active generation away from ours.
    Switched,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// What a session needs from the service around it.
pub(crate) struct SessionContext<'a> {
    pub(crate) settings: &'a Settings,
    pub(crate) db_url: &'a Secret,
    pub(crate) target: &'a Target,
    pub(crate) client: &'a Arc<ConvexClient>,
    pub(crate) metrics: &'a Metrics,
    pub(crate) health: &'a Health,
    pub(crate) exit_when_caught_up: bool,
    /// Who we are in the writer record (`host pid N`), for operators.
    pub(crate) holder: &'a str,
    /// Copy existing history before streaming on a generation's first start.
    pub(crate) backfill: bool,
}
