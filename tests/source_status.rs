//! Standby status updates move confirmed_flush_lsn to exactly what we report
//! and never past it; answering reply-requested keepalives keeps an idle
//! connection alive past wal_sender_timeout (5 s), not answering does not.
use crate::support::pg;

use std::time::Duration;

use projector::event::Lsn;
use projector::source::event::{EventDecoder, SourceEvent};
use projector::source::slot;
use projector::source::stream::{ReplicationStream, StreamOptions, WalMessage};

async fn confirmed(client: &tokio_postgres::Client, s: &str) -> Lsn {
    slot::slot_info(client, s)
        .await
        .unwrap()
        .unwrap()
        .confirmed_flush_lsn
        .unwrap()
}

#[tokio::test]
async fn confirmed_flush_is_exactly_what_we_report() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let client = db.client().await;
    let start = slot::create_slot(&client, "st").await.unwrap();
    for i in 1..=2 {
        db.exec(&format!(
            "insert into runtime.events (stream_id, stream_seq, event_type, owner_id) values ('run:a', {i}, 'run.step', 'u')"
        ))
        .await;
    }
    let mut s = ReplicationStream::start(
        &db.secret(),
        "st",
        "projector_events",
        Lsn(0),
        StreamOptions::default(),
    )
    .await
    .unwrap();
    let mut dec = EventDecoder::new();
    let mut ends = vec![];
    while ends.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WalMessage::XLogData { data, .. } = m {
            dec.feed(&data).unwrap();
            while let Some(e) = dec.pop() {
                if let SourceEvent::Commit { end_lsn, .. } = e {
                    ends.push(end_lsn);
                }
            }
        }
    }
    let (a, b) = (ends[0], ends[1]);
    assert!(start < a && a < b);
    s.send_status(b, a, a, false).await.unwrap();
    let mut got = Lsn(0);
    for _ in 0..100 {
        got = confirmed(&client, "st").await;
        if got == a {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, a, "confirmed_flush_lsn = the flush we reported");
    // Keep the stream busy for a while: it must not move past `a`.
    let idle = async {
        loop {
            if let Ok(Some(WalMessage::Keepalive {
                reply_requested: true,
                ..
            })) = s.next().await
            {
                s.send_status(b, a, a, false).await.unwrap();
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), idle).await;
    assert_eq!(
        confirmed(&client, "st").await,
        a,
        "never past what we report"
    );
    s.send_status(b, b, b, false).await.unwrap();
    for _ in 0..100 {
        got = confirmed(&client, "st").await;
        if got == b {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, b);
    s.finish().await;
    // Restarting resumes at confirmed_flush_lsn: nothing is replayed.
    let mut s = ReplicationStream::start(
        &db.secret(),
        "st",
        "projector_events",
        Lsn(0),
        StreamOptions::default(),
    )
    .await
    .unwrap();
    db.exec("insert into runtime.events (stream_id, stream_seq, event_type, owner_id) values ('run:a', 3, 'run.step', 'u')").await;
    let mut dec = EventDecoder::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WalMessage::XLogData { data, .. } = m {
            dec.feed(&data).unwrap();
            if let Some(SourceEvent::Event(ev)) =
                std::iter::from_fn(|| dec.pop()).find(|e| matches!(e, SourceEvent::Event(_)))
            {
                assert_eq!(ev.stream_seq, 3);
                assert!(ev.position.commit_lsn > b);
                break;
            }
        }
    }
    s.finish().await;
}

#[tokio::test]
async fn answered_keepalives_outlive_wal_sender_timeout() {
    // Its own cluster: a 5 s wal_sender_timeout would drop the streams of
    // busy tests on the shared one.
    let cluster = pg::PgCluster::start(pg::PgOptions {
        extra_conf: vec!["wal_sender_timeout = '5s'".into()],
        ..pg::PgOptions::default()
    })
    .await;
    let db = cluster.fresh_db().await;
    let client = db.client().await;
    slot::create_slot(&client, "answer").await.unwrap();
    slot::create_slot(&client, "silent").await.unwrap();
    let url = db.secret();
    let answering = async {
        let mut s = ReplicationStream::start(
            &url,
            "answer",
            "projector_events",
            Lsn(0),
            StreamOptions::default(),
        )
        .await
        .unwrap();
        let mut flush = Lsn(0);
        let mut replies = 0;
        let until = tokio::time::Instant::now() + Duration::from_secs(12);
        while let Ok(m) = tokio::time::timeout_at(until, s.next()).await {
            if let WalMessage::Keepalive {
                reply_requested: true,
                wal_end,
                ..
            } = m.unwrap().unwrap()
            {
                flush = flush.max(wal_end);
                s.send_status(flush, flush, flush, false).await.unwrap();
                replies += 1;
            }
        }
        (s, replies)
    };
    let silent = async {
        let mut s = ReplicationStream::start(
            &url,
            "silent",
            "projector_events",
            Lsn(0),
            StreamOptions::default(),
        )
        .await
        .unwrap();
        let t0 = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(14), async {
            loop {
                if let Err(e) = s.next().await {
                    return e;
                }
            }
        })
        .await;
        (r, t0.elapsed())
    };
    let ((mut s, replies), (silent_res, silent_after)) = tokio::join!(answering, silent);
    assert!(replies >= 1, "the server asked for replies");
    let e = silent_res.expect("a consumer that never answers is dropped by wal_sender_timeout");
    assert!(e.is_transient(), "{e:?}");
    assert!(silent_after >= Duration::from_secs(4), "{silent_after:?}");
    // The answering stream is still alive and delivers new data.
    db.exec("insert into runtime.events (stream_id, stream_seq, event_type, owner_id) values ('run:k', 1, 'run.step', 'u')").await;
    let mut dec = EventDecoder::new();
    let ev = loop {
        let m = tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WalMessage::XLogData { data, .. } = m {
            dec.feed(&data).unwrap();
            if let Some(SourceEvent::Event(ev)) =
                std::iter::from_fn(|| dec.pop()).find(|e| matches!(e, SourceEvent::Event(_)))
            {
                break ev;
            }
        }
    };
    assert_eq!(ev.stream_id(), "run:k");
    s.finish().await;
}

