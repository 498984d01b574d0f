#!/usr/bin/python3
"""Memory bound: slow and stalled consumers against a 1,000,000-message backlog keep wsqd's
memory bounded.

A durable consumer is created (from earliest) before the backlog is published: 1,000,000
messages of 128 bytes over 4 pipelined wsq.v1 connections (WSQ_FAULT_BACKLOG=N changes the
count; a sanitizer build of wsqd gets 200,000, and the bound is not asserted there: ASan's
shadow memory and quarantine are not wsqd's). Then, for 10 seconds:
- the durable consumer drains slowly: window 10, an `upto` ack every 10 messages, 5 ms pause;
- 11 ephemeral wsq.v1 subscriptions from earliest with the largest window (10000) and a raw-mode
  subscription from earliest never read their sockets (4 KiB receive buffers);
and wsqd's /proc/PID/status is sampled every 250 ms: VmRSS, and RssAnon, which leaves out the
file-backed pages of LMDB's map (the backlog is read through the map; those pages are the page
cache's, reclaimable, not wsqd's heap).

The bound: RssAnon stays below idle + 16 MiB + 1 MiB per subscription (13 here: 29 MiB above
idle). Why: a subscription never has more than its window in flight and at most 1 MiB queued in
wsqd for its socket (docs/OPERATIONS.md, "Flow control and memory"); 16 MiB covers the fixed
cost (per-connection buffers of lws, the consumer thread's read buffers, the writer's queue and
malloc's arenas). Holding the backlog would cost far more: 1,000,000 x 128 B is 128 MB of
payload, more as JSON frames, per subscription. The samples of the second half of the window
may not exceed the first half's peak by more than 2 MiB (no creep), and the slow consumer must
receive its messages in order without a gap.
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultutil as fu  # noqa: E402
import wsqharness as h  # noqa: E402

STALLED = 11          # ephemeral wsq.v1 subscriptions that never read
SECONDS = 10.0
MiB = 1024


class MemoryBound(h.WsqdTestCase):
    START = False

    def test_slow_consumers_on_a_big_backlog_keep_rss_bounded(self):
        sanitized = h.instrumented()
        backlog = int(os.environ.get("WSQ_FAULT_BACKLOG") or (200000 if sanitized else 1000000))
        d = self.new_wsqd(log_level="info").start()
        topic = "mem.backlog"
        c0 = h.SocketWS(d)
        c0.send_json({"op": "sub", "topic": topic, "consumer": "slow", "from": "earliest",
                      "ref": 1})
        c0.expect("subscribed")
        c0.close()
        time.sleep(0.3)
        idle = h.proc_status(d.pid)

        t0 = time.monotonic()
        n = fu.preload(d, topic, backlog, size=128, conns=4, window=2000)
        self.assertEqual(n, backlog)
        took = time.monotonic() - t0
        loaded = h.proc_status(d.pid)
        sys.stderr.write("\nbacklog: %d messages of 128 B confirmed in %.1f s (%.0f/s); "
                         "data.mdb %.0f MiB\n"
                         % (n, took, n / took,
                            os.path.getsize(os.path.join(d.data, "data.mdb")) / 2**20))

        stop = threading.Event()
        slow = {"last": 0, "err": None}

        def slow_consumer():
            try:
                c = h.SocketWS(d, timeout=30)
                c.send_json({"op": "sub", "topic": topic, "consumer": "slow",
                             "from": "earliest", "window": 10, "ref": 1})
                s = c.expect("subscribed")
                if s["start_seq"] != 1:
                    raise AssertionError("slow consumer starts at %r" % s)
                while not stop.is_set():
                    for _ in range(10):
                        m = c.expect("msg")
                        if m["seq"] != slow["last"] + 1:
                            raise AssertionError("slow consumer got seq %d after %d"
                                                 % (m["seq"], slow["last"]))
                        slow["last"] = m["seq"]
                    c.send_json({"op": "ack", "topic": topic, "upto": slow["last"]})
                    time.sleep(0.005)
                c.close()
            except Exception as e:  # noqa: BLE001
                slow["err"] = e

        th = threading.Thread(target=slow_consumer, daemon=True)
        th.start()
        stalled = []
        for i in range(STALLED):
            c = h.SocketWS(d, rcvbuf=4096)
            c.send_json({"op": "sub", "topic": topic, "from": "earliest", "window": 10000,
                         "ref": i})
            stalled.append(c)
        stalled.append(h.SocketWS(d, rcvbuf=4096, path="/topics/%s?from=earliest" % topic,
                             subprotocol=None))
        subs = len(stalled) + 1

        samples = []
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            time.sleep(0.25)
            st = h.proc_status(d.pid)
            samples.append((st["VmRSS"], st["RssAnon"]))
        stop.set()
        th.join(30 * h.SLOW)
        peak = h.proc_status(d.pid)
        for c in stalled:
            c.close()
        self.assertIsNone(slow["err"], "slow consumer: %r" % slow["err"])
        self.assertGreater(slow["last"], 100, "the slow consumer hardly moved")

        anon = [s[1] for s in samples]
        rss = [s[0] for s in samples]
        bound = idle["RssAnon"] + 16 * MiB + subs * MiB
        half = len(anon) // 2
        sys.stderr.write(
            "RssAnon kB: idle %d, after the preload %d, during the drain min %d max %d "
            "(bound %d = idle + 16 MiB + %d x 1 MiB)\n"
            "VmRSS kB: idle %d, after the preload %d, during the drain min %d max %d; VmHWM %d\n"
            "slow consumer: %d messages in %.0f s; %d stalled subscriptions\n"
            % (idle["RssAnon"], loaded["RssAnon"], min(anon), max(anon), bound, subs,
               idle["VmRSS"], loaded["VmRSS"], min(rss), max(rss), peak["VmHWM"],
               slow["last"], SECONDS, len(stalled)))
        if sanitized:
            sys.stderr.write("a sanitizer build: the RSS bound is not asserted (shadow "
                             "memory, quarantine)\n")
        else:
            self.assertLess(max(anon), bound, "RssAnon above the bound: samples %r" % anon)
            self.assertLessEqual(max(anon[half:]), max(anon[:half]) + 2 * MiB,
                                 "RssAnon creeps up: %r" % anon)
        self.assertTrue(d.running())
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.log_problems(), [])

    def test_large_messages_queue_at_most_1_mib_per_subscription(self):
        """A window counts messages, not bytes: 2,000 stalled messages of 64 KiB would be 128
        MiB a subscription. The 1 MiB a subscription may queue for its socket is what bounds
        it (a plain subscription, a durable one and a pattern's topics)."""
        d = self.new_wsqd(log_level="info").start()
        topic = "mem.large.t"
        time.sleep(0.3)
        idle = h.proc_status(d.pid)
        n = fu.preload(d, topic, 2000, size=65536, conns=2, window=50)
        self.assertEqual(n, 2000)
        stalled = []
        for i, extra in enumerate(({}, {"consumer": "c"}, {"topic": "mem.large.>"})):
            c = h.SocketWS(d, rcvbuf=4096)
            c.send_json(dict({"op": "sub", "topic": topic, "from": "earliest", "window": 2000,
                              "ref": i}, **extra))
            stalled.append(c)
        time.sleep(2.0 * h.SLOW)
        anon = h.proc_status(d.pid)["RssAnon"]
        for c in stalled:
            c.close()
        sys.stderr.write("\nRssAnon kB: idle %d, with 3 stalled subscriptions on 128 MiB of "
                         "messages %d\n" % (idle["RssAnon"], anon))
        if not h.instrumented():
            self.assertLess(anon, idle["RssAnon"] + 16 * MiB + 3 * MiB)
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    h.main(wsqctl=True)
