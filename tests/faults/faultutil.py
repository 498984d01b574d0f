"""Shared helpers of the resource-fault tests (tests/faults): a small filesystem to fill, a fast
pipelined wsq.v1 publisher on a plain socket, /proc sampling, and the entry point.

Each test file is a unittest program run as `python3 test_x.py WSQD WSQCTL`; the wsqd
processes come from tests/integration/py/wsqharness.py (temp config and data dir, killed and
removed at exit). WSQ_KEEP=1 keeps the temp dirs; WSQ_SLOW=N scales the waits.
"""

import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration", "py"))
import wsqharness as h  # noqa: E402

WSQCTL = os.environ.get("WSQCTL")


# -- a small filesystem ----------------------------------------------------------------------

class SmallFs:
    """A filesystem of size_mb MiB mounted on a fresh temp dir: tmpfs (size=), or, when that
    cannot be mounted, a loop-mounted ext4 image. WSQ_FAULT_FS=tmpfs|ext4 forces one.
    Raises unittest.SkipTest when neither can be mounted (not root, no mount privilege)."""

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


# -- a fast wsq.v1 client on a plain socket ----------------------------------------------------

class V1:
    """wsq.v1 over a plain socket. Client frames are masked with the all-zero key (legal, and
    no XOR in Python), so that hundreds of thousands of publishes are cheap to send."""

    def __init__(self, port, timeout=10.0, rcvbuf=None, path="/", subprotocol="wsq.v1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout * h.SLOW)
        self.sock.connect(("127.0.0.1", port))
        self.status, head, self.buf = h.ws_upgrade(self.sock, "127.0.0.1", port, path,
                                                   subprotocol)
        if b" 101 " not in self.status + b" ":
            raise ConnectionRefusedError("upgrade refused: %r" % head[:300])

    @staticmethod
    def frame(payload, opcode=1):
        return h.ws_frame(opcode, payload, mask=b"\0\0\0\0")  # a zero mask: no work to mask

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_json(self, obj):
        self.sock.sendall(self.frame(json.dumps(obj, separators=(",", ":")).encode()))

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("connection closed by wsqd")
            self.buf += chunk

    def recv(self):
        """Next data message (bytes). Answers pings; raises h.Closed on a close frame."""
        parts = []
        while True:
            self._fill(2)
            b0, b1 = self.buf[0], self.buf[1]
            n = b1 & 0x7F
            off = 2
            if n == 126:
                self._fill(4)
                n = struct.unpack("!H", self.buf[2:4])[0]
                off = 4
            elif n == 127:
                self._fill(10)
                n = struct.unpack("!Q", self.buf[2:10])[0]
                off = 10
            self._fill(off + n)
            data = self.buf[off:off + n]
            self.buf = self.buf[off + n:]
            op = b0 & 0x0F
            if op == 8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                raise Closed(code, data[2:].decode("utf-8", "replace"))
            if op == 9:
                self.send_raw(self.frame(data, 10))
                continue
            if op == 10:
                continue
            parts.append(data)
            if b0 & 0x80:
                return b"".join(parts)

    def recv_json(self):
        return json.loads(self.recv())

    def expect(self, op, skip=()):
        while True:
            f = self.recv_json()
            if f["op"] in skip:
                continue
            if f["op"] != op:
                raise AssertionError("expected %s, got %r" % (op, f))
            return f

    def close(self):
        try:
            self.send_raw(self.frame(struct.pack("!H", 1000), 8))
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class Closed(Exception):
    def __init__(self, code, reason):
        super().__init__("closed %s %s" % (code, reason))
        self.code = code
        self.reason = reason


def preload(port, topic, count, size=128, conns=4, window=2000, binary=False):
    """Publishes count messages of `size` bytes (confirmed, pipelined over conns connections
    with up to `window` unconfirmed each). Payload i is b"%010d" % i padded with 'x'. Returns
    the number of confirms."""
    clients = [V1(port, timeout=60) for _ in range(conns)]
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
                    out.append(V1.frame(body))
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
                # frames from wsqd are unmasked text frames of < 64 KiB: count whole ones
                while len(c.buf) >= 2:
                    n = c.buf[1] & 0x7F
                    off = 2
                    if n == 126:
                        if len(c.buf) < 4:
                            break
                        n = struct.unpack("!H", c.buf[2:4])[0]
                        off = 4
                    if len(c.buf) < off + n:
                        break
                    f = c.buf[off:off + n]
                    c.buf = c.buf[off + n:]
                    if errpat.search(f):
                        raise AssertionError("preload publish refused: %r" % f[:300])
                    if okpat.search(f):
                        acked[i] += 1
    for c in clients:
        c.close()
    return sum(acked)


# -- /proc -------------------------------------------------------------------------------------

def proc_status(pid):
    """{'VmRSS': kB, 'RssAnon': kB, 'RssFile': kB, ...} of /proc/PID/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            v = v.strip()
            if v.endswith(" kB"):
                out[k] = int(v[:-3])
    return out


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


# -- running -------------------------------------------------------------------------------------

def ctl(*args, timeout=60.0):
    p = subprocess.run([WSQCTL] + list(args), capture_output=True, timeout=timeout * h.SLOW)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def instrumented(binary=None):
    """Is wsqd an ASan/UBSan/TSan build? (Its RSS then means nothing: shadow memory and the
    quarantine of freed blocks.)"""
    try:
        with open(binary or h.WSQD, "rb") as f:
            blob = f.read()
    except OSError:
        return False
    return b"__asan_init" in blob or b"__tsan_init" in blob or b"__msan_init" in blob


def log_problems(d):
    """Lines of wsqd's log at level error, and sanitizer reports."""
    out = []
    for line in d.log().splitlines():
        parts = line.split(None, 2)
        if (len(parts) >= 2 and parts[1] == "error") or "Sanitizer" in line or \
                "runtime error" in line:
            out.append(line)
    return out


def main():
    """python3 test_x.py WSQD WSQCTL [unittest args]"""
    global WSQCTL
    if len(sys.argv) < 3:
        sys.stderr.write("usage: %s WSQD WSQCTL [unittest options]\n" % sys.argv[0])
        sys.exit(2)
    WSQCTL = os.path.abspath(sys.argv.pop(2))
    os.environ["WSQCTL"] = WSQCTL
    h.main()
