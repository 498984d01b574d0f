/*
 * wsqd: the session core, and the map of the daemon.
 *
 * Threads (../shared/DESIGN.md, Threads):
 *   service thread (ST)  - the lws loop (server.c); the only thread that calls lws (except
 *                          lws_cancel_service). Owns the sessions (core.c) and the front-ends.
 *   writer thread (WT)   - storage's group-commit writer; completes requests into the ST's
 *                          mailbox (once per commit) and reports commits to the CT.
 *   delivery thread (CT) - delivery.c: every subscription's delivery state; reads the store for
 *                          subscriptions that have credit and hands pre-framed batches to the
 *                          ST's mailbox.
 * Threads name sessions by id (sid), never by struct lws *. Every handoff between them is a
 * mailbox (mailbox.h): the ST's inbox, the CT's command queue.
 *
 * Front-ends turn a wire format into core calls, and core events into that wire format:
 *
 *   front-end      file                 transport          what it speaks
 *   raw            fe_raw.c             WebSocket (ws.c)   one frame = one message
 *   wsq.v1         fe_wsq.c             WebSocket (ws.c)   JSON ops, one handler per op
 *   http           fe_http.c, admin.c   HTTP (fe_http.c)   publish, history, health, metrics,
 *                                                          and admin.c's /admin/ operations
 *
 * Each front-end is a wsq_fe_t: the core reaches it only through that table (a confirm, a
 * reauthorization, freeing its state), never by name. Front-ends never call each other. A new
 * protocol is a new front-end file and a table, not a branch in these.
 *
 * Who calls whom:
 *   lws -> ws.c (the WebSocket protocols) and fe_http.c (the http protocol, which also gets the
 *          loop's own events: the mailbox wake-up and new connections, handed to server.c)
 *   ws.c -> the session's front-end through its wsq_fe_t; fe_http.c's refusal for bad upgrades
 *   front-ends -> core.c -> the delivery thread's mailbox (delivery.h), the store API
 *   the writer and delivery.c -> the service thread's mailbox; server.c drains it into core.c
 *   mailbox.c, metrics.c, auth.c, out.c, req.c, http_gate.c, log.c: leaves
 */
#ifndef WSQ_CORE_H
#define WSQ_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "delivery.h"
#include "mailbox.h"
#include "out.h"
#include "wsq/proto.h"
#include "wsq/store.h"

struct lws;
typedef struct wsq_server wsq_server_t;
typedef struct wsq_session wsq_session_t;

/* WebSocket close codes used by wsqd (docs/PROTOCOL.md, "Close codes"). */
enum {
    WSQ_CLOSE_NORMAL = 1000,
    WSQ_CLOSE_GOING_AWAY = 1001, /* server shutdown */
    WSQ_CLOSE_PROTOCOL = 1002,   /* an unmasked client frame */
    WSQ_CLOSE_UNSUPPORTED = 1003,
    WSQ_CLOSE_BAD_DATA = 1007, /* invalid UTF-8 in a text frame */
    WSQ_CLOSE_POLICY = 1008,
    WSQ_CLOSE_TOO_BIG = 1009,
    WSQ_CLOSE_INTERNAL = 1011,
    WSQ_CLOSE_BAD_REQUEST = 4000,   /* raw mode: bad query */
    WSQ_CLOSE_UNAUTHORIZED = 4001,  /* missing or invalid credentials */
    WSQ_CLOSE_FORBIDDEN = 4003,     /* identity lacks the right */
    WSQ_CLOSE_TAKEN_OVER = 4009,    /* another session attached to this consumer */
    WSQ_CLOSE_GAP = 4010,           /* raw mode: messages the client needed were removed */
    WSQ_CLOSE_STORAGE = 4013,       /* raw mode: a publish was refused (storage_full, ...) */
    WSQ_CLOSE_CONSUMER_GONE = 4014, /* the consumer was deleted by an operator */
    WSQ_CLOSE_RESET = 4015,         /* raw mode: the topic was deleted and recreated */
    WSQ_CLOSE_CONFLICT = 4016,      /* raw mode: the consumer exists in the other mode */
    WSQ_CLOSE_LIMIT = 4029,         /* a limit was exceeded */
};

