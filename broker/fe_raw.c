/*
 * The raw front-end (service thread only): a WebSocket at /topics/<topic>. Every frame the
 * client sends is one message published to that topic; when the identity may subscribe, the
 * connection is also a subscription (acked as it is written; a gap closes with 4010). Raw mode
 * has no confirm channel: a refused publish closes the connection with 4013 and the reason.
 */
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "req.h"
#include "server.h"
#include "ws.h"

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

static wsq_raw_target_t *target(const wsq_session_t *s)
{
    return s->fe_data;
}

static int raw_open(wsq_session_t *s, struct lws *wsi, char *detail, size_t detail_len)
{
    wsq_raw_target_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    s->fe_data = t;
    char err[160] = "";
    if (wsq__raw_target(wsi, t, err, sizeof(err)) != WSQ_OK)
        return wsq__session_close_now(s, WSQ_CLOSE_BAD_REQUEST, err);
    snprintf(detail, detail_len, " topic=%s", t->topic);
    if (!wsq__allowed(&s->ident, WSQ_RIGHT_SUBSCRIBE, t->topic, t->topic_len))
        return 0; /* a publisher only */
    ct_sub_params_t *p =
        wsq__sub_params(s->srv, t->topic, t->topic_len, t->consumer, t->consumer_len, t->shared,
                        t->from, t->from_seq, t->from_time, s->srv->cfg->limits.default_window);
    if (p == NULL)
        return -1;
    p->raw = true;
    if (wsq__sub_add(s, p) != WSQ_OK) {
        wsq__ct_params_free(p);
        return -1;
    }
    return 0;
}

/* The frame is the payload, capped exactly. */
static uint64_t raw_max_message(const wsq_session_t *s)
{
    return s->srv->cfg->limits.max_message_size;
}

static int raw_message(wsq_session_t *s, const unsigned char *msg, size_t len, bool binary)
{
    const wsq_raw_target_t *t = target(s);
    if (!wsq__allowed(&s->ident, WSQ_RIGHT_PUBLISH, t->topic, t->topic_len))
        return wsq__session_close_now(s, WSQ_CLOSE_FORBIDDEN,
                                      "not allowed to publish to this topic");
    if (s->srv->shutting_down)
        return 0; /* paused anyway; the client sees 1001 shortly */
    if (!wsq__rate_ok(s))
        return wsq__session_close_now(s, WSQ_CLOSE_LIMIT, "publish rate limit exceeded");
    wsq_err err = wsq__publish(s, t->topic, t->topic_len, msg, len, binary, NULL, 0, NULL, 0, NULL);
    if (err != WSQ_OK)
        return wsq__session_close_now(s, WSQ_CLOSE_STORAGE, wsq_errname(err));
    return 0;
}

static void raw_confirm(wsq_session_t *s, wsq_wreq_t *req)
{
    if (req->err == WSQ_OK)
        return;
    /* no confirm channel: a refused publish ends the connection, loudly */
    char reason[64];
    snprintf(reason, sizeof(reason), "publish refused: %s", wsq_errname(req->err));
    wsq__session_close(s, WSQ_CLOSE_STORAGE, reason);
}

/* A publisher keeps its connection only while it may still publish (a subscriber's rights are
 * the core's to check). */
static void raw_reauthorize(wsq_session_t *s)
{
    const wsq_raw_target_t *t = target(s);
    if (s->nsubs == 0 && !wsq__allowed(&s->ident, WSQ_RIGHT_PUBLISH, t->topic, t->topic_len))
        wsq__session_close(s, WSQ_CLOSE_FORBIDDEN, "rights revoked");
}

static void raw_free(wsq_session_t *s)
{
    if (s->fe_data)
        wsq_raw_target_clear(s->fe_data);
    free(s->fe_data);
    s->fe_data = NULL;
}

const wsq_fe_t wsq__fe_raw = {
    .name = "raw",
    .websocket = true,
    .open = raw_open,
    .max_message = raw_max_message,
    .message = raw_message,
    .confirm = raw_confirm,
    .reauthorize = raw_reauthorize,
    .free = raw_free,
};
