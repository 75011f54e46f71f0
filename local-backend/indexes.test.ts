// @vitest-environment node
// The indexes (indexes.ts) against plain convex-test: same results, step by
// step, through writes, key changes, deletes, nested mutations and rollbacks;
// and lookups that stay fast in a 50,000-document table.
import { convexTest } from "convex-test";
import { makeFunctionReference } from "convex/server";
import { expect, test } from "vitest";
import schema from "../convex/schema";
import { Executor } from "./execution";
import { convexModules } from "./modules";
import type { Op } from "./test-functions/indexOps";

const modules = { ...convexModules(), "/convex/indexOps.ts": () => import("./test-functions/indexOps") };
const runOps = makeFunctionReference<"mutation">("indexOps:run") as any;

/** Deterministic PRNG (mulberry32) so a failure reproduces. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomOps(r: () => number, n: number, depth = 0): Op[] {
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)]!;
  const g = () => pick([1, 2]);
  const k = () => pick(["a", "b", "c", "d", "e"]);
  const ops: Op[] = [];
  for (let i = 0; i < n; i++) {
    const x = r();
    // Inserts and deletes balance, so the table stays at a few dozen documents.
    if (x < 0.2) ops.push({ op: "insert", generation: g(), key: k(), value: Math.floor(r() * 100) });
    else if (x < 0.35)
      ops.push({ op: "move", generation: g(), key: k(), to: { generation: g(), key: k() }, replace: r() < 0.5 });
    else if (x < 0.55) ops.push({ op: "delete", generation: g(), key: k() });
    else if (x < 0.75) ops.push({ op: "get", generation: g(), key: k() });
    else if (x < 0.82) ops.push({ op: "generation", generation: g(), order: r() < 0.5 ? "asc" : "desc" });
    else if (x < 0.88) ops.push({ op: "range", generation: g(), from: k() });
    else if (x < 0.92) ops.push({ op: "scan" });
    else if (depth < 2) ops.push({ op: "nested", ops: randomOps(r, 6, depth + 1), fail: r() < 0.4 });
  }
  return ops;
}

/** What a call returned or, for a failed one, what it had read. */
async function outcome(call: () => Promise<unknown>) {
  try {
    return JSON.stringify(await call());
  } catch (e: any) {
    return `failed ${e?.data?.out ?? e}`;
  }
}

test("indexed lookups give convex-test's results through writes, nested mutations and rollbacks", async () => {
  const indexed = new Executor(modules);
  const plain = convexTest({ schema, modules, transactionLimits: true });
  const r = rng(7);
  for (let step = 0; step < 200; step++) {
    const ops = randomOps(r, 12);
    const fail = r() < 0.25;
    const a = await outcome(() => indexed.run("mutation", "indexOps:run", { ops, fail }, null));
    const b = await outcome(() => plain.mutation(runOps, { ops, fail }));
    expect(a, `step ${step}: ${JSON.stringify(ops)}`).toEqual(b);
  }
  const dump = { ops: [{ op: "scan" }] as Op[], fail: false };
  expect(await outcome(() => indexed.run("mutation", "indexOps:run", dump, null))).toEqual(
    await outcome(() => plain.mutation(runOps, dump)),
  );
  // The comparison above is only meaningful if the indexes answered the lookups.
  expect(indexed.indexStats.indexed).toBeGreaterThan(500);
}, 120_000);

const pos = (n: number) => `${n.toString(16).padStart(16, "0")}:0000000000000000`;
const thread = (i: number) => ({
  threadId: `t${i}`,
  runCount: 1,
  latestRunId: "r",
  latestRunSeq: 1,
  ownerId: `owner${i % 100}`,
  updatedAt: i,
});

test("a lookup in a 50,000-document table takes milliseconds", async () => {
  const ex = new Executor(modules);
  const N = 50_000;
  const BATCH = 1000;
  const t0 = performance.now();
  for (let start = 0; start < N; start += BATCH) {
    const writes = Array.from({ length: BATCH }, (_, j) => {
      const i = start + j;
      return { table: "threads", key: `k${i}`, position: pos(1), doc: thread(i) };
    });
    const res: any = await ex.run("mutation", "projector:apply", { generation: 1, writes, deadLetters: [] }, null);
    expect(res.applied).toBe(BATCH);
  }
  const fill = performance.now() - t0;

  // 1,000 keyed lookups in one query (the hydration path), spread over the table.
  const keys = Array.from({ length: 1000 }, (_, j) => `k${(j * 49) % N}`);
  const t1 = performance.now();
  const loaded: any = await ex.run("query", "projector:load", { generation: 1, table: "threads", keys }, null);
  const perLookup = (performance.now() - t1) / keys.length;
  expect(loaded.map((x: any) => x.key)).toEqual(keys);
  expect(loaded.every((x: any) => x.doc.threadId === `t${x.key.slice(1)}`)).toBe(true);

  // The same keys again, as guarded upserts: every one is a lookup, none writes.
  const t2 = performance.now();
  const again: any = await ex.run(
    "mutation",
    "projector:apply",
    { generation: 1, writes: keys.map((key) => ({ table: "threads", key, position: pos(1), doc: thread(0) })) },
    null,
  );
  const perUpsert = (performance.now() - t2) / keys.length;
  expect(again).toMatchObject({ applied: 0, skipped: 1000 });

  // by_generation_owner: 500 documents per owner, newest first.
  await ex.run("mutation", "projector:setActive", { generation: 1, expected: null }, null);
  const t3 = performance.now();
  const owned: any = await ex.run(
    "query",
    "threads:list",
    { limit: 200 },
    {
      subject: "owner7",
      issuer: "test",
      tokenIdentifier: "test|owner7",
    },
  );
  const ownerMs = performance.now() - t3;
  expect(owned).toHaveLength(200);
  expect(owned.every((d: any) => d.ownerId === "owner7")).toBe(true);
  expect(owned[0].updatedAt).toBe(N - 100 + 7);

  // Paging one generation (verify/export): two pages, in key order, disjoint.
  const t4 = performance.now();
  const p1: any = await ex.run(
    "query",
    "projector:page",
    { table: "threads", generation: 1, cursor: null, limit: 4096 },
    null,
  );
  const p2: any = await ex.run(
    "query",
    "projector:page",
    { table: "threads", generation: 1, cursor: p1.nextCursor, limit: 4096 },
    null,
  );
  const pageMs = (performance.now() - t4) / 2;
  const pagedKeys = [...p1.docs, ...p2.docs].map((d: any) => d.key);
  expect(pagedKeys).toHaveLength(8192);
  expect(new Set(pagedKeys).size).toBe(8192);
  expect(pagedKeys).toEqual([...pagedKeys].sort());

  console.log(
    `page(4096) ${pageMs.toFixed(0)} ms/page; ` +
      `50k threads: fill ${fill.toFixed(0)} ms (${((fill / N) * 1000).toFixed(1)} µs/upsert); ` +
      `load ${perLookup.toFixed(3)} ms/lookup; apply-skip ${perUpsert.toFixed(3)} ms/lookup; ` +
      `by_generation_owner take(200) ${ownerMs.toFixed(1)} ms`,
  );
  // Generous: a table scan per lookup costs tens of ms at this size.
  expect(perLookup).toBeLessThan(200);
}, 300_000);
