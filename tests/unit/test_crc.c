/* storage/crc.c: CRC-32C against independent vectors (RFC 3720 B.4, the "check" value of the
 * Castagnoli CRC), at every length around the switch between the short path and ISA-L, in
 * pieces and whole, and the message seal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "crc.h"

/* bit by bit, straight from the definition (reflected polynomial 0x82F63B78) */
static uint32_t crc_ref(uint32_t crc, const unsigned char *p, size_t len)
{
    crc = ~crc;
    while (len--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
    }
    return ~crc;
}

static void test_crc_vectors(void **state)
{
    (void)state;
    assert_int_equal(wsq__crc32c(0, "123456789", 9), 0xE3069283u);
    unsigned char b[32];
    memset(b, 0, sizeof(b)); /* RFC 3720 B.4 */
    assert_int_equal(wsq__crc32c(0, b, 32), 0x8A9136AAu);
    memset(b, 0xFF, sizeof(b));
    assert_int_equal(wsq__crc32c(0, b, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)i;
    assert_int_equal(wsq__crc32c(0, b, 32), 0x46DD794Eu);
    assert_int_equal(wsq__crc32c(0, b, 0), 0);
}

static void test_crc_every_length_whole_and_in_pieces(void **state)
{
    (void)state;
    static unsigned char buf[5000];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (unsigned char)(i * 131 + (i >> 7));
    for (size_t len = 0; len <= 1100; len++) {
        uint32_t want = crc_ref(0, buf + 1, len); /* (+1: unaligned) */
        assert_int_equal(wsq__crc32c(0, buf + 1, len), want);
        size_t cut = len / 3;
        assert_int_equal(wsq__crc32c(wsq__crc32c(0, buf + 1, cut), buf + 1 + cut, len - cut), want);
    }
    assert_int_equal(wsq__crc32c(0, buf, sizeof(buf)), crc_ref(0, buf, sizeof(buf)));
}

static void test_crc_seal_covers_ts_and_flags(void **state)
{
    (void)state;
    uint32_t p = wsq__crc32c(0, "payload", 7);
    unsigned char tail[12] = {0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 1, 0, 0, 0};
    assert_int_equal(wsq__msg_crc_seal(p, 0x1122334455667788, 1), crc_ref(p, tail, 12));
    assert_int_not_equal(wsq__msg_crc_seal(p, 0x1122334455667788, 0),
                         wsq__msg_crc_seal(p, 0x1122334455667788, 1));
    assert_int_not_equal(wsq__msg_crc_seal(p, 1, 0), wsq__msg_crc_seal(p, 2, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc_vectors),
        cmocka_unit_test(test_crc_every_length_whole_and_in_pieces),
        cmocka_unit_test(test_crc_seal_covers_ts_and_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
