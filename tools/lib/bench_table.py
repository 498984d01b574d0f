#!/usr/bin/python3
"""The comparison table of tools/bench-peers.sh (markdown on stdout).

Usage: bench_table.py OUTDIR RUNS   (OUTDIR as bench-peers.sh writes it: scenarios, systems,
machine.txt, cmd.<scenario>, <scenario>.<system>.jsonl, baseline-*.jsonl, t6*).
"""
import json, os, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
scen = open(os.path.join(out, "scenarios")).read().split()
systems = open(os.path.join(out, "systems")).read().split()
def load(name):
    p = os.path.join(out, name)
    if not os.path.exists(p):
        return []
    return [json.loads(l) for l in open(p) if l.strip()]
def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None
def fmt(v, f="%.3g"):
    v = [x for x in v if x is not None]
    if not v:
        return "-"
    if len(v) == 1:
        return f % v[0]
    return (f + " (" + f + "-" + f + ")") % (statistics.median(v), min(v), max(v))
def k(x):
    return None if x is None else x / 1000.0
mv = {}
for l in open(os.path.join(out, "machine.txt")):
    a, _, b = l.partition(": ")
    mv[a] = b.strip()
NAME = {"wsq": "**wsq** `sync: full` (fsync before every confirm)",
        "wsq-none": "wsq `sync: none` (no fsync; the peers' class)",
        "mqtt": "Mosquitto %s, QoS 1 (in memory; snapshot every 1800 s and at exit, no fsync)" % mv.get("mosquitto", "?"),
        "nats": "NATS %s JetStream, file store (written to the page cache; fsync every 2 min)" % mv.get("nats-server", "?")}
NAME_RAW = {"wsq": "wsq raw-mode subscribers", "mqtt": "Mosquitto, QoS 0 subscribers",
            "nats": "NATS core subscriptions (not via the stream)"}
TITLE = {"t1": "T1 durable publish: 16 conns x window 256, 128 B, confirmed (target >= 300k/s, ahead of both peers)",
         "t2": "T2 drain a 1M backlog to one resuming durable consumer, acking (target >= 1M/s)",
         "t3": "T3 fan-out of 1k msgs/s to 1000 subscribers (target 1M deliveries/s, p99 < 50 ms)",
         "t3raw": "T3 with light subscribers (wsq raw mode, MQTT QoS 0, NATS core subscriptions)",
         "t4": "T4 latency at 10k msgs/s, one publisher, one subscriber, publish->deliver (target p50 < 1 ms, p99 < 3 ms)",
         "t5": "T5 10,000 idle connections (target < 150 MB broker RSS, ~0% CPU)"}
def primary(d):
    r, s = d["result"], d["scenario"]
    if s == "publish":
        return r.get("confirmed_per_s") if d["params"].get("mode") != "raw" else r.get("sent_per_s")
    if s == "drain":
        return r.get("drained_per_s") if not d["errors"].get("incomplete") else None
    if s in ("fanout", "latency"):
        return r.get("delivered_per_s")
    return r.get("broker_rss_max_kb", 0) / 1024.0
print("# wsq vs Mosquitto vs NATS JetStream over WebSocket (wsq-bench)\n")
print("Machine: " + "; ".join("%s %s" % (a, b) for a, b in mv.items()) + "\n")
print("Cells: median (min-max) of %d runs, each against a fresh broker and data directory. CPU in %% "
      "of one core (the machine has %s); 'others' = the machine's CPU used by neither the broker "
      "nor the bench.\n" % (runs, mv.get("nproc", "?")))
res = {}
for sc in scen:
    cmd = open(os.path.join(out, "cmd." + sc)).read().strip()
    print("## " + TITLE.get(sc, sc) + "\n")
    print("`wsq-bench %s --driver wsq|mqtt|nats --url URL --broker-pid PID --json`\n" % cmd)
    if sc == "t5":
        print("| system | RSS max MB | RssAnon max MB | KB/conn | connect s | broker CPU % (30 s held) | bench CPU % | others CPU % | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
    elif sc == "t2":
        print("| system | drained msgs/s | first msg ms | preload msgs/s | broker CPU % | broker CPU us/msg | bench CPU % | others CPU % | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
    else:
        lab = {"t1": "confirmed msgs/s", "t3": "deliveries/s", "t3raw": "deliveries/s", "t4": "delivered msgs/s"}[sc]
        lat = "confirm" if sc == "t1" else "deliver"
        extra = "" if sc == "t1" else " published/s | not delivered at end |"
        print("| system | %s |%s %s p50 ms | p99 ms | p99.9 ms | broker CPU %% | broker CPU us/msg | bench CPU %% | others CPU %% | errors |" % (lab, extra, lat))
        print("|---|---|" + ("" if sc == "t1" else "---|---|") + "---|---|---|---|---|---|---|---|")
    for sys_ in systems:
        ds = load("%s.%s.jsonl" % (sc, sys_))
        if not ds:
            continue
        nm = NAME_RAW.get(sys_, NAME[sys_]) if sc == "t3raw" else NAME[sys_]
        errs = ",".join(str(d["errors"]["total"] - d["errors"].get("missing", 0)) for d in ds)
        cpu = [fmt([d["cpu"][x] for d in ds], "%.0f") for x in ("broker_pct", "bench_pct", "others_pct")]
        res[(sc, sys_)] = ds
        # broker CPU time per message: less sensitive to the other tenants than the rates
        usm = fmt([d["cpu"]["broker_pct"] * 1e4 / primary(d) if primary(d) else None for d in ds], "%.2f")
        if sc == "t5":
            r = [d["result"] for d in ds]
            n = ds[0]["params"].get("conns", 10000)
            print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (nm,
                  fmt([x.get("broker_rss_max_kb", 0) / 1024 for x in r], "%.1f"),
                  fmt([x.get("broker_anon_max_kb", 0) / 1024 if x.get("broker_anon_max_kb", -1) >= 0 else None for x in r], "%.1f"),
                  fmt([(x.get("broker_rss_max_kb", 0) - x.get("broker_rss_before_kb", 0)) / n for x in r], "%.1f"),
                  fmt([x.get("setup_s") for x in r], "%.2f"), cpu[0], cpu[1], cpu[2], errs))
            continue
        if sc == "t2":
            print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (nm, fmt([k(primary(d)) for d in ds], "%.0fk"),
                  fmt([d["result"].get("first_msg_ms") for d in ds], "%.0f"),
                  fmt([k(d["result"].get("preload_per_s")) for d in ds], "%.0fk"), cpu[0], usm, cpu[1], cpu[2], errs))
            continue
        key = "confirm_latency" if sc == "t1" else "deliver_latency"
        lats = [d["result"].get(key, {}) for d in ds]
        ex = ""
        if sc != "t1":
            ex = " %s | %s |" % (fmt([d["result"].get("published_per_s") for d in ds], "%.0f"),
                                 fmt([d["result"].get("missing", 0) for d in ds], "%.0f"))
        print("| %s | %s |%s %s | %s | %s | %s | %s | %s | %s | %s |" % (nm,
              fmt([k(primary(d)) for d in ds], "%.1fk"), ex,
              fmt([l.get("p50_ms") for l in lats], "%.2f"), fmt([l.get("p99_ms") for l in lats], "%.1f"),
              fmt([l.get("p999_ms") for l in lats], "%.1f"), cpu[0], usm, cpu[1], cpu[2], errs))
    print()
