/*
 * The server: storage, the delivery thread, the lws context (libev loop, one vhost per
 * listener), the service thread's mailbox, connection accounting, reload and the shutdown
 * sequence. See core.h for the map of the daemon.
 *
 * Shutdown (SIGTERM/SIGINT): stop accepting; pause every publisher; a writer barrier confirms
 * everything received so far; every client then gets its queued frames and a 1001 close; once all
 * are gone (or limits.shutdown_timeout passes) the consumer thread and the writer are stopped and
 * joined, the mailbox is closed (no thread may call lws_cancel_service after that), and only
 * then is the lws context destroyed, and LMDB closed last.
 */
#include <dirent.h>
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core.h"
#include "gate.h"
#include "http.h"
#include "jwks.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "ws.h"
#include "wsq/clock.h"

#define TICK_US (200 * 1000)
#define ACK_TURN_MIN 8 /* acks in a batch that make it worth its own hand-over */

/* The signal handler's only way to the server: the one process-wide variable of wsqd. */
static wsq_server_t *signal_target;

/* lws keeps pointers to these for the life of the context. */
struct wsq_server_lws {
    lws_sorted_usec_list_t tick;  /* periodic work and the shutdown watch */
    lws_sorted_usec_list_t flush; /* hands batched credit to the consumer thread */
    lws_retry_bo_t retry;         /* ping / idle hang-up policy */
    struct lws_protocols protocols[4];
    struct lws_protocol_vhost_options pvo_default, pvo_raw;
    wsq_server_t *srv;
    char (*names)[32]; /* vhost names, one per listener */
};

static void on_tick(lws_sorted_usec_list_t *sul);

static void flush_ct_pending(wsq_server_t *srv)
{
    ct_cmd_t *h = srv->ct_pending;
    srv->ct_pending = NULL;
    srv->ct_pending_tail = &srv->ct_pending;
    srv->flush_scheduled = false;
    srv->acks_pending = 0;
    srv->ct_batch_gen++;
    if (srv->ct)
        wsq__ct_push(srv->ct, h); /* a stopped delivery thread frees them */
    else
        for (ct_cmd_t *c = h, *nx; c; c = nx) {
            nx = (ct_cmd_t *)c->mail.next;
            wsq__ct_cmd_free(c);
        }
}

/* Session sid is about to defer an ack. A work queue's members each send a burst of acks, one
 * per message, and the service thread reads them connection after connection: handing the
 * acks of one connection over when the next one's begin lets the delivery thread refill the
 * first member while this thread reads the others (a work queue drains 1.5x faster than with
 * one hand-over per burst of socket events). A batch of a few acks waits for the burst's end,
 * so that many sessions acking now and then still cost one hand-over. */
void wsq__ct_ack_turn(wsq_server_t *srv, uint64_t sid)
{
    if (sid != srv->ack_sid && srv->acks_pending >= ACK_TURN_MIN && srv->ct_pending)
        flush_ct_pending(srv);
    srv->ack_sid = sid;
    srv->acks_pending++;
}

static void on_flush(lws_sorted_usec_list_t *sul)
{
    flush_ct_pending(lws_container_of(sul, wsq_server_lws_t, flush)->srv);
}

void wsq__ct_defer(wsq_server_t *srv, ct_cmd_t *cmd)
{
    if (cmd == NULL)
        return;
    cmd->mail.next = NULL;
    *srv->ct_pending_tail = cmd;
    srv->ct_pending_tail = (ct_cmd_t **)&cmd->mail.next;
    if (wsq_mailbox_closed(&srv->inbox)) {
        flush_ct_pending(srv); /* the loop is going away: no timer, hand over now */
        return;
    }
    if (!srv->flush_scheduled && srv->lws && srv->lx) {
        srv->flush_scheduled = true;
        /* runs once the current burst of socket events is handled: one hand-over for all */
        lws_sul_schedule(srv->lws, 0, &srv->lx->flush, on_flush, 0);
    }
}

/* ------------------------------------------------------------------------------------------- */
/* the mailbox */

static void wake_st(void *arg)
{
    wsq_server_t *srv = arg;
    if (srv->lws)
        lws_cancel_service(srv->lws); /* the one lws call other threads may make */
}

