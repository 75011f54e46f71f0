//! A thin Postgres wire client for replication connections (tokio-postgres
//! has no CopyBoth): TCP/TLS with SSLRequest negotiation or a Unix socket,
//! startup with `replication=database`, trust/cleartext/md5/SCRAM-SHA-256
//! auth, simple query, and raw backend frames.
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
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UnixStream};

use crate::source::conninfo::{ConnInfo, SslMode};
use crate::source::error::{ErrorContext, ServerError, SourceError};
use crate::source::hosts::SessionAttrs;
use crate::source::tls;

/// The receive buffer we ask for on a loopback replication connection (the
/// kernel doubles it for bookkeeping). Why small: the walsender writes
/// every WAL message separately with TCP_NODELAY, and loopback has no GRO,
/// so with the default auto-tuned window (megabytes) every message crosses
/// as its own tiny segment, and each costs both processes a
/// per-segment toll (skb alloc, copy, free, ACK). A window this size fills
/// within a bulk read pause; the server's writes then queue on its side and
/// merge into segments of up to 64 KiB. Measured (BENCHMARKS.md, session
/// 6): kernel time per event 0.44 -> 0.16 µs, total 1.41 -> 1.05 µs, and
/// 1.06x -> 1.75x pg_recvlogical's rows/s (300k events; 2.12x on 1M). 32 KiB stalls
/// the drain (reads fall under the bulk threshold and every read pauses);
/// 128 KiB and up lose half the gain. Over a real network the NIC merges
/// segments (GRO) and a fixed window would cap throughput at window / RTT,
/// so only loopback gets it.
pub const LOOPBACK_RECV_BUFFER: u32 = 64 * 1024;
/// Read buffer: big enough for many XLogData frames per syscall.
const READ_CHUNK: usize = 256 * 1024;
/// Refuse frames above this (Postgres caps messages at 1 GiB).
const MAX_FRAME: usize = 1 << 30;

pub trait AsyncIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncIo for T {}

/// One backend message: its tag and body (without the length).
#[derive(Clone, Debug)]
pub struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

