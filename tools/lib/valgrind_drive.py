#!/usr/bin/python3
"""The traffic of tools/valgrind.sh: drives a wsqd that runs under valgrind (memcheck).

Usage: valgrind_drive.py RUN PORT DIR   (RUN 1: the first run, RUN 2: the restart on the same
data dir). When it is ready for the SIGTERM it creates DIR/holding; it exits non-zero with a
message on any surprise. Clients: python3-websockets 10.x (Debian) and the standard library.
"""
import asyncio, base64, http.client, json, os, sys
import websockets, websockets.exceptions

RUN, PORT, DIR = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
T = 60  # seconds per wait: valgrind makes wsqd some 20-50x slower
BIN = bytes(range(256)) * 3

def fail(msg):
    sys.stderr.write("valgrind_drive.py run %d: %s\n" % (RUN, msg))
    sys.exit(1)

def check(cond, msg):
    if not cond:
        fail(msg)

def req(method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=T)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()

def http_json(method, path, body=None, headers=None):
    st, data = req(method, path, body, headers)
    return st, (json.loads(data) if data else None)

async def ws(path="/", v1=True):
    kw = dict(max_size=None, max_queue=None, ping_interval=None, open_timeout=T,
              close_timeout=T)
    if v1:
        kw["subprotocols"] = ["wsq.v1"]
    return await websockets.connect("ws://127.0.0.1:%d%s" % (PORT, path), **kw)

async def rj(w, skip=()):
    while True:
        f = await asyncio.wait_for(w.recv(), T)
        check(isinstance(f, str), "binary frame on wsq.v1: %r" % f[:50])
        o = json.loads(f)
        if o.get("op") not in skip:
            return o

async def sj(w, o):
    await w.send(json.dumps(o, separators=(",", ":")))

async def pub(w, topic, data, ref):
    m = {"op": "pub", "topic": topic, "ref": ref}
    if isinstance(data, bytes):
        m["data"], m["enc"] = base64.b64encode(data).decode(), "base64"
    else:
        m["data"] = data
    await sj(w, m)
    o = await rj(w)
    check(o.get("op") == "ok" and o.get("ref") == ref, "pub %s: %r" % (ref, o))
    return o["seq"]

async def msgs(w, n, skip=("gap",)):
    out = []
    while len(out) < n:
        o = await rj(w, skip)
        check(o.get("op") == "msg", "expected msg, got %r" % o)
        out.append(o)
    return out

async def until(w, want):
    """Reads msg frames until every seq in want was seen; returns the seqs in arrival order
    (redeliveries after ack_wait and newer messages may come in between)."""
    want, out = set(want), []
    while not want <= set(out):
        out.append((await msgs(w, 1))[0]["seq"])
    return out

async def closed(w):
    try:
        while True:
            await asyncio.wait_for(w.recv(), T)
    except websockets.exceptions.ConnectionClosed:
        return w.close_code

