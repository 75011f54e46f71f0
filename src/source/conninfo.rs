//! libpq connection URLs: `postgres://user:pw@host:port/db?sslmode=..&sslrootcert=..`.
//!
//! A host that is a directory (`?host=/cloudsql/proj:region:db`, or the
//! percent-encoded `postgres://user@%2Fvar%2Frun%2Fpostgresql/db`) means a
//! Unix-domain socket, `<dir>/.s.PGSQL.<port>`, as in libpq: the Cloud SQL
//! Auth Proxy's `--unix-socket` and a server on the same host. As in libpq,
//! TLS is not used on a Unix socket (the kernel is the transport), so
//! `sslmode` is ignored there.
//!
//! Every libpq parameter is either honoured with libpq's meaning, listed in
//! `IGNORED` (no effect on authentication or encryption), or refused with
//! the fix: a security setting is never dropped.
//!
//! Several hosts (`postgres://u@h1:5432,h2:5432/db`, `?host=h1,h2`) and
//! `target_session_attrs=read-write` are libpq's too: see `hosts`.

use std::path::PathBuf;

use crate::secret::Secret;
use crate::source::auth::{ChannelBindingMode, RequireAuth};
use crate::source::error::SourceError;
use crate::source::hosts::{self, SessionAttrs};

/// libpq's six `sslmode`s (libpq-ssl, table "SSL Mode Descriptions").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    /// Plain first; TLS only if the server refuses the plain connection.
    Allow,
    /// TLS first; plain if the server does not offer TLS, the handshake
    /// fails, or the server refuses the TLS connection.
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub(crate) fn parse(s: &str) -> Result<Self, SourceError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(SourceError::Config(format!(
                "sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )))
            }
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// TLS is mandatory (no plain fallback).
    pub(crate) fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// Where trusted CAs come from (`sslrootcert`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RootCert {
    /// Not given: libpq's `~/.postgresql/root.crt`, used only if it exists.
    Default,
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's trust store.
    System,
}

impl RootCert {
    /// `sslrootcert`: `system`, or a file.
    fn parse(v: &str) -> Self {
        if v == "system" {
            RootCert::System
        } else {
            RootCert::File(PathBuf::from(v))
        }
    }
}

/// `sslcertmode` (libpq 16): whether a client certificate is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CertMode {
    Disable,
    Allow,
    /// Fail unless the server asked for a certificate.
    Require,
}

impl CertMode {
    fn parse(v: &str) -> Result<Self, SourceError> {
        match v {
            "disable" => Ok(CertMode::Disable),
            "allow" => Ok(CertMode::Allow),
            "require" => Ok(CertMode::Require),
            other => Err(SourceError::Config(format!(
                "sslcertmode={other:?} is not one of disable, allow, require"
            ))),
        }
    }
}

/// `ssl_min_protocol_version` / `ssl_max_protocol_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl TlsVersion {
    fn parse(key: &str, v: &str) -> Result<Self, SourceError> {
        Ok(match v {
            "TLSv1" => TlsVersion::Tls10,
            "TLSv1.1" => TlsVersion::Tls11,
            "TLSv1.2" => TlsVersion::Tls12,
            "TLSv1.3" => TlsVersion::Tls13,
            other => {
                return Err(SourceError::Config(format!(
                    "{key}={other:?} is not one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3"
                )))
            }
        })
    }
}

/// A parsed connection URL. `Debug` never shows the password.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The first of `hosts`.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Every host to try, in order (one for a one-host URL).
    pub(crate) hosts: Vec<(String, u16)>,
    pub(crate) target_session_attrs: SessionAttrs,
    pub(crate) user: String,
    pub(crate) password: Option<Secret>,
    pub(crate) dbname: String,
    pub(crate) sslmode: SslMode,
    pub(crate) sslrootcert: RootCert,
    /// Client certificate chain and key (PEM); `None`: libpq's
    /// `~/.postgresql/postgresql.{crt,key}` when they exist.
    pub(crate) sslcert: Option<PathBuf>,
    pub(crate) sslkey: Option<PathBuf>,
    pub(crate) sslcertmode: CertMode,
    /// Certificate revocation lists (PEM): a file, and/or a directory of files.
    pub(crate) sslcrl: Option<PathBuf>,
    pub(crate) sslcrldir: Option<PathBuf>,
    /// Send the host name as TLS SNI (libpq: `sslsni=1`, the default).
    pub(crate) sslsni: bool,
    pub(crate) ssl_min_protocol_version: TlsVersion,
    pub(crate) ssl_max_protocol_version: Option<TlsVersion>,
    pub(crate) channel_binding: ChannelBindingMode,
    pub(crate) require_auth: Option<RequireAuth>,
    /// The startup `options` (e.g. `-c search_path=app`).
    pub(crate) options: Option<String>,
    /// Unix-socket connections only: the server process's OS user.
    pub(crate) requirepeer: Option<String>,
    pub(crate) application_name: String,
    pub(crate) connect_timeout: Option<std::time::Duration>,
}

