#!/usr/bin/python3
"""Chaos under load: kill -9 wsqd at random moments while a mixed load runs, and prove that
nothing confirmed is lost, changed, reordered or given a reused seq.

Usage:
    /usr/bin/python3 tests/chaos/chaos.py WSQD WSQCTL [--cycles N] [--seconds S] [--seed K] ...

    ctest (label chaos):    chaos.short  = --cycles 20 --seconds 60 --seed 1
    a longer run by hand:   /usr/bin/python3 tests/chaos/chaos.py build/bin/wsqd \\
                                build/bin/wsqctl --cycles 100 --seconds 600 --seed 7
                            (--rate 0: publish as fast as the clients can; add --catchup 90,
                            the consumers then need longer to catch up at a checkpoint)
    no kills (soak load):   ... --cycles 0 --seconds 1800 --retention 20000 --info FILE
                            (tools/soak.sh drives this and samples the broker)

It starts one real wsqd (storage.sync full, limits.ack_wait 0, a fixed loopback port so that the
clients reconnect to the same address, anonymous clients with every right) on a temp data dir,
and runs, all in one asyncio loop:

- wsq.v1 publishers (--publishers) with up to --pub-window confirms outstanding (`pub` with a
  ref); every `ok` is a confirmed (topic, seq, payload);
- HTTP publishers (--http-publishers): POST /topics/T, a 200 {"seq":N} is the confirm;
- durable consumers (--consumers per topic, wsq.v1): random windows, acks individual (`seq`) and
  cumulative (`upto`), and at random they close (gracefully or by dropping the TCP connection)
  and resume;
- `wsqctl --url ... purge T --before S` (and now and then `--all`) through the admin endpoint;
- one topic (chaos.ret) with retention max_messages (--ret-max), so retention gaps happen too;
- a work queue (chaos.sh, purged too): one shared consumer `workers` (`"shared": true`) with
  --shared-members member sessions, each with a random window; they ack every seq on its own,
  now or a few at a time a little later, and leave at random (close, or TCP abort, holding
  unacknowledged messages that then go to the other members) and join again;
- dead letters (chaos.dl, a retention rule with max_deliver --max-deliver, never purged): the
  exclusive consumer `dlx` and the shared consumer `dlw` (--dl-members members), which behave
  like the members above but give a deterministic subset of the messages up, a pure function of
  (seed, consumer, message): --dl-term of them with `nack` `"term": true`, --dl-poison with a
  plain `nack` every time they come, until max_deliver sends them to chaos.dl.dlq.

Every message (its topic, type and bytes) is a pure function of (seed, publisher, n), so any
delivered or stored payload is checked byte-exact against what was sent, without keeping
payloads. The random choices of every actor and the kill schedule come from --seed (the timing
of a real broker is not deterministic, the decisions are).

Each of the --cycles cycles: run the load for a random time (the cycles spread over
--seconds), kill -9 wsqd, and with wsqd down:
- `wsqctl --data DIR check` must pass (exit 0, no violation);
- `wsqctl --data DIR topics` + `export`: every confirmed message is in the store, byte-exact, at
  its confirmed seq, unless a purge or retention removed it (a removed range is always a prefix
  below first_seq, and first_seq - 1 may not pass what purges (`purged_upto`, checked against the
  purges we ran) and retention (next_seq - 1 - max_messages) allow); the stored seqs are
  contiguous, ts never decreases, next_seq is above every confirmed seq (no seq can be reused);
then restart wsqd on the same data dir and wait until every consumer has caught up with what was
confirmed before the kill, and check:
- every confirmed message that no purge/retention removed was delivered to every consumer of its
  topic, byte-exact (duplicates allowed: at-least-once);
- within a session, deliveries come in strictly increasing seq order, and a `gap` comes before
  the first message after its range;
- a `gap` covers only seqs a purge or retention removed, and its reason names a cause that
  applies (`retention` on a topic without retention is wrong); a gap over a confirmed message
  that nothing removed is a loss;
- publishers get their confirms in publish order, each topic's seqs increasing;
- a (topic, seq) never shows two different payloads, and one publish never appears at two seqs;
- consumers resume where they acked: within one broker run (no kill in between), a message whose
  ack was sent on a gracefully closed session is never delivered again. Acks are persisted
  lazily, so an ack sent shortly before a kill may be lost and the message redelivered: allowed,
  counted (`lost acks`) and its age reported.

The groups (chaos.sh/workers, chaos.dl/dlx and chaos.dl/dlw), at every delivery:
- shared ones: a message is in flight at one live member at a time: within one broker run it is
  never delivered to a member while another member session (or the same one) holds it
  unacknowledged and is alive (we did not close or drop it: ack_wait is 0, so nothing else
  moves it), nor after a member sent its ack on a session that is alive; and, as for the
  exclusive consumers, never after its ack was sent on a session closed gracefully;
- wsqd never closes a member session by itself;
- first deliveries (no `deliveries`) come in increasing seq order within a session, except a
  message handed to a member that left before it was written to that member's socket (wsqd takes
  it back with its count): only possible above the highest first delivery of a session that
  ended in the same broker run, and counted;
- within one broker run a message's `deliveries` only grows, and on chaos.dl never passes
  max_deliver;
and at every checkpoint: every confirmed message no purge removed reached one of the members
(the union of their deliveries and gaps covers it; at-least-once across kills).
Dead letters: a `dead` frame is only sent after its copy is committed, so it must name a copy
in the store at the next kill; a message a consumer gave up must never be delivered to it again
once its copy is known (from a `dead` frame, the history of chaos.dl.dlq read while wsqd runs,
or the store after a kill: the copy and the consumer's acknowledgement are one transaction, so
a copy without the ack is never found), and must not be skipped either: every message a chaos.dl
consumer gives up must reach chaos.dl.dlq by the checkpoint after it was confirmed (otherwise
it is reported with its history), and with wsqd down every such seq at or below the consumer's
stored ack floor must have its copy (an ack without its copy is never found). Every copy is
checked once, from history or `wsqctl export`: the payload byte-exact, exactly the headers
wsq-dead-topic, -seq, -consumer, -deliveries and -reason in that order (we publish no headers);
reason `term` only for a message that consumer terms, with the deliveries it was termed at;
`max_deliver` with deliveries = max_deliver (a message the consumer acks or terms may get there
too when its sessions drop, or kills lose its acks, max_deliver times: counted); at most one
copy per (seq, consumer) over the whole run (a second copy would mean the consumer got the
message again after its copy and ack were committed); the dlq never loses or changes a copy,
its seqs stay 1..N.
At the end the load stops, consumers drain, the members of the groups stay until nothing is in
flight, wsqd is stopped with SIGTERM (exit 0) and the store is checked once more; then every
group's stored ack floor must be its topic's last seq (everything acknowledged or dead-lettered).
Counts are printed: confirmed, delivered, redelivered, lost (must be 0), the groups' deliveries
per member, redeliveries, take-overs between members, dead letters by reason.
A run must also reach its minimums (--min-kills, --min-confirmed, --min-delivered, --min-shared
deliveries to chaos.sh's shared consumer, --min-dead dead letters, and at least one delivery to
every durable consumer and every member, one dead letter of each chaos.dl consumer and of each
reason, one confirmed HTTP publish): a run in which next to nothing happened proves nothing,
and fails.
Exit status 0 when no violation was found, 1 otherwise.
"""

import argparse
import asyncio
import base64
import bisect
import hashlib
import json
import os
import random
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration", "py"))
import wsqharness as h  # noqa: E402
import websockets  # noqa: E402
import websockets.exceptions  # noqa: E402

TOPICS = ["chaos.a", "chaos.b", "chaos/c", "chaos.ret"]
RET_TOPIC = "chaos.ret"
SHARED_TOPIC = "chaos.sh"       # one shared consumer (--shared-members members)
DL_TOPIC = "chaos.dl"           # consumers that give messages up (max_deliver, nack term)
DLQ_TOPIC = DL_TOPIC + ".dlq"   # its dead-letter topic (the default template "{topic}.dlq")
DEAD_HEADERS = ["wsq-dead-topic", "wsq-dead-seq", "wsq-dead-consumer", "wsq-dead-deliveries",
                "wsq-dead-reason"]
TEXT_ALPHABET = ("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:,;!?"
                 "\"\\/\n\t\r\x01\x1f\x7f{}[]" "\u00e9\u00fc\u20ac\u4e2d\U0001f600")

VIOLATION_LIMIT = 200   # stop printing (not counting) after this many


def log(msg):
    sys.stderr.write("[chaos %7.2f] %s\n" % (time.monotonic() - T0, msg))
    sys.stderr.flush()


T0 = time.monotonic()


# -- messages: a pure function of (seed, publisher, n) ---------------------------------------

def _stream(key, nbytes):
    out = bytearray()
    i = 0
    while len(out) < nbytes:
        out += hashlib.blake2b(key + i.to_bytes(4, "little"), digest_size=64).digest()
        i += 1
    return bytes(out[:nbytes])


MAX_PAYLOAD = 0   # --max-payload: 0 = the full mix above; else sizes are taken modulo it


def make_message(seed, pub, n, topics):
    """-> (topic, binary, payload bytes). The payload starts with b"PUB:N:"."""
    key = b"%d/%d/%d" % (seed, pub, n)
    d = hashlib.blake2b(key, digest_size=16).digest()
    topic = topics[d[0] % len(topics)]
    binary = d[1] % 3 == 0
    if d[2] == 0 and d[3] < 16:
        size = 66000 + d[4] * 17              # above 64 KiB: fragmented delivery (1 in 4096)
    elif d[2] < 24:
        size = (d[3] << 4 | d[4] >> 4) % 4000  # up to 4 KB (about 1 in 11)
    else:
        size = d[3] % 200
    if MAX_PAYLOAD and size > MAX_PAYLOAD:
        size %= MAX_PAYLOAD
    head = b"%d:%d:" % (pub, n)
    body = _stream(key, size)
    if binary:
        return topic, True, head + body
    text = "".join(TEXT_ALPHABET[b % len(TEXT_ALPHABET)] for b in body)
    return topic, False, head + text.encode("utf-8")


def dl_action(seed, consumer, msgid, p_term, p_poison):
    """What consumer `consumer` of chaos.dl does with message msgid, a pure function of them:
    "term" (nack with term: give it up at once), "poison" (nack it every time: max_deliver
    sends it to the dead-letter topic) or "ack"."""
    d = hashlib.blake2b(b"dl/%d/%s/%d/%d" % (seed, consumer.encode(), msgid[0], msgid[1]),
                        digest_size=8).digest()
    x = int.from_bytes(d[:4], "little") / 2.0 ** 32
    if x < p_term:
        return "term"
    if x < p_term + p_poison:
        return "poison"
    return "ack"


def parse_msgid(payload):
    parts = payload.split(b":", 2)
    if len(parts) < 3:
        return None
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return None


# -- the model -------------------------------------------------------------------------------

class Topic:
    def __init__(self, name, ret_max):
        self.name = name
        self.ret_max = ret_max           # retention max_messages (0: none)
        self.seq_owner = {}              # seq -> msgid, from confirms, deliveries, the store
        self.msg_seq = {}                # msgid -> seq
        self.confirmed = {}              # seq -> msgid (confirmed only)
        self.max_confirmed = 0
        self.max_seen = 0                # highest seq known to exist
        self.purge_bound = 0             # highest seq a purge (done or maybe done) removed
        self.pruned = 0                  # records at or below were dropped (all verified)
        self.prev_mark = 0
        self.purge_uncertain = False     # a purge was cut off by a kill (outcome unknown)
        self.purge_all_inflight = False  # a purge --all runs (its bound is not known yet)
        self.purge_inflight = False      # any purge runs
        self.consumers = []

    def removal_bound(self):
        b = self.purge_bound
        if self.ret_max:
            b = max(b, self.max_seen - self.ret_max)
        return b


