//! Document-by-document comparison of Convex with a fresh fold.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::event::{Lsn, Position};

/// Fields Convex and the envelope add; not part of the projection.
const ENVELOPE: [&str; 5] = ["_id", "_creationTime", "key", "generation", "position"];

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// In the fold, not in Convex.
    Missing { table: String, key: String },
    /// In Convex, not in the fold.
    Extra { table: String, key: String },
    /// Both, with different fields.
    Changed {
        table: String,
        key: String,
        fields: Vec<FieldDiff>,
    },
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldDiff {
    pub(crate) field: String,
    pub(crate) expected: String,
    pub(crate) actual: String,
}

#[derive(Debug, Default, Serialize)]
pub struct TableReport {
    pub(crate) expected: usize,
    pub(crate) actual: usize,
    pub matching: usize,
    pub(crate) in_flux: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub(crate) snapshot_lsn: String,
    pub(crate) generation: u64,
    pub tables: BTreeMap<String, TableReport>,
    pub divergent: Vec<Finding>,
    /// Documents newer than the snapshot: not compared.
    pub(crate) in_flux: Vec<(String, String)>,
}

impl Report {
    pub fn is_exact(&self) -> bool {
        self.divergent.is_empty()
    }
}

/// Numbers compare by value (Convex returns float64; a fold may hold
/// integers), everything else structurally.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Strips the envelope fields from a Convex document.
pub fn projection_fields(doc: &Value) -> Map<String, Value> {
    let mut m = doc.as_object().cloned().unwrap_or_default();
    for f in ENVELOPE {
        m.remove(f);
    }
    m
}

fn short(v: Option<&Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 120 {
                let mut t: String = s.chars().take(117).collect();
                t.push_str("...");
                t
            } else {
                s
            }
        }
    }
}

/// Compares one table. `expected`: key → fields from the fold. `actual`:
/// key → whole Convex documents. A Convex document whose position is at or
/// after `snapshot` is in flux: it may hold events the snapshot does not.
pub(crate) fn compare_table(
    table: &str,
    expected: &BTreeMap<String, Map<String, Value>>,
    actual: &BTreeMap<String, Value>,
    snapshot: Lsn,
    report: &mut Report,
) {
    let mut t = TableReport {
        expected: expected.len(),
        actual: actual.len(),
        ..Default::default()
    };
    let keys: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    for key in keys {
        let in_flux = actual
            .get(key)
            .and_then(|d| d.get("position"))
            .and_then(Value::as_str)
            .and_then(|p| Position::decode(p).ok())
            .is_some_and(|p| p.commit_lsn >= snapshot && p.commit_lsn != Lsn(0));
        if in_flux {
            t.in_flux += 1;
            report.in_flux.push((table.to_string(), key.clone()));
            continue;
        }
        match (expected.get(key), actual.get(key)) {
            (Some(_), None) => report.divergent.push(Finding::Missing {
                table: table.into(),
                key: key.clone(),
            }),
            (None, Some(_)) => report.divergent.push(Finding::Extra {
                table: table.into(),
                key: key.clone(),
            }),
            (Some(exp), Some(doc)) => {
                let act = projection_fields(doc);
                let names: BTreeSet<&String> = exp.keys().chain(act.keys()).collect();
                let fields: Vec<FieldDiff> = names
                    .into_iter()
                    .filter(|f| match (exp.get(*f), act.get(*f)) {
                        (Some(a), Some(b)) => !json_eq(a, b),
                        _ => true,
                    })
                    .map(|f| FieldDiff {
                        field: f.clone(),
                        expected: short(exp.get(f)),
                        actual: short(act.get(f)),
                    })
                    .collect();
                if fields.is_empty() {
                    t.matching += 1;
                } else {
                    report.divergent.push(Finding::Changed {
                        table: table.into(),
                        key: key.clone(),
                        fields,
                    });
                }
            }
            (None, None) => {}
        }
    }
    report.tables.insert(table.to_string(), t);
}

/// The human report.
pub fn render(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "verify: generation {} at snapshot {}",
        report.generation, report.snapshot_lsn
    );
    for (table, t) in &report.tables {
        let _ = writeln!(
            out,
            "  {table:<12} expected {:>7}  in Convex {:>7}  matching {:>7}  in flux {:>5}",
            t.expected, t.actual, t.matching, t.in_flux
        );
    }
    if report.divergent.is_empty() {
        let _ = writeln!(
            out,
            "exact: every document equals a fresh fold of runtime.events"
        );
    } else {
        let _ = writeln!(out, "DIVERGENT: {} document(s)", report.divergent.len());
        for f in report.divergent.iter().take(200) {
            match f {
                Finding::Missing { table, key } => {
                    let _ = writeln!(out, "  {table}/{key}: missing in Convex");
                }
                Finding::Extra { table, key } => {
                    let _ = writeln!(out, "  {table}/{key}: in Convex but not in the fold");
                }
                Finding::Changed { table, key, fields } => {
                    for d in fields {
                        let _ = writeln!(
                            out,
                            "  {table}/{key}: {} expected {} but Convex has {}",
                            d.field, d.expected, d.actual
                        );
                    }
                }
            }
        }
        if report.divergent.len() > 200 {
            let _ = writeln!(out, "  ... and {} more", report.divergent.len() - 200);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn names_changed_missing_and_extra_documents() {
        let mut expected = BTreeMap::new();
        expected.insert("a".to_string(), obj(json!({"n": 1, "s": "x"})));
        expected.insert("b".to_string(), obj(json!({"n": 2})));
        let mut actual = BTreeMap::new();
        let pos = Position::new(Lsn(5), 0).encode();
        actual.insert(
            "a".to_string(),
            json!({"key": "a", "generation": 1, "position": pos, "n": 1.0, "s": "y"}),
        );
        actual.insert(
            "c".to_string(),
            json!({"key": "c", "position": pos, "n": 3}),
        );
        let mut r = Report::default();
        compare_table("runs", &expected, &actual, Lsn(100), &mut r);
        assert_eq!(r.divergent.len(), 3, "{r:?}");
        let text = render(&r);
        assert!(
            text.contains("runs/a: s expected \"x\" but Convex has \"y\""),
            "{text}"
        );
        assert!(text.contains("runs/b: missing in Convex"), "{text}");
        assert!(
            text.contains("runs/c: in Convex but not in the fold"),
            "{text}"
        );
    }

    #[test]
    fn newer_documents_are_in_flux_and_numbers_compare_by_value() {
        let mut expected = BTreeMap::new();
        expected.insert("a".to_string(), obj(json!({"n": 1})));
        let mut actual = BTreeMap::new();
        let newer = Position::new(Lsn(200), 0).encode();
        actual.insert("a".to_string(), json!({"position": newer, "n": 2}));
        actual.insert("b".to_string(), json!({"position": newer, "n": 2}));
        let mut r = Report::default();
        compare_table("runs", &expected, &actual, Lsn(100), &mut r);
        assert!(r.is_exact());
        assert_eq!(r.in_flux.len(), 2);
        assert!(json_eq(&json!({"x": [1, 2.0]}), &json!({"x": [1.0, 2]})));
        assert!(!json_eq(&json!({"x": 1}), &json!({"x": 1, "y": null})));
    }
}
