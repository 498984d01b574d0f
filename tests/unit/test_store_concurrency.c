/*
 * Concurrency tests of the storage engine, written from the contract in include/wsq/store.h:
 *
 *   1. many producer threads append to a few topics through one store while reader threads read,
 *      look up and list during the commits; afterwards every topic holds exactly what was
 *      submitted, in an order that respects each producer's submit order;
 *   2. a second process opens the store read-only and tails a topic while this process commits
 *      (and grows the map under it);
 *   3. consumer operations from several threads, coalesced by the writer, end in exactly the state
 *      that the pure cstate rules predict;
 *   4. the map grows several times under readers that never fail.
 *
 * Worker threads never call cmocka: they note the first failure in a failbox that the test thread
 * asserts on after joining them.
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
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "wsq/clock.h"
#include "rm_rf.h"
#include "wsq/store.h"

/* --- helpers --------------------------------------------------------------------------------- */

/* The first failure seen by any thread, and how many there were. */
typedef struct {
    pthread_mutex_t m;
    atomic_uint n;
    char first[512];
} failbox_t;

static failbox_t g_fail = {.m = PTHREAD_MUTEX_INITIALIZER};

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void failf(const char *fmt, ...)
{
    if (atomic_fetch_add(&g_fail.n, 1) == 0) {
        pthread_mutex_lock(&g_fail.m);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g_fail.first, sizeof(g_fail.first), fmt, ap);
        va_end(ap);
        pthread_mutex_unlock(&g_fail.m);
    }
}

static void fail_reset(void)
{
    atomic_store(&g_fail.n, 0);
    g_fail.first[0] = '\0';
}

/* Asserts (on the test thread) that no worker failed. */
static void assert_no_failures(void)
{
    unsigned n = atomic_load(&g_fail.n);
    if (n) {
        pthread_mutex_lock(&g_fail.m);
        print_error("%u failure(s); first: %s\n", n, g_fail.first);
        pthread_mutex_unlock(&g_fail.m);
    }
    assert_int_equal(n, 0);
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void fill_bytes(unsigned char *buf, size_t len, uint64_t seed)
{
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = mix64(seed + i);
        size_t n = len - i < 8 ? len - i : 8;
        memcpy(buf + i, &v, n);
    }
}

/*
 * A message is identified by (producer, counter). Its payload starts with both (u32 LE each) and
 * goes on with bytes derived from them, so a reader can verify any message it meets on its own.
 */
#define MSG_ID_LEN 8u

static uint64_t msg_seed(uint32_t producer, uint32_t counter)
{
    return (uint64_t)producer << 32 | counter;
}

static size_t msg_len(uint32_t producer, uint32_t counter, size_t min, size_t span)
{
    return min + (size_t)(mix64(msg_seed(producer, counter) ^ 0x5151) % span);
}

static uint32_t msg_flags(uint32_t producer, uint32_t counter)
{
    return (mix64(msg_seed(producer, counter) ^ 0xF1A6) & 1) ? WSQ_MSG_BINARY : 0;
}

static void msg_fill(unsigned char *buf, size_t len, uint32_t producer, uint32_t counter)
{
    for (int i = 0; i < 4; i++) {
        buf[i] = (unsigned char)(producer >> (8 * i));
        buf[4 + i] = (unsigned char)(counter >> (8 * i));
    }
    fill_bytes(buf + MSG_ID_LEN, len - MSG_ID_LEN, msg_seed(producer, counter));
}

static wsq_wreq_t *msg_new(const char *topic, uint32_t producer, uint32_t counter, size_t min,
                           size_t span)
{
    size_t len = msg_len(producer, counter, min, span);
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_APPEND, topic, strlen(topic), NULL, 0, len);
    if (r == NULL)
        return NULL;
    msg_fill(r->data, len, producer, counter);
    r->flags = msg_flags(producer, counter);
    r->user[0] = producer;
    r->user[1] = counter;
    return r;
}

/* Checks a stored message against the one its first bytes name. Returns NULL when it matches,
 * else what is wrong; *producer and *counter get the identity. */
static const char *msg_verify(const wsq_msg_view_t *m, uint32_t nproducers, size_t min, size_t span,
                              uint32_t *producer, uint32_t *counter)
{
    if (m->len < MSG_ID_LEN)
        return "payload too short to carry its identity";
    const unsigned char *p = m->data;
    uint32_t pr = 0, c = 0;
    for (int i = 0; i < 4; i++) {
        pr |= (uint32_t)p[i] << (8 * i);
        c |= (uint32_t)p[4 + i] << (8 * i);
    }
    *producer = pr;
    *counter = c;
    if (pr >= nproducers)
        return "unknown producer";
    if (m->len != msg_len(pr, c, min, span))
        return "length differs";
    if (m->flags != msg_flags(pr, c))
        return "flags differ";
    unsigned char buf[8192];
    size_t off = MSG_ID_LEN;
    uint64_t seed = msg_seed(pr, c);
    while (off < m->len) {
        size_t n = m->len - off < sizeof(buf) ? m->len - off : sizeof(buf);
        /* fill_bytes is position based: regenerate the chunk at its offset */
        for (size_t i = 0; i < n; i += 8) {
            uint64_t v = mix64(seed + (off - MSG_ID_LEN) + i);
            size_t k = n - i < 8 ? n - i : 8;
            memcpy(buf + i, &v, k);
        }
        if (memcmp(buf, p + off, n) != 0)
            return "payload bytes differ";
        off += n;
    }
    return NULL;
}

/* The running test's data directory, removed by the teardown even when the test failed. */
static char g_dir[64];

static void make_dir(char *buf, size_t cap, const char *tag)
{
    snprintf(buf, cap, "/tmp/wsq-conc-%s-XXXXXX", tag);
    assert_non_null(mkdtemp(buf));
    snprintf(g_dir, sizeof(g_dir), "%s", buf);
}

static int teardown_dir(void **state)
{
    (void)state;
    if (g_dir[0])
        rm_rf(g_dir);
    g_dir[0] = '\0';
    return 0;
}

static void check_report(void *arg, const char *topic, const char *what)
{
    (void)arg;
    print_error("check: topic %s: %s\n", topic, what);
}

