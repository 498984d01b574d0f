"""Listeners bind exactly the address configured.

Regression: lws 4.1 (built with IPv6) bound "::" - every interface - when given 127.0.0.1, so
the loopback-only default config (anonymous rights granted *because* it is loopback) was
reachable from outside. The kernel's socket tables tell what is bound without touching any
non-loopback address."""
import wsqharness as h


def listeners(port):
    """Local addresses (hex, as in /proc/net/tcp{,6}) listening on port, by family."""
    out = {"tcp": [], "tcp6": []}
    for fam in out:
        with open("/proc/net/" + fam) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                local, state = cols[1], cols[3]
                addr, p = local.rsplit(":", 1)
                if state == "0A" and int(p, 16) == port:
                    out[fam].append(addr)
    return out


class Listen(h.WsqdTestCase):
    START = False

    def check(self, address, want):
        d = self.new_wsqd(extra_yaml="listeners:\n  - address: \"%s\"\n    port: 0\n" % address)
        d.start()
        if ":" in address:
            d.host = address
        got = listeners(d.port)
        self.assertEqual(got, want, "address %s binds %r" % (address, got))
        st, _, body = d.http_json("GET", "/healthz")
        self.assertEqual(st, 200, body)

    def test_ipv4_loopback_binds_only_ipv4_loopback(self):
        self.check("127.0.0.1", {"tcp": ["0100007F"], "tcp6": []})

    def test_localhost_is_ipv4_loopback(self):
        self.check("localhost", {"tcp": ["0100007F"], "tcp6": []})

    def test_ipv6_loopback_binds_only_ipv6_loopback(self):
        self.check("::1", {"tcp": [], "tcp6": ["00000000000000000000000001000000"]})


if __name__ == "__main__":
    h.main()
