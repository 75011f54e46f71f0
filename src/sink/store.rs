//! The narrow interface the engine writes through: `apply` a request body
//! and `load` stored states. [`ConvexClient`] is the production store; the
//! in-memory [`crate::sink::memory::MemoryStore`] lets the engine be tested
//! in-process with deterministic faults and paused time.
//!
//! One call is one attempt: retries are the caller's (`with_retry`).

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::projection::DocKey;
use crate::sink::{ApplyResult, ConvexClient, LoadedDoc, SinkError};

/// What a store call returns: boxed, so the engine holds `Arc<dyn DocumentStore>`
/// (one allocation per request, negligible beside a round trip).
pub(crate) type StoreFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, SinkError>> + Send + 'a>>;

pub(crate) trait DocumentStore: Send + Sync + 'static {
    /// One `projector:apply` with a body from `ApplyRequest::encode_raw`.
    fn apply(&self, body: Bytes) -> StoreFuture<'_, ApplyResult>;

    /// The stored states of `keys` in `generation`, of any tables, in one
    /// call (absent keys are left out).
    fn load<'a>(&'a self, generation: u64, keys: &'a [DocKey]) -> StoreFuture<'a, Vec<LoadedDoc>>;

    /// Bumps `generation`'s writer epoch for `holder`, fencing every apply
    /// that carries an older one. Returns the new epoch.
    fn acquire_writer<'a>(&'a self, generation: u64, holder: &'a str) -> StoreFuture<'a, u64>;

    /// How many applies it takes at once now, if it limits them
    /// (`sink::adaptive`): the engine closes no more batches than that, so
    /// events wait in a growing open batch instead of in small closed ones
    /// queued for a slot, each a mutation.
    fn apply_limit(&self) -> Option<usize> {
        None
    }
}

impl DocumentStore for ConvexClient {
    fn apply(&self, body: Bytes) -> StoreFuture<'_, ApplyResult> {
        Box::pin(self.apply_encoded(body))
    }

    fn load<'a>(&'a self, generation: u64, keys: &'a [DocKey]) -> StoreFuture<'a, Vec<LoadedDoc>> {
        Box::pin(ConvexClient::load(self, generation, keys))
    }

    fn acquire_writer<'a>(&'a self, generation: u64, holder: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let (epoch, previous) = ConvexClient::acquire_writer(self, generation, holder).await?;
            if let Some(previous) = previous.filter(|p| p != holder) {
                tracing::info!(generation, epoch, %previous, "took over as the writer of the generation; the previous writer is fenced");
            }
            Ok(epoch)
        })
    }
}

/// A shared store is a store (layers such as `sink::adaptive` wrap one).
impl<T: DocumentStore + ?Sized> DocumentStore for std::sync::Arc<T> {
    fn apply(&self, body: Bytes) -> StoreFuture<'_, ApplyResult> {
        (**self).apply(body)
    }

    fn load<'a>(&'a self, generation: u64, keys: &'a [DocKey]) -> StoreFuture<'a, Vec<LoadedDoc>> {
        (**self).load(generation, keys)
    }

    fn acquire_writer<'a>(&'a self, generation: u64, holder: &'a str) -> StoreFuture<'a, u64> {
        (**self).acquire_writer(generation, holder)
    }

    fn apply_limit(&self) -> Option<usize> {
        (**self).apply_limit()
    }
}
