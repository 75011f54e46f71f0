//! The first install on a log that already has history: `setup --apply`
//! makes the slot "now", and `run` copies what predates it before
//! streaming, resumably; `--no-backfill` starts from the slot alone.

use crate::support::cli;
use crate::support::convex_backend::ConvexBackend;
use crate::support::history_sql::{self, Shape};
use crate::support::pg;
use crate::support::projector_proc;

use std::time::{Duration, Instant};

const SHAPE: Shape = Shape {
    events: 3_000,
    runs: 100,
    workers: 20,
    users: 10,
    threads: 15,
};

fn env(db: &pg::TestDb, convex: &ConvexBackend, slot: &str) -> cli::Env {
    cli::Env {
        db_url: db.url.clone(),
        convex_url: convex.url().to_string(),
        admin_key: convex.admin_key().expose().to_string(),
        slot: slot.to_string(),
    }
}

/// History, then `setup --apply`, then more events (in the stream and, for
/// the ones before the copy's snapshot, in both): verify is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_on_a_log_with_history_backfills_then_streams_exactly() {
    const SLOT: &str = "backfill_first";
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    let convex = ConvexBackend::start();
    let env = env(&db, &convex, SLOT);
    sql.batch_execute(&history_sql::insert_sql("a", SHAPE, 0))
        .await
        .unwrap();
    let (code, out, err) = env.run(&["setup"], Duration::from_secs(60)).await;
    assert!(
        out.contains("3000 events") && out.contains("backfill"),
        "setup reports the backfill ({code}):\n{out}\n{err}"
    );
    let (code, out, err) = env
        .run(&["setup", "--apply"], Duration::from_secs(60))
        .await;
    assert!(
        code == 0 || code == 1,
        "setup --apply: {code}\n{out}\n{err}"
    );
    // After the slot: these arrive from the stream, and (committed before
    // the service's snapshot) from the copy as well.
    sql.batch_execute(&history_sql::insert_sql("a", SHAPE, SHAPE.events))
        .await
        .unwrap();
    let mut p = projector_proc::Projector::spawn(
        &db.url,
        convex.url(),
        convex.admin_key().expose(),
        SLOT,
        &[],
    );
    cli::wait_confirmed(&sql, SLOT, Duration::from_secs(120)).await;
    let client = convex.client(Duration::from_secs(30));
    let outcome = projector_proc::assert_exact_active(&db.secret(), &client, SLOT).await;
    assert_eq!(outcome.events, 2 * SHAPE.events);
    let m = p.metrics().await.unwrap_or_default();
    assert_eq!(
        projector_proc::metric_sum(&m, "projector_events_dead_lettered_total"),
        0.0,
        "the overlap must be skipped, not dead-lettered:\n{m}"
    );
    p.term();
    let _ = tokio::time::timeout(Duration::from_secs(30), p.wait()).await;
}

/// SIGKILL in the middle of the copy: the next start copies again and ends exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backfill_resumes_to_an_exact_state() {
    const SLOT: &str = "backfill_kill";
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    let convex = ConvexBackend::start();
    let big = Shape {
        events: 20_000,
        ..SHAPE
    };
    sql.batch_execute(&history_sql::insert_sql("k", big, 0))
        .await
        .unwrap();
    projector::source::slot::create_slot(&sql, SLOT)
        .await
        .unwrap();
    let client = convex.client(Duration::from_secs(30));
    let spawn = || {
        projector_proc::Projector::spawn(
            &db.url,
            convex.url(),
            convex.admin_key().expose(),
            SLOT,
            &[("PROJECTOR_BATCH_MAX_EVENTS", "200")],
        )
    };
    let mut p = spawn();
    // Wait until the copy has written something, then kill it.
    p.wait_metric(
        "projector_rebuild_events_copied",
        |copied| copied > 0.0,
        Duration::from_secs(60),
    )
    .await;
    p.kill9();
    let _ = p.wait().await;
    let state = client.get_state(1, "backfill").await.unwrap();
    assert_eq!(
        state.as_ref().and_then(|s| s["state"].as_str()),
        Some("copying"),
        "{state:?}"
    );
    let mut p = spawn();
    let deadline = Instant::now() + Duration::from_secs(180);
    let outcome = loop {
        let (outcome, text) = projector_proc::verify_active(&db.secret(), &client, SLOT).await;
        if outcome.report.is_exact() {
            break outcome;
        }
        assert!(Instant::now() < deadline, "{text}\nstderr:\n{}", p.stderr());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(outcome.events, big.events);
    let state = client.get_state(1, "backfill").await.unwrap();
    assert_eq!(
        state.as_ref().and_then(|s| s["state"].as_str()),
        Some("done")
    );
    p.term();
    let _ = tokio::time::timeout(Duration::from_secs(30), p.wait()).await;
}