static void drop_item(wsq_mail_t *m)
{
    wsq__st_item_free((st_item_t *)m);
}

void wsq__st_push(wsq_server_t *srv, st_item_t *items)
{
    if (items)
        wsq_mailbox_push(&srv->inbox, &items->mail);
}

/* Writer thread, after every batch: hand the batch's confirms to the service thread at once,
 * and tell the consumer thread which topics moved. */
static void on_commit(void *arg, const wsq_commit_info_t *info)
{
    wsq_server_t *srv = arg;
    if (info->err == WSQ_OK) {
        wsq__metrics_commit(&srv->metrics, info);
        /* Healthy again once a commit appends or frees space without refusing anything; a
         * commit that refused publishes for lack of space reports storage_full. */
        bool freed = false;
        for (uint32_t i = 0; i < info->n_topics; i++)
            freed |= info->topics[i].trimmed || info->topics[i].deleted;
        if (info->n_refused_full > 0)
            atomic_store(&srv->storage_err, WSQ_ERR_STORAGE_FULL);
        else if (info->n_appends > 0 || freed)
            atomic_store(&srv->storage_err, WSQ_OK);
    } else if (info->err == WSQ_ERR_STORAGE_FAILED) {
        if (atomic_load(&srv->storage_err) != WSQ_ERR_STORAGE_FAILED) {
            snprintf(srv->storage_detail, sizeof(srv->storage_detail), "%s",
                     info->detail ? info->detail : "");
            atomic_store(&srv->storage_err, WSQ_ERR_STORAGE_FAILED); /* after the detail */
        }
    } else if (info->err == WSQ_ERR_STORAGE_FULL &&
               atomic_load(&srv->storage_err) != WSQ_ERR_STORAGE_FAILED) {
        atomic_store(&srv->storage_err, info->err);
    }
    wsq__wt_commit(srv); /* the batch's confirms go to the service thread at once */
    if (info->n_topics && srv->ct) {
        ct_cmd_t *c = wsq__ct_cmd(CT_COMMIT, 0, 0);
        if (c) {
            c->topics = malloc(info->n_topics * sizeof(*c->topics));
            if (c->topics) {
                memcpy(c->topics, info->topics, info->n_topics * sizeof(*c->topics));
                c->n_topics = info->n_topics;
                wsq__ct_push(srv->ct, c);
            } else {
                free(c);
            }
        }
    }
}

static void retention(void *arg, const char *topic, size_t len, wsq_retention_t *out)
{
    wsq_server_t *srv = arg;
    wsq_config_retention(srv->cfg, topic, len, out);
}

/* ------------------------------------------------------------------------------------------- */
/* shutdown */

/* Shutdown: code and reason go in every WebSocket client's close frame. */
static void begin_shutdown(wsq_server_t *srv, uint16_t code, const char *reason)
{
    if (srv->shutting_down)
        return;
    srv->shutting_down = true;
    srv->shutdown_code = code;
    srv->shutdown_reason = reason;
    wsq__notify("STOPPING=1");
    srv->shutdown_deadline_ns =
        wsq_mono_ns() + srv->cfg->limits.shutdown_timeout_ms * (int64_t)1000000;
    wsq_info_log("shutdown", "phase=begin sessions=%u timeout_ms=%lld", srv->nsessions,
                 (long long)srv->cfg->limits.shutdown_timeout_ms);
    /* no new publishes: everything already received is committed and confirmed first */
    wsq__sessions_pause_all(srv);
    lws_sul_schedule(srv->lws, 0, &srv->lx->tick, on_tick, 20 * 1000); /* watch closely */
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_BARRIER, NULL, 0, NULL, 0, 0);
    if (r) {
        /* routed like a confirm (to sid 0, nobody), so it arrives after every earlier one */
        r->done = wsq__wt_done;
        r->arg = srv;
        r->user[0] = 0;
        if (wsq_store_submit(srv->store, r) != WSQ_OK) {
            wsq_wreq_free(&r);
            wsq__sessions_close_all(srv, code, reason);
        }
    } else {
        wsq__sessions_close_all(srv, code, reason);
    }
}

