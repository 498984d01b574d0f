"""The one harness of wsq's Python tests: integration (tests/integration/py), wsqctl
(tests/integration/wsqctl, with ctlharness.py), resource faults (tests/faults, with faultutil.py)
and chaos (tests/chaos). Clients: python3-websockets (Debian, 10.x) and the standard library.

What it owns:
- starting the real wsqd with a temporary YAML config (port 0, or a fixed free port when a tool
  must read the port from the config; data dir in a temp dir; text log), waiting for
  `listening address=... port=N` and then `ready` in its log, stopping it by PID (SIGTERM or
  SIGKILL), restarting it on the same data dir, and always killing the child and removing the
  temp dir at exit (also when ctest's timeout kills the test: PR_SET_PDEATHSIG);
- HTTP (http.client and a raw HTTP/1.1 client), WebSocket clients (python3-websockets with
  asyncio, and a plain-socket client for frames websockets will not send), /metrics parsing,
  /proc sampling;
- the slow-build factor SLOW: every wait is scaled by it. WSQ_SLOW (or the C scenarios'
  WSQT_SLOW) sets it; main() also sets 3 when the wsqd binary is a sanitizer build;
- the exit status of a test program: 0 when every test ran and passed, 1 when one failed (or
  none ran), 77 (ctest's SKIP_RETURN_CODE) when all that ran passed but at least one test was
  skipped. With WSQ_REQUIRE_ALL=1 (tools/test.sh sets it when CI=true) a skip is a failure that
  names what was missing.

Usage in a test file:

    import wsqharness as h

    class T(h.WsqdTestCase):
        EXTRA_YAML = "limits:\\n  max_message_size: 1KiB\\n"   # optional, per class
        def test_x(self):
            d = self.wsqd          # started in setUp
            ...
    if __name__ == "__main__":
        h.main()                  # argv[1] is the wsqd binary (main(wsqctl=True): argv[2] wsqctl)

On a failing or erroring test the tail of every wsqd log of that test is printed. WSQ_KEEP=1
keeps the temp dirs (config, data, wsqd.log) for a post-mortem.
"""

import asyncio
import atexit
import base64
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
import time
import unittest

import websockets
import websockets.exceptions

WSQD = os.environ.get("WSQD")      # set by main() from argv[1]
WSQCTL = os.environ.get("WSQCTL")  # set by main(wsqctl=True) from argv[2]


def _slow_from_env():
    for var in ("WSQ_SLOW", "WSQT_SLOW"):
        try:
            v = float(os.environ.get(var, ""))
            if v >= 1.0:
                return v
        except ValueError:
            pass
    return 1.0


SLOW = _slow_from_env()


def instrumented(binary=None):
    """Is the binary (default: wsqd) an ASan/UBSan/TSan build? Such a build is several times
    slower, and its RSS means nothing (shadow memory, the quarantine of freed blocks)."""
    try:
        with open(binary or WSQD, "rb") as f:
            blob = f.read()
    except (OSError, TypeError):
        return False
    return b"__asan_init" in blob or b"__tsan_init" in blob or b"__msan_init" in blob


def detect_slow(binary):
    """Scales every wait by 3 for an instrumented wsqd, unless WSQ_SLOW already says more."""
    global SLOW
    if SLOW <= 1.0 and instrumented(binary):
        SLOW = 3.0


_live = []  # every Wsqd ever created in this process, for the atexit cleanup


def cleanup_all():
    for d in list(_live):
        try:
            d.cleanup()
        except Exception:  # pragma: no cover - best effort at exit
            pass


atexit.register(cleanup_all)


def install_signal_handlers(name):
    """SIGTERM/SIGHUP/SIGINT to the test: kill every wsqd and remove the temp dirs, then exit
    128 + signal (finally blocks and atexit do not run on a signal's default action)."""
    def on_signal(signum, frame):
        sys.stderr.write("\n%s: signal %d: killing wsqd and removing temp dirs\n"
                         % (name, signum))
        cleanup_all()
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)


def _die_with_parent():
    """In the child before exec: SIGKILL wsqd if this test process dies (e.g. ctest's timeout
    kills it with SIGKILL, so neither finally nor atexit runs)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:
        pass


def free_port():
    """A loopback port that was free a moment ago (for configs a tool reads the port from)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sha256_hex(token):
    """A static token's sha256, as auth.tokens[].sha256 wants it."""
    if isinstance(token, str):
        token = token.encode()
    return hashlib.sha256(token).hexdigest()


