//! Unit tests: every dead-letter kind, ignore rules, fold skip/out-of-order,
//! JSON round trips.

use serde_json::json;

use super::*;
use crate::event::{Lsn, Position, RuntimeEvent};

fn ev(seq: i64, stream: &str, ss: i64, ty: &str, payload: &str) -> RuntimeEvent {
    ev_at(
        seq,
        stream,
        ss,
        ty,
        payload,
        "2026-11-23 08:00:00.001999+00",
    )
}

fn ev_at(seq: i64, stream: &str, ss: i64, ty: &str, payload: &str, at: &str) -> RuntimeEvent {
    RuntimeEvent::new(seq, stream, ss, ty, "u1", payload, at)
        .at(Position::new(Lsn(100), seq as u64))
}

fn reason(e: &RuntimeEvent) -> String {
    match plan(e) {
        Plan::DeadLetter(dl) => dl.reason,
        other => panic!("expected a dead letter for {e:?}, got {other:?}"),
    }
}

fn folding(e: &RuntimeEvent) -> Folding {
    match plan(e) {
        Plan::Fold(f) => *f,
        other => panic!("expected a fold for {e:?}, got {other:?}"),
    }
}

#[test]
fn unknown_types_and_prefix_mismatches_are_ignored() {
    assert_eq!(
        plan(&ev(1, "run:a", 1, "run.paused", "{}")),
        Plan::Ignored(IgnoreReason::UnknownType)
    );
    assert_eq!(
        plan(&ev(1, "user:a", 1, "run.started", "{}")),
        Plan::Ignored(IgnoreReason::PrefixMismatch)
    );
    assert_eq!(
        plan(&ev(1, "worker:a", 1, "notification.read", "[]")),
        Plan::Ignored(IgnoreReason::PrefixMismatch)
    );
    // Prefix match is exact and case-sensitive.
    assert_eq!(
        plan(&ev(1, "Run:a", 1, "run.started", "{}")),
        Plan::Ignored(IgnoreReason::PrefixMismatch)
    );
}

