/*
 * The writer: the only thread that opens write transactions.
 *
 * Loop: wait for requests (or pending work) -> take everything queued, bounded by batch_max_msgs
 * and batch_max_bytes -> one write transaction applies them in order, runs bounded purge/delete
 * jobs and retention trims -> commit with the configured sync -> only then complete each request.
 *
 * Batching needs no timer: requests pile up while the previous commit is in fsync.
 *
 * The writer keeps every topic's record in memory (it is the only writer, so its copy is the
 * truth). Each transaction snapshots a topic before first touching it; an aborted transaction
 * (MDB_MAP_FULL, I/O error) restores the snapshots, so in-memory seqs never run ahead of the disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <zlib.h>

#include "internal.h"
#include "wsq/clock.h"

#define CONS_BUCKETS 1024u
#define READER_CHECK_MS 10000
#define MAX_GROW_STEP (4ull << 30)

typedef struct wtopic {
    wsq__topic_rec_t rec;   /* current state (inside the running txn) */
    wsq__topic_rec_t saved; /* state before the running txn; valid when txn_dirty */
    wsq_retention_t ret;    /* resolved retention policy */
    bool ret_valid;         /* ret resolved since the last retention change */
    bool txn_dirty;         /* modified by the running txn: record must be written */
    bool txn_created;       /* created by the running txn: forget it on abort */
    bool txn_deleted;       /* deleted by the running txn: forget it on commit */
    bool trim_queued;       /* on the writer's trim list */
    bool trimmed;           /* head trimmed in the running txn (for on_commit) */
    uint32_t appended;      /* messages appended by the running txn */
    struct wtopic *hnext;   /* name hash chain */
    struct wtopic *dnext;   /* dirty list */
    struct wtopic *tnext;   /* trim list */
} wtopic_t;

typedef struct wcons {
    uint32_t topic_id;
    uint16_t name_len;
    char name[WSQ_CONSUMER_NAME_MAX + 1];
    wsq_cstate_t cs;
    bool exists;  /* exists (on disk or created in this txn) */
    bool dirty;   /* must be written */
    bool deleted; /* must be deleted */
    struct wcons *hnext;
    struct wcons *lnext;
} wcons_t;

typedef enum { JOB_PURGE, JOB_DELETE_MSGS, JOB_DELETE_CONSUMERS, JOB_DELETE_RECORD } job_kind_t;

typedef struct job {
    wsq_wreq_t *req; /* completed when the job finishes */
    job_kind_t kind; /* current phase */
    job_kind_t saved_kind;
    uint32_t topic_id;    /* topic being purged or deleted */
    uint64_t upto;        /* PURGE_ALL/BEFORE: remove seqs <= upto */
    uint64_t removed;     /* committed so far */
    uint64_t removed_txn; /* in the running txn */
    bool started;         /* first txn done (the request was validated) */
    bool done_txn;        /* finished in the running txn */
    struct job *next;
} job_t;

struct wsq__writer {
    wsq_store_t *store;
    pthread_t thread;
    bool started;

    /* --- shared with submitters, under lock --- */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    wsq_wreq_t *qhead, *qtail;
    bool stopping;
    bool waiting;
    _Atomic uint64_t qmsgs, qbytes;
    _Atomic bool retention_changed;

    /* --- writer thread only --- */
    wtopic_t **by_id; /* index by topic id (ids are never reused) */
    uint32_t cap_id;
    wtopic_t **buckets; /* name hash */
    uint32_t nbuckets;
    uint32_t ntopics;
    uint32_t next_topic_id;
    uint32_t saved_next_topic_id;
    wtopic_t *dirty;
    wtopic_t *trim;
    wcons_t *cbuckets[CONS_BUCKETS];
    wcons_t *clist;
    job_t *jobs;
    wsq_commit_topic_t *ctopics;
    uint32_t cap_ctopics;
    uint64_t txn_id;
    wsq_err fatal; /* set after MDB_PANIC: every later request fails with it */
    int64_t next_reader_check;
    MDB_txn *txn;
    MDB_cursor *mcur;    /* messages cursor of the running txn */
    MDB_cursor *pcur;    /* parts cursor of the running txn */
    unsigned budget;     /* deletes left in the running txn */
    unsigned budget_max; /* deletes per txn; shrinks while the map is full */
    int64_t txn_now;     /* the clock, read once per transaction */
    wtopic_t *last;      /* the topic resolved last (batches often repeat one topic) */
    bool map_full;       /* the last failed txn hit MDB_MAP_FULL (not ENOSPC) */
    bool ballast;        /* data.reserve holds disk space for deletions on a full disk */
    bool ballast_out;    /* it was given up: refuse appends until a commit frees pages */
    bool any_age;        /* some topic has a max_age policy */
};

/* --- requests -------------------------------------------------------------------------------- */

wsq_wreq_t *wsq_wreq_new(wsq_wop_t op, const char *topic, size_t topic_len, const char *consumer,
                         size_t consumer_len, size_t payload_len)
{
    if (topic_len > WSQ_TOPIC_MAX || consumer_len > WSQ_CONSUMER_NAME_MAX ||
        payload_len > SIZE_MAX - sizeof(wsq_wreq_t) - 512)
        return NULL;
    size_t sz = sizeof(wsq_wreq_t) + topic_len + 1 + consumer_len + 1 + payload_len;
    wsq_wreq_t *r = malloc(sz);
    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof(*r));
    char *p = (char *)(r + 1);
    r->op = op;
    r->topic = p;
    r->topic_len = (uint16_t)topic_len;
    if (topic_len)
        memcpy(p, topic, topic_len);
    p[topic_len] = '\0';
    p += topic_len + 1;
    r->consumer = p;
    r->consumer_len = (uint16_t)consumer_len;
    if (consumer_len)
        memcpy(p, consumer, consumer_len);
    p[consumer_len] = '\0';
    p += consumer_len + 1;
    r->data = (unsigned char *)p;
    r->len = payload_len;
    wsq_cstate_init(&r->state);
    return r;
}

void wsq_wreq_free(wsq_wreq_t **reqp)
{
    if (reqp == NULL || *reqp == NULL)
        return;
    wsq_cstate_fini(&(*reqp)->state);
    free(*reqp);
    *reqp = NULL;
}

