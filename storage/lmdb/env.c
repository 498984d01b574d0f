/* The LMDB environment: open, close, format version, the data-dir lock and record encodings. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "crc.h"
#include "internal.h"
#include "wsq/clock.h"

#define DEFAULT_MAP_INITIAL (64ull << 20)
#define DEFAULT_MAP_MAX (1ull << 40)
#define DEFAULT_MAX_READERS 1024u
#define DEFAULT_BATCH_MSGS 4096u
#define DEFAULT_BATCH_BYTES (8u << 20)
#define DEFAULT_TRIM_CHUNK 10000u
#define LOCK_FILE "wsq.lock"

wsq_err wsq__mdb_err(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return WSQ_OK;
    case MDB_MAP_FULL:
    case ENOSPC:
        return WSQ_ERR_STORAGE_FULL;
    case MDB_NOTFOUND:
        return WSQ_ERR_NOTFOUND;
    case MDB_KEYEXIST:
        return WSQ_ERR_EXISTS;
    case MDB_PANIC:
        return WSQ_ERR_PANIC;
    case MDB_CORRUPTED:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_PAGE_NOTFOUND:
    case MDB_INCOMPATIBLE:
        return WSQ_ERR_CORRUPT;
    case ENOMEM:
        return WSQ_ERR_NOMEM;
    case EACCES:
    case EPERM:
    case EROFS:
        return WSQ_ERR_PERM;
    case ENOENT:
        return WSQ_ERR_NOSTORE;
    default:
        return WSQ_ERR_IO;
    }
}

int64_t wsq__now(const wsq_store_t *store)
{
    if (store->opts.clock)
        return store->opts.clock(store->opts.clock_arg);
    return wsq_now_ms();
}

int64_t wsq_store_now_ms(const wsq_store_t *store)
{
    return wsq__now(store);
}

void wsq_store_opts_init(wsq_store_opts_t *opts)
{
    memset(opts, 0, sizeof(*opts));
}

const char *wsq_store_backend_version(void)
{
    return mdb_version(NULL, NULL, NULL); /* "LMDB 0.9.24: (July 24, 2019)", static */
}

uint32_t wsq_store_format(const wsq_store_t *store)
{
    return store->format;
}

uint32_t wsq_store_format_before(const wsq_store_t *store)
{
    return store->format_before;
}

/* --- record encodings ------------------------------------------------------------------------ */

void wsq__msg_key(unsigned char *key, uint32_t topic_id, uint64_t seq)
{
    wsq__put_be32(key, topic_id);
    wsq__put_be64(key + 4, seq);
}

void wsq__part_key(unsigned char *key, uint32_t topic_id, uint64_t seq, uint32_t part)
{
    wsq__msg_key(key, topic_id, seq);
    wsq__put_be32(key + MSG_KEY_LEN, part);
}

bool wsq__msg_len(const MDB_val *v, uint64_t *len)
{
    if (v->mv_size < MSG_HDR_LEN)
        return false;
    if (!(wsq__get_le32((const unsigned char *)v->mv_data + 8) & MSG_F_PARTS)) {
        *len = v->mv_size - MSG_HDR_LEN;
        return true;
    }
    if (v->mv_size != MSG_PARTS_VAL_LEN)
        return false;
    *len = wsq__get_le32((const unsigned char *)v->mv_data + MSG_HDR_LEN);
    return true;
}

uint32_t wsq__msg_crc_update(const unsigned char *hdr, uint32_t crc, const void *data, size_t len)
{
    if (wsq__get_le32(hdr + 8) & MSG_F_CRC32C)
        return wsq__crc32c(crc, data, len);
    while (len > 0) { /* format 2: zlib's CRC-32, uInt lengths */
        uInt n = len > 0x40000000u ? 0x40000000u : (uInt)len;
        crc = (uint32_t)crc32(crc, data, n);
        data = (const unsigned char *)data + n;
        len -= n;
    }
    return crc;
}

bool wsq__msg_crc_ok(const unsigned char *hdr, uint32_t crc)
{
    uint32_t flags = wsq__get_le32(hdr + 8);
    if (flags & MSG_F_CRC32C)
        crc = wsq__msg_crc_seal(crc, (int64_t)wsq__get_le64(hdr), MSG_F_USER(flags));
    return crc == wsq__get_le32(hdr + 12);
}

