//! Postgres side: replication client, pgoutput decoder, slot administration.
//!
//! ```text
//! conninfo (URL) ─▶ conn (TCP/TLS, auth, frames) ─▶ stream (CopyBoth: XLogData, keepalives, status)
//!                                                      │ XLogData.data
//!                                                      ▼
//!                          pgoutput (bytes → messages) ─▶ event (messages → SourceEvent)
//! sql (tokio-postgres, same TLS) ─▶ slot (slot info/create/drop, snapshot slots)
//! ```

pub(crate) mod auth;
pub mod conn;
pub mod conninfo;
pub(crate) mod error;
pub mod event;
pub(crate) mod guard;
pub(crate) mod hosts;
pub mod pgoutput;
#[cfg(any(test, feature = "test-support"))]
pub mod pgoutput_encode;
pub mod slot;
pub mod sql;
pub mod stream;
pub mod tls;
pub mod transport;

pub use error::SourceError;

/// Session settings that change the text Postgres sends (timestamps,
/// intervals, floats), pinned on both connections whatever the role, the
/// database or the URL set: a role with `DateStyle = 'SQL, DMY'` would make
/// every `occurred_at` unparseable.
pub(crate) const TEXT_OUTPUT_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
];
