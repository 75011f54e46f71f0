//! A throwaway PostgreSQL cluster for `demo`: `initdb` into a temp dir (as
//! the `postgres` OS user when we are root, since initdb refuses root), a
//! free port on 127.0.0.1, `wal_level=logical`. The binaries come from
//! `$PROJECTOR_PG_BIN` when set (see `find_binary`). The server is started with
//! `PR_SET_PDEATHSIG`, so it dies with us even on SIGKILL; drop stops it
//! and removes the directory.
//!
//! Nobody else on the host gets in: TCP needs the superuser's password
//! (SCRAM; random per cluster, handed to initdb in a 0600 file that is
//! removed at once, never on a command line), and the Unix socket lives in
//! the cluster's 0700 directory, which only its owner and root can enter.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Secret;

pub struct LocalPostgres {
    dir: PathBuf,
    pub port: u16,
    child: Child,
    /// The superuser's password (TCP connections).
    password: Secret,
}

pub struct LocalDb {
    pub url: Secret,
}

/// uid/gid of the `postgres` OS user, when we run as root.
fn postgres_user() -> anyhow::Result<Option<(u32, u32)>> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Ok(None);
    }
    let out = Command::new("id").args(["-u", "postgres"]).output()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse::<u32>();
    let out = Command::new("id").args(["-g", "postgres"]).output()?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse::<u32>();
    match (uid, gid) {
        (Ok(u), Ok(g)) => Ok(Some((u, g))),
        _ => anyhow::bail!("running as root, but there is no `postgres` OS user to run initdb as (apt-get install postgresql creates it)"),
    }
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

/// A server binary: from `$PROJECTOR_PG_BIN` (a bin directory, e.g.
/// `scripts/pg-versions.sh 17`'s), else PATH, else the newest Debian
/// install.
fn find_binary(name: &str) -> PathBuf {
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
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| PathBuf::from(name))
}

impl LocalPostgres {
    pub async fn start() -> anyhow::Result<LocalPostgres> {
        let user = postgres_user()?;
        let dir = std::env::temp_dir().join(format!(
            "projector-pg-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let password = Secret::new(format!("{:032x}", rand::random::<u128>()));
        let pwfile = dir.join("pwfile");
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&pwfile)?;
            writeln!(f, "{}", password.expose())?;
        }
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let data = dir.join("data");
        let mut initdb = Command::new(find_binary("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-U",
                "postgres",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut initdb, user);
        let out = initdb.output();
        let _ = std::fs::remove_file(&pwfile);
        let out = out.map_err(|e| {
            anyhow::anyhow!(
                "cannot run initdb ({e}); install PostgreSQL: apt-get install -y postgresql"
            )
        })?;
        if !out.status.success() {
            anyhow::bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = crate::sandbox::convex::free_port()?;
        let mut pg = Command::new(find_binary("postgres"));
        pg.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "wal_level=logical",
                "-c",
                "max_wal_senders=20",
                "-c",
                "max_replication_slots=20",
                "-c",
                "wal_sender_timeout=10s",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                dir.join("postgres.log"),
            )?));
        as_user(&mut pg, user);
        // SAFETY: prctl in the child before exec, async-signal-safe.
        unsafe {
            pg.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = pg.spawn()?;
        let me = LocalPostgres {
            dir,
            port,
            child,
            password,
        };
        me.wait_ready().await?;
        Ok(me)
    }

    fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}?sslmode=disable",
            self.password.expose(),
            self.port
        )
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    anyhow::bail!(
                        "PostgreSQL did not start within 30 s: {e}; log: {}",
                        self.dir.join("postgres.log").display()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Creates a database with `sql/001_runtime_events.sql` applied.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<LocalDb> {
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
pub const SCHEMA: &str = include_str!("../../sql/001_runtime_events.sql");

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