/// `next()` under constant cancellation (dropped whenever it is not ready
/// within one scheduler turn) loses and corrupts nothing: partial frames
/// stay in the buffer.
#[tokio::test]
async fn next_is_cancel_safe() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let client = db.client().await;
    let slot_name = db.slot_name();
    slot::create_slot(&client, &slot_name).await.unwrap();
    db.exec(
        "insert into runtime.events (stream_id, stream_seq, event_type, owner_id, payload)
           select 'run:c', g, 'run.step', 'u', jsonb_build_object('name', repeat('n', 300))
             from generate_series(1, 20000) g",
    )
    .await;
    let mut s = ReplicationStream::start(
        &db.secret(),
        &slot_name,
        "projector_events",
        Lsn(0),
        StreamOptions::default(),
    )
    .await
    .unwrap();
    let mut dec = EventDecoder::new();
    let (mut n, mut cancelled) = (0i64, 0u64);
    let t0 = std::time::Instant::now();
    while n < 20000 {
        assert!(t0.elapsed() < Duration::from_secs(40), "stalled at {n}");
        let r = tokio::select! {
            biased;
            m = s.next() => Some(m),
            _ = tokio::task::yield_now() => None,
        };
        match r {
            None => cancelled += 1,
            Some(m) => {
                if let WalMessage::XLogData { data, .. } = m.unwrap().unwrap() {
                    dec.feed(&data).unwrap();
                    while let Some(e) = dec.pop() {
                        if let SourceEvent::Event(ev) = e {
                            n += 1;
                            assert_eq!(ev.stream_seq, n);
                        }
                    }
                }
            }
        }
    }
    // Caught up: now every read waits, so each of these is cancelled
    // mid-wait; the rows written next must still come through in order.
    for _ in 0..20 {
        tokio::select! {
            biased;
            m = s.next() => {
                if let WalMessage::XLogData { data, .. } = m.unwrap().unwrap() {
                    dec.feed(&data).unwrap();
                    while dec.pop().is_some() {}
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(5)) => cancelled += 1,
        }
    }
    db.exec(
        "insert into runtime.events (stream_id, stream_seq, event_type, owner_id) \
         select 'run:c', g, 'run.step', 'u' from generate_series(20001, 20100) g",
    )
    .await;
    while n < 20100 {
        assert!(t0.elapsed() < Duration::from_secs(60), "stalled at {n}");
        if let WalMessage::XLogData { data, .. } = s.next().await.unwrap().unwrap() {
            dec.feed(&data).unwrap();
            while let Some(e) = dec.pop() {
                if let SourceEvent::Event(ev) = e {
                    n += 1;
                    assert_eq!(ev.stream_seq, n);
                }
            }
        }
    }
    assert!(cancelled > 0, "the test must actually cancel reads");
    eprintln!(
        "20000 rows in {:?} with {cancelled} cancelled next() calls",
        t0.elapsed()
    );
    s.finish().await;
}
