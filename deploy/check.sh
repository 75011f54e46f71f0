#!/usr/bin/env bash
# Static checks of the deployment files; no container engine needed.
#   deploy/check.sh            (from anywhere; CI calls it too)
# Runs: docker-compose config -q, promtool check config/rules (each only if
# installed: apt-get install docker-compose prometheus), JSON syntax of the
# Grafana dashboard.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
# Validation only: compose refuses to render without its required secrets
# (it has no defaults for them on purpose), so give it placeholders here.
export INSTANCE_SECRET=${INSTANCE_SECRET:-check-only}
export POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-check-only}
export PROJECTOR_DB_PASSWORD=${PROJECTOR_DB_PASSWORD:-check-only}
if command -v docker-compose >/dev/null 2>&1; then
  docker-compose -f docker-compose.yml config -q \
    && echo "docker-compose.yml: ok" || status=1
elif docker compose version >/dev/null 2>&1; then
  docker compose -f docker-compose.yml config -q \
    && echo "docker-compose.yml: ok" || status=1
else
  echo "note: docker-compose not installed, compose file not checked (apt-get install docker-compose)"
fi

if command -v promtool >/dev/null 2>&1; then
  promtool check config deploy/prometheus.yml || status=1
  promtool check rules deploy/alerts.yml || status=1
  (cd deploy && promtool test rules alerts_test.yml) || status=1
else
  echo "note: promtool not installed, rules not checked (apt-get install prometheus)"
fi

python3 -m json.tool deploy/grafana/projector.json >/dev/null \
  && echo "deploy/grafana/projector.json: ok" || status=1
exit $status
