//! Throwaway PostgreSQL clusters for tests (`use crate::support::pg;`).
//!
//! Server binaries: `initdb` and `postgres` from `$PROJECTOR_PG_BIN` when
//! set (e.g. `PROJECTOR_PG_BIN=$(scripts/pg-versions.sh 17)`), else from
//! PATH (Debian's PostgreSQL 15 through scripts/env.sh). `pg::server_major()`
//! is the major version those binaries serve, for tests that need a
//! feature of a newer server.
//!
//! API:
//! - `pg::shared().await -> &'static PgCluster`: one cluster for the test
//!   binary (one initdb, ~1–2 s), TLS on, `wal_level=logical`, shared by all
//!   tests (slots are never dropped with their databases, so it allows many). Never restart or reconfigure it; use a private cluster for that.
//! - `PgCluster::start(PgOptions { .. }).await -> PgCluster`: a private cluster
//!   (own data dir and port); dropped = stopped and deleted.
//!   `PgOptions { wal_level, ssl, max_slot_wal_keep_size, extra_conf,
//!   server_cert }` (`ServerCert::Good|Expired|NotYetValid`).
//! - `cluster.fresh_db().await -> TestDb`: a new database created from a
//!   template that already has `sql/001_runtime_events.sql` applied
//!   (`runtime.events` + publication `projector_events`). Unique per call, so
//!   tests run in parallel without shared state.
//! - `TestDb { dbname, port, url, .. }`: `url` is a superuser URL
//!   (`postgres://postgres:PASSWORD@127.0.0.1:PORT/DB?sslmode=disable`,
//!   SCRAM with a random per-cluster password; the Unix socket is in the
//!   cluster's 0700 directory, so no other OS user gets in either way);
//!   `db.url_as(user, password, extra_query)` builds other URLs (host
//!   127.0.0.1); `db.url_host(host, user, password, query)` for TLS names;
//!   `db.client().await` (tokio-postgres, superuser); `db.exec(sql).await`
//!   (batch); `db.secret()` = `url` as `projector::config::Secret`.
//!   Replication slots are cluster-wide (not per database): give every test
//!   its own slot name, e.g. `db.slot_name()` (= `s_<dbname>`).
//! - Users: `cluster.create_user(name, password, Auth::Scram|Md5|Password,
//!   "REPLICATION").await` sets `password_encryption` to match, creates the
//!   LOGIN role and puts it in the group that pg_hba maps to that method
//!   (`md5_users` → md5, `password_users` → password, `tls_users` →
//!   scram-sha-256 over TLS only, `cert_users` → scram-sha-256 over TLS with
//!   a client certificate (`clientcert=verify-full`), others →
//!   scram-sha-256; the superuser `postgres` needs its password over TCP).
//!   The server listens on 127.0.0.1 and 127.0.0.2 (the latter is not on
//!   its certificate: a "wrong name").
//! - `pg::certs()`: the process-wide test PKI (CA, unrelated CA, client
//!   certificates, CRLs; see `Certs`). `cluster.ca_cert` (the CA that
//!   signed the server cert, SANs `localhost` and `127.0.0.1`),
//!   `cluster.wrong_ca_cert` (an unrelated CA).
//! - `cluster.restart()`, `cluster.stop()`, `cluster.start_again()` (sync),
//!   `cluster.exec(db, sql).await`, `cluster.client(db).await`, `cluster.log()`.
//!
//! The launcher itself (binaries, initdb as the `postgres` OS user, the
//! password file, free port, `PR_SET_PDEATHSIG` from a long-lived spawner
//! thread, readiness, stop/kill) is `projector::sandbox::postgres`, shared
//! with `demo` and the bench; this module adds the test PKI, users,
//! template database and pg_hba policy. Teardown: drop stops a private
//! cluster and removes its directory; an `atexit` hook does the same for
//! every cluster still running when the test binary exits (the shared one
//! is a static and is never dropped; also after panics).
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use projector::config::Secret;
use projector::sandbox::postgres::{self as sandbox, LocalPostgres, TlsFiles};

