#!/usr/bin/python3
"""Every wsqctl error path, with its exit code and an actionable message:
0 ok, 1 error, 2 usage, 3 topic/consumer not found, 4 check violations (test_check.py), 5 broker
unreachable."""

import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctlharness as c  # noqa: E402
import wsqharness as h  # noqa: E402


class Usage(c.CtlTestCase):
    START = False

    def test_help_version_and_usage_errors(self):
        out, _ = self.ctl_ok("--help")
        for line in ("  0  success", "  1  error", "  2  usage error", "  3  topic or consumer "
                     "not found", "  4  check found violations", "  5  broker unreachable"):
            self.assertIn(line, out)
        for cmd in ("topics", "stats", "peek TOPIC", "consumers [TOPIC]", "check", "purge TOPIC",
                    "delete-consumer TOPIC NAME", "export [TOPIC...]", "import FILE|-",
                    "compact DEST", "pub TOPIC", "sub TOPIC"):
            self.assertIn("\n  " + cmd, out)
        out, _ = self.ctl_ok("peek", "--help")
        self.assertTrue(out.startswith("usage: wsqctl [OPTIONS] peek TOPIC"), out)
        out, _ = self.ctl_ok("--version")
        # the same order as wsqd --version (the packaging tests check both)
        self.assertRegex(out, r"^wsqctl \d+\.\d+\.\d+\non-disk format \d+\nlibwebsockets "
                              r"\S+\nLMDB [^\n]+\nlibyaml \S+\n$")

        cases = [
            ((), r"no command given"),
            (("frobnicate",), r"unknown command 'frobnicate'"),
            (("topics", "--bogus"), r"unknown option '--bogus'"),
            (("topics", "-q"), r"unknown option '-q'"),
            (("peek",), r"peek needs more arguments \(usage: wsqctl peek TOPIC"),
            (("topics", "extra"), r"unexpected argument 'extra'"),
            (("topics", "--all"), r"topics does not take --all"),
            (("peek", "x", "--limit"), r"option '--limit' needs a value"),
            (("peek", "a..b"), r"'a\.\.b' is not a topic name"),
            (("peek", "t", "--from", "0"), r"--from must be a seq"),
            (("peek", "t", "--limit", "many"), r"--limit must be"),
            (("purge", "t"), r"exactly one of --all, --before SEQ, --older-than DUR"),
            (("purge", "t", "--all", "--before", "3"), r"exactly one of"),
            (("purge", "t", "--before", "x1"), r"--before must be a seq"),
            (("purge", "t", "--older-than", "soon"), r"--older-than must be a duration"),
            (("delete-consumer", "t", "bad name"), r"'bad name' is not a consumer name"),
            (("sub", "t", "--from", "yesterday"), r"--from must be earliest, latest, resume"),
            (("sub", "t", "--ack"), r"--ack needs --consumer NAME"),
            (("sub", "t", "--count", "0"), r"--count must be 1 or more"),
            (("pub", "t", "m", "--timeout", "x"), r"--timeout must be a duration"),
            (("--url", "ftp://x", "topics"), r"--url ftp://x: the scheme must be"),
            (("--url", "http://h:99999", "topics"), r"bad port"),
        ]
        for args, pattern in cases:
            with self.subTest(args=args):
                self.ctl_fails(2, *args, pattern=pattern)
        # --json: the error is also a JSON document on stdout
        out, _ = self.ctl_fails(2, "--json", "frobnicate")
        self.assertEqual(json.loads(out)["error"]["code"], "usage")
        self.assertEqual(json.loads(out)["error"]["exit"], 2)


