#!/usr/bin/python3
"""Authentication and authorization against the real wsqd, with python3-websockets and
http.client as clients (PROTOCOL.md "Upgrade refusals", "auth", HTTP errors, close codes;
OPERATIONS.md "Security notes").

Covers every denial path over raw mode, wsq.v1 and HTTP with its exact code: no credentials
where anonymous has no rights, a bad token, a token without the right, the admin endpoint
without admin; static tokens stored only as SHA-256 (the plaintext works over the header,
?token= and the wsq.v1 auth op); HS256 JWTs (rights from claims; expired, not yet valid,
tampered, wrong secret, alg none, wrong alg, bad claims, wrong issuer/audience, secret_file),
with wsq_auth_failures_total{reason} moving; a JWT session closed 4001 "token expired";
auth.allowed_origins; the startup warning for anonymous rights on a non-loopback listener; and
a log that never holds a token.
"""

import asyncio
import json
import os
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402
import sechelp as s  # noqa: E402

import websockets  # noqa: E402
import websockets.exceptions  # noqa: E402

# Tokens of this run: random, so a grep of the log for them means something.
T_READER = s.new_token()
T_WRITER = s.new_token()
T_OPS = s.new_token()
T_BOTH = s.new_token()
T_UPPER = s.new_token()
T_BAD = s.new_token()          # never configured
JWT_SECRET = "jwt-secret-" + os.urandom(16).hex()   # >= 32 bytes
ALL_TOKENS = [T_READER, T_WRITER, T_OPS, T_BOTH, T_UPPER, T_BAD]

TOKENS_YAML = [
    s.token_yaml("reader", T_READER, subscribe=["chat.>"]),
    s.token_yaml("writer", T_WRITER, publish=["chat.>"]),
    s.token_yaml("ops", T_OPS, publish=[">"], subscribe=[">"], admin=True),
    s.token_yaml("both", T_BOTH, publish=["chat.>"], subscribe=["chat.>"]),
    s.token_yaml("upper", T_UPPER, publish=["up.>"], subscribe=["up.>"], upper=True),
]


def history(d, topic, token=T_OPS):
    return d.http_json("GET", "/topics/%s/messages?from=1&limit=1000" % topic,
                       headers=s.bearer(token) if token else None)


def post(d, topic, body, token=None, query=""):
    hdrs = {"Content-Type": "text/plain"}
    if token:
        hdrs.update(s.bearer(token))
    return d.http_json("POST", "/topics/%s%s" % (topic, query), body.encode(), hdrs)


def wait_history(d, topic, n, timeout=5.0):
    deadline = time.monotonic() + timeout * h.SLOW
    while True:
        st, _, body = history(d, topic)
        have = [m["data"] for m in body["messages"]] if st == 200 else []
        if len(have) >= n:
            return have
        if time.monotonic() > deadline:
            raise AssertionError("topic %s holds %r, expected %d messages" % (topic, have, n))
        time.sleep(0.02)


def raw(d, topic, token=None, query="", **kw):
    q = query
    if token:
        q += ("&" if q else "?") + "token=" + token
    return s.connect_url(d.ws_url("/topics/%s%s" % (topic, q)), **kw)


def v1(d, token=None, **kw):
    if token:
        kw["extra_headers"] = s.bearer(token)
    return h.connect_v1(d, **kw)


