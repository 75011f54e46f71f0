//! `projector rebuild` (the binary) SIGKILLed at random points and in every
//! phase, then resumed, while a `run` service streams and traffic continues:
//! it ends exact, with only the active generation's slot left and every
//! older generation purged.

use crate::support::cli;
use crate::support::convex_backend;
use crate::support::history_sql;
use crate::support::pg;
use crate::support::projector_proc;

use std::time::{Duration, Instant};

use projector::loadgen::{generate, LoadSpec};
use rand::Rng;

const SLOT: &str = "projector_kill";

fn kill9(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// When to kill one attempt.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    After(Duration),
    Phase(&'static str),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_killed_anywhere_resumes_to_an_exact_state() {
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
        events: 10_000,
        runs: 100,
        workers: 20,
        users: 8,
        threads: 15,
    };
    sql.batch_execute(&history_sql::insert_sql("k", shape, 0))
        .await
        .unwrap();
    let mut service = projector_proc::Projector::spawn(
        &db.url,
        convex.url(),
        convex.admin_key().expose(),
        SLOT,
        &[],
    );
    cli::wait_confirmed(&sql, SLOT, Duration::from_secs(90)).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let traffic = tokio::spawn({
        let url = db.secret();
        async move {
            generate(
                &url,
                LoadSpec {
                    rate: 40.0,
                    writers: 2,
                    runs: 8,
                    workers: 4,
                    users: 8,
                    batch: 2,
                    malformed_fraction: 0.05,
                    stop: Some(stop_rx),
                    ..LoadSpec::default()
                },
            )
            .await
        }
    });

    let client = convex.client(Duration::from_secs(30));
    let mut rng = crate::support::seeded_rng("rebuild_kill");
    let plan = [
        KillAt::After(Duration::from_millis(rng.gen_range(100..1500))),
        KillAt::After(Duration::from_millis(rng.gen_range(500..3000))),
        KillAt::Phase("catchup"),
        KillAt::After(Duration::from_millis(rng.gen_range(100..1500))),
        KillAt::Phase("catchup"),
        KillAt::Phase("cleanup"),
        KillAt::After(Duration::from_millis(rng.gen_range(100..1000))),
        KillAt::Phase("snapshot"),
    ];
    let mut kills = vec![];
    for at in plan {
        let mut child = env.spawn(&["rebuild", "--release-wait-secs", "30"]);
        let started = Instant::now();
        let killed = loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(status.success(), "rebuild failed on its own: {status:?}");
                break false;
            }
            let now = match at {
                KillAt::After(d) => started.elapsed() >= d,
                KillAt::Phase(p) => client
                    .get_state(0, "rebuild")
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|v| v["phase"] == p),
            };
            if now {
                kill9(&child);
                let _ = child.wait().await;
                break true;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "rebuild attempt hung"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let state = client.get_state(0, "rebuild").await.unwrap();
        eprintln!(
            "{at:?}: {} after {:?}; record {state:?}; active {:?}",
            if killed { "killed" } else { "completed" },
            started.elapsed(),
            client.get_active().await.unwrap()
        );
        // The first kill that left a record (a kill before the rebuild
        // recorded anything leaves nothing to show).
        let first_recorded = !kills
            .iter()
            .any(|k: &(KillAt, bool, Option<serde_json::Value>)| k.1 && k.2.is_some());
        if killed && state.is_some() && first_recorded {
            // `status` shows the interrupted rebuild.
            let (_, out, err) = env
                .run(&["status", "--json"], Duration::from_secs(30))
                .await;
            let s: serde_json::Value =
                serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
            assert_eq!(
                crate::support::as_float64(&s["rebuild"]),
                crate::support::as_float64(&state.clone().unwrap()),
                "{out}"
            );
        }
        kills.push((at, killed, state.map(|v| v["phase"].clone())));
        // Clients are served throughout: some generation is always active and non-empty.
        let active = client
            .get_active()
            .await
            .unwrap()
            .expect("active generation");
        let page = client.page("runs", Some(active), None, 5).await.unwrap();
        assert!(!page.docs.is_empty(), "active generation {active} is empty");
    }
    assert!(
        kills.iter().filter(|k| k.1).count() >= 5,
        "at least 5 kills: {kills:?}"
    );

    // Resume to completion.
    let (code, out, err) = env
        .run(
            &["rebuild", "--release-wait-secs", "30"],
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(code, 0, "final rebuild:\n{out}\n{err}");
    let active = client.get_active().await.unwrap().unwrap();
    assert!(active >= 2);
    let slot = projector::generation::slot_of(&client, active, SLOT)
        .await
        .unwrap();
    assert!(client.get_state(0, "rebuild").await.unwrap().is_none());

    // The service follows; traffic stops; everything is confirmed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = service.metrics().await.unwrap_or_default();
        if projector_proc::metric_value(&m, "projector_generation_active") == Some(active as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "service did not move to {active}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_tx.send(true).unwrap();
    traffic.await.unwrap().unwrap();
    cli::wait_confirmed(&sql, &slot, Duration::from_secs(60)).await;

    let outcome = projector::verify::verify(
        &db.secret(),
        Some(&slot),
        &client,
        active,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let text = projector::verify::compare::render(&outcome.report);
    assert!(outcome.caught_up && outcome.report.is_exact(), "{text}");
    assert!(outcome.report.tables["runs"].matching >= 100, "{text}");
    assert_eq!(
        cli::slots(&sql, &db.dbname).await,
        vec![slot.clone()],
        "leaked slots"
    );
    for g in 1..active + 2 {
        if g == active {
            continue;
        }
        for table in [
            "runs",
            "timelines",
            "threads",
            "workers",
            "inboxes",
            "deadLetters",
            "projectorState",
        ] {
            let page = client.page(table, Some(g), None, 10).await.unwrap();
            assert!(
                page.docs.is_empty(),
                "generation {g} still has {table} documents"
            );
        }
    }
    eprintln!("kills: {kills:?}; final generation {active}, slot {slot}");
    service.term();
    let _ = tokio::time::timeout(Duration::from_secs(30), service.wait()).await;
}
