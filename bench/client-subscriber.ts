/**
 * The client side of bench/client_latency.py: one official ConvexClient per
 * user, each subscribed to what the live page shows (runs.list, workers.list,
 * inbox.get). For every document whose `lastStreamSeq` grew in an update it
 * prints `{"stream", "from", "to", "at"}`: events from+1..to of that stream
 * reached this client at `at` (ms since the epoch, sub-millisecond).
 *
 *   tsx bench/client-subscriber.ts --url <deployment> --token-url <issuer>/token --users u0,u1,…
 *
 * Prints `ready <n>` once every subscription has its first result.
 */
import { ConvexClient } from "convex/browser";
import { api } from "../convex/_generated/api";

function flag(name: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  if (!v) {
    console.error(`--${name} is required`);
    process.exit(2);
  }
  return v;
}

const url = flag("url");
const tokenUrl = flag("token-url");
const users = flag("users").split(",").filter(Boolean);
const now = () => performance.timeOrigin + performance.now();
const quiet = () => {};
const logger = { logVerbose: quiet, log: quiet, warn: quiet, error: (...a: unknown[]) => console.error(...a) };
const seqs = new Map<string, number>();
const clients: ConvexClient[] = [];
let pending = users.length * 3;

function observe(docs: any[], stream: (d: any) => string) {
  const at = now();
  for (const d of docs) {
    const s = stream(d);
    const from = seqs.get(s) ?? 0;
    if (d.lastStreamSeq > from) {
      seqs.set(s, d.lastStreamSeq);
      process.stdout.write(JSON.stringify({ stream: s, from, to: d.lastStreamSeq, at }) + "\n");
    }
  }
}

function first() {
  if (--pending === 0) console.log(`ready ${users.length}`);
}

for (const user of users) {
  const c = new ConvexClient(url, { logger });
  clients.push(c);
  c.setAuth(async () => {
    // No token (issuer gone or refusing) = no identity: the client goes on unauthenticated.
    const res = await fetch(`${tokenUrl}?sub=${encodeURIComponent(user)}`).catch(() => null);
    return res?.ok ? ((await res.json()) as { token: string }).token : null;
  });
  let started = [false, false, false];
  const once = (i: number) => {
    if (!started[i]) {
      started[i] = true;
      first();
    }
  };
  c.onUpdate(api.runs.list, { limit: 200 }, (runs) => {
    once(0);
    observe(runs, (r) => `run:${r.runId}`);
  });
  c.onUpdate(api.workers.list, { limit: 200 }, (workers) => {
    once(1);
    observe(workers, (w) => `worker:${w.workerId}`);
  });
  c.onUpdate(api.inbox.get, { userId: user }, (box) => {
    once(2);
    if (box) observe([box], () => `user:${user}`);
  });
}

const stop = () => Promise.all(clients.map((c) => c.close())).then(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
