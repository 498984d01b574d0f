"""What only the wsqctl integration tests need, on top of the one harness (wsqharness.py, which
starts wsqd, writes its config and has the HTTP and WebSocket clients):

- CtlTestCase: every wsqd on a fixed free port (wsqctl -c reads the port from the config) in
  the test's temp dir, and self.ctl*() to run the wsqctl binary;
- Load: an HTTP publisher that runs as background load and records every confirmed message;
- LockHolder / lock_held: the data-dir lock, held and read the way an offline wsqctl does.

Usage in a test file:

    import wsqharness as h
    import ctlharness as c
    class T(c.CtlTestCase):
        def test_x(self):
            d = self.wsqd               # started in setUp (START = True)
            rc, out, err = self.ctl("-c", d.conf, "topics", "--json")
    if __name__ == "__main__":
        c.main()                        # argv: WSQD WSQCTL [unittest args]

wsqctl asks the broker at the default URL (http://127.0.0.1:8080) whether it runs, and another
wsqd on this machine may answer there. So self.ctl() runs wsqctl with $WSQ_URL set to a loopback
port where nothing answers (no_broker_url()) unless a test passes its own WSQ_URL: a test that
gives no --url or -c sees "no broker" for certain. test_default_url.py runs in a network
namespace of its own to use the real default.
"""

import fcntl
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "py"))
import wsqharness as h  # noqa: E402

_no_broker_sock = None


def no_broker_url():
    """A loopback URL whose port is bound (for the whole run) but never listening: connections
    are refused. Made on first use, so in the network namespace the test runs in by then."""
    global _no_broker_sock
    if _no_broker_sock is None:
        _no_broker_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        _no_broker_sock.bind(("127.0.0.1", 0))
    return "http://127.0.0.1:%d" % _no_broker_sock.getsockname()[1]


class Load(threading.Thread):
    """Publishes to a topic over HTTP until stopped; records every confirmed message."""

    def __init__(self, d, topic, size=48, pause=0.0, timeout=3.0):
        super().__init__(daemon=True)
        self.d, self.topic, self.size, self.pause = d, topic, size, pause
        self.timeout = timeout * h.SLOW
        self.confirmed = {}     # seq -> payload (str)
        self.unconfirmed = []   # payloads whose publish got no confirm (may or may not exist)
        self.errors = []
        self._halt = threading.Event()

    def run(self):
        conn = None
        i = 0
        while not self._halt.is_set():
            i += 1
            payload = ("%s-%06d-" % (self.topic, i)).ljust(self.size, "x")
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.d.host, self.d.port,
                                                      timeout=self.timeout)
                conn.request("POST", "/topics/" + self.topic, body=payload.encode(),
                             headers={"Content-Type": "text/plain"})
                r = conn.getresponse()
                data = r.read()
                if r.status == 200:
                    self.confirmed[json.loads(data)["seq"]] = payload
                else:
                    self.errors.append((r.status, data[:200]))
                    self.unconfirmed.append(payload)
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(repr(e))
                self.unconfirmed.append(payload)
                if conn:
                    conn.close()
                conn = None
                time.sleep(0.05)
            if self.pause:
                time.sleep(self.pause)
        if conn:
            conn.close()

    def wait_for(self, n, timeout=20.0):
        deadline = time.monotonic() + timeout * h.SLOW
        while len(self.confirmed) < n:
            if time.monotonic() > deadline:
                raise AssertionError("load on %s: only %d of %d confirmed; errors %r"
                                     % (self.topic, len(self.confirmed), n, self.errors[:3]))
            time.sleep(0.01)

    def stop(self):
        self._halt.set()
        self.join(15)

    def check_store(self, tc, stored, first=1):
        """stored: seq -> payload of the topic as exported. Every confirmed message with seq >=
        first is there, byte-exact; anything else there is a publish that got no confirm."""
        for seq, payload in self.confirmed.items():
            if seq >= first:
                tc.assertEqual(stored.get(seq), payload, "%s: confirmed seq %d lost"
                               % (self.topic, seq))
        extra = {v for s, v in stored.items() if self.confirmed.get(s) != v}
        tc.assertLessEqual(extra, set(self.unconfirmed), "%s: unexpected messages" % self.topic)
        # Every publish is answered while wsqd runs, purges and imports included (a purge that
        # finished in its own transaction once cut the batch list, and the publishes after it
        # were committed but never confirmed).
        tc.assertEqual(self.errors, [], "%s: publishes without a confirm" % self.topic)


