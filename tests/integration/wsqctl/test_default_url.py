#!/usr/bin/python3
"""The defaults, as a new user meets them: wsqd runs with the shipped config (conf/wsq.yaml:
127.0.0.1:8080, storage.path ./data), and wsqctl is run with no --url, -c or --data, from another
directory.

- pub found the broker at http://127.0.0.1:8080 before; now topics, consumers, purge (and every
  other command) find it too, and -v names it;
- with wsqd stopped, the same commands use ./data of the current directory, and -v says so.

Port 8080 may belong to someone else's wsqd on this machine, so the test runs in a network
namespace of its own (loopback only), which needs root (CAP_SYS_ADMIN); without it the test is
skipped (exit 77, which ctest reports as skipped; a failure under WSQ_REQUIRE_ALL=1, as in CI).
test_broker_or_store.py covers the same rule through $WSQ_URL without root.
"""

import ctypes
import json
import fcntl
import os
import socket
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctlharness as c  # noqa: E402
import wsqharness as h  # noqa: E402

SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "conf",
                       "wsq.yaml")
DEFAULT_URL = "http://127.0.0.1:8080"
CLONE_NEWNET = 0x40000000


def private_loopback():
    """Moves this process (and every child it starts later) into a new network namespace and
    brings its loopback interface up."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
        req = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh14x", b"lo", 0))
        flags = struct.unpack("16sh14x", req)[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))
    finally:
        s.close()


class DefaultUrl(c.CtlTestCase):
    START = False

    def test_no_options_from_another_directory(self):
        d = self.new_wsqd()
        d.conf, d.port = os.path.abspath(SHIPPED), 8080  # wsqd runs in d.dir: ./data is d.data
        d.start()
        real = os.path.realpath(d.data)
        elsewhere = os.path.join(self.tmp, "elsewhere")
        os.makedirs(elsewhere)
        D = {"WSQ_URL": None}  # nothing but the built-in default
        using = "wsqctl: using the broker at %s (store %s)\n" % (DEFAULT_URL, real)

        out, _ = self.ctl_ok("pub", "new.user", "hello", env=D, cwd=elsewhere)
        self.assertEqual(out, "1\n")
        self.ctl_ok("pub", "new.user", "world", env=D, cwd=elsewhere)
        out, _ = self.ctl_ok("sub", "new.user", "--consumer", "me", "--from", "earliest",
                             "--ack", "--count", "1", env=D, cwd=elsewhere)
        self.assertEqual(out, "hello\n")

        out, err = self.ctl_ok("-v", "topics", env=D, cwd=elsewhere)
        self.assertEqual(err, using)
        self.assertRegex(out, r"(?m)^new\.user +1 +2 +2 ")
        h.wait_until(lambda: self.ctl_json("consumers", env=D, cwd=elsewhere)["consumers"][0]
                     ["ack_floor"] == 1, what="ack floor 1")
        out, err = self.ctl_ok("-v", "purge", "new.user", "--all", env=D, cwd=elsewhere)
        self.assertEqual(err, using)
        self.assertEqual(out, "purged 2 messages from new.user via the broker (first seq now 3, "
                              "next seq 3)\n")
        self.assertEqual(os.listdir(elsewhere), [])  # nothing was created here
        _, err = self.ctl_ok("-v", "pub", "new.user", "again", env=D, cwd=elsewhere)
        self.assertIn("wsqctl: using the broker at %s (from the default)\n" % DEFAULT_URL, err)

        # wsqd stopped: ./data of the directory wsqctl runs in
        d.stop()
        out, err = self.ctl_ok("-v", "--json", "topics", env=D, cwd=d.dir)
        self.assertEqual(err, "wsqctl: no broker at %s; using the store ./data\n" % DEFAULT_URL)
        self.assertEqual(json.loads(out)["topics"][0]["next_seq"], 4)
        self.ctl_fails(1, "topics", env=D, cwd=elsewhere,
                       pattern=r"no wsq store at \./data \(no data\.mdb there\), the default")
        self.ctl_fails(5, "pub", "new.user", "x", env=D, cwd=elsewhere,
                       pattern=r"broker unreachable at %s \(from the default\)" % DEFAULT_URL)


def setUpModule():
    # before any socket of the test exists: the harness's no-broker port is bound in here too
    try:
        private_loopback()
    except OSError as e:
        raise unittest.SkipTest("needs a network namespace of its own for port 8080 (root, "
                                "CAP_SYS_ADMIN): %s" % e)


if __name__ == "__main__":
    c.main()
