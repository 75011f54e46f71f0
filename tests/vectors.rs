//! Every worked example of `tests/vectors/projections.json` (design.md §2–3),
//! folded by the real reducers through `MemoryFold`.

use std::collections::BTreeSet;

use projector::event::{Lsn, Position, RuntimeEvent};
use projector::projection::{DocKey, MemoryFold, Table};
use serde_json::Value;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/projections.json"
);

fn load() -> Value {
    let text =
        std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("cannot read {VECTORS}: {e}"));
    serde_json::from_str(&text).expect("vectors file is JSON")
}

fn event(v: &Value, i: usize) -> RuntimeEvent {
    RuntimeEvent::new(
        v["seq"].as_i64().unwrap(),
        v["stream_id"].as_str().unwrap(),
        v["stream_seq"].as_i64().unwrap(),
        v["event_type"].as_str().unwrap(),
        v["owner_id"].as_str().unwrap(),
        // jsonb arrives as text; the vectors hold it as JSON.
        &serde_json::to_string(&v["payload"]).unwrap(),
        v["occurred_at"].as_str().unwrap(),
    )
    // Listed order is stream order; positions increase with it.
    .at(Position::new(Lsn(0x1_0000), i as u64 + 1))
}

/// Numbers compare by value (Convex numbers are float64; 5 == 5.0).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        format!(
            "{}… ({} bytes)",
            &s[..s.char_indices().nth(300).map_or(s.len(), |(i, _)| i)],
            s.len()
        )
    } else {
        s
    }
}

#[test]
fn every_vector_case_is_reproduced() {
    let vectors = load();
    let cases = vectors["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10, "expected the full vector set");
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut m = MemoryFold::new();
        for (i, ev) in case["events"].as_array().unwrap().iter().enumerate() {
            m.apply(&event(ev, i));
        }
        let expected = case["expected"].as_object().unwrap();

        for table in Table::ALL {
            let want = expected.get(table.as_str()).and_then(Value::as_object);
            let want_keys: BTreeSet<&str> = want
                .map(|w| w.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let have_keys: BTreeSet<&str> = m
                .docs
                .keys()
                .filter(|k| k.table == table)
                .map(|k| &*k.key)
                .collect();
            if want_keys != have_keys {
                failures.push(format!(
                    "{name}: {table} keys {have_keys:?}, expected {want_keys:?}"
                ));
                continue;
            }
            for (key, want_doc) in want.into_iter().flatten() {
                let stored = &m.docs[&DocKey::new(table, key.as_str())];
                let have = stored.doc.to_json();
                for (field, want_value) in want_doc.as_object().unwrap() {
                    match have.get(field) {
                        Some(v) if same(v, want_value) => {}
                        got => failures.push(format!(
                            "{name}: {table}/{key}.{field} = {}, expected {}",
                            got.map_or("<absent>".into(), short),
                            short(want_value)
                        )),
                    }
                }
            }
        }

        let want_dl = expected.get("deadLetters").and_then(Value::as_object);
        let want_keys: BTreeSet<i64> = want_dl
            .map(|w| w.keys().map(|k| k.parse().unwrap()).collect())
            .unwrap_or_default();
        let have_keys: BTreeSet<i64> = m.dead_letters.keys().copied().collect();
        if want_keys != have_keys {
            failures.push(format!(
                "{name}: deadLetters {have_keys:?}, expected {want_keys:?}"
            ));
        }
        for (key, want) in want_dl.into_iter().flatten() {
            let Some(dl) = m.dead_letters.get(&key.parse::<i64>().unwrap()) else {
                continue;
            };
            assert_eq!(dl.key(), *key);
            let have = dl.to_json();
            for field in ["eventSeq", "streamId", "streamSeq", "eventType"] {
                if !same(&have[field], &want[field]) {
                    failures.push(format!(
                        "{name}: deadLetters/{key}.{field} = {}, expected {}",
                        short(&have[field]),
                        short(&want[field])
                    ));
                }
            }
            // Reasons are `code: detail` with a snake_case code.
            let code = dl.code();
            if code.is_empty() || !code.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                failures.push(format!("{name}: deadLetters/{key} reason {:?}", dl.reason));
            }
        }

        let want_ignored = case["ignored"].as_u64().unwrap_or(0);
        if m.ignored != want_ignored {
            failures.push(format!(
                "{name}: ignored {}, expected {want_ignored}",
                m.ignored
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The dead letters of the `dead_letters` case, with the reason code each must carry.
#[test]
fn dead_letter_reasons_of_the_vector_case() {
    let vectors = load();
    let case = vectors["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "dead_letters")
        .expect("dead_letters case");
    let mut m = MemoryFold::new();
    for (i, ev) in case["events"].as_array().unwrap().iter().enumerate() {
        m.apply(&event(ev, i));
    }
    let want = [
        (1, "missing_field"),
        (2, "wrong_type"),
        (3, "invalid_id"),
        (4, "invalid_id"),
        (5, "wrong_type"),
        (6, "invalid_tokens"),
        (7, "invalid_tokens"),
        (8, "invalid_tokens"),
        (9, "invalid_tokens"),
        (10, "missing_field"),
        (11, "missing_field"),
        (12, "missing_field"),
        (13, "payload_not_object"),
        (14, "invalid_id"),
        (15, "invalid_id"),
        (16, "missing_field"),
        (17, "missing_field"),
    ];
    for (seq, code) in want {
        let dl = &m.dead_letters[&seq];
        assert_eq!(dl.code(), code, "seq {seq}: {}", dl.reason);
        assert_eq!(dl.to_json()["payload"], Value::String(dl.payload.clone()));
    }
}
