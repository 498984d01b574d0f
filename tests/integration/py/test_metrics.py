#!/usr/bin/python3
"""GET /metrics and /healthz against the real wsqd (OPERATIONS.md "Health, metrics and logs"):
the Prometheus text parsed line by line, every documented family present with its TYPE, and the
counters moving by exactly the traffic this test makes: connections, published, delivered,
acked, nacked, redelivered, commits and the commit histograms, per-topic and per-consumer
series, the map gauges, and the auth and limit families with every label from the start.
"""

import os
import re
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402
import sechelp as s  # noqa: E402

FAMILIES = {
    "wsq_connections": "gauge",
    "wsq_tcp_connections": "gauge",
    "wsq_connections_total": "counter",
    "wsq_published_total": "counter",
    "wsq_publish_errors_total": "counter",
    "wsq_delivered_total": "counter",
    "wsq_redelivered_total": "counter",
    "wsq_acked_total": "counter",
    "wsq_nacked_total": "counter",
    "wsq_gaps_total": "counter",
    "wsq_commits_total": "counter",
    "wsq_publisher_pauses_total": "counter",
    "wsq_reloads_total": "counter",
    "wsq_reload_failures_total": "counter",
    "wsq_writer_queue_messages": "gauge",
    "wsq_writer_queue_bytes": "gauge",
    "wsq_map_used_bytes": "gauge",
    "wsq_map_size_bytes": "gauge",
    "wsq_map_max_bytes": "gauge",
    "wsq_limit_refusals_total": "counter",
    "wsq_auth_failures_total": "counter",
    "wsq_commit_batch_size": "histogram",
    "wsq_commit_seconds": "histogram",
    "wsq_topic_messages": "gauge",
    "wsq_topic_bytes": "gauge",
    "wsq_topic_last_seq": "gauge",
    "wsq_consumer_lag": "gauge",
}
AUTH_REASONS = ("bad_authorization_header", "unknown_token", "malformed", "bad_alg",
                "bad_signature", "expired", "not_yet_valid", "bad_issuer", "bad_audience",
                "bad_claims", "origin", "revoked", "unknown_key")


def histogram(m, name):
    """[(le, cumulative count)] in file order, plus _sum and _count."""
    buckets = []
    for k, v in m.items():
        mm = re.match(r'^%s_bucket\{le="([^"]+)"\}$' % name, k)
        if mm:
            buckets.append((float("inf") if mm.group(1) == "+Inf" else float(mm.group(1)), v))
    return sorted(buckets), m[name + "_sum"], m[name + "_count"]


