//! The decoded stream equals what SELECT sees: inserts, updates (with
//! unchanged TOAST values and key changes), deletes, truncates, logical
//! messages, a 100k-row transaction, and large transactions streamed in
//! progress (with a rolled-back savepoint and a fully aborted transaction).
//! Both with and without `streaming`, the runtime events and their positions
//! are identical, and positions strictly increase.
use crate::support::pg;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use projector::event::{Lsn, RuntimeEvent};
use projector::source::event::{EventDecoder, SourceEvent, ViolationKind};
use projector::source::pgoutput::{PgOutputMessage, StreamState, TupleValue};
use projector::source::slot;
use projector::source::stream::{ReplicationStream, StreamOptions, WalMessage};

type Row = Vec<Option<String>>;

#[derive(Default)]
struct Replica {
    rels: HashMap<u32, String>,
    tables: HashMap<String, BTreeMap<String, Row>>,
    current: Vec<PgOutputMessage>,
    streamed: HashMap<u32, Vec<PgOutputMessage>>,
    unchanged_seen: usize,
    messages: Vec<(bool, String, String)>,
    marker_seen: bool,
    in_stream_top: Option<u32>,
}

fn row(t: &[TupleValue], old: Option<&Row>) -> Row {
    t.iter()
        .enumerate()
        .map(|(i, v)| match v {
            TupleValue::Null => None,
            TupleValue::Text(_) => Some(v.as_text().unwrap().to_string()),
            TupleValue::Unchanged => old.expect("unchanged value needs the old row")[i].clone(),
            TupleValue::Binary(_) => panic!("binary not requested"),
        })
        .collect()
}

impl Replica {
    fn on(&mut self, m: PgOutputMessage) {
        use PgOutputMessage as M;
        match m {
            M::Relation(r) => {
                self.rels
                    .insert(r.oid, format!("{}.{}", r.namespace, r.name));
            }
            M::Begin { .. } => self.current.clear(),
            M::Commit { .. } => {
                for c in std::mem::take(&mut self.current) {
                    self.apply(c);
                }
            }
            M::StreamCommit { xid, .. } => {
                for c in self.streamed.remove(&xid).unwrap_or_default() {
                    self.apply(c);
                }
            }
            M::StreamAbort { xid, subxid, .. } => {
                if xid == subxid {
                    self.streamed.remove(&xid);
                } else if let Some(v) = self.streamed.get_mut(&xid) {
                    v.retain(|c| change_xid(c) != Some(subxid));
                }
            }
            M::StreamStart { .. } | M::StreamStop | M::Type { .. } | M::Origin { .. } => {}
            M::Message {
                flags,
                prefix,
                content,
                ..
            } => {
                self.messages.push((
                    flags & 1 == 1,
                    prefix,
                    String::from_utf8(content.to_vec()).unwrap(),
                ));
            }
            other => match self.in_stream_top {
                Some(top) => self.streamed.entry(top).or_default().push(other),
                None => self.current.push(other),
            },
        }
    }
    fn apply(&mut self, c: PgOutputMessage) {
        use PgOutputMessage as M;
        match c {
            M::Insert { relation, new, .. } => {
                let name = self.rels[&relation].clone();
                if name == "public.marker" {
                    self.marker_seen = true;
                }
                let r = row(&new, None);
                self.tables
                    .entry(name)
                    .or_default()
                    .insert(r[0].clone().unwrap(), r);
            }
            M::Update {
                relation,
                key,
                old,
                new,
                ..
            } => {
                let name = self.rels[&relation].clone();
                let t = self.tables.entry(name).or_default();
                let old_key = key
                    .or(old)
                    .map(|k| row(&k, None)[0].clone().unwrap())
                    .unwrap_or_else(|| new[0].as_text().unwrap().to_string());
                let prev = t.remove(&old_key);
                if new.contains(&TupleValue::Unchanged) {
                    self.unchanged_seen += 1;
                }
                let r = row(&new, prev.as_ref());
                t.insert(r[0].clone().unwrap(), r);
            }
            M::Delete {
                relation, key, old, ..
            } => {
                let name = self.rels[&relation].clone();
                let k = row(&key.or(old).unwrap(), None)[0].clone().unwrap();
                self.tables.entry(name).or_default().remove(&k);
            }
            M::Truncate { relations, .. } => {
                for oid in relations {
                    let name = self.rels[&oid].clone();
                    self.tables.entry(name).or_default().clear();
                }
            }
            _ => {}
        }
    }
}

fn change_xid(m: &PgOutputMessage) -> Option<u32> {
    use PgOutputMessage as M;
    match m {
        M::Insert { xid, .. }
        | M::Update { xid, .. }
        | M::Delete { xid, .. }
        | M::Truncate { xid, .. } => *xid,
        _ => None,
    }
}

