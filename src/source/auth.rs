//! Which authentication requests a connection may answer: libpq's
//! `channel_binding` and `require_auth`, and the SCRAM rules both
//! connections share (ours in `conn`, tokio-postgres's behind `guard`).
//!
//! Invariants, checked on every `AuthenticationRequest` before it is
//! answered, so a refused request never gets a password:
//! - TLS verification the `sslmode` demands is done first: the handshake
//!   verifies the server before the startup message is even sent.
//! - `channel_binding=require`: only SASL may be answered, and
//!   AuthenticationOk counts only after SCRAM-SHA-256-PLUS completed.
//! - `require_auth`: a method outside the list is refused; AuthenticationOk
//!   without a finished exchange is refused unless `none` is allowed.
//! - A started SCRAM exchange must end with a verified server-final
//!   message before AuthenticationOk is accepted (a server that skips it
//!   never proved it knows the password).
//! - SCRAM-SHA-256-PLUS offered on a plain connection is a downgrade sign.

use crate::source::error::SourceError;

/// libpq's `channel_binding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChannelBindingMode {
    Disable,
    Prefer,
    Require,
}

impl ChannelBindingMode {
    pub(crate) fn parse(s: &str) -> Result<Self, SourceError> {
        match s {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            other => Err(SourceError::Config(format!(
                "channel_binding={other:?} is not one of disable, prefer, require"
            ))),
        }
    }
}

/// An authentication method as `require_auth` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Password,
    Md5,
    Gss,
    Sspi,
    Scram,
    None,
}

impl Method {
    const ALL: [Method; 6] = [
        Method::Password,
        Method::Md5,
        Method::Gss,
        Method::Sspi,
        Method::Scram,
        Method::None,
    ];

    fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "password" => Method::Password,
            "md5" => Method::Md5,
            "gss" => Method::Gss,
            "sspi" => Method::Sspi,
            "scram-sha-256" => Method::Scram,
            "none" => Method::None,
            _ => return None,
        })
    }
}

/// libpq 16's `require_auth`: a list of methods, or of `!`-negated ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequireAuth {
    text: String,
    allowed: Vec<Method>,
}

impl RequireAuth {
    pub(crate) fn parse(s: &str) -> Result<Self, SourceError> {
        let bad = |m: String| Err(SourceError::Config(m));
        let mut negated = None;
        let mut listed = Vec::new();
        for item in s.split(',') {
            let (neg, name) = match item.strip_prefix('!') {
                Some(n) => (true, n),
                None => (false, item),
            };
            if *negated.get_or_insert(neg) != neg {
                return bad(format!(
                    "require_auth={s:?}: negative require_auth method \"{item}\" cannot be mixed with non-negative methods"
                ));
            }
            let Some(m) = Method::parse(name) else {
                return bad(format!(
                    "invalid require_auth method: \"{name}\" (one of password, md5, gss, sspi, scram-sha-256, none, each optionally with !)"
                ));
            };
            if listed.contains(&m) {
                return bad(format!(
                    "require_auth method \"{name}\" is specified more than once"
                ));
            }
            listed.push(m);
        }
        let allowed = if negated == Some(true) {
            Method::ALL
                .into_iter()
                .filter(|m| !listed.contains(m))
                .collect()
        } else {
            listed
        };
        Ok(RequireAuth {
            text: s.to_string(),
            allowed,
        })
    }

    fn allows(&self, m: Method) -> bool {
        self.allowed.contains(&m)
    }
}

/// The policy a connection authenticates under, from the conninfo.
#[derive(Clone, Debug)]
pub(crate) struct AuthPolicy {
    pub(crate) channel_binding: ChannelBindingMode,
    pub(crate) require_auth: Option<RequireAuth>,
}

/// One backend `AuthenticationRequest` (the `R` message), by code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request<'a> {
    Ok,
    Cleartext,
    Md5,
    Gss,
    Sspi,
    /// SASL start, with the mechanisms offered (NUL-separated list).
    Sasl(&'a [u8]),
    SaslContinue,
    SaslFinal,
    Other(i32),
}

impl<'a> Request<'a> {
    /// Decodes an `R` body (code, then the request's data).
    pub(crate) fn parse(body: &'a [u8]) -> Option<Request<'a>> {
        let code = i32::from_be_bytes(body.get(..4)?.try_into().ok()?);
        let rest = &body[4..];
        Some(match code {
            0 => Request::Ok,
            3 => Request::Cleartext,
            5 => Request::Md5,
            7 | 8 => Request::Gss,
            9 => Request::Sspi,
            10 => Request::Sasl(rest),
            11 => Request::SaslContinue,
            12 => Request::SaslFinal,
            other => Request::Other(other),
        })
    }
}

pub(crate) const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
pub(crate) const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// The SASL mechanisms of a `Request::Sasl` body.
pub(crate) fn mechanisms(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|b| *b == 0).filter(|m| !m.is_empty())
}

