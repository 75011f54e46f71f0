//! Properties of the reducers (design.md §3–4):
//! 1. the final state depends only on the set of events: seq order and any
//!    interleaving that keeps each stream's order give the same documents;
//! 2. replay is idempotent: a prefix, then everything again, equals once;
//! 3. arbitrary input never panics.

use std::collections::{BTreeMap, VecDeque};

use projector::event::{Lsn, Position, RuntimeEvent};
use projector::projection::{plan, Doc, DocKey, MemoryFold, Plan};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const STREAMS: &[&str] = &[
    "run:r0",
    "run:r1",
    "run:r2",
    "run:r3",
    "worker:w0",
    "worker:w1",
    "user:u0",
    "user:u1",
];
const RUN_TYPES: &[&str] = &[
    "run.created",
    "run.created",
    "run.started",
    "run.step",
    "run.usage",
    "run.completed",
    "run.failed",
    "run.cancelled",
];
const WORKER_TYPES: &[&str] = &[
    "worker.requested",
    "worker.started",
    "worker.heartbeat",
    "worker.stopped",
    "worker.failed",
];
const USER_TYPES: &[&str] = &[
    "notification.created",
    "notification.created",
    "notification.read",
];
const KEYS: &[&str] = &projector::projection::payload::KNOWN_KEYS;

/// A payload value: mostly plausible, sometimes breaking the contract.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop::sample::select(vec!["t0", "t1", "t2", "n0", "n1", "n2", "x", "🙂é"]).prop_map(|s| json!(s)),
        3 => (0u64..1000).prop_map(|n| json!(n)),
        1 => Just(json!(5.0)),
        1 => Just(Value::Null),
        1 => prop_oneof![Just(json!("")), Just(json!(-1)), Just(json!(1.5)), Just(json!(true)), Just(json!([1])), Just(json!({"a": 1}))],
    ]
}

fn payload() -> impl Strategy<Value = String> {
    let fields = prop::collection::vec(
        prop_oneof![4 => value().prop_map(Some), 1 => Just(None)],
        KEYS.len(),
    );
    prop_oneof![
        30 => fields.prop_map(|vs| {
            let mut m = Map::new();
            for (k, v) in KEYS.iter().zip(vs) {
                if let Some(v) = v {
                    m.insert((*k).to_owned(), v);
                }
            }
            Value::Object(m).to_string()
        }),
        1 => Just("[1,2]".to_owned()),
    ]
}

#[derive(Clone, Debug)]
struct Spec {
    stream: usize,
    type_pick: usize,
    foreign: bool,
    seq_step: i64,
    owner: usize,
    payload: String,
    at_ms: i64,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..STREAMS.len(),
        0usize..100,
        prop::bool::weighted(0.05),
        prop_oneof![20 => Just(1i64), 2 => Just(2), 1 => Just(0), 1 => Just(-1)],
        0usize..3,
        payload(),
        0i64..100_000,
    )
        .prop_map(
            |(stream, type_pick, foreign, seq_step, owner, payload, at_ms)| Spec {
                stream,
                type_pick,
                foreign,
                seq_step,
                owner,
                payload,
                at_ms,
            },
        )
}

/// Events in `seq` order (seq = index + 1); stream_seq mostly increasing,
/// with occasional duplicates and regressions (out-of-order dead letters).
fn history(specs: &[Spec]) -> Vec<RuntimeEvent> {
    let mut stream_seq = [0i64; 8];
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let stream = STREAMS[s.stream];
            stream_seq[s.stream] += s.seq_step;
            let types = match stream.split(':').next() {
                Some("run") => RUN_TYPES,
                Some("worker") => WORKER_TYPES,
                _ => USER_TYPES,
            };
            let event_type = if s.foreign {
                // Another family's type, or an unknown one: ignored.
                [
                    "run.paused",
                    "notification.read",
                    "worker.heartbeat",
                    "run.step",
                ][s.type_pick % 4]
            } else {
                types[s.type_pick % types.len()]
            };
            RuntimeEvent::new(
                i as i64 + 1,
                stream,
                stream_seq[s.stream],
                event_type,
                &format!("o{}", s.owner),
                &s.payload,
                &format!("2026-11-23T08:00:00.{:06}+00:00", s.at_ms * 7 % 1_000_000),
            )
        })
        .collect()
}

/// Applies events in the given order with positions increasing along it.
fn fold_in_order<'a>(events: impl IntoIterator<Item = &'a RuntimeEvent>) -> MemoryFold {
    let mut m = MemoryFold::new();
    for (i, e) in events.into_iter().enumerate() {
        let mut e = e.clone();
        e.position = Position::new(Lsn(1 + i as u64 / 3), i as u64 % 3);
        m.apply(&e);
    }
    m
}

