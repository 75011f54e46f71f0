//! Smoke: the harness starts, a slot streams inserts of runtime.events as
//! positioned events.
use crate::support::pg;

use std::time::Duration;

use projector::event::Lsn;
use projector::source::event::{EventDecoder, SourceEvent};
use projector::source::slot;
use projector::source::stream::{ReplicationStream, StreamOptions, WalMessage};

/// The first `n` events `s` streams; decoded from the shared `Bytes` (the
/// run path) or copied (`feed`).
async fn next_events(
    s: &mut ReplicationStream,
    n: usize,
    shared: bool,
) -> Vec<projector::event::RuntimeEvent> {
    let mut dec = EventDecoder::new();
    let mut events = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events.len() < n {
        let m = tokio::time::timeout_at(deadline, s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WalMessage::XLogData { data, .. } = m {
            if shared {
                dec.feed_bytes(&data).unwrap();
            } else {
                dec.feed(&data).unwrap();
            }
            while let Some(e) = dec.pop() {
                if let SourceEvent::Event(ev) = e {
                    events.push(ev);
                }
            }
        }
    }
    events
}

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
    // The newest pgoutput protocol of each server: 2 (14), 3 (15), 4 (16+).
    let expected_proto = match pg::server_major() {
        14 => 2,
        15 => 3,
        _ => 4,
    };
    assert_eq!(s.proto_version, expected_proto);
    // 127.0.0.1: the small window that makes the walsender's writes merge
    // (the kernel reports twice what was asked for).
    let granted = s.recv_buffer().expect("loopback gets a fixed window");
    assert!(
        (64 * 1024..=256 * 1024).contains(&granted),
        "granted {granted}"
    );
    let events = next_events(&mut s, 2, false).await;
    assert_eq!(events[0].event_type(), "run.created");
    assert_eq!(events[0].payload(), "{\"thread_id\": \"t\"}");
    assert_eq!(events[1].position.ordinal, 1);
    assert_eq!(events[0].position.commit_lsn, events[1].position.commit_lsn);
    s.finish().await;
}

/// A socket-directory host (the Cloud SQL Auth Proxy's `--unix-socket`, a
/// server on the same host) serves both connections: ordinary SQL through
/// tokio-postgres and the replication stream through our own client.
#[tokio::test]
async fn streams_over_a_unix_socket() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let url = projector::config::Secret::new(format!(
        "postgres://postgres@/{}?host={}&port={}&sslmode=require",
        db.dbname,
        cluster.dir.display(),
        cluster.port
    ));
    let client = projector::source::sql::connect(&url)
        .await
        .expect("SQL over the Unix socket");
    slot::create_slot(&client, "unix_smoke").await.unwrap();
    db.exec(
        "insert into runtime.events (stream_id, stream_seq, event_type, owner_id, payload)
         values ('run:u', 1, 'run.created', 'u1', '{}');",
    )
    .await;
    let mut s = ReplicationStream::start(
        &url,
        "unix_smoke",
        "projector_events",
        Lsn(0),
        StreamOptions::default(),
    )
    .await
    .expect("replication over the Unix socket");
    assert_eq!(s.recv_buffer(), None, "no TCP window on a Unix socket");
    let ev = next_events(&mut s, 1, true).await.remove(0);
    assert_eq!(ev.stream_id(), "run:u");
    s.finish().await;

    let missing = projector::config::Secret::new(format!(
        "postgres://postgres@/{}?host=/nonexistent-dir&port={}",
        db.dbname, cluster.port
    ));
    let err = ReplicationStream::start(
        &missing,
        "unix_smoke",
        "projector_events",
        Lsn(0),
        StreamOptions::default(),
    )
    .await
    .expect_err("no socket there");
    assert!(
        err.to_string()
            .contains(&format!("/nonexistent-dir/.s.PGSQL.{}", cluster.port)),
        "{err}"
    );
}

/// An event larger than the 256 KiB read chunk arrives whole: the frame
/// outgrows the chunk and the reader must make room for all of it.
#[tokio::test]
async fn streams_an_event_larger_than_a_read_chunk() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let client = db.client().await;
    slot::create_slot(&client, "big_smoke").await.unwrap();
    db.exec(
        "insert into runtime.events (stream_id, stream_seq, event_type, owner_id, payload)
         select 'run:small', g, 'run.step', 'u1', '{}' from generate_series(1, 50) g;
         insert into runtime.events (stream_id, stream_seq, event_type, owner_id, payload)
         values ('run:big', 1, 'run.step', 'u1', jsonb_build_object('detail', repeat('x', 600000)));
         insert into runtime.events (stream_id, stream_seq, event_type, owner_id, payload)
         values ('run:after', 1, 'run.step', 'u1', '{}');",
    )
    .await;
    let mut s = ReplicationStream::start(
        &db.secret(),
        "big_smoke",
        "projector_events",
        Lsn(0),
        StreamOptions::default(),
    )
    .await
    .unwrap();
    let events = next_events(&mut s, 52, true).await;
    assert_eq!(events[50].stream_id(), "run:big");
    assert_eq!(
        events[50].payload().len(),
        r#"{"detail": ""}"#.len() + 600_000
    );
    assert!(events[50].payload().ends_with("xxx\"}"));
    assert_eq!(events[51].stream_id(), "run:after");
    assert_eq!(events[0].stream_id(), "run:small");
    s.finish().await;
}

/// Only replication connections get the small loopback window: a plain
/// connection (and any over a network) keeps the kernel's auto-tuning.
#[tokio::test]
async fn only_replication_on_loopback_gets_a_fixed_window() {
    use projector::source::conn::PgConn;
    use projector::source::conninfo::ConnInfo;
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let info = ConnInfo::parse(db.secret().expose()).unwrap();
    let plain = PgConn::connect(&info, false).await.unwrap();
    assert_eq!(plain.recv_buffer, None);
    let replication = PgConn::connect(&info, true).await.unwrap();
    assert!(replication.recv_buffer.is_some());
}
