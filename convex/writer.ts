/**
 * Writer fencing: `projectorState` document `{generation: g, key: "writer",
 * value: {epoch, holder, since}}` names the one process allowed to write
 * generation g.
 *
 * A process that takes over a generation's slot first bumps the epoch
 * (`projector:acquireWriter`), then reads the states it folds onto. Every
 * `apply` that carries an epoch reads this document in its own transaction
 * and refuses any other epoch, so once the bump commits no write of an
 * older owner can land (a zombie whose requests were still in flight, or a
 * killed process whose last mutation arrives late), and everything an
 * older owner did land is visible to the new owner's reads. Convex's OCC
 * orders an `apply` and a concurrent bump either way round; both orders
 * keep that invariant.
 */
import type { MutationCtx, QueryCtx } from "./_generated/server";

export const WRITER_KEY = "writer";

export type WriterRecord = { epoch: number; holder: string; since: number };

export async function readWriter(ctx: QueryCtx, generation: number) {
  return await ctx.db
    .query("projectorState")
    .withIndex("by_generation_key", (q) => q.eq("generation", generation).eq("key", WRITER_KEY))
    .unique();
}

function asRecord(value: unknown): WriterRecord | null {
  const v = value as Partial<WriterRecord> | null | undefined;
  return v && typeof v.epoch === "number" ? (v as WriterRecord) : null;
}

/** The writer record of `generation`, or null before anyone acquired it. */
export async function currentWriter(ctx: QueryCtx, generation: number): Promise<WriterRecord | null> {
  return asRecord((await readWriter(ctx, generation))?.value);
}

/** Makes `holder` the writer of `generation` under the next epoch. */
export async function bumpWriter(
  ctx: MutationCtx,
  generation: number,
  holder: string,
): Promise<{ epoch: number; previous: WriterRecord | null }> {
  const doc = await readWriter(ctx, generation);
  const previous = asRecord(doc?.value);
  const value: WriterRecord = { epoch: (previous?.epoch ?? 0) + 1, holder, since: Date.now() };
  if (doc === null) await ctx.db.insert("projectorState", { key: WRITER_KEY, generation, value });
  else await ctx.db.patch(doc._id, { value });
  return { epoch: value.epoch, previous };
}
