//! The socket under both connections, and libpq's order of attempts.
//!
//! ```text
//! open(): TCP (first address that answers) | Unix socket (+ requirepeer)
//! request_tls(): SSLRequest ─▶ 'S' (TLS next) | 'N' (server has no TLS)
//! attempts: disable  plain
//!           allow    plain, then TLS if the server refused the plain one
//!           prefer   TLS (plain on 'N'), then plain if the handshake failed
//!                    or the server refused the TLS connection
//!           require, verify-ca, verify-full   TLS only
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream};

use crate::source::conninfo::{ConnInfo, SslMode};
use crate::source::error::SourceError;

/// The receive buffer we ask for on a loopback replication connection;
/// see `conn::LOOPBACK_RECV_BUFFER` for why.
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
pub(crate) const LOOPBACK_RECV_BUFFER: u32 = 64 * 1024;

/// A connected socket, before any TLS.
#[derive(Debug)]
pub(crate) enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Transport {
    /// The TCP socket's descriptor (`None` for a Unix socket), for socket
    /// options set after connecting ([`set_recv_lowat`]).
    pub(crate) fn tcp_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        match self {
            Transport::Tcp(t) => Some(t.as_raw_fd()),
            Transport::Unix(_) => None,
        }
    }
}

/// `SO_RCVLOWAT`: the kernel reports the TCP socket readable (wakes epoll)
/// only once `bytes` are queued, where 1 is every arrival. Reads are not
/// affected: a non-blocking read returns whatever is queued. Linux only:
/// there lowering it signals readiness at once if enough is queued
/// (`tcp_set_rcvlowat` calls `tcp_data_ready`), which the caller relies on
/// to read what queued under a raised mark; other kernels need not.
#[cfg(target_os = "linux")]
pub(crate) fn set_recv_lowat(fd: std::os::fd::RawFd, bytes: u32) -> std::io::Result<()> {
    let value = bytes.clamp(1, i32::MAX as u32) as libc::c_int;
    // SAFETY: `fd` is an open socket owned by the caller's connection for
    // the duration of the call; the option value is a c_int passed with
    // its size, as setsockopt(2) requires.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn set_recv_lowat(_fd: std::os::fd::RawFd, _bytes: u32) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// `SO_RCVBUF` as the kernel reports it (bytes it may queue, doubled for
/// bookkeeping).
pub(crate) fn recv_buffer_of(fd: std::os::fd::RawFd) -> std::io::Result<u32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as in `set_recv_lowat`; getsockopt writes one c_int into
    // `value` and its size into `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value.max(0) as u32)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether a connection to `addr` gets [`LOOPBACK_RECV_BUFFER`]: a
/// replication stream over loopback only.
pub(crate) fn fixed_window(replication: bool, addr: &std::net::SocketAddr) -> bool {
    replication && addr.ip().is_loopback()
}

/// Connects to the first address of `info.host` that answers, as libpq
/// does; replication connections to a loopback address get the small
/// receive window. Returns the stream and the receive buffer the kernel
/// granted, when we set one.
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

/// Opens the socket `info` names.
pub(crate) async fn open(
    info: &ConnInfo,
    replication: bool,
) -> Result<(Transport, Option<u32>), SourceError> {
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
        if let Some(want) = &info.requirepeer {
            check_peer(&unix, want)?;
        }
        return Ok((Transport::Unix(unix), None));
    }
    let (tcp, granted) = connect_tcp(info, replication).await?;
    tcp.set_nodelay(true)?;
    Ok((Transport::Tcp(tcp), granted))
}

/// libpq's `requirepeer`: the server process runs as this OS user.
fn check_peer(unix: &UnixStream, want: &str) -> Result<(), SourceError> {
    let cred = unix.peer_cred()?;
    let uid = cred.uid();
    let name = user_name(uid);
    if name.as_deref() == Some(want) {
        return Ok(());
    }
    Err(SourceError::AuthPolicy {
        parameter: "requirepeer",
        message: format!(
            "requirepeer specifies \"{want}\", but actual peer user name is \"{}\"",
            name.unwrap_or_else(|| format!("uid {uid}"))
        ),
    })
}

fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pw` and `buf` (sizes passed) and sets
    // `out` to `&pw` on success; `pw_name` points into `buf`, read while it lives.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Sends SSLRequest; `true` when the server answers 'S' (TLS next).
pub async fn request_tls<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
) -> Result<bool, SourceError> {
    let mut b = BytesMut::new();
    frontend::ssl_request(&mut b);
    io.write_all(&b).await?;
    let mut answer = [0u8; 1];
    io.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => Ok(true),
        b'N' => Ok(false),
        // An ErrorResponse here is a pre-7.0 server (or not Postgres).
        other => Err(SourceError::Protocol(format!(
            "unexpected answer {other:#x} to SSLRequest"
        ))),
    }
}

/// The error of `sslmode=require`/`verify-*` when the server answers 'N'.
pub(crate) fn tls_refused(info: &ConnInfo) -> SourceError {
    SourceError::Tls {
        host: info.host.clone(),
        message: format!(
            "server does not support SSL, but SSL was required (sslmode={}); enable ssl on the server",
            info.sslmode.as_str()
        ),
    }
}

/// Whether an attempt runs over TLS or in the clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encryption {
    Plain,
    Tls,
}

/// How an attempt failed, as far as the choice of the next one goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server answered 'N' to SSLRequest.
    NoTls,
    /// The TLS handshake failed (verification included).
    Handshake,
    /// The server sent an ErrorResponse during startup or authentication
    /// (e.g. pg_hba has no line for this encryption).
    Server,
    /// Anything else (network, our own auth policy): no second attempt.
    Other,
}

/// libpq's first attempt for `mode` (never called with a Unix socket's
/// `Disable`... which is simply plain).
pub(crate) fn first_attempt(mode: SslMode) -> Encryption {
    match mode {
        SslMode::Disable | SslMode::Allow => Encryption::Plain,
        _ => Encryption::Tls,
    }
}

/// libpq's second attempt, if any, after the first failed. `used` is the
/// encryption the failed attempt ended up with.
pub(crate) fn fallback(mode: SslMode, used: Encryption, failure: Failure) -> Option<Encryption> {
    match (mode, used, failure) {
        (SslMode::Allow, Encryption::Plain, Failure::Server) => Some(Encryption::Tls),
        (
            SslMode::Prefer,
            Encryption::Tls,
            Failure::Handshake | Failure::Server | Failure::NoTls,
        ) => Some(Encryption::Plain),
        _ => None,
    }
}

/// The error of a two-attempt connection: the second one's, naming the
/// TLS failure of the first when there was one (else it would be lost).
pub(crate) fn combine(first: Option<SourceError>, second: SourceError) -> SourceError {
    match first {
        Some(SourceError::Tls { host, message }) if !matches!(second, SourceError::Tls { .. }) => {
            SourceError::Tls {
                host,
                message: format!("{message}; then, without TLS: {second}"),
            }
        }
        _ => second,
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
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

    #[test]
    fn attempts_follow_libpq() {
        use Encryption::*;
        use Failure::*;
        assert_eq!(first_attempt(SslMode::Allow), Plain);
        assert_eq!(first_attempt(SslMode::Prefer), Tls);
        assert_eq!(fallback(SslMode::Allow, Plain, Server), Some(Tls));
        assert_eq!(fallback(SslMode::Allow, Plain, Other), None);
        assert_eq!(fallback(SslMode::Prefer, Tls, Handshake), Some(Plain));
        assert_eq!(fallback(SslMode::Prefer, Tls, Server), Some(Plain));
        // prefer over a server that said 'N' already runs plain: no retry.
        assert_eq!(fallback(SslMode::Prefer, Plain, Server), None);
        for m in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            assert_eq!(fallback(m, Tls, Handshake), None);
            assert_eq!(fallback(m, Tls, Server), None);
        }
    }
}
