//! Sending one closed batch to Convex, off the main loop.
//!
//! Transient failures (network, timeouts, 429, 5xx) are retried with
//! backoff, forever: the batch is simply not acknowledged meanwhile, so
//! nothing is confirmed to Postgres. One exception: a request of several
//! documents that times out [`TIMEOUTS_BEFORE_SPLIT`] times in a row is
//! split in halves instead (it may be too big to ever finish in time). A definite failure (the mutation
//! rejected a document) splits the request in halves until the offending
//! document is alone; its events become dead letters and everything else is
//! applied. A request too large for one mutation (bytes, or documents for
//! its index ranges) is sent in chunks.
//!
//! Order when a batch takes several mutations: dead letters first, then the
//! documents that are not stream documents, then the stream documents
//! (runs, workers, inboxes), and the dead letters of a rejected document
//! right after its rejection, before anything not yet sent. The fold skips
//! an event whose stream document holds it ("the primary holds it" means
//! the event is done, `projection::fold`), so a crash between two mutations
//! must never leave a stream document written and a dead letter of the same
//! events unwritten: the replay would skip them and the dead letter would
//! be lost.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use crate::event::Position;
use crate::metrics::Metrics;
use crate::pipeline::watermark::BatchId;
use crate::projection::{ConvexTable, DeadLetter, DocKey, DocKeyMap, FoldedEvent, Table};
use crate::sink::{
    ApplyRequest, ApplyResult, DeadLetterWrite, DocJson, DocumentStore, RetryPolicy, SinkError,
    Write,
};

/// A document snapshot, serialised once at batch close; request bodies
/// copy it verbatim.
pub struct PlannedWrite {
    pub key: DocKey,
    pub position: Position,
    pub doc: DocJson,
}

type DocWrite = Write<DocJson>;

/// Timeouts in a row after which a request of several documents is split
/// instead of retried. A request too big to finish within the client
/// timeout (many or large documents, a loaded deployment) times out the
/// same way on every retry, so retrying it alone never ends; its halves are
/// smaller and can succeed. Not 1: one or two timeouts are usually a
/// network blip or a busy moment a plain retry gets through, and a split
/// costs more mutations. Splitting is safe whatever the timed-out attempts
/// did: every write is guarded by position, so one that did commit turns
/// into skips.
const TIMEOUTS_BEFORE_SPLIT: u32 = 3;

pub struct Dispatch {
    pub id: BatchId,
    /// Earlier batches in flight that must be answered before this one is
    /// sent (see `pipeline::order`).
    pub after: Vec<watch::Receiver<bool>>,
    /// Set when every write of this batch has been answered.
    pub done: watch::Sender<bool>,
    pub generation: u64,
    /// The writer epoch every request of this batch carries.
    pub epoch: Option<u64>,
    pub writes: Vec<PlannedWrite>,
    pub dead_letters: Vec<DeadLetter>,
    /// The events folded in this batch; for each written key, the indexes
    /// (into `events_of`, then `events`) of the events behind it, which
    /// become dead letters if Convex rejects the document.
    pub events: Vec<FoldedEvent>,
    pub events_by_key: DocKeyMap<usize>,
    pub events_of: Vec<Vec<u32>>,
    /// Bytes counted against the in-flight budget (events and written
    /// documents), released by the ack.
    pub event_bytes: usize,
    pub commit_times_us: Vec<i64>,
    pub max_request_bytes: usize,
}

/// What comes back to the engine for each batch.
pub struct Ack {
    pub id: BatchId,
    pub written: Vec<DocKey>,
    pub rejected: Vec<DocKey>,
    pub event_bytes: usize,
    pub commit_times_us: Vec<i64>,
    pub tables: Vec<&'static str>,
    /// Convex refused our writer epoch: another process owns the
    /// generation now. The batch may be partly written (by an earlier
    /// mutation) and must not count as acknowledged.
    pub fenced: Option<String>,
}

fn to_write(w: PlannedWrite) -> DocWrite {
    Write {
        table: std::borrow::Cow::Borrowed(w.key.table.as_str()),
        key: String::from(&*w.key.key),
        position: w.position.encode(),
        doc: w.doc,
    }
}

fn to_dead_letter(d: &DeadLetter) -> DeadLetterWrite {
    DeadLetterWrite {
        key: d.key(),
        position: d.position.encode(),
        doc: d.to_json(),
    }
}

