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
 *
 * This file holds the request queue, the loop, the transaction over a batch, appends, completion,
 * start and stop. The rest of the writer is split by concern (writer.h declares what the parts
 * share): topics.c (the topic cache), consumers.c (consumer requests), retention.c (limits and
 * head trims), jobs.c (purges and topic deletes over many transactions) and space.c (map growth,
 * the reserve, the ballast and shedding on a full store).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc.h"
#include "wsq/clock.h"
#include "writer.h"

#define READER_CHECK_MS 10000

/* --- the request queue ----------------------------------------------------------------------- */

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
        wsq_err err = wsq__wreq_validate(r);
        if (err != WSQ_OK)
            return err;
        n++;
        if (wsq_wop_appends(r->op)) {
            bytes += r->len;
            r->crc = wsq__crc32c(0, r->data, r->len);
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

/* --- one transaction over a batch ------------------------------------------------------- */

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
    wsq__wtopic_t *t = NULL;
    wsq_err err = wsq__wtopic_for(w, r, true, &t);
    if (err != WSQ_OK)
        return err;
    bool dup = false;
    if (r->id_len && ((err = wsq__dedup_find(w, t, r, &dup)) != WSQ_OK || dup))
        return err; /* a repeat within the window: the first one's seq, nothing stored */
    const wsq_retention_t *ret = wsq__retention_policy(w, t);
    if (ret->discard == WSQ_DISCARD_NEW &&
        ((ret->max_messages && t->rec.count >= ret->max_messages) ||
         (ret->max_bytes && t->rec.bytes + r->len > ret->max_bytes)))
        return WSQ_ERR_TOPIC_FULL;
    wsq__wtopic_touch(w, t);
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
    uint32_t user = r->flags & (WSQ_MSG_BINARY | WSQ_MSG_HEADERS);
    wsq__put_le32(p + 8, user | MSG_F_CRC32C | (parted ? MSG_F_PARTS : 0));
    wsq__put_le32(p + 12, wsq__msg_crc_seal(r->crc, ts, user));
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
    if (r->id_len && (err = wsq__dedup_note(w, t, r)) != WSQ_OK)
        return err;
    if (wsq__retention_over(t, now))
        wsq__retention_enqueue(w, t);
    return WSQ_OK;
}

/* The copy in the dead-letter topic and the consumer's acknowledging state, together: the
 * consumer is checked first (nothing is appended for one that is gone), then the copy is
 * appended, and only then is the state put, so that a refused append acknowledges nothing. */
static wsq_err dead_letter(wsq__writer_t *w, wsq_wreq_t *r)
{
    wsq_wreq_t put = *r; /* the consumer half, by topic id (shares r's state: read only) */
    put.op = WSQ_WOP_CONSUMER_PUT;
    put.topic = NULL;
    put.topic_len = 0;
    put.topic_id = r->src_topic_id;
    wsq_err err = wsq__wcons_check_put(w, &put);
    if (err != WSQ_OK)
        return err;
    if ((err = do_append(w, r)) != WSQ_OK)
        return err;
    return wsq__wcons_op(w, &put);
}

/* Undoes the in-memory effects of an aborted transaction. */
static void rollback(wsq__writer_t *w)
{
    wsq__wtopics_rollback(w);
    wsq__jobs_rollback(w);
    wsq__wcons_clear(w);
    w->dedup_next_trim = 0; /* a trim may have been undone: look again */
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
    if (rc != 0) {
        snprintf(w->fatal_detail, sizeof(w->fatal_detail), "begin: %s", mdb_strerror(rc));
        return wsq__mdb_err(rc);
    }
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
        case WSQ_WOP_DEAD_LETTER:
            r->err = dead_letter(w, r);
            break;
        case WSQ_WOP_TOPIC_ENSURE: {
            wsq__wtopic_t *t = NULL;
            r->err = wsq__wtopic_for(w, r, true, &t);
            break;
        }
        case WSQ_WOP_PURGE:
        case WSQ_WOP_TOPIC_DELETE:
            r->err = wsq__job_start(w, r);
            break;
        case WSQ_WOP_BARRIER:
            r->err = WSQ_OK;
            break;
        default:
            r->err = wsq__wcons_op(w, r);
        }
        if (hard(r->err)) {
            err = r->err;
            r->err = WSQ_OK; /* the transaction failed, not the request: it is retried */
            goto abort;
        }
    }
    if ((err = wsq__jobs_run(w)) != WSQ_OK || (err = wsq__retention_run(w)) != WSQ_OK ||
        (err = wsq__dedup_trim(w)) != WSQ_OK || (err = wsq__wtopics_flush(w)) != WSQ_OK ||
        (err = wsq__wcons_flush(w)) != WSQ_OK)
        goto abort;
    mdb_cursor_close(w->mcur);
    w->mcur = NULL;
    mdb_cursor_close(w->pcur);
    w->pcur = NULL;
    int64_t t0 = wsq_mono_ns();
    rc = mdb_txn_commit(w->txn);
    *commit_ns = wsq_mono_ns() - t0;
    w->txn = NULL;
    if (rc == EIO && wsq__space_disk_nearly_full(w))
        rc = ENOSPC; /* LMDB reports a short write ("filesystem full?") as EIO */
    if (rc != 0) {
        w->map_full = rc == MDB_MAP_FULL;
        snprintf(w->fatal_detail, sizeof(w->fatal_detail), "commit: %s", mdb_strerror(rc));
        rollback(w);
        return wsq__mdb_err(rc);
    }
    return WSQ_OK;
