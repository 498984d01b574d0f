/* Storage of messages larger than a page: byte-exact round trips at every size boundary, removal
 * by purge, retention and topic delete, check, format upgrade, and a file that stays bounded
 * under churn (LMDB's free list cannot hand out the contiguous page runs a value spread over
 * several pages needs once it is fragmented, so such values would grow the file forever). */
#include <ftw.h>
#include <lmdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "raw_lmdb.h"
#include "rm_rf.h"
#include "wsq/store.h"

#define CHURN_KEEP (4u << 20) /* retention of the churn topic, bytes */

static void policy(void *arg, const char *topic, size_t len, wsq_retention_t *out)
{
    (void)arg;
    (void)len;
    if (strncmp(topic, "churn.", 6) == 0)
        out->max_bytes = CHURN_KEEP;
}

typedef struct {
    char dir[64];
    wsq_store_t *store;
} fixture_t;

static wsq_err open_at(const char *dir, unsigned flags, wsq_store_t **out)
{
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = dir;
    o.flags = flags;
    o.sync = WSQ_SYNC_NONE;
    o.retention = policy;
    return wsq_store_open(&o, out, NULL);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/wsq-test-large-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    if (open_at(f->dir, WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE, &f->store) != WSQ_OK ||
        wsq_store_start(f->store) != WSQ_OK)
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

static void reopen(fixture_t *f, unsigned flags)
{
    wsq_store_close(f->store);
    f->store = NULL;
    assert_int_equal(open_at(f->dir, flags, &f->store), WSQ_OK);
    if (!(flags & WSQ_STORE_READONLY))
        assert_int_equal(wsq_store_start(f->store), WSQ_OK);
}

/* payload byte i of a message: depends on seq and i, so a misplaced part shows */
static unsigned char pat(uint64_t seq, size_t i)
{
    return (unsigned char)(seq * 131 + i * 7 + (i >> 12));
}

static uint64_t append_pat(wsq_store_t *s, const char *topic, uint64_t seq_hint, size_t len,
                           uint32_t flags)
{
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_APPEND, topic, strlen(topic), NULL, 0, len);
    assert_non_null(r);
    for (size_t i = 0; i < len; i++)
        r->data[i] = pat(seq_hint, i);
    r->flags = flags;
    assert_int_equal(wsq_store_call(s, r), WSQ_OK);
    uint64_t seq = r->seq;
    wsq_wreq_free(&r);
    assert_int_equal(seq, seq_hint);
    return seq;
}

/* a purge (mode, before seq) or a topic delete (mode 0) */
static wsq_err simple(wsq_store_t *s, wsq_purge_t mode, const char *topic, uint64_t seq)
{
    wsq_wreq_t *r =
        wsq_wreq_new(mode ? WSQ_WOP_PURGE : WSQ_WOP_TOPIC_DELETE, topic, strlen(topic), NULL, 0, 0);
    assert_non_null(r);
    r->purge_mode = mode;
    r->purge_seq = seq;
    wsq_err err = wsq_store_call(s, r);
    wsq_wreq_free(&r);
    return err;
}

typedef struct {
    const size_t *sizes; /* expected length of seq i at sizes[i - 1] */
    uint64_t next;       /* next seq expected */
    unsigned n;
    uint64_t bytes;
} verify_t;

static int verify(void *arg, const wsq_msg_view_t *m)
{
    verify_t *v = arg;
    assert_int_equal(m->seq, v->next);
    assert_int_equal(m->len, v->sizes[m->seq - 1]);
    assert_int_equal(m->flags, m->seq % 2 ? WSQ_MSG_BINARY : 0);
    for (size_t i = 0; i < m->len; i++)
        if (((const unsigned char *)m->data)[i] != pat(m->seq, i))
            fail_msg("seq %llu: byte %zu differs", (unsigned long long)m->seq, i);
    v->next++;
    v->n++;
    v->bytes += m->len;
    return 0;
}

static void check_clean(wsq_store_t *s)
{
    uint64_t violations = 99;
    assert_int_equal(wsq_store_check(s, NULL, NULL, &violations), WSQ_OK);
    assert_int_equal(violations, 0);
}