class StaticTokens(h.WsqdTestCase):
    EXTRA_YAML = s.auth_yaml(TOKENS_YAML)

    def test_config_holds_only_hashes_and_plaintext_works(self):
        d = self.wsqd
        conf = open(d.conf).read()
        for t in ALL_TOKENS:
            self.assertNotIn(t, conf)
        self.assertIn(s.sha256_hex(T_WRITER), conf)
        self.assertIn(s.sha256_hex(T_UPPER).upper(), conf)
        # the header, ?token= and the wsq.v1 auth op all take the plaintext
        st, _, body = post(d, "chat.a", "via header", T_WRITER)
        self.assertEqual((st, body.get("seq")), (200, 1), body)
        st, _, body = post(d, "chat.a", "via query", query="?token=" + T_WRITER)
        self.assertEqual((st, body.get("seq")), (200, 2), body)
        # a hash written in uppercase hex works the same
        st, _, body = post(d, "up.a", "upper", T_UPPER)
        self.assertEqual(st, 200, body)

        async def go():
            ws = await v1(d)
            await h.send_json(ws, {"op": "auth", "token": T_WRITER, "ref": 1})
            ok = await h.expect_op(ws, "ok")
            self.assertEqual(ok["ref"], 1)
            await h.pub_confirmed(ws, "chat.a", "via auth op", 2)
            await ws.close()
        h.run(go())
        self.assertEqual(wait_history(d, "chat.a", 3), ["via header", "via query", "via auth op"])
        # the hash itself is not a credential
        st, _, body = post(d, "chat.a", "hash as token", s.sha256_hex(T_WRITER))
        self.assertEqual((st, body["error"]["code"]), (401, "unauthorized"), body)

    def test_raw_mode_denials(self):
        d = self.wsqd
        m0 = d.metrics()

        async def go():
            # no credentials, and anonymous has no rights: 403 forbidden
            self.assertEqual(await s.refused_status(raw(d, "chat.a")), 403)
            # a token that is not configured, as a header and as ?token=: 401
            self.assertEqual(await s.refused_status(
                raw(d, "chat.a", extra_headers=s.bearer(T_BAD))), 401)
            self.assertEqual(await s.refused_status(raw(d, "chat.a", T_BAD)), 401)
            # not a Bearer header: 401
            self.assertEqual(await s.refused_status(
                raw(d, "chat.a", extra_headers={"Authorization": "Basic " + T_READER})), 401)
            # a valid token with neither right on the topic: 403
            self.assertEqual(await s.refused_status(raw(d, "other.a", T_READER)), 403)
            self.assertEqual(await s.refused_status(raw(d, "other.a", T_WRITER)), 403)
            # reader may subscribe only: accepted; receives; a frame it sends closes 4003
            rd = await raw(d, "chat.a", T_READER)
            wr = await raw(d, "chat.a", T_WRITER)      # publish only: accepted
            await wr.send("from writer")
            self.assertEqual(await h.recv(rd), "from writer")
            await rd.send("reader may not publish")
            await s.expect_close(rd, 4003, "not allowed to publish to this topic")
            # the writer has no subscription: it got nothing back
            await h.expect_silence(wr, 0.3)
            await wr.close()
        h.run(go())
        self.assertEqual(wait_history(d, "chat.a", 1), ["from writer"])

        # the bodies: JSON with the stable codes, and Connection: close
        for path, hdrs, status, code in (
                ("/topics/chat.a", {}, 403, "forbidden"),
                ("/topics/chat.a", s.bearer(T_BAD), 401, "unauthorized"),
                ("/topics/chat.a?token=" + T_BAD, {}, 401, "unauthorized"),
                ("/topics/other.a", s.bearer(T_READER), 403, "forbidden")):
            u = s.upgrade(d, path, hdrs)
            self.assertEqual((u.status, u.error_code()), (status, code), (path, u.body))
            self.assertEqual(u.headers.get("connection", "").lower(), "close")
            self.assertEqual(u.headers.get("content-type"), "application/json")

        m1 = d.metrics()
        # 2 bad tokens over websockets + 2 in the bodies' round; 1 bad header
        self.assertEqual(s.auth_failures(m1, "unknown_token")
                         - s.auth_failures(m0, "unknown_token"), 4)
        self.assertEqual(s.auth_failures(m1, "bad_authorization_header")
                         - s.auth_failures(m0, "bad_authorization_header"), 1)
        log = d.log()
        self.assertRegex(log, r"disconnect sid=\d+ peer=\S+ identity=reader code=4003 "
                              r"reason=\"not allowed to publish to this topic\"")

    def test_wsq_v1_denials(self):
        d = self.wsqd

        async def go():
            # a bad token on the upgrade: 401, before any subprotocol handling
            self.assertEqual(await s.refused_status(v1(d, T_BAD)), 401)
            self.assertEqual(await s.refused_status(
                h.connect_v1(d, "/?token=" + T_BAD)), 401)
            # anonymous (no rights) is accepted, but may do nothing
            ws = await v1(d)
            await h.send_json(ws, {"op": "pub", "topic": "chat.a", "data": "x", "ref": 1})
            e = await s.expect_err(ws, "forbidden", 1)
            self.assertIn("anonymous", e["message"])
            await h.send_json(ws, {"op": "sub", "topic": "chat.a", "ref": 2})
            await s.expect_err(ws, "forbidden", 2)
            # a bad token in the auth op: unauthorized; the connection stays, still anonymous
            await h.send_json(ws, {"op": "auth", "token": T_BAD, "ref": 3})
            await s.expect_err(ws, "unauthorized", 3)
            await s.still_open(ws)
            await h.send_json(ws, {"op": "pub", "topic": "chat.a", "data": "x", "ref": 4})
            await s.expect_err(ws, "forbidden", 4)
            # the auth op with the reader's token: subscribe yes, publish no, other topics no
            await h.send_json(ws, {"op": "auth", "token": T_READER, "ref": 5})
            self.assertEqual((await h.expect_op(ws, "ok"))["ref"], 5)
            await h.send_json(ws, {"op": "sub", "topic": "chat.a", "ref": 6})
            self.assertEqual((await h.expect_op(ws, "subscribed"))["ref"], 6)
            await h.send_json(ws, {"op": "pub", "topic": "chat.a", "data": "x", "ref": 7})
            await s.expect_err(ws, "forbidden", 7)
            await h.send_json(ws, {"op": "sub", "topic": "other.a", "ref": 8})
            await s.expect_err(ws, "forbidden", 8)
            # the writer (Authorization on the upgrade): publish yes, subscribe no
            wr = await v1(d, T_WRITER)
            await h.send_json(wr, {"op": "sub", "topic": "chat.a", "ref": 1})
            await s.expect_err(wr, "forbidden", 1)
            await h.send_json(wr, {"op": "pub", "topic": "other.a", "data": "x", "ref": 2})
            await s.expect_err(wr, "forbidden", 2)
            ok = await h.pub_confirmed(wr, "chat.a", "hello reader", 3)
            msg = await h.expect_op(ws, "msg")
            self.assertEqual((msg["seq"], msg["data"]), (ok["seq"], "hello reader"))
            await wr.close()
            await ws.close()
        h.run(go())
        m = d.metrics()
        self.assertEqual(s.auth_failures(m, "unknown_token"), 3)

    def test_http_denials(self):
        d = self.wsqd
        cases = [
            # (method, path, token, query, expected status, code)
            ("POST", "chat.a", None, "", 403, "forbidden"),         # anonymous: no rights
            ("POST", "chat.a", T_BAD, "", 401, "unauthorized"),
            ("POST", "chat.a", None, "?token=" + T_BAD, 401, "unauthorized"),
            ("POST", "chat.a", T_READER, "", 403, "forbidden"),     # no publish right
            ("POST", "other.a", T_WRITER, "", 403, "forbidden"),    # not its topic
        ]
        for method, topic, tok, q, status, code in cases:
            st, _, body = post(d, topic, "x", tok, q)
            self.assertEqual((st, body["error"]["code"]), (status, code), (topic, tok, q, body))
        st, _, body = d.http_json("POST", "/topics/chat.a", b"x",
                                  {"Authorization": "Basic " + T_WRITER})
        self.assertEqual((st, body["error"]["code"]), (401, "unauthorized"), body)
        st, _, body = post(d, "chat.a", "ok", T_WRITER)
        self.assertEqual(st, 200, body)
        # history needs the subscribe right
        for tok, status in ((None, 403), (T_WRITER, 403), (T_BAD, 401), (T_READER, 200)):
            st, _, body = history(d, "chat.a", tok)
            self.assertEqual(st, status, (tok and tok[:6], body))
            if status != 200:
                self.assertEqual(body["error"]["code"],
                                 "unauthorized" if status == 401 else "forbidden")
        st, _, body = history(d, "chat.a", T_READER)
        self.assertEqual([m["data"] for m in body["messages"]], ["ok"])
        self.assertEqual(history(d, "chat.a", None)[0], 403)

    def test_admin_endpoint(self):
        d = self.wsqd
        self.assertEqual(post(d, "chat.a", "to purge", T_WRITER)[0], 200)
        path = "/admin/purge?topic=chat.a&all=true"
        for tok, status, code in ((None, 401, "unauthorized"), (T_BAD, 401, "unauthorized"),
                                  (T_READER, 403, "forbidden"), (T_WRITER, 403, "forbidden")):
            st, _, body = d.http_json("POST", path, headers=s.bearer(tok) if tok else None)
            self.assertEqual((st, body["error"]["code"]), (status, code), (tok, body))
        # nothing was purged by the refused requests
        self.assertEqual(wait_history(d, "chat.a", 1), ["to purge"])
        st, _, body = d.http_json("POST", path, headers=s.bearer(T_OPS))
        self.assertEqual((st, body.get("removed")), (200, 1), body)
        # whoami, like every /admin/ endpoint, needs admin: it names the pid and the data path
        for tok, status, code in ((None, 401, "unauthorized"), (T_READER, 403, "forbidden")):
            st, _, body = d.http_json("GET", "/admin/whoami",
                                      headers=s.bearer(tok) if tok else None)
            self.assertEqual((st, body["error"]["code"]), (status, code), body)
        st, _, body = d.http_json("GET", "/admin/whoami", headers=s.bearer(T_OPS))
        self.assertEqual((st, body["identity"], body["admin"]), (200, "ops", True), body)

    def test_logs_name_identities_never_tokens(self):
        d = self.wsqd

        async def go():
            a = await raw(d, "chat.a", T_READER)                      # ?token=
            b = await raw(d, "chat.a", extra_headers=s.bearer(T_WRITER))
            c = await v1(d)
            await h.send_json(c, {"op": "auth", "token": T_BOTH, "ref": 1})
            await h.expect_op(c, "ok")
            await h.send_json(c, {"op": "auth", "token": T_BAD, "ref": 2})
            await s.expect_err(c, "unauthorized", 2)
            await s.refused_status(raw(d, "chat.a", T_BAD))
            await s.refused_status(raw(d, "chat.a", extra_headers=s.bearer(T_BAD + "x")))
            for ws in (a, b, c):
                await ws.close()
        h.run(go())
        post(d, "chat.a", "x", query="?token=" + T_WRITER)
        post(d, "chat.a", "x", query="?token=" + T_BAD + "q")
        d.http("GET", "/admin/whoami?token=" + T_OPS)
        d.wait_log(r"disconnect sid=\d+ peer=\S*127\.0\.0\.1 identity=reader code=1000")
        log = d.log()
        self.assertRegex(log, r"connect sid=\d+ peer=\S*127\.0\.0\.1 proto=raw identity=reader "
                              r"topic=chat\.a")
        self.assertRegex(log, r"connect sid=\d+ peer=\S*127\.0\.0\.1 proto=raw identity=writer")
        self.assertRegex(log, r"connect sid=\d+ peer=\S*127\.0\.0\.1 proto=wsq\.v1 "
                              r"identity=anonymous")
        d.stop()
        s.assert_secrets_not_logged(self, d, ALL_TOKENS + [T_BAD + "x", T_BAD + "q"])


