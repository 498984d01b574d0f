/* Unit tests for the pure wire codecs (broker/proto_*.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wsq/proto.h"

#define MAXP (1024 * 1024)

/* ------------------------------------------------------------------------------------------- */
/* Helpers                                                                                     */

static void decode_ok(const char *json, wsq_frame_t *f)
{
    wsq_proto_error_t perr;
    wsq_err e = wsq_proto_decode(json, strlen(json), MAXP, f, &perr);
    if (e != WSQ_OK)
        fail_msg("decode %s: %s (%s)", json, wsq_errname(e), perr.message);
}

/* Decodes json expecting code; checks the frame is left cleared and returns the error details. */
static wsq_proto_error_t decode_err_n(const char *json, size_t len, size_t maxp, wsq_err code)
{
    wsq_frame_t f;
    wsq_proto_error_t perr;
    wsq_err e = wsq_proto_decode(json, len, maxp, &f, &perr);
    if (e != code)
        fail_msg("decode %.200s: got %s (%s), want %s", json, wsq_errname(e), perr.message,
                 wsq_errname(code));
    assert_int_equal(perr.code, code);
    assert_true(perr.message[0] != '\0');
    assert_null(f.data);
    assert_null(f.token);
    assert_int_equal(f.op, 0);
    assert_string_equal(f.ref, "");
    assert_int_equal(f.topic_len, 0);
    return perr;
}

static wsq_proto_error_t decode_err(const char *json, wsq_err code)
{
    return decode_err_n(json, strlen(json), MAXP, code);
}

static bool contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

static void assert_frame_eq(const wsq_frame_t *a, const wsq_frame_t *b)
{
    assert_int_equal(a->op, b->op);
    assert_string_equal(a->ref, b->ref);
    assert_int_equal(a->topic_len, b->topic_len);
    assert_memory_equal(a->topic, b->topic, a->topic_len);
    assert_int_equal(a->data_len, b->data_len);
    if (a->data_len > 0)
        assert_memory_equal(a->data, b->data, a->data_len);
    assert_int_equal(a->binary, b->binary);
    assert_string_equal(a->consumer, b->consumer);
    assert_int_equal(a->consumer_len, b->consumer_len);
    assert_int_equal(a->from, b->from);
    assert_int_equal(a->from_seq, b->from_seq);
    assert_int_equal(a->from_time, b->from_time);
    assert_int_equal(a->window, b->window);
    assert_int_equal(a->has_epoch, b->has_epoch);
    assert_int_equal(a->epoch, b->epoch);
    assert_int_equal(a->has_seq, b->has_seq);
    assert_int_equal(a->seq, b->seq);
    assert_int_equal(a->has_upto, b->has_upto);
    assert_int_equal(a->upto, b->upto);
    assert_int_equal(a->delay_ms, b->delay_ms);
    if (a->token == NULL || b->token == NULL)
        assert_ptr_equal(a->token, b->token);
    else
        assert_string_equal(a->token, b->token);
}

/* encode_client(f) then decode, asserting the result equals f. */
static void roundtrip_client(const wsq_frame_t *f)
{
    wsq_buf_t b;
    wsq_buf_init(&b);
    assert_int_equal(wsq_proto_encode_client(f, &b), WSQ_OK);
    assert_true(wsq_utf8_valid(b.data, b.len));
    wsq_frame_t g;
    wsq_proto_error_t perr;
    wsq_err e = wsq_proto_decode(b.data, b.len, MAXP, &g, &perr);
    if (e != WSQ_OK)
        fail_msg("decode %.*s: %s", (int)b.len, b.data, perr.message);
    assert_frame_eq(f, &g);
    wsq_frame_clear(&g);
    wsq_buf_fini(&b);
}

static void set_topic(wsq_frame_t *f, const char *t)
{
    f->topic_len = strlen(t);
    memcpy(f->topic, t, f->topic_len + 1);
}

static void set_data(wsq_frame_t *f, const void *p, size_t n, bool binary)
{
    f->data = malloc(n + 1);
    assert_non_null(f->data);
    memcpy(f->data, p, n);
    f->data_len = n;
    f->binary = binary;
}

/* Asserts that out holds exactly the NUL-terminated text want, then empties out. */
static void assert_buf_str(wsq_buf_t *out, const char *want)
{
    if (out->len != strlen(want) || (out->len > 0 && memcmp(out->data, want, out->len) != 0))
        fail_msg("got  %.*s\nwant %s", (int)out->len, (const char *)out->data, want);
    out->len = 0;
}

static wsq_server_frame_t decode_server_ok(const wsq_buf_t *b)
{
    wsq_server_frame_t s;
    wsq_err e = wsq_proto_decode_server(b->data, b->len, &s);
    if (e != WSQ_OK)
        fail_msg("decode_server %.*s: %s", (int)b->len, b->data, wsq_errname(e));
    return s;
}

static wsq_err decode_server_str(const char *json)
{
    wsq_server_frame_t s;
    wsq_err e = wsq_proto_decode_server(json, strlen(json), &s);
    if (e != WSQ_OK) {
        assert_null(s.data);
        assert_string_equal(s.op, "");
    }
    wsq_server_frame_clear(&s);
    return e;
}

/* ------------------------------------------------------------------------------------------- */
/* Client frames: happy paths                                                                   */

static void test_proto_pub_text(void **state)
{
    (void)state;
    wsq_frame_t f;
    decode_ok("{\"op\":\"pub\",\"ref\":\"a1\",\"topic\":\"chat.room1\",\"data\":\"hello\"}", &f);
    assert_int_equal(f.op, WSQ_OP_PUB);
    assert_string_equal(f.ref, "\"a1\"");
    assert_string_equal(f.topic, "chat.room1");
    assert_int_equal(f.topic_len, 10);
    assert_int_equal(f.data_len, 5);
    assert_memory_equal(f.data, "hello", 5);
    assert_false(f.binary);
    wsq_frame_clear(&f);
    assert_null(f.data);

    decode_ok("{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"x\",\"enc\":\"text\",\"extra\":[1,{}]}",
              &f);
    assert_false(f.binary);
    assert_int_equal(f.data_len, 1);
    assert_string_equal(f.ref, "");
    wsq_frame_clear(&f);
}

static void test_proto_pub_base64(void **state)
{
    (void)state;
    wsq_frame_t f;
    decode_ok("{\"op\":\"pub\",\"ref\":7,\"topic\":\"a/b\",\"data\":\"AP8=\",\"enc\":\"base64\"}",
              &f);
    assert_string_equal(f.ref, "7");
    assert_true(f.binary);
    assert_int_equal(f.data_len, 2);
    assert_int_equal(f.data[0], 0x00);
    assert_int_equal(f.data[1], 0xFF);
    wsq_frame_clear(&f);
}

static void test_proto_pub_empty_payload(void **state)
{
    (void)state;
    wsq_frame_t f;
    decode_ok("{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"\"}", &f);
    assert_int_equal(f.data_len, 0);
    wsq_frame_clear(&f);
    decode_ok("{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"\",\"enc\":\"base64\"}", &f);
    assert_int_equal(f.data_len, 0);
    assert_true(f.binary);
    wsq_frame_clear(&f);
}

static void test_proto_pub_text_nul_and_escapes(void **state)
{
    (void)state;
    wsq_frame_t f;
    decode_ok("{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"a\\u0000b\\\"\\\\\\n\\ud83d\\ude00\"}",
              &f);
    const char want[] = "a\0b\"\\\n\xF0\x9F\x98\x80";
    assert_int_equal(f.data_len, sizeof want - 1);
    assert_memory_equal(f.data, want, sizeof want - 1);
    wsq_frame_clear(&f);
}

static void test_proto_sub_full(void **state)
{
    (void)state;
    wsq_frame_t f;
    decode_ok("{\"op\":\"sub\",\"ref\":\"s\",\"topic\":\"orders\",\"consumer\":\"billing-1.a_b\","
              "\"from\":{\"seq\":42},\"window\":100,\"epoch\":\"00Ff00ff00ff00fF\"}",
              &f);
    assert_int_equal(f.op, WSQ_OP_SUB);
    assert_string_equal(f.consumer, "billing-1.a_b");
    assert_int_equal(f.consumer_len, 13);
    assert_int_equal(f.from, WSQ_FROM_SEQ);
    assert_int_equal(f.from_seq, 42);
    assert_int_equal(f.window, 100);
    assert_true(f.has_epoch);
    assert_int_equal(f.epoch, 0x00ff00ff00ff00ffULL);
    wsq_frame_clear(&f);

    decode_ok("{\"op\":\"sub\",\"topic\":\"orders\"}", &f);
    assert_int_equal(f.from, WSQ_FROM_DEFAULT);
    assert_int_equal(f.consumer_len, 0);
    assert_int_equal(f.window, 0);
    assert_false(f.has_epoch);
    wsq_frame_clear(&f);

    decode_ok("{\"op\":\"sub\",\"topic\":\"o\",\"window\":2147483648}", &f);
    assert_int_equal(f.window, 2147483648u);
    assert_false(f.shared);
    wsq_frame_clear(&f);
}

static void test_proto_sub_shared(void **state)
{
    (void)state;
    wsq_frame_t f;
    decode_ok("{\"op\":\"sub\",\"topic\":\"jobs\",\"consumer\":\"w\",\"shared\":true}", &f);
    assert_true(f.shared);
    /* it encodes back the same */
    wsq_buf_t b;
    wsq_buf_init(&b);
    assert_int_equal(wsq_proto_encode_client(&f, &b), WSQ_OK);
    assert_true(memmem(b.data, b.len, "\"shared\":true", 13) != NULL);
    wsq_frame_clear(&f);
    decode_ok("{\"op\":\"sub\",\"topic\":\"jobs\",\"consumer\":\"w\",\"shared\":false}", &f);
    assert_false(f.shared);
    /* the client encoder refuses shared without a consumer, as decode does */
    f.shared = true;
    f.consumer_len = 0;
    f.consumer[0] = '\0';
    b.len = 0;
    assert_int_equal(wsq_proto_encode_client(&f, &b), WSQ_ERR_INVAL);
    wsq_buf_fini(&b);
    wsq_frame_clear(&f);
    wsq_proto_error_t e =
        decode_err("{\"op\":\"sub\",\"topic\":\"jobs\",\"shared\":true}", WSQ_ERR_BAD_REQUEST);
    assert_true(contains(e.message, "consumer"));
    decode_err("{\"op\":\"sub\",\"topic\":\"j\",\"consumer\":\"w\",\"shared\":1}",
               WSQ_ERR_BAD_TYPE);
    decode_err("{\"op\":\"sub\",\"topic\":\"j\",\"consumer\":\"w\",\"shared\":\"true\"}",
               WSQ_ERR_BAD_TYPE);
}

static void test_proto_sub_from_variants(void **state)
{
    (void)state;
    static const struct {
        const char *from;
        wsq_from_t want;
    } cases[] = {
        {"\"resume\"", WSQ_FROM_RESUME},
        {"\"earliest\"", WSQ_FROM_EARLIEST},
        {"\"latest\"", WSQ_FROM_LATEST},
        {"{\"seq\":1}", WSQ_FROM_SEQ},
        {"{\"time\":0}", WSQ_FROM_TIME},
        {"{\"time\":1700000000000,\"future\":true}", WSQ_FROM_TIME},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[256];
        snprintf(json, sizeof json, "{\"op\":\"sub\",\"topic\":\"t\",\"from\":%s}", cases[i].from);
        wsq_frame_t f;
        decode_ok(json, &f);
        assert_int_equal(f.from, cases[i].want);
        wsq_frame_clear(&f);
    }
    wsq_frame_t f;
    decode_ok("{\"op\":\"sub\",\"topic\":\"t\",\"from\":{\"time\":1700000000000}}", &f);
    assert_int_equal(f.from_time, 1700000000000LL);
    wsq_frame_clear(&f);
}

static void test_proto_sub_bad_values(void **state)
{
    (void)state;
    static const char *bad_request[] = {
        "{\"op\":\"sub\",\"topic\":\"t\",\"consumer\":\"\"}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"consumer\":\"has space\"}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"consumer\":\"a/b\"}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"consumer\":\"a\\u0000\"}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"from\":\"start\"}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"from\":\"resume\\u0000\"}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"from\":{}}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"from\":{\"seq\":1,\"time\":1}}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"from\":{\"seq\":0}}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"from\":{\"time\":-1}}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"window\":0}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"window\":2147483649}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"window\":-5}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"epoch\":\"00ff\"}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"epoch\":\"00ff00ff00ff00fg\"}",
        "{\"op\":\"sub\",\"topic\":\"t\",\"epoch\":\"00ff00ff00ff00ff0\"}",
        "{\"op\":\"sub\"}",
    };
    for (size_t i = 0; i < sizeof bad_request / sizeof bad_request[0]; i++)
        decode_err(bad_request[i], WSQ_ERR_BAD_REQUEST);

    char json[512];
    char name[130];
    memset(name, 'a', 129);
    name[129] = '\0';
    snprintf(json, sizeof json, "{\"op\":\"sub\",\"topic\":\"t\",\"consumer\":\"%s\"}", name);
    decode_err(json, WSQ_ERR_BAD_REQUEST);
    name[128] = '\0';
    snprintf(json, sizeof json, "{\"op\":\"sub\",\"topic\":\"t\",\"consumer\":\"%s\"}", name);
    wsq_frame_t f;
    decode_ok(json, &f);
    assert_int_equal(f.consumer_len, 128);
    wsq_frame_clear(&f);
}

static void test_proto_unsub(void **state)
{
    (void)state;
    wsq_frame_t f;
    decode_ok("{\"op\":\"unsub\",\"topic\":\"x.y\"}", &f);
    assert_int_equal(f.op, WSQ_OP_UNSUB);
    assert_string_equal(f.topic, "x.y");
    wsq_frame_clear(&f);
    decode_err("{\"op\":\"unsub\"}", WSQ_ERR_BAD_REQUEST);
}