def wait_until(fn, timeout=10.0, what="condition", interval=0.02):
    """Polls fn() until it returns something true (returned); fails after timeout × SLOW."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout * SLOW, what))
        time.sleep(interval)


class WsqdError(AssertionError):
    pass


ANONYMOUS_ALL = ("auth:\n  anonymous:\n    publish: [\">\"]\n    subscribe: [\">\"]\n"
                 "    admin: true\n")
ANONYMOUS_NONE = "auth:\n  anonymous:\n    publish: []\n    subscribe: []\n    admin: false\n"


class Wsqd:
    """One wsqd process (possibly restarted several times) on one temp data dir.

    extra_yaml: top-level sections that replace the defaults' (listeners, storage, auth,
    metrics, log) or add to them. port: 0 (wsqd picks one; learned from its log) or a fixed
    port, for tests whose tools read it from the config (wsqctl -c). tls: (cert, key) for the
    default listener. storage_path: storage.path as written (wsqd runs in self.dir, so "./data"
    is self.data). base: the directory the temp dir is made in. preexec: run in the child before
    exec (e.g. setrlimit)."""

    def __init__(self, binary=None, extra_yaml="", anonymous=True, sync="full",
                 log_level="debug", listeners_yaml=None, port=0, tls=None, storage_path=None,
                 base=None, preexec=None):
        self.binary = binary or WSQD
        if not self.binary or not os.access(self.binary, os.X_OK):
            raise WsqdError("wsqd binary not given or not executable: %r" % (self.binary,))
        self.dir = tempfile.mkdtemp(prefix="wsqpy-", dir=base)
        self.data = os.path.join(self.dir, "data")
        self.conf = os.path.join(self.dir, "wsq.yaml")
        self.log_path = os.path.join(self.dir, "wsqd.log")
        self.proc = None
        self.port = port or None
        self.host = "127.0.0.1"
        self.tls = tls
        self.preexec = preexec
        self.starts = 0
        self._log_offset = 0
        self._logf = None
        _live.append(self)
        if listeners_yaml is None:
            listeners_yaml = "listeners:\n  - address: 127.0.0.1\n    port: %d\n" % port
            if tls:
                listeners_yaml += "    tls:\n      cert: %s\n      key: %s\n" % tls
        # /metrics is public here, so that tests without anonymous rights can read the counters
        # they check; tests of metrics.auth give their own metrics section (extra_yaml).
        text = (listeners_yaml +
                "storage:\n  path: %s\n  sync: %s\n" % (json.dumps(storage_path or self.data),
                                                        sync) +
                (ANONYMOUS_ALL if anonymous else ANONYMOUS_NONE) +
                "metrics:\n  auth: public\n" +
                "log:\n  level: %s\n  format: text\n" % log_level)
        self.config_text = merge_yaml(text, extra_yaml)
        with open(self.conf, "w") as f:
            f.write(self.config_text)

    # -- process control -------------------------------------------------------------------

    def _preexec(self):
        _die_with_parent()
        if self.preexec:
            self.preexec()

    def start(self, timeout=15.0, wait=True):
        """Starts wsqd; with wait, returns once it logged `ready` (port learned from the log).
        Without wait, returns at once (for a start that must fail)."""
        if self.proc is not None and self.proc.poll() is None:
            raise WsqdError("wsqd already running (pid %d)" % self.proc.pid)
        timeout *= SLOW
        if self._logf is None:
            self._logf = open(self.log_path, "ab")
        self._log_offset = os.path.getsize(self.log_path)
        self._logf.write(("---- harness: start #%d ----\n" % (self.starts + 1)).encode())
        self._logf.flush()
        self.proc = subprocess.Popen([self.binary, "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=self._logf, cwd=self.dir,
                                     preexec_fn=self._preexec)
        self.starts += 1
        if not wait:
            return self
        deadline = time.monotonic() + timeout
        port = None
        while time.monotonic() < deadline:
            text = self._new_log()
            if port is None:
                m = re.search(r"\blistening address=(\S+) port=(\d+)", text)
                if m:
                    port = int(m.group(2))
            if port is not None and re.search(r"\bready\b", text.split("listening", 1)[-1]):
                self.port = port
                return self
            if self.proc.poll() is not None:
                raise WsqdError("wsqd exited with %d during startup\n%s"
                                % (self.proc.returncode, self.log_tail()))
            time.sleep(0.02)
        self.kill()
        raise WsqdError("wsqd not ready within %.1fs\n%s" % (timeout, self.log_tail()))

    def _new_log(self):
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            return f.read().decode("utf-8", "replace")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, expect_rc=0, timeout=15.0):
        """SIGTERM by PID; wait; check the exit status (None: do not check). Returns rc."""
        if self.proc is None:
            return None
        timeout *= SLOW
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise WsqdError("wsqd did not exit within %.1fs of SIGTERM (killed)\n%s"
                            % (timeout, self.log_tail()))
        if expect_rc is not None and rc != expect_rc:
            raise WsqdError("wsqd exited with %d, expected %d\n%s"
                            % (rc, expect_rc, self.log_tail()))
        return rc

    def kill(self):
        """SIGKILL by PID and reap."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        return self.proc.returncode if self.proc else None

    def restart(self, how="term", expect_rc=0):
        if how == "term":
            self.stop(expect_rc)
        else:
            self.kill()
        return self.start()

    def cleanup(self):
        self.kill()
        if self._logf:
            self._logf.close()
            self._logf = None
        if os.path.isdir(self.dir) and not os.environ.get("WSQ_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        if self in _live:
            _live.remove(self)

    # -- logs -------------------------------------------------------------------------------

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        lines = self.log().splitlines()
        return "---- wsqd log tail (%s, pid %s) ----\n%s\n---- end of wsqd log ----" % (
            self.log_path, self.pid, "\n".join(lines[-n:]))

    def wait_log(self, pattern, timeout=5.0, since_start=True):
        """Wait until the log (of the current run) matches the regex; return the match."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            text = self._new_log() if since_start else self.log()
            m = re.search(pattern, text)
            if m:
                return m
            if time.monotonic() >= deadline:
                raise WsqdError("log never matched %r\n%s" % (pattern, self.log_tail()))
            time.sleep(0.02)

    def log_problems(self):
        """Lines of the whole log at level error, and sanitizer reports."""
        out = []
        for line in self.log().splitlines():
            parts = line.split(None, 2)
            if (len(parts) >= 2 and parts[1] == "error") or "Sanitizer" in line or \
                    "runtime error" in line:
                out.append(line)
        return out

    # -- addresses --------------------------------------------------------------------------

    @property
    def url(self):
        """The HTTP base URL (what wsqctl --url takes)."""
        return "%s://%s:%d" % ("https" if self.tls else "http", self.host, self.port)

    def ws_url(self, path="/"):
        return "ws://%s:%d%s" % (self.host, self.port, path)

    # -- HTTP (stdlib) ----------------------------------------------------------------------

    def http(self, method, path, body=None, headers=None, timeout=10.0):
        """One HTTP request; returns (status, headers dict lowercased, body bytes)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout * SLOW)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def http_json(self, method, path, body=None, headers=None):
        status, hdrs, data = self.http(method, path, body, headers)
        try:
            obj = json.loads(data.decode("utf-8")) if data else None
        except ValueError:
            raise AssertionError("HTTP %s %s -> %d with a body that is not JSON: %r"
                                 % (method, path, status, data[:300]))
        return status, hdrs, obj

    def post(self, topic, payload, content_type=None, headers=None):
        """POST /topics/<topic>: -> (status, headers, JSON body). A str is a text message."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
            content_type = content_type or "text/plain; charset=utf-8"
        content_type = content_type or "application/octet-stream"
        hdrs = {"Content-Type": content_type}
        hdrs.update(headers or {})
        return self.http_json("POST", "/topics/" + topic, payload, hdrs)

    def publish(self, topic, payload):
        """POST /topics/<topic> that must succeed; returns the message's seq (after commit)."""
        st, _, obj = self.post(topic, payload)
        if st != 200:
            raise AssertionError("POST /topics/%s -> %d %r" % (topic, st, obj))
        return obj["seq"]

    def history(self, topic, query=""):
        return self.http_json("GET", "/topics/%s/messages%s" % (topic, query))

    def metrics(self):
        status, _, data = self.http("GET", "/metrics")
        if status != 200:
            raise AssertionError("GET /metrics -> %d %r" % (status, data[:200]))
        return parse_prometheus(data.decode("utf-8"))


