#!/bin/sh
# Builds wsq and runs every test: once in a normal build, once under ASan+UBSan; then the threaded
# tests (writer, service and consumer thread handoffs, takeovers, purges, shutdown) under
# ThreadSanitizer (tools/tsan.sh, a clang build in build-tsan). Without arguments it also runs
# wsqd under valgrind (tools/valgrind.sh) through a start, traffic, shutdown and restart.
# Usage: tools/test.sh [ctest args...]     (e.g. tools/test.sh -R unit)
# Env: WSQ_JOBS (parallel build/test jobs, default: number of cores),
#      WSQ_SKIP_SANITIZE=1 to skip the sanitizer passes (local iteration only; CI runs both).
set -eu
cd "$(dirname "$0")/.."
tools/deps.sh
JOBS=${WSQ_JOBS:-$(nproc)}

build() { # dir, extra cmake args...
    dir=$1; shift
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$dir" -j "$JOBS"
}

build build
echo "== tests (release build)"
(cd build && ctest --output-on-failure -j "$JOBS" "$@")
if [ $# -eq 0 ]; then
    echo "== valgrind (memcheck): wsqd start, traffic, shutdown, restart"
    WSQD=$PWD/build/broker/wsqd tools/valgrind.sh
fi

if [ "${WSQ_SKIP_SANITIZE:-0}" != 1 ]; then
    build build-asan -DWSQ_SANITIZE=ON
    echo "== tests (ASan+UBSan build)"
    (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --output-on-failure -j "$JOBS" "$@")
    echo "== threaded tests (TSan build)"
    WSQ_JOBS=$JOBS tools/tsan.sh "$@"
fi
echo "== all tests passed"
