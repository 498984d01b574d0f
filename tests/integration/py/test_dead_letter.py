#!/usr/bin/python3
"""Dead letters (issue 13, docs/PROTOCOL.md "dead"): with max_deliver set (retention rules), a message
delivered that many times without an ack is never skipped silently: its copy goes to the
topic's dead-letter topic <topic>.dlq, acknowledged for the consumer in the same transaction,
and the subscription hears {"op":"dead",...}.

- two nacks with max_deliver 2: `dead` names the seq, dead_topic and dead_seq; the copy holds
  the payload byte-exact (text and binary), the message's own headers, and wsq-dead-topic,
  -seq, -consumer, -deliveries and -reason; wsq_dead_lettered_total counts;
- the messages around it are delivered as usual, and the consumer does not get it again, not
  even after a restart (the acknowledgement was stored with the copy);
- another consumer of the same topic keeps its own count: the message is still its to read;
- nack with "term": true gives a message up at once (reason term); term is a boolean and takes
  no delay;
- a rule's own max_deliver and dead_letter template ("dead.{topic}"); limits.max_deliver is
  refused at startup with where it moved.
"""

import base64
import json
import os
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402


class DeadLetter(h.WsqdTestCase):
    EXTRA_YAML = ("limits:\n  ack_wait: 0\n"
                  "retention:\n  default:\n    max_deliver: 2\n  topics:\n"
                  "    - {pattern: \"dl.c.>\", max_deliver: 1, dead_letter: \"dead.{topic}\"}\n")

    def test_poison_message_goes_to_the_dead_letter_topic(self):
        d = self.wsqd
        ws = h.SocketWS(d)
        msgs = [{"data": "ok-1"},
                {"data": "poison", "headers": {"trace-id": "t7", "wsq-dead-topic": "forged"}},
                {"data": base64.b64encode(b"\x00\xffbin").decode(), "enc": "base64"},
                {"data": "ok-2"}]
        for i, m in enumerate(msgs):
            ws.send_json(dict(m, op="pub", topic="dl.t", ref=i))
            self.assertEqual(ws.expect("ok")["seq"], i + 1)
        ws.subscribe("dl.t", consumer="worker", window=10)
        got = {}
        dead = []
        # ack 1 and 4, nack 2 and 3 every time they come
        while len(dead) < 2 or len(got) < 4:
            f = ws.recv_json()
            if f["op"] == "msg":
                got.setdefault(f["seq"], []).append(f.get("deliveries", 1))
                if f["seq"] in (2, 3):
                    ws.send_json({"op": "nack", "topic": "dl.t", "seq": f["seq"]})
                else:
                    ws.send_json({"op": "ack", "topic": "dl.t", "seq": f["seq"]})
            elif f["op"] == "dead":
                dead.append(f)
            else:
                self.fail("unexpected %r" % f)
        self.assertEqual(got, {1: [1], 2: [1, 2], 3: [1, 2], 4: [1]})
        self.assertEqual(sorted((x["seq"], x["dead_topic"]) for x in dead),
                         [(2, "dl.t.dlq"), (3, "dl.t.dlq")])
        self.assertEqual(sorted(x["dead_seq"] for x in dead), [1, 2])
        ws.close()
        # the copies
        st, _, page = d.history("dl.t.dlq", "?from=1")
        self.assertEqual(st, 200, page)
        by_src = {int(m["headers"]["wsq-dead-seq"]): m for m in page["messages"]}
        poison = by_src[2]
        self.assertEqual(poison["data"], "poison")
        self.assertEqual(poison["headers"], {"trace-id": "t7", "wsq-dead-topic": "dl.t",
                                             "wsq-dead-seq": "2", "wsq-dead-consumer": "worker",
                                             "wsq-dead-deliveries": "2",
                                             "wsq-dead-reason": "max_deliver"})
        self.assertEqual((by_src[3]["enc"], base64.b64decode(by_src[3]["data"])),
                         ("base64", b"\x00\xffbin"))
        self.assertEqual(d.metrics().get("wsq_dead_lettered_total"), 2)
        # never again for this consumer, also after a restart
        d.restart()
        ws = h.SocketWS(d)
        sub = ws.subscribe("dl.t", consumer="worker", frm="resume")
        self.assertEqual(sub["start_seq"], 5, sub)
        ws.send_json({"op": "ping", "ref": "p"})
        self.assertEqual(ws.recv_json(), {"op": "pong", "ref": "p"})
        # another consumer has its own count: all four are its to read
        other = h.SocketWS(d)
        other.subscribe("dl.t", consumer="auditor", frm="earliest")
        self.assertEqual([other.expect("msg")["seq"] for _ in range(4)], [1, 2, 3, 4])
        other.close()
        ws.close()

    def test_nack_term_gives_up_at_once(self):
        d = self.wsqd
        ws = h.SocketWS(d)
        for i, data in enumerate(["a", "bad", "c"]):
            ws.send_json({"op": "pub", "topic": "dl.term", "data": data, "ref": i})
            ws.expect("ok")
        ws.subscribe("dl.term", consumer="w", window=10)
        seqs = []
        while len(seqs) < 3:
            f = ws.expect("msg")
            seqs.append(f["seq"])
            if f["data"] == "bad":
                ws.send_json({"op": "nack", "topic": "dl.term", "seq": f["seq"], "term": True})
            else:
                ws.send_json({"op": "ack", "topic": "dl.term", "seq": f["seq"]})
        dead = ws.expect("dead")
        self.assertEqual((dead["seq"], dead["dead_topic"], dead["dead_seq"]), (2, "dl.term.dlq", 1))
        # refusals: term is a boolean and takes no delay
        ws.send_json({"op": "nack", "topic": "dl.term", "seq": 1, "term": 1, "ref": "x"})
        self.assertEqual(ws.expect("err")["code"], "bad_type")
        ws.send_json({"op": "nack", "topic": "dl.term", "seq": 1, "term": True, "delay": 5,
                      "ref": "y"})
        self.assertEqual(ws.expect("err")["code"], "bad_request")
        ws.close()
        st, _, page = d.history("dl.term.dlq", "?from=1")
        m = page["messages"][0]
        self.assertEqual((m["data"], m["headers"]["wsq-dead-reason"],
                          m["headers"]["wsq-dead-deliveries"]), ("bad", "term", "1"))
        self.assertEqual(seqs, [1, 2, 3])   # delivered once each, nothing again

    def test_per_rule_max_deliver_and_topic(self):
        d = self.wsqd
        ws = h.SocketWS(d)
        ws.send_json({"op": "pub", "topic": "dl.c.x", "data": "once", "ref": 1})
        ws.expect("ok")
        ws.subscribe("dl.c.x", consumer="w")
        f = ws.expect("msg")
        ws.send_json({"op": "nack", "topic": "dl.c.x", "seq": f["seq"]})
        dead = ws.expect("dead")
        self.assertEqual((dead["seq"], dead["dead_topic"]), (1, "dead.dl.c.x"))
        ws.close()
        st, _, page = d.history("dead.dl.c.x", "?from=1")
        self.assertEqual(page["messages"][0]["headers"]["wsq-dead-deliveries"], "1")

    def test_limits_max_deliver_says_where_it_moved(self):
        d = self.new_wsqd("limits:\n  max_deliver: 3\n")
        d.start(wait=False)
        self.assertEqual(d.proc.wait(timeout=10 * h.SLOW), 1)
        self.assertIn("limits.max_deliver: moved: set max_deliver in retention.default", d.log())


if __name__ == "__main__":
    h.main()
