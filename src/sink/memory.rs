//! An in-memory [`DocumentStore`] with the semantics of
//! `convex/projector.ts` (`apply` writes a document only at a greater
//! position, inserts a dead letter once; `load` returns stored states), and
//! deterministic faults, for in-process engine tests: no HTTP, no backend,
//! and `tokio::time::pause()` works across retries.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;

use crate::projection::{DocKey, Table};
use crate::sink::store::{DocumentStore, StoreFuture};
use crate::sink::{ApplyResult, LoadedDoc, SinkError};

/// One scripted misbehaviour, consumed by the call it applies to.
pub(crate) enum Fault {
    /// The next `apply` fails with a transient error (HTTP 503), unapplied.
    ApplyTransient,
    /// The next `apply` is applied, but its answer is lost (a timeout).
    ApplyLostAnswer,
    /// The next `apply` waits until the watch turns true, then runs.
    ApplyHeld(watch::Receiver<bool>),
    /// Before the next `load` that holds a key of `table` reads, `release`
    /// turns true and the load waits until one more `apply` ran (a held
    /// one, typically), while the hydration's other loads (polled together)
    /// have read already: another writer's mutation landing between two
    /// loads of one batch (one that needs more than one call).
    ReleaseBeforeLoad {
        table: Table,
        release: watch::Sender<bool>,
    },
}

#[derive(Default)]
struct Inner {
    /// (generation, table, key) → (position, doc)
    docs: HashMap<(u64, String, String), (String, Value)>,
    /// (generation, key) → doc
    dead_letters: HashMap<(u64, String), Value>,
    faults: VecDeque<Fault>,
    /// generation → current writer epoch (`convex/writer.ts`).
    epochs: HashMap<u64, u64>,
    /// Every `apply` whose writes hold one of these keys is rejected
    /// definitely, like a document Convex refuses.
    rejected_keys: Vec<String>,
    applies: u64,
    /// Applies that may still commit before the process "crashes": at 0,
    /// every later `apply` hangs forever (see [`MemoryStore::crash_after`]).
    commits_until_crash: Option<u64>,
    /// Bytes one `load` may read (default: Convex's 16 MiB); more is the
    /// definite error the backend answers.
    load_byte_limit: Option<usize>,
    /// Every `apply` with more writes than this times out, unapplied.
    time_out_above: Option<usize>,
    /// Every `apply` that reached the store, fenced or rejected included.
    apply_attempts: u64,
    /// The most documents and dead letters one `apply` carried.
    largest_apply: usize,
    loads: u64,
}

