"""Peak RSS and time of `projector run` on inputs a database can throw at it
(issue #17's figures), side by side with pg_recvlogical on the same WAL.

  delete:  N events, a slot, then one `DELETE FROM runtime.events` of every
           row (a retention job: N violations in one transaction), then 10
           new events; drain to the end.
  big_txn: a slot, then one transaction inserting N events; drain.
  big_row: a slot, 10 events, one 64 MiB row, 10 events; drain (the row is
           read through, never held: --max-event-bytes).
  inboxes: 500 users x 50 notifications with a 2,000-char multi-byte body
           (~200 KB an inbox, ~100 MB in all) projected into the local
           Convex backend; then one transaction marks one notification read
           in every inbox, and a fresh `projector run` (cold cache) drains it:
           every batch hydrates and rewrites large inboxes. Its peak RSS is
           the figure; pg_recvlogical drains the same transaction.

Each drain is `projector run --exit-when-caught-up --no-backfill` into the
null sink (release build), with the default memory settings. Prints a
Markdown table on stdout; progress on stderr.

Usage: bench/rss.py [--events N] [--scenarios delete,big_txn,big_row,inboxes]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def drain_both(pg, sink, slot_recv, slot_proj, end):
    r = bench.drain_recvlogical(pg.url, slot_recv, end)
    p, stats = bench.drain_projector(pg, pg.url, slot_proj, sink)
    return r, p, stats


def slots(pg, name):
    for s in (f"{name}_recv", f"{name}_proj"):
        pg.sql(f"SELECT pg_create_logical_replication_slot('{s}','pgoutput')")
    return f"{name}_recv", f"{name}_proj"


def inboxes(users):
    """The `inboxes` scenario: (what, pg_recvlogical timed(), projector
    timed(), {"mutations": applies of the cold drain})."""
    pg = bench.Postgres()
    convex = bench.LocalConvex()
    try:
        pg.sql(open(os.path.join(bench.ROOT, "sql", "001_runtime_events.sql")).read())
        pg.sql("SELECT pg_create_logical_replication_slot('inb_proj','pgoutput')")
        for n in range(1, 51):
            pg.sql(
                "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload) "
                f"SELECT 'user:u' || i, {n}, 'notification.created', 'u' || i, "
                f"jsonb_build_object('notification_id', 'n{n}', 'title', repeat('t', 200), "
                "'body', repeat('é', 2000)) "
                f"FROM generate_series(1, {users}) i")
        env = bench.projector_env(pg, convex.url, convex.key)
        cmd = [bench.BIN, "run", "--slot", "inb_proj", "--exit-when-caught-up",
               "--metrics-addr", "127.0.0.1:0"] + bench.NO_BACKFILL
        bench.log(f"projecting {users} inboxes of 50 notifications into the local backend...")
        load = bench.timed(cmd, env=env)
        bench.log(f"  {load[0]:.1f} s, peak RSS {load[3] / 1024:.1f} MiB")
        pg.sql("SELECT pg_create_logical_replication_slot('inb_recv','pgoutput')")
        pg.sql(
            "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload) "
            "SELECT 'user:u' || i, 51, 'notification.read', 'u' || i, "
            "jsonb_build_object('notification_id', 'n1') "
            f"FROM generate_series(1, {users}) i")
        end = pg.sql("SELECT pg_current_wal_lsn()")
        r = bench.drain_recvlogical(pg.url, "inb_recv", end)
        p = bench.timed(cmd, env=env)
        what = f"{users} inboxes of ~200 KB, cold cache, one transaction touching each"
        return what, r, p, {"mutations": "—"}
    finally:
        convex.stop()
        pg.stop()


def run(name, events):
    if name == "inboxes":
        return inboxes(int(os.environ.get("BENCH_INBOX_USERS", "500")))
    pg = bench.Postgres()
    sink = bench.NullSink()
    try:
        pg.sql(open(os.path.join(bench.ROOT, "sql", "001_runtime_events.sql")).read())
        bench.loadgen(pg, "--events", "10", "--rate", "0", "--seed", "2")
        if name == "delete":
            bench.loadgen(pg, "--events", str(events), "--rate", "0", "--seed", "1")
            recv, proj = slots(pg, name)
            pg.sql("DELETE FROM runtime.events")
            bench.loadgen(pg, "--events", "10", "--rate", "0", "--seed", "3")
            what = f"DELETE of {events:,} rows"
        elif name == "big_txn":
            recv, proj = slots(pg, name)
            pg.sql(
                "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload) "
                f"SELECT 'run:big' || (i % 1000), i / 1000 + 1, "
                "CASE WHEN i / 1000 = 0 THEN 'run.created' ELSE 'run.step' END, 'u1', "
                "CASE WHEN i / 1000 = 0 THEN '{\"thread_id\":\"t1\",\"title\":\"x\"}'::jsonb "
                "ELSE '{\"name\":\"s\"}'::jsonb END "
                f"FROM generate_series(0, {events - 1}) i")
            what = f"one transaction of {events:,} rows"
        elif name == "big_row":
            recv, proj = slots(pg, name)
            pg.sql(
                "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload) "
                "VALUES ('run:huge', 1, 'run.created', 'u1', jsonb_build_object('thread_id', 't1', "
                "'title', repeat('x', 64 * 1024 * 1024)))")
            bench.loadgen(pg, "--events", "10", "--rate", "0", "--seed", "4")
            what = "one 64 MiB row among 20"
        else:
            sys.exit(f"unknown scenario {name}")
        end = pg.sql("SELECT pg_current_wal_lsn()")
        r, p, stats = drain_both(pg, sink, recv, proj, end)
        return what, r, p, stats
    finally:
        sink.stop()
        pg.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--scenarios", default="delete,big_txn,big_row,inboxes")
    a = ap.parse_args()
    print("| scenario | pg_recvlogical s | projector s | projector peak RSS MiB | "
          "projector CPU s | mutations |")
    print("|---|---|---|---|---|---|")
    for name in a.scenarios.split(","):
        n = a.events if name != "big_txn" else min(a.events, 100_000)
        bench.log(f"== {name} ({n} events)")
        what, r, p, stats = run(name, n)
        print(f"| {what} | {r[0]:.1f} | {p[0]:.1f} | {p[3] / 1024:.1f} | "
              f"{p[1] + p[2]:.1f} | {stats.get('mutations', '?')} |", flush=True)


if __name__ == "__main__":
    main()
