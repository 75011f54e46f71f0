/**
 * Real indexes for convex-test's in-memory database. convex-test answers every
 * query by visiting every document of every table, then filtering and sorting
 * (O(all documents) per lookup). Here each schema index keeps, for every
 * prefix of its fields, a map from the prefix's values to the ids having
 * them, and a query is handed only the ids that can match. convex-test still
 * does the rest (the exact range filter, the sort, the page), so results are
 * the same set in the same order.
 *
 * Invariant: an id is in bucket (index, prefix length L, values) exactly when
 * some version of the document — the committed one, or one in an open
 * transaction's pending writes (including writes hidden by a snapshot query)
 * — has those values in its first L index fields. Every place convex-test
 * adds or drops a version (a write, a nested or top-level commit, a rollback)
 * re-checks the ids it touched. Queries read `db.get`, which picks the
 * version the current transaction sees, so visibility rules are convex-test's.
 *
 * Each bucket also remembers its ids in index order until its next change, so
 * paging through a large prefix (a dump of one generation) does not sort the
 * whole prefix on every page: convex-test still sorts, but sorting sorted
 * input is linear. Being a hint, a stale order costs time, never correctness.
 */
import { compareValues, jsonToConvex, type Value } from "convex/values";
import type { DatabaseFake } from "./convex-test-internals";

type Doc = Record<string, unknown>;
type Layer = Record<string, Doc | null>;

/** Bucket key for a document whose prefix holds a value we do not hash (object, array, bytes). */
const COMPLEX = "*";

interface Bucket {
  ids: Set<string>;
  /** `ids` in index order (fields, then _creationTime, _id) as of the last change, or null. */
  sorted: string[] | null;
}

interface Index {
  fields: string[];
  /** buckets[L - 1]: prefix values of length L → ids. */
  buckets: Map<string, Bucket>[];
}

interface Table {
  ids: Set<string>;
  indexes: Map<string, Index>;
}

/** As convex-test's `tableNameFromId`: ids are `<digits><table>`. */
function tableOfId(id: string): string | null {
  const m = /^[0-9]+/.exec(id);
  if (!m || m[0].length === id.length) return null;
  return id.slice(m[0].length);
}

function isSimpleObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === null || proto === Object.prototype || proto?.constructor?.name === "Object";
}

/** As convex-test's `evaluateFieldPath`, without resolving commit-time placeholders. */
function fieldValue(doc: Doc, path: string): unknown {
  let v: unknown = doc;
  for (const p of path.split(".")) v = isSimpleObject(v) ? v[p] : undefined;
  return v;
}

/**
 * A string equal for values `compareValues` calls equal (it may also be equal
 * for some unequal ones, e.g. 0 and -0: the exact filter sorts those out), or
 * null for values we do not hash.
 */
function valueKey(v: unknown): string | null {
  switch (typeof v) {
    case "undefined":
      return "u";
    case "string":
      return `s${v}`;
    case "number":
      return `n${String(v)}`;
    case "bigint":
      return `b${v}`;
    case "boolean":
      return v ? "t" : "f";
    case "object":
      if (v === null) return "z";
      // A commit-time placeholder compares as i64::MAX, like convex-test resolves it.
      if (v.constructor?.name === "CommitTsPlaceholder") return `b${2n ** 63n - 1n}`;
      return null;
    default:
      return null;
  }
}

function prefixKey(values: unknown[]): string {
  const parts: string[] = [];
  for (const v of values) {
    const k = valueKey(v);
    if (k === null) return COMPLEX;
    parts.push(k);
  }
  return JSON.stringify(parts);
}

export interface IndexStats {
  /** Queries answered from an index bucket. */
  indexed: number;
  /** Queries answered from the table's id set (no usable equality prefix). */
  tableScans: number;
}

