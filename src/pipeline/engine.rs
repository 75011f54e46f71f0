//! The projection engine: events in, guarded writes out, acknowledgements
//! back, and the LSN that is safe to confirm.
//!
//! ```text
//!  push(event) ─▶ plan ─▶ OpenBatch ──close──▶ hydrate misses (Convex load)
//!       (each document numbered once)         │
//!                                             ▼
//!            lend the batch's states out of the StateCache, fold by number,
//!            give them back (pin and serialise the written ones)
//!                                             │
//!                        spawn: apply (retry transient; split definite)
//!                                             │
//!  handle_ack(ack) ◀─────────── ack channel ◀─┘   unpin, Watermark::ack
//! ```
//!
//! Lending is safe because nothing between `lend` and `give_back` awaits:
//! no other code can observe the cache while its states are out.
//!
//! Correctness: the cache is never older than Convex for a key it holds
//! (pinned keys are never evicted, so never re-read while a write is in
//! flight), every write is a full state guarded by position, and the
//! watermark confirms a commit only after every batch holding its events
//! was acknowledged. A crash anywhere therefore loses nothing (Postgres
//! re-sends from the confirmed LSN) and duplicates nothing (the position
//! guard and the per-document skip absorb the replay).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use crate::config::Tuning;
use crate::event::{Lsn, Position, RuntimeEvent};
use crate::metrics::Metrics;
use crate::pipeline::batch::{Item, OpenBatch, MAX_KEYS_PER_EVENT};
use crate::pipeline::cache::{DocSizes, StateCache};
use crate::pipeline::dispatch::{self, Ack, Dispatch};
use crate::pipeline::order::{Done, WriteOrder};
use crate::pipeline::watermark::{BatchId, Watermark};
use crate::projection::{
    self, Doc, DocKey, DocKeyMap, FoldOutcome, FoldedEvent, Plan, StateAccess, Stored, Table,
};
use crate::sink::{DocJson, DocumentStore, RetryPolicy, SinkError};

/// Memory of one document write in flight beyond its document copies
/// (counted where it is closed): the key, the position, the bookkeeping.
const WRITE_OVERHEAD: usize = 128;

/// A transaction committed this long before the server sent it means we
/// are draining a backlog (both times are the server's clock, so host clock
/// skew does not matter).
const CATCH_UP_LAG_US: i64 = 1_000_000;

/// Fill time of a batch while catching up: batches close on size, not on
/// the low-latency timer, whenever the walsender is a little slower than us
/// (the backlog is waiting anyway; fuller batches coalesce more writes).
const CATCH_UP_FILL: std::time::Duration = std::time::Duration::from_millis(250);

/// Batch size limits (events, bytes) are this many times larger while
/// catching up: a backlog drains in fewer, fuller batches, so several events
/// of one document coalesce into one write (fewer Convex document writes).
const CATCH_UP_SCALE: usize = 3;

/// Keys per `load` call at most, of all tables together: one index lookup
/// each, far under Convex's limits on reads; the bytes they read bound it
/// further (`DocSizes`). A live batch's misses fit one call.
const LOAD_CHUNK: usize = 256;

pub struct Engine {
    store: Arc<dyn DocumentStore>,
    generation: u64,
    tuning: Tuning,
    /// For `load` (hydration) and `apply` (dispatch); both count retries.
    retry: RetryPolicy,
    retry_apply: RetryPolicy,
    backpressured: std::cell::Cell<bool>,
    metrics: Metrics,
    cache: StateCache,
    /// The largest document seen per table, to size hydration loads.
    doc_sizes: DocSizes,
    open: OpenBatch,
    open_id: Option<BatchId>,
    watermark: Watermark,
    inflight_batches: usize,
    inflight_bytes: usize,
    ack_tx: mpsc::UnboundedSender<Ack>,
    /// The flush LSN, readable while the engine is borrowed (status ticks
    /// during a long hydration).
    flush_shared: Arc<AtomicU64>,
    txn_commit_time_us: i64,
    /// When the server sent the newest WAL message (Unix µs, server clock).
    sent_at_us: i64,
    /// Which batch in flight a new batch must wait for (see `order`).
    order: WriteOrder,
    /// Our writer epoch (`DocumentStore::acquire_writer`), sent with every
    /// apply; `None` writes unfenced.
    epoch: Option<u64>,
    /// Why Convex refused our epoch, once it did: nothing more may be
    /// written or confirmed by this engine.
    fenced: Option<String>,
    /// Keys per `load` call at most ([`LOAD_CHUNK`]; tests lower it).
    load_chunk: usize,
}

