//! The inverse of the pgoutput decoder: messages encoded the way the
//! server sends them. Test support only (property tests, the fuzzer, the
//! decoder benchmark), so it is not compiled into the service: enable the
//! `test-support` feature to use it outside this crate's unit tests.

use super::pgoutput::{PgOutputMessage, TupleValue};

/// Encodes a message the way pgoutput does (the inverse of [`decode`]);
/// used by tests, the fuzzer and tools that synthesise streams.
///
/// [`decode`]: super::pgoutput::decode
pub fn encode(m: &PgOutputMessage) -> Vec<u8> {
    use PgOutputMessage as M;
    let mut o = Out(Vec::new());
    match m {
        M::Begin { .. } | M::Commit { .. } | M::Origin { .. } => transaction(&mut o, m),
        M::Relation(_) | M::Type { .. } => schema(&mut o, m),
        M::Insert { .. } | M::Update { .. } | M::Delete { .. } | M::Truncate { .. } => {
            change(&mut o, m)
        }
        M::Message { .. } => logical_message(&mut o, m),
        M::StreamStart { .. } | M::StreamStop | M::StreamCommit { .. } | M::StreamAbort { .. } => {
            stream(&mut o, m)
        }
        M::BeginPrepare { .. }
        | M::Prepare { .. }
        | M::StreamPrepare { .. }
        | M::CommitPrepared { .. }
        | M::RollbackPrepared { .. } => two_phase(&mut o, m),
    }
    o.0
}

/// The message being written: big-endian integers, C strings and
/// TupleData appended in order, as the server lays them out.
struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    /// A NUL-terminated string.
    fn cstr(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes()).u8(0)
    }
    /// The xid of a data message inside a stream block; nothing outside one.
    fn xid(&mut self, x: &Option<u32>) -> &mut Self {
        if let Some(x) = x {
            self.u32(*x);
        }
        self
    }
    /// TupleData: an Int16 column count, then per column its kind byte
    /// and, for text and binary values, an Int32 length and the bytes.
    fn tuple(&mut self, t: &[TupleValue]) -> &mut Self {
        self.bytes(&(t.len() as i16).to_be_bytes());
        for v in t {
            match v {
                TupleValue::Null => self.u8(b'n'),
                TupleValue::Unchanged => self.u8(b'u'),
                TupleValue::Text(b) => self
                    .u8(b't')
                    .bytes(&(b.len() as i32).to_be_bytes())
                    .bytes(b),
                TupleValue::Binary(b) => self
                    .u8(b'b')
                    .bytes(&(b.len() as i32).to_be_bytes())
                    .bytes(b),
            };
        }
        self
    }
    /// The old-row part of Update and Delete: the key ('K') or the whole
    /// old row ('O'), whichever the message carries (the key when both).
    fn key_or_old(
        &mut self,
        key: &Option<Vec<TupleValue>>,
        old: &Option<Vec<TupleValue>>,
    ) -> &mut Self {
        if let Some(k) = key {
            self.u8(b'K').tuple(k);
        } else if let Some(k) = old {
            self.u8(b'O').tuple(k);
        }
        self
    }
}

/// Begin, Commit and Origin (the frame of a non-streamed transaction).
fn transaction(o: &mut Out, m: &PgOutputMessage) {
    use PgOutputMessage as M;
    match m {
        M::Begin {
            final_lsn,
            commit_time,
            xid,
        } => o.u8(b'B').u64(*final_lsn).i64(*commit_time).u32(*xid),
        M::Commit {
            flags,
            commit_lsn,
            end_lsn,
            commit_time,
        } => o
            .u8(b'C')
            .u8(*flags)
            .u64(*commit_lsn)
            .u64(*end_lsn)
            .i64(*commit_time),
        M::Origin { commit_lsn, name } => o.u8(b'O').u64(*commit_lsn).cstr(name),
        _ => unreachable!("encode sends only Begin, Commit and Origin here"),
    };
}

/// Relation and Type: the schema descriptions that precede changes.
fn schema(o: &mut Out, m: &PgOutputMessage) {
    use PgOutputMessage as M;
    match m {
        M::Relation(r) => {
            o.u8(b'R')
                .xid(&r.xid)
                .u32(r.oid)
                .cstr(&r.namespace)
                .cstr(&r.name)
                .u8(r.replica_identity)
                .bytes(&(r.columns.len() as i16).to_be_bytes());
            for c in &r.columns {
                o.u8(c.flags)
                    .cstr(&c.name)
                    .u32(c.type_oid)
                    .bytes(&c.type_modifier.to_be_bytes());
            }
        }
        M::Type {
            xid,
            oid,
            namespace,
            name,
        } => {
            o.u8(b'Y').xid(xid).u32(*oid).cstr(namespace).cstr(name);
        }
        _ => unreachable!("encode sends only Relation and Type here"),
    }
}

