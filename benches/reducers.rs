//! Micro-benchmark of the reducers (no criterion): plan + fold per event
//! against a hash-map state cache (the shape the pipeline uses), plus
//! serialising the changed documents, on a realistic mix of streams.
//!
//! Run: `cargo bench --bench reducers` (release profile).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use projector::event::{Lsn, Position, RuntimeEvent};
use projector::projection::{
    fold, plan, DocKey, FoldOutcome, MemoryFold, Plan, StateAccess, Stored,
};

/// The allocator of the `projector` binary, so figures match it.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Cache(HashMap<DocKey, Option<Stored>>);

impl StateAccess for Cache {
    fn get_mut(&mut self, _i: usize, key: &DocKey) -> &mut Option<Stored> {
        // Look up by reference first: no key clone on a hit.
        if !self.0.contains_key(key) {
            self.0.insert(key.clone(), None);
        }
        self.0.get_mut(key).expect("just inserted")
    }
}

fn events(n: usize) -> Vec<RuntimeEvent> {
    let mut stream_seq: HashMap<String, i64> = HashMap::new();
    (0..n)
        .map(|i| {
            let r = (i * 7919) % 1000;
            let (stream, ty, payload) = match i % 10 {
                0 => (
                    format!("run:run-{r:04}"),
                    "run.created",
                    format!(r#"{{"thread_id": "thread-{:03}", "title": "Refactor the payment reconciliation job and add tests", "model": "m-large"}}"#, r % 300),
                ),
                1..=3 => (format!("run:run-{r:04}"), "run.step", r#"{"name": "tool_call: read_file src/lib.rs", "detail": "ok"}"#.to_owned()),
                4 => (format!("run:run-{r:04}"), "run.usage", r#"{"input_tokens": 1534, "output_tokens": 211}"#.to_owned()),
                5 => (format!("run:run-{r:04}"), "run.completed", "{}".to_owned()),
                6 | 7 => (format!("worker:w-{:03}", r % 100), "worker.heartbeat", r#"{"load": 0.42, "mem_mb": 812}"#.to_owned()),
                8 => (
                    format!("user:user-{:03}", r % 200),
                    "notification.created",
                    format!(r#"{{"notification_id": "n-{i}", "title": "Run finished", "body": "Your run completed in 42s with 3 steps and no errors."}}"#),
                ),
                _ => (format!("user:user-{:03}", r % 200), "notification.read", format!(r#"{{"notification_id": "n-{}"}}"#, i.saturating_sub(1))),
            };
            let ss = stream_seq.entry(stream.clone()).or_insert(0);
            *ss += 1;
            RuntimeEvent::new(
                i as i64 + 1,
                &stream,
                *ss,
                ty,
                &format!("user-{:03}", r % 200),
                &payload,
                "2026-11-23 08:00:00.123456+00",
            )
            .at(Position::new(Lsn(0x1000 + i as u64 / 4), i as u64 % 4))
        })
        .collect()
}

fn main() {
    let n = 200_000;
    let evs = events(n);

    for round in 0..3 {
        let mut cache = Cache(HashMap::new());
        let t = Instant::now();
        let mut folded = 0u64;
        let mut bytes = 0usize;
        for e in &evs {
            if let Plan::Fold(f) = plan(e) {
                if let FoldOutcome::Folded { changed } = fold(&f, &mut cache) {
                    folded += 1;
                    for k in changed.keys(&f) {
                        if let Some(Some(s)) = cache.0.get(k) {
                            // What the pipeline does per write: serialise the doc (by hand).
                            bytes += s.doc.json_string().len();
                        }
                    }
                }
            }
        }
        let el = t.elapsed();
        println!(
            "round {round}: plan+fold+serialise every changed doc after every event (worst case) {:.0} ns/event ({folded} folded, {} docs, {:.1} MB json)",
            el.as_nanos() as f64 / n as f64,
            cache.0.len(),
            bytes as f64 / 1e6
        );
    }

    // Realistic sink shape: batches of 512 events, each changed document
    // serialised once per batch (coalesced).
    let t = Instant::now();
    let mut cache = Cache(HashMap::new());
    let mut bytes = 0usize;
    for batch in evs.chunks(512) {
        let mut dirty = std::collections::HashSet::new();
        for e in batch {
            if let Plan::Fold(f) = plan(e) {
                if let FoldOutcome::Folded { changed } = fold(&f, &mut cache) {
                    dirty.extend(changed.keys(&f).cloned());
                }
            }
        }
        for k in &dirty {
            if let Some(Some(s)) = cache.0.get(k) {
                bytes += s.doc.json_string().len();
            }
        }
    }
    println!(
        "plan+fold, serialise coalesced per 512-event batch: {:.0} ns/event ({:.1} MB json)",
        t.elapsed().as_nanos() as f64 / n as f64,
        bytes as f64 / 1e6
    );

    // Serialising the final documents, each way the pipeline has done it.
    let docs: Vec<&projector::projection::Doc> =
        cache.0.values().flatten().map(|s| &s.doc).collect();
    // Interleaved rounds, best of each: this machine is shared and noisy.
    type Serialise = fn(&projector::projection::Doc) -> usize;
    let ways: [(&str, Serialise); 3] = [
        ("serde_json::to_raw_value", |d| {
            serde_json::value::to_raw_value(d).map_or(0, |r| r.get().len())
        }),
        ("Doc::json_string (what the pipeline sends)", |d| {
            black_box(d.json_string()).len()
        }),
        ("Doc::json_string + RawValue::from_string", |d| {
            serde_json::value::RawValue::from_string(d.json_string()).map_or(0, |r| r.get().len())
        }),
    ];
    let mut best = [f64::MAX; 3];
    let mut bytes = 0usize;
    for _ in 0..7 {
        for (i, (_, f)) in ways.iter().enumerate() {
            let t = Instant::now();
            bytes = docs.iter().map(|d| f(d)).sum();
            best[i] = best[i].min(t.elapsed().as_nanos() as f64 / docs.len() as f64);
        }
    }
    for (i, (name, _)) in ways.iter().enumerate() {
        println!(
            "serialise {name}: {:.0} ns/doc, best of 7 ({} docs, {:.0} bytes/doc)",
            best[i],
            docs.len(),
            bytes as f64 / docs.len() as f64
        );
    }

    let t = Instant::now();
    let mut cache = Cache(HashMap::new());
    for e in &evs {
        if let Plan::Fold(f) = plan(e) {
            black_box(fold(&f, &mut cache));
        }
    }
    println!(
        "plan+fold (no serialise): {:.0} ns/event",
        t.elapsed().as_nanos() as f64 / n as f64
    );

    let t = Instant::now();
    for e in &evs {
        black_box(projector::event::parse_timestamp_ms(e.occurred_at()));
    }
    println!(
        "parse_timestamp_ms only: {:.0} ns/event",
        t.elapsed().as_nanos() as f64 / n as f64
    );

    let t = Instant::now();
    for e in &evs {
        black_box(plan(e));
    }
    println!(
        "plan only: {:.0} ns/event",
        t.elapsed().as_nanos() as f64 / n as f64
    );

    let t = Instant::now();
    let mut m = MemoryFold::new();
    for e in &evs {
        m.apply(e);
    }
    println!(
        "MemoryFold::apply: {:.0} ns/event ({} docs, {} dead letters)",
        t.elapsed().as_nanos() as f64 / n as f64,
        m.docs.len(),
        m.dead_letters.len()
    );
}
