#!/usr/bin/python3
"""JWTs signed with public-key algorithms against the real wsqd (OPERATIONS.md "JWTs"): key
pairs made with the openssl command, tokens minted with PyJWT (Debian's python3-jwt, a library
nobody here wrote), keys given to wsqd as a PEM file and as a JWK Set file.

- RS256, PS256, ES256, ES384 and EdDSA tokens are accepted over HTTP and wsq.v1, with the
  rights of their claims;
- algorithm confusion: an HS256 token whose secret is the RSA public key's PEM text is refused
  (bad_alg), as is an algorithm the config does not list and "none";
- a kid the set does not hold is unknown_key, another key's signature bad_signature, expired
  and not-yet-valid tokens are refused; wsq_auth_failures_total counts each reason;
- key rotation by reload: a new kid works after SIGHUP and the old one until it is removed;
- a config with public keys and no algorithms list does not start, and says where.
"""

import http.server
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402
import sechelp as s  # noqa: E402

import jwt  # noqa: E402  (PyJWT)
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402


def openssl_key(directory, name, *genpkey_args):
    """A private key made by `openssl genpkey`, and its public half by `openssl pkey -pubout`:
    (private PEM bytes, public PEM path)."""
    priv = os.path.join(directory, name + ".key")
    pub = os.path.join(directory, name + ".pub.pem")
    subprocess.run(["openssl", "genpkey", "-out", priv] + list(genpkey_args), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub], check=True)
    with open(priv, "rb") as f:
        return f.read(), pub


def public_jwk(pub_path, kid):
    with open(pub_path, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    for alg in (RSAAlgorithm, ECAlgorithm, OKPAlgorithm):
        try:
            d = json.loads(alg.to_jwk(key))
            break
        except Exception:  # noqa: BLE001  (the wrong family for this key)
            continue
    d["kid"] = kid
    d["use"] = "sig"
    return d


def claims(**kw):
    return s.claims("alice", pub=["jwt.>"], subscribe=["jwt.>"], **kw)


def status(d, token, topic="jwt.a"):
    hdrs = {"Content-Type": "text/plain"}
    hdrs.update(s.bearer(token))
    st, _, _ = d.http("POST", "/topics/" + topic, b"hi", hdrs)
    return st


class Keys(h.WsqdTestCase):
    """Key pairs of every type, made once per class with the openssl command."""
    START = False

    @classmethod
    def setUpClass(cls):
        cls.keydir = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                  "wsqpy-jwtkeys-%d" % os.getpid())
        os.makedirs(cls.keydir, exist_ok=True)
        k = cls.keydir
        cls.rsa, cls.rsa_pub = openssl_key(k, "rsa", "-algorithm", "RSA",
                                           "-pkeyopt", "rsa_keygen_bits:2048")
        cls.ec, cls.ec_pub = openssl_key(k, "ec", "-algorithm", "EC",
                                         "-pkeyopt", "ec_paramgen_curve:P-256")
        cls.ec2, cls.ec2_pub = openssl_key(k, "ec2", "-algorithm", "EC",
                                           "-pkeyopt", "ec_paramgen_curve:P-256")
        cls.p384, cls.p384_pub = openssl_key(k, "p384", "-algorithm", "EC",
                                             "-pkeyopt", "ec_paramgen_curve:P-384")
        cls.ed, cls.ed_pub = openssl_key(k, "ed", "-algorithm", "ED25519")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.keydir)


