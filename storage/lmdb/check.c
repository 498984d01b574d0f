/* The invariant checker and the compacted copy. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

#define MAX_REPORTS_PER_TOPIC 20

typedef struct {
    wsq_check_fn fn;
    void *arg;
    uint64_t *violations;
} reporter_t;

static void report(reporter_t *r, const char *topic, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report(reporter_t *r, const char *topic, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    (*r->violations)++;
    if (r->fn)
        r->fn(r->arg, topic, buf);
}

typedef struct {
    const unsigned char *hdr; /* the message's header: which checksum it carries */
    uint32_t crc;
    uint64_t n;
} part_crc_t;

static void part_crc(void *arg, const void *data, size_t len)
{
    part_crc_t *pc = arg;
    pc->crc = wsq__msg_crc_update(pc->hdr, pc->crc, data, len);
    pc->n++;
}

/* Part records of topic id. */
static uint64_t count_prefix(MDB_txn *txn, wsq_store_t *store, uint32_t id)
{
    uint64_t n = 0;
    MDB_cursor *cur;
    if (!store->has_parts || mdb_cursor_open(txn, store->dbi_parts, &cur) != 0)
        return 0;
    unsigned char kb[4];
    wsq__put_be32(kb, id);
    MDB_val k = {4, kb}, v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == 0 && k.mv_size >= 4 && wsq__get_be32(k.mv_data) == id;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        n++;
    mdb_cursor_close(cur);
    return n;
}

/* Checks one topic's messages inside its own read transaction. Violations are collected and
 * reported after the transaction ends, so a slow reporter never pins pages. */
