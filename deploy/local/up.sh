#!/usr/bin/env bash
# Start the local stack (ClickHouse + Kafka), installing/fetching whatever is missing.
# Idempotent: services already up are left alone. Used by `make test` and `make run`.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

t0=$SECONDS
# Start both at once (apt install and the mvn fetch overlap on a cold machine).
"$HERE/clickhouse.sh" start & ch=$!
"$HERE/kafka.sh" start & kf=$!
"$HERE/sql-engines.sh" start & sql=$!
rc=0
wait "$ch" || { echo "[up] ClickHouse failed to start" >&2; rc=1; }
wait "$kf" || { echo "[up] Kafka failed to start" >&2; rc=1; }
wait "$sql" || { echo "[up] SQL conformance engines failed to start" >&2; rc=1; }
[ "$rc" -eq 0 ] || exit "$rc"
echo "[up] local stack ready in $((SECONDS - t0))s: ClickHouse 127.0.0.1:${CLICKHOUSE_TCP_PORT:-9000} (http ${CLICKHOUSE_HTTP_PORT:-8123}), Kafka 127.0.0.1:${KAFKA_PORT:-9092}, ClickHouse (${CLICKHOUSE_TZ_ZONE:-Asia/Kolkata}) 127.0.0.1:${CLICKHOUSE_TZ_TCP_PORT:-9410}, chDB engines in .local/chdb"
