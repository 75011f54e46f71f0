//! Reading the event history from a snapshot, in `seq` order, as
//! [`RuntimeEvent`]s with snapshot positions `(0, seq)`.
//!
//! Rows are streamed (`query_raw`), so memory does not grow with the table.
//! Text forms of `payload` and `occurred_at` match what pgoutput sends, so
//! the reducers see the same input either way.

use futures::{Stream, TryStreamExt};
use tokio_postgres::Client;

use crate::event::{Position, RuntimeEvent};

/// The history's rows with their pgoutput Insert size
/// (`projection::oversized`). `{filter}` selects them; the `OFFSET 0`
/// fence keeps the planner from inlining `p` and `o` into `size`, which
/// would cast every payload to text twice.
const ROWS_WITH_SIZE: &str = "SELECT seq, stream_id, stream_seq, event_type, owner_id, p, o, \
       (8 + 7 * 5 + octet_length(seq::text) + octet_length(stream_id) \
          + octet_length(stream_seq::text) + octet_length(event_type) \
          + octet_length(owner_id) + octet_length(p) + octet_length(o))::bigint AS size \
     FROM (SELECT seq, stream_id, stream_seq, event_type, owner_id, \
                  payload::text AS p, occurred_at::text AS o \
             FROM runtime.events WHERE {filter} OFFSET 0) e";

/// The cursor over the history, in `seq` order: a row of at most
/// `{inline}` bytes comes whole; of a larger one only `seq` and `size`
/// (its texts are NULL) and [`SELECT_LARGE`] fetches it, a group of such
/// rows at a time within [`FETCH_BYTES`]. So one FETCH holds at most
/// [`FETCH_ROWS`] × [`INLINE_ROW_BYTES`] bytes, whatever the rows.
const SELECT_HISTORY: &str = "SELECT seq, size, stream_seq, \
       CASE WHEN size > {inline} THEN NULL ELSE stream_id END, \
       CASE WHEN size > {inline} THEN NULL ELSE event_type END, \
       CASE WHEN size > {inline} THEN NULL ELSE owner_id END, \
       CASE WHEN size > {inline} THEN NULL ELSE p END, \
       CASE WHEN size > {inline} THEN NULL ELSE o END \
     FROM ({rows}) h ORDER BY seq";

