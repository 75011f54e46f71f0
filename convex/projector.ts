/**
 * Internal functions the Rust projector calls with the admin key (BRIEF
 * "Convex function interface", design.md §4–5). Never callable by clients.
 *
 *   apply     guarded upsert of a batch: per (table, generation, key) write only
 *             if the incoming position is newer (string order == position order);
 *             dead letters insert-once by key. One call = one transaction.
 *   loadMany  stored states for hydration of the reducer cache, any tables
 *             in one call (one function call per batch, however many
 *             tables its misses span).
 *   load      the same for one table: what schema version 1 binaries call,
 *             kept so they run on through a functions-first deploy.
 *   page      dump a table (verify, export, tests), cursor-paginated.
 *   getActive / setActive   the active generation (compare-and-set).
 *   purge     delete a generation in bounded chunks.
 *   getState / setState     projector bookkeeping in `projectorState`.
 *   acquireWriter           fence older writers of a generation (writer.ts).
 *   ensureActive            the active generation; creates 1 unless a rebuild fills it.
 *   schemaVersion           the contract version of this app (version.ts).
 *   beginRebuild / renewRebuild / endRebuild   the one-rebuild lease (lease.ts).
 */
import { ConvexError, getConvexSize, v } from "convex/values";
import { internalMutation, internalQuery, type QueryCtx } from "./_generated/server";
import { checkValue } from "./check";
import {
  anyTable,
  deadLetterDoc,
  docValidators,
  writableTable,
  type AnyTable,
  type WritableTable,
} from "./validators";
import { ACTIVE_GENERATION, ACTIVE_KEY, readActive } from "./active";
import { WRITER_KEY, bumpWriter, currentWriter } from "./writer";
import { APPLY_COMPATIBLE, SCHEMA_VERSION } from "./version";
import { LEASE_KEY, begin, currentLease, recordTarget, release, renew } from "./lease";

/** `Position::encode()`: "%016x:%016x"; fixed width makes string order == position order. */
const POSITION = /^[0-9a-f]{16}:[0-9a-f]{16}$/;

/** Convex's limit on one document's size. */
const MAX_DOCUMENT_BYTES = 1024 * 1024;

/**
 * Bytes of documents one purge call reads before it stops. Each document is
 * read twice (by the query, then by `db.delete`, which reads it through its
 * id) against Convex's 16 MiB per transaction: 4 MiB leaves half as margin.
 */
const PURGE_READ_BUDGET = 4 * 1024 * 1024;
/**
 * Documents deleted by one purge call at most: Convex counts an index range
 * for every `db.delete` (4,096 per transaction) besides the query's own.
 */
const PURGE_MAX = 2000;

/** A definite error: `errorMessage` is readable, `errorData` carries {code, message, table?, key?}. */
function fail(code: string, message: string, data: Record<string, string> = {}): never {
  const e = new ConvexError({ code, message, ...data });
  e.message = message;
  throw e;
}

function invalid(message: string, data: Record<string, string>): never {
  fail("InvalidDocument", message, data);
}

function checkGeneration(generation: number) {
  if (!Number.isSafeInteger(generation) || generation < 0) {
    fail("InvalidArgument", `generation must be a non-negative integer, got ${generation}`);
  }
}

/**
 * Refuses a write of any epoch but the current writer's (see writer.ts).
 * Definite: retrying cannot help, the caller lost the generation.
 */
async function checkEpoch(ctx: QueryCtx, generation: number, epoch: number) {
  const w = await currentWriter(ctx, generation);
  if (w === null || w.epoch !== epoch) {
    const now = w === null ? "nobody (the generation was purged)" : `${w.holder} under epoch ${w.epoch} since ${new Date(w.since).toISOString()}`;
    fail("Fenced", `generation ${generation} is written by ${now}; this writer holds epoch ${epoch} and was fenced`, {
      generation: String(generation),
    });
  }
}

/**
 * Deployment skew, told apart from a bad document before any document is
 * validated: the caller retries (and alerts) instead of dead-lettering.
 */
