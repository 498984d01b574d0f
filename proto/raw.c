/*
 * Raw mode target parser: "/topics/<topic>" plus the query parameters consumer, shared, from and
 * token.
 * Pure: no I/O, no globals, any thread. Every decoded size is capped by a fixed buffer or by
 * WSQ_TOKEN_MAX.
 */
#include "wsq/proto.h"
#include "wsq/topic.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define TOPICS_PREFIX "/topics/"

__attribute__((format(printf, 4, 5))) static wsq_err fail_msg(char *errbuf, size_t errlen,
                                                              wsq_err code, const char *fmt, ...)
{
    if (errbuf != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
        wsq__sanitize_ascii(errbuf);
    }
    return code;
}

/* Percent-decodes s[0..n) into dst (cap bytes, no NUL written). '+' stays '+': this is RFC 3986
 * percent-encoding, not form encoding, so tokens holding base64's '+' survive unencoded.
 * Returns WSQ_ERR_INVAL for a malformed escape, WSQ_ERR_TOO_LARGE when the result exceeds cap.
 * *outlen is always written: the decoded length, or 0 on error. */
static wsq_err pct_decode(const char *s, size_t n, char *dst, size_t cap, size_t *outlen)
{
    size_t o = 0;
    *outlen = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (n - i < 3)
                return WSQ_ERR_INVAL;
            int hi = wsq_hexval(s[i + 1]), lo = wsq_hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return WSQ_ERR_INVAL;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (o == cap)
            return WSQ_ERR_TOO_LARGE;
        dst[o++] = c;
    }
    *outlen = o;
    return WSQ_OK;
}

/* Parses 1..20 decimal digits into *out; false on anything else or on overflow. */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool lit_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

static wsq_err parse_from(const char *v, size_t n, wsq_raw_target_t *t, char *errbuf, size_t errlen)
{
    uint64_t x;
    if (lit_eq(v, n, "earliest")) {
        t->from = WSQ_FROM_EARLIEST;
    } else if (lit_eq(v, n, "latest")) {
        t->from = WSQ_FROM_LATEST;
    } else if (lit_eq(v, n, "resume")) {
        t->from = WSQ_FROM_RESUME;
    } else if (n > 5 && memcmp(v, "time:", 5) == 0) {
        if (!parse_u64(v + 5, n - 5, &x) || x > INT64_MAX)
            return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST,
                            "\"from=time:\" needs Unix milliseconds >= 0");
        t->from = WSQ_FROM_TIME;
        t->from_time = (int64_t)x;
    } else if (parse_u64(v, n, &x) && x >= 1) {
        t->from = WSQ_FROM_SEQ;
        t->from_seq = x;
    } else {
        return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST,
                        "\"from\" must be earliest, latest, resume, a seq >= 1 or time:<ms>");
    }
    return WSQ_OK;
}

/* Splits one "name=value" query parameter (still percent-encoded) into its value's span and
 * its name, decoded into name (cap bytes, NUL-terminated). pct_decode's errors for the name. */
static wsq_err param_split(const char *p, size_t n, char *name, size_t cap, size_t *name_len,
                           const char **val, size_t *vlen)
{
    const char *eq = memchr(p, '=', n);
    size_t rname = eq ? (size_t)(eq - p) : n;
    *val = eq ? eq + 1 : p + n;
    *vlen = n - rname - (eq != NULL);
    wsq_err e = pct_decode(p, rname, name, cap - 1, name_len);
    name[e == WSQ_OK ? *name_len : 0] = '\0';
    return e;
}

/* shared=true|false (decoded value v[0..n), e its decode result). */
static wsq_err param_shared(wsq_err e, const char *v, size_t n, bool *out, char *errbuf,
                            size_t errlen)
{
    if (e == WSQ_OK && (lit_eq(v, n, "true") || lit_eq(v, n, "false"))) {
        *out = v[0] == 't';
        return WSQ_OK;
    }
    return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST, "\"shared\" must be true or false");
}

/* consumer=<name> (decoded value v[0..n), e its decode result) into dst (129 bytes). */
static wsq_err param_consumer(wsq_err e, const char *v, size_t n, char *dst, size_t *dlen,
                              char *errbuf, size_t errlen)
{
    if (e != WSQ_OK || !wsq_consumer_valid(v, n))
        return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST,
                        "\"consumer\" must be 1..128 characters of [A-Za-z0-9._-]");
    memcpy(dst, v, n);
    dst[n] = '\0';
    *dlen = n;
    return WSQ_OK;
}

