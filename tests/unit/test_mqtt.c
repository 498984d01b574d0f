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

#define MQTT4 0, 4, 'M', 'Q', 'T', 'T', 4
#define MQTT5 0, 4, 'M', 'Q', 'T', 'T', 5

static int connect(const uint8_t *b, size_t n, wsq_mqtt_connect_t *c)
{
    return wsq_mqtt_decode_connect(b, n, c);
}

static bool view_is(wsq_mqtt_view_t v, const char *s)
{
    return v.len == strlen(s) && memcmp(v.p, s, v.len) == 0;
}

static void test_mqtt_connect(void **state)
{
    (void)state;
    wsq_mqtt_connect_t c;
    static const uint8_t min4[] = {MQTT4, 0x02, 0, 60, 0, 2, 'c', '1'};
    assert_int_equal(connect(min4, sizeof(min4), &c), 0);
    assert_int_equal(c.version, 4);
    assert_true(c.clean);
    assert_int_equal(c.keep_alive, 60);
    assert_true(view_is(c.client_id, "c1"));
    assert_false(c.will || c.has_username || c.has_password);
    assert_int_equal(c.receive_maximum, 65535);
    /* will QoS 1 retained, user name and password */
    static const uint8_t full4[] = {MQTT4, 0xEE, 0,   10,  0,   1, 'c', 0,   3, 'w', '/', 't',
                                    0,     3,    'b', 'y', 'e', 0, 1,   'u', 0, 1,   'p'};
    assert_int_equal(connect(full4, sizeof(full4), &c), 0);
    assert_true(c.will && c.will_retain);
    assert_int_equal(c.will_qos, 1);
    assert_true(view_is(c.will_topic, "w/t") && view_is(c.will_payload, "bye"));
    assert_true(view_is(c.username, "u") && view_is(c.password, "p"));
    /* 5.0: Session Expiry 3600, Receive Maximum 10, a User Property; a will with Will Delay 5
     * and Payload Format 1; an empty client id */
    static const uint8_t full5[] = {MQTT5, 0x06, 0, 30, 15,   0x11, 0, 0,   0x0E, 0x10, 0x21, 0,
                                    10,    0x26, 0, 1,  'k',  0,    1, 'v', 0,    0,    7,    0x18,
                                    0,     0,    0, 5,  0x01, 1,    0, 1,   't',  0,    0};
    assert_int_equal(connect(full5, sizeof(full5), &c), 0);
    assert_int_equal(c.version, 5);
    assert_int_equal(c.session_expiry, 3600);
    assert_int_equal(c.receive_maximum, 10);
    assert_int_equal(c.n_user_props, 1);
    assert_int_equal(c.client_id.len, 0);
    assert_true(c.will && c.will_utf8);
    assert_int_equal(c.will_delay, 5);
    assert_true(view_is(c.will_topic, "t"));
    assert_int_equal(c.will_payload.len, 0);

    static const struct {
        uint8_t b[40];
        size_t n;
        int rc;
    } bad[] = {
        {{MQTT4, 0x03, 0, 0, 0, 0}, 12, WSQ_MQTT_RC_MALFORMED},       /* reserved flag */
        {{MQTT4, 0x1C, 0, 0, 0, 0}, 12, WSQ_MQTT_RC_MALFORMED},       /* will QoS 3 */
        {{MQTT4, 0x20, 0, 0, 0, 0}, 12, WSQ_MQTT_RC_MALFORMED},       /* will retain, no will */
        {{MQTT4, 0x40, 0, 0, 0, 0, 0, 0}, 14, WSQ_MQTT_RC_MALFORMED}, /* password alone (3.1.1) */
        {{MQTT4, 0x02, 0, 0, 0, 0, 9}, 13, WSQ_MQTT_RC_MALFORMED},    /* a byte left over */
        {{MQTT4, 0x02, 0, 0, 0, 5, 'a'}, 13, WSQ_MQTT_RC_MALFORMED},  /* client id cut */
        {{0, 4, 'M', 'Q', 'T', 'T', 3, 0x02, 0, 0, 0, 0}, 12, WSQ_MQTT_RC_UNSUPPORTED_VERSION},
        {{0, 6, 'M', 'Q', 'I', 's', 'd', 'p', 3, 0x02, 0, 0, 0, 0},
         14,
         WSQ_MQTT_RC_UNSUPPORTED_VERSION},
        {{MQTT5, 0x02, 0, 0, 3, 0x21, 0, 0, 0, 0}, 16, WSQ_MQTT_RC_PROTOCOL_ERROR}, /* RM 0 */
        {{MQTT5, 0x02, 0, 0, 2, 0x19, 2, 0, 0}, 15, WSQ_MQTT_RC_PROTOCOL_ERROR},    /* RRI 2 */
        {{MQTT5, 0x02, 0, 0, 4, 0x15, 0, 1, 'x', 0, 0}, 17, WSQ_MQTT_RC_BAD_AUTH_METHOD},
        {{MQTT5, 0x02, 0, 0, 3, 0x23, 0, 1, 0, 0}, 16, WSQ_MQTT_RC_PROTOCOL_ERROR}, /* alias */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = connect(bad[i].b, bad[i].n, &c);
        if (rc != bad[i].rc)
            fail_msg("case %zu: %#x, want %#x", i, rc, bad[i].rc);
    }
    /* the version a refused client asked for, for the answer in its own version */
    assert_int_equal(connect(bad[6].b, bad[6].n, &c), WSQ_MQTT_RC_UNSUPPORTED_VERSION);
    assert_int_equal(c.version, 3);
}

