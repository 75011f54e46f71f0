//! `projector verify`: proves Convex equals a fresh fold of Postgres.
//!
//! ```text
//!  temporary slot (SNAPSHOT 'export') ──▶ consistent point C + snapshot S
//!  runtime.events at S, seq order ──▶ reducers (MemoryFold) ──▶ expected docs
//!  wait until the projector's slot confirmed ≥ C
//!  Convex `page` of every table ──▶ actual docs ──▶ compare field by field
//! ```
//!
//! Why it is exact: the exported snapshot holds exactly the transactions
//! that commit before C. Once the projector has confirmed C, every one of
//! those events is in Convex; a document whose position is at or after C
//! may also hold newer events and is reported as in flux, not divergent.

pub mod compare;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use futures::TryStreamExt;
use serde_json::{Map, Value};

use crate::config::{CommonArgs, Secret};
use crate::event::Lsn;
use crate::projection::{MemoryFold, Table};
use crate::sink::{ConvexClient, RetryPolicy};
use compare::Report;

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Verify this generation instead of the active one.
    #[arg(long)]
    pub(crate) generation: Option<u64>,
    /// How long to wait for the projector to acknowledge past the snapshot.
    #[arg(long, default_value_t = 60)]
    pub(crate) wait_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Exit codes: 0 exact, 1 divergent (or not caught up), 2 could not verify.
