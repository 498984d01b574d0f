#!/usr/bin/python3
"""wsq-bench against the real wsqd, briefly: the load generator must measure what it claims.

A short run of each broker scenario: publish (confirms counted, none lost), publish in raw mode
with --verify (every sent message delivered, in order), drain (a preload drained in order by a
durable consumer), drain --shared (a preload shared out among the members of one shared
consumer, each message to one member, once), fanout (deliveries = publishes x subscribers) and
latency. Every run must exit 0 (no errors counted) and report non-zero work; the rates
themselves are benchmarks, recorded in docs/BENCHMARKS.md, never asserted here. Fanout's counts
are the test's own: the publishes are what the topic holds afterwards (its history), the test's
own subscriber receives every one of them, and wsqd's wsq_delivered_total grows by publishes x
(subscribers + 1), and by nothing else (no other client is connected).

Usage: python3 test_bench.py /path/to/wsqd  (WSQ_BENCH: the wsq-bench binary)
"""

import hashlib
import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402

BENCH = os.environ.get("WSQ_BENCH", "")


class Bench(h.WsqdTestCase):
    # a publish-only identity for raw mode, so that raw publishers do not receive their topic
    EXTRA_YAML = """
auth:
  anonymous:
    publish: [">"]
    subscribe: [">"]
    admin: true
  tokens:
    - name: benchpub
      sha256: %s
      publish: [">"]
      subscribe: []
""" % hashlib.sha256(b"benchpub").hexdigest()

    def run_bench(self, *args):
        d = self.wsqd
        cmd = [BENCH] + list(args) + ["--url", "ws://127.0.0.1:%d" % d.port, "--json",
                                      "--quiet", "--broker-pid", str(d.pid)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120 * h.SLOW)
        self.assertEqual(p.returncode, 0, "%s\nstdout: %s\nstderr: %s"
                         % (" ".join(cmd), p.stdout[-2000:], p.stderr[-2000:]))
        out = json.loads(p.stdout)
        self.assertEqual(out["errors"]["total"], 0, out["errors"])
        return out["result"]

    def test_publish_confirmed(self):
        r = self.run_bench("publish", "--conns", "4", "--window", "64", "--seconds", "1",
                           "--warmup", "0")
        self.assertGreater(r["confirmed"], 0, r)

    def test_publish_raw_verified(self):
        r = self.run_bench("publish", "--mode", "raw", "--pub-token", "benchpub", "--verify",
                           "--conns", "2", "--seconds", "1", "--warmup", "0")
        self.assertGreater(r["delivered"], 0, r)

    def test_drain_in_order(self):
        r = self.run_bench("drain", "--preload", "5000", "--resume", "--window", "500",
                           "--seconds", "60")
        self.assertEqual((r["expected"], r["received"], r["drained_consumers"]), (5000, 5000, 1),
                         r)

    def test_drain_shared_each_message_once(self):
        d = self.wsqd
        preload, members = 6000, 4
        r = self.run_bench("drain", "--preload", str(preload), "--resume", "--shared",
                           "--consumers", str(members), "--window", "100", "--seconds", "60")
        # wsq-bench's own check (exit 0, no errors) covers duplicates and order per member
        self.assertEqual(len(r["members"]), members, r)
        self.assertEqual(sum(r["members"]), preload, r)
        self.assertEqual((r["expected"], r["received"]), (preload, preload), r)
        # wsqd's counts (a fresh wsqd, no other client): each message written once, acked once
        h.wait_until(lambda: d.metrics()["wsq_acked_total"] >= preload,
                     what="wsq_acked_total to reach %d" % preload)
        m = d.metrics()
        self.assertEqual((m["wsq_delivered_total"], m["wsq_redelivered_total"],
                          m["wsq_acked_total"]), (preload, 0, preload), m)

    def test_fanout_deliveries_are_publishes_times_subscribers(self):
        d = self.wsqd
        topic, subs = "bench.fanout.t", 20
        delivered0 = d.metrics()["wsq_delivered_total"]
        # the test's own subscriber (raw mode, from earliest: it misses nothing)
        own = h.SocketWS(d, "/topics/%s?from=earliest" % topic, subprotocol=None)
        self.addCleanup(own.close)
        r = self.run_bench("fanout", "--topic", topic, "--rate", "200", "--subs", str(subs),
                           "--seconds", "1", "--warmup", "0")
        st, _, body = d.history(topic, "?limit=1")
        self.assertEqual(st, 200, body)
        published = body["next_seq"] - 1
        self.assertGreaterEqual(published, 100, "a 1 s run at 200/s published %d" % published)
        got = [own.recv() for _ in range(published)]
        self.assertEqual(len(set(got)), published, "the test's subscriber got duplicates")
        h.wait_until(lambda: d.metrics()["wsq_delivered_total"] - delivered0
                     >= published * (subs + 1), what="wsq_delivered_total to reach %d x %d"
                     % (published, subs + 1))
        self.assertEqual(d.metrics()["wsq_delivered_total"] - delivered0,
                         published * (subs + 1))
        # wsq-bench's own check: every subscriber got every message from its first on. Its
        # "sent" and "delivered" count the measured window only (rates), which may leave out a
        # publish at either edge: at most what the topic holds.
        self.assertEqual(r["missing"], 0, r)
        self.assertLessEqual(r["sent"], published, r)
        self.assertLessEqual(r["delivered"], published * subs, r)

    def test_latency(self):
        r = self.run_bench("latency", "--rate", "500", "--seconds", "1", "--warmup", "0")
        self.assertGreater(r["delivered"], 0, r)


if __name__ == "__main__":
    if not BENCH:
        sys.stderr.write("set WSQ_BENCH to the wsq-bench binary\n")
        sys.exit(2)
    h.main()
