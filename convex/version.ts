/**
 * The version of the contract between this Convex app and the projector
 * binary: the tables, their document fields and the internal functions'
 * arguments. Bump it whenever one changes; `src/sink/schema.rs` holds the
 * number the binary was built for (a Rust test reads this file).
 *
 * The binary asks `projector:schemaVersion` before it streams and sends
 * its number with every `apply`: a mismatch is deployment skew (one side
 * rolled out before the other), answered as such, never as a bad document.
 */
export const SCHEMA_VERSION = 1;
