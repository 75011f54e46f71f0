//! Several hosts in one `DATABASE_URL`, as libpq takes them:
//! `postgres://u@h1:5432,h2:5433/db`, `?host=h1,h2&port=5432,5433` (one
//! port for all hosts or one per host), with `target_session_attrs`
//! `any` (the first host that accepts) or `read-write` (the first that is
//! not a standby). Hosts are tried in order on every (re)connection, so
//! after a failover the projector finds the promoted standby by itself.
//!
//! The `url` crate takes one host per URL, so the host list is cut out of
//! the authority before parsing ([`split_authority`]) and the URL is parsed
//! with its first host only.

use std::borrow::Cow;

use crate::source::error::SourceError;

/// libpq's `target_session_attrs`, the values we act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum SessionAttrs {
    /// The first host that accepts the connection.
    #[default]
    Any,
    /// The first host that accepts writes: not in recovery, and not
    /// `default_transaction_read_only`.
    ReadWrite,
}

impl SessionAttrs {
    pub(crate) fn parse(v: &str) -> Result<Self, SourceError> {
        match v {
            "any" => Ok(SessionAttrs::Any),
            "read-write" | "primary" => Ok(SessionAttrs::ReadWrite),
            other => Err(SourceError::Config(format!(
                "target_session_attrs={other:?}: the projector streams from the primary; use read-write (or any)"
            ))),
        }
    }
}

/// A host as written in a URL, with its port if it had one.
pub(crate) type HostPort = (String, Option<u16>);

/// The URL with only the first host of its authority, and every
/// `(host, port)` of the authority when it named more than one (empty
/// otherwise). `postgres://u:p@h1:1,h2:2/db` → (`postgres://u:p@h1:1/db`,
/// [(h1, 1), (h2, 2)]).
pub(crate) fn split_authority(url: &str) -> Result<(Cow<'_, str>, Vec<HostPort>), SourceError> {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return Ok((url.into(), Vec::new()));
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    // The host list follows the last '@' (a password may hold ',').
    let hosts_at = authority.rfind('@').map_or(0, |i| i + 1);
    let list = &authority[hosts_at..];
    if !list.contains(',') {
        return Ok((url.into(), Vec::new()));
    }
    let hosts = list
        .split(',')
        .map(parse_host_port)
        .collect::<Result<Vec<_>, _>>()?;
    let first = list.split(',').next().unwrap_or_default();
    let cut = format!("{}{}{}", &url[..start + hosts_at], first, &url[end..]);
    Ok((cut.into(), hosts))
}

/// `h`, `h:5432`, `[::1]:5432` (hosts as written; percent-decoding is the
/// caller's).
fn parse_host_port(s: &str) -> Result<HostPort, SourceError> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let close = rest
            .find(']')
            .ok_or_else(|| SourceError::Config(format!("host {s:?}: unclosed '['")))?;
        (&rest[..close], rest[close + 1..].strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = port
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>().map_err(|_| {
                SourceError::Config(format!("port {p:?} of host {host:?} is not a number"))
            })
        })
        .transpose()?;
    Ok((host.to_string(), port))
}

/// Pairs hosts with ports as libpq does: one port for all hosts, or one
/// per host; a host without a port gets `default_port`.
pub(crate) fn pair(
    hosts: Vec<HostPort>,
    ports: Option<Vec<u16>>,
    default_port: u16,
) -> Result<Vec<(String, u16)>, SourceError> {
    match ports {
        None => Ok(hosts
            .into_iter()
            .map(|(h, p)| (h, p.unwrap_or(default_port)))
            .collect()),
        Some(ports) if ports.len() == 1 => {
            Ok(hosts.into_iter().map(|(h, _)| (h, ports[0])).collect())
        }
        Some(ports) if ports.len() == hosts.len() => Ok(hosts
            .into_iter()
            .zip(ports)
            .map(|((h, _), p)| (h, p))
            .collect()),
        Some(ports) => Err(SourceError::Config(format!(
            "{} hosts but {} ports: give one port for all hosts or one per host",
            hosts.len(),
            ports.len()
        ))),
    }
}

/// `port=5432` or `port=5432,5433`.
pub(crate) fn parse_ports(v: &str) -> Result<Vec<u16>, SourceError> {
    v.split(',')
        .map(|p| {
            p.trim()
                .parse()
                .map_err(|_| SourceError::Config(format!("port={v:?} is not a number")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_host_list_is_cut_to_its_first_host() {
        let (u, hosts) = split_authority("postgres://u:p,w@h1:5432,h2:5433/db?x=1").unwrap();
        assert_eq!(u, "postgres://u:p,w@h1:5432/db?x=1");
        assert_eq!(
            hosts,
            vec![("h1".into(), Some(5432)), ("h2".into(), Some(5433))]
        );
        let (u, hosts) = split_authority("postgres://[::1]:6000,db.example/app").unwrap();
        assert_eq!(u, "postgres://[::1]:6000/app");
        assert_eq!(
            hosts,
            vec![("::1".into(), Some(6000)), ("db.example".into(), None)]
        );
        let (u, hosts) = split_authority("postgres://u@one:5432/db").unwrap();
        assert_eq!(u, "postgres://u@one:5432/db");
        assert!(hosts.is_empty());
        assert!(split_authority("postgres://a:x,b/db").is_err());
    }

    #[test]
    fn ports_pair_with_hosts_as_in_libpq() {
        let hosts = || vec![("a".to_string(), None), ("b".to_string(), Some(7))];
        assert_eq!(
            pair(hosts(), None, 5432).unwrap(),
            vec![("a".into(), 5432), ("b".into(), 7)]
        );
        assert_eq!(
            pair(hosts(), Some(vec![6]), 5432).unwrap(),
            vec![("a".into(), 6), ("b".into(), 6)]
        );
        assert_eq!(
            pair(hosts(), Some(vec![1, 2]), 5432).unwrap(),
            vec![("a".into(), 1), ("b".into(), 2)]
        );
        assert!(pair(hosts(), Some(vec![1, 2, 3]), 5432).is_err());
        assert_eq!(parse_ports("5432, 5433").unwrap(), vec![5432, 5433]);
        assert!(parse_ports("x").is_err());
    }

    #[test]
    fn session_attrs_accept_what_streaming_can_use() {
        assert_eq!(SessionAttrs::parse("any").unwrap(), SessionAttrs::Any);
        assert_eq!(
            SessionAttrs::parse("read-write").unwrap(),
            SessionAttrs::ReadWrite
        );
        let e = SessionAttrs::parse("standby").unwrap_err().to_string();
        assert!(e.contains("read-write"), "{e}");
    }
}
