//! Slot invalidation (`max_slot_wal_keep_size`): with the projector stopped,
//! WAL grows until the slot is `lost`; then `run` exits 3 with a clear error,
//! `status` reports the slot lost (exit 3, `--json`), and `rebuild` restores
//! an exact projection (dropping the lost slot).

use crate::support::cli;
use crate::support::convex_backend;
use crate::support::history_sql;
use crate::support::pg;
use crate::support::projector_proc;

use std::time::{Duration, Instant};

use serde_json::Value;

const SLOT: &str = "projector";

fn shape(events: u64) -> history_sql::Shape {
    history_sql::Shape {
        events,
        runs: 30,
        workers: 6,
        users: 5,
        threads: 8,
    }
}

async fn wal_status(sql: &tokio_postgres::Client, slot: &str) -> Option<String> {
    sql.query_opt(
        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot],
    )
    .await
    .unwrap()
    .and_then(|r| r.get(0))
}

/// A cluster that invalidates a slot after 1 MB of retained WAL.
async fn small_wal_cluster() -> pg::PgCluster {
    pg::PgCluster::start(pg::PgOptions {
        ssl: false,
        max_slot_wal_keep_size: Some("1MB".into()),
        extra_conf: vec![
            "wal_keep_size = 0".into(),
            "min_wal_size = '32MB'".into(),
            "max_wal_size = '64MB'".into(),
        ],
        ..pg::PgOptions::default()
    })
    .await
}

/// With nothing consuming `slot`, writes events (300 per round) and WAL
/// until the slot is `lost`; returns the rounds it took.
async fn lose_slot(sql: &tokio_postgres::Client, slot: &str) -> u64 {
    sql.batch_execute("CREATE TABLE filler (x text)")
        .await
        .unwrap();
    let started = Instant::now();
    let mut round = 0u64;
    while wal_status(sql, slot).await.as_deref() != Some("lost") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "slot not lost: {:?}",
            wal_status(sql, slot).await
        );
        sql.batch_execute(&history_sql::insert_sql(
            &format!("b{round}"),
            shape(300),
            0,
        ))
        .await
        .unwrap();
        sql.batch_execute(
            "INSERT INTO filler SELECT repeat(md5(i::text), 30) FROM generate_series(1, 5000) i;
             SELECT pg_switch_wal(); CHECKPOINT;",
        )
        .await
        .unwrap();
        round += 1;
    }
    eprintln!(
        "slot {slot} lost after {round} rounds, {:?}",
        started.elapsed()
    );
    round
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_slot_stops_run_shows_in_status_and_rebuild_restores() {
    let cluster = small_wal_cluster().await;
    let db = cluster.fresh_db().await;
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
    sql.batch_execute(&history_sql::insert_sql("a", shape(2000), 0))
        .await
        .unwrap();
    let mut service = projector_proc::Projector::spawn(
        &db.url,
        convex.url(),
        convex.admin_key().expose(),
        SLOT,
        &[],
    );
    cli::wait_confirmed(&sql, SLOT, Duration::from_secs(60)).await;
    service.term();
    assert!(service.wait().await.success());

    // Stopped projector; WAL piles up until the slot is invalidated.
    let round = lose_slot(&sql, SLOT).await;

    // `run` refuses with a clear error and exit code 3.
    let (code, out, err) = env.run(&["run"], Duration::from_secs(60)).await;
    assert_eq!(code, 3, "run on a lost slot:\n{out}\n{err}");
    assert!(
        err.contains(SLOT) && err.contains("rebuild"),
        "the error names the slot and the remedy:\n{err}"
    );

    // `status` reports it (text and JSON).
    let (code, out, _) = env
        .run(&["status", "--json"], Duration::from_secs(30))
        .await;
    assert_eq!(code, 3, "{out}");
    let s: Value = serde_json::from_str(&out).expect("status --json parses");
    assert_eq!(s["wal_status"], "lost", "{out}");
    assert_eq!(s["slot"], SLOT, "{out}");
    assert!(s["verdict"].as_str().unwrap().contains("rebuild"), "{out}");
    let (code, out, _) = env.run(&["status"], Duration::from_secs(30)).await;
    assert_eq!(code, 3);
    assert!(out.contains("slot lost"), "{out}");

    // `rebuild` restores an exact projection and drops the lost slot.
    let (code, out, err) = env.run(&["rebuild"], Duration::from_secs(120)).await;
    assert_eq!(code, 0, "rebuild:\n{out}\n{err}");
    let new_slot = format!("{SLOT}_g2");
    assert_eq!(cli::slots(&sql, &db.dbname).await, vec![new_slot.clone()]);
    let mut service = projector_proc::Projector::spawn(
        &db.url,
        convex.url(),
        convex.admin_key().expose(),
        SLOT,
        &[],
    );
    cli::wait_confirmed(&sql, &new_slot, Duration::from_secs(60)).await;
    let client = convex.client(Duration::from_secs(30));
    let outcome = projector::verify::verify(
        &db.secret(),
        Some(&new_slot),
        &client,
        2,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let text = projector::verify::compare::render(&outcome.report);
    assert!(outcome.caught_up && outcome.report.is_exact(), "{text}");
    let total_events = 2000 + 300 * round;
    assert_eq!(outcome.events, total_events, "{text}");
    // Every event is in: event counts over runs add up to the run events.
    let runs = projector::verify::dump(&client, "runs", 2).await.unwrap();
    let folded: f64 = runs.values().filter_map(|d| d["eventCount"].as_f64()).sum();
    assert_eq!(folded as u64, (2000 * 7 / 10) + round * (300 * 7 / 10));

    // Healthy again.
    let (code, out, _) = env
        .run(&["status", "--json"], Duration::from_secs(30))
        .await;
    assert_eq!(code, 0, "{out}");
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["slot"], new_slot.as_str(), "{out}");
    assert_eq!(s["active_generation"], 2, "{out}");
    service.term();
    let _ = tokio::time::timeout(Duration::from_secs(30), service.wait()).await;
}

