/* Sessions (service thread only). Internal to broker/. */
#ifndef WSQ_SESSION_H
#define WSQ_SESSION_H

#include <libwebsockets.h>

#include "broker.h"

typedef enum { WSQ_SESS_WSQ = 1, WSQ_SESS_RAW, WSQ_SESS_HTTP } wsq_sess_kind_t;

/* The service thread's view of a subscription: enough to route acks and drop stale deliveries. */
typedef struct {
    char topic[WSQ_TOPIC_MAX + 1];
    size_t topic_len;
    uint64_t id;  /* sub id, shared with the consumer thread */
    bool durable; /* has a consumer name */
} wsq_sub_t;

typedef struct wsq_http
    wsq_http_t; /* lws callbacks: WebSocket protocols (session.c) and HTTP (http_api.c) */
int wsq__ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len);
int wsq__http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len);

/* http_api.c */
void wsq__http_free(wsq_http_t *h);

struct wsq_session {
    uint64_t id;
    wsq_session_t *hnext; /* sid table chain */
    wsq_session_t *pnext; /* paused list */
    struct lws *wsi;      /* NULL once closed */
    wsq_server_t *srv;
    wsq_sess_kind_t kind;
    char peer[64];
    wsq_identity_t ident;
    /* inbound reassembly */
    wsq_buf_t rx;
    bool rx_binary;
    uint32_t utf8; /* streaming UTF-8 validator state */
    /* outbound FIFO of pre-framed chunks */
    wsq_out_t *oq_head, **oq_tail;
    size_t oq_bytes;
    /* publishing */
    uint32_t pub_inflight; /* submitted, not yet confirmed */
    bool rx_paused;        /* rx flow control is off (backpressure) */
    /* subscriptions */
    wsq_sub_t *subs;
    uint32_t nsubs, cap_subs;
    wsq_raw_target_t target; /* raw mode: topic, consumer, from */
    /* closing */
    uint16_t close_code; /* set: close after the queue drains */
    uint16_t peer_close; /* code the peer closed with */
    bool close_sent;     /* our close frame is out; waiting for the client's */
    char close_reason[124];
    wsq_http_t *http;     /* HTTP request state (kind HTTP) */
    int64_t last_rx_ns;   /* last frame or pong from the client (liveness) */
    int64_t ping_sent_ns; /* our ping is unanswered since then; 0: none outstanding */
    double rate_tokens;   /* publish rate token bucket */
    int64_t rate_last_ns; /* last refill */
};

wsq_session_t *wsq__session_new(wsq_server_t *srv, struct lws *wsi, wsq_sess_kind_t kind);
void wsq__session_free(wsq_session_t *s);
/* Closes after the queued frames: code and reason go in the close frame. */
void wsq__session_close(wsq_session_t *s, uint16_t code, const char *reason);

/* lws callbacks: WebSocket protocols (session.c) and HTTP (http_api.c) */
int wsq__ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len);
int wsq__http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len);

/* http_api.c */
void wsq__http_free(wsq_http_t *h);
void wsq__http_confirm(wsq_session_t *s, wsq_wreq_t *req);
/* HTTP_CONFIRM_UPGRADE: refuses a bad upgrade with a real HTTP status and JSON body. */
int wsq__confirm_upgrade(wsq_server_t *srv, struct lws *wsi);
/* Raw-mode target of an upgrade request (path and query). */
wsq_err wsq__raw_target(struct lws *wsi, wsq_raw_target_t *t, char *err, size_t errlen);

/* auth.c */
/* Identity of an upgrade or HTTP request: Authorization: Bearer, ?token=, or anonymous. */
wsq_err wsq__upgrade_identity(wsq_server_t *srv, struct lws *wsi, wsq_identity_t *id, char *err,
                              size_t errlen);
wsq_err wsq__auth_token(wsq_server_t *srv, const char *token, size_t len, wsq_identity_t *id);
/* A JWT (HS256, auth.jwt): on failure *why says which check failed. */
wsq_err wsq__auth_jwt(wsq_server_t *srv, const char *token, size_t len, wsq_identity_t *id,
                      wsq_authf_t *why);
/* What the browser checks found out about a request. */
typedef struct {
    bool browser;     /* it carries an Origin: a browser sent it */
    bool listed;      /* its Origin is in auth.allowed_origins: answers carry CORS headers */
    char origin[320]; /* the Origin header ("" without one) */
} wsq_browser_t;

/* Browser checks of an HTTP request or WebSocket upgrade (auth.c, service thread):
 *   - on a loopback listener, Host must name it (localhost, 127.x.y.z or [::1], its port):
 *     DNS rebinding;
 *   - an Origin must be in auth.allowed_origins ("*" allows any), or be the request's own
 *     origin (scheme of the listener, the Host's name and port).
 * WSQ_OK, or an error with the HTTP status to answer (400 malformed or too long, 403 refused)
 * and a message in err. */
wsq_err wsq__browser_check(wsq_server_t *srv, struct lws *wsi, wsq_browser_t *b, unsigned *status,
                           char *err, size_t errlen);
/* Re-resolves rights after a reload; false when the credentials were withdrawn. */
bool wsq__identity_refresh(wsq_server_t *srv, wsq_identity_t *id);
/* Publish rate limit (limits.max_publish_rate): false when this publish must be refused. */
bool wsq__rate_ok(wsq_session_t *s);

#endif
