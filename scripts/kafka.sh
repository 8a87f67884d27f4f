#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, broker+controller in one
# JVM) on 127.0.0.1 for tests and CI. Usage:
#
#   scripts/kafka.sh start                 # fetch jars once, start, wait until it answers
#   scripts/kafka.sh stop                  # TERM, wait, then KILL
#   scripts/kafka.sh status                # exit 0 if running, 1 if not
#   scripts/kafka.sh bootstrap             # print the bootstrap address
#   scripts/kafka.sh topic-create NAME PARTITIONS
#   scripts/kafka.sh topic-delete NAME
#   scripts/kafka.sh topic-add-partitions NAME TOTAL
#   scripts/kafka.sh topic-list
#   scripts/kafka.sh topic-describe NAME
#   scripts/kafka.sh delete-records TOPIC PARTITION OFFSET
#   scripts/kafka.sh console-consume TOPIC [MAX_MESSAGES]
#                                          # read_committed, from the beginning,
#                                          # prints key<TAB>value, stops after
#                                          # SLUICE_KAFKA_CONSUME_TIMEOUT_MS (default
#                                          # 5000) ms without a message
#   scripts/kafka.sh console-produce TOPIC # one record per line of stdin
#   scripts/kafka.sh log [LINES]           # tail the broker log
#
# The jars come from Maven Central (scripts/kafka/pom.xml, via mvn) into
# ${SLUICE_KAFKA_HOME:-~/.cache/sluice-kafka}/kafka-libs the first time.
# Every start begins with an empty data directory, so tests must create
# their own (uniquely named) topics; auto.create.topics.enable is off.
# SLUICE_KAFKA_BOOTSTRAP=127.0.0.1:PORT moves the broker to PORT (the
# controller then listens on PORT+1). Needs java (17+), mvn and python3.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
home="${SLUICE_KAFKA_HOME:-$HOME/.cache/sluice-kafka}"
libs="$home/kafka-libs"
bootstrap="${SLUICE_KAFKA_BOOTSTRAP:-127.0.0.1:19092}"
host="${bootstrap%:*}"
port="${bootstrap##*:}"
controller_port=$((port + 1))
pidfile="$home/kafka.pid"
logfile="$home/kafka.log"
datadir="$home/data"
props="$home/server.properties"
start_timeout="${SLUICE_KAFKA_START_TIMEOUT:-60}"

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# Fetch the broker and tool jars unless a complete copy is there. The
# marker holds the pom's checksum, so editing the pom (e.g. a new Kafka
# version) fetches again. Copies into a temporary directory first so a
# failed fetch never looks complete.
fetch_jars() {
  local sum
  sum="$(sha256sum "$here/kafka/pom.xml" | cut -d' ' -f1)"
  if [ -f "$libs/.complete" ] && [ "$(cat "$libs/.complete")" = "$sum" ]; then
    return
  fi
  log "fetching Kafka jars into $libs (once)"
  mkdir -p "$home"
  rm -rf "$libs.tmp"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs.tmp" > "$home/mvn.log" 2>&1 ||
    { tail -n 40 "$home/mvn.log" >&2; die "mvn could not fetch the Kafka jars (log: $home/mvn.log)"; }
  rm -rf "$libs"
  mv "$libs.tmp" "$libs"
  echo "$sum" > "$libs/.complete"
}

# Log config for the command-line tools: warnings and errors to stderr.
write_tools_log4j() {
  mkdir -p "$home"
  cat > "$home/tools-log4j2.properties" <<'EOF'
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
EOF
}

