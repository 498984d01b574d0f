/*
 * The admin endpoint (service thread only), part of the HTTP front-end: wsqctl's reads of who
 * runs the store, and its mutations while wsqd runs (wsqd stays the only writer):
 *   GET  /admin/whoami                         identity, pid, version, format, data path
 *   POST /admin/purge?topic=&(all|before|older_than)=
 *   POST /admin/delete-consumer?topic=&consumer=
 *   POST /admin/import                         JSON Lines body (wsqctl import)
 * Every one needs an identity with the admin right; from a browser, explicit credentials too.
 */
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "http.h"
#include "log.h"
#include "req.h"
#include "server.h"
#include "wsq/clock.h"
#include "wsq/route.h"

/* topic= into h->topic. false: absent, too long or invalid. */
static bool arg_topic(struct lws *wsi, wsq_http_t *h)
{
    char buf[WSQ_TOPIC_MAX + 1];
    if (wsq__req_query(wsi, "topic", buf, sizeof(buf)) != WSQ_OK)
        return false;
    if (!wsq_topic_valid(buf, strlen(buf)))
        return false;
    h->topic_len = strlen(buf);
    memcpy(h->topic, buf, h->topic_len + 1);
    return true;
}

static void submit(wsq_session_t *s, wsq_wreq_t *r)
{
    wsq_err err = wsq__session_submit(s, r);
    if (err != WSQ_OK) {
        wsq_wreq_free(&r);
        wsq__http_error(s, err, NULL);
        return;
    }
    wsq__http_phase(wsq__http(s), HP_WORKING);
}

static void whoami(wsq_session_t *s)
{
    wsq_http_t *h = wsq__http(s);
    char buf[4400];
    wsq_buf_append(&h->resp, "{\"identity\":\"", 13);
    wsq_json_escape(&h->resp, s->ident.name, strlen(s->ident.name)); /* any printable UTF-8 */
    int n = snprintf(buf, sizeof(buf),
                     "\",\"admin\":%s,\"pid\":%ld,\"version\":\"%s\",\"format\":%d,\"data\":\"",
                     s->ident.rights && s->ident.rights->admin ? "true" : "false", (long)getpid(),
                     WSQ_VERSION, WSQ_FORMAT_VERSION);
    wsq_buf_append(&h->resp, buf, (size_t)n);
    char real[4096];
    const char *cpath = s->srv->cfg->storage.path;
    const char *p = realpath(cpath, real) ? real : cpath;
    wsq_json_escape(&h->resp, p, strlen(p));
    WSQ_BUF_LIT(&h->resp, "\"}");
    wsq__http_reply(s, 200);
}

/* The purge mode from the query: exactly one of all=true, before=SEQ, older_than=DURATION.
 * false: answered (an error). */
static bool purge_mode(wsq_session_t *s, struct lws *wsi, wsq_wreq_t *r)
{
    char a[64];
    const char *v;
    int modes = 0;
    if (!wsq__http_qarg(s, wsi, "all", a, sizeof(a), &v))
        return false;
    if (v && strcmp(v, "true") != 0) {
        wsq__http_error(s, WSQ_ERR_BAD_REQUEST, "all must be true");
        return false;
    }
    if (v) {
        r->purge_mode = WSQ_PURGE_ALL;
        modes++;
    }
    if (!wsq__http_qarg(s, wsi, "before", a, sizeof(a), &v))
        return false;
    if (v) {
        if (!wsq__parse_u64(v, &r->purge_seq)) {
            wsq__http_error(s, WSQ_ERR_BAD_REQUEST, "before must be a seq");
            return false;
        }
        r->purge_mode = WSQ_PURGE_BEFORE;
        modes++;
    }
    if (!wsq__http_qarg(s, wsi, "older_than", a, sizeof(a), &v))
        return false;
    if (v) {
        int64_t ms;
        if (wsq_parse_duration_ms(v, &ms) != WSQ_OK || ms < 0) {
            wsq__http_error(s, WSQ_ERR_BAD_REQUEST, "older_than must be a duration (e.g. 1h)");
            return false;
        }
        r->purge_mode = WSQ_PURGE_OLDER;
        r->purge_ts_ms = wsq_now_ms() - ms;
        modes++;
    }
    if (modes != 1) {
        wsq__http_error(s, WSQ_ERR_BAD_REQUEST,
                        "give exactly one of all=true, before=SEQ, older_than=DURATION");
        return false;
    }
    return true;
}

