#!/usr/bin/env bash
# Local three-node Apache Kafka 4.x cluster (KRaft) on loopback, for replication and fault tests.
# The single broker of deploy/local/kafka.sh stays the default for make run and most tests.
#
#   deploy/local/kafka-cluster.sh start|stop|status|bootstrap
#   deploy/local/kafka-cluster.sh kill N          SIGKILL node N's JVM (a crash: no controlled shutdown)
#   deploy/local/kafka-cluster.sh start-node N    start node N again, on its data
#   deploy/local/kafka-cluster.sh stop-node N     controlled shutdown of node N
#   deploy/local/kafka-cluster.sh restart-node N  stop-node + start-node
#   deploy/local/kafka-cluster.sh leader TOPIC PARTITION   node id of the partition's leader
#   deploy/local/kafka-cluster.sh topics <TopicCommand args>   (e.g. --describe --topic T)
#
# Every node is deploy/local/kafka.sh (same jars in .local/kafka/libs, same config template) with
# its own state directory, ports and node id; all three are combined broker+controller voters
# (static controller.quorum.voters), formatted once with one cluster id:
#
#   node  broker (PLAINTEXT)  controller  state
#   1     127.0.0.1:29091     29191       .local/kafka-cluster/1
#   2     127.0.0.1:29092     29192       .local/kafka-cluster/2
#   3     127.0.0.1:29093     29193       .local/kafka-cluster/3
#
# Defaults for replication factor 3: default.replication.factor=3, min.insync.replicas=2, and the
# internal topics (offsets, transactions, share state) RF 3 / min ISR 2. With one node down,
# acks=all writes still succeed; with two down they fail (NOT_ENOUGH_REPLICAS) and nothing is lost.
#
# kill/start-node/stop-node/restart-node act on the cluster whose nodes answer on these ports, also
# when another checkout started it (its state directory is read from the running nodes).
#
# Environment:
#   KAFKA_CLUSTER_PORT_BASE        broker port of node N = base + N (default 29090)
#   KAFKA_CLUSTER_CONTROLLER_BASE  controller port of node N = base + N (default 29190)
#   KAFKA_CLUSTER_HEAP             heap per node (default 384m)
#   KAFKA_WAIT_TIMEOUT             seconds to wait for a node (default 120 here)
#   PARTNERS_KAFKA_CLUSTER_DIR     state root (default <repo>/.local/kafka-cluster)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OWN_DIR="${PARTNERS_KAFKA_CLUSTER_DIR:-$ROOT/.local/kafka-cluster}"
PORT_BASE="${KAFKA_CLUSTER_PORT_BASE:-29090}"
CONTROLLER_BASE="${KAFKA_CLUSTER_CONTROLLER_BASE:-29190}"
HEAP="${KAFKA_CLUSTER_HEAP:-384m}"
WAIT_TIMEOUT="${KAFKA_WAIT_TIMEOUT:-120}"
NODES=(1 2 3)

log() { printf '[kafka-cluster] %s\n' "$*"; }
die() { printf '[kafka-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

broker_port() { echo $((PORT_BASE + $1)); }
bootstrap() { echo "127.0.0.1:$(broker_port 1),127.0.0.1:$(broker_port 2),127.0.0.1:$(broker_port 3)"; }
voters() { echo "1@127.0.0.1:$((CONTROLLER_BASE + 1)),2@127.0.0.1:$((CONTROLLER_BASE + 2)),3@127.0.0.1:$((CONTROLLER_BASE + 3))"; }

check_node() {
  case "${1:-}" in 1|2|3) ;; *) die "node must be 1, 2 or 3 (got '${1:-}')" ;; esac
}

# cluster_dir: the state root of the cluster on our ports: ours when one of our nodes runs,
# otherwise the one a running node's server.properties lives in, otherwise ours.
cluster_dir() {
  local n pid f props cmd
  for n in "${NODES[@]}"; do
    f="$OWN_DIR/$n/kafka.pid"
    if [ -f "$f" ] && pid="$(cat "$f")" && kill -0 "$pid" 2>/dev/null; then echo "$OWN_DIR"; return 0; fi
  done
  for cmd in /proc/[0-9]*/cmdline; do
    grep -qa -- 'kafka.Kafka' "$cmd" 2>/dev/null || continue
    props="$(tr '\0' '\n' <"$cmd" 2>/dev/null | tail -n 1)" || continue
    case "$props" in */[123]/server.properties) ;; *) continue ;; esac
    [ -r "$props" ] || continue
    n="$(basename "$(dirname "$props")")"
    if grep -q "^listeners=PLAINTEXT://127.0.0.1:$(broker_port "$n")," "$props"; then
      dirname "$(dirname "$props")"
      return 0
    fi
  done
  echo "$OWN_DIR"
}

