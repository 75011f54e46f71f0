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

pub mod backfill;
pub mod batch;
pub mod cache;
pub mod context;
pub mod copy;
pub mod dispatch;
pub mod driver;
pub mod engine;
pub mod order;
pub mod run;
pub mod service;
pub mod session;
pub mod slot_poller;
pub mod violations;
pub mod watermark;

#[cfg(test)]
mod engine_tests;

pub use run::{main, RunArgs};