static bool consumer_name_valid(const char *s, size_t len)
{
    if (len == 0 || len > WSQ_CONSUMER_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

static bool is_consumer_op(wsq_wop_t op)
{
    return (op >= WSQ_WOP_CONSUMER_OPEN && op <= WSQ_WOP_CONSUMER_DELETE) ||
           op == WSQ_WOP_CONSUMER_PUT;
}

static wsq_err validate(const wsq_wreq_t *r)
{
    if (r->op < WSQ_WOP_APPEND || r->op > WSQ_WOP_CONSUMER_PUT)
        return WSQ_ERR_INVAL;
    if (r->op == WSQ_WOP_BARRIER)
        return WSQ_OK;
    bool by_id_ok = is_consumer_op(r->op) && r->op != WSQ_WOP_CONSUMER_OPEN;
    if (!(by_id_ok && r->topic_id != 0) && !wsq_topic_valid(r->topic, r->topic_len))
        return WSQ_ERR_BAD_TOPIC;
    if (is_consumer_op(r->op) && !consumer_name_valid(r->consumer, r->consumer_len))
        return WSQ_ERR_INVAL;
    if (r->op == WSQ_WOP_CONSUMER_PUT && wsq_cstate_check(&r->state) != WSQ_OK)
        return WSQ_ERR_INVAL;
    if (r->op == WSQ_WOP_PURGE &&
        (r->purge_mode < WSQ_PURGE_ALL || r->purge_mode > WSQ_PURGE_OLDER))
        return WSQ_ERR_INVAL;
    if (r->op == WSQ_WOP_APPEND && r->len > 0 && r->data == NULL)
        return WSQ_ERR_INVAL;
    if (r->op == WSQ_WOP_APPEND && r->len > WSQ_MSG_MAX_LEN)
        return WSQ_ERR_TOO_LARGE; /* a parted message records its length in 32 bits */
    return WSQ_OK;
}

wsq_err wsq_store_submit_list(wsq_store_t *store, wsq_wreq_t *head)
{
    if (store == NULL || head == NULL)
        return WSQ_ERR_INVAL;
    wsq__writer_t *w = store->writer;
    if (w == NULL)
        return WSQ_ERR_CLOSED;
    uint64_t n = 0, bytes = 0;
    wsq_wreq_t *tail = NULL;
    for (wsq_wreq_t *r = head; r; r = r->next) {
        wsq_err err = validate(r);
        if (err != WSQ_OK)
            return err;
        n++;
        if (r->op == WSQ_WOP_APPEND) {
            bytes += r->len;
            r->crc = (uint32_t)crc32(0, r->data, (uInt)r->len);
        }
        tail = r;
    }
    pthread_mutex_lock(&w->lock);
    if (!w->started || w->stopping) {
        pthread_mutex_unlock(&w->lock);
        return WSQ_ERR_CLOSED;
    }
    if (w->qtail)
        w->qtail->next = head;
    else
        w->qhead = head;
    w->qtail = tail;
    atomic_fetch_add_explicit(&w->qmsgs, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->qbytes, bytes, memory_order_relaxed);
    bool wake = w->waiting;
    w->waiting = false;
    pthread_mutex_unlock(&w->lock);
    if (wake)
        pthread_cond_signal(&w->cond);
    return WSQ_OK;
}

wsq_err wsq_store_submit(wsq_store_t *store, wsq_wreq_t *req)
{
    if (req == NULL)
        return WSQ_ERR_INVAL;
    req->next = NULL;
    return wsq_store_submit_list(store, req);
}

typedef struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
} waiter_t;

static void call_done(wsq_wreq_t *req, void *arg)
{
    (void)req;
    waiter_t *wt = arg;
    pthread_mutex_lock(&wt->m);
    wt->done = true;
    pthread_cond_signal(&wt->c);
    pthread_mutex_unlock(&wt->m);
}

wsq_err wsq_store_call(wsq_store_t *store, wsq_wreq_t *req)
{
    waiter_t wt = {.done = false};
    pthread_mutex_init(&wt.m, NULL);
    pthread_cond_init(&wt.c, NULL);
    req->done = call_done;
    req->arg = &wt;
    wsq_err err = wsq_store_submit(store, req);
    if (err == WSQ_OK) {
        pthread_mutex_lock(&wt.m);
        while (!wt.done)
            pthread_cond_wait(&wt.c, &wt.m);
        pthread_mutex_unlock(&wt.m);
        err = req->err;
    }
    pthread_cond_destroy(&wt.c);
    pthread_mutex_destroy(&wt.m);
    return err;
}

void wsq_store_queue_depth(wsq_store_t *store, uint64_t *msgs, uint64_t *bytes)
{
    wsq__writer_t *w = store->writer;
    if (msgs)
        *msgs = w ? atomic_load_explicit(&w->qmsgs, memory_order_relaxed) : 0;
    if (bytes)
        *bytes = w ? atomic_load_explicit(&w->qbytes, memory_order_relaxed) : 0;
}

void wsq_store_retention_changed(wsq_store_t *store)
{
    wsq__writer_t *w = store->writer;
    if (w == NULL)
        return;
    atomic_store(&w->retention_changed, true);
    pthread_mutex_lock(&w->lock);
    bool wake = w->waiting;
    w->waiting = false;
    pthread_mutex_unlock(&w->lock);
    if (wake)
        pthread_cond_signal(&w->cond);
}

/* --- topic cache ----------------------------------------------------------------------------- */

static uint32_t hash_bytes(const void *p, size_t n, uint32_t seed)
{
    const unsigned char *s = p;
    uint32_t h = 2166136261u ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 16777619u;
    }
    return h;
}

static wtopic_t *topic_by_name(wsq__writer_t *w, const char *name, size_t len)
{
    uint32_t b = hash_bytes(name, len, 0) & (w->nbuckets - 1);
    for (wtopic_t *t = w->buckets[b]; t; t = t->hnext)
        if (t->rec.name_len == len && memcmp(t->rec.name, name, len) == 0)
            return t;
    return NULL;
}

static wtopic_t *topic_by_id(wsq__writer_t *w, uint32_t id)
{
    return id < w->cap_id ? w->by_id[id] : NULL;
}

static wsq_err cache_grow(wsq__writer_t *w, uint32_t id)
{
    if (id >= w->cap_id) {
        uint32_t ncap = w->cap_id ? w->cap_id : 64;
        while (ncap <= id)
            ncap *= 2;
        wtopic_t **p = realloc(w->by_id, ncap * sizeof(*p));
        if (p == NULL)
            return WSQ_ERR_NOMEM;
        memset(p + w->cap_id, 0, (ncap - w->cap_id) * sizeof(*p));
        w->by_id = p;
        w->cap_id = ncap;
    }
    if (w->ntopics + 1 > w->nbuckets) {
        uint32_t nb = w->nbuckets * 2;
        wtopic_t **nbk = calloc(nb, sizeof(*nbk));
        if (nbk == NULL)
            return WSQ_ERR_NOMEM;
        for (uint32_t i = 0; i < w->nbuckets; i++) {
            for (wtopic_t *t = w->buckets[i], *nx; t; t = nx) {
                nx = t->hnext;
                uint32_t b = hash_bytes(t->rec.name, t->rec.name_len, 0) & (nb - 1);
                t->hnext = nbk[b];
                nbk[b] = t;
            }
        }
        free(w->buckets);
        w->buckets = nbk;
        w->nbuckets = nb;
    }
    return WSQ_OK;
}

static wsq_err cache_insert(wsq__writer_t *w, wtopic_t *t)
{
    wsq_err err = cache_grow(w, t->rec.id);
    if (err != WSQ_OK)
        return err;
    uint32_t b = hash_bytes(t->rec.name, t->rec.name_len, 0) & (w->nbuckets - 1);
    t->hnext = w->buckets[b];
    w->buckets[b] = t;
    w->by_id[t->rec.id] = t;
    w->ntopics++;
    return WSQ_OK;
}

static void cache_remove(wsq__writer_t *w, wtopic_t *t)
{
    if (w->last == t)
        w->last = NULL;
    uint32_t b = hash_bytes(t->rec.name, t->rec.name_len, 0) & (w->nbuckets - 1);
    for (wtopic_t **pp = &w->buckets[b]; *pp; pp = &(*pp)->hnext) {
        if (*pp == t) {
            *pp = t->hnext;
            break;
        }
    }
    if (t->rec.id < w->cap_id && w->by_id[t->rec.id] == t)
        w->by_id[t->rec.id] = NULL;
    for (wtopic_t **pp = &w->trim; *pp; pp = &(*pp)->tnext) {
        if (*pp == t) {
            *pp = t->tnext;
            break;
        }
    }
    w->ntopics--;
}

static const wsq_retention_t *topic_ret(wsq__writer_t *w, wtopic_t *t)
{
    if (!t->ret_valid) {
        memset(&t->ret, 0, sizeof(t->ret));
        if (w->store->opts.retention)
            w->store->opts.retention(w->store->opts.retention_arg, t->rec.name, t->rec.name_len,
                                     &t->ret);
        t->ret_valid = true;
        if (t->ret.max_age_ms > 0)
            w->any_age = true;
    }
    return &t->ret;
}

/* Marks t as modified by the running txn, snapshotting it first. */
static void touch(wsq__writer_t *w, wtopic_t *t)
{
    if (!t->txn_dirty) {
        t->saved = t->rec;
        t->txn_dirty = true;
        t->dnext = w->dirty;
        w->dirty = t;
    }
}

static void trim_enqueue(wsq__writer_t *w, wtopic_t *t)
{
    if (!t->trim_queued) {
        t->trim_queued = true;
        t->tnext = w->trim;
        w->trim = t;
    }
}

static bool over_limits(const wtopic_t *t, int64_t now)
{
    const wsq_retention_t *r = &t->ret;
    if (t->rec.count == 0)
        return false;
    if (r->max_age_ms > 0 && t->rec.first_ts_ms < now - r->max_age_ms)
        return true;
    if (r->discard != WSQ_DISCARD_OLD)
        return false;
    return (r->max_messages && t->rec.count > r->max_messages) ||
           (r->max_bytes && t->rec.bytes > r->max_bytes);
}

