# Sourced by the scripts: puts Debian's PostgreSQL binaries on PATH when
# initdb is not already there (Debian installs them off PATH).
if ! command -v initdb >/dev/null 2>&1; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  [ -n "$pg_bin" ] && export PATH="$pg_bin:$PATH"
fi
