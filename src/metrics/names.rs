//! Every metric name, as a `pub const`, with its type, labels and meaning.
//!
//! This list is the single source of truth: [`super::Metrics::new`] takes
//! the help text from here, `tests/deploy_files.rs` checks that every
//! `projector_*` series used by the alert rules and the dashboard is listed
//! here, and `docs/operations.md` embeds [`markdown_table`] (checked by
//! `tests/metrics_docs.rs`).

/// Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family.
#[derive(Clone, Copy, Debug)]
pub struct MetricInfo {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub(crate) help: &'static str,
}

macro_rules! metric_names {
    ($($konst:ident = $name:literal, $kind:ident, [$($label:literal),*], $help:literal;)*) => {
        $(
            #[doc = $help]
            pub(crate) const $konst: &str = $name;
        )*
        /// All metric families, in documentation order.
        pub const ALL: &[MetricInfo] = &[
            $(MetricInfo { name: $name, kind: Kind::$kind, labels: &[$($label),*], help: $help },)*
        ];
    };
}

metric_names! {
    // --- events
    EVENTS_DECODED_TOTAL = "projector_events_decoded_total", Counter, [],
        "runtime.events rows decoded from the replication stream (or copied from the rebuild snapshot).";
    EVENTS_FOLDED_TOTAL = "projector_events_folded_total", Counter, [],
        "Events folded into at least one projection document.";
    EVENTS_IGNORED_TOTAL = "projector_events_ignored_total", Counter, ["reason"],
        "Events not projected by design (unknown type, stream prefix not matching the type family).";
    EVENTS_DEAD_LETTERED_TOTAL = "projector_events_dead_lettered_total", Counter, ["reason"],
        "Events that broke their payload contract or arrived out of order; written to deadLetters, not folded.";
    EVENTS_SKIPPED_TOTAL = "projector_events_skipped_total", Counter, [],
        "Replayed events at or below a document's stored position, skipped by hydration (normal after a restart).";
    APPEND_ONLY_VIOLATIONS_TOTAL = "projector_append_only_violations_total", Counter, ["kind"],
        "UPDATE, DELETE or TRUNCATE seen on runtime.events (the log must be append-only).";
    // --- sink
    BATCHES_APPLIED_TOTAL = "projector_batches_applied_total", Counter, [],
        "projector:apply mutations acknowledged by Convex.";
    WRITES_APPLIED_TOTAL = "projector_writes_applied_total", Counter, [],
        "Documents inserted or replaced in Convex.";
    WRITES_SKIPPED_TOTAL = "projector_writes_skipped_total", Counter, [],
        "Document writes skipped by the position guard (stored position already newer; harmless replays).";
    DEAD_LETTERS_WRITTEN_TOTAL = "projector_dead_letters_written_total", Counter, [],
        "deadLetters documents inserted (idempotent by event seq).";
    CONVEX_REQUEST_DURATION_SECONDS = "projector_convex_request_duration_seconds", Histogram, ["function"],
        "Latency of Convex HTTP requests, by function path (e.g. projector:apply).";
    CONVEX_ERRORS_TOTAL = "projector_convex_errors_total", Counter, ["class", "code"],
        "Failed Convex requests by class (transient: retried; definite: batch split / dead-lettered) and code (HTTP status or error code; fenced: another replica took the generation over).";
    CONVEX_RETRIES_TOTAL = "projector_convex_retries_total", Counter, ["function"],
        "Retries of Convex requests after transient errors.";
    // --- progress
    RECEIVED_LSN_BYTES = "projector_received_lsn_bytes", Gauge, [],
        "Newest WAL position received from Postgres (XLogData end or keepalive), as a byte offset.";
    FLUSHED_LSN_BYTES = "projector_flushed_lsn_bytes", Gauge, [],
        "Flush LSN last sent to Postgres in a standby status update (everything before it is in Convex).";
    CONFIRMED_LSN_BYTES = "projector_confirmed_lsn_bytes", Gauge, [],
        "confirmed_flush_lsn of the slot as last read from pg_replication_slots.";
    LAG_BYTES = "projector_lag_bytes", Gauge, [],
        "received - confirmed LSN: WAL received but not yet confirmed to Postgres.";
    LAG_SECONDS = "projector_lag_seconds", Gauge, [],
        "Age (commit time to now) of the oldest event not yet acknowledged by Convex; 0 when idle.";
    COMMIT_TO_ACK_SECONDS = "projector_commit_to_ack_seconds", Histogram, ["projection"],
        "Per projection: seconds from the Postgres commit of an event to the Convex ack of the write that carries it.";
    // --- slot
    SLOT_RETAINED_WAL_BYTES = "projector_slot_retained_wal_bytes", Gauge, [],
        "WAL retained by the slot: pg_current_wal_lsn() - restart_lsn.";
    SLOT_WAL_STATUS = "projector_slot_wal_status", Gauge, ["status"],
        "1 for the slot's current wal_status (reserved, extended, unreserved, lost, unknown), 0 for the others.";
    SLOT_SAFE_WAL_SIZE_BYTES = "projector_slot_safe_wal_size_bytes", Gauge, [],
        "safe_wal_size of the slot: WAL that can still be written before the slot is lost (+Inf when max_slot_wal_keep_size = -1).";
    SLOT_PREDICTED_INVALIDATION_SECONDS = "projector_slot_predicted_invalidation_seconds", Gauge, [],
        "Predicted seconds until the slot is invalidated: safe_wal_size / smoothed growth rate of retained WAL (+Inf when not growing or unlimited).";
    // --- flow control
    INFLIGHT_BYTES = "projector_inflight_bytes", Gauge, [],
        "Bytes of events read but not yet acknowledged by Convex.";
    INFLIGHT_BATCHES = "projector_inflight_batches", Gauge, [],
        "Batches sent to Convex and not yet acknowledged.";
    CONVEX_CONCURRENCY_LIMIT = "projector_convex_concurrency_limit", Gauge, [],
        "Convex apply mutations allowed in flight at once: halved on 429, 5xx or timeouts, grown by one after a full round of answers without them at flat latency.";
    CONVEX_WRITE_RATE_BYTES = "projector_convex_write_rate_bytes", Gauge, [],
        "Bytes per second the apply mutations are paced to, learned from Convex's 429 TooManyWrites (0 = not paced: no refusal seen).";
    BACKPRESSURE_ACTIVE = "projector_backpressure_active", Gauge, [],
        "1 while reading from Postgres is paused because the in-flight byte budget is full.";
    BACKPRESSURE_SECONDS_TOTAL = "projector_backpressure_seconds_total", Counter, [],
        "Total seconds spent paused by backpressure.";
    // --- service state
    UP = "projector_up", Gauge, [],
        "1 while the process runs (set at start).";
    READY = "projector_ready", Gauge, [],
        "1 when /readyz answers 200 (connected, streaming, not wedged), else 0.";
    CONVEX_SCHEMA_SKEW = "projector_convex_schema_skew", Gauge, [],
        "1 while the deployed Convex functions implement another schema version than this binary (deployment skew: nothing is streamed), else 0.";
    GENERATION_ACTIVE = "projector_generation_active", Gauge, [],
        "The generation this pipeline writes into (the active one for `run`).";
    REBUILD_EVENTS_COPIED = "projector_rebuild_events_copied", Gauge, [],
        "Rebuild: events copied from the snapshot so far.";
    REBUILD_EVENTS_PLANNED = "projector_rebuild_events_planned", Gauge, [],
        "Rebuild: events in the snapshot to copy (0 when not rebuilding).";
}

