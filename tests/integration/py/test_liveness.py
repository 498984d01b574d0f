"""Liveness: wsqd pings idle connections itself (limits.ping_interval) and drops those that stay
silent for limits.idle_timeout; a client that answers pings (python-websockets does) stays.

Regression for the liveness sweep that replaced lws's per-connection validity timers."""
import asyncio
import time

import wsqharness as h


class Liveness(h.WsqdTestCase):
    EXTRA_YAML = "limits:\n  ping_interval: 1s\n  idle_timeout: 3s\n"

    def test_silent_client_is_pinged_then_dropped(self):
        d = self.wsqd
        c = h.SocketWS(d, "/", timeout=10)
        t0 = time.monotonic()
        op, fin, payload = c.recv_frame()      # we never answer
        pinged_after = time.monotonic() - t0
        self.assertEqual((op, fin), (9, True))
        self.assertGreater(len(payload), 0)    # non-empty: lws reports pongs to wsqd
        with self.assertRaises((EOFError, ConnectionResetError)):
            while True:
                c.recv_frame()
        dropped_after = time.monotonic() - t0
        c.close()
        self.assertGreaterEqual(pinged_after, 0.7)
        self.assertLess(pinged_after, 3.0 * h.SLOW)
        self.assertGreaterEqual(dropped_after, 2.5)
        self.assertLess(dropped_after, 6.0 * h.SLOW)
        d.wait_log(r"idle_timeout sid=\d+")

    def test_client_answering_pings_stays(self):
        d = self.wsqd

        async def go():
            ws = await h.connect_v1(d)
            await asyncio.sleep(5.0)           # > idle_timeout; websockets answers the pings
            await h.send_json(ws, {"op": "ping", "ref": 1})
            pong = await h.recv_json(ws)
            await ws.close()
            return pong

        self.assertEqual(h.run(go()), {"op": "pong", "ref": 1})
        self.assertNotIn("idle_timeout", d.log())

    def test_raw_pong_keeps_a_silent_client(self):
        d = self.wsqd
        c = h.SocketWS(d, "/topics/live.t", subprotocol=None, timeout=10)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5.0:     # answer every ping with a pong, send nothing else
            op, fin, payload = c.recv_frame()
            self.assertEqual(op, 9)
            c.send_frame(10, payload)
        c.send_frame(1, b"still here")
        c.send_frame(8, b"\x03\xe8")
        code, reason, _ = c.recv_close()
        c.close()
        self.assertEqual(code, 1000)
        self.assertNotIn("idle_timeout", d.log())


if __name__ == "__main__":
    h.main()
