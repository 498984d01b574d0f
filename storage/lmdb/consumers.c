/*
 * Consumer requests, applied inside the writer's transaction, and the consumer cache they work
 * on. The cache lives for one transaction: a consumer is read from disk once, changed in memory by
 * every request of the batch that names it, and written once at the end (wsq__wcons_flush), so
 * several acks or PUTs to one consumer in a batch cost one write. Writer thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "writer.h"

typedef struct wsq__wcons {
    uint32_t topic_id;
    uint16_t name_len;
    char name[WSQ_CONSUMER_NAME_MAX + 1];
    wsq_cstate_t cs;
    bool exists;  /* exists (on disk or created in this txn) */
    bool dirty;   /* must be written */
    bool deleted; /* must be deleted */
    struct wsq__wcons *hnext;
    struct wsq__wcons *lnext;
} wcons_t;

static wsq_err cons_get(wsq__writer_t *w, uint32_t topic_id, const char *name, size_t len,
                        wcons_t **out)
{
    uint32_t b = wsq__hash_bytes(name, len, topic_id) & (CONS_BUCKETS - 1);
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

void wsq__wcons_clear(wsq__writer_t *w)
{
    for (wcons_t *c = w->clist, *nx; c; c = nx) {
        nx = c->lnext;
        wsq_cstate_fini(&c->cs);
        free(c);
    }
    w->clist = NULL;
    memset(w->cbuckets, 0, sizeof(w->cbuckets));
}

wsq_err wsq__wcons_flush(wsq__writer_t *w)
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

wsq_err wsq__wcons_check_put(wsq__writer_t *w, wsq_wreq_t *r)
{
    wsq__wtopic_t *t = NULL;
    wsq_err err = wsq__wtopic_for(w, r, false, &t);
    if (err != WSQ_OK)
        return err;
    wcons_t *c = NULL;
    if ((err = cons_get(w, t->rec.id, r->consumer, r->consumer_len, &c)) != WSQ_OK)
        return err;
    if (!c->exists || c->deleted)
        return WSQ_ERR_NOTFOUND;
    if (r->state.ack_floor >= t->rec.next_seq || r->state.delivered_upto >= t->rec.next_seq)
        return WSQ_ERR_BAD_SEQ;
    return WSQ_OK;
}

wsq_err wsq__wcons_op(wsq__writer_t *w, wsq_wreq_t *r)
{
    wsq__wtopic_t *t = NULL;
    bool open = r->op == WSQ_WOP_CONSUMER_OPEN;
    wsq_err err = wsq__wtopic_for(w, r, open, &t);
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
            c->cs.flags = r->flags & WSQ_CSTATE_SHARED;
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
