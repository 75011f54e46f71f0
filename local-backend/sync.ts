/**
 * Convex's WebSocket sync protocol, server side, as the official `convex`
 * npm client speaks it (convex-js `src/browser/sync/protocol.ts`) and as
 * convex-backend serves it (`crates/sync/src/worker.rs`, `state.rs`,
 * `crates/local_backend/src/subs/mod.rs`), on `GET /api/<client version>/sync`.
 *
 * Per socket, messages are handled one at a time in arrival order:
 *  - Connect: session id and the client's clock skew (`clientTs - now`);
 *    a `maxObservedTimestamp` ahead of this backend is an internal error.
 *  - ModifyQuerySet: `baseVersion` must be the last received version
 *    (else FatalError BaseVersionMismatch); Add/Remove take effect at the
 *    next update.
 *  - Authenticate (User | Admin | None): the token is verified now; a refusal
 *    is an AuthError with `authUpdateAttempted: true`, then the socket closes.
 *  - Mutation / Action: run one at a time per socket (mutations), answered
 *    with MutationResponse (with the commit `ts`) / ActionResponse, then an
 *    update follows so the client sees a Transition at or past that `ts`.
 *  - Event: ignored.
 *
 * An update runs every query that needs it at ONE snapshot of the database
 * (all in the backend's single execution queue), and sends a Transition from
 * the last version sent to `{querySet, identity, ts}`, with QueryUpdated /
 * QueryFailed for results whose JSON changed and QueryRemoved for removed
 * queries. A query reruns when it is new, when the identity changed, or when
 * a commit after its snapshot wrote into what it read (its read set, see
 * readsets.ts); a rerun whose result is unchanged sends nothing unless the
 * versions moved. Updates coalesce: at most one runs per socket, and none starts while
 * two Transitions are still unsent (SYNC_MAX_SEND_TRANSITION_COUNT), so a
 * slow client costs one pending update, not a queue.
 *
 * A user identity is checked for expiry before every update and mutation:
 * an expired one is an AuthError with `authUpdateAttempted: false`
 * ("TokenExpired"), then the socket closes, as Convex does.
 *
 * Heartbeats: a protocol `Ping` after 15 s without a message, a WebSocket
 * ping every 5 s, and the socket is dropped after 120 s without anything
 * from the client.
 *
 * Not implemented: TransitionChunk (Convex sends it only to clients at or
 * above MIN_NPM_VERSION_FOR_TRANSITION_CHUNKS, which defaults to "never"),
 * query journals (pagination), components.
 */
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import type { JSONValue } from "convex/values";
import { AuthRefused, type VerifiedIdentity } from "./jwt";

export type SyncIdentity = { kind: "none" } | { kind: "admin" } | { kind: "user"; user: VerifiedIdentity };

/** A function's answer as the protocol carries it (values in Convex JSON). */
export type Outcome =
  | { ok: true; value: JSONValue; logLines: string[] }
  | { ok: false; errorMessage: string; errorData?: JSONValue; logLines: string[] };

export interface QueryRequest {
  udfPath: string;
  args: JSONValue;
}

/** What the backend provides to sync sessions. */
export interface SyncEngine {
  /** Verifies an Authenticate message's credentials; throws AuthRefused. */
  authenticate(tokenType: "User" | "Admin", value: string): Promise<SyncIdentity>;
  /**
   * Runs the queries at one snapshot; `ts` is that snapshot's commit
   * timestamp, `reads[i]` what query i read (opaque, for `invalidates`).
   */
  runQueries(
    queries: QueryRequest[],
    identity: SyncIdentity,
  ): Promise<{ ts: bigint; results: Outcome[]; reads: unknown[] }>;
  /** Whether a commit's writes (as given to `SyncServer.commit`) can change a result with these reads. */
  invalidates(reads: unknown, writes: unknown): boolean;
  /** Runs a mutation; `ts` is its commit timestamp when it succeeded. */
  runMutation(udfPath: string, args: JSONValue, identity: SyncIdentity): Promise<Outcome & { ts?: bigint }>;
  runAction(udfPath: string, args: JSONValue, identity: SyncIdentity): Promise<Outcome>;
  /** Timestamp of the latest commit. */
  latestTs(): bigint;
}

