/*
 * The one rule that says where every command works (docs/wsqctl.md, "Broker or local store"):
 *
 *   1. wsqctl asks the broker at the URL who it is (GET /admin/whoami, short timeouts). The URL
 *      is --url, else the first listener of -c, else $WSQ_URL, else http://127.0.0.1:8080.
 *   2. A wsqd answers and serves the store: wsqctl uses it.
 *        - Mutations go through its admin API: wsqd stays the only writer of its store (it caches
 *          topic state, and a second writer would stall its writer; notes/lmdb.md 1.8).
 *        - Reads open the store it names (an absolute path) read-only, on this machine, in short
 *          read transactions. Its data-dir lock must be held by the broker's pid: otherwise the
 *          broker runs elsewhere and the path here is not its store, and reads fail saying so.
 *        - compact refuses: it copies the whole store in one read transaction.
 *   3. Otherwise wsqctl uses the local store: --data, else storage.path of -c, else ./data. Reads
 *      open it read-only. Mutations take its data-dir lock (a wsqd cannot start meanwhile); when
 *      the lock is held, some process runs on the store that wsqctl cannot reach, and the
 *      mutation is refused naming it.
 *
 * "Serves the store": when --data (or an absolute storage.path of -c) names a store, the broker's
 * must be the same directory. A broker named by --url or -c that serves another store is an
 * error (two contradicting answers); one at $WSQ_URL or the default URL is someone else's broker,
 * and the named store is used locally. A relative storage.path of -c is relative to the directory
 * wsqd runs in, which wsqctl cannot know: a broker that answers wins over it.
 *
 * A wsqd that refuses wsqctl's identity (401/403), or a TLS broker whose certificate wsqctl does
 * not trust (-c derives https://127.0.0.1:PORT, which a certificate for the public name does not
 * match), cannot say where its store is. With a named store (--data or -c), wsqctl uses that
 * store locally: reads need no rights, and a mutation then finds the lock held and reports the
 * refusal. Without one, the refusal is the error.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl.h"

/* The outcome of steps 1 and 2 for one command. */
typedef struct {
    ctl_probe_t probe;            /* what answered at the URL */
    bool broker;                  /* a wsqd answered and serves the store: use it */
    ctl_whoami_t who;             /* its answer (probe == CTL_PROBE_WSQD) */
    char why[2 * PATH_MAX + 512]; /* why the broker is not used (a sentence; empty when it is) */
    const char *named;    /* the store --data or an absolute storage.path of -c names, or NULL */
    const char *dir;      /* the store the command uses */
    const char *dir_from; /* where dir came from, for messages */
} locate_t;

static void retention_from_config(void *arg, const char *topic, size_t len, wsq_retention_t *out)
{
    wsq_config_retention(arg, topic, len, out);
}

/* Steps 1 and 2: which broker, which store. Sets c->data_dir. */
static int locate(wsqctl_t *c, locate_t *l)
{
    memset(l, 0, sizeof(*l));
    const char *fallback = "./data", *fallback_from = "the default";
    if (c->data_opt)
        l->named = c->data_opt, l->dir_from = "--data";
    else if (c->cfg && c->cfg->storage.path[0] == '/')
        l->named = c->cfg->storage.path, l->dir_from = "storage.path of -c";
    else if (c->cfg)
        fallback = c->cfg->storage.path, fallback_from = "storage.path of -c";
    bool store_given = c->data_opt || c->cfg;

    wsq__ctl_probe(c, &l->who, &l->probe, l->why, sizeof(l->why));
    switch (l->probe) {
    case CTL_PROBE_WSQD:
        if (l->named && !wsq__ctl_same_dir(l->named, l->who.data)) {
            if (c->url_explicit)
                return wsq__ctl_fail(c, CTL_ERR, "wrong_broker",
                                     "the broker at %s (from %s) serves %s, not %s (from %s): "
                                     "refusing to mix them up; pass the --url of the wsqd that "
                                     "runs on %s",
                                     c->url.base, c->url.why, l->who.data, l->named, l->dir_from,
                                     l->named);
            snprintf(l->why, sizeof(l->why), "the broker at %s serves %s, not %s", c->url.base,
                     l->who.data, l->named);
            break;
        }
        l->broker = true;
        l->why[0] = '\0';
        break;
    case CTL_PROBE_REFUSED:
    case CTL_PROBE_UNTRUSTED:
        if (!store_given) /* no store to fall back on: the refusal is the answer */
            return wsq__ctl_fail(c, CTL_ERR,
                                 l->probe == CTL_PROBE_REFUSED ? "permission_denied" : "tls",
                                 "%s (wsqctl asks the broker where its store is; --data DIR reads "
                                 "a store on this machine without asking)",
                                 l->why);
        break;
    case CTL_PROBE_OTHER:
        if (c->url_explicit)
            return wsq__ctl_fail(c, CTL_ERR, "bad_response",
                                 "the server at %s (from %s) is not a wsqd: %s", c->url.base,
                                 c->url.why, l->why);
        break;
    case CTL_PROBE_NONE:
        if (c->url_opt && !store_given) /* only a broker was named */
            return wsq__ctl_fail(c, CTL_UNREACHABLE, wsq_errname(WSQ_ERR_UNAVAILABLE),
                                 "broker unreachable at %s (from --url): %s", c->url.base, l->why);
        break;
    }
    if (l->broker)
        l->dir = l->who.data, l->dir_from = "the broker";
    else if (l->named)
        l->dir = l->named;
    else
        l->dir = fallback, l->dir_from = fallback_from;
    c->data_explicit = l->broker || store_given;
    free(c->data_dir);
    c->data_dir = strdup(l->dir);
    if (c->data_dir == NULL)
        return wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
    return CTL_OK;
}

