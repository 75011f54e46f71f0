#!/usr/bin/env bash
# Supply-chain checks: cargo deny (deny.toml) and npm audit of what ships.
#
# The RustSec advisory database is a git repository on GitHub. Where the
# network reaches only package registries the fetch fails; the advisories
# are then checked against the copy already on disk (its date is printed),
# and with no copy at all this says loudly that they were not checked.
# Licences, bans and sources need no network beyond crates.io.
set -euo pipefail
cd "$(dirname "$0")/.."

# `cargo deny fetch db` exits 0 even when the clone fails: read what it says.
fetch_log=$(cargo deny fetch db 2>&1 || true)
if printf '%s' "$fetch_log" | grep -qiE 'fatal:|error'; then
  echo "supply-chain: the advisory database cannot be fetched here: $(printf '%s' "$fetch_log" | grep -iE 'fatal:|error' | head -n1)"
fi
# Every target's crates, so that `cargo metadata` works offline below.
cargo fetch --locked --quiet
db_root="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
db=$(ls -d "$db_root"/advisory-db-* 2>/dev/null | head -n1 || true)
if [ -n "$db" ] && [ -d "$db/crates" ]; then
  git -C "$db" log -1 --format='supply-chain: advisory database as of %cd' 2>/dev/null || true
  cargo deny --offline --locked check --hide-inclusion-graph
else
  echo "supply-chain: WARNING: advisories NOT checked: no advisory database in $db_root and none can be fetched"
  cargo deny --offline --locked check --hide-inclusion-graph bans licenses sources
fi

# Runtime npm dependencies only (convex/ functions and the local backend);
# dev tools (vitest, convex-test) do not ship. A registry mirror without the
# audit endpoint answers with an error, not a report: said, not failed.
set +e
audit=$(npm audit --omit=dev --json 2>/dev/null)
set -e
printf '%s' "$audit" | node -e '
  let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
    let r; try { r = JSON.parse(s || "{}"); } catch { r = {}; }
    if (r.error || !r.metadata) {
      console.log("supply-chain: WARNING: npm audit NOT run: the registry has no audit endpoint here (" +
        ((r.error && r.error.summary) || r.message || "no report") + ")");
      return;
    }
    const v = r.metadata.vulnerabilities || {};
    const total = Object.values(v).reduce((a, b) => a + b, 0);
    if (total > 0) {
      console.error("supply-chain: npm audit --omit=dev: " + JSON.stringify(v));
      for (const [name, e] of Object.entries(r.vulnerabilities || {}))
        console.error("  " + name + ": " + e.severity + " " + (e.via || []).map(x => x.title || x).join("; "));
      process.exit(1);
    }
    console.log("supply-chain: npm audit --omit=dev: no known vulnerabilities");
  });'
