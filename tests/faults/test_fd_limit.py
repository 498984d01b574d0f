#!/usr/bin/python3
"""Too many files: wsqd started with RLIMIT_NOFILE 64 (soft and hard, so its own raise to the
hard limit changes nothing) and wsq.v1 connections opened until no more fit.

Checks:
- a connection past the descriptor limit is refused cleanly and quickly: the connect is
  refused, or the socket is closed/reset, or the upgrade gets an HTTP error status; it never
  hangs (no answer within 3 s) and wsqd never crashes;
- at the limit wsqd does not spin (under 0.5 s of CPU per second while refused connections are
  pending) and does not flood its log (under 100 lines per second);
- the connections that are open keep working (publish with confirm, a subscriber receives);
- after some connections close, new connections work again (the broker recovers), HTTP too;
- wsqd is still running and stops cleanly (0);
- its log has exactly the lines this situation calls for: no line at level error and no
  sanitizer report; one warning, `limits msg="the descriptor limit (RLIMIT_NOFILE 64) leaves room
  for N connections; ..."`, with N the number of connections that fitted; and one
  `refused ... status=503 code=limit_exceeded` line per 503 the test got, no other `refused`.
Problems are collected and reported together at the end, so one run shows all of them.
"""

import os
import re
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration",
                                "py"))
import wsqharness as h  # noqa: E402

NOFILE = 64
HANG = 3.0      # seconds without an answer that count as a hang


def attempt(d):
    """One wsq.v1 connection attempt: ("ok", SocketWS) or (kind, detail, seconds); kind "503"
    is an upgrade answered 503 (which wsqd logs as `refused`)."""
    t0 = time.monotonic()
    try:
        return ("ok", h.SocketWS(d, timeout=HANG), time.monotonic() - t0)
    except h.UpgradeRefused as e:
        kind = "503" if b" 503 " in e.status + b" " else "status"
        return (kind, e.status.decode("latin-1"), time.monotonic() - t0)
    except socket.timeout:
        return ("hang", "no answer to the upgrade within %.0f s" % (HANG * h.SLOW),
                time.monotonic() - t0)
    except ConnectionRefusedError as e:
        return ("refused", str(e)[:200], time.monotonic() - t0)
    except (ConnectionError, EOFError, OSError) as e:
        return ("closed", repr(e)[:200], time.monotonic() - t0)


