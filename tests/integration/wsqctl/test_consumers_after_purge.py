#!/usr/bin/python3
"""`wsqctl consumers` shows what is true now, also after a purge removed messages a durable
consumer had not acknowledged (issue 11 §6: it showed PENDING 1 and LAG 0 after `purge --all`
until the consumer resumed).

- PENDING counts delivered, unacknowledged messages that still exist; LAG the retained ones not
  acknowledged: removed messages are neither;
- GAP names the removed, unacknowledged seqs the consumer is told about (a `gap` frame) when it
  resumes, and the reason; once it resumed, the gap is gone from the listing;
- check finds nothing wrong with such a consumer.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctlharness as c  # noqa: E402
import wsqharness as h  # noqa: E402


class ConsumersAfterPurge(c.CtlTestCase):

    def consumer(self, **want):
        """The consumer c of cp.t once its stored state has the wanted values."""
        def get():
            doc = self.ctl_json("-c", self.wsqd.conf, "consumers", "cp.t")
            c = doc["consumers"][0] if doc["consumers"] else None
            return c if c and all(c[k] == v for k, v in want.items()) else None
        return h.wait_until(get, what="consumer c with %r" % (want,))

    def row(self):
        out, _ = self.ctl_ok("-c", self.wsqd.conf, "consumers", "cp.t")
        head, row = out.splitlines()
        self.assertEqual(head.split(), ["TOPIC", "CONSUMER", "MODE", "ACK-FLOOR", "DELIVERED",
                                        "PENDING", "LAG", "GAP", "MAX-DELIV", "LAST-SEEN"])
        return row.split()[:9]

    def test_pending_lag_and_gap_after_purges(self):
        d = self.wsqd
        C = ("-c", d.conf)
        for i in range(1, 6):
            d.publish("cp.t", "m%d" % i)
        # a durable consumer: 1..4 delivered (a window of 3, then 1 acknowledged), then gone
        ws = h.SocketWS(d)
        self.addCleanup(ws.close)
        ws.subscribe("cp.t", consumer="c", window=3)
        self.assertEqual([ws.expect("msg")["seq"] for _ in range(3)], [1, 2, 3])
        ws.send_json({"op": "ack", "topic": "cp.t", "upto": 1})
        self.assertEqual(ws.expect("msg")["seq"], 4)
        c = self.consumer(ack_floor=1, delivered_upto=4)
        ws.close()
        self.assertEqual((c["pending"], c["lag"], c.get("gap")), (3, 4, None))

        # purge below 3: seq 2 (delivered, not acked) is gone; 3 and 4 are still pending
        self.ctl_ok(*C, "purge", "cp.t", "--before", "3")
        c = self.consumer()
        self.assertEqual((c["ack_floor"], c["delivered_upto"], c["pending"], c["lag"]),
                         (1, 4, 2, 3))
        self.assertEqual(c.get("gap"), {"from": 2, "to": 2, "reason": "purge"})
        self.assertEqual(self.row(), ["cp.t", "c", "exclusive", "1", "4", "2", "3", "2-2", "1"])

        # purge --all: nothing pending, nothing to catch up on; a gap of 2-5 when it resumes
        res = self.ctl_json(*C, "purge", "cp.t", "--all")
        self.assertEqual((res["first_seq"], res["next_seq"]), (6, 6))
        c = self.consumer()
        self.assertEqual((c["pending"], c["lag"], c["max_deliveries"]), (0, 0, 0))
        self.assertEqual(c.get("gap"), {"from": 2, "to": 5, "reason": "purge"})
        self.assertEqual(self.row(), ["cp.t", "c", "exclusive", "1", "4", "0", "0", "2-5", "0"])
        # the same from the store directly, and check has nothing to say about it
        c2 = self.ctl_json("--data", d.data, "consumers")["consumers"][0]
        self.assertEqual((c2["pending"], c2["lag"], c2.get("gap")), (0, 0, c.get("gap")))
        self.assertTrue(self.ctl_json(*C, "check")["ok"])

        # a new message: lag 1 (not delivered yet, so not pending)
        self.assertEqual(d.publish("cp.t", "m6"), 6)
        c = self.consumer()
        self.assertEqual((c["pending"], c["lag"]), (0, 1))

        # it resumes: the gap frame it is told about is the one listed, then 6
        ws = h.SocketWS(d)
        self.addCleanup(ws.close)
        ws.send_json({"op": "sub", "topic": "cp.t", "consumer": "c", "ref": 1})
        frames = []
        while not frames or frames[-1]["op"] != "msg":
            f = ws.recv_json()
            if f["op"] in ("gap", "msg"):
                frames.append(f)
        self.assertEqual([(f["op"], f.get("from"), f.get("to"), f.get("reason"), f.get("seq"))
                          for f in frames],
                         [("gap", 2, 5, "purge", None), ("msg", None, None, None, 6)])
        # delivered, not acked: pending now; the gap was told, so it is gone
        c = self.consumer(delivered_upto=6)
        self.assertEqual((c["pending"], c["lag"], c.get("gap")), (1, 1, None))
        ws.send_json({"op": "ack", "topic": "cp.t", "seq": 6})
        c = self.consumer(ack_floor=6)
        self.assertEqual((c["pending"], c["lag"], c.get("gap")), (0, 0, None))
        row = self.row()
        self.assertEqual(row, ["cp.t", "c", "exclusive", "6", "6", "0", "0", "-", "0"])
        ws.close()


if __name__ == "__main__":
    c.main()
