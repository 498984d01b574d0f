#!/usr/bin/python3
"""HTTP pull consumers (issue 13 point 6, docs/PROTOCOL.md "HTTP pull"): POST /fetch leases
messages of a durable consumer to a worker that is no WebSocket client, POST /ack and /nack
settle them; leases expire after limits.ack_wait.

- fetch with max and from: seq, ts, deliveries (always), data (+enc) and headers; ack; the next
  fetch gets what follows; a second fetch does not get what is leased;
- long polling: a fetch waits up to `wait` for the first message and answers as soon as one is
  published; with nothing, an empty list after the wait; a client that leaves mid-wait leases
  nothing;
- an expired lease: delivered again with deliveries 2; the late ack of the first lease counts;
- nack with delay and with term (the dead-letter copy);
- a shared consumer served over WebSocket and HTTP at once: every message once, acks over both;
- an exclusive consumer held by a WebSocket session answers 409 conflict; a WebSocket session
  that takes over an exclusive consumer gets its HTTP leases;
- an ack after a restart (the consumer no longer in memory) is stored;
- refusals: missing or bad query parameters, bad bodies, unknown topic or consumer, GET.
"""

import json
import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402


def fetch(d, topic, consumer="w", timeout=10.0, **q):
    query = "&".join(["topic=" + topic, "consumer=" + consumer] +
                     ["%s=%s" % (k, "true" if v is True else v) for k, v in q.items()])
    st, _, data = d.http("POST", "/fetch?" + query, timeout=timeout)
    return st, json.loads(data)


def settle(d, what, topic, seqs, consumer="w", **extra):
    body = dict(extra, seqs=seqs)
    return d.http_json("POST", "/%s?topic=%s&consumer=%s" % (what, topic, consumer),
                       json.dumps(body).encode(), {"Content-Type": "application/json"})


