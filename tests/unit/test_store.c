/* Storage API: each call's success path and its exact error codes. */
#include <ftw.h>
#include <lmdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>
#include <zlib.h>

#include "raw_lmdb.h"
#include "rm_rf.h"
#include "wsq/store.h"

static _Atomic int64_t fake_now = 1700000000000;

static int64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

/* retention policy used by every store in this file: by topic name prefix */
static void policy(void *arg, const char *topic, size_t len, wsq_retention_t *out)
{
    (void)arg;
    (void)len;
    if (strncmp(topic, "cap3.", 5) == 0)
        out->max_messages = 3;
    else if (strncmp(topic, "bytes100.", 9) == 0)
        out->max_bytes = 100;
    else if (strncmp(topic, "age.", 4) == 0)
        out->max_age_ms = 10000;
    else if (strncmp(topic, "new3.", 5) == 0) {
        out->max_messages = 3;
        out->discard = WSQ_DISCARD_NEW;
    } else if (strncmp(topic, "dd.", 3) == 0) {
        out->dedup_window_ms = 10000;
    } else if (strncmp(topic, "newbytes.", 9) == 0) {
        out->max_bytes = 10;
        out->discard = WSQ_DISCARD_NEW;
    }
}

typedef struct {
    char dir[64];
    wsq_store_t *store;
} fixture_t;

static wsq_err open_at(const char *dir, unsigned flags, uint64_t map_init, uint64_t map_max,
                       wsq_store_t **out)
{
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = dir;
    o.flags = flags;
    o.sync = WSQ_SYNC_NONE; /* durability is the crash test's job; keep these fast */
    o.map_size_initial = map_init;
    o.map_size_max = map_max;
    o.retention = policy;
    o.clock = fake_clock;
    return wsq_store_open(&o, out, NULL);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/wsq-test-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    fake_now = 1700000000000;
    if (open_at(f->dir, WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE, 0, 0, &f->store) != WSQ_OK)
        return -1;
    if (wsq_store_start(f->store) != WSQ_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    wsq_store_close(f->store);
    rm_rf(f->dir);
    free(f);
    return 0;
}

static void reopen(fixture_t *f)
{
    wsq_store_close(f->store);
    f->store = NULL;
    assert_int_equal(open_at(f->dir, WSQ_STORE_EXCLUSIVE, 0, 0, &f->store), WSQ_OK);
    assert_int_equal(wsq_store_start(f->store), WSQ_OK);
}

static uint64_t append(wsq_store_t *s, const char *topic, const void *data, size_t len,
                       uint32_t flags, wsq_err expect)
{
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_APPEND, topic, strlen(topic), NULL, 0, len);
    assert_non_null(r);
    memcpy(r->data, data, len);
    r->flags = flags;
    assert_int_equal(wsq_store_call(s, r), expect);
    uint64_t seq = r->seq;
    wsq_wreq_free(&r);
    return seq;
}

static uint64_t append_str(wsq_store_t *s, const char *topic, const char *text)
{
    return append(s, topic, text, strlen(text), 0, WSQ_OK);
}

static wsq_err simple(wsq_store_t *s, wsq_wop_t op, const char *topic, const char *consumer,
                      uint64_t seq, wsq_wreq_t **keep)
{
    wsq_wreq_t *r =
        wsq_wreq_new(op, topic, strlen(topic), consumer, consumer ? strlen(consumer) : 0, 0);
    assert_non_null(r);
    r->seq = seq;
    wsq_err err = wsq_store_call(s, r);
    if (keep)
        *keep = r;
    else
        wsq_wreq_free(&r);
    return err;
}

static uint32_t topic_id(wsq_store_t *s, const char *name)
{
    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_lookup(s, name, strlen(name), &ti), WSQ_OK);
    return ti.id;
}

typedef struct {
    uint64_t seqs[64];
    char payloads[64][64];
    uint32_t flags[64];
    int n;
} collect_t;

