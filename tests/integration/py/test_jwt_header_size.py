#!/usr/bin/python3
"""A JWT as large as the request head allows is still accepted (docs/OPERATIONS.md "Limits":
`max_header_size` must fit your largest JWT; docs/PROTOCOL.md "Request rules", HTTP
credentials: a token longer than 8192 bytes is refused with 401, never served as anonymous).

Anonymous clients have no rights here, so a publish that succeeds proves the JWT was read:
- limits.max_header_size 4 KiB (its minimum): a POST and a wsq.v1 upgrade whose head, carrying
  `Authorization: Bearer <a JWT of about 4 KB>`, is exactly 4096 bytes are served with the
  JWT's rights; one byte more is 431 too_large;
- the default max_header_size (16 KiB): a JWT of exactly 8192 bytes (the longest token) works
  in the Authorization header (POST and upgrade), in ?token= and in the wsq.v1 `auth` op; 8193
  bytes are refused with 401 / `unauthorized`.
"""

import os
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402
import sechelp as s  # noqa: E402

SECRET = "jwt-secret-" + "k" * 40
AUTH = s.auth_yaml(jwt={"secret": SECRET})   # anonymous: no rights


def jwt_of_len(n):
    """A valid JWT (sub "big", publish and subscribe on jwt.>) of exactly n bytes, padded
    with an ignored claim."""
    base = s.claims("big", pub=["jwt.>"], subscribe=["jwt.>"])
    lo = 0
    for k in range(max(0, n * 3 // 4 - 200), n):
        base["pad"] = "p" * k
        t = s.mint_jwt(SECRET, base)
        if len(t) == n:
            return t
        if len(t) > n:
            break
        lo = k
    raise AssertionError("no JWT of exactly %d bytes (pad %d)" % (n, lo))


def post_head(d, jwt, pad, body):
    return (b"POST /topics/jwt.t HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\nAuthorization: Bearer %s\r\nX-Pad: %s\r\n\r\n"
            % (d.host.encode(), d.port, len(body), jwt.encode(), b"x" * pad))


def upgrade_headers(jwt, pad):
    return ["Authorization: Bearer " + jwt, "X-Pad: " + "x" * pad]


class NearMaxHeaderSize(h.WsqdTestCase):
    EXTRA_YAML = AUTH + "limits:\n  max_header_size: 4KiB\n"
    HEAD = 4096

    def test_post_head_of_exactly_max_header_size(self):
        d = self.wsqd
        jwt = jwt_of_len(self.HEAD - 200)
        body = b"hi"
        pad = self.HEAD - len(post_head(d, jwt, 0, body))
        self.assertGreater(pad, 0)
        for extra, want in ((0, 200), (1, 431)):
            c = h.RawHttp(d)
            head = post_head(d, jwt, pad + extra, body)
            self.assertEqual(len(head), self.HEAD + extra)
            c.send(head + body)
            r = c.response()
            c.close()
            self.assertIsNotNone(r, "%d-byte head: no answer" % len(head))
            st, _, b = r
            self.assertEqual(st, want, "%d-byte head with a %d-byte JWT: %r"
                             % (len(head), len(jwt), b))
            if want == 431:
                self.assertIn(b'"too_large"', b)
        st, _, hist = d.http_json("GET", "/topics/jwt.t/messages", headers=s.bearer(jwt))
        self.assertEqual((st, [m["data"] for m in hist["messages"]]), (200, ["hi"]), hist)

    def test_upgrade_head_of_exactly_max_header_size(self):
        d = self.wsqd
        jwt = jwt_of_len(self.HEAD - 300)
        size0 = len(h.ws_upgrade_request(d.host, d.port, "/", "wsq.v1", upgrade_headers(jwt, 0)))
        pad = self.HEAD - size0
        self.assertGreater(pad, 0)
        ws = h.SocketWS(d, headers=upgrade_headers(jwt, pad))
        ws.send_json({"op": "pub", "topic": "jwt.t", "data": "over ws", "ref": 1})
        ok = ws.expect("ok")
        ws.send_json({"op": "pub", "topic": "other.t", "data": "no", "ref": 2})
        err = ws.expect("err")
        ws.close()
        self.assertEqual(ok["seq"], 1)
        self.assertEqual(err["code"], "forbidden", err)   # the JWT's rights, not more
        with self.assertRaises(h.UpgradeRefused) as cm:
            h.SocketWS(d, headers=upgrade_headers(jwt, pad + 1))
        self.assertIn(b" 431 ", cm.exception.status + b" ")


class LongestToken(h.WsqdTestCase):
    EXTRA_YAML = AUTH   # max_header_size: the default, 16 KiB

    def test_8192_bytes_accepted_8193_refused(self):
        d = self.wsqd
        at, over = jwt_of_len(8192), jwt_of_len(8193)
        st, _, body = d.post("jwt.t", "header", headers=s.bearer(at))
        self.assertEqual((st, body.get("seq")), (200, 1), body)
        st, _, body = d.http_json("GET", "/topics/jwt.t/messages?token=" + at)
        self.assertEqual((st, [m["data"] for m in body["messages"]]), (200, ["header"]), body)
        st, _, body = d.post("jwt.t", "no", headers=s.bearer(over))
        self.assertEqual((st, body["error"]["code"]), (401, "unauthorized"), body)
        st, _, body = d.http_json("GET", "/topics/jwt.t/messages?token=" + over)
        self.assertEqual(st, 401, body)

        ws = h.SocketWS(d, token=at)
        ws.send_json({"op": "pub", "topic": "jwt.t", "data": "upgrade", "ref": 1})
        self.assertEqual(ws.expect("ok")["seq"], 2)
        ws.close()
        u = s.upgrade(d, "/", headers=s.bearer(over), subprotocol="wsq.v1")
        self.assertEqual((u.status, u.error_code()), (401, "unauthorized"))

        # the auth op: anonymous first (no rights), then the JWT. A token above 8192 bytes is
        # refused by the frame decoder as a bad value (bad_request; PROTOCOL.md's `auth` names
        # only `unauthorized`: reported), and the connection stays anonymous.
        ws = h.SocketWS(d)
        ws.send_json({"op": "auth", "token": over, "ref": 1})
        self.assertEqual(ws.expect("err")["code"], "bad_request")
        ws.send_json({"op": "pub", "topic": "jwt.t", "data": "anonymous", "ref": "a"})
        self.assertEqual(ws.expect("err")["code"], "forbidden")
        ws.send_json({"op": "auth", "token": at, "ref": 2})
        self.assertEqual(ws.expect("ok")["ref"], 2)
        ws.send_json({"op": "pub", "topic": "jwt.t", "data": "auth op", "ref": 3})
        self.assertEqual(ws.expect("ok")["seq"], 3)
        ws.close()


if __name__ == "__main__":
    h.main()
