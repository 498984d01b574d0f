/*
 * Codec helpers shared by the wire codecs: output buffers, UTF-8 validation, the WebSocket frame
 * header and JSON string escaping (base64 is base64.c). Pure: no I/O, no globals except const
 * tables, any thread.
 */
#include "wsq/proto.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------------------------------------- */
/* Output buffer                                                                               */

void wsq_buf_init(wsq_buf_t *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void wsq_buf_fini(wsq_buf_t *b)
{
    free(b->data);
    wsq_buf_init(b);
}

wsq_err wsq_buf_reserve(wsq_buf_t *b, size_t n)
{
    if (b->cap - b->len >= n)
        return WSQ_OK;
    if (n > SIZE_MAX - b->len)
        return WSQ_ERR_NOMEM;
    size_t need = b->len + n;
    /* Doubling keeps appends amortised O(1); the floor avoids a string of tiny reallocs. */
    size_t cap = b->cap < 64 ? 64 : b->cap;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    unsigned char *p = realloc(b->data, cap);
    if (p == NULL)
        return WSQ_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return WSQ_OK;
}

wsq_err wsq_buf_append(wsq_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return WSQ_OK;
    wsq_err e = wsq_buf_reserve(b, n);
    if (e != WSQ_OK)
        return e;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return WSQ_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* UTF-8 (RFC 3629)                                                                             */

/* Length of the valid UTF-8 sequence starting at s[0] (avail >= 1 bytes readable), or 0 when the
 * bytes there are not a valid, complete, shortest-form scalar value. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    if (c < 0xC2) /* a stray continuation byte, or an overlong 2-byte lead (C0, C1) */
        return 0;
    if (c < 0xE0)
        return avail >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        if (avail < 3)
            return 0;
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80; /* E0 80..9F would be overlong */
        unsigned hi = c == 0xED ? 0x9F : 0xBF; /* ED A0..BF would be a surrogate */
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c < 0xF5) {
        if (avail < 4)
            return 0;
        unsigned lo = c == 0xF0 ? 0x90 : 0x80; /* F0 80..8F would be overlong */
        unsigned hi = c == 0xF4 ? 0x8F : 0xBF; /* F4 90.. would exceed U+10FFFF */
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

/*
 * Streaming state: 0 between scalar values. Otherwise bits 0-1 hold the continuation bytes still
 * expected and bits 2-4 select the range the next one must fall in (the first continuation byte
 * after E0, ED, F0 and F4 is narrowed to exclude overlongs, surrogates and values > U+10FFFF).
 * UTF8_REJECT is sticky: once input was invalid, nothing can make it valid again.
 */
#define UTF8_REJECT 0xFFFFFFFFu
static const unsigned char utf8_lo[5] = {0x80, 0xA0, 0x80, 0x90, 0x80};
static const unsigned char utf8_hi[5] = {0xBF, 0xBF, 0x9F, 0xBF, 0x8F};

bool wsq_utf8_feed(uint32_t *state, const void *buf, size_t len)
{
    const unsigned char *s = buf;
    uint32_t st = *state;
    /* Anything but 0 or a state this function produced (including UTF8_REJECT) is rejected, so a
     * garbage state can never index past utf8_lo/utf8_hi. */
    if (st != 0 && ((st & 3) == 0 || (st >> 2) > 4))
        goto reject;
    size_t i = 0;
    while (i < len) {
        if (st == 0) {
            while (len - i >= 8 && (wsq__load64(s + i) & HI_BITS) == 0)
                i += 8;
            if (i == len)
                break;
            unsigned c = s[i++];
            if (c < 0x80)
                continue;
            if (c < 0xC2)
                goto reject;
            else if (c < 0xE0)
                st = 1;
            else if (c < 0xF0)
                st = 2 | (c == 0xE0 ? 1u << 2 : c == 0xED ? 2u << 2 : 0);
            else if (c < 0xF5)
                st = 3 | (c == 0xF0 ? 3u << 2 : c == 0xF4 ? 4u << 2 : 0);
            else
                goto reject;
        } else {
            unsigned c = s[i++];
            unsigned r = st >> 2;
            if (c < utf8_lo[r] || c > utf8_hi[r])
                goto reject;
            st = (st & 3) - 1; /* later continuation bytes are plain 80..BF */
        }
    }
    *state = st;
    return true;
reject:
    *state = UTF8_REJECT;
    return false;
}

bool wsq_utf8_valid(const void *buf, size_t len)
{
    uint32_t st = 0;
    return wsq_utf8_feed(&st, buf, len) && st == 0;
}

/* ------------------------------------------------------------------------------------------- */
/* WebSocket frame header (RFC 6455 5.2), server to client: no mask                             */

size_t wsq_ws_frame_header(unsigned char *hdr, unsigned opcode, uint64_t len)
{
    hdr[0] = (unsigned char)((opcode & WSQ_WS_MORE ? 0 : 0x80) | (opcode & 0x0F));
    if (len < 126) {
        hdr[1] = (unsigned char)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        hdr[1] = 126;
        hdr[2] = (unsigned char)(len >> 8);
        hdr[3] = (unsigned char)len;
        return 4;
    }
    hdr[1] = 127;
    for (int i = 0; i < 8; i++)
        hdr[2 + i] = (unsigned char)(len >> (56 - 8 * i));
    return 10;
}

/* ------------------------------------------------------------------------------------------- */
/* JSON string escaping                                                                         */

static const char hex_lower[16] = "0123456789abcdef";

int wsq_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Invariant: before each step, out has room for the rest of the input copied as is
 * (cap - len >= len_in - i). Plain bytes and UTF-8 sequences copy 1:1 and keep it; only an
 * escape grows the output, so only an escape has to reserve.
 */
wsq_err wsq_json_escape(wsq_buf_t *out, const char *str, size_t len)
{
    if (len == 0)
        return WSQ_OK;
    const unsigned char *s = (const unsigned char *)str;
    size_t start_len = out->len;
    wsq_err e = wsq_buf_reserve(out, len);
    if (e != WSQ_OK)
        return e;
    size_t i = 0, run = 0; /* s[run..i) is pending plain input not yet copied */
    while (i < len) {
        i += wsq__plain_run(s + i, len - i);
        if (i == len)
            break;
        unsigned c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t n = utf8_seq(s + i, len - i);
            if (n == 0) {
                out->len = start_len;
                return WSQ_ERR_BAD_UTF8;
            }
            i += n;
            continue;
        }
        memcpy(out->data + out->len, s + run, i - run);
        out->len += i - run;
        e = wsq_buf_reserve(out, len - i + 5);
        if (e != WSQ_OK) {
            out->len = start_len;
            return e;
        }
        unsigned char *p = out->data + out->len;
        p[0] = '\\';
        switch (c) {
        case '"':
        case '\\':
            p[1] = (unsigned char)c;
            out->len += 2;
            break;
        case '\b':
            p[1] = 'b';
            out->len += 2;
            break;
        case '\f':
            p[1] = 'f';
            out->len += 2;
            break;
        case '\n':
            p[1] = 'n';
            out->len += 2;
            break;
        case '\r':
            p[1] = 'r';
            out->len += 2;
            break;
        case '\t':
            p[1] = 't';
            out->len += 2;
            break;
        default:
            memcpy(p + 1, "u00", 3);
            p[4] = (unsigned char)hex_lower[c >> 4];
            p[5] = (unsigned char)hex_lower[c & 15];
            out->len += 6;
            break;
        }
        run = ++i;
    }
    memcpy(out->data + out->len, s + run, len - run);
    out->len += len - run;
    return WSQ_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* Internal helpers                                                                             */

void wsq__sanitize_ascii(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7F)
            *s = '?';
}
