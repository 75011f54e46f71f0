//! Memory is bounded by configuration, not by the backlog (design.md §4):
//! the real binary drains a backlog of valid events (default 1M, in 10
//! transactions of 100k; `PROJECTOR_MEMORY_EVENTS` = a multiple of 100k
//! overrides) into the null sink with 16 MiB in-flight and 16 MiB cache
//! budgets, while the test samples the child's VmRSS every 100 ms.
//!
//! Slow in debug builds (200k events take ~2 min), so ignored by default:
//! `cargo test --release --test pipeline_memory -- --ignored --nocapture`.
//! Measured (release, 2 shared cores, 2026-11-23): 1M events in 59.6 s
//! (16.8k events/s), peak VmRSS 101.8 MiB. Before written documents counted
//! against the in-flight budget: 383.5 MiB at the same rate.

use crate::support::pg;
use crate::support::projector_proc;

use std::time::{Duration, Instant};

use projector_proc::{confirmed_lsn, lsn_text, Projector};

const SLOT: &str = "memory";
const BUDGET: usize = 16 * 1024 * 1024;
/// Budget-derived bound: two 16 MiB budgets, decode buffers, the runtime
/// and the binary itself.
const MAX_RSS_KIB: u64 = 150 * 1024;

/// One transaction of 100k valid events: 80k run events over 8000 runs,
/// 10k worker events over 1000 workers, 10k notifications over 1000 users;
/// chunk `c` holds stream_seq 10c+1 ..= 10c+10 of every stream.
fn chunk_sql(c: i64) -> String {
    format!(
        r#"BEGIN;
INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload)
SELECT 'run:r' || (j % 8000), k + 1,
  CASE WHEN k = 0 THEN 'run.created' WHEN k = 1 THEN 'run.started' WHEN k = 99 THEN 'run.completed'
       WHEN k % 2 = 0 THEN 'run.step' ELSE 'run.usage' END,
  'u' || (j % 100),
  CASE WHEN k = 0 THEN jsonb_build_object('thread_id', 't' || (j % 1000), 'title', 'run ' || (j % 8000))
       WHEN k = 1 OR k = 99 THEN '{{}}'::jsonb
       WHEN k % 2 = 0 THEN '{{"name": "step"}}'::jsonb
       ELSE '{{"input_tokens": 10, "output_tokens": 5}}'::jsonb END
FROM (SELECT j, {c} * 10 + j / 8000 AS k FROM generate_series(0, 79999) j) s;
INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload)
SELECT 'worker:w' || (j % 1000), k + 1,
  CASE WHEN k = 0 THEN 'worker.requested' WHEN k = 1 THEN 'worker.started' ELSE 'worker.heartbeat' END,
  'u' || (j % 100),
  CASE WHEN k = 0 THEN '{{"repo": "repo"}}'::jsonb WHEN k = 1 THEN '{{"host": "h1"}}'::jsonb ELSE '{{}}'::jsonb END
FROM (SELECT j, {c} * 10 + j / 1000 AS k FROM generate_series(0, 9999) j) s;
INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload)
SELECT 'user:user' || (j % 1000), k + 1, 'notification.created', 'user' || (j % 1000),
  jsonb_build_object('notification_id', 'n' || k, 'title', 'hello', 'body', 'body text')
FROM (SELECT j, {c} * 10 + j / 1000 AS k FROM generate_series(0, 9999) j) s;
COMMIT;"#
    )
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drains 1M events: run in release with --ignored"]
async fn draining_a_large_backlog_stays_within_the_memory_budget() {
    let events: i64 = std::env::var("PROJECTOR_MEMORY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let chunks = (events / 100_000).max(1);
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    projector::source::slot::create_slot(&sql, SLOT)
        .await
        .unwrap();
    let t = Instant::now();
    for c in 0..chunks {
        sql.batch_execute(&chunk_sql(c)).await.unwrap();
    }
    let total: i64 = sql
        .query_one("SELECT count(*) FROM runtime.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, chunks * 100_000);
    eprintln!("inserted {total} events in {:?}", t.elapsed());

    let sink = projector::sink::NullSink::start_local().await.unwrap();
    let budget = BUDGET.to_string();
    let started = Instant::now();
    let mut p = Projector::spawn_args(
        &db.url,
        &sink.url(),
        "null|key",
        SLOT,
        &["--exit-when-caught-up"],
        &[
            ("PROJECTOR_INFLIGHT_BYTES", &budget),
            ("PROJECTOR_CACHE_BYTES", &budget),
        ],
    );
    let pid = p.pid().expect("pid");
    let mut peak = 0u64;
    let mut samples = 0u64;
    let status = loop {
        if let Some(kib) = rss_kib(pid) {
            peak = peak.max(kib);
            samples += 1;
        }
        match tokio::time::timeout(Duration::from_millis(100), p.wait()).await {
            Ok(s) => break s,
            Err(_) => assert!(
                started.elapsed() < Duration::from_secs(1200),
                "backlog not drained in 20 minutes"
            ),
        }
    };
    let secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "exits 0 when caught up: {status:?}");
    let stats = sink.stats();
    let confirmed = confirmed_lsn(&sql, SLOT).await.unwrap_or(0);
    eprintln!(
        "MEMORY: {total} events drained in {secs:.1} s = {:.0} events/s; peak VmRSS {} KiB ({:.1} MiB) over {samples} samples; \
         budgets inflight {} MiB, cache {} MiB; null sink: {} mutations, {} writes; confirmed {}",
        total as f64 / secs,
        peak,
        peak as f64 / 1024.0,
        BUDGET >> 20,
        BUDGET >> 20,
        stats.mutations,
        stats.writes,
        lsn_text(confirmed),
    );
    assert!(stats.writes > 0);
    assert!(samples > 0);
    assert!(
        peak < MAX_RSS_KIB,
        "peak RSS {peak} KiB over the bound {MAX_RSS_KIB} KiB"
    );
}
