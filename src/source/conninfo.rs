//! libpq connection URLs: `postgres://user:pw@host:port/db?sslmode=..&sslrootcert=..`.
//!
//! A host that is a directory (`?host=/cloudsql/proj:region:db`, or the
//! percent-encoded `postgres://user@%2Fvar%2Frun%2Fpostgresql/db`) means a
//! Unix-domain socket, `<dir>/.s.PGSQL.<port>`, as in libpq: the Cloud SQL
//! Auth Proxy's `--unix-socket` and a server on the same host. As in libpq,
//! TLS is not used on a Unix socket (the kernel is the transport), so
//! `sslmode` is ignored there.
//!
//! Several hosts (`postgres://u@h1:5432,h2:5432/db`, `?host=h1,h2`) and
//! `target_session_attrs=read-write` are libpq's too: see `hosts`.

use std::path::PathBuf;

use crate::secret::Secret;
use crate::source::error::SourceError;
use crate::source::hosts::{self, SessionAttrs};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(s: &str) -> Result<Self, SourceError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(SourceError::Config(format!(
                "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            )))
            }
        })
    }
}

/// A parsed connection URL. `Debug` never shows the password.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The first of `hosts`.
    pub host: String,
    pub port: u16,
    /// Every host to try, in order (one for a one-host URL).
    pub hosts: Vec<(String, u16)>,
    pub target_session_attrs: SessionAttrs,
    pub user: String,
    pub password: Option<Secret>,
    pub dbname: String,
    pub sslmode: SslMode,
    /// PEM file with trusted CAs; `None` or `system` = the webpki roots.
    pub sslrootcert: Option<PathBuf>,
    pub application_name: String,
    pub connect_timeout: Option<std::time::Duration>,
}

impl ConnInfo {
    pub fn parse(url: &str) -> Result<ConnInfo, SourceError> {
        let (url, url_hosts) = hosts::split_authority(url)?;
        let url = with_placeholder_host(&url);
        let u = url::Url::parse(&url).map_err(|e| {
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
        let dec = |s: &str| {
            percent_decode(s).map_err(|_| SourceError::Config("bad percent-encoding".into()))
        };
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
            sslrootcert: None,
            application_name: "projector".into(),
            connect_timeout: None,
        };
        let path = u.path().trim_start_matches('/');
        info.dbname = if path.is_empty() {
            info.user.clone()
        } else {
            dec(path)?
        };
        let (mut query_hosts, mut query_ports) = (None, None);
        for (k, v) in u.query_pairs() {
            match &*k {
                "sslmode" => info.sslmode = SslMode::parse(&v)?,
                "sslrootcert" => {
                    info.sslrootcert = (v != "system").then(|| PathBuf::from(&*v));
                }
                "host" => query_hosts = Some(v.into_owned()),
                "port" => query_ports = Some(hosts::parse_ports(&v)?),
                "target_session_attrs" => info.target_session_attrs = SessionAttrs::parse(&v)?,
                "user" => info.user = v.into_owned(),
                "password" => info.password = Some(Secret::new(v.into_owned())),
                "dbname" => info.dbname = v.into_owned(),
                "application_name" => info.application_name = v.into_owned(),
                "connect_timeout" => {
                    let secs: u64 = v.parse().map_err(|_| {
                        SourceError::Config(format!("connect_timeout={v:?} is not a number"))
                    })?;
                    info.connect_timeout = Some(std::time::Duration::from_secs(secs));
                }
                _ => {} // libpq knows many more; ignore what we do not use
            }
        }
        let (listed, default_port) = match query_hosts {
            Some(h) => (
                h.split(',').map(|h| (h.to_string(), None)).collect(),
                info.port,
            ),
            None if !url_hosts.is_empty() => (
                url_hosts
                    .into_iter()
                    .map(|(h, p)| dec(&h).map(|h| (h, p)))
                    .collect::<Result<Vec<_>, _>>()?,
                5432,
            ),
            None => (vec![(info.host.clone(), None)], info.port),
        };
        info.hosts = hosts::pair(listed, query_ports, default_port)?;
        (info.host, info.port) = info.hosts[0].clone();
        if info.hosts.len() == 1 && info.is_unix_socket() {
            info.sslmode = SslMode::Disable;
        }
        Ok(info)
    }

    /// One `ConnInfo` per host, in the order to try them (a socket host
    /// without TLS, as in libpq).
    pub fn candidates(&self) -> Vec<ConnInfo> {
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
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// The socket file of a Unix-socket host (`None` for TCP).
    pub fn unix_socket_path(&self) -> Option<PathBuf> {
        self.is_unix_socket()
            .then(|| PathBuf::from(&self.host).join(format!(".s.PGSQL.{}", self.port)))
    }

    /// Where we connect, for messages: `host:port` or the socket file.
    pub fn address(&self) -> String {
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