/* One "name=value" query parameter (raw, still percent-encoded). */
static wsq_err parse_param(const char *p, size_t n, wsq_raw_target_t *t, unsigned *seen,
                           char *errbuf, size_t errlen)
{
    enum { SEEN_CONSUMER = 1, SEEN_FROM = 2, SEEN_TOKEN = 4, SEEN_SHARED = 8 };
    char name[32];
    size_t name_len;
    const char *rval;
    size_t rvlen;
    wsq_err e = param_split(p, n, name, sizeof name, &name_len, &rval, &rvlen);
    if (e == WSQ_ERR_INVAL)
        return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST, "bad percent-encoding in query");
    if (e != WSQ_OK)
        return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST, "unknown query parameter \"%.*s\"",
                        (int)strcspn(p, "=&") < 24 ? (int)strcspn(p, "=&") : 24, p);

    unsigned bit;
    if (lit_eq(name, name_len, "consumer"))
        bit = SEEN_CONSUMER;
    else if (lit_eq(name, name_len, "from"))
        bit = SEEN_FROM;
    else if (lit_eq(name, name_len, "token"))
        bit = SEEN_TOKEN;
    else if (lit_eq(name, name_len, "shared"))
        bit = SEEN_SHARED;
    else
        return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST, "unknown query parameter \"%.*s\"",
                        (int)name_len, name);
    if (*seen & bit)
        return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST, "duplicate query parameter \"%s\"",
                        name);
    *seen |= bit;

    if (bit == SEEN_TOKEN) {
        /* Each decoded byte takes 1..3 encoded ones, so this bounds the allocation. */
        if (rvlen > 3 * (size_t)WSQ_TOKEN_MAX)
            return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST, "\"token\" is too long");
        char *tok = malloc(rvlen + 1);
        if (tok == NULL)
            return fail_msg(errbuf, errlen, WSQ_ERR_NOMEM, "out of memory");
        size_t tlen;
        e = pct_decode(rval, rvlen, tok, rvlen, &tlen);
        if (e != WSQ_OK || tlen == 0 || tlen > WSQ_TOKEN_MAX || memchr(tok, '\0', tlen)) {
            free(tok);
            return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST,
                            e == WSQ_ERR_INVAL ? "bad percent-encoding in \"token\""
                                               : "\"token\" must be 1..8192 bytes, no NUL");
        }
        tok[tlen] = '\0';
        t->token = tok;
        return WSQ_OK;
    }

    char val[136]; /* fits the longest consumer name and any valid from spec */
    size_t vlen;
    e = pct_decode(rval, rvlen, val, sizeof val - 1, &vlen);
    if (e == WSQ_ERR_INVAL)
        return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST, "bad percent-encoding in \"%s\"",
                        name);
    if (bit == SEEN_CONSUMER)
        return param_consumer(e, val, vlen, t->consumer, &t->consumer_len, errbuf, errlen);
    if (bit == SEEN_SHARED)
        return param_shared(e, val, vlen, &t->shared, errbuf, errlen);
    if (e != WSQ_OK)
        return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST, "\"from\" is too long");
    return parse_from(val, vlen, t, errbuf, errlen);
}

void wsq_raw_target_clear(wsq_raw_target_t *t)
{
    free(t->token);
    memset(t, 0, sizeof *t);
    t->from = WSQ_FROM_DEFAULT;
}

/* t is an output: it is overwritten without being freed (clear a previous target first). On error
 * t is left cleared. */
wsq_err wsq_raw_parse_target(const char *path, const char *query, wsq_raw_target_t *t, char *errbuf,
                             size_t errlen)
{
    memset(t, 0, sizeof *t);
    t->from = WSQ_FROM_DEFAULT;
    if (errbuf != NULL && errlen > 0)
        errbuf[0] = '\0';

    size_t plen = sizeof TOPICS_PREFIX - 1;
    if (path == NULL || strncmp(path, TOPICS_PREFIX, plen) != 0)
        return fail_msg(errbuf, errlen, WSQ_ERR_NOTFOUND, "not found: use /topics/<topic>");

    const char *rt = path + plen;
    wsq_err e = pct_decode(rt, strlen(rt), t->topic, WSQ_TOPIC_MAX, &t->topic_len);
    if (e == WSQ_ERR_INVAL) {
        wsq_raw_target_clear(t);
        return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST, "bad percent-encoding in path");
    }
    if (e != WSQ_OK || !wsq_topic_valid(t->topic, t->topic_len)) {
        wsq_raw_target_clear(t);
        return fail_msg(errbuf, errlen, WSQ_ERR_BAD_TOPIC, "%s", wsq_strerror(WSQ_ERR_BAD_TOPIC));
    }
    t->topic[t->topic_len] = '\0';

    unsigned seen = 0;
    const char *q = query != NULL ? query : "";
    while (*q != '\0') {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        if (n > 0) { /* "a=1&&b=2" and a trailing '&' are tolerated */
            e = parse_param(q, n, t, &seen, errbuf, errlen);
            if (e != WSQ_OK) {
                wsq_raw_target_clear(t);
                return e;
            }
        }
        q += n + (amp != NULL);
    }
    if (t->shared && t->consumer_len == 0) {
        wsq_raw_target_clear(t);
        return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST,
                        "\"shared=true\" needs a \"consumer\" (the consumer to share)");
    }
    return WSQ_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* HTTP pull: the query of /fetch, /ack and /nack */