def merge_yaml(base, extra):
    """Append extra YAML; a top-level section present in both is replaced by extra's version
    (wsqd refuses duplicate keys)."""
    if not extra:
        return base
    extra = extra.strip("\n") + "\n"
    top = set(re.findall(r"^([A-Za-z_]+):", extra, re.M))
    out, skip = [], False
    for line in base.splitlines(True):
        m = re.match(r"^([A-Za-z_]+):", line)
        if m:
            skip = m.group(1) in top
        if not skip:
            out.append(line)
    return "".join(out) + extra


def parse_prometheus(text):
    """Prometheus text format -> {name or name{labels}: float}. Checks each line's syntax."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            if line.startswith("# TYPE"):
                parts = line.split()
                if len(parts) != 4 or parts[3] not in ("counter", "gauge", "histogram",
                                                       "summary", "untyped"):
                    raise AssertionError("bad TYPE line in /metrics: %r" % line)
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)(?:\s+-?\d+)?$", line)
        if not m:
            raise AssertionError("bad sample line in /metrics: %r" % line)
        out[m.group(1)] = float(m.group(2))
    return out


# -- /proc ------------------------------------------------------------------------------------

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


def rss(pid):
    """Resident set size of a process, in bytes."""
    return proc_status(pid)["VmRSS"] * 1024


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


# -- wsqctl -----------------------------------------------------------------------------------

def wsqctl(*args, timeout=60.0, env=None, cwd=None, input=None):
    """Runs the wsqctl of main(wsqctl=True): -> (rc, stdout str, stderr str)."""
    p = subprocess.run([WSQCTL] + list(args), input=input, capture_output=True,
                       timeout=timeout * SLOW, env=env, cwd=cwd)
    return (p.returncode, p.stdout.decode("utf-8", "replace"),
            p.stderr.decode("utf-8", "replace"))


# -- websockets helpers (asyncio; websockets 10.x legacy client) ----------------------------

def run(coro, timeout=60.0):
    """Run a coroutine with an overall timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout * SLOW))


