#!/bin/sh
# Builds wsq with ThreadSanitizer (build-tsan, clang) and runs the threaded tests: the store's
# writer thread (unit tests), and wsqd's service / writer / consumer thread handoffs, takeovers,
# purges, reloads and shutdown (integration scenarios; wsqd is the TSan build too).
# Fails when a test fails or when any process (test or wsqd) wrote a TSan report.
#
# Usage: tools/tsan.sh            the threaded set below
#        tools/tsan.sh --all      every test except packaging (about 4 minutes on 2 cores)
#        tools/tsan.sh -R REGEX   any ctest selection (arguments go to ctest)
# Env:   WSQ_JOBS (build/test jobs, default: number of cores)
# Reports: build-tsan/tsan-logs/tsan.<pid> (one file per process that found something).
# Suppressions: tests/tsan.supp (each entry says why it is safe).
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=${WSQ_JOBS:-$(nproc)}

THREADED='^(unit\.test_store|unit\.test_store_concurrency|unit\.test_store_crash|unit\.test_store_large'
THREADED="$THREADED|integration\.(04_resume|06_nack_redelivery|07_window|08_takeover"
THREADED="$THREADED|10_graceful_shutdown|11_kill9_durability|13_many_connections)"
THREADED="$THREADED|integration\.py\.(04_resume|05_gap|10_shutdown|reload)"
THREADED="$THREADED|integration\.wsqctl\.(02_purge_live|03_delete_consumer|04_export_import))\$"

if [ $# -eq 0 ]; then
    set -- -R "$THREADED"
elif [ "$1" = --all ]; then
    shift
    set -- -E '^packaging\.' "$@"
fi

tools/deps.sh
CC=${CC:-clang} cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWSQ_TSAN=ON \
    -DWSQ_SANITIZE=OFF -DWSQ_FUZZ=OFF -DWSQ_WERROR=ON >/dev/null
cmake --build build-tsan -j "$JOBS"

LOGS=$ROOT/build-tsan/tsan-logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
# log_path: wsqd's stderr goes to the scenarios' temp dirs, which are removed; a file per process
# keeps every report. history_size=4 keeps older accesses for the "previous access" stack.
export TSAN_OPTIONS="log_path=$LOGS/tsan suppressions=$ROOT/tests/tsan.supp history_size=4 second_deadlock_stack=1 halt_on_error=0"
rc=0
(cd build-tsan && ctest --output-on-failure -j "$JOBS" "$@") || rc=$?

reports=$(find "$LOGS" -type f -name 'tsan.*' | sort)
if [ -n "$reports" ]; then
    for f in $reports; do
        echo "==== $f"
        cat "$f"
    done
    echo "tsan: $(echo "$reports" | wc -l) process(es) reported; see above and $LOGS" >&2
    exit 1
fi
[ $rc = 0 ] || { echo "tsan: tests failed" >&2; exit $rc; }
echo "== tsan: no reports"