static void assert_store_checks(wsq_store_t *store)
{
    uint64_t violations = 99;
    assert_int_equal(wsq_store_check(store, check_report, NULL, &violations), WSQ_OK);
    assert_int_equal(violations, 0);
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* Commit statistics from on_commit (writer thread), for successful commits. */
typedef struct {
    atomic_uint_fast64_t commits;
    atomic_uint_fast64_t requests;
    atomic_uint_fast64_t appends;
    atomic_uint_fast64_t multi; /* commits that completed more than one request */
    uint64_t last_txn;          /* writer thread only */
} commit_stats_t;

static void on_commit(void *arg, const wsq_commit_info_t *info)
{
    commit_stats_t *cs = arg;
    if (info->err != WSQ_OK) {
        /* a batch that failed as a whole: no test here expects one */
        failf("on_commit: batch failed: %s", wsq_errname(info->err));
        return;
    }
    if (cs->last_txn && info->txn_id != cs->last_txn + 1)
        failf("on_commit: txn_id %llu after %llu", (unsigned long long)info->txn_id,
              (unsigned long long)cs->last_txn);
    cs->last_txn = info->txn_id;
    uint32_t appended = 0;
    for (uint32_t i = 0; i < info->n_topics; i++)
        appended += info->topics[i].appended;
    if (appended != info->n_appends)
        failf("on_commit: topics say %u appends, info says %u", appended, info->n_appends);
    atomic_fetch_add(&cs->commits, 1);
    atomic_fetch_add(&cs->requests, info->n_requests);
    atomic_fetch_add(&cs->appends, info->n_appends);
    if (info->n_requests > 1)
        atomic_fetch_add(&cs->multi, 1);
}

/* ==============================================================================================
 * 1. producers and in-process readers
 * ============================================================================================ */

#define P1_PRODUCERS 16u
#define P1_TOPICS 3u
#define P1_MSGS 1500u /* per producer */
#define P1_WINDOW 48u
#define P1_READERS 3u
#define P1_MIN 8u
#define P1_SPAN 600u

static const char *const p1_topics[P1_TOPICS] = {"conc.a", "conc/b", "conc.c-1"};

typedef struct {
    wsq_store_t *store;
    uint32_t idx;
    pthread_mutex_t m;
    pthread_cond_t c;
    unsigned inflight;
    bool waiting;
    uint64_t seq[P1_MSGS];  /* seq the writer confirmed for each message */
    uint32_t tid[P1_MSGS];  /* topic id it confirmed */
    uint8_t topic[P1_MSGS]; /* topic index it was sent to */
} producer_t;

static unsigned p1_topic_of(uint32_t producer, uint32_t counter)
{
    return (unsigned)(mix64(msg_seed(producer, counter) ^ 0x70) % P1_TOPICS);
}

static void producer_done(wsq_wreq_t *r, void *arg)
{
    producer_t *p = arg;
    uint32_t i = (uint32_t)r->user[1];
    if (r->err != WSQ_OK) {
        failf("producer %u msg %u: completion error %s", p->idx, i, wsq_errname(r->err));
    } else {
        p->seq[i] = r->seq;
        p->tid[i] = r->topic_id;
    }
    wsq_wreq_free(&r);
    pthread_mutex_lock(&p->m);
    p->inflight--;
    bool wake = p->waiting;
    pthread_mutex_unlock(&p->m);
    if (wake)
        pthread_cond_signal(&p->c);
}

static void *producer_main(void *arg)
{
    producer_t *p = arg;
    uint64_t rnd = mix64(p->idx + 77);
    uint32_t sent = 0;
    while (sent < P1_MSGS) {
        pthread_mutex_lock(&p->m);
        while (p->inflight >= P1_WINDOW) {
            p->waiting = true;
            pthread_cond_wait(&p->c, &p->m);
            p->waiting = false;
        }
        unsigned room = P1_WINDOW - p->inflight;
        pthread_mutex_unlock(&p->m);

        rnd = mix64(rnd);
        unsigned run = 1 + (unsigned)(rnd % 16);
        if (run > room)
            run = room;
        if (run > P1_MSGS - sent)
            run = P1_MSGS - sent;
        wsq_wreq_t *head = NULL, **tail = &head;
        for (unsigned k = 0; k < run; k++) {
            uint32_t i = sent + k;
            unsigned t = p1_topic_of(p->idx, i);
            p->topic[i] = (uint8_t)t;
            wsq_wreq_t *r = msg_new(p1_topics[t], p->idx, i, P1_MIN, P1_SPAN);
            if (r == NULL) {
                failf("out of memory");
                return NULL;
            }
            r->done = producer_done;
            r->arg = p;
            *tail = r;
            tail = &r->next;
        }
        pthread_mutex_lock(&p->m);
        p->inflight += run;
        pthread_mutex_unlock(&p->m);
        /* single requests through wsq_store_submit, runs through wsq_store_submit_list */
        wsq_err err =
            run == 1 ? wsq_store_submit(p->store, head) : wsq_store_submit_list(p->store, head);
        if (err != WSQ_OK) {
            failf("producer %u: submit: %s", p->idx, wsq_errname(err));
            for (wsq_wreq_t *r = head, *nx; r; r = nx) {
                nx = r->next;
                wsq_wreq_free(&r);
            }
            return NULL;
        }
        sent += run;
    }
    pthread_mutex_lock(&p->m);
    while (p->inflight > 0) {
        p->waiting = true;
        pthread_cond_wait(&p->c, &p->m);
        p->waiting = false;
    }
    pthread_mutex_unlock(&p->m);
    return NULL;
}

typedef struct {
    wsq_store_t *store;
    uint32_t idx;
    atomic_bool *stop;
    uint64_t reads, msgs, lookups, lists; /* statistics */
} reader_t;

typedef struct {
    uint64_t expect;
    uint32_t nproducers;
    size_t min, span;
    const char *topic;
} tail_ctx_t;

static int tail_cb(void *arg, const wsq_msg_view_t *m)
{
    tail_ctx_t *c = arg;
    if (m->seq != c->expect) {
        failf("read %s: got seq %llu, expected %llu", c->topic, (unsigned long long)m->seq,
              (unsigned long long)c->expect);
        return 1;
    }
    c->expect++;
    uint32_t pr, ctr;
    const char *why = msg_verify(m, c->nproducers, c->min, c->span, &pr, &ctr);
    if (why) {
        failf("read %s seq %llu: %s", c->topic, (unsigned long long)m->seq, why);
        return 1;
    }
    return 0;
}

/* tail_cb that also records the identity of every message by seq. */
typedef struct {
    tail_ctx_t tail;
    uint64_t *got; /* seq -> msg_seed(producer, counter) + 1 */
    uint64_t max;
} ident_ctx_t;

static int ident_cb(void *arg, const wsq_msg_view_t *m)
{
    ident_ctx_t *ic = arg;
    if (tail_cb(&ic->tail, m) != 0)
        return 1;
    if (m->seq > ic->max) {
        failf("seq %llu beyond %llu", (unsigned long long)m->seq, (unsigned long long)ic->max);
        return 1;
    }
    const unsigned char *p = m->data;
    uint32_t pr = 0, c = 0;
    for (int i = 0; i < 4; i++) {
        pr |= (uint32_t)p[i] << (8 * i);
        c |= (uint32_t)p[4 + i] << (8 * i);
    }
    ic->got[m->seq] = msg_seed(pr, c) + 1;
    return 0;
}

static void *p1_reader_main(void *arg)
{
    reader_t *rd = arg;
    uint64_t pos[P1_TOPICS], last_next[P1_TOPICS];
    bool known[P1_TOPICS] = {false};
    for (unsigned t = 0; t < P1_TOPICS; t++)
        pos[t] = last_next[t] = 1;
    wsq_consumer_info_t *cons = calloc(16, sizeof(*cons));
    wsq_topic_info_t *tl = calloc(8, sizeof(*tl));
    if (cons == NULL || tl == NULL) {
        failf("out of memory");
        goto out;
    }
    for (uint64_t iter = 0; !atomic_load(rd->stop) && atomic_load(&g_fail.n) == 0; iter++) {
        for (unsigned t = 0; t < P1_TOPICS; t++) {
            wsq_topic_info_t ti;
            wsq_err err =
                wsq_store_topic_lookup(rd->store, p1_topics[t], strlen(p1_topics[t]), &ti);
            rd->lookups++;
            if (err == WSQ_ERR_NOTFOUND && !known[t])
                continue;
            if (err != WSQ_OK) {
                failf("reader %u: lookup %s: %s", rd->idx, p1_topics[t], wsq_errname(err));
                goto out;
            }
            known[t] = true;
            if (ti.first_seq != 1 || ti.next_seq < last_next[t] || ti.count != ti.next_seq - 1) {
                failf("reader %u: %s: first %llu next %llu (was %llu) count %llu", rd->idx,
                      p1_topics[t], (unsigned long long)ti.first_seq,
                      (unsigned long long)ti.next_seq, (unsigned long long)last_next[t],
                      (unsigned long long)ti.count);
                goto out;
            }
            last_next[t] = ti.next_seq;
            /* Now and then re-read the whole topic in one transaction, else tail it. */
            uint64_t from = (iter % 97 == rd->idx) ? 1 : pos[t];
            tail_ctx_t ctx = {from, P1_PRODUCERS, P1_MIN, P1_SPAN, p1_topics[t]};
            wsq_read_info_t info;
            uint32_t max = from == 1 ? UINT32_MAX : 64;
            err = wsq_store_read(rd->store, ti.id, from, max, UINT64_MAX, tail_cb, &ctx, &info);
            rd->reads++;
            if (err != WSQ_OK) {
                failf("reader %u: read %s from %llu: %s", rd->idx, p1_topics[t],
                      (unsigned long long)from, wsq_errname(err));
                goto out;
            }
            if (info.gap || info.first_seq != 1 || info.next_seq < ti.next_seq ||
                (info.count && info.last_seq != from + info.count - 1) ||
                ctx.expect != from + info.count) {
                failf("reader %u: read %s from %llu: gap %d first %llu next %llu count %u last "
                      "%llu",
                      rd->idx, p1_topics[t], (unsigned long long)from, info.gap,
                      (unsigned long long)info.first_seq, (unsigned long long)info.next_seq,
                      info.count, (unsigned long long)info.last_seq);
                goto out;
            }
            if (from == 1 && info.count != info.next_seq - 1) {
                failf("reader %u: full read of %s returned %u of %llu", rd->idx, p1_topics[t],
                      info.count, (unsigned long long)(info.next_seq - 1));
                goto out;
            }
            rd->msgs += info.count;
            if (from + info.count > pos[t])
                pos[t] = from + info.count;
        }
        unsigned n = 0;
        wsq_err err = wsq_store_consumer_list(rd->store, 0, 0, NULL, 16, cons, &n);
        if (err != WSQ_OK || n != 2 * P1_TOPICS) {
            failf("reader %u: consumer_list: %s, n %u", rd->idx, wsq_errname(err), n);
            goto out;
        }
        for (unsigned i = 0; i < n; i++) {
            if (cons[i].ack_floor != 0) {
                failf("reader %u: consumer %s moved", rd->idx, cons[i].name);
                goto out;
            }
        }
        err = wsq_store_topic_list(rd->store, NULL, 8, tl, &n);
        if (err != WSQ_OK || n != P1_TOPICS) {
            failf("reader %u: topic_list: %s, n %u", rd->idx, wsq_errname(err), n);
            goto out;
        }
        rd->lists++;
    }
out:
    free(cons);
    free(tl);
    return NULL;
}

static wsq_err consumer_open(wsq_store_t *store, const char *topic, const char *name, uint64_t seq,
                             wsq_cstate_t *state, uint32_t *topic_id)
{
    wsq_wreq_t *r =
        wsq_wreq_new(WSQ_WOP_CONSUMER_OPEN, topic, strlen(topic), name, strlen(name), 0);
    if (r == NULL)
        return WSQ_ERR_NOMEM;
    r->seq = seq;
    wsq_err err = wsq_store_call(store, r);
    if (err == WSQ_OK && state)
        err = wsq_cstate_copy(state, &r->state);
    if (topic_id)
        *topic_id = r->topic_id;
    wsq_wreq_free(&r);
    return err;
}

static void test_store_concurrent_producers_keep_order(void **state)
{
    (void)state;
    fail_reset();
    char dir[64];
    make_dir(dir, sizeof(dir), "prod");
    commit_stats_t cstats = {0};
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = dir;
    o.flags = WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE;
    o.sync = WSQ_SYNC_NONE; /* short commits: more interleavings with the readers */
    o.batch_max_msgs = 256; /* several commits per window round */
    o.on_commit = on_commit;
    o.commit_arg = &cstats;
    wsq_store_t *store = NULL;
    assert_int_equal(wsq_store_open(&o, &store, NULL), WSQ_OK);
    assert_int_equal(wsq_store_start(store), WSQ_OK);

    /* Two consumers per topic, so that consumer_list has something to list. The consumer opens
     * create the topics as well; the readers' lookups also cover "not yet created" for none. */
    for (unsigned t = 0; t < P1_TOPICS; t++) {
        assert_int_equal(consumer_open(store, p1_topics[t], "x", 0, NULL, NULL), WSQ_OK);
        assert_int_equal(consumer_open(store, p1_topics[t], "y", WSQ_SEQ_END, NULL, NULL), WSQ_OK);
    }

    atomic_bool stop = false;
    reader_t readers[P1_READERS];
    pthread_t rth[P1_READERS];
    for (uint32_t i = 0; i < P1_READERS; i++) {
        readers[i] = (reader_t){.store = store, .idx = i, .stop = &stop};
        assert_int_equal(pthread_create(&rth[i], NULL, p1_reader_main, &readers[i]), 0);
    }
    producer_t *prods = calloc(P1_PRODUCERS, sizeof(*prods));
    assert_non_null(prods);
    pthread_t pth[P1_PRODUCERS];
    int64_t t0 = wsq_mono_ns();
    for (uint32_t i = 0; i < P1_PRODUCERS; i++) {
        prods[i].store = store;
        prods[i].idx = i;
        pthread_mutex_init(&prods[i].m, NULL);
        pthread_cond_init(&prods[i].c, NULL);
        assert_int_equal(pthread_create(&pth[i], NULL, producer_main, &prods[i]), 0);
    }
    for (uint32_t i = 0; i < P1_PRODUCERS; i++)
        pthread_join(pth[i], NULL);
    int64_t t1 = wsq_mono_ns();
    sleep_us(20000); /* let the readers catch up once more */
    atomic_store(&stop, true);
    uint64_t rreads = 0, rmsgs = 0;
    for (uint32_t i = 0; i < P1_READERS; i++) {
        pthread_join(rth[i], NULL);
        rreads += readers[i].reads;
        rmsgs += readers[i].msgs;
    }
    assert_no_failures();
    wsq_store_stop(store);

    uint64_t commits = atomic_load(&cstats.commits);
    print_message("%u producers x %u msgs in %.2f s: %llu commits (%llu with >1 request); "
                  "readers: %llu reads, %llu msgs verified\n",
                  P1_PRODUCERS, P1_MSGS, (double)(t1 - t0) / 1e9, (unsigned long long)commits,
                  (unsigned long long)atomic_load(&cstats.multi), (unsigned long long)rreads,
                  (unsigned long long)rmsgs);
    assert_int_equal(atomic_load(&cstats.appends), (uint64_t)P1_PRODUCERS * P1_MSGS);
    assert_true(atomic_load(&cstats.multi) > 0);
    assert_true(rmsgs > 0);

    /* Expected per topic: how many messages, and the seq each one was confirmed with. */
    uint64_t expect_count[P1_TOPICS] = {0};
    uint32_t tids[P1_TOPICS];
    for (unsigned t = 0; t < P1_TOPICS; t++) {
        wsq_topic_info_t ti;
        assert_int_equal(wsq_store_topic_lookup(store, p1_topics[t], strlen(p1_topics[t]), &ti),
                         WSQ_OK);
        tids[t] = ti.id;
    }
    for (uint32_t p = 0; p < P1_PRODUCERS; p++) {
        for (uint32_t i = 0; i < P1_MSGS; i++) {
            unsigned t = prods[p].topic[i];
            expect_count[t]++;
            assert_int_equal(prods[p].tid[i], tids[t]);
            assert_true(prods[p].seq[i] >= 1);
            /* confirmed seqs of one producer on one topic increase in submit order */
            for (uint32_t j = i; j-- > 0;) {
                if (prods[p].topic[j] == t) {
                    assert_true(prods[p].seq[j] < prods[p].seq[i]);
                    break;
                }
            }
        }
    }
    /* Every stored message is byte-exact and is the one confirmed at its seq. With the counts
     * this is a bijection between what was submitted and what is stored. */
    for (unsigned t = 0; t < P1_TOPICS; t++) {
        wsq_topic_info_t ti;
        assert_int_equal(wsq_store_topic_get(store, tids[t], &ti), WSQ_OK);
        assert_int_equal(ti.first_seq, 1);
        assert_int_equal(ti.next_seq, expect_count[t] + 1);
        assert_int_equal(ti.count, expect_count[t]);
        uint64_t n = expect_count[t];
        ident_ctx_t ic = {.tail = {1, P1_PRODUCERS, P1_MIN, P1_SPAN, p1_topics[t]},
                          .got = calloc(n + 1, sizeof(uint64_t)),
                          .max = n};
        uint64_t *want = calloc(n + 1, sizeof(*want)); /* seq -> identity + 1 */
        assert_non_null(ic.got);
        assert_non_null(want);
        for (uint32_t p = 0; p < P1_PRODUCERS; p++) {
            for (uint32_t i = 0; i < P1_MSGS; i++) {
                if (prods[p].topic[i] != t)
                    continue;
                assert_true(prods[p].seq[i] <= n);
                assert_int_equal(want[prods[p].seq[i]], 0); /* no seq confirmed twice */
                want[prods[p].seq[i]] = msg_seed(p, i) + 1;
            }
        }
        while (ic.tail.expect < ti.next_seq) {
            wsq_read_info_t info;
            uint64_t from = ic.tail.expect;
            assert_int_equal(
                wsq_store_read(store, tids[t], from, 1000, UINT64_MAX, ident_cb, &ic, &info),
                WSQ_OK);
            assert_no_failures();
            assert_true(info.count > 0);
            assert_int_equal(ic.tail.expect, from + info.count);
        }
        for (uint64_t s = 1; s <= n; s++)
            assert_int_equal(ic.got[s], want[s]);
        free(ic.got);
        free(want);
    }
    assert_store_checks(store);
    wsq_store_close(store);
    for (uint32_t i = 0; i < P1_PRODUCERS; i++) {
        pthread_mutex_destroy(&prods[i].m);
        pthread_cond_destroy(&prods[i].c);
    }
    free(prods);
    rm_rf(dir);
}

/* A window of in-flight requests whose completions run on the writer thread. The writer wakes
 * the waiting thread only when it waits, never per message. */
typedef struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    unsigned inflight;
    unsigned wait_for; /* wake when inflight <= wait_for */
    bool waiting;
} window_t;

