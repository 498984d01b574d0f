/*
 * Crash durability (DESIGN.md, guarantee 1): with sync=full, a kill -9 of the writing process at
 * any moment loses no confirmed message, leaves no hole and never lets a seq be reused.
 *
 * Each cycle forks a child that opens the store (CREATE|EXCLUSIVE, WSQ_SYNC_FULL), starts the
 * writer and appends from several producer threads while an acker thread moves a consumer's ack
 * floor. Every completion (on the writer thread) writes a fixed-size record to a pipe: one write
 * of less than PIPE_BUF bytes, so the parent reads whole records or none. The parent kills the
 * child with SIGKILL after a random delay, reads every record, reopens the store itself and
 * verifies it:
 *   - every confirmed seq holds exactly the payload and flags its producer sent;
 *   - every topic's seqs are contiguous from first_seq, and count matches;
 *   - a seq, once seen (confirmed or merely committed), keeps its content in every later cycle,
 *     and a new child never confirms a seq that already existed: seqs are never reused;
 *   - the consumer's ack floor covers every confirmed ack and never moves back;
 *   - wsq_store_check finds no violation.
 * Then it closes the store and forks the next child on the same directory.
 *
 * The parent never starts a thread: every fork happens in a single-threaded process, and the
 * parent's store handle is closed before it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "wsq/clock.h"
#include "rm_rf.h"
#include "wsq/store.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#define CYCLES (SANITIZED ? 20 : 30)
#define TIME_BUDGET_NS (45 * 1000000000ll) /* stop adding cycles past this, once CYCLES ran */
#define PRODUCERS 4u
#define WINDOW 32u
#define NTOPICS 3u
#define CONSUMER "acker"
#define MAX_PAYLOAD 20480u

static const char *const topics[NTOPICS] = {"crash.a", "crash.b", "crash.c"};

/* --- deterministic messages ------------------------------------------------------------------ */

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t msg_key(uint32_t producer, uint32_t counter)
{
    return mix64((uint64_t)producer << 32 | counter);
}

/* 1 B .. 20 KiB, mostly small: 70 % up to 256 B, 25 % up to 2 KiB, 5 % up to 20 KiB (most of
 * those are stored in parts: over a page). */
static size_t msg_len(uint32_t producer, uint32_t counter)
{
    uint64_t k = mix64(msg_key(producer, counter) ^ 1);
    unsigned bucket = (unsigned)(k % 100);
    uint64_t r = k >> 8;
    if (bucket < 70)
        return 1 + (size_t)(r % 256);
    if (bucket < 95)
        return 257 + (size_t)(r % (2048 - 256));
    return 2049 + (size_t)(r % (MAX_PAYLOAD - 2048));
}

static uint32_t msg_flags(uint32_t producer, uint32_t counter)
{
    return (msg_key(producer, counter) >> 7) & 1 ? WSQ_MSG_BINARY : 0;
}

static unsigned msg_topic(uint32_t producer, uint32_t counter)
{
    return (unsigned)(mix64(msg_key(producer, counter) ^ 2) % NTOPICS);
}

static void msg_fill(unsigned char *buf, size_t len, uint32_t producer, uint32_t counter)
{
    uint64_t seed = msg_key(producer, counter);
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = mix64(seed + i);
        size_t n = len - i < 8 ? len - i : 8;
        memcpy(buf + i, &v, n);
    }
}

/* Content hash of a stored message (flags, length and bytes), to pin it across cycles. */
static uint64_t content_hash(uint32_t flags, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = mix64(((uint64_t)flags << 32) ^ len);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = mix64(h ^ w);
    }
    uint64_t w = 0;
    memcpy(&w, p + i, len - i);
    return mix64(h ^ w ^ 0xABCDEFull);
}

/* --- the child: a writer that is killed ------------------------------------------------------ */

enum { REC_READY = 1, REC_APPEND, REC_OPEN, REC_ACK, REC_ERROR };

/* One confirmation. 24 bytes: a single write is atomic on a pipe. */
typedef struct {
    uint32_t kind;
    uint32_t topic; /* index into topics (REC_APPEND); error code (REC_ERROR) */
    uint64_t seq;   /* assigned seq (REC_APPEND); ack floor requested (REC_ACK) */
    uint32_t producer;
    uint32_t counter;
} rec_t;

