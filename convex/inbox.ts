/** Public client queries for `inboxes` (active generation, caller's own documents only). */
import { v } from "convex/values";
import { query } from "./_generated/server";
import { getOwned, listOwned } from "./client";

/** The caller's inboxes documents, newest first (`limit` default 50, max 200). */
export const list = query({
  args: { limit: v.optional(v.number()) },
  handler: async (ctx, { limit }) => await listOwned(ctx, "inboxes", limit),
});

/** One inboxes document by `userId`, or null if absent or not the caller's. */
export const get = query({
  args: { userId: v.string() },
  handler: async (ctx, { userId }) => await getOwned(ctx, "inboxes", userId),
});
