/**
 * Local Convex-compatible backend (DESIGN §8): the project's own `convex/`
 * functions executed in memory by convex-test, behind the Convex HTTP API
 * wire format, with admin-key auth, internal-function visibility, Convex
 * error shapes and switchable fault injection. For tests and `demo` only.
 *
 *   POST /api/query | /api/mutation | /api/action   {path, args, format}
 *   POST /api/run/<module path>/<function>         {args, format}
 *        → 200 {status:"success", value, logLines} | 200 {status:"error", errorMessage, errorData?, logLines}
 *        → non-2xx {code, message}: 400 bad request, 401 auth, 404 unknown function, 413 too large
 *   GET  /version
 *   POST /_faults (admin)  {kind:"status"|"latency"|"drop_before"|"drop_after"|"reject_key"|"clear", ...}
 *        reject_key {key}: until "clear", every `projector:apply` whose writes hold that key
 *        fails definitively ({status:"error"}, errorData {code:"InvalidDocument", table, key}),
 *        like a document Convex refuses (too large, invalid field): tests isolation.
 *   GET  /_stats  (admin)  {mutations, queries, actions, writes, faults}
 *
 * Auth: `Authorization: Convex <admin key>` may call everything;
 * `Authorization: Bearer <JWT>` becomes the identity for public functions.
 * TEST ONLY: the JWT is decoded, NOT verified (a real deployment verifies it
 * against auth.config.ts). Every function call runs one at a time through a
 * single queue, because convex-test has no concurrency control (no OCC).
 */
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { pathToFileURL } from "node:url";
import { convexTest } from "convex-test";
import { makeFunctionReference } from "convex/server";
import { convexToJson, jsonToConvex, type JSONValue } from "convex/values";
import schema from "../convex/schema";
import { convexModules } from "./modules";

export const MAX_BODY_BYTES = 16 * 1024 * 1024;

type Kind = "query" | "mutation" | "action";

/** `path`, when set, limits a fault to calls of that function (e.g. "projector:apply"). */
type Fault = { count: number; path?: string } & (
  | { kind: "status"; status: number; retryAfterSeconds?: number }
  | { kind: "latency"; ms: number }
  | { kind: "drop_before" }
  | { kind: "drop_after" }
);

