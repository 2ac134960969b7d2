#!/usr/bin/env bash
# Start the local stack, installing/fetching whatever is missing. Idempotent: services already up
# are left alone (also when another checkout started them on the same ports). Used by make test.
#
#   deploy/local/up.sh        everything the tests use:
#                               ClickHouse 18.16        127.0.0.1:9000 (http 8123)         clickhouse.sh
#                               Kafka 4.x single broker 127.0.0.1:9092, SASL 9094/9095      kafka.sh
#                               SQL conformance engines 127.0.0.1:9410 (non-UTC), chDB     sql-engines.sh
#                               Kafka 3-broker cluster  127.0.0.1:29091-29093              kafka-cluster.sh
#                               ZooKeeper               127.0.0.1:12181                    zookeeper.sh
#                               ClickHouse cluster      127.0.0.1:29001-29003              clickhouse-cluster.sh
#                               Redis                   127.0.0.1:16379                    redis.sh
#                               rate-limit service      127.0.0.1:18081 (http 18082)       ratelimit.sh
#                               (envoyproxy/ratelimit, go install; starts redis.sh itself)
#   deploy/local/up.sh core   all but the two clusters and ZooKeeper (make bench)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

case "${1:-all}" in
  all) parts=(clickhouse kafka sql-engines kafka-cluster clickhouse-cluster ratelimit) ;;
  core) parts=(clickhouse kafka sql-engines ratelimit) ;;
  *) echo "usage: $0 [all|core]" >&2; exit 2 ;;
esac

t0=$SECONDS
# Start everything at once: the apt installs (ClickHouse, ZooKeeper) take turns on a lock, the
# Kafka jars are fetched once (the others wait), and the JVMs and servers start in parallel.
declare -A pids
for p in "${parts[@]}"; do
  "$HERE/$p.sh" start & pids[$p]=$!
done
rc=0
for p in "${parts[@]}"; do
  wait "${pids[$p]}" || { echo "[up] $p failed to start" >&2; rc=1; }
done
[ "$rc" -eq 0 ] || exit "$rc"
echo "[up] local stack ready in $((SECONDS - t0))s: ${parts[*]}"
