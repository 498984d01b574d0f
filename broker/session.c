/*
 * WebSocket sessions (service thread only): raw mode and wsq.v1.
 *
 * Inbound: frames are reassembled up to limits.max_message_size (close 1009), text is validated
 * as UTF-8 while it streams in (close 1007), and each complete message is published (raw mode) or
 * decoded as a wsq.v1 frame.
 *
 * Outbound: everything a session sends is a FIFO of pre-framed chunks (deliveries from the
 * consumer thread, and the service thread's own ok/err/pong frames). WRITEABLE copies whole
 * chunks into one buffer and writes them with one lws_write: many messages per socket write.
 *
 * A session is closed by setting close_code and asking for WRITEABLE, which sends the close
 * frame after whatever is queued (mosquitto's pattern); it is freed in LWS_CALLBACK_CLOSED.
 */
#include <libwebsockets.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "session.h"
#include "wsq/clock.h"

#define SESSION_BUCKETS_MIN 1024u

/* ------------------------------------------------------------------------------------------- */
/* session table */

static uint32_t sid_bucket(const wsq_server_t *srv, uint64_t sid)
{
    uint64_t h = sid * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32) & (srv->nbuckets - 1);
}

wsq_session_t *wsq__session_find(wsq_server_t *srv, uint64_t sid)
{
    if (srv->buckets == NULL)
        return NULL;
    for (wsq_session_t *s = srv->buckets[sid_bucket(srv, sid)]; s; s = s->hnext)
        if (s->id == sid)
            return s;
    return NULL;
}

static void table_grow(wsq_server_t *srv)
{
    uint32_t nb = srv->nbuckets ? srv->nbuckets * 2 : SESSION_BUCKETS_MIN;
    wsq_session_t **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return; /* keep the old (slower) table */
    uint32_t old = srv->nbuckets;
    wsq_session_t **ob = srv->buckets;
    srv->buckets = b;
    srv->nbuckets = nb;
    for (uint32_t i = 0; i < old; i++) {
        for (wsq_session_t *s = ob[i], *nx; s; s = nx) {
            nx = s->hnext;
            uint32_t k = sid_bucket(srv, s->id);
            s->hnext = b[k];
            b[k] = s;
        }
    }
    free(ob);
}

wsq_session_t *wsq__session_new(wsq_server_t *srv, struct lws *wsi, wsq_sess_kind_t kind)
{
    wsq_session_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    if (srv->nsessions + 1 > srv->nbuckets)
        table_grow(srv);
    if (srv->buckets == NULL) {
        free(s);
        return NULL;
    }
    s->id = ++srv->next_sid;
    s->srv = srv;
    s->wsi = wsi;
    s->kind = kind;
    s->oq_tail = &s->oq_head;
    wsq_buf_init(&s->rx);
    lws_get_peer_simple(wsi, s->peer, sizeof(s->peer));
    uint32_t k = sid_bucket(srv, s->id);
    s->hnext = srv->buckets[k];
    srv->buckets[k] = s;
    srv->nsessions++;
    return s;
}

void wsq__session_free(wsq_session_t *s)
{
    wsq_server_t *srv = s->srv;
    for (wsq_session_t **pp = &srv->buckets[sid_bucket(srv, s->id)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == s) {
            *pp = s->hnext;
            break;
        }
    }
    for (wsq_session_t **pp = &srv->paused; *pp; pp = &(*pp)->pnext) {
        if (*pp == s) {
            *pp = s->pnext;
            break;
        }
    }
    srv->nsessions--;
    wsq__out_free_list(&s->oq_head);
    wsq_buf_fini(&s->rx);
    wsq_raw_target_clear(&s->target);
    wsq__identity_fini(&s->ident);
    free(s->subs);
    wsq__http_free(s->http);
    free(s);
}

/* ------------------------------------------------------------------------------------------- */
/* outbound */

static void enqueue(wsq_session_t *s, wsq_out_t *chunks)
{
    if (chunks == NULL)
        return;
    bool was_empty = s->oq_head == NULL;
    *s->oq_tail = chunks;
    for (wsq_out_t *c = chunks; c; c = c->next) {
        s->oq_bytes += c->len;
        s->oq_tail = &c->next;
    }
    if (was_empty && s->wsi)
        lws_callback_on_writable(s->wsi);
}

/* Queues one JSON control frame (ok, err, pong). Consecutive control frames share a chunk:
 * a burst of publish confirms costs one allocation per ~60 frames, not one each. */
static void send_json(wsq_session_t *s, const wsq_buf_t *b)
{
    size_t need = WSQ_WS_HDR_MAX + b->len;
    if (s->oq_head && need <= 1024) {
        wsq_out_t *t = (wsq_out_t *)((char *)s->oq_tail - offsetof(wsq_out_t, next));
        if (t->sub_id == 0 && t->cap - t->len >= need) {
            size_t hl = wsq_ws_frame_header(t->data + t->len, 1, b->len);
            memcpy(t->data + t->len + hl, b->data, b->len);
            t->len += hl + b->len;
            s->oq_bytes += hl + b->len;
            return;
        }
    }
    wsq_out_t *h = NULL, **tail = &h;
    if (wsq__out_frame(&tail, 1, b->data, b->len, 0, 0, 0) == WSQ_OK)
        enqueue(s, h);
}

