// @vitest-environment edge-runtime
import { describe, expect, test } from "vitest";
import { internal } from "./_generated/api";
import { deadLetter, inbox, newT, pos, run, thread, timeline, worker } from "./fixtures.test-helpers";

const G = 1;

async function dump(t: ReturnType<typeof newT>, table: any, generation?: number) {
  const out: any[] = [];
  let cursor: string | null = null;
  do {
    const r: any = await t.query(internal.projector.page, { table, generation, cursor, limit: 3 });
    out.push(...r.docs);
    cursor = r.nextCursor;
  } while (cursor !== null);
  return out;
}

describe("apply", () => {
  test("inserts, replaces on a newer position, skips older and equal", async () => {
    const t = newT();
    const first = await t.mutation(internal.projector.apply, {
      generation: G,
      writes: [{ table: "runs", key: "r1", position: pos(10), doc: run("r1", "u1") }],
      deadLetters: [],
    });
    expect(first).toEqual({ applied: 1, skipped: 0, deadLettersInserted: 0, deadLettersSkipped: 0 });

    const newer = await t.mutation(internal.projector.apply, {
      generation: G,
      writes: [{ table: "runs", key: "r1", position: pos(10, 1), doc: run("r1", "u1", { status: "running" }) }],
      deadLetters: [],
    });
    expect(newer.applied).toBe(1);

    for (const p of [pos(10, 1), pos(9, 5), pos(10, 0)]) {
      const r = await t.mutation(internal.projector.apply, {
        generation: G,
        writes: [{ table: "runs", key: "r1", position: p, doc: run("r1", "u1", { status: "failed" }) }],
        deadLetters: [],
      });
      expect(r).toEqual({ applied: 0, skipped: 1, deadLettersInserted: 0, deadLettersSkipped: 0 });
    }
    const loaded = await t.query(internal.projector.load, { generation: G, table: "runs", keys: ["r1", "missing"] });
    expect(loaded).toEqual([{ key: "r1", position: pos(10, 1), doc: run("r1", "u1", { status: "running" }) }]);
  });

  test("loadMany reads several tables in one call, naming each document's table", async () => {
    const t = newT();
    await t.mutation(internal.projector.apply, {
      generation: G,
      writes: [
        { table: "runs", key: "r1", position: pos(1), doc: run("r1", "u1") },
        { table: "threads", key: "t", position: pos(2), doc: thread("t", "u1", 1) },
      ],
      deadLetters: [],
    });
    const loaded = await t.query(internal.projector.loadMany, {
      generation: G,
      tables: [
        { table: "threads", keys: ["t", "missing"] },
        { table: "runs", keys: ["r1", "r1"] },
        { table: "workers", keys: ["r1"] },
      ],
    });
    expect(loaded).toEqual([
      { table: "threads", key: "t", position: pos(2), doc: thread("t", "u1", 1) },
      { table: "runs", key: "r1", position: pos(1), doc: run("r1", "u1") },
    ]);
    // Another generation holds nothing.
    expect(await t.query(internal.projector.loadMany, { generation: G + 1, tables: [{ table: "runs", keys: ["r1"] }] })).toEqual([]);
  });

  test("position compare is by string and fixed width, across lsn digits", async () => {
    const t = newT();
    const w = (p: string, n: number) => ({ table: "threads" as const, key: "t", position: p, doc: thread("t", "u", n) });
    await t.mutation(internal.projector.apply, { generation: G, writes: [w(pos(0xf), 1)], deadLetters: [] });
    const r = await t.mutation(internal.projector.apply, { generation: G, writes: [w(pos(0x10), 2)], deadLetters: [] });
    expect(r.applied).toBe(1);
    const [doc] = await t.query(internal.projector.load, { generation: G, table: "threads", keys: ["t"] });
    expect(doc.doc.runCount).toBe(2);
  });

  test("a replayed batch is a no-op", async () => {
    const t = newT();
    const batch = {
      generation: G,
      writes: [
        { table: "runs" as const, key: "r1", position: pos(5), doc: run("r1", "u1") },
        { table: "timelines" as const, key: "r1", position: pos(5), doc: timeline("r1", "u1") },
        { table: "threads" as const, key: "t1", position: pos(5), doc: thread("t1", "u1") },
        { table: "workers" as const, key: "w1", position: pos(5, 1), doc: worker("w1", "u1") },
        { table: "inboxes" as const, key: "u1", position: pos(5, 2), doc: inbox("u1") },
      ],
      deadLetters: [deadLetter(7, pos(5, 3))],
    };
    expect(await t.mutation(internal.projector.apply, batch)).toEqual({
      applied: 5,
      skipped: 0,
      deadLettersInserted: 1,
      deadLettersSkipped: 0,
    });
    const before = await Promise.all(["runs", "timelines", "threads", "workers", "inboxes", "deadLetters"].map((x) => dump(t, x, G)));
    expect(await t.mutation(internal.projector.apply, batch)).toEqual({
      applied: 0,
      skipped: 5,
      deadLettersInserted: 0,
      deadLettersSkipped: 1,
    });
    const after = await Promise.all(["runs", "timelines", "threads", "workers", "inboxes", "deadLetters"].map((x) => dump(t, x, G)));
    expect(after).toEqual(before);
  });

  test("batches arriving out of order end in the newest state", async () => {
    const t = newT();
    const batches = [1, 2, 3, 4, 5].map((i) => ({
      generation: G,
      writes: [
        { table: "runs" as const, key: "r1", position: pos(i * 16), doc: run("r1", "u1", { eventCount: i }) },
        { table: "runs" as const, key: `only${i}`, position: pos(i * 16, 1), doc: run(`only${i}`, "u1") },
      ],
      deadLetters: [],
    }));
    for (const i of [3, 5, 1, 4, 2]) await t.mutation(internal.projector.apply, batches[i - 1]);
    const docs = await dump(t, "runs", G);
    expect(docs).toHaveLength(6);
    const r1 = docs.find((d) => d.key === "r1");
    expect(r1.eventCount).toBe(5);
    expect(r1.position).toBe(pos(80));
  });

  test("same key twice in one batch keeps the newer write", async () => {
    const t = newT();
    const r = await t.mutation(internal.projector.apply, {
      generation: G,
      writes: [
        { table: "runs", key: "r1", position: pos(2), doc: run("r1", "u1", { eventCount: 2 }) },
        { table: "runs", key: "r1", position: pos(1), doc: run("r1", "u1", { eventCount: 1 }) },
      ],
      deadLetters: [],
    });
    expect(r).toMatchObject({ applied: 1, skipped: 1 });
    const [d] = await t.query(internal.projector.load, { generation: G, table: "runs", keys: ["r1"] });
    expect(d.doc.eventCount).toBe(2);
  });

  test("an invalid document in the middle rolls back the whole call and names its key", async () => {
    const t = newT();
    const bad = { ...run("r2", "u1"), status: "exploded" };
    await expect(
      t.mutation(internal.projector.apply, {
        generation: G,
        writes: [
          { table: "runs", key: "r1", position: pos(1), doc: run("r1", "u1") },
          { table: "runs", key: "r2", position: pos(2), doc: bad },
          { table: "runs", key: "r3", position: pos(3), doc: run("r3", "u1") },
        ],
        deadLetters: [deadLetter(1, pos(4))],
      }),
    ).rejects.toThrow(/runs key "r2": status/);
    expect(await dump(t, "runs")).toEqual([]);
    expect(await dump(t, "deadLetters")).toEqual([]);
  });

  test("a throw after writes were made rolls them back", async () => {
    const t = newT();
    // Passes validation, then the second insert exceeds Convex's 1 MiB document limit.
    await expect(
      t.mutation(internal.projector.apply, {
        generation: G,
        writes: [
          { table: "runs", key: "r1", position: pos(1), doc: run("r1", "u1") },
          { table: "runs", key: "r2", position: pos(2), doc: run("r2", "u1", { title: "x".repeat(1100 * 1024) }) },
        ],
        deadLetters: [deadLetter(1, pos(3))],
      }),
    ).rejects.toThrow(/runs key "r2": document is \d+ bytes, over Convex's 1 MiB limit/);
    expect(await dump(t, "runs")).toEqual([]);
    expect(await dump(t, "deadLetters")).toEqual([]);
  });

  test("a bad dead letter fails the whole call", async () => {
    const t = newT();
    // Valid documents pass validation; the second dead letter's doc is broken, so
    // the throw comes after validation of writes; nothing must persist either way.
    const dl = deadLetter(2, pos(9));
    (dl.doc as any).eventSeq = "2";
    await expect(
      t.mutation(internal.projector.apply, {
        generation: G,
        writes: [{ table: "threads", key: "t1", position: pos(1), doc: thread("t1", "u1") }],
        deadLetters: [deadLetter(1, pos(8)), dl],
      }),
    ).rejects.toThrow(/deadLetters key "2": eventSeq/);
    expect(await dump(t, "threads")).toEqual([]);
    expect(await dump(t, "deadLetters")).toEqual([]);
  });

  test("validators reject bad shapes", async () => {
    const t = newT();
    const cases: [string, any, RegExp][] = [
      ["missing nullable", (() => { const d: any = run("r", "u"); delete d.title; return d; })(), /title: missing \(nullable/],
      ["extra field", { ...run("r", "u"), extra: 1 }, /extra: unexpected field/],
      ["wrong type", { ...run("r", "u"), stepCount: "1" }, /stepCount: expected number/],
      ["system field", { ...run("r", "u"), key: "r" }, /key: unexpected field/],
      ["nested item", { ...timeline("r", "u"), items: [{ streamSeq: 1, type: "x" }] }, /items\[0\]\.at: missing/],
    ];
    for (const [, doc, re] of cases) {
      const table = "items" in doc ? "timelines" : "runs";
      await expect(
        t.mutation(internal.projector.apply, {
          generation: G,
          writes: [{ table, key: "r", position: pos(1), doc }],
          deadLetters: [],
        }),
      ).rejects.toThrow(re);
    }
    await expect(
      t.mutation(internal.projector.apply, {
        generation: G,
        writes: [{ table: "runs", key: "r", position: "1:2", doc: run("r", "u") }],
        deadLetters: [],
      }),
    ).rejects.toThrow(/not "%016x:%016x"/);
    await expect(
      t.mutation(internal.projector.apply, {
        generation: G,
        writes: [{ table: "users" as any, key: "r", position: pos(1), doc: run("r", "u") }],
        deadLetters: [],
      }),
    ).rejects.toThrow();
    await expect(
      t.mutation(internal.projector.apply, { generation: 1.5, writes: [], deadLetters: [] }),
    ).rejects.toThrow(/generation/);
    expect(await dump(t, "runs")).toEqual([]);
  });

  test("deadLetters may be omitted", async () => {
    const t = newT();
    const r = await t.mutation(internal.projector.apply, {
      generation: G,
      writes: [{ table: "threads", key: "t", position: pos(1), doc: thread("t", "u") }],
    });
    expect(r).toEqual({ applied: 1, skipped: 0, deadLettersInserted: 0, deadLettersSkipped: 0 });
  });

  test("dead letters are idempotent by eventSeq", async () => {
    const t = newT();
    const a = await t.mutation(internal.projector.apply, {
      generation: G,
      writes: [],
      deadLetters: [deadLetter(11, pos(1)), deadLetter(12, pos(2))],
    });
    expect(a).toMatchObject({ deadLettersInserted: 2, deadLettersSkipped: 0 });
    const b = await t.mutation(internal.projector.apply, {
      generation: G,
      writes: [],
      deadLetters: [deadLetter(12, pos(7)), deadLetter(13, pos(8))],
    });
    expect(b).toMatchObject({ deadLettersInserted: 1, deadLettersSkipped: 1 });
    const docs = await dump(t, "deadLetters", G);
    expect(docs.map((d) => d.eventSeq).sort()).toEqual([11, 12, 13]);
    expect(docs.find((d) => d.eventSeq === 12).position).toBe(pos(2));
    // Another generation is a separate key space.
    const c = await t.mutation(internal.projector.apply, { generation: 2, writes: [], deadLetters: [deadLetter(12, pos(1))] });
    expect(c.deadLettersInserted).toBe(1);
  });

  test("stays within transaction limits for a 1,000-document batch", async () => {
    const t = newT();
    const writes = Array.from({ length: 1000 }, (_, i) => ({
      table: "runs" as const,
      key: `r${i}`,
      position: pos(1, i),
      doc: run(`r${i}`, "u1"),
    }));
    const r = await t.mutation(internal.projector.apply, { generation: G, writes, deadLetters: [] });
    expect(r.applied).toBe(1000);
  });
});

describe("page", () => {
  test("returns every document exactly once across pages, for one generation or all", async () => {
    const t = newT();
    for (const g of [1, 2]) {
      await t.mutation(internal.projector.apply, {
        generation: g,
        writes: Array.from({ length: 10 }, (_, i) => ({
          table: "workers" as const,
          key: `w${i}`,
          position: pos(g, i),
          doc: worker(`w${i}`, "u1"),
        })),
        deadLetters: [],
      });
    }
    const g1 = await dump(t, "workers", 1);
    expect(g1.map((d) => d.key).sort()).toEqual(Array.from({ length: 10 }, (_, i) => `w${i}`).sort());
    expect(new Set(g1.map((d) => d.generation))).toEqual(new Set([1]));
    expect(g1[0]).not.toHaveProperty("_id");
    expect(g1[0]).not.toHaveProperty("_creationTime");
    const all = await dump(t, "workers");
    expect(all).toHaveLength(20);
    expect(new Set(all.map((d) => `${d.generation}/${d.key}`)).size).toBe(20);
    const nullGen: any = await t.query(internal.projector.page, { table: "workers", generation: null, limit: 50 });
    expect(nullGen.docs).toHaveLength(20);
    expect(nullGen.nextCursor).toBeNull();
    await expect(t.query(internal.projector.page, { table: "workers", cursor: null, limit: 0 })).rejects.toThrow(/limit/);
    const empty = await t.query(internal.projector.page, { table: "runs", generation: 1, cursor: null, limit: 5 });
    expect(empty).toEqual({ docs: [], nextCursor: null });
  });

  test("works for projectorState", async () => {
    const t = newT();
    await t.mutation(internal.projector.setState, { generation: 1, key: "a", value: { x: 1 } });
    await t.mutation(internal.projector.setActive, { generation: 1, expected: null });
    const docs = await dump(t, "projectorState");
    expect(docs).toHaveLength(2);
  });
});

describe("generations", () => {
  test("setActive is a compare-and-set", async () => {
    const t = newT();
    expect(await t.query(internal.projector.getActive, {})).toBeNull();
    expect(await t.mutation(internal.projector.setActive, { generation: 1, expected: 5 })).toEqual({ ok: false, active: null });
    expect(await t.mutation(internal.projector.setActive, { generation: 1, expected: null })).toEqual({ ok: true, active: 1 });
    expect(await t.mutation(internal.projector.setActive, { generation: 3, expected: null })).toEqual({ ok: false, active: 1 });
    expect(await t.mutation(internal.projector.setActive, { generation: 2, expected: 1 })).toEqual({ ok: true, active: 2 });
    expect(await t.query(internal.projector.getActive, {})).toBe(2);
  });

  test("purge deletes only its generation, in chunks, under the limits", async () => {
    const t = newT();
    for (const g of [1, 2]) {
      await t.mutation(internal.projector.apply, {
        generation: g,
        writes: Array.from({ length: 25 }, (_, i) => ({
          table: "inboxes" as const,
          key: `u${i}`,
          position: pos(g, i),
          doc: inbox(`u${i}`),
        })),
        deadLetters: [deadLetter(1, pos(g, 99))],
      });
    }
    let rounds = 0;
    let total = 0;
    for (;;) {
      const r = await t.mutation(internal.projector.purge, { generation: 1, table: "inboxes", limit: 10 });
      expect(r.deleted).toBeLessThanOrEqual(10);
      total += r.deleted;
      rounds++;
      if (r.done) break;
    }
    expect(total).toBe(25);
    expect(rounds).toBe(3);
    expect(await dump(t, "inboxes", 1)).toEqual([]);
    expect(await dump(t, "inboxes", 2)).toHaveLength(25);
    expect(await dump(t, "deadLetters", 1)).toHaveLength(1);
    expect(await t.mutation(internal.projector.purge, { generation: 1, table: "deadLetters", limit: 100 })).toEqual({
      deleted: 1,
      done: true,
    });
  });

  test("purge of a large generation respects transaction limits with a big limit", async () => {
    const t = newT();
    const writes = Array.from({ length: 2000 }, (_, i) => ({
      table: "runs" as const,
      key: `r${i}`,
      position: pos(1, i),
      doc: run(`r${i}`, "u1"),
    }));
    await t.mutation(internal.projector.apply, { generation: 1, writes: writes.slice(0, 1000), deadLetters: [] });
    await t.mutation(internal.projector.apply, { generation: 1, writes: writes.slice(1000), deadLetters: [] });
    const r = await t.mutation(internal.projector.purge, { generation: 1, table: "runs", limit: 100000 });
    expect(r).toEqual({ deleted: 2000, done: true });
  });

  test("purge never deletes the active pointer", async () => {
    const t = newT();
    await t.mutation(internal.projector.setActive, { generation: 1, expected: null });
    await t.mutation(internal.projector.setState, { generation: 0, key: "other", value: 1 });
    const r = await t.mutation(internal.projector.purge, { generation: 0, table: "projectorState", limit: 10 });
    expect(r).toEqual({ deleted: 1, done: true });
    expect(await t.query(internal.projector.getActive, {})).toBe(1);
  });
});

describe("state", () => {
  test("getState/setState upsert by (generation, key)", async () => {
    const t = newT();
    expect(await t.query(internal.projector.getState, { generation: 1, key: "k" })).toBeNull();
    await t.mutation(internal.projector.setState, { generation: 1, key: "k", value: { lsn: "0/10", n: 1 } });
    await t.mutation(internal.projector.setState, { generation: 1, key: "k", value: { lsn: "0/20", n: 2 } });
    await t.mutation(internal.projector.setState, { generation: 2, key: "k", value: "other" });
    expect(await t.query(internal.projector.getState, { generation: 1, key: "k" })).toEqual({ lsn: "0/20", n: 2 });
    expect(await t.query(internal.projector.getState, { generation: 2, key: "k" })).toBe("other");
    expect(await dump(t, "projectorState")).toHaveLength(2);
    await expect(t.mutation(internal.projector.setState, { generation: 0, key: "active", value: 9 })).rejects.toThrow(
      /reserved/,
    );
  });
});

describe("writer fencing", () => {
  const write = (n: number) => ({ table: "runs" as const, key: "r1", position: pos(n), doc: run("r1", "u1") });

  test("acquireWriter bumps the epoch; apply refuses every other epoch, unfenced writes still pass", async () => {
    const t = newT();
    const a = await t.mutation(internal.projector.acquireWriter, { generation: G, holder: "a" });
    expect(a).toEqual({ epoch: 1, previousHolder: null });
    await t.mutation(internal.projector.apply, { generation: G, epoch: 1, writes: [write(1)] });
    const b = await t.mutation(internal.projector.acquireWriter, { generation: G, holder: "b" });
    expect(b).toEqual({ epoch: 2, previousHolder: "a" });
    // The old owner's next write is refused, definitely, and writes nothing.
    await expect(t.mutation(internal.projector.apply, { generation: G, epoch: 1, writes: [write(5)] })).rejects.toThrow(
      /generation 1 is written by b under epoch 2 .* epoch 1 and was fenced/,
    );
    const [doc] = await dump(t, "runs", G);
    expect(doc.position).toBe(pos(1));
    // A newer epoch than anyone acquired is refused too.
    await expect(t.mutation(internal.projector.apply, { generation: G, epoch: 3, writes: [write(6)] })).rejects.toThrow(
      /fenced/,
    );
    await t.mutation(internal.projector.apply, { generation: G, epoch: 2, writes: [write(7)] });
    await t.mutation(internal.projector.apply, { generation: G, writes: [write(8)] });
    expect((await dump(t, "runs", G))[0].position).toBe(pos(8));
    // Epochs are per generation.
    expect(await t.mutation(internal.projector.acquireWriter, { generation: 2, holder: "c" })).toEqual({
      epoch: 1,
      previousHolder: null,
    });
  });

  test("a purged generation fences its writers; the writer record is reserved", async () => {
    const t = newT();
    await t.mutation(internal.projector.acquireWriter, { generation: G, holder: "a" });
    await t.mutation(internal.projector.purge, { generation: G, table: "projectorState", limit: 100 });
    await expect(t.mutation(internal.projector.apply, { generation: G, epoch: 1, writes: [write(1)] })).rejects.toThrow(
      /written by nobody/,
    );
    await expect(
      t.mutation(internal.projector.setState, { generation: G, key: "writer", value: { epoch: 9 } }),
    ).rejects.toThrow(/reserved/);
  });
});

describe("rebuild lease", () => {
  test("one holder at a time; a stale or named holder is taken over; the target is reserved", async () => {
    const t = newT();
    const a = await t.mutation(internal.projector.beginRebuild, { holder: "a", leaseMs: 60_000 });
    expect(a).toEqual({ ok: true, target: 1, from: null, resumed: false });
    // While a rebuild fills generation 1, nothing else creates it.
    expect(await t.mutation(internal.projector.ensureActive, {})).toEqual({ active: null, rebuilding: 1 });
    const b: any = await t.mutation(internal.projector.beginRebuild, { holder: "b", leaseMs: 60_000 });
    expect(b.ok).toBe(false);
    expect(b.holder).toBe("a");
    // Renewal is the holder's only.
    expect(await t.mutation(internal.projector.renewRebuild, { holder: "b" })).toBe(false);
    expect(await t.mutation(internal.projector.renewRebuild, { holder: "a" })).toBe(true);
    // A holder seen dead is taken over by name; a lease without heartbeat expires.
    expect((await t.mutation(internal.projector.beginRebuild, { holder: "b", leaseMs: 60_000, takeOverFrom: "a" })).ok).toBe(true);
    expect((await t.mutation(internal.projector.beginRebuild, { holder: "c", leaseMs: 0 })).ok).toBe(true);
    await t.mutation(internal.projector.endRebuild, { holder: "c" });
    expect(await t.mutation(internal.projector.ensureActive, {})).toEqual({ active: 1, rebuilding: null });
    expect(await t.mutation(internal.projector.ensureActive, {})).toEqual({ active: 1, rebuilding: null });
    const next = await t.mutation(internal.projector.beginRebuild, { holder: "d", leaseMs: 60_000 });
    expect(next).toEqual({ ok: true, target: 2, from: 1, resumed: false });
    await expect(
      t.mutation(internal.projector.setState, { generation: 0, key: "rebuildLease", value: {} }),
    ).rejects.toThrow(/reserved/);
  });

  test("a recorded rebuild keeps its target when resumed", async () => {
    const t = newT();
    await t.mutation(internal.projector.setState, { generation: 0, key: "rebuild", value: { target: 7 } });
    expect(await t.mutation(internal.projector.ensureActive, {})).toEqual({ active: null, rebuilding: 7 });
    const r = await t.mutation(internal.projector.beginRebuild, { holder: "a", leaseMs: 60_000 });
    expect(r).toEqual({ ok: true, target: 7, from: null, resumed: true });
  });
});

describe("schema version", () => {
  test("apply refuses another schema version before looking at any document", async () => {
    const t = newT();
    expect(await t.query(internal.projector.schemaVersion, {})).toBe(2);
    await expect(
      t.mutation(internal.projector.apply, {
        generation: G,
        schemaVersion: 3,
        writes: [{ table: "runs", key: "r1", position: "bad", doc: {} }],
      }),
    ).rejects.toThrow(/deployment skew: .* schema version 2, the projector was built for 3/);
    const ok = await t.mutation(internal.projector.apply, {
      generation: G,
      schemaVersion: 2,
      writes: [{ table: "runs", key: "r1", position: pos(1), doc: run("r1", "u1") }],
    });
    expect(ok.applied).toBe(1);
  });

  test("a version 1 binary still writes through a functions-first deploy (version 2 only added loadMany)", async () => {
    const t = newT();
    const ok = await t.mutation(internal.projector.apply, {
      generation: G,
      schemaVersion: 1,
      writes: [{ table: "runs", key: "r1", position: pos(1), doc: run("r1", "u1") }],
    });
    expect(ok.applied).toBe(1);
    const [d] = await t.query(internal.projector.load, { generation: G, table: "runs", keys: ["r1"] });
    expect(d.position).toBe(pos(1));
  });
});
