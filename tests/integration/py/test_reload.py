#!/usr/bin/python3
"""SIGHUP reloads against the real wsqd (OPERATIONS.md "Reloading the configuration"):

- a reload that grants: a new token works at once, without a restart, and the connections
  already open stay up;
- reloads that revoke: a removed token's connections are closed with 4001 "credentials
  revoked" (also when JWTs are switched off), a narrowed subscribe pattern closes the
  subscriptions it no longer covers with 4003 "rights revoked" and leaves the others alone;
- bad reloads (a YAML syntax error, an unknown key, a plaintext token) are refused with
  `reload status=refused error="FILE:LINE:COL: ..."`, and the old config stays in force;
- limits, retention and the log level/format change on reload; listener changes wait for a
  restart.
"""

import asyncio
import json
import os
import re
import signal
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402
import sechelp as s  # noqa: E402


T_ALICE = s.new_token()
T_BOB = s.new_token()
T_CAROL = s.new_token()
T_OPS = s.new_token()
T_NEW = s.new_token()
JWT_SECRET = "reload-secret-" + os.urandom(16).hex()

ALICE = s.token_yaml("alice", T_ALICE, publish=["chat.>"], subscribe=["chat.>"])
BOB = s.token_yaml("bob", T_BOB, publish=["chat.>"], subscribe=["chat.>"])
CAROL = s.token_yaml("carol", T_CAROL, publish=[], subscribe=["chat.>"])
CAROL_NARROW = s.token_yaml("carol", T_CAROL, publish=[], subscribe=["chat.public.>"])
OPS = s.token_yaml("ops", T_OPS, publish=[">"], subscribe=[">"], admin=True)


def v1(d, token=None, path="/"):
    kw = {"extra_headers": s.bearer(token)} if token else {}
    return h.connect_v1(d, path, **kw)


def raw(d, topic, token):
    return h.connect_raw(d, "/topics/%s?token=%s" % (topic, token))


async def sub(ws, topic, ref, **extra):
    await h.send_json(ws, dict({"op": "sub", "topic": topic, "ref": ref}, **extra))
    got = await h.expect_op(ws, "subscribed")
    assert got["ref"] == ref, got


def post(d, topic, body, token):
    hdrs = {"Content-Type": "text/plain"}
    hdrs.update(s.bearer(token))
    return d.http_json("POST", "/topics/" + topic, body.encode(), hdrs)


class Grants(h.WsqdTestCase):
    EXTRA_YAML = s.auth_yaml([ALICE, OPS])

    def test_new_token_works_and_open_connections_stay(self):
        d = self.wsqd
        pid = d.pid
        m0 = d.metrics()

        async def go():
            a = await v1(d, T_ALICE)
            await sub(a, "chat.room", 1)
            r = await raw(d, "chat.room", T_ALICE)
            self.assertEqual(await s.refused_status(v1(d, T_NEW)), 401)
            line = s.reload(d, s.auth_yaml([ALICE, OPS, s.token_yaml(
                "newcomer", T_NEW, publish=["chat.>"], subscribe=[])]))
            self.assertIn("tokens=3", line)
            # the new token works at once, over every path
            n = await v1(d, T_NEW)
            ok = await h.pub_confirmed(n, "chat.room", "hello from the newcomer", 1)
            # and the connections opened before the reload are still up and receiving
            msg = await h.expect_op(a, "msg")
            self.assertEqual((msg["seq"], msg["data"]), (ok["seq"], "hello from the newcomer"))
            self.assertEqual(await h.recv(r), "hello from the newcomer")
            await s.still_open(a)
            await h.pub_confirmed(a, "chat.room", "alice still publishes", 2)
            self.assertEqual(post(d, "chat.room", "newcomer over http", T_NEW)[0], 200)
            for ws in (a, r, n):
                await ws.close()
        h.run(go())
        self.assertEqual(d.pid, pid)
        self.assertTrue(d.running())
        m1 = d.metrics()
        self.assertEqual(m1["wsq_reloads_total"] - m0["wsq_reloads_total"], 1)
        self.assertEqual(m1["wsq_reload_failures_total"], 0)
        self.assertNotRegex(d.log(), r"disconnect .*identity=alice code=4")


