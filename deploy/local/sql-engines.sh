#!/usr/bin/env bash
# The other ClickHouse engines of the SQL conformance suite (schemas/chsql):
# an 18.16 server configured to a non-UTC zone (its own state and ports) and
# current ClickHouse engines through chDB (deploy/local/chdb.sh).
#
#   deploy/local/sql-engines.sh start|stop
#
# Environment: CLICKHOUSE_TZ_TCP_PORT / CLICKHOUSE_TZ_HTTP_PORT (default 9410 / 8533),
# CLICKHOUSE_TZ_ZONE (default Asia/Kolkata), and chdb.sh's CHDB_ENGINES / CHDB_DIR.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

tz_server() {
  CLICKHOUSE_TZ="${CLICKHOUSE_TZ_ZONE:-Asia/Kolkata}" PARTNERS_CLICKHOUSE_DIR="$ROOT/.local/clickhouse-tz" \
    CLICKHOUSE_TCP_PORT="${CLICKHOUSE_TZ_TCP_PORT:-9410}" CLICKHOUSE_HTTP_PORT="${CLICKHOUSE_TZ_HTTP_PORT:-8533}" \
    "$HERE/clickhouse.sh" "$1"
}

case "${1:-}" in
  start)
    tz_server start & tz=$!
    "$HERE/chdb.sh" install & engines=$!
    rc=0
    wait "$tz" || { echo "[sql-engines] ClickHouse (non-UTC zone) failed to start" >&2; rc=1; }
    wait "$engines" || { echo "[sql-engines] chDB engines failed to install" >&2; rc=1; }
    exit "$rc"
    ;;
  stop) tz_server stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
