#!/bin/bash
# bench-peers.sh: wsq against Mosquitto (MQTT 3.1.1 QoS 1, persistent sessions) and NATS
# JetStream, all over WebSocket and all measured by the same client (wsq-bench), plus the
# physical limits of this machine (raw LMDB append, a minimal libwebsockets sink and echo) and
# the T6 restart with 10M stored messages. Issue 6; the results are written up in
# docs/BENCHMARKS.md (how the peers were set up: ../shared/notes/peers.md).
#
# Usage: tools/bench-peers.sh [-n RUNS] [-o OUTDIR] [-s "SCENARIOS"] [-p "SYSTEMS"] [-x "EXTRAS"]
#   RUNS       runs per scenario and system (3); the table shows medians and (min..max)
#   SCENARIOS  t1 t2 t3 t3raw t4 t5 (default: all)
#   SYSTEMS    wsq mqtt nats wsq-none (default: all; wsq-none = wsq with storage.sync none, the
#              peers' durability class, runs only for t1 t3 t4, where the sync shows)
#   EXTRAS     baselines t6 (default: both; "" for none)
# Env: BUILD (build directory, default build; configured and built if needed),
#      T6_MESSAGES (10000000), TMPDIR.
#
# Every broker runs on 127.0.0.1 with a fresh temporary data directory and its own config file
# (written below, copied into OUTDIR) for every single run, is stopped by PID and its directory
# removed. The Debian packages mosquitto and nats-server are installed if missing; their system
# services are stopped and disabled, and never used.
#
# Output: OUTDIR/<scenario>.<system>.jsonl (one wsq-bench JSON object per run),
# OUTDIR/baseline-*.jsonl, OUTDIR/t6.jsonl, OUTDIR/machine.txt, the configs, and
# OUTDIR/table.md: the comparison table (also printed).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

RUNS=3
OUT=${TMPDIR:-/tmp}/wsq-peers-$(date -u +%Y%m%d-%H%M%S)
SCEN="t1 t2 t3 t3raw t4 t5"
SYSTEMS="wsq mqtt nats wsq-none"
EXTRAS="baselines t6"
while getopts n:o:s:p:x: opt; do
    case $opt in
    n) RUNS=$OPTARG ;;
    o) OUT=$OPTARG ;;
    s) SCEN=$OPTARG ;;
    p) SYSTEMS=$OPTARG ;;
    x) EXTRAS=$OPTARG ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
    esac
done
BUILD=${BUILD:-build}
T6_MESSAGES=${T6_MESSAGES:-10000000}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# every broker's directory lives under one private work directory, removed at the end
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-peers.XXXXXX")
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- build ----------------------------------------------------------------------------------
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2
fi
cmake --build "$BUILD" -j2 --target wsqd wsq-bench wsq-storage-bench lws-baseline wsq-preload >&2
WSQD=$BUILD/bin/wsqd
BENCH=$BUILD/bin/wsq-bench
SBENCH=$BUILD/bin/wsq-storage-bench
LWSB=$BUILD/bin/lws-baseline
PRELOAD=$BUILD/bin/wsq-preload

# --- peers: install if missing (only those SYSTEMS names), never leave their services running ----
need=
case " $SYSTEMS " in *" mqtt "*) command -v mosquitto >/dev/null || need="$need mosquitto" ;; esac
case " $SYSTEMS " in *" nats "*) command -v nats-server >/dev/null || need="$need nats-server" ;; esac
if [ -n "$need" ]; then
    log "installing$need"
    DEBIAN_FRONTEND=noninteractive apt-get install -y $need >&2
fi
# Debian enables (and, where init scripts may run, starts) both as system services.
if [ -d /run/systemd/system ]; then
    systemctl disable --now mosquitto.service nats-server.service >/dev/null 2>&1 || true
elif command -v service >/dev/null; then
    service mosquitto stop >/dev/null 2>&1 || true
    service nats-server stop >/dev/null 2>&1 || true
fi
MOSQ_VERSION=$(dpkg-query -W -f '${Version}' mosquitto 2>/dev/null || echo "not installed")
NATS_VERSION=$(dpkg-query -W -f '${Version}' nats-server 2>/dev/null || echo "not installed")

