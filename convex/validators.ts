/**
 * Document validators for the projection tables (design.md §3).
 *
 * One source of truth: `schema.ts` builds the tables from these, and
 * `projector:apply` validates every incoming `doc` against the same
 * validators before writing, so a malformed document fails the whole
 * mutation with an error naming its table and key (the Rust sink then splits
 * the batch to isolate it).
 */
import { v, type Infer, type Validator } from "convex/values";
import { TABLES } from "./tables";

const nullable = <T extends Validator<any, "required", any>>(x: T) => v.union(x, v.null());

/** Fields every projection document carries in addition to its projection fields. */
export const common = {
  key: v.string(),
  generation: v.number(),
  position: v.string(),
};

export const runFields = {
  runId: v.string(),
  ownerId: v.string(),
  threadId: nullable(v.string()),
  title: nullable(v.string()),
  status: nullable(
    v.union(
      v.literal("queued"),
      v.literal("running"),
      v.literal("completed"),
      v.literal("failed"),
      v.literal("cancelled"),
    ),
  ),
  stepCount: v.number(),
  inputTokens: v.number(),
  outputTokens: v.number(),
  eventCount: v.number(),
  error: nullable(v.string()),
  createdAt: nullable(v.number()),
  startedAt: nullable(v.number()),
  finishedAt: nullable(v.number()),
  lastEventType: v.string(),
  lastEventAt: v.number(),
  lastStreamSeq: v.number(),
};

export const timelineItem = v.object({
  streamSeq: v.number(),
  type: v.string(),
  at: v.number(),
});

export const timelineFields = {
  runId: v.string(),
  ownerId: v.string(),
  total: v.number(),
  items: v.array(timelineItem),
};

export const threadFields = {
  threadId: v.string(),
  runCount: v.number(),
  latestRunId: v.string(),
  latestRunSeq: v.number(),
  ownerId: v.string(),
  updatedAt: v.number(),
};

export const workerFields = {
  workerId: v.string(),
  ownerId: v.string(),
  status: nullable(
    v.union(
      v.literal("requested"),
      v.literal("running"),
      v.literal("stopped"),
      v.literal("failed"),
    ),
  ),
  repo: nullable(v.string()),
  host: nullable(v.string()),
  error: nullable(v.string()),
  requestedAt: nullable(v.number()),
  startedAt: nullable(v.number()),
  stoppedAt: nullable(v.number()),
  lastHeartbeatAt: nullable(v.number()),
  heartbeatCount: v.number(),
  eventCount: v.number(),
  lastEventType: v.string(),
  lastEventAt: v.number(),
  lastStreamSeq: v.number(),
};

export const inboxItem = v.object({
  id: v.string(),
  title: v.string(),
  body: nullable(v.string()),
  createdAt: v.number(),
  read: v.boolean(),
});

export const inboxFields = {
  userId: v.string(),
  ownerId: v.string(),
  unreadCount: v.number(),
  totalCount: v.number(),
  items: v.array(inboxItem),
  lastStreamSeq: v.number(),
};

export const deadLetterFields = {
  eventSeq: v.number(),
  streamId: v.string(),
  streamSeq: v.number(),
  eventType: v.string(),
  reason: v.string(),
  payload: v.string(),
};

/** Projection fields per writable table (what `apply` accepts as `doc`). */
export const docValidators = {
  runs: v.object(runFields),
  timelines: v.object(timelineFields),
  threads: v.object(threadFields),
  workers: v.object(workerFields),
  inboxes: v.object(inboxFields),
} as const;

export type WritableTable = keyof typeof docValidators;
export const writableTables = Object.keys(docValidators) as WritableTable[];
export const allTables = TABLES;
export type AnyTable = (typeof allTables)[number];

export const writableTable = v.union(
  v.literal("runs"),
  v.literal("timelines"),
  v.literal("threads"),
  v.literal("workers"),
  v.literal("inboxes"),
);

export const anyTable = v.union(
  writableTable,
  v.literal("deadLetters"),
  v.literal("projectorState"),
);

export const deadLetterDoc = v.object(deadLetterFields);
export type DeadLetterDoc = Infer<typeof deadLetterDoc>;