static void window_init(window_t *w)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->m, NULL);
    pthread_cond_init(&w->c, NULL);
}

static void window_fini(window_t *w)
{
    pthread_mutex_destroy(&w->m);
    pthread_cond_destroy(&w->c);
}

static void window_add(window_t *w, unsigned n)
{
    pthread_mutex_lock(&w->m);
    w->inflight += n;
    pthread_mutex_unlock(&w->m);
}

/* Called by a completion. Signals under the mutex: once the waiter can take it, this completion
 * no longer touches the window, which the waiter may then destroy. */
static void window_release(window_t *w)
{
    pthread_mutex_lock(&w->m);
    w->inflight--;
    if (w->waiting && w->inflight <= w->wait_for) {
        w->waiting = false;
        pthread_cond_signal(&w->c);
    }
    pthread_mutex_unlock(&w->m);
}

/* Waits until at most max requests are in flight. A completion that never comes is a failure
 * (noted after 60 s), not a hang. */
static void window_wait(window_t *w, unsigned max)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 60;
    pthread_mutex_lock(&w->m);
    while (w->inflight > max) {
        w->wait_for = max;
        w->waiting = true;
        if (pthread_cond_timedwait(&w->c, &w->m, &ts) == ETIMEDOUT) {
            failf("%u requests never completed", w->inflight);
            w->inflight = 0; /* give up on them: the test has failed */
        }
    }
    w->waiting = false;
    pthread_mutex_unlock(&w->m);
}

static void append_window_done(wsq_wreq_t *r, void *arg)
{
    if (r->err != WSQ_OK)
        failf("append %llu/%llu: %s", (unsigned long long)r->user[0],
              (unsigned long long)r->user[1], wsq_errname(r->err));
    wsq_wreq_free(&r);
    window_release(arg);
}

/* Appends messages [from, to) of producer to topic through a window of `window` requests,
 * submitted in runs of up to `run`. Returns false on a submit failure (noted). */
static bool append_range(wsq_store_t *store, window_t *win, const char *topic, uint32_t producer,
                         uint32_t from, uint32_t to, unsigned window, unsigned run, size_t min,
                         size_t span)
{
    uint32_t i = from;
    while (i < to) {
        window_wait(win, window - run);
        wsq_wreq_t *head = NULL, **tail = &head;
        unsigned k = 0;
        for (; k < run && i < to; k++, i++) {
            wsq_wreq_t *r = msg_new(topic, producer, i, min, span);
            if (r == NULL) {
                failf("out of memory");
                return false;
            }
            r->done = append_window_done;
            r->arg = win;
            *tail = r;
            tail = &r->next;
        }
        window_add(win, k);
        wsq_err err = wsq_store_submit_list(store, head);
        if (err != WSQ_OK) {
            failf("submit: %s", wsq_errname(err));
            for (wsq_wreq_t *r = head, *nx; r; r = nx) {
                nx = r->next;
                wsq_wreq_free(&r);
            }
            return false;
        }
    }
    return true;
}

/* ==============================================================================================
 * 2. a second process reads while this one commits
 * ============================================================================================ */

#define P2_TOPIC "proc.tail"
#define P2_MSGS 16000u
#define P2_MIN 512u
#define P2_SPAN 1024u /* ~16 MiB in all: the 1 MiB map grows five times */

typedef struct {
    uint64_t open_attempts;
    uint64_t open_errors;   /* errors other than WSQ_ERR_NOSTORE before the first open */
    int32_t first_open_err; /* the first of them */
    int32_t pad;
    uint64_t reads;
    uint64_t msgs;         /* messages verified */
    uint64_t next_changes; /* times next_seq was seen to grow */
    uint64_t map_sizes;    /* distinct map sizes seen through wsq_store_stats */
} child_report_t;

static int child_fail(const char *what, wsq_err err)
{
    fprintf(stderr, "reader process: %s: %s\n", what, wsq_errname(err));
    return 20;
}

/* The read-only process. Returns its exit status: 0 when every read was consistent. */
static int p2_child(const char *dir, int cmd_fd, int rep_fd)
{
    child_report_t rep = {0};
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = dir;
    o.flags = WSQ_STORE_READONLY;
    wsq_store_t *store = NULL;
    int64_t deadline = wsq_mono_ns() + 60 * 1000000000ll;
    for (;;) {
        rep.open_attempts++;
        wsq_err err = wsq_store_open(&o, &store, NULL);
        if (err == WSQ_OK)
            break;
        /* While the writer creates the store, a read-only open may meet a half-made one. */
        if (err != WSQ_ERR_NOSTORE && rep.open_errors++ == 0)
            rep.first_open_err = err;
        if (wsq_mono_ns() > deadline)
            return child_fail("open never succeeded", err);
        sleep_us(200);
    }
    uint64_t pos = 1, last_next = 1, final = 0, last_map = 0;
    uint32_t id = 0;
    bool known = false, finishing = false;
    int rc = 0;
    for (uint64_t iter = 0;; iter++) {
        if (!finishing) {
            struct pollfd pfd = {cmd_fd, POLLIN, 0};
            if (poll(&pfd, 1, 0) == 1) {
                if (read(cmd_fd, &final, sizeof(final)) != sizeof(final)) {
                    rc = child_fail("command pipe", WSQ_ERR_IO);
                    goto out;
                }
                finishing = true;
            }
        }
        wsq_topic_info_t ti;
        wsq_err err = wsq_store_topic_lookup(store, P2_TOPIC, strlen(P2_TOPIC), &ti);
        if (err == WSQ_ERR_NOTFOUND && !known && !finishing) {
            sleep_us(100);
            continue;
        }
        if (err != WSQ_OK) {
            rc = child_fail("lookup", err);
            goto out;
        }
        if (known && ti.id != id) {
            rc = child_fail("topic id changed", WSQ_ERR_CORRUPT);
            goto out;
        }
        known = true;
        id = ti.id;
        if (ti.first_seq != 1 || ti.next_seq < last_next || ti.count != ti.next_seq - 1) {
            rc = child_fail("topic went backwards or has a hole", WSQ_ERR_CORRUPT);
            goto out;
        }
        if (ti.next_seq > last_next)
            rep.next_changes++;
        last_next = ti.next_seq;
        tail_ctx_t ctx = {pos, 1, P2_MIN, P2_SPAN, P2_TOPIC};
        wsq_read_info_t info;
        err = wsq_store_read(store, id, pos, 256, UINT64_MAX, tail_cb, &ctx, &info);
        rep.reads++;
        if (err != WSQ_OK) {
            rc = child_fail("read", err);
            goto out;
        }
        if (atomic_load(&g_fail.n)) {
            fprintf(stderr, "reader process: %s\n", g_fail.first);
            rc = 21;
            goto out;
        }
        if (info.next_seq < ti.next_seq || ctx.expect != pos + info.count ||
            (info.count == 0 && pos < info.next_seq)) {
            rc = child_fail("read returned less than the topic holds", WSQ_ERR_CORRUPT);
            goto out;
        }
        pos += info.count;
        rep.msgs += info.count;
        if (iter % 16 == 0) {
            wsq_store_stats_t st;
            if ((err = wsq_store_stats(store, &st)) != WSQ_OK) {
                rc = child_fail("stats", err);
                goto out;
            }
            if (st.map_size != last_map)
                rep.map_sizes++;
            last_map = st.map_size;
        }
        if (finishing && pos - 1 >= final) {
            if (pos - 1 != final || info.next_seq - 1 != final) {
                rc = child_fail("final count differs", WSQ_ERR_CORRUPT);
                goto out;
            }
            break;
        }
        if (wsq_mono_ns() > deadline) {
            rc = child_fail("timed out", WSQ_ERR_UNAVAILABLE);
            goto out;
        }
        if (info.count == 0)
            sleep_us(100);
    }
out:
    wsq_store_close(store);
    if (write(rep_fd, &rep, sizeof(rep)) != sizeof(rep) && rc == 0)
        rc = 22;
    return rc;
}