class StoreErrors(c.CtlTestCase):
    START = False

    def make_store(self):
        data = os.path.join(self.tmp, "made")
        self.ctl_ok("--data", data, "import", "-", input=b'{"topic":"e.t","data":"x"}\n')
        return data

    def test_no_store(self):
        missing = os.path.join(self.tmp, "nowhere")
        for cmd in (["topics"], ["stats"], ["peek", "t"], ["check"], ["export"],
                    ["purge", "t", "--all"], ["delete-consumer", "t", "c"]):
            with self.subTest(cmd=cmd):
                self.ctl_fails(1, "--data", missing, *cmd,
                               pattern=r"no wsq store at %s \(no data\.mdb there\): pass --data "
                                       r"DIR or -c CONFIG" % missing)
        # the default ./data (cwd) says so
        self.ctl_fails(1, "topics", pattern=r"no wsq store at \./data \(no data\.mdb there\), "
                                            r"the default: pass --data")
        out, _ = self.ctl_fails(1, "--json", "--data", missing, "topics")
        self.assertEqual(json.loads(out)["error"]["code"], "no_store")

    def stamp_format(self, data, fmt):
        meta = ("VERSION=3\nformat=bytevalue\ndatabase=meta\ntype=btree\nHEADER=END\n"
                " %s\n %s\nDATA=END\n" % (b"format".hex(), fmt.to_bytes(4, "little").hex()))
        subprocess.run(["mdb_load", "-s", "meta", data], input=meta.encode(), check=True)

    def test_older_format_is_upgraded_and_said_so(self):
        """A format 1 store (no parted messages) is read as it is, and upgraded in place by the
        first writer: an offline wsqctl mutation or wsqd, each of which says so."""
        fmt = self.format_version()
        self.assertEqual(fmt, 4)
        data = self.make_store()
        self.stamp_format(data, 1)
        self.assertEqual(self.ctl_json("--data", data, "stats")["format"], 1)  # read-only
        _, err = self.ctl_ok("--data", data, "purge", "e.t", "--before", "1")
        self.assertIn("wsqctl: upgraded the store at %s from on-disk format 1 to 4" % data, err)
        self.assertEqual(self.ctl_json("--data", data, "stats")["format"], 4)
        _, err = self.ctl_ok("--data", data, "purge", "e.t", "--before", "1")
        self.assertNotIn("upgraded", err)
        # wsqd
        d = self.new_wsqd().start()
        d.stop()
        self.stamp_format(d.data, 1)
        d.start()
        self.assertRegex(d.log(), r"info  storage path=\S+ format=4 upgraded_from=1 ")
        out, _ = self.ctl_ok("-c", d.conf, "stats")
        self.assertRegex(out, r"(?m)^format\s+4 ")

    def test_newer_format_and_foreign_file(self):
        data = self.make_store()
        # stamp the store with the next format
        fmt = self.format_version()
        self.stamp_format(data, fmt + 1)
        for cmd in (["topics"], ["purge", "e.t", "--all"]):
            self.ctl_fails(1, "--data", data, *cmd,
                           pattern=r"the store at .* was written by a newer wsq \(on-disk format "
                                   r"above %d\): use a wsqctl of that version" % fmt)
        # an LMDB file that is not a wsq store
        foreign = os.path.join(self.tmp, "foreign")
        os.makedirs(foreign)
        rec = ("VERSION=3\nformat=bytevalue\ndatabase=other\ntype=btree\nHEADER=END\n"
               " 6b\n 76\nDATA=END\n")
        subprocess.run(["mdb_load", "-s", "other", foreign], input=rec.encode(), check=True)
        self.ctl_fails(1, "--data", foreign, "topics", pattern=r"not a wsq store")
        self.ctl_fails(1, "--data", foreign, "purge", "x", "--all", pattern=r"not a wsq store")

    def test_permission_denied(self):
        if os.getuid() != 0:
            self.skipTest("needs root (uid %d) to run wsqctl as another user" % os.getuid())
        if not shutil.which("setpriv"):
            self.skipTest("needs setpriv (util-linux) to run wsqctl as another user")
        data = self.make_store()
        os.chmod(data, 0o700)
        # a copy of the binary that nobody may run
        bindir = os.path.join(self.tmp, "bin")
        os.makedirs(bindir)
        os.chmod(self.tmp, 0o755)
        os.chmod(bindir, 0o755)
        exe = os.path.join(bindir, "wsqctl")
        shutil.copy(h.WSQCTL, exe)
        os.chmod(exe, 0o755)
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", exe,
                            "--data", data, "topics"], capture_output=True, cwd="/")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertRegex(p.stderr.decode(), r"permission denied opening the store at .*: run "
                                            r"wsqctl as the user that owns the store")

    def test_compact_errors(self):
        data = self.make_store()
        dest = os.path.join(self.tmp, "copy")
        out, _ = self.ctl_ok("--data", data, "compact", dest)
        self.assertRegex(out, r"^compacted .* into .*copy \(")
        self.assertEqual(self.ctl_json("--data", dest, "topics")["topics"][0]["name"], "e.t")
        self.ctl_fails(1, "--data", data, "compact", dest,
                       pattern=r"already holds a store \(data\.mdb\)")
        self.ctl_fails(2, "--data", data, "compact", data, pattern=r"another directory")
        self.ctl_fails(1, "--data", data, "compact", os.path.join(self.tmp, "no", "copy"),
                       pattern=r"cannot create .*/no/copy: its parent directory does not exist")


class NotFound(c.CtlTestCase):

    def test_topic_and_consumer_unknown(self):
        d = self.wsqd
        d.publish("nf.t", "x")
        C = ("-c", d.conf)
        for cmd in (["peek", "nf.none"], ["consumers", "nf.none"], ["export", "nf.t", "nf.none"],
                    ["purge", "nf.none", "--all"], ["delete-consumer", "nf.none", "c"]):
            with self.subTest(cmd=cmd):
                out, _ = self.ctl_fails(3, *C, *cmd, pattern=r"topic 'nf\.none' does not exist")
                self.assertEqual(out, "")  # export writes nothing before failing
        self.ctl_fails(3, *C, "delete-consumer", "nf.t", "nobody",
                       pattern=r"consumer 'nobody' does not exist on topic 'nf\.t' \(wsqctl "
                               r"consumers nf\.t lists them\)")
        out, _ = self.ctl_fails(3, "--json", *C, "peek", "nf.none")
        self.assertEqual(json.loads(out)["error"], {
            "code": "not_found", "exit": 3,
            "message": "topic 'nf.none' does not exist in %s (wsqctl topics lists them)"
                       % d.data})
        # the purge of an unknown topic did not create it
        self.ctl_fails(3, *C, "peek", "nf.none")


