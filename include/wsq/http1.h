/*
 * HTTP/1.1 request framing (RFC 9112), strict: where each request of a connection ends.
 *
 * wsqd reads every HTTP connection through this framer before libwebsockets sees a byte
 * (broker/http_gate.c), for two reasons:
 *   - lws 4.1 must never be handed more than one request at a time: a request it parses out of
 *     bytes that arrived behind another one (HTTP pipelining) has its body taken from its own
 *     header bytes, and lws then reports the body complete in an endless loop;
 *   - lws closes the connection without a status on heads it cannot parse (too large, too many
 *     headers, a NUL in the path), and answers some others with an HTML page. The framer refuses
 *     them first, with a status that wsqd sends with a JSON body.
 *
 * It accepts only what both it and lws read the same way: CRLF line ends, no obsolete line
 * folding, one Content-Length of digits, no Transfer-Encoding, a request target in origin form.
 *
 * Pure: no I/O, no globals, no allocation. One wsq_h1_t per connection; any thread, one at a time.
 * Library wsqproto (proto/http1.c).
 */
#ifndef WSQ_HTTP1_H
#define WSQ_HTTP1_H

#include <stddef.h>
#include <stdint.h>

#include "wsq/err.h"

/* lws keeps every header line and every query parameter in one fixed array of 95 fragments;
 * past it, it drops the connection. These bounds keep a request inside it, with room to spare. */
#define WSQ_H1_MAX_HEADERS 64
#define WSQ_H1_MAX_QUERY_PARAMS 24

#define WSQ_H1_CLEN0 "Content-Length: 0\r\n"

typedef enum {
    WSQ_H1_HEAD = 0, /* reading a request head */
    WSQ_H1_BODY,     /* reading the body: body_left bytes remain */
    WSQ_H1_DONE,     /* a whole request read: wsq_h1_next() starts the next one */
    WSQ_H1_UPGRADE,  /* a WebSocket upgrade head read: what follows is not HTTP */
    WSQ_H1_ERROR,    /* malformed: status, code and reason say why; nothing more is read */
} wsq_h1_state_t;

typedef struct {
    /* results */
    wsq_h1_state_t state;
    unsigned status;    /* WSQ_H1_ERROR: the HTTP status to answer (400, 411, 413, 431, 501, 505) */
    wsq_err code;       /* WSQ_H1_ERROR: the error code of the JSON body */
    const char *reason; /* WSQ_H1_ERROR: human message, static storage */
    uint64_t body_left; /* WSQ_H1_BODY: body bytes still to come */
    /* Set when the head of a POST, PUT or PATCH without Content-Length reaches its empty line:
     * the body is empty (RFC 9112 6.3), but lws 4.1 would wait for 100 MB of it. The reader
     * hands lws WSQ_H1_CLEN0 before the empty line, clears inject and feeds on. */
    uint8_t inject;
    /* limits */
    uint32_t max_head; /* most bytes of the request line and headers, CRLFs included */
    /* parser state (private) */
    uint32_t head_len; /* head bytes so far */
    uint16_t nheaders; /* header lines so far */
    uint16_t nparams;  /* query parameters so far */
    uint8_t part;      /* which part of the head the next byte belongs to */
    uint8_t sub;       /* target: 0 before its first byte; Content-Length: value bytes so far */
    uint8_t pct;       /* percent-escape state in the target */
    uint8_t hname;     /* which header this line is (content-length, upgrade, ...) */
    uint16_t flags;    /* what the head has said so far */
    uint8_t method;    /* the request method */
    char buf[24];      /* the method, version or header name read so far (lower case); in the
                        * path, the two decoded bytes before */
    uint8_t buflen;
    uint8_t vstate; /* the value of the current header line, as far as it matters: bytes
                     * matched against "websocket" or "13", non-blank bytes of Host */
    uint64_t clen;  /* Content-Length value */
} wsq_h1_t;

/* Starts framing a connection. max_head: limits.max_header_size. */
void wsq_h1_init(wsq_h1_t *f, uint32_t max_head);

/* Consumes bytes of the current request from p[0..len). Returns how many belong to it (<= len):
 * it stops at the end of the request (state WSQ_H1_DONE or WSQ_H1_UPGRADE), at the byte that
 * makes the request malformed (state WSQ_H1_ERROR), and before the empty line when it sets
 * inject. In states DONE, UPGRADE and ERROR, and while inject is set, it consumes nothing. */
size_t wsq_h1_feed(wsq_h1_t *f, const uint8_t *p, size_t len);

/* The reader has handed lws WSQ_H1_CLEN0 (see inject): feeding goes on. */
void wsq_h1_injected(wsq_h1_t *f);

/* After WSQ_H1_DONE: the next request of the connection starts. */
void wsq_h1_next(wsq_h1_t *f);

#endif
