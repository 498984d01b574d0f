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
#      WSQ_SKIP_SANITIZE=1 to skip the sanitizer passes (local iteration only; CI runs both).
set -eu
cd "$(dirname "$0")/.."
tools/deps.sh
JOBS=${WSQ_JOBS:-$(nproc)}

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
(cd build && ctest --output-on-failure -j "$JOBS" -LE packaging "$@")
echo "== packaging tests (the .deb of the Release build)"
(cd build-release && ctest --output-on-failure -j "$JOBS" -L packaging "$@")
if [ $# -eq 0 ]; then
    echo "== valgrind (memcheck): wsqd start, traffic, shutdown, restart"
    WSQD=$PWD/build/bin/wsqd tools/valgrind.sh
fi

if [ "${WSQ_SKIP_SANITIZE:-0}" != 1 ]; then
    build build-asan RelWithDebInfo -DWSQ_SANITIZE=ON
    echo "== tests (ASan+UBSan build)"
    (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --output-on-failure -j "$JOBS" -LE packaging "$@")
    echo "== threaded tests (TSan build)"
    WSQ_JOBS=$JOBS tools/tsan.sh "$@"
fi
echo "== all tests passed"
