#!/usr/bin/python3
"""Storage failed (issue 17): LMDB's fdatasync, or its writes to data.mdb, fail under wsqd.

Run as `python3 test_storage_failed.py WSQD WSQCTL SHIM`. SHIM is eio_shim.so
(tests/faults/eio_shim.c), preloaded into wsqd (LD_PRELOAD) for the run that fails. It is armed
while the trigger file WSQ_EIO_TRIGGER exists: then every fdatasync/fsync/msync
(WSQ_EIO_OP=fsync), or every write to data.mdb (WSQ_EIO_OP=write: pwrite, writev, ...), fails
with WSQ_EIO_ERRNO (EIO, or ENOSPC). Nothing else fails: logs and sockets go on working.

EIO (a failed write or fsync: the kernel may have dropped the pages, so wsqd must never confirm
the batch, nor retry it) - under pipelined wsq.v1 load with sync: full (and with batch; with none
for failing writes), the trigger created mid-stream:
- the failed batch is refused: its publishers get `err` code storage_failed; a publish read after
  the shutdown began gets `closed`; on each connection no `ok` comes after its first refusal, and
  no ref is answered twice;
- the confirmed seqs of each topic are gap-free from 1; a live subscriber got nothing that is not
  in the store after the restart;
- every WebSocket client gets close 1011 "storage failed", also one that never answers the close:
  wsqd waits for it (3 s: its close-ack timeout, broker/ws.c; limits.shutdown_timeout is no
  shorter here), and meanwhile GET /healthz (on a keep-alive connection opened before: a new
  connection is reset during a shutdown) answers 503
  {"status":"unavailable","storage":"storage_failed","detail":"commit: Input/output error"};
- the log has one error line, `error=storage_failed ... detail="commit: Input/output error"`, and
  wsqd exits with status 3;
- `wsqctl check` passes on the data dir, and after a restart without the shim every confirmed
  message is there, byte-exact and gap-free; anything more is an unconfirmed publish of ours;
  publishing works again.
The same with failing writes (shorter); an HTTP publisher gets 503 {"error":{"code":
"storage_failed"}}. ENOSPC injected at the commit is not a failure but a full disk:
storage_full (wsq.v1 and HTTP 507, /healthz 503 storage_full), wsqd keeps running, and once the
trigger is gone the next publish is confirmed.
"""

import base64
import contextlib
import json
import os
import random
import select
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration",
                                "py"))
import wsqharness as h  # noqa: E402

SHIM = None   # argv[3]
TOPICS = ("sf.a", "sf.b", "sf.c")
SHUTDOWN_S = 3   # limits.shutdown_timeout (times the slow-build factor): not below the close-ack
                 # timeout, so that a client that never answers the close is waited for
DETAIL = "commit: Input/output error"


def payload(conn, ref):
    """What publisher conn sends with ref: 40..1500 bytes, binary, its origin in front."""
    head = b"%d/%d|" % (conn, ref)
    rnd = random.Random(conn * 1000003 + ref)
    return head + rnd.randbytes(rnd.randrange(40, 1500) - len(head))


def msg_bytes(m):
    """The payload of a msg frame or history entry: base64 for binary, the string for text."""
    return base64.b64decode(m["data"]) if m.get("enc") == "base64" else m["data"].encode()


