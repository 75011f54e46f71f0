//! Applies [`AuthPolicy`] to a connection whose authentication someone
//! else runs (tokio-postgres, for the SQL connections): a stream wrapper
//! that reads the backend's messages up to ReadyForQuery, checks every
//! AuthenticationRequest, and hands a message to the reader only after it
//! passed. A refused request never reaches tokio-postgres, so it never
//! answers it; the read fails with the [`Refusal`] inside the I/O error.
//!
//! tokio-postgres verifies SCRAM's server-final message and picks the SASL
//! mechanism by the same rule as `AuthPolicy::choose_sasl` (PLUS when
//! offered and the TLS stream has binding data), so the guard knows which
//! one it will send and applies the whole policy: `channel_binding`
//! (refused in libpq's words before tokio-postgres answers), `require_auth`,
//! the SCRAM-PLUS-over-plain refusal and "AuthenticationOk only after SASL
//! final".

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::source::auth::{AuthPolicy, AuthState, Refusal, Request, SCRAM_SHA_256_PLUS};

/// Startup messages are small (SASL challenges, parameters, errors).
const MAX_STARTUP_MESSAGE: usize = 1 << 20;

struct Inspector {
    policy: AuthPolicy,
    state: AuthState,
    /// The TLS stream has tls-server-end-point data.
    binding: bool,
}

pub(crate) struct Guarded<S> {
    inner: S,
    /// `None`: passing bytes through (before TLS, or after ReadyForQuery).
    inspect: Option<Inspector>,
    /// Read from `inner`, not yet checked.
    raw: BytesMut,
    /// Checked, not yet handed to the reader.
    checked: BytesMut,
}

impl<S> Guarded<S> {
    /// Checks the backend messages from the first byte on (the startup
    /// exchange runs on this stream). `tls`: the stream is TLS; `binding`:
    /// it has channel-binding data.
    pub(crate) fn inspecting(inner: S, policy: &AuthPolicy, tls: bool, binding: bool) -> Self {
        Guarded {
            inner,
            inspect: Some(Inspector {
                policy: policy.clone(),
                binding,
                state: AuthState {
                    tls,
                    ..Default::default()
                },
            }),
            raw: BytesMut::new(),
            checked: BytesMut::new(),
        }
    }

    /// Passes everything through (the SSLRequest exchange before TLS).
    pub(crate) fn passthrough(inner: S) -> Self {
        Guarded {
            inner,
            inspect: None,
            raw: BytesMut::new(),
            checked: BytesMut::new(),
        }
    }

    /// The wrapped stream. Only for a pass-through guard (nothing buffered).
    pub(crate) fn into_inner(self) -> S {
        debug_assert!(self.raw.is_empty() && self.checked.is_empty());
        self.inner
    }
}

impl Inspector {
    /// Checks one whole message; `Ok(true)` when inspection is over.
    fn check(&mut self, msg: &[u8]) -> Result<bool, Refusal> {
        match msg[0] {
            b'R' => {
                let req = Request::parse(&msg[5..]).ok_or_else(|| Refusal {
                    parameter: "protocol",
                    message: "short authentication message".into(),
                })?;
                self.policy.check(req, &self.state)?;
                match req {
                    Request::Cleartext | Request::Md5 => self.state.finished = true,
                    Request::Sasl(list) => {
                        let binding = self.binding.then(Vec::new);
                        let (mechanism, _) =
                            self.policy.choose_sasl(list, binding, self.state.tls)?;
                        self.state.sasl_plus = mechanism == SCRAM_SHA_256_PLUS;
                        self.state.sasl_pending = true;
                    }
                    Request::SaslFinal => {
                        // tokio-postgres verifies the signature before it
                        // reads on; a bad one ends the connection there.
                        self.state.sasl_pending = false;
                        self.state.finished = true;
                    }
                    _ => {}
                }
                Ok(false)
            }
            // ReadyForQuery, or a (startup-time, always fatal) error.
            b'Z' | b'E' => Ok(true),
            _ => Ok(false),
        }
    }
}

fn refused(r: Refusal) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, r)
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.checked.is_empty() {
                let n = buf.remaining().min(this.checked.len());
                buf.put_slice(&this.checked[..n]);
                this.checked.advance(n);
                return Poll::Ready(Ok(()));
            }
            let Some(inspector) = this.inspect.as_mut() else {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            };
            while this.raw.len() >= 5 {
                let len = u32::from_be_bytes([this.raw[1], this.raw[2], this.raw[3], this.raw[4]])
                    as usize;
                if !(4..=MAX_STARTUP_MESSAGE).contains(&len) {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("invalid startup message length {len}"),
                    )));
                }
                if this.raw.len() < len + 1 {
                    break;
                }
                let msg = this.raw.split_to(len + 1);
                let done = inspector.check(&msg).map_err(refused)?;
                this.checked.extend_from_slice(&msg);
                if done {
                    let rest = this.raw.split();
                    this.checked.extend_from_slice(&rest);
                    this.inspect = None;
                    break;
                }
            }
            if !this.checked.is_empty() {
                continue;
            }
            let mut tmp = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(())); // EOF
            }
            this.raw.extend_from_slice(rb.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The policy refusal inside an error chain (tokio-postgres wraps our
/// read error as its I/O error).
pub(crate) fn find_refusal<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refusal>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<Refusal>()) {
                return Some(r);
            }
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::auth::{ChannelBindingMode, RequireAuth};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[tokio::test]
    async fn a_refused_request_never_reaches_the_reader() {
        let policy = AuthPolicy {
            channel_binding: ChannelBindingMode::Prefer,
            require_auth: Some(RequireAuth::parse("scram-sha-256").unwrap()),
        };
        let (mut server, client) = tokio::io::duplex(1024);
        let mut g = Guarded::inspecting(client, &policy, false, false);
        // One byte at a time: the message is checked whole, then refused.
        let cleartext = msg(b'R', &3i32.to_be_bytes());
        for b in cleartext {
            server.write_all(&[b]).await.unwrap();
        }
        let mut out = [0u8; 64];
        let e = g.read(&mut out).await.unwrap_err();
        assert!(find_refusal(&e).is_some(), "{e}");
    }

    #[tokio::test]
    async fn allowed_messages_pass_unchanged_and_inspection_stops_at_ready() {
        let policy = AuthPolicy {
            channel_binding: ChannelBindingMode::Prefer,
            require_auth: None,
        };
        let (mut server, client) = tokio::io::duplex(1 << 16);
        let mut g = Guarded::inspecting(client, &policy, false, false);
        let mut wire = msg(
            b'R',
            &5i32
                .to_be_bytes()
                .iter()
                .chain(b"salt")
                .copied()
                .collect::<Vec<_>>(),
        );
        wire.extend(msg(b'R', &0i32.to_be_bytes()));
        wire.extend(msg(b'Z', b"I"));
        // After ReadyForQuery anything passes, even what looks like a request.
        wire.extend(msg(b'R', &3i32.to_be_bytes()));
        server.write_all(&wire).await.unwrap();
        drop(server);
        let mut got = Vec::new();
        g.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, wire);
    }
}
