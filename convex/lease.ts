/**
 * The rebuild lease: `projectorState` document `{generation: 0, key:
 * "rebuildLease", value: {holder, since, heartbeat, target}}`.
 *
 * One rebuild at a time: `beginRebuild` grants the lease only when nobody
 * holds it, its holder stopped renewing it (`leaseMs` without a heartbeat),
 * or the caller names the holder it takes over from (a holder it has seen
 * die). The lease also reserves the target generation, chosen in the same
 * transaction as the active generation is read, so `ensureActive` never
 * creates (and `run` never streams into) a generation a rebuild fills.
 */
import type { MutationCtx, QueryCtx } from "./_generated/server";
import { ACTIVE_GENERATION, activeGeneration } from "./active";

export const LEASE_KEY = "rebuildLease";
export const REBUILD_KEY = "rebuild";

export type Lease = { holder: string; since: number; heartbeat: number; target: number };

async function stateDoc(ctx: QueryCtx, key: string) {
  return await ctx.db
    .query("projectorState")
    .withIndex("by_generation_key", (q) => q.eq("generation", ACTIVE_GENERATION).eq("key", key))
    .unique();
}

function asLease(value: unknown): Lease | null {
  const v = value as Partial<Lease> | null | undefined;
  return v && typeof v.holder === "string" && typeof v.heartbeat === "number" ? (v as Lease) : null;
}

export async function currentLease(ctx: QueryCtx) {
  const doc = await stateDoc(ctx, LEASE_KEY);
  return { doc, lease: asLease(doc?.value) };
}

/** The target of the rebuild record in progress, if any. */
export async function recordTarget(ctx: QueryCtx): Promise<number | null> {
  const v = (await stateDoc(ctx, REBUILD_KEY))?.value as { target?: unknown } | null | undefined;
  return typeof v?.target === "number" ? v.target : null;
}

export type BeginAnswer =
  | { ok: true; target: number; from: number | null; resumed: boolean }
  | { ok: false; holder: string; since: number; heartbeatAgoMs: number };

export async function begin(
  ctx: MutationCtx,
  holder: string,
  leaseMs: number,
  takeOverFrom: string | undefined,
): Promise<BeginAnswer> {
  const now = Date.now();
  const { doc, lease } = await currentLease(ctx);
  if (lease !== null && lease.holder !== holder) {
    const alive = now - lease.heartbeat < leaseMs;
    if (alive && lease.holder !== takeOverFrom) {
      return { ok: false, holder: lease.holder, since: lease.since, heartbeatAgoMs: now - lease.heartbeat };
    }
  }
  const from = await activeGeneration(ctx);
  const resumedTarget = await recordTarget(ctx);
  const target = resumedTarget ?? (from ?? 0) + 1;
  const since = lease !== null && lease.holder === holder ? lease.since : now;
  const value: Lease = { holder, since, heartbeat: now, target };
  if (doc === null) await ctx.db.insert("projectorState", { key: LEASE_KEY, generation: ACTIVE_GENERATION, value });
  else await ctx.db.patch(doc._id, { value });
  return { ok: true, target, from, resumed: resumedTarget !== null };
}

/** Renews `holder`'s lease; false when it is not (or no longer) theirs. */
export async function renew(ctx: MutationCtx, holder: string): Promise<boolean> {
  const { doc, lease } = await currentLease(ctx);
  if (doc === null || lease === null || lease.holder !== holder) return false;
  await ctx.db.patch(doc._id, { value: { ...lease, heartbeat: Date.now() } });
  return true;
}

/** Gives `holder`'s lease up (a finished or interrupted rebuild). */
export async function release(ctx: MutationCtx, holder: string): Promise<void> {
  const { doc, lease } = await currentLease(ctx);
  if (doc !== null && lease?.holder === holder) await ctx.db.delete(doc._id);
}
