//! The Convex client against the project's real functions (local backend:
//! `convex/` on convex-test behind the HTTP wire format): the guarded
//! upsert, replay, hydration, paging, generation control, every injected
//! fault, and definite errors.
//!
//! Needs `npm ci` in the repository root.

use crate::support::convex_backend;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use convex_backend::ConvexBackend;
use projector::event::{Lsn, Position};
use projector::sink::{
    with_retry, ApplyRequest, ApplyResult, ConvexClient, DeadLetterWrite, RetryPolicy, SinkError,
    Write,
};
use serde_json::{json, Value};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/projections.json"
);

/// A complete `runs` document from the worked examples.
fn run_template() -> Value {
    let text = std::fs::read_to_string(VECTORS).expect("read the projection vectors");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "run_lifecycle")
        .map(|c| c["expected"]["runs"]["r1"].clone())
        .expect("run_lifecycle case")
}

fn run_doc(template: &Value, key: &str, event_count: u64) -> Value {
    let mut d = template.clone();
    d["runId"] = json!(key);
    d["eventCount"] = json!(event_count);
    d["lastStreamSeq"] = json!(event_count);
    d
}

fn pos(lsn: u64, ordinal: u64) -> String {
    Position::new(Lsn(lsn), ordinal).encode()
}

fn write(template: &Value, key: &str, p: String, event_count: u64) -> Write {
    Write {
        table: "runs".into(),
        key: key.into(),
        position: p,
        doc: run_doc(template, key, event_count),
    }
}

fn dead_letter(seq: u64, p: String) -> DeadLetterWrite {
    DeadLetterWrite {
        key: seq.to_string(),
        position: p,
        doc: json!({
            "eventSeq": seq,
            "streamId": "run:x",
            "streamSeq": 1,
            "eventType": "run.created",
            "reason": "invalid_payload: test",
            "payload": "{}"
        }),
    }
}

fn fast_forever() -> RetryPolicy {
    RetryPolicy::forever().with_delays(Duration::from_millis(20), Duration::from_millis(200))
}

