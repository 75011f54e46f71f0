/**
 * Reaches into the convex-test instance for the two objects the local backend
 * extends: the root component's in-memory database (`DatabaseFake`), to give
 * it real indexes, and the `TransactionManager`, to count transaction limits
 * the way the real backend does, and the syscall entry points (to see each
 * database call the functions make).
 *
 * convex-test keeps them in a per-instance "Convex global" that it only ever
 * passes to `AsyncLocalStorage.run` around each call it makes on the test's
 * behalf. We observe that one argument during one harmless call. This relies
 * on convex-test internals (pinned by package-lock.json), so every shape we
 * use is checked here and a mismatch fails at startup with the reason.
 */
import { AsyncLocalStorage } from "node:async_hooks";

/** The parts of convex-test's `DatabaseFake` we use (convex-test/dist/index.js). */
export interface DatabaseFake {
  /** Committed documents by id. */
  _documents: Record<string, Record<string, unknown>>;
  /** Pending writes of the open (nested) transactions, innermost last; `null` = deleted. */
  _writes: Array<Record<string, Record<string, unknown> | null>>;
  _schema: { tables: Map<string, { indexes: Array<{ indexDescriptor: string; fields: string[] }> }> } | null;
  get(table: string | undefined, id: string): Record<string, unknown> | null;
  _addWrite(id: string, value: Record<string, unknown> | null): void;
  commit(commitTs?: bigint | null): void;
  _iterateDocs(table: string, callback: (doc: Record<string, unknown>) => void): void;
  _resolveQuerySource(query: any): unknown;
}

/** The parts of convex-test's `TransactionManager` we use. */
export interface TransactionManager {
  begin(isNested: boolean, transactionLimits?: unknown): Promise<void>;
  commit(isNested: boolean): bigint | null;
  rollback(isNested: boolean): void;
  isInTransaction(): boolean;
}

/** The per-instance global convex-test routes the Convex runtime's syscalls through. */
export interface ConvexGlobal {
  syscall: (op: string, args: string) => string;
  asyncSyscall: (op: string, args: string) => Promise<string>;
}

export interface ConvexTestInternals {
  db: DatabaseFake;
  transactionManager: TransactionManager;
  global: ConvexGlobal;
}

const REQUIRED_DB_METHODS = ["get", "_addWrite", "commit", "_iterateDocs", "_resolveQuerySource"] as const;
const REQUIRED_TM_METHODS = ["begin", "commit", "rollback", "isInTransaction"] as const;

export function convexTestInternals(t: {
  finishInProgressScheduledFunctions(): Promise<unknown>;
}): ConvexTestInternals {
  let global: any = undefined;
  const run = AsyncLocalStorage.prototype.run;
  AsyncLocalStorage.prototype.run = function (this: AsyncLocalStorage<unknown>, store: any, ...rest: any[]) {
    if (
      global === undefined &&
      store &&
      typeof store === "object" &&
      "components" in store &&
      "transactionManager" in store
    ) {
      global = store;
    }
    return (run as any).call(this, store, ...rest);
  } as typeof run;
  try {
    // Touches the Convex global and nothing else (no transaction, no writes).
    void t.finishInProgressScheduledFunctions().catch(() => undefined);
  } finally {
    AsyncLocalStorage.prototype.run = run;
  }
  const fail = (what: string) => {
    throw new Error(`convex-test internals changed (${what}); local-backend supports convex-test 0.0.60`);
  };
  if (global === undefined) fail("no Convex global passed to AsyncLocalStorage.run");
  const db = global.components?.[""]?.db;
  if (!db || typeof db !== "object") fail("no root component database");
  for (const m of REQUIRED_DB_METHODS) if (typeof db[m] !== "function") fail(`DatabaseFake.${m} missing`);
  if (typeof db._documents !== "object" || !Array.isArray(db._writes)) fail("DatabaseFake state missing");
  const tm = global.transactionManager;
  for (const m of REQUIRED_TM_METHODS) if (typeof tm?.[m] !== "function") fail(`TransactionManager.${m} missing`);
  if (typeof global.syscall !== "function" || typeof global.asyncSyscall !== "function")
    fail("syscall entry points missing");
  return { db, transactionManager: tm, global };
}