@contextlib.contextmanager
def shim_env(trigger, op, errno_name="EIO"):
    """The environment wsqd is started in (subprocess copies it at the fork): the shim preloaded
    and configured. A sanitizer build's runtime must otherwise come first in the library list."""
    add = {"LD_PRELOAD": SHIM, "WSQ_EIO_TRIGGER": trigger, "WSQ_EIO_OP": op,
           "WSQ_EIO_ERRNO": errno_name}
    if h.instrumented():
        add["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
                                                     "verify_asan_link_order=0"]))
    saved = {k: os.environ.get(k) for k in add}
    os.environ.update(add)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Conn:
    """A wsq.v1 connection read without blocking on whole frames: events in arrival order,
    ("ok", ref, topic, seq), ("err", ref, code), ("msg", topic, seq, bytes), then ("close", code,
    reason); a close is answered."""

    def __init__(self, d):
        self.ws = h.SocketWS(d, timeout=30, zero_mask=True)
        self.events = []
        self.closed = None   # (code, reason)
        self.answered = 0    # ok and err events

    def read(self):
        chunk = self.ws.sock.recv(1 << 20)
        if not chunk:
            raise AssertionError("connection ended without a close frame; events: %r"
                                 % self.events[-5:])
        self.ws.buf += chunk
        buf = self.ws.buf
        while len(buf) >= 2 and self.closed is None:
            op, n, off = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, off = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, off = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < off + n:
                break
            data, buf = buf[off:off + n], buf[off + n:]
            if op == 8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                self.closed = (code, data[2:].decode("utf-8", "replace"))
                self.events.append(("close",) + self.closed)
                with contextlib.suppress(OSError):
                    self.ws.send_frame(8, data[:2])
            elif op == 9:
                self.ws.send_frame(10, data)
            elif op == 1:
                f = json.loads(data)
                if f["op"] == "ok":
                    self.events.append(("ok", f["ref"], f["topic"], f["seq"]))
                    self.answered += 1
                elif f["op"] == "err":
                    self.events.append(("err", f.get("ref"), f["code"]))
                    self.answered += 1
                elif f["op"] == "msg":
                    self.events.append(("msg", f["topic"], f["seq"], msg_bytes(f)))
                elif f["op"] != "subscribed":
                    raise AssertionError("unexpected frame %r" % f)
        self.ws.buf = buf


class Publisher(Conn):
    """Pipelined confirmed publishes (up to `window` unanswered) to TOPICS in turn."""

    def __init__(self, d, idx, window):
        super().__init__(d)
        self.idx = idx
        self.window = window
        self.sent = {}       # ref -> (topic, payload)

    def fill(self):
        out = []
        while len(self.sent) - self.answered < self.window:
            ref = len(self.sent) + 1
            topic = TOPICS[(self.idx + ref) % len(TOPICS)]
            p = payload(self.idx, ref)
            self.sent[ref] = (topic, p)
            out.append(self.ws.frame(1, json.dumps(
                {"op": "pub", "topic": topic, "ref": ref, "enc": "base64",
                 "data": base64.b64encode(p).decode()}, separators=(",", ":")).encode()))
        if out:
            with contextlib.suppress(OSError):   # the server may be closing
                self.ws.send_raw(b"".join(out))


