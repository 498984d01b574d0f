/* HTTP routing and the admin import body: pure functions (no lws, no I/O), so they can be
 * unit-tested and fuzzed. Internal to broker/. */
#ifndef WSQ_HTTP_ROUTE_H
#define WSQ_HTTP_ROUTE_H

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
} wsq_route_kind_t;

typedef struct {
    wsq_route_kind_t kind;
    char topic[256]; /* PUBLISH, HISTORY (and BAD_TOPIC: empty) */
    size_t topic_len;
    const char *admin_op; /* ADMIN: points into path, after "/admin/" */
} wsq_route_t;

/* Routes a request path (already percent-decoded by lws, without the query). Topic names may
 * contain '/', so: a GET whose path ends in "/messages" reads the history of what precedes it;
 * a POST publishes to everything after "/topics/". path may be NULL (NOT_FOUND). */
void wsq__http_route(const char *path, bool get, bool post, wsq_route_t *r);

/* One message of an import body. Return WSQ_OK to go on. */
typedef wsq_err (*wsq_import_fn)(void *arg, const wsq_frame_t *msg);

/* Parses a JSON Lines import body: one {"topic":..,"data":..,"enc":"base64"?} object per line
 * (a wsq.v1 pub without "op"; empty lines skipped), calling fn for each. Stops at the first bad
 * line: its error code is returned and msg says "line N: why". *lines (may be NULL) gets the
 * number of messages passed to fn. */
wsq_err wsq__import_parse(const char *body, size_t len, size_t max_payload, wsq_import_fn fn,
                          void *arg, char *msg, size_t msglen, uint64_t *lines);

#endif
