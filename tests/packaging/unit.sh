#!/bin/sh
# packaging.unit: systemd-analyze verify on the packaged wsqd.service (skipped without systemd).
# The unit's ExecStart points at the wsqd extracted from the package and the man pages it names
# are not looked up (packaging.install verifies the installed unit with them), so that this check
# does not depend on the package being installed. Any message from verify (even a warning that it
# "ignores" a bad line) fails the test.
# usage: unit.sh DEBDIR
NAME=packaging.unit
. "$(dirname "$0")/lib.sh"
deb=$(find_deb "$1")
command -v systemd-analyze >/dev/null || skip "systemd-analyze not found (no systemd on this machine)"
mk_tmp
dpkg-deb -x "$deb" "$TMP/root"
mkdir "$TMP/unit"
sed "s|^ExecStart=/usr/sbin/wsqd |ExecStart=$TMP/root/usr/sbin/wsqd |" \
    "$TMP/root/lib/systemd/system/wsqd.service" >"$TMP/unit/wsqd.service"
grep -q "^ExecStart=$TMP/root/usr/sbin/wsqd -c /etc/wsq/wsq.yaml\$" "$TMP/unit/wsqd.service" ||
    fail "unexpected ExecStart in wsqd.service"
if ! SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "$TMP/unit/wsqd.service" >"$TMP/out" 2>&1 ||
    [ -s "$TMP/out" ]; then
    cat "$TMP/out" >&2
    fail "systemd-analyze verify wsqd.service"
fi
say "ok: systemd-analyze verify wsqd.service: no complaints ($(systemd-analyze --version | head -n 1))"