/// `{key: (position, eventCount)}` of the loaded runs.
async fn loaded(
    c: &ConvexClient,
    generation: u64,
    keys: &[&str],
) -> BTreeMap<String, (String, u64)> {
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    c.load_table(generation, "runs", &keys)
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            let n = d.doc["eventCount"].as_f64().unwrap() as u64;
            (d.key, (d.position, n))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_upsert_replay_load_and_generations() {
    let b = ConvexBackend::start();
    let c = b.client(Duration::from_secs(30));
    let t = run_template();
    let g = 7;

    let first = ApplyRequest {
        generation: g,
        epoch: None,
        writes: vec![
            write(&t, "r1", pos(10, 0), 1),
            write(&t, "r2", pos(10, 1), 1),
        ],
        dead_letters: vec![dead_letter(5, pos(10, 2))],
    };
    let r = c.apply(&first).await.unwrap();
    assert_eq!(
        r,
        ApplyResult {
            applied: 2,
            skipped: 0,
            dead_letters_inserted: 1,
            dead_letters_skipped: 0
        }
    );

    // Replaying the same batch changes nothing.
    let r = c.apply(&first).await.unwrap();
    assert_eq!(
        r,
        ApplyResult {
            applied: 0,
            skipped: 2,
            dead_letters_inserted: 0,
            dead_letters_skipped: 1
        }
    );

    // Equal and lower positions are skipped, a higher one replaces.
    let next = ApplyRequest {
        generation: g,
        epoch: None,
        writes: vec![
            write(&t, "r1", pos(10, 0), 99), // equal: skipped
            write(&t, "r2", pos(9, 7), 99),  // lower: skipped
            write(&t, "r3", pos(11, 0), 3),  // new
        ],
        dead_letters: vec![],
    };
    let r = c.apply(&next).await.unwrap();
    assert_eq!((r.applied, r.skipped), (1, 2));
    let r = c
        .apply(&ApplyRequest {
            generation: g,
            epoch: None,
            writes: vec![write(&t, "r1", pos(12, 0), 4)],
            dead_letters: vec![],
        })
        .await
        .unwrap();
    assert_eq!((r.applied, r.skipped), (1, 0));

    let got = loaded(&c, g, &["r1", "r2", "r3", "absent"]).await;
    let want: BTreeMap<String, (String, u64)> = [
        ("r1".to_string(), (pos(12, 0), 4)),
        ("r2".to_string(), (pos(10, 1), 1)),
        ("r3".to_string(), (pos(11, 0), 3)),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    // `load` gives the stored state, without the bookkeeping fields.
    let docs = c.load_table(g, "runs", &["r3".to_string()]).await.unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(
        crate::support::as_float64(&docs[0].doc),
        crate::support::as_float64(&run_doc(&t, "r3", 3))
    );

    // Generations are separate worlds.
    assert!(loaded(&c, g + 1, &["r1"]).await.is_empty());

    // Dead letters are readable by page and carry their fields.
    let page = c.page("deadLetters", Some(g), None, 100).await.unwrap();
    assert_eq!(page.docs.len(), 1);
    assert_eq!(page.docs[0]["key"], "5");
    assert_eq!(page.docs[0]["eventSeq"].as_f64(), Some(5.0));
    assert!(page.docs[0].get("_id").is_none());

    // Generation control, purge and state.
    let before = c.get_active().await.unwrap();
    let (ok, active) = c.set_active(g, before).await.unwrap();
    assert!(ok);
    assert_eq!(active, Some(g));
    let (ok, active) = c.set_active(g + 1, before.or(Some(12345))).await.unwrap();
    assert!(!ok, "compare-and-set must fail on a stale expectation");
    assert_eq!(active, Some(g));
    assert_eq!(c.get_active().await.unwrap(), Some(g));

    assert_eq!(c.get_state(g, "cursor").await.unwrap(), None);
    c.set_state(g, "cursor", json!({"lsn": "0/16B3748", "n": 3}))
        .await
        .unwrap();
    c.set_state(g, "cursor", json!({"lsn": "0/16B3750", "n": 4}))
        .await
        .unwrap();
    assert_eq!(
        c.get_state(g, "cursor")
            .await
            .unwrap()
            .as_ref()
            .map(crate::support::as_float64),
        Some(crate::support::as_float64(
            &json!({"lsn": "0/16B3750", "n": 4})
        ))
    );

    let mut deleted = 0;
    loop {
        let (n, done) = c.purge(g, "runs", 2).await.unwrap();
        deleted += n;
        if done {
            break;
        }
    }
    assert_eq!(deleted, 3);
    assert!(loaded(&c, g, &["r1", "r2", "r3"]).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_dumps_ten_thousand_documents() {
    let b = ConvexBackend::start();
    let c = b.client(Duration::from_secs(120));
    let t = run_template();
    let g = 3;
    let n = 10_000u64;
    let started = Instant::now();
    for chunk in 0..n / 1000 {
        let writes = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| write(&t, &format!("run-{i:05}"), pos(100 + i, 0), i))
            .collect();
        let r = c
            .apply(&ApplyRequest {
                generation: g,
                epoch: None,
                writes,
                dead_letters: vec![],
            })
            .await
            .unwrap();
        assert_eq!(r.applied, 1000);
    }
    let inserted = started.elapsed();
    let started = Instant::now();
    let mut seen = BTreeMap::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = c.page("runs", Some(g), cursor, 1000).await.unwrap();
        pages += 1;
        for d in page.docs {
            let key = d["key"].as_str().unwrap().to_string();
            assert_eq!(d["generation"].as_f64(), Some(g as f64));
            assert!(
                seen.insert(key, d["eventCount"].as_f64().unwrap() as u64)
                    .is_none(),
                "duplicate"
            );
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 100, "paging does not terminate");
    }
    eprintln!(
        "inserted {n} docs in {inserted:?}, paged them in {:?} ({pages} pages)",
        started.elapsed()
    );
    assert_eq!(seen.len() as u64, n);
    for i in 0..n {
        assert_eq!(seen.get(&format!("run-{i:05}")), Some(&i));
    }
}

/// Each fault kind, then the same batch through `with_retry`: it must end
/// with exactly the batch's documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_is_retried_to_exactly_the_right_documents() {
    let b = ConvexBackend::start();
    let t = run_template();
    let g = 1;
    let timeout = Duration::from_millis(1500);
    let c = b.client(timeout);

    let cases: Vec<(&str, Value)> = vec![
        (
            "429",
            json!({"kind": "status", "status": 429, "count": 2, "retryAfterSeconds": 1}),
        ),
        ("500", json!({"kind": "status", "status": 500, "count": 2})),
        ("503", json!({"kind": "status", "status": 503, "count": 3})),
        (
            "latency",
            json!({"kind": "latency", "ms": 3000, "count": 1}),
        ),
        ("drop_before", json!({"kind": "drop_before", "count": 2})),
        ("drop_after", json!({"kind": "drop_after", "count": 1})),
    ];
    for (round, (name, fault)) in cases.into_iter().enumerate() {
        let round = round as u64;
        let keys: Vec<String> = (0..5).map(|i| format!("{name}-{i}")).collect();
        let req = ApplyRequest {
            generation: g,
            epoch: None,
            writes: keys
                .iter()
                .enumerate()
                .map(|(i, k)| write(&t, k, pos(1000 + round, i as u64), 10 + round))
                .collect(),
            dead_letters: vec![dead_letter(900 + round, pos(1000 + round, 9))],
        };
        let body = req.encode().unwrap();
        let retries = Arc::new(AtomicU32::new(0));
        let r2 = retries.clone();
        let policy = fast_forever().with_hook(Arc::new(move |_, _, _| {
            r2.fetch_add(1, Ordering::Relaxed);
        }));
        b.fault(fault.clone()).await;
        let started = Instant::now();
        let result = with_retry(&policy, "apply", || c.apply_encoded(body.clone()))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", b.output_tail()));
        let elapsed = started.elapsed();
        let retries = retries.load(Ordering::Relaxed);
        eprintln!("{name}: {result:?} after {retries} retries in {elapsed:?}");
        assert!(retries >= 1, "{name}: the fault was not hit");
        match name {
            "429" => {
                assert_eq!(retries, 2);
                assert!(
                    elapsed >= Duration::from_secs(2),
                    "{name}: Retry-After ignored ({elapsed:?})"
                );
            }
            "500" => assert_eq!(retries, 2),
            "503" => assert_eq!(retries, 3),
            "drop_before" => assert_eq!(retries, 2),
            _ => {}
        }
        // Whatever the fault, the batch is in exactly once: either applied
        // by the final attempt or by an earlier one (then skipped).
        assert_eq!(result.applied + result.skipped, 5, "{name}");
        assert_eq!(
            result.dead_letters_inserted + result.dead_letters_skipped,
            1,
            "{name}"
        );
        match name {
            "drop_before" | "429" | "500" | "503" => {
                assert_eq!(
                    (result.applied, result.dead_letters_inserted),
                    (5, 1),
                    "{name}"
                )
            }
            // Committed, answer lost: the retry is absorbed by the guard.
            "drop_after" => {
                assert_eq!((result.applied, result.skipped), (0, 5), "{name}");
                assert_eq!(result.dead_letters_skipped, 1, "{name}");
            }
            _ => {}
        }
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let got = loaded(&c, g, &key_refs).await;
        let want: BTreeMap<String, (String, u64)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), (pos(1000 + round, i as u64), 10 + round)))
            .collect();
        assert_eq!(got, want, "{name}");
    }
    // Nothing else was written: 6 rounds x 5 runs, 6 dead letters.
    let runs = c.page("runs", Some(g), None, 1000).await.unwrap();
    assert_eq!(runs.docs.len(), 30);
    assert!(runs.next_cursor.is_none());
    let dls = c.page("deadLetters", Some(g), None, 1000).await.unwrap();
    assert_eq!(dls.docs.len(), 6);
    let stats = b.stats().await;
    eprintln!("backend stats: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definite_errors_are_not_retried_and_carry_convex_message() {
    let b = ConvexBackend::start();
    let c = b.client(Duration::from_secs(30));
    let t = run_template();
    let g = 1;
    let good = write(&t, "good", pos(1, 0), 1);
    // A runs document without its required fields: the schema rejects it.
    let bad = Write {
        table: "runs".into(),
        key: "bad".into(),
        position: pos(1, 1),
        doc: json!({"runId": "bad", "unexpectedField": true}),
    };
    let req = ApplyRequest {
        generation: g,
        epoch: None,
        writes: vec![good.clone(), bad],
        dead_letters: vec![],
    };
    let before = b.stats().await;
    let calls = AtomicU32::new(0);
    let err = with_retry(&fast_forever(), "apply", || {
        calls.fetch_add(1, Ordering::Relaxed);
        c.apply(&req)
    })
    .await
    .unwrap_err();
    eprintln!("definite error: {err}");
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "a definite error was retried"
    );
    assert!(!err.is_transient());
    assert!(
        !err.is_deployment_error(),
        "a bad document is not a deployment problem"
    );
    match &err {
        SinkError::Function { message, .. } => assert!(!message.is_empty()),
        other => panic!("expected a function error, got {other:?}"),
    }
    assert!(err.to_string().contains(err.convex_message().unwrap()));
    let after = b.stats().await;
    assert_eq!(
        after["mutations"].as_f64().unwrap() - before["mutations"].as_f64().unwrap(),
        1.0
    );
    // Atomic: the good document of the failed batch is not there.
    assert!(loaded(&c, g, &["good"]).await.is_empty());
    // An unknown table is refused too (argument validation).
    let err = c
        .apply(&ApplyRequest {
            generation: g,
            epoch: None,
            writes: vec![Write {
                table: "nope".into(),
                ..good.clone()
            }],
            dead_letters: vec![],
        })
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    eprintln!("unknown table: {err}");
    // And the good document alone goes in.
    let r = c
        .apply(&ApplyRequest {
            generation: g,
            epoch: None,
            writes: vec![good],
            dead_letters: vec![],
        })
        .await
        .unwrap();
    assert_eq!(r.applied, 1);

    // A wrong admin key is a definite 401/403 naming the fix.
    let wrong = ConvexClient::new(
        b.url(),
        projector::config::Secret::new("wrong-key"),
        Duration::from_secs(5),
    )
    .unwrap();
    let err = wrong.get_active().await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(err.is_deployment_error(), "{err:?}");
    eprintln!("wrong key: {err}");
}

