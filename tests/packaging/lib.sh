# Shared by the packaging tests (POSIX sh). Source it after setting NAME.
set -eu
say() { printf '%s: %s\n' "$NAME" "$*"; }
fail() { printf '%s: FAIL: %s\n' "$NAME" "$*" >&2; exit 1; }
# A skip exits 77 (ctest: Skipped); with WSQ_REQUIRE_ALL=1 (tools/test.sh in CI) it fails instead.
skip() {
    [ "${WSQ_REQUIRE_ALL:-}" != 1 ] || fail "required here (WSQ_REQUIRE_ALL=1), but: $*"
    printf '%s: SKIP: %s\n' "$NAME" "$*"
    exit 77
}

# the one .deb that packaging.deb built into DIR
find_deb() {
    set -- "$1"/wsq_*.deb
    [ $# -eq 1 ] && [ -f "$1" ] || fail "expected exactly one wsq_*.deb (run the packaging.deb test first)"
    printf '%s\n' "$1"
}

# a temporary directory, removed on exit
mk_tmp() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/wsq-$NAME.XXXXXX")
    trap 'rm -rf "$TMP"' EXIT
}

# man page source, reduced to text: fonts, escapes and hyphens made plain
man_text() {
    zcat "$1" | sed -e 's/\\f[BIRP]//g' -e 's/\\f(CW//g' -e 's/\\-/-/g' -e 's/\\&//g' -e 's/\\e/\\/g'
}