class Revokes(h.WsqdTestCase):
    EXTRA_YAML = s.auth_yaml([ALICE, BOB, CAROL, OPS], jwt={"secret": JWT_SECRET})

    def test_removed_token_closed_4001(self):
        d = self.wsqd
        m0 = d.metrics()

        async def go():
            a_sub = await v1(d, T_ALICE)
            await sub(a_sub, "chat.room", 1)
            a_idle = await v1(d)                       # anonymous, then the auth op
            await h.send_json(a_idle, {"op": "auth", "token": T_ALICE, "ref": 1})
            await h.expect_op(a_idle, "ok")
            a_raw = await raw(d, "chat.room", T_ALICE)
            b = await v1(d, T_BOB)
            await sub(b, "chat.room", 1)
            s.reload(d, s.auth_yaml([BOB, CAROL, OPS], jwt={"secret": JWT_SECRET}))
            await asyncio.gather(
                s.expect_close(a_sub, 4001, "credentials revoked"),
                s.expect_close(a_idle, 4001, "credentials revoked"),
                s.expect_close(a_raw, 4001, "credentials revoked"))
            # bob is untouched
            await s.still_open(b)
            await h.pub_confirmed(b, "chat.room", "bob goes on", 2)
            self.assertEqual((await h.expect_op(b, "msg"))["data"], "bob goes on")
            # alice's token is refused from now on, everywhere
            self.assertEqual(await s.refused_status(v1(d, T_ALICE)), 401)
            self.assertEqual(await s.refused_status(raw(d, "chat.room", T_ALICE)), 401)
            await h.send_json(b, {"op": "auth", "token": T_ALICE, "ref": "x"})
            await s.expect_err(b, "unauthorized", "x")
            await b.close()
        h.run(go())
        st, _, body = post(d, "chat.room", "x", T_ALICE)
        self.assertEqual((st, body["error"]["code"]), (401, "unauthorized"))
        m1 = d.metrics()
        self.assertEqual(s.auth_failures(m1, "revoked") - s.auth_failures(m0, "revoked"), 3)
        self.assertEqual(len(re.findall(r"revoked sid=\d+ identity=alice reason=credentials",
                                        d.log())), 3)
        d.wait_log(r"disconnect sid=\d+ peer=\S+ identity=alice code=4001 "
                   r"reason=\"credentials revoked\"")

    def test_narrowed_subscribe_pattern_closes_4003(self):
        d = self.wsqd

        async def go():
            priv = await v1(d, T_CAROL)
            await sub(priv, "chat.private.x", 1)
            both = await v1(d, T_CAROL)
            await sub(both, "chat.public.y", 1)
            await sub(both, "chat.private.y", 2)
            pub_only = await v1(d, T_CAROL)
            await sub(pub_only, "chat.public.z", 1)
            idle = await v1(d, T_CAROL)                # no subscription: uses no right
            raw_priv = await raw(d, "chat.private.r", T_CAROL)
            raw_pub = await raw(d, "chat.public.r", T_CAROL)
            s.reload(d, s.auth_yaml([ALICE, BOB, CAROL_NARROW, OPS],
                                    jwt={"secret": JWT_SECRET}))
            await asyncio.gather(
                s.expect_close(priv, 4003, "rights revoked"),
                s.expect_close(both, 4003, "rights revoked"),
                s.expect_close(raw_priv, 4003, "rights revoked"))
            # subscriptions still covered, and connections using no revoked right, stay
            o = await v1(d, T_OPS)
            await h.pub_confirmed(o, "chat.public.z", "still covered", 1)
            self.assertEqual((await h.expect_op(pub_only, "msg"))["data"], "still covered")
            await h.pub_confirmed(o, "chat.public.r", "raw still covered", 2)
            self.assertEqual(await h.recv(raw_pub), "raw still covered")
            await s.still_open(idle)
            # the narrowed rights apply to new subscriptions
            await h.send_json(idle, {"op": "sub", "topic": "chat.private.x", "ref": 9})
            await s.expect_err(idle, "forbidden", 9)
            await sub(idle, "chat.public.x", 10)
            self.assertEqual(await s.refused_status(raw(d, "chat.private.r", T_CAROL)), 403)
            for ws in (pub_only, idle, raw_pub, o):
                await ws.close()
        h.run(go())
        self.assertEqual(len(re.findall(r"revoked sid=\d+ identity=carol reason=subscribe "
                                        r"topic=chat\.private\.", d.log())), 3)

    def test_narrowed_rights_narrow_a_pattern(self):
        """A pattern reads the topics its identity may read: a reload that narrows the rights
        leaves the topics out from then on (the connection stays), one that widens them adds
        topics."""
        d = self.wsqd

        async def go():
            pat = await v1(d, T_CAROL)
            await sub(pat, "chat.>", 1)
            o = await v1(d, T_OPS)
            await h.pub_confirmed(o, "chat.private.a", "p1", 1)
            await h.pub_confirmed(o, "chat.public.a", "q1", 2)
            got = {(await h.expect_op(pat, "msg"))["data"] for _ in range(2)}
            self.assertEqual(got, {"p1", "q1"})
            s.reload(d, s.auth_yaml([ALICE, BOB, CAROL_NARROW, OPS],
                                    jwt={"secret": JWT_SECRET}))
            await h.pub_confirmed(o, "chat.private.a", "p2", 3)
            await h.pub_confirmed(o, "chat.private.new", "p3", 4)
            await h.pub_confirmed(o, "chat.public.a", "q2", 5)
            m = await h.expect_op(pat, "msg")
            self.assertEqual((m["topic"], m["data"]), ("chat.public.a", "q2"))
            s.reload(d, s.auth_yaml([ALICE, BOB, CAROL, OPS], jwt={"secret": JWT_SECRET}))
            await h.pub_confirmed(o, "chat.private.a", "p4", 6)
            m = await h.expect_op(pat, "msg")
            self.assertEqual((m["topic"], m["data"]), ("chat.private.a", "p4"))
            await s.still_open(pat)
            for ws in (pat, o):
                await ws.close()
        h.run(go())

    def test_anonymous_rights_withdrawn(self):
        d = self.new_wsqd(s.auth_yaml([OPS], anonymous=([], ["news.>"], False))).start()

        async def go():
            a = await v1(d)
            await sub(a, "news.today", 1)
            r = await h.connect_raw(d, "/topics/news.raw")
            s.reload(d, s.auth_yaml([OPS]))
            await s.expect_close(a, 4003, "rights revoked")
            await s.expect_close(r, 4003, "rights revoked")
            self.assertEqual(await s.refused_status(h.connect_raw(d, "/topics/news.raw")), 403)
        h.run(go())

    def test_jwts_switched_off_close_jwt_sessions(self):
        d = self.wsqd
        tok = s.mint_jwt(JWT_SECRET, s.claims("jay", pub=["chat.>"], subscribe=["chat.>"]))

        async def go():
            j = await v1(d, tok)
            await sub(j, "chat.room", 1)
            jr = await raw(d, "chat.room", tok)
            b = await v1(d, T_BOB)
            s.reload(d, s.auth_yaml([ALICE, BOB, CAROL, OPS]))      # no auth.jwt
            await s.expect_close(j, 4001, "credentials revoked")
            await s.expect_close(jr, 4001, "credentials revoked")
            await s.still_open(b)
            self.assertEqual(await s.refused_status(v1(d, tok)), 401)
            await b.close()
        h.run(go())
        d.stop()
        s.assert_secrets_not_logged(self, d, [tok, JWT_SECRET, T_ALICE, T_BOB, T_CAROL, T_OPS])

    def test_rotated_token_hash_closes_sessions_of_the_old_token(self):
        """An operator rotates a leaked token: same name, new sha256. The old token must stop
        working, also for the sessions it already opened."""
        d = self.wsqd
        rotated = s.new_token()

        async def go():
            old = await v1(d, T_BOB)
            await sub(old, "chat.room", 1)
            s.reload(d, s.auth_yaml([ALICE, s.token_yaml("bob", rotated, publish=["chat.>"],
                                                         subscribe=["chat.>"]), CAROL, OPS],
                                    jwt={"secret": JWT_SECRET}))
            self.assertEqual(await s.refused_status(v1(d, T_BOB)), 401)
            n = await v1(d, rotated)
            await s.still_open(n)
            await n.close()
            try:
                await s.expect_close(old, 4001, "credentials revoked", timeout=2)
            except asyncio.TimeoutError:
                await s.still_open(old)
                await h.send_json(old, {"op": "sub", "topic": "chat.other", "ref": 2})
                got = await h.recv_json(old)
                self.fail("a session opened with bob's old token is still open 2 s after the "
                          "reload that replaced bob's sha256 (a sub on it answers %r)" % got)
        h.run(go())