/// Documents and dead letters without positions.
fn content(m: &MemoryFold) -> (BTreeMap<DocKey, Doc>, BTreeMap<i64, (String, String)>) {
    (
        m.docs
            .iter()
            .map(|(k, s)| (k.clone(), s.doc.clone()))
            .collect(),
        m.dead_letters
            .iter()
            .map(|(k, d)| (*k, (d.reason.clone(), d.payload.clone())))
            .collect(),
    )
}

/// An interleaving that keeps each stream's order, driven by `picks`.
fn interleave(events: &[RuntimeEvent], picks: &[usize]) -> Vec<RuntimeEvent> {
    let mut queues: BTreeMap<&str, VecDeque<&RuntimeEvent>> = BTreeMap::new();
    for e in events {
        queues.entry(e.stream_id()).or_default().push_back(e);
    }
    let mut out = Vec::with_capacity(events.len());
    let mut i = 0;
    while out.len() < events.len() {
        let live: Vec<&str> = queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        let pick = live[picks.get(i).copied().unwrap_or(0) % live.len()];
        i += 1;
        if let Some(e) = queues.get_mut(pick).and_then(VecDeque::pop_front) {
            out.push(e.clone());
        }
    }
    out
}

proptest! {
    #![proptest_config(crate::support::proptest_config("projection_props", 256))]

    #[test]
    fn final_state_depends_only_on_the_set_of_events(
        specs in prop::collection::vec(spec(), 1..120),
        picks in prop::collection::vec(0usize..64, 120),
    ) {
        let events = history(&specs);
        let in_seq = fold_in_order(&events);
        let mixed = interleave(&events, &picks);
        let other = fold_in_order(&mixed);
        prop_assert_eq!(content(&in_seq), content(&other));
        prop_assert_eq!(in_seq.ignored, other.ignored);
        prop_assert_eq!(in_seq.folded, other.folded);
        // Every event is accounted for exactly once.
        prop_assert_eq!(
            in_seq.ignored + in_seq.folded + in_seq.dead_letters.len() as u64,
            events.len() as u64
        );
    }

    #[test]
    fn replaying_a_prefix_changes_nothing(
        specs in prop::collection::vec(spec(), 1..120),
        cut in 0usize..120,
        picks in prop::collection::vec(0usize..64, 120),
    ) {
        let events = interleave(&history(&specs), &picks);
        let positioned: Vec<RuntimeEvent> = events
            .iter()
            .enumerate()
            .map(|(i, e)| e.clone().at(Position::new(Lsn(10 + i as u64), 0)))
            .collect();
        let mut once = MemoryFold::new();
        positioned.iter().for_each(|e| once.apply(e));

        let cut = cut.min(positioned.len());
        let mut replayed = MemoryFold::new();
        positioned[..cut].iter().for_each(|e| replayed.apply(e));
        positioned.iter().for_each(|e| replayed.apply(e));

        prop_assert_eq!(&once.docs, &replayed.docs);
        prop_assert_eq!(&once.dead_letters, &replayed.dead_letters);
        prop_assert_eq!(once.folded, replayed.folded);
    }

    #[test]
    fn arbitrary_payloads_never_panic(
        stream in "(run:|worker:|user:|x:)?.{0,8}",
        ty in prop::sample::select(vec![
            "run.created", "run.started", "run.step", "run.usage", "run.completed", "run.failed",
            "run.cancelled", "worker.requested", "worker.started", "worker.heartbeat", "worker.stopped",
            "worker.failed", "notification.created", "notification.read", "other",
        ]),
        payload in prop_oneof![
            ".{0,64}",
            arb_json().prop_map(|v| v.to_string()),
            prop::collection::vec((prop::sample::select(KEYS.to_vec()), arb_json()), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()).to_string()),
        ],
        at in prop_oneof![".{0,40}", Just("2026-11-23 08:00:00.5+00".to_owned())],
        stream_seq in any::<i64>(),
    ) {
        let ev = RuntimeEvent::new(1, &stream, stream_seq, ty, "o", &payload, &at)
            .at(Position::new(Lsn(1), 0));
        let mut m = MemoryFold::new();
        m.apply(&ev);
        m.apply(&ev);
        if let Plan::DeadLetter(dl) = plan(&ev) {
            prop_assert!(dl.payload.len() <= 16 * 1024);
            prop_assert!(!dl.reason.is_empty());
        }
        for s in m.docs.values() {
            let j = s.doc.to_json();
            let back = Doc::from_json(s.doc.table(), j).ok();
            prop_assert_eq!(back.as_ref(), Some(&s.doc));
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(|x| json!(x)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
