//! A throwaway PostgreSQL cluster, the one launcher behind `demo`, the
//! hidden `sandbox` subcommand (bench/bench.py) and the integration tests'
//! `tests/support/pg.rs`:
//!
//! - binaries from `$PROJECTOR_PG_BIN` when set, else PATH, else the newest
//!   Debian install ([`pg_binary`]);
//! - `initdb` into a fresh 0700 temp dir, as the `postgres` OS user when we
//!   are root (initdb refuses root; the user is looked up with `id`);
//! - the superuser's password is random per cluster and reaches initdb in a
//!   0600 file that is removed at once, never on a command line;
//! - a free port, `wal_level=logical` by default, postgresql.conf lines,
//!   pg_hba.conf and TLS files from [`PgOptions`];
//! - the postmaster is spawned by one long-lived thread with
//!   `PR_SET_PDEATHSIG`, so it dies with us even on SIGKILL;
//! - readiness is the server's own "ready to accept" log line (a primary or
//!   a hot standby), not a guessed delay;
//! - drop stops the server and removes the directory.
//!
//! Nobody else on the host gets in: with the default pg_hba TCP needs the
//! superuser's password (SCRAM), and the Unix socket lives in the cluster's
//! 0700 directory, which only its owner and root can enter.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::Secret;

/// How long the postmaster may take to log "ready to accept".
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Server certificate and key (and optionally the CA that client
/// certificates must chain to), copied into the data directory.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

/// How to make the cluster. `Default` is what `demo` runs.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// `listen_addresses`; [`LocalPostgres::url`] uses the first.
    pub listen_addresses: Vec<String>,
    pub wal_level: String,
    /// postgresql.conf lines written after the defaults (the last setting
    /// of a name wins, so these override them).
    pub conf: Vec<String>,
    /// The whole pg_hba.conf; `None` keeps initdb's (local trust, host
    /// scram-sha-256).
    pub hba: Option<String>,
    pub tls: Option<TlsFiles>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            listen_addresses: vec!["127.0.0.1".into()],
            wal_level: "logical".into(),
            conf: vec![],
            hba: None,
            tls: None,
        }
    }
}

pub struct LocalPostgres {
    /// Holds `data`, the socket and `postgres.log`.
    pub dir: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    /// The host of [`LocalPostgres::url`].
    pub(crate) host: String,
    /// The superuser's password (TCP connections).
    password: Secret,
    child: Mutex<Option<Child>>,
}

pub(crate) struct LocalDb {
    pub(crate) url: Secret,
}

/// uid/gid of the `postgres` OS user when we run as root, else `None`.
/// Looked up once, before any fork: the child may not call getpwnam.
pub(crate) fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
    static IDS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    if let Some(ids) = IDS.get() {
        return Ok(*ids);
    }
    // SAFETY: geteuid has no preconditions.
    let ids = if unsafe { libc::geteuid() } != 0 {
        None
    } else {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        match (id("-u"), id("-g")) {
            (Some(u), Some(g)) => Some((u, g)),
            _ => anyhow::bail!(
                "running as root, but there is no `postgres` OS user to run initdb as \
                 (apt-get install postgresql creates it)"
            ),
        }
    };
    Ok(*IDS.get_or_init(|| ids))
}

/// Gives `path` to the server's OS user (a no-op unless we are root).
pub fn chown_to_server(path: &Path) -> anyhow::Result<()> {
    if let Some((uid, gid)) = server_user()? {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

fn as_server_user(cmd: &mut Command) -> anyhow::Result<()> {
    if let Some((uid, gid)) = server_user()? {
        // std also drops root's supplementary groups (setgroups) here.
        cmd.uid(uid).gid(gid);
    }
    Ok(())
}

/// A server binary (`initdb`, `postgres`, `pg_recvlogical`, ...): from
/// `$PROJECTOR_PG_BIN` (a bin directory, e.g. `scripts/pg-versions.sh 17`'s),
/// else PATH, else the newest Debian install.
pub fn pg_binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("PROJECTOR_PG_BIN").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join(name);
    }
    if let Ok(path) = std::env::var("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join(name).is_file() {
                return d.join(name);
            }
        }
    }
    // Debian keeps server binaries off PATH.
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| PathBuf::from(name))
}

