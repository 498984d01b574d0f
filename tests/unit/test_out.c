/* Outbound framing (broker/out.c): chunk contents and the byte accounting that credit uses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "out.h"
#include "wsq/proto.h"

static size_t total_len(const wsq_out_t *c)
{
    size_t n = 0;
    for (; c; c = c->next)
        n += c->len;
    return n;
}

/* Regression: the builder counted every frame header as 10 bytes while the service thread
 * credits back what the chunks really hold; the difference leaked 6 bytes of window per
 * 200-byte message and a drain stalled after 174,763 messages. */
static void test_out_accounted_bytes_equal_chunk_bytes(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 125, 126, 200, 65535, 65536, 65537, 70000, 300000};
    unsigned char *payload = calloc(1, 300000);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        wsq_outlist_t l;
        wsq__outlist_init(&l);
        for (int k = 0; k < 50; k++)
            assert_int_equal(wsq__outlist_frame(&l, 2, payload, sizes[i], 7, (uint64_t)k + 1, true),
                             WSQ_OK);
        size_t bytes = l.bytes;
        wsq_out_t *h = wsq__outlist_take(&l);
        assert_int_equal(total_len(h), bytes);
        uint32_t count = 0;
        uint64_t last = 0;
        for (wsq_out_t *c = h; c; c = c->next) {
            assert_true(c->len <= WSQ_FRAG_MAX + WSQ_WS_HDR_MAX); /* always fits one write */
            assert_int_equal(c->sub_id, 7);
            count += c->count;
            if (c->count)
                last = c->last_seq;
        }
        assert_int_equal(count, 50);
        assert_int_equal(last, 50);
        wsq__out_free_list(&h);
    }
    free(payload);
}

/* A message above 64 KiB goes out as fragments: first frame with the opcode and no FIN, then
 * continuation frames, the last with FIN; payload bytes intact. */
static void test_out_large_message_is_fragmented(void **state)
{
    (void)state;
    size_t n = 150000;
    unsigned char *payload = malloc(n);
    for (size_t i = 0; i < n; i++)
        payload[i] = (unsigned char)(i * 31);
    wsq_outlist_t l;
    wsq__outlist_init(&l);
    assert_int_equal(wsq__outlist_frame(&l, 1, payload, n, 1, 9, true), WSQ_OK);
    wsq_out_t *h = wsq__outlist_take(&l);
    unsigned char *back = malloc(n);
    size_t got = 0, frames = 0;
    for (wsq_out_t *c = h; c; c = c->next) {
        size_t off = 0;
        while (off < c->len) {
            const unsigned char *f = c->data + off;
            bool fin = f[0] & 0x80;
            unsigned op = f[0] & 0x0f;
            uint64_t len = f[1] & 0x7f;
            size_t hl = 2;
            if (len == 126) {
                len = (uint64_t)f[2] << 8 | f[3];
                hl = 4;
            } else if (len == 127) {
                len = 0;
                for (int i = 0; i < 8; i++)
                    len = len << 8 | f[2 + i];
                hl = 10;
            }
            assert_int_equal(op, frames == 0 ? 1 : 0);
            assert_int_equal(fin, got + len == n);
            memcpy(back + got, f + hl, len);
            got += len;
            off += hl + len;
            frames++;
        }
    }
    assert_int_equal(got, n);
    assert_int_equal(frames, 3);
    assert_memory_equal(back, payload, n);
    wsq__out_free_list(&h);
    free(back);
    free(payload);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_out_accounted_bytes_equal_chunk_bytes),
        cmocka_unit_test(test_out_large_message_is_fragmented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
