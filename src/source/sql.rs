//! Ordinary SQL connections (tokio-postgres) under the same rules as the
//! replication connection: the socket and libpq's attempts from
//! `transport`, our rustls setup from `tls` (tokio-postgres knows neither
//! verify-ca/verify-full nor client certificates nor CRLs), and the
//! authentication policy: `guard` applies `auth::AuthPolicy` to every
//! request before tokio-postgres sees it (tokio-postgres also checks
//! `channel_binding` and SCRAM's server-final message itself).
//!
//! ```text
//! transport::open ─▶ Guarded(passthrough) ─SSLRequest (tokio-postgres)─▶ 'S'
//!   ─▶ SqlTls::connect: TlsSetup::handshake ─▶ Guarded(inspecting, TLS) ─▶ startup, auth
//! transport::open ─▶ Guarded(inspecting, plain) ─▶ startup, auth        (plain attempt)
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::config::{ChannelBinding as PgChannelBinding, SslMode as PgSslMode};
use tokio_postgres::tls::{ChannelBinding, TlsConnect};

use crate::secret::Secret;
use crate::source::auth::{AuthPolicy, ChannelBindingMode};
use crate::source::conninfo::ConnInfo;
use crate::source::error::SourceError;
use crate::source::guard::{find_refusal, Guarded};
use crate::source::hosts::SessionAttrs;
use crate::source::tls::{self, TlsSetup};
use crate::source::transport::{self, Encryption, Failure, Transport};

/// tokio-postgres's startup settings (no host or TLS: we bring the socket).
pub(crate) fn pg_config(info: &ConnInfo) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(&info.user)
        .dbname(&info.dbname)
        .application_name(&info.application_name)
        .channel_binding(match info.channel_binding {
            ChannelBindingMode::Disable => PgChannelBinding::Disable,
            ChannelBindingMode::Prefer => PgChannelBinding::Prefer,
            ChannelBindingMode::Require => PgChannelBinding::Require,
        });
    if let Some(p) = &info.password {
        cfg.password(p.expose());
    }
    // tokio-postgres sends no other startup settings: pin the text output
    // through `options`, after the URL's own (the later `-c` wins).
    let pinned: Vec<String> = crate::source::TEXT_OUTPUT_SETTINGS
        .iter()
        .map(|(k, v)| format!("-c {k}={v}"))
        .collect();
    let options = match &info.options {
        Some(o) => format!("{o} {}", pinned.join(" ")),
        None => pinned.join(" "),
    };
    cfg.options(&options);
    cfg
}

/// Connects for ordinary SQL and spawns the connection task.
pub async fn connect(url: &Secret) -> Result<tokio_postgres::Client, SourceError> {
    let info = ConnInfo::parse(url.expose())?;
    connect_info(&info).await
}

pub async fn connect_info(info: &ConnInfo) -> Result<tokio_postgres::Client, SourceError> {
    if info.hosts.len() <= 1 && info.target_session_attrs == SessionAttrs::Any {
        return connect_host(info).await;
    }
    // libpq's order, as the replication connection: each host in turn, the
    // first that answers (and, for read-write, takes writes) wins.
    let mut last = None;
    for host in info.candidates() {
        match connect_host(&host).await {
            Ok(client) if info.target_session_attrs == SessionAttrs::ReadWrite => {
                let read_only = client
                    .query_one("SHOW transaction_read_only", &[])
                    .await
                    .map(|r| r.get::<_, String>(0) == "on")
                    .unwrap_or(true);
                if !read_only {
                    return Ok(client);
                }
                last = Some(SourceError::Io(std::io::Error::other(format!(
                    "{} is read-only (a standby) and target_session_attrs=read-write",
                    host.address()
                ))));
            }
            Ok(client) => return Ok(client),
            Err(e) => {
                tracing::debug!(host = %host.address(), error = %e, "host refused; trying the next");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| SourceError::Config("DATABASE_URL names no host".into())))
}

async fn connect_host(info: &ConnInfo) -> Result<tokio_postgres::Client, SourceError> {
    let timeout = info.connect_timeout.unwrap_or(Duration::from_secs(30));
    match tokio::time::timeout(timeout, connect_inner(info)).await {
        Ok(r) => r,
        Err(_) => Err(SourceError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connecting to {} timed out", info.address()),
        ))),
    }
}

async fn connect_inner(info: &ConnInfo) -> Result<tokio_postgres::Client, SourceError> {
    let tls = tls::setup(info)?;
    let policy = AuthPolicy {
        channel_binding: info.channel_binding,
        require_auth: info.require_auth.clone(),
    };
    let mut want = transport::first_attempt(info.sslmode);
    let mut first_error = None;
    loop {
        match attempt(info, want, tls.as_ref(), &policy).await {
            Ok(client) => return Ok(client),
            Err((used, failure, e)) => {
                if first_error.is_none() {
                    if let Some(next) = transport::fallback(info.sslmode, used, failure) {
                        first_error = Some(e);
                        want = next;
                        continue;
                    }
                }
                return Err(transport::combine(first_error, e));
            }
        }
    }
}

/// tokio-postgres's answer to an SSLRequest the server declined ('N'):
/// "error performing TLS handshake" whose *cause* says "server does not
/// support TLS" (its `Display` leaves the cause out, so walk the chain).
fn refused_tls(e: &tokio_postgres::Error) -> bool {
    std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
        .any(|e| e.to_string().contains("does not support TLS"))
}

