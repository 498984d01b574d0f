#!/bin/sh
# Fuzzes one target with libFuzzer for a given time (clang, ASan+UBSan).
# Usage: tools/fuzz.sh TARGET [SECONDS]      TARGET: proto raw_target config http http1 jwt mqtt
# New interesting inputs go to build-fuzz/work/TARGET (start from the repo corpus each time);
# crashes go to build-fuzz/crashes/TARGET: fix the bug, then copy the crasher into
# tests/fuzz/corpus/TARGET so every test run replays it from then on.
set -eu
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 TARGET [SECONDS]" >&2; exit 2; }
T=$1
SECS=${2:-600}
[ -d "tests/fuzz/corpus/$T" ] || { echo "fuzz: no corpus tests/fuzz/corpus/$T" >&2; exit 2; }
tools/deps.sh
CC=clang cmake -S . -B build-fuzz -DWSQ_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWSQ_WERROR=ON >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "fuzz_$T"
mkdir -p "build-fuzz/work/$T" "build-fuzz/crashes/$T"
exec "build-fuzz/tests/fuzz_$T" -max_total_time="$SECS" -print_final_stats=1 \
    -artifact_prefix="build-fuzz/crashes/$T/" "build-fuzz/work/$T" "tests/fuzz/corpus/$T"
