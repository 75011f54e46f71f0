//! `projector rebuild` (the binary) over 20k events of history while
//! traffic continues and a `run` service (the binary) streams the old slot.
//! A checker keeps reading the public client queries as users and asserts
//! the read model is never empty, never shrinks and never freezes; after the
//! switch `verify` is exact, the old slot is gone, the old generation is
//! purged, and the service follows the new generation.

use crate::support::cli;
use crate::support::convex_backend;
use crate::support::history_sql;
use crate::support::pg;
use crate::support::projector_proc;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use projector::loadgen::{generate, LoadSpec};
use serde_json::json;

const SLOT: &str = "projector_live";
const USERS: u64 = 10;

/// What one checker round saw, per user: (runs visible, sum of eventCount).
type Round = (Instant, Vec<(usize, f64)>);

async fn read_round(
    http: &reqwest::Client,
    url: &str,
    tokens: &[String],
) -> Result<Vec<(usize, f64)>, String> {
    let mut out = vec![];
    for token in tokens {
        let runs = cli::user_query(http, url, token, "runs:list", json!({"limit": 200})).await?;
        let runs = runs.as_array().cloned().unwrap_or_default();
        let events: f64 = runs.iter().filter_map(|r| r["eventCount"].as_f64()).sum();
        out.push((runs.len(), events));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_under_traffic_switches_without_clients_noticing() {
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    projector::source::slot::create_slot(&sql, SLOT)
        .await
        .unwrap();
    // Clients hold tokens the backend verifies (RS256, the demo's issuer).
    let web =
        projector::sandbox::web::DemoWeb::start(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
            .await
            .expect("token issuer");
    let convex = convex_backend::ConvexBackend::start_with_env(&web.jwt_env);
    let mut tokens = Vec::new();
    for u in 0..USERS {
        tokens.push(web.token(&format!("u{u}")).await.expect("a token"));
    }
    let env = cli::Env {
        db_url: db.url.clone(),
        convex_url: convex.url().to_string(),
        admin_key: convex.admin_key().expose().to_string(),
        slot: SLOT.into(),
    };
    let shape = history_sql::Shape {
        events: 20_000,
        runs: 200,
        workers: 40,
        users: USERS,
        threads: 30,
    };
    sql.batch_execute(&history_sql::insert_sql("h", shape, 0))
        .await
        .unwrap();
    let mut service = projector_proc::Projector::spawn(
        &db.url,
        convex.url(),
        convex.admin_key().expose(),
        SLOT,
        &[],
    );
    let t0 = Instant::now();
    cli::wait_confirmed(&sql, SLOT, Duration::from_secs(90)).await;
    eprintln!("service projected 20k events in {:?}", t0.elapsed());

    // Live traffic for the whole rebuild.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let traffic = tokio::spawn({
        let url = db.secret();
        async move {
            generate(
                &url,
                LoadSpec {
                    rate: 60.0,
                    writers: 2,
                    runs: 10,
                    workers: 5,
                    users: USERS as usize,
                    batch: 3,
                    stop: Some(stop_rx),
                    ..LoadSpec::default()
                },
            )
            .await
        }
    });

    // The checker: public queries as users u0..u9, as fast as it can.
    let rounds: Arc<Mutex<Vec<Round>>> = Arc::default();
    let (check_stop_tx, mut check_stop) = tokio::sync::watch::channel(false);
    let checker = tokio::spawn({
        let rounds = rounds.clone();
        let url = convex.url().to_string();
        async move {
            let http = reqwest::Client::new();
            loop {
                if *check_stop.borrow() {
                    return;
                }
                match read_round(&http, &url, &tokens).await {
                    Ok(r) => rounds.lock().unwrap().push((Instant::now(), r)),
                    Err(e) => panic!("client query failed: {e}"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = check_stop.changed() => {}
                }
            }
        }
    });
    // Some rounds before the rebuild, to compare what clients saw with.
    let rounds_since = |t: Instant| rounds.lock().unwrap().iter().filter(|r| r.0 > t).count();
    crate::support::wait_until(
        "3 checker rounds before the rebuild",
        Duration::from_secs(60),
        || async { rounds.lock().unwrap().len() >= 3 },
    )
    .await;

    let started = Instant::now();
    let (code, out, err) = env.run(&["rebuild"], Duration::from_secs(150)).await;
    let rebuild_took = started.elapsed();
    assert_eq!(code, 0, "rebuild failed:\n{out}\n{err}");
    assert!(out.contains("generation 2 is active"), "{out}");
    eprintln!("rebuild took {rebuild_took:?}: {}", out.trim());
    let new_slot = format!("{SLOT}_g2");

    // The service follows the switch.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = service.metrics().await.unwrap_or_default();
        if projector_proc::metric_value(&m, "projector_generation_active") == Some(2.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not move to generation 2:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Keep traffic (and the checker) going on the new generation: more
    // events written and checker rounds after the service moved.
    let moved = Instant::now();
    let rows = || async {
        sql.query_one("select count(*) from runtime.events", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let rows_at_move = rows().await;
    crate::support::wait_until(
        "100 more events and 3 checker rounds on generation 2",
        Duration::from_secs(60),
        || async { rows().await >= rows_at_move + 100 && rounds_since(moved) >= 3 },
    )
    .await;
    stop_tx.send(true).unwrap();
    let report = traffic.await.unwrap().unwrap();
    assert!(report.total > 100, "traffic continued: {}", report.total);
    cli::wait_confirmed(&sql, &new_slot, Duration::from_secs(60)).await;
    // One more round, of the final state.
    let confirmed = Instant::now();
    crate::support::wait_until(
        "a checker round after the last events were confirmed",
        Duration::from_secs(30),
        || async { rounds_since(confirmed) >= 1 },
    )
    .await;
    check_stop_tx.send(true).unwrap();
    checker.await.expect("checker saw no anomaly");

    // What clients saw: never empty, never fewer runs, never less progress.
    let rounds = rounds.lock().unwrap().clone();
    // Enough rounds to watch the switch: some before the rebuild started,
    // some after it finished (the local backend serialises every call, so a
    // round waits behind the rebuild's mutations).
    let before = rounds.iter().filter(|r| r.0 < started).count();
    let after = rounds
        .iter()
        .filter(|r| r.0 > started + rebuild_took)
        .count();
    assert!(
        rounds.len() >= 8 && before >= 2 && after >= 2,
        "checker rounds: {} ({before} before the rebuild, {after} after it)",
        rounds.len()
    );
    for r in &rounds {
        for (u, x) in r.1.iter().enumerate() {
            assert!(
                x.0 >= 20,
                "user u{u} saw only {} runs (20 in the history)",
                x.0
            );
        }
    }
    for w in rounds.windows(2) {
        for (u, (a, b)) in w[0].1.iter().zip(&w[1].1).enumerate() {
            assert!(
                b.0 >= a.0,
                "user u{u}: runs visible dropped {} -> {}",
                a.0,
                b.0
            );
            assert!(
                b.1 >= a.1,
                "user u{u}: eventCount sum dropped {} -> {}",
                a.1,
                b.1
            );
        }
    }
    // Never frozen: over every 8 s window, the read model moved.
    let total = |r: &Round| r.1.iter().map(|x| x.1).sum::<f64>();
    for (i, r) in rounds.iter().enumerate() {
        let Some(later) = rounds[i..]
            .iter()
            .find(|s| s.0.duration_since(r.0) >= Duration::from_secs(8))
        else {
            break;
        };
        assert!(
            total(later) > total(r),
            "the read model froze for 8 s (at round {i})"
        );
    }
    // Longest time the read model did not move (traffic is ~60 events/s).
    let mut stall = Duration::ZERO;
    let mut since = rounds[0].0;
    for w in rounds.windows(2) {
        if total(&w[1]) > total(&w[0]) {
            stall = stall.max(w[1].0.duration_since(since));
            since = w[1].0;
        }
    }
    eprintln!("longest stall of the read model seen by clients: {stall:?}");
    eprintln!(
        "checker: {} rounds, runs u0 {} -> {}",
        rounds.len(),
        rounds[0].1[0].0,
        rounds[rounds.len() - 1].1[0].0
    );

    // Exact, on the new slot; the old slot is gone, the old generation purged.
    let client = convex.client(Duration::from_secs(30));
    assert_eq!(client.get_active().await.unwrap(), Some(2));
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
    assert!(outcome.report.tables["runs"].matching >= 200, "{text}");
    assert_eq!(cli::slots(&sql, &db.dbname).await, vec![new_slot.clone()]);
    for table in [
        "runs",
        "timelines",
        "threads",
        "workers",
        "inboxes",
        "deadLetters",
        "projectorState",
    ] {
        let page = client.page(table, Some(1), None, 10).await.unwrap();
        assert!(
            page.docs.is_empty(),
            "generation 1 still has {table} documents"
        );
    }
    let (code, out, _) = env.run(&["verify"], Duration::from_secs(60)).await;
    assert_eq!(code, 0, "verify (binary, follows the active slot):\n{out}");

    service.term();
    let status = tokio::time::timeout(Duration::from_secs(30), service.wait())
        .await
        .expect("service exits after SIGTERM");
    assert!(status.success());
}
