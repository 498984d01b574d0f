#!/usr/bin/python3
"""Retention by max_bytes and by max_age, end to end, and the `gap` a consumer then gets
(docs/OPERATIONS.md "Retention", docs/PROTOCOL.md "gap", raw mode 4010, HTTP history `gap`;
max_messages is covered by test_gap.py):

- max_bytes counts payload bytes: a topic at exactly max_bytes keeps everything; one byte more
  removes the oldest messages until it fits again (discard: old);
- max_age removes messages older than it (checked about once a second), also on a topic whose
  rule says `discard: new`, and also when nothing is published any more;
- what a consumer that still needed the removed messages gets: a durable wsq.v1 consumer
  resumes with `gap` {from, to, reason: "retention"} before the first message after the range
  (and the range counts as acknowledged: the next resume has no gap); an ephemeral `sub` from a
  removed seq gets the same gap; a durable raw-mode consumer is closed with 4010
  `gap <from>-<to> retention` and resumes after the gap on its next connection; the HTTP
  history names the gap.
"""

import os
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402

RETENTION = """
retention:
  topics:
    - pattern: "rb.>"
      max_bytes: 1000
    - pattern: "ra.>"
      max_age: 1s
    - pattern: "rn.>"
      max_age: 1s
      max_messages: 100
      discard: new
"""


class Retention(h.WsqdTestCase):
    EXTRA_YAML = RETENTION

    def first_seq(self, topic):
        st, _, body = self.wsqd.history(topic, "?limit=1")
        self.assertEqual(st, 200, body)
        return body["first_seq"]

    def consumer_at(self, topic, name, raw=False):
        """A durable consumer created from earliest on a topic, then left offline."""
        async def go():
            if raw:
                ws = await h.connect_raw(self.wsqd, "/topics/%s?consumer=%s&from=earliest"
                                         % (topic, name))
            else:
                ws = await h.connect_v1(self.wsqd)
                await h.send_json(ws, {"op": "sub", "topic": topic, "consumer": name,
                                       "from": "earliest", "ref": 1})
                await h.expect_op(ws, "subscribed")
            await ws.close()
        h.run(go())

    def resume(self, topic, name, n):
        """Resumes a durable wsq.v1 consumer: -> (subscribed, the next n frames), acking up to
        the last message."""
        async def go():
            ws = await h.connect_v1(self.wsqd)
            await h.send_json(ws, {"op": "sub", "topic": topic, "consumer": name, "ref": 2})
            sub = await h.expect_op(ws, "subscribed")
            frames = [await h.recv_json(ws) for _ in range(n)]
            await h.expect_silence(ws)
            seqs = [f["seq"] for f in frames if f["op"] == "msg"]
            if seqs:
                await h.send_json(ws, {"op": "ack", "topic": topic, "upto": max(seqs)})
                await h.send_json(ws, {"op": "ping", "ref": "p"})
                await h.expect_op(ws, "pong")
            await ws.close()
            return sub, frames
        return h.run(go())

    def test_max_bytes_trims_and_consumers_get_the_gap(self):
        d = self.wsqd
        t = "rb.t"
        self.consumer_at(t, "v1")
        self.consumer_at(t, "raw", raw=True)
        for i in range(1, 6):
            d.publish(t, ("%d" % i) * 200)      # 5 x 200 = 1000 bytes: exactly max_bytes
        time.sleep(0.2)
        self.assertEqual(self.first_seq(t), 1, "a topic at exactly max_bytes lost a message")
        d.publish(t, "6")                       # 1001 bytes: the oldest (200 B) goes
        h.wait_until(lambda: self.first_seq(t) == 2, 5, "max_bytes to remove seq 1")
        d.publish(t, "7" * 400)                 # 801 + 400: seqs 2 and 3 go (401 + ... <= 1000)
        h.wait_until(lambda: self.first_seq(t) == 4, 5, "max_bytes to remove seqs 2-3")
        st, _, hist = d.history(t, "?from=1")
        self.assertEqual([m["seq"] for m in hist["messages"]], [4, 5, 6, 7])
        self.assertEqual(sum(len(m["data"]) for m in hist["messages"]), 801)
        self.assertEqual(hist["gap"], {"from": 1, "to": 3, "reason": "retention"})
        self.assertEqual(d.metrics()['wsq_topic_bytes{topic="rb.t"}'], 801)

        # the durable wsq.v1 consumer: gap 1-3, then 4..7; the next resume has no gap
        sub, frames = self.resume(t, "v1", 5)
        self.assertEqual(sub["start_seq"], 1, sub)
        self.assertEqual(frames[0], {"op": "gap", "topic": t, "from": 1, "to": 3,
                                     "reason": "retention"})
        self.assertEqual([f["seq"] for f in frames[1:]], [4, 5, 6, 7])
        d.publish(t, "8")
        sub, frames = self.resume(t, "v1", 1)
        self.assertEqual((sub["start_seq"], frames[0]["op"], frames[0]["seq"]), (8, "msg", 8))

        # an ephemeral sub from a removed seq
        async def eph():
            ws = await h.connect_v1(d)
            await h.send_json(ws, {"op": "sub", "topic": t, "from": {"seq": 2}, "ref": 3})
            await h.expect_op(ws, "subscribed")
            f = [await h.recv_json(ws) for _ in range(2)]
            await ws.close()
            return f
        gap, first = h.run(eph())
        self.assertEqual((gap["op"], gap["from"], gap["to"], gap["reason"]),
                         ("gap", 2, 3, "retention"), gap)
        self.assertEqual(first["seq"], 4)

        # the durable raw consumer: 4010 naming the gap, then it resumes after it
        async def raw():
            ws = await h.connect_raw(d, "/topics/%s?consumer=raw" % t)
            closed = await h.wait_closed(ws)
            ws = await h.connect_raw(d, "/topics/%s?consumer=raw" % t)
            got = [await h.recv(ws) for _ in range(5)]
            await ws.close()
            return closed, got
        closed, got = h.run(raw())
        self.assertEqual(closed, (4010, "gap 1-3 retention", []))
        self.assertEqual(got, ["4" * 200, "5" * 200, "6", "7" * 400, "8"])

    def test_max_age_trims_without_traffic_and_consumers_get_the_gap(self):
        d = self.wsqd
        for t in ("ra.t", "rn.t"):
            self.consumer_at(t, "c")
            for i in range(1, 4):
                d.publish(t, "old %d" % i)
        t_pub = time.monotonic()
        # nothing else is published: the age check alone removes them (1 s, checked ~1/s)
        for t in ("ra.t", "rn.t"):
            h.wait_until(lambda: self.first_seq(t) == 4, 6, "max_age to empty %s" % t)
        self.assertGreaterEqual(time.monotonic() - t_pub, 0.9, "removed before max_age")
        for t in ("ra.t", "rn.t"):
            st, _, hist = d.history(t, "?from=1")
            self.assertEqual((hist["messages"], hist["first_seq"], hist["next_seq"]),
                             ([], 4, 4), hist)
            self.assertEqual(hist["gap"], {"from": 1, "to": 3, "reason": "retention"})
            self.assertEqual(d.publish(t, "new"), 4)   # seqs are never reused
            sub, frames = self.resume(t, "c", 2)
            self.assertEqual(frames[0], {"op": "gap", "topic": t, "from": 1, "to": 3,
                                         "reason": "retention"})
            self.assertEqual((frames[1]["seq"], frames[1]["data"]), (4, "new"))


if __name__ == "__main__":
    h.main()