static void test_proto_ack(void **state)
{
    (void)state;
    wsq_frame_t f;
    decode_ok("{\"op\":\"ack\",\"topic\":\"t\",\"seq\":9}", &f);
    assert_int_equal(f.op, WSQ_OP_ACK);
    assert_true(f.has_seq);
    assert_false(f.has_upto);
    assert_int_equal(f.seq, 9);
    wsq_frame_clear(&f);

    decode_ok("{\"op\":\"ack\",\"topic\":\"t\",\"upto\":0}", &f);
    assert_false(f.has_seq);
    assert_true(f.has_upto);
    assert_int_equal(f.upto, 0);
    wsq_frame_clear(&f);

    decode_ok("{\"op\":\"ack\",\"topic\":\"t\",\"upto\":9223372036854775807}", &f);
    assert_int_equal(f.upto, INT64_MAX);
    wsq_frame_clear(&f);

    decode_err("{\"op\":\"ack\",\"topic\":\"t\",\"seq\":1,\"upto\":2}", WSQ_ERR_BAD_REQUEST);
    decode_err("{\"op\":\"ack\",\"topic\":\"t\"}", WSQ_ERR_BAD_REQUEST);
    decode_err("{\"op\":\"ack\",\"topic\":\"t\",\"seq\":0}", WSQ_ERR_BAD_REQUEST);
    decode_err("{\"op\":\"ack\",\"topic\":\"t\",\"upto\":-1}", WSQ_ERR_BAD_REQUEST);
    decode_err("{\"op\":\"ack\",\"seq\":1}", WSQ_ERR_BAD_REQUEST);
    wsq_proto_error_t e =
        decode_err("{\"op\":\"ack\",\"topic\":\"t\",\"seq\":1.0}", WSQ_ERR_BAD_TYPE);
    assert_true(contains(e.message, "\"seq\""));
    e = decode_err("{\"op\":\"ack\",\"topic\":\"t\",\"upto\":\"3\"}", WSQ_ERR_BAD_TYPE);
    assert_true(contains(e.message, "\"upto\""));
}

static void test_proto_nack(void **state)
{
    (void)state;
    wsq_frame_t f;
    decode_ok("{\"op\":\"nack\",\"topic\":\"t\",\"seq\":3}", &f);
    assert_int_equal(f.op, WSQ_OP_NACK);
    assert_true(f.has_seq);
    assert_int_equal(f.seq, 3);
    assert_int_equal(f.delay_ms, 0);
    wsq_frame_clear(&f);

    decode_ok("{\"op\":\"nack\",\"topic\":\"t\",\"seq\":3,\"delay\":86400000}", &f);
    assert_int_equal(f.delay_ms, 86400000);
    wsq_frame_clear(&f);

    decode_err("{\"op\":\"nack\",\"topic\":\"t\",\"seq\":3,\"delay\":86400001}",
               WSQ_ERR_BAD_REQUEST);
    decode_err("{\"op\":\"nack\",\"topic\":\"t\",\"seq\":3,\"delay\":-1}", WSQ_ERR_BAD_REQUEST);
    decode_err("{\"op\":\"nack\",\"topic\":\"t\"}", WSQ_ERR_BAD_REQUEST);
    decode_err("{\"op\":\"nack\",\"topic\":\"t\",\"seq\":0}", WSQ_ERR_BAD_REQUEST);
    wsq_proto_error_t e =
        decode_err("{\"op\":\"nack\",\"topic\":\"t\",\"seq\":3,\"delay\":1.5}", WSQ_ERR_BAD_TYPE);
    assert_true(contains(e.message, "\"delay\""));
}

static void test_proto_ping(void **state)
{
    (void)state;
    wsq_frame_t f;
    decode_ok("{\"op\":\"ping\",\"ref\":-12,\"topic\":42}", &f); /* unknown members ignored */
    assert_int_equal(f.op, WSQ_OP_PING);
    assert_string_equal(f.ref, "-12");
    wsq_frame_clear(&f);
}

static void test_proto_auth(void **state)
{
    (void)state;
    wsq_frame_t f;
    decode_ok("{\"op\":\"auth\",\"token\":\"s3cr3t+/=\"}", &f);
    assert_int_equal(f.op, WSQ_OP_AUTH);
    assert_string_equal(f.token, "s3cr3t+/=");
    wsq_frame_clear(&f);
    assert_null(f.token);

    decode_err("{\"op\":\"auth\"}", WSQ_ERR_BAD_REQUEST);
    decode_err("{\"op\":\"auth\",\"token\":\"\"}", WSQ_ERR_BAD_REQUEST);
    decode_err("{\"op\":\"auth\",\"token\":\"a\\u0000b\"}", WSQ_ERR_BAD_REQUEST);
    decode_err("{\"op\":\"auth\",\"token\":7}", WSQ_ERR_BAD_TYPE);

    size_t n = WSQ_TOKEN_MAX + 1;
    char *json = malloc(n + 64);
    assert_non_null(json);
    int h = sprintf(json, "{\"op\":\"auth\",\"token\":\"");
    memset(json + h, 'k', n);
    strcpy(json + h + n, "\"}");
    decode_err(json, WSQ_ERR_BAD_REQUEST);
    strcpy(json + h + n - 1, "\"}"); /* exactly WSQ_TOKEN_MAX */
    decode_ok(json, &f);
    assert_int_equal(strlen(f.token), WSQ_TOKEN_MAX);
    wsq_frame_clear(&f);
    free(json);
}

/* ------------------------------------------------------------------------------------------- */
/* Client frames: error classes                                                                 */

static void test_proto_unknown_op(void **state)
{
    (void)state;
    wsq_proto_error_t e = decode_err("{\"op\":\"publish\",\"topic\":\"t\"}", WSQ_ERR_UNKNOWN_OP);
    assert_true(contains(e.message, "publish"));
    decode_err("{\"op\":\"pub\\u0000\",\"topic\":\"t\",\"data\":\"\"}", WSQ_ERR_UNKNOWN_OP);
    decode_err("{\"op\":\"PUB\",\"topic\":\"t\",\"data\":\"\"}", WSQ_ERR_UNKNOWN_OP);
    decode_err("{\"op\":\"\"}", WSQ_ERR_UNKNOWN_OP);

    /* a long op with multi-byte characters and control characters: truncated, printable ASCII */
    char json[2048];
    int n = sprintf(json, "{\"op\":\"");
    for (int i = 0; i < 100; i++)
        n += sprintf(json + n, "\xC3\xA9\\n\\u0001");
    sprintf(json + n, "\"}");
    e = decode_err(json, WSQ_ERR_UNKNOWN_OP);
    assert_true(strlen(e.message) < 80);
    for (const char *p = e.message; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7F);
}

static void test_proto_missing_op(void **state)
{
    (void)state;
    decode_err("{\"topic\":\"t\"}", WSQ_ERR_BAD_REQUEST);
    /* PROTOCOL.md: a member of the wrong type is bad_type, op included */
    decode_err("{\"op\":1}", WSQ_ERR_BAD_TYPE);
    decode_err("{\"op\":null}", WSQ_ERR_BAD_TYPE);
    decode_err("{\"op\":[\"pub\"]}", WSQ_ERR_BAD_TYPE);
}

static void test_proto_bad_type_names_member(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        const char *member;
    } cases[] = {
        {"{\"op\":\"pub\",\"topic\":1,\"data\":\"x\"}", "\"topic\""},
        {"{\"op\":\"pub\",\"topic\":\"t\",\"data\":1}", "\"data\""},
        {"{\"op\":\"pub\",\"topic\":\"t\",\"data\":null}", "\"data\""},
        {"{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"x\",\"enc\":true}", "\"enc\""},
        {"{\"op\":\"sub\",\"topic\":\"t\",\"consumer\":5}", "\"consumer\""},
        {"{\"op\":\"sub\",\"topic\":\"t\",\"from\":5}", "\"from\""},
        {"{\"op\":\"sub\",\"topic\":\"t\",\"from\":{\"seq\":\"5\"}}", "\"from.seq\""},
        {"{\"op\":\"sub\",\"topic\":\"t\",\"from\":{\"time\":1.5}}", "\"from.time\""},
        {"{\"op\":\"sub\",\"topic\":\"t\",\"window\":\"10\"}", "\"window\""},
        {"{\"op\":\"sub\",\"topic\":\"t\",\"epoch\":12}", "\"epoch\""},
        {"{\"op\":\"auth\",\"token\":[]}", "\"token\""},
        {"{\"op\":\"ping\",\"ref\":{}}", "\"ref\""},
        {"{\"op\":\"ping\",\"ref\":1.5}", "\"ref\""},
        {"{\"op\":\"ping\",\"ref\":null}", "\"ref\""},
        {"{\"op\":\"ping\",\"ref\":true}", "\"ref\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wsq_proto_error_t e = decode_err(cases[i].json, WSQ_ERR_BAD_TYPE);
        if (!contains(e.message, cases[i].member))
            fail_msg("%s: message \"%s\" does not name %s", cases[i].json, e.message,
                     cases[i].member);
    }
}

static void test_proto_bad_json(void **state)
{
    (void)state;
    wsq_proto_error_t e = decode_err("{\"op\":\"ping\",\n  \"ref\":}", WSQ_ERR_BAD_JSON);
    assert_true(contains(e.message, "line 2"));
    assert_true(contains(e.message, "column"));
    decode_err("{\"op\":\"ping\",\"op\":\"ping\"}", WSQ_ERR_BAD_JSON); /* duplicate key */
    decode_err("{\"op\":\"ping\"} x", WSQ_ERR_BAD_JSON);
    decode_err("{\"op\":\"ping\"", WSQ_ERR_BAD_JSON);
    decode_err("", WSQ_ERR_BAD_JSON);
    decode_err("{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"\xC0\x80\"}", WSQ_ERR_BAD_JSON);
    decode_err("{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"\\ud800\"}", WSQ_ERR_BAD_JSON);
    decode_err("{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"\x01\"}", WSQ_ERR_BAD_JSON);
    decode_err("{\"op\":\"ack\",\"topic\":\"t\",\"seq\":99999999999999999999}", WSQ_ERR_BAD_JSON);
    e = decode_err_n("{\"op\":\"ping\"\0}", 14, MAXP, WSQ_ERR_BAD_JSON);
    for (const char *p = e.message; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7F);

    /* deep nesting is refused by jansson's depth limit, not by the stack */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 1);
    assert_non_null(deep);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[2 * depth] = '\0';
    decode_err(deep, WSQ_ERR_BAD_JSON);
    free(deep);

    wsq_frame_t f;
    wsq_proto_error_t perr;
    assert_int_equal(wsq_proto_decode(NULL, 0, MAXP, &f, &perr), WSQ_ERR_BAD_JSON);
}

static void test_proto_non_object(void **state)
{
    (void)state;
    decode_err("[]", WSQ_ERR_BAD_REQUEST);
    decode_err("[{\"op\":\"ping\"}]", WSQ_ERR_BAD_REQUEST);
    decode_err("1", WSQ_ERR_BAD_REQUEST);
    decode_err("\"ping\"", WSQ_ERR_BAD_REQUEST);
    decode_err("null", WSQ_ERR_BAD_REQUEST);
}

static void test_proto_bad_topic(void **state)
{
    (void)state;
    decode_err("{\"op\":\"pub\",\"topic\":\"\",\"data\":\"x\"}", WSQ_ERR_BAD_TOPIC);
    decode_err("{\"op\":\"pub\",\"topic\":\"a b\",\"data\":\"x\"}", WSQ_ERR_BAD_TOPIC);
    decode_err("{\"op\":\"pub\",\"topic\":\"a..b\",\"data\":\"x\"}", WSQ_ERR_BAD_TOPIC);
    /* (a sub may name a pattern since issue 13; a malformed one is still a bad topic) */
    decode_err("{\"op\":\"sub\",\"topic\":\"a.*x\"}", WSQ_ERR_BAD_TOPIC);
    decode_err("{\"op\":\"sub\",\"topic\":\"a\\u0000\"}", WSQ_ERR_BAD_TOPIC);
    decode_err("{\"op\":\"ack\",\"topic\":\"\xC3\xA9\",\"seq\":1}", WSQ_ERR_BAD_TOPIC);

    char json[600];
    char t[257];
    memset(t, 'a', 256);
    t[256] = '\0';
    snprintf(json, sizeof json, "{\"op\":\"unsub\",\"topic\":\"%s\"}", t);
    decode_err(json, WSQ_ERR_BAD_TOPIC);
    t[255] = '\0';
    snprintf(json, sizeof json, "{\"op\":\"unsub\",\"topic\":\"%s\"}", t);
    wsq_frame_t f;
    decode_ok(json, &f);
    assert_int_equal(f.topic_len, 255);
    wsq_frame_clear(&f);
}

static void test_proto_ref_echo_on_error(void **state)
{
    (void)state;
    wsq_proto_error_t e;
    e = decode_err("{\"op\":\"pub\",\"ref\":\"r-1\",\"topic\":\"a b\",\"data\":\"x\"}",
                   WSQ_ERR_BAD_TOPIC);
    assert_string_equal(e.ref, "\"r-1\"");
    e = decode_err("{\"ref\":99,\"op\":\"nope\"}", WSQ_ERR_UNKNOWN_OP);
    assert_string_equal(e.ref, "99");
    e = decode_err("{\"op\":\"ack\",\"topic\":\"t\",\"ref\":\"a\\\"b\"}", WSQ_ERR_BAD_REQUEST);
    assert_string_equal(e.ref, "\"a\\\"b\"");
    e = decode_err("{\"op\":\"pub\",\"topic\":\"t\",\"data\":7,\"ref\":\"x\"}", WSQ_ERR_BAD_TYPE);
    assert_string_equal(e.ref, "\"x\"");
    e = decode_err("{\"ref\":\"x\"}", WSQ_ERR_BAD_REQUEST);
    assert_string_equal(e.ref, "\"x\"");
    const char *big = "{\"op\":\"pub\",\"ref\":\"big\",\"topic\":\"t\",\"data\":\"12345\"}";
    e = decode_err_n(big, strlen(big), 4, WSQ_ERR_TOO_LARGE);
    assert_string_equal(e.ref, "\"big\"");
    /* unreadable refs are not echoed */
    e = decode_err("{\"op\":\"ping\",\"ref\":[1]}", WSQ_ERR_BAD_TYPE);
    assert_string_equal(e.ref, "");
    e = decode_err("{\"op\":\"ping\",\"ref\":\"x\",", WSQ_ERR_BAD_JSON);
    assert_string_equal(e.ref, "");

    /* a ref of exactly WSQ_REF_MAX bytes of JSON text is fine; one more is bad_request */
    char json[400];
    char r[WSQ_REF_MAX];
    memset(r, 'r', WSQ_REF_MAX - 2);
    r[WSQ_REF_MAX - 2] = '\0';
    snprintf(json, sizeof json, "{\"op\":\"ping\",\"ref\":\"%s\"}", r);
    wsq_frame_t f;
    decode_ok(json, &f);
    assert_int_equal(strlen(f.ref), WSQ_REF_MAX);
    wsq_frame_clear(&f);
    snprintf(json, sizeof json, "{\"op\":\"ping\",\"ref\":\"%sr\"}", r);
    e = decode_err(json, WSQ_ERR_BAD_REQUEST);
    assert_string_equal(e.ref, "");
    assert_true(contains(e.message, "\"ref\""));
}

