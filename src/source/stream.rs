//! The logical replication stream: `START_REPLICATION … LOGICAL` over a
//! [`PgConn`], CopyBoth framing, XLogData/keepalive parsing, standby status
//! updates and a clean CopyDone shutdown.
//!
//! ```text
//! server ──CopyData('w' XLogData | 'k' keepalive)──▶ next()
//! server ◀──CopyData('r' write/flush/apply, reply)── send_status()
//! ```
//! `next()` is cancel-safe: it only awaits `PgConn::read_frame`, which keeps
//! partial frames in its buffer, so it can sit in `tokio::select!`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes};
use postgres_protocol::message::frontend;

use crate::event::Lsn;
use crate::secret::Secret;
use crate::source::conn::{quote_ident, quote_literal, PgConn};
use crate::source::error::SourceError;

/// Microseconds between 1970-01-01 and 2000-01-01 (the Postgres epoch).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// Now, in Postgres-epoch microseconds.
pub(crate) fn pg_now_us() -> i64 {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as i64;
    us - PG_EPOCH_OFFSET_US
}

/// Converts Postgres-epoch microseconds to Unix-epoch microseconds.
pub(crate) fn pg_to_unix_us(pg_us: i64) -> i64 {
    pg_us.saturating_add(PG_EPOCH_OFFSET_US)
}

#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// pgoutput protocol version; `None` = the highest the server speaks
    /// (1 below 14, 2 on 14, 3 on 15, 4 on 16+).
    pub proto_version: Option<u32>,
    /// Ask for in-progress streaming of large transactions (v2+).
    pub streaming: bool,
    /// Ask for logical decoding messages (`pg_logical_emit_message`).
    pub messages: bool,
    /// A WAL message over this many bytes is not held: see
    /// [`WalMessage::XLogData::oversized`]. `None`: up to Postgres's 1 GiB.
    pub max_message_bytes: Option<usize>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            proto_version: None,
            streaming: true,
            messages: false,
            max_message_bytes: None,
        }
    }
}

/// One message of the CopyBoth stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalMessage {
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        /// Postgres-epoch microseconds.
        server_time: i64,
        data: Bytes,
        /// The pgoutput message was this many bytes, over
        /// [`StreamOptions::max_message_bytes`]: `data` holds only its start.
        oversized: Option<usize>,
    },
    Keepalive {
        wal_end: Lsn,
        server_time: i64,
        reply_requested: bool,
    },
}

/// Result of `IDENTIFY_SYSTEM`.
#[derive(Clone, Debug)]
pub struct SystemId {
    pub dbname: Option<String>,
}

pub struct ReplicationStream {
    conn: PgConn,
    done: bool,
    /// Protocol version in use.
    pub proto_version: u32,
    pub(crate) streaming: bool,
}

impl std::fmt::Debug for ReplicationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("proto_version", &self.proto_version)
            .field("streaming", &self.streaming)
            .finish_non_exhaustive()
    }
}

/// Opens a replication connection (`replication=database`).
pub(crate) use crate::source::conn::connect_replication;

pub async fn identify_system(conn: &mut PgConn) -> Result<SystemId, SourceError> {
    let rows = conn.simple_query("IDENTIFY_SYSTEM").await?;
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(|| SourceError::Protocol("IDENTIFY_SYSTEM returned no row".into()))?;
    let col = |i: usize| row.get(i).cloned().flatten();
    Ok(SystemId { dbname: col(3) })
}

/// SQLSTATEs with which START_REPLICATION refuses a slot it cannot decode
/// from: object not in prerequisite state (an invalidated slot, 14-18,
/// whatever the message says in that version), and a WAL file already
/// removed (58P01, or XX000 from some code paths).
fn may_be_invalidated(code: &str) -> bool {
    matches!(code, "55000" | "58P01" | "XX000")
}

/// Maps START_REPLICATION's ErrorResponse. For the SQLSTATEs of a slot
/// that cannot be decoded from, `pg_replication_slots` decides (its
/// `wal_status` and `invalidation_reason`), not the message, whose text
/// changed from version to version.
async fn start_error(url: &Secret, slot: &str, code: &str, mapped: SourceError) -> SourceError {
    if may_be_invalidated(code) {
        if let Ok(sql) = crate::source::sql::connect(url).await {
            if let Ok(Some(info)) = crate::source::slot::slot_info(&sql, slot).await {
                if let Some(e) = info.invalidated_error() {
                    return e;
                }
            }
        }
    }
    mapped
}

