/*
 * Jobs: the work too long for one transaction, purges and topic deletes. A job advances in every
 * transaction by as many deletes as the transaction's budget leaves, and completes its request in
 * the commit that finishes it. Writer thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "writer.h"

typedef enum { JOB_PURGE, JOB_DELETE_MSGS, JOB_DELETE_CONSUMERS, JOB_DELETE_RECORD } job_kind_t;

typedef struct wsq__job {
    wsq_wreq_t *req; /* completed when the job finishes */
    job_kind_t kind; /* current phase */
    job_kind_t saved_kind;
    uint32_t topic_id;    /* topic being purged or deleted */
    uint64_t upto;        /* PURGE_ALL/BEFORE: remove seqs <= upto */
    uint64_t removed;     /* committed so far */
    uint64_t removed_txn; /* in the running txn */
    bool started;         /* first txn done (the request was validated) */
    bool done_txn;        /* finished in the running txn */
    struct wsq__job *next;
} job_t;

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

wsq_err wsq__job_start(wsq__writer_t *w, wsq_wreq_t *r)
{
    wsq__wtopic_t *t = NULL;
    wsq_err err = wsq__wtopic_for(w, r, false, &t);
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
        wsq__wtopic_touch(w, t);
        t->txn_deleted = true;
        r->removed = t->rec.count;
    }
    j->saved_kind = j->kind;
    j->next = w->jobs;
    w->jobs = j;
    return WSQ_OK;
}

wsq_err wsq__jobs_run(wsq__writer_t *w)
{
    for (job_t *j = w->jobs; j; j = j->next) {
        if (j->done_txn)
            continue;
        bool done = false;
        wsq_err err = WSQ_OK;
        if (j->kind == JOB_PURGE) {
            wsq__wtopic_t *t = wsq__wtopic_by_id(w, j->topic_id);
            if (t == NULL || t->txn_deleted) {
                done = true;
            } else {
                wsq_wreq_t *r = j->req;
                err = r->purge_mode == WSQ_PURGE_OLDER
                          ? wsq__trim_head(w, t, TRIM_OLDER, 0, r->purge_ts_ms, &j->removed_txn,
                                           &done)
                          : wsq__trim_head(w, t, TRIM_UPTO, j->upto, 0, &j->removed_txn, &done);
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

void wsq__jobs_rollback(wsq__writer_t *w)
{
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
}

void wsq__jobs_settle(wsq__writer_t *w)
{
    for (job_t *j = w->jobs; j; j = j->next) {
        j->started = true;
        j->removed += j->removed_txn;
        j->removed_txn = 0;
        j->saved_kind = j->kind;
        if (j->done_txn && j->req->op == WSQ_WOP_PURGE)
            j->req->removed = j->removed;
    }
}

bool wsq__jobs_release(wsq__writer_t *w, wsq_wreq_t *r)
{
    bool is_job = (r->op == WSQ_WOP_PURGE || r->op == WSQ_WOP_TOPIC_DELETE) && r->err == WSQ_OK;
    if (!is_job)
        return true;
    job_t **pp = &w->jobs;
    while (*pp && (*pp)->req != r)
        pp = &(*pp)->next;
    if (*pp == NULL || !(*pp)->done_txn)
        return false;
    job_t *j = *pp;
    *pp = j->next;
    free(j);
    return true;
}

uint32_t wsq__jobs_complete_done(wsq__writer_t *w)
{
    uint32_t n = 0;
    for (job_t **pp = &w->jobs; *pp;) {
        job_t *j = *pp;
        if (j->done_txn) {
            *pp = j->next;
            j->req->next = NULL;
            n++;
            wsq__wreq_complete(j->req);
            free(j);
        } else {
            pp = &j->next;
        }
    }
    return n;
}

void wsq__jobs_fail(wsq__writer_t *w, wsq_err err)
{
    for (job_t *j = w->jobs, *nx; j; j = nx) {
        nx = j->next;
        j->req->err = err;
        j->req->removed = j->removed;
        j->req->next = NULL;
        wsq__wreq_complete(j->req);
        free(j);
    }
    w->jobs = NULL;
}

wsq_err wsq__jobs_resume_delete(wsq__writer_t *w, uint32_t id)
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

wsq_err wsq__jobs_sweep_orphans(wsq__writer_t *w)
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
            if (wsq__wtopic_by_id(w, id) == NULL &&
                (err = wsq__jobs_resume_delete(w, id)) != WSQ_OK)
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

void wsq__jobs_free(wsq__writer_t *w)
{
    for (job_t *j = w->jobs, *nx; j; j = nx) {
        nx = j->next;
        wsq_wreq_free(&j->req);
        free(j);
    }
}