pub fn spawn(
    store: Arc<dyn DocumentStore>,
    retry: RetryPolicy,
    metrics: Metrics,
    job: Dispatch,
    ack_tx: mpsc::UnboundedSender<Ack>,
) {
    tokio::spawn(async move {
        for mut earlier in job.after {
            // An error means that batch's task is gone (shutdown): go on.
            let _ = earlier.wait_for(|done| *done).await;
        }
        let mut tables: Vec<&'static str> = Vec::new();
        for w in &job.writes {
            let t = w.key.table.as_str();
            if !tables.contains(&t) {
                tables.push(t);
            }
        }
        if !job.dead_letters.is_empty() {
            tables.push(ConvexTable::DeadLetters.as_str());
        }
        let written: Vec<DocKey> = job.writes.iter().map(|w| w.key.clone()).collect();
        let mut sender = Sender {
            store,
            retry,
            metrics,
            generation: job.generation,
            epoch: job.epoch,
            max_bytes: job.max_request_bytes,
            behind: EventsBehind {
                events: job.events,
                by_key: job.events_by_key,
                of: job.events_of,
            },
            rejected: Vec::new(),
            fenced: None,
        };
        // If the request must be split, every event's stream document
        // (runs, workers, inboxes) goes in the last mutation: a crash between
        // mutations then replays the event into the documents that lack it,
        // instead of skipping it because its stream document has it. The
        // dead letters go first (`split` keeps them in front) for the same
        // reason: see the module docs.
        let mut planned = job.writes;
        planned.sort_by_key(|w| w.key.table.is_stream_table());
        let writes: Vec<DocWrite> = planned.into_iter().map(to_write).collect();
        let dls: Vec<DeadLetterWrite> = job.dead_letters.iter().map(to_dead_letter).collect();
        sender.send(writes, dls).await;
        let ack = Ack {
            id: job.id,
            written,
            rejected: sender.rejected.into_iter().map(|(k, _)| k).collect(),
            event_bytes: job.event_bytes,
            commit_times_us: job.commit_times_us,
            tables,
            fenced: sender.fenced,
        };
        let _ = job.done.send(true);
        // The engine may be gone (shutdown after a second signal): fine.
        let _ = ack_tx.send(ack);
    });
}

/// The events behind each written document of a batch (see [`Dispatch`]).
struct EventsBehind {
    events: Vec<FoldedEvent>,
    by_key: DocKeyMap<usize>,
    of: Vec<Vec<u32>>,
}

impl EventsBehind {
    /// The dead letters of the events behind a document Convex rejected.
    fn dead_letters(&self, key: &DocKey, message: &str) -> Vec<DeadLetterWrite> {
        let indexes = self.by_key.get(key).and_then(|&slot| self.of.get(slot));
        indexes
            .into_iter()
            .flatten()
            .filter_map(|&i| self.events.get(i as usize))
            .map(|ev| to_dead_letter(&ev.dead_letter(format!("sink_rejected: {message}"))))
            .collect()
    }
}

struct Sender {
    store: Arc<dyn DocumentStore>,
    retry: RetryPolicy,
    metrics: Metrics,
    generation: u64,
    epoch: Option<u64>,
    max_bytes: usize,
    behind: EventsBehind,
    rejected: Vec<(DocKey, String)>,
    /// Set by the first fenced answer; nothing more is sent.
    fenced: Option<String>,
}

