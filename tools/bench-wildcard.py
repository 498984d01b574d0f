#!/usr/bin/python3
"""Topic patterns with many topics: what a `sub` to "t.>" costs when 100,000 topics exist.

    /usr/bin/python3 tools/bench-wildcard.py build/bin/wsqd [--topics 100000] [--messages 20000]

Starts a wsqd (loopback, temp data dir, sync none: the cost looked at is the delivery thread's,
not the disk's), creates --topics topics "t.<i>" with one message each (pipelined publishes),
then measures:
  1. subscribe: from sending {"op":"sub","topic":"t.>"} to its "subscribed" answer (the scan
     of every topic name), and the matched count (must equal --topics);
  2. first message: a publish to one existing topic, to its msg at the pattern subscriber;
  3. per message: --messages publishes spread over all the topics, all delivered to the pattern
     subscriber (counted), broker CPU per message and the anonymous memory the pattern's
     per-topic subscriptions took; and the same publishes with no subscriber at all, for the
     difference.
  4. the same over 1,000 hot topics (their subscriptions exist: the steady state), with the
     pattern and without a subscriber;
  5. a new topic: a publish to "t.new" (created by it), to its msg at the subscriber.
Prints one JSON line per run. Stops its wsqd by PID. Not a test: it measures.
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "py"))
import wsqharness as h  # noqa: E402


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def publish_many(d, topics, window=500):
    """Pipelined wsq.v1 publishes of one small message to each topic name; returns when all are
    confirmed."""
    ws = h.SocketWS(d, timeout=60, zero_mask=True)
    sent = done = 0
    while done < len(topics):
        burst = []
        while sent < len(topics) and sent - done < window:
            burst.append(ws.frame(1, json.dumps({"op": "pub", "topic": topics[sent], "ref": sent,
                                                 "data": "m%d" % sent}).encode()))
            sent += 1
        if burst:
            ws.send_raw(b"".join(burst))
        f = ws.recv_json()
        if f["op"] != "ok":
            raise SystemExit("publish refused: %r" % f)
        done += 1
    ws.close()


def publish_and_count(d, topics, sub):
    """publish_many, then every message must reach the pattern subscriber sub."""
    publish_many(d, topics)
    got = 0
    while got < len(topics):
        if sub.recv_json(timeout=30)["op"] == "msg":
            got += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wsqd")
    ap.add_argument("--topics", type=int, default=100000)
    ap.add_argument("--messages", type=int, default=20000)
    a = ap.parse_args()
    h.WSQD = os.path.abspath(a.wsqd)
    base = tempfile.mkdtemp(prefix="wsq-bench-wild-")
    d = h.Wsqd(binary=h.WSQD, sync="none", base=base,
               extra_yaml="limits:\n  max_subscriptions: 16\n")
    d.start()
    out = {"topics": a.topics, "messages": a.messages}
    try:
        names = ["t.%d" % i for i in range(a.topics)]
        t0 = time.monotonic()
        publish_many(d, names)
        out["create_s"] = round(time.monotonic() - t0, 2)

        anon0 = h.proc_status(d.pid)["RssAnon"]
        sub = h.SocketWS(d, timeout=60)
        t0 = time.monotonic()
        sub.send_json({"op": "sub", "topic": "t.>", "ref": 1})
        ans = sub.expect("subscribed")
        out["subscribe_ms"] = round((time.monotonic() - t0) * 1000, 1)
        if ans["topics"] != a.topics:
            raise SystemExit("matched %d of %d topics" % (ans["topics"], a.topics))

        t0 = time.monotonic()
        d.publish("t.%d" % (a.topics // 2), "first")
        m = sub.expect("msg")
        out["first_message_ms"] = round((time.monotonic() - t0) * 1000, 2)
        assert m["data"] == "first", m

        rng = random.Random(7)
        picks = [names[rng.randrange(a.topics)] for _ in range(a.messages)]
        c0 = cpu_s(d.pid)
        t0 = time.monotonic()
        publish_and_count(d, picks, sub)
        el = time.monotonic() - t0
        out["with_pattern_us_per_msg"] = round((cpu_s(d.pid) - c0) / a.messages * 1e6, 2)
        out["with_pattern_msgs_per_s"] = round(a.messages / el)
        # the pattern's topics that got a message each hold a subscription now, and let it go
        # after 2 s of quiet
        out["pattern_rss_anon_kb"] = h.proc_status(d.pid)["RssAnon"] - anon0
        out["pattern_topic_subscriptions"] = d.metrics().get("wsq_pattern_topic_subscriptions")
        time.sleep(3)
        out["pattern_topic_subscriptions_3s_later"] = d.metrics().get(
            "wsq_pattern_topic_subscriptions")

        # the same count of messages over 1,000 hot topics: their subscriptions exist after the
        # first message each, the steady state of a busy pattern
        hot = [names[rng.randrange(1000)] for _ in range(a.messages)]
        c0 = cpu_s(d.pid)
        publish_and_count(d, hot, sub)
        out["hot_with_pattern_us_per_msg"] = round((cpu_s(d.pid) - c0) / a.messages * 1e6, 2)

        t0 = time.monotonic()
        d.publish("t.new", "new topic")
        m = sub.expect("msg")
        out["new_topic_ms"] = round((time.monotonic() - t0) * 1000, 2)
        assert (m["topic"], m["seq"]) == ("t.new", 1), m
        sub.close()
        time.sleep(0.3)

        c0 = cpu_s(d.pid)
        publish_many(d, picks)
        out["no_subscriber_us_per_msg"] = round((cpu_s(d.pid) - c0) / a.messages * 1e6, 2)
        c0 = cpu_s(d.pid)
        publish_many(d, hot)
        out["hot_no_subscriber_us_per_msg"] = round((cpu_s(d.pid) - c0) / a.messages * 1e6, 2)
    finally:
        d.cleanup()
        if not os.environ.get("WSQ_KEEP"):
            shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
