//! The apply loop and `projector run`.
//!
//! ```text
//!  ReplicationStream ──XLogData──▶ pgoutput::decode ──▶ EventDecoder ──▶ Engine::push
//!        ▲   │ keepalive                                                 │ close batch
//!        │   └──────────▶ Engine::observe_wal_end                        ▼
//!        │                                                     dispatch (tasks) ─▶ Convex
//!        └── standby status (timer; reply-requested at once) ◀── flush LSN ◀── acks
//! ```
//!
//! One task owns the stream and the engine; Convex calls run in spawned
//! tasks, so status updates to Postgres never wait on the sink. Reading
//! stops (backpressure) while the in-flight byte budget is full.

pub(crate) mod backfill;
pub(crate) mod batch;
pub(crate) mod cache;
pub(crate) mod context;
pub(crate) mod copy;
pub(crate) mod dispatch;
pub(crate) mod driver;
pub(crate) mod engine;
pub(crate) mod order;
pub(crate) mod run;
pub(crate) mod service;
pub(crate) mod session;
pub(crate) mod slot_poller;
pub(crate) mod violations;
pub(crate) mod watermark;

#[cfg(test)]
mod engine_tests;

pub(crate) use run::{main, RunArgs};