wsq_err wsq__parts_walk(MDB_txn *txn, wsq_store_t *store, uint32_t topic_id, uint64_t seq,
                        uint64_t len, wsq__part_fn fn, void *arg)
{
    if (!store->has_parts)
        return WSQ_ERR_CORRUPT;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, store->dbi_parts, &cur);
    if (rc != 0)
        return wsq__mdb_err(rc);
    unsigned char kb[PART_KEY_LEN];
    wsq__part_key(kb, topic_id, seq, 0);
    MDB_val k = {PART_KEY_LEN, kb}, v;
    uint64_t got = 0;
    uint32_t part = 0;
    wsq_err err = WSQ_OK;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0 && got < len;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), part++) {
        const unsigned char *kp = k.mv_data;
        if (k.mv_size != PART_KEY_LEN || wsq__get_be32(kp) != topic_id ||
            wsq__get_be64(kp + 4) != seq || wsq__get_be32(kp + MSG_KEY_LEN) != part ||
            v.mv_size == 0 || v.mv_size > len - got)
            break;
        if (fn)
            fn(arg, v.mv_data, v.mv_size);
        got += v.mv_size;
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        err = wsq__mdb_err(rc);
    else if (got != len)
        err = WSQ_ERR_CORRUPT;
    mdb_cursor_close(cur);
    return err;
}

size_t wsq__consumer_key(unsigned char *key, uint32_t topic_id, const char *name, size_t len)
{
    wsq__put_be32(key, topic_id);
    memcpy(key + 4, name, len);
    return 4 + len;
}

#define TOPIC_REC_VERSION 1u

size_t wsq__topic_rec_encode(const wsq__topic_rec_t *t, unsigned char *p)
{
    wsq__put_le32(p, TOPIC_REC_VERSION);
    wsq__put_le32(p + 4, t->id);
    wsq__put_le64(p + 8, t->epoch);
    wsq__put_le64(p + 16, t->next_seq);
    wsq__put_le64(p + 24, t->first_seq);
    wsq__put_le64(p + 32, t->count);
    wsq__put_le64(p + 40, t->bytes);
    wsq__put_le64(p + 48, (uint64_t)t->created_ms);
    wsq__put_le64(p + 56, (uint64_t)t->first_ts_ms);
    wsq__put_le64(p + 64, (uint64_t)t->last_ts_ms);
    wsq__put_le64(p + 72, t->purged_upto);
    p[80] = (unsigned char)t->name_len;
    p[81] = (unsigned char)(t->name_len >> 8);
    p[82] = (unsigned char)t->flags;
    p[83] = (unsigned char)(t->flags >> 8);
    memcpy(p + TOPIC_REC_HDR, t->name, t->name_len);
    return TOPIC_REC_HDR + t->name_len;
}

wsq_err wsq__topic_rec_decode(wsq__topic_rec_t *t, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    if (len < TOPIC_REC_HDR)
        return WSQ_ERR_CORRUPT;
    uint32_t version = wsq__get_le32(p);
    if (version > TOPIC_REC_VERSION)
        return WSQ_ERR_FORMAT_NEWER;
    uint16_t name_len = (uint16_t)(p[80] | p[81] << 8);
    if (version != TOPIC_REC_VERSION || name_len == 0 || name_len > WSQ_TOPIC_MAX ||
        len != TOPIC_REC_HDR + name_len)
        return WSQ_ERR_CORRUPT;
    t->id = wsq__get_le32(p + 4);
    t->epoch = wsq__get_le64(p + 8);
    t->next_seq = wsq__get_le64(p + 16);
    t->first_seq = wsq__get_le64(p + 24);
    t->count = wsq__get_le64(p + 32);
    t->bytes = wsq__get_le64(p + 40);
    t->created_ms = (int64_t)wsq__get_le64(p + 48);
    t->first_ts_ms = (int64_t)wsq__get_le64(p + 56);
    t->last_ts_ms = (int64_t)wsq__get_le64(p + 64);
    t->purged_upto = wsq__get_le64(p + 72);
    t->flags = (uint16_t)(p[82] | p[83] << 8);
    t->name_len = name_len;
    memcpy(t->name, p + TOPIC_REC_HDR, name_len);
    t->name[name_len] = '\0';
    if (t->next_seq == 0 || t->first_seq == 0 || t->first_seq > t->next_seq)
        return WSQ_ERR_CORRUPT;
    return WSQ_OK;
}

void wsq__topic_info_from_rec(wsq_topic_info_t *info, const wsq__topic_rec_t *t)
{
    info->id = t->id;
    info->epoch = t->epoch;
    info->first_seq = t->first_seq;
    info->next_seq = t->next_seq;
    info->count = t->count;
    info->bytes = t->bytes;
    info->created_ms = t->created_ms;
    info->first_ts_ms = t->count ? t->first_ts_ms : 0;
    info->purged_upto = t->purged_upto;
    memcpy(info->name, t->name, t->name_len + 1u);
}

