#!/usr/bin/python3
"""wsq.v1 `sub` with `"from": {"time": UNIX_MS}` (docs/PROTOCOL.md "sub"; raw mode's
`from=time:` is the same rule: the first message with `ts` at or after the time):

- a time equal to a message's ts starts at that message; a time between two messages starts at
  the later one; 0 (and any time before the first message) starts at the first retained one;
- a time ahead of the log starts at next_seq, and a message stamped before that time is not
  delivered even when it is published after the `sub`; the first one stamped at or after it is;
- a new durable consumer starts at the time's message too; once it exists, `from` is ignored
  and it resumes;
- a negative time is a bad request.
The ts of each message is read back from the HTTP history (wsqd's clock), never guessed.
"""

import asyncio
import os
import sys
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402
import sechelp as s  # noqa: E402

T = "time.t"


class FromTime(h.WsqdTestCase):

    def publish_spaced(self, n):
        """n messages with strictly increasing ts -> [ts of seq 1, ...]."""
        for i in range(1, n + 1):
            self.wsqd.publish(T, "m%d" % i)
            time.sleep(0.02)   # 20 ms apart: distinct ms stamps
        st, _, hist = self.wsqd.history(T, "?from=1")
        ts = [m["ts"] for m in hist["messages"]]
        self.assertEqual(len(ts), n)
        self.assertEqual(ts, sorted(set(ts)), "ts not strictly increasing: %r" % ts)
        return ts

    def sub_from(self, frm, n, consumer=None):
        """Subscribes from frm; -> (subscribed, [seqs of the next n messages])."""
        async def go():
            ws = await h.connect_v1(self.wsqd)
            m = {"op": "sub", "topic": T, "from": frm, "ref": 1}
            if consumer:
                m["consumer"] = consumer
            await h.send_json(ws, m)
            sub = await h.expect_op(ws, "subscribed")
            msgs = [await h.expect_op(ws, "msg") for _ in range(n)]
            await h.expect_silence(ws)
            await ws.close()
            return sub, [x["seq"] for x in msgs]
        return h.run(go())

    def test_time_of_a_message_between_and_before(self):
        ts = self.publish_spaced(4)
        sub, seqs = self.sub_from({"time": ts[1]}, 3)
        self.assertEqual((sub["start_seq"], seqs), (2, [2, 3, 4]), sub)
        sub, seqs = self.sub_from({"time": ts[1] + 1}, 2)      # after m2's ms: m3 is first
        self.assertEqual((sub["start_seq"], seqs), (3, [3, 4]), sub)
        sub, seqs = self.sub_from({"time": ts[2] - 1}, 2)      # between m2 and m3
        self.assertEqual((sub["start_seq"], seqs), (3, [3, 4]), sub)
        sub, seqs = self.sub_from({"time": 0}, 4)
        self.assertEqual((sub["start_seq"], seqs), (1, [1, 2, 3, 4]), sub)
        sub, seqs = self.sub_from({"time": ts[0] - 60000}, 4)  # a minute before the log
        self.assertEqual((sub["start_seq"], seqs), (1, [1, 2, 3, 4]), sub)

    def test_time_ahead_of_the_log(self):
        d = self.wsqd
        self.publish_spaced(2)
        ahead = int(time.time() * 1000) + int(1500 * h.SLOW)

        async def go():
            ws = await h.connect_v1(d)
            await h.send_json(ws, {"op": "sub", "topic": T, "from": {"time": ahead}, "ref": 1})
            sub = await h.expect_op(ws, "subscribed")
            early = d.publish(T, "too early")            # stamped before `ahead`
            await h.expect_silence(ws, 0.3)
            while time.time() * 1000 <= ahead:            # wsqd stamps with this clock
                await asyncio.sleep(0.02)
            late = d.publish(T, "in time")
            m = await h.expect_op(ws, "msg")
            await ws.close()
            return sub, early, late, m

        sub, early, late, m = h.run(go())
        self.assertEqual(sub["start_seq"], 3, sub)
        self.assertEqual((early, late), (3, 4))
        self.assertEqual((m["seq"], m["data"]), (4, "in time"), m)
        self.assertGreaterEqual(m["ts"], ahead)

    def test_new_durable_consumer_then_resume(self):
        ts = self.publish_spaced(3)
        sub, seqs = self.sub_from({"time": ts[1]}, 2, consumer="tc")
        self.assertEqual((sub["start_seq"], sub["resumed"], seqs), (2, False, [2, 3]), sub)
        # it exists now: from is ignored, it resumes at its first unacknowledged message (2)
        sub, seqs = self.sub_from({"time": ts[2]}, 2, consumer="tc")
        self.assertEqual((sub["start_seq"], sub["resumed"], seqs), (2, True, [2, 3]), sub)

    def test_negative_time_is_a_bad_request(self):
        async def go():
            ws = await h.connect_v1(self.wsqd)
            await h.send_json(ws, {"op": "sub", "topic": T, "from": {"time": -1}, "ref": 9})
            err = await s.expect_err(ws, "bad_request", 9)
            await ws.close()
            return err
        self.assertIn("time", h.run(go())["message"])


if __name__ == "__main__":
    h.main()
