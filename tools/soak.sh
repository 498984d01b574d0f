#!/bin/sh
# Soak: one wsqd under a mixed load for a long time (default 30 min), sampled every minute.
# Not part of CI. Results: docs/BENCHMARKS.md (Soak).
#
# Usage: tools/soak.sh [-m MINUTES] [-i SECONDS] [-o OUTDIR] [-b BUILDDIR] [-s SEED]
#                      [-r RATE] [-R MAX_MESSAGES]
#   -m  duration of the load in minutes (30)
#   -i  sampling interval in seconds (60)
#   -o  output directory (/tmp/wsq-soak-DATE): samples.csv, summary.txt, chaos.out, chaos.log,
#       wsqd.log (the broker's log is copied before its temp dir goes)
#   -b  build directory with bin/wsqd and bin/wsqctl (build)
#   -s  seed of the load (1)
#   -r  target publishes/s over all publishers (300)
#   -R  retention max_messages of the soak topics (20000), so that the store reaches a steady
#       state: old messages are trimmed and their pages reused
# Env: CHAOS_ARGS, more chaos.py arguments (e.g. "--max-payload 2000": no multi-page values)
#
# The load is tests/chaos/chaos.py without kills (--cycles 0): wsq.v1 publishers with confirms,
# HTTP publishes, 8 durable consumers acking (individually and cumulatively), disconnecting,
# going away for a while and resuming, `wsqctl purge` every 15 s or so, one topic with a
# tiny retention (gaps). chaos.py checks the whole time that nothing confirmed is lost (a
# checkpoint every 20 s) and prints its counts at the end.
#
# Every interval the script samples the broker: VmRSS and RssAnon (/proc/PID/status; RssAnon
# excludes LMDB's file-backed map pages), open fds (/proc/PID/fd), LMDB map use (GET /metrics
# wsq_map_used_bytes) and the size of data.mdb; plus wsq_published_total, wsq_connections,
# what the store holds (sums of wsq_topic_messages and wsq_topic_bytes) and LMDB's used and
# free pages (wsqctl stats), which tell content growth from file growth.
# The summary (tools/lib/soak.py) compares the middle third of the samples with the last third: a
# metric is "flat" when the last third's mean is within 5% of the middle third's (fds: within 2).
# Exit status: non-zero when the load (chaos.py) failed, when there are fewer than 6 samples (no
# steady-state comparison), or when any metric (VmRSS, RssAnon, fds, map used, data.mdb) is not
# flat.
set -eu
cd "$(dirname "$0")/.."
MIN=30
INT=60
OUT=
BUILD=build
SEED=1
RATE=300
RET=20000
while getopts m:i:o:b:s:r:R: opt; do
    case $opt in
    m) MIN=$OPTARG ;;
    i) INT=$OPTARG ;;
    o) OUT=$OPTARG ;;
    b) BUILD=$OPTARG ;;
    s) SEED=$OPTARG ;;
    r) RATE=$OPTARG ;;
    R) RET=$OPTARG ;;
    *) sed -n '2,/^set -eu/p' "$0" | sed '$d' >&2; exit 2 ;;
    esac
done
OUT=${OUT:-/tmp/wsq-soak-$(date +%Y%m%d-%H%M%S)}
WSQD=$BUILD/bin/wsqd
WSQCTL=$BUILD/bin/wsqctl
[ -x "$WSQD" ] && [ -x "$WSQCTL" ] || { echo "soak: build wsqd and wsqctl in $BUILD first" >&2; exit 2; }
mkdir -p "$OUT"
CSV=$OUT/samples.csv
INFO=$OUT/info.json
rm -f "$INFO"

SECS=$((MIN * 60))
# WSQ_KEEP: keep the broker's temp dir so that its log can be copied at the end
WSQ_KEEP=1 /usr/bin/python3 tests/chaos/chaos.py "$WSQD" "$WSQCTL" --cycles 0 --seconds "$SECS" \
    --retention "$RET" --seed "$SEED" --rate "$RATE" --purge-every 15 --info "$INFO" ${CHAOS_ARGS:-} \
    >"$OUT/chaos.out" 2>"$OUT/chaos.log" &
CPID=$!
trap 'kill "$CPID" 2>/dev/null || true' INT TERM

i=0
while [ ! -s "$INFO" ]; do
    sleep 0.2
    i=$((i + 1))
    if [ $i -gt 150 ] || ! kill -0 "$CPID" 2>/dev/null; then
        echo "soak: the load did not start; see $OUT/chaos.log" >&2
        exit 1
    fi
done
field() { /usr/bin/python3 tools/lib/soak.py field "$INFO" "$1"; }
PID=$(field pid)
PORT=$(field port)
DATA=$(field data)
LOGF=$(field log)
echo "soak: wsqd pid $PID port $PORT data $DATA; ${MIN} min, a sample every ${INT} s; output $OUT"

echo "elapsed_s,vmrss_kb,rssanon_kb,fds,map_used_bytes,data_mdb_bytes,published_total,connections,stored_msgs,stored_bytes,pages_used,pages_free" >"$CSV"
status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$PID/status" 2>/dev/null || echo ""; }
sample() {
    el=$1
    [ -d "/proc/$PID" ] || return 1
    rss=$(status_kb VmRSS)
    anon=$(status_kb RssAnon)
    fds=$(ls "/proc/$PID/fd" 2>/dev/null | wc -l)
    m=$(curl -s -m 10 "http://127.0.0.1:$PORT/metrics" || true)
    used=$(printf '%s\n' "$m" | awk '$1 == "wsq_map_used_bytes" { print $2 }')
    pubs=$(printf '%s\n' "$m" | awk '$1 == "wsq_published_total" { print $2 }')
    conns=$(printf '%s\n' "$m" | awk '$1 == "wsq_connections" { print $2 }')
    size=$(stat -c %s "$DATA/data.mdb" 2>/dev/null || echo "")
    # what the store holds (retention and purges keep it bounded) and LMDB's page accounting
    msgs=$(printf '%s\n' "$m" | awk '/^wsq_topic_messages\{/ { s += $2 } END { print s + 0 }')
    bytes=$(printf '%s\n' "$m" | awk '/^wsq_topic_bytes\{/ { s += $2 } END { print s + 0 }')
    pages=$("$WSQCTL" --data "$DATA" --json stats 2>/dev/null |
        /usr/bin/python3 tools/lib/soak.py pages 2>/dev/null || echo ",")
    echo "$el,$rss,$anon,$fds,$used,$size,$pubs,$conns,$msgs,$bytes,$pages" >>"$CSV"
}

START=$(date +%s)
k=0
while kill -0 "$CPID" 2>/dev/null; do
    now=$(date +%s)
    el=$((now - START))
    if [ "$el" -ge $((k * INT)) ]; then
        if [ "$el" -le "$SECS" ]; then
            sample "$el" || true
        fi
        k=$((k + 1))
    fi
    sleep 1
done
set +e
wait "$CPID"
RC=$?
set -e
cp "$LOGF" "$OUT/wsqd.log" 2>/dev/null || true
rm -rf "$(dirname "$LOGF")"

SRC=0
/usr/bin/python3 tools/lib/soak.py summary "$CSV" "$OUT/chaos.out" "$RC" "$MIN" "$INT" "$RATE" \
    "$RET" "$SEED" >"$OUT/summary.txt" || SRC=$?
cat "$OUT/summary.txt"
echo "soak: samples in $CSV, summary in $OUT/summary.txt"
# non-zero when the load failed, when there are too few samples, or when a metric is not flat
[ "$SRC" -eq 0 ]
