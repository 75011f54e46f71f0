//! The "must show" fault tests of the pipeline, against the real binary,
//! real Postgres and the project's real Convex functions (local backend):
//!
//! - SIGKILL at random moments under traffic, with a progress-safety check
//!   after every kill (the slot never confirmed an event Convex lacks);
//! - every Convex fault kind of the local backend, mid-stream;
//! - a Postgres restart mid-stream (reconnect, `/readyz` flips);
//! - two replicas on one slot (standby takeover time);
//! - poison input (malformed events, a document Convex rejects);
//! - an idle slot (WAL of other tables) keeps advancing.
//!
//! Each test uses its own database and slot name (slots are cluster-wide).

use crate::support::convex_backend;
use crate::support::pg;
use crate::support::projector_proc;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use convex_backend::ConvexBackend;
use projector::event::RuntimeEvent;
use projector::loadgen::{generate, LoadReport, LoadSpec, MalformedKind};
use projector::projection::{plan, Plan};
use projector::sink::ConvexClient;
use projector::verify::compare::Finding;
use projector_proc::{
    confirmed_lsn, lsn_text, metric_labeled, metric_sum, wait_caught_up, Projector,
};
use rand::Rng;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

fn spec(malformed: f64) -> LoadSpec {
    LoadSpec {
        writers: 2,
        runs: 30,
        workers: 10,
        users: 10,
        malformed_fraction: malformed,
        batch: 10,
        ..LoadSpec::default()
    }
}

/// Loadgen at `rate` events/s until the returned sender says stop.
fn traffic(db: &pg::TestDb, rate: f64) -> (watch::Sender<bool>, JoinHandle<LoadReport>) {
    let (tx, rx) = watch::channel(false);
    let secret = db.secret();
    let s = LoadSpec {
        rate,
        stop: Some(rx),
        ..spec(0.02)
    };
    let h = tokio::spawn(async move { generate(&secret, s).await.expect("loadgen") });
    (tx, h)
}

async fn stop_traffic(tx: watch::Sender<bool>, h: JoinHandle<LoadReport>) -> LoadReport {
    let _ = tx.send(true);
    h.await.expect("loadgen task")
}

fn spawn(db: &pg::TestDb, convex: &ConvexBackend, slot: &str, env: &[(&str, &str)]) -> Projector {
    Projector::spawn(
        &db.url,
        convex.url(),
        convex.admin_key().expose(),
        slot,
        env,
    )
}

async fn verify(
    db: &pg::TestDb,
    convex: &ConvexBackend,
    slot: &str,
) -> (projector::verify::Outcome, String) {
    let client = convex.client(Duration::from_secs(30));
    projector_proc::verify_active(&db.secret(), &client, slot).await
}

/// verify is exact, caught up, and has runs.
async fn assert_exact(
    db: &pg::TestDb,
    convex: &ConvexBackend,
    slot: &str,
) -> projector::verify::Outcome {
    let client = convex.client(Duration::from_secs(30));
    projector_proc::assert_exact_active(&db.secret(), &client, slot).await
}

async fn new_slot(db: &pg::TestDb, slot: &str) -> tokio_postgres::Client {
    let sql = db.client().await;
    projector::source::slot::create_slot(&sql, slot)
        .await
        .unwrap();
    sql
}

// ---------------------------------------------------------------- 1. crash

/// Every event in runtime.events, by seq.
async fn event_rows(sql: &tokio_postgres::Client) -> i64 {
    sql.query_one("SELECT count(*) FROM runtime.events", &[])
        .await
        .unwrap()
        .get(0)
}

async fn events_by_seq(sql: &tokio_postgres::Client) -> HashMap<i64, RuntimeEvent> {
    use futures::TryStreamExt;
    // history::events reads through a cursor: it needs a transaction.
    projector::history::begin_snapshot(sql, None).await.unwrap();
    let mut out = HashMap::new();
    {
        let stream = projector::history::events(sql, 0, usize::MAX / 2)
            .await
            .unwrap();
        futures::pin_mut!(stream);
        while let Some(ev) = stream.try_next().await.unwrap() {
            if let projector::history::HistoryEvent::Event(ev) = ev {
                out.insert(ev.seq, ev);
            }
        }
    }
    sql.batch_execute("COMMIT").await.unwrap();
    out
}

/// Seqs of the runtime.events INSERTs of transactions committed at or
/// before `upto`, read through the `test_decoding` observer slot.
async fn committed_seqs_before(
    sql: &tokio_postgres::Client,
    observer: &str,
    upto: u64,
) -> Vec<i64> {
    let rows = sql
        .query(
            "SELECT data FROM pg_logical_slot_peek_changes($1, $2::text::pg_lsn, NULL)",
            &[&observer, &lsn_text(upto)],
        )
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for r in rows {
        let data: String = r.get(0);
        if !data.starts_with("table runtime.events: INSERT:") {
            continue;
        }
        let rest = data
            .split("seq[bigint]:")
            .nth(1)
            .expect("test_decoding line has seq");
        let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        seqs.push(n.parse().unwrap());
    }
    seqs
}

