#!/bin/sh
# Builds wsqd and starts it in the foreground on the embedded default config
# (conf/wsq.yaml: listener 127.0.0.1:8080, data in ./data, sync: full).
# Extra arguments go to wsqd, e.g. tools/run.sh -c conf/wsq.yaml
set -eu
cd "$(dirname "$0")/.."
tools/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)"
exec build/bin/wsqd "$@"
