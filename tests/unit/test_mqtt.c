/* The MQTT codec foundations (proto/mqtt.c): framing, field readers, MQTT 5.0 properties; byte
 * sequences written from the OASIS specifications' tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "wsq/mqtt.h"

static wsq_mqtt_frame_rc frame(const uint8_t *b, size_t n, uint8_t version, size_t max,
                               wsq_mqtt_fixed_t *f)
{
    return wsq_mqtt_frame(b, n, version, max, f);
}

/* Every prefix of a packet needs more; the whole is one packet; bytes after it are not its. */
static void test_mqtt_frame_prefixes(void **state)
{
    (void)state;
    /* PINGREQ, and a PUBLISH QoS 1 with a 200-byte body (Remaining Length 0xC8 0x01) */
    static uint8_t pub[3 + 200] = {0x32, 0xC8, 0x01};
    wsq_mqtt_fixed_t f;
    static const uint8_t ping[] = {0xC0, 0x00, 0xFF};
    assert_int_equal(frame(ping, 1, 4, 0, &f), WSQ_MQTT_NEED_MORE);
    assert_int_equal(frame(ping, 3, 4, 0, &f), WSQ_MQTT_OK);
    assert_int_equal(f.type, WSQ_MQTT_PINGREQ);
    assert_int_equal(f.hdr_len, 2);
    assert_int_equal(f.body_len, 0);
    for (size_t n = 0; n < sizeof(pub); n++)
        assert_int_equal(frame(pub, n, 5, 0, &f), WSQ_MQTT_NEED_MORE);
    assert_int_equal(frame(pub, sizeof(pub), 5, 0, &f), WSQ_MQTT_OK);
    assert_int_equal(f.type, WSQ_MQTT_PUBLISH);
    assert_int_equal(f.flags, 0x2); /* QoS 1 */
    assert_int_equal(f.hdr_len, 3);
    assert_int_equal(f.body_len, 200);
    /* the maximum packet size counts the header too */
    assert_int_equal(frame(pub, sizeof(pub), 5, 202, &f), WSQ_MQTT_TOO_LARGE);
    assert_int_equal(frame(pub, 3, 5, 202, &f), WSQ_MQTT_TOO_LARGE); /* known from the header */
    assert_int_equal(frame(pub, sizeof(pub), 5, 203, &f), WSQ_MQTT_OK);
}

