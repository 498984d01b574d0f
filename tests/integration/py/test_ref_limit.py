#!/usr/bin/python3
"""The wsq.v1 `ref` limit (docs/PROTOCOL.md "wsq.v1", common members): a string or integer of
at most 128 bytes of JSON text; longer is `bad_request` (and the err carries no ref: it could
not be read), another type is `bad_type`. The reply carries the same value.

Checked at the boundary (128 bytes accepted, 129 refused) on `pub` (which wsqd reads on a fast
path) and on `ping` and `sub` (the general decoder), with ASCII and with 2-byte UTF-8 characters
(bytes, not characters, count). The connection goes on after each refusal, and a refused pub
stores nothing.
"""

import os
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402

MAX = 128


def ref_of(json_len, char="r"):
    """A string ref whose JSON text (with its quotes, compact) is json_len bytes."""
    width = len(char.encode())
    assert (json_len - 2) % width == 0
    return char * ((json_len - 2) // width)


class RefLimit(h.WsqdTestCase):

    def exchange(self, frames):
        """Sends each frame, reads one answer for each: -> [answer]."""
        async def go():
            ws = await h.connect_v1(self.wsqd)
            out = []
            for f in frames:
                await h.send_json(ws, f)
                out.append(await h.recv_json(ws))
            # still usable
            await h.send_json(ws, {"op": "ping", "ref": "alive"})
            out.append(await h.recv_json(ws))
            await ws.close()
            return out
        *answers, alive = h.run(go())
        self.assertEqual(alive, {"op": "pong", "ref": "alive"})
        return answers

    def test_128_bytes_accepted_129_refused(self):
        for char in ("r", "\u00e9"):
            at, over = ref_of(MAX, char), ref_of(MAX + 1 + (len(char.encode()) - 1), char)
            with self.subTest(char=char):
                a = self.exchange([
                    {"op": "pub", "topic": "ref.t", "data": "at", "ref": at},
                    {"op": "pub", "topic": "ref.t", "data": "over", "ref": over},
                    {"op": "ping", "ref": at},
                    {"op": "ping", "ref": over},
                    {"op": "sub", "topic": "ref.s", "ref": at},
                    {"op": "sub", "topic": "ref.u", "ref": over},
                ])
                self.assertEqual((a[0]["op"], a[0]["ref"]), ("ok", at), a[0])
                self.assertEqual((a[2]["op"], a[2]["ref"]), ("pong", at), a[2])
                self.assertEqual((a[4]["op"], a[4]["ref"]), ("subscribed", at), a[4])
                for x in (a[1], a[3], a[5]):
                    self.assertEqual((x["op"], x["code"], "ref" in x), ("err", "bad_request",
                                                                        False), x)
                    self.assertIn("128 bytes", x["message"])
        st, _, hist = self.wsqd.history("ref.t")
        self.assertEqual([m["data"] for m in hist["messages"]], ["at", "at"])

    def test_integer_refs_and_other_types(self):
        big = 2 ** 63 - 1
        a = self.exchange([
            {"op": "pub", "topic": "ref.i", "data": "x", "ref": big},
            {"op": "ping", "ref": -big - 1},
            {"op": "ping", "ref": 1.5},
            {"op": "ping", "ref": ["a"]},
            {"op": "ping", "ref": None},
        ])
        self.assertEqual((a[0]["op"], a[0]["ref"]), ("ok", big))
        self.assertEqual((a[1]["op"], a[1]["ref"]), ("pong", -big - 1))
        for x in a[2:]:
            self.assertEqual((x["op"], x["code"], "ref" in x), ("err", "bad_type", False), x)


if __name__ == "__main__":
    h.main()
