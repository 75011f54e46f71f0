//! Throwaway infrastructure on this machine, for `demo`, benchmarks and
//! tests: a PostgreSQL cluster in a temp dir and the local Convex backend.
//! Never used by `run` against real deployments.

pub mod convex;
pub mod postgres;
