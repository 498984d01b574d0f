#!/usr/bin/python3
"""Graceful shutdown with python3-websockets clients connected, against the real wsqd.

PROTOCOL.md close codes: 1001 "server shutdown" when wsqd is stopping: every confirmed publish
is durable and queued frames were sent first. wsqd's usage: SIGTERM shuts down gracefully and
exits 0 (within limits.shutdown_timeout, 5 s by default). After a restart on the same data dir,
every confirmed message is readable (HTTP history).
"""

import asyncio
import json
import os
import signal
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402

import websockets.exceptions  # noqa: E402

T = "shutdown.t"


class Publisher:
    """Pipelined publishes with confirms (up to 16 in flight) until the connection closes."""

    def __init__(self, d):
        self.d = d
        self.sent = 0
        self.oks = []        # (ref, seq)
        self.errs = []
        self.other = []
        self.close = None

    async def run(self):
        ws = await h.connect_v1(self.d)
        inflight = asyncio.Semaphore(16)

        async def reader():
            try:
                while True:
                    r = await h.recv_json(ws, 30)
                    inflight.release()
                    if r.get("op") == "ok":
                        self.oks.append((r["ref"], r["seq"], r["topic"]))
                    elif r.get("op") == "err":
                        self.errs.append(r)
                    else:
                        self.other.append(r)
            except websockets.exceptions.ConnectionClosed:
                self.close = (ws.close_code, ws.close_reason)
                inflight.release()   # wake the writer loop so that it sees the close

        rt = asyncio.ensure_future(reader())
        try:
            while self.close is None:
                await inflight.acquire()
                if self.close is not None:
                    break
                self.sent += 1
                await h.send_json(ws, {"op": "pub", "topic": T, "ref": self.sent,
                                       "data": "p%d" % self.sent})
        except websockets.exceptions.ConnectionClosed:
            pass
        await rt


async def collect(ws, v1):
    frames = []
    try:
        while True:
            f = await h.recv(ws, 30)
            frames.append(json.loads(f) if v1 else f)
    except websockets.exceptions.ConnectionClosed:
        return ws.close_code, ws.close_reason, frames


