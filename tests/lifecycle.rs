//! A deployment's life around its generations: followers that meet a
//! rebuild's switch, a rebuild beside a starting service, one rebuild at a
//! time, and the new generation's slot handed to a service.

use crate::support::convex_backend::ConvexBackend;
use crate::support::pg;
use crate::support::projector_proc::{self, Projector};
use crate::support::tcp_proxy::TcpProxy;

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
    let proxy = TcpProxy::start(db.port).await;
    let via_proxy = db
        .url
        .replace(&format!(":{}/", db.port), &format!(":{}/", proxy.port));
    let mut p = Projector::spawn(
        &via_proxy,
        convex.url(),
        convex.admin_key().expose(),
        SLOT,
        &[],
    );
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
    assert_eq!(runs.docs.len(), 1, "generation 2 holds what followed the switch");
    p.term();
    assert!(p.wait().await.success());
}