class Consumer:
    def __init__(self, topic, name, rng):
        self.topic = topic
        self.name = name
        self.rng = rng
        self.got = set()                 # seqs delivered at least once
        self.gaps = []                   # (from, to, reason, time) received
        self.gaps_checked = 0
        self.cover = []                  # merged gap intervals, sorted [(from, to)]
        self.high = 0                    # highest seq delivered or covered by a gap
        self.verified = 0                # checked up to here at a checkpoint
        # acks sent: certain = the session was closed gracefully, so wsqd read them
        self.acked = {}                  # seq -> (gen, certain, monotonic time)
        self.upto = (0, False, 0, 0.0)   # (gen, certain, seq, time): highest cumulative ack
        self.final_wait = False
        self.delivered = 0
        self.redelivered = 0
        self.sessions = 0
        self.group = False               # a Group (below): driven by member sessions

    def add_gap(self, frm, to):
        i = bisect.bisect_left(self.cover, (frm, to))
        self.cover.insert(i, (frm, to))
        merged = []
        for a, b in self.cover:
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self.cover = merged

    def covered(self, seq):
        if seq in self.got:
            return True
        i = bisect.bisect_right(self.cover, (seq, float("inf"))) - 1
        return i >= 0 and self.cover[i][0] <= seq <= self.cover[i][1]

    def acked_certain(self, seq, gen):
        """Was an ack for seq sent in broker run gen on a session closed gracefully?"""
        a = self.acked.get(seq)
        if a and a[0] == gen and a[1]:
            return True
        return self.upto[0] == gen and self.upto[1] and seq <= self.upto[2]

    def last_ack(self, seq):
        """(gen, certain, time) of the latest ack sent that covers seq, or None."""
        t = self.acked.get(seq)
        if seq <= self.upto[2] and (t is None or self.upto[3] > t[2]):
            t = (self.upto[0], self.upto[1], self.upto[3])
        return t


class PairsDict(dict):
    """A JSON object that also keeps its members in order, duplicates included (headers)."""

    def __init__(self, pairs):
        super().__init__(pairs)
        self.pairs = pairs


class Group(Consumer):
    """A durable consumer driven by member sessions: the shared consumer of chaos.sh (members
    ack every seq), or a consumer of chaos.dl that gives a deterministic subset up (dead=True;
    exclusive with one member, or shared). got/cover/gaps are the union over its members."""

    def __init__(self, topic, name, rng, shared, members, dead):
        super().__init__(topic, name, rng)
        self.group = True
        self.shared = shared
        self.nmembers = members
        self.dead = dead
        self.member_delivered = [0] * members
        self.member_sessions = [0] * members
        self.live = set()                # its sessions now open
        self.holder = {}                 # seq -> (Session, "held"|"acked"|"nacked"), shared
        self.last_count = {}             # seq -> (gen, deliveries) of its latest delivery
        self.ended_min = {}              # gen -> lowest max_first of a session ended in it
        self.taken_back = 0              # count-1 deliveries out of order after a member left
        self.last_activity = 0.0         # monotonic time of its latest delivery/ack/dead frame
        self.acks = self.nacks = self.terms = 0
        self.member_graceful = self.member_aborted = 0
        # dead letters (dead=True)
        self.dl_seqs = {}                # seq -> "term"|"poison": this consumer gives it up
        self.dl_open = set()             # of dl_seqs: no dead letter known yet
        self.dl_reported = set()         # of dl_seqs: reported as never dead-lettered
        self.term_counts = {}            # seq -> {deliveries of the deliveries we termed}
        self.dead_known = {}             # seq -> how we know its dead letter exists
        self.dead_frames = {}            # seq -> (gen, dead_seq) of its `dead` frame
        self.frames_unchecked = []       # (seq, dead_seq, gen): to find in the store
        self.copies = 0                  # dead letters of it in the store (last inspection)
        self.trace = {}                  # seq -> [events] (for reports; pruned with the rest)
        self.sess_log = {}               # session id -> [gen, member, start, end, how]

    def note(self, seq, what):
        """Remember an event of seq (printed with a violation about it)."""
        ev = self.trace.setdefault(seq, [])
        if len(ev) < 40:
            ev.append("%.3f %s" % (time.monotonic() - T0, what))

    def history(self, seq):
        ev = self.trace.get(seq, [])
        ids = set(int(m.group(1)) for e in ev for m in re.finditer(r"session (\d+)", e))
        out = ["    " + e for e in ev]
        for i in sorted(ids):
            gen, idx, t0, t1, how = self.sess_log.get(i, (None,) * 5)
            out.append("    session %d: member %s, gen %s, %.3f-%s %s"
                       % (i, idx, gen, (t0 or 0) - T0, "%.3f" % (t1 - T0) if t1 else "open",
                          how or ""))
        return "\n".join(out)

    def label(self, idx=None):
        return "%s/%s%s" % (self.topic.name, self.name, "" if idx is None else "[%d]" % idx)


class Session:
    """One member session of a Group."""

    def __init__(self, g, idx, gen):
        self.g = g
        self.idx = idx
        self.gen = gen
        self.state = "open"              # open -> closing (we close) / aborted (we drop) / ...
        self.subscribed = False
        self.held = {}                   # seq -> time: delivered, no ack/nack sent yet
        self.max_first = 0               # highest seq delivered with deliveries 1
        self.n = 0                       # its deliveries
        self.window = 0
        self.last_msg = 0.0              # monotonic time of its latest delivery
        g.sessions += 1
        self.id = g.sessions
        g.sess_log[self.id] = [gen, idx, time.monotonic(), None, None]


