#!/usr/bin/env bash
# Benchmarks side by side with pg_recvlogical; see BENCHMARKS.md.
#   bench/drain.sh [bench.py options]   e.g. --events 1000000 --repeat 2
#   bench/drain.sh scenarios [bench/scenarios.py options]   the scenario
#     table (TCP, Unix socket, veth, delayed path, live, Convex model;
#     needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
# The profile the container image ships (LTO); ~6 min on 2 cores the first time.
cargo build --profile production --locked -q
if [ "${1:-}" = scenarios ]; then
  shift
  # The delay scenario's packet delay line (examples/delay_line.rs).
  cargo build --profile production --locked -q --example delay_line
  exec python3 bench/scenarios.py "$@"
fi
exec python3 bench/bench.py "$@"
