#!/usr/bin/env bash
# Benchmarks side by side with pg_recvlogical; see BENCHMARKS.md.
#   bench/drain.sh [bench.py options]   e.g. --events 1000000 --repeat 2
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo build --release --locked -q
exec python3 bench/bench.py "$@"
