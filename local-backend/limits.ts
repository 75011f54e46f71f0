/**
 * Transaction and value limits enforced where, and as, the real backend
 * enforces them, replacing convex-test's approximation (which it leaves off).
 * Sources (get-convex/convex-backend):
 *   crates/common/src/knobs.rs            the numbers
 *   crates/database/src/reads.rs          documents/bytes read, read-set intervals
 *   crates/database/src/writes.rs         documents/bytes written
 *   crates/database/src/transaction.rs    get/patch/replace/delete each read the
 *                                         document by id first; a write that
 *                                         changes nothing is not a write
 *   crates/database/src/query/index_range.rs  a query's interval grows with each
 *                                         document returned; a query read to its
 *                                         end takes its whole range
 *   crates/common/src/document.rs, crates/value/src/{array,object,size}.rs
 *                                         document and value shape limits
 *   crates/udf/src/helpers.rs, crates/isolate/src/helpers.rs  args / return value
 *
 * Differences from convex-test's `transactionLimits: true`: it counts one
 * "index range" per query or `db.get` however often the same range is read,
 * and none for `db.patch/replace/delete` (the real backend merges repeated
 * ranges, and counts the by-id read every write does); it counts a no-op
 * write; it has no document size, nesting, array or field-count limits and no
 * args/return size limits.
 *
 * Errors inside a transaction are thrown into the function as `Error(msg)`
 * (crates/isolate/src/environment/helpers/promise.rs), so an uncaught one
 * reads `Uncaught Error: Too many reads …`, and the function may catch it.
 */
import { getConvexSize, jsonToConvex, type Value } from "convex/values";
import { formatBytes, humanSizeBinary } from "./byte-format";
import type { ConvexGlobal, DatabaseFake, TransactionManager } from "./convex-test-internals";
import { JsErrorMessage } from "./errors";
import { IntervalSet, prefixInterval, type Bound, type Interval } from "./intervals";
import { exportValue } from "./wire-json";

export const LIMITS = {
  /** TRANSACTION_MAX_READ_SIZE_BYTES */
  bytesRead: 1 << 24,
  /** TRANSACTION_MAX_READ_SIZE_ROWS */
  documentsRead: 32_000,
  /** TRANSACTION_MAX_READ_SET_INTERVALS */
  readIntervals: 4096,
  /** TRANSACTION_MAX_NUM_USER_WRITES */
  documentsWritten: 16_000,
  /** TRANSACTION_MAX_USER_WRITE_SIZE_BYTES */
  bytesWritten: 1 << 24,
  /** MAX_USER_SIZE: ConvexValue::size of the document with _id and _creationTime */
  documentBytes: 1 << 20,
  /** MAX_DOCUMENT_NESTING */
  documentNesting: 16,
  /** value::size::MAX_NESTING */
  valueNesting: 64,
  /** value::array::MAX_ARRAY_LEN */
  arrayLength: 8192,
  /** value::object::MAX_OBJECT_FIELDS */
  objectFields: 1024,
  /** FUNCTION_MAX_ARGS_SIZE */
  argsBytes: 1 << 24,
  /** FUNCTION_MAX_RESULT_SIZE */
  resultBytes: 1 << 24,
} as const;

const OVER_LIMIT_HELP =
  "Consider using smaller limits in your queries, paginating your queries, or using indexed queries with a " +
  "selective index range expressions.";

type Doc = Record<string, unknown>;

/** Nesting as `Size::nesting` (primitives 0, a container 1 + its deepest child), or the first shape error. */
function shape(v: unknown): { nesting: number; error: string | null } {
  if (Array.isArray(v)) {
    let nesting = 0;
    for (const x of v) {
      const s = shape(x);
      if (s.error) return s;
      nesting = Math.max(nesting, s.nesting);
    }
    if (v.length > LIMITS.arrayLength) {
      return { nesting, error: `Array length is too long (${v.length} > maximum length ${LIMITS.arrayLength})` };
    }
    return nestingChecked(nesting + 1);
  }
  if (v !== null && typeof v === "object" && !(v instanceof ArrayBuffer)) {
    let nesting = 0;
    let fields = 0;
    for (const x of Object.values(v)) {
      if (x === undefined) continue;
      fields++;
      const s = shape(x);
      if (s.error) return s;
      nesting = Math.max(nesting, s.nesting);
    }
    if (fields > LIMITS.objectFields) {
      return { nesting, error: `Object has too many fields (${fields} > maximum number ${LIMITS.objectFields})` };
    }
    return nestingChecked(nesting + 1);
  }
  return { nesting: 0, error: null };
}

