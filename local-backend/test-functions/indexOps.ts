/**
 * Test-only Convex functions for indexes.test.ts: run a scripted list of
 * database operations in one mutation (with nested mutations and failures),
 * so an indexed and a plain convex-test database can be compared step by step.
 * Not part of the deployed app (the server loads only `convex/`).
 */
import { makeFunctionReference, mutationGeneric } from "convex/server";
import { ConvexError } from "convex/values";

export type Op =
  | { op: "insert"; generation: number; key: string; value: number }
  | { op: "move"; generation: number; key: string; to: { generation: number; key: string }; replace: boolean }
  | { op: "delete"; generation: number; key: string }
  | { op: "get"; generation: number; key: string }
  | { op: "generation"; generation: number; order: "asc" | "desc" }
  | { op: "range"; generation: number; from: string }
  | { op: "scan" }
  | { op: "nested"; ops: Op[]; fail: boolean };

const self = makeFunctionReference<"mutation">("indexOps:run") as any;

/** Creation times come from the clock, so two databases given the same script differ in them only. */
const strip = (docs: any[]) => docs.map(({ _creationTime, ...rest }) => rest);

async function runOps(ctx: any, ops: Op[], out: unknown[]) {
  const byKey = (g: number, k: string) =>
    ctx.db.query("projectorState").withIndex("by_generation_key", (q: any) => q.eq("generation", g).eq("key", k));
  for (const o of ops) {
    switch (o.op) {
      case "insert":
        await ctx.db.insert("projectorState", { generation: o.generation, key: o.key, value: o.value });
        break;
      case "move": {
        const doc = await byKey(o.generation, o.key).first();
        if (doc === null) break;
        if (o.replace) await ctx.db.replace(doc._id, { generation: o.to.generation, key: o.to.key, value: doc.value });
        else await ctx.db.patch(doc._id, { generation: o.to.generation, key: o.to.key });
        break;
      }
      case "delete": {
        const doc = await byKey(o.generation, o.key).first();
        if (doc !== null) await ctx.db.delete(doc._id);
        break;
      }
      case "get":
        out.push(strip(await byKey(o.generation, o.key).collect()));
        break;
      case "generation":
        out.push(
          strip(
            await ctx.db
              .query("projectorState")
              .withIndex("by_generation_key", (q: any) => q.eq("generation", o.generation))
              .order(o.order)
              .collect(),
          ),
        );
        break;
      case "range":
        out.push(
          strip(
            await ctx.db
              .query("projectorState")
              .withIndex("by_generation_key", (q: any) => q.eq("generation", o.generation).gte("key", o.from))
              .collect(),
          ),
        );
        break;
      case "scan":
        out.push(strip(await ctx.db.query("projectorState").collect()));
        break;
      case "nested":
        try {
          out.push(await ctx.runMutation(self, { ops: o.ops, fail: o.fail }));
        } catch (e: any) {
          out.push({ nestedFailed: e?.data ?? String(e) });
        }
        break;
    }
  }
}

/** Runs `ops`; with `fail`, throws at the end (rolling everything back) carrying what it read. */
export const run = mutationGeneric(async (ctx, { ops, fail }: { ops: Op[]; fail: boolean }) => {
  const out: unknown[] = [];
  await runOps(ctx, ops, out);
  if (fail) throw new ConvexError({ out: JSON.stringify(out) });
  return out;
});
