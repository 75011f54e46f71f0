#!/usr/bin/env python3
"""Commit -> client latency: from a Postgres commit to the update that the
official Convex client (subscribed over the WebSocket sync protocol, with a
verified RS256 token) receives.

  throwaway Postgres (track_commit_timestamp = on)
     | projector loadgen --rate R --users N
     v
  projector run  ->  local Convex backend  ->  bench/client-subscriber.ts
                                               (one ConvexClient per user:
                                                runs.list, workers.list, inbox.get)

Every event's latency is (arrival of the first update whose document shows
it) - pg_xact_commit_timestamp of its row. Both clocks are this machine's.

  BENCH_BIN=target/release/projector python3 bench/client_latency.py [--rate 200] [--secs 30] [--users 5]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (Postgres, helpers)
from bench import BIN, ROOT, free_port, http_get, log, lsn_int, wait_http  # noqa: E402


class NpmChild:
    """`npm run --silent <script> -- <args>` in its own session; waits for `marker`."""

    def __init__(self, script, args, marker, env=None):
        self.p = subprocess.Popen(["npm", "run", "--silent", script, "--", *args], cwd=ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, start_new_session=True)
        self.seen = []
        end = time.monotonic() + 120
        for line in self.p.stdout:
            self.seen.append(line)
            if marker in line:
                break
            if time.monotonic() > end:
                sys.exit(f"{script} did not start:\n" + "".join(self.seen[-20:]))
        else:
            sys.exit(f"{script} exited before '{marker}':\n" + "".join(self.seen[-20:]))

    def stop(self):
        try:
            os.killpg(self.p.pid, 15)
        except ProcessLookupError:
            pass
        self.p.wait()


def quantile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    i = min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))
    return xs[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--secs", type=int, default=30)
    ap.add_argument("--users", type=int, default=5, help="loadgen users (owners)")
    ap.add_argument("--follow", type=int, default=1,
                    help="users followed by a client (u0..): 1 = one page; 0 = no client (baseline)")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release (or set BENCH_BIN)")
    print(bench.machine())
    pg = bench.Postgres(conf=["track_commit_timestamp = on"])
    web = cx = None
    try:
        pg.sql(open(os.path.join(ROOT, "sql", "001_runtime_events.sql")).read())
        rows = []
        for n in range(a.repeat):
            web = NpmChild("demo-web", ["--port", "0"], "listening on")
            jwt = dict(kv.split("=", 1) for line in web.seen for kv in line.split() if kv.startswith("JWT_"))
            web_url = web.seen[-1].split("listening on", 1)[1].strip()
            cx = bench.LocalConvex(env=jwt)
            rows.append(one_run(pg, a, n, web_url, cx.url, cx.key))
            cx.stop()
            web.stop()
            cx = web = None
        print(report(rows, a))
    finally:
        for c in (cx, web):
            if c:
                c.stop()
        pg.stop()


def one_run(pg, a, n, web_url, convex_url, key):
    slot = f"client_lat_{n}"
    pg.sql(f"SELECT pg_create_logical_replication_slot('{slot}','pgoutput')")
    mport = free_port()
    env = bench.projector_env(pg, convex_url, key)
    proj = subprocess.Popen([BIN, "run", "--slot", slot, "--metrics-addr", f"127.0.0.1:{mport}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    users = ",".join(f"u{k}" for k in range(a.follow))
    obs = []
    ready = threading.Event()
    sub = None
    if a.follow > 0:
        sub = subprocess.Popen(["npx", "tsx", "bench/client-subscriber.ts", "--url", convex_url,
                                "--token-url", f"{web_url}/token", "--users", users],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    else:
        ready.set()

    def read():
        for line in sub.stdout:
            if line.startswith("ready"):
                ready.set()
            elif line.startswith("{"):
                obs.append(json.loads(line))

    if sub:
        threading.Thread(target=read, daemon=True).start()
    murl = f"http://127.0.0.1:{mport}"
    try:
        wait_http(murl + "/healthz")
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                http_get(murl + "/readyz", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        if not ready.wait(60):
            sys.exit("the subscriber never got its first results")
        t0 = time.monotonic()
        subprocess.run([BIN, "loadgen", "--database-url", pg.url, "--rate", str(a.rate),
                        "--duration", f"{a.secs}s", "--users", str(a.users), "--seed", str(7 + n)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        loaded = time.monotonic() - t0
        end_lsn = lsn_int(pg.sql("SELECT pg_current_wal_lsn()"))
        deadline = time.monotonic() + 120
        text = ""
        while time.monotonic() < deadline:
            text = http_get(murl + "/metrics")
            m = re.search(r"^projector_flushed_lsn_bytes (\S+)$", text, re.M)
            if m and float(m.group(1)) >= end_lsn:
                break
            time.sleep(0.2)
        # Let the last transitions arrive.
        last = len(obs)
        for _ in range(50):
            time.sleep(0.2)
            if len(obs) == last:
                break
            last = len(obs)
        ack = bench.histogram(text)
        req = urllib.request.Request(convex_url + "/_stats", headers={"authorization": f"Convex {key}"})
        stats = json.loads(urllib.request.urlopen(req, timeout=5).read())
    finally:
        if sub:
            os.killpg(sub.pid, 15)
            sub.wait()
        proj.terminate()
        proj.wait()
    commits = {}
    for line in pg.sql("SELECT stream_id || ' ' || stream_seq || ' ' || "
                       "(extract(epoch from pg_xact_commit_timestamp(xmin)) * 1000)::text "
                       "FROM runtime.events").splitlines():
        s, q, t = line.rsplit(" ", 2)
        commits[(s, int(q))] = float(t)
    pg.sql(f"SELECT pg_drop_replication_slot('{slot}')")
    pg.sql("TRUNCATE runtime.events")
    lat = []
    for o in obs:
        for q in range(o["from"] + 1, o["to"] + 1):
            c = commits.get((o["stream"], q))
            if c is not None:
                lat.append(o["at"] - c)
    return dict(events=len(commits), loaded=loaded, observed=len(lat), updates=len(obs),
                mutations=stats.get("mutations", 0), queries=stats.get("queries", 0),
                p50=quantile(lat, 0.5), p90=quantile(lat, 0.9), p99=quantile(lat, 0.99),
                max=max(lat) if lat else float("nan"), min=min(lat) if lat else float("nan"),
                ack_p50=bench.quantile(ack, 0.5) * 1000, ack_p99=bench.quantile(ack, 0.99) * 1000)


def report(rows, a):
    out = ["### Commit → client latency (official ConvexClient over the sync protocol)\n",
           f"`bench/client_latency.py --rate {a.rate} --secs {a.secs} --users {a.users} --follow {a.follow}`: "
           f"loadgen owners u0..u{a.users - 1}; {a.follow} client(s) (one per followed user, each "
           "subscribed to runs.list {limit: 200}, workers.list {limit: 200} and inbox.get).\n",
           "| run | events | achieved ev/s | applies/s | events observed | client updates | p50 ms | p90 ms | p99 ms | max ms | commit→ack p50 / p99 ms (projector metric) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for i, r in enumerate(rows, 1):
        out.append(f"| {i} | {r['events']} | {r['events'] / r['loaded']:.0f} | {r['mutations'] / r['loaded']:.0f} | "
                   f"{r['observed']} | {r['updates']} | "
                   f"{r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | "
                   f"{r['ack_p50']:.1f} / {r['ack_p99']:.1f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
