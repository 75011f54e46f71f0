#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust tests (real Postgres, the real
# Convex functions behind the local backend), the Convex vitest suite, and the
# deployment files; then the server-facing tests on every other supported
# PostgreSQL major (scripts/test-pg-versions.sh). This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== npm test (convex/ functions and local backend, vitest + convex-test)"
npm test
echo "== supply chain: cargo deny (advisories, licences, bans, sources), npm audit"
scripts/supply-chain.sh
echo "== deploy files"
if [ -x deploy/check.sh ]; then deploy/check.sh; fi
echo "== cargo test (PostgreSQL 15: every test)"
cargo test --locked -- --test-threads "${PROJECTOR_TEST_THREADS:-4}"
# The server-facing tests on PostgreSQL 14, 16, 17 and 18 (npm's server
# binaries; PROJECTOR_PG_MAJORS="" skips them).
scripts/test-pg-versions.sh
