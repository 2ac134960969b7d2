#!/usr/bin/env bash
# Local single-node Apache Kafka 4.x (KRaft) for development and tests (no Docker).
#
#   deploy/local/kafka.sh start|stop|status|wait|restart|kill   (kill = SIGKILL, for fault tests)
#   deploy/local/kafka.sh fetch                         (only fetch the jars)
#   deploy/local/kafka.sh ca                            (path of the CA that signed the SASL_SSL cert)
#   deploy/local/kafka.sh topics --list                 (TopicCommand on the local broker)
#   deploy/local/kafka.sh tool <main class> <args...>   (any Kafka CLI class on the fetched jars)
#
# Fetches the broker jars from Maven Central with mvn into <repo>/.local/kafka/libs (git-ignored,
# only when missing or when KAFKA_VERSION changes), formats the storage once, and runs
# kafka.Kafka in the background on 127.0.0.1.
#
# Listeners (all 127.0.0.1):
#   PLAINTEXT        KAFKA_PORT (9092)             no auth; what make run / make test use
#   CONTROLLER       KAFKA_CONTROLLER_PORT (9093)  KRaft quorum
#   SASL_PLAINTEXT   KAFKA_SASL_PORT (9094)        SCRAM-SHA-512, user KAFKA_SASL_USER
#   SASL_SSL         KAFKA_SASL_SSL_PORT (9095)    SCRAM-SHA-512 over TLS; the broker certificate
#                    (CN and SAN 127.0.0.1 + localhost) is signed by a CA generated with openssl
#                    into <state>/tls/ca.crt (`kafka.sh ca` prints its path)
# The SCRAM user is added when the storage is formatted (--add-scram); a data directory formatted
# before SASL existed gets it with kafka-configs once the broker is up.
#
# Environment:
#   KAFKA_VERSION             org.apache.kafka:kafka_2.13 version (default below)
#   KAFKA_PORT                PLAINTEXT listener port (default 9092)
#   KAFKA_CONTROLLER_PORT     CONTROLLER listener port (default 9093)
#   KAFKA_SASL                on|off: the SASL listeners (default on)
#   KAFKA_SASL_PORT           SASL_PLAINTEXT listener port (default 9094)
#   KAFKA_SASL_SSL_PORT       SASL_SSL listener port (default 9095)
#   KAFKA_SASL_USER           SCRAM-SHA-512 user (default partners)
#   KAFKA_SASL_PASSWORD       its password (default partners-test-secret; a test credential)
#   KAFKA_HEAP                broker heap (default 1g: the test broker keeps every test's topics,
#                             thousands of partitions after a few make test runs; 512m ran out)
#   KAFKA_WAIT_TIMEOUT        seconds to wait for readiness (default 90)
#   PARTNERS_KAFKA_DIR        state directory: config, data, logs, pid, tls (default
#                             <repo>/.local/kafka); with other ports it runs a second, independent
#                             broker. The jars always stay in <repo>/.local/kafka/libs.
# Used by kafka-cluster.sh for one node of a multi-node cluster (unset for the single broker):
#   KAFKA_NODE_ID             node.id (default 1)
#   KAFKA_QUORUM_VOTERS       static controller.quorum.voters (id@host:port,...); formats without
#                             --standalone
#   KAFKA_CLUSTER_ID          cluster id to format with (the same on every node)
#   KAFKA_REPLICATION         default and internal topics' replication factor (default 1)
#   KAFKA_MIN_ISR             min.insync.replicas, also of the internal topics (default 1)
#   KAFKA_NAME                log prefix (default kafka)
#   KAFKA_EXTRA_CONFIG        more server.properties lines, appended (newline-separated)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LIB_HOME="$ROOT/.local/kafka"
K_DIR="${PARTNERS_KAFKA_DIR:-$ROOT/.local/kafka}"
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
LOG4J_VERSION="${LOG4J_VERSION:-2.24.3}"
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
SASL="${KAFKA_SASL:-on}"
SASL_PORT="${KAFKA_SASL_PORT:-9094}"
SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-9095}"
SASL_USER="${KAFKA_SASL_USER:-partners}"
SASL_PASSWORD="${KAFKA_SASL_PASSWORD:-partners-test-secret}"
HEAP="${KAFKA_HEAP:-1g}"
WAIT_TIMEOUT="${KAFKA_WAIT_TIMEOUT:-90}"
NODE_ID="${KAFKA_NODE_ID:-1}"
QUORUM_VOTERS="${KAFKA_QUORUM_VOTERS:-}"
CLUSTER_ID="${KAFKA_CLUSTER_ID:-}"
REPLICATION="${KAFKA_REPLICATION:-1}"
MIN_ISR="${KAFKA_MIN_ISR:-1}"
NAME="${KAFKA_NAME:-kafka}"
EXTRA_CONFIG="${KAFKA_EXTRA_CONFIG:-}"
LIBS="$LIB_HOME/libs"
MARKER="$LIBS/.kafka-version"
DATA="$K_DIR/data"
PROPS="$K_DIR/server.properties"
PID_FILE="$K_DIR/kafka.pid"
LOG_FILE="$K_DIR/server.log"
MVN_LOG="$LIB_HOME/mvn.log"
TLS_DIR="$K_DIR/tls"
BOOTSTRAP="127.0.0.1:$PORT"