static wsq_err topic_create(wsq__writer_t *w, const char *name, size_t len, wtopic_t **out)
{
    wtopic_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return WSQ_ERR_NOMEM;
    int64_t now = wsq__now(w->store);
    t->rec.id = w->next_topic_id;
    do {
        if (getrandom(&t->rec.epoch, sizeof(t->rec.epoch), 0) != sizeof(t->rec.epoch))
            t->rec.epoch = (uint64_t)wsq_mono_ns() * 0x9E3779B97F4A7C15ull;
    } while (t->rec.epoch == 0);
    t->rec.next_seq = 1;
    t->rec.first_seq = 1;
    t->rec.created_ms = now;
    t->rec.name_len = (uint16_t)len;
    memcpy(t->rec.name, name, len);
    t->rec.name[len] = '\0';

    unsigned char idb[4];
    wsq__put_be32(idb, t->rec.id);
    MDB_val k = {len, (void *)name}, v = {4, idb};
    int rc = mdb_put(w->txn, w->store->dbi_names, &k, &v, MDB_NOOVERWRITE);
    if (rc != 0) {
        free(t);
        return wsq__mdb_err(rc);
    }
    wsq_err err = cache_insert(w, t);
    if (err != WSQ_OK) {
        free(t);
        return err;
    }
    w->next_topic_id++;
    touch(w, t);
    t->txn_created = true;
    *out = t;
    return WSQ_OK;
}

/* Resolves the topic of r (by id for consumer ops that carry one, else by name), creating it when
 * create is set. */
static wsq_err topic_for(wsq__writer_t *w, wsq_wreq_t *r, bool create, wtopic_t **out)
{
    wtopic_t *t;
    if (r->topic_id && r->topic_len == 0)
        t = topic_by_id(w, r->topic_id);
    else if (w->last && w->last->rec.name_len == r->topic_len &&
             memcmp(w->last->rec.name, r->topic, r->topic_len) == 0)
        t = w->last;
    else
        t = topic_by_name(w, r->topic, r->topic_len);
    if (t && t->txn_deleted)
        t = NULL;
    if (t == NULL) {
        if (!create)
            return WSQ_ERR_NOTFOUND;
        wsq_err err = topic_create(w, r->topic, r->topic_len, &t);
        if (err != WSQ_OK)
            return err;
        r->created = true;
    }
    r->topic_id = t->rec.id;
    r->topic_epoch = t->rec.epoch;
    w->last = t;
    *out = t;
    return WSQ_OK;
}

/* --- consumer cache (one transaction) ------------------------------------------------------- */

static wsq_err cons_get(wsq__writer_t *w, uint32_t topic_id, const char *name, size_t len,
                        wcons_t **out)
{
    uint32_t b = hash_bytes(name, len, topic_id) & (CONS_BUCKETS - 1);
    for (wcons_t *c = w->cbuckets[b]; c; c = c->hnext) {
        if (c->topic_id == topic_id && c->name_len == len && memcmp(c->name, name, len) == 0) {
            *out = c;
            return WSQ_OK;
        }
    }
    wcons_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return WSQ_ERR_NOMEM;
    c->topic_id = topic_id;
    c->name_len = (uint16_t)len;
    memcpy(c->name, name, len);
    wsq_cstate_init(&c->cs);
    unsigned char kb[CONSUMER_KEY_MAX];
    MDB_val k = {wsq__consumer_key(kb, topic_id, name, len), kb}, v;
    int rc = mdb_get(w->txn, w->store->dbi_consumers, &k, &v);
    if (rc == 0) {
        wsq_err err = wsq_cstate_decode(&c->cs, v.mv_data, v.mv_size);
        if (err != WSQ_OK) {
            wsq_cstate_fini(&c->cs);
            free(c);
            return err;
        }
        c->exists = true;
    } else if (rc != MDB_NOTFOUND) {
        free(c);
        return wsq__mdb_err(rc);
    }
    c->hnext = w->cbuckets[b];
    w->cbuckets[b] = c;
    c->lnext = w->clist;
    w->clist = c;
    *out = c;
    return WSQ_OK;
}

static void cons_clear(wsq__writer_t *w)
{
    for (wcons_t *c = w->clist, *nx; c; c = nx) {
        nx = c->lnext;
        wsq_cstate_fini(&c->cs);
        free(c);
    }
    w->clist = NULL;
    memset(w->cbuckets, 0, sizeof(w->cbuckets));
}

static wsq_err cons_flush(wsq__writer_t *w)
{
    unsigned char kb[CONSUMER_KEY_MAX];
    for (wcons_t *c = w->clist; c; c = c->lnext) {
        MDB_val k = {wsq__consumer_key(kb, c->topic_id, c->name, c->name_len), kb};
        int rc = 0;
        if (c->deleted) {
            rc = mdb_del(w->txn, w->store->dbi_consumers, &k, NULL);
            if (rc == MDB_NOTFOUND)
                rc = 0;
        } else if (c->dirty && c->exists) {
            MDB_val v = {wsq_cstate_encoded_size(&c->cs), NULL};
            rc = mdb_put(w->txn, w->store->dbi_consumers, &k, &v, MDB_RESERVE);
            if (rc == 0)
                wsq_cstate_encode(&c->cs, v.mv_data);
        }
        if (rc != 0)
            return wsq__mdb_err(rc);
    }
    return WSQ_OK;
}

/* --- message head removal ------------------------------------------------------------------- */

typedef enum { TRIM_UPTO, TRIM_OLDER, TRIM_RETENTION } trim_mode_t;

/* Deletes the parts of message (topic_id, seq), adding their number to *n. All of them, whatever
 * the budget: a message goes whole or not at all. */
static wsq_err del_parts(wsq__writer_t *w, uint32_t topic_id, uint64_t seq, unsigned *n)
{
    unsigned char kb[PART_KEY_LEN];
    wsq__part_key(kb, topic_id, seq, 0);
    MDB_val k = {PART_KEY_LEN, kb}, v;
    int rc = mdb_cursor_get(w->pcur, &k, &v, MDB_SET_KEY);
    while (rc == 0 && k.mv_size == PART_KEY_LEN && memcmp(k.mv_data, kb, MSG_KEY_LEN) == 0) {
        if ((rc = mdb_cursor_del(w->pcur, 0)) != 0)
            return wsq__mdb_err(rc);
        (*n)++;
        rc = mdb_cursor_get(w->pcur, &k, &v, MDB_NEXT);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        return wsq__mdb_err(rc);
    return WSQ_OK;
}

/* Removes messages from the head of t while the mode's condition holds and budget lasts.
 * Returns WSQ_OK with *done set when the condition no longer holds (or the topic is empty). */
static wsq_err trim_head(wsq__writer_t *w, wtopic_t *t, trim_mode_t mode, uint64_t upto,
                         int64_t older, uint64_t *removed, bool *done)
{
    *done = false;
    int64_t now = w->txn_now;
    if (t->rec.count == 0) {
        *done = true;
        return WSQ_OK;
    }
    unsigned char kb[MSG_KEY_LEN];
    wsq__msg_key(kb, t->rec.id, t->rec.first_seq);
    MDB_val k = {MSG_KEY_LEN, kb}, v;
    int rc = mdb_cursor_get(w->mcur, &k, &v, MDB_SET_KEY);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? WSQ_ERR_CORRUPT : wsq__mdb_err(rc);
    touch(w, t);
    for (;;) {
        if (t->rec.count == 0) {
            *done = true;
            break;
        }
        if (v.mv_size < MSG_HDR_LEN || k.mv_size != MSG_KEY_LEN ||
            wsq__get_be32(k.mv_data) != t->rec.id ||
            wsq__get_be64((unsigned char *)k.mv_data + 4) != t->rec.first_seq)
            return WSQ_ERR_CORRUPT;
        int64_t ts = (int64_t)wsq__get_le64(v.mv_data);
        uint64_t seq = t->rec.first_seq;
        bool go;
        switch (mode) {
        case TRIM_UPTO:
            go = seq <= upto;
            break;
        case TRIM_OLDER:
            go = ts < older;
            break;
        default: {
            const wsq_retention_t *r = &t->ret;
            go = (r->max_age_ms > 0 && ts < now - r->max_age_ms) ||
                 (r->discard == WSQ_DISCARD_OLD &&
                  ((r->max_messages && t->rec.count > r->max_messages) ||
                   (r->max_bytes && t->rec.bytes > r->max_bytes)));
        }
        }
        if (!go) {
            t->rec.first_ts_ms = ts;
            *done = true;
            break;
        }
        if (w->budget == 0)
            break;
        uint64_t plen;
        if (!wsq__msg_len(&v, &plen))
            return WSQ_ERR_CORRUPT;
        unsigned cost = 1;
        if (wsq__get_le32((unsigned char *)v.mv_data + 8) & MSG_F_PARTS) {
            wsq_err err = del_parts(w, t->rec.id, seq, &cost);
            if (err != WSQ_OK)
                return err;
        }
        rc = mdb_cursor_del(w->mcur, 0);
        if (rc != 0)
            return wsq__mdb_err(rc);
        w->budget -= cost < w->budget ? cost : w->budget;
        (*removed)++;
        t->rec.count--;
        t->rec.bytes -= plen;
        if (mode != TRIM_RETENTION)
            t->rec.purged_upto = t->rec.first_seq;
        t->rec.first_seq++;
        t->trimmed = true;
        if (t->rec.count == 0)
            continue;
        rc = mdb_cursor_get(w->mcur, &k, &v, MDB_NEXT);
        if (rc != 0)
            return rc == MDB_NOTFOUND ? WSQ_ERR_CORRUPT : wsq__mdb_err(rc);
    }
    if (t->rec.count == 0) {
        t->rec.first_seq = t->rec.next_seq;
        t->rec.first_ts_ms = 0;
        t->rec.bytes = 0;
    } else if (!*done) {
        /* stopped by budget: the next message is the new head */
        t->rec.first_ts_ms = (int64_t)wsq__get_le64(v.mv_data);
    }
    return WSQ_OK;
}

/* Deletes every key in dbi starting with the 4-byte prefix id, within budget. */
static wsq_err delete_prefix(wsq__writer_t *w, MDB_dbi dbi, uint32_t id, uint64_t *removed,
                             bool *done)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(w->txn, dbi, &cur);
    if (rc != 0)
        return wsq__mdb_err(rc);
    unsigned char kb[4];
    wsq__put_be32(kb, id);
    MDB_val k = {4, kb}, v;
    *done = false;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size >= 4 && wsq__get_be32(k.mv_data) == id) {
        if (w->budget == 0)
            break;
        if ((rc = mdb_cursor_del(cur, 0)) != 0)
            break;
        w->budget--;
        (*removed)++;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc == 0 && w->budget == 0 && k.mv_size >= 4 && wsq__get_be32(k.mv_data) == id)
        return WSQ_OK; /* more to do */
    if (rc != 0 && rc != MDB_NOTFOUND)
        return wsq__mdb_err(rc);
    *done = true;
    return WSQ_OK;
}

