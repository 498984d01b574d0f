#!/usr/bin/python3
"""Wildcard subscriptions (issue 13 point 3, docs/PROTOCOL.md "Topic patterns"): a sub to a
pattern ('*' one segment, '>' one or more trailing) delivers every matching topic, existing and
created later, each in seq order, each msg naming its topic.

- ephemeral from earliest and from latest: every matching topic, nothing else, each in order;
  a topic created after the sub is delivered from its first message;
- ACLs per topic: topics the identity may not read are left out, not errors;
- a durable wildcard consumer keeps one position per topic: acks name the topic, it resumes
  each topic where it was (across a restart), with a gap in one of them reported for that topic,
  and a topic created while it was away is delivered from its first message;
- shared wildcard consumers split each topic's messages between the members;
- a publish to a pattern is bad_topic; raw mode stays one topic per connection; unsub of the
  pattern ends all of it.
"""

import json
import os
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402


def collect(ws, n, timeout=5.0):
    """n msg frames (other frames fail the test) -> list of (topic, seq, data)."""
    got = []
    while len(got) < n:
        f = ws.recv_json(timeout=timeout)
        if f["op"] != "msg":
            raise AssertionError("expected msg, got %r after %r" % (f, got))
        got.append((f["topic"], f["seq"], f["data"]))
    return got


def silent(ws, t=0.3):
    try:
        f = ws.recv_json(timeout=t)
    except (TimeoutError, OSError):
        return None
    return f


def per_topic(got):
    out = {}
    for topic, seq, data in got:
        out.setdefault(topic, []).append(seq)
    return out


class Wildcard(h.WsqdTestCase):
    EXTRA_YAML = "limits:\n  ack_wait: 0\n"

    def test_ephemeral_earliest_and_new_topics(self):
        d = self.wsqd
        for t in ("w.a", "w.b", "w.b", "x.c", "w.a.deep"):
            d.publish(t, "m-" + t)
        ws = h.SocketWS(d)
        ws.send_json({"op": "sub", "topic": "w.*", "from": "earliest", "ref": 1})
        sub = ws.expect("subscribed")
        self.assertEqual((sub["topic"], sub["pattern"], sub["topics"]), ("w.*", True, 2))
        got = collect(ws, 3)
        self.assertEqual(per_topic(got), {"w.a": [1], "w.b": [1, 2]})
        self.assertIsNone(silent(ws))   # x.c and w.a.deep do not match w.*
        # a topic created now, and more on an old one
        d.publish("w.new", "first")
        d.publish("w.new", "second")
        d.publish("w.a", "again")
        d.publish("x.c", "not this")
        got = collect(ws, 3)
        self.assertEqual(per_topic(got), {"w.new": [1, 2], "w.a": [2]})
        self.assertIsNone(silent(ws))
        # '>' takes deeper topics too
        ws2 = h.SocketWS(d)
        ws2.send_json({"op": "sub", "topic": "w.>", "from": "earliest", "ref": 2})
        self.assertEqual(ws2.expect("subscribed")["topics"], 4)
        self.assertEqual(per_topic(collect(ws2, 7)),
                         {"w.a": [1, 2], "w.b": [1, 2], "w.a.deep": [1], "w.new": [1, 2]})
        # unsub ends all of it
        ws.send_json({"op": "unsub", "topic": "w.*", "ref": "u"})
        self.assertEqual(ws.expect("ok")["ref"], "u")
        d.publish("w.a", "after unsub")
        self.assertIsNone(silent(ws))
        self.assertEqual(collect(ws2, 1), [("w.a", 3, "after unsub")])
        ws.close()
        ws2.close()

    def test_latest_is_from_now_on(self):
        d = self.wsqd
        d.publish("l.a", "old")
        ws = h.SocketWS(d)
        ws.send_json({"op": "sub", "topic": "l.>", "ref": 1})
        self.assertEqual(ws.expect("subscribed")["topics"], 1)
        self.assertIsNone(silent(ws))
        for i in range(20):
            d.publish("l.a" if i % 2 else "l.b", "n%d" % i)
        got = collect(ws, 20)
        pt = per_topic(got)
        self.assertEqual(pt, {"l.a": list(range(2, 12)), "l.b": list(range(1, 11))})
        # quiet topics let their per-topic subscription go (after 2 s) and get a new one with
        # their next message: nothing is lost or repeated across that
        time.sleep(2.5)
        for i in range(3):
            d.publish("l.a", "after %d" % i)
        self.assertEqual(collect(ws, 3), [("l.a", 12 + i, "after %d" % i) for i in range(3)])
        self.assertIsNone(silent(ws))
        ws.close()

    def test_publish_to_a_pattern_is_bad_topic(self):
        d = self.wsqd
        ws = h.SocketWS(d)
        for topic in ("w.*", "w.>", ">"):
            ws.send_json({"op": "pub", "topic": topic, "data": "x", "ref": topic})
            self.assertEqual(ws.expect("err")["code"], "bad_topic")
        ws.send_json({"op": "sub", "topic": "w.>.x", "ref": "bad"})   # '>' only last
        self.assertEqual(ws.expect("err")["code"], "bad_topic")
        st, _, doc = d.post("w.*", "x")
        self.assertEqual(st, 400)
        ws.close()
        # raw mode stays one topic per connection
        with self.assertRaises(h.UpgradeRefused):
            h.SocketWS(d, "/topics/w.*", subprotocol=None)

    def test_durable_resumes_each_topic(self):
        d = self.wsqd
        for t in ("dw.a", "dw.b", "dw.c"):
            for i in range(3):
                d.publish(t, "%s-%d" % (t, i))
        ws = h.SocketWS(d)
        ws.send_json({"op": "sub", "topic": "dw.*", "consumer": "c1", "from": "earliest",
                      "ref": 1, "window": 100})
        sub = ws.expect("subscribed")
        self.assertEqual((sub["topics"], sub["resumed"], sub["consumer"]), (3, False, "c1"))
        got = collect(ws, 9)
        self.assertEqual(per_topic(got), {t: [1, 2, 3] for t in ("dw.a", "dw.b", "dw.c")})
        # ack: all of a, 1 of b, nothing of c
        for seq in (1, 2, 3):
            ws.send_json({"op": "ack", "topic": "dw.a", "seq": seq})
        ws.send_json({"op": "ack", "topic": "dw.b", "upto": 1})
        ws.send_json({"op": "ping", "ref": "p"})
        ws.expect("pong")
        time.sleep(0.1)
        ws.close()
        # while away: more on a, a purge of c's first two, and a new topic
        d.publish("dw.a", "dw.a-3")
        st, _, _ = d.http_json("POST", "/admin/purge?topic=dw.c&before=3")
        self.assertEqual(st, 200)
        d.publish("dw.new", "new-0")
        d.restart()
        ws = h.SocketWS(d)
        ws.send_json({"op": "sub", "topic": "dw.*", "consumer": "c1", "ref": 2, "window": 100})
        sub = ws.expect("subscribed")
        self.assertEqual((sub["topics"], sub["resumed"]), (4, True))
        frames = []
        while len([f for f in frames if f["op"] == "msg"]) < 5:
            frames.append(ws.recv_json(timeout=5))
        gaps = [(f["topic"], f["from"], f["to"], f["reason"]) for f in frames if f["op"] == "gap"]
        self.assertEqual(gaps, [("dw.c", 1, 2, "purge")])
        msgs = [(f["topic"], f["seq"], f.get("deliveries", 1)) for f in frames if f["op"] == "msg"]
        self.assertEqual(sorted(msgs), [("dw.a", 4, 1), ("dw.b", 2, 2), ("dw.b", 3, 2),
                                        ("dw.c", 3, 2), ("dw.new", 1, 1)])
        self.assertIsNone(silent(ws))
        ws.close()
        # one consumer per topic, named c1
        rc, out, err = h.wsqctl("--data", d.data, "--json", "consumers")
        names = sorted((c["topic"], c["name"]) for c in json.loads(out)["consumers"])
        self.assertEqual(names, [("dw.a", "c1"), ("dw.b", "c1"), ("dw.c", "c1"),
                                 ("dw.new", "c1")])

    def test_shared_wildcard_members_split_each_topic(self):
        d = self.wsqd
        a = h.SocketWS(d)
        b = h.SocketWS(d)
        for ws, ref in ((a, 1), (b, 2)):
            ws.send_json({"op": "sub", "topic": "sw.>", "consumer": "pool", "shared": True,
                          "window": 1, "ref": ref})
            self.assertTrue(ws.expect("subscribed")["shared"])
        for i in range(4):
            d.publish("sw.x", "x%d" % i)
        seen = []
        for _ in range(4):
            for ws in (a, b):
                f = silent(ws, 0.5)
                if f:
                    self.assertEqual(f["op"], "msg")
                    seen.append((ws is a, f["seq"]))
                    ws.send_json({"op": "ack", "topic": f["topic"], "seq": f["seq"]})
        self.assertEqual(sorted(s for _, s in seen), [1, 2, 3, 4])
        self.assertTrue(any(x for x, _ in seen) and not all(x for x, _ in seen), seen)
        a.close()
        b.close()