/** Heartbeats: Convex's HEARTBEAT_INTERVALs and CLIENT_TIMEOUT (tests shorten them). */
export interface SyncTiming {
  /** A protocol `Ping` after this long without sending anything. */
  protocolPingMs: number;
  /** A WebSocket ping this often. */
  wsPingMs: number;
  /** The socket is dropped after this long without anything from the client. */
  clientTimeoutMs: number;
}

export const DEFAULT_TIMING: SyncTiming = { protocolPingMs: 15_000, wsPingMs: 5_000, clientTimeoutMs: 120_000 };
/** Largest client message (Convex's argument limit). */
export const MAX_CLIENT_MESSAGE_BYTES = 16 * 1024 * 1024;
/** SYNC_MAX_SEND_TRANSITION_COUNT: no new update while this many Transitions are unsent. */
const MAX_UNSENT_TRANSITIONS = 2;

/** Convex's base64 of a little-endian u64 (`u64_to_string`). */
export function encodeTs(ts: bigint): string {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(ts);
  return b.toString("base64");
}

export function decodeTs(s: string): bigint {
  const b = Buffer.from(s, "base64");
  if (b.length !== 8) throw new Error("u64 must be 8 bytes");
  return b.readBigUInt64LE();
}

/** How a session ends: the message Convex sends first, and the close frame. */
class SessionEnd extends Error {
  constructor(
    readonly final: Record<string, unknown> | null,
    message: string,
    readonly close: { code: number; reason: string } | null,
  ) {
    super(message);
  }
}

const internalError = (message: string) => new SessionEnd(null, message, { code: 1011, reason: "InternalServerError" });
const badRequest = (code: string, message: string) =>
  new SessionEnd({ type: "FatalError", error: message }, `${code}: ${message}`, null);

interface SyncedQuery {
  udfPath: string;
  args: JSONValue;
  /** JSON of the last result sent; undefined until the first run. */
  sent?: string;
  /** What the last run read, and the snapshot it read. */
  reads?: unknown;
  ranAt: bigint;
  /** A commit after `ranAt` wrote into `reads`. */
  invalid: boolean;
}

interface Version {
  querySet: number;
  identity: number;
  ts: bigint;
}

export interface SyncStats {
  sessions: number;
  transitions: number;
  queryRuns: number;
}

class SyncSession {
  private received = { querySet: 0, identity: 0 };
  private current: Version = { querySet: 0, identity: 0, ts: 0n };
  private identity: SyncIdentity = { kind: "none" };
  private queries = new Map<number, SyncedQuery>();
  private pending: any[] = [];
  private clockSkew: number | undefined;
  /** Commits seen while an update runs, checked against its fresh read sets. */
  private inFlightWrites: { ts: bigint; writes: unknown }[] = [];
  private updateScheduled = false;
  private forced = false;
  private updating = false;
  private unsentTransitions = 0;
  private messages: Promise<void> = Promise.resolve();
  private mutations: Promise<void> = Promise.resolve();
  private lastReceived = Date.now();
  private pingTimer: NodeJS.Timeout | undefined;
  private wsPing: NodeJS.Timeout;
  closed = false;

  constructor(
    private readonly ws: WebSocket,
    private readonly engine: SyncEngine,
    private readonly stats: SyncStats,
    private readonly timing: SyncTiming,
    private readonly onClose: () => void,
  ) {
    ws.on("message", (data, isBinary) => {
      this.lastReceived = Date.now();
      if (isBinary) return this.fail(internalError("Unexpected binary message"));
      const text = data.toString();
      this.messages = this.messages
        .then(() => (this.closed ? undefined : this.handle(text)))
        .catch((e) => this.fail(e));
    });
    ws.on("pong", () => (this.lastReceived = Date.now()));
    ws.on("close", () => this.shutdown());
    ws.on("error", () => this.shutdown());
    this.wsPing = setInterval(() => {
      if (Date.now() - this.lastReceived > this.timing.clientTimeoutMs) {
        ws.terminate();
        return;
      }
      ws.ping();
    }, this.timing.wsPingMs);
    this.resetPing();
  }

