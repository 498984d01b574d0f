#!/usr/bin/python3
"""Isolation: bad input gets an err frame or a close code with a reason, and another client
publishing with confirms the whole time is unaffected. python3-websockets for the wsq.v1 and
raw clients; a hand-made masked frame on a raw socket for invalid UTF-8 in a text frame.

PROTOCOL.md: err {ref, code, message} with codes bad_json, unknown_op, bad_type, bad_topic,
bad_request, too_large; an error never closes the connection; close 1007 for invalid UTF-8,
1009 above the size limits (raw: max_message_size exactly; wsq.v1 frame:
2 x max_message_size + 64 KiB).
"""

import asyncio
import json
import os
import re
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402


MAX = 4096                       # limits.max_message_size
V1_FRAME_MAX = 2 * MAX + 65536   # wsq.v1 frame cap


class Steady:
    """A well-behaved client publishing with confirms until stopped."""

    def __init__(self, d, topic):
        self.d, self.topic = d, topic
        self.oks, self.problems = [], []
        self.stop = asyncio.Event()

    async def run(self):
        ws = await h.connect_v1(self.d)
        ref = 0
        try:
            while not self.stop.is_set() or ref < 20:
                ref += 1
                await h.send_json(ws, {"op": "pub", "topic": self.topic, "data": "s%d" % ref,
                                       "ref": ref})
                r = await h.recv_json(ws, 10)
                if r != {"op": "ok", "ref": ref, "topic": self.topic, "seq": ref}:
                    self.problems.append(r)
                else:
                    self.oks.append(ref)
                await asyncio.sleep(0.005)
            await h.send_json(ws, {"op": "ping", "ref": "end"})
            pong = await h.recv_json(ws)
            if pong != {"op": "pong", "ref": "end"}:
                self.problems.append(pong)
            await ws.close()
        except Exception as e:   # recorded, asserted by the test
            self.problems.append(repr(e))