wsq_err wsq__topic_load(MDB_txn *txn, wsq_store_t *store, uint32_t id, wsq__topic_rec_t *t)
{
    wsq_err err = wsq__topic_load_raw(txn, store, id, t);
    if (err == WSQ_OK && (t->flags & TOPIC_DELETING))
        return WSQ_ERR_NOTFOUND;
    return err;
}

wsq_err wsq__topic_load_raw(MDB_txn *txn, wsq_store_t *store, uint32_t id, wsq__topic_rec_t *t)
{
    unsigned char kb[4];
    wsq__put_be32(kb, id);
    MDB_val k = {4, kb}, v;
    int rc = mdb_get(txn, store->dbi_topics, &k, &v);
    if (rc != 0)
        return wsq__mdb_err(rc);
    return wsq__topic_rec_decode(t, v.mv_data, v.mv_size);
}

/* --- read transactions ----------------------------------------------------------------------- */

wsq_err wsq__rtxn_begin(wsq_store_t *store, MDB_txn **txn)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        pthread_rwlock_rdlock(&store->maplock);
        int rc = mdb_txn_begin(store->env, NULL, MDB_RDONLY, txn);
        if (rc == 0)
            return WSQ_OK;
        pthread_rwlock_unlock(&store->maplock);
        if (rc != MDB_MAP_RESIZED)
            return wsq__mdb_err(rc);
        /* Another process grew the map: adopt its size while no transaction of ours is live. */
        pthread_rwlock_wrlock(&store->maplock);
        rc = mdb_env_set_mapsize(store->env, 0);
        if (rc == 0) {
            MDB_envinfo ei;
            mdb_env_info(store->env, &ei);
            atomic_store(&store->map_size, (uint64_t)ei.me_mapsize);
        }
        pthread_rwlock_unlock(&store->maplock);
        if (rc != 0)
            return wsq__mdb_err(rc);
    }
    return WSQ_ERR_IO;
}

void wsq__rtxn_end(wsq_store_t *store, MDB_txn **txn)
{
    if (*txn) {
        mdb_txn_abort(*txn);
        *txn = NULL;
        pthread_rwlock_unlock(&store->maplock);
    }
}

/* --- the data-dir lock ----------------------------------------------------------------------- */

static char *join(const char *dir, const char *file)
{
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, file);
    return p;
}

static long read_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strtol(buf, NULL, 10);
}

long wsq_store_lock_holder(const char *path)
{
    char *lp = join(path, LOCK_FILE);
    if (lp == NULL)
        return 0;
    int fd = open(lp, O_RDONLY | O_CLOEXEC);
    free(lp);
    if (fd < 0)
        return 0;
    long pid = 0;
    if (flock(fd, LOCK_SH | LOCK_NB) != 0) {
        pid = read_pid(fd);
        if (pid == 0)
            pid = -1; /* held, holder unknown */
    } else {
        flock(fd, LOCK_UN);
    }
    close(fd);
    return pid;
}

static wsq_err take_lock(wsq_store_t *store, long *busy_pid)
{
    char *lp = join(store->path, LOCK_FILE);
    if (lp == NULL)
        return WSQ_ERR_NOMEM;
    int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    free(lp);
    if (fd < 0)
        return wsq__mdb_err(errno);
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (busy_pid)
            *busy_pid = read_pid(fd);
        close(fd);
        return WSQ_ERR_BUSY;
    }
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
        close(fd);
        return WSQ_ERR_IO;
    }
    store->lock_fd = fd;
    return WSQ_OK;
}

/* --- open / close ---------------------------------------------------------------------------- */

static wsq_err mkdir_p(const char *path)
{
    char *p = strdup(path);
    if (p == NULL)
        return WSQ_ERR_NOMEM;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0750) != 0 && errno != EEXIST) {
                int e = errno;
                free(p);
                return wsq__mdb_err(e);
            }
            *s = c;
            if (c == '\0')
                break;
        }
    }
    free(p);
    return WSQ_OK;
}

