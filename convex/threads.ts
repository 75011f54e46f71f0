/** Public client queries for `threads` (active generation, caller's own documents only). */
import { v } from "convex/values";
import { query } from "./_generated/server";
import { getOwned, listOwned } from "./client";

/** The caller's threads documents, newest first (`limit` default 50, max 200). */
export const list = query({
  args: { limit: v.optional(v.number()) },
  handler: async (ctx, { limit }) => await listOwned(ctx, "threads", limit),
});

/** One threads document by `threadId`, or null if absent or not the caller's. */
export const get = query({
  args: { threadId: v.string() },
  handler: async (ctx, { threadId }) => await getOwned(ctx, "threads", threadId),
});
