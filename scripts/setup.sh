#!/usr/bin/env bash
# Installs what a fresh machine lacks for building, testing and the demo.
# Idempotent: every step checks first. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if ! command -v initdb >/dev/null 2>&1 && [ -z "$pg_bin" ]; then
  need_apt+=(postgresql)
fi
command -v pg_recvlogical >/dev/null 2>&1 || [ -n "$pg_bin" ] || need_apt+=(postgresql-client)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
# The live page's test drives Debian's Chromium (web/page.test.ts).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (Debian packages)"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

# cargo-deny (supply-chain checks in scripts/test.sh), built from crates.io.
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "setup: cargo install --locked cargo-deny (a few minutes on 2 cores)"
  # Pinned: a newer release may need a newer Rust than this machine's.
  cargo install --locked --quiet cargo-deny --version "=0.20.2"
fi