impl Engine {
    pub fn new(
        store: Arc<dyn DocumentStore>,
        generation: u64,
        tuning: Tuning,
        metrics: Metrics,
    ) -> (Engine, mpsc::UnboundedReceiver<Ack>) {
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        // Loads and applies retry within one budget.
        let budget = Arc::new(crate::sink::retry_budget::RetryBudget::default());
        let engine = Engine {
            store,
            generation,
            cache: StateCache::new(tuning.cache_bytes),
            doc_sizes: DocSizes::default(),
            tuning,
            retry: counted_retry(&metrics, "load", &budget),
            retry_apply: counted_retry(&metrics, "apply", &budget),
            backpressured: std::cell::Cell::new(false),
            metrics,
            open: OpenBatch::default(),
            open_id: None,
            watermark: Watermark::new(Lsn(0)),
            inflight_batches: 0,
            inflight_bytes: 0,
            ack_tx,
            flush_shared: Arc::new(AtomicU64::new(0)),
            txn_commit_time_us: 0,
            sent_at_us: 0,
            order: WriteOrder::default(),
            epoch: None,
            fenced: None,
            load_chunk: LOAD_CHUNK,
        };
        (engine, ack_rx)
    }

    /// Starts progress tracking at the slot's confirmed position (after a
    /// connect or reconnect; call only when [`Engine::is_drained`]).
    pub fn reset_progress(&mut self, start: Lsn) {
        self.watermark = Watermark::new(start);
        self.publish_flush();
    }

    /// Bumps the generation's writer epoch and sends it with every apply
    /// from now on. Call before the first load (hydration): whatever an
    /// earlier writer landed is then visible to our reads, and nothing it
    /// still sends can land after them (`convex/writer.ts`).
    pub async fn acquire_writer(&mut self, holder: &str) -> Result<u64, SinkError> {
        let store = &self.store;
        let generation = self.generation;
        // Bounded: a session that cannot reach Convex ends (and is retried
        // with backoff) instead of holding the slot without writing.
        let epoch = crate::sink::with_retry(&RetryPolicy::bounded(8), "acquireWriter", || {
            store.acquire_writer(generation, holder)
        })
        .await?;
        self.epoch = Some(epoch);
        Ok(epoch)
    }

    /// The fenced error once Convex refused our epoch: another process
    /// writes the generation, so this engine must stop.
    pub fn fenced(&self) -> Option<SinkError> {
        self.fenced.as_ref().map(|message| SinkError::Function {
            path: crate::sink::api::APPLY.to_string(),
            message: message.clone(),
            data: Some(serde_json::json!({"code": "Fenced"})),
        })
    }

    /// The largest row read whole (`--max-event-bytes`).
    pub fn max_event_bytes(&self) -> usize {
        self.tuning.max_event_bytes
    }

    pub fn flush_lsn(&self) -> Lsn {
        self.watermark.flush_lsn()
    }

    pub fn received_lsn(&self) -> Lsn {
        self.watermark.received_lsn()
    }

    pub fn flush_handle(&self) -> Arc<AtomicU64> {
        self.flush_shared.clone()
    }

    fn publish_flush(&self) {
        let flush = self.watermark.flush_lsn();
        self.flush_shared.store(flush.0, Ordering::Relaxed);
        self.metrics.flushed_lsn_bytes.set(flush.0 as f64);
    }

    pub fn observe_wal_end(&mut self, lsn: Lsn) {
        self.watermark.observe_wal_end(lsn);
        self.metrics
            .received_lsn_bytes
            .set(self.watermark.received_lsn().0 as f64);
        self.publish_flush();
    }

    pub fn begin(&mut self, commit_time_us: i64) {
        self.watermark.begin();
        self.txn_commit_time_us = commit_time_us;
    }

    /// The stream is inside a transaction (its commit not read yet).
    pub fn in_transaction(&self) -> bool {
        self.watermark.in_transaction()
    }

