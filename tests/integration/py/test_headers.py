#!/usr/bin/python3
"""Message headers (issue 13, docs/PROTOCOL.md "pub" and "msg"): string keys and values that a
wsq.v1 publish carries and every read hands back byte-exact, in their order.

- HTTP POST with Wsq-Header-<key> lines (keys in lower case), and its refusals;
- round trips over wsq.v1 (live, from the store, redelivered after a resume, to several
  subscribers at once: the shared encoding of the tail cache), HTTP history, a restart, and
  wsqctl export -> import (offline and through the broker), peek --json; text and binary
  payloads, a payload stored in parts (100 KB), Unicode, escapes and a NUL in values;
- raw mode delivers the payload alone, byte-exact;
- {} is no headers; refusals, each storing nothing: not an object or a value not a string
  (bad_type), an empty key or a control character in a key (bad_request; a NUL in a key is
  bad_json, the JSON reader's refusal), more headers than
  limits.max_message_headers or more bytes than limits.max_message_headers_size (too_large,
  the message naming the limit), over wsq.v1 and /admin/import.

Run: python3 test_headers.py WSQD WSQCTL.
"""

import base64
import http.client
import json
import os
import sys
import tempfile

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402

HDRS = {"content-type": "application/json", "trace-id": "4bf92f3577b34da6",
        "Ünïcødé-kéy": "välüe ✓", "quote\"back\\slash": "line\nbreak\ttab",
        "nul": "a\u0000b", "empty": ""}


def pairs(obj_text):
    """The members of a JSON object text, in order: [(k, v)]."""
    return json.loads(obj_text, object_pairs_hook=lambda kv: kv)


def frames_in_order(raw_frames):
    """wsq.v1 frames (str) -> [dict], keeping headers as ordered pairs under "headers_pairs"."""
    out = []
    for f in raw_frames:
        obj = json.loads(f)
        if "headers" in obj:
            obj["headers_pairs"] = [kv for kv in json.loads(
                f, object_pairs_hook=lambda kv: kv) if kv[0] == "headers"][0][1]
        out.append(obj)
    return out


