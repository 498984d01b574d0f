/*
 * wsqd internals, shared by broker/ sources only.
 *
 * Threads (DESIGN.md, Threads):
 *   service thread (ST)  - the lws loop; the only thread that calls lws (except
 *                          lws_cancel_service). Owns sessions, their outbound queues, inbound
 *                          reassembly and the wire protocols.
 *   writer thread (WT)   - storage's group-commit writer; completes publishes into the ST inbox
 *                          and reports commits to the consumer thread.
 *   consumer thread (CT) - owns every subscription's delivery state and the in-memory mirror of
 *                          attached durable consumers; reads LMDB for subscriptions that have
 *                          credit and hands pre-framed batches to the ST inbox.
 *
 * Threads name sessions by id (sid), never by struct lws *. Every handoff is a list swapped under
 * one mutex; a wake-up is sent only when the receiving side was idle.
 */
#ifndef WSQ_BROKER_H
#define WSQ_BROKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "wsq/config.h"
#include "wsq/err.h"
#include "wsq/proto.h"
#include "wsq/store.h"

struct lws;
struct lws_context;
struct lws_vhost;

typedef struct wsq_server wsq_server_t;
typedef struct wsq_server_lws wsq_server_lws_t; /* server.c: lws objects that must outlive vhosts */
typedef struct wsq_session wsq_session_t;
typedef struct wsq_consumers wsq_consumers_t;

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
    WSQ_CLOSE_LIMIT = 4029,         /* a limit was exceeded */
};

/* Largest WebSocket frame payload wsqd writes; bigger messages are sent as fragments. */
#define WSQ_FRAG_MAX (64u * 1024u)
/* Bytes written per WRITEABLE callback (whole frames only). */
#define WSQ_WRITE_MAX (128u * 1024u)

/* ------------------------------------------------------------------------------------------- */
/* Outbound chunks: pre-framed WebSocket bytes for one session. A chunk holds whole frames and is
 * at most WSQ_FRAG_MAX + header bytes, so it always fits in one write. */

typedef struct wsq_out {
    struct wsq_out *next;
    uint64_t sub_id;   /* subscription whose messages this chunk carries (0: none) */
    uint32_t count;    /* messages completed by this chunk (the last fragment counts) */
    uint64_t last_seq; /* seq of the last message completed by this chunk */
    size_t len;
    size_t cap; /* bytes data can hold */
    unsigned char data[];
} wsq_out_t;

/* Frames payload (opcode 1 text, 2 binary) into a list of chunks, fragmenting above
 * WSQ_FRAG_MAX. Appends to *tail. count/last_seq go on the chunk that ends the message. */
wsq_err wsq__out_frame(wsq_out_t ***tail, unsigned opcode, const void *payload, size_t len,
                       uint64_t sub_id, uint32_t count, uint64_t last_seq);
/* A chunk list builder that packs many small frames into one chunk (up to WSQ_FRAG_MAX). */
typedef struct {
    wsq_out_t *head;
    wsq_out_t **tail;
    wsq_out_t *cur; /* open chunk being filled */
    size_t cap;     /* capacity of cur */
    size_t bytes;   /* total bytes */
} wsq_outlist_t;
void wsq__outlist_init(wsq_outlist_t *l);
/* Appends one message frame (fragmenting when large) for sub_id with seq. */
wsq_err wsq__outlist_frame(wsq_outlist_t *l, unsigned opcode, const void *payload, size_t len,
                           uint64_t sub_id, uint64_t seq, bool counts);
/* Detaches the list (head) and resets the builder. */
wsq_out_t *wsq__outlist_take(wsq_outlist_t *l);
void wsq__out_free_list(wsq_out_t **head);

/* ------------------------------------------------------------------------------------------- */
/* ST inbox: what the CT and the WT hand to the service thread. */

