/*
 * The JWKS fetcher (auth.jwt.jwks_url): one thread that fetches an identity provider's JWK Set
 * over https with libcurl, at start, every jwks_refresh, and soon after a token names a key
 * that no key of the set has (at most once per KICK_GAP_MS, so tokens with made-up kids cannot
 * make wsqd hammer the provider). A good set waits in `pending` until the service thread next
 * needs keys and takes it (wsq__jwks_keys); a failed fetch keeps the last good set and is
 * counted. The service thread never waits for the network.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jwks.h"
#include "log.h"
#include "server.h"
#include "wsq/clock.h"
#include "wsq/jwt.h"

#define JWKS_MAX (1024 * 1024)  /* bytes of a JWK Set */
#define FETCH_TIMEOUT_S 10      /* one fetch, connect included */
#define KICK_GAP_MS (30 * 1000) /* unknown kids refetch at most this often */
#define RETRY_MS (30 * 1000)    /* after a failure, before the next try */

struct wsq_jwks {
    char *url, *ca_file;
    int64_t refresh_ms;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool started;
    _Atomic bool stop;
    bool kicked;                /* under lock: an unknown kid asks for a fetch */
    int64_t last_kick_ms;       /* ST only */
    wsq_jwt_keys_t *pending;    /* under lock: a fetched set the service thread has not taken */
    wsq_jwt_keys_t *current;    /* ST only: the set in use */
    _Atomic int64_t last_ok_ms; /* 0: never */
    _Atomic uint64_t ok_total, failed_total, n_keys;
};

typedef struct {
    char *data;
    size_t len;
    bool too_big;
} body_t;

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    body_t *b = arg;
    size_t len = size * n;
    if (b->len + len > JWKS_MAX) {
        b->too_big = true;
        return 0; /* aborts the transfer */
    }
    char *d = realloc(b->data, b->len + len + 1);
    if (d == NULL)
        return 0;
    memcpy(d + b->len, p, len);
    b->data = d;
    b->len += len;
    d[b->len] = '\0';
    return len;
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    return atomic_load(&((wsq_jwks_t *)arg)->stop) ? 1 : 0; /* a stop aborts the fetch */
}

/* One fetch; true when a good set was handed over. */
static bool fetch(wsq_jwks_t *j)
{
    body_t b = {0};
    char cerr[CURL_ERROR_SIZE] = "", why[300] = "";
    long status = 0;
    CURL *c = curl_easy_init();
    if (c == NULL)
        return false;
    curl_easy_setopt(c, CURLOPT_URL, j->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https"); /* https only, redirects included */
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)FETCH_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, j);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "wsqd");
    if (j->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, j->ca_file);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);

    wsq_jwt_keys_t *ks = NULL;
    if (rc != CURLE_OK)
        snprintf(why, sizeof(why), "%s",
                 b.too_big ? "larger than 1 MiB"
                 : cerr[0] ? cerr
                           : curl_easy_strerror(rc));
    else if (status != 200)
        snprintf(why, sizeof(why), "HTTP status %ld", status);
    else if (wsq_jwt_keys_new(&ks) != WSQ_OK)
        snprintf(why, sizeof(why), "out of memory");
    else if (wsq_jwt_keys_add_jwks(ks, b.data ? b.data : "", b.len, why, sizeof(why)) != WSQ_OK &&
             why[0] == '\0')
        snprintf(why, sizeof(why), "out of memory");
    free(b.data);
    if (why[0]) {
        wsq_jwt_keys_free(ks);
        if (!atomic_load(&j->stop)) {
            atomic_fetch_add(&j->failed_total, 1);
            wsq_warn_log("jwks",
                         "status=failed url=%s error=\"%s\" msg=\"the last good keys stay\"",
                         j->url, why);
        }
        return false;
    }
    size_t n = wsq_jwt_keys_count(ks);
    pthread_mutex_lock(&j->lock);
    wsq_jwt_keys_t *old = j->pending;
    j->pending = ks;
    pthread_mutex_unlock(&j->lock);
    wsq_jwt_keys_free(old); /* never taken: superseded */
    atomic_store(&j->n_keys, n);
    atomic_store(&j->last_ok_ms, wsq_now_ms());
    atomic_fetch_add(&j->ok_total, 1);
    wsq_info_log("jwks", "status=ok url=%s keys=%zu", j->url, n);
    return true;
}

