#!/bin/sh
# Runs the wsq-bench scenarios against wsqd, a fresh broker (temp config, temp store) per run,
# and prints the median and spread of each. Results: one JSON object per run in OUT/<name>.jsonl.
#
# Usage: tools/wsq-bench/run-wsq.sh [-n RUNS] [-o OUTDIR] [NAME...]
#   NAME: t1 t1raw t2 wq t3 t3raw t4 t5 t5raw (default: all)
# Env:  WSQD (default build/bin/wsqd), WSQ_BENCH (default build/bin/wsq-bench),
#       SYNC (storage.sync, default full), BENCH_ARGS (extra wsq-bench arguments for every run)
set -eu
cd "$(dirname "$0")/../.."
. tools/wsq-bench/wsq-config.sh
RUNS=3
OUT=${TMPDIR:-/tmp}/wsq-bench-results
while getopts n:o: opt; do
    case $opt in
    n) RUNS=$OPTARG ;;
    o) OUT=$OPTARG ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
NAMES=${*:-t1 t1raw t2 wq t3 t3raw t4 t5 t5raw}
WSQD=${WSQD:-build/bin/wsqd}
BENCH=${WSQ_BENCH:-build/bin/wsq-bench}
SYNC=${SYNC:-full}
mkdir -p "$OUT"

# The scenario of each name (arguments after --url and --broker-pid).
args() {
    case $1 in
    t1) echo "publish --conns 16 --window 256 --size 128 --seconds 5 --warmup 1" ;;
    t1raw) echo "publish --mode raw --pub-token benchpub --verify --conns 16 --size 128 --seconds 10 --warmup 2" ;;
    t2) echo "drain --preload 1000000 --resume --consumers 1 --window 1000 --ack-every 250 --size 128 --seconds 30" ;;
    # t2 as a work queue: the same 1M backlog (the shared consumer is created before the
    # preload) drained by 8 fresh members, 8 x 125 = t2's 1000 in flight, each message acked
    # on its own (a shared consumer takes no cumulative acks, hence no --ack-every)
    wq) echo "drain --preload 1000000 --resume --shared --consumers 8 --window 125 --size 128 --seconds 30" ;;
    t3) echo "fanout --rate 1000 --subs 1000 --size 128 --seconds 10 --warmup 2" ;;
    t3raw) echo "fanout --rate 1000 --subs 1000 --sub-mode raw --size 128 --seconds 10 --warmup 2" ;;
    t4) echo "latency --rate 10000 --size 128 --seconds 10 --warmup 2" ;;
    t5) echo "idle --conns 10000 --seconds 30" ;;
    t5raw) echo "idle --conns 10000 --mode raw --seconds 30" ;;
    *) echo "unknown name $1" >&2; exit 2 ;;
    esac
}

PID=
DIR=
stop_broker() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
        PID=
    fi
    if [ -n "$DIR" ]; then
        rm -rf "$DIR"
        DIR=
    fi
}
trap stop_broker EXIT INT TERM

start_broker() {
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/wsq-bench.XXXXXX")
    wsq_config "$DIR" 0 "$SYNC" >"$DIR/wsq.yaml"
    "$WSQD" -c "$DIR/wsq.yaml" >"$DIR/wsqd.log" 2>&1 &
    PID=$!
    i=0
    PORT=
    while [ $i -lt 100 ]; do
        PORT=$(sed -n 's/.*listening address=[^ ]* port=\([0-9]*\).*/\1/p' "$DIR/wsqd.log" 2>/dev/null | head -1)
        [ -n "$PORT" ] && break
        sleep 0.1
        i=$((i + 1))
    done
    if [ -z "$PORT" ]; then
        cat "$DIR/wsqd.log" >&2
        echo "wsqd did not start" >&2
        exit 1
    fi
}

for name in $NAMES; do
    : >"$OUT/$name.jsonl"
    r=1
    while [ $r -le "$RUNS" ]; do
        start_broker
        echo "== $name run $r/$RUNS: wsq-bench $(args "$name") (wsqd pid $PID port $PORT)" >&2
        # shellcheck disable=SC2046
        "$BENCH" $(args "$name") --url "ws://127.0.0.1:$PORT" --broker-pid "$PID" --json --quiet \
            ${BENCH_ARGS:-} >>"$OUT/$name.jsonl" || echo "   (run reported errors)" >&2
        stop_broker
        r=$((r + 1))
        sleep 1
    done
done

python3 tools/lib/bench_summary.py "$OUT" $NAMES
