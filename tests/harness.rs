//! The harness itself: a private cluster survives a crash and a restart
//! (`kill` returns only once the orphaned backends are gone, so the next
//! postmaster on the data directory starts).

use crate::support::pg;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_starts_again_on_its_data_directory() {
    let cluster = pg::PgCluster::start(pg::PgOptions {
        ssl: false,
        ..Default::default()
    })
    .await;
    let db = cluster.fresh_db().await;
    // The sandbox runs with synchronous_commit = off (a commit returns
    // before its WAL is written, and the WAL writer may be up to 600 ms
    // behind), so this one commit asks for its WAL to be written first:
    // only then is it committed for a crash to keep.
    db.exec("set synchronous_commit = on; insert into runtime.events (stream_id, stream_seq, event_type, owner_id) values ('run:k', 1, 'run.created', 'u')")
        .await;
    // A backend that is busy when the postmaster dies.
    let busy = db.client().await;
    let sleeper = tokio::spawn(async move { busy.batch_execute("select pg_sleep(30)").await });
    crate::support::wait_until(
        "the pg_sleep backend",
        std::time::Duration::from_secs(10),
        || async {
            cluster
                .client("postgres")
                .await
                .query_one(
                    "select count(*) from pg_stat_activity where query like 'select pg_sleep%'",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 1
        },
    )
    .await;
    tokio::task::block_in_place(|| cluster.kill());
    tokio::task::block_in_place(|| cluster.start_again());
    let n: i64 = db
        .client()
        .await
        .query_one("select count(*) from runtime.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the committed row survives the crash");
    assert!(
        sleeper.await.unwrap().is_err(),
        "the busy backend died with the postmaster"
    );
    tokio::task::block_in_place(|| cluster.restart());
    db.exec("select 1").await;
}