impl Sender {
    /// Applies writes and dead letters, in as many mutations as the byte
    /// and index-range limits need, isolating definite rejections.
    async fn send(&mut self, writes: Vec<DocWrite>, dead_letters: Vec<DeadLetterWrite>) {
        let mut stack = vec![ApplyRequest {
            generation: self.generation,
            epoch: self.epoch,
            writes,
            dead_letters,
        }];
        while let Some(req) = stack.pop() {
            let body = match req.encode_raw() {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a Convex request; dropping it");
                    continue;
                }
            };
            let parts = req.writes.len() + req.dead_letters.len();
            let too_many = parts > crate::sink::limits::MAX_KEYS_PER_APPLY;
            if (body.len() > self.max_bytes || too_many) && parts > 1 {
                stack.extend(split(req).into_iter().rev());
                continue;
            }
            let started = Instant::now();
            let result = self.apply(&body, parts).await;
            self.metrics
                .observe_convex_request("apply", started.elapsed().as_secs_f64());
            match result {
                Ok(Applied::TimedOut(e)) => {
                    self.metrics.convex_error(true, e.class());
                    tracing::warn!(error = %e, parts, timeouts = TIMEOUTS_BEFORE_SPLIT, "a Convex apply timed out again and again; splitting it");
                    stack.extend(split(req).into_iter().rev());
                }
                Ok(Applied::Done(r)) => {
                    self.metrics.batches_applied_total.inc();
                    self.metrics.writes_applied_total.inc_by(r.applied);
                    self.metrics.writes_skipped_total.inc_by(r.skipped);
                    self.metrics
                        .dead_letters_written_total
                        .inc_by(r.dead_letters_inserted);
                }
                Err(e) if e.is_fenced() => {
                    // Another process took the generation over; it reads
                    // what we wrote so far and owns the rest.
                    self.metrics.convex_error(false, "fenced");
                    tracing::warn!(error = %e, "fenced: another process writes this generation now; dropping this batch unconfirmed");
                    self.fenced = Some(e.to_string());
                    return;
                }
                Err(e) if e.is_deployment_error() => {
                    // A wrong key or missing functions: every document would
                    // fail the same way. Keep the batch, confirm nothing, and
                    // say what to fix until someone fixes it.
                    tracing::error!(error = %e, "Convex refuses our requests (admin key, deployment or functions); retrying in 10 s without confirming progress");
                    self.metrics.convex_error(false, "deployment");
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                    stack.push(req);
                }
                Err(e) if !e.is_transient() && parts > 1 => {
                    self.metrics.convex_error(false, e.class());
                    tracing::warn!(error = %e, parts, "Convex rejected a batch; splitting it to isolate the document");
                    stack.extend(split(req).into_iter().rev());
                }
                Err(e) => {
                    self.metrics.convex_error(false, e.class());
                    if let Some(w) = req.writes.first() {
                        let key = DocKey {
                            table: Table::parse(&w.table).unwrap_or(Table::Runs),
                            key: w.key.as_str().into(),
                        };
                        tracing::error!(table = %w.table, key = %w.key, error = %e, "Convex rejected a document; its events become dead letters");
                        let message = short(&e);
                        // Sent next, before any part not yet sent: those may
                        // hold the stream documents of the same events.
                        let dead_letters = self.behind.dead_letters(&key, &message);
                        if !dead_letters.is_empty() {
                            stack.push(ApplyRequest {
                                generation: self.generation,
                                epoch: self.epoch,
                                writes: Vec::new(),
                                dead_letters,
                            });
                        }
                        self.rejected.push((key, message));
                    } else {
                        tracing::error!(error = %e, "Convex rejected a dead letter; it is logged here and dropped");
                    }
                }
            }
        }
    }
}

impl Sender {
    /// One apply of `body`, retrying transient failures (forever), except
    /// that a request of several `parts` answered by
    /// [`TIMEOUTS_BEFORE_SPLIT`] timeouts in a row comes back as
    /// [`Applied::TimedOut`] for the caller to split. Any other transient
    /// error in between restarts the count: only timeouts say the request
    /// itself may be too slow. Fenced and other definite errors return at
    /// once, as from `with_retry`.
    async fn apply(&self, body: &bytes::Bytes, parts: usize) -> Result<Applied, SinkError> {
        let timeouts = AtomicU32::new(0);
        let store = &self.store;
        crate::sink::with_retry(&self.retry, "apply", || {
            let call = store.apply(body.clone());
            let timeouts = &timeouts;
            async move {
                match call.await {
                    Ok(r) => Ok(Applied::Done(r)),
                    Err(e @ SinkError::Timeout { .. }) => {
                        let n = timeouts.fetch_add(1, Ordering::Relaxed) + 1;
                        if n >= TIMEOUTS_BEFORE_SPLIT && parts > 1 {
                            Ok(Applied::TimedOut(e))
                        } else {
                            Err(e)
                        }
                    }
                    Err(e) => {
                        timeouts.store(0, Ordering::Relaxed);
                        Err(e)
                    }
                }
            }
        })
        .await
    }
}

/// What one apply came to, short of an error.
enum Applied {
    Done(ApplyResult),
    /// Timed out [`TIMEOUTS_BEFORE_SPLIT`] times in a row: split it.
    TimedOut(SinkError),
}

fn short(e: &SinkError) -> String {
    let s = e.to_string();
    s.chars().take(500).collect()
}

/// Halves a request, in send order: dead letters first, then the writes
/// (in their order, stream documents last), so the first half never holds
/// a write that the second half's dead letters should precede.
fn split(req: ApplyRequest<DocJson>) -> Vec<ApplyRequest<DocJson>> {
    let ApplyRequest {
        generation,
        epoch,
        mut writes,
        mut dead_letters,
    } = req;
    let total = writes.len() + dead_letters.len();
    let half = total / 2;
    let (w2, d2) = if dead_letters.len() >= half {
        (std::mem::take(&mut writes), dead_letters.split_off(half))
    } else {
        let rest = half - dead_letters.len();
        (writes.split_off(rest), Vec::new())
    };
    vec![
        ApplyRequest {
            generation,
            epoch,
            writes,
            dead_letters,
        },
        ApplyRequest {
            generation,
            epoch,
            writes: w2,
            dead_letters: d2,
        },
    ]
}