    pub fn commit(&mut self, end_lsn: Lsn) {
        self.watermark.commit(end_lsn);
        self.metrics
            .received_lsn_bytes
            .set(self.watermark.received_lsn().0 as f64);
        self.publish_flush();
    }

    /// Plans one event into the open batch. Returns true when the batch is
    /// full and should be closed before reading more.
    pub fn push(&mut self, ev: RuntimeEvent) -> bool {
        let plan = projection::plan_owned_with(ev, Some(&mut self.open.key_names));
        self.admit(plan)
    }

    /// Plans a dead letter the source made itself (an event too large to
    /// read whole); otherwise like [`Engine::push`].
    pub fn push_dead_letter(&mut self, dl: projection::DeadLetter) -> bool {
        self.admit(Plan::DeadLetter(dl))
    }

    fn admit(&mut self, plan: Plan) -> bool {
        self.metrics.events_decoded_total.inc();
        match plan {
            Plan::Ignored(reason) => {
                self.metrics
                    .events_ignored_total
                    .with_label_values(&[reason.as_str()])
                    .inc();
                return false;
            }
            Plan::DeadLetter(dl) => {
                self.inflight_bytes += crate::pipeline::batch::EVENT_OVERHEAD + dl.payload.len();
                self.open.push_dead_letter(dl);
            }
            Plan::Fold(folding) => {
                let bytes = folding.approx_bytes();
                self.inflight_bytes += bytes;
                let (cache, sizes) = (&self.cache, &self.doc_sizes);
                self.open.push_fold(folding, bytes, |k| {
                    cache.doc_bytes(k).unwrap_or_else(|| sizes.typical(k.table))
                });
            }
        }
        let id = *self
            .open_id
            .get_or_insert_with(|| self.watermark.peek_batch_id());
        self.watermark.event_in_batch(id);
        if self.txn_commit_time_us != 0 {
            self.open.note_commit_time(self.txn_commit_time_us);
        }
        self.metrics.inflight_bytes.set(self.inflight_bytes as i64);
        self.batch_full()
    }

    /// Keys per `load` call at most, for tests of batches that need more
    /// than one call.
    #[cfg(test)]
    pub(crate) fn set_load_chunk(&mut self, keys: usize) {
        self.load_chunk = keys.max(1);
    }

    pub fn has_open_batch(&self) -> bool {
        !self.open.is_empty()
    }

    pub fn batch_full(&self) -> bool {
        let scale = if self.catching_up() {
            CATCH_UP_SCALE
        } else {
            1
        };
        self.open.is_full(
            self.tuning.batch_max_events * scale,
            self.tuning.batch_max_bytes * scale,
        )
    }

    /// The server's send time (Unix µs) of the WAL message being decoded.
    pub fn observe_send_time(&mut self, unix_us: i64) {
        self.sent_at_us = unix_us;
    }

    /// Draining a backlog: the transaction being read committed well before
    /// the server sent it.
    pub fn catching_up(&self) -> bool {
        self.txn_commit_time_us != 0
            && self.sent_at_us.saturating_sub(self.txn_commit_time_us) > CATCH_UP_LAG_US
    }

    /// When the open batch must close by time.
    pub fn batch_deadline(&self) -> Option<Instant> {
        let fill = if self.catching_up() {
            self.tuning.batch_fill.max(CATCH_UP_FILL)
        } else {
            self.tuning.batch_fill
        };
        self.open.opened_at.map(|t| t + fill)
    }

    /// A batch may be dispatched now: fewer are in flight than configured
    /// and than the store takes at once (its adaptive limit). A batch
    /// closed beyond that would only queue for a slot as one more small
    /// mutation, while the open batch can keep taking events.
    pub fn has_slot(&self) -> bool {
        let store = self.store.apply_limit().unwrap_or(usize::MAX).max(1);
        self.inflight_batches < self.tuning.max_inflight_batches.min(store)
    }

    /// Reading more is allowed: the byte budget has room and a full batch is
    /// not waiting for a slot. Otherwise this is backpressure.
    pub fn can_read(&self) -> bool {
        let full_and_waiting = self.batch_full() && !self.has_slot();
        let ok = self.inflight_bytes < self.tuning.inflight_bytes && !full_and_waiting;
        if self.backpressured.replace(!ok) == ok {
            // Changed: record it (the metric keeps the paused seconds).
            self.metrics.set_backpressure(!ok);
        }
        ok
    }

