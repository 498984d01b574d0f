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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "http_route.h"
#include "session.h"
#include "wsq/clock.h"

/* Appends a string literal (its length computed, never counted by hand). */
#define WSQ_BUF_LIT(b, lit) wsq_buf_append((b), (lit), sizeof(lit) - 1)

#define HISTORY_LIMIT_MAX 1000u
#define HISTORY_BYTES_MAX (4u << 20)

typedef enum { H_PUBLISH = 0, H_PURGE, H_DELETE_CONSUMER, H_IMPORT } http_op_t;

struct wsq_http {
    http_op_t op;      /* what the body/confirm is for */
    uint64_t expect;   /* H_IMPORT: appends submitted */
    uint64_t done;     /* H_IMPORT: appends completed */
    wsq_err first_err; /* H_IMPORT: first refusal */
    char topic[WSQ_TOPIC_MAX + 1];
    size_t topic_len;
    bool binary;       /* POST body is published as binary */
    bool text;         /* POST Content-Type says text */
    bool resp_text;    /* the response is Prometheus text, not JSON */
    bool publish_body; /* POST /topics/<t>: the body is the message */
    wsq_buf_t body;    /* request body (POST) */
    wsq_buf_t resp;    /* response body */
    unsigned status;   /* response status; 0 while waiting */
    bool waiting;      /* POST submitted, waiting for the commit */
    bool too_large;
};

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
    WSQ_BUF_LIT(b, "\"}}");
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

static bool requests_wsq(struct lws *wsi)
{
    char list[256];
    if (lws_hdr_copy(wsi, list, sizeof(list), WSI_TOKEN_PROTOCOL) <= 0)
        return false;
    for (char *save = NULL, *tok = strtok_r(list, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save))
        if (strcmp(tok, WSQ_SUBPROTOCOL) == 0)
            return true;
    return false;
}

