/*
 * wsq.v1 codec: client frames (decoded by the broker with jansson, encoded by clients) and server
 * frames (encoded by hand, since the msg encoder runs once per delivered message, and decoded by
 * clients with jansson). Pure: no I/O, no globals except const tables, any thread.
 *
 * Why one file of ~1,400 lines: the four directions share the member readers, the append cursor
 * and the limits, and each encoder must accept exactly what its decoder does (the fuzz target and
 * the differential test check the pub fast path against the full decoder).
 *
 * Size caps: the decoder refuses input larger than 6 * max_payload + FRAME_SLACK before parsing
 * (a payload byte costs at most 6 bytes of JSON, "\u0000"), so jansson's memory is bounded by the
 * caller's max_payload; ref, topic, consumer and token are capped by their fixed limits.
 */
#include "wsq/proto.h"
#include "wsq/topic.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Room for every member of a client frame other than the payload: a token of WSQ_TOKEN_MAX bytes
 * fully \u-escaped, a ref, a topic, and any unknown members a newer client adds. */
#define FRAME_SLACK (64 * 1024)

#define JSON_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL)

#define NACK_DELAY_MAX (24 * 60 * 60 * 1000) /* ms */
#define WINDOW_MAX (1u << 31)

/* ------------------------------------------------------------------------------------------- */
/* Frames                                                                                      */

void wsq_frame_init(wsq_frame_t *f)
{
    memset(f, 0, offsetof(wsq_frame_t, ref));
    f->ref[0] = f->topic[0] = f->consumer[0] = '\0';
    f->from = WSQ_FROM_DEFAULT;
}

void wsq_frame_clear(wsq_frame_t *f)
{
    free(f->data);
    free(f->headers);
    free(f->id);
    free(f->token);
    wsq_frame_init(f);
}

void wsq_server_frame_clear(wsq_server_frame_t *f)
{
    free(f->data);
    free(f->headers);
    memset(f, 0, sizeof *f);
}

const char *wsq_gap_reason_name(wsq_gap_reason_t r)
{
    switch (r) {
    case WSQ_GAP_RETENTION:
        return "retention";
    case WSQ_GAP_PURGE:
        return "purge";
    case WSQ_GAP_CORRUPT:
        return "corrupt";
    }
    return "unknown";
}

/* ------------------------------------------------------------------------------------------- */
/* Decoding helpers (jansson)                                                                   */

__attribute__((format(printf, 3, 4))) static wsq_err set_err(wsq_proto_error_t *perr, wsq_err code,
                                                             const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(perr->message, sizeof perr->message, fmt, ap);
    va_end(ap);
    wsq__sanitize_ascii(perr->message);
    perr->code = code;
    return code;
}

/* String equality that respects embedded NULs ("pub\u0000" is not "pub"). */
static bool str_is(const json_t *s, const char *lit)
{
    size_t n = strlen(lit);
    return json_string_length(s) == n && memcmp(json_string_value(s), lit, n) == 0;
}

/* The value of the n (<= 16) hex digits at s, either case; false when one is not a digit. */
static bool parse_hex(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        int d = wsq_hexval((unsigned char)s[i]);
        if (d < 0)
            return false;
        v = v << 4 | (unsigned)d;
    }
    *out = v;
    return true;
}

/* An epoch: exactly 16 hex digits. */
static bool parse_hex64(const char *s, size_t n, uint64_t *out)
{
    return n == 16 && parse_hex(s, n, out);
}

/* Stores the compact JSON text of a string or integer ref into ref[WSQ_REF_MAX + 1]. */
static wsq_err dump_ref(const json_t *v, char *ref)
{
    if (!json_is_string(v) && !json_is_integer(v))
        return WSQ_ERR_BAD_TYPE;
    size_t n = json_dumpb(v, ref, WSQ_REF_MAX, JSON_COMPACT | JSON_ENCODE_ANY);
    if (n == 0 || n > WSQ_REF_MAX) {
        ref[0] = '\0';
        return WSQ_ERR_BAD_REQUEST;
    }
    ref[n] = '\0';
    return WSQ_OK;
}

/*
 * Reads integer member `name` of obj into *out. Absent: *present = false (or bad_request when
 * required). Not an integer: bad_type. Outside [min, max]: bad_request. label names the member in
 * messages ("from.seq").
 */
static wsq_err get_int(const json_t *obj, const char *name, const char *label, bool required,
                       int64_t min, int64_t max, bool *present, int64_t *out,
                       wsq_proto_error_t *perr)
{
    const json_t *v = json_object_get(obj, name);
    if (present != NULL)
        *present = v != NULL;
    if (v == NULL) {
        if (required)
            return set_err(perr, WSQ_ERR_BAD_REQUEST, "\"%s\" is required", label);
        return WSQ_OK;
    }
    if (!json_is_integer(v))
        return set_err(perr, WSQ_ERR_BAD_TYPE, "\"%s\" must be an integer", label);
    json_int_t x = json_integer_value(v);
    if (x < min || x > max)
        return set_err(perr, WSQ_ERR_BAD_REQUEST, "\"%s\" must be an integer in %lld..%lld", label,
                       (long long)min, (long long)max);
    *out = (int64_t)x;
    return WSQ_OK;
}

/* Reads string member `name`: NULL when absent (bad_request if required), bad_type if not a
 * string. */
static wsq_err get_str(const json_t *obj, const char *name, bool required, const json_t **out,
                       wsq_proto_error_t *perr)
{
    const json_t *v = json_object_get(obj, name);
    *out = NULL;
    if (v == NULL) {
        if (required)
            return set_err(perr, WSQ_ERR_BAD_REQUEST, "\"%s\" is required", name);
        return WSQ_OK;
    }
    if (!json_is_string(v))
        return set_err(perr, WSQ_ERR_BAD_TYPE, "\"%s\" must be a string", name);
    *out = v;
    return WSQ_OK;
}

/* "topic": a topic name, or with pattern (sub, unsub) also a topic pattern (f->pattern). */
static wsq_err get_topic_or(const json_t *root, bool pattern, wsq_frame_t *f,
                            wsq_proto_error_t *perr)
{
    const json_t *v;
    wsq_err e = get_str(root, "topic", true, &v, perr);
    if (e != WSQ_OK)
        return e;
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (!wsq_topic_valid(s, n)) {
        if (!pattern || !wsq_topic_pattern_valid(s, n))
            return set_err(perr, WSQ_ERR_BAD_TOPIC, "%s", wsq_strerror(WSQ_ERR_BAD_TOPIC));
        f->pattern = true;
    }
    memcpy(f->topic, s, n);
    f->topic[n] = '\0';
    f->topic_len = n;
    return WSQ_OK;
}

static wsq_err get_topic(const json_t *root, wsq_frame_t *f, wsq_proto_error_t *perr)
{
    return get_topic_or(root, false, f, perr);
}

/* ------------------------------------------------------------------------------------------- */
/* Client frame decoding, one function per op                                                   */

/* A "headers" object of strings -> a block in b (empty for an empty object), with its count and
 * bytes. On error *why says what is wrong and b is freed. */
static wsq_err headers_from_json(const json_t *obj, wsq_buf_t *b, uint32_t *count, size_t *bytes,
                                 const char **why)
{
    wsq_buf_init(b);
    *count = 0;
    *bytes = 0;
    if (!json_is_object(obj)) {
        *why = "\"headers\" must be an object of strings";
        return WSQ_ERR_BAD_TYPE;
    }
    /* (in the object's order; the key's length, not strlen: a key may hold an escaped NUL) */
    for (void *it = json_object_iter((json_t *)obj); it;
         it = json_object_iter_next((json_t *)obj, it)) {
        const json_t *v = json_object_iter_value(it);
        size_t kl = json_object_iter_key_len(it);
        wsq_err e = WSQ_ERR_BAD_TYPE;
        *why = "header values must be strings";
        if (json_is_string(v) &&
            (e = wsq_headers_add(b, json_object_iter_key(it), kl, json_string_value(v),
                                 json_string_length(v))) != WSQ_OK) {
            *why = e == WSQ_ERR_NOMEM                   ? "out of memory"
                   : kl == 0 || kl > WSQ_HEADER_KEY_MAX ? "a header key has 1 to 255 bytes"
                   : json_string_length(v) > WSQ_HEADER_VALUE_MAX
                       ? "a header value has at most 65535 bytes"
                       : "a header key must not hold control characters";
            e = e == WSQ_ERR_NOMEM ? e : WSQ_ERR_BAD_REQUEST;
        }
        if (e != WSQ_OK) {
            wsq_buf_fini(b);
            return e;
        }
        (*count)++;
        *bytes += kl + json_string_length(v);
    }
    return WSQ_OK;
}

/* "headers" of a pub, kept as a block. Its limits (count, bytes) are the broker's configuration:
 * f->n_headers and f->header_bytes tell. */