    pub fn inflight_batches(&self) -> usize {
        self.inflight_batches
    }

    /// Nothing open, nothing in flight.
    pub fn is_drained(&self) -> bool {
        self.open.is_empty() && self.inflight_batches == 0
    }

    /// Closes the open batch: hydrates the keys the cache lacks, folds,
    /// and dispatches the writes. Call only when [`Engine::has_slot`].
    pub async fn close_batch(&mut self) -> Result<(), SinkError> {
        if let Some(fenced) = self.fenced() {
            return Err(fenced);
        }
        if self.open.is_empty() {
            return Ok(());
        }
        self.hydrate().await?;
        let batch = self.open.take();
        let id = self.watermark.next_batch_id();
        debug_assert_eq!(Some(id), self.open_id);
        self.open_id = None;

        let span = tracing::debug_span!("batch", id, events = batch.len());
        let _enter = span.enter();

        // Write order across batches in flight: see `pipeline::order`.
        let (done_tx, done_rx) = watch::channel(false);
        let mut after = After::default();
        let OpenBatch {
            items,
            key_list,
            commit_times_us,
            ..
        } = batch;
        // Every document of the batch is lent out of the cache once: the
        // fold reaches states by the numbers the batch gave its keys (no
        // hashing per event), and each is given back once, by `serialise`.
        let mut states: Vec<Option<Stored>> = key_list
            .iter()
            .map(|k| self.cache.lend(k).unwrap_or(None))
            .collect();
        let folded = self.fold_items(items, &mut states, id, &done_rx, &mut after);
        let events_by_id = folded.events_by_id();
        let serialised = self.serialise(key_list, states, events_by_id, id, &mut after);
        tracing::debug!(
            first = folded.first.map(|p| p.to_string()),
            last = folded.last.map(|p| p.to_string()),
            writes = serialised.writes.len(),
            dead_letters = folded.dead_letters.len(),
            "batch folded"
        );
        self.cache.evict_if_needed();
        // Written documents count against the in-flight budget until
        // acknowledged: with large documents (timelines, inboxes) they, not
        // the events, are most of the memory a batch holds.
        self.inflight_bytes += serialised.bytes;
        self.metrics.inflight_bytes.set(self.inflight_bytes as i64);

        let job = Dispatch {
            id,
            after: after.0.into_iter().map(|(_, rx)| rx).collect(),
            done: done_tx,
            generation: self.generation,
            epoch: self.epoch,
            writes: serialised.writes,
            dead_letters: folded.dead_letters,
            events: folded.events,
            events_by_key: serialised.slot_of,
            events_of: serialised.events_of,
            event_bytes: folded.event_bytes + serialised.bytes,
            commit_times_us,
            max_request_bytes: self.tuning.batch_max_bytes,
        };
        self.inflight_batches += 1;
        self.metrics
            .inflight_batches
            .set(self.inflight_batches as i64);
        dispatch::spawn(
            self.store.clone(),
            self.retry_apply.clone(),
            self.metrics.clone(),
            job,
            self.ack_tx.clone(),
        );
        Ok(())
    }