static void send_err(wsq_session_t *s, const char *ref, wsq_err code, const char *msg)
{
    wsq_buf_t b;
    wsq_buf_init(&b);
    if (wsq_proto_enc_err(&b, ref, code, msg ? msg : wsq_strerror(code)) == WSQ_OK)
        send_json(s, &b);
    wsq_buf_fini(&b);
}

void wsq__session_close(wsq_session_t *s, uint16_t code, const char *reason)
{
    if (s->close_code)
        return;
    s->close_code = code;
    snprintf(s->close_reason, sizeof(s->close_reason), "%s", reason);
    if (s->wsi == NULL)
        return;
    if (s->rx_paused) {
        /* Read (and drop) what the client still sends while the close goes out: closing a
         * socket with unread input makes the kernel answer with RST, and the client would lose
         * the close frame (it would see 1006 instead of our code). */
        for (wsq_session_t **pp = &s->srv->paused; *pp; pp = &(*pp)->pnext)
            if (*pp == s) {
                *pp = s->pnext;
                break;
            }
        s->rx_paused = false;
        lws_rx_flow_control(s->wsi, 1 | LWS_RXFLOW_REASON_FLAG_PROCESS_NOW);
    }
    lws_callback_on_writable(s->wsi);
}

/* Closes without sending what is queued (the client broke the protocol). Input is read and
 * dropped until the close handshake completes. */
static int close_now(wsq_session_t *s, uint16_t code, const char *reason)
{
    wsq__out_free_list(&s->oq_head);
    s->oq_tail = &s->oq_head;
    s->oq_bytes = 0;
    wsq__session_close(s, code, reason);
    return 0;
}

/* Sends our close frame and waits for the client's: closing the socket while the client still
 * sends makes the kernel reset the connection, and the client would lose the close frame (it
 * would see 1006, not our code). lws's own close path closes at once with the libev loop. */
static int send_close(wsq_session_t *s)
{
    unsigned char *buf = s->srv->wbuf + LWS_PRE;
    size_t rl = strlen(s->close_reason);
    if (rl > 123)
        rl = 123;
    size_t n = wsq_ws_frame_header(buf, WSQ_WS_OP_CLOSE, 2 + rl);
    buf[n++] = (unsigned char)(s->close_code >> 8);
    buf[n++] = (unsigned char)s->close_code;
    memcpy(buf + n, s->close_reason, rl);
    n += rl;
    if (lws_write(s->wsi, buf, n, LWS_WRITE_RAW) < (int)n)
        return -1;
    s->close_sent = true;
    lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_ACK, 3);
    return 0;
}

