#!/usr/bin/python3
"""wsqctl dlq and redrive (issue 13, point 2; docs/wsqctl.md "dlq" and "redrive"), against a live
wsqd whose consumers dead-letter messages by max_deliver and by nack "term":

- dlq TOPIC lists the dead letters of TOPIC (its dead-letter topic from the rule; a
  dead-letter topic named directly is listed whole): seq, time, origin, consumer, deliveries,
  reason, size and whether they were redriven, as a table and as JSON Lines, the same through
  the broker (HTTP history) and from the store with the broker stopped; --from, --limit; no
  dead letters is a note and exit 0, an unknown topic exit 3;
- redrive publishes them back, payload byte-exact (text and binary), their own headers kept
  and every wsq-dead-* one dropped, to the original topic or --to; each is acknowledged for the
  consumer wsq-redrive, so a second redrive publishes nothing; --max; a dead letter without
  wsq-dead-topic is an error naming its seq, left unacknowledged, and --to redrives it later;
- the publish id redrive/<dlq>/<epoch>/<seq>: a publish with it answers dup, and a redrive of a
  dead letter whose publish already happened (an interrupted run) stores no second copy;
- without a broker redrive exits 5 saying it needs one; usage errors exit 2.
"""

import base64
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctlharness as c  # noqa: E402
import wsqharness as h  # noqa: E402

BLOB = bytes(range(256)) + b"\x00\xff\n"


def payload(m):
    """A history or dlq --json message's payload: bytes for base64, else the str."""
    return base64.b64decode(m["data"]) if m.get("enc") == "base64" else m["data"]


