//! Micro-benchmark of the source decoder (no criterion): pgoutput bytes →
//! `PgOutputMessage` → `RuntimeEvent`, on one core, for transactions of 50
//! inserts (loadgen's default) with realistic column values.
//!
//! Run: `cargo bench --bench decoder` (release profile).

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use projector::source::event::{EventDecoder, SourceEvent};
use projector::source::pgoutput::{self, Column, PgOutputMessage, Relation, TupleValue};
use projector::source::pgoutput_encode;

/// The allocator of the `projector` binary, so figures match it.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const OID: u32 = 16_390;

fn relation() -> Vec<u8> {
    let col = |name: &str, type_oid: u32| Column {
        flags: u8::from(name == "seq"),
        name: name.into(),
        type_oid,
        type_modifier: -1,
    };
    pgoutput_encode::encode(&PgOutputMessage::Relation(Relation {
        xid: None,
        oid: OID,
        namespace: "runtime".into(),
        name: "events".into(),
        replica_identity: b'd',
        columns: vec![
            col("seq", 20),
            col("stream_id", 25),
            col("stream_seq", 20),
            col("event_type", 25),
            col("owner_id", 25),
            col("payload", 3802),
            col("occurred_at", 1184),
        ],
    }))
}

/// One transaction: Begin, `n` inserts, Commit (as XLogData payloads).
fn transaction(t: u64, n: u64) -> Vec<Vec<u8>> {
    let lsn = 0x1000_0000 + t * 0x4000;
    let mut out = vec![pgoutput_encode::encode(&PgOutputMessage::Begin {
        final_lsn: lsn,
        commit_time: 817_000_000_000_000 + t as i64,
        xid: 1000 + t as u32,
    })];
    let text = |s: String| TupleValue::Text(Bytes::from(s));
    for i in 0..n {
        let seq = t * n + i + 1;
        let r = seq % 200;
        out.push(pgoutput_encode::encode(&PgOutputMessage::Insert {
            xid: None,
            relation: OID,
            new: vec![
                text(seq.to_string()),
                text(format!("run:run-{r:05}-7f3a2c")),
                text((seq / 200 + 1).to_string()),
                text("run.step".into()),
                text(format!("u{}", r % 100)),
                text(format!(
                    r#"{{"name": "tool_call: read_file src/lib.rs", "detail": "{}"}}"#,
                    "x".repeat(150)
                )),
                text("2026-11-23 08:00:00.123456+00".into()),
            ],
        }));
    }
    out.push(pgoutput_encode::encode(&PgOutputMessage::Commit {
        flags: 0,
        commit_lsn: lsn,
        end_lsn: lsn + 0x100,
        commit_time: 817_000_000_000_000 + t as i64,
    }));
    out
}

fn main() {
    let txns = 4_000u64;
    let per_txn = 50u64;
    let mut msgs = vec![relation()];
    for t in 0..txns {
        msgs.extend(transaction(t, per_txn));
    }
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    let events = txns * per_txn;
    println!(
        "{} messages, {events} inserts, {:.1} MB of pgoutput",
        msgs.len(),
        bytes as f64 / 1e6
    );

    let frames: Vec<Bytes> = msgs.iter().map(|m| Bytes::from(m.clone())).collect();
    for round in 0..3 {
        let t = Instant::now();
        let mut state = pgoutput::StreamState::default();
        for m in &msgs {
            let _ = black_box(state.decode(black_box(m)));
        }
        let el = t.elapsed().as_secs_f64();
        println!(
            "round {round}: pgoutput::decode: {:.0} ns/message, {:.2} M messages/s",
            el * 1e9 / msgs.len() as f64,
            msgs.len() as f64 / el / 1e6
        );

        let t = Instant::now();
        let mut dec = EventDecoder::new();
        let mut n = 0u64;
        for m in &msgs {
            if let Err(e) = dec.feed(m) {
                panic!("decode failed: {e}");
            }
            while let Some(ev) = dec.pop() {
                if let SourceEvent::Event(ev) = ev {
                    n += 1;
                    black_box(ev);
                }
            }
        }
        let el = t.elapsed().as_secs_f64();
        assert_eq!(n, events);
        println!(
            "round {round}: EventDecoder feed+pop (bytes → RuntimeEvent): {:.0} ns/event, {:.2} M events/s",
            el * 1e9 / events as f64,
            events as f64 / el / 1e6
        );

        // What `run` does: XLogData payloads are `Bytes`, columns are sliced.
        let t = Instant::now();
        let mut dec = EventDecoder::new();
        let mut n = 0u64;
        for m in &frames {
            if let Err(e) = dec.feed_bytes(m) {
                panic!("decode failed: {e}");
            }
            while let Some(ev) = dec.pop() {
                if let SourceEvent::Event(ev) = ev {
                    n += 1;
                    black_box(ev);
                }
            }
        }
        let el = t.elapsed().as_secs_f64();
        assert_eq!(n, events);
        println!(
            "round {round}: EventDecoder feed_bytes+pop (zero-copy columns): {:.0} ns/event, {:.2} M events/s",
            el * 1e9 / events as f64,
            events as f64 / el / 1e6
        );
    }
}
