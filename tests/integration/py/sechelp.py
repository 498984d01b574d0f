"""Helpers for the security and operations tests (test_auth, test_tls, test_limits, test_reload,
test_metrics). Standard library only: tokens and their SHA-256, HS256 JWTs minted with
hmac/hashlib/base64, a raw WebSocket upgrade that returns the refusal's status and JSON body,
HTTPS requests, certificates made with the openssl CLI, and SIGHUP reloads.

Nothing here is a wsq client library: every check the tests make goes over the wire with
python3-websockets, http.client or ssl.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import websockets
import websockets.exceptions

import wsqharness as h


# -- tokens ---------------------------------------------------------------------------------

def new_token():
    """A fresh random token (hex: safe in a URL and in a header)."""
    return os.urandom(24).hex()


sha256_hex = h.sha256_hex   # what `printf %s "$TOKEN" | sha256sum` prints, without "  -"


def token_yaml(name, token, publish=(), subscribe=(), admin=False, upper=False):
    """One auth.tokens entry holding only the token's SHA-256 (never the token)."""
    digest = sha256_hex(token)
    if upper:
        digest = digest.upper()
    return ("    - name: %s\n      sha256: %s\n      publish: %s\n      subscribe: %s\n"
            "      admin: %s\n" % (name, digest, json.dumps(list(publish)),
                                   json.dumps(list(subscribe)), "true" if admin else "false"))


def auth_yaml(tokens=(), anonymous=None, jwt=None, origins=None):
    """An auth: section. tokens: token_yaml() strings; anonymous: (publish, subscribe, admin)
    (default: no rights); jwt: dict of auth.jwt keys; origins: allowed_origins list."""
    pub, sub, adm = anonymous or ((), (), False)
    out = ("auth:\n  anonymous:\n    publish: %s\n    subscribe: %s\n    admin: %s\n"
           % (json.dumps(list(pub)), json.dumps(list(sub)), "true" if adm else "false"))
    if tokens:
        out += "  tokens:\n" + "".join(tokens)
    else:
        out += "  tokens: []\n"
    if jwt:
        out += "  jwt:\n" + "".join("    %s: %s\n" % (k, json.dumps(v)) for k, v in jwt.items())
    if origins is not None:
        out += "  allowed_origins: %s\n" % json.dumps(list(origins))
    return out


def bearer(token):
    return {"Authorization": "Bearer " + token}


# -- JWT (HS256), minted here with hmac/hashlib/base64 only ----------------------------------

