//! End to end: loadgen traffic with concurrent writers → `projector run`
//! (the real binary) → the real Convex functions in the local backend;
//! afterwards every document equals a fresh fold of runtime.events.

use crate::support::convex_backend;
use crate::support::pg;
use crate::support::projector_proc;

use std::time::Duration;

use convex_backend::ConvexBackend;
use projector::loadgen::{generate, LoadSpec};
use projector_proc::{wait_caught_up, Projector};

pub fn small_spec(events: u64, malformed: f64) -> LoadSpec {
    LoadSpec {
        events: Some(events),
        rate: 0.0,
        writers: 3,
        runs: 40,
        workers: 15,
        users: 15,
        malformed_fraction: malformed,
        batch: 20,
        ..LoadSpec::default()
    }
}

async fn assert_exact(
    db: &pg::TestDb,
    convex: &ConvexBackend,
    slot: &str,
) -> projector::verify::Outcome {
    let client = convex.client(Duration::from_secs(30));
    projector_proc::assert_exact_active(&db.secret(), &client, slot).await
}

/// A slot of this test database's own (slots are cluster-wide), a local
/// backend and `projector run`, streaming before the test writes anything:
/// on an empty log the first start has nothing to backfill, so every event
/// the test writes is decoded exactly once.
async fn streaming_service(
    db: &pg::TestDb,
    sql: &tokio_postgres::Client,
) -> (String, ConvexBackend, Projector) {
    streaming_service_at(db, sql, &db.url, &[]).await
}

/// [`streaming_service`] reaching Postgres at `url`, with extra env.
async fn streaming_service_at(
    db: &pg::TestDb,
    sql: &tokio_postgres::Client,
    url: &str,
    env: &[(&str, &str)],
) -> (String, ConvexBackend, Projector) {
    let slot = db.slot_name();
    projector::source::slot::create_slot(sql, &slot)
        .await
        .unwrap();
    let convex = ConvexBackend::start();
    let proc = Projector::spawn(url, convex.url(), convex.admin_key().expose(), &slot, env);
    assert!(proc
        .wait_ready(true, Duration::from_secs(30))
        .await
        .is_some());
    (slot, convex, proc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_traffic_ends_exact_in_convex() {
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    let (slot, convex, mut proc) = streaming_service(&db, &sql).await;

    // Scrape /metrics while traffic flows: progress gauges must move with it
    // and never claim more than was received.
    let port = proc.metrics_port;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(async move {
        let (mut first_recv, mut last_recv) = (None, 0.0f64);
        let (mut last_decoded, mut samples) = (0.0f64, 0);
        loop {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
                if let Ok(text) = r.text().await {
                    let v = |n| projector_proc::metric_sum(&text, n);
                    let (recv, conf) = (
                        v("projector_received_lsn_bytes"),
                        v("projector_confirmed_lsn_bytes"),
                    );
                    assert!(conf <= recv, "confirmed {conf} beyond received {recv}");
                    let decoded = v("projector_events_decoded_total");
                    assert!(decoded >= last_decoded, "decoded went backwards");
                    last_decoded = decoded;
                    assert!(
                        v("projector_lag_bytes") <= recv - conf + 1.0,
                        "lag is received - confirmed"
                    );
                    first_recv.get_or_insert(recv);
                    last_recv = recv;
                    samples += 1;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop_rx.changed() => return (first_recv.unwrap_or(0.0), last_recv, samples),
            }
        }
    });
    let spec = LoadSpec {
        rate: 1500.0,
        ..small_spec(3000, 0.05)
    };
    let report = generate(&db.secret(), spec).await.unwrap();
    assert_eq!(report.total, 3000);
    wait_caught_up(&sql, &slot, Duration::from_secs(120)).await;
    stop_tx.send(true).unwrap();
    let (first_recv, last_recv, samples) = sampler.await.unwrap();
    assert!(samples > 10, "only {samples} scrapes");
    assert!(
        last_recv > first_recv,
        "the received LSN did not move with traffic ({first_recv} -> {last_recv})"
    );

    // The metrics add up: decoded = folded + skipped + ignored + dead-lettered.
    let text = proc.metrics().await.expect("metrics endpoint");
    let v = |n| projector_proc::metric_sum(&text, n);
    let decoded = v("projector_events_decoded_total");
    assert_eq!(decoded, 3000.0, "{text}");
    assert_eq!(
        decoded,
        v("projector_events_folded_total")
            + v("projector_events_skipped_total")
            + v("projector_events_ignored_total")
            + v("projector_events_dead_lettered_total"),
        "{text}"
    );
    assert_eq!(v("projector_events_ignored_total"), report.ignored as f64);
    assert!(v("projector_writes_applied_total") > 0.0);
    assert!(v("projector_commit_to_ack_seconds_count") > 0.0);

    let outcome = assert_exact(&db, &convex, &slot).await;
    let dl = outcome
        .report
        .tables
        .get("deadLetters")
        .map(|t| t.matching)
        .unwrap_or(0);
    assert!(
        dl as u64 >= report.dead_letters,
        "every malformed event is a dead letter: {dl} < {}",
        report.dead_letters
    );

    proc.term();
    let status = tokio::time::timeout(Duration::from_secs(30), proc.wait())
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}

/// A database whose settings change the text Postgres sends (DateStyle,
/// TimeZone): both connections pin their own, so timestamps still parse and
/// nothing becomes an `invalid_timestamp` dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_iso_datestyle_changes_nothing() {
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    sql.batch_execute(&format!(
        "ALTER DATABASE {} SET DateStyle = 'SQL, DMY'; ALTER DATABASE {} SET TimeZone = 'Asia/Kolkata'; \
         ALTER DATABASE {} SET IntervalStyle = 'sql_standard'",
        db.dbname, db.dbname, db.dbname
    ))
    .await
    .unwrap();
    let (slot, convex, mut proc) = streaming_service(&db, &sql).await;
    let report = generate(&db.secret(), small_spec(500, 0.0)).await.unwrap();
    wait_caught_up(&sql, &slot, Duration::from_secs(120)).await;
    let m = proc.metrics().await.expect("metrics");
    assert_eq!(
        projector_proc::metric_labeled(
            &m,
            "projector_events_dead_lettered_total",
            "reason=\"invalid_timestamp\""
        ),
        0.0,
        "{m}"
    );
    let outcome = assert_exact(&db, &convex, &slot).await;
    assert_eq!(outcome.events, report.total);
    proc.term();
    let _ = tokio::time::timeout(Duration::from_secs(30), proc.wait()).await;
}

/// One transaction creating 3,000 runs, then one moving each on: the
/// second's batches replace more documents than one mutation may
/// (Convex's 4,096 index ranges, two per replaced document), so each is
/// applied in several mutations; the local backend enforces the limit as
/// Convex does, so a mutation over it would be refused ("Too many reads")
/// and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_larger_than_one_mutation_land_exact_within_convexs_limits() {
    use crate::support::history_sql;
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    let (slot, convex, proc) = streaming_service(&db, &sql).await;
    let shape = history_sql::Shape {
        events: 5000,
        runs: 3000,
        workers: 500,
        users: 50,
        threads: 30,
    };
    for offset in [0, 5000] {
        sql.batch_execute(&history_sql::insert_sql("big", shape, offset))
            .await
            .unwrap();
        wait_caught_up(&sql, &slot, Duration::from_secs(240)).await;
    }
    let text = proc.metrics().await.expect("metrics endpoint");
    let v = |n| projector_proc::metric_sum(&text, n);
    assert_eq!(v("projector_events_decoded_total"), 10_000.0, "{text}");
    assert_eq!(v("projector_convex_errors_total"), 0.0, "{text}");
    // Over 6,500 documents written twice, in mutations of at most 1,536.
    assert!(v("projector_batches_applied_total") >= 9.0, "{text}");
    assert_exact(&db, &convex, &slot).await;
}

