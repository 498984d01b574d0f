"""Power cuts (issue 17): does a confirm survive what a kill -9 does not reach, the page cache?

A kill -9 leaves the kernel's page cache in place, so it cannot tell a broker that fsyncs from
one that does not. This test cuts the power instead, as far as a test can:

  1. an ext4 file system in a file, loop-mounted: wsqd keeps its store there;
  2. several wsq.v1 connections publish under load (windows of unconfirmed publishes, sizes from
     8 bytes to 20 KB, which are stored in parts), and a durable consumer acknowledges as it
     reads; the test records every confirmed (topic, seq, payload) and every ack;
  3. at a random moment wsqd is killed (SIGKILL) and the backing file is copied at once: the
     copy holds what the file system wrote to its "disk" (what was fsync'd, and what the kernel
     happened to write back), not the dirty page cache, which is what a power cut leaves;
  4. the copy is loop-mounted (ext4 replays its journal), `wsqctl check` must find the store
     sound, wsqd starts on it, and every confirmed message must be there, byte-exact, with no
     hole below the highest confirmed seq, and the publish ids of surviving messages must still
     be known (a retry is a dup); the consumer resumes no later than its first
     unacknowledged message, and no earlier than what it acked 0.25 s before the cut (acks
     are persisted every 10 ms, each in the writer's next commit; they are not confirmed one by
     one).

`sync: full` must lose nothing over CUTS_FULL cuts. The control, `sync: none`, must lose
confirmed messages: if it does not, the simulation cut nothing and the test fails. `sync: batch`
is measured and printed (docs/OPERATIONS.md quotes it), and must keep what it promises: a
restart-able, sound store whose messages are a gap-free prefix, byte-exact.

Needs root (mount, loop devices) and mkfs.ext4: skipped otherwise with the reason (exit 77; a
failure under WSQ_REQUIRE_ALL=1, as in CI, which runs as root).
Run: python3 test_power_cut.py WSQD WSQCTL. WSQ_KEEP=1 keeps the images of a failing cut.
"""

import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration", "py"))
import faultutil as fu  # noqa: E402
import wsqharness as h  # noqa: E402

CUTS_FULL = 10
CUTS_NONE = 3
CUTS_BATCH = 5
IMAGE_MB = 256
# The load's pace in payload bytes a second (after a first window each): the image holds the
# store, its free pages and the index of ids, and an unpaced broker confirms fast enough to
# fill it in the seconds before a cut (storage_full), which is not what this test is about.
# Paced, publishes are still in flight when the power goes.
LOAD_BYTES_PER_S = 24 << 20
TOPICS = ["pc.a", "pc.b", "pc/c"]
CONNS = 4
WINDOW = 64
CONSUMER_TOPIC = "pc.a"
CONSUMER = "pc-worker"
ACK_MARGIN_S = 0.25  # an ack this much older than the cut must have been persisted (acks are
#                     persisted every 10 ms, each in the writer's next commit)