static wsq_err dec_headers(const json_t *root, wsq_frame_t *f, wsq_proto_error_t *perr)
{
    const json_t *obj = json_object_get(root, "headers");
    if (obj == NULL)
        return WSQ_OK;
    wsq_buf_t b;
    const char *why;
    wsq_err e = headers_from_json(obj, &b, &f->n_headers, &f->header_bytes, &why);
    if (e != WSQ_OK)
        return set_err(perr, e, "%s", why);
    f->headers = b.data; /* the frame owns it now (NULL for {}) */
    f->headers_len = b.len;
    return WSQ_OK;
}

static wsq_err dec_pub(const json_t *root, size_t max_payload, wsq_frame_t *f,
                       wsq_proto_error_t *perr)
{
    const json_t *data, *enc;
    wsq_err e = get_topic(root, f, perr);
    if (e == WSQ_OK)
        e = get_str(root, "data", true, &data, perr);
    if (e == WSQ_OK)
        e = get_str(root, "enc", false, &enc, perr);
    if (e != WSQ_OK)
        return e;
    if (enc != NULL && !str_is(enc, "base64") && !str_is(enc, "text"))
        return set_err(perr, WSQ_ERR_BAD_REQUEST, "\"enc\" must be \"base64\" or \"text\"");

    const char *s = json_string_value(data);
    size_t n = json_string_length(data);
    if (enc != NULL && str_is(enc, "base64")) {
        if (n % 4 != 0)
            return set_err(perr, WSQ_ERR_BAD_REQUEST, "\"data\" is not valid base64");
        size_t dlen = wsq_base64_dec_len(s, n);
        if (dlen > max_payload)
            return set_err(perr, WSQ_ERR_TOO_LARGE, "payload of %zu bytes exceeds %zu", dlen,
                           max_payload);
        f->data = malloc(dlen + 1);
        if (f->data == NULL)
            return set_err(perr, WSQ_ERR_NOMEM, "out of memory");
        if (wsq_base64_decode(s, n, f->data, &f->data_len) != WSQ_OK)
            return set_err(perr, WSQ_ERR_BAD_REQUEST, "\"data\" is not valid base64");
        f->binary = true;
    } else {
        /* jansson only yields valid UTF-8 (lone surrogate escapes are rejected), NULs allowed. */
        if (n > max_payload)
            return set_err(perr, WSQ_ERR_TOO_LARGE, "payload of %zu bytes exceeds %zu", n,
                           max_payload);
        f->data = malloc(n + 1);
        if (f->data == NULL)
            return set_err(perr, WSQ_ERR_NOMEM, "out of memory");
        memcpy(f->data, s, n);
        f->data_len = n;
    }
    f->data[f->data_len] = '\0'; /* convenience only; the payload may hold NULs */
    const json_t *id;
    if ((e = get_str(root, "id", false, &id, perr)) != WSQ_OK)
        return e;
    if (id != NULL) {
        size_t il = json_string_length(id);
        if (il == 0 || il > 128 || memchr(json_string_value(id), '\0', il) != NULL)
            return set_err(perr, WSQ_ERR_BAD_REQUEST, "\"id\" has 1 to 128 bytes, no NUL");
        if ((f->id = malloc(il + 1)) == NULL)
            return set_err(perr, WSQ_ERR_NOMEM, "out of memory");
        memcpy(f->id, json_string_value(id), il + 1);
        f->id_len = il;
    }
    return dec_headers(root, f, perr);
}

static wsq_err dec_from(const json_t *root, wsq_frame_t *f, wsq_proto_error_t *perr)
{
    const json_t *v = json_object_get(root, "from");
    if (v == NULL)
        return WSQ_OK;
    if (json_is_string(v)) {
        if (str_is(v, "resume"))
            f->from = WSQ_FROM_RESUME;
        else if (str_is(v, "earliest"))
            f->from = WSQ_FROM_EARLIEST;
        else if (str_is(v, "latest"))
            f->from = WSQ_FROM_LATEST;
        else
            return set_err(perr, WSQ_ERR_BAD_REQUEST,
                           "\"from\" must be \"resume\", \"earliest\", \"latest\", "
                           "{\"seq\":N} or {\"time\":MS}");
        return WSQ_OK;
    }
    if (!json_is_object(v))
        return set_err(perr, WSQ_ERR_BAD_TYPE, "\"from\" must be a string or an object");
    bool has_seq, has_time;
    int64_t seq = 0, ms = 0;
    wsq_err e = get_int(v, "seq", "from.seq", false, 1, INT64_MAX, &has_seq, &seq, perr);
    if (e == WSQ_OK)
        e = get_int(v, "time", "from.time", false, 0, INT64_MAX, &has_time, &ms, perr);
    if (e != WSQ_OK)
        return e;
    if (has_seq == has_time)
        return set_err(perr, WSQ_ERR_BAD_REQUEST,
                       "\"from\" object needs exactly one of \"seq\" or \"time\"");
    if (has_seq) {
        f->from = WSQ_FROM_SEQ;
        f->from_seq = (uint64_t)seq;
    } else {
        f->from = WSQ_FROM_TIME;
        f->from_time = ms;
    }
    return WSQ_OK;
}

static wsq_err dec_sub(const json_t *root, wsq_frame_t *f, wsq_proto_error_t *perr)
{
    const json_t *consumer, *epoch;
    int64_t window = 0;
    wsq_err e = get_topic_or(root, true, f, perr);
    if (e == WSQ_OK)
        e = get_str(root, "consumer", false, &consumer, perr);
    if (e != WSQ_OK)
        return e;
    if (consumer != NULL) {
        size_t n = json_string_length(consumer);
        if (!wsq_consumer_valid(json_string_value(consumer), n))
            return set_err(perr, WSQ_ERR_BAD_REQUEST,
                           "\"consumer\" must be 1..128 characters of [A-Za-z0-9._-]");
        memcpy(f->consumer, json_string_value(consumer), n);
        f->consumer[n] = '\0';
        f->consumer_len = n;
    }
    e = dec_from(root, f, perr);
    if (e == WSQ_OK)
        e = get_int(root, "window", "window", false, 1, WINDOW_MAX, NULL, &window, perr);
    if (e == WSQ_OK)
        e = get_str(root, "epoch", false, &epoch, perr);
    if (e != WSQ_OK)
        return e;
    f->window = (uint32_t)window;
    const json_t *shared = json_object_get(root, "shared");
    if (shared != NULL) {
        if (!json_is_boolean(shared))
            return set_err(perr, WSQ_ERR_BAD_TYPE, "\"shared\" must be true or false");
        f->shared = json_is_true(shared);
        if (f->shared && consumer == NULL)
            return set_err(perr, WSQ_ERR_BAD_REQUEST,
                           "\"shared\": true needs a \"consumer\" name (the consumer to share)");
    }
    if (epoch != NULL) {
        if (!parse_hex64(json_string_value(epoch), json_string_length(epoch), &f->epoch))
            return set_err(perr, WSQ_ERR_BAD_REQUEST, "\"epoch\" must be 16 hex digits");
        f->has_epoch = true;
    }
    return WSQ_OK;
}

static wsq_err dec_ack(const json_t *root, wsq_frame_t *f, wsq_proto_error_t *perr)
{
    int64_t seq = 0, upto = 0;
    wsq_err e = get_topic(root, f, perr);
    if (e == WSQ_OK)
        e = get_int(root, "seq", "seq", false, 1, INT64_MAX, &f->has_seq, &seq, perr);
    if (e == WSQ_OK)
        e = get_int(root, "upto", "upto", false, 0, INT64_MAX, &f->has_upto, &upto, perr);
    if (e != WSQ_OK)
        return e;
    if (f->has_seq == f->has_upto)
        return set_err(perr, WSQ_ERR_BAD_REQUEST, "ack needs exactly one of \"seq\" or \"upto\"");
    f->seq = (uint64_t)seq;
    f->upto = (uint64_t)upto;
    return WSQ_OK;
}

static wsq_err dec_nack(const json_t *root, wsq_frame_t *f, wsq_proto_error_t *perr)
{
    int64_t seq = 0;
    wsq_err e = get_topic(root, f, perr);
    if (e == WSQ_OK)
        e = get_int(root, "seq", "seq", true, 1, INT64_MAX, &f->has_seq, &seq, perr);
    if (e == WSQ_OK)
        e = get_int(root, "delay", "delay", false, 0, NACK_DELAY_MAX, NULL, &f->delay_ms, perr);
    f->seq = (uint64_t)seq;
    const json_t *term = json_object_get(root, "term");
    if (e == WSQ_OK && term != NULL) {
        if (!json_is_boolean(term))
            return set_err(perr, WSQ_ERR_BAD_TYPE, "\"term\" must be true or false");
        f->term = json_is_true(term);
        if (f->term && json_object_get(root, "delay") != NULL)
            return set_err(perr, WSQ_ERR_BAD_REQUEST,
                           "\"term\" gives the message up: it takes no \"delay\"");
    }
    return e;
}

