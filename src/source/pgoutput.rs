//! pgoutput decoder: logical replication message bytes → [`PgOutputMessage`],
//! protocol versions 1–4 (PG 10–17).
//!
//! Pure and panic-free: every read is bounds-checked and malformed input is a
//! [`DecodeError`]. Inside a stream block (between Stream Start and Stream
//! Stop) the data messages carry an extra transaction id; the caller says
//! whether it is inside one (see [`StreamState`]).

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message truncated while reading {0}")]
    Truncated(&'static str),
    #[error("unknown message type {0:#04x}")]
    UnknownMessage(u8),
    #[error("unknown tuple column kind {0:#04x}")]
    UnknownColumnKind(u8),
    #[error("unexpected tuple marker {0:#04x}")]
    UnexpectedTuple(u8),
    #[error("negative count in {0}")]
    Negative(&'static str),
    #[error("string in {0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("{0} trailing bytes after message")]
    Trailing(usize),
    #[error("empty message")]
    Empty,
    #[error("invalid value {1} for {0}")]
    Invalid(&'static str, u8),
}

/// One column value of a TupleData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    Null,
    /// Unchanged TOASTed value: the old value still holds, it was not sent.
    Unchanged,
    Text(Bytes),
    Binary(Bytes),
}

/// A column value borrowed from a message (see [`borrow_insert`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnRef<'a> {
    Null,
    Unchanged,
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

/// Most columns [`borrow_insert`] reads (runtime.events has 8).
pub const MAX_BORROWED_COLUMNS: usize = 32;

/// Reads an Insert without allocating: its xid (inside a stream block), its
/// relation oid, and its column values into `out`, borrowed from `data`;
/// returns how many. `None` when `data` is not a well-formed Insert of at
/// most [`MAX_BORROWED_COLUMNS`] columns: [`decode`] it then, which says
/// what is wrong. The hot path of decoding: no `Vec`, no `Bytes` per column.
pub fn borrow_insert<'a>(
    data: &'a [u8],
    in_stream: bool,
    out: &mut [ColumnRef<'a>; MAX_BORROWED_COLUMNS],
) -> Option<(Option<u32>, u32, usize)> {
    let (&b'I', rest) = data.split_first()? else {
        return None;
    };
    let mut c = Cur { b: rest, src: None };
    let xid = c.xid_if(in_stream).ok()?;
    let relation = c.u32("relation oid").ok()?;
    if c.u8("tuple marker").ok()? != b'N' {
        return None;
    }
    let n = usize::try_from(c.i16("tuple column count").ok()?).ok()?;
    if n > MAX_BORROWED_COLUMNS {
        return None;
    }
    for slot in out.iter_mut().take(n) {
        *slot = match c.u8("column kind").ok()? {
            b'n' => ColumnRef::Null,
            b'u' => ColumnRef::Unchanged,
            k @ (b't' | b'b') => {
                let len = usize::try_from(c.i32("column length").ok()?).ok()?;
                let v = c.take(len, "column value").ok()?;
                if k == b't' {
                    ColumnRef::Text(v)
                } else {
                    ColumnRef::Binary(v)
                }
            }
            _ => return None,
        };
    }
    c.b.is_empty().then_some((xid, relation, n))
}

/// [`borrow_insert`] for the start of an Insert cut short (a message read
/// through without being held, see `PgConn::set_max_message`): the columns
/// that are whole, then the start of the one the cut fell in, as `Text`.
/// Returns (xid, relation, columns filled, whether the last is cut).
pub(crate) fn borrow_insert_prefix<'a>(
    data: &'a [u8],
    in_stream: bool,
    out: &mut [ColumnRef<'a>; MAX_BORROWED_COLUMNS],
) -> Option<(Option<u32>, u32, usize, bool)> {
    let (&b'I', rest) = data.split_first()? else {
        return None;
    };
    let mut c = Cur { b: rest, src: None };
    let xid = c.xid_if(in_stream).ok()?;
    let relation = c.u32("relation oid").ok()?;
    if c.u8("tuple marker").ok()? != b'N' {
        return None;
    }
    let n = usize::try_from(c.i16("tuple column count").ok()?).ok()?;
    let mut filled = 0;
    for slot in out.iter_mut().take(n) {
        let Ok(kind) = c.u8("column kind") else {
            return Some((xid, relation, filled, false));
        };
        *slot = match kind {
            b'n' => ColumnRef::Null,
            b'u' => ColumnRef::Unchanged,
            b't' | b'b' => {
                let Ok(len) = c.i32("column length") else {
                    return Some((xid, relation, filled, false));
                };
                let len = usize::try_from(len).ok()?;
                if c.b.len() < len {
                    *slot = ColumnRef::Text(c.b);
                    return Some((xid, relation, filled + 1, true));
                }
                let v = c.take(len, "column value").ok()?;
                if kind == b't' {
                    ColumnRef::Text(v)
                } else {
                    ColumnRef::Binary(v)
                }
            }
            _ => return None,
        };
        filled += 1;
    }
    Some((xid, relation, filled, false))
}

impl TupleValue {
    /// This value as a [`ColumnRef`].
    pub fn as_column(&self) -> ColumnRef<'_> {
        match self {
            TupleValue::Null => ColumnRef::Null,
            TupleValue::Unchanged => ColumnRef::Unchanged,
            TupleValue::Text(b) => ColumnRef::Text(b),
            TupleValue::Binary(b) => ColumnRef::Binary(b),
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            TupleValue::Text(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Bit 1: part of the replica identity key.
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub xid: Option<u32>,
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage {
    Begin {
        final_lsn: u64,
        commit_time: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
    },
    Origin {
        commit_lsn: u64,
        name: String,
    },
    Relation(Relation),
    Type {
        xid: Option<u32>,
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        xid: Option<u32>,
        relation: u32,
        new: Vec<TupleValue>,
    },
    /// `key` is the 'K' (replica identity key) tuple, `old` the 'O' (full
    /// old row) tuple; at most one is present.
    Update {
        xid: Option<u32>,
        relation: u32,
        key: Option<Vec<TupleValue>>,
        old: Option<Vec<TupleValue>>,
        new: Vec<TupleValue>,
    },
    Delete {
        xid: Option<u32>,
        relation: u32,
        key: Option<Vec<TupleValue>>,
        old: Option<Vec<TupleValue>>,
    },
    Truncate {
        xid: Option<u32>,
        options: u8,
        relations: Vec<u32>,
    },
    Message {
        xid: Option<u32>,
        flags: u8,
        lsn: u64,
        prefix: String,
        content: Bytes,
    },
    StreamStart {
        xid: u32,
        first_segment: bool,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
    },
    /// `abort_lsn`/`abort_time` are sent by protocol v4 with parallel streaming.
    StreamAbort {
        xid: u32,
        subxid: u32,
        abort_lsn: Option<u64>,
        abort_time: Option<i64>,
    },
    BeginPrepare {
        prepare_lsn: u64,
        end_lsn: u64,
        prepare_time: i64,
        xid: u32,
        gid: String,
    },
    Prepare {
        flags: u8,
        prepare_lsn: u64,
        end_lsn: u64,
        prepare_time: i64,
        xid: u32,
        gid: String,
    },
    CommitPrepared {
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
        xid: u32,
        gid: String,
    },
    RollbackPrepared {
        flags: u8,
        prepare_end_lsn: u64,
        rollback_end_lsn: u64,
        prepare_time: i64,
        rollback_time: i64,
        xid: u32,
        gid: String,
    },
    StreamPrepare {
        flags: u8,
        prepare_lsn: u64,
        end_lsn: u64,
        prepare_time: i64,
        xid: u32,
        gid: String,
    },
}

/// Tracks Stream Start / Stream Stop so that data messages are decoded with
/// or without their xid.
#[derive(Debug, Default, Clone)]
pub struct StreamState {
    pub(crate) in_stream: bool,
}

impl StreamState {
    pub fn decode(&mut self, data: &[u8]) -> Result<PgOutputMessage, DecodeError> {
        let m = decode(data, self.in_stream)?;
        self.track(m)
    }

    /// [`StreamState::decode`] without copying column values: they are
    /// slices of `data` (the XLogData frame).
    pub(crate) fn decode_bytes(&mut self, data: &Bytes) -> Result<PgOutputMessage, DecodeError> {
        let m = decode_bytes(data, self.in_stream)?;
        self.track(m)
    }

    fn track(&mut self, m: PgOutputMessage) -> Result<PgOutputMessage, DecodeError> {
        match m {
            PgOutputMessage::StreamStart { .. } => self.in_stream = true,
            PgOutputMessage::StreamStop => self.in_stream = false,
            _ => {}
        }
        Ok(m)
    }
}

struct Cur<'a> {
    b: &'a [u8],
    /// The buffer `b` lies in, when column values may share it.
    src: Option<&'a Bytes>,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self, w: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, w)?[0])
    }
    fn u32(&mut self, w: &'static str) -> Result<u32, DecodeError> {
        let s = self.take(4, w)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn i32(&mut self, w: &'static str) -> Result<i32, DecodeError> {
        Ok(self.u32(w)? as i32)
    }
    fn i16(&mut self, w: &'static str) -> Result<i16, DecodeError> {
        let s = self.take(2, w)?;
        Ok(i16::from_be_bytes([s[0], s[1]]))
    }
    fn u64(&mut self, w: &'static str) -> Result<u64, DecodeError> {
        let s = self.take(8, w)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    fn i64(&mut self, w: &'static str) -> Result<i64, DecodeError> {
        Ok(self.u64(w)? as i64)
    }
    fn cstr(&mut self, w: &'static str) -> Result<String, DecodeError> {
        let end = self
            .b
            .iter()
            .position(|c| *c == 0)
            .ok_or(DecodeError::Truncated(w))?;
        let s = std::str::from_utf8(&self.b[..end]).map_err(|_| DecodeError::Utf8(w))?;
        let s = s.to_string();
        self.b = &self.b[end + 1..];
        Ok(s)
    }
    fn xid_if(&mut self, in_stream: bool) -> Result<Option<u32>, DecodeError> {
        if in_stream {
            Ok(Some(self.u32("xid")?))
        } else {
            Ok(None)
        }
    }
    fn tuple(&mut self) -> Result<Vec<TupleValue>, DecodeError> {
        let n = self.i16("tuple column count")?;
        if n < 0 {
            return Err(DecodeError::Negative("tuple column count"));
        }
        let mut cols = Vec::with_capacity((n as usize).min(self.b.len()));
        for _ in 0..n {
            let v = match self.u8("column kind")? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::Unchanged,
                k @ (b't' | b'b') => {
                    let len = self.i32("column length")?;
                    if len < 0 {
                        return Err(DecodeError::Negative("column length"));
                    }
                    let raw = self.take(len as usize, "column value")?;
                    let v = match self.src {
                        Some(src) => src.slice_ref(raw),
                        None => Bytes::copy_from_slice(raw),
                    };
                    if k == b't' {
                        TupleValue::Text(v)
                    } else {
                        TupleValue::Binary(v)
                    }
                }
                other => return Err(DecodeError::UnknownColumnKind(other)),
            };
            cols.push(v);
        }
        Ok(cols)
    }
}

/// Decodes one pgoutput message. `in_stream`: inside a Stream Start/Stop block.
pub fn decode(data: &[u8], in_stream: bool) -> Result<PgOutputMessage, DecodeError> {
    decode_in(data, None, in_stream)
}

/// [`decode`] with column values as zero-copy slices of `data`.
pub fn decode_bytes(data: &Bytes, in_stream: bool) -> Result<PgOutputMessage, DecodeError> {
    decode_in(data, Some(data), in_stream)
}

/// Decodes one message: its tag picks the reader, which consumes exactly
/// the fields of that message type; bytes left over are an error. Column
/// values are slices of `src` when given (the buffer `data` lies in),
/// copies otherwise.
fn decode_in<'a>(
    data: &'a [u8],
    src: Option<&'a Bytes>,
    in_stream: bool,
) -> Result<PgOutputMessage, DecodeError> {
    let (&tag, rest) = data.split_first().ok_or(DecodeError::Empty)?;
    let mut c = Cur { b: rest, src };
    let m = match tag {
        b'B' => c.begin()?,
        b'C' => c.commit()?,
        b'O' => c.origin()?,
        b'R' => c.relation(in_stream)?,
        b'Y' => c.type_message(in_stream)?,
        b'I' => c.insert(in_stream)?,
        b'U' => c.update(in_stream)?,
        b'D' => c.delete(in_stream)?,
        b'T' => c.truncate(in_stream)?,
        b'M' => c.logical_message(in_stream)?,
        b'S' => c.stream_start()?,
        b'E' => PgOutputMessage::StreamStop,
        b'c' => c.stream_commit()?,
        b'A' => c.stream_abort()?,
        b'b' => c.begin_prepare()?,
        b'P' | b'p' => c.prepare(tag == b'P')?,
        b'K' => c.commit_prepared()?,
        b'r' => c.rollback_prepared()?,
        other => return Err(DecodeError::UnknownMessage(other)),
    };
    if !c.b.is_empty() {
        return Err(DecodeError::Trailing(c.b.len()));
    }
    Ok(m)
}

/// One reader per message type: each starts after the tag byte, reads the
/// fields in wire order (the first short or invalid field is the error)
/// and leaves any trailing bytes to [`decode_in`]. `in_stream`: the data
/// messages start with an xid (inside a stream block).
impl Cur<'_> {
    fn begin(&mut self) -> Result<PgOutputMessage, DecodeError> {
        Ok(PgOutputMessage::Begin {
            final_lsn: self.u64("final_lsn")?,
            commit_time: self.i64("commit_time")?,
            xid: self.u32("xid")?,
        })
    }

    fn commit(&mut self) -> Result<PgOutputMessage, DecodeError> {
        Ok(PgOutputMessage::Commit {
            flags: self.u8("flags")?,
            commit_lsn: self.u64("commit_lsn")?,
            end_lsn: self.u64("end_lsn")?,
            commit_time: self.i64("commit_time")?,
        })
    }

    fn origin(&mut self) -> Result<PgOutputMessage, DecodeError> {
        Ok(PgOutputMessage::Origin {
            commit_lsn: self.u64("origin lsn")?,
            name: self.cstr("origin name")?,
        })
    }

    /// Relation: its columns are preallocated for at most as many as the
    /// remaining bytes could hold, whatever count the message claims.
    fn relation(&mut self, in_stream: bool) -> Result<PgOutputMessage, DecodeError> {
        let xid = self.xid_if(in_stream)?;
        let oid = self.u32("relation oid")?;
        let namespace = self.cstr("namespace")?;
        let name = self.cstr("relation name")?;
        let replica_identity = self.u8("replica identity")?;
        let n = self.i16("column count")?;
        if n < 0 {
            return Err(DecodeError::Negative("column count"));
        }
        let mut columns = Vec::with_capacity((n as usize).min(self.b.len()));
        for _ in 0..n {
            columns.push(Column {
                flags: self.u8("column flags")?,
                name: self.cstr("column name")?,
                type_oid: self.u32("column type")?,
                type_modifier: self.i32("column typmod")?,
            });
        }
        Ok(PgOutputMessage::Relation(Relation {
            xid,
            oid,
            namespace,
            name,
            replica_identity,
            columns,
        }))
    }

    fn type_message(&mut self, in_stream: bool) -> Result<PgOutputMessage, DecodeError> {
        Ok(PgOutputMessage::Type {
            xid: self.xid_if(in_stream)?,
            oid: self.u32("type oid")?,
            namespace: self.cstr("type namespace")?,
            name: self.cstr("type name")?,
        })
    }

    /// Insert: the new row, after an 'N' marker.
    #[inline]
    fn insert(&mut self, in_stream: bool) -> Result<PgOutputMessage, DecodeError> {
        let xid = self.xid_if(in_stream)?;
        let relation = self.u32("relation oid")?;
        match self.u8("tuple marker")? {
            b'N' => {}
            other => return Err(DecodeError::UnexpectedTuple(other)),
        }
        Ok(PgOutputMessage::Insert {
            xid,
            relation,
            new: self.tuple()?,
        })
    }

    /// Update: an optional key ('K') or old row ('O'), then the new row
    /// after an 'N' marker.
    #[inline]
    fn update(&mut self, in_stream: bool) -> Result<PgOutputMessage, DecodeError> {
        let xid = self.xid_if(in_stream)?;
        let relation = self.u32("relation oid")?;
        let (mut key, mut old) = (None, None);
        let mut marker = self.u8("tuple marker")?;
        if marker == b'K' || marker == b'O' {
            let t = self.tuple()?;
            if marker == b'K' {
                key = Some(t)
            } else {
                old = Some(t)
            }
            marker = self.u8("tuple marker")?;
        }
        if marker != b'N' {
            return Err(DecodeError::UnexpectedTuple(marker));
        }
        Ok(PgOutputMessage::Update {
            xid,
            relation,
            key,
            old,
            new: self.tuple()?,
        })
    }

    /// Delete: the key ('K') or the whole old row ('O'), exactly one.
    #[inline]
    fn delete(&mut self, in_stream: bool) -> Result<PgOutputMessage, DecodeError> {
        let xid = self.xid_if(in_stream)?;
        let relation = self.u32("relation oid")?;
        let (key, old) = match self.u8("tuple marker")? {
            b'K' => (Some(self.tuple()?), None),
            b'O' => (None, Some(self.tuple()?)),
            other => return Err(DecodeError::UnexpectedTuple(other)),
        };
        Ok(PgOutputMessage::Delete {
            xid,
            relation,
            key,
            old,
        })
    }

    /// Truncate: the oids are preallocated for at most as many as the
    /// remaining bytes could hold.
    fn truncate(&mut self, in_stream: bool) -> Result<PgOutputMessage, DecodeError> {
        let xid = self.xid_if(in_stream)?;
        let n = self.u32("relation count")?;
        let options = self.u8("truncate options")?;
        let mut relations = Vec::with_capacity((n as usize).min(self.b.len() / 4));
        for _ in 0..n {
            relations.push(self.u32("relation oid")?);
        }
        Ok(PgOutputMessage::Truncate {
            xid,
            options,
            relations,
        })
    }

    /// A logical decoding message; its content is always copied.
    fn logical_message(&mut self, in_stream: bool) -> Result<PgOutputMessage, DecodeError> {
        let xid = self.xid_if(in_stream)?;
        let flags = self.u8("message flags")?;
        let lsn = self.u64("message lsn")?;
        let prefix = self.cstr("message prefix")?;
        let len = self.u32("message length")?;
        let content = Bytes::copy_from_slice(self.take(len as usize, "message content")?);
        Ok(PgOutputMessage::Message {
            xid,
            flags,
            lsn,
            prefix,
            content,
        })
    }

    fn stream_start(&mut self) -> Result<PgOutputMessage, DecodeError> {
        Ok(PgOutputMessage::StreamStart {
            xid: self.u32("xid")?,
            first_segment: match self.u8("first segment")? {
                0 => false,
                1 => true,
                v => return Err(DecodeError::Invalid("first segment", v)),
            },
        })
    }

    fn stream_commit(&mut self) -> Result<PgOutputMessage, DecodeError> {
        Ok(PgOutputMessage::StreamCommit {
            xid: self.u32("xid")?,
            flags: self.u8("flags")?,
            commit_lsn: self.u64("commit_lsn")?,
            end_lsn: self.u64("end_lsn")?,
            commit_time: self.i64("commit_time")?,
        })
    }

    /// Stream Abort: the abort LSN and time (protocol v4) are read when
    /// any bytes follow the subtransaction id.
    fn stream_abort(&mut self) -> Result<PgOutputMessage, DecodeError> {
        let xid = self.u32("xid")?;
        let subxid = self.u32("subxid")?;
        let (abort_lsn, abort_time) = if self.b.is_empty() {
            (None, None)
        } else {
            (Some(self.u64("abort_lsn")?), Some(self.i64("abort_time")?))
        };
        Ok(PgOutputMessage::StreamAbort {
            xid,
            subxid,
            abort_lsn,
            abort_time,
        })
    }

    fn begin_prepare(&mut self) -> Result<PgOutputMessage, DecodeError> {
        Ok(PgOutputMessage::BeginPrepare {
            prepare_lsn: self.u64("prepare_lsn")?,
            end_lsn: self.u64("end_lsn")?,
            prepare_time: self.i64("prepare_time")?,
            xid: self.u32("xid")?,
            gid: self.cstr("gid")?,
        })
    }

    /// Prepare ('P', `plain`) and Stream Prepare ('p'): one layout.
    fn prepare(&mut self, plain: bool) -> Result<PgOutputMessage, DecodeError> {
        let flags = self.u8("flags")?;
        let prepare_lsn = self.u64("prepare_lsn")?;
        let end_lsn = self.u64("end_lsn")?;
        let prepare_time = self.i64("prepare_time")?;
        let xid = self.u32("xid")?;
        let gid = self.cstr("gid")?;
        Ok(if plain {
            PgOutputMessage::Prepare {
                flags,
                prepare_lsn,
                end_lsn,
                prepare_time,
                xid,
                gid,
            }
        } else {
            PgOutputMessage::StreamPrepare {
                flags,
                prepare_lsn,
                end_lsn,
                prepare_time,
                xid,
                gid,
            }
        })
    }

    fn commit_prepared(&mut self) -> Result<PgOutputMessage, DecodeError> {
        Ok(PgOutputMessage::CommitPrepared {
            flags: self.u8("flags")?,
            commit_lsn: self.u64("commit_lsn")?,
            end_lsn: self.u64("end_lsn")?,
            commit_time: self.i64("commit_time")?,
            xid: self.u32("xid")?,
            gid: self.cstr("gid")?,
        })
    }

    fn rollback_prepared(&mut self) -> Result<PgOutputMessage, DecodeError> {
        Ok(PgOutputMessage::RollbackPrepared {
            flags: self.u8("flags")?,
            prepare_end_lsn: self.u64("prepare_end_lsn")?,
            rollback_end_lsn: self.u64("rollback_end_lsn")?,
            prepare_time: self.i64("prepare_time")?,
            rollback_time: self.i64("rollback_time")?,
            xid: self.u32("xid")?,
            gid: self.cstr("gid")?,
        })
    }
}

/// Whether a message's data fields carry an xid inside a stream block.
pub fn streamed_xid(m: &PgOutputMessage) -> Option<Option<u32>> {
    use PgOutputMessage as M;
    match m {
        M::Relation(r) => Some(r.xid),
        M::Type { xid, .. }
        | M::Insert { xid, .. }
        | M::Update { xid, .. }
        | M::Delete { xid, .. }
        | M::Truncate { xid, .. }
        | M::Message { xid, .. } => Some(*xid),
        _ => None,
    }
}
