#!/usr/bin/python3
"""One rule for every command: when a broker answers at the configured or default URL, wsqctl uses
it; otherwise it opens the local store. -v says which was used.

- read commands run from another directory find the running broker's store, also when the
  config's storage.path is relative (relative to the directory wsqd runs in);
- purge, delete-consumer and import with no --data, -c or --url go through the broker that answers
  at the default URL ($WSQ_URL stands for the default here; test_default_url.py uses the real one);
- with no broker, the local store is used (--data, -c's storage.path, ./data);
- a broker at the default URL that serves another store than --data is someone else's: --data is
  used; a named one (--url) is a contradiction and refused;
- a broker whose store is on another machine: reads fail, saying so; compact refuses while a wsqd
  runs on the store;
- something that is not a wsqd at the default URL is no broker; at --url it is an error;
- a broker that refuses wsqctl's identity: a named store is read directly; without one, the
  refusal is the error; a mutation of a locked store reports it.
"""

import http.server
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctlharness as c  # noqa: E402
import wsqharness as h  # noqa: E402

READS = (["topics"], ["stats"], ["peek", "bs.t"], ["consumers"], ["check"], ["export"])


class FakeServer:
    """An HTTP server on loopback that answers every GET with one fixed answer."""

    def __init__(self, status, body):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                data = json.dumps(body).encode() if isinstance(body, dict) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()
        self.thread.join(10)


