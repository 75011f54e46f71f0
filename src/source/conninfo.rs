//! libpq connection URLs: `postgres://user:pw@host:port/db?sslmode=..&sslrootcert=..`.
//!
//! A host that is a directory (`?host=/cloudsql/proj:region:db`, or the
//! percent-encoded `postgres://user@%2Fvar%2Frun%2Fpostgresql/db`) means a
//! Unix-domain socket, `<dir>/.s.PGSQL.<port>`, as in libpq: the Cloud SQL
//! Auth Proxy's `--unix-socket` and a server on the same host. As in libpq,
//! TLS is not used on a Unix socket (the kernel is the transport), so
//! `sslmode` is ignored there.

use std::path::PathBuf;

use crate::secret::Secret;
use crate::source::error::SourceError;

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
    pub host: String,
    pub port: u16,
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
        let url = with_placeholder_host(url);
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
        for (k, v) in u.query_pairs() {
            match &*k {
                "sslmode" => info.sslmode = SslMode::parse(&v)?,
                "sslrootcert" => {
                    info.sslrootcert = (v != "system").then(|| PathBuf::from(&*v));
                }
                "host" => info.host = v.into_owned(),
                "port" => {
                    info.port = v
                        .parse()
                        .map_err(|_| SourceError::Config(format!("port={v:?} is not a number")))?
                }
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
        if info.is_unix_socket() {
            info.sslmode = SslMode::Disable;
        }
        Ok(info)
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
