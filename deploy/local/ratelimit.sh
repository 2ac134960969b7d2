#!/usr/bin/env bash
# Local global rate-limit service: envoyproxy/ratelimit, the service Envoy's
# envoy.filters.http.ratelimit calls (envoy.service.ratelimit.v3), backed by the Redis of redis.sh.
#
#   deploy/local/ratelimit.sh install|start|stop|status|wait|restart|bin
#
# install: `go install` of the pinned module version from the Go module proxy into
#          <repo>/.local/bin/ratelimit (reinstalled only when RATELIMIT_VERSION changes).
# start:   Redis first (redis.sh), then the service on 127.0.0.1 with its configuration from the
#          partners control plane over xDS (RateLimitConfig resources on listeners.xds, as in
#          production); it starts before the control plane and picks the configuration up as soon
#          as one answers (`make run` / `partners dev`). Tests start their own instances of the
#          same binary against their own control planes (internal/testenv).
# bin:     print the binary's path (installing it if needed).
#
# Environment:
#   RATELIMIT_VERSION       module version of github.com/envoyproxy/ratelimit (default below: the
#                           module proxy has no tagged release newer than 2020, so a pseudo-version)
#   RATELIMIT_GRPC_PORT     gRPC port Envoy calls (default 18081 = partner.rate_limit.service.address)
#   RATELIMIT_HTTP_PORT     HTTP port: /healthcheck, /json (default 18082)
#   RATELIMIT_DEBUG_PORT    debug port: /rlconfig, pprof (default 18083)
#   RATELIMIT_XDS_SERVER    control plane it takes its configuration from (default 127.0.0.1:18000)
#   RATELIMIT_REGION        region it serves (node metadata region=...; default us-east)
#   REDIS_PORT              the Redis it counts in (default 16379, see redis.sh)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VERSION="${RATELIMIT_VERSION:-v1.4.1-0.20260122083618-3fb702589d36}"
MODULE=github.com/envoyproxy/ratelimit
BIN_DIR="$ROOT/.local/bin"
BIN="$BIN_DIR/ratelimit"
MARKER="$BIN_DIR/.ratelimit-version"
RL_DIR="$ROOT/.local/ratelimit"
PID_FILE="$RL_DIR/ratelimit.pid"
LOG_FILE="$RL_DIR/ratelimit.log"
GRPC_PORT="${RATELIMIT_GRPC_PORT:-18081}"
HTTP_PORT="${RATELIMIT_HTTP_PORT:-18082}"
DEBUG_PORT="${RATELIMIT_DEBUG_PORT:-18083}"
XDS_SERVER="${RATELIMIT_XDS_SERVER:-127.0.0.1:18000}"
REGION="${RATELIMIT_REGION:-us-east}"
REDIS_PORT="${REDIS_PORT:-16379}"
WAIT_TIMEOUT="${RATELIMIT_WAIT_TIMEOUT:-30}"

log() { printf '[ratelimit] %s\n' "$*"; }
die() { printf '[ratelimit] ERROR: %s\n' "$*" >&2; exit 1; }