/// `--no-backfill`: only what follows the slot is projected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backfill_starts_from_the_slot_alone() {
    const SLOT: &str = "backfill_off";
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    let convex = ConvexBackend::start();
    sql.batch_execute(&history_sql::insert_sql("o", SHAPE, 0))
        .await
        .unwrap();
    projector::source::slot::create_slot(&sql, SLOT)
        .await
        .unwrap();
    sql.batch_execute(
        "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload) \
         VALUES ('run:after', 1, 'run.created', 'u1', '{\"thread_id\": \"t\", \"title\": \"x\"}')",
    )
    .await
    .unwrap();
    let mut p = projector_proc::Projector::spawn_args(
        &db.url,
        convex.url(),
        convex.admin_key().expose(),
        SLOT,
        &["--no-backfill"],
        &[],
    );
    cli::wait_confirmed(&sql, SLOT, Duration::from_secs(60)).await;
    let client = convex.client(Duration::from_secs(30));
    let runs = projector::verify::dump(&client, "runs", 1).await.unwrap();
    let keys: Vec<&String> = runs.keys().collect();
    assert_eq!(keys, vec!["after"], "only the run after the slot");
    let state = client.get_state(1, "backfill").await.unwrap();
    assert_eq!(
        state.as_ref().and_then(|s| s["state"].as_str()),
        Some("skipped")
    );
    p.term();
    let _ = tokio::time::timeout(Duration::from_secs(30), p.wait()).await;
}

/// Peak resident set (VmHWM) of a live process, KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A history of large rows is read a few MiB at a time, not a cursor
/// chunk of 4,096 rows at once: 400 rows of 256 KiB (100 MiB, under the
/// 4 MiB maximum event size, so each is read whole) are copied with a
/// peak RSS far below their total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_of_large_rows_is_copied_within_a_bounded_memory() {
    const SLOT: &str = "backfill_large_rows";
    const ROWS: i64 = 400;
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    let convex = ConvexBackend::start();
    // TOAST compresses the repeated text; `payload::text` still reads it
    // whole, 256 KiB a row.
    sql.batch_execute(&format!(
        "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload) \
         SELECT 'run:big' || i, 1, 'run.created', 'u1', \
                jsonb_build_object('thread_id', 't1', 'title', 'x', 'notes', repeat('n', 262144)) \
         FROM generate_series(1, {ROWS}) i"
    ))
    .await
    .unwrap();
    projector::source::slot::create_slot(&sql, SLOT)
        .await
        .unwrap();
    let mut p = projector_proc::Projector::spawn(
        &db.url,
        convex.url(),
        convex.admin_key().expose(),
        SLOT,
        &[],
    );
    let client = convex.client(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let state = client.get_state(1, "backfill").await.unwrap();
        if state.as_ref().and_then(|s| s["state"].as_str()) == Some("done") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backfill not done in 180 s ({state:?})\nstderr:\n{}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = p.pid().and_then(peak_rss_kib).expect("VmHWM");
    let outcome = projector_proc::assert_exact_active(&db.secret(), &client, SLOT).await;
    assert_eq!(outcome.events, ROWS as u64);
    // 100 MiB of rows; one fetch of them whole would be at least that.
    assert!(peak < 80 * 1024, "peak RSS {peak} KiB while copying");
    eprintln!("LARGE ROWS: {ROWS} rows of 256 KiB copied with peak RSS {peak} KiB");
    p.term();
    let _ = tokio::time::timeout(Duration::from_secs(30), p.wait()).await;
}
