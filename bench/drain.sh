#!/usr/bin/env bash
# Backlog drain, side by side: pg_recvlogical (pgoutput to /dev/null) and
# `projector run` against the Convex-wire null sink, on the same backlog
# from two slots created at the same point. Then end-to-end latency at
# steady rates and Convex efficiency. Prints a Markdown report on stdout.
#
#   bench/drain.sh [EVENTS]        (default 1000000; BENCH_RATES="2000 10000")
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
EVENTS=${1:-${BENCH_EVENTS:-1000000}}
RATES=${BENCH_RATES:-"2000 10000"}
LAT_SECS=${BENCH_LATENCY_SECS:-20}

cargo build --release --locked -q
BIN=$PWD/target/release/projector

work=$(mktemp -d /tmp/projector-bench.XXXXXX)
chown postgres "$work"
cleanup() {
  [ -n "${sink_pid:-}" ] && kill "$sink_pid" 2>/dev/null || true
  runuser -u postgres -- pg_ctl -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
runuser -u postgres -- initdb -D "$work/data" -A trust -U postgres >/dev/null
runuser -u postgres -- pg_ctl -D "$work/data" -l "$work/pg.log" -w -o \
  "-p $port -k $work -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_wal_senders=10 \
   -c max_replication_slots=10 -c shared_buffers=256MB -c max_wal_size=8GB -c synchronous_commit=off" start >/dev/null
URL="postgres://postgres@127.0.0.1:$port/postgres"
psql -q "$URL" -f sql/001_runtime_events.sql >/dev/null
psql -qAt "$URL" -c "SELECT pg_create_logical_replication_slot('bench_recv','pgoutput'); SELECT pg_create_logical_replication_slot('bench_proj','pgoutput');" >/dev/null

echo "preparing a backlog of $EVENTS events with loadgen..." >&2
"$BIN" loadgen --database-url "$URL" --events "$EVENTS" --rate 0 --writers 2 >&2
END=$(psql -qAt "$URL" -c "SELECT pg_current_wal_lsn()")
ROWS=$(psql -qAt "$URL" -c "SELECT count(*) FROM runtime.events")
WAL=$(psql -qAt "$URL" -c "SELECT pg_wal_lsn_diff('$END', restart_lsn) FROM pg_replication_slots WHERE slot_name='bench_proj'")

measure() { # prints "elapsed_s user_s sys_s maxrss_kib"
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
e = time.monotonic() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
if r.returncode != 0:
    sys.exit(f"command failed with {r.returncode}: {sys.argv[1:]}")
print(f"{e:.3f} {u.ru_utime:.3f} {u.ru_stime:.3f} {u.ru_maxrss}")
PY
}

echo "draining with pg_recvlogical..." >&2
read -r r_el r_us r_sy r_rss < <(measure pg_recvlogical -d "$URL" --slot bench_recv --start --endpos "$END" \
  -o proto_version=1 -o publication_names=projector_events -f /dev/null --no-loop)

sink_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
"$BIN" null-sink --port "$sink_port" >/dev/null 2>&1 &
sink_pid=$!
sleep 0.5
echo "draining with projector (null sink)..." >&2
export DATABASE_URL="$URL" CONVEX_URL="http://127.0.0.1:$sink_port" CONVEX_ADMIN_KEY=bench RUST_LOG=warn
read -r p_el p_us p_sy p_rss < <(measure "$BIN" run --slot bench_proj --exit-when-caught-up --metrics-addr 127.0.0.1:0)
stats=$(curl -s "http://127.0.0.1:$sink_port/_stats" || echo '{}')

python3 - "$EVENTS" "$ROWS" "$WAL" "$r_el" "$r_us" "$r_sy" "$r_rss" "$p_el" "$p_us" "$p_sy" "$p_rss" "$stats" <<'PY'
import json, sys
ev, rows, wal = int(sys.argv[1]), int(sys.argv[2]), int(float(sys.argv[3] or 0))
r_el, r_us, r_sy, r_rss = map(float, sys.argv[4:8])
p_el, p_us, p_sy, p_rss = map(float, sys.argv[8:12])
stats = json.loads(sys.argv[12] or "{}")
r_rate, p_rate = rows / r_el, rows / p_el
print(f"### Backlog drain: {rows} events, {wal/1e6:.0f} MB of WAL\n")
print("| consumer | seconds | rows/s | CPU s | CPU µs/event | peak RSS MiB |")
print("|---|---:|---:|---:|---:|---:|")
print(f"| pg_recvlogical (pgoutput → /dev/null) | {r_el:.2f} | {r_rate:,.0f} | {r_us+r_sy:.2f} | {(r_us+r_sy)/rows*1e6:.2f} | {r_rss/1024:.1f} |")
print(f"| projector run (null sink) | {p_el:.2f} | {p_rate:,.0f} | {p_us+p_sy:.2f} | {(p_us+p_sy)/rows*1e6:.2f} | {p_rss/1024:.1f} |")
print(f"\n**ratio projector / pg_recvlogical: {p_rate/r_rate:.2f}×**; projector CPU per million events: {(p_us+p_sy)/rows*1e6:.2f} s\n")
m, w = stats.get("mutations"), stats.get("writes")
if m:
    print(f"Convex efficiency at saturation: {m/rows*1000:.2f} mutations and {w/rows*1000:.1f} document writes per 1,000 events\n")
PY
