// @vitest-environment node
// The sync server's own rules, against a scripted engine: heartbeats, the
// idle-client timeout, and which commits produce a Transition.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, expect, test } from "vitest";
import WebSocket from "ws";
import { createSyncServer, decodeTs, type SyncEngine, type SyncServer } from "./sync";

let http: Server | undefined;
let sync: SyncServer | undefined;
afterEach(() => {
  sync?.close();
  http?.close();
});

/** An engine whose only query returns `value`, reading whatever `invalidates` says. */
function engine() {
  const e: { ts: bigint; value: number; runs: number; touches: boolean; engine: SyncEngine } = {
    ts: 1n,
    value: 1,
    runs: 0,
    touches: true,
    engine: {
      authenticate: async () => ({ kind: "none" as const }),
      runQueries: async (qs) => {
        e.runs += qs.length;
        return {
          ts: e.ts,
          results: qs.map(() => ({ ok: true, value: e.value, logLines: [] })),
          reads: qs.map(() => null),
        };
      },
      runMutation: async () => ({ ok: true, value: null, logLines: [], ts: e.ts }),
      runAction: async () => ({ ok: true, value: null, logLines: [] }),
      latestTs: () => e.ts,
      invalidates: () => e.touches,
    },
  };
  return e;
}

async function serve(e: SyncEngine, timing = { protocolPingMs: 15_000, wsPingMs: 5_000, clientTimeoutMs: 120_000 }) {
  sync = createSyncServer(e, timing);
  http = createServer((_q, r) => r.writeHead(404).end());
  http.on("upgrade", (req, socket, head) => sync!.handleUpgrade(req, socket, head));
  await new Promise<void>((ok) => http!.listen(0, "127.0.0.1", ok));
  return `ws://127.0.0.1:${(http.address() as AddressInfo).port}/api/1.48.0/sync`;
}

async function open(url: string, opts: WebSocket.ClientOptions = {}) {
  const ws = new WebSocket(url, opts);
  const got: any[] = [];
  ws.on("message", (d) => got.push(JSON.parse(d.toString())));
  const closed = new Promise<number>((ok) => ws.on("close", (code) => ok(code)));
  await new Promise((ok, fail) => ws.once("open", ok).once("error", fail));
  ws.send(
    JSON.stringify({
      type: "Connect",
      sessionId: "s",
      connectionCount: 0,
      lastCloseReason: null,
      clientTs: Date.now(),
    }),
  );
  return { ws, got, closed };
}

async function until<T>(f: () => T | undefined | false, ms = 5_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}

test("an idle socket gets a protocol Ping; a client that stops answering is dropped", async () => {
  const url = await serve(engine().engine, { protocolPingMs: 100, wsPingMs: 50, clientTimeoutMs: 400 });
  const live = await open(url);
  await until(() => live.got.find((m) => m.type === "Ping"));
  // This one never answers WebSocket pings and sends nothing more.
  const mute = await open(url, { autoPong: false });
  const t0 = Date.now();
  expect(await mute.closed).toBe(1006);
  expect(Date.now() - t0).toBeGreaterThanOrEqual(350);
  // The answering one is still connected.
  expect(live.ws.readyState).toBe(WebSocket.OPEN);
  live.ws.close();
});

test("a commit that touches nothing sends nothing; one that changes a result sends one Transition", async () => {
  const e = engine();
  const url = await serve(e.engine);
  const s = await open(url);
  s.ws.send(
    JSON.stringify({
      type: "ModifyQuerySet",
      baseVersion: 0,
      newVersion: 1,
      modifications: [{ type: "Add", queryId: 0, udfPath: "q:q", args: [{}] }],
    }),
  );
  await until(() => s.got.find((m) => m.type === "Transition"));
  expect(e.runs).toBe(1);
  // Not in the read set: no rerun.
  e.touches = false;
  e.ts = 2n;
  sync!.commit(2n, []);
  // In the read set, same result: a rerun, no Transition.
  e.touches = true;
  e.ts = 3n;
  sync!.commit(3n, []);
  await until(() => e.runs === 2);
  // In the read set, new result: a Transition at the new ts.
  e.value = 2;
  e.ts = 4n;
  sync!.commit(4n, []);
  const t = await until(() => s.got.filter((m) => m.type === "Transition")[1]);
  expect(e.runs).toBe(3);
  expect(t.modifications).toEqual([{ type: "QueryUpdated", queryId: 0, value: 2, logLines: [], journal: null }]);
  expect(decodeTs(t.endVersion.ts)).toBe(4n);
  expect(s.got.filter((m) => m.type === "Transition")).toHaveLength(2);
  s.ws.close();
});
