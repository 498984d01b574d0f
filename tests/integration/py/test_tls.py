#!/usr/bin/python3
"""TLS listeners against the real wsqd: wss:// and https:// on one port with a certificate this
test makes with the openssl CLI (a throwaway CA, a server certificate for 127.0.0.1, client
certificates), ALPN http/1.1, and client-certificate verification (listeners[].tls.ca and
require_client_cert). Clients: python3-websockets with an ssl context, http.client and ssl.
"""

import asyncio
import json
import os
import shutil
import socket
import ssl
import sys
import tempfile

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402
import sechelp as s  # noqa: E402

import websockets  # noqa: E402
import websockets.exceptions  # noqa: E402

PKI_DIR = None
PKI = None
T_OPS = s.new_token()
T_READER = s.new_token()
T_BAD = s.new_token()
AUTH = s.auth_yaml([s.token_yaml("ops", T_OPS, publish=[">"], subscribe=[">"], admin=True),
                    s.token_yaml("reader", T_READER, subscribe=["chat.>"])])


def setUpModule():
    global PKI_DIR, PKI
    PKI_DIR = tempfile.mkdtemp(prefix="wsqpy-pki-")
    PKI = s.make_pki(PKI_DIR)


def tearDownModule():
    if PKI_DIR and not os.environ.get("WSQ_KEEP"):
        shutil.rmtree(PKI_DIR, ignore_errors=True)


def tls_listener(ca=False, require=False):
    y = ("listeners:\n  - address: 127.0.0.1\n    port: 0\n    tls:\n      cert: %s\n"
         "      key: %s\n" % (PKI["server_cert"], PKI["server_key"]))
    if ca:
        y += "      ca: %s\n" % PKI["ca"]
    if require:
        y += "      require_client_cert: true\n"
    return y


def wss(d, path):
    return "wss://%s:%d%s" % (d.host, d.port, path)


REFUSED = (ssl.SSLError, ConnectionError, EOFError, OSError, asyncio.TimeoutError,
           websockets.exceptions.InvalidMessage, websockets.exceptions.InvalidHandshake,
           websockets.exceptions.ConnectionClosed)


