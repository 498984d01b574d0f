/*
 * The WebSocket transport (service thread only), under the raw and wsq.v1 front-ends.
 *
 * Upgrade: HTTP_CONFIRM_UPGRADE refuses a bad upgrade with a real HTTP status and a JSON body
 * (fe_http.c writes it), not a dropped socket.
 *
 * Inbound: frames are reassembled up to the front-end's limit (close 1009), text is validated
 * as UTF-8 while it streams in (close 1007), and each complete message goes to fe->message.
 *
 * Outbound: everything a session sends is a FIFO of pre-framed chunks (deliveries from the
 * delivery thread, and the session's own frames). WRITEABLE copies whole chunks into one buffer
 * and writes them with one lws_write: many messages per socket write. The credit that frees goes
 * back to the delivery thread per subscription.
 *
 * Closing: wsq__session_close() moves the session to CLOSING and asks for WRITEABLE, which sends
 * the close frame after whatever is queued (mosquitto's pattern) and waits for the client's; the
 * session is freed in LWS_CALLBACK_CLOSED.
 */
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "gate.h"
#include "http.h"
#include "log.h"
#include "req.h"
#include "server.h"
#include "ws.h"
#include "wsq/clock.h"

/* ------------------------------------------------------------------------------------------- */
/* the upgrade check */

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

/* A raw-mode upgrade: its target must parse, and its identity may publish or subscribe. */
static int confirm_raw(struct lws *wsi, const wsq_identity_t *id)
{
    char err[640] = "";
    wsq_raw_target_t t;
    memset(&t, 0, sizeof(t));
    wsq_err e = wsq__raw_target(wsi, &t, err, sizeof(err));
    if (e != WSQ_OK) {
        if (e == WSQ_ERR_NOTFOUND)
            snprintf(err, sizeof(err),
                     "raw mode connects to /topics/<topic>; wsq.v1 clients must ask for the "
                     "wsq.v1 subprotocol");
        wsq__http_refuse(wsi, e == WSQ_ERR_NOTFOUND ? 404 : 400, e, err);
        wsq_raw_target_clear(&t);
        return -1;
    }
    int rc = 0;
    if (!wsq__allowed(id, WSQ_RIGHT_PUBLISH, t.topic, t.topic_len) &&
        !wsq__allowed(id, WSQ_RIGHT_SUBSCRIBE, t.topic, t.topic_len)) {
        snprintf(err, sizeof(err), "%s may neither publish nor subscribe to %s", id->name, t.topic);
        wsq__http_refuse(wsi, 403, WSQ_ERR_FORBIDDEN, err);
        rc = -1;
    }
    wsq_raw_target_clear(&t);
    return rc;
}

static int confirm_upgrade(wsq_server_t *srv, struct lws *wsi)
{
    char err[400] = "";
    if (srv->shutting_down) {
        wsq__http_refuse(wsi, 503, WSQ_ERR_CLOSED, "server is shutting down");
        return -1;
    }
    wsq_limit_t lim;
    if (wsq__conn_over_limit(srv, wsi, &lim)) {
        wsq__http_refuse(wsi, 503, WSQ_ERR_LIMIT, wsq__conn_limit_msg(lim));
        return -1;
    }
    wsq_browser_t b;
    unsigned st;
    wsq_err e = wsq__browser_check(srv, wsi, &b, &st, err, sizeof(err));
    if (e != WSQ_OK) {
        wsq__http_refuse(wsi, st, e, err);
        return -1;
    }
    bool wsq_v1;
    if (requests_wsq(wsi, &wsq_v1) != WSQ_OK) {
        wsq__http_refuse(wsi, 400, WSQ_ERR_BAD_REQUEST, "Sec-WebSocket-Protocol too long");
        return -1;
    }
    wsq_identity_t id;
    e = wsq__upgrade_identity(srv, wsi, &id, err, sizeof(err));
    if (e != WSQ_OK) {
        wsq__http_refuse(wsi, 401, e, err);
        return -1;
    }
    int rc = wsq_v1 ? 0 : confirm_raw(wsi, &id);
    wsq__identity_fini(&id);
    return rc;
}