/* --- request processing --------------------------------------------------------------------- */

static bool hard(wsq_err e)
{
    return e == WSQ_ERR_STORAGE_FULL || e == WSQ_ERR_IO || e == WSQ_ERR_PANIC ||
           e == WSQ_ERR_NOMEM || e == WSQ_ERR_CORRUPT || e == WSQ_ERR_PERM;
}

/* Puts a new key, reserving v->mv_size bytes: at the end of the table when it sorts last (the
 * cheap path; at_end says that is likely), else in its place. */
static int put_ordered(MDB_cursor *cur, MDB_val *k, MDB_val *v, bool at_end)
{
    int rc = MDB_KEYEXIST;
    if (at_end)
        rc = mdb_cursor_put(cur, k, v, MDB_APPEND | MDB_RESERVE);
    if (rc == MDB_KEYEXIST)
        rc = mdb_cursor_put(cur, k, v, MDB_NOOVERWRITE | MDB_RESERVE);
    return rc;
}

static wsq_err do_append(wsq__writer_t *w, wsq_wreq_t *r)
{
    wtopic_t *t = NULL;
    wsq_err err = topic_for(w, r, true, &t);
    if (err != WSQ_OK)
        return err;
    const wsq_retention_t *ret = topic_ret(w, t);
    if (ret->discard == WSQ_DISCARD_NEW &&
        ((ret->max_messages && t->rec.count >= ret->max_messages) ||
         (ret->max_bytes && t->rec.bytes + r->len > ret->max_bytes)))
        return WSQ_ERR_TOPIC_FULL;
    touch(w, t);
    int64_t now = w->txn_now;
    int64_t ts = now > t->rec.last_ts_ms ? now : t->rec.last_ts_ms; /* monotonic per topic */
    uint64_t seq = t->rec.next_seq;
    bool parted = MSG_HDR_LEN + (uint64_t)r->len > w->store->part_max;
    unsigned char kb[MSG_KEY_LEN];
    wsq__msg_key(kb, t->rec.id, seq);
    MDB_val k = {MSG_KEY_LEN, kb}, v = {parted ? MSG_PARTS_VAL_LEN : MSG_HDR_LEN + r->len, NULL};
    int rc = put_ordered(w->mcur, &k, &v, t->rec.id + 1 == w->next_topic_id);
    if (rc != 0)
        return rc == MDB_KEYEXIST ? WSQ_ERR_CORRUPT : wsq__mdb_err(rc);
    unsigned char *p = v.mv_data;
    wsq__put_le64(p, (uint64_t)ts);
    wsq__put_le32(p + 8, (r->flags & WSQ_MSG_BINARY) | (parted ? MSG_F_PARTS : 0));
    wsq__put_le32(p + 12, r->crc);
    if (parted) {
        wsq__put_le32(p + MSG_HDR_LEN, (uint32_t)r->len);
        unsigned char pk[PART_KEY_LEN];
        size_t off = 0;
        for (uint32_t part = 0; off < r->len; part++) {
            wsq__part_key(pk, t->rec.id, seq, part);
            size_t n = r->len - off < w->store->part_max ? r->len - off : w->store->part_max;
            k = (MDB_val){PART_KEY_LEN, pk};
            v = (MDB_val){n, NULL};
            if ((rc = put_ordered(w->pcur, &k, &v, true)) != 0)
                return rc == MDB_KEYEXIST ? WSQ_ERR_CORRUPT : wsq__mdb_err(rc);
            memcpy(v.mv_data, r->data + off, n);
            off += n;
        }
    } else if (r->len) {
        memcpy(p + MSG_HDR_LEN, r->data, r->len);
    }
    if (t->rec.count == 0)
        t->rec.first_ts_ms = ts;
    t->rec.next_seq++;
    t->rec.count++;
    t->rec.bytes += r->len;
    t->rec.last_ts_ms = ts;
    t->appended++;
    r->seq = seq;
    r->ts_ms = ts;
    if (over_limits(t, now))
        trim_enqueue(w, t);
    return WSQ_OK;
}

static wsq_err do_consumer(wsq__writer_t *w, wsq_wreq_t *r)
{
    wtopic_t *t = NULL;
    bool open = r->op == WSQ_WOP_CONSUMER_OPEN;
    wsq_err err = topic_for(w, r, open, &t);
    if (err != WSQ_OK)
        return err;
    wcons_t *c = NULL;
    if ((err = cons_get(w, t->rec.id, r->consumer, r->consumer_len, &c)) != WSQ_OK)
        return err;
    int64_t now = w->txn_now;
    if (r->op == WSQ_WOP_CONSUMER_OPEN) {
        if (!c->exists || c->deleted) {
            wsq_cstate_fini(&c->cs);
            uint64_t last = t->rec.next_seq - 1;
            c->cs.ack_floor = r->seq > last ? last : r->seq;
            c->cs.delivered_upto = c->cs.ack_floor;
            c->cs.topic_epoch = t->rec.epoch;
            c->cs.created_ms = now;
            c->exists = true;
            c->deleted = false;
            r->created = true;
        }
        c->cs.last_seen_ms = now;
        c->dirty = true;
        return wsq_cstate_copy(&r->state, &c->cs);
    }
    if (!c->exists || c->deleted)
        return WSQ_ERR_NOTFOUND;
    if (r->op == WSQ_WOP_CONSUMER_DELETE) {
        c->deleted = true;
        c->exists = false;
        return WSQ_OK;
    }
    if (r->op == WSQ_WOP_CONSUMER_PUT) {
        if (r->state.ack_floor >= t->rec.next_seq || r->state.delivered_upto >= t->rec.next_seq)
            return WSQ_ERR_BAD_SEQ;
        if ((err = wsq_cstate_copy(&c->cs, &r->state)) != WSQ_OK)
            return err;
        c->cs.last_seen_ms = now;
        c->dirty = true;
        return WSQ_OK;
    }
    if (r->op != WSQ_WOP_CONSUMER_ACK_UPTO && (r->seq == 0 || r->seq >= t->rec.next_seq))
        return WSQ_ERR_BAD_SEQ;
    switch (r->op) {
    case WSQ_WOP_CONSUMER_ACK:
        err = wsq_cstate_ack(&c->cs, r->seq, NULL);
        break;
    case WSQ_WOP_CONSUMER_ACK_UPTO:
        wsq_cstate_ack_upto(&c->cs, r->seq < t->rec.next_seq ? r->seq : t->rec.next_seq - 1, NULL);
        break;
    case WSQ_WOP_CONSUMER_DELIVERED:
        err = wsq_cstate_delivered(&c->cs, r->seq, &r->count);
        break;
    case WSQ_WOP_CONSUMER_NACK:
        err = wsq_cstate_nack(&c->cs, r->seq, r->ts_ms);
        break;
    default:
        err = WSQ_ERR_INVAL;
    }
    c->cs.last_seen_ms = now;
    c->dirty = true;
    return err;
}

