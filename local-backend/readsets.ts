/**
 * Read sets and write sets, so a subscription reruns only when a commit can
 * change its result (Convex's subscription invalidation, made coarser).
 *
 * While `track(f)` runs one query, every query source it resolves and every
 * document it gets by id is recorded: a full table scan or search as its
 * table, an index range as its table, index fields and the values of its
 * leading `Eq` bounds (a superset of the real range: the other bounds are
 * ignored), a `db.get` as the id. Every top-level commit records each written
 * document's version before and after.
 *
 * Invariant: `overlaps(reads, writes)` is true whenever some write could
 * change the query's result: a written version (old or new) lies in a
 * recorded range, table or id. It may be true when the result cannot change
 * (the range is widened), never false when it can.
 */
import { compareValues, jsonToConvex, type Value } from "convex/values";
import type { DatabaseFake } from "./convex-test-internals";

type Doc = Record<string, unknown>;

interface RangeRead {
  table: string;
  fields: string[];
  /** Values of the first `values.length` fields (the Eq prefix). */
  values: unknown[];
}

export interface ReadSet {
  tables: Set<string>;
  ranges: RangeRead[];
  ids: Set<string>;
}

export interface WrittenDoc {
  id: string;
  table: string;
  before: Doc | null;
  after: Doc | null;
}

export type WriteSet = WrittenDoc[];

/** As convex-test's `tableNameFromId`: ids are `<digits><table>`. */
function tableOfId(id: string): string {
  const m = /^[0-9]+/.exec(id);
  return m ? id.slice(m[0].length) : id;
}

function fieldValue(doc: Doc, path: string): unknown {
  let v: unknown = doc;
  for (const part of path.split(".")) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

function same(a: unknown, b: unknown): boolean {
  if (a === undefined || b === undefined) return a === b;
  try {
    return compareValues(a as Value, b as Value) === 0;
  } catch {
    return false;
  }
}

function inRange(r: RangeRead, doc: Doc): boolean {
  return r.values.every((v, i) => same(fieldValue(doc, r.fields[i]!), v));
}

export function overlaps(reads: ReadSet, writes: WriteSet): boolean {
  for (const w of writes) {
    if (reads.tables.has(w.table) || reads.ids.has(w.id)) return true;
    for (const r of reads.ranges) {
      if (r.table !== w.table) continue;
      if ((w.before && inRange(r, w.before)) || (w.after && inRange(r, w.after))) return true;
    }
  }
  return false;
}

export interface ReadSetTracker {
  /** Runs `f` (one query) and returns what it read. Calls must not overlap. */
  track<T>(f: () => Promise<T>): Promise<{ value: T; reads: ReadSet }>;
  /** The documents committed since the last call (top-level commits only). */
  takeWrites(): WriteSet;
}

export function installReadSets(db: DatabaseFake): ReadSetTracker {
  let current: ReadSet | null = null;
  let resolving = 0;
  let writes: WriteSet = [];

  function indexFields(table: string, indexName: string): string[] | null {
    if (indexName === "by_creation_time") return ["_creationTime", "_id"];
    if (indexName === "by_id") return ["_id"];
    const index = db._schema?.tables.get(table)?.indexes.find((i) => i.indexDescriptor === indexName);
    return index ? index.fields : null;
  }

  function record(source: any) {
    if (!current) return;
    if (source?.type === "IndexRange" && typeof source.indexName === "string") {
      const [table = "", indexName = ""] = source.indexName.split(".");
      const fields = indexFields(table, indexName);
      if (fields) {
        const range: any[] = Array.isArray(source.range) ? source.range : [];
        const values: unknown[] = [];
        for (let i = 0; i < fields.length && range[i]?.type === "Eq" && range[i].fieldPath === fields[i]; i++) {
          const raw = range[i].value;
          values.push(raw !== null && typeof raw === "object" && "$undefined" in raw ? undefined : jsonToConvex(raw));
        }
        current.ranges.push({ table, fields, values });
        return;
      }
      current.tables.add(table);
      return;
    }
    const table =
      source?.tableName ?? (typeof source?.indexName === "string" ? source.indexName.split(".")[0] : undefined);
    if (typeof table === "string") current.tables.add(table);
    // An unknown source shape: every table, to stay a superset.
    else current.tables.add("*");
  }

  const resolveQuerySource = db._resolveQuerySource;
  db._resolveQuerySource = function (query) {
    record(query?.source);
    resolving++;
    try {
      return resolveQuerySource.call(db, query);
    } finally {
      resolving--;
    }
  };
  const get = db.get;
  db.get = function (table, id) {
    // Gets inside a range resolution are covered by the range.
    if (current && resolving === 0) current.ids.add(id);
    return get.call(db, table, id);
  };
  const commit = db.commit;
  db.commit = function (commitTs) {
    const layer = db._writes.length === 1 ? db._writes[0] : undefined;
    const before = layer
      ? Object.entries(layer).map(([id, after]) => ({ id, before: db._documents[id] ?? null, after }))
      : [];
    commit.call(db, commitTs);
    for (const b of before)
      writes.push({ id: b.id, table: tableOfId(b.id), before: b.before, after: db._documents[b.id] ?? b.after });
  };

  return {
    async track(f) {
      const reads: ReadSet = { tables: new Set(), ranges: [], ids: new Set() };
      current = reads;
      try {
        const value = await f();
        return { value, reads };
      } finally {
        current = null;
      }
    },
    takeWrites() {
      const w = writes;
      writes = [];
      return w;
    },
  };
}

/** A read set that every write overlaps (for a query that failed before it could read). */
export function readsEverything(): ReadSet {
  return { tables: new Set(["*"]), ranges: [], ids: new Set() };
}

/** `overlaps`, with the "every table" wildcard. */
export function invalidates(reads: ReadSet, writes: WriteSet): boolean {
  return writes.length > 0 && (reads.tables.has("*") || overlaps(reads, writes));
}
