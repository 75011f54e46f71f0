// @vitest-environment node
// Read sets decide which subscriptions rerun after a commit: precise enough
// that another user's writes leave a query alone, and never missing a write
// that changes a result (checked against the results themselves).
import { expect, test } from "vitest";
import { pos, run, worker } from "../convex/fixtures.test-helpers";
import { Executor } from "./execution";
import { convexModules } from "./modules";
import { installReadSets, invalidates, type ReadSet } from "./readsets";

const user = (subject: string) => ({ subject, issuer: "t", tokenIdentifier: `t|${subject}` });

function setup() {
  const ex = new Executor(convexModules());
  const tracker = installReadSets(ex.db);
  let lsn = 1;
  /** Runs an internal mutation; returns what it committed. */
  const mutate = async (name: string, args: Record<string, unknown>) => {
    await ex.run("mutation", name, args, null);
    return tracker.takeWrites();
  };
  const apply = (writes: { table: string; key: string; doc: Record<string, unknown> }[]) => {
    lsn++;
    return mutate("projector:apply", {
      generation: 1,
      writes: writes.map((w, i) => ({ ...w, position: pos(lsn, i) })),
      deadLetters: [],
    });
  };
  const query = (name: string, args: Record<string, unknown>, subject: string) =>
    ex.snapshot((q) => tracker.track(() => q(name, args, user(subject))));
  return { ex, apply, mutate, query };
}

test("a query is invalidated by writes into its range, not by another user's", async () => {
  const { apply, mutate, query } = setup();
  await apply([
    { table: "runs", key: "ra", doc: run("ra", "alice") },
    { table: "runs", key: "rb", doc: run("rb", "bob") },
  ]);
  await mutate("projector:setActive", { generation: 1, expected: null });
  const alice = await query("runs:list", {}, "alice");
  expect((alice.value as any[]).map((r) => r.key)).toEqual(["ra"]);
  const bobWrite = await apply([{ table: "runs", key: "rb", doc: run("rb", "bob", { stepCount: 2 }) }]);
  expect(invalidates(alice.reads, bobWrite)).toBe(false);
  const workerWrite = await apply([{ table: "workers", key: "wa", doc: worker("wa", "alice") }]);
  expect(invalidates(alice.reads, workerWrite)).toBe(false);
  expect(
    invalidates(alice.reads, await apply([{ table: "runs", key: "ra", doc: run("ra", "alice", { stepCount: 2 }) }])),
  ).toBe(true);
  // A document moving into the range, and out of it.
  expect(invalidates(alice.reads, await apply([{ table: "runs", key: "rb", doc: run("rb", "alice") }]))).toBe(true);
  const again = await query("runs:list", {}, "alice");
  expect(invalidates(again.reads, await apply([{ table: "runs", key: "rb", doc: run("rb", "bob") }]))).toBe(true);
  // Switching the active generation changes every result.
  expect(invalidates(again.reads, await mutate("projector:setActive", { generation: 2, expected: 1 }))).toBe(true);
});

test("every write that changes a result invalidates it (random writes, 3 users, 4 queries)", async () => {
  const { apply, mutate, query } = setup();
  await mutate("projector:setActive", { generation: 1, expected: null });
  const users = ["alice", "bob", "carol"];
  const queries: [string, Record<string, unknown>][] = [
    ["runs:list", { limit: 3 }],
    ["runs:get", { runId: "r1" }],
    ["workers:list", {}],
    ["inbox:get", { userId: "alice" }],
  ];
  let seed = 7;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  let misses = 0;
  let skipped = 0;
  for (let round = 0; round < 60; round++) {
    const subject = users[rand(3)]!;
    const [name, args] = queries[rand(queries.length)]!;
    const before = await query(name, args, subject);
    const writes = Array.from({ length: 1 + rand(3) }, () => {
      const k = `r${rand(6)}`;
      return rand(4) === 0
        ? { table: "workers", key: `w${rand(3)}`, doc: worker(`w${rand(3)}`, users[rand(3)]!) }
        : { table: "runs", key: k, doc: run(k, users[rand(3)]!, { stepCount: rand(5) }) };
    });
    const written = await apply(writes);
    const after = await query(name, args, subject);
    const changed = JSON.stringify(after.value) !== JSON.stringify(before.value);
    const flagged = invalidates(before.reads, written);
    if (changed && !flagged) misses++;
    if (!flagged) skipped++;
  }
  expect(misses).toBe(0);
  // And it is selective: some commits left the query alone.
  expect(skipped).toBeGreaterThan(5);
});
