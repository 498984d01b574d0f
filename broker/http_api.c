/*
 * HTTP on the broker's port (service thread only):
 *   POST /topics/<topic>                      publish the body; {"seq":N} after commit
 *   GET  /topics/<topic>/messages?from=&limit= history
 *   GET  /healthz                             storage writable?
 *   GET  /metrics                             Prometheus text
 * Every error is a status with a JSON body {"error":{"code":..,"message":..}}.
 *
 * Also here: the WebSocket upgrade check (HTTP_CONFIRM_UPGRADE), which refuses bad upgrades with
 * a real HTTP/1.1 response rather than a dropped socket.
 */
#include <libwebsockets.h>
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "broker.h"
#include "wsq/route.h"
#include "req.h"
#include "session.h"
#include "wsq/clock.h"

/* Appends a string literal (its length computed, never counted by hand). */
#define WSQ_BUF_LIT(b, lit) wsq_buf_append((b), (lit), sizeof(lit) - 1)

#define HISTORY_LIMIT_MAX 1000u
#define DISCARD_MAX (64ull << 20) /* largest refused body read to its end, not closed on */
#define HISTORY_BYTES_MAX (4u << 20)

typedef enum { H_PUBLISH = 0, H_PURGE, H_DELETE_CONSUMER, H_IMPORT } http_op_t;

/* Where one request stands. The requests of a connection are served one at a time: the gate
 * (http_gate.c) hands lws one request, and the next only after wsq__gate_next(), which follows
 * lws_http_transaction_completed(), which follows the whole answer. An answer known at once (most
 * of them) is written inside the lws callback that produced it; one that waits for a commit is
 * written from WRITEABLE. */
typedef enum {
    HP_PENDING,  /* the answer waits for the body */
    HP_WORKING,  /* handed to the writer: the answer comes with the commit */
    HP_ANSWER,   /* status and body ready: written now, or at the next WRITEABLE */
    HP_FLUSHING, /* written, partly still in lws: the transaction ends once it is out */
    HP_SENT,     /* out; the connection goes on to the next request, or closes */
} http_phase_t;

struct wsq_http {
    http_op_t op;          /* what the body/confirm is for */
    http_phase_t phase;    /* changed only by set_phase() */
    bool complete;         /* the whole request (headers and body) is in */
    bool close_after;      /* answer with Connection: close, then close */
    bool preflight;        /* a CORS preflight: the answer says what the origin may do */
    bool head_only;        /* HEAD: the answer's headers, without its body */
    wsq_browser_t browser; /* Origin, and whether answers carry CORS headers */
    uint64_t expect;       /* H_IMPORT: appends submitted */
    uint64_t done;         /* H_IMPORT: appends completed */
    wsq_err first_err;     /* H_IMPORT: first refusal */
    char topic[WSQ_TOPIC_MAX + 1];
    size_t topic_len;
    bool text;         /* POST Content-Type says text */
    bool resp_text;    /* the response is Prometheus text, not JSON */
    bool publish_body; /* POST /topics/<t>: the body is the message */
    wsq_buf_t body;    /* request body (POST) */
    wsq_buf_t resp;    /* response body */
    unsigned status;   /* response status, set with HP_ANSWER */
    bool too_large;
    uint64_t body_cap; /* largest body this request may have */
};

/* Largest request body: an import carries many messages (wsqctl sends at most 8 MiB); a
 * publish is one message; anything else is limits.max_http_body. */
static uint64_t body_cap(const wsq_config_t *cfg, bool publish, bool import)
{
    uint64_t mms = cfg->limits.max_message_size, mhb = cfg->limits.max_http_body;
    if (import)
        return 64 * mms > mhb ? 64 * mms : mhb;
    if (publish)
        return mms < mhb ? mms : mhb;
    return mhb;
}

/* The one place a request changes phase: phases only move forward. */
static void set_phase(wsq_http_t *h, http_phase_t to)
{
    assert(to > h->phase || (to == HP_ANSWER && h->phase == HP_ANSWER));
    h->phase = to;
}

static const char *status_text(unsigned st)
{
    switch (st) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    case 507:
        return "Insufficient Storage";
    default:
        return "Error";
    }
}

/* HTTP status for a wsq error. */
static unsigned err_status(wsq_err e)
{
    switch (e) {
    case WSQ_ERR_BAD_TOPIC:
    case WSQ_ERR_BAD_REQUEST:
    case WSQ_ERR_BAD_UTF8:
    case WSQ_ERR_BAD_JSON:
    case WSQ_ERR_BAD_TYPE:
    case WSQ_ERR_INVAL:
        return 400;
    case WSQ_ERR_UNAUTHORIZED:
        return 401;
    case WSQ_ERR_FORBIDDEN:
        return 403;
    case WSQ_ERR_NOTFOUND:
        return 404;
    case WSQ_ERR_TOPIC_FULL:
        return 409;
    case WSQ_ERR_TOO_LARGE:
        return 413;
    case WSQ_ERR_CLOSED:
        return 503;
    case WSQ_ERR_STORAGE_FULL:
        return 507;
    default:
        return 500;
    }
}

static void json_error(wsq_buf_t *b, wsq_err code, const char *msg)
{
    b->len = 0;
    const char *name = wsq_errname(code);
    WSQ_BUF_LIT(b, "{\"error\":{\"code\":\"");
    wsq_buf_append(b, name, strlen(name));
    WSQ_BUF_LIT(b, "\",\"message\":\"");
    wsq_json_escape(b, msg, strlen(msg));
    WSQ_BUF_LIT(b, "\"}}\n");
}

void wsq__http_free(wsq_http_t *h)
{
    if (h == NULL)
        return;
    wsq_buf_fini(&h->body);
    wsq_buf_fini(&h->resp);
    free(h);
}

/* ------------------------------------------------------------------------------------------- */
/* upgrade checks */

static void reject_upgrade(struct lws *wsi, unsigned status, wsq_err code, const char *msg)
{
    char peer[64];
    lws_get_peer_simple(wsi, peer, sizeof(peer));
    wsq_info_log("refused", "peer=%s status=%u code=%s msg=\"%s\"", peer, status, wsq_errname(code),
                 msg); /* never the token: msg names the reason only */
    wsq_buf_t body;
    wsq_buf_init(&body);
    json_error(&body, code, msg);
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      status, status_text(status), body.len);
    unsigned char *buf = malloc(LWS_PRE + (size_t)hl + body.len);
    if (buf) {
        memcpy(buf + LWS_PRE, head, (size_t)hl);
        memcpy(buf + LWS_PRE + hl, body.data, body.len);
        lws_write(wsi, buf + LWS_PRE, (size_t)hl + body.len, LWS_WRITE_RAW);
        free(buf);
    }
    wsq_buf_fini(&body);
}

