/* The LMDB backend's internals, shared by the storage/lmdb/ sources only. Nothing outside
 * storage/lmdb/ includes it. The writer thread's own state is in writer.h. */
#ifndef WSQ_STORAGE_LMDB_INTERNAL_H
#define WSQ_STORAGE_LMDB_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>

#include "bytes.h"
#include "wsq/store.h"

/* Key of a message: topic_id (u32 BE) | seq (u64 BE), so byte order is numeric order. */
#define MSG_KEY_LEN 12
/* Value of a message: ts_ms (i64 LE) | flags (u32 LE) | checksum (u32 LE) | payload. */
#define MSG_HDR_LEN 16
/* The checksum is CRC-32C over the payload, the timestamp and the user flags (wsq__msg_crc_seal)
 * when MSG_F_CRC32C is set (format 3 on); without it (a message written by format 2) it is zlib's
 * CRC-32 of the payload alone. Either is checked on every read that hands the payload out. */
#define MSG_F_CRC32C 0x40000000u
/* A message whose value would not fit one page is stored in parts (format 2): its value is the
 * header with MSG_F_PARTS set and the payload length (u32 LE); the payload is in the parts
 * table, in order, each part at most page size - LMDB's page header, so that every part lives in
 * one page. A value spread over several pages needs a run of contiguous free pages, which a
 * fragmented free list cannot supply: the file would grow though it has room. */
#define MSG_F_PARTS 0x80000000u
/* The flags a client set (WSQ_MSG_*); the rest are the record's own. */
#define MSG_F_USER(flags) ((flags) & ~(MSG_F_PARTS | MSG_F_CRC32C))
#define MSG_PARTS_VAL_LEN (MSG_HDR_LEN + 4)
/* Key of a part: message key | part index (u32 BE). */
#define PART_KEY_LEN (MSG_KEY_LEN + 4)
#define LMDB_PAGE_HDR 16 /* LMDB's PAGEHDRSZ: an overflow value of page size - this is one page */
/* Consumer key: topic_id (u32 BE) | name. */
#define CONSUMER_KEY_MAX (4 + WSQ_CONSUMER_NAME_MAX)

/* Topic record as stored in the topics table (key: id u32 BE). */
typedef struct {
    uint32_t id;
    uint64_t epoch;
    uint64_t next_seq;
    uint64_t first_seq;
    uint64_t count;
    uint64_t bytes;
    int64_t created_ms;
    int64_t first_ts_ms;
    int64_t last_ts_ms;   /* timestamp of the newest message ever appended (keeps ts monotonic) */
    uint64_t purged_upto; /* highest seq removed by an explicit purge (else retention removed it) */
    uint16_t flags;       /* TOPIC_DELETING */
    uint16_t name_len;
    char name[WSQ_TOPIC_MAX + 1];
} wsq__topic_rec_t;

/* The topic is being deleted: its name is gone, its messages and consumers go in bounded
 * chunks, the record last. Readers treat it as absent; check treats its leftovers as expected. */
#define TOPIC_DELETING 0x1u

/* Encoded topic record: fixed header then the name. */
#define TOPIC_REC_HDR 84u

typedef struct wsq__writer wsq__writer_t;

