#!/bin/sh
# Builds wsq with ThreadSanitizer (build-tsan, clang) and runs the threaded tests: the store's
# writer thread (unit tests), and wsqd's service / writer / consumer thread handoffs, takeovers,
# purges, reloads and shutdown (integration scenarios; wsqd is the TSan build too).
# Fails when a test fails or when any process (test or wsqd) wrote a TSan report.
#
# Usage: tools/tsan.sh            the tests labelled "threaded" (ctest -L threaded; the label is
#                                 given in tests/CMakeLists.txt for the unit tests and in
#                                 tests/integration/{,py/,wsqctl/}CMakeLists.txt)
#        tools/tsan.sh --all      every test except packaging (about 4 minutes on 2 cores)
#        tools/tsan.sh -R REGEX   any ctest selection (arguments go to ctest)
# It fails when the selection holds no test (a renamed label or test never passes silently).
# Env:   WSQ_JOBS (build/test jobs, default: number of cores)
#        WSQ_TSAN_BUILD (the build directory, default build-tsan)
# Reports: BUILD/tsan-logs/tsan.<pid> (one file per process that found something).
# Suppressions: tests/tsan.supp (each entry says why it is safe).
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=${WSQ_JOBS:-$(nproc)}

BUILD=${WSQ_TSAN_BUILD:-build-tsan}

if [ $# -eq 0 ]; then
    set -- -L threaded
elif [ "$1" = --all ]; then
    shift
    set -- -E '^packaging\.' "$@"
fi

tools/deps.sh
CC=${CC:-clang} cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWSQ_TSAN=ON \
    -DWSQ_SANITIZE=OFF -DWSQ_FUZZ=OFF -DWSQ_WERROR=ON >/dev/null
cmake --build "$BUILD" -j "$JOBS"

LOGS=$ROOT/$BUILD/tsan-logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
# log_path: wsqd's stderr goes to the scenarios' temp dirs, which are removed; a file per process
# keeps every report. history_size=4 keeps older accesses for the "previous access" stack.
export TSAN_OPTIONS="log_path=$LOGS/tsan suppressions=$ROOT/tests/tsan.supp history_size=4 second_deadlock_stack=1 halt_on_error=0"
rc=0
# --no-tests=error: a selection that matches nothing fails instead of passing
. tools/lib/ctest.sh
run_ctest "$BUILD" --no-tests=error "$@" || rc=$?

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
