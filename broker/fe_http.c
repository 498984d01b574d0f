/*
 * The HTTP front-end (service thread only), on the broker's port:
 *   POST /topics/<topic>                      publish the body; {"seq":N} after commit
 *   GET  /topics/<topic>/messages?from=&limit= history
 *   GET  /healthz                             storage writable?
 *   GET  /metrics                             Prometheus text (metrics.c)
 *   /admin/...                                admin.c
 * Every error is a status with a JSON body {"error":{"code":..,"message":..}}. Each request is
 * a session of its own, freed when its transaction ends.
 *
 * The http protocol's callback is also where the loop's own events arrive: the mailbox wake-up
 * (EVENT_WAIT_CANCELLED), new connections and client certificates.
 *
 * Why one file of ~850 lines: a request's life (route, head checks, body, answer, CORS, the
 * hand-back to the gate) is one state machine over one struct (http.h); the admin endpoints
 * (admin.c) and the Prometheus text (metrics.c) live apart.
 */
#include <libwebsockets.h>
#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core.h"
#include "gate.h"
#include "http.h"
#include "jwks.h"
#include "log.h"
#include "metrics.h"
#include "req.h"
#include "server.h"
#include "wsq/clock.h"
#include "wsq/route.h"

#define HISTORY_LIMIT_MAX 1000u
#define DISCARD_MAX (64ull << 20) /* largest refused body read to its end, not closed on */
#define HISTORY_BYTES_MAX (4u << 20)

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

void wsq__http_phase(wsq_http_t *h, wsq_http_phase_t to)
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
    case WSQ_ERR_CONFLICT:
    case WSQ_ERR_TAKEN_OVER:
        return 409;
    case WSQ_ERR_TOO_LARGE:
        return 413;
    case WSQ_ERR_CLOSED:
    case WSQ_ERR_STORAGE_FAILED:
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

void wsq__http_refuse(struct lws *wsi, unsigned status, wsq_err code, const char *msg)
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

/* ------------------------------------------------------------------------------------------- */
/* answers */

/* The answer is ready. The lws callback under way writes it (answer_now), or, for an answer
 * that came from the writer, WRITEABLE does (answer_later). */
void wsq__http_reply(wsq_session_t *s, unsigned status)
{
    wsq__http(s)->status = status;
    wsq__http_phase(wsq__http(s), HP_ANSWER);
}

void wsq__http_error(wsq_session_t *s, wsq_err code, const char *msg)
{
    json_error(&wsq__http(s)->resp, code, msg ? msg : wsq_strerror(code));
    wsq__http_reply(s, err_status(code));
}

/* An error with a status of its own (405, 431, 503 where the code says otherwise). */
static void error_status(wsq_session_t *s, unsigned status, wsq_err code, const char *msg)
{
    wsq__http_error(s, code, msg);
    wsq__http(s)->status = status;
}

/* An error after which the rest of the connection's bytes cannot be trusted as requests (a body
 * of unknown or refused length): answered with Connection: close, then closed. */
static void error_close(wsq_session_t *s, unsigned status, wsq_err code, const char *msg)
{
    error_status(s, status, code, msg);
    wsq__http(s)->close_after = true;
}

static int add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                      unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

/* Answers to a page of a listed origin (auth.allowed_origins) let that page read them; a
 * preflight also says what the page may send. Same-origin pages need none of it. */
/* What a preflight may ask to send: our fixed headers, and the Wsq-Header-* names the browser
 * asks for (Access-Control-Request-Headers), which no fixed list can name. */
