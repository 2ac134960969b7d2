#!/usr/bin/env bash
# Local ClickHouse 18.16 cluster on loopback: ZooKeeper + three servers, two shards, the first with
# two replicas. For cluster-mode tests (ReplicatedMergeTree, Distributed, ON CLUSTER DDL).
#
#   deploy/local/clickhouse-cluster.sh start|stop|status
#   deploy/local/clickhouse-cluster.sh stop-node N|start-node N|kill-node N|restart-node N   (N = 1..3)
#   deploy/local/clickhouse-cluster.sh client N [clickhouse-client args...]
#
# Each node is deploy/local/clickhouse.sh with its own state directory and ports; ZooKeeper is
# deploy/local/zookeeper.sh. The cluster is named `partners` in <remote_servers>:
#
#   node  shard  replica  tcp (native)  http   interserver  state
#   1     01     node1    29001         28121  29011        .local/clickhouse-cluster/1
#   2     01     node2    29002         28122  29012        .local/clickhouse-cluster/2
#   3     02     node3    29003         28123  29013        .local/clickhouse-cluster/3
#   ZooKeeper 127.0.0.1:12181 (.local/zookeeper); ON CLUSTER DDL queue /clickhouse/task_queue/ddl
#
# Both shards have internal_replication=true: a Distributed table writes one replica per shard and
# ReplicatedMergeTree copies it. Tables use the macros, e.g.
#   ReplicatedMergeTree('/clickhouse/tables/{shard}/db.table', '{replica}')
#
# stop-node/start-node/kill-node act on the cluster whose servers answer on these ports, also when
# another checkout started it (its state directory is read from the running servers).
#
# Environment:
#   CLICKHOUSE_CLUSTER_TCP_BASE / _HTTP_BASE / _INTERSERVER_BASE   port of node N = base + N
#                                (defaults 29000 / 28120 / 29010)
#   PARTNERS_CLICKHOUSE_CLUSTER_DIR   state root (default <repo>/.local/clickhouse-cluster)
#   ZOOKEEPER_PORT               ZooKeeper client port (default 12181)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OWN_DIR="${PARTNERS_CLICKHOUSE_CLUSTER_DIR:-$ROOT/.local/clickhouse-cluster}"
TCP_BASE="${CLICKHOUSE_CLUSTER_TCP_BASE:-29000}"
HTTP_BASE="${CLICKHOUSE_CLUSTER_HTTP_BASE:-28120}"
INTER_BASE="${CLICKHOUSE_CLUSTER_INTERSERVER_BASE:-29010}"
ZK_PORT="${ZOOKEEPER_PORT:-12181}"
CLUSTER_NAME=partners
NODES=(1 2 3)

log() { printf '[clickhouse-cluster] %s\n' "$*"; }
die() { printf '[clickhouse-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

tcp_port() { echo $((TCP_BASE + $1)); }
shard_of() { if [ "$1" -le 2 ]; then echo 01; else echo 02; fi; }
shards_spec() { echo "127.0.0.1:$(tcp_port 1),127.0.0.1:$(tcp_port 2);127.0.0.1:$(tcp_port 3)"; }

check_node() {
  case "${1:-}" in 1|2|3) ;; *) die "node must be 1, 2 or 3 (got '${1:-}')" ;; esac
}

# cluster_dir: the state root of the cluster on our ports: ours when one of our nodes runs,
# otherwise the one a running server's --config-file points into, otherwise ours.
cluster_dir() {
  local n pid f dir cmd
  for n in "${NODES[@]}"; do
    f="$OWN_DIR/$n/clickhouse-server.pid"
    if [ -f "$f" ] && pid="$(cat "$f")" && kill -0 "$pid" 2>/dev/null; then echo "$OWN_DIR"; return 0; fi
  done
  for cmd in /proc/[0-9]*/cmdline; do
    f="$(tr '\0' '\n' <"$cmd" 2>/dev/null | sed -n 's/^--config-file=\(.*\/[123]\/config.xml\)$/\1/p' | head -n 1)" || continue
    [ -n "$f" ] && [ -r "$f" ] || continue
    n="$(basename "$(dirname "$f")")"
    if grep -q "<tcp_port>$(tcp_port "$n")</tcp_port>" "$f"; then
      dir="$(dirname "$(dirname "$f")")"
      echo "$dir"
      return 0
    fi
  done
  echo "$OWN_DIR"
}