static wsq_err check_topic(wsq_store_t *store, uint32_t id, reporter_t *rep)
{
    char msgs[MAX_REPORTS_PER_TOPIC][160];
    unsigned nmsgs = 0, extra = 0;
#define NOTE(...)                                                                                  \
    do {                                                                                           \
        if (nmsgs < MAX_REPORTS_PER_TOPIC)                                                         \
            snprintf(msgs[nmsgs++], sizeof(msgs[0]), __VA_ARGS__);                                 \
        else                                                                                       \
            extra++;                                                                               \
    } while (0)

    MDB_txn *txn;
    wsq_err err = wsq__rtxn_begin(store, &txn);
    if (err != WSQ_OK)
        return err;
    wsq__topic_rec_t t;
    err = wsq__topic_load(txn, store, id, &t);
    if (err != WSQ_OK) {
        wsq__rtxn_end(store, &txn);
        if (err == WSQ_ERR_NOTFOUND)
            return WSQ_OK; /* deleted meanwhile */
        char name[16];
        snprintf(name, sizeof(name), "#%u", id);
        report(rep, name, "topic record is unreadable: %s", wsq_strerror(err));
        return WSQ_OK;
    }
    MDB_val nk = {t.name_len, t.name}, nv;
    if (mdb_get(txn, store->dbi_names, &nk, &nv) != 0 || nv.mv_size != 4 ||
        wsq__get_be32(nv.mv_data) != id)
        NOTE("name index does not point to topic id %u", id);

    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, store->dbi_msgs, &cur);
    if (rc != 0) {
        wsq__rtxn_end(store, &txn);
        return wsq__mdb_err(rc);
    }
    unsigned char kb[MSG_KEY_LEN];
    wsq__put_be32(kb, id);
    MDB_val k = {4, kb}, v;
    uint64_t count = 0, bytes = 0, expect = t.first_seq, first_ts = 0, parts = 0;
    int64_t prev_ts = INT64_MIN;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size >= 4 && wsq__get_be32(k.mv_data) == id) {
        if (k.mv_size != MSG_KEY_LEN) {
            NOTE("message key of %zu bytes (expected %d)", k.mv_size, MSG_KEY_LEN);
        } else {
            uint64_t seq = wsq__get_be64((unsigned char *)k.mv_data + 4);
            if (seq != expect)
                NOTE("seq %llu where %llu was expected (seqs must be contiguous from first_seq "
                     "%llu)",
                     (unsigned long long)seq, (unsigned long long)expect,
                     (unsigned long long)t.first_seq);
            expect = seq + 1;
            if (seq >= t.next_seq)
                NOTE("seq %llu is at or above next_seq %llu", (unsigned long long)seq,
                     (unsigned long long)t.next_seq);
            uint64_t len;
            if (!wsq__msg_len(&v, &len)) {
                NOTE("seq %llu: value of %zu bytes does not fit its header",
                     (unsigned long long)seq, v.mv_size);
            } else {
                const unsigned char *p = v.mv_data;
                uint32_t flags = wsq__get_le32(p + 8);
                int64_t ts = (int64_t)wsq__get_le64(p);
                if (count == 0)
                    first_ts = (uint64_t)ts;
                if (ts < prev_ts)
                    NOTE("seq %llu: timestamp goes backwards", (unsigned long long)seq);
                prev_ts = ts;
                part_crc_t pc = {p, 0, 0};
                bool whole = true;
                if (!(flags & MSG_F_PARTS)) {
                    pc.crc = wsq__msg_crc_update(p, 0, p + MSG_HDR_LEN, len);
                } else if (wsq__parts_walk(txn, store, id, seq, len, part_crc, &pc) != WSQ_OK) {
                    NOTE("seq %llu: its parts are missing or do not add up to %llu bytes",
                         (unsigned long long)seq, (unsigned long long)len);
                    whole = false; /* one note per message is enough */
                }
                parts += pc.n;
                if (whole && !wsq__msg_crc_ok(p, pc.crc))
                    NOTE("seq %llu: checksum mismatch (%s): the message is corrupt",
                         (unsigned long long)seq,
                         flags & MSG_F_CRC32C ? "CRC-32C of payload, timestamp and flags"
                                              : "CRC-32 of the payload, format 2");
                if (MSG_F_USER(flags) & ~(WSQ_MSG_BINARY | WSQ_MSG_HEADERS))
                    NOTE("seq %llu: unknown flags", (unsigned long long)seq);
                if ((flags & WSQ_MSG_HEADERS) && !(flags & MSG_F_PARTS) &&
                    (len < 4 || wsq__get_le32(p + MSG_HDR_LEN) > len - 4))
                    NOTE("seq %llu: its headers do not fit its body", (unsigned long long)seq);
                bytes += len;
            }
        }
        count++;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND)
        err = wsq__mdb_err(rc);
    uint64_t stored_parts = count_prefix(txn, store, id);
    if (stored_parts > parts)
        NOTE("%llu part records belong to no message", (unsigned long long)(stored_parts - parts));
    if (count != t.count)
        NOTE("topic says %llu messages, store holds %llu", (unsigned long long)t.count,
             (unsigned long long)count);
    if (bytes != t.bytes)
        NOTE("topic says %llu payload bytes, store holds %llu", (unsigned long long)t.bytes,
             (unsigned long long)bytes);
    if (count > 0 && t.count == count && expect != t.next_seq)
        NOTE("last seq %llu but next_seq is %llu", (unsigned long long)(expect - 1),
             (unsigned long long)t.next_seq);
    if (count > 0 && (int64_t)first_ts != t.first_ts_ms)
        NOTE("first message timestamp %lld differs from the topic's %lld", (long long)first_ts,
             (long long)t.first_ts_ms);
    wsq__rtxn_end(store, &txn);
    for (unsigned i = 0; i < nmsgs; i++)
        report(rep, t.name, "%s", msgs[i]);
    if (extra)
        report(rep, t.name, "%u more violations not shown", extra);
    return err;
#undef NOTE
}

/* Walks one table in chunks of keys, calling visit for each key in a fresh transaction per chunk.
 */
