/**
 * Test-only Convex functions for limits.test.ts: each drives one limit with
 * as few documents as it can. Not part of the deployed app.
 */
import { mutationGeneric, queryGeneric } from "convex/server";

const byKey = (ctx: any, key: string) =>
  ctx.db.query("projectorState").withIndex("by_generation_key", (q: any) => q.eq("generation", 9).eq("key", key));

/** Inserts `count` documents `{generation: 9, key: prefix+i, value}`. */
export const fill = mutationGeneric(
  async (ctx, { prefix, count, value }: { prefix: string; count: number; value: unknown }) => {
    for (let i = 0; i < count; i++)
      await ctx.db.insert("projectorState", { generation: 9, key: `${prefix}${i}`, value });
    return null;
  },
);

/** Looks the same key up `times` times: one interval on the real backend. */
export const sameKey = queryGeneric(async (ctx, { key, times }: { key: string; times: number }) => {
  let found = 0;
  for (let i = 0; i < times; i++) if ((await byKey(ctx, key).unique()) !== null) found++;
  return found;
});

/** Looks up `count` distinct keys: one interval each. */
export const distinctKeys = queryGeneric(async (ctx, { count }: { count: number }) => {
  for (let i = 0; i < count; i++) await byKey(ctx, `k${i}`).unique();
  return null;
});

/** Reads one document by id `times` times. */
export const getMany = queryGeneric(async (ctx, { key, times }: { key: string; times: number }) => {
  const doc = await byKey(ctx, key).unique();
  for (let i = 0; i < times; i++) await ctx.db.get(doc!._id);
  return null;
});

/** Patches one document `times` times, alternating its value (or not: `same`). */
export const patchMany = mutationGeneric(
  async (ctx, { key, times, same }: { key: string; times: number; same: boolean }) => {
    const doc = await byKey(ctx, key).unique();
    for (let i = 0; i < times; i++) await ctx.db.patch(doc!._id, { value: same ? doc!.value : i % 2 });
    return null;
  },
);

/** Replaces one document `times` times with `value` and a changing counter. */
export const replaceMany = mutationGeneric(
  async (ctx, { key, times, value }: { key: string; times: number; value: unknown }) => {
    const doc = await byKey(ctx, key).unique();
    for (let i = 0; i < times; i++) await ctx.db.replace(doc!._id, { generation: 9, key, value: [i, value] });
    return null;
  },
);

/** Inserts one document with `value`, catching the failure when `catchIt`. */
export const insertOne = mutationGeneric(
  async (ctx, { key, value, catchIt }: { key: string; value: unknown; catchIt: boolean }) => {
    try {
      await ctx.db.insert("projectorState", { generation: 9, key, value });
    } catch (e) {
      if (!catchIt) throw e;
      return `caught: ${(e as Error).message}`;
    }
    return "inserted";
  },
);

/** Inserts a document, then returns `size` characters. */
export const insertThenReturn = mutationGeneric(async (ctx, { key, size }: { key: string; size: number }) => {
  await ctx.db.insert("projectorState", { generation: 9, key, value: 1 });
  return "x".repeat(size);
});

/** Whether `key` exists. */
export const exists = queryGeneric(async (ctx, { key }: { key: string }) => (await byKey(ctx, key).unique()) !== null);