static void test_store_second_process_reads_while_writer_commits(void **state)
{
    (void)state;
    fail_reset();
    char dir[64];
    make_dir(dir, sizeof(dir), "proc");
    char sub[96];
    snprintf(sub, sizeof(sub), "%s/store", dir); /* does not exist yet */
    int cmd[2], rep[2];
    assert_int_equal(pipe(cmd), 0);
    assert_int_equal(pipe(rep), 0);
    signal(SIGPIPE, SIG_IGN);
    /* Fork before this process opens anything, so that no LMDB handle crosses the fork. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(cmd[1]);
        close(rep[0]);
        _exit(p2_child(sub, cmd[0], rep[1]));
    }
    close(cmd[0]);
    close(rep[1]);
    sleep_us(30000); /* the reader polls a store that does not exist yet */

    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = sub;
    o.flags = WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE;
    o.sync = WSQ_SYNC_FULL;
    o.map_size_initial = 1u << 20;
    o.map_size_max = 256u << 20;
    wsq_store_t *store = NULL;
    assert_int_equal(wsq_store_open(&o, &store, NULL), WSQ_OK);
    assert_int_equal(wsq_store_start(store), WSQ_OK);
    window_t win;
    window_init(&win);
    /* Slowly at first, so that the reader sees many small commits, then at full speed. */
    bool ok = true;
    for (uint32_t i = 0; ok && i < 400; i += 4) {
        ok = append_range(store, &win, P2_TOPIC, 0, i, i + 4, 8, 4, P2_MIN, P2_SPAN);
        window_wait(&win, 0);
        sleep_us(500);
    }
    if (ok)
        ok = append_range(store, &win, P2_TOPIC, 0, 400, P2_MSGS, 256, 32, P2_MIN, P2_SPAN);
    window_wait(&win, 0);
    assert_no_failures();
    assert_true(ok);
    wsq_store_stats_t st;
    assert_int_equal(wsq_store_stats(store, &st), WSQ_OK);

    uint64_t final = P2_MSGS;
    assert_int_equal(write(cmd[1], &final, sizeof(final)), sizeof(final));
    child_report_t cr;
    memset(&cr, 0, sizeof(cr));
    ssize_t n = read(rep[0], &cr, sizeof(cr));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(cmd[1]);
    close(rep[0]);
    print_message("reader process: %llu open attempts (%llu errors other than no_store, first "
                  "%s), %llu reads, %llu msgs verified, next_seq grew %llu times, %llu map sizes; "
                  "writer map %llu MiB\n",
                  (unsigned long long)cr.open_attempts, (unsigned long long)cr.open_errors,
                  wsq_errname((wsq_err)cr.first_open_err), (unsigned long long)cr.reads,
                  (unsigned long long)cr.msgs, (unsigned long long)cr.next_changes,
                  (unsigned long long)cr.map_sizes, (unsigned long long)(st.map_size >> 20));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(n, sizeof(cr));
    assert_int_equal(cr.msgs, P2_MSGS);
    assert_true(cr.next_changes >= 10); /* it really read while the writer committed */
    assert_true(st.map_size >= (8u << 20));
    assert_true(cr.map_sizes >= 2); /* and it followed at least one map growth */
    window_fini(&win);
    assert_store_checks(store);
    wsq_store_close(store);
    rm_rf(dir);
}

/* ==============================================================================================
 * 3. consumer operations from several threads
 * ============================================================================================ */

#define P3_MSGS 400u
#define P3_THREADS 4u
#define P3_PER_THREAD 2u
#define P3_ROUNDS 120u
#define P3_TOPIC "cons.ops"

typedef struct {
    wsq_store_t *store;
    uint32_t topic_id;
    unsigned idx;
    window_t win;
    wsq_cstate_t model[P3_PER_THREAD];
    char names[P3_PER_THREAD][16];
    uint64_t ops;
} cthread_t;

static void cop_done(wsq_wreq_t *r, void *arg)
{
    cthread_t *ct = arg;
    if (r->err != WSQ_OK)
        failf("consumer %s op %d seq %llu: %s", r->consumer, (int)r->op, (unsigned long long)r->seq,
              wsq_errname(r->err));
    else if (r->op == WSQ_WOP_CONSUMER_DELIVERED && r->count != r->user[1])
        failf("consumer %s delivered seq %llu: count %u, model says %llu", r->consumer,
              (unsigned long long)r->seq, r->count, (unsigned long long)r->user[1]);
    wsq_wreq_free(&r);
    window_release(&ct->win);
}

/* Generates one valid operation on consumer k, applies it to the model, and returns the request
 * (NULL when the consumer has nothing left to do). */
static wsq_wreq_t *cop_gen(cthread_t *ct, unsigned k, uint64_t *rnd)
{
    wsq_cstate_t *m = &ct->model[k];
    *rnd = mix64(*rnd);
    unsigned pick = (unsigned)(*rnd % 100);
    uint64_t x = mix64(*rnd ^ 0xABCD);
    uint64_t lo = m->ack_floor + 1, hi = m->delivered_upto;
    bool have = hi >= lo;
    wsq_wop_t op;
    uint64_t seq;
    int64_t due = 0;
    if (pick < 40 || !have) {
        if (m->delivered_upto >= P3_MSGS) {
            if (!have)
                return NULL;
            op = WSQ_WOP_CONSUMER_DELIVERED; /* redelivery */
            seq = lo + x % (hi - lo + 1);
        } else {
            op = WSQ_WOP_CONSUMER_DELIVERED;
            seq = m->delivered_upto + 1 + (x % 8 == 0 ? x % 3 : 0); /* sometimes skips */
            if (seq > P3_MSGS)
                seq = P3_MSGS;
        }
    } else if (pick < 55) {
        op = WSQ_WOP_CONSUMER_DELIVERED;
        seq = lo + x % (hi - lo + 1);
    } else if (pick < 78) {
        op = WSQ_WOP_CONSUMER_ACK;
        seq = lo + x % (hi - lo + 1);
    } else if (pick < 90) {
        op = WSQ_WOP_CONSUMER_NACK;
        seq = lo + x % (hi - lo + 1);
        due = 1000000 + (int64_t)(x % 100000);
    } else {
        op = WSQ_WOP_CONSUMER_ACK_UPTO;
        seq = lo + x % ((hi - lo + 1) / 2 + 1);
    }
    /* Half the requests name the topic, half carry its id. */
    bool by_id = (x >> 20) & 1;
    const char *name = ct->names[k];
    wsq_wreq_t *r = by_id ? wsq_wreq_new(op, NULL, 0, name, strlen(name), 0)
                          : wsq_wreq_new(op, P3_TOPIC, strlen(P3_TOPIC), name, strlen(name), 0);
    if (r == NULL)
        return NULL;
    if (by_id)
        r->topic_id = ct->topic_id;
    r->seq = seq;
    r->done = cop_done;
    r->arg = ct;
    uint32_t count = 0;
    switch (op) {
    case WSQ_WOP_CONSUMER_DELIVERED:
        wsq_cstate_delivered(m, seq, &count);
        r->user[1] = count;
        break;
    case WSQ_WOP_CONSUMER_ACK:
        wsq_cstate_ack(m, seq, NULL);
        break;
    case WSQ_WOP_CONSUMER_NACK:
        r->ts_ms = due;
        wsq_cstate_nack(m, seq, due);
        break;
    default:
        wsq_cstate_ack_upto(m, seq, NULL);
    }
    return r;
}

static void *cthread_main(void *arg)
{
    cthread_t *ct = arg;
    uint64_t rnd = mix64(ct->idx * 1000 + 5);
    for (unsigned round = 0; round < P3_ROUNDS && atomic_load(&g_fail.n) == 0; round++) {
        rnd = mix64(rnd);
        unsigned burst = 1 + (unsigned)(rnd % 24);
        wsq_wreq_t *head = NULL, **tail = &head;
        unsigned n = 0;
        for (unsigned b = 0; b < burst; b++) {
            wsq_wreq_t *r = cop_gen(ct, (unsigned)(mix64(rnd + b) % P3_PER_THREAD), &rnd);
            if (r == NULL)
                continue;
            *tail = r;
            tail = &r->next;
            n++;
        }
        if (n == 0)
            continue;
        window_add(&ct->win, n);
        wsq_err err = wsq_store_submit_list(ct->store, head);
        if (err != WSQ_OK) {
            failf("consumer thread %u: submit: %s", ct->idx, wsq_errname(err));
            return NULL;
        }
        ct->ops += n;
        /* Wait for the burst now and then; otherwise keep up to two bursts in flight. */
        window_wait(&ct->win, round % 3 == 0 ? 0 : 24);
    }
    window_wait(&ct->win, 0);
    return NULL;
}

typedef struct {
    wsq_store_t *store;
    uint32_t topic_id;
    atomic_bool *stop;
    uint64_t reads;
} creader_t;

/* Watches the consumers while they change: every state decodes, holds its invariants and its
 * ack floor never moves back. */
static void *creader_main(void *arg)
{
    creader_t *cr = arg;
    uint64_t floors[P3_THREADS * P3_PER_THREAD] = {0};
    wsq_consumer_info_t info[P3_THREADS * P3_PER_THREAD + 1];
    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    while (!atomic_load(cr->stop) && atomic_load(&g_fail.n) == 0) {
        unsigned n = 0;
        wsq_err err = wsq_store_consumer_list(cr->store, cr->topic_id, 0, NULL,
                                              P3_THREADS * P3_PER_THREAD + 1, info, &n);
        if (err != WSQ_OK || n != P3_THREADS * P3_PER_THREAD) {
            failf("consumer_list: %s, n %u", wsq_errname(err), n);
            break;
        }
        for (unsigned i = 0; i < n; i++) {
            unsigned c = (unsigned)atoi(info[i].name + 1);
            if (c >= n || info[i].ack_floor < floors[c]) {
                failf("consumer %s: ack floor %llu after %llu", info[i].name,
                      (unsigned long long)info[i].ack_floor, (unsigned long long)floors[c]);
                goto out;
            }
            floors[c] = info[i].ack_floor;
            err = wsq_store_consumer_get(cr->store, cr->topic_id, info[i].name,
                                         strlen(info[i].name), &cs);
            if (err != WSQ_OK || wsq_cstate_check(&cs) != WSQ_OK || cs.ack_floor < floors[c]) {
                failf("consumer_get %s: %s", info[i].name, wsq_errname(err));
                goto out;
            }
        }
        cr->reads++;
    }
out:
    wsq_cstate_fini(&cs);
    return NULL;
}

