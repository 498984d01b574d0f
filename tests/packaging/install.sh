#!/bin/sh
# packaging.install: installs the package on this machine for real, uses it, removes it.
#
#   dpkg -i: the wsq user and group, /var/lib/wsq (0750 wsq:wsq), /etc/wsq/wsq.yaml (0640 root:wsq),
#            the unit enabled; wsqd --check-config /etc/wsq/wsq.yaml as root and as wsq; the man
#            pages; systemd-analyze verify of the installed unit (where present)
#   run:     the installed wsqd as the wsq user in the foreground on a free port with the packaged
#            storage path; publish one message over HTTP, read it back, /healthz, wsqctl sees the
#            topic; SIGTERM by pid: exit 0
#   dpkg -r: programs gone, /etc/wsq/wsq.yaml and the data in /var/lib/wsq still there
#   dpkg -i again: the data survives a reinstall
#   dpkg -P: /etc/wsq, the unit's symlinks and the stat overrides gone, the data still there;
#            WSQ_PURGE_DATA=yes dpkg -P (after one more install): the data gone too
#
# A real install (not a scratch root): dpkg --root needs a complete Debian system inside the
# root, because the maintainer scripts run chrooted there (adduser, dpkg-statoverride, getent);
# and only a real install shows that the package's dependencies, user, permissions and scripts
# work together. This is safe here because the test refuses to touch a wsq package, a data
# directory or anything it did not create: it needs root, skips when a wsq package it did not
# install is present or /var/lib/wsq holds someone's data, holds a lock (two build trees or
# ctest runs never overlap), and on exit puts the machine back as it found it: package purged,
# /var/lib/wsq deleted, the wsq user and group deleted if it created them. A run that was
# killed leaves a marker (/var/lib/wsq-packaging-test.state) so the next run can undo what it did.
# dpkg runs with --no-triggers and the pending triggers (man-db's) are processed once at the end:
# mandb takes seconds, and would otherwise run after each of the six dpkg calls. Where systemd
# runs, the unit is masked at runtime for the test, so that the packaged service never starts.
#
# usage: install.sh DEBDIR VERSION
NAME=packaging.install
. "$(dirname "$0")/lib.sh"
deb=$(find_deb "$1")
version=$2

[ "$(id -u)" = 0 ] || skip "needs root (it installs the package on this machine)"
command -v dpkg >/dev/null || skip "no dpkg"
DATA=/var/lib/wsq
# written before the install, removed once everything is undone: a run that was killed leaves
# it, and the next run undoes what that run did
MARK=/var/lib/wsq-packaging-test.state
LOCK=/run/lock/wsq-packaging-test.lock
[ -d /run/lock ] || LOCK=/tmp/wsq-packaging-test.lock
unset WSQ_PURGE_DATA

exec 9>"$LOCK"
flock -w 120 9 || fail "could not take $LOCK within 120 s (another packaging.install runs?)"

status() { dpkg-query -W -f='${Status}' wsq 2>/dev/null || true; }
dpkg_q() { # dpkg quietly; its output only when it fails. Waits up to 60 s for dpkg's lock.
    n=0
    while ! "$@" >"$TMP/dpkg.log" 2>&1; do
        n=$((n + 1))
        if [ $n -le 60 ] && grep -q 'lock' "$TMP/dpkg.log"; then
            sleep 1
            continue
        fi
        cat "$TMP/dpkg.log" >&2
        return 1
    done
}

TMP=$(mktemp -d /tmp/wsq-packaging-install.XXXXXX)
chmod 0755 "$TMP" # the wsq user reads the test config in it
PID=
INSTALLED=0
CREATED_USER=0
RAN_DPKG=0
MASKED=0