# --- the machine ----------------------------------------------------------------------------
{
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "data dir: ${TMPDIR:-/tmp} on $(df -T "${TMPDIR:-/tmp}" | awk 'NR==2 {print $1, $2}')"
    echo "wsq: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' + working tree')"
    echo "mosquitto: $MOSQ_VERSION"
    echo "nats-server: $NATS_VERSION"
    echo "libwebsockets: $(dpkg-query -W -f '${Version}' libwebsockets17 2>/dev/null || echo '?')"
    echo "lmdb: $(dpkg-query -W -f '${Version}' liblmdb0 2>/dev/null || echo '?')"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# the bench opens up to 10k sockets; so do the brokers (they inherit this limit)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

freeport() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- brokers --------------------------------------------------------------------------------
PID=
DIR=
URL=
stop_broker() {
    if [ -n "$PID" ]; then
        kill -TERM "$PID" 2>/dev/null || true
        local i=0
        while kill -0 "$PID" 2>/dev/null && [ $i -lt 300 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
        PID=
    fi
    if [ -n "$DIR" ]; then
        rm -rf "$DIR"
        DIR=
    fi
}
trap 'stop_broker; rm -rf "$WORK"' EXIT
trap 'stop_broker; rm -rf "$WORK"; exit 130' INT TERM

wait_port() { # port, what
    local i=0
    while ! port_open "$1"; do
        if [ $i -ge 200 ] || ! kill -0 "$PID" 2>/dev/null; then
            cat "$DIR"/*.log >&2 2>/dev/null || true
            echo "$2 did not start" >&2
            exit 1
        fi
        sleep 0.05
        i=$((i + 1))
    done
}

# wsq: sync full (every confirm after the LMDB commit and its fsyncs); wsq-none: sync none.
. tools/wsq-bench/wsq-config.sh # wsq_config DIR PORT [SYNC]

# Mosquitto: persistence true = an in-memory database written to mosquitto.db every
# autosave_interval seconds (1800, the default) and at exit; nothing is fsynced per message, and a
# PUBACK means "in memory". max_queued_messages 0 = no limit (the default 1000 would drop the
# drain's backlog); max_inflight_messages 1000 = the same per-client window as wsq and NATS get
# (default 20). 2.0.11 refuses to start with only a websockets listener, hence the second,
# unused, plain MQTT listener on loopback; socket_domain ipv4 makes libwebsockets bind 127.0.0.1
# (without it, it binds every address).
mqtt_config() { # dir wsport mqttport
    cat <<EOF
per_listener_settings false
allow_anonymous true
persistence true
persistence_location $1/
autosave_interval 1800
max_queued_messages 0
max_inflight_messages 1000
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
listener $2 127.0.0.1
protocol websockets
socket_domain ipv4
listener $3 127.0.0.1
protocol mqtt
EOF
}

# NATS: JetStream file store with the 2.9 defaults: a PubAck means the message was written to the
# store's file (the OS page cache); the file store is fsynced every 2 minutes (sync_interval
# cannot be changed in 2.9.x). Streams are created by wsq-bench (file storage, one replica).
nats_config() { # dir wsport clientport
    cat <<EOF
listen: 127.0.0.1:$3
websocket {
  listen: "127.0.0.1:$2"
  no_tls: true
}
jetstream {
  store_dir: "$1/js"
  max_file_store: 50G
  max_memory_store: 1G
}
EOF
}

start_broker() { # system
    DIR=$(mktemp -d "$WORK/run.XXXXXX")
    case $1 in
    wsq | wsq-none)
        if [ "$1" = wsq ]; then
            wsq_config "$DIR" 0 full >"$DIR/wsq.yaml"
        else
            wsq_config "$DIR" 0 none >"$DIR/wsq.yaml"
        fi
        sed "s#$DIR#DATADIR#" "$DIR/wsq.yaml" >"$OUT/$1.yaml"
        "$WSQD" -c "$DIR/wsq.yaml" >"$DIR/wsqd.log" 2>&1 &
        PID=$!
        local i=0 port=
        while [ -z "$port" ]; do
            port=$(sed -n 's/.*listening address=[^ ]* port=\([0-9]*\).*/\1/p' "$DIR/wsqd.log" 2>/dev/null | head -1 || true)
            [ -n "$port" ] && break
            if [ $i -ge 200 ] || ! kill -0 "$PID" 2>/dev/null; then
                cat "$DIR/wsqd.log" >&2
                echo "wsqd did not start" >&2
                exit 1
            fi
            sleep 0.05
            i=$((i + 1))
        done
        URL=ws://127.0.0.1:$port
        ;;
    mqtt)
        local wp mp
        wp=$(freeport)
        mp=$(freeport)
        mqtt_config "$DIR" "$wp" "$mp" >"$DIR/mosquitto.conf"
        # started as root, mosquitto runs as the user mosquitto: let it write its database
        if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then chown mosquitto "$DIR"; fi
        sed "s#$DIR#DATADIR#" "$DIR/mosquitto.conf" >"$OUT/mosquitto.conf"
        mosquitto -c "$DIR/mosquitto.conf" >"$DIR/mosquitto.log" 2>&1 &
        PID=$!
        wait_port "$wp" mosquitto
        URL=ws://127.0.0.1:$wp
        ;;
    nats)
        local wp cp
        wp=$(freeport)
        cp=$(freeport)
        nats_config "$DIR" "$wp" "$cp" >"$DIR/nats.conf"
        sed "s#$DIR#DATADIR#" "$DIR/nats.conf" >"$OUT/nats.conf"
        nats-server -c "$DIR/nats.conf" >"$DIR/nats.log" 2>&1 &
        PID=$!
        wait_port "$wp" nats-server
        URL=ws://127.0.0.1:$wp
        ;;
    esac
}

