/** Public client queries for `timelines` (active generation, caller's own documents only). */
import { v } from "convex/values";
import { query } from "./_generated/server";
import { getOwned, listOwned } from "./client";

/** The caller's timelines documents, newest first (`limit` default 50, max 200). */
export const list = query({
  args: { limit: v.optional(v.number()) },
  handler: async (ctx, { limit }) => await listOwned(ctx, "timelines", limit),
});

/** One timelines document by `runId`, or null if absent or not the caller's. */
export const get = query({
  args: { runId: v.string() },
  handler: async (ctx, { runId }) => await getOwned(ctx, "timelines", runId),
});