/* Does the upgrade ask for wsq.v1? WSQ_ERR_TOO_LARGE for an absurd Sec-WebSocket-Protocol. */
static wsq_err requests_wsq(struct lws *wsi, bool *yes)
{
    char list[1024];
    *yes = false;
    wsq_err e = wsq__req_header(wsi, WSI_TOKEN_PROTOCOL, list, sizeof(list));
    if (e != WSQ_OK)
        return e == WSQ_ERR_NOTFOUND ? WSQ_OK : e;
    for (char *save = NULL, *tok = strtok_r(list, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save))
        if (strcmp(tok, WSQ_SUBPROTOCOL) == 0)
            *yes = true;
    return WSQ_OK;
}

wsq_err wsq__raw_target(struct lws *wsi, wsq_raw_target_t *t, char *err, size_t errlen)
{
    char dpath[512], path[3 * sizeof(dpath)], query[WSQ_TOKEN_MAX + 2048];
    wsq_err e = wsq__req_header(wsi, WSI_TOKEN_GET_URI, dpath, sizeof(dpath));
    if (e != WSQ_OK) {
        snprintf(err, errlen, e == WSQ_ERR_TOO_LARGE ? "request path too long" : "missing path");
        return WSQ_ERR_BAD_REQUEST;
    }
    /* lws has decoded the path; the parser decodes what it is given */
    wsq__req_encode(dpath, strlen(dpath), path, sizeof(path));
    if (wsq__req_query_all(wsi, query, sizeof(query)) != WSQ_OK) {
        snprintf(err, errlen, "query string too long");
        return WSQ_ERR_BAD_REQUEST;
    }
    return wsq_raw_parse_target(path, query[0] ? query : NULL, t, err, errlen);
}

int wsq__confirm_upgrade(wsq_server_t *srv, struct lws *wsi)
{
    char err[400] = "";
    if (srv->shutting_down) {
        reject_upgrade(wsi, 503, WSQ_ERR_CLOSED, "server is shutting down");
        return -1;
    }
    wsq_limit_t lim;
    if (wsq__conn_over_limit(srv, wsi, &lim)) {
        reject_upgrade(wsi, 503, WSQ_ERR_LIMIT,
                       lim == WSQ_LIM_CONNECTIONS ? "too many connections (limits.max_connections)"
                                                  : "too many connections from this address "
                                                    "(limits.max_connections_per_ip)");
        return -1;
    }
    wsq_browser_t b;
    unsigned st;
    wsq_err e = wsq__browser_check(srv, wsi, &b, &st, err, sizeof(err));
    if (e != WSQ_OK) {
        reject_upgrade(wsi, st, e, err);
        return -1;
    }
    bool wsq_v1;
    if (requests_wsq(wsi, &wsq_v1) != WSQ_OK) {
        reject_upgrade(wsi, 400, WSQ_ERR_BAD_REQUEST, "Sec-WebSocket-Protocol too long");
        return -1;
    }
    wsq_identity_t id;
    e = wsq__upgrade_identity(srv, wsi, &id, err, sizeof(err));
    if (e != WSQ_OK) {
        reject_upgrade(wsi, 401, e, err);
        return -1;
    }
    if (wsq_v1) {
        wsq__identity_fini(&id);
        return 0;
    }
    wsq_raw_target_t t;
    memset(&t, 0, sizeof(t));
    e = wsq__raw_target(wsi, &t, err, sizeof(err));
    if (e != WSQ_OK) {
        wsq_raw_target_clear(&t);
        if (e == WSQ_ERR_NOTFOUND)
            snprintf(err, sizeof(err),
                     "raw mode connects to /topics/<topic>; wsq.v1 clients must ask for the "
                     "wsq.v1 subprotocol");
        reject_upgrade(wsi, e == WSQ_ERR_NOTFOUND ? 404 : 400, e, err);
        wsq__identity_fini(&id);
        return -1;
    }
    if (!wsq__allowed(&id, WSQ_RIGHT_PUBLISH, t.topic, t.topic_len) &&
        !wsq__allowed(&id, WSQ_RIGHT_SUBSCRIBE, t.topic, t.topic_len)) {
        snprintf(err, sizeof(err), "%s may neither publish nor subscribe to %s", id.name, t.topic);
        wsq_raw_target_clear(&t);
        wsq__identity_fini(&id);
        reject_upgrade(wsi, 403, WSQ_ERR_FORBIDDEN, err);
        return -1;
    }
    wsq_raw_target_clear(&t);
    wsq__identity_fini(&id);
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* responses */

/* The answer is ready. The lws callback under way writes it (answer_now), or, for an answer
 * that came from the writer, WRITEABLE does (answer_later). */
static void reply(wsq_session_t *s, unsigned status)
{
    s->http->status = status;
    set_phase(s->http, HP_ANSWER);
}

static void reply_error(wsq_session_t *s, wsq_err code, const char *msg)
{
    json_error(&s->http->resp, code, msg ? msg : wsq_strerror(code));
    reply(s, err_status(code));
}

/* An error after which the rest of the connection's bytes cannot be trusted as requests (a body
 * of unknown or refused length): answered with Connection: close, then closed. */
static void reply_error_close(wsq_session_t *s, unsigned status, wsq_err code, const char *msg)
{
    reply_error(s, code, msg);
    s->http->status = status;
    s->http->close_after = true;
}

static int finish_response(wsq_session_t *s, struct lws *wsi);

static int add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                      unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

/* Answers to a page of a listed origin (auth.allowed_origins) let that page read them; a
 * preflight also says what the page may send. Same-origin pages need none of it. */
static int cors_headers(const wsq_http_t *h, struct lws *wsi, unsigned char **p, unsigned char *end)
{
    if (!h->browser.listed)
        return 0;
    if (add_header(wsi, "access-control-allow-origin:", h->browser.origin, p, end) ||
        add_header(wsi, "vary:", "Origin", p, end))
        return -1;
    if (!h->preflight)
        return 0;
    return add_header(wsi, "access-control-allow-methods:", "GET, POST, OPTIONS", p, end) ||
           add_header(wsi, "access-control-allow-headers:", "Authorization, Content-Type", p,
                      end) ||
           add_header(wsi, "access-control-max-age:", "600", p, end);
}

static int write_response(wsq_session_t *s, struct lws *wsi)
{
    wsq_http_t *h = s->http;
    if (h == NULL)
        return 0;
    if (h->phase == HP_FLUSHING)
        return finish_response(s, wsi);
    if (h->phase != HP_ANSWER)
        return 0;
    if (wsq__gate_pipelined(wsi))
        h->close_after = true; /* see http_gate.c: pipelined requests are not served */
    bool json = !(h->status == 200 && h->resp_text);
    if (h->status == 204)
        h->resp.len = 0;
    else if (json && (h->resp.len == 0 || h->resp.data[h->resp.len - 1] != '\n'))
        WSQ_BUF_LIT(&h->resp, "\n"); /* so that curl's output ends its line */
    unsigned char hb[LWS_PRE + 1024];
    unsigned char *start = hb + LWS_PRE, *p = start, *end = hb + sizeof(hb) - 1;
    const char *ctype = json ? "application/json" : "text/plain; version=0.0.4; charset=utf-8";
    int bad = h->status == 204 /* no content, no type */
                  ? lws_add_http_header_status(wsi, 204, &p, end)
                  : lws_add_http_common_headers(wsi, h->status, ctype, h->resp.len, &p, end);
    if (bad || cors_headers(h, wsi, &p, end))
        return -1;
    if (h->close_after && lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                                       (const unsigned char *)"close", 5, &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    size_t blen = h->head_only ? 0 : h->resp.len; /* HEAD: Content-Length says, nothing follows */
    unsigned char *body = malloc(LWS_PRE + blen + 1);
    if (body == NULL)
        return -1;
    if (blen)
        memcpy(body + LWS_PRE, h->resp.data, blen);
    int n = lws_write(wsi, body + LWS_PRE, blen, LWS_WRITE_HTTP_FINAL);
    free(body);
    if (n < 0 || h->close_after) {
        set_phase(h, HP_SENT);
        return -1; /* lws sends what is written, then closes */
    }
    set_phase(h, HP_FLUSHING);
    return finish_response(s, wsi);
}

/* HP_FLUSHING: once lws has sent the whole answer, the transaction ends and the gate lets the
 * next request in. Until then lws must not start the next one: it would go on reading in the
 * state of this one. */
static int finish_response(wsq_session_t *s, struct lws *wsi)
{
    if (lws_partial_buffered(wsi)) {
        lws_callback_on_writable(wsi); /* comes once lws's buffer is out */
        return 0;
    }
    set_phase(s->http, HP_SENT);
    if (lws_http_transaction_completed(wsi))
        return -1;
    wsq__gate_next(wsi);
    return 0;
}

/* End of an lws callback for this request: an answer ready now is written now. Returns the
 * callback's return value (-1: close the connection). */
static int answer_now(wsq_session_t *s, struct lws *wsi)
{
    return s->http->phase == HP_ANSWER ? write_response(s, wsi) : 0;
}

/* An answer from the writer, outside any callback of this connection: WRITEABLE writes it. */
static void answer_later(wsq_session_t *s)
{
    if (s->wsi && s->http->phase == HP_ANSWER)
        lws_callback_on_writable(s->wsi);
}

/* ------------------------------------------------------------------------------------------- */
/* endpoints */

static void do_health(wsq_server_t *srv, wsq_session_t *s)
{
    wsq_buf_t *b = &s->http->resp;
    char buf[256];
    wsq_err last = (wsq_err)atomic_load(&srv->storage_err);
    bool ok = last == WSQ_OK && !srv->shutting_down;
    int n = snprintf(buf, sizeof(buf), "{\"status\":\"%s\",\"storage\":\"%s\",\"uptime_ms\":%lld}",
                     ok ? "ok" : "unavailable", last == WSQ_OK ? "writable" : wsq_errname(last),
                     (long long)(wsq_now_ms() - srv->started_ms));
    wsq_buf_append(b, buf, (size_t)n);
    reply(s, ok ? 200 : 503);
}

static void metric(wsq_buf_t *b, const char *name, const char *type, const char *help, uint64_t v)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name,
                     type, name, (unsigned long long)v);
    wsq_buf_append(b, buf, (size_t)n);
}