function checkSchemaVersion(theirs: number | undefined) {
  if (theirs !== undefined && !APPLY_COMPATIBLE.includes(theirs)) {
    fail(
      "SchemaMismatch",
      `deployment skew: these Convex functions implement schema version ${SCHEMA_VERSION}, the projector was built for ${theirs}; deploy the functions of the projector's release (npx convex deploy) or run the projector that matches them`,
      { functions: String(SCHEMA_VERSION), projector: String(theirs) },
    );
  }
}

function checkPosition(table: string, key: string, position: string) {
  if (!POSITION.test(position)) {
    invalid(`${table} key ${JSON.stringify(key)}: position ${JSON.stringify(position)} is not "%016x:%016x"`, {
      table,
      key,
    });
  }
}

function stripSystem(doc: Record<string, unknown>) {
  const { _id, _creationTime, ...rest } = doc;
  return rest;
}

export const apply = internalMutation({
  args: {
    generation: v.number(),
    // The contract version the caller was built for (version.ts); absent
    // from binaries that predate it.
    schemaVersion: v.optional(v.number()),
    // The writer epoch from acquireWriter. Absent: an unfenced writer (a
    // projector that predates fencing); its writes are position-guarded only.
    epoch: v.optional(v.number()),
    writes: v.array(
      v.object({ table: writableTable, key: v.string(), position: v.string(), doc: v.any() }),
    ),
    // Optional so a writes-only batch may omit it; same meaning as [].
    deadLetters: v.optional(v.array(v.object({ key: v.string(), position: v.string(), doc: v.any() }))),
  },
  returns: v.object({
    applied: v.number(),
    skipped: v.number(),
    deadLettersInserted: v.number(),
    deadLettersSkipped: v.number(),
  }),
  handler: async (ctx, { generation, schemaVersion, epoch, writes, deadLetters = [] }) => {
    checkGeneration(generation);
    checkSchemaVersion(schemaVersion);
    if (epoch !== undefined) await checkEpoch(ctx, generation, epoch);
    // Validate everything first: a bad document anywhere fails the call with
    // nothing written (a throw would roll back anyway; this makes it cheap).
    for (const w of writes) {
      checkPosition(w.table, w.key, w.position);
      const err = checkValue(docValidators[w.table], w.doc);
      if (err) invalid(`${w.table} key ${JSON.stringify(w.key)}: ${err}`, { table: w.table, key: w.key });
    }
    for (const d of deadLetters) {
      checkPosition("deadLetters", d.key, d.position);
      const err = checkValue(deadLetterDoc, d.doc);
      if (err) invalid(`deadLetters key ${JSON.stringify(d.key)}: ${err}`, { table: "deadLetters", key: d.key });
    }

    let applied = 0;
    let skipped = 0;
    for (const w of writes) {
      const existing = await ctx.db
        .query(w.table)
        .withIndex("by_generation_key", (q) => q.eq("generation", generation).eq("key", w.key))
        .unique();
      const full = { ...w.doc, key: w.key, generation, position: w.position };
      // Checked here, not up front: Convex would reject the write itself, and
      // our error names the key so the sink can isolate it.
      // Convex counts the system fields too: a 32-character `_id` string and
      // the float64 `_creationTime`.
      const size = getConvexSize({ ...full, _id: "x".repeat(32), _creationTime: 0 });
      if (size > MAX_DOCUMENT_BYTES) {
        invalid(`${w.table} key ${JSON.stringify(w.key)}: document is ${size} bytes, over Convex's 1 MiB limit`, {
          table: w.table,
          key: w.key,
        });
      }
      if (existing === null) {
        await ctx.db.insert(w.table, full);
        applied++;
      } else if (w.position > existing.position) {
        await ctx.db.replace(existing._id, full);
        applied++;
      } else {
        skipped++;
      }
    }

    let deadLettersInserted = 0;
    let deadLettersSkipped = 0;
    for (const d of deadLetters) {
      const existing = await ctx.db
        .query("deadLetters")
        .withIndex("by_generation_key", (q) => q.eq("generation", generation).eq("key", d.key))
        .unique();
      if (existing === null) {
        await ctx.db.insert("deadLetters", { ...d.doc, key: d.key, generation, position: d.position });
        deadLettersInserted++;
      } else {
        deadLettersSkipped++;
      }
    }
    return { applied, skipped, deadLettersInserted, deadLettersSkipped };
  },
});