static wsq_err check_consumers(wsq_store_t *store, reporter_t *rep)
{
    unsigned char after[CONSUMER_KEY_MAX];
    size_t after_len = 0;
    bool done = false;
    wsq_cstate_t cs;
    wsq_cstate_init(&cs);
    while (!done) {
        char notes[64][WSQ_TOPIC_MAX + 200];
        char tops[64][WSQ_TOPIC_MAX + 1];
        unsigned nn = 0;
        MDB_txn *txn;
        wsq_err err = wsq__rtxn_begin(store, &txn);
        if (err != WSQ_OK) {
            wsq_cstate_fini(&cs);
            return err;
        }
        MDB_cursor *cur;
        mdb_cursor_open(txn, store->dbi_consumers, &cur);
        MDB_val k = {after_len, after}, v;
        int rc = after_len ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
                           : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        if (rc == 0 && after_len && k.mv_size == after_len &&
            memcmp(k.mv_data, after, after_len) == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        unsigned seen = 0;
        while (rc == 0 && seen < 1000 && nn < 64) {
            seen++;
            char cname[WSQ_CONSUMER_NAME_MAX + 1] = "?";
            uint32_t id = k.mv_size >= 4 ? wsq__get_be32(k.mv_data) : 0;
            size_t nl = k.mv_size >= 4 ? k.mv_size - 4 : 0;
            if (nl > WSQ_CONSUMER_NAME_MAX)
                nl = WSQ_CONSUMER_NAME_MAX;
            if (k.mv_size >= 4) {
                memcpy(cname, (char *)k.mv_data + 4, nl);
                cname[nl] = '\0';
            }
            wsq__topic_rec_t t;
            wsq_err te = wsq__topic_load_raw(txn, store, id, &t);
            if (te == WSQ_OK && (t.flags & TOPIC_DELETING)) {
                after_len = k.mv_size <= sizeof(after) ? k.mv_size : sizeof(after);
                memcpy(after, k.mv_data, after_len);
                rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
                continue; /* its topic is being deleted: this consumer goes next */
            }
            const char *tname = te == WSQ_OK ? t.name : "?";
            char *note = notes[nn];
            note[0] = '\0';
            if (k.mv_size < 5 || k.mv_size > CONSUMER_KEY_MAX) {
                snprintf(note, sizeof(notes[0]), "consumer key of %zu bytes is malformed",
                         k.mv_size);
            } else if (te != WSQ_OK) {
                snprintf(note, sizeof(notes[0]), "consumer '%s' belongs to missing topic id %u",
                         cname, id);
            } else if (wsq_cstate_decode(&cs, v.mv_data, v.mv_size) != WSQ_OK) {
                snprintf(note, sizeof(notes[0]),
                         "consumer '%s' state does not decode or breaks its invariants", cname);
            } else if (cs.ack_floor >= t.next_seq) {
                snprintf(note, sizeof(notes[0]),
                         "consumer '%s' ack floor %llu is beyond the topic's last seq %llu", cname,
                         (unsigned long long)cs.ack_floor, (unsigned long long)(t.next_seq - 1));
            } else if (cs.delivered_upto >= t.next_seq) {
                snprintf(note, sizeof(notes[0]),
                         "consumer '%s' delivered seq %llu beyond the topic's last seq %llu", cname,
                         (unsigned long long)cs.delivered_upto,
                         (unsigned long long)(t.next_seq - 1));
            } else if (cs.n_acked && cs.acked[cs.n_acked - 1] >= t.next_seq) {
                snprintf(note, sizeof(notes[0]), "consumer '%s' acked a seq beyond the topic",
                         cname);
            }
            if (note[0]) {
                snprintf(tops[nn], sizeof(tops[0]), "%s", tname);
                nn++;
            }
            after_len = k.mv_size <= sizeof(after) ? k.mv_size : sizeof(after);
            memcpy(after, k.mv_data, after_len);
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        done = rc != 0;
        mdb_cursor_close(cur);
        wsq__rtxn_end(store, &txn);
        for (unsigned i = 0; i < nn; i++)
            report(rep, tops[i], "%s", notes[i]);
        if (rc != 0 && rc != MDB_NOTFOUND) {
            wsq_cstate_fini(&cs);
            return wsq__mdb_err(rc);
        }
    }
    wsq_cstate_fini(&cs);
    return WSQ_OK;
}

/* Topic ids of dbi's keys that have no topic record, at most max of them. */
static unsigned find_orphans(MDB_txn *txn, wsq_store_t *store, MDB_dbi dbi, uint32_t *out,
                             unsigned max)
{
    unsigned no = 0;
    MDB_cursor *cur;
    if (max == 0 || mdb_cursor_open(txn, dbi, &cur) != 0)
        return 0;
    MDB_val k, v;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0 && no < max && k.mv_size >= 4) {
        uint32_t id = wsq__get_be32(k.mv_data);
        wsq__topic_rec_t t;
        if (wsq__topic_load_raw(txn, store, id, &t) == WSQ_ERR_NOTFOUND)
            out[no++] = id; /* a tombstoned topic's messages are expected */
        if (id == UINT32_MAX)
            break;
        unsigned char kb[4];
        wsq__put_be32(kb, id + 1);
        k = (MDB_val){4, kb};
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    }
    mdb_cursor_close(cur);
    return no;
}

/* Messages (or parts of them) whose topic id has no topic record. */
static wsq_err check_orphans(wsq_store_t *store, reporter_t *rep)
{
    MDB_txn *txn;
    wsq_err err = wsq__rtxn_begin(store, &txn);
    if (err != WSQ_OK)
        return err;
    uint32_t orphans[32];
    unsigned no = find_orphans(txn, store, store->dbi_msgs, orphans, 32);
    if (store->has_parts) {
        uint32_t more[32];
        unsigned nm = find_orphans(txn, store, store->dbi_parts, more, 32);
        for (unsigned j = 0; j < nm && no < 32; j++) {
            bool seen = false;
            for (unsigned i = 0; i < no; i++)
                seen |= orphans[i] == more[j];
            if (!seen)
                orphans[no++] = more[j];
        }
    }
    wsq__rtxn_end(store, &txn);
    for (unsigned i = 0; i < no; i++) {
        char name[16];
        snprintf(name, sizeof(name), "#%u", orphans[i]);
        report(rep, name,
               "messages of topic id %u exist but the topic does not (an interrupted delete; "
               "wsqd removes them at its next start)",
               orphans[i]);
    }
    return WSQ_OK;
}

wsq_err wsq_store_check(wsq_store_t *store, wsq_check_fn fn, void *arg, uint64_t *violations)
{
    uint64_t local = 0;
    if (violations == NULL)
        violations = &local;
    *violations = 0;
    reporter_t rep = {fn, arg, violations};
    /* Collect ids first, in pages, then check each topic in its own transaction. */
    uint32_t after = 0;
    for (;;) {
        uint32_t ids[256];
        unsigned n = 0;
        MDB_txn *txn;
        wsq_err err = wsq__rtxn_begin(store, &txn);
        if (err != WSQ_OK)
            return err;
        MDB_cursor *cur;
        mdb_cursor_open(txn, store->dbi_topics, &cur);
        unsigned char kb[4];
        wsq__put_be32(kb, after);
        MDB_val k = {4, kb}, v;
        int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        while (rc == 0 && n < 256) {
            if (k.mv_size == 4)
                ids[n++] = wsq__get_be32(k.mv_data);
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(cur);
        wsq__rtxn_end(store, &txn);
        for (unsigned i = 0; i < n; i++)
            if ((err = check_topic(store, ids[i], &rep)) != WSQ_OK)
                return err;
        if (n < 256 || ids[n - 1] == UINT32_MAX)
            break;
        after = ids[n - 1] + 1;
    }
    wsq_err err = check_consumers(store, &rep);
    if (err == WSQ_OK)
        err = check_orphans(store, &rep);
    return err;
}

wsq_err wsq_store_compact(wsq_store_t *store, const char *dest)
{
    char path[4096];
    struct stat sb;
    if (snprintf(path, sizeof(path), "%s/data.mdb", dest) >= (int)sizeof(path))
        return WSQ_ERR_INVAL;
    if (stat(path, &sb) == 0)
        return WSQ_ERR_EXISTS;
    if (mkdir(dest, 0750) != 0 && errno != EEXIST)
        return wsq__mdb_err(errno);
    /* mdb_env_copy2 runs its own read transaction; hold the map lock shared like any reader. */
    pthread_rwlock_rdlock(&store->maplock);
    int rc = mdb_env_copy2(store->env, dest, MDB_CP_COMPACT);
    pthread_rwlock_unlock(&store->maplock);
    return rc == 0 ? WSQ_OK : wsq__mdb_err(rc);
}
