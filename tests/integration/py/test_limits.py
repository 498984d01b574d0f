#!/usr/bin/python3
"""Every limit of OPERATIONS.md "Limits" against the real wsqd: its refusal with the exact code,
and wsq_limit_refusals_total{limit=...} moving by exactly the refusals made.

  max_connections          upgrade and HTTP: 503 limit_exceeded
  max_connections_per_ip   the same, counted per address (a second address is not affected)
  max_subscriptions        wsq.v1 err limit_exceeded
  max_window               wsq.v1 err limit_exceeded
  max_message_size         raw close 1009, wsq.v1 err too_large (and 1009 for a huge frame),
                           HTTP 413 too_large
  max_publish_rate         wsq.v1 err rate_limited, raw close 4029
"""

import asyncio
import json
import os
import socket
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402
import sechelp as s  # noqa: E402

import websockets  # noqa: E402
import websockets.exceptions  # noqa: E402


def refusals(d, limit):
    return s.limit_refusals(d.metrics(), limit)


def wait_tcp_connections(d, n, timeout=5.0):
    """Polls /metrics (which itself is one TCP connection) until n others are open."""
    return s.wait_metric(d, lambda m: m["wsq_tcp_connections"] == n + 1,
                         "wsq_tcp_connections == %d" % (n + 1), timeout)


def second_loopback_address():
    """127.0.0.2 is loopback on Linux without configuration; None if it cannot be bound."""
    try:
        with socket.socket() as so:
            so.bind(("127.0.0.2", 0))
        return "127.0.0.2"
    except OSError:
        return None


class Connections(h.WsqdTestCase):
    EXTRA_YAML = "limits:\n  max_connections: 3\n"

    def test_max_connections(self):
        d = self.wsqd
        self.assertEqual(refusals(d, "connections"), 0)

        async def go():
            a = await h.connect_v1(d)
            b = await h.connect_raw(d, "/topics/lim.a")
            c = await h.connect_v1(d)
            # the fourth: the upgrade gets 503 (python3-websockets sees the status) ...
            self.assertEqual(await s.refused_status(h.connect_v1(d)), 503)
            self.assertEqual(await s.refused_status(h.connect_raw(d, "/topics/lim.a")), 503)
            # ... with the JSON body, and so does a plain HTTP request
            u = s.upgrade(d, "/topics/lim.a")
            self.assertEqual((u.status, u.error_code()), (503, "limit_exceeded"))
            self.assertIn("max_connections", u.json()["error"]["message"])
            st, _, body = d.http_json("GET", "/healthz")
            self.assertEqual((st, body["error"]["code"]), (503, "limit_exceeded"), body)
            # the connections already open are not affected
            await s.still_open(a)
            await s.still_open(c)
            await h.pub_confirmed(a, "lim.a", "still works", 1)
            self.assertEqual(await h.recv(b), "still works")
            await c.close()
            # a slot is free again once one closes
            deadline = time.monotonic() + 5 * h.SLOW
            while True:
                try:
                    e = await h.connect_v1(d)
                    break
                except websockets.exceptions.InvalidStatusCode as ex:
                    self.assertEqual(ex.status_code, 503)
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            await s.still_open(e)
            for ws in (a, b, e):
                await ws.close()
        h.run(go())
        wait_tcp_connections(d, 0)
        m = d.metrics()
        self.assertGreaterEqual(s.limit_refusals(m, "connections"), 4)
        self.assertEqual(s.limit_refusals(m, "connections_per_ip"), 0)
        self.assertEqual(m["wsq_connections"], 0)


class ConnectionsPerIp(h.WsqdTestCase):
    EXTRA_YAML = "limits:\n  max_connections: 100\n  max_connections_per_ip: 2\n"

    def test_max_connections_per_ip(self):
        d = self.wsqd
        other = second_loopback_address()

        async def go():
            a = await h.connect_v1(d)
            b = await h.connect_v1(d)
            self.assertEqual(await s.refused_status(h.connect_v1(d)), 503)
            u = s.upgrade(d, "/topics/lim.a")
            self.assertEqual((u.status, u.error_code()), (503, "limit_exceeded"))
            self.assertIn("max_connections_per_ip", u.json()["error"]["message"])
            st, _, body = d.http_json("GET", "/healthz")
            self.assertEqual((st, body["error"]["code"]), (503, "limit_exceeded"), body)
            if other:
                # another address has its own count: two more from 127.0.0.2 are fine
                c = await h.connect_v1(d, local_addr=(other, 0))
                e = await h.connect_raw(d, "/topics/lim.a", local_addr=(other, 0))
                self.assertEqual(await s.refused_status(
                    h.connect_v1(d, local_addr=(other, 0))), 503)
                await h.pub_confirmed(c, "lim.a", "from the other address", 1)
                self.assertEqual(await h.recv(e), "from the other address")
                await c.close()
                await e.close()
            await s.still_open(a)
            await a.close()
            await b.close()
        h.run(go())
        wait_tcp_connections(d, 0)
        m = d.metrics()
        self.assertEqual(s.limit_refusals(m, "connections_per_ip"), 4 if other else 3)
        self.assertEqual(s.limit_refusals(m, "connections"), 0)
        if not other:
            self.skipTest("127.0.0.2 cannot be bound here: the second-address half was skipped")