# The scenarios: the targets' parameters, the same for every system.
args() {
    case $1 in
    t1) echo "publish --conns 16 --window 256 --size 128 --seconds 5 --warmup 1" ;;
    t2) echo "drain --preload 1000000 --resume --consumers 1 --window 1000 --ack-every 250 --size 128 --seconds 90 --timeout 60" ;;
    t3) echo "fanout --rate 1000 --subs 1000 --size 128 --seconds 10 --warmup 2" ;;
    t3raw) echo "fanout --rate 1000 --subs 1000 --sub-mode raw --size 128 --seconds 10 --warmup 2" ;;
    t4) echo "latency --rate 10000 --size 128 --seconds 10 --warmup 2" ;;
    t5) echo "idle --conns 10000 --seconds 30" ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
    esac
}
echo "$SCEN" >"$OUT/scenarios"
echo "$SYSTEMS" >"$OUT/systems"
for sc in $SCEN; do args "$sc" >"$OUT/cmd.$sc"; done

# --- the comparison: for each scenario, run r of every system back to back ------------------
for sc in $SCEN; do
    for sys in $SYSTEMS; do : >"$OUT/$sc.$sys.jsonl"; done
    for r in $(seq 1 "$RUNS"); do
        for sys in $SYSTEMS; do
            case "$sys.$sc" in wsq-none.t1 | wsq-none.t3 | wsq-none.t4 | wsq.* | mqtt.* | nats.*) ;; *) continue ;; esac
            start_broker "$sys"
            log "$sc $sys run $r/$RUNS: wsq-bench $(args "$sc") --driver ${sys%-none} --url $URL (pid $PID)"
            # shellcheck disable=SC2046
            "$BENCH" $(args "$sc") --driver "${sys%-none}" --url "$URL" --broker-pid "$PID" --json --quiet \
                >>"$OUT/$sc.$sys.jsonl" || log "   (the run reported errors)"
            stop_broker
            sleep 1
        done
    done
done

# --- baselines: raw LMDB append; minimal lws sink and echo -----------------------------------
if [[ " $EXTRAS " == *" baselines "* ]]; then
    : >"$OUT/baseline-lmdb.jsonl"
    : >"$OUT/baseline-sink.jsonl"
    : >"$OUT/baseline-echo.jsonl"
    for r in $(seq 1 "$RUNS"); do
        log "baseline lmdb run $r/$RUNS: wsq-storage-bench --baseline-only --size 128 --seconds 5"
        "$SBENCH" --baseline-only --size 128 --seconds 5 --json >>"$OUT/baseline-lmdb.jsonl"
        for mode in sink echo; do
            DIR=$(mktemp -d "$WORK/run.XXXXXX")
            "$LWSB" --mode $mode >"$DIR/lws.log" 2>&1 &
            PID=$!
            i=0
            port=
            while [ -z "$port" ] && [ $i -lt 100 ]; do
                sleep 0.05
                port=$(sed -n 's/^listening port=\([0-9]*\).*/\1/p' "$DIR/lws.log" 2>/dev/null || true)
                i=$((i + 1))
            done
            log "baseline lws $mode run $r/$RUNS: wsq-bench publish --mode raw --conns 16 --size 128 --seconds 10 --warmup 2"
            "$BENCH" publish --mode raw --conns 16 --size 128 --seconds 10 --warmup 2 \
                --url "ws://127.0.0.1:$port" --broker-pid "$PID" --json --quiet \
                >>"$OUT/baseline-$mode.jsonl" || log "   (the run reported errors)"
            stop_broker
            sleep 1
        done
    done
fi

# --- T6: restart with 10M messages stored --------------------------------------------------------
if [[ " $EXTRAS " == *" t6 "* ]]; then
    DIR=$(mktemp -d "$WORK/run.XXXXXX")
    log "t6: preloading $T6_MESSAGES messages: wsq-preload --dir DIR/data --messages $T6_MESSAGES --size 128"
    "$PRELOAD" --dir "$DIR/data" --messages "$T6_MESSAGES" --size 128 --topic bench.t6 >"$OUT/t6-preload.txt"
    cat "$OUT/t6-preload.txt" >&2
    du -sb "$DIR/data" | cut -f1 >"$OUT/t6-store-bytes"
    port=$(freeport)
    wsq_config "$DIR" "$port" >"$DIR/wsq.yaml"
    : >"$OUT/t6.jsonl"
    for r in $(seq 1 "$RUNS"); do
        for cache in warm cold; do
            log "t6 run $r/$RUNS ($cache page cache): exec wsqd -> first 101 upgrade, first healthz 200"
            python3 tools/lib/bench_t6.py "$WSQD" "$DIR/wsq.yaml" "$port" "$cache" "$DIR/data" \
                "$T6_MESSAGES" >>"$OUT/t6.jsonl"
            sleep 1
        done
    done
    rm -rf "$DIR"
    DIR=
fi

# --- the table -----------------------------------------------------------------------------------
python3 tools/lib/bench_table.py "$OUT" "$RUNS" | tee "$OUT/table.md"
log "results in $OUT"
