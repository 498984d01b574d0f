#!/usr/bin/python3
"""The HTTP history answer holds at most about 4 MiB of payload (docs/PROTOCOL.md "HTTP",
History), whatever `limit` asks for, and never skips: the next page starts where it stopped.

- 1,000,000-byte messages: 4 per answer (a 5th would pass 4 MiB); 800,000-byte ones: 5 (a 6th
  would), so the cap is about 4 MiB, not a smaller one;
- paging with from = last seq + 1 reads every message exactly once, in order;
- a single message above the cap still comes, alone (an answer always holds at least one
  message when one exists).
"""

import base64
import os
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402

MiB = 1 << 20


class HistoryCap(h.WsqdTestCase):
    # room for a message above the history cap (raw mode: the frame is the payload)
    EXTRA_YAML = "limits:\n  max_message_size: 6MiB\n  max_http_body: 6MiB\n"

    def page(self, topic, frm):
        st, _, body = self.wsqd.history(topic, "?from=%d&limit=1000" % frm)
        self.assertEqual(st, 200, body)
        return body

    def fill(self, topic, n, size):
        for i in range(1, n + 1):
            payload = (b"%07d" % i) + b"x" * (size - 7)
            st, _, body = self.wsqd.post(topic, payload, "text/plain")
            self.assertEqual((st, body.get("seq")), (200, i), body)

    def test_pages_of_about_4_mib(self):
        for topic, size, per_page in (("cap.m", 1000000, 4), ("cap.k", 800000, 5)):
            self.fill(topic, 11, size)
            seen, frm, pages = [], 1, []
            while True:
                body = self.page(topic, frm)
                msgs = body["messages"]
                if not msgs:
                    break
                total = sum(len(m["data"]) for m in msgs)
                self.assertLessEqual(total, 4 * MiB, "%s: a page of %d bytes" % (topic, total))
                pages.append(len(msgs))
                seen += [(m["seq"], m["data"][:7]) for m in msgs]
                frm = msgs[-1]["seq"] + 1
            self.assertEqual(seen, [(i, "%07d" % i) for i in range(1, 12)], topic)
            full = 11 // per_page
            self.assertEqual(pages, [per_page] * full + [11 - full * per_page], topic)

    def test_one_message_above_the_cap_comes_alone(self):
        d = self.wsqd
        big = b"b" * (5 * MiB)

        async def go():
            ws = await h.connect_raw(d, "/topics/cap.big")
            await ws.send(b"small")
            await ws.send(big)
            await ws.send(b"after")
            await ws.close()
        h.run(go())
        h.wait_until(lambda: self.page("cap.big", 1)["next_seq"] == 4, 10, "3 messages stored")
        self.assertEqual([m["seq"] for m in self.page("cap.big", 1)["messages"]], [1])
        body = self.page("cap.big", 2)
        self.assertEqual([m["seq"] for m in body["messages"]], [2])
        self.assertEqual(len(base64.b64decode(body["messages"][0]["data"])), 5 * MiB)
        self.assertEqual([m["seq"] for m in self.page("cap.big", 3)["messages"]], [3])


if __name__ == "__main__":
    h.main()
