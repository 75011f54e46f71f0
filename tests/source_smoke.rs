//! Smoke: the harness starts, a slot streams inserts of runtime.events as
//! positioned events.
#[path = "support/pg.rs"]
mod pg;

use std::time::Duration;

use projector::event::Lsn;
use projector::source::event::{EventDecoder, SourceEvent};
use projector::source::slot;
use projector::source::stream::{ReplicationStream, StreamOptions, WalMessage};

#[tokio::test]
async fn streams_inserts_as_positioned_events() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let client = db.client().await;
    slot::create_slot(&client, "smoke").await.unwrap();
    db.exec(
        "insert into runtime.events (stream_id, stream_seq, event_type, owner_id, payload)
         values ('run:a', 1, 'run.created', 'u1', '{\"thread_id\":\"t\"}'),
                ('run:a', 2, 'run.started', 'u1', '{}');",
    )
    .await;
    let mut s = ReplicationStream::start(
        &db.secret(),
        "smoke",
        "projector_events",
        Lsn(0),
        StreamOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(s.proto_version, 3);
    let mut dec = EventDecoder::new();
    let mut events = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events.len() < 2 {
        let m = tokio::time::timeout_at(deadline, s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WalMessage::XLogData { data, .. } = m {
            dec.feed(&data).unwrap();
            while let Some(e) = dec.pop() {
                if let SourceEvent::Event(ev) = e {
                    events.push(ev);
                }
            }
        }
    }
    assert_eq!(events[0].event_type(), "run.created");
    assert_eq!(events[0].payload(), "{\"thread_id\": \"t\"}");
    assert_eq!(events[1].position.ordinal, 1);
    assert_eq!(events[0].position.commit_lsn, events[1].position.commit_lsn);
    s.finish().await;
}
