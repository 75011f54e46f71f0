#!/usr/bin/env python3
"""The scenario table of BENCHMARKS.md: `projector` and `pg_recvlogical`
on the same backlog over each transport, live following, and the Convex
model of the null sink (`projector null-sink --model starter`).

Scenarios (each drain round runs pg_recvlogical, then projector, on slots
created at the same LSN before the backlog was loaded; the scenarios take
turns round by round, so a disturbance hits one round of each, not every
round of one):
  tcp         TCP on 127.0.0.1 (projector asks for a 64 KiB window there)
  unix        the server's Unix socket
  veth        Postgres in its own network namespace behind a veth pair
              (bench/netns.py): non-loopback TCP end to end, auto-tuned
              window; once uncapped and once capped by htb (--veth-rate)
  veth-gro    the same uncapped, with GRO on both veth ends (`ethtool -K
              gro on`), as a real NIC merges segments; not in the default
              list (needs ethtool)
  unix-relay  a Unix socket served by a relay to the server's TCP port
              (socat, as the Cloud SQL Auth Proxy serves its socket: it
              reads the server's stream and writes it on in large chunks);
              not in the default list (needs socat)
  delay       Postgres in its own namespace behind a TUN pair joined by
              examples/delay_line, which holds every packet for half the
              round trip each way (this kernel has no netem): one drain
              pair per --delays RTT; the row's sink column gives the delay
              line's own CPU per event (it shares the two cores) and the
              round trip measured by TCP connects. What it distorts: see
              bench/netns.py DelayedPath. Needs `cargo build --profile
              production --example delay_line`
  model       projector's drain into the Convex model (no pg_recvlogical
              counterpart: it measures the sink's limits, not the source)
  live        `projector run` following loadgen at each --rates, null sink
              answering at once, then the Convex model
  live-delay  the same (null sink) over the delayed path at --live-delay
              ms RTT: loadgen and projector both reach Postgres through it,
              so commit -> ack includes the WAL's one-way trip

Usage: bench/scenarios.py [--events 300000] [--rounds 2] [--veth-rate 1gbit]
                          [--rates 2000,10000] [--live-secs 15]
                          [--model-flags "--model starter"] [--only tcp,unix,...]
                          [--delays 0,1,4] [--live-delay 1]
Needs root for the veth and delay scenarios. Prints Markdown on stdout, progress on stderr.
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from bench import log  # noqa: E402
from netns import DelayedPath, Veth  # noqa: E402

SCENARIOS = ["tcp", "unix", "veth", "veth-capped", "delay", "model", "live", "live-model",
             "live-delay"]
# Run only when asked (--only): they need more than root.
EXTRA_SCENARIOS = ["veth-gro", "unix-relay"]


class Relay:
    """socat: a Unix socket in its own directory relaying to the server's
    TCP port, one relayed connection per client, 128 KiB reads."""

    def __init__(self, pg):
        if not shutil.which("socat"):
            sys.exit("the unix-relay scenario needs socat (apt-get install socat)")
        self.dir = tempfile.mkdtemp(prefix="projector-relay.")
        os.chmod(self.dir, 0o755)
        path = os.path.join(self.dir, f".s.PGSQL.{pg.port}")
        self.p = subprocess.Popen(
            ["socat", "-b", "131072", f"UNIX-LISTEN:{path},fork,mode=777",
             f"TCP:127.0.0.1:{pg.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(path):
                break
            time.sleep(0.05)
        u = urllib.parse.urlsplit(pg.url)
        # Through TCP the server asks for the password: keep the URL's.
        self.url = (f"postgres://{u.username}:{u.password}@/{u.path.lstrip('/')}"
                    f"?host={self.dir}&port={pg.port}&sslmode=disable")

    def stop(self):
        self.p.terminate()
        self.p.wait()


def commit():
    root = bench.ROOT
    head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return head + (" (with uncommitted changes)" if dirty else "")


def per_event(rows, t):
    return t / rows * 1e6


def drain_row(name, rows, rv, pv, d):
    """One table row of a drain round (rv is None: no pg_recvlogical)."""
    cpu = pv[1] + pv[2]
    row = dict(scenario=name, rows=rows, proj_s=pv[0], proj_rate=rows / pv[0],
               cpu=per_event(rows, cpu), user=per_event(rows, pv[1]), sys=per_event(rows, pv[2]),
               rss=pv[3] / 1024, sink=d)
    if rv:
        row.update(recv_s=rv[0], recv_rate=rows / rv[0], recv_cpu=per_event(rows, rv[1] + rv[2]),
                   ratio=rv[0] / pv[0])
    return row


def flag_value(flags, name, default):
    return float(flags[flags.index(name) + 1]) if name in flags else default


def model_figures(rows, d, model_flags):
    """What the model allows for this traffic: the write budget over the
    bytes an event costs in applied requests (the budget binds the drain:
    4 batches in flight at 20 ms + 20 µs/doc would carry far more)."""
    budget = flag_value(model_flags, "--write-bytes-per-sec", 4 * 2**20)
    bpe = d.get("appliedBytes", 0) / rows if rows else float("nan")
    return dict(bytes_per_event=bpe, capacity=budget / bpe if bpe else float("nan"))


def mutation_latency_ms(r, model_flags):
    """The model's latency of the live run's mean apply (base + per-doc)."""
    d = r.get("sink") or {}
    ok = d.get("mutations", 0) - d.get("rejectedConcurrency", 0) - d.get("rejectedWrites", 0) \
        - d.get("occConflicts", 0)
    docs = (d.get("writes", 0) + d.get("deadLetters", 0)) / ok if ok > 0 else 0
    base = flag_value(model_flags, "--latency-ms", 20.0)
    per_doc = flag_value(model_flags, "--latency-per-doc-us", 20.0)
    return base + per_doc * docs / 1e3


def fmt(v, spec, none="—"):
    return none if v is None else format(v, spec)


def report_drains(rows_list, model_flags):
    out = ["| scenario | round | pg_recvlogical rows/s | its CPU µs/event | projector rows/s | "
           "ratio | projector CPU µs/event (user + sys) | peak RSS MiB | sink |",
           "|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in rows_list:
        d = r["sink"]
        extra = ""
        if r["scenario"] == "model":
            m = model_figures(r["rows"], d, model_flags)
            extra = (f"{d['mutations']} mutations, refused {d['rejectedConcurrency']} (slots) + "
                     f"{d['rejectedWrites']} (TooManyWrites), {d['occConflicts']} OCC, "
                     f"≤ {d['maxInFlight']} at once; applied "
                     f"{d.get('appliedBytes', 0) / r['proj_s'] / 2**20:.2f} MiB/s "
                     f"({m['bytes_per_event']:.0f} B/event); write-budget capacity "
                     f"{m['capacity']:,.0f} ev/s, sustained {r['proj_rate'] / m['capacity']:.0%} of it")
        if "rtt_ms" in r:
            extra = (f"connect RTT {r['rtt_ms']:.2f} ms (median of 20); delay line CPU "
                     f"{r['line_recv']:.2f} µs/event serving pg_recvlogical, "
                     f"{r['line_proj']:.2f} serving projector")
        out.append(
            f"| {r['scenario']} | {r['round']} | {fmt(r.get('recv_rate'), ',.0f')} | "
            f"{fmt(r.get('recv_cpu'), '.2f')} | {r['proj_rate']:,.0f} | "
            f"{fmt(r.get('ratio'), '.2f')}{'×' if r.get('ratio') else ''} | "
            f"{r['cpu']:.2f} ({r['user']:.2f} + {r['sys']:.2f}) | {r['rss']:.1f} | {extra} |")
    return "\n".join(out) + "\n"


def report_live(rows, model_flags):
    out = ["| scenario | target ev/s | achieved ev/s | sustained ev/s (to last ack) | "
           "commit→ack p50 ms | p99 ms | max ≤ ms | lag max s | CPU µs/event | peak RSS MiB | "
           "batches | retries | sink |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in rows:
        d = r.get("sink") or {}
        extra = ""
        if name.startswith("model"):
            extra = (f"refused {d.get('rejectedConcurrency', 0)} + {d.get('rejectedWrites', 0)}, "
                     f"{d.get('occConflicts', 0)} OCC, ≤ {d.get('maxInFlight', 0)} at once; "
                     f"model latency of the mean apply {mutation_latency_ms(r, model_flags):.1f} ms")
        cpu = r.get("cpu_per_event")
        out.append(
            f"| {name} | {r['rate']:,} | {fmt(r['achieved'], ',.0f')} | {fmt(r['sustained'], ',.0f')} | "
            f"{r['p50'] * 1e3:.1f} | {r['p99'] * 1e3:.1f} | {r['max'] * 1e3:.0f} | "
            f"{r['lag_max']:.2f} | {fmt(cpu * 1e6 if cpu else None, '.1f')} | {r['rss_mib']:.1f} | "
            f"{r['batches']:.0f} | {r['retries']:.0f} | {extra} |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--veth-rate", default="1gbit")
    ap.add_argument("--delays", default="0,1,4",
                    help="round trips of the delay scenario, in ms (0: the TUN path alone, a control)")
    ap.add_argument("--live-delay", type=float, default=1.0,
                    help="round trip of the live-delay scenario, in ms")
    ap.add_argument("--rates", default="2000,10000")
    ap.add_argument("--live-secs", type=int, default=15)
    ap.add_argument("--model-flags", default="--model starter",
                    help="null-sink flags of the Convex model")
    ap.add_argument("--model-env", default="",
                    help="extra projector env in the model scenarios, e.g. "
                         "PROJECTOR_MAX_INFLIGHT_BATCHES=32")
    ap.add_argument("--only", default=",".join(SCENARIOS))
    a = ap.parse_args()
    only = set(a.only.split(","))
    unknown = only - set(SCENARIOS) - set(EXTRA_SCENARIOS)
    if unknown:
        sys.exit(f"unknown scenarios {sorted(unknown)}; known: {SCENARIOS + EXTRA_SCENARIOS}")
    if not os.path.exists(bench.BIN):
        sys.exit("build first: cargo build --profile production (or set BENCH_BIN)")
    model_flags = shlex.split(a.model_flags)
    model_env = dict(kv.split("=", 1) for kv in a.model_env.split() if "=" in kv)
    rates = [int(x) for x in a.rates.split(",") if x]
    delays = [float(x) for x in a.delays.split(",") if x] if "delay" in only else []
    R = a.rounds
    print(bench.machine())
    print(f"Build: {bench.BIN} at commit {commit()}; {a.events:,} events per backlog, "
          f"{R} rounds; Convex model: `null-sink {a.model_flags}`"
          f"{'; projector ' + a.model_env if a.model_env else ''}\n", flush=True)

    schema = open(os.path.join(bench.ROOT, "sql", "001_runtime_events.sql")).read()
    host_drains = [s for s in ("tcp", "unix", "unix-relay", "model") if s in only]
    ns_drains = [s for s in ("veth", "veth-capped", "veth-gro") if s in only]
    pg = pgn = pgd = veth = path = relay = None
    sinks = []
    drains, live = [], []
    try:
        pg = bench.Postgres()
        pg.sql(schema)
        if ns_drains:
            veth = Veth().up()
            pgn = bench.Postgres(netns=veth)
            pgn.sql(schema)

        if delays or "live-delay" in only:
            path = DelayedPath(delays[0] if delays else a.live_delay).up()
            pgd = bench.Postgres(netns=path)
            pgd.sql(schema)

        def slot_names(scen, r):
            s = scen.replace("-", "_")
            return (f"{s}_recv_{r}", f"{s}_proj_{r}")

        def backlog(server, scens, label):
            """Slots for every round of `scens`, then the backlog: (rows, end LSN)."""
            names = [n for s in scens for r in range(R) for n in slot_names(s, r)]
            rows, wal, end = bench.load_backlog(server, a.events, names)
            log(f"{label} backlog: {rows:,} events, {wal / 1e6:.0f} MB of WAL")
            print(f"{label.capitalize()} server backlog: {rows:,} events, {wal / 1e6:.0f} MB of WAL\n")
            return rows, end

        if host_drains:
            rows, end = backlog(pg, host_drains, "host")
        if ns_drains:
            nrows, nend = backlog(pgn, ns_drains, "namespace")
        if delays:
            drows, dend = backlog(pgd, [f"delay{ms:g}" for ms in delays], "delayed-path")

        sink = bench.NullSink()
        sinks.append(sink)
        msink = bench.NullSink(model_flags) if ("model" in only or "live-model" in only) else None
        if msink:
            sinks.append(msink)

        for r in range(R):
            for scen in host_drains + ns_drains:
                rs, ps = slot_names(scen, r)
                log(f"round {r + 1}/{R}: {scen}")
                if scen == "model":
                    pv, d = drain_with_env(pg, pg.url, ps, msink, model_env)
                    drains.append(dict(drain_row(scen, rows, None, pv, d), round=r + 1))
                    log(f"  {drains[-1]}")
                    continue
                if scen in ("tcp", "unix", "unix-relay"):
                    server, n, e = pg, rows, end
                    url = {"unix": pg.unix_url, "tcp": pg.url}.get(scen)
                    if scen == "unix-relay":
                        relay = relay or Relay(pg)
                        url = relay.url
                else:
                    server, n, e = pgn, nrows, nend
                    url = pgn.url
                    veth.set_rate(a.veth_rate if scen == "veth-capped" else None)
                    veth.set_gro(scen == "veth-gro")
                rv = bench.drain_recvlogical(url, rs, e)
                pv, d = bench.drain_projector(server, url, ps, sink)
                drains.append(dict(drain_row(scen, n, rv, pv, d), round=r + 1))
                x = drains[-1]
                log(f"  recv {x['recv_rate']:,.0f}/s, projector {x['proj_rate']:,.0f}/s, "
                    f"ratio {x['ratio']:.2f}, CPU {x['cpu']:.2f} us/event, RSS {x['rss']:.1f}")
                if scen == "veth-capped":
                    log("  " + " ".join(veth.qdisc_stats().split()[:20]))
            for ms in delays:
                rs, ps = slot_names(f"delay{ms:g}", r)
                log(f"round {r + 1}/{R}: delay {ms:g} ms")
                path.set_delay(ms)
                rtt = connect_rtt_ms(path.inner_ip, pgd.port)
                if rtt < ms:
                    sys.exit(f"the delayed path measures {rtt:.2f} ms, under the {ms:g} ms asked: "
                             "the delay line is not delaying")
                c0 = bench.proc_cpu(path.line.pid)
                rv = bench.drain_recvlogical(pgd.url, rs, dend)
                c1 = bench.proc_cpu(path.line.pid)
                pv, d = bench.drain_projector(pgd, pgd.url, ps, sink)
                c2 = bench.proc_cpu(path.line.pid)
                row = drain_row(f"delay {ms:g} ms", drows, rv, pv, d)
                row.update(round=r + 1, rtt_ms=rtt, line_recv=per_event(drows, c1 - c0),
                           line_proj=per_event(drows, c2 - c1))
                drains.append(row)
                log(f"  recv {row['recv_rate']:,.0f}/s, projector {row['proj_rate']:,.0f}/s, "
                    f"ratio {row['ratio']:.2f}, CPU {row['cpu']:.2f} us/event; connect RTT "
                    f"{rtt:.2f} ms; delay line {row['line_recv']:.2f} / {row['line_proj']:.2f} us/event")
        if veth:
            veth.set_rate(None)
            veth.set_gro(False)
        if drains:
            print("### Drains\n")
            print(report_drains(drains, model_flags), flush=True)

        for r in range(R):
            if "live" in only:
                for rate in rates:
                    log(f"live {rate}/s, null sink, run {r + 1}")
                    x = bench.latency(pg, "null", sink.url, "bench", rate, a.live_secs, r, sink=sink)
                    log(f"  {x}")
                    live.append(("null sink", x))
            if "live-model" in only:
                for rate in rates:
                    log(f"live {rate}/s, Convex model, run {r + 1}")
                    x = bench.latency(pg, "model", msink.url, "bench", rate, a.live_secs, r,
                                      extra_env=model_env, sink=msink)
                    log(f"  {x}")
                    live.append(("model", x))
            if "live-delay" in only:
                path.set_delay(a.live_delay)
                for rate in rates:
                    log(f"live {rate}/s, null sink, {a.live_delay:g} ms RTT, run {r + 1}")
                    x = bench.latency(pgd, "delay", sink.url, "bench", rate, a.live_secs, r,
                                      sink=sink)
                    log(f"  {x}")
                    live.append((f"null sink, {a.live_delay:g} ms RTT", x))
        if live:
            print("### Live following (TCP on 127.0.0.1 unless an RTT is given)\n")
            print(report_live(live, model_flags), flush=True)
    finally:
        if relay:
            relay.stop()
        for s in sinks:
            s.stop()
        if pgn:
            pgn.stop()
        if veth:
            veth.down()
        if pgd:
            pgd.stop()
        if path:
            path.down()
        if pg:
            pg.stop()


def connect_rtt_ms(host, port, n=20):
    """Median time of a TCP connect (SYN to SYN-ACK: one round trip)."""
    import socket
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        socket.create_connection((host, port), timeout=5).close()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[n // 2] * 1e3


def drain_with_env(pg, url, slot, sink, extra_env):
    """bench.drain_projector with extra projector environment."""
    if not extra_env:
        return bench.drain_projector(pg, url, slot, sink)
    saved = {k: os.environ.get(k) for k in extra_env}
    os.environ.update(extra_env)
    try:
        return bench.drain_projector(pg, url, slot, sink)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


if __name__ == "__main__":
    main()
