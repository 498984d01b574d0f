/*
 * The wsq.v1 front-end (service thread only): JSON text frames (docs/PROTOCOL.md). Each
 * decoded frame goes to the handler of its op; every refusal is an err frame with the client's
 * ref, and the connection goes on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "log.h"
#include "server.h"

static void send_buf(wsq_session_t *s, const wsq_buf_t *b)
{
    wsq__session_send_frame(s, WSQ_WS_OP_TEXT, b->data, b->len);
}

static void send_err(wsq_session_t *s, const char *ref, wsq_err code, const char *msg)
{
    wsq_buf_t b;
    wsq_buf_init(&b);
    if (wsq_proto_enc_err(&b, ref, code, msg ? msg : wsq_strerror(code)) == WSQ_OK)
        send_buf(s, &b);
    wsq_buf_fini(&b);
}

/* ok for ref (topic and seq when topic is not NULL and has_seq; dup: a repeated publish id). */
static void send_ok_dup(wsq_session_t *s, const char *ref, const char *topic, size_t topic_len,
                        uint64_t seq, bool has_seq, bool dup)
{
    wsq_buf_t b;
    wsq_buf_init(&b);
    if (wsq_proto_enc_ok(&b, ref, topic, topic_len, seq, has_seq, dup) == WSQ_OK)
        send_buf(s, &b);
    wsq_buf_fini(&b);
}

static void send_ok(wsq_session_t *s, const char *ref, const char *topic, size_t topic_len,
                    uint64_t seq, bool has_seq)
{
    send_ok_dup(s, ref, topic, topic_len, seq, has_seq, false);
}

