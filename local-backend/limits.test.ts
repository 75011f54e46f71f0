// @vitest-environment node
// Transaction and value limits counted as the real backend counts them (limits.ts).
import { beforeAll, expect, test } from "vitest";
import { functionError } from "./errors";
import { Executor } from "./execution";
import { LIMITS } from "./limits";
import { convexModules } from "./modules";

const modules = { ...convexModules(), "/convex/limitOps.ts": () => import("./test-functions/limitOps") };
let ex: Executor;

beforeAll(() => {
  ex = new Executor(modules);
});

/** The error message the HTTP answer would carry, without the request-id line. */
async function failure(kind: "query" | "mutation", name: string, args: Record<string, unknown>): Promise<string> {
  try {
    await ex.run(kind, name, args, null);
  } catch (e) {
    return functionError(e).errorMessage.replace(/^\[Request ID: [0-9a-f]{16}\] Server Error\n/, "");
  }
  throw new Error(`${name} succeeded`);
}

const pos = (n: number) => `${n.toString(16).padStart(16, "0")}:0000000000000000`;
const thread = (i: number, pad = "") => ({
  threadId: `t${i}${pad}`,
  runCount: 1,
  latestRunId: "r",
  latestRunSeq: 1,
  ownerId: "o",
  updatedAt: i,
});
const writes = (from: number, n: number, p: number) =>
  Array.from({ length: n }, (_, j) => ({
    table: "threads",
    key: `w${from + j}`,
    position: pos(p),
    doc: thread(from + j),
  }));
const apply = (generation: number, w: unknown[]) =>
  ex.run("mutation", "projector:apply", { generation, writes: w }, null);
const TOO_MANY_READS =
  /^Uncaught Error: Too many reads in a single function execution \(limit: 4096\)\. Consider using smaller limits/;

test("apply: each replace costs its lookup and a by-id read, so 2048 replaces fit in 4096 intervals and 2049 do not", async () => {
  await apply(2, writes(0, 2049, 1)); // 2049 inserts: 2049 lookups, inserts add no counted interval
  const ok: any = await apply(2, writes(0, 2048, 2));
  expect(ok.applied).toBe(2048);
  expect(await failure("mutation", "projector:apply", { generation: 2, writes: writes(0, 2049, 3) })).toMatch(
    TOO_MANY_READS,
  );
  // Rolled back: nothing of the failed batch was written.
  const loaded: any = await ex.run(
    "query",
    "projector:load",
    { generation: 2, table: "threads", keys: ["w2048"] },
    null,
  );
  expect(loaded[0].position).toBe(pos(1));
});

test("inserts: 4096 lookups fit, 4097 do not", async () => {
  expect(((await apply(3, writes(0, 4096, 1))) as any).applied).toBe(4096);
  expect(await failure("mutation", "projector:apply", { generation: 4, writes: writes(0, 4097, 1) })).toMatch(
    TOO_MANY_READS,
  );
});

test("the same range read again is the same interval (convex-test would count 5000)", async () => {
  await ex.run("mutation", "limitOps:fill", { prefix: "s", count: 1, value: 1 }, null);
  expect(await ex.run("query", "limitOps:sameKey", { key: "s0", times: 5000 }, null)).toBe(5000);
  expect(await failure("query", "limitOps:distinctKeys", { count: 4097 })).toMatch(TOO_MANY_READS);
});

test("purge: a query plus a by-id read per delete; one call stops at 2000 deletes, inside the limits", async () => {
  await apply(5, writes(0, 2500, 1));
  await apply(5, writes(2500, 2500, 1));
  // The limit asked for is capped: 5000 documents take three calls, none over 4096 ranges.
  const calls: unknown[] = [];
  for (;;) {
    const r = (await ex.run("mutation", "projector:purge", { generation: 5, table: "threads", limit: 8000 }, null)) as {
      deleted: number;
      done: boolean;
    };
    calls.push(r);
    if (r.done) break;
  }
  expect(calls).toEqual([
    { deleted: 2000, done: false },
    { deleted: 2000, done: false },
    { deleted: 1000, done: true },
  ]);
});

test("documents read: 32000, counting every db.get", async () => {
  await ex.run("mutation", "limitOps:fill", { prefix: "g", count: 1, value: 1 }, null);
  await ex.run("query", "limitOps:getMany", { key: "g0", times: LIMITS.documentsRead - 1 }, null);
  expect(await failure("query", "limitOps:getMany", { key: "g0", times: LIMITS.documentsRead })).toBe(
    "Uncaught Error: Too many documents read in a single function execution (limit: 32000). Consider using smaller " +
      "limits in your queries, paginating your queries, or using indexed queries with a selective index range expressions.\n",
  );
});

test("bytes read: 16 MiB", async () => {
  await ex.run("mutation", "limitOps:fill", { prefix: "big", count: 1, value: "x".repeat(900_000) }, null);
  // ~900 KB per read: the 19th read passes 16 MiB.
  await ex.run("query", "limitOps:getMany", { key: "big0", times: 17 }, null);
  expect(await failure("query", "limitOps:getMany", { key: "big0", times: 18 })).toMatch(
    /^Uncaught Error: Too many bytes read in a single function execution \(limit: 16777216 bytes\)\./,
  );
});

