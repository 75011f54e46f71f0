//! `projector rebuild` (the binary) over 1M events of history against the
//! Convex-wire null sink: memory stays bounded (VmRSS of the child sampled
//! throughout), progress is logged when stderr is not a terminal, and the
//! throughput and duration are reported.
//!
//! Slow in debug builds: `cargo test --release --test rebuild_scale -- --ignored --nocapture`
//! (or a debug test with `PROJECTOR_BIN=target/release/projector`).
//! `PROJECTOR_SCALE_EVENTS` overrides the event count.

use crate::support::cli;
use crate::support::history_sql;
use crate::support::pg;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

const SLOT: &str = "projector_scale";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "1M events: run in release (see the module doc)"]
async fn rebuild_of_a_million_events_runs_in_bounded_memory() {
    let events: u64 = std::env::var("PROJECTOR_SCALE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    let t = Instant::now();
    sql.batch_execute(&history_sql::insert_sql(
        "m",
        history_sql::Shape {
            events,
            runs: 2000,
            workers: 500,
            users: 100,
            threads: 300,
        },
        0,
    ))
    .await
    .unwrap();
    eprintln!("inserted {events} events in {:?}", t.elapsed());
    // The null sink as its own process of the same build (a debug test
    // binary would be the bottleneck).
    let port = cli::free_port();
    let sink_url = format!("http://127.0.0.1:{port}");
    let env = cli::Env {
        db_url: db.url.clone(),
        convex_url: sink_url.clone(),
        admin_key: "null-sink-key".into(),
        slot: SLOT.into(),
    };
    let mut sink = env.spawn(&["null-sink", "--port", &port.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "null sink did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut cmd = env.command(&["rebuild"]);
    cmd.env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn rebuild");
    let pid = child.id().unwrap();
    let progress: Arc<Mutex<Vec<String>>> = Arc::default();
    let stderr = child.stderr.take().unwrap();
    let reader = tokio::spawn({
        let progress = progress.clone();
        async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if l.contains("rebuild progress") {
                    progress.lock().unwrap().push(l);
                }
            }
        }
    });
    let mut samples = vec![];
    let status = loop {
        if let Some(kib) = cli::vm_rss_kib(pid) {
            samples.push((started.elapsed(), kib));
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "rebuild too slow"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed = started.elapsed();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stdout.take().unwrap(), &mut out)
        .await
        .unwrap();
    reader.await.unwrap();
    assert!(status.success(), "rebuild failed: {status:?}\n{out}");
    assert!(
        out.contains(&format!("({events} events of history")),
        "{out}"
    );

    let max_kib = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let half = samples.len() / 2;
    let max_first_half = samples[..half].iter().map(|s| s.1).max().unwrap_or(0);
    let stats: serde_json::Value = reqwest::get(format!("{sink_url}/_stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = sink.kill().await;
    let progress = progress.lock().unwrap().clone();
    eprintln!(
        "rebuild of {events} events: {:.1} s wall, {:.0} events/s overall; VmRSS max {} MiB \
         (first half {} MiB, {} samples); null sink: {} mutations, {} writes, {} MiB; {} progress lines\n{}",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        max_kib / 1024,
        max_first_half / 1024,
        samples.len(),
        stats["mutations"],
        stats["writes"],
        stats["bytes"].as_u64().unwrap_or(0) / (1 << 20),
        progress.len(),
        out.trim()
    );
    let curve: Vec<String> = (1..=10)
        .filter_map(|k| samples.get(samples.len() * k / 10 - 1))
        .map(|(t, kib)| format!("{:.0}s:{}MiB", t.as_secs_f64(), kib / 1024))
        .collect();
    eprintln!("VmRSS over time: {}", curve.join(" "));
    for l in progress.iter().take(3) {
        eprintln!("  {l}");
    }
    assert!(stats["writes"].as_u64().unwrap_or(0) > 0, "{stats}");
    // Bounded: far below what holding the history would take (~300 B/event).
    assert!(max_kib < 400 * 1024, "VmRSS reached {max_kib} KiB");
    if elapsed > Duration::from_secs(12) {
        assert!(!progress.is_empty(), "no progress lines in {elapsed:?}");
    }
    // The null sink reports generation 1 active at first, so this is 2.
    let slot = out
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(slot.starts_with(&format!("{SLOT}_g")), "{out}");
    assert_eq!(
        cli::slots(&sql, &db.dbname).await,
        vec![slot],
        "only the new slot remains"
    );
}