static void test_mqtt_connack(void **state)
{
    (void)state;
    uint8_t out[64];
    static const uint8_t v4[] = {0x20, 2, 1, 0};
    assert_int_equal(wsq_mqtt_encode_connack(4, true, 0, NULL, out, sizeof(out)), 4);
    assert_memory_equal(out, v4, 4);
    static const uint8_t v4no[] = {0x20, 2, 0, 5};
    assert_int_equal(wsq_mqtt_encode_connack(4, true, 5, NULL, out, sizeof(out)), 4);
    assert_memory_equal(out, v4no, 4);
    static const uint8_t v5no[] = {0x20, 3, 0, 0x84, 0};
    assert_int_equal(wsq_mqtt_encode_connack(5, false, 0x84, NULL, out, sizeof(out)), 5);
    assert_memory_equal(out, v5no, 5);
    wsq_mqtt_connack_t a = {.assigned_client_id = {(const uint8_t *)"x", 1},
                            .receive_maximum = 10,
                            .max_qos = 2,
                            .no_shared = true};
    static const uint8_t v5ok[] = {0x20, 12, 0, 0, 9, 0x12, 0, 1, 'x', 0x21, 0, 10, 0x2A, 0};
    size_t n = wsq_mqtt_encode_connack(5, false, 0, &a, out, sizeof(out));
    assert_int_equal(n, sizeof(v5ok));
    assert_memory_equal(out, v5ok, sizeof(v5ok));
    /* it reads back as a CONNACK with these properties */
    wsq_mqtt_fixed_t f;
    assert_int_equal(wsq_mqtt_frame(out, n, 5, 0, &f), WSQ_MQTT_OK);
    assert_int_equal(f.type, WSQ_MQTT_CONNACK);
    wsq_mqtt_rd_t r;
    wsq_mqtt_rd_init(&r, out + f.hdr_len + 2, f.body_len - 2);
    seen_t s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(wsq_mqtt_props(&r, WSQ_MQTT_CONNACK, collect, &s), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(wsq_mqtt_encode_connack(5, false, 0, &a, out, 10), 0); /* no room */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mqtt_frame_prefixes), cmocka_unit_test(test_mqtt_frame_refusals),
        cmocka_unit_test(test_mqtt_varint),         cmocka_unit_test(test_mqtt_strings),
        cmocka_unit_test(test_mqtt_properties),     cmocka_unit_test(test_mqtt_connect),
        cmocka_unit_test(test_mqtt_connack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