class TlsServer(h.WsqdTestCase):
    START = False

    def start(self, **kw):
        return self.new_wsqd(AUTH, listeners_yaml=tls_listener(**kw)).start()

    def test_wss_and_https_on_one_port(self):
        d = self.start()
        d.wait_log(r"listening address=127\.0\.0\.1 port=%d tls=yes" % d.port)
        ctx = s.client_ctx(PKI)

        async def go():
            # raw mode over wss://, token in the query
            sub = await s.connect_url(wss(d, "/topics/chat.a?token=" + T_READER), ssl=ctx)
            # wsq.v1 over wss://, token in the header
            pub = await s.connect_url(wss(d, "/"), ssl=ctx, subprotocols=["wsq.v1"],
                                      extra_headers=s.bearer(T_OPS))
            self.assertEqual(pub.subprotocol, "wsq.v1")
            ok = await h.pub_confirmed(pub, "chat.a", "over tls", 1)
            self.assertEqual(await h.recv(sub), "over tls")
            for ws in (sub, pub):
                await ws.close()
            return ok["seq"]
        seq = h.run(go())
        # https:// on the same port: publish, read back, health and metrics
        st, _, body, _ = s.https(d, ctx, "POST", "/topics/chat.a", b"over https",
                                 dict(s.bearer(T_OPS), **{"Content-Type": "text/plain"}))
        self.assertEqual(st, 200, body)
        st, _, body, _ = s.https(d, ctx, "GET", "/topics/chat.a/messages?from=%d" % seq,
                                 headers=s.bearer(T_READER))
        self.assertEqual(st, 200, body)
        self.assertIn(b'"data":"over https"', body)
        st, _, body, _ = s.https(d, ctx, "GET", "/healthz")
        self.assertEqual(st, 200, body)
        self.assertIn(b'"storage":"writable"', body)
        st, hdrs, body, _ = s.https(d, ctx, "GET", "/metrics")
        self.assertEqual(st, 200)
        m = h.parse_prometheus(body.decode())
        self.assertEqual(m["wsq_published_total"], 2)

    def test_alpn_is_http11(self):
        d = self.start()
        # offered h2 first: wsqd must still pick http/1.1 (WebSockets need HTTP/1.1)
        ctx = s.client_ctx(PKI, alpn=("h2", "http/1.1"))
        with socket.create_connection((d.host, d.port), timeout=5 * h.SLOW) as raw:
            with ctx.wrap_socket(raw, server_hostname=d.host) as tls:
                self.assertEqual(tls.selected_alpn_protocol(), "http/1.1")
                self.assertIn(tls.version(), ("TLSv1.2", "TLSv1.3"))
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:100])
        st, _, _, alpn = s.https(d, ctx, "GET", "/healthz")
        self.assertEqual((st, alpn), (200, "http/1.1"))

        async def go():
            ws = await s.connect_url(wss(d, "/"), ssl=ctx, subprotocols=["wsq.v1"],
                                     extra_headers=s.bearer(T_OPS))
            self.assertEqual(ws.transport.get_extra_info("ssl_object").selected_alpn_protocol(),
                             "http/1.1")
            await s.still_open(ws)
            await ws.close()
        h.run(go())

    def test_gate_over_tls(self):
        """The gate frames TLS connections as it frames plain ones: a POST without
        Content-Length (the line wsqd adds for lws must not strand the rest of the head inside
        OpenSSL), keep-alive, pipelining answered with Connection: close, a malformed head."""
        d = self.start()
        ctx = s.client_ctx(PKI)

        def tls_conn():
            raw = socket.create_connection((d.host, d.port), timeout=5 * h.SLOW)
            return ctx.wrap_socket(raw, server_hostname=d.host)

        def read_answers(tls, n):
            buf, out = b"", []
            while len(out) < n:
                r = h.parse_response(buf)
                if r is not None:
                    out.append(r)
                    buf = r[3]
                    continue
                chunk = tls.recv(65536)
                if not chunk:
                    break
                buf += chunk
            return out

        auth = b"Authorization: Bearer " + T_OPS.encode() + b"\r\n"
        with tls_conn() as tls:   # what curl -X POST sends: no Content-Length
            tls.sendall(b"POST /topics/chat.tls HTTP/1.1\r\nHost: localhost\r\n" + auth + b"\r\n")
            (st, hdrs, body, _, _), = read_answers(tls, 1)
            self.assertEqual((st, json.loads(body)), (200, {"seq": 1, "topic": "chat.tls"}))
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            (st, _, _, _, _), = read_answers(tls, 1)
            self.assertEqual(st, 200)
        with tls_conn() as tls:   # pipelined: the first answer closes
            tls.sendall((b"POST /topics/chat.tls HTTP/1.1\r\nHost: localhost\r\n" + auth +
                         b"Content-Length: 1\r\n\r\nx") * 2)
            answers = read_answers(tls, 2)
            self.assertEqual(len(answers), 1)
            self.assertEqual((answers[0][0], answers[0][1].get("connection")), (200, "close"))
        with tls_conn() as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX: a\x00b\r\n\r\n")
            (st, hdrs, body, _, _), = read_answers(tls, 1)
            self.assertEqual((st, json.loads(body)["error"]["code"]), (400, "bad_request"))
        st, _, body, _ = s.https(d, ctx, "GET", "/topics/chat.tls/messages?token=" + T_OPS)
        self.assertEqual(st, 200, body)
        self.assertEqual([m["seq"] for m in json.loads(body)["messages"]], [1, 2])

    def test_denials_over_tls(self):
        d = self.start()
        ctx = s.client_ctx(PKI)

        async def go():
            st = await s.refused_status(s.connect_url(wss(d, "/topics/chat.a"), ssl=ctx))
            self.assertEqual(st, 403)      # anonymous has no rights
            st = await s.refused_status(s.connect_url(wss(d, "/topics/chat.a?token=" + T_BAD),
                                                      ssl=ctx))
            self.assertEqual(st, 401)
            st = await s.refused_status(s.connect_url(wss(d, "/topics/other.a?token=" + T_READER),
                                                      ssl=ctx))
            self.assertEqual(st, 403)
        h.run(go())
        u = s.upgrade(d, "/topics/chat.a", s.bearer(T_BAD), ctx=ctx)
        self.assertEqual((u.status, u.error_code()), (401, "unauthorized"))
        st, _, body, _ = s.https(d, ctx, "POST", "/topics/chat.a", b"x", s.bearer(T_READER))
        self.assertEqual(st, 403, body)
        st, _, body, _ = s.https(d, ctx, "POST", "/admin/purge?topic=chat.a&all=true",
                                 headers=s.bearer(T_READER))
        self.assertEqual(st, 403, body)
        d.stop()
        s.assert_secrets_not_logged(self, d, [T_OPS, T_READER, T_BAD])

    def test_client_must_verify_the_server(self):
        d = self.start()
        # the system trust store does not know the test CA: the client refuses the server
        strict = ssl.create_default_context()
        with self.assertRaises(ssl.SSLCertVerificationError):
            s.https(d, strict, "GET", "/healthz")
        # a name that is not in the certificate
        ctx = s.client_ctx(PKI)
        with socket.create_connection((d.host, d.port), timeout=5 * h.SLOW) as raw:
            with self.assertRaises(ssl.SSLCertVerificationError):
                ctx.wrap_socket(raw, server_hostname="wrong.example.com")

    def test_plaintext_on_the_tls_port_gets_nothing(self):
        d = self.start()
        # a plain HTTP request on the TLS port is not served
        try:
            st, _, body = d.http("GET", "/healthz", timeout=3)
        except Exception:  # reset, TLS alert bytes that are not HTTP, timeout: all refusals
            return
        self.fail("plain HTTP on a TLS listener answered %d %r" % (st, body[:100]))