static void test_proto_too_large_boundary(void **state)
{
    (void)state;
    const size_t maxp = 1000;
    char *payload = malloc(maxp + 2);
    char *json = malloc(2 * maxp + 100);
    assert_non_null(payload);
    assert_non_null(json);

    memset(payload, 'p', maxp);
    payload[maxp] = '\0';
    int n = sprintf(json, "{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"%s\"}", payload);
    wsq_frame_t f;
    wsq_proto_error_t perr;
    assert_int_equal(wsq_proto_decode(json, (size_t)n, maxp, &f, &perr), WSQ_OK);
    assert_int_equal(f.data_len, maxp);
    wsq_frame_clear(&f);
    strcpy(payload + maxp, "p");
    n = sprintf(json, "{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"%s\"}", payload);
    decode_err_n(json, (size_t)n, maxp, WSQ_ERR_TOO_LARGE);

    /* base64: 999 bytes (333 quanta) fits; 1002 does not; 1000 and 1001 bytes via padding */
    static const struct {
        size_t bytes;
        wsq_err want;
    } b64[] = {{999, WSQ_OK}, {1000, WSQ_OK}, {1001, WSQ_ERR_TOO_LARGE}, {1002, WSQ_ERR_TOO_LARGE}};
    for (size_t i = 0; i < sizeof b64 / sizeof b64[0]; i++) {
        unsigned char *bin = calloc(1, b64[i].bytes);
        char *enc = malloc(wsq_base64_enc_len(b64[i].bytes) + 1);
        assert_non_null(bin);
        assert_non_null(enc);
        wsq_base64_encode(bin, b64[i].bytes, enc);
        enc[wsq_base64_enc_len(b64[i].bytes)] = '\0';
        n = sprintf(json, "{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"%s\",\"enc\":\"base64\"}",
                    enc);
        if (b64[i].want == WSQ_OK) {
            assert_int_equal(wsq_proto_decode(json, (size_t)n, maxp, &f, &perr), WSQ_OK);
            assert_int_equal(f.data_len, b64[i].bytes);
            wsq_frame_clear(&f);
        } else {
            decode_err_n(json, (size_t)n, maxp, WSQ_ERR_TOO_LARGE);
        }
        free(bin);
        free(enc);
    }

    /* A frame beyond 6 * max_payload + 64 KiB is refused before parsing. */
    size_t big = 6 * 10 + 64 * 1024 + 1;
    char *huge = malloc(big);
    assert_non_null(huge);
    memset(huge, ' ', big);
    memcpy(huge, "{\"op\":\"ping\"}", 13);
    decode_err_n(huge, big, 10, WSQ_ERR_TOO_LARGE);
    assert_int_equal(wsq_proto_decode(huge, big - 1, 10, &f, &perr), WSQ_OK);
    wsq_frame_clear(&f);
    free(huge);
    free(payload);
    free(json);
}

static void test_proto_pub_bad_base64(void **state)
{
    (void)state;
    static const char *bad[] = {"QQ",      "QQ=",  "Q===", "QR==", "QUI=x",   "QU I",
                                "QUJD\\n", "QU=D", "Q-_=", "====", "QUJ=QUJD"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[128];
        snprintf(json, sizeof json,
                 "{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"%s\",\"enc\":\"base64\"}", bad[i]);
        decode_err(json, WSQ_ERR_BAD_REQUEST);
    }
    decode_err("{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"QQ==\",\"enc\":\"b64\"}",
               WSQ_ERR_BAD_REQUEST);
}

/* ------------------------------------------------------------------------------------------- */
/* Round trips                                                                                  */

static void test_proto_client_roundtrip_all_ops(void **state)
{
    (void)state;
    wsq_frame_t f;

    wsq_frame_init(&f);
    f.op = WSQ_OP_PUB;
    strcpy(f.ref, "\"p1\"");
    set_topic(&f, "chat.room1");
    set_data(&f, "hello \xE2\x82\xAC", 9, false);
    roundtrip_client(&f);
    wsq_frame_clear(&f);

    wsq_frame_init(&f);
    f.op = WSQ_OP_PUB;
    set_topic(&f, "bin");
    set_data(&f, "\x00\x01\xFE\xFF", 4, true);
    roundtrip_client(&f);
    wsq_frame_clear(&f);

    wsq_frame_init(&f);
    f.op = WSQ_OP_PUB; /* empty payload: data NULL, length 0 */
    set_topic(&f, "t");
    roundtrip_client(&f);
    wsq_frame_clear(&f);

    const wsq_from_t froms[] = {WSQ_FROM_DEFAULT, WSQ_FROM_RESUME, WSQ_FROM_EARLIEST,
                                WSQ_FROM_LATEST,  WSQ_FROM_SEQ,    WSQ_FROM_TIME};
    for (size_t i = 0; i < sizeof froms / sizeof froms[0]; i++) {
        wsq_frame_init(&f);
        f.op = WSQ_OP_SUB;
        strcpy(f.ref, "12345");
        set_topic(&f, "orders/eu");
        strcpy(f.consumer, "worker-1");
        f.consumer_len = 8;
        f.from = froms[i];
        if (f.from == WSQ_FROM_SEQ)
            f.from_seq = INT64_MAX;
        if (f.from == WSQ_FROM_TIME)
            f.from_time = 1700000000123;
        f.window = (uint32_t)i * 1000;
        f.has_epoch = i % 2 == 1;
        f.epoch = f.has_epoch ? 0xdeadbeef00c0ffeeULL : 0;
        roundtrip_client(&f);
        wsq_frame_clear(&f);
    }

    wsq_frame_init(&f);
    f.op = WSQ_OP_UNSUB;
    set_topic(&f, "t");
    roundtrip_client(&f);
    wsq_frame_clear(&f);

    wsq_frame_init(&f);
    f.op = WSQ_OP_ACK;
    set_topic(&f, "t");
    f.has_seq = true;
    f.seq = 77;
    roundtrip_client(&f);
    f.has_seq = false;
    f.seq = 0;
    f.has_upto = true;
    f.upto = 0;
    roundtrip_client(&f);
    wsq_frame_clear(&f);

    wsq_frame_init(&f);
    f.op = WSQ_OP_NACK;
    strcpy(f.ref, "\"n\"");
    set_topic(&f, "t");
    f.has_seq = true;
    f.seq = 5;
    roundtrip_client(&f);
    f.delay_ms = 1500;
    roundtrip_client(&f);
    wsq_frame_clear(&f);

    wsq_frame_init(&f);
    f.op = WSQ_OP_PING;
    strcpy(f.ref, "\"\xF0\x9F\x98\x80\\u0001\"");
    roundtrip_client(&f);
    wsq_frame_clear(&f);

    wsq_frame_init(&f);
    f.op = WSQ_OP_AUTH;
    f.token = strdup("tok\"en\\with\x01"
                     "stuff");
    assert_non_null(f.token);
    roundtrip_client(&f);
    wsq_frame_clear(&f);
}

static void test_proto_encode_client_refuses_invalid(void **state)
{
    (void)state;
    wsq_buf_t b;
    wsq_buf_init(&b);
    wsq_frame_t f;
    wsq_frame_init(&f);
    assert_int_equal(wsq_proto_encode_client(&f, &b), WSQ_ERR_INVAL); /* op 0 */
    f.op = WSQ_OP_UNSUB;
    assert_int_equal(wsq_proto_encode_client(&f, &b), WSQ_ERR_INVAL); /* no topic */
    set_topic(&f, "t");
    f.op = WSQ_OP_ACK;
    assert_int_equal(wsq_proto_encode_client(&f, &b), WSQ_ERR_INVAL); /* neither seq nor upto */
    f.op = WSQ_OP_AUTH;
    assert_int_equal(wsq_proto_encode_client(&f, &b), WSQ_ERR_INVAL); /* no token */
    f.op = WSQ_OP_PUB;
    set_data(&f, "\xFF", 1, false); /* text must be UTF-8 */
    assert_int_equal(wsq_proto_encode_client(&f, &b), WSQ_ERR_BAD_UTF8);
    assert_int_equal(b.len, 0);
    wsq_frame_clear(&f);
    wsq_buf_fini(&b);
}

static void test_proto_text_special_roundtrip(void **state)
{
    (void)state;
    const char text[] = "nul\0 quote\" backslash\\ slash/ ctl\x01\x1f\b\f\n\r\t del\x7f "
                        "2byte\xC3\xA9 3byte\xE2\x82\xAC\xEF\xBF\xBF 4byte\xF0\x9F\x98\x80"
                        "\xF4\x8F\xBF\xBF \xE2\x80\xA8";
    const size_t n = sizeof text - 1;

    wsq_frame_t f;
    wsq_frame_init(&f);
    f.op = WSQ_OP_PUB;
    set_topic(&f, "t");
    set_data(&f, text, n, false);
    roundtrip_client(&f);
    wsq_frame_clear(&f);

    wsq_buf_t b;
    wsq_buf_init(&b);
    assert_int_equal(wsq_proto_enc_msg(&b, "t", 1, 1, 2, text, n, false, 1, NULL, 0), WSQ_OK);
    assert_true(wsq_utf8_valid(b.data, b.len));
    wsq_server_frame_t s = decode_server_ok(&b);
    assert_false(s.binary);
    assert_int_equal(s.data_len, n);
    assert_memory_equal(s.data, text, n);
    wsq_server_frame_clear(&s);
    wsq_buf_fini(&b);
}

static void test_proto_binary_all_bytes(void **state)
{
    (void)state;
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;

    /* every length 0..256 exercises all three padding cases */
    for (size_t len = 0; len <= 256; len += (len < 8 ? 1 : 83)) {
        wsq_frame_t f;
        wsq_frame_init(&f);
        f.op = WSQ_OP_PUB;
        set_topic(&f, "bin");
        set_data(&f, all + 256 - len, len, true);
        roundtrip_client(&f);
        wsq_frame_clear(&f);
    }
    wsq_frame_t f;
    wsq_frame_init(&f);
    f.op = WSQ_OP_PUB;
    set_topic(&f, "bin");
    set_data(&f, all, 256, true);
    roundtrip_client(&f);
    wsq_frame_clear(&f);

    wsq_buf_t b;
    wsq_buf_init(&b);
    assert_int_equal(wsq_proto_enc_msg(&b, "bin", 3, 9, 10, all, 256, true, 3, NULL, 0), WSQ_OK);
    wsq_server_frame_t s = decode_server_ok(&b);
    assert_true(s.binary);
    assert_int_equal(s.data_len, 256);
    assert_memory_equal(s.data, all, 256);
    assert_int_equal(s.deliveries, 3);
    wsq_server_frame_clear(&s);
    wsq_buf_fini(&b);
}

/* ------------------------------------------------------------------------------------------- */
/* Server frames                                                                                */