static int collect(void *arg, const wsq_msg_view_t *m)
{
    collect_t *c = arg;
    if (c->n < 64) {
        c->seqs[c->n] = m->seq;
        size_t l = m->len < 63 ? m->len : 63;
        memcpy(c->payloads[c->n], m->data, l);
        c->payloads[c->n][l] = '\0';
        c->flags[c->n] = m->flags;
        c->n++;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------- */

static void test_store_open_missing_without_create_is_nostore(void **state)
{
    (void)state;
    wsq_store_t *s = NULL;
    assert_int_equal(open_at("/tmp/wsq-test-does-not-exist", 0, 0, 0, &s), WSQ_ERR_NOSTORE);
    assert_int_equal(open_at("/tmp/wsq-test-does-not-exist", WSQ_STORE_READONLY, 0, 0, &s),
                     WSQ_ERR_NOSTORE);
    assert_null(s);
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    assert_int_equal(wsq_store_open(&o, &s, NULL), WSQ_ERR_INVAL);
}

static void test_store_create_stamps_format(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(wsq_store_format(f->store), WSQ_FORMAT_VERSION);
    wsq_store_stats_t st;
    assert_int_equal(wsq_store_stats(f->store, &st), WSQ_OK);
    assert_int_equal(st.format, WSQ_FORMAT_VERSION);
    assert_true(st.map_size >= (64u << 20));
    assert_int_equal(st.topics, 0);
}

/* Rewrites meta.format behind the store's back. */
static void stamp_format(fixture_t *f, uint32_t format)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi = raw_begin(&f->store, f->dir, "meta", &env, &txn);
    unsigned char le[4] = {(unsigned char)format, (unsigned char)(format >> 8),
                           (unsigned char)(format >> 16), (unsigned char)(format >> 24)};
    MDB_val k = {6, "format"}, v = {4, le};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    raw_commit(env, txn);
}

static void test_store_refuses_newer_format(void **state)
{
    fixture_t *f = *state;
    stamp_format(f, 99);

    assert_int_equal(open_at(f->dir, WSQ_STORE_EXCLUSIVE, 0, 0, &f->store), WSQ_ERR_FORMAT_NEWER);
    assert_int_equal(open_at(f->dir, WSQ_STORE_READONLY, 0, 0, &f->store), WSQ_ERR_FORMAT_NEWER);
    assert_null(f->store);
}

static void test_store_refuses_foreign_lmdb(void **state)
{
    (void)state;
    char dir[] = "/tmp/wsq-test-foreign-XXXXXX";
    assert_non_null(mkdtemp(dir));
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    mdb_env_create(&env);
    assert_int_equal(mdb_env_open(env, dir, 0, 0640), 0);
    mdb_txn_begin(env, NULL, 0, &txn);
    mdb_dbi_open(txn, NULL, 0, &dbi);
    MDB_val k = {3, "foo"}, v = {3, "bar"};
    mdb_put(txn, dbi, &k, &v, 0);
    mdb_txn_commit(txn);
    mdb_env_close(env);
    wsq_store_t *s = NULL;
    assert_int_equal(open_at(dir, WSQ_STORE_READONLY, 0, 0, &s), WSQ_ERR_CORRUPT);
    assert_int_equal(open_at(dir, WSQ_STORE_EXCLUSIVE, 0, 0, &s), WSQ_ERR_CORRUPT);
    rm_rf(dir);
}

static void test_store_exclusive_lock_is_busy(void **state)
{
    fixture_t *f = *state;
    wsq_store_t *s2 = NULL;
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = f->dir;
    o.flags = WSQ_STORE_EXCLUSIVE;
    long pid = 0;
    assert_int_equal(wsq_store_open(&o, &s2, &pid), WSQ_ERR_BUSY);
    assert_int_equal(pid, (long)getpid());
    assert_int_equal(wsq_store_lock_holder(f->dir), (long)getpid());
    /* a reader needs no lock */
    assert_int_equal(open_at(f->dir, WSQ_STORE_READONLY, 0, 0, &s2), WSQ_OK);
    wsq_store_close(s2);
    wsq_store_close(f->store);
    f->store = NULL;
    assert_int_equal(wsq_store_lock_holder(f->dir), 0);
    reopen(f);
}

static void test_store_append_and_read_roundtrip(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(append_str(f->store, "chat.room1", "hello"), 1);
    unsigned char bin[4] = {0, 0xff, 0x80, 0x7f};
    assert_int_equal(append(f->store, "chat.room1", bin, sizeof(bin), WSQ_MSG_BINARY, WSQ_OK), 2);
    assert_int_equal(append(f->store, "chat.room1", "", 0, 0, WSQ_OK), 3);

    uint32_t id = topic_id(f->store, "chat.room1");
    collect_t c = {.n = 0};
    wsq_read_info_t info;
    assert_int_equal(wsq_store_read(f->store, id, 1, 100, 1 << 20, collect, &c, &info), WSQ_OK);
    assert_int_equal(c.n, 3);
    assert_int_equal(info.count, 3);
    assert_int_equal(info.last_seq, 3);
    assert_int_equal(info.first_seq, 1);
    assert_int_equal(info.next_seq, 4);
    assert_false(info.gap);
    assert_string_equal(c.payloads[0], "hello");
    assert_int_equal(c.flags[0], 0);
    assert_memory_equal(c.payloads[1], bin, 4);
    assert_int_equal(c.flags[1], WSQ_MSG_BINARY);
    assert_int_equal(c.seqs[2], 3);

    /* bounded by count, then by bytes (but always at least one message) */
    c.n = 0;
    assert_int_equal(wsq_store_read(f->store, id, 1, 2, 1 << 20, collect, &c, &info), WSQ_OK);
    assert_int_equal(info.count, 2);
    c.n = 0;
    assert_int_equal(wsq_store_read(f->store, id, 1, 100, 1, collect, &c, &info), WSQ_OK);
    assert_int_equal(info.count, 1);
    /* past the end: nothing, no error */
    assert_int_equal(wsq_store_read(f->store, id, 4, 100, 100, NULL, NULL, &info), WSQ_OK);
    assert_int_equal(info.count, 0);
    assert_int_equal(wsq_store_read(f->store, 999, 1, 1, 1, NULL, NULL, &info), WSQ_ERR_NOTFOUND);
}

static void test_store_submit_refuses_bad_requests(void **state)
{
    fixture_t *f = *state;
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_APPEND, "bad..topic", 10, NULL, 0, 1);
    assert_int_equal(wsq_store_submit(f->store, r), WSQ_ERR_BAD_TOPIC);
    wsq_wreq_free(&r);
    r = wsq_wreq_new(WSQ_WOP_CONSUMER_OPEN, "t", 1, "bad name!", 9, 0);
    assert_int_equal(wsq_store_submit(f->store, r), WSQ_ERR_INVAL);
    wsq_wreq_free(&r);
    r = wsq_wreq_new(WSQ_WOP_PURGE, "t", 1, NULL, 0, 0);
    assert_int_equal(wsq_store_submit(f->store, r), WSQ_ERR_INVAL); /* no purge mode */
    wsq_wreq_free(&r);
    assert_null(wsq_wreq_new(WSQ_WOP_APPEND, "t", 300, NULL, 0, 0));
    assert_int_equal(wsq_store_topic_lookup(f->store, "x..y", 4, &(wsq_topic_info_t){0}),
                     WSQ_ERR_BAD_TOPIC);
    assert_int_equal(wsq_store_topic_lookup(f->store, "nope", 4, &(wsq_topic_info_t){0}),
                     WSQ_ERR_NOTFOUND);
}

static void test_store_topics_ensure_lookup_list(void **state)
{
    fixture_t *f = *state;
    wsq_wreq_t *r;
    assert_int_equal(simple(f->store, WSQ_WOP_TOPIC_ENSURE, "b.topic", NULL, 0, &r), WSQ_OK);
    assert_true(r->created);
    uint64_t epoch = r->topic_epoch;
    uint32_t id = r->topic_id;
    assert_true(epoch != 0);
    wsq_wreq_free(&r);
    assert_int_equal(simple(f->store, WSQ_WOP_TOPIC_ENSURE, "b.topic", NULL, 0, &r), WSQ_OK);
    assert_false(r->created);
    assert_int_equal(r->topic_epoch, epoch);
    wsq_wreq_free(&r);
    append_str(f->store, "a.topic", "x");
    append_str(f->store, "c.topic", "y");

    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_get(f->store, id, &ti), WSQ_OK);
    assert_string_equal(ti.name, "b.topic");
    assert_int_equal(ti.epoch, epoch);
    assert_int_equal(ti.created_ms, fake_now);
    assert_int_equal(ti.count, 0);
    assert_int_equal(ti.first_seq, 1);
    assert_int_equal(ti.next_seq, 1);

    wsq_topic_info_t list[2];
    unsigned n;
    assert_int_equal(wsq_store_topic_list(f->store, NULL, 2, list, &n), WSQ_OK);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].name, "a.topic");
    assert_string_equal(list[1].name, "b.topic");
    assert_int_equal(wsq_store_topic_list(f->store, list[1].name, 2, list, &n), WSQ_OK);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].name, "c.topic");
    assert_int_equal(list[0].count, 1);
    assert_int_equal(list[0].bytes, 1);

    reopen(f); /* epoch and ids survive */
    assert_int_equal(wsq_store_topic_get(f->store, id, &ti), WSQ_OK);
    assert_int_equal(ti.epoch, epoch);
}

static void test_store_seq_never_reused_after_purge_all(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 5; i++)
        append_str(f->store, "t", "m");
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_PURGE, "t", 1, NULL, 0, 0);
    r->purge_mode = WSQ_PURGE_ALL;
    assert_int_equal(wsq_store_call(f->store, r), WSQ_OK);
    assert_int_equal(r->removed, 5);
    wsq_wreq_free(&r);

    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_lookup(f->store, "t", 1, &ti), WSQ_OK);
    assert_int_equal(ti.count, 0);
    assert_int_equal(ti.bytes, 0);
    assert_int_equal(ti.first_seq, 6);
    assert_int_equal(ti.next_seq, 6);
    assert_int_equal(ti.purged_upto, 5);
    reopen(f);
    assert_int_equal(append_str(f->store, "t", "after"), 6);

    /* a reader from 1 is told about the gap and continues from the first existing message */
    collect_t c = {.n = 0};
    wsq_read_info_t info;
    assert_int_equal(wsq_store_read(f->store, ti.id, 1, 10, 1000, collect, &c, &info), WSQ_OK);
    assert_true(info.gap);
    assert_int_equal(info.first_seq, 6);
    assert_int_equal(info.purged_upto, 5);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.seqs[0], 6);
    assert_string_equal(c.payloads[0], "after");
}

