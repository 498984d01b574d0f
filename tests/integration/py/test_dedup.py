#!/usr/bin/python3
"""Idempotent publish (issue 13, docs/PROTOCOL.md "pub"): a publish with an id is stored once per
topic within retention's dedup_window; a repeat stores nothing and is answered with the first
seq and "dup": true.

- wsq.v1 "id" and HTTP Idempotency-Key share one index: a repeat over either is a dup of the
  other; the same id on another topic is a new message; another id is a new message;
- many connections racing with the same ids (pipelined): each id stored exactly once, every
  answer carrying that one seq;
- a confirmed id survives kill -9: the retry after the restart is a dup;
- past the window the id is new again (dedup_window: 1s); dedup_window: 0 ignores ids;
- refusals: an id that is empty, longer than 128 bytes, holds a NUL or is not a string
  (bad_request / bad_type); an Idempotency-Key longer than 128 bytes (400).
"""

import json
import os
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402


def stored(d, topic):
    st, _, page = d.history(topic, "?from=1&limit=1000")
    if st == 404:
        return []
    assert st == 200, (st, page)
    return [m["data"] for m in page["messages"]]


class Dedup(h.WsqdTestCase):

    def pubs(self, d, frames):
        """Sends every frame at once on one wsq.v1 connection; -> the answers by ref."""
        async def go():
            ws = await h.connect_v1(d)
            for i, f in enumerate(frames):
                await h.send_json(ws, dict(f, op="pub", ref=i))
            got = {}
            while len(got) < len(frames):
                a = await h.recv_json(ws, 10)
                got[a["ref"]] = a
            await ws.close()
            return [got[i] for i in range(len(frames))]
        return h.run(go())

    def post(self, d, topic, body, key):
        return d.http_json("POST", "/topics/" + topic, body.encode(),
                           {"Content-Type": "text/plain", "Idempotency-Key": key})

    def test_once_per_topic_over_v1_and_http(self):
        d = self.wsqd
        a = self.pubs(d, [{"topic": "dd.a", "data": "first", "id": "order-1"},
                          {"topic": "dd.a", "data": "retry", "id": "order-1"},
                          {"topic": "dd.a", "data": "second", "id": "order-2"},
                          {"topic": "dd.b", "data": "other topic", "id": "order-1"},
                          {"topic": "dd.a", "data": "no id"}])
        self.assertEqual([(x["op"], x["seq"], x.get("dup", False)) for x in a],
                         [("ok", 1, False), ("ok", 1, True), ("ok", 2, False), ("ok", 1, False),
                          ("ok", 3, False)])
        # HTTP shares the index
        st, _, body = self.post(d, "dd.a", "over http", "order-2")
        self.assertEqual((st, body), (200, {"seq": 2, "topic": "dd.a", "dup": True}))
        st, _, body = self.post(d, "dd.a", "over http", "order-3")
        self.assertEqual((st, body), (200, {"seq": 4, "topic": "dd.a"}))
        a = self.pubs(d, [{"topic": "dd.a", "data": "v1 retry of http", "id": "order-3"}])
        self.assertEqual((a[0]["seq"], a[0].get("dup")), (4, True))
        self.assertEqual(stored(d, "dd.a"), ["first", "second", "no id", "over http"])
        self.assertEqual(stored(d, "dd.b"), ["other topic"])

    def test_racing_connections(self):
        """8 connections, each sending the same 50 ids pipelined: 50 messages, one seq each."""
        d = self.wsqd
        ids = ["job-%d" % i for i in range(50)]

        async def one(c):
            ws = await h.connect_v1(d)
            for i, k in enumerate(ids):
                await h.send_json(ws, {"op": "pub", "topic": "dd.race", "data": "%s from %d"
                                       % (k, c), "id": k, "ref": i})
            got = {}
            while len(got) < len(ids):
                a = await h.recv_json(ws, 20)
                self.assertEqual(a["op"], "ok", a)
                got[ids[a["ref"]]] = a
            await ws.close()
            return got

        async def all_():
            import asyncio
            return await asyncio.gather(*(one(c) for c in range(8)))
        results = h.run(all_(), timeout=60)
        seqs = {k: {r[k]["seq"] for r in results} for k in ids}
        self.assertTrue(all(len(s) == 1 for s in seqs.values()), seqs)
        self.assertEqual(sorted(s.pop() for s in seqs.values()), list(range(1, 51)))
        firsts = [sum(1 for r in results if not r[k].get("dup")) for k in ids]
        self.assertEqual(firsts, [1] * 50)   # exactly one non-dup answer per id
        self.assertEqual(len(stored(d, "dd.race")), 50)

    def test_survives_kill_9(self):
        d = self.wsqd
        a = self.pubs(d, [{"topic": "dd.k", "data": "paid", "id": "pay-77"}])
        self.assertEqual((a[0]["seq"], a[0].get("dup")), (1, None))
        d.restart(how="kill")
        a = self.pubs(d, [{"topic": "dd.k", "data": "paid (retry after a crash)", "id": "pay-77"}])
        self.assertEqual((a[0]["seq"], a[0].get("dup")), (1, True))
        st, _, body = self.post(d, "dd.k", "http retry", "pay-77")
        self.assertEqual(body, {"seq": 1, "topic": "dd.k", "dup": True})
        self.assertEqual(stored(d, "dd.k"), ["paid"])

    def test_window(self):
        d = self.new_wsqd("retention:\n  default:\n    dedup_window: 1s\n  topics:\n"
                          "    - pattern: \"nodedup.>\"\n      dedup_window: 0\n")
        d.start()
        a = self.pubs(d, [{"topic": "w.t", "data": "a", "id": "k"},
                          {"topic": "w.t", "data": "b", "id": "k"},
                          {"topic": "nodedup.t", "data": "c", "id": "k"},
                          {"topic": "nodedup.t", "data": "d", "id": "k"}])
        self.assertEqual([(x["seq"], x.get("dup", False)) for x in a],
                         [(1, False), (1, True), (1, False), (2, False)])
        time.sleep(1.3)
        a = self.pubs(d, [{"topic": "w.t", "data": "after the window", "id": "k"},
                          {"topic": "w.t", "data": "and its repeat", "id": "k"}])
        self.assertEqual([(x["seq"], x.get("dup", False)) for x in a], [(2, False), (2, True)])
        self.assertEqual(stored(d, "w.t"), ["a", "after the window"])

    def test_refusals(self):
        d = self.wsqd
        a = self.pubs(d, [{"topic": "dd.r", "data": "x", "id": ""},
                          {"topic": "dd.r", "data": "x", "id": "i" * 129},
                          {"topic": "dd.r", "data": "x", "id": "a\u0000b"},
                          {"topic": "dd.r", "data": "x", "id": 7},
                          {"topic": "dd.r", "data": "x", "id": "i" * 128}])
        self.assertEqual([(x["op"], x.get("code")) for x in a],
                         [("err", "bad_request"), ("err", "bad_request"), ("err", "bad_request"),
                          ("err", "bad_type"), ("ok", None)])
        self.assertIn("1 to 128 bytes", a[1]["message"])
        st, _, body = self.post(d, "dd.r", "x", "k" * 129)
        self.assertEqual((st, body["error"]["code"]), (400, "bad_request"), body)
        self.assertEqual(stored(d, "dd.r"), ["x"])


if __name__ == "__main__":
    h.main()