static void test_proto_server_exact_text(void **state)
{
    (void)state;
    wsq_buf_t b;
    wsq_buf_init(&b);

    assert_int_equal(wsq_proto_enc_ok(&b, "\"r\"", "t.x", 3, 5, true, false), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"ok\",\"ref\":\"r\",\"topic\":\"t.x\",\"seq\":5}");
    assert_int_equal(wsq_proto_enc_ok(&b, NULL, NULL, 0, 0, false, false), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"ok\"}");
    assert_int_equal(wsq_proto_enc_ok(&b, "", "t", 1, 0, false, false), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"ok\",\"topic\":\"t\"}");

    assert_int_equal(wsq_proto_enc_err(&b, "4", WSQ_ERR_BAD_TOPIC, "bad \"x\"\n"), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"err\",\"ref\":4,\"code\":\"bad_topic\","
                       "\"message\":\"bad \\\"x\\\"\\n\"}");
    assert_int_equal(wsq_proto_enc_err(&b, NULL, WSQ_ERR_UNKNOWN_OP, NULL), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"err\",\"code\":\"unknown_op\",\"message\":\"unknown op\"}");
    /* an invalid UTF-8 message is replaced by the code's own text, never sent as is */
    assert_int_equal(wsq_proto_enc_err(&b, NULL, WSQ_ERR_BAD_JSON, "x\xC0\x80"), WSQ_OK);
    assert_buf_str(
        &b, "{\"op\":\"err\",\"code\":\"bad_json\",\"message\":\"frame is not valid JSON\"}");

    assert_int_equal(wsq_proto_enc_pong(&b, "\"p\""), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"pong\",\"ref\":\"p\"}");
    assert_int_equal(wsq_proto_enc_pong(&b, NULL), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"pong\"}");

    wsq_subscribed_t sub = {.topic = "t",
                            .topic_len = 1,
                            .consumer = "c1",
                            .epoch = 0x0123456789abcdefULL,
                            .first_seq = 1,
                            .next_seq = 10,
                            .start_seq = 4,
                            .window = 256,
                            .resumed = true};
    assert_int_equal(wsq_proto_enc_subscribed(&b, "\"s\"", &sub), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"subscribed\",\"ref\":\"s\",\"topic\":\"t\",\"consumer\":\"c1\","
                       "\"epoch\":\"0123456789abcdef\",\"first_seq\":1,\"next_seq\":10,"
                       "\"start_seq\":4,\"window\":256,\"resumed\":true}");
    sub.consumer = NULL;
    sub.resumed = false;
    sub.epoch = 0;
    assert_int_equal(wsq_proto_enc_subscribed(&b, NULL, &sub), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"subscribed\",\"topic\":\"t\",\"epoch\":\"0000000000000000\","
                       "\"first_seq\":1,\"next_seq\":10,\"start_seq\":4,\"window\":256,"
                       "\"resumed\":false}");

    assert_int_equal(wsq_proto_enc_msg(&b, "t", 1, 18446744073709551615ULL, INT64_MIN, "a/b", 3,
                                       false, 1, NULL, 0),
                     WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"msg\",\"topic\":\"t\",\"seq\":18446744073709551615,"
                       "\"ts\":-9223372036854775808,\"data\":\"a/b\"}");
    assert_int_equal(wsq_proto_enc_msg(&b, "t", 1, 0, 9, "\x00\xff", 2, true, 2, NULL, 0), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"msg\",\"topic\":\"t\",\"seq\":0,\"ts\":9,\"data\":\"AP8=\","
                       "\"enc\":\"base64\",\"deliveries\":2}");
    assert_int_equal(wsq_proto_enc_msg(&b, "t", 1, 10, 99, NULL, 0, false, 0, NULL, 0), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"msg\",\"topic\":\"t\",\"seq\":10,\"ts\":99,\"data\":\"\"}");

    assert_int_equal(wsq_proto_enc_gap(&b, "t", 1, 3, 7, WSQ_GAP_RETENTION), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"gap\",\"topic\":\"t\",\"from\":3,\"to\":7,"
                       "\"reason\":\"retention\"}");
    assert_int_equal(wsq_proto_enc_gap(&b, "t", 1, 1, 1, WSQ_GAP_PURGE), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"gap\",\"topic\":\"t\",\"from\":1,\"to\":1,\"reason\":\"purge\"}");
    assert_int_equal(wsq_proto_enc_gap(&b, "t", 1, 9, 9, WSQ_GAP_CORRUPT), WSQ_OK);
    assert_buf_str(&b,
                   "{\"op\":\"gap\",\"topic\":\"t\",\"from\":9,\"to\":9,\"reason\":\"corrupt\"}");
    assert_int_equal(wsq_proto_enc_gap(&b, "t", 1, 9, 9, (wsq_gap_reason_t)99), WSQ_ERR_INVAL);

    assert_int_equal(wsq_proto_enc_reset(&b, "t", 1, 0xffffffffffffffffULL, 5, 6), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"reset\",\"topic\":\"t\",\"epoch\":\"ffffffffffffffff\","
                       "\"first_seq\":5,\"next_seq\":6}");

    assert_string_equal(wsq_gap_reason_name(WSQ_GAP_RETENTION), "retention");
    assert_string_equal(wsq_gap_reason_name(WSQ_GAP_PURGE), "purge");
    assert_string_equal(wsq_gap_reason_name(WSQ_GAP_CORRUPT), "corrupt");
    wsq_buf_fini(&b);
}

static void test_proto_enc_numbers(void **state)
{
    (void)state;
    wsq_buf_t b;
    wsq_buf_init(&b);
    uint64_t vals[200];
    size_t nv = 0;
    uint64_t p = 1;
    for (int k = 0; k < 20; k++, p *= 10) {
        vals[nv++] = p;
        vals[nv++] = p - 1;
        vals[nv++] = p + 1;
        vals[nv++] = p * 3 + 7;
    }
    vals[nv++] = UINT64_MAX;
    vals[nv++] = UINT64_MAX - 1;
    vals[nv++] = 1700000000123ULL;
    for (size_t i = 0; i < nv; i++) {
        char want[128];
        snprintf(want, sizeof want, "{\"op\":\"ok\",\"seq\":%llu}", (unsigned long long)vals[i]);
        assert_int_equal(wsq_proto_enc_ok(&b, NULL, NULL, 0, vals[i], true, false), WSQ_OK);
        assert_buf_str(&b, want);
    }
    const int64_t ts[] = {0, -1, 9, -10, INT64_MAX, INT64_MIN, -1700000000123LL};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        char want[160];
        snprintf(want, sizeof want,
                 "{\"op\":\"msg\",\"topic\":\"t\",\"seq\":1,\"ts\":%lld,\"data\":\"\"}",
                 (long long)ts[i]);
        assert_int_equal(wsq_proto_enc_msg(&b, "t", 1, 1, ts[i], "", 0, false, 1, NULL, 0), WSQ_OK);
        assert_buf_str(&b, want);
    }
    wsq_buf_fini(&b);
}

static void test_proto_server_encoders_append_and_roll_back(void **state)
{
    (void)state;
    wsq_buf_t b;
    wsq_buf_init(&b);
    assert_int_equal(wsq_buf_append(&b, "HDR", 3), WSQ_OK);
    assert_int_equal(wsq_proto_enc_pong(&b, NULL), WSQ_OK);
    assert_buf_str(&b, "HDR{\"op\":\"pong\"}");

    assert_int_equal(wsq_buf_append(&b, "HDR", 3), WSQ_OK);
    assert_int_equal(wsq_proto_enc_msg(&b, "t", 1, 1, 1, "ok\xFF", 3, false, 1, NULL, 0),
                     WSQ_ERR_BAD_UTF8);
    assert_int_equal(b.len, 3);
    assert_int_equal(wsq_proto_enc_msg(&b, NULL, 0, 1, 1, "x", 1, false, 1, NULL, 0),
                     WSQ_ERR_INVAL);
    assert_int_equal(wsq_proto_enc_msg(&b, "t", 1, 1, 1, NULL, 1, false, 1, NULL, 0),
                     WSQ_ERR_INVAL);
    assert_int_equal(wsq_proto_enc_gap(&b, "t", 1, 1, 2, (wsq_gap_reason_t)9), WSQ_ERR_INVAL);
    assert_int_equal(wsq_proto_enc_reset(&b, "t", 0, 1, 1, 1), WSQ_ERR_INVAL);
    assert_int_equal(wsq_proto_enc_ok(&b, NULL, "t", 256, 1, true, false), WSQ_ERR_INVAL);
    wsq_subscribed_t sub = {.topic = NULL};
    assert_int_equal(wsq_proto_enc_subscribed(&b, NULL, &sub), WSQ_ERR_INVAL);
    assert_int_equal(b.len, 3);
    wsq_buf_fini(&b);
}

static void test_proto_server_roundtrip_all_frames(void **state)
{
    (void)state;
    wsq_buf_t b;
    wsq_buf_init(&b);
    wsq_server_frame_t s;

    assert_int_equal(wsq_proto_enc_ok(&b, "\"r1\"", "orders", 6, 42, true, false), WSQ_OK);
    s = decode_server_ok(&b);
    assert_string_equal(s.op, "ok");
    assert_string_equal(s.ref, "\"r1\"");
    assert_string_equal(s.topic, "orders");
    assert_int_equal(s.seq, 42);
    wsq_server_frame_clear(&s);
    b.len = 0;

    assert_int_equal(wsq_proto_enc_err(&b, "17", WSQ_ERR_TOO_LARGE, "too big \xE2\x82\xAC"),
                     WSQ_OK);
    s = decode_server_ok(&b);
    assert_string_equal(s.op, "err");
    assert_string_equal(s.ref, "17");
    assert_string_equal(s.code, "too_large");
    assert_string_equal(s.message, "too big \xE2\x82\xAC");
    wsq_err code;
    assert_int_equal(wsq_err_from_name(s.code, &code), WSQ_OK);
    assert_int_equal(code, WSQ_ERR_TOO_LARGE);
    wsq_server_frame_clear(&s);
    b.len = 0;

    assert_int_equal(wsq_proto_enc_pong(&b, "\"p\""), WSQ_OK);
    s = decode_server_ok(&b);
    assert_string_equal(s.op, "pong");
    assert_string_equal(s.ref, "\"p\"");
    wsq_server_frame_clear(&s);
    b.len = 0;

    wsq_subscribed_t sub = {.topic = "a.b",
                            .topic_len = 3,
                            .consumer = "c",
                            .epoch = 0xfedcba9876543210ULL,
                            .first_seq = 3,
                            .next_seq = 99,
                            .start_seq = 50,
                            .window = 10,
                            .resumed = true};
    assert_int_equal(wsq_proto_enc_subscribed(&b, "\"s\"", &sub), WSQ_OK);
    s = decode_server_ok(&b);
    assert_string_equal(s.op, "subscribed");
    assert_string_equal(s.ref, "\"s\"");
    assert_string_equal(s.topic, "a.b");
    assert_int_equal(s.epoch, 0xfedcba9876543210ULL);
    assert_int_equal(s.first_seq, 3);
    assert_int_equal(s.next_seq, 99);
    wsq_server_frame_clear(&s);
    b.len = 0;

    assert_int_equal(wsq_proto_enc_msg(&b, "a.b", 3, 7, 1700000000000, "hi", 2, false, 0, NULL, 0),
                     WSQ_OK);
    s = decode_server_ok(&b);
    assert_string_equal(s.op, "msg");
    assert_string_equal(s.topic, "a.b");
    assert_int_equal(s.seq, 7);
    assert_int_equal(s.ts, 1700000000000ULL);
    assert_false(s.binary);
    assert_int_equal(s.data_len, 2);
    assert_memory_equal(s.data, "hi", 2);
    assert_int_equal(s.deliveries, 1);
    wsq_server_frame_clear(&s);
    assert_null(s.data);
    b.len = 0;

    assert_int_equal(wsq_proto_enc_msg(&b, "a.b", 3, 8, 1, "\x00", 1, true, 4000000000u, NULL, 0),
                     WSQ_OK);
    s = decode_server_ok(&b);
    assert_true(s.binary);
    assert_int_equal(s.data_len, 1);
    assert_int_equal(s.data[0], 0);
    assert_int_equal(s.deliveries, 4000000000u);
    wsq_server_frame_clear(&s);
    b.len = 0;

    assert_int_equal(wsq_proto_enc_gap(&b, "g", 1, 10, 20, WSQ_GAP_PURGE), WSQ_OK);
    s = decode_server_ok(&b);
    assert_string_equal(s.op, "gap");
    assert_string_equal(s.topic, "g");
    assert_int_equal(s.from, 10);
    assert_int_equal(s.to, 20);
    assert_string_equal(s.reason, "purge");
    wsq_server_frame_clear(&s);
    b.len = 0;

    assert_int_equal(wsq_proto_enc_reset(&b, "r", 1, 1, 2, 3), WSQ_OK);
    s = decode_server_ok(&b);
    assert_string_equal(s.op, "reset");
    assert_int_equal(s.epoch, 1);
    assert_int_equal(s.first_seq, 2);
    assert_int_equal(s.next_seq, 3);
    wsq_server_frame_clear(&s);
    wsq_buf_fini(&b);
}

