/* Fuzz target: the HTTP/1.1 request framer (include/wsq/http1.h) and, after an upgrade, the
 * WebSocket client-frame scanner (include/wsq/wsrx.h), read as the gate reads a connection.
 *
 * Input: 2 bytes of max_head (big-endian, at least 64), 1 byte that picks the read sizes (0:
 * the whole stream in one read; else reads of 1..n bytes from a generator it seeds), then the
 * bytes a client sends. The stream is read three times - in those reads, whole, and a byte at a
 * time - and the three readings must agree: a request split anywhere frames the same. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsq/http1.h"
#include "wsq/wsrx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

/* What a reading of the stream came to. */
typedef struct {
    size_t used;        /* bytes the framer took */
    size_t requests;    /* requests read to DONE */
    size_t injects;     /* "Content-Length: 0" lines handed over */
    uint64_t ends_hash; /* where each request ended */
    wsq_h1_state_t state;
    unsigned status;
    size_t ws_ok; /* after an upgrade: bytes the scanner accepted */
    bool ws_unmasked;
} reading_t;

/* The read sizes: 0 for everything at once, else 1..mod from a xorshift seeded by sel. */
typedef struct {
    uint32_t x;
    unsigned mod;
} sizes_t;

static size_t next_size(sizes_t *s, size_t left)
{
    if (s->mod == 0)
        return left;
    s->x ^= s->x << 13;
    s->x ^= s->x >> 17;
    s->x ^= s->x << 5;
    size_t n = 1 + s->x % s->mod;
    return n < left ? n : left;
}

static void check_error(const wsq_h1_t *f)
{
    switch (f->status) {
    case 400:
    case 411:
    case 501:
    case 505:
        CHECK(f->code == WSQ_ERR_BAD_REQUEST);
        break;
    case 413:
    case 431:
        CHECK(f->code == WSQ_ERR_TOO_LARGE);
        break;
    default:
        abort();
    }
    CHECK(f->reason != NULL && f->reason[0] != '\0');
    CHECK(f->inject == 0);
}

/* After each feed: what every state promises. */
static void check_state(const wsq_h1_t *f)
{
    switch (f->state) {
    case WSQ_H1_HEAD:
        CHECK(f->head_len <= f->max_head);
        break;
    case WSQ_H1_BODY:
        CHECK(f->body_left > 0 && f->body_left <= (1ull << 53));
        CHECK(f->head_len <= f->max_head && f->inject == 0);
        break;
    case WSQ_H1_DONE:
    case WSQ_H1_UPGRADE:
        CHECK(f->body_left == 0 && f->inject == 0);
        CHECK(f->head_len <= f->max_head);
        break;
    case WSQ_H1_ERROR:
        check_error(f);
        break;
    default:
        abort();
    }
    CHECK(f->inject == 0 || f->state == WSQ_H1_HEAD);
}

/* The WebSocket bytes after an upgrade, in reads of the given sizes. */
static void scan_ws(const uint8_t *p, size_t len, sizes_t sz, reading_t *r)
{
    wsq_wsrx_t w;
    wsq_wsrx_init(&w);
    size_t at = 0;
    while (at < len) {
        size_t n = next_size(&sz, len - at);
        size_t ok = wsq_wsrx_scan(&w, p + at, n);
        CHECK(ok <= n);
        if (r->ws_unmasked) {
            CHECK(ok == 0 && w.unmasked);
        } else if (w.unmasked) {
            /* stopped at the second header byte of an unmasked frame */
            CHECK(ok < n && !(p[at + ok] & 0x80));
            r->ws_ok += ok;
            r->ws_unmasked = true;
            CHECK(wsq_wsrx_scan(&w, p + at + ok, n - ok) == 0);
        } else {
            CHECK(ok == n);
            r->ws_ok += ok;
        }
        at += n;
    }
}

static void read_stream(uint32_t max_head, const uint8_t *p, size_t len, sizes_t sz, reading_t *r)
{
    memset(r, 0, sizeof(*r));
    wsq_h1_t f;
    wsq_h1_init(&f, max_head);
    size_t avail = 0; /* bytes read so far: p[used..avail) wait for the framer */
    for (;;) {
        if (r->used == avail) {
            if (avail == len)
                break;
            avail += next_size(&sz, len - avail);
        }
        size_t offered = avail - r->used;
        wsq_h1_state_t before = f.state;
        size_t n = wsq_h1_feed(&f, p + r->used, offered);
        CHECK(n <= offered);
        CHECK(before == WSQ_H1_HEAD || before == WSQ_H1_BODY);
        r->used += n;
        check_state(&f);
        if (f.inject) {
            /* stopped at the empty line's CR; nothing is taken until the line is handed over */
            CHECK(r->used < avail && p[r->used] == '\r');
            CHECK(wsq_h1_feed(&f, p + r->used, avail - r->used) == 0);
            wsq_h1_injected(&f);
            CHECK(f.inject == 0);
            r->injects++;
            continue;
        }
        if (f.state == WSQ_H1_HEAD || f.state == WSQ_H1_BODY) {
            CHECK(r->used == avail); /* a request still being read takes all it is offered */
            continue;
        }
        /* DONE, UPGRADE, ERROR: nothing more is taken */
        CHECK(wsq_h1_feed(&f, p + r->used, len - r->used) == 0);
        if (f.state == WSQ_H1_DONE) {
            r->requests++;
            r->ends_hash = r->ends_hash * 1000003u + r->used;
            wsq_h1_next(&f);
            CHECK(f.state == WSQ_H1_HEAD && f.head_len == 0 && f.max_head == max_head);
            continue;
        }
        wsq_h1_next(&f); /* no effect outside DONE */
        CHECK(f.state == WSQ_H1_UPGRADE || f.state == WSQ_H1_ERROR);
        if (f.state == WSQ_H1_UPGRADE)
            scan_ws(p + r->used, len - r->used, sz, r);
        break;
    }
    r->state = f.state;
    r->status = f.status;
}

static bool same(const reading_t *a, const reading_t *b)
{
    return a->used == b->used && a->requests == b->requests && a->injects == b->injects &&
           a->ends_hash == b->ends_hash && a->state == b->state && a->status == b->status &&
           a->ws_ok == b->ws_ok && a->ws_unmasked == b->ws_unmasked;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    uint32_t max_head = (uint32_t)data[0] << 8 | data[1];
    if (max_head < 64)
        max_head = 64;
    sizes_t chosen = {data[2] * 2654435761u | 1u, data[2]};
    const uint8_t *p = data + 3;
    size_t len = size - 3;
    reading_t a, b, c;
    read_stream(max_head, p, len, chosen, &a);
    read_stream(max_head, p, len, (sizes_t){1, 0}, &b); /* whole */
    read_stream(max_head, p, len, (sizes_t){1, 1}, &c); /* a byte at a time */
    CHECK(same(&a, &b) && same(&a, &c));
    CHECK(a.used <= len);
    CHECK(a.ws_ok <= len - a.used);
    return 0;
}