static wsq_err job_start(wsq__writer_t *w, wsq_wreq_t *r)
{
    wtopic_t *t = NULL;
    wsq_err err = topic_for(w, r, false, &t);
    if (err != WSQ_OK)
        return err;
    job_t *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return WSQ_ERR_NOMEM;
    j->req = r;
    j->topic_id = t->rec.id;
    if (r->op == WSQ_WOP_PURGE) {
        j->kind = JOB_PURGE;
        /* Fixed now: messages appended after the purge was accepted are not purged. */
        uint64_t last = t->rec.next_seq - 1;
        j->upto = r->purge_mode == WSQ_PURGE_ALL      ? last
                  : r->purge_mode == WSQ_PURGE_BEFORE ? (r->purge_seq ? r->purge_seq - 1 : 0)
                                                      : 0;
        if (j->upto > last)
            j->upto = last;
    } else {
        /* A deleted topic disappears at once (its name can be created again, with a new epoch);
         * its record stays as a tombstone while its messages and consumers are removed in
         * bounded chunks, so that check and a restart know the leftovers are expected. */
        j->kind = JOB_DELETE_MSGS;
        unsigned char idb[4], buf[TOPIC_REC_HDR + WSQ_TOPIC_MAX];
        wsq__put_be32(idb, t->rec.id);
        wsq__topic_rec_t tomb = t->rec;
        tomb.flags |= TOPIC_DELETING;
        MDB_val nk = {t->rec.name_len, t->rec.name}, ik = {4, idb};
        MDB_val tv = {wsq__topic_rec_encode(&tomb, buf), buf};
        int rc = mdb_del(w->txn, w->store->dbi_names, &nk, NULL);
        if (rc == 0)
            rc = mdb_put(w->txn, w->store->dbi_topics, &ik, &tv, 0);
        if (rc != 0) {
            free(j);
            return wsq__mdb_err(rc);
        }
        j->removed_txn = 0;
        touch(w, t);
        t->txn_deleted = true;
        r->removed = t->rec.count;
    }
    j->saved_kind = j->kind;
    j->next = w->jobs;
    w->jobs = j;
    return WSQ_OK;
}

static wsq_err jobs_run(wsq__writer_t *w)
{
    for (job_t *j = w->jobs; j; j = j->next) {
        if (j->done_txn)
            continue;
        bool done = false;
        wsq_err err = WSQ_OK;
        if (j->kind == JOB_PURGE) {
            wtopic_t *t = topic_by_id(w, j->topic_id);
            if (t == NULL || t->txn_deleted) {
                done = true;
            } else {
                wsq_wreq_t *r = j->req;
                err = r->purge_mode == WSQ_PURGE_OLDER
                          ? trim_head(w, t, TRIM_OLDER, 0, r->purge_ts_ms, &j->removed_txn, &done)
                          : trim_head(w, t, TRIM_UPTO, j->upto, 0, &j->removed_txn, &done);
            }
        } else if (j->kind == JOB_DELETE_MSGS) {
            uint64_t n = 0; /* the parts first: a message never outlives its parts */
            err = delete_prefix(w, w->store->dbi_parts, j->topic_id, &n, &done);
            if (err == WSQ_OK && done) {
                done = false;
                err = delete_prefix(w, w->store->dbi_msgs, j->topic_id, &n, &done);
            }
            if (err == WSQ_OK && done) {
                j->kind = JOB_DELETE_CONSUMERS;
                done = false;
            }
        }
        if (err == WSQ_OK && j->kind == JOB_DELETE_CONSUMERS && !done) {
            uint64_t n = 0;
            err = delete_prefix(w, w->store->dbi_consumers, j->topic_id, &n, &done);
            if (err == WSQ_OK && done) {
                j->kind = JOB_DELETE_RECORD;
                done = false;
            }
        }
        if (err == WSQ_OK && j->kind == JOB_DELETE_RECORD && !done) {
            unsigned char idb[4];
            wsq__put_be32(idb, j->topic_id);
            MDB_val ik = {4, idb};
            int rc = mdb_del(w->txn, w->store->dbi_topics, &ik, NULL);
            if (rc != 0 && rc != MDB_NOTFOUND)
                err = wsq__mdb_err(rc);
            done = err == WSQ_OK;
        }
        if (err != WSQ_OK)
            return err;
        j->done_txn = done;
        if (w->budget == 0)
            break;
    }
    return WSQ_OK;
}

static wsq_err retention_run(wsq__writer_t *w)
{
    int64_t now = wsq__now(w->store);
    wtopic_t **pp = &w->trim;
    while (*pp && w->budget > 0) {
        wtopic_t *t = *pp;
        bool done = true;
        if (!t->txn_deleted) {
            topic_ret(w, t);
            uint64_t n = 0;
            if (over_limits(t, now)) {
                wsq_err err = trim_head(w, t, TRIM_RETENTION, 0, 0, &n, &done);
                if (err != WSQ_OK)
                    return err;
            }
        }
        if (done) {
            *pp = t->tnext;
            t->trim_queued = false;
        } else {
            pp = &t->tnext;
        }
    }
    return WSQ_OK;
}

static wsq_err topics_flush(wsq__writer_t *w)
{
    unsigned char buf[TOPIC_REC_HDR + WSQ_TOPIC_MAX];
    for (wtopic_t *t = w->dirty; t; t = t->dnext) {
        if (t->txn_deleted)
            continue;
        if (memcmp(&t->rec, &t->saved, sizeof(t->rec)) == 0 && !t->txn_created)
            continue;
        unsigned char idb[4];
        wsq__put_be32(idb, t->rec.id);
        MDB_val k = {4, idb}, v = {wsq__topic_rec_encode(&t->rec, buf), buf};
        int rc = mdb_put(w->txn, w->store->dbi_topics, &k, &v, 0);
        if (rc != 0)
            return wsq__mdb_err(rc);
    }
    if (w->next_topic_id != w->saved_next_topic_id) {
        unsigned char nb[4];
        wsq__put_le32(nb, w->next_topic_id);
        MDB_val k = {13, "next_topic_id"}, v = {4, nb};
        int rc = mdb_put(w->txn, w->store->dbi_meta, &k, &v, 0);
        if (rc != 0)
            return wsq__mdb_err(rc);
    }
    return WSQ_OK;
}

/* Undoes the in-memory effects of an aborted transaction. */
static void rollback(wsq__writer_t *w)
{
    for (wtopic_t *t = w->dirty, *nx; t; t = nx) {
        nx = t->dnext;
        if (t->txn_created) {
            cache_remove(w, t);
            free(t);
            continue;
        }
        bool queued = t->trim_queued;
        wtopic_t *tn = t->tnext;
        t->rec = t->saved;
        t->txn_dirty = t->txn_deleted = t->trimmed = false;
        t->appended = 0;
        t->trim_queued = queued;
        t->tnext = tn;
    }
    w->dirty = NULL;
    w->next_topic_id = w->saved_next_topic_id;
    for (job_t **pp = &w->jobs; *pp;) {
        job_t *j = *pp;
        if (!j->started) {
            /* started by this txn: the request is retried as a whole */
            *pp = j->next;
            free(j);
            continue;
        }
        j->removed_txn = 0;
        j->done_txn = false;
        j->kind = j->saved_kind;
        pp = &j->next;
    }
    cons_clear(w);
}

