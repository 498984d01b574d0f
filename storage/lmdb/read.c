/* Reads: every function here runs in its own short read transaction and never keeps it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "internal.h"

static wsq_err lookup_in(MDB_txn *txn, wsq_store_t *store, const char *name, size_t len,
                         wsq__topic_rec_t *rec)
{
    MDB_val k = {len, (void *)name}, v;
    int rc = mdb_get(txn, store->dbi_names, &k, &v);
    if (rc != 0)
        return wsq__mdb_err(rc);
    if (v.mv_size != 4)
        return WSQ_ERR_CORRUPT;
    return wsq__topic_load(txn, store, wsq__get_be32(v.mv_data), rec);
}

wsq_err wsq_store_topic_lookup(wsq_store_t *store, const char *name, size_t len,
                               wsq_topic_info_t *out)
{
    if (!wsq_topic_valid(name, len))
        return WSQ_ERR_BAD_TOPIC;
    MDB_txn *txn;
    wsq_err err = wsq__rtxn_begin(store, &txn);
    if (err != WSQ_OK)
        return err;
    wsq__topic_rec_t rec;
    err = lookup_in(txn, store, name, len, &rec);
    wsq__rtxn_end(store, &txn);
    if (err == WSQ_OK)
        wsq__topic_info_from_rec(out, &rec);
    return err;
}

wsq_err wsq_store_topic_get(wsq_store_t *store, uint32_t id, wsq_topic_info_t *out)
{
    MDB_txn *txn;
    wsq_err err = wsq__rtxn_begin(store, &txn);
    if (err != WSQ_OK)
        return err;
    wsq__topic_rec_t rec;
    err = wsq__topic_load(txn, store, id, &rec);
    wsq__rtxn_end(store, &txn);
    if (err == WSQ_OK)
        wsq__topic_info_from_rec(out, &rec);
    return err;
}

wsq_err wsq_store_topic_list(wsq_store_t *store, const char *after, unsigned max,
                             wsq_topic_info_t *out, unsigned *n)
{
    *n = 0;
    MDB_txn *txn;
    wsq_err err = wsq__rtxn_begin(store, &txn);
    if (err != WSQ_OK)
        return err;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, store->dbi_names, &cur);
    if (rc != 0) {
        wsq__rtxn_end(store, &txn);
        return wsq__mdb_err(rc);
    }
    MDB_val k, v;
    if (after && after[0]) {
        k = (MDB_val){strlen(after), (void *)after};
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && k.mv_size == strlen(after) && memcmp(k.mv_data, after, k.mv_size) == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    while (rc == 0 && *n < max) {
        wsq__topic_rec_t rec;
        if (v.mv_size != 4) {
            err = WSQ_ERR_CORRUPT;
            break;
        }
        if ((err = wsq__topic_load(txn, store, wsq__get_be32(v.mv_data), &rec)) != WSQ_OK)
            break;
        wsq__topic_info_from_rec(&out[(*n)++], &rec);
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (err == WSQ_OK && rc != 0 && rc != MDB_NOTFOUND)
        err = wsq__mdb_err(rc);
    mdb_cursor_close(cur);
    wsq__rtxn_end(store, &txn);
    return err;
}

static void part_copy(void *arg, const void *data, size_t len)
{
    unsigned char **at = arg;
    memcpy(*at, data, len);
    *at += len;
}

/* Puts the parts of a parted payload together in *buf (grown as needed). */
static wsq_err assemble(MDB_txn *txn, wsq_store_t *store, uint32_t topic_id, uint64_t seq,
                        uint64_t len, unsigned char **buf, size_t *cap)
{
    if (len > *cap) {
        unsigned char *nb = realloc(*buf, len);
        if (nb == NULL)
            return WSQ_ERR_NOMEM;
        *buf = nb;
        *cap = len;
    }
    unsigned char *at = *buf;
    return wsq__parts_walk(txn, store, topic_id, seq, len, part_copy, &at);
}