/* ------------------------------------------------------------------------------------------- */
/* The ST's mailbox: what the CT and the WT hand to the service thread. */

typedef enum {
    ST_DELIVER = 1, /* chunks for a session (messages, subscribed, gap, reset, err frames) */
    ST_SUB_ACTIVE,  /* the subscription is live */
    ST_SUB_FAILED,  /* the subscription was refused (the err frame is in chunks) */
    ST_SUB_CLOSE,   /* close the session after its queue (code/reason) */
    ST_CONFIRMS,    /* one commit's completed writer requests (reqs) */
    ST_ANSWER,      /* the delivery thread's answer to an HTTP request (err, body) */
} st_kind_t;

typedef struct st_item {
    wsq_mail_t mail; /* first: items travel through the ST's mailbox */
    st_kind_t kind;
    uint64_t sid;
    uint64_t sub_id;
    wsq_out_t *chunks;
    wsq_wreq_t *reqs; /* ST_CONFIRMS: linked through next, in completion order */
    uint16_t close_code;
    char reason[64];
    wsq_err err; /* ST_ANSWER: WSQ_OK (body is the JSON answer) or the error (body: its text) */
    char *body;  /* ST_ANSWER (owned) */
    size_t body_len;
} st_item_t;

/* A zeroed item; NULL when out of memory. Any thread. */
st_item_t *wsq__st_item(st_kind_t kind, uint64_t sid, uint64_t sub_id);
/* Frees an item and what it carries. */
void wsq__st_item_free(st_item_t *it);

/* ------------------------------------------------------------------------------------------- */
/* Front-ends */

typedef struct wsq_fe {
    const char *name; /* in logs: "raw", "wsq.v1", "http" */
    bool websocket;   /* a WebSocket session: a queue of frames, pings, close frames */
    /* WebSocket front-ends: the connection is established and its request headers are still
     * readable. detail (detail_len bytes, "" on entry) gets what the connect log line adds.
     * Returns 0, or -1 to drop the connection at once; may close s. NULL: nothing to do. */
    int (*open)(wsq_session_t *s, struct lws *wsi, char *detail, size_t detail_len);
    /* WebSocket front-ends: the largest inbound message (frames reassembled) it accepts;
     * above it the connection closes with 1009. */
    uint64_t (*max_message)(const wsq_session_t *s);
    /* WebSocket front-ends: one complete inbound message. Returns 0, or -1 to drop the
     * connection at once. */
    int (*message)(wsq_session_t *s, const unsigned char *msg, size_t len, bool binary);
    /* The writer finished a request this session submitted; the front-end answers it. The
     * core frees req afterwards. */
    void (*confirm)(wsq_session_t *s, wsq_wreq_t *req);
    /* HTTP: the delivery thread answered this request (ST_ANSWER): err WSQ_OK and a JSON body,
     * or an error and its message (NULL: the error's own). The front-end takes body (free it).
     * Also at shutdown (WSQ_ERR_CLOSED) for a request still waiting. NULL: none expected. */
    void (*answer)(wsq_session_t *s, wsq_err err, char *body, size_t len);
    /* After a config reload, once the core found the identity still valid and its
     * subscriptions still allowed: the front-end's own rights checks (may close s). NULL:
     * none. */
    void (*reauthorize)(wsq_session_t *s);
    /* Frees the front-end's state (fe_data). NULL: nothing to free. */
    void (*free)(wsq_session_t *s);
} wsq_fe_t;

extern const wsq_fe_t wsq__fe_raw;
extern const wsq_fe_t wsq__fe_wsq;
extern const wsq_fe_t wsq__fe_http;

/* ------------------------------------------------------------------------------------------- */
/* Sessions (service thread only) */

/* A session's life. Changed only by wsq__session_state(), which asserts every move. */
typedef enum {
    WSQ_SS_OPEN = 0,   /* serving */
    WSQ_SS_CLOSING,    /* close_code set: the queue drains, then our close frame goes */
    WSQ_SS_CLOSE_SENT, /* our close frame is out (or none will go): waiting for the end */
    WSQ_SS_GONE,       /* the connection is closed; the session is freed at once */
} wsq_sess_state_t;

