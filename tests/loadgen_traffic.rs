//! loadgen against a real throwaway Postgres: stream discipline, families,
//! every malformed kind, pacing, stop signal, resuming user streams.

use std::collections::BTreeMap;
use std::time::Duration;

use projector::config::Secret;
use projector::loadgen::{generate, LoadSpec, MalformedKind, Mix};

use crate::support::pg;

async fn client(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

/// Every stream is numbered 1..n without gaps, in `seq` order, and all its
/// object payloads name one writer.
async fn assert_stream_discipline(c: &tokio_postgres::Client) -> i64 {
    let bad = c
        .query(
            "select stream_id, count(*), min(stream_seq), max(stream_seq) \
             from runtime.events group by stream_id \
             having min(stream_seq) <> 1 or max(stream_seq) <> count(*)",
            &[],
        )
        .await
        .unwrap();
    assert!(bad.is_empty(), "streams with gaps: {}", bad.len());
    let disorder: i64 = c
        .query_one(
            "select count(*) from (select stream_seq, \
               row_number() over (partition by stream_id order by seq) as rn \
               from runtime.events) x where rn <> stream_seq",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(disorder, 0, "stream_seq order differs from seq order");
    let multi: i64 = c
        .query_one(
            "select count(*) from (select stream_id from runtime.events \
               where jsonb_typeof(payload) = 'object' \
               group by stream_id \
               having count(distinct substring(payload->>'detail' from '^writer=([0-9]+);')) > 1) x",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(multi, 0, "streams written by more than one writer");
    c.query_one("select count(distinct stream_id) from runtime.events", &[])
        .await
        .unwrap()
        .get(0)
}

async fn counts_by_type(c: &tokio_postgres::Client) -> BTreeMap<String, i64> {
    c.query(
        "select event_type, count(*) from runtime.events group by 1",
        &[],
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_writers_keep_streams_contiguous_and_cover_all_families() {
    let db = pg::shared().await.fresh_db().await;
    let url = db.url.clone();
    let secret = Secret::new(url.clone());
    let spec = LoadSpec {
        events: Some(3000),
        writers: 3,
        runs: 30,
        workers: 12,
        users: 10,
        seed: 7,
        ..Default::default()
    };
    let report = generate(&secret, spec.clone()).await.unwrap();
    assert_eq!(report.total, 3000);
    assert_eq!(report.dead_letters + report.ignored, 0);

    let c = client(&url).await;
    let streams = assert_stream_discipline(&c).await;
    assert_eq!(streams as u64, report.streams);
    let by_type = counts_by_type(&c).await;
    let expected: BTreeMap<String, i64> = report
        .by_type
        .iter()
        .map(|(k, v)| (k.clone(), *v as i64))
        .collect();
    assert_eq!(by_type, expected);
    for t in [
        "run.created",
        "run.started",
        "run.step",
        "run.usage",
        "run.completed",
        "worker.requested",
        "worker.started",
        "worker.heartbeat",
        "worker.stopped",
        "notification.created",
        "notification.read",
    ] {
        assert!(
            by_type.get(t).copied().unwrap_or(0) > 0,
            "no {t} in {by_type:?}"
        );
    }
    // Lifecycles start where they should.
    let wrong_start: i64 = c
        .query_one(
            "select count(*) from runtime.events where stream_seq = 1 and ( \
               (stream_id like 'run:%' and event_type <> 'run.created') or \
               (stream_id like 'worker:%' and event_type <> 'worker.requested'))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong_start, 0);
    // Reads only name notifications created earlier in the same stream.
    let orphan_reads: i64 = c
        .query_one(
            "select count(*) from runtime.events r where r.event_type = 'notification.read' \
             and not exists (select 1 from runtime.events c \
               where c.stream_id = r.stream_id and c.event_type = 'notification.created' \
               and c.stream_seq < r.stream_seq \
               and c.payload->>'notification_id' = r.payload->>'notification_id')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphan_reads, 0);
    // Payloads are about 200 bytes by default.
    let avg: f64 = c
        .query_one(
            "select avg(length(payload::text))::float8 from runtime.events",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!((150.0..400.0).contains(&avg), "average payload {avg} bytes");

    // A second invocation (new ids) continues the user streams.
    let again = generate(
        &secret,
        LoadSpec {
            events: Some(600),
            mix: "notification=1".parse::<Mix>().unwrap(),
            ..spec
        },
    )
    .await
    .unwrap();
    assert_eq!(again.total, 600);
    assert_stream_discipline(&c).await;
    let total: i64 = c
        .query_one("select count(*) from runtime.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 3600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_fraction_covers_every_kind() {
    let db = pg::shared().await.fresh_db().await;
    let url = db.url.clone();
    let report = generate(
        &Secret::new(url.clone()),
        LoadSpec {
            events: Some(1500),
            writers: 3,
            runs: 20,
            workers: 6,
            users: 9,
            malformed_fraction: 0.2,
            seed: 11,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.total, 1500);
    for k in MalformedKind::ALL {
        assert!(
            report.malformed.get(&k).copied().unwrap_or(0) > 0,
            "kind {k} never written: {:?}",
            report.malformed
        );
    }
    let malformed: u64 = report.malformed.values().sum();
    assert_eq!(malformed, report.dead_letters + report.ignored);
    assert!(
        (150..=450).contains(&malformed),
        "malformed {malformed} of 1500 at fraction 0.2"
    );
    assert_eq!(report.valid() + malformed, report.total);

    let c = client(&url).await;
    assert_stream_discipline(&c).await;
    let count = |sql: &'static str| {
        let c = &c;
        async move {
            let n: i64 = c.query_one(sql, &[]).await.unwrap().get(0);
            n as u64
        }
    };
    let m = |k: MalformedKind| report.malformed.get(&k).copied().unwrap_or(0);
    assert_eq!(
        count("select count(*) from runtime.events where jsonb_typeof(payload) = 'array'").await,
        m(MalformedKind::PayloadArray)
    );
    assert_eq!(
        count("select count(*) from runtime.events where jsonb_typeof(payload) = 'string'").await,
        m(MalformedKind::PayloadString)
    );
    assert_eq!(
        count("select count(*) from runtime.events where event_type = 'run.paused'").await,
        m(MalformedKind::UnknownType)
    );
    assert_eq!(
        count(
            "select count(*) from runtime.events where stream_id like 'run:%' \
             and event_type like 'worker.%'"
        )
        .await,
        m(MalformedKind::PrefixMismatch)
    );
    assert_eq!(
        count("select count(*) from runtime.events where length(stream_id) > 204").await,
        m(MalformedKind::LongId)
    );
    assert_eq!(
        count("select count(*) from runtime.events where payload->>'thread_id' = ''").await,
        m(MalformedKind::EmptyId)
    );
    assert_eq!(
        count(
            "select count(*) from runtime.events where jsonb_typeof(payload->'output_tokens') = 'number' \
             and (payload->>'output_tokens')::numeric <> trunc((payload->>'output_tokens')::numeric)"
        )
        .await,
        m(MalformedKind::TokensFractional)
    );
    assert_eq!(
        count(
            "select count(*) from runtime.events where jsonb_typeof(payload->'input_tokens') = 'number' \
             and (payload->>'input_tokens')::numeric > 9007199254740991"
        )
        .await,
        m(MalformedKind::TokensTooLarge)
    );
    assert_eq!(
        count(
            "select count(*) from runtime.events where event_type = 'notification.created' \
             and payload ? 'title' and payload->'title' = 'null'::jsonb"
        )
        .await,
        m(MalformedKind::RequiredNull)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_is_roughly_respected_and_stop_ends_an_open_load() {
    let db = pg::shared().await.fresh_db().await;
    let url = db.url.clone();
    let secret = Secret::new(url.clone());
    let report = generate(
        &secret,
        LoadSpec {
            rate: 200.0,
            duration: Some(Duration::from_millis(1500)),
            writers: 2,
            seed: 3,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // 200/s for 1.5 s = 300 events; loose bounds for a busy machine.
    assert!(
        report.total <= 380,
        "rate exceeded: {} events in 1.5 s at 200/s",
        report.total
    );
    assert!(
        report.total >= 60,
        "far below the rate: {} events",
        report.total
    );
    assert!(report.elapsed < Duration::from_secs(10));

    // No limit but a stop signal.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn({
        let secret = secret.clone();
        async move {
            generate(
                &secret,
                LoadSpec {
                    rate: 500.0,
                    writers: 2,
                    stop: Some(rx),
                    ..Default::default()
                },
            )
            .await
        }
    });
    // Stop once it is writing (on a loaded machine connecting the writers
    // can take longer than any fixed pause).
    let c = client(&url).await;
    let before: i64 = c
        .query_one("select count(*) from runtime.events", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = c
            .query_one("select count(*) from runtime.events", &[])
            .await
            .unwrap()
            .get(0);
        if n > before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the open load never wrote"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.send(true).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("generate did not stop")
        .unwrap()
        .unwrap();
    assert!(stopped.total > 0);
    assert_stream_discipline(&c).await;
    let total: i64 = c
        .query_one("select count(*) from runtime.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total as u64, report.total + stopped.total);
}
