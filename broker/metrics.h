/*
 * Counters and histograms (metrics.c): plain atomic counters that every thread bumps, and the
 * Prometheus text of GET /metrics, rendered on the service thread.
 */
#ifndef WSQ_METRICS_H
#define WSQ_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "wsq/proto.h"
#include "wsq/store.h"

typedef struct wsq_server wsq_server_t;

/* Bucket upper bounds of the commit histograms (the last bucket is +Inf). */
#define WSQ_BATCH_BUCKETS 12
#define WSQ_LATENCY_BUCKETS 12

/* Limit refusals, by limit (wsq_limit_refusals_total{limit=...}) */
typedef enum {
    WSQ_LIM_CONNECTIONS = 0,
    WSQ_LIM_CONNECTIONS_PER_IP,
    WSQ_LIM_SUBSCRIPTIONS,
    WSQ_LIM_WINDOW,
    WSQ_LIM_MESSAGE_SIZE,
    WSQ_LIM_PUBLISH_RATE,
    WSQ_LIM_MESSAGE_HEADERS,
    WSQ_LIM_COUNT
} wsq_limit_t;

/* Authentication failures, by reason (wsq_auth_failures_total{reason=...}) */
typedef enum {
    WSQ_AUTHF_BAD_HEADER = 0, /* Authorization is not "Bearer <token>" */
    WSQ_AUTHF_UNKNOWN_TOKEN,  /* not a configured token, and no JWT secret accepts it */
    WSQ_AUTHF_MALFORMED,      /* JWT: not three base64url parts, bad JSON */
    WSQ_AUTHF_BAD_ALG,
    WSQ_AUTHF_BAD_SIGNATURE,
    WSQ_AUTHF_EXPIRED,
    WSQ_AUTHF_NOT_YET_VALID,
    WSQ_AUTHF_BAD_ISSUER,
    WSQ_AUTHF_BAD_AUDIENCE,
    WSQ_AUTHF_BAD_CLAIMS,
    WSQ_AUTHF_ORIGIN,      /* browser Origin not in auth.allowed_origins */
    WSQ_AUTHF_HOST,        /* Host does not name the loopback listener (DNS rebinding) */
    WSQ_AUTHF_REVOKED,     /* credentials withdrawn by a reload */
    WSQ_AUTHF_UNKNOWN_KEY, /* JWT: no configured key of its algorithm, or none with its "kid" */
    WSQ_AUTHF_COUNT
} wsq_authf_t;

/* The label of an auth failure reason; static storage. */
const char *wsq__authf_name(wsq_authf_t r);

typedef struct {
    _Atomic uint64_t connections; /* currently open WebSocket connections */
    _Atomic uint64_t connections_total;
    _Atomic uint64_t published; /* confirmed appends */
    _Atomic uint64_t publish_errors;
    _Atomic uint64_t delivered; /* messages handed to sockets (incl. redeliveries) */
    _Atomic uint64_t redelivered;
    _Atomic uint64_t acked;
    _Atomic uint64_t nacked;
    _Atomic uint64_t gaps;
    _Atomic uint64_t corrupt; /* stored messages that failed their checksum when read */
    _Atomic uint64_t commits;
    _Atomic uint64_t commit_ns_total;
    _Atomic uint64_t paused;         /* publisher pauses (backpressure) */
    _Atomic uint64_t dead_lettered;  /* messages moved to their dead-letter topic */
    _Atomic uint64_t pattern_topics; /* per-topic subscriptions of topic patterns, now */
    _Atomic uint64_t reloads;
    _Atomic uint64_t reload_failures;
    _Atomic uint64_t limit_refusals[WSQ_LIM_COUNT];
    _Atomic uint64_t auth_failures[WSQ_AUTHF_COUNT];
    _Atomic uint64_t batch_hist[WSQ_BATCH_BUCKETS + 1]; /* requests per commit */
    _Atomic uint64_t batch_sum;
    _Atomic uint64_t latency_hist[WSQ_LATENCY_BUCKETS + 1]; /* commit duration */
    _Atomic uint64_t latency_sum_ns;
} wsq_metrics_t;

/* Adds one to a counter; any thread. */
#define wsq__count(m, field) atomic_fetch_add_explicit(&(m)->field, 1, memory_order_relaxed)

/* Writer thread: a commit's size and duration into the histograms. */
void wsq__metrics_commit(wsq_metrics_t *m, const wsq_commit_info_t *info);

/* Service thread: the Prometheus text of every metric, the per-topic and per-consumer series
 * (capped) included, appended to out. */
void wsq__metrics_render(wsq_server_t *srv, wsq_buf_t *out);

#endif