/* The -v line that says which path a command took. */
static void say_path(wsqctl_t *c, const locate_t *l)
{
    if (l->broker) {
        wsq__ctl_note(c, "using the broker at %s (store %s)", c->url.base, l->who.data);
        return;
    }
    switch (l->probe) {
    case CTL_PROBE_NONE:
        wsq__ctl_note(c, "no broker at %s; using the store %s", c->url.base, c->data_dir);
        break;
    case CTL_PROBE_REFUSED:
        wsq__ctl_note(c, "the broker at %s refused wsqctl's identity; using the store %s",
                      c->url.base, c->data_dir);
        break;
    case CTL_PROBE_UNTRUSTED:
        wsq__ctl_note(c,
                      "the broker at %s has a TLS certificate wsqctl does not trust; using the "
                      "store %s",
                      c->url.base, c->data_dir);
        break;
    case CTL_PROBE_OTHER:
        wsq__ctl_note(c, "no wsqd at %s (%s); using the store %s", c->url.base, l->why,
                      c->data_dir);
        break;
    case CTL_PROBE_WSQD:
        wsq__ctl_note(c, "%s; using the store %s", l->why, c->data_dir);
        break;
    }
}

/* Reads through the broker: its store must be on this machine, held by its pid. */
static int check_local(wsqctl_t *c, const locate_t *l)
{
    const char *dir = l->who.data;
    char lockf[PATH_MAX + 16], here[128];
    struct stat st;
    snprintf(lockf, sizeof(lockf), "%s/wsq.lock", dir);
    if (stat(dir, &st) != 0) {
        if (errno == EACCES)
            return wsq__ctl_store_fail(c, WSQ_ERR_PERM, "opening the store");
        snprintf(here, sizeof(here), "does not exist");
    } else if (access(lockf, R_OK) != 0 && errno == EACCES) {
        return wsq__ctl_store_fail(c, WSQ_ERR_PERM, "opening the store");
    } else {
        char who[64];
        long pid = wsq__ctl_lock_holder(dir, who, sizeof(who));
        if (pid == l->who.pid)
            return CTL_OK;
        if (pid == 0)
            snprintf(here, sizeof(here), "is not in use (no process holds its wsq.lock)");
        else if (pid < 0)
            snprintf(here, sizeof(here), "is locked by an unknown process");
        else
            snprintf(here, sizeof(here), "is locked by pid %ld (%s)", pid, who);
    }
    return wsq__ctl_fail(c, CTL_ERR, "remote_store",
                         "the broker at %s (wsqd pid %ld) keeps its store at %s, but on this "
                         "machine %s %s: the broker runs on another machine (or in another "
                         "container). Read commands read the store's files: run wsqctl where "
                         "wsqd runs (purge, delete-consumer, import, pub and sub work from here)",
                         c->url.base, l->who.pid, dir, dir, here);
}

static int open_ro(wsqctl_t *c, wsq_store_t **out)
{
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = c->data_dir;
    o.flags = WSQ_STORE_READONLY;
    if (c->cfg) {
        o.max_readers = c->cfg->storage.max_readers;
        o.map_size_max = c->cfg->storage.map_size_max;
    }
    wsq_err err = wsq_store_open(&o, out, NULL);
    if (err != WSQ_OK)
        return wsq__ctl_store_fail(c, err, "opening the store");
    return CTL_OK;
}

