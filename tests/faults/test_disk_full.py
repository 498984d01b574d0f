#!/usr/bin/python3
"""Disk full: wsqd's data dir on a tiny filesystem, filled by publishes until storage refuses.

The filesystem is a tmpfs mounted with size=8m (root; works in CI and on the development
machine); if tmpfs cannot be mounted, a loop-mounted 8 MiB ext4 image. WSQ_FAULT_FS=ext4 forces
the image. Without root or mount privileges the test is skipped with a message.

storage.map_size_max (64 MiB) is far above the filesystem, so the disk fills first (ENOSPC, not
MDB_MAP_FULL). Checks:
- publishes are refused with storage_full: wsq.v1 `err` code storage_full, HTTP 507
  {"error":{"code":"storage_full"}}, raw mode close 4013;
- nothing confirmed is lost: every confirmed message is read back byte-exact (HTTP history,
  an ephemeral subscriber from earliest and a durable consumer created before the disk filled);
- wsqd keeps serving reads, and /healthz says 503 {"storage":"storage_full"};
- `wsqctl purge` (online, through the admin endpoint) frees space, and publishing recovers by
  itself, without a restart (same pid); /healthz is 200 again; the seqs go on (no reuse);
- after a clean stop, `wsqctl check` passes and everything confirmed after the purge is there.
The filesystem is unmounted and removed whatever happens.
"""

import base64
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultutil as fu  # noqa: E402
import wsqharness as h  # noqa: E402

FS_MB = 8
SIZE = 4000   # payload bytes


def payload(i):
    """Message i: SIZE incompressible bytes, the same every time it is asked for."""
    return (b"%08d|" % i) + random.Random(i).randbytes(SIZE - 9)


def msg_bytes(m):
    """The payload of a msg frame or history entry: base64 for binary, the string for text."""
    return base64.b64decode(m["data"]) if m.get("enc") == "base64" else m["data"].encode()