/// `run --on-slot-lost=rebuild`: the service rebuilds into generation 2 from
/// a fresh slot by itself (clients read generation 1 meanwhile), then
/// streams it; the read model ends exact and the lost slot is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_slot_lost_rebuild_recovers_by_itself() {
    const SLOT2: &str = "projector_heal";
    let cluster = small_wal_cluster().await;
    let db = cluster.fresh_db().await;
    let sql = db.client().await;
    projector::source::slot::create_slot(&sql, SLOT2)
        .await
        .unwrap();
    let convex = convex_backend::ConvexBackend::start();
    sql.batch_execute(&history_sql::insert_sql("a", shape(1000), 0))
        .await
        .unwrap();
    let mut service = projector_proc::Projector::spawn(
        &db.url,
        convex.url(),
        convex.admin_key().expose(),
        SLOT2,
        &[],
    );
    cli::wait_confirmed(&sql, SLOT2, Duration::from_secs(60)).await;
    service.term();
    assert!(service.wait().await.success());
    let round = lose_slot(&sql, SLOT2).await;
    let mut service = projector_proc::Projector::spawn_args(
        &db.url,
        convex.url(),
        convex.admin_key().expose(),
        SLOT2,
        &["--on-slot-lost", "rebuild"],
        &[],
    );
    let new_slot = format!("{SLOT2}_g2");
    let client = convex.client(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(120);
    while client.get_active().await.unwrap() != Some(2) {
        assert!(Instant::now() < deadline, "no rebuild to generation 2");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // More traffic after the switch: the service streams the new slot.
    sql.batch_execute(&history_sql::insert_sql("c", shape(300), 0))
        .await
        .unwrap();
    cli::wait_confirmed(&sql, &new_slot, Duration::from_secs(60)).await;
    let outcome = projector::verify::verify(
        &db.secret(),
        Some(&new_slot),
        &client,
        2,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let text = projector::verify::compare::render(&outcome.report);
    assert!(outcome.caught_up && outcome.report.is_exact(), "{text}");
    assert_eq!(outcome.events, 1000 + 300 * round + 300, "{text}");
    assert_eq!(cli::slots(&sql, &db.dbname).await, vec![new_slot.clone()]);
    assert!(
        service.ready().await,
        "the service streams the new generation"
    );
    service.term();
    let _ = tokio::time::timeout(Duration::from_secs(30), service.wait()).await;
}
