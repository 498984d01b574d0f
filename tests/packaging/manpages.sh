#!/bin/sh
# packaging.manpages: the man pages in the package exist, render without warnings (where groff
# is installed), carry the version, and mention every option and command of the packaged
# programs' --help, and every key of the packaged config.
# usage: manpages.sh DEBDIR VERSION
NAME=packaging.manpages
. "$(dirname "$0")/lib.sh"
deb=$(find_deb "$1")
version=$2
mk_tmp
dpkg-deb -x "$deb" "$TMP/root"
man="$TMP/root/usr/share/man"
have_groff=0
command -v groff >/dev/null && have_groff=1 || say "groff not found (Debian: groff-base): pages not rendered"

# PAGE renders cleanly and has the usual sections
check_page() {
    page=$1
    [ -s "$page" ] || fail "$page is missing or empty (no help2man when cmake ran? tools/deps.sh installs it)"
    if [ "$have_groff" = 1 ]; then
        zcat "$page" | groff -man -ww -z 2>"$TMP/warn" || fail "groff fails on $page"
        [ ! -s "$TMP/warn" ] || { cat "$TMP/warn" >&2; fail "groff warns about $page"; }
    fi
    for sec in NAME SYNOPSIS DESCRIPTION; do
        man_text "$page" | grep -q "^\.SH \"\{0,1\}$sec" || fail "$page has no $sec section"
    done
    man_text "$page" | grep -q "^\.TH .*\"[^\"]* $version\"" || fail "$page does not carry version $version"
}

# every option (-x, --xyz) and every command ("  name ...") of PROGRAM --help is in PAGE
check_help() {
    prog=$1 page=$2
    "$prog" --help >"$TMP/help" || fail "$prog --help failed"
    man_text "$page" >"$TMP/page"
    n=0
    for opt in $(grep -oE -- '(^|[][ ,(|])--?[A-Za-z][A-Za-z0-9-]*' "$TMP/help" | sed 's/^[][ ,(|]//' | sort -u); do
        grep -qF -- "$opt" "$TMP/page" || fail "$(basename "$page"): option $opt of $(basename "$prog") --help is missing"
        n=$((n + 1))
    done
    for cmd in $(sed -n 's/^  \([a-z][a-z-]*\)\( .*\)\{0,1\}$/\1/p' "$TMP/help" | sort -u); do
        grep -qE -- "(^|[^a-z-])$cmd([^a-z-]|\$)" "$TMP/page" ||
            fail "$(basename "$page"): command $cmd of $(basename "$prog") --help is missing"
        n=$((n + 1))
    done
    [ "$n" -ge 5 ] || fail "only $n options and commands found in $(basename "$prog") --help"
    say "$(basename "$page"): all $n options and commands of $(basename "$prog") --help"
}

check_page "$man/man8/wsqd.8.gz"
check_help "$TMP/root/usr/sbin/wsqd" "$man/man8/wsqd.8.gz"
check_page "$man/man1/wsqctl.1.gz"
check_help "$TMP/root/usr/bin/wsqctl" "$man/man1/wsqctl.1.gz"
check_page "$man/man1/wsq-bench.1.gz"
check_help "$TMP/root/usr/bin/wsq-bench" "$man/man1/wsq-bench.1.gz"

# wsq.yaml(5): every key of the config is an entry (.B path) or a heading, and every key-like
# word in its comments (keys not set by default, examples) appears in the page
page="$man/man5/wsq.yaml.5.gz"
check_page "$page"
conf="$TMP/root/etc/wsq/wsq.yaml"
man_text "$page" >"$TMP/page"
sed -n 's/^\.\(B\|SH\|SS\) "\{0,1\}\([^"]*\)"\{0,1\}$/\2/p' "$TMP/page" | tr 'A-Z' 'a-z' |
    sed 's/.*\.//; s/\[\]$//' | sort -u >"$TMP/entries"
n=0
for key in $(sed -n 's/^ *\(- \)\{0,1\}\([a-z_]*\):.*/\2/p' "$conf" | sort -u); do
    grep -qx "$key" "$TMP/entries" || fail "wsq.yaml(5) has no entry for the key $key"
    n=$((n + 1))
done
for key in $(sed -n 's/^ *# *\(- \)\{0,1\}\([a-z_]*\):.*/\2/p' "$conf" | sort -u); do
    grep -q -- "$key" "$TMP/page" || fail "wsq.yaml(5) does not mention $key (from a comment of the config)"
done
[ "$n" -ge 30 ] || fail "only $n keys found in $conf"
say "wsq.yaml.5: all $n keys of the config"
