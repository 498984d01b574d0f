#!/usr/bin/python3
"""wsqctl inspect commands against a live wsqd under publish load: topics, stats, peek,
consumers, check; each output checked as --json and as a table (aligned columns)."""

import base64
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctlharness as c  # noqa: E402
import wsqharness as h  # noqa: E402

TEXTS = ["hello 1", "h\u00e9llo \u2713 two", "line\nbreak\ttab", "four", "x" * 500]
BINS = [bytes(range(256)), b"\x00\xff"]


def columns_aligned(tc, table, right_cols):
    """Every right-aligned column ends where its header ends; left ones start where it starts."""
    lines = table.rstrip("\n").split("\n")
    head = lines[0]
    names = head.split()
    starts = [m.start() for m in re.finditer(r"\S+", head)]
    ends = [m.end() for m in re.finditer(r"\S+", head)]
    for line in lines[1:]:
        for i, name in enumerate(names):
            if name in right_cols:
                tc.assertTrue(ends[i] <= len(line) and line[ends[i] - 1] != " " and
                              (ends[i] == len(line) or line[ends[i]] == " "),
                              "column %s not right-aligned in %r (header %r)" % (name, line, head))
            elif i > 0:
                tc.assertTrue(line[starts[i] - 1] == " " and line[starts[i]] != " ",
                              "column %s not left-aligned in %r (header %r)" % (name, line, head))
    return lines


