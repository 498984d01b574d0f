#!/usr/bin/python3
"""A topic whose retention says `discard: new` refuses publishes once it is full, over every
protocol (docs/PROTOCOL.md "pub", HTTP "Status codes", "Close codes"; docs/OPERATIONS.md
"Retention"):

- HTTP: 409 {"error":{"code":"topic_full",...}}, nothing stored;
- wsq.v1: `err` with code topic_full and the publish's ref; the connection goes on (a publish
  to another topic on it is confirmed);
- raw mode: close 4013 with the reason exactly `publish refused: topic_full`;
- full by max_messages and by max_bytes (payload bytes: a message that would take the topic
  above max_bytes is refused, one that fits exactly is stored);
- the messages already stored stay readable; wsq_publish_errors_total counts every refusal;
  once a purge made room, publishes are accepted again, with the next seq.
"""

import os
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402
import sechelp as s  # noqa: E402

RETENTION = """
retention:
  topics:
    - pattern: "full.count.>"
      max_messages: 3
      discard: new
    - pattern: "full.bytes.>"
      max_bytes: 100
      discard: new
"""


def refusals(d):
    return d.metrics()["wsq_publish_errors_total"]


class TopicFull(h.WsqdTestCase):
    EXTRA_YAML = RETENTION

    def fill(self, topic, n):
        for i in range(1, n + 1):
            self.assertEqual(self.wsqd.publish(topic, "m%d" % i), i)

    def test_http_409(self):
        d = self.wsqd
        self.fill("full.count.h", 3)
        st, hdrs, body = d.post("full.count.h", "one too many")
        self.assertEqual(st, 409, body)
        self.assertEqual(body["error"]["code"], "topic_full", body)
        self.assertEqual(refusals(d), 1)
        # nothing stored, the rest readable
        st, _, hist = d.history("full.count.h", "?from=1")
        self.assertEqual(st, 200, hist)
        self.assertEqual([m["data"] for m in hist["messages"]], ["m1", "m2", "m3"])
        self.assertEqual(hist["next_seq"], 4)

    def test_wsq_v1_err_and_the_connection_goes_on(self):
        d = self.wsqd
        self.fill("full.count.v", 3)

        async def go():
            ws = await h.connect_v1(d)
            await h.send_json(ws, {"op": "pub", "topic": "full.count.v", "data": "x",
                                   "ref": "r1"})
            err = await s.expect_err(ws, "topic_full", "r1")
            # without a ref the error still comes (no ok, but errors are sent)
            await h.send_json(ws, {"op": "pub", "topic": "full.count.v", "data": "y"})
            err2 = await h.expect_op(ws, "err")
            ok = await h.pub_confirmed(ws, "other.topic", "fine", 7)
            await ws.close()
            return err, err2, ok

        err, err2, ok = h.run(go())
        self.assertIn("full.count.v", err["message"])
        self.assertEqual((err2["code"], "ref" in err2), ("topic_full", False), err2)
        self.assertEqual((ok["topic"], ok["seq"]), ("other.topic", 1))
        self.assertEqual(refusals(d), 2)
        self.assertEqual(d.history("full.count.v")[2]["next_seq"], 4)

    def test_raw_close_4013(self):
        d = self.wsqd
        self.fill("full.count.r", 3)

        async def go():
            ws = await h.connect_raw(d, "/topics/full.count.r")
            await ws.send("refused")
            return await h.wait_closed(ws)

        code, reason, frames = h.run(go())
        self.assertEqual((code, reason), (4013, "publish refused: topic_full"))
        self.assertEqual(frames, [])   # its publish was not stored: nothing to deliver
        self.assertEqual(refusals(d), 1)
        self.assertEqual(d.history("full.count.r")[2]["next_seq"], 4)

    def test_max_bytes(self):
        """max_bytes 100 (payload bytes): 60 + 40 fit exactly; one more byte does not, on any
        protocol; a topic of the same rule next to it is not affected."""
        d = self.wsqd
        t = "full.bytes.a"
        self.assertEqual(d.publish(t, "a" * 60), 1)
        self.assertEqual(d.publish(t, b"\x00" * 40), 2)       # exactly 100: stored
        st, _, body = d.post(t, "b")
        self.assertEqual((st, body["error"]["code"]), (409, "topic_full"), body)

        async def go():
            ws = await h.connect_v1(d)
            await h.send_json(ws, {"op": "pub", "topic": t, "data": "", "ref": 1})
            ok = await h.recv_json(ws)      # an empty payload adds no byte: stored
            await h.send_json(ws, {"op": "pub", "topic": t, "data": "c", "ref": 2})
            err = await s.expect_err(ws, "topic_full", 2)
            await ws.close()
            raw = await h.connect_raw(d, "/topics/" + t)
            await raw.send(b"d")
            closed = await h.wait_closed(raw)
            return ok, err, closed

        ok, err, closed = h.run(go())
        self.assertEqual((ok["op"], ok.get("seq")), ("ok", 3), ok)
        self.assertEqual(closed[:2], (4013, "publish refused: topic_full"))
        self.assertEqual(d.publish("full.bytes.b", "x" * 100), 1)
        self.assertEqual(refusals(d), 3)
        st, _, hist = d.history(t, "?from=1")
        self.assertEqual([len(m["data"]) for m in hist["messages"]], [60, 56, 0])  # 40 B as base64
        self.assertEqual(hist["next_seq"], 4)

    def test_room_after_a_purge(self):
        d = self.wsqd
        self.fill("full.count.p", 3)
        self.assertEqual(d.post("full.count.p", "no")[0], 409)
        st, _, body = d.http_json("POST", "/admin/purge?topic=full.count.p&before=3")
        self.assertEqual((st, body["removed"]), (200, 2), body)
        # two free places: seqs 4 and 5 (never 2 or 3 again), then full again
        self.assertEqual(d.publish("full.count.p", "m4"), 4)
        self.assertEqual(d.publish("full.count.p", "m5"), 5)
        self.assertEqual(d.post("full.count.p", "no")[0], 409)
        st, _, hist = d.history("full.count.p")
        self.assertEqual([m["seq"] for m in hist["messages"]], [3, 4, 5])


if __name__ == "__main__":
    h.main()