class Subscriptions(h.WsqdTestCase):
    EXTRA_YAML = ("limits:\n  max_subscriptions: 2\n  max_window: 50\n  default_window: 20\n")

    def test_max_subscriptions(self):
        d = self.wsqd

        async def go():
            ws = await h.connect_v1(d)
            for i, t in enumerate(("lim.s1", "lim.s2")):
                await h.send_json(ws, {"op": "sub", "topic": t, "ref": i})
                self.assertEqual((await h.expect_op(ws, "subscribed"))["ref"], i)
            await h.send_json(ws, {"op": "sub", "topic": "lim.s3", "ref": "third"})
            e = await s.expect_err(ws, "limit_exceeded", "third")
            self.assertIn("2", e["message"])
            # an unsub frees a slot
            await h.send_json(ws, {"op": "unsub", "topic": "lim.s1", "ref": "u"})
            await h.expect_op(ws, "ok")
            await h.send_json(ws, {"op": "sub", "topic": "lim.s3", "ref": "again"})
            self.assertEqual((await h.expect_op(ws, "subscribed"))["ref"], "again")
            # another connection has its own count
            other = await h.connect_v1(d)
            await h.send_json(other, {"op": "sub", "topic": "lim.s1", "ref": 1})
            await h.expect_op(other, "subscribed")
            await other.close()
            await ws.close()
        h.run(go())
        self.assertEqual(refusals(d, "subscriptions"), 1)

    def test_max_window(self):
        d = self.wsqd

        async def go():
            ws = await h.connect_v1(d)
            await h.send_json(ws, {"op": "sub", "topic": "lim.w", "window": 51, "ref": 1})
            e = await s.expect_err(ws, "limit_exceeded", 1)
            self.assertIn("max_window", e["message"])
            await h.send_json(ws, {"op": "sub", "topic": "lim.w", "window": 50, "ref": 2})
            sub = await h.expect_op(ws, "subscribed")
            self.assertEqual((sub["ref"], sub["window"]), (2, 50))
            await h.send_json(ws, {"op": "sub", "topic": "lim.w2", "ref": 3})
            self.assertEqual((await h.expect_op(ws, "subscribed"))["window"], 20)
            await ws.close()
        h.run(go())
        self.assertEqual(refusals(d, "window"), 1)


class MessageSize(h.WsqdTestCase):
    EXTRA_YAML = "limits:\n  max_message_size: 1KiB\n"

    def test_raw_frame_above_the_limit_closes_1009(self):
        d = self.wsqd
        before = refusals(d, "message_size")

        async def go():
            ws = await h.connect_raw(d, "/topics/lim.m?from=earliest")
            await ws.send("a" * 1024)               # exactly the limit: fine
            self.assertEqual(await h.recv(ws), "a" * 1024)
            await ws.send(b"b" * 1025)
            await s.expect_close(ws, 1009, "message exceeds 1024 bytes")
        h.run(go())
        self.assertEqual(refusals(d, "message_size") - before, 1)
        d.wait_log(r"disconnect sid=\d+ peer=\S+ identity=anonymous code=1009")

    def test_wsq_v1_payload_above_the_limit_is_too_large(self):
        d = self.wsqd
        before = refusals(d, "message_size")

        async def go():
            ws = await h.connect_v1(d)
            await h.pub_confirmed(ws, "lim.m", "x" * 1024, 1)
            await h.pub_confirmed(ws, "lim.m", bytes(1024), 2, binary=True)
            await h.send_json(ws, {"op": "pub", "topic": "lim.m", "data": "x" * 1025, "ref": 3})
            await s.expect_err(ws, "too_large", 3)
            await h.send_json(ws, {"op": "pub", "topic": "lim.m", "enc": "base64", "ref": 4,
                                   "data": __import__("base64").b64encode(bytes(1025)).decode()})
            await s.expect_err(ws, "too_large", 4)
            await s.still_open(ws)
            await ws.close()
        h.run(go())
        self.assertEqual(refusals(d, "message_size") - before, 2)

    def test_wsq_v1_frame_far_above_the_limit_closes_1009(self):
        d = self.wsqd
        before = refusals(d, "message_size")
        cap = 2 * 1024 + 65536

        async def go():
            ws = await h.connect_v1(d)
            await ws.send(json.dumps({"op": "pub", "topic": "lim.m", "data": "y" * cap}))
            await s.expect_close(ws, 1009, "message exceeds %d bytes" % cap)
        h.run(go())
        self.assertEqual(refusals(d, "message_size") - before, 1)

    def test_http_body_above_the_limit_is_413(self):
        d = self.wsqd
        st, _, body = d.post("lim.m", "z" * 1024)
        self.assertEqual(st, 200, body)
        before = refusals(d, "message_size")
        st, _, body = d.post("lim.m", "z" * 1025)
        self.assertEqual((st, body["error"]["code"]), (413, "too_large"), body)
        st, _, body = d.post("lim.m", os.urandom(4096))
        self.assertEqual((st, body["error"]["code"]), (413, "too_large"), body)
        st, _, body = d.history("lim.m")
        self.assertEqual(len(body["messages"]), 1)
        # OPERATIONS.md: "Every limit in limits refuses clearly and is counted in
        # wsq_limit_refusals_total{limit=...}"; the 413 is max_message_size's HTTP refusal
        self.assertEqual(refusals(d, "message_size") - before, 2,
                         "HTTP 413 refusals are not counted in "
                         "wsq_limit_refusals_total{limit=\"message_size\"}")