/// The major version [`pg_binary`]`("postgres")` serves (`postgres
/// --version`: "postgres (PostgreSQL) 17.10").
pub fn server_major() -> anyhow::Result<u32> {
    let bin = pg_binary("postgres");
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .with_context(|| format!("{} --version", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.rsplit(' ')
        .next()
        .and_then(|v| v.trim().split('.').next())
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot read the major version from {text:?}"))
}

pub fn free_port() -> std::io::Result<u16> {
    crate::sandbox::convex::free_port()
}

type SpawnReq = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from one thread that never exits. PR_SET_PDEATHSIG fires
/// when the spawning *thread* ends, not the process, so a postmaster
/// spawned from a short-lived (e.g. tokio blocking) thread would die early.
fn spawn_long_lived(cmd: Command) -> anyhow::Result<Child> {
    static TX: OnceLock<Mutex<mpsc::Sender<SpawnReq>>> = OnceLock::new();
    let tx = match TX.get() {
        Some(tx) => tx,
        None => {
            let (tx, rx) = mpsc::channel::<SpawnReq>();
            std::thread::Builder::new()
                .name("pg-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                    // The sender lives in a static: unreachable, but the
                    // thread must outlive its children either way.
                    loop {
                        std::thread::park();
                    }
                })
                .context("spawn the pg-spawner thread")?;
            TX.get_or_init(|| Mutex::new(tx))
        }
    };
    let (rtx, rrx) = mpsc::channel();
    tx.lock()
        .map_err(|_| anyhow::anyhow!("pg-spawner lock poisoned"))?
        .send((cmd, rtx))
        .map_err(|_| anyhow::anyhow!("pg-spawner thread is gone"))?;
    Ok(rrx
        .recv()
        .map_err(|_| anyhow::anyhow!("pg-spawner thread is gone"))??)
}

/// Pids whose parent is `pid` (the postmaster's backends).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // "pid (comm) state ppid ...": comm may hold spaces.
                    let rest = s.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie still answers kill(0); its /proc state is 'Z'.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalPostgres {
    /// `demo`'s cluster: [`PgOptions::default`], started.
    pub(crate) async fn start() -> anyhow::Result<LocalPostgres> {
        tokio::task::spawn_blocking(|| {
            let pg = LocalPostgres::init(&PgOptions::default())?;
            pg.start_server()?;
            Ok(pg)
        })
        .await?
    }

    /// initdb and configuration; the server is not started yet
    /// ([`LocalPostgres::start_server`]). Blocking.
    pub fn init(opts: &PgOptions) -> anyhow::Result<LocalPostgres> {
        let dir = std::env::temp_dir().join(format!(
            "projector-pg-{}-{}-{:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        // From here on drop removes the directory, whatever fails.
        let mut me = LocalPostgres {
            data: dir.join("data"),
            dir,
            port: 0,
            host: opts
                .listen_addresses
                .first()
                .cloned()
                .unwrap_or_else(|| "127.0.0.1".into()),
            password: Secret::new(format!("{:032x}", rand::random::<u128>())),
            child: Mutex::new(None),
        };
        // The socket lives here: 0700 keeps every other OS user out.
        std::fs::set_permissions(&me.dir, PermissionsExt::from_mode(0o700))?;
        chown_to_server(&me.dir)?;
        me.initdb()?;
        me.port = free_port()?;
        me.configure(opts)?;
        Ok(me)
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let pwfile = self.dir.join("pwfile");
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&pwfile)?;
            writeln!(f, "{}", self.password.expose())?;
        }
        chown_to_server(&pwfile)?;
        let mut initdb = Command::new(pg_binary("initdb"));
        initdb
            .current_dir(&self.dir)
            .arg("-D")
            .arg(&self.data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_server_user(&mut initdb)?;
        let out = initdb.output();
        let _ = std::fs::remove_file(&pwfile);
        let out = out.map_err(|e| {
            anyhow::anyhow!(
                "cannot run {} ({e}); install PostgreSQL: apt-get install -y postgresql",
                pg_binary("initdb").display()
            )
        })?;
        if !out.status.success() {
            anyhow::bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    fn configure(&self, opts: &PgOptions) -> anyhow::Result<()> {
        let mut conf = format!(
            "\n# projector sandbox\nlisten_addresses = '{}'\nport = {}\n\
             unix_socket_directories = '{}'\nwal_level = {}\n\
             max_wal_senders = 20\nmax_replication_slots = 20\nwal_sender_timeout = '10s'\n\
             fsync = off\nsynchronous_commit = off\n",
            opts.listen_addresses.join(","),
            self.port,
            self.dir.display(),
            opts.wal_level
        );
        if let Some(tls) = &opts.tls {
            let mut files = vec![(&tls.cert, "server.crt"), (&tls.key, "server.key")];
            if let Some(ca) = &tls.ca {
                files.push((ca, "ca.crt"));
            }
            for (from, to) in files {
                let to = self.data.join(to);
                std::fs::copy(from, &to)
                    .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
                chown_to_server(&to)?;
            }
            // The server refuses a key others can read.
            std::fs::set_permissions(
                self.data.join("server.key"),
                PermissionsExt::from_mode(0o600),
            )?;
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            if tls.ca.is_some() {
                conf.push_str("ssl_ca_file = 'ca.crt'\n");
            }
        }
        for l in &opts.conf {
            conf.push_str(l);
            conf.push('\n');
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))?
            .write_all(conf.as_bytes())?;
        if let Some(hba) = &opts.hba {
            std::fs::write(self.data.join("pg_hba.conf"), hba)?;
        }
        Ok(())
    }

    /// A cluster around a data directory made elsewhere (e.g. a standby
    /// copied from a primary): `dir` holds `data`, the log and the socket,
    /// and is removed on drop. Not started.
    pub fn adopt(dir: PathBuf, data: PathBuf, port: u16, password: Secret) -> LocalPostgres {
        LocalPostgres {
            dir,
            data,
            port,
            host: "127.0.0.1".into(),
            password,
            child: Mutex::new(None),
        }
    }

    pub fn password(&self) -> &Secret {
        &self.password
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The server's log so far (empty if there is none yet).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.lock_child().as_ref().map(|c| c.id())
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        // A panic elsewhere while holding the lock leaves the Option intact.
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the postmaster and waits for its "ready to accept" log line
    /// (a hot standby logs "ready to accept read-only connections").
    /// Blocking.
    pub fn start_server(&self) -> anyhow::Result<()> {
        let mut guard = self.lock_child();
        anyhow::ensure!(guard.is_none(), "the cluster is already running");
        let log_start = self.log().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        chown_to_server(&self.log_path())?;
        let mut cmd = Command::new(pg_binary("postgres"));
        cmd.current_dir(&self.dir)
            .arg("-D")
            .arg(&self.data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        as_server_user(&mut cmd)?;
        // SAFETY: prctl is async-signal-safe. std runs this after its
        // setuid, which matters: a credential change clears the setting.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = spawn_long_lived(cmd).context("spawn postgres")?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = self.log();
            if log
                .get(log_start..)
                .unwrap_or("")
                .contains("ready to accept")
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                anyhow::bail!(
                    "postgres exited ({status}) during startup; {}:\n{}",
                    self.log_path().display(),
                    log.get(log_start..).unwrap_or("")
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "postgres did not log \"ready to accept\" within {START_TIMEOUT:?}; {}:\n{}",
                    self.log_path().display(),
                    log.get(log_start..).unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        *guard = Some(child);
        Ok(())
    }

    /// Fast shutdown (SIGINT) and wait. A no-op when not running.
    pub fn stop(&self) {
        if let Some(mut child) = self.lock_child().take() {
            // SAFETY: plain syscall on a pid we spawned and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }

    /// Kills the postmaster at once (SIGKILL), like a crash, and waits
    /// until its orphaned backends have noticed and exited: until then a
    /// new postmaster on this data directory refuses to start
    /// ("pre-existing shared memory block is still in use").
    pub fn kill(&self) -> anyhow::Result<()> {
        let Some(mut child) = self.lock_child().take() else {
            return Ok(());
        };
        let backends = children_of(child.id());
        let _ = child.kill();
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(30);
        while backends.iter().any(|&p| alive(p)) {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "backends {backends:?} of the killed postmaster still run after 30 s"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The superuser's URL for `db` over TCP (no TLS).
    pub(crate) fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@{}:{}/{db}?sslmode=disable",
            self.password.expose(),
            self.host,
            self.port
        )
    }

    /// The superuser's URL for `db` through the Unix socket in `dir`.
    pub(crate) fn socket_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@/{db}?host={}&port={}",
            self.dir.display(),
            self.port
        )
    }

    /// Creates a database with `sql/001_runtime_events.sql` applied.
    pub(crate) async fn create_database(&self, name: &str) -> anyhow::Result<LocalDb> {
        let (admin, conn) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let (db, conn) = tokio_postgres::connect(&self.url(name), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        db.batch_execute(SCHEMA).await?;
        Ok(LocalDb {
            url: Secret::new(self.url(name)),
        })
    }
}

/// The schema every database of ours starts from.
pub(crate) const SCHEMA: &str = include_str!("../../sql/001_runtime_events.sql");

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