class ClientCertificates(h.WsqdTestCase):
    START = False

    def setUp(self):
        super().setUp()
        self.d = self.new_wsqd(AUTH, listeners_yaml=tls_listener(ca=True, require=True)).start()
        self.good = s.client_ctx(PKI, PKI["client_cert"], PKI["client_key"])

    def published(self):
        st, _, body, _ = s.https(self.d, self.good, "GET", "/topics/chat.a/messages",
                                 headers=s.bearer(T_OPS))
        if st == 404:
            return []
        self.assertEqual(st, 200, body)
        return [m["data"] for m in json.loads(body)["messages"]]

    def assert_refused(self, ctx, name):
        d = self.d
        with self.assertRaises(REFUSED, msg="https:// with %s" % name):
            st, _, body, _ = s.https(d, ctx, "POST", "/topics/chat.a", b"must not land",
                                     dict(s.bearer(T_OPS), **{"Content-Type": "text/plain"}))
            print("\n%s: https POST answered %d %r" % (name, st, body))

        async def ws_try():
            ws = await s.connect_url(wss(d, "/"), ssl=ctx, subprotocols=["wsq.v1"],
                                     extra_headers=s.bearer(T_OPS), open_timeout=3)
            # TLS 1.3: the client may finish its handshake before the server's alert
            ok = await h.pub_confirmed(ws, "chat.a", "must not land either", 1)
            print("\n%s: wss:// publish confirmed %r" % (name, ok))
        with self.assertRaises(REFUSED, msg="wss:// with %s" % name):
            h.run(ws_try())
        self.assertEqual([p for p in self.published() if "must not" in p], [])

    def test_certificate_from_the_ca_accepted(self):
        d = self.d

        async def ok():
            ws = await s.connect_url(wss(d, "/"), ssl=self.good, subprotocols=["wsq.v1"],
                                     extra_headers=s.bearer(T_OPS))
            await h.pub_confirmed(ws, "chat.a", "with a client certificate", 1)
            await ws.close()
        h.run(ok())
        st, _, body, _ = s.https(d, self.good, "GET", "/healthz")
        self.assertEqual(st, 200, body)
        self.assertEqual(self.published(), ["with a client certificate"])

    def test_client_without_certificate_refused(self):
        self.assert_refused(s.client_ctx(PKI), "no client certificate")

    def test_certificate_from_another_ca_refused(self):
        # a certificate that the configured ca did not sign must not pass for one
        self.assert_refused(s.client_ctx(PKI, PKI["rogue_cert"], PKI["rogue_key"]),
                            "a client certificate from an untrusted CA")


class ClientCertificateConfig(h.WsqdTestCase):
    START = False

    def test_ca_without_require_accepts_clients_without_certificates(self):
        d = self.new_wsqd(AUTH, listeners_yaml=tls_listener(ca=True, require=False)).start()
        st, _, body, _ = s.https(d, s.client_ctx(PKI), "GET", "/healthz")
        self.assertEqual(st, 200, body)
        st, _, body, _ = s.https(d, s.client_ctx(PKI, PKI["client_cert"], PKI["client_key"]),
                                 "GET", "/healthz")
        self.assertEqual(st, 200, body)

    def test_require_without_ca_is_a_config_error(self):
        d = self.new_wsqd(AUTH, listeners_yaml=tls_listener(ca=False, require=True))
        with self.assertRaises(h.WsqdError) as cm:
            d.start()
        self.assertIn("require_client_cert", str(cm.exception))


if __name__ == "__main__":
    h.main()
