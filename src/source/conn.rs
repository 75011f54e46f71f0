//! A thin Postgres wire client for replication connections (tokio-postgres
//! has no CopyBoth): the socket and libpq's attempts from `transport`, TLS
//! from `tls`, startup with `replication=database`, trust/cleartext/md5/
//! SCRAM-SHA-256(-PLUS) auth under `auth::AuthPolicy`, simple query, and
//! raw backend frames.
//!
//! ```text
//! TcpStream ─SSLRequest─▶ 'S' ─▶ rustls ─▶ Startup ─▶ Auth* ─▶ ReadyForQuery
//!   (replication on loopback: a 64 KiB receive window, see LOOPBACK_RECV_BUFFER)
//! UnixStream ──────────────────────────────▶ Startup ─▶ …
//!   read_frame(): one 256 KiB BytesMut; frames are split off in place, so a
//!   single read yields many frames and a cancelled read loses nothing.
//! ```

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::ScramSha256;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::secret::Secret;
use crate::source::auth::{self, AuthPolicy, AuthState, Request};
use crate::source::conninfo::ConnInfo;
use crate::source::error::{ErrorContext, ServerError, SourceError};
use crate::source::hosts::SessionAttrs;
use crate::source::tls::{self, TlsSetup};
use crate::source::transport::{self, Encryption, Failure};

/// Read buffer: big enough for many XLogData frames per syscall.
const READ_CHUNK: usize = 256 * 1024;
/// Refuse frames above this (Postgres caps messages at 1 GiB).
const MAX_FRAME: usize = 1 << 30;
pub(crate) use crate::event::OVERSIZED_PREFIX;

pub(crate) trait AsyncIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncIo for T {}

/// One backend message: its tag and body (without the length).
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub(crate) tag: u8,
    pub(crate) body: Bytes,
    /// Set for a message over the connection's maximum: its whole body
    /// length; `body` then holds only its first [`OVERSIZED_PREFIX`] bytes.
    pub(crate) oversized: Option<usize>,
}

/// A message over the maximum being read through: its start is kept, the
/// rest is dropped as it arrives.
struct Skipping {
    tag: u8,
    kept: BytesMut,
    keep: usize,
    /// Body bytes not yet read (kept or dropped).
    remaining: usize,
    total: usize,
}

pub struct PgConn {
    io: Box<dyn AsyncIo>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    pub(crate) params: HashMap<String, String>,
    pub(crate) ctx: ErrorContext,
    pub tls: bool,
    /// Connected through a Unix-domain socket.
    pub(crate) unix: bool,
    /// The receive buffer the kernel granted, when we set one (see
    /// [`LOOPBACK_RECV_BUFFER`]); `None`: the kernel auto-tunes it.
    pub recv_buffer: Option<u32>,
    /// Bytes the last socket read returned.
    last_read: usize,
    /// The TCP socket under `io` (`None`: a Unix socket), owned by `io`.
    tcp_fd: Option<std::os::fd::RawFd>,
    /// CopyData bodies above this are not buffered (see [`Frame::oversized`]).
    max_message: usize,
    skipping: Option<Skipping>,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn")
            .field("tls", &self.tls)
            .field("server_version", &self.params.get("server_version"))
            .finish_non_exhaustive()
    }
}

/// Rows of a simple query, all values as text.
pub(crate) type Row = Vec<Option<String>>;

/// Why a connection attempt failed: the encryption it ended up with, the
/// kind of failure (for libpq's second attempt) and the error.
type AttemptError = (Encryption, Failure, SourceError);

/// Why startup failed: the kind of failure (for libpq's second attempt)
/// and the error.
type StartupError = (Failure, SourceError);

/// A failure on our side of the startup (not the server refusing us).
fn other(e: SourceError) -> StartupError {
    (Failure::Other, e)
}

/// Authentication failed for the URL's user.
fn auth_failed(info: &ConnInfo, message: String) -> SourceError {
    SourceError::AuthFailed {
        user: info.user.clone(),
        message,
    }
}