cleanup() {
    rc=$?
    set +e
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -KILL "$PID"
        wait "$PID" 2>/dev/null
    fi
    if [ "$INSTALLED" = 1 ] && [ -n "$(status)" ]; then
        WSQ_PURGE_DATA=yes dpkg --no-triggers --purge wsq >/dev/null 2>&1
    fi
    [ "$INSTALLED" = 1 ] && rm -rf "$DATA"
    if [ "$CREATED_USER" = 1 ]; then
        getent passwd wsq >/dev/null && userdel wsq
        getent group wsq >/dev/null && groupdel wsq
    fi
    [ "$MASKED" = 1 ] && systemctl --runtime unmask wsqd.service >/dev/null 2>&1
    # the man-db trigger (mandb, seconds each time) runs once, here, not after every dpkg call
    [ "$RAN_DPKG" = 1 ] && dpkg --triggers-only --pending >/dev/null 2>&1
    if [ "$RAN_DPKG" = 1 ] && [ -z "$(status)" ] && [ ! -e "$DATA" ]; then
        rm -f "$MARK"
    fi
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# ---- refuse to touch what is not ours; clean up after a killed run of this test -----------------
if [ -f "$MARK" ]; then
    say "undoing an earlier run of this test that was killed ($(tr '\n' ' ' <"$MARK"))"
    grep -q '^created_user=1$' "$MARK" && CREATED_USER=1
    # its wsqd, if it still runs (that pid, and only if it is that wsqd)
    old=$(sed -n 's/^wsqd_pid=//p' "$MARK")
    if [ -n "$old" ] && tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null |
        grep -q '^/usr/sbin/wsqd -c /tmp/wsq-packaging-install\.'; then
        kill -KILL "$old"
    fi
    INSTALLED=1
    RAN_DPKG=1
    if [ -n "$(status)" ]; then
        dpkg_q env WSQ_PURGE_DATA=yes dpkg --no-triggers --purge wsq || fail "cannot purge the leftover wsq package"
    fi
    rm -rf "$DATA"
    if [ "$CREATED_USER" = 1 ]; then
        ! getent passwd wsq >/dev/null || userdel wsq
        ! getent group wsq >/dev/null || groupdel wsq
    fi
    old=$(sed -n 's|^tmp=\(/tmp/wsq-packaging-install\.[A-Za-z0-9]*\)$|\1|p' "$MARK")
    [ -z "$old" ] || rm -rf "$old"
    rm -f "$MARK"
    INSTALLED=0
    CREATED_USER=0
fi
[ -z "$(status)" ] || skip "a wsq package is installed on this machine ($(status)); not touching it"
[ ! -e "$DATA" ] || skip "$DATA exists (kept data of an earlier install?); not touching it"
[ ! -e /etc/wsq ] || skip "/etc/wsq exists; not touching it"
getent passwd wsq >/dev/null || CREATED_USER=1

# ---- install -------------------------------------------------------------------------------
# Where systemd runs, postinst would start wsqd.service on 127.0.0.1:8080 while other tests run
# (some expect nothing there). A runtime mask (gone at reboot, undone on exit) keeps it from
# starting; postinst ignores the failed start, as it ignores any.
if [ -d /run/systemd/system ]; then
    systemctl --runtime mask wsqd.service >/dev/null 2>&1 || fail "systemctl --runtime mask wsqd.service"
    MASKED=1
fi
printf 'created_user=%s\ntmp=%s\n' "$CREATED_USER" "$TMP" >"$MARK"
INSTALLED=1
RAN_DPKG=1
if ! dpkg_q dpkg --no-triggers -i "$deb"; then
    fail "dpkg -i $(basename "$deb") failed (missing dependencies? tools/deps.sh installs them)"
fi
[ "$(status)" = "install ok installed" ] || fail "after dpkg -i the status is '$(status)'"
say "installed $(basename "$deb")"

getent passwd wsq >/dev/null || fail "no wsq user"
getent group wsq >/dev/null || fail "no wsq group"
[ "$(getent passwd wsq | cut -d: -f6)" = "$DATA" ] || fail "the wsq user's home is not $DATA"
uid=$(id -u wsq)
[ "$uid" -lt 1000 ] || fail "wsq is not a system user (uid $uid)"
[ "$(stat -c '%U:%G %a' "$DATA")" = "wsq:wsq 750" ] || fail "$DATA is $(stat -c '%U:%G %a' "$DATA"), not wsq:wsq 750"
[ "$(stat -c '%U:%G %a' /etc/wsq/wsq.yaml)" = "root:wsq 640" ] ||
    fail "/etc/wsq/wsq.yaml is $(stat -c '%U:%G %a' /etc/wsq/wsq.yaml), not root:wsq 640"
if [ -x /usr/bin/deb-systemd-helper ]; then
    [ -L /etc/systemd/system/multi-user.target.wants/wsqd.service ] || fail "wsqd.service is not enabled"
fi
[ "$(/usr/sbin/wsqd --version | head -n 1)" = "wsqd $version" ] || fail "wsqd --version: $(/usr/sbin/wsqd --version | head -n 1)"
[ "$(/usr/bin/wsqctl --version | head -n 1)" = "wsqctl $version" ] || fail "wsqctl --version: $(/usr/bin/wsqctl --version | head -n 1)"
/usr/sbin/wsqd --check-config /etc/wsq/wsq.yaml >/dev/null || fail "wsqd --check-config /etc/wsq/wsq.yaml (root)"
setpriv --reuid=wsq --regid=wsq --init-groups /usr/sbin/wsqd --check-config /etc/wsq/wsq.yaml >/dev/null ||
    fail "wsqd --check-config /etc/wsq/wsq.yaml as the wsq user"
if command -v man >/dev/null; then
    for p in 8/wsqd 1/wsqctl 5/wsq.yaml; do
        man -w "${p#*/}.${p%/*}" 2>/dev/null | grep -q "/usr/share/man/man${p%/*}/${p#*/}.${p%/*}.gz" ||
            fail "man cannot find ${p#*/}(${p%/*})"
    done
fi
# (with the unit masked, packaging.unit's verify of the same file has to do)
if command -v systemd-analyze >/dev/null && [ "$MASKED" = 0 ]; then
    if ! systemd-analyze verify /lib/systemd/system/wsqd.service >"$TMP/verify" 2>&1 || [ -s "$TMP/verify" ]; then
        cat "$TMP/verify" >&2
        fail "systemd-analyze verify /lib/systemd/system/wsqd.service"
    fi
fi
if [ "$MASKED" = 1 ]; then
    systemctl is-active --quiet wsqd.service && fail "wsqd.service runs although it is masked"
fi

# ---- run the installed wsqd as the wsq user, on a free port, with the packaged storage path ----
sed 's/^    port: 8080$/    port: 0/' /etc/wsq/wsq.yaml >"$TMP/wsq.yaml"
grep -q '^    port: 0$' "$TMP/wsq.yaml" || fail "cannot find the listener port in /etc/wsq/wsq.yaml"
chmod 0644 "$TMP/wsq.yaml"
# (without fd 9: a wsqd left running must not hold the lock)
(cd "$DATA" && exec setpriv --reuid=wsq --regid=wsq --init-groups /usr/sbin/wsqd -c "$TMP/wsq.yaml") \
    2>"$TMP/wsqd.log" 9>&- &
PID=$!
echo "wsqd_pid=$PID" >>"$MARK"
i=0
until grep -q ' ready ' "$TMP/wsqd.log"; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 "$PID" 2>/dev/null; then
        cat "$TMP/wsqd.log" >&2
        fail "wsqd did not get ready"
    fi
    sleep 0.1
done
port=$(sed -n 's/.* listening address=127\.0\.0\.1 port=\([0-9]*\) .*/\1/p' "$TMP/wsqd.log")
[ -n "$port" ] || { cat "$TMP/wsqd.log" >&2; fail "no listening line in the log"; }
[ "$(ps -o user= -p "$PID")" = wsq ] || fail "wsqd runs as $(ps -o user= -p "$PID"), not wsq"
grep -q "storage=$DATA " "$TMP/wsqd.log" || fail "wsqd does not use $DATA"
url=http://127.0.0.1:$port
topic=pkg.install.$$
msg="hello from the package $$"
out=$(curl -sS -m 10 -H 'Content-Type: text/plain' --data-binary "$msg" "$url/topics/$topic") ||
    fail "publish failed"
[ "$out" = "{\"seq\":1,\"topic\":\"$topic\"}" ] || fail "publish answered: $out"
out=$(curl -sS -m 10 "$url/topics/$topic/messages?from=1") || fail "read back failed"
printf '%s' "$out" | grep -qF "\"seq\":1,\"ts\":" || fail "read back: no seq 1: $out"
printf '%s' "$out" | grep -qF "\"data\":\"$msg\"" || fail "read back: not the message: $out"
curl -sS -m 10 -f "$url/healthz" | grep -q '"status":"ok"' || fail "/healthz is not ok"
/usr/bin/wsqctl --data "$DATA" --json topics | grep -qF "\"name\":\"$topic\"" || fail "wsqctl does not see $topic"
kill -TERM "$PID"
rc=0
wait "$PID" || rc=$?
PID=
[ "$rc" = 0 ] || { cat "$TMP/wsqd.log" >&2; fail "wsqd exited $rc after SIGTERM"; }
grep -q 'shutdown phase=done' "$TMP/wsqd.log" || fail "no clean shutdown in the log"
[ -f "$DATA/data.mdb" ] || fail "no $DATA/data.mdb"
[ "$(stat -c %U "$DATA/data.mdb")" = wsq ] || fail "$DATA/data.mdb is not owned by wsq"
say "wsqd ran as wsq on port $port: published and read back one message on $topic, exit 0"

# ---- remove: programs go, config and data stay --------------------------------------------------
dpkg_q dpkg --no-triggers --remove wsq || fail "dpkg --remove wsq failed"
[ "$(status)" = "deinstall ok config-files" ] || fail "after dpkg -r the status is '$(status)'"
[ ! -e /usr/sbin/wsqd ] || fail "/usr/sbin/wsqd is still there after remove"
[ -f /etc/wsq/wsq.yaml ] || fail "/etc/wsq/wsq.yaml is gone after remove (a conffile stays until purge)"
[ -f "$DATA/data.mdb" ] || fail "remove deleted the data in $DATA"
say "removed: /etc/wsq/wsq.yaml and $DATA/data.mdb are still there"

# ---- install again: the data survives ---------------------------------------------------------
dpkg_q dpkg --no-triggers -i "$deb" || fail "dpkg -i over the kept data failed"
[ -f "$DATA/data.mdb" ] || fail "reinstall deleted the data"
[ "$(stat -c '%U:%G %a' "$DATA")" = "wsq:wsq 750" ] || fail "$DATA is $(stat -c '%U:%G %a' "$DATA") after reinstall"
/usr/bin/wsqctl --data "$DATA" --json topics | grep -qF "\"name\":\"$topic\"" || fail "the topic is gone after reinstall"

# ---- purge without asking: the data stays -------------------------------------------------
dpkg_q dpkg --no-triggers --purge wsq || fail "dpkg --purge wsq failed"
[ -z "$(status)" ] || fail "after purge the status is '$(status)'"
[ ! -e /etc/wsq ] || fail "/etc/wsq is still there after purge"
[ -f "$DATA/data.mdb" ] || fail "purge deleted the data without WSQ_PURGE_DATA=yes"
! dpkg-statoverride --list | grep -q ' /etc/wsq/' || fail "a stat override of /etc/wsq is left after purge"
for f in /etc/systemd/system/wsqd.service /etc/systemd/system/multi-user.target.wants/wsqd.service; do
    [ ! -e "$f" ] && [ ! -L "$f" ] || fail "$f is left after purge"
done
say "purged: /etc/wsq, the unit's symlinks and stat overrides are gone, $DATA/data.mdb is kept"

# ---- purge, asking for the data to go ---------------------------------------------------------
dpkg_q dpkg --no-triggers -i "$deb" || fail "dpkg -i (third) failed"
dpkg_q env WSQ_PURGE_DATA=yes dpkg --no-triggers --purge wsq || fail "WSQ_PURGE_DATA=yes dpkg --purge wsq failed"
[ ! -e "$DATA" ] || fail "WSQ_PURGE_DATA=yes dpkg --purge left $DATA"
INSTALLED=0
say "purged with WSQ_PURGE_DATA=yes: $DATA is gone"

# ---- the machine is as it was ---------------------------------------------------------------
if [ "$CREATED_USER" = 1 ]; then
    userdel wsq
    ! getent group wsq >/dev/null || groupdel wsq
    CREATED_USER=0
fi
left=$(find /etc/systemd /var/lib/systemd/deb-systemd-helper-enabled \
    /var/lib/systemd/deb-systemd-helper-masked -name 'wsqd*' 2>/dev/null || true)
[ -z "$left" ] || fail "left behind: $left"
say "ok: nothing left behind"