static void test_store_purge_before_and_older(void **state)
{
    fixture_t *f = *state;
    for (int i = 1; i <= 10; i++) {
        fake_now = 1700000000000 + i * 1000;
        append_str(f->store, "p", "m");
    }
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_PURGE, "p", 1, NULL, 0, 0);
    r->purge_mode = WSQ_PURGE_BEFORE;
    r->purge_seq = 4;
    assert_int_equal(wsq_store_call(f->store, r), WSQ_OK);
    assert_int_equal(r->removed, 3);
    wsq_wreq_free(&r);
    wsq_topic_info_t ti;
    wsq_store_topic_lookup(f->store, "p", 1, &ti);
    assert_int_equal(ti.first_seq, 4);
    assert_int_equal(ti.count, 7);
    assert_int_equal(ti.first_ts_ms, 1700000004000);

    r = wsq_wreq_new(WSQ_WOP_PURGE, "p", 1, NULL, 0, 0);
    r->purge_mode = WSQ_PURGE_OLDER;
    r->purge_ts_ms = 1700000007000; /* removes seqs 4,5,6 */
    assert_int_equal(wsq_store_call(f->store, r), WSQ_OK);
    assert_int_equal(r->removed, 3);
    wsq_wreq_free(&r);
    wsq_store_topic_lookup(f->store, "p", 1, &ti);
    assert_int_equal(ti.first_seq, 7);
    assert_int_equal(ti.next_seq, 11);

    /* purging before a seq beyond the end keeps next seq */
    r = wsq_wreq_new(WSQ_WOP_PURGE, "p", 1, NULL, 0, 0);
    r->purge_mode = WSQ_PURGE_BEFORE;
    r->purge_seq = 1000;
    assert_int_equal(wsq_store_call(f->store, r), WSQ_OK);
    assert_int_equal(r->removed, 4);
    wsq_wreq_free(&r);
    assert_int_equal(append_str(f->store, "p", "next"), 11);

    r = wsq_wreq_new(WSQ_WOP_PURGE, "nope", 4, NULL, 0, 0);
    r->purge_mode = WSQ_PURGE_ALL;
    assert_int_equal(wsq_store_call(f->store, r), WSQ_ERR_NOTFOUND);
    wsq_wreq_free(&r);
    uint64_t v = 1;
    assert_int_equal(wsq_store_check(f->store, NULL, NULL, &v), WSQ_OK);
    assert_int_equal(v, 0);
}

static void test_store_purge_spans_many_transactions(void **state)
{
    fixture_t *f = *state;
    wsq_store_close(f->store);
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = f->dir;
    o.flags = WSQ_STORE_EXCLUSIVE;
    o.sync = WSQ_SYNC_NONE;
    o.trim_chunk = 7; /* force many bounded transactions */
    assert_int_equal(wsq_store_open(&o, &f->store, NULL), WSQ_OK);
    assert_int_equal(wsq_store_start(f->store), WSQ_OK);
    /* submit 100 appends at once, then a purge of all, then more appends */
    wsq_wreq_t *head = NULL, **tail = &head;
    for (int i = 0; i < 100; i++) {
        wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_APPEND, "big", 3, NULL, 0, 8);
        memcpy(r->data, "payload!", 8);
        *tail = r;
        tail = &r->next;
    }
    assert_int_equal(wsq_store_submit_list(f->store, head), WSQ_OK);
    wsq_wreq_t *p = wsq_wreq_new(WSQ_WOP_PURGE, "big", 3, NULL, 0, 0);
    p->purge_mode = WSQ_PURGE_ALL;
    assert_int_equal(wsq_store_call(f->store, p), WSQ_OK);
    assert_int_equal(p->removed, 100);
    wsq_wreq_free(&p);
    assert_int_equal(append_str(f->store, "big", "x"), 101);
    wsq_topic_info_t ti;
    wsq_store_topic_lookup(f->store, "big", 3, &ti);
    assert_int_equal(ti.count, 1);
    assert_int_equal(ti.first_seq, 101);
    uint64_t v = 1;
    assert_int_equal(wsq_store_check(f->store, NULL, NULL, &v), WSQ_OK);
    assert_int_equal(v, 0);
}

static void count_done(wsq_wreq_t *req, void *arg)
{
    (*(_Atomic int *)arg)++;
    wsq_wreq_free(&req);
}

/* Regression: a purge finishing in the transaction that carried it relinked its request and cut
 * the batch list, so the requests after it were committed but never completed. */
static void test_store_requests_after_a_purge_in_one_batch_complete(void **state)
{
    fixture_t *f = *state;
    append_str(f->store, "pb", "old");
    _Atomic int done = 0;
    wsq_wreq_t *p = wsq_wreq_new(WSQ_WOP_PURGE, "pb", 2, NULL, 0, 0);
    p->purge_mode = WSQ_PURGE_ALL;
    p->done = count_done;
    p->arg = (void *)&done;
    wsq_wreq_t *a = wsq_wreq_new(WSQ_WOP_APPEND, "pb", 2, NULL, 0, 3);
    memcpy(a->data, "new", 3);
    a->done = count_done;
    a->arg = (void *)&done;
    wsq_wreq_t *b = wsq_wreq_new(WSQ_WOP_APPEND, "pb", 2, NULL, 0, 3);
    memcpy(b->data, "nex", 3);
    b->done = count_done;
    b->arg = (void *)&done;
    p->next = a;
    a->next = b;
    assert_int_equal(wsq_store_submit_list(f->store, p), WSQ_OK);
    assert_int_equal(simple(f->store, WSQ_WOP_BARRIER, "pb", NULL, 0, NULL), WSQ_OK);
    assert_int_equal(done, 3);
    wsq_topic_info_t ti;
    wsq_store_topic_lookup(f->store, "pb", 2, &ti);
    assert_int_equal(ti.count, 2);
    assert_int_equal(ti.next_seq, 4);
}

static void test_store_retention_max_messages(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 10; i++)
        append_str(f->store, "cap3.x", "m");
    wsq_topic_info_t ti;
    wsq_store_topic_lookup(f->store, "cap3.x", 6, &ti);
    assert_int_equal(ti.count, 3);
    assert_int_equal(ti.first_seq, 8);
    assert_int_equal(ti.next_seq, 11);
    assert_int_equal(ti.purged_upto, 0); /* removed by retention, not purge */
}

static void test_store_retention_max_bytes(void **state)
{
    fixture_t *f = *state;
    char p40[41];
    memset(p40, 'x', 40);
    p40[40] = '\0';
    for (int i = 0; i < 5; i++)
        append_str(f->store, "bytes100.x", p40);
    wsq_topic_info_t ti;
    wsq_store_topic_lookup(f->store, "bytes100.x", 10, &ti);
    assert_int_equal(ti.bytes, 80);
    assert_int_equal(ti.count, 2);
    assert_int_equal(ti.first_seq, 4);
}

static void test_store_retention_max_age(void **state)
{
    fixture_t *f = *state;
    fake_now = 1700000000000;
    append_str(f->store, "age.x", "old1");
    append_str(f->store, "age.x", "old2");
    fake_now += 8000;
    append_str(f->store, "age.x", "mid");
    fake_now += 3000; /* the first two are now 11 s old: trimmed by the next append */
    append_str(f->store, "age.x", "new");
    wsq_topic_info_t ti;
    wsq_store_topic_lookup(f->store, "age.x", 5, &ti);
    assert_int_equal(ti.first_seq, 3);
    assert_int_equal(ti.count, 2);

    /* an idle topic is trimmed by the writer's periodic pass (about once a second) */
    fake_now += 20000;
    for (int i = 0; i < 40; i++) {
        usleep(100000);
        wsq_store_topic_lookup(f->store, "age.x", 5, &ti);
        if (ti.count == 0)
            break;
    }
    assert_int_equal(ti.count, 0);
    assert_int_equal(ti.first_seq, 5);
}