log() { printf '[%s] %s\n' "$NAME" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$NAME" "$*" >&2; exit 1; }

case "$SASL" in on|off) ;; *) die "KAFKA_SASL must be on or off (got '$SASL')" ;; esac

command -v java >/dev/null 2>&1 || die "java (17+) not found"

fetch_libs() {
  if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$KAFKA_VERSION" ]; then return 0; fi
  # the single broker and the cluster's nodes start in parallel: one fetch, the others wait for it
  mkdir -p "$LIB_HOME"
  exec 7>"$LIB_HOME/.fetch.lock"
  flock 7
  if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$KAFKA_VERSION" ]; then exec 7>&-; return 0; fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (needed to fetch Kafka jars from Maven Central)"
  log "fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION (+ kafka-tools, log4j2) with mvn"
  local t0=$SECONDS
  cat >"$LIB_HOME/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by deploy/local/kafka.sh: only used to fetch the broker classpath -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.partners-engine</groupId>
  <artifactId>kafka-local</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$LIBS" "$LIB_HOME/libs.tmp"
  : >"$MVN_LOG"
  (cd "$LIB_HOME" && mvn -B -q -Dstyle.color=never -f pom.xml dependency:copy-dependencies \
      -DoutputDirectory=libs.tmp -DincludeScope=runtime >>"$MVN_LOG" 2>&1) \
    || { tail -n 30 "$MVN_LOG" >&2; die "mvn could not fetch Kafka $KAFKA_VERSION (see ${MVN_LOG#"$ROOT"/})"; }
  add_log4j2_runtime "$LIB_HOME/libs.tmp"
  mv "$LIB_HOME/libs.tmp" "$LIBS"
  for cls in kafka/Kafka.class kafka/tools/StorageTool.class; do
    java_has_class "$cls" || die "class ${cls%.class} not found in fetched jars"
  done
  echo "$KAFKA_VERSION" >"$MARKER"
  local -a fetched=("$LIBS"/*.jar)
  log "fetched ${#fetched[@]} jars in $((SECONDS - t0))s"
  exec 7>&-
}

# The Kafka poms bring log4j-api (and, in recent versions, log4j-core) but no SLF4J binding, so
# without help the broker logs nothing ("SLF4J: Defaulting to no-operation (NOP) logger").
# Add log4j-core and the binding that matches the slf4j-api that came along (Kafka 4.x still
# uses slf4j-api 1.7.x -> log4j-slf4j-impl; slf4j-api 2.x -> log4j-slf4j2-impl), at the same
# log4j version as the log4j-api Kafka chose.
add_log4j2_runtime() {
  local dir="$1" v binding art
  local -a jars
  jars=("$dir"/log4j-api-[0-9]*.jar)
  v="$LOG4J_VERSION"
  if [ -e "${jars[0]}" ]; then v="${jars[0]##*/log4j-api-}"; v="${v%.jar}"; fi
  jars=("$dir"/slf4j-api-1.*.jar)
  if [ -e "${jars[0]}" ]; then binding=log4j-slf4j-impl; else binding=log4j-slf4j2-impl; fi
  for art in log4j-api log4j-core "$binding"; do
    jars=("$dir/$art"-[0-9]*.jar)
    [ -e "${jars[0]}" ] && continue
    (cd "$LIB_HOME" && mvn -B -q -Dstyle.color=never dependency:copy -Dartifact="org.apache.logging.log4j:$art:$v" \
        -DoutputDirectory="$dir" >>"$MVN_LOG" 2>&1) \
      || { tail -n 30 "$MVN_LOG" >&2; die "mvn could not fetch org.apache.logging.log4j:$art:$v"; }
  done
}