class Inspect(c.CtlTestCase):

    def setUp(self):
        super().setUp()
        d = self.wsqd
        for t in TEXTS:
            d.publish("ins.text", t)
        for b in BINS:
            d.publish("ins.bin", b)
        # a durable consumer with acked and pending messages
        ws = h.SocketWS(d)
        self.addCleanup(ws.close)
        ws.subscribe("ins.text", consumer="c1", window=100)
        seqs = [ws.expect("msg")["seq"] for _ in TEXTS]
        self.assertEqual(seqs, [1, 2, 3, 4, 5])
        ws.send_json({"op": "ack", "topic": "ins.text", "upto": 3})
        self.ws = ws
        self.load = c.Load(d, "ins.load")
        self.load.start()
        self.addCleanup(self.load.stop)
        self.load.wait_for(20)

    def test_inspect_under_load(self):
        d = self.wsqd
        conf = d.conf
        before = len(self.load.confirmed)

        # -- topics
        doc = self.ctl_json("-c", conf, "topics")
        by = {t["name"]: t for t in doc["topics"]}
        self.assertEqual([t["name"] for t in doc["topics"]], sorted(by))
        t = by["ins.text"]
        self.assertEqual((t["first_seq"], t["last_seq"], t["next_seq"], t["count"]), (1, 5, 6, 5))
        self.assertEqual(t["bytes"], sum(len(x.encode()) for x in TEXTS))
        self.assertEqual(len(t["epoch"]), 16)
        self.assertGreaterEqual(t["oldest_age_ms"], 0)
        b = by["ins.bin"]
        self.assertEqual((b["count"], b["bytes"]), (2, 258))
        self.assertGreaterEqual(by["ins.load"]["count"], 20)

        out, _ = self.ctl_ok("-c", conf, "topics")
        lines = columns_aligned(self, out, {"FIRST", "LAST", "COUNT", "BYTES", "OLDEST"})
        self.assertEqual(lines[0].split(), ["TOPIC", "FIRST", "LAST", "COUNT", "BYTES", "OLDEST"])
        row = [ln for ln in lines if ln.startswith("ins.text ")][0]
        self.assertRegex(row, r"^ins\.text\s+1\s+5\s+5\s+%d B\s+\d+s$" % t["bytes"])

        # -- stats
        st = self.ctl_json("-c", conf, "stats")
        self.assertEqual(st["format"], self.format_version())
        self.assertEqual(st["data_dir"], os.path.realpath(d.data))
        self.assertGreaterEqual(st["topics"], 3)
        self.assertGreaterEqual(st["messages"], 27)
        self.assertEqual(st["consumers"], 1)
        self.assertTrue(st["lock"]["held"])
        self.assertEqual(st["lock"]["pid"], d.pid)
        self.assertEqual(st["lock"]["process"], "wsqd")
        self.assertGreater(st["map_used"], 0)
        self.assertLessEqual(st["map_used"], st["map_size"])
        self.assertEqual(st["map_size_max"], 64 << 30)
        self.assertGreaterEqual(st["data_dir_bytes"], st["data_file_bytes"])
        out, _ = self.ctl_ok("--data", d.data, "stats")
        self.assertRegex(out, r"(?m)^lock\s+held by pid %d \(wsqd\)$" % d.pid)
        self.assertRegex(out, r"(?m)^format\s+%d " % self.format_version())
        self.assertRegex(out, r"(?m)^map\s+[\d.]+ \w?i?B used of [\d.]+ MiB mapped")
        self.assertRegex(out, r"(?m)^readers\s+\d+ of \d+ slots$")

        # -- peek
        pk = self.ctl_json("-c", conf, "peek", "ins.text")
        self.assertEqual([m["data"] for m in pk["messages"]], TEXTS)
        self.assertEqual([m["seq"] for m in pk["messages"]], [1, 2, 3, 4, 5])
        self.assertTrue(all("enc" not in m for m in pk["messages"]))
        self.assertEqual((pk["first_seq"], pk["next_seq"]), (1, 6))
        pk = self.ctl_json("-c", conf, "peek", "ins.text", "--from", "2", "--limit", "2")
        self.assertEqual([m["seq"] for m in pk["messages"]], [2, 3])
        pk = self.ctl_json("-c", conf, "peek", "ins.bin")
        self.assertEqual([base64.b64decode(m["data"]) for m in pk["messages"]], BINS)
        self.assertEqual({m["enc"] for m in pk["messages"]}, {"base64"})
        self.assertEqual([m["size"] for m in pk["messages"]], [256, 2])

        out, _ = self.ctl_ok("-c", conf, "peek", "ins.text")
        lines = columns_aligned(self, out, {"SEQ", "SIZE"})
        self.assertEqual(lines[0].split(), ["SEQ", "TIME", "SIZE", "TYPE", "PAYLOAD"])
        self.assertRegex(lines[1], r"^\s*1  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\s+7  text  "
                                   r"hello 1$")
        self.assertTrue(lines[2].endswith("h\u00e9llo \u2713 two"), lines[2])
        self.assertTrue(lines[3].endswith("line\\nbreak\\ttab"), lines[3])
        self.assertTrue(lines[5].endswith("x" * 200 + "... (+300 bytes)"), lines[5])
        out, _ = self.ctl_ok("-c", conf, "peek", "ins.text", "--from", "5", "--full")
        self.assertTrue(out.splitlines()[1].endswith(" " + "x" * 500))
        out, _ = self.ctl_ok("-c", conf, "peek", "ins.bin")
        rows = out.splitlines()
        self.assertTrue(rows[1].endswith("binary  " + bytes(range(200)).hex() +
                                         "... (+56 bytes)"), rows[1])
        self.assertTrue(rows[2].endswith("binary  00ff"), rows[2])
        out, _ = self.ctl_ok("-c", conf, "peek", "ins.bin", "--base64", "--full")
        self.assertTrue(out.splitlines()[1].endswith(base64.b64encode(BINS[0]).decode()))

        # -- consumers (the broker persists acks asynchronously: wait for the ack floor)
        def c1():
            doc = self.ctl_json("-c", conf, "consumers")
            cs = [c for c in doc["consumers"] if c["name"] == "c1"]
            return cs[0] if cs and cs[0]["ack_floor"] == 3 else None
        c = h.wait_until(c1, what="consumer c1 with ack floor 3")
        self.assertEqual(c["topic"], "ins.text")
        self.assertEqual((c["delivered_upto"], c["pending"], c["lag"], c["gap"]), (5, 2, 2, None))
        self.assertGreaterEqual(c["last_seen_age_ms"], 0)
        doc = self.ctl_json("-c", conf, "consumers", "ins.bin")
        self.assertEqual(doc["consumers"], [])
        out, _ = self.ctl_ok("-c", conf, "consumers", "ins.text")
        lines = columns_aligned(self, out, {"ACK-FLOOR", "DELIVERED", "PENDING", "LAG", "GAP",
                                            "MAX-DELIV", "LAST-SEEN"})
        self.assertEqual(lines[0].split(), ["TOPIC", "CONSUMER", "MODE", "ACK-FLOOR", "DELIVERED",
                                            "PENDING", "LAG", "GAP", "MAX-DELIV", "LAST-SEEN"])
        self.assertRegex(lines[1],
                         r"^ins\.text\s+c1\s+exclusive\s+3\s+5\s+2\s+2\s+-\s+\d+\s+\d+s$")

        # -- check, live
        ck = self.ctl_json("-c", conf, "check")
        self.assertEqual((ck["ok"], ck["count"], ck["violations"]), (True, 0, []))
        out, _ = self.ctl_ok("-c", conf, "check")
        self.assertRegex(out, r"^ok: \d+ topics, \d+ messages, 1 consumers checked; "
                              r"no violations\n$")

        # the load went on during all of this, and nothing of it failed
        self.assertGreater(len(self.load.confirmed), before)
        self.assertEqual(self.load.errors, [])

    def test_inspect_with_url_only_and_default_dir(self):
        d = self.wsqd
        # --url alone: the data dir comes from the broker's /admin/whoami
        doc = self.ctl_json("--url", d.url, "topics")
        self.assertIn("ins.text", [t["name"] for t in doc["topics"]])
        # --verbose says where the store came from
        _, err = self.ctl_ok("--url", d.url, "-v", "stats")
        self.assertIn("wsqctl: using the broker at %s (store %s)\n" % (d.url,
                                                                       os.path.realpath(d.data)),
                      err)


if __name__ == "__main__":
    c.main()
