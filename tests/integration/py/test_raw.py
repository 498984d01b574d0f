#!/usr/bin/python3
"""Raw mode (no subprotocol) with python3-websockets, against the real wsqd.

PROTOCOL.md "Raw mode": every frame is published as one message of its type; every message is
delivered as one frame of its original type, byte-exact, in seq order; from=earliest|latest|
<seq>|time:<ms>; fragmented messages are reassembled; ?consumer= resumes after the last
written message; upgrade refusals are real HTTP statuses with a JSON body.
"""

import asyncio
import base64
import http.client
import json
import os
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402

import websockets  # noqa: E402
import websockets.exceptions  # noqa: E402


async def recv_n(ws, n, timeout=5.0):
    return [await h.recv(ws, timeout) for _ in range(n)]


async def wait_count(d, topic, n, timeout=5.0):
    """Raw mode has no confirms: poll HTTP history until the topic holds n messages."""
    deadline = time.monotonic() + timeout * h.SLOW
    while True:
        st, _, body = d.history(topic, "?limit=1000")
        have = len(body["messages"]) if st == 200 else 0
        if have >= n:
            assert have == n, (have, n, body)
            return body
        if time.monotonic() > deadline:
            raise AssertionError("topic %s holds %d messages, expected %d" % (topic, have, n))
        await asyncio.sleep(0.02)


def seqs_of(d, topic):
    st, _, body = d.history(topic, "?from=1&limit=1000")
    assert st == 200, (st, body)
    return [m["seq"] for m in body["messages"]], body


