/*
 * The engine: one epoll loop per thread, the WebSocket client (upgrade, masked frames out,
 * frame parsing in), and the roles (publisher with a window, rate publisher, subscriber, idle).
 * Nothing here allocates per message: send buffers are per connection, the read buffer is per
 * thread, and only a partial frame at the end of a read is copied aside.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include <openssl/sha.h>
#include "wsq/proto.h"

#define READ_BUF (1u << 20)   /* per-thread read buffer */
#define PUB_WBUF (256u << 10) /* send buffer of a publisher */
#define SUB_WBUF (16u << 10)  /* send buffer of a subscriber: acks, pongs, subscribe */
#define IDLE_WBUF 1024u
#define RATE_RING (1u << 16) /* unconfirmed publishes a rate publisher can track */
#define HS_MAX (64u << 10)   /* largest upgrade response */

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

size_t u64_dec(char *dst, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

/* A buffer p of *cap elements of elem bytes, grown by doubling (from first) to hold need. Returns
 * p itself when it is big enough, else the grown buffer (p is gone) with *cap updated, or NULL
 * when memory ran out (p and *cap unchanged). Not per message: buffers only grow. */
static void *grow(void *p, size_t *cap, size_t need, size_t elem, size_t first)
{
    if (need <= *cap)
        return p;
    size_t nc = *cap ? *cap : first;
    while (nc < need)
        nc *= 2;
    void *np = realloc(p, nc * elem);
    if (np != NULL)
        *cap = nc;
    return np;
}

/* ------------------------------------------------------------------------------------------- */
/* Payloads                                                                                     */

static const char HEX[] = "0123456789abcdef";
static uint8_t filler[4096];

void payload_init(void)
{
    for (size_t i = 0; i < sizeof(filler); i++)
        filler[i] = (uint8_t)('a' + i % 26);
}

static void hex16(uint8_t *d, uint64_t v)
{
    for (int i = 15; i >= 0; i--) {
        d[i] = (uint8_t)HEX[v & 15];
        v >>= 4;
    }
}

void payload_write(uint8_t *dst, size_t size, uint64_t ts_ns, uint64_t ctr)
{
    size_t off = 0;
    if (size >= PAYLOAD_STAMP) {
        hex16(dst, ts_ns);
        hex16(dst + 16, ctr);
        off = PAYLOAD_STAMP;
    }
    while (off < size) {
        size_t n = size - off < sizeof(filler) ? size - off : sizeof(filler);
        memcpy(dst + off, filler, n);
        off += n;
    }
}

static int unhex(uint8_t ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

bool payload_read(const uint8_t *p, size_t len, uint64_t *ts_ns, uint64_t *ctr)
{
    if (len < PAYLOAD_STAMP)
        return false;
    uint64_t a = 0, b = 0;
    for (int i = 0; i < 16; i++) {
        int x = unhex(p[i]), y = unhex(p[16 + i]);
        if (x < 0 || y < 0)
            return false;
        a = a << 4 | (uint64_t)x;
        b = b << 4 | (uint64_t)y;
    }
    *ts_ns = a;
    *ctr = b;
    return true;
}

/* ------------------------------------------------------------------------------------------- */
/* Errors                                                                                       */

static void note_err(thr_t *t, const char *fmt, va_list ap)
{
    if (t->first_err[0] == 0)
        vsnprintf(t->first_err, sizeof(t->first_err), fmt, ap);
}

static void note(thr_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(thr_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    note_err(t, fmt, ap);
    va_end(ap);
}

void ev_proto_error(conn_t *c, const char *fmt, ...)
{
    ST_ADD(c->t, proto_errors, 1);
    if (c->t->first_err[0] == 0) {
        char m[200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m, sizeof(m), fmt, ap);
        va_end(ap);
        note(c->t, "conn %u: %s", c->idx, m);
    }
}

/* ------------------------------------------------------------------------------------------- */
/* Connection plumbing                                                                          */

static bool measuring(const thr_t *t)
{
    return t->phase == PH_MEASURE;
}

static void set_events(conn_t *c)
{
    if (c->fd < 0)
        return;
    uint32_t m = EPOLLIN;
    if (c->state == CS_CONNECTING || c->wlen > c->woff || c->want_out)
        m |= EPOLLOUT;
    if (m == c->evmask)
        return;
    struct epoll_event ev = {.events = m, .data.ptr = c};
    if (epoll_ctl(c->t->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->evmask = m;
}

static void conn_finish(conn_t *c)
{
    thr_t *t = c->t;
    if (c->state == CS_DONE)
        return;
    if (c->state == CS_CONNECTING || c->state == CS_UPGRADING)
        t->connecting--;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = CS_DONE;
    c->t_close = t->now;
    c->wlen = c->woff = 0;
    c->want_out = false;
    if (!c->ready && !c->counted) {
        c->counted = true;
        ST_ADD(t, failed, 1);
    }
    if (c->confirms && c->next_id > c->conf_id)
        ST_ADD(t, inflight, -(c->next_id - c->conf_id)); /* never settled */
    c->conf_id = c->next_id;
    ST_ADD(t, closed, 1);
}

/* The connection ended without us asking for it. */
static void conn_lost(conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conn_lost(conn_t *c, const char *fmt, ...)
{
    thr_t *t = c->t;
    if (c->state != CS_CLOSING && t->phase < PH_CLOSE) {
        char m[200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m, sizeof(m), fmt, ap);
        va_end(ap);
        if (c->ready)
            ST_ADD(t, unexpected_closes, 1);
        note(t, "conn %u (%s): %s", c->idx, c->topic ? c->topic : "-", m);
    }
    conn_finish(c);
}

/* Sends what is buffered. 0: all sent; 1: some left (EPOLLOUT armed); -1: connection gone. */
static int conn_flush(conn_t *c)
{
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->woff += (size_t)n;
            ST_ADD(c->t, bytes_out, (uint64_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        conn_lost(c, "send: %s", strerror(errno));
        return -1;
    }
    if (c->woff == c->wlen)
        c->woff = c->wlen = 0;
    set_events(c);
    return c->wlen ? 1 : 0;
}

/* Free room at the end of the send buffer, after moving unsent bytes to the front. */
static size_t conn_room(conn_t *c)
{
    if (c->woff > 0) {
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
        c->wlen -= c->woff;
        c->woff = 0;
    }
    return c->wcap - c->wlen;
}

static size_t frame_hdr_len(size_t len)
{
    return (len < 126 ? 2 : len <= 0xffff ? 4 : 10) + 4;
}

uint8_t *ws_frame_begin(conn_t *c, unsigned opcode, size_t len)
{
    if (c->state != CS_OPEN && c->state != CS_CLOSING)
        return NULL;
    size_t hl = frame_hdr_len(len);
    if (c->wcap - c->wlen < hl + len && conn_room(c) < hl + len) {
        if (conn_flush(c) < 0)
            return NULL;
        if (conn_room(c) < hl + len) {
            if (c->wlen > 0)
                return NULL;
            /* a frame bigger than the buffer: grow (setup-time sizes make this rare) */
            uint8_t *nb = realloc(c->wbuf, hl + len);
            if (nb == NULL)
                return NULL;
            c->wbuf = nb;
            c->wcap = hl + len;
        }
    }
    uint8_t *h = c->wbuf + c->wlen;
    h[0] = (uint8_t)(0x80 | (opcode & 0x0f));
    size_t i;
    if (len < 126) {
        h[1] = (uint8_t)(0x80 | len);
        i = 2;
    } else if (len <= 0xffff) {
        h[1] = 0x80 | 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        i = 4;
    } else {
        h[1] = 0x80 | 127;
        for (int k = 0; k < 8; k++)
            h[2 + k] = (uint8_t)((uint64_t)len >> (56 - 8 * k));
        i = 10;
    }
    memcpy(h + i, c->mask, 4);
    c->wlen += hl;
    return h + hl;
}

void ws_frame_end(conn_t *c, uint8_t *p, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= c->mask64;
        memcpy(p + i, &w, 8);
    }
    for (; i < len; i++)
        p[i] ^= c->mask[i & 3];
    c->wlen += len;
}

static void send_control(conn_t *c, unsigned opcode, const uint8_t *p, size_t len)
{
    uint8_t *d = ws_frame_begin(c, opcode, len);
    if (d == NULL)
        return;
    if (len)
        memcpy(d, p, len);
    ws_frame_end(c, d, len);
}

/* Starts the closing handshake (1000). */
static void conn_close(conn_t *c)
{
    if (c->state == CS_CONNECTING || c->state == CS_UPGRADING || c->state == CS_NEW) {
        if (c->state != CS_NEW)
            conn_finish(c);
        return;
    }
    if (c->state != CS_OPEN)
        return;
    static const uint8_t bye[2] = {0x03, 0xe8};
    send_control(c, 8, bye, 2);
    c->close_sent = true;
    c->state = CS_CLOSING;
    c->want_out = false;
    conn_flush(c);
}

/* ------------------------------------------------------------------------------------------- */
/* Setup: connect and upgrade                                                                    */

static uint64_t rng_state;
static uint64_t rnd(void)
{
    /* splitmix64; only for keys and masks, seeded from the clock and pid */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void conn_start(thr_t *t, conn_t *c)
{
    c->t_connect = t->now;
    c->fd = socket(g.o.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        note(t, "socket: %s", strerror(errno));
        c->state = CS_CONNECTING;
        t->connecting++;
        conn_finish(c);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->state = CS_CONNECTING;
    t->connecting++;
    if (connect(c->fd, (const struct sockaddr *)&g.o.addr, g.o.addrlen) < 0 &&
        errno != EINPROGRESS) {
        note(t, "connect: %s", strerror(errno));
        conn_finish(c);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        note(t, "epoll_ctl: %s", strerror(errno));
        conn_finish(c);
        return;
    }
    c->evmask = EPOLLIN | EPOLLOUT;
}

static void conn_connected(thr_t *t, conn_t *c)
{
    int err = 0;
    socklen_t el = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err != 0) {
        note(t, "connect %s: %s", g.o.url, strerror(err));
        conn_finish(c);
        return;
    }
    unsigned char k[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rnd();
        memcpy(k + i, &r, 8);
    }
    wsq_base64_encode(k, 16, c->key);
    c->key[24] = 0;
    char path[1024];
    const char *sp = NULL;
    const char *tok = g.o.token;
    if (g.o.pub_token && (c->role == R_PUB || c->role == R_RATE))
        tok = g.o.pub_token;
    if (c->drv->upgrade(c, path, sizeof(path), &sp) < 0) {
        note(t, "conn %u: request target too long", c->idx);
        conn_finish(c);
        return;
    }
    c->subproto = sp;
    int n = snprintf((char *)c->wbuf, c->wcap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s%s%s%s%s%s\r\n",
                     path, g.o.host, c->key, sp ? "Sec-WebSocket-Protocol: " : "", sp ? sp : "",
                     sp ? "\r\n" : "", tok ? "Authorization: Bearer " : "", tok ? tok : "",
                     tok ? "\r\n" : "");
    if (n < 0 || (size_t)n >= c->wcap) {
        note(t, "conn %u: upgrade request too long", c->idx);
        conn_finish(c);
        return;
    }
    c->wlen = (size_t)n;
    c->woff = 0;
    c->state = CS_UPGRADING;
    conn_flush(c);
}

static bool header_value(const char *hdrs, size_t len, const char *name, const char **v, size_t *vl)
{
    size_t nl = strlen(name);
    const char *p = hdrs, *end = hdrs + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *s = p + nl + 1, *e = eol;
            while (s < e && (*s == ' ' || *s == '\t'))
                s++;
            while (e > s && (e[-1] == '\r' || e[-1] == ' '))
                e--;
            *v = s;
            *vl = (size_t)(e - s);
            return true;
        }
        p = eol + 1;
    }
    return false;
}

static void on_open(conn_t *c);

/* Parses the upgrade response in buf. Returns bytes consumed (0: incomplete), or -1 when the
 * connection was closed. */
static ssize_t handshake(conn_t *c, const uint8_t *buf, size_t len)
{
    thr_t *t = c->t;
    const uint8_t *e = memmem(buf, len, "\r\n\r\n", 4);
    if (e == NULL) {
        if (len > HS_MAX) {
            ev_proto_error(c, "upgrade response too long");
            conn_finish(c);
            return -1;
        }
        return 0;
    }
    size_t hl = (size_t)(e - buf) + 4;
    const char *h = (const char *)buf;
    int status = 0;
    if (hl < 12 || memcmp(h, "HTTP/1.1 ", 9) != 0 || sscanf(h + 9, "%3d", &status) != 1) {
        ev_proto_error(c, "bad upgrade response");
        conn_finish(c);
        return -1;
    }
    if (status != 101) {
        size_t bl = len - hl > 160 ? 160 : len - hl;
        const char *eol = memchr(h, '\r', hl);
        note(t, "conn %u: upgrade refused: %.*s %.*s", c->idx, (int)(eol - h), h, (int)bl, h + hl);
        conn_finish(c);
        return -1;
    }
    /* Sec-WebSocket-Accept = base64(SHA-1(key + GUID)) */
    char kg[96];
    snprintf(kg, sizeof(kg), "%s%s", c->key, WS_GUID);
    unsigned char dig[20];
    SHA1((const unsigned char *)kg, strlen(kg), dig);
    char want[32];
    wsq_base64_encode(dig, 20, want);
    const char *v;
    size_t vl;
    if (!header_value(h, hl, "Sec-WebSocket-Accept", &v, &vl) || vl != 28 ||
        memcmp(v, want, 28) != 0) {
        ev_proto_error(c, "bad Sec-WebSocket-Accept");
        conn_finish(c);
        return -1;
    }
    if (c->subproto != NULL) { /* the subprotocol the driver asked for */
        const char *sp = c->subproto;
        if (!header_value(h, hl, "Sec-WebSocket-Protocol", &v, &vl) || vl != strlen(sp) ||
            memcmp(v, sp, vl) != 0) {
            ev_proto_error(c, "subprotocol %s not accepted", sp);
            conn_finish(c);
            return -1;
        }
    }
    c->state = CS_OPEN;
    t->connecting--;
    on_open(c);
    return (ssize_t)hl;
}

/* ------------------------------------------------------------------------------------------- */
/* Roles                                                                                         */

static bool pub_phase(const conn_t *c)
{
    int ph = c->t->phase;
    if (g.o.scenario == SC_DRAIN)
        return ph == PH_PRELOAD;
    return ph == PH_WARMUP || ph == PH_MEASURE;
}

static bool pub_one(conn_t *c, uint64_t ts)
{
    uint64_t id = c->next_id;
    if (!c->drv->publish(c, id, ts, c->pub_ctr + 1))
        return false;
    c->pub_ctr++;
    c->next_id++;
    if (c->confirms) {
        c->ring[id & c->ringmask] = ts;
        ST_ADD(c->t, inflight, 1);
    }
    if (c->quota != UINT64_MAX)
        c->quota--;
    ST_ADD(c->t, sent, 1);
    return true;
}

/* Fills the window (or, without confirms, the send buffer) and sends. */
static void pub_fill(conn_t *c)
{
    if (c->state != CS_OPEN || !c->ready || !pub_phase(c))
        return;
    size_t need = frame_hdr_len((size_t)g.o.size + 512) + (size_t)g.o.size + 512 + c->topic_len;
    for (int round = 0; round < 8; round++) {
        uint64_t ts = now_ns();
        bool full = false;
        while (c->quota > 0 && (!c->confirms || c->next_id - c->conf_id < c->window)) {
            if (c->wcap - c->wlen < need && conn_room(c) < need) {
                full = true;
                break;
            }
            if (!pub_one(c, ts))
                break;
        }
        if (conn_flush(c) != 0 || !full)
            break;
    }
}

/* Arms the rate timer for the next due send, or no earlier than not_before. */
static void rate_arm(thr_t *t, uint64_t not_before)
{
    /* the next send is due when (now - t0) * rate >= rate_n * 1e9 */
    uint64_t at = t->rate_t0 + (uint64_t)((double)t->rate_n * 1e9 / g.o.rate);
    if (at < not_before)
        at = not_before;
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(at / 1000000000ull);
    its.it_value.tv_nsec = (long)(at % 1000000000ull);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1;
    timerfd_settime(t->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void rate_tick(thr_t *t)
{
    conn_t *c = t->rate_conn;
    if (c == NULL || c->state != CS_OPEN || !pub_phase(c)) {
        uint64_t x; /* clear the expiry (re-arming below clears it too, without a syscall) */
        if (read(t->tfd, &x, sizeof(x)) < 0 && errno != EAGAIN)
            return;
        return;
    }
    uint64_t now = now_ns();
    uint64_t due = (uint64_t)((double)(now - t->rate_t0) * g.o.rate / 1e9) + 1;
    bool blocked = false;
    if (due > t->rate_n) {
        uint64_t n = due - t->rate_n;
        if (n > (uint64_t)g.o.burst) { /* token bucket full: the rest is lost, and counted */
            ST_ADD(t, rate_missed, n - (uint64_t)g.o.burst);
            t->rate_n += n - (uint64_t)g.o.burst;
            n = (uint64_t)g.o.burst;
        }
        for (uint64_t i = 0; i < n; i++) {
            if (c->confirms && c->next_id - c->conf_id > c->ringmask) {
                ST_ADD(t, rate_missed, 1); /* too many unconfirmed */
                t->rate_n++;
                continue;
            }
            if (!pub_one(c, now)) {
                blocked = true; /* no room in the send buffer: stays due */
                break;
            }
            t->rate_n++;
        }
        conn_flush(c);
    }
    /* blocked: the broker is not reading; look again in 1 ms rather than spin */
    rate_arm(t, blocked ? now + 1000000 : 0);
}

static void sub_after_read(conn_t *c)
{
    if (c->shared) { /* one ack per message; what finds no room goes out on the next call */
        while (c->nacked < c->nseqs && c->drv->ack_seq(c, c->seqs[c->nacked])) {
            c->nacked++;
            ST_ADD(c->t, acks, 1);
        }
        return;
    }
    if (c->durable && c->flavor == FL_V1 && c->have_seq && c->last_seq > c->acked &&
        (c->last_seq - c->acked >= (uint64_t)g.o.ack_every || c->drained)) {
        if (c->drv->ack(c, c->last_seq)) {
            c->acked = c->last_seq;
            ST_ADD(c->t, acks, 1);
        }
    }
}

static void mark_ready(conn_t *c)
{
    if (!c->ready) {
        c->ready = true;
        ST_ADD(c->t, ready, 1);
    }
}

static void on_open(conn_t *c)
{
    c->drv->on_open(c);
    if (c->state != CS_OPEN)
        return;
    if (c->ready && c->role == R_PUB)
        pub_fill(c);
}

/* ------------------------------------------------------------------------------------------- */
/* Events from drivers                                                                            */

static void check_drained(conn_t *c)
{
    if (g.o.scenario != SC_DRAIN || c->role != R_SUB || c->drained || c->shared ||
        c->t->phase < PH_MEASURE)
        return; /* (a shared consumer is drained as a whole: main.c's drain_done) */
    bool done;
    if (c->end_seq > 0)
        done = c->end_seq <= c->start_seq || (c->have_seq && c->last_seq >= c->end_seq - 1);
    else
        done = c->received >= (uint64_t)g.o.preload;
    if (done) {
        c->drained = true;
        ST_ADD(c->t, drained, 1);
    }
}

/* *a = min(*a, v) (min) or max(*a, v); any thread. */
static void atomic_bound(_Atomic uint64_t *a, uint64_t v, bool min)
{
    uint64_t cur = atomic_load(a);
    while ((min ? v < cur : v > cur) && !atomic_compare_exchange_weak(a, &cur, v))
        ;
}

void ev_ready(conn_t *c, uint64_t start_seq, uint64_t end_seq)
{
    if (c->resume_unsub && !c->ready) {
        /* drain --resume: the consumer exists now; leave it until the drain starts */
        c->drv->unsubscribe(c);
        return;
    }
    if (c->role == R_SUB && (start_seq || end_seq)) {
        c->start_seq = start_seq;
        c->end_seq = end_seq;
        if (start_seq > 0 && !c->have_seq) {
            c->last_seq = start_seq - 1;
            c->acked = c->last_seq;
            c->have_seq = g.o.scenario == SC_DRAIN;
        }
        if (c->shared) {
            atomic_bound(&g.shared_lo, start_seq, true);
            atomic_bound(&g.shared_hi, end_seq, false);
            atomic_fetch_add(&g.shared_subscribed, 1);
        }
    }
    mark_ready(c);
    if (c->role == R_SUB && c->sub_sent_ns)
        check_drained(c);
}

void ev_unsubscribed(conn_t *c)
{
    if (c->resume_unsub && !c->ready) {
        c->resume_unsub = false;
        mark_ready(c);
    }
}

static void settle(conn_t *c, uint64_t id)
{
    c->ring[id & c->ringmask] = 0;
    ST_ADD(c->t, inflight, -1);
    while (c->conf_id < c->next_id && c->ring[c->conf_id & c->ringmask] == 0)
        c->conf_id++;
}

void ev_confirm(conn_t *c, uint64_t id, uint64_t seq)
{
    thr_t *t = c->t;
    if (!c->confirms || id < c->conf_id || id >= c->next_id || c->ring[id & c->ringmask] == 0) {
        ev_proto_error(c, "confirm for unknown publish %llu", (unsigned long long)id);
        return;
    }
    if (id != c->conf_id) {
        ST_ADD(t, order_errors, 1);
        note(t, "conn %u: confirm %llu before %llu", c->idx, (unsigned long long)id,
             (unsigned long long)c->conf_id);
    }
    uint64_t ts = c->ring[id & c->ringmask];
    if (measuring(t))
        hist_add(&t->clat, t->now > ts ? t->now - ts : 0);
    settle(c, id);
    c->last_seq_confirmed = seq;
    ST_ADD(t, confirmed, 1);
}

void ev_error(conn_t *c, bool has_id, uint64_t id, const char *what, size_t what_len)
{
    thr_t *t = c->t;
    ST_ADD(t, err_frames, 1);
    note(t, "conn %u: broker error: %.*s", c->idx, (int)(what_len > 200 ? 200 : what_len), what);
    if (has_id && c->confirms && id >= c->conf_id && id < c->next_id &&
        c->ring[id & c->ringmask] != 0)
        settle(c, id);
}

void ev_gap(conn_t *c, uint64_t from, uint64_t to)
{
    ST_ADD(c->t, gaps, 1);
    note(c->t, "conn %u: gap %llu-%llu", c->idx, (unsigned long long)from, (unsigned long long)to);
    if (c->have_seq && to > c->last_seq)
        c->last_seq = to;
}

/* A shared consumer's member: the members share out the backlog, so its own seqs have holes but
 * still increase (nothing is redelivered while no member leaves and acks come in time). Every
 * seq is logged, for its ack and for main.c's check that the members got each one once. */
static void member_delivery(conn_t *c, uint64_t seq)
{
    thr_t *t = c->t;
    if (c->have_seq && seq <= c->last_seq) {
        ST_ADD(t, order_errors, 1);
        note(t, "conn %u: member got seq %llu after %llu", c->idx, (unsigned long long)seq,
             (unsigned long long)c->last_seq);
    } else {
        c->last_seq = seq;
        c->have_seq = true;
    }
    uint64_t *ns = grow(c->seqs, &c->seqcap, c->nseqs + 1, sizeof(*ns), 1024);
    if (ns == NULL) {
        ev_proto_error(c, "out of memory logging seqs");
        conn_finish(c);
        return;
    }
    c->seqs = ns;
    c->seqs[c->nseqs++] = seq;
}

void ev_delivery(conn_t *c, uint64_t seq, const uint8_t *p, size_t len)
{
    thr_t *t = c->t;
    if (c->role != R_SUB) {
        if (c->flavor == FL_RAW) /* a raw connection with subscribe rights also receives */
            ST_ADD(t, echoed, 1);
        else
            ev_proto_error(c, "delivery on a connection without a subscription");
        return;
    }
    c->received++;
    ST_ADD(t, delivered, 1);
    if (c->first_ns == 0)
        c->first_ns = t->now;
    c->last_ns = t->now;
    uint64_t ts, ctr;
    bool stamped = payload_read(p, len, &ts, &ctr);
    if (stamped && measuring(t) && g.o.scenario != SC_DRAIN)
        hist_add(&t->dlat, t->now > ts ? t->now - ts : 0);
    if (seq > 0 && c->shared) {
        member_delivery(c, seq);
    } else if (seq > 0) {
        if (c->have_seq && seq <= c->last_seq) {
            ST_ADD(t, dups, 1);
        } else {
            if (c->have_seq && seq != c->last_seq + 1 && c->check_order) {
                ST_ADD(t, order_errors, 1);
                note(t, "conn %u: seq %llu after %llu", c->idx, (unsigned long long)seq,
                     (unsigned long long)c->last_seq);
            }
            c->last_seq = seq;
            c->have_seq = true;
        }
    }
    /* The payload counter orders messages only when one publisher wrote them all (fanout,
     * latency): raw mode carries no seq, so it is the order check there. */
    bool ctr_order =
        c->check_order && seq == 0 && (g.o.scenario == SC_FANOUT || g.o.scenario == SC_LATENCY);
    if (stamped) {
        if (c->have_ctr && ctr <= c->last_ctr) {
            if (ctr_order)
                ST_ADD(t, dups, 1);
        } else {
            if (c->have_ctr && ctr != c->last_ctr + 1 && ctr_order) {
                ST_ADD(t, order_errors, 1);
                note(t, "conn %u: message %llu after %llu", c->idx, (unsigned long long)ctr,
                     (unsigned long long)c->last_ctr);
            }
            if (!c->have_ctr)
                c->first_ctr = ctr;
            c->last_ctr = ctr;
            c->have_ctr = true;
        }
    }
    check_drained(c);
}

/* ------------------------------------------------------------------------------------------- */
/* Reading                                                                                        */

static void frag_append(conn_t *c, const uint8_t *p, size_t n)
{
    uint8_t *nb = grow(c->frag, &c->fcap, c->flen + n, 1, 4096);
    if (nb == NULL) {
        ev_proto_error(c, "out of memory reassembling a message");
        conn_finish(c);
        return;
    }
    c->frag = nb;
    memcpy(c->frag + c->flen, p, n);
    c->flen += n;
}

static void on_frame(conn_t *c, bool fin, unsigned op, const uint8_t *p, size_t n)
{
    if (op >= 8) {
        if (!fin || n > 125) {
            ev_proto_error(c, "bad control frame");
            conn_finish(c);
            return;
        }
        if (op == 8) { /* close */
            unsigned code = n >= 2 ? (unsigned)p[0] << 8 | p[1] : 1005;
            if (!c->close_sent) {
                if (c->t->phase < PH_CLOSE)
                    conn_lost(c, "closed by the broker: %u %.*s", code, (int)(n > 2 ? n - 2 : 0),
                              (const char *)p + 2);
                else
                    conn_finish(c);
                return;
            }
            conn_finish(c);
        } else if (op == 9) { /* ping */
            send_control(c, 10, p, n);
        } else if (op != 10) {
            ev_proto_error(c, "unknown opcode %u", op);
        }
        return;
    }
    if (op == 0) {
        if (!c->infrag) {
            ev_proto_error(c, "continuation without a first fragment");
            conn_finish(c);
            return;
        }
        frag_append(c, p, n);
        if (fin && c->state != CS_DONE) {
            c->infrag = false;
            c->drv->on_message(c, c->fop, c->frag, c->flen);
            c->flen = 0;
        }
        return;
    }
    if (op != 1 && op != 2) {
        ev_proto_error(c, "unknown opcode %u", op);
        conn_finish(c);
        return;
    }
    if (c->infrag) {
        ev_proto_error(c, "new message inside a fragmented one");
        conn_finish(c);
        return;
    }
    if (fin) {
        c->drv->on_message(c, op, p, n);
    } else {
        c->infrag = true;
        c->fop = (uint8_t)op;
        c->flen = 0;
        frag_append(c, p, n);
    }
}

/* Parses the complete frames in buf; returns the bytes consumed (a partial frame stays). */
static size_t ws_consume(conn_t *c, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (len - off >= 2 && (c->state == CS_OPEN || c->state == CS_CLOSING)) {
        const uint8_t *h = buf + off;
        size_t avail = len - off;
        if (h[0] & 0x70 || h[1] & 0x80) {
            ev_proto_error(c, "RSV bits or a masked frame from the server");
            conn_finish(c);
            break;
        }
        uint64_t n = h[1] & 0x7f;
        size_t hl = 2;
        if (n == 126) {
            if (avail < 4)
                break;
            n = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (n == 127) {
            if (avail < 10)
                break;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | h[2 + i];
            hl = 10;
            if (n > (1ull << 40)) {
                ev_proto_error(c, "frame too large");
                conn_finish(c);
                break;
            }
        }
        if (avail - hl < n)
            break;
        on_frame(c, h[0] & 0x80, h[0] & 0x0f, h + hl, (size_t)n);
        off += hl + (size_t)n;
    }
    return off;
}

static void conn_read(thr_t *t, conn_t *c)
{
    size_t have = c->rlen;
    uint8_t *rbuf = grow(t->rbuf, &t->rcap, have + 65536, 1, READ_BUF);
    if (rbuf == NULL) {
        ev_proto_error(c, "out of memory");
        conn_finish(c);
        return;
    }
    t->rbuf = rbuf;
    if (have)
        memcpy(t->rbuf, c->rb, have);
    ssize_t n = recv(c->fd, t->rbuf + have, t->rcap - have, MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return; /* the tail stays in c->rb */
        conn_lost(c, "recv: %s", strerror(errno));
        return;
    }
    if (n == 0) {
        conn_lost(c, "connection closed by the broker (EOF)");
        return;
    }
    ST_ADD(t, bytes_in, (uint64_t)n);
    t->now = now_ns();
    size_t len = have + (size_t)n, off = 0;
    c->rlen = 0;
    if (c->state == CS_UPGRADING) {
        ssize_t k = handshake(c, t->rbuf, len);
        if (k < 0)
            return;
        off = (size_t)k;
        if (k == 0)
            goto keep;
    }
    off += ws_consume(c, t->rbuf + off, len - off);
    if (c->state == CS_DONE)
        return;
keep:
    if (off < len) {
        size_t rest = len - off;
        uint8_t *rb = grow(c->rb, &c->rcap, rest, 1, 256);
        if (rb == NULL) {
            ev_proto_error(c, "out of memory");
            conn_finish(c);
            return;
        }
        c->rb = rb;
        memcpy(c->rb, t->rbuf + off, rest);
        c->rlen = rest;
    }
    if (c->role == R_SUB)
        sub_after_read(c);
    else if (c->role == R_PUB)
        pub_fill(c);
    if (c->state != CS_DONE && c->wlen > c->woff)
        conn_flush(c);
}

/* ------------------------------------------------------------------------------------------- */
/* Phases                                                                                         */

static void enter_phase(thr_t *t, int ph)
{
    t->phase = ph;
    for (size_t i = 0; i < t->nconns; i++) {
        conn_t *c = t->conns[i];
        if (ph == PH_CLOSE) {
            conn_close(c);
            continue;
        }
        if (c->state != CS_OPEN)
            continue;
        switch (ph) {
        case PH_PRELOAD:
        case PH_WARMUP:
            if (c->role == R_PUB) {
                c->want_out = !c->confirms;
                pub_fill(c);
                set_events(c);
            }
            break;
        case PH_MEASURE:
            if (g.o.scenario == SC_DRAIN && c->role == R_SUB && c->sub_pending) {
                c->sub_pending = false;
                c->sub_sent_ns = now_ns();
                if (!c->drv->subscribe(c, g.o.resume))
                    ev_proto_error(c, "no room to subscribe");
                conn_flush(c);
            }
            break;
        case PH_STOP:
            c->want_out = false;
            set_events(c);
            break;
        default:
            break;
        }
    }
    if (ph == PH_WARMUP && t->rate_conn != NULL) {
        t->rate_t0 = now_ns();
        t->rate_n = 0;
        rate_arm(t, 0);
    }
    if (ph == PH_STOP && t->rate_conn != NULL) {
        struct itimerspec its = {0};
        timerfd_settime(t->tfd, 0, &its, NULL);
        atomic_store(&g.final_ctr, t->rate_conn->pub_ctr);
        atomic_store(&g.final_known, 1);
    }
    if (ph >= PH_CLOSE) { /* connections not yet started never will be */
        for (size_t i = t->next_connect; i < t->nconns; i++)
            if (t->conns[i]->state == CS_NEW)
                t->conns[i]->state = CS_DONE;
        t->next_connect = t->nconns;
    }
}

static void compute_pending(thr_t *t)
{
    uint64_t pending = 0;
    bool known = atomic_load(&g.final_known) != 0;
    uint64_t fin = atomic_load(&g.final_ctr);
    for (size_t i = 0; i < t->nconns; i++) {
        conn_t *c = t->conns[i];
        if (c->state != CS_OPEN)
            continue;
        if (c->confirms && c->next_id > c->conf_id)
            pending++;
        if (c->role == R_SUB && (g.o.scenario == SC_FANOUT || g.o.scenario == SC_LATENCY) &&
            (!known || (fin > 0 && (!c->have_ctr || c->last_ctr < fin))))
            pending++;
    }
    atomic_store_explicit(&t->st.pending, pending, memory_order_relaxed);
    atomic_store_explicit(&t->st.pending_ok, 1, memory_order_relaxed);
}

static void connect_more(thr_t *t)
{
    while (t->connecting < t->connect_limit && t->next_connect < t->nconns) {
        conn_t *c = t->conns[t->next_connect];
        if (c->sub_pending && c->flavor == FL_RAW && t->phase < PH_MEASURE)
            break; /* raw drain consumers connect when the drain starts */
        if (t->phase >= PH_CLOSE)
            break;
        t->next_connect++;
        if (c->sub_pending && c->flavor == FL_RAW)
            c->sub_sent_ns = now_ns();
        conn_start(t, c);
    }
}

static void *thr_main(void *arg)
{
    thr_t *t = arg;
    struct epoll_event evs[256];
    uint64_t last_pending = 0;
    for (;;) {
        int ph = atomic_load_explicit(&g.phase, memory_order_acquire);
        while (t->phase < ph)
            enter_phase(t, t->phase + 1);
        if (ph == PH_EXIT)
            break;
        t->now = now_ns();
        connect_more(t);
        if (ph == PH_STOP && t->now - last_pending > 5000000) {
            compute_pending(t);
            last_pending = t->now;
        }
        int n = epoll_wait(t->ep, evs, 256, 5);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            note(t, "epoll_wait: %s", strerror(errno));
            break;
        }
        t->now = now_ns();
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &t->tfd) {
                rate_tick(t);
                continue;
            }
            conn_t *c = evs[i].data.ptr;
            uint32_t e = evs[i].events;
            if (c->state == CS_DONE)
                continue;
            if (c->state == CS_CONNECTING) {
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    conn_connected(t, c);
                continue;
            }
            if (e & (EPOLLIN | EPOLLERR | EPOLLHUP))
                conn_read(t, c);
            if (c->state == CS_DONE)
                continue;
            if (e & EPOLLOUT && conn_flush(c) == 0) {
                if (c->role == R_PUB) {
                    pub_fill(c);
                } else if (c->shared) { /* the acks that found the send buffer full */
                    sub_after_read(c);
                    conn_flush(c);
                }
            }
        }
    }
    for (size_t i = 0; i < t->nconns; i++) {
        conn_t *c = t->conns[i];
        if (c->fd >= 0) {
            close(c->fd);
            c->fd = -1;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------- */
/* Start and join                                                                                 */

static int conn_init(conn_t *c)
{
    size_t frame = frame_hdr_len((size_t)g.o.size + 512) + (size_t)g.o.size + 512 + c->topic_len;
    size_t tok = (g.o.token ? strlen(g.o.token) : 0) + (g.o.pub_token ? strlen(g.o.pub_token) : 0);
    size_t cap;
    switch (c->role) {
    case R_PUB:
    case R_RATE:
        cap = PUB_WBUF > 4 * frame ? PUB_WBUF : 4 * frame;
        break;
    case R_SUB:
        cap = SUB_WBUF;
        if (c->shared) { /* a read may bring a whole window, each message acked on its own */
            size_t acks = (size_t)g.o.window * (frame_hdr_len(64) + 64 + c->topic_len);
            cap = cap > acks ? cap : acks;
        }
        break;
    default:
        cap = IDLE_WBUF;
        break;
    }
    cap += tok + 1024;
    c->wbuf = malloc(cap);
    if (c->wbuf == NULL)
        return -1;
    c->wcap = cap;
    c->fd = -1;
    c->next_id = c->conf_id = 1;
    if (c->quota == 0)
        c->quota = UINT64_MAX;
    uint64_t r = rnd();
    memcpy(c->mask, &r, 4);
    if (memcmp(c->mask, "\0\0\0\0", 4) == 0)
        c->mask[0] = 0x5a;
    memcpy(&c->mask64, c->mask, 4);
    memcpy((uint8_t *)&c->mask64 + 4, c->mask, 4);
    if (c->shared) { /* room for an even share of the backlog, and some; it grows if need be */
        c->seqcap = (size_t)(g.o.preload / g.o.consumers) * 5 / 4 + (size_t)g.o.window;
        c->seqs = malloc(c->seqcap * sizeof(uint64_t));
        if (c->seqs == NULL)
            return -1;
    }
    if (c->role == R_PUB || c->role == R_RATE) {
        uint64_t n = c->role == R_RATE ? RATE_RING : 1;
        while (n < c->window + 1u)
            n *= 2;
        c->ring = calloc(n, sizeof(uint64_t));
        if (c->ring == NULL)
            return -1;
        c->ringmask = n - 1;
    }
    return 0;
}

int loop_start(void)
{
    rng_state = now_ns() ^ ((uint64_t)getpid() << 32);
    for (int i = 0; i < g.nthr; i++) {
        thr_t *t = &g.thr[i];
        t->id = i;
        t->ep = epoll_create1(EPOLL_CLOEXEC);
        t->tfd = -1;
        t->rcap = READ_BUF;
        t->rbuf = malloc(t->rcap);
        t->conns = calloc(g.nconns / (size_t)g.nthr + 1, sizeof(conn_t *));
        t->connect_limit = g.o.connect_concurrency / g.nthr;
        if (t->connect_limit < 1)
            t->connect_limit = 1;
        hist_init(&t->clat);
        hist_init(&t->dlat);
        if (t->ep < 0 || t->rbuf == NULL || t->conns == NULL)
            return -1;
    }
    for (size_t i = 0; i < g.nconns; i++) {
        conn_t *c = &g.conns[i];
        thr_t *t = &g.thr[i % (size_t)g.nthr];
        c->t = t;
        c->drv = g.drv;
        if (conn_init(c) < 0)
            return -1;
        t->conns[t->nconns++] = c;
        if (c->role == R_RATE) {
            t->rate_conn = c;
            t->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &t->tfd};
            if (t->tfd < 0 || epoll_ctl(t->ep, EPOLL_CTL_ADD, t->tfd, &ev) < 0)
                return -1;
        }
    }
    for (int i = 0; i < g.nthr; i++)
        if (pthread_create(&g.thr[i].th, NULL, thr_main, &g.thr[i]) != 0)
            return -1;
    return 0;
}

void loop_join(void)
{
    for (int i = 0; i < g.nthr; i++)
        pthread_join(g.thr[i].th, NULL);
}