static int on_writeable(wsq_session_t *s)
{
    if (s->close_sent)
        return 0; /* waiting for the client's close */
    if (!s->close_code && wsq__gate_ws_violation(s->wsi))
        return close_now(s, WSQ_CLOSE_PROTOCOL, "client frames must be masked (RFC 6455 5.1)");
    wsq_server_t *srv = s->srv;
    unsigned char *buf = srv->wbuf + LWS_PRE;
    size_t n = 0;
    /* credit to hand back to the consumer thread, per subscription */
    struct credit {
        uint64_t sub_id, last_seq, bytes;
        uint32_t count;
    } cr[8];
    unsigned ncr = 0;

    while (s->oq_head && n + s->oq_head->len <= WSQ_WRITE_MAX) {
        wsq_out_t *c = s->oq_head;
        unsigned i = 0;
        if (c->sub_id) {
            while (i < ncr && cr[i].sub_id != c->sub_id)
                i++;
            if (i == ncr) {
                if (ncr == 8)
                    break; /* report these first; the ninth goes in the next write */
                cr[ncr++] = (struct credit){c->sub_id, 0, 0, 0};
            }
            cr[i].bytes += c->len;
            cr[i].count += c->count;
            if (c->count)
                cr[i].last_seq = c->last_seq;
        }
        memcpy(buf + n, c->data, c->len);
        n += c->len;
        s->oq_bytes -= c->len;
        s->oq_head = c->next;
        if (s->oq_head == NULL)
            s->oq_tail = &s->oq_head;
        free(c);
    }
    if (n > 0 && lws_write(s->wsi, buf, n, LWS_WRITE_RAW) < (int)n)
        return -1;
    for (unsigned i = 0; i < ncr; i++) {
        ct_cmd_t *cmd = wsq__ct_cmd(CT_WRITTEN, s->id, cr[i].sub_id);
        if (cmd) {
            cmd->count = cr[i].count;
            cmd->bytes = cr[i].bytes;
            cmd->seq = cr[i].last_seq;
            wsq__ct_defer(srv, cmd);
        }
    }
    if (s->oq_head) {
        lws_callback_on_writable(s->wsi);
        return 0;
    }
    if (s->close_code && !s->close_sent)
        return send_close(s);
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* publishing and confirms */

static void pause_rx(wsq_session_t *s)
{
    if (s->rx_paused || s->wsi == NULL)
        return;
    s->rx_paused = true;
    s->pnext = s->srv->paused;
    s->srv->paused = s;
    atomic_fetch_add_explicit(&s->srv->metrics.paused, 1, memory_order_relaxed);
    lws_rx_flow_control(s->wsi, 0);
}

/* Applies backpressure after a publish: per session (unconfirmed publishes) and globally (bytes
 * waiting for the writer). */
static void backpressure(wsq_session_t *s)
{
    wsq_server_t *srv = s->srv;
    uint64_t qbytes;
    wsq_store_queue_depth(srv->store, NULL, &qbytes);
    if (qbytes >= srv->cfg->limits.writer_queue_high)
        srv->publishers_paused = true;
    if (srv->publishers_paused || s->pub_inflight >= srv->cfg->limits.max_inflight_publishes)
        pause_rx(s);
}

void wsq__sessions_resume_publishers(wsq_server_t *srv)
{
    if (srv->publishers_paused) {
        uint64_t qbytes;
        wsq_store_queue_depth(srv->store, NULL, &qbytes);
        if (qbytes > srv->cfg->limits.writer_queue_high / 2)
            return;
        srv->publishers_paused = false;
    }
    if (srv->shutting_down)
        return;
    uint32_t low = srv->cfg->limits.max_inflight_publishes / 2;
    for (wsq_session_t **pp = &srv->paused; *pp;) {
        wsq_session_t *s = *pp;
        if (s->pub_inflight <= low) {
            *pp = s->pnext;
            s->rx_paused = false;
            if (s->wsi)
                lws_rx_flow_control(s->wsi, 1 | LWS_RXFLOW_REASON_FLAG_PROCESS_NOW);
        } else {
            pp = &s->pnext;
        }
    }
}

void wsq__wt_done(wsq_wreq_t *req, void *arg)
{
    wsq_server_t *srv = arg;
    /* writer thread: collected here, handed over once per commit (server.c on_commit) */
    req->next = NULL;
    *srv->wt_tail = req;
    srv->wt_tail = &req->next;
}

wsq_err wsq__publish(wsq_server_t *srv, uint64_t sid, const char *topic, size_t topic_len,
                     const void *data, size_t len, bool binary, const char *ref)
{
    size_t reflen = ref ? strlen(ref) : 0;
    /* the ref rides after the payload, so the confirm needs no per-session bookkeeping */
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_APPEND, topic, topic_len, NULL, 0, len + reflen + 1);
    if (r == NULL)
        return WSQ_ERR_NOMEM;
    if (len)
        memcpy(r->data, data, len);
    memcpy(r->data + len, ref ? ref : "", reflen + 1);
    r->len = len;
    r->flags = binary ? WSQ_MSG_BINARY : 0;
    r->user[0] = sid;
    r->user[1] = reflen;
    r->done = wsq__wt_done;
    r->arg = srv;
    wsq_err err = wsq_store_submit(srv->store, r);
    if (err != WSQ_OK)
        wsq_wreq_free(&r);
    return err;
}

void wsq__session_confirm(wsq_server_t *srv, wsq_wreq_t *req)
{
    if (req->op == WSQ_WOP_APPEND) {
        if (req->err == WSQ_OK)
            atomic_fetch_add_explicit(&srv->metrics.published, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&srv->metrics.publish_errors, 1, memory_order_relaxed);
    }
    wsq_session_t *s = wsq__session_find(srv, req->user[0]);
    if (s == NULL) {
        wsq_wreq_free(&req);
        return;
    }
    if (s->pub_inflight)
        s->pub_inflight--;
    if (s->kind == WSQ_SESS_HTTP) {
        wsq__http_confirm(s, req);
    } else if (s->kind == WSQ_SESS_WSQ) {
        const char *ref = (const char *)req->data + req->len;
        if (req->err != WSQ_OK) {
            char msg[160];
            snprintf(msg, sizeof(msg), "publish to %s refused: %s", req->topic,
                     wsq_strerror(req->err));
            send_err(s, ref, req->err, msg);
        } else if (ref[0]) {
            wsq_buf_t b;
            wsq_buf_init(&b);
            if (wsq_proto_enc_ok(&b, ref, req->topic, req->topic_len, req->seq, true) == WSQ_OK)
                send_json(s, &b);
            wsq_buf_fini(&b);
        }
    } else if (req->err != WSQ_OK) {
        /* raw mode has no confirm channel: a refused publish ends the connection, loudly */
        char reason[64];
        snprintf(reason, sizeof(reason), "publish refused: %s", wsq_errname(req->err));
        wsq__session_close(s, WSQ_CLOSE_STORAGE, reason);
    }
    wsq_wreq_free(&req);
}