struct wsq_store {
    MDB_env *env;
    MDB_dbi dbi_meta;      /* "meta": format version, next topic id */
    MDB_dbi dbi_names;     /* "names": topic name -> id (u32 BE) */
    MDB_dbi dbi_topics;    /* "topics": id (u32 BE) -> topic record */
    MDB_dbi dbi_msgs;      /* "messages": MSG key -> MSG value */
    MDB_dbi dbi_consumers; /* "consumers": consumer key -> cstate */
    MDB_dbi dbi_parts;     /* "parts": part key -> a piece of a large payload (format 2) */
    /* "dedup": topic id (u32 BE) | publish id -> seq (u64 LE) | expiry (i64 LE, ms), and
     * "dedup_exp": expiry (u64 BE) | topic id (u32 BE) | publish id -> "" (trimming by age).
     * Opened by a writer (created when missing); a reader never needs them. */
    MDB_dbi dbi_dedup, dbi_dedup_exp;
    bool has_dedup;
    bool has_parts;        /* false: a read-only look at a format 1 store without that table */
    uint32_t part_max;     /* payload bytes per part; values longer than this are split */
    wsq_store_opts_t opts; /* copy; opts.path points to path */
    char *path;
    uint32_t format;
    uint32_t format_before; /* on disk before this open (0: created by it) */
    int lock_fd;            /* -1 unless WSQ_STORE_EXCLUSIVE */
    bool readonly;
    /* Every transaction of this process holds maplock shared; map growth holds it exclusively,
     * because mdb_env_set_mapsize under a live read transaction would remap under its feet. */
    pthread_rwlock_t maplock;
    _Atomic uint64_t map_size;
    wsq__writer_t *writer; /* NULL when read-only */
};

/* Encoding of records */
void wsq__msg_key(unsigned char *key, uint32_t topic_id, uint64_t seq);
void wsq__part_key(unsigned char *key, uint32_t topic_id, uint64_t seq, uint32_t part);
/* Payload length of a message value (of a parted one too); false when the value is malformed. */
bool wsq__msg_len(const MDB_val *v, uint64_t *len);
/* The running checksum of a payload in the algorithm the message header hdr names (start with
 * 0, feed the payload in order, in pieces if need be), and whether the finished value matches
 * the header's checksum. */
uint32_t wsq__msg_crc_update(const unsigned char *hdr, uint32_t crc, const void *data, size_t len);
bool wsq__msg_crc_ok(const unsigned char *hdr, uint32_t crc);

/* Calls fn on each part of the parted message (topic_id, seq) in order, within txn. Returns
 * WSQ_ERR_CORRUPT when the parts do not add up to len bytes. */
typedef void (*wsq__part_fn)(void *arg, const void *data, size_t len);
wsq_err wsq__parts_walk(MDB_txn *txn, wsq_store_t *store, uint32_t topic_id, uint64_t seq,
                        uint64_t len, wsq__part_fn fn, void *arg);
size_t wsq__topic_rec_encode(const wsq__topic_rec_t *t, unsigned char *buf);
wsq_err wsq__topic_rec_decode(wsq__topic_rec_t *t, const void *buf, size_t len);
void wsq__topic_info_from_rec(wsq_topic_info_t *info, const wsq__topic_rec_t *t);
size_t wsq__consumer_key(unsigned char *key, uint32_t topic_id, const char *name, size_t len);

/* Read transactions: begin takes maplock shared and handles MDB_MAP_RESIZED; end aborts and
 * releases. */
wsq_err wsq__rtxn_begin(wsq_store_t *store, MDB_txn **txn);
void wsq__rtxn_end(wsq_store_t *store, MDB_txn **txn);

/* Reads a topic record by id inside txn. WSQ_ERR_NOTFOUND (also while it is being deleted),
 * WSQ_ERR_CORRUPT, WSQ_ERR_IO. */
wsq_err wsq__topic_load(MDB_txn *txn, wsq_store_t *store, uint32_t id, wsq__topic_rec_t *t);
/* As wsq__topic_load, but also returns records being deleted (t->flags says so). */
wsq_err wsq__topic_load_raw(MDB_txn *txn, wsq_store_t *store, uint32_t id, wsq__topic_rec_t *t);

/* Maps an LMDB or errno error to wsq_err. */
wsq_err wsq__mdb_err(int rc);

/* Writer lifecycle (writer.c). create loads the topic cache and schedules the removal of what
 * interrupted topic deletes left; destroy stops the writer (as wsq_store_stop), fails what is
 * still queued with WSQ_ERR_CLOSED and frees it. */
wsq_err wsq__writer_create(wsq_store_t *store);
void wsq__writer_destroy(wsq_store_t *store);

int64_t wsq__now(const wsq_store_t *store);

#endif
