//! The engine in-process against [`MemoryStore`]: deterministic faults,
//! paused time (retry backoff passes instantly), no HTTP and no backend.

use std::sync::Arc;

use crate::config::Tuning;
use crate::event::{Lsn, Position, RuntimeEvent};
use crate::metrics::Metrics;
use crate::pipeline::driver::Driver;
use crate::projection::Table;
use crate::sink::memory::{Fault, MemoryStore};

fn driver(store: &Arc<MemoryStore>) -> Driver {
    Driver::new(
        store.clone(),
        1,
        Tuning::default(),
        Metrics::new().expect("metrics"),
    )
}

/// Run `r1`'s event `seq` (its stream seq too) in a transaction committed
/// at `lsn`.
fn run_event(seq: i64, lsn: u64) -> RuntimeEvent {
    r1(seq, seq).at(Position::new(Lsn(lsn), 0))
}

/// Run `r1`'s event with stream seq `stream_seq` (1: `run.created`, then
/// steps), not yet placed in the WAL.
fn r1(seq: i64, stream_seq: i64) -> RuntimeEvent {
    let (ty, payload) = if stream_seq == 1 {
        (
            "run.created",
            r#"{"thread_id":"t1","title":"x"}"#.to_string(),
        )
    } else {
        ("run.step", format!(r#"{{"name":"s{stream_seq}"}}"#))
    };
    RuntimeEvent::new(
        seq,
        "run:r1",
        stream_seq,
        ty,
        "u1",
        &payload,
        "2026-11-23 08:00:00+00",
    )
}

/// One transaction per event, each committed and closed into its own batch.
async fn feed(d: &mut Driver, seqs: std::ops::RangeInclusive<i64>) {
    for seq in seqs {
        let lsn = 1000 + seq as u64 * 100;
        d.engine_mut().begin(0);
        d.push_waiting(run_event(seq, lsn)).await.expect("push");
        d.engine_mut().commit(Lsn(lsn + 50));
        d.close_batch().await.expect("close");
    }
}

fn step_count(store: &MemoryStore) -> u64 {
    let (_, doc) = store.doc(1, Table::Runs, "r1").expect("run r1 stored");
    doc["stepCount"].as_u64().expect("stepCount")
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_retried_and_confirmed_only_after_the_ack() {
    let store = Arc::new(MemoryStore::new());
    let mut d = driver(&store);
    d.engine_mut().reset_progress(Lsn(1000));
    store.push_fault(Fault::ApplyTransient);
    store.push_fault(Fault::ApplyTransient);
    feed(&mut d, 1..=3).await;
    assert_eq!(
        d.engine().flush_lsn(),
        Lsn(1000),
        "nothing acknowledged yet"
    );
    d.settle().await.expect("settle");
    assert_eq!(d.engine().flush_lsn(), Lsn(1350), "every commit confirmed");
    assert_eq!(step_count(&store), 2);
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_is_retried_and_the_guard_absorbs_the_replay() {
    let store = Arc::new(MemoryStore::new());
    let mut d = driver(&store);
    d.engine_mut().reset_progress(Lsn(1000));
    store.push_fault(Fault::ApplyLostAnswer);
    feed(&mut d, 1..=4).await;
    d.settle().await.expect("settle");
    assert_eq!(step_count(&store), 3);
    // A new owner replays everything from the start: nothing changes.
    let mut again = driver(&store);
    again.engine_mut().reset_progress(Lsn(1000));
    feed(&mut again, 1..=4).await;
    again.settle().await.expect("settle");
    assert_eq!(step_count(&store), 3);
}

#[tokio::test(start_paused = true)]
async fn a_fresh_driver_hydrates_what_another_writer_stored() {
    // The first-bullet bug of the life-cycle issue, in-process: a second
    // writer advanced the run; a new driver must fold onto its state.
    let store = Arc::new(MemoryStore::new());
    let mut a = driver(&store);
    a.engine_mut().reset_progress(Lsn(1000));
    feed(&mut a, 1..=3).await;
    a.settle().await.expect("settle");
    let mut b = driver(&store);
    b.engine_mut().reset_progress(Lsn(1350));
    feed(&mut b, 4..=6).await;
    b.settle().await.expect("settle");
    let mut a2 = driver(&store);
    a2.engine_mut().reset_progress(Lsn(1650));
    feed(&mut a2, 7..=7).await;
    a2.settle().await.expect("settle");
    assert_eq!(step_count(&store), 6);
}

/// `run.created` of `run` on thread `t1`, stream seq 1, committed at `lsn`.
fn created(seq: i64, run: &str, lsn: u64) -> RuntimeEvent {
    RuntimeEvent::new(
        seq,
        &format!("run:{run}"),
        1,
        "run.created",
        "u1",
        r#"{"thread_id":"t1","title":"x"}"#,
        "2026-11-23 08:00:00+00",
    )
    .at(Position::new(Lsn(lsn), 0))
}

fn run_count(store: &MemoryStore) -> u64 {
    let (_, doc) = store
        .doc(1, Table::Threads, "t1")
        .expect("thread t1 stored");
    doc["runCount"].as_u64().expect("runCount")
}

/// The failover with a writer still in flight: A confirmed r1, then its
/// apply of r2 is held while B takes the slot over and replays r2 and r3
/// in one batch; A's apply lands just before B's load of `runs` reads.
/// With `split_loads` B loads each key in a call of its own (a batch whose
/// misses are more than one call may read), so its load of `threads` has
/// read before A's apply landed; otherwise one call reads them all, after
/// it. Returns t1's `runCount` (Postgres says 3) and whether A was told it
/// is fenced.
async fn takeover_with_a_write_in_flight(fence: bool, split_loads: bool) -> (u64, bool) {
    let store = Arc::new(MemoryStore::new());
    let mut a = driver(&store);
    if fence {
        a.acquire_writer("a").await.expect("acquire a");
    }
    a.engine_mut().reset_progress(Lsn(1000));
    a.engine_mut().begin(0);
    a.push_waiting(created(1, "r1", 1100)).await.expect("push");
    a.engine_mut().commit(Lsn(1150));
    a.settle().await.expect("settle a");

    let (release, held) = tokio::sync::watch::channel(false);
    store.push_fault(Fault::ApplyHeld(held));
    a.engine_mut().begin(0);
    a.push_waiting(created(2, "r2", 1200)).await.expect("push");
    a.engine_mut().commit(Lsn(1250));
    a.close_batch().await.expect("close a");
    assert_eq!(a.engine().flush_lsn(), Lsn(1150), "r2 is not confirmed");

    // A is cut off; B holds the slot from A's confirmed position.
    let mut b = driver(&store);
    if split_loads {
        b.engine_mut().set_load_chunk(1);
    }
    if fence {
        b.acquire_writer("b").await.expect("acquire b");
    }
    store.push_fault(Fault::ReleaseBeforeLoad {
        table: Table::Runs,
        release,
    });
    b.engine_mut().reset_progress(Lsn(1150));
    b.engine_mut().begin(0);
    b.push_waiting(created(2, "r2", 1200)).await.expect("push");
    b.engine_mut().commit(Lsn(1250));
    b.engine_mut().begin(0);
    b.push_waiting(created(3, "r3", 1300)).await.expect("push");
    b.engine_mut().commit(Lsn(1350));
    b.settle().await.expect("settle b");
    assert_eq!(b.engine().flush_lsn(), Lsn(1350));
    assert!(b.engine().fenced().is_none());

    a.settle().await.expect("settle a");
    (run_count(&store), a.engine().fenced().is_some())
}

#[tokio::test(start_paused = true)]
async fn a_fenced_writer_lands_nothing_after_a_takeover() {
    for split_loads in [true, false] {
        let (runs, fenced) = takeover_with_a_write_in_flight(true, split_loads).await;
        assert_eq!(runs, 3, "split loads {split_loads}: thread t1 lost a run");
        assert!(
            fenced,
            "split loads {split_loads}: A's held apply was not fenced"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn without_fencing_the_same_takeover_loses_a_run_across_two_loads() {
    // The scenario above is the bug when nothing fences A: its write lands
    // between B's loads and B skips r2 as already applied (runs/r2 holds
    // it) while folding r3 onto the stale thread.
    let (runs, fenced) = takeover_with_a_write_in_flight(false, true).await;
    assert!(!fenced);
    assert_eq!(
        runs, 2,
        "the interleaving must lose r2, or the test above proves nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_whose_misses_fit_one_load_reads_one_snapshot() {
    // Every table's misses in one call: A's write lands before all of B's
    // reads or after all of them, never between, so even unfenced nothing
    // is lost; and B made one load call for runs, timelines and threads.
    let store = Arc::new(MemoryStore::new());
    let mut b = driver(&store);
    b.engine_mut().reset_progress(Lsn(1000));
    b.engine_mut().begin(0);
    b.push_waiting(created(1, "r1", 1100)).await.expect("push");
    b.engine_mut().commit(Lsn(1150));
    b.settle().await.expect("settle");
    assert_eq!(store.calls().1, 1, "one load for the batch's three tables");
    let (runs, fenced) = takeover_with_a_write_in_flight(false, false).await;
    assert!(!fenced);
    assert_eq!(runs, 3);
}

/// The `streamSeq`s in `r1`'s timeline, oldest first.
fn timeline_seqs(store: &MemoryStore) -> Vec<u64> {
    let (_, doc) = store.doc(1, Table::Timelines, "r1").expect("timeline r1");
    doc["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["streamSeq"].as_u64())
        .collect()
}

/// Plans `r1`'s event `seq` and closes it into a batch without taking
/// acknowledgements (so an answered batch stays unacknowledged).
async fn close_without_acks(d: &mut Driver, seq: i64) {
    let lsn = 1000 + seq as u64 * 100;
    let e = d.engine_mut();
    e.begin(0);
    e.push(run_event(seq, lsn));
    e.commit(Lsn(lsn + 50));
    e.close_batch().await.expect("close");
}

#[tokio::test(start_paused = true)]
async fn a_rejected_key_is_not_re_read_while_a_later_write_of_it_is_in_flight() {
    let store = Arc::new(MemoryStore::new());
    let mut d = driver(&store);
    d.engine_mut().reset_progress(Lsn(1000));
    feed(&mut d, 1..=1).await;
    d.settle().await.expect("settle");

    // Batch 2 (seq 2) is rejected; it is answered but not yet acknowledged.
    store.reject_key("r1");
    close_without_acks(&mut d, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    store.accept_key("r1");
    // Batch 3 (seq 3) writes r1 again, folded onto the cache, and is held.
    let (release, held) = tokio::sync::watch::channel(false);
    store.push_fault(Fault::ApplyHeld(held));
    close_without_acks(&mut d, 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    // Batch 2's acknowledgement forgets r1 while batch 3 still pins it.
    d.take_ready_acks();
    let (_, loads_before) = store.calls();
    feed(&mut d, 4..=4).await;
    assert_eq!(
        store.calls().1,
        loads_before,
        "r1 was re-read from Convex while batch 3's write of it is in flight"
    );
    release.send(true).expect("held apply waits");
    d.settle().await.expect("settle");
    assert!(
        timeline_seqs(&store).contains(&3),
        "seq 3 was lost: {:?}",
        timeline_seqs(&store)
    );
    // Nothing in flight any more: the forgotten key is read again.
    feed(&mut d, 5..=5).await;
    d.settle().await.expect("settle");
    assert!(store.calls().1 > loads_before, "r1 was never re-read");
}

#[tokio::test(start_paused = true)]
async fn a_second_run_created_of_a_run_waits_for_the_batch_with_the_first() {
    // Batch A folds r1's run.created into thread t1 and is held in flight;
    // batch B folds a second run.created of r1. B's runs/r1 holds A's event,
    // so it must not land before A's thread write (a crash in between would
    // skip A's event on replay and t1 would never count it).
    let store = Arc::new(MemoryStore::new());
    let mut d = driver(&store);
    d.engine_mut().reset_progress(Lsn(1000));
    let (release, held) = tokio::sync::watch::channel(false);
    store.push_fault(Fault::ApplyHeld(held));
    d.engine_mut().begin(0);
    d.push_waiting(created(1, "r1", 1100)).await.expect("push");
    d.engine_mut().commit(Lsn(1150));
    d.close_batch().await.expect("close a");
    let again = RuntimeEvent::new(
        2,
        "run:r1",
        2,
        "run.created",
        "u1",
        r#"{"thread_id":"t1","title":"y"}"#,
        "2026-11-23 08:00:01+00",
    )
    .at(Position::new(Lsn(1200), 0));
    d.engine_mut().begin(0);
    d.push_waiting(again).await.expect("push");
    d.engine_mut().commit(Lsn(1250));
    d.close_batch().await.expect("close b");
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    assert!(
        store.doc(1, Table::Runs, "r1").is_none(),
        "batch B wrote runs/r1 while batch A's thread write is in flight"
    );
    release.send(true).expect("held apply waits");
    d.settle().await.expect("settle");
    assert_eq!(run_count(&store), 2);
    assert_eq!(d.engine().flush_lsn(), Lsn(1250));
}

/// `r1`'s event with stream seq `stream_seq`, the `ordinal`-th of the
/// transaction committed at 1100.
fn r1_event(seq: i64, stream_seq: i64, ordinal: u64) -> RuntimeEvent {
    r1(seq, stream_seq).at(Position::new(Lsn(1100), ordinal))
}

/// Sends `events` as one transaction and one batch with a byte limit so
/// small that every document and dead letter is its own mutation; the
/// writer dies after `commits` of them. A fresh driver then replays the
/// transaction from the start (nothing was confirmed) and settles.
async fn crash_mid_batch_then_replay(
    store: &Arc<MemoryStore>,
    events: &[(i64, i64)],
    commits: u64,
) {
    let tuning = Tuning {
        batch_max_bytes: 1,
        ..Tuning::default()
    };
    store.crash_after(commits);
    let mut a = Driver::new(store.clone(), 1, tuning, Metrics::new().expect("metrics"));
    a.engine_mut().reset_progress(Lsn(1000));
    a.engine_mut().begin(0);
    for (ordinal, &(seq, stream_seq)) in events.iter().enumerate() {
        // Full at once with this byte limit: the batch closes below.
        a.engine_mut()
            .push(r1_event(seq, stream_seq, ordinal as u64));
    }
    a.engine_mut().commit(Lsn(1150));
    a.close_batch().await.expect("close");
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    assert_eq!(a.engine().flush_lsn(), Lsn(1000), "nothing confirmed");
    drop(a);

    store.recover();
    let mut b = driver(store);
    b.engine_mut().reset_progress(Lsn(1000));
    b.engine_mut().begin(0);
    for (ordinal, &(seq, stream_seq)) in events.iter().enumerate() {
        b.push_waiting(r1_event(seq, stream_seq, ordinal as u64))
            .await
            .expect("push");
    }
    b.engine_mut().commit(Lsn(1150));
    b.settle().await.expect("settle");
    assert_eq!(b.engine().flush_lsn(), Lsn(1150));
}

#[tokio::test(start_paused = true)]
async fn a_split_batch_writes_its_dead_letters_before_the_stream_documents() {
    // Stream seq 3 after 5 is out of order: a dead letter. Seq 6 after it
    // leaves runs/r1 at a later position, so once runs/r1 is written a
    // replay skips seq 3 and can never dead-letter it again.
    let events = [(1, 1), (2, 5), (3, 3), (4, 6)];
    // Four mutations: the dead letter, timeline, thread, run.
    for commits in 0..=4 {
        let store = Arc::new(MemoryStore::new());
        crash_mid_batch_then_replay(&store, &events, commits).await;
        assert_eq!(
            store.dead_letter_keys(1).len(),
            1,
            "crash after {commits} mutations lost the out-of-order dead letter"
        );
        assert_eq!(step_count(&store), 2, "crash after {commits}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_rejected_documents_dead_letters_precede_the_stream_documents() {
    // Convex refuses thread t1: run.created's dead letter (sink_rejected)
    // must land before runs/r1, which holds the event.
    let events = [(1, 1), (2, 2)];
    // Three commits: the timeline, the dead letter, the run.
    for commits in 0..=3 {
        let store = Arc::new(MemoryStore::new());
        store.reject_key("t1");
        crash_mid_batch_then_replay(&store, &events, commits).await;
        assert_eq!(
            store.dead_letter_keys(1).len(),
            1,
            "crash after {commits} mutations lost the sink_rejected dead letter"
        );
        assert_eq!(step_count(&store), 1, "crash after {commits}");
        assert!(store.doc(1, Table::Threads, "t1").is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_that_keeps_timing_out_is_split() {
    // Every apply of more than one document times out: retrying a batch's
    // request as it is never ends; its halves go through.
    let store = Arc::new(MemoryStore::new());
    store.time_out_applies_above(1);
    let mut d = driver(&store);
    d.engine_mut().reset_progress(Lsn(1000));
    feed(&mut d, 1..=3).await;
    let settled = tokio::time::timeout(std::time::Duration::from_secs(3600), d.settle()).await;
    assert!(settled.is_ok(), "still retrying after an hour");
    assert_eq!(d.engine().flush_lsn(), Lsn(1350));
    assert_eq!(step_count(&store), 2);
    assert_eq!(run_count(&store), 1);
}

#[tokio::test(start_paused = true)]
async fn other_transient_failures_are_retried_whole() {
    let store = Arc::new(MemoryStore::new());
    for _ in 0..5 {
        store.push_fault(Fault::ApplyTransient);
    }
    let mut d = driver(&store);
    d.engine_mut().reset_progress(Lsn(1000));
    feed(&mut d, 1..=1).await;
    d.settle().await.expect("settle");
    assert_eq!(store.calls().0, 1, "the batch's three writes in one apply");
    assert_eq!(run_count(&store), 1);
}

/// `user`'s notification event (stream seq `stream_seq`) at `position`.
fn notification(
    user: &str,
    stream_seq: i64,
    ty: &str,
    payload: &str,
    at: Position,
) -> RuntimeEvent {
    RuntimeEvent::new(
        stream_seq,
        &format!("user:{user}"),
        stream_seq,
        ty,
        user,
        payload,
        "2026-11-23 08:00:00+00",
    )
    .at(at)
}

/// Stores `n` full inboxes u0..u{n-1}, each 50 notifications with a
/// 2,000-char body (~110 KB of JSON): u0 is folded, the rest are copies.
async fn store_large_inboxes(store: &Arc<MemoryStore>, n: usize) {
    let mut d = driver(store);
    d.engine_mut().reset_progress(Lsn(1000));
    d.engine_mut().begin(0);
    let (title, body) = ("t".repeat(200), "b".repeat(2000));
    for i in 1..=50u64 {
        let payload = format!(r#"{{"notification_id":"n{i}","title":"{title}","body":"{body}"}}"#);
        let at = Position::new(Lsn(1100), i);
        d.push_waiting(notification(
            "u0",
            i as i64,
            "notification.created",
            &payload,
            at,
        ))
        .await
        .expect("push");
    }
    d.engine_mut().commit(Lsn(1150));
    d.settle().await.expect("settle");
    let (position, doc) = store.doc(1, Table::Inboxes, "u0").expect("inbox u0");
    assert!(serde_json::to_vec(&doc).expect("json").len() > 100_000);
    for k in 1..n {
        let mut copy = doc.clone();
        copy["userId"] = serde_json::json!(format!("u{k}"));
        store.put_doc(1, Table::Inboxes, &format!("u{k}"), &position, copy);
    }
}

/// A cold driver marks notification n1 read in each of `n` inboxes, in
/// one batch (its hydration loads all of them); returns u{n-1}'s unread
/// count afterwards.
async fn read_one_in_each(store: &Arc<MemoryStore>, n: usize) -> u64 {
    let mut d = driver(store);
    d.engine_mut().reset_progress(Lsn(1150));
    d.engine_mut().begin(0);
    for k in 0..n {
        let at = Position::new(Lsn(2000), k as u64);
        let ev = notification(
            &format!("u{k}"),
            51,
            "notification.read",
            r#"{"notification_id":"n1"}"#,
            at,
        );
        d.push_waiting(ev).await.expect("push");
    }
    d.engine_mut().commit(Lsn(2050));
    d.close_batch().await.expect("hydration and close");
    d.settle().await.expect("settle");
    assert_eq!(d.engine().flush_lsn(), Lsn(2050));
    let (_, doc) = store
        .doc(1, Table::Inboxes, &format!("u{}", n - 1))
        .expect("inbox");
    doc["unreadCount"].as_u64().expect("unreadCount")
}

#[tokio::test(start_paused = true)]
async fn a_cold_load_of_256_large_inboxes_stays_within_the_read_limit() {
    // 256 x ~110 KB is ~28 MB: one load of 256 keys reads past Convex's
    // 16 MiB (the MemoryStore answers as the backend does).
    let store = Arc::new(MemoryStore::new());
    store_large_inboxes(&store, 256).await;
    assert_eq!(read_one_in_each(&store, 256).await, 49);
}

#[tokio::test(start_paused = true)]
async fn a_load_that_reads_too_much_is_split_and_retried() {
    // A read limit far below what the chunk estimate allows for: the
    // first loads fail definitely and are loaded in halves.
    let store = Arc::new(MemoryStore::new());
    store_large_inboxes(&store, 32).await;
    store.limit_load_bytes(400_000);
    let (_, loads_before) = store.calls();
    assert_eq!(read_one_in_each(&store, 32).await, 49);
    let loads = store.calls().1 - loads_before;
    // 32 keys, at most 3 (~330 KB) per successful load: 11 or more loads,
    // besides the ones refused.
    assert!(loads > 11, "{loads} loads");
}

/// Plans `notification.read` of n1 for users `users` (one transaction)
/// until the batch is full; returns how many were planned.
fn read_until_full(d: &mut Driver, users: std::ops::Range<usize>, lsn: u64) -> usize {
    d.engine_mut().begin(0);
    let mut planned = 0;
    for k in users {
        let at = Position::new(Lsn(lsn), k as u64);
        let ev = notification(
            &format!("u{k}"),
            51,
            "notification.read",
            r#"{"notification_id":"n1"}"#,
            at,
        );
        planned += 1;
        if d.engine_mut().push(ev) {
            break;
        }
    }
    d.engine_mut().commit(Lsn(lsn + 50));
    planned
}

#[tokio::test(start_paused = true)]
async fn a_batch_closes_on_the_bytes_of_the_documents_it_will_write() {
    // Each ~60-byte read event rewrites a ~110 KB inbox: by event bytes
    // alone a batch would take thousands of them (hundreds of MB of
    // documents); by document bytes it is full at 2 MiB of inboxes.
    let store = Arc::new(MemoryStore::new());
    store_large_inboxes(&store, 64).await;
    let mut d = driver(&store);
    d.engine_mut().reset_progress(Lsn(1150));
    // Cold: no inbox seen yet, each is charged at the largest one can be.
    let cold = read_until_full(&mut d, 0..64, 2000);
    let largest = crate::sink::limits::largest_doc_bytes(Table::Inboxes);
    assert_eq!(cold, Tuning::default().batch_max_bytes.div_ceil(largest));
    d.close_batch().await.expect("close");
    d.settle().await.expect("settle");
    // Warm: the inboxes loaded and written so far set the typical size
    // (~110 KB of JSON, ~160 KB in memory).
    let warm = read_until_full(&mut d, cold..64, 3000);
    assert!((8..=25).contains(&warm), "{warm} events in a full batch");
    d.close_batch().await.expect("close");
    d.settle().await.expect("settle");
    assert_eq!(d.engine().flush_lsn(), Lsn(3050));
    let (_, doc) = store.doc(1, Table::Inboxes, "u0").expect("inbox");
    assert_eq!(doc["unreadCount"].as_u64(), Some(49));
}

#[tokio::test(start_paused = true)]
async fn a_write_in_flight_counts_its_pinned_state_and_both_copies_of_its_json() {
    // Until the ack, a written inbox is held three times: the pinned
    // cache entry (which the cache budget cannot evict), its serialised
    // JSON and the request body. The in-flight budget must see all three.
    let store = Arc::new(MemoryStore::new());
    store_large_inboxes(&store, 8).await;
    let metrics = Metrics::new().expect("metrics");
    let mut d = Driver::new(store.clone(), 1, Tuning::default(), metrics.clone());
    d.engine_mut().reset_progress(Lsn(1150));
    read_until_full(&mut d, 0..8, 2000);
    let before = metrics.inflight_bytes.get();
    // Dispatch is spawned: on this single-threaded runtime it cannot
    // answer before we look.
    d.engine_mut().close_batch().await.expect("close");
    let held = (metrics.inflight_bytes.get() - before) as usize;
    let (_, doc) = store.doc(1, Table::Inboxes, "u0").expect("inbox");
    let json = serde_json::to_vec(&doc).expect("json").len();
    assert!(held >= 8 * 3 * json, "{held} bytes counted for 8 x {json}");
    d.settle().await.expect("settle");
}

/// One transaction creating runs `from..` (each writes its run and its
/// timeline, all share thread t1) until the batch is full; returns how
/// many it took.
fn create_runs_until_full(d: &mut Driver, from: usize, lsn: u64) -> usize {
    d.engine_mut().begin(0);
    let mut n = 0;
    loop {
        let k = from + n;
        n += 1;
        let ev = created(k as i64 + 1, &format!("r{k}"), lsn).at(Position::new(Lsn(lsn), k as u64));
        if d.engine_mut().push(ev) {
            break;
        }
    }
    d.engine_mut().commit(Lsn(lsn + 50));
    n
}

#[tokio::test(start_paused = true)]
async fn a_batch_of_more_documents_than_one_mutation_takes_is_sent_in_several() {
    use crate::sink::limits::MAX_KEYS_PER_APPLY;
    let store = Arc::new(MemoryStore::new());
    let mut d = driver(&store);
    d.engine_mut().reset_progress(Lsn(1000));
    // The first batch teaches the typical document sizes (cold, each is
    // charged at the largest one can be, so it fills early on bytes).
    let first = create_runs_until_full(&mut d, 0, 2000);
    d.close_batch().await.expect("close");
    d.settle().await.expect("settle");
    // Warm, the batch is full on documents: two mutations' worth.
    let second = create_runs_until_full(&mut d, first, 3000);
    let (applies_before, _) = store.calls();
    d.close_batch().await.expect("close");
    d.settle().await.expect("settle");
    let (applies_after, _) = store.calls();
    // Coalescing needs large batches: this one holds well over one
    // mutation's documents.
    assert!(
        2 * second + 1 > 3 * MAX_KEYS_PER_APPLY / 2,
        "{second} runs (2 documents each) in a full batch"
    );
    assert!(
        applies_after - applies_before >= 2,
        "one batch, several mutations"
    );
    assert!(
        store.largest_apply() <= MAX_KEYS_PER_APPLY,
        "an apply of {} documents",
        store.largest_apply()
    );
    assert_eq!(d.engine().flush_lsn(), Lsn(3050));
    let last = format!("r{}", first + second - 1);
    assert!(store.doc(1, Table::Runs, &last).is_some(), "{last} stored");
    assert_eq!(run_count(&store), (first + second) as u64);
}

#[tokio::test(start_paused = true)]
async fn no_more_batches_are_in_flight_than_the_store_takes_at_once() {
    for (limited, slot_while_one_is_in_flight) in [(false, true), (true, false)] {
        let store = Arc::new(MemoryStore::new());
        // The adaptive layer at a limit of one, as after push-back.
        let sink: Arc<dyn crate::sink::DocumentStore> = if limited {
            Arc::new(crate::sink::adaptive::Adaptive::new(store.clone(), 1, None))
        } else {
            store.clone()
        };
        let mut d = Driver::new(sink, 1, Tuning::default(), Metrics::new().expect("metrics"));
        d.engine_mut().reset_progress(Lsn(1000));
        let (release, held) = tokio::sync::watch::channel(false);
        store.push_fault(Fault::ApplyHeld(held));
        feed(&mut d, 1..=1).await;
        // Tuning allows 4 in flight; the store, when it says so, one.
        assert_eq!(
            d.engine().has_slot(),
            slot_while_one_is_in_flight,
            "limited: {limited}"
        );
        release.send(true).expect("release");
        d.settle().await.expect("settle");
        assert!(d.engine().has_slot());
        assert_eq!(step_count(&store), 0);
    }
}
