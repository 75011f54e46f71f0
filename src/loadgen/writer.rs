//! One writer: a Postgres connection that is the single writer of its
//! streams, writing batches of events at a paced rate.
//!
//! ```text
//! Traffic (this writer's streams) ──batch──▶ INSERT … SELECT FROM unnest($1..$5)
//!                                            (one statement = one transaction)
//! ```
//!
//! Each batch is one multi-row statement, so it commits atomically and the
//! rows get `seq` in batch order; since the writer owns its streams and
//! sends batches one after another, `stream_seq` order equals `seq` order
//! within every stream. `occurred_at` is `clock_timestamp()` per row.
//!
//! Pacing: a writer may have written at most `rate × elapsed` events (the
//! tokens it has earned) when a batch is sent; it sleeps until the batch's
//! tokens are earned. No burst beyond one batch.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::{Client, Statement};

use super::traffic::{EventClass, PlannedEvent, Traffic};
use super::{connect_sql, LoadReport};
use crate::config::Secret;

const INSERT: &str = "insert into runtime.events \
     (stream_id, stream_seq, event_type, owner_id, payload, occurred_at) \
     select s, q, t, o, p::jsonb, clock_timestamp() \
     from unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[]) as u(s, q, t, o, p)";

/// A connection that inserts batches of planned events.
pub(crate) struct Writer {
    client: Client,
    insert: Statement,
}

impl Writer {
    pub(crate) async fn connect(url: &Secret) -> anyhow::Result<Self> {
        let client = connect_sql(url).await?;
        let insert = client.prepare(INSERT).await.map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
                anyhow::anyhow!(
                    "runtime.events does not exist: apply sql/001_runtime_events.sql \
                     (or run `projector setup --apply`) first"
                )
            } else {
                anyhow::Error::new(e).context("preparing the loadgen INSERT into runtime.events")
            }
        })?;
        Ok(Writer { client, insert })
    }

    /// Largest `stream_seq` already written for each of `stream_ids`.
    pub(crate) async fn max_seqs(
        &self,
        stream_ids: &[String],
    ) -> anyhow::Result<HashMap<String, i64>> {
        if stream_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self
            .client
            .query(
                "select stream_id, max(stream_seq) from runtime.events \
                 where stream_id = any($1) group by stream_id",
                &[&stream_ids],
            )
            .await
            .context("reading the last stream_seq of the user streams")?;
        let mut out = HashMap::new();
        for r in rows {
            let id: String = r.try_get(0)?;
            let max: i64 = r.try_get(1)?;
            out.insert(id, max);
        }
        Ok(out)
    }

    /// Inserts `batch` in one statement (one transaction).
    pub(crate) async fn insert(&self, batch: &[PlannedEvent]) -> anyhow::Result<()> {
        let mut s = Vec::with_capacity(batch.len());
        let mut q = Vec::with_capacity(batch.len());
        let mut t = Vec::with_capacity(batch.len());
        let mut o = Vec::with_capacity(batch.len());
        let mut p = Vec::with_capacity(batch.len());
        for e in batch {
            s.push(e.stream_id.as_str());
            q.push(e.stream_seq);
            t.push(e.event_type);
            o.push(e.owner_id.as_str());
            p.push(e.payload.as_str());
        }
        self.client
            .execute(&self.insert, &[&s, &q, &t, &o, &p])
            .await
            .context("inserting a batch into runtime.events")?;
        Ok(())
    }
}

/// What one writer task needs; owned, so the task can be spawned.
pub(crate) struct WriterJob {
    pub(crate) url: Secret,
    pub(crate) traffic: Traffic,
    /// Events this writer writes at most (None: until stopped).
    pub(crate) quota: Option<u64>,
    /// Events per second for this writer (0: unpaced).
    pub(crate) rate: f64,
    pub(crate) batch: usize,
    pub(crate) deadline: Option<Instant>,
    pub(crate) stop: Option<watch::Receiver<bool>>,
    /// Shared count of written events (progress log).
    pub(crate) written: Arc<AtomicU64>,
}

fn stopped(stop: &Option<watch::Receiver<bool>>) -> bool {
    stop.as_ref().is_some_and(|s| *s.borrow())
}

/// Sleeps until `until`, returning early (false) if `stop` fires.
async fn pace(until: Instant, stop: &mut Option<watch::Receiver<bool>>) -> bool {
    match stop {
        Some(rx) => {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => true,
                // A closed channel means nobody can stop us any more: sleep on.
                closed = async { rx.wait_for(|v| *v).await.is_err() } => {
                    if closed {
                        tokio::time::sleep_until(until).await;
                        true
                    } else {
                        false
                    }
                }
            }
        }
        None => {
            tokio::time::sleep_until(until).await;
            true
        }
    }
}

/// Runs one writer to its quota, deadline or stop signal.
pub(crate) async fn run(mut job: WriterJob) -> anyhow::Result<LoadReport> {
    let writer = Writer::connect(&job.url).await?;
    let existing = writer.max_seqs(&job.traffic.user_stream_ids()).await?;
    job.traffic.resume_users(&existing);

    // At low rates, send smaller batches (~20 per second) so traffic flows.
    let batch_size = if job.rate > 0.0 {
        ((job.rate / 20.0) as usize).clamp(1, job.batch.max(1))
    } else {
        job.batch.max(1)
    };
    let mut report = LoadReport::default();
    let mut streams: HashSet<String> = HashSet::new();
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut batch = Vec::with_capacity(batch_size);
    while job.traffic.can_write() {
        if stopped(&job.stop) || job.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let room = job.quota.map_or(batch_size as u64, |q| {
            q.saturating_sub(sent).min(batch_size as u64)
        });
        if room == 0 {
            break;
        }
        batch.clear();
        for _ in 0..room {
            match job.traffic.next_event() {
                Some(e) => batch.push(e),
                None => break,
            }
        }
        if job.rate > 0.0 {
            let due =
                start + Duration::from_secs_f64((sent + batch.len() as u64) as f64 / job.rate);
            // Past the deadline, the batch is not due any more: drop it (it
            // was only planned; its streams are not written).
            if job.deadline.is_some_and(|d| due > d) {
                let _ = pace(job.deadline.unwrap_or(due), &mut job.stop).await;
                break;
            }
            if !pace(due, &mut job.stop).await {
                break;
            }
        }
        writer.insert(&batch).await?;
        sent += batch.len() as u64;
        report.batches += 1;
        for e in &batch {
            report.record(e);
            if !streams.contains(&e.stream_id) {
                streams.insert(e.stream_id.clone());
            }
        }
        job.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
    report.streams = streams.len() as u64;
    report.elapsed = start.elapsed();
    Ok(report)
}

impl LoadReport {
    fn record(&mut self, e: &PlannedEvent) {
        self.total += 1;
        match e.class {
            EventClass::Valid => {
                *self.by_type.entry(e.event_type.to_string()).or_insert(0) += 1;
            }
            EventClass::Malformed(k) => {
                *self.malformed.entry(k).or_insert(0) += 1;
                if k.is_ignored() {
                    self.ignored += 1;
                } else {
                    self.dead_letters += 1;
                }
            }
        }
    }
}