/* "250", "250ms", "5s", "1m" -> ms; false on anything else or beyond WSQ_PULL_WAIT_MAX. */
static bool parse_wait(const char *v, size_t n, int64_t *ms)
{
    size_t d = 0;
    while (d < n && v[d] >= '0' && v[d] <= '9')
        d++;
    uint64_t x;
    if (d == 0 || d > 9 || !parse_u64(v, d, &x))
        return false;
    if (lit_eq(v + d, n - d, "s"))
        x *= 1000;
    else if (lit_eq(v + d, n - d, "m"))
        x *= 60000;
    else if (d != n && !lit_eq(v + d, n - d, "ms"))
        return false;
    if (x > WSQ_PULL_WAIT_MAX)
        return false;
    *ms = (int64_t)x;
    return true;
}

static wsq_err pull_param(const char *p, size_t n, wsq_pull_query_t *q, unsigned *seen,
                          char *errbuf, size_t errlen)
{
    enum { TOPIC = 1, CONSUMER = 2, SHARED = 4, FROM = 8, MAX = 16, WAIT = 32 };
    char name[16];
    size_t name_len, rvlen;
    const char *rval;
    if (param_split(p, n, name, sizeof name, &name_len, &rval, &rvlen) != WSQ_OK)
        return WSQ_OK; /* not a name of ours: ignored, as every unknown parameter */
    static const char *const names[] = {"topic", "consumer", "shared", "from", "max", "wait"};
    unsigned bit = 0;
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
        if (lit_eq(name, name_len, names[i]))
            bit = 1u << i;
    if (bit == 0)
        return WSQ_OK;
    if (*seen & bit)
        return WSQ_OK; /* of a repeated parameter the first counts, as everywhere in HTTP */
    *seen |= bit;
    char val[WSQ_TOPIC_MAX + 1];
    size_t vlen;
    wsq_err e = pct_decode(rval, rvlen, val, sizeof val - 1, &vlen);
    if (e == WSQ_ERR_INVAL)
        return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST, "bad percent-encoding in \"%s\"",
                        name);
    if (bit == TOPIC) {
        if (e != WSQ_OK || !wsq_topic_valid(val, vlen))
            return fail_msg(errbuf, errlen, WSQ_ERR_BAD_TOPIC, "%s",
                            wsq_strerror(WSQ_ERR_BAD_TOPIC));
        memcpy(q->topic, val, vlen);
        q->topic[vlen] = '\0';
        q->topic_len = vlen;
    } else if (bit == CONSUMER) {
        return param_consumer(e, val, vlen, q->consumer, &q->consumer_len, errbuf, errlen);
    } else if (bit == SHARED) {
        return param_shared(e, val, vlen, &q->shared, errbuf, errlen);
    } else if (bit == FROM) {
        wsq_raw_target_t t; /* the same positions as raw mode's from= */
        memset(&t, 0, sizeof t);
        if (e != WSQ_OK)
            return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST, "\"from\" is too long");
        if ((e = parse_from(val, vlen, &t, errbuf, errlen)) != WSQ_OK)
            return e;
        q->from = t.from;
        q->from_seq = t.from_seq;
        q->from_time = t.from_time;
    } else if (bit == MAX) {
        uint64_t x;
        if (e != WSQ_OK || !parse_u64(val, vlen, &x) || x < 1 || x > WSQ_PULL_MAX)
            return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST, "\"max\" must be 1..%u",
                            WSQ_PULL_MAX);
        q->max = (uint32_t)x;
    } else {
        if (e != WSQ_OK || !parse_wait(val, vlen, &q->wait_ms))
            return fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST,
                            "\"wait\" must be a duration of 0 to 60s (\"500ms\", \"20s\", or "
                            "milliseconds)");
    }
    return WSQ_OK;
}

wsq_err wsq_pull_parse_query(const char *query, wsq_pull_query_t *q, char *errbuf, size_t errlen)
{
    memset(q, 0, sizeof *q);
    q->from = WSQ_FROM_DEFAULT;
    q->max = 1;
    if (errbuf != NULL && errlen > 0)
        errbuf[0] = '\0';
    unsigned seen = 0;
    wsq_err e = WSQ_OK;
    for (const char *s = query != NULL ? query : ""; *s != '\0' && e == WSQ_OK;) {
        const char *amp = strchr(s, '&');
        size_t n = amp ? (size_t)(amp - s) : strlen(s);
        if (n > 0)
            e = pull_param(s, n, q, &seen, errbuf, errlen);
        s += n + (amp != NULL);
    }
    if (e == WSQ_OK && q->topic_len == 0)
        e = fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST, "the query needs topic=<topic>");
    else if (e == WSQ_OK && q->consumer_len == 0)
        e = fail_msg(errbuf, errlen, WSQ_ERR_BAD_REQUEST,
                     "the query needs consumer=<name> (a durable consumer)");
    if (e != WSQ_OK) {
        memset(q, 0, sizeof *q);
        q->from = WSQ_FROM_DEFAULT;
    }
    return e;
}