test("documents written: 16000; a patch that changes nothing is no write", async () => {
  await ex.run("mutation", "limitOps:fill", { prefix: "p", count: 1, value: 0 }, null);
  await ex.run("mutation", "limitOps:patchMany", { key: "p0", times: 20_000, same: true }, null);
  await ex.run("mutation", "limitOps:patchMany", { key: "p0", times: LIMITS.documentsWritten, same: false }, null);
  expect(
    await failure("mutation", "limitOps:patchMany", { key: "p0", times: LIMITS.documentsWritten + 1, same: false }),
  ).toBe("Uncaught Error: Too many writes in a single function execution (limit: 16000)\n");
}, 60_000);

test("bytes written: 16 MiB (inserts: a replace would first read as much)", async () => {
  const value = "y".repeat(1_000_000);
  await ex.run("mutation", "limitOps:fill", { prefix: "bw", count: 16, value }, null);
  expect(await failure("mutation", "limitOps:fill", { prefix: "bx", count: 17, value })).toBe(
    "Uncaught Error: Too many bytes written in a single function execution (limit: 16 MiB)\n",
  );
});

test("a replace reads the document first: 17 replaces of a 1 MB document exceed the bytes read", async () => {
  await ex.run("mutation", "limitOps:fill", { prefix: "r", count: 1, value: 0 }, null);
  const value = "y".repeat(1_000_000);
  await ex.run("mutation", "limitOps:replaceMany", { key: "r0", times: 15, value }, null);
  expect(await failure("mutation", "limitOps:replaceMany", { key: "r0", times: 17, value })).toMatch(
    /^Uncaught Error: Too many bytes read in a single function execution/,
  );
});

test("a document over 1 MiB counting _id and _creationTime is refused, and a caught refusal writes nothing", async () => {
  // The value alone is under 1 MiB; with the system fields it is over.
  const value = "z".repeat(LIMITS.documentBytes - 60);
  expect(await failure("mutation", "limitOps:insertOne", { key: "d1", value, catchIt: false })).toMatch(
    /^Uncaught Error: Value is too large \(1\.00 MiB > maximum size 1 MiB\)\n$/,
  );
  expect(await ex.run("mutation", "limitOps:insertOne", { key: "d2", value, catchIt: true }, null)).toMatch(
    /^caught: Value is too large/,
  );
  expect(await ex.run("query", "limitOps:exists", { key: "d2" }, null)).toBe(false);
});

test("projector:apply's own 1 MiB check counts the system fields, so its error (naming the key) comes first", async () => {
  // Every field of `full` but the padding: measured so that getConvexSize(full) is 1 MiB - 10.
  const base = { ...thread(1), key: "big", generation: 6, position: pos(1) };
  const { getConvexSize } = await import("convex/values");
  const pad = "p".repeat(LIMITS.documentBytes - 10 - getConvexSize(base as any));
  const doc = { ...thread(1), threadId: `t1${pad}` };
  expect(getConvexSize({ ...doc, key: "big", generation: 6, position: pos(1) } as any)).toBe(LIMITS.documentBytes - 10);
  expect(
    await failure("mutation", "projector:apply", {
      generation: 6,
      writes: [{ table: "threads", key: "big", position: pos(1), doc }],
    }),
  ).toMatch(/^Uncaught ConvexError: threads key "big": document is \d+ bytes, over Convex's 1 MiB limit/);
});

test("value shapes: arrays over 8192, documents nested over 16", async () => {
  expect(await failure("mutation", "projector:apply", { generation: 7, writes: writes(0, 8193, 1) })).toBe(
    "Invalid arguments for projector.js:apply: Array length is too long (8193 > maximum length 8192)\n",
  );
  let nested: unknown = 1;
  for (let i = 0; i < 16; i++) nested = { n: nested }; // value nesting 16 → document nesting 17
  expect(await failure("mutation", "limitOps:insertOne", { key: "n", value: nested, catchIt: false })).toBe(
    "Uncaught Error: Document is too nested (nested 17 levels deep > maximum nesting 16)\n",
  );
});

test("arguments and return values over 16 MiB; an oversized return rolls the mutation back", async () => {
  expect(await failure("query", "limitOps:exists", { key: "x".repeat(LIMITS.argsBytes) })).toBe(
    "Arguments for limitOps.js:exists are too large (actual: 16.00 MiB, limit: 16 MiB)\n",
  );
  expect(await failure("mutation", "limitOps:insertThenReturn", { key: "ret", size: LIMITS.resultBytes })).toBe(
    "Function limitOps.js:insertThenReturn return value is too large (actual: 16.00 MiB, limit: 16 MiB)\n",
  );
  expect(await ex.run("query", "limitOps:exists", { key: "ret" }, null)).toBe(false);
});
