#!/usr/bin/env bash
# The PostgreSQL version matrix: the tests that exercise the server (the
# replication client, setup, the pipeline end to end, status, verify,
# rebuild, failover and slot invalidation) against every other supported
# major. scripts/test.sh runs the whole suite on 15 (Debian's) first; the
# table of what runs where, and why, is in README.md ("PostgreSQL versions").
#
#   scripts/test-pg-versions.sh                       # 14, 16, 17, 18
#   PROJECTOR_PG_MAJORS="17 18" scripts/test-pg-versions.sh
set -euo pipefail
cd "$(dirname "$0")/.."

majors=${PROJECTOR_PG_MAJORS-14 16 17 18}
# Test modules of tests/main.rs (libtest filters: a test runs when its path
# contains one of them).
modules=(
  source_smoke:: source_decode:: source_errors:: source_slot:: source_status::
  source_setup:: pipeline_e2e:: verify_tamper:: status_exit_codes::
  rebuild_slot_lost:: rebuild_kill:: pg_failover:: slot_idle_timeout::
)
for major in $majors; do
  bin=$(scripts/pg-versions.sh "$major")
  echo "== cargo test: PostgreSQL $major ($("$bin/postgres" --version))"
  PROJECTOR_PG_BIN=$bin cargo test --locked --test main -- \
    --test-threads "${PROJECTOR_TEST_THREADS:-4}" "${modules[@]}"
done
