#!/usr/bin/python3
"""What a web page in a browser on the same machine can and cannot do (issue 11 §4), against the
real wsqd, with raw HTTP requests carrying the headers a browser sends.

- An Origin or a ?token= longer than its buffer is refused, never read as absent.
- Every request with an Origin (HTTP or WebSocket upgrade) needs an origin listed in
  auth.allowed_origins ("*": any) or the listener's own; an empty list allows only the own.
- A loopback listener accepts only Host values that name it (DNS rebinding).
- Admin requests from a browser need credentials, whatever auth.anonymous.admin says; every
  /admin/ endpoint needs admin rights.
- CORS: preflights and answers for listed origins; metrics.auth.
"""

import hashlib
import os
import socket
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402

T_ADMIN = "admin-token-0123456789abcdef"
T_READER = "reader-token-0123456789abcdef"
T_METRICS = "metrics-token-0123456789abcdef"


def sha(t):
    return hashlib.sha256(t.encode()).hexdigest()


TOKENS = ("  tokens:\n"
          "    - {name: ops, sha256: %s, admin: true}\n"
          "    - {name: reader, sha256: %s, subscribe: [\">\"]}\n"
          "    - {name: prom, sha256: %s, metrics: true}\n"
          % (sha(T_ADMIN), sha(T_READER), sha(T_METRICS)))


def request(d, method, path, headers=(), body=b"", host=None):
    """One raw request; -> (status, headers lowercased, body). host None: 127.0.0.1:PORT."""
    hdrs = ["Host: %s" % (host if host is not None else "127.0.0.1:%d" % d.port)]
    hdrs += list(headers)
    if method in ("POST", "PUT") or body:
        hdrs.append("Content-Length: %d" % len(body))
    c = h.RawHttp(d)
    c.send(("%s %s HTTP/1.1\r\n%s\r\n\r\n" % (method, path, "\r\n".join(hdrs))).encode() + body)
    r = c.response()
    c.close()
    if r is None:
        raise AssertionError("closed before an answer")
    return r


def upgrade(d, path="/", headers=(), host=None):
    """A WebSocket upgrade (wsq.v1): -> the status code."""
    s = socket.create_connection((d.host, d.port), timeout=5 * h.SLOW)
    req = ["GET %s HTTP/1.1" % path,
           "Host: %s" % (host if host is not None else "127.0.0.1:%d" % d.port),
           "Upgrade: websocket", "Connection: Upgrade",
           "Sec-WebSocket-Key: %s" % h.base64.b64encode(os.urandom(16)).decode(),
           "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: wsq.v1"] + list(headers)
    try:
        s.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise AssertionError("closed before an answer to the upgrade")
            buf += chunk
    finally:
        s.close()
    return int(buf.split(b" ", 2)[1])


def error_code(body):
    return h.json.loads(body)["error"]["code"]


class Lengths(h.WsqdTestCase):
    """Values longer than their buffers."""
    EXTRA_YAML = ("auth:\n  anonymous:\n    publish: [\">\"]\n    subscribe: [\">\"]\n"
                  "  allowed_origins: [\"https://app.example.com\"]\n")

    def test_long_origin_is_refused_not_absent(self):
        d = self.wsqd
        # a legal host name: 264 bytes of Origin in all
        origin = "https://" + ".".join(["a" * 63] * 4)[:250] + ".example"
        self.assertGreater(len(origin), 256)
        st = upgrade(d, "/", ["Origin: " + origin])
        self.assertIn(st, (400, 403), "a long Origin passed as no Origin")
        st, _, body = request(d, "POST", "/topics/t", ["Origin: " + origin], b"x")
        self.assertIn(st, (400, 403))
        self.assertEqual(d.history("t")[0], 404, "published despite the refusal")

    def test_long_token_is_401_not_anonymous(self):
        d = self.wsqd
        tok = "x" * (9 * 1024)
        st = upgrade(d, "/?token=" + tok)
        self.assertEqual(st, 401)
        st, _, body = request(d, "POST", "/topics/t?token=" + tok, (), b"x")
        self.assertEqual((st, error_code(body)), (401, "unauthorized"))
        st, _, body = request(d, "GET", "/healthz", ["Authorization: Bearer " + tok])
        self.assertEqual(st, 401)

    def test_long_query_parameter_is_400(self):
        d = self.wsqd
        d.post("t", "one")
        st, _, body = request(d, "GET", "/topics/t/messages?limit=" + "1" * 200)
        self.assertEqual((st, error_code(body)), (400, "bad_request"))