static void allowed_headers(struct lws *wsi, char *out, size_t cap)
{
    size_t len = (size_t)snprintf(out, cap, "Authorization, Content-Type, Idempotency-Key");
    char req[1024];
    if (wsq__req_header(wsi, WSI_TOKEN_HTTP_AC_REQUEST_HEADERS, req, sizeof(req)) != WSQ_OK)
        return; /* none, or too long to list */
    for (char *save = NULL, *tok = strtok_r(req, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t n = strcspn(tok, " \t");
        bool token = n > sizeof(WSQ_HEADER_PREFIX) - 1 &&
                     strncasecmp(tok, WSQ_HEADER_PREFIX, sizeof(WSQ_HEADER_PREFIX) - 1) == 0;
        for (size_t i = 0; token && i < n; i++) /* RFC 9110 tchar, as a header name is */
            token = isalnum((unsigned char)tok[i]) || strchr("!#$%&'*+-.^_`|~", tok[i]);
        if (token && len + 2 + n < cap) {
            len += (size_t)snprintf(out + len, cap - len, ", %.*s", (int)n, tok);
        }
    }
}

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
           add_header(wsi, "access-control-allow-headers:", h->allow, p, end) ||
           add_header(wsi, "access-control-max-age:", "600", p, end);
}

/* HP_FLUSHING: once lws has sent the whole answer, the transaction ends and the gate lets the
 * next request in. Until then lws must not start the next one: it would go on reading in the
 * state of this one. */
static int finish_response(wsq_http_t *h, struct lws *wsi)
{
    if (lws_partial_buffered(wsi)) {
        lws_callback_on_writable(wsi); /* comes once lws's buffer is out */
        return 0;
    }
    wsq__http_phase(h, HP_SENT);
    if (lws_http_transaction_completed(wsi))
        return -1;
    wsq__gate_next(wsi);
    return 0;
}

static int write_response(wsq_http_t *h, struct lws *wsi)
{
    if (h->phase == HP_FLUSHING)
        return finish_response(h, wsi);
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
        wsq__http_phase(h, HP_SENT);
        return -1; /* lws sends what is written, then closes */
    }
    wsq__http_phase(h, HP_FLUSHING);
    return finish_response(h, wsi);
}

/* End of an lws callback for this request: an answer ready now is written now. Returns the
 * callback's return value (-1: close the connection). */
static int answer_now(wsq_session_t *s, struct lws *wsi)
{
    return wsq__http(s)->phase == HP_ANSWER ? write_response(wsq__http(s), wsi) : 0;
}

/* ------------------------------------------------------------------------------------------- */
/* endpoints */

static void health(wsq_session_t *s)
{
    wsq_server_t *srv = s->srv;
    wsq_buf_t *b = &wsq__http(s)->resp;
    char buf[256];
    wsq_err last = (wsq_err)atomic_load(&srv->storage_err);
    bool ok = last == WSQ_OK && !srv->shutting_down;
    int n = snprintf(buf, sizeof(buf), "{\"status\":\"%s\",\"storage\":\"%s\",\"uptime_ms\":%lld",
                     ok ? "ok" : "unavailable", last == WSQ_OK ? "writable" : wsq_errname(last),
                     (long long)(wsq_now_ms() - srv->started_ms));
    wsq_buf_append(b, buf, (size_t)n);
    if (last == WSQ_ERR_STORAGE_FAILED) { /* the detail is written before the error is set */
        WSQ_BUF_LIT(b, ",\"detail\":\"");
        wsq_json_escape(b, srv->storage_detail, strlen(srv->storage_detail));
        WSQ_BUF_LIT(b, "\"");
    }
    wsq_jwks_stats_t js;
    wsq__jwks_stats(srv->jwks, &js);
    if (js.configured) { /* the provider's keys: how old (-1: none fetched yet) */
        n = snprintf(buf, sizeof(buf), ",\"jwks\":{\"age_s\":%lld,\"keys\":%llu}",
                     (long long)(js.age_ms < 0 ? -1 : js.age_ms / 1000),
                     (unsigned long long)js.keys);
        wsq_buf_append(b, buf, (size_t)n);
    }
    WSQ_BUF_LIT(b, "}");
    wsq__http_reply(s, ok ? 200 : 503);
}