/** Installs the indexes on `db` (which must be empty of documents: call before any write). */
export function installIndexes(db: DatabaseFake): IndexStats {
  const stats: IndexStats = { indexed: 0, tableScans: 0 };
  const tables = new Map<string, Table>();
  const tableFor = (name: string): Table => {
    let t = tables.get(name);
    if (!t) {
      t = { ids: new Set(), indexes: new Map() };
      tables.set(name, t);
    }
    return t;
  };
  for (const [name, schema] of db._schema?.tables ?? []) {
    const t = tableFor(name);
    for (const { indexDescriptor, fields } of schema.indexes) {
      t.indexes.set(indexDescriptor, { fields, buckets: fields.map(() => new Map()) });
    }
  }

  /** Pending-write layers hidden by `stashWrites` (a snapshot query) still hold versions. */
  const stashed: Layer[][] = [];

  function versions(id: string): Doc[] {
    const out: Doc[] = [];
    const committed = db._documents[id];
    if (committed) out.push(committed);
    for (const layers of [...stashed, db._writes]) {
      for (const layer of layers) {
        if (Object.hasOwn(layer, id)) {
          const v = layer[id];
          if (v) out.push(v);
        }
      }
    }
    return out;
  }

  function hasAnyVersionEntry(id: string): boolean {
    if (db._documents[id]) return true;
    for (const layers of [...stashed, db._writes])
      for (const layer of layers) if (Object.hasOwn(layer, id)) return true;
    return false;
  }

  function keysOf(index: Index, doc: Doc): string[] {
    const values = index.fields.map((f) => fieldValue(doc, f));
    return index.fields.map((_, i) => prefixKey(values.slice(0, i + 1)));
  }

  function add(id: string, doc: Doc) {
    const table = tableOfId(id);
    if (table === null) return;
    const t = tableFor(table);
    t.ids.add(id);
    for (const index of t.indexes.values()) {
      keysOf(index, doc).forEach((key, i) => {
        const b = index.buckets[i]!;
        let bucket = b.get(key);
        if (!bucket) b.set(key, (bucket = { ids: new Set(), sorted: null }));
        bucket.ids.add(id);
        // Any write may move the document within the bucket's order.
        bucket.sorted = null;
      });
    }
  }

  /** Drops `id` from the buckets of `stale` that no remaining version of it has. */
  function reconcile(id: string, stale: Doc | null | undefined) {
    const table = tableOfId(id);
    if (table === null) return;
    const t = tables.get(table);
    if (!t) return;
    if (!hasAnyVersionEntry(id)) t.ids.delete(id);
    if (!stale) return;
    const live = versions(id);
    for (const index of t.indexes.values()) {
      const liveKeys = live.map((d) => keysOf(index, d));
      keysOf(index, stale).forEach((key, i) => {
        if (liveKeys.some((k) => k[i] === key)) return;
        const b = index.buckets[i]!;
        const bucket = b.get(key);
        if (!bucket) return;
        bucket.ids.delete(id);
        bucket.sorted = null;
        if (bucket.ids.size === 0) b.delete(key);
      });
    }
  }

  const addWrite = db._addWrite;
  db._addWrite = function (id, value) {
    const layer = db._writes[db._writes.length - 1];
    const previous = layer && Object.hasOwn(layer, id) ? layer[id] : undefined;
    addWrite.call(db, id, value);
    const table = tableOfId(id);
    if (value) add(id, value);
    else if (table !== null) tableFor(table).ids.add(id);
    if (previous) reconcile(id, previous);
  };

  const commit = db.commit;
  db.commit = function (commitTs) {
    const layer = db._writes[db._writes.length - 1];
    const topLevel = db._writes.length === 1;
    const before = topLevel && layer ? Object.keys(layer).map((id) => [id, db._documents[id], layer[id]] as const) : [];
    commit.call(db, commitTs);
    for (const [id, old, pending] of before) {
      // The committed version may differ from the pending one (commit timestamps resolved).
      const now = db._documents[id];
      if (now) add(id, now);
      reconcile(id, old);
      reconcile(id, pending);
    }
  };

  const rollbackWrites = (db as any).rollbackWrites as () => void;
  (db as any).rollbackWrites = function () {
    const layer: Layer | undefined = db._writes[db._writes.length - 1];
    rollbackWrites.call(db);
    for (const [id, value] of Object.entries(layer ?? {})) reconcile(id, value);
  };

  const stashWrites = (db as any).stashWrites as () => Layer[];
  (db as any).stashWrites = function () {
    const layers = stashWrites.call(db);
    stashed.push(layers);
    return layers;
  };
  const restoreWrites = (db as any).restoreWrites as (layers: Layer[]) => void;
  (db as any).restoreWrites = function (layers: Layer[]) {
    const i = stashed.indexOf(layers);
    if (i >= 0) stashed.splice(i, 1);
    restoreWrites.call(db, layers);
  };

  /** The ids a query source can match, or null to let convex-test visit everything. */
  function candidates(source: any): Iterable<string> | null {
    if (source?.type === "FullTableScan") {
      stats.tableScans++;
      return tables.get(source.tableName)?.ids ?? [];
    }
    if (source?.type !== "IndexRange" || typeof source.indexName !== "string") return null;
    const [table = "", indexName] = source.indexName.split(".");
    const t = tables.get(table);
    const index = indexName === undefined ? undefined : t?.indexes.get(indexName);
    const range: any[] = Array.isArray(source.range) ? source.range : [];
    let prefix = 0;
    while (
      index &&
      prefix < index.fields.length &&
      range[prefix]?.type === "Eq" &&
      range[prefix].fieldPath === index.fields[prefix]
    ) {
      prefix++;
    }
    const values: unknown[] = [];
    for (let i = 0; i < prefix; i++) {
      const raw = range[i].value;
      const v = raw !== null && typeof raw === "object" && "$undefined" in raw ? undefined : jsonToConvex(raw);
      if (valueKey(v) === null) {
        prefix = i;
        break;
      }
      values.push(v);
    }
    if (!index || prefix === 0) {
      stats.tableScans++;
      return t?.ids ?? [];
    }
    stats.indexed++;
    const b = index.buckets[prefix - 1]!;
    const exact = b.get(prefixKey(values));
    const complex = b.get(COMPLEX);
    if (complex) return new Set([...(exact?.ids ?? []), ...complex.ids]);
    if (!exact) return [];
    if (exact.ids.size < 64) return exact.ids;
    const sorted = (exact.sorted ??= sortedIds(table, index.fields, exact.ids));
    return source.order === "desc" ? [...sorted].reverse() : sorted;
  }

  /** `ids` in the order convex-test sorts an index range: the fields, then _creationTime, _id. */
  function sortedIds(table: string, fields: string[], ids: Set<string>): string[] {
    const sortBy = [...fields, "_creationTime", "_id"];
    // Ids this transaction cannot see go last: another transaction may see them.
    const hidden: string[] = [];
    const rows = [...ids].flatMap((id) => {
      const doc = db.get(table, id);
      if (doc === null) hidden.push(id);
      return doc === null ? [] : [{ id, keys: sortBy.map((f) => fieldValue(doc, f) as Value | undefined) }];
    });
    rows.sort((a, b) => {
      for (let i = 0; i < sortBy.length; i++) {
        const c = compareValues(a.keys[i], b.keys[i]);
        if (c !== 0) return c;
      }
      return 0;
    });
    return [...rows.map((r) => r.id), ...hidden];
  }

  let hint: Iterable<string> | null = null;
  const resolveQuerySource = db._resolveQuerySource;
  db._resolveQuerySource = function (query) {
    hint = candidates(query?.source);
    try {
      return resolveQuerySource.call(db, query);
    } finally {
      hint = null;
    }
  };
  const iterateDocs = db._iterateDocs;
  db._iterateDocs = function (table, callback) {
    const ids = hint;
    hint = null;
    if (ids === null) return iterateDocs.call(db, table, callback);
    // Copy: a callback never writes, but the buckets must not change under the loop.
    for (const id of [...ids]) {
      const doc = db.get(table, id);
      if (doc !== null) callback(doc);
    }
  };
  return stats;
}
