//! Convex's limits on one function call, as the real backend counts them
//! (get-convex/convex-backend: `TransactionLimits`, `common/src/knobs.rs`),
//! and the share of each that one of our requests may use.
//!
//! Every request is built within these with a margin, so a batch that
//! passes here passes in production.

/// Arguments of one call (and its return value): 16 MiB.
pub const MAX_ARGS_BYTES: usize = 16 << 20;

/// Index ranges read by one transaction. The real backend counts one for
/// every lookup *and* one for every `db.replace` / `patch` / `delete` (the
/// write reads the document's old value through its index range), so an
/// `apply` of N replacements uses 2N.
pub const MAX_INDEX_RANGES: usize = 4_096;

/// Index ranges one `apply` spends per written document: its
/// `by_generation_key` lookup and its `db.replace`.
pub const RANGES_PER_WRITE: usize = 2;

/// Documents (and dead letters) one batch may touch: within the index
/// ranges of one `apply`, with a quarter of them as margin.
pub const MAX_KEYS_PER_APPLY: usize = MAX_INDEX_RANGES * 3 / 4 / RANGES_PER_WRITE;

/// The largest `apply` body we send: half of what Convex accepts, so the
/// envelope, escaping and system fields never tip a request over.
pub const MAX_REQUEST_BYTES: usize = MAX_ARGS_BYTES / 2;

// A full batch stays inside the index-range limit with its margin.
const _: () = assert!(MAX_KEYS_PER_APPLY * RANGES_PER_WRITE <= MAX_INDEX_RANGES * 3 / 4);
