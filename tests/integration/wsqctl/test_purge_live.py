#!/usr/bin/python3
"""A live purge while consumers are connected and publishers keep publishing.

- consumers behind the purge get a `gap` with reason "purge", then continue from the first
  message that still exists;
- no confirmed message outside the purge is lost (checked against every confirm the publishers
  got, on the purged topic above the purge and on an untouched topic);
- purge never changes the next seq (--before, --older-than, --all);
- the answer says it went through the broker.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctlharness as c  # noqa: E402
import wsqharness as h  # noqa: E402


def ts_of(d, topic, seq):
    """The ts (wsqd's clock, Unix ms) of one message, from the HTTP history."""
    st, _, body = d.history(topic, "?from=%d&limit=1" % seq)
    assert st == 200 and body["messages"][0]["seq"] == seq, (st, body)
    return body["messages"][0]["ts"]


def export(tc, d, *topics):
    out, _ = tc.ctl_ok("-c", d.conf, "export", *topics)
    return [json.loads(x) for x in out.splitlines()]


class PurgeLive(c.CtlTestCase):

    def test_purge_before_with_consumers_and_load(self):
        d = self.wsqd
        load = c.Load(d, "live.p")
        other = c.Load(d, "live.other")
        load.start()
        other.start()
        self.addCleanup(load.stop)
        self.addCleanup(other.stop)
        load.wait_for(200)

        # a durable consumer stuck behind with a full window (5 delivered, none acked)
        slow = h.SocketWS(d)
        self.addCleanup(slow.close)
        slow.subscribe("live.p", consumer="slow", window=5)
        got = [slow.expect("msg")["seq"] for _ in range(5)]
        self.assertEqual(got, [1, 2, 3, 4, 5])
        # an ephemeral subscriber from earliest that reads everything as it comes
        eph = h.SocketWS(d)
        self.addCleanup(eph.close)
        eph.subscribe("live.p", frm="earliest", window=10000)

        before = self.ctl_json("-c", d.conf, "topics")
        nb = {t["name"]: t for t in before["topics"]}["live.p"]["next_seq"]
        res = self.ctl_json("-c", d.conf, "purge", "live.p", "--before", "150")
        self.assertEqual(res["via"], "broker")
        self.assertEqual(res["topic"], "live.p")
        self.assertEqual(res["removed"], 149)
        self.assertEqual(res["first_seq"], 150)
        self.assertGreaterEqual(res["next_seq"], nb)  # never moves back; the load goes on

        # the slow consumer: acks what it has, then gets the gap, then 150, 151, ...
        slow.send_json({"op": "ack", "topic": "live.p", "upto": 5})
        f = slow.recv_json()
        while f["op"] == "msg" and f["seq"] < 6:
            f = slow.recv_json()
        self.assertEqual(f["op"], "gap", f)
        self.assertEqual((f["topic"], f["to"], f["reason"]), ("live.p", 149, "purge"))
        self.assertLessEqual(f["from"], 6)
        target = res["next_seq"] + 20
        load.wait_for(target)
        seen = {}
        while len(seen) < target - 150:
            m = slow.expect("msg")
            seen[m["seq"]] = m["data"]
            slow.send_json({"op": "ack", "topic": "live.p", "seq": m["seq"]})
        self.assertEqual(sorted(seen)[:3], [150, 151, 152])
        for seq in range(150, target):
            if seq in load.confirmed:
                self.assertEqual(seen.get(seq), load.confirmed[seq],
                                 "slow consumer lost seq %d" % seq)

        # the ephemeral subscriber: in order, any gap is a purge gap, nothing confirmed missing
        # outside the purged range
        eseen, last = {}, 0
        while last < target - 1:
            f = eph.recv_json()
            if f["op"] == "gap":
                self.assertEqual(f["reason"], "purge")
                self.assertLessEqual(f["to"], 149)
                continue
            self.assertEqual(f["op"], "msg", f)
            self.assertGreater(f["seq"], last)
            last = f["seq"]
            eseen[f["seq"]] = f["data"]
        for seq in range(150, target):
            if seq in load.confirmed:
                self.assertEqual(eseen.get(seq), load.confirmed[seq], "ephemeral lost seq %d"
                                 % seq)

        load.stop()
        other.stop()
        # the store: live.p holds every confirmed message from 150 on, live.other all of its
        rows = export(self, d, "live.p", "live.other")
        p = {r["seq"]: r["data"] for r in rows if r["topic"] == "live.p"}
        o = {r["seq"]: r["data"] for r in rows if r["topic"] == "live.other"}
        self.assertEqual(min(p), 150)
        load.check_store(self, p, first=150)
        other.check_store(self, o)

        # purge --all with the consumers still connected: they get a purge gap, next seq kept
        nb = self.ctl_json("-c", d.conf, "topics")
        nb = {t["name"]: t for t in nb["topics"]}["live.p"]["next_seq"]
        res = self.ctl_json("-c", d.conf, "purge", "live.p", "--all")
        self.assertEqual((res["first_seq"], res["next_seq"]), (nb, nb))
        self.assertEqual(res["removed"], nb - 150)
        self.assertEqual(d.publish("live.p", "after"), nb)
        m = eph.recv_json()
        while m["op"] == "msg" and m["seq"] < nb:
            m = eph.recv_json()
        if m["op"] == "gap":  # it had read everything: nothing it needed was removed
            self.assertEqual(m["reason"], "purge")
            m = eph.recv_json()
        self.assertEqual((m["op"], m["seq"], m["data"]), ("msg", nb, "after"))

    def test_purge_older_than_keeps_newer_and_next_seq(self):
        d = self.wsqd
        for i in range(5):
            d.publish("age.t", "old %d" % i)
        last_old = ts_of(d, "age.t", 5)
        # wsqd stamps ts with this machine's clock: wait until the old ones are `gap` ms old
        gap = int(2000 * h.SLOW)
        while time.time() * 1000 < last_old + gap:
            time.sleep(0.01)
        for i in range(3):
            d.publish("age.t", "new %d" % i)
        first_new = ts_of(d, "age.t", 6)
        self.assertGreaterEqual(first_new - last_old, gap)
        # --older-than halfway between the two groups as of now: gap/2 of slack either way for
        # the time wsqctl and wsqd take to apply it, whatever the publishes above took
        older = int(time.time() * 1000 - (last_old + first_new) / 2)
        out, _ = self.ctl_ok("-c", d.conf, "purge", "age.t", "--older-than", "%dms" % older)
        self.assertRegex(out, r"^purged 5 messages from age\.t via the broker \(first seq now 6, "
                              r"next seq 9\)\n$")
        pk = self.ctl_json("-c", d.conf, "peek", "age.t")
        self.assertEqual([m["data"] for m in pk["messages"]], ["new 0", "new 1", "new 2"])
        # nothing older: purges nothing, changes nothing
        res = self.ctl_json("-c", d.conf, "purge", "age.t", "--older-than", "1h")
        self.assertEqual((res["removed"], res["first_seq"], res["next_seq"]), (0, 6, 9))
        # a peek from a purged seq names the gap
        pk = self.ctl_json("-c", d.conf, "peek", "age.t", "--from", "2")
        self.assertEqual(pk["gap"], {"from": 2, "to": 5, "reason": "purge"})
        _, err = self.ctl_ok("-c", d.conf, "peek", "age.t", "--from", "2")
        self.assertIn("seqs 2-5 of age.t no longer exist (purge)", err)


if __name__ == "__main__":
    c.main()
