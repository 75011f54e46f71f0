//! `projector status` (the binary): healthy (0), lagging (1: behind by more
//! than `--max-lag-bytes`, or no consumer), slot missing (3), as text and
//! `--json`. The lost-slot case (3) is in tests/rebuild_slot_lost.rs.

use crate::support::cli;
use crate::support::convex_backend;
use crate::support::history_sql;
use crate::support::pg;
use crate::support::projector_proc;

use std::time::{Duration, Instant};

use serde_json::Value;

const SLOT: &str = "projector_status";

async fn status(env: &cli::Env, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["status", "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = env.run(&args, Duration::from_secs(30)).await;
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, v)
}

fn signal(p: &projector_proc::Projector, sig: i32) {
    let pid = p.child.id().expect("running") as i32;
    unsafe {
        libc::kill(pid, sig);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_healthy_lagging_inactive_and_missing() {
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    projector::source::slot::create_slot(&sql, SLOT)
        .await
        .unwrap();
    let convex = convex_backend::ConvexBackend::start();
    let env = cli::Env {
        db_url: db.url.clone(),
        convex_url: convex.url().to_string(),
        admin_key: convex.admin_key().expose().to_string(),
        slot: SLOT.into(),
    };
    let shape = history_sql::Shape {
        events: 1000,
        runs: 10,
        workers: 3,
        users: 3,
        threads: 4,
    };
    sql.batch_execute(&history_sql::insert_sql("s", shape, 0))
        .await
        .unwrap();
    sql.batch_execute(
        "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload)
         VALUES ('run:bad', 1, 'run.created', 'u1', '{}')",
    )
    .await
    .unwrap();

    // No consumer yet: the slot is there but nobody streams it.
    let (code, s) = status(&env, &[]).await;
    assert_eq!(code, 1, "{s}");
    assert_eq!(s["slot_exists"], true, "{s}");
    assert_eq!(s["active"], false, "{s}");
    assert!(s["verdict"].as_str().unwrap().contains("inactive"), "{s}");

    // Healthy: streaming and caught up.
    let service = projector_proc::Projector::spawn(
        &db.url,
        convex.url(),
        convex.admin_key().expose(),
        SLOT,
        &[],
    );
    cli::wait_confirmed(&sql, SLOT, Duration::from_secs(60)).await;
    let (code, s) = status(&env, &[]).await;
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["verdict"], "healthy", "{s}");
    assert_eq!(s["active"], true, "{s}");
    assert_eq!(s["active_generation"], 1, "{s}");
    assert_eq!(s["dead_letters"], 1, "{s}");
    assert_eq!(s["wal_status"], "reserved", "{s}");
    let (code, text, _) = env.run(&["status"], Duration::from_secs(30)).await;
    assert_eq!(code, 0);
    assert!(
        text.contains("verdict: healthy") && text.contains(SLOT),
        "{text}"
    );

    // Lagging: the consumer is stuck (SIGSTOP) while events arrive.
    signal(&service, libc::SIGSTOP);
    sql.batch_execute(&history_sql::insert_sql("s2", shape, 0))
        .await
        .unwrap();
    sql.batch_execute("SELECT pg_switch_wal()").await.unwrap();
    let (code, s) = status(&env, &["--max-lag-bytes", "10000"]).await;
    signal(&service, libc::SIGCONT);
    assert_eq!(code, 1, "{s}");
    assert_eq!(s["verdict"], "lagging", "{s}");
    assert!(s["lag_bytes"].as_i64().unwrap() > 10000, "{s}");
    // Recovers.
    cli::wait_confirmed(&sql, SLOT, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, s) = status(&env, &["--max-lag-bytes", "1000000"]).await;
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not healthy again: {s}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Convex unreachable: still the Postgres side, with why, and exit 2
    // (the active generation's slot cannot be looked up).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = cli::Env {
        convex_url: dead_url,
        ..env.clone()
    };
    let (code, s) = status(&unreachable, &["--max-lag-bytes", "1000000"]).await;
    assert_eq!(code, 2, "{s}");
    assert_eq!(s["slot_exists"], true, "{s}");
    assert_eq!(s["active"], true, "{s}");
    assert!(s["convex_error"].is_string(), "{s}");
    assert!(
        s["verdict"]
            .as_str()
            .unwrap()
            .contains("convex unreachable"),
        "{s}"
    );
    assert!(!s.to_string().contains(&env.admin_key), "{s}");
    let (code, text, _) = unreachable.run(&["status"], Duration::from_secs(30)).await;
    assert_eq!(code, 2);
    assert!(text.contains("convex: UNREACHABLE"), "{text}");

    // Missing: the slot was dropped.
    let mut service = service;
    service.term();
    assert!(service.wait().await.success());
    projector::source::slot::drop_slot(&sql, SLOT)
        .await
        .unwrap();
    let (code, s) = status(&env, &[]).await;
    assert_eq!(code, 3, "{s}");
    assert_eq!(s["slot_exists"], false, "{s}");
    assert!(s["verdict"].as_str().unwrap().contains("missing"), "{s}");
}
