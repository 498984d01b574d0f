#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wsq/cstate.h"

static void test_cstate_ack_in_order_advances_floor(void **state)
{
    (void)state;
    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    bool changed;
    assert_int_equal(wsq_cstate_ack(&cs, 1, &changed), WSQ_OK);
    assert_true(changed);
    assert_int_equal(wsq_cstate_ack(&cs, 2, NULL), WSQ_OK);
    assert_int_equal(cs.ack_floor, 2);
    assert_int_equal(cs.n_acked, 0);
    assert_int_equal(wsq_cstate_ack(&cs, 2, &changed), WSQ_OK);
    assert_false(changed);
    wsq_cstate_fini(&cs);
}

static void test_cstate_ack_out_of_order_is_absorbed(void **state)
{
    (void)state;
    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    assert_int_equal(wsq_cstate_ack(&cs, 5, NULL), WSQ_OK);
    assert_int_equal(wsq_cstate_ack(&cs, 3, NULL), WSQ_OK);
    assert_int_equal(wsq_cstate_ack(&cs, 4, NULL), WSQ_OK);
    assert_int_equal(cs.ack_floor, 0);
    assert_int_equal(cs.n_acked, 3);
    assert_true(wsq_cstate_is_acked(&cs, 4));
    assert_false(wsq_cstate_is_acked(&cs, 2));
    assert_int_equal(wsq_cstate_ack(&cs, 2, NULL), WSQ_OK);
    assert_int_equal(cs.ack_floor, 0);
    assert_int_equal(wsq_cstate_ack(&cs, 1, NULL), WSQ_OK);
    assert_int_equal(cs.ack_floor, 5);
    assert_int_equal(cs.n_acked, 0);
    assert_int_equal(wsq_cstate_check(&cs), WSQ_OK);
    wsq_cstate_fini(&cs);
}

static void test_cstate_ack_upto(void **state)
{
    (void)state;
    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    wsq_cstate_ack(&cs, 7, NULL);
    wsq_cstate_ack(&cs, 9, NULL);
    bool changed;
    wsq_cstate_ack_upto(&cs, 6, &changed);
    assert_true(changed);
    assert_int_equal(cs.ack_floor, 7); /* 7 was acked: absorbed */
    assert_int_equal(cs.n_acked, 1);
    wsq_cstate_ack_upto(&cs, 3, &changed);
    assert_false(changed);
    wsq_cstate_ack_upto(&cs, 20, &changed);
    assert_int_equal(cs.ack_floor, 20);
    assert_int_equal(cs.n_acked, 0);
    wsq_cstate_fini(&cs);
}

static void test_cstate_delivery_counts(void **state)
{
    (void)state;
    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    uint32_t n;
    assert_int_equal(wsq_cstate_count(&cs, 1), 0);
    assert_int_equal(wsq_cstate_delivered(&cs, 1, &n), WSQ_OK);
    assert_int_equal(n, 1);
    assert_int_equal(wsq_cstate_delivered(&cs, 2, &n), WSQ_OK);
    assert_int_equal(n, 1);
    assert_int_equal(cs.n_pend, 0); /* first deliveries cost no entry */
    assert_int_equal(wsq_cstate_delivered(&cs, 1, &n), WSQ_OK);
    assert_int_equal(n, 2);
    assert_int_equal(wsq_cstate_delivered(&cs, 1, &n), WSQ_OK);
    assert_int_equal(n, 3);
    assert_int_equal(wsq_cstate_count(&cs, 1), 3);
    assert_int_equal(wsq_cstate_count(&cs, 2), 1);
    assert_int_equal(wsq_cstate_pending(&cs), 2);
    wsq_cstate_ack(&cs, 1, NULL);
    assert_int_equal(cs.n_pend, 0);
    assert_int_equal(wsq_cstate_pending(&cs), 1);
    wsq_cstate_fini(&cs);
}

/* A delivery the client never saw is taken back: newest first, first deliveries lower the
 * high-water mark, redeliveries lose one count, acked seqs stay acked. */
static void test_cstate_undeliver(void **state)
{
    (void)state;
    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    uint32_t n;
    for (uint64_t s = 1; s <= 5; s++)
        assert_int_equal(wsq_cstate_delivered(&cs, s, &n), WSQ_OK);
    assert_int_equal(wsq_cstate_delivered(&cs, 2, &n), WSQ_OK); /* a redelivery */
    assert_int_equal(n, 2);
    bool changed;
    assert_int_equal(wsq_cstate_ack(&cs, 3, &changed), WSQ_OK);
    /* the session ends with 4, 5 and the redelivery of 2 unwritten */
    wsq_cstate_undeliver(&cs, 5);
    wsq_cstate_undeliver(&cs, 4);
    wsq_cstate_undeliver(&cs, 2);
    assert_int_equal(cs.delivered_upto, 3);
    assert_int_equal(wsq_cstate_count(&cs, 2), 1);
    assert_int_equal(wsq_cstate_count(&cs, 4), 0);
    assert_int_equal(wsq_cstate_count(&cs, 5), 0);
    assert_true(wsq_cstate_is_acked(&cs, 3));
    wsq_cstate_undeliver(&cs, 3); /* acked: stays */
    wsq_cstate_undeliver(&cs, 9); /* never delivered: nothing */
    assert_int_equal(cs.delivered_upto, 3);
    assert_true(wsq_cstate_is_acked(&cs, 3));
    /* delivered again: 4 is a first delivery, 2 a second */
    assert_int_equal(wsq_cstate_delivered(&cs, 4, &n), WSQ_OK);
    assert_int_equal(n, 1);
    assert_int_equal(wsq_cstate_delivered(&cs, 2, &n), WSQ_OK);
    assert_int_equal(n, 2);
    assert_int_equal(wsq_cstate_check(&cs), WSQ_OK);
    wsq_cstate_fini(&cs);
}

