//! A deployment's life around its generations: followers that meet a
//! rebuild's switch, a rebuild beside a starting service, one rebuild at a
//! time, and the new generation's slot handed to a service.

use crate::support::convex_backend::ConvexBackend;
use crate::support::pg;
use crate::support::projector_proc::{self, Projector};

use std::time::{Duration, Instant};

async fn insert_run(sql: &tokio_postgres::Client, run: &str) {
    sql.execute(
        "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload) \
         VALUES ($1, 1, 'run.created', 'u1', '{\"thread_id\":\"t1\",\"title\":\"x\"}'::jsonb)",
        &[&format!("run:{run}")],
    )
    .await
    .unwrap();
}

/// A follower reconnecting while a rebuild switches generations finds its
/// old slot dropped: it must move to the new generation, not exit 3
/// ("slot lost"), which is only for the active generation's own slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_old_slot_was_dropped_by_a_switch_moves_on() {
    const SLOT: &str = "follow";
    let new_slot = format!("{SLOT}_g2");
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    projector::source::slot::create_slot(&sql, SLOT)
        .await
        .unwrap();
    let convex = ConvexBackend::start();
    let client = convex.client(Duration::from_secs(30));
    let (proxy, mut p) = projector_proc::spawn_behind_proxy(&db, &convex, SLOT).await;
    assert!(
        p.wait_ready(true, Duration::from_secs(30)).await.is_some(),
        "streaming generation 1"
    );
    insert_run(&sql, "r1").await;
    projector_proc::wait_caught_up(&sql, SLOT, Duration::from_secs(60)).await;

    // The service loses Postgres and keeps reconnecting; meanwhile a
    // rebuild (played here) switches to generation 2 and drops the old slot.
    proxy.cut();
    assert!(p.wait_ready(false, Duration::from_secs(30)).await.is_some());
    projector::source::slot::create_slot(&sql, &new_slot)
        .await
        .unwrap();
    projector::generation::set_slot(&client, 2, &new_slot)
        .await
        .unwrap();
    let (ok, _) = projector::generation::switch(&client, 2, Some(1))
        .await
        .unwrap();
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match projector::source::slot::drop_slot(&sql, SLOT).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "cannot drop {SLOT}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.restore();

    // It follows generation 2 through the new slot.
    assert!(
        p.wait_ready(true, Duration::from_secs(60)).await.is_some(),
        "the follower never streamed generation 2 (exited: {:?})\n{}",
        p.child.try_wait(),
        p.stderr()
    );
    insert_run(&sql, "r2").await;
    projector_proc::wait_caught_up(&sql, &new_slot, Duration::from_secs(60)).await;
    let runs = client.page("runs", Some(2), None, 100).await.unwrap();
    assert_eq!(
        runs.docs.len(),
        1,
        "generation 2 holds what followed the switch"
    );
    p.term();
    assert!(p.wait().await.success());
}

const HISTORY: crate::support::history_sql::Shape = crate::support::history_sql::Shape {
    events: 20_000,
    runs: 100,
    workers: 20,
    users: 10,
    threads: 15,
};

