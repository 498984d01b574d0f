/*
 * Idempotent publish: an APPEND with an id is stored once per topic within the topic's
 * dedup_window. Two tables (internal.h): the ids, and their expiries in time order, which the
 * writer trims a bounded chunk per transaction. Both change in the transaction that appends, so
 * a confirmed publish's id survives what the message survives (kill -9, power loss with
 * sync: full). Writer thread only.
 */
#include <string.h>

#include "writer.h"

#define DEDUP_KEY_MAX (4 + WSQ_MSG_ID_MAX)
#define EXP_KEY_MAX (8 + 4 + WSQ_MSG_ID_MAX)
#define TRIM_PER_TXN 256 /* expired ids deleted per transaction at most */

static size_t dedup_key(unsigned char *k, uint32_t topic_id, const wsq_wreq_t *r)
{
    wsq__put_be32(k, topic_id);
    memcpy(k + 4, r->id, r->id_len);
    return 4 + (size_t)r->id_len;
}

static size_t exp_key(unsigned char *k, int64_t exp, const unsigned char *dkey, size_t dlen)
{
    wsq__put_be64(k, (uint64_t)exp);
    memcpy(k + 8, dkey, dlen);
    return 8 + dlen;
}

wsq_err wsq__dedup_find(wsq__writer_t *w, wsq__wtopic_t *t, wsq_wreq_t *r, bool *dup)
{
    *dup = false;
    if (r->id_len == 0 || !w->store->has_dedup || wsq__retention_policy(w, t)->dedup_window_ms <= 0)
        return WSQ_OK;
    unsigned char kb[DEDUP_KEY_MAX];
    MDB_val k = {dedup_key(kb, t->rec.id, r), kb}, v;
    int rc = mdb_get(w->txn, w->store->dbi_dedup, &k, &v);
    if (rc == MDB_NOTFOUND)
        return WSQ_OK;
    if (rc != 0)
        return wsq__mdb_err(rc);
    if (v.mv_size != 16)
        return WSQ_ERR_CORRUPT;
    if ((int64_t)wsq__get_le64((unsigned char *)v.mv_data + 8) <= w->txn_now)
        return WSQ_OK; /* expired, not trimmed yet: as if absent */
    r->seq = wsq__get_le64(v.mv_data);
    r->dup = true;
    *dup = true;
    return WSQ_OK;
}

wsq_err wsq__dedup_note(wsq__writer_t *w, wsq__wtopic_t *t, const wsq_wreq_t *r)
{
    int64_t window = r->id_len && w->store->has_dedup ? t->ret.dedup_window_ms : 0;
    if (window <= 0)
        return WSQ_OK;
    wsq_store_t *s = w->store;
    unsigned char kb[DEDUP_KEY_MAX], ek[EXP_KEY_MAX], vb[16];
    size_t klen = dedup_key(kb, t->rec.id, r);
    MDB_val k = {klen, kb}, v;
    int rc = mdb_get(w->txn, s->dbi_dedup, &k, &v);
    if (rc == 0 && v.mv_size == 16) { /* an expired entry: its expiry key goes with it */
        MDB_val ok = {exp_key(ek, (int64_t)wsq__get_le64((unsigned char *)v.mv_data + 8), kb, klen),
                      ek};
        if ((rc = mdb_del(w->txn, s->dbi_dedup_exp, &ok, NULL)) != 0 && rc != MDB_NOTFOUND)
            return wsq__mdb_err(rc);
    } else if (rc != 0 && rc != MDB_NOTFOUND) {
        return wsq__mdb_err(rc);
    }
    int64_t exp = w->txn_now + window;
    if (exp < w->dedup_next_trim)
        w->dedup_next_trim = exp;
    wsq__put_le64(vb, r->seq);
    wsq__put_le64(vb + 8, (uint64_t)exp);
    v = (MDB_val){16, vb};
    if ((rc = mdb_put(w->txn, s->dbi_dedup, &k, &v, 0)) != 0)
        return wsq__mdb_err(rc);
    MDB_val ek2 = {exp_key(ek, exp, kb, klen), ek}, empty = {0, NULL};
    if ((rc = mdb_put(w->txn, s->dbi_dedup_exp, &ek2, &empty, 0)) != 0)
        return wsq__mdb_err(rc);
    return WSQ_OK;
}

wsq_err wsq__dedup_trim(wsq__writer_t *w)
{
    wsq_store_t *s = w->store;
    if (!s->has_dedup || w->txn_now < w->dedup_next_trim)
        return WSQ_OK;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(w->txn, s->dbi_dedup_exp, &cur);
    if (rc != 0)
        return wsq__mdb_err(rc);
    MDB_val k, v;
    unsigned n = 0;
    w->dedup_next_trim = INT64_MAX; /* nothing left to expire, until an id is noted */
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
        if (k.mv_size < 13) {
            rc = MDB_CORRUPTED;
            break;
        }
        int64_t exp = (int64_t)wsq__get_be64(k.mv_data);
        if (exp > w->txn_now || n == TRIM_PER_TXN) {
            w->dedup_next_trim = exp > w->txn_now ? exp : w->txn_now; /* the rest next time */
            rc = 0;
            break;
        }
        MDB_val dk = {k.mv_size - 8, (unsigned char *)k.mv_data + 8};
        MDB_val dv;
        /* the id's entry goes unless a later publish noted it again (another expiry) */
        if ((rc = mdb_get(w->txn, s->dbi_dedup, &dk, &dv)) == 0 && dv.mv_size == 16 &&
            (int64_t)wsq__get_le64((unsigned char *)dv.mv_data + 8) == exp)
            rc = mdb_del(w->txn, s->dbi_dedup, &dk, NULL);
        if ((rc != 0 && rc != MDB_NOTFOUND) || (rc = mdb_cursor_del(cur, 0)) != 0)
            break;
        n++;
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        rc = 0;
    return rc == 0 ? WSQ_OK : wsq__mdb_err(rc);
}
