//! Runs the real `projector` binary as a child process (so tests can
//! SIGKILL it), and reads replication progress from Postgres.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

pub struct Projector {
    pub child: Child,
    pub metrics_port: u16,
    /// Where stderr goes unless `PROJECTOR_TEST_LOG` sends it to the
    /// terminal: a failing wait prints it, so a projector that exited says why.
    stderr_path: Option<std::path::PathBuf>,
}

impl Projector {
    /// `projector run` with the given connection settings; extra env wins.
    pub fn spawn(
        db_url: &str,
        convex_url: &str,
        admin_key: &str,
        slot: &str,
        extra: &[(&str, &str)],
    ) -> Projector {
        Self::spawn_args(db_url, convex_url, admin_key, slot, &[], extra)
    }

    /// Like [`Projector::spawn`], with extra arguments after `run`
    /// (e.g. `--exit-when-caught-up`).
    pub fn spawn_args(
        db_url: &str,
        convex_url: &str,
        admin_key: &str,
        slot: &str,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> Projector {
        let metrics_port = crate::support::cli::free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_projector"));
        cmd.arg("run")
            .args(args)
            .env("DATABASE_URL", db_url)
            .env("CONVEX_URL", convex_url)
            .env("CONVEX_ADMIN_KEY", admin_key)
            .env("PROJECTOR_SLOT", slot)
            .env(
                "PROJECTOR_METRICS_ADDR",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("PROJECTOR_STATUS_INTERVAL_MS", "200")
            .env(
                "RUST_LOG",
                std::env::var("PROJECTOR_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let stderr_path = if std::env::var_os("PROJECTOR_TEST_LOG").is_some() {
            cmd.stderr(Stdio::inherit());
            None
        } else {
            let path = std::env::temp_dir().join(format!(
                "projector-test-{}-{metrics_port}.log",
                std::process::id()
            ));
            let file = std::fs::File::create(&path).expect("create projector log");
            cmd.stderr(file);
            Some(path)
        };
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn projector");
        Projector {
            child,
            metrics_port,
            stderr_path,
        }
    }

    /// The projector's stderr so far (its warnings and errors).
    pub fn stderr(&self) -> String {
        self.stderr_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_else(|| "(stderr went to the terminal)".into())
    }

    /// Polls `/metrics` every 20 ms until `metric` satisfies `pred`; the
    /// scrape that did. Panics with the projector's stderr if it exits or
    /// `timeout` passes first.
    pub async fn wait_metric(
        &mut self,
        metric: &str,
        pred: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.metrics().await.unwrap_or_default();
            if metric_value(&m, metric).is_some_and(&pred) {
                return m;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the projector exited ({status}) before {metric} was reached:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{metric} not reached in {timeout:?}:\n{m}\nstderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill9(&mut self) {
        if let Some(pid) = self.child.id() {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }

    pub fn term(&mut self) {
        if let Some(pid) = self.child.id() {
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
    }

    pub async fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().await.expect("wait projector")
    }

    pub async fn metrics(&self) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        reqwest::get(url).await.ok()?.text().await.ok()
    }

    pub async fn ready(&self) -> bool {
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics_port);
        matches!(reqwest::get(url).await, Ok(r) if r.status().is_success())
    }

    /// Polls `/readyz` every 50 ms until it answers `want`; the time it took,
    /// or None after `timeout`.
    pub async fn wait_ready(&self, want: bool, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.ready().await == want {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// Sum of the samples of a metric whose label set contains `label`
/// (e.g. `reason="unknown_type"`).
pub fn metric_labeled(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

/// `X/Y` text form of an LSN (for `::pg_lsn` casts).
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Reads one sample value of a metric (first line that starts with `name`).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub async fn current_wal_lsn(sql: &tokio_postgres::Client) -> u64 {
    let row = sql
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint", &[])
        .await
        .expect("current lsn");
    row.get::<_, i64>(0) as u64
}

pub async fn confirmed_lsn(sql: &tokio_postgres::Client, slot: &str) -> Option<u64> {
    let row = sql
        .query_opt(
            "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("slot query")?;
    row.get::<_, Option<i64>>(0).map(|v| v as u64)
}

/// Waits until `slot` confirmed at least the WAL position current now.
pub async fn wait_caught_up(sql: &tokio_postgres::Client, slot: &str, timeout: Duration) {
    let target = current_wal_lsn(sql).await;
    let deadline = Instant::now() + timeout;
    loop {
        if confirmed_lsn(sql, slot).await.unwrap_or(0) >= target {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "slot {slot} did not catch up to {target:X} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sum of every sample of a metric (all label sets).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

/// Verifies the active generation against a fresh fold of the database
/// (waiting up to 90 s for `slot` to confirm past the snapshot); returns
/// the outcome and its human report.
pub async fn verify_active(
    db_url: &projector::config::Secret,
    client: &projector::sink::ConvexClient,
    slot: &str,
) -> (projector::verify::Outcome, String) {
    let generation = client
        .get_active()
        .await
        .unwrap()
        .expect("an active generation");
    let outcome = projector::verify::verify(
        db_url,
        Some(slot),
        client,
        generation,
        Duration::from_secs(90),
    )
    .await
    .expect("verify runs");
    let text = projector::verify::compare::render(&outcome.report);
    (outcome, text)
}

/// verify is exact, caught up, and has runs.
pub async fn assert_exact_active(
    db_url: &projector::config::Secret,
    client: &projector::sink::ConvexClient,
    slot: &str,
) -> projector::verify::Outcome {
    let (outcome, text) = verify_active(db_url, client, slot).await;
    eprintln!("{text}");
    assert!(
        outcome
            .report
            .tables
            .get("runs")
            .is_some_and(|t| t.matching > 0),
        "no runs at all:\n{text}"
    );
    assert!(outcome.caught_up, "not caught up\n{text}");
    assert!(outcome.report.is_exact(), "divergent:\n{text}");
    outcome
}

impl Drop for Projector {
    fn drop(&mut self) {
        if let Some(path) = &self.stderr_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `projector run` on `slot` reaching Postgres through a cuttable link
/// (`TcpProxy`): the proxy, to cut and restore, and the process.
pub async fn spawn_behind_proxy(
    db: &crate::support::pg::TestDb,
    convex: &crate::support::convex_backend::ConvexBackend,
    slot: &str,
) -> (crate::support::tcp_proxy::TcpProxy, Projector) {
    let proxy = crate::support::tcp_proxy::TcpProxy::start(db.port).await;
    let url = db
        .url
        .replace(&format!(":{}/", db.port), &format!(":{}/", proxy.port));
    let p = Projector::spawn(&url, convex.url(), convex.admin_key().expose(), slot, &[]);
    (proxy, p)
}
