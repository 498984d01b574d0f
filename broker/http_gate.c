/*
 * The gate: every byte libwebsockets reads from a client connection passes through here first
 * (service thread only).
 *
 * lws 4.1.6 reads a connection with recv() (plain) or SSL_read() (TLS). wsqd defines both
 * functions itself, so lws's calls land here; calls for any other descriptor or thread go
 * straight to the real functions (dlsym RTLD_NEXT). The C library and OpenSSL pass no context
 * to these entry points, so the gate keeps its connections in one process-wide table: the one
 * global of wsqd, written and read by the service thread only.
 *
 * For each connection the gate frames HTTP/1.1 requests (include/wsq/http1.h) and hands lws
 * one request at a time, never a byte of the next one:
 *   - lws 4.1 mis-reads a request that it parses out of bytes which arrived behind another one:
 *     it takes the body from the request's own header bytes, then reports the body complete in
 *     an endless loop (one pipelined POST made wsqd store a message millions of times);
 *   - a head lws cannot parse is refused here, with a JSON error and Connection: close, instead
 *     of the silent drop or HTML page lws would give.
 * HTTP pipelining is answered, not served: when a client sends the next request before the
 * answer to the current one is written, the answer says Connection: close, the connection
 * closes after it, and the bytes behind it are discarded unread. RFC 9112 9.3.2 has clients
 * retry unanswered requests on a new connection.
 *
 * After a WebSocket upgrade the gate only checks the client's frame headers (include/wsq/wsrx.h):
 * lws 4.1 accepts unmasked client frames, which RFC 6455 5.1 forbids. From an unmasked frame on,
 * nothing more reaches lws, and the session closes with 1002 (wsq__gate_ws_violation).
 */
#include <dlfcn.h>
#include <errno.h>
#include <libwebsockets.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "gate.h"
#include "log.h"
#include "wsq/http1.h"
#include "wsq/proto.h"
#include "wsq/wsrx.h"

typedef enum {
    G_READ,    /* a request is being read: lws gets its bytes */
    G_WAIT,    /* lws has the whole request; the next waits for wsq__gate_next() */
    G_WS,      /* a WebSocket: bytes pass, frame headers are checked */
    G_DISCARD, /* a WebSocket that broke the protocol: input is dropped until the close */
    G_CLOSED,  /* refused: lws reads end of file and closes */
} gate_mode_t;

/* The names of a request head's Wsq-Header-<name> lines, lower case and without the prefix
 * (lws 4.1 can look a custom header up by name, but cannot list them): "name\0name\0...". */
typedef struct {
    uint8_t st;      /* 0: at a line's start, matching the prefix; 1: in a name; 2: rest of the
                      * line; 3: the head has ended */
    uint8_t matched; /* prefix bytes matched on this line */
    bool cr;         /* the previous byte was CR */
    bool too_long;   /* a name longer than WSQ_HEADER_KEY_MAX */
    uint16_t count;
    uint16_t cur; /* bytes of the name being read */
    char *names;  /* count NUL-terminated names (malloc'd when the first one comes) */
    size_t len, cap;
} hnames_t;

typedef struct {
    wsq_h1_t h1;
    hnames_t hn;
    wsq_wsrx_t ws;
    struct lws *wsi;
    gate_mode_t mode;
    bool tls;
    bool pipelined;     /* bytes came behind a request before its answer: close after the answer */
    bool app_done;      /* the answer went before the body ended: lws discards the rest of it */
    uint8_t inject_off; /* bytes of WSQ_H1_CLEN0 lws has already read */
    char peer[64];
} gate_t;

typedef ssize_t (*recv_fn)(int, void *, size_t, int);
typedef int (*ssl_read_fn)(SSL *, void *, int);

static struct {
    pthread_t service;
    recv_fn real_recv;
    ssl_read_fn real_ssl_read;
    gate_t **by_fd; /* indexed by descriptor */
    size_t nfd;
} * gates;

