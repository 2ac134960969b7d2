#!/usr/bin/env bash
# Stop the local stack started by up.sh (data under .local/ is kept).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

rc=0
"$HERE/kafka.sh" stop || rc=1
"$HERE/clickhouse.sh" stop || rc=1
"$HERE/sql-engines.sh" stop || rc=1
exit "$rc"
