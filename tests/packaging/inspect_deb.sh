#!/bin/sh
# packaging.inspect: what dpkg-deb says about the package, and what is inside it.
# usage: inspect_deb.sh DEBDIR VERSION SOURCE_DIR
NAME=packaging.inspect
. "$(dirname "$0")/lib.sh"
deb=$(find_deb "$1")
version=$2 src=$3
mk_tmp

field() { dpkg-deb -f "$deb" "$1"; }

# ---- control fields
[ "$(field Package)" = wsq ] || fail "Package is '$(field Package)', not wsq"
[ "$(field Version)" = "$version-1" ] || fail "Version is '$(field Version)', not $version-1"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture is '$(field Architecture)'"
depends=$(field Depends)
say "Depends: $depends"
has_dep() { # the package name as a whole entry of Depends
    printf '%s\n' "$depends" | tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -qx "$1"
}
for p in adduser libwebsockets-evlib-ev; do
    has_dep "$p" || fail "Depends lacks $p"
done
# dpkg-shlibdeps: every shared library a packaged program needs comes from a package in Depends
dpkg-deb -x "$deb" "$TMP/root"
: >"$TMP/libs"
for exe in "$TMP"/root/usr/sbin/* "$TMP"/root/usr/bin/*; do
    ldd "$exe" >"$TMP/ldd"
    for lib in $(objdump -p "$exe" | awk '$1 == "NEEDED" { print $2 }'); do
        path=$(awk -v l="$lib" '$1 == l { print $3 }' "$TMP/ldd")
        [ -n "$path" ] || fail "$exe: $lib not found by ldd"
        echo "$lib $path" >>"$TMP/libs"
    done
done
sort -u "$TMP/libs" -o "$TMP/libs"
# one dpkg -S for all: a library may be registered under /lib or /usr/lib (merged /usr)
# shellcheck disable=SC2046
dpkg -S $(awk '{ print $2; print "/usr" $2 }' "$TMP/libs") 2>/dev/null >"$TMP/owners" || true
while read -r lib path; do
    pkg=$(awk -v p="$path" -v u="/usr$path" '$NF == p || $NF == u { sub(/:.*/, "", $1); print $1; exit }' "$TMP/owners")
    [ -n "$pkg" ] || fail "no package owns $path ($lib)"
    has_dep "$pkg" || fail "the package needs $lib from $pkg, which Depends lacks"
done <"$TMP/libs"
say "Depends covers the $(wc -l <"$TMP/libs") shared libraries the programs need"

# ---- conffiles
dpkg-deb --ctrl-tarfile "$deb" | tar -xf - -C "$TMP" ./conffiles ./postinst ./prerm ./postrm
[ "$(cat "$TMP/conffiles")" = /etc/wsq/wsq.yaml ] || fail "conffiles is not exactly /etc/wsq/wsq.yaml: $(cat "$TMP/conffiles")"
for s in postinst prerm postrm; do
    [ -x "$TMP/$s" ] || fail "$s is not executable"
    sh -n "$TMP/$s" || fail "$s: syntax error"
done
grep -q 'adduser --system' "$TMP/postinst" || fail "postinst does not create a system user"
grep -q 'WSQ_PURGE_DATA' "$TMP/postrm" || fail "postrm does not honour WSQ_PURGE_DATA"

# ---- files: exactly these, plus directories
dpkg-deb -c "$deb" >"$TMP/listing"
awk '$1 !~ /^d/ { print $6 }' "$TMP/listing" | sed 's|^\./|/|' | sort >"$TMP/files"
{
    echo /etc/wsq/wsq.yaml
    echo /lib/systemd/system/wsqd.service
    echo /usr/bin/wsqctl
    echo /usr/sbin/wsqd
    echo /usr/share/doc/wsq/OPERATIONS.md
    echo /usr/share/doc/wsq/PROTOCOL.md
    echo /usr/share/doc/wsq/README.md
    echo /usr/share/doc/wsq/wsqctl.md
    echo /usr/share/doc/wsq/examples/production.yaml
    echo /usr/share/doc/wsq/examples/wsq.yaml
    echo /usr/share/man/man1/wsqctl.1.gz
    echo /usr/share/man/man5/wsq.yaml.5.gz
    echo /usr/share/man/man8/wsqd.8.gz
    [ ! -f "$src/LICENSE" ] || echo /usr/share/doc/wsq/copyright
    echo /usr/bin/wsq-bench
    echo /usr/share/man/man1/wsq-bench.1.gz
} | sort >"$TMP/expected"
if ! diff -u "$TMP/expected" "$TMP/files"; then
    fail "the package's files differ from the expected list (- expected, + packaged)"
fi
for f in /usr/sbin/wsqd /usr/bin/wsqctl; do
    grep -q "^-rwxr-xr-x root/root .* \.$f\$" "$TMP/listing" || fail "$f is not 0755 root:root"
done
grep -q '^-rw-r--r-- root/root .* \./etc/wsq/wsq.yaml$' "$TMP/listing" ||
    fail "/etc/wsq/wsq.yaml is not packaged 0644 root:root (postinst narrows it)"

# ---- the packaged config: conf/wsq.yaml with storage.path /var/lib/wsq, and nothing else
conf="$TMP/root/etc/wsq/wsq.yaml"
sed -n '/^# wsq configuration$/,$p' "$conf" >"$TMP/conf.body"
grep -qx '  path: /var/lib/wsq' "$TMP/conf.body" || fail "/etc/wsq/wsq.yaml: storage.path is not /var/lib/wsq"
sed 's|^  path: ./data$|  path: /var/lib/wsq|' "$src/conf/wsq.yaml" >"$TMP/conf.want"
if ! diff -u "$TMP/conf.want" "$TMP/conf.body" >&2; then
    fail "/etc/wsq/wsq.yaml is not conf/wsq.yaml with storage.path /var/lib/wsq"
fi
"$TMP/root/usr/sbin/wsqd" --check-config "$conf" >/dev/null || fail "wsqd --check-config rejects the packaged config"

# ---- the unit
unit="$TMP/root/lib/systemd/system/wsqd.service"
for line in 'Type=notify' 'NotifyAccess=main' 'User=wsq' 'Group=wsq' 'ExecStart=/usr/sbin/wsqd -c /etc/wsq/wsq.yaml' \
    'ExecReload=/bin/kill -HUP $MAINPID' 'KillSignal=SIGTERM' 'Restart=on-failure' \
    'NoNewPrivileges=yes' 'ProtectSystem=strict' 'ReadWritePaths=/var/lib/wsq' 'PrivateTmp=yes' \
    'ProtectHome=yes' 'WorkingDirectory=/var/lib/wsq' 'WantedBy=multi-user.target'; do
    grep -qxF "$line" "$unit" || fail "wsqd.service lacks '$line'"
done
nofile=$(sed -n 's/^LimitNOFILE=//p' "$unit")
[ "${nofile:-0}" -ge 65536 ] || fail "LimitNOFILE=$nofile is below 65536"
# the stop timeout covers wsqd's shutdown deadline with a margin
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$unit")
deadline=$(sed -n 's/^  shutdown_timeout: \([0-9]*\)s$/\1/p' "$conf")
[ -n "$stop" ] && [ -n "$deadline" ] || fail "cannot read TimeoutStopSec ($stop) or limits.shutdown_timeout ($deadline)"
[ "$stop" -ge $((deadline + 5)) ] || fail "TimeoutStopSec=${stop}s leaves no margin over shutdown_timeout ${deadline}s"

say "ok: $(basename "$deb"): $(wc -l <"$TMP/files") files, conffiles, Depends, config and unit as expected"