  /** The database committed `writes` at `ts`: queries that read them must rerun. */
  commit(ts: bigint, writes: unknown) {
    if (this.updating) this.inFlightWrites.push({ ts, writes });
    if (this.markInvalid(ts, writes)) this.schedule(false);
  }

  private markInvalid(ts: bigint, writes: unknown): boolean {
    let any = false;
    for (const q of this.queries.values()) {
      if (!q.invalid && q.reads !== undefined && ts > q.ranAt && this.engine.invalidates(q.reads, writes)) {
        q.invalid = true;
        any = true;
      }
    }
    return any;
  }

  private shutdown() {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.wsPing);
    clearTimeout(this.pingTimer);
    this.onClose();
  }

  private resetPing() {
    clearTimeout(this.pingTimer);
    if (this.closed) return;
    this.pingTimer = setTimeout(() => this.send({ type: "Ping" }), this.timing.protocolPingMs);
  }

  private send(msg: Record<string, unknown>) {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    const isTransition = msg.type === "Transition";
    if (isTransition) this.unsentTransitions++;
    this.ws.send(JSON.stringify(msg), () => {
      if (!isTransition) return;
      this.unsentTransitions--;
      if (this.updateScheduled && !this.updating) void this.runUpdates();
    });
    this.resetPing();
  }

  /** Ends the session the way Convex's sync socket does: final message, then close. */
  private fail(e: unknown) {
    if (this.closed) return;
    const end = e instanceof SessionEnd ? e : internalError(String((e as Error)?.message ?? e));
    if (end.final) this.send(end.final);
    if (end.close) this.ws.close(end.close.code, end.close.reason);
    else this.ws.close();
    this.shutdown();
  }

  private async handle(text: string) {
    let msg: any;
    try {
      msg = JSON.parse(text);
      if (typeof msg !== "object" || msg === null || typeof msg.type !== "string")
        throw new Error("expected an object with a `type`");
    } catch (e) {
      throw badRequest("WSMessageInvalidJson", `Received Invalid JSON on websocket: ${(e as Error).message}`);
    }
    switch (msg.type) {
      case "Connect":
        return this.connect(msg);
      case "ModifyQuerySet":
        return this.modifyQuerySet(msg);
      case "Authenticate":
        return await this.authenticate(msg);
      case "Mutation":
      case "Action":
        return this.request(msg);
      case "Event":
        return;
      default:
        throw badRequest("WSMessageInvalidJson", `Received Invalid JSON on websocket: unknown variant \`${msg.type}\``);
    }
  }

  private connect(msg: any) {
    if (typeof msg.clientTs === "number") this.clockSkew = Math.round(msg.clientTs - Date.now());
    if (typeof msg.maxObservedTimestamp === "string") {
      const observed = decodeTs(msg.maxObservedTimestamp);
      const latest = this.engine.latestTs();
      if (observed > latest) {
        throw internalError(
          `Client has observed a timestamp ${observed} ahead of the backend latest known timestamp ${latest}`,
        );
      }
    }
  }

  private modifyQuerySet(msg: any) {
    const { baseVersion, newVersion, modifications } = msg;
    if (baseVersion !== this.received.querySet) {
      throw badRequest(
        "BaseVersionMismatch",
        `Base version ${baseVersion} passed up doesn't match the current version ${this.received.querySet}`,
      );
    }
    if (!Number.isInteger(newVersion) || newVersion <= baseVersion || !Array.isArray(modifications)) {
      throw internalError("ModifyQuerySet needs newVersion > baseVersion and a modifications array");
    }
    this.pending.push(...modifications);
    this.received.querySet = newVersion;
    this.schedule(true);
  }

  private async authenticate(msg: any) {
    if (msg.baseVersion !== this.received.identity) {
      throw internalError(
        `Authenticate baseVersion ${msg.baseVersion} is not the current identity version ${this.received.identity}`,
      );
    }
    let identity: SyncIdentity;
    if (msg.tokenType === "None") {
      identity = { kind: "none" };
    } else if ((msg.tokenType === "User" || msg.tokenType === "Admin") && typeof msg.value === "string") {
      try {
        identity = await this.engine.authenticate(msg.tokenType, msg.value);
      } catch (e) {
        if (!(e instanceof AuthRefused)) throw e;
        // authentication_update_error: the refusal of a new token.
        throw new SessionEnd(
          { type: "AuthError", error: e.message, baseVersion: this.current.identity, authUpdateAttempted: true },
          `${e.code}: ${e.message}`,
          null,
        );
      }
    } else {
      throw badRequest("WSMessageInvalidJson", "Received Invalid JSON on websocket: bad Authenticate message");
    }
    this.identity = identity;
    this.received.identity++;
    this.schedule(true);
  }

  /** SyncState::identity: a user identity past its `exp` ends the session. */
  private checkIdentity(): SyncIdentity {
    const id = this.identity;
    if (id.kind === "user" && Date.now() >= id.user.expiresAtMs) {
      throw new SessionEnd(
        {
          type: "AuthError",
          error: "Convex token identity expired",
          baseVersion: this.current.identity,
          authUpdateAttempted: false,
        },
        "TokenExpired: Convex token identity expired",
        null,
      );
    }
    return id;
  }

  private request(msg: any) {
    const { requestId, udfPath, args } = msg;
    if (!Number.isInteger(requestId) || typeof udfPath !== "string" || !Array.isArray(args)) {
      throw badRequest("WSMessageInvalidJson", `Received Invalid JSON on websocket: bad ${msg.type} message`);
    }
    const identity = this.checkIdentity();
    const argObject = (args[0] ?? {}) as JSONValue;
    const run = async () => {
      if (msg.type === "Mutation") {
        const r = await this.engine.runMutation(udfPath, argObject, identity);
        this.send(
          r.ok
            ? {
                type: "MutationResponse",
                requestId,
                success: true,
                result: r.value,
                ts: encodeTs(r.ts ?? this.engine.latestTs()),
                logLines: r.logLines,
              }
            : {
                type: "MutationResponse",
                requestId,
                success: false,
                result: r.errorMessage,
                ts: null,
                logLines: r.logLines,
                ...errorData(r),
              },
        );
      } else {
        const r = await this.engine.runAction(udfPath, argObject, identity);
        this.send(
          r.ok
            ? { type: "ActionResponse", requestId, success: true, result: r.value, logLines: r.logLines }
            : {
                type: "ActionResponse",
                requestId,
                success: false,
                result: r.errorMessage,
                logLines: r.logLines,
                ...errorData(r),
              },
        );
      }
      this.schedule(true);
    };
    // Mutations one at a time per socket (as Convex); actions concurrently.
    if (msg.type === "Mutation") this.mutations = this.mutations.then(run).catch((e) => this.fail(e));
    else run().catch((e) => this.fail(e));
  }

  /** `forced`: send a Transition even if no result changed (new versions or a mutation's ts). */
  private schedule(forced: boolean) {
    this.updateScheduled = true;
    if (forced) this.forced = true;
    if (!this.updating) void this.runUpdates();
  }

  private async runUpdates() {
    if (this.updating || this.closed) return;
    this.updating = true;
    try {
      while (this.updateScheduled && !this.closed && this.unsentTransitions < MAX_UNSENT_TRANSITIONS) {
        this.updateScheduled = false;
        const forced = this.forced;
        this.forced = false;
        await this.update(forced);
      }
    } catch (e) {
      this.fail(e);
    } finally {
      this.updating = false;
    }
  }

  private async update(forced: boolean) {
    const identity = this.checkIdentity();
    const modifications = this.pending.splice(0);
    const target = { querySet: this.received.querySet, identity: this.received.identity };
    const changes = new Map<number, Record<string, unknown>>();
    for (const m of modifications) {
      if (m?.type === "Add" && Number.isInteger(m.queryId) && typeof m.udfPath === "string" && Array.isArray(m.args)) {
        if (m.componentPath) throw internalError("Components are not supported by the local backend");
        if (this.queries.has(m.queryId)) throw internalError(`Duplicate query ID: ${m.queryId}`);
        this.queries.set(m.queryId, {
          udfPath: m.udfPath,
          args: (m.args[0] ?? {}) as JSONValue,
          ranAt: -1n,
          invalid: false,
        });
      } else if (m?.type === "Remove" && Number.isInteger(m.queryId)) {
        if (!this.queries.delete(m.queryId)) throw internalError(`Nonexistent query id: ${m.queryId}`);
        changes.set(m.queryId, { type: "QueryRemoved", queryId: m.queryId });
      } else {
        throw badRequest("WSMessageInvalidJson", "Received Invalid JSON on websocket: bad query set modification");
      }
    }
    // New and invalidated queries run; all of them when the identity changed.
    const identityChanged = target.identity !== this.current.identity;
    const toRun = [...this.queries].filter(([, q]) => identityChanged || q.sent === undefined || q.invalid);
    let ts = this.engine.latestTs();
    if (toRun.length > 0) {
      this.inFlightWrites = [];
      const out = await this.engine.runQueries(
        toRun.map(([, q]) => ({ udfPath: q.udfPath, args: q.args })),
        identity,
      );
      this.stats.queryRuns += toRun.length;
      ts = out.ts;
      toRun.forEach(([queryId, q], i) => {
        const r = out.results[i]!;
        q.reads = out.reads[i];
        q.ranAt = out.ts;
        q.invalid = false;
        const json = JSON.stringify(r);
        if (json === q.sent) return;
        q.sent = json;
        changes.set(
          queryId,
          r.ok
            ? { type: "QueryUpdated", queryId, value: r.value, logLines: r.logLines, journal: null }
            : {
                type: "QueryFailed",
                queryId,
                errorMessage: r.errorMessage,
                logLines: r.logLines,
                journal: null,
                ...errorData(r),
              },
        );
      });
    }
    // Commits that landed while the queries ran: against the new read sets.
    for (const w of this.inFlightWrites.splice(0)) if (this.markInvalid(w.ts, w.writes)) this.updateScheduled = true;
    if (this.closed) return;
    const versionMoved = target.querySet !== this.current.querySet || target.identity !== this.current.identity;
    if (changes.size === 0 && !versionMoved && !forced) return;
    if (ts < this.current.ts) ts = this.current.ts;
    const end: Version = { ...target, ts };
    this.send({
      type: "Transition",
      startVersion: wireVersion(this.current),
      endVersion: wireVersion(end),
      modifications: [...changes.values()],
      clientClockSkew: this.clockSkew ?? null,
      serverTs: Date.now() * 1_000_000,
    });
    this.current = end;
    this.stats.transitions++;
  }
}