/// What has happened on one connection so far.
#[derive(Clone, Debug, Default)]
pub(crate) struct AuthState {
    /// The transport is TLS (verified as `sslmode` demands).
    pub(crate) tls: bool,
    /// A SASL exchange began and its server-final message is not yet verified.
    pub(crate) sasl_pending: bool,
    /// The exchange that began used SCRAM-SHA-256-PLUS.
    pub(crate) sasl_plus: bool,
    /// The client answered a method completely (password sent, or SCRAM
    /// server signature verified).
    pub(crate) finished: bool,
}

/// Why a request was refused, in libpq's words where libpq has them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Refusal {
    pub(crate) parameter: &'static str,
    pub(crate) message: String,
}

impl From<Refusal> for SourceError {
    fn from(r: Refusal) -> Self {
        SourceError::AuthPolicy {
            parameter: r.parameter,
            message: r.message,
        }
    }
}

impl AuthPolicy {
    /// May `req` be answered (or, for `Ok`, accepted) now? Called before
    /// anything is sent in reply.
    pub(crate) fn check(&self, req: Request<'_>, state: &AuthState) -> Result<(), Refusal> {
        if let Request::Sasl(list) = req {
            if !state.tls && mechanisms(list).any(|m| m == SCRAM_SHA_256_PLUS.as_bytes()) {
                return Err(Refusal {
                    parameter: "channel_binding",
                    message:
                        "server offered SCRAM-SHA-256-PLUS authentication over a non-SSL connection"
                            .into(),
                });
            }
        }
        if req == Request::Ok && state.sasl_pending {
            return Err(Refusal {
                parameter: "SCRAM",
                message: "the server reported authentication OK before SCRAM finished (no server signature verified)".into(),
            });
        }
        if self.channel_binding == ChannelBindingMode::Require {
            let refused = match req {
                Request::Sasl(_) | Request::SaslContinue | Request::SaslFinal => None,
                Request::Ok if state.sasl_plus && state.finished => None,
                Request::Ok => Some("channel binding required, but server authenticated client without channel binding"),
                _ => Some("channel binding required but not supported by server's authentication request"),
            };
            if let Some(m) = refused {
                return Err(Refusal {
                    parameter: "channel_binding",
                    message: m.into(),
                });
            }
        }
        if let Some(ra) = &self.require_auth {
            let reason = match req {
                Request::Ok if !ra.allows(Method::None) && !state.finished => {
                    Some("server did not complete authentication")
                }
                Request::Ok => None,
                Request::Cleartext if !ra.allows(Method::Password) => {
                    Some("server requested a cleartext password")
                }
                Request::Md5 if !ra.allows(Method::Md5) => {
                    Some("server requested a hashed password")
                }
                Request::Gss if !ra.allows(Method::Gss) => {
                    Some("server requested GSSAPI authentication")
                }
                Request::Sspi if !ra.allows(Method::Sspi) => {
                    Some("server requested SSPI authentication")
                }
                Request::Sasl(_) | Request::SaslContinue | Request::SaslFinal
                    if !ra.allows(Method::Scram) =>
                {
                    Some("server requested SASL authentication")
                }
                _ => None,
            };
            if let Some(r) = reason {
                return Err(Refusal {
                    parameter: "require_auth",
                    message: format!(
                        "authentication method requirement \"{}\" failed: {r}",
                        ra.text
                    ),
                });
            }
        }
        Ok(())
    }