static wsq_err dec_auth(const json_t *root, wsq_frame_t *f, wsq_proto_error_t *perr)
{
    const json_t *tok;
    wsq_err e = get_str(root, "token", true, &tok, perr);
    if (e != WSQ_OK)
        return e;
    size_t n = json_string_length(tok);
    /* The token is handed on as a C string, so an embedded NUL could only truncate it. */
    if (n == 0 || n > WSQ_TOKEN_MAX || memchr(json_string_value(tok), '\0', n) != NULL)
        return set_err(perr, WSQ_ERR_BAD_REQUEST, "\"token\" must be 1..%d bytes, no NUL",
                       WSQ_TOKEN_MAX);
    f->token = malloc(n + 1);
    if (f->token == NULL)
        return set_err(perr, WSQ_ERR_NOMEM, "out of memory");
    memcpy(f->token, json_string_value(tok), n + 1);
    return WSQ_OK;
}

static const struct {
    const char *name;
    wsq_op_t op;
} client_ops[] = {
    {"pub", WSQ_OP_PUB},   {"sub", WSQ_OP_SUB},   {"unsub", WSQ_OP_UNSUB}, {"ack", WSQ_OP_ACK},
    {"nack", WSQ_OP_NACK}, {"ping", WSQ_OP_PING}, {"auth", WSQ_OP_AUTH},
};