function wireVersion(v: Version) {
  return { querySet: v.querySet, identity: v.identity, ts: encodeTs(v.ts) };
}

function errorData(r: Outcome): Record<string, unknown> {
  return !r.ok && r.errorData !== undefined ? { errorData: r.errorData } : {};
}

const SYNC_PATH = /^\/api\/(?:[^/]+\/)?sync$/;

export interface SyncServer {
  stats: SyncStats;
  /** For the HTTP server's `upgrade` event: serves /api/<version>/sync, 404 otherwise. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Tell every session that the database committed `writes` at `ts`. */
  commit(ts: bigint, writes: unknown): void;
  close(): void;
}

export function createSyncServer(engine: SyncEngine, timing: SyncTiming = DEFAULT_TIMING): SyncServer {
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_CLIENT_MESSAGE_BYTES });
  const sessions = new Set<SyncSession>();
  const stats: SyncStats = { sessions: 0, transitions: 0, queryRuns: 0 };
  return {
    stats,
    handleUpgrade(req, socket, head) {
      const path = new URL(req.url ?? "/", "http://localhost").pathname;
      if (!SYNC_PATH.test(path)) {
        socket.end("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        const s = new SyncSession(ws, engine, stats, timing, () => {
          sessions.delete(s);
          stats.sessions = sessions.size;
        });
        sessions.add(s);
        stats.sessions = sessions.size;
      });
    },
    commit(ts, writes) {
      for (const s of sessions) s.commit(ts, writes);
    },
    close() {
      for (const c of wss.clients) c.terminate();
      wss.close();
    },
  };
}