static void complete(wsq_wreq_t *r)
{
    if (r->done)
        r->done(r, r->arg);
    else
        wsq_wreq_free(&r);
}

static bool is_growth(const wsq_wreq_t *r)
{
    return r->op == WSQ_WOP_APPEND || r->op == WSQ_WOP_TOPIC_ENSURE ||
           r->op == WSQ_WOP_CONSUMER_OPEN;
}

static bool set_map(wsq__writer_t *w, uint64_t want)
{
    wsq_store_t *s = w->store;
    pthread_rwlock_wrlock(&s->maplock);
    int rc = mdb_env_set_mapsize(s->env, want); /* never below what is in use */
    if (rc == 0) {
        MDB_envinfo ei;
        mdb_env_info(s->env, &ei);
        atomic_store(&s->map_size, (uint64_t)ei.me_mapsize);
    }
    pthread_rwlock_unlock(&s->maplock);
    return rc == 0;
}

static bool grow_map(wsq__writer_t *w)
{
    wsq_store_t *s = w->store;
    uint64_t cur = atomic_load(&s->map_size);
    if (cur >= s->opts.map_size_max)
        return false;
    uint64_t step = cur < MAX_GROW_STEP ? cur : MAX_GROW_STEP;
    uint64_t want = cur + step > s->opts.map_size_max ? s->opts.map_size_max : cur + step;
    return set_map(w, want);
}

/* Deletes need copy-on-write pages too, so a store filled to map_size_max could never purge its
 * way out. Transactions that only free space may borrow this much above the maximum. */
static uint64_t map_reserve(const wsq_store_t *s)
{
    uint64_t r = s->opts.map_size_max / 64;
    if (r < (1u << 20))
        r = 1u << 20;
    if (r > (64u << 20))
        r = 64u << 20;
    return r;
}

/* A full map can borrow map_reserve() bytes above its maximum for deletions; a full DISK cannot
 * grow the file at all, and LMDB's deletes need fresh pages (copy on write) as soon as the
 * file's free pages are used up. So the writer keeps that much disk in a ballast file,
 * data.reserve, gives it up when a deletion hits ENOSPC, and takes it back once there is room
 * for it twice over. */
static void ballast_path(const wsq__writer_t *w, char *buf, size_t n)
{
    snprintf(buf, n, "%s/data.reserve", w->store->path);
}

static void ballast_take(wsq__writer_t *w)
{
    char path[4096];
    ballast_path(w, path, sizeof(path));
    uint64_t want = map_reserve(w->store);
    struct stat st;
    if (stat(path, &st) == 0 && (uint64_t)st.st_blocks * 512 >= want) {
        w->ballast = true; /* kept from the last run */
        return;
    }
    struct statvfs sv;
    if (statvfs(w->store->path, &sv) != 0 || (uint64_t)sv.f_bavail * sv.f_frsize < 2 * want)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    int rc = posix_fallocate(fd, 0, (off_t)want);
    close(fd);
    if (rc != 0)
        unlink(path);
    else
        w->ballast = true;
}

static bool ballast_release(wsq__writer_t *w)
{
    if (!w->ballast)
        return false;
    char path[4096];
    ballast_path(w, path, sizeof(path));
    w->ballast = false;
    w->ballast_out = true; /* the space is for deletions and acks, never for new messages */
    return unlink(path) == 0;
}

static bool disk_nearly_full(const wsq__writer_t *w)
{
    struct statvfs sv;
    return statvfs(w->store->path, &sv) == 0 &&
           (uint64_t)sv.f_bavail * sv.f_frsize < w->store->opts.batch_max_bytes + (4u << 20);
}

/* Commits a tiny transaction. LMDB reuses pages freed by transaction T only from T+2 on, so after
 * a purge a full store needs one more commit before the freed pages can take new messages. */
static bool tick(wsq__writer_t *w)
{
    MDB_txn *txn;
    if (mdb_txn_begin(w->store->env, NULL, 0, &txn) != 0)
        return false;
    unsigned char b[8];
    wsq__put_le64(b, w->txn_id);
    MDB_val k = {4, "tick"}, v = {8, b};
    if (mdb_put(txn, w->store->dbi_meta, &k, &v, 0) != 0) {
        mdb_txn_abort(txn);
        return false;
    }
    return mdb_txn_commit(txn) == 0;
}

/* Runs one transaction over the batch. Returns WSQ_OK after a commit, or the hard error that
 * aborted it (the batch's requests are then untouched by this attempt). */
static wsq_err run_txn(wsq__writer_t *w, wsq_wreq_t *batch, int64_t *commit_ns)
{
    wsq_store_t *s = w->store;
    int rc = mdb_txn_begin(s->env, NULL, 0, &w->txn);
    if (rc == MDB_MAP_RESIZED) {
        mdb_env_set_mapsize(s->env, 0);
        rc = mdb_txn_begin(s->env, NULL, 0, &w->txn);
    }
    if (rc != 0)
        return wsq__mdb_err(rc);
    w->saved_next_topic_id = w->next_topic_id;
    w->budget = w->budget_max;
    w->map_full = false;
    w->txn_now = wsq__now(s);
    wsq_err err = WSQ_OK;
    if ((rc = mdb_cursor_open(w->txn, s->dbi_msgs, &w->mcur)) != 0 ||
        (rc = mdb_cursor_open(w->txn, s->dbi_parts, &w->pcur)) != 0) {
        err = wsq__mdb_err(rc);
        goto abort;
    }
    for (wsq_wreq_t *r = batch; r; r = r->next) {
        if (r->err != WSQ_OK) /* refused in an earlier attempt (deterministic) or shed */
            continue;
        switch (r->op) {
        case WSQ_WOP_APPEND:
            r->err = do_append(w, r);
            break;
        case WSQ_WOP_TOPIC_ENSURE: {
            wtopic_t *t = NULL;
            r->err = topic_for(w, r, true, &t);
            break;
        }
        case WSQ_WOP_PURGE:
        case WSQ_WOP_TOPIC_DELETE:
            r->err = job_start(w, r);
            break;
        case WSQ_WOP_BARRIER:
            r->err = WSQ_OK;
            break;
        default:
            r->err = do_consumer(w, r);
        }
        if (hard(r->err)) {
            err = r->err;
            r->err = WSQ_OK; /* the transaction failed, not the request: it is retried */
            goto abort;
        }
    }
    if ((err = jobs_run(w)) != WSQ_OK || (err = retention_run(w)) != WSQ_OK ||
        (err = topics_flush(w)) != WSQ_OK || (err = cons_flush(w)) != WSQ_OK)
        goto abort;
    mdb_cursor_close(w->mcur);
    w->mcur = NULL;
    mdb_cursor_close(w->pcur);
    w->pcur = NULL;
    int64_t t0 = wsq_mono_ns();
    rc = mdb_txn_commit(w->txn);
    *commit_ns = wsq_mono_ns() - t0;
    w->txn = NULL;
    if (rc == EIO && disk_nearly_full(w))
        rc = ENOSPC; /* LMDB reports a short write ("filesystem full?") as EIO */
    if (rc != 0) {
        w->map_full = rc == MDB_MAP_FULL;
        rollback(w);
        return wsq__mdb_err(rc);
    }
    return WSQ_OK;
abort:
    if (err == WSQ_ERR_STORAGE_FULL) {
        /* ENOSPC surfaces at commit; inside the txn a full store is always the map */
        w->map_full = true;
    }
    if (w->mcur)
        mdb_cursor_close(w->mcur);
    w->mcur = NULL;
    if (w->pcur)
        mdb_cursor_close(w->pcur);
    w->pcur = NULL;
    mdb_txn_abort(w->txn);
    w->txn = NULL;
    rollback(w);
    return err;
}

/* Fails every job (and forgets pending trims) after an unrecoverable transaction error, so that
 * the writer never spins on work it cannot commit. */
