//! SCRAM, md5 and cleartext users connect (replication and SQL); TLS with a
//! CA made for the test: verify-full passes (DNS name and IP), a wrong CA and
//! a wrong password fail with one clear line.
use crate::support::pg;

use pg::Auth;
use projector::config::Secret;
use projector::source::conn::PgConn;
use projector::source::conninfo::ConnInfo;
use projector::source::{sql, stream, SourceError};

async fn repl(url: &str) -> Result<PgConn, SourceError> {
    PgConn::connect(&ConnInfo::parse(url)?, true).await
}

#[tokio::test]
async fn password_methods_connect_and_wrong_password_is_clear() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    cluster
        .create_user("scram_u", "s3cr%t'", Auth::Scram, "REPLICATION")
        .await;
    cluster
        .create_user("md5_u", "m d5", Auth::Md5, "REPLICATION")
        .await;
    cluster
        .create_user("clear_u", "plain", Auth::Password, "REPLICATION")
        .await;
    for (user, pw) in [
        ("scram_u", "s3cr%25t'"),
        ("md5_u", "m%20d5"),
        ("clear_u", "plain"),
    ] {
        let url = db.url_as(user, pw, "sslmode=disable");
        let mut c = repl(&url).await.unwrap_or_else(|e| panic!("{user}: {e}"));
        let sys = stream::identify_system(&mut c).await.unwrap();
        assert_eq!(sys.dbname.as_deref(), Some(db.dbname.as_str()));
        c.close().await;
        let client = sql::connect(&Secret::new(url)).await.unwrap();
        let who: String = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user);
    }
    let e = repl(&db.url_as("scram_u", "wrong", "sslmode=disable"))
        .await
        .unwrap_err();
    assert!(matches!(e, SourceError::AuthFailed { .. }), "{e:?}");
    let line = e.to_string();
    assert!(
        line.contains("authentication failed for user \"scram_u\"")
            && line.contains("check the user and password"),
        "{line}"
    );
    assert!(!line.contains("wrong"), "no password in errors: {line}");
    assert!(!e.is_transient());
    let e = sql::connect(&Secret::new(db.url_as("md5_u", "wrong", "sslmode=disable")))
        .await
        .unwrap_err();
    assert!(matches!(e, SourceError::AuthFailed { .. }), "{e:?}");
    // No REPLICATION attribute: one line naming the fix.
    cluster.create_user("norepl_u", "x", Auth::Scram, "").await;
    let mut c = repl(&db.url_as("norepl_u", "x", "sslmode=disable")).await;
    if let Ok(conn) = c.as_mut() {
        // PG checks the attribute at connection time; never reached on 15.
        let _ = stream::identify_system(conn).await;
    }
    let e = c.unwrap_err();
    assert!(
        e.to_string()
            .contains("ALTER ROLE norepl_u WITH REPLICATION"),
        "{e}"
    );
}

#[tokio::test]
async fn tls_verify_full_passes_and_wrong_ca_fails() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    cluster
        .create_user("tls_u", "pw", Auth::Scram, "REPLICATION")
        .await;
    let ca = db.ca_cert.clone().unwrap();
    let wrong = db.wrong_ca_cert.clone().unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let url = db.url_host(
            host,
            "tls_u",
            "pw",
            &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        );
        let mut c = repl(&url).await.unwrap_or_else(|e| panic!("{host}: {e}"));
        assert!(c.tls);
        stream::identify_system(&mut c).await.unwrap();
        c.close().await;
        let client = sql::connect(&Secret::new(url)).await.unwrap();
        let ssl: bool = client
            .query_one(
                "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl);
    }
    for mode in ["require", "prefer"] {
        let c = repl(&db.url_as("tls_u", "pw", &format!("sslmode={mode}")))
            .await
            .unwrap();
        assert!(c.tls, "{mode} negotiates TLS");
    }
    let c = repl(&db.url_as("tls_u", "pw", "sslmode=disable"))
        .await
        .unwrap();
    assert!(!c.tls);

    let bad = db.url_host(
        "localhost",
        "tls_u",
        "pw",
        &format!("sslmode=verify-full&sslrootcert={}", wrong.display()),
    );
    let e = repl(&bad).await.unwrap_err();
    assert!(matches!(e, SourceError::Tls { .. }), "{e:?}");
    let line = e.to_string();
    assert!(
        line.contains("certificate verify failed: unknown issuer")
            && line.contains("set sslrootcert"),
        "{line}"
    );
    assert!(!line.contains('\n'));
    let e = sql::connect(&Secret::new(bad)).await.unwrap_err();
    assert!(!e.to_string().contains("pw@"), "{e}");
    // verify-ca accepts a certificate whose names do not match the host.
    let url = db.url_host(
        "127.0.0.1",
        "tls_u",
        "pw",
        &format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
    );
    assert!(repl(&url).await.unwrap().tls);
    let e = repl(&db.url_host(
        "localhost",
        "tls_u",
        "pw",
        "sslmode=verify-full&sslrootcert=/nonexistent.pem",
    ))
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("root certificate file \"/nonexistent.pem\" does not exist"),
        "{e}"
    );
}