typedef enum {
    ST_DELIVER = 1, /* chunks for a session (messages, subscribed, gap, reset, err frames) */
    ST_SUB_ACTIVE,  /* the subscription is live (ST learns its topic id) */
    ST_SUB_FAILED,  /* the subscription was refused (the err frame is in chunks) */
    ST_SUB_CLOSE,   /* close the session after its queue (code/reason) */
} st_kind_t;

typedef struct st_item {
    struct st_item *next;
    st_kind_t kind;
    uint64_t sid;
    uint64_t sub_id;
    wsq_out_t *chunks;
    uint16_t close_code;
    char reason[64];
} st_item_t;

/* ------------------------------------------------------------------------------------------- */
/* CT commands: what the ST and the WT hand to the consumer thread. */

typedef enum {
    CT_SUB = 1,         /* new subscription (sub) */
    CT_UNSUB,           /* drop one subscription */
    CT_ACK,             /* wsq.v1 ack of seq */
    CT_ACK_UPTO,        /* wsq.v1 cumulative ack */
    CT_NACK,            /* wsq.v1 nack seq with delay */
    CT_WRITTEN,         /* ST wrote count messages (bytes) of sub, the last being seq */
    CT_SESSION_GONE,    /* every subscription of sid ends */
    CT_COMMIT,          /* WT committed: topic heads changed (topic list attached) */
    CT_OPENED,          /* WT finished a TOPIC_ENSURE/CONSUMER_OPEN for a subscription (req) */
    CT_CONSUMER_DELETE, /* admin: forget a consumer, closing its session (sub: names) */
} ct_kind_t;

typedef struct {
    char topic[WSQ_TOPIC_MAX + 1];
    size_t topic_len;
    char consumer[WSQ_CONSUMER_NAME_MAX + 1];
    size_t consumer_len;
    char ref[WSQ_REF_MAX + 1];
    wsq_from_t from;
    uint64_t from_seq;
    int64_t from_time;
    uint64_t latest_seq; /* the topic's next seq when the client asked (\"latest\" = from here) */
    uint32_t window;
    bool has_epoch;
    uint64_t epoch;
    bool raw; /* raw-mode subscription: acked when written, gaps close the connection */
} ct_sub_params_t;

typedef struct ct_cmd {
    struct ct_cmd *next;
    ct_kind_t kind;
    uint64_t sid;
    uint64_t sub_id;
    uint64_t seq;
    uint64_t bytes;
    uint32_t count;
    int64_t delay_ms;
    ct_sub_params_t *sub;       /* CT_SUB, CT_CONSUMER_DELETE (owned) */
    wsq_wreq_t *req;            /* CT_OPENED, CT_CONSUMER_DELETE (owned) */
    wsq_commit_topic_t *topics; /* CT_COMMIT (owned) */
    uint32_t n_topics;
} ct_cmd_t;

/* ------------------------------------------------------------------------------------------- */
/* Consumer thread (consumer.c) */

wsq_err wsq__ct_create(wsq_server_t *srv, wsq_consumers_t **out);
wsq_err wsq__ct_start(wsq_consumers_t *ct);
/* Stops and joins the thread; subscriptions' unsaved consumer state is written first. */
void wsq__ct_stop(wsq_consumers_t *ct);
void wsq__ct_destroy(wsq_consumers_t **ct);
/* Queues a command (any thread; ownership of cmd passes on success, always). */
void wsq__ct_push(wsq_consumers_t *ct, ct_cmd_t *cmd);
/* Queues a list of commands (linked through next) with one lock. */
void wsq__ct_push_list(wsq_consumers_t *ct, ct_cmd_t *head);
ct_cmd_t *wsq__ct_cmd(ct_kind_t kind, uint64_t sid, uint64_t sub_id);
void wsq__ct_cmd_free(ct_cmd_t *cmd);

/* ------------------------------------------------------------------------------------------- */
/* Identities and rights (auth.c) */

typedef enum { WSQ_ID_ANON = 0, WSQ_ID_TOKEN, WSQ_ID_JWT } wsq_id_kind_t;

/* Who a connection is. Rights of ANON and TOKEN identities point into the config in force (a
 * reload re-resolves them by name); a JWT identity owns the rights from its claims. */