class Metrics(h.WsqdTestCase):

    def delta(self, m0, m1, key):
        return m1.get(key, 0) - m0.get(key, 0)

    def test_text_format_and_families(self):
        d = self.wsqd
        st, hdrs, body = d.http("GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(hdrs["content-type"].startswith("text/plain; version=0.0.4"), hdrs)
        text = body.decode("utf-8")
        m = h.parse_prometheus(text)       # checks every line's syntax
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        for fam, typ in FAMILIES.items():
            self.assertEqual(types.get(fam), typ, "TYPE of %s" % fam)
            self.assertRegex(text, r"(?m)^# HELP %s \S" % fam)
        # each family's TYPE comes once, before its samples
        self.assertEqual(len(re.findall(r"(?m)^# TYPE ", text)), len(types))
        for r in AUTH_REASONS:
            self.assertEqual(s.auth_failures(m, r), 0, r)
        self.assertEqual(m["wsq_map_max_bytes"], 64 * 2 ** 30)    # storage.map_size_max default
        self.assertLessEqual(m["wsq_map_used_bytes"], m["wsq_map_size_bytes"])
        self.assertLessEqual(m["wsq_map_size_bytes"], m["wsq_map_max_bytes"])
        self.assertGreater(m["wsq_map_size_bytes"], 0)

    def test_tcp_connections_gauge(self):
        d = self.wsqd

        async def go():
            ws = [await h.connect_v1(d) for _ in range(2)]
            m = d.metrics()
            self.assertEqual(m["wsq_connections"], 2)
            # two WebSockets, plus this very /metrics request
            self.assertEqual(m["wsq_tcp_connections"], 3,
                             "wsq_tcp_connections with 2 WebSockets open and /metrics being "
                             "served")
            for w in ws:
                await w.close()
        h.run(go())

    def test_counters_move_with_traffic(self):
        d = self.wsqd
        m0 = d.metrics()
        N = 5

        async def go():
            sub = await h.connect_v1(d)
            raw = await h.connect_raw(d, "/topics/met.a")
            pub = await h.connect_v1(d)
            m = d.metrics()
            self.assertEqual(self.delta(m0, m, "wsq_connections"), 3)
            self.assertEqual(self.delta(m0, m, "wsq_connections_total"), 3)
            await h.send_json(sub, {"op": "sub", "topic": "met.a", "consumer": "c1",
                                    "from": "earliest", "ref": 1})
            await h.expect_op(sub, "subscribed")
            for i in range(N):
                await h.pub_confirmed(pub, "met.a", "m%d" % i, i)
            got = [await h.expect_op(sub, "msg") for _ in range(N)]
            for _ in range(N):
                await h.recv(raw)
            self.assertEqual([g["data"] for g in got], ["m%d" % i for i in range(N)])
            # two deliveries per message: the consumer and the raw subscriber
            m = s.wait_metric(d, lambda m: self.delta(m0, m, "wsq_delivered_total") >= 2 * N,
                              "delivered += %d" % (2 * N))
            self.assertEqual(self.delta(m0, m, "wsq_published_total"), N)
            self.assertEqual(self.delta(m0, m, "wsq_delivered_total"), 2 * N)
            # acks: one singly, then the next two cumulatively (upto)
            await h.send_json(sub, {"op": "ack", "topic": "met.a", "seq": got[0]["seq"]})
            await h.send_json(sub, {"op": "ack", "topic": "met.a", "upto": got[2]["seq"]})
            m = s.wait_metric(d, lambda m: self.delta(m0, m, "wsq_acked_total") >= 3,
                              "acked += 3")
            self.assertEqual(self.delta(m0, m, "wsq_acked_total"), 3)
            # a nack: counted, then redelivered with deliveries 2
            await h.send_json(sub, {"op": "nack", "topic": "met.a", "seq": got[3]["seq"]})
            again = await h.expect_op(sub, "msg")
            self.assertEqual((again["seq"], again.get("deliveries")), (got[3]["seq"], 2))
            # delivered counts a frame once its socket write is reported back to the consumer
            # thread, which may be just after the client has the frame: wait for it too
            m = s.wait_metric(d, lambda m: (self.delta(m0, m, "wsq_redelivered_total") >= 1 and
                                            self.delta(m0, m, "wsq_delivered_total") >= 2 * N + 1),
                              "redelivered += 1 and delivered += %d" % (2 * N + 1))
            self.assertEqual(self.delta(m0, m, "wsq_nacked_total"), 1)
            self.assertEqual(self.delta(m0, m, "wsq_redelivered_total"), 1)
            self.assertEqual(self.delta(m0, m, "wsq_delivered_total"), 2 * N + 1)
            # per consumer: 2 of 5 unacknowledged (seq 4 nacked and redelivered, seq 5)
            key = s.labeled("wsq_consumer_lag", topic="met.a", consumer="c1")
            s.wait_metric(d, lambda m: m.get(key) == 2, "%s == 2" % key)
            for ws in (sub, raw, pub):
                await ws.close()
        h.run(go())
        m1 = s.wait_metric(d, lambda m: m["wsq_connections"] == m0["wsq_connections"],
                           "connections back to %d" % m0["wsq_connections"])
        self.assertEqual(self.delta(m0, m1, "wsq_connections_total"), 3)
        # an HTTP publish counts too
        st, _, body = d.post("met.b", "over http")
        self.assertEqual(st, 200, body)
        m1 = d.metrics()
        self.assertEqual(self.delta(m0, m1, "wsq_published_total"), N + 1)
        # per topic
        self.assertEqual(m1[s.labeled("wsq_topic_messages", topic="met.a")], N)
        self.assertEqual(m1[s.labeled("wsq_topic_bytes", topic="met.a")], 2 * N)
        self.assertEqual(m1[s.labeled("wsq_topic_last_seq", topic="met.a")], N)
        self.assertEqual(m1[s.labeled("wsq_topic_messages", topic="met.b")], 1)
        self.assertEqual(m1[s.labeled("wsq_topic_bytes", topic="met.b")], len("over http"))
        # commits and the histograms: at least one commit per confirmed publish batch
        commits = self.delta(m0, m1, "wsq_commits_total")
        self.assertGreaterEqual(commits, 1)
        for name in ("wsq_commit_batch_size", "wsq_commit_seconds"):
            b0, _, c0 = histogram(m0, name)
            b1, sum1, c1 = histogram(m1, name)
            self.assertGreater(c1, c0, "%s_count did not move" % name)
            counts = [v for _, v in b1]
            self.assertEqual(counts, sorted(counts), "%s buckets not cumulative" % name)
            self.assertEqual(b1[-1], (float("inf"), c1), "%s +Inf bucket != _count" % name)
            self.assertGreater(sum1, 0)
        _, bsum0, bc0 = histogram(m0, "wsq_commit_batch_size")
        _, bsum1, bc1 = histogram(m1, "wsq_commit_batch_size")
        # every publish is in some batch (consumer-state writes may add requests)
        self.assertGreaterEqual(bsum1 - bsum0, N + 1)
        self.assertEqual(bc1 - bc0, commits)

    def test_healthz(self):
        d = self.wsqd
        st, hdrs, body = d.http_json("GET", "/healthz")
        self.assertEqual(st, 200)
        self.assertEqual((body["status"], body["storage"]), ("ok", "writable"))
        self.assertIsInstance(body["uptime_ms"], int)
        st, _, body = d.http_json("POST", "/healthz", b"")
        self.assertEqual(st, 405)


class ConsumerCardinality(h.WsqdTestCase):
    """Per-topic and per-consumer series exist per name (bounded at 1000 each: not reached
    here; this checks the labels are the names)."""

    def test_series_per_topic_and_consumer(self):
        d = self.wsqd

        async def go():
            pub = await h.connect_v1(d)
            ws = await h.connect_v1(d)
            for i in range(3):
                t = "card.t%d" % i
                await h.pub_confirmed(pub, t, "x", i)
                await h.send_json(ws, {"op": "sub", "topic": t, "consumer": "k%d" % i,
                                       "from": "earliest", "ref": "s%d" % i})
                await h.expect_op(ws, "subscribed", skip=("msg",))
            await ws.close()
            await pub.close()
        h.run(go())
        m = s.wait_metric(d, lambda m: all(
            s.labeled("wsq_consumer_lag", topic="card.t%d" % i, consumer="k%d" % i) in m
            for i in range(3)), "a lag series per consumer")
        for i in range(3):
            self.assertEqual(m[s.labeled("wsq_topic_last_seq", topic="card.t%d" % i)], 1)


if __name__ == "__main__":
    h.main()