static wsq_err open_tables(wsq_store_t *store)
{
    MDB_txn *txn = NULL;
    unsigned dflags = store->readonly ? 0 : MDB_CREATE;
    int rc = mdb_txn_begin(store->env, NULL, store->readonly ? MDB_RDONLY : 0, &txn);
    if (rc != 0)
        return wsq__mdb_err(rc);
    wsq_err err = WSQ_OK;
    rc = mdb_dbi_open(txn, "meta", 0, &store->dbi_meta);
    if (rc == MDB_NOTFOUND) {
        /* No meta table: a brand-new file (empty main table) becomes a store; anything else is
         * an LMDB file of someone else's, which we must not touch. */
        MDB_dbi main_dbi;
        MDB_stat st;
        if (mdb_dbi_open(txn, NULL, 0, &main_dbi) != 0 || mdb_stat(txn, main_dbi, &st) != 0 ||
            st.ms_entries != 0) {
            err = WSQ_ERR_CORRUPT;
            goto fail;
        }
        if (store->readonly) {
            err = WSQ_ERR_NOSTORE; /* being created right now: there is nothing to read yet */
            goto fail;
        }
        rc = mdb_dbi_open(txn, "meta", dflags, &store->dbi_meta);
    }
    if (rc != 0 || (rc = mdb_dbi_open(txn, "names", dflags, &store->dbi_names)) != 0 ||
        (rc = mdb_dbi_open(txn, "topics", dflags, &store->dbi_topics)) != 0 ||
        (rc = mdb_dbi_open(txn, "messages", dflags, &store->dbi_msgs)) != 0 ||
        (rc = mdb_dbi_open(txn, "consumers", dflags, &store->dbi_consumers)) != 0) {
        err = rc == MDB_NOTFOUND ? WSQ_ERR_CORRUPT : wsq__mdb_err(rc);
        goto fail;
    }

    MDB_val k = {6, "format"}, v;
    rc = mdb_get(txn, store->dbi_meta, &k, &v);
    if (rc == MDB_NOTFOUND && !store->readonly) {
        /* A fresh store: stamp it. A store that has tables but no stamp is not ours. */
        MDB_stat st;
        mdb_stat(txn, store->dbi_names, &st);
        if (st.ms_entries != 0) {
            err = WSQ_ERR_CORRUPT;
            goto fail;
        }
        store->format = 0; /* stamped below */
    } else if (rc != 0) {
        err = rc == MDB_NOTFOUND ? WSQ_ERR_CORRUPT : wsq__mdb_err(rc);
        goto fail;
    } else {
        if (v.mv_size != 4) {
            err = WSQ_ERR_CORRUPT;
            goto fail;
        }
        store->format = wsq__get_le32(v.mv_data);
        if (store->format > WSQ_FORMAT_VERSION) {
            err = WSQ_ERR_FORMAT_NEWER;
            goto fail;
        }
        if (store->format == 0) {
            err = WSQ_ERR_CORRUPT;
            goto fail;
        }
    }
    /* Format 2 added the parts table; a format 1 store is a format 2 store without parted
     * messages, so a writer upgrades it by creating the table and restamping. */
    rc = mdb_dbi_open(txn, "parts", dflags, &store->dbi_parts);
    if (rc == MDB_NOTFOUND && store->readonly && store->format == 1) {
        store->has_parts = false;
    } else if (rc != 0) {
        err = rc == MDB_NOTFOUND ? WSQ_ERR_CORRUPT : wsq__mdb_err(rc);
        goto fail;
    } else {
        store->has_parts = true;
    }
    if (!store->readonly) {
        if ((rc = mdb_dbi_open(txn, "dedup", MDB_CREATE, &store->dbi_dedup)) != 0 ||
            (rc = mdb_dbi_open(txn, "dedup_exp", MDB_CREATE, &store->dbi_dedup_exp)) != 0) {
            err = wsq__mdb_err(rc);
            goto fail;
        }
        store->has_dedup = true;
    }
    store->format_before = store->format;
    if (store->format < WSQ_FORMAT_VERSION && !store->readonly) { /* fresh, or older */
        unsigned char fb[4];
        wsq__put_le32(fb, WSQ_FORMAT_VERSION);
        v = (MDB_val){4, fb};
        if ((rc = mdb_put(txn, store->dbi_meta, &k, &v, 0)) != 0) {
            err = wsq__mdb_err(rc);
            goto fail;
        }
        store->format = WSQ_FORMAT_VERSION;
    }
    MDB_stat ms;
    mdb_env_stat(store->env, &ms);
    store->part_max = ms.ms_psize - LMDB_PAGE_HDR;
    rc = mdb_txn_commit(txn); /* keeps the DBI handles, also for a read-only txn */
    return rc == 0 ? WSQ_OK : wsq__mdb_err(rc);
fail:
    mdb_txn_abort(txn);
    return err;
}