#[derive(Default)]
pub(crate) struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn push_fault(&self, f: Fault) {
        self.lock().faults.push_back(f);
    }

    pub(crate) fn reject_key(&self, key: &str) {
        self.lock().rejected_keys.push(key.to_string());
    }

    /// The writer dies after `commits` more applies commit: every later
    /// `apply` never answers (nothing of it lands) until
    /// [`MemoryStore::recover`]; the ones already waiting never do.
    pub(crate) fn crash_after(&self, commits: u64) {
        self.lock().commits_until_crash = Some(commits);
    }

    /// Every later `apply` with more than `writes` document writes times
    /// out without being applied, as a request too big to finish in time.
    pub(crate) fn time_out_applies_above(&self, writes: usize) {
        self.lock().time_out_above = Some(writes);
    }

    /// Every later `load` that would read more than `bytes` (stored
    /// documents' JSON, keys and positions) fails as Convex answers it:
    /// `Too many bytes read in a single function execution`. Without this,
    /// the limit is Convex's own 16 MiB.
    pub(crate) fn limit_load_bytes(&self, bytes: usize) {
        self.lock().load_byte_limit = Some(bytes);
    }

    /// Stores a document as `apply` would (tests set up large states
    /// without folding them event by event).
    pub(crate) fn put_doc(
        &self,
        generation: u64,
        table: Table,
        key: &str,
        position: &str,
        doc: Value,
    ) {
        self.lock().docs.insert(
            (generation, table.as_str().to_string(), key.to_string()),
            (position.to_string(), doc),
        );
    }

    /// A new writer may apply again (after [`MemoryStore::crash_after`]).
    pub(crate) fn recover(&self) {
        self.lock().commits_until_crash = None;
    }

    fn crashed(&self) -> bool {
        self.lock().commits_until_crash == Some(0)
    }

    /// Undoes [`MemoryStore::reject_key`]: later applies of `key` pass.
    pub(crate) fn accept_key(&self, key: &str) {
        self.lock().rejected_keys.retain(|k| k != key);
    }

    /// The stored document of `(generation, table, key)` and its position.
    pub(crate) fn doc(&self, generation: u64, table: Table, key: &str) -> Option<(String, Value)> {
        self.lock()
            .docs
            .get(&(generation, table.as_str().to_string(), key.to_string()))
            .cloned()
    }

    pub(crate) fn dead_letter_keys(&self, generation: u64) -> Vec<String> {
        let mut keys: Vec<String> = self
            .lock()
            .dead_letters
            .keys()
            .filter(|(g, _)| *g == generation)
            .map(|(_, k)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    /// The most documents and dead letters one `apply` carried.
    pub(crate) fn largest_apply(&self) -> usize {
        self.lock().largest_apply
    }

    /// (applies, loads) executed so far.
    pub(crate) fn calls(&self) -> (u64, u64) {
        let g = self.lock();
        (g.applies, g.loads)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_fault(&self, pred: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let mut g = self.lock();
        let i = g.faults.iter().position(pred)?;
        g.faults.remove(i)
    }

    fn run_apply(&self, body: &[u8]) -> Result<ApplyResult, SinkError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| protocol(e.to_string()))?;
        let args = &v["args"];
        let generation = args["generation"]
            .as_u64()
            .ok_or_else(|| protocol("generation".into()))?;
        let empty = Vec::new();
        let writes = args["writes"].as_array().unwrap_or(&empty);
        let dead_letters = args["deadLetters"].as_array().unwrap_or(&empty);
        let mut g = self.lock();
        g.apply_attempts += 1;
        g.largest_apply = g.largest_apply.max(writes.len() + dead_letters.len());
        // As Convex counts them: each replaced document reads two index
        // ranges (its lookup and the replace), each dead letter one.
        let ranges = writes.len() * crate::sink::limits::RANGES_PER_WRITE + dead_letters.len();
        if ranges > crate::sink::limits::MAX_INDEX_RANGES {
            return Err(SinkError::Function {
                path: "projector:apply".into(),
                message: format!(
                    "Uncaught Error: Too many reads in a single function execution (limit: {}).",
                    crate::sink::limits::MAX_INDEX_RANGES
                ),
                data: None,
            });
        }
        if g.time_out_above.is_some_and(|k| writes.len() > k) {
            return Err(SinkError::Timeout {
                path: "projector:apply".into(),
                timeout: std::time::Duration::from_secs(30),
            });
        }
        if let Some(epoch) = args.get("epoch").and_then(Value::as_u64) {
            let current = g.epochs.get(&generation).copied();
            if current != Some(epoch) {
                return Err(SinkError::Function {
                    path: "projector:apply".into(),
                    message: format!("generation {generation} is written under epoch {current:?}; this writer holds epoch {epoch} and was fenced"),
                    data: Some(serde_json::json!({"code": "Fenced", "generation": generation.to_string()})),
                });
            }
        }
        for w in writes {
            let key = w["key"].as_str().unwrap_or_default();
            if g.rejected_keys.iter().any(|k| k == key) {
                return Err(SinkError::Function {
                    path: "projector:apply".into(),
                    message: format!("InvalidDocument: key {key:?} rejected"),
                    data: None,
                });
            }
        }
        g.applies += 1;
        if let Some(n) = g.commits_until_crash.as_mut() {
            *n = n.saturating_sub(1);
        }
        let mut r = ApplyResult::default();
        for w in writes {
            let id = (
                generation,
                w["table"].as_str().unwrap_or_default().to_string(),
                w["key"].as_str().unwrap_or_default().to_string(),
            );
            let position = w["position"].as_str().unwrap_or_default().to_string();
            match g.docs.get(&id) {
                Some((stored, _)) if *stored >= position => r.skipped += 1,
                _ => {
                    g.docs.insert(id, (position, w["doc"].clone()));
                    r.applied += 1;
                }
            }
        }
        for d in dead_letters {
            let id = (
                generation,
                d["key"].as_str().unwrap_or_default().to_string(),
            );
            match g.dead_letters.entry(id) {
                std::collections::hash_map::Entry::Occupied(_) => r.dead_letters_skipped += 1,
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(d["doc"].clone());
                    r.dead_letters_inserted += 1;
                }
            }
        }
        Ok(r)
    }
}