static void test_cstate_nack_sets_due(void **state)
{
    (void)state;
    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    uint32_t n;
    wsq_cstate_nack(&cs, 1, 1000); /* never delivered: ignored */
    assert_int_equal(cs.n_pend, 0);
    wsq_cstate_delivered(&cs, 1, &n);
    assert_int_equal(wsq_cstate_nack(&cs, 1, 5000), WSQ_OK);
    assert_int_equal(wsq_cstate_due(&cs, 1), 5000);
    assert_int_equal(wsq_cstate_count(&cs, 1), 1);
    wsq_cstate_delivered(&cs, 1, &n);
    assert_int_equal(n, 2);
    assert_int_equal(wsq_cstate_due(&cs, 1), 0);
    wsq_cstate_fini(&cs);
}

static void test_cstate_lag(void **state)
{
    (void)state;
    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    assert_int_equal(wsq_cstate_lag(&cs, 1, 10), 10);
    wsq_cstate_ack_upto(&cs, 3, NULL);
    wsq_cstate_ack(&cs, 5, NULL);
    assert_int_equal(wsq_cstate_lag(&cs, 1, 10), 6);
    assert_int_equal(wsq_cstate_lag(&cs, 8, 10), 3);  /* head trimmed beyond the floor */
    assert_int_equal(wsq_cstate_lag(&cs, 11, 10), 0); /* empty topic */
    wsq_cstate_fini(&cs);
}

static void test_cstate_encode_decode_roundtrip(void **state)
{
    (void)state;
    wsq_cstate_t a, b;
    wsq_cstate_init(&a);
    wsq_cstate_init(&b);
    uint32_t n;
    a.topic_epoch = 0x1122334455667788ull;
    a.created_ms = 1700000000000;
    a.last_seen_ms = 1700000001000;
    for (uint64_t s = 1; s <= 50; s++)
        wsq_cstate_delivered(&a, s, &n);
    for (uint64_t s = 10; s <= 50; s += 3)
        wsq_cstate_ack(&a, s, NULL);
    wsq_cstate_delivered(&a, 2, &n);
    wsq_cstate_nack(&a, 3, 12345);
    size_t len = wsq_cstate_encoded_size(&a);
    unsigned char *buf = malloc(len);
    wsq_cstate_encode(&a, buf);
    assert_int_equal(wsq_cstate_decode(&b, buf, len), WSQ_OK);
    assert_int_equal(b.ack_floor, a.ack_floor);
    assert_int_equal(b.delivered_upto, 50);
    assert_int_equal(b.topic_epoch, a.topic_epoch);
    assert_int_equal(b.created_ms, a.created_ms);
    assert_int_equal(b.last_seen_ms, a.last_seen_ms);
    assert_int_equal(b.n_acked, a.n_acked);
    assert_memory_equal(b.acked, a.acked, a.n_acked * sizeof(uint64_t));
    assert_int_equal(b.n_pend, a.n_pend);
    assert_int_equal(wsq_cstate_count(&b, 2), 2);
    assert_int_equal(wsq_cstate_due(&b, 3), 12345);
    assert_int_equal(b.flags, 0);

    /* the shared flag survives; a flag this version does not know is refused */
    a.flags = WSQ_CSTATE_SHARED;
    wsq_cstate_encode(&a, buf);
    assert_int_equal(wsq_cstate_decode(&b, buf, len), WSQ_OK);
    assert_int_equal(b.flags, WSQ_CSTATE_SHARED);
    buf[12] = 2;
    assert_int_equal(wsq_cstate_decode(&b, buf, len), WSQ_ERR_CORRUPT);
    wsq_cstate_encode(&a, buf);

    /* truncated, bad version and broken invariants are refused */
    assert_int_equal(wsq_cstate_decode(&b, buf, len - 1), WSQ_ERR_CORRUPT);
    assert_int_equal(b.n_acked, 0);
    buf[0] = 9;
    assert_int_equal(wsq_cstate_decode(&b, buf, len), WSQ_ERR_FORMAT_NEWER);
    buf[0] = 1;
    if (a.n_acked >= 2) {
        unsigned char tmp[8];
        memcpy(tmp, buf + 56, 8);
        memcpy(buf + 56, buf + 64, 8);
        memcpy(buf + 64, tmp, 8); /* acked[] no longer sorted */
        assert_int_equal(wsq_cstate_decode(&b, buf, len), WSQ_ERR_CORRUPT);
    }
    free(buf);
    wsq_cstate_fini(&a);
    wsq_cstate_fini(&b);
}

