//! Typed configuration: flags win over environment, environment over an
//! optional TOML file (`--config` / `PROJECTOR_CONFIG`), the file over
//! built-in defaults. Secrets are wrapped in [`Secret`] so that `Debug`,
//! logs and errors never show them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

/// A value that must never be printed: admin keys, passwords.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The only way to read the secret; call it where the value leaves the
    /// process (an HTTP header, an auth message), nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Removes the password from a libpq URL (`postgres://u:pw@h/db` ->
/// `postgres://u:***@h/db`) and any `password=` query parameter, for logs
/// and error messages.
pub fn redact_url(url: &str) -> String {
    let patched = crate::source::conninfo::with_placeholder_host(url);
    let placeholder = matches!(patched, std::borrow::Cow::Owned(_));
    match url::Url::parse(&patched) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("password") {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            let s = u.to_string();
            if placeholder {
                s.replacen("@localhost", "@", 1)
            } else {
                s
            }
        }
        Err(_) => "<unparseable database URL>".to_string(),
    }
}

/// Errors in configuration: each names the exact fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{what} is not set: pass {flag} or set {env}")]
    Missing {
        what: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("cannot read config file {path}: {why}")]
    File { path: PathBuf, why: String },
}

/// The optional TOML file; every key mirrors a flag (snake_case).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<Secret>,
    pub convex_url: Option<String>,
    pub convex_admin_key: Option<Secret>,
    pub slot: Option<String>,
    pub publication: Option<String>,
    pub metrics_addr: Option<String>,
    pub batch_max_events: Option<usize>,
    pub batch_max_bytes: Option<usize>,
    pub batch_fill_ms: Option<u64>,
    pub max_inflight_batches: Option<usize>,
    pub inflight_bytes: Option<usize>,
    pub cache_bytes: Option<usize>,
    pub status_interval_ms: Option<u64>,
    pub convex_timeout_ms: Option<u64>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            why: redacted_toml_error(&text, &e),
        })
    }
}

/// A TOML error without the file's text: toml's `Display` quotes the
/// offending line, which may hold a password or key. Position and reason
/// only, with quoted values of type errors blanked.
fn redacted_toml_error(text: &str, e: &toml::de::Error) -> String {
    let at = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(" at line {line}, column {column}")
    });
    let message = e.message();
    let message = if message.starts_with("invalid") {
        blank_quoted(message)
    } else {
        message.to_string()
    };
    format!("TOML error{}: {}", at.unwrap_or_default(), message.trim())
}

/// Replaces the text between `"` or `` ` `` pairs with `<redacted>`.
fn blank_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut open: Option<char> = None;
    for c in s.chars() {
        match open {
            Some(q) if c == q => {
                out.push_str("<redacted>");
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None if c == '"' || c == '`' => {
                out.push(c);
                open = Some(c);
            }
            None => out.push(c),
        }
    }
    out
}

