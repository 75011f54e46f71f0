/** Public client queries for `runs` (active generation, caller's own documents only). */
import { v } from "convex/values";
import { query } from "./_generated/server";
import { getOwned, listOwned } from "./client";

/** The caller's runs documents, newest first (`limit` default 50, max 200). */
export const list = query({
  args: { limit: v.optional(v.number()) },
  handler: async (ctx, { limit }) => await listOwned(ctx, "runs", limit),
});

/** One runs document by `runId`, or null if absent or not the caller's. */
export const get = query({
  args: { runId: v.string() },
  handler: async (ctx, { runId }) => await getOwned(ctx, "runs", runId),
});