async fn attempt(
    info: &ConnInfo,
    want: Encryption,
    tls: Option<&TlsSetup>,
    policy: &AuthPolicy,
) -> Result<tokio_postgres::Client, (Encryption, Failure, SourceError)> {
    let (sock, _) = transport::open(info, false)
        .await
        .map_err(|e| (want, Failure::Other, e))?;
    let mut cfg = pg_config(info);
    match (want, tls) {
        (Encryption::Tls, Some(setup)) => {
            cfg.ssl_mode(PgSslMode::Require);
            let connector = SqlTls {
                setup: setup.clone(),
                policy: policy.clone(),
                reached: Arc::new(AtomicBool::new(false)),
                failure: Arc::new(Mutex::new(None)),
            };
            let (reached, failure) = (connector.reached.clone(), connector.failure.clone());
            match cfg.connect_raw(Guarded::passthrough(sock), connector).await {
                Ok((client, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Ok(client)
                }
                Err(e) => {
                    let handshake = failure.lock().ok().and_then(|mut f| f.take());
                    Err(if let Some(h) = handshake {
                        (Encryption::Tls, Failure::Handshake, h)
                    } else if !reached.load(Ordering::Relaxed) && refused_tls(&e) {
                        // The server answered 'N'. libpq's prefer goes on
                        // in the clear; we do so on a new socket.
                        (
                            Encryption::Tls,
                            Failure::NoTls,
                            transport::tls_refused(info),
                        )
                    } else {
                        let failure = if e.as_db_error().is_some() {
                            Failure::Server
                        } else {
                            Failure::Other
                        };
                        (Encryption::Tls, failure, map_err(info, Some(setup), e))
                    })
                }
            }
        }
        _ => {
            cfg.ssl_mode(PgSslMode::Disable);
            let stream = Guarded::inspecting(sock, policy, false, false);
            match cfg.connect_raw(stream, tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Ok(client)
                }
                Err(e) => {
                    let failure = if e.as_db_error().is_some() {
                        Failure::Server
                    } else {
                        Failure::Other
                    };
                    Err((Encryption::Plain, failure, map_err(info, None, e)))
                }
            }
        }
    }
}

fn map_err(info: &ConnInfo, tls: Option<&TlsSetup>, e: tokio_postgres::Error) -> SourceError {
    if let Some(r) = find_refusal(&e) {
        return r.clone().into();
    }
    if let Some(setup) = tls {
        // A TLS alert after the handshake (e.g. our client certificate refused).
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if TlsSetup::is_tls_error(io) {
                    return setup.explain_io(io);
                }
            }
            cur = err.source();
        }
    }
    let text = e.to_string();
    if info.password.is_none() && text.contains("invalid configuration") {
        // tokio-postgres's "password missing", as the replication side says it.
        return SourceError::AuthFailed {
            user: info.user.clone(),
            message: "the server asks for a password and DATABASE_URL has none".into(),
        };
    }
    match SourceError::from(e) {
        SourceError::AuthFailed { message, .. } => SourceError::AuthFailed {
            user: info.user.clone(),
            message,
        },
        // tokio-postgres's channel-binding refusals ("channel binding
        // required"...) are authentication errors of its own.
        SourceError::Sql(m) if text.contains("channel binding") => SourceError::AuthPolicy {
            parameter: "channel_binding",
            message: m,
        },
        other => other,
    }
}

/// tokio-postgres's TLS hook: our handshake, then a guard on the TLS stream.
struct SqlTls {
    setup: TlsSetup,
    policy: AuthPolicy,
    /// The server answered 'S' and the handshake began.
    reached: Arc<AtomicBool>,
    /// The handshake's own error (tokio-postgres keeps only a string).
    failure: Arc<Mutex<Option<SourceError>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("TLS handshake failed")]
struct HandshakeFailed;

/// The TLS stream tokio-postgres runs on, with its channel-binding data.
pub(crate) struct SqlTlsStream {
    inner: Guarded<tokio_rustls::client::TlsStream<Transport>>,
    binding: Option<Vec<u8>>,
}

impl TlsConnect<Guarded<Transport>> for SqlTls {
    type Stream = SqlTlsStream;
    type Error = HandshakeFailed;
    type Future = Pin<Box<dyn Future<Output = Result<SqlTlsStream, HandshakeFailed>> + Send>>;

    fn connect(self, stream: Guarded<Transport>) -> Self::Future {
        self.reached.store(true, Ordering::Relaxed);
        Box::pin(async move {
            match self.setup.handshake(stream.into_inner()).await {
                Ok(tls) => {
                    let binding = tls::binding_of(&tls);
                    Ok(SqlTlsStream {
                        inner: Guarded::inspecting(tls, &self.policy, true, binding.is_some()),
                        binding,
                    })
                }
                Err(e) => {
                    if let Ok(mut slot) = self.failure.lock() {
                        *slot = Some(e);
                    }
                    Err(HandshakeFailed)
                }
            }
        })
    }
}

impl tokio_postgres::tls::TlsStream for SqlTlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        match &self.binding {
            Some(b) => ChannelBinding::tls_server_end_point(b.clone()),
            None => ChannelBinding::none(),
        }
    }
}

impl tokio::io::AsyncRead for SqlTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SqlTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