/* The writer refused a batch for an I/O error (a failed write or fsync): nothing after the
 * last good commit was confirmed, and nothing more will be. wsqd stops with exit status 3 so
 * that its supervisor restarts it on what is really on disk (LMDB reopens at its last durable
 * commit). Clients get 1011 "storage failed" after what is queued for them. */
static void check_storage(wsq_server_t *srv)
{
    if (srv->storage_failed || atomic_load(&srv->storage_err) != WSQ_ERR_STORAGE_FAILED)
        return;
    srv->storage_failed = true;
    wsq_err_log("storage",
                "error=storage_failed path=%s detail=\"%s\" msg=\"a write or fsync failed: "
                "publishes after the last good commit were refused, none of them confirmed. "
                "wsqd stops (exit status 3) to restart on what is on disk\"",
                srv->cfg->storage.path, srv->storage_detail);
    srv->exit_code = 3;
    begin_shutdown(srv, WSQ_CLOSE_INTERNAL, "storage failed");
}

/* Does this commit's confirm list hold the shutdown barrier? */
static bool has_barrier(const st_item_t *it)
{
    if (it->kind != ST_CONFIRMS)
        return false;
    for (const wsq_wreq_t *r = it->reqs; r; r = r->next)
        if (r->op == WSQ_WOP_BARRIER)
            return true;
    return false;
}

static void drain_mailbox(wsq_server_t *srv)
{
    bool confirmed = false;
    for (wsq_mail_t *m = wsq_mailbox_take(&srv->inbox), *nx; m; m = nx) {
        nx = m->next;
        st_item_t *it = (st_item_t *)m;
        bool barrier = has_barrier(it);
        confirmed |= it->kind == ST_CONFIRMS;
        wsq__core_item(srv, it);
        if (barrier) {
            /* everything received before the shutdown is confirmed: now say goodbye */
            wsq_info_log("shutdown", "phase=confirmed");
            wsq__sessions_close_all(srv, srv->shutdown_code, srv->shutdown_reason);
        }
    }
    if (confirmed && srv->paused)
        wsq__sessions_resume_publishers(srv);
}

static bool same_listeners(const wsq_config_t *a, const wsq_config_t *b)
{
    if (a->n_listeners != b->n_listeners)
        return false;
    for (size_t i = 0; i < a->n_listeners; i++) {
        const wsq_listener_conf_t *x = &a->listeners[i], *y = &b->listeners[i];
        if (x->port != y->port || strcmp(x->address, y->address) != 0 ||
            (x->tls_cert == NULL) != (y->tls_cert == NULL))
            return false;
        if (x->tls_cert &&
            (strcmp(x->tls_cert, y->tls_cert) != 0 || strcmp(x->tls_key, y->tls_key) != 0 ||
             (x->tls_ca == NULL) != (y->tls_ca == NULL) ||
             (x->tls_ca && strcmp(x->tls_ca, y->tls_ca) != 0) ||
             x->tls_require_client_cert != y->tls_require_client_cert))
            return false;
    }
    return true;
}

/* SIGHUP: reloads auth, limits, retention and the log level without dropping connections. An
 * invalid file is refused with its error and the config in force stays. */