#[test]
fn every_dead_letter_kind() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("run:a", "run.started", "[1]", "payload_not_object"),
        ("run:a", "run.started", "null", "payload_not_object"),
        ("run:a", "run.started", "\"x\"", "payload_not_object"),
        ("run:a", "run.started", "{", "invalid_json"),
        ("run:a", "run.created", "{}", "missing_field: thread_id"),
        (
            "run:a",
            "run.created",
            r#"{"thread_id":null}"#,
            "missing_field: thread_id",
        ),
        (
            "run:a",
            "run.created",
            r#"{"thread_id":1}"#,
            "wrong_type: thread_id",
        ),
        (
            "run:a",
            "run.created",
            r#"{"thread_id":""}"#,
            "invalid_id: thread_id",
        ),
        (
            "run:a",
            "run.created",
            r#"{"thread_id":"t","title":[]}"#,
            "wrong_type: title",
        ),
        (
            "run:a",
            "run.created",
            r#"{"thread_id":"t","title":true}"#,
            "wrong_type: title",
        ),
        ("run:a", "run.step", r#"{"name":{}}"#, "wrong_type: name"),
        (
            "run:a",
            "run.usage",
            r#"{"output_tokens":1}"#,
            "missing_field: input_tokens",
        ),
        (
            "run:a",
            "run.usage",
            r#"{"input_tokens":1}"#,
            "missing_field: output_tokens",
        ),
        (
            "run:a",
            "run.usage",
            r#"{"input_tokens":1,"output_tokens":null}"#,
            "missing_field: output_tokens",
        ),
        (
            "run:a",
            "run.usage",
            r#"{"input_tokens":-1,"output_tokens":0}"#,
            "invalid_tokens: input_tokens",
        ),
        (
            "run:a",
            "run.usage",
            r#"{"input_tokens":1.5,"output_tokens":0}"#,
            "invalid_tokens: input_tokens",
        ),
        (
            "run:a",
            "run.usage",
            r#"{"input_tokens":"3","output_tokens":0}"#,
            "invalid_tokens: input_tokens",
        ),
        (
            "run:a",
            "run.usage",
            r#"{"input_tokens":9007199254740992,"output_tokens":0}"#,
            "invalid_tokens: input_tokens",
        ),
        (
            "run:a",
            "run.usage",
            r#"{"input_tokens":1e300,"output_tokens":0}"#,
            "invalid_tokens: input_tokens",
        ),
        (
            "run:a",
            "run.usage",
            r#"{"input_tokens":0,"output_tokens":-0.5}"#,
            "invalid_tokens: output_tokens",
        ),
        ("run:a", "run.failed", "{}", "missing_field: error"),
        (
            "run:a",
            "run.failed",
            r#"{"error":null}"#,
            "missing_field: error",
        ),
        ("run:a", "run.failed", r#"{"error":7}"#, "wrong_type: error"),
        (
            "run:a",
            "run.cancelled",
            r#"{"reason":7}"#,
            "wrong_type: reason",
        ),
        (
            "worker:w",
            "worker.requested",
            r#"{"repo":1}"#,
            "wrong_type: repo",
        ),
        ("worker:w", "worker.started", "{}", "missing_field: host"),
        (
            "worker:w",
            "worker.stopped",
            r#"{"reason":false}"#,
            "wrong_type: reason",
        ),
        (
            "worker:w",
            "worker.failed",
            r#"{"error":{}}"#,
            "wrong_type: error",
        ),
        (
            "user:u",
            "notification.created",
            r#"{"title":"t"}"#,
            "missing_field: notification_id",
        ),
        (
            "user:u",
            "notification.created",
            r#"{"notification_id":"n"}"#,
            "missing_field: title",
        ),
        (
            "user:u",
            "notification.created",
            r#"{"notification_id":"n","title":"t","body":1}"#,
            "wrong_type: body",
        ),
        (
            "user:u",
            "notification.created",
            r#"{"notification_id":"","title":"t"}"#,
            "invalid_id: notification_id",
        ),
        (
            "user:u",
            "notification.read",
            "{}",
            "missing_field: notification_id",
        ),
        (
            "user:u",
            "notification.read",
            r#"{"notification_id":2}"#,
            "wrong_type: notification_id",
        ),
        ("run:", "run.started", "{}", "invalid_id: stream_id"),
        ("worker:", "worker.heartbeat", "{}", "invalid_id: stream_id"),
        (
            "user:",
            "notification.read",
            r#"{"notification_id":"n"}"#,
            "invalid_id: stream_id",
        ),
    ];
    for (stream, ty, payload, want) in cases {
        let r = reason(&ev(1, stream, 1, ty, payload));
        assert!(
            r.starts_with(want),
            "{stream} {ty} {payload}: got {r:?}, want {want:?}"
        );
    }
}

#[test]
fn ids_are_limited_to_200_scalar_values() {
    let long = "🙂".repeat(201);
    let ok = "🙂".repeat(200);
    assert!(
        reason(&ev(1, &format!("run:{long}"), 1, "run.started", "{}"))
            .starts_with("invalid_id: stream_id")
    );
    assert!(matches!(
        plan(&ev(1, &format!("run:{ok}"), 1, "run.started", "{}")),
        Plan::Fold(_)
    ));
    let p = json!({"thread_id": long}).to_string();
    assert!(reason(&ev(1, "run:a", 1, "run.created", &p)).starts_with("invalid_id: thread_id"));
    let p = json!({"thread_id": ok}).to_string();
    assert!(matches!(
        plan(&ev(1, "run:a", 1, "run.created", &p)),
        Plan::Fold(_)
    ));
    let p = json!({"notification_id": "x".repeat(201)}).to_string();
    assert!(reason(&ev(1, "user:u", 1, "notification.read", &p))
        .starts_with("invalid_id: notification_id"));
}

