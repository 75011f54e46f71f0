//! A primary failover under live traffic. A primary and a physical
//! standby (a streaming replica through the slot `standby1`); `DATABASE_URL`
//! names both hosts with `target_session_attrs=read-write`; `setup --apply`
//! makes the slot; the projector streams while a writer commits batches;
//! then the standby is promoted and the old primary stopped.
//!
//! - 17 and later (failover slots): the primary lists `standby1` in
//!   `synchronized_standby_slots`, the standby runs `sync_replication_slots`.
//!   The projector reconnects to the promoted standby by itself, continues
//!   from the synced slot (same slot, same generation: no rebuild), and
//!   Convex ends exactly equal to a fresh fold of the new primary.
//! - 14 to 16: the promoted standby has no slot; `run` exits 3 naming the
//!   missing slot and `projector rebuild`.
//!
//! Printed: seconds from promotion to streaming again, events in the
//! workload, divergent documents after, whether a rebuild happened.

use crate::support::cli;
use crate::support::convex_backend::ConvexBackend;
use crate::support::history_sql;
use crate::support::pg;
use crate::support::pg_standby;
use crate::support::projector_proc::{self, Projector};
use crate::support::wait_until;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use projector::config::Secret;
use projector::setup::{doctor, Level};

const SLOT: &str = "projector";
/// Events per committed batch of the writer.
const BATCH: u64 = 40;

fn batch_sql(k: u64) -> String {
    let shape = history_sql::Shape {
        events: BATCH,
        runs: 2,
        workers: 1,
        users: 1,
        threads: 1,
    };
    // A prefix per batch: a batch lost with the old primary leaves no gap
    // in any stream of a later batch.
    history_sql::insert_sql(&format!("b{k}_"), shape, 0)
}