static void reload(wsq_server_t *srv)
{
    if (srv->cfg_path == NULL) {
        wsq_warn_log("reload", "status=refused reason=\"wsqd runs on the embedded default; "
                               "start it with -c FILE to reload\"");
        return;
    }
    wsq_config_t *n = NULL;
    char err[512];
    wsq__notify("RELOADING=1");
    if (wsq_config_load(srv->cfg_path, &n, err, sizeof(err)) != WSQ_OK) {
        wsq__notify("READY=1");
        atomic_fetch_add_explicit(&srv->metrics.reload_failures, 1, memory_order_relaxed);
        wsq_err_log("reload",
                    "status=refused error=\"%s\" msg=\"the previous config stays in "
                    "force\"",
                    err);
        return;
    }
    wsq_config_t **olds = realloc(srv->old_cfgs, (srv->n_old_cfgs + 1) * sizeof(*olds));
    if (olds == NULL) {
        wsq_config_free(&n);
        wsq__notify("READY=1");
        return;
    }
    srv->old_cfgs = olds;
    const wsq_config_t *old = srv->cfg;
    olds[srv->n_old_cfgs++] = (wsq_config_t *)old; /* alive until exit: pointers into it */
    if (!same_listeners(old, n) || strcmp(old->storage.path, n->storage.path) != 0 ||
        old->storage.sync != n->storage.sync)
        wsq_warn_log("reload", "msg=\"listeners (TLS files included) and storage changes take "
                               "effect at the next restart\"");
    srv->cfg = n;
    if (wsq__jwks_reconfig(&srv->jwks, n) != WSQ_OK)
        wsq_err_log("reload", "msg=\"out of memory: auth.jwt.jwks_url is not fetched\"");
    wsq__log_init(n->log.level, n->log.json);
    wsq_store_retention_changed(srv->store);
    wsq__sessions_reauthorize(srv);
    atomic_fetch_add_explicit(&srv->metrics.reloads, 1, memory_order_relaxed);
    wsq__notify("READY=1");
    wsq_info_log("reload", "status=ok config=%s tokens=%zu", srv->cfg_path, n->auth.n_tokens);
}

void wsq__server_wake(wsq_server_t *srv)
{
    int sig = atomic_exchange(&srv->signal_pending, 0);
    if (sig == SIGHUP)
        reload(srv);
    else if (sig)
        begin_shutdown(srv, WSQ_CLOSE_GOING_AWAY, "server shutdown");
    check_storage(srv);
    drain_mailbox(srv);
}

/* ------------------------------------------------------------------------------------------- */
/* connection accounting: limits.max_connections and max_connections_per_ip */

struct wsq_ip_count {
    struct wsq_ip_count *next;
    uint32_t n;
    char ip[64];
};

static uint32_t ip_bucket(const wsq_server_t *srv, const char *ip)
{
    uint32_t h = 2166136261u;
    for (; *ip; ip++)
        h = (h ^ (unsigned char)*ip) * 16777619u;
    return h & (srv->nips_buckets - 1);
}

bool wsq__conn_opened(wsq_server_t *srv, struct lws *wsi)
{
    if (lws_get_opaque_user_data(wsi))
        return true; /* counted already */
    if (!wsq__gate_open(wsi, srv->cfg->limits.max_header_size))
        return false;
    srv->nconns++;
    if (srv->ips == NULL) {
        srv->nips_buckets = 1024;
        srv->ips = calloc(srv->nips_buckets, sizeof(*srv->ips));
        if (srv->ips == NULL)
            return true;
    }
    char ip[64];
    lws_get_peer_simple(wsi, ip, sizeof(ip));
    struct wsq_ip_count **pp = &srv->ips[ip_bucket(srv, ip)];
    while (*pp && strcmp((*pp)->ip, ip) != 0)
        pp = &(*pp)->next;
    if (*pp == NULL) {
        *pp = calloc(1, sizeof(**pp));
        if (*pp == NULL)
            return true;
        snprintf((*pp)->ip, sizeof((*pp)->ip), "%s", ip);
    }
    (*pp)->n++;
    lws_set_opaque_user_data(wsi, *pp);
    return true;
}

void wsq__conn_closed(wsq_server_t *srv, struct lws *wsi)
{
    wsq__gate_close(wsi);
    struct wsq_ip_count *c = lws_get_opaque_user_data(wsi);
    if (c == NULL)
        return; /* not a counted client connection */
    lws_set_opaque_user_data(wsi, NULL);
    srv->nconns--;
    if (--c->n == 0) {
        for (struct wsq_ip_count **pp = &srv->ips[ip_bucket(srv, c->ip)]; *pp; pp = &(*pp)->next) {
            if (*pp == c) {
                *pp = c->next;
                free(c);
                break;
            }
        }
    }
}

/* Connections are descriptors. Past RLIMIT_NOFILE accept() fails with EMFILE, the listening
 * socket stays readable and lws spins on it, logging every failure; so wsqd keeps its
 * connections below the limit: up to conn_soft() they are served, up to conn_hard() refused
 * with a 503 (that costs a descriptor for a moment), past it closed at once. */
