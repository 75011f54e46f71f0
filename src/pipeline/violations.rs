//! Append-only violations (UPDATE, DELETE or TRUNCATE of `runtime.events`)
//! coalesced per transaction: a retention `DELETE` of a million rows is one
//! log line, one metric increment per kind, and at most one Convex write,
//! in constant memory.
//!
//! ```text
//!  row violation ─▶ observe (counts by kind, first and last detail)
//!  commit        ─▶ close: log once, count, hand the summary to the recorder
//!  recorder task ─▶ projectorState (0, "lastViolation"): only the newest
//!                   summary waits (a watch), so a storm never queues writes
//! ```

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::sink::ConvexClient;
use crate::source::event::ViolationKind;

/// What one transaction did to `runtime.events` beyond INSERTs.
#[derive(Default)]
struct TxnViolations {
    /// Rows by kind: update, delete, truncate.
    counts: [u64; 3],
    first: Option<String>,
    last: Option<String>,
}

fn index(kind: ViolationKind) -> usize {
    match kind {
        ViolationKind::Update => 0,
        ViolationKind::Delete => 1,
        ViolationKind::Truncate => 2,
    }
}

const KINDS: [&str; 3] = ["update", "delete", "truncate"];

/// Detail kept of a violating row (its seq, its kind): bounded whatever the row.
const DETAIL_CHARS: usize = 200;

pub(crate) struct Violations {
    open: Option<TxnViolations>,
    recorder: watch::Sender<Option<Value>>,
    _task: crate::pipeline::slot_poller::AbortOnDrop,
}

impl Violations {
    /// Starts the recorder that writes the newest summary to Convex.
    pub(crate) fn new(client: Arc<ConvexClient>) -> Violations {
        let (tx, mut rx) = watch::channel::<Option<Value>>(None);
        let task = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let value = rx.borrow_and_update().clone();
                if let Some(v) = value {
                    crate::generation::record_violation(&client, v).await;
                }
            }
        });
        Violations {
            open: None,
            recorder: tx,
            _task: crate::pipeline::slot_poller::AbortOnDrop(task),
        }
    }

    /// One violating row of the open transaction.
    pub(crate) fn observe(&mut self, kind: ViolationKind, detail: String) {
        let t = self.open.get_or_insert_with(TxnViolations::default);
        t.counts[index(kind)] += 1;
        let detail: String = detail.chars().take(DETAIL_CHARS).collect();
        if t.first.is_none() {
            t.first = Some(detail);
        } else {
            t.last = Some(detail);
        }
    }

    /// The transaction committed: report what it did, once.
    pub(crate) fn commit(&mut self, metrics: &Metrics) {
        let Some(t) = self.open.take() else {
            return;
        };
        for (kind, &n) in KINDS.iter().zip(&t.counts) {
            if n > 0 {
                metrics
                    .append_only_violations_total
                    .with_label_values(&[kind])
                    .inc_by(n);
            }
        }
        let rows: u64 = t.counts.iter().sum();
        let first = t.first.unwrap_or_default();
        let last = t.last.unwrap_or_else(|| first.clone());
        tracing::error!(
            rows,
            updates = t.counts[0],
            deletes = t.counts[1],
            truncates = t.counts[2],
            %first,
            %last,
            "runtime.events is append-only, but a transaction changed rows it holds; the changes are not projected"
        );
        let _ = self.recorder.send(Some(json!({
            "rows": rows,
            "update": t.counts[0],
            "delete": t.counts[1],
            "truncate": t.counts[2],
            "first": first,
            "last": last,
            "at": chrono::Utc::now().timestamp_millis(),
        })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_storm_is_one_summary_per_transaction() {
        let client = Arc::new(
            ConvexClient::new(
                "http://127.0.0.1:9",
                crate::secret::Secret::new("k"),
                std::time::Duration::from_millis(10),
            )
            .expect("client"),
        );
        let metrics = Metrics::new().expect("metrics");
        let mut v = Violations::new(client);
        for seq in 0..100_000 {
            v.observe(
                ViolationKind::Delete,
                format!("DELETE of runtime.events row seq={seq}"),
            );
        }
        v.observe(
            ViolationKind::Update,
            "UPDATE of runtime.events row seq=7".into(),
        );
        let t = v.open.as_ref().expect("open");
        assert_eq!(t.counts, [1, 100_000, 0]);
        assert_eq!(
            t.first.as_deref(),
            Some("DELETE of runtime.events row seq=0")
        );
        v.commit(&metrics);
        assert!(v.open.is_none());
        assert_eq!(
            metrics
                .append_only_violations_total
                .with_label_values(&["delete"])
                .get(),
            100_000
        );
        let summary = v.recorder.borrow().clone().expect("a summary");
        assert_eq!(summary["rows"], 100_001);
        assert_eq!(summary["last"], "UPDATE of runtime.events row seq=7");
        // Nothing open: a commit reports nothing.
        v.commit(&metrics);
    }
}
