#!/usr/bin/env bash
# Local ClickHouse for development and tests (no Docker, no system service).
#
#   deploy/local/clickhouse.sh start|stop|status|wait|restart|kill   (kill = SIGKILL, for fault tests)
#
# Installs clickhouse-server/clickhouse-client from apt when missing (Debian 12 ships 18.16.1),
# then runs the server as the current user with a generated config that keeps everything under
# <repo>/.local/clickhouse/ (git-ignored) and listens on 127.0.0.1 only.
#
# Environment:
#   CLICKHOUSE_TCP_PORT      native protocol port (default 9000)
#   CLICKHOUSE_HTTP_PORT     HTTP port (default 8123)
#   CLICKHOUSE_WAIT_TIMEOUT  seconds to wait for readiness (default 60)
#   CLICKHOUSE_TZ            the server's time zone (default UTC); the project's SQL must give the
#                            same answers whatever it is (tests run one server in a non-UTC zone)
#   PARTNERS_CLICKHOUSE_DIR  state directory (default <repo>/.local/clickhouse); with other ports it
#                            runs a second, independent server (fault tests stop their own one)
#
# Cluster node settings (all unset for the single server; deploy/local/clickhouse-cluster.sh sets them):
#   CLICKHOUSE_INTERSERVER_PORT  interserver HTTP port replicas fetch parts from
#   CLICKHOUSE_ZOOKEEPER         ZooKeeper host:port[,host:port...]; also enables ON CLUSTER DDL
#                                (<distributed_ddl> at /clickhouse/task_queue/ddl)
#   CLICKHOUSE_CLUSTER           cluster name in <remote_servers> (e.g. partners)
#   CLICKHOUSE_CLUSTER_SHARDS    its layout: shards separated by ';', a shard's replicas by ',', each
#                                host:tcp_port (e.g. 127.0.0.1:29001,127.0.0.1:29002;127.0.0.1:29003);
#                                every shard has internal_replication=true (Replicated tables copy)
#   CLICKHOUSE_SHARD / CLICKHOUSE_REPLICA   this node's {shard} and {replica} macros
#   CLICKHOUSE_NAME              log prefix (default clickhouse)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CH_DIR="${PARTNERS_CLICKHOUSE_DIR:-$ROOT/.local/clickhouse}"
TCP_PORT="${CLICKHOUSE_TCP_PORT:-9000}"
HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-8123}"
WAIT_TIMEOUT="${CLICKHOUSE_WAIT_TIMEOUT:-60}"
SERVER_TZ="${CLICKHOUSE_TZ:-UTC}"
PID_FILE="$CH_DIR/clickhouse-server.pid"
LOG_DIR="$CH_DIR/logs"
LOG_FILE="$LOG_DIR/clickhouse-server.log"
ERR_FILE="$LOG_DIR/clickhouse-server.err.log"
OUT_FILE="$LOG_DIR/stdout.log"
INTERSERVER_PORT="${CLICKHOUSE_INTERSERVER_PORT:-}"
ZOOKEEPER="${CLICKHOUSE_ZOOKEEPER:-}"
CLUSTER="${CLICKHOUSE_CLUSTER:-}"
CLUSTER_SHARDS="${CLICKHOUSE_CLUSTER_SHARDS:-}"
SHARD="${CLICKHOUSE_SHARD:-}"
REPLICA="${CLICKHOUSE_REPLICA:-}"
NAME="${CLICKHOUSE_NAME:-clickhouse}"

