"""Two builds on one backlog, alternated: old, new, old, new, ... each
drain beside its own pg_recvlogical drain of the same WAL, so a difference
between the builds is told from the machine's noise (issue #15's "figures
unchanged within noise"; #20's history of the loopback ratio).

Both builds drain the same slots' backlog from the same server into the
same null sink; the harness (sandbox, loadgen, null sink) is this tree's
build whatever the builds under test are.

Usage:
  bench/alternate.py --old OLD_BIN --new NEW_BIN [--rounds 3] [--events 300000]
                     [--transport tcp|unix] [--old-no-backfill-flag]
                     [--model "--model starter"]

`--old-no-backfill-flag`: the old build predates `--no-backfill` (and its
backfill), so it is run without the flag. `--model`: null-sink flags of
the Convex model (the drains then measure what the model lets through).
Prints a Markdown table.
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--transport", choices=["tcp", "unix"], default="tcp")
    ap.add_argument("--old-no-backfill-flag", action="store_true")
    ap.add_argument("--model", default="", help='null-sink flags, e.g. "--model starter"')
    a = ap.parse_args()
    builds = [("old", a.old, not a.old_no_backfill_flag), ("new", a.new, True)]
    pg = bench.Postgres()
    sink = bench.NullSink(a.model.split())
    try:
        pg.sql(open(os.path.join(bench.ROOT, "sql", "001_runtime_events.sql")).read())
        names = [f"{b}_{kind}_{i}" for i in range(a.rounds) for b, _, _ in builds
                 for kind in ("recv", "proj")]
        rows, wal, end = bench.load_backlog(pg, a.events, names)
        url = pg.unix_url if a.transport == "unix" else pg.url
        results = {b: [] for b, _, _ in builds}
        for i in range(a.rounds):
            for b, binary, flag in builds:
                bench.log(f"round {i + 1}/{a.rounds}, {b}: pg_recvlogical, then {binary}")
                rv = bench.drain_recvlogical(url, f"{b}_recv_{i}", end)
                bench.BIN = binary
                bench.NO_BACKFILL = ["--no-backfill"] if flag else []
                pv, d = bench.drain_projector(pg, url, f"{b}_proj_{i}", sink)
                cpu = (pv[1] + pv[2]) / rows * 1e6
                results[b].append((rv[0] / pv[0], cpu, pv[3] / 1024, rows / pv[0],
                                   d["writes"] / rows * 1000, d["rejectedWrites"],
                                   d["appliedBytes"] / rows))
                bench.log(f"  ratio {rv[0] / pv[0]:.2f}x, CPU {cpu:.2f} us/event, "
                          f"RSS {pv[3] / 1024:.1f} MiB, {d}")
    finally:
        sink.stop()
        pg.stop()
    print(f"Alternated drains over {a.transport}: {rows:,} events, {wal / 1e6:.0f} MB of WAL, "
          f"{a.rounds} rounds each; machine: {bench.machine()}\n")
    if a.model:
        print(f"Into the Convex model: `null-sink {a.model}`\n")
    print("| build | ratio to pg_recvlogical (each round) | median | CPU µs/event (median) | "
          "rows/s (each round) | peak RSS MiB (max) | doc writes /1k events | "
          "TooManyWrites (each round) | applied B/event |")
    print("|---|---|---:|---:|---|---:|---:|---|---:|")
    for b, binary, _ in builds:
        r = results[b]
        print(f"| {b} (`{binary}`) | {', '.join(f'{x[0]:.2f}×' for x in r)} | "
              f"{statistics.median(x[0] for x in r):.2f}× | "
              f"{statistics.median(x[1] for x in r):.2f} | "
              f"{', '.join(f'{x[3]:,.0f}' for x in r)} | {max(x[2] for x in r):.1f} | "
              f"{statistics.median(x[4] for x in r):.0f} | {', '.join(str(x[5]) for x in r)} | "
              f"{statistics.median(x[6] for x in r):.0f} |")


if __name__ == "__main__":
    main()
