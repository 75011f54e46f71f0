//! The one way to drive an [`Engine`]: the streaming session, the
//! rebuild's snapshot copy and the settling after a session all go through
//! these few moves, so batch closing, backpressure and acknowledgement
//! handling are written once.
//!
//! The engine sends one [`Ack`] per dispatched batch on a channel whose
//! sender it holds itself, so `acks` never closes while the driver lives.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Tuning;
use crate::event::RuntimeEvent;
use crate::metrics::Metrics;
use crate::pipeline::dispatch::Ack;
use crate::pipeline::engine::Engine;
use crate::sink::{DocumentStore, SinkError};

pub(crate) struct Driver {
    pub(crate) engine: Engine,
    /// Public so a `select!` can wait on it beside other sources; hand
    /// what arrives to [`Driver::on_ack`].
    pub(crate) acks: mpsc::UnboundedReceiver<Ack>,
}

impl Driver {
    pub(crate) fn new(
        store: Arc<dyn DocumentStore>,
        generation: u64,
        tuning: Tuning,
        metrics: Metrics,
    ) -> Driver {
        let (engine, acks) = Engine::new(store, generation, tuning, metrics);
        Driver { engine, acks }
    }

    /// Makes this driver the writer of its generation (fencing any earlier
    /// one); call before anything is loaded (see [`Engine::acquire_writer`]).
    pub(crate) async fn acquire_writer(&mut self, holder: &str) -> Result<u64, SinkError> {
        self.engine.acquire_writer(holder).await
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    pub(crate) fn on_ack(&mut self, ack: Ack) {
        self.engine.handle_ack(ack);
    }

    /// Takes every acknowledgement that already arrived.
    pub(crate) fn take_ready_acks(&mut self) {
        while let Ok(ack) = self.acks.try_recv() {
            self.engine.handle_ack(ack);
        }
    }

    /// Waits for the next acknowledgement (call only with batches in flight).
    async fn next_ack(&mut self) {
        if let Some(ack) = self.acks.recv().await {
            self.engine.handle_ack(ack);
        }
    }

    /// Closes the open batch, first waiting for a free dispatch slot.
    pub(crate) async fn close_batch(&mut self) -> Result<(), SinkError> {
        while !self.engine.has_slot() {
            self.next_ack().await;
        }
        self.engine.close_batch().await
    }

    /// Plans one event from a source that can wait (the snapshot copy):
    /// a full batch is closed, and while the in-flight byte budget is full
    /// acknowledgements are awaited instead of closing small batches.
    pub(crate) async fn push_waiting(&mut self, ev: RuntimeEvent) -> Result<(), SinkError> {
        let full = self.engine.push(ev);
        self.after_push(full).await
    }

    /// Backpressure after one planned event: a full batch is closed, and
    /// while the in-flight budget is full acknowledgements are awaited.
    async fn after_push(&mut self, full: bool) -> Result<(), SinkError> {
        self.take_ready_acks();
        while !full && !self.engine.can_read() && self.engine.inflight_batches() > 0 {
            self.next_ack().await;
        }
        if full || !self.engine.can_read() {
            self.close_batch().await?;
        }
        Ok(())
    }

    /// [`Driver::push_waiting`] for a dead letter the source made itself
    /// (a row too large to read whole).
    pub(crate) async fn push_dead_letter_waiting(
        &mut self,
        dl: crate::projection::DeadLetter,
    ) -> Result<(), SinkError> {
        let full = self.engine.push_dead_letter(dl);
        self.after_push(full).await
    }

    /// Closes the open batch and waits until every batch is acknowledged.
    /// A fenced engine only waits: its open batch belongs to the new owner.
    pub(crate) async fn settle(&mut self) -> Result<(), SinkError> {
        if self.engine.has_open_batch() && self.engine.fenced().is_none() {
            self.close_batch().await?;
        }
        while self.engine.inflight_batches() > 0 {
            self.next_ack().await;
        }
        Ok(())
    }
}
