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
import { jsonToConvex, type JSONValue } from "convex/values";
import { createAuthenticator, type Authenticator, type BearerVerifier } from "./auth";
import { HttpError, functionError, injectedStatus, occFailure, rejectedDocument } from "./errors";
import { Executor, type Stats } from "./execution";
import { FaultState } from "./faults";
import { isLoopback } from "./loopback";
import { convexModules } from "./modules";
import { resolveFunction, routeApi } from "./routing";
import { encodeUdfResponse, type UdfResult } from "./udf-response";
import { defaultValueFormat, parseValueFormat } from "./wire-json";

export type { Stats } from "./execution";

/** MAX_BACKEND_PUBLIC_API_REQUEST_SIZE (crates/common/src/knobs.rs). */
export const MAX_BODY_BYTES = (1 << 24) + 2000;

export interface BackendOptions {
  port: number;
  adminKey: string;
  /** Default 127.0.0.1; anything but loopback needs `allowRemote`. */
  host?: string;
  allowRemote?: boolean;
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
    // axum's DefaultBodyLimit rejection, answered by convex-backend's Json extractor as BadJsonBody.
    throw new HttpError(400, "BadJsonBody", "Failed to buffer the request body: length limit exceeded");
  }
  return Buffer.concat(chunks);
}

/** As convex-backend's `Json` extractor (crates/common/src/http/extract.rs): JSON content type, then the body. */
async function readJsonObject(req: IncomingMessage): Promise<Record<string, any>> {
  const type = String(req.headers["content-type"] ?? "")
    .split(";")[0]!
    .trim()
    .toLowerCase();
  if (!/^application\/([a-z0-9.+-]+\+)?json$/.test(type)) {
    throw new HttpError(400, "BadJsonBody", "Expected request with `Content-Type: application/json`");
  }
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
  sendText(res, status, JSON.stringify(body), headers);
}

function sendText(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}) {
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(text)),
    ...headers,
  });
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
  const host = opts.host ?? "127.0.0.1";
  if (!isLoopback(host) && !opts.allowRemote) {
    throw new Error(
      `host ${host} is not a loopback address: this test backend does not verify JWTs and holds an admin key; ` +
        "allow it explicitly (--allow-remote)",
    );
  }
  if (opts.adminKey === "") throw new Error("the admin key is empty");
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
    const header = req.headers["convex-client"];
    // Read after the call, as public_api.rs does: a bad `format` is a 400 for
    // a function that has already run (and, for a mutation, committed).
    const answerFormat = () =>
      parseValueFormat(body.format) ??
      (expected === null ? "json" : defaultValueFormat(Array.isArray(header) ? header[0] : header));
    const args = decodeArgs(body.args);

    let fn;
    try {
      fn = await resolveFunction(modules, path, { admin: caller.admin, expected });
    } catch (e) {
      if (e instanceof HttpError) throw e;
      return sendText(res, 200, encodeUdfResponse(functionError(e), answerFormat()));
    }

    const fault = faults.take(fn.name);
    if (fault?.kind === "status") throw injectedStatus(fault.status, fault.retryAfterSeconds);
    if (fault?.kind === "occ") throw occFailure();
    if (fault?.kind === "latency") await new Promise((r) => setTimeout(r, fault.ms));
    if (fault?.kind === "drop_before") {
      req.socket.destroy();
      return;
    }
    const rejected = faults.rejectedWrite(fn.name, args);
    if (rejected)
      return sendText(res, 200, encodeUdfResponse(rejectedDocument(rejected.table, rejected.key), answerFormat()));

    let out: UdfResult;
    try {
      out = { status: "success", value: await executor.run(fn.kind, fn.name, args, caller.identity) };
    } catch (e) {
      out = functionError(e);
    }
    if (fault?.kind === "drop_after") {
      req.socket.destroy();
      return;
    }
    sendText(res, 200, encodeUdfResponse(out, answerFormat()));
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