function nestingChecked(nesting: number) {
  return nesting > LIMITS.valueNesting
    ? { nesting, error: `Value is too nested (nested ${nesting} levels deep > maximum nesting ${LIMITS.valueNesting})` }
    : { nesting, error: null };
}

/** `module.js:function`, as the real backend names a function in these messages. */
export function canonicalPath(name: string): string {
  const [mod = "", fn = "default"] = name.split(":");
  return `${mod}.js:${fn}`;
}

/** Arguments as `parse_udf_args` and `validate_udf_args_size` check them, before the function runs. */
export function checkArgs(name: string, args: Record<string, unknown>): void {
  const s = shape([args]);
  if (s.error) throw new JsErrorMessage(`Invalid arguments for ${canonicalPath(name)}: ${s.error}`);
  const size = getConvexSize([args] as Value);
  if (size > LIMITS.argsBytes) {
    throw new JsErrorMessage(
      `Arguments for ${canonicalPath(name)} are too large (actual: ${humanSizeBinary(size)}, limit: ${humanSizeBinary(LIMITS.argsBytes)})`,
    );
  }
}

/** A return value as crates/isolate/src/helpers.rs checks it. */
export function checkResult(name: string, value: unknown): void {
  const v = value === undefined ? null : value;
  const s = shape(v);
  if (s.error) throw new JsErrorMessage(`Function ${canonicalPath(name)} return value invalid: ${s.error}`);
  const size = getConvexSize(v as Value);
  if (size > LIMITS.resultBytes) {
    throw new JsErrorMessage(
      `Function ${canonicalPath(name)} return value is too large (actual: ${humanSizeBinary(size)}, limit: ${humanSizeBinary(LIMITS.resultBytes)})`,
    );
  }
}

/** A document about to be written to a user table, as `PendingDocument::new` and `check_user_size`. */
function checkDocument(doc: Doc): void {
  const s = shape(doc);
  if (s.error) throw new Error(s.error);
  if (s.nesting > LIMITS.documentNesting) {
    throw new Error(
      `Document is too nested (nested ${s.nesting} levels deep > maximum nesting ${LIMITS.documentNesting})`,
    );
  }
  const size = getConvexSize(doc as Value);
  if (size > LIMITS.documentBytes) {
    throw new Error(
      `Value is too large (${humanSizeBinary(size)} > maximum size ${humanSizeBinary(LIMITS.documentBytes)})`,
    );
  }
}

class Reads {
  private readonly sets = new Map<string, IntervalSet>();
  intervals = 0;
  documents = 0;
  bytes = 0;

  private set(index: string): IntervalSet {
    let s = this.sets.get(index);
    if (!s) this.sets.set(index, (s = new IntervalSet()));
    return s;
  }

  /** `record_indexed_directly`: counts, and may fail. */
  direct(index: string, iv: Interval): void {
    const s = this.set(index);
    const before = s.size;
    s.add(iv);
    this.intervals = Math.max(0, this.intervals - before) + s.size;
    if (this.intervals > LIMITS.readIntervals) {
      throw new Error(
        `Too many reads in a single function execution (limit: ${LIMITS.readIntervals}). ${OVER_LIMIT_HELP}`,
      );
    }
  }

  /** `record_indexed_derived` (an insert's claim on its new id): recorded, not counted. */
  derived(index: string, iv: Interval): void {
    this.set(index).add(iv);
  }

  /** `record_read_document` for a user table. */
  document(size: number): void {
    this.documents++;
    this.bytes += size;
    if (this.documents > LIMITS.documentsRead) {
      throw new Error(
        `Too many documents read in a single function execution (limit: ${LIMITS.documentsRead}). ${OVER_LIMIT_HELP}`,
      );
    }
    if (this.bytes > LIMITS.bytesRead) {
      throw new Error(
        `Too many bytes read in a single function execution (limit: ${LIMITS.bytesRead} bytes). ${OVER_LIMIT_HELP}`,
      );
    }
  }
}

type Writes = { documents: number; bytes: number };

/** A transaction level: nested levels share the reads (they happened) and fork the writes (undone on rollback). */
type Level = { reads: Reads; writes: Writes };

type Query = {
  index: string;
  fields: string[];
  lower: Bound;
  upper: Bound;
  order: "asc" | "desc";
  limit: number | null;
  returned: number;
};

function tableOfId(id: string): string | null {
  const m = /^[0-9]+/.exec(id);
  return !m || m[0].length === id.length ? null : id.slice(m[0].length);
}

const isSystemTable = (table: string) => table.startsWith("_");

function isSimpleObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === null || proto === Object.prototype || proto?.constructor?.name === "Object";
}

function fieldValue(doc: Doc, path: string): Value | undefined {
  let v: unknown = doc;
  for (const p of path.split(".")) v = isSimpleObject(v) ? v[p] : undefined;
  return v as Value | undefined;
}