static void metrics(wsq_session_t *s)
{
    const wsq_config_t *cfg = s->srv->cfg;
    if (cfg->metrics.auth != WSQ_METRICS_AUTH_PUBLIC &&
        !(s->ident.rights && (s->ident.rights->metrics || s->ident.rights->admin))) {
        /* topic and consumer names are the deployment's business (metrics.auth) */
        wsq__http_error(s, s->ident.anonymous ? WSQ_ERR_UNAUTHORIZED : WSQ_ERR_FORBIDDEN,
                        "GET /metrics needs an identity with the metrics or admin right "
                        "(metrics.auth: token)");
        return;
    }
    wsq__metrics_render(s->srv, &wsq__http(s)->resp);
    wsq__http(s)->resp_text = true;
    wsq__http_reply(s, 200);
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
                      (m->flags & WSQ_MSG_BINARY) != 0, 1, m->headers, m->headers_len);
    return 0;
}

bool wsq__http_qarg(wsq_session_t *s, struct lws *wsi, const char *name, char *buf, size_t len,
                    const char **out)
{
    wsq_err e = wsq__req_query(wsi, name, buf, len);
    *out = e == WSQ_OK ? buf : NULL;
    if (e != WSQ_ERR_TOO_LARGE)
        return true;
    char msg[128];
    snprintf(msg, sizeof(msg), "query parameter %s is too long (at most %zu bytes)", name, len - 1);
    wsq__http_error(s, WSQ_ERR_BAD_REQUEST, msg);
    return false;
}

bool wsq__parse_u64(const char *s, uint64_t *out)
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