wsq_err wsq_store_read(wsq_store_t *store, uint32_t topic_id, uint64_t from, uint32_t max_count,
                       uint64_t max_bytes, wsq_read_fn fn, void *arg, wsq_read_info_t *info)
{
    wsq_read_info_t local;
    if (info == NULL)
        info = &local;
    memset(info, 0, sizeof(*info));
    MDB_txn *txn;
    wsq_err err = wsq__rtxn_begin(store, &txn);
    if (err != WSQ_OK)
        return err;
    wsq__topic_rec_t rec;
    if ((err = wsq__topic_load(txn, store, topic_id, &rec)) != WSQ_OK) {
        wsq__rtxn_end(store, &txn);
        return err;
    }
    info->epoch = rec.epoch;
    info->first_seq = rec.first_seq;
    info->next_seq = rec.next_seq;
    info->purged_upto = rec.purged_upto;
    if (from == 0)
        from = 1;
    if (from < rec.first_seq) {
        info->gap = true;
        from = rec.first_seq;
    }
    if (from >= rec.next_seq || max_count == 0) {
        wsq__rtxn_end(store, &txn);
        return WSQ_OK;
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, store->dbi_msgs, &cur);
    if (rc != 0) {
        wsq__rtxn_end(store, &txn);
        return wsq__mdb_err(rc);
    }
    unsigned char *buf = NULL; /* a parted payload, put together */
    size_t cap = 0;
    unsigned char kb[MSG_KEY_LEN];
    wsq__msg_key(kb, topic_id, from);
    MDB_val k = {MSG_KEY_LEN, kb}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    uint64_t expect = from;
    while (rc == 0) {
        if (k.mv_size != MSG_KEY_LEN || wsq__get_be32(k.mv_data) != topic_id)
            break;
        const unsigned char *vp = v.mv_data;
        uint64_t seq = wsq__get_be64((unsigned char *)k.mv_data + 4);
        uint64_t len;
        if (seq != expect || !wsq__msg_len(&v, &len)) {
            err = WSQ_ERR_CORRUPT;
            break;
        }
        uint32_t flags = wsq__get_le32(vp + 8);
        wsq_msg_view_t m = {
            .seq = seq,
            .ts_ms = (int64_t)wsq__get_le64(vp),
            .flags = MSG_F_USER(flags),
            .len = len,
            .data = vp + MSG_HDR_LEN,
        };
        if (info->count > 0 && info->bytes + m.len > max_bytes)
            break;
        if (flags & MSG_F_PARTS) {
            if (fn && (err = assemble(txn, store, topic_id, seq, len, &buf, &cap)) != WSQ_OK)
                break;
            m.data = buf;
        }
        if (fn && !wsq__msg_crc_ok(vp, wsq__msg_crc_update(vp, 0, m.data, m.len))) {
            info->corrupt_seq = seq; /* never handed out as data */
            break;
        }
        info->count++;
        info->bytes += m.len;
        info->last_seq = seq;
        expect++;
        if (fn && (m.flags & WSQ_MSG_HEADERS)) { /* the body: n (u32 LE) | headers | payload */
            const unsigned char *b = m.data;
            if (m.len < 4 || wsq__get_le32(b) > m.len - 4) {
                err = WSQ_ERR_CORRUPT; /* passed its checksum: written so */
                break;
            }
            size_t n = wsq__get_le32(b);
            m.headers = b + 4;
            m.headers_len = n;
            m.data = b + 4 + n;
            m.len -= 4 + n;
        }
        if (fn && fn(arg, &m) != 0)
            break;
        if (info->count >= max_count || seq + 1 >= rec.next_seq)
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (err == WSQ_OK && rc == MDB_NOTFOUND && expect == from)
        err = WSQ_ERR_CORRUPT; /* the topic says the message exists */
    else if (err == WSQ_OK && rc != 0 && rc != MDB_NOTFOUND)
        err = wsq__mdb_err(rc);
    mdb_cursor_close(cur);
    wsq__rtxn_end(store, &txn);
    free(buf);
    return err;
}

wsq_err wsq_store_seq_at_time(wsq_store_t *store, uint32_t topic_id, int64_t ts_ms, uint64_t *seq)
{
    MDB_txn *txn;
    wsq_err err = wsq__rtxn_begin(store, &txn);
    if (err != WSQ_OK)
        return err;
    wsq__topic_rec_t rec;
    if ((err = wsq__topic_load(txn, store, topic_id, &rec)) != WSQ_OK) {
        wsq__rtxn_end(store, &txn);
        return err;
    }
    /* Timestamps are non-decreasing within a topic, so binary search by seq. */
    uint64_t lo = rec.first_seq, hi = rec.next_seq;
    while (lo < hi && err == WSQ_OK) {
        uint64_t mid = lo + (hi - lo) / 2;
        unsigned char kb[MSG_KEY_LEN];
        wsq__msg_key(kb, topic_id, mid);
        MDB_val k = {MSG_KEY_LEN, kb}, v;
        int rc = mdb_get(txn, store->dbi_msgs, &k, &v);
        if (rc != 0 || v.mv_size < MSG_HDR_LEN) {
            err = rc ? wsq__mdb_err(rc) : WSQ_ERR_CORRUPT;
            if (err == WSQ_ERR_NOTFOUND)
                err = WSQ_ERR_CORRUPT;
            break;
        }
        if ((int64_t)wsq__get_le64(v.mv_data) < ts_ms)
            lo = mid + 1;
        else
            hi = mid;
    }
    wsq__rtxn_end(store, &txn);
    if (err == WSQ_OK)
        *seq = lo;
    return err;
}

wsq_err wsq_store_consumer_get(wsq_store_t *store, uint32_t topic_id, const char *name, size_t len,
                               wsq_cstate_t *out)
{
    if (len == 0 || len > WSQ_CONSUMER_NAME_MAX)
        return WSQ_ERR_INVAL;
    MDB_txn *txn;
    wsq_err err = wsq__rtxn_begin(store, &txn);
    if (err != WSQ_OK)
        return err;
    unsigned char kb[CONSUMER_KEY_MAX];
    MDB_val k = {wsq__consumer_key(kb, topic_id, name, len), kb}, v;
    int rc = mdb_get(txn, store->dbi_consumers, &k, &v);
    if (rc == 0)
        err = wsq_cstate_decode(out, v.mv_data, v.mv_size);
    else
        err = wsq__mdb_err(rc);
    wsq__rtxn_end(store, &txn);
    return err;
}

static void consumer_info(wsq_consumer_info_t *ci, uint32_t topic_id, const MDB_val *k,
                          const wsq_cstate_t *cs, const wsq__topic_rec_t *t)
{
    memset(ci, 0, sizeof(*ci));
    ci->topic_id = topic_id;
    size_t nl = k->mv_size - 4;
    memcpy(ci->name, (const char *)k->mv_data + 4, nl);
    ci->name[nl] = '\0';
    ci->ack_floor = cs->ack_floor;
    ci->delivered_upto = cs->delivered_upto;
    ci->n_acked = cs->n_acked;
    ci->shared = (cs->flags & WSQ_CSTATE_SHARED) != 0;
    if (t == NULL) { /* a consumer of a missing topic (check reports it): its state as it is */
        ci->pending = wsq_cstate_pending(cs);
        for (uint32_t i = 0; i < cs->n_pend; i++)
            if (cs->pend[i].count > ci->max_delivered)
                ci->max_delivered = cs->pend[i].count;
    } else {
        /* What is true now: messages below first_seq were removed (purge, retention) and are
         * neither pending nor lag, although the state keeps them unacknowledged until the
         * consumer resumes and is told about the gap. Pending is the unacknowledged part of
         * [first_seq, min(delivered_upto, last seq)], lag of [first_seq, last seq]. */
        uint64_t last = t->next_seq - 1;
        uint64_t upto = cs->delivered_upto < last ? cs->delivered_upto : last;
        ci->pending = wsq_cstate_lag(cs, t->first_seq, upto);
        ci->lag = wsq_cstate_lag(cs, t->first_seq, last);
        for (uint32_t i = 0; i < cs->n_pend; i++)
            if (cs->pend[i].seq >= t->first_seq && cs->pend[i].seq <= upto &&
                cs->pend[i].count > ci->max_delivered)
                ci->max_delivered = cs->pend[i].count;
    }
    if (ci->max_delivered == 0 && ci->pending > 0)
        ci->max_delivered = 1;
    ci->created_ms = cs->created_ms;
    ci->last_seen_ms = cs->last_seen_ms;
}

wsq_err wsq_store_consumer_list(wsq_store_t *store, uint32_t topic_id, uint32_t after_topic,
                                const char *after_name, unsigned max, wsq_consumer_info_t *out,
                                unsigned *n)
{
    *n = 0;
    MDB_txn *txn;
    wsq_err err = wsq__rtxn_begin(store, &txn);
    if (err != WSQ_OK)
        return err;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, store->dbi_consumers, &cur);
    if (rc != 0) {
        wsq__rtxn_end(store, &txn);
        return wsq__mdb_err(rc);
    }
    unsigned char kb[CONSUMER_KEY_MAX];
    MDB_val k, v;
    bool skip_equal = false;
    if (after_name) {
        size_t al = strlen(after_name);
        if (al > WSQ_CONSUMER_NAME_MAX)
            al = WSQ_CONSUMER_NAME_MAX;
        k = (MDB_val){wsq__consumer_key(kb, after_topic, after_name, al), kb};
        skip_equal = true;
    } else {
        wsq__put_be32(kb, topic_id);
        k = (MDB_val){4, kb};
    }
    unsigned char after_key[CONSUMER_KEY_MAX];
    size_t after_len = k.mv_size;
    memcpy(after_key, kb, after_len);
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    wsq__topic_rec_t t;
    uint32_t t_id = 0;
    bool t_ok = false;
    while (rc == 0 && *n < max) {
        if (k.mv_size < 5) {
            err = WSQ_ERR_CORRUPT;
            break;
        }
        uint32_t id = wsq__get_be32(k.mv_data);
        if (topic_id && id != topic_id)
            break;
        if (skip_equal && k.mv_size == after_len && memcmp(k.mv_data, after_key, after_len) == 0) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            continue;
        }
        if ((err = wsq_cstate_decode(&cs, v.mv_data, v.mv_size)) != WSQ_OK)
            break;
        if (id != t_id) {
            t_id = id;
            t_ok = wsq__topic_load(txn, store, id, &t) == WSQ_OK;
        }
        consumer_info(&out[(*n)++], id, &k, &cs, t_ok ? &t : NULL);
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    wsq_cstate_fini(&cs);
    if (err == WSQ_OK && rc != 0 && rc != MDB_NOTFOUND)
        err = wsq__mdb_err(rc);
    mdb_cursor_close(cur);
    wsq__rtxn_end(store, &txn);
    return err;
}