static void fail_jobs(wsq__writer_t *w, wsq_err err)
{
    for (job_t *j = w->jobs, *nx; j; j = nx) {
        nx = j->next;
        j->req->err = err;
        j->req->removed = j->removed;
        j->req->next = NULL;
        complete(j->req);
        free(j);
    }
    w->jobs = NULL;
    for (wtopic_t *t = w->trim, *nx; t; t = nx) {
        nx = t->tnext;
        t->trim_queued = false;
    }
    w->trim = NULL;
}

/* Commits the batch, growing the map or shedding requests that need space as necessary, then
 * completes every request that is finished. */
static void process(wsq__writer_t *w, wsq_wreq_t *batch)
{
    int64_t commit_ns = 0;
    wsq_err err;
    bool reserve = false, ticked = false;
    uint32_t refused = 0;
    for (wsq_wreq_t *r = batch; r; r = r->next) {
        r->err = WSQ_OK;
        if (w->ballast_out && r->op == WSQ_WOP_APPEND) {
            r->err = WSQ_ERR_STORAGE_FULL;
            refused++;
        }
    }
    if (w->fatal != WSQ_OK) {
        err = w->fatal;
    } else {
        for (;;) {
            err = run_txn(w, batch, &commit_ns);
            if (err != WSQ_ERR_STORAGE_FULL)
                break;
            if (w->map_full && grow_map(w))
                continue;
            if (w->map_full && !ticked) {
                ticked = true;
                if (tick(w))
                    continue;
            }
            /* At the maximum (or the disk is full): refuse what needs space, keep what frees it
             * (purges, deletes, acks) and try again; then try smaller delete chunks. Appends go
             * first: opening a consumer on an existing topic takes a few bytes, and readers
             * must go on subscribing while publishes are refused. */
            bool shed = false;
            for (int pass = 0; pass < 2 && !shed; pass++) {
                for (wsq_wreq_t *r = batch; r; r = r->next) {
                    if (r->err == WSQ_OK && (pass == 0 ? r->op == WSQ_WOP_APPEND : is_growth(r))) {
                        r->err = WSQ_ERR_STORAGE_FULL;
                        refused++;
                        shed = true;
                    }
                }
            }
            if (shed)
                continue;
            if (w->map_full && !reserve) {
                reserve = set_map(w, w->store->opts.map_size_max + map_reserve(w->store));
                if (reserve)
                    continue;
            }
            if (!w->map_full && ballast_release(w))
                continue;
            if (w->budget_max > 16) {
                w->budget_max /= 8;
                continue;
            }
            break;
        }
        if (err == WSQ_ERR_PANIC)
            w->fatal = err;
        if (reserve) /* give the reserve back, keeping what the deletions used */
            set_map(w, w->store->opts.map_size_max);
    }
    if (err == WSQ_OK && w->budget_max < w->store->opts.trim_chunk) {
        w->budget_max *= 2; /* space came back: grow the delete chunk again */
        if (w->budget_max > w->store->opts.trim_chunk)
            w->budget_max = w->store->opts.trim_chunk;
    }

    if (err != WSQ_OK) {
        for (wsq_wreq_t *r = batch, *nx; r; r = nx) {
            nx = r->next;
            if (r->err == WSQ_OK)
                r->err = err;
            r->next = NULL;
            complete(r);
        }
        fail_jobs(w, err);
        if (w->store->opts.on_commit) {
            wsq_commit_info_t info = {.err = err, .txn_id = w->txn_id};
            w->store->opts.on_commit(w->store->opts.commit_arg, &info);
        }
        return;
    }

    /* Committed. Settle the in-memory state, then complete. */
    w->txn_id++;
    uint32_t nt = 0, nappends = 0;
    for (wtopic_t *t = w->dirty; t; t = t->dnext)
        nt++;
    if (nt > w->cap_ctopics) {
        wsq_commit_topic_t *p = realloc(w->ctopics, nt * sizeof(*p));
        if (p) {
            w->ctopics = p;
            w->cap_ctopics = nt;
        }
    }
    nt = 0;
    for (wtopic_t *t = w->dirty, *nx; t; t = nx) {
        nx = t->dnext;
        if (nt < w->cap_ctopics)
            w->ctopics[nt++] = (wsq_commit_topic_t){.id = t->rec.id,
                                                    .first_seq = t->rec.first_seq,
                                                    .next_seq = t->rec.next_seq,
                                                    .appended = t->appended,
                                                    .trimmed = t->trimmed,
                                                    .deleted = t->txn_deleted};
        nappends += t->appended;
        if (t->trimmed || t->txn_deleted)
            w->ballast_out = false; /* freed pages in the file take new messages again */
        t->txn_dirty = t->txn_created = t->trimmed = false;
        t->appended = 0;
        if (t->txn_deleted) {
            cache_remove(w, t);
            free(t);
        }
    }
    w->dirty = NULL;
    cons_clear(w);

    /* Settle the jobs, then complete in submission order: a job that finished in this
     * transaction completes at its request's place in the batch (a later barrier must not
     * overtake it); jobs from earlier batches complete after this batch. */
    uint32_t nreq = 0;
    for (job_t *j = w->jobs; j; j = j->next) {
        j->started = true;
        j->removed += j->removed_txn;
        j->removed_txn = 0;
        j->saved_kind = j->kind;
        if (j->done_txn && j->req->op == WSQ_WOP_PURGE)
            j->req->removed = j->removed;
    }
    for (wsq_wreq_t *r = batch, *nx; r; r = nx) {
        nx = r->next;
        bool is_job = (r->op == WSQ_WOP_PURGE || r->op == WSQ_WOP_TOPIC_DELETE) && r->err == WSQ_OK;
        if (is_job) {
            job_t **pp = &w->jobs;
            while (*pp && (*pp)->req != r)
                pp = &(*pp)->next;
            if (*pp == NULL || !(*pp)->done_txn) {
                r->next = NULL;
                continue; /* still running: completes with its job */
            }
            job_t *j = *pp;
            *pp = j->next;
            free(j);
        }
        r->next = NULL;
        nreq++;
        complete(r);
    }
    for (job_t **pp = &w->jobs; *pp;) {
        job_t *j = *pp;
        if (j->done_txn) {
            *pp = j->next;
            j->req->next = NULL;
            nreq++;
            complete(j->req);
            free(j);
        } else {
            pp = &j->next;
        }
    }
    if (w->store->opts.on_commit) {
        wsq_commit_info_t info = {
            .err = WSQ_OK,
            .txn_id = w->txn_id,
            .n_requests = nreq,
            .n_appends = nappends,
            .n_refused_full = refused,
            .n_topics = nt,
            .topics = w->ctopics,
            .queue_msgs = atomic_load_explicit(&w->qmsgs, memory_order_relaxed),
            .queue_bytes = atomic_load_explicit(&w->qbytes, memory_order_relaxed),
            .commit_ns = commit_ns,
        };
        w->store->opts.on_commit(w->store->opts.commit_arg, &info);
    }
}

/* Periodic work between batches: policy reloads, age retention, stale readers. */
static void periodic(wsq__writer_t *w)
{
    int64_t now = wsq__now(w->store);
    if (atomic_exchange(&w->retention_changed, false)) {
        for (uint32_t i = 0; i < w->cap_id; i++)
            if (w->by_id[i])
                w->by_id[i]->ret_valid = false;
    }
    bool any_age = false;
    for (uint32_t i = 0; i < w->cap_id; i++) {
        wtopic_t *t = w->by_id[i];
        if (t == NULL)
            continue;
        any_age |= topic_ret(w, t)->max_age_ms > 0;
        if (!t->trim_queued && over_limits(t, now))
            trim_enqueue(w, t);
    }
    w->any_age = any_age;
    if (!w->ballast && w->fatal == WSQ_OK)
        ballast_take(w);
    int64_t mono = wsq_mono_ns() / 1000000;
    if (mono >= w->next_reader_check) {
        int dead = 0;
        mdb_reader_check(w->store->env, &dead);
        w->next_reader_check = mono + READER_CHECK_MS;
    }
}