    /// Folds the batch's items onto the lent `states`, in order; notes the
    /// earlier batches this one must wait for (a second `run.created` of a
    /// run whose first is in flight).
    fn fold_items(
        &mut self,
        items: Vec<Item>,
        states: &mut [Option<Stored>],
        id: BatchId,
        done_rx: &Done,
        after: &mut After,
    ) -> FoldedItems {
        let mut out = FoldedItems {
            changes: Vec::with_capacity(items.len() * 2),
            changes_per_id: vec![0; states.len()],
            events: Vec::with_capacity(items.len()),
            dead_letters: Vec::new(),
            event_bytes: 0,
            first: None,
            last: None,
        };
        let (mut folded, mut skipped) = (0u64, 0u64);
        for item in items {
            match item {
                Item::DeadLetter(dl) => {
                    out.event_bytes += crate::pipeline::batch::EVENT_OVERHEAD + dl.payload.len();
                    self.count_dead_letter(&dl);
                    out.dead_letters.push(*dl);
                }
                Item::Fold {
                    folding,
                    ids,
                    bytes,
                } => {
                    out.event_bytes += bytes;
                    out.first.get_or_insert(folding.position);
                    out.last = Some(folding.position);
                    let mut lent = LentStates {
                        states,
                        ids: &ids,
                        spare: None,
                    };
                    match projection::fold(&folding, &mut lent) {
                        FoldOutcome::Folded { changed } => {
                            folded += 1;
                            let writes_thread =
                                changed.keys(&folding).any(|k| k.table == Table::Threads);
                            if let (true, Some(primary)) = (writes_thread, folding.keys().first()) {
                                // An earlier batch in flight wrote another
                                // run.created of this run: our run holds it.
                                after.add(self.order.wrote_thread(primary, id, done_rx));
                            }
                            let idx = out.events.len() as u32;
                            for i in changed.indexes() {
                                if let Some(n) = out.changes_per_id.get_mut(ids[i] as usize) {
                                    *n += 1;
                                    out.changes.push((ids[i], idx));
                                }
                            }
                            out.events.push(folding.into_folded());
                        }
                        FoldOutcome::Skipped => skipped += 1,
                        FoldOutcome::DeadLetter(dl) => {
                            self.count_dead_letter(&dl);
                            out.dead_letters.push(dl);
                        }
                    }
                }
            }
        }
        self.metrics.events_folded_total.inc_by(folded);
        self.metrics.events_skipped_total.inc_by(skipped);
        out
    }

    fn count_dead_letter(&self, dl: &projection::DeadLetter) {
        self.metrics
            .events_dead_lettered_total
            .with_label_values(&[dl.code()])
            .inc();
    }

    /// Gives every state back to the cache; each written document is
    /// pinned and serialised here, once, from the cache (no copy of the
    /// typed document): request bodies are then concatenations of these,
    /// and splitting a request re-encodes nothing.
    fn serialise(
        &mut self,
        key_list: Vec<DocKey>,
        states: Vec<Option<Stored>>,
        events_by_id: Vec<Vec<u32>>,
        id: BatchId,
        after: &mut After,
    ) -> Serialised {
        let written = events_by_id.iter().filter(|e| !e.is_empty()).count();
        let mut out = Serialised {
            writes: Vec::with_capacity(written),
            slot_of: DocKeyMap::with_capacity_and_hasher(written, Default::default()),
            events_of: Vec::with_capacity(written),
            bytes: 0,
        };
        for ((key, state), events) in key_list.into_iter().zip(states).zip(events_by_id) {
            let is_written = !events.is_empty();
            let Some(stored) = self.cache.give_back(&key, state, is_written) else {
                continue;
            };
            let doc = DocJson::of(&stored.doc);
            // Held until the ack: the serialised copy, the request body
            // that repeats it, and the pinned state, which the cache may
            // not evict meanwhile, so its budget does not bound it.
            out.bytes += WRITE_OVERHEAD
                + doc.heap_bytes()
                + doc.as_bytes().len()
                + stored.doc.approx_bytes();
            self.doc_sizes.observe(key.table, doc.as_bytes().len());
            let position = stored.position;
            // Once per written stream document, not per event: what it
            // waits for depends only on batches before this one.
            if key.table == Table::Runs && !self.order.is_empty() {
                after.add(self.order.wait_for(&key, id));
            }
            out.slot_of.insert(key.clone(), out.writes.len());
            out.events_of.push(events);
            out.writes
                .push(dispatch::PlannedWrite { key, position, doc });
        }
        out
    }