class BadReloads(h.WsqdTestCase):
    EXTRA_YAML = s.auth_yaml([ALICE, OPS]) + "limits:\n  max_message_size: 1KiB\n"

    def refused(self, d, text, line, col):
        before_ok = d.metrics()["wsq_reloads_total"]
        got = s.reload(d, raw_text=text, expect="refused")
        self.assertIn('reload status=refused error="%s:%d:%d: ' % (d.conf, line, col), got)
        self.assertIn("the previous config stays in force", got)
        self.assertEqual(d.metrics()["wsq_reloads_total"], before_ok)
        return got

    def test_refused_reloads_keep_the_old_config(self):
        d = self.wsqd
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        ws = loop.run_until_complete(v1(d, T_ALICE))
        m0 = d.metrics()
        granting = s.auth_yaml([BOB, OPS])       # would remove alice and add bob
        good = h.merge_yaml(d.config_text, granting + "limits:\n  max_message_size: 4KiB\n")

        # 1. a YAML syntax error ("mapping values are not allowed" at the second colon)
        lines = good.splitlines(True)
        i = next(n for n, ln in enumerate(lines) if ln.startswith("  format: "))
        lines[i] = "  format: text: oops\n"
        self.refused(d, "".join(lines), i + 1, len("  format: text:"))
        self.old_config_in_force_on(loop, d, ws)

        # 2. an unknown key (a typo): named with its line and column
        text = h.merge_yaml(d.config_text, granting +
                             "limits:\n  max_message_size: 4KiB\n  max_conections: 5\n")
        line = text.splitlines().index("  max_conections: 5") + 1
        got = self.refused(d, text, line, 3)
        self.assertIn("limits.max_conections: unknown key", got)
        self.old_config_in_force_on(loop, d, ws)

        # 3. a plaintext token instead of its hash: refused, and the token is not echoed
        text = h.merge_yaml(d.config_text, "auth:\n  tokens:\n    - name: bob\n"
                                            "      token: %s\n" % T_BOB)
        line = text.splitlines().index("      token: %s" % T_BOB) + 1
        got = self.refused(d, text, line, 7)
        self.assertIn("plaintext tokens are not accepted", got)
        self.old_config_in_force_on(loop, d, ws)

        m1 = d.metrics()
        self.assertEqual(m1["wsq_reload_failures_total"] - m0["wsq_reload_failures_total"], 3)
        self.assertEqual(m1["wsq_reloads_total"], m0["wsq_reloads_total"])

        # 4. the file fixed: accepted; now bob is in and alice is out (her session closed)
        s.reload(d, raw_text=good)
        loop.run_until_complete(s.expect_close(ws, 4001, "credentials revoked"))
        self.assertEqual(post(d, "chat.room", "y" * 2048, T_BOB)[0], 200)
        self.assertEqual(post(d, "chat.room", "x", T_ALICE)[0], 401)
        self.assertEqual(d.metrics()["wsq_reloads_total"], m0["wsq_reloads_total"] + 1)
        d.stop()
        s.assert_secrets_not_logged(self, d, [T_ALICE, T_BOB, T_OPS])

    def old_config_in_force_on(self, loop, d, ws):
        async def go():
            await s.still_open(ws)
            await h.pub_confirmed(ws, "chat.room", "x" * 1024, "keep")
            await h.send_json(ws, {"op": "pub", "topic": "chat.room", "data": "x" * 1025,
                                   "ref": "big"})
            await s.expect_err(ws, "too_large", "big")
            n = await v1(d, T_ALICE)
            await h.pub_confirmed(n, "chat.room", "new connection, old token", 1)
            await n.close()
            self.assertEqual(await s.refused_status(v1(d, T_BOB)), 401)
        loop.run_until_complete(asyncio.wait_for(go(), 20 * h.SLOW))
        self.assertEqual(post(d, "chat.room", "old token over http", T_ALICE)[0], 200)