static void history(wsq_session_t *s, struct lws *wsi)
{
    wsq_http_t *h = wsq__http(s);
    if (!wsq__allowed(&s->ident, WSQ_RIGHT_SUBSCRIBE, h->topic, h->topic_len)) {
        wsq__http_error(s, WSQ_ERR_FORBIDDEN, "not allowed to read this topic");
        return;
    }
    char arg[64];
    uint64_t from = 0, limit = 100;
    const char *v;
    if (!wsq__http_qarg(s, wsi, "from", arg, sizeof(arg), &v))
        return;
    if (v && !wsq__parse_u64(v, &from)) {
        wsq__http_error(s, WSQ_ERR_BAD_REQUEST, "from must be a seq (a non-negative integer)");
        return;
    }
    if (!wsq__http_qarg(s, wsi, "limit", arg, sizeof(arg), &v))
        return;
    if (v && (!wsq__parse_u64(v, &limit) || limit == 0 || limit > HISTORY_LIMIT_MAX)) {
        wsq__http_error(s, WSQ_ERR_BAD_REQUEST, "limit must be 1..1000");
        return;
    }
    wsq_store_t *store = s->srv->store;
    wsq_topic_info_t ti;
    wsq_err err = wsq_store_topic_lookup(store, h->topic, h->topic_len, &ti);
    if (err != WSQ_OK) {
        wsq__http_error(s, err, err == WSQ_ERR_NOTFOUND ? "no such topic" : NULL);
        return;
    }
    if (from == 0)
        from = ti.first_seq;
    wsq_buf_t *b = &h->resp;
    char head[256];
    int n = snprintf(head, sizeof(head), "{\"topic\":\"%s\",\"epoch\":\"%016llx\",", ti.name,
                     (unsigned long long)ti.epoch);
    wsq_buf_append(b, head, (size_t)n);
    WSQ_BUF_LIT(b, "\"messages\":[");
    hist_t hc = {b, ti.name, strlen(ti.name), 0};
    wsq_read_info_t info;
    err = wsq_store_read(store, ti.id, from, (uint32_t)limit, HISTORY_BYTES_MAX, hist_one, &hc,
                         &info);
    if (err != WSQ_OK) {
        wsq__http_error(s, err, NULL);
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
    } else if (info.corrupt_seq && hc.n == 0) {
        /* the page starts at a message that fails its checksum: named, never returned (the
         * messages before it, when there are some, end the page; the next page starts here) */
        uint64_t c = info.corrupt_seq;
        atomic_fetch_add_explicit(&s->srv->metrics.corrupt, 1, memory_order_relaxed);
        wsq_err_log("corrupt",
                    "topic=%s seq=%llu msg=\"the stored message does not match its checksum; "
                    "history skips it (gap reason corrupt). Run wsqctl check\"",
                    ti.name, (unsigned long long)c);
        n = snprintf(head, sizeof(head),
                     ",\"gap\":{\"from\":%llu,\"to\":%llu,\"reason\":\"corrupt\"}",
                     (unsigned long long)c, (unsigned long long)c);
        wsq_buf_append(b, head, (size_t)n);
    }
    WSQ_BUF_LIT(b, "}");
    wsq__http_reply(s, 200);
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

/* OPTIONS: a CORS preflight from a page of an allowed origin (the browser checks passed) gets
 * 204 and what it may send; anything else has nothing to learn here. */
static void options(wsq_session_t *s, struct lws *wsi)
{
    wsq_http_t *h = wsq__http(s);
    if (!h->browser.browser) {
        error_status(s, 405, WSQ_ERR_BAD_REQUEST,
                     "OPTIONS is for CORS preflights (with an Origin)");
        return;
    }
    h->preflight = true;
    allowed_headers(wsi, h->allow, sizeof(h->allow)); /* (the request's headers are read now) */
    h->resp.len = 0;
    wsq__http_reply(s, 204);
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

/* Bodies over their limit are refused before a byte of them is read. Most clients send the
 * whole body before they read an answer: closing at once would lose the answer in a reset, so
 * lws reads and drops a body up to 64 MiB and the connection goes on; a larger one closes it.
 * false: refused (answered). */
static bool body_fits(wsq_session_t *s, struct lws *wsi, const wsq_route_t *rt)
{
    const wsq_config_t *cfg = s->srv->cfg;
    bool publish = rt->kind == WSQ_ROUTE_PUBLISH;
    bool import = rt->kind == WSQ_ROUTE_ADMIN && strcmp(rt->admin_op, "import") == 0;
    uint64_t cap = body_cap(cfg, publish, import);
    wsq__http(s)->body_cap = cap;
    uint64_t cl = content_length(wsi);
    if (cl <= cap)
        return true;
    if (publish)
        atomic_fetch_add_explicit(&s->srv->metrics.limit_refusals[WSQ_LIM_MESSAGE_SIZE], 1,
                                  memory_order_relaxed);
    char m[160];
    snprintf(m, sizeof(m), "the body is larger than %s (%llu bytes)",
             publish && cap == cfg->limits.max_message_size ? "limits.max_message_size"
             : import                                       ? "64 x limits.max_message_size"
                                                            : "limits.max_http_body",
             (unsigned long long)cap);
    if (cl > DISCARD_MAX)
        error_close(s, 413, WSQ_ERR_TOO_LARGE, m);
    else
        wsq__http_error(s, WSQ_ERR_TOO_LARGE, m);
    return false;
}

static bool expects_body(struct lws *wsi);

/* A POST's Idempotency-Key -> h->id (the publish id). False when refused (answered). */
static bool idempotency_key(wsq_session_t *s, struct lws *wsi)
{
    static const char name[] = "idempotency-key:";
    wsq_http_t *h = wsq__http(s);
    int n = lws_hdr_custom_length(wsi, name, (int)sizeof(name) - 1);
    if (n < 0)
        return true;
    if (n == 0 || n > WSQ_MSG_ID_MAX ||
        lws_hdr_custom_copy(wsi, h->id, (int)sizeof(h->id), name, (int)sizeof(name) - 1) != n) {
        wsq__http_error(s, WSQ_ERR_BAD_REQUEST, "Idempotency-Key has 1 to 128 bytes");
        return false;
    }
    h->id_len = (size_t)n;
    return true;
}

/* A POST's Wsq-Header-<key>: <value> lines -> h->hdrs (keys in lower case: HTTP header names
 * are case-insensitive). False when refused (answered). */
static bool message_headers(wsq_session_t *s, struct lws *wsi)
{
    wsq_http_t *h = wsq__http(s);
    const char *names;
    unsigned count;
    if (!wsq__gate_header_names(wsi, &names, &count)) {
        wsq__http_error(s, WSQ_ERR_BAD_REQUEST, "a Wsq-Header- name has 1 to 255 bytes");
        return false;
    }
    size_t bytes = 0;
    char why[200], name[sizeof(WSQ_HEADER_PREFIX) + WSQ_HEADER_KEY_MAX + 1];
    for (unsigned i = 0; i < count; i++, names += strlen(names) + 1) {
        size_t kl = strlen(names);
        int nl = snprintf(name, sizeof(name), WSQ_HEADER_PREFIX "%s:", names);
        int vl = lws_hdr_custom_length(wsi, name, nl);
        char *v = vl >= 0 ? malloc((size_t)vl + 1) : NULL;
        if (v == NULL || lws_hdr_custom_copy(wsi, v, vl + 1, name, nl) != vl) {
            free(v);
            wsq__http_error(s, vl < 0 ? WSQ_ERR_BAD_REQUEST : WSQ_ERR_NOMEM,
                            vl < 0 ? "a Wsq-Header- line could not be read" : NULL);
            return false;
        }
        /* one line per key: a repeated one would be two values for one key */
        size_t off = 0;
        wsq_header_t e;
        bool twice = false;
        while (wsq_headers_next(h->hdrs.data, h->hdrs.len, &off, &e))
            twice |= e.key_len == kl && memcmp(e.key, names, kl) == 0;
        wsq_err err = twice || kl == 0 ? WSQ_ERR_BAD_REQUEST
                                       : wsq_headers_add(&h->hdrs, names, kl, v, (size_t)vl);
        free(v);
        if (err != WSQ_OK) {
            if (kl == 0)
                snprintf(why, sizeof(why), "a Wsq-Header- name has 1 to 255 bytes");
            else if (twice)
                snprintf(why, sizeof(why), "Wsq-Header-%s is given twice", names);
            else
                snprintf(why, sizeof(why),
                         "Wsq-Header-%s: the value must be UTF-8 of at most 65535 bytes", names);
            wsq__http_error(s, err == WSQ_ERR_NOMEM ? err : WSQ_ERR_BAD_REQUEST, why);
            return false;
        }
        bytes += kl + (size_t)vl;
    }
    if (!wsq__headers_within(s->srv->cfg, count, bytes, why, sizeof(why))) {
        atomic_fetch_add_explicit(&s->srv->metrics.limit_refusals[WSQ_LIM_MESSAGE_HEADERS], 1,
                                  memory_order_relaxed);
        wsq__http_error(s, WSQ_ERR_TOO_LARGE, why);
        return false;
    }
    return true;
}

static void route_request(wsq_session_t *s, struct lws *wsi, const char *path)
{
    wsq_server_t *srv = s->srv;
    wsq_http_t *h = wsq__http(s);
    bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    /* HEAD is GET without the body (RFC 9110 9.3.2) */
    h->head_only = lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI) > 0;
    bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0 || h->head_only;

    wsq_limit_t lim;
    if (wsq__conn_over_limit(srv, wsi, &lim)) {
        /* the connection is one too many: closed after the answer, unless a body is still to
         * come (closing with it unread would reset the connection and lose the answer) */
        error_status(s, 503, WSQ_ERR_LIMIT, wsq__conn_limit_msg(lim));
        h->close_after = !expects_body(wsi);
        return;
    }
    char err[400] = "";
    unsigned st;
    wsq_err e = wsq__browser_check(srv, wsi, &h->browser, &st, err, sizeof(err));
    if (e != WSQ_OK) {
        error_status(s, st, e, err);
        return;
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_OPTIONS_URI) > 0) {
        options(s, wsi);
        return;
    }
    if (wsq__upgrade_identity(srv, wsi, &s->ident, err, sizeof(err)) != WSQ_OK) {
        wsq__http_error(s, WSQ_ERR_UNAUTHORIZED, err);
        return;
    }
    wsq_route_t rt;
    wsq_http_route(path, get, post, &rt);
    if (!body_fits(s, wsi, &rt))
        return;
    switch (rt.kind) {
    case WSQ_ROUTE_HEALTH:
        health(s);
        return;
    case WSQ_ROUTE_METRICS:
        metrics(s);
        return;
    case WSQ_ROUTE_ADMIN:
        wsq__admin_request(s, wsi, rt.admin_op, post);
        return;
    case WSQ_ROUTE_BAD_METHOD:
        error_status(s, 405, WSQ_ERR_BAD_REQUEST,
                     "wrong method: GET /healthz, /metrics and /topics/<topic>/messages; POST "
                     "/topics/<topic>");
        return;
    case WSQ_ROUTE_BAD_TOPIC:
        wsq__http_error(s, WSQ_ERR_BAD_TOPIC, NULL);
        return;
    case WSQ_ROUTE_NOT_FOUND:
        wsq__http_error(s, WSQ_ERR_NOTFOUND, "no such endpoint");
        return;
    case WSQ_ROUTE_FETCH:
    case WSQ_ROUTE_ACK:
    case WSQ_ROUTE_NACK:
        wsq__pull_request(s, wsi, rt.kind);
        return;
    case WSQ_ROUTE_HISTORY:
    case WSQ_ROUTE_PUBLISH:
        break;
    }
    memcpy(h->topic, rt.topic, rt.topic_len + 1);
    h->topic_len = rt.topic_len;
    if (rt.kind == WSQ_ROUTE_HISTORY) {
        history(s, wsi);
        return;
    }
    if (!wsq__allowed(&s->ident, WSQ_RIGHT_PUBLISH, rt.topic, rt.topic_len)) {
        wsq__http_error(s, WSQ_ERR_FORBIDDEN, "not allowed to publish to this topic");
        return;
    }
    if (text_type(wsi, &h->text) != WSQ_OK) {
        error_close(s, 400, WSQ_ERR_BAD_REQUEST, "Content-Type too long");
        return;
    }
    if (!message_headers(s, wsi) || !idempotency_key(s, wsi))
        return;
    h->publish_body = true; /* the body follows */
}