static void *writer_main(void *arg)
{
    wsq__writer_t *w = arg;
    wsq_store_t *s = w->store;
    int64_t last_periodic = 0;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        for (;;) {
            if (w->qhead || w->jobs || w->trim)
                break;
            if (w->stopping)
                break;
            /* Sleep until work arrives, or for the next periodic pass. */
            int64_t wait_ms = w->any_age ? 1000 : READER_CHECK_MS;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += wait_ms / 1000;
            w->waiting = true;
            int rc = pthread_cond_timedwait(&w->cond, &w->lock, &ts);
            w->waiting = false;
            if (rc == ETIMEDOUT || atomic_load(&w->retention_changed)) {
                pthread_mutex_unlock(&w->lock);
                periodic(w);
                last_periodic = wsq_mono_ns();
                pthread_mutex_lock(&w->lock);
            }
        }
        if (w->stopping && !w->qhead && !w->jobs) {
            /* pending retention trims can wait for the next start */
            pthread_mutex_unlock(&w->lock);
            break;
        }
        /* Take what is queued, bounded by count and bytes. */
        wsq_wreq_t *head = w->qhead, *last = NULL, *r = head;
        uint64_t n = 0, bytes = 0;
        while (r && n < s->opts.batch_max_msgs && (n == 0 || bytes < s->opts.batch_max_bytes)) {
            n++;
            bytes += r->op == WSQ_WOP_APPEND ? r->len : 0;
            last = r;
            r = r->next;
        }
        if (last) {
            w->qhead = last->next;
            if (w->qhead == NULL)
                w->qtail = NULL;
            last->next = NULL;
        } else {
            head = NULL;
        }
        atomic_fetch_sub_explicit(&w->qmsgs, n, memory_order_relaxed);
        atomic_fetch_sub_explicit(&w->qbytes, bytes, memory_order_relaxed);
        pthread_mutex_unlock(&w->lock);

        if (head || w->jobs || w->trim)
            process(w, head);
        int64_t mono = wsq_mono_ns();
        if (mono - last_periodic > 1000000000) {
            periodic(w);
            last_periodic = mono;
        }
    }
    return NULL;
}

/* Schedules the removal of what topic id left behind (a job that needs no request). */
static wsq_err resume_delete(wsq__writer_t *w, uint32_t id)
{
    for (job_t *j = w->jobs; j; j = j->next)
        if (j->topic_id == id)
            return WSQ_OK;
    job_t *j = calloc(1, sizeof(*j));
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_TOPIC_DELETE, NULL, 0, NULL, 0, 0);
    if (j == NULL || r == NULL) {
        free(j);
        wsq_wreq_free(&r);
        return WSQ_ERR_NOMEM;
    }
    j->req = r;
    j->topic_id = id;
    j->kind = j->saved_kind = JOB_DELETE_MSGS;
    j->started = true;
    j->next = w->jobs;
    w->jobs = j;
    return WSQ_OK;
}

/* Loads every topic record into the cache. */
static wsq_err load_topics(wsq__writer_t *w)
{
    wsq_store_t *s = w->store;
    MDB_txn *txn;
    wsq_err err = wsq__rtxn_begin(s, &txn);
    if (err != WSQ_OK)
        return err;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->dbi_topics, &cur);
    if (rc != 0) {
        wsq__rtxn_end(s, &txn);
        return wsq__mdb_err(rc);
    }
    MDB_val k, v;
    uint32_t max_id = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        wtopic_t *t = calloc(1, sizeof(*t));
        if (t == NULL) {
            err = WSQ_ERR_NOMEM;
            break;
        }
        if ((err = wsq__topic_rec_decode(&t->rec, v.mv_data, v.mv_size)) != WSQ_OK) {
            free(t);
            break;
        }
        if (t->rec.id > max_id)
            max_id = t->rec.id;
        if (t->rec.flags & TOPIC_DELETING) {
            /* a delete interrupted by a stop or a crash: finish it */
            err = resume_delete(w, t->rec.id);
            free(t);
            if (err != WSQ_OK)
                break;
            continue;
        }
        if ((err = cache_insert(w, t)) != WSQ_OK) {
            free(t);
            break;
        }
    }
    mdb_cursor_close(cur);
    if (err == WSQ_OK) {
        MDB_val mk = {13, "next_topic_id"}, mv;
        w->next_topic_id = max_id + 1;
        if (mdb_get(txn, s->dbi_meta, &mk, &mv) == 0 && mv.mv_size == 4) {
            uint32_t n = wsq__get_le32(mv.mv_data);
            if (n > w->next_topic_id)
                w->next_topic_id = n;
        }
        w->saved_next_topic_id = w->next_topic_id;
    }
    wsq__rtxn_end(s, &txn);
    return err;
}

/* Finds messages or consumers whose topic no longer exists (a topic delete interrupted by a
 * crash) and schedules their removal. */
static wsq_err sweep_orphans(wsq__writer_t *w)
{
    wsq_store_t *s = w->store;
    MDB_txn *txn;
    wsq_err err = wsq__rtxn_begin(s, &txn);
    if (err != WSQ_OK)
        return err;
    MDB_dbi dbis[3] = {s->dbi_msgs, s->dbi_parts, s->dbi_consumers};
    for (int d = 0; d < 3 && err == WSQ_OK; d++) {
        MDB_cursor *cur;
        int rc = mdb_cursor_open(txn, dbis[d], &cur);
        if (rc != 0) {
            err = wsq__mdb_err(rc);
            break;
        }
        MDB_val k, v;
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        while (rc == 0 && k.mv_size >= 4) {
            uint32_t id = wsq__get_be32(k.mv_data);
            if (topic_by_id(w, id) == NULL && (err = resume_delete(w, id)) != WSQ_OK)
                break;
            if (id == UINT32_MAX)
                break;
            unsigned char kb[4];
            wsq__put_be32(kb, id + 1);
            k = (MDB_val){4, kb};
            rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        }
        mdb_cursor_close(cur);
    }
    wsq__rtxn_end(s, &txn);
    return err;
}

wsq_err wsq__writer_create(wsq_store_t *store)
{
    wsq__writer_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return WSQ_ERR_NOMEM;
    w->store = store;
    w->nbuckets = 64;
    w->buckets = calloc(w->nbuckets, sizeof(*w->buckets));
    if (w->buckets == NULL) {
        free(w);
        return WSQ_ERR_NOMEM;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->budget_max = store->opts.trim_chunk;
    store->writer = w;
    wsq_err err = load_topics(w);
    if (err == WSQ_OK)
        err = sweep_orphans(w);
    if (err != WSQ_OK) {
        wsq__writer_destroy(store);
        return err;
    }
    return WSQ_OK;
}

wsq_err wsq_store_start(wsq_store_t *store)
{
    wsq__writer_t *w = store ? store->writer : NULL;
    if (w == NULL)
        return WSQ_ERR_INVAL;
    pthread_mutex_lock(&w->lock);
    if (w->started || w->stopping) {
        pthread_mutex_unlock(&w->lock);
        return WSQ_ERR_INVAL;
    }
    w->started = true;
    ballast_take(w);
    w->next_reader_check = wsq_mono_ns() / 1000000 + READER_CHECK_MS;
    int rc = pthread_create(&w->thread, NULL, writer_main, w);
    if (rc != 0)
        w->started = false;
    pthread_mutex_unlock(&w->lock);
    return rc == 0 ? WSQ_OK : WSQ_ERR_NOMEM;
}

void wsq_store_stop(wsq_store_t *store)
{
    wsq__writer_t *w = store ? store->writer : NULL;
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    bool join = w->started && !w->stopping;
    w->stopping = true;
    pthread_mutex_unlock(&w->lock);
    pthread_cond_signal(&w->cond);
    if (join)
        pthread_join(w->thread, NULL);
}

void wsq__writer_destroy(wsq_store_t *store)
{
    wsq__writer_t *w = store->writer;
    wsq_store_stop(store);
    /* Requests queued without a running writer are failed, not leaked. */
    for (wsq_wreq_t *r = w->qhead, *nx; r; r = nx) {
        nx = r->next;
        r->next = NULL;
        r->err = WSQ_ERR_CLOSED;
        complete(r);
    }
    for (job_t *j = w->jobs, *nx; j; j = nx) {
        nx = j->next;
        wsq_wreq_free(&j->req);
        free(j);
    }
    for (uint32_t i = 0; i < w->cap_id; i++)
        free(w->by_id[i]);
    free(w->by_id);
    free(w->buckets);
    free(w->ctopics);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
    store->writer = NULL;
}