static void count_limit(wsq_session_t *s, wsq_limit_t lim)
{
    atomic_fetch_add_explicit(&s->srv->metrics.limit_refusals[lim], 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------------------------------- */
/* one handler per op */

static void op_pub(wsq_session_t *s, const wsq_frame_t *f)
{
    char buf[640];
    if (!wsq__allowed(&s->ident, WSQ_RIGHT_PUBLISH, f->topic, f->topic_len)) {
        snprintf(buf, sizeof(buf), "%s may not publish to %s", s->ident.name, f->topic);
        send_err(s, f->ref, WSQ_ERR_FORBIDDEN, buf);
        return;
    }
    if (s->srv->shutting_down) {
        send_err(s, f->ref, WSQ_ERR_CLOSED, "server is shutting down");
        return;
    }
    if (!wsq__rate_ok(s)) {
        snprintf(buf, sizeof(buf), "more than limits.max_publish_rate (%u/s) publishes",
                 s->srv->cfg->limits.max_publish_rate);
        send_err(s, f->ref, WSQ_ERR_RATE_LIMITED, buf);
        return;
    }
    if (f->n_headers &&
        !wsq__headers_within(s->srv->cfg, f->n_headers, f->header_bytes, buf, sizeof(buf))) {
        count_limit(s, WSQ_LIM_MESSAGE_HEADERS);
        send_err(s, f->ref, WSQ_ERR_TOO_LARGE, buf);
        return;
    }
    wsq_err err = wsq__publish(s, f->topic, f->topic_len, f->data, f->data_len, f->binary,
                               f->headers, f->headers_len, f->id, f->id_len, f->ref);
    if (err != WSQ_OK)
        send_err(s, f->ref, err, NULL);
}

static void op_sub(wsq_session_t *s, const wsq_frame_t *f)
{
    const wsq_config_t *cfg = s->srv->cfg;
    char buf[640];
    /* a pattern is refused only when the identity may read nothing at all: of the topics it
     * matches, those the identity may not read are left out (delivery.c) */
    if (f->pattern ? s->ident.rights == NULL || s->ident.rights->subscribe.n == 0
                   : !wsq__allowed(&s->ident, WSQ_RIGHT_SUBSCRIBE, f->topic, f->topic_len)) {
        snprintf(buf, sizeof(buf), "%s may not subscribe to %s", s->ident.name, f->topic);
        send_err(s, f->ref, WSQ_ERR_FORBIDDEN, buf);
        return;
    }
    if (wsq__sub_by_topic(s, f->topic, f->topic_len)) {
        send_err(s, f->ref, WSQ_ERR_ALREADY_SUBSCRIBED, NULL);
        return;
    }
    if (s->nsubs >= cfg->limits.max_subscriptions) {
        count_limit(s, WSQ_LIM_SUBSCRIPTIONS);
        snprintf(buf, sizeof(buf), "at most %u subscriptions per connection",
                 cfg->limits.max_subscriptions);
        send_err(s, f->ref, WSQ_ERR_LIMIT, buf);
        return;
    }
    uint32_t window = f->window ? f->window : cfg->limits.default_window;
    if (window > cfg->limits.max_window) {
        count_limit(s, WSQ_LIM_WINDOW);
        snprintf(buf, sizeof(buf), "window %u exceeds limits.max_window %u", window,
                 cfg->limits.max_window);
        send_err(s, f->ref, WSQ_ERR_LIMIT, buf);
        return;
    }
    ct_sub_params_t *p =
        wsq__sub_params(s->srv, f->topic, f->topic_len, f->consumer, f->consumer_len, f->shared,
                        f->from, f->from_seq, f->from_time, window);
    if (p == NULL) {
        send_err(s, f->ref, WSQ_ERR_NOMEM, NULL);
        return;
    }
    snprintf(p->ref, sizeof(p->ref), "%s", f->ref);
    p->has_epoch = f->has_epoch;
    p->epoch = f->epoch;
    p->pattern = f->pattern;
    if ((p->pattern && wsq__rights_copy(&s->ident, &p->rights, &p->rights_len) != WSQ_OK) ||
        wsq__sub_add(s, p) != WSQ_OK) {
        wsq__ct_params_free(p);
        send_err(s, f->ref, WSQ_ERR_NOMEM, NULL);
    }
}

static void op_unsub(wsq_session_t *s, const wsq_frame_t *f)
{
    wsq_sub_t *sub = wsq__sub_by_topic(s, f->topic, f->topic_len);
    if (sub == NULL) {
        send_err(s, f->ref, WSQ_ERR_NOT_SUBSCRIBED, NULL);
        return;
    }
    /* the ok comes after everything sent for the subscription, its "subscribed" included */
    wsq_buf_t ok;
    wsq_buf_init(&ok);
    if (f->ref[0])
        wsq_proto_enc_ok(&ok, f->ref, f->topic, f->topic_len, 0, false, false);
    wsq__sub_end_reply(s, sub, &ok);
    wsq_buf_fini(&ok);
}

/* Adds seq to the session's ack command still waiting in the batch for the delivery thread,
 * when it is for the same subscription: a work queue acks every message, and one command per
 * burst costs the two threads far less than one per ack. false: none to join. */
static bool ack_join(wsq_session_t *s, const wsq_sub_t *sub, uint64_t seq)
{
    ct_cmd_t *c = s->ack_cmd;
    if (c == NULL || s->ack_gen != s->srv->ct_batch_gen || c->sub_id != sub->id)
        return false;
    if (c->n_seqs == s->ack_cap) {
        uint32_t cap = s->ack_cap ? 2 * s->ack_cap : 16;
        uint64_t *v = realloc(c->seqs, cap * sizeof(*v));
        if (v == NULL)
            return false;
        c->seqs = v;
        s->ack_cap = cap;
    }
    c->seqs[c->n_seqs++] = seq;
    return true;
}

/* ack, cumulative ack and nack */
static void op_ack(wsq_session_t *s, const wsq_frame_t *f)
{
    wsq_sub_t *sub = wsq__sub_for_message(s, f->topic, f->topic_len);
    if (sub == NULL) {
        send_err(s, f->ref, WSQ_ERR_NOT_SUBSCRIBED, NULL);
        return;
    }
    if (f->op == WSQ_OP_NACK && !sub->durable) {
        send_err(s, f->ref, WSQ_ERR_BAD_REQUEST,
                 "nack needs a durable consumer; this subscription is ephemeral");
        return;
    }
    if (f->has_upto && sub->shared) {
        send_err(s, f->ref, WSQ_ERR_BAD_REQUEST,
                 "a shared consumer's members complete out of order: ack each \"seq\", not "
                 "\"upto\"");
        return;
    }
    wsq__ct_ack_turn(s->srv, s->id);
    ct_kind_t k = f->op == WSQ_OP_NACK ? CT_NACK : f->has_upto ? CT_ACK_UPTO : CT_ACK;
    if (k == CT_ACK && !sub->pattern && ack_join(s, sub, f->seq))
        return;
    ct_cmd_t *cmd = wsq__ct_cmd(k, s->id, sub->id);
    if (cmd && sub->pattern && (cmd->topic = strdup(f->topic)) == NULL) {
        wsq__ct_cmd_free(cmd);
        cmd = NULL;
    }
    if (cmd) {
        cmd->seq = f->has_upto ? f->upto : f->seq;
        cmd->delay_ms = f->delay_ms;
        cmd->term = f->term;
        wsq__ct_defer(s->srv, cmd);
        if (k == CT_ACK && !sub->pattern) { /* the next ack of this subscription may join it */
            s->ack_cmd = cmd;
            s->ack_gen = s->srv->ct_batch_gen;
            s->ack_cap = 0;
        }
    }
}

static void op_ping(wsq_session_t *s, const wsq_frame_t *f)
{
    wsq_buf_t b;
    wsq_buf_init(&b);
    if (wsq_proto_enc_pong(&b, f->ref) == WSQ_OK)
        send_buf(s, &b);
    wsq_buf_fini(&b);
}

static void op_auth(wsq_session_t *s, const wsq_frame_t *f)
{
    wsq_identity_t id;
    wsq_err err = wsq__auth_token(s->srv, f->token, strlen(f->token), &id);
    if (err != WSQ_OK) {
        send_err(s, f->ref, err, "invalid token");
        wsq_info_log("auth_failed", "sid=%llu peer=%s reason=op_auth", (unsigned long long)s->id,
                     s->peer);
        return;
    }
    wsq__identity_move(&s->ident, &id);
    send_ok(s, f->ref, NULL, 0, 0, false);
}

static void (*const handlers[])(wsq_session_t *s, const wsq_frame_t *f) = {
    [WSQ_OP_PUB] = op_pub,   [WSQ_OP_SUB] = op_sub,  [WSQ_OP_UNSUB] = op_unsub,
    [WSQ_OP_ACK] = op_ack,   [WSQ_OP_NACK] = op_ack, [WSQ_OP_PING] = op_ping,
    [WSQ_OP_AUTH] = op_auth,
};

/* ------------------------------------------------------------------------------------------- */
/* the front-end */

/* The JSON around a payload (base64 is 4/3, escapes more) gets room; the decoded payload is
 * capped exactly by the decoder. */
static uint64_t wsq_max_message(const wsq_session_t *s)
{
    return 2 * s->srv->cfg->limits.max_message_size + 65536;
}

static int wsq_message(wsq_session_t *s, const unsigned char *msg, size_t len, bool binary)
{
    if (binary) {
        send_err(s, "", WSQ_ERR_BAD_REQUEST,
                 "wsq.v1 frames are JSON text; send binary payloads base64-encoded");
        return 0;
    }
    wsq_frame_t f;
    wsq_proto_error_t perr;
    if (wsq_proto_decode(msg, len, s->srv->cfg->limits.max_message_size, &f, &perr) != WSQ_OK) {
        if (perr.code == WSQ_ERR_TOO_LARGE)
            count_limit(s, WSQ_LIM_MESSAGE_SIZE);
        send_err(s, perr.ref, perr.code, perr.message);
        return 0;
    }
    if ((size_t)f.op < sizeof(handlers) / sizeof(handlers[0]) && handlers[f.op])
        handlers[f.op](s, &f);
    wsq_frame_clear(&f);
    return 0;
}

static void wsq_confirm(wsq_session_t *s, wsq_wreq_t *req)
{
    const char *ref = (const char *)req->data + req->len; /* see wsq__publish */
    if (req->err != WSQ_OK) {
        char msg[160];
        snprintf(msg, sizeof(msg), "publish to %s refused: %s", req->topic, wsq_strerror(req->err));
        send_err(s, ref, req->err, msg);
    } else if (ref[0]) {
        send_ok_dup(s, ref, req->topic, req->topic_len, req->seq, true, req->dup);
    }
}

const wsq_fe_t wsq__fe_wsq = {
    .name = "wsq.v1",
    .websocket = true,
    .max_message = wsq_max_message,
    .message = wsq_message,
    .confirm = wsq_confirm,
};
