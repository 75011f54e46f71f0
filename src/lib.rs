//! projector: Postgres (pgoutput) to Convex CDC projection service.
//!
//! The flow, top to bottom: [`source`] (replication client, pgoutput
//! decoder) → [`projection`] (reducers, state cache) → [`sink`] (Convex
//! client, batches) → [`pipeline`] (the apply loop, acknowledgement
//! watermark, progress confirmed to Postgres).

pub mod cli;
pub mod config;
pub(crate) mod demo;
pub mod event;
pub mod generation;
pub mod history;
pub(crate) mod identity;
pub mod loadgen;
pub mod logging;
pub mod metrics;
pub(crate) mod pipeline;
pub mod projection;
pub(crate) mod rebuild;
pub mod sandbox;
pub(crate) mod secret;
pub mod setup;
pub mod sink;
pub mod source;
pub(crate) mod status;
pub mod verify;
