/**
 * The version of the contract between this Convex app and the projector
 * binary: the tables, their document fields and the internal functions'
 * arguments. Bump it whenever one changes; `src/sink/schema.rs` holds the
 * number the binary was built for (a Rust test reads this file).
 *
 * The binary asks `projector:schemaVersion` before it streams and sends
 * its number with every `apply`: a mismatch is deployment skew (one side
 * rolled out before the other), answered as such, never as a bad document.
 *
 * Version 2 added `loadMany` (hydration of every table in one call); the
 * documents and `apply` are unchanged, so version 1 binaries still running
 * through a functions-first deploy keep writing (and still find `load`).
 */
export const SCHEMA_VERSION = 2;

/** The binaries' versions `apply` accepts: this one, and those whose documents and `apply` arguments it still implements. */
export const APPLY_COMPATIBLE: readonly number[] = [1, SCHEMA_VERSION];
