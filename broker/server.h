/*
 * The server (server.c): storage, the delivery thread, the lws context (libev loop, one vhost
 * per listener), the ST's mailbox, connection accounting, reload and the shutdown sequence.
 * See core.h for the map of the daemon.
 */
#ifndef WSQ_SERVER_H
#define WSQ_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core.h"
#include "mailbox.h"
#include "metrics.h"
#include "wsq/config.h"
#include "wsq/store.h"

struct lws;
struct lws_context;

typedef struct wsq_server_lws wsq_server_lws_t; /* server.c: lws objects that must outlive vhosts */

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
    struct wsq_jwks *jwks; /* auth.jwt.jwks_url's fetcher (jwks.c), or NULL */
    struct lws_context *lws;
    wsq_server_lws_t *lx;
    wsq_metrics_t metrics;
    int64_t started_ms;
    _Atomic int storage_err;  /* wsq_err of the last failed batch that says storage is not
                               * writable (storage_full, storage_failed); WSQ_OK after a commit */
    char storage_detail[160]; /* storage_failed: what failed (the writer writes it before it
                               * stores storage_err; read after loading storage_err) */
    bool storage_failed;      /* ST: the failure was acted on (log, shutdown, exit status 3) */

    /* The ST's mailbox (CT and WT -> ST). Closed before the context is destroyed: no more
     * lws_cancel_service after that. */
    wsq_mailbox_t inbox;

    /* WT-local list of completed requests, handed over once per commit (writer thread only) */
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
    uint64_t ct_batch_gen; /* counts hand-overs of that batch: a command still in it is open */
    bool flush_scheduled;
    /* The session whose acks were deferred last, and how many seqs the batch acks: when a burst
     * of acks moves on to another connection, the batch goes at once (wsq__ct_ack_turn) */
    uint64_t ack_sid;
    uint32_t acks_pending;
    wsq_session_t *paused;     /* sessions whose rx is off */
    atomic_int signal_pending; /* set by the signal handler: 1 stop, 2 reload */
    bool shutting_down;
    int64_t shutdown_deadline_ns;
    uint16_t shutdown_code; /* the close frame every WebSocket client gets at shutdown */
    const char *shutdown_reason;
    unsigned char *wbuf; /* LWS_PRE + WSQ_WRITE_MAX write buffer (ST) */
    int exit_code;
};

/* Runs the broker until SIGTERM/SIGINT; returns the process exit code. Takes ownership of cfg.
 * path names the file it came from (for SIGHUP reloads), NULL for the embedded default. */
int wsq__server_run(wsq_config_t *cfg, const char *path);

/* ST: drains the mailbox (LWS_CALLBACK_EVENT_WAIT_CANCELLED). */
void wsq__server_wake(wsq_server_t *srv);
/* Any thread: items (a list linked through mail.next) for the service thread. */
void wsq__st_push(wsq_server_t *srv, st_item_t *items);
/* ST: queues a command for the delivery thread, handed over with all others queued during the
 * same loop pass (one lock and one wake-up per pass instead of one per socket write). */
void wsq__ct_defer(wsq_server_t *srv, ct_cmd_t *cmd);
/* ST: session sid is about to defer an ack; hands the batch over first when the acks of
 * another connection fill it (see server.c). */
void wsq__ct_ack_turn(wsq_server_t *srv, uint64_t sid);

/* Connection accounting (ST): FILTER_NETWORK_CONNECTION (0 accepts, nonzero drops), a new TCP
 * client (false: no memory to serve it; close it) and its end. */
int wsq__accept_connection(wsq_server_t *srv, struct lws *wsi);
bool wsq__conn_opened(wsq_server_t *srv, struct lws *wsi);
void wsq__conn_closed(wsq_server_t *srv, struct lws *wsi);
/* True when the connection limits refuse this (already counted) connection. */
bool wsq__conn_over_limit(wsq_server_t *srv, struct lws *wsi, wsq_limit_t *which);
/* The refusal's message for a connection limit: it names the setting. */
const char *wsq__conn_limit_msg(wsq_limit_t which);

#endif