/// The URL's password, which the server asked for.
fn password(info: &ConnInfo) -> Result<&[u8], StartupError> {
    info.password
        .as_ref()
        .map(|p| p.expose().as_bytes())
        .ok_or_else(|| {
            other(auth_failed(
                info,
                "the server asks for a password and DATABASE_URL has none".into(),
            ))
        })
}

/// Where one connection's authentication exchange stands: what the policy
/// has seen so far, and the SCRAM exchange once one has started.
struct AuthExchange<'a> {
    info: &'a ConnInfo,
    policy: &'a AuthPolicy,
    /// The TLS channel-binding data (tls-server-end-point), if any.
    binding: Option<Vec<u8>>,
    state: AuthState,
    scram: Option<ScramSha256>,
}

impl AuthExchange<'_> {
    /// SASL final: verifies the server's signature in `data`; the exchange
    /// is then finished.
    fn finish_scram(&mut self, data: &[u8]) -> Result<(), StartupError> {
        let s = self
            .scram
            .as_mut()
            .ok_or_else(|| other(SourceError::Protocol("SASL final before start".into())))?;
        s.finish(data).map_err(|e| {
            other(auth_failed(
                self.info,
                format!("server proof rejected: {e}"),
            ))
        })?;
        self.state.sasl_pending = false;
        self.state.finished = true;
        Ok(())
    }
}