class ReloadLimitsRetentionLog(h.WsqdTestCase):
    EXTRA_YAML = "limits:\n  max_message_size: 1KiB\n  max_subscriptions: 1\n"

    def test_limits_change_on_reload(self):
        d = self.wsqd

        async def go():
            ws = await h.connect_v1(d)
            await sub(ws, "lim.a", 1)
            await h.send_json(ws, {"op": "sub", "topic": "lim.b", "ref": 2})
            await s.expect_err(ws, "limit_exceeded", 2)
            self.assertEqual(d.post("lim.a", "z" * 1500)[0], 413)
            s.reload(d, "limits:\n  max_message_size: 2KiB\n  max_subscriptions: 2\n")
            # the same connection gets the new limits
            await sub(ws, "lim.b", 3)
            await h.pub_confirmed(ws, "lim.c", "z" * 1500, 4)
            self.assertEqual(d.post("lim.a", "z" * 1500)[0], 200)
            await ws.close()
        h.run(go())

    def test_retention_changes_on_reload(self):
        d = self.wsqd
        for i in range(5):
            self.assertEqual(d.post("ret.a", "m%d" % i)[0], 200)
        s.reload(d, "retention:\n  topics:\n    - pattern: \"ret.>\"\n      max_messages: 2\n")
        self.assertEqual(d.post("ret.a", "m5")[0], 200)
        deadline = time.monotonic() + 5 * h.SLOW
        while True:
            st, _, body = d.history("ret.a", "?limit=100")
            got = [m["data"] for m in body["messages"]]
            if got == ["m4", "m5"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(got, ["m4", "m5"])
        self.assertEqual(body["first_seq"], 5)

    def test_log_level_and_format_change_on_reload(self):
        d = self.wsqd
        tok = s.new_token()
        # at level warn the "reload status=ok" line (info) is not written: watch the metric
        s.write_config(d, "log:\n  level: warn\n  format: text\n")
        os.kill(d.pid, signal.SIGHUP)
        s.wait_metric(d, lambda m: m["wsq_reloads_total"] == 1, "wsq_reloads_total == 1")
        mark = len(d.log())

        async def one(path="/"):
            ws = await h.connect_v1(d, path)
            await s.still_open(ws)
            await ws.close()
        h.run(one())
        time.sleep(0.2)
        self.assertNotRegex(d.log()[mark:], r"\binfo\s+(connect|disconnect)\b")
        # back to info, as JSON lines; a token in the query is used meanwhile
        auth = s.auth_yaml([s.token_yaml("jason", tok, subscribe=[">"])],
                           anonymous=([">"], [">"], True))
        s.reload(d, auth + "log:\n  level: info\n  format: json\n")
        mark = len(d.log())
        h.run(one("/?token=" + tok))
        d.wait_log(r'"event":"disconnect"')
        events = []
        for ln in d.log()[mark:].splitlines():
            if ln.startswith("---- harness"):
                continue
            obj = json.loads(ln)              # every line is one JSON object
            self.assertIn(obj["level"], ("error", "warn", "info", "debug"))
            events.append(obj)
        conn = [e for e in events if e["event"] == "connect"]
        self.assertEqual(len(conn), 1, events)
        self.assertEqual((conn[0]["identity"], conn[0]["proto"]), ("jason", "wsq.v1"))
        self.assertIn("peer", conn[0])
        disc = [e for e in events if e["event"] == "disconnect"]
        self.assertEqual((disc[0]["identity"], disc[0]["code"]), ("jason", "1000"))
        d.stop()
        s.assert_secrets_not_logged(self, d, [tok])

    def test_listener_changes_wait_for_a_restart(self):
        d = self.wsqd
        text = d.config_text.replace("    port: 0\n", "    port: 1\n")
        self.assertNotEqual(text, d.config_text)
        s.reload(d, raw_text=text)
        d.wait_log(r"warn\s+reload msg=\"listeners \(TLS files included\) and storage changes take "
                   r"effect at the next "
                   r"restart\"")
        st, _, _ = d.http_json("GET", "/healthz")      # still on the old port
        self.assertEqual(st, 200)

    def test_two_sighups_in_a_row(self):
        # both are applied (or coalesced into one); wsqd keeps running with the new file
        d = self.wsqd
        s.write_config(d, "limits:\n  max_message_size: 3KiB\n")
        os.kill(d.pid, signal.SIGHUP)
        time.sleep(0.05)
        os.kill(d.pid, signal.SIGHUP)
        s.wait_metric(d, lambda m: m["wsq_reloads_total"] >= 1, "a reload")
        self.assertTrue(d.running())
        self.assertEqual(d.post("lim.a", "z" * 3000)[0], 200)


if __name__ == "__main__":
    h.main()
