//! PostgreSQL 18's `idle_replication_slot_timeout`: a slot that no consumer
//! has held for longer than that is invalidated at the next checkpoint,
//! with `invalidation_reason = idle_timeout`. A slot the projector holds is
//! never idle; once the projector is gone the slot is lost, and `status`
//! names the reason and its remedy (exit 3), `run` exits 3, and the
//! replication client's error names the reason (told by SQLSTATE and
//! `pg_replication_slots`, not by the message, whose text 18 changed).
//!
//! The timeout is set to its minimum, 1 s (the unit is seconds), and a
//! CHECKPOINT triggers the invalidation, so the test takes seconds.

use crate::support::cli;
use crate::support::convex_backend;
use crate::support::history_sql;
use crate::support::pg;
use crate::support::projector_proc;

use std::time::{Duration, Instant};

use projector::event::Lsn;
use projector::source::slot::slot_info;
use projector::source::stream::{ReplicationStream, StreamOptions};
use projector::source::SourceError;
use serde_json::Value;

const SLOT: &str = "projector";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_timeout_invalidation_is_named_in_status_and_ends_run_with_3() {
    if pg::server_major() < 18 {
        eprintln!(
            "skipped: idle_replication_slot_timeout needs PostgreSQL 18 (this is {})",
            pg::server_major()
        );
        return;
    }
    let cluster = pg::PgCluster::start(pg::PgOptions {
        ssl: false,
        extra_conf: vec!["idle_replication_slot_timeout = 1".into()],
        ..pg::PgOptions::default()
    })
    .await;
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
    let shape = history_sql::Shape {
        events: 500,
        runs: 10,
        workers: 3,
        users: 3,
        threads: 4,
    };
    sql.batch_execute(&history_sql::insert_sql("a", shape, 0))
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

    // Held for longer than the timeout, across checkpoints: still valid.
    // Deliberate: the time passing is what is under test.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sql.batch_execute("CHECKPOINT").await.unwrap();
    let held = slot_info(&sql, SLOT).await.unwrap().unwrap();
    assert!(held.active && !held.is_lost(), "{held:?}");

    // Released: the first checkpoint a second later invalidates it.
    service.term();
    assert!(service.wait().await.success());
    let started = Instant::now();
    let lost = loop {
        sql.batch_execute("CHECKPOINT").await.unwrap();
        let info = slot_info(&sql, SLOT).await.unwrap().unwrap();
        if info.is_lost() {
            break info;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not invalidated: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "invalidated {:?} after the projector stopped",
        started.elapsed()
    );
    assert_eq!(lost.invalidation_reason.as_deref(), Some("idle_timeout"));
    assert_eq!(lost.wal_status.as_deref(), Some("lost"));

    // status: the reason and the remedy for it, exit 3.
    let (code, out, _) = env
        .run(&["status", "--json"], Duration::from_secs(30))
        .await;
    assert_eq!(code, 3, "{out}");
    let s: Value = serde_json::from_str(&out).expect("status --json parses");
    assert_eq!(s["invalidation_reason"], "idle_timeout", "{out}");
    let verdict = s["verdict"].as_str().unwrap();
    assert!(
        verdict.contains("slot lost (idle_timeout)")
            && verdict.contains("projector rebuild")
            && verdict.contains("idle_replication_slot_timeout"),
        "{out}"
    );
    let (code, out, _) = env.run(&["status"], Duration::from_secs(30)).await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("invalidated: idle_timeout"), "{out}");

    // run: exit 3 naming the slot and the remedy.
    let (code, out, err) = env.run(&["run"], Duration::from_secs(60)).await;
    assert_eq!(code, 3, "run on an idle-invalidated slot:\n{out}\n{err}");
    assert!(err.contains(SLOT) && err.contains("rebuild"), "{err}");

    // The replication client, asked to stream from it, names the reason.
    let e = ReplicationStream::start(
        &db.secret(),
        SLOT,
        "projector_events",
        Lsn(0),
        StreamOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, SourceError::SlotInvalidated { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("idle_timeout") && text.contains("idle_replication_slot_timeout"),
        "{text}"
    );
    assert!(!e.is_transient());
}