static void publish_body(wsq_session_t *s)
{
    wsq_http_t *h = wsq__http(s);
    if (h->text && !wsq_utf8_valid(h->body.data, h->body.len)) {
        wsq__http_error(s, WSQ_ERR_BAD_UTF8, "a text/* body must be valid UTF-8");
        return;
    }
    wsq_err err = wsq__publish(s, h->topic, h->topic_len, h->body.data, h->body.len, !h->text,
                               h->hdrs.data, h->hdrs.len, h->id, h->id_len, NULL);
    if (err != WSQ_OK) {
        wsq__http_error(s, err, NULL);
        return;
    }
    wsq__http_phase(h, HP_WORKING);
}

static void handle_body(wsq_session_t *s)
{
    wsq_http_t *h = wsq__http(s);
    if (h->too_large) {
        atomic_fetch_add_explicit(&s->srv->metrics.limit_refusals[WSQ_LIM_MESSAGE_SIZE], 1,
                                  memory_order_relaxed);
        wsq__http_error(s, WSQ_ERR_TOO_LARGE, NULL);
        return;
    }
    if (s->srv->shutting_down) {
        wsq__http_error(s, WSQ_ERR_CLOSED, "server is shutting down");
        return;
    }
    if (h->op == H_IMPORT)
        wsq__admin_body(s);
    else if (h->op == H_FETCH || h->op == H_ACK || h->op == H_NACK)
        wsq__pull_body(s);
    else if (h->publish_body)
        publish_body(s);
    /* else e.g. an admin purge sent with a body: the body means nothing */
}