static const size_t sizes[] = {0,    1,     2000, 2100, 4063,    4064,   4065,  4080,
                               4081, 8144,  8145, 8160, 12000,   65536,  66000, 70001,
                               3,    40000, 4096, 1,    1 << 20, 100000, 5};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static void append_all(wsq_store_t *s, const char *topic)
{
    for (unsigned i = 0; i < NSIZES; i++)
        append_pat(s, topic, i + 1, sizes[i], (i + 1) % 2 ? WSQ_MSG_BINARY : 0);
}

static uint32_t topic_id(wsq_store_t *s, const char *name, wsq_topic_info_t *ti)
{
    assert_int_equal(wsq_store_topic_lookup(s, name, strlen(name), ti), WSQ_OK);
    return ti->id;
}

/* ------------------------------------------------------------------------------------------- */

static void test_large_roundtrip_at_every_boundary(void **state)
{
    fixture_t *f = *state;
    append_all(f->store, "big");
    wsq_topic_info_t ti;
    uint32_t id = topic_id(f->store, "big", &ti);
    uint64_t total = 0;
    for (unsigned i = 0; i < NSIZES; i++)
        total += sizes[i];
    assert_int_equal(ti.count, NSIZES);
    assert_int_equal(ti.bytes, total);

    /* all at once, then one at a time from every seq, then across a reopen */
    for (int round = 0; round < 2; round++) {
        verify_t v = {.sizes = sizes, .next = 1};
        wsq_read_info_t info;
        assert_int_equal(wsq_store_read(f->store, id, 1, 1000, UINT64_MAX, verify, &v, &info),
                         WSQ_OK);
        assert_int_equal(v.n, NSIZES);
        assert_int_equal(v.bytes, total);
        assert_int_equal(info.bytes, total);
        for (uint64_t seq = 1; seq <= NSIZES; seq++) {
            v = (verify_t){.sizes = sizes, .next = seq};
            assert_int_equal(wsq_store_read(f->store, id, seq, 1, 1, verify, &v, &info), WSQ_OK);
            assert_int_equal(v.n, 1);
        }
        check_clean(f->store);
        reopen(f, WSQ_STORE_EXCLUSIVE);
    }
    /* a byte budget counts the whole payload of a large message */
    verify_t v = {.sizes = sizes, .next = 14};
    wsq_read_info_t info;
    assert_int_equal(wsq_store_read(f->store, id, 14, 100, 65536 + 1000, verify, &v, &info),
                     WSQ_OK);
    assert_int_equal(v.n, 1);
    /* read-only (another process's view) reads them too */
    reopen(f, WSQ_STORE_READONLY);
    v = (verify_t){.sizes = sizes, .next = 1};
    assert_int_equal(wsq_store_read(f->store, id, 1, 1000, UINT64_MAX, verify, &v, NULL), WSQ_OK);
    assert_int_equal(v.n, NSIZES);
    check_clean(f->store);
}

static void test_large_removed_by_purge_retention_and_delete(void **state)
{
    fixture_t *f = *state;
    wsq_store_stats_t st0, st;
    append_pat(f->store, "warm", 1, 10, 0); /* the tables exist */
    assert_int_equal(wsq_store_stats(f->store, &st0), WSQ_OK);

    append_all(f->store, "p");
    assert_int_equal(simple(f->store, WSQ_PURGE_BEFORE, "p", 12), WSQ_OK);
    wsq_topic_info_t ti;
    uint32_t id = topic_id(f->store, "p", &ti);
    assert_int_equal(ti.first_seq, 12);
    verify_t v = {.sizes = sizes, .next = 12};
    assert_int_equal(wsq_store_read(f->store, id, 1, 1000, UINT64_MAX, verify, &v, NULL), WSQ_OK);
    assert_int_equal(v.n, NSIZES - 11);
    check_clean(f->store);
    assert_int_equal(simple(f->store, WSQ_PURGE_ALL, "p", 0), WSQ_OK);
    check_clean(f->store);

    /* the churn topic's retention removes large messages as it goes */
    for (uint64_t seq = 1; seq <= 200; seq++)
        append_pat(f->store, "churn.r", seq, 60000, 0);
    topic_id(f->store, "churn.r", &ti);
    assert_true(ti.bytes <= CHURN_KEEP);
    assert_int_equal(ti.count, CHURN_KEEP / 60000);
    check_clean(f->store);

    assert_int_equal(simple(f->store, 0, "churn.r", 0), WSQ_OK);
    append_all(f->store, "d");
    assert_int_equal(simple(f->store, 0, "d", 0), WSQ_OK);
    check_clean(f->store);
    /* what was removed is free for reuse: the same load again does not grow the file */
    assert_int_equal(wsq_store_stats(f->store, &st0), WSQ_OK);
    append_all(f->store, "d");
    assert_int_equal(simple(f->store, 0, "d", 0), WSQ_OK);
    append_all(f->store, "d");
    assert_int_equal(simple(f->store, 0, "d", 0), WSQ_OK);
    assert_int_equal(wsq_store_stats(f->store, &st), WSQ_OK);
    assert_true(st.pages_used <= st0.pages_used + 16);
    assert_int_equal(st.message_bytes, 10);
}

