#!/usr/bin/env bash
# Everything on this machine: a throwaway Postgres, the local Convex backend,
# generated traffic, live progress and a final verification.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo build --release --locked
exec target/release/projector demo "$@"