static void line(wsq_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void line(wsq_buf_t *b, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        wsq_buf_append(b, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* Per-topic and per-consumer series are capped: label cardinality must not grow without
 * bound with the number of topics and consumers. */
#define METRICS_TOPICS_MAX 1000u
#define METRICS_CONSUMERS_MAX 1000u

static void do_metrics(wsq_server_t *srv, wsq_session_t *s)
{
    static const char *const lim_names[WSQ_LIM_COUNT] = {
        "connections", "connections_per_ip", "subscriptions",
        "window",      "message_size",       "publish_rate",
    };
    static const char *const batch_le[WSQ_BATCH_BUCKETS] = {
        "1", "2", "5", "10", "20", "50", "100", "200", "500", "1000", "2000", "5000"};
    static const char *const lat_le[WSQ_LATENCY_BUCKETS] = {"0.0001", "0.00025", "0.0005", "0.001",
                                                            "0.0025", "0.005",   "0.01",   "0.025",
                                                            "0.05",   "0.1",     "0.25",   "1"};
    wsq_buf_t *b = &s->http->resp;
    wsq_metrics_t *m = &srv->metrics;
    uint64_t qm, qb;
    wsq_store_queue_depth(srv->store, &qm, &qb);
    metric(b, "wsq_connections", "gauge", "Open WebSocket connections.", m->connections);
    metric(b, "wsq_tcp_connections", "gauge", "Open TCP connections (WebSocket and HTTP).",
           srv->nconns);
    metric(b, "wsq_connections_total", "counter", "WebSocket connections accepted.",
           m->connections_total);
    metric(b, "wsq_published_total", "counter", "Messages confirmed durable.", m->published);
    metric(b, "wsq_publish_errors_total", "counter", "Publishes refused by storage.",
           m->publish_errors);
    metric(b, "wsq_delivered_total", "counter", "Messages written to subscribers' sockets.",
           m->delivered);
    metric(b, "wsq_redelivered_total", "counter", "Deliveries of a message seen before.",
           m->redelivered);
    metric(b, "wsq_acked_total", "counter", "Messages acknowledged.", m->acked);
    metric(b, "wsq_nacked_total", "counter", "Negative acknowledgements.", m->nacked);
    metric(b, "wsq_gaps_total", "counter", "Gap events (messages removed before delivery).",
           m->gaps);
    metric(b, "wsq_commits_total", "counter", "Storage commits.", m->commits);
    metric(b, "wsq_publisher_pauses_total", "counter", "Publishers paused by backpressure.",
           m->paused);
    metric(b, "wsq_max_deliver_skipped_total", "counter",
           "Messages skipped after limits.max_deliver deliveries without an ack.",
           m->dead_lettered);
    metric(b, "wsq_reloads_total", "counter", "Configuration reloads applied.", m->reloads);
    metric(b, "wsq_reload_failures_total", "counter", "Configuration reloads refused.",
           m->reload_failures);
    metric(b, "wsq_writer_queue_messages", "gauge", "Requests waiting for the writer.", qm);
    metric(b, "wsq_writer_queue_bytes", "gauge", "Payload bytes waiting for the writer.", qb);
    uint64_t used, size, max;
    wsq_store_map_usage(srv->store, &used, &size, &max);
    metric(b, "wsq_map_used_bytes", "gauge", "LMDB map bytes up to the highest page in use.", used);
    metric(b, "wsq_map_size_bytes", "gauge", "LMDB map size now.", size);
    metric(b, "wsq_map_max_bytes", "gauge", "storage.map_size_max.", max);

    line(b, "# HELP wsq_limit_refusals_total Requests refused by a limit.\n"
            "# TYPE wsq_limit_refusals_total counter\n");
    for (int i = 0; i < WSQ_LIM_COUNT; i++)
        line(b, "wsq_limit_refusals_total{limit=\"%s\"} %llu\n", lim_names[i],
             (unsigned long long)m->limit_refusals[i]);
    line(b, "# HELP wsq_auth_failures_total Authentication failures by reason.\n"
            "# TYPE wsq_auth_failures_total counter\n");
    for (int i = 0; i < WSQ_AUTHF_COUNT; i++)
        line(b, "wsq_auth_failures_total{reason=\"%s\"} %llu\n", wsq__authf_name((wsq_authf_t)i),
             (unsigned long long)m->auth_failures[i]);

    uint64_t cum = 0;
    line(b, "# HELP wsq_commit_batch_size Requests per storage commit.\n"
            "# TYPE wsq_commit_batch_size histogram\n");
    for (int i = 0; i < WSQ_BATCH_BUCKETS; i++) {
        cum += m->batch_hist[i];
        line(b, "wsq_commit_batch_size_bucket{le=\"%s\"} %llu\n", batch_le[i],
             (unsigned long long)cum);
    }
    cum += m->batch_hist[WSQ_BATCH_BUCKETS];
    line(b, "wsq_commit_batch_size_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    line(b, "wsq_commit_batch_size_sum %llu\nwsq_commit_batch_size_count %llu\n",
         (unsigned long long)m->batch_sum, (unsigned long long)cum);
    cum = 0;
    line(b, "# HELP wsq_commit_seconds Storage commit duration, fsync included.\n"
            "# TYPE wsq_commit_seconds histogram\n");
    for (int i = 0; i < WSQ_LATENCY_BUCKETS; i++) {
        cum += m->latency_hist[i];
        line(b, "wsq_commit_seconds_bucket{le=\"%s\"} %llu\n", lat_le[i], (unsigned long long)cum);
    }
    cum += m->latency_hist[WSQ_LATENCY_BUCKETS];
    line(b, "wsq_commit_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    line(b, "wsq_commit_seconds_sum %.6f\nwsq_commit_seconds_count %llu\n",
         (double)m->latency_sum_ns / 1e9, (unsigned long long)cum);

    /* per topic (first METRICS_TOPICS_MAX by name) */
    line(b, "# HELP wsq_topic_messages Retained messages per topic.\n"
            "# TYPE wsq_topic_messages gauge\n");
    wsq_topic_info_t *ti = malloc(100 * sizeof(*ti));
    wsq_buf_t bytes, heads;
    wsq_buf_init(&bytes);
    wsq_buf_init(&heads);
    char after[WSQ_TOPIC_MAX + 1] = "";
    unsigned total = 0, n = 0;
    while (ti && total < METRICS_TOPICS_MAX &&
           wsq_store_topic_list(srv->store, after[0] ? after : NULL, 100, ti, &n) == WSQ_OK &&
           n > 0) {
        for (unsigned i = 0; i < n && total < METRICS_TOPICS_MAX; i++, total++) {
            line(b, "wsq_topic_messages{topic=\"%s\"} %llu\n", ti[i].name,
                 (unsigned long long)ti[i].count);
            line(&bytes, "wsq_topic_bytes{topic=\"%s\"} %llu\n", ti[i].name,
                 (unsigned long long)ti[i].bytes);
            line(&heads, "wsq_topic_last_seq{topic=\"%s\"} %llu\n", ti[i].name,
                 (unsigned long long)(ti[i].next_seq - 1));
        }
        snprintf(after, sizeof(after), "%s", ti[n - 1].name);
        if (n < 100)
            break;
    }
    free(ti);
    line(b, "# HELP wsq_topic_bytes Retained payload bytes per topic.\n"
            "# TYPE wsq_topic_bytes gauge\n");
    wsq_buf_append(b, bytes.data, bytes.len);
    line(b, "# HELP wsq_topic_last_seq Last seq per topic.\n# TYPE wsq_topic_last_seq gauge\n");
    wsq_buf_append(b, heads.data, heads.len);
    wsq_buf_fini(&bytes);
    wsq_buf_fini(&heads);

    /* per consumer lag (first METRICS_CONSUMERS_MAX) */
    line(b, "# HELP wsq_consumer_lag Retained messages a consumer has not acknowledged.\n"
            "# TYPE wsq_consumer_lag gauge\n");
    wsq_consumer_info_t *ci = malloc(100 * sizeof(*ci));
    uint32_t at = 0;
    char an[WSQ_CONSUMER_NAME_MAX + 1] = "";
    total = 0;
    while (ci && total < METRICS_CONSUMERS_MAX &&
           wsq_store_consumer_list(srv->store, 0, at, an[0] ? an : NULL, 100, ci, &n) == WSQ_OK &&
           n > 0) {
        for (unsigned i = 0; i < n && total < METRICS_CONSUMERS_MAX; i++, total++) {
            wsq_topic_info_t t;
            if (wsq_store_topic_get(srv->store, ci[i].topic_id, &t) != WSQ_OK)
                continue;
            line(b, "wsq_consumer_lag{topic=\"%s\",consumer=\"%s\"} %llu\n", t.name, ci[i].name,
                 (unsigned long long)ci[i].lag);
        }
        at = ci[n - 1].topic_id;
        memcpy(an, ci[n - 1].name, sizeof(an));
        if (n < 100)
            break;
    }
    free(ci);
    s->http->resp_text = true;
    reply(s, 200);
}

typedef struct {
    wsq_buf_t *b;
    const char *topic;
    size_t topic_len;
    uint32_t n;
} hist_t;

static int hist_one(void *arg, const wsq_msg_view_t *m)
{
    hist_t *h = arg;
    if (h->n++)
        WSQ_BUF_LIT(h->b, ",");
    wsq_proto_enc_msg(h->b, h->topic, h->topic_len, m->seq, m->ts_ms, m->data, m->len,
                      (m->flags & WSQ_MSG_BINARY) != 0, 1);
    return 0;
}

/* Query parameter name into buf: *out is its value, or NULL when absent. false: the value does
 * not fit buf, and the request has been answered 400 (never read as absent). */
static bool qarg(wsq_session_t *s, struct lws *wsi, const char *name, char *buf, size_t len,
                 const char **out)
{
    wsq_err e = wsq__req_query(wsi, name, buf, len);
    *out = e == WSQ_OK ? buf : NULL;
    if (e != WSQ_ERR_TOO_LARGE)
        return true;
    char msg[128];
    snprintf(msg, sizeof(msg), "query parameter %s is too long (at most %zu bytes)", name, len - 1);
    reply_error(s, WSQ_ERR_BAD_REQUEST, msg);
    return false;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    if (*s == '\0')
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

static void do_history(wsq_server_t *srv, wsq_session_t *s, struct lws *wsi)
{
    wsq_http_t *h = s->http;
    if (!wsq__allowed(&s->ident, WSQ_RIGHT_SUBSCRIBE, h->topic, h->topic_len)) {
        reply_error(s, WSQ_ERR_FORBIDDEN, "not allowed to read this topic");
        return;
    }
    char arg[64];
    uint64_t from = 0, limit = 100;
    const char *v;
    if (!qarg(s, wsi, "from", arg, sizeof(arg), &v))
        return;
    if (v && !parse_u64(v, &from)) {
        reply_error(s, WSQ_ERR_BAD_REQUEST, "from must be a seq (a non-negative integer)");
        return;
    }
    if (!qarg(s, wsi, "limit", arg, sizeof(arg), &v))
        return;
    if (v && (!parse_u64(v, &limit) || limit == 0 || limit > HISTORY_LIMIT_MAX)) {
        reply_error(s, WSQ_ERR_BAD_REQUEST, "limit must be 1..1000");
        return;
    }
    wsq_topic_info_t ti;
    wsq_err err = wsq_store_topic_lookup(srv->store, h->topic, h->topic_len, &ti);
    if (err != WSQ_OK) {
        reply_error(s, err, err == WSQ_ERR_NOTFOUND ? "no such topic" : NULL);
        return;
    }
    if (from == 0)
        from = ti.first_seq;
    wsq_buf_t *b = &h->resp;
    char head[256];
    int n = snprintf(head, sizeof(head), "{\"topic\":\"%s\",\"epoch\":\"%016llx\",", ti.name,
                     (unsigned long long)ti.epoch);
    wsq_buf_append(b, head, (size_t)n);
    size_t mark = b->len;
    WSQ_BUF_LIT(b, "\"messages\":[");
    hist_t hc = {b, ti.name, strlen(ti.name), 0};
    wsq_read_info_t info;
    err = wsq_store_read(srv->store, ti.id, from, (uint32_t)limit, HISTORY_BYTES_MAX, hist_one, &hc,
                         &info);
    if (err != WSQ_OK) {
        b->len = 0;
        reply_error(s, err, NULL);
        return;
    }
    WSQ_BUF_LIT(b, "]");
    /* the positions go after the messages so they describe the same snapshot */
    n = snprintf(head, sizeof(head), ",\"first_seq\":%llu,\"next_seq\":%llu",
                 (unsigned long long)info.first_seq, (unsigned long long)info.next_seq);
    wsq_buf_append(b, head, (size_t)n);
    if (info.gap) {
        n = snprintf(head, sizeof(head), ",\"gap\":{\"from\":%llu,\"to\":%llu,\"reason\":\"%s\"}",
                     (unsigned long long)from, (unsigned long long)(info.first_seq - 1),
                     info.purged_upto >= from ? "purge" : "retention");
        wsq_buf_append(b, head, (size_t)n);
    }
    WSQ_BUF_LIT(b, "}");
    (void)mark;
    reply(s, 200);
}

/* Is the body text (Content-Type text/... or application/json, any case)? WSQ_ERR_TOO_LARGE
 * for a Content-Type too long to judge. */
static wsq_err text_type(struct lws *wsi, bool *text)
{
    char ct[1024];
    wsq_err e = wsq__req_header(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, ct, sizeof(ct));
    *text = e == WSQ_OK &&
            (strncasecmp(ct, "text/", 5) == 0 || strncasecmp(ct, "application/json", 16) == 0);
    return e == WSQ_ERR_TOO_LARGE ? e : WSQ_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* admin endpoint: wsqctl's mutations while wsqd runs (wsqd stays the only writer) */

/* topic= into h->topic. false: absent, too long or invalid. */
static bool arg_topic(struct lws *wsi, wsq_http_t *h)
{
    char buf[WSQ_TOPIC_MAX + 1];
    if (wsq__req_query(wsi, "topic", buf, sizeof(buf)) != WSQ_OK)
        return false;
    const char *t = buf;
    if (!wsq_topic_valid(t, strlen(t)))
        return false;
    h->topic_len = strlen(t);
    memcpy(h->topic, t, h->topic_len + 1);
    return true;
}

static void submit_admin(wsq_server_t *srv, wsq_session_t *s, wsq_wreq_t *r)
{
    r->user[0] = s->id;
    r->done = wsq__wt_done;
    r->arg = srv;
    wsq_err err = wsq_store_submit(srv->store, r);
    if (err != WSQ_OK) {
        wsq_wreq_free(&r);
        reply_error(s, err, NULL);
        return;
    }
    set_phase(s->http, HP_WORKING);
}

static void do_whoami(wsq_server_t *srv, wsq_session_t *s)
{
    char buf[4400];
    int n = snprintf(buf, sizeof(buf),
                     "{\"identity\":\"%s\",\"admin\":%s,\"pid\":%ld,\"version\":\"%s\","
                     "\"format\":%d,\"data\":\"",
                     s->ident.name, s->ident.rights && s->ident.rights->admin ? "true" : "false",
                     (long)getpid(), WSQ_VERSION, WSQ_FORMAT_VERSION);
    wsq_buf_append(&s->http->resp, buf, (size_t)n);
    char real[4096];
    const char *p = realpath(srv->cfg->storage.path, real) ? real : srv->cfg->storage.path;
    wsq_json_escape(&s->http->resp, p, strlen(p));
    WSQ_BUF_LIT(&s->http->resp, "\"}");
    reply(s, 200);
}

static void do_admin(wsq_server_t *srv, wsq_session_t *s, struct lws *wsi, const char *op,
                     bool post)
{
    wsq_http_t *h = s->http;
    if (h->browser.browser && s->ident.anonymous) { /* whatever auth.anonymous.admin says */
        reply_error(s, WSQ_ERR_UNAUTHORIZED,
                    "admin requests from a browser need credentials (Authorization: Bearer)");
        return;
    }
    if (!s->ident.rights || !s->ident.rights->admin) {
        reply_error(s, s->ident.anonymous ? WSQ_ERR_UNAUTHORIZED : WSQ_ERR_FORBIDDEN,
                    "the admin endpoint needs an identity with admin rights");
        return;
    }
    if (strcmp(op, "whoami") == 0) {
        if (post) {
            reply_error(s, WSQ_ERR_BAD_REQUEST, "whoami is a GET request");
            h->status = 405;
            return;
        }
        do_whoami(srv, s);
        return;
    }
    if (!post) {
        reply_error(s, WSQ_ERR_BAD_REQUEST, "admin operations are POST requests");
        h->status = 405;
        return;
    }
    if (srv->shutting_down) {
        reply_error(s, WSQ_ERR_CLOSED, "server is shutting down");
        return;
    }
    char a[64];
    if (strcmp(op, "purge") == 0) {
        if (!arg_topic(wsi, h)) {
            reply_error(s, WSQ_ERR_BAD_TOPIC, "purge needs topic=<valid topic>");
            return;
        }
        wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_PURGE, h->topic, h->topic_len, NULL, 0, 0);
        if (r == NULL) {
            reply_error(s, WSQ_ERR_NOMEM, NULL);
            return;
        }
        const char *v;
        int modes = 0;
        if (!qarg(s, wsi, "all", a, sizeof(a), &v)) {
            wsq_wreq_free(&r);
            return;
        }
        if (v && strcmp(v, "true") != 0) {
            wsq_wreq_free(&r);
            reply_error(s, WSQ_ERR_BAD_REQUEST, "all must be true");
            return;
        }
        if (v) {
            r->purge_mode = WSQ_PURGE_ALL;
            modes++;
        }
        if (!qarg(s, wsi, "before", a, sizeof(a), &v)) {
            wsq_wreq_free(&r);
            return;
        }
        if (v) {
            if (!parse_u64(v, &r->purge_seq)) {
                wsq_wreq_free(&r);
                reply_error(s, WSQ_ERR_BAD_REQUEST, "before must be a seq");
                return;
            }
            r->purge_mode = WSQ_PURGE_BEFORE;
            modes++;
        }
        if (!qarg(s, wsi, "older_than", a, sizeof(a), &v)) {
            wsq_wreq_free(&r);
            return;
        }
        if (v) {
            int64_t ms;
            if (wsq_parse_duration_ms(v, &ms) != WSQ_OK || ms < 0) {
                wsq_wreq_free(&r);
                reply_error(s, WSQ_ERR_BAD_REQUEST, "older_than must be a duration (e.g. 1h)");
                return;
            }
            r->purge_mode = WSQ_PURGE_OLDER;
            r->purge_ts_ms = wsq_now_ms() - ms;
            modes++;
        }
        if (modes != 1) {
            wsq_wreq_free(&r);
            reply_error(s, WSQ_ERR_BAD_REQUEST,
                        "give exactly one of all=true, before=SEQ, "
                        "older_than=DURATION");
            return;
        }
        h->op = H_PURGE;
        wsq_info_log("admin", "op=purge topic=%s identity=%s peer=%s", h->topic, s->ident.name,
                     s->peer);
        submit_admin(srv, s, r);
        return;
    }
    if (strcmp(op, "delete-consumer") == 0) {
        char cn[WSQ_CONSUMER_NAME_MAX + 1];
        const char *c;
        if (!qarg(s, wsi, "consumer", cn, sizeof(cn), &c))
            return;
        if (!arg_topic(wsi, h) || c == NULL || !*c) {
            reply_error(s, WSQ_ERR_BAD_REQUEST, "delete-consumer needs topic= and consumer=");
            return;
        }
        wsq_wreq_t *r =
            wsq_wreq_new(WSQ_WOP_CONSUMER_DELETE, h->topic, h->topic_len, c, strlen(c), 0);
        ct_cmd_t *cmd = wsq__ct_cmd(CT_CONSUMER_DELETE, 0, 0);
        ct_sub_params_t *p = calloc(1, sizeof(*p));
        if (r == NULL || cmd == NULL || p == NULL) {
            wsq_wreq_free(&r);
            free(cmd);
            free(p);
            reply_error(s, WSQ_ERR_BAD_REQUEST, "bad consumer name");
            return;
        }
        memcpy(p->topic, h->topic, h->topic_len + 1);
        p->topic_len = h->topic_len;
        p->consumer_len = strlen(c);
        memcpy(p->consumer, c, p->consumer_len + 1);
        cmd->sub = p;
        h->op = H_DELETE_CONSUMER;
        wsq_info_log("admin", "op=delete-consumer topic=%s consumer=%s identity=%s peer=%s",
                     h->topic, c, s->ident.name, s->peer);
        submit_admin(srv, s, r);
        if (h->phase == HP_WORKING)
            wsq__ct_defer(srv, cmd); /* closes the consumer's session, drops its state */
        else
            free(cmd->sub), free(cmd);
        return;
    }
    if (strcmp(op, "import") == 0) {
        h->op = H_IMPORT;
        return; /* JSON Lines body follows */
    }
    reply_error(s, WSQ_ERR_NOTFOUND, "unknown admin operation");
}

/* One JSON Lines import body (wsq_import_parse): every message is appended (it gets a new
 * seq: seqs are never reused); a bad line refuses the whole body. */
typedef struct {
    wsq_server_t *srv;
    wsq_session_t *s;
    wsq_wreq_t *head, **tail;
    char *msg;
    size_t msglen;
} import_t;

static wsq_err import_one(void *arg, const wsq_frame_t *f)
{
    import_t *im = arg;
    if (!wsq__allowed(&im->s->ident, WSQ_RIGHT_PUBLISH, f->topic, f->topic_len)) {
        snprintf(im->msg, im->msglen, "not allowed to publish to %s", f->topic);
        return WSQ_ERR_FORBIDDEN;
    }
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_APPEND, f->topic, f->topic_len, NULL, 0, f->data_len + 1);
    if (r == NULL)
        return WSQ_ERR_NOMEM;
    if (f->data_len)
        memcpy(r->data, f->data, f->data_len);
    r->data[f->data_len] = '\0'; /* an empty ref: see wsq__publish */
    r->len = f->data_len;
    r->flags = f->binary ? WSQ_MSG_BINARY : 0;
    r->user[0] = im->s->id;
    r->done = wsq__wt_done;
    r->arg = im->srv;
    *im->tail = r;
    im->tail = &r->next;
    return WSQ_OK;
}

static void do_import(wsq_server_t *srv, wsq_session_t *s)
{
    wsq_http_t *h = s->http;
    char msg[400] = "";
    import_t im = {srv, s, NULL, NULL, msg, sizeof(msg)};
    im.tail = &im.head;
    uint64_t n = 0;
    wsq_err err =
        wsq_import_parse((const char *)h->body.data, h->body.len, srv->cfg->limits.max_message_size,
                         import_one, &im, msg, sizeof(msg), &n);
    if (err == WSQ_OK && n > 0)
        err = wsq_store_submit_list(srv->store, im.head);
    if (err != WSQ_OK || n == 0) {
        for (wsq_wreq_t *r = im.head, *nx; r; r = nx) {
            nx = r->next;
            wsq_wreq_free(&r);
        }
        if (err != WSQ_OK) {
            reply_error(s, err, msg[0] ? msg : NULL); /* nothing of a bad body is imported */
            return;
        }
        h->resp.len = 0;
        WSQ_BUF_LIT(&h->resp, "{\"imported\":0}");
        reply(s, 200);
        return;
    }
    h->expect = n;
    set_phase(h, HP_WORKING);
    wsq_info_log("admin", "op=import messages=%llu identity=%s peer=%s", (unsigned long long)n,
                 s->ident.name, s->peer);
}

static void route_request(wsq_server_t *srv, struct lws *wsi, wsq_session_t *s, const char *path);

/* OPTIONS: a CORS preflight from a page of an allowed origin (the browser checks passed) gets
 * 204 and what it may send; anything else has nothing to learn here. */
static void do_options(wsq_session_t *s)
{
    wsq_http_t *h = s->http;
    if (!h->browser.browser) {
        reply_error(s, WSQ_ERR_BAD_REQUEST, "OPTIONS is for CORS preflights (with an Origin)");
        h->status = 405;
        return;
    }
    h->preflight = true;
    h->resp.len = 0;
    reply(s, 204);
}

/* The request's Content-Length: the gate let through only one, of digits (0 if none). */
static uint64_t content_length(struct lws *wsi)
{
    char cl[32];
    return lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0
               ? strtoull(cl, NULL, 10)
               : 0;
}

/* True when lws reads a body after the headers: a POST (even with Content-Length: 0, it reports
 * the empty body), or any request with a Content-Length above 0. */
static bool expects_body(struct lws *wsi)
{
    return lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0 || content_length(wsi) > 0;
}

static int on_http(wsq_server_t *srv, struct lws *wsi, wsq_session_t **pss, const char *path)
{
    if (*pss) { /* keep-alive: a new request on the same connection */
        wsq__session_free(*pss);
        *pss = NULL;
    }
    wsq_session_t *s = wsq__session_new(srv, wsi, WSQ_SESS_HTTP);
    if (s == NULL)
        return -1;
    s->http = calloc(1, sizeof(*s->http));
    if (s->http == NULL)
        return -1;
    wsq_buf_init(&s->http->body);
    wsq_buf_init(&s->http->resp);
    *pss = s;
    route_request(srv, wsi, s, path);
    if (!expects_body(wsi))
        s->http->complete = true;
    return answer_now(s, wsi);
}

static void route_request(wsq_server_t *srv, struct lws *wsi, wsq_session_t *s, const char *path)
{
    bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    /* HEAD is GET without the body (RFC 9110 9.3.2) */
    s->http->head_only = lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI) > 0;
    bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0 || s->http->head_only;

    wsq_limit_t lim;
    if (wsq__conn_over_limit(srv, wsi, &lim)) {
        reply_error(s, WSQ_ERR_LIMIT, "too many connections");
        s->http->status = 503;
        return;
    }
    char err[400] = "";
    unsigned st;
    wsq_err e = wsq__browser_check(srv, wsi, &s->http->browser, &st, err, sizeof(err));
    if (e != WSQ_OK) {
        reply_error(s, e, err);
        s->http->status = st;
        return;
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_OPTIONS_URI) > 0) {
        do_options(s);
        return;
    }
    if (wsq__upgrade_identity(srv, wsi, &s->ident, err, sizeof(err)) != WSQ_OK) {
        reply_error(s, WSQ_ERR_UNAUTHORIZED, err);
        return;
    }
    wsq_route_t rt;
    wsq_http_route(path, get, post, &rt);
    /* Bodies over their limit are refused before a byte of them is read. Most clients send the
     * whole body before they read an answer: closing at once would lose the answer in a reset,
     * so lws reads and drops a body up to 64 MiB and the connection goes on; a larger one closes
     * it. */
    bool import = rt.kind == WSQ_ROUTE_ADMIN && strcmp(rt.admin_op, "import") == 0;
    uint64_t cap = body_cap(srv->cfg, rt.kind == WSQ_ROUTE_PUBLISH, import);
    s->http->body_cap = cap;
    if (content_length(wsi) > cap) {
        if (rt.kind == WSQ_ROUTE_PUBLISH)
            atomic_fetch_add_explicit(&srv->metrics.limit_refusals[WSQ_LIM_MESSAGE_SIZE], 1,
                                      memory_order_relaxed);
        char m[160];
        snprintf(m, sizeof(m), "the body is larger than %s (%llu bytes)",
                 rt.kind == WSQ_ROUTE_PUBLISH && cap == srv->cfg->limits.max_message_size
                     ? "limits.max_message_size"
                 : import ? "64 x limits.max_message_size"
                          : "limits.max_http_body",
                 (unsigned long long)cap);
        if (content_length(wsi) > DISCARD_MAX)
            reply_error_close(s, 413, WSQ_ERR_TOO_LARGE, m);
        else
            reply_error(s, WSQ_ERR_TOO_LARGE, m);
        return;
    }
    switch (rt.kind) {
    case WSQ_ROUTE_HEALTH:
        do_health(srv, s);
        return;
    case WSQ_ROUTE_METRICS:
        if (srv->cfg->metrics.auth != WSQ_METRICS_AUTH_PUBLIC &&
            !(s->ident.rights && (s->ident.rights->metrics || s->ident.rights->admin))) {
            /* topic and consumer names are the deployment's business (metrics.auth) */
            reply_error(s, s->ident.anonymous ? WSQ_ERR_UNAUTHORIZED : WSQ_ERR_FORBIDDEN,
                        "GET /metrics needs an identity with the metrics or admin right "
                        "(metrics.auth: token)");
            return;
        }
        do_metrics(srv, s);
        return;
    case WSQ_ROUTE_ADMIN:
        do_admin(srv, s, wsi, rt.admin_op, post);
        return;
    case WSQ_ROUTE_BAD_METHOD:
        reply_error(s, WSQ_ERR_BAD_REQUEST,
                    "wrong method: GET /healthz, /metrics and /topics/<topic>/messages; POST "
                    "/topics/<topic>");
        s->http->status = 405;
        return;
    case WSQ_ROUTE_BAD_TOPIC:
        reply_error(s, WSQ_ERR_BAD_TOPIC, NULL);
        return;
    case WSQ_ROUTE_NOT_FOUND:
        reply_error(s, WSQ_ERR_NOTFOUND, "no such endpoint");
        return;
    case WSQ_ROUTE_HISTORY:
    case WSQ_ROUTE_PUBLISH:
        break;
    }
    memcpy(s->http->topic, rt.topic, rt.topic_len + 1);
    s->http->topic_len = rt.topic_len;
    if (rt.kind == WSQ_ROUTE_HISTORY) {
        do_history(srv, s, wsi);
        return;
    }
    if (!wsq__allowed(&s->ident, WSQ_RIGHT_PUBLISH, rt.topic, rt.topic_len)) {
        reply_error(s, WSQ_ERR_FORBIDDEN, "not allowed to publish to this topic");
        return;
    }
    if (text_type(wsi, &s->http->text) != WSQ_OK) {
        reply_error_close(s, 400, WSQ_ERR_BAD_REQUEST, "Content-Type too long");
        return;
    }
    s->http->publish_body = true;
    return; /* the body follows */
}

static void handle_body(wsq_server_t *srv, wsq_session_t *s)
{
    wsq_http_t *h = s->http;
    if (h->too_large) {
        atomic_fetch_add_explicit(&srv->metrics.limit_refusals[WSQ_LIM_MESSAGE_SIZE], 1,
                                  memory_order_relaxed);
        reply_error(s, WSQ_ERR_TOO_LARGE, NULL);
        return;
    }
    if (srv->shutting_down) {
        reply_error(s, WSQ_ERR_CLOSED, "server is shutting down");
        return;
    }
    if (h->op == H_IMPORT) {
        do_import(srv, s);
        return;
    }
    if (!h->publish_body)
        return; /* e.g. an admin purge sent with a body: the body means nothing */
    bool binary = !h->text;
    if (h->text && !wsq_utf8_valid(h->body.data, h->body.len)) {
        reply_error(s, WSQ_ERR_BAD_UTF8, "a text/* body must be valid UTF-8");
        return;
    }
    wsq_err err =
        wsq__publish(srv, s->id, h->topic, h->topic_len, h->body.data, h->body.len, binary, NULL);
    if (err != WSQ_OK) {
        reply_error(s, err, NULL);
        return;
    }
    set_phase(h, HP_WORKING);
    s->pub_inflight++;
}

static int on_body_done(wsq_server_t *srv, wsq_session_t *s, struct lws *wsi)
{
    wsq_http_t *h = s->http;
    if (h->complete)
        return 0; /* handled once, whatever lws does */
    h->complete = true;
    if (h->phase == HP_PENDING) /* else answered already (an error), or an admin op under way */
        handle_body(srv, s);
    return answer_now(s, wsi);
}

static void confirmed(wsq_session_t *s, wsq_wreq_t *req)
{
    wsq_http_t *h = s->http;
    char buf[400];
    int n;
    if (h->op == H_IMPORT) {
        h->done++;
        if (req->err != WSQ_OK && h->first_err == WSQ_OK)
            h->first_err = req->err;
        if (h->done < h->expect)
            return;
        if (h->first_err != WSQ_OK) {
            n = snprintf(buf, sizeof(buf), "import stopped: %s (messages before it are stored)",
                         wsq_strerror(h->first_err));
            reply_error(s, h->first_err, buf);
            return;
        }
        n = snprintf(buf, sizeof(buf), "{\"imported\":%llu}", (unsigned long long)h->done);
        h->resp.len = 0;
        wsq_buf_append(&h->resp, buf, (size_t)n);
        reply(s, 200);
        return;
    }
    if (req->err != WSQ_OK) {
        reply_error(s, req->err,
                    req->err == WSQ_ERR_NOTFOUND
                        ? (h->op == H_DELETE_CONSUMER ? "no such consumer" : "no such topic")
                        : NULL);
        return;
    }
    if (h->op == H_PURGE) {
        wsq_topic_info_t ti;
        wsq_store_topic_lookup(s->srv->store, req->topic, req->topic_len, &ti);
        n = snprintf(buf, sizeof(buf),
                     "{\"topic\":\"%s\",\"removed\":%llu,\"first_seq\":%llu,\"next_seq\":%llu}",
                     req->topic, (unsigned long long)req->removed, (unsigned long long)ti.first_seq,
                     (unsigned long long)ti.next_seq);
    } else if (h->op == H_DELETE_CONSUMER) {
        n = snprintf(buf, sizeof(buf), "{\"topic\":\"%s\",\"consumer\":\"%s\",\"deleted\":true}",
                     req->topic, req->consumer);
    } else {
        n = snprintf(buf, sizeof(buf), "{\"seq\":%llu,\"topic\":\"%s\"}",
                     (unsigned long long)req->seq, req->topic);
    }
    h->resp.len = 0;
    wsq_buf_append(&h->resp, buf, (size_t)n);
    reply(s, 200);
}

void wsq__http_confirm(wsq_session_t *s, wsq_wreq_t *req)
{
    if (s->http == NULL || s->http->phase != HP_WORKING)
        return;
    confirmed(s, req);
    answer_later(s);
}

int wsq__http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    wsq_server_t *srv = lws_context_user(lws_get_context(wsi));
    wsq_session_t **pss = user;

    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        wsq__server_wake(srv);
        return 0;
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        return wsq__accept_connection(srv, wsi);
    case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION:
        /* lws asks us to confirm OpenSSL's verdict (len = preverify_ok) and takes 0 as "accept":
         * the default answer would let any certificate through. Keep OpenSSL's verdict. */
        if (len == 0) {
            char peer[64];
            lws_get_peer_simple(wsi, peer, sizeof(peer));
            wsq_info_log("refused",
                         "peer=%s reason=client_certificate msg=\"client certificate not "
                         "signed by the listener's ca\"",
                         peer);
        }
        return len ? 0 : 1;
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        return wsq__conn_opened(srv, wsi) ? 0 : -1;
    case LWS_CALLBACK_WSI_DESTROY:
        wsq__conn_closed(srv, wsi);
        return 0;
    case LWS_CALLBACK_HTTP:
        return on_http(srv, wsi, pss, (const char *)in);
    case LWS_CALLBACK_HTTP_BODY:
        if (pss && *pss && (*pss)->http) {
            wsq_http_t *h = (*pss)->http;
            if (h->body.len + len > h->body_cap) /* the gate holds bodies to Content-Length */
                h->too_large = true;
            else if (h->phase == HP_PENDING)
                wsq_buf_append(&h->body, in, len);
        }
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (pss && *pss && (*pss)->http)
            return on_body_done(srv, *pss, wsi);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (pss && *pss)
            return write_response(*pss, wsi);
        return 0;
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL: /* the transaction is over: lws frees pss next */
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss && *pss) {
            (*pss)->wsi = NULL;
            wsq__session_free(*pss);
            *pss = NULL;
        }
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}