/// A server binary (`initdb`, `postgres`, `pg_recvlogical`): see
/// `projector::sandbox::postgres::pg_binary`.
pub fn pg_binary(name: &str) -> PathBuf {
    sandbox::pg_binary(name)
}

/// The major version of the server binaries the clusters run.
pub fn server_major() -> u32 {
    static MAJOR: OnceLock<u32> = OnceLock::new();
    *MAJOR.get_or_init(|| sandbox::server_major().unwrap_or_else(|e| panic!("{e:#}")))
}

#[derive(Clone, Debug)]
pub struct PgOptions {
    pub wal_level: &'static str,
    pub ssl: bool,
    pub max_slot_wal_keep_size: Option<String>,
    /// Extra postgresql.conf lines.
    pub extra_conf: Vec<String>,
    /// The certificate the server presents when `ssl`.
    pub server_cert: ServerCert,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            wal_level: "logical",
            ssl: true,
            max_slot_wal_keep_size: None,
            extra_conf: vec![],
            server_cert: ServerCert::Good,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    Scram,
    Md5,
    Password,
    /// SCRAM, TLS only (`hostnossl ... reject`).
    ScramTlsOnly,
    /// SCRAM plus a client certificate (`hostssl ... clientcert=verify-full`,
    /// CN = the user name; `certs().client_cert` is for `cert_u`).
    Cert,
}

pub struct PgCluster {
    pub port: u16,
    /// The superuser's password (random per cluster; TCP needs it).
    pub superuser_password: String,
    pub dir: PathBuf,
    pub data: PathBuf,
    pub ca_cert: Option<PathBuf>,
    pub wrong_ca_cert: Option<PathBuf>,
    server: LocalPostgres,
}

static SHARED: tokio::sync::OnceCell<PgCluster> = tokio::sync::OnceCell::const_new();
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// (pid, dir) of every running cluster, for the atexit hook.
static LIVE: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());
/// Other directories the atexit hook removes (the test PKI).
static LIVE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The per-binary shared cluster.
pub async fn shared() -> &'static PgCluster {
    SHARED
        .get_or_init(|| PgCluster::start(PgOptions::default()))
        .await
}

fn uniq() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

extern "C" fn cleanup_at_exit() {
    let live = match LIVE.lock() {
        Ok(l) => l.clone(),
        Err(p) => p.into_inner().clone(),
    };
    for (pid, _) in &live {
        unsafe { libc::kill(*pid as i32, libc::SIGQUIT) };
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    for (pid, dir) in &live {
        while Instant::now() < deadline && unsafe { libc::kill(*pid as i32, 0) } == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Ok(dirs) = LIVE_DIRS.lock() {
        for d in dirs.iter() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn register_atexit() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| unsafe {
        libc::atexit(cleanup_at_exit);
    });
}

/// Gives `p` to the `postgres` OS user (we are root) so the server can read it.
pub fn chown_pg(p: &Path) {
    sandbox::chown_to_server(p).unwrap_or_else(|e| panic!("{e:#}"));
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    run(
        Command::new("openssl").current_dir(dir).args(args),
        "openssl",
    );
}

/// Which certificate the server presents (all signed by `Certs::ca`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerCert {
    /// Valid now, SANs `localhost` and `127.0.0.1`.
    Good,
    /// Same names, valid 2020-01-01 to 2020-01-02.
    Expired,
    /// Same names, valid from 2100.
    NotYetValid,
}

/// Test PKI made once per test process with openssl:
/// - `ca` signs the server certificates and the client certificate;
///   `wrong_ca` is unrelated (its own key, same CN).
/// - `client_cert`/`client_key`: CN `cert_u` (the user of `Auth::Cert`),
///   signed by `ca`; `wrong_client_cert`/`wrong_client_key`: CN `cert_u`,
///   signed by `wrong_ca`.
/// - `crl_revoked`: `ca`'s CRL revoking the good server certificate;
///   `crl_empty`: `ca`'s CRL revoking nothing.
#[derive(Clone, Debug)]
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub wrong_ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub wrong_client_cert: PathBuf,
    pub wrong_client_key: PathBuf,
    pub crl_revoked: PathBuf,
    pub crl_empty: PathBuf,
}

