/*
 * The session core (service thread only, except wsq__wt_done and wsq__wt_commit, which run on
 * the writer thread): the session table, each session's state, identity, subscriptions (the
 * service thread's view), outbound queue and publishes in flight; the confirms and deliveries
 * that come back through the mailbox, handed to each session's front-end. It knows no wire
 * format: see core.h for the front-ends and the map of the daemon.
 */
#include <assert.h>
#include <libwebsockets.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "log.h"
#include "server.h"
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

wsq_session_t *wsq__session_new(wsq_server_t *srv, struct lws *wsi, const wsq_fe_t *fe)
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
    s->fe = fe;
    s->state = WSQ_SS_OPEN;
    s->oq_tail = &s->oq_head;
    wsq_buf_init(&s->ws.rx);
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
    if (s->fe->free)
        s->fe->free(s);
    wsq__out_free_list(&s->oq_head);
    wsq_buf_fini(&s->ws.rx);
    wsq__identity_fini(&s->ident);
    free(s->subs);
    free(s);
}

void wsq__session_state(wsq_session_t *s, wsq_sess_state_t to)
{
    /* forward only: OPEN -> CLOSING -> CLOSE_SENT -> GONE, steps may be skipped */
    assert(to > s->state);
    s->state = to;
}

void wsq__sessions_each(wsq_server_t *srv, void (*fn)(wsq_session_t *s, void *arg), void *arg)
{
    for (uint32_t b = 0; b < srv->nbuckets; b++)
        for (wsq_session_t *s = srv->buckets[b]; s; s = s->hnext)
            fn(s, arg);
}

/* ------------------------------------------------------------------------------------------- */
/* outbound and closing */

void wsq__session_send(wsq_session_t *s, wsq_out_t *chunks)
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

void wsq__session_send_frame(wsq_session_t *s, unsigned opcode, const void *data, size_t len)
{
    size_t need = WSQ_WS_HDR_MAX + len;
    if (s->oq_head && need <= 1024) {
        wsq_out_t *t = (wsq_out_t *)((char *)s->oq_tail - offsetof(wsq_out_t, next));
        if (t->sub_id == 0 && t->cap - t->len >= need) {
            size_t hl = wsq_ws_frame_header(t->data + t->len, opcode, len);
            if (len)
                memcpy(t->data + t->len + hl, data, len);
            t->len += hl + len;
            s->oq_bytes += hl + len;
            return;
        }
    }
    wsq_out_t *h = NULL, **tail = &h;
    if (wsq__out_frame(&tail, opcode, data, len, 0, 0, 0) == WSQ_OK)
        wsq__session_send(s, h);
}

