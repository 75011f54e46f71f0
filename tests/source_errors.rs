//! Slot in use, slot missing, publication missing, wal_level=replica and an
//! invalidated slot: each ends in one clear line naming the fix.
use crate::support::pg;

use std::time::Duration;

use projector::event::Lsn;
use projector::source::slot;
use projector::source::stream::{ReplicationStream, StreamOptions};
use projector::source::SourceError;

fn one_line(e: &SourceError) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "{s}");
    s
}

#[tokio::test]
async fn slot_missing_and_in_use() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let e = ReplicationStream::start(
        &db.secret(),
        "nope",
        "projector_events",
        Lsn(0),
        StreamOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, SourceError::SlotMissing { .. }), "{e:?}");
    assert_eq!(
        one_line(&e),
        "replication slot \"nope\" does not exist: before the first run create it with `projector setup --apply`; if it streamed before (a failover to a server without it, a dropped slot) run `projector rebuild`, since a new slot starts after what happened meanwhile"
    );
    assert!(!e.is_transient());

    let client = db.client().await;
    slot::create_slot(&client, "busy").await.unwrap();
    let first = ReplicationStream::start(
        &db.secret(),
        "busy",
        "projector_events",
        Lsn(0),
        StreamOptions::default(),
    )
    .await
    .unwrap();
    let e = ReplicationStream::start(
        &db.secret(),
        "busy",
        "projector_events",
        Lsn(0),
        StreamOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, SourceError::SlotInUse { .. }), "{e:?}");
    let line = one_line(&e);
    assert!(
        line.starts_with("replication slot \"busy\" is in use by another consumer"),
        "{line}"
    );
    assert!(e.is_transient(), "a standby replica retries");
    let info = slot::slot_info(&client, "busy").await.unwrap().unwrap();
    assert!(info.active && info.active_pid.is_some());
    assert!(matches!(
        slot::drop_slot(&client, "busy").await,
        Err(SourceError::SlotInUse { .. })
    ));
    first.finish().await;
    // After a clean finish the slot is free again.
    let mut ok = false;
    for _ in 0..50 {
        if !slot::slot_info(&client, "busy")
            .await
            .unwrap()
            .unwrap()
            .active
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "slot released after finish()");
    assert!(slot::drop_slot(&client, "busy").await.unwrap());
    assert!(!slot::drop_slot(&client, "busy").await.unwrap());
}

#[tokio::test]
async fn publication_missing() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let client = db.client().await;
    slot::create_slot(&client, "p").await.unwrap();
    db.exec("insert into runtime.events (stream_id, stream_seq, event_type, owner_id) values ('run:a', 1, 'run.started', 'u')").await;
    let res = async {
        let mut s = ReplicationStream::start(
            &db.secret(),
            "p",
            "no_such_pub",
            Lsn(0),
            StreamOptions::default(),
        )
        .await?;
        loop {
            s.next().await?;
        }
    };
    let r: Result<(), SourceError> = tokio::time::timeout(Duration::from_secs(20), res)
        .await
        .unwrap();
    let e = r.unwrap_err();
    assert!(matches!(e, SourceError::PublicationMissing { .. }), "{e:?}");
    assert_eq!(
        one_line(&e),
        "publication \"no_such_pub\" does not exist in this database: run `projector setup --apply` or `CREATE PUBLICATION no_such_pub FOR TABLE runtime.events;`"
    );
}

#[tokio::test]
async fn wal_level_replica_names_the_fix() {
    let cluster = pg::PgCluster::start(pg::PgOptions {
        wal_level: "replica",
        ssl: false,
        ..Default::default()
    })
    .await;
    let db = cluster.fresh_db().await;
    let client = db.client().await;
    let e = slot::create_slot(&client, "s").await.unwrap_err();
    assert!(matches!(e, SourceError::WalLevel { .. }), "{e:?}");
    assert!(
        one_line(&e).contains("ALTER SYSTEM SET wal_level = logical;` and restart Postgres"),
        "{e}"
    );
    let e = slot::create_slot_with_snapshot(&db.secret(), "s")
        .await
        .unwrap_err();
    assert!(matches!(e, SourceError::WalLevel { .. }), "{e:?}");
}

#[tokio::test]
async fn invalidated_slot_names_rebuild() {
    let cluster = pg::PgCluster::start(pg::PgOptions {
        ssl: false,
        max_slot_wal_keep_size: Some("1MB".into()),
        extra_conf: vec![
            "min_wal_size = '32MB'".into(),
            "max_wal_size = '32MB'".into(),
        ],
        ..Default::default()
    })
    .await;
    let db = cluster.fresh_db().await;
    let client = db.client().await;
    slot::create_slot(&client, "lost").await.unwrap();
    for _ in 0..6 {
        db.exec("create table if not exists filler(x text); insert into filler select repeat('x', 1000) from generate_series(1, 4000); select pg_switch_wal();").await;
    }
    db.exec("checkpoint").await;
    let info = slot::slot_info(&client, "lost").await.unwrap().unwrap();
    assert!(info.is_lost(), "{info:?}");
    let e = ReplicationStream::start(
        &db.secret(),
        "lost",
        "projector_events",
        Lsn(0),
        StreamOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, SourceError::SlotInvalidated { .. }), "{e:?}");
    assert!(one_line(&e).contains("run `projector rebuild`"), "{e}");
    assert!(!e.is_transient());
}
