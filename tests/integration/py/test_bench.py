#!/usr/bin/python3
"""wsq-bench against the real wsqd, briefly: the load generator must measure what it claims.

A short run of each broker scenario: publish (confirms counted, none lost), publish in raw mode
with --verify (every sent message delivered, in order), drain (a preload drained in order by a
durable consumer), fanout (deliveries = publishes x subscribers) and latency. Every run must exit
0 (no errors counted) and report non-zero work; the numbers themselves are benchmarks, recorded in
docs/BENCHMARKS.md, never asserted here.

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

    def test_fanout_and_latency(self):
        r = self.run_bench("fanout", "--rate", "200", "--subs", "20", "--seconds", "1",
                           "--warmup", "0")
        self.assertGreater(r["delivered"], 0, r)
        self.assertEqual(r["missing"], 0, r)
        r = self.run_bench("latency", "--rate", "500", "--seconds", "1", "--warmup", "0")
        self.assertGreater(r["delivered"], 0, r)


if __name__ == "__main__":
    if not BENCH:
        sys.stderr.write("set WSQ_BENCH to the wsq-bench binary\n")
        sys.exit(2)
    h.main()