/// Connection and tuning flags shared by the subcommands that talk to
/// Postgres and Convex.
#[derive(Args, Clone, Default)]
pub struct CommonArgs {
    /// TOML file with any of these settings (flags and env win over it).
    #[arg(long, env = "PROJECTOR_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// libpq URL of the source database, e.g.
    /// postgres://projector:secret@10.0.0.3:5432/app?sslmode=verify-full&sslrootcert=server-ca.pem
    /// or, through a Unix socket (Cloud SQL Auth Proxy --unix-socket),
    /// postgres://projector:secret@/app?host=/cloudsql/PROJECT:REGION:INSTANCE
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Convex deployment URL (also read from CONVEX_SELF_HOSTED_URL).
    #[arg(long, env = "CONVEX_URL")]
    pub convex_url: Option<String>,
    /// Convex admin or deploy key (also read from CONVEX_SELF_HOSTED_ADMIN_KEY).
    #[arg(long, env = "CONVEX_ADMIN_KEY", hide_env_values = true)]
    pub convex_admin_key: Option<String>,
    /// Logical replication slot name [default: projector].
    #[arg(long, env = "PROJECTOR_SLOT")]
    pub slot: Option<String>,
    /// Publication on runtime.events [default: projector_events].
    #[arg(long, env = "PROJECTOR_PUBLICATION")]
    pub publication: Option<String>,
    /// Address of /metrics, /healthz and /readyz [default: 127.0.0.1:9187].
    #[arg(long, env = "PROJECTOR_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Close a batch at this many events; three times as many while
    /// draining a backlog (events committed over 1 s before they were sent)
    /// [default: 4096].
    #[arg(long, env = "PROJECTOR_BATCH_MAX_EVENTS")]
    pub batch_max_events: Option<usize>,
    /// Close a batch at this many bytes of events; also the largest mutation
    /// we send (Convex allows 16 MiB) [default: 2097152].
    #[arg(long, env = "PROJECTOR_BATCH_MAX_BYTES")]
    pub batch_max_bytes: Option<usize>,
    /// Close a batch this many milliseconds after its first event; up to
    /// 250 while draining a backlog [default: 5].
    #[arg(long, env = "PROJECTOR_BATCH_FILL_MS")]
    pub batch_fill_ms: Option<u64>,
    /// Batches in flight to Convex at once [default: 4].
    #[arg(long, env = "PROJECTOR_MAX_INFLIGHT_BATCHES")]
    pub max_inflight_batches: Option<usize>,
    /// Byte budget of events read but not yet acknowledged; reading stops
    /// when it is full (backpressure) [default: 16777216].
    #[arg(long, env = "PROJECTOR_INFLIGHT_BYTES")]
    pub inflight_bytes: Option<usize>,
    /// Byte budget of the reducer state cache [default: 16777216].
    #[arg(long, env = "PROJECTOR_CACHE_BYTES")]
    pub cache_bytes: Option<usize>,
    /// Interval of standby status updates to Postgres, milliseconds; keep it
    /// well under wal_sender_timeout [default: 1000].
    #[arg(long, env = "PROJECTOR_STATUS_INTERVAL_MS")]
    pub status_interval_ms: Option<u64>,
    /// Timeout of one Convex HTTP request, milliseconds [default: 30000].
    #[arg(long, env = "PROJECTOR_CONVEX_TIMEOUT_MS")]
    pub convex_timeout_ms: Option<u64>,
}

impl fmt::Debug for CommonArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommonArgs")
            .field("config", &self.config)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("convex_url", &self.convex_url)
            .field(
                "convex_admin_key",
                &self.convex_admin_key.as_ref().map(|_| "<redacted>"),
            )
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .finish_non_exhaustive()
    }
}

/// Batch and memory limits of the pipeline.
#[derive(Clone, Debug)]
pub struct Tuning {
    pub batch_max_events: usize,
    pub batch_max_bytes: usize,
    pub batch_fill: Duration,
    pub max_inflight_batches: usize,
    pub inflight_bytes: usize,
    pub cache_bytes: usize,
    pub status_interval: Duration,
    pub convex_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            batch_max_events: 4096,
            // Convex allows 16 MiB of arguments; stay far below.
            batch_max_bytes: 2 * 1024 * 1024,
            batch_fill: Duration::from_millis(5),
            max_inflight_batches: 4,
            inflight_bytes: 16 * 1024 * 1024,
            cache_bytes: 16 * 1024 * 1024,
            status_interval: Duration::from_secs(1),
            convex_timeout: Duration::from_secs(30),
        }
    }
}

/// Fully resolved settings. `Debug` redacts secrets.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: Option<Secret>,
    pub convex_url: Option<String>,
    pub convex_admin_key: Option<Secret>,
    pub slot: String,
    pub publication: String,
    pub metrics_addr: SocketAddr,
    pub tuning: Tuning,
}

pub const DEFAULT_SLOT: &str = "projector";
pub const DEFAULT_PUBLICATION: &str = "projector_events";
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9187";

fn env_fallback(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn valid_identifier(what: &'static str, v: &str) -> Result<(), ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            what,
            why: format!("{v:?} must be 1-63 characters of a-z, 0-9 and _"),
        })
    }
}

