//! From a Postgres commit to a subscribed client: events committed to
//! runtime.events → `projector run` (the real binary) → the local Convex
//! backend → the official `convex` npm client (tools/subscribe.ts), which
//! holds a short-lived RS256 token from the demo app backend (web/server.ts)
//! verified through convex/auth.config.ts. Needs `npm ci` in the repo root.

use crate::support::convex_backend;
use crate::support::pg;
use crate::support::projector_proc;

use std::process::Stdio;
use std::time::{Duration, Instant};

use convex_backend::ConvexBackend;
use projector::sandbox::web::DemoWeb;
use projector_proc::Projector;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// `tools/subscribe.ts` for one user and query: one JSON line per result.
struct Subscriber {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Drop for Subscriber {
    /// npx runs tsx, which runs node: killing npx alone (kill_on_drop)
    /// left node running after the test, until a write to its closed
    /// stdout killed it with an EPIPE trace in the test log. The whole
    /// process group goes instead.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on the group `spawn` made for this child.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
        }
    }
}

impl Subscriber {
    fn spawn(convex_url: &str, web: &DemoWeb, user: &str, query: &str) -> Subscriber {
        let mut child = Command::new("npx")
            .args(["tsx", "tools/subscribe.ts", "--url", convex_url])
            .args(["--token-url", &format!("{}/token", web.url)])
            .args(["--user", user, "--query", query])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .expect("spawn tools/subscribe.ts");
        let stdout = child.stdout.take().expect("stdout");
        Subscriber {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next line that satisfies `f`, within `secs`.
    async fn until(&mut self, secs: u64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .expect("read subscriber output")
                .unwrap_or_else(|| panic!("subscriber exited before {what}"));
            let v: Value = serde_json::from_str(&line).expect("subscriber JSON line");
            if f(&v) {
                return v;
            }
        }
    }
}

fn run_doc<'a>(v: &'a Value, run_id: &str) -> Option<&'a Value> {
    v["value"].as_array()?.iter().find(|d| d["runId"] == run_id)
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
        * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_commit_reaches_only_its_owners_subscription() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let web = DemoWeb::start(root).await.expect("demo web app");
    let convex = ConvexBackend::start_with_env(&web.jwt_env);
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    let slot = db.slot_name();
    projector::source::slot::create_slot(&sql, &slot)
        .await
        .unwrap();
    let _proc = Projector::spawn(
        &db.url,
        convex.url(),
        convex.admin_key().expose(),
        &slot,
        &[],
    );

    let mut alice = Subscriber::spawn(convex.url(), &web, "u-alice", "runs:list");
    let mut bob = Subscriber::spawn(convex.url(), &web, "u-bob", "runs:list");
    for s in [&mut alice, &mut bob] {
        s.until(60, "auth", |v| v["auth"] == true).await;
        s.until(60, "a first result", |v| {
            v["value"] == serde_json::json!([])
        })
        .await;
    }

    let insert = |seq: i64, ty: &str, payload: &str| {
        format!(
            "insert into runtime.events (stream_id, stream_seq, event_type, owner_id, payload) \
             values ('run:r-e2e', {seq}, '{ty}', 'u-alice', '{payload}')"
        )
    };
    let committed = now_ms();
    sql.batch_execute(&insert(
        1,
        "run.created",
        r#"{"thread_id":"t-e2e","title":"from postgres"}"#,
    ))
    .await
    .unwrap();
    let created = alice
        .until(60, "r-e2e in alice's runs", |v| {
            run_doc(v, "r-e2e").is_some()
        })
        .await;
    let doc = run_doc(&created, "r-e2e").unwrap();
    assert_eq!(doc["ownerId"], "u-alice");
    assert_eq!(doc["title"], "from postgres");
    assert_eq!(doc["status"], "queued");
    eprintln!(
        "commit → client: {:.1} ms (first event)",
        created["at"].as_f64().unwrap() - committed
    );

    // A second commit updates the same document in place.
    let committed = now_ms();
    sql.batch_execute(&insert(2, "run.started", "{}"))
        .await
        .unwrap();
    let started = alice
        .until(30, "r-e2e running", |v| {
            run_doc(v, "r-e2e").is_some_and(|d| d["status"] == "running")
        })
        .await;
    assert_eq!(run_doc(&started, "r-e2e").unwrap()["lastStreamSeq"], 2.0);
    eprintln!(
        "commit → client: {:.1} ms (second event)",
        started["at"].as_f64().unwrap() - committed
    );

    // Bob's subscription never saw alice's run: one more event for bob
    // himself, and everything bob received before it was empty.
    sql.batch_execute(
        "insert into runtime.events (stream_id, stream_seq, event_type, owner_id, payload) \
         values ('run:r-bob', 1, 'run.created', 'u-bob', '{\"thread_id\":\"t-b\",\"title\":\"bob\"}')",
    )
    .await
    .unwrap();
    bob.until(30, "bob's own run", |v| {
        assert!(run_doc(v, "r-e2e").is_none(), "bob saw alice's run: {v}");
        run_doc(v, "r-bob").is_some()
    })
    .await;
}
