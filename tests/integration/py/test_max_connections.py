#!/usr/bin/python3
"""Connections past limits.max_connections (docs/PROTOCOL.md "Upgrade refusals", HTTP "Status
codes"; docs/OPERATIONS.md "Limits"):

- with max_connections open, a WebSocket upgrade (wsq.v1 or raw) and an HTTP request (GET and
  POST) get 503 with {"error":{"code":"limit_exceeded",...}}; a refused upgrade says
  `Connection: close` and its message names limits.max_connections; a refused POST stores
  nothing; the connections already open go on;
- "far beyond the limit (1/8 more + 64) new sockets are dropped at accept": with 8 allowed, up
  to 8 + 1 + 64 = 73 sockets are accepted (the ones past 8 are answered 503), the 74th is closed
  without an answer;
- wsq_limit_refusals_total{limit="connections"} counts every 503 and every drop; once the
  connections close, new ones are served again.
(test_limits.py checks the 503 of max_connections and max_connections_per_ip next to the other
limits.)
"""

import json
import os
import socket
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402
import sechelp as s  # noqa: E402

MAX = 8
HARD = MAX + MAX // 8 + 64   # 73


def request(sock, method, path, body=b""):
    """One HTTP/1.1 request on a connected socket; -> (status, headers, body) or None when the
    server closed without an answer."""
    sock.sendall(b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (method, path, len(body), body))
    buf = b""
    while True:
        r = h.parse_response(buf)
        if r is not None:
            return r[0], r[1], r[2]
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            if buf:
                raise AssertionError("closed inside an answer: %r" % buf[:300])
            return None
        buf += chunk


class MaxConnections(h.WsqdTestCase):
    EXTRA_YAML = "limits:\n  max_connections: %d\n" % MAX

    def refusals(self):
        return s.limit_refusals(self.wsqd.metrics(), "connections")

    def assert_503(self, r, what, close=False):
        self.assertIsNotNone(r, "%s: closed without an answer" % what)
        st, hdrs, body = r
        self.assertEqual(st, 503, "%s: %r" % (what, body))
        self.assertEqual(s.Upgrade(st, hdrs, body).error_code(), "limit_exceeded", what)
        if close:
            self.assertEqual(hdrs.get("connection", "").lower(), "close", what)

    def test_503_then_dropped_past_an_eighth_and_64(self):
        d = self.wsqd
        self.assertEqual(self.refusals(), 0)
        # MAX connections: wsq.v1 and raw mode
        open_ws = [h.SocketWS(d) for _ in range(MAX // 2)]
        open_ws += [h.SocketWS(d, "/topics/mc.t", subprotocol=None) for _ in range(MAX // 2)]
        socks = []
        try:
            # past the limit: upgrades and plain HTTP get 503 limit_exceeded
            u = s.upgrade(d, "/", subprotocol="wsq.v1")
            self.assert_503((u.status, u.headers, u.body), "wsq.v1 upgrade", close=True)
            self.assertIn("limits.max_connections", u.json()["error"]["message"])
            u = s.upgrade(d, "/topics/mc.t")
            self.assert_503((u.status, u.headers, u.body), "raw upgrade", close=True)
            seen_503 = 2
            for method, path, body in (("GET", b"/healthz", b""),
                                       ("POST", b"/topics/mc.refused", b"not stored")):
                sock = socket.create_connection((d.host, d.port), timeout=5 * h.SLOW)
                r = request(sock, method.encode(), path, body)
                # a request with no body to read closes the extra connection after the answer
                self.assert_503(r, "%s %s" % (method, path.decode()), close=method == "GET")
                self.assertIn("limits.max_connections", json.loads(r[2])["error"]["message"])
                sock.close()
                seen_503 += 1
            # the open ones go on: a raw subscriber gets a wsq.v1 publish
            open_ws[0].send_json({"op": "pub", "topic": "mc.t", "data": "still", "ref": 1})
            self.assertEqual(open_ws[0].expect("ok")["seq"], 1)
            self.assertEqual(open_ws[MAX // 2].recv(), b"still")

            # sockets that send nothing yet: accepted up to HARD connections in all
            for _ in range(HARD - MAX):
                socks.append(socket.create_connection((d.host, d.port), timeout=5 * h.SLOW))
            time.sleep(0.3)   # wsqd accepts them in order
            past = socket.create_connection((d.host, d.port), timeout=5 * h.SLOW)
            dropped = request(past, b"GET", b"/healthz")
            past.close()
            self.assertIsNone(dropped, "socket %d (limit %d, hard %d) was answered: %r"
                              % (HARD + 1, MAX, HARD, dropped))
            # every one below HARD is still there, and answered 503
            self.assert_503(request(socks[-1], b"GET", b"/healthz"), "socket %d" % HARD)
            seen_503 += 1
        finally:
            for x in socks:
                x.close()
            for ws in open_ws:
                ws.close()
        polled_503 = []

        def all_closed():   # /metrics is itself one connection; a 503 until there is room
            st, _, body = d.http("GET", "/metrics")
            if st == 503:
                polled_503.append(st)
            return st == 200 and h.parse_prometheus(body.decode())["wsq_tcp_connections"] == 1
        h.wait_until(all_closed, 5, "the connections to close")
        self.assertEqual(self.refusals(), seen_503 + len(polled_503) + 1)   # + the drop
        st, _, body = d.history("mc.refused")
        self.assertEqual(st, 404, body)                    # the refused POST stored nothing
        ws = h.SocketWS(d)
        ws.send_json({"op": "ping", "ref": 1})
        self.assertEqual(ws.expect("pong")["ref"], 1)
        ws.close()


if __name__ == "__main__":
    h.main()