class JwtKeys(Keys):

    def write_jwks(self, d, *keys):
        path = os.path.join(d.dir, "idp.jwks")
        with open(path, "w") as f:
            json.dump({"keys": list(keys)}, f)

    def jwt_yaml(self, algorithms=("RS256", "PS256", "ES256", "ES384", "EdDSA")):
        return s.auth_yaml(jwt={"public_key_file": self.rsa_pub, "jwks_file": "idp.jwks",
                                "algorithms": list(algorithms)})

    def daemon(self):
        d = self.new_wsqd(anonymous=False)
        self.write_jwks(d, public_jwk(self.ec_pub, "ec1"), public_jwk(self.p384_pub, "p384"),
                        public_jwk(self.ed_pub, "ed1"))
        s.write_config(d, self.jwt_yaml())
        return d.start()

    def reasons(self, d):
        m = d.metrics()
        return {r: m.get(s.labeled("wsq_auth_failures_total", reason=r), 0)
                for r in ("bad_alg", "bad_signature", "unknown_key", "expired", "not_yet_valid",
                          "malformed")}

    def test_each_algorithm_over_http_and_websocket(self):
        d = self.daemon()
        tokens = {
            "RS256": jwt.encode(claims(), self.rsa, algorithm="RS256"),
            "PS256": jwt.encode(claims(), self.rsa, algorithm="PS256"),
            "ES256": jwt.encode(claims(), self.ec, algorithm="ES256", headers={"kid": "ec1"}),
            "ES384": jwt.encode(claims(), self.p384, algorithm="ES384"),
            "EdDSA": jwt.encode(claims(), self.ed, algorithm="EdDSA", headers={"kid": "ed1"}),
        }
        for alg, tok in tokens.items():
            self.assertEqual(status(d, tok), 200, alg)
            self.assertEqual(status(d, tok, "other.a"), 403, alg)   # the claims' rights
        # a WebSocket session with an EdDSA token: subscribe and receive
        ws = h.SocketWS(d, "/?token=" + tokens["EdDSA"], subprotocol="wsq.v1")
        ws.send_json({"op": "sub", "topic": "jwt.ws", "ref": "s"})
        self.assertEqual(ws.recv_json()["op"], "subscribed")
        self.assertEqual(status(d, tokens["ES256"], "jwt.ws"), 200)
        msg = ws.recv_json()
        self.assertEqual((msg["op"], msg["data"]), ("msg", "hi"))
        ws.close()

    def test_confusion_and_refusals(self):
        d = self.daemon()
        with open(self.rsa_pub, "rb") as f:
            pem = f.read()
        now = int(time.time())
        before = self.reasons(d)
        cases = [
            # HS256 "signed" with the public key: what a verifier that trusts "alg" would take
            ("bad_alg", s.mint_jwt(pem, claims())),
            ("bad_alg", jwt.encode(claims(), self.rsa, algorithm="RS512")),   # not listed
            # unsigned: no signature part at all
            ("malformed", s.mint_jwt(None, claims(), header={"alg": "none"}, signature="")),
            ("bad_alg", s.mint_jwt(None, claims(), header={"alg": "none"}, signature="AAAA")),
            ("unknown_key", jwt.encode(claims(), self.ec, algorithm="ES256",
                                       headers={"kid": "nope"})),
            ("bad_signature", jwt.encode(claims(), self.ec2, algorithm="ES256",
                                         headers={"kid": "ec1"})),
            ("expired", jwt.encode(claims(exp_in=-3600), self.ed, algorithm="EdDSA")),
            ("not_yet_valid", jwt.encode(claims(nbf_in=3600, now=now), self.rsa,
                                         algorithm="RS256")),
        ]
        want = dict.fromkeys(before, 0)
        for reason, tok in cases:
            self.assertEqual(status(d, tok), 401, reason)
            want[reason] += 1
        after = self.reasons(d)
        for r in want:
            self.assertEqual(after[r] - before[r], want[r], r)

    def test_rotation_by_reload(self):
        d = self.daemon()
        new = jwt.encode(claims(), self.ec2, algorithm="ES256", headers={"kid": "ec2"})
        old = jwt.encode(claims(), self.ec, algorithm="ES256", headers={"kid": "ec1"})
        self.assertEqual(status(d, new), 401)
        # the provider publishes the new key beside the old one
        self.write_jwks(d, public_jwk(self.ec_pub, "ec1"), public_jwk(self.ec2_pub, "ec2"))
        s.reload(d, self.jwt_yaml(("ES256",)))
        self.assertEqual(status(d, new), 200)
        self.assertEqual(status(d, old), 200)
        # then drops the old one
        self.write_jwks(d, public_jwk(self.ec2_pub, "ec2"))
        s.reload(d, self.jwt_yaml(("ES256",)))
        self.assertEqual(status(d, new), 200)
        self.assertEqual(status(d, old), 401)
        # a broken set is refused and the last good one stays
        with open(os.path.join(d.dir, "idp.jwks"), "w") as f:
            f.write("{not json")
        line = s.reload(d, self.jwt_yaml(("ES256",)), expect="refused")
        self.assertIn("auth.jwt.jwks_file", line)
        self.assertEqual(status(d, new), 200)

    def roles_daemon(self, identity_claim=None, roles_claim="realm_access.roles"):
        d = self.new_wsqd(anonymous=False)
        self.write_jwks(d, public_jwk(self.ec_pub, "ec1"))
        jwt_keys = {"jwks_file": "idp.jwks", "algorithms": ["ES256"], "roles_claim": roles_claim}
        if identity_claim:
            jwt_keys["identity_claim"] = identity_claim
        yaml = s.auth_yaml(jwt=jwt_keys) + (
            "    roles:\n"
            "      user: {publish: [\"inbox.{sub}\", \"user.{sub}.>\"], "
            "subscribe: [\"user.{sub}.>\"]}\n"
            "      ops: {publish: [\"ops.>\"], metrics: true}\n")
        s.write_config(d, yaml)
        return d.start()

    def token(self, sub, roles, claim="realm_access", **extra):
        c = {"sub": sub, "exp": int(time.time()) + 3600}
        if claim == "realm_access":
            c["realm_access"] = {"roles": roles}
        else:
            c[claim] = roles
        c.update(extra)
        return jwt.encode(c, self.ec, algorithm="ES256", headers={"kid": "ec1"})

    def test_keycloak_roles_and_templates(self):
        d = self.roles_daemon()
        alice = self.token("alice", ["user", "offline_access"])
        self.assertEqual(status(d, alice, "user.alice.notes"), 200)
        self.assertEqual(status(d, alice, "inbox.alice"), 200)
        self.assertEqual(status(d, alice, "user.bob.notes"), 403)
        self.assertEqual(status(d, alice, "ops.x"), 403)
        ops = self.token("carol", ["ops"], wsq={"pub": [">"]})   # "wsq" is not read with roles
        self.assertEqual(status(d, ops, "ops.x"), 200)
        self.assertEqual(status(d, ops, "user.carol.x"), 403)
        self.assertEqual(status(d, self.token("dave", []), "user.dave.x"), 403)
        # a subscriber gets its own space only
        ws = h.SocketWS(d, "/?token=" + alice, subprotocol="wsq.v1")
        ws.send_json({"op": "sub", "topic": "user.bob.notes", "ref": "s"})
        err = ws.recv_json()
        self.assertEqual((err["op"], err["code"]), ("err", "forbidden"), err)
        ws.close()

    def test_template_injection(self):
        d = self.roles_daemon()
        # values that are not one topic segment make the template grant nothing
        for sub in ("bob.x", "bob/x", "*", ">", "a b", "bob.>"):
            tok = self.token(sub, ["user"])
            for topic in ("user.bob.x", "user.bob.x.y", "user.eve.z", "inbox.bob"):
                self.assertEqual(status(d, tok, topic), 403, (sub, topic))
        # while a plain value works
        self.assertEqual(status(d, self.token("bob", ["user"]), "user.bob.x"), 200)

    def test_auth0_namespaced_roles_and_identity(self):
        d = self.roles_daemon(roles_claim="https://wsq.example.com/roles")
        sub = 'auth0|64f1c0" admin=true'
        tok = self.token(sub, ["ops"], claim="https://wsq.example.com/roles")
        self.assertEqual(status(d, tok, "ops.deploy"), 200)
        ws = h.SocketWS(d, "/?token=" + tok, subprotocol="wsq.v1")
        ws.close()
        # the identity is logged quoted, its quote escaped: no field can be forged
        line = d.wait_log(r"\bconnect\b.*identity=.*").group(0)
        self.assertIn('identity="auth0|64f1c0\\" admin=true"', line)

    def test_public_keys_need_algorithms(self):
        d = self.new_wsqd(anonymous=False)
        s.write_config(d, s.auth_yaml(jwt={"public_key_file": self.rsa_pub}))
        d.start(wait=False)
        rc = d.proc.wait(timeout=10 * h.SLOW)
        self.assertNotEqual(rc, 0)
        log = d.log_tail()
        self.assertRegex(log, r"wsq\.yaml:\d+:\d+: auth\.jwt: public keys need the list of "
                              r"accepted algorithms")


