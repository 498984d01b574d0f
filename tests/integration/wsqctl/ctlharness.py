"""Harness for the wsqctl integration tests (python3 standard library only).

Runs the real wsqd on a temporary data dir and a free loopback port, runs the wsqctl binary and
returns (rc, stdout, stderr), and offers a small WebSocket client (wsq.v1 consumers that must see
`gap` frames and close codes), an HTTP publisher that runs as background load and records every
confirmed message, and a helper that holds the data-dir lock the way an offline wsqctl does.

Usage in a test file:

    import ctlharness as h
    class T(h.CtlTestCase):
        def test_x(self):
            d = self.wsqd               # started in setUp (START = True)
            rc, out, err = self.ctl("-c", d.conf, "topics", "--json")
    if __name__ == "__main__":
        h.main()                        # argv: WSQD WSQCTL [unittest args]

Every process a test starts is stopped by PID at the end of the test; temp dirs are removed
(WSQ_KEEP=1 keeps them).

wsqctl asks the broker at the default URL (http://127.0.0.1:8080) whether it runs, and another
wsqd on this machine may answer there. So self.ctl() runs wsqctl with $WSQ_URL set to a loopback
port where nothing answers (NO_BROKER_URL) unless a test passes its own WSQ_URL: a test that gives
no --url or -c sees "no broker" for certain. test_10 runs in a network namespace of its own to use
the real default.
"""

import fcntl
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "py"))
import wsqharness  # noqa: E402  (the shared WebSocket upgrade and frame helpers)

WSQD = None
WSQCTL = None
NO_BROKER_URL = None  # a loopback port bound without listen(): connections are refused
_no_broker_sock = None

# Under ASan everything is slower: scale the waits.
SLOW = 3.0 if os.environ.get("WSQ_SLOW") or os.environ.get("ASAN_OPTIONS") else 1.0


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sha256_hex(token):
    return hashlib.sha256(token.encode()).hexdigest()