static void test_large_refuses_above_the_format_limit(void **state)
{
    fixture_t *f = *state;
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_APPEND, "huge", 4, NULL, 0, 1);
    assert_non_null(r);
    r->len = WSQ_MSG_MAX_LEN + 1; /* refused before the payload is looked at */
    assert_int_equal(wsq_store_call(f->store, r), WSQ_ERR_TOO_LARGE);
    wsq_wreq_free(&r);
    wsq_topic_info_t ti;
    assert_int_equal(wsq_store_topic_lookup(f->store, "huge", 4, &ti), WSQ_ERR_NOTFOUND);
}

static void test_large_survive_compact(void **state)
{
    fixture_t *f = *state;
    append_all(f->store, "cp");
    char dest[128];
    snprintf(dest, sizeof(dest), "%s/copy", f->dir);
    assert_int_equal(wsq_store_compact(f->store, dest), WSQ_OK);
    wsq_store_t *c = NULL;
    assert_int_equal(open_at(dest, WSQ_STORE_READONLY, &c), WSQ_OK);
    wsq_topic_info_t ti;
    uint32_t id = topic_id(c, "cp", &ti);
    verify_t v = {.sizes = sizes, .next = 1};
    assert_int_equal(wsq_store_read(c, id, 1, 1000, UINT64_MAX, verify, &v, NULL), WSQ_OK);
    assert_int_equal(v.n, NSIZES);
    check_clean(c);
    wsq_store_close(c);
}

/* Random sizes from 3 KB to 70 KB through a topic that keeps 4 MB: once warm, the file stops
 * growing. */
static void test_large_churn_keeps_the_file_bounded(void **state)
{
    fixture_t *f = *state;
    uint64_t x = 0x9e3779b97f4a7c15u, written = 0, warm_pages = 0;
    wsq_store_stats_t st;
    uint64_t seq = 0;
    while (written < (240u << 20)) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t len = 3000 + (size_t)(x % 67000);
        append_pat(f->store, "churn.c", ++seq, len, 0);
        written += len;
        if (warm_pages == 0 && written >= (40u << 20)) {
            assert_int_equal(wsq_store_stats(f->store, &st), WSQ_OK);
            warm_pages = st.pages_used;
        }
    }
    assert_int_equal(wsq_store_stats(f->store, &st), WSQ_OK);
    print_message("churn: %llu MB written, %llu pages at 40 MB, %llu at the end, %llu free\n",
                  (unsigned long long)(written >> 20), (unsigned long long)warm_pages,
                  (unsigned long long)st.pages_used, (unsigned long long)st.pages_free);
    assert_true(st.pages_used <= warm_pages + warm_pages / 20);
    /* and the file holds little more than the content */
    assert_true(st.pages_used * st.page_size <= 2 * (uint64_t)CHURN_KEEP + (1u << 20));
    check_clean(f->store);
}

