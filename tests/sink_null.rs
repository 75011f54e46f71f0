//! The null sink speaks the Convex wire format well enough for the real
//! client: applies are acknowledged and counted, queries answer empty.

use std::time::Duration;

use projector::config::Secret;
use projector::sink::null::NullStats;
use projector::sink::{ApplyRequest, ConvexClient, DeadLetterWrite, NullSink, SinkError, Write};
use serde_json::json;

fn request(n: usize, dls: usize) -> ApplyRequest {
    ApplyRequest {
        generation: 1,
        epoch: None,
        writes: (0..n)
            .map(|i| Write {
                table: "runs".into(),
                key: format!("r{i}"),
                position: format!("{:016x}:{:016x}", 1, i),
                doc: json!({"runId": format!("r{i}")}),
            })
            .collect(),
        dead_letters: (0..dls)
            .map(|i| DeadLetterWrite {
                key: i.to_string(),
                position: format!("{:016x}:{:016x}", 2, i),
                doc: json!({"eventSeq": i}),
            })
            .collect(),
    }
}

#[tokio::test]
async fn null_sink_acknowledges_apply_and_answers_queries() {
    let sink = NullSink::start_local().await.unwrap();
    let client =
        ConvexClient::new(&sink.url(), Secret::new("any-key"), Duration::from_secs(5)).unwrap();

    let r = client.apply(&request(3, 2)).await.unwrap();
    assert_eq!(
        (
            r.applied,
            r.skipped,
            r.dead_letters_inserted,
            r.dead_letters_skipped
        ),
        (3, 0, 2, 0)
    );
    let body = request(5, 0).encode().unwrap();
    let body_len = body.len();
    let r = client.apply_encoded(body).await.unwrap();
    assert_eq!(r.applied, 5);

    assert!(client
        .load_table(1, "runs", &["r1".into()])
        .await
        .unwrap()
        .is_empty());
    let page = client.page("runs", Some(1), None, 100).await.unwrap();
    assert!(page.docs.is_empty() && page.next_cursor.is_none());
    assert_eq!(client.get_active().await.unwrap(), Some(1));
    assert_eq!(
        client.set_active(2, Some(1)).await.unwrap(),
        (true, Some(2))
    );
    assert_eq!(client.get_active().await.unwrap(), Some(2));
    assert_eq!(client.purge(1, "runs", 100).await.unwrap(), (0, true));
    assert_eq!(client.get_state(1, "k").await.unwrap(), None);
    client.set_state(1, "k", json!({"a": 1})).await.unwrap();

    let s = sink.stats();
    assert_eq!(s.mutations, 5);
    assert_eq!(s.queries, 5);
    assert_eq!(s.writes, 8);
    assert_eq!(s.dead_letters, 2);
    assert!(s.bytes as usize > body_len);

    // Same counters over HTTP.
    let over_http: NullStats = reqwest::get(format!("{}/_stats", sink.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http, s);
    sink.shutdown().await;
}

#[tokio::test]
async fn null_sink_enforces_the_admin_key_when_given_one() {
    let key = Secret::new("right-key-123");
    let sink = NullSink::start("127.0.0.1:0".parse().unwrap(), Some(&key))
        .await
        .unwrap();
    let good = ConvexClient::new(&sink.url(), key.clone(), Duration::from_secs(5)).unwrap();
    assert_eq!(good.apply(&request(1, 0)).await.unwrap().applied, 1);

    let bad = ConvexClient::new(
        &sink.url(),
        Secret::new("wrong-key-456"),
        Duration::from_secs(5),
    )
    .unwrap();
    let e = bad.apply(&request(1, 0)).await.unwrap_err();
    assert!(
        matches!(e, SinkError::Rejected { status: 401, .. }),
        "{e:?}"
    );
    assert!(!e.is_transient());
    assert!(e.is_deployment_error());
    assert!(e.to_string().contains("CONVEX_ADMIN_KEY"), "{e}");
    assert_eq!(sink.stats().writes, 1);
}

#[tokio::test]
async fn hidden_cli_subcommand_serves() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_projector"))
        .args(["null-sink", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("null-sink did not start within 30 s")
        .unwrap()
        .unwrap();
    let url = line.rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    let client = ConvexClient::new(&url, Secret::new("k"), Duration::from_secs(5)).unwrap();
    assert_eq!(client.apply(&request(4, 1)).await.unwrap().applied, 4);
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

/// Throughput of the client against the null sink (run with
/// `cargo test --release --test sink_null -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_apply_throughput() {
    use futures::stream::{self, StreamExt};
    let sink = NullSink::start_local().await.unwrap();
    let client = ConvexClient::new(&sink.url(), Secret::new("k"), Duration::from_secs(30)).unwrap();
    let batches = 200;
    let per_batch = 1000;
    let template = json!({"runId": "r", "ownerId": "u1", "threadId": "t1", "title": "Fix the build",
        "status": "running", "stepCount": 2, "inputTokens": 125, "outputTokens": 30, "eventCount": 7,
        "error": null, "createdAt": 1795420800001u64, "startedAt": 1795420802000u64, "finishedAt": null,
        "lastEventType": "run.step", "lastEventAt": 1795420807000u64, "lastStreamSeq": 7});
    let started = std::time::Instant::now();
    let mut encode = Duration::ZERO;
    let mut bodies = Vec::new();
    for b in 0..batches {
        let req = ApplyRequest {
            generation: 1,
            epoch: None,
            writes: (0..per_batch)
                .map(|i| Write {
                    table: "runs".into(),
                    key: format!("r{b}-{i}"),
                    position: format!("{:016x}:{:016x}", b, i),
                    doc: template.clone(),
                })
                .collect(),
            dead_letters: vec![],
        };
        let t = std::time::Instant::now();
        bodies.push(req.encode().unwrap());
        encode += t.elapsed();
    }
    let bytes: usize = bodies.iter().map(|b| b.len()).sum();
    let t = std::time::Instant::now();
    let results: Vec<_> = stream::iter(bodies)
        .map(|body| client.apply_encoded(body))
        .buffer_unordered(4)
        .collect()
        .await;
    let send = t.elapsed();
    assert!(results
        .iter()
        .all(|r| r.as_ref().is_ok_and(|r| r.applied == per_batch as u64)));
    let writes = (batches * per_batch) as f64;
    eprintln!(
        "{} writes, {:.1} MB: encode {:?} ({:.0} writes/s), send {:?} ({:.0} writes/s, {:.0} MB/s), total {:?}",
        writes,
        bytes as f64 / 1e6,
        encode,
        writes / encode.as_secs_f64(),
        send,
        writes / send.as_secs_f64(),
        bytes as f64 / 1e6 / send.as_secs_f64(),
        started.elapsed()
    );
    assert_eq!(sink.stats().writes, writes as u64);
}