# node N CMD: run kafka.sh CMD as node N of the cluster.
node() {
  local n="$1"; shift
  local dir="${CLUSTER_DIR:-$OWN_DIR}"
  PARTNERS_KAFKA_DIR="$dir/$n" \
  KAFKA_NAME="kafka-$n" \
  KAFKA_NODE_ID="$n" \
  KAFKA_PORT="$(broker_port "$n")" \
  KAFKA_CONTROLLER_PORT=$((CONTROLLER_BASE + n)) \
  KAFKA_QUORUM_VOTERS="$(voters)" \
  KAFKA_CLUSTER_ID="$(cluster_id "$dir")" \
  KAFKA_REPLICATION=3 \
  KAFKA_MIN_ISR=2 \
  KAFKA_SASL=off \
  KAFKA_HEAP="$HEAP" \
  KAFKA_WAIT_TIMEOUT="$WAIT_TIMEOUT" \
  KAFKA_EXTRA_CONFIG="# cluster node: fewer internal partitions than the 50 default (2 cores, 3 brokers)
offsets.topic.num.partitions=12
transaction.state.log.num.partitions=12
unclean.leader.election.enable=false" \
    bash "$HERE/kafka.sh" "$@"
}

# cluster_id DIR: the id every node is formatted with (made once, kept with the data).
cluster_id() {
  local f="$1/cluster.id"
  if [ ! -s "$f" ]; then
    mkdir -p "$1"
    # 16 random bytes, URL-safe base64 without padding: what StorageTool random-uuid prints
    openssl rand 16 | base64 | tr '+/' '-_' | tr -d '=\n' >"$f.tmp"
    mv "$f.tmp" "$f"
  fi
  cat "$f"
}

cmd_start() {
  local t0=$SECONDS n rc=0
  bash "$HERE/kafka.sh" fetch
  mkdir -p "$OWN_DIR"
  exec 8>"$OWN_DIR/.lock"
  flock 8
  cluster_id "$OWN_DIR" >/dev/null
  # all three at once: a node is ready only when a quorum (2 of 3 controllers) has formed
  local -a pids=()
  for n in "${NODES[@]}"; do node "$n" start 8>&- & pids+=($!); done
  for n in "${NODES[@]}"; do
    wait "${pids[$((n - 1))]}" || { log "node $n failed to start"; rc=1; }
  done
  [ "$rc" -eq 0 ] || exit 1
  log "ready in $((SECONDS - t0))s: bootstrap $(bootstrap) (RF 3, min ISR 2)"
}

cmd_stop() {
  local n rc=0
  local -a pids=()
  for n in "${NODES[@]}"; do node "$n" stop & pids+=($!); done
  for n in "${NODES[@]}"; do wait "${pids[$((n - 1))]}" || rc=1; done
  return "$rc"
}

cmd_status() {
  local n rc=0
  CLUSTER_DIR="$(cluster_dir)"
  for n in "${NODES[@]}"; do node "$n" status || rc=1; done
  if [ "$rc" -eq 0 ]; then
    node 1 tool org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-server "$(bootstrap)" \
      describe --status 2>/dev/null | sed -n 's/^\(LeaderId\|CurrentVoters\|HighWatermark\):*[[:space:]]*/  \1: /p' || true
  fi
  return "$rc"
}

# cmd_leader TOPIC PARTITION: print the node id that leads the partition (-1 when none).
cmd_leader() {
  local topic="${1:-}" part="${2:-}"
  [ -n "$topic" ] && [[ "$part" =~ ^[0-9]+$ ]] || die "usage: leader TOPIC PARTITION"
  local out
  out="$(node 1 tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap)" \
      --describe --topic "$topic" 2>&1)" || die "describe $topic: $out"
  local leader
  leader="$(printf '%s\n' "$out" | awk -v p="$part" '
    { for (i = 1; i < NF; i++) { if ($i == "Partition:") part = $(i+1); if ($i == "Leader:") lead = $(i+1) }
      if (part == p && lead != "") { print lead; exit } part = ""; lead = "" }')"
  [ -n "$leader" ] || die "topic $topic has no partition $part"
  if [ "$leader" = none ]; then echo -1; else echo "$leader"; fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  bootstrap) bootstrap ;;
  kill|start-node|stop-node|restart-node)
    check_node "${2:-}"
    CLUSTER_DIR="$(cluster_dir)"
    [ "$CLUSTER_DIR" = "$OWN_DIR" ] || log "acting on the cluster in $CLUSTER_DIR (it answers on these ports)"
    case "$1" in
      kill) node "$2" kill ;;
      start-node) node "$2" start ;;
      stop-node) node "$2" stop ;;
      restart-node) node "$2" stop; node "$2" start ;;
    esac ;;
  leader) shift; cmd_leader "$@" ;;
  topics) shift; node 1 tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap)" "$@" ;;
  *) echo "usage: $0 start|stop|status|bootstrap | kill N|start-node N|stop-node N|restart-node N | leader TOPIC PARTITION | topics <args>" >&2; exit 2 ;;
esac
