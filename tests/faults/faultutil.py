"""What only the resource-fault tests (tests/faults) need, on top of the one harness
(tests/integration/py/wsqharness.py: wsqd, configs, clients, /proc sampling, wsqctl, main):
a small filesystem to fill, and a fast pipelined wsq.v1 publisher.

Each test file is a unittest program run as `python3 test_x.py WSQD WSQCTL`
(h.main(wsqctl=True)). WSQ_KEEP=1 keeps the temp dirs; WSQ_SLOW=N scales the waits.
"""

import os
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration", "py"))
import wsqharness as h  # noqa: E402


# -- a small filesystem ----------------------------------------------------------------------

class SmallFs:
    """A filesystem of size_mb MiB mounted on a fresh temp dir: tmpfs (size=), or, when that
    cannot be mounted, a loop-mounted ext4 image. WSQ_FAULT_FS=tmpfs|ext4 forces one.
    Raises unittest.SkipTest, naming what is missing, when neither can be mounted (not root, no
    mount privilege): the harness then exits 77, or fails under WSQ_REQUIRE_ALL=1 (CI)."""

    def __init__(self, size_mb):
        self.size_mb = size_mb
        self.mnt = None
        self.img = None
        self.kind = None
        self.tried = []
        if os.geteuid() != 0:
            raise unittest.SkipTest("mounting a small filesystem needs root (uid %d); this test "
                                    "runs as root in CI" % os.geteuid())
        want = os.environ.get("WSQ_FAULT_FS", "")
        self.mnt = tempfile.mkdtemp(prefix="wsqfault-mnt-")
        try:
            if want in ("", "tmpfs") and self._tmpfs():
                return
            if want in ("", "ext4") and self._ext4():
                return
        except Exception:
            self.cleanup()
            raise
        self.cleanup()
        raise unittest.SkipTest("cannot mount a small filesystem: " + "; ".join(self.tried))

    def _run(self, *cmd):
        p = subprocess.run(list(cmd), capture_output=True, timeout=60)
        if p.returncode != 0:
            self.tried.append("%s: exit %d %s" % (" ".join(cmd[:3]), p.returncode,
                                                  p.stderr.decode(errors="replace").strip()))
        return p.returncode == 0

    def _tmpfs(self):
        if self._run("mount", "-t", "tmpfs", "-o", "size=%dm,mode=0755" % self.size_mb,
                     "tmpfs", self.mnt):
            self.kind = "tmpfs"
            return True
        return False

    def _ext4(self):
        if not shutil.which("mkfs.ext4"):
            self.tried.append("mkfs.ext4 not installed (e2fsprogs)")
            return False
        fd, self.img = tempfile.mkstemp(prefix="wsqfault-", suffix=".ext4")
        os.close(fd)
        os.truncate(self.img, self.size_mb << 20)
        if not self._run("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", self.img):
            return False
        if self._run("mount", "-o", "loop", self.img, self.mnt):
            self.kind = "ext4 (loop)"
            return True
        return False

    def free_bytes(self):
        st = os.statvfs(self.mnt)
        return st.f_bavail * st.f_frsize

    def cleanup(self):
        if self.mnt and os.path.ismount(self.mnt):
            for args in (["umount", self.mnt], ["umount", "-l", self.mnt]):
                if subprocess.run(args, capture_output=True, timeout=60).returncode == 0:
                    break
                time.sleep(0.5)
        if self.mnt and os.path.isdir(self.mnt) and not os.path.ismount(self.mnt):
            shutil.rmtree(self.mnt, ignore_errors=True)
        if self.img and os.path.exists(self.img):
            os.unlink(self.img)
        self.mnt = self.img = None


# -- a fast pipelined publisher ----------------------------------------------------------------

def whole_frames(ws):
    """Yields (opcode, payload) of each whole frame in ws.buf (a SocketWS fed by the caller's
    own recv: frames from wsqd are unmasked), and leaves the rest in ws.buf."""
    while len(ws.buf) >= 2:
        n = ws.buf[1] & 0x7F
        off = 2
        if n == 126:
            if len(ws.buf) < 4:
                return
            n = struct.unpack("!H", ws.buf[2:4])[0]
            off = 4
        elif n == 127:
            if len(ws.buf) < 10:
                return
            n = struct.unpack("!Q", ws.buf[2:10])[0]
            off = 10
        if len(ws.buf) < off + n:
            return
        op = ws.buf[0] & 0x0F
        f = ws.buf[off:off + n]
        ws.buf = ws.buf[off + n:]
        yield op, f


def preload(d, topic, count, size=128, conns=4, window=2000):
    """Publishes count messages of `size` bytes (confirmed, pipelined over conns wsq.v1
    connections with up to `window` unconfirmed each; zero-masked frames, so that a million
    publishes are cheap to send). Payload i is b"%010d" % i padded with 'x'. Returns the number
    of confirms."""
    clients = [h.SocketWS(d, timeout=60, zero_mask=True) for _ in range(conns)]
    sent = [0] * conns
    acked = [0] * conns
    share = [count // conns + (1 if i < count % conns else 0) for i in range(conns)]
    base = [sum(share[:i]) for i in range(conns)]
    pad = b"x" * max(0, size - 10)
    okpat = re.compile(rb'"op":"ok"')
    errpat = re.compile(rb'"op":"err"')

    while any(acked[i] < share[i] for i in range(conns)):
        for i, c in enumerate(clients):
            if sent[i] < share[i] and sent[i] - acked[i] < window:
                k = min(share[i] - sent[i], window - (sent[i] - acked[i]), 500)
                out = []
                for j in range(sent[i], sent[i] + k):
                    n = base[i] + j
                    body = (b'{"op":"pub","topic":"%s","ref":%d,"data":"%010d%s"}'
                            % (topic.encode(), n, n, pad))
                    out.append(c.frame(1, body))
                c.send_raw(b"".join(out))
                sent[i] += k
        r, _, _ = select.select([c.sock for c in clients], [], [], 30 * h.SLOW)
        if not r:
            raise AssertionError("preload stalled: %d of %d confirmed" % (sum(acked), count))
        for i, c in enumerate(clients):
            if c.sock in r:
                chunk = c.sock.recv(1 << 20)
                if not chunk:
                    raise AssertionError("preload connection closed by wsqd")
                c.buf += chunk
                for _, f in whole_frames(c):
                    if errpat.search(f):
                        raise AssertionError("preload publish refused: %r" % f[:300])
                    if okpat.search(f):
                        acked[i] += 1
    for c in clients:
        c.close()
    return sum(acked)