class RawMode(h.WsqdTestCase):

    def test_text_and_binary_byte_exact_in_order(self):
        d = self.wsqd
        all_bytes = bytes(range(256))
        big_bin = os.urandom(200 * 1024)          # > 64 KiB: arrives fragmented, reassembled
        big_text = ("0123456789abcdef\u00e9\u2713" * 5000)
        payloads = [
            "hello",
            all_bytes,
            "h\u00e9llo \u2713 \U0001d11e \"quoted\" \\ \n\t",
            bytes(reversed(all_bytes)) * 3,
            b"\x00",
            "{\"op\":\"pub\"}",                    # raw mode does not interpret JSON
            big_bin,
            big_text,
            b"\xff\xfe\x00\x80text?",
        ]

        async def go():
            sub = await h.connect_raw(d, "/topics/raw.exact?from=earliest")
            pub = await h.connect_raw(d, "/topics/raw.exact?from=earliest")
            for p in payloads:
                await pub.send(p)
            got = await recv_n(sub, len(payloads), 10)
            # the publisher holds the subscribe right too: it receives its own publishes
            echoed = await recv_n(pub, len(payloads), 10)
            await h.expect_silence(sub, 0.2)
            await sub.close()
            await pub.close()
            return got, echoed

        got, echoed = h.run(go())
        for i, (want, g, e) in enumerate(zip(payloads, got, echoed)):
            self.assertIs(type(g), type(want), "message %d: frame type" % i)
            self.assertEqual(g, want, "message %d differs (len %d vs %d)" % (i, len(g), len(want)))
            self.assertIs(type(e), type(want), "echo %d: frame type" % i)
            self.assertEqual(e, want, "echo %d differs" % i)
        seqs, body = seqs_of(d, "raw.exact")
        self.assertEqual(seqs, list(range(1, len(payloads) + 1)))
        # the stored copy is byte-exact too (history: text as string, binary as base64)
        self.assertEqual(body["messages"][0]["data"], "hello")
        self.assertNotIn("enc", body["messages"][0])
        self.assertEqual(body["messages"][1]["enc"], "base64")
        self.assertEqual(base64.b64decode(body["messages"][1]["data"]), all_bytes)

    def test_empty_messages(self):
        d = self.wsqd

        async def go():
            sub = await h.connect_raw(d, "/topics/raw.empty?from=earliest")
            pub = await h.connect_raw(d, "/topics/raw.empty")
            await pub.send("")
            await pub.send(b"")
            await pub.send("x")
            got = await recv_n(sub, 3)
            await sub.close()
            await pub.close()
            return got

        self.assertEqual(h.run(go()), ["", b"", "x"])

    def test_from_positions(self):
        d = self.wsqd
        topic = "raw.from"

        async def publish(msgs):
            before = len(seqs_of(d, topic)[0]) if published else 0
            pub = await h.connect_raw(d, "/topics/" + topic + "?from=latest")
            for m in msgs:
                await pub.send(m)
            await wait_count(d, topic, before + len(msgs))
            published.append(1)
            await pub.close()

        published = []

        async def phase1():
            await publish(["m1", "m2", "m3"])
            await asyncio.sleep(0.05)
            await publish(["m4", "m5"])

        h.run(phase1())
        seqs, body = seqs_of(d, topic)
        self.assertEqual(seqs, [1, 2, 3, 4, 5])
        ts = [m["ts"] for m in body["messages"]]
        self.assertLess(ts[2], ts[3], "50 ms sleep between m3 and m4 must show in ts: %r" % ts)

        async def phase2():
            res = {}
            for q, n in (("from=earliest", 5), ("from=1", 5), ("from=3", 3), ("from=5", 1),
                         ("from=time:%d" % ts[3], 2), ("from=time:0", 5),
                         ("from=time:%d" % (ts[2] + 1), 2)):
                ws = await h.connect_raw(d, "/topics/%s?%s" % (topic, q))
                res[q] = await recv_n(ws, n)
                try:
                    await h.expect_silence(ws, 0.15)
                except AssertionError as e:
                    res[q].append(("EXTRA", str(e)))
                await ws.close()
            # latest (explicit and default): nothing old, then only new messages
            latest = await h.connect_raw(d, "/topics/%s?from=latest" % topic)
            default = await h.connect_raw(d, "/topics/%s" % topic)
            beyond = await h.connect_raw(d, "/topics/%s?from=7" % topic)
            s1 = await h.expect_silence(latest, 0.2)
            s2 = await h.expect_silence(default, 0.05)
            await publish(["m6", "m7"])
            res["latest"] = [s1] + await recv_n(latest, 2)
            res["default"] = [s2] + await recv_n(default, 2)
            res["beyond"] = await recv_n(beyond, 1)
            for ws in (latest, default, beyond):
                await ws.close()
            return res

        res = h.run(phase2())
        self.assertEqual(res["from=earliest"], ["m1", "m2", "m3", "m4", "m5"])
        self.assertEqual(res["from=1"], ["m1", "m2", "m3", "m4", "m5"])
        self.assertEqual(res["from=3"], ["m3", "m4", "m5"])
        self.assertEqual(res["from=5"], ["m5"])
        self.assertEqual(res["from=time:%d" % ts[3]], ["m4", "m5"])
        self.assertEqual(res["from=time:0"], ["m1", "m2", "m3", "m4", "m5"])
        self.assertEqual(res["from=time:%d" % (ts[2] + 1)], ["m4", "m5"])
        self.assertEqual(res["latest"], [None, "m6", "m7"])
        self.assertEqual(res["default"], [None, "m6", "m7"])
        self.assertEqual(res["beyond"], ["m7"])

    def test_from_latest_starts_at_the_upgrade(self):
        """from=latest (the default) means "messages published from now on": a message
        published after the client's handshake completed must reach it, whether it is published
        on the same connection right away or by another client (HTTP POST) right away."""
        d = self.wsqd

        async def go():
            missed = []
            for i in range(20):
                topic = "raw.latest.%d" % i
                if i % 4 >= 2:                            # half on existing topics
                    st, _, body = d.post(topic, "old")
                    assert st == 200, body
                q = "" if i % 2 else "?from=latest"
                ws = await h.connect_raw(d, "/topics/%s%s" % (topic, q))
                await ws.send("own")                      # published on this connection
                st, _, body = d.post(topic, "other")      # published by another client
                assert st == 200, body
                got = []
                try:
                    got.append(await h.recv(ws, 1.0))
                    got.append(await h.recv(ws, 1.0))
                except asyncio.TimeoutError:
                    pass
                if sorted(got) != ["other", "own"]:
                    missed.append((topic, q or "(default)", got))
                await ws.close()
            return missed

        missed = h.run(go())
        self.assertEqual(missed, [], "from=latest connections missed messages published "
                         "after their upgrade completed")

    def test_from_time_in_the_future(self):
        """from=time:<ms> starts at "the first message with ts at or after it": a message
        published now (ts < the time) must not be delivered."""
        d = self.wsqd
        topic = "raw.future"
        self.assertEqual(d.post(topic, "before")[0], 200)

        async def go():
            t = int(time.time() * 1000) + 3600000
            ws = await h.connect_raw(d, "/topics/%s?from=time:%d" % (topic, t))
            s1 = await h.expect_silence(ws, 0.2)
            st, _, body = d.post(topic, "now")
            assert st == 200, body
            try:
                s2 = await h.expect_silence(ws, 0.3)
            except AssertionError as e:
                s2 = str(e)
            await ws.close()
            return s1, s2

        self.assertEqual(h.run(go()), (None, None))

    def test_fragmented_sends_are_reassembled(self):
        d = self.wsqd
        text_frags = ["frag-one|", "\u00e9\u2713|", "", "frag-three"]
        bin_frags = [b"\x00\x01\x02", bytes(range(256)) * 300, b"", b"\xffEND"]

        async def go():
            sub = await h.connect_raw(d, "/topics/raw.frag?from=earliest")
            pub = await h.connect_raw(d, "/topics/raw.frag")
            await pub.send(text_frags)          # websockets: an iterable = one fragmented message
            await pub.send(iter(bin_frags))
            await pub.send("after")
            got = await recv_n(sub, 3)
            await h.expect_silence(sub, 0.2)
            await sub.close()
            await pub.close()
            return got

        got = h.run(go())
        self.assertEqual(got[0], "".join(text_frags))
        self.assertIsInstance(got[1], bytes)
        self.assertEqual(got[1], b"".join(bin_frags))
        self.assertEqual(got[2], "after")
        seqs, body = seqs_of(d, "raw.frag")
        self.assertEqual(seqs, [1, 2, 3], "each fragmented message must be ONE message")

    def test_durable_consumer_resumes_after_last_written(self):
        d = self.wsqd
        topic = "raw.durable"

        async def publish(msgs):
            for m in msgs:
                st, _, body = d.post(topic, m)
                assert st == 200, (st, body)

        async def phase1():
            await publish(["a1", "a2", "a3"])
            c = await h.connect_raw(d, "/topics/%s?consumer=c1&from=earliest" % topic)
            got = await recv_n(c, 3)
            await h.expect_silence(c, 0.2)
            await c.close()
            await publish(["a4", "a5"])
            # reconnect: an existing consumer ignores from and resumes after a3
            c = await h.connect_raw(d, "/topics/%s?consumer=c1&from=earliest" % topic)
            got2 = await recv_n(c, 2)
            s = await h.expect_silence(c, 0.2)
            await c.close()
            # a second, new consumer with from=3 starts at 3 (from applies to a new consumer)
            c2 = await h.connect_raw(d, "/topics/%s?consumer=c2&from=3" % topic)
            got3 = await recv_n(c2, 3)
            await c2.close()
            return got, got2, s, got3

        got, got2, s, got3 = h.run(phase1())
        self.assertEqual(got, ["a1", "a2", "a3"])
        self.assertEqual(got2, ["a4", "a5"])
        self.assertIsNone(s)
        self.assertEqual(got3, ["a3", "a4", "a5"])

        # the position survives a restart
        d.restart()
        st, _, body = d.post(topic, "a6")
        self.assertEqual((st, body), (200, {"seq": 6, "topic": topic}))

        async def phase2():
            c = await h.connect_raw(d, "/topics/%s?consumer=c1" % topic)
            got = await recv_n(c, 1)
            s = await h.expect_silence(c, 0.2)
            await c.close()
            return got, s

        got, s = h.run(phase2())
        self.assertEqual(got, ["a6"])
        self.assertIsNone(s)

    def _refusal(self, path, status, code):
        """The refusal seen by websockets (InvalidStatusCode) and, via http.client, the body."""
        d = self.wsqd

        async def ws_try():
            try:
                ws = await websockets.connect(d.ws_url(path), open_timeout=5 * h.SLOW)
            except websockets.exceptions.InvalidStatusCode as e:
                return e.status_code
            await ws.close()
            return "upgrade accepted"

        self.assertEqual(h.run(ws_try()), status, "websockets upgrade to %s" % path)
        conn = http.client.HTTPConnection(d.host, d.port, timeout=5 * h.SLOW)
        conn.request("GET", path, headers={
            "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"})
        r = conn.getresponse()
        body = r.read()
        conn.close()
        self.assertEqual(r.status, status, "%s: %r" % (path, body))
        self.assertIn("close", (r.getheader("Connection") or "").lower(), path)
        obj = json.loads(body)
        self.assertEqual(set(obj), {"error"}, obj)
        self.assertEqual(obj["error"]["code"], code, obj)
        self.assertIsInstance(obj["error"]["message"], str)
        self.assertTrue(obj["error"]["message"], obj)

    def test_upgrade_refusals_are_http_statuses(self):
        self._refusal("/nope", 404, "not_found")
        self._refusal("/", 404, "not_found")
        self._refusal("/topic/x", 404, "not_found")
        self._refusal("/topics/bad..topic", 400, "bad_topic")
        self._refusal("/topics/bad%20topic", 400, "bad_topic")
        self._refusal("/topics/" + "a" * 256, 400, "bad_topic")
        self._refusal("/topics/ok.topic?bogus=1", 400, "bad_request")
        self._refusal("/topics/ok.topic?from=sideways", 400, "bad_request")
        self._refusal("/topics/ok.topic?from=0", 400, "bad_request")
        self._refusal("/topics/ok.topic?consumer=bad%20name", 400, "bad_request")
        # the broker is unharmed: a valid raw connection still works
        d = self.wsqd

        async def ok():
            ws = await h.connect_raw(d, "/topics/ok.topic?from=earliest")
            await ws.send("fine")
            got = await h.recv(ws)
            await ws.close()
            return got

        self.assertEqual(h.run(ok()), "fine")


if __name__ == "__main__":
    h.main()
