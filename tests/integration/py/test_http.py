#!/usr/bin/python3
"""HTTP API on the WebSocket port, with the standard library (http.client), against the real
wsqd; published messages are received with python3-websockets.

PROTOCOL.md "HTTP": POST /topics/<t> -> 200 {"seq":N,"topic":T} after commit (text/* and
application/json are text messages, anything else binary); GET /topics/<t>/messages?from=&limit=
history; /healthz; /metrics (Prometheus text); errors are a status plus
{"error":{"code":...,"message":...}}.
"""

import base64
import os
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402

LIMIT = 1024   # limits.max_message_size below (max_http_body defaults to it)


class Http(h.WsqdTestCase):
    EXTRA_YAML = "limits:\n  max_message_size: 1KiB\n"

    def assertError(self, resp, status, code, what=""):
        st, hdrs, body = resp
        self.assertEqual(st, status, "%s: %r" % (what, body))
        self.assertIn("application/json", hdrs.get("content-type", ""), what)
        self.assertIsInstance(body, dict, what)
        self.assertEqual(set(body), {"error"}, "%s: %r" % (what, body))
        self.assertEqual(set(body["error"]), {"code", "message"}, "%s: %r" % (what, body))
        self.assertEqual(body["error"]["code"], code, "%s: %r" % (what, body))
        self.assertIsInstance(body["error"]["message"], str)
        self.assertTrue(body["error"]["message"], what)

    def test_post_then_delivered_byte_exact(self):
        d = self.wsqd
        T = "http.post"
        all_bytes = bytes(range(256))
        text = "h\u00e9llo \u2713 \U0001d11e \"q\" \\ \n"

        async def go():
            raw = await h.connect_raw(d, "/topics/%s?from=earliest" % T)
            v1 = await h.connect_v1(d)
            await h.send_json(v1, {"op": "sub", "topic": T, "from": "earliest", "ref": 1})
            await h.expect_op(v1, "subscribed")
            posts = [
                d.post(T, text),                                           # text/plain
                d.post(T, all_bytes),                                      # octet-stream
                d.post(T, b'{"a":[1,2]}', "application/json"),             # text
                d.post(T, b"\x00\xff\x80", "image/png"),                   # binary
                d.post(T, "x" * LIMIT),                                    # exactly the limit
                d.http_json("POST", "/topics/" + T, b"no-type\xff"),       # no type: binary
            ]
            got_raw = [await h.recv(raw) for _ in range(len(posts))]
            got_v1 = [await h.expect_op(v1, "msg") for _ in range(len(posts))]
            await raw.close()
            await v1.close()
            return posts, got_raw, got_v1

        posts, got_raw, got_v1 = h.run(go())
        for i, (st, hdrs, body) in enumerate(posts, 1):
            self.assertEqual(st, 200, body)
            self.assertEqual(body, {"seq": i, "topic": T})
        want = [text, all_bytes, '{"a":[1,2]}', b"\x00\xff\x80", "x" * LIMIT, b"no-type\xff"]
        for i, (w, g) in enumerate(zip(want, got_raw)):
            self.assertIs(type(g), type(w), "raw frame %d type" % i)
            self.assertEqual(g, w, "raw frame %d" % i)
        for i, (w, m) in enumerate(zip(want, got_v1)):
            self.assertEqual((m["topic"], m["seq"]), (T, i + 1), m)
            if isinstance(w, bytes):
                self.assertEqual(m.get("enc"), "base64", m)
                self.assertEqual(base64.b64decode(m["data"], validate=True), w)
            else:
                self.assertNotIn("enc", m)
                self.assertEqual(m["data"], w)
        # the JSON answer is labelled as JSON, whatever the request body's type was
        ctypes = [(i, hdrs.get("content-type")) for i, (_, hdrs, _) in enumerate(posts, 1)]
        self.assertEqual([c for c in ctypes if "application/json" not in (c[1] or "")], [],
                         "POST answers whose Content-Type is not application/json")

    def test_post_errors(self):
        d = self.wsqd
        self.assertError(d.post("bad..topic", "x"), 400, "bad_topic", "bad topic")
        self.assertError(d.post("bad%20topic", "x"), 400, "bad_topic", "space in topic")
        self.assertError(d.post("a" * 256, "x"), 400, "bad_topic", "256-byte topic")
        self.assertError(d.post("http.big", "x" * (LIMIT + 1)), 413, "too_large", "text+1")
        self.assertError(d.post("http.big", b"\x01" * (LIMIT + 1)), 413, "too_large", "bin+1")
        self.assertError(d.post("http.big", b"\x01" * (8 * LIMIT)), 413, "too_large", "8x")
        self.assertError(d.post("http.utf8", b"ok\xc3\x28", "text/plain"), 400, "bad_utf8",
                         "invalid UTF-8 text")
        self.assertError(d.post("http.utf8", b"\xed\xa0\x80", "application/json"), 400,
                         "bad_utf8", "surrogate in json")
        self.assertError(d.http_json("PUT", "/topics/http.x", b"x"), 405, "bad_request", "PUT")
        self.assertError(d.http_json("DELETE", "/topics/http.x"), 405, "bad_request", "DELETE")
        self.assertError(d.http_json("GET", "/topics/http.x"), 405, "bad_request", "GET topic")
        self.assertError(d.http_json("GET", "/nope"), 404, "not_found", "unknown path")
        self.assertError(d.http_json("GET", "/"), 404, "not_found", "root")
        self.assertError(d.http_json("GET", "/topic/x"), 404, "not_found", "/topic/")
        self.assertError(d.http_json("GET", "/healthzz"), 404, "not_found", "/healthzz")
        # none of the refused posts was stored (the topics that only saw errors do not exist)
        self.assertError(d.history("http.big"), 404, "not_found", "history of refused posts")
        self.assertError(d.history("http.utf8"), 404, "not_found", "history of refused posts")
        # still serving
        st, _, body = d.post("http.after", "fine")
        self.assertEqual((st, body), (200, {"seq": 1, "topic": "http.after"}))

    def test_admin_post_body_is_not_published(self):
        """Regression: an admin POST that carries a body used to publish it into ?topic=."""
        d = self.wsqd
        st, _, body = d.http_json("POST", "/admin/purge?topic=adminbody.t&all=true", b"abc",
                                  {"Content-Type": "application/octet-stream"})
        self.assertEqual((st, body["error"]["code"]), (404, "not_found"), body)
        st, _, body = d.http_json("GET", "/topics/adminbody.t/messages")
        self.assertEqual(st, 404, body)

    def test_wrong_method_on_fixed_endpoints(self):
        """/healthz and /metrics exist (GET): another method is "wrong method" (405), not an
        unknown path (404)."""
        d = self.wsqd
        self.assertError(d.http_json("POST", "/healthz", b""), 405, "bad_request", "POST health")
        self.assertError(d.http_json("DELETE", "/metrics"), 405, "bad_request", "DELETE metrics")

    def test_history_paging_and_limits(self):
        d = self.wsqd
        T = "http.hist"

        async def publish():
            ws = await h.connect_v1(d)
            for i in range(1, 131):     # pipelined, then all confirms
                p = {"op": "pub", "topic": T, "ref": i}
                if i % 10 == 0:
                    p.update(data=base64.b64encode(bytes([i]) * 3).decode(), enc="base64")
                else:
                    p["data"] = "h%d" % i
                await h.send_json(ws, p)
            oks = [await h.recv_json(ws) for _ in range(130)]
            await ws.close()
            return oks

        oks = h.run(publish())
        self.assertEqual([(o["op"], o["ref"], o["seq"]) for o in oks],
                         [("ok", i, i) for i in range(1, 131)])

        def page(q):
            st, hdrs, body = d.history(T, q)
            self.assertEqual(st, 200, (q, body))
            self.assertIn("application/json", hdrs.get("content-type", ""))
            self.assertEqual(body["topic"], T)
            self.assertRegex(body["epoch"], r"^[0-9a-f]{16}$")
            self.assertEqual((body["first_seq"], body["next_seq"]), (1, 131), q)
            self.assertNotIn("gap", body, q)
            return body

        # default from = first retained seq, default limit = 100
        body = page("")
        self.assertEqual([m["seq"] for m in body["messages"]], list(range(1, 101)))
        epoch = body["epoch"]
        # paging with from/limit over the whole topic
        seen, frm = [], 1
        while True:
            body = page("?from=%d&limit=25" % frm)
            self.assertEqual(body["epoch"], epoch)
            if not body["messages"]:
                break
            self.assertLessEqual(len(body["messages"]), 25)
            seen.extend(body["messages"])
            frm = body["messages"][-1]["seq"] + 1
        self.assertEqual([m["seq"] for m in seen], list(range(1, 131)))
        prev_ts = 0
        for m in seen:
            i = m["seq"]
            self.assertEqual((m["op"], m["topic"]), ("msg", T), m)
            self.assertIsInstance(m["ts"], int)
            self.assertGreaterEqual(m["ts"], prev_ts)
            prev_ts = m["ts"]
            if i % 10 == 0:
                self.assertEqual(m.get("enc"), "base64", m)
                self.assertEqual(base64.b64decode(m["data"]), bytes([i]) * 3)
            else:
                self.assertNotIn("enc", m)
                self.assertEqual(m["data"], "h%d" % i)
        self.assertEqual([m["seq"] for m in page("?from=130&limit=1000")["messages"]], [130])
        self.assertEqual([m["seq"] for m in page("?limit=1")["messages"]], [1])
        self.assertEqual(len(page("?limit=1000")["messages"]), 130)
        self.assertEqual(page("?from=131")["messages"], [])
        self.assertEqual(page("?from=5000")["messages"], [])
        # bad parameters and unknown topics
        for q in ("?limit=0", "?limit=1001", "?limit=abc", "?limit=-1", "?from=abc",
                  "?from=-3", "?limit="):
            self.assertError(d.history(T, q), 400, "bad_request", q)
        self.assertError(d.history("http.never.seen"), 404, "not_found", "unknown topic")
        self.assertError(d.history("bad..topic"), 400, "bad_topic", "bad topic")

    def test_healthz(self):
        d = self.wsqd
        st, hdrs, body = d.http_json("GET", "/healthz")
        self.assertEqual(st, 200)
        self.assertIn("application/json", hdrs.get("content-type", ""))
        self.assertEqual(set(body), {"status", "storage", "uptime_ms"}, body)
        self.assertEqual((body["status"], body["storage"]), ("ok", "writable"))
        self.assertIsInstance(body["uptime_ms"], int)
        time.sleep(0.05)
        self.assertGreaterEqual(d.http_json("GET", "/healthz")[2]["uptime_ms"],
                                body["uptime_ms"] + 50)

    def test_metrics_move_with_traffic(self):
        d = self.wsqd
        T = "http.metrics"
        st, hdrs, data = d.http("GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(hdrs.get("content-type", "").startswith("text/plain"), hdrs)
        text = data.decode()
        for name, typ in (("wsq_published_total", "counter"), ("wsq_delivered_total", "counter"),
                          ("wsq_connections", "gauge")):
            self.assertIn("# TYPE %s %s\n" % (name, typ), text)
        m0 = h.parse_prometheus(text)
        self.assertEqual(m0["wsq_connections"], 0)
        self.assertEqual(m0["wsq_published_total"], 0)
        self.assertEqual(m0["wsq_delivered_total"], 0)

        def wait_metric(name, value):
            deadline = time.monotonic() + 3 * h.SLOW
            while True:
                m = d.metrics()
                if m.get(name) == value or time.monotonic() > deadline:
                    return m
                time.sleep(0.02)

        async def go():
            a = await h.connect_raw(d, "/topics/%s?from=earliest" % T)
            b = await h.connect_v1(d)
            m_conn = wait_metric("wsq_connections", 2)
            for i in range(3):
                st, _, body = d.post(T, "p%d" % i)
                assert st == 200, body
            got = [await h.recv(a) for _ in range(3)]
            m_after = wait_metric("wsq_delivered_total", 3)
            await a.close()
            await b.close()
            return m_conn, got, m_after

        m_conn, got, m_after = h.run(go())
        self.assertEqual(m_conn["wsq_connections"], 2)
        self.assertEqual(got, ["p0", "p1", "p2"])
        self.assertEqual(m_after["wsq_published_total"], 3)
        self.assertEqual(m_after["wsq_delivered_total"], 3)
        m_end = wait_metric("wsq_connections", 0)
        self.assertEqual(m_end["wsq_connections"], 0)
        self.assertGreaterEqual(m_end["wsq_connections_total"], 2)
        # wsq.v1 publishes count too
        async def v1pub():
            ws = await h.connect_v1(d)
            for i in range(4):
                await h.pub_confirmed(ws, T, "v%d" % i, ref=i)
            await ws.close()
        h.run(v1pub())
        self.assertEqual(d.metrics()["wsq_published_total"], 7)


if __name__ == "__main__":
    h.main()