/// A fresh deployment where `setup --apply` made the slot and history
/// exists: a rebuild starts, then a `run` service, then a second rebuild.
/// The rebuild reserved generation 1, so `run` waits (not ready) instead of
/// streaming the configured slot into it; the second rebuild is refused
/// and names the first; after the switch `run` follows generation 1
/// through the rebuild's slot, the configured slot is dropped rather than
/// left to pin WAL, and the read model is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_reserves_its_generation_and_runs_alone() {
    use crate::support::cli;
    const SLOT: &str = "fresh";
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    sql.batch_execute(&crate::support::history_sql::insert_sql("f", HISTORY, 0))
        .await
        .unwrap();
    projector::source::slot::create_slot(&sql, SLOT)
        .await
        .unwrap();
    let convex = ConvexBackend::start();
    let client = convex.client(Duration::from_secs(30));
    let env = cli::Env {
        db_url: db.url.clone(),
        convex_url: convex.url().to_string(),
        admin_key: convex.admin_key().expose().to_string(),
        slot: SLOT.into(),
    };
    // Small batches: the copy takes long enough to meet the others.
    let mut first = env.command(&["rebuild"]);
    first
        .env("PROJECTOR_BATCH_MAX_EVENTS", "50")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let first = first.spawn().expect("spawn rebuild");
    let first_pid = first.id().expect("pid");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get_state(0, "rebuildLease").await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the rebuild never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut service = Projector::spawn(
        &db.url,
        convex.url(),
        convex.admin_key().expose(),
        SLOT,
        &[],
    );
    let (code, _, err) = env.run(&["rebuild"], Duration::from_secs(60)).await;
    assert_ne!(code, 0, "a second rebuild ran: {err}");
    assert!(
        err.contains("another rebuild is running") && err.contains(&format!("pid {first_pid}")),
        "{err}"
    );
    assert!(
        !service.ready().await,
        "run streamed while the rebuild filled generation 1"
    );
    assert_eq!(
        client.get_active().await.unwrap(),
        None,
        "nothing active before the switch"
    );

    let out = tokio::time::timeout(Duration::from_secs(300), first.wait_with_output())
        .await
        .expect("the rebuild finishes")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(client.get_active().await.unwrap(), Some(1));
    let new_slot = format!("{SLOT}_g1");
    assert!(
        service
            .wait_ready(true, Duration::from_secs(60))
            .await
            .is_some(),
        "run never followed generation 1:\n{}",
        service.stderr()
    );
    insert_run(&sql, "after").await;
    projector_proc::wait_caught_up(&sql, &new_slot, Duration::from_secs(60)).await;
    // Wait for the configured slot's drop (the cleanup runs after the switch).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let slots = cli::slots(&sql, &db.dbname).await;
        if slots == vec![new_slot.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "slots left: {slots:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let outcome = projector_proc::assert_exact_active(&db.secret(), &client, &new_slot).await;
    assert_eq!(outcome.events, HISTORY.events + 1);
    assert_eq!(
        client.get_state(0, "rebuildLease").await.unwrap(),
        None,
        "lease released"
    );
    service.term();
    assert!(service.wait().await.success());
}

