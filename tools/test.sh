#!/bin/sh
# Builds wsq and runs every test: once in a normal build, once under ASan+UBSan; then the threaded
# tests (writer, service and consumer thread handoffs, takeovers, purges, shutdown) under
# ThreadSanitizer (tools/tsan.sh, a clang build in build-tsan). Without arguments it also runs
# wsqd under valgrind (tools/valgrind.sh) through a start, traffic, shutdown and restart.
# It also compiles what distributions build: a Release build (build-release, -O3), which the .deb
# is made from (the packaging tests run there, and only there), and a build with Debian's
# dpkg-buildflags (build-debflags, CMAKE_BUILD_TYPE=None: -O2, _FORTIFY_SOURCE, format-security,
# relro/now). Every build here has -DWSQ_WERROR=ON: any warning fails.
# Usage: tools/test.sh [ctest args...]     (e.g. tools/test.sh -R unit)
# Env: WSQ_JOBS (parallel build/test jobs, default: number of cores),
#      WSQ_SKIP_SANITIZE=1 to skip the sanitizer passes (local iteration only; CI runs both),
#      CI=true (set by CI): every test must run. A skipped test (exit 77: no root, no openssl, no
#      127.0.0.2, ...) fails the run: WSQ_REQUIRE_ALL=1 makes the Python tests and the packaging
#      tests fail a skip themselves, naming what was missing, and every ctest run below is
#      checked for skipped tests (ctest's JUnit report), so no other test can skip either.
set -eu
cd "$(dirname "$0")/.."
tools/deps.sh
JOBS=${WSQ_JOBS:-$(nproc)}
if [ "${CI:-}" = true ]; then
    export WSQ_REQUIRE_ALL=1
fi

. tools/lib/ctest.sh # run_ctest DIR [ctest args...]: ctest, and in CI no test may skip

build() { # dir, build type, extra cmake args...
    dir=$1 type=$2
    shift 2
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DWSQ_WERROR=ON "$@" >/dev/null
    cmake --build "$dir" -j "$JOBS"
}

build build RelWithDebInfo
echo "== Release build"
build build-release Release
echo "== Debian build (dpkg-buildflags, hardening=+all)"
# CMake reads CFLAGS and LDFLAGS from the environment but never CPPFLAGS (_FORTIFY_SOURCE), so the
# flags are passed as debhelper passes them: CPPFLAGS appended to CFLAGS. Passed on every run (not
# only the first configure), so the tree follows dpkg's flags when they change.
debflag() { DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get "$1"; }
build build-debflags None -DCMAKE_C_FLAGS="$(debflag CFLAGS) $(debflag CPPFLAGS)" \
    -DCMAKE_EXE_LINKER_FLAGS="$(debflag LDFLAGS)"

echo "== tests (RelWithDebInfo build)"
run_ctest build -LE packaging "$@"
echo "== packaging tests (the .deb of the Release build)"
run_ctest build-release -L packaging "$@"
if [ $# -eq 0 ]; then
    echo "== valgrind (memcheck): wsqd start, traffic, shutdown, restart"
    WSQD=$PWD/build/bin/wsqd tools/valgrind.sh
fi

if [ "${WSQ_SKIP_SANITIZE:-0}" != 1 ]; then
    build build-asan RelWithDebInfo -DWSQ_SANITIZE=ON
    echo "== tests (ASan+UBSan build)"
    (export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
        run_ctest build-asan -LE packaging "$@")
    echo "== threaded tests (TSan build)"
    WSQ_JOBS=$JOBS tools/tsan.sh "$@"
fi
echo "== all tests passed"