static void test_store_discard_new_refuses(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 3; i++)
        append_str(f->store, "new3.x", "m");
    append(f->store, "new3.x", "m", 1, 0, WSQ_ERR_TOPIC_FULL);
    wsq_topic_info_t ti;
    wsq_store_topic_lookup(f->store, "new3.x", 6, &ti);
    assert_int_equal(ti.count, 3);
    assert_int_equal(ti.next_seq, 4);
    append(f->store, "newbytes.x", "0123456789", 10, 0, WSQ_OK);
    append(f->store, "newbytes.x", "a", 1, 0, WSQ_ERR_TOPIC_FULL);
    /* after a purge there is room again, and the seq continues */
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_PURGE, "new3.x", 6, NULL, 0, 0);
    r->purge_mode = WSQ_PURGE_ALL;
    assert_int_equal(wsq_store_call(f->store, r), WSQ_OK);
    wsq_wreq_free(&r);
    assert_int_equal(append_str(f->store, "new3.x", "m"), 4);
}

static void test_store_map_grows_then_storage_full(void **state)
{
    fixture_t *f = *state;
    wsq_store_close(f->store);
    rm_rf(f->dir);
    assert_int_equal(
        open_at(f->dir, WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE, 256 << 10, 4 << 20, &f->store),
        WSQ_OK);
    assert_int_equal(wsq_store_start(f->store), WSQ_OK);
    char payload[1000];
    memset(payload, 'z', sizeof(payload));
    uint64_t last = 0;
    wsq_err err = WSQ_OK;
    for (int i = 0; i < 10000 && err == WSQ_OK; i++) {
        wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_APPEND, "fill", 4, NULL, 0, sizeof(payload));
        memcpy(r->data, payload, sizeof(payload));
        err = wsq_store_call(f->store, r);
        if (err == WSQ_OK) {
            assert_int_equal(r->seq, last + 1); /* no seq lost to a failed transaction */
            last = r->seq;
        }
        wsq_wreq_free(&r);
    }
    assert_int_equal(err, WSQ_ERR_STORAGE_FULL);
    assert_true(last > 1000); /* grew well beyond the initial 256 KiB */
    wsq_store_stats_t st;
    assert_int_equal(wsq_store_stats(f->store, &st), WSQ_OK);
    assert_int_equal(st.map_size, 4 << 20);

    /* consumer writes and purges still work at the limit; the purge makes room */
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_PURGE, "fill", 4, NULL, 0, 0);
    r->purge_mode = WSQ_PURGE_BEFORE;
    r->purge_seq = last / 2;
    assert_int_equal(wsq_store_call(f->store, r), WSQ_OK);
    wsq_wreq_free(&r);
    assert_int_equal(append(f->store, "fill", payload, sizeof(payload), 0, WSQ_OK), last + 1);
    uint64_t v = 1;
    assert_int_equal(wsq_store_check(f->store, NULL, NULL, &v), WSQ_OK);
    assert_int_equal(v, 0);
}

static void test_store_consumer_lifecycle(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 10; i++)
        append_str(f->store, "c.t", "m");
    wsq_wreq_t *r;
    /* new consumer "from earliest" */
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_OPEN, "c.t", "early", 0, &r), WSQ_OK);
    assert_true(r->created);
    assert_int_equal(r->state.ack_floor, 0);
    uint32_t tid = r->topic_id;
    wsq_wreq_free(&r);
    /* new consumer "from latest" */
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_OPEN, "c.t", "late", WSQ_SEQ_END, &r),
                     WSQ_OK);
    assert_int_equal(r->state.ack_floor, 10);
    wsq_wreq_free(&r);
    /* reopening returns the existing state, whatever the start position */
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_OPEN, "c.t", "late", 0, &r), WSQ_OK);
    assert_false(r->created);
    assert_int_equal(r->state.ack_floor, 10);
    wsq_wreq_free(&r);

    uint32_t count = 0;
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_DELIVERED, "c.t", "early", 1, NULL), WSQ_OK);
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_DELIVERED, "c.t", "early", 2, NULL), WSQ_OK);
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_DELIVERED, "c.t", "early", 1, &r), WSQ_OK);
    count = r->count;
    wsq_wreq_free(&r);
    assert_int_equal(count, 2);
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_ACK, "c.t", "early", 2, NULL), WSQ_OK);
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_NACK, "c.t", "early", 1, NULL), WSQ_OK);
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_ACK, "c.t", "early", 11, NULL),
                     WSQ_ERR_BAD_SEQ);
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_ACK, "c.t", "ghost", 1, NULL),
                     WSQ_ERR_NOTFOUND);
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_ACK, "no.topic", "early", 1, NULL),
                     WSQ_ERR_NOTFOUND);

    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    assert_int_equal(wsq_store_consumer_get(f->store, tid, "early", 5, &cs), WSQ_OK);
    assert_int_equal(cs.ack_floor, 0);
    assert_true(wsq_cstate_is_acked(&cs, 2));
    assert_int_equal(wsq_cstate_count(&cs, 1), 2);
    wsq_cstate_fini(&cs);

    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_ACK_UPTO, "c.t", "early", 4, NULL), WSQ_OK);
    wsq_consumer_info_t ci[4];
    unsigned n;
    assert_int_equal(wsq_store_consumer_list(f->store, tid, 0, NULL, 4, ci, &n), WSQ_OK);
    assert_int_equal(n, 2);
    assert_string_equal(ci[0].name, "early");
    assert_int_equal(ci[0].ack_floor, 4);
    assert_int_equal(ci[0].lag, 6);
    assert_int_equal(ci[0].pending, 0);
    assert_string_equal(ci[1].name, "late");
    assert_int_equal(ci[1].lag, 0);
    /* paging */
    assert_int_equal(wsq_store_consumer_list(f->store, 0, tid, "early", 4, ci, &n), WSQ_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ci[0].name, "late");

    /* acks by topic id instead of name */
    r = wsq_wreq_new(WSQ_WOP_CONSUMER_ACK, NULL, 0, "early", 5, 0);
    r->topic_id = tid;
    r->seq = 5;
    assert_int_equal(wsq_store_call(f->store, r), WSQ_OK);
    wsq_wreq_free(&r);

    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_DELETE, "c.t", "early", 0, NULL), WSQ_OK);
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_DELETE, "c.t", "early", 0, NULL),
                     WSQ_ERR_NOTFOUND);
    wsq_cstate_init(&cs);
    assert_int_equal(wsq_store_consumer_get(f->store, tid, "early", 5, &cs), WSQ_ERR_NOTFOUND);
    wsq_cstate_fini(&cs);
    reopen(f);
    assert_int_equal(wsq_store_consumer_list(f->store, tid, 0, NULL, 4, ci, &n), WSQ_OK);
    assert_int_equal(n, 1);
}

static void test_store_consumer_put_replaces_state(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 10; i++)
        append_str(f->store, "put", "m");
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_OPEN, "put", "c", 0, NULL), WSQ_OK);
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_CONSUMER_PUT, "put", 3, "c", 1, 0);
    r->state.ack_floor = 5;
    r->state.delivered_upto = 8;
    assert_int_equal(wsq_cstate_ack(&r->state, 7, NULL), WSQ_OK);
    assert_int_equal(wsq_store_call(f->store, r), WSQ_OK);
    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    assert_int_equal(wsq_store_consumer_get(f->store, topic_id(f->store, "put"), "c", 1, &cs),
                     WSQ_OK);
    assert_int_equal(cs.ack_floor, 5);
    assert_int_equal(cs.delivered_upto, 8);
    assert_true(wsq_cstate_is_acked(&cs, 7));
    wsq_cstate_fini(&cs);
    /* beyond the topic, or on a missing consumer, is refused */
    r->state.ack_floor = 11;
    r->state.delivered_upto = 11;
    r->state.n_acked = 0;
    assert_int_equal(wsq_store_call(f->store, r), WSQ_ERR_BAD_SEQ);
    wsq_wreq_free(&r);
    r = wsq_wreq_new(WSQ_WOP_CONSUMER_PUT, "put", 3, "ghost", 5, 0);
    assert_int_equal(wsq_store_call(f->store, r), WSQ_ERR_NOTFOUND);
    /* a state that breaks its invariants is refused at submit */
    r->state.ack_floor = 3;
    r->state.delivered_upto = 1;
    assert_int_equal(wsq_store_submit(f->store, r), WSQ_ERR_INVAL);
    wsq_wreq_free(&r);
}

