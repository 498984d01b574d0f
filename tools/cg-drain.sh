#!/bin/sh
# Instructions wsqd spends per message of a drain (T2 by default), under callgrind.
# usage: tools/cg-drain.sh WSQD OUTFILE [wsq-bench drain options]
# (default options: --preload 200000 --resume --consumers 1 --window 1000 --ack-every 250)
set -eu
WSQD=$(realpath "$1") OUTF=$(realpath -m "$2")
DIR=$(mktemp -d)
cd "$(dirname "$0")/.."
. tools/wsq-bench/wsq-config.sh
wsq_config "$DIR" 0 full >"$DIR/wsq.yaml"
valgrind --tool=callgrind --callgrind-out-file="$OUTF" "$WSQD" -c "$DIR/wsq.yaml" >"$DIR/log" 2>&1 &
PID=$!
PORT=
for i in $(seq 1 300); do
  PORT=$(sed -n 's/.*listening address=[^ ]* port=\([0-9]*\).*/\1/p' "$DIR/log" | head -1)
  [ -n "$PORT" ] && break
  sleep 0.1
done
shift 2
OPTS=${*:-"--preload 200000 --resume --consumers 1 --window 1000 --ack-every 250"}
# shellcheck disable=SC2086
build/bin/wsq-bench drain $OPTS --size 128 --seconds 120 --timeout 120 \
  --url "ws://127.0.0.1:$PORT" --quiet --json >"$DIR/bench.json" || true
DEL=$(curl -s "http://127.0.0.1:$PORT/metrics" | sed -n 's/^wsq_delivered_total //p')
PUB=$(curl -s "http://127.0.0.1:$PORT/metrics" | sed -n 's/^wsq_published_total //p')
kill -TERM $PID; wait $PID || true
IR=$(callgrind_annotate "$OUTF" 2>/dev/null | sed -n 's/^\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
echo "published=$PUB delivered=$DEL instructions=$IR per_msg=$((IR / DEL))"
rm -rf "$DIR"