/* A mutation finds the local store locked: some process runs on it that wsqctl cannot reach.
 * The message says who holds it and why the broker at the URL is no way to it. */
static int locked(wsqctl_t *c, const locate_t *l, long pid, const char *who)
{
    char holder[128];
    if (pid > 0)
        snprintf(holder, sizeof(holder), "pid %ld (%s)", pid, who);
    else
        snprintf(holder, sizeof(holder), "an unknown process");
    const char *dir = c->data_dir;
    switch (l->probe) {
    case CTL_PROBE_NONE:
        if (c->url_explicit)
            return wsq__ctl_fail(c, CTL_UNREACHABLE, wsq_errname(WSQ_ERR_UNAVAILABLE),
                                 "%s is locked by %s, and no broker answers: broker unreachable "
                                 "at %s (from %s): %s",
                                 dir, holder, c->url.base, c->url.why, l->why);
        return wsq__ctl_fail(c, CTL_ERR, wsq_errname(WSQ_ERR_BUSY),
                             "the store at %s is locked by %s: while a wsqd runs on it, changes "
                             "must go through that wsqd; pass --url http://HOST:PORT or -c CONFIG "
                             "so wsqctl can reach it (no broker answers at %s, %s)",
                             dir, holder, c->url.base, c->url.why);
    case CTL_PROBE_REFUSED:
    case CTL_PROBE_UNTRUSTED:
        return wsq__ctl_fail(c, CTL_ERR,
                             l->probe == CTL_PROBE_REFUSED ? "permission_denied" : "tls",
                             "%s (the store at %s is locked by %s, so changes must go through "
                             "the broker)",
                             l->why, dir, holder);
    case CTL_PROBE_OTHER:
        return wsq__ctl_fail(c, CTL_ERR, wsq_errname(WSQ_ERR_BUSY),
                             "the store at %s is locked by %s: while a wsqd runs on it, changes "
                             "must go through that wsqd; pass --url http://HOST:PORT or -c CONFIG "
                             "so wsqctl can reach it (what answers at %s is not a wsqd: %s)",
                             dir, holder, c->url.base, l->why);
    case CTL_PROBE_WSQD:
    default:
        return wsq__ctl_fail(c, CTL_ERR, wsq_errname(WSQ_ERR_BUSY),
                             "the store at %s is locked by %s: while a wsqd runs on it, changes "
                             "must go through that wsqd, and %s; pass the --url of the wsqd that "
                             "runs on %s, or -c CONFIG",
                             dir, holder, l->why, dir);
    }
}

/* Mutations on the local store: the data-dir lock, then the store's own writer. */
static int open_exclusive(wsqctl_t *c, const locate_t *l, bool create, ctl_target_t *t)
{
    char who[64];
    long pid = wsq__ctl_lock_holder(c->data_dir, who, sizeof(who));
    if (pid != 0)
        return locked(c, l, pid, who);
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = c->data_dir;
    o.flags = WSQ_STORE_EXCLUSIVE | (create ? WSQ_STORE_CREATE : 0);
    o.sync = WSQ_SYNC_FULL;
    if (c->cfg) {
        o.map_size_initial = c->cfg->storage.map_size_initial;
        o.map_size_max = c->cfg->storage.map_size_max;
        o.max_readers = c->cfg->storage.max_readers;
        o.batch_max_msgs = c->cfg->storage.batch_max_messages;
        o.batch_max_bytes = (size_t)c->cfg->storage.batch_max_bytes;
        o.trim_chunk = c->cfg->storage.trim_chunk;
        o.retention = retention_from_config;
        o.retention_arg = c->cfg;
    }
    char df[PATH_MAX + 16];
    struct stat st;
    snprintf(df, sizeof(df), "%s/data.mdb", c->data_dir);
    bool existed = stat(df, &st) == 0;
    long busy = 0;
    wsq_err err = wsq_store_open(&o, &t->store, &busy);
    if (err == WSQ_ERR_BUSY) { /* taken between the look and the open: a wsqd starting? */
        wsq__ctl_lock_holder(c->data_dir, who, sizeof(who));
        return locked(c, l, busy ? busy : -1, who);
    }
    if (err != WSQ_OK)
        return wsq__ctl_store_fail(c, err, "opening the store for writing");
    if (!existed)
        fprintf(stderr, "wsqctl: created a new store at %s\n", c->data_dir);
    else if (wsq_store_format_before(t->store) < wsq_store_format(t->store))
        fprintf(stderr,
                "wsqctl: upgraded the store at %s from on-disk format %u to %u (older wsq "
                "versions can no longer open it)\n",
                c->data_dir, wsq_store_format_before(t->store), wsq_store_format(t->store));
    err = wsq_store_start(t->store);
    if (err != WSQ_OK) {
        wsq_store_close(t->store);
        t->store = NULL;
        return wsq__ctl_store_fail(c, err, "starting the store's writer");
    }
    wsq__ctl_note(c,
                  "via store: no process holds %s/wsq.lock, so wsqctl writes the store "
                  "directly, holding the lock (a wsqd cannot start meanwhile)",
                  c->data_dir);
    return CTL_OK;
}