static void test_store_consumer_ops_coalesce_in_one_batch(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 20; i++)
        append_str(f->store, "co", "m");
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_OPEN, "co", "c", 0, NULL), WSQ_OK);
    /* 20 acks in one submitted list: one transaction, one consumer write */
    wsq_wreq_t *head = NULL, **tail = &head;
    for (uint64_t s = 20; s >= 1; s--) {
        wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_CONSUMER_ACK, "co", 2, "c", 1, 0);
        r->seq = s;
        *tail = r;
        tail = &r->next;
    }
    assert_int_equal(wsq_store_submit_list(f->store, head), WSQ_OK);
    assert_int_equal(simple(f->store, WSQ_WOP_BARRIER, "co", NULL, 0, NULL), WSQ_OK);
    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    assert_int_equal(wsq_store_consumer_get(f->store, topic_id(f->store, "co"), "c", 1, &cs),
                     WSQ_OK);
    assert_int_equal(cs.ack_floor, 20);
    assert_int_equal(cs.n_acked, 0);
    wsq_cstate_fini(&cs);
}

static void test_store_topic_delete_and_recreate(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 5; i++)
        append_str(f->store, "del.t", "m");
    simple(f->store, WSQ_WOP_CONSUMER_OPEN, "del.t", "c1", 0, NULL);
    wsq_topic_info_t before;
    wsq_store_topic_lookup(f->store, "del.t", 5, &before);
    wsq_wreq_t *r;
    assert_int_equal(simple(f->store, WSQ_WOP_TOPIC_DELETE, "del.t", NULL, 0, &r), WSQ_OK);
    assert_int_equal(r->removed, 5);
    wsq_wreq_free(&r);
    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_lookup(f->store, "del.t", 5, &ti), WSQ_ERR_NOTFOUND);
    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    assert_int_equal(wsq_store_consumer_get(f->store, before.id, "c1", 2, &cs), WSQ_ERR_NOTFOUND);
    wsq_cstate_fini(&cs);
    /* the name comes back as a new topic: new id, new epoch, seqs from 1 */
    assert_int_equal(append_str(f->store, "del.t", "new"), 1);
    wsq_store_topic_lookup(f->store, "del.t", 5, &ti);
    assert_true(ti.id != before.id);
    assert_true(ti.epoch != before.epoch);
    uint64_t v = 1;
    assert_int_equal(wsq_store_check(f->store, NULL, NULL, &v), WSQ_OK);
    assert_int_equal(v, 0);
}

static void test_store_seq_at_time(void **state)
{
    fixture_t *f = *state;
    for (int i = 1; i <= 10; i++) {
        fake_now = 1700000000000 + i * 100;
        append_str(f->store, "time", "m");
    }
    uint32_t id = topic_id(f->store, "time");
    uint64_t seq;
    assert_int_equal(wsq_store_seq_at_time(f->store, id, 0, &seq), WSQ_OK);
    assert_int_equal(seq, 1);
    assert_int_equal(wsq_store_seq_at_time(f->store, id, 1700000000450, &seq), WSQ_OK);
    assert_int_equal(seq, 5);
    assert_int_equal(wsq_store_seq_at_time(f->store, id, 1700000000500, &seq), WSQ_OK);
    assert_int_equal(seq, 5);
    assert_int_equal(wsq_store_seq_at_time(f->store, id, 1800000000000, &seq), WSQ_OK);
    assert_int_equal(seq, 11);
    /* timestamps never go backwards even if the clock does */
    fake_now = 1600000000000;
    uint64_t s = append_str(f->store, "time", "m");
    collect_t c = {.n = 0};
    wsq_store_read(f->store, id, s - 1, 2, 100, NULL, NULL, NULL);
    (void)c;
    assert_int_equal(wsq_store_seq_at_time(f->store, id, 1700000001000, &seq), WSQ_OK);
    assert_int_equal(seq, 10);
}

typedef struct {
    int n;
    char last[256];
} reports_t;

static void on_violation(void *arg, const char *topic, const char *what)
{
    reports_t *r = arg;
    r->n++;
    snprintf(r->last, sizeof(r->last), "%s: %s", topic, what);
}

static void test_store_check_finds_damage(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 5; i++)
        append_str(f->store, "dmg", "payload");
    simple(f->store, WSQ_WOP_CONSUMER_OPEN, "dmg", "c", 0, NULL);
    reports_t rep = {0};
    uint64_t v = 99;
    assert_int_equal(wsq_store_check(f->store, on_violation, &rep, &v), WSQ_OK);
    assert_int_equal(v, 0);
    uint32_t id = topic_id(f->store, "dmg");
    wsq_store_close(f->store);
    f->store = NULL;

    /* flip a payload byte of seq 2 and delete seq 4, behind the store's back */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 8);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0640), 0);
    mdb_txn_begin(env, NULL, 0, &txn);
    assert_int_equal(mdb_dbi_open(txn, "messages", 0, &dbi), 0);
    unsigned char kb[12] = {0};
    kb[0] = (unsigned char)(id >> 24);
    kb[1] = (unsigned char)(id >> 16);
    kb[2] = (unsigned char)(id >> 8);
    kb[3] = (unsigned char)id;
    kb[11] = 2;
    MDB_val k = {12, kb}, val;
    assert_int_equal(mdb_get(txn, dbi, &k, &val), 0);
    unsigned char copy[64];
    memcpy(copy, val.mv_data, val.mv_size);
    copy[16] ^= 1;
    MDB_val nv = {val.mv_size, copy};
    assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
    kb[11] = 4;
    assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    assert_int_equal(open_at(f->dir, WSQ_STORE_READONLY, 0, 0, &f->store), WSQ_OK);
    assert_int_equal(wsq_store_check(f->store, on_violation, &rep, &v), WSQ_OK);
    assert_true(v >= 3); /* CRC, hole at 4, count and bytes mismatch */
    assert_int_equal(rep.n, (int)v);
    wsq_store_close(f->store);
    f->store = NULL;
    reopen(f);
}

/* Behind the store's back: rewrites the value of message (id, seq) with edit(). */
static void raw_edit(fixture_t *f, uint32_t id, uint64_t seq, void (*edit)(unsigned char *, size_t))
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi = raw_begin(&f->store, f->dir, "messages", &env, &txn);
    unsigned char kb[12];
    for (int i = 0; i < 4; i++)
        kb[i] = (unsigned char)(id >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        kb[4 + i] = (unsigned char)(seq >> (56 - 8 * i));
    MDB_val k = {12, kb}, val;
    assert_int_equal(mdb_get(txn, dbi, &k, &val), 0);
    unsigned char copy[256];
    assert_true(val.mv_size <= sizeof(copy));
    memcpy(copy, val.mv_data, val.mv_size);
    edit(copy, val.mv_size);
    MDB_val nv = {val.mv_size, copy};
    assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
    raw_commit(env, txn);
}

static void count_mismatch(void *arg, const char *topic, const char *what)
{
    (void)topic;
    if (strstr(what, "checksum mismatch"))
        ++*(int *)arg;
}

static void flip_payload(unsigned char *v, size_t len)
{
    v[len - 1] ^= 0x20;
}