impl CommonArgs {
    /// Resolves flags > env > file > defaults. Missing URLs stay `None`; the
    /// subcommands that need them call [`Settings::database_url`] and
    /// [`Settings::convex`].
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let d = Tuning::default();
        let positive = |what: &'static str, v: usize| {
            if v == 0 {
                Err(ConfigError::Invalid {
                    what,
                    why: "must be greater than 0".into(),
                })
            } else {
                Ok(v)
            }
        };
        let tuning = Tuning {
            batch_max_events: positive(
                "--batch-max-events",
                self.batch_max_events
                    .or(file.batch_max_events)
                    .unwrap_or(d.batch_max_events),
            )?,
            batch_max_bytes: positive(
                "--batch-max-bytes",
                self.batch_max_bytes
                    .or(file.batch_max_bytes)
                    .unwrap_or(d.batch_max_bytes),
            )?,
            batch_fill: self
                .batch_fill_ms
                .or(file.batch_fill_ms)
                .map(Duration::from_millis)
                .unwrap_or(d.batch_fill),
            max_inflight_batches: positive(
                "--max-inflight-batches",
                self.max_inflight_batches
                    .or(file.max_inflight_batches)
                    .unwrap_or(d.max_inflight_batches),
            )?,
            inflight_bytes: positive(
                "--inflight-bytes",
                self.inflight_bytes
                    .or(file.inflight_bytes)
                    .unwrap_or(d.inflight_bytes),
            )?,
            cache_bytes: positive(
                "--cache-bytes",
                self.cache_bytes
                    .or(file.cache_bytes)
                    .unwrap_or(d.cache_bytes),
            )?,
            status_interval: self
                .status_interval_ms
                .or(file.status_interval_ms)
                .map(Duration::from_millis)
                .unwrap_or(d.status_interval),
            convex_timeout: self
                .convex_timeout_ms
                .or(file.convex_timeout_ms)
                .map(Duration::from_millis)
                .unwrap_or(d.convex_timeout),
        };
        if tuning.batch_max_bytes > 8 * 1024 * 1024 {
            return Err(ConfigError::Invalid {
                what: "--batch-max-bytes",
                why: "must be at most 8388608 (Convex takes 16 MiB of arguments per mutation; we keep half as margin)".into(),
            });
        }
        let slot = self
            .slot
            .clone()
            .or(file.slot)
            .unwrap_or_else(|| DEFAULT_SLOT.into());
        valid_identifier("--slot / PROJECTOR_SLOT", &slot)?;
        let publication = self
            .publication
            .clone()
            .or(file.publication)
            .unwrap_or_else(|| DEFAULT_PUBLICATION.into());
        valid_identifier("--publication / PROJECTOR_PUBLICATION", &publication)?;
        let metrics_addr_text = self
            .metrics_addr
            .clone()
            .or(file.metrics_addr)
            .unwrap_or_else(|| DEFAULT_METRICS_ADDR.into());
        let metrics_addr = metrics_addr_text
            .parse()
            .map_err(|_| ConfigError::Invalid {
                what: "--metrics-addr / PROJECTOR_METRICS_ADDR",
                why: format!("{metrics_addr_text:?} is not host:port, e.g. 127.0.0.1:9187"),
            })?;
        let convex_url = self
            .convex_url
            .clone()
            .or_else(|| env_fallback("CONVEX_SELF_HOSTED_URL"))
            .or(file.convex_url);
        if let Some(u) = &convex_url {
            let parsed = url::Url::parse(u).map_err(|e| ConfigError::Invalid {
                what: "--convex-url / CONVEX_URL",
                why: format!(
                    "{u:?} is not a URL ({e}); expected e.g. https://happy-otter-123.convex.cloud"
                ),
            })?;
            if parsed.scheme() != "http" && parsed.scheme() != "https" {
                return Err(ConfigError::Invalid {
                    what: "--convex-url / CONVEX_URL",
                    why: format!("{u:?} must start with http:// or https://"),
                });
            }
        }
        let convex_admin_key = self
            .convex_admin_key
            .clone()
            .or_else(|| env_fallback("CONVEX_SELF_HOSTED_ADMIN_KEY"))
            .map(Secret::new)
            .or(file.convex_admin_key);
        let database_url = self
            .database_url
            .clone()
            .map(Secret::new)
            .or(file.database_url);
        if let Some(u) = &database_url {
            // The parser the connections use: a URL it refuses fails here,
            // before anything starts. Its messages never quote the URL.
            crate::source::conninfo::ConnInfo::parse(u.expose()).map_err(|e| {
                let why = match e {
                    crate::source::error::SourceError::Config(m) => m,
                    other => other.to_string(),
                };
                ConfigError::Invalid {
                    what: "--database-url / DATABASE_URL",
                    why: format!("{}: {why}", redact_url(u.expose())),
                }
            })?;
        }
        Ok(Settings {
            database_url,
            convex_url,
            convex_admin_key,
            slot,
            publication,
            metrics_addr,
            tuning,
        })
    }
}