abort:
    snprintf(w->fatal_detail, sizeof(w->fatal_detail), "transaction: %s", wsq_strerror(err));
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

/* Commits the batch, growing the map or shedding requests that need space as necessary, then
 * completes every request that is finished. */
static void process(wsq__writer_t *w, wsq_wreq_t *batch)
{
    int64_t commit_ns = 0;
    wsq_err err;
    wsq__full_t full = {.refused = 0};
    for (wsq_wreq_t *r = batch; r; r = r->next) {
        r->err = WSQ_OK;
        if (w->ballast_out && wsq_wop_appends(r->op)) {
            r->err = WSQ_ERR_STORAGE_FULL;
            full.refused++;
        }
    }
    if (w->fatal != WSQ_OK) {
        err = w->fatal;
    } else {
        for (;;) {
            err = run_txn(w, batch, &commit_ns);
            if (err != WSQ_ERR_STORAGE_FULL || !wsq__space_recover(w, batch, &full))
                break;
        }
        if (err == WSQ_ERR_IO || err == WSQ_ERR_PANIC) {
            /* After a failed write or fsync the kernel may have dropped the pages it could not
             * write, and a later fsync may well succeed ("fsyncgate"): retrying, then
             * confirming, could confirm what is gone. The batch is refused, and so is every
             * request after it: the process must restart and re-read what is on disk. */
            w->fatal = WSQ_ERR_STORAGE_FAILED;
            err = WSQ_ERR_STORAGE_FAILED;
        }
        wsq__space_settle(w, &full, err);
    }

    if (err != WSQ_OK) {
        for (wsq_wreq_t *r = batch, *nx; r; r = nx) {
            nx = r->next;
            if (r->err == WSQ_OK)
                r->err = err;
            r->next = NULL;
            wsq__wreq_complete(r);
        }
        /* Fail every job and forget pending trims after an unrecoverable transaction error, so
         * that the writer never spins on work it cannot commit. */
        wsq__jobs_fail(w, err);
        wsq__retention_forget(w);
        if (w->store->opts.on_commit) {
            wsq_commit_info_t info = {.err = err, .txn_id = w->txn_id};
            if (err == WSQ_ERR_STORAGE_FAILED)
                info.detail = w->fatal_detail;
            w->store->opts.on_commit(w->store->opts.commit_arg, &info);
        }
        return;
    }

    /* Committed. Settle the in-memory state, then complete. */
    w->txn_id++;
    uint32_t nappends = 0;
    uint32_t nt = wsq__wtopics_settle(w, &nappends);
    wsq__wcons_clear(w);

    /* Settle the jobs, then complete in submission order: a job that finished in this
     * transaction completes at its request's place in the batch (a later barrier must not
     * overtake it); jobs from earlier batches complete after this batch. */
    uint32_t nreq = 0;
    wsq__jobs_settle(w);
    for (wsq_wreq_t *r = batch, *nx; r; r = nx) {
        nx = r->next;
        bool now = wsq__jobs_release(w, r);
        r->next = NULL;
        if (!now)
            continue; /* still running: completes with its job */
        nreq++;
        wsq__wreq_complete(r);
    }
    nreq += wsq__jobs_complete_done(w);
    if (w->store->opts.on_commit) {
        wsq_commit_info_t info = {
            .err = WSQ_OK,
            .txn_id = w->txn_id,
            .n_requests = nreq,
            .n_appends = nappends,
            .n_refused_full = full.refused,
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
    wsq__retention_scan(w);
    if (!w->ballast && w->fatal == WSQ_OK)
        wsq__space_ballast_take(w);
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
            bytes += wsq_wop_appends(r->op) ? r->len : 0;
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

/* --- start and stop ------------------------------------------------------------------------ */

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
        wsq__wtopic_t *t = calloc(1, sizeof(*t));
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
            err = wsq__jobs_resume_delete(w, t->rec.id);
            free(t);
            if (err != WSQ_OK)
                break;
            continue;
        }
        if ((err = wsq__wtopic_insert(w, t)) != WSQ_OK) {
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
        err = wsq__jobs_sweep_orphans(w);
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
    wsq__space_ballast_take(w);
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
        wsq__wreq_complete(r);
    }
    wsq__jobs_free(w);
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