static void test_cstate_copy(void **state)
{
    (void)state;
    wsq_cstate_t a, b;
    wsq_cstate_init(&a);
    wsq_cstate_init(&b);
    wsq_cstate_ack(&a, 4, NULL);
    wsq_cstate_ack(&a, 6, NULL);
    assert_int_equal(wsq_cstate_copy(&b, &a), WSQ_OK);
    assert_int_equal(b.n_acked, 2);
    assert_true(b.acked != a.acked);
    wsq_cstate_ack(&a, 8, NULL);
    assert_int_equal(b.n_acked, 2);
    wsq_cstate_fini(&a);
    wsq_cstate_fini(&b);
}

/* Acks in a shuffled order, as a work queue's members send them, against a plain bitmap:
 * the floor, the individually acked seqs, copies and encode/decode into a reused state agree
 * with the model after every step (the array's start moves inside its allocation). */
static void test_cstate_random_acks(void **state)
{
    (void)state;
    enum { N = 4000 };
    static bool model[N + 2];
    memset(model, 0, sizeof(model));
    wsq_cstate_t cs, cp, dec;
    wsq_cstate_init(&cs);
    wsq_cstate_init(&cp);
    wsq_cstate_init(&dec);
    uint64_t order[N];
    for (uint64_t i = 0; i < N; i++)
        order[i] = i + 1;
    uint32_t r = 12345;
    /* shuffle within windows of 300, so that the floor advances as it goes */
    for (uint32_t i = 0; i < N; i++) {
        r = r * 1103515245u + 12345u;
        uint32_t lo = i / 300 * 300, hi = lo + 300 < N ? lo + 300 : N;
        uint32_t j = lo + (r >> 8) % (hi - lo);
        uint64_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    uint64_t floor = 0;
    for (uint32_t i = 0; i < N; i++) {
        if (i == N / 2) { /* a cumulative ack in the middle */
            uint64_t upto = floor + 150;
            wsq_cstate_ack_upto(&cs, upto, NULL);
            for (uint64_t k = 1; k <= upto; k++)
                model[k] = true;
        }
        assert_int_equal(wsq_cstate_ack(&cs, order[i], NULL), WSQ_OK);
        model[order[i]] = true;
        while (model[floor + 1])
            floor++;
        assert_int_equal(cs.ack_floor, floor);
        assert_int_equal(wsq_cstate_check(&cs), WSQ_OK);
        if (i % 97 == 0) {
            for (uint64_t k = 1; k <= N; k++)
                assert_int_equal(wsq_cstate_is_acked(&cs, k), model[k]);
            assert_int_equal(wsq_cstate_copy(&cp, &cs), WSQ_OK);
            assert_int_equal(cp.n_acked, cs.n_acked);
            assert_memory_equal(cp.acked, cs.acked, cs.n_acked * sizeof(uint64_t));
            size_t len = wsq_cstate_encoded_size(&cs);
            void *buf = malloc(len);
            assert_non_null(buf);
            wsq_cstate_encode(&cs, buf);
            assert_int_equal(wsq_cstate_decode(&dec, buf, len), WSQ_OK);
            free(buf);
            assert_int_equal(dec.ack_floor, cs.ack_floor);
            assert_int_equal(dec.n_acked, cs.n_acked);
            assert_memory_equal(dec.acked, cs.acked, cs.n_acked * sizeof(uint64_t));
            /* the copy and the decoded state go on as the original would */
            if (i + 1 < N) {
                assert_int_equal(wsq_cstate_ack(&cp, order[i + 1], NULL), WSQ_OK);
                assert_int_equal(wsq_cstate_ack(&dec, order[i + 1], NULL), WSQ_OK);
                assert_int_equal(cp.ack_floor, dec.ack_floor);
                assert_int_equal(wsq_cstate_check(&dec), WSQ_OK);
            }
        }
    }
    assert_int_equal(cs.ack_floor, N);
    assert_int_equal(cs.n_acked, 0);
    wsq_cstate_fini(&cs);
    wsq_cstate_fini(&cp);
    wsq_cstate_fini(&dec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cstate_ack_in_order_advances_floor),
        cmocka_unit_test(test_cstate_ack_out_of_order_is_absorbed),
        cmocka_unit_test(test_cstate_ack_upto),
        cmocka_unit_test(test_cstate_undeliver),
        cmocka_unit_test(test_cstate_delivery_counts),
        cmocka_unit_test(test_cstate_nack_sets_due),
        cmocka_unit_test(test_cstate_lag),
        cmocka_unit_test(test_cstate_encode_decode_roundtrip),
        cmocka_unit_test(test_cstate_copy),
        cmocka_unit_test(test_cstate_random_acks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
