/* The JWKS fetcher (auth.jwt.jwks_url): see jwks.c. Start, stop, reconfig, keys and kick are
 * for the service thread; the fetch runs on the fetcher's own thread. */
#ifndef WSQ_BROKER_JWKS_H
#define WSQ_BROKER_JWKS_H

#include <stdbool.h>
#include <stdint.h>

#include "wsq/config.h"
#include "wsq/err.h"
#include "wsq/jwt.h"

typedef struct wsq_jwks wsq_jwks_t;

typedef struct {
    bool configured;
    int64_t age_ms; /* since the last good fetch; -1: none yet */
    uint64_t keys;  /* in the last good set */
    uint64_t ok_total, failed_total;
} wsq_jwks_stats_t;

/* Starts fetching cfg's jwks_url (*out NULL when there is none). WSQ_ERR_NOMEM. */
wsq_err wsq__jwks_start(const wsq_config_t *cfg, wsq_jwks_t **out);
/* Stops the fetch (an ongoing one is aborted), joins the thread, frees. NULL is a no-op. */
void wsq__jwks_stop(wsq_jwks_t **j);
/* After a reload: the same URL, CA and interval keep the fetcher and its keys; else restarts. */
wsq_err wsq__jwks_reconfig(wsq_jwks_t **j, const wsq_config_t *cfg);
/* The last good set (taking a newly fetched one), or NULL before the first good fetch. Valid
 * until the next call. */
const wsq_jwt_keys_t *wsq__jwks_keys(wsq_jwks_t *j);
/* A token named a kid no key has: fetch soon (at most once per 30 s). */
void wsq__jwks_kick(wsq_jwks_t *j);
/* For /healthz and /metrics; any thread. */
void wsq__jwks_stats(const wsq_jwks_t *j, wsq_jwks_stats_t *st);

#endif
