// @vitest-environment node
// The official `convex` client (ConvexClient, over the WebSocket sync
// protocol) against the local backend, with RS256 tokens from the reference
// issuer verified through convex/auth.config.ts. Data arrives the way the
// projector writes it: `projector:apply` over HTTP with the admin key.
import { ConvexClient } from "convex/browser";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import WebSocket from "ws";
import { api } from "../convex/_generated/api";
import { inbox, pos, run, worker } from "../convex/fixtures.test-helpers";
import { generateIssuerKey, mintToken, startIssuer, type IssuerServer } from "../tools/token-issuer";
import { createVerifier, providersFromAuthConfig } from "./jwt";
import { bearerVerifier, enableLiveClients, type LiveClients } from "./live";
import { convexModules } from "./modules";
import { startBackend, type Backend } from "./server";
import { decodeTs } from "./sync";

const ADMIN = "client-test-admin-key";
const AUD = "projector-clients";
let issuer: IssuerServer;
let backend: Backend;
let live: LiveClients;
const clients: ConvexClient[] = [];
let lsn = 10;

beforeAll(async () => {
  issuer = await startIssuer({ key: await generateIssuerKey(), audience: AUD });
  // The backend reads the same environment convex/auth.config.ts reads.
  process.env.JWT_ISSUER = issuer.issuer;
  process.env.JWT_JWKS_URL = issuer.jwksUrl;
  process.env.JWT_APPLICATION_ID = AUD;
  const verifier = createVerifier({ providers: await providersFromAuthConfig() });
  backend = await startBackend({ port: 0, adminKey: ADMIN, verifyBearer: bearerVerifier(verifier) });
  live = enableLiveClients(backend, { verifier, modules: convexModules() });
  await apply([
    { table: "runs", key: "ra", doc: run("ra", "alice", { title: "alice's run" }) },
    { table: "runs", key: "rb", doc: run("rb", "bob", { title: "bob's run" }) },
    { table: "workers", key: "wa", doc: worker("wa", "alice") },
    { table: "inboxes", key: "alice", doc: inbox("alice") },
  ]);
  await admin("mutation", "projector:setActive", { generation: 1, expected: null });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  live?.sync.close();
  await backend?.close();
  await issuer?.close();
});

async function admin(kind: string, path: string, args: unknown) {
  const res = await fetch(`${backend.url}/api/${kind}`, {
    method: "POST",
    headers: { authorization: `Convex ${ADMIN}`, "content-type": "application/json" },
    body: JSON.stringify({ path, args, format: "json" }),
  });
  const body = await res.json();
  expect(body.status, JSON.stringify(body)).toBe("success");
  return body.value;
}

/** What the projector sends: one guarded upsert batch, committed atomically. */
async function apply(writes: { table: string; key: string; doc: Record<string, unknown> }[]) {
  lsn++;
  await admin("mutation", "projector:apply", {
    generation: 1,
    writes: writes.map((w, i) => ({ ...w, position: pos(lsn, i) })),
    deadLetters: [],
  });
}