impl Settings {
    pub fn database_url(&self) -> Result<&Secret, ConfigError> {
        self.database_url.as_ref().ok_or(ConfigError::Missing {
            what: "the source database",
            flag: "--database-url",
            env: "DATABASE_URL",
        })
    }

    /// The Convex URL and admin key, both required.
    pub fn convex(&self) -> Result<(&str, &Secret), ConfigError> {
        let url = self.convex_url.as_deref().ok_or(ConfigError::Missing {
            what: "the Convex deployment URL",
            flag: "--convex-url",
            env: "CONVEX_URL (or CONVEX_SELF_HOSTED_URL)",
        })?;
        let key = self
            .convex_admin_key
            .as_ref()
            .filter(|k| !k.is_empty())
            .ok_or(ConfigError::Missing {
                what: "the Convex admin key",
                flag: "--convex-admin-key",
                env: "CONVEX_ADMIN_KEY (or CONVEX_SELF_HOSTED_ADMIN_KEY)",
            })?;
        Ok((url, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_errors_never_echo_the_file() {
        let dir = std::env::temp_dir().join(format!("projector-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (text, reason) in [
            (
                "database_url = \"postgres://u:hunter2@h/db\nslot = 1\n",
                "line 1",
            ),
            ("convex_admin_key = hunter2\n", "line 1"),
            ("batch_max_events = \"hunter2\"\n", "line 1"),
            ("slot = \"s\"\nconvex_admin_key = 'hunter2\n", "line 2"),
        ] {
            let p = dir.join("c.toml");
            std::fs::write(&p, text).unwrap();
            let e = FileConfig::load(&p).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains(reason), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        let args = CommonArgs {
            database_url: Some("postgres://u:hunter2@h/db".into()),
            convex_admin_key: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{args:?}").contains("hunter2"));
        let settings = args.resolve().unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn redacts_url_passwords_of_unix_socket_urls() {
        assert_eq!(
            redact_url("postgres://app:hunter2@/db?host=/cloudsql/p:r:i"),
            "postgres://app:***@/db?host=%2Fcloudsql%2Fp%3Ar%3Ai"
        );
    }

    #[test]
    fn redacts_url_passwords() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db?sslmode=require"),
            "postgres://u:***@h:5432/db?sslmode=require"
        );
        assert!(!redact_url("postgres://u@h/db?password=pw").contains("pw&"));
        assert!(!redact_url("postgres://u@h/db?password=pw").contains("=pw"));
    }

    #[test]
    fn bad_values_name_the_fix() {
        let args = CommonArgs {
            slot: Some("Bad-Slot".into()),
            ..Default::default()
        };
        let e = args.resolve().unwrap_err().to_string();
        assert!(e.contains("--slot"), "{e}");
        let args = CommonArgs {
            metrics_addr: Some("nope".into()),
            ..Default::default()
        };
        assert!(args
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("host:port"));
        let s = CommonArgs::default().resolve().unwrap();
        let e = s.convex().unwrap_err().to_string();
        assert!(e.contains("CONVEX_URL"), "{e}");
    }
}