/* ------------------------------------------------------------------------------------------- */
/* subscriptions (service-thread view) */

static wsq_sub_t *sub_by_topic(wsq_session_t *s, const char *topic, size_t len)
{
    for (uint32_t i = 0; i < s->nsubs; i++)
        if (s->subs[i].topic_len == len && memcmp(s->subs[i].topic, topic, len) == 0)
            return &s->subs[i];
    return NULL;
}

static wsq_sub_t *sub_by_id(wsq_session_t *s, uint64_t id)
{
    for (uint32_t i = 0; i < s->nsubs; i++)
        if (s->subs[i].id == id)
            return &s->subs[i];
    return NULL;
}

static void sub_remove(wsq_session_t *s, wsq_sub_t *sub)
{
    uint32_t i = (uint32_t)(sub - s->subs);
    memmove(&s->subs[i], &s->subs[i + 1], (s->nsubs - i - 1) * sizeof(*s->subs));
    s->nsubs--;
}

static wsq_err sub_add(wsq_session_t *s, ct_sub_params_t *p)
{
    if (s->nsubs == s->cap_subs) {
        uint32_t nc = s->cap_subs ? s->cap_subs * 2 : 4;
        wsq_sub_t *n = realloc(s->subs, nc * sizeof(*n));
        if (n == NULL)
            return WSQ_ERR_NOMEM;
        s->subs = n;
        s->cap_subs = nc;
    }
    ct_cmd_t *cmd = wsq__ct_cmd(CT_SUB, s->id, ++s->srv->next_sub_id);
    if (cmd == NULL)
        return WSQ_ERR_NOMEM;
    /* "latest" means from the moment the client asked, not from when the consumer thread gets
     * to it: a publish sent right after the subscribe must be delivered. */
    wsq_topic_info_t ti;
    p->latest_seq = wsq_store_topic_lookup(s->srv->store, p->topic, p->topic_len, &ti) == WSQ_OK
                        ? ti.next_seq
                        : 1;
    wsq_sub_t *sub = &s->subs[s->nsubs++];
    memset(sub, 0, sizeof(*sub));
    memcpy(sub->topic, p->topic, p->topic_len + 1);
    sub->topic_len = p->topic_len;
    sub->id = cmd->sub_id;
    sub->durable = p->consumer_len > 0;
    cmd->sub = p;
    wsq__ct_defer(s->srv, cmd);
    return WSQ_OK;
}

void wsq__session_deliver(wsq_server_t *srv, st_item_t *it)
{
    wsq_session_t *s = wsq__session_find(srv, it->sid);
    if (s == NULL || s->kind == WSQ_SESS_HTTP) {
        wsq__out_free_list(&it->chunks);
        free(it);
        return;
    }
    wsq_sub_t *sub = it->sub_id ? sub_by_id(s, it->sub_id) : NULL;
    switch (it->kind) {
    case ST_DELIVER:
        if (it->sub_id && sub == NULL) {
            wsq__out_free_list(&it->chunks); /* unsubscribed meanwhile */
            break;
        }
        enqueue(s, it->chunks);
        it->chunks = NULL;
        break;
    case ST_SUB_ACTIVE:
        break;
    case ST_SUB_FAILED:
        if (sub)
            sub_remove(s, sub);
        enqueue(s, it->chunks);
        it->chunks = NULL;
        break;
    case ST_SUB_CLOSE:
        enqueue(s, it->chunks);
        it->chunks = NULL;
        wsq_info_log("close", "sid=%llu code=%u reason=\"%s\"", (unsigned long long)s->id,
                     it->close_code, it->reason);
        wsq__session_close(s, it->close_code, it->reason);
        break;
    }
    wsq__out_free_list(&it->chunks);
    free(it);
}

void wsq__sessions_close_all(wsq_server_t *srv, uint16_t code, const char *reason)
{
    for (uint32_t b = 0; b < srv->nbuckets; b++)
        for (wsq_session_t *s = srv->buckets[b]; s; s = s->hnext)
            if (s->kind != WSQ_SESS_HTTP)
                wsq__session_close(s, code, reason);
}

/* ------------------------------------------------------------------------------------------- */
/* wsq.v1 */