class FdLimit(h.WsqdTestCase):
    START = False

    def setUp(self):
        super().setUp()

        def limited():   # in the child, before exec
            resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))

        self.d = self.new_wsqd(log_level="info", preexec=limited).start()

    def attempt(self, d):
        r = attempt(d)
        self.tries.append(r)
        return r

    def log_expected(self, fitted, refused_503):
        """What the log must hold (see the top); returns the problems found."""
        problems = []
        lines = self.d.log().splitlines()
        errs = self.d.log_problems()
        if errs:
            problems.append("%d error lines (or sanitizer reports) in wsqd's log, e.g. %r"
                            % (len(errs), errs[:3]))
        warns = [ln for ln in lines if ln.split(None, 2)[1:2] == ["warn"]]
        want = (r'^\S+ warn\s+limits msg="the descriptor limit \(RLIMIT_NOFILE %d\) leaves room '
                r'for (\d+) connections; limits\.max_connections is 10000"$' % NOFILE)
        m = [re.match(want, ln) for ln in warns]
        if len(warns) != 1 or not m[0] or int(m[0].group(1)) != fitted:
            problems.append("expected exactly one warning, the descriptor limit's with room for "
                            "%d connections (as many as fitted); the log's warnings: %r"
                            % (fitted, warns[:5]))
        refused = [ln for ln in lines if re.match(r"^\S+ info\s+refused ", ln)]
        ok = [ln for ln in refused if re.search(
            r' refused peer=127\.0\.0\.1 status=503 code=limit_exceeded msg="too many '
            r'connections \(limits\.max_connections\)"$', ln)]
        if len(ok) != len(refused) or len(refused) != refused_503:
            problems.append("expected one `refused ... status=503 code=limit_exceeded` line per "
                            "503 the test got (%d); the log has %d `refused` lines: %r"
                            % (refused_503, len(refused), refused[:5]))
        return problems

    def test_fd_limit_refuses_cleanly_and_recovers(self):
        d = self.d
        problems = []
        with open("/proc/%d/limits" % d.pid) as f:
            lim = [ln for ln in f if ln.startswith("Max open files")][0].split()
        self.assertEqual(int(lim[3]), NOFILE, lim)
        base = h.fd_count(d.pid)
        sys.stderr.write("\nwsqd pid %d: RLIMIT_NOFILE %d, %d fds open at start\n"
                         % (d.pid, NOFILE, base))

        # open connections until one is not accepted
        conns = []
        first_fail = None
        self.tries = []
        for _ in range(NOFILE * 2):
            r = self.attempt(d)
            if r[0] == "ok":
                conns.append(r[1])
                continue
            first_fail = r
            break
        fitted = len(conns)
        self.assertIsNotNone(first_fail, "%d connections with %d descriptors?"
                             % (len(conns), NOFILE))
        self.assertGreater(len(conns), NOFILE // 2)
        sys.stderr.write("%d connections open (wsqd has %d fds); the next one: %s\n"
                         % (len(conns), h.fd_count(d.pid), first_fail))
        fails = [first_fail]

        # at the limit: more attempts, CPU and log growth meanwhile
        log0 = os.path.getsize(d.log_path)
        cpu0 = h.cpu_seconds(d.pid)
        t0 = time.monotonic()
        pending = []
        for _ in range(1):
            r = self.attempt(d)
            if r[0] == "ok":
                conns.append(r[1])   # a slot came free: fine
            else:
                fails.append(r)
        # keep a few unanswered sockets in the backlog while measuring
        for _ in range(3):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", d.port))
                pending.append(s)
            except OSError:
                s.close()
        time.sleep(1.0)
        secs = time.monotonic() - t0
        cpu = (h.cpu_seconds(d.pid) - cpu0) / secs
        with open(d.log_path, "rb") as f:
            f.seek(log0)
            grown = f.read(64 << 20)
        lines = grown.count(b"\n") / secs
        sys.stderr.write("at the limit: %.2f s CPU per s, %.0f log lines per s; refusals: %r\n"
                         % (cpu, lines, fails))
        for kind, detail, took in fails:
            if kind == "hang":
                problems.append("a connection past the fd limit hangs: %s (the TCP connect "
                                "succeeds, the upgrade gets no answer and no close)" % detail)
                break
        if cpu > 0.5:
            problems.append("wsqd spins at the fd limit: %.2f s of CPU per second while "
                            "connections wait to be accepted" % cpu)
        if lines > 100:
            sample = grown.decode("utf-8", "replace").splitlines()[:3]
            problems.append("wsqd floods its log at the fd limit: %.0f lines per second, "
                            "e.g. %r" % (lines, sample))
        self.assertTrue(d.running(), "wsqd died at the fd limit\n" + d.log_tail())

        # the open connections keep working
        a, b = conns[0], conns[-1]
        b.send_json({"op": "sub", "topic": "fd.t", "from": "latest", "ref": "s"})
        b.expect("subscribed")
        a.send_json({"op": "pub", "topic": "fd.t", "ref": 1, "data": "still here"})
        ok = a.expect("ok")
        m = b.expect("msg")
        self.assertEqual((m["seq"], m["data"]), (ok["seq"], "still here"))

        # close some: new connections work again
        for s in pending:
            s.close()
        for c in conns[1:len(conns) // 2]:
            c.close()
        conns = [conns[0]] + conns[len(conns) // 2:]
        deadline = time.monotonic() + 10 * h.SLOW
        while True:
            r = self.attempt(d)
            if r[0] == "ok":
                break
            self.assertLess(time.monotonic(), deadline,
                            "no new connection after closing half: %r" % (r,))
            time.sleep(0.2)
        c = r[1]
        c.send_json({"op": "pub", "topic": "fd.t", "ref": 2, "data": "new"})
        self.assertEqual(c.expect("ok")["seq"], ok["seq"] + 1)
        m = b.expect("msg")
        self.assertEqual(m["data"], "new")
        more = [self.attempt(d) for _ in range(5)]
        self.assertEqual([x[0] for x in more], ["ok"] * 5, more)
        st, _, body = d.http_json("GET", "/healthz")
        self.assertEqual(st, 200, body)
        cpu0 = h.cpu_seconds(d.pid)
        time.sleep(1.0)
        self.assertLess(h.cpu_seconds(d.pid) - cpu0, 0.2, "wsqd still busy after recovering")
        for x in [c] + [x[1] for x in more] + conns:
            x.close()

        # still running, a clean stop, a quiet log
        self.assertTrue(d.running())
        self.assertEqual(d.stop(), 0)
        problems += self.log_expected(fitted, sum(1 for r in self.tries if r[0] == "503"))
        if problems:
            self.fail("\n".join(problems))


if __name__ == "__main__":
    h.main(wsqctl=True)
