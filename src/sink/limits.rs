//! Per-mutation limits, and a budget that keeps one `apply` well inside
//! them.
//!
//! Convex limits one mutation to 16 MiB of arguments, 16,000 documents
//! written and 4,096 index ranges read (DESIGN §5). `apply` costs, per
//! write or dead letter, one `by_generation_key` lookup (an index range)
//! and at most one document written; its argument bytes are the encoded
//! item. The defaults keep a wide margin (4 MiB, 4,000, 2,000) so that a
//! batch never fails for size and a slow mutation stays short.
//!
//! ```text
//! builder: for each item ─ budget.try_add(encoded_len(item)) ─┬ true  → push into batch
//!                                                            └ false → close batch, reset
//! ```

use serde::Serialize;

pub const CONVEX_MAX_ARGS_BYTES: usize = 16 << 20;
pub const CONVEX_MAX_WRITES: usize = 16_000;
pub const CONVEX_MAX_INDEX_READS: usize = 4_096;
/// Convex's limit on one document.
pub const CONVEX_MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Bytes of `{"path":"projector:apply","args":{"generation":N,"writes":[],"deadLetters":[]},"format":"json"}`
/// with a generous generation; added once per request.
pub const APPLY_ENVELOPE_BYTES: usize = 112;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_args_bytes: usize,
    pub max_writes: usize,
    pub max_index_reads: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_args_bytes: 4 << 20,
            max_writes: 4_000,
            max_index_reads: 2_000,
        }
    }
}

impl BatchLimits {
    /// Clamps user-supplied limits to what Convex accepts.
    pub fn clamped(self) -> Self {
        BatchLimits {
            max_args_bytes: self.max_args_bytes.clamp(1, CONVEX_MAX_ARGS_BYTES / 2),
            max_writes: self.max_writes.clamp(1, CONVEX_MAX_WRITES / 2),
            max_index_reads: self.max_index_reads.clamp(1, CONVEX_MAX_INDEX_READS / 2),
        }
    }
}

/// What one `apply` request has used so far.
#[derive(Debug, Clone)]
pub struct BatchBudget {
    limits: BatchLimits,
    bytes: usize,
    writes: usize,
    index_reads: usize,
    items: usize,
}

impl BatchBudget {
    pub fn new(limits: BatchLimits) -> Self {
        BatchBudget {
            limits,
            bytes: APPLY_ENVELOPE_BYTES,
            writes: 0,
            index_reads: 0,
            items: 0,
        }
    }

    /// Would one more write or dead letter of `item_bytes` encoded bytes
    /// stay within every limit? An empty budget accepts any one item: a
    /// single oversized document is Convex's to reject (a definite error
    /// the pipeline dead-letters), not a reason to stall.
    pub fn fits(&self, item_bytes: usize) -> bool {
        if self.items == 0 {
            return true;
        }
        self.bytes.saturating_add(item_bytes) < self.limits.max_args_bytes
            && self.writes < self.limits.max_writes
            && self.index_reads < self.limits.max_index_reads
    }

    /// Adds the item if it [`fits`](Self::fits); false means "close the
    /// batch first".
    pub fn try_add(&mut self, item_bytes: usize) -> bool {
        if !self.fits(item_bytes) {
            return false;
        }
        self.add(item_bytes);
        true
    }

    /// Adds one item unconditionally.
    pub fn add(&mut self, item_bytes: usize) {
        self.bytes += item_bytes + 1; // the separating comma
        self.writes += 1;
        self.index_reads += 1;
        self.items += 1;
    }

    /// A document already in the batch grew by `extra` bytes (coalesced
    /// writes on one key): same write, same lookup, more bytes.
    pub fn grow(&mut self, extra: usize) {
        self.bytes += extra;
    }

    pub fn reset(&mut self) {
        *self = BatchBudget::new(self.limits);
    }

    pub fn is_empty(&self) -> bool {
        self.items == 0
    }
    pub fn items(&self) -> usize {
        self.items
    }
    /// Estimated request body size.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    pub fn writes(&self) -> usize {
        self.writes
    }
    pub fn index_reads(&self) -> usize {
        self.index_reads
    }
    pub fn limits(&self) -> BatchLimits {
        self.limits
    }
}

/// Exact length of `v` as compact JSON, without allocating the text.
pub fn encoded_len<T: Serialize + ?Sized>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Serialising a Value or our derive types into a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::api::{ApplyRequest, DeadLetterWrite, Write};
    use serde_json::json;

    fn write(i: usize, pad: usize) -> Write {
        Write {
            table: "runs".into(),
            key: format!("run-{i}"),
            position: format!("{:016x}:{:016x}", i, 0),
            doc: json!({"runId": format!("run-{i}"), "pad": "x".repeat(pad)}),
        }
    }

    #[test]
    fn encoded_len_matches_serialisation() {
        let w = write(1, 10);
        assert_eq!(encoded_len(&w), serde_json::to_vec(&w).unwrap().len());
    }

    #[test]
    fn budget_tracks_the_real_body_size() {
        let mut budget = BatchBudget::new(BatchLimits::default());
        let mut req = ApplyRequest {
            generation: u64::from(u32::MAX),
            writes: vec![],
            dead_letters: vec![],
        };
        assert!(req.encode().unwrap().len() <= budget.bytes());
        for i in 0..100 {
            let w = write(i, i * 3);
            assert!(budget.try_add(encoded_len(&w)));
            req.writes.push(w);
        }
        let dl = DeadLetterWrite {
            key: "1".into(),
            position: "0".into(),
            doc: json!({"eventSeq": 1}),
        };
        assert!(budget.try_add(encoded_len(&dl)));
        req.dead_letters.push(dl);
        let real = req.encode().unwrap().len();
        assert!(
            real <= budget.bytes() && budget.bytes() <= real + APPLY_ENVELOPE_BYTES,
            "{real} vs {}",
            budget.bytes()
        );
    }

    #[test]
    fn budget_closes_on_each_limit() {
        let limits = BatchLimits {
            max_args_bytes: 1000,
            max_writes: 10_000,
            max_index_reads: 10_000,
        };
        let mut b = BatchBudget::new(limits);
        assert!(b.try_add(5000), "an empty batch takes any one item");
        assert!(!b.try_add(1));
        b.reset();
        assert!(b.try_add(400));
        assert!(b.try_add(400));
        assert!(!b.fits(400));

        let mut b = BatchBudget::new(BatchLimits {
            max_args_bytes: 1 << 30,
            max_writes: 3,
            max_index_reads: 100,
        });
        assert!(b.try_add(1) && b.try_add(1) && b.try_add(1));
        assert!(!b.try_add(1));

        let mut b = BatchBudget::new(BatchLimits::default());
        let mut n = 0;
        while b.try_add(100) {
            n += 1;
        }
        assert_eq!(n, 2_000, "index reads bound the default batch");
        assert!(b.writes() <= 4_000 && b.bytes() <= 4 << 20);
    }

    #[test]
    fn clamps_to_convex_limits() {
        let l = BatchLimits {
            max_args_bytes: usize::MAX,
            max_writes: 0,
            max_index_reads: 99_999,
        }
        .clamped();
        assert_eq!(l.max_args_bytes, CONVEX_MAX_ARGS_BYTES / 2);
        assert_eq!(l.max_writes, 1);
        assert_eq!(l.max_index_reads, CONVEX_MAX_INDEX_READS / 2);
    }
}