def _run(*cmd, timeout=60):
    p = subprocess.run(list(cmd), capture_output=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace").strip()


class Image:
    """An ext4 file system (with its journal) in a file, loop-mounted on a fresh directory."""

    def __init__(self, base, path=None, size_mb=IMAGE_MB):
        self.mnt = tempfile.mkdtemp(prefix="wsqcut-mnt-", dir=base)
        self.path = path
        if self.path is None:
            self.path = os.path.join(base, "disk-%d.img" % random.randrange(1 << 30))
            with open(self.path, "wb") as f:
                f.truncate(size_mb << 20)
            rc, out = _run("mkfs.ext4", "-q", "-F", "-m", "0", self.path)
            if rc != 0:
                raise AssertionError("mkfs.ext4 %s: %s" % (self.path, out))
        rc, out = _run("mount", "-o", "loop", self.path, self.mnt)
        if rc != 0:
            os.rmdir(self.mnt)
            raise AssertionError("mount -o loop %s: %s" % (self.path, out))

    def copy(self, dest):
        """The backing file as it is now: what reached the loop device, not the page cache of
        the file system on it."""
        shutil.copyfile(self.path, dest)

    def umount(self):
        if self.mnt and os.path.ismount(self.mnt):
            for args in (["umount", self.mnt], ["umount", "-l", self.mnt]):
                if _run(*args)[0] == 0:
                    break
                time.sleep(0.3)
        if self.mnt and not os.path.ismount(self.mnt):
            shutil.rmtree(self.mnt, ignore_errors=True)
            self.mnt = None

    def remove(self):
        self.umount()
        if self.path and os.path.exists(self.path) and not os.environ.get("WSQ_KEEP"):
            os.unlink(self.path)


def payload(conn, i, rnd):
    """Text of 8 bytes to 20 KB naming its publisher: sizes mixed, every 97th one parted."""
    if i % 97 == 96:
        size = 20000
    else:
        size = rnd.choice((8, 40, 120, 300, 1000, 4000))
    head = "c%d.%d." % (conn, i)
    return (head + chr(ord("a") + i % 26) * max(0, size - len(head))).encode()


class Load:
    """CONNS pipelined wsq.v1 publishers with up to WINDOW unconfirmed each, and one durable
    consumer that acks upto every 25 messages. Everything runs from step() (one thread), so
    that the test decides to the millisecond when the power goes."""

    def __init__(self, d, seed, consumer=True):
        self.rnd = random.Random(seed)
        self.pubs = [h.SocketWS(d, timeout=30, zero_mask=True) for _ in range(CONNS)]
        self.next = [0] * CONNS
        self.sent = [{} for _ in range(CONNS)]          # ref -> (topic, payload)
        self.confirmed = {t: {} for t in TOPICS}       # topic -> seq -> payload
        self.ids = {t: {} for t in TOPICS}             # topic -> seq -> publish id
        self.refused = []
        self.cons = None
        if consumer:
            self.cons = h.SocketWS(d, timeout=30, zero_mask=True)
            sub = self.cons.subscribe(CONSUMER_TOPIC, consumer=CONSUMER, frm="earliest",
                                      window=256)
            assert sub["start_seq"] == 1, sub
        self.all = self.pubs + ([self.cons] if consumer else [])
        self.cons_seen = 0
        self.acks = []                                  # (monotonic time, upto)
        self.dead = False
        self.bytes_sent = 0
        self.t0 = time.monotonic()

    def _send(self):
        for c, ws in enumerate(self.pubs):
            if self.bytes_sent >= (time.monotonic() - self.t0) * LOAD_BYTES_PER_S + (1 << 20):
                return  # ahead of the pace: the next step sends again
            room = WINDOW - len(self.sent[c])
            if room <= 0:
                continue
            out = []
            for _ in range(room):
                i = self.next[c]
                self.next[c] += 1
                topic = TOPICS[(c + i) % len(TOPICS)]
                data = payload(c, i, self.rnd)
                self.bytes_sent += len(data)
                self.sent[c][i] = (topic, data)
                # every 10th publish carries an id (idempotent publish: its id must survive
                # what its message survives)
                pid = b',"id":"c%d-%d"' % (c, i) if i % 10 == 0 else b""
                out.append(ws.frame(1, b'{"op":"pub","topic":"%s","ref":%d,"data":"%s"%s}'
                                    % (topic.encode(), i, data, pid)))
            try:
                ws.send_raw(b"".join(out))
            except OSError:
                if not self.dead:
                    raise

    def _on_pub(self, c, f):
        m = json.loads(f)
        if m["op"] == "ok":
            topic, data = self.sent[c].pop(m["ref"])
            assert m["topic"] == topic, (m, topic)
            assert m["seq"] not in self.confirmed[topic], ("seq confirmed twice", m)
            self.confirmed[topic][m["seq"]] = data
            if m["ref"] % 10 == 0:
                self.ids[topic][m["seq"]] = "c%d-%d" % (c, m["ref"])
        elif m["op"] == "err":
            self.sent[c].pop(m.get("ref"), None)
            self.refused.append(m)
        else:
            raise AssertionError("unexpected frame on a publisher: %r" % f[:200])

    def _on_cons(self, f):
        m = json.loads(f)
        if m["op"] != "msg":
            raise AssertionError("unexpected frame on the consumer: %r" % f[:200])
        self.cons_seen = max(self.cons_seen, m["seq"])
        if m["seq"] % 25 == 0:
            try:
                self.cons.send_json({"op": "ack", "topic": CONSUMER_TOPIC, "upto": m["seq"]})
            except OSError:
                if not self.dead:
                    raise
                return
            self.acks.append((time.monotonic(), m["seq"]))

    def step(self, timeout=0.05, send=True):
        """Sends what the windows allow, then reads what arrived. Returns False at EOF on
        every socket (wsqd is gone)."""
        if send and not self.dead:
            self._send()
        socks = [ws.sock for ws in self.all if ws.sock.fileno() >= 0]
        if not socks:
            return False
        r, _, _ = select.select(socks, [], [], timeout)
        for ws in self.all:
            if ws.sock.fileno() < 0 or ws.sock not in r:
                continue
            try:
                chunk = ws.sock.recv(1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                ws.sock.close()
                continue
            ws.buf += chunk
            for op, f in fu.whole_frames(ws):
                if op != 1:
                    continue  # a close frame: wsqd is never asked to close here
                if ws is self.cons:
                    self._on_cons(f)
                else:
                    self._on_pub(self.pubs.index(ws), f)
        return True

    def quiesce(self):
        """Stops publishing and waits for every outstanding confirm."""
        deadline = time.monotonic() + 30 * h.SLOW
        while any(self.sent) and time.monotonic() < deadline:
            self.step(send=False)
        assert not any(self.sent), "confirms outstanding after 30 s"

    def n_confirmed(self):
        return sum(len(v) for v in self.confirmed.values())

    def drain(self):
        """After the kill: the confirms wsqd wrote before it died are still in our sockets.
        They count: they were sent before the power went."""
        self.dead = True
        deadline = time.monotonic() + 10
        while self.step(0.2) and time.monotonic() < deadline:
            pass
        for ws in self.all:
            ws.sock.close()


def read_topic(d, topic):
    """Every retained message of topic through wsqd's history: seq -> payload bytes."""
    out = {}
    frm = 1
    while True:
        st, _, page = d.history(topic, "?from=%d&limit=1000" % frm)
        if st == 404:
            return out
        assert st == 200, (st, page)
        assert "gap" not in page, ("history of %s from %d: %r" % (topic, frm, page.get("gap")))
        for m in page["messages"]:
            out[m["seq"]] = m["data"].encode()
        if not page["messages"]:
            return out
        frm = page["messages"][-1]["seq"] + 1
        if frm >= page["next_seq"]:
            return out


def setUpModule():
    if os.geteuid() != 0:
        raise unittest.SkipTest("a power cut needs root to loop-mount an ext4 image (uid %d); "
                                "CI runs as root" % os.geteuid())
    if not shutil.which("mkfs.ext4"):
        raise unittest.SkipTest("mkfs.ext4 is not installed (Debian package e2fsprogs)")
    base = tempfile.mkdtemp(prefix="wsqcut-probe-")
    try:
        img = Image(base, size_mb=16)
        img.remove()
    except AssertionError as e:
        raise unittest.SkipTest("cannot loop-mount an ext4 image here: %s" % e)
    finally:
        shutil.rmtree(base, ignore_errors=True)


class PowerCut(unittest.TestCase):

    def setUp(self):
        self.base = tempfile.mkdtemp(prefix="wsqcut-")
        self.images = []
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.cleanup()
        for img in self.images:
            img.remove()
        if not os.environ.get("WSQ_KEEP"):
            shutil.rmtree(self.base, ignore_errors=True)

    def cut(self, sync, seed, idle=False, consumer=True):
        """One power cut under load (idle: after the load stopped and every publish was
        confirmed, with the broker idle; consumer: with the durable consumer reading) -> a dict
        of what was confirmed and what survived."""
        rnd = random.Random(seed)
        img = Image(self.base)
        self.images.append(img)
        d = h.Wsqd(sync=sync, log_level="info", storage_path=os.path.join(img.mnt, "data"),
                   base=self.base)
        self.daemons.append(d)
        d.start()
        load = Load(d, seed, consumer)
        # run until some confirms came back, then for a random while longer
        t0 = time.monotonic()
        while load.n_confirmed() < 200:
            load.step()
            self.assertLess(time.monotonic() - t0, 30 * h.SLOW, "no confirms under load")
        t_cut = time.monotonic() + rnd.uniform(0.3, 2.0)
        while time.monotonic() < t_cut:
            load.step()
        if idle:
            load.quiesce()
            time.sleep(0.3)
        # the power goes: nothing written from here reaches the copy
        os.kill(d.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        copy = os.path.join(self.base, "cut-%s-%d.img" % (sync, seed))
        img.copy(copy)
        d.proc.wait()
        load.drain()
        self.assertEqual(load.refused, [], "publishes refused under load")
        res = {"confirmed": load.n_confirmed(), "lost": 0, "missing_store": False, "idle": idle,
               "acked_old": max([u for t, u in load.acks if t <= t_kill - ACK_MARGIN_S],
                                default=0),
               "acked_max": max([u for _, u in load.acks], default=0)}
        # what a kill -9 leaves (the page cache intact): every sync mode keeps everything
        lost, resume = self.survivors(os.path.join(img.mnt, "data"), sync, load, res, "kill -9")
        self.assertEqual(lost, 0, "sync %s: a kill -9 lost confirmed messages" % sync)
        if resume is not None:
            self.assertGreaterEqual(resume, res["acked_old"] + 1,
                                    "sync %s: a kill -9 lost an ack older than %.2fs"
                                    % (sync, ACK_MARGIN_S))
        img.remove()
        self.images.remove(img)

        # what the power cut leaves
        after = Image(self.base, path=copy)
        self.images.append(after)
        data = os.path.join(after.mnt, "data")
        if not os.path.exists(os.path.join(data, "data.mdb")):
            res["missing_store"] = True
            res["lost"] = res["confirmed"]
        else:
            res["lost"], res["resume"] = self.survivors(data, sync, load, res, "power cut")
        after.remove()  # (the copy with it)
        self.images.remove(after)
        return res

    def survivors(self, data, sync, load, res, what):
        """wsqctl check, then wsqd on the store at data: whatever survived must be a sound
        store whose topics are gap-free prefixes from seq 1, byte-exact where confirmed, and the
        consumer must not resume past its first unacked message. -> (confirmed messages
        missing, the consumer's resume seq or None)."""
        rc, out, err = h.wsqctl("check", "-d", data)
        self.assertEqual(rc, 0, "wsqctl check after a %s (sync %s):\n%s%s"
                         % (what, sync, out, err))
        d2 = h.Wsqd(sync=sync, log_level="info", storage_path=data, base=self.base)
        self.daemons.append(d2)
        d2.start()
        lost = 0
        for topic in TOPICS:
            stored = read_topic(d2, topic)
            seqs = sorted(stored)
            self.assertEqual(seqs, list(range(1, len(seqs) + 1)),
                             "%s: stored seqs are not 1..N after a %s (sync %s)"
                             % (topic, what, sync))
            for seq, data_ in load.confirmed[topic].items():
                if seq not in stored:
                    lost += 1
                else:
                    self.assertEqual(stored[seq], data_, "%s seq %d differs from what was "
                                     "confirmed after a %s (sync %s)" % (topic, seq, what, sync))
            # an id whose message survived is remembered: its retry stores nothing
            kept = [(s, k) for s, k in sorted(load.ids[topic].items()) if s in stored][-10:]
            ws = h.SocketWS(d2, timeout=30)
            for s, k in kept:
                ws.send_json({"op": "pub", "topic": topic, "data": "retry", "id": k, "ref": 1})
                ok = ws.expect("ok")
                self.assertEqual((ok["seq"], ok.get("dup")), (s, True),
                                 "%s id %s after a %s (sync %s)" % (topic, k, what, sync))
            ws.close()
        resume = None
        if load.cons is not None:
            ws = h.SocketWS(d2, timeout=30)
            sub = ws.subscribe(CONSUMER_TOPIC, consumer=CONSUMER, frm="resume")
            ws.close()
            self.assertTrue(sub["resumed"], sub)
            self.assertLessEqual(sub["start_seq"], res["acked_max"] + 1,
                                 "the consumer resumes past what it acked after a %s (sync %s)"
                                 % (what, sync))
            resume = sub["start_seq"]
        d2.stop()
        d2.cleanup()
        self.daemons.remove(d2)
        return lost, resume

    def report(self, sync, results):
        sys.stderr.write("power cuts, sync %s:\n" % sync)
        for r in results:
            sys.stderr.write("  %s confirmed %7d  lost %7d%s  consumer acked %d (%d %.2fs "
                             "before the cut), resumes at %s\n"
                             % ("idle:" if r["idle"] else "load:", r["confirmed"], r["lost"],
                                "  (no store on disk)" if r["missing_store"] else "",
                                r["acked_max"], r["acked_old"], ACK_MARGIN_S,
                                r.get("resume") or "-"))
        sys.stderr.flush()

    def test_1_sync_full_loses_nothing(self):
        results = [self.cut("full", 1000 + i, idle=i % 4 == 3, consumer=i != 7)
                   for i in range(CUTS_FULL)]
        self.report("full", results)
        for r in results:
            self.assertFalse(r["missing_store"], "sync full: the store is not on disk")
            self.assertEqual(r["lost"], 0, "sync full lost confirmed messages: %r" % r)
            if r.get("resume") is None:
                continue  # the cut without a consumer
            self.assertGreaterEqual(r["resume"], r["acked_old"] + 1,
                                    "sync full: an ack older than %.2fs was lost: %r"
                                    % (ACK_MARGIN_S, r))
        self.assertGreaterEqual(sum(1 for r in results if r["acked_old"] > 0), CUTS_FULL // 2,
                                "too few cuts came late enough to test a persisted ack")
        self.assertGreaterEqual(sum(r["confirmed"] for r in results), CUTS_FULL * 200)

    def test_2_control_sync_none_loses(self):
        """Without fsync, confirmed messages must die with the power: else the test cuts
        nothing and test_1 proves nothing."""
        results = [self.cut("none", 2000 + i) for i in range(CUTS_NONE)]
        self.report("none", results)
        lost = sum(r["lost"] for r in results)
        self.assertGreater(lost, 0, "sync none lost nothing over %d cuts: the simulated power "
                           "cut does not cut the page cache" % CUTS_NONE)

    def test_3_sync_batch_measured(self):
        # idle without a consumer: nothing is committed after the last publish
        results = [self.cut("batch", 3000 + i, idle=i % 2 == 1, consumer=i != 3)
                   for i in range(CUTS_BATCH)]
        self.report("batch", results)
        for r in results:
            self.assertFalse(r["missing_store"], "sync batch: the store is not on disk")
            # what batch may lose is its last commit, and a commit holds at most
            # storage.batch_max_messages (4096) messages
            self.assertLessEqual(r["lost"], 4096, "sync batch lost more than one commit: %r" % r)
        confirmed = sum(r["confirmed"] for r in results)
        lost = sum(r["lost"] for r in results)
        sys.stderr.write("sync batch: lost %d of %d confirmed over %d cuts (max %d in one)\n"
                         % (lost, confirmed, CUTS_BATCH, max(r["lost"] for r in results)))


if __name__ == "__main__":
    h.main(wsqctl=True)