/// Insert, Update, Delete and Truncate: the row changes.
fn change(o: &mut Out, m: &PgOutputMessage) {
    use PgOutputMessage as M;
    match m {
        M::Insert { xid, relation, new } => {
            o.u8(b'I').xid(xid).u32(*relation).u8(b'N').tuple(new);
        }
        M::Update {
            xid,
            relation,
            key,
            old,
            new,
        } => {
            o.u8(b'U')
                .xid(xid)
                .u32(*relation)
                .key_or_old(key, old)
                .u8(b'N')
                .tuple(new);
        }
        M::Delete {
            xid,
            relation,
            key,
            old,
        } => {
            o.u8(b'D').xid(xid).u32(*relation).key_or_old(key, old);
        }
        M::Truncate {
            xid,
            options,
            relations,
        } => {
            o.u8(b'T').xid(xid).u32(relations.len() as u32).u8(*options);
            for r in relations {
                o.u32(*r);
            }
        }
        _ => unreachable!("encode sends only Insert, Update, Delete and Truncate here"),
    }
}

/// A logical decoding message (`pg_logical_emit_message`).
fn logical_message(o: &mut Out, m: &PgOutputMessage) {
    if let PgOutputMessage::Message {
        xid,
        flags,
        lsn,
        prefix,
        content,
    } = m
    {
        o.u8(b'M')
            .xid(xid)
            .u8(*flags)
            .u64(*lsn)
            .cstr(prefix)
            .u32(content.len() as u32)
            .bytes(content);
    }
}

/// Stream Start, Stop, Commit and Abort (protocol v2+ streaming).
fn stream(o: &mut Out, m: &PgOutputMessage) {
    use PgOutputMessage as M;
    match m {
        M::StreamStart { xid, first_segment } => {
            o.u8(b'S').u32(*xid).u8(*first_segment as u8);
        }
        M::StreamStop => {
            o.u8(b'E');
        }
        M::StreamCommit {
            xid,
            flags,
            commit_lsn,
            end_lsn,
            commit_time,
        } => {
            o.u8(b'c')
                .u32(*xid)
                .u8(*flags)
                .u64(*commit_lsn)
                .u64(*end_lsn)
                .i64(*commit_time);
        }
        M::StreamAbort {
            xid,
            subxid,
            abort_lsn,
            abort_time,
        } => {
            o.u8(b'A').u32(*xid).u32(*subxid);
            // Protocol v4 (parallel streaming) adds both, or neither.
            if let (Some(l), Some(t)) = (abort_lsn, abort_time) {
                o.u64(*l).i64(*t);
            }
        }
        _ => unreachable!("encode sends only stream control messages here"),
    }
}

/// The two-phase messages: Begin Prepare, Prepare, Stream Prepare, Commit
/// Prepared and Rollback Prepared. Prepare, Stream Prepare and Commit
/// Prepared share one layout (tag, flags, two LSNs, a time, xid, gid).
fn two_phase(o: &mut Out, m: &PgOutputMessage) {
    use PgOutputMessage as M;
    match m {
        M::BeginPrepare {
            prepare_lsn,
            end_lsn,
            prepare_time,
            xid,
            gid,
        } => o
            .u8(b'b')
            .u64(*prepare_lsn)
            .u64(*end_lsn)
            .i64(*prepare_time)
            .u32(*xid)
            .cstr(gid),
        M::Prepare {
            flags,
            prepare_lsn,
            end_lsn,
            prepare_time,
            xid,
            gid,
        }
        | M::StreamPrepare {
            flags,
            prepare_lsn,
            end_lsn,
            prepare_time,
            xid,
            gid,
        } => {
            let tag = if matches!(m, M::Prepare { .. }) {
                b'P'
            } else {
                b'p'
            };
            o.u8(tag)
                .u8(*flags)
                .u64(*prepare_lsn)
                .u64(*end_lsn)
                .i64(*prepare_time)
                .u32(*xid)
                .cstr(gid)
        }
        M::CommitPrepared {
            flags,
            commit_lsn,
            end_lsn,
            commit_time,
            xid,
            gid,
        } => o
            .u8(b'K')
            .u8(*flags)
            .u64(*commit_lsn)
            .u64(*end_lsn)
            .i64(*commit_time)
            .u32(*xid)
            .cstr(gid),
        M::RollbackPrepared {
            flags,
            prepare_end_lsn,
            rollback_end_lsn,
            prepare_time,
            rollback_time,
            xid,
            gid,
        } => o
            .u8(b'r')
            .u8(*flags)
            .u64(*prepare_end_lsn)
            .u64(*rollback_end_lsn)
            .i64(*prepare_time)
            .i64(*rollback_time)
            .u32(*xid)
            .cstr(gid),
        _ => unreachable!("encode sends only two-phase messages here"),
    };
}
