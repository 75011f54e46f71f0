//! Test harnesses shared by every test module.

pub mod cli;
pub mod convex_backend;
pub mod history_sql;
pub mod pg;
pub mod pg_standby;
pub mod projector_proc;
pub mod tcp_proxy;
pub mod wire_fixture;
