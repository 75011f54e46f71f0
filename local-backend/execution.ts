/**
 * Runs function calls through convex-test, one at a time: convex-test has no
 * concurrency control (no OCC), so a single queue is what keeps each call a
 * serializable transaction. Listeners hear about every call that may have
 * committed writes (a mutation that returned, an action that returned — an
 * action commits through the mutations it runs), after it committed and
 * before the next queued call starts.
 */
import { convexTest } from "convex-test";
import { makeFunctionReference } from "convex/server";
import schema from "../convex/schema";
import type { Identity } from "./auth";
import { convexTestInternals } from "./convex-test-internals";
import { installIndexes, type IndexStats } from "./indexes";
import { checkArgs, checkResult, installLimits } from "./limits";
import type { Kind, Modules } from "./routing";

export interface Stats {
  mutations: number;
  queries: number;
  actions: number;
  writes: number;
  faults: number;
}

export type Commit = { kind: "mutation" | "action"; name: string };
export type CommitListener = (commit: Commit) => void;

const CHECKED = Symbol("resultChecked");

/**
 * The module map with every function's handler checking its return value
 * (limits.ts `checkResult`) inside the call, so a mutation returning a value
 * Convex refuses rolls back, as it does on Convex.
 */
function withResultChecks(modules: Modules): Modules {
  const out: Modules = {};
  for (const [path, load] of Object.entries(modules)) {
    out[path] = async () => {
      const mod = await load();
      const name = path.replace(/^\/convex\//, "").replace(/\.(ts|js)$/, "");
      for (const [fnName, fn] of Object.entries(mod)) {
        const f = fn as any;
        if (!f || typeof f._handler !== "function" || f[CHECKED]) continue;
        const handler = f._handler;
        f._handler = async (ctx: unknown, args: unknown) => {
          const value = await handler(ctx, args);
          checkResult(`${name}:${fnName}`, value);
          return value;
        };
        f[CHECKED] = true;
      }
      return mod;
    };
  }
  return out;
}

export class Executor {
  readonly stats: Stats = { mutations: 0, queries: 0, actions: 0, writes: 0, faults: 0 };
  private readonly t;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly listeners = new Set<CommitListener>();
  /** How queries were answered (index bucket vs whole table). */
  readonly indexStats: IndexStats;

  constructor(modules: Modules) {
    // convex-test's own limits are off: limits.ts counts as the real backend does.
    this.t = convexTest({ schema, modules: withResultChecks(modules), transactionLimits: false });
    const { db, transactionManager, global } = convexTestInternals(this.t);
    this.indexStats = installIndexes(db);
    installLimits(db, transactionManager, global);
  }

  /** Calls `listener` after every committed mutation or action; returns the unsubscribe. */
  onCommit(listener: CommitListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Runs one function call after every call queued before it; resolves to its return value. */
  run(kind: Kind, name: string, args: Record<string, unknown>, identity: Identity | null): Promise<unknown> {
    return this.serialized(async () => {
      checkArgs(name, args);
      return await this.call(kind, name, args, identity);
    });
  }

  private async call(kind: Kind, name: string, args: Record<string, unknown>, identity: Identity | null) {
    const caller = identity ? this.t.withIdentity(identity) : this.t;
    const ref = makeFunctionReference<any>(name) as any;
    if (kind === "query") {
      this.stats.queries++;
      return await caller.query(ref, args);
    }
    let value: unknown;
    if (kind === "mutation") {
      this.stats.mutations++;
      value = await caller.mutation(ref, args);
      if (name === "projector:apply" && value && typeof value === "object") {
        const v = value as any;
        this.stats.writes += Number(v.applied ?? 0) + Number(v.deadLettersInserted ?? 0);
      }
    } else {
      this.stats.actions++;
      value = await caller.action(ref, args);
    }
    this.notify({ kind, name });
    return value;
  }

  private notify(commit: Commit) {
    for (const l of this.listeners) {
      try {
        l(commit);
      } catch (e) {
        console.error(`local-backend: commit listener failed: ${(e as Error)?.message ?? e}`);
      }
    }
  }

  private serialized<T>(f: () => Promise<T>): Promise<T> {
    const run = this.queue.then(f, f);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