class BadInput(h.WsqdTestCase):
    EXTRA_YAML = "limits:\n  max_message_size: 4KiB\n"

    def steady_check(self, st):
        self.assertEqual(st.problems, [])
        self.assertGreaterEqual(len(st.oks), 20)
        self.assertEqual(st.oks, list(range(1, len(st.oks) + 1)))
        status, _, body = self.wsqd.history(st.topic, "?limit=1000")
        self.assertEqual(status, 200, body)
        self.assertEqual([m["seq"] for m in body["messages"]], st.oks)

    def assertErr(self, frame, code, ref="absent"):
        self.assertEqual(frame.get("op"), "err", frame)
        self.assertEqual(frame.get("code"), code, frame)
        self.assertIsInstance(frame.get("message"), str, frame)
        self.assertTrue(frame["message"], frame)
        if ref == "absent":
            self.assertNotIn("ref", frame)
        else:
            self.assertEqual(frame.get("ref"), ref, frame)
            self.assertIs(type(frame.get("ref")), type(ref), frame)

    def test_err_frames_keep_connection(self):
        d = self.wsqd
        st = Steady(d, "bad.steady")

        cases = [
            # (frame, expected code, expected ref or "absent")
            ('{"op":"pub",', "bad_json", "absent"),
            ('not json', "bad_json", "absent"),
            ('{"op":"frob","ref":1}', "unknown_op", 1),
            ('{"op":"PUB","topic":"a","data":"x","ref":"u"}', "unknown_op", "u"),
            ('{"op":"pub","topic":5,"data":"x","ref":3}', "bad_type", 3),
            ('{"op":"pub","topic":"a","data":7,"ref":"t"}', "bad_type", "t"),
            ('{"op":"sub","topic":"a","window":"x","ref":8}', "bad_type", 8),
            ('{"op":"ack","topic":"a","seq":"1","ref":"s"}', "bad_type", "s"),
            ('{"op":"pub","topic":"a..b","data":"x","ref":4}', "bad_topic", 4),
            ('{"op":"sub","topic":"a b","ref":"5"}', "bad_topic", "5"),
            ('{"op":"pub","topic":"","data":"x","ref":0}', "bad_topic", 0),
            ('{"op":"pub","topic":"%s","data":"x","ref":-1}' % ("t" * 256), "bad_topic", -1),
            ('{"op":"pub","topic":"a","ref":6}', "bad_request", 6),
            ('{"op":"pub","topic":"a","data":"!!!","enc":"base64","ref":10}', "bad_request", 10),
            ('{"op":"sub","topic":"bad.w","window":100000000,"ref":"w"}', "limit_exceeded", "w"),
            ('{"op":"pub","topic":"a","data":"%s","ref":9}' % ("x" * (MAX + 1)), "too_large", 9),
            ('{"op":"unsub","topic":"never.subscribed","ref":"n"}', "not_subscribed", "n"),
        ]

        async def bad_client():
            ws = await h.connect_v1(d)
            replies = []
            for frame, _, _ in cases:
                await ws.send(frame)
                replies.append(await h.recv_json(ws))
            await ws.send(b"\x00binary")            # binary frames are refused, not fatal
            replies.append(await h.recv_json(ws))
            # exactly at the limit is fine; the connection still works after every error
            ok = await h.pub_confirmed(ws, "bad.edge", "y" * MAX, ref="edge")
            await h.send_json(ws, {"op": "ping", "ref": "alive"})
            pong = await h.recv_json(ws)
            await ws.close()
            return replies, ok, pong

        async def go():
            task = asyncio.ensure_future(st.run())
            await asyncio.sleep(0.05)
            res = await bad_client()
            st.stop.set()
            await task
            return res

        replies, ok, pong = h.run(go())
        for (frame, code, ref), r in zip(cases, replies):
            with self.subTest(frame=frame[:60]):
                self.assertErr(r, code, ref)
        self.assertErr(replies[-1], "bad_request")
        self.assertRegex(replies[0]["message"], r"line \d+ column \d+",
                         "bad_json message gives line and column")
        self.assertEqual(ok, {"op": "ok", "ref": "edge", "topic": "bad.edge", "seq": 1})
        self.assertEqual(pong, {"op": "pong", "ref": "alive"})
        self.steady_check(st)

    def test_op_with_wrong_type_is_bad_type(self):
        """"op" is a member; a number there is "a member has the wrong JSON type"."""
        d = self.wsqd

        async def go():
            ws = await h.connect_v1(d)
            await ws.send('{"op":5,"ref":2}')
            r = await h.recv_json(ws)
            await ws.close()
            return r

        self.assertErr(h.run(go()), "bad_type", 2)

    def test_close_codes_while_another_client_publishes(self):
        d = self.wsqd
        st = Steady(d, "bad.steady2")

        def invalid_utf8(path, proto):
            ws = h.SocketWS(d, path, subprotocol=proto, timeout=5)
            try:
                if proto:
                    # a JSON pub whose text is not UTF-8 (lone continuation byte, overlong)
                    ws.send_frame(0x1, b'{"op":"pub","topic":"bad.u","data":"\x80\xc0\xaf","ref":1}')
                else:
                    ws.send_frame(0x1, b"ok \xff\xfe not utf-8")
                return ws.recv_close()
            finally:
                ws.close()

        def invalid_utf8_fragmented():
            # the invalid sequence is split across two fragments of a raw-mode text message
            ws = h.SocketWS(d, "/topics/bad.utf8frag", subprotocol=None, timeout=5)
            try:
                ws.send_frame(0x1, b"abc\xe2\x82", fin=False)
                ws.send_frame(0x0, b"\x28def", fin=True)
                return ws.recv_close()
            finally:
                ws.close()

        async def oversize_raw(msg):
            ws = await h.connect_raw(d, "/topics/bad.big")
            await ws.send(msg)
            return await h.wait_closed(ws)

        async def go():
            task = asyncio.ensure_future(st.run())
            await asyncio.sleep(0.05)
            res = {}
            res["utf8_v1"] = await asyncio.to_thread(invalid_utf8, "/", "wsq.v1")
            res["utf8_raw"] = await asyncio.to_thread(invalid_utf8, "/topics/bad.utf8", None)
            res["utf8_frag"] = await asyncio.to_thread(invalid_utf8_fragmented)
            res["raw_big_text"] = await oversize_raw("z" * (MAX + 1))
            res["raw_big_bin"] = await oversize_raw(b"\x00" * (MAX + 1))
            res["raw_big_frag"] = await oversize_raw([b"\x01" * 3000, b"\x02" * 3000])
            # exactly MAX in raw mode is accepted
            ws = await h.connect_raw(d, "/topics/bad.edge.raw?from=earliest")
            await ws.send(b"\x03" * MAX)
            res["raw_edge"] = await h.recv(ws)
            await ws.close()
            # wsq.v1: the frame cap is 2 x MAX + 64 KiB
            ws = await h.connect_v1(d)
            await ws.send(json.dumps({"op": "pub", "topic": "bad.v1big", "ref": 1,
                                      "data": "q" * (V1_FRAME_MAX + 10)}))
            res["v1_big"] = await h.wait_closed(ws)
            st.stop.set()
            await task
            return res

        res = h.run(go())
        self.assertEqual(res["utf8_v1"], (1007, "text frame is not valid UTF-8", []))
        self.assertEqual(res["utf8_raw"], (1007, "text frame is not valid UTF-8", []))
        self.assertEqual(res["utf8_frag"], (1007, "text frame is not valid UTF-8", []))
        want = (1009, "message exceeds %d bytes" % MAX, [])
        self.assertEqual(res["raw_big_text"], want)
        self.assertEqual(res["raw_big_bin"], want)
        self.assertEqual(res["raw_big_frag"], want)
        self.assertEqual(res["raw_edge"], b"\x03" * MAX)
        code, reason, frames = res["v1_big"]
        self.assertEqual((code, frames), (1009, []), res["v1_big"])
        self.assertRegex(reason, r"^message exceeds (%d|%d) bytes$" % (MAX, V1_FRAME_MAX))
        # nothing of the refused input was stored
        for t in ("bad.u", "bad.utf8", "bad.utf8frag", "bad.big", "bad.v1big"):
            status, _, body = d.history(t)
            self.assertTrue(status == 404 or body["messages"] == [], (t, status, body))
        self.steady_check(st)
        # and the broker logged why it closed them (isolation: per-connection reasons)
        log = d.log()
        self.assertGreaterEqual(len(re.findall(r"code=1007", log)), 3, "1007 closes logged")


if __name__ == "__main__":
    h.main()
