//! Convex side: HTTP client (wire format, errors, retries), batch limits,
//! and a null sink for scale tests.
//!
//! ```text
//! ApplyRequest ─encode()─▶ Bytes ─apply_encoded()─▶ POST /api/mutation ─▶ Convex
//!                                       ▲
//!                                  retry::with_retry (transient only, backoff + jitter)
//! ```
//!
//! * [`client`]: one request, one attempt; classifies failures ([`error`]).
//! * [`api`]: typed calls to `convex/projector.ts` (apply, load, page, ...).
//! * [`encoding`]: numbers as Convex sends them back (float64, int64).
//! * [`limits`]: Convex's limits as the real backend counts them.
//! * [`null`]: Convex-wire server that acknowledges everything.
//! * [`schema`]: the contract version shared with the Convex app (skew).

pub(crate) mod adaptive;
pub mod api;
pub mod client;
pub(crate) mod encoding;
pub(crate) mod error;
pub(crate) mod limits;
#[cfg(test)]
pub(crate) mod memory;
pub mod null;
pub(crate) mod retry;
pub(crate) mod retry_budget;
pub mod schema;
pub(crate) mod store;
pub(crate) mod write_rate;

pub use api::{ApplyRequest, ApplyResult, DeadLetterWrite, DocJson, LoadedDoc, Page, Write};
pub use client::{ConvexClient, Kind};
pub use error::SinkError;
pub use null::NullSink;
pub use retry::{with_retry, RetryHook, RetryPolicy};
pub(crate) use store::DocumentStore;