class WildcardRights(h.WsqdTestCase):
    """Per-topic ACLs: topics the identity may not read are left out, not errors."""
    EXTRA_YAML = ("auth:\n  anonymous:\n    publish: [\">\"]\n"
                  "    subscribe: [\"acl.open.>\", \"acl.one\"]\n")

    def test_unreadable_topics_are_left_out(self):
        d = self.wsqd
        for t in ("acl.open.a", "acl.secret", "acl.one", "acl.open.b.c"):
            d.publish(t, t)
        ws = h.SocketWS(d)
        ws.send_json({"op": "sub", "topic": "acl.>", "from": "earliest", "ref": 1})
        self.assertEqual(ws.expect("subscribed")["topics"], 3)
        got = collect(ws, 3)
        self.assertEqual(sorted(t for t, _, _ in got), ["acl.one", "acl.open.a", "acl.open.b.c"])
        d.publish("acl.secret2", "no")
        d.publish("acl.open.z", "yes")
        self.assertEqual(collect(ws, 1), [("acl.open.z", 1, "yes")])
        self.assertIsNone(silent(ws))
        ws.close()


class WildcardNone(h.WsqdTestCase):
    EXTRA_YAML = "auth:\n  anonymous:\n    publish: [\">\"]\n    subscribe: []\n"

    def test_no_subscribe_right_at_all(self):
        ws = h.SocketWS(self.wsqd)
        ws.send_json({"op": "sub", "topic": "a.>", "ref": 1})
        self.assertEqual(ws.expect("err")["code"], "forbidden")
        ws.close()


if __name__ == "__main__":
    h.main(wsqctl=True)