struct Collected {
    replica: Replica,
    events: Vec<RuntimeEvent>,
    violations: Vec<ViolationKind>,
    commits: usize,
    streamed_blocks: usize,
}

async fn collect(db: &pg::TestDb, slot_name: &str, streaming: bool) -> Collected {
    let opts = StreamOptions {
        proto_version: None,
        streaming,
        messages: true,
        ..StreamOptions::default()
    };
    let mut s = ReplicationStream::start(
        &db.secret(),
        slot_name,
        "projector_events_all",
        Lsn(0),
        opts,
    )
    .await
    .unwrap();
    let mut state = StreamState::default();
    let mut dec = EventDecoder::new();
    let mut c = Collected {
        replica: Replica::default(),
        events: vec![],
        violations: vec![],
        commits: 0,
        streamed_blocks: 0,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(50);
    let mut last_pos = None;
    while !(c.replica.marker_seen && c.replica.current.is_empty()) {
        let m = tokio::time::timeout_at(deadline, s.next())
            .await
            .expect("stream timed out")
            .unwrap()
            .unwrap();
        let WalMessage::XLogData { data, .. } = m else {
            continue;
        };
        let msg = state.decode(&data).unwrap();
        match &msg {
            PgOutputMessage::StreamStart { xid, .. } => {
                c.streamed_blocks += 1;
                c.replica.in_stream_top = Some(*xid);
            }
            PgOutputMessage::StreamStop => c.replica.in_stream_top = None,
            _ => {}
        }
        c.replica.on(msg);
        dec.feed(&data).unwrap();
        while let Some(e) = dec.pop() {
            match e {
                SourceEvent::Event(ev) => {
                    if let Some(p) = last_pos {
                        assert!(ev.position > p, "positions must strictly increase");
                    }
                    last_pos = Some(ev.position);
                    c.events.push(ev);
                }
                SourceEvent::Commit { .. } => c.commits += 1,
                SourceEvent::Violation { kind, .. } => c.violations.push(kind),
                SourceEvent::Begin { .. } => {}
                SourceEvent::Oversized { .. } => panic!("no message is over the default maximum"),
            }
        }
    }
    assert_eq!(dec.buffered(), 0);
    s.finish().await;
    c
}

async fn select_rows(client: &tokio_postgres::Client, sql: &str) -> BTreeMap<String, Row> {
    let rows = client.simple_query(sql).await.unwrap();
    let mut out = BTreeMap::new();
    for r in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = r {
            let v: Row = (0..r.len()).map(|i| r.get(i).map(str::to_string)).collect();
            out.insert(v[0].clone().unwrap(), v);
        }
    }
    out
}

