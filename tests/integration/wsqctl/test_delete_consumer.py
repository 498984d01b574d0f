#!/usr/bin/python3
"""delete-consumer of an active consumer, live, under publish load.

Documented outcome (docs/wsqctl.md): the consumer's state is deleted at once; its live session is
closed with WebSocket close 4014 "consumer deleted"; other sessions and consumers of the topic are
not affected; the name is free again (a later subscribe creates a new consumer that starts where
its `from` says). Deleting it again is exit 3.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctlharness as c  # noqa: E402
import wsqharness as h  # noqa: E402


def consumer_names(tc, d, topic):
    doc = tc.ctl_json("-c", d.conf, "consumers", topic)
    return sorted(c["name"] for c in doc["consumers"])


class DeleteConsumer(c.CtlTestCase):

    def test_delete_active_consumer(self):
        d = self.wsqd
        load = c.Load(d, "dc.t", pause=0.005)
        load.start()
        self.addCleanup(load.stop)
        load.wait_for(10)
        victim = h.SocketWS(d)
        self.addCleanup(victim.close)
        victim.subscribe("dc.t", consumer="victim", window=1000)
        bystander = h.SocketWS(d)
        self.addCleanup(bystander.close)
        bystander.subscribe("dc.t", consumer="bystander", window=1000)
        victim.expect("msg")
        bystander.expect("msg")
        h.wait_until(lambda: consumer_names(self, d, "dc.t") == ["bystander", "victim"],
                     what="both consumers stored")

        res = self.ctl_json("-c", d.conf, "delete-consumer", "dc.t", "victim")
        self.assertEqual(res, {"topic": "dc.t", "consumer": "victim", "deleted": True,
                               "via": "broker"})
        # the victim's session is closed with 4014
        with self.assertRaises(h.Closed) as cm:
            while True:
                victim.recv(10)
        self.assertEqual((cm.exception.code, cm.exception.reason), (4014, "consumer deleted"))
        # the bystander goes on receiving the load
        seq0 = bystander.expect("msg")["seq"]
        for _ in range(5):
            f = bystander.expect("msg")
            bystander.send_json({"op": "ack", "topic": "dc.t", "upto": f["seq"]})
        self.assertGreater(f["seq"], seq0)
        # the consumer is gone from the store, and stays gone
        h.wait_until(lambda: consumer_names(self, d, "dc.t") == ["bystander"],
                     what="victim deleted")
        out, err = self.ctl_fails(3, "-c", d.conf, "delete-consumer", "dc.t", "victim",
                                  pattern=r"consumer 'victim' does not exist on topic 'dc\.t'")
        # its name is free: a new subscribe creates a new consumer (from latest by default)
        again = h.SocketWS(d)
        self.addCleanup(again.close)
        sub = again.subscribe("dc.t", consumer="victim", frm="latest")
        self.assertFalse(sub["resumed"])
        self.assertEqual(load.errors, [])

    def test_delete_consumer_of_wsqctl_sub(self):
        """wsqctl sub as the victim: it exits 1 and, with --json, says how it was closed."""
        d = self.wsqd
        d.publish("dc.s", "one")
        p = self.spawn("-c", d.conf, "--json", "sub", "dc.s", "--consumer", "cli",
                       "--from", "earliest")
        first = json.loads(p.stdout.readline())
        self.assertEqual((first["op"], first["seq"], first["data"]), ("msg", 1, "one"))
        h.wait_until(lambda: consumer_names(self, d, "dc.s") == ["cli"], what="cli stored")
        out, _ = self.ctl_ok("-c", d.conf, "delete-consumer", "dc.s", "cli")
        self.assertEqual(out, "deleted consumer cli of dc.s via the broker (its live session, "
                              "if any, was closed with 4014)\n")
        rest, err = p.communicate(timeout=10 * h.SLOW)
        self.assertEqual(p.returncode, 1, err)
        lines = [json.loads(x) for x in rest.decode().splitlines()]
        self.assertEqual(lines[0], {"op": "close", "code": 4014, "reason": "consumer deleted"})
        self.assertEqual(lines[1]["error"]["code"], "closed")
        self.assertIn(b"the broker closed the connection: 4014 consumer deleted", err)


if __name__ == "__main__":
    c.main()
