/* broker/mailbox.c: order, batches, the wake-up rule, close, wait deadlines, many producers. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "mailbox.h"

typedef struct {
    wsq_mail_t mail;
    int producer;
    int n;
} item_t;

static int dropped;

static void drop(wsq_mail_t *m)
{
    dropped++;
    free(m);
}

static int wakes;

static void wake(void *arg)
{
    (void)arg;
    wakes++;
}

static item_t *item(int producer, int n)
{
    item_t *it = calloc(1, sizeof(*it));
    assert_non_null(it);
    it->producer = producer;
    it->n = n;
    return it;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Frees a taken list, checking it holds 0..n-1 of one producer in order. */
static void expect_run(wsq_mail_t *m, int n)
{
    int i = 0;
    for (wsq_mail_t *nx; m; m = nx, i++) {
        nx = m->next;
        assert_int_equal(((item_t *)m)->n, i);
        free(m);
    }
    assert_int_equal(i, n);
}

static void test_order_and_batches(void **state)
{
    (void)state;
    wsq_mailbox_t mb;
    wsq_mailbox_init(&mb, NULL, NULL, drop);
    assert_null(wsq_mailbox_take(&mb));
    wsq_mailbox_push(&mb, &item(0, 0)->mail);
    /* a batch of three, linked by the producer, arrives together and in order */
    item_t *a = item(0, 1), *b = item(0, 2), *c = item(0, 3);
    a->mail.next = &b->mail;
    b->mail.next = &c->mail;
    wsq_mailbox_push(&mb, &a->mail);
    wsq_mailbox_push(&mb, &item(0, 4)->mail);
    expect_run(wsq_mailbox_take(&mb), 5);
    assert_null(wsq_mailbox_take(&mb));
    wsq_mailbox_push(&mb, NULL); /* nothing: no-op */
    assert_null(wsq_mailbox_take(&mb));
    wsq_mailbox_fini(&mb);
}

static void test_wake_only_when_idle(void **state)
{
    (void)state;
    wsq_mailbox_t mb;
    wakes = 0;
    wsq_mailbox_init(&mb, wake, NULL, drop);
    wsq_mailbox_push(&mb, &item(0, 0)->mail);
    wsq_mailbox_push(&mb, &item(0, 1)->mail);
    wsq_mailbox_push(&mb, &item(0, 2)->mail);
    assert_int_equal(wakes, 1); /* one wake-up until the owner takes */
    expect_run(wsq_mailbox_take(&mb), 3);
    wsq_mailbox_push(&mb, &item(0, 0)->mail);
    assert_int_equal(wakes, 2); /* taken: the next push wakes again */
    expect_run(wsq_mailbox_take(&mb), 1);
    wsq_mailbox_fini(&mb);
}

static void test_close(void **state)
{
    (void)state;
    wsq_mailbox_t mb;
    wakes = 0;
    dropped = 0;
    wsq_mailbox_init(&mb, wake, NULL, drop);
    wsq_mailbox_push(&mb, &item(0, 0)->mail);
    assert_false(wsq_mailbox_closed(&mb));
    assert_true(wsq_mailbox_close(&mb));
    assert_false(wsq_mailbox_close(&mb)); /* closed already */
    assert_true(wsq_mailbox_closed(&mb));
    /* after close a push is dropped (ownership passed: freed), and wakes nobody */
    wsq_mailbox_push(&mb, &item(0, 1)->mail);
    assert_int_equal(dropped, 1);
    assert_int_equal(wakes, 1);
    /* what was queued before the close stays for the owner */
    expect_run(wsq_mailbox_take(&mb), 1);
    /* a closed mailbox never makes its owner sleep */
    int64_t t0 = now_ms();
    wsq_mailbox_wait(&mb, 0);
    assert_true(now_ms() - t0 < 1000);
    /* fini drops what is left */
    wsq_mailbox_t mb2;
    wsq_mailbox_init(&mb2, NULL, NULL, drop);
    wsq_mailbox_push(&mb2, &item(0, 0)->mail);
    wsq_mailbox_push(&mb2, &item(0, 1)->mail);
    wsq_mailbox_fini(&mb2);
    assert_int_equal(dropped, 3);
    wsq_mailbox_fini(&mb);
}

static void test_wait_deadline(void **state)
{
    (void)state;
    wsq_mailbox_t mb;
    wsq_mailbox_init(&mb, NULL, NULL, drop);
    int64_t t0 = now_ms();
    wsq_mailbox_wait(&mb, t0 + 50); /* nothing comes: returns at the deadline */
    assert_true(now_ms() >= t0 + 49);
    assert_null(wsq_mailbox_take(&mb));
    wsq_mailbox_push(&mb, &item(0, 0)->mail);
    t0 = now_ms();
    wsq_mailbox_wait(&mb, t0 + 10000); /* mail is there: no sleep */
    assert_true(now_ms() - t0 < 1000);
    expect_run(wsq_mailbox_take(&mb), 1);
    wsq_mailbox_fini(&mb);
}

#define PRODUCERS 4
#define PER_PRODUCER 20000

typedef struct {
    wsq_mailbox_t *mb;
    int id;
} producer_t;

static void *produce(void *arg)
{
    producer_t *p = arg;
    for (int i = 0; i < PER_PRODUCER; i++)
        wsq_mailbox_push(p->mb, &item(p->id, i)->mail);
    return NULL;
}

typedef struct {
    wsq_mailbox_t *mb;
    int next[PRODUCERS];
    int total;
} consumer_t;

static void *consume(void *arg)
{
    consumer_t *c = arg;
    while (c->total < PRODUCERS * PER_PRODUCER) {
        wsq_mailbox_wait(c->mb, 0); /* no deadline: only a push wakes it */
        for (wsq_mail_t *m = wsq_mailbox_take(c->mb), *nx; m; m = nx) {
            nx = m->next;
            item_t *it = (item_t *)m;
            /* each producer's items arrive in the order it pushed them, none twice */
            if (it->n != c->next[it->producer])
                return (void *)1;
            c->next[it->producer]++;
            c->total++;
            free(it);
        }
    }
    return NULL;
}

static void test_many_producers(void **state)
{
    (void)state;
    wsq_mailbox_t mb;
    wsq_mailbox_init(&mb, NULL, NULL, drop);
    consumer_t c = {.mb = &mb};
    pthread_t ct, pt[PRODUCERS];
    producer_t p[PRODUCERS];
    assert_int_equal(pthread_create(&ct, NULL, consume, &c), 0);
    for (int i = 0; i < PRODUCERS; i++) {
        p[i] = (producer_t){&mb, i};
        assert_int_equal(pthread_create(&pt[i], NULL, produce, &p[i]), 0);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(pt[i], NULL);
    void *rc;
    pthread_join(ct, &rc);
    assert_null(rc);
    assert_int_equal(c.total, PRODUCERS * PER_PRODUCER);
    wsq_mailbox_fini(&mb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_batches),
        cmocka_unit_test(test_wake_only_when_idle),
        cmocka_unit_test(test_close),
        cmocka_unit_test(test_wait_deadline),
        cmocka_unit_test(test_many_producers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
