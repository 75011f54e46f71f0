//! Errors of the Postgres side. Every `Display` is one line that names the
//! fix; `is_transient` splits "retry with backoff" from "stop and tell the
//! operator".

use crate::source::pgoutput::DecodeError;

/// A Postgres ErrorResponse / NoticeResponse, reduced to what we act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ServerError {
    pub(crate) severity: String,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) detail: Option<String>,
    pub(crate) hint: Option<String>,
    /// The server function that raised it (field `R`): never translated,
    /// unlike the message, so it can tell apart reports that share a
    /// SQLSTATE.
    pub(crate) routine: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("replication slot \"{slot}\" is in use by another consumer ({message}): another projector replica holds it; this one retries until it is free")]
    SlotInUse { slot: String, message: String },
    #[error("replication slot \"{slot}\" does not exist: before the first run create it with `projector setup --apply`; if it streamed before (a failover to a server without it, a dropped slot) run `projector rebuild`, since a new slot starts after what happened meanwhile")]
    SlotMissing { slot: String },
    #[error("replication slot \"{slot}\" is invalidated and can no longer stream ({detail}): run `projector rebuild` to start from a fresh slot, and {}", invalidation_remedy(detail))]
    SlotInvalidated { slot: String, detail: String },
    #[error("publication \"{publication}\" does not exist in this database: run `projector setup --apply` or `CREATE PUBLICATION {publication} FOR TABLE runtime.events;`")]
    PublicationMissing { publication: String },
    #[error("authentication failed for user \"{user}\" ({message}): check the user and password in DATABASE_URL and the pg_hba.conf entry for this host")]
    AuthFailed { user: String, message: String },
    #[error("role \"{user}\" may not stream ({message}): run `ALTER ROLE {user} WITH REPLICATION;` (on managed Postgres grant the provider's replication role)")]
    NotReplicationRole { user: String, message: String },
    #[error("logical decoding is off ({message}): set `ALTER SYSTEM SET wal_level = logical;` and restart Postgres")]
    WalLevel { message: String },
    #[error("connection refused by DATABASE_URL's {parameter} rule: {message}")]
    AuthPolicy {
        parameter: &'static str,
        message: String,
    },
    #[error("TLS to {host} failed: {message}")]
    Tls { host: String, message: String },
    #[error("slot name {name:?} read from Convex is not one this projector makes ({configured:?} or {configured:?}_g<generation>); refusing to use it: check who writes the projector's state with the admin key")]
    UntrustedSlotName { name: String, configured: String },
    #[error("invalid DATABASE_URL: {0}")]
    Config(String),
    #[error(
        "connection to Postgres failed: {0}; check that the server is up and reachable (retrying)"
    )]
    Io(#[from] std::io::Error),
    #[error("Postgres closed the replication connection; reconnecting")]
    Closed,
    #[error("replication protocol error: {0}")]
    Protocol(String),
    #[error("cannot decode pgoutput message: {0}")]
    Decode(#[from] DecodeError),
    #[error("Postgres error {code}: {message}")]
    Server { code: String, message: String },
    #[error("SQL connection failed: {0}")]
    Sql(String),
}

impl SourceError {
    /// True when retrying the same thing later can succeed (network loss,
    /// server restarting, slot held by another replica).
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Io(_) | SourceError::Closed | SourceError::SlotInUse { .. } => true,
            SourceError::Server { code, .. } => is_transient_code(code),
            SourceError::Sql(_) => true,
            _ => false,
        }
    }

    /// Maps an ErrorResponse to the typed error, using what we know about
    /// the slot and publication the caller asked for.
    pub(crate) fn from_server(e: ServerError, ctx: &ErrorContext) -> SourceError {
        let msg = &e.message;
        let full = match &e.detail {
            Some(d) => format!("{msg}: {d}"),
            None => msg.clone(),
        };
        match e.code.as_str() {
            "55006" if msg.contains("replication slot") => SourceError::SlotInUse {
                slot: ctx.slot.clone().unwrap_or_default(),
                message: msg.clone(),
            },
            "42704" if msg.contains("replication slot") => SourceError::SlotMissing {
                slot: ctx.slot.clone().unwrap_or_default(),
            },
            "42704" if msg.contains("publication") => SourceError::PublicationMissing {
                publication: quoted(msg)
                    .unwrap_or_else(|| ctx.publication.clone().unwrap_or_default()),
            },
            "28P01" | "28000" if msg.contains("channel binding") => SourceError::AuthPolicy {
                parameter: "channel_binding",
                message: format!(
                    "{msg}: the server's TLS certificate is not the one this connection saw, so something between projector and Postgres terminates TLS (a proxy, or an attacker); use sslmode=verify-full, or connect past the proxy"
                ),
            },
            "28P01" | "28000" => SourceError::AuthFailed {
                user: ctx.user.clone().unwrap_or_default(),
                message: msg.clone(),
            },
            "42501" if msg.contains("replication") || msg.contains("walsender") => {
                SourceError::NotReplicationRole {
                    user: ctx.user.clone().unwrap_or_default(),
                    message: msg.clone(),
                }
            }
            "55000" | "58P01" | "XX000" if msg.contains("wal_level") => SourceError::WalLevel {
                message: msg.clone(),
            },
            "55000" | "58P01" | "XX000"
                if full.contains("can no longer get changes")
                    || full.contains("invalidated")
                    || full.contains("has already been removed") =>
            {
                SourceError::SlotInvalidated {
                    slot: ctx.slot.clone().unwrap_or_default(),
                    detail: full,
                }
            }
            _ => SourceError::Server {
                code: e.code,
                message: full,
            },
        }
    }
}

/// What keeps the next slot from the same end, by invalidation reason
/// (`pg_replication_slots.invalidation_reason`, named in the detail).
pub(crate) fn invalidation_remedy(detail: &str) -> &'static str {
    if detail.contains("idle_timeout") {
        "raise idle_replication_slot_timeout (0 turns it off) or keep a projector replica attached: the slot was unused longer than that"
    } else if detail.contains("rows_removed") || detail.contains("conflict with recovery") {
        "on a standby set hot_standby_feedback = on with a primary_slot_name, so the primary keeps the rows logical decoding needs"
    } else if detail.contains("wal_level_insufficient") {
        "keep wal_level = logical on the primary"
    } else {
        "raise max_slot_wal_keep_size"
    }
}

/// SQLSTATE classes worth retrying: connection exceptions, insufficient
/// resources, operator intervention (shutdown, cannot connect now), and
/// serialization/deadlock.
pub(crate) fn is_transient_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code == "40001"
        || code == "40P01"
}

fn quoted(msg: &str) -> Option<String> {
    let a = msg.find('"')?;
    let rest = msg.get(a + 1..)?;
    let b = rest.find('"')?;
    rest.get(..b).map(str::to_string)
}

/// What the caller was doing, to name things in errors.
#[derive(Clone, Debug, Default)]
pub(crate) struct ErrorContext {
    pub(crate) user: Option<String>,
    pub(crate) slot: Option<String>,
    pub(crate) publication: Option<String>,
}

impl From<tokio_postgres::Error> for SourceError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let se = ServerError {
                severity: db.severity().to_string(),
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
                routine: db.routine().map(str::to_string),
            };
            return SourceError::from_server(se, &ErrorContext::default());
        }
        if e.is_closed() {
            return SourceError::Closed;
        }
        SourceError::Sql(e.to_string())
    }
}