/// libpq parameters we accept and do not act on: none of them weakens or
/// strengthens authentication or encryption (TCP keepalives, the long
/// obsolete `sslcompression`, GSSAPI settings that only matter to a GSSAPI
/// exchange we never start).
const IGNORED: &[&str] = &[
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslcompression",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
];

/// What the query string sets that is settled only once all of it is read
/// (see [`ConnInfo::settle`]): the sslmode's default depends on
/// sslrootcert, application_name wins over fallback_application_name, and
/// `host`/`port` lists replace or pair with the URL's hosts.
#[derive(Default)]
struct Deferred {
    sslmode: Option<SslMode>,
    application_name: Option<String>,
    fallback_application_name: Option<String>,
    hosts: Option<String>,
    ports: Option<Vec<u16>>,
}

impl ConnInfo {
    /// Parses a libpq URL: the URL itself (scheme, user, password, first
    /// host, port, dbname), then each query parameter in order (the first
    /// invalid one is the error), then what depends on several of them.
    pub fn parse(url: &str) -> Result<ConnInfo, SourceError> {
        let (url, url_hosts) = hosts::split_authority(url)?;
        let u = parse_url(&with_placeholder_host(&url))?;
        let mut info = ConnInfo::from_url(&u)?;
        let mut deferred = Deferred::default();
        for (k, v) in u.query_pairs() {
            let v = v.into_owned();
            // An empty value means "the default" in libpq.
            if v.is_empty() {
                continue;
            }
            info.apply(&mut deferred, &k, v)?;
        }
        info.settle(deferred, url_hosts)?;
        Ok(info)
    }

    /// The settings the URL's authority and path give, and libpq's
    /// defaults for everything else (host localhost, port 5432, user
    /// `$USER`, dbname the user).
    fn from_url(u: &url::Url) -> Result<ConnInfo, SourceError> {
        let mut info = ConnInfo {
            host: match u.host_str() {
                Some(h) => dec(h.trim_start_matches('[').trim_end_matches(']'))?,
                None => "localhost".into(),
            },
            port: u.port().unwrap_or(5432),
            hosts: Vec::new(),
            target_session_attrs: SessionAttrs::Any,
            user: if u.username().is_empty() {
                std::env::var("USER").unwrap_or_else(|_| "postgres".into())
            } else {
                dec(u.username())?
            },
            password: u.password().map(dec).transpose()?.map(Secret::new),
            dbname: String::new(),
            sslmode: SslMode::Prefer,
            sslrootcert: RootCert::Default,
            sslcert: None,
            sslkey: None,
            sslcertmode: CertMode::Allow,
            sslcrl: None,
            sslcrldir: None,
            sslsni: true,
            ssl_min_protocol_version: TlsVersion::Tls12,
            ssl_max_protocol_version: None,
            channel_binding: ChannelBindingMode::Prefer,
            require_auth: None,
            options: None,
            requirepeer: None,
            application_name: "projector".into(),
            connect_timeout: None,
        };
        let path = u.path().trim_start_matches('/');
        info.dbname = if path.is_empty() {
            info.user.clone()
        } else {
            dec(path)?
        };
        Ok(info)
    }

