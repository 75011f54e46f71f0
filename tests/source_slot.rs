//! create_slot_with_snapshot: the exported snapshot sees exactly the rows
//! committed before the slot's consistent point, and the slot streams
//! exactly the rows after it (rebuild's no-gap, no-overlap guarantee).
use crate::support::pg;

use std::time::Duration;

use projector::event::Lsn;
use projector::source::event::{EventDecoder, SourceEvent};
use projector::source::slot;
use projector::source::stream::{ReplicationStream, StreamOptions, WalMessage};

const INSERT: &str = "insert into runtime.events (stream_id, stream_seq, event_type, owner_id)
    select 'run:' || $1::text, g, 'run.step', 'u' from generate_series(1, 50) g";

#[tokio::test]
async fn snapshot_and_stream_partition_the_history() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let client = db.client().await;
    client.execute(INSERT, &[&"before"]).await.unwrap();

    let snap = slot::create_slot_with_snapshot(&db.secret(), "rebuild")
        .await
        .unwrap();
    assert!(snap.snapshot_name.len() > 3);
    client.execute(INSERT, &[&"after"]).await.unwrap();

    let mut reader = db.client().await;
    let tx = reader
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .unwrap();
    tx.batch_execute(&format!(
        "SET TRANSACTION SNAPSHOT '{}'",
        snap.snapshot_name
    ))
    .await
    .unwrap();
    let seen: Vec<String> = tx
        .query("select distinct stream_id from runtime.events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.commit().await.unwrap();
    assert_eq!(seen, vec!["run:before"]);
    let consistent = snap.consistent_point;
    snap.release().await;

    let info = slot::slot_info(&client, "rebuild").await.unwrap().unwrap();
    assert_eq!(info.confirmed_flush_lsn, Some(consistent));
    let mut s = ReplicationStream::start(
        &db.secret(),
        "rebuild",
        "projector_events",
        Lsn(0),
        StreamOptions::default(),
    )
    .await
    .unwrap();
    let mut dec = EventDecoder::new();
    let mut got = vec![];
    while got.len() < 50 {
        let m = tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WalMessage::XLogData { data, .. } = m {
            dec.feed(&data).unwrap();
            while let Some(e) = dec.pop() {
                if let SourceEvent::Event(ev) = e {
                    assert!(ev.position.commit_lsn > consistent);
                    got.push(ev.stream_id().to_owned());
                }
            }
        }
    }
    assert!(got.iter().all(|s| s == "run:after"));
    s.finish().await;
}

/// `verify`'s slot is TEMPORARY: whichever way its connection ends (here:
/// dropped without `release`, as when the process is killed), the server
/// drops the slot, so it cannot hold WAL back.
#[tokio::test]
async fn a_temporary_snapshot_slot_goes_with_its_connection() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let client = db.client().await;
    let snap = slot::create_temporary_slot_with_snapshot(&db.secret(), "verify_tmp")
        .await
        .unwrap();
    assert!(snap.snapshot_name.len() > 3);
    assert!(slot::slot_info(&client, "verify_tmp")
        .await
        .unwrap()
        .is_some());
    drop(snap);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while slot::slot_info(&client, "verify_tmp")
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the temporary slot outlived its connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