def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_jwt(secret, claims, header=None, signature=None):
    """header.payload.signature; signature=None signs with HMAC-SHA256(secret); pass a string
    to put any signature part (e.g. "" for an unsigned token)."""
    hdr = {"alg": "HS256", "typ": "JWT"} if header is None else header
    h64 = b64url(json.dumps(hdr, separators=(",", ":")))
    p64 = b64url(json.dumps(claims, separators=(",", ":")))
    signing_input = (h64 + "." + p64).encode()
    if signature is None:
        if isinstance(secret, str):
            secret = secret.encode()
        signature = b64url(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return h64 + "." + p64 + "." + signature


def claims(sub, pub=None, subscribe=None, admin=None, exp_in=3600, nbf_in=None, iss=None,
           aud=None, now=None):
    """Claims in wsq's format: {"sub","exp","nbf","iss","aud","wsq":{"pub","sub","admin"}}."""
    now = int(time.time()) if now is None else now
    c = {"sub": sub, "iat": now}
    if exp_in is not None:
        c["exp"] = now + exp_in
    if nbf_in is not None:
        c["nbf"] = now + nbf_in
    if iss is not None:
        c["iss"] = iss
    if aud is not None:
        c["aud"] = aud
    rights = {}
    if pub is not None:
        rights["pub"] = list(pub)
    if subscribe is not None:
        rights["sub"] = list(subscribe)
    if admin is not None:
        rights["admin"] = admin
    if rights:
        c["wsq"] = rights
    return c


# -- WebSocket upgrades, seen as HTTP ----------------------------------------------------------

class Upgrade:
    """The server's answer to a hand-made upgrade request: status, headers, body (bytes)."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError:
            raise AssertionError("upgrade refusal body is not JSON: %r" % self.body[:300])

    def error_code(self):
        obj = self.json()
        return obj["error"]["code"]


def upgrade(d, path, headers=None, subprotocol=None, ctx=None, source=None, timeout=5.0):
    """Sends a WebSocket upgrade request and reads the answer as HTTP. For a 101 the socket is
    closed right away; for a refusal the JSON body is read (Content-Length)."""
    sock = socket.create_connection((d.host, d.port), timeout=timeout * h.SLOW,
                                    source_address=(source, 0) if source else None)
    try:
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_hostname=d.host)
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               % (path, d.host, d.port, key))
        if subprotocol:
            req += "Sec-WebSocket-Protocol: %s\r\n" % subprotocol
        for k, v in (headers or {}).items():
            req += "%s: %s\r\n" % (k, v)
        sock.sendall((req + "\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise AssertionError("connection closed before an HTTP answer to the upgrade "
                                     "of %s: %r" % (path, buf))
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.1 (\d{3}) ", lines[0] + " ")
        if not m:
            raise AssertionError("not an HTTP/1.1 status line: %r" % lines[0])
        status = int(m.group(1))
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if status != 101:
            n = int(hdrs.get("content-length", "0"))
            while len(body) < n:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                body += chunk
        return Upgrade(status, hdrs, body)
    finally:
        sock.close()


async def refused_status(coro):
    """Awaits a websockets.connect() that must be refused; returns the HTTP status seen by
    python3-websockets (InvalidStatusCode)."""
    try:
        ws = await coro
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    await ws.close()
    raise AssertionError("the upgrade was accepted; expected a refusal")


async def connect_url(url, **kw):
    h.ws_defaults(kw)
    return await websockets.connect(url, **kw)


async def expect_err(ws, code, ref, timeout=5.0):
    """The next frame must be an err with this code and ref; returns it."""
    obj = await h.recv_json(ws, timeout)
    if obj.get("op") != "err" or obj.get("code") != code or obj.get("ref") != ref:
        raise AssertionError("expected err %s ref=%r, got %r" % (code, ref, obj))
    return obj


async def expect_close(ws, code, reason=None, timeout=5.0):
    got_code, got_reason, frames = await h.wait_closed(ws, timeout)
    if got_code != code or (reason is not None and got_reason != reason):
        raise AssertionError("expected close %s %r, got %s %r (frames before: %r)"
                             % (code, reason, got_code, got_reason, frames[:5]))
    return frames


async def still_open(ws, topic="alive.check", ref="alive"):
    """A wsq.v1 ping round trip proves the connection still works."""
    await h.send_json(ws, {"op": "ping", "ref": ref})
    pong = await h.expect_op(ws, "pong", skip=("msg",))
    if pong.get("ref") != ref:
        raise AssertionError("pong with ref %r, expected %r" % (pong.get("ref"), ref))


# -- HTTPS -------------------------------------------------------------------------------------

def https(d, ctx, method, path, body=None, headers=None, timeout=10.0):
    """One HTTPS request on d's port; returns (status, headers, body, selected ALPN)."""
    conn = http.client.HTTPSConnection(d.host, d.port, context=ctx, timeout=timeout * h.SLOW)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        alpn = conn.sock.selected_alpn_protocol() if conn.sock else None
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data, alpn
    finally:
        conn.close()


def make_pki(directory):
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate signed by the
    CA, and a client certificate from another (untrusted) CA, made with the openssl CLI.
    Returns a dict of paths."""
    os.makedirs(directory, exist_ok=True)
    p = lambda name: os.path.join(directory, name)

    def run(*args):
        r = subprocess.run(["openssl"] + list(args), cwd=directory, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise AssertionError("openssl %s failed:\n%s" % (" ".join(args),
                                                             r.stdout.decode(errors="replace")))

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = ("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
              "subjectKeyIdentifier=hash\n")
    with open(p("ca.cnf"), "w") as f:
        f.write("[req]\ndistinguished_name=dn\n[dn]\n[v3]\n" + ca_ext)
    for ca in ("ca", "rogue-ca"):
        run("req", "-x509", *ec, "-keyout", p(ca + ".key"), "-out", p(ca + ".pem"), "-days", "2",
            "-subj", "/CN=wsq test " + ca, "-config", p("ca.cnf"), "-extensions", "v3")
    leaf = ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    with open(p("server.ext"), "w") as f:
        f.write(leaf + "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    with open(p("client.ext"), "w") as f:
        f.write(leaf + "extendedKeyUsage=clientAuth\n")
    for name, ca, ext in (("server", "ca", "server.ext"), ("client", "ca", "client.ext"),
                          ("rogue-client", "rogue-ca", "client.ext")):
        run("req", *ec, "-keyout", p(name + ".key"), "-out", p(name + ".csr"),
            "-subj", "/CN=wsq test " + name)
        run("x509", "-req", "-in", p(name + ".csr"), "-CA", p(ca + ".pem"), "-CAkey",
            p(ca + ".key"), "-CAcreateserial", "-out", p(name + ".pem"), "-days", "2",
            "-extfile", p(ext))
    return {k: p(v) for k, v in {
        "ca": "ca.pem", "server_cert": "server.pem", "server_key": "server.key",
        "client_cert": "client.pem", "client_key": "client.key",
        "rogue_cert": "rogue-client.pem", "rogue_key": "rogue-client.key"}.items()}


def client_ctx(pki, cert=None, key=None, alpn=("http/1.1",)):
    """A client TLS context that trusts only the test CA (and checks the name 127.0.0.1)."""
    ctx = ssl.create_default_context(cafile=pki["ca"])
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


# -- configuration reload (SIGHUP) ---------------------------------------------------------------

def write_config(d, extra_yaml=None, raw_text=None):
    """Rewrites d's config file: d.config_text with sections replaced by extra_yaml, or raw_text
    verbatim."""
    text = raw_text if raw_text is not None else h.merge_yaml(d.config_text, extra_yaml or "")
    with open(d.conf, "w") as f:
        f.write(text)
    return text


def reload(d, extra_yaml=None, raw_text=None, expect="ok", timeout=5.0):
    """Writes the new config, sends SIGHUP by PID, and waits for the next `reload status=` line of
    this run. Returns that line. expect: "ok" or "refused"."""
    pat = r'\breload status=(\w+)|"event":"reload","status":"(\w+)"'   # text or json log
    before = len(re.findall(pat, d._new_log()))
    write_config(d, extra_yaml, raw_text)
    os.kill(d.pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout * h.SLOW
    while True:
        lines = [(ln, m) for ln in d._new_log().splitlines() for m in [re.search(pat, ln)] if m]
        if len(lines) > before:
            line, m = lines[before]
            if (m.group(1) or m.group(2)) != expect:
                raise AssertionError("expected reload status=%s, got: %s" % (expect, line))
            return line
        if time.monotonic() >= deadline:
            raise AssertionError("no reload line within %.1fs after SIGHUP\n%s"
                                 % (timeout, d.log_tail()))
        time.sleep(0.02)


# -- metrics -----------------------------------------------------------------------------------

def labeled(name, **labels):
    """The parse_prometheus key of a labelled series (labels in the order given)."""
    return "%s{%s}" % (name, ",".join('%s="%s"' % kv for kv in labels.items()))


def auth_failures(m, reason):
    return m[labeled("wsq_auth_failures_total", reason=reason)]


def limit_refusals(m, limit):
    return m[labeled("wsq_limit_refusals_total", limit=limit)]


def wait_metric(d, pred, what, timeout=5.0):
    """Polls /metrics until pred(m) is true; returns m."""
    deadline = time.monotonic() + timeout * h.SLOW
    while True:
        m = d.metrics()
        if pred(m):
            return m
        if time.monotonic() >= deadline:
            raise AssertionError("metrics never showed %s; last: %r"
                                 % (what, {k: v for k, v in m.items() if k.startswith("wsq_")
                                           and "bucket" not in k}))
        time.sleep(0.05)


def assert_secrets_not_logged(test, d, secrets):
    """Fails if the wsqd log holds any of these strings (tokens, JWTs, JWT parts, secrets)."""
    log = d.log()
    for s in secrets:
        if not s:
            continue
        test.assertNotIn(s, log, "a secret (%s...) appears in the wsqd log %s"
                         % (s[:8], d.log_path))
        # the signature part of a JWT is what makes it a credential: look for it alone too
        if s.count(".") == 2:
            sig = s.rsplit(".", 1)[1]
            if len(sig) >= 16:
                test.assertNotIn(sig, log, "a JWT signature appears in the wsqd log")