cmd_install() {
  if [ -x "$BIN" ] && [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$VERSION" ]; then return 0; fi
  command -v go >/dev/null 2>&1 || die "go not found (needed to install $MODULE)"
  mkdir -p "$BIN_DIR"
  exec 9>"$BIN_DIR/.ratelimit.lock"
  flock 9
  if [ -x "$BIN" ] && [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$VERSION" ]; then return 0; fi
  log "installing $MODULE/src/service_cmd@$VERSION from the Go module proxy"
  local t0=$SECONDS tmp; tmp="$(mktemp -d)"
  # Outside this module, so our go.mod plays no part; the module's own go.sum is checked
  # against the checksum database.
  (cd "$tmp" && GOBIN="$tmp" GOFLAGS= go install "$MODULE/src/service_cmd@$VERSION") || { rm -rf "$tmp"; die "go install failed"; }
  mv "$tmp/service_cmd" "$BIN"
  rm -rf "$tmp"
  echo "$VERSION" >"$MARKER"
  log "installed $BIN in $((SECONDS - t0))s"
}

health() { curl -fsS -m 2 "http://127.0.0.1:$HTTP_PORT/healthcheck" >/dev/null 2>&1; }

pid_alive() {
  [ -f "$PID_FILE" ] || return 1
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ ! -r "/proc/$pid/cmdline" ] || grep -qa -- 'ratelimit' "/proc/$pid/cmdline"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_running: the pid file's process exists. While it starts, the pid is the launching
# subshell, which goes through several execs (env, setsid, nohup, the server); a command line
# read during an exec can be empty, so pid_alive's command-line check can call a starting
# server dead (seen: "ratelimit 31955 exited during startup" for a process listening a moment later).
pid_running() {
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

cmd_wait() {
  local deadline=$((SECONDS + WAIT_TIMEOUT))
  until health; do
    if [ -f "$PID_FILE" ] && ! pid_running; then
      [ -s "$LOG_FILE" ] && tail -n 30 "$LOG_FILE" >&2
      die "ratelimit $(cat "$PID_FILE") exited during startup"
    fi
    [ $SECONDS -ge $deadline ] && { tail -n 30 "$LOG_FILE" >&2 || true; die "not healthy after ${WAIT_TIMEOUT}s"; }
    sleep 0.2
  done
}

cmd_start() {
  cmd_install
  "$HERE/redis.sh" start
  mkdir -p "$RL_DIR"
  exec 8>"$RL_DIR/.lock"
  flock 8
  if pid_alive; then
    cmd_wait
    log "already running (pid $(cat "$PID_FILE"), grpc 127.0.0.1:$GRPC_PORT)"
    return 0
  fi
  if health; then
    log "a rate-limit service not started by this script already answers on 127.0.0.1:$HTTP_PORT; using it"
    return 0
  fi
  for p in "$GRPC_PORT" "$HTTP_PORT" "$DEBUG_PORT"; do
    port_busy "$p" && die "port 127.0.0.1:$p is in use (set RATELIMIT_GRPC_PORT / _HTTP_PORT / _DEBUG_PORT)"
  done
  rm -f "$PID_FILE"
  # Every listener on loopback; counters in Redis over TCP; configuration over xDS. A request
  # refused by one window does not count in the others (STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT),
  # so a partner refused for exceeding burst_size keeps its requests_per_minute.
  (cd "$RL_DIR" && exec env -i PATH="$PATH" HOME="${HOME:-/tmp}" \
    HOST=127.0.0.1 PORT="$HTTP_PORT" GRPC_HOST=127.0.0.1 GRPC_PORT="$GRPC_PORT" \
    DEBUG_HOST=127.0.0.1 DEBUG_PORT="$DEBUG_PORT" \
    USE_STATSD=false USE_PROMETHEUS=false LOG_LEVEL=warn LOG_FORMAT=json \
    BACKEND_TYPE=redis REDIS_SOCKET_TYPE=tcp REDIS_TYPE=SINGLE REDIS_URL="127.0.0.1:$REDIS_PORT" REDIS_TIMEOUT=1s \
    STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT=true LOCAL_CACHE_SIZE_IN_BYTES=0 \
    CONFIG_TYPE=GRPC_XDS_SOTW CONFIG_GRPC_XDS_SERVER_URL="$XDS_SERVER" \
    CONFIG_GRPC_XDS_NODE_ID="ratelimit-$REGION-local" CONFIG_GRPC_XDS_NODE_METADATA="region=$REGION" \
    FORCE_START_WITHOUT_INITIAL_CONFIG=true XDS_CLIENT_BACKOFF_INITIAL_INTERVAL=2s XDS_CLIENT_BACKOFF_MAX_INTERVAL=10s \
    setsid nohup "$BIN" >>"$LOG_FILE" 2>&1 </dev/null 8>&- 9>&-) &
  echo $! >"$PID_FILE"
  cmd_wait
  log "ready: pid $(cat "$PID_FILE"), grpc 127.0.0.1:$GRPC_PORT (config from xDS at $XDS_SERVER, region $REGION), redis 127.0.0.1:$REDIS_PORT"
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
  local deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; break; fi
    sleep 0.2
  done
  rm -f "$PID_FILE"
  log "stopped"
}

cmd_status() {
  if health; then
    if pid_alive; then log "up (pid $(cat "$PID_FILE"), grpc 127.0.0.1:$GRPC_PORT)"; else log "up on 127.0.0.1:$HTTP_PORT (not started by this script)"; fi
    return 0
  fi
  log "down"
  return 1
}

case "${1:-}" in
  install) cmd_install ;;
  bin) cmd_install >&2; echo "$BIN" ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  wait) cmd_wait; log "ready" ;;
  restart) cmd_stop; cmd_start ;;
  *) echo "usage: $0 install|start|stop|status|wait|restart|bin" >&2; exit 2 ;;
esac
