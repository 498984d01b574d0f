/*
 * Retention and head removal: which topics are over their limits, and the removal of messages
 * from a topic's head in chunks bounded by the transaction's delete budget. Retention trims and
 * purge jobs (jobs.c) share wsq__trim_head. Writer thread only.
 */
#include <string.h>

#include "writer.h"

const wsq_retention_t *wsq__retention_policy(wsq__writer_t *w, wsq__wtopic_t *t)
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

void wsq__retention_enqueue(wsq__writer_t *w, wsq__wtopic_t *t)
{
    if (!t->trim_queued) {
        t->trim_queued = true;
        t->tnext = w->trim;
        w->trim = t;
    }
}

bool wsq__retention_over(const wsq__wtopic_t *t, int64_t now)
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
wsq_err wsq__trim_head(wsq__writer_t *w, wsq__wtopic_t *t, wsq__trim_mode_t mode, uint64_t upto,
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
    wsq__wtopic_touch(w, t);
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

wsq_err wsq__retention_run(wsq__writer_t *w)
{
    int64_t now = wsq__now(w->store);
    wsq__wtopic_t **pp = &w->trim;
    while (*pp && w->budget > 0) {
        wsq__wtopic_t *t = *pp;
        bool done = true;
        if (!t->txn_deleted) {
            wsq__retention_policy(w, t);
            uint64_t n = 0;
            if (wsq__retention_over(t, now)) {
                wsq_err err = wsq__trim_head(w, t, TRIM_RETENTION, 0, 0, &n, &done);
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

void wsq__retention_scan(wsq__writer_t *w)
{
    int64_t now = wsq__now(w->store);
    if (atomic_exchange(&w->retention_changed, false)) {
        for (uint32_t i = 0; i < w->cap_id; i++)
            if (w->by_id[i])
                w->by_id[i]->ret_valid = false;
    }
    bool any_age = false;
    for (uint32_t i = 0; i < w->cap_id; i++) {
        wsq__wtopic_t *t = w->by_id[i];
        if (t == NULL)
            continue;
        any_age |= wsq__retention_policy(w, t)->max_age_ms > 0;
        if (!t->trim_queued && wsq__retention_over(t, now))
            wsq__retention_enqueue(w, t);
    }
    w->any_age = any_age;
}

void wsq__retention_forget(wsq__writer_t *w)
{
    for (wsq__wtopic_t *t = w->trim, *nx; t; t = nx) {
        nx = t->tnext;
        t->trim_queued = false;
    }
    w->trim = NULL;
}