# node N CMD: run clickhouse.sh CMD for node N with its ports, macros and the cluster layout.
node() {
  local n="$1"; shift
  local dir="${CLUSTER_DIR:-$OWN_DIR}"
  PARTNERS_CLICKHOUSE_DIR="$dir/$n" \
  CLICKHOUSE_NAME="clickhouse-$n" \
  CLICKHOUSE_TCP_PORT="$(tcp_port "$n")" \
  CLICKHOUSE_HTTP_PORT=$((HTTP_BASE + n)) \
  CLICKHOUSE_INTERSERVER_PORT=$((INTER_BASE + n)) \
  CLICKHOUSE_ZOOKEEPER="127.0.0.1:$ZK_PORT" \
  CLICKHOUSE_CLUSTER="$CLUSTER_NAME" \
  CLICKHOUSE_CLUSTER_SHARDS="$(shards_spec)" \
  CLICKHOUSE_SHARD="$(shard_of "$n")" \
  CLICKHOUSE_REPLICA="node$n" \
    bash "$HERE/clickhouse.sh" "$@"
}

cmd_start() {
  local t0=$SECONDS n rc=0
  # everything starts in parallel; the apt installs (ClickHouse, ZooKeeper) take turns on a lock
  bash "$HERE/zookeeper.sh" start & local zk=$!
  # A node that already holds Replicated tables (an earlier run) cannot load them without
  # ZooKeeper and exits; such nodes start only once ZooKeeper answers. Fresh nodes start at once.
  if compgen -G "$OWN_DIR/*/data/metadata/*/*.sql" >/dev/null; then
    wait "$zk" || { log "ZooKeeper failed to start"; exit 1; }
    zk=
  fi
  local -a pids=()
  for n in "${NODES[@]}"; do node "$n" start & pids+=($!); done
  if [ -n "$zk" ]; then wait "$zk" || { log "ZooKeeper failed to start"; rc=1; }; fi
  for n in "${NODES[@]}"; do
    wait "${pids[$((n - 1))]}" || { log "node $n failed to start"; rc=1; }
  done
  [ "$rc" -eq 0 ] || exit 1
  # a server that was already up may not have connected to ZooKeeper yet
  wait_cluster
  log "ready in $((SECONDS - t0))s: cluster $CLUSTER_NAME, nodes 127.0.0.1:$(tcp_port 1),$(tcp_port 2),$(tcp_port 3), ZooKeeper 127.0.0.1:$ZK_PORT"
}

# wait_cluster: every node lists the cluster and reaches ZooKeeper.
wait_cluster() {
  local n deadline=$((SECONDS + 60)) got
  for n in "${NODES[@]}"; do
    until got="$(clickhouse-client --host 127.0.0.1 --port "$(tcp_port "$n")" --query \
        "SELECT count() FROM system.clusters WHERE cluster = '$CLUSTER_NAME'; SELECT count() > 0 FROM system.zookeeper WHERE path = '/'" \
        --multiquery 2>/dev/null | tr '\n' ' ')" && [ "$got" = "3 1 " ]; do
      [ $SECONDS -lt $deadline ] || die "node $n does not see cluster $CLUSTER_NAME and ZooKeeper after 60s (got: ${got:-no answer})"
      sleep 0.5
    done
  done
}

cmd_stop() {
  local n rc=0
  for n in "${NODES[@]}"; do node "$n" stop & done
  wait || rc=1
  bash "$HERE/zookeeper.sh" stop || rc=1
  return "$rc"
}

cmd_status() {
  local n rc=0
  bash "$HERE/zookeeper.sh" status || rc=1
  CLUSTER_DIR="$(cluster_dir)"
  for n in "${NODES[@]}"; do node "$n" status || rc=1; done
  return "$rc"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  stop-node|start-node|kill-node|restart-node)
    check_node "${2:-}"
    CLUSTER_DIR="$(cluster_dir)"
    [ "$CLUSTER_DIR" = "$OWN_DIR" ] || log "acting on the cluster of ${CLUSTER_DIR%/.local/*} (it answers on these ports)"
    case "$1" in
      stop-node) node "$2" stop ;;
      start-node) node "$2" start ;;
      kill-node) node "$2" kill ;;
      restart-node) node "$2" stop; node "$2" start ;;
    esac ;;
  client)
    check_node "${2:-}"; n="$2"; shift 2
    exec clickhouse-client --host 127.0.0.1 --port "$(tcp_port "$n")" "$@" ;;
  *) echo "usage: $0 start|stop|status | stop-node N|start-node N|kill-node N|restart-node N | client N [args]" >&2; exit 2 ;;
esac