/// Convex holds every event that Postgres considers confirmed (`upto`):
/// its stream document is at or past its stream_seq, or it is a dead letter.
/// Returns how many folded/dead-lettered events were checked.
async fn assert_confirmed_events_in_convex(
    sql: &tokio_postgres::Client,
    client: &ConvexClient,
    observer: &str,
    upto: u64,
) -> usize {
    let Some(generation) = client.get_active().await.unwrap() else {
        return 0;
    };
    let seqs = committed_seqs_before(sql, observer, upto).await;
    let all = events_by_seq(sql).await;
    // (table, key) → max stream_seq needed; seq → must be dead letter.
    let mut need_doc: BTreeMap<(String, String), Vec<(i64, i64)>> = BTreeMap::new();
    let mut need_dl: BTreeSet<i64> = BTreeSet::new();
    let mut may_dl: BTreeSet<i64> = BTreeSet::new();
    for s in &seqs {
        let ev = all.get(s).expect("peeked event is in the table");
        match plan(ev) {
            Plan::Ignored(_) => {}
            Plan::DeadLetter(_) => {
                need_dl.insert(*s);
            }
            Plan::Fold(f) => {
                let k = &f.keys()[0];
                need_doc
                    .entry((k.table.as_str().to_string(), k.key.to_string()))
                    .or_default()
                    .push((*s, ev.stream_seq));
                may_dl.insert(*s);
            }
        }
    }
    let mut dl_keys: Vec<String> = need_dl
        .iter()
        .chain(may_dl.iter())
        .map(|s| s.to_string())
        .collect();
    dl_keys.sort();
    let mut dls: BTreeSet<i64> = BTreeSet::new();
    for chunk in dl_keys.chunks(200) {
        for d in client
            .load_table(generation, "deadLetters", chunk)
            .await
            .unwrap()
        {
            dls.insert(d.key.parse().unwrap());
        }
    }
    for s in &need_dl {
        assert!(
            dls.contains(s),
            "confirmed_flush_lsn {} passed dead letter seq {s}, which Convex lacks",
            lsn_text(upto)
        );
    }
    let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (t, k) in need_doc.keys() {
        by_table.entry(t.clone()).or_default().push(k.clone());
    }
    let mut stored: HashMap<(String, String), f64> = HashMap::new();
    for (t, keys) in &by_table {
        for chunk in keys.chunks(200) {
            for d in client.load_table(generation, t, chunk).await.unwrap() {
                let last = d
                    .doc
                    .get("lastStreamSeq")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(-1.0);
                stored.insert((t.clone(), d.key), last);
            }
        }
    }
    for ((t, k), evs) in &need_doc {
        let last = stored.get(&(t.clone(), k.clone())).copied().unwrap_or(-1.0);
        for (seq, stream_seq) in evs {
            assert!(
                last >= *stream_seq as f64 || dls.contains(seq),
                "confirmed_flush_lsn {} passed event seq {seq} ({t}:{k} stream_seq {stream_seq}), \
                 but Convex has lastStreamSeq {last} and no dead letter",
                lsn_text(upto)
            );
        }
    }
    need_dl.len() + may_dl.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_is_exact_and_never_confirms_early() {
    const SLOT: &str = "crash";
    const OBSERVER: &str = "crash_observer";
    let started = Instant::now();
    let db = pg::shared().await.fresh_db().await;
    let sql = new_slot(&db, SLOT).await;
    sql.execute(
        "SELECT pg_create_logical_replication_slot($1, 'test_decoding')",
        &[&OBSERVER],
    )
    .await
    .unwrap();
    let convex = ConvexBackend::start();
    let client = convex.client(Duration::from_secs(30));
    let (tx, h) = traffic(&db, 150.0);
    let mut rng = crate::support::seeded_rng("sigkill_at_random_moments");
    let mut confirmed = Vec::new();
    let mut checked = 0;
    for kill in 0..12 {
        // Every event commits after the slot was made: no history to copy
        // (a backfill killed each time would never reach the stream).
        let mut p = spawn(&db, &convex, SLOT, &[("PROJECTOR_NO_BACKFILL", "true")]);
        let ms = rng.gen_range(200..3000);
        // Every other kill lands while a Convex request is held back (it
        // executes 3 s later, after the check below): a projector that
        // confirmed before the ack would be caught with the write missing.
        let held = kill % 2 == 1 && ms > 800;
        // Deliberate delays, not waits: the kill moment is the random
        // variable under test (seeded, replayable).
        if held {
            tokio::time::sleep(Duration::from_millis(ms - 600)).await;
            convex
                .fault(json!({"kind": "latency", "ms": 3000, "count": 1}))
                .await;
            tokio::time::sleep(Duration::from_millis(600)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        p.kill9();
        let _ = p.wait().await;
        // Dead: nothing more is confirmed. C must not pass unacknowledged events.
        let c = confirmed_lsn(&sql, SLOT).await.unwrap_or(0);
        let n = assert_confirmed_events_in_convex(&sql, &client, OBSERVER, c).await;
        eprintln!(
            "kill {kill} after {ms} ms{}: confirmed {} ({n} events checked)",
            if held { " (a request held back)" } else { "" },
            lsn_text(c)
        );
        if held {
            convex.clear_faults().await;
        }
        checked = n;
        confirmed.push(c);
    }
    assert!(
        confirmed.windows(2).filter(|w| w[1] > w[0]).count() >= 3,
        "progress must advance between kills: {confirmed:?}"
    );
    assert!(checked > 0, "the safety check saw no confirmed events");
    let report = stop_traffic(tx, h).await;
    eprintln!("traffic: {} events", report.total);
    let mut p = spawn(&db, &convex, SLOT, &[]);
    wait_caught_up(&sql, SLOT, Duration::from_secs(120)).await;
    let c = confirmed_lsn(&sql, SLOT).await.unwrap_or(0);
    assert_confirmed_events_in_convex(&sql, &client, OBSERVER, c).await;
    assert_exact(&db, &convex, SLOT).await;
    p.term();
    let _ = tokio::time::timeout(Duration::from_secs(30), p.wait()).await;
    sql.execute("SELECT pg_drop_replication_slot($1)", &[&OBSERVER])
        .await
        .unwrap();
    eprintln!("crash test took {:?}", started.elapsed());
}

// ---------------------------------------------------------- 2. Convex faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_convex_fault_kind_mid_stream_ends_exact() {
    const SLOT: &str = "convexfaults";
    let started = Instant::now();
    let db = pg::shared().await.fresh_db().await;
    let sql = new_slot(&db, SLOT).await;
    let convex = ConvexBackend::start();
    let mut p = spawn(
        &db,
        &convex,
        SLOT,
        &[("PROJECTOR_CONVEX_TIMEOUT_MS", "1000")],
    );
    let (tx, h) = traffic(&db, 100.0);
    // Mid-stream: the traffic already reaches Convex.
    p.wait_metric(
        "projector_batches_applied_total",
        |n| n >= 1.0,
        Duration::from_secs(60),
    )
    .await;
    // Armed at once: the backend hands them out in order, one per request.
    // Only to `apply` (which retries and counts each retry): the service's
    // active-generation check, a query every 3 s off the loop that is simply
    // asked again next time, could otherwise take one uncounted.
    let faults = [
        json!({"kind": "status", "status": 429, "count": 2, "path": "projector:apply", "retryAfterSeconds": 1}),
        json!({"kind": "status", "status": 500, "count": 2, "path": "projector:apply"}),
        json!({"kind": "status", "status": 503, "count": 2, "path": "projector:apply"}),
        json!({"kind": "latency", "ms": 2500, "count": 2, "path": "projector:apply"}),
        json!({"kind": "drop_before", "count": 2, "path": "projector:apply"}),
        json!({"kind": "drop_after", "count": 2, "path": "projector:apply"}),
    ];
    let before = convex.stats().await["faults"].as_u64().unwrap();
    let mut armed = 0u64;
    for f in faults {
        armed += f["count"].as_u64().unwrap();
        convex.fault(f).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while convex.stats().await["faults"].as_u64().unwrap() < before + armed {
        assert!(Instant::now() < deadline, "faults not consumed within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{armed} faults consumed after {:?}", started.elapsed());
    // Traffic still flows once the faults are spent: more batches land.
    let applied = metric_sum(
        &p.metrics().await.unwrap_or_default(),
        "projector_batches_applied_total",
    );
    p.wait_metric(
        "projector_batches_applied_total",
        |n| n >= applied + 2.0,
        Duration::from_secs(60),
    )
    .await;
    let report = stop_traffic(tx, h).await;
    wait_caught_up(&sql, SLOT, Duration::from_secs(120)).await;
    let metrics = p.metrics().await.expect("metrics");
    let retries = metric_sum(&metrics, "projector_convex_retries_total");
    let errors = metric_sum(&metrics, "projector_convex_errors_total");
    eprintln!(
        "{} events, {armed} faults armed, retries {retries}, errors {errors}",
        report.total
    );
    assert!(
        retries >= armed as f64,
        "every fault must have been retried:\n{metrics}"
    );
    for class in ["rate_limited", "server", "timeout"] {
        assert!(
            metric_labeled(&metrics, "projector_convex_errors_total", class) > 0.0,
            "errors of class {class} are counted:\n{metrics}"
        );
    }
    assert_exact(&db, &convex, SLOT).await;
    eprintln!("convex faults test took {:?}", started.elapsed());
}

// ---------------------------------------------------- 3. Postgres restart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_stream_reconnects_and_readyz_follows() {
    const SLOT: &str = "pgrestart";
    let started = Instant::now();
    let cluster = pg::PgCluster::start(pg::PgOptions::default()).await;
    let db = cluster.fresh_db().await;
    let sql = new_slot(&db, SLOT).await;
    let convex = ConvexBackend::start();
    let p = spawn(&db, &convex, SLOT, &[]);
    assert!(
        p.wait_ready(true, Duration::from_secs(30)).await.is_some(),
        "ready before the restart"
    );
    // A backlog the projector is still working through when Postgres goes.
    let r1 = generate(
        &db.secret(),
        LoadSpec {
            events: Some(1500),
            ..spec(0.02)
        },
    )
    .await
    .unwrap();
    let confirmed = confirmed_lsn(&sql, SLOT).await.unwrap_or(0);
    let end = insert_lsn(&sql).await;
    assert!(
        confirmed < end,
        "the restart must come mid-stream (backlog not drained)"
    );
    drop(sql);
    tokio::task::block_in_place(|| cluster.stop());
    let down = p.wait_ready(false, Duration::from_secs(15)).await;
    assert!(
        down.is_some(),
        "/readyz must turn not-ready while Postgres is down"
    );
    // Deliberate: time passes with Postgres down, to show /readyz does not
    // turn ready again on its own.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!p.ready().await, "still not ready while Postgres is down");
    tokio::task::block_in_place(|| cluster.start_again());
    let up = p.wait_ready(true, Duration::from_secs(45)).await;
    assert!(
        up.is_some(),
        "/readyz must turn ready again after Postgres is back"
    );
    eprintln!("not-ready after {down:?}; ready again {up:?} after restart");
    let r2 = generate(
        &db.secret(),
        LoadSpec {
            events: Some(500),
            ..spec(0.02)
        },
    )
    .await
    .unwrap();
    let sql = db.client().await;
    wait_caught_up(&sql, SLOT, Duration::from_secs(120)).await;
    let outcome = assert_exact(&db, &convex, SLOT).await;
    assert_eq!(outcome.events, r1.total + r2.total);
    eprintln!("pg restart test took {:?}", started.elapsed());
}

// ------------------------------------------------------------------ 4. HA

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_replica_takes_over_after_sigkill() {
    const SLOT: &str = "ha";
    let started = Instant::now();
    let db = pg::shared().await.fresh_db().await;
    let sql = new_slot(&db, SLOT).await;
    let convex = ConvexBackend::start();
    let mut a = spawn(&db, &convex, SLOT, &[]);
    assert!(
        a.wait_ready(true, Duration::from_secs(30)).await.is_some(),
        "first replica ready"
    );
    // At info, B logs each time it finds the slot in use and stands by.
    let mut b = spawn(&db, &convex, SLOT, &[("RUST_LOG", "info")]);
    let (tx, h) = traffic(&db, 150.0);
    // A streams the traffic, and B has tried the slot and stood by.
    a.wait_metric(
        "projector_batches_applied_total",
        |n| n >= 1.0,
        Duration::from_secs(60),
    )
    .await;
    crate::support::wait_until(
        "the standby to find the slot in use and stand by",
        Duration::from_secs(60),
        || async { b.stderr().contains("slot is in use by another consumer") },
    )
    .await;
    assert!(a.ready().await, "the active replica stays ready");
    assert!(
        !b.ready().await,
        "the standby is not ready while the slot is in use"
    );
    let m = b.metrics().await.expect("standby serves metrics");
    assert_eq!(
        projector_proc::metric_value(&m, "projector_ready"),
        Some(0.0),
        "{m}"
    );

    // The standby retries every 2 s from its start: kill at a random phase
    // of that cycle, or the figure would only measure the alignment.
    let phase = crate::support::seeded_rng("standby_takeover").gen_range(0..2000);
    // Deliberate delay: the phase is the random variable (seeded).
    tokio::time::sleep(Duration::from_millis(phase)).await;
    a.kill9();
    let killed = Instant::now();
    let _ = a.wait().await;
    let took = b.wait_ready(true, Duration::from_secs(30)).await;
    let took = took.map(|_| killed.elapsed());
    eprintln!("STANDBY TAKEOVER: {took:?} after SIGKILL of the active replica (phase {phase} ms)");
    let took = took.expect("standby must take over within 30 s");
    assert!(took < Duration::from_secs(10), "takeover took {took:?}");
    // The traffic flows through B before it stops.
    b.wait_metric(
        "projector_batches_applied_total",
        |n| n >= 1.0,
        Duration::from_secs(60),
    )
    .await;
    let report = stop_traffic(tx, h).await;
    wait_caught_up(&sql, SLOT, Duration::from_secs(120)).await;
    let outcome = assert_exact(&db, &convex, SLOT).await;
    assert_eq!(outcome.events, report.total);
    b.term();
    let _ = tokio::time::timeout(Duration::from_secs(30), b.wait()).await;
    eprintln!("HA test took {:?}", started.elapsed());
}

/// Appends steps `from..=to` of run `r1` (run.created first when `from` is 1).
async fn append_steps(sql: &tokio_postgres::Client, from: i64, to: i64) {
    for seq in from..=to {
        let (ty, payload) = if seq == 1 {
            (
                "run.created",
                json!({"thread_id": "t1", "title": "takeover"}),
            )
        } else {
            ("run.step", json!({"name": format!("step {seq}")}))
        };
        sql.execute(
            "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload) \
             VALUES ('run:r1', $1, $2, 'u1', $3::text::jsonb)",
            &[&seq, &ty, &payload.to_string()],
        )
        .await
        .unwrap();
    }
}

/// The slot leaves replica A (its network to Postgres is cut), replica B
/// writes newer states, then the slot comes back to A: A must fold onto
/// what Convex holds now, not onto what it cached before it lost the slot
/// (it used to overwrite B's steps with its stale run: 6 steps of 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_gets_the_slot_back_forgets_what_it_cached() {
    const SLOT: &str = "takeback";
    let db = pg::shared().await.fresh_db().await;
    let sql = new_slot(&db, SLOT).await;
    let convex = ConvexBackend::start();
    let (proxy, mut a) = projector_proc::spawn_behind_proxy(&db, &convex, SLOT).await;
    assert!(
        a.wait_ready(true, Duration::from_secs(30)).await.is_some(),
        "A ready"
    );
    append_steps(&sql, 1, 5).await;
    wait_caught_up(&sql, SLOT, Duration::from_secs(60)).await;

    // A loses its network; B takes the slot and writes steps 6..10.
    proxy.cut();
    assert!(
        a.wait_ready(false, Duration::from_secs(30)).await.is_some(),
        "A notices the cut"
    );
    let mut b = spawn(&db, &convex, SLOT, &[]);
    assert!(
        b.wait_ready(true, Duration::from_secs(30)).await.is_some(),
        "B takes the slot"
    );
    append_steps(&sql, 6, 10).await;
    wait_caught_up(&sql, SLOT, Duration::from_secs(60)).await;
    b.term();
    let _ = tokio::time::timeout(Duration::from_secs(30), b.wait()).await;

    // A gets its network and the slot back, then folds step 11.
    proxy.restore();
    assert!(
        a.wait_ready(true, Duration::from_secs(30)).await.is_some(),
        "A takes the slot back"
    );
    append_steps(&sql, 11, 11).await;
    wait_caught_up(&sql, SLOT, Duration::from_secs(60)).await;
    let outcome = assert_exact(&db, &convex, SLOT).await;
    assert_eq!(outcome.events, 11);
    a.term();
    let _ = tokio::time::timeout(Duration::from_secs(30), a.wait()).await;
}

/// Replica A's apply is held in flight (the backend answers it 10 s late)
/// while its network to Postgres is cut and replica B takes the slot over:
/// B fences A before it reads anything, so A's late mutation lands nothing
/// (Convex refuses its epoch), A stands by instead of exiting or retrying
/// it, and the read model ends exact. (In-process, with the interleaving
/// that loses a run without fencing: `engine_tests::a_fenced_writer_*`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_cut_off_with_an_apply_in_flight_is_fenced() {
    const SLOT: &str = "fenced";
    let db = pg::shared().await.fresh_db().await;
    let sql = new_slot(&db, SLOT).await;
    let convex = ConvexBackend::start();
    let (proxy, mut a) = projector_proc::spawn_behind_proxy(&db, &convex, SLOT).await;
    assert!(
        a.wait_ready(true, Duration::from_secs(30)).await.is_some(),
        "A ready"
    );
    append_steps(&sql, 1, 5).await;
    wait_caught_up(&sql, SLOT, Duration::from_secs(60)).await;

    // A's next apply is held; once it is in flight, A loses Postgres.
    let fired = convex.stats().await["faults"].as_u64().unwrap_or(0);
    convex
        .fault(json!({"kind": "latency", "ms": 10_000, "path": "projector:apply"}))
        .await;
    append_steps(&sql, 6, 8).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while convex.stats().await["faults"].as_u64().unwrap_or(0) == fired {
        assert!(Instant::now() < deadline, "A never sent its apply");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.cut();
    let mut b = spawn(&db, &convex, SLOT, &[]);
    assert!(
        b.wait_ready(true, Duration::from_secs(30)).await.is_some(),
        "B takes the slot"
    );
    append_steps(&sql, 9, 10).await;
    wait_caught_up(&sql, SLOT, Duration::from_secs(60)).await;

    // A's held apply comes back refused; A is still running, standing by.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut m = String::new();
    while metric_labeled(&m, "projector_convex_errors_total", "code=\"fenced\"") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "A's late apply was not fenced:\n{m}\nA's stderr:\n{}",
            a.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        m = a.metrics().await.unwrap_or_default();
    }
    assert!(a.child.try_wait().unwrap().is_none(), "A exited");
    assert!(!a.ready().await, "a fenced replica is not ready");
    let outcome = assert_exact(&db, &convex, SLOT).await;
    assert_eq!(outcome.events, 10);
    for p in [&mut a, &mut b] {
        p.term();
        let _ = tokio::time::timeout(Duration::from_secs(30), p.wait()).await;
    }
}

/// Two replicas, each reaching Postgres through its own cuttable link,
/// under live traffic (30 runs with many steps each): four times the link
/// of whichever replica streams is cut for a second, so the other takes
/// the slot over (fencing the first, whose applies may be in flight). The
/// read model ends exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_through_repeated_takeovers_end_exact() {
    const SLOT: &str = "takeovers";
    let db = pg::shared().await.fresh_db().await;
    let sql = new_slot(&db, SLOT).await;
    let convex = ConvexBackend::start();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(projector_proc::spawn_behind_proxy(&db, &convex, SLOT).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(replicas[0].1.ready().await || replicas[1].1.ready().await) {
        assert!(Instant::now() < deadline, "no replica became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (stop, load) = traffic(&db, 400.0);
    for takeover in 0..4 {
        // The streaming replica applies traffic (a batch more than when
        // this round began) before its link is cut.
        let mut base = [0.0; 2];
        for (i, (_, p)) in replicas.iter().enumerate() {
            let m = p.metrics().await.unwrap_or_default();
            base[i] = metric_sum(&m, "projector_batches_applied_total");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let active = 'found: loop {
            for (i, (_, p)) in replicas.iter().enumerate() {
                let m = p.metrics().await.unwrap_or_default();
                if p.ready().await && metric_sum(&m, "projector_batches_applied_total") > base[i] {
                    break 'found i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "takeover {takeover}: no ready replica applying traffic within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let other = 1 - active;
        replicas[active].0.cut();
        assert!(
            replicas[other]
                .1
                .wait_ready(true, Duration::from_secs(30))
                .await
                .is_some(),
            "takeover {takeover}: replica {other} never took the slot:\n{}",
            replicas[other].1.stderr()
        );
        // Deliberate: the cut lasts a second past the takeover (the fault
        // under test), then the link comes back.
        tokio::time::sleep(Duration::from_secs(1)).await;
        replicas[active].0.restore();
    }
    let report = stop_traffic(stop, load).await;
    assert!(report.total > 1000, "{report:?}");
    wait_caught_up(&sql, SLOT, Duration::from_secs(120)).await;
    assert_exact(&db, &convex, SLOT).await;
    for (_, p) in &mut replicas {
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "a replica exited:\n{}",
            p.stderr()
        );
        p.term();
        let _ = tokio::time::timeout(Duration::from_secs(30), p.wait()).await;
    }
}

// --------------------------------------------------------------- 5. poison

/// The dead-letter reason code each dead-letter kind of loadgen produces.
fn code_of(kind: MalformedKind) -> &'static str {
    use MalformedKind::*;
    match kind {
        PayloadArray | PayloadString => "payload_not_object",
        RequiredMissing | RequiredNull => "missing_field",
        WrongType | OptionalWrongType => "wrong_type",
        TokensNegative | TokensFractional | TokensTooLarge | TokensString => "invalid_tokens",
        EmptyId | LongId => "invalid_id",
        UnknownType | PrefixMismatch => "ignored",
    }
}

/// A row far over `PROJECTOR_MAX_EVENT_BYTES` (8 MiB against 64 KiB) is
/// read through without being held: it becomes an `event_too_large` dead
/// letter naming its seq and stream and keeping the payload's start, the
/// events around it fold as usual, peak RSS stays far below the row, and
/// `verify` agrees (it dead-letters the same row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_over_the_maximum_size_is_a_dead_letter_never_held() {
    const SLOT: &str = "oversized";
    let db = pg::shared().await.fresh_db().await;
    let sql = new_slot(&db, SLOT).await;
    let convex = ConvexBackend::start();
    let p = spawn(
        &db,
        &convex,
        SLOT,
        &[("PROJECTOR_MAX_EVENT_BYTES", "65536")],
    );
    assert!(p.wait_ready(true, Duration::from_secs(30)).await.is_some());
    append_steps(&sql, 1, 2).await;
    // 8 MiB of title: valid JSON, a valid event type, far over the maximum.
    sql.execute(
        "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload) \
         VALUES ('run:huge', 1, 'run.created', 'u1', \
                 jsonb_build_object('thread_id', 't1', 'title', repeat('x', 8 * 1024 * 1024)))",
        &[],
    )
    .await
    .unwrap();
    append_steps(&sql, 3, 4).await;
    wait_caught_up(&sql, SLOT, Duration::from_secs(60)).await;
    let huge_seq: i64 = sql
        .query_one(
            "SELECT seq FROM runtime.events WHERE stream_id = 'run:huge'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let client = convex.client(Duration::from_secs(30));
    let dls = client
        .page("deadLetters", Some(1), None, 100)
        .await
        .unwrap();
    assert_eq!(dls.docs.len(), 1, "{:?}", dls.docs);
    let dl = &dls.docs[0];
    assert_eq!(dl["eventSeq"].as_f64(), Some(huge_seq as f64), "{dl}");
    assert_eq!(dl["streamId"], "run:huge");
    let reason = dl["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("event_too_large:"), "{reason}");
    assert!(
        dl["payload"]
            .as_str()
            .unwrap_or_default()
            .starts_with("{\"title\": \"xxx"),
        "{dl}"
    );
    let runs = client.page("runs", Some(1), None, 100).await.unwrap();
    assert_eq!(runs.docs.len(), 1, "only r1: {:?}", runs.docs);
    assert_eq!(runs.docs[0]["stepCount"].as_f64(), Some(3.0));
    let rss = p
        .pid()
        .and_then(crate::support::cli::vm_rss_kib)
        .unwrap_or(0);
    assert!(rss < 200 * 1024, "RSS {rss} KiB");
    // The history readers (verify here; rebuild and backfill share the
    // reader) cut the row as the stream did: the same dead letter.
    let outcome = projector::verify::verify_with(
        &db.secret(),
        Some(SLOT),
        &client,
        1,
        Duration::from_secs(60),
        65536,
    )
    .await
    .unwrap();
    let text = projector::verify::compare::render(&outcome.report);
    assert!(outcome.report.is_exact(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_input_is_dead_lettered_and_a_rejected_document_is_isolated() {
    const SLOT: &str = "poison";
    const POISON: &str = "poison-run";
    let started = Instant::now();
    let db = pg::shared().await.fresh_db().await;
    let sql = new_slot(&db, SLOT).await;
    let convex = ConvexBackend::start();
    // Convex refuses any write of the document(s) keyed `poison-run`.
    convex
        .fault(json!({"kind": "reject_key", "key": POISON}))
        .await;
    let p = spawn(&db, &convex, SLOT, &[]);
    // Streaming before traffic: no backfill, so each event is counted once.
    assert!(p.wait_ready(true, Duration::from_secs(30)).await.is_some());
    let s = |seed| LoadSpec {
        events: Some(700),
        seed,
        id_prefix: Some(format!("p{seed}")),
        ..spec(0.3)
    };
    let r1 = generate(&db.secret(), s(1)).await.unwrap();
    // The poison events go in while other traffic flows, so they share
    // batches with good documents.
    let secret = db.secret();
    let spec2 = LoadSpec {
        rate: 300.0,
        ..s(2)
    };
    let h2 = tokio::spawn(async move { generate(&secret, spec2).await.unwrap() });
    let loaded = event_rows(&sql).await;
    crate::support::wait_until(
        "the second load to write rows",
        Duration::from_secs(30),
        || async { event_rows(&sql).await > loaded },
    )
    .await;
    sql.batch_execute(&format!(
        "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload) VALUES
          ('run:{POISON}', 1, 'run.created', 'u-poison', '{{\"thread_id\":\"poison-thread\",\"title\":\"t\"}}'),
          ('run:{POISON}', 2, 'run.started', 'u-poison', '{{}}');
         INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload) VALUES
          ('run:{POISON}', 3, 'run.step', 'u-poison', '{{\"name\":\"s\"}}');"
    ))
    .await
    .unwrap();
    let r2 = h2.await.unwrap();
    wait_caught_up(&sql, SLOT, Duration::from_secs(120)).await;

    let poison_seqs: BTreeSet<String> = sql
        .query(
            "SELECT seq FROM runtime.events WHERE stream_id = $1",
            &[&format!("run:{POISON}")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0).to_string())
        .collect();
    assert_eq!(poison_seqs.len(), 3);

    let (outcome, text) = verify(&db, &convex, SLOT).await;
    eprintln!("{text}");
    assert!(outcome.caught_up, "{text}");
    // Exactly the rejected documents differ: missing, and their events are
    // dead letters instead; everything else (incl. the thread the poison run
    // belongs to) is exact.
    let mut expected: BTreeSet<Finding> = BTreeSet::new();
    for t in ["runs", "timelines"] {
        expected.insert(Finding::Missing {
            table: t.into(),
            key: POISON.into(),
        });
    }
    for s in &poison_seqs {
        expected.insert(Finding::Extra {
            table: "deadLetters".into(),
            key: s.clone(),
        });
    }
    let got: BTreeSet<Finding> = outcome.report.divergent.iter().cloned().collect();
    assert_eq!(got, expected, "{text}");
    assert!(outcome.report.tables["threads"].matching > 0);

    // Every malformed kind: dead-lettered exactly once (keys are seqs, so
    // "once" is by construction; the counts prove none is missing or extra).
    let client = convex.client(Duration::from_secs(30));
    let generation = client.get_active().await.unwrap().unwrap();
    let dls = projector::verify::dump(&client, "deadLetters", generation)
        .await
        .unwrap();
    let mut by_code: BTreeMap<String, u64> = BTreeMap::new();
    for (k, d) in &dls {
        if poison_seqs.contains(k) {
            let reason = d["reason"].as_str().unwrap();
            assert!(reason.starts_with("sink_rejected"), "{reason}");
            continue;
        }
        let reason = d["reason"].as_str().unwrap();
        let code = reason.split(':').next().unwrap().to_string();
        *by_code.entry(code).or_default() += 1;
    }
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    let mut ignored: BTreeMap<MalformedKind, u64> = BTreeMap::new();
    for r in [&r1, &r2] {
        for (k, n) in &r.malformed {
            if k.is_ignored() {
                *ignored.entry(*k).or_default() += n;
            } else {
                *want.entry(code_of(*k).to_string()).or_default() += n;
            }
        }
    }
    for k in MalformedKind::ALL {
        assert!(
            r1.malformed.get(&k).copied().unwrap_or(0) + r2.malformed.get(&k).copied().unwrap_or(0)
                > 0,
            "loadgen wrote no {k:?}"
        );
    }
    assert_eq!(
        by_code, want,
        "dead letters by reason vs loadgen's malformed kinds"
    );
    assert_eq!(
        outcome.report.tables["deadLetters"].matching as u64,
        r1.dead_letters + r2.dead_letters,
        "MemoryFold's dead letters == loadgen's"
    );
    // Ignored kinds are counted, by reason.
    let m = p.metrics().await.expect("metrics");
    let ign = |l| metric_labeled(&m, "projector_events_ignored_total", l);
    assert_eq!(
        ign("reason=\"unknown_type\""),
        ignored
            .get(&MalformedKind::UnknownType)
            .copied()
            .unwrap_or(0) as f64,
        "{m}"
    );
    assert_eq!(
        ign("reason=\"prefix_mismatch\""),
        ignored
            .get(&MalformedKind::PrefixMismatch)
            .copied()
            .unwrap_or(0) as f64,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "projector_events_decoded_total"),
        (r1.total + r2.total + 3) as f64
    );
    eprintln!(
        "poison: {} events, {} dead letters, ignored {:?}, took {:?}",
        r1.total + r2.total + 3,
        dls.len(),
        ignored,
        started.elapsed()
    );
}

// ------------------------------------------------------------- 6. idle

/// The WAL insert position (ahead of `pg_current_wal_lsn` when commits do
/// not flush at once).
async fn insert_lsn(sql: &tokio_postgres::Client) -> u64 {
    let row = sql
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint", &[])
        .await
        .unwrap();
    row.get::<_, i64>(0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slot_advances_with_other_wal_traffic() {
    const SLOT: &str = "idle";
    let db = pg::shared().await.fresh_db().await;
    let sql = new_slot(&db, SLOT).await;
    sql.batch_execute("CREATE TABLE public.other (id bigserial primary key, v text)")
        .await
        .unwrap();
    let sink = projector::sink::NullSink::start_local().await.unwrap();
    let p = Projector::spawn(&db.url, &sink.url(), "null|key", SLOT, &[]);
    assert!(p.wait_ready(true, Duration::from_secs(30)).await.is_some());
    let before = insert_lsn(&sql).await;
    for i in 0..200 {
        sql.execute(
            "INSERT INTO public.other (v) VALUES ($1)",
            &[&format!("row {i}")],
        )
        .await
        .unwrap();
    }
    let after = insert_lsn(&sql).await;
    assert!(after > before);
    let start = Instant::now();
    loop {
        let c = confirmed_lsn(&sql, SLOT).await.unwrap_or(0);
        if c >= after {
            eprintln!(
                "idle slot confirmed {} (>= {} after, {} before the traffic) in {:?}",
                lsn_text(c),
                lsn_text(after),
                lsn_text(before),
                start.elapsed()
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "confirmed_flush_lsn {} stuck below {} (before traffic {})",
            lsn_text(c),
            lsn_text(after),
            lsn_text(before)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = p.metrics().await.unwrap();
    assert_eq!(metric_sum(&m, "projector_events_decoded_total"), 0.0);
}

// ------------------------------------------------------ 7. violation storm

/// A retention DELETE of every row while the service streams: one summary
/// per transaction, not one Convex write (and one task) per row; the rows
/// stay projected (the log is append-only, their deletion is not applied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_delete_is_one_violation_record_not_one_per_row() {
    const SLOT: &str = "storm";
    let db = pg::shared().await.fresh_db().await;
    let sql = new_slot(&db, SLOT).await;
    let convex = ConvexBackend::start();
    sql.batch_execute(
        "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload) \
         SELECT 'worker:w' || (g % 50), g / 50 + 1, \
                CASE WHEN g / 50 = 0 THEN 'worker.requested' ELSE 'worker.heartbeat' END, \
                'u1', CASE WHEN g / 50 = 0 THEN '{\"repo\": \"r\"}'::jsonb ELSE '{}'::jsonb END \
         FROM generate_series(0, 19999) g",
    )
    .await
    .unwrap();
    let mut p = spawn(&db, &convex, SLOT, &[]);
    wait_caught_up(&sql, SLOT, Duration::from_secs(120)).await;
    let before = convex.stats().await["mutations"].as_u64().unwrap_or(0);
    sql.batch_execute("DELETE FROM runtime.events")
        .await
        .unwrap();
    wait_caught_up(&sql, SLOT, Duration::from_secs(120)).await;
    // The summary is written off the loop: give it its moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut m;
    loop {
        m = p.metrics().await.unwrap_or_default();
        if metric_labeled(
            &m,
            "projector_append_only_violations_total",
            "kind=\"delete\"",
        ) >= 20000.0
        {
            break;
        }
        assert!(Instant::now() < deadline, "violations not counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = convex.client(Duration::from_secs(30));
    crate::support::wait_until(
        "the violation summary (delete = 20000) in Convex",
        Duration::from_secs(20),
        || async {
            client
                .get_state(0, "lastViolation")
                .await
                .unwrap()
                .is_some_and(|s| s["delete"].as_f64() == Some(20000.0))
        },
    )
    .await;
    let after = convex.stats().await["mutations"].as_u64().unwrap_or(0);
    eprintln!(
        "VIOLATION STORM: 20000 deleted rows -> {} Convex mutations",
        after - before
    );
    assert!(
        after - before <= 5,
        "a 20k-row DELETE cost {} mutations",
        after - before
    );
    let summary = client
        .get_state(0, "lastViolation")
        .await
        .unwrap()
        .expect("the summary is recorded");
    assert_eq!(summary["delete"].as_f64(), Some(20000.0), "{summary}");
    p.term();
    let _ = tokio::time::timeout(Duration::from_secs(30), p.wait()).await;
}