class Origins(h.WsqdTestCase):
    """The shipped loopback default: anonymous everything, allowed_origins empty."""

    def test_cross_site_requests_refused(self):
        d = self.wsqd
        d.post("t", "keep me")
        evil = "Origin: http://evil.example"
        st, _, body = request(d, "POST", "/admin/purge?topic=t&all=true", [evil])
        self.assertEqual((st, error_code(body)), (403, "forbidden"))
        st, _, body = request(d, "POST", "/topics/t", [evil], b"from a web page")
        self.assertEqual(st, 403)
        st, _, body = request(d, "GET", "/topics/t/messages", [evil])
        self.assertEqual(st, 403)
        self.assertEqual(upgrade(d, "/", [evil]), 403)
        self.assertEqual(upgrade(d, "/topics/t", [evil]), 403)
        st, _, body = d.history("t")
        self.assertEqual([m["data"] for m in body["messages"]], ["keep me"])

    def test_same_origin_allowed_without_cors_headers(self):
        d = self.wsqd
        own = "Origin: http://127.0.0.1:%d" % d.port
        st, hdrs, body = request(d, "POST", "/topics/t", [own, "Content-Type: text/plain"], b"hi")
        self.assertEqual(st, 200, body)
        self.assertNotIn("access-control-allow-origin", hdrs)
        self.assertEqual(upgrade(d, "/", [own]), 101)
        # the same page served as localhost
        st, _, _ = request(d, "GET", "/healthz", ["Origin: http://localhost:%d" % d.port],
                           host="localhost:%d" % d.port)
        self.assertEqual(st, 200)
        # another port is another origin
        st, _, _ = request(d, "GET", "/healthz", ["Origin: http://127.0.0.1:1"])
        self.assertEqual(st, 403)
        # https is another scheme
        st, _, _ = request(d, "GET", "/healthz", ["Origin: https://127.0.0.1:%d" % d.port])
        self.assertEqual(st, 403)

    def test_admin_from_a_browser_needs_credentials(self):
        d = self.wsqd
        d.post("t", "keep me")
        own = "Origin: http://127.0.0.1:%d" % d.port
        st, _, body = request(d, "POST", "/admin/purge?topic=t&all=true", [own])
        self.assertEqual((st, error_code(body)), (401, "unauthorized"))
        st, _, body = request(d, "GET", "/admin/whoami", [own])
        self.assertEqual(st, 401)
        # without an Origin (wsqctl, curl), the loopback default's anonymous admin works
        st, _, body = request(d, "GET", "/admin/whoami")
        self.assertEqual(st, 200, body)
        st, _, body = request(d, "POST", "/admin/whoami")
        self.assertEqual((st, error_code(body)), (405, "bad_request"))
        self.assertEqual(len(d.history("t")[2]["messages"]), 1)

    def test_dns_rebinding_host_refused(self):
        d = self.wsqd
        for host in ("evil.example:%d" % d.port, "evil.example", "localhost:1",
                     "127.0.0.1.evil.example:%d" % d.port, "[::2]:%d" % d.port):
            st, _, body = request(d, "GET", "/healthz", host=host)
            self.assertEqual((st, error_code(body)), (403, "forbidden"), host)
            self.assertEqual(upgrade(d, "/", host=host), 403, host)
        st, _, body = request(d, "GET", "/healthz", host="127.0.0.1:%d.evil.example" % d.port)
        self.assertEqual((st, error_code(body)), (400, "bad_request"))
        for host in ("localhost:%d" % d.port, "127.0.0.1:%d" % d.port, "127.0.0.1", "LOCALHOST",
                     "[::1]:%d" % d.port):
            st, _, body = request(d, "GET", "/healthz", host=host)
            self.assertEqual(st, 200, (host, body))

    def test_options_without_origin_is_405(self):
        st, _, body = request(self.wsqd, "OPTIONS", "/topics/t")
        self.assertEqual(st, 405)