class DlqRedrive(c.CtlTestCase):
    # work.* dead-letters after 2 deliveries into work.X.dlq (the default template; work.X.dlq
    # has three segments, so no rule gives it a max_deliver of its own); alt.* after 1, into
    # dead.alt.X. No ack_wait: nothing is delivered again behind a test's back.
    EXTRA_YAML = ("limits:\n  ack_wait: 0\n"
                  "retention:\n  topics:\n"
                  "    - {pattern: \"work.*\", max_deliver: 2}\n"
                  "    - {pattern: \"alt.*\", max_deliver: 1, dead_letter: \"dead.{topic}\"}\n")

    def make_dead(self, topic, msgs, keep=(), term=()):
        """Publishes msgs ({"data", "enc"?, "headers"?}) to topic, then the consumer "worker"
        acks the indexes in keep, nacks those in term with "term", and nacks the others until
        the broker dead-letters them. Returns {original seq: dead frame}."""
        ws = h.SocketWS(self.wsqd)
        seqs = []
        for i, m in enumerate(msgs):
            ws.send_json(dict(m, op="pub", topic=topic, ref=i))
            seqs.append(ws.expect("ok")["seq"])
        ws.subscribe(topic, consumer="worker", window=50)
        want = len(msgs) - len(keep)
        dead, acked = {}, set()
        while len(dead) < want or len(acked) < len(keep):
            f = ws.recv_json()
            if f["op"] == "dead":
                dead[f["seq"]] = f
            elif f["op"] == "msg":
                i = seqs.index(f["seq"])
                if i in keep:
                    ws.send_json({"op": "ack", "topic": topic, "seq": f["seq"]})
                    acked.add(i)
                else:
                    ws.send_json({"op": "nack", "topic": topic, "seq": f["seq"],
                                  "term": i in term})
            else:
                self.fail("unexpected %r" % f)
        ws.close()
        return dead, seqs

    def dlq_json(self, *args, **kw):
        out, err = self.ctl_ok("--json", "dlq", *args, **kw)
        return [json.loads(x) for x in out.splitlines()], err

    def redrive(self, *args, rc=0, **kw):
        r, out, err = self.ctl("-c", self.wsqd.conf, "redrive", *args, **kw)
        self.assertEqual(r, rc, "redrive %s -> %d\nstdout: %s\nstderr: %s"
                         % (" ".join(args), r, out, err))
        return out, err

    def epoch(self, topic):
        for t in self.ctl_json("-c", self.wsqd.conf, "topics")["topics"]:
            if t["name"] == topic:
                return t["epoch"]
        self.fail("no topic %s" % topic)

    def history(self, topic, frm=1):
        st, _, page = self.wsqd.history(topic, "?from=%d&limit=1000" % frm)
        self.assertEqual(st, 200, page)
        return page

    def test_dlq_lists_dead_letters_through_the_broker_and_from_the_store(self):
        d = self.wsqd
        C = ("-c", d.conf)
        msgs = [{"data": "ok-1"},
                {"data": "poison", "headers": {"trace-id": "t7", "wsq-dead-topic": "forged"}},
                {"data": base64.b64encode(BLOB).decode(), "enc": "base64"},
                {"data": "given up", "headers": {"k": ""}}]
        dead, seqs = self.make_dead("work.a", msgs, keep=(0,), term=(3,))
        self.assertEqual(sorted(dead), [2, 3, 4])
        by_dseq = {f["dead_seq"]: f["seq"] for f in dead.values()}
        want = {2: ("poison", 2, "max_deliver", {"trace-id": "t7"}),
                3: (BLOB, 2, "max_deliver", None),
                4: ("given up", 1, "term", {"k": ""})}
        # through the broker
        lines, err = self.dlq_json(*C, "-v", "work.a")
        self.assertIn("using the broker at %s" % d.url, err)
        self.assertEqual([x["seq"] for x in lines], [1, 2, 3])
        for x in lines:
            src = by_dseq[x["seq"]]
            data, deliveries, reason, headers = want[src]
            self.assertEqual((x["dlq"], x["topic"], x["topic_seq"], x["consumer"],
                              x["deliveries"], x["reason"], x["size"], x["redriven"]),
                             ("work.a.dlq", "work.a", src, "worker", deliveries, reason,
                              len(data.encode() if isinstance(data, str) else data), False))
            self.assertEqual(payload(x), data)
            self.assertEqual(x.get("headers"), headers)
            self.assertIsInstance(x["ts"], int)
        table, _ = self.ctl_ok(*C, "dlq", "work.a")
        rows = table.splitlines()
        self.assertEqual(rows[0].split(), ["SEQ", "TIME", "TOPIC", "TOPIC-SEQ", "CONSUMER",
                                           "DELIVERIES", "REASON", "SIZE", "REDRIVEN"])
        self.assertEqual(len(rows), 4)
        for row, x in zip(rows[1:], lines):
            cells = row.split()
            self.assertEqual(cells[0], str(x["seq"]))
            self.assertRegex(cells[1], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertEqual(cells[2:], ["work.a", str(x["topic_seq"]), "worker",
                                         str(x["deliveries"]), x["reason"], str(x["size"]),
                                         "no"])
        # the dead-letter topic named directly is listed whole: the same lines
        self.assertEqual(self.dlq_json(*C, "work.a.dlq")[0], lines)
        # --limit and --from
        two, err = self.dlq_json(*C, "work.a", "--limit", "2")
        self.assertEqual(two, lines[:2])
        self.assertEqual(err, "wsqctl: more dead letters follow: wsqctl dlq work.a --from 3\n")
        self.assertEqual(self.dlq_json(*C, "work.a", "--from", "3")[0], lines[2:])
        # a rule's own template
        self.make_dead("alt.x", [{"data": "once"}])
        alt, _ = self.dlq_json(*C, "alt.x")
        self.assertEqual([(x["dlq"], x["topic"], x["deliveries"], x["data"]) for x in alt],
                         [("dead.alt.x", "alt.x", 1, "once")])
        # no dead letters: nothing on stdout, one note, exit 0
        d.publish("work.none", "fine")
        rc, out, err = self.ctl(*C, "dlq", "work.none")
        self.assertEqual((rc, out), (0, ""))
        self.assertEqual(err, "wsqctl: work.none has no dead letters (work.none.dlq does not "
                              "exist on the broker at %s)\n" % d.url)
        rc, out, err = self.ctl(*C, "--json", "dlq", "work.a", "--from", "99")
        self.assertEqual((rc, out, err),
                         (0, "", "wsqctl: work.a has no dead letters from that seq on in "
                                 "work.a.dlq\n"))
        self.ctl_fails(3, *C, "dlq", "nope.x",
                       pattern=r"^wsqctl: topic 'nope.x' does not exist on the broker at ")
        self.ctl_fails(2, *C, "dlq", "work..a", pattern="is not a topic name")
        self.ctl_fails(2, *C, "dlq", "work.a", "--limit", "0", pattern="--limit must be")
        self.ctl_fails(2, *C, "dlq", "work.a", "--to", "x", pattern="dlq does not take --to")
        # from the store, the broker stopped: the same lines, the same table
        d.stop()
        stored, err = self.dlq_json(*C, "-v", "work.a")
        self.assertIn("no broker at %s; using the store" % d.url, err)
        self.assertEqual(stored, lines)
        out, _ = self.ctl_ok(*C, "dlq", "work.a")
        self.assertEqual(out, table)
        self.assertEqual(self.dlq_json(*C, "work.a.dlq")[0], lines)
        self.ctl_fails(3, *C, "dlq", "nope.x",
                       pattern=r"topic 'nope.x' does not exist in %s" % re.escape(d.data))

    def test_redrive_to_the_original_topic_byte_exact_once(self):
        d = self.wsqd
        C = ("-c", d.conf)
        msgs = [{"data": "one \u2713\n", "headers": {"trace-id": "a1",
                                                     "content-type": "text/plain"}},
                {"data": base64.b64encode(BLOB).decode(), "enc": "base64",
                 "headers": {"wsq-dead-reason": "forged", "x": "y"}},
                {"data": ""},
                {"data": "{\"id\":7}", "headers": {"content-type": "application/json"}}]
        dead, seqs = self.make_dead("work.r", msgs, term=(0, 2))
        self.assertEqual(len(dead), 4)
        order = sorted(dead, key=lambda s: dead[s]["dead_seq"])  # original seqs, dlq order
        self.assertEqual(self.history("work.r")["next_seq"], 5)
        out, err = self.redrive("work.r.dlq")
        self.assertEqual(out, "redriven 4 of work.r.dlq to work.r\n")
        self.assertEqual(err, "")
        page = self.history("work.r", 5)
        self.assertEqual(len(page["messages"]), 4)
        self.assertEqual(page["next_seq"], 9)
        own = {0: {"trace-id": "a1", "content-type": "text/plain"}, 1: {"x": "y"}, 2: None,
               3: {"content-type": "application/json"}}
        for m, src in zip(page["messages"], order):
            i = seqs.index(src)
            self.assertEqual(payload(m), BLOB if i == 1 else msgs[i]["data"])
            self.assertEqual(m.get("enc"), "base64" if i == 1 else None)
            self.assertEqual(m.get("headers"), own[i])
        # acknowledged for wsq-redrive: dlq says so, and a second redrive publishes nothing
        h.wait_until(lambda: all(x["redriven"] for x in self.dlq_json(*C, "work.r")[0]),
                     what="every dead letter shown as redriven")
        cons = self.ctl_json(*C, "consumers", "work.r.dlq")["consumers"]
        self.assertEqual([(x["name"], x["ack_floor"], x["lag"]) for x in cons],
                         [("wsq-redrive", 4, 0)])
        out, _ = self.redrive("work.r.dlq")
        self.assertEqual(out, "redriven 0 of work.r.dlq\n")
        res = self.ctl_json(*C, "redrive", "work.r.dlq")
        self.assertEqual(res, {"dlq": "work.r.dlq", "to": None, "redriven": 0, "dup": 0,
                               "topics": [], "failed": [], "max_reached": False})
        self.assertEqual(self.history("work.r")["next_seq"], 9)
        # the publish id: the first redriven message's id answers its seq with dup
        ws = h.SocketWS(d)
        ws.send_json({"op": "pub", "topic": "work.r", "data": "again", "ref": 1,
                      "id": "redrive/work.r.dlq/%s/1" % self.epoch("work.r.dlq")})
        ok = ws.expect("ok")
        ws.close()
        self.assertEqual((ok["seq"], ok.get("dup")), (5, True))
        self.assertEqual(self.history("work.r")["next_seq"], 9)

    def test_redrive_to_max_and_a_letter_without_its_topic(self):
        d = self.wsqd
        C = ("-c", d.conf)
        dead, _ = self.make_dead("work.m", [{"data": "m%d" % i} for i in range(1, 4)],
                                 term=(0, 1, 2))
        self.assertEqual(len(dead), 3)
        d.publish("work.m.dlq", "hand-made")   # seq 4: no wsq-dead-* headers
        self.make_dead("work.m", [{"data": "m4"}], term=(0,))  # seq 5
        texts = {f["dead_seq"]: "m%d" % f["seq"] for f in dead.values()}
        texts[5] = "m4"
        # --max with --to
        out, _ = self.redrive("work.m.dlq", "--max", "2", "--to", "other.m")
        self.assertEqual(out, "redriven 2 of work.m.dlq to other.m; stopped at --max\n")
        self.assertEqual([m["data"] for m in self.history("other.m")["messages"]],
                         [texts[1], texts[2]])
        # without --to: seq 4 says nothing of its topic, the others go home
        out, err = self.redrive("work.m.dlq", rc=1)
        self.assertEqual(out, "redriven 2 of work.m.dlq to work.m; 1 not redriven\n")
        self.assertEqual(err.splitlines(), [
            "wsqctl: work.m.dlq seq 4: no wsq-dead-topic header says where it came from: pass "
            "--to TOPIC to redrive it (not acknowledged)",
            "wsqctl: 1 dead letter of work.m.dlq was not redriven (seq 4): it stays in "
            "work.m.dlq, unacknowledged; the reasons are above"])
        self.assertEqual([m["data"] for m in self.history("work.m", 5)["messages"]],
                         [texts[3], texts[5]])
        h.wait_until(lambda: [x["redriven"] for x in self.dlq_json(*C, "work.m.dlq")[0]]
                     == [True, True, True, False, True], what="seq 4 alone not redriven")
        whole, _ = self.dlq_json(*C, "work.m.dlq")
        self.assertEqual((whole[3]["seq"], whole[3]["topic"], whole[3]["reason"],
                          whole[3]["data"]), (4, None, None, "hand-made"))
        # dlq of the original topic leaves the stranger out
        self.assertEqual([x["seq"] for x in self.dlq_json(*C, "work.m")[0]], [1, 2, 3, 5])
        # again: seq 4 is delivered again and refused again; 5 was acknowledged above it, so
        # the run ends when nothing more comes
        out, err = self.redrive("--json", "work.m.dlq", rc=1)
        res = json.loads(out)
        self.assertEqual((res["redriven"], [f["seq"] for f in res["failed"]],
                          res["failed"][0]["code"], res["error"]["code"], res["error"]["exit"]),
                         (0, [4], "no_dead_topic", "not_redriven", 1))
        # --to takes it
        res = self.ctl_json(*C, "redrive", "work.m.dlq", "--to", "fix.m")
        self.assertEqual(res, {"dlq": "work.m.dlq", "to": "fix.m", "redriven": 1, "dup": 0,
                               "topics": ["fix.m"], "failed": [], "max_reached": False})
        self.assertEqual([m["data"] for m in self.history("fix.m")["messages"]], ["hand-made"])
        out, _ = self.redrive("work.m.dlq")
        self.assertEqual(out, "redriven 0 of work.m.dlq\n")
        self.assertEqual(self.history("work.m")["next_seq"], 7)
        self.assertEqual(self.history("other.m")["next_seq"], 3)

    def test_an_interrupted_redrive_publishes_once(self):
        """A run that published a dead letter but died before its ack: the next run publishes
        it again with the same id, and the destination keeps one copy."""
        d = self.wsqd
        self.make_dead("work.i", [{"data": "a"}, {"data": "second"}], term=(0, 1))
        ep = self.epoch("work.i.dlq")
        first = self.history("work.i.dlq")["messages"][0]
        ws = h.SocketWS(d)   # what the interrupted run sent for dead letter 1
        ws.send_json({"op": "pub", "topic": "work.i", "data": first["data"], "ref": 1,
                      "id": "redrive/work.i.dlq/%s/1" % ep})
        self.assertEqual(ws.expect("ok")["seq"], 3)
        ws.close()
        out, _ = self.redrive("work.i.dlq")
        self.assertEqual(out, "redriven 2 of work.i.dlq to work.i (1 already published before: "
                              "dup)\n")
        page = self.history("work.i", 3)
        self.assertEqual([(m["seq"], m["data"]) for m in page["messages"]],
                         [(3, first["data"]), (4, self.history("work.i.dlq")["messages"][1]
                                               ["data"])])

    def test_errors_and_no_broker(self):
        d = self.wsqd
        C = ("-c", d.conf)
        self.make_dead("work.e", [{"data": "x"}], term=(0,))
        self.ctl_fails(2, *C, "redrive", "work.e.dlq", "--max", "0", pattern="--max must be")
        self.ctl_fails(2, *C, "redrive", "work.e.dlq", "--to", "work.e.dlq",
                       pattern="--to must name another topic")
        self.ctl_fails(2, *C, "redrive", "work.e.dlq", "--to", "bad..t",
                       pattern="is not a topic name")
        self.ctl_fails(2, *C, "redrive", "work.e.dlq", "--limit", "3",
                       pattern="redrive does not take --limit")
        self.ctl_fails(3, *C, "redrive", "nope.dlq",
                       pattern=r"topic 'nope.dlq' does not exist on the broker at ")
        # nothing was created for it
        names = [t["name"] for t in self.ctl_json(*C, "topics")["topics"]]
        self.assertNotIn("nope.dlq", names)
        d.stop()
        _, err = self.ctl_fails(5, *C, "redrive", "work.e.dlq")
        self.assertRegex(err, r"^wsqctl: broker unreachable at %s \(from -c\): .*; redrive needs "
                              r"a running broker: it publishes and acknowledges through wsq\.v1, "
                              r"never by writing the store" % re.escape(d.url))
        out, _ = self.ctl_fails(5, "--json", "--url", d.url, "redrive", "work.e.dlq")
        self.assertEqual((json.loads(out)["error"]["code"], json.loads(out)["error"]["exit"]),
                         ("unavailable", 5))


if __name__ == "__main__":
    c.main()