static recv_fn real_recv(void)
{
    static recv_fn fn;
    if (fn == NULL)
        fn = (recv_fn)dlsym(RTLD_NEXT, "recv");
    return fn;
}

static ssl_read_fn real_ssl_read(void)
{
    static ssl_read_fn fn;
    if (fn == NULL)
        fn = (ssl_read_fn)dlsym(RTLD_NEXT, "SSL_read");
    return fn;
}

/* The gate of fd when the caller is the service thread, else NULL. */
static gate_t *gate_of(int fd)
{
    if (gates == NULL || fd < 0 || (size_t)fd >= gates->nfd ||
        !pthread_equal(pthread_self(), gates->service))
        return NULL;
    return gates->by_fd[fd];
}

wsq_err wsq__gate_init(void)
{
    if (gates)
        return WSQ_OK;
    struct rlimit rl;
    size_t nfd = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
                         rl.rlim_cur < (1u << 24)
                     ? (size_t)rl.rlim_cur
                     : (1u << 20);
    if (real_recv() == NULL || real_ssl_read() == NULL)
        return WSQ_ERR_INTERNAL;
    gates = calloc(1, sizeof(*gates));
    if (gates == NULL)
        return WSQ_ERR_NOMEM;
    gates->by_fd = calloc(nfd, sizeof(*gates->by_fd));
    if (gates->by_fd == NULL) {
        free(gates);
        gates = NULL;
        return WSQ_ERR_NOMEM;
    }
    gates->nfd = nfd;
    gates->service = pthread_self();
    return WSQ_OK;
}

void wsq__gate_fini(void)
{
    if (gates == NULL)
        return;
    for (size_t i = 0; i < gates->nfd; i++) {
        if (gates->by_fd[i])
            free(gates->by_fd[i]->hn.names);
        free(gates->by_fd[i]);
    }
    free(gates->by_fd);
    free(gates);
    gates = NULL;
}

bool wsq__gate_open(struct lws *wsi, uint32_t max_head)
{
    int fd = lws_get_socket_fd(wsi);
    if (gates == NULL || fd < 0 || (size_t)fd >= gates->nfd)
        return false;
    gate_t *g = gates->by_fd[fd];
    if (g == NULL && (g = malloc(sizeof(*g))) == NULL)
        return false;
    if (gates->by_fd[fd])
        free(g->hn.names); /* (a descriptor lws did not close through us) */
    memset(g, 0, sizeof(*g));
    wsq_h1_init(&g->h1, max_head);
    wsq_wsrx_init(&g->ws);
    g->wsi = wsi;
    g->tls = lws_is_ssl(wsi) != 0;
    lws_get_peer_simple(wsi, g->peer, sizeof(g->peer));
    gates->by_fd[fd] = g;
    return true;
}

void wsq__gate_close(struct lws *wsi)
{
    int fd = lws_get_socket_fd(wsi);
    if (gates == NULL || fd < 0 || (size_t)fd >= gates->nfd)
        return;
    if (gates->by_fd[fd])
        free(gates->by_fd[fd]->hn.names);
    free(gates->by_fd[fd]);
    gates->by_fd[fd] = NULL;
}

void wsq__gate_next(struct lws *wsi)
{
    gate_t *g = gate_of(lws_get_socket_fd(wsi));
    if (g == NULL)
        return;
    if (g->mode == G_WAIT) {
        wsq_h1_next(&g->h1);
        g->mode = G_READ;
    } else if (g->mode == G_READ && g->h1.state == WSQ_H1_BODY) {
        g->app_done = true;
    }
}

bool wsq__gate_pipelined(struct lws *wsi)
{
    gate_t *g = gate_of(lws_get_socket_fd(wsi));
    return g && g->pipelined;
}

bool wsq__gate_header_names(struct lws *wsi, const char **names, unsigned *count)
{
    gate_t *g = gate_of(lws_get_socket_fd(wsi));
    *names = NULL;
    *count = 0;
    if (g == NULL)
        return true;
    *names = g->hn.names;
    *count = g->hn.count;
    return !g->hn.too_long;
}

