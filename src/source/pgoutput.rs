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
pub fn borrow_insert_prefix<'a>(
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
    pub in_stream: bool,
}

impl StreamState {
    pub fn decode(&mut self, data: &[u8]) -> Result<PgOutputMessage, DecodeError> {
        let m = decode(data, self.in_stream)?;
        self.track(m)
    }

    /// [`StreamState::decode`] without copying column values: they are
    /// slices of `data` (the XLogData frame).
    pub fn decode_bytes(&mut self, data: &Bytes) -> Result<PgOutputMessage, DecodeError> {
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

fn decode_in<'a>(
    data: &'a [u8],
    src: Option<&'a Bytes>,
    in_stream: bool,
) -> Result<PgOutputMessage, DecodeError> {
    let (&tag, rest) = data.split_first().ok_or(DecodeError::Empty)?;
    let mut c = Cur { b: rest, src };
    let m = match tag {
        b'B' => PgOutputMessage::Begin {
            final_lsn: c.u64("final_lsn")?,
            commit_time: c.i64("commit_time")?,
            xid: c.u32("xid")?,
        },
        b'C' => PgOutputMessage::Commit {
            flags: c.u8("flags")?,
            commit_lsn: c.u64("commit_lsn")?,
            end_lsn: c.u64("end_lsn")?,
            commit_time: c.i64("commit_time")?,
        },
        b'O' => PgOutputMessage::Origin {
            commit_lsn: c.u64("origin lsn")?,
            name: c.cstr("origin name")?,
        },
        b'R' => {
            let xid = c.xid_if(in_stream)?;
            let oid = c.u32("relation oid")?;
            let namespace = c.cstr("namespace")?;
            let name = c.cstr("relation name")?;
            let replica_identity = c.u8("replica identity")?;
            let n = c.i16("column count")?;
            if n < 0 {
                return Err(DecodeError::Negative("column count"));
            }
            let mut columns = Vec::with_capacity((n as usize).min(c.b.len()));
            for _ in 0..n {
                columns.push(Column {
                    flags: c.u8("column flags")?,
                    name: c.cstr("column name")?,
                    type_oid: c.u32("column type")?,
                    type_modifier: c.i32("column typmod")?,
                });
            }
            PgOutputMessage::Relation(Relation {
                xid,
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => PgOutputMessage::Type {
            xid: c.xid_if(in_stream)?,
            oid: c.u32("type oid")?,
            namespace: c.cstr("type namespace")?,
            name: c.cstr("type name")?,
        },
        b'I' => {
            let xid = c.xid_if(in_stream)?;
            let relation = c.u32("relation oid")?;
            match c.u8("tuple marker")? {
                b'N' => {}
                other => return Err(DecodeError::UnexpectedTuple(other)),
            }
            PgOutputMessage::Insert {
                xid,
                relation,
                new: c.tuple()?,
            }
        }
        b'U' => {
            let xid = c.xid_if(in_stream)?;
            let relation = c.u32("relation oid")?;
            let (mut key, mut old) = (None, None);
            let mut marker = c.u8("tuple marker")?;
            if marker == b'K' || marker == b'O' {
                let t = c.tuple()?;
                if marker == b'K' {
                    key = Some(t)
                } else {
                    old = Some(t)
                }
                marker = c.u8("tuple marker")?;
            }
            if marker != b'N' {
                return Err(DecodeError::UnexpectedTuple(marker));
            }
            PgOutputMessage::Update {
                xid,
                relation,
                key,
                old,
                new: c.tuple()?,
            }
        }
        b'D' => {
            let xid = c.xid_if(in_stream)?;
            let relation = c.u32("relation oid")?;
            let (key, old) = match c.u8("tuple marker")? {
                b'K' => (Some(c.tuple()?), None),
                b'O' => (None, Some(c.tuple()?)),
                other => return Err(DecodeError::UnexpectedTuple(other)),
            };
            PgOutputMessage::Delete {
                xid,
                relation,
                key,
                old,
            }
        }
        b'T' => {
            let xid = c.xid_if(in_stream)?;
            let n = c.u32("relation count")?;
            let options = c.u8("truncate options")?;
            let mut relations = Vec::with_capacity((n as usize).min(c.b.len() / 4));
            for _ in 0..n {
                relations.push(c.u32("relation oid")?);
            }
            PgOutputMessage::Truncate {
                xid,
                options,
                relations,
            }
        }
        b'M' => {
            let xid = c.xid_if(in_stream)?;
            let flags = c.u8("message flags")?;
            let lsn = c.u64("message lsn")?;
            let prefix = c.cstr("message prefix")?;
            let len = c.u32("message length")?;
            let content = Bytes::copy_from_slice(c.take(len as usize, "message content")?);
            PgOutputMessage::Message {
                xid,
                flags,
                lsn,
                prefix,
                content,
            }
        }
        b'S' => PgOutputMessage::StreamStart {
            xid: c.u32("xid")?,
            first_segment: match c.u8("first segment")? {
                0 => false,
                1 => true,
                v => return Err(DecodeError::Invalid("first segment", v)),
            },
        },
        b'E' => PgOutputMessage::StreamStop,
        b'c' => PgOutputMessage::StreamCommit {
            xid: c.u32("xid")?,
            flags: c.u8("flags")?,
            commit_lsn: c.u64("commit_lsn")?,
            end_lsn: c.u64("end_lsn")?,
            commit_time: c.i64("commit_time")?,
        },
        b'A' => {
            let xid = c.u32("xid")?;
            let subxid = c.u32("subxid")?;
            let (abort_lsn, abort_time) = if c.b.is_empty() {
                (None, None)
            } else {
                (Some(c.u64("abort_lsn")?), Some(c.i64("abort_time")?))
            };
            PgOutputMessage::StreamAbort {
                xid,
                subxid,
                abort_lsn,
                abort_time,
            }
        }
        b'b' => PgOutputMessage::BeginPrepare {
            prepare_lsn: c.u64("prepare_lsn")?,
            end_lsn: c.u64("end_lsn")?,
            prepare_time: c.i64("prepare_time")?,
            xid: c.u32("xid")?,
            gid: c.cstr("gid")?,
        },
        b'P' | b'p' => {
            let flags = c.u8("flags")?;
            let prepare_lsn = c.u64("prepare_lsn")?;
            let end_lsn = c.u64("end_lsn")?;
            let prepare_time = c.i64("prepare_time")?;
            let xid = c.u32("xid")?;
            let gid = c.cstr("gid")?;
            if tag == b'P' {
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
            }
        }
        b'K' => PgOutputMessage::CommitPrepared {
            flags: c.u8("flags")?,
            commit_lsn: c.u64("commit_lsn")?,
            end_lsn: c.u64("end_lsn")?,
            commit_time: c.i64("commit_time")?,
            xid: c.u32("xid")?,
            gid: c.cstr("gid")?,
        },
        b'r' => PgOutputMessage::RollbackPrepared {
            flags: c.u8("flags")?,
            prepare_end_lsn: c.u64("prepare_end_lsn")?,
            rollback_end_lsn: c.u64("rollback_end_lsn")?,
            prepare_time: c.i64("prepare_time")?,
            rollback_time: c.i64("rollback_time")?,
            xid: c.u32("xid")?,
            gid: c.cstr("gid")?,
        },
        other => return Err(DecodeError::UnknownMessage(other)),
    };
    if !c.b.is_empty() {
        return Err(DecodeError::Trailing(c.b.len()));
    }
    Ok(m)
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