const loadableTable = v.union(writableTable, v.literal("deadLetters"));
type Loaded = { key: string; position: string; doc: Record<string, unknown> };

/** The stored states of `keys` in `table` (absent keys left out), one index lookup each. */
async function loadKeys(
  ctx: QueryCtx,
  generation: number,
  table: WritableTable | "deadLetters",
  keys: string[],
): Promise<Loaded[]> {
  const out: Loaded[] = [];
  for (const key of new Set(keys)) {
    const found = await ctx.db
      .query(table)
      .withIndex("by_generation_key", (q) => q.eq("generation", generation).eq("key", key))
      .unique();
    if (found === null) continue;
    const { _id, _creationTime, key: k, generation: g, position, ...doc } = found as any;
    out.push({ key: k, position, doc });
  }
  return out;
}

export const loadMany = internalQuery({
  args: {
    generation: v.number(),
    tables: v.array(v.object({ table: loadableTable, keys: v.array(v.string()) })),
  },
  handler: async (ctx, { generation, tables }) => {
    const out: (Loaded & { table: string })[] = [];
    for (const { table, keys } of tables) {
      for (const d of await loadKeys(ctx, generation, table, keys)) out.push({ table, ...d });
    }
    return out;
  },
});

export const load = internalQuery({
  args: { generation: v.number(), table: loadableTable, keys: v.array(v.string()) },
  handler: async (ctx, { generation, table, keys }) => loadKeys(ctx, generation, table, keys),
});

export const page = internalQuery({
  args: {
    table: anyTable,
    // null and absent both mean "every generation" / "from the start".
    generation: v.optional(v.union(v.number(), v.null())),
    cursor: v.optional(v.union(v.string(), v.null())),
    limit: v.number(),
  },
  handler: async (ctx, { table, generation, cursor, limit }) => {
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > 8192) {
      fail("InvalidArgument", `limit must be 1..8192, got ${limit}`);
    }
    const t = table as AnyTable;
    const q =
      generation === undefined || generation === null
        ? ctx.db.query(t)
        : ctx.db.query(t).withIndex("by_generation_key", (q) => q.eq("generation", generation));
    const res = await q.paginate({ cursor: cursor ?? null, numItems: limit });
    return {
      docs: res.page.map((d) => stripSystem(d as any)),
      nextCursor: res.isDone ? null : res.continueCursor,
    };
  },
});

export const getActive = internalQuery({
  args: {},
  returns: v.union(v.number(), v.null()),
  handler: async (ctx) => (await readActive(ctx))?.value ?? null,
});

export const setActive = internalMutation({
  args: { generation: v.number(), expected: v.union(v.number(), v.null()) },
  returns: v.object({ ok: v.boolean(), active: v.union(v.number(), v.null()) }),
  handler: async (ctx, { generation, expected }) => {
    checkGeneration(generation);
    const doc = await readActive(ctx);
    const current: number | null = doc?.value ?? null;
    if (current !== expected) return { ok: false, active: current };
    if (doc === null) {
      await ctx.db.insert("projectorState", {
        key: ACTIVE_KEY,
        generation: ACTIVE_GENERATION,
        value: generation,
      });
    } else {
      await ctx.db.patch(doc._id, { value: generation });
    }
    return { ok: true, active: generation };
  },
});

/**
 * The active generation; on a fresh deployment makes generation 1 active,
 * unless a rebuild holds the lease or has a record: then that rebuild fills
 * the first generation and the caller waits for its switch.
 */
export const ensureActive = internalMutation({
  args: {},
  returns: v.object({ active: v.union(v.number(), v.null()), rebuilding: v.union(v.number(), v.null()) }),
  handler: async (ctx) => {
    const doc = await readActive(ctx);
    if (typeof doc?.value === "number") return { active: doc.value, rebuilding: null };
    const { lease } = await currentLease(ctx);
    const rebuilding = lease?.target ?? (await recordTarget(ctx));
    if (rebuilding !== null) return { active: null, rebuilding };
    if (doc === null) {
      await ctx.db.insert("projectorState", { key: ACTIVE_KEY, generation: ACTIVE_GENERATION, value: 1 });
    } else {
      await ctx.db.patch(doc._id, { value: 1 });
    }
    return { active: 1, rebuilding: null };
  },
});