class PublishRate(h.WsqdTestCase):
    EXTRA_YAML = "limits:\n  max_publish_rate: 5\n"

    def test_wsq_v1_rate_limited(self):
        d = self.wsqd

        async def go():
            ws = await h.connect_v1(d)
            t0 = time.monotonic()
            for i in range(20):
                await h.send_json(ws, {"op": "pub", "topic": "lim.r", "data": str(i), "ref": i})
            oks, limited = [], []
            for _ in range(20):
                f = await h.recv_json(ws)
                (oks if f["op"] == "ok" else limited).append(f)
            elapsed = time.monotonic() - t0
            for f in limited:
                self.assertEqual(f["op"], "err", f)
                self.assertEqual(f["code"], "rate_limited", f)
            # a full second's burst (5), plus what refilled at 5/s meanwhile; the rest refused
            self.assertGreaterEqual(len(oks), 5)
            self.assertLessEqual(len(oks), 5 + int(elapsed * 5) + 1, "elapsed %.3fs" % elapsed)
            self.assertGreaterEqual(len(limited), 1)
            # the refused publishes were dropped; after a second the connection publishes again
            await asyncio.sleep(1.1)
            await h.pub_confirmed(ws, "lim.r", "later", "later")
            await ws.close()
            return len(oks), len(limited)
        n_ok, n_limited = h.run(go())
        st, _, body = d.history("lim.r")
        self.assertEqual(len(body["messages"]), n_ok + 1)
        self.assertEqual(refusals(d, "publish_rate"), n_limited)

    def test_raw_mode_rate_limit_closes_4029(self):
        d = self.wsqd

        async def go():
            ws = await h.connect_raw(d, "/topics/lim.raw")
            t0 = time.monotonic()
            for i in range(20):
                try:
                    await ws.send("m%d" % i)
                except websockets.exceptions.ConnectionClosed:
                    break
            await s.expect_close(ws, 4029, "publish rate limit exceeded")
            return time.monotonic() - t0
        elapsed = h.run(go())
        self.assertEqual(refusals(d, "publish_rate"), 1)
        # raw mode has no confirms: the burst's publishes land shortly after the close
        deadline = time.monotonic() + 5 * h.SLOW
        while True:
            st, _, body = d.history("lim.raw")
            n = len(body["messages"]) if st == 200 else 0
            if n >= 5 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        time.sleep(0.2)
        st, _, body = d.history("lim.raw")
        self.assertGreaterEqual(len(body["messages"]), 5)
        self.assertLessEqual(len(body["messages"]), 5 + int(elapsed * 5) + 1, body)
        self.assertEqual([m["data"] for m in body["messages"]][:5], ["m%d" % i for i in range(5)])

    def test_http_publishes_are_not_rate_limited_per_connection(self):
        # documented as per connection: each HTTP request is its own connection here
        d = self.wsqd
        for i in range(8):
            st, _, body = d.post("lim.h", "h%d" % i)
            self.assertEqual(st, 200, body)
        self.assertEqual(refusals(d, "publish_rate"), 0)


class AllLimitLabels(h.WsqdTestCase):
    def test_every_limit_has_a_series_from_the_start(self):
        m = self.wsqd.metrics()
        for lim in ("connections", "connections_per_ip", "subscriptions", "window",
                    "message_size", "publish_rate"):
            self.assertEqual(s.limit_refusals(m, lim), 0, lim)


if __name__ == "__main__":
    h.main()
