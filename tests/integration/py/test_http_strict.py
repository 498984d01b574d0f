#!/usr/bin/python3
"""Malformed HTTP heads and unmasked WebSocket frames, from a raw socket, against the real wsqd.

wsqd reads every connection through its gate (broker/http_gate.c), which frames requests
strictly (include/wsq/http1.h) before libwebsockets sees them. A head the framer refuses is
answered with its exact status, `content-type: application/json`, a body
{"error":{"code":...,"message":...}} ending in "\\n", and `connection: close`; then the
connection closes and nothing of the request is acted on. Without the gate, lws 4.1 dropped such
connections without a word, answered with an HTML page, served them as something else, or (a
duplicate Content-Length with bytes behind it) stored one body thousands of times.

After an upgrade the gate checks that client frames are masked (RFC 6455 5.1): an unmasked one
closes that client with 1002 and is not published; other clients do not notice.

After every refusal /healthz answers 200, and wsqd's RSS stays bounded.
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

HOST = b"Host: 127.0.0.1\r\n"


class HttpStrict(h.BoundedRss, h.WsqdTestCase):
    EXTRA_YAML = "limits:\n  max_header_size: 4KiB\n"

    def healthy(self, what):
        st, _, body = self.wsqd.http_json("GET", "/healthz")
        self.assertEqual(st, 200, "%s: /healthz afterwards: %r" % (what, body))
        self.assertEqual(body.get("status"), "ok", what)
        self.assertTrue(self.wsqd.running(), "%s: wsqd exited" % what)

    def refused(self, data, status, code, what):
        """Sends data on a new connection: exactly one answer with this status, the JSON error
        body, connection: close; then the connection closes. Returns the error message."""
        c = h.RawHttp(self.wsqd)
        try:
            c.send(data)
            r = c.response()
            self.assertIsNotNone(r, "%s: the connection closed without an answer" % what)
            st, hdrs, body = r
            version = c.version
            self.assertEqual(st, status, "%s: %s %r" % (what, st, body[:300]))
            self.assertEqual(version, "HTTP/1.1", what)
            self.assertEqual(hdrs.get("content-type"), "application/json",
                             "%s: %r" % (what, hdrs))
            self.assertEqual(hdrs.get("connection", "").lower(), "close", "%s: %r" % (what, hdrs))
            self.assertTrue(body.endswith(b"\n"), "%s: body %r" % (what, body))
            try:
                obj = json.loads(body.decode("utf-8"))
            except ValueError:
                raise AssertionError("%s: the body is not JSON: %r" % (what, body[:300]))
            self.assertEqual(list(obj), ["error"], "%s: %r" % (what, obj))
            self.assertEqual(set(obj["error"]), {"code", "message"}, "%s: %r" % (what, obj))
            self.assertEqual(obj["error"]["code"], code, "%s: %r" % (what, obj))
            self.assertIsInstance(obj["error"]["message"], str, what)
            self.assertTrue(obj["error"]["message"], what)
            self.assertTrue(c.wait_closed(), "%s: the connection stayed open after the refusal" % what)
            self.assertEqual(c.buf, b"", "%s: bytes after the refusal: %r" % (what, c.buf[:200]))
        finally:
            c.close()
        self.healthy(what)
        return obj["error"]["message"]

    def assert_nothing_stored(self, topic, what):
        """topic never came to exist; checked twice, 0.5 s apart (a runaway store keeps going)."""
        for _ in range(2):
            st, _, body = self.wsqd.history(topic)
            self.assertEqual(st, 404, "%s: topic %s holds %r" % (what, topic, body))
            time.sleep(0.5 * h.SLOW)

    # -- refused heads -------------------------------------------------------------------------

    def test_header_over_max_header_size_431(self):
        req = b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 5000 + b"\r\n\r\n"
        self.refused(req, 431, "too_large", "5000-byte header, limit 4 KiB")

    def test_header_just_under_max_header_size_served(self):
        """The limit is the whole head: 4096 bytes are served, 4097 refused."""
        pre = b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Pad: "
        pad = 4096 - len(pre) - 4
        c = h.RawHttp(self.wsqd)
        c.send(pre + b"p" * pad + b"\r\n\r\n")
        r = c.response()
        c.close()
        self.assertIsNotNone(r, "a 4096-byte head: the connection closed without an answer")
        self.assertEqual(r[0], 200, r[2])
        self.refused(pre + b"p" * (pad + 1) + b"\r\n\r\n", 431, "too_large", "4097-byte head")

    def test_3000_small_headers_431(self):
        req = (b"GET /healthz HTTP/1.1\r\n" + HOST +
               b"".join(b"X-%d: 1\r\n" % i for i in range(3000)) + b"\r\n")
        self.refused(req, 431, "too_large", "3000 headers")

    def test_nul_in_path_400(self):
        self.refused(b"GET /topics/a%00b/messages HTTP/1.1\r\n" + HOST + b"\r\n",
                     400, "bad_request", "%00 in the path")
        self.refused(b"POST /topics/nul%00 HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\n\r\nx",
                     400, "bad_request", "%00 in a POST's path")
        self.assert_nothing_stored("nul", "%00")

    def test_duplicate_content_length_400_nothing_stored(self):
        req = (b"POST /topics/dupcl HTTP/1.1\r\n" + HOST + b"Content-Type: text/plain\r\n"
               b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabcxyz")
        self.refused(req, 400, "bad_request", "duplicate Content-Length")
        req = (b"POST /topics/dupcl HTTP/1.1\r\n" + HOST +
               b"Content-Length: 3\r\nContent-Length: 6\r\n\r\nabcxyz")
        self.refused(req, 400, "bad_request", "two different Content-Lengths")
        self.assert_nothing_stored("dupcl", "duplicate Content-Length")

    def test_chunked_post_411_nothing_stored(self):
        req = (b"POST /topics/chunked HTTP/1.1\r\n" + HOST + b"Content-Type: text/plain\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        self.refused(req, 411, "bad_request", "chunked POST")
        self.assert_nothing_stored("chunked", "chunked POST")

    def test_unknown_method_501(self):
        self.refused(b"BREW /healthz HTTP/1.1\r\n" + HOST + b"\r\n", 501, "bad_request", "BREW")
        self.refused(b"TRACE /healthz HTTP/1.1\r\n" + HOST + b"\r\n", 501, "bad_request",
                     "TRACE")

    def test_bare_lf_400(self):
        self.refused(b"GET /healthz HTTP/1.1\nHost: 127.0.0.1\n\n", 400, "bad_request",
                     "bare LF")
        self.refused(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\n\n", 400, "bad_request",
                     "bare LF after a header")

    def test_http2_version_505(self):
        self.refused(b"GET /healthz HTTP/2.0\r\n" + HOST + b"\r\n", 505, "bad_request",
                     "HTTP/2.0")

    def test_missing_host_400(self):
        self.refused(b"GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_request", "no Host")
        self.refused(b"POST /topics/nohost HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", 400,
                     "bad_request", "POST without Host")
        self.assert_nothing_stored("nohost", "POST without Host")

    def test_http10_without_host_served(self):
        c = h.RawHttp(self.wsqd)
        c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        r = c.response()
        c.close()
        self.assertIsNotNone(r, "HTTP/1.0 without Host: no answer")
        self.assertEqual((r[0], json.loads(r[2])["status"]), (200, "ok"))

    def test_many_refusals_rss_bounded(self):
        """Every kind of refusal, 30 times over: still serving, RSS bounded (tearDown)."""
        reqs = [
            (b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 5000 + b"\r\n\r\n", 431),
            (b"GET /a%00 HTTP/1.1\r\n" + HOST + b"\r\n", 400),
            (b"POST /topics/rss HTTP/1.1\r\n" + HOST +
             b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nab", 400),
            (b"POST /topics/rss HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n", 411),
            (b"BREW / HTTP/1.1\r\n" + HOST + b"\r\n", 501),
            (b"GET / HTTP/1.1\n\n", 400),
            (b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 505),
        ]
        for i in range(30):
            for data, status in reqs:
                c = h.RawHttp(self.wsqd)
                c.send(data)
                r = c.response()
                self.assertIsNotNone(r, "round %d: %r" % (i, data[:40]))
                self.assertEqual(r[0], status, "round %d: %r" % (i, data[:40]))
                self.assertTrue(c.wait_closed())
                c.close()
        self.healthy("after 210 refusals")
        self.assert_nothing_stored("rss", "refused POSTs")

    # -- a POST without Content-Length ---------------------------------------------------------

    def test_post_without_content_length_publishes_empty(self):
        """What `curl -X POST http://.../topics/t` sends: no Content-Length, no body. The body
        is empty (RFC 9112 6.3): an empty message is published, and the connection goes on."""
        d = self.wsqd
        curl = (b"POST /topics/t HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: curl/7.88.1\r\n"
                b"Accept: */*\r\n\r\n" % d.port)
        c = h.RawHttp(d)
        try:
            c.send(curl)
            r = c.response()
            self.assertIsNotNone(r, "no answer to a POST without Content-Length")
            st, hdrs, body = r
            self.assertEqual((st, json.loads(body)), (200, {"seq": 1, "topic": "t"}))
            self.assertNotEqual(hdrs.get("connection", "").lower(), "close", hdrs)
            # the same connection serves the next request
            c.send(b"GET /topics/t/messages HTTP/1.1\r\n" + HOST + b"\r\n")
            r = c.response()
            self.assertIsNotNone(r, "the connection closed after the first answer")
            st, _, body = r
            self.assertEqual(st, 200, body)
            msgs = json.loads(body)["messages"]
            self.assertEqual([(m["seq"], m["data"]) for m in msgs], [(1, "")], msgs)
            # and another POST without a length
            c.send(curl)
            r = c.response()
            self.assertIsNotNone(r, "no answer to the second POST without Content-Length")
            self.assertEqual((r[0], json.loads(r[2])), (200, {"seq": 2, "topic": "t"}))
        finally:
            c.close()
        st, _, body = d.history("t")
        self.assertEqual([(m["seq"], m["data"]) for m in body["messages"]], [(1, ""), (2, "")])

    # -- unmasked WebSocket frames -------------------------------------------------------------

    def test_unmasked_frame_closes_1002_others_unaffected(self):
        d = self.wsqd
        good = {"oks": [], "problems": []}

        async def steady(stop):
            """A well-behaved client publishing with confirms, all along."""
            ws = await h.connect_v1(d)
            ref = 0
            try:
                while not stop.is_set() or ref < 20:
                    ref += 1
                    await h.send_json(ws, {"op": "pub", "topic": "strict.good",
                                           "data": "g%d" % ref, "ref": ref})
                    r = await h.recv_json(ws, 10)
                    if r != {"op": "ok", "ref": ref, "topic": "strict.good", "seq": ref}:
                        good["problems"].append(r)
                    else:
                        good["oks"].append(ref)
                    await asyncio.sleep(0.005)
                await ws.close()
            except Exception as e:   # asserted below
                good["problems"].append(repr(e))

        def bad_client():
            ws = h.SocketWS(d, "/topics/strict.bad", subprotocol=None, timeout=5)
            try:
                ws.send_frame(0x1, b"first")                 # masked: published ...
                echo = ws.recv_frame()                       # ... and delivered back
                if echo != (1, True, b"first"):
                    raise AssertionError("raw mode echo of the masked frame: %r" % (echo,))
                ws.sock.sendall(b"\x81\x05hello")            # unmasked text frame
                try:
                    code, reason, frames = ws.recv_close()
                except (socket.timeout, EOFError, ConnectionResetError) as e:
                    return None, "no close frame: %r" % e, [], False
                closed = False
                try:                                         # and then the connection ends
                    ws._read(1)
                except (EOFError, ConnectionResetError):
                    closed = True
                except socket.timeout:
                    pass
                return code, reason, frames, closed
            finally:
                ws.close()

        async def go():
            stop = asyncio.Event()
            task = asyncio.ensure_future(steady(stop))
            await asyncio.sleep(0.05)
            res = await asyncio.to_thread(bad_client)
            stop.set()
            await task
            return res

        code, reason, frames, closed = h.run(go())
        self.assertEqual(code, 1002, "close code for an unmasked frame (reason %r)" % reason)
        self.assertEqual(frames, [], "frames before the close")
        self.assertTrue(closed, "the connection stayed open after the close frame")
        # the masked frame before it was published, the unmasked one was not
        time.sleep(0.3 * h.SLOW)
        st, _, body = d.history("strict.bad")
        self.assertEqual(st, 200, body)
        self.assertEqual([(m["seq"], m["data"]) for m in body["messages"]], [(1, "first")])
        # the other client: every publish confirmed in order, and stored
        self.assertEqual(good["problems"], [])
        self.assertGreaterEqual(len(good["oks"]), 20)
        self.assertEqual(good["oks"], list(range(1, len(good["oks"]) + 1)))
        st, _, body = d.history("strict.good", "?limit=1000")
        self.assertEqual(st, 200, body)
        self.assertEqual([m["data"] for m in body["messages"]],
                         ["g%d" % i for i in good["oks"]])
        self.healthy("after the unmasked frame")

    def test_unmasked_first_frame_wsq_v1(self):
        """A wsq.v1 client whose first frame is an unmasked pub: closed 1002, nothing stored."""
        d = self.wsqd
        ws = h.SocketWS(d, "/", timeout=5)
        try:
            pub = b'{"op":"pub","topic":"strict.v1","data":"x","ref":1}'
            ws.sock.sendall(b"\x81" + bytes([len(pub)]) + pub)
            try:
                code, reason, frames = ws.recv_close()
            except (socket.timeout, EOFError, ConnectionResetError) as e:
                code, reason, frames = None, "no close frame: %r" % e, []
        finally:
            ws.close()
        self.assertEqual(code, 1002, reason)
        self.assertEqual(frames, [])
        self.assert_nothing_stored("strict.v1", "unmasked wsq.v1 pub")
        self.healthy("after the unmasked pub")


class Decoding(h.WsqdTestCase):
    """Paths and query values reach wsqd decoded once, and never rewritten."""

    def test_dot_and_empty_segments_refused(self):
        d = self.wsqd
        for path in (b"/topics/a//b", b"/topics/a/../b", b"/topics/a/./b", b"/topics/a/.",
                     b"/topics/a%2F%2Fb", b"/topics/a/%2E%2E/b"):
            c = h.RawHttp(d)
            c.send(b"POST " + path + b" HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\n\r\nx")
            st, hdrs, body = c.response()
            c.close()
            self.assertEqual((st, json.loads(body)["error"]["code"]), (400, "bad_request"), path)
        for topic in ("b", "a/b"):
            self.assertEqual(d.history(topic)[0], 404, "a rewritten path published to " + topic)

    def test_raw_mode_decodes_once(self):
        d = self.wsqd
        # %2541 is "%41" once decoded: not a topic (before, a second decoding made it "A")
        c = h.RawHttp(d)
        st, head, _ = h.ws_upgrade(c.sock, d.host, d.port, "/topics/pct%2541")
        c.close()
        self.assertIn(b" 400 ", st + b" ")
        self.assertEqual(d.history("pctA")[0], 404)

    def test_import_bad_line_is_400(self):
        st, _, body = self.wsqd.http_json("POST", "/admin/import", b"{not json}\n")
        self.assertEqual((st, body["error"]["code"]), (400, "bad_json"))
        st, _, body = self.wsqd.http_json("POST", "/admin/import", b'{"topic":"t","data":1}\n')
        self.assertEqual(st, 400, body)

    def test_head_has_no_body(self):
        sock = socket.create_connection((self.wsqd.host, self.wsqd.port), timeout=5 * h.SLOW)
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\n" + HOST + b"\r\n"
                     b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n")
        time.sleep(0.3 * h.SLOW)
        data = sock.recv(65536)
        sock.close()
        head, _, rest = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), data)
        self.assertIn(b"content-length: ", head.lower())
        self.assertEqual(rest, b"", "a HEAD answer carried a body")

    def test_h2c_upgrade_refused(self):
        c = h.RawHttp(self.wsqd)
        c.send(b"GET /healthz HTTP/1.1\r\n" + HOST + b"Connection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        st, hdrs, body = c.response()
        c.close()
        self.assertEqual(st, 400)
        self.assertIn("websocket", json.loads(body)["error"]["message"])


class BodyLimits(h.WsqdTestCase):
    EXTRA_YAML = "limits:\n  max_message_size: 1KiB\n  max_http_body: 100\n"

    def test_max_http_body(self):
        """A body over its limit is answered 413 at once; the body is read and dropped (clients
        send it before reading the answer), and the connection serves the next request."""
        d = self.wsqd
        for path, n in ((b"/topics/t", 101), (b"/admin/purge?topic=t&all=true", 101)):
            c = h.RawHttp(d)
            c.send(b"POST " + path + b" HTTP/1.1\r\n" + HOST +
                   b"Content-Length: %d\r\n\r\n" % n + b"x" * n)
            st, hdrs, body = c.response()
            self.assertEqual((st, json.loads(body)["error"]["code"]), (413, "too_large"), path)
            self.assertNotEqual(hdrs.get("connection"), "close")
            c.send(b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n")
            self.assertEqual(c.response()[0], 200)
            c.close()
        self.assertEqual(d.history("t")[0], 404, "a refused body was published")
        # a body too large to read to its end: answered, then the connection closes
        c = h.RawHttp(d)
        c.send(b"POST /topics/t HTTP/1.1\r\n" + HOST + b"Content-Length: 999999999\r\n\r\nxx")
        st, hdrs, body = c.response()
        self.assertEqual((st, hdrs.get("connection")), (413, "close"))
        self.assertTrue(c.wait_closed())
        c.close()
        self.assertEqual(d.post("t", b"x" * 100)[0], 200)
        # an import body may be larger: 64 x max_message_size
        lines = b"".join(b'{"topic":"imp","data":"%s"}\n' % (b"y" * 50) for _ in range(10))
        st, _, body = d.http_json("POST", "/admin/import", lines)
        self.assertEqual((st, body), (200, {"imported": 10}))


if __name__ == "__main__":
    h.main()