fn protocol(why: String) -> SinkError {
    SinkError::Protocol {
        path: "projector:apply".into(),
        why,
    }
}

fn unavailable(path: &str) -> SinkError {
    SinkError::Server {
        path: path.into(),
        status: 503,
        code: "ServiceUnavailable".into(),
        message: "injected".into(),
        retry_after: None,
    }
}

impl DocumentStore for MemoryStore {
    fn apply(&self, body: Bytes) -> StoreFuture<'_, ApplyResult> {
        Box::pin(async move {
            if self.crashed() {
                std::future::pending::<()>().await;
            }
            let fault = self.take_fault(|f| {
                matches!(
                    f,
                    Fault::ApplyTransient | Fault::ApplyLostAnswer | Fault::ApplyHeld(_)
                )
            });
            match fault {
                Some(Fault::ApplyTransient) => return Err(unavailable("projector:apply")),
                Some(Fault::ApplyLostAnswer) => {
                    self.run_apply(&body)?;
                    return Err(SinkError::Timeout {
                        path: "projector:apply".into(),
                        timeout: std::time::Duration::from_secs(30),
                    });
                }
                Some(Fault::ApplyHeld(mut release)) => {
                    let _ = release.wait_for(|go| *go).await;
                }
                _ => {}
            }
            self.run_apply(&body)
        })
    }

    fn load<'a>(&'a self, generation: u64, keys: &'a [DocKey]) -> StoreFuture<'a, Vec<LoadedDoc>> {
        Box::pin(async move {
            let hook = self.take_fault(|f| {
                matches!(f, Fault::ReleaseBeforeLoad { table, .. } if keys.iter().any(|k| k.table == *table))
            });
            if let Some(Fault::ReleaseBeforeLoad { release, .. }) = hook {
                let attempts = self.lock().apply_attempts;
                let _ = release.send(true);
                // Bounded: a test whose held apply never runs fails on its
                // assertions instead of hanging here.
                for _ in 0..10_000 {
                    if self.lock().apply_attempts > attempts {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
            // One snapshot, as a Convex query reads: nothing lands between
            // the tables of one call.
            let mut g = self.lock();
            g.loads += 1;
            let limit = g
                .load_byte_limit
                .unwrap_or(crate::sink::limits::MAX_READ_BYTES);
            let found: Vec<(&DocKey, &(String, Value))> = keys
                .iter()
                .filter_map(|k| {
                    let id = (generation, k.table.as_str().to_string(), k.key.to_string());
                    g.docs.get(&id).map(|stored| (k, stored))
                })
                .collect();
            let read: usize = found
                .iter()
                .map(|(k, (position, doc))| {
                    k.key.len() + position.len() + serde_json::to_vec(doc).map_or(0, |b| b.len())
                })
                .sum();
            if read > limit {
                // As the backend words it (local-backend/limits.ts).
                return Err(SinkError::Function {
                    path: crate::sink::api::LOAD_MANY.into(),
                    message: format!("Uncaught Error: Too many bytes read in a single function execution (limit: {limit} bytes). Consider using smaller limits in your queries, paginating your queries, or using indexed queries with a selective index range expressions."),
                    data: None,
                });
            }
            Ok(found
                .into_iter()
                .map(|(k, (position, doc))| LoadedDoc {
                    table: k.table.as_str().to_string(),
                    key: k.key.to_string(),
                    position: position.clone(),
                    doc: doc.clone(),
                })
                .collect())
        })
    }

    fn acquire_writer<'a>(&'a self, generation: u64, _holder: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let mut g = self.lock();
            let epoch = g.epochs.entry(generation).or_insert(0);
            *epoch += 1;
            Ok(*epoch)
        })
    }
}