log() { printf '[%s] %s\n' "$NAME" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$NAME" "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

server_bin() {
  if command -v clickhouse-server >/dev/null 2>&1; then command -v clickhouse-server
  elif [ -x /usr/sbin/clickhouse-server ]; then echo /usr/sbin/clickhouse-server  # not on a user's PATH
  elif [ -x /usr/bin/clickhouse ]; then echo /usr/bin/clickhouse                    # upstream single binary
  else return 1
  fi
}

install_clickhouse() {
  if server_bin >/dev/null && command -v clickhouse-client >/dev/null 2>&1; then return 0; fi
  # one apt run at a time on this machine (cluster nodes, ZooKeeper and the single server start in
  # parallel); whoever waited finds the package installed
  exec 9>"${TMPDIR:-/tmp}/partners-engine-apt.lock"
  flock 9
  if server_bin >/dev/null && command -v clickhouse-client >/dev/null 2>&1; then exec 9>&-; return 0; fi
  log "installing clickhouse-server and clickhouse-client from apt"
  local t0=$SECONDS
  # and wait for apt's own lock should something else hold it
  as_root apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
    --no-install-recommends clickhouse-server clickhouse-client >/dev/null
  log "installed in $((SECONDS - t0))s"
  exec 9>&-
}

pid_alive() {
  [ -f "$PID_FILE" ] || return 1
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # guard against a stale pid file whose pid now belongs to something else
  [ ! -r "/proc/$pid/cmdline" ] || grep -qa -- 'clickhouse' "/proc/$pid/cmdline"
}

# ping: ClickHouse answers on the HTTP port (cheap) and the native port (what the Go client uses).
ping_http() { [ "$(curl -fsS -m 2 "http://127.0.0.1:$HTTP_PORT/ping" 2>/dev/null)" = "Ok." ]; }
query() { clickhouse-client --host 127.0.0.1 --port "$TCP_PORT" --user default --query "$1"; }
ping_native() { [ "$(query 'SELECT 1' 2>/dev/null)" = "1" ]; }
is_up() { ping_http && ping_native; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# cluster_config: the XML a cluster node needs (nothing for the single server).
cluster_config() {
  if [ -z "$INTERSERVER_PORT$ZOOKEEPER$CLUSTER" ]; then
    echo "    <!-- no interserver_http_port: single node, nothing to replicate -->"
    return 0
  fi
  if [ -n "$INTERSERVER_PORT" ]; then
    echo "    <interserver_http_host>127.0.0.1</interserver_http_host>"
    echo "    <interserver_http_port>$INTERSERVER_PORT</interserver_http_port>"
  fi
  if [ -n "$ZOOKEEPER" ]; then
    local hp i=0
    echo "    <zookeeper>"
    for hp in ${ZOOKEEPER//,/ }; do
      i=$((i + 1))
      echo "        <node index=\"$i\"><host>${hp%:*}</host><port>${hp##*:}</port></node>"
    done
    echo "        <session_timeout_ms>30000</session_timeout_ms>"
    echo "        <operation_timeout_ms>10000</operation_timeout_ms>"
    echo "    </zookeeper>"
    echo "    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>"
  fi
  if [ -n "$SHARD$REPLICA" ]; then
    echo "    <macros><shard>$SHARD</shard><replica>$REPLICA</replica></macros>"
  fi
  if [ -n "$CLUSTER" ]; then
    local shard hp
    echo "    <remote_servers>"
    echo "        <$CLUSTER>"
    for shard in ${CLUSTER_SHARDS//;/ }; do
      echo "            <shard>"
      echo "                <internal_replication>true</internal_replication>"
      for hp in ${shard//,/ }; do
        echo "                <replica><host>${hp%:*}</host><port>${hp##*:}</port></replica>"
      done
      echo "            </shard>"
    done
    echo "        </$CLUSTER>"
    echo "    </remote_servers>"
  fi
}

write_config() {
  mkdir -p "$CH_DIR"/{data,tmp,user_files,format_schemas,logs}
  # 18.16 uses the <yandex> root element (newer servers accept it too).
  cat >"$CH_DIR/config.xml" <<EOF
<?xml version="1.0"?>
<!-- generated by deploy/local/clickhouse.sh; edits are overwritten on start -->
<yandex>
    <logger>
        <level>information</level>
        <log>$LOG_FILE</log>
        <errorlog>$ERR_FILE</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>

    <listen_host>127.0.0.1</listen_host>
    <tcp_port>$TCP_PORT</tcp_port>
    <http_port>$HTTP_PORT</http_port>
$(cluster_config)

    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>

    <path>$CH_DIR/data/</path>
    <tmp_path>$CH_DIR/tmp/</tmp_path>
    <user_files_path>$CH_DIR/user_files/</user_files_path>
    <format_schema_path>$CH_DIR/format_schemas/</format_schema_path>

    <users_config>$CH_DIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>$SERVER_TZ</timezone>
    <mlock_executable>false</mlock_executable>

    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>

    <query_log>
        <database>system</database>
        <table>query_log</table>
        <partition_by>toYYYYMM(event_date)</partition_by>
        <flush_interval_milliseconds>7500</flush_interval_milliseconds>
    </query_log>
</yandex>
EOF
  cat >"$CH_DIR/users.xml" <<'EOF'
<?xml version="1.0"?>
<!-- generated by deploy/local/clickhouse.sh; edits are overwritten on start -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
        <readonly>
            <readonly>1</readonly>
        </readonly>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks replace="replace">
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
}

log_tail() {
  local f
  for f in "$ERR_FILE" "$OUT_FILE" "$LOG_FILE"; do
    if [ -s "$f" ]; then echo "----- tail of $f -----" >&2; tail -n 30 "$f" >&2; fi
  done
}

# pid_running: the pid file's process exists. While it starts, the pid is the launching
# subshell, which goes through several execs (setsid, nohup, the server); a command line
# read during an exec can be empty, so pid_alive's command-line check can call a starting
# server dead (seen: "server process ... exited during startup" for a process listening a moment later).
pid_running() {
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

cmd_wait() {
  local deadline=$((SECONDS + WAIT_TIMEOUT))
  until is_up; do
    if [ -f "$PID_FILE" ] && ! pid_running; then
      log_tail; die "server process $(cat "$PID_FILE") exited during startup"
    fi
    if [ $SECONDS -ge $deadline ]; then
      log_tail
      die "not ready after ${WAIT_TIMEOUT}s (tcp 127.0.0.1:$TCP_PORT, http 127.0.0.1:$HTTP_PORT)"
    fi
    sleep 0.5
  done
}

cmd_start() {
  install_clickhouse
  mkdir -p "$CH_DIR"
  # serialize concurrent starts (several make targets may call up.sh at once)
  exec 8>"$CH_DIR/.lock"
  flock 8

  if pid_alive; then
    cmd_wait
    log "already running (pid $(cat "$PID_FILE"), tcp 127.0.0.1:$TCP_PORT, http 127.0.0.1:$HTTP_PORT)"
    return 0
  fi
  if is_up; then
    log "a ClickHouse not started by this script already answers on 127.0.0.1:$TCP_PORT; using it"
    return 0
  fi
  rm -f "$PID_FILE"
  for p in "$TCP_PORT" "$HTTP_PORT" $INTERSERVER_PORT; do
    port_busy "$p" && die "port 127.0.0.1:$p is in use by another process (set CLICKHOUSE_TCP_PORT / CLICKHOUSE_HTTP_PORT / CLICKHOUSE_INTERSERVER_PORT)"
  done

  [ -z "$CLUSTER" ] || [ -n "$CLUSTER_SHARDS" ] || die "CLICKHOUSE_CLUSTER=$CLUSTER needs CLICKHOUSE_CLUSTER_SHARDS"
  write_config
  local bin; bin="$(server_bin)" || die "clickhouse-server not found after install"
  local -a cmd=("$bin")
  [ "$(basename "$bin")" = clickhouse ] && cmd+=(server)
  log "starting ${cmd[*]} (data in ${CH_DIR#"$ROOT"/})"
  local t0=$SECONDS
  echo "===== start $(date -u +%FT%TZ) =====" >>"$OUT_FILE"
  # Foreground server in its own session, detached from this shell; we record its pid.
  (cd "$CH_DIR" && exec setsid nohup "${cmd[@]}" --config-file="$CH_DIR/config.xml" \
      >>"$OUT_FILE" 2>&1 </dev/null 8>&-) &
  echo $! >"$PID_FILE"
  cmd_wait
  log "ready in $((SECONDS - t0))s: version $(query 'SELECT version()'), pid $(cat "$PID_FILE"), tcp 127.0.0.1:$TCP_PORT, http 127.0.0.1:$HTTP_PORT"
}

cmd_stop() {
  if ! pid_alive; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  local pid; pid="$(cat "$PID_FILE")"
  log "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      log "still running after 30s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 0.3
  done
  rm -f "$PID_FILE"
  log "stopped"
}

# cmd_kill: SIGKILL, for fault tests (a crash, not a shutdown).
cmd_kill() {
  if ! pid_alive; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  local pid; pid="$(cat "$PID_FILE")"
  kill -KILL "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  rm -f "$PID_FILE"
  log "killed pid $pid (SIGKILL)"
}

cmd_status() {
  if is_up; then
    if pid_alive; then log "up (pid $(cat "$PID_FILE"), tcp 127.0.0.1:$TCP_PORT, http 127.0.0.1:$HTTP_PORT)"
    else log "up on 127.0.0.1:$TCP_PORT (not started by this script)"
    fi
    return 0
  fi
  if pid_alive; then log "process $(cat "$PID_FILE") alive but not answering"; else log "down"; fi
  return 1
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  wait) cmd_wait; log "ready" ;;
  restart) cmd_stop; cmd_start ;;
  kill) cmd_kill ;;
  *) echo "usage: $0 start|stop|status|wait|restart|kill" >&2; exit 2 ;;
esac