async def run1():
    # raw mode: a subscriber, a durable raw consumer and a publisher
    rs = await ws("/topics/vg.raw?from=earliest", v1=False)
    rc = await ws("/topics/vg.raw?consumer=rawc&from=earliest", v1=False)
    rp = await ws("/topics/vg.raw", v1=False)
    await rp.send("hello raw")
    await rp.send(BIN)
    await rp.send("x" * 100000)  # > 64 KiB: delivered fragmented
    for w in (rs, rc):
        got = [await asyncio.wait_for(w.recv(), T) for _ in range(3)]
        check(got == ["hello raw", BIN, "x" * 100000], "raw delivery: %r" % [g[:20] for g in got])
    for w in (rs, rc, rp):
        await w.close()
    st, _ = req("GET", "/topics/bad..topic")  # a raw upgrade target that is not one: plain 404/405
    check(st in (404, 405), "GET bad path -> %d" % st)

    # wsq.v1 publishes with confirms, text and binary
    p = await ws()
    seqs = [await pub(p, "vg.v1", "m%d \u00e9" % i if i % 3 else BIN, i) for i in range(1, 11)]
    check(seqs == list(range(1, 11)), "seqs %r" % seqs)
    await sj(p, {"op": "pub", "topic": "vg.v1", "data": "fire and forget"})  # no ref: no ok
    await sj(p, {"op": "pub", "topic": "bad..topic", "data": "x", "ref": "bt"})
    o = await rj(p)
    check(o.get("op") == "err" and o.get("code") == "bad_topic", "bad topic: %r" % o)
    await p.send("{not json")
    o = await rj(p)
    check(o.get("op") == "err", "bad json: %r" % o)
    await p.send(b"\x00binary")
    o = await rj(p)
    check(o.get("op") == "err" and o.get("code") == "bad_request", "binary frame: %r" % o)
    await sj(p, {"op": "ping", "ref": 5})
    check((await rj(p)) == {"op": "pong", "ref": 5}, "pong")

    # an ephemeral subscription
    e = await ws()
    await sj(e, {"op": "sub", "topic": "vg.v1", "from": "earliest", "ref": "e"})
    o = await rj(e)
    check(o.get("op") == "subscribed", "ephemeral sub: %r" % o)
    got = await msgs(e, 11)
    check([m["seq"] for m in got] == list(range(1, 12)), "ephemeral seqs")
    await sj(e, {"op": "unsub", "topic": "vg.v1", "ref": "u"})
    check((await rj(e)).get("op") == "ok", "unsub")
    await e.close()

    # a durable consumer: acks (upto and seq), a nack, redelivery after ack_wait
    c = await ws()
    await sj(c, {"op": "sub", "topic": "vg.v1", "consumer": "dur", "from": "earliest",
                 "window": 4, "ref": 1})
    o = await rj(c)
    check(o.get("op") == "subscribed" and o.get("resumed") is False, "durable sub: %r" % o)
    got = await until(c, {1, 2, 3, 4})  # the window is 4
    await sj(c, {"op": "ack", "topic": "vg.v1", "upto": 2})
    await sj(c, {"op": "ack", "topic": "vg.v1", "seq": 4})
    await sj(c, {"op": "nack", "topic": "vg.v1", "seq": 3, "delay": 10})
    got = await until(c, {3, 5, 6})  # 3 again (nack), then 5, 6 in the freed slots
    await sj(c, {"op": "ack", "topic": "vg.v1", "seq": 3})
    await sj(c, {"op": "ack", "topic": "vg.v1", "seq": 5})
    await sj(c, {"op": "ping", "ref": "p"})
    await rj(c, ("msg", "gap"))
    await c.close()
    # resume: 6 is the first unacknowledged message
    c = await ws()
    await sj(c, {"op": "sub", "topic": "vg.v1", "consumer": "dur", "ref": 2})
    o = await rj(c)
    check(o.get("resumed") is True and o.get("start_seq") == 6, "resume: %r" % o)
    got = await until(c, {6})
    check(got[0] == 6, "resume order %r" % got)
    # a takeover by a second session: it gets everything unacknowledged
    c2 = await ws()
    await sj(c2, {"op": "sub", "topic": "vg.v1", "consumer": "dur", "ref": 3})
    o = await rj(c2, ("msg",))
    check(o.get("op") == "subscribed", "takeover sub: %r" % o)
    code = await closed(c)
    check(code == 4009, "taken-over session closed with %r" % code)
    await until(c2, set(range(6, 12)))
    await sj(c2, {"op": "ack", "topic": "vg.v1", "upto": 8})
    await sj(c2, {"op": "ping", "ref": "p2"})
    await rj(c2, ("msg",))
    await c2.close()  # 9, 10, 11 stay unacknowledged across the restart

    # HTTP
    st, o = http_json("POST", "/topics/vg.http", b"http one", {"Content-Type": "text/plain"})
    check(st == 200 and o["seq"] == 1, "POST: %d %r" % (st, o))
    st, o = http_json("POST", "/topics/vg.http", BIN, {"Content-Type": "application/octet-stream"})
    check(st == 200 and o["seq"] == 2, "POST binary: %d %r" % (st, o))
    st, o = http_json("GET", "/topics/vg.http/messages?from=1&limit=10")
    check(st == 200 and len(o["messages"]) == 2, "history: %d %r" % (st, o))
    st, o = http_json("GET", "/topics/vg.v1/messages?from=2&limit=3")
    check(st == 200 and [m["seq"] for m in o["messages"]] == [2, 3, 4], "history v1: %r" % o)
    st, _ = req("GET", "/healthz")
    check(st == 200, "healthz %d" % st)
    st, body = req("GET", "/metrics")
    check(st == 200 and b"wsq_" in body, "metrics %d" % st)
    st, _ = req("DELETE", "/topics/vg.http")
    check(st == 405, "DELETE -> %d" % st)
    st, _ = req("GET", "/nothing/here")
    check(st == 404, "404 -> %d" % st)
    st, o = http_json("GET", "/admin/whoami")
    check(st == 200 and o["admin"] is True, "whoami %r" % o)
    lines = "\n".join(json.dumps({"topic": "vg.imp", "data": "i%d" % i}) for i in range(5))
    lines += "\n" + json.dumps({"topic": "vg.imp", "data": base64.b64encode(BIN).decode(),
                                "enc": "base64"}) + "\n"
    st, o = http_json("POST", "/admin/import", lines.encode(),
                      {"Content-Type": "application/x-ndjson"})
    check(st == 200 and o.get("imported") == 6, "import: %d %r" % (st, o))
    st, o = http_json("POST", "/admin/import", b'{"topic":"vg.imp"}\n')
    check(st == 400, "bad import: %d %r" % (st, o))
    # a purge while a consumer waits: it gets a gap
    g = await ws()
    await sj(g, {"op": "sub", "topic": "vg.imp", "consumer": "gapc", "from": "earliest",
                 "window": 1, "ref": 1})
    await rj(g)
    await msgs(g, 1)
    st, o = http_json("POST", "/admin/purge?topic=vg.imp&before=4")
    check(st == 200, "purge: %d %r" % (st, o))
    await sj(g, {"op": "ack", "topic": "vg.imp", "seq": 1})
    o = await rj(g)
    check(o.get("op") in ("gap", "msg"), "after purge: %r" % o)
    st, o = http_json("POST", "/admin/delete-consumer?topic=vg.imp&consumer=gapc")
    check(st == 200, "delete-consumer: %d %r" % (st, o))
    code = await closed(g)
    check(code == 4014, "deleted consumer closed with %r" % code)
    st, o = http_json("POST", "/admin/purge?topic=vg.http&all=true")
    check(st == 200, "purge all: %d %r" % (st, o))

    # shutdown with clients connected and publishes in flight
    s = await ws()
    await sj(s, {"op": "sub", "topic": "vg.v1", "ref": 1})
    await rj(s)
    r = await ws("/topics/vg.v1", v1=False)
    pb = await ws()
    open(os.path.join(DIR, "holding"), "w").close()
    n = 0
    try:
        while True:
            n += 1
            await sj(pb, {"op": "pub", "topic": "vg.stop", "data": "s%d" % n, "ref": n})
            await asyncio.sleep(0.05)
    except websockets.exceptions.ConnectionClosed:
        pass
    codes = [pb.close_code, await closed(s), await closed(r)]
    check(codes == [1001, 1001, 1001], "close codes at shutdown %r" % codes)

async def run2():
    c = await ws()
    await sj(c, {"op": "sub", "topic": "vg.v1", "consumer": "dur", "ref": 1})
    o = await rj(c)
    check(o.get("resumed") is True and o.get("start_seq") == 9, "resume after restart: %r" % o)
    got = await until(c, {9, 10, 11})
    check(got[:3] == [9, 10, 11], "after restart %r" % got)
    await sj(c, {"op": "ack", "topic": "vg.v1", "upto": 11})
    await sj(c, {"op": "ping", "ref": 1})
    await rj(c)
    await c.close()
    st, o = http_json("GET", "/topics/vg.raw/messages?from=1")
    check(st == 200 and len(o["messages"]) == 3, "raw history after restart %r" % o)
    st, o = http_json("GET", "/topics/vg.http/messages?from=1")
    check(st == 200 and o["messages"] == [], "purged topic after restart %r" % o)
    st, _ = req("GET", "/metrics")
    check(st == 200, "metrics")
    open(os.path.join(DIR, "holding"), "w").close()

asyncio.run(asyncio.wait_for(run1() if RUN == 1 else run2(), 30 * T))