export const beginRebuild = internalMutation({
  args: { holder: v.string(), leaseMs: v.number(), takeOverFrom: v.optional(v.string()) },
  handler: async (ctx, { holder, leaseMs, takeOverFrom }) => begin(ctx, holder, leaseMs, takeOverFrom),
});

export const renewRebuild = internalMutation({
  args: { holder: v.string() },
  returns: v.boolean(),
  handler: async (ctx, { holder }) => renew(ctx, holder),
});

export const endRebuild = internalMutation({
  args: { holder: v.string() },
  returns: v.null(),
  handler: async (ctx, { holder }) => {
    await release(ctx, holder);
    return null;
  },
});

export const purge = internalMutation({
  args: { generation: v.number(), table: anyTable, limit: v.number() },
  returns: v.object({ deleted: v.number(), done: v.boolean() }),
  handler: async (ctx, { generation, table, limit }) => {
    if (!Number.isSafeInteger(limit) || limit < 1) {
      fail("InvalidArgument", `limit must be a positive integer, got ${limit}`);
    }
    const max = Math.min(limit, PURGE_MAX);
    const t = table as AnyTable;
    let deleted = 0;
    let bytes = 0;
    let done = true;
    const q = ctx.db.query(t).withIndex("by_generation_key", (q) => q.eq("generation", generation));
    for await (const doc of q) {
      if (deleted >= max || bytes >= PURGE_READ_BUDGET) {
        done = false;
        break;
      }
      // The active-generation pointer lives in projectorState at generation 0.
      if (t === "projectorState" && generation === ACTIVE_GENERATION && (doc as any).key === ACTIVE_KEY) {
        continue;
      }
      bytes += getConvexSize(doc as any);
      await ctx.db.delete(doc._id);
      deleted++;
    }
    return { deleted, done };
  },
});

export const acquireWriter = internalMutation({
  args: { generation: v.number(), holder: v.string() },
  returns: v.object({ epoch: v.number(), previousHolder: v.union(v.string(), v.null()) }),
  handler: async (ctx, { generation, holder }) => {
    checkGeneration(generation);
    const { epoch, previous } = await bumpWriter(ctx, generation, holder);
    return { epoch, previousHolder: previous?.holder ?? null };
  },
});

export const schemaVersion = internalQuery({
  args: {},
  returns: v.number(),
  handler: async () => SCHEMA_VERSION,
});

export const getState = internalQuery({
  args: { generation: v.number(), key: v.string() },
  handler: async (ctx, { generation, key }) => {
    const doc = await ctx.db
      .query("projectorState")
      .withIndex("by_generation_key", (q) => q.eq("generation", generation).eq("key", key))
      .unique();
    return doc?.value ?? null;
  },
});

export const setState = internalMutation({
  args: { generation: v.number(), key: v.string(), value: v.any() },
  returns: v.null(),
  handler: async (ctx, { generation, key, value }) => {
    if (generation === ACTIVE_GENERATION && key === ACTIVE_KEY) {
      fail("InvalidArgument", 'projectorState (0, "active") is reserved; use projector:setActive');
    }
    if (generation === ACTIVE_GENERATION && key === LEASE_KEY) {
      fail("InvalidArgument", 'projectorState (0, "rebuildLease") is reserved; use projector:beginRebuild');
    }
    if (key === WRITER_KEY) {
      fail("InvalidArgument", 'projectorState (g, "writer") is reserved; use projector:acquireWriter');
    }
    const doc = await ctx.db
      .query("projectorState")
      .withIndex("by_generation_key", (q) => q.eq("generation", generation).eq("key", key))
      .unique();
    if (doc === null) await ctx.db.insert("projectorState", { key, generation, value });
    else await ctx.db.patch(doc._id, { value });
    return null;
  },
});
