//! Reading the event history from a snapshot, in `seq` order, as
//! [`RuntimeEvent`]s with snapshot positions `(0, seq)`.
//!
//! Rows are streamed (`query_raw`), so memory does not grow with the table.
//! Text forms of `payload` and `occurred_at` match what pgoutput sends, so
//! the reducers see the same input either way.

use futures::{Stream, TryStreamExt};
use tokio_postgres::Client;

use crate::event::{Position, RuntimeEvent};

const SELECT_HISTORY: &str = "SELECT seq, stream_id, stream_seq, event_type, owner_id, \
     payload::text, occurred_at::text FROM runtime.events WHERE seq > $1 ORDER BY seq";

/// Opens a REPEATABLE READ, READ ONLY transaction on `client`, optionally at
/// an exported snapshot (from a slot created with `SNAPSHOT 'export'`).
pub async fn begin_snapshot(
    client: &Client,
    snapshot: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    if let Some(name) = snapshot {
        // The name comes from the server; quote it anyway.
        let quoted = name.replace('\'', "''");
        client
            .batch_execute(&format!("SET TRANSACTION SNAPSHOT '{quoted}'"))
            .await?;
    }
    Ok(())
}

/// Counts the events visible in the current transaction.
pub async fn count(client: &Client, after_seq: i64) -> Result<u64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*) FROM runtime.events WHERE seq > $1",
            &[&after_seq],
        )
        .await?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// Rows fetched per round trip. A plain query would let the server stream
/// the whole table into the client's buffers as fast as it can; a cursor
/// keeps memory at one chunk.
const FETCH_ROWS: usize = 4096;

/// Every event with `seq > after_seq`, in `seq` order, streamed through a
/// cursor of the current transaction (call [`begin_snapshot`] first).
pub async fn events(
    client: &Client,
    after_seq: i64,
) -> Result<
    impl Stream<Item = Result<RuntimeEvent, tokio_postgres::Error>> + '_,
    tokio_postgres::Error,
> {
    let declare = format!(
        "DECLARE projector_history NO SCROLL CURSOR FOR {}",
        SELECT_HISTORY.replace("$1", &after_seq.to_string())
    );
    client.batch_execute(&declare).await?;
    let chunks = futures::stream::try_unfold(false, move |done| async move {
        if done {
            return Ok(None);
        }
        let fetch = format!("FETCH {FETCH_ROWS} FROM projector_history");
        let rows = client.query(fetch.as_str(), &[]).await?;
        let last = rows.len() < FETCH_ROWS;
        let events: Vec<Result<RuntimeEvent, tokio_postgres::Error>> =
            rows.iter().map(|row| Ok(to_event(row))).collect();
        Ok(Some((futures::stream::iter(events), last)))
    });
    Ok(chunks.try_flatten())
}

fn to_event(row: &tokio_postgres::Row) -> RuntimeEvent {
    let seq: i64 = row.get(0);
    RuntimeEvent::new(
        seq,
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
    )
    .at(Position::snapshot(seq))
}

/// The server's current WAL insert position.
pub async fn current_wal_lsn(client: &Client) -> Result<crate::event::Lsn, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint", &[])
        .await?;
    Ok(crate::event::Lsn(row.get::<_, i64>(0) as u64))
}
