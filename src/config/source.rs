//! The source section: which database, and the slot and publication the
//! service reads through.

use clap::Args;
use serde::Deserialize;

use super::{with_default, ConfigError, Secret};
use crate::source::conninfo::ConnInfo;
use crate::source::error::SourceError;

/// The slot's name when none is given: the service's own name, so
/// `pg_replication_slots` says who holds it.
pub(crate) const DEFAULT_SLOT: &str = "projector";

/// The publication `sql/001_runtime_events.sql` creates on `runtime.events`.
pub(crate) const DEFAULT_PUBLICATION: &str = "projector_events";

/// Longest slot name accepted. Postgres allows 63 bytes (NAMEDATALEN - 1)
/// and refuses longer names only when the slot is created; `rebuild` names
/// generation N's slot `<slot>_g<N>`, so 12 bytes are kept for `_g` and ten
/// digits. Refusing here stops a rebuild from recording a slot it can never
/// create.
pub(crate) const MAX_SLOT_LEN: usize = 63 - 12;

/// Longest publication name: Postgres' 63-byte identifier limit.
pub(crate) const MAX_PUBLICATION_LEN: usize = 63;

/// The `--help` heading of this section (per argument: a struct-wide
/// heading would carry over to the flags declared after the section).
const HEADING: &str = "Source (Postgres)";

#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct SourceArgs {
    #[arg(
        long,
        help_heading = HEADING,
        env = "DATABASE_URL",
        hide_env_values = true,
        help = "libpq URL of the source database, e.g. \
                postgres://projector:…@10.0.0.3:5432/app?sslmode=verify-full&sslrootcert=server-ca.pem \
                (sslmode, sslrootcert and the other parameters as in libpq), or through a Unix \
                socket such as the Cloud SQL Auth Proxy's --unix-socket: \
                postgres://projector:…@/app?host=/cloudsql/PROJECT:REGION:INSTANCE \
                (TLS is not used on a socket, as in libpq). Several hosts, \
                postgres://projector:…@10.0.0.3:5432,10.0.0.4:5432/app?target_session_attrs=read-write \
                (or ?host=a,b&port=..): tried in order on every connection, the first writable one \
                wins (a failover). Secret: never logged"
    )]
    pub(crate) database_url: Option<Secret>,

    #[arg(long, help_heading = HEADING, env = "PROJECTOR_SLOT", help = with_default(
        format!(
            "Logical replication slot: 1-{MAX_SLOT_LEN} of a-z, 0-9 and _ (a rebuild appends \
             _g<generation>)"
        ),
        DEFAULT_SLOT,
    ))]
    pub(crate) slot: Option<String>,

    #[arg(long, help_heading = HEADING, env = "PROJECTOR_PUBLICATION", help = with_default(
        format!("Publication on runtime.events: 1-{MAX_PUBLICATION_LEN} of a-z, 0-9 and _"),
        DEFAULT_PUBLICATION,
    ))]
    pub(crate) publication: Option<String>,
}

/// Slot, publication and database URL, as [`super::Settings::validate`]
/// checks them.
pub(super) fn validate(
    slot: &str,
    publication: &str,
    database_url: Option<&Secret>,
) -> Result<(), ConfigError> {
    identifier("slot", slot, MAX_SLOT_LEN)?;
    identifier("publication", publication, MAX_PUBLICATION_LEN)?;
    if let Some(url) = database_url {
        database(url)?;
    }
    Ok(())
}

/// Lower-case identifiers only: they are used unquoted in replication
/// commands and must match what `pg_replication_slots` shows.
fn identifier(setting: &'static str, v: &str, max: usize) -> Result<(), ConfigError> {
    let chars_ok = v
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !v.is_empty() && v.len() <= max && chars_ok {
        return Ok(());
    }
    Err(ConfigError::invalid(
        setting,
        format!("{v:?} must be 1-{max} characters of a-z, 0-9 and _"),
    ))
}

/// The parser the connections use: a URL it refuses fails here, before
/// anything starts. Its messages never quote the URL's password.
fn database(url: &Secret) -> Result<(), ConfigError> {
    ConnInfo::parse(url.expose()).map(drop).map_err(|e| {
        let why = match e {
            SourceError::Config(m) => m,
            other => other.to_string(),
        };
        ConfigError::invalid(
            "database_url",
            format!("{}: {why}", super::redact_url(url.expose())),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(slot: &str, publication: &str, url: Option<&str>) -> Result<(), String> {
        let url = url.map(Secret::new);
        validate(slot, publication, url.as_ref()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_defaults_are_valid() {
        check(DEFAULT_SLOT, DEFAULT_PUBLICATION, None).unwrap();
    }

    #[test]
    fn a_slot_outside_a_z_0_9_underscore_is_refused_with_the_rule() {
        for bad in ["Bad-Slot", "", "slot name", "slöt"] {
            let e = check(bad, DEFAULT_PUBLICATION, None).unwrap_err();
            assert!(e.contains("--slot") && e.contains("PROJECTOR_SLOT"), "{e}");
            assert!(e.contains("a-z, 0-9 and _"), "{e}");
        }
    }

    #[test]
    fn a_slot_leaves_room_for_the_rebuild_suffix() {
        check(&"s".repeat(MAX_SLOT_LEN), DEFAULT_PUBLICATION, None).unwrap();
        let e = check(&"s".repeat(MAX_SLOT_LEN + 1), DEFAULT_PUBLICATION, None).unwrap_err();
        assert!(e.contains("1-51 characters"), "{e}");
        // The longest slot of generation 4294967295 still fits Postgres.
        assert!(format!("{}_g{}", "s".repeat(MAX_SLOT_LEN), u32::MAX).len() <= 63);
    }

    #[test]
    fn a_publication_over_63_or_with_capitals_is_refused() {
        check(DEFAULT_SLOT, &"p".repeat(63), None).unwrap();
        for bad in ["p".repeat(64), "Events".to_string()] {
            let e = check(DEFAULT_SLOT, &bad, None).unwrap_err();
            assert!(e.contains("--publication"), "{e}");
        }
    }

    #[test]
    fn a_bad_database_url_is_refused_without_its_password() {
        for bad in [
            "mysql://u:hunter2@h/db",
            "postgres://u:hunter2@h/db?sslmode=sometimes",
            "not a url hunter2",
        ] {
            let e = check(DEFAULT_SLOT, DEFAULT_PUBLICATION, Some(bad)).unwrap_err();
            assert!(
                e.contains("--database-url") && e.contains("DATABASE_URL"),
                "{e}"
            );
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e = check(
            DEFAULT_SLOT,
            DEFAULT_PUBLICATION,
            Some("postgres://u:pw@h/db?sslmode=sometimes"),
        )
        .unwrap_err();
        assert!(e.contains("sslmode") && e.contains("verify-full"), "{e}");
    }
}
