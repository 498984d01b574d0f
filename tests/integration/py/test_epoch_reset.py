#!/usr/bin/python3
"""wsq.v1 `sub` with the epoch a client remembers (docs/PROTOCOL.md "Concepts", "sub", "reset"):

- the epoch changes only when the topic is created again: here the data directory is removed
  while wsqd is stopped and the topic is published to again (a new store, a new topic);
- a `sub` naming the old epoch first gets `reset` {"op":"reset","topic","epoch":<new>,
  "first_seq","next_seq"}, then `subscribed`; an ephemeral subscription then starts from
  `earliest` of the new epoch, whatever `from` said;
- a durable consumer with the old epoch gets the `reset` too;
- with the current epoch (or none) there is no `reset`, and `from` is obeyed.
"""

import os
import shutil
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402

T = "epoch.t"


class EpochReset(h.WsqdTestCase):

    def epoch(self):
        st, _, body = self.wsqd.history(T, "?limit=1")
        self.assertEqual(st, 200, body)
        return body["epoch"]

    def recreate(self):
        """The topic with 2 messages, then deleted and created again with 3: -> (old, new)."""
        d = self.wsqd
        d.publish(T, "old 1")
        d.publish(T, "old 2")
        old = self.epoch()
        d.stop()
        shutil.rmtree(d.data)
        d.start()
        for i in range(1, 4):
            self.assertEqual(d.publish(T, "new %d" % i), i)
        new = self.epoch()
        self.assertRegex(new, r"^[0-9a-f]{16}$")
        self.assertNotEqual(new, old, "a topic created again has a new epoch")
        return old, new

    def test_stale_epoch_ephemeral_gets_reset_then_earliest(self):
        old, new = self.recreate()

        async def go():
            ws = await h.connect_v1(self.wsqd)
            await h.send_json(ws, {"op": "sub", "topic": T, "from": "latest", "epoch": old,
                                   "ref": 1})
            frames = [await h.recv_json(ws) for _ in range(5)]
            await h.expect_silence(ws)
            await ws.close()
            return frames

        reset, sub, *msgs = h.run(go())
        self.assertEqual(reset, {"op": "reset", "topic": T, "epoch": new, "first_seq": 1,
                                 "next_seq": 4})
        self.assertEqual((sub["op"], sub["ref"], sub["epoch"], sub["start_seq"]),
                         ("subscribed", 1, new, 1), sub)
        self.assertEqual([(m["op"], m["seq"], m["data"]) for m in msgs],
                         [("msg", 1, "new 1"), ("msg", 2, "new 2"), ("msg", 3, "new 3")])

    def test_stale_epoch_durable_consumer_gets_reset(self):
        old, new = self.recreate()

        async def go():
            ws = await h.connect_v1(self.wsqd)
            await h.send_json(ws, {"op": "sub", "topic": T, "consumer": "c", "from": "earliest",
                                   "epoch": old, "ref": 1})
            frames = [await h.recv_json(ws) for _ in range(5)]
            await ws.close()
            return frames

        reset, sub, *msgs = h.run(go())
        self.assertEqual(reset, {"op": "reset", "topic": T, "epoch": new, "first_seq": 1,
                                 "next_seq": 4})
        self.assertEqual((sub["op"], sub["consumer"], sub["epoch"], sub["start_seq"]),
                         ("subscribed", "c", new, 1), sub)
        self.assertEqual([m["seq"] for m in msgs], [1, 2, 3])

    def test_current_epoch_no_reset(self):
        old, new = self.recreate()

        async def go():
            ws = await h.connect_v1(self.wsqd)
            await h.send_json(ws, {"op": "sub", "topic": T, "from": "latest", "epoch": new,
                                   "ref": 1})
            sub = await h.recv_json(ws)
            await h.expect_silence(ws)             # latest: nothing old, no reset
            ok = await h.pub_confirmed(ws, T, "new 4", 2)
            m = await h.expect_op(ws, "msg")
            # an epoch that is not 16 hex digits is a bad request
            await h.send_json(ws, {"op": "sub", "topic": "epoch.u", "epoch": "xyz", "ref": 3})
            err = await h.recv_json(ws)
            await ws.close()
            return sub, ok, m, err

        sub, ok, m, err = h.run(go())
        self.assertEqual((sub["op"], sub["epoch"], sub["start_seq"]), ("subscribed", new, 4), sub)
        self.assertEqual((ok["seq"], m["seq"], m["data"]), (4, 4, "new 4"))
        self.assertEqual((err["op"], err["code"], err["ref"]), ("err", "bad_request", 3), err)


if __name__ == "__main__":
    h.main()