export interface Stats {
  mutations: number;
  queries: number;
  actions: number;
  writes: number;
  faults: number;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface BackendOptions {
  port: number;
  adminKey: string;
  host?: string;
}

export interface Backend {
  server: Server;
  url: string;
  stats: Stats;
  close(): Promise<void>;
}

export async function startBackend(opts: BackendOptions): Promise<Backend> {
  const modules = convexModules();
  const t = convexTest({ schema, modules, transactionLimits: true });
  const stats: Stats = { mutations: 0, queries: 0, actions: 0, writes: 0, faults: 0 };
  let faults: Fault[] = [];
  /** Keys whose `apply` writes are rejected definitively (fault `reject_key`). */
  let rejectKeys = new Set<string>();
  let queue: Promise<unknown> = Promise.resolve();

  // Run one function call at a time.
  function serialized<T>(f: () => Promise<T>): Promise<T> {
    const run = queue.then(f, f);
    queue = run.catch(() => undefined);
    return run;
  }

  type Auth = { admin: boolean; identity: { subject: string; issuer: string } | null };

  function authenticate(req: IncomingMessage): Auth {
    const h = req.headers["authorization"];
    if (h === undefined || h === "") return { admin: false, identity: null };
    const [scheme, ...rest] = h.split(" ");
    const cred = rest.join(" ").trim();
    if (scheme === "Convex") {
      if (cred !== opts.adminKey) {
        throw new HttpError(401, "BadAdminKey", "The provided admin key was invalid for this instance");
      }
      return { admin: true, identity: null };
    }
    if (scheme === "Bearer") {
      const parts = cred.split(".");
      let payload: any;
      try {
        payload = JSON.parse(Buffer.from(parts[1] ?? "", "base64url").toString("utf8"));
      } catch {
        throw new HttpError(401, "InvalidAuthHeader", "Could not decode the bearer JWT");
      }
      if (typeof payload?.sub !== "string" || payload.sub === "") {
        throw new HttpError(401, "InvalidAuthHeader", "The bearer JWT has no `sub` claim");
      }
      const issuer = typeof payload.iss === "string" ? payload.iss : "local-backend";
      return { admin: false, identity: { subject: payload.sub, issuer } };
    }
    throw new HttpError(401, "InvalidAuthHeader", "Authorization must be `Convex <admin key>` or `Bearer <JWT>`");
  }

  /** Resolve "mod/dir:fn" (".js" allowed, default export when no ":") to the registered function. */
  async function resolve(path: string) {
    const [modPath, fnName = "default"] = path.split(":");
    const mod = (modPath ?? "").replace(/\.(js|ts)$/, "");
    if (mod === "" || mod.startsWith("_") || mod.includes("..")) {
      throw new HttpError(404, "FunctionNotFound", `Could not find function for '${path}'`);
    }
    const loader = modules[`/convex/${mod}.ts`] ?? modules[`/convex/${mod}.js`];
    const fn = loader ? (await loader())[fnName] : undefined;
    if (fn === undefined || !(fn.isQuery || fn.isMutation || fn.isAction)) {
      throw new HttpError(404, "FunctionNotFound", `Could not find function for '${path}'`);
    }
    const kind: Kind = fn.isQuery ? "query" : fn.isMutation ? "mutation" : "action";
    return { name: `${mod}:${fnName}`, kind, internal: Boolean(fn.isInternal) };
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

  function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
    const text = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(text)), ...headers });
    res.end(text);
  }

  function takeFault(path: string): Fault | null {
    const f = faults.find((x) => x.count > 0 && (x.path === undefined || x.path === path));
    if (!f) return null;
    f.count--;
    faults = faults.filter((x) => x.count > 0);
    stats.faults++;
    return f;
  }

  function statusFault(res: ServerResponse, f: Extract<Fault, { kind: "status" }>) {
    const code =
      f.status === 429
        ? "RateLimited"
        : f.status === 503
          ? "Overloaded"
          : f.status === 500
            ? "InternalServerError"
            : "InjectedFault";
    const message =
      f.status === 429
        ? "Rate limited: too many concurrent requests (injected fault)"
        : f.status === 503
          ? "Service temporarily unavailable: overloaded (injected fault)"
          : `Injected fault with status ${f.status}`;
    const headers: Record<string, string> = {};
    if (f.status === 429 || f.retryAfterSeconds !== undefined) {
      headers["retry-after"] = String(f.retryAfterSeconds ?? 1);
    }
    send(res, f.status, { code, message }, headers);
  }

  async function execute(kind: Kind, name: string, args: any, auth: Auth) {
    const caller = auth.identity
      ? t.withIdentity({
          subject: auth.identity.subject,
          issuer: auth.identity.issuer,
          tokenIdentifier: `${auth.identity.issuer}|${auth.identity.subject}`,
        })
      : t;
    const ref = makeFunctionReference<any>(name) as any;
    return serialized(async () => {
      if (kind === "query") {
        stats.queries++;
        return await caller.query(ref, args);
      }
      if (kind === "mutation") {
        stats.mutations++;
        const value = await caller.mutation(ref, args);
        if (name === "projector:apply" && value && typeof value === "object") {
          stats.writes += Number((value as any).applied ?? 0) + Number((value as any).deadLettersInserted ?? 0);
        }
        return value;
      }
      stats.actions++;
      return await caller.action(ref, args);
    });
  }

  function functionError(e: unknown) {
    const err = e as any;
    const isConvexError = err && typeof err === "object" && Symbol.for("ConvexError") in err && err[Symbol.for("ConvexError")];
    const msg: string = err?.message ?? String(e);
    // Argument validation fails inside the function on Convex too (HTTP 200, status "error").
    const name = isConvexError
      ? "ConvexError"
      : msg.startsWith("Validator error") || msg.startsWith("ArgumentValidationError")
        ? "ArgumentValidationError"
        : (err?.name ?? "Error");
    const body: Record<string, unknown> = {
      status: "error",
      errorMessage: `Uncaught ${name}: ${msg}`,
      logLines: [],
    };
    if (isConvexError && err.data !== undefined) body.errorData = convexToJson(err.data);
    return body;
  }

  async function handleApi(req: IncomingMessage, res: ServerResponse, url: URL) {
    if (req.method !== "POST") throw new HttpError(405, "MethodNotAllowed", "Use POST");
    const auth = authenticate(req);
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
    let path: string;
    let expected: Kind | null = null;
    const m = /^\/api\/(query|mutation|action)$/.exec(url.pathname);
    if (m) {
      expected = m[1] as Kind;
      if (typeof body.path !== "string") throw new HttpError(400, "BadRequest", "Missing `path`");
      path = body.path;
    } else if (url.pathname.startsWith("/api/run/")) {
      const segs = url.pathname.slice("/api/run/".length).split("/").filter(Boolean).map(decodeURIComponent);
      if (segs.length < 2) throw new HttpError(404, "FunctionNotFound", "Use /api/run/<module>/<function>");
      path = `${segs.slice(0, -1).join("/")}:${segs[segs.length - 1]}`;
    } else {
      throw new HttpError(404, "NotFound", `No route ${url.pathname}`);
    }
    if (body.format !== undefined && body.format !== "json" && body.format !== "convex_encoded_json") {
      throw new HttpError(400, "BadRequest", `Unsupported format ${JSON.stringify(body.format)}`);
    }
    let rawArgs = body.args ?? {};
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

    const fn = await resolve(path);
    if (fn.internal && !auth.admin) {
      throw new HttpError(401, "Unauthenticated", `'${fn.name}' is internal: it needs Authorization: Convex <admin key>`);
    }
    if (expected !== null && expected !== fn.kind) {
      throw new HttpError(400, "BadRequest", `'${fn.name}' is a ${fn.kind}, not a ${expected}`);
    }

    const fault = takeFault(fn.name);
    if (fault?.kind === "status") return statusFault(res, fault);
    if (fault?.kind === "latency") await new Promise((r) => setTimeout(r, fault.ms));
    if (fault?.kind === "drop_before") {
      req.socket.destroy();
      return;
    }

    let out: Record<string, unknown>;
    const rejected =
      fn.name === "projector:apply" && Array.isArray(args.writes)
        ? args.writes.find((w: any) => w && rejectKeys.has(w.key))
        : undefined;
    if (rejected) {
      stats.faults++;
      const message = `${rejected.table} key ${JSON.stringify(rejected.key)}: rejected (injected fault reject_key)`;
      send(res, 200, {
        status: "error",
        errorMessage: `Uncaught ConvexError: ${message}`,
        errorData: { code: "InvalidDocument", message, table: String(rejected.table), key: String(rejected.key) },
        logLines: [],
      });
      return;
    }
    try {
      const value = await execute(fn.kind, fn.name, args, auth);
      out = { status: "success", value: convexToJson(value === undefined ? null : value), logLines: [] };
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
    if (!authenticate(req).admin) throw new HttpError(401, "Unauthenticated", "Admin key required");
    if (req.method === "GET") return send(res, 200, { faults });
    if (req.method !== "POST") throw new HttpError(405, "MethodNotAllowed", "Use POST");
    let f: any;
    try {
      f = JSON.parse((await readBody(req)).toString("utf8"));
    } catch {
      throw new HttpError(400, "BadJsonBody", "Fault body is not valid JSON");
    }
    const count = f?.count ?? 1;
    const okCount = Number.isSafeInteger(count) && count >= 1;
    if (f?.path !== undefined && typeof f.path !== "string") throw new HttpError(400, "BadRequest", "path must be a string");
    const path: string | undefined = f?.path?.replace(/\.js:/, ":");
    switch (f?.kind) {
      case "clear":
        faults = [];
        rejectKeys = new Set();
        break;
      case "reject_key":
        if (typeof f.key !== "string") throw new HttpError(400, "BadRequest", "reject_key fault needs a string key");
        rejectKeys.add(f.key);
        break;
      case "status":
        if (!okCount || !Number.isSafeInteger(f.status) || f.status < 400 || f.status > 599) {
          throw new HttpError(400, "BadRequest", "status fault needs status 400..599 and count >= 1");
        }
        faults.push({ kind: "status", status: f.status, count, path, retryAfterSeconds: f.retryAfterSeconds });
        break;
      case "latency":
        if (!okCount || typeof f.ms !== "number" || f.ms < 0) {
          throw new HttpError(400, "BadRequest", "latency fault needs ms >= 0 and count >= 1");
        }
        faults.push({ kind: "latency", ms: f.ms, count, path });
        break;
      case "drop_before":
      case "drop_after":
        if (!okCount) throw new HttpError(400, "BadRequest", "count must be >= 1");
        faults.push({ kind: f.kind, count, path });
        break;
      default:
        throw new HttpError(400, "BadRequest", "kind must be status|latency|drop_before|drop_after|reject_key|clear");
    }
    send(res, 200, { faults });
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
        if (!authenticate(req).admin) throw new HttpError(401, "Unauthenticated", "Admin key required");
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
        send(res, e.status, { code: e.code, message: e.message });
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
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

/**
 * Ancestors up to and including the `npm` process that started us (or just
 * the parent). `npm run` cannot forward SIGKILL, so a harness that kills npm
 * would orphan this server; we poll the chain and exit when any link is gone.
 */
function launcherChain(): number[] {
  const chain: number[] = [];
  let pid = process.ppid;
  try {
    for (let i = 0; i < 6 && pid > 1; i++) {
      chain.push(pid);
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
      if (/(^|\/|\s)npm(-cli\.js)?(\s|$)/.test(cmd)) return chain;
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      pid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    }
  } catch {
    // No /proc: fall back to the direct parent.
  }
  return chain.slice(0, 1);
}

function alive(pid: number) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function parseCli(argv: string[]) {
  let port = 3210;
  let adminKey = process.env.CONVEX_ADMIN_KEY ?? process.env.CONVEX_SELF_HOSTED_ADMIN_KEY ?? "";
  let host = "127.0.0.1";
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === "--port") port = Number(next());
    else if (a === "--admin-key") adminKey = next();
    else if (a === "--host") host = next();
    else if (a === "--") continue;
    else throw new Error(`unknown argument ${a} (use --port <port> --admin-key <key> [--host <addr>])`);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error("--port must be 0..65535");
  if (adminKey === "") throw new Error("--admin-key <key> (or CONVEX_ADMIN_KEY) is required");
  return { port, adminKey, host };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    const opts = parseCli(process.argv.slice(2));
    const b = await startBackend(opts);
    console.log(`local convex backend listening on ${b.url}`);
    const stop = () => {
      b.close().then(() => process.exit(0));
      setTimeout(() => process.exit(0), 1000).unref();
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
    const chain = launcherChain();
    setInterval(() => {
      if (!chain.every(alive)) stop();
    }, 500).unref();
  } catch (e) {
    console.error(`local-backend: ${(e as Error).message}`);
    process.exit(2);
  }
}