class JwksServer:
    """A tiny HTTPS server (the test's CA) that serves a JWK Set the test changes at will."""

    def __init__(self, pki):
        self.status, self.body, self.hits = 200, b"{}", 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.hits += 1
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki["server_cert"], pki["server_key"])
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = "https://127.0.0.1:%d/jwks" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def keys(self, *jwks):
        self.status, self.body = 200, json.dumps({"keys": list(jwks)}).encode()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class JwksUrl(Keys):
    """auth.jwt.jwks_url: fetched over https off the service thread, refetched for an unknown
    kid, the last good set kept when the provider is down or serves garbage."""

    def setUp(self):
        super().setUp()
        self.pki = s.make_pki(os.path.join(self.keydir, "pki-%d" % id(self)))
        self.srv = JwksServer(self.pki)
        self.addCleanup(self.srv.close)

    def url_daemon(self):
        d = self.new_wsqd(anonymous=False)
        s.write_config(d, s.auth_yaml(jwt={"jwks_url": self.srv.url,
                                           "jwks_ca_file": self.pki["ca"],
                                           "jwks_refresh": "10s", "algorithms": ["ES256"]}))
        return d.start()

    def until(self, what, cond, timeout=20.0):
        deadline = time.monotonic() + timeout * h.SLOW
        while not cond():
            if time.monotonic() > deadline:
                self.fail("never: " + what)
            time.sleep(0.1)

    def health(self, d):
        return d.http_json("GET", "/healthz")[2]

    def test_fetch_and_rotation_by_unknown_kid(self):
        self.srv.keys(public_jwk(self.ec_pub, "ec1"))
        d = self.url_daemon()
        self.until("keys fetched", lambda: self.health(d).get("jwks", {}).get("keys") == 1)
        ec1 = jwt.encode(claims(), self.ec, algorithm="ES256", headers={"kid": "ec1"})
        self.assertEqual(status(d, ec1), 200)
        # the provider rotates: a token with the new kid makes wsqd fetch again at once
        self.srv.keys(public_jwk(self.ec_pub, "ec1"), public_jwk(self.ec2_pub, "ec2"))
        ec2 = jwt.encode(claims(), self.ec2, algorithm="ES256", headers={"kid": "ec2"})
        self.assertEqual(status(d, ec2), 401)
        self.until("the new kid accepted", lambda: status(d, ec2) == 200, timeout=5.0)
        self.assertEqual(status(d, ec1), 200)
        m = d.metrics()
        self.assertGreaterEqual(m["wsq_jwks_keys"], 2)
        self.assertEqual(m[s.labeled("wsq_jwks_fetches_total", result="failed")], 0)
        # made-up kids do not make wsqd hammer the provider (one refetch per 30 s)
        hits = self.srv.hits
        for i in range(20):
            bad = jwt.encode(claims(), self.ec2, algorithm="ES256", headers={"kid": "x%d" % i})
            self.assertEqual(status(d, bad), 401)
        time.sleep(0.5)
        self.assertLessEqual(self.srv.hits - hits, 1)

    def test_provider_down_then_garbage(self):
        self.srv.status, self.srv.body = 503, b"down"
        d = self.url_daemon()
        self.until("a failed fetch", lambda: d.metrics().get(
            s.labeled("wsq_jwks_fetches_total", result="failed"), 0) >= 1)
        self.assertEqual(self.health(d)["jwks"], {"age_s": -1, "keys": 0})
        self.assertEqual(self.health(d)["status"], "ok")   # everything else is served
        tok = jwt.encode(claims(), self.ec, algorithm="ES256", headers={"kid": "ec1"})
        self.assertEqual(status(d, tok), 401)
        # back up: the next try (within the refresh interval) brings the keys
        self.srv.keys(public_jwk(self.ec_pub, "ec1"))
        self.until("keys after the outage", lambda: status(d, tok) == 200)
        # garbage from the provider: counted, and the last good keys stay
        failed = d.metrics()[s.labeled("wsq_jwks_fetches_total", result="failed")]
        self.srv.status, self.srv.body = 200, b"{\"keys\": 42}"
        self.until("a refused set", lambda: d.metrics()[
            s.labeled("wsq_jwks_fetches_total", result="failed")] > failed)
        self.assertEqual(status(d, tok), 200)
        self.assertGreaterEqual(self.health(d)["jwks"]["age_s"], 0)


if __name__ == "__main__":
    h.main()
