#include "scan.h"

#include <string.h>

static const uint8_t *ws(const uint8_t *p, const uint8_t *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at the opening quote; returns the closing quote or NULL. */
static const uint8_t *str_end(const uint8_t *p, const uint8_t *e)
{
    p++;
    for (;;) {
        const uint8_t *q = memchr(p, '"', (size_t)(e - p));
        if (q == NULL)
            return NULL;
        size_t bs = 0;
        while (q - bs > p && q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        if ((bs & 1) == 0)
            return q;
        p = q + 1;
    }
}

/* Skips any JSON value; returns the byte after it or NULL. */
static const uint8_t *skip_value(const uint8_t *p, const uint8_t *e)
{
    if (p >= e)
        return NULL;
    if (*p == '"') {
        const uint8_t *q = str_end(p, e);
        return q ? q + 1 : NULL;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            if (*p == '"') {
                p = str_end(p, e);
                if (p == NULL)
                    return NULL;
            } else if (*p == '{' || *p == '[') {
                depth++;
            } else if (*p == '}' || *p == ']') {
                if (--depth == 0)
                    return p + 1;
            }
            p++;
        }
        return NULL;
    }
    while (p < e && *p != ',' && *p != '}' && *p != ' ' && *p != '\n' && *p != '\r' && *p != '\t')
        p++;
    return p;
}

/* An unsigned integer value; false (value skipped) for anything else. */
static bool uint_value(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
    if (p >= end || *p < '0' || *p > '9')
        return false;
    uint64_t x = 0;
    while (p < end && *p >= '0' && *p <= '9')
        x = x * 10 + (uint64_t)(*p++ - '0');
    if (p < end && (*p == '.' || *p == 'e' || *p == 'E'))
        return false;
    *v = x;
    return true;
}

#define KEY(lit) (kl == sizeof(lit) - 1 && memcmp(k, lit, sizeof(lit) - 1) == 0)

bool scan_frame(const uint8_t *p, size_t len, scan_t *s)
{
    memset(s, 0, sizeof(*s));
    const uint8_t *e = p + len;
    p = ws(p, e);
    if (p >= e || *p != '{')
        return false;
    p = ws(p + 1, e);
    if (p < e && *p == '}')
        return true;
    for (;;) {
        if (p >= e || *p != '"')
            return false;
        const uint8_t *ke = str_end(p, e);
        if (ke == NULL)
            return false;
        const char *k = (const char *)p + 1;
        size_t kl = (size_t)(ke - p) - 1;
        p = ws(ke + 1, e);
        if (p >= e || *p != ':')
            return false;
        p = ws(p + 1, e);
        const uint8_t *v = p;
        p = skip_value(p, e);
        if (p == NULL)
            return false;
        size_t vl = (size_t)(p - v);
        bool str = vl >= 2 && v[0] == '"';
        switch (k[0]) {
        case 'o':
            if (KEY("op") && str) {
                const char *o = (const char *)v + 1;
                size_t ol = vl - 2;
                if (ol == 3 && memcmp(o, "msg", 3) == 0)
                    s->op = OP_MSG;
                else if (ol == 2 && memcmp(o, "ok", 2) == 0)
                    s->op = OP_OK;
                else if (ol == 3 && memcmp(o, "err", 3) == 0)
                    s->op = OP_ERR;
                else if (ol == 10 && memcmp(o, "subscribed", 10) == 0)
                    s->op = OP_SUBSCRIBED;
                else if (ol == 3 && memcmp(o, "gap", 3) == 0)
                    s->op = OP_GAP;
                else if (ol == 5 && memcmp(o, "reset", 5) == 0)
                    s->op = OP_RESET;
                else if (ol == 4 && memcmp(o, "pong", 4) == 0)
                    s->op = OP_PONG;
            }
            break;
        case 'r':
            if (KEY("ref")) {
                s->ref = (const char *)v;
                s->ref_len = vl;
                s->ref_is_int = uint_value(v, p, &s->ref_int);
            }
            break;
        case 's':
            if (KEY("seq"))
                s->has_seq = uint_value(v, p, &s->seq);
            else if (KEY("start_seq"))
                uint_value(v, p, &s->start_seq);
            break;
        case 't':
            if (KEY("ts"))
                uint_value(v, p, &s->ts);
            else if (KEY("to"))
                uint_value(v, p, &s->to);
            break;
        case 'n':
            if (KEY("next_seq"))
                uint_value(v, p, &s->next_seq);
            break;
        case 'f':
            if (KEY("from"))
                uint_value(v, p, &s->from);
            break;
        case 'd':
            if (KEY("data") && str) {
                s->data = v + 1;
                s->data_len = vl - 2;
            }
            break;
        case 'c':
            if (KEY("code") && str) {
                s->code = (const char *)v + 1;
                s->code_len = vl - 2;
            }
            break;
        case 'm':
            if (KEY("message") && str) {
                s->message = (const char *)v + 1;
                s->message_len = vl - 2;
            }
            break;
        default:
            break;
        }
        p = ws(p, e);
        if (p >= e)
            return false;
        if (*p == '}')
            return true;
        if (*p != ',')
            return false;
        p = ws(p + 1, e);
    }
}