def ws_defaults(kw):
    kw.setdefault("max_size", None)
    # websockets stops reading the socket when max_queue messages wait for recv(); then a
    # close() with unread deliveries in flight stalls close_timeout (10 s) and ends as 1006.
    kw.setdefault("max_queue", None)
    kw.setdefault("close_timeout", 5 * SLOW)
    kw.setdefault("open_timeout", 10 * SLOW)
    kw.setdefault("ping_interval", None)
    return kw


async def connect_v1(d, path="/", **kw):
    return await websockets.connect(d.ws_url(path), subprotocols=["wsq.v1"], **ws_defaults(kw))


async def connect_raw(d, path, **kw):
    return await websockets.connect(d.ws_url(path), **ws_defaults(kw))


async def recv(ws, timeout=5.0):
    return await asyncio.wait_for(ws.recv(), timeout * SLOW)


async def recv_json(ws, timeout=5.0):
    frame = await recv(ws, timeout)
    if not isinstance(frame, str):
        raise AssertionError("wsq.v1 server frame is binary, expected text JSON: %r"
                             % (frame[:100],))
    try:
        obj = json.loads(frame)
    except ValueError:
        raise AssertionError("wsq.v1 server frame is not JSON: %r" % frame[:300])
    if not isinstance(obj, dict) or "op" not in obj:
        raise AssertionError("wsq.v1 server frame has no op: %r" % frame[:300])
    return obj


async def send_json(ws, obj):
    await ws.send(json.dumps(obj, separators=(",", ":")))


async def expect_op(ws, op, timeout=5.0, skip=()):
    """Next frame must have this op (frames whose op is in skip are ignored)."""
    while True:
        obj = await recv_json(ws, timeout)
        if obj["op"] in skip:
            continue
        if obj["op"] != op:
            raise AssertionError("expected op %r, got %r" % (op, obj))
        return obj


async def expect_silence(ws, seconds=0.3):
    """No frame arrives within `seconds`; returns None or raises with the frame."""
    try:
        frame = await asyncio.wait_for(ws.recv(), seconds * SLOW)
    except asyncio.TimeoutError:
        return None
    raise AssertionError("expected no frame, got %r" % (frame[:300],))


