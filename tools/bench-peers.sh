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
            python3 - "$WSQD" "$DIR/wsq.yaml" "$port" "$cache" "$DIR/data" "$T6_MESSAGES" \
                >>"$OUT/t6.jsonl" <<'EOF'
import json, os, socket, subprocess, sys, time
wsqd, conf, port, cache, data, want = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
if cache == "cold":  # evict this store's pages only (not the whole machine's cache)
    for f in os.listdir(data):
        fd = os.open(os.path.join(data, f), os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
UP = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
      b"Sec-WebSocket-Protocol: wsq.v1\r\n\r\n")
def get(req, whole=False):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        s.sendall(req)
        b = b""
        while whole or b"\r\n\r\n" not in b:
            r = s.recv(65536)
            if not r:
                break
            b += r
        return b
    finally:
        s.close()
t0 = time.monotonic()
p = subprocess.Popen([wsqd, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
res = {"cache": cache}
try:
    while "upgrade_s" not in res and time.monotonic() - t0 < 30:
        try:
            if get(UP).startswith(b"HTTP/1.1 101"):
                res["upgrade_s"] = time.monotonic() - t0
        except OSError:
            time.sleep(0.001)
    while "healthz_s" not in res and time.monotonic() - t0 < 30:
        try:
            if get(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").startswith(b"HTTP/1.1 200"):
                res["healthz_s"] = time.monotonic() - t0
        except OSError:
            time.sleep(0.001)
    # the store really holds them: the last message is readable
    b = get(("GET /topics/bench.t6/messages?from=%d&limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Connection: close\r\n\r\n" % want).encode(), whole=True)
    res["last_seq_readable"] = (b'"seq":%d' % want) in b or (b'"seq": %d' % want) in b
    res["rss_kb"] = int([l for l in open("/proc/%d/status" % p.pid) if l.startswith("VmRSS")][0].split()[1])
finally:
    p.terminate()
    p.wait()
print(json.dumps(res))
EOF
            sleep 1
        done
    done
    rm -rf "$DIR"
    DIR=
fi

# --- the table -----------------------------------------------------------------------------------
python3 - "$OUT" "$RUNS" <<'EOF' | tee "$OUT/table.md"
import json, os, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
scen = open(os.path.join(out, "scenarios")).read().split()
systems = open(os.path.join(out, "systems")).read().split()
def load(name):
    p = os.path.join(out, name)
    if not os.path.exists(p):
        return []
    return [json.loads(l) for l in open(p) if l.strip()]
def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None
def fmt(v, f="%.3g"):
    v = [x for x in v if x is not None]
    if not v:
        return "-"
    if len(v) == 1:
        return f % v[0]
    return (f + " (" + f + "-" + f + ")") % (statistics.median(v), min(v), max(v))
def k(x):
    return None if x is None else x / 1000.0
mv = {}
for l in open(os.path.join(out, "machine.txt")):
    a, _, b = l.partition(": ")
    mv[a] = b.strip()
NAME = {"wsq": "**wsq** `sync: full` (fsync before every confirm)",
        "wsq-none": "wsq `sync: none` (no fsync; the peers' class)",
        "mqtt": "Mosquitto %s, QoS 1 (in memory; snapshot every 1800 s and at exit, no fsync)" % mv.get("mosquitto", "?"),
        "nats": "NATS %s JetStream, file store (written to the page cache; fsync every 2 min)" % mv.get("nats-server", "?")}
NAME_RAW = {"wsq": "wsq raw-mode subscribers", "mqtt": "Mosquitto, QoS 0 subscribers",
            "nats": "NATS core subscriptions (not via the stream)"}
TITLE = {"t1": "T1 durable publish: 16 conns x window 256, 128 B, confirmed (target >= 300k/s, ahead of both peers)",
         "t2": "T2 drain a 1M backlog to one resuming durable consumer, acking (target >= 1M/s)",
         "t3": "T3 fan-out of 1k msgs/s to 1000 subscribers (target 1M deliveries/s, p99 < 50 ms)",
         "t3raw": "T3 with light subscribers (wsq raw mode, MQTT QoS 0, NATS core subscriptions)",
         "t4": "T4 latency at 10k msgs/s, one publisher, one subscriber, publish->deliver (target p50 < 1 ms, p99 < 3 ms)",
         "t5": "T5 10,000 idle connections (target < 150 MB broker RSS, ~0% CPU)"}
def primary(d):
    r, s = d["result"], d["scenario"]
    if s == "publish":
        return r.get("confirmed_per_s") if d["params"].get("mode") != "raw" else r.get("sent_per_s")
    if s == "drain":
        return r.get("drained_per_s") if not d["errors"].get("incomplete") else None
    if s in ("fanout", "latency"):
        return r.get("delivered_per_s")
    return r.get("broker_rss_max_kb", 0) / 1024.0
print("# wsq vs Mosquitto vs NATS JetStream over WebSocket (wsq-bench)\n")
print("Machine: " + "; ".join("%s %s" % (a, b) for a, b in mv.items()) + "\n")
print("Cells: median (min-max) of %d runs, each against a fresh broker and data directory. CPU in %% "
      "of one core (the machine has %s); 'others' = the machine's CPU used by neither the broker "
      "nor the bench.\n" % (runs, mv.get("nproc", "?")))
res = {}
for sc in scen:
    cmd = open(os.path.join(out, "cmd." + sc)).read().strip()
    print("## " + TITLE.get(sc, sc) + "\n")
    print("`wsq-bench %s --driver wsq|mqtt|nats --url URL --broker-pid PID --json`\n" % cmd)
    if sc == "t5":
        print("| system | RSS max MB | RssAnon max MB | KB/conn | connect s | broker CPU % (30 s held) | bench CPU % | others CPU % | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
    elif sc == "t2":
        print("| system | drained msgs/s | first msg ms | preload msgs/s | broker CPU % | broker CPU us/msg | bench CPU % | others CPU % | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
    else:
        lab = {"t1": "confirmed msgs/s", "t3": "deliveries/s", "t3raw": "deliveries/s", "t4": "delivered msgs/s"}[sc]
        lat = "confirm" if sc == "t1" else "deliver"
        extra = "" if sc == "t1" else " published/s | not delivered at end |"
        print("| system | %s |%s %s p50 ms | p99 ms | p99.9 ms | broker CPU %% | broker CPU us/msg | bench CPU %% | others CPU %% | errors |" % (lab, extra, lat))
        print("|---|---|" + ("" if sc == "t1" else "---|---|") + "---|---|---|---|---|---|---|---|")
    for sys_ in systems:
        ds = load("%s.%s.jsonl" % (sc, sys_))
        if not ds:
            continue
        nm = NAME_RAW.get(sys_, NAME[sys_]) if sc == "t3raw" else NAME[sys_]
        errs = ",".join(str(d["errors"]["total"] - d["errors"].get("missing", 0)) for d in ds)
        cpu = [fmt([d["cpu"][x] for d in ds], "%.0f") for x in ("broker_pct", "bench_pct", "others_pct")]
        res[(sc, sys_)] = ds
        # broker CPU time per message: less sensitive to the other tenants than the rates
        usm = fmt([d["cpu"]["broker_pct"] * 1e4 / primary(d) if primary(d) else None for d in ds], "%.2f")
        if sc == "t5":
            r = [d["result"] for d in ds]
            n = ds[0]["params"].get("conns", 10000)
            print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (nm,
                  fmt([x.get("broker_rss_max_kb", 0) / 1024 for x in r], "%.1f"),
                  fmt([x.get("broker_anon_max_kb", 0) / 1024 if x.get("broker_anon_max_kb", -1) >= 0 else None for x in r], "%.1f"),
                  fmt([(x.get("broker_rss_max_kb", 0) - x.get("broker_rss_before_kb", 0)) / n for x in r], "%.1f"),
                  fmt([x.get("setup_s") for x in r], "%.2f"), cpu[0], cpu[1], cpu[2], errs))
            continue
        if sc == "t2":
            print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (nm, fmt([k(primary(d)) for d in ds], "%.0fk"),
                  fmt([d["result"].get("first_msg_ms") for d in ds], "%.0f"),
                  fmt([k(d["result"].get("preload_per_s")) for d in ds], "%.0fk"), cpu[0], usm, cpu[1], cpu[2], errs))
            continue
        key = "confirm_latency" if sc == "t1" else "deliver_latency"
        lats = [d["result"].get(key, {}) for d in ds]
        ex = ""
        if sc != "t1":
            ex = " %s | %s |" % (fmt([d["result"].get("published_per_s") for d in ds], "%.0f"),
                                 fmt([d["result"].get("missing", 0) for d in ds], "%.0f"))
        print("| %s | %s |%s %s | %s | %s | %s | %s | %s | %s | %s |" % (nm,
              fmt([k(primary(d)) for d in ds], "%.1fk"), ex,
              fmt([l.get("p50_ms") for l in lats], "%.2f"), fmt([l.get("p99_ms") for l in lats], "%.1f"),
              fmt([l.get("p999_ms") for l in lats], "%.1f"), cpu[0], usm, cpu[1], cpu[2], errs))
    print()
lm = load("baseline-lmdb.jsonl")
sk = load("baseline-sink.jsonl")
ec = load("baseline-echo.jsonl")
if lm or sk or ec:
    print("## Baselines: the physical limits on this machine\n")
    print("| baseline | command | rate | server CPU % | bench CPU % | others CPU % |")
    print("|---|---|---|---|---|---|")
    if lm:
        print("| raw LMDB append (MDB_APPEND, 1000 per txn, sync full) | `wsq-storage-bench --baseline-only --size 128 --seconds 5` | %s puts/s (commit p50 %s ms) | - | - | - |" %
              (fmt([k(d["ceiling"]["puts_per_s"]) for d in lm], "%.0fk"),
               fmt([d["ceiling"]["commit_us"]["p50"] / 1000 for d in lm], "%.1f")))
    def echoed(d):
        r = d["result"]
        return r["echoed"] / r["duration_s"] if r.get("duration_s") else None
    for nm, ds, f in (("lws sink: counts messages", sk, lambda d: d["result"].get("sent_per_s")),
                      ("lws echo: echoes, coalesced (echoed msgs/s)", ec, echoed)):
        if ds:
            print("| %s | `wsq-bench publish --mode raw --conns 16 --size 128 --seconds 10 --warmup 2` | %s msgs/s | %s | %s | %s |" % (
                nm, fmt([k(f(d)) for d in ds], "%.0fk"), fmt([d["cpu"]["broker_pct"] for d in ds], "%.0f"),
                fmt([d["cpu"]["bench_pct"] for d in ds], "%.0f"), fmt([d["cpu"]["others_pct"] for d in ds], "%.0f")))
    print()
    def m(sc, sys_="wsq"):
        ds = res.get((sc, sys_))
        return med([primary(d) for d in ds]) if ds else None
    lmr = med([d["ceiling"]["puts_per_s"] for d in lm]) if lm else None
    skr = med([d["result"].get("sent_per_s") for d in sk]) if sk else None
    ecr = med([echoed(d) for d in ec]) if ec else None
    print("Ratios of medians, wsq / baseline:\n")
    print("| wsq measure | wsq | / raw LMDB | / lws sink | / lws echo |")
    print("|---|---|---|---|---|")
    for sc, sys_, nm in (("t1", "wsq", "T1 confirmed publishes/s, sync full"), ("t1", "wsq-none", "T1 confirmed publishes/s, sync none"),
                         ("t2", "wsq", "T2 drained/s"), ("t3", "wsq", "T3 deliveries/s"), ("t3raw", "wsq", "T3 deliveries/s, raw subscribers")):
        v = m(sc, sys_)
        if v is None:
            continue
        r = lambda b: "%.2f" % (v / b) if b else "-"
        # the LMDB append ceiling bounds durable publishing only; deliveries are reads
        print("| %s | %.0fk | %s | %s | %s |" % (nm, v / 1000, r(lmr) if sc == "t1" else "n/a", r(skr), r(ecr)))
    print()
t6 = load("t6.jsonl")
if t6:
    pre = open(os.path.join(out, "t6-preload.txt")).read().strip()
    size = int(open(os.path.join(out, "t6-store-bytes")).read())
    print("## T6 restart with a big store (target: accepting clients within 1 s)\n")
    print("wsq-preload: %s; store %.2f GB.\n" % (pre, size / 1e9))
    print("| page cache of the store | exec -> first WebSocket upgrade (101) s | exec -> /healthz 200 s | message %s readable | wsqd RSS MB |" % "N")
    print("|---|---|---|---|---|")
    for c in ("warm", "cold"):
        ds = [d for d in t6 if d["cache"] == c]
        if ds:
            print("| %s | %s | %s | %s | %s |" % (c, fmt([d.get("upgrade_s") for d in ds], "%.3f"),
                  fmt([d.get("healthz_s") for d in ds], "%.3f"),
                  ",".join("yes" if d.get("last_seq_readable") else "NO" for d in ds),
                  fmt([d.get("rss_kb", 0) / 1024 for d in ds], "%.1f")))
    print()
EOF
log "results in $OUT"