#[test]
fn bad_timestamps_are_dead_letters() {
    for at in ["infinity", "", "yesterday", "2026-13-01 00:00:00+00"] {
        let e = ev_at(1, "run:a", 1, "run.started", "{}", at);
        assert!(reason(&e).starts_with("invalid_timestamp"), "{at:?}");
    }
}

#[test]
fn valid_edge_values_fold() {
    let f = folding(&ev(
        1,
        "run:a",
        1,
        "run.usage",
        r#"{"input_tokens":5.0,"output_tokens":9007199254740991,"extra":[{"$x":1}]}"#,
    ));
    assert_eq!(
        f.data,
        EventData::RunUsage {
            input_tokens: 5,
            output_tokens: (1 << 53) - 1
        }
    );
    // Optional fields may be null; unknown keys are ignored.
    let f = folding(&ev(
        1,
        "run:a",
        1,
        "run.created",
        r#"{"thread_id":"t","title":null,"x":1}"#,
    ));
    assert_eq!(
        f.data,
        EventData::RunCreated {
            thread_id: "t".into(),
            title: None
        }
    );
    assert_eq!(
        f.keys(),
        &[
            DocKey::new(Table::Runs, "a"),
            DocKey::new(Table::Timelines, "a"),
            DocKey::new(Table::Threads, "t")
        ]
    );
    assert_eq!(
        folding(&ev(1, "worker:w", 1, "worker.heartbeat", "{}")).keys(),
        &[DocKey::new(Table::Workers, "w")]
    );
    assert_eq!(f.at, 1_795_420_800_001);
}

#[test]
fn texts_are_truncated_by_scalar_values() {
    let p = json!({"thread_id":"t","title":"🙂".repeat(300)}).to_string();
    let EventData::RunCreated { title: Some(t), .. } =
        folding(&ev(1, "run:a", 1, "run.created", &p)).data
    else {
        panic!()
    };
    assert_eq!(t, "🙂".repeat(200));
    let p =
        json!({"notification_id":"n","title":"é".repeat(201),"body":"漢".repeat(2001)}).to_string();
    let EventData::NotificationCreated { title, body, .. } =
        folding(&ev(1, "user:u", 1, "notification.created", &p)).data
    else {
        panic!()
    };
    assert_eq!(title, "é".repeat(200));
    assert_eq!(body.unwrap(), "漢".repeat(2000));
    let p = json!({"host":"h".repeat(250)}).to_string();
    let EventData::WorkerStarted { host } =
        folding(&ev(1, "worker:w", 1, "worker.started", &p)).data
    else {
        panic!()
    };
    assert_eq!(host.len(), 200);
}

#[test]
fn dead_letter_payload_is_cut_to_16_kib_on_a_char_boundary() {
    let p = json!({"thread_id": 1, "pad": "🙂".repeat(5000)}).to_string();
    let Plan::DeadLetter(dl) = plan(&ev(9, "run:a", 1, "run.created", &p)) else {
        panic!()
    };
    assert!(dl.payload.len() <= 16 * 1024 && dl.payload.len() > 16 * 1024 - 4);
    assert!(p.starts_with(&dl.payload));
    assert_eq!(dl.key(), "9");
    let j = dl.to_json();
    assert_eq!(j["eventSeq"], 9);
    assert_eq!(j["streamId"], "run:a");
    assert_eq!(j["streamSeq"], 1);
    assert_eq!(j["eventType"], "run.created");
    assert!(j["reason"]
        .as_str()
        .unwrap()
        .starts_with("wrong_type: thread_id"));
    assert_eq!(j.as_object().unwrap().len(), 6);
}