/// Voluntary context switches of `pid`'s main thread (the runtime's).
fn main_thread_wakeups(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

/// Live traffic of one small transaction at a time: the batch that opens
/// on the first one takes every commit of its fill window (what queued
/// under the socket's raised wake-up mark is read at the deadline, not
/// left for the next batch), and the runtime does not wake for each of
/// them (60 commits, ~3 ms apart, inside one 2 s fill; waking per commit
/// is 60 wake-ups or more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_live_batch_takes_its_window_without_waking_per_commit() {
    quiet_fill_window("sslmode=disable").await;
}

/// The same over TLS: what rustls has decrypted and what queued under the
/// mark both reach the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_live_batch_over_tls_takes_its_window_without_waking_per_commit() {
    quiet_fill_window("sslmode=require").await;
}

async fn quiet_fill_window(sslmode: &str) {
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    let url = db.url.replace("sslmode=disable", sslmode);
    assert!(url.contains(sslmode), "{url}");
    let env = [
        ("PROJECTOR_BATCH_FILL_MS", "2000"),
        ("PROJECTOR_STATUS_INTERVAL_MS", "1000"),
    ];
    let (slot, convex, proc) = streaming_service_at(&db, &sql, &url, &env).await;
    let pid = proc.pid().expect("pid");
    let batches = || async {
        let text = proc.metrics().await.expect("metrics");
        projector_proc::metric_sum(&text, "projector_batches_applied_total")
    };
    // Each commit flushes its WAL, so the walsender sends it at once (the
    // sandbox turns this off for speed; the WAL writer would send bursts).
    sql.batch_execute("SET synchronous_commit = on")
        .await
        .unwrap();
    let batches_before = batches().await;
    let insert =
        "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload) \
                  VALUES ('run:q', $1, $2, 'u1', $3::text::jsonb)";
    let created = r#"{"thread_id":"t1","title":"quiet"}"#;
    sql.execute(insert, &[&1i64, &"run.created", &created])
        .await
        .unwrap();
    // The batch is open once the first event is read.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let wakeups_before = main_thread_wakeups(pid);
    for seq in 2..=61i64 {
        sql.execute(insert, &[&seq, &"run.step", &r#"{"name":"s"}"#])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let wakeups = main_thread_wakeups(pid) - wakeups_before;
    wait_caught_up(&sql, &slot, Duration::from_secs(30)).await;
    assert_eq!(
        batches().await - batches_before,
        1.0,
        "the 61 commits of one fill window went into one batch"
    );
    assert!(
        wakeups < 30,
        "the runtime woke {wakeups} times for 60 small commits inside one fill window"
    );
    // The mark dropped with the batch: a lone small commit afterwards
    // still wakes the service (a mark left raised would hold it unread).
    sql.execute(insert, &[&62i64, &"run.step", &r#"{"name":"s"}"#])
        .await
        .unwrap();
    wait_caught_up(&sql, &slot, Duration::from_secs(10)).await;
    let client = convex.client(Duration::from_secs(30));
    let [doc] = &client.load_table(1, "runs", &["q".into()]).await.unwrap()[..] else {
        panic!("runs/q is missing");
    };
    assert_eq!(doc.doc["eventCount"], 62.0);
}