/// The pgoutput protocol version for a server major version.
pub(crate) fn proto_for_server(major: u32) -> u32 {
    match major {
        0..=13 => 1,
        14 => 2,
        15 => 3,
        _ => 4,
    }
}

impl ReplicationStream {
    pub async fn start(
        url: &Secret,
        slot: &str,
        publication: &str,
        start: Lsn,
        opts: StreamOptions,
    ) -> Result<Self, SourceError> {
        let mut conn = connect_replication(url).await?;
        if let Some(max) = opts.max_message_bytes {
            conn.set_max_message(max);
        }
        conn.ctx.slot = Some(slot.to_string());
        conn.ctx.publication = Some(publication.to_string());
        identify_system(&mut conn).await?;
        let major = conn.server_major();
        let proto = opts
            .proto_version
            .unwrap_or_else(|| proto_for_server(major));
        let streaming = opts.streaming && proto >= 2;
        let mut options = vec![
            format!("proto_version '{proto}'"),
            format!(
                "publication_names {}",
                quote_literal(&quote_ident(publication))
            ),
        ];
        if opts.messages {
            options.push("messages 'true'".into());
        }
        if streaming {
            options.push("streaming 'true'".into());
        }
        let cmd = format!(
            "START_REPLICATION SLOT {} LOGICAL {} ({})",
            quote_ident(slot),
            start,
            options.join(", ")
        );
        frontend::query(&cmd, conn.wbuf())?;
        conn.flush().await?;
        loop {
            let f = conn.read_frame().await?;
            match f.tag {
                b'W' => break,
                b'E' => {
                    let code = crate::source::conn::parse_error_fields(&f.body).code;
                    return Err(start_error(url, slot, &code, conn.error(&f.body)).await);
                }
                b'N' | b'S' => {}
                other => {
                    return Err(SourceError::Protocol(format!(
                        "unexpected message {:?} after START_REPLICATION",
                        other as char
                    )))
                }
            }
        }
        Ok(ReplicationStream {
            conn,
            done: false,
            proto_version: proto,
            streaming,
        })
    }