    /// Loads every key of the open batch the cache does not hold, retrying
    /// transient failures: one `load` call for all of them, whatever their
    /// tables, unless they are more than one call may read
    /// ([`DocSizes::load_calls`]);
    /// then the calls run concurrently. A call that reads too much anyway
    /// is split ([`load_splitting`]).
    ///
    /// One call is one Convex snapshot, so the misses of a batch that fit
    /// one call are never read on both sides of another writer's mutation;
    /// cached states and larger batches can be, which fencing (§4) covers.
    async fn hydrate(&mut self) -> Result<(), SinkError> {
        let mut missing: Vec<DocKey> = (self.open.key_list.iter())
            .filter(|k| !self.cache.contains(k))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort_unstable();
        let calls = self.doc_sizes.load_calls(&missing, self.load_chunk);
        let loads = calls.into_iter().map(|part| {
            let store = &*self.store;
            let generation = self.generation;
            let retry = &self.retry;
            async move {
                let loaded = load_splitting(store, retry, generation, part).await?;
                Ok::<_, SinkError>((part, loaded))
            }
        });
        let results = futures::future::try_join_all(loads).await?;
        for (part, loaded) in results {
            let mut found: HashMap<DocKey, Stored> = HashMap::with_capacity(loaded.len());
            for d in loaded {
                let table = Table::parse(&d.table).ok_or_else(|| {
                    SinkError::Decode(format!(
                        "a load answered table {:?}, which is not ours",
                        d.table
                    ))
                })?;
                let position = Position::decode(&d.position).map_err(SinkError::Decode)?;
                let doc = Doc::from_json(table, d.doc)
                    .map_err(|e| SinkError::Decode(format!("{table:?} {}: {e}", d.key)))?;
                self.doc_sizes.observe(table, doc.approx_bytes());
                found.insert(DocKey::new(table, d.key), Stored { position, doc });
            }
            for key in part {
                let state = found.remove(key);
                self.cache.insert_loaded(key.clone(), state);
            }
        }
        Ok(())
    }

    /// Takes an acknowledgement: unpins, forgets rejected keys, advances
    /// the watermark.
    pub fn handle_ack(&mut self, ack: Ack) {
        for k in &ack.written {
            self.cache.unpin(k);
        }
        for k in &ack.rejected {
            self.cache.forget(k);
        }
        self.order.acked(ack.id);
        self.inflight_batches -= 1;
        self.inflight_bytes = self.inflight_bytes.saturating_sub(ack.event_bytes);
        if let Some(why) = ack.fenced {
            // Never acknowledged: the flush LSN stays before this batch,
            // and the new owner replays it from the slot.
            self.fenced.get_or_insert(why);
            self.publish_flush();
            return;
        }
        self.watermark.ack(ack.id);
        self.metrics
            .inflight_batches
            .set(self.inflight_batches as i64);
        self.metrics.inflight_bytes.set(self.inflight_bytes as i64);
        let now_us = chrono::Utc::now().timestamp_micros();
        for t in &ack.commit_times_us {
            let lag = (now_us - t) as f64 / 1e6;
            for table in &ack.tables {
                self.metrics.observe_commit_to_ack(table, lag);
            }
            self.metrics.lag_seconds.set(lag.max(0.0));
        }
        self.publish_flush();
    }
}