static uint32_t conn_hard(const wsq_server_t *srv)
{
    uint32_t max = srv->cfg->limits.max_connections;
    uint64_t hard = max ? (uint64_t)max + max / 8 + 64 : UINT32_MAX;
    if (srv->fd_conns && hard > srv->fd_conns)
        hard = srv->fd_conns;
    return (uint32_t)hard;
}

static uint32_t conn_soft(const wsq_server_t *srv)
{
    uint32_t max = srv->cfg->limits.max_connections, hard = conn_hard(srv);
    uint32_t fd_soft = srv->fd_conns ? hard - (hard / 16 < 64 ? hard / 16 + 1 : 64) : UINT32_MAX;
    return max && max < fd_soft ? max : fd_soft;
}

/* Counts the descriptors open now (after start-up) against RLIMIT_NOFILE, keeping headroom for
 * what the broker opens later (backups, TLS files, the log on reload). */
static void fd_budget(wsq_server_t *srv)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return;
    uint64_t used = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return;
    while (readdir(d))
        used++;
    closedir(d);
    uint64_t reserve = used + 8;
    uint64_t room = rl.rlim_cur > reserve ? rl.rlim_cur - reserve : 1;
    srv->fd_conns = room > UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)room;
    uint32_t max = srv->cfg->limits.max_connections;
    if (max && conn_soft(srv) < max)
        wsq_warn_log("limits",
                     "msg=\"the descriptor limit (RLIMIT_NOFILE %llu) leaves room for %u "
                     "connections; limits.max_connections is %u\"",
                     (unsigned long long)rl.rlim_cur, conn_soft(srv), max);
}

bool wsq__conn_over_limit(wsq_server_t *srv, struct lws *wsi, wsq_limit_t *which)
{
    const wsq_config_t *cfg = srv->cfg;
    if (srv->nconns > conn_soft(srv)) {
        *which = WSQ_LIM_CONNECTIONS;
        atomic_fetch_add_explicit(&srv->metrics.limit_refusals[*which], 1, memory_order_relaxed);
        return true;
    }
    struct wsq_ip_count *c = lws_get_opaque_user_data(wsi);
    if (cfg->limits.max_connections_per_ip && c && c->n > cfg->limits.max_connections_per_ip) {
        *which = WSQ_LIM_CONNECTIONS_PER_IP;
        atomic_fetch_add_explicit(&srv->metrics.limit_refusals[*which], 1, memory_order_relaxed);
        return true;
    }
    return false;
}

const char *wsq__conn_limit_msg(wsq_limit_t which)
{
    return which == WSQ_LIM_CONNECTIONS
               ? "too many connections (limits.max_connections)"
               : "too many connections from this address (limits.max_connections_per_ip)";
}

int wsq__accept_connection(wsq_server_t *srv, struct lws *wsi)
{
    (void)wsi;
    if (srv->shutting_down)
        return -1;
    /* Far past the limit, refusals themselves would cost descriptors: drop at once. Up to
     * it, the request gets a 503 with a JSON body (wsq__conn_over_limit). */
    if (srv->nconns >= conn_hard(srv)) {
        atomic_fetch_add_explicit(&srv->metrics.limit_refusals[WSQ_LIM_CONNECTIONS], 1,
                                  memory_order_relaxed);
        return -1;
    }
    return 0;
}

static void finish(wsq_server_t *srv)
{
    flush_ct_pending(srv); /* credit still pending */
    wsq_info_log("shutdown", "phase=stop_threads sessions_left=%u", srv->nsessions);
    /* the consumer thread flushes consumer state through the writer, so it stops first */
    wsq__ct_stop(srv->ct);
    wsq_store_stop(srv->store);
    wsq_mailbox_close(&srv->inbox);
    drain_mailbox(srv);
    wsq_info_log("shutdown", "phase=done");
    lws_context_destroy(srv->lws); /* inside the loop: breaks ev_run */
}

static void count_ws(wsq_session_t *s, void *arg)
{
    *(uint32_t *)arg += s->fe->websocket;
}