/// The family a series name belongs to: strips the `_bucket`, `_sum` and
/// `_count` suffixes of histogram series.
pub fn lookup(series: &str) -> Option<&'static MetricInfo> {
    if let Some(m) = ALL.iter().find(|m| m.name == series) {
        return Some(m);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = series.strip_suffix(suffix)?;
        ALL.iter()
            .find(|m| m.name == base && m.kind == Kind::Histogram)
    })
}

/// Help text of a metric family (empty for an unknown name).
pub(crate) fn help(name: &str) -> &'static str {
    ALL.iter()
        .find(|m| m.name == name)
        .map(|m| m.help)
        .unwrap_or("")
}

/// The metrics reference table embedded in `docs/operations.md`.
pub fn markdown_table() -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for m in ALL {
        let labels = if m.labels.is_empty() {
            "—".to_string()
        } else {
            m.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            m.name,
            m.kind.as_str(),
            labels,
            m.help.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_unique_and_suffixed_by_kind() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(m.name.starts_with("projector_"), "{}", m.name);
            assert!(seen.insert(m.name), "duplicate {}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "counters and only counters end in _total: {}",
                m.name
            );
        }
    }

    #[test]
    fn lookup_strips_histogram_suffixes_only() {
        assert!(lookup("projector_commit_to_ack_seconds_bucket").is_some());
        assert!(lookup("projector_up").is_some());
        assert!(lookup("projector_up_count").is_none());
        assert!(lookup("projector_nope").is_none());
    }
}