static void handle_wsq(wsq_session_t *s, const unsigned char *msg, size_t len)
{
    wsq_server_t *srv = s->srv;
    const wsq_config_t *cfg = srv->cfg;
    wsq_frame_t f;
    wsq_proto_error_t perr;
    wsq_frame_init(&f);
    if (wsq_proto_decode(msg, len, cfg->limits.max_message_size, &f, &perr) != WSQ_OK) {
        if (perr.code == WSQ_ERR_TOO_LARGE)
            atomic_fetch_add_explicit(&srv->metrics.limit_refusals[WSQ_LIM_MESSAGE_SIZE], 1,
                                      memory_order_relaxed);
        send_err(s, perr.ref, perr.code, perr.message);
        return;
    }
    char buf[400];
    switch (f.op) {
    case WSQ_OP_PUB: {
        if (!wsq__allowed(&s->ident, WSQ_RIGHT_PUBLISH, f.topic, f.topic_len)) {
            snprintf(buf, sizeof(buf), "%s may not publish to %s", s->ident.name, f.topic);
            send_err(s, f.ref, WSQ_ERR_FORBIDDEN, buf);
            break;
        }
        if (srv->shutting_down) {
            send_err(s, f.ref, WSQ_ERR_CLOSED, "server is shutting down");
            break;
        }
        if (!wsq__rate_ok(s)) {
            snprintf(buf, sizeof(buf), "more than limits.max_publish_rate (%u/s) publishes",
                     cfg->limits.max_publish_rate);
            send_err(s, f.ref, WSQ_ERR_RATE_LIMITED, buf);
            break;
        }
        wsq_err err =
            wsq__publish(srv, s->id, f.topic, f.topic_len, f.data, f.data_len, f.binary, f.ref);
        if (err != WSQ_OK) {
            send_err(s, f.ref, err, NULL);
            break;
        }
        s->pub_inflight++;
        backpressure(s);
        break;
    }
    case WSQ_OP_SUB: {
        if (!wsq__allowed(&s->ident, WSQ_RIGHT_SUBSCRIBE, f.topic, f.topic_len)) {
            snprintf(buf, sizeof(buf), "%s may not subscribe to %s", s->ident.name, f.topic);
            send_err(s, f.ref, WSQ_ERR_FORBIDDEN, buf);
            break;
        }
        if (sub_by_topic(s, f.topic, f.topic_len)) {
            send_err(s, f.ref, WSQ_ERR_ALREADY_SUBSCRIBED, NULL);
            break;
        }
        if (s->nsubs >= cfg->limits.max_subscriptions) {
            atomic_fetch_add_explicit(&srv->metrics.limit_refusals[WSQ_LIM_SUBSCRIPTIONS], 1,
                                      memory_order_relaxed);
            snprintf(buf, sizeof(buf), "at most %u subscriptions per connection",
                     cfg->limits.max_subscriptions);
            send_err(s, f.ref, WSQ_ERR_LIMIT, buf);
            break;
        }
        uint32_t window = f.window ? f.window : cfg->limits.default_window;
        if (window > cfg->limits.max_window) {
            atomic_fetch_add_explicit(&srv->metrics.limit_refusals[WSQ_LIM_WINDOW], 1,
                                      memory_order_relaxed);
            snprintf(buf, sizeof(buf), "window %u exceeds limits.max_window %u", window,
                     cfg->limits.max_window);
            send_err(s, f.ref, WSQ_ERR_LIMIT, buf);
            break;
        }
        ct_sub_params_t *p = calloc(1, sizeof(*p));
        if (p == NULL) {
            send_err(s, f.ref, WSQ_ERR_NOMEM, NULL);
            break;
        }
        memcpy(p->topic, f.topic, f.topic_len + 1);
        p->topic_len = f.topic_len;
        memcpy(p->consumer, f.consumer, f.consumer_len + 1);
        p->consumer_len = f.consumer_len;
        snprintf(p->ref, sizeof(p->ref), "%s", f.ref);
        p->from = f.from;
        p->from_seq = f.from_seq;
        p->from_time = f.from_time;
        p->window = window;
        p->has_epoch = f.has_epoch;
        p->epoch = f.epoch;
        if (sub_add(s, p) != WSQ_OK) {
            free(p);
            send_err(s, f.ref, WSQ_ERR_NOMEM, NULL);
        }
        break;
    }
    case WSQ_OP_UNSUB: {
        wsq_sub_t *sub = sub_by_topic(s, f.topic, f.topic_len);
        if (sub == NULL) {
            send_err(s, f.ref, WSQ_ERR_NOT_SUBSCRIBED, NULL);
            break;
        }
        wsq__ct_defer(srv, wsq__ct_cmd(CT_UNSUB, s->id, sub->id));
        sub_remove(s, sub);
        if (f.ref[0]) {
            wsq_buf_t b;
            wsq_buf_init(&b);
            wsq_proto_enc_ok(&b, f.ref, f.topic, f.topic_len, 0, false);
            send_json(s, &b);
            wsq_buf_fini(&b);
        }
        break;
    }
    case WSQ_OP_ACK:
    case WSQ_OP_NACK: {
        wsq_sub_t *sub = sub_by_topic(s, f.topic, f.topic_len);
        if (sub == NULL) {
            send_err(s, f.ref, WSQ_ERR_NOT_SUBSCRIBED, NULL);
            break;
        }
        if (f.op == WSQ_OP_NACK && !sub->durable) {
            send_err(s, f.ref, WSQ_ERR_BAD_REQUEST,
                     "nack needs a durable consumer; this subscription is ephemeral");
            break;
        }
        ct_kind_t k = f.op == WSQ_OP_NACK ? CT_NACK : f.has_upto ? CT_ACK_UPTO : CT_ACK;
        ct_cmd_t *cmd = wsq__ct_cmd(k, s->id, sub->id);
        if (cmd) {
            cmd->seq = f.has_upto ? f.upto : f.seq;
            cmd->delay_ms = f.delay_ms;
            wsq__ct_defer(srv, cmd);
        }
        break;
    }
    case WSQ_OP_PING: {
        wsq_buf_t b;
        wsq_buf_init(&b);
        wsq_proto_enc_pong(&b, f.ref);
        send_json(s, &b);
        wsq_buf_fini(&b);
        break;
    }
    case WSQ_OP_AUTH: {
        wsq_identity_t id;
        wsq_err err = wsq__auth_token(srv, f.token, strlen(f.token), &id);
        if (err != WSQ_OK) {
            send_err(s, f.ref, err, "invalid token");
            wsq_info_log("auth_failed", "sid=%llu peer=%s reason=op_auth",
                         (unsigned long long)s->id, s->peer);
            break;
        }
        wsq__identity_move(&s->ident, &id);
        wsq_buf_t b;
        wsq_buf_init(&b);
        wsq_proto_enc_ok(&b, f.ref, NULL, 0, 0, false);
        send_json(s, &b);
        wsq_buf_fini(&b);
        break;
    }
    }
    wsq_frame_clear(&f);
}