static void on_tick(lws_sorted_usec_list_t *sul)
{
    wsq_server_t *srv = lws_container_of(sul, wsq_server_lws_t, tick)->srv;
    if (atomic_load(&srv->signal_pending))
        wsq__server_wake(srv);
    check_storage(srv);
    if (srv->shutting_down) {
        uint32_t ws = 0;
        wsq__sessions_each(srv, count_ws, &ws);
        if (ws == 0 || wsq_mono_ns() >= srv->shutdown_deadline_ns) {
            finish(srv);
            return;
        }
        lws_sul_schedule(srv->lws, 0, &srv->lx->tick, on_tick, 20 * 1000);
        return;
    }
    if (srv->paused)
        wsq__sessions_resume_publishers(srv);
    wsq__sessions_expire_tokens(srv, wsq_now_ms());
    wsq__sessions_ping(srv, wsq_mono_ns(), (int64_t)TICK_US * 1000);
    lws_sul_schedule(srv->lws, 0, &srv->lx->tick, on_tick, TICK_US);
}

static void on_signal(int sig)
{
    wsq_server_t *srv = signal_target;
    if (srv == NULL)
        return;
    atomic_store(&srv->signal_pending, sig);
    if (srv->lws && !wsq_mailbox_closed(&srv->inbox))
        lws_cancel_service(srv->lws);
}

/* ------------------------------------------------------------------------------------------- */

static void setup_lws_objects(wsq_server_t *srv)
{
    wsq_server_lws_t *lx = srv->lx;
    const wsq_config_t *cfg = srv->cfg;
    lx->srv = srv;
    lx->names = calloc(cfg->n_listeners, sizeof(*lx->names));
    size_t tx = LWS_PRE + WSQ_WRITE_MAX + 64;
    lx->protocols[0] =
        (struct lws_protocols){"http", wsq__http_callback, sizeof(wsq_session_t *), 0, 0, NULL, 0};
    lx->protocols[1] = (struct lws_protocols){
        WSQ_SUBPROTOCOL, wsq__ws_callback, sizeof(wsq_session_t *), 0, 0, NULL, tx};
    lx->protocols[2] = (struct lws_protocols){
        "wsq.raw", wsq__ws_callback, sizeof(wsq_session_t *), 0, 0, NULL, tx};
    /* protocols[3] stays zero: the terminator */
    /* raw mode is the vhost default: clients that ask for no subprotocol land there */
    lx->pvo_default = (struct lws_protocol_vhost_options){NULL, NULL, "default", ""};
    lx->pvo_raw = (struct lws_protocol_vhost_options){NULL, &lx->pvo_default, "wsq.raw", ""};
    /* Liveness is ours (wsq__sessions_ping): lws 4.1 keeps one timer per connection in a sorted
     * list, and with 10,000 connections a ping round cost ~70% of a core. A zero hangup turns
     * its validity timers off; the zeroed policy must still be given, or lws uses its own. */
    (void)cfg;
    lx->retry.secs_since_valid_ping = 0;
    lx->retry.secs_since_valid_hangup = 0;
}

static void lws_log_emit(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    wsq__log(level == LLL_ERR ? WSQ_LOG_ERROR : WSQ_LOG_WARN, "lws", "\"%.*s\"", (int)n, line);
}

static wsq_err open_store(wsq_server_t *srv)
{
    const wsq_config_t *cfg = srv->cfg;
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = cfg->storage.path;
    o.flags = WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE;
    o.sync = cfg->storage.sync;
    o.map_size_initial = cfg->storage.map_size_initial;
    o.map_size_max = cfg->storage.map_size_max;
    o.max_readers = cfg->storage.max_readers;
    o.batch_max_msgs = cfg->storage.batch_max_messages;
    o.batch_max_bytes = cfg->storage.batch_max_bytes;
    o.trim_chunk = cfg->storage.trim_chunk;
    o.retention = retention;
    o.retention_arg = srv;
    o.on_commit = on_commit;
    o.commit_arg = srv;
    long pid = 0;
    wsq_err err = wsq_store_open(&o, &srv->store, &pid);
    if (err == WSQ_ERR_BUSY)
        wsq_err_log("storage",
                    "path=%s error=busy pid=%ld msg=\"data directory is in use by "
                    "another wsqd or a wsqctl mutation\"",
                    cfg->storage.path, pid);
    else if (err != WSQ_OK)
        wsq_err_log("storage", "path=%s error=%s msg=\"%s\"", cfg->storage.path, wsq_errname(err),
                    wsq_strerror(err));
    else if (wsq_store_format_before(srv->store) &&
             wsq_store_format_before(srv->store) < wsq_store_format(srv->store))
        wsq_info_log("storage",
                     "path=%s format=%u upgraded_from=%u msg=\"upgraded the on-disk format; "
                     "older wsq versions can no longer open this store\"",
                     cfg->storage.path, wsq_store_format(srv->store),
                     wsq_store_format_before(srv->store));
    return err;
}