typedef struct {
    wsq_store_t *store;
    int fd;
    _Atomic uint64_t max_seq0; /* highest confirmed seq of topics[0] */
} child_t;

typedef struct {
    child_t *ch;
    uint32_t id; /* unique across cycles */
    pthread_mutex_t m;
    pthread_cond_t c;
    unsigned inflight;
    bool waiting;
} cprod_t;

static void child_die(const char *what, wsq_err err)
{
    fprintf(stderr, "crash child %d: %s: %s\n", (int)getpid(), what, wsq_errname(err));
    _exit(3);
}

static void send_rec(child_t *ch, const rec_t *r)
{
    if (write(ch->fd, r, sizeof(*r)) != (ssize_t)sizeof(*r))
        _exit(4); /* the parent went away */
}

static void append_done(wsq_wreq_t *req, void *arg)
{
    cprod_t *p = arg;
    child_t *ch = p->ch;
    rec_t r = {0};
    if (req->err == WSQ_OK) {
        r = (rec_t){REC_APPEND, (uint32_t)req->user[1], req->seq, p->id, (uint32_t)req->user[0]};
        send_rec(ch, &r);
        if (req->user[1] == 0) {
            uint64_t cur = atomic_load(&ch->max_seq0);
            while (req->seq > cur && !atomic_compare_exchange_weak(&ch->max_seq0, &cur, req->seq))
                ;
        }
    } else {
        r = (rec_t){REC_ERROR, (uint32_t)-req->err, 0, p->id, (uint32_t)req->user[0]};
        send_rec(ch, &r);
    }
    wsq_wreq_free(&req);
    pthread_mutex_lock(&p->m);
    p->inflight--;
    bool wake = p->waiting;
    p->waiting = false;
    pthread_mutex_unlock(&p->m);
    if (wake)
        pthread_cond_signal(&p->c);
}

static void *producer_main(void *arg)
{
    cprod_t *p = arg;
    uint32_t counter = 0;
    for (;;) {
        pthread_mutex_lock(&p->m);
        /* refill only when half the window is free: runs, not single requests */
        while (p->inflight > WINDOW / 2) {
            p->waiting = true;
            pthread_cond_wait(&p->c, &p->m);
        }
        unsigned room = WINDOW - p->inflight;
        p->inflight += room;
        pthread_mutex_unlock(&p->m);
        wsq_wreq_t *head = NULL, **tail = &head;
        for (unsigned k = 0; k < room; k++, counter++) {
            unsigned t = msg_topic(p->id, counter);
            size_t len = msg_len(p->id, counter);
            wsq_wreq_t *r =
                wsq_wreq_new(WSQ_WOP_APPEND, topics[t], strlen(topics[t]), NULL, 0, len);
            if (r == NULL)
                child_die("wreq_new", WSQ_ERR_NOMEM);
            msg_fill(r->data, len, p->id, counter);
            r->flags = msg_flags(p->id, counter);
            r->user[0] = counter;
            r->user[1] = t;
            r->done = append_done;
            r->arg = p;
            *tail = r;
            tail = &r->next;
        }
        wsq_err err = wsq_store_submit_list(p->ch->store, head);
        if (err != WSQ_OK)
            child_die("submit", err);
    }
    return NULL;
}

typedef struct {
    child_t *ch;
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
} acker_t;

static void ack_done(wsq_wreq_t *req, void *arg)
{
    acker_t *a = arg;
    if (req->err == WSQ_OK) {
        rec_t r = {REC_ACK, 0, req->seq, 0, 0};
        send_rec(a->ch, &r);
    } else {
        rec_t r = {REC_ERROR, (uint32_t)-req->err, req->seq, 0, 0};
        send_rec(a->ch, &r);
    }
    wsq_wreq_free(&req);
    pthread_mutex_lock(&a->m);
    a->done = true;
    pthread_mutex_unlock(&a->m);
    pthread_cond_signal(&a->c);
}

