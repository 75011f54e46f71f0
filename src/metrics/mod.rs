//! Operations surface: metric names ([`names`]), the typed metric set
//! ([`Metrics`]), readiness ([`Health`]), slot health prediction
//! ([`SlotMonitor`]) and the `/metrics` `/healthz` `/readyz` server
//! ([`serve`]).
//!
//! ```text
//! pipeline ──inc/set──▶ Metrics (own Registry) ──encode──▶ GET /metrics
//!          ──flags────▶ Health ─────────────readiness────▶ GET /readyz (+ projector_ready)
//! slot poll ─observe──▶ SlotMonitor ──gauges + ETA──▶ Metrics
//! ```

pub(crate) mod health;
pub mod names;
pub mod registry;
pub(crate) mod server;
pub(crate) mod slot;

pub use health::{Health, DEFAULT_WEDGE_AFTER};
pub use registry::{Metrics, MetricsError, PROJECTIONS, WAL_STATUSES};
pub use server::{router, serve, ServeError};
pub(crate) use slot::SlotMonitor;