class Cors(h.WsqdTestCase):
    EXTRA_YAML = ("auth:\n  anonymous:\n    publish: [\">\"]\n    subscribe: [\">\"]\n"
                  + TOKENS +
                  "  allowed_origins: [\"http://app.test:3000\"]\n")

    def test_listed_origin_gets_cors_headers(self):
        d = self.wsqd
        o = "Origin: http://app.test:3000"
        st, hdrs, body = request(d, "POST", "/topics/t", [o], b"x")
        self.assertEqual(st, 200, body)
        self.assertEqual(hdrs.get("access-control-allow-origin"), "http://app.test:3000")
        self.assertEqual(hdrs.get("vary"), "Origin")
        self.assertEqual(upgrade(d, "/", [o]), 101)

    def test_preflight(self):
        d = self.wsqd
        st, hdrs, body = request(d, "OPTIONS", "/topics/t",
                                 ["Origin: http://app.test:3000",
                                  "Access-Control-Request-Method: POST",
                                  "Access-Control-Request-Headers: authorization, content-type"])
        self.assertEqual(st, 204)
        self.assertEqual(body, b"")
        self.assertEqual(hdrs.get("access-control-allow-origin"), "http://app.test:3000")
        self.assertIn("POST", hdrs.get("access-control-allow-methods", ""))
        self.assertIn("Authorization", hdrs.get("access-control-allow-headers", ""))
        self.assertTrue(int(hdrs.get("access-control-max-age", "0")) > 0)
        # the message's own headers: Idempotency-Key always, Wsq-Header-* names as asked
        st, hdrs, _ = request(d, "OPTIONS", "/topics/t",
                              ["Origin: http://app.test:3000",
                               "Access-Control-Request-Method: POST",
                               "Access-Control-Request-Headers: content-type, wsq-header-trace-id,"
                               " idempotency-key,x-other, wsq-header-bad{x}"])
        self.assertEqual(st, 204)
        self.assertEqual(hdrs.get("access-control-allow-headers"),
                         "Authorization, Content-Type, Idempotency-Key, wsq-header-trace-id")
        st, hdrs, _ = request(d, "OPTIONS", "/topics/t",
                              ["Origin: http://other.test", "Access-Control-Request-Method: POST"])
        self.assertEqual(st, 403)
        self.assertNotIn("access-control-allow-origin", hdrs)

    def test_admin_with_credentials_from_a_listed_origin(self):
        d = self.wsqd
        d.post("t", "x")
        o = "Origin: http://app.test:3000"
        st, _, _ = request(d, "POST", "/admin/purge?topic=t&all=true", [o])
        self.assertEqual(st, 401)
        st, _, body = request(d, "POST", "/admin/purge?topic=t&all=true",
                              [o, "Authorization: Bearer " + T_READER])
        self.assertEqual((st, error_code(body)), (403, "forbidden"))
        st, hdrs, body = request(d, "POST", "/admin/purge?topic=t&all=true",
                                 [o, "Authorization: Bearer " + T_ADMIN])
        self.assertEqual(st, 200, body)
        self.assertEqual(h.json.loads(body)["removed"], 1)
        self.assertEqual(hdrs.get("access-control-allow-origin"), "http://app.test:3000")


class AnyOrigin(h.WsqdTestCase):
    EXTRA_YAML = ("auth:\n  anonymous:\n    publish: [\">\"]\n    subscribe: [\">\"]\n"
                  "  allowed_origins: [\"*\"]\n")

    def test_star_allows_every_origin(self):
        d = self.wsqd
        st, hdrs, _ = request(d, "GET", "/healthz", ["Origin: https://anything.example"])
        self.assertEqual(st, 200)
        self.assertEqual(hdrs.get("access-control-allow-origin"), "https://anything.example")
        self.assertEqual(upgrade(d, "/", ["Origin: https://anything.example"]), 101)


class Metrics(h.WsqdTestCase):
    EXTRA_YAML = ("auth:\n  anonymous:\n    publish: []\n    subscribe: []\n" + TOKENS +
                  "metrics:\n  auth: token\n")

    def test_metrics_need_the_right(self):
        d = self.wsqd
        st, _, body = request(d, "GET", "/metrics")
        self.assertEqual((st, error_code(body)), (401, "unauthorized"))
        st, _, body = request(d, "GET", "/metrics", ["Authorization: Bearer " + T_READER])
        self.assertEqual((st, error_code(body)), (403, "forbidden"))
        for tok in (T_METRICS, T_ADMIN):
            st, hdrs, body = request(d, "GET", "/metrics", ["Authorization: Bearer " + tok])
            self.assertEqual(st, 200)
            self.assertIn(b"wsq_published_total", body)

    def test_admin_endpoints_need_admin(self):
        d = self.wsqd
        for path in ("/admin/whoami", "/admin/purge?topic=t&all=true"):
            method = "GET" if path.endswith("whoami") else "POST"
            st, _, body = request(d, method, path)
            self.assertEqual((st, error_code(body)), (401, "unauthorized"), path)
            st, _, body = request(d, method, path, ["Authorization: Bearer " + T_METRICS])
            self.assertEqual((st, error_code(body)), (403, "forbidden"), path)
            self.assertNotIn(b"pid", body)


class PublicMetrics(h.WsqdTestCase):
    EXTRA_YAML = ("auth:\n  anonymous:\n    publish: []\n    subscribe: []\n"
                  "metrics:\n  auth: public\n")

    def test_public_metrics(self):
        st, _, body = request(self.wsqd, "GET", "/metrics")
        self.assertEqual(st, 200)


if __name__ == "__main__":
    h.main()
