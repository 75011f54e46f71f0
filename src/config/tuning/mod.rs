//! The tuning section: batch limits, memory budgets and timers of the
//! pipeline. Each `DEFAULT_*` says why it is that value; [`Tuning::validate`]
//! refuses the values the pipeline cannot run with.

use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::{with_default, ConfigError, Layers};

/// A bound for bursts rather than the usual reason a batch closes: live
/// traffic closes batches on the fill timer long before this (about 10
/// events at 2k events/s, BENCHMARKS.md). While draining a backlog a batch
/// may hold three times as many, so that several events per document
/// coalesce into one write.
pub(crate) const DEFAULT_BATCH_MAX_EVENTS: usize = 4096;

/// An eighth of the 16 MiB of arguments Convex accepts per function call
/// (`FUNCTION_MAX_ARGS_SIZE`): a batch's JSON is larger than the bytes its
/// events are charged, and a request over this limit is split anyway.
pub(crate) const DEFAULT_BATCH_MAX_BYTES: usize = 2 * 1024 * 1024;

/// Half of Convex's 16 MiB of arguments per mutation; the other half is
/// margin for the JSON encoding of what the events are charged.
pub(crate) const MAX_BATCH_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Latency first: an event waits at most this long for others to share its
/// mutation. Longer trades latency for CPU (the per-batch cost dominates
/// live traffic, BENCHMARKS.md); 0 closes a batch after every read.
pub(crate) const DEFAULT_BATCH_FILL: Duration = Duration::from_millis(5);

/// Keeps the Convex round trip off the pipeline's critical path: while
/// batches are applied the next ones are folded and sent. Each holds its
/// events until acknowledged, within [`DEFAULT_INFLIGHT_BYTES`].
pub(crate) const DEFAULT_MAX_INFLIGHT_BATCHES: usize = 4;

/// Room for four full batches in flight plus a catch-up batch (three times
/// [`DEFAULT_BATCH_MAX_BYTES`]) filling, so reading does not pause in
/// normal operation, while draining 1M events peaks near 51 MiB RSS
/// (BENCHMARKS.md).
pub(crate) const DEFAULT_INFLIGHT_BYTES: usize = 16 * 1024 * 1024;

/// The reducer state cache's budget in real memory (each entry is charged
/// its hash-table slot as well as its document): the budget the RSS
/// figures in BENCHMARKS.md were measured with.
pub(crate) const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Progress reaches Postgres once a second, so the slot's retained WAL
/// trails acknowledgements by about a second; a status is one small
/// message.
pub(crate) const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Longest status interval. While reading is paused (backpressure) the
/// timer's status is the only sign of life the walsender gets, and it drops
/// a connection silent for `wal_sender_timeout` (60 s by default): half of
/// that leaves one missed tick of margin.
pub(crate) const MAX_STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// Longer than a healthy mutation can take: Convex allows 1 s of user time
/// plus 15 s of system time per mutation (`DATABASE_UDF_USER_TIMEOUT`,
/// `DATABASE_UDF_SYSTEM_TIMEOUT`); the rest is margin for the network and
/// queueing. A stuck request is retried (the position guard makes a retry
/// harmless).
pub(crate) const DEFAULT_CONVEX_TIMEOUT: Duration = Duration::from_secs(30);

/// Shortest Convex timeout: Convex lets a mutation run 1 s of user time,
/// so a shorter timeout abandons, and retries forever, writes that would
/// succeed.
pub(crate) const MIN_CONVEX_TIMEOUT: Duration = Duration::from_secs(1);

/// A row's WAL message above this is not read whole: its first 64 KiB
/// are kept and it becomes a dead letter (`event_too_large`). Far above a
/// real event (payload texts are cut to a few KiB when folded) and a
/// quarter of the default memory budget, so one row cannot exhaust it.
pub(crate) const DEFAULT_MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Smallest maximum event size: the kept start of an oversized message.
pub(crate) const MIN_MAX_EVENT_BYTES: usize = crate::source::conn::OVERSIZED_PREFIX;

/// The `--help` heading of this section (per argument: a struct-wide
/// heading would carry over to the flags declared after the section).
const HEADING: &str = "Tuning";

