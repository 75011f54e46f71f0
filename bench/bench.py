#!/usr/bin/env python3
"""Benchmarks of `projector` side by side with pg_recvlogical (stdlib only).

  1. drain:   a backlog of N loadgen events (realistic mix), 2*R slots created
              at the same LSN before loading; each round drains one slot with
              pg_recvlogical (pgoutput -> /dev/null) and the next with
              `projector run --exit-when-caught-up` against the null sink.
              Reports rows/s of both, their ratio (same round), projector CPU
              per event, peak RSS, and mutations / document writes per 1,000
              events (null sink /_stats).
  2. latency: `projector run` following a live loadgen at steady rates;
              commit -> Convex ack p50/p99/max from the
              `projector_commit_to_ack_seconds` histogram (interpolated inside
              buckets, like histogram_quantile; "max" is the upper bound of the
              highest non-empty bucket), against the null sink and, at small
              scale, the local Convex backend.

Usage: bench/bench.py [--events N] [--repeat R] [--rates 2000,10000]
                      [--latency-secs S] [--convex-rates 200,2000]
                      [--convex-secs S] [--skip-drain] [--skip-latency]
                      [--perf FILE]   (record the projector drain with perf)
                      [--transport tcp|unix]  (how both drains reach the server)
                      [--recvlogical-rcvbuf BYTES]  (pg_recvlogical with that window too)
Environment: BENCH_PERF_CALLGRAPH (perf --call-graph, default fp);
BENCH_WRAP="cmd args" runs round 1's projector under a wrapper (e.g.
"strace -f -c -o /tmp/s.txt"; its CPU and RSS figures then include it).
Prints a Markdown report on stdout; progress on stderr.
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BENCH_BIN") or os.path.join(ROOT, "target", "production", "projector")
# The binary that provides the harness, `projector sandbox` (Postgres, the
# local backend) and `loadgen` (the workload): this tree's, so BENCH_BIN may
# be an older build under test on the very same input.
SANDBOX_BIN = os.environ.get("BENCH_SANDBOX_BIN") or os.path.join(
    ROOT, "target", "production", "projector")


# Stream the slot only. Since 9ea43ca a first start over an empty
# generation copies runtime.events' history first, and the null sink keeps
# no state, so every drain would copy the whole backlog and then stream it
# again; pg_recvlogical streams only.
# BENCH_NO_BACKFILL=0: for a build older than the backfill (no such flag).
NO_BACKFILL = [] if os.environ.get("BENCH_NO_BACKFILL") == "0" else ["--no-backfill"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Sandbox:
    """`projector sandbox ...` (`cmd`, maybe behind `ip netns exec`): waits
    for its JSON line of connection facts (`facts`); it runs until its
    stdin closes (`stop()`, or this process ending)."""

    def __init__(self, cmd):
        # Its stderr to a file: a pipe nobody reads could fill and block it.
        self.err = tempfile.TemporaryFile(mode="w+")
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, text=True)
        line = self.p.stdout.readline()
        if not line:
            self.p.wait()
            self.err.seek(0)
            sys.exit(f"{' '.join(cmd)} did not start ({self.p.returncode}):\n"
                     f"{self.err.read()[-3000:]}")
        self.facts = json.loads(line)

    def stop(self):
        if self.p.poll() is None:
            self.p.stdin.close()  # EOF: the sandbox stops what it started and cleans up
            try:
                self.p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


# The bench's server settings, after the sandbox's defaults (later lines win).
PG_CONF = [
    "max_wal_senders = 20",
    "max_replication_slots = 40",
    "wal_sender_timeout = '60s'",
    "fsync = off",
    "synchronous_commit = on",
    "full_page_writes = off",
    "shared_buffers = 256MB",
    "max_wal_size = 16GB",
    "log_min_messages = warning",
]


class Postgres:
    """A throwaway server from `projector sandbox` (the launcher `demo` and
    the tests use: initdb as the postgres OS user, a random superuser
    password, PR_SET_PDEATHSIG, removed on exit). It runs until its stdin
    closes: `stop()`, or this process ending. With `netns` (a bench/netns.py
    Veth), the sandbox runs in that network namespace, listens on its veth
    address, and every client (psql, loadgen, pg_recvlogical, projector)
    reaches it through the veth pair: non-loopback TCP end to end. Its Unix
    socket is a file, so that path works the same either way. `conf`:
    more postgresql.conf lines."""

    def __init__(self, netns=None, conf=()):
        self.netns = netns
        host = netns.inner_ip if netns else "127.0.0.1"
        cmd = [SANDBOX_BIN, "sandbox", "--listen", host]
        for line in PG_CONF + list(conf):
            cmd += ["--conf", line]
        if netns:
            # initdb's lines cover loopback only; the clients come from the
            # host end of the veth pair.
            for db in ("all", "replication"):
                cmd += ["--hba", f"host {db} all {netns.host_ip}/32 scram-sha-256"]
            # `ip netns exec` needs root; the server itself runs as postgres.
            cmd = ["ip", "netns", "exec", netns.name] + cmd
        self.sandbox = Sandbox(cmd)
        facts = self.sandbox.facts
        self.dir = facts["dir"]
        self.data = facts["data"]
        self.port = facts["port"]
        # sslmode=disable: the server has no TLS. (At ad3be29 the default,
        # prefer, fails the SQL connection with "error performing TLS
        # handshake" instead of falling back to plain text.)
        self.url = facts["url"]
        # The same server through its Unix socket (no TCP stack in between).
        self.unix_url = facts["socket_url"]

    def sql(self, q):
        r = subprocess.run(["psql", "-qAtX", self.url, "-c", q], check=True,
                           capture_output=True, text=True)
        return r.stdout.strip()

    def stop(self):
        self.sandbox.stop()


def timed(cmd, env=None, stdout=subprocess.DEVNULL):
    """Runs cmd; returns (elapsed s, user s, sys s, peak RSS KiB, voluntary and
    involuntary context switches) of that child."""
    t = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    el = time.monotonic() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    return el, ru.ru_utime, ru.ru_stime, ru.ru_maxrss, ru.ru_nvcsw, ru.ru_nivcsw


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_http(url, secs=30):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        try:
            return http_get(url, timeout=1)
        except Exception:
            time.sleep(0.1)
    sys.exit(f"{url} did not answer within {secs}s")


class NullSink:
    """`projector null-sink`; `model` = extra flags (e.g. ["--model", "starter"]),
    none = answer at once."""

    def __init__(self, model=()):
        self.port = free_port()
        self.model = list(model)
        self.p = subprocess.Popen([SANDBOX_BIN, "null-sink", "--port", str(self.port)] + self.model,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(self.url + "/_stats")

    def stats(self):
        return json.loads(http_get(self.url + "/_stats"))

    def stop(self):
        self.p.terminate()
        self.p.wait()


def stats_delta(before, after):
    """Counters of the null sink between two /_stats; maxInFlight is a
    high-water mark, kept as is."""
    return {k: (v if k == "maxInFlight" else v - before.get(k, 0)) for k, v in after.items()}


class LocalConvex:
    """The local Convex backend from `projector sandbox --convex` (the
    launcher `demo` and the tests use); `env`: more environment for it
    (e.g. a token issuer's JWT_*)."""

    def __init__(self, env=None):
        cmd = [SANDBOX_BIN, "sandbox", "--no-postgres", "--convex"]
        for k, v in (env or {}).items():
            cmd += ["--convex-env", f"{k}={v}"]
        self.sandbox = Sandbox(cmd)
        self.url = self.sandbox.facts["convex_url"]
        self.key = self.sandbox.facts["convex_admin_key"]

    def stop(self):
        self.sandbox.stop()


def projector_env(pg, convex_url, key="bench", url=None):
    env = dict(os.environ)
    env.update(DATABASE_URL=url or pg.url, CONVEX_URL=convex_url, CONVEX_ADMIN_KEY=key,
               RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    return env


def loadgen(pg, *args):
    subprocess.run([SANDBOX_BIN, "loadgen", "--database-url", pg.url, *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------- drain


def rcvbuf_shim(rcvbuf):
    """Env for pg_recvlogical: none, or the LD_PRELOAD shim that fixes its
    TCP receive buffer (built from bench/rcvbuf_shim.c with cc)."""
    if not rcvbuf:
        return None
    out = os.path.join(tempfile.mkdtemp(prefix="projector-shim."), "rcvbuf_shim.so")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", out,
                    os.path.join(ROOT, "bench", "rcvbuf_shim.c"), "-ldl"], check=True)
    env = dict(os.environ)
    env.update(LD_PRELOAD=out, BENCH_RCVBUF=str(rcvbuf))
    return env


def load_backlog(pg, events, slots):
    """Creates `slots` at the current LSN, then loads a backlog of `events`
    loadgen events; returns (rows, WAL bytes, end LSN)."""
    for name in slots:
        pg.sql(f"SELECT pg_create_logical_replication_slot('{name}','pgoutput')")
    start = pg.sql(f"SELECT confirmed_flush_lsn FROM pg_replication_slots "
                   f"WHERE slot_name='{slots[0]}'")
    log(f"loading a backlog of {events} events (loadgen --rate 0)...")
    t = time.monotonic()
    loadgen(pg, "--events", str(events), "--rate", "0", "--seed", "1")
    log(f"  loaded in {time.monotonic() - t:.1f}s")
    end = pg.sql("SELECT pg_current_wal_lsn()")
    rows = int(pg.sql("SELECT count(*) FROM runtime.events"))
    wal = int(float(pg.sql(f"SELECT pg_wal_lsn_diff('{end}', '{start}')")))
    return rows, wal, end


def drain_recvlogical(stream_url, slot, end, recv_env=None):
    """pg_recvlogical from `slot` to `end` (pgoutput -> /dev/null): timed()."""
    return timed(["pg_recvlogical", "-d", stream_url, "--slot", slot, "--start",
                  "--endpos", end, "-o", "proto_version=1",
                  "-o", "publication_names=projector_events", "-f", "/dev/null",
                  "--no-loop"], env=recv_env)


def drain_projector(pg, stream_url, slot, sink, wrap=None):
    """`projector run --exit-when-caught-up` from `slot` into `sink`:
    (timed(), null sink counters of the drain)."""
    before = sink.stats()
    cmd = (wrap or []) + [BIN, "run", "--slot", slot, "--exit-when-caught-up",
                          "--metrics-addr", "127.0.0.1:0"] + NO_BACKFILL
    pv = timed(cmd, env=projector_env(pg, sink.url, url=stream_url))
    return pv, stats_delta(before, sink.stats())


def drain(pg, events, repeat, perf, transport="tcp", recv_rcvbuf=None):
    # Both drains stream over the same transport.
    stream_url = pg.unix_url if transport == "unix" else pg.url
    recv_env = rcvbuf_shim(recv_rcvbuf)
    slots = [(f"recv_{i}", f"proj_{i}") for i in range(repeat)]
    rows, wal, end = load_backlog(pg, events, [s for pair in slots for s in pair])
    sink = NullSink()
    results = []
    try:
        for i, (rs, ps) in enumerate(slots):
            log(f"round {i + 1}/{repeat}: pg_recvlogical...")
            rv = drain_recvlogical(stream_url, rs, end, recv_env)
            log(f"round {i + 1}/{repeat}: projector run (null sink)...")
            wrap = []
            if os.environ.get("BENCH_WRAP") and i == 0:
                # e.g. BENCH_WRAP="strace -f -c -o /tmp/strace.txt"
                wrap = os.environ["BENCH_WRAP"].split()
            if perf and i == 0:
                wrap = ["perf", "record", "-e", "cpu-clock", "-F",
                        os.environ.get("BENCH_PERF_FREQ", "999"),
                        "--call-graph", os.environ.get("BENCH_PERF_CALLGRAPH", "fp"),
                        "-o", perf, "--"] + wrap
            pv, d = drain_projector(pg, stream_url, ps, sink, wrap)
            results.append((rv, pv, d))
            log(f"  recv {rows / rv[0]:,.0f} rows/s (CPU {(rv[1] + rv[2]) / rows * 1e6:.2f} us/event), "
                f"projector {rows / pv[0]:,.0f} rows/s "
                f"(ratio {rv[0] / pv[0]:.2f}), CPU {(pv[1] + pv[2]) / rows * 1e6:.2f} us/event "
                f"(user {pv[1] / rows * 1e6:.2f}, sys {pv[2] / rows * 1e6:.2f}), "
                f"context switches {pv[4]:,} voluntary / {pv[5]:,} involuntary, "
                f"RSS {pv[3] / 1024:.1f} MiB, {d}")
    finally:
        sink.stop()
    return rows, wal, results


def report_drain(rows, wal, results, perf, transport="tcp", recv_rcvbuf=None):
    via = "a Unix socket" if transport == "unix" else "TCP on 127.0.0.1"
    out = [f"### Backlog drain: {rows:,} events, {wal / 1e6:.0f} MB of WAL, streamed over {via}\n"]
    if recv_rcvbuf:
        out.append(f"(pg_recvlogical ran with a {recv_rcvbuf}-byte receive buffer, "
                   "as projector asks for on loopback: bench/rcvbuf_shim.c)\n")
    if perf:
        out.append("(round 1's projector ran under `perf record`; its figures carry that overhead)\n")
    out.append("| round | pg_recvlogical s | rows/s | CPU µs/event | projector s | rows/s | ratio | "
               "projector CPU s (user+sys) | CPU µs/event | peak RSS MiB | mutations /1k ev | "
               "writes /1k ev |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, (rv, pv, d) in enumerate(results):
        cpu = pv[1] + pv[2]
        out.append(
            f"| {i + 1} | {rv[0]:.2f} | {rows / rv[0]:,.0f} | {(rv[1] + rv[2]) / rows * 1e6:.2f} | "
            f"{pv[0]:.2f} | {rows / pv[0]:,.0f} | "
            f"{rv[0] / pv[0]:.2f}× | {cpu:.2f} | {cpu / rows * 1e6:.2f} | {pv[3] / 1024:.1f} | "
            f"{d['mutations'] / rows * 1000:.2f} | {d['writes'] / rows * 1000:.1f} |")
    ratios = [rv[0] / pv[0] for rv, pv, _ in results]
    cpus = [(pv[1] + pv[2]) / rows * 1e6 for _, pv, _ in results]
    rss = [pv[3] / 1024 for _, pv, _ in results]
    out.append("")
    out.append(f"ratio projector/pg_recvlogical: {min(ratios):.2f}–{max(ratios):.2f}× "
               f"(target ≥ 0.9); projector CPU: {min(cpus):.2f}–{max(cpus):.2f} s per million "
               f"events (target ≤ 2); peak RSS {min(rss):.1f}–{max(rss):.1f} MiB (target ≤ 64)\n")
    return "\n".join(out)


# ---------------------------------------------------------------- latency

BUCKET = re.compile(r'^projector_commit_to_ack_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)$')


def histogram(metrics_text):
    """Cumulative buckets summed over the `projection` label: [(le, count)]."""
    acc = {}
    for line in metrics_text.splitlines():
        m = BUCKET.match(line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            acc[le] = acc.get(le, 0) + float(m.group(2))
    return sorted(acc.items())


def quantile(buckets, q):
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return float("nan")
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / max(c - prev_c, 1e-9))
        prev_le, prev_c = le, c
    return prev_le


def max_bound(buckets):
    total = buckets[-1][1] if buckets else 0
    for le, c in buckets:
        if c >= total:
            return le
    return float("nan")


def lsn_int(s):
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def proc_cpu(pid):
    """User + system CPU seconds of a running process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric_sum(text, name):
    """Sum of a metric's samples over all label sets (0 when absent)."""
    total = 0.0
    for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M):
        total += float(m.group(1))
    return total


# How often the live scenarios sample projector_lag_seconds (BENCH_LAG_SAMPLE_S).
LAG_SAMPLE_S = float(os.environ.get("BENCH_LAG_SAMPLE_S", "0.2"))
# Extra loadgen flags of the live scenarios (BENCH_LIVE_LOADGEN, e.g.
# "--batch 1": one event per transaction instead of the default 50).
LIVE_LOADGEN_ARGS = os.environ.get("BENCH_LIVE_LOADGEN", "").split()


def latency(pg, sink_name, convex_url, key, rate, secs, n, extra_env=None, sink=None,
            url=None):
    """Follows a live loadgen at `rate` events/s for `secs`; returns rates,
    commit -> ack quantiles, CPU per event, the highest lag seen (sampled
    every 0.2 s from projector_lag_seconds) and retries/errors. `url`: how
    the projector reaches the server (default pg.url); `sink`: a NullSink
    whose counters are reported too."""
    slot = f"lat_{sink_name}_{rate}_{n}".replace("-", "_")
    pg.sql(f"SELECT pg_create_logical_replication_slot('{slot}','pgoutput')")
    mport = free_port()
    env = projector_env(pg, convex_url, key, url=url)
    env.update(extra_env or {})
    p = subprocess.Popen([BIN, "run", "--slot", slot, "--metrics-addr", f"127.0.0.1:{mport}"]
                         + NO_BACKFILL,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    murl = f"http://127.0.0.1:{mport}"
    lag_max = [0.0]
    stop_sampling = [False]

    def sample():
        while not stop_sampling[0]:
            try:
                t = http_get(murl + "/metrics", timeout=1)
                m = re.search(r"^projector_lag_seconds (\S+)$", t, re.M)
                if m:
                    lag_max[0] = max(lag_max[0], float(m.group(1)))
            except Exception:
                pass
            time.sleep(LAG_SAMPLE_S)

    import threading
    sampler = threading.Thread(target=sample, daemon=True)
    try:
        wait_http(murl + "/healthz")
        # Ready = connected and streaming.
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                http_get(murl + "/readyz", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        before = sink.stats() if sink else None
        decoded0 = metric_sum(http_get(murl + "/metrics"), "projector_events_decoded_total")
        t0 = time.monotonic()
        cpu0 = proc_cpu(p.pid)
        sampler.start()
        loadgen(pg, "--rate", str(rate), "--duration", f"{secs}s", "--seed", str(rate + n),
                *LIVE_LOADGEN_ARGS)
        loaded = time.monotonic() - t0
        # Wait until every event is acknowledged (flushed LSN reaches the
        # WAL end), so slow sinks are measured in full.
        end_lsn = lsn_int(pg.sql("SELECT pg_current_wal_lsn()"))
        deadline = time.monotonic() + 300
        text = ""
        while time.monotonic() < deadline:
            text = http_get(murl + "/metrics")
            m = re.search(r"^projector_flushed_lsn_bytes (\S+)$", text, re.M)
            if m and float(m.group(1)) >= end_lsn:
                break
            time.sleep(0.5)
        else:
            log("  warning: not caught up after 300 s; figures cover what was acknowledged")
        acked = time.monotonic() - t0
        cpu = proc_cpu(p.pid) - cpu0
        rss = proc_rss_peak(p.pid)
        stop_sampling[0] = True
        sampler.join()
        b = histogram(text)
        count = b[-1][1] if b else 0
        ev = re.search(r"^projector_events_decoded_total (\S+)$", text, re.M)
        decoded = float(ev.group(1)) - decoded0 if ev else 0.0
        achieved = decoded / loaded if ev else None
        cpu_per_event = cpu / decoded if decoded > 0 else None
        return dict(rate=rate, secs=secs, achieved=achieved, count=count,
                    p50=quantile(b, 0.5), p99=quantile(b, 0.99), max=max_bound(b),
                    cpu_per_event=cpu_per_event, decoded=decoded,
                    # events over the time from the first insert to the last ack
                    sustained=decoded / acked if acked > 0 else None,
                    lag_max=lag_max[0], rss_mib=rss,
                    retries=metric_sum(text, "projector_convex_retries_total"),
                    errors=metric_sum(text, "projector_convex_errors_total"),
                    batches=metric_sum(text, "projector_batches_applied_total"),
                    sink=stats_delta(before, sink.stats()) if sink else None)
    finally:
        stop_sampling[0] = True
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        pg.sql(f"SELECT pg_drop_replication_slot('{slot}')")


def proc_rss_peak(pid):
    """Peak RSS (VmHWM) of a running process, MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def report_latency(rows):
    out = ["### Commit → Convex ack latency (steady loadgen rate)\n",
           "| sink | target rate ev/s | achieved ev/s | seconds | observations | p50 ms | p99 ms | "
           "max ≤ ms | projector CPU µs/event |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for sink, r in rows:
        ach = f"{r['achieved']:,.0f}" if r["achieved"] else "?"
        cpu = f"{r['cpu_per_event'] * 1e6:.1f}" if r.get("cpu_per_event") else "?"
        out.append(f"| {sink} | {r['rate']:,} | {ach} | {r['secs']} | {r['count']:.0f} | "
                   f"{r['p50'] * 1e3:.1f} | {r['p99'] * 1e3:.1f} | {r['max'] * 1e3:.0f} | {cpu} |")
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- main


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pgv = subprocess.run(["postgres", "--version"], capture_output=True, text=True).stdout.strip()
    load = open("/proc/loadavg").read().split()[:3]
    return (f"Machine: {os.cpu_count()} cores ({cpu}), {pgv}, "
            f"load average at start {' '.join(load)}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rates", default="2000,10000")
    ap.add_argument("--latency-secs", type=int, default=20)
    ap.add_argument("--latency-repeat", type=int, default=2)
    ap.add_argument("--convex-rates", default="200,2000")
    ap.add_argument("--convex-secs", type=int, default=10)
    ap.add_argument("--skip-drain", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-convex", action="store_true")
    ap.add_argument("--perf", help="perf.data path: record round 1 of the projector drain")
    ap.add_argument("--recvlogical-rcvbuf", type=int, metavar="BYTES",
                    help="give pg_recvlogical's TCP socket this receive buffer (an LD_PRELOAD "
                         "shim), e.g. 65536 as projector asks for on loopback: compares both "
                         "with the same window")
    ap.add_argument("--transport", choices=["tcp", "unix"], default="tcp",
                    help="how both drains reach the server: TCP on 127.0.0.1 (default) "
                         "or its Unix socket")
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --profile production (or set BENCH_BIN)")
    print(machine())
    pg = Postgres()
    try:
        pg.sql(open(os.path.join(ROOT, "sql", "001_runtime_events.sql")).read())
        if not a.skip_drain:
            rows, wal, res = drain(pg, a.events, a.repeat, a.perf, a.transport,
                                   a.recvlogical_rcvbuf)
            print(report_drain(rows, wal, res, a.perf, a.transport, a.recvlogical_rcvbuf),
                  flush=True)
            # The drained backlog would only slow the latency runs' setup.
            for (r, p) in [(f"recv_{i}", f"proj_{i}") for i in range(a.repeat)]:
                pg.sql(f"SELECT pg_drop_replication_slot('{r}'); SELECT pg_drop_replication_slot('{p}')")
        if not a.skip_latency:
            lat = []
            sink = NullSink()
            try:
                for rate in [int(x) for x in a.rates.split(",") if x]:
                    for n in range(a.latency_repeat):
                        log(f"latency: null sink at {rate}/s, run {n + 1}...")
                        r = latency(pg, "null", sink.url, "bench", rate, a.latency_secs, n)
                        log(f"  {r}")
                        lat.append(("null sink", r))
            finally:
                sink.stop()
            if not a.skip_convex:
                for rate in [int(x) for x in a.convex_rates.split(",") if x]:
                    for n in range(a.latency_repeat):
                        # A fresh backend per run: it scans whole tables.
                        cx = LocalConvex()
                        try:
                            log(f"latency: local Convex backend at {rate}/s, run {n + 1}...")
                            r = latency(pg, "convex", cx.url, cx.key, rate, a.convex_secs, n)
                            log(f"  {r}")
                            lat.append(("local Convex backend", r))
                        finally:
                            cx.stop()
            print(report_latency(lat), flush=True)
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