/* The service thread's view of a subscription: enough to route acks and drop stale deliveries. */
typedef struct {
    char topic[WSQ_TOPIC_MAX + 1];
    size_t topic_len;
    uint64_t id;  /* sub id, shared with the delivery thread */
    bool durable; /* has a consumer name */
    bool shared;  /* of a shared consumer: acks are per seq */
    bool pattern; /* topic is a pattern: one subscription per matching topic (delivery.c) */
} wsq_sub_t;

struct wsq_session {
    uint64_t id;
    wsq_session_t *hnext; /* sid table chain */
    wsq_session_t *pnext; /* paused list */
    struct lws *wsi;      /* NULL once GONE */
    wsq_server_t *srv;
    const wsq_fe_t *fe;
    void *fe_data; /* the front-end's own state (raw: its target; http: the request) */
    wsq_sess_state_t state;
    char peer[64];
    wsq_identity_t ident;
    /* outbound FIFO of pre-framed chunks (WebSocket front-ends) */
    wsq_out_t *oq_head, **oq_tail;
    size_t oq_bytes;
    /* publishing */
    uint32_t pub_inflight; /* submitted, not yet confirmed */
    bool rx_paused;        /* rx flow control is off (backpressure); orthogonal to state */
    double rate_tokens;    /* publish rate token bucket */
    int64_t rate_last_ns;  /* last refill */
    /* subscriptions */
    wsq_sub_t *subs;
    uint32_t nsubs, cap_subs;
    /* acks by seq of one subscription in a row go to the delivery thread as one command: the
     * last such command while it is still in the batch (srv->ct_batch_gen == ack_gen) */
    ct_cmd_t *ack_cmd;
    uint64_t ack_gen;
    uint32_t ack_cap; /* room in ack_cmd->seqs */
    /* closing */
    uint16_t close_code; /* from CLOSING on: the code our close frame carries */
    char close_reason[124];
    /* the WebSocket transport's own state (ws.c) */
    struct {
        wsq_buf_t rx; /* inbound reassembly */
        bool rx_binary;
        uint32_t utf8;        /* streaming UTF-8 validator state */
        uint16_t peer_close;  /* code the peer closed with */
        int64_t last_rx_ns;   /* last frame or pong from the client (liveness) */
        int64_t ping_sent_ns; /* our ping is unanswered since then; 0: none outstanding */
    } ws;
};

/* A new OPEN session for wsi, served by fe; NULL when out of memory. */
wsq_session_t *wsq__session_new(wsq_server_t *srv, struct lws *wsi, const wsq_fe_t *fe);
/* Frees s and everything it holds (fe->free for the front-end's state). */
void wsq__session_free(wsq_session_t *s);
wsq_session_t *wsq__session_find(wsq_server_t *srv, uint64_t sid);
/* Moves s to state to; an illegal move is a bug (assert). */
void wsq__session_state(wsq_session_t *s, wsq_sess_state_t to);
/* Calls fn for every session (fn must not free sessions). */
void wsq__sessions_each(wsq_server_t *srv, void (*fn)(wsq_session_t *s, void *arg), void *arg);

/* Queues chunks (owned from now on) on s and asks for WRITEABLE when the queue was empty. */
void wsq__session_send(wsq_session_t *s, wsq_out_t *chunks);
/* Queues one small frame (opcode WSQ_WS_OP_*) of the session's own: ok, err, pong, ping.
 * Consecutive small frames share a chunk (a burst of publish confirms costs one allocation per
 * ~60 frames, not one each). */
void wsq__session_send_frame(wsq_session_t *s, unsigned opcode, const void *data, size_t len);
/* Closes after the queued frames: code and reason go in the close frame. Idempotent. */
void wsq__session_close(wsq_session_t *s, uint16_t code, const char *reason);
/* Closes without sending what is queued (the client broke the protocol). Returns 0. */
int wsq__session_close_now(wsq_session_t *s, uint16_t code, const char *reason);
/* Every WebSocket session closes after its queue. */
void wsq__sessions_close_all(wsq_server_t *srv, uint16_t code, const char *reason);