/// After the switch a consumer that does not follow the active generation
/// (here `pg_recvlogical`) keeps the old slot past `--release-wait-secs`:
/// the rebuild keeps streaming the new generation meanwhile (it used to
/// stop after the wait, freezing what clients read), then, once the old
/// slot is free, hands the new slot over and drops the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebuild_streams_the_new_generation_until_the_old_slot_is_let_go() {
    use crate::support::cli;
    const SLOT: &str = "held";
    let new_slot = format!("{SLOT}_g2");
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    insert_run(&sql, "before").await;
    projector::source::slot::create_slot(&sql, SLOT)
        .await
        .unwrap();
    let convex = ConvexBackend::start();
    let client = convex.client(Duration::from_secs(30));
    assert!(client.set_active(1, None).await.unwrap().0);
    let mut holder = tokio::process::Command::new(pg::pg_binary("pg_recvlogical"))
        .args(["-d", &db.url, "--slot", SLOT, "--start", "-f", "/dev/null"])
        .args([
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=projector_events",
        ])
        .kill_on_drop(true)
        .spawn()
        .expect("pg_recvlogical");
    let env = cli::Env {
        db_url: db.url.clone(),
        convex_url: convex.url().to_string(),
        admin_key: convex.admin_key().expose().to_string(),
        slot: SLOT.into(),
    };
    let mut rebuild = env.command(&["rebuild", "--release-wait-secs", "1"]);
    rebuild
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !projector::source::slot::slot_info(&sql, SLOT)
        .await
        .unwrap()
        .is_some_and(|i| i.active)
    {
        assert!(
            Instant::now() < deadline,
            "pg_recvlogical never held {SLOT}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rebuild = rebuild.spawn().expect("spawn rebuild");
    // Its stderr, read as it comes: the test waits on the warning below.
    let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = tokio::spawn({
        use tokio::io::AsyncBufReadExt;
        let err = err.clone();
        let mut lines = tokio::io::BufReader::new(rebuild.stderr.take().unwrap()).lines();
        async move {
            while let Ok(Some(l)) = lines.next_line().await {
                let mut e = err.lock().unwrap();
                e.push_str(&l);
                e.push('\n');
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while client.get_active().await.unwrap() != Some(2) {
        assert!(Instant::now() < deadline, "no switch");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the release wait (the rebuild says the old slot is still
    // consumed), events still reach generation 2.
    crate::support::wait_until(
        "the rebuild's \"still consumed after the switch\" warning",
        Duration::from_secs(60),
        || async {
            err.lock()
                .unwrap()
                .contains("still consumed after the switch")
        },
    )
    .await;
    insert_run(&sql, "after").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = client.page("runs", Some(2), None, 100).await.unwrap();
        if runs.docs.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "generation 2 froze after the switch: {} runs",
            runs.docs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The consumer lets go: the rebuild hands over and cleans up.
    holder.kill().await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(120), rebuild.wait_with_output())
        .await
        .expect("the rebuild finishes")
        .unwrap();
    reader.await.unwrap();
    let err = err.lock().unwrap().clone();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("still consumed after the switch"), "{err}");
    assert_eq!(cli::slots(&sql, &db.dbname).await, vec![new_slot.clone()]);
    // No service runs here, so the slot is not "caught up" with the WAL
    // of the shared cluster: the documents are what counts.
    let outcome = projector::verify::verify(
        &db.secret(),
        Some(&new_slot),
        &client,
        2,
        Duration::from_secs(2),
    )
    .await
    .expect("verify runs");
    let text = projector::verify::compare::render(&outcome.report);
    assert!(outcome.report.is_exact(), "{text}");
    assert_eq!(outcome.events, 2);
}

/// `status` and `setup` list every slot named like ours that no generation
/// owns, with the SQL that drops it; after a rebuild `setup --apply` checks
/// the active generation's slot instead of creating the configured one
/// (which nothing would consume).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_setup_list_orphaned_slots() {
    use crate::support::cli;
    const SLOT: &str = "orph";
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    for s in ["orph_g1", "orph_g2", "orphx"] {
        projector::source::slot::create_slot(&sql, s).await.unwrap();
    }
    let convex = ConvexBackend::start();
    let client = convex.client(Duration::from_secs(30));
    projector::generation::set_slot(&client, 2, "orph_g2")
        .await
        .unwrap();
    assert!(client.set_active(2, None).await.unwrap().0);
    let env = cli::Env {
        db_url: db.url.clone(),
        convex_url: convex.url().to_string(),
        admin_key: convex.admin_key().expose().to_string(),
        slot: SLOT.into(),
    };
    let (_, out, err) = env.run(&["status"], Duration::from_secs(60)).await;
    assert!(
        out.contains("orphaned slot orph_g1: no generation owns it")
            && out.contains("SELECT pg_drop_replication_slot('orph_g1');"),
        "{out}{err}"
    );
    assert!(out.contains("slot orph_g2: exists"), "{out}");
    assert!(
        !out.contains("orphaned slot orph_g2") && !out.contains("orphx"),
        "{out}"
    );
    let (_, json_out, _) = env
        .run(&["status", "--json"], Duration::from_secs(60))
        .await;
    let v: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["orphaned_slots"][0]["name"], "orph_g1", "{json_out}");

    let (_, out, err) = env
        .run(&["setup", "--apply"], Duration::from_secs(60))
        .await;
    assert!(out.contains("orphaned slot orph_g1"), "{out}{err}");
    assert_eq!(
        cli::slots(&sql, &db.dbname).await,
        vec!["orph_g1", "orph_g2", "orphx"],
        "setup --apply created the configured slot beside the active one:\n{out}"
    );
}