class Headers(h.WsqdTestCase):

    def publish_all(self, msgs):
        """[(topic, data, binary, headers or None)] over one wsq.v1 connection -> [ok]."""
        async def go():
            ws = await h.connect_v1(self.wsqd)
            oks = []
            for i, (topic, data, binary, hdrs) in enumerate(msgs):
                m = {"op": "pub", "topic": topic, "ref": i}
                if binary:
                    m["data"], m["enc"] = base64.b64encode(data).decode(), "base64"
                else:
                    m["data"] = data
                if hdrs is not None:
                    m["headers"] = hdrs
                await h.send_json(ws, m)
                ok = await h.recv_json(ws, 10)
                self.assertEqual((ok["op"], ok["ref"]), ("ok", i), ok)
                oks.append(ok)
            await ws.close()
            return oks
        return h.run(go())

    def read_v1(self, topic, n, consumer=None, frm="earliest", ack=False, subs=1):
        """n msg frames of topic (raw JSON text) for each of `subs` subscribers at once."""
        async def go():
            conns = []
            for i in range(subs):
                ws = await h.connect_v1(self.wsqd)
                m = {"op": "sub", "topic": topic, "from": frm, "ref": "s"}
                if consumer:
                    m["consumer"] = consumer
                await h.send_json(ws, m)
                await h.expect_op(ws, "subscribed")
                conns.append(ws)
            got = []
            for ws in conns:
                frames = []
                while len(frames) < n:
                    f = await h.recv(ws, 10)
                    if json.loads(f)["op"] == "msg":
                        frames.append(f)
                        if ack:
                            await h.send_json(ws, {"op": "ack", "topic": topic,
                                                   "seq": json.loads(f)["seq"]})
                got.append(frames)
                await ws.close()
            return got
        return h.run(go())

    def check_msgs(self, frames, expect):
        """frames (raw text) against expect [(data, binary, headers)]: payload and headers
        byte-exact, headers in order."""
        msgs = frames_in_order(frames)
        self.assertEqual(len(msgs), len(expect))
        for m, (data, binary, hdrs) in zip(msgs, expect):
            if binary:
                self.assertEqual((m.get("enc"), base64.b64decode(m["data"])), ("base64", data))
            else:
                self.assertEqual(m["data"], data)
            if hdrs:
                self.assertEqual(m["headers_pairs"], list(hdrs.items()), m)
            else:
                self.assertNotIn("headers", m)

    def test_round_trip_every_read_path(self):
        big = os.urandom(100000)
        msgs = [("hd.t", "text with headers", False, HDRS),
                ("hd.t", b"\x00\x01binary\xff", True, {"k": "v"}),
                ("hd.t", "no headers", False, None),
                ("hd.t", "empty object", False, {}),
                ("hd.t", big, True, {"size": "100000", "part": "parted"}),
                ("hd.t", "after the big one", False, {"z": "last", "a": "order kept"})]
        self.publish_all(msgs)
        expect = [(d, b, hd) for _, d, b, hd in msgs]
        # from the store, by two subscribers at once (the tail cache encodes once for both)
        for frames in self.read_v1("hd.t", len(msgs), subs=2):
            self.check_msgs(frames, expect)
        # a durable consumer: first delivery, then redelivery after a resume (deliveries 2)
        first = self.read_v1("hd.t", len(msgs), consumer="c1")[0]
        self.check_msgs(first, expect)
        again = self.read_v1("hd.t", len(msgs), consumer="c1", frm="resume")[0]
        self.check_msgs(again, expect)
        self.assertTrue(all(json.loads(f).get("deliveries") == 2 for f in again))
        # live: a subscriber from latest gets a new one as it is published
        async def live():
            ws = await h.connect_v1(self.wsqd)
            await h.send_json(ws, {"op": "sub", "topic": "hd.t", "from": "latest", "ref": 1})
            await h.expect_op(ws, "subscribed")
            pub = await h.connect_v1(self.wsqd)
            await h.send_json(pub, {"op": "pub", "topic": "hd.t", "data": "live", "ref": 9,
                                    "headers": {"h1": "v1", "h2": "v2"}})
            await h.expect_op(pub, "ok")
            f = await h.recv(ws, 10)
            await ws.close()
            await pub.close()
            return f
        self.check_msgs([h.run(live())], [("live", False, {"h1": "v1", "h2": "v2"})])
        expect.append(("live", False, {"h1": "v1", "h2": "v2"}))
        # HTTP history: the same frames
        st, _, body = self.wsqd.http("GET", "/topics/hd.t/messages?from=1&limit=100")
        self.assertEqual(st, 200, body)
        page = json.loads(body, object_pairs_hook=dict)
        texts = [json.dumps(m) for m in page["messages"]]
        # (re-serialized by json, which keeps member order)
        self.check_msgs(texts, expect)
        # raw mode: the payload alone
        async def raw():
            ws = await h.connect_raw(self.wsqd, "/topics/hd.t?from=earliest")
            out = [await h.recv(ws, 10) for _ in expect]
            await ws.close()
            return out
        for got, (data, binary, _) in zip(h.run(raw()), expect):
            self.assertEqual(got, data)
        # a restart: stored, not cached
        self.wsqd.restart()
        self.check_msgs(self.read_v1("hd.t", len(expect))[0], expect)

    def test_refusals_store_nothing(self):
        many = {"k%d" % i: "v" for i in range(65)}
        heavy = {"k": "x" * 8192}   # 8193 bytes of key and value
        cases = [("not an object", ["a", "b"], "bad_type"),
                 ("a value not a string", {"k": 1}, "bad_type"),
                 ("an empty key", {"": "v"}, "bad_request"),
                 ("a control character in a key", {"a\nb": "v"}, "bad_request"),
                 ("a NUL in a key", {"a\u0000b": "v"}, "bad_json"),   # (jansson's refusal)
                 ("65 headers", many, "too_large"),
                 ("8193 bytes", heavy, "too_large")]
        async def go():
            ws = await h.connect_v1(self.wsqd)
            out = []
            for i, (_, hdrs, _) in enumerate(cases):
                await h.send_json(ws, {"op": "pub", "topic": "hd.r", "data": "x", "ref": i,
                                       "headers": hdrs})
                out.append(await h.recv_json(ws, 10))
            # at the limits: 64 headers, 8192 bytes
            await h.send_json(ws, {"op": "pub", "topic": "hd.ok", "data": "x", "ref": "a",
                                   "headers": {"k%02d" % i: "v" for i in range(64)}})
            out.append(await h.recv_json(ws, 10))
            await h.send_json(ws, {"op": "pub", "topic": "hd.ok", "data": "x", "ref": "b",
                                   "headers": {"k": "x" * 8191}})
            out.append(await h.recv_json(ws, 10))
            await ws.close()
            return out
        answers = h.run(go())
        for (what, _, code), a in zip(cases, answers):
            with self.subTest(what):
                self.assertEqual((a["op"], a.get("code")), ("err", code), a)
        self.assertIn("65 headers: a message may carry 64 (limits.max_message_headers)",
                      answers[5]["message"])
        self.assertIn("limits.max_message_headers_size", answers[6]["message"])
        self.assertEqual([a["op"] for a in answers[-2:]], ["ok", "ok"], answers[-2:])
        st, _, _ = self.wsqd.http("GET", "/topics/hd.r/messages")
        self.assertEqual(st, 404)   # never created: nothing was stored
        # /admin/import applies the same limits
        line = json.dumps({"topic": "hd.i", "data": "x", "headers": many}) + "\n"
        st, _, body = self.wsqd.http_json("POST", "/admin/import", line.encode())
        self.assertEqual((st, body["error"]["code"]), (413, "too_large"), body)
        self.assertIn("line 1", body["error"]["message"])
        # each limit refusal counted: two over wsq.v1, one import line
        self.assertEqual(self.wsqd.metrics().get(
            'wsq_limit_refusals_total{limit="message_headers"}'), 3)

    def test_configured_limits(self):
        d = self.new_wsqd("limits:\n  max_message_headers: 2\n  max_message_headers_size: 10\n")
        d.start()
        async def go():
            ws = await h.connect_v1(d)
            out = []
            for i, hdrs in enumerate([{"a": "1", "b": "2"}, {"a": "1", "b": "2", "c": "3"},
                                      {"abcde": "12345"}, {"abcde": "123456"}]):
                await h.send_json(ws, {"op": "pub", "topic": "hd.l", "data": "x", "ref": i,
                                       "headers": hdrs})
                out.append(await h.recv_json(ws, 10))
            await ws.close()
            return out
        a = h.run(go())
        self.assertEqual([x["op"] for x in a], ["ok", "err", "ok", "err"], a)
        self.assertIn("3 headers: a message may carry 2 (limits.max_message_headers)",
                      a[1]["message"])
        self.assertIn("headers of 11 bytes", a[3]["message"])
        d0 = self.new_wsqd("limits:\n  max_message_headers: 0\n")
        d0.start()
        async def none():
            ws = await h.connect_v1(d0)
            await h.send_json(ws, {"op": "pub", "topic": "hd.n", "data": "x", "ref": 1,
                                   "headers": {"a": "1"}})
            refused = await h.recv_json(ws, 10)
            await h.send_json(ws, {"op": "pub", "topic": "hd.n", "data": "x", "ref": 2,
                                   "headers": {}})
            ok = await h.recv_json(ws, 10)
            await ws.close()
            return refused, ok
        refused, ok = h.run(none())
        self.assertEqual((refused["op"], refused["code"], ok["op"]), ("err", "too_large", "ok"))

    def test_http_post_headers(self):
        """POST /topics/<t> with Wsq-Header-<key>: <value> lines: keys in lower case (HTTP
        names are case-insensitive), values byte-exact, in the order sent; refusals store
        nothing; on a keep-alive connection the next request starts without them."""
        conn = http.client.HTTPConnection(self.wsqd.host, self.wsqd.port, timeout=10 * h.SLOW)

        def post(topic, body, hdrs):
            conn.putrequest("POST", "/topics/" + topic)
            conn.putheader("Content-Type", "text/plain")
            conn.putheader("Content-Length", str(len(body)))
            for k, v in hdrs:
                conn.putheader(k, v)
            conn.endheaders(body)
            r = conn.getresponse()
            return r.status, json.loads(r.read())
        st, ok = post("hd.h", b"first", [("Wsq-Header-Trace-Id", b"abc"),
                                         ("WSQ-HEADER-Z", "z\u00e9".encode()),
                                         ("wsq-header-empty", b"")])
        self.assertEqual(st, 200, ok)
        st, ok2 = post("hd.h", b"second", [])   # same connection: no headers carried over
        self.assertEqual(st, 200, ok2)
        refusals = [
            ([("Wsq-Header-A", b"1"), ("wsq-header-a", b"2")], 400, "given twice"),
            ([("Wsq-Header-" + "n" * 256, b"v")], 400, "1 to 255 bytes"),
            ([("Wsq-Header-Bad", b"\xff\xfe")], 400, "must be UTF-8"),
            # (65 headers cannot come: a head has at most 64 lines)
            ([("Wsq-Header-Big", b"x" * 8190)], 413, "max_message_headers_size"),
        ]
        for hdrs, status, text in refusals:
            with self.subTest(text):
                conn.close()
                st, err = post("hd.h", b"refused", hdrs)
                self.assertEqual(st, status, err)
                self.assertIn(text, err["error"]["message"])
        conn.close()
        st, _, body = self.wsqd.http("GET", "/topics/hd.h/messages?from=1")
        self.assertEqual(st, 200)
        page = json.loads(body)
        self.assertEqual([m["data"] for m in page["messages"]], ["first", "second"])
        first = json.loads(body, object_pairs_hook=lambda kv: kv)
        first = dict(dict(first)["messages"][0])
        self.assertEqual(first["headers"], [("trace-id", "abc"), ("z", "z\u00e9"), ("empty", "")])
        self.assertNotIn("headers", page["messages"][1])
        self.assertEqual(self.wsqd.metrics().get(
            'wsq_limit_refusals_total{limit="message_headers"}'), 1)

    def test_export_import_peek(self):
        msgs = [("hd.e", "text", False, HDRS), ("hd.e", b"\xfe\xff", True, {"b": "bin"}),
                ("hd.e", "plain", False, None)]
        self.publish_all(msgs)
        expect = [(d, b, hd) for _, d, b, hd in msgs]
        self.wsqd.stop()
        rc, out, err = h.wsqctl("--data", self.wsqd.data, "export", "hd.e")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertEqual(len(lines), 3)
        self.check_msgs(lines, expect)
        rc, out2, err = h.wsqctl("--data", self.wsqd.data, "--json", "peek", "hd.e")
        self.assertEqual(rc, 0, err)
        peeked = json.loads(out2, object_pairs_hook=lambda kv: kv)
        hdr_lists = [dict(m).get("headers") for m in dict(peeked)["messages"]]
        self.assertEqual(hdr_lists, [list(HDRS.items()), [("b", "bin")], None])
        # offline import into a new store, then the same export again
        with tempfile.TemporaryDirectory(prefix="wsqhd-") as tmp:
            data = os.path.join(tmp, "data")
            rc, _, err = h.wsqctl("--data", data, "import", "-", input=out.encode())
            self.assertEqual(rc, 0, err)
            rc, again, err = h.wsqctl("--data", data, "export", "hd.e")
            self.assertEqual(rc, 0, err)
            strip = [{k: v for k, v in json.loads(x).items() if k != "ts"} for x in again.splitlines()]
            orig = [{k: v for k, v in json.loads(x).items() if k != "ts"} for x in lines]
            self.assertEqual(strip, orig)
            self.check_msgs(again.splitlines(), expect)
        # through the broker: /admin/import, then read back over wsq.v1
        self.wsqd.start()
        body = "".join(json.dumps({k: v for k, v in json.loads(x).items()
                                   if k not in ("seq", "ts")} | {"topic": "hd.f"}) + "\n"
                       for x in lines)
        st, _, res = self.wsqd.http_json("POST", "/admin/import", body.encode())
        self.assertEqual((st, res), (200, {"imported": 3}))
        self.check_msgs(self.read_v1("hd.f", 3)[0], expect)


if __name__ == "__main__":
    h.main(wsqctl=True)
