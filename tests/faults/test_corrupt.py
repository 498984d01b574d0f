#!/usr/bin/python3
"""A stored message whose bytes rot on disk (issue 17): every read path names it, none hands it
out as data, and wsqd serves everything else.

The store (built again for every test, fresh random markers each time):
- topic crc.t, seqs 1..25: small text messages, except 11 (binary, next to the bad one); seq 10
  carries a unique 64-byte marker (random hex); seq 21 is a 20,000-byte binary message, stored in
  page-sized parts (MSG_F_PARTS, storage/lmdb/internal.h), with its own marker inside its second
  part; seq 22 is a 20,000-byte text message (parted too, left intact); 23..25 small text.
- durable consumers made before the damage: `keep` got all 25 and acknowledged none, `keep9`
  got all 25 and acknowledged 1..9; `redo` got all 25 and nacked seq 10 with a delay (which
  survives a restart).
- wsqd is stopped (SIGTERM, exit 0), and the store is compacted with `wsqctl compact` into a new
  directory that becomes the data dir. Why: LMDB copies a page on every write (copy-on-write),
  so the data file also holds stale copies of the leaf that holds seq 10, in free pages (6 of
  them after 25 publishes); the compacting copy holds live pages only, so the marker occurs
  exactly once. wsqctl has no command that prints where a message lives, so the test finds the
  marker bytes in data.mdb and asserts what surrounds them: for seq 10 the LMDB leaf node (its
  data size, the 12-byte key: topic id and seq 10, the message header with seq 10's timestamp as
  `wsqctl peek` reads it); for seq 21 an overflow page (a part) at the right offset. One byte in
  the middle of each marker is flipped (0x01), and the file differs in exactly those two bytes.

Checks, each test on its own store:
- wsqctl (wsqd stopped): `check` exits 4 naming crc.t seq 10 and seq 21 "checksum mismatch" and
  nothing else; `peek` and `export` leave 10 and 21 out, everything else byte-exact, a note per
  corrupt message on stderr and nothing more, exit 4; the export imports whole into a new store.
- wsq.v1: ephemeral subscribers from earliest (three at once: the tail cache), from seq 10, 20
  and 21, from latest; durable consumers with window 1 (each read starts at the bad message) and
  window 9: exactly 1..9, gap {10,10,corrupt}, 11..20, gap {21,21,corrupt}, 22..25 (msg frames
  equal the stored messages: seq, ts, data, enc), then live messages.
- durable resume: a consumer that met the gaps and acked up to 5 gets 6..9, 11..20, 22..25 again
  (deliveries 2) and no second gap (the bad messages were acknowledged on first encounter, and
  only they: wsqctl consumers shows ack floor 5 and 2 acked above it); `keep` and `keep9`
  (the bad messages were delivered before they rotted and are unacknowledged) get gaps for 10
  and 21 in the resume scan (keep9's scan starts at the bad message), no gap on a later resume.
- redelivery: `redo` resumes with window 2 before its nack of seq 10 is due; when it is due the
  redelivery read meets the bad bytes: gap {10,10,corrupt} ahead of the resume scan's seq 3. A
  nack of 9, of 11 (with a delay) and of 22 (parted) redelivers them; a nack of 10 or 21 does
  nothing.
- raw mode: from=earliest gets 1..9 then close 4010 "gap 10-10 corrupt"; from=11: 11..20 then
  "gap 21-21 corrupt"; a raw durable consumer resumes after each bad message on its next
  connection (1..9 | 11..20 | 22..25 and live).
- HTTP history: from=1 ends at 9 (no gap member); from=10 has no messages and
  "gap":{"from":10,"to":10,"reason":"corrupt"}; from=11 gives 11..20; from=21 the gap; from=22 on.
- wsq_corrupt_messages_total grows by exactly one per encounter, and wsqd's log has one
  `error corrupt topic=crc.t seq=N` line per count; no other error line, no sanitizer report.
- wsqd keeps serving: a publish and a subscriber on another topic, /healthz 200, a clean stop.

Run: python3 test_corrupt.py WSQD WSQCTL (ctest -R faults.corrupt). WSQ_KEEP=1 keeps the dirs.
"""

import base64
import json
import os
import re
import shutil
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration",
                                "py"))
import wsqharness as h  # noqa: E402

TOPIC = "crc.t"
OTHER = "crc.other"
N_STORED = 25
BAD_SMALL = 10      # the small message with the marker
BAD_LARGE = 21      # the parted binary message with the marker
LARGE = 20000
LMDB_PAGE_HDR = 16  # storage/lmdb/internal.h: a part is page size - this
MSG_HDR_LEN = 16    # ts (8) | flags (4) | checksum (4)
MSG_F_CRC32C = 0x40000000
MSG_F_PARTS = 0x80000000
WSQ_MSG_BINARY = 0x1
P_OVERFLOW = 0x04   # LMDB page flag
REDO_DELAY_MS = 5000
ALL_BUT_BAD = [s for s in range(1, N_STORED + 1) if s not in (BAD_SMALL, BAD_LARGE)]