async def pub_confirmed(ws, topic, data, ref, binary=False):
    """pub with a ref; returns the ok frame (asserts op, ref and topic)."""
    msg = {"op": "pub", "topic": topic, "ref": ref}
    if binary:
        msg["data"] = base64.b64encode(data).decode()
        msg["enc"] = "base64"
    else:
        msg["data"] = data
    await send_json(ws, msg)
    ok = await recv_json(ws, 10)
    if ok.get("op") != "ok" or ok.get("ref") != ref:
        raise AssertionError("pub ref=%r: expected ok, got %r" % (ref, ok))
    return ok


async def wait_closed(ws, timeout=5.0):
    """Read until the connection closes; returns (code, reason, frames received before)."""
    frames = []
    try:
        while True:
            frames.append(await recv(ws, timeout))
    except websockets.exceptions.ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason, frames


# -- a WebSocket client on a plain socket ----------------------------------------------------

def ws_upgrade_request(host, port, path="/", subprotocol=None, headers=()):
    """The bytes of a WebSocket upgrade request (a fresh random key; the length does not
    depend on it). headers: more "Name: value" lines."""
    key = base64.b64encode(os.urandom(16)).decode()
    req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, host, port, key))
    if subprotocol:
        req += "Sec-WebSocket-Protocol: %s\r\n" % subprotocol
    for line in headers:
        req += line + "\r\n"
    return (req + "\r\n").encode()


def ws_upgrade(sock, host, port, path="/", subprotocol=None, headers=()):
    """Sends a WebSocket upgrade (ws_upgrade_request) on a connected socket and reads the
    answer's head. -> (status line, head, bytes after the head). Raises ConnectionError when
    the server closes before the head is complete; the caller judges the status."""
    sock.sendall(ws_upgrade_request(host, port, path, subprotocol, headers))
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed during the upgrade: %r" % buf[:200])
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.split(b"\r\n", 1)[0], head, rest


ZERO_MASK = b"\0\0\0\0"


