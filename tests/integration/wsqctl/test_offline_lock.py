#!/usr/bin/python3
"""Offline mutations hold the data-dir lock; online ones go through the broker that holds it.

- with no wsqd on the data dir, purge / delete-consumer / import write the store directly
  ("via":"store") and release the lock when done;
- while an offline wsqctl holds the lock, wsqd refuses to start ("busy"), and another mutation
  names the holder instead of writing;
- while wsqd runs, a mutation without a way to reach it is refused (naming wsqd's pid), and with
  -c it goes through the broker; a --url of a broker on another data dir is refused.
(The harness's $WSQ_URL is a port where nothing answers: "no way to reach it" is certain.)
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctlharness as c  # noqa: E402
import wsqharness as h  # noqa: E402


class OfflineLock(c.CtlTestCase):

    def setUp(self):
        super().setUp()
        d = self.wsqd
        for i in range(10):
            d.publish("off.t", "m%d" % i)
        for name in ("keep", "gone"):
            ws = h.SocketWS(d)
            ws.subscribe("off.t", consumer=name, window=100)
            ws.close()
        h.wait_until(lambda: len(self.ctl_json("-c", d.conf, "consumers")["consumers"]) == 2,
                     what="two consumers")

    def test_offline_mutations_take_and_release_the_lock(self):
        d = self.wsqd
        d.stop()
        self.assertEqual(c.lock_held(d.data), (False, 0))
        D = ("--data", d.data)
        res, err = self.ctl_ok(*D, "-v", "--json", "purge", "off.t", "--before", "4")
        self.assertEqual(json.loads(res), {"topic": "off.t", "removed": 3, "first_seq": 4,
                                           "next_seq": 11, "via": "store"})
        self.assertIn("via store: no process holds", err)
        self.assertEqual(c.lock_held(d.data), (False, 0))
        res = self.ctl_json(*D, "delete-consumer", "off.t", "gone")
        self.assertEqual(res["via"], "store")
        self.ctl_fails(3, *D, "delete-consumer", "off.t", "gone",
                       pattern="consumer 'gone' does not exist")
        self.ctl_fails(3, *D, "purge", "off.nope", "--all", pattern="topic 'off.nope' does not")
        out, _ = self.ctl_ok(*D, "import", "-",
                             input=b'{"topic":"off.t","data":"imported"}\n')
        self.assertEqual(out, "imported 1 message from stdin via the store (new seqs)\n")
        self.assertEqual([c["name"] for c in self.ctl_json(*D, "consumers")["consumers"]],
                         ["keep"])
        pk = self.ctl_json(*D, "peek", "off.t", "--limit", "100")
        self.assertEqual([m["seq"] for m in pk["messages"]], list(range(4, 12)))
        self.assertEqual(pk["messages"][-1]["data"], "imported")
        # wsqd starts on what wsqctl left, next seq intact
        d.start()
        self.assertEqual(d.publish("off.t", "after"), 12)

    def test_wsqd_cannot_start_while_offline_wsqctl_holds_the_lock(self):
        d = self.wsqd
        d.stop()
        # an offline import takes the lock first, then reads its input: a pipe kept open
        imp = self.spawn("--data", d.data, "import", "-", stdin=subprocess.PIPE)
        h.wait_until(lambda: c.lock_held(d.data) == (True, imp.pid),
                     what="wsqctl import holding the lock")
        # wsqd refuses to start: the data dir is busy
        d.start(wait=False)
        rc = d.proc.wait(15 * h.SLOW)
        self.assertNotEqual(rc, 0)
        self.assertRegex(d.log(), r"error=busy pid=%d msg=\"data directory is in use by "
                                  r"another wsqd or a wsqctl mutation\"" % imp.pid)
        # another mutation names the holder; with no broker to reach it is refused
        self.ctl_fails(1, "--data", d.data, "purge", "off.t", "--all",
                       pattern=r"locked by pid %d \(wsqctl\).*pass --url" % imp.pid)
        self.ctl_fails(5, "-c", d.conf, "delete-consumer", "off.t", "keep",
                       pattern=r"locked by pid %d \(wsqctl\), and no broker answers: broker "
                               r"unreachable at %s" % (imp.pid, d.url))
        # reads go on meanwhile
        self.assertEqual(self.ctl_json("--data", d.data, "topics")["topics"][0]["count"], 10)
        # the import finishes, the lock is free, wsqd starts
        out, err = imp.communicate(b'{"topic":"off.t","data":"a"}\n{"topic":"off.t","data":"b"}\n',
                                   timeout=20 * h.SLOW)
        self.assertEqual(imp.returncode, 0, err)
        self.assertEqual(out, b"imported 2 messages from stdin via the store (new seqs)\n")
        self.assertEqual(c.lock_held(d.data), (False, 0))
        d.start()
        self.assertEqual(d.publish("off.t", "c"), 13)

    def test_other_lock_holder_without_url(self):
        d = self.wsqd
        d.stop()
        holder = c.LockHolder(d.data)
        self.addCleanup(holder.release)
        self.ctl_fails(1, "--data", d.data, "import", "-", input=b"",
                       pattern=r"the store at .* is locked by pid %d \(python3?\): while a wsqd "
                               r"runs on it, changes must go through that wsqd; pass --url" %
                               holder.pid)
        holder.release()
        self.ctl_ok("--data", d.data, "purge", "off.t", "--all")

    def test_online_detection(self):
        d = self.wsqd
        # wsqd runs: without a URL the change is refused, naming wsqd
        self.ctl_fails(1, "--data", d.data, "purge", "off.t", "--all",
                       pattern=r"locked by pid %d \(wsqd\)" % d.pid)
        # with -c the URL comes from the first listener; --verbose shows the decision
        out, err = self.ctl_ok("-c", d.conf, "-v", "purge", "off.t", "--before", "3")
        self.assertEqual(err, "wsqctl: using the broker at %s (store %s)\n"
                         % (d.url, os.path.realpath(d.data)))
        self.assertEqual(out, "purged 2 messages from off.t via the broker (first seq now 3, "
                              "next seq 11)\n")
        # --data plus the --url of a broker on another data dir: refused
        other = self.new_wsqd().start()
        self.ctl_fails(1, "--data", d.data, "--url", other.url, "purge", "off.t", "--all",
                       pattern=r"the broker at %s \(from --url\) serves .*, not .* \(from "
                               r"--data\): refusing" % other.url)
        # only --url: straight to that broker
        res = self.ctl_json("--url", d.url, "delete-consumer", "off.t", "gone")
        self.assertEqual(res["via"], "broker")


if __name__ == "__main__":
    c.main()