static void purge(wsq_session_t *s, struct lws *wsi)
{
    wsq_http_t *h = wsq__http(s);
    if (!arg_topic(wsi, h)) {
        wsq__http_error(s, WSQ_ERR_BAD_TOPIC, "purge needs topic=<valid topic>");
        return;
    }
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_PURGE, h->topic, h->topic_len, NULL, 0, 0);
    if (r == NULL) {
        wsq__http_error(s, WSQ_ERR_NOMEM, NULL);
        return;
    }
    if (!purge_mode(s, wsi, r)) {
        wsq_wreq_free(&r);
        return;
    }
    h->op = H_PURGE;
    char q[WSQ_LOG_Q_MAX];
    wsq_info_log("admin", "op=purge topic=%s identity=%s peer=%s", h->topic,
                 wsq__log_q(q, sizeof(q), s->ident.name), s->peer);
    submit(s, r);
}

static void delete_consumer(wsq_session_t *s, struct lws *wsi)
{
    wsq_http_t *h = wsq__http(s);
    char cn[WSQ_CONSUMER_NAME_MAX + 1];
    const char *c;
    if (!wsq__http_qarg(s, wsi, "consumer", cn, sizeof(cn), &c))
        return;
    if (!arg_topic(wsi, h) || c == NULL || !*c) {
        wsq__http_error(s, WSQ_ERR_BAD_REQUEST, "delete-consumer needs topic= and consumer=");
        return;
    }
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_CONSUMER_DELETE, h->topic, h->topic_len, c, strlen(c), 0);
    ct_cmd_t *cmd = wsq__ct_cmd(CT_CONSUMER_DELETE, 0, 0);
    ct_sub_params_t *p = calloc(1, sizeof(*p));
    if (r == NULL || cmd == NULL || p == NULL) {
        wsq_wreq_free(&r);
        free(cmd);
        free(p);
        wsq__http_error(s, WSQ_ERR_BAD_REQUEST, "bad consumer name");
        return;
    }
    memcpy(p->topic, h->topic, h->topic_len + 1);
    p->topic_len = h->topic_len;
    p->consumer_len = strlen(c);
    memcpy(p->consumer, c, p->consumer_len + 1);
    cmd->sub = p;
    h->op = H_DELETE_CONSUMER;
    char q[WSQ_LOG_Q_MAX];
    wsq_info_log("admin", "op=delete-consumer topic=%s consumer=%s identity=%s peer=%s", h->topic,
                 c, wsq__log_q(q, sizeof(q), s->ident.name), s->peer);
    submit(s, r);
    if (h->phase == HP_WORKING)
        wsq__ct_defer(s->srv, cmd); /* closes the consumer's session, drops its state */
    else
        wsq__ct_cmd_free(cmd);
}

void wsq__admin_request(wsq_session_t *s, struct lws *wsi, const char *op, bool post)
{
    wsq_http_t *h = wsq__http(s);
    if (h->browser.browser && s->ident.anonymous) { /* whatever auth.anonymous.admin says */
        wsq__http_error(s, WSQ_ERR_UNAUTHORIZED,
                        "admin requests from a browser need credentials (Authorization: Bearer)");
        return;
    }
    if (!s->ident.rights || !s->ident.rights->admin) {
        wsq__http_error(s, s->ident.anonymous ? WSQ_ERR_UNAUTHORIZED : WSQ_ERR_FORBIDDEN,
                        "the admin endpoint needs an identity with admin rights");
        return;
    }
    if (strcmp(op, "whoami") == 0) {
        if (post) {
            wsq__http_error(s, WSQ_ERR_BAD_REQUEST, "whoami is a GET request");
            h->status = 405;
            return;
        }
        whoami(s);
        return;
    }
    if (!post) {
        wsq__http_error(s, WSQ_ERR_BAD_REQUEST, "admin operations are POST requests");
        h->status = 405;
        return;
    }
    if (s->srv->shutting_down) {
        wsq__http_error(s, WSQ_ERR_CLOSED, "server is shutting down");
        return;
    }
    if (strcmp(op, "purge") == 0)
        purge(s, wsi);
    else if (strcmp(op, "delete-consumer") == 0)
        delete_consumer(s, wsi);
    else if (strcmp(op, "import") == 0)
        h->op = H_IMPORT; /* JSON Lines body follows */
    else
        wsq__http_error(s, WSQ_ERR_NOTFOUND, "unknown admin operation");
}

