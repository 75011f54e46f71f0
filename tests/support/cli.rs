//! Helpers for rebuild/verify/status tests: run a `projector` subcommand as
//! the real binary, call public client queries as a user, list slots.
//! Use with `use crate::support::cli;`.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// The environment every subcommand needs.
#[derive(Clone)]
pub struct Env {
    pub db_url: String,
    pub convex_url: String,
    pub admin_key: String,
    pub slot: String,
}

impl Env {
    pub fn command(&self, args: &[&str]) -> Command {
        // PROJECTOR_BIN: run another build (e.g. target/release/projector
        // from a debug test binary).
        let bin = std::env::var("PROJECTOR_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_projector").to_string());
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("DATABASE_URL", &self.db_url)
            .env("CONVEX_URL", &self.convex_url)
            .env("CONVEX_ADMIN_KEY", &self.admin_key)
            .env("PROJECTOR_SLOT", &self.slot)
            .env(
                "PROJECTOR_METRICS_ADDR",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("PROJECTOR_STATUS_INTERVAL_MS", "200")
            .env(
                "RUST_LOG",
                std::env::var("PROJECTOR_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs a subcommand to completion: (exit code, stdout, stderr).
    pub async fn run(&self, args: &[&str], timeout: Duration) -> (i32, String, String) {
        let out = tokio::time::timeout(timeout, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("projector {args:?} did not finish within {timeout:?}"))
            .expect("spawn projector");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Spawns a subcommand with stdout/stderr piped (or inherited with
    /// PROJECTOR_TEST_LOG).
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut cmd = self.command(args);
        if std::env::var_os("PROJECTOR_TEST_LOG").is_some() {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        cmd.spawn().expect("spawn projector")
    }
}

/// A free TCP port on 127.0.0.1 (the sandbox's, which tests share).
pub fn free_port() -> u16 {
    projector::sandbox::postgres::free_port().expect("free port")
}

/// A public query with a user's bearer token (verified by the backend:
/// mint it with `sandbox::web::DemoWeb::token`).
pub async fn user_query(
    http: &reqwest::Client,
    convex_url: &str,
    token: &str,
    path: &str,
    args: Value,
) -> Result<Value, String> {
    let r = http
        .post(format!("{convex_url}/api/query"))
        .bearer_auth(token)
        .json(&json!({"path": path, "args": args, "format": "json"}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() || v["status"] != "success" {
        return Err(format!("{status}: {v}"));
    }
    Ok(v["value"].clone())
}

/// Names of the replication slots of database `db`, sorted.
pub async fn slots(sql: &tokio_postgres::Client, db: &str) -> Vec<String> {
    let rows = sql
        .query(
            "SELECT slot_name::text FROM pg_replication_slots WHERE database = $1 ORDER BY 1",
            &[&db],
        )
        .await
        .expect("list slots");
    rows.iter().map(|r| r.get(0)).collect()
}

/// Resident set size of a process in KiB (Linux /proc).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The WAL insert position (with `synchronous_commit = off`,
/// `pg_current_wal_lsn()` — the write position — can lag committed work).
pub async fn insert_lsn(sql: &tokio_postgres::Client) -> u64 {
    let row = sql
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint", &[])
        .await
        .expect("insert lsn");
    row.get::<_, i64>(0) as u64
}

/// Waits until `slot` confirmed every transaction committed before the call.
pub async fn wait_confirmed(sql: &tokio_postgres::Client, slot: &str, timeout: Duration) {
    let target = insert_lsn(sql).await;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let row = sql
            .query_opt(
                "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .expect("slot query");
        let confirmed = row.and_then(|r| r.get::<_, Option<i64>>(0)).unwrap_or(0) as u64;
        if confirmed >= target {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slot {slot} did not confirm {target:X} within {timeout:?} (at {confirmed:X})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