bool wsq__gate_ws_violation(struct lws *wsi)
{
    gate_t *g = gate_of(lws_get_socket_fd(wsi));
    return g && g->mode == G_DISCARD;
}

/* ------------------------------------------------------------------------------------------- */

/* Feeds the head bytes p[0..n) of the current request to the Wsq-Header- name scanner. The head
 * was framed by wsq_h1 (which refuses what is malformed); the scanner only has to find lines. */
static void hn_feed(hnames_t *hn, const uint8_t *p, size_t n)
{
    static const char prefix[] = WSQ_HEADER_PREFIX;
    for (size_t i = 0; i < n && hn->st != 3; i++) {
        uint8_t c = p[i];
        if (c == '\r') {
            hn->cr = true;
            continue;
        }
        if (c == '\n') {
            if (hn->st == 0 && hn->matched == 0 && hn->cr)
                hn->st = 3; /* the empty line */
            else if (hn->st == 1)
                hn->too_long = true; /* a line without ':' (wsq_h1 refuses it anyway) */
            hn->st = hn->st == 3 ? 3 : 0;
            hn->matched = 0;
            hn->cr = false;
            continue;
        }
        hn->cr = false;
        uint8_t lc = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
        if (hn->st == 0) {
            if (lc != (uint8_t)prefix[hn->matched]) {
                hn->st = 2;
            } else if (++hn->matched == sizeof(prefix) - 1) {
                hn->st = 1;
                hn->cur = 0;
                if (hn->cap - hn->len < WSQ_HEADER_KEY_MAX + 1) {
                    size_t cap = hn->cap ? hn->cap * 2 : 4 * (WSQ_HEADER_KEY_MAX + 1);
                    char *nn = realloc(hn->names, cap);
                    if (nn == NULL) {
                        hn->too_long = true; /* refused below, as if too long */
                        hn->st = 2;
                        continue;
                    }
                    hn->names = nn;
                    hn->cap = cap;
                }
            }
        } else if (hn->st == 1) {
            if (c == ':') {
                hn->names[hn->len + hn->cur] = '\0';
                hn->len += hn->cur + 1u;
                hn->count++;
                hn->st = 2;
            } else if (hn->cur == WSQ_HEADER_KEY_MAX) {
                hn->too_long = true;
                hn->st = 2;
            } else {
                hn->names[hn->len + hn->cur++] = (char)lc;
            }
        }
    }
}

static void hn_reset(hnames_t *hn)
{
    char *names = hn->names;
    size_t cap = hn->cap;
    memset(hn, 0, sizeof(*hn));
    hn->names = names; /* kept for the next request */
    hn->cap = cap;
}

/* After lws took n bytes that the framer accepted: where the connection goes next. */
static void advance(gate_t *g)
{
    switch (g->h1.state) {
    case WSQ_H1_UPGRADE:
        g->mode = G_WS;
        break;
    case WSQ_H1_DONE:
        if (g->app_done) { /* lws has answered and discarded this body: on to the next */
            g->app_done = false;
            wsq_h1_next(&g->h1);
        } else {
            g->mode = G_WAIT;
        }
        break;
    default:
        break;
    }
}

/* The answer to a head the framer refused: status, JSON body, Connection: close. */
static int refusal(const gate_t *g, char *out, size_t outlen)
{
    static const struct {
        unsigned st;
        const char *text;
    } texts[] = {{400, "Bad Request"},       {411, "Length Required"},
                 {413, "Payload Too Large"}, {431, "Request Header Fields Too Large"},
                 {501, "Not Implemented"},   {505, "HTTP Version Not Supported"}};
    const char *text = "Bad Request";
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        if (texts[i].st == g->h1.status)
            text = texts[i].text;
    char body[256];
    int bl = snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}\n",
                      wsq_errname(g->h1.code), g->h1.reason);
    wsq_info_log("refused", "peer=%s status=%u code=%s msg=\"%s\"", g->peer, g->h1.status,
                 wsq_errname(g->h1.code), g->h1.reason);
    return snprintf(out, outlen,
                    "HTTP/1.1 %u %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                    "connection: close\r\n\r\n%s",
                    g->h1.status, text, bl, body);
}

