"""Publisher backpressure: a publisher that outruns the writer is paused with rx flow control
and resumed at low water. Nothing is dropped and the broker's memory stays bounded.

limits.max_inflight_publishes is set tiny so a pipelining client hits it at once; every
publish must still be confirmed, in order, and the pauses show in the metrics."""
import asyncio
import json

import wsqharness as h


class Backpressure(h.WsqdTestCase):
    EXTRA_YAML = "limits:\n  max_inflight_publishes: 4\n  writer_queue_high: 4KiB\n"

    def test_fast_publisher_is_paused_not_dropped(self):
        d = self.wsqd
        m0 = d.metrics()
        n = 3000
        payload = "x" * 512

        async def go():
            ws = await h.connect_v1(d)

            async def sender():
                for i in range(n):                    # never waits for confirms
                    await ws.send(json.dumps({"op": "pub", "topic": "bp.t", "data": payload,
                                              "ref": i}))

            task = asyncio.create_task(sender())
            oks = []
            while len(oks) < n:
                f = json.loads(await asyncio.wait_for(ws.recv(), 30 * h.SLOW))
                self.assertEqual(f["op"], "ok", f)
                oks.append(f)
            await task
            await ws.close()
            return oks

        oks = h.run(go(), timeout=120)
        self.assertEqual([o["ref"] for o in oks], list(range(n)))      # none lost, in order
        self.assertEqual([o["seq"] for o in oks], list(range(1, n + 1)))
        m1 = d.metrics()
        pauses = m1["wsq_publisher_pauses_total"] - m0["wsq_publisher_pauses_total"]
        self.assertGreater(pauses, 0, "the publisher was never paused")
        st, _, body = d.http_json("GET", "/topics/bp.t/messages?from=%d&limit=1" % n)
        self.assertEqual((st, body["messages"][0]["seq"], body["messages"][0]["data"]),
                         (200, n, payload))


if __name__ == "__main__":
    h.main()