static bool create_vhosts(wsq_server_t *srv)
{
    const wsq_config_t *cfg = srv->cfg;
    if (srv->lx->names == NULL)
        return false;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const wsq_listener_conf_t *l = &cfg->listeners[i];
        struct lws_context_creation_info vi;
        memset(&vi, 0, sizeof(vi));
        /* lws keeps this pointer for the life of the vhost */
        snprintf(srv->lx->names[i], sizeof(srv->lx->names[i]), "listener%zu", i);
        vi.vhost_name = srv->lx->names[i];
        vi.port = l->port;
        /* lws 4.1 built with IPv6 binds "::" (every interface) when given an IPv4 address; an
         * IPv4 listener must be IPv4 only, or 127.0.0.1 would be reachable from outside. */
        vi.iface = strcmp(l->address, "localhost") == 0 ? "127.0.0.1" : l->address;
        if (strchr(vi.iface, ':') == NULL)
            vi.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
        vi.protocols = srv->lx->protocols;
        vi.pvo = &srv->lx->pvo_raw;
        vi.retry_and_idle_policy = &srv->lx->retry;
        vi.keepalive_timeout = 30;
        vi.timeout_secs = 30;
        if (l->tls_cert) {
            vi.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
            vi.ssl_cert_filepath = l->tls_cert;
            vi.ssl_private_key_filepath = l->tls_key;
            vi.alpn = "http/1.1"; /* never h2: WS over h2 breaks rx flow control and Firefox */
            if (l->tls_ca) {
                vi.ssl_ca_filepath = l->tls_ca;
                if (l->tls_require_client_cert)
                    vi.options |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT;
            }
        }
        struct lws_vhost *vh = lws_create_vhost(srv->lws, &vi);
        if (vh == NULL) {
            wsq_err_log("listen",
                        "address=%s port=%u msg=\"cannot listen (address in use or "
                        "not available, or bad TLS files)\"",
                        l->address, l->port);
            return false;
        }
        int port = lws_get_vhost_listen_port(vh);
        if (port <= 0) {
            wsq_err_log("listen", "address=%s port=%u msg=\"cannot listen on this address\"",
                        l->address, l->port);
            return false;
        }
        wsq_info_log("listening", "address=%s port=%d tls=%s", l->address, port,
                     l->tls_cert ? "yes" : "no");
        if (!wsq_config_loopback_only(cfg) &&
            (cfg->auth.anonymous.publish.n || cfg->auth.anonymous.subscribe.n ||
             cfg->auth.anonymous.admin || cfg->auth.anonymous.metrics))
            wsq_warn_log("security",
                         "msg=\"ANONYMOUS ACCESS IS ENABLED ON A NON-LOOPBACK "
                         "LISTENER: anyone who can reach %s:%d can use it. Set "
                         "auth.anonymous to empty rights and use tokens.\"",
                         l->address, port);
    }
    return true;
}

