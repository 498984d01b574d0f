#!/usr/bin/python3
"""wsq.v1 durable consumer resume with python3-websockets, against the real wsqd.

PROTOCOL.md "wsq.v1": a subscribe naming an existing consumer resumes: `subscribed` says
"resumed":true and start_seq = the first unacknowledged seq; the unacknowledged messages come
first (in seq order, "deliveries":2 and up), then new ones. `ack` takes one `seq` or a cumulative
`upto`, and a cumulative ack never acknowledges messages not yet delivered.
"""

import base64
import os
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402


BIN = bytes(range(256))


def payload(i):
    return BIN if i == 4 else "m%d \u00e9" % i


async def publish(d, topic, first, last):
    ws = await h.connect_v1(d)
    oks = []
    for i in range(first, last + 1):
        p = payload(i)
        oks.append(await h.pub_confirmed(ws, topic, p, ref=i, binary=isinstance(p, bytes)))
    await ws.close()
    return oks


class Resume(h.WsqdTestCase):
    # ack_wait is not needed: redelivery on resume must not depend on it
    EXTRA_YAML = "limits:\n  ack_wait: 0\n"

    def check_msg(self, m, topic, seq, deliveries=1):
        want = {"op": "msg", "topic": topic, "seq": seq}
        self.assertEqual({k: m.get(k) for k in want}, want, m)
        self.assertIsInstance(m.get("ts"), int, m)
        self.assertLess(abs(m["ts"] - time.time() * 1000), 120000, m)
        p = payload(seq)
        if isinstance(p, bytes):
            self.assertEqual(m.get("enc"), "base64", m)
            self.assertEqual(base64.b64decode(m["data"], validate=True), p, m)
        else:
            self.assertNotIn("enc", m)
            self.assertEqual(m["data"], p, m)
        if deliveries == 1:
            self.assertNotIn("deliveries", m, "deliveries is present only when > 1: %r" % m)
        else:
            self.assertEqual(m.get("deliveries"), deliveries, m)

    def check_subscribed(self, s, topic, consumer, ref, first, nxt, start, resumed, window=256):
        self.assertEqual(s.get("op"), "subscribed", s)
        self.assertEqual(s.get("ref"), ref, s)
        self.assertEqual(s.get("topic"), topic, s)
        self.assertEqual(s.get("consumer"), consumer, s)
        self.assertRegex(s.get("epoch", ""), r"^[0-9a-f]{16}$", s)
        self.assertEqual((s.get("first_seq"), s.get("next_seq"), s.get("start_seq")),
                         (first, nxt, start), s)
        self.assertEqual(s.get("window"), window, s)
        self.assertIs(s.get("resumed"), resumed, s)

    def test_resume_after_disconnect_and_restart(self):
        d = self.wsqd
        T = "resume.orders"

        async def phase1():
            oks = await publish(d, T, 1, 6)
            ws = await h.connect_v1(d)
            await h.send_json(ws, {"op": "sub", "topic": T, "consumer": "c1",
                                   "from": "earliest", "ref": "s1"})
            sub = await h.recv_json(ws)
            msgs = [await h.expect_op(ws, "msg") for _ in range(6)]
            silence = await h.expect_silence(ws, 0.2)
            # ack: upto 2 (cumulative), 4 and 6 individually -> unacked 3 and 5
            await h.send_json(ws, {"op": "ack", "topic": T, "upto": 2})
            await h.send_json(ws, {"op": "ack", "topic": T, "seq": 4})
            await h.send_json(ws, {"op": "ack", "topic": T, "seq": 6, "ref": "a6"})
            await h.send_json(ws, {"op": "ping", "ref": 99})
            pong = await h.recv_json(ws)   # acks are not answered: the pong comes first
            await ws.close()
            return oks, sub, msgs, silence, pong

        oks, sub, msgs, silence, pong = h.run(phase1())
        for i, ok in enumerate(oks, 1):
            self.assertEqual(ok, {"op": "ok", "ref": i, "topic": T, "seq": i})
        self.check_subscribed(sub, T, "c1", "s1", 1, 7, 1, False)
        for i, m in enumerate(msgs, 1):
            self.check_msg(m, T, i)
        self.assertEqual([m["ts"] for m in msgs], sorted(m["ts"] for m in msgs))
        self.assertIsNone(silence)
        self.assertEqual(pong, {"op": "pong", "ref": 99})

        async def phase2():
            oks = await publish(d, T, 7, 8)
            ws = await h.connect_v1(d)
            # from is ignored for an existing consumer
            await h.send_json(ws, {"op": "sub", "topic": T, "consumer": "c1",
                                   "from": "latest", "ref": 2})
            sub = await h.recv_json(ws)
            msgs = [await h.expect_op(ws, "msg") for _ in range(4)]
            silence = await h.expect_silence(ws, 0.3)
            # ack 3 and 7; leave 5 and 8 unacknowledged across a restart
            await h.send_json(ws, {"op": "ack", "topic": T, "seq": 3})
            await h.send_json(ws, {"op": "ack", "topic": T, "seq": 7})
            await h.send_json(ws, {"op": "ping", "ref": 1})
            await h.expect_op(ws, "pong")
            await ws.close()
            return oks, sub, msgs, silence

        oks, sub, msgs, silence = h.run(phase2())
        self.assertEqual([o["seq"] for o in oks], [7, 8])
        self.check_subscribed(sub, T, "c1", 2, 1, 9, 3, True)
        self.assertEqual([m["seq"] for m in msgs], [3, 5, 7, 8])
        self.check_msg(msgs[0], T, 3, deliveries=2)
        self.check_msg(msgs[1], T, 5, deliveries=2)
        self.check_msg(msgs[2], T, 7)
        self.check_msg(msgs[3], T, 8)
        self.assertIsNone(silence)

        d.restart()     # SIGTERM, exit 0, same data dir

        async def phase3():
            ws = await h.connect_v1(d)
            await h.send_json(ws, {"op": "sub", "topic": T, "consumer": "c1", "ref": 3})
            sub = await h.recv_json(ws)
            msgs = [await h.expect_op(ws, "msg") for _ in range(2)]
            silence = await h.expect_silence(ws, 0.3)
            await h.send_json(ws, {"op": "ack", "topic": T, "upto": 8})
            await h.send_json(ws, {"op": "ping", "ref": 1})
            await h.expect_op(ws, "pong")
            await ws.close()
            # everything acknowledged: resume at next_seq, nothing old, then new messages
            ws = await h.connect_v1(d)
            await h.send_json(ws, {"op": "sub", "topic": T, "consumer": "c1", "ref": 4})
            sub2 = await h.recv_json(ws)
            silence2 = await h.expect_silence(ws, 0.3)
            oks = await publish(d, T, 9, 9)
            m9 = await h.expect_op(ws, "msg")
            await ws.close()
            return sub, msgs, silence, sub2, silence2, oks, m9

        sub, msgs, silence, sub2, silence2, oks, m9 = h.run(phase3())
        self.check_subscribed(sub, T, "c1", 3, 1, 9, 5, True)
        self.assertEqual([m["seq"] for m in msgs], [5, 8])
        self.check_msg(msgs[0], T, 5, deliveries=3)
        self.check_msg(msgs[1], T, 8, deliveries=2)
        self.assertIsNone(silence)
        self.check_subscribed(sub2, T, "c1", 4, 1, 9, 9, True)
        self.assertIsNone(silence2)
        self.assertEqual(oks[0]["seq"], 9)
        self.check_msg(m9, T, 9)

    def test_upto_never_acks_undelivered(self):
        d = self.wsqd
        T = "resume.window"

        async def go():
            await publish(d, T, 1, 6)
            ws = await h.connect_v1(d)
            await h.send_json(ws, {"op": "sub", "topic": T, "consumer": "w", "from": "earliest",
                                   "window": 2, "ref": 1})
            sub = await h.recv_json(ws)
            first = [await h.expect_op(ws, "msg") for _ in range(2)]
            s1 = await h.expect_silence(ws, 0.3)          # window full
            await h.send_json(ws, {"op": "ack", "topic": T, "seq": 1})
            third = await h.expect_op(ws, "msg")
            s2 = await h.expect_silence(ws, 0.3)
            # upto 6 acknowledges only what was delivered (2 and 3), not 4..6
            await h.send_json(ws, {"op": "ack", "topic": T, "upto": 6})
            more = [await h.expect_op(ws, "msg") for _ in range(2)]
            s3 = await h.expect_silence(ws, 0.3)
            await ws.close()
            ws = await h.connect_v1(d)
            await h.send_json(ws, {"op": "sub", "topic": T, "consumer": "w", "ref": 2})
            sub2 = await h.recv_json(ws)
            again = [await h.expect_op(ws, "msg") for _ in range(3)]
            s4 = await h.expect_silence(ws, 0.3)
            await ws.close()
            return sub, first, s1, third, s2, more, s3, sub2, again, s4

        sub, first, s1, third, s2, more, s3, sub2, again, s4 = h.run(go())
        self.check_subscribed(sub, T, "w", 1, 1, 7, 1, False, window=2)
        self.assertEqual([m["seq"] for m in first], [1, 2])
        self.assertIsNone(s1)
        self.assertEqual(third["seq"], 3)
        self.assertIsNone(s2)
        self.assertEqual([m["seq"] for m in more], [4, 5])
        self.assertIsNone(s3)
        self.check_subscribed(sub2, T, "w", 2, 1, 7, 4, True)
        self.assertEqual([m["seq"] for m in again], [4, 5, 6])
        self.check_msg(again[0], T, 4, deliveries=2)
        self.check_msg(again[1], T, 5, deliveries=2)
        self.check_msg(again[2], T, 6)
        self.assertIsNone(s4)

    def test_takeover_delivers_unacked_to_new_session(self):
        d = self.wsqd
        T = "resume.takeover"

        async def go():
            await publish(d, T, 1, 3)
            a = await h.connect_v1(d)
            await h.send_json(a, {"op": "sub", "topic": T, "consumer": "tk", "from": "earliest"})
            await h.expect_op(a, "subscribed")
            got_a = [await h.expect_op(a, "msg") for _ in range(3)]
            await h.send_json(a, {"op": "ack", "topic": T, "seq": 1})
            await h.send_json(a, {"op": "ping", "ref": 0})
            await h.expect_op(a, "pong")
            b = await h.connect_v1(d)
            await h.send_json(b, {"op": "sub", "topic": T, "consumer": "tk", "ref": "b"})
            sub_b = await h.recv_json(b)
            got_b = [await h.expect_op(b, "msg") for _ in range(2)]
            code, reason, frames = await h.wait_closed(a)
            await b.close()
            return got_a, sub_b, got_b, code, reason, frames

        got_a, sub_b, got_b, code, reason, frames = h.run(go())
        self.assertEqual([m["seq"] for m in got_a], [1, 2, 3])
        self.check_subscribed(sub_b, T, "tk", "b", 1, 4, 2, True)
        self.assertEqual([(m["seq"], m.get("deliveries")) for m in got_b], [(2, 2), (3, 2)])
        self.assertEqual((code, reason), (4009, "consumer taken over by a new session"))
        self.assertEqual(frames, [])

    def test_ack_errors(self):
        d = self.wsqd
        T = "resume.errors"

        async def go():
            await publish(d, T, 1, 1)
            ws = await h.connect_v1(d)
            out = []
            await h.send_json(ws, {"op": "ack", "topic": T, "seq": 1, "ref": "n1"})
            out.append(await h.recv_json(ws))
            await h.send_json(ws, {"op": "sub", "topic": T, "consumer": "e", "from": "earliest"})
            await h.expect_op(ws, "subscribed")
            await h.expect_op(ws, "msg")
            await h.send_json(ws, {"op": "ack", "topic": T, "seq": 1, "upto": 1, "ref": "b1"})
            out.append(await h.recv_json(ws))
            await h.send_json(ws, {"op": "ack", "topic": T, "ref": "b2"})
            out.append(await h.recv_json(ws))
            await ws.close()
            return out

        out = h.run(go())
        self.assertEqual([(o["op"], o.get("ref"), o.get("code")) for o in out],
                         [("err", "n1", "not_subscribed"), ("err", "b1", "bad_request"),
                          ("err", "b2", "bad_request")])
        for o in out:
            self.assertIsInstance(o.get("message"), str)
            self.assertTrue(o["message"])


if __name__ == "__main__":
    h.main()