static void flip_ts(unsigned char *v, size_t len)
{
    (void)len;
    v[0] ^= 1; /* the timestamp is covered too: a wrong ts is as wrong as a wrong byte */
}

static void flip_binary_flag(unsigned char *v, size_t len)
{
    (void)len;
    v[8] ^= WSQ_MSG_BINARY;
}

/* What format 2 wrote: no CRC-32C flag, zlib's CRC-32 of the payload alone. */
static void make_format2(unsigned char *v, size_t len)
{
    uint32_t flags =
        (uint32_t)v[8] | (uint32_t)v[9] << 8 | (uint32_t)v[10] << 16 | (uint32_t)v[11] << 24;
    flags &= ~0x40000000u;
    uint32_t crc = (uint32_t)crc32(0, v + 16, (uInt)(len - 16));
    for (int i = 0; i < 4; i++) {
        v[8 + i] = (unsigned char)(flags >> (8 * i));
        v[12 + i] = (unsigned char)(crc >> (8 * i));
    }
}

/* Every read checks each message's checksum (CRC-32C over payload, timestamp and flags) before
 * the caller sees it: the read stops before a message that fails, names it in corrupt_seq, and
 * reads on from the next one. Messages of format 2 keep zlib's CRC-32 and are checked with it. */
static void test_store_checksum_on_every_read(void **state)
{
    fixture_t *f = *state;
    for (int i = 1; i <= 8; i++) {
        char text[16];
        snprintf(text, sizeof(text), "m%d", i);
        append_str(f->store, "crc", text);
    }
    uint32_t id = topic_id(f->store, "crc");
    raw_edit(f, id, 3, flip_payload);
    assert_int_equal(open_at(f->dir, WSQ_STORE_READONLY, 0, 0, &f->store), WSQ_OK);

    collect_t c = {0};
    wsq_read_info_t info;
    assert_int_equal(wsq_store_read(f->store, id, 1, 100, 1 << 20, collect, &c, &info), WSQ_OK);
    assert_int_equal(c.n, 2); /* 1, 2: the read stops before 3 */
    assert_int_equal(info.corrupt_seq, 3);
    assert_int_equal(info.last_seq, 2);
    c = (collect_t){0};
    assert_int_equal(wsq_store_read(f->store, id, 3, 100, 1 << 20, collect, &c, &info), WSQ_OK);
    assert_int_equal(c.n, 0); /* starting at it: nothing, and it is named */
    assert_int_equal(info.corrupt_seq, 3);
    c = (collect_t){0};
    assert_int_equal(wsq_store_read(f->store, id, 4, 100, 1 << 20, collect, &c, &info), WSQ_OK);
    assert_int_equal(c.n, 5);
    assert_int_equal(info.corrupt_seq, 0);
    assert_string_equal(c.payloads[0], "m4");
    /* without a callback nothing is handed out, so nothing is checked */
    assert_int_equal(wsq_store_read(f->store, id, 1, 100, 1 << 20, NULL, NULL, &info), WSQ_OK);
    assert_int_equal(info.corrupt_seq, 0);
    reports_t rep = {0};
    uint64_t v = 0;
    assert_int_equal(wsq_store_check(f->store, on_violation, &rep, &v), WSQ_OK);
    assert_int_equal(v, 1);
    assert_non_null(strstr(rep.last, "seq 3: checksum mismatch"));

    /* the timestamp and the flags are covered too */
    raw_edit(f, id, 5, flip_ts);
    raw_edit(f, id, 6, flip_binary_flag);
    assert_int_equal(open_at(f->dir, WSQ_STORE_READONLY, 0, 0, &f->store), WSQ_OK);
    c = (collect_t){0};
    assert_int_equal(wsq_store_read(f->store, id, 4, 100, 1 << 20, collect, &c, &info), WSQ_OK);
    assert_int_equal(c.n, 1);
    assert_int_equal(info.corrupt_seq, 5);
    c = (collect_t){0};
    assert_int_equal(wsq_store_read(f->store, id, 6, 100, 1 << 20, collect, &c, &info), WSQ_OK);
    assert_int_equal(info.corrupt_seq, 6);
    int mismatches = 0;
    assert_int_equal(wsq_store_check(f->store, count_mismatch, &mismatches, &v), WSQ_OK);
    assert_int_equal(mismatches, 3);

    /* a message as format 2 wrote it is read and checked with its own CRC */
    raw_edit(f, id, 7, make_format2);
    assert_int_equal(open_at(f->dir, WSQ_STORE_READONLY, 0, 0, &f->store), WSQ_OK);
    c = (collect_t){0};
    assert_int_equal(wsq_store_read(f->store, id, 7, 100, 1 << 20, collect, &c, &info), WSQ_OK);
    assert_int_equal(c.n, 2);
    assert_int_equal(info.corrupt_seq, 0);
    assert_string_equal(c.payloads[0], "m7");
    mismatches = 0;
    assert_int_equal(wsq_store_check(f->store, count_mismatch, &mismatches, &v), WSQ_OK);
    assert_int_equal(mismatches, 3);
    raw_edit(f, id, 7, flip_payload);
    assert_int_equal(open_at(f->dir, WSQ_STORE_READONLY, 0, 0, &f->store), WSQ_OK);
    c = (collect_t){0};
    assert_int_equal(wsq_store_read(f->store, id, 7, 100, 1 << 20, collect, &c, &info), WSQ_OK);
    assert_int_equal(c.n, 0);
    assert_int_equal(info.corrupt_seq, 7);

    /* a format 2 store is upgraded in place; what it stored keeps its CRC and its check */
    stamp_format(f, 2);
    reopen(f);
    assert_int_equal(wsq_store_format_before(f->store), 2);
    assert_int_equal(wsq_store_format(f->store), WSQ_FORMAT_VERSION);
    append_str(f->store, "crc", "m9");
    c = (collect_t){0};
    assert_int_equal(wsq_store_read(f->store, id, 8, 100, 1 << 20, collect, &c, &info), WSQ_OK);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.payloads[1], "m9");
    c = (collect_t){0};
    assert_int_equal(wsq_store_read(f->store, id, 7, 100, 1 << 20, collect, &c, &info), WSQ_OK);
    assert_int_equal(info.corrupt_seq, 7);
}

typedef struct {
    int n;
    size_t hlen[4], len[4];
    unsigned char h[4][32];
    uint32_t flags[4];
    unsigned char first[4], last[4];
} hview_t;

static int hcollect(void *arg, const wsq_msg_view_t *m)
{
    hview_t *v = arg;
    if (v->n < 4) {
        v->hlen[v->n] = m->headers_len;
        v->len[v->n] = m->len;
        v->flags[v->n] = m->flags;
        if (m->headers_len && m->headers_len <= sizeof(v->h[0]))
            memcpy(v->h[v->n], m->headers, m->headers_len);
        if (m->len) {
            v->first[v->n] = ((const unsigned char *)m->data)[0];
            v->last[v->n] = ((const unsigned char *)m->data)[m->len - 1];
        }
        v->n++;
    }
    return 0;
}

/* A message with headers (format 4): the store keeps the body (headers' length, the block, the
 * payload) and a read splits it again, for a small and for a parted message; the body counts in
 * the topic's bytes; check knows the flag. */