class Pull(h.WsqdTestCase):
    EXTRA_YAML = "limits:\n  ack_wait: 1s\n"

    def test_fetch_ack_and_what_a_message_holds(self):
        d = self.wsqd
        d.post("p.a", "one", headers={"Wsq-Header-Trace": "t1"})
        d.post("p.a", b"\x00\xff", content_type="application/octet-stream")
        d.publish("p.a", "three")
        st, doc = fetch(d, "p.a", **{"from": "earliest", "max": 2})
        self.assertEqual(st, 200, doc)
        m1, m2 = doc["messages"]
        self.assertEqual((m1["seq"], m1["data"], m1["headers"], m1["deliveries"]),
                         (1, "one", {"trace": "t1"}, 1))
        self.assertIsInstance(m1["ts"], int)
        self.assertEqual((m2["seq"], m2["data"], m2["enc"], m2["deliveries"]),
                         (2, "AP8=", "base64", 1))
        # leased: another fetch gets what follows, not these
        st, doc = fetch(d, "p.a", max=5)
        self.assertEqual([m["seq"] for m in doc["messages"]], [3])
        st, _, ack = settle(d, "ack", "p.a", [1, 2, 3, 3])
        self.assertEqual((st, ack), (200, {"acked": 3}))
        st, _, ack = settle(d, "ack", "p.a", [1])   # again: nothing new
        self.assertEqual(ack, {"acked": 0})
        st, doc = fetch(d, "p.a", max=5)
        self.assertEqual(doc, {"messages": []})

        def stored():
            rc, out, err = h.wsqctl("--data", d.data, "--json", "consumers", "p.a")
            c = json.loads(out)["consumers"][0]
            return (c["name"], c["pending"], c["lag"]) == ("w", 0, 0)
        h.wait_until(stored, what="the acks stored")

    def test_long_poll(self):
        d = self.wsqd
        d.publish("p.b", "old")
        st, doc = fetch(d, "p.b", max=1)   # creates the consumer at latest: nothing yet
        self.assertEqual(doc, {"messages": []})
        t0 = time.monotonic()
        threading.Timer(0.4, lambda: d.publish("p.b", "new")).start()
        st, doc = fetch(d, "p.b", max=10, wait="5s")
        took = time.monotonic() - t0
        self.assertEqual([m["data"] for m in doc["messages"]], ["new"])
        self.assertLess(took, 4.0)   # answered when the message came, not at the wait's end
        settle(d, "ack", "p.b", [doc["messages"][0]["seq"]])
        t0 = time.monotonic()
        st, doc = fetch(d, "p.b", max=10, wait=700)
        self.assertEqual(doc, {"messages": []})
        self.assertGreaterEqual(time.monotonic() - t0, 0.6)
        # a client that leaves while it waits leases nothing
        s = socket.create_connection((d.host, d.port))
        s.sendall(b"POST /fetch?topic=p.b&consumer=w&wait=10s HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 0\r\n\r\n")
        time.sleep(0.3)
        s.close()
        time.sleep(0.3)
        d.publish("p.b", "after")
        st, doc = fetch(d, "p.b", max=10, wait="2s")
        self.assertEqual([(m["data"], m["deliveries"]) for m in doc["messages"]], [("after", 1)])

    def test_expired_lease_nack_and_term(self):
        d = self.wsqd
        for x in ("a", "b", "c"):
            d.publish("p.c", x)
        st, doc = fetch(d, "p.c", **{"from": "earliest", "max": 3})
        self.assertEqual([m["seq"] for m in doc["messages"]], [1, 2, 3])
        # nack 2 with a delay, give 3 up
        st, _, r = settle(d, "nack", "p.c", [2], delay=300)
        self.assertEqual((st, r), (200, {"nacked": 1}))
        st, _, r = settle(d, "nack", "p.c", [3], term=True)
        self.assertEqual(r, {"nacked": 1})
        h.wait_until(lambda: d.history("p.c.dlq", "?from=1")[0] == 200, what="dead letter")
        dl = d.history("p.c.dlq", "?from=1")[2]["messages"][0]
        self.assertEqual((dl["data"], dl["headers"]["wsq-dead-reason"],
                          dl["headers"]["wsq-dead-seq"]), ("c", "term", "3"))
        # 1 is not acked: its lease expires (ack_wait 1s) and it comes again, with 2
        st, doc = fetch(d, "p.c", max=5, wait="3s")
        got = {m["seq"]: m["deliveries"] for m in doc["messages"]}
        while set(got) != {1, 2}:
            st, doc = fetch(d, "p.c", max=5, wait="3s")
            self.assertTrue(doc["messages"], got)
            got.update({m["seq"]: m["deliveries"] for m in doc["messages"]})
        self.assertEqual(got, {1: 2, 2: 2})
        # a nack of a message not leased over HTTP is nothing; acks settle both
        st, _, r = settle(d, "nack", "p.c", [3])
        self.assertEqual(r, {"nacked": 0})
        st, _, r = settle(d, "ack", "p.c", [1, 2])
        self.assertEqual(r, {"acked": 2})
        st, doc = fetch(d, "p.c", max=5)
        self.assertEqual(doc, {"messages": []})

    def test_shared_over_websocket_and_http(self):
        d = self.wsqd
        N = 200
        ws = h.SocketWS(d)
        ws.send_json({"op": "sub", "topic": "p.d", "consumer": "mix", "shared": True,
                      "from": "earliest", "window": 5, "ref": 1})
        ws.expect("subscribed")
        for i in range(N):
            d.publish("p.d", "m%d" % i)
        seen = {}
        ws_stop = threading.Event()

        def ws_worker():
            while not ws_stop.is_set():
                try:
                    f = ws.recv_json(timeout=0.2)
                except (TimeoutError, OSError):
                    continue
                if f["op"] == "msg":
                    seen.setdefault(f["seq"], []).append("ws")
                    ws.send_json({"op": "ack", "topic": "p.d", "seq": f["seq"]})

        t = threading.Thread(target=ws_worker)
        t.start()
        try:
            idle = 0
            while len(seen) < N and idle < 20:
                st, doc = fetch(d, "p.d", consumer="mix", shared=True, max=7, wait="300ms")
                self.assertEqual(st, 200, doc)
                if not doc["messages"]:
                    idle += 1
                for m in doc["messages"]:
                    seen.setdefault(m["seq"], []).append("http")
                if doc["messages"]:
                    st, _, r = settle(d, "ack", "p.d", [m["seq"] for m in doc["messages"]],
                                      consumer="mix")
                    self.assertEqual(r["acked"], len(doc["messages"]))
            h.wait_until(lambda: len(seen) >= N, what="all messages")
        finally:
            ws_stop.set()
            t.join()
        self.assertEqual(sorted(seen), list(range(1, N + 1)))
        self.assertEqual([s for s, v in seen.items() if len(v) > 1], [])   # each once
        by = [v[0] for v in seen.values()]
        self.assertGreater(by.count("ws"), 0)
        self.assertGreater(by.count("http"), 0)
        # the mode is the consumer's: a fetch without shared=true is a conflict
        st, doc = fetch(d, "p.d", consumer="mix")
        self.assertEqual((st, doc["error"]["code"]), (409, "conflict"))
        ws.close()

    def test_exclusive_consumer_and_takeover(self):
        d = self.wsqd
        for x in ("a", "b"):
            d.publish("p.e", x)
        ws = h.SocketWS(d)
        ws.subscribe("p.e", consumer="solo", window=1)
        st, doc = fetch(d, "p.e", consumer="solo")
        self.assertEqual((st, doc["error"]["code"]), (409, "conflict"))
        self.assertIn("WebSocket", doc["error"]["message"])
        ws.close()
        # leased over HTTP, then a WebSocket session takes the consumer over: it gets them
        st, doc = fetch(d, "p.e", consumer="pul", **{"from": "earliest", "max": 2})
        self.assertEqual([m["seq"] for m in doc["messages"]], [1, 2])
        ws = h.SocketWS(d)
        ws.subscribe("p.e", consumer="pul", frm="resume", window=5)
        got = [ws.expect("msg") for _ in range(2)]
        self.assertEqual([(m["seq"], m["deliveries"]) for m in got], [(1, 2), (2, 2)])
        ws.close()

    def test_ack_after_restart_is_stored(self):
        d = self.wsqd
        for x in ("a", "b"):
            d.publish("p.f", x)
        st, doc = fetch(d, "p.f", **{"from": "earliest", "max": 1})
        self.assertEqual([m["seq"] for m in doc["messages"]], [1])
        d.restart()
        st, _, r = settle(d, "ack", "p.f", [1, 2])   # 2 was never delivered: not acked
        self.assertEqual((st, r), (200, {"acked": 1}))
        st, _, r = settle(d, "nack", "p.f", [1])
        self.assertEqual(r, {"nacked": 0})
        st, doc = fetch(d, "p.f", max=5)
        self.assertEqual([(m["seq"], m["deliveries"]) for m in doc["messages"]], [(2, 1)])

    def test_refusals(self):
        d = self.wsqd
        d.publish("p.g", "x")

        def post(path, body=b""):
            return d.http_json("POST", path, body, {"Content-Type": "application/json"})

        cases = [
            ("/fetch", 400, "bad_request"),
            ("/fetch?topic=p.g", 400, "bad_request"),
            ("/fetch?consumer=w", 400, "bad_request"),
            ("/fetch?topic=a..b&consumer=w", 400, "bad_topic"),
            ("/fetch?topic=p.g&consumer=w w", 400, "bad_request"),
            ("/fetch?topic=p.g&consumer=w&max=0", 400, "bad_request"),
            ("/fetch?topic=p.g&consumer=w&max=1001", 400, "bad_request"),
            ("/fetch?topic=p.g&consumer=w&wait=61s", 400, "bad_request"),
            ("/fetch?topic=p.g&consumer=w&wait=soon", 400, "bad_request"),
            ("/fetch?topic=p.g&consumer=w&shared=yes", 400, "bad_request"),
            ("/fetch?topic=p.g&consumer=w&from=never", 400, "bad_request"),
        ]
        for path, status, code in cases:
            st, _, doc = post(path.replace(" ", "%20"))
            self.assertEqual((st, doc["error"]["code"]), (status, code), path)
        st, _, doc = d.http_json("GET", "/fetch?topic=p.g&consumer=w")
        self.assertEqual(st, 405)
        bodies = [
            (b"", "bad_json"), (b"[1]", "bad_request"), (b"{}", "bad_request"),
            (b'{"seqs":[]}', "bad_request"), (b'{"seqs":"1"}', "bad_type"),
            (b'{"seqs":[0]}', "bad_request"), (b'{"seqs":[1.5]}', "bad_type"),
            (b'{"seqs":[1],"delay":5}', "bad_request"), (b'{"seqs":[1],"term":true}',
                                                         "bad_request"),
        ]
        for body, code in bodies:
            st, _, doc = post("/ack?topic=p.g&consumer=w", body)
            self.assertEqual((st, doc["error"]["code"]), (400, code), body)
        st, _, doc = post("/nack?topic=p.g&consumer=w", b'{"seqs":[1],"term":true,"delay":1}')
        self.assertEqual((st, doc["error"]["code"]), (400, "bad_request"))
        st, _, doc = post("/nack?topic=p.g&consumer=w", b'{"seqs":[1],"term":1}')
        self.assertEqual((st, doc["error"]["code"]), (400, "bad_type"))
        st, _, doc = post("/ack?topic=p.nope&consumer=w", b'{"seqs":[1]}')
        self.assertEqual((st, doc["error"]["code"]), (404, "not_found"))
        st, _, doc = post("/ack?topic=p.g&consumer=nobody", b'{"seqs":[1]}')
        self.assertEqual((st, doc["error"]["code"]), (404, "not_found"))
        # unknown parameters are ignored, and of a repeated one the first counts, as everywhere
        # in HTTP
        st, _, doc = post("/fetch?topic=p.g&consumer=w&color=blue")
        self.assertEqual((st, doc), (200, {"messages": []}))
        d.publish("p.g", "y")
        d.publish("p.g", "z")
        st, _, doc = post("/fetch?topic=p.g&consumer=w&max=1&max=2&topic=p.h")
        self.assertEqual([m["data"] for m in doc["messages"]], ["y"])


class PullRights(h.WsqdTestCase):
    """Pulling needs the subscribe right on the topic."""
    EXTRA_YAML = ("auth:\n  anonymous:\n    publish: [\">\"]\n    subscribe: [\"open.>\"]\n")

    def test_forbidden(self):
        d = self.wsqd
        d.publish("closed.t", "x")
        st, doc = fetch(d, "closed.t")
        self.assertEqual((st, doc["error"]["code"]), (403, "forbidden"))
        st, _, doc = settle(d, "ack", "closed.t", [1])
        self.assertEqual((st, doc["error"]["code"]), (403, "forbidden"))
        st, doc = fetch(d, "open.t")
        self.assertEqual(st, 200)


if __name__ == "__main__":
    h.main(wsqctl=True)
