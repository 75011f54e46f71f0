// @vitest-environment node
// Starts the real `npm run local-backend` on a free port and talks HTTP to it.
import { spawn, type ChildProcess } from "node:child_process";
import { request } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, test } from "vitest";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const ADMIN = "test-admin-key-123";
let child: ChildProcess;
let url = "";

beforeAll(async () => {
  child = spawn("npm", ["run", "--silent", "local-backend", "--", "--port", "0"], {
    cwd: root,
    env: { ...process.env, CONVEX_ADMIN_KEY: ADMIN },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  url = await new Promise<string>((ok, fail) => {
    let out = "";
    const timer = setTimeout(() => fail(new Error(`no listening line: ${out}`)), 20000);
    child.stdout!.on("data", (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        ok(m[1]!);
      }
    });
    child.stderr!.on("data", (d) => (out += d));
    child.on("exit", (c) => fail(new Error(`exited ${c}: ${out}`)));
  });
}, 30000);

afterAll(() => {
  if (child?.pid) process.kill(-child.pid, "SIGTERM");
});

type Res = { status: number; headers: Record<string, any>; body: any; text: string } | { dropped: true };

function call(
  method: string,
  path: string,
  body?: unknown,
  auth: string | null = `Convex ${ADMIN}`,
  convexClient?: string,
): Promise<Res> {
  return new Promise((ok, fail) => {
    const data = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
    const req = request(
      url + path,
      {
        method,
        headers: {
          ...(auth ? { authorization: auth } : {}),
          ...(convexClient ? { "convex-client": convexClient } : {}),
          "content-type": "application/json",
        },
        agent: false,
      },
      (res) => {
        let text = "";
        res.on("data", (d) => (text += d));
        res.on("end", () => {
          let parsed: any = text;
          try {
            parsed = JSON.parse(text);
          } catch {}
          ok({ status: res.statusCode!, headers: res.headers, body: parsed, text });
        });
        res.on("error", () => ok({ dropped: true }));
      },
    );
    req.on("error", (e: any) => (e.code === "ECONNRESET" || e.message === "socket hang up" ? ok({ dropped: true }) : fail(e)));
    if (data !== undefined) req.write(data);
    req.end();
  });
}

const pos = (n: number) => `${n.toString(16).padStart(16, "0")}:0000000000000000`;
const thread = (k: string, owner: string, runCount: number) => ({
  threadId: k,
  runCount,
  latestRunId: "r",
  latestRunSeq: 1,
  ownerId: owner,
  updatedAt: 5,
});
const apply = (key: string, p: number, runCount = 1) => ({
  path: "projector:apply",
  format: "json",
  args: { generation: 1, writes: [{ table: "threads", key, position: pos(p), doc: thread(key, "alice", runCount) }], deadLetters: [] },
});
const ok = (r: Res) => {
  if ("dropped" in r) throw new Error("dropped");
  return r;
};

test("version", async () => {
  const r = ok(await call("GET", "/version", undefined, null));
  expect(r.status).toBe(200);
});

/** `errorMessage` without its first line (`[Request ID: …] Server Error`). */
const jsError = (r: Res) => ("dropped" in r ? "dropped" : String(r.body.errorMessage).replace(/^\[Request ID: [0-9a-f]{16}\] Server Error\n/, ""));

test("internal functions need the admin key; without it they do not exist (HTTP 200, as Convex)", async () => {
  for (const auth of [null, "Bearer x.eyJzdWIiOiJhbGljZSJ9.y"]) {
    const r = ok(await call("POST", "/api/query", { path: "projector:getActive", args: {} }, auth));
    expect(r.status).toBe(200);
    expect(jsError(r)).toBe("Could not find public function for 'projector:getActive'.\n");
  }
  const bad = ok(await call("POST", "/api/query", { path: "projector:getActive", args: {} }, "Convex wrong-key"));
  expect(bad.status).toBe(401);
  expect(bad.body).toEqual({ code: "BadAdminKey", message: "The provided admin key was invalid for this instance" });
  expect(ok(await call("GET", "/_stats", undefined, null)).status).toBe(401);
  expect(ok(await call("POST", "/_faults", { kind: "clear" }, null)).status).toBe(401);
});

test("success shape, run path, guarded upsert", async () => {
  const a = ok(await call("POST", "/api/mutation", apply("t1", 10)));
  expect(a.status).toBe(200);
  // As the real backend writes it: float64 with a fraction, fields sorted, no empty logLines.
  expect(a.text).toBe(
    '{"status":"success","value":{"applied":1.0,"deadLettersInserted":0.0,"deadLettersSkipped":0.0,"skipped":0.0}}',
  );
  const b = ok(await call("POST", "/api/run/projector/apply", { args: apply("t1", 9).args, format: "json" }));
  expect(b.body.value).toMatchObject({ applied: 0, skipped: 1 });
  const page = ok(
    await call("POST", "/api/query", { path: "projector:page", args: { table: "threads", generation: 1, cursor: null, limit: 10 } }),
  );
  expect(page.body.value.docs).toHaveLength(1);
  expect(page.body.value.nextCursor).toBeNull();
});

test("function error shape names the key; system error shapes", async () => {
  const bad: any = apply("t2", 11);
  delete bad.args.writes[0].doc.updatedAt;
  const r = ok(await call("POST", "/api/mutation", bad));
  expect(r.status).toBe(200);
  expect(r.body.status).toBe("error");
  expect(r.body.errorMessage).toMatch(/threads key "t2": updatedAt: missing/);
  expect(r.body.errorData).toMatchObject({ code: "InvalidDocument", table: "threads", key: "t2" });

  const missing = ok(await call("POST", "/api/query", { path: "nope:fn", args: {} }));
  expect([missing.status, jsError(missing)]).toEqual([200, "Could not find public function for 'nope:fn'.\n"]);
  expect(ok(await call("POST", "/api/query", "{not json")).status).toBe(400);
  const wrongKind = ok(await call("POST", "/api/query", { path: "projector:apply", args: {} }));
  expect([wrongKind.status, jsError(wrongKind)]).toEqual([
    200,
    "Trying to execute projector.js:apply as Query, but it is defined as Mutation.\n",
  ]);
  const argErr = ok(await call("POST", "/api/mutation", { path: "projector:setActive", args: { generation: "x" } }));
  expect(argErr.status).toBe(200);
  expect(argErr.body.status).toBe("error");
  expect(argErr.body.errorMessage).toMatch(/^\[Request ID: [0-9a-f]{16}\] Server Error\nArgumentValidationError: /);
});

test("results are printed in the requested format; int64 and special floats per format", async () => {
  const int5 = { $integer: Buffer.from(new BigInt64Array([5n]).buffer).toString("base64") };
  const negZero = { $float: Buffer.from(new Float64Array([-0]).buffer).toString("base64") };
  const value = { n: int5, two: 2, z: negZero, b: { $bytes: "AQ==" }, big: 1e21 };
  const s = ok(await call("POST", "/api/mutation", { path: "projector:setState", args: { generation: 1, key: "i", value } }));
  expect(s.text).toBe('{"status":"success","value":null}');
  const get = (extra: object, headers?: string) =>
    call("POST", "/api/query", { path: "projector:getState", args: { generation: 1, key: "i" }, ...extra }, `Convex ${ADMIN}`, headers);
  const encoded = ok(await get({ format: "convex_encoded_json" }));
  expect(encoded.text).toBe(
    `{"status":"success","value":{"b":{"$bytes":"AQ=="},"big":1e21,"n":{"$integer":"${int5.$integer}"},"two":2.0,"z":{"$float":"${negZero.$float}"}}}`,
  );
  const clean = '{"status":"success","value":{"b":"AQ==","big":1e21,"n":"5","two":2.0,"z":-0.0}}';
  expect(ok(await get({ format: "json" })).text).toBe(clean);
  // No format: clean JSON for current clients (and no Convex-Client header); encoded for npm <= 1.4.1.
  expect(ok(await get({})).text).toBe(clean);
  expect(ok(await get({}, "npm-1.4.1")).text).toBe(encoded.text);
  expect(ok(await call("POST", "/api/run/projector/getState", { args: { generation: 1, key: "i" } })).text).toBe(clean);
});

test("an unknown format is a 400 BadFormat after the function ran, as on Convex", async () => {
  const r = ok(
    await call("POST", "/api/mutation", { path: "projector:setState", args: { generation: 1, key: "fmt", value: 1 }, format: "xml" }),
  );
  expect(r.status).toBe(400);
  expect(r.body).toEqual({ code: "BadFormat", message: "format param must be one of [`json`]. Got xml" });
  const g = ok(await call("POST", "/api/query", { path: "projector:getState", args: { generation: 1, key: "fmt" } }));
  expect(g.text).toBe('{"status":"success","value":1.0}');
});

test("errorData is printed in the requested format too", async () => {
  const bad: any = apply("t3", 12);
  delete bad.args.writes[0].doc.updatedAt;
  const r = ok(await call("POST", "/api/mutation", bad));
  const message = 'threads key \\"t3\\": updatedAt: missing';
  const text = r.text.replace(/\[Request ID: [0-9a-f]{16}\]/, "[Request ID: <id>]");
  expect(text).toBe(
    `{"status":"error","errorMessage":"[Request ID: <id>] Server Error\\nUncaught ConvexError: ${message}\\n",` +
      `"errorData":{"code":"InvalidDocument","key":"t3","message":"${message}","table":"threads"}}`,
  );
});

test("bearer identity scopes public queries", async () => {
  await call("POST", "/api/mutation", { path: "projector:setActive", args: { generation: 1, expected: null } });
  const jwt = (sub: string) => `Bearer h.${Buffer.from(JSON.stringify({ sub, iss: "test" })).toString("base64url")}.s`;
  const alice = ok(await call("POST", "/api/query", { path: "threads:list", args: {} }, jwt("alice")));
  expect(alice.body.value.map((d: any) => d.key)).toEqual(["t1"]);
  const bob = ok(await call("POST", "/api/query", { path: "threads:list", args: {} }, jwt("bob")));
  expect(bob.body.value).toEqual([]);
  const anon = ok(await call("POST", "/api/query", { path: "threads:get", args: { threadId: "t1" } }, null));
  expect(anon.body).toMatchObject({ status: "success", value: null });
});

test("fault injection: status, latency, drop before and after commit", async () => {
  const stats0 = ok(await call("GET", "/_stats")).body;

  expect(ok(await call("POST", "/_faults", { kind: "status", status: 429, count: 1, retryAfterSeconds: 3 })).status).toBe(200);
  const r429 = ok(await call("POST", "/api/mutation", apply("f1", 20)));
  expect(r429.status).toBe(429);
  expect(r429.headers["retry-after"]).toBe("3");
  expect(r429.body).toMatchObject({ code: expect.any(String), message: expect.any(String) });

  for (const status of [500, 503]) {
    await call("POST", "/_faults", { kind: "status", status, count: 1 });
    const r = ok(await call("POST", "/api/mutation", apply("f1", 20)));
    expect(r.status).toBe(status);
    expect(r.body.code).toEqual(expect.any(String));
  }
  // None of the faulted calls executed.
  let load = ok(await call("POST", "/api/query", { path: "projector:load", args: { generation: 1, table: "threads", keys: ["f1"] } }));
  expect(load.body.value).toEqual([]);

  // An OCC failure: Convex's 503 shape; nothing ran.
  await call("POST", "/_faults", { kind: "occ", count: 1 });
  const occ = ok(await call("POST", "/api/mutation", apply("f1", 20)));
  expect(occ.status).toBe(503);
  expect(occ.body).toMatchObject({ code: "OptimisticConcurrencyControlFailure", message: expect.stringMatching(/^Data read or written/) });
  load = ok(await call("POST", "/api/query", { path: "projector:load", args: { generation: 1, table: "threads", keys: ["f1"] } }));
  expect(load.body.value).toEqual([]);

  await call("POST", "/_faults", { kind: "drop_before", count: 1 });
  expect(await call("POST", "/api/mutation", apply("f1", 20))).toEqual({ dropped: true });
  load = ok(await call("POST", "/api/query", { path: "projector:load", args: { generation: 1, table: "threads", keys: ["f1"] } }));
  expect(load.body.value).toEqual([]);

  await call("POST", "/_faults", { kind: "drop_after", count: 1 });
  expect(await call("POST", "/api/mutation", apply("f1", 20))).toEqual({ dropped: true });
  load = ok(await call("POST", "/api/query", { path: "projector:load", args: { generation: 1, table: "threads", keys: ["f1"] } }));
  expect(load.body.value).toHaveLength(1); // committed although the client saw a dropped connection
  // The retry is absorbed by the position guard.
  const retry = ok(await call("POST", "/api/mutation", apply("f1", 20)));
  expect(retry.body.value).toMatchObject({ applied: 0, skipped: 1 });

  await call("POST", "/_faults", { kind: "latency", ms: 250, count: 1 });
  const t0 = Date.now();
  ok(await call("POST", "/api/query", { path: "projector:getActive", args: {} }));
  expect(Date.now() - t0).toBeGreaterThanOrEqual(240);

  // A path-scoped fault skips other functions and is not consumed by them.
  await call("POST", "/_faults", { kind: "status", status: 500, count: 1, path: "projector:apply" });
  expect(ok(await call("POST", "/api/query", { path: "projector:getActive", args: {} })).status).toBe(200);
  expect(ok(await call("POST", "/api/mutation", apply("f1", 21))).status).toBe(500);

  await call("POST", "/_faults", { kind: "status", status: 503, count: 5 });
  await call("POST", "/_faults", { kind: "clear" });
  expect(ok(await call("POST", "/api/query", { path: "projector:getActive", args: {} })).status).toBe(200);
  expect(ok(await call("POST", "/_faults", { kind: "bogus" })).status).toBe(400);

  const stats1 = ok(await call("GET", "/_stats")).body;
  expect(stats1.writes - stats0.writes).toBe(1);
  expect(stats1.mutations - stats0.mutations).toBe(2);
});

test("bodies over 16 MiB + 2000 bytes are refused as Convex does; under that, args over 16 MiB fail the call", async () => {
  const body = (pad: number) => JSON.stringify({ path: "projector:getActive", args: { pad: "x".repeat(pad) } });
  const over = ok(await call("POST", "/api/query", body(16 * 1024 * 1024 + 2000)));
  expect(over.status).toBe(400);
  expect(over.body).toEqual({ code: "BadJsonBody", message: "Failed to buffer the request body: length limit exceeded" });
  const under = ok(await call("POST", "/api/query", body(16 * 1024 * 1024)));
  expect(under.status).toBe(200);
  expect(under.body.errorMessage).toMatch(/\nArguments for projector\.js:getActive are too large \(actual: 16\.00 MiB, limit: 16 MiB\)\n$/);
});

test("a function call needs Content-Type: application/json", async () => {
  const r = await new Promise<{ status: number; body: any }>((done, fail) => {
    const req = request(url + "/api/query", { method: "POST", headers: { authorization: `Convex ${ADMIN}` } }, (res) => {
      let t = "";
      res.on("data", (d) => (t += d));
      res.on("end", () => done({ status: res.statusCode!, body: JSON.parse(t) }));
    });
    req.on("error", fail);
    req.end(JSON.stringify({ path: "projector:getActive", args: {} }));
  });
  expect(r).toEqual({ status: 400, body: { code: "BadJsonBody", message: "Expected request with `Content-Type: application/json`" } });
});

test("fault injection: reject_key fails every apply that writes that key, until clear", async () => {
  await call("POST", "/_faults", { kind: "reject_key", key: "rk1" });
  for (let i = 0; i < 2; i++) {
    const r = ok(await call("POST", "/api/mutation", apply("rk1", 30 + i)));
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      status: "error",
      errorData: { code: "InvalidDocument", table: "threads", key: "rk1" },
    });
  }
  // Other keys are unaffected.
  const other = ok(await call("POST", "/api/mutation", apply("rk2", 30)));
  expect(other.body.value).toMatchObject({ applied: 1 });
  const load = ok(await call("POST", "/api/query", { path: "projector:load", args: { generation: 1, table: "threads", keys: ["rk1"] } }));
  expect(load.body.value).toEqual([]);
  expect(ok(await call("POST", "/_faults", { kind: "reject_key" })).status).toBe(400);
  await call("POST", "/_faults", { kind: "clear" });
  const after = ok(await call("POST", "/api/mutation", apply("rk1", 40)));
  expect(after.body.value).toMatchObject({ applied: 1 });
});

test("the command line refuses --admin-key without echoing it, and a non-loopback --host", async () => {
  const run = (args: string[]) =>
    new Promise<{ code: number | null; out: string }>((done) => {
      const p = spawn("npm", ["run", "--silent", "local-backend", "--", ...args], {
        cwd: root,
        env: { ...process.env, CONVEX_ADMIN_KEY: ADMIN },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      p.stdout!.on("data", (d) => (out += d));
      p.stderr!.on("data", (d) => (out += d));
      p.on("exit", (code) => done({ code, out }));
    });
  const key = await run(["--port", "0", "--admin-key", "visible-secret-42"]);
  expect(key.code).not.toBe(0);
  expect(key.out).toMatch(/--admin-key is not accepted/);
  expect(key.out).not.toContain("visible-secret-42");
  const remote = await run(["--port", "0", "--host", "0.0.0.0"]);
  expect(remote.code).not.toBe(0);
  expect(remote.out).toMatch(/not a loopback address/);
}, 30_000);