def ws_frame(opcode, payload, fin=True, mask=None):
    """One client frame, masked as RFC 6455 requires of clients (mask: 4 bytes; None: random;
    ZERO_MASK is legal and costs nothing to apply)."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, 0x80 | 127, n)
    mask = os.urandom(4) if mask is None else mask
    if mask == ZERO_MASK or not n:
        return hdr + mask + bytes(payload)
    m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return hdr + mask + (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big")


class Closed(EOFError):
    """The server closed the WebSocket: code and reason of its close frame, or (None, "eof")
    when the TCP connection ended without one."""

    def __init__(self, code, reason):
        super().__init__("closed %r %r" % (code, reason))
        self.code, self.reason = code, reason


class UpgradeRefused(ConnectionRefusedError):
    """The server answered the upgrade with another status than 101."""

    def __init__(self, status, head):
        super().__init__("upgrade refused: %r" % head[:300])
        self.status, self.head = status, head


class SocketWS:
    """A blocking WebSocket client on a plain socket, for what python3-websockets will not do:
    frames of any kind (fragments, bad UTF-8, unmasked), a small receive buffer (a slow
    reader), use from threads, and many cheap connections (zero_mask).

    subprotocol: "wsq.v1" (default) or None for raw mode. token: sent as Authorization: Bearer.
    Raises UpgradeRefused when the answer is not 101. recv_frame() reads one frame as it is;
    recv() reads one message (answers pings, raises Closed on a close frame)."""

    def __init__(self, d, path="/", subprotocol="wsq.v1", token=None, headers=(), timeout=10.0,
                 rcvbuf=None, zero_mask=False):
        self.timeout = timeout * SLOW
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.closing = False   # a close frame was sent or received
        self.mask = ZERO_MASK if zero_mask else None
        try:
            if rcvbuf:
                # a small receive buffer makes the server's writes to us partial
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(self.timeout)
            self.sock.connect((d.host, d.port))
            hdrs = list(headers) + (["Authorization: Bearer %s" % token] if token else [])
            self.status, head, self.buf = ws_upgrade(self.sock, d.host, d.port, path,
                                                     subprotocol, hdrs)
            if b" 101 " not in self.status + b" ":
                raise UpgradeRefused(self.status, head)
        except BaseException:
            self.sock.close()
            raise
        self.head = head.decode("latin-1")

    def send_raw(self, data):
        self.sock.sendall(data)

    def frame(self, opcode, payload, fin=True):
        return ws_frame(opcode, payload, fin, self.mask)

    def send_frame(self, opcode, payload, fin=True):
        if opcode == 8:
            self.closing = True
        self.sock.sendall(self.frame(opcode, payload, fin))

    def send_json(self, obj):
        self.send_frame(1, json.dumps(obj, separators=(",", ":")).encode())

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise Closed(None, "eof")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, timeout=None):
        """One frame as it comes -> (opcode, fin, payload). Raises Closed(None, "eof")."""
        self.sock.settimeout(self.timeout if timeout is None else timeout * SLOW)
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        if b1 & 0x80:
            mask = self._read(4)
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(self._read(n)))
        else:
            data = self._read(n)
        if b0 & 0x0F == 8:
            self.closing = True
        return b0 & 0x0F, bool(b0 & 0x80), data

    def recv(self, timeout=None):
        """The next data message (bytes), fragments joined. Answers pings; on a close frame
        answers it and raises Closed(code, reason)."""
        parts = []
        while True:
            was_closing = self.closing
            op, fin, data = self.recv_frame(timeout)
            if op == 8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                if not was_closing:
                    try:
                        self.send_frame(8, data[:2])
                    except OSError:
                        pass
                raise Closed(code, data[2:].decode("utf-8", "replace"))
            if op == 9:
                self.send_frame(10, data)
                continue
            if op == 10:
                continue
            parts.append(data)
            if fin:
                return b"".join(parts)

    def recv_json(self, timeout=None):
        return json.loads(self.recv(timeout))

    def expect(self, op, timeout=None, skip=()):
        """The next wsq.v1 frame whose op is not in skip must have this op; returns it."""
        while True:
            f = self.recv_json(timeout)
            if f["op"] in skip:
                continue
            if f["op"] != op:
                raise AssertionError("expected %s, got %r" % (op, f))
            return f

    def subscribe(self, topic, consumer=None, frm="earliest", window=None, ref=1):
        """wsq.v1 sub; returns the subscribed frame (messages before it are skipped)."""
        m = {"op": "sub", "topic": topic, "from": frm, "ref": ref}
        if consumer:
            m["consumer"] = consumer
        if window:
            m["window"] = window
        self.send_json(m)
        return self.expect("subscribed", skip=("msg",))

    def recv_close(self):
        """Read frames until a close frame; returns (code, reason, [(opcode, payload)] before)."""
        frames = []
        while True:
            op, fin, data = self.recv_frame()
            if op == 8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                return code, data[2:].decode("utf-8", "replace"), frames
            frames.append((op, data))

    def close(self, code=1000):
        """A close frame (unless one was sent or received already), then the socket."""
        if not self.closing:
            try:
                self.send_frame(8, struct.pack("!H", code))
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass


# -- a raw HTTP/1.1 client (for requests http.client will not send) --------------------------

def parse_response(buf):
    """One HTTP/1.1 response at the start of buf -> (status, headers lowercased, body, rest,
    version), or None when buf does not hold a whole one."""
    if b"\r\n\r\n" not in buf:
        return None
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise AssertionError("not an HTTP status line: %r" % lines[0])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", "0"))
    if len(rest) < n:
        return None
    return int(parts[1]), hdrs, rest[:n], rest[n:], parts[0]


class RawHttp:
    """A raw client connection that reads HTTP/1.1 responses one by one."""

    def __init__(self, d, timeout=10.0):
        self.sock = socket.create_connection((d.host, d.port), timeout=timeout * SLOW)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.version = None   # of the last response

    def send(self, data, cuts=None):
        """cuts: sorted offsets at which the bytes are split into separate TCP segments. A
        server that answered and closed before taking everything is judged by what it sent."""
        try:
            last = 0
            for c in list(cuts or []) + [len(data)]:
                if c > last:
                    self.sock.sendall(data[last:c])
                    if cuts:
                        time.sleep(0.002)
                last = c
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        except socket.timeout:
            raise AssertionError("no answer within the timeout; received so far: %r"
                                 % self.buf[:300])
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def response(self):
        """The next response -> (status, headers lowercased, body); None when the server
        closed without one."""
        while True:
            r = parse_response(self.buf)
            if r is not None:
                status, hdrs, body, self.buf, self.version = r
                return status, hdrs, body
            if not self._fill():
                if self.buf:
                    raise AssertionError("connection closed inside a response: %r"
                                         % self.buf[:300])
                return None

    def wait_closed(self):
        """True when the server closes the connection with nothing more sent; False when it
        sends more, or is still open after the timeout."""
        try:
            while self._fill():
                pass
        except AssertionError:
            return False
        return self.buf == b""

    def close(self):
        self.sock.close()


# -- unittest glue --------------------------------------------------------------------------

class BoundedRss:
    """Mixin for WsqdTestCase: fails a test after which wsqd's RSS grew by more than
    RSS_GROWTH_MAX (a runaway loop grows by gigabytes in seconds)."""
    RSS_GROWTH_MAX = 64 << 20

    def setUp(self):
        super().setUp()
        self.rss0 = rss(self.wsqd.pid)

    def tearDown(self):
        if self.wsqd.running():
            grown = rss(self.wsqd.pid) - self.rss0
            self.assertLess(grown, self.RSS_GROWTH_MAX, "RSS grew by %d bytes" % grown)
        super().tearDown()


class WsqdTestCase(unittest.TestCase):
    """Starts a fresh wsqd per test in setUp (self.wsqd) unless START is False; new_wsqd()
    makes more (each is killed and removed at the end of the test)."""

    EXTRA_YAML = ""
    START = True

    def setUp(self):
        self._daemons = []
        if self.START:
            self.wsqd = self.new_wsqd(self.EXTRA_YAML).start()

    def wsqd_defaults(self):
        """Keyword arguments every Wsqd of this class gets (subclasses add theirs)."""
        return {}

    def new_wsqd(self, extra_yaml="", **kw):
        for k, v in self.wsqd_defaults().items():
            kw.setdefault(k, v)
        d = Wsqd(extra_yaml=extra_yaml, **kw)
        self._daemons.append(d)
        self.addCleanup(d.cleanup)
        return d


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


SKIP = 77  # ctest's SKIP_RETURN_CODE for every Python test


def exit_status(result, out=sys.stderr):
    """The exit status of a test program from its unittest result: 1 when a test failed or
    none ran; else 77 when one was skipped (1 with WSQ_REQUIRE_ALL=1); else 0."""
    if result.skipped:
        out.write("\nskipped (%d):\n" % len(result.skipped))
        for test, reason in result.skipped:
            out.write("  SKIPPED %s: %s\n" % (test.id(), reason))
    if not result.wasSuccessful():
        return 1
    if result.skipped:   # (a skip in setUpModule/setUpClass runs no test: still a skip)
        if os.environ.get("WSQ_REQUIRE_ALL") == "1":
            out.write("FAIL: WSQ_REQUIRE_ALL=1 (CI): every test must run here, and %d did not "
                      "(what was missing is named above)\n" % len(result.skipped))
            return 1
        return SKIP
    if result.testsRun == 0:
        out.write("no test ran\n")
        return 1
    return 0


def main(wsqctl=False, argv=None):
    """Entry point: `python3 test_x.py WSQD [WSQCTL] [unittest args]` (WSQCTL when wsqctl).
    Exits with exit_status()."""
    global WSQD, WSQCTL
    argv = list(sys.argv if argv is None else argv)
    usage = "usage: %s WSQD%s [unittest options]\n" % (argv[0], " WSQCTL" if wsqctl else "")
    if len(argv) >= 2 and not argv[1].startswith("-"):
        WSQD = os.path.abspath(argv.pop(1))
    if wsqctl:
        if len(argv) >= 2 and not argv[1].startswith("-"):
            WSQCTL = os.path.abspath(argv.pop(1))
        else:
            WSQCTL = None
    if not WSQD or (wsqctl and not WSQCTL):
        sys.stderr.write(usage)
        sys.exit(2)
    os.environ["WSQD"] = WSQD
    if wsqctl:
        os.environ["WSQCTL"] = WSQCTL
    detect_slow(WSQD)
    install_signal_handlers(argv[0])
    runner = unittest.TextTestRunner(resultclass=_Result, verbosity=2, stream=sys.stderr)
    try:
        prog = unittest.main(argv=argv, testRunner=runner, exit=False)
    finally:
        cleanup_all()
    sys.exit(exit_status(prog.result))