#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct TuningArgs {
    #[arg(long, help_heading = HEADING, env = "PROJECTOR_BATCH_MAX_EVENTS", help = with_default(
        "Close a batch at this many events; three times as many while draining a backlog \
         (events committed over 1 s before they were sent)",
        DEFAULT_BATCH_MAX_EVENTS,
    ))]
    pub(crate) batch_max_events: Option<usize>,

    #[arg(long, help_heading = HEADING, env = "PROJECTOR_BATCH_MAX_BYTES", help = with_default(
        format!(
            "Close a batch at this many bytes of events (three times as many while draining a \
             backlog); also the largest mutation sent, at most {MAX_BATCH_MAX_BYTES} (half of \
             Convex's 16 MiB)"
        ),
        DEFAULT_BATCH_MAX_BYTES,
    ))]
    pub(crate) batch_max_bytes: Option<usize>,

    #[arg(long, help_heading = HEADING, env = "PROJECTOR_BATCH_FILL_MS", help = with_default(
        "Close a batch this many milliseconds after its first event (at least 250 while \
         draining a backlog); 0 closes it after every read",
        DEFAULT_BATCH_FILL.as_millis(),
    ))]
    pub(crate) batch_fill_ms: Option<u64>,

    #[arg(long, help_heading = HEADING, env = "PROJECTOR_MAX_INFLIGHT_BATCHES", help = with_default(
        "Batches in flight to Convex at once",
        DEFAULT_MAX_INFLIGHT_BATCHES,
    ))]
    pub(crate) max_inflight_batches: Option<usize>,

    #[arg(long, help_heading = HEADING, env = "PROJECTOR_INFLIGHT_BYTES", help = with_default(
        "Byte budget of events read but not yet acknowledged, at least --batch-max-bytes; \
         reading pauses while it is full (backpressure)",
        DEFAULT_INFLIGHT_BYTES,
    ))]
    pub(crate) inflight_bytes: Option<usize>,

    #[arg(long, help_heading = HEADING, env = "PROJECTOR_CACHE_BYTES", help = with_default(
        "Byte budget of the reducer state cache, in real memory (each entry is charged its \
         hash-table slot as well as its document)",
        DEFAULT_CACHE_BYTES,
    ))]
    pub(crate) cache_bytes: Option<usize>,

    #[arg(long, help_heading = HEADING, env = "PROJECTOR_STATUS_INTERVAL_MS", help = with_default(
        format!(
            "Interval of standby status updates to Postgres in milliseconds, 1 to {} (well \
             under wal_sender_timeout, 60 s by default)",
            MAX_STATUS_INTERVAL.as_millis()
        ),
        DEFAULT_STATUS_INTERVAL.as_millis(),
    ))]
    pub(crate) status_interval_ms: Option<u64>,

    #[arg(long, help_heading = HEADING, env = "PROJECTOR_CONVEX_TIMEOUT_MS", help = with_default(
        format!(
            "Timeout of one Convex HTTP request in milliseconds, at least {} (a timed-out write \
             is retried; the position guard makes that harmless)",
            MIN_CONVEX_TIMEOUT.as_millis()
        ),
        DEFAULT_CONVEX_TIMEOUT.as_millis(),
    ))]
    pub(crate) convex_timeout_ms: Option<u64>,

    #[arg(long, help_heading = HEADING, env = "PROJECTOR_MAX_EVENT_BYTES", help = with_default(
        format!(
            "Largest runtime.events row read whole, in bytes of its WAL message, at least {}; \
             a larger one is read through without being held and becomes a dead letter \
             (event_too_large) keeping its start",
            MIN_MAX_EVENT_BYTES
        ),
        DEFAULT_MAX_EVENT_BYTES,
    ))]
    pub(crate) max_event_bytes: Option<usize>,
}

impl TuningArgs {
    /// Each value from the first layer that sets it, else its default.
    pub(super) fn resolve(l: &Layers<'_, Self>) -> Tuning {
        let ms = Duration::from_millis;
        Tuning {
            batch_max_events: l
                .get(|t| &t.batch_max_events)
                .unwrap_or(DEFAULT_BATCH_MAX_EVENTS),
            batch_max_bytes: l
                .get(|t| &t.batch_max_bytes)
                .unwrap_or(DEFAULT_BATCH_MAX_BYTES),
            batch_fill: l.get(|t| &t.batch_fill_ms).map_or(DEFAULT_BATCH_FILL, ms),
            max_inflight_batches: (l.get(|t| &t.max_inflight_batches))
                .unwrap_or(DEFAULT_MAX_INFLIGHT_BATCHES),
            inflight_bytes: l
                .get(|t| &t.inflight_bytes)
                .unwrap_or(DEFAULT_INFLIGHT_BYTES),
            cache_bytes: l.get(|t| &t.cache_bytes).unwrap_or(DEFAULT_CACHE_BYTES),
            status_interval: (l.get(|t| &t.status_interval_ms)).map_or(DEFAULT_STATUS_INTERVAL, ms),
            convex_timeout: (l.get(|t| &t.convex_timeout_ms)).map_or(DEFAULT_CONVEX_TIMEOUT, ms),
            max_event_bytes: l
                .get(|t| &t.max_event_bytes)
                .unwrap_or(DEFAULT_MAX_EVENT_BYTES),
        }
    }
}