static void *acker_main(void *arg)
{
    acker_t *a = arg;
    uint64_t last = 0;
    for (;;) {
        uint64_t upto = atomic_load(&a->ch->max_seq0);
        if (upto > last) {
            wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_CONSUMER_ACK_UPTO, topics[0], strlen(topics[0]),
                                         CONSUMER, strlen(CONSUMER), 0);
            if (r == NULL)
                child_die("wreq_new", WSQ_ERR_NOMEM);
            r->seq = upto;
            r->done = ack_done;
            r->arg = a;
            a->done = false;
            wsq_err err = wsq_store_submit(a->ch->store, r);
            if (err != WSQ_OK)
                child_die("submit ack", err);
            pthread_mutex_lock(&a->m);
            while (!a->done)
                pthread_cond_wait(&a->c, &a->m);
            pthread_mutex_unlock(&a->m);
            last = upto;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void child_main(const char *dir, int fd, unsigned cycle)
{
    /* Never outlive the test, whatever happens to it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        _exit(5);
    child_t ch = {.fd = fd};
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = dir;
    o.flags = WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE;
    o.sync = WSQ_SYNC_FULL;
    o.map_size_initial = 1u << 20; /* grows during the run: kills also land around growth */
    o.map_size_max = 1ull << 30;
    wsq_err err = wsq_store_open(&o, &ch.store, NULL);
    if (err != WSQ_OK)
        child_die("open", err);
    if ((err = wsq_store_start(ch.store)) != WSQ_OK)
        child_die("start", err);
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_CONSUMER_OPEN, topics[0], strlen(topics[0]), CONSUMER,
                                 strlen(CONSUMER), 0);
    if (r == NULL)
        child_die("wreq_new", WSQ_ERR_NOMEM);
    if ((err = wsq_store_call(ch.store, r)) != WSQ_OK)
        child_die("consumer open", err);
    rec_t rec = {REC_OPEN, 0, r->state.ack_floor, 0, 0};
    send_rec(&ch, &rec);
    wsq_wreq_free(&r);
    rec = (rec_t){REC_READY, 0, 0, 0, 0};
    send_rec(&ch, &rec);

    static cprod_t prods[PRODUCERS];
    pthread_t th;
    for (unsigned i = 0; i < PRODUCERS; i++) {
        prods[i] = (cprod_t){.ch = &ch, .id = cycle * PRODUCERS + i};
        pthread_mutex_init(&prods[i].m, NULL);
        pthread_cond_init(&prods[i].c, NULL);
        if (pthread_create(&th, NULL, producer_main, &prods[i]) != 0)
            child_die("pthread_create", WSQ_ERR_NOMEM);
    }
    static acker_t acker;
    acker = (acker_t){.ch = &ch};
    pthread_mutex_init(&acker.m, NULL);
    pthread_cond_init(&acker.c, NULL);
    if (pthread_create(&th, NULL, acker_main, &acker) != 0)
        child_die("pthread_create", WSQ_ERR_NOMEM);
    /* The parent kills us long before this. */
    sleep(20);
    _exit(6);
}

/* --- the parent: what is known about the store ----------------------------------------------- */

typedef struct {
    uint64_t hash;     /* content hash; valid when seen */
    uint32_t producer; /* identity; valid when confirmed */
    uint32_t counter;
    bool seen;      /* read back from the store after some kill */
    bool confirmed; /* the writer confirmed it */
} slot_t;

typedef struct {
    slot_t *slots; /* by seq */
    uint64_t cap;
    uint64_t max_seen; /* highest seq read back so far */
} topic_state_t;

typedef struct {
    topic_state_t t[NTOPICS];
    uint64_t confirmed;      /* confirmations received */
    uint64_t verified;       /* confirmed messages verified byte-exact (summed over cycles) */
    uint64_t pinned;         /* pinned contents re-verified (summed over cycles) */
    uint64_t acks;           /* ack confirmations */
    uint64_t ack_confirmed;  /* highest confirmed ack_upto */
    uint64_t ack_floor_seen; /* ack floor found after the last kill */
    bool consumer_exists;    /* confirmed or seen */
    unsigned early_kills;    /* kills before the child was ready */
} world_t;

static slot_t *slot_at(topic_state_t *ts, uint64_t seq)
{
    if (seq >= ts->cap) {
        uint64_t ncap = ts->cap ? ts->cap : 1024;
        while (ncap <= seq)
            ncap *= 2;
        slot_t *p = realloc(ts->slots, ncap * sizeof(*p));
        assert_non_null(p);
        memset(p + ts->cap, 0, (ncap - ts->cap) * sizeof(*p));
        ts->slots = p;
        ts->cap = ncap;
    }
    return &ts->slots[seq];
}

static void take_record(world_t *w, const rec_t *r)
{
    switch (r->kind) {
    case REC_APPEND: {
        assert_true(r->topic < NTOPICS);
        assert_true(r->seq >= 1);
        topic_state_t *ts = &w->t[r->topic];
        /* A child starts from what earlier children left: a confirmed seq is always new. */
        if (r->seq <= ts->max_seen)
            fail_msg("%s: seq %llu confirmed again (already present after an earlier kill)",
                     topics[r->topic], (unsigned long long)r->seq);
        slot_t *s = slot_at(ts, r->seq);
        if (s->confirmed)
            fail_msg("%s: seq %llu confirmed twice", topics[r->topic], (unsigned long long)r->seq);
        s->confirmed = true;
        s->producer = r->producer;
        s->counter = r->counter;
        w->confirmed++;
        break;
    }
    case REC_OPEN:
        w->consumer_exists = true;
        break;
    case REC_ACK:
        w->acks++;
        if (r->seq > w->ack_confirmed)
            w->ack_confirmed = r->seq;
        break;
    case REC_READY:
        break;
    case REC_ERROR:
        fail_msg("child: request failed: %s (seq %llu)", wsq_errname(-(int)r->topic),
                 (unsigned long long)r->seq);
        break;
    default:
        fail_msg("bad record kind %u", r->kind);
    }
}

/* Reads whole records from fd until the deadline (no deadline when < 0), EOF, or, with
 * stop_on_ready, the child's ready record. */
static void pump(world_t *w, int fd, int64_t deadline_ns, bool stop_on_ready, bool *eof,
                 bool *ready, unsigned char *buf, size_t *have)
{
    while (!*eof) {
        int timeout = -1;
        if (deadline_ns >= 0) {
            int64_t left = deadline_ns - wsq_mono_ns();
            if (left <= 0)
                break;
            timeout = (int)(left / 1000000) + 1;
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        int n = poll(&pfd, 1, timeout);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n >= 0);
        if (n == 0)
            continue;
        ssize_t got = read(fd, buf + *have, 65536 - *have);
        if (got < 0 && errno == EINTR)
            continue;
        assert_true(got >= 0);
        if (got == 0) {
            *eof = true;
            break;
        }
        *have += (size_t)got;
        size_t off = 0;
        for (; off + sizeof(rec_t) <= *have; off += sizeof(rec_t)) {
            rec_t r;
            memcpy(&r, buf + off, sizeof(r));
            if (r.kind == REC_READY) {
                *ready = true;
                if (stop_on_ready) {
                    off += sizeof(r);
                    memmove(buf, buf + off, *have - off);
                    *have -= off;
                    return;
                }
            }
            take_record(w, &r);
        }
        memmove(buf, buf + off, *have - off);
        *have -= off;
    }
}

typedef struct {
    world_t *w;
    topic_state_t *ts;
    unsigned topic;
    uint64_t expect;
    unsigned char *expect_buf;
} verify_ctx_t;

static int verify_cb(void *arg, const wsq_msg_view_t *m)
{
    verify_ctx_t *v = arg;
    if (m->seq != v->expect)
        fail_msg("%s: read seq %llu where %llu was expected (hole)", topics[v->topic],
                 (unsigned long long)m->seq, (unsigned long long)v->expect);
    v->expect++;
    slot_t *s = slot_at(v->ts, m->seq);
    uint64_t h = content_hash(m->flags, m->data, m->len);
    if (s->seen && s->hash != h)
        fail_msg("%s: seq %llu changed content after a restart (seq reused?)", topics[v->topic],
                 (unsigned long long)m->seq);
    if (s->seen)
        v->w->pinned++;
    s->seen = true;
    s->hash = h;
    if (s->confirmed) {
        size_t len = msg_len(s->producer, s->counter);
        if (m->len != len)
            fail_msg("%s: seq %llu has %zu bytes, producer %u sent %zu", topics[v->topic],
                     (unsigned long long)m->seq, m->len, s->producer, len);
        if (m->flags != msg_flags(s->producer, s->counter))
            fail_msg("%s: seq %llu flags %u differ", topics[v->topic], (unsigned long long)m->seq,
                     m->flags);
        msg_fill(v->expect_buf, len, s->producer, s->counter);
        if (memcmp(v->expect_buf, m->data, len) != 0)
            fail_msg("%s: seq %llu payload differs from what producer %u sent (counter %u)",
                     topics[v->topic], (unsigned long long)m->seq, s->producer, s->counter);
        v->w->verified++;
    }
    return 0;
}

static void check_report(void *arg, const char *topic, const char *what)
{
    (void)arg;
    print_error("check: topic %s: %s\n", topic, what);
}

/* Reopens the store after a kill and verifies everything known about it. */
static void verify_store(world_t *w, const char *dir, unsigned char *expect_buf)
{
    bool any = w->consumer_exists;
    for (unsigned t = 0; t < NTOPICS; t++)
        any |= w->t[t].max_seen > 0 || w->t[t].cap > 0;
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = dir;
    /* Once anything was confirmed the store must exist; before that the child may have died
     * before creating it (or half way through creating it, which a writable open completes). */
    o.flags = WSQ_STORE_EXCLUSIVE | (any ? 0 : WSQ_STORE_CREATE);
    o.sync = WSQ_SYNC_FULL;
    wsq_store_t *store = NULL;
    long busy = 0;
    wsq_err err = wsq_store_open(&o, &store, &busy);
    if (err == WSQ_ERR_BUSY)
        fail_msg("the dead child's lock is still held (pid %ld)", busy);
    assert_int_equal(err, WSQ_OK);

    uint32_t topic0_id = 0;
    for (unsigned t = 0; t < NTOPICS; t++) {
        topic_state_t *ts = &w->t[t];
        uint64_t max_conf = 0;
        for (uint64_t s = ts->cap; s-- > 1;) {
            if (ts->slots[s].confirmed) {
                max_conf = s;
                break;
            }
        }
        wsq_topic_info_t ti;
        err = wsq_store_topic_lookup(store, topics[t], strlen(topics[t]), &ti);
        if (err == WSQ_ERR_NOTFOUND && max_conf == 0 && ts->max_seen == 0 &&
            !(t == 0 && w->consumer_exists))
            continue;
        assert_int_equal(err, WSQ_OK);
        if (t == 0)
            topic0_id = ti.id;
        /* no retention here: everything ever committed is still there */
        assert_int_equal(ti.first_seq, 1);
        assert_int_equal(ti.count, ti.next_seq - 1);
        if (ti.next_seq - 1 < max_conf)
            fail_msg("%s: confirmed seq %llu lost: the topic ends at %llu", topics[t],
                     (unsigned long long)max_conf, (unsigned long long)(ti.next_seq - 1));
        if (ti.next_seq - 1 < ts->max_seen)
            fail_msg("%s: seq %llu was present after an earlier kill, the topic now ends at %llu",
                     topics[t], (unsigned long long)ts->max_seen,
                     (unsigned long long)(ti.next_seq - 1));
        verify_ctx_t v = {w, ts, t, 1, expect_buf};
        while (v.expect < ti.next_seq) {
            wsq_read_info_t info;
            uint64_t from = v.expect;
            assert_int_equal(
                wsq_store_read(store, ti.id, from, 4096, UINT64_MAX, verify_cb, &v, &info), WSQ_OK);
            assert_false(info.gap);
            assert_int_equal(info.next_seq, ti.next_seq);
            assert_true(info.count > 0);
            assert_int_equal(v.expect, from + info.count);
        }
        ts->max_seen = ti.next_seq - 1;
    }

    if (w->consumer_exists) {
        assert_true(topic0_id != 0);
        wsq_cstate_t cs;
        wsq_cstate_init(&cs);
        assert_int_equal(wsq_store_consumer_get(store, topic0_id, CONSUMER, strlen(CONSUMER), &cs),
                         WSQ_OK);
        if (cs.ack_floor < w->ack_confirmed)
            fail_msg("ack floor %llu is below the confirmed ack_upto %llu",
                     (unsigned long long)cs.ack_floor, (unsigned long long)w->ack_confirmed);
        if (cs.ack_floor < w->ack_floor_seen)
            fail_msg("ack floor went back from %llu to %llu", (unsigned long long)w->ack_floor_seen,
                     (unsigned long long)cs.ack_floor);
        assert_true(cs.ack_floor <= w->t[0].max_seen);
        w->ack_floor_seen = cs.ack_floor;
        wsq_cstate_fini(&cs);
    }

    uint64_t violations = 99;
    assert_int_equal(wsq_store_check(store, check_report, NULL, &violations), WSQ_OK);
    assert_int_equal(violations, 0);
    wsq_store_close(store);
}

/* The data directory, removed by the teardown even when the test failed. */
static char g_dir[64];

static int teardown_dir(void **state)
{
    (void)state;
    if (g_dir[0])
        rm_rf(g_dir);
    g_dir[0] = '\0';
    return 0;
}

static void test_store_crash_kill9_loses_no_confirmed_message(void **state)
{
    (void)state;
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/wsq-crash-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(g_dir, sizeof(g_dir), "%s", dir);
    char sub[96];
    snprintf(sub, sizeof(sub), "%s/store", dir);
    signal(SIGPIPE, SIG_IGN);

    uint64_t seed = (uint64_t)wsq_mono_ns() ^ (uint64_t)getpid();
    const char *env_seed = getenv("WSQ_CRASH_SEED");
    if (env_seed)
        seed = strtoull(env_seed, NULL, 0);
    print_message("seed %llu (set WSQ_CRASH_SEED to replay the delays)\n",
                  (unsigned long long)seed);

    world_t *w = calloc(1, sizeof(*w));
    unsigned char *buf = malloc(65536);
    unsigned char *expect_buf = malloc(MAX_PAYLOAD);
    assert_non_null(w);
    assert_non_null(buf);
    assert_non_null(expect_buf);
    int64_t t0 = wsq_mono_ns();
    unsigned cycle = 0;
    uint64_t rnd = seed;
    for (; cycle < CYCLES || (cycle < 2 * CYCLES && wsq_mono_ns() - t0 < TIME_BUDGET_NS / 2);
         cycle++) {
        if (cycle >= CYCLES && wsq_mono_ns() - t0 > TIME_BUDGET_NS)
            break;
        rnd = mix64(rnd);
        int64_t delay_ns = (int64_t)(5 + rnd % 146) * 1000000; /* 5 .. 150 ms */
        /* One cycle in five is killed 0.2-10 ms after the fork, so that kills also land during
         * open, recovery and the first commits; the others 5-150 ms after the child is ready,
         * among the appends. */
        bool from_fork = (rnd >> 32) % 5 == 0;
        if (from_fork)
            delay_ns = 200000 + (int64_t)((rnd >> 40) % 9800) * 1000;
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            child_main(sub, fds[1], cycle);
            _exit(7);
        }
        close(fds[1]);
        bool eof = false, ready = false;
        size_t have = 0;
        int64_t start = wsq_mono_ns();
        if (!from_fork) {
            /* wait for ready (a few ms), bounded */
            pump(w, fds[0], start + 10 * 1000000000ll, true, &eof, &ready, buf, &have);
            if (!ready)
                fail_msg("cycle %u: child never became ready (eof %d)", cycle, eof);
            start = wsq_mono_ns();
        }
        pump(w, fds[0], start + delay_ns, false, &eof, &ready, buf, &have);
        if (eof)
            fail_msg("cycle %u: child exited before the kill", cycle);
        kill(pid, SIGKILL);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        /* everything it wrote before dying */
        while (!eof)
            pump(w, fds[0], -1, false, &eof, &ready, buf, &have);
        assert_int_equal(have, 0); /* records are never torn */
        close(fds[0]);
        if (!ready)
            w->early_kills++;
        verify_store(w, sub, expect_buf);
    }
    int64_t t1 = wsq_mono_ns();
    uint64_t msgs = 0;
    for (unsigned t = 0; t < NTOPICS; t++)
        msgs += w->t[t].max_seen;
    print_message("%u cycles (%u killed before ready) in %.1f s: %llu appends confirmed, %llu "
                  "confirmed messages verified byte-exact, %llu pinned contents re-verified, %llu "
                  "messages in the store, %llu acks confirmed, final ack floor %llu\n",
                  cycle, w->early_kills, (double)(t1 - t0) / 1e9, (unsigned long long)w->confirmed,
                  (unsigned long long)w->verified, (unsigned long long)w->pinned,
                  (unsigned long long)msgs, (unsigned long long)w->acks,
                  (unsigned long long)w->ack_floor_seen);
    assert_true(cycle >= CYCLES);
    assert_true(w->confirmed > 0);
    assert_true(w->verified >= w->confirmed);
    assert_true(w->acks > 0);
    for (unsigned t = 0; t < NTOPICS; t++)
        free(w->t[t].slots);
    free(w);
    free(buf);
    free(expect_buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_store_crash_kill9_loses_no_confirmed_message, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