static void *jwks_main(void *arg)
{
    wsq_jwks_t *j = arg;
    while (!atomic_load(&j->stop)) {
        bool ok = fetch(j);
        int64_t wait = ok ? j->refresh_ms : (RETRY_MS < j->refresh_ms ? RETRY_MS : j->refresh_ms);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&j->lock);
        while (!j->kicked && !atomic_load(&j->stop) &&
               pthread_cond_timedwait(&j->cond, &j->lock, &ts) == 0)
            ;
        j->kicked = false;
        pthread_mutex_unlock(&j->lock);
    }
    return NULL;
}

static void jwks_free(wsq_jwks_t *j)
{
    wsq_jwt_keys_free(j->pending);
    wsq_jwt_keys_free(j->current);
    pthread_cond_destroy(&j->cond);
    pthread_mutex_destroy(&j->lock);
    free(j->url);
    free(j->ca_file);
    free(j);
}

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

wsq_err wsq__jwks_start(const wsq_config_t *cfg, wsq_jwks_t **out)
{
    *out = NULL;
    if (cfg->auth.jwt_jwks_url == NULL)
        return WSQ_OK;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, curl_init_once); /* not thread-safe: before any fetch thread */
    wsq_jwks_t *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return WSQ_ERR_NOMEM;
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->cond, NULL);
    j->url = strdup(cfg->auth.jwt_jwks_url);
    j->ca_file = cfg->auth.jwt_jwks_ca_file ? strdup(cfg->auth.jwt_jwks_ca_file) : NULL;
    j->refresh_ms = cfg->auth.jwt_jwks_refresh_ms;
    if (j->url == NULL || (cfg->auth.jwt_jwks_ca_file && j->ca_file == NULL) ||
        pthread_create(&j->thread, NULL, jwks_main, j) != 0) {
        jwks_free(j);
        return WSQ_ERR_NOMEM;
    }
    j->started = true;
    *out = j;
    return WSQ_OK;
}

void wsq__jwks_stop(wsq_jwks_t **jp)
{
    wsq_jwks_t *j = *jp;
    if (j == NULL)
        return;
    pthread_mutex_lock(&j->lock);
    atomic_store(&j->stop, true);
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->lock);
    if (j->started)
        pthread_join(j->thread, NULL);
    jwks_free(j);
    *jp = NULL;
}

static bool same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

wsq_err wsq__jwks_reconfig(wsq_jwks_t **jp, const wsq_config_t *cfg)
{
    wsq_jwks_t *j = *jp;
    if (j != NULL && same(j->url, cfg->auth.jwt_jwks_url) &&
        same(j->ca_file, cfg->auth.jwt_jwks_ca_file) &&
        j->refresh_ms == cfg->auth.jwt_jwks_refresh_ms)
        return WSQ_OK; /* the same source: keep its keys and its schedule */
    wsq__jwks_stop(jp);
    return wsq__jwks_start(cfg, jp);
}

const wsq_jwt_keys_t *wsq__jwks_keys(wsq_jwks_t *j)
{
    if (j == NULL)
        return NULL;
    pthread_mutex_lock(&j->lock);
    wsq_jwt_keys_t *p = j->pending;
    j->pending = NULL;
    pthread_mutex_unlock(&j->lock);
    if (p != NULL) {
        wsq_jwt_keys_free(j->current);
        j->current = p;
    }
    return j->current;
}

void wsq__jwks_kick(wsq_jwks_t *j)
{
    int64_t now = wsq_now_ms();
    if (j == NULL || now - j->last_kick_ms < KICK_GAP_MS)
        return;
    j->last_kick_ms = now;
    pthread_mutex_lock(&j->lock);
    j->kicked = true;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->lock);
}

void wsq__jwks_stats(const wsq_jwks_t *j, wsq_jwks_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    if (j == NULL)
        return;
    st->configured = true;
    int64_t ok = atomic_load(&j->last_ok_ms);
    st->age_ms = ok ? wsq_now_ms() - ok : -1;
    st->keys = atomic_load(&j->n_keys);
    st->ok_total = atomic_load(&j->ok_total);
    st->failed_total = atomic_load(&j->failed_total);
}