/// The large rows `$1` (seqs). Of a row over the maximum (`{max}`, the
/// connection limit, which counts the 25-byte XLogData header) only the
/// start of each text is fetched, so no reader holds it whole either.
const SELECT_LARGE: &str = "SELECT seq, size, stream_seq, \
       CASE WHEN size + 25 > {max} THEN left(stream_id, {keep}) ELSE stream_id END, \
       CASE WHEN size + 25 > {max} THEN left(event_type, {keep}) ELSE event_type END, \
       CASE WHEN size + 25 > {max} THEN left(owner_id, {keep}) ELSE owner_id END, \
       CASE WHEN size + 25 > {max} THEN left(p, {keep}) ELSE p END, \
       CASE WHEN size + 25 > {max} THEN left(o, {keep}) ELSE o END \
     FROM ({rows}) h ORDER BY seq";

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
pub(crate) async fn count(client: &Client, after_seq: i64) -> Result<u64, tokio_postgres::Error> {
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

/// Rows up to this size come inline in a FETCH; larger ones are fetched
/// apart. Most events are a few hundred bytes: a chunk of them is then
/// at most 8 MiB.
const INLINE_ROW_BYTES: usize = 2048;

/// Bytes of large rows fetched in one query (at least one row).
const FETCH_BYTES: usize = 8 << 20;

/// What a FETCH returned for one row, in `seq` order.
enum Fetched {
    Whole(HistoryEvent),
    /// A row over [`INLINE_ROW_BYTES`]: `seq` and its size.
    Large(i64, usize),
}

/// Where the reader is: the rows of the current chunk not yet returned.
struct Reader {
    queue: std::collections::VecDeque<Fetched>,
    exhausted: bool,
}

/// Every event with `seq > after_seq`, in `seq` order, streamed through a
/// cursor of the current transaction (call [`begin_snapshot`] first). A
/// row whose WAL message would be over `max_event_bytes` comes as its dead
/// letter, as the stream makes it. Memory stays within one chunk of small
/// rows plus [`FETCH_BYTES`] of large ones (each cut to `max_event_bytes`).
pub async fn events(
    client: &Client,
    after_seq: i64,
    max_event_bytes: usize,
) -> Result<
    impl Stream<Item = Result<HistoryEvent, tokio_postgres::Error>> + '_,
    tokio_postgres::Error,
> {
    let rows = ROWS_WITH_SIZE.replace("{filter}", &format!("seq > {after_seq}"));
    let declare = format!(
        "DECLARE projector_history NO SCROLL CURSOR FOR {}",
        SELECT_HISTORY
            .replace("{rows}", &rows)
            .replace("{inline}", &INLINE_ROW_BYTES.to_string())
    );
    client.batch_execute(&declare).await?;
    let large = SELECT_LARGE
        .replace(
            "{rows}",
            &ROWS_WITH_SIZE.replace("{filter}", "seq = ANY($1)"),
        )
        .replace("{max}", &max_event_bytes.to_string())
        .replace("{keep}", &crate::event::OVERSIZED_PREFIX.to_string());
    let large = client.prepare(&large).await?;
    let start = Reader {
        queue: Default::default(),
        exhausted: false,
    };
    let chunks = futures::stream::try_unfold(start, move |mut reader| {
        let large = large.clone();
        async move {
            if reader.queue.is_empty() {
                if reader.exhausted {
                    return Ok(None);
                }
                let fetch = format!("FETCH {FETCH_ROWS} FROM projector_history");
                let rows = client.query(fetch.as_str(), &[]).await?;
                reader.exhausted = rows.len() < FETCH_ROWS;
                reader.queue = rows.iter().map(|r| fetched(r, max_event_bytes)).collect();
            }
            let out = next_events(client, &large, &mut reader.queue, max_event_bytes).await?;
            Ok(Some((
                futures::stream::iter(out.into_iter().map(Ok)),
                reader,
            )))
        }
    });
    Ok(chunks.try_flatten())
}

/// The next events of the chunk: the whole rows up to the next large one,
/// or else a group of large rows fetched within [`FETCH_BYTES`].
async fn next_events(
    client: &Client,
    large: &tokio_postgres::Statement,
    queue: &mut std::collections::VecDeque<Fetched>,
    max: usize,
) -> Result<Vec<HistoryEvent>, tokio_postgres::Error> {
    let mut out = Vec::new();
    while let Some(Fetched::Whole(_)) = queue.front() {
        if let Some(Fetched::Whole(ev)) = queue.pop_front() {
            out.push(ev);
        }
    }
    if !out.is_empty() {
        return Ok(out);
    }
    let mut seqs = Vec::new();
    let mut bytes = 0usize;
    while let Some(&Fetched::Large(seq, size)) = queue.front() {
        let size = size.min(max);
        if !seqs.is_empty() && bytes + size > FETCH_BYTES {
            break;
        }
        seqs.push(seq);
        bytes += size;
        queue.pop_front();
    }
    let rows = client.query(large, &[&seqs]).await?;
    Ok(rows.iter().map(|r| to_event(r, max)).collect())
}

/// A cursor row: whole, or the seq and size of a large one.
fn fetched(row: &tokio_postgres::Row, max: usize) -> Fetched {
    match row.get::<_, Option<&str>>(3) {
        Some(_) => Fetched::Whole(to_event(row, max)),
        None => Fetched::Large(row.get(0), row.get::<_, i64>(1).max(0) as usize),
    }
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
pub(crate) async fn current_wal_lsn(
    client: &Client,
) -> Result<crate::event::Lsn, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint", &[])
        .await?;
    Ok(crate::event::Lsn(row.get::<_, i64>(0) as u64))
}