const byId = (id: string) => prefixInterval([id]);

export function installLimits(db: DatabaseFake, tm: TransactionManager, global: ConvexGlobal): void {
  const levels: Level[] = [];
  const queries = new Map<number, Query>();
  /** Set while a user write syscall runs, so `_addWrite` checks the document it stores. */
  let writingUserDocument = false;

  const current = () => levels[levels.length - 1] ?? null;

  const begin = tm.begin.bind(tm);
  tm.begin = async (isNested, transactionLimits) => {
    await begin(isNested, transactionLimits);
    const parent = current();
    if (!isNested || parent === null) {
      levels.length = 0;
      queries.clear();
      levels.push({ reads: new Reads(), writes: { documents: 0, bytes: 0 } });
    } else {
      levels.push({ reads: parent.reads, writes: { ...parent.writes } });
    }
  };
  const commit = tm.commit.bind(tm);
  tm.commit = (isNested) => {
    const child = levels.pop();
    const parent = current();
    if (child && parent && isNested) parent.writes = child.writes;
    return commit(isNested);
  };
  const rollback = tm.rollback.bind(tm);
  tm.rollback = (isNested) => {
    levels.pop();
    return rollback(isNested);
  };

  const addWrite = db._addWrite;
  db._addWrite = function (id, value) {
    const table = tableOfId(id);
    if (writingUserDocument && value && table !== null && !isSystemTable(table)) checkDocument(value);
    addWrite.call(db, id, value);
  };

  function indexFields(table: string, indexName: string): string[] | null {
    if (indexName === "by_creation_time") return ["_creationTime", "_id"];
    if (indexName === "by_id") return ["_id"];
    const index = db._schema?.tables.get(table)?.indexes.find((i) => i.indexDescriptor === indexName);
    return index ? [...index.fields, "_creationTime", "_id"] : null;
  }

  /** The index and key range a `queryStream`/`queryPage` query reads, or null (search: not tracked). */
  function describe(query: any): Query | null {
    const source = query?.source;
    const limitOp = (query?.operators ?? []).find((o: any) => o && "limit" in o);
    const base = {
      order: (source?.order ?? "asc") as "asc" | "desc",
      limit: limitOp ? Number(limitOp.limit) : null,
      returned: 0,
    };
    if (source?.type === "FullTableScan") {
      return {
        ...base,
        index: `${source.tableName}.by_creation_time`,
        fields: ["_creationTime", "_id"],
        lower: { key: [], side: -1 },
        upper: { key: [], side: 1 },
      };
    }
    if (source?.type !== "IndexRange") return null;
    const [table = "", indexName = ""] = String(source.indexName).split(".");
    const fields = indexFields(table, indexName);
    if (fields === null) return null; // convex-test rejects the query
    const prefix: (Value | undefined)[] = [];
    let lower: Bound | null = null;
    let upper: Bound | null = null;
    for (const r of source.range ?? []) {
      const raw = r.value;
      const v =
        raw !== null && typeof raw === "object" && "$undefined" in raw ? undefined : (jsonToConvex(raw) as Value);
      if (r.type === "Eq") prefix.push(v);
      else if (r.type === "Gte") lower = { key: [...prefix, v], side: -1 };
      else if (r.type === "Gt") lower = { key: [...prefix, v], side: 1 };
      else if (r.type === "Lte") upper = { key: [...prefix, v], side: 1 };
      else if (r.type === "Lt") upper = { key: [...prefix, v], side: -1 };
    }
    return {
      ...base,
      index: `${table}.${indexName}`,
      fields,
      lower: lower ?? { key: [...prefix], side: -1 },
      upper: upper ?? { key: [...prefix], side: 1 },
    };
  }

  const keyOf = (q: Query, doc: Doc) => q.fields.map((f) => fieldValue(doc, f));

  /** The part of the range read up to and including `doc`, in the query's order. */
  function readThrough(q: Query, doc: Doc): Interval {
    const key = keyOf(q, doc);
    return q.order === "asc" ? { lo: q.lower, hi: { key, side: 1 } } : { lo: { key, side: -1 }, hi: q.upper };
  }

  /** `get_inner`: the by-id interval and, when found, the document. */
  function readById(level: Level, id: string): Doc | null {
    const table = tableOfId(id);
    if (table === null) return null;
    level.reads.direct(`${table}.by_id`, byId(id));
    const doc = db.get(table, id);
    if (doc !== null && !isSystemTable(table)) level.reads.document(getConvexSize(doc as Value));
    return doc;
  }

  const syscall = global.syscall;
  global.syscall = (op, jsonArgs) => {
    const out = syscall(op, jsonArgs);
    const level = current();
    if (level && op === "1.0/queryStream") {
      const q = describe(JSON.parse(jsonArgs).query);
      if (q) queries.set(JSON.parse(out).queryId, q);
    } else if (op === "1.0/queryCleanup") {
      queries.delete(JSON.parse(jsonArgs).queryId);
    }
    return out;
  };

  const asyncSyscall = global.asyncSyscall;
  global.asyncSyscall = async (op, jsonArgs) => {
    const level = current();
    if (level === null) return asyncSyscall(op, jsonArgs);
    switch (op) {
      case "1.0/get": {
        const out = await asyncSyscall(op, jsonArgs);
        readById(level, JSON.parse(jsonArgs).id);
        return out;
      }
      case "1.0/queryStreamNext": {
        const out = await asyncSyscall(op, jsonArgs);
        const q = queries.get(JSON.parse(jsonArgs).queryId);
        if (!q) return out;
        const { value, done } = JSON.parse(out);
        if (!done && value) {
          const doc = jsonToConvex(value) as Doc;
          q.returned++;
          if (!isSystemTable(q.index)) level.reads.document(getConvexSize(doc as Value));
          level.reads.direct(q.index, readThrough(q, doc));
        } else if (done && !(q.limit !== null && q.returned >= q.limit)) {
          // Read to the end of its range (a query stopped by its limit only took what it returned).
          level.reads.direct(q.index, { lo: q.lower, hi: q.upper });
        }
        return out;
      }
      case "1.0/queryPage": {
        const out = await asyncSyscall(op, jsonArgs);
        const args = JSON.parse(jsonArgs);
        const q = describe(args.query);
        if (!q) return out;
        const res = JSON.parse(out);
        const page = (res.page ?? []).map((d: any) => jsonToConvex(d) as Doc);
        for (const doc of page) if (!isSystemTable(q.index)) level.reads.document(getConvexSize(doc as Value));
        const cursorKey = (c: unknown) =>
          typeof c === "string" && c !== "_end_cursor"
            ? (JSON.parse(c) as (string | null)[]).map((k) =>
                k === null ? undefined : (jsonToConvex(JSON.parse(k)) as Value),
              )
            : null;
        const from = cursorKey(args.cursor);
        const to = res.isDone ? null : cursorKey(res.continueCursor);
        const iv: Interval =
          q.order === "asc"
            ? { lo: from ? { key: from, side: 1 } : q.lower, hi: to ? { key: to, side: 1 } : q.upper }
            : { lo: to ? { key: to, side: -1 } : q.lower, hi: from ? { key: from, side: -1 } : q.upper };
        level.reads.direct(q.index, iv);
        return out;
      }
      case "1.0/insert": {
        writingUserDocument = true;
        let out: string;
        try {
          out = await asyncSyscall(op, jsonArgs);
        } finally {
          writingUserDocument = false;
        }
        const { table } = JSON.parse(jsonArgs);
        const { _id } = JSON.parse(out);
        if (!isSystemTable(table)) {
          level.reads.derived(`${table}.by_id`, byId(_id));
          countWrite(level, db.get(table, _id));
        }
        return out;
      }
      case "1.0/shallowMerge":
      case "1.0/replace":
      case "1.0/remove": {
        const { id } = JSON.parse(jsonArgs);
        const table = tableOfId(String(id));
        const before = readById(level, String(id));
        writingUserDocument = op !== "1.0/remove";
        let out: string;
        try {
          out = await asyncSyscall(op, jsonArgs);
        } finally {
          writingUserDocument = false;
        }
        if (table !== null && !isSystemTable(table)) {
          const after = db.get(table, String(id));
          // A write that leaves the document as it was is no write (transaction.rs).
          const same =
            before !== null &&
            after !== null &&
            exportValue(before, "convex_encoded_json") === exportValue(after, "convex_encoded_json");
          if (!same) countWrite(level, after);
        }
        return out;
      }
      default:
        return asyncSyscall(op, jsonArgs);
    }
  };

  /** `Writes::update` for a user document (`after` null = a delete, size 0). */
  function countWrite(level: Level, after: Doc | null) {
    level.writes.documents++;
    level.writes.bytes += after ? getConvexSize(after as Value) : 0;
    if (level.writes.documents > LIMITS.documentsWritten) {
      throw new Error(`Too many writes in a single function execution (limit: ${LIMITS.documentsWritten})`);
    }
    if (level.writes.bytes > LIMITS.bytesWritten) {
      throw new Error(
        `Too many bytes written in a single function execution (limit: ${formatBytes(LIMITS.bytesWritten)})`,
      );
    }
  }
}