/// Deployment skew is told apart from a bad document: the functions refuse
/// another schema version (naming both), and arguments the functions do
/// not know (a binary newer than them) fail argument validation; both are
/// deployment errors (retried, nothing confirmed), never rejections that
/// would dead-letter events. Matching versions pass the start check.
#[tokio::test]
async fn deployment_skew_is_a_deployment_error_not_a_bad_document() {
    let convex = ConvexBackend::start();
    let client = convex.client(Duration::from_secs(30));
    assert_eq!(projector::sink::schema::check(&client).await.unwrap(), None);
    let send = |args: Value| {
        let body = json!({"path": "projector:apply", "args": args, "format": "json"});
        client.send(
            projector::sink::Kind::Mutation,
            "projector:apply",
            bytes::Bytes::from(body.to_string()),
        )
    };
    let newer = send(json!({"schemaVersion": 99, "generation": 1, "writes": []}))
        .await
        .unwrap_err();
    assert!(newer.is_deployment_error(), "{newer}");
    let text = newer.to_string();
    assert!(
        text.contains(&format!(
            "schema version {}",
            projector::sink::schema::SCHEMA_VERSION
        )) && text.contains("built for 99"),
        "{text}"
    );
    let unknown_arg = send(json!({"generation": 1, "writes": [], "addedLater": true}))
        .await
        .unwrap_err();
    assert!(unknown_arg.is_deployment_error(), "{unknown_arg}");
    assert!(
        unknown_arg.to_string().contains("addedLater"),
        "{unknown_arg}"
    );
    // A bad document stays a document rejection (split, dead-lettered).
    let bad_doc = send(json!({
        "schemaVersion": projector::sink::schema::SCHEMA_VERSION,
        "generation": 1,
        "writes": [{"table": "runs", "key": "r1", "position": "0000000000000001:0000000000000000", "doc": {}}]
    }))
    .await
    .unwrap_err();
    assert!(
        !bad_doc.is_deployment_error() && !bad_doc.is_transient(),
        "{bad_doc}"
    );
}

