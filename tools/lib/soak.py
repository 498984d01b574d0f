#!/usr/bin/python3
"""Helpers of tools/soak.sh.

    soak.py field INFO KEY          one value of chaos.py's --info file (pid, port, data, log)
    soak.py pages                   `wsqctl --json stats` on stdin -> "pages_used,pages_free"
    soak.py summary CSV CHAOS_OUT RC MINUTES INTERVAL RATE RETENTION SEED
                                    the summary (markdown) on stdout; exit status 0 only when
                                    the load passed (RC 0), there are enough samples for a
                                    steady-state comparison, and every metric is flat

Flat: the last third's mean is within 5% of the middle third's (open fds: within 2). The
metrics: VmRSS, RssAnon (heap), open fds, LMDB map used and data.mdb.
"""

import csv
import json
import sys

MIN_SAMPLES = 6   # below this, the thirds are too short to compare
COLS = [("VmRSS", "vmrss_kb", 1 / 1024, "MiB"), ("RssAnon", "rssanon_kb", 1 / 1024, "MiB"),
        ("open fds", "fds", 1, ""), ("map used", "map_used_bytes", 1 / 2**20, "MiB"),
        ("data.mdb", "data_mdb_bytes", 1 / 2**20, "MiB")]


def field(info, key):
    with open(info) as f:
        print(json.load(f)[key])
    return 0


def pages():
    j = json.load(sys.stdin)
    print("%d,%d" % (j["pages_used"], j["pages_free"]))
    return 0


def summary(path, chaos_out, rc, minutes, interval, rate, ret, seed):
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if all(r.values())]   # complete samples only
    print("soak: %s min, a sample every %s s, --rate %s, retention max_messages %s, seed %s"
          % (minutes, interval, rate, ret, seed))
    print()
    print("| min | VmRSS MiB | RssAnon MiB | fds | map used MiB | data.mdb MiB | stored msgs | "
          "stored MiB | free pages | published | msgs/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    prev = None
    for r in rows:
        el = int(r["elapsed_s"])
        pub = float(r["published_total"])
        rate_s = "" if prev is None else "%.0f" % ((pub - prev[1]) / max(1, el - prev[0]))
        prev = (el, pub)
        print("| %.0f | %.1f | %.1f | %s | %.1f | %.1f | %s | %.1f | %s | %d | %s |"
              % (el / 60, int(r["vmrss_kb"]) / 1024, int(r["rssanon_kb"]) / 1024, r["fds"],
                 float(r["map_used_bytes"]) / 2**20, int(r["data_mdb_bytes"]) / 2**20,
                 r["stored_msgs"], float(r["stored_bytes"]) / 2**20, r["pages_free"], pub,
                 rate_s))
    print()
    failed = []
    if rc != "0":
        failed.append("the load (chaos.py) exited %s" % rc)
    n = len(rows)
    if n < MIN_SAMPLES:
        print("too few samples for a steady-state comparison (%d, at least %d needed: a longer "
              "-m or a shorter -i)" % (n, MIN_SAMPLES))
        failed.append("too few samples (%d < %d)" % (n, MIN_SAMPLES))
    else:
        mid = rows[n // 3: 2 * n // 3]
        last = rows[2 * n // 3:]
        print("| metric | middle third (mean) | last third (mean) | last third min..max | "
              "change | flat |")
        print("|---|---:|---:|---:|---:|---|")
        notflat = []
        for label, key, scale, unit in COLS:
            a = [float(r[key]) * scale for r in mid]
            b = [float(r[key]) * scale for r in last]
            ma, mb = sum(a) / len(a), sum(b) / len(b)
            ch = (mb - ma) / ma * 100 if ma else 0.0
            flat = abs(mb - ma) <= 2 if key == "fds" else abs(ch) <= 5.0
            if not flat:
                notflat.append(label)
            print("| %s | %.1f %s | %.1f %s | %.1f..%.1f | %+.1f%% | %s |"
                  % (label, ma, unit, mb, unit, min(b), max(b), ch, "yes" if flat else "NO"))
        print()
        print("steady state: %s" % ("all flat" if not notflat else
                                     "NOT flat: %s (see the table)" % ", ".join(notflat)))
        if notflat:
            failed.append("not flat: " + ", ".join(notflat))
    print("load (chaos.py, exit %s):" % rc)
    with open(chaos_out) as f:
        for line in f:
            print("    " + line.rstrip())
    print()
    print("RESULT: %s" % ("PASS" if not failed else "FAIL (%s)" % "; ".join(failed)))
    return 0 if not failed else 1


def main(argv):
    if len(argv) == 4 and argv[1] == "field":
        return field(argv[2], argv[3])
    if len(argv) == 2 and argv[1] == "pages":
        return pages()
    if len(argv) == 10 and argv[1] == "summary":
        return summary(*argv[2:])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
