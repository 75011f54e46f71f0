/** Public client queries for `workers` (active generation, caller's own documents only). */
import { v } from "convex/values";
import { query } from "./_generated/server";
import { getOwned, listOwned } from "./client";

/** The caller's workers documents, newest first (`limit` default 50, max 200). */
export const list = query({
  args: { limit: v.optional(v.number()) },
  handler: async (ctx, { limit }) => await listOwned(ctx, "workers", limit),
});

/** One workers document by `workerId`, or null if absent or not the caller's. */
export const get = query({
  args: { workerId: v.string() },
  handler: async (ctx, { workerId }) => await getOwned(ctx, "workers", workerId),
});
