//! Property tests of the pgoutput decoder: arbitrary bytes never panic;
//! every generated message of protocol v1–v4 survives encode → decode; the
//! event decoder never panics on arbitrary message sequences.

use bytes::Bytes;
use proptest::prelude::*;

use projector::source::event::EventDecoder;
use projector::source::pgoutput::{
    borrow_insert, decode, decode_bytes, streamed_xid, Column, ColumnRef, PgOutputMessage as M,
    Relation, TupleValue, MAX_BORROWED_COLUMNS,
};
use projector::source::pgoutput_encode::encode;

fn name() -> impl Strategy<Value = String> {
    "[a-z_\u{e9}\u{4e2d}]{0,12}"
}

fn value() -> impl Strategy<Value = TupleValue> {
    prop_oneof![
        Just(TupleValue::Null),
        Just(TupleValue::Unchanged),
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|v| TupleValue::Text(Bytes::from(v))),
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|v| TupleValue::Binary(Bytes::from(v))),
    ]
}

fn tuple() -> impl Strategy<Value = Vec<TupleValue>> {
    proptest::collection::vec(value(), 0..8)
}

fn message() -> impl Strategy<Value = M> {
    let x = proptest::option::of(any::<u32>());
    prop_oneof![
        (any::<u64>(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| {
            M::Begin {
                final_lsn,
                commit_time,
                xid,
            }
        }),
        (any::<u8>(), any::<u64>(), any::<u64>(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time)| M::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time
            }
        ),
        (any::<u64>(), name()).prop_map(|(commit_lsn, name)| M::Origin { commit_lsn, name }),
        (
            x.clone(),
            any::<u32>(),
            name(),
            name(),
            any::<u8>(),
            proptest::collection::vec((any::<u8>(), name(), any::<u32>(), any::<i32>()), 0..6)
        )
            .prop_map(
                |(xid, oid, namespace, name, replica_identity, cols)| M::Relation(Relation {
                    xid,
                    oid,
                    namespace,
                    name,
                    replica_identity,
                    columns: cols
                        .into_iter()
                        .map(|(flags, name, type_oid, type_modifier)| Column {
                            flags,
                            name,
                            type_oid,
                            type_modifier
                        })
                        .collect(),
                })
            ),
        (x.clone(), any::<u32>(), name(), name()).prop_map(|(xid, oid, namespace, name)| M::Type {
            xid,
            oid,
            namespace,
            name
        }),
        (x.clone(), any::<u32>(), tuple()).prop_map(|(xid, relation, new)| M::Insert {
            xid,
            relation,
            new
        }),
        (
            x.clone(),
            any::<u32>(),
            proptest::option::of(tuple()),
            any::<bool>(),
            tuple()
        )
            .prop_map(|(xid, relation, k, is_key, new)| {
                let (key, old) = if is_key { (k, None) } else { (None, k) };
                M::Update {
                    xid,
                    relation,
                    key,
                    old,
                    new,
                }
            }),
        (x.clone(), any::<u32>(), tuple(), any::<bool>()).prop_map(|(xid, relation, t, is_key)| {
            let (key, old) = if is_key {
                (Some(t), None)
            } else {
                (None, Some(t))
            };
            M::Delete {
                xid,
                relation,
                key,
                old,
            }
        }),
        (
            x.clone(),
            any::<u8>(),
            proptest::collection::vec(any::<u32>(), 0..5)
        )
            .prop_map(|(xid, options, relations)| M::Truncate {
                xid,
                options,
                relations
            }),
        (
            x,
            any::<u8>(),
            any::<u64>(),
            name(),
            proptest::collection::vec(any::<u8>(), 0..50)
        )
            .prop_map(|(xid, flags, lsn, prefix, c)| M::Message {
                xid,
                flags,
                lsn,
                prefix,
                content: Bytes::from(c)
            }),
        (any::<u32>(), any::<bool>())
            .prop_map(|(xid, first_segment)| M::StreamStart { xid, first_segment }),
        Just(M::StreamStop),
        (
            any::<u32>(),
            any::<u8>(),
            any::<u64>(),
            any::<u64>(),
            any::<i64>()
        )
            .prop_map(
                |(xid, flags, commit_lsn, end_lsn, commit_time)| M::StreamCommit {
                    xid,
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time
                }
            ),
        (
            any::<u32>(),
            any::<u32>(),
            proptest::option::of((any::<u64>(), any::<i64>()))
        )
            .prop_map(|(xid, subxid, a)| M::StreamAbort {
                xid,
                subxid,
                abort_lsn: a.map(|a| a.0),
                abort_time: a.map(|a| a.1)
            }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
            any::<u32>(),
            name()
        )
            .prop_map(
                |(prepare_lsn, end_lsn, prepare_time, xid, gid)| M::BeginPrepare {
                    prepare_lsn,
                    end_lsn,
                    prepare_time,
                    xid,
                    gid
                }
            ),
        (
            any::<u8>(),
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
            any::<u32>(),
            name()
        )
            .prop_map(
                |(flags, prepare_lsn, end_lsn, prepare_time, xid, gid)| M::Prepare {
                    flags,
                    prepare_lsn,
                    end_lsn,
                    prepare_time,
                    xid,
                    gid
                }
            ),
        (
            any::<u8>(),
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
            any::<u32>(),
            name()
        )
            .prop_map(|(flags, prepare_lsn, end_lsn, prepare_time, xid, gid)| {
                M::StreamPrepare {
                    flags,
                    prepare_lsn,
                    end_lsn,
                    prepare_time,
                    xid,
                    gid,
                }
            }),
        (
            any::<u8>(),
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
            any::<u32>(),
            name()
        )
            .prop_map(|(flags, commit_lsn, end_lsn, commit_time, xid, gid)| {
                M::CommitPrepared {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                    xid,
                    gid,
                }
            }),
        (
            any::<u8>(),
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
            any::<i64>(),
            any::<u32>(),
            name()
        )
            .prop_map(
                |(
                    flags,
                    prepare_end_lsn,
                    rollback_end_lsn,
                    prepare_time,
                    rollback_time,
                    xid,
                    gid,
                )| M::RollbackPrepared {
                    flags,
                    prepare_end_lsn,
                    rollback_end_lsn,
                    prepare_time,
                    rollback_time,
                    xid,
                    gid
                }
            ),
    ]
}