/// `verify`'s dump sizes its pages by the bytes of the documents: 100
/// inboxes of ~200 KB (20 MB, past Convex's 16 MiB read limit for one
/// query) come back whole, where a fixed page of 500 reads too much.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_large_inboxes_pages_within_the_read_limit() {
    let b = ConvexBackend::start();
    let c = b.client(Duration::from_secs(120));
    let text = std::fs::read_to_string(VECTORS).expect("read the projection vectors");
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut template = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "inbox")
        .map(|c| c["expected"]["inboxes"]["u7"].clone())
        .expect("inbox case");
    let item = template["items"][0].clone();
    template["items"] = Value::Array(
        (0..50)
            .map(|i| {
                let mut it = item.clone();
                it["id"] = json!(format!("n{i}"));
                it["body"] = json!("é".repeat(2000));
                it
            })
            .collect(),
    );
    let g = 4;
    for chunk in 0..10u64 {
        let writes = (chunk * 10..(chunk + 1) * 10)
            .map(|i| {
                let mut doc = template.clone();
                doc["userId"] = json!(format!("u{i}"));
                Write {
                    table: "inboxes".into(),
                    key: format!("u{i}"),
                    position: pos(100 + i, 0),
                    doc,
                }
            })
            .collect();
        let r = c
            .apply(&ApplyRequest {
                generation: g,
                epoch: None,
                writes,
                dead_letters: vec![],
            })
            .await
            .unwrap();
        assert_eq!(r.applied, 10);
    }
    let one = serde_json::to_vec(&template).unwrap().len();
    assert!(one * 100 > 16 << 20, "{one} bytes an inbox");
    let dumped = projector::verify::dump(&c, "inboxes", g).await.unwrap();
    assert_eq!(dumped.len(), 100);
    assert_eq!(dumped["u42"]["items"][3]["body"], json!("é".repeat(2000)));
}
