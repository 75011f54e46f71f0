//! The libpq TLS/authentication matrix: every case runs through our SQL
//! connection (tokio-postgres under our rules) and our replication
//! connection, and through libpq itself (`psql`, the Debian libpq 15 on
//! this machine) where libpq 15 knows the parameters. Each case also has
//! the outcome libpq's documentation gives; ours must equal it, and so
//! must psql's, so the table checks our reading of the docs as well.
//!
//! Servers: one cluster with a good certificate (SANs localhost,
//! 127.0.0.1; 127.0.0.2 is a "wrong name"), one presenting an expired
//! certificate and one a not-yet-valid one, all signed by the test CA.
//! Print the table: `cargo test --test source_tls_matrix -- --nocapture`
//! (also written to `target/tmp/tls-matrix.md`).
use crate::support::pg;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;

use pg::{Auth, PgCluster, PgOptions, ServerCert, TestDb};
use projector::source::conn::PgConn;
use projector::source::conninfo::ConnInfo;
use projector::source::sql;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conn {
    Sql,
    Replication,
}

/// What a connection attempt came to.
#[derive(Clone, Debug)]
enum Outcome {
    Tls,
    Plain,
    Refused(String),
}

impl Outcome {
    fn kind(&self) -> &'static str {
        match self {
            Outcome::Tls => "TLS",
            Outcome::Plain => "plain",
            Outcome::Refused(_) => "refused",
        }
    }
}

const SSL_QUERY: &str = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";