typedef struct {
    char name[64]; /* "anonymous", a token's name or a JWT's sub */
    wsq_id_kind_t kind;
    const wsq_rights_t *rights; /* never NULL once resolved */
    wsq_rights_t *owned;        /* JWT: rights from the claims, freed with the identity */
    int64_t expires_ms;         /* JWT exp in ms; 0 = never */
    unsigned char digest[32];   /* TOKEN: SHA-256 of the token presented */
    bool anonymous;
} wsq_identity_t;

/* Frees what an identity owns (JWT rights). */
void wsq__identity_fini(wsq_identity_t *id);
/* Moves src into dst (dst's old content is freed). */
void wsq__identity_move(wsq_identity_t *dst, wsq_identity_t *src);

typedef enum { WSQ_RIGHT_PUBLISH, WSQ_RIGHT_SUBSCRIBE } wsq_right_t;
bool wsq__allowed(const wsq_identity_t *id, wsq_right_t right, const char *topic, size_t len);

/* ------------------------------------------------------------------------------------------- */
/* Logging (log.c): thread-safe, structured. */

void wsq__log_init(wsq_log_level_t level, bool json);
void wsq__log(wsq_log_level_t level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define wsq_err_log(ev, ...) wsq__log(WSQ_LOG_ERROR, ev, __VA_ARGS__)
#define wsq_warn_log(ev, ...) wsq__log(WSQ_LOG_WARN, ev, __VA_ARGS__)
#define wsq_info_log(ev, ...) wsq__log(WSQ_LOG_INFO, ev, __VA_ARGS__)
#define wsq_debug_log(ev, ...) wsq__log(WSQ_LOG_DEBUG, ev, __VA_ARGS__)

/* ------------------------------------------------------------------------------------------- */
/* Metrics: plain atomic counters, read by /metrics. */

/* Bucket upper bounds of the commit histograms (the last bucket is +Inf). */
#define WSQ_BATCH_BUCKETS 12
#define WSQ_LATENCY_BUCKETS 12

/* Limit refusals, by limit (wsq_limit_refusals_total{limit=...}) */
typedef enum {
    WSQ_LIM_CONNECTIONS = 0,
    WSQ_LIM_CONNECTIONS_PER_IP,
    WSQ_LIM_SUBSCRIPTIONS,
    WSQ_LIM_WINDOW,
    WSQ_LIM_MESSAGE_SIZE,
    WSQ_LIM_PUBLISH_RATE,
    WSQ_LIM_COUNT
} wsq_limit_t;

/* Authentication failures, by reason (wsq_auth_failures_total{reason=...}) */
typedef enum {
    WSQ_AUTHF_BAD_HEADER = 0, /* Authorization is not "Bearer <token>" */
    WSQ_AUTHF_UNKNOWN_TOKEN,  /* not a configured token, and no JWT secret accepts it */
    WSQ_AUTHF_MALFORMED,      /* JWT: not three base64url parts, bad JSON */
    WSQ_AUTHF_BAD_ALG,
    WSQ_AUTHF_BAD_SIGNATURE,
    WSQ_AUTHF_EXPIRED,
    WSQ_AUTHF_NOT_YET_VALID,
    WSQ_AUTHF_BAD_ISSUER,
    WSQ_AUTHF_BAD_AUDIENCE,
    WSQ_AUTHF_BAD_CLAIMS,
    WSQ_AUTHF_ORIGIN,  /* browser Origin not in auth.allowed_origins */
    WSQ_AUTHF_HOST,    /* Host does not name the loopback listener (DNS rebinding) */
    WSQ_AUTHF_REVOKED, /* credentials withdrawn by a reload */
    WSQ_AUTHF_COUNT
} wsq_authf_t;
const char *wsq__authf_name(wsq_authf_t r);

typedef struct {
    _Atomic uint64_t connections; /* currently open WebSocket connections */
    _Atomic uint64_t connections_total;
    _Atomic uint64_t published; /* confirmed appends */
    _Atomic uint64_t publish_errors;
    _Atomic uint64_t delivered; /* messages handed to sockets (incl. redeliveries) */
    _Atomic uint64_t redelivered;
    _Atomic uint64_t acked;
    _Atomic uint64_t nacked;
    _Atomic uint64_t gaps;
    _Atomic uint64_t commits;
    _Atomic uint64_t commit_ns_total;
    _Atomic uint64_t paused;        /* publisher pauses (backpressure) */
    _Atomic uint64_t dead_lettered; /* messages skipped after limits.max_deliver */
    _Atomic uint64_t reloads;
    _Atomic uint64_t reload_failures;
    _Atomic uint64_t limit_refusals[WSQ_LIM_COUNT];
    _Atomic uint64_t auth_failures[WSQ_AUTHF_COUNT];
    _Atomic uint64_t batch_hist[WSQ_BATCH_BUCKETS + 1]; /* requests per commit */
    _Atomic uint64_t batch_sum;
    _Atomic uint64_t latency_hist[WSQ_LATENCY_BUCKETS + 1]; /* commit duration */
    _Atomic uint64_t latency_sum_ns;
} wsq_metrics_t;

/* ------------------------------------------------------------------------------------------- */
/* The server (server.c) */

struct wsq_server {
    /* The config in force. A reload swaps it; every thread reads it through this atomic
     * pointer, and replaced configs stay allocated until exit (old_cfgs), so a pointer taken
     * from one never dangles. */
    const wsq_config_t *_Atomic cfg;
    const char *cfg_path; /* NULL: the embedded default (nothing to reload) */
    wsq_config_t **old_cfgs;
    size_t n_old_cfgs;
    wsq_store_t *store;
    wsq_consumers_t *ct;
    struct lws_context *lws;
    wsq_server_lws_t *lx;
    wsq_metrics_t metrics;
    int64_t started_ms;
    _Atomic int storage_err; /* wsq_err of the last failed batch that says storage is not
                              * writable (storage_full, io, panic); WSQ_OK after a commit */

    /* ST inbox (CT and WT -> ST), under inbox_lock */
    pthread_mutex_t inbox_lock;
    st_item_t *inbox_head, **inbox_tail;
    wsq_wreq_t *confirm_head, **confirm_tail; /* completed publishes */
    bool wake_pending;
    bool st_stopped; /* set before the context is destroyed: no more lws_cancel_service */

    /* WT-local list of completed publishes, flushed once per commit (writer thread only) */
    wsq_wreq_t *wt_head, **wt_tail;

    /* ST-only state */
    wsq_session_t **buckets; /* sid -> session */
    uint32_t nbuckets;
    uint32_t nsessions;
    uint64_t next_sid;
    uint64_t next_sub_id;
    bool publishers_paused;    /* the writer queue passed its high-water mark */
    uint32_t nconns;           /* accepted TCP connections (WebSocket and HTTP) */
    uint32_t fd_conns;         /* connections the descriptor limit leaves room for (0: any) */
    struct wsq_ip_count **ips; /* per-peer connection counts (max_connections_per_ip) */
    uint32_t nips_buckets;
    uint32_t ping_cursor;                    /* next session bucket the liveness sweep visits */
    ct_cmd_t *ct_pending, **ct_pending_tail; /* wsq__ct_defer's batch */
    bool flush_scheduled;
    wsq_session_t *paused;     /* sessions whose rx is off */
    atomic_int signal_pending; /* set by the signal handler: 1 stop, 2 reload */
    bool shutting_down;
    int64_t shutdown_deadline_ns;
    unsigned char *wbuf; /* LWS_PRE + WSQ_WRITE_MAX write buffer (ST) */
    int exit_code;
};

/* sd_notify: "READY=1", "RELOADING=1", "STOPPING=1" to $NOTIFY_SOCKET (notify.c). */
void wsq__notify(const char *state);

/* Runs the broker until SIGTERM/SIGINT; returns the process exit code. Takes ownership of cfg.
 * path names the file it came from (for SIGHUP reloads), NULL for the embedded default. */
int wsq__server_run(wsq_config_t *cfg, const char *path);

/* ST: drains the inbox (LWS_CALLBACK_EVENT_WAIT_CANCELLED) */
void wsq__server_wake(wsq_server_t *srv);
/* ST: FILTER_NETWORK_CONNECTION: 0 accepts, nonzero drops the new socket */
int wsq__accept_connection(wsq_server_t *srv, struct lws *wsi);

/* ST inbox producers (any thread) */
void wsq__st_push(wsq_server_t *srv, st_item_t *item);
/* Queues a list of items (linked through next) with one lock and at most one wake-up. */
void wsq__st_push_list(wsq_server_t *srv, st_item_t *head);
/* ST: queues a command for the consumer thread, handed over with all others queued during the
 * same loop pass (one lock and one wake-up per pass instead of one per socket write). */
void wsq__ct_defer(wsq_server_t *srv, ct_cmd_t *cmd);
st_item_t *wsq__st_item(st_kind_t kind, uint64_t sid, uint64_t sub_id);

/* Sessions (session.c), ST only */
/* After a reload: re-resolve every session's rights; close those that lost them. */
void wsq__sessions_reauthorize(wsq_server_t *srv);
/* Closes sessions whose JWT expired (4001 "token expired"). */
void wsq__sessions_expire_tokens(wsq_server_t *srv, int64_t now_ms);
/* Liveness: pings sessions idle for limits.ping_interval, drops those silent for
 * limits.idle_timeout. Visits a slice of the sessions per call (every tick), so the whole
 * table is covered every ping_interval / 4 at O(n) cost. */
void wsq__sessions_ping(wsq_server_t *srv, int64_t now_ns, int64_t tick_ns);
/* Connection accounting (server.c): a new TCP client (after FILTER) and its end. false: no
 * memory to serve it; close it. */
bool wsq__conn_opened(wsq_server_t *srv, struct lws *wsi);
void wsq__conn_closed(wsq_server_t *srv, struct lws *wsi);
/* The gate (http_gate.c): frames the HTTP requests of every client connection before lws
 * reads them; service thread only. init before the lws context exists, fini after it is gone. */
wsq_err wsq__gate_init(void);
void wsq__gate_fini(void);
/* A new client connection; false: out of memory. max_head: limits.max_header_size. */
bool wsq__gate_open(struct lws *wsi, uint32_t max_head);
void wsq__gate_close(struct lws *wsi);
/* The current request's transaction is complete: the gate lets the next one in. */
void wsq__gate_next(struct lws *wsi);
/* The client sent more before this request was answered: the answer closes the connection. */
bool wsq__gate_pipelined(struct lws *wsi);
/* A WebSocket client sent an unmasked frame: the session must close with 1002. */
bool wsq__gate_ws_violation(struct lws *wsi);
/* True when the connection limits refuse this (already counted) connection. */
bool wsq__conn_over_limit(wsq_server_t *srv, struct lws *wsi, wsq_limit_t *which);
wsq_session_t *wsq__session_find(wsq_server_t *srv, uint64_t sid);
void wsq__session_deliver(wsq_server_t *srv, st_item_t *item);
void wsq__session_confirm(wsq_server_t *srv, wsq_wreq_t *req);
void wsq__sessions_resume_publishers(wsq_server_t *srv);
void wsq__sessions_close_all(wsq_server_t *srv, uint16_t code, const char *reason);

/* Writer-request completion that routes the request back to the service thread (to
 * wsq__session_confirm for the session req->user[0]). Use as req->done with arg = srv. */
void wsq__wt_done(wsq_wreq_t *req, void *arg);

/* Publishes: submit a payload to the writer on behalf of session sid (ST). ref is echoed. */
wsq_err wsq__publish(wsq_server_t *srv, uint64_t sid, const char *topic, size_t topic_len,
                     const void *data, size_t len, bool binary, const char *ref);

#endif
