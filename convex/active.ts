/**
 * The active generation pointer: `projectorState` document
 * `{generation: 0, key: "active", value: <generation number>}`.
 * That one key of generation 0 is reserved (setState refuses it, purge skips it).
 */
import type { QueryCtx } from "./_generated/server";

export const ACTIVE_GENERATION = 0;
export const ACTIVE_KEY = "active";

export async function readActive(ctx: QueryCtx) {
  return await ctx.db
    .query("projectorState")
    .withIndex("by_generation_key", (q) => q.eq("generation", ACTIVE_GENERATION).eq("key", ACTIVE_KEY))
    .unique();
}

/** The active generation, or null when none has been activated yet. */
export async function activeGeneration(ctx: QueryCtx): Promise<number | null> {
  const doc = await readActive(ctx);
  return typeof doc?.value === "number" ? doc.value : null;
}
