//! Postgres side: replication client, pgoutput decoder, slot administration.
//!
//! ```text
//! conninfo (URL) ─▶ conn (TCP/TLS, auth, frames) ─▶ stream (CopyBoth: XLogData, keepalives, status)
//!                                                      │ XLogData.data
//!                                                      ▼
//!                          pgoutput (bytes → messages) ─▶ event (messages → SourceEvent)
//! sql (tokio-postgres, same TLS) ─▶ slot (slot info/create/drop, snapshot slots)
//! ```

pub mod conn;
pub mod conninfo;
pub mod error;
pub mod event;
pub mod hosts;
pub mod pgoutput;
#[cfg(any(test, feature = "test-support"))]
pub mod pgoutput_encode;
pub mod slot;
pub mod sql;
pub mod stream;
pub mod tls;

pub use error::SourceError;
