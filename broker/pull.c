/*
 * HTTP pull (service thread only), part of the HTTP front-end: workers that are not WebSocket
 * clients take messages from a durable consumer with leases.
 *   POST /fetch?topic=T&consumer=C[&shared=true][&from=F][&max=N][&wait=DUR]
 *        leases up to N messages, waiting up to DUR for the first: {"messages":[...]}
 *   POST /ack?topic=T&consumer=C   {"seqs":[...]}                       -> {"acked":N}
 *   POST /nack?topic=T&consumer=C  {"seqs":[...],"delay":MS|"term":true} -> {"nacked":N}
 * The query is parsed by proto/ (wsq_pull_parse_query), the body too (wsq_pull_parse_acks); the
 * delivery thread does the work (CT_FETCH, CT_PULL_ACK, CT_PULL_NACK) and answers through the
 * service thread's mailbox (ST_ANSWER -> wsq__pull_answer). Each needs the subscribe right on
 * the topic.
 */
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "delivery.h"
#include "http.h"
#include "req.h"
#include "server.h"

void wsq__pull_request(wsq_session_t *s, struct lws *wsi, wsq_route_kind_t kind)
{
    wsq_http_t *h = wsq__http(s);
    char query[2048], err[600];
    wsq_err e = wsq__req_query_all(wsi, query, sizeof(query));
    if (e != WSQ_OK) {
        wsq__http_error(s, WSQ_ERR_BAD_REQUEST,
                        e == WSQ_ERR_TOO_LARGE ? "the query is too long" : "bad query");
        return;
    }
    wsq_pull_query_t *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        wsq__http_error(s, WSQ_ERR_NOMEM, NULL);
        return;
    }
    h->pull = q;
    if ((e = wsq_pull_parse_query(query, q, err, sizeof(err))) != WSQ_OK) {
        wsq__http_error(s, e, err);
        return;
    }
    if (!wsq__allowed(&s->ident, WSQ_RIGHT_SUBSCRIBE, q->topic, q->topic_len)) {
        snprintf(err, sizeof(err), "%s may not consume %s", s->ident.name, q->topic);
        wsq__http_error(s, WSQ_ERR_FORBIDDEN, err);
        return;
    }
    const wsq_config_t *cfg = s->srv->cfg;
    if (kind == WSQ_ROUTE_FETCH && q->max > cfg->limits.max_window) {
        snprintf(err, sizeof(err), "max %u exceeds limits.max_window %u", q->max,
                 cfg->limits.max_window);
        wsq__http_error(s, WSQ_ERR_BAD_REQUEST, err);
        return;
    }
    h->op = kind == WSQ_ROUTE_FETCH ? H_FETCH : kind == WSQ_ROUTE_ACK ? H_ACK : H_NACK;
}

/* The consumer's name and topic, for the delivery thread. */
static ct_sub_params_t *params(wsq_session_t *s, const wsq_pull_query_t *q)
{
    return wsq__sub_params(s->srv, q->topic, q->topic_len, q->consumer, q->consumer_len, q->shared,
                           q->from, q->from_seq, q->from_time, q->max);
}

void wsq__pull_body(wsq_session_t *s)
{
    wsq_http_t *h = wsq__http(s);
    const wsq_pull_query_t *q = h->pull;
    wsq_pull_acks_t *a = NULL;
    ct_cmd_t *cmd = NULL;
    char err[200];
    if (h->op != H_FETCH) {
        if ((a = malloc(sizeof(*a))) == NULL) {
            wsq__http_error(s, WSQ_ERR_NOMEM, NULL);
            return;
        }
        wsq_err e =
            wsq_pull_parse_acks(h->body.data, h->body.len, h->op == H_NACK, a, err, sizeof(err));
        if (e != WSQ_OK) {
            free(a);
            wsq__http_error(s, e, err);
            return;
        }
    }
    cmd = wsq__ct_cmd(h->op == H_FETCH ? CT_FETCH
                      : h->op == H_ACK ? CT_PULL_ACK
                                       : CT_PULL_NACK,
                      s->id, 0);
    if (cmd == NULL || (cmd->sub = params(s, q)) == NULL ||
        (a && (cmd->seqs = malloc(a->n * sizeof(uint64_t))) == NULL)) {
        if (cmd)
            wsq__ct_cmd_free(cmd);
        free(a);
        wsq__http_error(s, WSQ_ERR_NOMEM, NULL);
        return;
    }
    if (a) {
        memcpy(cmd->seqs, a->seqs, a->n * sizeof(uint64_t));
        cmd->n_seqs = a->n;
        cmd->delay_ms = a->delay_ms;
        cmd->term = a->term;
        free(a);
    } else {
        cmd->count = q->max;
        cmd->delay_ms = q->wait_ms;
        /* a long poll is no stalled request: lws's own timeouts do not apply while it waits */
        if (s->wsi)
            lws_set_timeout(s->wsi, NO_PENDING_TIMEOUT, 0);
    }
    wsq__ct_defer(s->srv, cmd);
    wsq__http_phase(h, HP_WORKING);
}

void wsq__pull_answer(wsq_session_t *s, wsq_err err, char *body, size_t len)
{
    wsq_http_t *h = wsq__http(s);
    if (h == NULL || h->phase != HP_WORKING ||
        (h->op != H_FETCH && h->op != H_ACK && h->op != H_NACK)) {
        free(body);
        return;
    }
    if (err != WSQ_OK) {
        wsq__http_error(s, err,
                        body                    ? body
                        : err == WSQ_ERR_CLOSED ? "server is shutting down"
                                                : NULL);
        free(body);
    } else {
        wsq_buf_fini(&h->resp);
        wsq_buf_init(&h->resp);
        wsq_buf_append(&h->resp, body, len);
        free(body);
        wsq__http_reply(s, 200);
    }
    if (s->wsi)
        lws_callback_on_writable(s->wsi);
}

/* The request ends (answered, or its client left): a fetch still waiting is called off. */
void wsq__pull_end(wsq_session_t *s)
{
    wsq_http_t *h = wsq__http(s);
    if (h->op == H_FETCH && h->phase == HP_WORKING)
        wsq__ct_defer(s->srv, wsq__ct_cmd(CT_SESSION_GONE, s->id, 0));
    free(h->pull);
    h->pull = NULL;
}
