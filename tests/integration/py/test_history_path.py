#!/usr/bin/python3
"""Topic names may contain `/`, and routing goes by method (docs/PROTOCOL.md "HTTP"): a POST
publishes to everything after /topics/; a GET must end in /messages and reads the history of
what precedes it. So `GET /topics/a/messages/messages` is the history of topic `a/messages`,
not of `a`.

Three topics whose names differ only by trailing `/messages` segments hold different messages;
each history path must answer with its own topic, and raw mode and wsq.v1 name the same topics.
A GET without /messages, and other methods, answer 405.
"""

import os
import sys

sys.dont_write_bytecode = True   # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsqharness as h  # noqa: E402

TOPICS = {"a": "in a", "a/messages": "in a/messages", "a/messages/messages": "in a/m/m"}


class HistoryPath(h.WsqdTestCase):

    def test_the_last_messages_segment_is_the_endpoint(self):
        d = self.wsqd
        for topic, data in TOPICS.items():
            st, _, body = d.post(topic, data)
            self.assertEqual((st, body), (200, {"seq": 1, "topic": topic}))
        for topic, data in TOPICS.items():
            st, _, body = d.http_json("GET", "/topics/%s/messages" % topic)
            self.assertEqual(st, 200, body)
            self.assertEqual(body["topic"], topic)
            self.assertEqual([(m["topic"], m["data"]) for m in body["messages"]],
                             [(topic, data)], "GET /topics/%s/messages" % topic)
        # a/messages/messages/messages/messages: the history of a/messages/messages/messages,
        # which does not exist
        st, _, body = d.http_json("GET", "/topics/a/messages/messages/messages/messages")
        self.assertEqual((st, body["error"]["code"]), (404, "not_found"), body)

    def test_raw_and_wsq_v1_name_the_same_topic(self):
        d = self.wsqd

        async def go():
            raw = await h.connect_raw(d, "/topics/a/messages?from=earliest")
            v1 = await h.connect_v1(d)
            await h.send_json(v1, {"op": "sub", "topic": "a/messages", "from": "earliest",
                                   "ref": 1})
            await h.expect_op(v1, "subscribed")
            await raw.send("published raw")       # to topic a/messages
            got_raw = await h.recv(raw)
            got_v1 = await h.expect_op(v1, "msg")
            await raw.close()
            await v1.close()
            return got_raw, got_v1

        got_raw, got_v1 = h.run(go())
        self.assertEqual(got_raw, "published raw")
        self.assertEqual((got_v1["topic"], got_v1["data"]), ("a/messages", "published raw"))
        st, _, body = d.history("a/messages")
        self.assertEqual([m["data"] for m in body["messages"]], ["published raw"])
        self.assertEqual(d.history("a")[0], 404)   # nothing went to a

    def test_get_without_messages_and_other_methods_405(self):
        d = self.wsqd
        d.publish("a/messages", "x")
        for method, path in (("GET", "/topics/a/messages/x"), ("GET", "/topics/a"),
                             ("PUT", "/topics/a/messages/messages"),
                             ("DELETE", "/topics/a/messages/messages")):
            st, _, body = d.http_json(method, path)
            self.assertEqual((st, body["error"]["code"]), (405, "bad_request"),
                             "%s %s: %r" % (method, path, body))


if __name__ == "__main__":
    h.main()
