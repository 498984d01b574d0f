/* Message headers as one block: see include/wsq/proto.h, "Message headers". */
#include <string.h>

#include "wsq/proto.h"

static bool key_ok(const char *key, size_t n)
{
    if (n == 0 || n > WSQ_HEADER_KEY_MAX || !wsq_utf8_valid(key, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] < 0x20 || key[i] == 0x7F)
            return false;
    return true;
}

wsq_err wsq_headers_add(wsq_buf_t *b, const char *key, size_t key_len, const char *value,
                        size_t value_len)
{
    if (!key_ok(key, key_len) || value_len > WSQ_HEADER_VALUE_MAX ||
        (value_len && !wsq_utf8_valid(value, value_len)))
        return WSQ_ERR_INVAL;
    wsq_err err = wsq_buf_reserve(b, 3 + key_len + value_len);
    if (err != WSQ_OK)
        return err;
    unsigned char *p = b->data + b->len;
    *p++ = (unsigned char)key_len;
    memcpy(p, key, key_len);
    p += key_len;
    *p++ = (unsigned char)value_len;
    *p++ = (unsigned char)(value_len >> 8);
    if (value_len)
        memcpy(p, value, value_len);
    b->len += 3 + key_len + value_len;
    return WSQ_OK;
}

/* One entry at *off without checking its text: false at the end or when it does not fit. */
static bool entry(const unsigned char *p, size_t len, size_t *off, wsq_header_t *h)
{
    size_t o = *off;
    if (o >= len || len - o < 1)
        return false;
    size_t kl = p[o];
    if (len - o - 1 < kl + 2)
        return false;
    size_t vl = (size_t)p[o + 1 + kl] | (size_t)p[o + 2 + kl] << 8;
    if (len - o - 3 - kl < vl)
        return false;
    h->key = (const char *)p + o + 1;
    h->key_len = kl;
    h->value = (const char *)p + o + 3 + kl;
    h->value_len = vl;
    *off = o + 3 + kl + vl;
    return true;
}

bool wsq_headers_next(const void *block, size_t len, size_t *off, wsq_header_t *h)
{
    return block != NULL && entry(block, len, off, h);
}

wsq_err wsq_headers_check(const void *block, size_t len, uint32_t *count, size_t *bytes)
{
    size_t off = 0, sum = 0;
    uint32_t n = 0;
    wsq_header_t h;
    while (off < len) {
        if (!entry(block, len, &off, &h) || !key_ok(h.key, h.key_len) ||
            !wsq_utf8_valid(h.value, h.value_len))
            return WSQ_ERR_CORRUPT;
        /* keys are few (limits.max_headers): compare with every earlier one */
        size_t o2 = 0;
        wsq_header_t e;
        for (uint32_t i = 0; i < n && entry(block, len, &o2, &e); i++)
            if (e.key_len == h.key_len && memcmp(e.key, h.key, h.key_len) == 0)
                return WSQ_ERR_CORRUPT;
        n++;
        sum += h.key_len + h.value_len;
    }
    if (count)
        *count = n;
    if (bytes)
        *bytes = sum;
    return WSQ_OK;
}