static void test_mqtt_frame_refusals(void **state)
{
    (void)state;
    wsq_mqtt_fixed_t f;
    static const struct {
        uint8_t b[6];
        size_t n;
        uint8_t version;
    } bad[] = {
        {{0x00, 0x00}, 2, 4},                         /* type 0 is reserved */
        {{0xF0, 0x00}, 2, 4},                         /* AUTH does not exist in 3.1.1 */
        {{0x36, 0x00}, 2, 5},                         /* PUBLISH QoS 3 */
        {{0x60, 0x02, 0, 1}, 4, 5},                   /* PUBREL must carry flags 0010 */
        {{0x80, 0x00}, 2, 5},                         /* SUBSCRIBE too */
        {{0xA0, 0x00}, 2, 5},                         /* UNSUBSCRIBE too */
        {{0xC1, 0x00}, 2, 5},                         /* PINGREQ with a flag */
        {{0x10, 0x80, 0x00}, 3, 5},                   /* Remaining Length not in the fewest bytes */
        {{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, 6, 5}, /* a fifth length byte */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (frame(bad[i].b, bad[i].n, bad[i].version, 0, &f) != WSQ_MQTT_BAD)
            fail_msg("case %zu accepted", i);
    static const uint8_t auth[] = {0xF0, 0x00};
    assert_int_equal(frame(auth, 2, 5, 0, &f), WSQ_MQTT_OK);
    static const uint8_t big[] = {0x30, 0xFF, 0xFF, 0xFF, 0x7F};
    assert_int_equal(frame(big, 5, 5, 0, &f), WSQ_MQTT_NEED_MORE);
    assert_int_equal(f.body_len, WSQ_MQTT_VARINT_MAX);
}

static void test_mqtt_varint(void **state)
{
    (void)state;
    static const uint32_t v[] = {0, 127, 128, 16383, 16384, 2097151, 2097152, 268435455};
    static const size_t len[] = {1, 1, 2, 2, 3, 3, 4, 4};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint8_t b[4];
        assert_int_equal(wsq_mqtt_varint_put(v[i], b), len[i]);
        wsq_mqtt_rd_t r;
        wsq_mqtt_rd_init(&r, b, len[i]);
        assert_int_equal(wsq_mqtt_rd_varint(&r), v[i]);
        assert_false(r.bad);
        assert_int_equal(wsq_mqtt_rd_left(&r), 0);
        wsq_mqtt_rd_init(&r, b, len[i] - 1); /* truncated */
        wsq_mqtt_rd_varint(&r);
        assert_true(r.bad);
    }
    uint8_t b[4];
    assert_int_equal(wsq_mqtt_varint_put(268435456u, b), 0);
}

static void test_mqtt_strings(void **state)
{
    (void)state;
    wsq_mqtt_rd_t r;
    static const uint8_t ok[] = {0, 5, 'a', 0xC3, 0xA9, 'b', 'c', 0, 0};
    wsq_mqtt_rd_init(&r, ok, sizeof(ok));
    wsq_mqtt_view_t v = wsq_mqtt_rd_str(&r);
    assert_false(r.bad);
    assert_int_equal(v.len, 5);
    v = wsq_mqtt_rd_str(&r); /* the empty string */
    assert_false(r.bad);
    assert_int_equal(v.len, 0);
    static const uint8_t nul[] = {0, 3, 'a', 0, 'b'};
    static const uint8_t surrogate[] = {0, 3, 0xED, 0xA0, 0x80};
    static const uint8_t overlong[] = {0, 2, 0xC0, 0xAF};
    static const uint8_t short_[] = {0, 4, 'a', 'b'};
    const uint8_t *bad[] = {nul, surrogate, overlong, short_};
    size_t n[] = {sizeof(nul), sizeof(surrogate), sizeof(overlong), sizeof(short_)};
    for (size_t i = 0; i < 4; i++) {
        wsq_mqtt_rd_init(&r, bad[i], n[i]);
        wsq_mqtt_rd_str(&r);
        assert_true(r.bad);
        assert_int_equal(wsq_mqtt_rd_u8(&r), 0); /* nothing more is read */
    }
    /* binary data takes any bytes */
    wsq_mqtt_rd_init(&r, nul, sizeof(nul));
    v = wsq_mqtt_rd_bin(&r);
    assert_false(r.bad);
    assert_int_equal(v.len, 3);
}

typedef struct {
    uint32_t ids[8];
    uint32_t nums[8];
    int n;
} seen_t;

static int collect(void *arg, const wsq_mqtt_prop_t *p)
{
    seen_t *s = arg;
    if (s->n < 8) {
        s->ids[s->n] = p->id;
        s->nums[s->n] = p->num;
        s->n++;
    }
    return 0;
}

static int props(const uint8_t *b, size_t n, unsigned type, seen_t *s)
{
    wsq_mqtt_rd_t r;
    wsq_mqtt_rd_init(&r, b, n);
    memset(s, 0, sizeof(*s));
    return wsq_mqtt_props(&r, type, collect, s);
}

static void test_mqtt_properties(void **state)
{
    (void)state;
    seen_t s;
    /* CONNECT: Session Expiry 3600, Receive Maximum 20, two User Properties */
    static const uint8_t connect[] = {22,  0x11, 0, 0,   0x0E, 0x10, 0x21, 0,   20, 0x26, 0,  1,
                                      'k', 0,    1, 'v', 0x26, 0,    1,    'k', 0,  1,    'w'};
    assert_int_equal(props(connect, sizeof(connect), WSQ_MQTT_CONNECT, &s), 0);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.ids[0], 0x11);
    assert_int_equal(s.nums[0], 3600);
    assert_int_equal(s.nums[1], 20);
    /* an empty block */
    static const uint8_t none[] = {0};
    assert_int_equal(props(none, 1, WSQ_MQTT_PUBLISH, &s), 0);
    assert_int_equal(s.n, 0);
    /* twice the same: protocol error; Subscription Identifier may repeat in PUBLISH only */
    static const uint8_t twice[] = {6, 0x21, 0, 1, 0x21, 0, 2};
    assert_int_equal(props(twice, sizeof(twice), WSQ_MQTT_CONNECT, &s), WSQ_MQTT_RC_PROTOCOL_ERROR);
    static const uint8_t subids[] = {4, 0x0B, 1, 0x0B, 2};
    assert_int_equal(props(subids, sizeof(subids), WSQ_MQTT_PUBLISH, &s), 0);
    assert_int_equal(props(subids, sizeof(subids), WSQ_MQTT_SUBSCRIBE, &s),
                     WSQ_MQTT_RC_PROTOCOL_ERROR);
    /* not allowed in this packet; no such property; a value cut short; a block too long */
    static const uint8_t alias[] = {3, 0x23, 0, 1};
    assert_int_equal(props(alias, sizeof(alias), WSQ_MQTT_CONNECT, &s), WSQ_MQTT_RC_PROTOCOL_ERROR);
    assert_int_equal(props(alias, sizeof(alias), WSQ_MQTT_PUBLISH, &s), 0);
    static const uint8_t unknown[] = {2, 0x04, 0};
    assert_int_equal(props(unknown, sizeof(unknown), WSQ_MQTT_PUBLISH, &s), WSQ_MQTT_RC_MALFORMED);
    static const uint8_t cut[] = {3, 0x02, 0, 0};
    assert_int_equal(props(cut, sizeof(cut), WSQ_MQTT_PUBLISH, &s), WSQ_MQTT_RC_MALFORMED);
    static const uint8_t longer[] = {9, 0x01, 1};
    assert_int_equal(props(longer, sizeof(longer), WSQ_MQTT_PUBLISH, &s), WSQ_MQTT_RC_MALFORMED);
    /* will properties: Will Delay only there */
    static const uint8_t delay[] = {5, 0x18, 0, 0, 0, 5};
    assert_int_equal(props(delay, sizeof(delay), WSQ_MQTT_WILL_PROPS, &s), 0);
    assert_int_equal(props(delay, sizeof(delay), WSQ_MQTT_PUBLISH, &s), WSQ_MQTT_RC_PROTOCOL_ERROR);
    /* a string property that is not UTF-8 */
    static const uint8_t ctype[] = {5, 0x03, 0, 2, 0xC0, 0xAF};
    assert_int_equal(props(ctype, sizeof(ctype), WSQ_MQTT_PUBLISH, &s), WSQ_MQTT_RC_MALFORMED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mqtt_frame_prefixes), cmocka_unit_test(test_mqtt_frame_refusals),
        cmocka_unit_test(test_mqtt_varint),         cmocka_unit_test(test_mqtt_strings),
        cmocka_unit_test(test_mqtt_properties),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