/* G_WS: n bytes of WebSocket frames just read into buf. Returns how many lws may have: all of
 * them, or those before an unmasked frame; then the connection drops everything after it, and
 * the session, woken, closes it with 1002. */
static size_t ws_check(gate_t *g, const void *buf, size_t n)
{
    size_t ok = wsq_wsrx_scan(&g->ws, buf, n);
    if (g->ws.unmasked) {
        g->mode = G_DISCARD;
        wsq_info_log("refused", "peer=%s code=1002 msg=\"unmasked client frame\"", g->peer);
        lws_callback_on_writable(g->wsi);
    }
    return ok;
}

/* READ mode: moves the available bytes of the current request into lws's buffer (len bytes),
 * never a byte of the next request. avail bytes of the stream were peeked into peeked; on return
 * *used says how many of them lws has (the caller consumes exactly those from the transport).
 * Returns the bytes placed in buf, which may hold more than *used: a POST without
 * Content-Length has an empty body (RFC 9112 6.3), but lws would wait for one, so lws reads a
 * "Content-Length: 0" line the client did not send, in place of the empty line (which comes
 * right after it). A line that does not fit goes in part, and lws, its buffer full, reads the
 * rest at once. With h1.state WSQ_H1_ERROR the request is refused. */
static size_t frame(gate_t *g, const uint8_t *peeked, size_t avail, uint8_t *buf, size_t len,
                    size_t *used)
{
    static const char clen0[] = WSQ_H1_CLEN0;
    size_t in = 0, out = 0;
    while (out < len) {
        if (g->h1.inject) {
            size_t n = sizeof(clen0) - 1 - g->inject_off;
            if (n > len - out)
                n = len - out;
            memcpy(buf + out, clen0 + g->inject_off, n);
            out += n;
            g->inject_off += n;
            if (g->inject_off < sizeof(clen0) - 1)
                break;
            g->inject_off = 0;
            wsq_h1_injected(&g->h1);
            continue;
        }
        size_t room = len - out, left = avail - in;
        bool head = g->h1.state == WSQ_H1_HEAD;
        if (head && g->h1.head_len == 0)
            hn_reset(&g->hn); /* a new request */
        size_t take = wsq_h1_feed(&g->h1, peeked + in, left < room ? left : room);
        if (head)
            hn_feed(&g->hn, peeked + in, take);
        memcpy(buf + out, peeked + in, take);
        in += take;
        out += take;
        if (!g->h1.inject || g->h1.state == WSQ_H1_ERROR)
            break;
    }
    *used = in;
    return out;
}

/* Scratch for peeking, service thread only: as large as lws's read buffer (pt_serv_buf_size). */
static uint8_t peeked[64 * 1024];

/* ---- plain connections --------------------------------------------------------------------- */

/* G_WAIT: lws reads before the answer is out. Whatever the client sent is a pipelined request:
 * it is discarded (so that the descriptor stops being readable) and the answer closes the
 * connection. End of file is passed on. G_DISCARD drops input the same way. */