/* ------------------------------------------------------------------------------------------- */
/* the request's life in lws callbacks */

static int on_http(wsq_server_t *srv, struct lws *wsi, wsq_session_t **pss, const char *path)
{
    if (*pss) { /* keep-alive: a new request on the same connection */
        wsq__session_free(*pss);
        *pss = NULL;
    }
    wsq_session_t *s = wsq__session_new(srv, wsi, &wsq__fe_http);
    if (s == NULL)
        return -1;
    *pss = s;
    wsq_http_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -1;
    wsq_buf_init(&h->body);
    wsq_buf_init(&h->hdrs);
    wsq_buf_init(&h->resp);
    s->fe_data = h;
    route_request(s, wsi, path);
    if (!expects_body(wsi))
        h->complete = true;
    return answer_now(s, wsi);
}

static void on_body(wsq_http_t *h, const void *in, size_t len)
{
    if (h->body.len + len > h->body_cap) /* the gate holds bodies to Content-Length */
        h->too_large = true;
    else if (h->phase == HP_PENDING)
        wsq_buf_append(&h->body, in, len);
}

static int on_body_done(wsq_session_t *s, struct lws *wsi)
{
    wsq_http_t *h = wsq__http(s);
    if (h->complete)
        return 0; /* handled once, whatever lws does */
    h->complete = true;
    if (h->phase == HP_PENDING) /* else answered already (an error), or an admin op under way */
        handle_body(s);
    return answer_now(s, wsi);
}