impl PgConn {
    /// Connects and authenticates. `replication` adds `replication=database`.
    pub async fn connect(info: &ConnInfo, replication: bool) -> Result<PgConn, SourceError> {
        if info.hosts.len() <= 1 && info.target_session_attrs == SessionAttrs::Any {
            return Self::connect_host(info, replication).await;
        }
        // libpq's order: each host in turn, the first that answers (and,
        // for read-write, is not read-only) wins; else the last error.
        let mut last = None;
        for host in info.candidates() {
            match Self::connect_host(&host, replication).await {
                Ok(conn)
                    if info.target_session_attrs == SessionAttrs::ReadWrite
                        && conn.is_read_only() =>
                {
                    conn.close().await;
                    last = Some(SourceError::Io(std::io::Error::other(format!(
                        "{} is read-only (a standby) and target_session_attrs=read-write",
                        host.address()
                    ))));
                }
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    tracing::debug!(host = %host.address(), error = %e, "host refused; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| SourceError::Config("DATABASE_URL names no host".into())))
    }

    /// The server takes no writes: a standby (`in_hot_standby`), or
    /// `default_transaction_read_only`. Both are reported at startup by
    /// every server from 14 on, so this costs no query.
    pub(crate) fn is_read_only(&self) -> bool {
        let on = |k: &str| self.params.get(k).is_some_and(|v| v == "on");
        on("in_hot_standby") || on("default_transaction_read_only")
    }

    /// Connects to one host (`info.host`), within `connect_timeout`.
    async fn connect_host(info: &ConnInfo, replication: bool) -> Result<PgConn, SourceError> {
        let timeout = info.connect_timeout.unwrap_or(Duration::from_secs(30));
        match tokio::time::timeout(timeout, Self::connect_inner(info, replication)).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting to {} timed out", info.address()),
            ))),
        }
    }

    async fn connect_inner(info: &ConnInfo, replication: bool) -> Result<PgConn, SourceError> {
        let tls = tls::setup(info)?;
        let policy = AuthPolicy {
            channel_binding: info.channel_binding,
            require_auth: info.require_auth.clone(),
        };
        let mut want = transport::first_attempt(info.sslmode);
        let mut first_error = None;
        loop {
            match Self::attempt(info, replication, want, tls.as_ref(), &policy).await {
                Ok(conn) => return Ok(conn),
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

    /// One connection attempt with the encryption `want`. With `Tls`, a
    /// server answering 'N' continues in the clear on the same socket when
    /// the sslmode allows it (libpq's allow/prefer).
    async fn attempt(
        info: &ConnInfo,
        replication: bool,
        want: Encryption,
        tls: Option<&TlsSetup>,
        policy: &AuthPolicy,
    ) -> Result<PgConn, AttemptError> {
        let (mut sock, recv_buffer) = transport::open(info, replication)
            .await
            .map_err(|e| (want, Failure::Other, e))?;
        let tcp_fd = sock.tcp_fd();
        let mut binding = None;
        let (io, used): (Box<dyn AsyncIo>, Encryption) = match (want, tls) {
            (Encryption::Tls, Some(setup)) => {
                let accepted = transport::request_tls(&mut sock)
                    .await
                    .map_err(|e| (want, Failure::Other, e))?;
                if accepted {
                    let stream = setup
                        .handshake(sock)
                        .await
                        .map_err(|e| (Encryption::Tls, Failure::Handshake, e))?;
                    binding = tls::binding_of(&stream);
                    (Box::new(stream), Encryption::Tls)
                } else if info.sslmode.requires_tls() {
                    return Err((
                        Encryption::Plain,
                        Failure::NoTls,
                        transport::tls_refused(info),
                    ));
                } else {
                    (Box::new(sock), Encryption::Plain)
                }
            }
            _ => (Box::new(sock), Encryption::Plain),
        };
        let mut conn = PgConn {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(8 * 1024),
            params: HashMap::new(),
            ctx: ErrorContext {
                user: Some(info.user.clone()),
                ..Default::default()
            },
            tls: used == Encryption::Tls,
            unix: info.is_unix_socket(),
            recv_buffer,
            last_read: 0,
            tcp_fd,
            max_message: MAX_FRAME,
            skipping: None,
        };
        let tls_in_use = tls.filter(|_| used == Encryption::Tls);
        match conn
            .startup(info, replication, policy, binding, tls_in_use)
            .await
        {
            Ok(()) => Ok(conn),
            Err((failure, e)) => Err((used, failure, e)),
        }
    }

    /// Startup and authentication: the startup message, then the server's
    /// messages until ReadyForQuery. Every authentication request passes
    /// `policy.check` before anything is sent in reply.
    async fn startup(
        &mut self,
        info: &ConnInfo,
        replication: bool,
        policy: &AuthPolicy,
        binding: Option<Vec<u8>>,
        tls: Option<&TlsSetup>,
    ) -> Result<(), StartupError> {
        self.send_startup(info, replication).await?;
        let mut auth = AuthExchange {
            info,
            policy,
            binding,
            state: AuthState {
                tls: tls.is_some(),
                ..Default::default()
            },
            scram: None,
        };
        loop {
            let f = self.read_startup_frame(tls).await?;
            match f.tag {
                b'R' => self.authenticate(&mut auth, &f.body).await?,
                b'S' => self.record_parameter(&f.body),
                b'K' | b'N' => {}
                b'E' => return Err((Failure::Server, self.error(&f.body))),
                b'Z' => return Ok(()),
                other_tag => {
                    return Err(other(SourceError::Protocol(format!(
                        "unexpected message {:?} during startup",
                        other_tag as char
                    ))))
                }
            }
        }
    }

    /// The startup message: user, database, application name, UTF8, the
    /// URL's `options`, then [`TEXT_OUTPUT_SETTINGS`] (after `options`, so
    /// they win), and `replication=database` when asked.
    ///
    /// [`TEXT_OUTPUT_SETTINGS`]: crate::source::TEXT_OUTPUT_SETTINGS
    async fn send_startup(
        &mut self,
        info: &ConnInfo,
        replication: bool,
    ) -> Result<(), StartupError> {
        let mut params: Vec<(&str, &str)> = vec![
            ("user", info.user.as_str()),
            ("database", info.dbname.as_str()),
            ("application_name", info.application_name.as_str()),
            ("client_encoding", "UTF8"),
        ];
        if let Some(o) = &info.options {
            params.push(("options", o.as_str()));
        }
        // After `options`, so a role's or the URL's settings cannot change
        // the text pgoutput sends (timestamps, numbers) under us.
        params.extend_from_slice(crate::source::TEXT_OUTPUT_SETTINGS);
        if replication {
            params.push(("replication", "database"));
        }
        frontend::startup_message(params.iter().copied(), &mut self.wbuf)
            .map_err(|e| other(e.into()))?;
        self.flush().await.map_err(other)
    }

    /// The next message during startup. An I/O error that is a TLS alert
    /// (TLS 1.3 sends the verdict on our client certificate right after
    /// the handshake) is explained by the TLS setup.
    async fn read_startup_frame(&mut self, tls: Option<&TlsSetup>) -> Result<Frame, StartupError> {
        match self.read_frame().await {
            Ok(f) => Ok(f),
            Err(SourceError::Io(e)) => Err(other(match tls {
                Some(t) if TlsSetup::is_tls_error(&e) => t.explain_io(&e),
                _ => SourceError::Io(e),
            })),
            Err(e) => Err(other(e)),
        }
    }

    /// ParameterStatus: records `name = value` (lossy UTF-8); a body
    /// without both is ignored.
    fn record_parameter(&mut self, body: &[u8]) {
        let mut parts = body.split(|b| *b == 0);
        if let (Some(k), Some(v)) = (parts.next(), parts.next()) {
            self.params.insert(
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            );
        }
    }

    /// One AuthenticationRequest (`body` of an 'R' message): refused
    /// unless the policy allows it at this point of the exchange, then
    /// answered by its method.
    async fn authenticate(
        &mut self,
        auth: &mut AuthExchange<'_>,
        body: &[u8],
    ) -> Result<(), StartupError> {
        let req = Request::parse(body)
            .ok_or_else(|| other(SourceError::Protocol("short auth message".into())))?;
        auth.policy
            .check(req, &auth.state)
            .map_err(|r| other(r.into()))?;
        // `parse` succeeded: the body holds the 4-byte code.
        let data = &body[4..];
        match req {
            Request::Ok => Ok(()),
            Request::Cleartext => self.answer_cleartext(auth).await,
            Request::Md5 => self.answer_md5(auth, data).await,
            Request::Sasl(list) => self.start_scram(auth, list).await,
            Request::SaslContinue => self.continue_scram(auth, data).await,
            Request::SaslFinal => auth.finish_scram(data),
            Request::Gss | Request::Sspi | Request::Other(_) => {
                let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                Err(other(auth_failed(
                    auth.info,
                    format!(
                        "unsupported authentication method {code} (projector speaks SCRAM-SHA-256, md5 and password)"
                    ),
                )))
            }
        }
    }

    /// Cleartext password: sends the URL's password as it is.
    async fn answer_cleartext(&mut self, auth: &mut AuthExchange<'_>) -> Result<(), StartupError> {
        frontend::password_message(password(auth.info)?, &mut self.wbuf)
            .map_err(|e| other(e.into()))?;
        self.flush().await.map_err(other)?;
        auth.state.finished = true;
        Ok(())
    }

    /// MD5: sends md5(md5(password + user) + salt); `data` starts with the
    /// 4-byte salt.
    async fn answer_md5(
        &mut self,
        auth: &mut AuthExchange<'_>,
        data: &[u8],
    ) -> Result<(), StartupError> {
        let salt: [u8; 4] = data
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| other(SourceError::Protocol("short md5 salt".into())))?;
        let hash = postgres_protocol::authentication::md5_hash(
            auth.info.user.as_bytes(),
            password(auth.info)?,
            salt,
        );
        frontend::password_message(hash.as_bytes(), &mut self.wbuf).map_err(|e| other(e.into()))?;
        self.flush().await.map_err(other)?;
        auth.state.finished = true;
        Ok(())
    }

    /// SASL start: picks SCRAM-SHA-256(-PLUS) from the server's `list` as
    /// the channel-binding policy says, and sends the client-first message.
    async fn start_scram(
        &mut self,
        auth: &mut AuthExchange<'_>,
        list: &[u8],
    ) -> Result<(), StartupError> {
        let (mechanism, cb) = auth
            .policy
            .choose_sasl(list, auth.binding.clone(), auth.state.tls)
            .map_err(|r| other(r.into()))?;
        let s = ScramSha256::new(password(auth.info)?, cb);
        frontend::sasl_initial_response(mechanism, s.message(), &mut self.wbuf)
            .map_err(|e| other(e.into()))?;
        self.flush().await.map_err(other)?;
        auth.state.sasl_pending = true;
        auth.state.sasl_plus = mechanism == auth::SCRAM_SHA_256_PLUS;
        auth.scram = Some(s);
        Ok(())
    }

    /// SASL continue: the server-first message in `data`; sends the
    /// client-final message (the proof).
    async fn continue_scram(
        &mut self,
        auth: &mut AuthExchange<'_>,
        data: &[u8],
    ) -> Result<(), StartupError> {
        let info = auth.info;
        let s = auth
            .scram
            .as_mut()
            .ok_or_else(|| other(SourceError::Protocol("SASL continue before start".into())))?;
        s.update(data)
            .map_err(|e| other(auth_failed(info, e.to_string())))?;
        frontend::sasl_response(s.message(), &mut self.wbuf).map_err(|e| other(e.into()))?;
        self.flush().await.map_err(other)
    }

    /// `server_version_num`-style major version (e.g. 15), from the
    /// `server_version` parameter.
    pub(crate) fn server_major(&self) -> u32 {
        self.params
            .get("server_version")
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or(0)
    }

    pub(crate) fn error(&self, body: &[u8]) -> SourceError {
        SourceError::from_server(parse_error_fields(body), &self.ctx)
    }

    /// Writes the pending output buffer.
    pub(crate) async fn flush(&mut self) -> Result<(), SourceError> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.io.flush().await?;
        Ok(())
    }

    /// A whole frame is buffered: the next `read_frame` needs no syscall.
    pub(crate) fn has_frame(&self) -> bool {
        self.skipping.is_none() && self.rbuf.len() >= 5 && {
            let len = u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]);
            self.rbuf.len() > len as usize
        }
    }

    /// Bytes the last socket read returned.
    pub(crate) fn last_read(&self) -> usize {
        self.last_read
    }

    /// Wake on this socket only once `bytes` are queued (`SO_RCVLOWAT`;
    /// 1: every arrival). Refused (`Unsupported`) where it does not apply:
    /// a Unix socket (whose readiness ignores it), a kernel other than
    /// Linux, or a receive buffer under 4 × `bytes`: raising the mark past
    /// what the buffer holds would make Linux grow the buffer and clamp
    /// the TCP window to the mark for the rest of the connection.
    pub(crate) fn set_wake_threshold(&self, bytes: u32) -> std::io::Result<()> {
        let unsupported = || Err(std::io::ErrorKind::Unsupported.into());
        let Some(fd) = self.tcp_fd else {
            return unsupported();
        };
        if bytes > 1 && transport::recv_buffer_of(fd)? < bytes.saturating_mul(4) {
            return unsupported();
        }
        transport::set_recv_lowat(fd, bytes)
    }

    pub(crate) fn wbuf(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    /// Next backend frame. Cancel-safe: partial data stays in `rbuf`.
    pub(crate) async fn read_frame(&mut self) -> Result<Frame, SourceError> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(f);
            }
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.make_room(READ_CHUNK / 4);
            }
            let n = self.io.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                return Err(SourceError::Closed);
            }
            self.last_read = n;
        }
    }

    /// Room in `rbuf` for `need` more bytes: a fresh chunk with the partial
    /// frame copied over, not `reserve`. While frames split off the old
    /// chunk (and the events whose text spans them) live, `reserve` cannot
    /// reuse it; once they are gone it reallocated it, copying the whole
    /// chunk, consumed part included (0.9 % of a drain's instructions).
    fn make_room(&mut self, need: usize) {
        if self.rbuf.capacity() - self.rbuf.len() >= need {
            return;
        }
        let mut fresh = BytesMut::with_capacity(READ_CHUNK.max(self.rbuf.len() + need));
        fresh.extend_from_slice(&self.rbuf);
        self.rbuf = fresh;
    }

    /// CopyData messages whose body is over `max` bytes are read through
    /// without being held: the frame carries their first
    /// [`OVERSIZED_PREFIX`] bytes and their size (memory stays bounded by
    /// configuration whatever a row holds).
    pub(crate) fn set_max_message(&mut self, max: usize) {
        self.max_message = max.clamp(OVERSIZED_PREFIX, MAX_FRAME);
    }

    /// Consumes what the buffer holds of the message being read through;
    /// the frame once its last byte is read.
    fn continue_skipping(&mut self) -> Option<Frame> {
        let skip = self.skipping.as_mut()?;
        let keep = (skip.keep - skip.kept.len()).min(self.rbuf.len());
        skip.kept.extend_from_slice(&self.rbuf[..keep]);
        self.rbuf.advance(keep);
        skip.remaining -= keep;
        let drop = skip.remaining.min(self.rbuf.len());
        self.rbuf.advance(drop);
        skip.remaining -= drop;
        if skip.remaining > 0 {
            return None;
        }
        let skip = self.skipping.take()?;
        Some(Frame {
            tag: skip.tag,
            body: skip.kept.freeze(),
            oversized: Some(skip.total),
        })
    }

    /// The next frame if it is whole in the buffer (no socket read).
    pub(crate) fn try_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.skipping.is_some() {
            return Ok(self.continue_skipping());
        }
        if self.rbuf.len() < 5 {
            return Ok(None);
        }
        let tag = self.rbuf[0];
        let len =
            u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]) as usize;
        if !(4..=MAX_FRAME).contains(&len) {
            return Err(SourceError::Protocol(format!("invalid frame length {len}")));
        }
        if tag == b'd' && len - 4 > self.max_message {
            self.rbuf.advance(5);
            let total = len - 4;
            self.skipping = Some(Skipping {
                tag,
                kept: BytesMut::with_capacity(OVERSIZED_PREFIX),
                keep: OVERSIZED_PREFIX,
                remaining: total,
                total,
            });
            return Ok(self.continue_skipping());
        }
        if self.rbuf.len() < len + 1 {
            self.make_room(len + 1 - self.rbuf.len());
            return Ok(None);
        }
        let mut frame = self.rbuf.split_to(len + 1);
        frame.advance(5);
        Ok(Some(Frame {
            tag,
            body: frame.freeze(),
            oversized: None,
        }))
    }

    /// Runs one simple query and returns the rows of its (last) result.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>, SourceError> {
        frontend::query(sql, &mut self.wbuf)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut err = None;
        loop {
            let f = self.read_frame().await?;
            match f.tag {
                b'T' => rows.clear(),
                b'D' => rows.push(parse_data_row(&f.body)?),
                b'E' => err = Some(self.error(&f.body)),
                b'Z' => break,
                _ => {}
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Sends Terminate and closes.
    pub async fn close(mut self) {
        frontend::terminate(&mut self.wbuf);
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

fn parse_data_row(body: &[u8]) -> Result<Row, SourceError> {
    let bad = || SourceError::Protocol("malformed DataRow".into());
    let mut b = body;
    if b.len() < 2 {
        return Err(bad());
    }
    let n = b.get_i16();
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if b.len() < 4 {
            return Err(bad());
        }
        let len = b.get_i32();
        if len < 0 {
            row.push(None);
        } else {
            let len = len as usize;
            let v = b.get(..len).ok_or_else(bad)?;
            row.push(Some(String::from_utf8_lossy(v).into_owned()));
            b.advance(len);
        }
    }
    Ok(row)
}

/// Parses the fields of an ErrorResponse/NoticeResponse.
pub(crate) fn parse_error_fields(body: &[u8]) -> ServerError {
    let mut e = ServerError::default();
    for field in body.split(|b| *b == 0) {
        let Some((&t, v)) = field.split_first() else {
            continue;
        };
        let v = String::from_utf8_lossy(v).into_owned();
        match t {
            b'V' => e.severity = v,
            b'S' if e.severity.is_empty() => e.severity = v,
            b'C' => e.code = v,
            b'M' => e.message = v,
            b'D' => e.detail = Some(v),
            b'H' => e.hint = Some(v),
            b'R' => e.routine = Some(v),
            _ => {}
        }
    }
    e
}

/// Quotes an identifier for replication commands and SQL.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal.
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A replication connection (`replication=database`) to `url`.
pub async fn connect_replication(url: &Secret) -> Result<PgConn, SourceError> {
    let info = ConnInfo::parse(url.expose())?;
    PgConn::connect(&info, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection reading what `server` writes, with nothing negotiated.
    fn conn_over(io: tokio::io::DuplexStream) -> PgConn {
        PgConn {
            io: Box::new(io),
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::new(),
            params: HashMap::new(),
            ctx: ErrorContext::default(),
            tls: false,
            unix: false,
            recv_buffer: None,
            last_read: 0,
            tcp_fd: None,
            max_message: MAX_FRAME,
            skipping: None,
        }
    }

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    /// A CopyData message over the maximum comes out as its first
    /// OVERSIZED_PREFIX bytes and its size, without the buffer ever growing
    /// to hold it; the frames around it are untouched.
    #[tokio::test]
    async fn an_oversized_message_is_read_through_not_held() {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let wire: Vec<u8> = [
            frame(b'd', b"before"),
            frame(b'd', &big),
            frame(b'd', b"after"),
        ]
        .concat();
        let (mut server, client) = tokio::io::duplex(64 * 1024);
        let mut conn = conn_over(client);
        conn.set_max_message(100_000);
        let writer = tokio::spawn(async move {
            server.write_all(&wire).await.unwrap();
            server
        });
        assert_eq!(&conn.read_frame().await.unwrap().body[..], b"before");
        let f = conn.read_frame().await.unwrap();
        assert_eq!(f.oversized, Some(big.len()));
        assert_eq!(f.body.len(), OVERSIZED_PREFIX);
        assert!(f.body[..] == big[..OVERSIZED_PREFIX]);
        assert!(
            conn.rbuf.capacity() < 1_000_000,
            "buffered {} bytes",
            conn.rbuf.capacity()
        );
        let after = conn.read_frame().await.unwrap();
        assert_eq!((&after.body[..], after.oversized), (&b"after"[..], None));
        let _ = writer.await;
    }

    /// Frames smaller and larger than the read chunk, arriving a few KB at
    /// a time, come out whole and in order, however the reads split them.
    #[tokio::test]
    async fn frames_of_any_size_come_out_whole_across_small_reads() {
        let sizes = [10, 200_000, 3, 700_000, 65_000, 1, 300_000, 5];
        let bodies: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let (mut server, client) = tokio::io::duplex(7_000);
        let mut conn = conn_over(client);
        let wire: Vec<u8> = bodies.iter().flat_map(|b| frame(b'd', b)).collect();
        let writer = tokio::spawn(async move {
            server.write_all(&wire).await.unwrap();
            server
        });
        for body in &bodies {
            let f = conn.read_frame().await.unwrap();
            assert_eq!(f.tag, b'd');
            assert_eq!(f.body.len(), body.len());
            assert!(
                f.body == body[..],
                "a frame of {} bytes changed",
                body.len()
            );
        }
        drop(writer.await.unwrap());
        assert!(matches!(conn.read_frame().await, Err(SourceError::Closed)));
    }
}
