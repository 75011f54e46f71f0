/**
 * Local Convex-compatible backend (DESIGN §8): the project's own `convex/`
 * functions executed in memory by convex-test, behind the Convex HTTP API
 * wire format, with admin-key auth, internal-function visibility, Convex
 * error shapes and switchable fault injection. For tests and `demo` only.
 * The wire format is documented in README.md; this file is the HTTP layer:
 *
 *   auth.ts       Authorization header → caller (admin / identity)
 *   routing.ts    URL + body → function path, kind, visibility
 *   faults.ts     the `/_faults` state
 *   execution.ts  the single queue running calls through convex-test
 *   errors.ts     Convex's error answers
 *   main.ts       the command line (`npm run local-backend`)
 */
import { createServer, type IncomingMessage, type ServerResponse, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { convexToJson, jsonToConvex, type JSONValue } from "convex/values";
import { createAuthenticator, type Authenticator, type BearerVerifier } from "./auth";
import { HttpError, functionError, injectedStatus, rejectedDocument } from "./errors";
import { Executor, type Stats } from "./execution";
import { FaultState } from "./faults";
import { convexModules } from "./modules";
import { resolveFunction, routeApi } from "./routing";

export type { Stats } from "./execution";

export const MAX_BODY_BYTES = 16 * 1024 * 1024;

export interface BackendOptions {
  port: number;
  adminKey: string;
  host?: string;
  /** Checks `Authorization: Bearer …` tokens; default: decode without verifying (test only). */
  verifyBearer?: BearerVerifier;
}

export type UpgradeHandler = (req: IncomingMessage, socket: Socket, head: Buffer) => void;

export interface Backend {
  server: Server;
  url: string;
  stats: Stats;
  /** The caller a request's `Authorization` header names (same rules as `/api/*`). */
  authenticate: Authenticator;
  /** Runs function calls (one at a time); `executor.onCommit` hears every committed write. */
  executor: Executor;
  /** Routes HTTP `upgrade` requests (e.g. a WebSocket sync endpoint) to `handler`. */
  onUpgrade(handler: UpgradeHandler): void;
  close(): Promise<void>;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size <= MAX_BODY_BYTES) chunks.push(chunk);
  }
  if (size > MAX_BODY_BYTES) {
    throw new HttpError(413, "PayloadTooLarge", `Request body exceeds ${MAX_BODY_BYTES} bytes`);
  }
  return Buffer.concat(chunks);
}

async function readJsonObject(req: IncomingMessage): Promise<Record<string, any>> {
  const raw = await readBody(req);
  let body: any;
  try {
    body = raw.length === 0 ? {} : JSON.parse(raw.toString("utf8"));
  } catch {
    throw new HttpError(400, "BadJsonBody", "Request body is not valid JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new HttpError(400, "BadJsonBody", "Request body must be a JSON object");
  }
  return body;
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(text)), ...headers });
  res.end(text);
}

/** Decodes `args` (Convex JSON; a one-element array as clients send it) into an object. */
function decodeArgs(raw: unknown): Record<string, unknown> {
  let rawArgs = raw ?? {};
  if (Array.isArray(rawArgs)) rawArgs = rawArgs[0] ?? {};
  let args: any;
  try {
    args = jsonToConvex(rawArgs as JSONValue);
  } catch (e) {
    throw new HttpError(400, "BadConvexValue", `Could not decode args: ${(e as Error).message}`);
  }
  if (typeof args !== "object" || args === null || Array.isArray(args)) {
    throw new HttpError(400, "BadRequest", "`args` must be an object");
  }
  return args;
}