static void test_store_concurrent_consumer_ops_coalesce(void **state)
{
    (void)state;
    fail_reset();
    char dir[64];
    make_dir(dir, sizeof(dir), "cons");
    commit_stats_t cstats = {0};
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = dir;
    o.flags = WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE;
    o.sync = WSQ_SYNC_FULL; /* long commits: requests of all threads pile up */
    o.on_commit = on_commit;
    o.commit_arg = &cstats;
    wsq_store_t *store = NULL;
    assert_int_equal(wsq_store_open(&o, &store, NULL), WSQ_OK);
    assert_int_equal(wsq_store_start(store), WSQ_OK);
    window_t win;
    window_init(&win);
    assert_true(append_range(store, &win, P3_TOPIC, 0, 0, P3_MSGS, 256, 64, 8, 32));
    window_wait(&win, 0);
    window_fini(&win);
    assert_no_failures();

    cthread_t *cts = calloc(P3_THREADS, sizeof(*cts));
    assert_non_null(cts);
    uint32_t topic_id = 0;
    uint64_t epoch = 0;
    for (unsigned t = 0; t < P3_THREADS; t++) {
        cts[t].store = store;
        cts[t].idx = t;
        window_init(&cts[t].win);
        for (unsigned k = 0; k < P3_PER_THREAD; k++) {
            snprintf(cts[t].names[k], sizeof(cts[t].names[k]), "c%u", t * P3_PER_THREAD + k);
            wsq_cstate_init(&cts[t].model[k]);
            wsq_cstate_t st;
            wsq_cstate_init(&st);
            assert_int_equal(consumer_open(store, P3_TOPIC, cts[t].names[k], 0, &st, &topic_id),
                             WSQ_OK);
            assert_int_equal(st.ack_floor, 0);
            assert_int_equal(st.delivered_upto, 0);
            epoch = st.topic_epoch;
            cts[t].model[k].topic_epoch = st.topic_epoch;
            wsq_cstate_fini(&st);
        }
    }
    /* on_commit runs after the commit's completions: wait until it counted everything so far */
    for (int i = 0;
         i < 5000 && atomic_load(&cstats.requests) < P3_MSGS + P3_THREADS * P3_PER_THREAD; i++)
        sleep_us(1000);
    uint64_t commits0 = atomic_load(&cstats.commits), reqs0 = atomic_load(&cstats.requests);
    assert_int_equal(reqs0, P3_MSGS + P3_THREADS * P3_PER_THREAD);
    atomic_bool stop = false;
    creader_t crd = {.store = store, .topic_id = topic_id, .stop = &stop};
    pthread_t rth, th[P3_THREADS];
    assert_int_equal(pthread_create(&rth, NULL, creader_main, &crd), 0);
    for (unsigned t = 0; t < P3_THREADS; t++) {
        cts[t].topic_id = topic_id;
        assert_int_equal(pthread_create(&th[t], NULL, cthread_main, &cts[t]), 0);
    }
    uint64_t ops = 0;
    for (unsigned t = 0; t < P3_THREADS; t++) {
        pthread_join(th[t], NULL);
        ops += cts[t].ops;
    }
    atomic_store(&stop, true);
    pthread_join(rth, NULL);
    assert_no_failures();
    for (int i = 0; i < 5000 && atomic_load(&cstats.requests) < reqs0 + ops; i++)
        sleep_us(1000);
    uint64_t commits = atomic_load(&cstats.commits) - commits0;
    uint64_t reqs = atomic_load(&cstats.requests) - reqs0;
    print_message("%llu consumer ops in %llu requests completed by %llu commits; %llu list "
                  "passes\n",
                  (unsigned long long)ops, (unsigned long long)reqs, (unsigned long long)commits,
                  (unsigned long long)crd.reads);
    assert_int_equal(reqs, ops);
    assert_true(commits < ops / 4); /* coalesced */

    /* The stored states are exactly what the cstate rules give for each consumer's op sequence. */
    wsq_consumer_info_t info[P3_THREADS * P3_PER_THREAD];
    unsigned n = 0;
    assert_int_equal(
        wsq_store_consumer_list(store, topic_id, 0, NULL, P3_THREADS * P3_PER_THREAD, info, &n),
        WSQ_OK);
    assert_int_equal(n, P3_THREADS * P3_PER_THREAD);
    for (unsigned t = 0; t < P3_THREADS; t++) {
        for (unsigned k = 0; k < P3_PER_THREAD; k++) {
            const wsq_cstate_t *m = &cts[t].model[k];
            const char *name = cts[t].names[k];
            wsq_cstate_t cs;
            wsq_cstate_init(&cs);
            assert_int_equal(wsq_store_consumer_get(store, topic_id, name, strlen(name), &cs),
                             WSQ_OK);
            assert_int_equal(cs.ack_floor, m->ack_floor);
            assert_int_equal(cs.delivered_upto, m->delivered_upto);
            assert_int_equal(cs.topic_epoch, epoch);
            assert_int_equal(cs.n_acked, m->n_acked);
            for (uint32_t i = 0; i < m->n_acked; i++)
                assert_int_equal(cs.acked[i], m->acked[i]);
            assert_int_equal(cs.n_pend, m->n_pend);
            for (uint32_t i = 0; i < m->n_pend; i++) {
                assert_int_equal(cs.pend[i].seq, m->pend[i].seq);
                assert_int_equal(cs.pend[i].count, m->pend[i].count);
                assert_int_equal(cs.pend[i].due_ms, m->pend[i].due_ms);
            }
            bool found = false;
            for (unsigned i = 0; i < n; i++) {
                if (strcmp(info[i].name, name) != 0)
                    continue;
                found = true;
                assert_int_equal(info[i].ack_floor, m->ack_floor);
                assert_int_equal(info[i].delivered_upto, m->delivered_upto);
                assert_int_equal(info[i].pending, wsq_cstate_pending(m));
                assert_int_equal(info[i].lag, wsq_cstate_lag(m, 1, P3_MSGS));
                assert_int_equal(info[i].n_acked, m->n_acked);
            }
            assert_true(found);
            wsq_cstate_fini(&cs);
            wsq_cstate_fini(&cts[t].model[k]);
        }
        window_fini(&cts[t].win);
    }
    free(cts);
    assert_store_checks(store);
    wsq_store_close(store);
    rm_rf(dir);
}

/* ==============================================================================================
 * 4. map growth under readers
 * ============================================================================================ */

#define P4_TOPIC "grow.big"
#define P4_MSGS 6000u
#define P4_MIN 2048u
#define P4_SPAN 4096u /* overflow pages: ~24 MiB in all from a 1 MiB map */
#define P4_READERS 3u

typedef struct {
    wsq_store_t *store;
    unsigned idx;
    atomic_bool *stop;
    uint64_t reads, msgs, stats;
    uint64_t map_sizes[32];
    unsigned n_map_sizes;
} greader_t;

static void *greader_main(void *arg)
{
    greader_t *g = arg;
    uint64_t rnd = mix64(g->idx + 999);
    uint64_t last_next = 1;
    uint32_t id = 0;
    while (!atomic_load(g->stop) && atomic_load(&g_fail.n) == 0) {
        wsq_topic_info_t ti;
        wsq_err err = wsq_store_topic_lookup(g->store, P4_TOPIC, strlen(P4_TOPIC), &ti);
        if (err == WSQ_ERR_NOTFOUND && id == 0)
            continue;
        if (err != WSQ_OK) {
            failf("grow reader %u: lookup: %s", g->idx, wsq_errname(err));
            break;
        }
        id = ti.id;
        if (ti.next_seq < last_next) {
            failf("grow reader %u: next_seq went back", g->idx);
            break;
        }
        last_next = ti.next_seq;
        if (ti.next_seq > 1) {
            /* A random window, or the whole topic (a long read while the map grows). */
            rnd = mix64(rnd);
            uint64_t from = 1 + rnd % (ti.next_seq - 1);
            uint32_t max = rnd % 50 == 0 ? UINT32_MAX : 32;
            if (max == UINT32_MAX)
                from = 1;
            tail_ctx_t ctx = {from, 1, P4_MIN, P4_SPAN, P4_TOPIC};
            wsq_read_info_t info;
            err = wsq_store_read(g->store, id, from, max, UINT64_MAX, tail_cb, &ctx, &info);
            g->reads++;
            if (err != WSQ_OK || info.count == 0 || ctx.expect != from + info.count) {
                failf("grow reader %u: read from %llu: %s, %u msgs", g->idx,
                      (unsigned long long)from, wsq_errname(err), info.count);
                break;
            }
            g->msgs += info.count;
        }
        if (g->reads % 8 == 0) {
            wsq_store_stats_t st;
            if ((err = wsq_store_stats(g->store, &st)) != WSQ_OK) {
                failf("grow reader %u: stats: %s", g->idx, wsq_errname(err));
                break;
            }
            g->stats++;
            if (g->n_map_sizes == 0 || g->map_sizes[g->n_map_sizes - 1] != st.map_size) {
                if (g->n_map_sizes > 0 && st.map_size < g->map_sizes[g->n_map_sizes - 1]) {
                    failf("grow reader %u: map shrank", g->idx);
                    break;
                }
                if (g->n_map_sizes < 32)
                    g->map_sizes[g->n_map_sizes++] = st.map_size;
            }
        }
    }
    return NULL;
}

