# Shared by tools/test.sh and tools/tsan.sh (POSIX sh): run_ctest DIR [ctest args...] runs ctest
# in DIR (with $JOBS jobs) and returns its status. In CI (CI=true) every test must run: it also
# fails when a test was skipped or not run, naming each one and the SKIP lines of its output
# (from ctest's JUnit report, DIR/ctest-junit.xml). Tests that may skip elsewhere (exit 77: no
# root, no openssl, no 127.0.0.2, no systemd, ...) fail that way in CI even when they do not
# fail a skip themselves (the Python harness and the packaging tests do, under
# WSQ_REQUIRE_ALL=1, which tools/test.sh exports when CI=true).
run_ctest() {
    rc_dir=$1
    shift
    rc=0
    (cd "$rc_dir" && ctest --output-on-failure -j "${JOBS:-1}" --output-junit ctest-junit.xml "$@") ||
        rc=$?
    if [ "${CI:-}" = true ] && grep -q 'status="notrun"' "$rc_dir/ctest-junit.xml"; then
        echo "CI-required tests did not run (skipped or not run) in $rc_dir:" >&2
        awk '/<testcase / { on = /status="notrun"/
                            if (on) { match($0, /name="[^"]*"/); print "  " substr($0, RSTART + 6, RLENGTH - 7) } }
             on && /SKIP/ { sub(/^[ \t]*(<system-out>)?/, "      "); print }
             /<\/testcase>/ { on = 0 }' "$rc_dir/ctest-junit.xml" >&2
        [ "$rc" != 0 ] || rc=1
    fi
    return "$rc"
}