/* Publishes payload on behalf of s: the writer's completion comes back to s->fe->confirm. The
 * ref (may be NULL) rides with the request; headers[0..headers_len) is a headers block (0: none,
 * see wsq/proto.h) within the limits (wsq__headers_within); id[0..id_len) the publish id (0:
 * none; at most WSQ_MSG_ID_MAX). Rights and the rate limit are the caller's to check. Counts the
 * publish in flight and applies backpressure (WebSocket sessions). Returns the store's refusal
 * (nothing submitted), or WSQ_OK. */
wsq_err wsq__publish(wsq_session_t *s, const char *topic, size_t topic_len, const void *data,
                     size_t len, bool binary, const void *headers, size_t headers_len,
                     const char *id, size_t id_len, const char *ref);
/* Are n headers of bytes (keys and values summed) within limits.max_message_headers and
 * max_message_headers_size? If not, why[0..cap) names the limit. */
bool wsq__headers_within(const wsq_config_t *cfg, uint32_t n, size_t bytes, char *why, size_t cap);
/* Submits any writer request for s (admin operations): its completion comes back to
 * s->fe->confirm. Takes r on success. */
wsq_err wsq__session_submit(wsq_session_t *s, wsq_wreq_t *r);
/* Routes r's completion to s->fe->confirm, for a request the caller submits itself (a list). */
void wsq__session_route(wsq_session_t *s, wsq_wreq_t *r);
/* Publish rate limit (limits.max_publish_rate): false when this publish must be refused. */
bool wsq__rate_ok(wsq_session_t *s);

/* Subscriptions of s (the service thread's view). wsq__sub_add hands p (owned on success) to
 * the delivery thread; wsq__sub_end tells it the subscription ended. */
wsq_sub_t *wsq__sub_by_topic(wsq_session_t *s, const char *topic, size_t len);
/* The subscription a message of topic came through: the one on topic, else the first pattern
 * that matches it. NULL: none. */
wsq_sub_t *wsq__sub_for_message(wsq_session_t *s, const char *topic, size_t len);
/* The identity's subscribe patterns, each NUL-terminated, into a new buffer (*out, *len). */
wsq_err wsq__rights_copy(const wsq_identity_t *id, char **out, size_t *len);
wsq_err wsq__sub_add(wsq_session_t *s, ct_sub_params_t *p);
/* New subscription parameters (the rest zero): topic, consumer (consumer_len 0: ephemeral),
 * mode, where a new consumer starts, and the window; "latest" is fixed now (the topic's next
 * seq). NULL when out of memory. */
ct_sub_params_t *wsq__sub_params(wsq_server_t *srv, const char *topic, size_t topic_len,
                                 const char *consumer, size_t consumer_len, bool shared,
                                 wsq_from_t from, uint64_t from_seq, int64_t from_time,
                                 uint32_t window);
void wsq__sub_end(wsq_session_t *s, wsq_sub_t *sub);
/* The same, answering an unsub: reply (taken; may be NULL) is sent to the session once the
 * delivery thread has ended the subscription, after every frame it sent for it ("subscribed"
 * included, when the subscription was still opening). */
void wsq__sub_end_reply(wsq_session_t *s, wsq_sub_t *sub, wsq_buf_t *reply);

/* The ST's mailbox items, one at a time (server.c drains the mailbox). Takes it. */
void wsq__core_item(wsq_server_t *srv, st_item_t *it);
/* Writer thread: a request of a session is complete (req->done of every request the core
 * submits); collected until the commit ends. */
void wsq__wt_done(wsq_wreq_t *req, void *arg);
/* Writer thread, at the end of each commit: the commit's completed requests go to the ST's
 * mailbox as one item. */
void wsq__wt_commit(wsq_server_t *srv);

/* After a reload: re-resolve every session's rights; close those that lost them. */
void wsq__sessions_reauthorize(wsq_server_t *srv);
/* Closes sessions whose JWT expired (4001 "token expired"). */
void wsq__sessions_expire_tokens(wsq_server_t *srv, int64_t now_ms);
/* Lets paused publishers read again once the writer caught up. */
void wsq__sessions_resume_publishers(wsq_server_t *srv);
/* Pauses every publisher (shutdown). */
void wsq__sessions_pause_all(wsq_server_t *srv);

#endif