static void test_store_map_grows_under_readers(void **state)
{
    (void)state;
    fail_reset();
    char dir[64];
    make_dir(dir, sizeof(dir), "grow");
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = dir;
    o.flags = WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE;
    o.sync = WSQ_SYNC_NONE;
    o.map_size_initial = 1u << 20;
    o.map_size_max = 512u << 20;
    wsq_store_t *store = NULL;
    assert_int_equal(wsq_store_open(&o, &store, NULL), WSQ_OK);
    assert_int_equal(wsq_store_start(store), WSQ_OK);
    wsq_store_stats_t st0;
    assert_int_equal(wsq_store_stats(store, &st0), WSQ_OK);

    atomic_bool stop = false;
    greader_t g[P4_READERS];
    pthread_t th[P4_READERS];
    for (unsigned i = 0; i < P4_READERS; i++) {
        g[i] = (greader_t){.store = store, .idx = i, .stop = &stop};
        assert_int_equal(pthread_create(&th[i], NULL, greader_main, &g[i]), 0);
    }
    window_t win;
    window_init(&win);
    /* Small runs: many commits, so the growths happen while the readers are busy. */
    bool ok = append_range(store, &win, P4_TOPIC, 0, 0, P4_MSGS, 64, 8, P4_MIN, P4_SPAN);
    window_wait(&win, 0);
    window_fini(&win);
    sleep_us(20000);
    atomic_store(&stop, true);
    uint64_t reads = 0, msgs = 0;
    unsigned sizes = 0;
    for (unsigned i = 0; i < P4_READERS; i++) {
        pthread_join(th[i], NULL);
        reads += g[i].reads;
        msgs += g[i].msgs;
        if (g[i].n_map_sizes > sizes)
            sizes = g[i].n_map_sizes;
    }
    assert_no_failures();
    assert_true(ok);
    wsq_store_stats_t st;
    assert_int_equal(wsq_store_stats(store, &st), WSQ_OK);
    print_message("map %llu KiB -> %llu KiB; readers: %llu reads, %llu msgs verified, up to %u "
                  "map sizes seen by one reader\n",
                  (unsigned long long)(st0.map_size >> 10), (unsigned long long)(st.map_size >> 10),
                  (unsigned long long)reads, (unsigned long long)msgs, sizes);
    assert_true(st0.map_size <= (1u << 20));
    assert_true(st.map_size >= 16 * st0.map_size); /* at least four doublings */
    assert_true(st.map_size <= o.map_size_max);
    assert_true(sizes >= 3);
    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_lookup(store, P4_TOPIC, strlen(P4_TOPIC), &ti), WSQ_OK);
    assert_int_equal(ti.next_seq, P4_MSGS + 1);
    tail_ctx_t ctx = {1, 1, P4_MIN, P4_SPAN, P4_TOPIC};
    wsq_read_info_t info;
    assert_int_equal(wsq_store_read(store, ti.id, 1, UINT32_MAX, UINT64_MAX, tail_cb, &ctx, &info),
                     WSQ_OK);
    assert_no_failures();
    assert_int_equal(info.count, P4_MSGS);
    assert_store_checks(store);
    wsq_store_close(store);
    rm_rf(dir);
}

/* ==============================================================================================
 * 5. purge and retention in bounded chunks while producers append and readers tail
 * ============================================================================================ */

#define P5_PRODUCERS 4u
#define P5_MSGS 3000u /* per producer */
#define P5_READERS 2u
#define P5_CAP 500u
#define P5_MIN 8u
#define P5_SPAN 200u

static const char *const p5_topics[2] = {"ret.cap", "ret.purge"};

static void p5_retention(void *arg, const char *topic, size_t len, wsq_retention_t *out)
{
    (void)arg;
    if (len == strlen(p5_topics[0]) && memcmp(topic, p5_topics[0], len) == 0) {
        out->max_messages = P5_CAP;
        out->discard = WSQ_DISCARD_OLD;
    }
}

typedef struct {
    wsq_store_t *store;
    unsigned idx;
    atomic_bool *stop;
    uint64_t reads, msgs, gaps, checks;
} p5_reader_t;

static int p5_cb(void *arg, const wsq_msg_view_t *m)
{
    tail_ctx_t *c = arg;
    if (c->expect == 0)
        c->expect = m->seq;
    return tail_cb(c, m);
}

/* Tails both topics: whatever was trimmed, what is there is contiguous, byte-exact, and the
 * retained range only moves forward. */
static void *p5_reader_main(void *arg)
{
    p5_reader_t *rd = arg;
    uint64_t pos[2] = {1, 1}, first[2] = {1, 1}, next[2] = {1, 1};
    while (!atomic_load(rd->stop) && atomic_load(&g_fail.n) == 0) {
        for (unsigned t = 0; t < 2; t++) {
            wsq_topic_info_t ti;
            wsq_err err =
                wsq_store_topic_lookup(rd->store, p5_topics[t], strlen(p5_topics[t]), &ti);
            if (err == WSQ_ERR_NOTFOUND && next[t] == 1)
                continue;
            if (err != WSQ_OK) {
                failf("p5 reader %u: lookup %s: %s", rd->idx, p5_topics[t], wsq_errname(err));
                return NULL;
            }
            if (ti.first_seq < first[t] || ti.next_seq < next[t] ||
                ti.count != ti.next_seq - ti.first_seq) {
                failf("p5 reader %u: %s: first %llu (was %llu) next %llu (was %llu) count %llu",
                      rd->idx, p5_topics[t], (unsigned long long)ti.first_seq,
                      (unsigned long long)first[t], (unsigned long long)ti.next_seq,
                      (unsigned long long)next[t], (unsigned long long)ti.count);
                return NULL;
            }
            first[t] = ti.first_seq;
            next[t] = ti.next_seq;
            /* the read may start in a trimmed range: then it returns from info.first_seq */
            tail_ctx_t ctx = {0, P5_PRODUCERS, P5_MIN, P5_SPAN, p5_topics[t]};
            wsq_read_info_t info;
            uint64_t from = pos[t];
            err = wsq_store_read(rd->store, ti.id, from, 128, UINT64_MAX, p5_cb, &ctx, &info);
            rd->reads++;
            if (err != WSQ_OK) {
                failf("p5 reader %u: read %s: %s", rd->idx, p5_topics[t], wsq_errname(err));
                return NULL;
            }
            if (info.gap != (from < info.first_seq)) {
                failf("p5 reader %u: %s: gap %d for from %llu, first %llu", rd->idx, p5_topics[t],
                      info.gap, (unsigned long long)from, (unsigned long long)info.first_seq);
                return NULL;
            }
            if (info.gap) {
                rd->gaps++;
                from = info.first_seq;
            }
            if ((info.count && ctx.expect != from + info.count) ||
                (info.count == 0 && from < info.next_seq)) {
                failf("p5 reader %u: %s: read %u from %llu (ends before %llu), next %llu", rd->idx,
                      p5_topics[t], info.count, (unsigned long long)from,
                      (unsigned long long)ctx.expect, (unsigned long long)info.next_seq);
                return NULL;
            }
            rd->msgs += info.count;
            pos[t] = from + info.count;
        }
    }
    return NULL;
}

static void check_note(void *arg, const char *topic, const char *what)
{
    (void)arg;
    failf("concurrent check: topic %s: %s", topic, what);
}

/* Runs wsq_store_check in a loop: each topic is checked in one snapshot, so a healthy store under
 * load never shows a violation. */
static void *checker_main(void *arg)
{
    p5_reader_t *rd = arg;
    while (!atomic_load(rd->stop) && atomic_load(&g_fail.n) == 0) {
        uint64_t v = 0;
        wsq_err err = wsq_store_check(rd->store, check_note, NULL, &v);
        if (err != WSQ_OK || v != 0) {
            failf("concurrent check: %s, %llu violations", wsq_errname(err), (unsigned long long)v);
            return NULL;
        }
        rd->checks++;
    }
    return NULL;
}

typedef struct {
    wsq_store_t *store;
    uint32_t idx;
    window_t win;
    uint64_t last_seq[2];
} p5_producer_t;

static void p5_done(wsq_wreq_t *r, void *arg)
{
    p5_producer_t *p = arg;
    unsigned t = (unsigned)(r->user[1] & 1);
    if (r->err != WSQ_OK)
        failf("p5 append: %s", wsq_errname(r->err));
    else if (r->seq <= p->last_seq[t])
        failf("p5 producer %u: %s seq %llu after %llu", p->idx, p5_topics[t],
              (unsigned long long)r->seq, (unsigned long long)p->last_seq[t]);
    else
        p->last_seq[t] = r->seq;
    wsq_wreq_free(&r);
    window_release(&p->win);
}

static void *p5_producer_main(void *arg)
{
    p5_producer_t *p = arg;
    for (uint32_t i = 0; i < P5_MSGS && atomic_load(&g_fail.n) == 0;) {
        window_wait(&p->win, 16);
        wsq_wreq_t *head = NULL, **tail = &head;
        unsigned k = 0;
        for (; k < 16 && i < P5_MSGS; k++, i++) {
            /* even counters to ret.cap, odd to ret.purge: user[1] & 1 names the topic */
            wsq_wreq_t *r = msg_new(p5_topics[i & 1], p->idx, i, P5_MIN, P5_SPAN);
            if (r == NULL) {
                failf("out of memory");
                return NULL;
            }
            r->done = p5_done;
            r->arg = p;
            *tail = r;
            tail = &r->next;
        }
        window_add(&p->win, k);
        wsq_err err = wsq_store_submit_list(p->store, head);
        if (err != WSQ_OK) {
            failf("p5 submit: %s", wsq_errname(err));
            return NULL;
        }
    }
    window_wait(&p->win, 0);
    return NULL;
}

static wsq_err purge(wsq_store_t *store, const char *topic, wsq_purge_t mode, uint64_t seq,
                     uint64_t *removed)
{
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_PURGE, topic, strlen(topic), NULL, 0, 0);
    if (r == NULL)
        return WSQ_ERR_NOMEM;
    r->purge_mode = mode;
    r->purge_seq = seq;
    wsq_err err = wsq_store_call(store, r);
    if (removed)
        *removed = r->removed;
    wsq_wreq_free(&r);
    return err;
}