class Chaos:
    def __init__(self, args):
        self.a = args
        self.seed = args.seed
        self.rng = random.Random("kill/%d" % args.seed)
        self.topics = {}
        names = list(TOPICS)
        if args.shared_members > 0:
            names.append(SHARED_TOPIC)
        if args.max_deliver > 0:
            names.append(DL_TOPIC)
        for name in names:
            ret = args.ret_max if name == RET_TOPIC else args.retention
            if name == DL_TOPIC:
                ret = 0   # never trimmed (nor purged): every message it gives up must be found
            self.topics[name] = Topic(name, ret)
        self.topic_names = names
        # chaos.dl is never purged: a message its consumers give up is always in the dlq
        self.purge_topics = [n for n in names if n != DL_TOPIC]
        self.groups = []                     # the Group consumers (chaos.sh, chaos.dl)
        self.final_quiet = False             # the end: members stay, ack and drain
        self.dlq_store = {}                  # dlq seq -> (consumer, seq, reason, deliveries)
        self.dlq_next = 1                    # its next_seq at the last inspection
        self.dlq_pairs = {}                  # (consumer, seq) -> [dlq seqs]
        self.dup_reported = set()
        self.gen = 0                         # broker run number (bumped at each restart)
        self.kill_times = {}                 # gen -> monotonic time it was killed
        self.up = asyncio.Event()            # the broker is up (clients may connect)
        self.stop_load = False
        self.stop_all = False
        self.purge_lock = asyncio.Lock()
        self.violations = []
        self.lost = set()
        self.counts = dict(confirmed=0, confirmed_ws=0, confirmed_http=0, unknown=0,
                           pub_errors=0, purges=0, purges_uncertain=0, purged_msgs=0, kills=0,
                           gaps_purge=0, gaps_retention=0, lost_acks=0, dropped_acks=0,
                           consumer_errs=0,
                           store_msgs_checked=0, sessions_graceful=0, sessions_aborted=0,
                           http_publishes=0, holder_checks=0, holder_moves=0, dead_frames=0,
                           dlq_term=0, dlq_max_deliver=0, dlq_acked_class=0,
                           dlq_term_class_by_count=0, floor_checks=0)
        self.max_lost_ack_age = 0.0
        self.lost_ack_ages = []
        self.d = None

    # -- violations --------------------------------------------------------------------------

    def violation(self, what):
        self.violations.append(what)
        if len(self.violations) <= VIOLATION_LIMIT:
            log("VIOLATION: " + what)

    # -- the seq <-> message registry ----------------------------------------------------------

    def register(self, t, seq, msgid, source):
        """A (topic, seq) was seen holding msgid (confirm, delivery or the store)."""
        if seq <= 0:
            self.violation("%s: %s gave seq %d" % (t.name, source, seq))
            return
        if seq > t.max_seen:
            t.max_seen = seq
        if t.name == DL_TOPIC:
            # the consumers that give this message up: it must reach the dead-letter topic
            for g in t.consumers:
                if g.group and g.dead and seq not in g.dl_seqs:
                    what = dl_action(self.seed, g.name, msgid, self.a.dl_term, self.a.dl_poison)
                    if what != "ack":
                        g.dl_seqs[seq] = what
                        if seq not in g.dead_known:
                            g.dl_open.add(seq)
        if seq <= t.pruned:
            if source == "confirm":
                self.violation("%s: confirm of seq %d, at or below seqs already verified "
                               "(seq reused?) msg %r" % (t.name, seq, msgid))
            return
        old = t.seq_owner.get(seq)
        if old is None:
            t.seq_owner[seq] = msgid
        elif old != msgid:
            self.violation("%s: seq %d holds message %r, earlier %r (seq reused or payload "
                           "changed; seen via %s)" % (t.name, seq, msgid, old, source))
        prev = t.msg_seq.get(msgid)
        if prev is None:
            t.msg_seq[msgid] = seq
        elif prev != seq:
            self.violation("%s: message %r at seq %d, earlier at seq %d (one publish stored "
                           "twice; via %s)" % (t.name, msgid, seq, prev, source))

    def check_payload(self, t, seq, binary, payload, source):
        """A delivered or stored payload: must be what its publisher sent, to this topic."""
        msgid = parse_msgid(payload)
        if msgid is None:
            self.violation("%s seq %d (%s): payload not from this test: %r"
                           % (t.name, seq, source, payload[:80]))
            return None
        topic, want_bin, want = make_message(self.seed, msgid[0], msgid[1], self.topic_names)
        if topic != t.name:
            self.violation("%s seq %d (%s): message %r was published to %s"
                           % (t.name, seq, source, msgid, topic))
        if want != payload or want_bin != binary:
            self.violation("%s seq %d (%s): payload of %r differs (binary %s/%s, %d/%d bytes)"
                           % (t.name, seq, source, msgid, binary, want_bin, len(payload),
                              len(want)))
        self.register(t, seq, msgid, source)
        return msgid

    def confirm(self, msgid, topic, seq, via):
        t = self.topics[topic]
        self.register(t, seq, msgid, "confirm")
        if seq > t.pruned:
            if seq in t.confirmed and t.confirmed[seq] != msgid:
                pass  # reported by register
            t.confirmed[seq] = msgid
        if seq > t.max_confirmed:
            t.max_confirmed = seq
        self.counts["confirmed"] += 1
        self.counts["confirmed_" + via] += 1

    # -- the broker ------------------------------------------------------------------------------

    def make_broker(self):
        port = h.free_port()   # fixed: the clients reconnect to the same address
        rules = []
        for name, t in self.topics.items():
            if t.ret_max:
                rules.append("    - pattern: \"%s\"\n      max_messages: %d\n" % (name, t.ret_max))
            if name == DL_TOPIC:
                rules.append("    - pattern: \"%s\"\n      max_deliver: %d\n"
                             % (name, self.a.max_deliver))
        extra = "limits:\n  ack_wait: 0\n  max_window: 10000\n"
        if rules:
            extra += "retention:\n  topics:\n" + "".join(rules)
        self.d = h.Wsqd(binary=self.a.wsqd, extra_yaml=extra, sync="full", log_level="info",
                        port=port)
        self.port = port
        self.url = "http://127.0.0.1:%d" % port

    async def start_broker(self):
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.d.start)
        self.started_at = time.monotonic()
        if self.a.info:
            tmp = self.a.info + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"pid": self.d.pid, "port": self.d.port, "data": self.d.data,
                           "conf": self.d.conf, "log": self.d.log_path, "gen": self.gen}, f)
            os.replace(tmp, self.a.info)
        self.up.set()

    # -- wsqctl ----------------------------------------------------------------------------------

    async def ctl(self, *args, timeout=60.0):
        p = await asyncio.create_subprocess_exec(
            self.a.wsqctl, *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(p.communicate(), timeout * h.SLOW)
        except asyncio.TimeoutError:
            p.kill()
            await p.wait()
            raise AssertionError("wsqctl %s: no answer within %.0fs" % (" ".join(args), timeout))
        return p.returncode, out, err.decode("utf-8", "replace")

    # -- publishers ------------------------------------------------------------------------------

    async def ws_publisher(self, pub):
        rng = random.Random("pub/%d/%d" % (self.seed, pub))
        n = 0
        rate = self.a.rate / max(1, self.a.publishers + self.a.http_publishers * 0.2)
        while not self.stop_load:
            await self.up.wait()
            try:
                ws = await h.connect_v1(self.d, open_timeout=5 * h.SLOW)
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException):
                await asyncio.sleep(0.05)
                continue
            inflight = {}
            last_seq = {}
            window = rng.choice([1, 4, 16, self.a.pub_window])
            room = asyncio.Event()
            room.set()
            dead = False

            async def reader():
                nonlocal dead
                try:
                    async for frame in ws:
                        f = json.loads(frame)
                        ref = f.get("ref")
                        if ref not in inflight:
                            self.violation("publisher %d: frame for unknown ref: %r"
                                           % (pub, frame[:200]))
                            continue
                        first = next(iter(inflight))
                        if ref != first:
                            self.violation("publisher %d: answer for ref %r before ref %r "
                                           "(confirms out of publish order)"
                                           % (pub, ref, first))
                        msgid, topic = inflight.pop(ref)
                        room.set()
                        if f["op"] == "ok":
                            if f.get("topic") != topic:
                                self.violation("publisher %d: ok for %r names topic %r, sent "
                                               "to %r" % (pub, msgid, f.get("topic"), topic))
                            seq = f["seq"]
                            if seq <= last_seq.get(topic, 0):
                                self.violation("publisher %d: confirms out of order on %s: "
                                               "%d after %d" % (pub, topic, seq,
                                                                last_seq[topic]))
                            last_seq[topic] = seq
                            self.confirm(msgid, topic, seq, "ws")
                        else:
                            self.counts["pub_errors"] += 1
                            self.violation("publisher %d: publish %r refused: %r"
                                           % (pub, msgid, frame[:200]))
                except (websockets.exceptions.ConnectionClosed, OSError):
                    pass
                finally:
                    dead = True
                    room.set()

            rt = asyncio.create_task(reader())
            try:
                while not self.stop_load and not dead:
                    if len(inflight) >= window:
                        room.clear()
                        await room.wait()
                        continue
                    n += 1
                    topic, binary, payload = make_message(self.seed, pub, n, self.topic_names)
                    m = {"op": "pub", "topic": topic, "ref": n}
                    if binary:
                        m["data"] = base64.b64encode(payload).decode()
                        m["enc"] = "base64"
                    else:
                        m["data"] = payload.decode("utf-8")
                    inflight[n] = ((pub, n), topic)
                    await ws.send(json.dumps(m, separators=(",", ":"), ensure_ascii=False))
                    if rate > 0:
                        await asyncio.sleep(rng.expovariate(rate))
                # stopping: wait for what is in flight (bounded)
                deadline = time.monotonic() + 10 * h.SLOW
                while inflight and not dead and time.monotonic() < deadline:
                    room.clear()
                    try:
                        await asyncio.wait_for(room.wait(), 0.5)
                    except asyncio.TimeoutError:
                        pass
            except (websockets.exceptions.ConnectionClosed, OSError):
                pass
            finally:
                if self.stop_load and not dead:
                    try:
                        await asyncio.wait_for(ws.close(), 5 * h.SLOW)
                    except Exception:
                        pass
                else:
                    ws.transport.abort()
                try:
                    await asyncio.wait_for(rt, 5 * h.SLOW)
                except Exception:
                    rt.cancel()
                self.counts["unknown"] += len(inflight)
                inflight.clear()
            if not self.stop_load:
                await asyncio.sleep(0.02)

    async def http_publisher(self, idx):
        pub = 1000 + idx
        rng = random.Random("http/%d/%d" % (self.seed, idx))
        n = 0
        rate = self.a.rate * 0.2 / max(1, self.a.publishers + self.a.http_publishers * 0.2)
        while not self.stop_load:
            await self.up.wait()
            n += 1
            topic, binary, payload = make_message(self.seed, pub, n, self.topic_names)
            ctype = b"application/octet-stream" if binary else b"text/plain; charset=utf-8"
            try:
                status, body = await self.http_post(topic, payload, ctype)
            except (OSError, asyncio.TimeoutError, ValueError):
                self.counts["unknown"] += 1
                await asyncio.sleep(0.05)
                continue
            self.counts["http_publishes"] += 1
            if status == 200:
                try:
                    obj = json.loads(body)
                    seq = obj["seq"]
                except (ValueError, KeyError):
                    self.violation("HTTP publish %r: 200 with body %r" % ((pub, n), body[:200]))
                    continue
                if obj.get("topic") not in (None, topic):
                    self.violation("HTTP publish %r: answer names topic %r" % ((pub, n), obj))
                self.confirm((pub, n), topic, seq, "http")
            else:
                self.counts["pub_errors"] += 1
                self.violation("HTTP publish %r to %s: status %d %r"
                               % ((pub, n), topic, status, body[:200]))
            if rate > 0:
                await asyncio.sleep(rng.expovariate(rate))

    async def http_post(self, topic, payload, ctype):
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port),
                                      5 * h.SLOW)
        try:
            req = (b"POST /topics/%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: %s\r\n"
                   b"Content-Length: %d\r\nConnection: close\r\n\r\n"
                   % (topic.encode(), self.port, ctype, len(payload)))
            w.write(req + payload)
            await w.drain()
            data = await asyncio.wait_for(r.read(), 15 * h.SLOW)
        finally:
            w.close()
        if b"\r\n\r\n" not in data:
            raise ValueError("no complete HTTP answer")
        head, body = data.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        # A kill between the head and the body leaves a head alone: its outcome is unknown,
        # like any answer cut short (curl says "transfer closed with N bytes remaining").
        m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        if m is None or len(body) < int(m.group(1)):
            raise ValueError("answer cut short")
        return status, body

    async def http_get(self, path):
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port),
                                      5 * h.SLOW)
        try:
            w.write(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"
                    % (path.encode(), self.port))
            await w.drain()
            data = await asyncio.wait_for(r.read(), 15 * h.SLOW)
        finally:
            w.close()
        if b"\r\n\r\n" not in data:
            raise ValueError("no complete HTTP answer")
        head, body = data.split(b"\r\n\r\n", 1)
        m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        if m is None or len(body) < int(m.group(1)):
            raise ValueError("answer cut short")
        return int(head.split(b" ", 2)[1]), body

    # -- purges ----------------------------------------------------------------------------------

    async def purger(self):
        rng = random.Random("purge/%d" % self.seed)
        while not self.stop_load:
            await asyncio.sleep(rng.uniform(0.3, 2.0 * self.a.purge_every))
            if self.stop_load:
                break
            await self.up.wait()
            name = rng.choice(self.purge_topics)
            t = self.topics[name]
            if rng.random() < 0.1:
                args = ["--all"]
                before = None
            else:
                lo = max(1, t.purge_bound + 1)
                hi = max(lo, t.max_confirmed - rng.randint(0, 300))
                before = rng.randint(lo, hi) if hi > lo else lo
                args = ["--before", str(before)]
            async with self.purge_lock:
                confirmed_before = t.max_confirmed
                if before is not None:
                    # it may take effect at any moment from now on
                    t.purge_bound = max(t.purge_bound, before - 1)
                else:
                    t.purge_all_inflight = True
                t.purge_inflight = True
                rc, out, err = await self.ctl("--url", self.url, "--json", "purge", name, *args)
                t.purge_all_inflight = t.purge_inflight = False
                try:
                    res = json.loads(out.decode("utf-8").strip().splitlines()[-1])
                except (ValueError, IndexError):
                    res = {}
                if rc == 0 and res.get("topic") == name:
                    self.counts["purges"] += 1
                    self.counts["purged_msgs"] += res.get("removed", 0)
                    if res.get("via") != "broker":
                        self.violation("purge went %r, not through the broker" % res.get("via"))
                    nxt = res["next_seq"]
                    first = res["first_seq"]
                    if nxt - 1 < confirmed_before:
                        self.violation("%s: purge answered next_seq %d, but seq %d was "
                                       "confirmed before it (next seq moved back)"
                                       % (name, nxt, confirmed_before))
                    t.max_seen = max(t.max_seen, nxt - 1)
                    if before is None:
                        t.purge_bound = max(t.purge_bound, nxt - 1)
                    elif first < before and first > 0 and first != nxt:
                        self.violation("%s: purge --before %d left first_seq %d"
                                       % (name, before, first))
                elif rc == 5 or res.get("error", {}).get("code") in ("unavailable",):
                    # the broker died under it: resolved from the store's purged_upto
                    self.counts["purges_uncertain"] += 1
                    t.purge_uncertain = True
                elif res.get("error", {}).get("code") == "not_found":
                    pass  # the topic does not exist yet
                else:
                    self.violation("wsqctl purge %s %s: exit %d %r %s"
                                   % (name, " ".join(args), rc, out[:300], err[:300]))

    # -- consumers -------------------------------------------------------------------------------

    async def consumer(self, c):
        rng = c.rng
        t = c.topic
        while not self.stop_all:
            await self.up.wait()
            gen = self.gen
            try:
                ws = await h.connect_v1(self.d, open_timeout=5 * h.SLOW)
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException):
                await asyncio.sleep(0.05)
                continue
            c.sessions += 1
            window = rng.choice([4, 16, 64, 256])
            every = max(1, min(window // 2, rng.choice([1, 3, 8, 32])))
            p_single = rng.choice([0.0, 0.3, 0.9])
            budget = rng.choice([20, 100, 500, 2000, 10 ** 9])
            graceful = rng.random() < 0.7
            # a slow reader now and then, so that purges and retention overtake it
            slow = rng.uniform(0.002, 0.02) if rng.random() < 0.25 else 0.0
            if slow:   # a short slow spell: it must catch up in its next sessions
                budget = min(budget, rng.choice([50, 200, 500]))
            sess_acks = {}                 # seq -> time (individual), this session
            sess_upto = (0, 0.0)
            last = 0                       # strict order within the session
            pending = []                   # delivered, not acked yet in this session
            msgs = 0
            subscribed = False
            closed_by_us = False
            try:
                await ws.send(json.dumps({"op": "sub", "topic": t.name, "consumer": c.name,
                                          "from": "earliest", "window": window, "ref": 1}))
                while not self.stop_all:
                    if msgs >= budget:
                        break
                    if self.stop_load and c.high >= t.max_confirmed and c.final_wait:
                        break
                    try:
                        frame = await asyncio.wait_for(ws.recv(), 0.2)
                    except asyncio.TimeoutError:
                        frame = None
                    if frame is None:
                        if pending:
                            up = max(pending)
                            await ws.send(json.dumps({"op": "ack", "topic": t.name,
                                                      "upto": up}))
                            sess_upto = (up, time.monotonic())
                            pending = []
                        continue
                    f = json.loads(frame)
                    op = f.get("op")
                    if op == "subscribed":
                        subscribed = True
                        st = f.get("start_seq", 0)
                        if f.get("first_seq", 0) > 0:
                            t.max_seen = max(t.max_seen, f.get("next_seq", 1) - 1)
                        if c.upto[0] == gen and c.upto[1] and st <= c.upto[2]:
                            self.violation("%s/%s: resumed at start_seq %d although upto %d was "
                                           "acked in this broker run"
                                           % (t.name, c.name, st, c.upto[2]))
                        continue
                    if op == "gap":
                        frm, to, reason = f["from"], f["to"], f.get("reason")
                        if frm > to:
                            self.violation("%s/%s: gap %r has from > to" % (t.name, c.name, f))
                        c.gaps.append((frm, to, reason, time.monotonic() - self.started_at,
                                       t.purge_inflight))
                        c.add_gap(frm, to)
                        c.high = max(c.high, to)
                        last = max(last, to)
                        continue
                    if op == "err":
                        self.counts["consumer_errs"] += 1
                        self.violation("%s/%s: err %r" % (t.name, c.name, frame[:300]))
                        continue
                    if op != "msg":
                        self.violation("%s/%s: unexpected frame %r" % (t.name, c.name,
                                                                       frame[:200]))
                        continue
                    seq = f["seq"]
                    msgs += 1
                    if not subscribed:
                        self.violation("%s/%s: msg before subscribed" % (t.name, c.name))
                    if f.get("topic") != t.name:
                        self.violation("%s/%s: msg of topic %r" % (t.name, c.name,
                                                                   f.get("topic")))
                    if seq <= last:
                        self.violation("%s/%s: seq %d delivered after %d in one session "
                                       "(order)" % (t.name, c.name, seq, last))
                    last = max(last, seq)
                    if f.get("enc") == "base64":
                        payload, binary = base64.b64decode(f["data"]), True
                    else:
                        payload, binary = f["data"].encode("utf-8"), False
                    self.check_payload(t, seq, binary, payload, "delivery to " + c.name)
                    c.delivered += 1
                    if seq in c.got:
                        c.redelivered += 1
                        if c.acked_certain(seq, gen):
                            self.violation("%s/%s: seq %d redelivered although its ack was "
                                           "sent in this broker run (gen %d) on a session "
                                           "closed gracefully" % (t.name, c.name, seq, gen))
                        else:
                            at = c.last_ack(seq)
                            if at is not None and at[0] < gen:
                                # acked before a kill, the ack was not persisted yet
                                self.counts["lost_acks"] += 1
                                kt = self.kill_times.get(at[0])
                                if kt is not None:
                                    age = kt - at[2]
                                    self.lost_ack_ages.append(age)
                                    self.max_lost_ack_age = max(self.max_lost_ack_age, age)
                            elif at is not None:
                                # acked on a session we dropped (TCP abort): the ack may
                                # never have reached wsqd
                                self.counts["dropped_acks"] += 1
                    else:
                        c.got.add(seq)
                    if seq > c.high:
                        c.high = seq
                    # ack: individually now, or cumulatively later
                    if rng.random() < p_single:
                        await ws.send(json.dumps({"op": "ack", "topic": t.name, "seq": seq}))
                        sess_acks[seq] = time.monotonic()
                    else:
                        pending.append(seq)
                    if slow:
                        await asyncio.sleep(slow)
                    if len(pending) >= every:
                        up = max(pending)
                        await ws.send(json.dumps({"op": "ack", "topic": t.name, "upto": up}))
                        sess_upto = (up, time.monotonic())
                        pending = []
                closed_by_us = True
            except (websockets.exceptions.ConnectionClosed, OSError):
                pass
            # end of the session
            ok_close = False
            if closed_by_us and graceful:
                try:
                    await asyncio.wait_for(ws.close(), 3 * h.SLOW)
                    ok_close = ws.close_code == 1000
                except Exception:
                    ok_close = False
            else:
                ws.transport.abort()
            # graceful: wsqd read every ack of this session before the close, so they are
            # certain; otherwise they may never have arrived (kept for the statistics only)
            certain = ok_close and self.gen == gen
            self.counts["sessions_graceful" if certain else "sessions_aborted"] += 1
            for s, tm in sess_acks.items():
                c.acked[s] = (gen, certain, tm)
            if sess_upto[0] > 0 and (sess_upto[0] > c.upto[2] or
                                     (sess_upto[0] == c.upto[2] and certain)):
                c.upto = (gen, certain, sess_upto[0], sess_upto[1])
            if not self.stop_all:
                # away for a while now and then (the backlog grows; gaps)
                away = rng.uniform(0.5, 3.0) if rng.random() < 0.15 else rng.uniform(0, 0.3)
                await asyncio.sleep(away)

    # -- group members (shared consumer, dead-lettering consumers) --------------------------------

    async def member(self, g, idx):
        """Member idx of group g: joins (shared) or resumes (exclusive), acks every seq
        individually (now or a little later), gives up the messages g's policy says (chaos.dl:
        nack term, or nack every time until max_deliver), and leaves at random (close or TCP
        abort) and comes back. Every delivery is checked by on_member_msg."""
        t = g.topic
        rng = random.Random("member/%d/%s/%s/%d" % (self.seed, t.name, g.name, idx))
        while not self.stop_all:
            await self.up.wait()
            gen = self.gen
            try:
                ws = await h.connect_v1(self.d, open_timeout=5 * h.SLOW)
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException):
                await asyncio.sleep(0.05)
                continue
            s = Session(g, idx, gen)
            g.member_sessions[idx] += 1
            g.live.add(s)
            window = rng.choice([1, 2, 8, 32, 128])
            s.window = window
            budget = rng.choice([10, 30, 100, 300, 1000])
            leave_at = time.monotonic() + rng.choice([0.3, 1.0, 3.0, 10.0]) * rng.random()
            graceful = rng.random() < 0.6
            # ack later, a few at a time: what a member holds when it leaves goes to the others
            p_hold = rng.choice([0.0, 0.5, 0.95, 1.0])
            hold_max = min(window, rng.choice([1, 4, 16]))   # (a full window waits for them)
            flush_on_close = rng.random() < 0.5
            to_ack = []
            sess_acks = {}                 # seq -> time: acks sent in this session
            closed_by_us = False
            broken = None                  # the close the broker (or a kill) made

            async def flush():
                for q in to_ack:
                    await ws.send(json.dumps({"op": "ack", "topic": t.name, "seq": q}))
                    self.acked_sent(g, s, q, sess_acks)
                del to_ack[:]

            try:
                sub = {"op": "sub", "topic": t.name, "consumer": g.name, "from": "earliest",
                       "window": window, "ref": 1}
                if g.shared:
                    sub["shared"] = True
                await ws.send(json.dumps(sub))
                while not self.stop_all:
                    if (s.n >= budget or time.monotonic() > leave_at) and not self.final_quiet:
                        break
                    try:
                        frame = await asyncio.wait_for(ws.recv(), 0.2)
                    except asyncio.TimeoutError:
                        frame = None
                    if frame is None:
                        if to_ack:
                            await flush()
                        continue
                    f = json.loads(frame)
                    op = f.get("op")
                    if op == "msg":
                        seq, what = self.on_member_msg(g, s, f)
                        if what == "ack":
                            if rng.random() < p_hold:
                                to_ack.append(seq)
                                if len(to_ack) >= hold_max:
                                    await flush()
                            else:
                                await ws.send(json.dumps({"op": "ack", "topic": t.name,
                                                          "seq": seq}))
                                self.acked_sent(g, s, seq, sess_acks)
                        elif what in ("term", "poison"):
                            m = {"op": "nack", "topic": t.name, "seq": seq}
                            if what == "term":
                                m["term"] = True
                                g.terms += 1
                            else:
                                g.nacks += 1
                            await ws.send(json.dumps(m))
                            g.note(seq, "session %d sent nack%s" % (s.id, " term" if what ==
                                                                   "term" else ""))
                            s.held.pop(seq, None)
                            if g.shared:
                                self.set_holder(g, s, seq, "nacked")
                        continue
                    if op == "subscribed":
                        s.subscribed = True
                        if bool(f.get("shared")) != g.shared:
                            self.violation("%s: subscribed says shared %r" % (g.label(idx),
                                                                              f.get("shared")))
                        if f.get("first_seq", 0) > 0:
                            t.max_seen = max(t.max_seen, f.get("next_seq", 1) - 1)
                        continue
                    if op == "gap":
                        frm, to, reason = f["from"], f["to"], f.get("reason")
                        if frm > to:
                            self.violation("%s: gap %r has from > to" % (g.label(idx), f))
                        g.gaps.append((frm, to, reason, time.monotonic() - self.started_at,
                                       t.purge_inflight))
                        g.add_gap(frm, to)
                        g.high = max(g.high, to)
                        continue
                    if op == "dead":
                        self.on_dead_frame(g, s, f)
                        continue
                    if op == "err":
                        self.counts["consumer_errs"] += 1
                        self.violation("%s: err %r" % (g.label(idx), frame[:300]))
                        continue
                    self.violation("%s: unexpected frame %r" % (g.label(idx), frame[:200]))
                closed_by_us = True
            except websockets.exceptions.ConnectionClosed as e:
                broken = e
            except OSError as e:
                broken = e
            # end of the session
            if broken is not None and self.up.is_set() and self.gen == gen:
                # not a kill: wsqd ended a healthy member session by itself
                self.violation("%s: wsqd closed the session (%r) while it ran (gen %d)"
                               % (g.label(idx), broken, gen))
            ok_close = False
            if closed_by_us and (graceful or self.stop_all or self.final_quiet):
                try:
                    if to_ack and (flush_on_close or self.stop_all or self.final_quiet):
                        await flush()
                    s.state = "closing"
                    await asyncio.wait_for(ws.close(), 3 * h.SLOW)
                    ok_close = ws.close_code == 1000
                except Exception:
                    ok_close = False
                    ws.transport.abort()
            else:
                s.state = "aborted"
                ws.transport.abort()
            s.state = "closed" if ok_close else "aborted"
            g.live.discard(s)
            g.sess_log[s.id][3:] = [time.monotonic(), "%s%s%s" % (
                s.state, ", by wsqd: %r" % broken if broken is not None else "",
                ", holding %s" % sorted(s.held)[:20] if s.held else "")]
            # what it held and did not ack may come back, with deliveries 1 if never written to
            # its socket (taken back): see on_member_msg
            prev = g.ended_min.get(gen)
            g.ended_min[gen] = s.max_first if prev is None else min(prev, s.max_first)
            certain = ok_close and self.gen == gen
            if certain:
                g.member_graceful += 1
            else:
                g.member_aborted += 1
            for q, tm in sess_acks.items():
                g.acked[q] = (gen, certain, tm)
            if not self.stop_all:
                if self.final_quiet:
                    away = 0.05
                elif rng.random() < 0.15:
                    away = rng.uniform(0.5, 2.0)
                else:
                    away = rng.uniform(0, 0.3)
                await asyncio.sleep(away)

    def acked_sent(self, g, s, seq, sess_acks):
        now = time.monotonic()
        g.note(seq, "session %d sent its ack" % s.id)
        sess_acks[seq] = now
        s.held.pop(seq, None)
        g.acks += 1
        g.last_activity = now
        if g.shared:
            self.set_holder(g, s, seq, "acked")

    def set_holder(self, g, s, seq, state):
        rec = g.holder.get(seq)
        if rec is None or rec[0].gen <= s.gen:
            g.holder[seq] = (s, state)

    def on_member_msg(self, g, s, f):
        """A msg to member session s of group g: check it; -> (seq, what to do with it)."""
        t = g.topic
        who = g.label(s.idx)
        seq = f["seq"]
        k = f.get("deliveries", 1)
        now = time.monotonic()
        s.n += 1
        s.last_msg = now
        g.delivered += 1
        g.member_delivered[s.idx] += 1
        g.last_activity = now
        if not s.subscribed:
            self.violation("%s: msg before subscribed" % who)
        if f.get("topic") != t.name:
            self.violation("%s: msg of topic %r" % (who, f.get("topic")))
        if not isinstance(k, int) or k < 1 or ("deliveries" in f and k < 2):
            self.violation("%s: seq %d with deliveries %r" % (who, seq, f.get("deliveries")))
            k = 1
        if f.get("enc") == "base64":
            payload, binary = base64.b64decode(f["data"]), True
        else:
            payload, binary = f["data"].encode("utf-8"), False
        msgid = self.check_payload(t, seq, binary, payload, "delivery to " + who)
        g.note(seq, "delivered to session %d (gen %d) deliveries %d" % (s.id, s.gen, k))
        # first deliveries (deliveries 1) come in seq order within a session. A message handed
        # to a member that left before it was written to that member's socket is taken back
        # with its count (deliveries 1 again) and comes later: that is only possible above the
        # highest first delivery of a session that ended in this broker run.
        if k == 1:
            if seq <= s.max_first:
                low = g.ended_min.get(s.gen) if g.shared else None
                if low is not None and seq > low and g.last_count.get(seq, (-1,))[0] != s.gen:
                    g.taken_back += 1
                else:
                    self.violation("%s: seq %d delivered first (deliveries 1) after seq %d in "
                                   "one session (order; no member that left could have held "
                                   "it)" % (who, seq, s.max_first))
            s.max_first = max(s.max_first, seq)
        # within one broker run a message's delivery count only grows
        prev = g.last_count.get(seq)
        if prev is not None and prev[0] == s.gen and k <= prev[1]:
            self.violation("%s: seq %d delivered with deliveries %d after %d in the same broker "
                           "run (gen %d); its history:\n%s" % (who, seq, k, prev[1], s.gen,
                                                              g.history(seq)))
        if prev is None or prev[0] <= s.gen:
            g.last_count[seq] = (s.gen, k)
        if g.dead and k > self.a.max_deliver:
            self.violation("%s: seq %d delivered with deliveries %d, above max_deliver %d (it "
                           "should have gone to %s)" % (who, seq, k, self.a.max_deliver,
                                                        DLQ_TOPIC))
        if seq in g.dead_known:
            self.violation("%s: seq %d delivered again although its dead letter exists (%s); "
                           "its history:\n%s" % (who, seq, g.dead_known[seq], g.history(seq)))
        # shared: in flight at one live member at a time (ack_wait is 0: nothing moves a
        # message away from a member whose session is alive)
        if g.shared:
            self.counts["holder_checks"] += 1
            rec = g.holder.get(seq)
            if rec is not None and rec[0].gen == s.gen:
                a, st = rec
                if st == "held":
                    self.counts["holder_moves"] += 1
                same = "the same member session" if a is s else "member %d" % a.idx
                if st == "held" and a.state == "open":
                    self.violation("%s: seq %d delivered while %s (alive) still held it "
                                   "unacknowledged (in flight twice); its history:\n%s"
                                   % (who, seq, same, g.history(seq)))
                elif st == "acked" and a.state in ("open", "closing"):
                    self.violation("%s: seq %d delivered again although %s acked it on a live "
                                   "session (gen %d); its history:\n%s"
                                   % (who, seq, same, s.gen, g.history(seq)))
            self.set_holder(g, s, seq, "held")
        s.held[seq] = now
        if seq in g.got:
            g.redelivered += 1
            if g.acked_certain(seq, s.gen):
                self.violation("%s: seq %d redelivered although its ack was sent in this broker "
                               "run (gen %d) on a session closed gracefully; its history:\n%s"
                               % (who, seq, s.gen, g.history(seq)))
            else:
                at = g.last_ack(seq)
                if at is not None and at[0] < s.gen:
                    self.counts["lost_acks"] += 1
                    kt = self.kill_times.get(at[0])
                    if kt is not None:
                        age = kt - at[2]
                        self.lost_ack_ages.append(age)
                        self.max_lost_ack_age = max(self.max_lost_ack_age, age)
                elif at is not None:
                    self.counts["dropped_acks"] += 1
        else:
            g.got.add(seq)
        g.high = max(g.high, seq)
        what = "ack"
        if g.dead and msgid is not None:
            what = dl_action(self.seed, g.name, msgid, self.a.dl_term, self.a.dl_poison)
            if what == "term":
                g.term_counts.setdefault(seq, set()).add(k)
        return seq, what

    def on_dead_frame(self, g, s, f):
        """`dead`: the message's dead letter is committed (and acknowledged for g)."""
        who = g.label(s.idx)
        seq, dt, ds = f.get("seq"), f.get("dead_topic"), f.get("dead_seq")
        self.counts["dead_frames"] += 1
        g.last_activity = time.monotonic()
        if not g.dead or f.get("topic") != g.topic.name or dt != DLQ_TOPIC or \
                not isinstance(seq, int) or not isinstance(ds, int) or ds < 1:
            self.violation("%s: unexpected dead frame %r" % (who, f))
            return
        if seq in g.dead_frames:
            self.violation("%s: second dead frame for seq %d (dead_seq %d; first %d in gen %d)"
                           % (who, seq, ds, g.dead_frames[seq][1], g.dead_frames[seq][0]))
        g.dead_frames[seq] = (s.gen, ds)
        g.frames_unchecked.append((seq, ds, s.gen))
        g.note(seq, "dead frame to session %d, dead_seq %d" % (s.id, ds))
        g.dead_known.setdefault(seq, "dead frame in gen %d, dead_seq %d" % (s.gen, ds))
        g.dl_open.discard(seq)
        s.held.pop(seq, None)
        if g.shared:
            self.set_holder(g, s, seq, "nacked")

    # -- checks ----------------------------------------------------------------------------------

    async def inspect_store(self, marks, final=False):
        """wsqd is down: wsqctl check, then every confirmed message must be in the store."""
        data = self.d.data
        rc, out, err = await self.ctl("--data", data, "--json", "check", timeout=120)
        try:
            res = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            res = {}
        if rc != 0 or not res.get("ok"):
            self.violation("wsqctl check after kill %d: exit %d %s %s"
                           % (self.counts["kills"], rc, out[:2000], err[:500]))
        rc, out, err = await self.ctl("--data", data, "--json", "topics")
        if rc != 0:
            self.violation("wsqctl topics: exit %d %s" % (rc, err[:500]))
            return
        meta = {x["name"]: x for x in json.loads(out.decode())["topics"]}
        # resolve purges whose outcome was unknown: the store says what purges removed
        for name, t in self.topics.items():
            m = meta.get(name)
            if not m:
                continue
            pu = m.get("purged_upto", 0) or 0
            if pu > t.purge_bound:
                if t.purge_uncertain or t.purge_all_inflight:
                    t.purge_bound = pu
                else:
                    self.violation("%s: store purged_upto %d, but our purges removed at most "
                                   "up to %d" % (name, pu, t.purge_bound))
            t.purge_uncertain = False
        rc, out, err = await self.ctl("--data", data, "export", timeout=300)
        if rc != 0:
            self.violation("wsqctl export: exit %d %s" % (rc, err[:500]))
            return
        stored = {name: {} for name in self.topics}
        last_ts = {}
        dlq = []
        for line in out.splitlines():
            x = json.loads(line)
            name = x["topic"]
            if name == DLQ_TOPIC and DL_TOPIC in self.topics:
                dlq.append(json.loads(line, object_pairs_hook=PairsDict))
                continue
            if name not in self.topics:
                self.violation("store holds a topic we never used: %r" % name)
                continue
            seq = x["seq"]
            if x.get("enc") == "base64":
                payload, binary = base64.b64decode(x["data"]), True
            else:
                payload, binary = x["data"].encode("utf-8"), False
            t = self.topics[name]
            if x["ts"] < last_ts.get(name, 0):
                self.violation("%s seq %d: ts %d below the previous %d"
                               % (name, seq, x["ts"], last_ts[name]))
            last_ts[name] = x["ts"]
            stored[name][seq] = True
            self.counts["store_msgs_checked"] += 1
            self.check_payload(t, seq, binary, payload, "store")
        for name, t in self.topics.items():
            m = meta.get(name)
            seqs = stored[name]
            if m is None:
                if t.max_confirmed:
                    self.violation("%s: topic missing from the store (%d confirmed)"
                                   % (name, t.max_confirmed))
                continue
            first, nxt = m["first_seq"], m["next_seq"]
            t.max_seen = max(t.max_seen, nxt - 1)
            if seqs:
                lo, hi = min(seqs), max(seqs)
                if len(seqs) != hi - lo + 1:
                    self.violation("%s: stored seqs %d..%d are not contiguous (%d messages)"
                                   % (name, lo, hi, len(seqs)))
                if hi != nxt - 1:
                    self.violation("%s: last stored seq %d but next_seq %d" % (name, hi, nxt))
                if lo != first:
                    self.violation("%s: first stored seq %d, topic says first_seq %d"
                                   % (name, lo, first))
            if nxt <= t.max_confirmed:
                self.violation("%s: next_seq %d after the restart, but seq %d was confirmed "
                               "(seqs would be reused)" % (name, nxt, t.max_confirmed))
            # the removed prefix is allowed by purges and retention
            removed_to = (min(seqs) if seqs else nxt) - 1
            allowed = t.purge_bound
            if t.ret_max:
                allowed = max(allowed, nxt - 1 - t.ret_max)
            if removed_to > allowed:
                self.violation("%s: seqs up to %d are gone, but purges removed at most %d and "
                               "retention (max_messages %d, next_seq %d) at most %d"
                               % (name, removed_to, t.purge_bound, t.ret_max, nxt,
                                  nxt - 1 - t.ret_max if t.ret_max else 0))
            for seq, msgid in t.confirmed.items():
                if seq not in seqs and seq > removed_to:
                    self.lost.add((name, seq))
                    self.violation("%s: confirmed seq %d (message %r) is not in the store "
                                   "(LOST)" % (name, seq, msgid))
                elif seq not in seqs and seq > allowed:
                    self.lost.add((name, seq))
        if DL_TOPIC in self.topics:
            self.inspect_dead_letters(dlq, meta.get(DLQ_TOPIC))
        if self.groups:
            await self.inspect_group_state(meta, final)

    def check_dead_letter(self, x, source):
        """One dead letter (a record of chaos.dl.dlq: export, or history while wsqd runs; headers
        as PairsDict) is checked once: it must be the copy of a chaos.dl message one of its
        consumers gave up, payload byte-exact, with exactly the headers wsq-dead-topic/-seq/
        -consumer/-deliveries/-reason (we publish none), at most one per (seq, consumer); its
        reason must fit what the consumer does with the message. Known copies make the message
        dealt with (g.dead_known): the consumer must never get it again."""
        t = self.topics[DL_TOPIC]
        dseq = x["seq"]
        hp = x.get("headers")
        hdrs = list(hp.pairs) if isinstance(hp, PairsDict) else list((hp or {}).items())
        what = "%s seq %d" % (DLQ_TOPIC, dseq)
        if [k for k, _ in hdrs] != DEAD_HEADERS:
            self.violation("%s (%s): headers %r, expected exactly %s"
                           % (what, source, hdrs, DEAD_HEADERS))
            return
        hv = dict(hdrs)
        try:
            seq = int(hv["wsq-dead-seq"])
            cnt = int(hv["wsq-dead-deliveries"])
        except ValueError:
            self.violation("%s (%s): headers %r" % (what, source, hdrs))
            return
        cname, reason = hv["wsq-dead-consumer"], hv["wsq-dead-reason"]
        key = (cname, seq, reason, cnt)
        old = self.dlq_store.get(dseq)
        if old is not None:
            if old != key:
                self.violation("%s changed (%s): now %r, earlier %r" % (what, source, key, old))
            return   # checked when first seen
        self.dlq_store[dseq] = key
        if hv["wsq-dead-topic"] != DL_TOPIC:
            self.violation("%s: wsq-dead-topic %r" % (what, hv["wsq-dead-topic"]))
        if x.get("enc") == "base64":
            payload, binary = base64.b64decode(x["data"]), True
        else:
            payload, binary = x["data"].encode("utf-8"), False
        msgid = self.check_payload(t, seq, binary, payload, "dead letter %s (%s)" % (what, source))
        g = {c.name: c for c in t.consumers if c.group}.get(cname)
        if g is None:
            self.violation("%s: dead letter of consumer %r, which gives nothing up"
                           % (what, cname))
            return
        pairs = self.dlq_pairs.setdefault((cname, seq), [])
        pairs.append(dseq)
        if len(pairs) > 1 and (cname, seq) not in self.dup_reported:
            self.dup_reported.add((cname, seq))
            self.violation("%s/%s: seq %d dead-lettered %d times (%s seqs %s): the copy and "
                           "the acknowledgement are one transaction, so a second copy means "
                           "the consumer got it again after its copy was committed; its "
                           "history:\n%s" % (DL_TOPIC, cname, seq, len(pairs), DLQ_TOPIC, pairs,
                                             g.history(seq)))
        g.dead_known.setdefault(seq, "%s seq %d (%s)" % (DLQ_TOPIC, dseq, source))
        g.dl_open.discard(seq)
        g.note(seq, "dead letter %s seq %d (%s): %s, deliveries %d"
               % (DLQ_TOPIC, dseq, source, reason, cnt))
        fr = g.dead_frames.get(seq)
        if fr is not None and fr[1] != dseq and len(pairs) == 1:
            self.violation("%s: seq %d: dead frame named dead_seq %d, the store has it at %d"
                           % (g.label(), seq, fr[1], dseq))
        policy = msgid and dl_action(self.seed, cname, msgid, self.a.dl_term, self.a.dl_poison)
        if reason == "term":
            self.counts["dlq_term"] += 1
            if policy != "term":
                self.violation("%s: reason term for seq %d, but %s never nacks it with term "
                               "(it would %s it)" % (what, seq, cname, policy))
            elif cnt not in g.term_counts.get(seq, ()):
                self.violation("%s: seq %d: wsq-dead-deliveries %d, but %s termed it at "
                               "deliveries %s" % (what, seq, cnt, cname,
                                                  sorted(g.term_counts.get(seq, ()))))
        elif reason == "max_deliver":
            self.counts["dlq_max_deliver"] += 1
            if cnt != self.a.max_deliver:
                self.violation("%s: seq %d: reason max_deliver with wsq-dead-deliveries %d "
                               "(max_deliver %d)" % (what, seq, cnt, self.a.max_deliver))
            if policy == "ack":
                # it acks that one: its sessions dropped (or wsqd was killed) before the acks
                # arrived, max_deliver times: allowed, counted
                self.counts["dlq_acked_class"] += 1
            elif policy == "term":
                self.counts["dlq_term_class_by_count"] += 1
        else:
            self.violation("%s: wsq-dead-reason %r" % (what, reason))

    async def poll_dead_letters(self):
        """wsqd is up: read the dead letters committed since the last look (history). A dead
        letter whose `dead` frame was lost with its session is found this way."""
        while True:
            frm = max(self.dlq_store) + 1 if self.dlq_store else 1
            try:
                status, body = await self.http_get("/topics/%s/messages?from=%d&limit=1000"
                                                   % (DLQ_TOPIC, frm))
            except (OSError, asyncio.TimeoutError, ValueError):
                return
            if status == 404:
                return   # no dead letter yet
            if status != 200:
                self.violation("history of %s: status %d %r" % (DLQ_TOPIC, status, body[:200]))
                return
            page = json.loads(body, object_pairs_hook=PairsDict)
            msgs = page.get("messages") or []
            if page.get("gap"):
                self.violation("history of %s: gap %r (nothing removes dead letters)"
                               % (DLQ_TOPIC, page["gap"]))
            for x in msgs:
                self.check_dead_letter(x, "history")
            if not msgs or msgs[-1]["seq"] + 1 >= page.get("next_seq", 0):
                return

    def inspect_dead_letters(self, dlq, meta):
        """wsqd is down; dlq: the records of chaos.dl.dlq in the store (check_dead_letter).
        None may be gone or changed later; the dlq's seqs are 1..N (it is never purged); every
        `dead` frame a consumer got must name a dead letter in the store (it is sent after the
        commit)."""
        t = self.topics[DL_TOPIC]
        groups = {g.name: g for g in t.consumers if g.group}
        seen = {}
        for x in dlq:
            seen[x["seq"]] = True
            self.check_dead_letter(x, "store")
        for dseq, key in self.dlq_store.items():
            if dseq not in seen:
                self.violation("%s seq %d (dead letter of %s seq %d) is gone from the store "
                               "(nothing purges it)" % (DLQ_TOPIC, dseq, key[0], key[1]))
        if dlq:
            lo, hi = min(seen), max(seen)
            if lo != 1 or hi != len(seen):
                self.violation("%s: stored seqs %d..%d, %d of them (never purged: 1..N expected)"
                               % (DLQ_TOPIC, lo, hi, len(seen)))
        nxt = meta["next_seq"] if meta else 1
        if dlq and nxt != max(seen) + 1:
            self.violation("%s: next_seq %d, last stored %d" % (DLQ_TOPIC, nxt, max(seen)))
        if nxt < self.dlq_next:
            self.violation("%s: next_seq %d went back from %d" % (DLQ_TOPIC, nxt, self.dlq_next))
        self.dlq_next = max(self.dlq_next, nxt)
        for g in groups.values():
            g.copies = sum(1 for k in self.dlq_store.values() if k[0] == g.name)
            for seq, ds, gen in g.frames_unchecked:
                k = self.dlq_store.get(ds)
                if k is None or k[0] != g.name or k[1] != seq:
                    self.violation("%s: dead frame (gen %d) for seq %d named dead_seq %d, but "
                                   "the store holds %s there (the dead letter was not durable?)"
                                   % (g.label(), gen, seq, ds,
                                      "nothing" if k is None else "%r" % (k,)))
            g.frames_unchecked = []

    async def inspect_group_state(self, meta, final):
        """wsqd is down: the groups' stored consumer state. For chaos.dl: every message the
        consumer gives up at or below its ack floor has its dead letter (the acknowledgement
        is never stored without the copy). At the end (everything drained, members closed,
        SIGTERM): every group acknowledged its whole topic."""
        rc, out, err = await self.ctl("--data", self.d.data, "--json", "consumers")
        if rc != 0:
            self.violation("wsqctl consumers: exit %d %s" % (rc, err[:500]))
            return
        state = {(x["topic"], x["name"]): x for x in json.loads(out.decode())["consumers"]}
        for g in self.groups:
            t = g.topic
            x = state.get((t.name, g.name))
            if x is None:
                self.violation("%s: consumer missing from the store" % g.label())
                continue
            if "shared" in x and bool(x["shared"]) != g.shared:
                self.violation("%s: stored as shared %r" % (g.label(), x["shared"]))
            floor = x.get("ack_floor", 0)
            if g.dead:
                for seq in g.dl_open:
                    g.note(seq, "not in the store's %s at kill %d; ack floor %d, delivered up "
                                "to %s" % (DLQ_TOPIC, self.counts["kills"], floor,
                                           x.get("delivered_upto")))
                for seq, what in g.dl_seqs.items():
                    self.counts["floor_checks"] += 1
                    if seq <= floor and (g.name, seq) not in self.dlq_pairs:
                        self.violation("%s: seq %d (%s) is acknowledged in the store (ack floor "
                                       "%d) but has no dead letter in %s (ack without its copy)"
                                       % (g.label(), seq, what, floor, DLQ_TOPIC))
            if final:
                m = meta.get(t.name)
                last = m["next_seq"] - 1 if m else 0
                if floor != last:
                    self.violation("%s: at the end the ack floor is %d, the topic's last seq %d "
                                   "(pending %s, acked above the floor %s): a message neither "
                                   "acknowledged nor dead-lettered"
                                   % (g.label(), floor, last, x.get("pending"),
                                      x.get("acked_above_floor")))

    def check_gaps(self):
        """Every gap a consumer got must cover only seqs a purge or retention removed, and
        name a cause that applies (one gap may span seqs of both causes: either name is
        right then)."""
        for t in self.topics.values():
            by_purge = t.purge_bound
            by_ret = t.max_seen - t.ret_max if t.ret_max else 0
            for c in t.consumers:
                for frm, to, reason, since, inflight in c.gaps[c.gaps_checked:]:
                    what = ("%s/%s: gap %d-%d %s (purges removed up to %d; retention max %d, "
                            "highest seq %d; %.2fs after a (re)start%s)"
                            % (t.name, c.name, frm, to, reason, by_purge, t.ret_max,
                               t.max_seen, since, ", a purge running" if inflight else ""))
                    if reason == "purge":
                        self.counts["gaps_purge"] += 1
                        if frm > by_purge:
                            self.violation(what + ": no purge removed any of it")
                    elif reason == "retention":
                        self.counts["gaps_retention"] += 1
                        if not t.ret_max:
                            self.violation(what + ": the topic has no retention (wrong reason)")
                        elif frm > by_ret:
                            self.violation(what + ": retention removed none of it")
                    else:
                        self.violation(what + ": unknown reason")
                    if to > max(by_purge, by_ret):
                        self.violation(what + ": it covers seqs nothing removed")
                        # a gap over confirmed messages that nothing removed is a loss
                        for s in range(max(frm, t.pruned + 1, by_purge + 1, by_ret + 1), to + 1):
                            if s in t.confirmed:
                                self.lost.add((t.name, s))
                                self.violation("%s/%s: the gap skips confirmed seq %d (LOST)"
                                               % (t.name, c.name, s))
                                break
                c.gaps_checked = len(c.gaps)

    async def checkpoint(self, marks, timeout):
        """Wait until every consumer has covered its topic up to marks[topic], then check."""
        t0 = time.monotonic()
        deadline = t0 + timeout * h.SLOW
        polled = 0.0
        last_behind = []
        while True:
            if time.monotonic() - polled > 0.25 and \
                    any(g.dl_open and min(g.dl_open) <= marks.get(g.topic.name, 0)
                        for g in self.groups):
                # a dead letter whose `dead` frame went down with its session: look it up
                await self.poll_dead_letters()
                polled = time.monotonic()
            behind = []
            for name, t in self.topics.items():
                m = marks.get(name, 0)
                rb = t.removal_bound()
                for c in t.consumers:
                    if c.group:
                        first = self.group_behind(c, m, rb)
                        if first is not None:
                            behind.append((c, m, first))
                        continue
                    if c.high >= m:
                        continue
                    if all(s <= rb or s not in t.confirmed for s in range(c.high + 1, m + 1)):
                        continue
                    behind.append((c, m, None))
            if not behind:
                if time.monotonic() - t0 > 5 * h.SLOW:
                    log("checkpoint: the consumers caught up after %.1fs; the last: %s"
                        % (time.monotonic() - t0, ", ".join(
                            "%s (at %s of %d)" % (c.label() if c.group else
                                                  "%s/%s" % (c.topic.name, c.name),
                                                  first if c.group else c.high, m)
                            for c, m, first in last_behind)))
                    for c, m, first in last_behind:
                        if c.group and first in c.trace:
                            log("  %s seq %d:\n%s" % (c.label(), first, c.history(first)))
                break
            last_behind = behind
            if time.monotonic() > deadline:
                for c, m, first in behind:
                    if c.group:
                        self.violation("%s: stuck: seq %d (confirmed up to %d) %s (timed out "
                                       "after %.0fs); its history:\n%s\n%s"
                                       % (c.label(), first, m,
                                          "never dead-lettered" if first in c.dl_open
                                          else "never delivered", timeout, c.history(first),
                                          await self.group_state(c)))
                        continue
                    self.violation("%s/%s: stuck: delivered up to %d, confirmed up to %d "
                                   "(timed out after %.0fs)" % (c.topic.name, c.name, c.high, m,
                                                                timeout))
                break
            await asyncio.sleep(0.05)
        async with self.purge_lock:
            self.check_gaps()
            for name, t in self.topics.items():
                m = marks.get(name, 0)
                rb = t.removal_bound()
                for c in t.consumers:
                    if c.group:
                        self.check_group(c, m, rb)
                        continue
                    upto = min(m, c.high)
                    for s in range(max(c.verified, t.pruned) + 1, upto + 1):
                        if s in t.confirmed and not c.covered(s) and s > rb:
                            self.lost.add((name, s))
                            self.violation("%s/%s: confirmed seq %d (message %r) was never "
                                           "delivered (LOST)" % (name, c.name, s,
                                                                 t.confirmed[s]))
                    c.verified = max(c.verified, upto)
            self.prune()

    def group_behind(self, g, m, rb):
        """The first seq up to m that group g has not dealt with yet, or None: a confirmed
        message no purge or retention removed must have reached one of its members (or come
        in a gap), and every message g gives up must have its dead letter."""
        t = g.topic
        for s in range(max(g.verified, t.pruned) + 1, m + 1):
            if s in t.confirmed and s > rb and not g.covered(s) and s not in g.dead_known:
                return s
        for s in g.dl_open:
            if s <= m:
                return s
        return None

    async def group_state(self, g):
        """What we know of g's members now, and what wsqd's store says of g (for reports)."""
        now = time.monotonic()
        out = ["    live sessions of %s (gen %d):" % (g.label(), self.gen)]
        for x in sorted(g.live, key=lambda x: x.id):
            out.append("      session %d member %d gen %d %s window %d: %d deliveries, the last "
                       "%.2fs ago, holds %d unacknowledged %s"
                       % (x.id, x.idx, x.gen, x.state, x.window, x.n,
                          now - x.last_msg if x.last_msg else -1, len(x.held),
                          sorted(x.held)[:10]))
        rc, out_, err = await self.ctl("--data", self.d.data, "--json", "consumers",
                                       g.topic.name)
        out.append("    wsqctl consumers %s: %s" % (g.topic.name, out_.decode().strip()[:1500]
                                                   if rc == 0 else err[:300]))
        return "\n".join(out)

    def check_group(self, g, m, rb):
        t = g.topic
        for s in range(max(g.verified, t.pruned) + 1, m + 1):
            if s in t.confirmed and s > rb and not g.covered(s) and s not in g.dead_known:
                self.lost.add((t.name, s))
                self.violation("%s: confirmed seq %d (message %r) reached none of its members "
                               "(LOST); its history:\n%s" % (g.label(), s, t.confirmed[s],
                                                             g.history(s)))
        for s in sorted(g.dl_open):
            if s <= m and s not in g.dl_reported:
                g.dl_reported.add(s)
                self.lost.add((t.name, s))
                self.violation("%s: seq %d (%s) was never dead-lettered: not in %s, and not "
                               "delivered again (skipped silently?); its history:\n%s"
                               % (g.label(), s, g.dl_seqs.get(s), DLQ_TOPIC, g.history(s)))
        g.verified = max(g.verified, m)

    def prune(self):
        """Drop records every consumer has verified (keeps memory flat in long runs); seqs at
        or below a topic's pruned mark that show up again are only payload-checked."""
        for t in self.topics.values():
            if not t.consumers:
                continue
            # one checkpoint behind: a confirm may still be on its way for a while
            mark = min(min(c.verified for c in t.consumers), t.prev_mark)
            t.prev_mark = min(c.verified for c in t.consumers)
            if mark <= t.pruned:
                continue
            for s in range(t.pruned + 1, mark + 1):
                t.confirmed.pop(s, None)
                msgid = t.seq_owner.pop(s, None)
                if msgid is not None:
                    t.msg_seq.pop(msgid, None)
                for c in t.consumers:
                    c.got.discard(s)
                    c.acked.pop(s, None)
                    if c.group:
                        c.holder.pop(s, None)
                        c.last_count.pop(s, None)
                        if s not in c.dl_seqs:
                            c.trace.pop(s, None)
            t.pruned = mark
            for c in t.consumers:
                c.cover = [(a, b) for a, b in c.cover if b > mark]

    # -- the run ---------------------------------------------------------------------------------

    def marks(self):
        return {name: t.max_confirmed for name, t in self.topics.items()}

    async def create_consumers(self):
        """Create every durable consumer (from earliest) and wait until the store has them, so
        that a kill cannot forget one."""
        want = 0
        for name, t in self.topics.items():
            if name in (SHARED_TOPIC, DL_TOPIC):
                continue
            for i in range(self.a.consumers):
                c = Consumer(t, "c%d" % i, random.Random("cons/%d/%s/%d" % (self.seed, name, i)))
                t.consumers.append(c)
                want += 1
                ws = await h.connect_v1(self.d)
                await h.send_json(ws, {"op": "sub", "topic": name, "consumer": c.name,
                                       "from": "earliest", "ref": 1})
                await h.expect_op(ws, "subscribed")
                await ws.close()
        # the groups: chaos.sh's shared consumer; chaos.dl's exclusive one and (--dl-members)
        # a shared one, both giving messages up
        specs = []
        if SHARED_TOPIC in self.topics:
            specs.append((SHARED_TOPIC, "workers", True, self.a.shared_members, False))
        if DL_TOPIC in self.topics:
            specs.append((DL_TOPIC, "dlx", False, 1, True))
            if self.a.dl_members > 0:
                specs.append((DL_TOPIC, "dlw", True, self.a.dl_members, True))
        for name, cname, shared, members, dead in specs:
            t = self.topics[name]
            g = Group(t, cname, random.Random("group/%d/%s/%s" % (self.seed, name, cname)),
                      shared, members, dead)
            t.consumers.append(g)
            self.groups.append(g)
            want += 1
            ws = await h.connect_v1(self.d)
            sub = {"op": "sub", "topic": name, "consumer": cname, "from": "earliest", "ref": 1}
            if shared:
                sub["shared"] = True
            await h.send_json(ws, sub)
            await h.expect_op(ws, "subscribed")
            await ws.close()
        deadline = time.monotonic() + 10 * h.SLOW
        while True:
            rc, out, err = await self.ctl("--data", self.d.data, "--json", "consumers")
            if rc == 0 and len(json.loads(out.decode())["consumers"]) >= want:
                break
            if time.monotonic() > deadline:
                raise AssertionError("consumers not persisted: %s %s" % (out[:500], err))
            await asyncio.sleep(0.05)

    async def kill_loop(self):
        cycles = self.a.cycles
        end = time.monotonic() + self.a.seconds
        for cycle in range(cycles):
            left = max(0.2, end - time.monotonic())
            mean = left / (cycles - cycle)
            r = self.rng.random()
            if r < 0.1:
                wait = self.rng.uniform(0.0, 0.1)       # right after a restart / recovery
            else:
                wait = self.rng.uniform(0.2 * mean, 1.6 * mean)
            wait = max(0.0, wait - 0.3)                   # the checkpoint takes some time
            await asyncio.sleep(wait)
            marks = self.marks()
            self.up.clear()
            self.kill_times[self.gen] = time.monotonic()
            self.d.kill()
            self.counts["kills"] += 1
            await self.inspect_store(marks)
            self.gen += 1
            await self.start_broker()
            await self.checkpoint(marks, timeout=self.a.catchup)
            log("cycle %d/%d: killed after %.2fs; confirmed %d, delivered %d, redelivered %d, "
                "to groups %d, dead letters %d, violations %d"
                % (cycle + 1, cycles, wait, self.counts["confirmed"], self.delivered(),
                   self.redelivered(), self.group_delivered(), self.dead_letters(),
                   len(self.violations)))
        # no kills: checkpoints now and then until the time is up
        while time.monotonic() < end:
            await asyncio.sleep(min(self.a.checkpoint_every, max(0, end - time.monotonic())))
            marks = self.marks()
            await self.checkpoint(marks, timeout=self.a.catchup)
            if not cycles:
                log("checkpoint: confirmed %d, delivered %d, redelivered %d, violations %d"
                    % (self.counts["confirmed"], self.delivered(), self.redelivered(),
                       len(self.violations)))

    async def groups_drain(self, timeout):
        """The end, the load stopped: every member stays (no more leaving), acks what it gets;
        wait until every group is quiet: all members subscribed, nothing held unacknowledged,
        every message it gives up dead-lettered, nothing delivered for a second. Then their
        stored state must show the whole topic acknowledged (inspect_group_state, final)."""
        deadline = time.monotonic() + timeout * h.SLOW
        quiet = 1.0 * h.SLOW
        while True:
            if any(g.dl_open for g in self.groups):
                await self.poll_dead_letters()
            now = time.monotonic()
            waiting = []
            for g in self.groups:
                live = [x for x in g.live if x.state == "open" and x.subscribed and
                        x.gen == self.gen]
                if len(live) < g.nmembers:
                    waiting.append("%s: %d of %d members subscribed" % (g.label(), len(live),
                                                                         g.nmembers))
                elif any(x.held for x in live):
                    waiting.append("%s: holds %s unacknowledged"
                                   % (g.label(), sorted(q for x in live for q in x.held)[:10]))
                elif g.dl_open:
                    waiting.append("%s: seqs %s not dead-lettered yet"
                                   % (g.label(), sorted(g.dl_open)[:10]))
                elif now - g.last_activity < quiet:
                    waiting.append("%s: active %.2fs ago" % (g.label(), now - g.last_activity))
            if not waiting:
                return
            if now > deadline:
                self.violation("the groups did not drain within %.0fs: %s"
                               % (timeout, "; ".join(waiting)))
                return
            await asyncio.sleep(0.1)

    def delivered(self):
        return sum(c.delivered for t in self.topics.values() for c in t.consumers
                   if not c.group)

    def redelivered(self):
        return sum(c.redelivered for t in self.topics.values() for c in t.consumers
                   if not c.group)

    def group_delivered(self, shared_topic_only=False):
        return sum(g.delivered for g in self.groups
                   if not shared_topic_only or g.topic.name == SHARED_TOPIC)

    def dead_letters(self):
        return len(self.dlq_store)

    async def run(self):
        self.make_broker()
        log("wsqd %s, data dir %s, port %d, seed %d, %d cycles over %.0fs"
            % (self.a.wsqd, self.d.data, self.port, self.seed, self.a.cycles, self.a.seconds))
        await self.start_broker()
        await self.create_consumers()
        tasks = []
        for t in self.topics.values():
            for c in t.consumers:
                if c.group:
                    for i in range(c.nmembers):
                        tasks.append(asyncio.create_task(self.member(c, i)))
                else:
                    tasks.append(asyncio.create_task(self.consumer(c)))
        load = [asyncio.create_task(self.ws_publisher(i)) for i in range(self.a.publishers)]
        load += [asyncio.create_task(self.http_publisher(i))
                 for i in range(self.a.http_publishers)]
        if self.a.purge_every > 0:
            load.append(asyncio.create_task(self.purger()))
        try:
            await self.kill_loop()
            # stop the load, let the consumers drain, check once more
            self.stop_load = True
            await asyncio.wait_for(asyncio.gather(*load), 60 * h.SLOW)
            for t in self.topics.values():
                for c in t.consumers:
                    c.final_wait = True
            await self.checkpoint(self.marks(), timeout=self.a.catchup)
            if self.groups:
                self.final_quiet = True
                await self.groups_drain(timeout=self.a.catchup)
            self.stop_all = True
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30 * h.SLOW)
            loop = asyncio.get_running_loop()
            rc = await loop.run_in_executor(None, lambda: self.d.stop(expect_rc=None))
            if rc != 0:
                self.violation("wsqd exited with %s on SIGTERM\n%s" % (rc, self.d.log_tail()))
            await self.inspect_store(self.marks(), final=True)
            for ln in self.d.log_problems()[:20]:
                self.violation("wsqd log: " + ln)
        finally:
            self.stop_all = self.stop_load = True
            for tk in tasks + load:
                tk.cancel()
            await asyncio.gather(*tasks, *load, return_exceptions=True)

    def minimums(self):
        """(what, got, minimum) of every minimum of this run: a run that did next to nothing
        (no kills, few confirms, no deliveries) proves nothing and fails."""
        c = self.counts
        out = [("kills", c["kills"], self.a.min_kills),
               ("confirmed messages", c["confirmed"], self.a.min_confirmed),
               ("deliveries", self.delivered(), self.a.min_delivered)]
        if self.a.http_publishers:
            out.append(("confirmed HTTP publishes", c["confirmed_http"], 1))
        if self.groups:
            out.append(("deliveries to the shared consumer of %s" % SHARED_TOPIC
                        if SHARED_TOPIC in self.topics else "deliveries to the groups",
                        self.group_delivered(SHARED_TOPIC in self.topics), self.a.min_shared))
        if DL_TOPIC in self.topics:
            out.append(("dead letters", self.dead_letters(), self.a.min_dead))
        for t in self.topics.values():
            for x in t.consumers:
                if not x.group:
                    out.append(("deliveries to %s/%s" % (t.name, x.name), x.delivered, 1))
                    continue
                for i in range(x.nmembers):
                    out.append(("deliveries to %s" % x.label(i), x.member_delivered[i], 1))
                if x.dead:
                    out.append(("dead letters of %s" % x.label(), x.copies, 1))
        if DL_TOPIC in self.topics:
            out.append(("dead letters with reason term", self.counts["dlq_term"], 1))
            out.append(("dead letters with reason max_deliver", self.counts["dlq_max_deliver"],
                        1))
        return out

    def check_minimums(self):
        for what, got, least in self.minimums():
            if got < least:
                self.violation("too little happened: %d %s, the minimum is %d"
                               % (got, what, least))

    def report(self):
        c = self.counts
        lines = [
            "chaos seed %d: %d kills" % (self.seed, c["kills"]),
            "  confirmed   %d (wsq.v1 %d, HTTP %d); %d publishes of unknown outcome (in flight "
            "at a kill)" % (c["confirmed"], c["confirmed_ws"], c["confirmed_http"],
                            c["unknown"]),
            "  delivered   %d to %d durable consumers in %d sessions (%d closed gracefully, "
            "%d dropped)" % (self.delivered(),
                             sum(1 for t in self.topics.values() for x in t.consumers
                                 if not x.group),
                             sum(x.sessions for t in self.topics.values() for x in t.consumers
                                 if not x.group),
                             c["sessions_graceful"], c["sessions_aborted"]),
            "  redelivered %d (of which %d after a kill lost an ack; oldest lost ack sent "
            "%.0f ms before its kill)" % (self.redelivered(), c["lost_acks"],
                                          1000 * self.max_lost_ack_age),
            "  acks        %d acks dropped with a TCP abort were redelivered (allowed)"
            % c["dropped_acks"],
            "  purges      %d (%d messages; %d interrupted by a kill); gaps: %d purge, %d "
            "retention" % (c["purges"], c["purged_msgs"], c["purges_uncertain"],
                           c["gaps_purge"], c["gaps_retention"]),
            "  store       %d stored messages checked byte-exact after kills; wsqctl check "
            "after every kill" % c["store_msgs_checked"],
            "  minimums    %s" % ", ".join("%s >= %d" % (w, m) for w, _, m in
                                            self.minimums()[:3] +
                                            [x for x in self.minimums()
                                             if x[0] in ("dead letters",) or
                                             x[0].startswith("deliveries to the ")]),
        ]
        for g in self.groups:
            lines.append(
                "  %-11s %s%s: %d deliveries (per member %s) in %d sessions (%d closed "
                "gracefully, %d dropped); %d redelivered, %d first deliveries taken back from a "
                "member that left; %d acks%s"
                % ("shared" if g.shared else "exclusive", g.label(),
                   " (%d members)" % g.nmembers if g.shared else "",
                   g.delivered, "/".join(str(n) for n in g.member_delivered), g.sessions,
                   g.member_graceful, g.member_aborted, g.redelivered, g.taken_back, g.acks,
                   "; %d nacks, %d nack term, %d dead letters" % (g.nacks, g.terms, g.copies)
                   if g.dead else ""))
        if self.groups:
            lines.append("  in flight   %d deliveries to shared members checked against the "
                         "other live members; %d of them took over a message another member "
                         "held unacknowledged when it left" % (c["holder_checks"],
                                                              c["holder_moves"]))
        if DL_TOPIC in self.topics:
            lines.append(
                "  dead        %d dead letters in %s (reason term %d, max_deliver %d; of those "
                "by count: %d of messages the consumer acks, %d it terms), %d dead frames; "
                "%d checks of given-up seqs against the stored ack floors"
                % (self.dead_letters(), DLQ_TOPIC, c["dlq_term"], c["dlq_max_deliver"],
                   c["dlq_acked_class"], c["dlq_term_class_by_count"], c["dead_frames"],
                   c["floor_checks"]))
        lines += [
            "  lost        %d" % len(self.lost),
            "  violations  %d" % len(self.violations),
        ]
        return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("wsqd")
    ap.add_argument("wsqctl")
    ap.add_argument("--cycles", type=int, default=20, help="kill -9 cycles (20)")
    ap.add_argument("--seconds", type=float, default=60, help="duration of the load (60)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--publishers", type=int, default=3, help="wsq.v1 publishers (3)")
    ap.add_argument("--http-publishers", type=int, default=1)
    ap.add_argument("--pub-window", type=int, default=64, help="most unconfirmed per publisher")
    ap.add_argument("--rate", type=float, default=600,
                    help="target publishes/s over all publishers (600; 0 = as fast as possible)")
    ap.add_argument("--consumers", type=int, default=2, help="durable consumers per topic (2)")
    ap.add_argument("--purge-every", type=float, default=1.5,
                    help="mean seconds between purges (1.5; 0 = none)")
    ap.add_argument("--max-payload", type=int, default=0,
                    help="cap payload sizes (modulo this many bytes; 0: up to 66 KB)")
    ap.add_argument("--ret-max", type=int, default=100,
                    help="retention max_messages of chaos.ret (100)")
    ap.add_argument("--retention", type=int, default=0,
                    help="retention max_messages of the other topics (0 = none; soak: 20000)")
    ap.add_argument("--catchup", type=float, default=30,
                    help="seconds consumers get to catch up at a checkpoint (30)")
    ap.add_argument("--checkpoint-every", type=float, default=20,
                    help="seconds between checkpoints once no kills are left (20)")
    ap.add_argument("--shared-members", type=int, default=3,
                    help="members of the shared consumer of chaos.sh (3; 0 = no such topic)")
    ap.add_argument("--max-deliver", type=int, default=3,
                    help="max_deliver of chaos.dl (3; 0 = no dead-letter topic)")
    ap.add_argument("--dl-members", type=int, default=2,
                    help="members of chaos.dl's shared consumer dlw (2; 0 = only the "
                         "exclusive dlx)")
    ap.add_argument("--dl-term", type=float, default=0.03,
                    help="share of chaos.dl's messages each consumer nacks with term (0.03)")
    ap.add_argument("--dl-poison", type=float, default=0.03,
                    help="share each consumer nacks every time, until max_deliver (0.03)")
    ap.add_argument("--info", help="write {pid, port, data, ...} of wsqd here at every start")
    ap.add_argument("--min-kills", type=int, help="fail below this many kills (--cycles)")
    ap.add_argument("--min-confirmed", type=int,
                    help="fail below this many confirmed messages (a tenth of --rate x "
                         "--seconds, divided by the slow-build factor; 100 with --rate 0)")
    ap.add_argument("--min-delivered", type=int,
                    help="fail below this many deliveries (--min-confirmed); every durable "
                         "consumer must also get at least one")
    ap.add_argument("--min-shared", type=int,
                    help="fail below this many deliveries to chaos.sh's shared consumer "
                         "(--min-confirmed / 20); every member of a group must get one")
    ap.add_argument("--min-dead", type=int,
                    help="fail below this many dead letters (--min-confirmed / 100); every "
                         "consumer of chaos.dl must make one, and both reasons must occur")
    a = ap.parse_args()
    global MAX_PAYLOAD
    MAX_PAYLOAD = a.max_payload
    a.wsqd = os.path.abspath(a.wsqd)
    a.wsqctl = os.path.abspath(a.wsqctl)
    os.environ["WSQD"] = a.wsqd
    h.detect_slow(a.wsqd)
    h.install_signal_handlers("chaos")
    if a.min_kills is None:
        a.min_kills = a.cycles
    if a.min_confirmed is None:
        a.min_confirmed = max(100, int(a.rate * a.seconds * 0.1 / h.SLOW)) if a.rate > 0 else 100
    if a.min_delivered is None:
        a.min_delivered = a.min_confirmed
    if a.min_shared is None:
        a.min_shared = max(10, a.min_confirmed // 20)
    if a.min_dead is None:
        a.min_dead = max(5, a.min_confirmed // 100)

    ch = Chaos(a)
    ok = False
    try:
        asyncio.run(ch.run())
        ch.check_minimums()
        ok = not ch.violations and not ch.lost
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        ch.violation("the run failed: %r" % (e,))
    finally:
        if ch.d is not None and (not ok):
            sys.stderr.write(ch.d.log_tail(80) + "\n")
        h.cleanup_all()
    print(ch.report())
    if ch.lost_ack_ages:
        ages = sorted(ch.lost_ack_ages)
        print("  lost-ack ages (ms before the kill): median %.0f, max %.0f, n %d"
              % (1000 * ages[len(ages) // 2], 1000 * ages[-1], len(ages)))
    print("RESULT: %s" % ("PASS" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
