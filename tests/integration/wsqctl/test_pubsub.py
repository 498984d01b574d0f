#!/usr/bin/python3
"""wsqctl pub and sub against a live wsqd: confirms with seqs, text/binary/stdin, ephemeral and
durable subscriptions (--ack, resume), --json frames, --count, --timeout, SIGINT."""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctlharness as c  # noqa: E402
import wsqharness as h  # noqa: E402


class PubSub(c.CtlTestCase):

    def test_pub(self):
        d = self.wsqd
        C = ("-c", d.conf)
        out, _ = self.ctl_ok(*C, "pub", "ps.t", "hello \u2713")
        self.assertEqual(out, "1\n")
        self.assertEqual(self.ctl_json(*C, "pub", "ps.t", "two"), {"topic": "ps.t", "seq": 2})
        out, _ = self.ctl_ok(*C, "pub", "ps.t", "-", input="from\nstdin\n".encode())
        self.assertEqual(out, "3\n")
        out, _ = self.ctl_ok(*C, "pub", "ps.t", input=b"")  # no MESSAGE: stdin, here empty
        self.assertEqual(out, "4\n")
        blob = bytes(range(256)) * 3
        out, _ = self.ctl_ok(*C, "pub", "ps.t", "--binary", "-", input=blob)
        self.assertEqual(out, "5\n")
        self.ctl_fails(1, *C, "pub", "ps.t", "-", input=b"\xff\xfe",
                       pattern=r"not valid UTF-8 text: pass --binary")
        out, _ = self.ctl_ok("--url", d.url, "pub", "ps.t", "--", "-dash")
        self.assertEqual(out, "6\n")
        pk = self.ctl_json(*C, "peek", "ps.t")
        got = [base64.b64decode(m["data"]) if m.get("enc") else m["data"]
               for m in pk["messages"]]
        self.assertEqual(got, ["hello \u2713", "two", "from\nstdin\n", "", blob, "-dash"])

    def test_sub_ephemeral_and_formats(self):
        d = self.wsqd
        C = ("-c", d.conf)
        d.publish("ps.s", "one")
        d.publish("ps.s", b"\x00\x01\xfe")
        d.publish("ps.s", "three")
        out, _ = self.ctl_ok(*C, "sub", "ps.s", "--from", "earliest", "--count", "3")
        self.assertEqual(out, "one\n0001fe\nthree\n")
        out, _ = self.ctl_ok(*C, "sub", "ps.s", "--from", "2", "--count", "1", "--base64")
        self.assertEqual(out, "AAH+\n")
        out, _ = self.ctl_ok(*C, "--json", "sub", "ps.s", "--from", "earliest", "--count", "3")
        frames = [json.loads(x) for x in out.splitlines()]
        self.assertEqual([(f["op"], f["seq"]) for f in frames], [("msg", 1), ("msg", 2),
                                                                 ("msg", 3)])
        self.assertEqual(frames[1]["enc"], "base64")
        self.assertEqual(base64.b64decode(frames[1]["data"]), b"\x00\x01\xfe")
        # live: from latest, then two publishes arrive
        p = self.spawn(*C, "-v", "sub", "ps.s", "--count", "2")
        while b"subscribed to ps.s" not in p.stderr.readline():  # -v says when
            self.assertIsNone(p.poll())
        self.ctl_ok(*C, "pub", "ps.s", "live 1")
        self.ctl_ok(*C, "pub", "ps.s", "live 2")
        out, err = p.communicate(timeout=15 * h.SLOW)
        self.assertEqual((p.returncode, out), (0, b"live 1\nlive 2\n"), err)
        # a gap is reported on stderr (text) or as a frame (--json)
        self.ctl_ok(*C, "purge", "ps.s", "--before", "3")
        out, err = self.ctl_ok(*C, "sub", "ps.s", "--from", "1", "--count", "1")
        self.assertEqual(out, "three\n")
        self.assertIn("gap in ps.s: seqs 1-2 no longer exist (purge)", err)
        out, _ = self.ctl_ok(*C, "--json", "sub", "ps.s", "--from", "1", "--count", "1")
        gap = json.loads(out.splitlines()[0])
        self.assertEqual((gap["op"], gap["from"], gap["to"], gap["reason"]),
                         ("gap", 1, 2, "purge"))
        # --timeout: fewer messages than --count is an error; without --count it just ends
        self.ctl_fails(1, *C, "sub", "ps.s", "--count", "5", "--timeout", "300ms",
                       pattern=r"timeout after 300ms: received 0 of 5 messages")
        self.ctl_ok(*C, "sub", "ps.s", "--timeout", "200ms")

    def test_sub_durable_ack_resume_and_sigint(self):
        d = self.wsqd
        C = ("-c", d.conf)
        for i in range(1, 6):
            d.publish("ps.d", "m%d" % i)
        out, _ = self.ctl_ok(*C, "sub", "ps.d", "--consumer", "w", "--from", "earliest",
                             "--ack", "--count", "2")
        self.assertEqual(out, "m1\nm2\n")
        # the acks were committed before wsqctl closed: the consumer resumes at 3
        out, _ = self.ctl_ok(*C, "sub", "ps.d", "--consumer", "w", "--count", "1", "--ack")
        self.assertEqual(out, "m3\n")
        h.wait_until(lambda: self.ctl_json(*C, "consumers", "ps.d")["consumers"][0]["ack_floor"]
                     == 3, what="ack floor 3")
        # without --ack nothing is acknowledged: the same message comes again
        out, _ = self.ctl_ok(*C, "sub", "ps.d", "--consumer", "w", "--count", "1")
        self.assertEqual(out, "m4\n")
        out, _ = self.ctl_ok(*C, "--json", "sub", "ps.d", "--consumer", "w", "--count", "1")
        f = json.loads(out)
        self.assertEqual((f["seq"], f["data"]), (4, "m4"))
        self.assertGreaterEqual(f["deliveries"], 2)  # earlier sessions had it in flight too
        # SIGINT ends a running sub cleanly (exit 0)
        p = self.spawn(*C, "sub", "ps.d", "--consumer", "w", "--ack")
        line = p.stdout.readline()
        self.assertEqual(line, b"m4\n")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10 * h.SLOW)
        self.assertEqual(p.returncode, 0, err)

    def test_tls(self):
        if not shutil.which("openssl"):
            self.skipTest("needs the openssl command (package openssl) to make a certificate")
        cert, key = os.path.join(self.tmp, "cert.pem"), os.path.join(self.tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"], check=True,
                       capture_output=True)
        d = self.new_wsqd(tls=(cert, key)).start()
        C = ("-c", d.conf)  # the URL is derived as https://127.0.0.1:PORT
        self.ctl_fails(1, *C, "pub", "tls.t", "x",
                       pattern=r"TLS handshake with the broker at https://127\.0\.0\.1:\d+ "
                               r"failed .*--insecure skips the check")
        out, _ = self.ctl_ok(*C, "--insecure", "pub", "tls.t", "secret")
        self.assertEqual(out, "1\n")
        # reads need no trust in the broker: the store of -c is read directly, and -v says why
        out, err = self.ctl_ok(*C, "-v", "--json", "topics")
        self.assertEqual(json.loads(out)["topics"][0]["name"], "tls.t")
        self.assertEqual(err, "wsqctl: the broker at %s has a TLS certificate wsqctl does not "
                              "trust; using the store %s\n" % (d.url, d.data))
        _, err = self.ctl_ok(*C, "-v", "--insecure", "topics")
        self.assertEqual(err, "wsqctl: using the broker at %s (store %s)\n"
                         % (d.url, os.path.realpath(d.data)))
        out, _ = self.ctl_ok("--url", "wss://127.0.0.1:%d" % d.port, "--insecure", "sub", "tls.t",
                             "--from", "earliest", "--count", "1")
        self.assertEqual(out, "secret\n")
        self.ctl_fails(1, *C, "purge", "tls.t", "--all",
                       pattern=r"SSL certificate problem.*--insecure skips the check")
        res = self.ctl_json(*C, "--insecure", "purge", "tls.t", "--all")
        self.assertEqual((res["removed"], res["via"]), (1, "broker"))


if __name__ == "__main__":
    c.main()