#[tokio::test]
async fn decoded_stream_equals_select() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let client = db.client().await;
    db.exec(
        "create table items (id int primary key, a text, big text, n int);
         alter table items alter column big set storage external;
         create table full_items (id int primary key, v text);
         alter table full_items replica identity full;
         create table marker (id int primary key);
         create publication projector_events_all for table runtime.events, items, full_items, marker;",
    )
    .await;
    slot::create_slot(&client, "plain").await.unwrap();
    slot::create_slot(&client, "streamed").await.unwrap();

    db.exec(
        "insert into items select g, 'a' || g, case when g % 5 = 0 then null else repeat(md5(g::text), 400) end, g
           from generate_series(1, 200) g;
         insert into full_items select g, 'v' || g from generate_series(1, 50) g;
         update items set n = n + 1000 where id <= 100;           -- big unchanged: 'u'
         update items set id = id + 10000 where id between 101 and 110; -- key change: 'K'
         update items set big = 'small' where id = 111;
         delete from items where id between 150 and 160;
         update full_items set v = v || '!' where id <= 10;       -- 'O' tuples
         delete from full_items where id > 40;
         select pg_logical_emit_message(true, 'proj', 'in-txn');
         select pg_logical_emit_message(false, 'proj', 'no-txn');
         begin; insert into full_items values (1000, 'gone'); truncate full_items; insert into full_items values (7, 'after'); commit;",
    )
    .await;
    // runtime.events: small transactions, one 100k-row transaction, a large
    // one with a rolled-back savepoint, and a large aborted one.
    db.exec(
        "insert into runtime.events (stream_id, stream_seq, event_type, owner_id, payload)
           values ('run:x', 1, 'run.created', 'u', '{\"thread_id\": \"t\"}');
         insert into runtime.events (stream_id, stream_seq, event_type, owner_id, payload)
           select 'run:big', g, 'run.step', 'u', jsonb_build_object('name', 'step ' || g) from generate_series(1, 100000) g;
         begin;
         insert into runtime.events (stream_id, stream_seq, event_type, owner_id)
           select 'run:sp', g, 'run.step', 'u' from generate_series(1, 5000) g;
         savepoint s;
         insert into runtime.events (stream_id, stream_seq, event_type, owner_id)
           select 'run:sp', g, 'run.step', 'u' from generate_series(5001, 8000) g;
         rollback to savepoint s;
         insert into runtime.events (stream_id, stream_seq, event_type, owner_id)
           select 'run:sp', g, 'run.step', 'u' from generate_series(8001, 10000) g;
         commit;
         begin;
         insert into runtime.events (stream_id, stream_seq, event_type, owner_id)
           select 'run:aborted', g, 'run.step', 'u' from generate_series(1, 5000) g;
         rollback;
         insert into marker values (1);",
    )
    .await;

    let items = select_rows(&client, "select id::text, a, big, n::text from items").await;
    let full = select_rows(&client, "select id::text, v from full_items").await;
    let expected: Vec<Vec<String>> = client
        .query(
            "select seq::text, stream_id, stream_seq::text, event_type, owner_id, payload::text, occurred_at::text
               from runtime.events e order by e.seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (0..7).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    assert_eq!(expected.len(), 1 + 100_000 + 7000);

    let plain = collect(&db, "plain", false).await;
    let streamed = collect(&db, "streamed", true).await;
    assert_eq!(plain.streamed_blocks, 0);
    assert!(
        streamed.streamed_blocks > 0,
        "large transactions must stream in progress"
    );

    for c in [&plain, &streamed] {
        assert_eq!(c.replica.tables["public.items"], items);
        assert_eq!(c.replica.tables["public.full_items"], full);
        assert!(
            c.replica.unchanged_seen >= 80,
            "unchanged TOAST values arrive as 'u'"
        );
        assert!(c.violations.is_empty());
        assert!(c
            .replica
            .messages
            .contains(&(true, "proj".into(), "in-txn".into())));
        assert!(c
            .replica
            .messages
            .contains(&(false, "proj".into(), "no-txn".into())));
        let mut got: Vec<Vec<String>> = c
            .events
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    e.stream_id().to_owned(),
                    e.stream_seq.to_string(),
                    e.event_type().to_owned(),
                    e.owner_id().to_owned(),
                    e.payload().to_owned(),
                    e.occurred_at().to_owned(),
                ]
            })
            .collect();
        got.sort_by_key(|r| r[0].parse::<i64>().unwrap());
        assert_eq!(got.len(), expected.len());
        if let Some(i) = (0..got.len()).find(|&i| got[i] != expected[i]) {
            panic!(
                "event {i} differs: decoded {:?}, selected {:?}",
                got[i], expected[i]
            );
        }
    }
    // Streaming changes neither the events nor their positions.
    assert!(
        plain.events == streamed.events,
        "streaming changed events or positions"
    );
    assert_eq!(plain.commits, streamed.commits);
}

#[tokio::test]
async fn update_delete_truncate_on_events_are_violations() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let client = db.client().await;
    slot::create_slot(&client, "v").await.unwrap();
    db.exec(
        "insert into runtime.events (stream_id, stream_seq, event_type, owner_id) values ('run:a', 1, 'run.started', 'u'), ('run:a', 2, 'run.step', 'u');
         update runtime.events set owner_id = 'x' where stream_seq = 1;
         delete from runtime.events where stream_seq = 2;
         truncate runtime.events;
         insert into runtime.events (stream_id, stream_seq, event_type, owner_id) values ('run:b', 1, 'run.started', 'u');",
    )
    .await;
    let mut s = ReplicationStream::start(
        &db.secret(),
        "v",
        "projector_events",
        Lsn(0),
        StreamOptions::default(),
    )
    .await
    .unwrap();
    let mut dec = EventDecoder::new();
    let (mut kinds, mut events) = (vec![], vec![]);
    while events.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WalMessage::XLogData { data, .. } = m {
            dec.feed(&data).unwrap();
            while let Some(e) = dec.pop() {
                match e {
                    SourceEvent::Event(ev) => events.push(ev.stream_id().to_owned()),
                    SourceEvent::Violation { kind, detail } => {
                        assert!(detail.contains("runtime.events"));
                        kinds.push(kind)
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!(
        kinds,
        vec![
            ViolationKind::Update,
            ViolationKind::Delete,
            ViolationKind::Truncate
        ]
    );
    assert_eq!(events, vec!["run:a", "run:a", "run:b"]);
    s.finish().await;
}
