#!/usr/bin/python3
"""The summary of tools/wsq-bench/run-wsq.sh: per scenario, the median (min..max) of its primary
number, latencies and CPU over the runs in OUTDIR/<name>.jsonl.

Usage: bench_summary.py OUTDIR NAME...
"""
import json, statistics, sys
out, names = sys.argv[1], sys.argv[2:]
def primary(d):
    r = d["result"]
    s = d["scenario"]
    if s == "publish":
        return ("sent/s", r["sent_per_s"]) if d["params"]["mode"] == "raw" else ("confirmed/s", r["confirmed_per_s"])
    if s == "drain": return ("drained/s", r["drained_per_s"])
    if s in ("fanout", "latency"): return ("delivered/s", r["delivered_per_s"])
    return ("rss MB (anon)", r["broker_rss_max_kb"] / 1024)
def fmt(vals):
    m = statistics.median(vals)
    return "%.4g (%.4g..%.4g)" % (m, min(vals), max(vals))
print("%-6s %-36s %-26s %-26s %-18s %-18s %-18s %s" % ("name", "primary: median (min..max)", "p50 ms", "p99 ms", "bench cpu %", "broker cpu %", "others cpu %", "errors"))
for n in names:
    try:
        runs = [json.loads(l) for l in open("%s/%s.jsonl" % (out, n)) if l.strip()]
    except OSError:
        continue
    if not runs: continue
    label = primary(runs[0])[0]
    lat = "deliver_latency" if runs[0]["scenario"] in ("fanout", "latency") or runs[0]["params"]["mode"] == "raw" else "confirm_latency"
    p50 = [d["result"][lat]["p50_ms"] for d in runs]
    p99 = [d["result"][lat]["p99_ms"] for d in runs]
    print("%-6s %-36s %-26s %-26s %-18s %-18s %-18s %s" % (n, label + " " + fmt([primary(d)[1] for d in runs]),
          fmt(p50) if max(p50) > 0 else "-", fmt(p99) if max(p99) > 0 else "-",
          fmt([d["cpu"]["bench_pct"] for d in runs]), fmt([d["cpu"]["broker_pct"] for d in runs]),
          fmt([d["cpu"]["others_pct"] for d in runs]),
          ",".join(str(d["errors"]["total"]) for d in runs)))