void wsq__session_close(wsq_session_t *s, uint16_t code, const char *reason)
{
    if (s->state != WSQ_SS_OPEN)
        return;
    wsq__session_state(s, WSQ_SS_CLOSING);
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

int wsq__session_close_now(wsq_session_t *s, uint16_t code, const char *reason)
{
    wsq__out_free_list(&s->oq_head);
    s->oq_tail = &s->oq_head;
    s->oq_bytes = 0;
    wsq__session_close(s, code, reason);
    return 0;
}

void wsq__sessions_close_all(wsq_server_t *srv, uint16_t code, const char *reason)
{
    for (uint32_t b = 0; b < srv->nbuckets; b++)
        for (wsq_session_t *s = srv->buckets[b]; s; s = s->hnext)
            if (s->fe->websocket)
                wsq__session_close(s, code, reason);
            else if (s->fe->answer) /* a request the delivery thread holds (a long poll) */
                s->fe->answer(s, WSQ_ERR_CLOSED, NULL, 0);
}

/* ------------------------------------------------------------------------------------------- */
/* publishing: backpressure, the confirm leg */

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

void wsq__sessions_pause_all(wsq_server_t *srv)
{
    for (uint32_t b = 0; b < srv->nbuckets; b++)
        for (wsq_session_t *s = srv->buckets[b]; s; s = s->hnext)
            if (s->wsi && s->fe->websocket && !s->rx_paused) {
                s->rx_paused = true;
                lws_rx_flow_control(s->wsi, 0);
            }
}

void wsq__wt_done(wsq_wreq_t *req, void *arg)
{
    wsq_server_t *srv = arg;
    /* writer thread: collected here, handed over once per commit (wsq__wt_commit) */
    req->next = NULL;
    *srv->wt_tail = req;
    srv->wt_tail = &req->next;
}

void wsq__wt_commit(wsq_server_t *srv)
{
    if (srv->wt_head == NULL)
        return;
    st_item_t *it = wsq__st_item(ST_CONFIRMS, 0, 0);
    if (it == NULL) {
        /* no memory for the envelope: the requests are answered by nobody, as if their
         * sessions had gone; every one of them is committed or refused in the store */
        for (wsq_wreq_t *r = srv->wt_head, *nx; r; r = nx) {
            nx = r->next;
            wsq_wreq_free(&r);
        }
    } else {
        it->reqs = srv->wt_head;
        wsq__st_push(srv, it);
    }
    srv->wt_head = NULL;
    srv->wt_tail = &srv->wt_head;
}

void wsq__session_route(wsq_session_t *s, wsq_wreq_t *r)
{
    r->user[0] = s->id;
    r->done = wsq__wt_done;
    r->arg = s->srv;
}

wsq_err wsq__session_submit(wsq_session_t *s, wsq_wreq_t *r)
{
    wsq__session_route(s, r);
    return wsq_store_submit(s->srv->store, r);
}

bool wsq__headers_within(const wsq_config_t *cfg, uint32_t n, size_t bytes, char *why, size_t cap)
{
    if (n > cfg->limits.max_message_headers) {
        snprintf(why, cap, "%u headers: a message may carry %u (limits.max_message_headers)", n,
                 cfg->limits.max_message_headers);
        return false;
    }
    if (bytes > cfg->limits.max_message_headers_size) {
        snprintf(why, cap,
                 "headers of %zu bytes: keys and values may hold %u "
                 "(limits.max_message_headers_size)",
                 bytes, cfg->limits.max_message_headers_size);
        return false;
    }
    return true;
}

wsq_err wsq__publish(wsq_session_t *s, const char *topic, size_t topic_len, const void *data,
                     size_t len, bool binary, const void *headers, size_t headers_len,
                     const char *id, size_t id_len, const char *ref)
{
    size_t reflen = ref ? strlen(ref) : 0;
    /* the ref rides after the body, so the confirm needs no per-session bookkeeping */
    wsq_wreq_t *r = wsq_wreq_append(topic, topic_len, data, len, binary ? WSQ_MSG_BINARY : 0,
                                    headers, headers_len, id, id_len, reflen + 1);
    if (r == NULL)
        return WSQ_ERR_NOMEM;
    memcpy(r->data + r->len, ref ? ref : "", reflen + 1);
    r->user[1] = reflen;
    wsq_err err = wsq__session_submit(s, r);
    if (err != WSQ_OK) {
        wsq_wreq_free(&r);
        return err;
    }
    s->pub_inflight++;
    if (s->fe->websocket) /* an HTTP request is one publish, answered before the next */
        backpressure(s);
    return WSQ_OK;
}

/* A completed writer request goes to the front-end of the session that submitted it. */
static void confirm(wsq_server_t *srv, wsq_wreq_t *req)
{
    if (req->op == WSQ_WOP_APPEND) {
        if (req->err == WSQ_OK)
            atomic_fetch_add_explicit(&srv->metrics.published, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&srv->metrics.publish_errors, 1, memory_order_relaxed);
    }
    wsq_session_t *s = wsq__session_find(srv, req->user[0]);
    if (s) {
        if (s->pub_inflight && req->op == WSQ_WOP_APPEND)
            s->pub_inflight--;
        s->fe->confirm(s, req);
    }
    wsq_wreq_free(&req);
}

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

/* ------------------------------------------------------------------------------------------- */
/* subscriptions (service-thread view) */

wsq_sub_t *wsq__sub_by_topic(wsq_session_t *s, const char *topic, size_t len)
{
    for (uint32_t i = 0; i < s->nsubs; i++)
        if (s->subs[i].topic_len == len && memcmp(s->subs[i].topic, topic, len) == 0)
            return &s->subs[i];
    return NULL;
}

wsq_sub_t *wsq__sub_for_message(wsq_session_t *s, const char *topic, size_t len)
{
    wsq_sub_t *sub = wsq__sub_by_topic(s, topic, len);
    for (uint32_t i = 0; sub == NULL && i < s->nsubs; i++)
        if (s->subs[i].pattern && wsq_topic_match(s->subs[i].topic, topic, len))
            sub = &s->subs[i];
    return sub;
}

wsq_err wsq__rights_copy(const wsq_identity_t *id, char **out, size_t *len)
{
    const wsq_strlist_t *l = id->rights ? &id->rights->subscribe : NULL;
    size_t n = 0;
    for (size_t i = 0; l && i < l->n; i++)
        n += strlen(l->items[i]) + 1;
    *out = malloc(n ? n : 1);
    if (*out == NULL)
        return WSQ_ERR_NOMEM;
    *len = 0;
    for (size_t i = 0; l && i < l->n; i++) {
        size_t k = strlen(l->items[i]) + 1;
        memcpy(*out + *len, l->items[i], k);
        *len += k;
    }
    return WSQ_OK;
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

void wsq__sub_end(wsq_session_t *s, wsq_sub_t *sub)
{
    wsq__sub_end_reply(s, sub, NULL);
}

void wsq__sub_end_reply(wsq_session_t *s, wsq_sub_t *sub, wsq_buf_t *reply)
{
    ct_cmd_t *cmd = wsq__ct_cmd(CT_UNSUB, s->id, sub->id);
    if (cmd && reply && reply->len) { /* the command takes the frame */
        cmd->reply = (char *)reply->data;
        cmd->reply_len = reply->len;
        wsq_buf_init(reply);
    }
    wsq__ct_defer(s->srv, cmd);
    sub_remove(s, sub);
}

ct_sub_params_t *wsq__sub_params(wsq_server_t *srv, const char *topic, size_t topic_len,
                                 const char *consumer, size_t consumer_len, bool shared,
                                 wsq_from_t from, uint64_t from_seq, int64_t from_time,
                                 uint32_t window)
{
    ct_sub_params_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    memcpy(p->topic, topic, topic_len);
    p->topic_len = topic_len;
    memcpy(p->consumer, consumer, consumer_len);
    p->consumer_len = consumer_len;
    p->shared = shared;
    p->from = from;
    p->from_seq = from_seq;
    p->from_time = from_time;
    p->window = window;
    /* "latest" means from the moment the client asked, not from when the delivery thread gets
     * to it: a publish sent right after the subscribe must be delivered. */
    wsq_topic_info_t ti;
    p->latest_seq =
        wsq_store_topic_lookup(srv->store, topic, topic_len, &ti) == WSQ_OK ? ti.next_seq : 1;
    return p;
}

wsq_err wsq__sub_add(wsq_session_t *s, ct_sub_params_t *p)
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
    wsq_sub_t *sub = &s->subs[s->nsubs++];
    memset(sub, 0, sizeof(*sub));
    memcpy(sub->topic, p->topic, p->topic_len + 1);
    sub->topic_len = p->topic_len;
    sub->id = cmd->sub_id;
    sub->durable = p->consumer_len > 0;
    sub->shared = p->shared;
    sub->pattern = p->pattern;
    cmd->sub = p;
    wsq__ct_defer(s->srv, cmd);
    return WSQ_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* the mailbox's items */

st_item_t *wsq__st_item(st_kind_t kind, uint64_t sid, uint64_t sub_id)
{
    st_item_t *it = calloc(1, sizeof(*it));
    if (it) {
        it->kind = kind;
        it->sid = sid;
        it->sub_id = sub_id;
    }
    return it;
}

void wsq__st_item_free(st_item_t *it)
{
    free(it->body);
    wsq__out_free_list(&it->chunks);
    for (wsq_wreq_t *r = it->reqs, *nx; r; r = nx) {
        nx = r->next;
        wsq_wreq_free(&r);
    }
    free(it);
}

/* Chunks and subscription news from the delivery thread. */
static void deliver(wsq_server_t *srv, st_item_t *it)
{
    wsq_session_t *s = wsq__session_find(srv, it->sid);
    if (s != NULL && it->kind == ST_ANSWER && s->fe->answer != NULL) {
        s->fe->answer(s, it->err, it->body, it->body_len);
        it->body = NULL;
        return;
    }
    if (s == NULL || !s->fe->websocket)
        return;
    wsq_sub_t *sub = it->sub_id ? sub_by_id(s, it->sub_id) : NULL;
    switch (it->kind) {
    case ST_DELIVER:
        if (it->sub_id && sub == NULL)
            return; /* unsubscribed meanwhile: the chunks are freed with the item */
        wsq__session_send(s, it->chunks);
        it->chunks = NULL;
        break;
    case ST_SUB_ACTIVE:
        break;
    case ST_SUB_FAILED:
        if (sub)
            sub_remove(s, sub); /* the delivery thread dropped it already */
        wsq__session_send(s, it->chunks);
        it->chunks = NULL;
        break;
    case ST_SUB_CLOSE:
        wsq__session_send(s, it->chunks);
        it->chunks = NULL;
        wsq_info_log("close", "sid=%llu code=%u reason=\"%s\"", (unsigned long long)s->id,
                     it->close_code, it->reason);
        wsq__session_close(s, it->close_code, it->reason);
        break;
    case ST_CONFIRMS:
    case ST_ANSWER:
        break;
    }
}

void wsq__core_item(wsq_server_t *srv, st_item_t *it)
{
    if (it->kind == ST_CONFIRMS) {
        for (wsq_wreq_t *r = it->reqs, *nx; r; r = nx) {
            nx = r->next;
            r->next = NULL;
            confirm(srv, r);
        }
        it->reqs = NULL;
    } else {
        deliver(srv, it);
    }
    wsq__st_item_free(it);
}

/* ------------------------------------------------------------------------------------------- */
/* rights after a reload, token expiry */

/* Closes s when its identity lost its credentials or a right that its connection uses. */
static void reauthorize(wsq_session_t *s)
{
    if (!wsq__identity_refresh(s->srv, &s->ident)) {
        char q[WSQ_LOG_Q_MAX];
        wsq_info_log("revoked", "sid=%llu identity=%s reason=credentials",
                     (unsigned long long)s->id, wsq__log_q(q, sizeof(q), s->ident.name));
        wsq__session_close(s, WSQ_CLOSE_UNAUTHORIZED, "credentials revoked");
        return;
    }
    for (uint32_t i = 0; i < s->nsubs; i++) {
        if (s->subs[i].pattern) {
            /* a pattern reads the topics the identity may read: the delivery thread takes the
             * new rights and leaves out what they no longer allow */
            ct_cmd_t *cmd = wsq__ct_cmd(CT_REAUTH, s->id, s->subs[i].id);
            ct_sub_params_t *p = cmd ? calloc(1, sizeof(*p)) : NULL;
            if (p && wsq__rights_copy(&s->ident, &p->rights, &p->rights_len) == WSQ_OK) {
                cmd->sub = p;
                wsq__ct_defer(s->srv, cmd);
            } else {
                free(p);
                if (cmd)
                    wsq__ct_cmd_free(cmd);
            }
            continue;
        }
        if (!wsq__allowed(&s->ident, WSQ_RIGHT_SUBSCRIBE, s->subs[i].topic, s->subs[i].topic_len)) {
            char q[WSQ_LOG_Q_MAX];
            wsq_info_log("revoked", "sid=%llu identity=%s reason=subscribe topic=%s",
                         (unsigned long long)s->id, wsq__log_q(q, sizeof(q), s->ident.name),
                         s->subs[i].topic);
            wsq__session_close(s, WSQ_CLOSE_FORBIDDEN, "rights revoked");
            return;
        }
    }
    if (s->fe->reauthorize)
        s->fe->reauthorize(s);
}

void wsq__sessions_reauthorize(wsq_server_t *srv)
{
    for (uint32_t b = 0; b < srv->nbuckets; b++)
        for (wsq_session_t *s = srv->buckets[b]; s; s = s->hnext)
            if (s->fe->websocket && s->state == WSQ_SS_OPEN)
                reauthorize(s);
}

void wsq__sessions_expire_tokens(wsq_server_t *srv, int64_t now_ms)
{
    for (uint32_t b = 0; b < srv->nbuckets; b++)
        for (wsq_session_t *s = srv->buckets[b]; s; s = s->hnext)
            if (s->fe->websocket && s->state == WSQ_SS_OPEN && s->ident.expires_ms &&
                s->ident.expires_ms <= now_ms) {
                atomic_fetch_add_explicit(&srv->metrics.auth_failures[WSQ_AUTHF_EXPIRED], 1,
                                          memory_order_relaxed);
                wsq__session_close(s, WSQ_CLOSE_UNAUTHORIZED, "token expired");
            }
}
