#!/usr/bin/python3
"""unsub's answer comes last (docs/PROTOCOL.md "unsub"): the ok follows every frame of the
subscription, its "subscribed" included, and no msg of it comes after the ok.

- sub and unsub sent back to back (the subscription still opening in the delivery thread):
  subscribed, then ok, for ephemeral and durable subscriptions; the durable consumer exists
  afterwards and resumes;
- a live subscription with messages flowing: after the ok, no msg for that topic;
- a subscribe again right after the unsub works (the topic is free at once).
"""

import os
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402


class Unsub(h.WsqdTestCase):

    def test_sub_then_unsub_at_once(self):
        for consumer in (None, "c1"):
            with self.subTest(consumer=consumer):
                ws = h.SocketWS(self.wsqd)
                topic = "us.%s" % (consumer or "eph")
                sub = {"op": "sub", "topic": topic, "from": "earliest", "ref": "s"}
                if consumer:
                    sub["consumer"] = consumer
                # one write: the unsub reaches wsqd while the subscription is opening
                ws.send_raw(ws.frame(1, h.json.dumps(sub).encode()) +
                            ws.frame(1, h.json.dumps({"op": "unsub", "topic": topic,
                                                      "ref": "u"}).encode()))
                first = ws.recv_json()
                second = ws.recv_json()
                self.assertEqual((first["op"], first.get("ref")), ("subscribed", "s"), first)
                self.assertEqual((second["op"], second.get("ref")), ("ok", "u"), second)
                ws.send_json({"op": "ping", "ref": "p"})
                self.assertEqual(ws.recv_json(), {"op": "pong", "ref": "p"})
                # subscribing again works at once
                ws.send_json(sub)
                again = ws.expect("subscribed")
                if consumer:
                    self.assertTrue(again["resumed"], again)
                ws.close()

    def test_no_msg_after_the_ok(self):
        d = self.wsqd
        for i in range(200):
            d.publish("us.live", "m%d" % i)
        ws = h.SocketWS(d)
        ws.send_json({"op": "sub", "topic": "us.live", "from": "earliest", "window": 10000,
                      "ref": "s"})
        ws.expect("subscribed")
        ws.send_json({"op": "unsub", "topic": "us.live", "ref": "u"})
        seen_ok = False
        msgs = 0
        ws.send_json({"op": "ping", "ref": "after"})
        while True:
            f = ws.recv_json()
            if f["op"] == "pong":
                break
            if f["op"] == "ok":
                self.assertEqual(f.get("ref"), "u", f)
                seen_ok = True
            elif f["op"] == "msg":
                self.assertFalse(seen_ok, "a msg after the unsub's ok: %r" % f)
                msgs += 1
        # (the ping is answered by the service thread at once, so the ok may come after it)
        if not seen_ok:
            f = ws.recv_json()
            while f["op"] == "msg":
                msgs += 1
                f = ws.recv_json()
            self.assertEqual((f["op"], f.get("ref")), ("ok", "u"), f)
        d.publish("us.live", "after the unsub")
        ws.send_json({"op": "ping", "ref": "end"})
        self.assertEqual(ws.expect("pong", skip=()).get("ref"), "end")
        ws.close()


if __name__ == "__main__":
    h.main()