class Wsqd:
    """One wsqd on one temp data dir (restartable)."""

    def __init__(self, base, extra_yaml="", anonymous_admin=True, auth_yaml=None, sync="full",
                 tls=None, storage_path=None):
        self.dir = tempfile.mkdtemp(prefix="wsqctl-", dir=base)
        self.data = os.path.join(self.dir, "data")  # wsqd runs in self.dir: ./data is this
        self.conf = os.path.join(self.dir, "wsq.yaml")
        self.log_path = os.path.join(self.dir, "wsqd.log")
        self.port = free_port()
        self.proc = None
        self._logf = None
        self.tls = tls
        if auth_yaml is None:
            auth_yaml = ("auth:\n  anonymous:\n    publish: [\">\"]\n    subscribe: [\">\"]\n"
                         "    admin: %s\n" % ("true" if anonymous_admin else "false"))
        with open(self.conf, "w") as f:
            f.write("listeners:\n  - address: 127.0.0.1\n    port: %d\n" % self.port)
            if tls:
                f.write("    tls:\n      cert: %s\n      key: %s\n" % tls)
            f.write("storage:\n  path: %s\n  sync: %s\n"
                    % (json.dumps(storage_path or self.data), sync))
            f.write(auth_yaml)
            f.write("log:\n  level: info\n")
            f.write(extra_yaml)

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, expect_ready=True, timeout=15.0):
        if self._logf is None:
            self._logf = open(self.log_path, "ab")
        offset = os.path.getsize(self.log_path)
        self.proc = subprocess.Popen([WSQD, "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=self._logf, cwd=self.dir)
        if not expect_ready:
            return self
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            text = self._log_since(offset)
            if re.search(r"\bready\b", text):
                return self
            if self.proc.poll() is not None:
                raise AssertionError("wsqd exited with %d during startup\n%s"
                                     % (self.proc.returncode, self.log_tail()))
            time.sleep(0.02)
        self.kill()
        raise AssertionError("wsqd not ready in time\n" + self.log_tail())

    def _log_since(self, offset):
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=40):
        return "---- wsqd log (%s) ----\n%s\n----" % (
            self.log_path, "\n".join(self.log().splitlines()[-n:]))

    def stop(self, timeout=15.0):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError("wsqd did not stop on SIGTERM\n" + self.log_tail())

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def cleanup(self):
        self.kill()
        if self._logf:
            self._logf.close()
            self._logf = None
        if not os.environ.get("WSQ_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- HTTP --------------------------------------------------------------------------------

    def http(self, method, path, body=None, headers=None, timeout=10.0):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout * SLOW)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def post(self, topic, payload):
        """Publishes one message over HTTP; returns its seq (after commit)."""
        if isinstance(payload, str):
            body, ctype = payload.encode("utf-8"), "text/plain; charset=utf-8"
        else:
            body, ctype = payload, "application/octet-stream"
        st, data = self.http("POST", "/topics/" + topic, body, {"Content-Type": ctype})
        if st != 200:
            raise AssertionError("POST /topics/%s -> %d %r" % (topic, st, data[:200]))
        return json.loads(data)["seq"]


class Load(threading.Thread):
    """Publishes to a topic over HTTP until stopped; records every confirmed message."""

    def __init__(self, d, topic, size=48, pause=0.0, timeout=3.0):
        super().__init__(daemon=True)
        self.d, self.topic, self.size, self.pause = d, topic, size, pause
        self.timeout = timeout * SLOW
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
                    conn = http.client.HTTPConnection("127.0.0.1", self.d.port,
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
        deadline = time.monotonic() + timeout * SLOW
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
        if self.errors:
            # wsqd 0.1.0 never confirms a publish that the writer batched after a purge in the
            # same transaction (the message is committed; its completion is lost: the job loop
            # in storage/writer.c overwrites the purge request's batch link). Reported.
            sys.stderr.write("note: %s: %d publishes got no confirm: %r\n"
                             % (self.topic, len(self.errors), self.errors[:3]))


class Closed(Exception):
    def __init__(self, code, reason):
        super().__init__("closed %r %r" % (code, reason))
        self.code, self.reason = code, reason


class WS:
    """A minimal WebSocket client (text frames, fragments, ping/pong, close)."""

    def __init__(self, port, path="/", protocol="wsq.v1", token=None, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
        headers = ["Authorization: Bearer %s" % token] if token else []
        status, head, self.buf = wsqharness.ws_upgrade(self.sock, "127.0.0.1", port, path,
                                                       protocol, headers)
        if b" 101 " not in status + b" ":
            raise AssertionError("upgrade refused: %r" % head)

    def _send(self, opcode, payload):
        self.sock.sendall(wsqharness.ws_frame(opcode, payload))

    def send_json(self, obj):
        self._send(1, json.dumps(obj, separators=(",", ":")).encode())

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed(None, "eof")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout=10.0):
        """Next complete data message (bytes); raises Closed on a close frame."""
        self.sock.settimeout(timeout * SLOW)
        parts = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            data = self._read(n)
            op = b0 & 0x0F
            if op == 8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                try:
                    self._send(8, data[:2])
                except OSError:
                    pass
                raise Closed(code, data[2:].decode("utf-8", "replace"))
            if op == 9:
                self._send(10, data)
                continue
            if op == 10:
                continue
            parts.append(data)
            if b0 & 0x80:
                return b"".join(parts)

    def recv_json(self, timeout=10.0):
        return json.loads(self.recv(timeout))

    def expect(self, op, timeout=10.0, skip=()):
        while True:
            f = self.recv_json(timeout)
            if f["op"] in skip:
                continue
            if f["op"] != op:
                raise AssertionError("expected %s, got %r" % (op, f))
            return f

    def subscribe(self, topic, consumer=None, frm="earliest", window=None, ref=1):
        m = {"op": "sub", "topic": topic, "from": frm, "ref": ref}
        if consumer:
            m["consumer"] = consumer
        if window:
            m["window"] = window
        self.send_json(m)
        return self.expect("subscribed", skip=("msg",))

    def close(self):
        try:
            self._send(8, struct.pack("!H", 1000))
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


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
    e["WSQ_URL"] = NO_BROKER_URL
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return e


def wait_until(fn, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


class CtlTestCase(unittest.TestCase):
    """setUp starts a wsqd (self.wsqd) unless START = False; self.ctl runs wsqctl."""

    START = True
    EXTRA_YAML = ""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="wsqctl-test-")
        self.addCleanup(lambda: os.environ.get("WSQ_KEEP") or
                        shutil.rmtree(self.tmp, ignore_errors=True))
        self._daemons = []
        self._procs = []
        if self.START:
            self.wsqd = self.new_wsqd(self.EXTRA_YAML).start()

    def new_wsqd(self, extra_yaml="", **kw):
        d = Wsqd(self.tmp, extra_yaml, **kw)
        self._daemons.append(d)
        self.addCleanup(d.cleanup)
        return d

    def ctl(self, *args, input=None, timeout=60.0, env=None, cwd=None):
        """Runs wsqctl in cwd (default self.tmp); returns (rc, stdout str, stderr str).
        env: variables to set; a value of None removes the variable."""
        p = subprocess.run([WSQCTL] + list(args), input=input, capture_output=True,
                           timeout=timeout * SLOW, env=ctl_env(env), cwd=cwd or self.tmp)
        return (p.returncode, p.stdout.decode("utf-8", "replace"),
                p.stderr.decode("utf-8", "replace"))

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
        p = subprocess.Popen([WSQCTL] + list(args), stdin=stdin or subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ctl_env(None),
                             cwd=self.tmp)
        self._procs.append(p)

        def reap():
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdout, p.stderr, p.stdin):
                if f:
                    f.close()
        self.addCleanup(reap)
        return p


class _Result(unittest.TextTestResult):
    def _tails(self, test):
        for d in getattr(test, "_daemons", []):
            self.stream.writeln(d.log_tail())
        self.stream.flush()

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._tails(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._tails(test)


def main():
    """python3 test_x.py WSQD WSQCTL [unittest args]"""
    global WSQD, WSQCTL, NO_BROKER_URL, _no_broker_sock
    argv = list(sys.argv)
    if len(argv) < 3:
        sys.stderr.write("usage: %s WSQD WSQCTL [unittest options]\n" % argv[0])
        sys.exit(2)
    WSQD = os.path.abspath(argv.pop(1))
    WSQCTL = os.path.abspath(argv.pop(1))
    _no_broker_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _no_broker_sock.bind(("127.0.0.1", 0))  # held, never listening, for the whole run
    NO_BROKER_URL = "http://127.0.0.1:%d" % _no_broker_sock.getsockname()[1]
    runner = unittest.TextTestRunner(resultclass=_Result, verbosity=2, stream=sys.stderr)
    prog = unittest.main(argv=argv, testRunner=runner, exit=False)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
