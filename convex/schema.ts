/**
 * Convex schema: the read models of design.md §3 plus `projectorState`.
 *
 * Every table is keyed by `(generation, key)` (index `by_generation_key`), so
 * a rebuild can fill a new generation beside the live one; owned tables also
 * have `by_generation_owner` for the client queries.
 */
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";
import {
  common,
  deadLetterFields,
  inboxFields,
  runFields,
  threadFields,
  timelineFields,
  workerFields,
} from "./validators";

export default defineSchema({
  runs: defineTable({ ...common, ...runFields })
    .index("by_generation_key", ["generation", "key"])
    .index("by_generation_owner", ["generation", "ownerId"]),
  timelines: defineTable({ ...common, ...timelineFields })
    .index("by_generation_key", ["generation", "key"])
    .index("by_generation_owner", ["generation", "ownerId"]),
  threads: defineTable({ ...common, ...threadFields })
    .index("by_generation_key", ["generation", "key"])
    .index("by_generation_owner", ["generation", "ownerId"]),
  workers: defineTable({ ...common, ...workerFields })
    .index("by_generation_key", ["generation", "key"])
    .index("by_generation_owner", ["generation", "ownerId"]),
  inboxes: defineTable({ ...common, ...inboxFields })
    .index("by_generation_key", ["generation", "key"])
    .index("by_generation_owner", ["generation", "ownerId"]),
  deadLetters: defineTable({ ...common, ...deadLetterFields }).index("by_generation_key", [
    "generation",
    "key",
  ]),
  projectorState: defineTable({
    key: v.string(),
    generation: v.number(),
    value: v.any(),
  }).index("by_generation_key", ["generation", "key"]),
});