wsq_err wsq_store_open(const wsq_store_opts_t *opts, wsq_store_t **out, long *busy_pid)
{
    if (opts == NULL || opts->path == NULL || opts->path[0] == '\0' || out == NULL ||
        opts->sync > WSQ_SYNC_NONE)
        return WSQ_ERR_INVAL;
    if (busy_pid)
        *busy_pid = 0;
    bool readonly = (opts->flags & WSQ_STORE_READONLY) != 0;
    if (readonly && (opts->flags & (WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE)))
        return WSQ_ERR_INVAL;

    wsq_store_t *store = calloc(1, sizeof(*store));
    if (store == NULL)
        return WSQ_ERR_NOMEM;
    store->lock_fd = -1;
    store->readonly = readonly;
    store->opts = *opts;
    store->path = strdup(opts->path);
    if (store->path == NULL) {
        free(store);
        return WSQ_ERR_NOMEM;
    }
    store->opts.path = store->path;
    wsq_store_opts_t *o = &store->opts;
    if (o->map_size_initial == 0)
        o->map_size_initial = DEFAULT_MAP_INITIAL;
    if (o->map_size_max == 0)
        o->map_size_max = DEFAULT_MAP_MAX;
    if (o->map_size_initial > o->map_size_max)
        o->map_size_initial = o->map_size_max;
    if (o->max_readers == 0)
        o->max_readers = DEFAULT_MAX_READERS;
    if (o->batch_max_msgs == 0)
        o->batch_max_msgs = DEFAULT_BATCH_MSGS;
    if (o->batch_max_bytes == 0)
        o->batch_max_bytes = DEFAULT_BATCH_BYTES;
    if (o->trim_chunk == 0)
        o->trim_chunk = DEFAULT_TRIM_CHUNK;

    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    /* A waiting map grower must not starve behind a stream of short readers. */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&store->maplock, &ra);
    pthread_rwlockattr_destroy(&ra);

    wsq_err err = WSQ_OK;
    struct stat st;
    char *datafile = join(store->path, "data.mdb");
    if (datafile == NULL) {
        err = WSQ_ERR_NOMEM;
        goto fail;
    }
    int have = stat(datafile, &st) == 0;
    int stat_errno = errno;
    free(datafile);
    if (!have) {
        if (stat_errno == EACCES) {
            err = WSQ_ERR_PERM;
            goto fail;
        }
        if (!(opts->flags & WSQ_STORE_CREATE)) {
            err = WSQ_ERR_NOSTORE;
            goto fail;
        }
        if ((err = mkdir_p(store->path)) != WSQ_OK)
            goto fail;
    }
    if ((opts->flags & WSQ_STORE_EXCLUSIVE) && (err = take_lock(store, busy_pid)) != WSQ_OK)
        goto fail;

    int rc = mdb_env_create(&store->env);
    if (rc != 0) {
        err = wsq__mdb_err(rc);
        goto fail;
    }
    mdb_env_set_maxdbs(store->env, 8);
    mdb_env_set_maxreaders(store->env, o->max_readers);
    if (!readonly)
        mdb_env_set_mapsize(store->env, o->map_size_initial);
    unsigned eflags = MDB_NOTLS;
    if (readonly)
        eflags |= MDB_RDONLY;
    if (o->sync == WSQ_SYNC_BATCH)
        eflags |= MDB_NOMETASYNC;
    else if (o->sync == WSQ_SYNC_NONE)
        eflags |= MDB_NOSYNC;
    rc = mdb_env_open(store->env, store->path, eflags, 0640);
    if (rc != 0) {
        err = wsq__mdb_err(rc);
        goto fail;
    }
    MDB_envinfo ei;
    mdb_env_info(store->env, &ei);
    atomic_store(&store->map_size, (uint64_t)ei.me_mapsize);

    int dead = 0;
    mdb_reader_check(store->env, &dead);

    if ((err = open_tables(store)) != WSQ_OK)
        goto fail;
    if (!readonly && (err = wsq__writer_create(store)) != WSQ_OK)
        goto fail;
    *out = store;
    return WSQ_OK;
fail:
    wsq_store_close(store);
    return err;
}

void wsq_store_close(wsq_store_t *store)
{
    if (store == NULL)
        return;
    if (store->writer)
        wsq__writer_destroy(store);
    if (store->env)
        mdb_env_close(store->env);
    if (store->lock_fd >= 0)
        close(store->lock_fd); /* releases the flock */
    pthread_rwlock_destroy(&store->maplock);
    free(store->path);
    free(store);
}