class DiskFull(h.WsqdTestCase):
    START = False

    def setUp(self):
        super().setUp()
        self.fs = fu.SmallFs(FS_MB)
        self.addCleanup(self.fs.cleanup)
        sys.stderr.write("\nfilesystem: %s, %d MiB at %s (%d bytes free)\n"
                         % (self.fs.kind, FS_MB, self.fs.mnt, self.fs.free_bytes()))
        data = os.path.join(self.fs.mnt, "data")
        self.d = self.new_wsqd(
            "storage:\n  path: %s\n  sync: full\n  map_size_initial: 1MiB\n"
            "  map_size_max: 64MiB\n" % json.dumps(data))
        self.d.data = data
        # registered after fs.cleanup, so it runs first: wsqd is gone before the umount
        self.addCleanup(self.d.kill)
        self.d.start()

    def publish_until_full(self, c, topic, start, window=64):
        """Pipelined confirmed publishes (up to `window` unconfirmed) until storage refuses
        with storage_full. Returns ({seq: bytes}, the first storage_full err frame). Any other
        refusal is recorded in self.problems (the sending goes on)."""
        confirmed = {}
        inflight = {}
        i = start
        first_err = None
        other = []
        deadline = time.monotonic() + 60 * h.SLOW
        while True:
            while first_err is None and len(inflight) < window:
                p = payload(i)
                c.send_json({"op": "pub", "topic": topic, "ref": i, "enc": "base64",
                             "data": base64.b64encode(p).decode()})
                inflight[i] = p
                i += 1
            if not inflight:
                break
            f = c.recv_json()
            self.assertIn(f.get("ref"), inflight, f)
            p = inflight.pop(f["ref"])
            if f["op"] == "ok":
                self.assertNotIn(f["seq"], confirmed)
                confirmed[f["seq"]] = p
            elif f.get("code") == "storage_full":
                if first_err is None:
                    first_err = f
            else:
                self.assertEqual(f["op"], "err", f)
                other.append(f)
            self.assertLess(time.monotonic(), deadline, "the disk never filled")
        if other:
            self.problems.append("%d pipelined publishes at the moment the disk filled were "
                                 "refused with %r instead of storage_full, e.g. %r"
                                 % (len(other), sorted({f.get("code") for f in other}),
                                    other[0]))
        return confirmed, first_err

    def read_history(self, topic, frm):
        """Every message from seq frm via HTTP history pages: {seq: bytes}."""
        got = {}
        nxt = frm
        while True:
            st, _, body = self.d.history(topic, "?from=%d&limit=1000" % nxt)
            self.assertEqual(st, 200, body)
            msgs = body["messages"]
            for m in msgs:
                got[m["seq"]] = msg_bytes(m)
            if not msgs or msgs[-1]["seq"] + 1 >= body["next_seq"]:
                return got, body
            nxt = msgs[-1]["seq"] + 1

    def test_full_disk_refuses_serves_reads_and_recovers_after_purge(self):
        """Fill; refusals; reads (history, an ephemeral subscriber); purge; recovery."""
        self.scenario(durable_acks=False)

    def test_full_disk_durable_consumer_acks_then_purge_recovers(self):
        """The same, and before the purge a durable consumer (created before the disk filled)
        reads everything and acks it while the disk is full (acks are allowed on a full
        store: they free space)."""
        self.scenario(durable_acks=True)

    def scenario(self, durable_acks):
        d = self.d
        pid = d.pid
        topic = "full.a"
        url = "http://127.0.0.1:%d" % d.port
        self.problems = []
        if durable_acks:   # a durable consumer that exists before the disk fills
            c0 = h.SocketWS(d)
            c0.send_json({"op": "sub", "topic": topic, "consumer": "dc", "from": "earliest",
                          "ref": 1})
            c0.expect("subscribed")
            c0.close()

        pubc = h.SocketWS(d, timeout=30)
        confirmed, err = self.publish_until_full(pubc, topic, 1)
        n = len(confirmed)
        sys.stderr.write("filled: %d messages of %d B confirmed, then %r; %d bytes free, "
                         "data.mdb %d bytes\n" % (n, SIZE, err, self.fs.free_bytes(),
                                                  os.path.getsize(os.path.join(d.data,
                                                                               "data.mdb"))))
        self.assertGreater(n, 100)
        self.assertIsNotNone(err)
        self.assertEqual(sorted(confirmed), list(range(1, n + 1)))

        # still refused: wsq.v1, HTTP (507), a new topic, raw mode (close 4013). The disk stays
        # full, but LMDB reuses pages that earlier commits freed, so a probe may still fit: then
        # it is confirmed (and must be kept), and the next probe is sent; a refusal must come.
        probes = 500   # a small probe that fits uses about a page: freed ones, or file space
        # that the failed commit at the fill had already written (up to its 64 messages)
        for k in range(probes):
            pubc.send_json({"op": "pub", "topic": topic, "ref": "again%d" % k, "data": "x" * 3000})
            f = pubc.recv_json()
            if f["op"] == "ok":
                confirmed[f["seq"]] = b"x" * 3000
                continue
            self.assertEqual((f["op"], f.get("code"), f.get("ref")),
                             ("err", "storage_full", "again%d" % k))
            sys.stderr.write("still full: %d small wsq.v1 publishes fitted into freed pages, "
                             "then storage_full\n" % k)
            break
        else:
            self.fail("%d wsq.v1 publishes on the full disk were all accepted" % probes)
        for k in range(probes):
            st, _, body = d.post(topic, payload(0))
            if st == 200:
                confirmed[body["seq"]] = payload(0)
                continue
            self.assertEqual(st, 507, body)
            self.assertEqual(body["error"]["code"], "storage_full")
            break
        else:
            self.fail("%d HTTP publishes on the full disk were all accepted" % probes)
        for k in range(probes):
            st, _, body = d.post("full.new", b"y" * 3000)
            if st != 200:
                self.assertEqual(st, 507, body)
                break
        else:
            self.fail("%d HTTP publishes to a new topic on the full disk were all accepted"
                      % probes)
        raw = h.SocketWS(d, path="/topics/" + topic, subprotocol=None)
        closed = None
        for k in range(20):   # the probes above used up the free pages
            raw.send_raw(raw.frame(2, b"z" * 3000))
            try:
                while True:
                    raw.recv(1.0)   # its own message, when it fitted; the close otherwise
            except h.Closed as e:
                closed = e
                break
            except OSError:      # timeout: accepted (raw mode has no confirm); try again
                continue
        self.assertIsNotNone(closed, "20 raw publishes on the full disk: no close")
        self.assertEqual(closed.code, 4013, closed.reason)
        self.assertIn("storage_full", closed.reason)
        raw.close()
        # what the store holds now: everything confirmed, plus any raw probe that fitted
        # (unconfirmed, so it may or may not be there)
        got, _ = self.read_history(topic, 1)
        for seq, p in confirmed.items():
            self.assertEqual(got.get(seq), p, "confirmed seq %d" % seq)
        for seq, p in got.items():
            if seq not in confirmed:
                self.assertEqual(p, b"z" * 3000, "seq %d was never published" % seq)
        confirmed = got
        n = max(got)
        self.assertEqual(sorted(confirmed), list(range(1, n + 1)))

        # health: 503 storage_full (a problem is reported at the end; the rest runs anyway)
        st, _, body = d.http_json("GET", "/healthz")
        if (st, body.get("storage")) != (503, "storage_full"):
            self.problems.append("GET /healthz while publishes are refused with storage_full: "
                                 "%d %r (expected 503 with \"storage\":\"storage_full\")"
                                 % (st, body))

        # reads go on: history, an ephemeral subscriber from earliest, a durable consumer
        got, body = self.read_history(topic, 1)
        self.assertEqual(got, confirmed, "history differs from what was confirmed")
        self.assertEqual(body["next_seq"], n + 1)
        eph = h.SocketWS(d, timeout=30)
        eph.send_json({"op": "sub", "topic": topic, "from": "earliest", "window": 10000,
                       "ref": 2})
        eph.expect("subscribed")
        for seq in range(1, n + 1):
            m = eph.expect("msg")
            self.assertEqual(m["seq"], seq)
            self.assertEqual(msg_bytes(m), confirmed[seq])
        eph.close()
        if durable_acks:
            dc = h.SocketWS(d, timeout=30)
            dc.send_json({"op": "sub", "topic": topic, "consumer": "dc", "from": "earliest",
                          "window": 100, "ref": 3})
            s = dc.expect("subscribed")
            self.assertEqual(s["start_seq"], 1, s)
            for seq in range(1, n + 1):
                m = dc.expect("msg")
                self.assertEqual(m["seq"], seq)
                self.assertEqual(msg_bytes(m), confirmed[seq])
                if seq % 50 == 0 or seq == n:
                    dc.send_json({"op": "ack", "topic": topic, "upto": seq})
            dc.send_json({"op": "ping", "ref": "p"})
            self.assertEqual(dc.expect("pong")["ref"], "p")   # no err for the acks
            dc.close()
            time.sleep(0.2)   # the consumer state is written (it has to fit too)

        # an online purge through the admin endpoint frees space
        half = n // 2
        rc, out, errt = h.wsqctl("--url", url, "--json", "purge", topic, "--before", str(half))
        if rc != 0:
            # evidence: does it come back with more purges, or by itself?
            ev = []
            for b in (half, 10, n + 1):
                time.sleep(0.5)
                ev.append(("purge --before %d" % b,) + h.wsqctl(
                    "--url", url, "--json", "purge", topic, "--before", str(b))[:2])
            ev.append(("POST", d.post(topic, payload(n + 1))[::2]))
            ev.append(("GET /healthz", d.http_json("GET", "/healthz")[::2]))
            rc2, out2, _ = h.wsqctl("--data", d.data, "--json", "topics")
            ev.append(("wsqctl topics", out2.strip()))
            self.problems.append("wsqctl purge %s --before %d on the full disk: exit %d %s; "
                                 "then: %r" % (topic, half, rc, out.strip(), ev))
            self.fail("\n".join(self.problems))
        res = json.loads(out)
        self.assertEqual((res["via"], res["removed"], res["first_seq"], res["next_seq"]),
                         ("broker", half - 1, half, n + 1), res)

        # publishing recovers by itself
        t0 = time.monotonic()
        deadline = t0 + 15 * h.SLOW
        while True:
            st, _, body = d.post(topic, payload(n + 1))
            if st == 200:
                break
            self.assertEqual(st, 507, body)
            self.assertLess(time.monotonic(), deadline, "publishing did not recover after "
                            "the purge: %r" % body)
            time.sleep(0.1)
        sys.stderr.write("publishing recovered %.2fs after the purge (removed %d messages)\n"
                         % (time.monotonic() - t0, res["removed"]))
        self.assertEqual(body["seq"], n + 1)
        confirmed = {s: p for s, p in confirmed.items() if s >= half}
        confirmed[n + 1] = payload(n + 1)
        st, _, hb = d.http_json("GET", "/healthz")
        self.assertEqual((st, hb.get("status"), hb.get("storage")), (200, "ok", "writable"), hb)
        self.assertEqual(d.pid, pid)
        self.assertTrue(d.running())

        # a few hundred more over wsq.v1 fit into the freed pages
        more = {}
        for i in range(n + 2, n + 2 + 200):
            p = payload(i)
            pubc.send_json({"op": "pub", "topic": topic, "ref": i, "enc": "base64",
                            "data": base64.b64encode(p).decode()})
            f = pubc.recv_json()
            self.assertEqual(f["op"], "ok", f)
            more[f["seq"]] = p
        self.assertEqual(sorted(more), list(range(n + 2, n + 202)))
        confirmed.update(more)
        pubc.close()
        got, _ = self.read_history(topic, half)
        self.assertEqual(got, confirmed)

        # clean stop, then the store checks out and holds everything confirmed
        self.assertEqual(d.stop(), 0)
        rc, out, errt = h.wsqctl("--data", d.data, "--json", "check")
        self.assertEqual(rc, 0, out + errt)
        self.assertTrue(json.loads(out)["ok"], out)
        rc, out, errt = h.wsqctl("--data", d.data, "export", topic)
        self.assertEqual(rc, 0, errt)
        stored = {}
        for line in out.splitlines():
            x = json.loads(line)
            stored[x["seq"]] = msg_bytes(x)
        self.assertEqual(stored, confirmed)
        self.assertEqual(d.log_problems(), [])
        if self.problems:
            self.fail("\n".join(self.problems))


if __name__ == "__main__":
    h.main(wsqctl=True)
