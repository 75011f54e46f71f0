/**
 * Shared helpers for the public client queries: every read is scoped to the
 * active generation and to `ownerId == identity.subject`. Unauthenticated
 * callers, or a deployment with no active generation yet, see nothing.
 */
import type { QueryCtx } from "./_generated/server";
import { activeGeneration } from "./active";

export type OwnedTable = "runs" | "timelines" | "threads" | "workers" | "inboxes";

export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 200;

/** `{generation, ownerId}` for the caller, or null when they must see nothing. */
export async function scope(ctx: QueryCtx) {
  const identity = await ctx.auth.getUserIdentity();
  if (identity === null) return null;
  const generation = await activeGeneration(ctx);
  if (generation === null) return null;
  return { generation, ownerId: identity.subject };
}

export async function listOwned<T extends OwnedTable>(ctx: QueryCtx, table: T, limit?: number) {
  const s = await scope(ctx);
  if (s === null) return [];
  const n = Math.max(1, Math.min(Math.floor(limit ?? DEFAULT_LIMIT), MAX_LIMIT));
  return await ctx.db
    .query(table)
    .withIndex("by_generation_owner", (q: any) => q.eq("generation", s.generation).eq("ownerId", s.ownerId))
    .order("desc")
    .take(n);
}

export async function getOwned<T extends OwnedTable>(ctx: QueryCtx, table: T, key: string) {
  const s = await scope(ctx);
  if (s === null) return null;
  const doc = await ctx.db
    .query(table)
    .withIndex("by_generation_key", (q: any) => q.eq("generation", s.generation).eq("key", key))
    .unique();
  return doc !== null && doc.ownerId === s.ownerId ? doc : null;
}
