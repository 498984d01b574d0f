#!/bin/sh
# packaging.version: wsqd --version and wsqctl --version (the packaged programs) print the
# version, the on-disk format version and the versions of the linked libwebsockets, LMDB and
# libyaml, one per line.
# usage: version.sh DEBDIR VERSION
NAME=packaging.version
. "$(dirname "$0")/lib.sh"
deb=$(find_deb "$1")
version=$2
mk_tmp
dpkg-deb -x "$deb" "$TMP/root"
bad=0
for prog in usr/sbin/wsqd usr/bin/wsqctl; do
    name=$(basename "$prog")
    "$TMP/root/$prog" --version >"$TMP/v" || fail "$name --version failed"
    [ "$(head -n 1 "$TMP/v")" = "$name $version" ] || { say "$name --version: first line is not '$name $version'"; bad=1; }
    for want in '^on-disk format [0-9][0-9]*$' '^libwebsockets [0-9]' '^LMDB [0-9]' '^libyaml [0-9]'; do
        grep -q "$want" "$TMP/v" || { say "$name --version has no line matching $want"; bad=1; }
    done
    say "$name --version: $(tr '\n' '|' <"$TMP/v")"
done
[ "$bad" = 0 ] || fail "--version does not print all it should (see above)"