# -- JWTs ----------------------------------------------------------------------------------------

class Jwt(h.WsqdTestCase):
    EXTRA_YAML = s.auth_yaml([s.token_yaml("ops", T_OPS, publish=[">"], subscribe=[">"],
                                           admin=True)],
                             jwt={"secret": JWT_SECRET})

    def jwt(self, sub="alice", **kw):
        return s.mint_jwt(JWT_SECRET, s.claims(sub, **kw))

    def test_rights_come_from_the_claims(self):
        d = self.wsqd
        pub = self.jwt("pubber", pub=["chat.>"])
        sub = self.jwt("subber", subscribe=["chat.>"])
        both = self.jwt("both", pub=["chat.>"], subscribe=["chat.>"])
        nothing = self.jwt("nobody")           # no "wsq" claim: no rights at all
        adm = self.jwt("root", admin=True)

        async def go():
            self.assertEqual(await s.refused_status(raw(d, "chat.a", nothing)), 403)
            self.assertEqual(await s.refused_status(raw(d, "other.a", both)), 403)
            rd = await raw(d, "chat.a", sub)
            wr = await raw(d, "chat.a", extra_headers=s.bearer(pub))
            await wr.send("jwt raw")
            self.assertEqual(await h.recv(rd), "jwt raw")
            await rd.send("subber may not publish")
            await s.expect_close(rd, 4003, "not allowed to publish to this topic")
            ws = await v1(d)
            await h.send_json(ws, {"op": "auth", "token": both, "ref": "a"})
            self.assertEqual((await h.expect_op(ws, "ok"))["ref"], "a")
            await h.pub_confirmed(ws, "chat.b", "jwt v1", 1)
            await h.send_json(ws, {"op": "pub", "topic": "x.b", "data": "no", "ref": 2})
            await s.expect_err(ws, "forbidden", 2)
            await wr.close()
            await ws.close()
        h.run(go())
        self.assertEqual(post(d, "chat.c", "jwt http", pub)[0], 200)
        self.assertEqual(post(d, "chat.c", "no", sub)[0], 403)
        st, _, body = d.http_json("GET", "/admin/whoami", headers=s.bearer(adm))
        self.assertEqual((st, body["identity"], body["admin"]), (200, "root", True), body)
        purge = "/admin/purge?topic=chat.c&all=true"
        st, _, body = d.http_json("POST", purge, headers=s.bearer(both))
        self.assertEqual((st, body["error"]["code"]), (403, "forbidden"), body)
        st, _, body = d.http_json("POST", purge, headers=s.bearer(adm))
        self.assertEqual((st, body.get("removed")), (200, 1), body)
        d.stop()
        s.assert_secrets_not_logged(self, d, [pub, sub, both, nothing, adm, JWT_SECRET])

    def bad_tokens(self):
        now = int(time.time())
        good = s.claims("mallory", pub=["chat.>"], subscribe=["chat.>"])
        admin_claims = dict(good, wsq={"pub": [">"], "sub": [">"], "admin": True})
        signed = s.mint_jwt(JWT_SECRET, good)
        h64, _, sig = signed.split(".")
        tampered = h64 + "." + s.b64url(json.dumps(admin_claims, separators=(",", ":"))) + "." + sig
        return [
            ("expired", s.mint_jwt(JWT_SECRET, s.claims("m", pub=["chat.>"], exp_in=-120,
                                                        now=now))),
            ("not_yet_valid", s.mint_jwt(JWT_SECRET, s.claims("m", pub=["chat.>"], nbf_in=120,
                                                              now=now))),
            ("bad_signature", tampered),
            ("bad_signature", s.mint_jwt("another-secret-of-at-least-32-bytes!!", good)),
            # the classic alg=none token has an empty signature part: not three non-empty
            # parts, refused before its header is read
            ("malformed", s.mint_jwt(None, good, header={"alg": "none", "typ": "JWT"},
                                     signature="")),
            ("bad_alg", s.mint_jwt(None, good, header={"alg": "none", "typ": "JWT"},
                                   signature=sig)),
            ("bad_alg", s.mint_jwt(JWT_SECRET, good, header={"alg": "HS512", "typ": "JWT"})),
            ("bad_claims", s.mint_jwt(JWT_SECRET, {"exp": now + 600, "wsq": {"pub": [">"]}})),
            ("bad_claims", s.mint_jwt(JWT_SECRET, dict(good, wsq={"publish": ["chat.>"]}))),
        ]

    def test_refused_jwts_move_the_reason_counters(self):
        d = self.wsqd
        bad = self.bad_tokens()
        m0 = d.metrics()
        expected = {}

        async def go():
            ws = await v1(d)
            for i, (reason, tok) in enumerate(bad):
                # raw upgrade (?token=), wsq.v1 upgrade (header), the auth op, HTTP: all refuse
                self.assertEqual(await s.refused_status(raw(d, "chat.a", tok)), 401, reason)
                self.assertEqual(await s.refused_status(v1(d, tok)), 401, reason)
                await h.send_json(ws, {"op": "auth", "token": tok, "ref": i})
                await s.expect_err(ws, "unauthorized", i)
                st, _, body = post(d, "chat.a", "x", tok)
                self.assertEqual((st, body["error"]["code"]), (401, "unauthorized"), reason)
                expected[reason] = expected.get(reason, 0) + 4
            # still anonymous after all of that
            await h.send_json(ws, {"op": "pub", "topic": "chat.a", "data": "x", "ref": "p"})
            await s.expect_err(ws, "forbidden", "p")
            await ws.close()
        h.run(go())
        m1 = d.metrics()
        for reason, n in sorted(expected.items()):
            self.assertEqual(s.auth_failures(m1, reason) - s.auth_failures(m0, reason), n,
                             "wsq_auth_failures_total{reason=%r}" % reason)
        st, _, body = history(d, "chat.a")
        self.assertEqual(st, 404, body)        # nothing was ever published
        d.stop()
        s.assert_secrets_not_logged(self, d, [t for _, t in bad])

    def test_session_closed_when_the_jwt_expires(self):
        """A JWT is accepted up to 30 s (the leeway, jwt.h) past its exp, and a session lives
        exactly as long: it is closed with 4001 once exp + leeway passes, not at once."""
        d = self.wsqd
        now = int(time.time())
        # expired 28 s ago: still inside the leeway, for about 2 more seconds
        short = s.mint_jwt(JWT_SECRET, s.claims("brief", pub=["chat.>"], subscribe=["chat.>"],
                                                exp_in=-28, now=now))
        m0 = d.metrics()

        async def go():
            r = await raw(d, "chat.a", short)
            w = await v1(d)
            await h.send_json(w, {"op": "auth", "token": short, "ref": 1})
            await h.expect_op(w, "ok")
            await h.send_json(w, {"op": "sub", "topic": "chat.b", "ref": 2})
            await h.expect_op(w, "subscribed")
            await s.still_open(w)
            await asyncio.gather(s.expect_close(r, 4001, "token expired", timeout=8),
                                 s.expect_close(w, 4001, "token expired", timeout=8))
            # not before exp + leeway (second resolution), not much after it
            self.assertGreaterEqual(time.time(), now - 28 + 30 - 0.01)
            self.assertLess(time.time(), now + 2 + 6 * h.SLOW)
        h.run(go())
        m1 = d.metrics()
        self.assertEqual(s.auth_failures(m1, "expired") - s.auth_failures(m0, "expired"), 2)

        # beyond the leeway the token is refused at the upgrade
        async def again():
            with self.assertRaises(websockets.exceptions.InvalidStatusCode) as e:
                await raw(d, "chat.a", short)
            self.assertEqual(e.exception.status_code, 401)
        h.run(again())
        d.wait_log(r"disconnect sid=\d+ peer=\S+ identity=brief code=4001 reason=\"token expired\"")

    def test_auth_op_with_a_fresh_jwt_keeps_the_session(self):
        """PROTOCOL.md: the auth op replaces the connection's identity, so a client can renew
        its JWT before exp instead of reconnecting."""
        d = self.wsqd
        now = int(time.time())
        short = s.mint_jwt(JWT_SECRET, s.claims("renewer", pub=["chat.>"], subscribe=["chat.>"],
                                                exp_in=2, now=now))
        fresh = s.mint_jwt(JWT_SECRET, s.claims("renewer", pub=["chat.>"], subscribe=["chat.>"],
                                                exp_in=3600))

        async def go():
            ws = await v1(d, short)
            await h.send_json(ws, {"op": "sub", "topic": "chat.renew", "ref": 1})
            await h.expect_op(ws, "subscribed")
            await h.send_json(ws, {"op": "auth", "token": fresh, "ref": 2})
            self.assertEqual((await h.expect_op(ws, "ok"))["ref"], 2)
            await asyncio.sleep(max(0.0, now + 2 - time.time()) + 1.0)   # past the first exp
            await s.still_open(ws)
            await h.pub_confirmed(ws, "chat.renew", "after renewal", 3)
            self.assertEqual((await h.expect_op(ws, "msg"))["data"], "after renewal")
            await ws.close()
        h.run(go())
        self.assertNotRegex(d.log(), r"identity=renewer code=4001")