/** Polls `f` until it returns something truthy. */
async function waitFor<T>(what: string, f: () => T | undefined | null | false | 0, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const quiet = () => {};
const logger = { logVerbose: quiet, log: quiet, warn: quiet, error: quiet };

/** A ConvexClient whose fetchToken returns `token` (null: no auth). */
function client(token: string | null) {
  const c = new ConvexClient(backend.url, process.env.DBG ? { verbose: true } : { logger });
  clients.push(c);
  const auth: boolean[] = [];
  if (token !== null)
    c.setAuth(
      async () => token,
      (ok) => auth.push(ok),
    );
  return { c, auth };
}

function subscribe<T>(c: ConvexClient, ref: any, args: any) {
  const seen: T[] = [];
  c.onUpdate(ref, args, (v: T) => seen.push(v));
  return seen;
}

describe("the official client", () => {
  test("a user sees only their own documents; no token sees nothing", async () => {
    const alice = client(await issuer.mint("alice"));
    const bob = client(await issuer.mint("bob"));
    const anon = client(null);
    const aliceRuns = subscribe<any[]>(alice.c, api.runs.list, {});
    const bobRuns = subscribe<any[]>(bob.c, api.runs.list, {});
    const anonRuns = subscribe<any[]>(anon.c, api.runs.list, {});
    const aliceWorkers = subscribe<any[]>(alice.c, api.workers.list, {});
    const aliceInbox = subscribe<any>(alice.c, api.inbox.get, { userId: "alice" });
    await waitFor(
      "first results",
      () => aliceRuns.length && bobRuns.length && anonRuns.length && aliceWorkers.length && aliceInbox.length,
    );
    expect(aliceRuns.at(-1)!.map((r) => [r.key, r.ownerId, r.title])).toEqual([["ra", "alice", "alice's run"]]);
    expect(bobRuns.at(-1)!.map((r) => [r.key, r.ownerId])).toEqual([["rb", "bob"]]);
    expect(anonRuns.at(-1)).toEqual([]);
    expect(aliceWorkers.at(-1)!.map((w) => w.key)).toEqual(["wa"]);
    expect(aliceInbox.at(-1)!.unreadCount).toBe(1);
    expect(alice.auth).toEqual([true]);
    // Bob cannot read Alice's run even by key.
    const bobGet = subscribe<any>(bob.c, api.runs.get, { runId: "ra" });
    await waitFor("bob's get", () => bobGet.length);
    expect(bobGet.at(-1)).toBeNull();
  });

  test("a committed apply reaches the subscriber; an unrelated user gets no update", async () => {
    const alice = client(await issuer.mint("alice"));
    const bob = client(await issuer.mint("bob"));
    const aliceRun = subscribe<any>(alice.c, api.runs.get, { runId: "ra" });
    const bobRuns = subscribe<any[]>(bob.c, api.runs.list, {});
    await waitFor("first results", () => aliceRun.length && bobRuns.length);
    const before = bobRuns.length;
    const t0 = Date.now();
    await apply([
      { table: "runs", key: "ra", doc: run("ra", "alice", { status: "running", stepCount: 3, lastStreamSeq: 4 }) },
    ]);
    const updated = await waitFor("alice's update", () => aliceRun.find((r) => r?.status === "running"));
    expect([updated.stepCount, updated.lastStreamSeq]).toEqual([3, 4]);
    expect(Date.now() - t0).toBeLessThan(5_000);
    // A second commit for Alice, then Bob's subscription is checked: his
    // result never changed, so he was sent nothing new.
    await apply([{ table: "runs", key: "ra", doc: run("ra", "alice", { status: "completed", lastStreamSeq: 5 }) }]);
    await waitFor("alice's second update", () => aliceRun.find((r) => r?.status === "completed"));
    expect(bobRuns.length).toBe(before);
    expect(aliceRun.map((r) => r?.status)).toEqual(["queued", "running", "completed"].slice(-aliceRun.length));
  });

  test("a user with no documents sees nothing, also by key", async () => {
    const carol = client(await issuer.mint("carol"));
    const runs = subscribe<any[]>(carol.c, api.runs.list, {});
    const ra = subscribe<any>(carol.c, api.runs.get, { runId: "ra" });
    const aliceInbox = subscribe<any>(carol.c, api.inbox.get, { userId: "alice" });
    await waitFor("results", () => runs.length && ra.length && aliceInbox.length);
    expect([runs.at(-1), ra.at(-1), aliceInbox.at(-1)]).toEqual([[], null, null]);
    expect(carol.auth).toEqual([true]);
  });

  test("expired, foreign-issuer and bad-signature tokens are refused", async () => {
    const key = await generateIssuerKey();
    const kid = (await issuer.mint("x")).split(".")[0]!;
    const cases = {
      // Expired 9 minutes ago.
      expired: await issuer.mint("alice", { issuedAt: Math.floor(Date.now() / 1000) - 600, ttlSeconds: 60 }),
      foreign: await mintToken(key, { issuer: "https://evil.example.com", audience: AUD, subject: "alice" }),
      // Signed by another key, under the issuer's kid.
      badSignature: `${kid}.${(await mintToken(key, { issuer: issuer.issuer, audience: AUD, subject: "alice" })).split(".").slice(1).join(".")}`,
    };
    for (const [name, token] of Object.entries(cases)) {
      const c = client(token);
      const runs = subscribe<any[]>(c.c, api.runs.list, {});
      await waitFor(`${name}: auth refused`, () => c.auth.includes(false));
      // The client falls back to no identity: it sees nothing.
      await waitFor(`${name}: unauthenticated result`, () => runs.length);
      expect(
        runs.every((r) => r.length === 0),
        name,
      ).toBe(true);
      expect(c.auth, name).toEqual([false]);
      // The server's reasons, as a raw protocol client sees them.
      const s = await rawSocket();
      s.send({ type: "Authenticate", tokenType: "User", value: token, baseVersion: 0 });
      const err = await s.next(`${name}: AuthError`, (m) => m.type === "AuthError");
      expect(err.error, name).toMatch(reasons[name as keyof typeof cases]);
      await s.closed;
    }
  });
});

const reasons = {
  expired: /^Could not validate token: Token expired 54\d seconds ago$/,
  foreign: /^No auth provider found matching the given token\. /,
  badSignature:
    /^Could not decode token\. The JWT's 'kid' \(key ID\) header is '[^']+', does this key match any key in the provider's JWKS\?$/,
};

/** A raw protocol connection, to check Convex's exact messages. */
async function rawSocket() {
  const ws = new WebSocket(backend.url.replace("http", "ws") + "/api/1.48.0/sync");
  const got: any[] = [];
  const closed = new Promise<{ code: number }>((ok) => ws.on("close", (code) => ok({ code })));
  ws.on("message", (d) => got.push(JSON.parse(d.toString())));
  await new Promise((ok, fail) => ws.once("open", ok).once("error", fail));
  const send = (m: unknown) => ws.send(JSON.stringify(m));
  send({
    type: "Connect",
    sessionId: crypto.randomUUID(),
    connectionCount: 0,
    lastCloseReason: null,
    clientTs: Date.now(),
  });
  const next = (what: string, f: (m: any) => boolean) => waitFor(what, () => got.find(f));
  return { ws, got, send, next, closed };
}

describe("the sync protocol's answers", () => {
  test("a refused token: AuthError with Convex's message, then the socket closes", async () => {
    const s = await rawSocket();
    const foreign = await mintToken(await generateIssuerKey(), {
      issuer: "https://evil.example.com",
      audience: AUD,
      subject: "a",
    });
    s.send({ type: "Authenticate", tokenType: "User", value: foreign, baseVersion: 0 });
    const err = await s.next("AuthError", (m) => m.type === "AuthError");
    expect(err).toEqual({
      type: "AuthError",
      error: `No auth provider found matching the given token. Check that your JWT's issuer and audience match one of your configured providers: [CustomJWT(issuer=${issuer.issuer}, app_id=${AUD})]`,
      baseVersion: 0,
      authUpdateAttempted: true,
    });
    expect((await s.closed).code).toBe(1005);
  });

  test("an identity past its exp is refused at the next update (TokenExpired)", async () => {
    const s = await rawSocket();
    // exp 1-2 s ahead (whole seconds): valid now, expired soon.
    const token = await issuer.mint("alice", { issuedAt: Math.floor(Date.now() / 1000) - 10, ttlSeconds: 12 });
    s.send({ type: "Authenticate", tokenType: "User", value: token, baseVersion: 0 });
    s.send({
      type: "ModifyQuerySet",
      baseVersion: 0,
      newVersion: 1,
      modifications: [{ type: "Add", queryId: 0, udfPath: "runs:list", args: [{}] }],
    });
    const t = await s.next("the query's first result", (m) => m.type === "Transition" && m.endVersion.querySet === 1);
    expect(t.endVersion.identity).toBe(1);
    expect(t.modifications[0].value.map((r: any) => r.key)).toEqual(["ra"]);
    const exp = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString()).exp;
    await waitFor("exp to pass", () => Date.now() >= exp * 1000, 5_000);
    await apply([{ table: "runs", key: "ra", doc: run("ra", "alice", { stepCount: 9, lastStreamSeq: 9 }) }]);
    const err = await s.next("AuthError", (m) => m.type === "AuthError");
    expect(err).toEqual({
      type: "AuthError",
      error: "Convex token identity expired",
      baseVersion: 1,
      authUpdateAttempted: false,
    });
    await s.closed;
  });

  test("versions chain, a mutation's ts is reached by a Transition, errors are FatalError", async () => {
    const s = await rawSocket();
    s.send({ type: "Authenticate", tokenType: "Admin", value: ADMIN, baseVersion: 0 });
    s.send({
      type: "ModifyQuerySet",
      baseVersion: 0,
      newVersion: 1,
      modifications: [
        { type: "Add", queryId: 7, udfPath: "projector:getActive", args: [{}] },
        { type: "Add", queryId: 8, udfPath: "runs:nope", args: [{}] },
      ],
    });
    const first = await s.next("transition", (m) => m.type === "Transition" && m.endVersion.querySet === 1);
    const byId = Object.fromEntries(first.modifications.map((m: any) => [m.queryId, m]));
    expect(byId[7]).toMatchObject({ type: "QueryUpdated", value: 1 });
    expect(byId[8].type).toBe("QueryFailed");
    expect(byId[8].errorMessage).toMatch(
      /^\[Request ID: [0-9a-f]{16}\] Server Error\nCould not find public function for 'runs:nope'\.\n$/,
    );
    s.send({
      type: "Mutation",
      requestId: 0,
      udfPath: "projector:apply",
      args: [
        {
          generation: 1,
          writes: [{ table: "runs", key: "rz", position: pos(++lsn), doc: run("rz", "zed") }],
          deadLetters: [],
        },
      ],
    });
    const resp = await s.next("MutationResponse", (m) => m.type === "MutationResponse");
    expect(resp).toMatchObject({ requestId: 0, success: true, result: { applied: 1 } });
    const reached = await s.next(
      "a transition at the mutation's ts",
      (m) => m.type === "Transition" && decodeTs(m.endVersion.ts) >= decodeTs(resp.ts),
    );
    // Every Transition starts where the previous one ended.
    const ts = s.got.filter((m) => m.type === "Transition");
    for (let i = 1; i < ts.length; i++) expect(ts[i].startVersion).toEqual(ts[i - 1].endVersion);
    expect(reached.endVersion.querySet).toBe(1);
    s.send({ type: "ModifyQuerySet", baseVersion: 0, newVersion: 2, modifications: [] });
    expect(await s.next("FatalError", (m) => m.type === "FatalError")).toEqual({
      type: "FatalError",
      error: "Base version 0 passed up doesn't match the current version 1",
    });
    await s.closed;
  });
});