/// sql/role.sql takes the password from PROJECTOR_DB_PASSWORD (not a
/// process argument) and has no default: without one it fails.
#[tokio::test]
async fn role_script_takes_its_password_from_the_environment() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let role_sql = concat!(env!("CARGO_MANIFEST_DIR"), "/sql/role.sql");
    let psql = |password: Option<&str>| {
        let mut cmd = std::process::Command::new("psql");
        cmd.arg(&db.url)
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-f", role_sql])
            .env_remove("PROJECTOR_DB_PASSWORD");
        if let Some(p) = password {
            cmd.env("PROJECTOR_DB_PASSWORD", p);
        }
        cmd.output().unwrap()
    };
    let out = psql(None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("role.sql needs a password"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = psql(Some("env pw'quote"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = db.url_as("projector", "env%20pw'quote", "sslmode=disable");
    let client = sql::connect(&Secret::new(url)).await.unwrap();
    let who: String = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "projector");
}

/// The test clusters let nobody in for free: the superuser needs its
/// password over TCP, and the socket directory is closed to other users.
#[tokio::test]
async fn test_clusters_need_the_superuser_password() {
    use std::os::unix::fs::PermissionsExt;
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let e = sql::connect(&Secret::new(db.url_as("postgres", "", "sslmode=disable")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("has none"), "{e}");
    let e = sql::connect(&Secret::new(db.url_as(
        "postgres",
        "guess",
        "sslmode=disable",
    )))
    .await
    .unwrap_err();
    assert!(matches!(e, SourceError::AuthFailed { .. }), "{e:?}");
    let mode = std::fs::metadata(&cluster.dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "socket directory mode {mode:o}");
    // The right password works.
    sql::connect(&db.secret()).await.unwrap();
}

/// libpq's `requirepeer` on a Unix socket: the server process's OS user.
#[tokio::test]
async fn requirepeer_checks_the_server_process_user() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let url = |peer: &str| {
        format!(
            "postgres://postgres@/{}?host={}&port={}&requirepeer={peer}",
            db.dbname,
            cluster.dir.display(),
            cluster.port
        )
    };
    sql::connect(&Secret::new(url("postgres"))).await.unwrap();
    repl(&url("postgres")).await.unwrap().close().await;
    for e in [
        sql::connect(&Secret::new(url("root"))).await.unwrap_err(),
        repl(&url("root")).await.unwrap_err(),
    ] {
        assert!(
            e.to_string().contains(
                "requirepeer specifies \"root\", but actual peer user name is \"postgres\""
            ),
            "{e}"
        );
    }
}

/// Client key and certificate files: libpq's permission rule, and files
/// named explicitly must exist (libpq would silently send no certificate).
#[tokio::test]
async fn client_key_files_are_checked_before_connecting() {
    use std::os::unix::fs::PermissionsExt;
    let pki = pg::certs();
    let dir = tempfile::tempdir().unwrap();
    let loose = dir.path().join("client.key");
    std::fs::copy(&pki.client_key, &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = |cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "postgres://u@localhost:1/db?sslmode=require&sslcert={}&sslkey={}",
            cert.display(),
            key.display()
        )
    };
    let e =
        projector::source::tls::setup(&ConnInfo::parse(&url(&pki.client_cert, &loose)).unwrap())
            .unwrap_err();
    assert!(e.to_string().contains("has group or world access"), "{e}");
    let missing = dir.path().join("nope.crt");
    let e =
        projector::source::tls::setup(&ConnInfo::parse(&url(&missing, &pki.client_key)).unwrap())
            .unwrap_err();
    assert!(e.to_string().contains("sslcert file"), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    // A key that belongs to another certificate.
    let e = projector::source::tls::setup(
        &ConnInfo::parse(&url(&pki.client_cert, &pki.wrong_client_key)).unwrap(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not belong to sslcert"), "{e}");
    // Unknown and unsupported parameters are refused, never dropped.
    for (q, says) in [
        ("sslpassword=x", "encrypted client keys are not supported"),
        ("gssencmode=require", "GSSAPI encryption is not supported"),
        ("sslmode=require&bogus=1", "invalid URI query parameter"),
    ] {
        let e = ConnInfo::parse(&format!("postgres://u@h/db?{q}")).unwrap_err();
        assert!(e.to_string().contains(says), "{q}: {e}");
        assert!(!e.to_string().contains("sslpassword=\"x\""), "{e}");
    }
}