pub struct PgConn {
    io: Box<dyn AsyncIo>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    pub params: HashMap<String, String>,
    pub ctx: ErrorContext,
    pub tls: bool,
    /// Connected through a Unix-domain socket.
    pub unix: bool,
    /// The receive buffer the kernel granted, when we set one (see
    /// [`LOOPBACK_RECV_BUFFER`]); `None`: the kernel auto-tunes it.
    pub recv_buffer: Option<u32>,
    /// Bytes the last socket read returned.
    last_read: usize,
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
pub type Row = Vec<Option<String>>;

/// Whether a connection to `addr` gets [`LOOPBACK_RECV_BUFFER`]: a
/// replication stream over loopback only.
fn fixed_window(replication: bool, addr: &std::net::SocketAddr) -> bool {
    replication && addr.ip().is_loopback()
}

/// Connects to the first address of `info.host` that answers, as libpq
/// does; replication connections to a loopback address get the small
/// receive window of [`LOOPBACK_RECV_BUFFER`]. Returns the stream and
/// the receive buffer the kernel granted, when we set one.
async fn connect_tcp(
    info: &ConnInfo,
    replication: bool,
) -> std::io::Result<(TcpStream, Option<u32>)> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host((info.host.as_str(), info.port)).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        let mut granted = None;
        if fixed_window(replication, &addr) {
            // Before connect: the window scale is agreed in the handshake.
            socket.set_recv_buffer_size(LOOPBACK_RECV_BUFFER)?;
            granted = Some(socket.recv_buffer_size()?);
        }
        match socket.connect(addr).await {
            Ok(tcp) => return Ok((tcp, granted)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} resolves to no address", info.host),
        )
    }))
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
    pub fn is_read_only(&self) -> bool {
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
        if let Some(path) = info.unix_socket_path() {
            let unix = UnixStream::connect(&path).await.map_err(|e| {
                SourceError::Io(std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot connect to the Unix socket {}: {e}; is the server (or the Cloud SQL Auth Proxy) running with that socket directory and port?",
                        path.display()
                    ),
                ))
            })?;
            return Self::start(Box::new(unix), false, info, replication).await;
        }
        let (mut tcp, recv_buffer) = connect_tcp(info, replication).await?;
        tcp.set_nodelay(true)?;
        let mut tls_used = false;
        let io: Box<dyn AsyncIo> = match tls::client_config(info)? {
            None => Box::new(tcp),
            Some(cfg) => {
                let mut b = BytesMut::new();
                frontend::ssl_request(&mut b);
                tcp.write_all(&b).await?;
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer).await?;
                match answer[0] {
                    b'S' => {
                        let name = tls::server_name(info)?;
                        let stream = tokio_rustls::TlsConnector::from(cfg)
                            .connect(name, tcp)
                            .await
                            .map_err(|e| tls::explain(info, &e))?;
                        tls_used = true;
                        Box::new(stream)
                    }
                    b'N' if info.sslmode == SslMode::Prefer => Box::new(tcp),
                    b'N' => {
                        return Err(SourceError::Tls {
                            host: info.host.clone(),
                            message: format!(
                                "the server does not support SSL but sslmode={:?} requires it; enable ssl on the server or use sslmode=prefer",
                                info.sslmode
                            ),
                        })
                    }
                    other => {
                        return Err(SourceError::Protocol(format!(
                            "unexpected answer {other:#x} to SSLRequest"
                        )))
                    }
                }
            }
        };
        let mut conn = Self::start(io, tls_used, info, replication).await?;
        conn.recv_buffer = recv_buffer;
        Ok(conn)
    }

    /// Startup and authentication on a connected transport.
    async fn start(
        io: Box<dyn AsyncIo>,
        tls_used: bool,
        info: &ConnInfo,
        replication: bool,
    ) -> Result<PgConn, SourceError> {
        let mut conn = PgConn {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(8 * 1024),
            params: HashMap::new(),
            ctx: ErrorContext {
                user: Some(info.user.clone()),
                ..Default::default()
            },
            tls: tls_used,
            unix: info.is_unix_socket(),
            recv_buffer: None,
            last_read: 0,
        };
        conn.startup(info, replication).await?;
        Ok(conn)
    }

    async fn startup(&mut self, info: &ConnInfo, replication: bool) -> Result<(), SourceError> {
        let mut params: Vec<(&str, &str)> = vec![
            ("user", info.user.as_str()),
            ("database", info.dbname.as_str()),
            ("application_name", info.application_name.as_str()),
            ("client_encoding", "UTF8"),
        ];
        if replication {
            params.push(("replication", "database"));
        }
        frontend::startup_message(params.iter().copied(), &mut self.wbuf)?;
        self.flush().await?;
        let password = || {
            info.password
                .as_ref()
                .map(|p| p.expose().as_bytes())
                .ok_or_else(|| SourceError::AuthFailed {
                    user: info.user.clone(),
                    message: "the server asks for a password and DATABASE_URL has none".into(),
                })
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let f = self.read_frame().await?;
            match f.tag {
                b'R' => {
                    let mut body = f.body.clone();
                    if body.len() < 4 {
                        return Err(SourceError::Protocol("short auth message".into()));
                    }
                    match body.get_i32() {
                        0 => {}
                        3 => {
                            frontend::password_message(password()?, &mut self.wbuf)?;
                            self.flush().await?;
                        }
                        5 => {
                            if body.len() < 4 {
                                return Err(SourceError::Protocol("short md5 salt".into()));
                            }
                            let salt = [body[0], body[1], body[2], body[3]];
                            let hash = postgres_protocol::authentication::md5_hash(
                                info.user.as_bytes(),
                                password()?,
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut self.wbuf)?;
                            self.flush().await?;
                        }
                        10 => {
                            let mechs: Vec<&[u8]> =
                                body.split(|b| *b == 0).filter(|m| !m.is_empty()).collect();
                            if !mechs.contains(&SCRAM_SHA_256.as_bytes()) {
                                return Err(SourceError::AuthFailed {
                                    user: info.user.clone(),
                                    message: "the server offers no SASL mechanism we support (SCRAM-SHA-256)".into(),
                                });
                            }
                            // We do not do channel binding: 'n' (not supported)
                            // is the honest flag whether or not TLS is on.
                            let s = ScramSha256::new(password()?, ChannelBinding::unsupported());
                            frontend::sasl_initial_response(
                                SCRAM_SHA_256,
                                s.message(),
                                &mut self.wbuf,
                            )?;
                            self.flush().await?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                SourceError::Protocol("SASL continue before start".into())
                            })?;
                            s.update(&body).map_err(|e| SourceError::AuthFailed {
                                user: info.user.clone(),
                                message: e.to_string(),
                            })?;
                            frontend::sasl_response(s.message(), &mut self.wbuf)?;
                            self.flush().await?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                SourceError::Protocol("SASL final before start".into())
                            })?;
                            s.finish(&body).map_err(|e| SourceError::AuthFailed {
                                user: info.user.clone(),
                                message: format!("server proof rejected: {e}"),
                            })?;
                        }
                        other => {
                            return Err(SourceError::AuthFailed {
                                user: info.user.clone(),
                                message: format!("unsupported authentication method {other}"),
                            })
                        }
                    }
                }
                b'S' => {
                    let mut parts = f.body.split(|b| *b == 0);
                    if let (Some(k), Some(v)) = (parts.next(), parts.next()) {
                        self.params.insert(
                            String::from_utf8_lossy(k).into_owned(),
                            String::from_utf8_lossy(v).into_owned(),
                        );
                    }
                }
                b'K' | b'N' => {}
                b'E' => return Err(self.error(&f.body)),
                b'Z' => return Ok(()),
                other => {
                    return Err(SourceError::Protocol(format!(
                        "unexpected message {:?} during startup",
                        other as char
                    )))
                }
            }
        }
    }

    /// `server_version_num`-style major version (e.g. 15), from the
    /// `server_version` parameter.
    pub fn server_major(&self) -> u32 {
        self.params
            .get("server_version")
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn error(&self, body: &[u8]) -> SourceError {
        SourceError::from_server(parse_error_fields(body), &self.ctx)
    }

    /// Writes the pending output buffer.
    pub async fn flush(&mut self) -> Result<(), SourceError> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.io.flush().await?;
        Ok(())
    }

    /// A whole frame is buffered: the next `read_frame` needs no syscall.
    pub fn has_frame(&self) -> bool {
        self.rbuf.len() >= 5 && {
            let len = u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]);
            self.rbuf.len() > len as usize
        }
    }

    /// Bytes the last socket read returned.
    pub fn last_read(&self) -> usize {
        self.last_read
    }

    pub fn wbuf(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    /// Next backend frame. Cancel-safe: partial data stays in `rbuf`.
    pub async fn read_frame(&mut self) -> Result<Frame, SourceError> {
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

    /// The next frame if it is whole in the buffer (no socket read).
    pub fn try_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.rbuf.len() < 5 {
            return Ok(None);
        }
        let tag = self.rbuf[0];
        let len =
            u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]) as usize;
        if !(4..=MAX_FRAME).contains(&len) {
            return Err(SourceError::Protocol(format!("invalid frame length {len}")));
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
pub fn parse_error_fields(body: &[u8]) -> ServerError {
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
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_replication_gets_a_fixed_window() {
        let at = |a: &str| a.parse::<std::net::SocketAddr>().unwrap();
        assert!(fixed_window(true, &at("127.0.0.1:5432")));
        assert!(fixed_window(true, &at("127.0.0.53:5432")));
        assert!(fixed_window(true, &at("[::1]:5432")));
        // Over a network the kernel's auto-tuning stays (a fixed window
        // would cap throughput at window / RTT).
        assert!(!fixed_window(true, &at("10.0.0.3:5432")));
        assert!(!fixed_window(true, &at("[2001:db8::1]:5432")));
        // Ordinary SQL connections are left alone.
        assert!(!fixed_window(false, &at("127.0.0.1:5432")));
    }

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
        }
    }

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        f.extend_from_slice(body);
        f
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