/* ------------------------------------------------------------------------------------------- */
/* outbound */

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
    wsq__session_state(s, WSQ_SS_CLOSE_SENT);
    lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_ACK, 3);
    return 0;
}

static int on_writeable(wsq_session_t *s)
{
    if (s->state == WSQ_SS_CLOSE_SENT)
        return 0; /* waiting for the client's close */
    if (s->state == WSQ_SS_OPEN && wsq__gate_ws_violation(s->wsi))
        return wsq__session_close_now(s, WSQ_CLOSE_PROTOCOL,
                                      "client frames must be masked (RFC 6455 5.1)");
    wsq_server_t *srv = s->srv;
    unsigned char *buf = srv->wbuf + LWS_PRE;
    size_t n = 0;
    /* credit to hand back to the delivery thread, per subscription */
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
    if (s->state == WSQ_SS_CLOSING)
        return send_close(s);
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* liveness */

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
            if (!s->fe->websocket || s->wsi == NULL || s->state >= WSQ_SS_CLOSE_SENT)
                continue;
            if (s->ws.ping_sent_ns) {
                if (now_ns - s->ws.ping_sent_ns >= grace_ns) {
                    /* silent through ping and grace: the peer is gone; no close frame */
                    wsq_info_log("idle_timeout", "sid=%llu peer=%s idle_ms=%lld",
                                 (unsigned long long)s->id, s->peer,
                                 (long long)((now_ns - s->ws.last_rx_ns) / 1000000));
                    s->close_code = WSQ_CLOSE_GOING_AWAY;
                    snprintf(s->close_reason, sizeof(s->close_reason), "idle timeout");
                    wsq__session_state(s, WSQ_SS_CLOSE_SENT);
                    lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
                }
            } else if (now_ns - s->ws.last_rx_ns >= ping_ns && s->state == WSQ_SS_OPEN) {
                /* a non-empty payload: lws reports only non-empty pongs */
                wsq__session_send_frame(s, WSQ_WS_OP_PING, "wsq", 3);
                s->ws.ping_sent_ns = now_ns;
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------- */
/* inbound */

static int on_established(struct lws *wsi, wsq_session_t **pss, wsq_server_t *srv)
{
    bool v1 = strcmp(lws_get_protocol(wsi)->name, WSQ_SUBPROTOCOL) == 0;
    wsq_session_t *s = wsq__session_new(srv, wsi, v1 ? &wsq__fe_wsq : &wsq__fe_raw);
    if (s == NULL)
        return -1;
    *pss = s;
    s->ws.last_rx_ns = wsq_mono_ns();
    wsq__count(&srv->metrics, connections);
    wsq__count(&srv->metrics, connections_total);
    /* headers are gone after this callback: take what we need now */
    char err[160] = "";
    if (wsq__upgrade_identity(srv, wsi, &s->ident, err, sizeof(err)) != WSQ_OK)
        return wsq__session_close_now(s, WSQ_CLOSE_UNAUTHORIZED, err);
    char detail[WSQ_TOPIC_MAX + 16] = "";
    if (s->fe->open && s->fe->open(s, wsi, detail, sizeof(detail)) != 0)
        return -1;
    char q[WSQ_LOG_Q_MAX];
    if (s->state == WSQ_SS_OPEN)
        wsq_info_log("connect", "sid=%llu peer=%s proto=%s identity=%s%s",
                     (unsigned long long)s->id, s->peer, s->fe->name,
                     wsq__log_q(q, sizeof(q), s->ident.name), detail);
    return 0;
}

static int on_receive(wsq_session_t *s, struct lws *wsi, const void *in, size_t len)
{
    s->ws.last_rx_ns = wsq_mono_coarse_ns(); /* any frame proves the peer alive */
    s->ws.ping_sent_ns = 0;
    if (lws_is_first_fragment(wsi)) {
        s->ws.rx.len = 0;
        s->ws.rx_binary = lws_frame_is_binary(wsi);
        s->ws.utf8 = 0;
    }
    uint64_t cap = s->fe->max_message(s);
    if (s->ws.rx.len + len > cap) {
        atomic_fetch_add_explicit(&s->srv->metrics.limit_refusals[WSQ_LIM_MESSAGE_SIZE], 1,
                                  memory_order_relaxed);
        char reason[64];
        snprintf(reason, sizeof(reason), "message exceeds %llu bytes", (unsigned long long)cap);
        return wsq__session_close_now(s, WSQ_CLOSE_TOO_BIG, reason);
    }
    if (!s->ws.rx_binary && !wsq_utf8_feed(&s->ws.utf8, in, len))
        return wsq__session_close_now(s, WSQ_CLOSE_BAD_DATA, "text frame is not valid UTF-8");
    if (len && wsq_buf_append(&s->ws.rx, in, len) != WSQ_OK)
        return wsq__session_close_now(s, WSQ_CLOSE_INTERNAL, "out of memory");
    if (!lws_is_final_fragment(wsi))
        return 0;
    if (!s->ws.rx_binary && s->ws.utf8 != 0)
        return wsq__session_close_now(s, WSQ_CLOSE_BAD_DATA,
                                      "text frame ends inside a UTF-8 sequence");
    int rc = s->fe->message(s, s->ws.rx.data, s->ws.rx.len, s->ws.rx_binary);
    /* keep small buffers, give big ones back */
    if (s->ws.rx.cap > 65536) {
        wsq_buf_fini(&s->ws.rx);
        wsq_buf_init(&s->ws.rx);
    }
    s->ws.rx.len = 0;
    return rc;
}

static void on_closed(wsq_server_t *srv, wsq_session_t *s)
{
    atomic_fetch_sub_explicit(&srv->metrics.connections, 1, memory_order_relaxed);
    bool ours = s->state != WSQ_SS_OPEN;
    char q[WSQ_LOG_Q_MAX];
    wsq_info_log("disconnect", "sid=%llu peer=%s identity=%s code=%u reason=\"%s\"",
                 (unsigned long long)s->id, s->peer, wsq__log_q(q, sizeof(q), s->ident.name),
                 ours ? s->close_code : s->ws.peer_close, ours ? s->close_reason : "peer closed");
    wsq__ct_defer(srv, wsq__ct_cmd(CT_SESSION_GONE, s->id, 0));
    wsq__session_state(s, WSQ_SS_GONE);
    s->wsi = NULL;
    wsq__session_free(s);
}

int wsq__ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    wsq_server_t *srv = lws_context_user(lws_get_context(wsi));
    wsq_session_t **pss = user;
    wsq_session_t *s = pss ? *pss : NULL;

    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return confirm_upgrade(srv, wsi);
    case LWS_CALLBACK_ESTABLISHED:
        return on_established(wsi, pss, srv);
    case LWS_CALLBACK_RECEIVE:
        if (s == NULL)
            return -1;
        if (s->state != WSQ_SS_OPEN)
            return 0; /* closing: drop input */
        return on_receive(s, wsi, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return s ? on_writeable(s) : 0;
    case LWS_CALLBACK_RECEIVE_PONG:
        if (s) {
            s->ws.last_rx_ns = wsq_mono_ns();
            s->ws.ping_sent_ns = 0;
        }
        return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (s && len >= 2) {
            const unsigned char *p = in;
            s->ws.peer_close = (uint16_t)(p[0] << 8 | p[1]);
        }
        /* the client's answer to our close: the handshake is complete, close without echoing */
        return s && s->state == WSQ_SS_CLOSE_SENT ? -1 : 0;
    case LWS_CALLBACK_CLOSED:
        if (s) {
            on_closed(srv, s);
            *pss = NULL;
        }
        return 0;
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        /* lws 4.1 issues this to the vhost's default protocol (raw mode), not protocols[0] */
        return wsq__conn_opened(srv, wsi) ? 0 : -1;
    case LWS_CALLBACK_WSI_DESTROY:
        wsq__conn_closed(srv, wsi); /* no-op unless this wsi was counted */
        return 0;
    default:
        return 0; /* EVENT_WAIT_CANCELLED among them: the http protocol handles it, once */
    }
}
