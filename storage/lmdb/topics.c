/*
 * The writer's topic cache: every topic record in memory, by id and by name. The writer is the
 * only writer, so its copy is the truth. Each transaction snapshots a topic before first touching
 * it (wsq__wtopic_touch); an aborted transaction restores the snapshots (wsq__wtopics_rollback),
 * so in-memory seqs never run ahead of the disk. Writer thread only.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "wsq/clock.h"
#include "writer.h"

uint32_t wsq__hash_bytes(const void *p, size_t n, uint32_t seed)
{
    const unsigned char *s = p;
    uint32_t h = 2166136261u ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 16777619u;
    }
    return h;
}

static wsq__wtopic_t *topic_by_name(wsq__writer_t *w, const char *name, size_t len)
{
    uint32_t b = wsq__hash_bytes(name, len, 0) & (w->nbuckets - 1);
    for (wsq__wtopic_t *t = w->buckets[b]; t; t = t->hnext)
        if (t->rec.name_len == len && memcmp(t->rec.name, name, len) == 0)
            return t;
    return NULL;
}

wsq__wtopic_t *wsq__wtopic_by_id(wsq__writer_t *w, uint32_t id)
{
    return id < w->cap_id ? w->by_id[id] : NULL;
}

static wsq_err cache_grow(wsq__writer_t *w, uint32_t id)
{
    if (id >= w->cap_id) {
        uint32_t ncap = w->cap_id ? w->cap_id : 64;
        while (ncap <= id)
            ncap *= 2;
        wsq__wtopic_t **p = realloc(w->by_id, ncap * sizeof(*p));
        if (p == NULL)
            return WSQ_ERR_NOMEM;
        memset(p + w->cap_id, 0, (ncap - w->cap_id) * sizeof(*p));
        w->by_id = p;
        w->cap_id = ncap;
    }
    if (w->ntopics + 1 > w->nbuckets) {
        uint32_t nb = w->nbuckets * 2;
        wsq__wtopic_t **nbk = calloc(nb, sizeof(*nbk));
        if (nbk == NULL)
            return WSQ_ERR_NOMEM;
        for (uint32_t i = 0; i < w->nbuckets; i++) {
            for (wsq__wtopic_t *t = w->buckets[i], *nx; t; t = nx) {
                nx = t->hnext;
                uint32_t b = wsq__hash_bytes(t->rec.name, t->rec.name_len, 0) & (nb - 1);
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

wsq_err wsq__wtopic_insert(wsq__writer_t *w, wsq__wtopic_t *t)
{
    wsq_err err = cache_grow(w, t->rec.id);
    if (err != WSQ_OK)
        return err;
    uint32_t b = wsq__hash_bytes(t->rec.name, t->rec.name_len, 0) & (w->nbuckets - 1);
    t->hnext = w->buckets[b];
    w->buckets[b] = t;
    w->by_id[t->rec.id] = t;
    w->ntopics++;
    return WSQ_OK;
}

static void cache_remove(wsq__writer_t *w, wsq__wtopic_t *t)
{
    if (w->last == t)
        w->last = NULL;
    uint32_t b = wsq__hash_bytes(t->rec.name, t->rec.name_len, 0) & (w->nbuckets - 1);
    for (wsq__wtopic_t **pp = &w->buckets[b]; *pp; pp = &(*pp)->hnext) {
        if (*pp == t) {
            *pp = t->hnext;
            break;
        }
    }
    if (t->rec.id < w->cap_id && w->by_id[t->rec.id] == t)
        w->by_id[t->rec.id] = NULL;
    for (wsq__wtopic_t **pp = &w->trim; *pp; pp = &(*pp)->tnext) {
        if (*pp == t) {
            *pp = t->tnext;
            break;
        }
    }
    w->ntopics--;
}

/* Marks t as modified by the running txn, snapshotting it first. */
void wsq__wtopic_touch(wsq__writer_t *w, wsq__wtopic_t *t)
{
    if (!t->txn_dirty) {
        t->saved = t->rec;
        t->txn_dirty = true;
        t->dnext = w->dirty;
        w->dirty = t;
    }
}

static wsq_err topic_create(wsq__writer_t *w, const char *name, size_t len, wsq__wtopic_t **out)
{
    wsq__wtopic_t *t = calloc(1, sizeof(*t));
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
    wsq_err err = wsq__wtopic_insert(w, t);
    if (err != WSQ_OK) {
        free(t);
        return err;
    }
    w->next_topic_id++;
    wsq__wtopic_touch(w, t);
    t->txn_created = true;
    *out = t;
    return WSQ_OK;
}

/* Resolves the topic of r (by id for consumer ops that carry one, else by name), creating it when
 * create is set. */
wsq_err wsq__wtopic_for(wsq__writer_t *w, wsq_wreq_t *r, bool create, wsq__wtopic_t **out)
{
    wsq__wtopic_t *t;
    if (r->topic_id && r->topic_len == 0)
        t = wsq__wtopic_by_id(w, r->topic_id);
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

wsq_err wsq__wtopics_flush(wsq__writer_t *w)
{
    unsigned char buf[TOPIC_REC_HDR + WSQ_TOPIC_MAX];
    for (wsq__wtopic_t *t = w->dirty; t; t = t->dnext) {
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

void wsq__wtopics_rollback(wsq__writer_t *w)
{
    for (wsq__wtopic_t *t = w->dirty, *nx; t; t = nx) {
        nx = t->dnext;
        if (t->txn_created) {
            cache_remove(w, t);
            free(t);
            continue;
        }
        bool queued = t->trim_queued;
        wsq__wtopic_t *tn = t->tnext;
        t->rec = t->saved;
        t->txn_dirty = t->txn_deleted = t->trimmed = false;
        t->appended = 0;
        t->trim_queued = queued;
        t->tnext = tn;
    }
    w->dirty = NULL;
    w->next_topic_id = w->saved_next_topic_id;
}

uint32_t wsq__wtopics_settle(wsq__writer_t *w, uint32_t *nappends)
{
    uint32_t nt = 0;
    for (wsq__wtopic_t *t = w->dirty; t; t = t->dnext)
        nt++;
    if (nt > w->cap_ctopics) {
        wsq_commit_topic_t *p = realloc(w->ctopics, nt * sizeof(*p));
        if (p) {
            w->ctopics = p;
            w->cap_ctopics = nt;
        }
    }
    nt = 0;
    for (wsq__wtopic_t *t = w->dirty, *nx; t; t = nx) {
        nx = t->dnext;
        if (nt < w->cap_ctopics)
            w->ctopics[nt++] = (wsq_commit_topic_t){.id = t->rec.id,
                                                    .first_seq = t->rec.first_seq,
                                                    .next_seq = t->rec.next_seq,
                                                    .appended = t->appended,
                                                    .trimmed = t->trimmed,
                                                    .created = t->txn_created,
                                                    .deleted = t->txn_deleted};
        *nappends += t->appended;
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
    return nt;
}