#[test]
fn out_of_order_is_a_dead_letter_and_folds_nothing() {
    let mut m = MemoryFold::new();
    m.apply(&ev(1, "run:a", 2, "run.created", r#"{"thread_id":"t"}"#));
    let before = m.docs.clone();
    m.apply(&ev(2, "run:a", 2, "run.started", "{}")); // equal stream_seq
    m.apply(&ev(3, "run:a", 1, "run.created", r#"{"thread_id":"t2"}"#)); // smaller
    assert_eq!(m.docs, before, "nothing folded");
    assert_eq!(m.dead_letters.len(), 2);
    assert_eq!(m.dead_letters[&3].code(), "out_of_order");
    assert_eq!(m.dead_letters[&3].payload, r#"{"thread_id":"t2"}"#);
    // Gaps are allowed.
    m.apply(&ev(4, "run:a", 10, "run.started", "{}"));
    assert_eq!(m.folded, 2);
    for (stream, ty, p) in [
        ("worker:w", "worker.heartbeat", "{}"),
        ("user:u", "notification.read", r#"{"notification_id":"n"}"#),
    ] {
        m.apply(&ev(10, stream, 5, ty, p));
        m.apply(&ev(11, stream, 5, ty, p));
        assert_eq!(m.dead_letters[&11].code(), "out_of_order");
        m.dead_letters.remove(&11);
    }
}

#[test]
fn position_skip_and_replay_after_an_out_of_order_event() {
    // A (ss 2), B (ss 1, out of order, another thread), C (ss 3).
    let a = ev(1, "run:a", 2, "run.created", r#"{"thread_id":"T"}"#);
    let b = ev(2, "run:a", 1, "run.created", r#"{"thread_id":"U"}"#);
    let c = ev(3, "run:a", 3, "run.started", "{}");
    let mut m = MemoryFold::new();
    for e in [&a, &b, &c] {
        m.apply(e);
    }
    let once = m.clone();
    for e in [&a, &b, &c] {
        m.apply(e);
    }
    assert_eq!(m.docs, once.docs);
    assert_eq!(m.dead_letters, once.dead_letters);
    assert!(!m.docs.contains_key(&DocKey::new(Table::Threads, "U")));
    assert_eq!(m.skipped, 3);
}

#[test]
fn fold_reports_changed_documents_and_skips_held_positions() {
    struct One(Vec<(DocKey, Option<Stored>)>);
    impl StateAccess for One {
        fn get_mut(&mut self, i: usize, key: &DocKey) -> &mut Option<Stored> {
            assert_eq!(&self.0[i].0, key);
            &mut self.0[i].1
        }
    }
    let f = folding(&ev(5, "run:a", 1, "run.created", r#"{"thread_id":"t"}"#));
    let mut s = One(f.keys().iter().map(|k| (k.clone(), None)).collect());
    assert_eq!(
        fold(&f, &mut s),
        FoldOutcome::Folded {
            changed: Changed::first(3)
        }
    );
    assert!(s
        .0
        .iter()
        .all(|(_, v)| v.as_ref().unwrap().position == f.position));
    assert_eq!(fold(&f, &mut s), FoldOutcome::Skipped);
    // The thread already holds a later event: only runs and timelines change.
    let g = folding(&ev(4, "run:b", 1, "run.created", r#"{"thread_id":"t"}"#));
    let mut s2 = One(g.keys().iter().map(|k| (k.clone(), None)).collect());
    s2.0[2].1 = s.0[2].1.clone();
    assert_eq!(
        fold(&g, &mut s2),
        FoldOutcome::Folded {
            changed: Changed::first(2)
        }
    );
}

#[test]
fn documents_round_trip_through_json() {
    let mut m = MemoryFold::new();
    let events = [
        ev(
            1,
            "run:a",
            1,
            "run.created",
            r#"{"thread_id":"t","title":"x"}"#,
        ),
        ev(
            2,
            "run:a",
            2,
            "run.usage",
            r#"{"input_tokens":3,"output_tokens":4}"#,
        ),
        ev(3, "run:a", 3, "run.failed", r#"{"error":"e"}"#),
        ev(4, "worker:w", 1, "worker.heartbeat", "{}"),
        ev(
            5,
            "user:u",
            1,
            "notification.created",
            r#"{"notification_id":"n","title":"t"}"#,
        ),
    ];
    for e in &events {
        m.apply(e);
    }
    assert_eq!(m.docs.len(), 5);
    for (k, s) in &m.docs {
        let j = s.doc.to_json();
        assert_eq!(s.doc.table(), k.table);
        assert_eq!(s.doc.key(), &*k.key);
        assert!(j.get("key").is_none() && j.get("position").is_none());
        assert!(s.doc.approx_bytes() > 0);
        assert_eq!(Doc::from_json(k.table, j.clone()).unwrap(), s.doc, "{k}");
        // Convex may hand numbers back as floats, and extra fields along.
        let mut floaty = j.clone();
        if let Some(o) = floaty.as_object_mut() {
            for v in o.values_mut() {
                if let Some(n) = v.as_i64() {
                    *v = json!(n as f64);
                }
            }
            o.insert("generation".into(), json!(1.0));
        }
        assert_eq!(Doc::from_json(k.table, floaty).unwrap(), s.doc, "{k}");
    }
    let w = m.docs[&DocKey::new(Table::Workers, "w")].doc.to_json();
    assert_eq!(
        w["status"],
        serde_json::Value::Null,
        "heartbeat alone sets no status"
    );
    assert_eq!(w["lastEventType"], "worker.heartbeat");
    let t = m.docs[&DocKey::new(Table::Threads, "t")].doc.to_json();
    assert_eq!(t["latestRunSeq"], 1);
    assert!(Doc::from_json(Table::Runs, json!({"runId": 1})).is_err());
    assert_eq!(Table::parse("inboxes"), Some(Table::Inboxes));
    assert_eq!(Table::parse("deadLetters"), None);
}

#[test]
fn plan_owned_plans_exactly_like_plan() {
    let events = [
        ev(
            1,
            "run:r1",
            1,
            "run.created",
            r#"{"thread_id":"t1","title":"T"}"#,
        ),
        ev(
            2,
            "run:r1",
            2,
            "run.usage",
            r#"{"input_tokens":3,"output_tokens":4}"#,
        ),
        ev(3, "worker:w1", 1, "worker.started", r#"{"host":"h"}"#),
        ev(
            4,
            "user:u1",
            1,
            "notification.created",
            r#"{"notification_id":"n","title":"x"}"#,
        ),
        ev(5, "run:r2", 1, "run.created", r#"{"thread_id":""}"#),
        ev(6, "run:r3", 1, "run.paused", "{}"),
        ev(7, "run:r4", 1, "run.usage", "[1]"),
    ];
    let mut names = KeyInterner::default();
    for e in events {
        assert_eq!(plan_owned_with(e.clone(), None), plan(&e), "{e:?}");
        assert_eq!(
            plan_owned_with(e.clone(), Some(&mut names)),
            plan(&e),
            "{e:?}"
        );
    }
}

#[test]
fn events_planned_with_one_interner_share_their_keys() {
    let mut names = KeyInterner::default();
    let keys = |e: RuntimeEvent, names: &mut KeyInterner| match plan_owned_with(e, Some(names)) {
        Plan::Fold(f) => f.keys().to_vec(),
        other => panic!("expected a fold, got {other:?}"),
    };
    let created = keys(
        ev(1, "run:r1", 1, "run.created", r#"{"thread_id":"r1"}"#),
        &mut names,
    );
    let step = keys(ev(2, "run:r1", 2, "run.step", "{}"), &mut names);
    // runs:r1, timelines:r1 and threads:r1 of both events: one string.
    for k in created.iter().chain(&step) {
        assert!(std::sync::Arc::ptr_eq(&k.key, &created[0].key), "{k}");
    }
    let other = keys(ev(3, "run:r2", 1, "run.step", "{}"), &mut names);
    assert!(!std::sync::Arc::ptr_eq(&other[0].key, &created[0].key));
}

#[test]
fn a_folded_event_dead_letters_like_the_event_itself() {
    let e = ev(9, "run:r1", 4, "run.step", r#"{"name":"s","detail":"pad"}"#);
    let folded = folding(&e).into_folded();
    assert_eq!(
        folded.dead_letter("sink_rejected: no".into()),
        DeadLetter::new(&e, "sink_rejected: no".into())
    );
}