/// Batch and memory limits and timers of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tuning {
    pub(crate) batch_max_events: usize,
    pub(crate) batch_max_bytes: usize,
    pub(crate) batch_fill: Duration,
    pub(crate) max_inflight_batches: usize,
    pub(crate) inflight_bytes: usize,
    pub(crate) cache_bytes: usize,
    pub(crate) status_interval: Duration,
    pub(crate) convex_timeout: Duration,
    pub(crate) max_event_bytes: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            batch_max_events: DEFAULT_BATCH_MAX_EVENTS,
            batch_max_bytes: DEFAULT_BATCH_MAX_BYTES,
            batch_fill: DEFAULT_BATCH_FILL,
            max_inflight_batches: DEFAULT_MAX_INFLIGHT_BATCHES,
            inflight_bytes: DEFAULT_INFLIGHT_BYTES,
            cache_bytes: DEFAULT_CACHE_BYTES,
            status_interval: DEFAULT_STATUS_INTERVAL,
            convex_timeout: DEFAULT_CONVEX_TIMEOUT,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

impl Tuning {
    /// Refuses every value the pipeline cannot run with, naming the value
    /// that would work. `batch_fill` may be anything: 0 is a latency choice.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bytes = self.batch_max_bytes;
        let max_bytes = MAX_BATCH_MAX_BYTES;
        let status = self.status_interval.as_millis();
        let max_status = MAX_STATUS_INTERVAL.as_millis();
        let timeout = self.convex_timeout.as_millis();
        let min_timeout = MIN_CONVEX_TIMEOUT.as_millis();
        let zero = |consequence: &str, default: usize| {
            format!("0 {consequence}: set at least 1 (the default is {default})")
        };
        // (holds, setting, why not and what to set), in declaration order.
        let rules = [
            (
                self.batch_max_events > 0,
                "batch_max_events",
                zero("would close every batch empty", DEFAULT_BATCH_MAX_EVENTS),
            ),
            (
                bytes > 0,
                "batch_max_bytes",
                zero("would close every batch empty", DEFAULT_BATCH_MAX_BYTES),
            ),
            (
                bytes <= max_bytes,
                "batch_max_bytes",
                format!(
                    "{bytes} is over {max_bytes}: Convex takes 16 MiB of arguments per \
                     mutation and a batch's JSON is larger than its events are charged; set \
                     at most {max_bytes}"
                ),
            ),
            (
                self.max_inflight_batches > 0,
                "max_inflight_batches",
                zero("would never send a batch", DEFAULT_MAX_INFLIGHT_BATCHES),
            ),
            (
                self.inflight_bytes >= bytes,
                "inflight_bytes",
                format!(
                    "{} is less than --batch-max-bytes ({bytes}): reading would pause before a \
                     batch could fill; set at least {bytes} or lower --batch-max-bytes",
                    self.inflight_bytes
                ),
            ),
            (
                self.cache_bytes > 0,
                "cache_bytes",
                zero("leaves no room for a reducer state", DEFAULT_CACHE_BYTES),
            ),
            (
                status > 0,
                "status_interval_ms",
                format!("0 is not a period for the status timer: set 1 to {max_status}"),
            ),
            (
                status <= max_status,
                "status_interval_ms",
                format!(
                    "{status} is over {max_status}: while reading is paused this status is all \
                     the walsender hears, and it drops a connection silent for \
                     wal_sender_timeout (60 s by default); set 1 to {max_status}"
                ),
            ),
            (
                timeout >= min_timeout,
                "convex_timeout_ms",
                format!(
                    "{timeout} is under {min_timeout}: Convex lets a mutation run 1 s, so every \
                     slower write would time out and be retried forever; set at least \
                     {min_timeout} (the default is {})",
                    DEFAULT_CONVEX_TIMEOUT.as_millis()
                ),
            ),
            (
                self.max_event_bytes >= MIN_MAX_EVENT_BYTES,
                "max_event_bytes",
                format!(
                    "{} is under {MIN_MAX_EVENT_BYTES}: the start of an oversized row that is \
                     kept for its dead letter is that large; set at least {MIN_MAX_EVENT_BYTES} \
                     (the default is {DEFAULT_MAX_EVENT_BYTES})",
                    self.max_event_bytes
                ),
            ),
        ];
        match rules.into_iter().find(|(holds, ..)| !holds) {
            Some((_, setting, why)) => Err(ConfigError::invalid(setting, why)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
