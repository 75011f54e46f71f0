//! The inverse of the pgoutput decoder: messages encoded the way the
//! server sends them. Test support only (property tests, the fuzzer, the
//! decoder benchmark), so it is not compiled into the service: enable the
//! `test-support` feature to use it outside this crate's unit tests.

use super::pgoutput::{PgOutputMessage, TupleValue};

/// Encodes a message the way pgoutput does (the inverse of [`decode`]);
/// used by tests, the fuzzer and tools that synthesise streams.
pub fn encode(m: &PgOutputMessage) -> Vec<u8> {
    fn cstr(o: &mut Vec<u8>, s: &str) {
        o.extend_from_slice(s.as_bytes());
        o.push(0);
    }
    fn xid(o: &mut Vec<u8>, x: &Option<u32>) {
        if let Some(x) = x {
            o.extend_from_slice(&x.to_be_bytes());
        }
    }
    fn tuple(o: &mut Vec<u8>, t: &[TupleValue]) {
        o.extend_from_slice(&(t.len() as i16).to_be_bytes());
        for v in t {
            match v {
                TupleValue::Null => o.push(b'n'),
                TupleValue::Unchanged => o.push(b'u'),
                TupleValue::Text(b) | TupleValue::Binary(b) => {
                    o.push(if matches!(v, TupleValue::Text(_)) {
                        b't'
                    } else {
                        b'b'
                    });
                    o.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    o.extend_from_slice(b);
                }
            }
        }
    }
    /// The old-row part of Update and Delete: the key ('K') or the whole
    /// old row ('O'), whichever the message carries.
    fn key_or_old(o: &mut Vec<u8>, key: &Option<Vec<TupleValue>>, old: &Option<Vec<TupleValue>>) {
        if let Some(k) = key {
            o.push(b'K');
            tuple(o, k);
        } else if let Some(k) = old {
            o.push(b'O');
            tuple(o, k);
        }
    }
    #[allow(clippy::too_many_arguments)]
    fn prep(o: &mut Vec<u8>, tag: u8, flags: u8, a: u64, b: u64, t: i64, x: u32, gid: &str) {
        o.push(tag);
        o.push(flags);
        o.extend_from_slice(&a.to_be_bytes());
        o.extend_from_slice(&b.to_be_bytes());
        o.extend_from_slice(&t.to_be_bytes());
        o.extend_from_slice(&x.to_be_bytes());
        cstr(o, gid);
    }
    use PgOutputMessage as M;
    let mut o = Vec::new();
    match m {
        M::Begin {
            final_lsn,
            commit_time,
            xid: x,
        } => {
            o.push(b'B');
            o.extend_from_slice(&final_lsn.to_be_bytes());
            o.extend_from_slice(&commit_time.to_be_bytes());
            o.extend_from_slice(&x.to_be_bytes());
        }
        M::Commit {
            flags,
            commit_lsn,
            end_lsn,
            commit_time,
        } => {
            o.push(b'C');
            o.push(*flags);
            o.extend_from_slice(&commit_lsn.to_be_bytes());
            o.extend_from_slice(&end_lsn.to_be_bytes());
            o.extend_from_slice(&commit_time.to_be_bytes());
        }
        M::Origin { commit_lsn, name } => {
            o.push(b'O');
            o.extend_from_slice(&commit_lsn.to_be_bytes());
            cstr(&mut o, name);
        }
        M::Relation(r) => {
            o.push(b'R');
            xid(&mut o, &r.xid);
            o.extend_from_slice(&r.oid.to_be_bytes());
            cstr(&mut o, &r.namespace);
            cstr(&mut o, &r.name);
            o.push(r.replica_identity);
            o.extend_from_slice(&(r.columns.len() as i16).to_be_bytes());
            for c in &r.columns {
                o.push(c.flags);
                cstr(&mut o, &c.name);
                o.extend_from_slice(&c.type_oid.to_be_bytes());
                o.extend_from_slice(&c.type_modifier.to_be_bytes());
            }
        }
        M::Type {
            xid: x,
            oid,
            namespace,
            name,
        } => {
            o.push(b'Y');
            xid(&mut o, x);
            o.extend_from_slice(&oid.to_be_bytes());
            cstr(&mut o, namespace);
            cstr(&mut o, name);
        }
        M::Insert {
            xid: x,
            relation,
            new,
        } => {
            o.push(b'I');
            xid(&mut o, x);
            o.extend_from_slice(&relation.to_be_bytes());
            o.push(b'N');
            tuple(&mut o, new);
        }
        M::Update {
            xid: x,
            relation,
            key,
            old,
            new,
        } => {
            o.push(b'U');
            xid(&mut o, x);
            o.extend_from_slice(&relation.to_be_bytes());
            key_or_old(&mut o, key, old);
            o.push(b'N');
            tuple(&mut o, new);
        }
        M::Delete {
            xid: x,
            relation,
            key,
            old,
        } => {
            o.push(b'D');
            xid(&mut o, x);
            o.extend_from_slice(&relation.to_be_bytes());
            key_or_old(&mut o, key, old);
        }
        M::Truncate {
            xid: x,
            options,
            relations,
        } => {
            o.push(b'T');
            xid(&mut o, x);
            o.extend_from_slice(&(relations.len() as u32).to_be_bytes());
            o.push(*options);
            for r in relations {
                o.extend_from_slice(&r.to_be_bytes());
            }
        }
        M::Message {
            xid: x,
            flags,
            lsn,
            prefix,
            content,
        } => {
            o.push(b'M');
            xid(&mut o, x);
            o.push(*flags);
            o.extend_from_slice(&lsn.to_be_bytes());
            cstr(&mut o, prefix);
            o.extend_from_slice(&(content.len() as u32).to_be_bytes());
            o.extend_from_slice(content);
        }
        M::StreamStart {
            xid: x,
            first_segment,
        } => {
            o.push(b'S');
            o.extend_from_slice(&x.to_be_bytes());
            o.push(*first_segment as u8);
        }
        M::StreamStop => o.push(b'E'),
        M::StreamCommit {
            xid: x,
            flags,
            commit_lsn,
            end_lsn,
            commit_time,
        } => {
            o.push(b'c');
            o.extend_from_slice(&x.to_be_bytes());
            o.push(*flags);
            o.extend_from_slice(&commit_lsn.to_be_bytes());
            o.extend_from_slice(&end_lsn.to_be_bytes());
            o.extend_from_slice(&commit_time.to_be_bytes());
        }
        M::StreamAbort {
            xid: x,
            subxid,
            abort_lsn,
            abort_time,
        } => {
            o.push(b'A');
            o.extend_from_slice(&x.to_be_bytes());
            o.extend_from_slice(&subxid.to_be_bytes());
            if let (Some(l), Some(t)) = (abort_lsn, abort_time) {
                o.extend_from_slice(&l.to_be_bytes());
                o.extend_from_slice(&t.to_be_bytes());
            }
        }
        M::BeginPrepare {
            prepare_lsn,
            end_lsn,
            prepare_time,
            xid: x,
            gid,
        } => {
            o.push(b'b');
            o.extend_from_slice(&prepare_lsn.to_be_bytes());
            o.extend_from_slice(&end_lsn.to_be_bytes());
            o.extend_from_slice(&prepare_time.to_be_bytes());
            o.extend_from_slice(&x.to_be_bytes());
            cstr(&mut o, gid);
        }
        M::Prepare {
            flags,
            prepare_lsn,
            end_lsn,
            prepare_time,
            xid: x,
            gid,
        } => prep(
            &mut o,
            b'P',
            *flags,
            *prepare_lsn,
            *end_lsn,
            *prepare_time,
            *x,
            gid,
        ),
        M::StreamPrepare {
            flags,
            prepare_lsn,
            end_lsn,
            prepare_time,
            xid: x,
            gid,
        } => prep(
            &mut o,
            b'p',
            *flags,
            *prepare_lsn,
            *end_lsn,
            *prepare_time,
            *x,
            gid,
        ),
        M::CommitPrepared {
            flags,
            commit_lsn,
            end_lsn,
            commit_time,
            xid: x,
            gid,
        } => prep(
            &mut o,
            b'K',
            *flags,
            *commit_lsn,
            *end_lsn,
            *commit_time,
            *x,
            gid,
        ),
        M::RollbackPrepared {
            flags,
            prepare_end_lsn,
            rollback_end_lsn,
            prepare_time,
            rollback_time,
            xid: x,
            gid,
        } => {
            o.push(b'r');
            o.push(*flags);
            o.extend_from_slice(&prepare_end_lsn.to_be_bytes());
            o.extend_from_slice(&rollback_end_lsn.to_be_bytes());
            o.extend_from_slice(&prepare_time.to_be_bytes());
            o.extend_from_slice(&rollback_time.to_be_bytes());
            o.extend_from_slice(&x.to_be_bytes());
            cstr(&mut o, gid);
        }
    }
    o
}