/* A writer request of this request completed: the answer is written from WRITEABLE (this is
 * no callback of the connection's). */
static void http_confirm(wsq_session_t *s, wsq_wreq_t *req)
{
    wsq_http_t *h = wsq__http(s);
    if (h == NULL || h->phase != HP_WORKING)
        return;
    if (h->op != H_PUBLISH) {
        wsq__admin_confirm(s, req);
    } else if (req->err != WSQ_OK) {
        wsq__http_error(s, req->err, req->err == WSQ_ERR_NOTFOUND ? "no such topic" : NULL);
    } else {
        char buf[400];
        int n = snprintf(buf, sizeof(buf), "{\"seq\":%llu,\"topic\":\"%s\"%s}",
                         (unsigned long long)req->seq, req->topic, req->dup ? ",\"dup\":true" : "");
        h->resp.len = 0;
        wsq_buf_append(&h->resp, buf, (size_t)n);
        wsq__http_reply(s, 200);
    }
    if (s->wsi && h->phase == HP_ANSWER)
        lws_callback_on_writable(s->wsi);
}

static void http_free(wsq_session_t *s)
{
    wsq_http_t *h = wsq__http(s);
    if (h == NULL)
        return;
    wsq__pull_end(s);
    wsq_buf_fini(&h->body);
    wsq_buf_fini(&h->hdrs);
    wsq_buf_fini(&h->resp);
    free(h);
    s->fe_data = NULL;
}

const wsq_fe_t wsq__fe_http = {
    .name = "http",
    .websocket = false,
    .confirm = http_confirm,
    .answer = wsq__pull_answer,
    .free = http_free,
};

static void request_gone(wsq_session_t **pss)
{
    if (pss && *pss) {
        wsq__session_state(*pss, WSQ_SS_GONE);
        (*pss)->wsi = NULL;
        wsq__session_free(*pss);
        *pss = NULL;
    }
}

int wsq__http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    wsq_server_t *srv = lws_context_user(lws_get_context(wsi));
    wsq_session_t **pss = user;
    wsq_session_t *s = pss ? *pss : NULL;

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
        if (s && wsq__http(s))
            on_body(wsq__http(s), in, len);
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return s && wsq__http(s) ? on_body_done(s, wsi) : 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return s && wsq__http(s) ? write_response(wsq__http(s), wsi) : 0;
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL: /* the transaction is over: lws frees pss next */
    case LWS_CALLBACK_CLOSED_HTTP:
        request_gone(pss);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}
