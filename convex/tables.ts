/**
 * Every table of the app, in the projector's order. The Rust side names the
 * same list once (`ConvexTable::ALL` in src/projection/table.rs); a Rust test
 * reads this file and a vitest test checks it against `schema.ts`, so the
 * three cannot drift apart.
 */
export const TABLES = [
  "runs",
  "timelines",
  "threads",
  "workers",
  "inboxes",
  "deadLetters",
  "projectorState",
] as const;

export type TableName = (typeof TABLES)[number];
