#!/usr/bin/python3
"""HTTP/1.1 pipelining on one keep-alive connection, from a raw socket.

Every request on a connection is handled exactly once, pipelined or not. wsqd answers the first
of a pipeline with Connection: close and closes after it; the requests behind it are neither
read nor answered, and the client sends them again on a new connection (RFC 9112 9.3.2), as
the client here does. Regression for issue 11: two pipelined POSTs made wsqd store the second
body millions of times (libwebsockets 4.1 took the second body from its own header bytes, then
reported it complete in an endless loop) until the kernel killed it.

Each test asserts the exact messages in the store (read back over a fresh connection, after a
pause in which a runaway duplication would show), the answers, and a bounded RSS.
"""

import os
import random
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402

def post_req(topic, body, ctype="application/octet-stream"):
    return (b"POST /topics/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
            b"Content-Length: %d\r\n\r\n" % (topic.encode(), ctype.encode(), len(body)) + body)


def get_req(path):
    return b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode()


class Pipeline(h.BoundedRss, h.WsqdTestCase):

    def stored(self, topic):
        """The bodies stored in topic, in seq order (history over a fresh connection)."""
        out, frm = [], 1
        while True:
            st, _, body = self.wsqd.history(topic, "?from=%d&limit=1000" % frm)
            if st == 404:
                return out
            self.assertEqual(st, 200, body)
            for m in body["messages"]:
                self.assertEqual(m["seq"], len(out) + 1, "seqs are gap-free from 1")
                out.append(h.base64.b64decode(m["data"]) if m.get("enc") == "base64"
                           else m["data"].encode("utf-8"))
            if not body["messages"] or body["next_seq"] <= body["messages"][-1]["seq"] + 1:
                return out
            frm = body["messages"][-1]["seq"] + 1

    def assert_stored_exactly(self, expect):
        """expect: topic -> list of bodies. Checked twice, 0.5 s apart: a duplication loop
        keeps appending after the answers."""
        for _ in range(2):
            for topic, bodies in expect.items():
                got = self.stored(topic)
                self.assertEqual(len(got), len(bodies), "topic %s: %d stored, %d posted"
                                 % (topic, len(got), len(bodies)))
                self.assertEqual(got, bodies, "topic %s: bodies differ" % topic)
            time.sleep(0.5 * h.SLOW)

    def pipeline(self, reqs, cuts=None):
        """Sends the raw requests back to back on one connection and reads the answers; sends
        the unanswered ones again on a new connection, until every one has its answer. Asserts
        that an answer is followed by more answers only while the connection stays open, and
        that a connection closes only after an answer with Connection: close (or after a refusal).
        Returns the answers in request order, and the number of connections used."""
        answers, pending, conns = [], list(reqs), 0
        while pending:
            conns += 1
            self.assertLessEqual(conns, len(reqs), "no progress")
            c = h.RawHttp(self.wsqd)
            data = b"".join(pending)
            c.send(data, cuts(len(data)) if cuts else None)
            got = 0
            while got < len(pending):
                r = c.response()
                if r is None:
                    break
                answers.append(r)
                got += 1
                if r[1].get("connection", "").lower() == "close":
                    self.assertTrue(c.wait_closed(), "bytes after a Connection: close answer")
                    break
            c.close()
            self.assertGreater(got, 0, "a connection ended without answering its first request")
            pending = pending[got:]
        return answers, conns

    def run_posts(self, posts, cuts=None):
        """(topic, body) POSTs through pipeline(): one 200 per POST, in order, each with the
        next seq of its topic, and exactly these messages stored."""
        answers, conns = self.pipeline([post_req(t, b) for t, b in posts], cuts)
        seqs, expect = {}, {}
        for i, ((t, b), (st, _, body)) in enumerate(zip(posts, answers)):
            self.assertEqual(st, 200, "request %d: %r" % (i + 1, body))
            seqs[t] = seqs.get(t, 0) + 1
            self.assertEqual(h.json.loads(body), {"seq": seqs[t], "topic": t},
                             "request %d answered out of order or twice" % (i + 1))
            expect.setdefault(t, []).append(b)
        self.assert_stored_exactly(expect)
        return conns

    # -- the reproducer and larger pipelines ----------------------------------------

    def test_two_pipelined_posts_store_two_messages(self):
        self.assertEqual(self.run_posts([("t", b"a"), ("u", b"b")]), 2)

    def test_ten_pipelined_posts(self):
        self.run_posts([("p.%d" % (i % 3), b"m%d" % i) for i in range(10)])

    def test_hundred_pipelined_posts_mixed_topics_and_sizes(self):
        rnd = random.Random(11)
        posts = [("mix.%d" % rnd.randrange(4), os.urandom(rnd.choice([1, 7, 100, 1500, 9000])))
                 for _ in range(100)]
        self.run_posts(posts)

    def test_pipelined_posts_split_across_segments(self):
        rnd = random.Random(7)
        posts = [("seg.%d" % (i % 2), os.urandom(rnd.randrange(1, 3000))) for i in range(30)]
        # cut everywhere: inside request lines, headers, bodies, and between requests
        self.run_posts(posts, cuts=lambda n: sorted(rnd.sample(range(1, n), min(n - 1, 120))))

    def test_pipelined_posts_one_byte_at_a_time(self):
        self.run_posts([("byte", b"x%d" % i) for i in range(3)], cuts=lambda n: range(1, n))

    def test_keep_alive_without_pipelining(self):
        """One request at a time on one connection: every answer keeps the connection."""
        c = h.RawHttp(self.wsqd)
        for i in range(20):
            c.send(post_req("ka", b"%d" % i))
            st, hdrs, body = c.response()
            self.assertEqual((st, h.json.loads(body)), (200, {"seq": i + 1, "topic": "ka"}))
            self.assertNotEqual(hdrs.get("connection", "").lower(), "close")
            c.send(get_req("/healthz"))
            st, hdrs, _ = c.response()
            self.assertEqual(st, 200)
            self.assertNotEqual(hdrs.get("connection", "").lower(), "close")
        c.close()
        self.assert_stored_exactly({"ka": [b"%d" % i for i in range(20)]})

    # -- a POST followed by something else --------------------------------------------------

    def test_post_then_get(self):
        answers, _ = self.pipeline([post_req("pg", b"hello"), get_req("/topics/pg/messages"),
                                    get_req("/healthz")])
        st, _, body = answers[0]
        self.assertEqual((st, h.json.loads(body)), (200, {"seq": 1, "topic": "pg"}))
        st, _, body = answers[1]
        self.assertEqual(st, 200, body)
        self.assertEqual([m["seq"] for m in h.json.loads(body)["messages"]], [1])
        st, _, body = answers[2]
        self.assertEqual((st, h.json.loads(body)["status"]), (200, "ok"))
        self.assert_stored_exactly({"pg": [b"hello"]})

    def test_post_then_garbage(self):
        c = h.RawHttp(self.wsqd)
        c.send(post_req("pgar", b"one") + b"\x00\x01 this is not HTTP\r\n\r\n")
        st, _, body = c.response()
        self.assertEqual((st, h.json.loads(body)), (200, {"seq": 1, "topic": "pgar"}))
        self.assertIsNone(c.response(), "the garbage behind a pipelined POST is not answered")
        c.close()
        # sent alone, the garbage gets a 400 with a JSON body
        c = h.RawHttp(self.wsqd)
        c.send(b"\x00\x01 this is not HTTP\r\n\r\n")
        st, hdrs, body = c.response()
        self.assertEqual(st, 400)
        self.assertEqual(h.json.loads(body)["error"]["code"], "bad_request")
        self.assertEqual(hdrs.get("connection"), "close")
        self.assertTrue(c.wait_closed())
        c.close()
        self.assert_stored_exactly({"pgar": [b"one"]})
        self.assertEqual(self.wsqd.http_json("GET", "/healthz")[0], 200)

    def test_trailing_bytes_after_a_body(self):
        # the body is 1 byte; "bcde" follows it and is not a request
        c = h.RawHttp(self.wsqd)
        c.send(b"POST /topics/trail HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n\r\nabcde")
        st, hdrs, body = c.response()
        self.assertEqual((st, h.json.loads(body)), (200, {"seq": 1, "topic": "trail"}))
        self.assertEqual(hdrs.get("connection"), "close")
        self.assertTrue(c.wait_closed())
        c.close()
        self.assert_stored_exactly({"trail": [b"a"]})

    def test_other_clients_served_during_a_pipeline(self):
        """/healthz answers while a connection pipelines 200 POSTs; of those, exactly the first
        is stored, and the client that never read its answer can send the rest again."""
        c = h.RawHttp(self.wsqd)
        posts = [("busy", b"%d" % i) for i in range(200)]
        c.send(b"".join(post_req(t, b) for t, b in posts))
        self.assertEqual(self.wsqd.http_json("GET", "/healthz")[0], 200)
        c.wait_closed()   # after the first answer (unread here) and Connection: close
        c.close()
        self.assert_stored_exactly({"busy": [b"0"]})
        answers, _ = self.pipeline([post_req(t, b) for t, b in posts[1:]])
        self.assertEqual([h.json.loads(a[2])["seq"] for a in answers], list(range(2, 201)))
        self.assert_stored_exactly({"busy": [b for _, b in posts]})

if __name__ == "__main__":
    h.main()
