//! `projector verify` passes on an exact projection and names every kind of
//! divergence: a document changed in Convex, one deleted, one extra.
//! Tampering goes through the project's own functions (`projector:apply`
//! with a higher position, `projector:purge` of one document).

use crate::support::cli;
use crate::support::convex_backend;
use crate::support::history_sql;
use crate::support::pg;
use crate::support::projector_proc;

use std::time::Duration;

use projector::event::Position;
use projector::sink::api::{ApplyRequest, Write};
use serde_json::Value;

const SLOT: &str = "projector_verify_tamper";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_changed_missing_and_extra_documents() {
    let db = pg::shared().await.fresh_db().await;
    let sql = db.client().await;
    projector::source::slot::create_slot(&sql, SLOT)
        .await
        .unwrap();
    let convex = convex_backend::ConvexBackend::start();
    let env = cli::Env {
        db_url: db.url.clone(),
        convex_url: convex.url().to_string(),
        admin_key: convex.admin_key().expose().to_string(),
        slot: SLOT.into(),
    };
    let shape = history_sql::Shape {
        events: 3000,
        runs: 20,
        workers: 6,
        users: 5,
        threads: 7,
    };
    sql.batch_execute(&history_sql::insert_sql("v", shape, 0))
        .await
        .unwrap();
    // Two malformed events: dead letters are verified too.
    sql.batch_execute(
        "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload) VALUES
         ('run:bad1', 1, 'run.created', 'u1', '{\"title\": 5}'),
         ('worker:bad2', 1, 'worker.started', 'u2', '[]')",
    )
    .await
    .unwrap();
    let mut proc = projector_proc::Projector::spawn(
        &db.url,
        convex.url(),
        convex.admin_key().expose(),
        SLOT,
        &[],
    );
    cli::wait_confirmed(&sql, SLOT, Duration::from_secs(90)).await;

    // Exact: library call and the binary with --json.
    let client = convex.client(Duration::from_secs(30));
    let generation = client.get_active().await.unwrap().expect("active");
    let outcome = projector::verify::verify(
        &db.secret(),
        Some(SLOT),
        &client,
        generation,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let text = projector::verify::compare::render(&outcome.report);
    assert!(outcome.caught_up && outcome.report.is_exact(), "{text}");
    assert_eq!(outcome.events, 3002);
    assert_eq!(outcome.report.tables["runs"].matching, 20, "{text}");
    assert_eq!(outcome.report.tables["deadLetters"].matching, 2, "{text}");
    let (code, out, err) = env
        .run(&["verify", "--json"], Duration::from_secs(60))
        .await;
    assert_eq!(
        code, 0,
        "verify --json on an exact projection:\n{out}\n{err}"
    );
    let report: Value = serde_json::from_str(&out).expect("--json output parses");
    assert_eq!(report["divergent"], serde_json::json!([]), "{out}");
    assert_eq!(report["tables"]["runs"]["matching"], 20, "{out}");

    // Tamper. 1: change a run's title through apply with a higher position
    // (still below the next snapshot, so it is not "in flux").
    let runs = projector::verify::dump(&client, "runs", generation)
        .await
        .unwrap();
    let (victim, doc) = runs
        .iter()
        .next()
        .map(|(k, d)| (k.clone(), d.clone()))
        .unwrap();
    let pos = Position::decode(doc["position"].as_str().unwrap()).unwrap();
    let mut fields = projector::verify::compare::projection_fields(&doc);
    fields.insert("title".into(), Value::String("tampered".into()));
    let res = client
        .apply(&ApplyRequest {
            generation,
            epoch: None,
            writes: vec![
                Write {
                    table: "runs".into(),
                    key: victim.clone(),
                    position: Position::new(pos.commit_lsn, pos.ordinal + 1).encode(),
                    doc: Value::Object(fields.clone()),
                },
                // 3: an extra document nobody folded.
                Write {
                    table: "runs".into(),
                    key: "ghost".into(),
                    position: pos.encode(),
                    doc: {
                        let mut f = fields.clone();
                        f.insert("runId".into(), Value::String("ghost".into()));
                        Value::Object(f)
                    },
                },
            ],
            dead_letters: vec![],
        })
        .await
        .unwrap();
    assert_eq!(res.applied, 2);
    // 2: delete one thread document (purge takes the first in key order).
    let threads = projector::verify::dump(&client, "threads", generation)
        .await
        .unwrap();
    let deleted = threads.keys().next().unwrap().clone();
    let (n, _) = client.purge(generation, "threads", 1).await.unwrap();
    assert_eq!(n, 1);

    let (code, out, err) = env
        .run(&["verify", "--json"], Duration::from_secs(60))
        .await;
    assert_eq!(code, 1, "verify exits 1 on divergence:\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out).expect("--json output parses");
    let divergent = report["divergent"].as_array().unwrap();
    assert_eq!(divergent.len(), 3, "{out}");
    let find = |kind: &str, table: &str, key: &str| {
        divergent
            .iter()
            .find(|f| f["kind"] == kind && f["table"] == table && f["key"] == key)
            .cloned()
    };
    let changed =
        find("changed", "runs", &victim).unwrap_or_else(|| panic!("changed run {victim}: {out}"));
    assert_eq!(changed["fields"][0]["field"], "title", "{out}");
    assert_eq!(changed["fields"][0]["actual"], "\"tampered\"", "{out}");
    assert!(find("missing", "threads", &deleted).is_some(), "{out}");
    assert!(find("extra", "runs", "ghost").is_some(), "{out}");

    // The human report names them too.
    let (code, out, _) = env.run(&["verify"], Duration::from_secs(60)).await;
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!("runs/{victim}: title expected")),
        "{out}"
    );
    assert!(
        out.contains(&format!("threads/{deleted}: missing in Convex")),
        "{out}"
    );
    assert!(
        out.contains("runs/ghost: in Convex but not in the fold"),
        "{out}"
    );
    // No slot leaked by the verifications.
    assert_eq!(cli::slots(&sql, &db.dbname).await, vec![SLOT.to_string()]);

    proc.term();
    let _ = tokio::time::timeout(Duration::from_secs(30), proc.wait()).await;
}