    /// The next XLogData or keepalive; `None` after the server ended the
    /// stream with CopyDone. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<WalMessage>, SourceError> {
        while !self.done {
            let f = self.conn.read_frame().await?;
            if let Some(m) = self.on_frame(f)? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// The next message if a whole one is already buffered; `None` when
    /// `next()` would have to read the socket (or the stream has ended).
    /// Lets the caller drain what one read returned without a trip through
    /// the async machinery per message.
    pub(crate) fn try_next(&mut self) -> Result<Option<WalMessage>, SourceError> {
        while !self.done {
            let Some(f) = self.conn.try_frame()? else {
                break;
            };
            if let Some(m) = self.on_frame(f)? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// A frame of the CopyBoth stream: a message, the end, or nothing to report.
    fn on_frame(
        &mut self,
        f: crate::source::conn::Frame,
    ) -> Result<Option<WalMessage>, SourceError> {
        match f.tag {
            b'd' => {
                let mut m = parse_copy_data(f.body)?;
                if let (Some(total), WalMessage::XLogData { oversized, .. }) = (f.oversized, &mut m)
                {
                    // The XLogData header ('w' and three 8-byte fields).
                    *oversized = Some(total.saturating_sub(25));
                }
                Ok(Some(m))
            }
            b'c' => {
                self.done = true;
                Ok(None)
            }
            b'E' => Err(self.on_error(&f.body)),
            b'N' => self.on_notice(&f.body),
            b'S' | b'C' | b'Z' => Ok(None),
            other => Err(SourceError::Protocol(format!(
                "unexpected message {:?} in replication stream",
                other as char
            ))),
        }
    }

    /// A NoticeResponse inside the stream. From PostgreSQL 18 pgoutput no
    /// longer fails on a publication it cannot find at a change's WAL
    /// position: it sends a WARNING (SQLSTATE 55000, raised by
    /// `LoadPublications`) and skips the change. Skipped changes would be
    /// confirmed with the next keepalive and never reach Convex, so that
    /// warning ends the stream with the error every earlier version
    /// raises. The warning precedes any keepalive past the skipped change,
    /// so nothing beyond what was received is confirmed. Other warnings
    /// share the SQLSTATE (a standby named in `synchronized_standby_slots`
    /// is away, and the walsender waits for it): those are logged.
    fn on_notice(&mut self, body: &[u8]) -> Result<Option<WalMessage>, SourceError> {
        let notice = crate::source::conn::parse_error_fields(body);
        if notice.code == "55000"
            && notice.severity == "WARNING"
            && notice.routine.as_deref() == Some("LoadPublications")
        {
            return Err(SourceError::PublicationMissing {
                publication: self.conn.ctx.publication.clone().unwrap_or_default(),
            });
        }
        tracing::warn!(
            code = %notice.code,
            message = %notice.message,
            detail = notice.detail.as_deref().unwrap_or(""),
            "warning from the walsender"
        );
        Ok(None)
    }

    /// An ErrorResponse inside the stream (the server ends the stream).
    /// SQLSTATE 55000 there is a walsender that stops while it cannot
    /// proceed: a shutting-down primary whose standby in
    /// `synchronized_standby_slots` is gone (as after a failover), or a
    /// slot invalidated under it. Reconnecting is right for both: the next
    /// session checks the slot first, and an invalidated one stops `run`.
    fn on_error(&self, body: &[u8]) -> SourceError {
        match self.conn.error(body) {
            SourceError::Server { code, message } if code == "55000" => SourceError::Io(
                std::io::Error::other(format!("the walsender ended the stream (55000: {message})")),
            ),
            other => other,
        }
    }

    /// `next()` will return without reading the socket.
    pub(crate) fn has_buffered_message(&self) -> bool {
        self.done || self.conn.has_frame()
    }

    /// The stream runs over a Unix-domain socket.
    pub(crate) fn is_unix_socket(&self) -> bool {
        self.conn.unix
    }

    /// The receive buffer the kernel granted when we asked for a small one
    /// (loopback TCP); `None`: the kernel auto-tunes it.
    pub fn recv_buffer(&self) -> Option<u32> {
        self.conn.recv_buffer
    }

    /// Bytes the last socket read returned.
    pub(crate) fn last_read(&self) -> usize {
        self.conn.last_read()
    }

    /// Wake only once `bytes` of WAL are queued (1: on every arrival); see
    /// [`PgConn::set_wake_threshold`].
    pub(crate) fn set_wake_threshold(&self, bytes: u32) -> std::io::Result<()> {
        self.conn.set_wake_threshold(bytes)
    }

    /// Standby status update: everything up to `write`/`flush`/`apply` is
    /// received/durable/applied. Postgres sets `confirmed_flush_lsn` from
    /// `flush`.
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<(), SourceError> {
        let mut body = Vec::with_capacity(34);
        body.put_u8(b'r');
        body.put_u64(write.0);
        body.put_u64(flush.0);
        body.put_u64(apply.0);
        body.put_i64(pg_now_us());
        body.put_u8(reply_requested as u8);
        frontend::CopyData::new(&body[..])?.write(self.conn.wbuf());
        self.conn.flush().await
    }

    /// Ends the stream: CopyDone, drain until the server confirms, Terminate.
    pub async fn finish(mut self) {
        frontend::copy_done(self.conn.wbuf());
        if self.conn.flush().await.is_ok() {
            let drain = async {
                loop {
                    match self.conn.read_frame().await {
                        Ok(f) if f.tag == b'Z' => break,
                        Ok(f) if f.tag == b'E' => break,
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        }
        self.conn.close().await;
    }
}

/// Parses the payload of a CopyData frame of the replication protocol.
pub(crate) fn parse_copy_data(mut b: Bytes) -> Result<WalMessage, SourceError> {
    let short = || SourceError::Protocol("short replication message".into());
    if b.is_empty() {
        return Err(short());
    }
    match b.get_u8() {
        b'w' => {
            if b.len() < 24 {
                return Err(short());
            }
            let wal_start = Lsn(b.get_u64());
            let wal_end = Lsn(b.get_u64());
            let server_time = b.get_i64();
            Ok(WalMessage::XLogData {
                wal_start,
                wal_end,
                server_time,
                data: b,
                oversized: None,
            })
        }
        b'k' => {
            if b.len() < 17 {
                return Err(short());
            }
            Ok(WalMessage::Keepalive {
                wal_end: Lsn(b.get_u64()),
                server_time: b.get_i64(),
                reply_requested: b.get_u8() != 0,
            })
        }
        other => Err(SourceError::Protocol(format!(
            "unknown replication message {:?}",
            other as char
        ))),
    }
}