# java_has_class path/To/Class.class: true when a jar in libs contains it (zip entry names are
# stored uncompressed, so grep finds them without unzip).
java_has_class() { grep -qaF "$1" "$LIBS"/*.jar; }

# tls_material: a CA and a broker certificate for 127.0.0.1/localhost signed by it, in a PKCS12
# keystore whose random password is kept beside it. Made once; kept across restarts so clients'
# CA file stays valid.
tls_material() {
  [ -s "$TLS_DIR/broker.p12" ] && [ -s "$TLS_DIR/ca.crt" ] && [ -s "$TLS_DIR/keystore.password" ] && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl not found (needed for the SASL_SSL listener's certificate)"
  log "generating a local CA and broker certificate in ${TLS_DIR#"$ROOT"/}"
  rm -rf "$TLS_DIR.tmp"
  mkdir -p "$TLS_DIR.tmp"
  (
    cd "$TLS_DIR.tmp"
    umask 077
    openssl rand -hex 16 >keystore.password
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout ca.key -out ca.crt \
      -subj "/CN=partners-engine local test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout broker.key -out broker.csr -subj "/CN=127.0.0.1"
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >broker.ext
    openssl x509 -req -sha256 -days 825 -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -extfile broker.ext -out broker.crt
    openssl pkcs12 -export -name broker -in broker.crt -inkey broker.key -certfile ca.crt \
      -passout "file:keystore.password" -out broker.p12
    chmod 644 ca.crt broker.crt
    rm -f broker.csr broker.ext ca.srl
  ) >"$K_DIR/openssl.log" 2>&1 || { tail -n 20 "$K_DIR/openssl.log" >&2; die "openssl could not make the TLS material"; }
  rm -rf "$TLS_DIR"
  mv "$TLS_DIR.tmp" "$TLS_DIR"
}

write_config() {
  mkdir -p "$DATA"
  local listeners="PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT"
  local advertised="PLAINTEXT://127.0.0.1:$PORT"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  local quorum="controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT"
  [ -z "$QUORUM_VOTERS" ] || quorum="controller.quorum.voters=$QUORUM_VOTERS"
  local sasl="# no SASL listeners (KAFKA_SASL=off)"
  if [ "$SASL" = on ]; then
    tls_material
    listeners="$listeners,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT,SASL_SSL://127.0.0.1:$SASL_SSL_PORT"
    advertised="$advertised,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT,SASL_SSL://127.0.0.1:$SASL_SSL_PORT"
    protocols="$protocols,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
    local pw; pw="$(cat "$TLS_DIR/keystore.password")"
    sasl="# SCRAM-SHA-512 clients (users live in the KRaft metadata); brokers talk PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/broker.p12
listener.name.sasl_ssl.ssl.keystore.password=$pw
listener.name.sasl_ssl.ssl.key.password=$pw
listener.name.sasl_ssl.ssl.client.auth=none"
  fi
  cat >"$PROPS" <<EOF
# generated by deploy/local/kafka.sh; edits are overwritten on start
process.roles=broker,controller
node.id=$NODE_ID
$quorum
listeners=$listeners
advertised.listeners=$advertised
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=$protocols
$sasl
log.dirs=$DATA
num.partitions=3
default.replication.factor=$REPLICATION
min.insync.replicas=$MIN_ISR
offsets.topic.replication.factor=$REPLICATION
transaction.state.log.replication.factor=$REPLICATION
transaction.state.log.min.isr=$MIN_ISR
share.coordinator.state.topic.replication.factor=$REPLICATION
share.coordinator.state.topic.min.isr=$MIN_ISR
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.cleaner.enable=true
log.retention.hours=168
log.segment.bytes=1073741824
EOF
  [ -z "$EXTRA_CONFIG" ] || printf '%s\n' "$EXTRA_CONFIG" >>"$PROPS"
  chmod 600 "$PROPS"
  # log4j2 configs: broker logs INFO to stdout (-> server.log); CLI tools only WARN to stderr.
  cat >"$K_DIR/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = info
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.controller.name = org.apache.kafka.controller
logger.controller.level = info
logger.state.name = state.change.logger
logger.state.level = warn
EOF
  cat >"$K_DIR/tools-log4j2.properties" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = STDERR
EOF
}

# tool <main class> args...: run a Kafka CLI class on the fetched classpath.
tool() {
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$K_DIR/tools-log4j2.properties" \
    -cp "$LIBS/*" "$@"
}

FORMATTED_NOW=0
format_storage() {
  if [ -f "$DATA/meta.properties" ]; then return 0; fi
  local id="$CLUSTER_ID"
  [ -n "$id" ] || id="$(tool kafka.tools.StorageTool random-uuid | tail -n 1)"
  # --cluster-id=ID: an id may begin with '-', which the option parser would take for an option
  local -a args=(format "--cluster-id=$id" -c "$PROPS")
  # one node: it is the whole quorum; several: the static voters in the config are
  [ -n "$QUORUM_VOTERS" ] || args+=(--standalone)
  [ "$SASL" = off ] || args+=(--add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]")
  log "formatting storage (cluster id $id, node $NODE_ID)"
  tool kafka.tools.StorageTool "${args[@]}" >/dev/null || die "storage format failed"
  FORMATTED_NOW=1
}

# ensure_scram_user: a data directory formatted without --add-scram (before the SASL listener
# existed) gets the user through the running broker; re-running it only resets the password.
ensure_scram_user() {
  [ "$SASL" = on ] && [ "$FORMATTED_NOW" = 0 ] || return 0
  log "adding SCRAM-SHA-512 user $SASL_USER with kafka-configs (storage formatted without it)"
  tool org.apache.kafka.tools.ConfigCommand --bootstrap-server "$BOOTSTRAP" --alter \
      --entity-type users --entity-name "$SASL_USER" \
      --add-config "SCRAM-SHA-512=[iterations=8192,password=$SASL_PASSWORD]" >/dev/null \
    || die "kafka-configs could not add SCRAM user $SASL_USER"
}

# sasl_missing: SASL is wanted but nothing listens on its port (a broker from an older kafka.sh).
sasl_missing() { [ "$SASL" = on ] && ! port_open "$SASL_PORT"; }
warn_sasl_missing() {
  log "WARNING: the broker on $BOOTSTRAP has no SASL_PLAINTEXT listener on 127.0.0.1:$SASL_PORT (it was started by an older kafka.sh); 'deploy/local/kafka.sh restart' in the checkout that started it adds it (tests using PARTNERS_TEST_KAFKA_SASL fail until then)" >&2
}

pid_alive() {
  [ -f "$PID_FILE" ] || return 1
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # guard against a stale pid file whose pid now belongs to something else
  [ ! -r "/proc/$pid/cmdline" ] || grep -qa -- 'kafka.Kafka' "/proc/$pid/cmdline"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# metadata_ok: the broker answers a real request (lists topics) within a few seconds.
metadata_ok() {
  timeout 30 java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$K_DIR/tools-log4j2.properties" -cp "$LIBS/*" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1
}

log_tail() {
  if [ -s "$LOG_FILE" ]; then
    echo "----- tail of $LOG_FILE -----" >&2
    tail -n 40 "$LOG_FILE" >&2
  fi
}

# pid_running: the pid file's process exists. While it starts, the pid is the launching subshell
# (its command line is not yet java's), so pid_alive's kafka.Kafka check would call a broker that
# is still exec'ing dead.
pid_running() {
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

cmd_wait() {
  local deadline=$((SECONDS + WAIT_TIMEOUT))
  until port_open "$PORT"; do
    if [ -f "$PID_FILE" ] && ! pid_running; then
      log_tail; die "broker process $(cat "$PID_FILE") exited during startup"
    fi
    [ $SECONDS -lt $deadline ] || { log_tail; die "port $BOOTSTRAP not open after ${WAIT_TIMEOUT}s"; }
    sleep 0.5
  done
  until metadata_ok; do
    if [ -f "$PID_FILE" ] && ! pid_running; then
      log_tail; die "broker process $(cat "$PID_FILE") exited during startup"
    fi
    [ $SECONDS -lt $deadline ] || { log_tail; die "broker on $BOOTSTRAP does not answer metadata requests after ${WAIT_TIMEOUT}s"; }
    sleep 1
  done
  # the SASL listeners open with the others; only a broker of an older config lacks them
  if pid_alive && [ "$SASL" = on ] && grep -q '^sasl.enabled.mechanisms=' "$PROPS" 2>/dev/null; then
    until port_open "$SASL_PORT" && port_open "$SASL_SSL_PORT"; do
      [ $SECONDS -lt $deadline ] || { log_tail; die "SASL listeners 127.0.0.1:$SASL_PORT/$SASL_SSL_PORT not open after ${WAIT_TIMEOUT}s"; }
      sleep 0.5
    done
  fi
}

broker_version() {
  local v
  v="$(grep -o 'Kafka version: [^ ]*' "$LOG_FILE" 2>/dev/null | tail -n 1 | awk '{print $3}')"
  echo "${v:-$(cat "$MARKER" 2>/dev/null)}"
}

cmd_start() {
  mkdir -p "$K_DIR"
  exec 8>"$K_DIR/.lock"
  flock 8

  if pid_alive; then
    cmd_wait
    log "already running (pid $(cat "$PID_FILE"), $BOOTSTRAP)"
    if sasl_missing; then warn_sasl_missing; fi
    return 0
  fi
  rm -f "$PID_FILE"
  if port_open "$PORT"; then
    # Another checkout's broker (or one started by hand) on this port: use it
    # when it answers Kafka requests, as clickhouse.sh does.
    fetch_libs
    if metadata_ok; then
      log "a Kafka broker not started by this script already answers on $BOOTSTRAP; using it"
      if sasl_missing; then warn_sasl_missing; fi
      return 0
    fi
  fi
  local -a ports=("$PORT" "$CONTROLLER_PORT")
  [ "$SASL" = off ] || ports+=("$SASL_PORT" "$SASL_SSL_PORT")
  for p in "${ports[@]}"; do
    if port_open "$p"; then
      die "port 127.0.0.1:$p is in use by another process (set KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_SASL_PORT / KAFKA_SASL_SSL_PORT)"
    fi
  done

  fetch_libs
  write_config
  format_storage
  log "starting Kafka $(cat "$MARKER") broker+controller on $BOOTSTRAP (data in ${DATA#"$ROOT"/})"
  local t0=$SECONDS
  echo "===== start $(date -u +%FT%TZ) =====" >>"$LOG_FILE"
  (cd "$K_DIR" && exec setsid nohup java "-Xmx$HEAP" "-Xms$HEAP" -server \
      -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
      -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$K_DIR/log4j2.properties" -Dkafka.logs.dir="$K_DIR/logs" \
      -cp "$LIBS/*" kafka.Kafka "$PROPS" >>"$LOG_FILE" 2>&1 </dev/null 8>&-) &
  echo $! >"$PID_FILE"
  cmd_wait
  ensure_scram_user
  local extra=""
  [ "$SASL" = off ] || extra=", SASL_PLAINTEXT 127.0.0.1:$SASL_PORT, SASL_SSL 127.0.0.1:$SASL_SSL_PORT (SCRAM-SHA-512 user $SASL_USER)"
  log "ready in $((SECONDS - t0))s: Kafka $(broker_version), pid $(cat "$PID_FILE"), bootstrap $BOOTSTRAP$extra"
}

# cmd_kill: SIGKILL, for fault tests (a crash: no controlled shutdown, no flush).
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

# cmd_ca: the CA file of the broker whose SASL_SSL listener is on KAFKA_SASL_SSL_PORT: ours, or
# that of the running broker (another checkout's) whose generated config listens there.
cmd_ca() {
  local f="" cmd props
  if ! pid_alive; then
    for cmd in /proc/[0-9]*/cmdline; do
      grep -qa -- 'kafka.Kafka' "$cmd" 2>/dev/null || continue
      props="$(tr '\0' '\n' <"$cmd" 2>/dev/null | tail -n 1)" || continue
      if [ -r "$props" ] && grep -q "^listeners=.*SASL_SSL://127.0.0.1:$SASL_SSL_PORT\(,\|$\)" "$props"; then
        f="$(dirname "$props")/tls/ca.crt"
        break
      fi
    done
  fi
  f="${f:-$TLS_DIR/ca.crt}"
  [ -s "$f" ] || die "no CA at $f (start the broker first: deploy/local/kafka.sh start)"
  echo "$f"
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
  local deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      log "still running after 60s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 0.3
  done
  rm -f "$PID_FILE"
  log "stopped"
}

cmd_status() {
  if pid_alive && port_open "$PORT"; then
    local extra=""
    if [ "$SASL" = on ]; then
      if port_open "$SASL_PORT"; then extra=", SASL 127.0.0.1:$SASL_PORT/$SASL_SSL_PORT"; else extra=", no SASL listener (older config)"; fi
    fi
    log "up (pid $(cat "$PID_FILE"), $BOOTSTRAP$extra)"
    return 0
  fi
  if pid_alive; then log "process $(cat "$PID_FILE") alive but $BOOTSTRAP not accepting connections"
  else log "down"
  fi
  return 1
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  wait) cmd_wait; log "ready ($BOOTSTRAP)" ;;
  restart) cmd_stop; cmd_start ;;
  kill) cmd_kill ;;
  fetch) fetch_libs ;;
  ca) cmd_ca ;;
  # helpers: "kafka.sh topics --list", "kafka.sh tool org.apache.kafka.tools.ConsumerGroupCommand ..."
  topics) shift; tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" "$@" ;;
  tool) shift; tool "$@" ;;
  *) echo "usage: $0 start|stop|status|wait|restart|kill|fetch|ca | topics <TopicCommand args> | tool <class> <args>" >&2; exit 2 ;;
esac