class Unreachable(c.CtlTestCase):
    START = False

    def test_broker_unreachable(self):
        port = h.free_port()
        url = "http://127.0.0.1:%d" % port
        for cmd in (["pub", "t", "m"], ["sub", "t"], ["purge", "t", "--all"],
                    ["delete-consumer", "t", "c"], ["import", "-"], ["topics"]):
            with self.subTest(cmd=cmd):
                self.ctl_fails(5, "--url", url, *cmd, input=b"",
                               pattern=r"broker unreachable at %s \(from --url\)" % url)
        # the lock is held (a broker that died without releasing it would look like this) and
        # the config's broker does not answer
        d = self.new_wsqd()
        d.start()
        d.publish("u.t", "x")
        d.stop()
        holder = c.LockHolder(d.data)
        self.addCleanup(holder.release)
        self.ctl_fails(5, "-c", d.conf, "purge", "u.t", "--all",
                       pattern=r"locked by pid %d .*no broker answers: broker unreachable at "
                               r"%s \(from -c\)" % (holder.pid, d.url))
        # lock held and no way to reach a broker: refused, naming the pid
        self.ctl_fails(1, "--data", d.data, "purge", "u.t", "--all",
                       pattern=r"locked by pid %d" % holder.pid)


class Permission(c.CtlTestCase):
    START = False

    def test_admin_rights_and_tokens(self):
        auth = ("auth:\n  anonymous:\n    publish: []\n    subscribe: []\n    admin: false\n"
                "  tokens:\n"
                "    - name: ops\n      sha256: %s\n      admin: true\n"
                "      publish: [\"p.>\"]\n"
                "    - name: app\n      sha256: %s\n      publish: [\">\"]\n"
                "      subscribe: [\">\"]\n      admin: false\n"
                % (h.sha256_hex("ops-secret"), h.sha256_hex("app-secret")))
        d = self.new_wsqd(auth).start()
        C = ("-c", d.conf)
        out, _ = self.ctl_ok(*C, "--token", "app-secret", "pub", "p.t", "hello")
        self.assertEqual(out, "1\n")
        # (a wsqd whose /admin/whoami answers without admin rights says "admin": false; one
        # where all of /admin/* needs admin answers 401/403: either way the message says so)
        self.ctl_fails(1, *C, "purge", "p.t", "--all",
                       pattern=r"permission denied: (identity 'anonymous' has no admin rights on "
                               r"the broker at %s|the broker at %s needs credentials with admin "
                               r"rights \(unauthorized).*; pass --token" % (d.url, d.url))
        self.ctl_fails(1, *C, "--token", "app-secret", "delete-consumer", "p.t", "c",
                       pattern=r"permission denied: (identity 'app' has no admin rights|the "
                               r"broker at .* refused this identity \(forbidden)")
        self.ctl_fails(1, *C, "--token", "wrong", "purge", "p.t", "--all",
                       pattern=r"permission denied: the broker at .* needs credentials with "
                               r"admin rights \(unauthorized")
        res = self.ctl_json(*C, "--token", "ops-secret", "purge", "p.t", "--all")
        self.assertEqual(res["removed"], 1)
        res = self.ctl_json(*C, "import", "-", input=b'{"topic":"p.t","data":"x"}\n',
                            env={"WSQ_TOKEN": "ops-secret"})
        self.assertEqual(res["imported"], 1)
        self.ctl_fails(1, *C, "--token", "ops-secret", "import", "-",
                       input=b'{"topic":"q.t","data":"x"}\n',
                       pattern=r"permission denied: .*\(forbidden: line 1: not allowed to "
                               r"publish to q\.t\); .*import also needs the publish right")
        # the client commands
        self.ctl_fails(1, *C, "pub", "p.t", "m",
                       pattern=r"permission denied publishing to p\.t: .*\(forbidden\)")
        self.ctl_fails(1, *C, "--token", "wrong", "sub", "p.t",
                       pattern=r"permission denied: the broker at .* refused the connection "
                               r"\(401 unauthorized\)")
        self.ctl_fails(1, *C, "sub", "p.t", pattern=r"permission denied subscribing to p\.t")
        # reads need no admin rights: the store of -c is read directly
        self.assertEqual(self.ctl_json(*C, "topics")["topics"][0]["name"], "p.t")
        self.assertEqual(self.ctl_json(*C, "--token", "wrong", "topics")["topics"][0]["name"],
                         "p.t")
        # ... but without a store to read, a broker that refuses wsqctl is the answer
        self.ctl_fails(1, "--url", d.url, "--token", "wrong", "topics",
                       pattern=r"permission denied: the broker at %s needs credentials with "
                               r"admin rights \(unauthorized.*--data DIR reads a store" % d.url)


if __name__ == "__main__":
    c.main()