static void part_key(unsigned char *kb, uint32_t id, uint64_t seq, uint32_t part)
{
    for (int i = 0; i < 4; i++)
        kb[i] = (unsigned char)(id >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        kb[4 + i] = (unsigned char)(seq >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        kb[12 + i] = (unsigned char)(part >> (24 - 8 * i));
}

typedef struct {
    int n;
    char text[4][200];
} notes_t;

static void on_violation(void *arg, const char *topic, const char *msg)
{
    notes_t *r = arg;
    (void)topic;
    if (r->n < 4)
        snprintf(r->text[r->n], sizeof(r->text[0]), "%s", msg);
    r->n++;
}

static void test_large_check_finds_missing_and_stray_parts(void **state)
{
    fixture_t *f = *state;
    append_all(f->store, "dmg");
    wsq_topic_info_t ti;
    uint32_t id = topic_id(f->store, "dmg", &ti);
    check_clean(f->store);

    /* seq 14 (65536 bytes) loses its part 3; seq 99, which does not exist, gets one */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi = raw_begin(&f->store, f->dir, "parts", &env, &txn);
    unsigned char kb[16];
    part_key(kb, id, 14, 3);
    MDB_val k = {16, kb}, v = {5, "stray"};
    assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
    part_key(kb, id, 99, 0);
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    raw_commit(env, txn);

    assert_int_equal(open_at(f->dir, WSQ_STORE_READONLY, &f->store), WSQ_OK);
    notes_t rep = {0};
    uint64_t n = 0;
    assert_int_equal(wsq_store_check(f->store, on_violation, &rep, &n), WSQ_OK);
    assert_int_equal(n, 2);
    assert_non_null(strstr(rep.text[0], "seq 14: its parts are missing"));
    assert_non_null(strstr(rep.text[1], "part records belong to no message"));
    /* a reader refuses the damaged message instead of handing out a wrong payload */
    verify_t vv = {.sizes = sizes, .next = 13};
    assert_int_equal(wsq_store_read(f->store, id, 13, 10, UINT64_MAX, verify, &vv, NULL),
                     WSQ_ERR_CORRUPT);
    assert_int_equal(vv.n, 1);
}

/* Format 1 had no parts table: a reader still reads it, a writer upgrades it in place. */
static void test_large_format1_store_is_upgraded(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(wsq_store_format_before(f->store), 0); /* created by this open */
    append_pat(f->store, "old", 1, 3000, WSQ_MSG_BINARY);
    append_pat(f->store, "old", 2, 100, 0);
    wsq_topic_info_t ti;
    uint32_t id = topic_id(f->store, "old", &ti);

    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi = raw_begin(&f->store, f->dir, "parts", &env, &txn);
    assert_int_equal(mdb_drop(txn, dbi, 1), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    MDB_val k = {6, "format"}, v = {4, "\1\0\0\0"};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    raw_commit(env, txn);

    static const size_t old_sizes[] = {3000, 100, 70000};
    assert_int_equal(open_at(f->dir, WSQ_STORE_READONLY, &f->store), WSQ_OK);
    assert_int_equal(wsq_store_format(f->store), 1);
    verify_t vv = {.sizes = old_sizes, .next = 1};
    assert_int_equal(wsq_store_read(f->store, id, 1, 10, UINT64_MAX, verify, &vv, NULL), WSQ_OK);
    assert_int_equal(vv.n, 2);
    check_clean(f->store);

    reopen(f, WSQ_STORE_EXCLUSIVE);
    assert_int_equal(wsq_store_format(f->store), WSQ_FORMAT_VERSION);
    assert_int_equal(wsq_store_format_before(f->store), 1);
    append_pat(f->store, "old", 3, 70000, WSQ_MSG_BINARY);
    vv = (verify_t){.sizes = old_sizes, .next = 1};
    assert_int_equal(wsq_store_read(f->store, id, 1, 10, UINT64_MAX, verify, &vv, NULL), WSQ_OK);
    assert_int_equal(vv.n, 3);
    check_clean(f->store);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_large_roundtrip_at_every_boundary),
        T(test_large_removed_by_purge_retention_and_delete),
        T(test_large_churn_keeps_the_file_bounded),
        T(test_large_survive_compact),
        T(test_large_refuses_above_the_format_limit),
        T(test_large_check_finds_missing_and_stray_parts),
        T(test_large_format1_store_is_upgraded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