int wsq__server_run(wsq_config_t *cfg, const char *path)
{
    wsq_server_t *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        wsq_config_free(&cfg);
        return 1;
    }
    srv->cfg = cfg;
    srv->cfg_path = path;
    srv->started_ms = wsq_now_ms();
    srv->exit_code = 0;
    wsq_mailbox_init(&srv->inbox, wake_st, srv, drop_item);
    srv->wt_tail = &srv->wt_head;
    srv->ct_pending_tail = &srv->ct_pending;
    srv->wbuf = malloc(LWS_PRE + WSQ_WRITE_MAX);
    srv->lx = calloc(1, sizeof(*srv->lx));
    signal_target = srv;
    int rc = 1;
    if (srv->wbuf == NULL || srv->lx == NULL || wsq__gate_init() != WSQ_OK)
        goto out;

    int64_t t0 = wsq_mono_ns();
    if (open_store(srv) != WSQ_OK)
        goto out;
    if (wsq__ct_create(srv, &srv->ct) != WSQ_OK || wsq_store_start(srv->store) != WSQ_OK ||
        wsq__ct_start(srv->ct) != WSQ_OK || wsq__jwks_start(srv->cfg, &srv->jwks) != WSQ_OK)
        goto out;

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);
    setup_lws_objects(srv);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_LIBEV |
                   LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE |
                   LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.user = srv;
    info.pt_serv_buf_size = 64 * 1024;
    /* The gate (http_gate.c) refuses heads above max_header_size (at most 63 KiB) before lws
     * sees them; lws's own buffer holds the largest that config could allow, so that a reload
     * that raises the limit still fits, with room for how lws stores a head. */
    info.max_http_header_data = 65535;
    info.count_threads = 1;
    srv->lws = lws_create_context(&info);
    if (srv->lws == NULL) {
        wsq_err_log("lws", "msg=\"cannot create the lws context (is libwebsockets-evlib-ev "
                           "installed?)\"");
        goto stop_threads;
    }
    if (!create_vhosts(srv)) {
        lws_context_destroy(srv->lws);
        srv->lws = NULL;
        goto stop_threads;
    }
    /* Bind the protocols (and the raw-mode "default" pvo) now: lws otherwise does it in its
     * first loop iteration, and an upgrade accepted before that lands in the http protocol,
     * past every upgrade check, and is never served. */
    lws_protocol_init(srv->lws);
    fd_budget(srv);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    lws_sul_schedule(srv->lws, 0, &srv->lx->tick, on_tick, TICK_US);
    wsq__notify("READY=1");
    wsq_info_log("ready", "startup_ms=%lld storage=%s sync=%s",
                 (long long)((wsq_mono_ns() - t0) / 1000000), cfg->storage.path,
                 cfg->storage.sync == WSQ_SYNC_FULL    ? "full"
                 : cfg->storage.sync == WSQ_SYNC_BATCH ? "batch"
                                                       : "none");

    while (lws_service(srv->lws, 0) >= 0 && !wsq_mailbox_closed(&srv->inbox))
        ;
    lws_context_destroy(srv->lws);
    srv->lws = NULL;
    signal_target = NULL;
    rc = srv->exit_code;
    goto out;

stop_threads:
    wsq__ct_stop(srv->ct);
    wsq_store_stop(srv->store);
out:
    wsq__jwks_stop(&srv->jwks);
    flush_ct_pending(srv);
    wsq__ct_destroy(&srv->ct);
    /* confirms that never reached the service thread */
    wsq_mailbox_close(&srv->inbox);
    drain_mailbox(srv);
    for (wsq_wreq_t *r = srv->wt_head, *nx; r; r = nx) {
        nx = r->next;
        wsq_wreq_free(&r);
    }
    wsq_store_close(srv->store);
    signal_target = NULL;
    wsq__gate_fini(); /* lws is gone: nothing reads through the gate any more */
    for (size_t i = 0; i < srv->n_old_cfgs; i++)
        wsq_config_free(&srv->old_cfgs[i]);
    free(srv->old_cfgs);
    wsq_config_t *last = (wsq_config_t *)srv->cfg;
    wsq_config_free(&last);
    if (srv->ips) {
        for (uint32_t b = 0; b < srv->nips_buckets; b++)
            for (struct wsq_ip_count *c = srv->ips[b], *nx; c; c = nx) {
                nx = c->next;
                free(c);
            }
        free(srv->ips);
    }
    free(srv->buckets);
    free(srv->wbuf);
    if (srv->lx)
        free(srv->lx->names);
    free(srv->lx);
    wsq_mailbox_fini(&srv->inbox);
    free(srv);
    return rc;
}