static ssize_t plain_wait(gate_t *g, int fd)
{
    char scratch[4096];
    for (;;) {
        ssize_t n = real_recv()(fd, scratch, sizeof(scratch), MSG_DONTWAIT);
        if (n > 0) {
            g->pipelined = g->mode == G_WAIT;
            continue;
        }
        if (n == 0)
            return 0;
        return -1; /* EAGAIN as lws expects it, or the real error */
    }
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    gate_t *g = gate_of(fd);
    if (g == NULL || g->tls || flags != 0)
        return real_recv()(fd, buf, len, flags);
    if (g->mode == G_WS) {
        ssize_t n = real_recv()(fd, buf, len, 0);
        if (n <= 0)
            return n;
        size_t ok = ws_check(g, buf, (size_t)n);
        if (ok == 0) {
            errno = EAGAIN; /* 0 would read as end of file */
            return -1;
        }
        return (ssize_t)ok;
    }
    if (g->mode == G_CLOSED)
        return 0;
    if (g->mode == G_WAIT || g->mode == G_DISCARD)
        return plain_wait(g, fd);
    size_t want = len < sizeof(peeked) ? len : sizeof(peeked);
    ssize_t n = real_recv()(fd, peeked, want, MSG_PEEK);
    if (n <= 0 && !g->h1.inject)
        return n;
    if (n < 0)
        n = 0; /* the rest of an injected line is ready in any case */
    size_t used, out = frame(g, peeked, (size_t)n, buf, len, &used);
    if (g->h1.state == WSQ_H1_ERROR) {
        char resp[512];
        int rl = refusal(g, resp, sizeof(resp));
        (void)!send(fd, resp, (size_t)rl, MSG_NOSIGNAL | MSG_DONTWAIT);
        shutdown(fd, SHUT_WR);
        g->mode = G_CLOSED;
        plain_wait(g, fd); /* unread input would turn the close into a reset */
        return 0;
    }
    if (used && real_recv()(fd, peeked, used, 0) != (ssize_t)used) /* the bytes looked at */
        return -1;
    advance(g);
    char c;
    if (g->mode == G_WAIT && real_recv()(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0)
        g->pipelined = true;
    return (ssize_t)out;
}

/* ---- TLS connections ----------------------------------------------------------------------- */

/* As plain_wait. Every return is the real SSL_read's, so SSL_get_error() describes it. */
static int tls_wait(gate_t *g, SSL *ssl)
{
    char scratch[4096];
    for (;;) {
        int n = real_ssl_read()(ssl, scratch, sizeof(scratch));
        if (n <= 0)
            return n;
        g->pipelined = g->mode == G_WAIT;
    }
}

int SSL_read(SSL *ssl, void *buf, int num)
{
    gate_t *g = ssl ? gate_of(SSL_get_fd(ssl)) : NULL;
    if (g == NULL || !g->tls || num <= 0)
        return real_ssl_read()(ssl, buf, num);
    if (g->mode == G_WS) {
        int n = real_ssl_read()(ssl, buf, num);
        if (n <= 0)
            return n;
        size_t ok = ws_check(g, buf, (size_t)n);
        return ok ? (int)ok : tls_wait(g, ssl); /* drains to a real "want read" */
    }
    if (g->mode == G_CLOSED)
        return 0;
    if (g->mode == G_WAIT || g->mode == G_DISCARD)
        return tls_wait(g, ssl);
    size_t len = (size_t)num, want = len < sizeof(peeked) ? len : sizeof(peeked);
    int n = SSL_peek(ssl, peeked, (int)want);
    if (n <= 0 && !g->h1.inject)
        return n;
    if (n < 0)
        n = 0; /* the rest of an injected line is ready in any case */
    size_t used, out = frame(g, peeked, (size_t)n, buf, len, &used);
    if (g->h1.state == WSQ_H1_ERROR) {
        char resp[512];
        int rl = refusal(g, resp, sizeof(resp));
        (void)SSL_write(ssl, resp, rl);
        g->mode = G_CLOSED;
        return 0; /* SSL_get_error says SSL_ERROR_SYSCALL: lws closes */
    }
    if (used && real_ssl_read()(ssl, peeked, (int)used) != (int)used)
        return -1;
    advance(g);
    /* Decrypted bytes left in OpenSSL raise no POLLIN, and lws asks OpenSSL for them only after
     * a read that filled its buffer: what remains after a whole request is a pipelined one, and
     * the answer closes the connection. */
    char c;
    if (g->mode == G_WAIT &&
        (SSL_pending(ssl) > 0 || real_recv()(SSL_get_fd(ssl), &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0))
        g->pipelined = true;
    return (int)out;
}