class Shutdown(h.WsqdTestCase):

    def test_sigterm_with_clients(self):
        d = self.wsqd
        pub = Publisher(d)

        async def go():
            sub = await h.connect_v1(d)
            await h.send_json(sub, {"op": "sub", "topic": T, "consumer": "sd",
                                    "from": "earliest", "ref": 1})
            subscribed = await h.expect_op(sub, "subscribed")
            raw = await h.connect_raw(d, "/topics/%s?from=earliest" % T)
            idle = await h.connect_v1(d)
            tasks = [asyncio.ensure_future(collect(sub, True)),
                     asyncio.ensure_future(collect(raw, False)),
                     asyncio.ensure_future(collect(idle, True)),
                     asyncio.ensure_future(pub.run())]
            # let traffic flow, then SIGTERM in the middle of it
            deadline = time.monotonic() + 5 * h.SLOW
            while len(pub.oks) < 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
            os.kill(d.pid, signal.SIGTERM)
            results = await asyncio.gather(*tasks)
            t_closed = time.monotonic() - t0
            # wsqd exits on its own, quickly
            while d.proc.poll() is None and time.monotonic() - t0 < 10 * h.SLOW:
                await asyncio.sleep(0.01)
            t_exit = time.monotonic() - t0
            return subscribed, results, t_closed, t_exit

        subscribed, results, t_closed, t_exit = h.run(go())
        self.assertEqual(subscribed["start_seq"], 1)
        rc = d.proc.poll()
        self.assertEqual(rc, 0, "wsqd exit status after SIGTERM (took %.2fs)" % t_exit)
        self.assertLess(t_exit, 3.0 * h.SLOW, "wsqd took %.2fs to exit" % t_exit)
        self.assertRegex(d.log(), r"shutdown phase=done")

        (c_sub, r_sub, f_sub), (c_raw, r_raw, f_raw), (c_idle, r_idle, f_idle), _ = results

        # restart on the same data dir first, so that a failure below can say what was stored
        d.start()
        st, _, hist = d.history(T, "?from=1&limit=1000")
        self.assertEqual(st, 200, hist)
        stored = hist["messages"]
        while stored and hist["messages"] and stored[-1]["seq"] + 1 < hist["next_seq"]:
            st, _, hist = d.history(T, "?from=%d&limit=1000" % (stored[-1]["seq"] + 1))
            stored += hist["messages"]
        info = ("publisher: sent %d, confirmed %d, err frames %r; stored after restart %d; "
                "sub got %d, raw got %d" % (pub.sent, len(pub.oks), pub.errs[:3], len(stored),
                                            len(f_sub), len(f_raw)))

        want = (1001, "server shutdown")
        self.assertEqual((c_sub, r_sub), want, "wsq.v1 subscriber close; " + info)
        self.assertEqual((c_raw, r_raw), want, "raw subscriber close; " + info)
        self.assertEqual((c_idle, r_idle), want, "idle wsq.v1 client close; " + info)
        self.assertEqual(pub.close, want, "publisher close; " + info)
        self.assertEqual(f_idle, [])
        self.assertEqual(pub.other, [])

        # confirms: in order, seq == ref (a single publisher on a fresh topic)
        self.assertGreaterEqual(len(pub.oks), 200)
        self.assertEqual(pub.oks, [(i, i, T) for i in range(1, len(pub.oks) + 1)])
        for e in pub.errs:   # publishes that arrived during the shutdown are refused as closed
            self.assertEqual(e.get("code"), "closed", e)
            self.assertGreater(e.get("ref"), len(pub.oks), e)
        # deliveries before the close: a gap-free prefix, in order
        sub_seqs = [m["seq"] for m in f_sub if m["op"] == "msg"]
        self.assertEqual([m["op"] for m in f_sub], ["msg"] * len(f_sub))
        self.assertEqual(sub_seqs, list(range(1, len(sub_seqs) + 1)))
        self.assertEqual(f_raw, ["p%d" % i for i in range(1, len(f_raw) + 1)])

        # after the restart on the same data dir: every confirmed message is there
        self.assertEqual([m["seq"] for m in stored], list(range(1, len(stored) + 1)))
        self.assertGreaterEqual(len(stored), len(pub.oks),
                                "confirmed %d, stored after restart %d"
                                % (len(pub.oks), len(stored)))
        for m in stored:
            self.assertEqual(m["data"], "p%d" % m["seq"])
        # the server confirms everything it committed before saying goodbye (every err above
        # is `closed`, a publish that was not stored): stored == confirmed, exactly
        self.assertEqual(len(stored), len(pub.oks),
                         "stored but never confirmed: seqs %d..%d"
                         % (len(pub.oks) + 1, len(stored)))
        self.assertLessEqual(len(stored), pub.sent)

        # the durable consumer survived too: it resumes at its first unacked message (1)
        async def resume():
            ws = await h.connect_v1(d)
            await h.send_json(ws, {"op": "sub", "topic": T, "consumer": "sd", "ref": 2})
            s = await h.expect_op(ws, "subscribed")
            m = await h.expect_op(ws, "msg")
            await ws.close()
            return s, m

        s, m = h.run(resume())
        self.assertEqual((s["resumed"], s["start_seq"], s["next_seq"]),
                         (True, 1, len(stored) + 1), s)
        self.assertEqual((m["seq"], m["deliveries"]), (1, 2), m)
        d.stop(expect_rc=0)

    def test_sigterm_slow_reader_gets_every_confirm_then_1001(self):
        """A publisher that reads its confirms slowly (small receive buffer, reads only after
        the SIGTERM): "queued frames were sent first" means it still gets an ok for every
        message wsqd committed, then the 1001 close frame."""
        d = self.wsqd
        ws = h.SocketWS(d, "/", rcvbuf=4096, timeout=10)
        sent = [0]
        stop = threading.Event()

        def flood():
            try:
                while not stop.is_set() and sent[0] < 20000:
                    ref = "r%07d-%s" % (sent[0] + 1, "x" * 100)
                    ws.send_frame(0x1, json.dumps({"op": "pub", "topic": T, "ref": ref,
                                                   "data": "p%d" % (sent[0] + 1)}).encode())
                    sent[0] += 1
            except OSError:
                pass

        th = threading.Thread(target=flood, daemon=True)
        th.start()
        time.sleep(0.5)                 # nothing read yet: wsqd's writes to us back up
        os.kill(d.pid, signal.SIGTERM)
        oks, errs, close, end = [], [], None, None
        try:
            while True:
                op, fin, data = ws.recv_frame()
                if op == 0x8:
                    close = (struct.unpack("!H", data[:2])[0], data[2:].decode())
                    break
                r = json.loads(data)
                (oks if r.get("op") == "ok" else errs).append(r)
        except (OSError, EOFError) as e:
            end = repr(e)
        stop.set()
        ws.close()
        th.join(10)
        rc = d.proc.wait(10 * h.SLOW)
        d.start()
        st, _, hist = d.history(T, "?limit=1")
        stored = hist["next_seq"] - 1 if st == 200 else 0
        info = ("sent %d, oks %d (last seq %s), other frames %d %r, stored after restart %d, "
                "connection end: %s" % (sent[0], len(oks), oks[-1]["seq"] if oks else None,
                                        len(errs), errs[:2], stored, end or "close frame"))
        self.assertEqual(rc, 0, info)
        # something was committed before the SIGTERM, or the comparison below proves nothing
        self.assertGreater(len(oks), 0, "no confirm at all; " + info)
        self.assertEqual([o["seq"] for o in oks], list(range(1, len(oks) + 1)), info)
        self.assertEqual(close, (1001, "server shutdown"), info)
        self.assertEqual(len(oks), stored, "committed messages without a confirm; " + info)
        for e in errs:
            self.assertEqual((e.get("op"), e.get("code")), ("err", "closed"), info)

    def test_sigterm_idle_exits_zero_fast(self):
        d = self.wsqd
        t0 = time.monotonic()
        d.stop(expect_rc=0)
        self.assertLess(time.monotonic() - t0, 2.0 * h.SLOW)
        d.start()
        self.assertEqual(d.http_json("GET", "/healthz")[0], 200)
        d.stop(expect_rc=0)


if __name__ == "__main__":
    h.main()