/* ------------------------------------------------------------------------------------------- */
/* import: one JSON Lines body (wsq_import_parse). Every message is appended (it gets a new
 * seq: seqs are never reused); a bad line refuses the whole body. */

typedef struct {
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
    if (!wsq__headers_within(im->s->srv->cfg, f->n_headers, f->header_bytes, im->msg, im->msglen)) {
        atomic_fetch_add_explicit(&im->s->srv->metrics.limit_refusals[WSQ_LIM_MESSAGE_HEADERS], 1,
                                  memory_order_relaxed);
        return WSQ_ERR_TOO_LARGE;
    }
    wsq_wreq_t *r =
        wsq_wreq_append(f->topic, f->topic_len, f->data, f->data_len,
                        f->binary ? WSQ_MSG_BINARY : 0, f->headers, f->headers_len, NULL, 0, 1);
    if (r == NULL)
        return WSQ_ERR_NOMEM;
    r->data[r->len] = '\0'; /* an empty ref: see wsq__publish */
    wsq__session_route(im->s, r);
    *im->tail = r;
    im->tail = &r->next;
    return WSQ_OK;
}

void wsq__admin_body(wsq_session_t *s)
{
    wsq_http_t *h = wsq__http(s);
    wsq_server_t *srv = s->srv;
    char msg[400] = "";
    import_t im = {s, NULL, NULL, msg, sizeof(msg)};
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
            wsq__http_error(s, err, msg[0] ? msg : NULL); /* nothing of a bad body is imported */
            return;
        }
        h->resp.len = 0;
        WSQ_BUF_LIT(&h->resp, "{\"imported\":0}");
        wsq__http_reply(s, 200);
        return;
    }
    h->expect = n;
    wsq__http_phase(h, HP_WORKING);
    char q[WSQ_LOG_Q_MAX];
    wsq_info_log("admin", "op=import messages=%llu identity=%s peer=%s", (unsigned long long)n,
                 wsq__log_q(q, sizeof(q), s->ident.name), s->peer);
}

void wsq__admin_confirm(wsq_session_t *s, wsq_wreq_t *req)
{
    wsq_http_t *h = wsq__http(s);
    char buf[400];
    int n;
    if (h->op == H_IMPORT) {
        h->done++;
        if (req->err != WSQ_OK && h->first_err == WSQ_OK)
            h->first_err = req->err;
        if (h->done < h->expect)
            return;
        if (h->first_err != WSQ_OK) {
            snprintf(buf, sizeof(buf), "import stopped: %s (messages before it are stored)",
                     wsq_strerror(h->first_err));
            wsq__http_error(s, h->first_err, buf);
            return;
        }
        n = snprintf(buf, sizeof(buf), "{\"imported\":%llu}", (unsigned long long)h->done);
    } else if (req->err != WSQ_OK) {
        wsq__http_error(s, req->err,
                        req->err == WSQ_ERR_NOTFOUND
                            ? (h->op == H_DELETE_CONSUMER ? "no such consumer" : "no such topic")
                            : NULL);
        return;
    } else if (h->op == H_PURGE) {
        wsq_topic_info_t ti;
        memset(&ti, 0, sizeof(ti)); /* a topic deleted meanwhile: zero positions */
        wsq_store_topic_lookup(s->srv->store, req->topic, req->topic_len, &ti);
        n = snprintf(buf, sizeof(buf),
                     "{\"topic\":\"%s\",\"removed\":%llu,\"first_seq\":%llu,\"next_seq\":%llu}",
                     req->topic, (unsigned long long)req->removed, (unsigned long long)ti.first_seq,
                     (unsigned long long)ti.next_seq);
    } else {
        n = snprintf(buf, sizeof(buf), "{\"topic\":\"%s\",\"consumer\":\"%s\",\"deleted\":true}",
                     req->topic, req->consumer);
    }
    h->resp.len = 0;
    wsq_buf_append(&h->resp, buf, (size_t)n);
    wsq__http_reply(s, 200);
}
