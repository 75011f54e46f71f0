//! Convex side: HTTP client (wire format, errors, retries), batch limits,
//! and a null sink for scale tests.
//!
//! ```text
//! ApplyRequest ─encode()─▶ Bytes ─apply_encoded()─▶ POST /api/mutation ─▶ Convex
//!                 │                     ▲
//!   limits::BatchBudget (size)     retry::with_retry (transient only, backoff + jitter)
//! ```
//!
//! * [`client`]: one request, one attempt; classifies failures ([`error`]).
//! * [`api`]: typed calls to `convex/projector.ts` (apply, load, page, ...).
//! * [`encoding`]: Convex JSON rules (int64, finite floats, reserved names).
//! * [`limits`]: keeps one mutation well inside Convex's limits.
//! * [`null`]: Convex-wire server that acknowledges everything.

pub mod api;
pub mod client;
pub mod encoding;
pub mod error;
pub mod limits;
pub mod null;
pub mod retry;

pub use api::{
    ensure_active_generation, ApplyRequest, ApplyResult, DeadLetterWrite, DocJson, LoadedDoc, Page,
    Write,
};
pub use client::{ConvexClient, Kind};
pub use error::SinkError;
pub use limits::{BatchBudget, BatchLimits};
pub use null::NullSink;
pub use retry::{with_retry, RetryHook, RetryPolicy};