class StorageFailed(h.WsqdTestCase):
    START = False

    def start_shimmed(self, op, errno_name="EIO", sync="full"):
        d = self.new_wsqd("limits:\n  shutdown_timeout: %ds\n" % (SHUTDOWN_S * h.SLOW), sync=sync)
        trigger = os.path.join(d.dir, "eio.trigger")
        with shim_env(trigger, op, errno_name):
            d.start()
        with open("/proc/%d/maps" % d.pid) as f:
            self.assertIn(os.path.basename(SHIM), f.read(), "the shim is not loaded in wsqd")
        return d, trigger

    def healthz_on(self, conn):
        """GET /healthz on an open keep-alive connection -> (status, JSON body)."""
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        r = conn.response()
        self.assertIsNotNone(r, "GET /healthz: the connection was closed without an answer")
        return r[0], json.loads(r[2])

    def wait_exit(self, d, rc):
        """wsqd exits by itself, with status rc."""
        try:
            got = d.proc.wait(timeout=(SHUTDOWN_S + 10) * h.SLOW)
        except subprocess.TimeoutExpired:
            self.fail("wsqd did not exit by itself after the storage failure\n" + d.log_tail())
        self.assertEqual(got, rc, d.log_tail())

    def check_failure_log(self, d):
        """The one error line of the failed run: error=storage_failed with the detail."""
        lines = [ln for ln in d.log().splitlines() if "error=storage_failed" in ln]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn('detail="%s"' % DETAIL, lines[0])
        self.assertEqual(d.log_problems(), lines)

    def read_history(self, d, topic):
        """{seq: bytes} of a topic through HTTP history pages; {} when it does not exist."""
        got = {}
        nxt = 1
        while True:
            st, _, body = d.history(topic, "?from=%d&limit=1000" % nxt)
            if st == 404 and not got:
                return got
            self.assertEqual(st, 200, body)
            for m in body["messages"]:
                got[m["seq"]] = msg_bytes(m)
            if not body["messages"] or body["messages"][-1]["seq"] + 1 >= body["next_seq"]:
                return got
            nxt = body["messages"][-1]["seq"] + 1

    # -- EIO under load -----------------------------------------------------------------------

    def test_fsync_eio_under_load_refuses_closes_exits_3_and_keeps_every_confirm(self):
        self.under_load("fsync", arm_after=3000)

    def test_write_eio_under_load_refuses_closes_exits_3_and_keeps_every_confirm(self):
        self.under_load("write", arm_after=800)

    # the writer's handling does not depend on storage.sync: batch fsyncs the data too, none
    # still writes

    def test_sync_batch_fsync_eio(self):
        self.under_load("fsync", arm_after=800, sync="batch")

    def test_sync_batch_write_eio(self):
        self.under_load("write", arm_after=800, sync="batch")

    def test_sync_none_write_eio(self):
        self.under_load("write", arm_after=800, sync="none")

    def under_load(self, op, arm_after, npub=4, window=64, sync="full"):
        d, trigger = self.start_shimmed(op, sync=sync)
        held = h.SocketWS(d)          # never reads, never answers the close: wsqd waits for it
        hc = h.RawHttp(d)             # keep-alive, for /healthz during the shutdown
        st, body = self.healthz_on(hc)
        self.assertEqual((st, body["storage"]), (200, "writable"), body)
        sub = Conn(d)                 # a live subscriber of every topic
        for i, t in enumerate(TOPICS):
            sub.ws.send_json({"op": "sub", "topic": t, "from": "earliest", "window": 10000,
                              "ref": "s%d" % i})
        pubs = [Publisher(d, i, window) for i in range(npub)]
        conns = pubs + [sub]

        armed_at = None
        n_ok = 0
        deadline = time.monotonic() + 60 * h.SLOW
        while any(c.closed is None for c in conns):
            if armed_at is None:
                n_ok = sum(p.answered for p in pubs)
                if n_ok >= arm_after:
                    errs = [e for p in pubs for e in p.events if e[0] != "ok"]
                    self.assertEqual(errs, [], "refusals before the trigger")
                    st, body = self.healthz_on(hc)   # (also keeps the connection alive)
                    self.assertEqual((st, body["storage"]), (200, "writable"), body)
                    open(trigger, "w").close()
                    armed_at = time.monotonic()
            for p in pubs:
                if p.closed is None:
                    p.fill()
            live = [c for c in conns if c.closed is None]
            r, _, _ = select.select([c.ws.sock for c in live], [], [], 10 * h.SLOW)
            self.assertTrue(r, "no frame for 10 s (armed: %s)" % (armed_at is not None))
            for c in live:
                if c.ws.sock in r:
                    c.read()
            self.assertLess(time.monotonic(), deadline, "wsqd neither refused nor closed")
        t_closed = time.monotonic() - armed_at

        # wsqd waits for `held` now (its close-ack timeout, 3 s): /healthz says why
        self.assertTrue(d.running(), "wsqd did not wait for the client that does not "
                        "answer the close\n" + d.log_tail())
        st, body = self.healthz_on(hc)
        self.assertEqual((st, body.get("status"), body.get("storage"), body.get("detail")),
                         (503, "unavailable", "storage_failed", DETAIL), body)
        hc.close()
        self.wait_exit(d, 3)
        t_exit = time.monotonic() - armed_at
        code, reason, frames = held.recv_close()
        self.assertEqual((code, reason), (1011, "storage failed"))
        self.assertEqual([f for f in frames if f[0] != 9], [])
        held.close()
        for c in conns:
            self.assertEqual(c.closed, (1011, "storage failed"))
            c.ws.close()
        self.check_failure_log(d)
        self.assertIn("shutdown phase=begin", d.log())

        # what the clients were told
        confirmed = {t: {} for t in TOPICS}   # topic -> {seq: bytes}
        codes = {}
        unconfirmed = {}   # (topic, bytes) sent and refused (the err) or never answered (None)
        for p in pubs:
            seen = set()
            refused = False
            self.assertEqual(p.events[-1][0], "close")
            for e in p.events[:-1]:
                self.assertNotIn(e[1], seen, "ref %r of publisher %d answered twice" % (e[1],
                                                                                   p.idx))
                seen.add(e[1])
                topic, data = p.sent[e[1]]
                if e[0] == "ok":
                    self.assertFalse(refused, "publisher %d: ok %r after a refusal" % (p.idx, e))
                    self.assertEqual(e[2], topic)
                    self.assertNotIn(e[3], confirmed[topic], "seq confirmed twice: %r" % (e,))
                    confirmed[topic][e[3]] = data
                else:
                    refused = True
                    codes[e[2]] = codes.get(e[2], 0) + 1
                    unconfirmed[(topic, data)] = e
            for ref, (topic, data) in p.sent.items():
                if ref not in seen:
                    unconfirmed[(topic, data)] = None
        n_conf = sum(len(v) for v in confirmed.values())
        self.assertGreaterEqual(n_conf, arm_after)
        self.assertGreater(codes.get("storage_failed", 0), 0, codes)
        self.assertLessEqual(set(codes), {"storage_failed", "closed"}, codes)
        for t in TOPICS:
            self.assertEqual(sorted(confirmed[t]), list(range(1, len(confirmed[t]) + 1)),
                             "confirmed seqs of %s are not gap-free" % t)
        delivered = {}
        for e in sub.events[:-1]:
            self.assertEqual(e[0], "msg", e)
            self.assertNotIn((e[1], e[2]), delivered, "delivered twice: %r" % (e[:3],))
            delivered[(e[1], e[2])] = e[3]

        # the store: consistent, every confirm there; anything more was sent and not confirmed
        rc, out, errt = h.wsqctl("--data", d.data, "--json", "check")
        self.assertEqual(rc, 0, out + errt)
        self.assertTrue(json.loads(out)["ok"], out)
        d.start()   # without the shim
        extra = 0
        for t in TOPICS:
            got = self.read_history(d, t)
            self.assertEqual(sorted(got), list(range(1, len(got) + 1)), "%s has gaps" % t)
            for seq, data in confirmed[t].items():
                self.assertEqual(got.get(seq), data, "confirmed %s seq %d" % (t, seq))
            for seq, data in got.items():
                if seq not in confirmed[t]:
                    self.assertIn((t, data), unconfirmed, "%s seq %d was never sent" % (t, seq))
                    extra += 1
            for (tt, seq), data in delivered.items():
                if tt == t:
                    self.assertEqual(got.get(seq), data, "delivered %s seq %d" % (t, seq))
            st, _, body = d.post(t, b"after")
            self.assertEqual((st, body.get("seq")), (200, len(got) + 1), body)
        st, _, body = d.http_json("GET", "/healthz")
        self.assertEqual((st, body["storage"]), (200, "writable"), body)
        self.assertEqual(d.stop(), 0)
        sys.stderr.write(
            "\n%s EIO: %d confirmed before the trigger took (%d when it was created), %s; "
            "%d unanswered; %d delivered live; closes %.2fs and exit 3 %.2fs after the "
            "trigger; %d unconfirmed publishes found in the store after the restart\n"
            % (op, n_conf, n_ok, codes, sum(1 for v in unconfirmed.values() if v is None),
               len(delivered), t_closed, t_exit, extra))

    # -- HTTP -----------------------------------------------------------------------------------

    def test_http_publisher_gets_503_storage_failed(self):
        d, trigger = self.start_shimmed("write")
        c = h.RawHttp(d)

        def post(body):
            c.send(b"POST /topics/sf.h HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                   b"application/octet-stream\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            r = c.response()
            self.assertIsNotNone(r, "POST: the connection was closed without an answer")
            return r

        st, _, body = post(b"one")
        self.assertEqual((st, json.loads(body)), (200, {"seq": 1, "topic": "sf.h"}))
        open(trigger, "w").close()
        st, hdrs, body = post(b"two")
        self.assertEqual(st, 503, body)
        self.assertEqual(hdrs.get("content-type"), "application/json")
        self.assertEqual(json.loads(body)["error"]["code"], "storage_failed", body)
        c.close()
        self.wait_exit(d, 3)   # no WebSocket client to wait for
        self.check_failure_log(d)
        d.start()
        got = self.read_history(d, "sf.h")
        self.assertEqual(got.get(1), b"one")
        self.assertIn(got, ({1: b"one"}, {1: b"one", 2: b"two"}))
        self.assertEqual(d.stop(), 0)

    # -- ENOSPC: a full disk, not a failure -----------------------------------------------------

    def test_enospc_at_commit_is_storage_full_and_recovers(self):
        d, trigger = self.start_shimmed("write", "ENOSPC")
        pid = d.pid
        c = h.SocketWS(d)

        def pub(ref, topic="sf.a"):
            c.send_json({"op": "pub", "topic": topic, "ref": ref, "data": "m%d" % ref})
            return c.recv_json()

        self.assertEqual(pub(1), {"op": "ok", "ref": 1, "topic": "sf.a", "seq": 1})
        open(trigger, "w").close()
        for ref, topic in ((2, "sf.a"), (3, "sf.new")):
            f = pub(ref, topic)
            self.assertEqual((f["op"], f["ref"], f["code"]), ("err", ref, "storage_full"), f)
        st, _, body = d.post("sf.a", b"http")
        self.assertEqual((st, body["error"]["code"]), (507, "storage_full"), body)
        st, _, body = d.http_json("GET", "/healthz")
        self.assertEqual((st, body["status"], body["storage"]),
                         (503, "unavailable", "storage_full"), body)
        self.assertNotIn("detail", body)
        self.assertTrue(d.running())
        os.unlink(trigger)
        self.assertEqual(pub(4), {"op": "ok", "ref": 4, "topic": "sf.a", "seq": 2})
        self.assertEqual(pub(5, "sf.new")["seq"], 1)
        st, _, body = d.http_json("GET", "/healthz")
        self.assertEqual((st, body["storage"]), (200, "writable"), body)
        c.close()
        self.assertEqual(d.pid, pid)
        self.assertEqual(d.stop(), 0)
        self.assertNotIn("storage_failed", d.log())
        self.assertEqual(d.log_problems(), [])
        d.start()
        self.assertEqual(self.read_history(d, "sf.a"), {1: b"m1", 2: b"m4"})
        self.assertEqual(self.read_history(d, "sf.new"), {1: b"m5"})
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[3].startswith("-"):
        sys.stderr.write("usage: %s WSQD WSQCTL SHIM [unittest options]\n" % sys.argv[0])
        sys.exit(2)
    SHIM = os.path.abspath(sys.argv.pop(3))
    if not os.path.isfile(SHIM):
        sys.stderr.write("%s: the shim %s does not exist (build target wsq_eio_shim)\n"
                         % (sys.argv[0], SHIM))
        sys.exit(2)
    h.main(wsqctl=True)