/// Commits batches through the two-host URL until stopped, reconnecting
/// (to whichever host is read-write) on any error. Counts batches whose
/// commit returned.
fn spawn_writer(
    url: Secret,
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut k = 0u64;
        let mut client = None;
        while !stop.load(Ordering::Relaxed) {
            if client.is_none() {
                client = projector::source::sql::connect(&url).await.ok();
                if client.is_none() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            let c = client.as_ref().unwrap();
            match c.batch_execute(&batch_sql(k)).await {
                Ok(()) => {
                    committed.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => client = None,
            }
            k += 1;
            // Pacing (about 20 batches/s), not a wait on anything.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

async fn slot_active(sql: &tokio_postgres::Client) -> bool {
    sql.query_opt(
        "select active from pg_replication_slots where slot_name = $1",
        &[&SLOT],
    )
    .await
    .ok()
    .flatten()
    .is_some_and(|r| r.get::<_, bool>(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoting_the_standby_continues_from_the_synced_slot_or_exits_3_before_17() {
    let major = pg::server_major();
    let failover_slots = major >= 17;
    let primary = pg::PgCluster::start(pg::PgOptions {
        ssl: false,
        ..pg::PgOptions::default()
    })
    .await;
    let db = primary.fresh_db().await;
    let standby = pg_standby::start_standby(&primary, "standby1").await;
    if failover_slots {
        // Two statements: ALTER SYSTEM refuses to run in a transaction block.
        primary
            .exec(
                "postgres",
                "alter system set synchronized_standby_slots = 'standby1'",
            )
            .await;
        primary.exec("postgres", "select pg_reload_conf()").await;
    }
    let pw = &primary.superuser_password;
    let url = format!(
        "postgres://postgres:{pw}@127.0.0.1:{},127.0.0.1:{}/{}?sslmode=disable&target_session_attrs=read-write",
        primary.port, standby.port, db.dbname
    );
    let standby_url = format!(
        "postgres://postgres:{pw}@127.0.0.1:{}/{}?sslmode=disable",
        standby.port, db.dbname
    );
    let on_primary = primary.client(&db.dbname).await;
    // The standby streams before anything else happens.
    wait_until("the standby to stream", Duration::from_secs(30), || async {
        on_primary
            .query_opt(
                "select 1 from pg_replication_slots where slot_name = 'standby1' and active",
                &[],
            )
            .await
            .unwrap()
            .is_some()
    })
    .await;

    // setup --apply through the two-host URL lands on the primary.
    let r = doctor(&Secret::new(url.clone()), SLOT, "projector_events", true)
        .await
        .unwrap();
    assert!(!r.failed(), "{:#?}", r.findings);
    let f = r.get("failover_slot").unwrap();
    if failover_slots {
        assert_eq!(f.level, Level::Ok, "{f}");
        assert!(
            f.message.contains("is a failover slot") && f.message.contains("standby1"),
            "{f}"
        );
        let s = r.get("synchronized_standby_slots").unwrap();
        assert_eq!(s.level, Level::Ok, "{s}");
    } else {
        // Before 17, a streaming standby is a risk setup names.
        assert_eq!(f.level, Level::Warn, "{f}");
        assert!(f.message.contains("rebuild"), "{f}");
    }

    let convex = ConvexBackend::start();
    let env = cli::Env {
        db_url: url.clone(),
        convex_url: convex.url().to_string(),
        admin_key: convex.admin_key().expose().to_string(),
        slot: SLOT.into(),
    };
    let mut service = Projector::spawn(&url, convex.url(), convex.admin_key().expose(), SLOT, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(Secret::new(url.clone()), stop.clone(), committed.clone());
    wait_until("traffic to flow", Duration::from_secs(60), || async {
        committed.load(Ordering::Relaxed) >= 20
    })
    .await;
    cli::wait_confirmed(&on_primary, SLOT, Duration::from_secs(60)).await;

    let on_standby = standby.client(&db.dbname).await;
    if failover_slots {
        // The standby's copy of the slot is ready to be used after a
        // promotion (a copy still being created would be dropped by it).
        let r = doctor(
            &Secret::new(standby_url.clone()),
            SLOT,
            "projector_events",
            false,
        )
        .await
        .unwrap();
        for check in [
            "sync_replication_slots",
            "hot_standby_feedback",
            "primary_slot_name",
            "primary_conninfo",
        ] {
            assert_eq!(r.get(check).unwrap().level, Level::Ok, "{:#?}", r.findings);
        }
        wait_until("the slot to be synced to the standby", Duration::from_secs(60), || async {
            on_standby
                .query_opt(
                    "select 1 from pg_replication_slots where slot_name = $1 and synced and not temporary and confirmed_flush_lsn is not null",
                    &[&SLOT],
                )
                .await
                .unwrap()
                .is_some()
        })
        .await;
        let r = doctor(
            &Secret::new(standby_url.clone()),
            SLOT,
            "projector_events",
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            r.get("synced_slot").unwrap().level,
            Level::Ok,
            "{:#?}",
            r.findings
        );
    }

    // How far the standby's copy of the slot is behind what the projector
    // confirmed on the primary: the stretch replayed after the failover
    // (the slot sync worker naps up to 30 s between syncs when idle).
    let replay_bytes = if failover_slots {
        let confirmed = projector_proc::confirmed_lsn(&on_primary, SLOT)
            .await
            .unwrap_or(0);
        let synced = projector_proc::confirmed_lsn(&on_standby, SLOT)
            .await
            .unwrap_or(0);
        confirmed.saturating_sub(synced)
    } else {
        0
    };

    // Failover: promote the standby, then stop the old primary.
    let promoted_at = Instant::now();
    on_standby
        .batch_execute("select pg_promote(true, 60)")
        .await
        .unwrap();
    let promotion = promoted_at.elapsed();
    primary.stop();
    let old_primary_stopped = promoted_at.elapsed();
    let on_new = standby.client(&db.dbname).await;

    if !failover_slots {
        let code = tokio::time::timeout(Duration::from_secs(60), service.wait())
            .await
            .expect("run stops on the promoted standby")
            .code();
        stop.store(true, Ordering::Relaxed);
        writer.await.unwrap();
        assert_eq!(
            code,
            Some(3),
            "run exits 3: the slot is missing after a failover before 17"
        );
        let (code, out, err) = env.run(&["run"], Duration::from_secs(60)).await;
        assert_eq!(code, 3, "{out}\n{err}");
        assert!(
            err.contains("does not exist") && err.contains("rebuild"),
            "{err}"
        );
        assert_eq!(cli::slots(&on_new, &db.dbname).await, Vec::<String>::new());
        eprintln!(
            "failover on PostgreSQL {major}: no slot on the promoted standby; run exits 3 (promotion {:.2} s); events committed {}",
            promotion.as_secs_f64(),
            committed.load(Ordering::Relaxed) * BATCH
        );
        return;
    }

    wait_until(
        "the projector to stream from the new primary",
        Duration::from_secs(60),
        || slot_active(&on_new),
    )
    .await;
    let streaming_again = promoted_at.elapsed();
    // Traffic goes on against the new primary, and reaches Convex.
    let before = committed.load(Ordering::Relaxed);
    wait_until(
        "traffic on the new primary",
        Duration::from_secs(60),
        || async { committed.load(Ordering::Relaxed) >= before + 20 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    projector_proc::wait_caught_up(&on_new, SLOT, Duration::from_secs(120)).await;

    let client = convex.client(Duration::from_secs(30));
    let outcome =
        projector_proc::assert_exact_active(&Secret::new(standby_url.clone()), &client, SLOT).await;
    let events: i64 = on_new
        .query_one("select count(*) from runtime.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(outcome.events, events as u64);
    let divergent = outcome.report.divergent.len();
    assert_eq!(divergent, 0);
    // No rebuild: generation 1 still active, fed by the same slot.
    let generation = client.get_active().await.unwrap();
    assert_eq!(generation, Some(1));
    assert_eq!(
        cli::slots(&on_new, &db.dbname).await,
        vec![SLOT.to_string()]
    );
    let lost_with_old_primary = committed.load(Ordering::Relaxed) * BATCH - events as u64;
    eprintln!(
        "failover on PostgreSQL {major}: promotion {:.2} s, old primary stopped at {:.2} s, streaming again {:.2} s after promotion began; \
         events in the workload {events} (committed {} of which {lost_with_old_primary} only on the old primary), divergent documents {divergent}, rebuild: no; \
         the synced slot was {replay_bytes} bytes of WAL behind the primary's at promotion (replayed, idempotent)",
        promotion.as_secs_f64(),
        old_primary_stopped.as_secs_f64(),
        streaming_again.as_secs_f64(),
        committed.load(Ordering::Relaxed) * BATCH,
    );
    service.term();
    assert!(
        tokio::time::timeout(Duration::from_secs(30), service.wait())
            .await
            .expect("exits after SIGTERM")
            .success()
    );
}
