/*
 * HTTP routing and the admin import body (library wsqproto, proto/route.c): pure functions, no
 * lws, no I/O, no allocation that outlives a call, no globals, so they can be unit-tested and
 * fuzzed (tests/fuzz/fuzz_http.c). wsqd's HTTP front-end is the caller. Any thread; nothing is
 * shared between calls.
 */
#ifndef WSQ_ROUTE_H
#define WSQ_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsq/err.h"
#include "wsq/proto.h"

typedef enum {
    WSQ_ROUTE_NOT_FOUND = 0, /* 404 */
    WSQ_ROUTE_BAD_METHOD,    /* 405 */
    WSQ_ROUTE_BAD_TOPIC,     /* 400 bad_topic */
    WSQ_ROUTE_HEALTH,        /* GET /healthz */
    WSQ_ROUTE_METRICS,       /* GET /metrics */
    WSQ_ROUTE_ADMIN,         /* /admin/<op> (method checked by the admin handler) */
    WSQ_ROUTE_PUBLISH,       /* POST /topics/<topic> */
    WSQ_ROUTE_HISTORY,       /* GET /topics/<topic>/messages */
    WSQ_ROUTE_FETCH,         /* POST /fetch (pull: topic and consumer in the query) */
    WSQ_ROUTE_ACK,           /* POST /ack */
    WSQ_ROUTE_NACK,          /* POST /nack */
} wsq_route_kind_t;

typedef struct {
    wsq_route_kind_t kind;
    char topic[256]; /* PUBLISH, HISTORY: the validated topic, NUL-terminated (else empty) */
    size_t topic_len;
    const char *admin_op; /* ADMIN: points into the path given, after "/admin/" */
} wsq_route_t;

/*
 * Routes a request path (already percent-decoded by lws, without the query). Topic names may
 * contain '/', so: a GET whose path ends in "/messages" reads the history of what precedes it;
 * a POST publishes to everything after "/topics/".
 *
 * path: NUL-terminated, or NULL (NOT_FOUND). get, post: the request method. r: overwritten
 * entirely; never an error, every outcome is a kind (NOT_FOUND, BAD_METHOD and BAD_TOPIC are the
 * refusals). r->admin_op points into path and is valid as long as path is.
 */
void wsq_http_route(const char *path, bool get, bool post, wsq_route_t *r);

/* One message of an import body: msg and everything it points to belong to the parser and are
 * valid only during the call (copy what must outlive it). Return WSQ_OK to go on; any other code
 * stops the parse and is returned by it. The callback may write its own reason into the msg
 * buffer the caller gave wsq_import_parse (reached through arg): the parser then prefixes it with
 * the line number. */
typedef wsq_err (*wsq_import_fn)(void *arg, const wsq_frame_t *msg);

/*
 * Parses a JSON Lines import body: one {"topic":..,"data":..,"enc":"base64"?} object per line (a
 * wsq.v1 pub without "op", decoded by wsq_proto_decode; lines of only blanks are skipped), and
 * calls fn(arg, frame) for each, in order.
 *
 * body[0..len): the body, not NUL-terminated. max_payload caps each decoded payload.
 * msg[0..msglen): receives "line N: why" for the line that stopped the parse ("" on success).
 * *lines (lines may be NULL) gets the number of messages fn accepted.
 *
 * Returns WSQ_OK when every line went through fn. Otherwise it stops at the first bad line and
 * returns WSQ_ERR_BAD_JSON (not a JSON object), the error of wsq_proto_decode for the line
 * (WSQ_ERR_BAD_JSON, WSQ_ERR_BAD_REQUEST, WSQ_ERR_BAD_TYPE, WSQ_ERR_BAD_TOPIC,
 * WSQ_ERR_TOO_LARGE, ...), WSQ_ERR_NOMEM, or the code fn returned. Messages fn accepted before
 * the bad line stay accepted: the caller decides what a partial import means.
 */
wsq_err wsq_import_parse(const char *body, size_t len, size_t max_payload, wsq_import_fn fn,
                         void *arg, char *msg, size_t msglen, uint64_t *lines);

#endif