pub(crate) async fn main(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let settings = args.common.resolve()?;
    let db_url = settings.database_url()?.clone();
    let (url, key) = settings.convex()?;
    let client = ConvexClient::new(url, key.clone(), settings.tuning.convex_timeout)?;
    let generation = match args.generation {
        Some(g) => g,
        None => crate::generation::active(&client).await?.ok_or_else(|| {
            anyhow::anyhow!("Convex has no active generation yet: start `projector run` (or `projector rebuild`) first")
        })?,
    };
    let slot = crate::generation::slot_of(&client, generation, &settings.slot).await?;
    let outcome = verify_with(
        &db_url,
        Some(&slot),
        &client,
        generation,
        Duration::from_secs(args.wait_secs),
        settings.tuning.max_event_bytes,
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome.report)?);
    } else {
        print!("{}", compare::render(&outcome.report));
        if !outcome.caught_up {
            println!(
                "note: the projector had not confirmed the snapshot LSN; differences may be lag"
            );
        }
    }
    Ok(if outcome.report.is_exact() && outcome.caught_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub struct Outcome {
    pub report: Report,
    pub caught_up: bool,
    pub events: u64,
}

/// Folds history at a fresh snapshot and compares generation `generation`
/// of Convex with it. With `wait_for_slot`, first waits (up to `wait`) until
/// that slot has confirmed past the snapshot.
pub async fn verify(
    db_url: &Secret,
    wait_for_slot: Option<&str>,
    client: &ConvexClient,
    generation: u64,
    wait: Duration,
) -> anyhow::Result<Outcome> {
    let max = crate::config::Tuning::default().max_event_bytes;
    verify_with(db_url, wait_for_slot, client, generation, wait, max).await
}

/// [`verify`] for a projector run with `--max-event-bytes` set: rows over
/// it are the dead letters the stream made of them.
pub async fn verify_with(
    db_url: &Secret,
    wait_for_slot: Option<&str>,
    client: &ConvexClient,
    generation: u64,
    wait: Duration,
    max_event_bytes: usize,
) -> anyhow::Result<Outcome> {
    let name = format!(
        "projector_verify_{}_{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let snap = crate::source::slot::create_temporary_slot_with_snapshot(db_url, &name).await?;
    let snapshot_lsn = snap.consistent_point;
    let sql = crate::source::sql::connect(db_url).await?;
    crate::history::begin_snapshot(&sql, Some(&snap.snapshot_name)).await?;
    let mut fold = MemoryFold::new();
    let mut events = 0u64;
    {
        let stream = crate::history::events(&sql, 0, max_event_bytes).await?;
        futures::pin_mut!(stream);
        while let Some(ev) = stream.try_next().await? {
            match ev {
                crate::history::HistoryEvent::Event(ev) => fold.apply(&ev),
                crate::history::HistoryEvent::Oversized(dl) => fold.apply_dead_letter(dl),
            }
            events += 1;
        }
    }
    sql.batch_execute("COMMIT").await?;
    // Ending the connection drops the temporary slot.
    snap.release().await;

    let caught_up = match wait_for_slot {
        Some(slot) => wait_confirmed(db_url, slot, snapshot_lsn, wait).await?,
        None => true,
    };

    let mut report = Report {
        snapshot_lsn: snapshot_lsn.to_string(),
        generation,
        ..Default::default()
    };
    let mut expected: BTreeMap<Table, BTreeMap<String, Map<String, Value>>> = BTreeMap::new();
    for (k, stored) in &fold.docs {
        let fields = stored
            .doc
            .to_json()
            .as_object()
            .cloned()
            .unwrap_or_default();
        expected
            .entry(k.table)
            .or_default()
            .insert(k.key.to_string(), fields);
    }
    for table in Table::ALL {
        let actual = dump(client, table.as_str(), generation).await?;
        let exp = expected.remove(&table).unwrap_or_default();
        compare::compare_table(table.as_str(), &exp, &actual, snapshot_lsn, &mut report);
    }
    // Dead letters: compare what identifies them (the reason text of a
    // sink rejection is not reproducible by a fold).
    let mut exp_dl = BTreeMap::new();
    for (seq, dl) in &fold.dead_letters {
        let mut m = Map::new();
        let j = dl.to_json();
        for f in ["eventSeq", "streamId", "streamSeq", "eventType"] {
            if let Some(v) = j.get(f) {
                m.insert(f.to_string(), v.clone());
            }
        }
        exp_dl.insert(seq.to_string(), m);
    }
    let mut act_dl = BTreeMap::new();
    for (k, doc) in dump(client, "deadLetters", generation).await? {
        let mut m = Map::new();
        for f in ["position", "eventSeq", "streamId", "streamSeq", "eventType"] {
            if let Some(v) = doc.get(f) {
                m.insert(f.to_string(), v.clone());
            }
        }
        act_dl.insert(k, Value::Object(m));
    }
    compare::compare_table("deadLetters", &exp_dl, &act_dl, snapshot_lsn, &mut report);
    Ok(Outcome {
        report,
        caught_up,
        events,
    })
}

/// Documents per `page` call at most.
const PAGE_DOCS: usize = 500;

/// Documents a page may ask for when its documents are up to
/// `largest_seen` bytes: within `limits::MAX_LOAD_BYTES`, so a page of
/// large inboxes stays inside Convex's 16 MiB read limit.
fn page_docs(largest_seen: usize) -> usize {
    (crate::sink::limits::MAX_LOAD_BYTES / largest_seen.max(1)).clamp(1, PAGE_DOCS)
}

/// Every document of one table and generation, keyed by `key`. Pages are
/// sized by the bytes of the documents they hold; a page that reads past
/// Convex's limit anyway is asked for again at half the size.
pub async fn dump(
    client: &ConvexClient,
    table: &str,
    generation: u64,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let retry = RetryPolicy::bounded(10);
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    // The first page assumes the largest documents the table can hold.
    let worst = Table::parse(table).map_or(16 * 1024, crate::sink::limits::largest_doc_bytes);
    let mut limit = page_docs(worst);
    let mut largest = 0;
    loop {
        let answer = crate::sink::with_retry(&retry, "page", || {
            let cursor = cursor.clone();
            async move { client.page(table, Some(generation), cursor, limit).await }
        })
        .await;
        let page = match answer {
            Err(e) if crate::sink::limits::is_read_limit(&e) && limit > 1 => {
                limit /= 2;
                continue;
            }
            other => other?,
        };
        for doc in page.docs {
            largest = largest.max(serde_json::to_vec(&doc).map_or(0, |v| v.len()));
            if let Some(k) = doc.get("key").and_then(Value::as_str) {
                out.insert(k.to_string(), doc);
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
        limit = page_docs(largest);
    }
}

/// Waits until `slot` has confirmed at least `lsn`; false on timeout.
pub(crate) async fn wait_confirmed(
    db_url: &Secret,
    slot: &str,
    lsn: Lsn,
    wait: Duration,
) -> anyhow::Result<bool> {
    let sql = crate::source::sql::connect(db_url).await?;
    let deadline = Instant::now() + wait;
    loop {
        let info = crate::source::slot::slot_info(&sql, slot).await?;
        if info
            .and_then(|i| i.confirmed_flush_lsn)
            .is_some_and(|c| c >= lsn)
        {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
