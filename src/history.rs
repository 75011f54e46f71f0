//! Reading the event history from a snapshot, in `seq` order, as
//! [`RuntimeEvent`]s with snapshot positions `(0, seq)`.
//!
//! Rows are streamed (`query_raw`), so memory does not grow with the table.
//! Text forms of `payload` and `occurred_at` match what pgoutput sends, so
//! the reducers see the same input either way.

use futures::{Stream, TryStreamExt};
use tokio_postgres::Client;

use crate::event::{Position, RuntimeEvent};

/// The history in `seq` order, with each row's pgoutput Insert size
/// (`projection::oversized`). Of a row over the maximum (`{max}`, the
/// connection limit, which counts the 25-byte XLogData header) only the
/// start of each text is fetched, so no reader holds it whole either.
const SELECT_HISTORY: &str = "SELECT seq, size, stream_seq, \
       CASE WHEN size + 25 > {max} THEN left(stream_id, {keep}) ELSE stream_id END, \
       CASE WHEN size + 25 > {max} THEN left(event_type, {keep}) ELSE event_type END, \
       CASE WHEN size + 25 > {max} THEN left(owner_id, {keep}) ELSE owner_id END, \
       CASE WHEN size + 25 > {max} THEN left(p, {keep}) ELSE p END, \
       CASE WHEN size + 25 > {max} THEN left(o, {keep}) ELSE o END \
     FROM (SELECT seq, stream_id, stream_seq, event_type, owner_id, \
                  payload::text AS p, occurred_at::text AS o, \
                  (8 + 7 * 5 + octet_length(seq::text) + octet_length(stream_id) \
                     + octet_length(stream_seq::text) + octet_length(event_type) \
                     + octet_length(owner_id) + octet_length(payload::text) \
                     + octet_length(occurred_at::text))::bigint AS size \
             FROM runtime.events WHERE seq > {after}) h \
     ORDER BY seq";

/// One row of the history: an event, or the dead letter of a row over the
/// maximum event size (cut the way the stream cuts it).
#[derive(Debug)]
pub enum HistoryEvent {
    Event(RuntimeEvent),
    Oversized(crate::projection::DeadLetter),
}

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
/// cursor of the current transaction (call [`begin_snapshot`] first). A
/// row whose WAL message would be over `max_event_bytes` comes as its dead
/// letter, as the stream makes it.
pub async fn events(
    client: &Client,
    after_seq: i64,
    max_event_bytes: usize,
) -> Result<
    impl Stream<Item = Result<HistoryEvent, tokio_postgres::Error>> + '_,
    tokio_postgres::Error,
> {
    let declare = format!(
        "DECLARE projector_history NO SCROLL CURSOR FOR {}",
        SELECT_HISTORY
            .replace("{after}", &after_seq.to_string())
            .replace("{max}", &max_event_bytes.to_string())
            .replace("{keep}", &crate::event::OVERSIZED_PREFIX.to_string())
    );
    client.batch_execute(&declare).await?;
    let chunks = futures::stream::try_unfold(false, move |done| async move {
        if done {
            return Ok(None);
        }
        let fetch = format!("FETCH {FETCH_ROWS} FROM projector_history");
        let rows = client.query(fetch.as_str(), &[]).await?;
        let last = rows.len() < FETCH_ROWS;
        let events: Vec<Result<HistoryEvent, tokio_postgres::Error>> = rows
            .iter()
            .map(|row| Ok(to_event(row, max_event_bytes)))
            .collect();
        Ok(Some((futures::stream::iter(events), last)))
    });
    Ok(chunks.try_flatten())
}

fn to_event(row: &tokio_postgres::Row, max: usize) -> HistoryEvent {
    use crate::projection::oversized;
    let seq: i64 = row.get(0);
    let size = row.get::<_, i64>(1).max(0) as usize;
    let stream_seq: i64 = row.get(2);
    let text = |i: usize| -> &str { row.get(i) };
    if oversized::is_oversized(size, max) {
        let seq_text = seq.to_string();
        let stream_seq_text = stream_seq.to_string();
        let cols: [&[u8]; 7] = [
            seq_text.as_bytes(),
            text(3).as_bytes(),
            stream_seq_text.as_bytes(),
            text(4).as_bytes(),
            text(5).as_bytes(),
            text(6).as_bytes(),
            text(7).as_bytes(),
        ];
        let cut = oversized::cut_columns(&cols, oversized::KEPT_MESSAGE_BYTES);
        return HistoryEvent::Oversized(oversized::dead_letter(
            seq,
            &cut,
            size,
            max,
            Position::snapshot(seq),
        ));
    }
    HistoryEvent::Event(
        RuntimeEvent::new(seq, text(3), stream_seq, text(4), text(5), text(6), text(7))
            .at(Position::snapshot(seq)),
    )
}

/// The server's current WAL insert position.
pub async fn current_wal_lsn(client: &Client) -> Result<crate::event::Lsn, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint", &[])
        .await?;
    Ok(crate::event::Lsn(row.get::<_, i64>(0) as u64))
}