ISS = "https://auth.example.com"
AUD = "wsq"


class JwtIssuerAudience(h.WsqdTestCase):
    EXTRA_YAML = s.auth_yaml(jwt={"secret": JWT_SECRET, "issuer": ISS, "audience": AUD})

    def test_issuer_and_audience(self):
        d = self.wsqd
        rights = dict(pub=["chat.>"])
        good = [s.mint_jwt(JWT_SECRET, s.claims("a", iss=ISS, aud=AUD, **rights)),
                s.mint_jwt(JWT_SECRET, s.claims("b", iss=ISS, aud=["other", AUD], **rights))]
        bad = [("bad_issuer", s.mint_jwt(JWT_SECRET, s.claims("c", iss=ISS + "/", aud=AUD,
                                                              **rights))),
               ("bad_issuer", s.mint_jwt(JWT_SECRET, s.claims("d", aud=AUD, **rights))),
               ("bad_audience", s.mint_jwt(JWT_SECRET, s.claims("e", iss=ISS, aud="wsq2",
                                                                **rights))),
               ("bad_audience", s.mint_jwt(JWT_SECRET, s.claims("f", iss=ISS, aud=["x"],
                                                                **rights))),
               ("bad_audience", s.mint_jwt(JWT_SECRET, s.claims("g", iss=ISS, **rights)))]
        for tok in good:
            st, _, body = post(d, "chat.a", "ok", tok)
            self.assertEqual(st, 200, body)
        m0 = d.metrics()
        for reason, tok in bad:
            st, _, body = post(d, "chat.a", "no", tok)
            self.assertEqual((st, body["error"]["code"]), (401, "unauthorized"), reason)
            self.assertEqual(h.run(s.refused_status(raw(d, "chat.a", tok))), 401, reason)
        m1 = d.metrics()
        self.assertEqual(s.auth_failures(m1, "bad_issuer") - s.auth_failures(m0, "bad_issuer"), 4)
        self.assertEqual(s.auth_failures(m1, "bad_audience")
                         - s.auth_failures(m0, "bad_audience"), 6)


