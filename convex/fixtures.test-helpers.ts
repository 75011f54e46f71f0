// Shared fixtures for convex/*.test.ts (not a Convex module: extra dots).
import { convexTest } from "convex-test";
import schema from "./schema";
import { modules } from "./test.setup";

export const newT = () => convexTest({ schema, modules, transactionLimits: true });

export const pos = (lsn: number, ord = 0) =>
  `${lsn.toString(16).padStart(16, "0")}:${ord.toString(16).padStart(16, "0")}`;

export const run = (runId: string, ownerId: string, over: Record<string, unknown> = {}) => ({
  runId,
  ownerId,
  threadId: "t1",
  title: null,
  status: "queued",
  stepCount: 0,
  inputTokens: 0,
  outputTokens: 0,
  eventCount: 1,
  error: null,
  createdAt: 1000,
  startedAt: null,
  finishedAt: null,
  lastEventType: "run.created",
  lastEventAt: 1000,
  lastStreamSeq: 1,
  ...over,
});

export const timeline = (runId: string, ownerId: string, n = 1) => ({
  runId,
  ownerId,
  total: n,
  items: Array.from({ length: Math.min(n, 50) }, (_, i) => ({ streamSeq: i + 1, type: "run.step", at: 1000 + i })),
});

export const thread = (threadId: string, ownerId: string, runCount = 1) => ({
  threadId,
  runCount,
  latestRunId: "r1",
  latestRunSeq: 1,
  ownerId,
  updatedAt: 1000,
});

export const worker = (workerId: string, ownerId: string) => ({
  workerId,
  ownerId,
  status: "requested",
  repo: null,
  host: null,
  error: null,
  requestedAt: 1000,
  startedAt: null,
  stoppedAt: null,
  lastHeartbeatAt: null,
  heartbeatCount: 0,
  eventCount: 1,
  lastEventType: "worker.requested",
  lastEventAt: 1000,
  lastStreamSeq: 1,
});

export const inbox = (userId: string) => ({
  userId,
  ownerId: userId,
  unreadCount: 1,
  totalCount: 1,
  items: [{ id: "n1", title: "hi", body: null, createdAt: 1000, read: false }],
  lastStreamSeq: 1,
});

export const deadLetter = (seq: number, position: string) => ({
  key: String(seq),
  position,
  doc: {
    eventSeq: seq,
    streamId: "run:bad",
    streamSeq: 1,
    eventType: "run.usage",
    reason: "input_tokens: missing",
    payload: "{}",
  },
});