async fn ours(url: &str, conn: Conn) -> Outcome {
    let info = match ConnInfo::parse(url) {
        Ok(i) => i,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let ssl = match conn {
        Conn::Sql => match sql::connect_info(&info).await {
            Ok(client) => client
                .query_one(SSL_QUERY, &[])
                .await
                .map(|r| r.get::<_, bool>(0))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Conn::Replication => match PgConn::connect(&info, true).await {
            Ok(mut c) => {
                let r = c.simple_query(SSL_QUERY).await;
                let tls = c.tls;
                c.close().await;
                match r {
                    Ok(rows) => {
                        let server = rows[0][0].as_deref() == Some("t");
                        assert_eq!(server, tls, "our TLS flag and the server's disagree");
                        Ok(server)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        },
    };
    match ssl {
        Ok(true) => Outcome::Tls,
        Ok(false) => Outcome::Plain,
        Err(e) => Outcome::Refused(e),
    }
}

/// libpq's verdict: `psql` with the same URL (plus `replication=database`).
fn libpq(url: &str, conn: Conn) -> Outcome {
    let url = match conn {
        Conn::Sql => url.to_string(),
        Conn::Replication => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}replication=database")
        }
    };
    let out = Command::new("psql")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("PGCONNECT_TIMEOUT", "10")
        .args(["-XAtq", "-c", SSL_QUERY])
        .arg(&url)
        .output()
        .expect("run psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), stdout.trim()) {
        (true, "t") => Outcome::Tls,
        (true, "f") => Outcome::Plain,
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.rsplit(" failed: ").next().unwrap_or(l).trim().to_string())
                .collect::<Vec<_>>()
                .join(" / ");
            Outcome::Refused(line)
        }
    }
}

struct Case {
    group: &'static str,
    what: String,
    url: String,
    /// libpq's documented outcome: "TLS", "plain" or "refused".
    expect: &'static str,
    /// libpq 15 (psql here) knows every parameter of the URL.
    libpq15: bool,
    /// Words our refusal must contain (the cause named).
    cause: &'static str,
}

/// A TLS-terminating man in the middle: answers SSLRequest itself,
/// presents its own certificate (`pg::certs().wrong_client_cert`, signed
/// by the unrelated CA), and relays the plaintext to the real server over
/// a second TLS connection. Clients that verify nothing (`sslmode=require`
/// without a root file) cannot tell; only channel binding can, because
/// the server binds SCRAM to its own certificate.
async fn mitm_proxy(upstream_port: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = pg::certs();
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&pki.wrong_client_cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pki.wrong_client_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = ConnInfo::parse(&format!(
        "postgres://x@127.0.0.1:{upstream_port}/x?sslmode=require"
    ))
    .unwrap();
    let up_tls = projector::source::tls::setup(&upstream).unwrap().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (acceptor, up_tls) = (acceptor.clone(), up_tls.clone());
            tokio::spawn(async move {
                let mut req = [0u8; 8];
                if client.read_exact(&mut req).await.is_err() {
                    return;
                }
                if client.write_all(b"S").await.is_err() {
                    return;
                }
                let Ok(mut client) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut server) =
                    tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                else {
                    return;
                };
                if !projector::source::transport::request_tls(&mut server)
                    .await
                    .unwrap_or(false)
                {
                    return;
                }
                let Ok(mut server) = up_tls.handshake(server).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    port
}

struct Clusters {
    good: PgCluster,
    good_db: TestDb,
    expired_db: TestDb,
    future_db: TestDb,
    _expired: PgCluster,
    _future: PgCluster,
}

async fn clusters() -> Clusters {
    // initdb is CPU-bound and blocking: the three start side by side.
    let start = |server_cert| {
        tokio::spawn(PgCluster::start(PgOptions {
            server_cert,
            ..Default::default()
        }))
    };
    let (good, expired, future) = (
        start(ServerCert::Good),
        start(ServerCert::Expired),
        start(ServerCert::NotYetValid),
    );
    let (good, expired, future) = (
        good.await.unwrap(),
        expired.await.unwrap(),
        future.await.unwrap(),
    );
    for c in [&good, &expired, &future] {
        c.create_user("scram_u", "pw", Auth::Scram, "REPLICATION")
            .await;
        c.create_user("md5_u", "pw", Auth::Md5, "REPLICATION").await;
        c.create_user("tls_u", "pw", Auth::ScramTlsOnly, "REPLICATION")
            .await;
        c.create_user("cert_u", "pw", Auth::Cert, "REPLICATION")
            .await;
    }
    Clusters {
        good_db: good.fresh_db().await,
        expired_db: expired.fresh_db().await,
        future_db: future.fresh_db().await,
        good,
        _expired: expired,
        _future: future,
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn cases(c: &Clusters, mitm_port: u16) -> Vec<Case> {
    let pki = pg::certs();
    let ca = p(&pki.ca);
    let wrong = p(&pki.wrong_ca);
    let mut v = Vec::new();
    // sslmode × certificate, user scram_u (pg_hba: TLS or plain).
    let certs: [(&str, &TestDb, &str, Option<&str>); 5] = [
        ("right CA", &c.good_db, "localhost", Some(&ca)),
        ("no sslrootcert", &c.good_db, "localhost", None),
        ("unrelated CA", &c.good_db, "localhost", Some(&wrong)),
        ("wrong name (127.0.0.2)", &c.good_db, "127.0.0.2", Some(&ca)),
        ("expired", &c.expired_db, "localhost", Some(&ca)),
    ];
    for mode in [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ] {
        for (cert, db, host, root) in certs {
            let mut q = format!("sslmode={mode}");
            if let Some(r) = root {
                q.push_str(&format!("&sslrootcert={r}"));
            }
            // libpq-ssl: a root file makes allow/prefer/require verify the
            // chain (verify-ca); prefer then falls back to plain.
            let (expect, cause) = match (mode, cert) {
                ("disable" | "allow", _) => ("plain", ""),
                (_, "right CA") => ("TLS", ""),
                ("prefer" | "require", "no sslrootcert") => ("TLS", ""),
                (_, "no sslrootcert") => ("refused", "root certificate file"),
                ("prefer", "unrelated CA" | "expired") => ("plain", ""),
                (_, "unrelated CA") => ("refused", "unknown issuer"),
                ("verify-full", "wrong name (127.0.0.2)") => {
                    ("refused", "name mismatch: the server's certificate is for DNS:localhost, IP:127.0.0.1, not host \"127.0.0.2\"")
                }
                (_, "wrong name (127.0.0.2)") => ("TLS", ""),
                (_, "expired") => ("refused", "expired: the server's certificate was valid until 2020-01-02"),
                _ => unreachable!(),
            };
            v.push(Case {
                group: "sslmode × certificate",
                what: format!("sslmode={mode}, {cert}"),
                url: db.url_host(host, "scram_u", "pw", &q),
                expect,
                libpq15: true,
                cause,
            });
        }
    }
    let db = &c.good_db;
    let vf = format!("sslmode=verify-full&sslrootcert={ca}");
    let mut add = |group: &'static str,
                   what: &str,
                   url: String,
                   expect: &'static str,
                   libpq15: bool,
                   cause: &'static str| {
        v.push(Case {
            group,
            what: what.to_string(),
            url,
            expect,
            libpq15,
            cause,
        })
    };
    add(
        "certificate",
        "verify-full, not yet valid",
        c.future_db.url_host("localhost", "scram_u", "pw", &vf),
        "refused",
        true,
        "not yet valid: the server's certificate is valid from 2100-01-01",
    );
    // A TLS-only user: allow retries with TLS, prefer's plain fallback is refused.
    add(
        "TLS-only user (hostnossl reject)",
        "sslmode=allow",
        db.url_host("localhost", "tls_u", "pw", "sslmode=allow"),
        "TLS",
        true,
        "",
    );
    add(
        "TLS-only user (hostnossl reject)",
        "sslmode=prefer, unrelated CA",
        db.url_host(
            "localhost",
            "tls_u",
            "pw",
            &format!("sslmode=prefer&sslrootcert={wrong}"),
        ),
        "refused",
        true,
        "unknown issuer",
    );
    add(
        "TLS-only user (hostnossl reject)",
        "sslmode=disable",
        db.url_host("localhost", "tls_u", "pw", "sslmode=disable"),
        "refused",
        true,
        "pg_hba.conf rejects connection",
    );
    // Channel binding against a SCRAM and an md5 role.
    for (user, cb, mode, expect, cause) in [
        ("scram_u", "require", "require", "TLS", ""),
        ("scram_u", "require", "verify-full", "TLS", ""),
        ("scram_u", "prefer", "require", "TLS", ""),
        ("scram_u", "disable", "require", "TLS", ""),
        (
            "scram_u",
            "require",
            "disable",
            "refused",
            "channel binding is required, but SSL not in use",
        ),
        (
            "md5_u",
            "require",
            "require",
            "refused",
            "channel binding required but not supported by server's authentication request",
        ),
        (
            "md5_u",
            "require",
            "verify-full",
            "refused",
            "channel binding required but not supported by server's authentication request",
        ),
        ("md5_u", "prefer", "require", "TLS", ""),
        (
            "md5_u",
            "require",
            "disable",
            "refused",
            "channel binding required but not supported",
        ),
    ] {
        let root = if mode == "verify-full" {
            format!("&sslrootcert={ca}")
        } else {
            String::new()
        };
        add(
            if user == "md5_u" {
                "channel binding, md5 role"
            } else {
                "channel binding, SCRAM role"
            },
            &format!("channel_binding={cb}, sslmode={mode}"),
            db.url_host(
                "localhost",
                user,
                "pw",
                &format!("sslmode={mode}&channel_binding={cb}{root}"),
            ),
            expect,
            true,
            cause,
        );
    }
    // Through the man in the middle: only SCRAM-SHA-256-PLUS notices
    // (the server checks the binding against its own certificate).
    for (user, cb, expect, cause) in [
        ("scram_u", "disable", "TLS", ""),
        ("scram_u", "prefer", "refused", "channel binding"),
        ("scram_u", "require", "refused", "channel binding"),
        ("md5_u", "prefer", "TLS", ""),
    ] {
        let url = db
            .url_host(
                "localhost",
                user,
                "pw",
                &format!("sslmode=require&channel_binding={cb}"),
            )
            .replace(&format!(":{}/", db.port), &format!(":{mitm_port}/"));
        add(
            "channel binding through a TLS man in the middle",
            &format!("{user}, sslmode=require, channel_binding={cb}"),
            url,
            expect,
            true,
            cause,
        );
    }
    // Client certificates: pg_hba `hostssl ... clientcert=verify-full` (CN = user).
    let client = format!(
        "sslcert={}&sslkey={}",
        p(&pki.client_cert),
        p(&pki.client_key)
    );
    let wrong_client = format!(
        "sslcert={}&sslkey={}",
        p(&pki.wrong_client_cert),
        p(&pki.wrong_client_key)
    );
    add(
        "client certificate",
        "verify-full + sslcert/sslkey (CA the server trusts)",
        db.url_host("localhost", "cert_u", "pw", &format!("{vf}&{client}")),
        "TLS",
        true,
        "",
    );
    add(
        "client certificate",
        "verify-full, no sslcert",
        db.url_host("localhost", "cert_u", "pw", &vf),
        "refused",
        true,
        "certificate",
    );
    add(
        "client certificate",
        "verify-full + sslcert from an unrelated CA",
        db.url_host("localhost", "cert_u", "pw", &format!("{vf}&{wrong_client}")),
        "refused",
        true,
        "client certificate",
    );
    add(
        "client certificate",
        "sslcertmode=disable with sslcert (libpq 16)",
        db.url_host(
            "localhost",
            "cert_u",
            "pw",
            &format!("{vf}&{client}&sslcertmode=disable"),
        ),
        "refused",
        false,
        "certificate",
    );
    add(
        "client certificate",
        "sslcertmode=require, server asks (libpq 16)",
        db.url_host(
            "localhost",
            "cert_u",
            "pw",
            &format!("{vf}&{client}&sslcertmode=require"),
        ),
        "TLS",
        false,
        "",
    );
    // Protocol versions and SNI (rustls speaks TLS 1.2 and 1.3).
    for (q, expect, cause) in [
        ("ssl_min_protocol_version=TLSv1.3", "TLS", ""),
        ("ssl_max_protocol_version=TLSv1.2", "TLS", ""),
        (
            "ssl_min_protocol_version=TLSv1.3&ssl_max_protocol_version=TLSv1.2",
            "refused",
            "ssl_min_protocol_version is above ssl_max_protocol_version",
        ),
        ("sslsni=0", "TLS", ""),
    ] {
        add(
            "TLS options",
            &format!("verify-full, {q}"),
            db.url_host("localhost", "scram_u", "pw", &format!("{vf}&{q}")),
            expect,
            true,
            cause,
        );
    }
    // Revocation lists.
    add(
        "sslcrl",
        "verify-full + CRL revoking the server certificate",
        db.url_host(
            "localhost",
            "scram_u",
            "pw",
            &format!("{vf}&sslcrl={}", p(&pki.crl_revoked)),
        ),
        "refused",
        true,
        "revoked",
    );
    add(
        "sslcrl",
        "verify-full + CRL revoking nothing",
        db.url_host(
            "localhost",
            "scram_u",
            "pw",
            &format!("{vf}&sslcrl={}", p(&pki.crl_empty)),
        ),
        "TLS",
        true,
        "",
    );
    add(
        "sslcrl",
        "verify-full + sslcrldir holding the revoking CRL",
        {
            let dir = pki.dir.join("crldir");
            let _ = std::fs::create_dir_all(&dir);
            std::fs::copy(&pki.crl_revoked, dir.join("revoked.r0")).unwrap();
            db.url_host(
                "localhost",
                "scram_u",
                "pw",
                &format!("{vf}&sslcrldir={}", p(&dir)),
            )
        },
        "refused",
        true,
        "revoked",
    );
    // The system trust store does not hold the test CA. libpq 15 takes
    // "system" for a missing file name and, under its default prefer,
    // verifies nothing: these rows are libpq 16's.
    add(
        "sslrootcert=system (libpq 16)",
        "sslrootcert=system (sslmode defaults to verify-full)",
        db.url_host("localhost", "scram_u", "pw", "sslrootcert=system"),
        "refused",
        false,
        "unknown issuer",
    );
    add(
        "sslrootcert=system (libpq 16)",
        "sslrootcert=system&sslmode=require (libpq 16: weak sslmode)",
        db.url_host(
            "localhost",
            "scram_u",
            "pw",
            "sslrootcert=system&sslmode=require",
        ),
        "refused",
        false,
        "weak sslmode \"require\" may not be used with sslrootcert=system",
    );
    // require_auth (libpq 16).
    for (user, ra, expect, cause) in [
        ("scram_u", "scram-sha-256", "TLS", ""),
        (
            "md5_u",
            "scram-sha-256",
            "refused",
            "server requested a hashed password",
        ),
        ("md5_u", "md5", "TLS", ""),
        (
            "md5_u",
            "!md5",
            "refused",
            "server requested a hashed password",
        ),
        (
            "scram_u",
            "password,md5",
            "refused",
            "server requested SASL authentication",
        ),
    ] {
        add(
            "require_auth (libpq 16)",
            &format!("{user}, require_auth={ra}"),
            db.url_host(
                "localhost",
                user,
                "pw",
                &format!("sslmode=require&require_auth={ra}"),
            ),
            expect,
            false,
            cause,
        );
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_auth_matrix_matches_libpq() {
    let c = clusters().await;
    let mitm_port = mitm_proxy(c.good.port).await;
    let started = std::time::Instant::now();
    let mut table = vec![
        "| # | group | case | connection | libpq documented | libpq 15 (psql) | projector | projector's error |".to_string(),
        "|---|---|---|---|---|---|---|---|".to_string(),
    ];
    let mut failures = Vec::new();
    let mut n = 0;
    for case in cases(&c, mitm_port) {
        for conn in [Conn::Sql, Conn::Replication] {
            n += 1;
            let got = ours(&case.url, conn).await;
            let real = case.libpq15.then(|| libpq(&case.url, conn));
            let conn_name = match conn {
                Conn::Sql => "SQL",
                Conn::Replication => "replication",
            };
            let why = match &got {
                Outcome::Refused(e) => e.replace('|', "/"),
                _ => String::new(),
            };
            table.push(format!(
                "| {n} | {} | {} | {conn_name} | {} | {} | {} | {} |",
                case.group,
                case.what,
                case.expect,
                real.as_ref().map_or("n/a", |r| r.kind()),
                got.kind(),
                why
            ));
            if got.kind() != case.expect {
                failures.push(format!(
                    "#{n} {} ({conn_name}): projector {got:?}, expected {}",
                    case.what, case.expect
                ));
            }
            if let Some(r) = &real {
                if r.kind() != case.expect {
                    failures.push(format!(
                        "#{n} {} ({conn_name}): libpq {r:?}, documented {}",
                        case.what, case.expect
                    ));
                }
            }
            if let Outcome::Refused(e) = &got {
                if !e.contains(case.cause) {
                    failures.push(format!(
                        "#{n} {} ({conn_name}): error does not name the cause {:?}: {e}",
                        case.what, case.cause
                    ));
                }
                if e.contains(":pw@") || e.contains("password=pw") {
                    failures.push(format!("#{n}: the error shows the password: {e}"));
                }
            }
        }
    }
    println!("{}", table.join("\n"));
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-matrix.md");
    let _ = std::fs::write(&file, table.join("\n") + "\n");
    println!("(also in {})", file.display());
    println!(
        "{n} connections in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(c.good);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A server without TLS (`ssl = off`, it answers the SSLRequest with 'N'):
/// libpq's default `prefer`, and `allow`, go on in the clear on both
/// connections; `require` refuses with the fix. (The SQL connection used
/// to fail `prefer` with "error performing TLS handshake": tokio-postgres
/// hides the server's answer in the error's cause.)
#[tokio::test]
async fn prefer_and_allow_fall_back_to_plain_on_a_server_without_tls() {
    let cluster = PgCluster::start(PgOptions {
        ssl: false,
        ..PgOptions::default()
    })
    .await;
    let base = cluster.url("postgres");
    let base = base.split('?').next().unwrap_or(&base).to_string();
    for query in ["", "?sslmode=prefer", "?sslmode=allow"] {
        let url = projector::config::Secret::new(format!("{base}{query}"));
        let client = sql::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{query:?}: {e}"));
        let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
        projector::source::conn::connect_replication(&url)
            .await
            .unwrap_or_else(|e| panic!("replication {query:?}: {e}"));
    }
    let url = projector::config::Secret::new(format!("{base}?sslmode=require"));
    let e = sql::connect(&url).await.unwrap_err().to_string();
    assert!(
        e.contains("server does not support SSL") && e.contains("sslmode=require"),
        "{e}"
    );
}
