"""systemd readiness: with NOTIFY_SOCKET set, wsqd sends READY=1 once it accepts clients,
RELOADING=1 then READY=1 around a SIGHUP reload, and STOPPING=1 when it shuts down - what
Type=notify in wsqd.service relies on. The test plays systemd's side of the socket."""
import os
import signal
import socket
import tempfile

import wsqharness as h


class Notify(h.WsqdTestCase):
    START = False

    def test_ready_reloading_stopping(self):
        tmp = tempfile.mkdtemp(prefix="wsq-notify-")
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(10 * h.SLOW)
        self.addCleanup(lambda: (sock.close(), os.unlink(path), os.rmdir(tmp)))
        os.environ["NOTIFY_SOCKET"] = path
        try:
            d = self.new_wsqd().start()
        finally:
            del os.environ["NOTIFY_SOCKET"]
        self.assertEqual(sock.recv(256), b"READY=1")
        st, _, _ = d.http_json("GET", "/healthz")      # ready means ready
        self.assertEqual(st, 200)

        os.kill(d.pid, signal.SIGHUP)
        msg = sock.recv(256).decode()
        self.assertTrue(msg.startswith("RELOADING=1\nMONOTONIC_USEC="), msg)
        self.assertEqual(sock.recv(256), b"READY=1")

        os.kill(d.pid, signal.SIGTERM)
        self.assertEqual(sock.recv(256), b"STOPPING=1")
        d.stop(expect_rc=0)


if __name__ == "__main__":
    h.main()