class BrokerOrStore(c.CtlTestCase):
    START = False

    def setUp(self):
        super().setUp()
        # the shipped config's way: storage.path relative to the directory wsqd runs in
        self.d = self.new_wsqd(storage_path="./data").start()
        for i in range(3):
            self.d.publish("bs.t", "m%d" % i)
        self.real = os.path.realpath(self.d.data)
        self.elsewhere = os.path.join(self.tmp, "elsewhere")  # a directory without a store
        os.makedirs(self.elsewhere)
        self.dflt = {"WSQ_URL": self.d.url}  # a broker answers at the default URL

    def fake(self, status, body):
        f = FakeServer(status, body)
        self.addCleanup(f.close)
        return f

    def test_reads_from_another_directory_find_the_brokers_store(self):
        d = self.d
        for cmd in READS:
            with self.subTest(cmd=cmd):
                # no option at all: the broker at the default URL says where its store is
                self.ctl_ok(*cmd, cwd=self.elsewhere, env=self.dflt)
                # -c with a relative storage.path, run from elsewhere: the broker wins over it
                self.ctl_ok("-c", d.conf, *cmd, cwd=self.elsewhere)
        doc = self.ctl_json("topics", cwd=self.elsewhere, env=self.dflt)
        self.assertEqual([(t["name"], t["count"]) for t in doc["topics"]], [("bs.t", 3)])
        doc = self.ctl_json("-c", d.conf, "stats", cwd=self.elsewhere)
        self.assertEqual(doc["data_dir"], self.real)
        out, err = self.ctl_ok("-v", "peek", "bs.t", "--limit", "1", cwd=self.elsewhere,
                               env=self.dflt)
        self.assertEqual(err, "wsqctl: using the broker at %s (store %s)\n" % (d.url, self.real))
        self.assertRegex(out, r"(?m)^ +1  \S+ +2  text  m0$")
        # --data naming the broker's store: the same thing
        _, err = self.ctl_ok("-v", "--data", d.data, "topics", env=self.dflt)
        self.assertEqual(err, "wsqctl: using the broker at %s (store %s)\n" % (d.url, self.real))

    def test_mutations_with_defaults_go_through_the_broker(self):
        d = self.d
        ws = h.SocketWS(d)
        self.addCleanup(ws.close)
        ws.subscribe("bs.t", consumer="c1", window=10)
        ws.close()
        h.wait_until(lambda: self.ctl_json("-c", d.conf, "consumers")["consumers"],
                     what="consumer c1 stored")
        out, err = self.ctl_ok("-v", "purge", "bs.t", "--before", "2", cwd=self.elsewhere,
                               env=self.dflt)
        self.assertEqual(out, "purged 1 message from bs.t via the broker (first seq now 2, next "
                              "seq 4)\n")
        self.assertEqual(err, "wsqctl: using the broker at %s (store %s)\n" % (d.url, self.real))
        res = self.ctl_json("purge", "bs.t", "--all", cwd=self.elsewhere, env=self.dflt)
        self.assertEqual((res["removed"], res["via"]), (2, "broker"))
        res = self.ctl_json("import", "-", input=b'{"topic":"bs.t","data":"back"}\n',
                            cwd=self.elsewhere, env=self.dflt)
        self.assertEqual(res, {"imported": 1, "via": "broker"})
        res = self.ctl_json("delete-consumer", "bs.t", "c1", cwd=self.elsewhere, env=self.dflt)
        self.assertEqual(res["via"], "broker")
        # the broker did all of it: its store has the import, and nothing was created here
        self.assertEqual(d.publish("bs.t", "after"), 5)
        self.assertEqual(os.listdir(self.elsewhere), [])
        # pub and sub say which broker they use
        out, err = self.ctl_ok("-v", "pub", "bs.t", "x", env=self.dflt)
        self.assertEqual(out, "6\n")
        self.assertIn("wsqctl: using the broker at %s (from $WSQ_URL)\n" % d.url, err)

    def test_no_broker_uses_the_local_store(self):
        d = self.d
        d.stop()
        # -c: storage.path, relative to the directory wsqctl runs in (wsqd's here)
        _, err = self.ctl_ok("-v", "-c", d.conf, "topics", cwd=d.dir)
        self.assertEqual(err, "wsqctl: no broker at %s; using the store ./data\n" % d.url)
        # no option at all: ./data of the current directory
        out, err = self.ctl_ok("-v", "--json", "topics", cwd=d.dir)
        self.assertEqual(json.loads(out)["topics"][0]["count"], 3)
        self.assertEqual(err, "wsqctl: no broker at %s; using the store ./data\n"
                         % c.no_broker_url())
        # mutations take the lock of the local store
        out, err = self.ctl_ok("-v", "purge", "bs.t", "--before", "2", cwd=d.dir)
        self.assertEqual(out, "purged 1 message from bs.t via the store (first seq now 2, next "
                              "seq 4)\n")
        self.assertTrue(err.startswith("wsqctl: no broker at %s; using the store ./data\n"
                                       "wsqctl: via store: no process holds ./data/wsq.lock"
                                       % c.no_broker_url()), err)
        # from elsewhere there is no store: said so
        self.ctl_fails(1, "topics", cwd=self.elsewhere,
                       pattern=r"no wsq store at \./data \(no data\.mdb there\), the default")
        # --url names a broker: it must answer when no store is named
        self.ctl_fails(5, "--url", d.url, "topics",
                       pattern=r"broker unreachable at %s \(from --url\)" % d.url)
        # wsqd runs again: the same command goes through it
        d.start()
        _, err = self.ctl_ok("-v", "-c", d.conf, "topics", cwd=self.elsewhere)
        self.assertEqual(err, "wsqctl: using the broker at %s (store %s)\n" % (d.url, self.real))

    def test_broker_of_another_store(self):
        d = self.d
        other = self.new_wsqd().start()
        other.publish("other.t", "x")
        # the default URL's broker serves another store than --data: --data is used, locally
        out, err = self.ctl_ok("-v", "--json", "topics", "--data", d.data,
                               env={"WSQ_URL": other.url})
        self.assertEqual([t["name"] for t in json.loads(out)["topics"]], ["bs.t"])
        self.assertEqual(err, "wsqctl: the broker at %s serves %s, not %s; using the store %s\n"
                         % (other.url, os.path.realpath(other.data), d.data, d.data))
        # ... and a mutation there is refused: d's wsqd holds the lock and nobody can reach it
        self.ctl_fails(1, "--data", d.data, "purge", "bs.t", "--all", env={"WSQ_URL": other.url},
                       pattern=r"the store at %s is locked by pid %d \(wsqd\): .*the broker at %s "
                               r"serves .*, not %s; pass the --url of the wsqd that runs on"
                       % (d.data, d.pid, other.url, d.data))
        # a named broker (--url) of another store: refused for reads as for mutations
        for cmd in (["topics"], ["purge", "bs.t", "--all"]):
            self.ctl_fails(1, "--url", other.url, "--data", d.data, *cmd,
                           pattern=r"the broker at %s \(from --url\) serves .*, not %s \(from "
                                   r"--data\): refusing" % (other.url, d.data))

    def test_broker_on_another_machine(self):
        d = self.d
        # a wsqd whose store path does not exist here
        f = self.fake(200, {"identity": "anonymous", "admin": True, "pid": 4242,
                            "version": "0.1.0", "format": 2, "data": "/nonexistent/wsq/data"})
        for cmd in READS:
            with self.subTest(cmd=cmd):
                self.ctl_fails(1, *cmd, env={"WSQ_URL": f.url},
                               pattern=r"the broker at %s \(wsqd pid 4242\) keeps its store at "
                                       r"/nonexistent/wsq/data, but on this machine "
                                       r"/nonexistent/wsq/data does not exist: the broker runs on "
                                       r"another machine" % f.url)
        out, _ = self.ctl_fails(1, "--json", "topics", env={"WSQ_URL": f.url})
        self.assertEqual(json.loads(out)["error"]["code"], "remote_store")
        # the same path exists here, but it is not that broker's: the lock says so
        f2 = self.fake(200, {"identity": "anonymous", "admin": True, "pid": 4242,
                             "version": "0.1.0", "format": 2, "data": self.real})
        self.ctl_fails(1, "stats", env={"WSQ_URL": f2.url},
                       pattern=r"but on this machine %s is locked by pid %d \(wsqd\): the broker "
                               r"runs on another machine" % (self.real, d.pid))
        d.stop()
        self.ctl_fails(1, "stats", env={"WSQ_URL": f2.url},
                       pattern=r"but on this machine %s is not in use \(no process holds its "
                               r"wsq\.lock\)" % self.real)

    def test_not_a_wsqd(self):
        d = self.d
        f = self.fake(404, b"<html>not here</html>")
        # at the default URL: no broker, the local store
        _, err = self.ctl_ok("-v", "--data", d.data, "topics", env={"WSQ_URL": f.url})
        self.assertEqual(err, "wsqctl: no wsqd at %s (it answered HTTP 404 to GET /admin/whoami, "
                              "not a wsqd's answer); using the store %s\n" % (f.url, d.data))
        # named by --url: an error
        self.ctl_fails(1, "--url", f.url, "--data", d.data, "topics",
                       pattern=r"the server at %s \(from --url\) is not a wsqd: it answered HTTP "
                               r"404" % f.url)

    def test_broker_that_refuses_wsqctl(self):
        d = self.d
        # a wsqd where all of /admin/* needs admin rights, asked without them
        f = self.fake(401, {"error": {"code": "unauthorized",
                                      "message": "the admin endpoint needs an identity with admin "
                                                 "rights"}})
        env = {"WSQ_URL": f.url}
        # a named store is read directly: reads need no rights
        out, err = self.ctl_ok("-v", "--json", "--data", d.data, "topics", env=env)
        self.assertEqual(json.loads(out)["topics"][0]["name"], "bs.t")
        self.assertEqual(err, "wsqctl: the broker at %s refused wsqctl's identity; using the "
                              "store %s\n" % (f.url, d.data))
        # without one, the refusal is the answer
        self.ctl_fails(1, "topics", env=env,
                       pattern=r"permission denied: the broker at %s needs credentials with admin "
                               r"rights \(unauthorized: .*\); pass --token .*--data DIR reads a "
                               r"store on this machine" % f.url)
        # a mutation finds the named store locked by d's wsqd: the refusal says why it failed
        out, _ = self.ctl_fails(1, "--json", "--data", d.data, "purge", "bs.t", "--all", env=env,
                                pattern=r"permission denied: the broker at %s needs credentials "
                                        r"with admin rights .* \(the store at %s is locked by pid "
                                        r"%d \(wsqd\), so changes must go through the broker\)"
                                % (f.url, d.data, d.pid))
        self.assertEqual(json.loads(out)["error"]["code"], "permission_denied")

    def test_compact_is_offline_only(self):
        d = self.d
        dest = os.path.join(self.tmp, "copy")
        self.ctl_fails(1, "-c", d.conf, "compact", dest,
                       pattern=r"compact works only on a store that no wsqd runs on, and the "
                               r"broker at %s \(wsqd pid %d\) runs on %s: stop it first"
                       % (d.url, d.pid, self.real))
        # the lock tells even when no broker answers
        self.ctl_fails(1, "--data", d.data, "compact", dest,
                       pattern=r"and pid %d \(wsqd\) runs on %s: stop it first" % (d.pid, d.data))
        self.assertFalse(os.path.exists(dest))
        d.stop()
        out, err = self.ctl_ok("-v", "-c", d.conf, "compact", dest, cwd=d.dir)
        self.assertEqual(err, "wsqctl: no broker at %s; using the store ./data\n" % d.url)
        self.assertRegex(out, r"^compacted \./data \(.*\) into %s \(" % dest)
        self.assertEqual(self.ctl_json("--data", dest, "topics")["topics"][0]["count"], 3)


if __name__ == "__main__":
    c.main()
