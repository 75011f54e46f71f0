/**
 * Live clients for the local backend: Bearer tokens verified against
 * auth.config.ts (jwt.ts) and the WebSocket sync protocol (sync.ts) on the
 * backend's HTTP server, fed by the executor: every committed mutation or
 * action gets a new commit timestamp and wakes every subscription.
 */
import { convexToJson, jsonToConvex, type JSONValue } from "convex/values";
import type { BearerVerifier, Identity } from "./auth";
import { HttpError, JsErrorMessage, functionError, serverErrorMessage } from "./errors";
import { AuthRefused, type VerifiedIdentity, type Verifier } from "./jwt";
import { installReadSets, invalidates, readsEverything, type ReadSet, type WriteSet } from "./readsets";
import { resolveFunction, type Kind, type Modules } from "./routing";
import type { Backend } from "./server";
import { createSyncServer, type Outcome, type SyncEngine, type SyncIdentity, type SyncServer } from "./sync";

/** What `ctx.auth.getUserIdentity()` returns for a verified custom JWT. */
export function toIdentity(user: VerifiedIdentity): Identity {
  return {
    ...user.customClaims,
    subject: user.subject,
    issuer: user.issuer,
    tokenIdentifier: user.tokenIdentifier,
  } as Identity;
}

/** HTTP `Authorization: Bearer`: Convex's 401 `{code, message}` for a refused token. */
export function bearerVerifier(verifier: Verifier): BearerVerifier {
  return async (token) => {
    try {
      return toIdentity(await verifier.verify(token));
    } catch (e) {
      if (e instanceof AuthRefused) throw new HttpError(401, e.code, e.message);
      throw e;
    }
  };
}

const nowNs = () => BigInt(Date.now()) * 1_000_000n;

export interface LiveClients {
  sync: SyncServer;
  /** Timestamp of the latest commit (nanoseconds since the epoch, strictly increasing). */
  latestTs(): bigint;
}

/** Serves the sync protocol on `backend`; `modules` is the backend's module map. */
export function enableLiveClients(backend: Backend, opts: { verifier: Verifier; modules: Modules }): LiveClients {
  let ts = nowNs();
  const { executor } = backend;
  const tracker = installReadSets(executor.db);
  const nothingRead = (): ReadSet => ({ tables: new Set(), ranges: [], ids: new Set() });

  /** The function a sync message names, or Convex's error message for a failed call. */
  async function resolve(
    udfPath: string,
    kind: Kind,
    identity: SyncIdentity,
  ): Promise<{ name?: string; error?: string }> {
    try {
      const fn = await resolveFunction(opts.modules, udfPath, { admin: identity.kind === "admin", expected: kind });
      return { name: fn.name };
    } catch (e) {
      if (e instanceof JsErrorMessage) return { error: serverErrorMessage(e.message) };
      throw e;
    }
  }

  const callerIdentity = (identity: SyncIdentity) => (identity.kind === "user" ? toIdentity(identity.user) : null);
  const failed = (e: unknown): Outcome => {
    const body = functionError(e);
    const data = body.errorData === undefined ? {} : { errorData: convexToJson(body.errorData as any) };
    return { ok: false, errorMessage: body.errorMessage, logLines: [], ...data };
  };
  const decode = (args: JSONValue) => {
    const v = jsonToConvex(args);
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("`args` must be an object");
    return v as Record<string, unknown>;
  };

  const engine: SyncEngine = {
    async authenticate(tokenType, value) {
      if (tokenType === "Admin") {
        // The HTTP rules (constant-time comparison), as for `Authorization: Convex <key>`.
        try {
          if ((await backend.authenticate(`Convex ${value}`)).admin) return { kind: "admin" };
        } catch (e) {
          if (e instanceof HttpError) throw new AuthRefused(e.code, e.message);
          throw e;
        }
        throw new AuthRefused("BadAdminKey", "The provided admin key was invalid for this instance");
      }
      return { kind: "user", user: await opts.verifier.verify(value) };
    },

    async runQueries(queries, identity) {
      const resolved = await Promise.all(queries.map((q) => resolve(q.udfPath, "query", identity)));
      return await executor.snapshot(async (query) => {
        const at = ts;
        const results: Outcome[] = [];
        const reads: ReadSet[] = [];
        for (const [i, q] of queries.entries()) {
          const r = resolved[i]!;
          if (r.error !== undefined) {
            // Resolved from the module map, which no commit changes.
            results.push({ ok: false, errorMessage: r.error, logLines: [] });
            reads.push(nothingRead());
            continue;
          }
          let readSet = nothingRead();
          try {
            const tracked = await tracker.track(() => query(r.name!, decode(q.args), callerIdentity(identity)));
            readSet = tracked.reads;
            results.push({ ok: true, value: convexToJson((tracked.value ?? null) as any), logLines: [] });
          } catch (e) {
            // A failure depends on what was read before it: keep a superset.
            readSet = readsEverything();
            results.push(failed(e));
          }
          reads.push(readSet);
        }
        return { ts: at, results, reads };
      });
    },

    async runMutation(udfPath, args, identity) {
      const r = await resolve(udfPath, "mutation", identity);
      if (r.error !== undefined) return { ok: false, errorMessage: r.error, logLines: [] };
      try {
        const value = await executor.run("mutation", r.name!, decode(args), callerIdentity(identity));
        return { ok: true, value: convexToJson((value ?? null) as any), logLines: [], ts };
      } catch (e) {
        return failed(e);
      }
    },

    async runAction(udfPath, args, identity) {
      const r = await resolve(udfPath, "action", identity);
      if (r.error !== undefined) return { ok: false, errorMessage: r.error, logLines: [] };
      try {
        const value = await executor.run("action", r.name!, decode(args), callerIdentity(identity));
        return { ok: true, value: convexToJson((value ?? null) as any), logLines: [] };
      } catch (e) {
        return failed(e);
      }
    },

    latestTs: () => ts,
    invalidates: (reads, writes) => invalidates(reads as ReadSet, writes as WriteSet),
  };

  const sync = createSyncServer(engine);
  // Runs inside the executor's queue, right after the commit: `ts` names
  // exactly the state the next queued call reads.
  executor.onCommit(() => {
    const now = nowNs();
    ts = now > ts ? now : ts + 1n;
    sync.commit(ts, tracker.takeWrites());
  });
  backend.onUpgrade((req, socket, head) => sync.handleUpgrade(req, socket, head));
  return { sync, latestTs: () => ts };
}