static void test_proto_decode_server_errors(void **state)
{
    (void)state;
    assert_int_equal(decode_server_str("{\"op\":\"pong\""), WSQ_ERR_BAD_JSON);
    assert_int_equal(decode_server_str("{\"op\":\"pong\",\"op\":\"ok\"}"), WSQ_ERR_BAD_JSON);
    assert_int_equal(decode_server_str("[]"), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(decode_server_str("{}"), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(decode_server_str("{\"op\":5}"), WSQ_ERR_BAD_TYPE);
    assert_int_equal(decode_server_str("{\"op\":\"hello\"}"), WSQ_ERR_UNKNOWN_OP);
    assert_int_equal(decode_server_str("{\"op\":\"pong\",\"ref\":[]}"), WSQ_ERR_BAD_TYPE);
    assert_int_equal(decode_server_str("{\"op\":\"err\",\"message\":\"m\"}"), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(decode_server_str("{\"op\":\"err\",\"code\":\"x\"}"), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(decode_server_str("{\"op\":\"err\",\"code\":\"x\",\"message\":1}"),
                     WSQ_ERR_BAD_TYPE);
    assert_int_equal(decode_server_str("{\"op\":\"msg\",\"topic\":\"t\",\"seq\":1,\"ts\":1}"),
                     WSQ_ERR_BAD_REQUEST);
    assert_int_equal(
        decode_server_str("{\"op\":\"msg\",\"topic\":\"t\",\"seq\":-1,\"ts\":1,\"data\":\"\"}"),
        WSQ_ERR_BAD_REQUEST);
    assert_int_equal(
        decode_server_str("{\"op\":\"msg\",\"topic\":\"t\",\"seq\":\"1\",\"ts\":1,\"data\":\"\"}"),
        WSQ_ERR_BAD_TYPE);
    assert_int_equal(decode_server_str("{\"op\":\"msg\",\"topic\":\"t\",\"seq\":1,\"ts\":1,"
                                       "\"data\":\"QR==\",\"enc\":\"base64\"}"),
                     WSQ_ERR_BAD_REQUEST);
    assert_int_equal(decode_server_str("{\"op\":\"msg\",\"topic\":\"t\",\"seq\":1,\"ts\":1,"
                                       "\"data\":\"x\",\"deliveries\":4294967296}"),
                     WSQ_ERR_BAD_REQUEST);
    assert_int_equal(decode_server_str("{\"op\":\"msg\",\"topic\":\"a b\",\"seq\":1,\"ts\":1,"
                                       "\"data\":\"x\"}"),
                     WSQ_ERR_BAD_TOPIC);
    assert_int_equal(decode_server_str("{\"op\":\"reset\",\"topic\":\"t\",\"epoch\":\"xyz\","
                                       "\"first_seq\":1,\"next_seq\":1}"),
                     WSQ_ERR_BAD_REQUEST);
    assert_int_equal(decode_server_str("{\"op\":\"subscribed\",\"topic\":\"t\","
                                       "\"epoch\":\"0000000000000000\",\"first_seq\":1,"
                                       "\"next_seq\":1,\"start_seq\":1,\"window\":1,"
                                       "\"resumed\":1}"),
                     WSQ_ERR_BAD_TYPE);
    assert_int_equal(decode_server_str("{\"op\":\"gap\",\"topic\":\"t\",\"from\":1,\"to\":2}"),
                     WSQ_ERR_BAD_REQUEST);
    assert_int_equal(decode_server_str("{\"op\":\"ok\",\"future\":1}"), WSQ_OK);
    assert_int_equal(decode_server_str("{\"op\":\"ok\",\"topic\":\"\"}"), WSQ_ERR_BAD_TOPIC);
    assert_int_equal(decode_server_str("{\"op\":\"ok\",\"topic\":1}"), WSQ_ERR_BAD_TYPE);
}

/* ------------------------------------------------------------------------------------------- */
/* UTF-8                                                                                        */

static const struct {
    const char *s;
    size_t n;
} utf8_good[] = {
    {"", 0},
    {"plain ascii text, longer than eight bytes", 41},
    {"\x00", 1},
    {"\x7F", 1},
    {"\xC2\x80", 2},
    {"\xDF\xBF", 2},
    {"\xE0\xA0\x80", 3},
    {"\xED\x9F\xBF", 3},
    {"\xEE\x80\x80", 3},
    {"\xEF\xBF\xBF", 3},
    {"\xF0\x90\x80\x80", 4},
    {"\xF4\x8F\xBF\xBF", 4},
    {"a\xC3\xA9z\xE2\x82\xAC\xF0\x9F\x98\x80!", 12},
};

static const struct {
    const char *s;
    size_t n;
} utf8_bad[] = {
    {"\x80", 1},                /* stray continuation */
    {"\xBF", 1},                /* stray continuation */
    {"\xC0\x80", 2},            /* overlong NUL */
    {"\xC1\xBF", 2},            /* overlong */
    {"\xE0\x80\x80", 3},        /* overlong */
    {"\xE0\x9F\xBF", 3},        /* overlong */
    {"\xF0\x80\x80\x80", 4},    /* overlong */
    {"\xF0\x8F\xBF\xBF", 4},    /* overlong */
    {"\xED\xA0\x80", 3},        /* surrogate D800 */
    {"\xED\xBF\xBF", 3},        /* surrogate DFFF */
    {"\xF4\x90\x80\x80", 4},    /* U+110000 */
    {"\xF5\x80\x80\x80", 4},    /* beyond */
    {"\xFF", 1},                /* never valid */
    {"\xFE", 1},                /* never valid */
    {"\xC3", 1},                /* truncated */
    {"\xE2\x82", 2},            /* truncated */
    {"\xF0\x9F\x98", 3},        /* truncated */
    {"\xC3\x28", 2},            /* bad continuation */
    {"\xE2\x28\xA1", 3},        /* bad continuation */
    {"\xF0\x9F\x28\x80", 4},    /* bad continuation */
    {"abcdefgh\x80xyz", 12},    /* after the ASCII fast path */
    {"abcdefghijklmn\xC3", 15}, /* truncated after the fast path */
};

static void test_proto_utf8_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof utf8_good / sizeof utf8_good[0]; i++)
        if (!wsq_utf8_valid(utf8_good[i].s, utf8_good[i].n))
            fail_msg("good #%zu rejected", i);
    for (size_t i = 0; i < sizeof utf8_bad / sizeof utf8_bad[0]; i++)
        if (wsq_utf8_valid(utf8_bad[i].s, utf8_bad[i].n))
            fail_msg("bad #%zu accepted", i);
}

static void test_proto_utf8_stream_split(void **state)
{
    (void)state;
    /* every good sequence split at every offset (and byte by byte) stays valid */
    for (size_t i = 0; i < sizeof utf8_good / sizeof utf8_good[0]; i++) {
        const char *s = utf8_good[i].s;
        size_t n = utf8_good[i].n;
        for (size_t cut = 0; cut <= n; cut++) {
            uint32_t st = 0;
            assert_true(wsq_utf8_feed(&st, s, cut));
            assert_true(wsq_utf8_feed(&st, s + cut, n - cut));
            assert_int_equal(st, 0);
        }
        uint32_t st = 0;
        for (size_t k = 0; k < n; k++)
            assert_true(wsq_utf8_feed(&st, s + k, 1));
        assert_int_equal(st, 0);
    }
    /* every bad sequence split at every offset is refused, or left incomplete when truncated */
    for (size_t i = 0; i < sizeof utf8_bad / sizeof utf8_bad[0]; i++) {
        const char *s = utf8_bad[i].s;
        size_t n = utf8_bad[i].n;
        for (size_t cut = 0; cut <= n; cut++) {
            uint32_t st = 0;
            bool ok = wsq_utf8_feed(&st, s, cut) && wsq_utf8_feed(&st, s + cut, n - cut);
            if (ok && st == 0)
                fail_msg("bad #%zu accepted when split at %zu", i, cut);
        }
    }
    /* a truncated tail is reported through the state, and completing it makes it valid */
    uint32_t st = 0;
    assert_true(wsq_utf8_feed(&st, "ok\xF0\x9F", 4));
    assert_int_not_equal(st, 0);
    assert_true(wsq_utf8_feed(&st, "\x98", 1));
    assert_int_not_equal(st, 0);
    assert_true(wsq_utf8_feed(&st, "\x80", 1));
    assert_int_equal(st, 0);
    /* rejection is sticky */
    st = 0;
    assert_false(wsq_utf8_feed(&st, "\xC0", 1));
    assert_false(wsq_utf8_feed(&st, "a", 1));
    assert_false(wsq_utf8_feed(&st, "", 0));
    /* a state the feeder never produces is refused rather than trusted */
    st = 0x7C;
    assert_false(wsq_utf8_feed(&st, "a", 1));
    st = 0xFF1;
    assert_false(wsq_utf8_feed(&st, "\x80", 1));
}

/* ------------------------------------------------------------------------------------------- */
/* Base64                                                                                       */

static void test_proto_base64_vectors(void **state)
{
    (void)state;
    static const char *vec[][2] = {{"", ""},
                                   {"f", "Zg=="},
                                   {"fo", "Zm8="},
                                   {"foo", "Zm9v"},
                                   {"foob", "Zm9vYg=="},
                                   {"fooba", "Zm9vYmE="},
                                   {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        size_t n = strlen(vec[i][0]);
        char enc[16] = {0};
        assert_int_equal(wsq_base64_enc_len(n), strlen(vec[i][1]));
        wsq_base64_encode(vec[i][0], n, enc);
        assert_string_equal(enc, vec[i][1]);
        unsigned char dec[16];
        size_t dlen = 99;
        assert_int_equal(wsq_base64_decode(vec[i][1], strlen(vec[i][1]), dec, &dlen), WSQ_OK);
        assert_int_equal(dlen, n);
        assert_memory_equal(dec, vec[i][0], n);
    }
    unsigned char all[256], back[256];
    char enc[344];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)(255 - i);
    wsq_base64_encode(all, 256, enc);
    size_t dlen;
    assert_int_equal(wsq_base64_decode(enc, 344, back, &dlen), WSQ_OK);
    assert_int_equal(dlen, 256);
    assert_memory_equal(all, back, 256);
}

static void test_proto_base64_bad_input(void **state)
{
    (void)state;
    static const char *bad[] = {
        "Z",        "Zg",    "Zg=",          "Zm9vY", /* wrong length */
        "Zg==Zg==", "Z===",  "=Zg=",         "Zm=v",  /* padding in the wrong place */
        "Zh==",     "Zm9=",                           /* non-zero pad bits */
        "Zm9v\n",   "Zm 9v", "Zm9v\0\0\0\0", "Zm-_",  /* bad characters */
        "Zm9\xC3",
    };
    static const size_t len[] = {1, 2, 3, 5, 8, 4, 4, 4, 4, 4, 5, 5, 8, 4, 4};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char out[16];
        size_t dlen = 0;
        if (wsq_base64_decode(bad[i], len[i], out, &dlen) != WSQ_ERR_INVAL)
            fail_msg("bad base64 #%zu accepted", i);
    }
}

/* ------------------------------------------------------------------------------------------- */
/* WebSocket frame header                                                                       */

static void test_proto_ws_frame_header(void **state)
{
    (void)state;
    unsigned char h[WSQ_WS_HDR_MAX];
    assert_int_equal(wsq_ws_frame_header(h, 1, 0), 2);
    assert_memory_equal(h, "\x81\x00", 2);
    assert_int_equal(wsq_ws_frame_header(h, 2, 125), 2);
    assert_memory_equal(h, "\x82\x7D", 2);
    assert_int_equal(wsq_ws_frame_header(h, 1, 126), 4);
    assert_memory_equal(h, "\x81\x7E\x00\x7E", 4);
    assert_int_equal(wsq_ws_frame_header(h, 1, 65535), 4);
    assert_memory_equal(h, "\x81\x7E\xFF\xFF", 4);
    assert_int_equal(wsq_ws_frame_header(h, 2, 65536), 10);
    assert_memory_equal(h, "\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00", 10);
    assert_int_equal(wsq_ws_frame_header(h, 1, 1ULL << 32), 10);
    assert_memory_equal(h, "\x81\x7F\x00\x00\x00\x01\x00\x00\x00\x00", 10);
    assert_int_equal(wsq_ws_frame_header(h, 8, 2), 2);
    assert_memory_equal(h, "\x88\x02", 2);
    assert_int_equal(wsq_ws_frame_header(h, 10, 0), 2);
    assert_memory_equal(h, "\x8A\x00", 2);
}

/* ------------------------------------------------------------------------------------------- */
/* Raw mode target                                                                              */

static wsq_err raw(const char *path, const char *query, wsq_raw_target_t *t)
{
    char err[128];
    memset(err, 'X', sizeof err);
    wsq_err e = wsq_raw_parse_target(path, query, t, err, sizeof err);
    assert_non_null(memchr(err, '\0', sizeof err));
    if (e != WSQ_OK) {
        assert_true(err[0] != '\0');
        for (const char *p = err; *p; p++)
            assert_true(*p >= 0x20 && *p < 0x7F);
        assert_null(t->token);
        assert_int_equal(t->topic_len, 0);
    }
    return e;
}

static void test_proto_raw_target_good(void **state)
{
    (void)state;
    wsq_raw_target_t t;
    assert_int_equal(raw("/topics/chat.room1", NULL, &t), WSQ_OK);
    assert_string_equal(t.topic, "chat.room1");
    assert_int_equal(t.topic_len, 10);
    assert_int_equal(t.consumer_len, 0);
    assert_int_equal(t.from, WSQ_FROM_DEFAULT);
    assert_null(t.token);
    wsq_raw_target_clear(&t);

    assert_int_equal(raw("/topics/a/b", "", &t), WSQ_OK);
    assert_string_equal(t.topic, "a/b");
    wsq_raw_target_clear(&t);

    assert_int_equal(raw("/topics/orders", "consumer=billing&from=earliest&token=abc%2Bd+e/=", &t),
                     WSQ_OK);
    assert_string_equal(t.consumer, "billing");
    assert_int_equal(t.consumer_len, 7);
    assert_int_equal(t.from, WSQ_FROM_EARLIEST);
    assert_string_equal(t.token, "abc+d+e/=");
    wsq_raw_target_clear(&t);
    assert_null(t.token);

    /* empty segments are tolerated */
    assert_int_equal(raw("/topics/x", "&consumer=c&&", &t), WSQ_OK);
    assert_string_equal(t.consumer, "c");
    assert_false(t.shared);
    wsq_raw_target_clear(&t);

    /* shared, before or after the consumer */
    assert_int_equal(raw("/topics/x", "shared=true&consumer=c", &t), WSQ_OK);
    assert_true(t.shared);
    wsq_raw_target_clear(&t);
    assert_int_equal(raw("/topics/x", "consumer=c&shared=false", &t), WSQ_OK);
    assert_false(t.shared);
    wsq_raw_target_clear(&t);
    assert_int_equal(raw("/topics/x", "shared=true", &t), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(raw("/topics/x", "consumer=c&shared=1", &t), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(raw("/topics/x", "consumer=c&shared", &t), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(raw("/topics/x", "consumer=c&shared=true&shared=true", &t),
                     WSQ_ERR_BAD_REQUEST);
}

/* What the broker encodes for the work-queue features, its clients decode. */
static void test_proto_server_dead_dup_shared(void **state)
{
    (void)state;
    wsq_buf_t b;
    wsq_buf_init(&b);
    assert_int_equal(wsq_proto_enc_dead(&b, "jobs", 4, 7, "jobs.dlq", 8, 2), WSQ_OK);
    wsq_server_frame_t s = decode_server_ok(&b);
    assert_string_equal(s.op, "dead");
    assert_string_equal(s.topic, "jobs");
    assert_int_equal(s.seq, 7);
    assert_string_equal(s.dead_topic, "jobs.dlq");
    assert_int_equal(s.dead_seq, 2);
    wsq_server_frame_clear(&s);
    b.len = 0;
    wsq_subscribed_t sd = {.topic = "jobs",
                           .topic_len = 4,
                           .consumer = "w",
                           .first_seq = 1,
                           .next_seq = 9,
                           .start_seq = 3,
                           .window = 5,
                           .shared = true};
    assert_int_equal(wsq_proto_enc_subscribed(&b, NULL, &sd), WSQ_OK);
    s = decode_server_ok(&b);
    assert_true(s.shared);
    assert_int_equal(s.start_seq, 3);
    wsq_server_frame_clear(&s);
    wsq_buf_fini(&b);
    assert_int_equal(decode_server_str("{\"op\":\"ok\",\"seq\":4,\"dup\":true}"), WSQ_OK);
    assert_int_equal(decode_server_str("{\"op\":\"ok\",\"seq\":4,\"dup\":1}"), WSQ_ERR_BAD_TYPE);
    assert_int_equal(
        decode_server_str("{\"op\":\"dead\",\"topic\":\"a\",\"seq\":1,\"dead_seq\":1}"),
        WSQ_ERR_BAD_REQUEST);
    assert_int_equal(decode_server_str("{\"op\":\"dead\",\"topic\":\"a\",\"seq\":1,\"dead_seq\":1,"
                                       "\"dead_topic\":\"a..b\"}"),
                     WSQ_ERR_BAD_TOPIC);
}

/* The ack fast path yields what the full decoder does, and declines what it must not take. */
static void test_proto_ack_fast_path(void **state)
{
    (void)state;
    static const char *const same[] = {
        "{\"op\":\"ack\",\"topic\":\"jobs\",\"seq\":42}",
        "{ \"seq\" : 7 , \"topic\" : \"a/b\" , \"op\" : \"ack\" , \"ref\" : \"r\" }",
        "{\"op\":\"ack\",\"topic\":\"t\",\"seq\":999999999999999999,\"ref\":-3}",
        "{\"op\":\"ack\",\"topic\":\"t\",\"seq\":9223372036854775807}",
        "{\"op\":\"ack\",\"topic\":\"t\",\"upto\":5}",
        "{\"op\":\"ack\",\"topic\":\"t\",\"seq\":0}",
        "{\"op\":\"ack\",\"topic\":\"t\",\"seq\":01}",
        "{\"op\":\"ack\",\"topic\":\"t\",\"seq\":-1}",
        "{\"op\":\"ack\",\"topic\":\"t\",\"seq\":1.0}",
        "{\"op\":\"ack\",\"topic\":\"t\",\"seq\":1e2}",
        "{\"op\":\"ack\",\"topic\":\"t\",\"seq\":1,\"seq\":2}",
        "{\"op\":\"ack\",\"topic\":\"t\",\"seq\":1,\"data\":\"x\"}",
        "{\"op\":\"ack\",\"topic\":\"a..b\",\"seq\":1}",
        "{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"x\",\"seq\":1}",
        "{\"op\":\"ack\",\"topic\":\"t\"}",
        "{\"op\":\"ack\",\"topic\":\"t\",\"seq\":\"1\"}",
        "{\"op\":\"ack\",\"topic\":\"t\",\"seq\":1,\"enc\":\"text\"}",
        "{\"op\":\"ack\",\"topic\":\"t\",\"seq\":1,\"ref\":\"a\\u0041\"}",
        /* the canonical shape (matched as bytes) and its near misses */
        "{\"op\":\"ack\",\"topic\":\"a.b-c_d/e\",\"seq\":123456789012345678}",
        "{\"op\":\"ack\",\"topic\":\"a.b\",\"seq\":1234567890123456789}",
        "{\"op\":\"ack\",\"topic\":\"a.b\",\"seq\":1} ",
        "{\"op\":\"ack\",\"topic\":\"a.b\",\"seq\":1}}",
        "{\"op\":\"ack\",\"topic\":\"a.b\",\"seq\":1",
        "{\"op\":\"ack\",\"topic\":\"a.b\",\"seq\":}",
        "{\"op\":\"ack\",\"topic\":\"a.b\",\"seq\":1x}",
        "{\"op\":\"ack\",\"topic\":\"a\\u002eb\",\"seq\":1}",
        "{\"op\":\"ack\",\"topic\":\"a\\\"b\",\"seq\":1}",
        "{\"op\":\"ack\",\"topic\":\"a\tb\",\"seq\":1}",
        "{\"op\":\"ack\",\"topic\":\"\",\"seq\":1}",
        "{\"op\":\"ack\",\"topic\":\"a.*\",\"seq\":1}",
        "{\"op\":\"ack\",\"topic\":\"a\",\"seq\":1,\"ref\":2}",
        "{\"op\":\"ack\",\"topic\":\"a\"",
    };
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        wsq_frame_t a, b;
        wsq_proto_error_t ea, eb;
        wsq_err ra = wsq_proto_decode(same[i], strlen(same[i]), MAXP, &a, &ea);
        wsq_err rb = wsq__proto_decode_full(same[i], strlen(same[i]), MAXP, &b, &eb);
        if (ra != rb)
            fail_msg("%s: fast %s, full %s", same[i], wsq_errname(ra), wsq_errname(rb));
        if (ra == WSQ_OK) {
            assert_int_equal(a.op, b.op);
            assert_string_equal(a.topic, b.topic);
            assert_string_equal(a.ref, b.ref);
            assert_true(a.has_seq == b.has_seq && a.seq == b.seq);
            assert_true(a.has_upto == b.has_upto && a.upto == b.upto);
        }
        wsq_frame_clear(&a);
        wsq_frame_clear(&b);
    }
}

static void test_proto_patterns(void **state)
{
    (void)state;
    wsq_frame_t f;
    decode_ok("{\"op\":\"sub\",\"topic\":\"a.>\"}", &f);
    assert_true(f.pattern);
    assert_string_equal(f.topic, "a.>");
    wsq_buf_t b;
    wsq_buf_init(&b);
    assert_int_equal(wsq_proto_encode_client(&f, &b), WSQ_OK); /* a client may send it */
    wsq_frame_clear(&f);
    decode_ok("{\"op\":\"unsub\",\"topic\":\"*.b\"}", &f);
    assert_true(f.pattern);
    wsq_frame_clear(&f);
    decode_ok("{\"op\":\"sub\",\"topic\":\"a.b\"}", &f);
    assert_false(f.pattern);
    /* a publish, an ack or a nack names one topic */
    f.op = WSQ_OP_PUB;
    memcpy(f.topic, "a.*", 4);
    f.topic_len = 3;
    b.len = 0;
    assert_int_equal(wsq_proto_encode_client(&f, &b), WSQ_ERR_INVAL);
    wsq_frame_clear(&f);
    decode_err("{\"op\":\"pub\",\"topic\":\"a.*\",\"data\":\"x\"}", WSQ_ERR_BAD_TOPIC);
    decode_err("{\"op\":\"ack\",\"topic\":\"a.>\",\"seq\":1}", WSQ_ERR_BAD_TOPIC);
    decode_err("{\"op\":\"nack\",\"topic\":\">\",\"seq\":1}", WSQ_ERR_BAD_TOPIC);
    decode_err("{\"op\":\"sub\",\"topic\":\"a.>.b\"}", WSQ_ERR_BAD_TOPIC);
    decode_err("{\"op\":\"sub\",\"topic\":\"a.b*\"}", WSQ_ERR_BAD_TOPIC);
    /* a pattern's subscribed answer: no positions, the topics it matched */
    b.len = 0;
    wsq_subscribed_t sd = {
        .topic = "a.>", .topic_len = 3, .window = 7, .pattern = true, .topics = 12};
    assert_int_equal(wsq_proto_enc_subscribed(&b, "1", &sd), WSQ_OK);
    wsq_server_frame_t s = decode_server_ok(&b);
    assert_true(s.pattern);
    assert_int_equal(s.topics, 12);
    assert_string_equal(s.topic, "a.>");
    wsq_server_frame_clear(&s);
    assert_int_equal(decode_server_str("{\"op\":\"subscribed\",\"topic\":\"a.>\",\"window\":1,"
                                       "\"resumed\":false}"),
                     WSQ_ERR_BAD_TOPIC); /* not a pattern answer: a name is needed */
    wsq_buf_fini(&b);
}

static void test_proto_pull_query(void **state)
{
    (void)state;
    wsq_pull_query_t q;
    char err[200];
    assert_int_equal(wsq_pull_parse_query("topic=a%2Fb&consumer=w&max=10&wait=5s&shared=true"
                                          "&from=earliest&token=x",
                                          &q, err, sizeof err),
                     WSQ_OK);
    assert_string_equal(q.topic, "a/b");
    assert_string_equal(q.consumer, "w");
    assert_int_equal(q.max, 10);
    assert_int_equal(q.wait_ms, 5000);
    assert_true(q.shared);
    assert_int_equal(q.from, WSQ_FROM_EARLIEST);
    assert_int_equal(wsq_pull_parse_query("consumer=w&topic=t", &q, err, sizeof err), WSQ_OK);
    assert_int_equal(q.max, 1);
    assert_int_equal(q.wait_ms, 0);
    assert_false(q.shared);
    assert_int_equal(q.from, WSQ_FROM_DEFAULT);
    static const struct {
        const char *wait;
        int64_t ms;
    } waits[] = {{"0", 0}, {"250", 250}, {"250ms", 250}, {"60s", 60000}, {"1m", 60000}};
    for (size_t i = 0; i < sizeof waits / sizeof waits[0]; i++) {
        char qs[64];
        snprintf(qs, sizeof qs, "topic=t&consumer=w&wait=%s", waits[i].wait);
        assert_int_equal(wsq_pull_parse_query(qs, &q, err, sizeof err), WSQ_OK);
        assert_int_equal(q.wait_ms, waits[i].ms);
    }
    /* the first of a repeated parameter counts; unknown ones are ignored */
    assert_int_equal(
        wsq_pull_parse_query("topic=t&consumer=w&max=2&max=3&x=%zz", &q, err, sizeof err), WSQ_OK);
    assert_int_equal(q.max, 2);
    static const char *const bad[] = {
        "",
        "topic=t",
        "consumer=w",
        "topic=t&consumer=a+b",
        "topic=t&consumer=w&max=0",
        "topic=t&consumer=w&max=1001",
        "topic=t&consumer=w&wait=61s",
        "topic=t&consumer=w&wait=2m",
        "topic=t&consumer=w&wait=5h",
        "topic=t&consumer=w&wait=ms",
        "topic=t&consumer=w&shared=1",
        "topic=t&consumer=w&from=0",
        "topic=t&consumer=%zz",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(wsq_pull_parse_query(bad[i], &q, err, sizeof err), WSQ_ERR_BAD_REQUEST);
        assert_true(err[0] != '\0');
        assert_int_equal(q.topic_len, 0);
    }
    assert_int_equal(wsq_pull_parse_query("topic=a..b&consumer=w", &q, err, sizeof err),
                     WSQ_ERR_BAD_TOPIC);
}

static void test_proto_pull_acks(void **state)
{
    (void)state;
    static wsq_pull_acks_t a;
    char err[200];
    const char *ok = "{\"seqs\":[3,1,2],\"x\":1}";
    assert_int_equal(wsq_pull_parse_acks(ok, strlen(ok), false, &a, err, sizeof err), WSQ_OK);
    assert_int_equal(a.n, 3);
    assert_int_equal(a.seqs[0], 3);
    const char *nd = "{\"seqs\":[7],\"delay\":500}";
    assert_int_equal(wsq_pull_parse_acks(nd, strlen(nd), true, &a, err, sizeof err), WSQ_OK);
    assert_int_equal(a.delay_ms, 500);
    assert_false(a.term);
    const char *nt = "{\"seqs\":[7],\"term\":true}";
    assert_int_equal(wsq_pull_parse_acks(nt, strlen(nt), true, &a, err, sizeof err), WSQ_OK);
    assert_true(a.term);
    static const struct {
        const char *body;
        bool nack;
        wsq_err want;
    } bad[] = {
        {"", false, WSQ_ERR_BAD_JSON},
        {"{", false, WSQ_ERR_BAD_JSON},
        {"{\"seqs\":[1],\"seqs\":[2]}", false, WSQ_ERR_BAD_JSON},
        {"[]", false, WSQ_ERR_BAD_REQUEST},
        {"{}", false, WSQ_ERR_BAD_REQUEST},
        {"{\"seqs\":[]}", false, WSQ_ERR_BAD_REQUEST},
        {"{\"seqs\":1}", false, WSQ_ERR_BAD_TYPE},
        {"{\"seqs\":[\"1\"]}", false, WSQ_ERR_BAD_TYPE},
        {"{\"seqs\":[0]}", false, WSQ_ERR_BAD_REQUEST},
        {"{\"seqs\":[-1]}", false, WSQ_ERR_BAD_REQUEST},
        {"{\"seqs\":[1],\"delay\":1}", false, WSQ_ERR_BAD_REQUEST},
        {"{\"seqs\":[1],\"term\":true}", false, WSQ_ERR_BAD_REQUEST},
        {"{\"seqs\":[1],\"term\":true,\"delay\":0}", true, WSQ_ERR_BAD_REQUEST},
        {"{\"seqs\":[1],\"term\":\"yes\"}", true, WSQ_ERR_BAD_TYPE},
        {"{\"seqs\":[1],\"delay\":86400001}", true, WSQ_ERR_BAD_REQUEST},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *b = bad[i].body;
        assert_int_equal(wsq_pull_parse_acks(b, strlen(b), bad[i].nack, &a, err, sizeof err),
                         bad[i].want);
        assert_true(err[0] != '\0');
        assert_int_equal(a.n, 0);
    }
    /* at most WSQ_PULL_MAX seqs */
    wsq_buf_t big;
    wsq_buf_init(&big);
    wsq_buf_append(&big, "{\"seqs\":[", 9);
    for (unsigned i = 0; i <= WSQ_PULL_MAX; i++)
        wsq_buf_append(&big, i ? ",1" : "1", i ? 2 : 1);
    wsq_buf_append(&big, "]}", 2);
    assert_int_equal(wsq_pull_parse_acks(big.data, big.len, false, &a, err, sizeof err),
                     WSQ_ERR_BAD_REQUEST);
    wsq_buf_fini(&big);
}

static void test_proto_raw_target_percent(void **state)
{
    (void)state;
    wsq_raw_target_t t;
    assert_int_equal(raw("/topics/chat%2Eroom%2f1", NULL, &t), WSQ_OK);
    assert_string_equal(t.topic, "chat.room/1");
    wsq_raw_target_clear(&t);
    assert_int_equal(raw("/topics/x", "%63onsumer=%41-b", &t), WSQ_OK);
    assert_string_equal(t.consumer, "A-b");
    wsq_raw_target_clear(&t);

    assert_int_equal(raw("/topics/a%2", NULL, &t), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(raw("/topics/a%zz", NULL, &t), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(raw("/topics/x", "consumer=%", &t), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(raw("/topics/x", "token=a%G0", &t), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(raw("/topics/a%00b", NULL, &t), WSQ_ERR_BAD_TOPIC);
    assert_int_equal(raw("/topics/a%20b", NULL, &t), WSQ_ERR_BAD_TOPIC);
    assert_int_equal(raw("/topics/x", "token=a%00b", &t), WSQ_ERR_BAD_REQUEST);
}

static void test_proto_raw_target_bad_topic(void **state)
{
    (void)state;
    wsq_raw_target_t t;
    assert_int_equal(raw("/topics/", NULL, &t), WSQ_ERR_BAD_TOPIC);
    assert_int_equal(raw("/topics/a..b", NULL, &t), WSQ_ERR_BAD_TOPIC);
    assert_int_equal(raw("/topics/a/", NULL, &t), WSQ_ERR_BAD_TOPIC);
    assert_int_equal(raw("/topics/a*", NULL, &t), WSQ_ERR_BAD_TOPIC);
    assert_int_equal(raw("/topics/a?b", NULL, &t), WSQ_ERR_BAD_TOPIC);

    char path[400];
    strcpy(path, "/topics/");
    memset(path + 8, 'a', 256);
    path[8 + 256] = '\0';
    assert_int_equal(raw(path, NULL, &t), WSQ_ERR_BAD_TOPIC);
    path[8 + 255] = '\0';
    assert_int_equal(raw(path, NULL, &t), WSQ_OK);
    assert_int_equal(t.topic_len, 255);
    wsq_raw_target_clear(&t);
}

static void test_proto_raw_target_not_found(void **state)
{
    (void)state;
    wsq_raw_target_t t;
    assert_int_equal(raw("/", NULL, &t), WSQ_ERR_NOTFOUND);
    assert_int_equal(raw("/topics", NULL, &t), WSQ_ERR_NOTFOUND);
    assert_int_equal(raw("/topic/x", NULL, &t), WSQ_ERR_NOTFOUND);
    assert_int_equal(raw("/TOPICS/x", NULL, &t), WSQ_ERR_NOTFOUND);
    assert_int_equal(raw("topics/x", NULL, &t), WSQ_ERR_NOTFOUND);
    assert_int_equal(raw("/healthz", NULL, &t), WSQ_ERR_NOTFOUND);
    assert_int_equal(raw(NULL, NULL, &t), WSQ_ERR_NOTFOUND);
    /* a NULL errbuf is allowed */
    assert_int_equal(wsq_raw_parse_target("/x", NULL, &t, NULL, 0), WSQ_ERR_NOTFOUND);
}

static void test_proto_raw_target_params(void **state)
{
    (void)state;
    wsq_raw_target_t t;
    char err[128];
    assert_int_equal(wsq_raw_parse_target("/topics/x", "group=a", &t, err, sizeof err),
                     WSQ_ERR_BAD_REQUEST);
    assert_true(contains(err, "group"));
    assert_int_equal(raw("/topics/x", "consumer=a&consumer=a", &t), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(
        wsq_raw_parse_target("/topics/x", "from=latest&token=t&from=earliest", &t, err, sizeof err),
        WSQ_ERR_BAD_REQUEST);
    assert_true(contains(err, "duplicate"));
    assert_int_equal(raw("/topics/x", "token=a&token=b", &t), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(raw("/topics/x", "consumer", &t), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(raw("/topics/x", "consumer=", &t), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(raw("/topics/x", "consumer=a+b", &t), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(raw("/topics/x", "token=", &t), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(raw("/topics/x", "=x", &t), WSQ_ERR_BAD_REQUEST);
    assert_int_equal(raw("/topics/x", "averyveryveryverylongparametername=1", &t),
                     WSQ_ERR_BAD_REQUEST);
    assert_int_equal(raw("/topics/x", "%FF%FE=1", &t), WSQ_ERR_BAD_REQUEST);

    char name[140];
    memset(name, 'n', 129);
    name[129] = '\0';
    char q[200];
    snprintf(q, sizeof q, "consumer=%s", name);
    assert_int_equal(raw("/topics/x", q, &t), WSQ_ERR_BAD_REQUEST);
    name[128] = '\0';
    snprintf(q, sizeof q, "consumer=%s", name);
    assert_int_equal(raw("/topics/x", q, &t), WSQ_OK);
    assert_int_equal(t.consumer_len, 128);
    wsq_raw_target_clear(&t);

    /* the token: up to WSQ_TOKEN_MAX decoded bytes, however it was encoded */
    char *tq = malloc(3 * WSQ_TOKEN_MAX + 16);
    assert_non_null(tq);
    int n = sprintf(tq, "token=");
    for (int i = 0; i < WSQ_TOKEN_MAX; i++)
        n += sprintf(tq + n, "%%41");
    assert_int_equal(raw("/topics/x", tq, &t), WSQ_OK);
    assert_int_equal(strlen(t.token), WSQ_TOKEN_MAX);
    wsq_raw_target_clear(&t);
    strcpy(tq + n, "A");
    assert_int_equal(raw("/topics/x", tq, &t), WSQ_ERR_BAD_REQUEST);
    free(tq);
}

static void test_proto_raw_target_from(void **state)
{
    (void)state;
    static const struct {
        const char *q;
        wsq_err e;
        wsq_from_t from;
        uint64_t seq;
        int64_t time;
    } cases[] = {
        {"from=earliest", WSQ_OK, WSQ_FROM_EARLIEST, 0, 0},
        {"from=latest", WSQ_OK, WSQ_FROM_LATEST, 0, 0},
        {"from=resume", WSQ_OK, WSQ_FROM_RESUME, 0, 0},
        {"from=1", WSQ_OK, WSQ_FROM_SEQ, 1, 0},
        {"from=18446744073709551615", WSQ_OK, WSQ_FROM_SEQ, UINT64_MAX, 0},
        {"from=time:0", WSQ_OK, WSQ_FROM_TIME, 0, 0},
        {"from=time:1700000000000", WSQ_OK, WSQ_FROM_TIME, 0, 1700000000000},
        {"from=time%3A5", WSQ_OK, WSQ_FROM_TIME, 0, 5},
        {"from=0", WSQ_ERR_BAD_REQUEST, 0, 0, 0},
        {"from=-1", WSQ_ERR_BAD_REQUEST, 0, 0, 0},
        {"from=+1", WSQ_ERR_BAD_REQUEST, 0, 0, 0},
        {"from=18446744073709551616", WSQ_ERR_BAD_REQUEST, 0, 0, 0},
        {"from=1x", WSQ_ERR_BAD_REQUEST, 0, 0, 0},
        {"from=", WSQ_ERR_BAD_REQUEST, 0, 0, 0},
        {"from=Earliest", WSQ_ERR_BAD_REQUEST, 0, 0, 0},
        {"from=time:", WSQ_ERR_BAD_REQUEST, 0, 0, 0},
        {"from=time:-5", WSQ_ERR_BAD_REQUEST, 0, 0, 0},
        {"from=time:9223372036854775808", WSQ_ERR_BAD_REQUEST, 0, 0, 0},
        {"from=time:9223372036854775807", WSQ_OK, WSQ_FROM_TIME, 0, INT64_MAX},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wsq_raw_target_t t;
        wsq_err e = raw("/topics/x", cases[i].q, &t);
        if (e != cases[i].e)
            fail_msg("%s: got %s", cases[i].q, wsq_errname(e));
        if (e == WSQ_OK) {
            assert_int_equal(t.from, cases[i].from);
            assert_int_equal(t.from_seq, cases[i].seq);
            assert_int_equal(t.from_time, cases[i].time);
        }
        wsq_raw_target_clear(&t);
    }
}

/* ------------------------------------------------------------------------------------------- */
/* JSON escaping and buffers                                                                    */

static void test_proto_json_escape(void **state)
{
    (void)state;
    wsq_buf_t b;
    wsq_buf_init(&b);
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"", 0, ""},
        {"plain", 5, "plain"},
        {"a\"b\\c/d", 7, "a\\\"b\\\\c/d"},
        {"\b\f\n\r\t", 5, "\\b\\f\\n\\r\\t"},
        {"\x00\x01\x1f\x7f", 4, "\\u0000\\u0001\\u001f\x7f"},
        {"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xE2\x80\xA8", 12,
         "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xE2\x80\xA8"},
        {"0123456789abcdef\"0123456789abcdef", 33, "0123456789abcdef\\\"0123456789abcdef"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(wsq_json_escape(&b, cases[i].in, cases[i].n), WSQ_OK);
        assert_buf_str(&b, cases[i].out);
    }

    /* every escape at every position relative to the 8-byte fast path */
    char in[64];
    for (size_t pos = 0; pos < 24; pos++) {
        memset(in, 'x', sizeof in);
        in[pos] = '\n';
        assert_int_equal(wsq_json_escape(&b, in, 24), WSQ_OK);
        assert_int_equal(b.len, 25);
        assert_memory_equal(b.data + pos, "\\n", 2);
        b.len = 0;
    }

    /* every ASCII byte at every offset of a 16-byte window, against a byte-wise reference */
    for (unsigned c = 0; c < 0x80; c++) {
        for (size_t pos = 0; pos < 16; pos++) {
            memset(in, 'y', 16);
            in[pos] = (char)c;
            char want[32];
            size_t w = 0;
            memset(want, 'y', sizeof want);
            w = pos;
            if (c == '"' || c == '\\') {
                want[w++] = '\\';
                want[w++] = (char)c;
            } else if (c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t') {
                want[w++] = '\\';
                want[w++] = c == '\b'   ? 'b'
                            : c == '\f' ? 'f'
                            : c == '\n' ? 'n'
                            : c == '\r' ? 'r'
                                        : 't';
            } else if (c < 0x20) {
                w += (size_t)sprintf(want + w, "\\u%04x", c);
                want[w] = 'y';
            } else {
                want[w++] = (char)c;
            }
            w += 15 - pos;
            assert_int_equal(wsq_json_escape(&b, in, 16), WSQ_OK);
            assert_int_equal(b.len, w);
            assert_memory_equal(b.data, want, w);
            b.len = 0;
        }
    }

    /* many escapes: output is six times the input */
    char ctl[1000];
    memset(ctl, 1, sizeof ctl);
    assert_int_equal(wsq_json_escape(&b, ctl, sizeof ctl), WSQ_OK);
    assert_int_equal(b.len, 6000);
    assert_memory_equal(b.data + 5994, "\\u0001", 6);
    b.len = 0;

    /* invalid UTF-8 is refused and leaves the buffer as it was */
    assert_int_equal(wsq_buf_append(&b, "keep", 4), WSQ_OK);
    assert_int_equal(wsq_json_escape(&b, "ab\n\xED\xA0\x80", 6), WSQ_ERR_BAD_UTF8);
    assert_int_equal(wsq_json_escape(&b, "\xC3", 1), WSQ_ERR_BAD_UTF8);
    assert_int_equal(wsq_json_escape(&b, "\x80", 1), WSQ_ERR_BAD_UTF8);
    assert_buf_str(&b, "keep");
    wsq_buf_fini(&b);
}

static void test_proto_buf(void **state)
{
    (void)state;
    wsq_buf_t b;
    wsq_buf_init(&b);
    assert_null(b.data);
    assert_int_equal(wsq_buf_append(&b, NULL, 0), WSQ_OK);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(wsq_buf_append(&b, "0123456789", 10), WSQ_OK);
    assert_int_equal(b.len, 10000);
    assert_true(b.cap >= b.len);
    assert_memory_equal(b.data + 9990, "0123456789", 10);
    assert_int_equal(wsq_buf_reserve(&b, 100000), WSQ_OK);
    assert_true(b.cap - b.len >= 100000);
    assert_int_equal(wsq_buf_reserve(&b, SIZE_MAX), WSQ_ERR_NOMEM);
    assert_int_equal(b.len, 10000);
    wsq_buf_fini(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
}

/* ------------------------------------------------------------------------------------------- */
/* The pub fast path must decode exactly as the full decoder: differential test. */

wsq_err wsq__proto_decode_full(const void *json, size_t len, size_t max_payload, wsq_frame_t *f,
                               wsq_proto_error_t *perr);

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static void gen_string(wsq_buf_t *b, bool allow_escapes)
{
    static const char *const pieces[] = {
        "a",   "hello", " ",       "\xc3\xa9", "\xf0\x9f\x98\x80", "\\\"",    "\\\\",      "\\/",
        "\\n", "\\t",   "\\u00e9", "\\u0000",  "\\ud83d\\ude00",   "\\ud83d", "\\ude00",   "\\u12",
        "\\x", "\x01",  "\xc3",    "/",        "\xed\xa0\x80",     "z9",      "\\b\\f\\r", "\x7f",
        "\"",  "\\"};
    int n = (int)rnd(6);
    for (int i = 0; i < n; i++) {
        const char *p = pieces[rnd(allow_escapes ? 26 : 5)];
        wsq_buf_append(b, p, strlen(p));
    }
}

static void gen_member(wsq_buf_t *b, int which)
{
    switch (which) {
    case 0: {
        const char *op = rnd(8) ? "\"pub\"" : (rnd(2) ? "\"sub\"" : "1");
        wsq_buf_append(b, "\"op\":", 5);
        wsq_buf_append(b, op, strlen(op));
        break;
    }
    case 1: {
        static const char *const topics[] = {
            "\"t\"", "\"chat.room1\"", "\"a..b\"", "\"\"", "\"x\\u0041\"", "7", "\"orders/eu/1\""};
        const char *t = topics[rnd(7)];
        wsq_buf_append(b, "\"topic\":", 8);
        wsq_buf_append(b, t, strlen(t));
        break;
    }
    case 2:
        wsq_buf_append(b, "\"data\":", 7);
        if (rnd(10) == 0) {
            wsq_buf_append(b, "null", 4);
        } else if (rnd(3) == 0) {
            static const char *const b64[] = {"\"AAEC/w==\"", "\"\"",         "\"AAE\"",
                                              "\"A=AA\"",     "\"aGVsbG8=\"", "\"aGVsbG9=\""};
            const char *x = b64[rnd(6)];
            wsq_buf_append(b, x, strlen(x));
        } else {
            wsq_buf_append(b, "\"", 1);
            gen_string(b, true);
            wsq_buf_append(b, "\"", 1);
        }
        break;
    case 3: {
        static const char *const encs[] = {"\"base64\"", "\"text\"", "\"hex\"", "1",
                                           "\"base\\u0036\\u0034\""};
        const char *e = encs[rnd(5)];
        wsq_buf_append(b, "\"enc\":", 6);
        wsq_buf_append(b, e, strlen(e));
        break;
    }
    case 4: {
        static const char *const refs[] = {
            "7",       "-3",    "0",       "-0",           "007", "1.5",
            "1e3",     "\"r\"", "\"\\n\"", "\"\xc3\xa9\"", "[1]", "123456789012345678901",
            "\"/x/\"", "true"};
        const char *r = refs[rnd(14)];
        wsq_buf_append(b, "\"ref\":", 6);
        wsq_buf_append(b, r, strlen(r));
        break;
    }
    default:
        wsq_buf_append(b, "\"extra\":1", 9);
    }
}

/* One rnd() decides both the text and its length: two calls could pick the
 * short literal and the long length. */
static void append_str(wsq_buf_t *b, const char *s)
{
    wsq_buf_append(b, s, strlen(s));
}

static void test_proto_fast_pub_matches_full_decoder(void **state)
{
    (void)state;
    int fast_ok = 0;
    for (int iter = 0; iter < 20000; iter++) {
        wsq_buf_t b;
        wsq_buf_init(&b);
        int order[6] = {0, 1, 2, 3, 4, 5};
        for (int i = 5; i > 0; i--) {
            int j = (int)rnd((uint32_t)i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        append_str(&b, rnd(10) ? "{" : " { ");
        bool first = true;
        for (int i = 0; i < 6; i++) {
            int m = order[i];
            bool include = m == 0 || m == 1 || m == 2 ? rnd(20) != 0 : rnd(2) == 0;
            if (m == 5)
                include = rnd(10) == 0;
            if (!include)
                continue;
            if (!first)
                append_str(&b, rnd(10) ? "," : " ,\n");
            first = false;
            gen_member(&b, m);
            if (rnd(30) == 0) { /* duplicate */
                wsq_buf_append(&b, ",", 1);
                gen_member(&b, m);
            }
        }
        wsq_buf_append(&b, "}", 1);
        if (rnd(20) == 0)
            wsq_buf_append(&b, " x", 2);
        if (rnd(20) == 0 && b.len > 3)
            b.len -= 1 + rnd(3); /* truncated */

        size_t maxp = rnd(4) == 0 ? 3 : 1 << 20;
        wsq_frame_t a, c;
        wsq_proto_error_t ea, ec;
        wsq_err ra = wsq_proto_decode(b.data, b.len, maxp, &a, &ea);
        wsq_err rc = wsq__proto_decode_full(b.data, b.len, maxp, &c, &ec);
        if (ra != rc ||
            (ra == WSQ_OK &&
             (a.op != c.op || strcmp(a.ref, c.ref) != 0 || strcmp(a.topic, c.topic) != 0 ||
              a.data_len != c.data_len || a.binary != c.binary ||
              (a.data_len && memcmp(a.data, c.data, a.data_len) != 0)))) {
            print_error("frame: %.*s\nfast: %s ref=%s; full: %s ref=%s\n", (int)b.len,
                        (const char *)b.data, wsq_errname(ra), a.ref, wsq_errname(rc), c.ref);
            fail();
        }
        if (ra != WSQ_OK)
            assert_string_equal(ea.message, ec.message); /* errors come from the full decoder */
        else
            fast_ok++;
        wsq_frame_clear(&a);
        wsq_frame_clear(&c);
        wsq_buf_fini(&b);
    }
    assert_true(fast_ok > 500); /* the generator reaches the success path often */
}

/* ------------------------------------------------------------------------------------------- */
/* Message headers                                                                              */

static void test_proto_nack_term(void **state)
{
    (void)state;
    wsq_frame_t f;
    decode_ok("{\"op\":\"nack\",\"topic\":\"t\",\"seq\":3,\"term\":true}", &f);
    assert_true(f.term);
    wsq_buf_t b;
    wsq_buf_init(&b);
    assert_int_equal(wsq_proto_encode_client(&f, &b), WSQ_OK);
    assert_buf_str(&b, "{\"op\":\"nack\",\"topic\":\"t\",\"seq\":3,\"term\":true}");
    wsq_buf_fini(&b);
    wsq_frame_clear(&f);
    decode_ok("{\"op\":\"nack\",\"topic\":\"t\",\"seq\":3,\"term\":false,\"delay\":5}", &f);
    assert_false(f.term);
    assert_int_equal(f.delay_ms, 5);
    wsq_frame_clear(&f);
    decode_err("{\"op\":\"nack\",\"topic\":\"t\",\"seq\":3,\"term\":1}", WSQ_ERR_BAD_TYPE);
    decode_err("{\"op\":\"nack\",\"topic\":\"t\",\"seq\":3,\"term\":true,\"delay\":0}",
               WSQ_ERR_BAD_REQUEST);
}

static void test_proto_headers_block(void **state)
{
    (void)state;
    wsq_buf_t b;
    wsq_buf_init(&b);
    assert_int_equal(wsq_headers_add(&b, "k", 1, "v", 1), WSQ_OK);
    assert_int_equal(wsq_headers_add(&b, "\xc3\xa9", 2, "", 0), WSQ_OK);
    /* the layout: key length, key, value length (LE), value */
    static const unsigned char want[] = {1, 'k', 1, 0, 'v', 2, 0xc3, 0xa9, 0, 0};
    assert_int_equal(b.len, sizeof(want));
    assert_memory_equal(b.data, want, sizeof(want));
    uint32_t n = 0;
    size_t bytes = 0;
    assert_int_equal(wsq_headers_check(b.data, b.len, &n, &bytes), WSQ_OK);
    assert_int_equal(n, 2);
    assert_int_equal(bytes, 4);
    size_t off = 0;
    wsq_header_t h;
    assert_true(wsq_headers_next(b.data, b.len, &off, &h));
    assert_int_equal(h.key_len, 1);
    assert_memory_equal(h.value, "v", 1);
    assert_true(wsq_headers_next(b.data, b.len, &off, &h));
    assert_int_equal(h.value_len, 0);
    assert_false(wsq_headers_next(b.data, b.len, &off, &h));
    /* refused, b unchanged */
    size_t len = b.len;
    char big[300];
    memset(big, 'a', sizeof(big));
    assert_int_equal(wsq_headers_add(&b, "", 0, "v", 1), WSQ_ERR_INVAL);
    assert_int_equal(wsq_headers_add(&b, big, 256, "v", 1), WSQ_ERR_INVAL);
    assert_int_equal(wsq_headers_add(&b, "a\nb", 3, "v", 1), WSQ_ERR_INVAL);
    assert_int_equal(wsq_headers_add(&b, "a\x7f", 2, "v", 1), WSQ_ERR_INVAL);
    assert_int_equal(wsq_headers_add(&b, "\xff", 1, "v", 1), WSQ_ERR_INVAL);
    assert_int_equal(wsq_headers_add(&b, "k2", 2, "\xc3", 1), WSQ_ERR_INVAL);
    assert_int_equal(b.len, len);
    assert_int_equal(wsq_headers_add(&b, big, 255, "v", 1), WSQ_OK);
    /* a block check refuses: a key twice, a cut entry, a bad key */
    assert_int_equal(wsq_headers_add(&b, "k", 1, "again", 5), WSQ_OK);
    assert_int_equal(wsq_headers_check(b.data, b.len, NULL, NULL), WSQ_ERR_CORRUPT);
    assert_int_equal(wsq_headers_check(want, sizeof(want) - 1, NULL, NULL), WSQ_ERR_CORRUPT);
    static const unsigned char nokey[] = {0, 1, 0, 'v'};
    assert_int_equal(wsq_headers_check(nokey, sizeof(nokey), NULL, NULL), WSQ_ERR_CORRUPT);
    assert_int_equal(wsq_headers_check(NULL, 0, &n, &bytes), WSQ_OK);
    assert_int_equal(n, 0);
    /* as JSON, in order, escaped */
    b.len = 0;
    assert_int_equal(wsq_headers_add(&b, "z", 1, "a\"b\n", 4), WSQ_OK);
    assert_int_equal(wsq_headers_add(&b, "a", 1, "x\0y", 3), WSQ_OK);
    wsq_buf_t j;
    wsq_buf_init(&j);
    assert_int_equal(wsq_headers_json(&j, b.data, b.len), WSQ_OK);
    assert_buf_str(&j, "{\"z\":\"a\\\"b\\n\",\"a\":\"x\\u0000y\"}");
    wsq_buf_fini(&j);
    wsq_buf_fini(&b);
}

static void test_proto_pub_headers(void **state)
{
    (void)state;
    wsq_frame_t f;
    decode_ok("{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"x\",\"headers\":{\"b\":\"2\",\"a\":"
              "\"\\u00e9\"}}",
              &f);
    assert_int_equal(f.n_headers, 2);
    assert_int_equal(f.header_bytes, 5); /* "b" "2" "a" and é, 2 bytes */
    static const unsigned char want[] = {1, 'b', 1, 0, '2', 1, 'a', 2, 0, 0xc3, 0xa9};
    assert_int_equal(f.headers_len, sizeof(want));
    assert_memory_equal(f.headers, want, sizeof(want));
    assert_int_equal(wsq_headers_check(f.headers, f.headers_len, NULL, NULL), WSQ_OK);
    wsq_frame_clear(&f);
    assert_null(f.headers);
    decode_ok("{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"x\",\"headers\":{}}", &f);
    assert_null(f.headers);
    assert_int_equal(f.n_headers, 0);
    wsq_frame_clear(&f);
    decode_err("{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"x\",\"headers\":[]}", WSQ_ERR_BAD_TYPE);
    decode_err("{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"x\",\"headers\":{\"a\":1}}",
               WSQ_ERR_BAD_TYPE);
    decode_err("{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"x\",\"headers\":{\"\":\"v\"}}",
               WSQ_ERR_BAD_REQUEST);
    decode_err("{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"x\",\"headers\":{\"a\\tb\":\"v\"}}",
               WSQ_ERR_BAD_REQUEST);
    decode_err(
        "{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"x\",\"headers\":{\"a\":\"1\",\"a\":\"2\"}}",
        WSQ_ERR_BAD_JSON);

    /* msg with headers, and a client decoding it */
    wsq_buf_t b;
    wsq_buf_init(&b);
    assert_int_equal(wsq_proto_enc_msg(&b, "t", 1, 7, 8, "x", 1, false, 2, want, sizeof(want)),
                     WSQ_OK);
    wsq_server_frame_t s = decode_server_ok(&b);
    assert_int_equal(s.headers_len, sizeof(want));
    assert_memory_equal(s.headers, want, sizeof(want));
    wsq_server_frame_clear(&s);
    assert_buf_str(&b, "{\"op\":\"msg\",\"topic\":\"t\",\"seq\":7,\"ts\":8,\"data\":\"x\","
                       "\"headers\":{\"b\":\"2\",\"a\":\"\xc3\xa9\"},\"deliveries\":2}");
    assert_int_equal(wsq_proto_enc_msg(&b, "t", 1, 7, 8, "x", 1, false, 1, NULL, 3), WSQ_ERR_INVAL);
    wsq_buf_fini(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proto_fast_pub_matches_full_decoder),
        cmocka_unit_test(test_proto_pub_text),
        cmocka_unit_test(test_proto_pub_base64),
        cmocka_unit_test(test_proto_pub_empty_payload),
        cmocka_unit_test(test_proto_pub_text_nul_and_escapes),
        cmocka_unit_test(test_proto_sub_full),
        cmocka_unit_test(test_proto_sub_shared),
        cmocka_unit_test(test_proto_server_dead_dup_shared),
        cmocka_unit_test(test_proto_ack_fast_path),
        cmocka_unit_test(test_proto_patterns),
        cmocka_unit_test(test_proto_pull_query),
        cmocka_unit_test(test_proto_pull_acks),
        cmocka_unit_test(test_proto_sub_from_variants),
        cmocka_unit_test(test_proto_sub_bad_values),
        cmocka_unit_test(test_proto_unsub),
        cmocka_unit_test(test_proto_ack),
        cmocka_unit_test(test_proto_nack),
        cmocka_unit_test(test_proto_ping),
        cmocka_unit_test(test_proto_auth),
        cmocka_unit_test(test_proto_unknown_op),
        cmocka_unit_test(test_proto_missing_op),
        cmocka_unit_test(test_proto_bad_type_names_member),
        cmocka_unit_test(test_proto_bad_json),
        cmocka_unit_test(test_proto_non_object),
        cmocka_unit_test(test_proto_bad_topic),
        cmocka_unit_test(test_proto_ref_echo_on_error),
        cmocka_unit_test(test_proto_too_large_boundary),
        cmocka_unit_test(test_proto_pub_bad_base64),
        cmocka_unit_test(test_proto_client_roundtrip_all_ops),
        cmocka_unit_test(test_proto_encode_client_refuses_invalid),
        cmocka_unit_test(test_proto_text_special_roundtrip),
        cmocka_unit_test(test_proto_binary_all_bytes),
        cmocka_unit_test(test_proto_server_exact_text),
        cmocka_unit_test(test_proto_enc_numbers),
        cmocka_unit_test(test_proto_server_encoders_append_and_roll_back),
        cmocka_unit_test(test_proto_server_roundtrip_all_frames),
        cmocka_unit_test(test_proto_decode_server_errors),
        cmocka_unit_test(test_proto_utf8_valid),
        cmocka_unit_test(test_proto_utf8_stream_split),
        cmocka_unit_test(test_proto_base64_vectors),
        cmocka_unit_test(test_proto_base64_bad_input),
        cmocka_unit_test(test_proto_ws_frame_header),
        cmocka_unit_test(test_proto_raw_target_good),
        cmocka_unit_test(test_proto_raw_target_percent),
        cmocka_unit_test(test_proto_raw_target_bad_topic),
        cmocka_unit_test(test_proto_raw_target_not_found),
        cmocka_unit_test(test_proto_raw_target_params),
        cmocka_unit_test(test_proto_raw_target_from),
        cmocka_unit_test(test_proto_json_escape),
        cmocka_unit_test(test_proto_buf),
        cmocka_unit_test(test_proto_nack_term),
        cmocka_unit_test(test_proto_headers_block),
        cmocka_unit_test(test_proto_pub_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