proptest! {
    #![proptest_config(crate::support::proptest_config("source_pgoutput_prop", 2000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), in_stream in any::<bool>()) {
        let _ = decode(&data, in_stream);
    }

    #[test]
    fn mutated_messages_never_panic(m in message(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
        let mut bytes = encode(&m);
        if !bytes.is_empty() {
            let i = flip.0.index(bytes.len());
            bytes[i] ^= flip.1;
            let c = cut.index(bytes.len() + 1);
            let _ = decode(&bytes[..c], false);
            let _ = decode(&bytes[..c], true);
        }
    }

    #[test]
    fn encode_decode_round_trip(m in message()) {
        // Data messages carry an xid exactly inside a stream block.
        let in_stream = matches!(streamed_xid(&m), Some(Some(_)));
        let bytes = encode(&m);
        // The zero-copy path decodes to the same message.
        let shared = Bytes::from(bytes.clone());
        prop_assert_eq!(decode_bytes(&shared, in_stream), Ok(m.clone()));
        prop_assert_eq!(decode(&bytes, in_stream), Ok(m));
    }

    #[test]
    fn the_borrowed_insert_path_agrees_with_decode(
        m in message(),
        cut in any::<prop::sample::Index>(),
        flip in any::<(prop::sample::Index, u8)>(),
        in_stream in any::<bool>(),
    ) {
        // Whole, cut short or with a byte flipped: whenever the fast path
        // reads an Insert, the full decoder reads the same one.
        let whole = encode(&m);
        let mut bad = whole.clone();
        if !bad.is_empty() {
            let i = flip.0.index(bad.len());
            bad[i] ^= flip.1;
            bad.truncate(cut.index(bad.len() + 1));
        }
        for bytes in [whole, bad] {
            let mut cols = [ColumnRef::Null; MAX_BORROWED_COLUMNS];
            let fast = borrow_insert(&bytes, in_stream, &mut cols);
            match decode(&bytes, in_stream) {
                Ok(M::Insert { xid, relation, new }) => {
                    let (fxid, frel, n) = fast.expect("a decodable Insert is read by the fast path");
                    prop_assert_eq!((fxid, frel), (xid, relation));
                    let want: Vec<ColumnRef<'_>> = new.iter().map(TupleValue::as_column).collect();
                    prop_assert_eq!(&cols[..n], &want[..]);
                }
                _ => prop_assert!(fast.is_none(), "fast path read what decode refuses"),
            }
        }
    }

    #[test]
    fn event_decoder_never_panics(ms in proptest::collection::vec(message(), 0..30)) {
        let mut d = EventDecoder::new();
        for m in ms {
            let _ = d.push(m);
            while d.pop().is_some() {}
        }
    }
}