# Run a Kafka tool's main class. Small heap and C1 only: these JVMs live
# for a second or two.
tool() {
  [ -f "$libs/.complete" ] || die "no Kafka jars yet: run '$0 start' first"
  [ -f "$home/tools-log4j2.properties" ] || write_tools_log4j
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$home/tools-log4j2.properties" \
    -cp "$libs/*" "$@"
}

# The pid of our broker if it is alive, else nothing (and a stale pid file
# is removed).
broker_pid() {
  [ -f "$pidfile" ] || return 0
  local pid
  pid="$(cat "$pidfile")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "$pid"
  else
    rm -f "$pidfile"
  fi
}

# True if something accepts TCP connections on host:port.
port_open() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

# True once the broker answers a metadata request.
broker_answers() {
  port_open "$port" &&
    timeout 30 java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -Dlog4j2.configurationFile="$home/tools-log4j2.properties" -cp "$libs/*" \
      org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --list \
      > /dev/null 2>&1
}

write_server_properties() {
  cat > "$props" <<EOF
# Written by scripts/kafka.sh on every start.
# KRaft, one node that is both broker and controller (a single-node dynamic
# quorum, formatted with --standalone).
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$host:$controller_port
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$controller_port
advertised.listeners=PLAINTEXT://$host:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$datadir

# One broker: every internal topic must have replication factor 1 (and
# min ISR 1), or group and transaction coordinators never become available
# (a transactional producer's init_transactions would time out).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1

# Tests create their topics explicitly, and delete them.
auto.create.topics.enable=false
delete.topic.enable=true

# Consumers join groups at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0

# Transactions: the Kafka defaults, spelled out. Producers may ask for a
# transaction.timeout.ms up to transaction.max.timeout.ms (15 min), so the
# usual 60000 works; timed-out transactions are aborted every 10 s.
transaction.max.timeout.ms=900000
transaction.abort.timed.out.transaction.cleanup.interval.ms=10000

# Apply retention (and delete-records cleanup) promptly.
log.retention.check.interval.ms=10000

# Keep the log cleaner's buffer (128 MiB by default) small: the heap is
# only 512 MiB and the compacted internal topics are tiny.
log.cleaner.dedupe.buffer.size=16777216
EOF
}

write_broker_log4j() {
  cat > "$home/log4j2.properties" <<'EOF'
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

cmd_start() {
  local pid
  pid="$(broker_pid)"
  if [ -n "$pid" ]; then
    if broker_answers; then
      log "already running (pid $pid) on $bootstrap"
      return 0
    fi
    log "pid $pid is alive but not answering yet; waiting"
  else
    if port_open "$port" || port_open "$controller_port"; then
      die "port $port or $controller_port is in use by another process"
    fi
    fetch_jars
    write_tools_log4j
    write_broker_log4j
    write_server_properties

    # A fresh data directory every start.
    rm -rf "$datadir"
    local cluster_id
    cluster_id="$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
    tool kafka.tools.StorageTool format --standalone \
      --cluster-id="$cluster_id" --config="$props" > "$home/format.log" 2>&1 ||
      { cat "$home/format.log" >&2; die "formatting $datadir failed"; }

    log "starting broker on $bootstrap (log: $logfile)"
    nohup java -Xmx512m -Xms256m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$home/log4j2.properties" \
      -Dkafka.logs.dir="$home" \
      -cp "$libs/*" kafka.Kafka "$props" > "$logfile" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$pidfile"
  fi

  # Wait until the broker answers a metadata request.
  local deadline=$((SECONDS + start_timeout))
  until broker_answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"
      tail -n 40 "$logfile" >&2 || true
      die "the broker exited during start-up (log above: $logfile)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 40 "$logfile" >&2 || true
      die "the broker did not answer on $bootstrap within ${start_timeout}s (pid $pid still running; '$0 stop' ends it)"
    fi
    sleep 0.5
  done
  log "running (pid $pid) on $bootstrap"
}

cmd_stop() {
  local pid
  pid="$(broker_pid)"
  if [ -z "$pid" ]; then
    log "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  # A clean shutdown of a single node takes a few seconds.
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not stop after TERM; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  fi
  rm -f "$pidfile"
  log "stopped (pid $pid)"
}

cmd_status() {
  local pid
  pid="$(broker_pid)"
  if [ -n "$pid" ]; then
    echo "running (pid $pid) on $bootstrap"
  else
    echo "not running"
    return 1
  fi
}

usage() {
  sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

topics() { tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" "$@"; }

[ $# -ge 1 ] || usage
command="$1"
shift
case "$command" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  bootstrap) echo "$bootstrap" ;;
  log) tail -n "${1:-100}" "$logfile" ;;
  topic-create)
    [ $# -eq 2 ] || usage
    topics --create --topic "$1" --partitions "$2" --replication-factor 1
    ;;
  topic-delete)
    [ $# -eq 1 ] || usage
    topics --delete --topic "$1"
    ;;
  topic-add-partitions)
    [ $# -eq 2 ] || usage
    topics --alter --topic "$1" --partitions "$2"
    ;;
  topic-list) topics --list ;;
  topic-describe)
    [ $# -eq 1 ] || usage
    topics --describe --topic "$1"
    ;;
  delete-records)
    # Deletes every record of TOPIC/PARTITION below OFFSET (the new log
    # start offset); -1 means up to the high watermark.
    [ $# -eq 3 ] || usage
    json="$(mktemp)"
    trap 'rm -f "$json"' EXIT
    printf '{"version":1,"partitions":[{"topic":"%s","partition":%d,"offset":%d}]}\n' \
      "$1" "$2" "$3" > "$json"
    # The tool exits 0 even when a partition fails; its output says so.
    out="$(tool org.apache.kafka.tools.DeleteRecordsCommand \
      --bootstrap-server "$bootstrap" --offset-json-file "$json")"
    echo "$out"
    if grep -q 'error:' <<< "$out"; then
      die "delete-records failed for $1-$2"
    fi
    ;;
  console-consume)
    [ $# -eq 1 ] || [ $# -eq 2 ] || usage
    extra=()
    [ $# -eq 2 ] && extra=(--max-messages "$2")
    tool org.apache.kafka.tools.consumer.ConsoleConsumer \
      --bootstrap-server "$bootstrap" --topic "$1" --from-beginning \
      --isolation-level read_committed \
      --timeout-ms "${SLUICE_KAFKA_CONSUME_TIMEOUT_MS:-5000}" \
      --formatter-property print.key=true \
      --formatter-property key.separator=$'\t' \
      "${extra[@]}"
    ;;
  console-produce)
    [ $# -eq 1 ] || usage
    tool org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$bootstrap" --topic "$1"
    ;;
  *) usage ;;
esac