_dead = None


def no_broker_url():
    """A loopback port that is bound but never listens: wsqctl finds no broker there and reads
    the store named by --data (another wsqd on :8080 must not change the outcome)."""
    global _dead
    if _dead is None:
        _dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        _dead.bind(("127.0.0.1", 0))
    return "http://127.0.0.1:%d" % _dead.getsockname()[1]


def ctl(*args):
    env = dict(os.environ)
    env.pop("WSQ_TOKEN", None)
    env["WSQ_URL"] = no_broker_url()
    return h.wsqctl(*args, env=env)


def gap_text(frm, to):
    return ('{"op":"gap","topic":"%s","from":%d,"to":%d,"reason":"corrupt"}'
            % (TOPIC, frm, to)).encode()


def stream(seqs):
    """The items a subscriber of crc.t must see for these stored seqs: the bad ones as gaps."""
    return [("gap", s, s) if s in (BAD_SMALL, BAD_LARGE) else ("msg", s, 1) for s in seqs]


FULL = stream(range(1, N_STORED + 1))


class Corrupt(h.WsqdTestCase):
    START = False

    # -- the store --------------------------------------------------------------------------

    def setUp(self):
        super().setUp()
        self.t0 = time.monotonic()
        d = self.d = self.new_wsqd(log_level="info")
        d.start()
        self.payloads = {}
        self.mark_small = os.urandom(32).hex().encode()
        self.mark_large = os.urandom(32).hex().encode()
        self.live = {}
        rc, out, err = ctl("--json", "--data", d.data, "--url", d.url, "stats")
        self.assertEqual(rc, 0, err)
        self.page = json.loads(out)["page_size"]
        part = self.page - LMDB_PAGE_HDR
        for seq in range(1, N_STORED + 1):
            if seq == BAD_SMALL:
                p = b"crc-10-" + self.mark_small + b"-end"
            elif seq == 11:
                p = b"\x00\xffcrc-11\x80" + os.urandom(40)
            elif seq == BAD_LARGE:
                b = bytearray(os.urandom(LARGE))
                b[part + 100:part + 164] = self.mark_large   # inside the second part
                p = bytes(b)
            elif seq == 22:
                p = ("crc-22-" + os.urandom(LARGE // 2).hex())[:LARGE].encode()
            elif seq == 23:
                p = "crc-23-\u00e9\u20ac\U0001f600".encode()
            else:
                p = b"crc-%02d-" % seq + b"x" * 40
            binary = seq in (11, BAD_LARGE)
            st, _, doc = d.post(TOPIC, p, content_type="application/octet-stream"
                                if binary else "text/plain; charset=utf-8")
            self.assertEqual((st, doc and doc.get("seq")), (200, seq), doc)
            self.payloads[seq] = (p, binary)

        # the stored messages as wsqctl's reader sees them: the reference of every check
        rc, out, err = ctl("--json", "--data", d.data, "--url", d.url, "peek", TOPIC,
                           "--limit", "100")
        self.assertEqual(rc, 0, err)
        self.ref = {}
        for m in json.loads(out)["messages"]:
            p, binary = self.payloads[m["seq"]]
            if binary:
                self.assertEqual((m.get("enc"), base64.b64decode(m["data"])), ("base64", p))
            else:
                self.assertEqual((m.get("enc"), m["data"].encode()), (None, p))
            self.ref[m["seq"]] = m
        self.assertEqual(sorted(self.ref), list(range(1, N_STORED + 1)))
        self.assertIn(self.mark_small.decode(), self.ref[BAD_SMALL]["data"])
        # consumers made before the damage
        keep = h.SocketWS(d)
        keep.subscribe(TOPIC, consumer="keep", frm="earliest", window=100)
        self.assertEqual(self.drain(keep, N_STORED),
                         [("msg", s, 1) for s in range(1, N_STORED + 1)])
        keep.close()
        keep9 = h.SocketWS(d)
        keep9.subscribe(TOPIC, consumer="keep9", frm="earliest", window=100)
        self.assertEqual(self.drain(keep9, N_STORED),
                         [("msg", s, 1) for s in range(1, N_STORED + 1)])
        keep9.send_json({"op": "ack", "topic": TOPIC, "upto": 9})
        self.sync(keep9)
        keep9.close()
        redo = h.SocketWS(d)
        redo.subscribe(TOPIC, consumer="redo", frm="earliest", window=100)
        self.assertEqual(self.drain(redo, N_STORED),
                         [("msg", s, 1) for s in range(1, N_STORED + 1)])
        redo.send_json({"op": "nack", "topic": TOPIC, "seq": BAD_SMALL,
                        "delay": int(REDO_DELAY_MS * h.SLOW), "ref": "n"})
        self.redo_due = time.time() + REDO_DELAY_MS * h.SLOW / 1000.0
        self.sync(redo)
        redo.close()

        rc, out, err = ctl("--json", "--data", d.data, "--url", d.url, "topics")
        self.topic_id = [t for t in json.loads(out)["topics"] if t["name"] == TOPIC][0]["id"]
        self.assertEqual(d.stop(), 0)

        # compact: the live pages only
        dest = os.path.join(d.dir, "compacted")
        rc, out, err = ctl("--data", d.data, "compact", dest)
        self.assertEqual(rc, 0, out + err)
        shutil.rmtree(d.data)
        os.rename(dest, d.data)
        rc, out, err = ctl("--data", d.data, "check")
        self.assertEqual(rc, 0, "the intact store fails check: %s%s" % (out, err))

        # find and flip
        path = os.path.join(d.data, "data.mdb")
        with open(path, "rb") as f:
            before = f.read()
        self.assertEqual(before.count(self.mark_small), 1,
                         "the marker of seq 10 must occur exactly once in the compacted store")
        self.assertEqual(before.count(self.mark_large), 1,
                         "the marker of seq 21 must occur exactly once in the compacted store")
        off_s = before.index(self.mark_small)
        off_l = before.index(self.mark_large)
        # seq 10: an LMDB leaf node: mn_lo, mn_hi (data size), mn_flags, mn_ksize, key, value;
        # the value: ts (le64), flags (le32), checksum (le32), payload "crc-10-" + marker
        val = off_s - len(b"crc-10-") - MSG_HDR_LEN
        key = val - 12
        lo, hi, nflags, ksize = struct.unpack_from("<HHHH", before, key - 8)
        self.assertEqual(before[key:val], struct.pack(">IQ", self.topic_id, BAD_SMALL))
        self.assertEqual((ksize, lo | hi << 16, nflags),
                         (12, MSG_HDR_LEN + len(self.payloads[BAD_SMALL][0]), 0))
        ts, mflags = struct.unpack_from("<qI", before, val)
        self.assertEqual((ts, mflags), (self.ref[BAD_SMALL]["ts"], MSG_F_CRC32C))
        # seq 21: its record in the messages table is a header that says "parts" and the length
        # (the key of seq 21 also starts each of its part keys, whose node has ksize 16)
        key21 = struct.pack(">IQ", self.topic_id, BAD_LARGE)
        recs = [i for i in range(len(before)) if before.startswith(key21, i) and
                struct.unpack_from("<HHHH", before, i - 8) == (MSG_HDR_LEN + 4, 0, 0, 12)]
        self.assertEqual(len(recs), 1, "the messages-table record of seq 21")
        ts, mflags, _, length = struct.unpack_from("<qIII", before, recs[0] + 12)
        self.assertEqual((ts, mflags, length), (self.ref[BAD_LARGE]["ts"], MSG_F_CRC32C |
                                                MSG_F_PARTS | WSQ_MSG_BINARY, LARGE))
        # its part 1 (the second) fills an overflow page: the page header, then the part
        pgno, _, pflags = struct.unpack_from("<QHH", before, off_l - off_l % self.page)
        self.assertEqual((off_l % self.page, pgno, pflags & P_OVERFLOW),
                         (LMDB_PAGE_HDR + 100, off_l // self.page, P_OVERFLOW))
        self.flips = (off_s + 32, off_l + 32)
        self.flipped_from = bytes(before[i] for i in self.flips)
        with open(path, "r+b") as f:
            for off in self.flips:
                f.seek(off)
                f.write(bytes([before[off] ^ 0x01]))
        with open(path, "rb") as f:
            after = f.read()
        self.assertEqual(len(after), len(before))
        self.assertEqual([i for i in self.flips if after[i] != before[i]], list(self.flips))
        self.assertEqual(sum(1 for a, b in zip(after, before) if a != b), 2)
        sys.stderr.write("\nstore built in %.2fs: page %d, flipped bytes at %d (seq 10) and %d "
                         "(seq 21, a part)\n" % (time.monotonic() - self.t0, self.page,
                                                 *self.flips))
        self.corrupt_seen = 0

    # -- helpers ------------------------------------------------------------------------------

    def frame(self, seq, deliveries=1):
        """The msg frame of a stored seq, as wsq.v1 and history send it."""
        r = self.ref[seq]
        f = {"op": "msg", "topic": TOPIC, "seq": seq, "ts": r["ts"], "data": r["data"]}
        if r.get("enc"):
            f["enc"] = r["enc"]
        if deliveries > 1:
            f["deliveries"] = deliveries
        return f

    def item(self, raw):
        """A wsq.v1 frame of crc.t -> ("msg", seq, deliveries) or ("gap", from, to), after
        checking it exactly."""
        f = json.loads(raw)
        if f.get("op") == "gap":
            self.assertEqual(raw, gap_text(f["from"], f["to"]))
            return ("gap", f["from"], f["to"])
        self.assertEqual(f.get("op"), "msg", raw[:300])
        if f["seq"] in self.ref:
            self.assertEqual(f, self.frame(f["seq"], f.get("deliveries", 1)))
        else:
            self.assertEqual(f["data"], self.live[f["seq"]], raw[:300])
        return ("msg", f["seq"], f.get("deliveries", 1))

    def drain(self, ws, last, ack=None, topic=TOPIC):
        """wsq.v1 frames until the msg of seq `last`, as items. ack: "each" (ack every msg at
        once) or N (ack up to the newest when N are unacknowledged)."""
        items, unacked = [], 0
        while True:
            try:
                raw = ws.recv()
            except socket.timeout:
                raise AssertionError("no msg of seq %d within %.0fs; got so far: %r"
                                     % (last, ws.timeout, items))
            it = self.item(raw)
            items.append(it)
            if it[0] == "msg":
                if ack == "each":
                    ws.send_json({"op": "ack", "topic": topic, "seq": it[1]})
                elif ack:
                    unacked += 1
                    if unacked == ack:
                        ws.send_json({"op": "ack", "topic": topic, "upto": it[1]})
                        unacked = 0
                if it[1] == last:
                    return items

    def quiet(self, ws, seconds=0.4):
        """Nothing more arrives (then a ping is answered: the connection is alive)."""
        try:
            raw = ws.recv(timeout=seconds)
        except socket.timeout:
            raw = None
        self.assertIsNone(raw, "expected silence, got %r" % (raw or b"")[:300])
        self.sync(ws)

    def sync(self, ws):
        ws.send_json({"op": "ping", "ref": "sync"})
        f = ws.recv_json()
        self.assertEqual(f, {"op": "pong", "ref": "sync"})

    def restart(self):
        self.d.start()
        self.live = {}
        self.assertEqual(self.counted(), 0)

    def counted(self):
        return int(self.d.metrics().get("wsq_corrupt_messages_total", -1))

    def log_lines(self):
        """`corrupt` lines of the current run: [(level, seq)]."""
        return [(m.group(1), int(m.group(2))) for m in re.finditer(
            r"^\S+ (\w+)\s+corrupt topic=crc\.t seq=(\d+) ", self.d._new_log(), re.M)]

    def encounters(self, n, seqs=None):
        """The counter grew by exactly n since the last call, and the log names each one."""
        self.corrupt_seen += n
        try:
            h.wait_until(lambda: self.counted() == self.corrupt_seen and
                         len(self.log_lines()) == self.corrupt_seen, timeout=5)
        except AssertionError:
            self.fail("wsq_corrupt_messages_total is %d and the log has %d corrupt lines; "
                      "expected %d of each" % (self.counted(), len(self.log_lines()),
                                               self.corrupt_seen))
        lines = self.log_lines()
        self.assertEqual({lv for lv, _ in lines}, {"error"} if lines else set())
        if seqs is not None:
            self.assertEqual(sorted(s for _, s in lines[len(lines) - n:]), sorted(seqs))

    def publish_live(self, n):
        seqs = []
        for _ in range(n):
            seq = N_STORED + 1 + len(self.live)
            data = "live-%d" % seq
            self.assertEqual(self.d.publish(TOPIC, data), seq)
            self.live[seq] = data
            seqs.append(seq)
        return seqs

    def consumer(self, name):
        rc, out, err = ctl("--json", "--url", self.d.url, "--data", self.d.data, "consumers",
                           TOPIC)
        self.assertEqual(rc, 0, err)
        return [c for c in json.loads(out)["consumers"] if c["name"] == name][0]

    def still_serving(self):
        """Another topic works, /healthz is fine, the log has no other error; a clean stop."""
        d = self.d
        sub = h.SocketWS(d)
        sub.subscribe(OTHER, frm="latest")
        seq = d.publish(OTHER, "other topic, after all this")
        f = sub.expect("msg")
        self.assertEqual((f["topic"], f["seq"], f["data"]),
                         (OTHER, seq, "other topic, after all this"))
        sub.close()
        st, _, body = d.http_json("GET", "/healthz")
        self.assertEqual((st, body["status"]), (200, "ok"), body)
        self.assertTrue(d.running())
        self.assertEqual(d.stop(), 0)
        other = [ln for ln in d.log_problems()
                 if not re.search(r"^\S+ error\s+corrupt topic=crc\.t seq=(10|21) ", ln)]
        self.assertEqual(other, [], "unexpected error lines or sanitizer reports")
        sys.stderr.write("%d corrupt encounters counted; test took %.2fs\n"
                         % (self.corrupt_seen, time.monotonic() - self.t0))

    # -- wsqctl ---------------------------------------------------------------------------------

    def test_wsqctl_check_peek_export(self):
        """Each command in a subTest, so that one run reports every deviation."""
        data = self.d.data
        want = ["%s: seq %d: checksum mismatch (CRC-32C of payload, timestamp and flags): the "
                "message is corrupt" % (TOPIC, s) for s in (BAD_SMALL, BAD_LARGE)]
        with self.subTest("check"):
            rc, out, err = ctl("--data", data, "check")
            self.assertEqual(rc, 4, out + err)
            self.assertEqual(out.splitlines(), want, out)
            self.assertEqual(err.strip().splitlines()[-1],
                             "wsqctl: check found 2 violations in the store at %s" % data)
        with self.subTest("check --json"):
            rc, out, err = ctl("--json", "--data", data, "check")
            self.assertEqual(rc, 4, err)
            doc = json.loads(out)
            self.assertEqual((doc["ok"], doc["count"]), (False, 2))
            self.assertEqual(doc["violations"], [
                {"topic": TOPIC, "problem": w.split(": ", 1)[1]} for w in want])

        note = ("wsqctl: %s seq %%d does not match its checksum (corrupt); skipped. Run wsqctl "
                "check" % TOPIC)
        for args, seqs, notes in (
                (("--json", "peek", TOPIC, "--limit", "100"), ALL_BUT_BAD, [10, 21]),
                # a page that starts at the bad message
                (("--json", "peek", TOPIC, "--from", "10", "--limit", "2"), [11, 12], [10]),
                (("peek", TOPIC, "--limit", "100"), ALL_BUT_BAD, [10, 21]),
                # no bad message in the way: exit 0, no note
                (("--json", "peek", TOPIC, "--from", "11", "--limit", "10"),
                 list(range(11, 21)), [])):
            with self.subTest(" ".join(args)):
                rc, out, err = ctl("--data", data, *args)
                if args[0] == "--json":
                    msgs = json.loads(out)["messages"]
                    self.assertEqual([m["seq"] for m in msgs], seqs)
                    for m in msgs:
                        self.assertEqual(m, self.ref[m["seq"]])
                else:
                    self.assertEqual([int(ln.split()[0]) for ln in out.splitlines()[1:]], seqs)
                    self.assertNotIn(self.mark_small.decode()[:40], out)
                self.assertEqual(rc, 4 if notes else 0, err)
                self.assertEqual(err.splitlines(), [note % s for s in notes])

        for args in (("export", TOPIC), ("export",), ("--json", "export", TOPIC)):
            with self.subTest(" ".join(args)):
                rc, out, err = ctl("--data", data, *args)
                lines = [json.loads(ln) for ln in out.splitlines()]
                self.assertEqual([m.get("seq") for m in lines], ALL_BUT_BAD,
                                 "stdout must hold the messages and nothing else; its last "
                                 "line: %s" % out.splitlines()[-1][:200])
                for m in lines:
                    r = dict(self.ref[m["seq"]], topic=TOPIC)
                    del r["size"]
                    self.assertEqual(m, r)
                self.assertEqual(rc, 4, err)
                self.assertEqual(err.splitlines(), [
                    "wsqctl: export: %s seq %d does not match its checksum (corrupt); left out. "
                    "Run wsqctl check" % (TOPIC, s) for s in (BAD_SMALL, BAD_LARGE)] +
                    ["wsqctl: export: 2 corrupt messages were left out; the rest is complete"])
                # the export is a backup: it imports into a new store, whole
                dump = os.path.join(self.d.dir, "export.jsonl")
                with open(dump, "w") as f:
                    f.write(out)
                new = os.path.join(self.d.dir, "restored-%d" % len(args))
                rc, out2, err2 = ctl("--data", new, "import", dump)
                self.assertEqual((rc, out2.strip()), (0, "imported %d messages from %s via the "
                                                      "store (new seqs)"
                                                      % (len(ALL_BUT_BAD), dump)), err2)
        # wsqctl only read: the store is unchanged, and wsqd starts on it
        with open(os.path.join(data, "data.mdb"), "rb") as f:
            blob = f.read()
        self.assertEqual([blob[i] ^ 0x01 for i in self.flips], list(self.flipped_from))
        self.restart()
        self.still_serving()

    # -- wsq.v1 -----------------------------------------------------------------------------------

    def test_v1_subscribers_every_read_page(self):
        d = self.d
        self.restart()
        # three ephemeral subscribers at once from earliest (they share the tail cache): the
        # first read page holds 1..9 and stops before the bad message
        subs = [h.SocketWS(d) for _ in range(3)]
        for ws in subs:
            sd = ws.subscribe(TOPIC, frm="earliest")
            self.assertEqual((sd["first_seq"], sd["next_seq"], sd["start_seq"]),
                             (1, N_STORED + 1, 1))
        for ws in subs:
            self.assertEqual(self.drain(ws, N_STORED), FULL)
        self.encounters(6, [10, 10, 10, 21, 21, 21])
        # ephemeral from a seq: at the bad message, just before it, just after
        for frm, seqs in ((10, range(10, 26)), (21, range(21, 26)), (20, range(20, 26)),
                          (9, range(9, 26)), (11, range(11, 26))):
            ws = h.SocketWS(d)
            self.assertEqual(ws.subscribe(TOPIC, frm={"seq": frm})["start_seq"], frm)
            self.assertEqual(self.drain(ws, N_STORED), stream(seqs), "from seq %d" % frm)
            self.quiet(ws, 0.1)
            ws.close()
            self.encounters((10 in seqs) + (21 in seqs))
        # durable, window 1, acking each: every read is one message, one starts at 10
        w1 = h.SocketWS(d)
        w1.subscribe(TOPIC, consumer="w1", frm="earliest", window=1)
        self.assertEqual(self.drain(w1, N_STORED, ack="each"), FULL)
        self.encounters(2, [10, 21])
        # durable, window 9, acking every 9: a page ends at 9, the next starts at 10
        w9 = h.SocketWS(d)
        w9.subscribe(TOPIC, consumer="w9", frm="earliest", window=9)
        self.assertEqual(self.drain(w9, N_STORED, ack=9), FULL)
        self.encounters(2, [10, 21])
        # from latest, then live messages reach everyone
        latest = h.SocketWS(d)
        self.assertEqual(latest.subscribe(TOPIC, frm="latest")["start_seq"], N_STORED + 1)
        live = self.publish_live(3)
        for ws in subs + [latest, w1]:
            self.assertEqual(self.drain(ws, live[-1], ack="each" if ws is w1 else None),
                             [("msg", s, 1) for s in live])
        self.assertEqual(self.drain(w9, live[-1], ack=3), [("msg", s, 1) for s in live])
        for ws in subs + [latest, w1, w9]:
            self.quiet(ws, 0.1)
            ws.close()
        self.encounters(0)
        # w1 and w9 acknowledged everything: 10 and 21 with the gaps
        for name in ("w1", "w9"):
            h.wait_until(lambda: self.consumer(name)["ack_floor"] == live[-1], timeout=5,
                         what="consumer %s acked up to %d" % (name, live[-1]))
        self.still_serving()

    def test_durable_resume_scan(self):
        d = self.d
        self.restart()
        # first session: the gaps; acks up to 5 only
        a = h.SocketWS(d)
        a.subscribe(TOPIC, consumer="a", frm="earliest", window=100)
        self.assertEqual(self.drain(a, N_STORED), FULL)
        a.send_json({"op": "ack", "topic": TOPIC, "upto": 5})
        self.sync(a)
        a.close()
        self.encounters(2, [10, 21])
        # the bad messages, and only they, are acknowledged
        c = h.wait_until(lambda: (lambda c: c if c["ack_floor"] == 5 else None)(
            self.consumer("a")), timeout=5, what="consumer a's ack floor 5 stored")
        self.assertEqual((c["delivered_upto"], c["acked_above_floor"], c["pending"], c["lag"]),
                         (N_STORED, 2, N_STORED - 5 - 2, N_STORED - 5 - 2), c)
        # second session: the resume scan redelivers 6..25 except 10 and 21, without a gap
        a = h.SocketWS(d)
        sd = a.subscribe(TOPIC, consumer="a", frm="earliest", window=100)
        self.assertEqual((sd["resumed"], sd["start_seq"]), (True, 6))
        self.assertEqual(self.drain(a, N_STORED),
                         [("msg", s, 2) for s in range(6, N_STORED + 1)
                          if s not in (BAD_SMALL, BAD_LARGE)])
        self.quiet(a)
        self.encounters(0)   # acknowledged bad messages need no word, and are not counted
        live = self.publish_live(2)
        self.assertEqual(self.drain(a, live[-1]), [("msg", s, 1) for s in live])
        a.send_json({"op": "ack", "topic": TOPIC, "upto": live[-1]})
        self.sync(a)
        a.close()
        h.wait_until(lambda: self.consumer("a")["ack_floor"] == live[-1], timeout=5,
                     what="consumer a acked up to %d" % live[-1])

        # `keep` got 1..25 before the bytes rotted and acked none: its resume scan meets both
        c = self.consumer("keep")
        self.assertEqual((c["ack_floor"], c["delivered_upto"], c["pending"]),
                         (0, N_STORED, N_STORED))
        k = h.SocketWS(d)
        sd = k.subscribe(TOPIC, consumer="keep", window=100)
        self.assertEqual((sd["resumed"], sd["start_seq"]), (True, 1))
        want = [("gap", s, s) if s in (BAD_SMALL, BAD_LARGE) else ("msg", s, 2)
                for s in range(1, N_STORED + 1)] + [("msg", s, 1) for s in live]
        self.assertEqual(self.drain(k, live[-1]), want)
        self.encounters(2, [10, 21])
        self.quiet(k)
        k.close()
        c = h.wait_until(lambda: (lambda c: c if c["acked_above_floor"] == 2 else None)(
            self.consumer("keep")), timeout=5, what="keep: 10 and 21 acknowledged")
        self.assertEqual(c["ack_floor"], 0, c)
        # `keep9` acked up to 9 before the damage: its resume scan starts at the bad message
        k9 = h.SocketWS(d)
        sd = k9.subscribe(TOPIC, consumer="keep9", window=100)
        self.assertEqual((sd["resumed"], sd["start_seq"]), (True, 10))
        self.assertEqual(self.drain(k9, live[-1]), [("gap", 10, 10)] + [
            ("gap", s, s) if s == BAD_LARGE else ("msg", s, 2) for s in range(11, N_STORED + 1)]
            + [("msg", s, 1) for s in live])
        self.encounters(2, [10, 21])
        self.quiet(k9)
        k9.close()
        # a third session of keep: the same again, no gap (now acknowledged)
        k = h.SocketWS(d)
        k.subscribe(TOPIC, consumer="keep", window=100)
        self.assertEqual(self.drain(k, live[-1]),
                         [("msg", s, 3) for s in ALL_BUT_BAD] + [("msg", s, 2) for s in live])
        self.quiet(k)
        k.close()
        self.encounters(0)
        self.still_serving()

    def test_redelivery(self):
        d = self.d
        self.restart()
        # `redo` nacked seq 10 with a delay before it rotted; it resumes before that is due
        r = h.SocketWS(d)
        sd = r.subscribe(TOPIC, consumer="redo", window=2)
        left = self.redo_due - time.time()
        if left < 0.5:
            self.fail("the setup took too long: the nack of seq 10 was due %.1fs before the "
                      "resume (raise REDO_DELAY_MS or WSQ_SLOW)" % -left)
        self.assertEqual((sd["resumed"], sd["start_seq"]), (True, 1))
        self.assertEqual(self.drain(r, 2), [("msg", 1, 2), ("msg", 2, 2)])
        self.quiet(r, 0.2)   # the window is full
        time.sleep(max(0.0, self.redo_due - time.time()) + 0.3)
        # a window slot: the due redelivery of 10 goes first, and its read meets the bad bytes;
        # then the resume scan goes on with 3
        r.send_json({"op": "ack", "topic": TOPIC, "seq": 1})
        self.assertEqual(self.drain(r, 3), [("gap", 10, 10), ("msg", 3, 2)])
        self.encounters(1, [10])
        r.send_json({"op": "ack", "topic": TOPIC, "seq": 3})   # 2 stays in flight: 1 slot
        want = [("gap", 21, 21) if s == BAD_LARGE else ("msg", s, 2)
                for s in range(4, N_STORED + 1) if s != BAD_SMALL]
        self.assertEqual(self.drain(r, N_STORED, ack="each"), want)
        self.encounters(1, [21])
        r.send_json({"op": "ack", "topic": TOPIC, "upto": 3})
        self.sync(r)
        r.close()
        h.wait_until(lambda: self.consumer("redo")["ack_floor"] == N_STORED, timeout=5,
                     what="redo acked everything")

        # nacks around the bad message still work; nacks of the bad ones do nothing
        n = h.SocketWS(d)
        n.subscribe(TOPIC, consumer="n", frm="earliest", window=100)
        self.assertEqual(self.drain(n, N_STORED), FULL)
        self.encounters(2, [10, 21])
        n.send_json({"op": "nack", "topic": TOPIC, "seq": 9})
        self.assertEqual(self.drain(n, 9), [("msg", 9, 2)])
        t_nack = time.monotonic()
        n.send_json({"op": "nack", "topic": TOPIC, "seq": 11, "delay": 600})
        self.assertEqual(self.drain(n, 11), [("msg", 11, 2)])
        self.assertGreaterEqual(time.monotonic() - t_nack, 0.55)
        n.send_json({"op": "nack", "topic": TOPIC, "seq": 22})   # the parted neighbour of 21
        self.assertEqual(self.drain(n, 22), [("msg", 22, 2)])
        for seq in (BAD_SMALL, BAD_LARGE):
            n.send_json({"op": "nack", "topic": TOPIC, "seq": seq})
        self.quiet(n)
        self.encounters(0)
        n.send_json({"op": "nack", "topic": TOPIC, "seq": 9})
        self.assertEqual(self.drain(n, 9), [("msg", 9, 3)])
        n.send_json({"op": "ack", "topic": TOPIC, "upto": N_STORED})
        self.sync(n)
        n.close()
        c = h.wait_until(lambda: (lambda c: c if c["ack_floor"] == N_STORED else None)(
            self.consumer("n")), timeout=5, what="n acked everything")
        self.assertEqual((c["pending"], c["lag"]), (0, 0))
        self.still_serving()

    # -- raw mode ---------------------------------------------------------------------------------

    def raw_read(self, query):
        """A raw-mode connection to crc.t: ([(seq-ish payload, binary)] before the close, code,
        reason); the connection must close by itself."""
        ws = h.SocketWS(self.d, path="/topics/%s?%s" % (TOPIC, query), subprotocol=None)
        got, parts, op0 = [], [], None
        try:
            while True:
                op, fin, data = ws.recv_frame()
                if op == 8:
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                    return got, code, data[2:].decode("utf-8", "replace")
                if op == 9:
                    ws.send_frame(10, data)
                    continue
                if op in (1, 2):
                    op0 = op
                parts.append(data)
                if fin:
                    got.append((b"".join(parts), op0 == 2))
                    parts = []
        finally:
            ws.close()

    def raw_until(self, ws, n):
        got = []
        while len(got) < n:
            data = ws.recv()
            got.append(data)
        return got

    def expect_raw(self, got, seqs):
        self.assertEqual(len(got), len(seqs), [g[0][:20] for g in got])
        for (data, binary), seq in zip(got, seqs):
            self.assertEqual((data, binary), self.payloads[seq], "raw frame of seq %d" % seq)

    def test_raw_mode(self):
        d = self.d
        self.restart()
        got, code, reason = self.raw_read("from=earliest")
        self.expect_raw(got, range(1, 10))
        self.assertEqual((code, reason), (4010, "gap 10-10 corrupt"))
        self.encounters(1, [10])
        got, code, reason = self.raw_read("from=10")
        self.expect_raw(got, [])
        self.assertEqual((code, reason), (4010, "gap 10-10 corrupt"))
        self.encounters(1, [10])
        got, code, reason = self.raw_read("from=11")
        self.expect_raw(got, range(11, 21))
        self.assertEqual((code, reason), (4010, "gap 21-21 corrupt"))
        self.encounters(1, [21])

        # a raw durable consumer resumes after each bad message on its next connection
        got, code, reason = self.raw_read("consumer=rawc&from=earliest")
        self.expect_raw(got, range(1, 10))
        self.assertEqual((code, reason), (4010, "gap 10-10 corrupt"))
        self.encounters(1, [10])
        h.wait_until(lambda: self.consumer("rawc")["ack_floor"] >= 9, timeout=5,
                     what="rawc's writes of 1..9 acknowledged")
        c = self.consumer("rawc")
        self.assertEqual((c["ack_floor"], c["acked_above_floor"]), (10, 0),
                         "rawc after its first connection: 1..9 written, 10 acknowledged: %r"
                         % (c,))
        got, code, reason = self.raw_read("consumer=rawc")
        self.expect_raw(got, range(11, 21))
        self.assertEqual((code, reason), (4010, "gap 21-21 corrupt"))
        self.encounters(1, [21])
        h.wait_until(lambda: self.consumer("rawc")["ack_floor"] == 21, timeout=5,
                     what="rawc acked up to 21")
        ws = h.SocketWS(d, path="/topics/%s?consumer=rawc" % TOPIC, subprotocol=None)
        got = self.raw_until(ws, 4)
        self.assertEqual(got, [self.payloads[s][0] for s in range(22, 26)])
        live = self.publish_live(2)
        self.assertEqual(self.raw_until(ws, 2), [self.live[s].encode() for s in live])
        ws.close()
        # raw from the first live message: nothing bad in the way
        ws = h.SocketWS(d, path="/topics/%s?from=22" % TOPIC, subprotocol=None)
        self.assertEqual(self.raw_until(ws, 6), [self.payloads[s][0] for s in range(22, 26)] +
                         [self.live[s].encode() for s in live])
        ws.close()
        self.encounters(0)
        self.still_serving()

    # -- HTTP history -----------------------------------------------------------------------------

    def history(self, query):
        st, _, doc = self.d.history(TOPIC, query)
        self.assertEqual(st, 200, doc)
        self.assertEqual((doc["first_seq"], doc["next_seq"]), (1, N_STORED + 1))
        for m in doc["messages"]:
            self.assertEqual(m, self.frame(m["seq"]))
        return [m["seq"] for m in doc["messages"]], doc.get("gap")

    def test_history(self):
        self.restart()
        corrupt = {"reason": "corrupt"}
        self.assertEqual(self.history("?from=1"), (list(range(1, 10)), None))
        self.assertEqual(self.history(""), (list(range(1, 10)), None))
        self.assertEqual(self.history("?from=1&limit=5"), (list(range(1, 6)), None))
        self.assertEqual(self.history("?from=9&limit=1"), ([9], None))
        self.encounters(0)   # a page that reaches a bad message ends before it, uncounted
        self.assertEqual(self.history("?from=10"), ([], dict(corrupt, **{"from": 10, "to": 10})))
        self.encounters(1, [10])
        self.assertEqual(self.history("?from=10&limit=1"),
                         ([], dict(corrupt, **{"from": 10, "to": 10})))
        self.encounters(1, [10])
        self.assertEqual(self.history("?from=11"), (list(range(11, 21)), None))
        self.assertEqual(self.history("?from=21"), ([], dict(corrupt, **{"from": 21, "to": 21})))
        self.encounters(1, [21])
        self.assertEqual(self.history("?from=22"), (list(range(22, 26)), None))
        # the exact text of the gap member
        st, _, body = self.d.http("GET", "/topics/%s/messages?from=10" % TOPIC)
        self.assertIn(b'"messages":[],"first_seq":1,"next_seq":26,'
                      b'"gap":{"from":10,"to":10,"reason":"corrupt"}}', body)
        self.encounters(1, [10])
        self.still_serving()


if __name__ == "__main__":
    h.main(wsqctl=True)