    /// Picks the SASL mechanism and the GS2 flag, as libpq does: PLUS
    /// whenever TLS gives binding data and the server offers it; on TLS
    /// without PLUS on offer, plain SCRAM flagged "client supports binding"
    /// ('y', so a server that hid PLUS is caught); otherwise 'n'.
    pub(crate) fn choose_sasl(
        &self,
        list: &[u8],
        binding: Option<Vec<u8>>,
        tls: bool,
    ) -> Result<
        (
            &'static str,
            postgres_protocol::authentication::sasl::ChannelBinding,
        ),
        Refusal,
    > {
        use postgres_protocol::authentication::sasl::ChannelBinding;
        let has = |m: &str| mechanisms(list).any(|x| x == m.as_bytes());
        let refuse = |m: &str| Refusal {
            parameter: "channel_binding",
            message: m.into(),
        };
        let binding = binding.filter(|_| self.channel_binding != ChannelBindingMode::Disable);
        if has(SCRAM_SHA_256_PLUS) {
            if let Some(hash) = binding {
                return Ok((
                    SCRAM_SHA_256_PLUS,
                    ChannelBinding::tls_server_end_point(hash),
                ));
            }
        }
        if self.channel_binding == ChannelBindingMode::Require {
            return Err(refuse(if tls {
                "channel binding is required, but server did not offer an authentication method that supports channel binding"
            } else {
                "channel binding is required, but SSL not in use"
            }));
        }
        if !has(SCRAM_SHA_256) && !has(SCRAM_SHA_256_PLUS) {
            return Err(Refusal {
                parameter: "SCRAM",
                message: "the server offers no SASL mechanism we support (SCRAM-SHA-256)".into(),
            });
        }
        let flag = if tls && self.channel_binding != ChannelBindingMode::Disable {
            ChannelBinding::unrequested()
        } else {
            ChannelBinding::unsupported()
        };
        Ok((SCRAM_SHA_256, flag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(cb: ChannelBindingMode, ra: Option<&str>) -> AuthPolicy {
        AuthPolicy {
            channel_binding: cb,
            require_auth: ra.map(|s| RequireAuth::parse(s).unwrap()),
        }
    }

    #[test]
    fn require_auth_parses_as_libpq() {
        let r = RequireAuth::parse("!md5,!password").unwrap();
        assert!(r.allows(Method::Scram) && r.allows(Method::None) && !r.allows(Method::Md5));
        let r = RequireAuth::parse("scram-sha-256").unwrap();
        assert!(!r.allows(Method::None) && !r.allows(Method::Password));
        for bad in [
            "md5,!password",
            "scram-sha-256,scram-sha-256",
            "kerberos",
            "",
        ] {
            assert!(RequireAuth::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn channel_binding_require_answers_only_sasl_and_checks_ok() {
        let p = policy(ChannelBindingMode::Require, None);
        let st = AuthState {
            tls: true,
            ..Default::default()
        };
        for req in [Request::Cleartext, Request::Md5, Request::Ok] {
            let e = p.check(req, &st).unwrap_err();
            assert_eq!(e.parameter, "channel_binding", "{req:?}");
        }
        assert!(p
            .check(Request::Sasl(b"SCRAM-SHA-256-PLUS\0\0"), &st)
            .is_ok());
        let done = AuthState {
            tls: true,
            sasl_plus: true,
            finished: true,
            ..Default::default()
        };
        assert!(p.check(Request::Ok, &done).is_ok());
        // Plain SCRAM completed: still not bound.
        let plain = AuthState {
            finished: true,
            ..done.clone()
        };
        let plain = AuthState {
            sasl_plus: false,
            ..plain
        };
        assert!(p.check(Request::Ok, &plain).is_err());
    }

    #[test]
    fn ok_before_scram_final_is_refused_whatever_the_policy() {
        let p = policy(ChannelBindingMode::Disable, None);
        let st = AuthState {
            sasl_pending: true,
            ..Default::default()
        };
        assert!(p.check(Request::Ok, &st).is_err());
    }

    #[test]
    fn plus_over_plain_is_refused() {
        let p = policy(ChannelBindingMode::Prefer, None);
        let e = p
            .check(
                Request::Sasl(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"),
                &AuthState::default(),
            )
            .unwrap_err();
        assert!(e.message.contains("non-SSL"), "{e}");
    }

    #[test]
    fn require_auth_refuses_methods_and_unfinished_ok() {
        let p = policy(ChannelBindingMode::Prefer, Some("scram-sha-256"));
        let st = AuthState::default();
        let e = p.check(Request::Cleartext, &st).unwrap_err();
        assert_eq!(
            e.message,
            "authentication method requirement \"scram-sha-256\" failed: server requested a cleartext password"
        );
        assert!(p.check(Request::Md5, &st).is_err());
        assert!(p.check(Request::Ok, &st).is_err(), "trust is not scram");
        let p = policy(ChannelBindingMode::Prefer, Some("scram-sha-256,none"));
        assert!(p.check(Request::Ok, &st).is_ok());
        let p = policy(ChannelBindingMode::Prefer, Some("!password"));
        assert!(p.check(Request::Md5, &st).is_ok() && p.check(Request::Cleartext, &st).is_err());
    }

    #[test]
    fn sasl_choice_follows_libpq() {
        let both = b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
        let plain = b"SCRAM-SHA-256\0\0";
        let prefer = policy(ChannelBindingMode::Prefer, None);
        let (m, _) = prefer.choose_sasl(both, Some(vec![1; 32]), true).unwrap();
        assert_eq!(m, SCRAM_SHA_256_PLUS);
        let (m, _) = prefer.choose_sasl(plain, Some(vec![1; 32]), true).unwrap();
        assert_eq!(m, SCRAM_SHA_256);
        let disable = policy(ChannelBindingMode::Disable, None);
        let (m, _) = disable.choose_sasl(both, Some(vec![1; 32]), true).unwrap();
        assert_eq!(m, SCRAM_SHA_256);
        let require = policy(ChannelBindingMode::Require, None);
        assert!(require.choose_sasl(plain, Some(vec![1; 32]), true).is_err());
        assert!(require.choose_sasl(plain, None, false).is_err());
    }
}