    /// One query parameter (`v` not empty): sets its field, or records it
    /// in `deferred`; accepts the values that change nothing and the
    /// `IGNORED` keys; refuses anything else with [`unsupported`].
    fn apply(&mut self, deferred: &mut Deferred, k: &str, v: String) -> Result<(), SourceError> {
        let path = || Some(PathBuf::from(&v));
        match k {
            "sslmode" => deferred.sslmode = Some(SslMode::parse(&v)?),
            "sslrootcert" => self.sslrootcert = RootCert::parse(&v),
            "sslcert" => self.sslcert = path(),
            "sslkey" => self.sslkey = path(),
            "sslcrl" => self.sslcrl = path(),
            "sslcrldir" => self.sslcrldir = path(),
            "sslcertmode" => self.sslcertmode = CertMode::parse(&v)?,
            "sslsni" => self.sslsni = flag("sslsni", &v)?,
            "ssl_min_protocol_version" => self.ssl_min_protocol_version = TlsVersion::parse(k, &v)?,
            "ssl_max_protocol_version" => {
                self.ssl_max_protocol_version = Some(TlsVersion::parse(k, &v)?)
            }
            "channel_binding" => self.channel_binding = ChannelBindingMode::parse(&v)?,
            "require_auth" => self.require_auth = Some(RequireAuth::parse(&v)?),
            "options" => self.options = Some(v),
            "requirepeer" => self.requirepeer = Some(v),
            "host" => deferred.hosts = Some(v),
            "port" => deferred.ports = Some(hosts::parse_ports(&v)?),
            "target_session_attrs" => self.target_session_attrs = SessionAttrs::parse(&v)?,
            "user" => self.user = v,
            "password" => self.password = Some(Secret::new(v)),
            "dbname" => self.dbname = v,
            "application_name" => deferred.application_name = Some(v),
            "fallback_application_name" => deferred.fallback_application_name = Some(v),
            "connect_timeout" => self.connect_timeout = connect_timeout(&v)?,
            "client_encoding" if v.eq_ignore_ascii_case("utf8") || v == "UTF-8" => {}
            "load_balance_hosts" if v == "disable" => {}
            "gssencmode" if v == "disable" || v == "prefer" => {}
            "sslnegotiation" if v == "postgres" => {}
            key if IGNORED.contains(&key) => {}
            key => return Err(unsupported(key, &v)),
        }
        Ok(())
    }

    /// What depends on several parameters, in this order: the host list,
    /// the TLS version range, requirepeer (TCP drops it), the application
    /// name, and the sslmode (its default, and `Disable` on a lone socket).
    fn settle(&mut self, d: Deferred, url_hosts: Vec<hosts::HostPort>) -> Result<(), SourceError> {
        self.resolve_hosts(d.hosts, d.ports, url_hosts)?;
        self.check_tls_range()?;
        if self.requirepeer.is_some() && !self.is_unix_socket() {
            // libpq ignores requirepeer on TCP; there is no peer to check.
            self.requirepeer = None;
        }
        self.application_name = d
            .application_name
            .or(d.fallback_application_name)
            .unwrap_or_else(|| "projector".into());
        self.sslmode = settled_sslmode(d.sslmode, &self.sslrootcert)?;
        if self.hosts.len() == 1 && self.is_unix_socket() {
            // libpq never uses TLS over a Unix socket, whatever sslmode says.
            self.sslmode = SslMode::Disable;
        }
        Ok(())
    }

    /// `hosts`, and `host`/`port` the first of them: `?host=` (with the
    /// URL's port as the default) over the URL's host list (default 5432)
    /// over the URL's one host; `?port=` pairs with them.
    fn resolve_hosts(
        &mut self,
        query_hosts: Option<String>,
        query_ports: Option<Vec<u16>>,
        url_hosts: Vec<hosts::HostPort>,
    ) -> Result<(), SourceError> {
        let (listed, default_port) = match query_hosts {
            Some(h) => (
                h.split(',').map(|h| (h.to_string(), None)).collect(),
                self.port,
            ),
            None if !url_hosts.is_empty() => (
                url_hosts
                    .into_iter()
                    .map(|(h, p)| dec(&h).map(|h| (h, p)))
                    .collect::<Result<Vec<_>, _>>()?,
                5432,
            ),
            None => (vec![(self.host.clone(), None)], self.port),
        };
        self.hosts = hosts::pair(listed, query_ports, default_port)?;
        // Never empty: each branch above lists at least one host.
        (self.host, self.port) = self.hosts[0].clone();
        Ok(())
    }

    /// A maximum TLS version must allow TLSv1.2 and not be below the minimum.
    fn check_tls_range(&self) -> Result<(), SourceError> {
        if let Some(max) = self.ssl_max_protocol_version {
            if max < TlsVersion::Tls12 {
                return Err(SourceError::Config(
                    "ssl_max_protocol_version below TLSv1.2 cannot be met: projector speaks TLSv1.2 and TLSv1.3".into(),
                ));
            }
            if self.ssl_min_protocol_version > max {
                return Err(SourceError::Config(
                    "ssl_min_protocol_version is above ssl_max_protocol_version".into(),
                ));
            }
        }
        Ok(())
    }

    /// One `ConnInfo` per host, in the order to try them (a socket host
    /// without TLS, as in libpq).
    pub(crate) fn candidates(&self) -> Vec<ConnInfo> {
        self.hosts
            .iter()
            .map(|(host, port)| {
                let mut one = self.clone();
                one.host = host.clone();
                one.port = *port;
                one.hosts = vec![(host.clone(), *port)];
                if one.is_unix_socket() {
                    one.sslmode = SslMode::Disable;
                }
                one
            })
            .collect()
    }