export async function startBackend(opts: BackendOptions): Promise<Backend> {
  const modules = convexModules();
  const executor = new Executor(modules);
  const stats = executor.stats;
  const faults = new FaultState(() => stats.faults++);
  const authenticate = createAuthenticator({ adminKey: opts.adminKey, verifyBearer: opts.verifyBearer });

  async function requireAdmin(req: IncomingMessage) {
    if (!(await authenticate(req.headers["authorization"])).admin) {
      throw new HttpError(401, "Unauthenticated", "Admin key required");
    }
  }

  async function handleApi(req: IncomingMessage, res: ServerResponse, url: URL) {
    if (req.method !== "POST") throw new HttpError(405, "MethodNotAllowed", "Use POST");
    const caller = await authenticate(req.headers["authorization"]);
    const body = await readJsonObject(req);
    const { path, expected } = routeApi(url.pathname, body);
    if (body.format !== undefined && body.format !== "json" && body.format !== "convex_encoded_json") {
      throw new HttpError(400, "BadRequest", `Unsupported format ${JSON.stringify(body.format)}`);
    }
    const args = decodeArgs(body.args);

    const fn = await resolveFunction(modules, path);
    if (fn.internal && !caller.admin) {
      throw new HttpError(401, "Unauthenticated", `'${fn.name}' is internal: it needs Authorization: Convex <admin key>`);
    }
    if (expected !== null && expected !== fn.kind) {
      throw new HttpError(400, "BadRequest", `'${fn.name}' is a ${fn.kind}, not a ${expected}`);
    }

    const fault = faults.take(fn.name);
    if (fault?.kind === "status") throw injectedStatus(fault.status, fault.retryAfterSeconds);
    if (fault?.kind === "latency") await new Promise((r) => setTimeout(r, fault.ms));
    if (fault?.kind === "drop_before") {
      req.socket.destroy();
      return;
    }
    const rejected = faults.rejectedWrite(fn.name, args);
    if (rejected) return send(res, 200, rejectedDocument(rejected.table, rejected.key));

    let out: Record<string, unknown>;
    try {
      const value = await executor.run(fn.kind, fn.name, args, caller.identity);
      out = { status: "success", value: convexToJson(value === undefined ? null : (value as any)), logLines: [] };
    } catch (e) {
      out = functionError(e);
    }
    if (fault?.kind === "drop_after") {
      req.socket.destroy();
      return;
    }
    send(res, 200, out);
  }

  async function handleFaults(req: IncomingMessage, res: ServerResponse) {
    await requireAdmin(req);
    if (req.method === "GET") return send(res, 200, { faults: faults.list() });
    if (req.method !== "POST") throw new HttpError(405, "MethodNotAllowed", "Use POST");
    let f: any;
    try {
      f = JSON.parse((await readBody(req)).toString("utf8"));
    } catch {
      throw new HttpError(400, "BadJsonBody", "Fault body is not valid JSON");
    }
    faults.configure(f);
    send(res, 200, { faults: faults.list() });
  }

  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    try {
      if (url.pathname === "/version" && req.method === "GET") {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("projector-local-backend (convex-test)");
      } else if (url.pathname === "/_faults") {
        await handleFaults(req, res);
      } else if (url.pathname === "/_stats" && req.method === "GET") {
        await requireAdmin(req);
        send(res, 200, stats);
      } else if (url.pathname.startsWith("/api/")) {
        await handleApi(req, res, url);
      } else {
        throw new HttpError(404, "NotFound", `No route ${url.pathname}`);
      }
    } catch (e) {
      if (res.headersSent || req.socket.destroyed) return;
      if (e instanceof HttpError) {
        // Drain what the client still sends so it reads our answer, not a reset.
        req.resume();
        send(res, e.status, { code: e.code, message: e.message }, e.headers);
      } else {
        send(res, 500, { code: "InternalServerError", message: String((e as Error)?.message ?? e) });
      }
    }
  });

  // Longer than HTTP clients' idle pools (reqwest: 90 s), so the server never
  // closes a kept-alive connection the client is about to reuse.
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 125_000;

  const host = opts.host ?? "127.0.0.1";
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(opts.port, host, () => ok());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    url: `http://${host}:${port}`,
    stats,
    authenticate,
    executor,
    onUpgrade: (handler) => void server.on("upgrade", handler),
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}