class JwtSecretFile(h.WsqdTestCase):
    START = False

    def test_secret_from_a_file(self):
        secret = os.urandom(32).hex()
        d = self.new_wsqd(s.auth_yaml(jwt={"secret_file": "jwt.secret"}))
        with open(os.path.join(d.dir, "jwt.secret"), "w") as f:
            f.write(secret + "\n")          # a trailing newline is not part of the secret
        d.start()
        tok = s.mint_jwt(secret, s.claims("filed", pub=["chat.>"]))
        st, _, body = post(d, "chat.a", "signed with the file's secret", tok)
        self.assertEqual(st, 200, body)
        tok_nl = s.mint_jwt(secret + "\n", s.claims("filed", pub=["chat.>"]))
        st, _, body = post(d, "chat.a", "x", tok_nl)
        self.assertEqual(st, 401, body)
        d.stop()
        s.assert_secrets_not_logged(self, d, [secret, tok, tok_nl])


# -- browsers: Origin --------------------------------------------------------------------------

class Origins(h.WsqdTestCase):
    EXTRA_YAML = s.auth_yaml([s.token_yaml("both", T_BOTH, publish=["chat.>"],
                                           subscribe=["chat.>"])],
                             origins=["https://app.example.com", "http://localhost:3000"])

    def test_origin_checked_at_upgrade(self):
        d = self.wsqd
        m0 = d.metrics()

        async def go():
            for origin in ("https://evil.example.com", "http://app.example.com",
                           "https://app.example.com:8443", "https://app.example.com.evil.net",
                           "null"):
                self.assertEqual(await s.refused_status(
                    raw(d, "chat.a", T_BOTH, origin=origin)), 403, origin)
                self.assertEqual(await s.refused_status(
                    v1(d, T_BOTH, origin=origin)), 403, origin)
            # an allowed origin (case does not matter in the host) works end to end
            a = await raw(d, "chat.a", T_BOTH, origin="https://app.example.com")
            b = await v1(d, T_BOTH, origin="http://LOCALHOST:3000")
            await h.send_json(b, {"op": "sub", "topic": "chat.a", "ref": 1})
            await h.expect_op(b, "subscribed")
            await a.send("from the app")
            msg = await h.expect_op(b, "msg")
            self.assertEqual(msg["data"], "from the app")
            # a client without Origin is not a browser: the token decides
            c = await raw(d, "chat.a", T_BOTH)
            for ws in (a, b, c):
                await ws.close()
        h.run(go())
        u = s.upgrade(d, "/topics/chat.a", dict(s.bearer(T_BOTH),
                                                Origin="https://evil.example.com"))
        self.assertEqual((u.status, u.error_code()), (403, "forbidden"))
        self.assertIn("origin", u.json()["error"]["message"])
        m1 = d.metrics()
        self.assertEqual(s.auth_failures(m1, "origin") - s.auth_failures(m0, "origin"), 11)


# -- startup warning -----------------------------------------------------------------------------

class AnonymousWarning(h.WsqdTestCase):
    START = False
    ANY = "listeners:\n  - address: 0.0.0.0\n    port: 0\n"
    WARN = r"warn\s+security .*ANONYMOUS ACCESS IS ENABLED ON A NON-LOOPBACK LISTENER"

    def test_warns_for_anonymous_rights_on_a_public_listener(self):
        d = self.new_wsqd(s.auth_yaml(anonymous=([], ["public.>"], False)),
                          listeners_yaml=self.ANY).start()
        d.wait_log(self.WARN)

    def test_silent_without_anonymous_rights_or_on_loopback(self):
        d = self.new_wsqd(s.auth_yaml([s.token_yaml("ops", T_OPS, subscribe=[">"])]),
                          listeners_yaml=self.ANY).start()
        e = self.new_wsqd(s.auth_yaml(anonymous=([">"], [">"], True))).start()
        for x in (d, e):
            x.wait_log(r"\bready\b")
            self.assertNotRegex(x.log(), r"ANONYMOUS ACCESS")


if __name__ == "__main__":
    h.main()