lm = load("baseline-lmdb.jsonl")
sk = load("baseline-sink.jsonl")
ec = load("baseline-echo.jsonl")
if lm or sk or ec:
    print("## Baselines: the physical limits on this machine\n")
    print("| baseline | command | rate | server CPU % | bench CPU % | others CPU % |")
    print("|---|---|---|---|---|---|")
    if lm:
        print("| raw LMDB append (MDB_APPEND, 1000 per txn, sync full) | `wsq-storage-bench --baseline-only --size 128 --seconds 5` | %s puts/s (commit p50 %s ms) | - | - | - |" %
              (fmt([k(d["ceiling"]["puts_per_s"]) for d in lm], "%.0fk"),
               fmt([d["ceiling"]["commit_us"]["p50"] / 1000 for d in lm], "%.1f")))
    def echoed(d):
        r = d["result"]
        return r["echoed"] / r["duration_s"] if r.get("duration_s") else None
    for nm, ds, f in (("lws sink: counts messages", sk, lambda d: d["result"].get("sent_per_s")),
                      ("lws echo: echoes, coalesced (echoed msgs/s)", ec, echoed)):
        if ds:
            print("| %s | `wsq-bench publish --mode raw --conns 16 --size 128 --seconds 10 --warmup 2` | %s msgs/s | %s | %s | %s |" % (
                nm, fmt([k(f(d)) for d in ds], "%.0fk"), fmt([d["cpu"]["broker_pct"] for d in ds], "%.0f"),
                fmt([d["cpu"]["bench_pct"] for d in ds], "%.0f"), fmt([d["cpu"]["others_pct"] for d in ds], "%.0f")))
    print()
    def m(sc, sys_="wsq"):
        ds = res.get((sc, sys_))
        return med([primary(d) for d in ds]) if ds else None
    lmr = med([d["ceiling"]["puts_per_s"] for d in lm]) if lm else None
    skr = med([d["result"].get("sent_per_s") for d in sk]) if sk else None
    ecr = med([echoed(d) for d in ec]) if ec else None
    print("Ratios of medians, wsq / baseline:\n")
    print("| wsq measure | wsq | / raw LMDB | / lws sink | / lws echo |")
    print("|---|---|---|---|---|")
    for sc, sys_, nm in (("t1", "wsq", "T1 confirmed publishes/s, sync full"), ("t1", "wsq-none", "T1 confirmed publishes/s, sync none"),
                         ("t2", "wsq", "T2 drained/s"), ("t3", "wsq", "T3 deliveries/s"), ("t3raw", "wsq", "T3 deliveries/s, raw subscribers")):
        v = m(sc, sys_)
        if v is None:
            continue
        r = lambda b: "%.2f" % (v / b) if b else "-"
        # the LMDB append ceiling bounds durable publishing only; deliveries are reads
        print("| %s | %.0fk | %s | %s | %s |" % (nm, v / 1000, r(lmr) if sc == "t1" else "n/a", r(skr), r(ecr)))
    print()
t6 = load("t6.jsonl")
if t6:
    pre = open(os.path.join(out, "t6-preload.txt")).read().strip()
    size = int(open(os.path.join(out, "t6-store-bytes")).read())
    print("## T6 restart with a big store (target: accepting clients within 1 s)\n")
    print("wsq-preload: %s; store %.2f GB.\n" % (pre, size / 1e9))
    print("| page cache of the store | exec -> first WebSocket upgrade (101) s | exec -> /healthz 200 s | message %s readable | wsqd RSS MB |" % "N")
    print("|---|---|---|---|---|")
    for c in ("warm", "cold"):
        ds = [d for d in t6 if d["cache"] == c]
        if ds:
            print("| %s | %s | %s | %s | %s |" % (c, fmt([d.get("upgrade_s") for d in ds], "%.3f"),
                  fmt([d.get("healthz_s") for d in ds], "%.3f"),
                  ",".join("yes" if d.get("last_seq_readable") else "NO" for d in ds),
                  fmt([d.get("rss_kb", 0) / 1024 for d in ds], "%.1f")))
    print()
