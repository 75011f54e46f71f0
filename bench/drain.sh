#!/usr/bin/env bash
# Benchmarks side by side with pg_recvlogical; see BENCHMARKS.md.
#   bench/drain.sh [bench.py options]   e.g. --events 1000000 --repeat 2
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
# The profile the container image ships (LTO); ~6 min on 2 cores the first time.
cargo build --profile production --locked -q
exec python3 bench/bench.py "$@"