static void test_store_purge_and_retention_under_load(void **state)
{
    (void)state;
    fail_reset();
    char dir[64];
    make_dir(dir, sizeof(dir), "trim");
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = dir;
    o.flags = WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE;
    o.sync = WSQ_SYNC_NONE;
    o.trim_chunk = 37; /* purges and trims span many transactions */
    o.retention = p5_retention;
    wsq_store_t *store = NULL;
    assert_int_equal(wsq_store_open(&o, &store, NULL), WSQ_OK);
    assert_int_equal(wsq_store_start(store), WSQ_OK);

    atomic_bool stop = false;
    p5_reader_t rds[P5_READERS + 1];
    pthread_t rth[P5_READERS + 1];
    for (unsigned i = 0; i <= P5_READERS; i++) {
        rds[i] = (p5_reader_t){.store = store, .idx = i, .stop = &stop};
        assert_int_equal(
            pthread_create(&rth[i], NULL, i < P5_READERS ? p5_reader_main : checker_main, &rds[i]),
            0);
    }
    p5_producer_t *ps = calloc(P5_PRODUCERS, sizeof(*ps));
    assert_non_null(ps);
    pthread_t pth[P5_PRODUCERS];
    for (unsigned i = 0; i < P5_PRODUCERS; i++) {
        ps[i].store = store;
        ps[i].idx = i;
        window_init(&ps[i].win);
        assert_int_equal(pthread_create(&pth[i], NULL, p5_producer_main, &ps[i]), 0);
    }
    /* Purge the head of ret.purge again and again while it grows. */
    uint64_t purged = 0;
    unsigned purges = 0;
    for (int i = 0; i < 200 && atomic_load(&g_fail.n) == 0; i++) {
        wsq_topic_info_t ti;
        wsq_err err = wsq_store_topic_lookup(store, p5_topics[1], strlen(p5_topics[1]), &ti);
        if (err == WSQ_OK && ti.next_seq > 200) {
            uint64_t removed = 0;
            assert_int_equal(
                purge(store, p5_topics[1], WSQ_PURGE_BEFORE, ti.next_seq - 100, &removed), WSQ_OK);
            purged += removed;
            purges++;
        }
        sleep_us(2000);
    }
    for (unsigned i = 0; i < P5_PRODUCERS; i++)
        pthread_join(pth[i], NULL);
    uint64_t total = (uint64_t)P5_PRODUCERS * P5_MSGS / 2; /* per topic */
    /* everything still queued for trimming is done once a barrier behind it completes */
    wsq_wreq_t *b = wsq_wreq_new(WSQ_WOP_BARRIER, NULL, 0, NULL, 0, 0);
    assert_non_null(b);
    assert_int_equal(wsq_store_call(store, b), WSQ_OK);
    wsq_wreq_free(&b);
    uint64_t removed = 0;
    assert_int_equal(purge(store, p5_topics[1], WSQ_PURGE_ALL, 0, &removed), WSQ_OK);
    purged += removed;
    sleep_us(20000);
    atomic_store(&stop, true);
    uint64_t reads = 0, msgs = 0, gaps = 0;
    for (unsigned i = 0; i <= P5_READERS; i++) {
        pthread_join(rth[i], NULL);
        reads += rds[i].reads;
        msgs += rds[i].msgs;
        gaps += rds[i].gaps;
    }
    assert_no_failures();
    print_message("%u purges removed %llu; readers: %llu reads, %llu msgs verified, %llu gaps; "
                  "%llu concurrent checks\n",
                  purges, (unsigned long long)purged, (unsigned long long)reads,
                  (unsigned long long)msgs, (unsigned long long)gaps,
                  (unsigned long long)rds[P5_READERS].checks);
    assert_true(purges > 0);

    /* ret.purge: everything purged, nothing reused */
    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_lookup(store, p5_topics[1], strlen(p5_topics[1]), &ti),
                     WSQ_OK);
    assert_int_equal(ti.count, 0);
    assert_int_equal(ti.next_seq, total + 1);
    assert_int_equal(ti.first_seq, total + 1);
    assert_int_equal(ti.purged_upto, total);
    assert_int_equal(purged, total);
    window_t win;
    window_init(&win);
    assert_true(append_range(store, &win, p5_topics[1], 0, 100000, 100001, 1, 1, P5_MIN, P5_SPAN));
    window_wait(&win, 0);
    window_fini(&win);
    assert_int_equal(wsq_store_topic_lookup(store, p5_topics[1], strlen(p5_topics[1]), &ti),
                     WSQ_OK);
    assert_int_equal(ti.next_seq, total + 2);
    assert_int_equal(ti.count, 1);

    /* ret.cap: the newest P5_CAP messages, contiguous, and retention is not a purge. The writer
     * trims in bounded chunks, possibly after the last append completed: wait for it. */
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(wsq_store_topic_lookup(store, p5_topics[0], strlen(p5_topics[0]), &ti),
                         WSQ_OK);
        if (ti.count <= P5_CAP)
            break;
        sleep_us(1000);
    }
    assert_int_equal(ti.next_seq, total + 1);
    assert_int_equal(ti.count, P5_CAP);
    assert_int_equal(ti.first_seq, total + 1 - P5_CAP);
    assert_int_equal(ti.purged_upto, 0);
    tail_ctx_t ctx = {ti.first_seq, P5_PRODUCERS, P5_MIN, P5_SPAN, p5_topics[0]};
    wsq_read_info_t info;
    assert_int_equal(wsq_store_read(store, ti.id, 1, UINT32_MAX, UINT64_MAX, tail_cb, &ctx, &info),
                     WSQ_OK);
    assert_no_failures();
    assert_true(info.gap);
    assert_int_equal(info.count, P5_CAP);
    assert_store_checks(store);
    for (unsigned i = 0; i < P5_PRODUCERS; i++)
        window_fini(&ps[i].win);
    free(ps);
    wsq_store_close(store);
    rm_rf(dir);
}

/* ==============================================================================================
 * 6. wsq_store_check while a large topic is being deleted
 * ============================================================================================ */

/* A topic delete removes the topic at once and its messages in bounded chunks afterwards. A check
 * that runs meanwhile (wsqctl check while wsqd runs) must not report the healthy store as
 * violating its invariants. */
static void test_store_check_clean_during_topic_delete(void **state)
{
    (void)state;
    fail_reset();
    char dir[64];
    make_dir(dir, sizeof(dir), "del");
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = dir;
    o.flags = WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE;
    o.sync = WSQ_SYNC_FULL; /* each chunk commits with fsync: the delete takes a while */
    o.trim_chunk = 50;
    wsq_store_t *store = NULL;
    assert_int_equal(wsq_store_open(&o, &store, NULL), WSQ_OK);
    assert_int_equal(wsq_store_start(store), WSQ_OK);
    window_t win;
    window_init(&win);
    assert_true(append_range(store, &win, "del.big", 0, 0, 5000, 512, 256, 8, 64));
    assert_true(append_range(store, &win, "del.keep", 1, 0, 100, 512, 100, 8, 64));
    window_wait(&win, 0);
    window_fini(&win);
    assert_int_equal(consumer_open(store, "del.big", "c", 0, NULL, NULL), WSQ_OK);
    assert_store_checks(store);

    atomic_bool stop = false;
    p5_reader_t chk = {.store = store, .stop = &stop};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, checker_main, &chk), 0);
    sleep_us(5000);
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_TOPIC_DELETE, "del.big", 7, NULL, 0, 0);
    assert_non_null(r);
    assert_int_equal(wsq_store_call(store, r), WSQ_OK);
    uint64_t removed = r->removed;
    wsq_wreq_free(&r);
    atomic_store(&stop, true);
    pthread_join(th, NULL);
    print_message("delete removed %llu messages; %llu checks ran meanwhile\n",
                  (unsigned long long)removed, (unsigned long long)chk.checks);
    assert_int_equal(removed, 5000);
    assert_no_failures();
    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_lookup(store, "del.big", 7, &ti), WSQ_ERR_NOTFOUND);
    assert_store_checks(store);
    wsq_store_close(store);
    rm_rf(dir);
}

/* ==============================================================================================
 * 7. the map reaches its maximum under concurrent producers
 * ============================================================================================ */

#define P7_PRODUCERS 4u

typedef struct {
    wsq_store_t *store;
    uint32_t idx;
    window_t win;
    atomic_uint_fast64_t ok, full;
    uint64_t *seqs; /* confirmed seqs (writer thread appends) */
    uint64_t n_seqs, cap_seqs;
} p7_producer_t;

static void p7_done(wsq_wreq_t *r, void *arg)
{
    p7_producer_t *p = arg;
    if (r->err == WSQ_OK) {
        if (p->n_seqs < p->cap_seqs)
            p->seqs[p->n_seqs++] = r->seq;
        atomic_fetch_add(&p->ok, 1);
    } else if (r->err == WSQ_ERR_STORAGE_FULL) {
        atomic_fetch_add(&p->full, 1);
    } else {
        failf("p7 append: %s", wsq_errname(r->err));
    }
    wsq_wreq_free(&r);
    window_release(&p->win);
}

static void *p7_producer_main(void *arg)
{
    p7_producer_t *p = arg;
    /* keep going until this producer was refused a good number of times */
    for (uint32_t i = 0;
         atomic_load(&p->full) < 200 && atomic_load(&g_fail.n) == 0 && i < 200000;) {
        window_wait(&p->win, 8);
        wsq_wreq_t *head = NULL, **tail = &head;
        for (unsigned k = 0; k < 8; k++, i++) {
            wsq_wreq_t *r = msg_new("full.t", p->idx, i, 512, 1024);
            if (r == NULL) {
                failf("out of memory");
                return NULL;
            }
            r->done = p7_done;
            r->arg = p;
            *tail = r;
            tail = &r->next;
        }
        window_add(&p->win, 8);
        wsq_err err = wsq_store_submit_list(p->store, head);
        if (err != WSQ_OK) {
            failf("p7 submit: %s", wsq_errname(err));
            return NULL;
        }
    }
    window_wait(&p->win, 0);
    return NULL;
}

static int seq_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* At map_size_max, appends fail with WSQ_ERR_STORAGE_FULL and nothing else changes: the seqs of
 * the refused appends are rolled back (no hole), and a purge makes room again without reusing a
 * seq. */
