#!/bin/sh
# packaging.deb: builds the .deb with CPack into its own directory.
# usage: build_deb.sh CPACK CPackConfig.cmake OUTDIR
NAME=packaging.deb
. "$(dirname "$0")/lib.sh"
cpack=$1 config=$2 out=$3
command -v dpkg-shlibdeps >/dev/null || fail "dpkg-shlibdeps not found (Debian: apt-get install dpkg-dev)"
rm -rf "$out"
mkdir -p "$out"
if ! "$cpack" -G DEB --config "$config" -B "$out" >"$out/cpack.log" 2>&1; then
    cat "$out/cpack.log" >&2
    fail "cpack -G DEB failed"
fi
deb=$(find_deb "$out")
say "built $deb ($(wc -c <"$deb") bytes)"