static void test_store_headers(void **state)
{
    fixture_t *f = *state;
    static const unsigned char hb[] = {1, 'k', 1, 0, 'v'};
    static unsigned char big[20000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)(i * 7);
    const char *t = "hdr";
    for (int i = 0; i < 3; i++) {
        wsq_wreq_t *r = i == 0 ? wsq_wreq_append(t, 3, "payload", 7, 0, hb, sizeof(hb), NULL, 0, 0)
                        : i == 1 ? wsq_wreq_append(t, 3, big, sizeof(big), WSQ_MSG_BINARY, hb,
                                                   sizeof(hb), NULL, 0, 0)
                                 : wsq_wreq_append(t, 3, "plain", 5, 0, NULL, 0, NULL, 0, 0);
        assert_non_null(r);
        assert_int_equal(r->flags & WSQ_MSG_HEADERS, i < 2 ? WSQ_MSG_HEADERS : 0);
        assert_int_equal(wsq_store_call(f->store, r), WSQ_OK);
        wsq_wreq_free(&r);
    }
    uint32_t id = topic_id(f->store, t);
    hview_t v = {0};
    wsq_read_info_t info;
    assert_int_equal(wsq_store_read(f->store, id, 1, 10, UINT64_MAX, hcollect, &v, &info), WSQ_OK);
    assert_int_equal(v.n, 3);
    assert_int_equal(v.hlen[0], sizeof(hb));
    assert_memory_equal(v.h[0], hb, sizeof(hb));
    assert_int_equal(v.len[0], 7);
    assert_int_equal(v.first[0], 'p');
    assert_int_equal(v.flags[1], WSQ_MSG_BINARY | WSQ_MSG_HEADERS);
    assert_int_equal(v.hlen[1], sizeof(hb));
    assert_int_equal(v.len[1], sizeof(big));
    assert_int_equal(v.first[1], big[0]);
    assert_int_equal(v.last[1], big[sizeof(big) - 1]);
    assert_int_equal(v.hlen[2], 0);
    assert_int_equal(v.len[2], 5);
    /* bytes: the bodies as stored */
    assert_int_equal(info.bytes, (4 + sizeof(hb) + 7) + (4 + sizeof(hb) + sizeof(big)) + 5);
    reports_t rep = {0};
    uint64_t n = 99;
    assert_int_equal(wsq_store_check(f->store, on_violation, &rep, &n), WSQ_OK);
    assert_int_equal(n, 0);
    /* too long for the store */
    assert_null(wsq_wreq_append(t, 3, "x", 1, 0, hb, (size_t)UINT32_MAX, NULL, 0, 0));
    /* (the payload is not read: the sizes are refused first) */
    assert_null(wsq_wreq_append(t, 3, "x", (size_t)UINT32_MAX - 2, 0, hb, sizeof(hb), NULL, 0, 0));
    static const char long_id[WSQ_MSG_ID_MAX + 1] = {0};
    assert_null(wsq_wreq_append(t, 3, "x", 1, 0, NULL, 0, long_id, sizeof(long_id), 0));
}

typedef struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    int left;
} multi_t;

static void multi_done(wsq_wreq_t *r, void *arg)
{
    (void)r;
    multi_t *w = arg;
    pthread_mutex_lock(&w->m);
    w->left--;
    pthread_cond_signal(&w->c);
    pthread_mutex_unlock(&w->m);
}

static uint64_t append_id(wsq_store_t *s, const char *topic, const char *text, const char *id,
                          bool *dup)
{
    wsq_wreq_t *r =
        wsq_wreq_append(topic, strlen(topic), text, strlen(text), 0, NULL, 0, id, strlen(id), 0);
    assert_non_null(r);
    assert_int_equal(wsq_store_call(s, r), WSQ_OK);
    uint64_t seq = r->seq;
    *dup = r->dup;
    wsq_wreq_free(&r);
    return seq;
}

static size_t raw_entries(fixture_t *f, const char *table)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi = raw_begin(&f->store, f->dir, table, &env, &txn);
    MDB_stat st;
    assert_int_equal(mdb_stat(txn, dbi, &st), 0);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    reopen(f);
    return st.ms_entries;
}

/* Idempotent publish: an id is stored once per topic within the topic's dedup_window; a repeat
 * gets the first seq and dup; another topic, or a topic without a window, stores it again; after
 * the window the id is new, and expired ids are trimmed from both tables. */
static void test_store_dedup(void **state)
{
    fixture_t *f = *state;
    bool dup;
    assert_int_equal(append_id(f->store, "dd.a", "one", "k1", &dup), 1);
    assert_false(dup);
    assert_int_equal(append_id(f->store, "dd.a", "again", "k1", &dup), 1);
    assert_true(dup);
    assert_int_equal(append_id(f->store, "dd.a", "two", "k2", &dup), 2);
    assert_false(dup);
    assert_int_equal(append_id(f->store, "dd.b", "other topic", "k1", &dup), 1);
    assert_false(dup);
    assert_int_equal(append_id(f->store, "plain", "x", "k1", &dup), 1); /* no window */
    assert_int_equal(append_id(f->store, "plain", "x", "k1", &dup), 2);
    assert_false(dup);
    /* one batch: the second of two with one id is the dup */
    wsq_wreq_t *a = wsq_wreq_append("dd.a", 4, "p", 1, 0, NULL, 0, "k3", 2, 0);
    wsq_wreq_t *b = wsq_wreq_append("dd.a", 4, "q", 1, 0, NULL, 0, "k3", 2, 0);
    a->next = b;
    wsq_wreq_t *list[2] = {a, b};
    multi_t mw = {.left = 2};
    pthread_mutex_init(&mw.m, NULL);
    pthread_cond_init(&mw.c, NULL);
    a->done = b->done = multi_done;
    a->arg = b->arg = &mw;
    assert_int_equal(wsq_store_submit_list(f->store, a), WSQ_OK);
    pthread_mutex_lock(&mw.m);
    while (mw.left > 0)
        pthread_cond_wait(&mw.c, &mw.m);
    pthread_mutex_unlock(&mw.m);
    pthread_cond_destroy(&mw.c);
    pthread_mutex_destroy(&mw.m);
    assert_int_equal(list[0]->err, WSQ_OK);
    assert_int_equal(list[1]->err, WSQ_OK);
    assert_int_equal(list[0]->seq, 3);
    assert_false(list[0]->dup);
    assert_int_equal(list[1]->seq, 3);
    assert_true(list[1]->dup);
    wsq_wreq_free(&list[0]);
    wsq_wreq_free(&list[1]);
    /* it survives a reopen */
    reopen(f);
    assert_int_equal(append_id(f->store, "dd.a", "after reopen", "k2", &dup), 2);
    assert_true(dup);
    assert_int_equal(raw_entries(f, "dedup"), 4); /* k1 k2 k3 on dd.a, k1 on dd.b */
    assert_int_equal(raw_entries(f, "dedup_exp"), 4);
    /* past the window: new, and the expired ones are trimmed */
    fake_now += 10001;
    assert_int_equal(append_id(f->store, "dd.a", "new again", "k1", &dup), 4);
    assert_false(dup);
    assert_int_equal(raw_entries(f, "dedup"), 1);
    assert_int_equal(raw_entries(f, "dedup_exp"), 1);
}

/* A dead letter for consumer c of src, acknowledging seq: its copy of payload p. */
static wsq_err dead_letter(fixture_t *f, const char *dead, uint32_t src, const char *consumer,
                           const wsq_cstate_t *base, uint64_t seq, const char *p, uint64_t *out)
{
    static const unsigned char hb[] = {10,  'w', 's', 'q', '-', 'r', 'e', 'a', 's',
                                       'o', 'n', 4,   0,   't', 'e', 'r', 'm'};
    wsq_wreq_t *r = wsq_wreq_dead_letter(dead, strlen(dead), src, consumer, strlen(consumer), p,
                                         strlen(p), 0, hb, sizeof(hb));
    assert_non_null(r);
    assert_int_equal(wsq_cstate_copy(&r->state, base), WSQ_OK);
    uint32_t count;
    for (uint64_t s = r->state.delivered_upto + 1; s <= seq; s++)
        assert_int_equal(wsq_cstate_delivered(&r->state, s, &count), WSQ_OK);
    assert_int_equal(wsq_cstate_ack(&r->state, seq, NULL), WSQ_OK);
    wsq_err err = wsq_store_call(f->store, r);
    if (out)
        *out = r->seq;
    wsq_wreq_free(&r);
    return err;
}

