#!/usr/bin/env bash
# Stop the local stack started by up.sh in this checkout (data under .local/ is kept; servers
# another checkout started are left alone).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

rc=0
"$HERE/kafka-cluster.sh" stop & kc=$!
"$HERE/clickhouse-cluster.sh" stop & cc=$!
"$HERE/kafka.sh" stop || rc=1
"$HERE/clickhouse.sh" stop || rc=1
"$HERE/sql-engines.sh" stop || rc=1
"$HERE/ratelimit.sh" stop || rc=1
"$HERE/redis.sh" stop || rc=1
wait "$kc" || rc=1
wait "$cc" || rc=1
exit "$rc"
