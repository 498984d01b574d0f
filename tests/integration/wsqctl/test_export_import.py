#!/usr/bin/python3
"""export -> purge --all -> import round trip, byte-exact (text, binary, empty, large), live
through the broker under publish load and offline through the store; a bad line refuses the
whole import; big imports go in chunks (and are split when the broker finds a body too large)."""

import base64
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctlharness as c  # noqa: E402

rnd = random.Random(4)
PAYLOADS = {
    "rt.text": ["plain", "", "h\u00e9llo \u2713 \U0001d11e", "quote \" backslash \\ nl \n tab \t",
                "nul \u0000 inside", "{\"op\":\"pub\"}", "z" * 300000],
    "rt.bin": [bytes(range(256)), b"", b"\x00", bytes(reversed(range(256))) * 7,
               bytes(rnd.getrandbits(8) for _ in range(100000))],
    "rt/mixed.a-b_c": ["text one", b"\xff\xfe binary", "text two"],
}


def decode(row):
    return base64.b64decode(row["data"]) if row.get("enc") == "base64" else row["data"]


def by_topic(rows):
    out = {}
    for r in rows:
        out.setdefault(r["topic"], []).append(r)
    return out


class ExportImport(c.CtlTestCase):

    def publish_all(self, d):
        for t, ps in PAYLOADS.items():
            for p in ps:
                d.publish(t, p)

    def export(self, *args):
        out, _ = self.ctl_ok(*args)
        rows = [json.loads(x) for x in out.splitlines()]
        for r in rows:
            self.assertLessEqual(set(r), {"topic", "seq", "ts", "data", "enc"})
            self.assertIsInstance(r["ts"], int)
        return rows

    def check_payloads(self, rows, first_seqs=None):
        got = by_topic(rows)
        for t, ps in PAYLOADS.items():
            self.assertEqual([decode(r) for r in got[t]], ps, t)
            self.assertEqual([r.get("enc") == "base64" for r in got[t]],
                             [isinstance(p, bytes) for p in ps], t)
            seqs = [r["seq"] for r in got[t]]
            start = first_seqs[t] if first_seqs else 1
            self.assertEqual(seqs, list(range(start, start + len(ps))), t)

    def test_round_trip_live_then_offline(self):
        d = self.wsqd
        self.publish_all(d)
        load = c.Load(d, "rt.load")
        load.start()
        self.addCleanup(load.stop)
        load.wait_for(10)
        conf = ("-c", d.conf)
        topics = sorted(PAYLOADS)

        # export named topics only (the load topic is not in it)
        rows = self.export(*conf, "export", *topics)
        self.assertEqual(sorted({r["topic"] for r in rows}), topics)
        self.check_payloads(rows)
        dump = os.path.join(self.tmp, "dump.jsonl")
        with open(dump, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
        # a full export holds the load topic too
        full = self.export(*conf, "export")
        self.assertIn("rt.load", {r["topic"] for r in full})

        # purge all, import: the same payloads, new seqs after the old next seq
        nexts = {}
        for t in topics:
            res = self.ctl_json(*conf, "purge", t, "--all")
            self.assertEqual(res["removed"], len(PAYLOADS[t]))
            nexts[t] = res["next_seq"]
        for t in topics:
            self.assertEqual(self.ctl_json(*conf, "peek", t)["messages"], [])
        res = self.ctl_json(*conf, "import", dump)
        self.assertEqual(res, {"imported": len(rows), "via": "broker"})
        again = self.export(*conf, "export", *topics)
        self.check_payloads(again, nexts)

        # import from stdin works the same (and counts)
        out, _ = self.ctl_ok(*conf, "import", "-", input=b"".join(
            (json.dumps(r) + "\n").encode() for r in rows[:3]))
        self.assertEqual(out, "imported 3 messages from stdin via the broker (new seqs)\n")

        # a bad line refuses the whole import: nothing of it is stored
        bad = os.path.join(self.tmp, "bad.jsonl")
        with open(bad, "w") as f:
            f.write('{"topic":"rt.bad","data":"ok"}\n\n{"topic":"rt.bad","data":"x",'
                    '"enc":"base64"}\n{"topic":"rt.bad","data":"fine"}\n')
        self.ctl_fails(1, *conf, "import", bad,
                       pattern=r"bad\.jsonl line 3: .*base64.*; nothing was imported")
        self.ctl_fails(3, *conf, "peek", "rt.bad")
        load.stop()
        load.check_store(self, {r["seq"]: r["data"] for r in
                                self.export(*conf, "export", "rt.load")})

        # offline: stop wsqd; export reads the store, purge and import write it directly
        d.stop()
        rows2 = self.export("--data", d.data, "export", *topics)
        want = by_topic(again)
        for r in rows[:3]:
            want[r["topic"]].append(r)
        got = by_topic(rows2)
        for t in topics:
            self.assertEqual([decode(r) for r in got[t]], [decode(r) for r in want[t]], t)
        nexts2 = {}
        for t in topics:
            res = self.ctl_json("--data", d.data, "purge", t, "--all")
            self.assertEqual(res["via"], "store")
            nexts2[t] = res["next_seq"]
        res = self.ctl_json("--data", d.data, "import", dump)
        self.assertEqual(res, {"imported": len(rows), "via": "store"})
        self.check_payloads(self.export("--data", d.data, "export", *topics), nexts2)
        ck = self.ctl_json("--data", d.data, "check")
        self.assertTrue(ck["ok"], ck)
        # and wsqd serves what the offline import wrote
        d.start()
        st, _, body = d.http("GET", "/topics/rt.bin/messages?from=1&limit=10")
        msgs = json.loads(body)["messages"]
        self.assertEqual([base64.b64decode(m["data"]) for m in msgs], PAYLOADS["rt.bin"])

    def test_import_into_a_new_store(self):
        """Restoring into an empty directory creates the store (offline)."""
        d = self.wsqd
        self.publish_all(d)
        rows = self.export("-c", d.conf, "export")
        dump = os.path.join(self.tmp, "all.jsonl")
        with open(dump, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
        fresh = os.path.join(self.tmp, "restored")
        res = self.ctl_json("--data", fresh, "import", dump)
        self.assertEqual(res, {"imported": len(rows), "via": "store"})
        self.check_payloads(self.export("--data", fresh, "export"))

    def test_big_import_in_chunks(self):
        """2500 lines through a broker whose import body limit (64 x max_message_size = 128 KiB)
        is below wsqctl's default chunk: the broker answers 413 and wsqctl splits the chunk."""
        d = self.new_wsqd("limits:\n  max_message_size: 2KiB\n").start()
        lines = "".join(json.dumps({"topic": "big.t", "data": "%05d-" % i + "y" * 900}) + "\n"
                        for i in range(2500))
        # only --url: wsqctl does not know the limit and learns it from the 413
        out, err = self.ctl_ok("--url", d.url, "-v", "import", "-", input=lines.encode())
        self.assertEqual(out, "imported 2500 messages from stdin via the broker (new seqs)\n")
        self.assertIn("as too large: sending it in halves", err)
        rows = self.export("--data", d.data, "export", "big.t")
        self.assertEqual([r["data"][:5] for r in rows], ["%05d" % i for i in range(2500)])
        self.assertEqual([r["seq"] for r in rows], list(range(1, 2501)))
        # with -c it knows the limit and sends small enough chunks at once
        out, err = self.ctl_ok("-c", d.conf, "-v", "import", "-", input=lines.encode())
        self.assertEqual(out, "imported 2500 messages from stdin via the broker (new seqs)\n")
        self.assertNotIn("too large", err)
        # a line above max_message_size is refused before anything is sent
        big = json.dumps({"topic": "big.t", "data": "q" * 3000}) + "\n"
        self.ctl_fails(1, "-c", d.conf, "import", "-", input=("".join(lines.splitlines(True)[:2]) + big).encode(),
                       pattern=r"stdin line 3: .*exceeds 2048.*nothing was imported")


if __name__ == "__main__":
    c.main()