    /// The host is a socket directory (libpq: a host starting with `/`).
    pub(crate) fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// The socket file of a Unix-socket host (`None` for TCP).
    pub(crate) fn unix_socket_path(&self) -> Option<PathBuf> {
        self.is_unix_socket()
            .then(|| PathBuf::from(&self.host).join(format!(".s.PGSQL.{}", self.port)))
    }

    /// Where we connect, for messages: `host:port` or the socket file.
    pub(crate) fn address(&self) -> String {
        match self.unix_socket_path() {
            Some(p) => p.display().to_string(),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// libpq takes `postgres://user@/db?host=/socket/dir` (user, no host);
/// the `url` crate refuses an empty host after user info, so we put
/// `localhost` there (the default, and `?host=` overrides it).
pub(crate) fn with_placeholder_host(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.into();
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    if url[start..end].ends_with('@') {
        format!("{}localhost{}", &url[..end], &url[end..]).into()
    } else {
        url.into()
    }
}

fn percent_decode(s: &str) -> Result<String, ()> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or(())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// Percent-decodes a part of the URL (user, password, host, dbname).
fn dec(s: &str) -> Result<String, SourceError> {
    percent_decode(s).map_err(|_| SourceError::Config("bad percent-encoding".into()))
}

/// The URL itself: it parses, and its scheme is postgres or postgresql.
fn parse_url(url: &str) -> Result<url::Url, SourceError> {
    let u = url::Url::parse(url).map_err(|e| {
        SourceError::Config(format!(
            "{e}; expected postgres://user:password@host:5432/dbname"
        ))
    })?;
    if u.scheme() != "postgres" && u.scheme() != "postgresql" {
        return Err(SourceError::Config(format!(
            "scheme {:?} is not postgres:// or postgresql://",
            u.scheme()
        )));
    }
    Ok(u)
}

/// `connect_timeout` in seconds: 0 means none; under 2 is 2 (libpq's floor).
fn connect_timeout(v: &str) -> Result<Option<std::time::Duration>, SourceError> {
    let secs: u64 = v
        .parse()
        .map_err(|_| SourceError::Config(format!("connect_timeout={v:?} is not a number")))?;
    // libpq: 0 (and negative) means wait forever.
    Ok((secs > 0).then(|| std::time::Duration::from_secs(secs.max(2))))
}

/// The sslmode given (or its default, prefer), checked against
/// sslrootcert: `system` defaults to, and only allows, verify-full.
fn settled_sslmode(given: Option<SslMode>, root: &RootCert) -> Result<SslMode, SourceError> {
    Ok(match (given, root) {
        // libpq 16: public CAs make anything short of verify-full useless.
        (None, RootCert::System) => SslMode::VerifyFull,
        (Some(m), RootCert::System) if m != SslMode::VerifyFull => {
            return Err(SourceError::Config(format!(
                "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
                m.as_str()
            )))
        }
        (m, _) => m.unwrap_or(SslMode::Prefer),
    })
}

fn flag(key: &str, v: &str) -> Result<bool, SourceError> {
    match v {
        "1" => Ok(true),
        "0" => Ok(false),
        other => Err(SourceError::Config(format!(
            "{key}={other:?} is not 0 or 1"
        ))),
    }
}

/// A libpq parameter we cannot honour. libpq itself refuses names it does
/// not know; for the ones it knows we say what to do instead, never drop them.
fn unsupported(key: &str, v: &str) -> SourceError {
    let why = match key {
        "gssencmode" => "GSSAPI encryption is not supported; use gssencmode=disable and sslmode",
        "sslnegotiation" => "direct TLS negotiation is not supported; use sslnegotiation=postgres",
        "sslpassword" => {
            "encrypted client keys are not supported; decrypt it (openssl pkey -in key -out key.pem) and drop sslpassword"
        }
        "hostaddr" => "hostaddr is not supported; put the address in host",
        "service" | "passfile" => "service and password files are not read; put the parameters in DATABASE_URL",
        "replication" => "projector opens replication connections itself; drop replication",
        "target_session_attrs" => "only target_session_attrs=any is supported (one host)",
        "load_balance_hosts" => "only load_balance_hosts=disable is supported (one host)",
        "client_encoding" => "projector speaks UTF8; drop client_encoding",
        "sslkeylogfile" => "TLS key logging is not supported; drop sslkeylogfile",
        _ => "",
    };
    if why.is_empty() {
        SourceError::Config(format!(
            "invalid URI query parameter: {key:?} (not a libpq connection parameter projector knows)"
        ))
    } else {
        let shown = if key == "sslpassword" {
            "<redacted>"
        } else {
            v
        };
        SourceError::Config(format!("{key}={shown:?}: {why}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libpq_urls() {
        let c = ConnInfo::parse(
            "postgres://pro%40j:p%2Fw@db.example:6543/app?sslmode=verify-full&sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(c.user, "pro@j");
        assert_eq!(c.password.as_ref().unwrap().expose(), "p/w");
        assert_eq!(
            (c.host.as_str(), c.port, c.dbname.as_str()),
            ("db.example", 6543, "app")
        );
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert!(!format!("{c:?}").contains("p/w"));
        assert!(ConnInfo::parse("postgres://h/db?sslmode=bogus").is_err());
        assert!(ConnInfo::parse("mysql://h/db").is_err());
    }

    #[test]
    fn several_hosts_as_in_libpq() {
        let c = ConnInfo::parse(
            "postgres://app:pw@10.0.0.3:5432,10.0.0.4:6432/orders?target_session_attrs=read-write&sslmode=require",
        )
        .unwrap();
        assert_eq!(
            c.hosts,
            vec![("10.0.0.3".into(), 5432), ("10.0.0.4".into(), 6432)]
        );
        assert_eq!((c.host.as_str(), c.port), ("10.0.0.3", 5432));
        assert_eq!(c.target_session_attrs, SessionAttrs::ReadWrite);
        assert_eq!(c.password.as_ref().unwrap().expose(), "pw");
        assert_eq!(c.dbname, "orders");
        let second = &c.candidates()[1];
        assert_eq!((second.host.as_str(), second.port), ("10.0.0.4", 6432));
        assert_eq!(second.sslmode, SslMode::Require);
        assert_eq!(second.dbname, "orders");

        let c = ConnInfo::parse("postgres://app@/orders?host=a,b&port=7000").unwrap();
        assert_eq!(c.hosts, vec![("a".into(), 7000), ("b".into(), 7000)]);
        assert_eq!(c.target_session_attrs, SessionAttrs::Any);
        let c = ConnInfo::parse("postgres://app@/orders?host=a,/tmp&port=1,2").unwrap();
        assert_eq!(
            c.candidates()[1].unix_socket_path().unwrap(),
            PathBuf::from("/tmp/.s.PGSQL.2")
        );
        assert_eq!(c.candidates()[1].sslmode, SslMode::Disable);
        assert_eq!(c.candidates()[0].sslmode, SslMode::Prefer);
        assert!(ConnInfo::parse("postgres://app@/orders?host=a,b&port=1,2,3").is_err());
        assert!(ConnInfo::parse("postgres://h/db?target_session_attrs=standby").is_err());
        let one = ConnInfo::parse("postgres://app@db:6543/orders").unwrap();
        assert_eq!(one.hosts, vec![("db".into(), 6543)]);
        assert_eq!(one.candidates().len(), 1);
    }

    #[test]
    fn a_directory_host_is_a_unix_socket_without_tls() {
        let c = ConnInfo::parse(
            "postgres://app:pw@/orders?host=/cloudsql/p:r:db&port=6432&sslmode=verify-full",
        )
        .unwrap();
        assert!(c.is_unix_socket());
        assert_eq!((c.user.as_str(), c.dbname.as_str()), ("app", "orders"));
        assert_eq!(c.password.as_ref().unwrap().expose(), "pw");
        assert_eq!(
            c.unix_socket_path().unwrap(),
            PathBuf::from("/cloudsql/p:r:db/.s.PGSQL.6432")
        );
        assert_eq!(c.sslmode, SslMode::Disable);
        assert_eq!(c.address(), "/cloudsql/p:r:db/.s.PGSQL.6432");

        let c = ConnInfo::parse("postgres:///orders?host=/tmp").unwrap();
        assert_eq!((c.host.as_str(), c.dbname.as_str()), ("/tmp", "orders"));

        let c = ConnInfo::parse("postgres://app@%2Fvar%2Frun%2Fpostgresql/orders").unwrap();
        assert_eq!(c.host, "/var/run/postgresql");
        assert_eq!(c.dbname, "orders");
        assert_eq!(
            c.unix_socket_path().unwrap(),
            PathBuf::from("/var/run/postgresql/.s.PGSQL.5432")
        );

        let tcp = ConnInfo::parse("postgres://app@db:6543/orders").unwrap();
        assert!(tcp.unix_socket_path().is_none());
        assert_eq!(tcp.address(), "db:6543");
    }
}