static void test_store_full_map_refuses_then_recovers(void **state)
{
    (void)state;
    fail_reset();
    char dir[64];
    make_dir(dir, sizeof(dir), "full");
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = dir;
    o.flags = WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE;
    o.sync = WSQ_SYNC_NONE;
    o.map_size_initial = 1u << 20;
    o.map_size_max = 8u << 20;
    wsq_store_t *store = NULL;
    assert_int_equal(wsq_store_open(&o, &store, NULL), WSQ_OK);
    assert_int_equal(wsq_store_start(store), WSQ_OK);
    assert_int_equal(consumer_open(store, "full.t", "c", 0, NULL, NULL), WSQ_OK);

    p7_producer_t *ps = calloc(P7_PRODUCERS, sizeof(*ps));
    assert_non_null(ps);
    pthread_t th[P7_PRODUCERS];
    for (unsigned i = 0; i < P7_PRODUCERS; i++) {
        ps[i].store = store;
        ps[i].idx = i;
        ps[i].cap_seqs = 100000;
        ps[i].seqs = calloc(ps[i].cap_seqs, sizeof(uint64_t));
        assert_non_null(ps[i].seqs);
        window_init(&ps[i].win);
        assert_int_equal(pthread_create(&th[i], NULL, p7_producer_main, &ps[i]), 0);
    }
    uint64_t ok = 0, full = 0, n = 0;
    for (unsigned i = 0; i < P7_PRODUCERS; i++) {
        pthread_join(th[i], NULL);
        ok += atomic_load(&ps[i].ok);
        full += atomic_load(&ps[i].full);
        n += ps[i].n_seqs;
    }
    assert_no_failures();
    /* the confirmed seqs are exactly 1..ok */
    uint64_t *all = calloc(n ? n : 1, sizeof(uint64_t));
    assert_non_null(all);
    uint64_t m = 0;
    for (unsigned i = 0; i < P7_PRODUCERS; i++)
        for (uint64_t j = 0; j < ps[i].n_seqs; j++)
            all[m++] = ps[i].seqs[j];
    qsort(all, m, sizeof(uint64_t), seq_cmp);
    for (uint64_t j = 0; j < m; j++)
        assert_int_equal(all[j], j + 1);
    free(all);
    wsq_store_stats_t st;
    assert_int_equal(wsq_store_stats(store, &st), WSQ_OK);
    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_lookup(store, "full.t", 6, &ti), WSQ_OK);
    print_message("%llu appends confirmed, %llu refused with storage_full; map %llu KiB of %llu "
                  "KiB max\n",
                  (unsigned long long)ok, (unsigned long long)full,
                  (unsigned long long)(st.map_size >> 10),
                  (unsigned long long)(o.map_size_max >> 10));
    assert_int_equal(n, ok);
    assert_true(full > 0);
    assert_true(st.map_size <= o.map_size_max);
    assert_int_equal(ti.next_seq, ok + 1);
    assert_int_equal(ti.count, ok);
    assert_store_checks(store);

    /* Acks free nothing but must not be refused for good either; a purge frees space. */
    uint64_t removed = 0;
    assert_int_equal(purge(store, "full.t", WSQ_PURGE_BEFORE, ok / 2 + 1, &removed), WSQ_OK);
    assert_int_equal(removed, ok / 2);
    window_t win;
    window_init(&win);
    assert_true(append_range(store, &win, "full.t", 99, 0, 100, 16, 8, 512, 1024));
    window_wait(&win, 0);
    window_fini(&win);
    assert_no_failures();
    assert_int_equal(wsq_store_topic_lookup(store, "full.t", 6, &ti), WSQ_OK);
    assert_int_equal(ti.next_seq, ok + 101);
    assert_int_equal(ti.first_seq, ok / 2 + 1);
    tail_ctx_t ctx = {ti.first_seq, 100, 512, 1024, "full.t"};
    wsq_read_info_t info;
    assert_int_equal(
        wsq_store_read(store, ti.id, ti.first_seq, UINT32_MAX, UINT64_MAX, tail_cb, &ctx, &info),
        WSQ_OK);
    assert_no_failures();
    assert_int_equal(info.count, ti.count);
    assert_store_checks(store);
    for (unsigned i = 0; i < P7_PRODUCERS; i++) {
        window_fini(&ps[i].win);
        free(ps[i].seqs);
    }
    free(ps);
    wsq_store_close(store);
    rm_rf(dir);
}

/* ==============================================================================================
 * 8. stop while producers keep submitting
 * ============================================================================================ */

typedef struct {
    wsq_store_t *store;
    uint32_t idx;
    atomic_uint_fast64_t accepted, refused, completed, completed_ok;
} p8_producer_t;

static void p8_done(wsq_wreq_t *r, void *arg)
{
    p8_producer_t *p = arg;
    atomic_fetch_add(&p->completed, 1);
    if (r->err == WSQ_OK)
        atomic_fetch_add(&p->completed_ok, 1);
    else
        failf("p8: an accepted append completed with %s", wsq_errname(r->err));
    wsq_wreq_free(&r);
}

static void *p8_producer_main(void *arg)
{
    p8_producer_t *p = arg;
    for (uint32_t i = 0;; i++) {
        wsq_wreq_t *r = msg_new("stop.t", p->idx, i, 8, 64);
        if (r == NULL) {
            failf("out of memory");
            return NULL;
        }
        r->done = p8_done;
        r->arg = p;
        wsq_err err = wsq_store_submit(p->store, r);
        if (err == WSQ_ERR_CLOSED) {
            wsq_wreq_free(&r); /* refused: still ours, and done never runs */
            atomic_fetch_add(&p->refused, 1);
            return NULL;
        }
        if (err != WSQ_OK) {
            failf("p8 submit: %s", wsq_errname(err));
            wsq_wreq_free(&r);
            return NULL;
        }
        atomic_fetch_add(&p->accepted, 1);
        if (i % 64 == 63)
            sched_yield();
    }
}

/* Every request accepted before wsq_store_stop is committed and completed by it; every one after
 * is refused with WSQ_ERR_CLOSED and stays the caller's. */
static void test_store_stop_completes_every_accepted_request(void **state)
{
    (void)state;
    fail_reset();
    char dir[64];
    make_dir(dir, sizeof(dir), "stop");
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = dir;
    o.flags = WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE;
    o.sync = WSQ_SYNC_FULL;
    wsq_store_t *store = NULL;
    assert_int_equal(wsq_store_open(&o, &store, NULL), WSQ_OK);
    assert_int_equal(wsq_store_start(store), WSQ_OK);
    p8_producer_t ps[4];
    pthread_t th[4];
    for (unsigned i = 0; i < 4; i++) {
        ps[i] = (p8_producer_t){.store = store, .idx = i};
        assert_int_equal(pthread_create(&th[i], NULL, p8_producer_main, &ps[i]), 0);
    }
    sleep_us(100000);
    wsq_store_stop(store);
    uint64_t accepted = 0, completed = 0, ok = 0;
    for (unsigned i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        accepted += atomic_load(&ps[i].accepted);
        completed += atomic_load(&ps[i].completed);
        ok += atomic_load(&ps[i].completed_ok);
        assert_int_equal(atomic_load(&ps[i].refused), 1);
    }
    assert_no_failures();
    print_message("%llu appends accepted before stop, %llu completed\n",
                  (unsigned long long)accepted, (unsigned long long)completed);
    assert_int_equal(completed, accepted);
    assert_int_equal(ok, accepted);
    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_lookup(store, "stop.t", 6, &ti), WSQ_OK);
    assert_int_equal(ti.count, accepted);
    assert_store_checks(store);
    wsq_store_close(store);
    /* and all of it is on disk */
    o.flags = WSQ_STORE_READONLY;
    assert_int_equal(wsq_store_open(&o, &store, NULL), WSQ_OK);
    assert_int_equal(wsq_store_topic_lookup(store, "stop.t", 6, &ti), WSQ_OK);
    assert_int_equal(ti.count, accepted);
    wsq_store_close(store);
    rm_rf(dir);
}

/* ==============================================================================================
 * 9. a purge or delete that finishes in the transaction that started it, inside a batch
 * ============================================================================================ */

/* Counts completions; static, so a late completion never touches a dead stack frame. */
typedef struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    unsigned done;
    unsigned failed;
} counter_t;

static counter_t g_counter = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void counter_done(wsq_wreq_t *r, void *arg)
{
    counter_t *c = arg;
    pthread_mutex_lock(&c->m);
    c->done++;
    if (r->err != WSQ_OK)
        c->failed++;
    pthread_mutex_unlock(&c->m);
    pthread_cond_broadcast(&c->c);
    wsq_wreq_free(&r);
}

/* Waits up to ms for n completions; returns how many arrived. */
static unsigned counter_wait(counter_t *c, unsigned n, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&c->m);
    while (c->done < n && pthread_cond_timedwait(&c->c, &c->m, &ts) == 0)
        ;
    unsigned done = c->done;
    pthread_mutex_unlock(&c->m);
    return done;
}

/* Every request of a batch completes, also those queued behind a PURGE or TOPIC_DELETE that
 * finishes within the transaction that started it. */
static void test_store_batch_with_short_purge_completes_every_request(void **state)
{
    (void)state;
    fail_reset();
    char dir[64];
    make_dir(dir, sizeof(dir), "pbatch");
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = dir;
    o.flags = WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE;
    o.sync = WSQ_SYNC_NONE;
    wsq_store_t *store = NULL;
    assert_int_equal(wsq_store_open(&o, &store, NULL), WSQ_OK);
    assert_int_equal(wsq_store_start(store), WSQ_OK);
    window_t win;
    window_init(&win);
    assert_true(append_range(store, &win, "pb.t", 0, 0, 10, 16, 10, 8, 16));
    assert_true(append_range(store, &win, "pb.other", 0, 10, 13, 16, 3, 8, 16));
    window_wait(&win, 0);
    window_fini(&win);
    assert_no_failures();

    /* One list, so one batch: APPEND, PURGE (2 messages, well within trim_chunk), APPEND,
     * APPEND, TOPIC_DELETE (3 messages), APPEND. */
    wsq_wreq_t *rs[6];
    rs[0] = msg_new("pb.t", 1, 0, 8, 16);
    rs[1] = wsq_wreq_new(WSQ_WOP_PURGE, "pb.t", 4, NULL, 0, 0);
    rs[2] = msg_new("pb.t", 1, 1, 8, 16);
    rs[3] = msg_new("pb.t", 1, 2, 8, 16);
    rs[4] = wsq_wreq_new(WSQ_WOP_TOPIC_DELETE, "pb.other", 8, NULL, 0, 0);
    rs[5] = msg_new("pb.t", 1, 3, 8, 16);
    for (int i = 0; i < 6; i++) {
        assert_non_null(rs[i]);
        rs[i]->done = counter_done;
        rs[i]->arg = &g_counter;
    }
    for (int i = 0; i < 5; i++)
        rs[i]->next = rs[i + 1];
    rs[1]->purge_mode = WSQ_PURGE_BEFORE;
    rs[1]->purge_seq = 3;
    g_counter.done = g_counter.failed = 0;
    assert_int_equal(wsq_store_submit_list(store, rs[0]), WSQ_OK);
    unsigned done = counter_wait(&g_counter, 6, 5000);
    if (done != 6)
        print_error("only %u of 6 requests completed within 5 s\n", done);
    assert_int_equal(done, 6);
    assert_int_equal(g_counter.failed, 0);
    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_lookup(store, "pb.t", 4, &ti), WSQ_OK);
    assert_int_equal(ti.next_seq, 15);
    assert_int_equal(ti.first_seq, 3);
    assert_int_equal(wsq_store_topic_lookup(store, "pb.other", 8, &ti), WSQ_ERR_NOTFOUND);
    assert_store_checks(store);
    wsq_store_close(store);
    rm_rf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* the fork comes first, while this process has never run a thread */
        cmocka_unit_test_teardown(test_store_second_process_reads_while_writer_commits,
                                  teardown_dir),
        cmocka_unit_test_teardown(test_store_concurrent_producers_keep_order, teardown_dir),
        cmocka_unit_test_teardown(test_store_concurrent_consumer_ops_coalesce, teardown_dir),
        cmocka_unit_test_teardown(test_store_map_grows_under_readers, teardown_dir),
        cmocka_unit_test_teardown(test_store_purge_and_retention_under_load, teardown_dir),
        cmocka_unit_test_teardown(test_store_check_clean_during_topic_delete, teardown_dir),
        cmocka_unit_test_teardown(test_store_full_map_refuses_then_recovers, teardown_dir),
        cmocka_unit_test_teardown(test_store_stop_completes_every_accepted_request, teardown_dir),
        cmocka_unit_test_teardown(test_store_batch_with_short_purge_completes_every_request,
                                  teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
