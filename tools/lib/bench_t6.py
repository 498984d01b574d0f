#!/usr/bin/python3
"""T6 of tools/bench-peers.sh: the restart of wsqd on a store with T6_MESSAGES messages.

Usage: bench_t6.py WSQD CONF PORT warm|cold DATA_DIR MESSAGES
Starts wsqd (cold: this store's pages evicted from the page cache first), measures exec -> the
first 101 upgrade and exec -> the first /healthz 200, checks that message MESSAGES is readable,
samples the RSS, stops wsqd by PID and prints one JSON object.
"""
import json, os, socket, subprocess, sys, time
wsqd, conf, port, cache, data, want = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
if cache == "cold":  # evict this store's pages only (not the whole machine's cache)
    for f in os.listdir(data):
        fd = os.open(os.path.join(data, f), os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
UP = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
      b"Sec-WebSocket-Protocol: wsq.v1\r\n\r\n")
def get(req, whole=False):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        s.sendall(req)
        b = b""
        while whole or b"\r\n\r\n" not in b:
            r = s.recv(65536)
            if not r:
                break
            b += r
        return b
    finally:
        s.close()
t0 = time.monotonic()
p = subprocess.Popen([wsqd, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
res = {"cache": cache}
try:
    while "upgrade_s" not in res and time.monotonic() - t0 < 30:
        try:
            if get(UP).startswith(b"HTTP/1.1 101"):
                res["upgrade_s"] = time.monotonic() - t0
        except OSError:
            time.sleep(0.001)
    while "healthz_s" not in res and time.monotonic() - t0 < 30:
        try:
            if get(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").startswith(b"HTTP/1.1 200"):
                res["healthz_s"] = time.monotonic() - t0
        except OSError:
            time.sleep(0.001)
    # the store really holds them: the last message is readable
    b = get(("GET /topics/bench.t6/messages?from=%d&limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Connection: close\r\n\r\n" % want).encode(), whole=True)
    res["last_seq_readable"] = (b'"seq":%d' % want) in b or (b'"seq": %d' % want) in b
    res["rss_kb"] = int([l for l in open("/proc/%d/status" % p.pid) if l.startswith("VmRSS")][0].split()[1])
finally:
    p.terminate()
    p.wait()
print(json.dumps(res))