/// Loads `keys`, retrying transient failures; when Convex answers that the
/// load read (or returned) too much, loads the halves instead (the estimate
/// behind the call fell short), down to single keys.
async fn load_splitting(
    store: &dyn DocumentStore,
    retry: &RetryPolicy,
    generation: u64,
    keys: &[DocKey],
) -> Result<Vec<crate::sink::LoadedDoc>, SinkError> {
    let mut loaded = Vec::new();
    let mut pending = vec![keys];
    while let Some(part) = pending.pop() {
        match crate::sink::with_retry(retry, "load", || store.load(generation, part)).await {
            Ok(docs) => loaded.extend(docs),
            Err(e) if part.len() > 1 && crate::sink::limits::is_read_limit(&e) => {
                tracing::warn!(keys = part.len(), error = %e, "a Convex load read too much; loading it in halves");
                let (first, second) = part.split_at(part.len() / 2);
                pending.push(second);
                pending.push(first);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(loaded)
}

/// Retry forever within `budget`, counting each retry (by function) and
/// the transient error behind it (by class) in the metrics.
fn counted_retry(
    metrics: &Metrics,
    function: &'static str,
    budget: &Arc<crate::sink::retry_budget::RetryBudget>,
) -> RetryPolicy {
    let m = metrics.clone();
    RetryPolicy::forever()
        .with_budget(budget.clone())
        .with_hook(Arc::new(move |e: &SinkError, _n: u32, _d| {
            m.convex_retries_total.with_label_values(&[function]).inc();
            m.convex_error(e.is_transient(), e.class());
        }))
}

/// The fold's view of a batch's lent states: the state of an event's i-th
/// key is `states[ids[i]]`.
/// The earlier batches in flight one batch must wait for, each once.
#[derive(Default)]
struct After(Vec<(BatchId, Done)>);

impl After {
    fn add(&mut self, earlier: Option<(BatchId, Done)>) {
        if let Some((b, done)) = earlier {
            if !self.0.iter().any(|(a, _)| *a == b) {
                self.0.push((b, done));
            }
        }
    }
}

/// What folding a batch's items produced.
struct FoldedItems {
    /// (key id, index into `events`) for every change, in fold order.
    changes: Vec<(u32, u32)>,
    /// Changes per key id (one entry per key of the batch), to size each
    /// key's list exactly.
    changes_per_id: Vec<u32>,
    events: Vec<FoldedEvent>,
    dead_letters: Vec<projection::DeadLetter>,
    event_bytes: usize,
    first: Option<Position>,
    last: Option<Position>,
}

impl FoldedItems {
    /// For each key id, the events behind its write (to dead-letter them if
    /// Convex rejects the document); empty: the key was not written. Made
    /// from the (id, event) pairs at each key's exact size: growing a list
    /// per key was ~2 % of a drain's instructions.
    fn events_by_id(&self) -> Vec<Vec<u32>> {
        let mut by_id: Vec<Vec<u32>> = self
            .changes_per_id
            .iter()
            .map(|&n| Vec::with_capacity(n as usize))
            .collect();
        for &(id, idx) in &self.changes {
            if let Some(list) = by_id.get_mut(id as usize) {
                list.push(idx);
            }
        }
        by_id
    }
}

/// The written documents of a batch, serialised.
struct Serialised {
    writes: Vec<dispatch::PlannedWrite>,
    slot_of: DocKeyMap<usize>,
    events_of: Vec<Vec<u32>>,
    /// Held in memory until the ack (see `Engine::serialise`).
    bytes: usize,
}

struct LentStates<'a> {
    states: &'a mut [Option<Stored>],
    ids: &'a [u32; MAX_KEYS_PER_EVENT],
    /// Answer for an index without a key (cannot happen: every key of a
    /// planned event got an id): a fresh absent state, never written back.
    spare: Option<Stored>,
}

impl StateAccess for LentStates<'_> {
    fn get_mut(&mut self, i: usize, _key: &DocKey) -> &mut Option<Stored> {
        let id = self.ids.get(i).copied().unwrap_or(u32::MAX) as usize;
        match self.states.get_mut(id) {
            Some(state) => state,
            None => {
                self.spare = None;
                &mut self.spare
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(tuning: Tuning) -> Engine {
        let store = Arc::new(crate::sink::memory::MemoryStore::new());
        let metrics = Metrics::new().expect("metrics");
        Engine::new(store, 1, tuning, metrics).0
    }

    fn step(seq: i64) -> RuntimeEvent {
        RuntimeEvent::new(
            seq,
            &format!("run:r{seq}"),
            1,
            "run.started",
            "u",
            "{}",
            "2026-11-23 08:00:00+00",
        )
        .at(Position::new(Lsn(100), seq as u64))
    }

    #[test]
    fn catching_up_means_a_commit_over_a_second_before_the_server_sent_it() {
        let mut e = engine(Tuning::default());
        assert!(!e.catching_up(), "nothing read yet");
        let commit = 1_795_420_800_000_000;
        e.begin(commit);
        e.observe_send_time(commit + 400_000);
        assert!(!e.catching_up(), "0.4 s behind is live traffic");
        e.observe_send_time(commit + 1_500_000);
        assert!(e.catching_up(), "1.5 s behind is a backlog");
    }

    #[test]
    fn a_backlog_batch_fills_longer_and_holds_more_events() {
        let tuning = Tuning {
            batch_max_events: 4,
            ..Tuning::default()
        };
        let mut e = engine(tuning.clone());
        let commit = 1_795_420_800_000_000;
        e.begin(commit);
        e.observe_send_time(commit + 1_000);
        for seq in 1..=4 {
            e.push(step(seq));
        }
        assert!(e.batch_full(), "live: full at batch_max_events");
        let opened = e.open.opened_at.expect("opened");
        assert_eq!(e.batch_deadline(), Some(opened + tuning.batch_fill));

        e.observe_send_time(commit + 5_000_000);
        assert!(!e.batch_full(), "catching up: limits scale");
        assert_eq!(e.batch_deadline(), Some(opened + CATCH_UP_FILL));
        for seq in 5..=(4 * CATCH_UP_SCALE as i64) {
            e.push(step(seq));
        }
        assert!(e.batch_full());
    }
}