/* DEAD_LETTER: the copy in the dead-letter topic and the consumer's acknowledging state are one
 * transaction: both, or neither when the consumer is gone or the dead-letter topic refuses. */
static void test_store_dead_letter(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 3; i++)
        append_str(f->store, "src", "poison");
    uint32_t src = topic_id(f->store, "src");
    wsq_wreq_t *open = NULL;
    assert_int_equal(simple(f->store, WSQ_WOP_CONSUMER_OPEN, "src", "c", 0, &open), WSQ_OK);
    uint64_t dseq = 0;
    assert_int_equal(dead_letter(f, "src.dlq", src, "c", &open->state, 2, "poison", &dseq), WSQ_OK);
    assert_int_equal(dseq, 1);
    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    assert_int_equal(wsq_store_consumer_get(f->store, src, "c", 1, &cs), WSQ_OK);
    assert_true(wsq_cstate_is_acked(&cs, 2));
    assert_false(wsq_cstate_is_acked(&cs, 1));
    wsq_cstate_fini(&cs);
    hview_t v = {0};
    assert_int_equal(wsq_store_read(f->store, topic_id(f->store, "src.dlq"), 1, 10, UINT64_MAX,
                                    hcollect, &v, NULL),
                     WSQ_OK);
    assert_int_equal(v.n, 1);
    assert_int_equal(v.len[0], 6);
    assert_int_equal(v.hlen[0], 17);
    assert_memory_equal(v.h[0], "\x0awsq-reason", 11);

    /* a full dead-letter topic refuses: the consumer is left as it was */
    for (int i = 0; i < 3; i++)
        append_str(f->store, "new3.dlq", "full");
    assert_int_equal(dead_letter(f, "new3.dlq", src, "c", &open->state, 3, "poison", NULL),
                     WSQ_ERR_TOPIC_FULL);
    wsq_cstate_init(&cs);
    assert_int_equal(wsq_store_consumer_get(f->store, src, "c", 1, &cs), WSQ_OK);
    assert_true(wsq_cstate_is_acked(&cs, 2));
    assert_false(wsq_cstate_is_acked(&cs, 3));
    wsq_cstate_fini(&cs);
    /* no such consumer: nothing appended, the dead-letter topic not even made */
    assert_int_equal(dead_letter(f, "gone.dlq", src, "nobody", &open->state, 3, "x", NULL),
                     WSQ_ERR_NOTFOUND);
    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_lookup(f->store, "gone.dlq", 8, &ti), WSQ_ERR_NOTFOUND);
    /* a state beyond the topic: refused, nothing appended */
    wsq_cstate_t far;
    wsq_cstate_init(&far);
    assert_int_equal(wsq_cstate_copy(&far, &open->state), WSQ_OK);
    far.ack_floor = far.delivered_upto = 3;
    assert_int_equal(dead_letter(f, "src.dlq", src, "c", &far, 4, "x", NULL), WSQ_ERR_BAD_SEQ);
    wsq_cstate_fini(&far);
    assert_int_equal(wsq_store_topic_lookup(f->store, "src.dlq", 7, &ti), WSQ_OK);
    assert_int_equal(ti.next_seq, 2);
    wsq_wreq_free(&open);
}

static void test_store_compact_copy(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 50; i++)
        append_str(f->store, "cp", "copy me");
    char dest[128];
    snprintf(dest, sizeof(dest), "%s/copy", f->dir);
    assert_int_equal(wsq_store_compact(f->store, dest), WSQ_OK);
    assert_int_equal(wsq_store_compact(f->store, dest), WSQ_ERR_EXISTS);
    wsq_store_t *c = NULL;
    assert_int_equal(open_at(dest, WSQ_STORE_READONLY, 0, 0, &c), WSQ_OK);
    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_lookup(c, "cp", 2, &ti), WSQ_OK);
    assert_int_equal(ti.count, 50);
    uint64_t v = 1;
    assert_int_equal(wsq_store_check(c, NULL, NULL, &v), WSQ_OK);
    assert_int_equal(v, 0);
    wsq_store_close(c);
}

static void test_store_stop_completes_queued_then_refuses(void **state)
{
    fixture_t *f = *state;
    wsq_wreq_t *head = NULL, **tail = &head;
    for (int i = 0; i < 50; i++) {
        wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_APPEND, "stop", 4, NULL, 0, 1);
        r->data[0] = 'x';
        *tail = r;
        tail = &r->next;
    }
    assert_int_equal(wsq_store_submit_list(f->store, head), WSQ_OK);
    wsq_store_stop(f->store);
    wsq_store_stop(f->store); /* idempotent */
    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_lookup(f->store, "stop", 4, &ti), WSQ_OK);
    assert_int_equal(ti.count, 50);
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_APPEND, "stop", 4, NULL, 0, 1);
    assert_int_equal(wsq_store_submit(f->store, r), WSQ_ERR_CLOSED);
    wsq_wreq_free(&r);
}

static void test_store_readonly_has_no_writer(void **state)
{
    fixture_t *f = *state;
    append_str(f->store, "ro", "x");
    wsq_store_t *ro = NULL;
    assert_int_equal(open_at(f->dir, WSQ_STORE_READONLY, 0, 0, &ro), WSQ_OK);
    assert_int_equal(wsq_store_start(ro), WSQ_ERR_INVAL);
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_APPEND, "ro", 2, NULL, 0, 0);
    assert_int_equal(wsq_store_submit(ro, r), WSQ_ERR_CLOSED);
    wsq_wreq_free(&r);
    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_lookup(ro, "ro", 2, &ti), WSQ_OK);
    /* the reader sees later commits */
    append_str(f->store, "ro", "y");
    assert_int_equal(wsq_store_topic_lookup(ro, "ro", 2, &ti), WSQ_OK);
    assert_int_equal(ti.count, 2);
    wsq_store_close(ro);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_open_missing_without_create_is_nostore),
        T(test_store_create_stamps_format),
        T(test_store_refuses_newer_format),
        cmocka_unit_test(test_store_refuses_foreign_lmdb),
        T(test_store_exclusive_lock_is_busy),
        T(test_store_append_and_read_roundtrip),
        T(test_store_submit_refuses_bad_requests),
        T(test_store_topics_ensure_lookup_list),
        T(test_store_seq_never_reused_after_purge_all),
        T(test_store_purge_before_and_older),
        T(test_store_purge_spans_many_transactions),
        T(test_store_requests_after_a_purge_in_one_batch_complete),
        T(test_store_retention_max_messages),
        T(test_store_retention_max_bytes),
        T(test_store_retention_max_age),
        T(test_store_discard_new_refuses),
        T(test_store_map_grows_then_storage_full),
        T(test_store_consumer_lifecycle),
        T(test_store_consumer_put_replaces_state),
        T(test_store_consumer_ops_coalesce_in_one_batch),
        T(test_store_topic_delete_and_recreate),
        T(test_store_seq_at_time),
        T(test_store_check_finds_damage),
        T(test_store_checksum_on_every_read),
        T(test_store_headers),
        T(test_store_dedup),
        T(test_store_dead_letter),
        T(test_store_compact_copy),
        T(test_store_stop_completes_queued_then_refuses),
        T(test_store_readonly_has_no_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