/* ------------------------------------------------------------------------------------------- */
/* raw mode */

static int handle_raw(wsq_session_t *s, const unsigned char *msg, size_t len, bool binary)
{
    wsq_server_t *srv = s->srv;
    if (!wsq__allowed(&s->ident, WSQ_RIGHT_PUBLISH, s->target.topic, s->target.topic_len))
        return close_now(s, WSQ_CLOSE_FORBIDDEN, "not allowed to publish to this topic");
    if (srv->shutting_down)
        return 0; /* paused anyway; the client sees 1001 shortly */
    if (!wsq__rate_ok(s))
        return close_now(s, WSQ_CLOSE_LIMIT, "publish rate limit exceeded");
    wsq_err err =
        wsq__publish(srv, s->id, s->target.topic, s->target.topic_len, msg, len, binary, NULL);
    if (err != WSQ_OK)
        return close_now(s, WSQ_CLOSE_STORAGE, wsq_errname(err));
    s->pub_inflight++;
    backpressure(s);
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* rights after a reload, publish rate */

bool wsq__rate_ok(wsq_session_t *s)
{
    uint32_t rate = s->srv->cfg->limits.max_publish_rate;
    if (rate == 0)
        return true;
    int64_t now = wsq_mono_ns();
    if (s->rate_last_ns == 0) {
        s->rate_tokens = rate; /* a full second's burst to start */
    } else {
        s->rate_tokens += (double)(now - s->rate_last_ns) * rate / 1e9;
        if (s->rate_tokens > rate)
            s->rate_tokens = rate;
    }
    s->rate_last_ns = now;
    if (s->rate_tokens >= 1.0) {
        s->rate_tokens -= 1.0;
        return true;
    }
    atomic_fetch_add_explicit(&s->srv->metrics.limit_refusals[WSQ_LIM_PUBLISH_RATE], 1,
                              memory_order_relaxed);
    return false;
}

/* Closes s when its identity lost its credentials or a right that its connection uses. */
static void reauthorize(wsq_session_t *s)
{
    if (!wsq__identity_refresh(s->srv, &s->ident)) {
        wsq_info_log("revoked", "sid=%llu identity=%s reason=credentials",
                     (unsigned long long)s->id, s->ident.name);
        wsq__session_close(s, WSQ_CLOSE_UNAUTHORIZED, "credentials revoked");
        return;
    }
    for (uint32_t i = 0; i < s->nsubs; i++) {
        if (!wsq__allowed(&s->ident, WSQ_RIGHT_SUBSCRIBE, s->subs[i].topic, s->subs[i].topic_len)) {
            wsq_info_log("revoked", "sid=%llu identity=%s reason=subscribe topic=%s",
                         (unsigned long long)s->id, s->ident.name, s->subs[i].topic);
            wsq__session_close(s, WSQ_CLOSE_FORBIDDEN, "rights revoked");
            return;
        }
    }
    if (s->kind == WSQ_SESS_RAW && s->nsubs == 0 &&
        !wsq__allowed(&s->ident, WSQ_RIGHT_PUBLISH, s->target.topic, s->target.topic_len))
        wsq__session_close(s, WSQ_CLOSE_FORBIDDEN, "rights revoked");
}

void wsq__sessions_reauthorize(wsq_server_t *srv)
{
    for (uint32_t b = 0; b < srv->nbuckets; b++)
        for (wsq_session_t *s = srv->buckets[b]; s; s = s->hnext)
            if (s->kind != WSQ_SESS_HTTP && !s->close_code)
                reauthorize(s);
}

void wsq__sessions_ping(wsq_server_t *srv, int64_t now_ns, int64_t tick_ns)
{
    const wsq_config_t *cfg = srv->cfg;
    int64_t ping_ns = cfg->limits.ping_interval_ms * 1000000;
    int64_t grace_ns = (cfg->limits.idle_timeout_ms - cfg->limits.ping_interval_ms) * 1000000;
    if (srv->nbuckets == 0 || ping_ns <= 0)
        return;
    int64_t ticks = ping_ns / 4 / (tick_ns > 0 ? tick_ns : 1);
    uint32_t per_tick = (uint32_t)(srv->nbuckets / (ticks > 0 ? (uint64_t)ticks : 1)) + 1;
    for (uint32_t i = 0; i < per_tick && i < srv->nbuckets; i++) {
        uint32_t b = srv->ping_cursor++ & (srv->nbuckets - 1);
        for (wsq_session_t *s = srv->buckets[b]; s; s = s->hnext) {
            if (s->kind == WSQ_SESS_HTTP || s->wsi == NULL || s->close_sent)
                continue;
            if (s->ping_sent_ns) {
                if (now_ns - s->ping_sent_ns >= grace_ns) {
                    /* silent through ping and grace: the peer is gone; no close frame */
                    wsq_info_log("idle_timeout", "sid=%llu peer=%s idle_ms=%lld",
                                 (unsigned long long)s->id, s->peer,
                                 (long long)((now_ns - s->last_rx_ns) / 1000000));
                    s->close_code = WSQ_CLOSE_GOING_AWAY;
                    snprintf(s->close_reason, sizeof(s->close_reason), "idle timeout");
                    s->close_sent = true;
                    lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
                }
            } else if (now_ns - s->last_rx_ns >= ping_ns && !s->close_code) {
                /* a non-empty payload: lws reports only non-empty pongs */
                wsq_out_t *h = NULL, **t = &h;
                if (wsq__out_frame(&t, 9, "wsq", 3, 0, 0, 0) == WSQ_OK) {
                    enqueue(s, h);
                    s->ping_sent_ns = now_ns;
                }
            }
        }
    }
}

void wsq__sessions_expire_tokens(wsq_server_t *srv, int64_t now_ms)
{
    for (uint32_t b = 0; b < srv->nbuckets; b++)
        for (wsq_session_t *s = srv->buckets[b]; s; s = s->hnext)
            if (s->kind != WSQ_SESS_HTTP && !s->close_code && s->ident.expires_ms &&
                s->ident.expires_ms <= now_ms) {
                atomic_fetch_add_explicit(&srv->metrics.auth_failures[WSQ_AUTHF_EXPIRED], 1,
                                          memory_order_relaxed);
                wsq__session_close(s, WSQ_CLOSE_UNAUTHORIZED, "token expired");
            }
}

/* ------------------------------------------------------------------------------------------- */
/* lws callback for both WebSocket protocols */

static int on_established(struct lws *wsi, wsq_session_t **pss, wsq_server_t *srv)
{
    bool raw = strcmp(lws_get_protocol(wsi)->name, WSQ_SUBPROTOCOL) != 0;
    wsq_session_t *s = wsq__session_new(srv, wsi, raw ? WSQ_SESS_RAW : WSQ_SESS_WSQ);
    if (s == NULL)
        return -1;
    *pss = s;
    s->last_rx_ns = wsq_mono_ns();
    atomic_fetch_add_explicit(&srv->metrics.connections, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&srv->metrics.connections_total, 1, memory_order_relaxed);
    /* headers are gone after this callback: take what we need now */
    char err[160] = "";
    if (wsq__upgrade_identity(srv, wsi, &s->ident, err, sizeof(err)) != WSQ_OK)
        return close_now(s, WSQ_CLOSE_UNAUTHORIZED, err);
    if (raw) {
        wsq_err e = wsq__raw_target(wsi, &s->target, err, sizeof(err));
        if (e != WSQ_OK)
            return close_now(s, WSQ_CLOSE_BAD_REQUEST, err);
    }
    wsq_info_log("connect", "sid=%llu peer=%s proto=%s identity=%s%s%s", (unsigned long long)s->id,
                 s->peer, raw ? "raw" : "wsq.v1", s->ident.name, raw ? " topic=" : "",
                 raw ? s->target.topic : "");
    if (raw && wsq__allowed(&s->ident, WSQ_RIGHT_SUBSCRIBE, s->target.topic, s->target.topic_len)) {
        ct_sub_params_t *p = calloc(1, sizeof(*p));
        if (p == NULL)
            return -1;
        memcpy(p->topic, s->target.topic, s->target.topic_len + 1);
        p->topic_len = s->target.topic_len;
        memcpy(p->consumer, s->target.consumer, s->target.consumer_len + 1);
        p->consumer_len = s->target.consumer_len;
        p->from = s->target.from;
        p->from_seq = s->target.from_seq;
        p->from_time = s->target.from_time;
        p->window = srv->cfg->limits.default_window;
        p->raw = true;
        if (sub_add(s, p) != WSQ_OK) {
            free(p);
            return -1;
        }
    }
    return 0;
}

static int on_receive(wsq_session_t *s, struct lws *wsi, const void *in, size_t len)
{
    const wsq_config_t *cfg = s->srv->cfg;
    s->last_rx_ns = wsq_mono_ns(); /* any frame proves the peer alive */
    s->ping_sent_ns = 0;
    if (lws_is_first_fragment(wsi)) {
        s->rx.len = 0;
        s->rx_binary = lws_frame_is_binary(wsi);
        s->utf8 = 0;
    }
    /* Raw mode: the frame is the payload, capped exactly. wsq.v1: the JSON around a payload
     * (base64 is 4/3, escapes more) gets room; the decoded payload is capped exactly later. */
    uint64_t cap = s->kind == WSQ_SESS_RAW ? cfg->limits.max_message_size
                                           : 2 * cfg->limits.max_message_size + 65536;
    if (s->rx.len + len > cap) {
        atomic_fetch_add_explicit(&s->srv->metrics.limit_refusals[WSQ_LIM_MESSAGE_SIZE], 1,
                                  memory_order_relaxed);
        char reason[64];
        snprintf(reason, sizeof(reason), "message exceeds %llu bytes", (unsigned long long)cap);
        return close_now(s, WSQ_CLOSE_TOO_BIG, reason);
    }
    if (!s->rx_binary && !wsq_utf8_feed(&s->utf8, in, len))
        return close_now(s, WSQ_CLOSE_BAD_DATA, "text frame is not valid UTF-8");
    if (len && wsq_buf_append(&s->rx, in, len) != WSQ_OK)
        return close_now(s, WSQ_CLOSE_INTERNAL, "out of memory");
    if (!lws_is_final_fragment(wsi))
        return 0;
    if (!s->rx_binary && s->utf8 != 0)
        return close_now(s, WSQ_CLOSE_BAD_DATA, "text frame ends inside a UTF-8 sequence");
    int rc = 0;
    if (s->kind == WSQ_SESS_RAW) {
        rc = handle_raw(s, s->rx.data, s->rx.len, s->rx_binary);
    } else if (s->rx_binary) {
        send_err(s, "", WSQ_ERR_BAD_REQUEST,
                 "wsq.v1 frames are JSON text; send binary payloads base64-encoded");
    } else {
        handle_wsq(s, s->rx.data, s->rx.len);
    }
    /* keep small buffers, give big ones back */
    if (s->rx.cap > 65536) {
        wsq_buf_fini(&s->rx);
        wsq_buf_init(&s->rx);
    }
    s->rx.len = 0;
    return rc;
}

int wsq__ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    wsq_server_t *srv = lws_context_user(lws_get_context(wsi));
    wsq_session_t **pss = user;
    wsq_session_t *s = pss ? *pss : NULL;

    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return wsq__confirm_upgrade(srv, wsi);
    case LWS_CALLBACK_ESTABLISHED:
        return on_established(wsi, pss, srv);
    case LWS_CALLBACK_RECEIVE:
        if (s == NULL)
            return -1;
        if (s->close_code)
            return 0; /* closing: drop input */
        return on_receive(s, wsi, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (s == NULL)
            return 0;
        return on_writeable(s);
    case LWS_CALLBACK_RECEIVE_PONG:
        if (s) {
            s->last_rx_ns = wsq_mono_ns();
            s->ping_sent_ns = 0;
        }
        return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (s && len >= 2) {
            const unsigned char *p = in;
            s->peer_close = (uint16_t)(p[0] << 8 | p[1]);
        }
        /* the client's answer to our close: the handshake is complete, close without echoing */
        return s && s->close_sent ? -1 : 0;
    case LWS_CALLBACK_CLOSED:
        if (s) {
            atomic_fetch_sub_explicit(&srv->metrics.connections, 1, memory_order_relaxed);
            wsq_info_log("disconnect", "sid=%llu peer=%s identity=%s code=%u reason=\"%s\"",
                         (unsigned long long)s->id, s->peer, s->ident.name,
                         s->close_code ? s->close_code : s->peer_close,
                         s->close_code ? s->close_reason : "peer closed");
            wsq__ct_defer(srv, wsq__ct_cmd(CT_SESSION_GONE, s->id, 0));
            s->wsi = NULL;
            wsq__session_free(s);
            *pss = NULL;
        }
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        return 0; /* handled once, by the http protocol */
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        /* lws 4.1 issues this to the vhost's default protocol (raw mode), not protocols[0] */
        return wsq__conn_opened(srv, wsi) ? 0 : -1;
    case LWS_CALLBACK_WSI_DESTROY:
        wsq__conn_closed(srv, wsi); /* no-op unless this wsi was counted */
        return 0;
    default:
        return 0;
    }
}