static size_t sat_add(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

/* ------------------------------------------------------------------------------------------- */
/* The pub and ack fast path.
 *
 * Publishing is the hot path (hundreds of thousands of frames per second on one service
 * thread), and building a jansson tree per frame costs ~5 us; so are the acks of a work queue,
 * one per message. fast_pub decodes the common shapes directly: a flat object whose members are
 * exactly op ("pub"), topic, data and optionally ref and enc, or op ("ack"), topic, seq and
 * optionally ref, in any order. It succeeds only on frames it understands completely and then
 * yields exactly what the full decoder would; everything else - other ops, unknown members,
 * duplicates, escapes outside data, any malformation - goes to the jansson path, which therefore
 * decides every error and its message. */

typedef struct {
    const unsigned char *s; /* raw bytes between the quotes (or the integer's digits) */
    size_t n;
    bool esc;     /* contains backslash escapes */
    bool present; /* seen */
    bool is_int;  /* ref given as an integer */
} fp_val_t;

static const unsigned char *fp_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Scans a string starting after its opening quote; *after points past the closing quote. */
static bool fp_string(const unsigned char *p, const unsigned char *end, fp_val_t *v,
                      const unsigned char **after)
{
    v->s = p;
    v->esc = false;
    while (p < end) {
        p += wsq__plain_run(p, (size_t)(end - p)); /* to the next byte to look at */
        if (p >= end)
            break;
        unsigned char c = *p;
        if (c == '"') {
            v->n = (size_t)(p - v->s);
            *after = p + 1;
            return true;
        }
        if (c < 0x20)
            return false;
        if (c == '\\') {
            v->esc = true;
            p += 2;
            continue;
        }
        p++;
    }
    return false;
}

/* The code unit of a \uXXXX escape's four digits at p, or -1. */
static int fp_hex4(const unsigned char *p)
{
    uint64_t v;
    return parse_hex((const char *)p, 4, &v) ? (int)v : -1;
}

/* Decodes a JSON string body with escapes into out (room for n bytes: decoding never grows). */
static bool fp_unescape(const unsigned char *s, size_t n, unsigned char *out, size_t *outlen)
{
    const unsigned char *end = s + n;
    unsigned char *o = out;
    while (s < end) {
        if (*s != '\\') {
            *o++ = *s++;
            continue;
        }
        if (s + 1 >= end)
            return false;
        unsigned char e = s[1];
        s += 2;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            *o++ = e;
            break;
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u': {
            if (end - s < 4)
                return false;
            int cp = fp_hex4(s);
            if (cp < 0)
                return false;
            s += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return false; /* lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - s < 6 || s[0] != '\\' || s[1] != 'u')
                    return false;
                int lo = fp_hex4(s + 2);
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return false;
                s += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp < 0x80) {
                *o++ = (unsigned char)cp;
            } else if (cp < 0x800) {
                *o++ = (unsigned char)(0xC0 | cp >> 6);
                *o++ = (unsigned char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                *o++ = (unsigned char)(0xE0 | cp >> 12);
                *o++ = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
                *o++ = (unsigned char)(0x80 | (cp & 0x3F));
            } else {
                *o++ = (unsigned char)(0xF0 | cp >> 18);
                *o++ = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
                *o++ = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
                *o++ = (unsigned char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            return false;
        }
    }
    *outlen = (size_t)(o - out);
    return true;
}

static bool fp_is(const fp_val_t *v, const char *lit)
{
    size_t n = strlen(lit);
    return v->present && !v->esc && v->n == n && memcmp(v->s, lit, n) == 0;
}

/* The frame's ref as the full decoder keeps it (its JSON text). */
static void fast_ref(const fp_val_t *ref, wsq_frame_t *f)
{
    if (!ref->present)
        return;
    size_t o = 0;
    if (!ref->is_int)
        f->ref[o++] = '"';
    memcpy(f->ref + o, ref->s, ref->n);
    o += ref->n;
    if (!ref->is_int)
        f->ref[o++] = '"';
    f->ref[o] = '\0';
}

static bool fast_ref_ok(const fp_val_t *ref)
{
    return !ref->present || ((ref->is_int ? ref->n : ref->n + 2) <= WSQ_REF_MAX &&
                             (ref->is_int || wsq_utf8_valid(ref->s, ref->n)));
}

/* {"op":"ack","topic":T,"seq":N[,"ref":R]} (checked by fast_pub's scan) into f. */
static bool fast_ack(const fp_val_t *topic, const fp_val_t *seq, const fp_val_t *ref,
                     wsq_frame_t *f)
{
    if (topic->n > WSQ_TOPIC_MAX || !wsq_topic_valid((const char *)topic->s, topic->n) ||
        !fast_ref_ok(ref))
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i < seq->n; i++)
        n = n * 10 + (uint64_t)(seq->s[i] - '0');
    f->op = WSQ_OP_ACK;
    memcpy(f->topic, topic->s, topic->n);
    f->topic[topic->n] = '\0';
    f->topic_len = topic->n;
    f->has_seq = true;
    f->seq = n;
    fast_ref(ref, f);
    return true;
}

static bool fast_pub(const unsigned char *p, size_t len, size_t max_payload, wsq_frame_t *f)
{
    const unsigned char *end = p + len;
    fp_val_t op = {0}, topic = {0}, data = {0}, enc = {0}, ref = {0}, seq = {0};
    p = fp_ws(p, end);
    if (p >= end || *p != '{')
        return false;
    p++;
    for (;;) {
        p = fp_ws(p, end);
        if (p >= end || *p != '"')
            return false;
        fp_val_t key;
        if (!fp_string(p + 1, end, &key, &p) || key.esc)
            return false;
        fp_val_t *v = key.n == 2 && memcmp(key.s, "op", 2) == 0      ? &op
                      : key.n == 5 && memcmp(key.s, "topic", 5) == 0 ? &topic
                      : key.n == 4 && memcmp(key.s, "data", 4) == 0  ? &data
                      : key.n == 3 && memcmp(key.s, "enc", 3) == 0   ? &enc
                      : key.n == 3 && memcmp(key.s, "ref", 3) == 0   ? &ref
                      : key.n == 3 && memcmp(key.s, "seq", 3) == 0   ? &seq
                                                                     : NULL;
        if (v == NULL || v->present)
            return false; /* unknown or duplicate member: the full decoder decides */
        p = fp_ws(p, end);
        if (p >= end || *p != ':')
            return false;
        p = fp_ws(p + 1, end);
        if (p >= end)
            return false;
        if (*p == '"') {
            if (!fp_string(p + 1, end, v, &p))
                return false;
        } else if (v == &seq && *p >= '1' && *p <= '9') {
            /* a seq: 1 to 18 digits, no leading zero (within jansson's and the full
             * decoder's range), followed by no fraction or exponent */
            const unsigned char *q = p;
            while (q < end && *q >= '0' && *q <= '9')
                q++;
            if (q - p > 18 || (q < end && (*q == '.' || *q == 'e' || *q == 'E')))
                return false;
            v->s = p;
            v->n = (size_t)(q - p);
            v->is_int = true;
            p = q;
        } else if (v == &ref && (*p == '-' || (*p >= '0' && *p <= '9'))) {
            /* an integer ref: at most 18 digits, no leading zero, not -0 (canonical as jansson
             * prints it) */
            const unsigned char *q = p + (*p == '-');
            const unsigned char *d = q;
            while (q < end && *q >= '0' && *q <= '9')
                q++;
            size_t nd = (size_t)(q - d);
            if (nd == 0 || nd > 18 || (nd > 1 && *d == '0') || (*p == '-' && nd == 1 && *d == '0'))
                return false;
            if (q < end && (*q == '.' || *q == 'e' || *q == 'E'))
                return false;
            v->s = p;
            v->n = (size_t)(q - p);
            v->is_int = true;
            p = q;
        } else {
            return false;
        }
        v->present = true;
        p = fp_ws(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}') {
            p++;
            break;
        }
        return false;
    }
    if (fp_ws(p, end) != end || !topic.present || topic.esc || (ref.present && ref.esc))
        return false;
    if (fp_is(&op, "ack"))
        return !data.present && !enc.present && seq.present && seq.is_int &&
               fast_ack(&topic, &seq, &ref, f);
    if (!fp_is(&op, "pub") || !data.present || seq.present)
        return false;
    bool binary = false;
    if (enc.present) {
        if (fp_is(&enc, "base64"))
            binary = true;
        else if (!fp_is(&enc, "text"))
            return false;
    }
    if (topic.n > WSQ_TOPIC_MAX || !wsq_topic_valid((const char *)topic.s, topic.n))
        return false;
    if (!fast_ref_ok(&ref))
        return false;
    if (!wsq_utf8_valid(data.s, data.n))
        return false;

    unsigned char *buf;
    size_t dlen;
    if (binary) {
        if (data.esc || data.n % 4 != 0)
            return false;
        if (wsq_base64_dec_len((const char *)data.s, data.n) > max_payload)
            return false;
        buf = malloc(data.n / 4 * 3 + 1);
        if (buf == NULL)
            return false;
        if (wsq_base64_decode((const char *)data.s, data.n, buf, &dlen) != WSQ_OK) {
            free(buf);
            return false;
        }
    } else {
        buf = malloc(data.n + 1);
        if (buf == NULL)
            return false;
        if (data.esc) {
            if (!fp_unescape(data.s, data.n, buf, &dlen)) {
                free(buf);
                return false;
            }
        } else {
            memcpy(buf, data.s, data.n);
            dlen = data.n;
        }
        if (dlen > max_payload) {
            free(buf);
            return false;
        }
    }
    buf[dlen] = '\0';
    f->op = WSQ_OP_PUB;
    memcpy(f->topic, topic.s, topic.n);
    f->topic[topic.n] = '\0';
    f->topic_len = topic.n;
    fast_ref(&ref, f);
    f->data = buf;
    f->data_len = dlen;
    f->binary = binary;
    return true;
}

/* A work queue sends one ack per message, and clients serialize it the same way every time:
 * {"op":"ack","topic":"T","seq":N} exactly, with no space. That shape is matched as bytes, at
 * a third of fast_pub's cost; anything else, even a reordering, goes on to fast_pub. */
static bool canonical_ack(const unsigned char *p, size_t len, wsq_frame_t *f)
{
    static const char pre[] = "{\"op\":\"ack\",\"topic\":\"", mid[] = "\",\"seq\":";
    const unsigned char *end = p + len;
    if (len < sizeof(pre) - 1 + sizeof(mid) - 1 + 2 || memcmp(p, pre, sizeof(pre) - 1) != 0)
        return false;
    fp_val_t topic = {.s = p + sizeof(pre) - 1, .present = true}, ref = {0};
    const unsigned char *q = memchr(topic.s, '"', (size_t)(end - topic.s));
    if (q == NULL || (size_t)(end - q) < sizeof(mid) - 1 + 2 ||
        memcmp(q, mid, sizeof(mid) - 1) != 0)
        return false;
    topic.n = (size_t)(q - topic.s);
    fp_val_t seq = {.s = q + sizeof(mid) - 1, .present = true, .is_int = true};
    if (*seq.s < '1' || *seq.s > '9')
        return false;
    const unsigned char *d = seq.s;
    while (d < end && *d >= '0' && *d <= '9')
        d++;
    seq.n = (size_t)(d - seq.s);
    /* (a topic with a backslash or a control byte is not a valid name: fast_ack refuses it) */
    return seq.n <= 18 && d == end - 1 && *d == '}' && fast_ack(&topic, &seq, &ref, f);
}

/* f and perr are outputs: both are overwritten (clear a previous frame first). */
wsq_err wsq_proto_decode(const void *json, size_t len, size_t max_payload, wsq_frame_t *f,
                         wsq_proto_error_t *perr)
{
    wsq_frame_init(f);
    perr->code = WSQ_OK;
    perr->message[0] = perr->ref[0] = '\0';
    size_t cap = sat_add(max_payload > SIZE_MAX / 6 ? SIZE_MAX : max_payload * 6, FRAME_SLACK);
    if (json != NULL && len <= cap &&
        (canonical_ack(json, len, f) || fast_pub(json, len, max_payload, f)))
        return WSQ_OK;
    return wsq__proto_decode_full(json, len, max_payload, f, perr);
}

/* The complete decoder (jansson): every frame the fast path declines, and every error. */
wsq_err wsq__proto_decode_full(const void *json, size_t len, size_t max_payload, wsq_frame_t *f,
                               wsq_proto_error_t *perr)
{
    wsq_frame_init(f);
    memset(perr, 0, sizeof *perr);
    json_t *root = NULL;
    wsq_err e;
    size_t cap = sat_add(max_payload > SIZE_MAX / 6 ? SIZE_MAX : max_payload * 6, FRAME_SLACK);
    if (len > cap) {
        e = set_err(perr, WSQ_ERR_TOO_LARGE, "frame of %zu bytes is too large", len);
        goto fail;
    }
    json_error_t jerr;
    root = json_loadb(json != NULL ? json : "", json != NULL ? len : 0, JSON_FLAGS, &jerr);
    if (root == NULL) {
        e = set_err(perr, WSQ_ERR_BAD_JSON, "invalid JSON at line %d column %d: %s", jerr.line,
                    jerr.column, jerr.text);
        goto fail;
    }
    if (!json_is_object(root)) {
        e = set_err(perr, WSQ_ERR_BAD_REQUEST, "a frame must be a JSON object");
        goto fail;
    }

    /* The ref first, so that every later error can be echoed with it. */
    const json_t *ref = json_object_get(root, "ref");
    if (ref != NULL) {
        e = dump_ref(ref, perr->ref);
        if (e == WSQ_ERR_BAD_TYPE) {
            set_err(perr, e, "\"ref\" must be a string or an integer");
            goto fail;
        }
        if (e != WSQ_OK) {
            set_err(perr, e, "\"ref\" is longer than %d bytes of JSON", WSQ_REF_MAX);
            goto fail;
        }
    }

    const json_t *op = json_object_get(root, "op");
    if (op == NULL) {
        e = set_err(perr, WSQ_ERR_BAD_REQUEST, "\"op\" is required");
        goto fail;
    }
    if (!json_is_string(op)) { /* like every member: a wrong type is bad_type */
        e = set_err(perr, WSQ_ERR_BAD_TYPE, "\"op\" must be a string");
        goto fail;
    }
    f->op = 0;
    for (size_t i = 0; i < sizeof client_ops / sizeof client_ops[0]; i++) {
        if (str_is(op, client_ops[i].name)) {
            f->op = client_ops[i].op;
            break;
        }
    }
    switch (f->op) {
    case WSQ_OP_PUB:
        e = dec_pub(root, max_payload, f, perr);
        break;
    case WSQ_OP_SUB:
        e = dec_sub(root, f, perr);
        break;
    case WSQ_OP_UNSUB:
        e = get_topic_or(root, true, f, perr);
        break;
    case WSQ_OP_ACK:
        e = dec_ack(root, f, perr);
        break;
    case WSQ_OP_NACK:
        e = dec_nack(root, f, perr);
        break;
    case WSQ_OP_PING:
        e = WSQ_OK;
        break;
    case WSQ_OP_AUTH:
        e = dec_auth(root, f, perr);
        break;
    default: {
        size_t n = json_string_length(op);
        e = set_err(perr, WSQ_ERR_UNKNOWN_OP, "unknown op \"%.*s\"%s", (int)(n > 32 ? 32 : n),
                    json_string_value(op), n > 32 ? "..." : "");
        break;
    }
    }
    if (e != WSQ_OK)
        goto fail;
    memcpy(f->ref, perr->ref, strlen(perr->ref) + 1);
    json_decref(root);
    return WSQ_OK;

fail:
    json_decref(root);
    wsq_frame_clear(f);
    return e;
}

/* ------------------------------------------------------------------------------------------- */
/* Hand-written encoders                                                                        */

/*
 * An append cursor that remembers where the frame started and the first error: the encoders
 * write straight-line code, and on failure the buffer is rolled back to its previous length, so
 * out never holds half a frame.
 */
typedef struct {
    wsq_buf_t *b;
    size_t start; /* b->len before this frame */
    wsq_err e;    /* first error; later writes are skipped */
} enc_t;

static enc_t enc_begin(wsq_buf_t *b)
{
    enc_t w = {b, b->len, WSQ_OK};
    return w;
}

static wsq_err enc_end(enc_t *w)
{
    if (w->e != WSQ_OK)
        w->b->len = w->start;
    return w->e;
}

static inline unsigned char *room(enc_t *w, size_t n)
{
    if (w->e != WSQ_OK)
        return NULL;
    if (w->b->cap - w->b->len < n && (w->e = wsq_buf_reserve(w->b, n)) != WSQ_OK)
        return NULL;
    return w->b->data + w->b->len;
}

static inline void put(enc_t *w, const void *p, size_t n)
{
    unsigned char *d = room(w, n);
    if (d != NULL) {
        memcpy(d, p, n);
        w->b->len += n;
    }
}

#define PUT_LIT(w, s) put((w), (s), sizeof(s) - 1)

static const char digits2[201] = "00010203040506070809"
                                 "10111213141516171819"
                                 "20212223242526272829"
                                 "30313233343536373839"
                                 "40414243444546474849"
                                 "50515253545556575859"
                                 "60616263646566676869"
                                 "70717273747576777879"
                                 "80818283848586878889"
                                 "90919293949596979899";

/* Writes the digits straight into the buffer, last pair first. The 64-bit value is cut into
 * 8-digit chunks so that most of the divisions are the cheaper 32-bit ones. */
static void put_u64(enc_t *w, uint64_t v)
{
    unsigned n = 1;
    for (uint64_t p = 10; n < 20 && v >= p; p *= 10) /* p wraps only once n is 20 */
        n++;
    unsigned char *d = room(w, n);
    if (d == NULL)
        return;
    w->b->len += n;
    d += n;
    while (v >= 100000000) {
        uint32_t lo = (uint32_t)(v % 100000000);
        v /= 100000000;
        for (int k = 0; k < 4; k++) {
            d -= 2;
            memcpy(d, digits2 + 2 * (lo % 100), 2);
            lo /= 100;
        }
    }
    uint32_t x = (uint32_t)v;
    while (x >= 100) {
        d -= 2;
        memcpy(d, digits2 + 2 * (x % 100), 2);
        x /= 100;
    }
    if (x >= 10)
        memcpy(d - 2, digits2 + 2 * x, 2);
    else
        d[-1] = (unsigned char)('0' + x);
}

static void put_i64(enc_t *w, int64_t v)
{
    if (v < 0) {
        PUT_LIT(w, "-");
        put_u64(w, (uint64_t)0 - (uint64_t)v); /* well-defined for INT64_MIN too */
    } else {
        put_u64(w, (uint64_t)v);
    }
}

static void put_bool(enc_t *w, bool v)
{
    if (v)
        PUT_LIT(w, "true");
    else
        PUT_LIT(w, "false");
}

/* A quoted, escaped JSON string. */
static void put_str(enc_t *w, const char *s, size_t n)
{
    if (room(w, n + 2) == NULL)
        return;
    w->b->data[w->b->len++] = '"';
    if ((w->e = wsq_json_escape(w->b, s, n)) != WSQ_OK)
        return;
    PUT_LIT(w, "\"");
}

static void put_hex16(enc_t *w, uint64_t v)
{
    static const char hex[16] = "0123456789abcdef";
    char tmp[18];
    tmp[0] = tmp[17] = '"';
    for (int i = 0; i < 16; i++)
        tmp[1 + i] = hex[(v >> (60 - 4 * i)) & 15];
    put(w, tmp, sizeof tmp);
}

/* A binary payload: the "data" value as quoted base64, then ,"enc":"base64". len <= SIZE_MAX / 2
 * (the caller checks), so the encoded length cannot overflow. */
static void put_b64_data(enc_t *w, const void *data, size_t len)
{
    size_t body = wsq_base64_enc_len(len);
    unsigned char *d = room(w, body + 2);
    if (d != NULL) {
        d[0] = '"';
        wsq_base64_encode(data, len, (char *)d + 1);
        d[body + 1] = '"';
        w->b->len += body + 2;
    }
    PUT_LIT(w, ",\"enc\":\"base64\"");
}

/* ,"ref":R when ref is given (JSON text, written verbatim). */
static void put_ref(enc_t *w, const char *ref)
{
    if (ref != NULL && ref[0] != '\0') {
        PUT_LIT(w, ",\"ref\":");
        put(w, ref, strlen(ref));
    }
}

static bool topic_arg_ok(const char *topic, size_t topic_len)
{
    return topic != NULL && topic_len > 0 && topic_len <= WSQ_TOPIC_MAX;
}

wsq_err wsq_proto_enc_ok(wsq_buf_t *out, const char *ref, const char *topic, size_t topic_len,
                         uint64_t seq, bool has_seq, bool dup)
{
    if (topic_len > WSQ_TOPIC_MAX)
        return WSQ_ERR_INVAL;
    enc_t w = enc_begin(out);
    PUT_LIT(&w, "{\"op\":\"ok\"");
    put_ref(&w, ref);
    if (topic != NULL && topic_len > 0) {
        PUT_LIT(&w, ",\"topic\":");
        put_str(&w, topic, topic_len);
    }
    if (has_seq) {
        PUT_LIT(&w, ",\"seq\":");
        put_u64(&w, seq);
    }
    if (dup)
        PUT_LIT(&w, ",\"dup\":true");
    PUT_LIT(&w, "}");
    return enc_end(&w);
}

wsq_err wsq_proto_enc_err(wsq_buf_t *out, const char *ref, wsq_err code, const char *message)
{
    enc_t w = enc_begin(out);
    PUT_LIT(&w, "{\"op\":\"err\"");
    put_ref(&w, ref);
    PUT_LIT(&w, ",\"code\":");
    const char *name = wsq_errname(code);
    put_str(&w, name, strlen(name));
    PUT_LIT(&w, ",\"message\":");
    if (message == NULL)
        message = wsq_strerror(code);
    size_t mark = out->len;
    put_str(&w, message, strlen(message));
    if (w.e == WSQ_ERR_BAD_UTF8) {
        /* The message is ours, but it may quote something; never emit an invalid text frame. */
        out->len = mark;
        w.e = WSQ_OK;
        message = wsq_strerror(code);
        put_str(&w, message, strlen(message));
    }
    PUT_LIT(&w, "}");
    return enc_end(&w);
}

wsq_err wsq_proto_enc_pong(wsq_buf_t *out, const char *ref)
{
    enc_t w = enc_begin(out);
    PUT_LIT(&w, "{\"op\":\"pong\"");
    put_ref(&w, ref);
    PUT_LIT(&w, "}");
    return enc_end(&w);
}

wsq_err wsq_proto_enc_subscribed(wsq_buf_t *out, const char *ref, const wsq_subscribed_t *s)
{
    if (!topic_arg_ok(s->topic, s->topic_len))
        return WSQ_ERR_INVAL;
    enc_t w = enc_begin(out);
    PUT_LIT(&w, "{\"op\":\"subscribed\"");
    put_ref(&w, ref);
    PUT_LIT(&w, ",\"topic\":");
    put_str(&w, s->topic, s->topic_len);
    if (s->consumer != NULL && s->consumer[0] != '\0') {
        PUT_LIT(&w, ",\"consumer\":");
        put_str(&w, s->consumer, strlen(s->consumer));
    }
    if (s->pattern) { /* a pattern has no one topic's positions: how many topics it matched */
        PUT_LIT(&w, ",\"pattern\":true,\"topics\":");
        put_u64(&w, s->topics);
    } else {
        PUT_LIT(&w, ",\"epoch\":");
        put_hex16(&w, s->epoch);
        PUT_LIT(&w, ",\"first_seq\":");
        put_u64(&w, s->first_seq);
        PUT_LIT(&w, ",\"next_seq\":");
        put_u64(&w, s->next_seq);
        PUT_LIT(&w, ",\"start_seq\":");
        put_u64(&w, s->start_seq);
    }
    PUT_LIT(&w, ",\"window\":");
    put_u64(&w, s->window);
    PUT_LIT(&w, ",\"resumed\":");
    put_bool(&w, s->resumed);
    if (s->shared)
        PUT_LIT(&w, ",\"shared\":true");
    PUT_LIT(&w, "}");
    return enc_end(&w);
}

/* The hot path: one reservation up front covers the whole frame unless the text payload needs
 * escapes, so each append below is a capacity compare and a memcpy. */
wsq_err wsq_headers_json(wsq_buf_t *out, const void *block, size_t len)
{
    enc_t w = enc_begin(out);
    size_t off = 0;
    wsq_header_t h;
    PUT_LIT(&w, "{");
    for (bool first = true; wsq_headers_next(block, len, &off, &h); first = false) {
        if (!first)
            PUT_LIT(&w, ",");
        put_str(&w, h.key, h.key_len);
        PUT_LIT(&w, ":");
        put_str(&w, h.value, h.value_len);
    }
    PUT_LIT(&w, "}");
    return enc_end(&w);
}

/* ,"headers":{...} of a block. */
static void put_headers(enc_t *w, const void *headers, size_t headers_len)
{
    PUT_LIT(w, ",\"headers\":");
    if (w->e == WSQ_OK)
        w->e = wsq_headers_json(w->b, headers, headers_len);
}

static wsq_err enc_msg(wsq_buf_t *out, const char *topic, size_t topic_len, uint64_t seq,
                       int64_t ts_ms, const void *data, size_t len, bool binary,
                       uint32_t deliveries, bool always_deliveries, const void *headers,
                       size_t headers_len)
{
    if (!topic_arg_ok(topic, topic_len) || (data == NULL && len > 0) ||
        (binary && len > SIZE_MAX / 2) || (headers == NULL && headers_len > 0))
        return WSQ_ERR_INVAL;
    size_t body = binary ? wsq_base64_enc_len(len) : len;
    enc_t w = enc_begin(out);
    /* fixed text 80 bytes, three numbers of at most 20 digits each, the topic unescaped; the
     * headers' text, unescaped, is at most 2 bytes a byte of the block, plus 14 */
    if (room(&w, sat_add(sat_add(160 + topic_len, body), headers_len ? 2 * headers_len + 14 : 0)) ==
        NULL)
        return enc_end(&w);
    PUT_LIT(&w, "{\"op\":\"msg\",\"topic\":");
    put_str(&w, topic, topic_len);
    PUT_LIT(&w, ",\"seq\":");
    put_u64(&w, seq);
    PUT_LIT(&w, ",\"ts\":");
    put_i64(&w, ts_ms);
    PUT_LIT(&w, ",\"data\":");
    if (binary) {
        put_b64_data(&w, data, len);
    } else {
        put_str(&w, data, len);
    }
    if (headers_len)
        put_headers(&w, headers, headers_len);
    if (deliveries > 1 || always_deliveries) {
        PUT_LIT(&w, ",\"deliveries\":");
        put_u64(&w, deliveries);
    }
    PUT_LIT(&w, "}");
    return enc_end(&w);
}

wsq_err wsq_proto_enc_msg(wsq_buf_t *out, const char *topic, size_t topic_len, uint64_t seq,
                          int64_t ts_ms, const void *data, size_t len, bool binary,
                          uint32_t deliveries, const void *headers, size_t headers_len)
{
    return enc_msg(out, topic, topic_len, seq, ts_ms, data, len, binary, deliveries, false, headers,
                   headers_len);
}

wsq_err wsq_proto_enc_leased(wsq_buf_t *out, const char *topic, size_t topic_len, uint64_t seq,
                             int64_t ts_ms, const void *data, size_t len, bool binary,
                             uint32_t deliveries, const void *headers, size_t headers_len)
{
    return enc_msg(out, topic, topic_len, seq, ts_ms, data, len, binary, deliveries, true, headers,
                   headers_len);
}

wsq_err wsq_proto_enc_dead(wsq_buf_t *out, const char *topic, size_t topic_len, uint64_t seq,
                           const char *dead_topic, size_t dead_topic_len, uint64_t dead_seq)
{
    if (!topic_arg_ok(topic, topic_len) || !topic_arg_ok(dead_topic, dead_topic_len))
        return WSQ_ERR_INVAL;
    enc_t w = enc_begin(out);
    PUT_LIT(&w, "{\"op\":\"dead\",\"topic\":");
    put_str(&w, topic, topic_len);
    PUT_LIT(&w, ",\"seq\":");
    put_u64(&w, seq);
    PUT_LIT(&w, ",\"dead_topic\":");
    put_str(&w, dead_topic, dead_topic_len);
    PUT_LIT(&w, ",\"dead_seq\":");
    put_u64(&w, dead_seq);
    PUT_LIT(&w, "}");
    return enc_end(&w);
}

wsq_err wsq_proto_enc_gap(wsq_buf_t *out, const char *topic, size_t topic_len, uint64_t from,
                          uint64_t to, wsq_gap_reason_t reason)
{
    if (!topic_arg_ok(topic, topic_len) ||
        (reason != WSQ_GAP_RETENTION && reason != WSQ_GAP_PURGE && reason != WSQ_GAP_CORRUPT))
        return WSQ_ERR_INVAL;
    enc_t w = enc_begin(out);
    PUT_LIT(&w, "{\"op\":\"gap\",\"topic\":");
    put_str(&w, topic, topic_len);
    PUT_LIT(&w, ",\"from\":");
    put_u64(&w, from);
    PUT_LIT(&w, ",\"to\":");
    put_u64(&w, to);
    PUT_LIT(&w, ",\"reason\":");
    const char *r = wsq_gap_reason_name(reason);
    put_str(&w, r, strlen(r));
    PUT_LIT(&w, "}");
    return enc_end(&w);
}

wsq_err wsq_proto_enc_reset(wsq_buf_t *out, const char *topic, size_t topic_len, uint64_t epoch,
                            uint64_t first_seq, uint64_t next_seq)
{
    if (!topic_arg_ok(topic, topic_len))
        return WSQ_ERR_INVAL;
    enc_t w = enc_begin(out);
    PUT_LIT(&w, "{\"op\":\"reset\",\"topic\":");
    put_str(&w, topic, topic_len);
    PUT_LIT(&w, ",\"epoch\":");
    put_hex16(&w, epoch);
    PUT_LIT(&w, ",\"first_seq\":");
    put_u64(&w, first_seq);
    PUT_LIT(&w, ",\"next_seq\":");
    put_u64(&w, next_seq);
    PUT_LIT(&w, "}");
    return enc_end(&w);
}

/* ------------------------------------------------------------------------------------------- */
/* Client frame encoding                                                                        */

static const char *from_name(wsq_from_t from)
{
    switch (from) {
    case WSQ_FROM_RESUME:
        return "resume";
    case WSQ_FROM_EARLIEST:
        return "earliest";
    case WSQ_FROM_LATEST:
        return "latest";
    default:
        return NULL;
    }
}

/* The frame must be one decode would accept; what decode would refuse is WSQ_ERR_INVAL here, so
 * a client learns about a bad frame before the broker does. */
wsq_err wsq_proto_encode_client(const wsq_frame_t *f, wsq_buf_t *out)
{
    bool needs_topic = f->op == WSQ_OP_PUB || f->op == WSQ_OP_SUB || f->op == WSQ_OP_UNSUB ||
                       f->op == WSQ_OP_ACK || f->op == WSQ_OP_NACK;
    bool pattern_ok = f->op == WSQ_OP_SUB || f->op == WSQ_OP_UNSUB;
    if (needs_topic && !wsq_topic_valid(f->topic, f->topic_len) &&
        !(pattern_ok && wsq_topic_pattern_valid(f->topic, f->topic_len)))
        return WSQ_ERR_INVAL;
    enc_t w = enc_begin(out);
    switch (f->op) {
    case WSQ_OP_PUB:
        if ((f->data == NULL && f->data_len > 0) || (f->binary && f->data_len > SIZE_MAX / 2) ||
            (f->headers_len && wsq_headers_check(f->headers, f->headers_len, NULL, NULL) != WSQ_OK))
            return WSQ_ERR_INVAL;
        PUT_LIT(&w, "{\"op\":\"pub\"");
        put_ref(&w, f->ref);
        PUT_LIT(&w, ",\"topic\":");
        put_str(&w, f->topic, f->topic_len);
        PUT_LIT(&w, ",\"data\":");
        if (f->binary) {
            put_b64_data(&w, f->data, f->data_len);
        } else {
            put_str(&w, (const char *)f->data, f->data_len);
        }
        if (f->headers_len)
            put_headers(&w, f->headers, f->headers_len);
        if (f->id_len) {
            PUT_LIT(&w, ",\"id\":");
            put_str(&w, f->id, f->id_len);
        }
        break;
    case WSQ_OP_SUB:
        if (f->consumer_len > 0 && !wsq_consumer_valid(f->consumer, f->consumer_len))
            return WSQ_ERR_INVAL;
        if (f->window > WINDOW_MAX || (f->from == WSQ_FROM_SEQ && f->from_seq == 0) ||
            (f->from == WSQ_FROM_TIME && f->from_time < 0))
            return WSQ_ERR_INVAL;
        PUT_LIT(&w, "{\"op\":\"sub\"");
        put_ref(&w, f->ref);
        PUT_LIT(&w, ",\"topic\":");
        put_str(&w, f->topic, f->topic_len);
        if (f->consumer_len > 0) {
            PUT_LIT(&w, ",\"consumer\":");
            put_str(&w, f->consumer, f->consumer_len);
        }
        if (f->from == WSQ_FROM_SEQ) {
            PUT_LIT(&w, ",\"from\":{\"seq\":");
            put_u64(&w, f->from_seq);
            PUT_LIT(&w, "}");
        } else if (f->from == WSQ_FROM_TIME) {
            PUT_LIT(&w, ",\"from\":{\"time\":");
            put_i64(&w, f->from_time);
            PUT_LIT(&w, "}");
        } else if (from_name(f->from) != NULL) {
            const char *name = from_name(f->from);
            PUT_LIT(&w, ",\"from\":");
            put_str(&w, name, strlen(name));
        }
        if (f->window > 0) {
            PUT_LIT(&w, ",\"window\":");
            put_u64(&w, f->window);
        }
        if (f->has_epoch) {
            PUT_LIT(&w, ",\"epoch\":");
            put_hex16(&w, f->epoch);
        }
        if (f->shared) {
            if (f->consumer_len == 0)
                return WSQ_ERR_INVAL;
            PUT_LIT(&w, ",\"shared\":true");
        }
        break;
    case WSQ_OP_UNSUB:
        PUT_LIT(&w, "{\"op\":\"unsub\"");
        put_ref(&w, f->ref);
        PUT_LIT(&w, ",\"topic\":");
        put_str(&w, f->topic, f->topic_len);
        break;
    case WSQ_OP_ACK:
        if (f->has_seq == f->has_upto || (f->has_seq && f->seq == 0))
            return WSQ_ERR_INVAL;
        PUT_LIT(&w, "{\"op\":\"ack\"");
        put_ref(&w, f->ref);
        PUT_LIT(&w, ",\"topic\":");
        put_str(&w, f->topic, f->topic_len);
        if (f->has_seq) {
            PUT_LIT(&w, ",\"seq\":");
            put_u64(&w, f->seq);
        } else {
            PUT_LIT(&w, ",\"upto\":");
            put_u64(&w, f->upto);
        }
        break;
    case WSQ_OP_NACK:
        if (f->seq == 0 || f->delay_ms < 0 || f->delay_ms > NACK_DELAY_MAX)
            return WSQ_ERR_INVAL;
        PUT_LIT(&w, "{\"op\":\"nack\"");
        put_ref(&w, f->ref);
        PUT_LIT(&w, ",\"topic\":");
        put_str(&w, f->topic, f->topic_len);
        PUT_LIT(&w, ",\"seq\":");
        put_u64(&w, f->seq);
        if (f->delay_ms > 0 && !f->term) {
            PUT_LIT(&w, ",\"delay\":");
            put_i64(&w, f->delay_ms);
        }
        if (f->term)
            PUT_LIT(&w, ",\"term\":true");
        break;
    case WSQ_OP_PING:
        PUT_LIT(&w, "{\"op\":\"ping\"");
        put_ref(&w, f->ref);
        break;
    case WSQ_OP_AUTH: {
        size_t n = f->token != NULL ? strlen(f->token) : 0;
        if (n == 0 || n > WSQ_TOKEN_MAX)
            return WSQ_ERR_INVAL;
        PUT_LIT(&w, "{\"op\":\"auth\"");
        put_ref(&w, f->ref);
        PUT_LIT(&w, ",\"token\":");
        put_str(&w, f->token, n);
        break;
    }
    default:
        return WSQ_ERR_INVAL;
    }
    PUT_LIT(&w, "}");
    return enc_end(&w);
}

/* ------------------------------------------------------------------------------------------- */
/* Server frame decoding (clients)                                                              */

/* Unsigned integer member: absent is WSQ_ERR_BAD_REQUEST when required, else leaves *out. */
static wsq_err srv_u64(const json_t *root, const char *name, bool required, uint64_t max,
                       uint64_t *out)
{
    const json_t *v = json_object_get(root, name);
    if (v == NULL)
        return required ? WSQ_ERR_BAD_REQUEST : WSQ_OK;
    if (!json_is_integer(v))
        return WSQ_ERR_BAD_TYPE;
    json_int_t x = json_integer_value(v);
    if (x < 0 || (uint64_t)x > max)
        return WSQ_ERR_BAD_REQUEST;
    *out = (uint64_t)x;
    return WSQ_OK;
}

/* Short identifier-like string member into dst[cap] (no NUL inside, fits with its terminator). */
static wsq_err srv_word(const json_t *root, const char *name, bool required, char *dst, size_t cap)
{
    const json_t *v = json_object_get(root, name);
    if (v == NULL)
        return required ? WSQ_ERR_BAD_REQUEST : WSQ_OK;
    if (!json_is_string(v))
        return WSQ_ERR_BAD_TYPE;
    size_t n = json_string_length(v);
    if (n >= cap || memchr(json_string_value(v), '\0', n) != NULL)
        return WSQ_ERR_BAD_REQUEST;
    memcpy(dst, json_string_value(v), n + 1);
    return WSQ_OK;
}

/* A present topic must be a valid name, even where the member is optional. */
/* "topic": a name, or with pattern a topic pattern. */
static wsq_err srv_topic_or(const json_t *root, bool required, bool pattern, wsq_server_frame_t *f)
{
    const json_t *v = json_object_get(root, "topic");
    if (v == NULL)
        return required ? WSQ_ERR_BAD_REQUEST : WSQ_OK;
    if (!json_is_string(v))
        return WSQ_ERR_BAD_TYPE;
    size_t n = json_string_length(v);
    if (!(pattern ? wsq_topic_pattern_valid : wsq_topic_valid)(json_string_value(v), n))
        return WSQ_ERR_BAD_TOPIC;
    memcpy(f->topic, json_string_value(v), n);
    f->topic[n] = '\0';
    return WSQ_OK;
}

static wsq_err srv_topic(const json_t *root, bool required, wsq_server_frame_t *f)
{
    return srv_topic_or(root, required, false, f);
}

static wsq_err srv_epoch(const json_t *root, uint64_t *out)
{
    const json_t *v = json_object_get(root, "epoch");
    if (v == NULL)
        return WSQ_ERR_BAD_REQUEST;
    if (!json_is_string(v))
        return WSQ_ERR_BAD_TYPE;
    return parse_hex64(json_string_value(v), json_string_length(v), out) ? WSQ_OK
                                                                         : WSQ_ERR_BAD_REQUEST;
}

/* Present-and-typed check for members wsq_server_frame_t has no field for. */
static wsq_err srv_check(const json_t *root, const char *name, bool required, bool boolean)
{
    const json_t *v = json_object_get(root, name);
    if (v == NULL)
        return required ? WSQ_ERR_BAD_REQUEST : WSQ_OK;
    if (boolean ? !json_is_boolean(v) : !json_is_string(v))
        return WSQ_ERR_BAD_TYPE;
    return WSQ_OK;
}

static wsq_err srv_msg(const json_t *root, wsq_server_frame_t *f)
{
    uint64_t deliveries = 1;
    wsq_err e = srv_topic(root, true, f);
    if (e == WSQ_OK)
        e = srv_u64(root, "seq", true, UINT64_MAX, &f->seq);
    if (e == WSQ_OK)
        e = srv_u64(root, "ts", true, UINT64_MAX, &f->ts);
    if (e == WSQ_OK)
        e = srv_u64(root, "deliveries", false, UINT32_MAX, &deliveries);
    if (e != WSQ_OK)
        return e;
    f->deliveries = (uint32_t)deliveries;
    const json_t *data = json_object_get(root, "data");
    const json_t *enc = json_object_get(root, "enc");
    if (data == NULL)
        return WSQ_ERR_BAD_REQUEST;
    if (!json_is_string(data) || (enc != NULL && !json_is_string(enc)))
        return WSQ_ERR_BAD_TYPE;
    if (enc != NULL && !str_is(enc, "base64") && !str_is(enc, "text"))
        return WSQ_ERR_BAD_REQUEST;
    const char *s = json_string_value(data);
    size_t n = json_string_length(data);
    f->binary = enc != NULL && str_is(enc, "base64");
    /* Decoded base64 is never longer than its text, so n + 1 bytes hold either form. */
    f->data = malloc(n + 1);
    if (f->data == NULL)
        return WSQ_ERR_NOMEM;
    if (f->binary) {
        if (wsq_base64_decode(s, n, f->data, &f->data_len) != WSQ_OK)
            return WSQ_ERR_BAD_REQUEST;
    } else {
        memcpy(f->data, s, n);
        f->data_len = n;
    }
    f->data[f->data_len] = '\0';
    const json_t *hdrs = json_object_get(root, "headers");
    if (hdrs != NULL) {
        wsq_buf_t b;
        const char *why;
        uint32_t count;
        size_t bytes;
        if ((e = headers_from_json(hdrs, &b, &count, &bytes, &why)) != WSQ_OK)
            return e;
        f->headers = b.data;
        f->headers_len = b.len;
    }
    return WSQ_OK;
}

/* Copies at most cap - 1 bytes of a UTF-8 string, never splitting a sequence, stopping at NUL. */
static void copy_utf8(char *dst, size_t cap, const char *s, size_t n)
{
    const char *nul = memchr(s, '\0', n);
    if (nul != NULL)
        n = (size_t)(nul - s);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

static wsq_err srv_decode(const json_t *root, wsq_server_frame_t *f)
{
    const json_t *op = json_object_get(root, "op");
    if (op == NULL)
        return WSQ_ERR_BAD_REQUEST;
    if (!json_is_string(op))
        return WSQ_ERR_BAD_TYPE;
    const json_t *ref = json_object_get(root, "ref");
    if (ref != NULL) {
        wsq_err e = dump_ref(ref, f->ref);
        if (e != WSQ_OK)
            return e;
    }
    wsq_err e = WSQ_OK;
    if (str_is(op, "ok")) {
        e = srv_topic(root, false, f);
        if (e == WSQ_OK)
            e = srv_u64(root, "seq", false, UINT64_MAX, &f->seq);
        if (e == WSQ_OK)
            e = srv_check(root, "dup", false, true);
        f->dup = json_is_true(json_object_get(root, "dup"));
    } else if (str_is(op, "err")) {
        const json_t *msg = json_object_get(root, "message");
        e = srv_word(root, "code", true, f->code, sizeof f->code);
        if (e == WSQ_OK && msg == NULL)
            e = WSQ_ERR_BAD_REQUEST;
        if (e == WSQ_OK && !json_is_string(msg))
            e = WSQ_ERR_BAD_TYPE;
        if (e == WSQ_OK)
            copy_utf8(f->message, sizeof f->message, json_string_value(msg),
                      json_string_length(msg));
    } else if (str_is(op, "pong")) {
        e = WSQ_OK;
    } else if (str_is(op, "subscribed")) {
        uint64_t unused;
        e = srv_check(root, "pattern", false, true);
        f->pattern = json_is_true(json_object_get(root, "pattern"));
        if (e == WSQ_OK)
            e = srv_topic_or(root, true, f->pattern, f);
        if (e == WSQ_OK)
            e = srv_check(root, "consumer", false, false);
        if (e == WSQ_OK && f->pattern)
            e = srv_u64(root, "topics", true, UINT32_MAX, &f->topics);
        if (e == WSQ_OK && !f->pattern)
            e = srv_epoch(root, &f->epoch);
        if (e == WSQ_OK && !f->pattern)
            e = srv_u64(root, "first_seq", true, UINT64_MAX, &f->first_seq);
        if (e == WSQ_OK && !f->pattern)
            e = srv_u64(root, "next_seq", true, UINT64_MAX, &f->next_seq);
        if (e == WSQ_OK && !f->pattern)
            e = srv_u64(root, "start_seq", true, UINT64_MAX, &f->start_seq);
        if (e == WSQ_OK)
            e = srv_u64(root, "window", true, UINT32_MAX, &unused);
        if (e == WSQ_OK)
            e = srv_check(root, "resumed", true, true);
        if (e == WSQ_OK)
            e = srv_check(root, "shared", false, true);
        f->shared = json_is_true(json_object_get(root, "shared"));
    } else if (str_is(op, "msg")) {
        e = srv_msg(root, f);
    } else if (str_is(op, "gap")) {
        e = srv_topic(root, true, f);
        if (e == WSQ_OK)
            e = srv_u64(root, "from", true, UINT64_MAX, &f->from);
        if (e == WSQ_OK)
            e = srv_u64(root, "to", true, UINT64_MAX, &f->to);
        if (e == WSQ_OK)
            e = srv_word(root, "reason", true, f->reason, sizeof f->reason);
    } else if (str_is(op, "dead")) {
        const json_t *dt = json_object_get(root, "dead_topic");
        e = srv_topic(root, true, f);
        if (e == WSQ_OK)
            e = srv_u64(root, "seq", true, UINT64_MAX, &f->seq);
        if (e == WSQ_OK)
            e = srv_u64(root, "dead_seq", true, UINT64_MAX, &f->dead_seq);
        if (e == WSQ_OK && dt == NULL)
            e = WSQ_ERR_BAD_REQUEST;
        if (e == WSQ_OK && !json_is_string(dt))
            e = WSQ_ERR_BAD_TYPE;
        if (e == WSQ_OK && !wsq_topic_valid(json_string_value(dt), json_string_length(dt)))
            e = WSQ_ERR_BAD_TOPIC;
        if (e == WSQ_OK)
            memcpy(f->dead_topic, json_string_value(dt), json_string_length(dt) + 1);
    } else if (str_is(op, "reset")) {
        e = srv_topic(root, true, f);
        if (e == WSQ_OK)
            e = srv_epoch(root, &f->epoch);
        if (e == WSQ_OK)
            e = srv_u64(root, "first_seq", true, UINT64_MAX, &f->first_seq);
        if (e == WSQ_OK)
            e = srv_u64(root, "next_seq", true, UINT64_MAX, &f->next_seq);
    } else {
        return WSQ_ERR_UNKNOWN_OP;
    }
    if (e == WSQ_OK)
        memcpy(f->op, json_string_value(op), json_string_length(op) + 1);
    return e;
}

/* f is an output: overwritten (clear a previous frame first), left cleared on error. */
wsq_err wsq_proto_decode_server(const void *json, size_t len, wsq_server_frame_t *f)
{
    memset(f, 0, sizeof *f);
    json_error_t jerr;
    json_t *root = json_loadb(json != NULL ? json : "", json != NULL ? len : 0, JSON_FLAGS, &jerr);
    if (root == NULL)
        return WSQ_ERR_BAD_JSON;
    wsq_err e = json_is_object(root) ? srv_decode(root, f) : WSQ_ERR_BAD_REQUEST;
    json_decref(root);
    if (e != WSQ_OK)
        wsq_server_frame_clear(f);
    return e;
}

/* ------------------------------------------------------------------------------------------- */
/* HTTP pull: the body of /ack and /nack */

wsq_err wsq_pull_parse_acks(const void *body, size_t len, bool nack, wsq_pull_acks_t *a,
                            char *errbuf, size_t errlen)
{
    wsq_proto_error_t perr = {0};
    json_error_t jerr;
    memset(a, 0, sizeof(*a));
    wsq_err e = WSQ_OK;
    json_t *root = json_loadb(body != NULL ? body : "", body != NULL ? len : 0, JSON_FLAGS, &jerr);
    if (root == NULL) {
        e = set_err(&perr, WSQ_ERR_BAD_JSON, "invalid JSON at line %d column %d: %s", jerr.line,
                    jerr.column, jerr.text);
        goto out;
    }
    if (!json_is_object(root)) {
        e = set_err(&perr, WSQ_ERR_BAD_REQUEST, "the body must be a JSON object");
        goto out;
    }
    const json_t *seqs = json_object_get(root, "seqs");
    if (seqs == NULL) {
        e = set_err(&perr, WSQ_ERR_BAD_REQUEST, "\"seqs\" is required");
        goto out;
    }
    if (!json_is_array(seqs)) {
        e = set_err(&perr, WSQ_ERR_BAD_TYPE, "\"seqs\" must be an array of seqs");
        goto out;
    }
    size_t n = json_array_size(seqs);
    if (n == 0 || n > WSQ_PULL_MAX) {
        e = set_err(&perr, WSQ_ERR_BAD_REQUEST, "\"seqs\" must name 1 to %u seqs", WSQ_PULL_MAX);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(seqs, i);
        if (!json_is_integer(v)) {
            e = set_err(&perr, WSQ_ERR_BAD_TYPE, "\"seqs\" must hold integers");
            goto out;
        }
        if (json_integer_value(v) < 1) {
            e = set_err(&perr, WSQ_ERR_BAD_REQUEST, "a seq is an integer >= 1");
            goto out;
        }
        a->seqs[i] = (uint64_t)json_integer_value(v);
    }
    a->n = (uint32_t)n;
    const json_t *term = json_object_get(root, "term");
    const json_t *delay = json_object_get(root, "delay");
    if (!nack && (term != NULL || delay != NULL)) {
        e = set_err(&perr, WSQ_ERR_BAD_REQUEST, "\"delay\" and \"term\" belong to /nack");
        goto out;
    }
    e = get_int(root, "delay", "delay", false, 0, NACK_DELAY_MAX, NULL, &a->delay_ms, &perr);
    if (e == WSQ_OK && term != NULL) {
        if (!json_is_boolean(term))
            e = set_err(&perr, WSQ_ERR_BAD_TYPE, "\"term\" must be true or false");
        else if ((a->term = json_is_true(term)) && delay != NULL)
            e = set_err(&perr, WSQ_ERR_BAD_REQUEST,
                        "\"term\" gives the messages up: it takes no \"delay\"");
    }
out:
    json_decref(root);
    if (e != WSQ_OK) {
        memset(a, 0, sizeof(*a));
        if (errbuf != NULL && errlen > 0)
            snprintf(errbuf, errlen, "%s", perr.message);
    }
    return e;
}