int wsq__ctl_target(wsqctl_t *c, ctl_need_t need, bool create, ctl_target_t *t)
{
    memset(t, 0, sizeof(*t));
    locate_t l;
    int rc = locate(c, &l);
    if (rc != CTL_OK)
        return rc;
    t->via = l.broker ? CTL_VIA_BROKER : CTL_VIA_STORE;
    t->who = l.who;
    if (l.broker && need == CTL_NEED_READ && (rc = check_local(c, &l)) != CTL_OK)
        return rc;
    say_path(c, &l);
    switch (need) {
    case CTL_NEED_READ:
        return open_ro(c, &t->store);
    case CTL_NEED_WRITE:
        if (!l.broker)
            return open_exclusive(c, &l, create, t);
        if (!l.who.admin)
            return wsq__ctl_fail(c, CTL_ERR, "permission_denied",
                                 "permission denied: identity '%s' has no admin rights on the "
                                 "broker at %s; pass --token (or WSQ_TOKEN) of a token with "
                                 "admin: true",
                                 l.who.identity, c->url.base);
        return CTL_OK;
    case CTL_NEED_HISTORY:
        if (!l.broker)
            return open_ro(c, &t->store);
        t->store = wsq__ctl_broker_store(c, t); /* NULL: what only the store knows is unknown */
        return CTL_OK;
    case CTL_NEED_OFFLINE: {
        char who[64], holder[400];
        long pid = l.broker ? l.who.pid : wsq__ctl_lock_holder(c->data_dir, who, sizeof(who));
        if (l.broker)
            snprintf(holder, sizeof(holder), "the broker at %s (wsqd pid %ld)", c->url.base, pid);
        else if (pid > 0)
            snprintf(holder, sizeof(holder), "pid %ld (%s)", pid, who);
        else
            snprintf(holder, sizeof(holder), "an unknown process");
        if (l.broker || pid != 0)
            return wsq__ctl_fail(c, CTL_ERR, wsq_errname(WSQ_ERR_BUSY),
                                 "%s works only on a store that no wsqd runs on, and %s runs on "
                                 "%s: stop it first. %s copies the whole store in one read "
                                 "transaction, which would keep a running wsqd from reusing "
                                 "freed pages until the copy ends (export backs up a running "
                                 "store)",
                                 c->cmd, holder, c->data_dir, c->cmd);
        return open_ro(c, &t->store);
    }
    }
    return CTL_OK;
}

wsq_store_t *wsq__ctl_broker_store(wsqctl_t *c, const ctl_target_t *t)
{
    wsq_store_t *s = NULL;
    if (t->via != CTL_VIA_BROKER || c->data_dir == NULL ||
        wsq__ctl_lock_holder(c->data_dir, NULL, 0) != t->who.pid)
        return NULL;
    wsq_store_opts_t o;
    wsq_store_opts_init(&o);
    o.path = c->data_dir;
    o.flags = WSQ_STORE_READONLY;
    if (c->cfg)
        o.max_readers = c->cfg->storage.max_readers;
    return wsq_store_open(&o, &s, NULL) == WSQ_OK ? s : NULL;
}

void wsq__ctl_target_fini(ctl_target_t *t)
{
    if (t->store) {
        wsq_store_stop(t->store); /* a no-op for a store whose writer never started */
        wsq_store_close(t->store);
        t->store = NULL;
    }
}

int wsq__ctl_open_ro(wsqctl_t *c, wsq_store_t **out)
{
    ctl_target_t t;
    int rc = wsq__ctl_target(c, CTL_NEED_READ, false, &t);
    if (rc != CTL_OK) {
        wsq__ctl_target_fini(&t);
        return rc;
    }
    *out = t.store;
    return CTL_OK;
}
