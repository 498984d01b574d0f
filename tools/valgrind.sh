#!/bin/sh
# Runs wsqd under Valgrind (memcheck) through a full start, traffic and SIGTERM shutdown, twice on
# the same data dir (the second run recovers the store and resumes a durable consumer), and fails
# unless both runs exit 0 with 0 errors and 0 bytes definitely or indirectly lost.
#
# Usage: tools/valgrind.sh             (builds build-valgrind: a normal RelWithDebInfo build)
# Env:   WSQD=/path/to/wsqd            use that (non-sanitizer) binary instead of building one
#        WSQ_KEEP=1                    keep the temp dir (config, data, wsqd and valgrind logs)
#        WSQ_VG_BUILD_TYPE=Debug       build type of build-valgrind (default RelWithDebInfo)
#
# Traffic (python3-websockets 10.x from Debian, /usr/bin/python3, tools/lib/valgrind_drive.py):
#   run 1: raw mode publish (text + binary) and subscribe (ephemeral and ?consumer=);
#          wsq.v1 publish with confirms (text + base64), an ephemeral subscription, a durable
#          consumer with acks (seq and upto), a nack, a resume and a takeover; bad frames;
#          HTTP publish, history, healthz, metrics, 404/405, admin whoami, purge, import,
#          delete-consumer; then SIGTERM while a wsq.v1 and a raw client are connected and a
#          publisher has confirms in flight (they must see close 1001).
#   run 2: the same data dir: the durable consumer resumes with its unacknowledged messages,
#          history still has what was confirmed, then SIGTERM.
# "still reachable" blocks (libwebsockets, OpenSSL, libc at exit) are not failures; "possibly
# lost" is shown (--show-leak-kinds) but not counted: read the log when the summary lists any.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=/usr/bin/python3

command -v valgrind >/dev/null || { echo "valgrind: valgrind is not installed" >&2; exit 2; }
$PY -c 'import websockets' 2>/dev/null ||
    { echo "valgrind: needs python3-websockets for $PY" >&2; exit 2; }

if [ -z "${WSQD:-}" ]; then
    tools/deps.sh
    cmake -S . -B build-valgrind -DCMAKE_BUILD_TYPE="${WSQ_VG_BUILD_TYPE:-RelWithDebInfo}" \
        -DWSQ_SANITIZE=OFF -DWSQ_TSAN=OFF -DWSQ_FUZZ=OFF -DWSQ_WERROR=ON >/dev/null
    cmake --build build-valgrind -j "$(nproc)" --target wsqd
    WSQD=$ROOT/build-valgrind/bin/wsqd
fi
if nm "$WSQD" 2>/dev/null | grep -q '__asan_init\|__tsan_init'; then
    echo "valgrind: $WSQD is a sanitizer build; valgrind needs a normal one" >&2
    exit 2
fi

DIR=$(mktemp -d /tmp/wsq-valgrind.XXXXXX)
VGPID=""
cleanup() {
    if [ -n "$VGPID" ] && kill -0 "$VGPID" 2>/dev/null; then kill -KILL "$VGPID" 2>/dev/null || :; fi
    if [ "${WSQ_KEEP:-0}" = 1 ]; then echo "valgrind: kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$DIR/wsq.yaml" <<EOF
listeners:
  - address: 127.0.0.1
    port: 0
storage:
  path: $DIR/data
  sync: full
  map_size_initial: 4MiB
limits:
  max_message_size: 256KiB
  ack_wait: 2s
  shutdown_timeout: 20s
auth:
  anonymous:
    publish: [">"]
    subscribe: [">"]
    admin: true
log:
  level: debug
  format: text
EOF


# run N: start wsqd under valgrind, wait until ready, drive traffic, SIGTERM, check everything
vg_run() {
    n=$1
    log=$DIR/wsqd.$n.log vglog=$DIR/valgrind.$n.log
    rm -f "$DIR/holding"
    valgrind --leak-check=full --show-leak-kinds=definite,indirect,possible \
        --errors-for-leak-kinds=definite,indirect --error-exitcode=99 --track-origins=yes \
        --num-callers=30 --log-file="$vglog" \
        "$WSQD" -c "$DIR/wsq.yaml" >"$log" 2>&1 &
    VGPID=$!
    port=""
    i=0
    while [ $i -lt 1200 ]; do # 120 s
        if [ -z "$port" ]; then
            port=$(sed -n 's/.*listening address=[^ ]* port=\([0-9]*\).*/\1/p' "$log" | head -n1)
        fi
        if [ -n "$port" ] && grep -q '\bready\b' "$log"; then break; fi
        kill -0 "$VGPID" 2>/dev/null || { echo "valgrind: wsqd died at start"; tail -n 30 "$log"; exit 1; }
        sleep 0.1
        i=$((i + 1))
    done
    [ -n "$port" ] && grep -q '\bready\b' "$log" || { echo "valgrind: wsqd not ready"; exit 1; }
    echo "== run $n: wsqd (pid $VGPID) under valgrind on port $port"

    $PY tools/lib/valgrind_drive.py "$n" "$port" "$DIR" &
    drv=$!
    while [ ! -e "$DIR/holding" ] && kill -0 $drv 2>/dev/null; do sleep 0.2; done
    [ -e "$DIR/holding" ] || { wait $drv || :; echo "valgrind: traffic run $n failed"; tail -n 30 "$log"; exit 1; }
    sleep 1
    kill -TERM "$VGPID"
    drc=0
    wait $drv || drc=$?
    rc=0
    wait "$VGPID" || rc=$?
    VGPID=""
    [ $drc = 0 ] || { echo "valgrind: traffic run $n failed"; tail -n 30 "$log"; exit 1; }

    errs=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$vglog" | tail -n1)
    def=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$vglog" | tail -n1 | tr -d ,)
    ind=$(sed -n 's/.*indirectly lost: \([0-9,]*\) bytes.*/\1/p' "$vglog" | tail -n1 | tr -d ,)
    pos=$(sed -n 's/.*possibly lost: \([0-9,]*\) bytes.*/\1/p' "$vglog" | tail -n1 | tr -d ,)
    echo "   exit $rc, errors ${errs:-?}, definitely lost ${def:-0}, indirectly lost ${ind:-0}," \
        "possibly lost ${pos:-0} bytes"
    sed -n '/HEAP SUMMARY/,$p' "$vglog" | sed 's/^==[0-9]*== /   /'
    if [ "$rc" != 0 ] || [ "${errs:-1}" != 0 ] || [ "${def:-0}" != 0 ] || [ "${ind:-0}" != 0 ]; then
        echo "valgrind: run $n FAILED; the full report:"
        cat "$vglog"
        echo "---- wsqd log tail ----"
        tail -n 40 "$log"
        WSQ_KEEP=1
        exit 1
    fi
}

vg_run 1
vg_run 2
echo "== valgrind: 2 runs, 0 errors, 0 bytes definitely or indirectly lost"