impl Certs {
    fn server(&self, which: ServerCert) -> (PathBuf, PathBuf) {
        let name = match which {
            ServerCert::Good => "server",
            ServerCert::Expired => "server-expired",
            ServerCert::NotYetValid => "server-future",
        };
        (
            self.dir.join(format!("{name}.crt")),
            self.dir.join("server.key"),
        )
    }
}

const CA_CNF: &str = "[ca]\ndefault_ca = tca\n[tca]\ndatabase = index.txt\nnew_certs_dir = .\n\
serial = serial\ncrlnumber = crlnumber\ndefault_md = sha256\npolicy = any\ndefault_crl_days = 3\n\
unique_subject = no\n[any]\ncommonName = supplied\n";

/// The process-wide test PKI (see [`Certs`]).
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        register_atexit();
        let dir = std::env::temp_dir().join(format!("projector-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        LIVE_DIRS.lock().unwrap().push(dir.clone());
        make_certs(&dir)
    })
}

fn make_certs(dir: &Path) -> Certs {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (ca, cn) in [
        ("ca", "projector test CA"),
        ("wrong-ca", "unrelated test CA"),
    ] {
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        let (k, c, subj) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN={cn}"),
        );
        a.extend([
            "-keyout",
            &k,
            "-out",
            &c,
            "-days",
            "3",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &a);
    }
    std::fs::write(
        dir.join("server.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("client.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("ca.cnf"), CA_CNF).unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    std::fs::write(dir.join("crlnumber"), "1000\n").unwrap();
    let csr = |name: &str, cn: &str| {
        let mut a = vec!["req"];
        a.extend(ec);
        let (k, r, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("/CN={cn}"),
        );
        a.extend(["-keyout", &k, "-out", &r, "-subj", &subj]);
        openssl(dir, &a);
    };
    // `openssl ca` takes explicit validity dates (x509 -req only "days from now").
    let sign = |csr: &str, out: &str, ca: &str, ext: &str, dates: Option<(&str, &str)>| {
        let (cert, key) = (format!("{ca}.crt"), format!("{ca}.key"));
        let mut a = vec![
            "ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", &cert, "-keyfile", &key,
            "-in", csr, "-out", out, "-extfile", ext,
        ];
        match dates {
            Some((from, to)) => a.extend(["-startdate", from, "-enddate", to]),
            None => a.extend(["-days", "3"]),
        }
        openssl(dir, &a);
    };
    csr("server", "localhost");
    sign("server.csr", "server.crt", "ca", "server.cnf", None);
    sign(
        "server.csr",
        "server-expired.crt",
        "ca",
        "server.cnf",
        Some(("20200101000000Z", "20200102000000Z")),
    );
    sign(
        "server.csr",
        "server-future.crt",
        "ca",
        "server.cnf",
        Some(("21000101000000Z", "21000102000000Z")),
    );
    csr("client", "cert_u");
    sign("client.csr", "client.crt", "ca", "client.cnf", None);
    csr("wrong-client", "cert_u");
    sign(
        "wrong-client.csr",
        "wrong-client.crt",
        "wrong-ca",
        "client.cnf",
        None,
    );
    let gencrl = |out: &str| {
        openssl(
            dir,
            &[
                "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile", "ca.key",
                "-gencrl", "-out", out,
            ],
        )
    };
    gencrl("crl-empty.pem");
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.crt",
            "-keyfile",
            "ca.key",
            "-revoke",
            "server.crt",
        ],
    );
    gencrl("crl-revoked.pem");
    for k in ["server.key", "client.key", "wrong-client.key"] {
        std::fs::set_permissions(
            dir.join(k),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
    }
    Certs {
        dir: dir.to_path_buf(),
        ca: dir.join("ca.crt"),
        wrong_ca: dir.join("wrong-ca.crt"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        wrong_client_cert: dir.join("wrong-client.crt"),
        wrong_client_key: dir.join("wrong-client.key"),
        crl_revoked: dir.join("crl-revoked.pem"),
        crl_empty: dir.join("crl-empty.pem"),
    }
}

/// The policy `create_user`'s groups rely on (see the module doc).
const HBA: &str = "local all all trust\n\
     host all postgres 127.0.0.0/8 scram-sha-256\n\
     host replication postgres 127.0.0.0/8 scram-sha-256\n\
     hostssl all +cert_users 127.0.0.0/8 scram-sha-256 clientcert=verify-full\n\
     host all +cert_users 127.0.0.0/8 reject\n\
     hostnossl all +tls_users 127.0.0.0/8 reject\n\
     host all +md5_users 127.0.0.0/8 md5\n\
     host all +password_users 127.0.0.0/8 password\n\
     host all all 127.0.0.0/8 scram-sha-256\n";

impl PgCluster {
    pub async fn start(opts: PgOptions) -> PgCluster {
        register_atexit();
        let (tls, ca_cert, wrong_ca_cert) = if opts.ssl {
            let pki = certs();
            let (cert, key) = pki.server(opts.server_cert);
            let tls = TlsFiles {
                cert,
                key,
                ca: Some(pki.ca.clone()),
            };
            (Some(tls), Some(pki.ca.clone()), Some(pki.wrong_ca.clone()))
        } else {
            (None, None, None)
        };
        let mut conf: Vec<String> = [
            "max_wal_senders = 64",
            "max_replication_slots = 256",
            "wal_sender_timeout = '60s'",
            "full_page_writes = off",
            "max_connections = 400",
            "logical_decoding_work_mem = '64kB'",
            "log_min_messages = warning",
        ]
        .map(String::from)
        .to_vec();
        if let Some(s) = &opts.max_slot_wal_keep_size {
            conf.push(format!("max_slot_wal_keep_size = '{s}'"));
        }
        conf.extend(opts.extra_conf.iter().cloned());
        let server = LocalPostgres::init(&sandbox::PgOptions {
            listen_addresses: vec!["127.0.0.1".into(), "127.0.0.2".into()],
            wal_level: opts.wal_level.into(),
            conf,
            hba: Some(HBA.into()),
            tls,
        })
        .unwrap_or_else(|e| panic!("test cluster: {e:#}"));
        let cluster = PgCluster::wrap(server, ca_cert, wrong_ca_cert);
        cluster.start_again();
        cluster
            .exec(
                "postgres",
                "create role md5_users nologin; create role password_users nologin; \
                 create role tls_users nologin; create role cert_users nologin;",
            )
            .await;
        cluster
            .exec("postgres", "create database projector_template")
            .await;
        let schema = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sql/001_runtime_events.sql"
        ))
        .unwrap();
        cluster.exec("projector_template", &schema).await;
        cluster
    }

    fn wrap(
        server: LocalPostgres,
        ca_cert: Option<PathBuf>,
        wrong_ca_cert: Option<PathBuf>,
    ) -> PgCluster {
        PgCluster {
            port: server.port,
            superuser_password: server.password().expose().to_string(),
            dir: server.dir.clone(),
            data: server.data.clone(),
            ca_cert,
            wrong_ca_cert,
            server,
        }
    }

    /// A cluster around a data directory made elsewhere (a standby copied
    /// from a primary, see `pg_standby`): started, and dropped like any
    /// other. `dir` holds `data`, the log and the socket.
    pub fn adopt(dir: PathBuf, data: PathBuf, port: u16, superuser_password: String) -> PgCluster {
        register_atexit();
        let server = LocalPostgres::adopt(dir, data, port, Secret::new(superuser_password));
        let cluster = PgCluster::wrap(server, None, None);
        cluster.start_again();
        cluster
    }

    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Starts (again) the postmaster and waits until it accepts connections.
    pub fn start_again(&self) {
        self.server
            .start_server()
            .unwrap_or_else(|e| panic!("{e:#}"));
        if let Some(pid) = self.server.pid() {
            LIVE.lock().unwrap().push((pid, self.dir.clone()));
        }
    }

    fn forget_pid(&self) -> Option<u32> {
        let pid = self.server.pid();
        if let Some(pid) = pid {
            LIVE.lock().unwrap().retain(|(p, _)| *p != pid);
        }
        pid
    }

    /// Fast shutdown (SIGINT) and wait.
    pub fn stop(&self) {
        self.forget_pid();
        self.server.stop();
    }

    /// Kills the postmaster at once (SIGKILL), like a crash; returns once
    /// its orphaned backends have exited too.
    pub fn kill(&self) {
        self.forget_pid();
        self.server.kill().unwrap_or_else(|e| panic!("{e:#}"));
    }

    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}?sslmode=disable",
            self.superuser_password, self.port
        )
    }

    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to test cluster db {db}: {e}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    pub async fn exec(&self, db: &str, sql: &str) {
        self.client(db)
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("SQL failed: {e:?}\n{sql}"));
    }

    /// Creates a LOGIN role authenticated by `auth` (see module doc);
    /// `attrs` e.g. "REPLICATION" or "".
    pub async fn create_user(&self, name: &str, password: &str, auth: Auth, attrs: &str) {
        let enc = if auth == Auth::Md5 {
            "md5"
        } else {
            "scram-sha-256"
        };
        let group = match auth {
            Auth::Md5 => "grant md5_users to",
            Auth::Password => "grant password_users to",
            Auth::ScramTlsOnly => "grant tls_users to",
            Auth::Cert => "grant cert_users to",
            Auth::Scram => "",
        };
        let grant = if group.is_empty() {
            String::new()
        } else {
            format!("{group} \"{name}\";")
        };
        self.exec(
            "postgres",
            &format!(
                "set password_encryption = '{enc}'; create role \"{name}\" login {attrs} password '{}'; {grant}",
                password.replace('\'', "''")
            ),
        )
        .await;
    }

    pub async fn fresh_db(&self) -> TestDb {
        let dbname = format!("t_{}_{}", std::process::id(), uniq());
        self.exec(
            "postgres",
            &format!("create database {dbname} template projector_template"),
        )
        .await;
        TestDb {
            url: self.url(&dbname),
            dbname,
            port: self.port,
            ca_cert: self.ca_cert.clone(),
            wrong_ca_cert: self.wrong_ca_cert.clone(),
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // `server`'s own drop then stops it and removes `dir`.
        self.forget_pid();
    }
}

pub struct TestDb {
    pub dbname: String,
    pub port: u16,
    /// Superuser URL (with the cluster's random password), no TLS.
    pub url: String,
    pub ca_cert: Option<PathBuf>,
    pub wrong_ca_cert: Option<PathBuf>,
}

impl TestDb {
    pub fn secret(&self) -> projector::config::Secret {
        projector::config::Secret::new(self.url.clone())
    }

    /// A replication slot name unique to this database (slots are cluster-wide).
    pub fn slot_name(&self) -> String {
        format!("s_{}", self.dbname)
    }

    /// URL for another user on host 127.0.0.1; `query` without the `?`.
    pub fn url_as(&self, user: &str, password: &str, query: &str) -> String {
        self.url_host("127.0.0.1", user, password, query)
    }

    pub fn url_host(&self, host: &str, user: &str, password: &str, query: &str) -> String {
        let auth = if password.is_empty() {
            user.to_string()
        } else {
            format!("{user}:{password}")
        };
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("postgres://{auth}@{host}:{}/{}{q}", self.port, self.dbname)
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.dbname));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    pub async fn exec(&self, sql: &str) {
        self.client()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("SQL failed: {e:?}\n{sql}"));
    }
}

/// Reads everything from a reader (helper for child output).
pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}