static int count_line(const char *msg, void *ctx)
{
    if (strstr(msg, "no active readers") == NULL)
        (*(unsigned *)ctx)++;
    return 0;
}

wsq_err wsq_store_stats(wsq_store_t *store, wsq_store_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    MDB_txn *txn;
    wsq_err err = wsq__rtxn_begin(store, &txn);
    if (err != WSQ_OK)
        return err;
    MDB_envinfo ei;
    MDB_stat st;
    mdb_env_info(store->env, &ei);
    mdb_env_stat(store->env, &st);
    out->format = store->format;
    out->map_size = ei.me_mapsize;
    out->map_size_max = store->opts.map_size_max;
    out->page_size = st.ms_psize;
    out->pages_used = ei.me_last_pgno + 1;
    out->map_used = out->pages_used * st.ms_psize;
    out->readers_max = ei.me_maxreaders;
    out->last_txn = ei.me_last_txnid;

    /* Free pages: each free-list record holds a page-number list whose first word is its length. */
    MDB_cursor *cur;
    if (mdb_cursor_open(txn, 0, &cur) == 0) {
        MDB_val k, v;
        int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        while (rc == 0) {
            if (v.mv_size >= sizeof(size_t)) {
                size_t cnt;
                memcpy(&cnt, v.mv_data, sizeof(cnt));
                out->pages_free += cnt;
            }
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(cur);
    }
    if (mdb_stat(txn, store->dbi_consumers, &st) == 0)
        out->consumers = st.ms_entries;
    if (mdb_cursor_open(txn, store->dbi_topics, &cur) == 0) {
        MDB_val k, v;
        int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        while (rc == 0) {
            wsq__topic_rec_t t;
            if (wsq__topic_rec_decode(&t, v.mv_data, v.mv_size) == WSQ_OK &&
                !(t.flags & TOPIC_DELETING)) {
                out->topics++;
                out->messages += t.count;
                out->message_bytes += t.bytes;
            }
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(cur);
    }
    wsq__rtxn_end(store, &txn);

    unsigned lines = 0;
    mdb_reader_list(store->env, count_line, &lines);
    out->readers_used = lines > 0 ? lines - 1 : 0; /* the first line is a header */

    char path[4096];
    snprintf(path, sizeof(path), "%s/data.mdb", store->path);
    struct stat sb;
    if (stat(path, &sb) == 0)
        out->file_bytes = (uint64_t)sb.st_size;
    return WSQ_OK;
}

void wsq_store_map_usage(wsq_store_t *store, uint64_t *used, uint64_t *size, uint64_t *max)
{
    MDB_envinfo ei;
    MDB_stat st;
    mdb_env_info(store->env, &ei);
    mdb_env_stat(store->env, &st);
    *used = (uint64_t)(ei.me_last_pgno + 1) * st.ms_psize;
    *size = ei.me_mapsize;
    *max = store->opts.map_size_max;
}