wsq_err wsq__raw_target(struct lws *wsi, wsq_raw_target_t *t, char *err, size_t errlen)
{
    char path[512];
    if (lws_hdr_copy(wsi, path, sizeof(path), WSI_TOKEN_GET_URI) <= 0) {
        snprintf(err, errlen, "missing request path");
        return WSQ_ERR_BAD_REQUEST;
    }
    /* lws keeps each query argument as a fragment */
    char query[2048];
    size_t ql = 0;
    char frag[1024];
    for (int i = 0;; i++) {
        int n = lws_hdr_copy_fragment(wsi, frag, sizeof(frag), WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            break;
        if (ql + (size_t)n + 2 >= sizeof(query)) {
            snprintf(err, errlen, "query string too long");
            return WSQ_ERR_BAD_REQUEST;
        }
        if (ql)
            query[ql++] = '&';
        memcpy(query + ql, frag, (size_t)n);
        ql += (size_t)n;
    }
    query[ql] = '\0';
    return wsq_raw_parse_target(path, ql ? query : NULL, t, err, errlen);
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
    if (!wsq__origin_allowed(srv, wsi)) {
        reject_upgrade(wsi, 403, WSQ_ERR_FORBIDDEN, "origin not allowed (auth.allowed_origins)");
        return -1;
    }
    wsq_identity_t id;
    wsq_err e = wsq__upgrade_identity(srv, wsi, &id, err, sizeof(err));
    if (e != WSQ_OK) {
        reject_upgrade(wsi, 401, e, err);
        return -1;
    }
    if (requests_wsq(wsi)) {
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

static void reply(wsq_session_t *s, unsigned status)
{
    s->http->status = status;
    s->http->waiting = false;
    if (s->wsi)
        lws_callback_on_writable(s->wsi);
}

static void reply_error(wsq_session_t *s, wsq_err code, const char *msg)
{
    json_error(&s->http->resp, code, msg ? msg : wsq_strerror(code));
    reply(s, err_status(code));
}

static int write_response(wsq_session_t *s, struct lws *wsi)
{
    wsq_http_t *h = s->http;
    if (h == NULL || h->status == 0)
        return 0;
    unsigned char hb[LWS_PRE + 512];
    unsigned char *start = hb + LWS_PRE, *p = start, *end = hb + sizeof(hb) - 1;
    const char *ctype = h->status == 200 && h->resp_text
                            ? "text/plain; version=0.0.4; charset=utf-8"
                            : "application/json";
    if (lws_add_http_common_headers(wsi, h->status, ctype, h->resp.len, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    if (h->resp.len) {
        unsigned char *body = malloc(LWS_PRE + h->resp.len);
        if (body == NULL)
            return -1;
        memcpy(body + LWS_PRE, h->resp.data, h->resp.len);
        int n = lws_write(wsi, body + LWS_PRE, h->resp.len, LWS_WRITE_HTTP_FINAL);
        free(body);
        if (n < 0)
            return -1;
    }
    h->status = 0;
    if (lws_http_transaction_completed(wsi))
        return -1;
    return 0;
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
    const char *v = lws_get_urlarg_by_name(wsi, "from=", arg, sizeof(arg));
    if (v && !parse_u64(v, &from)) {
        reply_error(s, WSQ_ERR_BAD_REQUEST, "from must be a seq (a non-negative integer)");
        return;
    }
    v = lws_get_urlarg_by_name(wsi, "limit=", arg, sizeof(arg));
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

static bool text_type(struct lws *wsi)
{
    char ct[128];
    if (lws_hdr_copy(wsi, ct, sizeof(ct), WSI_TOKEN_HTTP_CONTENT_TYPE) <= 0)
        return false;
    return strncmp(ct, "text/", 5) == 0 || strncmp(ct, "application/json", 16) == 0;
}

/* ------------------------------------------------------------------------------------------- */
/* admin endpoint: wsqctl's mutations while wsqd runs (wsqd stays the only writer) */

static bool arg_topic(struct lws *wsi, wsq_http_t *h)
{
    char buf[WSQ_TOPIC_MAX + 8];
    const char *t = lws_get_urlarg_by_name(wsi, "topic=", buf, sizeof(buf));
    if (t == NULL || !wsq_topic_valid(t, strlen(t)))
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
    s->http->waiting = true;
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
    if (strcmp(op, "whoami") == 0) {
        do_whoami(srv, s);
        return;
    }
    if (!s->ident.rights || !s->ident.rights->admin) {
        reply_error(s, s->ident.anonymous ? WSQ_ERR_UNAUTHORIZED : WSQ_ERR_FORBIDDEN,
                    "the admin endpoint needs an identity with admin rights");
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
        if ((v = lws_get_urlarg_by_name(wsi, "all=", a, sizeof(a))) && strcmp(v, "true") == 0) {
            r->purge_mode = WSQ_PURGE_ALL;
            modes++;
        }
        if ((v = lws_get_urlarg_by_name(wsi, "before=", a, sizeof(a)))) {
            if (!parse_u64(v, &r->purge_seq)) {
                wsq_wreq_free(&r);
                reply_error(s, WSQ_ERR_BAD_REQUEST, "before must be a seq");
                return;
            }
            r->purge_mode = WSQ_PURGE_BEFORE;
            modes++;
        }
        if ((v = lws_get_urlarg_by_name(wsi, "older_than=", a, sizeof(a)))) {
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
        char cn[WSQ_CONSUMER_NAME_MAX + 8];
        const char *c = lws_get_urlarg_by_name(wsi, "consumer=", cn, sizeof(cn));
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
        if (h->waiting)
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

/* One JSON Lines import body (wsq__import_parse): every message is appended (it gets a new
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
        wsq__import_parse((const char *)h->body.data, h->body.len,
                          srv->cfg->limits.max_message_size, import_one, &im, msg, sizeof(msg), &n);
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
    h->waiting = true;
    wsq_info_log("admin", "op=import messages=%llu identity=%s peer=%s", (unsigned long long)n,
                 s->ident.name, s->peer);
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
    bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;

    wsq_limit_t lim;
    if (wsq__conn_over_limit(srv, wsi, &lim)) {
        reply_error(s, WSQ_ERR_LIMIT, "too many connections");
        s->http->status = 503;
        return 0;
    }
    char err[160] = "";
    if (wsq__upgrade_identity(srv, wsi, &s->ident, err, sizeof(err)) != WSQ_OK) {
        reply_error(s, WSQ_ERR_UNAUTHORIZED, err);
        return 0;
    }
    wsq_route_t rt;
    wsq__http_route(path, get, post, &rt);
    switch (rt.kind) {
    case WSQ_ROUTE_HEALTH:
        do_health(srv, s);
        return 0;
    case WSQ_ROUTE_METRICS:
        do_metrics(srv, s);
        return 0;
    case WSQ_ROUTE_ADMIN:
        do_admin(srv, s, wsi, rt.admin_op, post);
        return 0;
    case WSQ_ROUTE_BAD_METHOD:
        reply_error(s, WSQ_ERR_BAD_REQUEST,
                    "wrong method: GET /healthz, /metrics and /topics/<topic>/messages; POST "
                    "/topics/<topic>");
        s->http->status = 405;
        return 0;
    case WSQ_ROUTE_BAD_TOPIC:
        reply_error(s, WSQ_ERR_BAD_TOPIC, NULL);
        return 0;
    case WSQ_ROUTE_NOT_FOUND:
        reply_error(s, WSQ_ERR_NOTFOUND, "no such endpoint");
        return 0;
    case WSQ_ROUTE_HISTORY:
    case WSQ_ROUTE_PUBLISH:
        break;
    }
    memcpy(s->http->topic, rt.topic, rt.topic_len + 1);
    s->http->topic_len = rt.topic_len;
    if (rt.kind == WSQ_ROUTE_HISTORY) {
        do_history(srv, s, wsi);
        return 0;
    }
    if (!wsq__allowed(&s->ident, WSQ_RIGHT_PUBLISH, rt.topic, rt.topic_len)) {
        reply_error(s, WSQ_ERR_FORBIDDEN, "not allowed to publish to this topic");
        return 0;
    }
    s->http->text = text_type(wsi);
    s->http->publish_body = true;
    char cl[32];
    if (lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 &&
        strtoull(cl, NULL, 10) > srv->cfg->limits.max_message_size) {
        atomic_fetch_add_explicit(&srv->metrics.limit_refusals[WSQ_LIM_MESSAGE_SIZE], 1,
                                  memory_order_relaxed);
        reply_error(s, WSQ_ERR_TOO_LARGE, NULL);
        return 0;
    }
    return 0; /* the body follows */
}

static void on_body_done(wsq_server_t *srv, wsq_session_t *s)
{
    wsq_http_t *h = s->http;
    if (h->status)
        return; /* already answered (error) */
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
    h->waiting = true;
    s->pub_inflight++;
}

void wsq__http_confirm(wsq_session_t *s, wsq_wreq_t *req)
{
    wsq_http_t *h = s->http;
    if (h == NULL || !h->waiting)
        return;
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
        if (len == 0)
            wsq_info_log("refused", "reason=client_certificate msg=\"client certificate not "
                                    "signed by the listener's ca\"");
        return len ? 0 : 1;
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        wsq__conn_opened(srv, wsi);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        wsq__conn_closed(srv, wsi);
        return 0;
    case LWS_CALLBACK_HTTP:
        return on_http(srv, wsi, pss, (const char *)in);
    case LWS_CALLBACK_HTTP_BODY:
        if (pss && *pss && (*pss)->http) {
            wsq_http_t *h = (*pss)->http;
            uint64_t cap = h->op == H_IMPORT ? 64ull * srv->cfg->limits.max_message_size
                                             : srv->cfg->limits.max_message_size;
            if (h->body.len + len > cap)
                h->too_large = true;
            else if (!h->status)
                wsq_buf_append(&h->body, in, len);
        }
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (pss && *pss && (*pss)->http)
            on_body_done(srv, *pss);
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