class LockHolder:
    """Holds DIR/wsq.lock the way wsqd and an offline wsqctl do (flock, pid in the file), from a
    child process so the pid is real and not ours."""

    def __init__(self, data_dir):
        os.makedirs(data_dir, exist_ok=True)
        code = ("import fcntl,os,sys\n"
                "f=os.open(sys.argv[1],os.O_RDWR|os.O_CREAT,0o640)\n"
                "fcntl.flock(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\n"
                "os.ftruncate(f,0);os.pwrite(f,(str(os.getpid())+'\\n').encode(),0)\n"
                "print('locked',flush=True)\n"
                "sys.stdin.read()\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code,
                                      os.path.join(data_dir, "wsq.lock")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if line.strip() != b"locked":
            raise AssertionError("lock helper failed: %r" % line)

    @property
    def pid(self):
        return self.proc.pid

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(10)
        self.proc.stdout.close()


def lock_held(data_dir):
    """(held, pid in the file) for DIR/wsq.lock, as wsq_store_lock_holder sees it."""
    p = os.path.join(data_dir, "wsq.lock")
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        return False, 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            txt = os.pread(fd, 32, 0).decode().strip()
            return True, int(txt) if txt.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, 0
    finally:
        os.close(fd)


def ctl_env(env):
    """The environment for wsqctl: no token, no broker at $WSQ_URL, then env (None removes)."""
    e = dict(os.environ)
    e.pop("WSQ_TOKEN", None)
    e["WSQ_URL"] = no_broker_url()
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return e


class CtlTestCase(h.WsqdTestCase):
    """setUp starts a wsqd (self.wsqd) unless START = False; self.ctl runs wsqctl. Every wsqd
    has a fixed port (in its config, for wsqctl -c), an info log, and lives in self.tmp."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="wsqctl-test-")
        self.addCleanup(lambda: os.environ.get("WSQ_KEEP") or
                        shutil.rmtree(self.tmp, ignore_errors=True))
        super().setUp()

    def wsqd_defaults(self):
        return {"port": h.free_port(), "base": self.tmp, "log_level": "info"}

    def ctl(self, *args, input=None, timeout=60.0, env=None, cwd=None):
        """Runs wsqctl in cwd (default self.tmp); returns (rc, stdout str, stderr str).
        env: variables to set; a value of None removes the variable."""
        return h.wsqctl(*args, input=input, timeout=timeout, env=ctl_env(env),
                        cwd=cwd or self.tmp)

    def format_version(self):
        """The on-disk format this wsqctl writes, from its --version."""
        out, _ = self.ctl_ok("--version")
        return int(re.search(r"^on-disk format (\d+)$", out, re.M).group(1))

    def ctl_ok(self, *args, **kw):
        rc, out, err = self.ctl(*args, **kw)
        self.assertEqual(rc, 0, "wsqctl %s -> %d\nstdout: %s\nstderr: %s"
                         % (" ".join(args), rc, out[:2000], err[:2000]))
        return out, err

    def ctl_json(self, *args, **kw):
        out, _ = self.ctl_ok("--json", *args, **kw)
        lines = out.strip().splitlines()
        self.assertEqual(len(lines), 1, "one JSON document expected: %r" % out[:500])
        return json.loads(lines[0])

    def ctl_fails(self, rc_want, *args, pattern=None, **kw):
        rc, out, err = self.ctl(*args, **kw)
        self.assertEqual(rc, rc_want, "wsqctl %s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                         % (" ".join(args), rc, rc_want, out[:1000], err[:1000]))
        if pattern:
            self.assertRegex(err, pattern)
        return out, err

    def spawn(self, *args, stdin=None):
        """wsqctl in the background (stdout/stderr piped); killed at cleanup."""
        p = subprocess.Popen([h.WSQCTL] + list(args), stdin=stdin or subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ctl_env(None),
                             cwd=self.tmp)

        def reap():
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdout, p.stderr, p.stdin):
                if f:
                    f.close()
        self.addCleanup(reap)
        return p


def main():
    """python3 test_x.py WSQD WSQCTL [unittest args]"""
    h.main(wsqctl=True)
