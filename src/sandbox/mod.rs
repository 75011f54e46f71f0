//! Throwaway infrastructure on this machine, for `demo`, benchmarks and
//! tests: a PostgreSQL cluster in a temp dir, the local Convex backend and
//! the demo's app backend (token issuer and live page).
//! Never used by `run` against real deployments; `command` is the hidden
//! `projector sandbox` that starts them for scripts.

pub(crate) mod command;
pub mod convex;
pub mod postgres;
pub mod web;
