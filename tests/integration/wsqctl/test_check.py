#!/usr/bin/python3
"""wsqctl check: a healthy store (live, under publish load) passes with exit 0; a store broken on
purpose offline (with mdb_dump/mdb_load from lmdb-utils) fails with exit 4 and names every
problem, as text and as --json."""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctlharness as c  # noqa: E402
import wsqharness as h  # noqa: E402


def dump(data_dir, db):
    """mdb_dump -s db: (header lines, [(key bytes, value bytes)])."""
    out = subprocess.run(["mdb_dump", "-s", db, data_dir], check=True,
                         capture_output=True).stdout.decode()
    lines = out.splitlines()
    end = lines.index("HEADER=END")
    head = lines[:end + 1]
    body = [ln.strip() for ln in lines[end + 1:] if ln.startswith(" ")]
    return head, [(bytes.fromhex(body[i]), bytes.fromhex(body[i + 1]))
                  for i in range(0, len(body), 2)]


def load(data_dir, db, head, records):
    """mdb_load -s db: puts (overwrites) the records."""
    head = [ln for ln in head if not ln.startswith("db_pagesize=")]
    text = "\n".join(head) + "\n" + "".join(" %s\n %s\n" % (k.hex(), v.hex())
                                             for k, v in records) + "DATA=END\n"
    subprocess.run(["mdb_load", "-s", db, data_dir], input=text.encode(), check=True)


def topic_ids(data_dir):
    _, names = dump(data_dir, "names")
    return {k.decode(): int.from_bytes(v, "big") for k, v in names}


class Check(c.CtlTestCase):

    def test_healthy_live_then_broken_offline(self):
        d = self.wsqd
        for i in range(20):
            d.publish("chk.a", "a%d" % i)
            d.publish("chk.b", bytes([i]) * 10)
        ws = h.SocketWS(d)
        ws.subscribe("chk.a", consumer="cons", window=5)
        ws.expect("msg")
        ws.close()
        load_ = c.Load(d, "chk.load")
        load_.start()
        self.addCleanup(load_.stop)
        load_.wait_for(20)
        # healthy, live
        out, _ = self.ctl_ok("-c", d.conf, "check")
        self.assertRegex(out, r"^ok: 3 topics, \d+ messages, 1 consumers checked; no violations")
        self.assertEqual(self.ctl_json("-c", d.conf, "check")["ok"], True)
        load_.stop()
        d.stop()
        self.assertEqual(self.ctl_json("--data", d.data, "check")["count"], 0)

        ids = topic_ids(d.data)
        head, msgs = dump(d.data, "messages")
        key = {(int.from_bytes(k[:4], "big"), int.from_bytes(k[4:], "big")): (k, v)
               for k, v in msgs}
        # 1. a flipped payload byte in chk.a seq 3: checksum mismatch
        k, v = key[(ids["chk.a"], 3)]
        v = v[:16] + bytes([v[16] ^ 0x20]) + v[17:]
        # 2. a stray message above chk.b's next seq (21): seq 30
        k2 = ids["chk.b"].to_bytes(4, "big") + (30).to_bytes(8, "big")
        v2 = key[(ids["chk.b"], 20)][1]
        load(d.data, "messages", head, [(k, v), (k2, v2)])
        # 3. the consumer's ack floor and delivered seq far beyond the topic
        chead, cons = dump(d.data, "consumers")
        (ck, cv), = cons
        cv = cv[:16] + (1000).to_bytes(8, "little") + (1000).to_bytes(8, "little") + cv[32:]
        load(d.data, "consumers", chead, [(ck, cv)])

        out, err = self.ctl_fails(4, "--data", d.data, "check")
        self.assertIn("chk.a: seq 3: checksum mismatch (CRC-32C of payload, timestamp and flags): "
                      "the message is corrupt\n", out)
        self.assertIn("chk.b: seq 30 is at or above next_seq 21\n", out)
        self.assertIn("chk.b: topic says 20 messages, store holds 21\n", out)
        self.assertIn("chk.a: consumer 'cons' ack floor 1000 is beyond the topic's last seq 20\n",
                      out)
        self.assertRegex(err, r"check found \d+ violations in the store at ")
        rc, out, err = self.ctl("--data", d.data, "--json", "check")
        self.assertEqual(rc, 4)
        doc = json.loads(out)
        self.assertFalse(doc["ok"])
        self.assertEqual(doc["count"], len(doc["violations"]))
        self.assertIn({"topic": "chk.a", "problem": "seq 3: checksum mismatch (CRC-32C of payload, "
                                                     "timestamp and flags): the message is "
                                                     "corrupt"}, doc["violations"])
        self.assertIn({"topic": "chk.b", "problem": "seq 30 is at or above next_seq 21"},
                      doc["violations"])


if __name__ == "__main__":
    c.main()
