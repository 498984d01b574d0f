/*
 * wsq storage: a durable, append-only log per topic, with durable consumer positions.
 *
 * One store is one data directory. Exactly one process writes it at a time: wsqd, or wsqctl when no
 * wsqd runs (WSQ_STORE_EXCLUSIVE takes the directory lock that guarantees this). Any number of
 * processes may read it concurrently. (This paragraph describes the LMDB backend; see Backends.)
 *
 * Threads
 *   - Inside a process, every mutation goes through the store's writer thread, which owns the only
 *     write transactions: callers submit requests (wsq_wreq_t) from any thread, the writer batches
 *     everything pending into one transaction (group commit), commits with the configured sync and
 *     only then completes each request.
 *   - Reads (wsq_store_read, *_lookup, *_list, *_get, stats, check) may be called from any thread,
 *     concurrently, and each uses its own short read transaction that never outlives the call.
 *     Callbacks invoked during a read run inside that transaction: they must copy what they keep
 *     and must not block.
 *
 * This header has no LMDB type in it, so that a second backend is an addition, not a rewrite.
 *
 * Backends
 *   The calls below are what a storage backend implements. LMDB (storage/lmdb/) is the only one
 *   today; a later backend (Redis) implements the same calls with the errors, ownership and thread
 *   rules documented here.
 *   - Written once for every backend (storage/): wsq_wreq_new, wsq_wreq_free, wsq_store_call (on
 *     top of wsq_store_submit), the checks wsq_store_submit and wsq_store_submit_list make before
 *     queueing (storage/wreq.c), and the consumer-state rules and encoding (wsq/cstate.h).
 *   - Every backend provides:
 *     - lifecycle: wsq_store_opts_init, wsq_store_open, wsq_store_close, wsq_store_format,
 *       wsq_store_format_before, wsq_store_backend_version, wsq_store_now_ms;
 *     - the writer: wsq_store_start, wsq_store_stop, wsq_store_submit, wsq_store_submit_list,
 *       wsq_store_queue_depth, wsq_store_retention_changed, every wsq_wop_t, and the calls of
 *       the retention, on_commit and done callbacks on the thread and at the moment stated for
 *       each;
 *     - the reads: wsq_store_topic_lookup, wsq_store_topic_get, wsq_store_topic_list,
 *       wsq_store_read, wsq_store_seq_at_time, wsq_store_consumer_get, wsq_store_consumer_list;
 *     - wsq_store_stats, except for its LMDB fields (below).
 *   - LMDB only: these exist because of LMDB's data file, memory map, reader slots or directory
 *     lock, and a backend without those has nothing to provide for them.
 *     - wsq_store_compact, wsq_store_check, wsq_store_map_usage, wsq_store_lock_holder;
 *     - in wsq_store_stats_t: map_size, map_size_max, map_used, page_size, pages_used,
 *       pages_free, readers_used, readers_max, file_bytes, last_txn;
 *     - in wsq_store_opts_t: path (the data directory), map_size_initial, map_size_max,
 *       max_readers and the flag WSQ_STORE_EXCLUSIVE (the data-dir lock);
 *     - WSQ_FORMAT_VERSION numbers the LMDB on-disk format, and the wsq_sync_t comments describe
 *       what each level means for LMDB's fsyncs.
 */
#ifndef WSQ_STORE_H
#define WSQ_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsq/cstate.h"
#include "wsq/err.h"
#include "wsq/topic.h"

/* On-disk format written by this build. A store with a higher version is refused; a writer
 * upgrades an older one in place (2: payloads longer than a page are stored in page-sized parts;
 * 3: new messages carry a CRC-32C of payload, timestamp and flags, where format 2 had zlib's
 * CRC-32 of the payload; messages already stored keep theirs and are checked with it; 4: messages
 * may carry headers, WSQ_MSG_HEADERS).
 */
#define WSQ_FORMAT_VERSION 4

typedef struct wsq_store wsq_store_t;

/* Durability of a commit (storage.sync). */
typedef enum {
    WSQ_SYNC_FULL = 0, /* fsync data and meta page: a confirmed message survives power loss */
    WSQ_SYNC_BATCH, /* fsync data, not the meta page: the last commit may roll back on power loss */
    WSQ_SYNC_NONE,  /* no fsync: survives a process crash, not an OS crash. NOT durable. */
} wsq_sync_t;

/* What a topic does at its message/byte limits. */
typedef enum {
    WSQ_DISCARD_OLD = 0, /* trim the oldest messages (consumers behind them get a gap) */
    WSQ_DISCARD_NEW,     /* refuse new appends with WSQ_ERR_TOPIC_FULL */
} wsq_discard_t;

/* Retention policy of one topic. 0 means "no limit" for each limit. */
typedef struct {
    uint64_t max_messages;
    uint64_t max_bytes; /* payload bytes */
    int64_t max_age_ms; /* always trims, whatever the discard policy */
    wsq_discard_t discard;
    int64_t dedup_window_ms; /* how long an APPEND's id is remembered (0: ids are ignored) */
} wsq_retention_t;

/* Resolves the retention policy of a topic. Called on the writer thread, with the topic name,
 * whenever the writer first loads a topic and after wsq_store_retention_changed(). Must not block
 * and must fill *out (it is zeroed before the call). */
typedef void (*wsq_retention_fn)(void *arg, const char *topic, size_t len, wsq_retention_t *out);

/* A topic whose visible state changed in a commit. */
typedef struct {
    uint32_t id;
    uint64_t first_seq; /* first retained seq (== next_seq when the topic is empty) */
    uint64_t next_seq;  /* seq the next append gets */
    uint32_t appended;  /* messages appended to it by this commit */
    bool trimmed;       /* messages were removed from its head (retention or purge) */
    bool deleted;       /* the topic itself was deleted */
    bool created;       /* the topic was created by this commit */
} wsq_commit_topic_t;

/* Summary of one batch, for on_commit. Valid only during the callback. */
typedef struct {
    wsq_err err;                      /* WSQ_OK: committed; else why the whole batch failed */
    const char *detail;               /* err WSQ_ERR_STORAGE_FAILED: what failed, as the system
                                       * said it ("commit: Input/output error"); else NULL */
    uint64_t txn_id;                  /* increasing commit counter */
    uint32_t n_requests;              /* requests completed by this commit */
    uint32_t n_appends;               /* messages appended */
    uint32_t n_refused_full;          /* requests refused with WSQ_ERR_STORAGE_FULL while the rest
                                       * of the batch committed (the store is at its maximum) */
    uint32_t n_topics;                /* entries in topics */
    const wsq_commit_topic_t *topics; /* topics whose state changed */
    uint64_t queue_msgs;              /* requests still waiting after this commit */
    uint64_t queue_bytes;             /* payload bytes still waiting after this commit */
    int64_t commit_ns;                /* duration of mdb commit (including sync), ns */
} wsq_commit_info_t;

/* Called on the writer thread after every batch, after every request of it has been completed:
 * after a commit (err == WSQ_OK) or after the batch failed as a whole (err set, no topic
 * changed). Must not block; typically it wakes other threads. */
typedef void (*wsq_commit_fn)(void *arg, const wsq_commit_info_t *info);

/* Clock for message timestamps and age retention, in ms. Tests inject one; NULL = realtime. */
typedef int64_t (*wsq_clock_fn)(void *arg);

/* wsq_store_opts_t.flags */
#define WSQ_STORE_READONLY 0x1u  /* read-only: no writer, no lock; fails with WSQ_ERR_NOSTORE */
#define WSQ_STORE_CREATE 0x2u    /* create the directory and store if missing */
#define WSQ_STORE_EXCLUSIVE 0x4u /* take the data-dir lock (wsqd, offline wsqctl mutations) */

typedef struct {
    const char *path;          /* data directory */
    unsigned flags;            /* WSQ_STORE_* */
    wsq_sync_t sync;           /* default WSQ_SYNC_FULL */
    uint64_t map_size_initial; /* bytes; 0 = 64 MiB (or the existing size, if larger) */
    uint64_t map_size_max;     /* bytes; 0 = 1 TiB. Growth stops here: WSQ_ERR_STORAGE_FULL */
    unsigned max_readers;      /* LMDB reader slots shared by all processes; 0 = 1024 */
    unsigned batch_max_msgs;   /* requests per write transaction; 0 = 4096 */
    size_t batch_max_bytes;    /* payload bytes per write transaction; 0 = 8 MiB */
    unsigned trim_chunk;       /* deletes per transaction for retention and purge; 0 = 10000 */
    wsq_retention_fn retention;
    void *retention_arg;
    wsq_commit_fn on_commit;
    void *commit_arg;
    wsq_clock_fn clock;
    void *clock_arg;
} wsq_store_opts_t;

/* Sets every option to its default (all zero; path NULL). */
void wsq_store_opts_init(wsq_store_opts_t *opts);

/* Opens (and with WSQ_STORE_CREATE creates) the store at opts->path.
 * Runs the stale-reader check, writes or checks the format version.
 * Errors: WSQ_ERR_NOSTORE (no store and no CREATE), WSQ_ERR_FORMAT_NEWER, WSQ_ERR_CORRUPT,
 * WSQ_ERR_BUSY (EXCLUSIVE and the lock is held: *busy_pid, when not NULL, gets the holder's pid or
 * 0), WSQ_ERR_PERM, WSQ_ERR_IO, WSQ_ERR_NOMEM, WSQ_ERR_INVAL.
 * On success *out owns the store until wsq_store_close. Any thread; one store per directory per
 * process. */
wsq_err wsq_store_open(const wsq_store_opts_t *opts, wsq_store_t **out, long *busy_pid);

/* Stops the writer if it runs (as wsq_store_stop), closes the environment, releases the lock and
 * frees the store. NULL is a no-op. No other call on the store may be running. */
void wsq_store_close(wsq_store_t *store);

/* Format version found on disk (the build's own for a new store). */
uint32_t wsq_store_format(const wsq_store_t *store);

/* The format the store had before this open: lower than wsq_store_format() when the open upgraded
 * it, 0 when the open created it. */
uint32_t wsq_store_format_before(const wsq_store_t *store);

/* The storage backend and its version, e.g. "LMDB 0.9.24". Static storage. */
const char *wsq_store_backend_version(void);

/* Current time in ms from the store's clock. Any thread. */
int64_t wsq_store_now_ms(const wsq_store_t *store);

/* ---------------------------------------------------------------------------------------------
 * The writer
 * ------------------------------------------------------------------------------------------- */

/* Starts the writer thread. WSQ_ERR_INVAL on a read-only store or when already started. */
wsq_err wsq_store_start(wsq_store_t *store);

/* Stops accepting requests (later submits fail with WSQ_ERR_CLOSED), commits and completes every
 * request already submitted, including multi-transaction purges, then joins the writer thread.
 * Idempotent; blocks. Must not be called from a done or on_commit callback. */
void wsq_store_stop(wsq_store_t *store);

/* Writer operations. */
typedef enum {
    WSQ_WOP_APPEND = 1,         /* append one message to topic (created if missing) */
    WSQ_WOP_TOPIC_ENSURE,       /* create topic if missing; fills topic_id, topic_epoch */
    WSQ_WOP_TOPIC_DELETE,       /* delete a topic with all its messages and consumers */
    WSQ_WOP_PURGE,              /* remove messages from a topic's head (purge_* fields) */
    WSQ_WOP_CONSUMER_OPEN,      /* get or create consumer (topic created if missing); fills state */
    WSQ_WOP_CONSUMER_ACK,       /* ack seq. The consumer ops may name the topic by topic_id instead
                                 * of by name (topic_len 0). */
    WSQ_WOP_CONSUMER_ACK_UPTO,  /* ack every seq <= seq */
    WSQ_WOP_CONSUMER_DELIVERED, /* record one delivery of seq */
    WSQ_WOP_CONSUMER_NACK,      /* nack seq, redeliver from due_ms */
    WSQ_WOP_CONSUMER_DELETE,    /* delete consumer */
    WSQ_WOP_BARRIER,            /* nothing; completes once everything submitted before it did */
    WSQ_WOP_CONSUMER_PUT, /* replace an existing consumer's state with req->state (the broker's
                           * consumer thread persists its in-memory copy this way; several PUTs
                           * in one batch cost one write) */
    WSQ_WOP_DEAD_LETTER,  /* in one transaction: append data (as APPEND, wsq_wreq_dead_letter) to
                           * topic, the dead-letter topic (created if missing), and replace the
                           * state of consumer of topic src_topic_id with req->state (as
                           * CONSUMER_PUT: the state that acknowledges the message). Both or
                           * neither: WSQ_ERR_NOTFOUND (no such consumer) or WSQ_ERR_BAD_SEQ (the
                           * state does not fit the topic) append nothing, and an append refused
                           * (topic_full, storage_full, ...) leaves the consumer as it was. Out:
                           * seq and topic_id of the copy. */
} wsq_wop_t;

/* Does a request of op append a message (APPEND, DEAD_LETTER)? */
static inline bool wsq_wop_appends(wsq_wop_t op)
{
    return op == WSQ_WOP_APPEND || op == WSQ_WOP_DEAD_LETTER;
}

/* WSQ_WOP_PURGE modes */
typedef enum {
    WSQ_PURGE_ALL = 1, /* every message; next seq is kept */
    WSQ_PURGE_BEFORE,  /* every message with seq < purge_seq */
    WSQ_PURGE_OLDER,   /* every message with ts < purge_ts_ms */
} wsq_purge_t;

/* CONSUMER_OPEN seq for "start after the last message" (from: latest). */
#define WSQ_SEQ_END UINT64_MAX

/* Message flags */
#define WSQ_MSG_BINARY 0x1u /* binary payload; otherwise UTF-8 text */
/* The message has headers (format 4). An APPEND's data is then its body: the headers' length n
 * (u32 LE), n bytes of headers (a block as wsq/proto.h "Message headers" describes; the store
 * does not look inside), then the payload; len is the body's length. A read splits the body
 * again (wsq_msg_view_t). */
#define WSQ_MSG_HEADERS 0x2u

/* Longest publish id (wsq_wreq_t.id): an APPEND with an id is stored once per topic within the
 * topic's dedup_window; a repeat stores nothing and gets the first one's seq with dup set. */
#define WSQ_MSG_ID_MAX 128

/* Longest payload the store takes (an APPEND above it is refused with WSQ_ERR_TOO_LARGE). */
#define WSQ_MSG_MAX_LEN ((size_t)UINT32_MAX)

typedef struct wsq_wreq wsq_wreq_t;

/* Completion of a request. Runs on the writer thread after the transaction that carried the request
 * committed (err == WSQ_OK), or failed (err set; nothing of it was written). Ownership of req
 * returns to the callback, which must eventually wsq_wreq_free it. Must not block, must not call
 * wsq_store_stop; it may submit new requests. */
typedef void (*wsq_wreq_fn)(wsq_wreq_t *req, void *arg);

struct wsq_wreq {
    wsq_wreq_t *next;  /* queue link: free for the owner's lists while not submitted */
    wsq_wop_t op;      /* in */
    wsq_err err;       /* out */
    wsq_wreq_fn done;  /* in; NULL: the store frees the request itself on completion */
    void *arg;         /* in: passed to done */
    uint64_t user[2];  /* caller's data; the store never touches it */
    const char *topic; /* in: topic name (points into the request; see wsq_wreq_new) */
    uint16_t topic_len;
    uint16_t consumer_len;
    uint32_t flags;         /* in (APPEND): WSQ_MSG_*; in (CONSUMER_OPEN): WSQ_CSTATE_* of a NEW
                             * consumer (an existing one keeps its own: the caller compares) */
    const char *consumer;   /* in (CONSUMER_*): consumer name */
    uint32_t topic_id;      /* out: id of topic */
    uint64_t topic_epoch;   /* out: epoch of topic */
    uint64_t seq;           /* out (APPEND): assigned seq; in (ACK, ACK_UPTO, DELIVERED, NACK);
                             * in (CONSUMER_OPEN): ack floor of a NEW consumer (0: from the first
                             * message; WSQ_SEQ_END: after the last); clamped to the last seq */
    int64_t ts_ms;          /* out (APPEND): broker timestamp; in (NACK): redeliver from */
    wsq_purge_t purge_mode; /* in (PURGE) */
    uint64_t purge_seq;     /* in (PURGE_BEFORE) */
    int64_t purge_ts_ms;    /* in (PURGE_OLDER) */
    uint64_t removed;       /* out (PURGE, TOPIC_DELETE): messages removed */
    uint32_t count;         /* out (DELIVERED): delivery count including this one */
    bool created;           /* out (TOPIC_ENSURE, CONSUMER_OPEN): newly created */
    wsq_cstate_t state;     /* out (CONSUMER_OPEN): the consumer's state; in (CONSUMER_PUT).
                             * Owned by the request. */
    size_t len;             /* in (APPEND): payload length (with WSQ_MSG_HEADERS: the body's) */
    unsigned char *data;    /* in (APPEND): payload or body (points into the request) */
    uint32_t crc;           /* set by submit (APPEND): CRC-32C of the payload, computed on the
                             * submitting thread so the single writer does not have to */
    uint32_t src_topic_id;  /* in (DEAD_LETTER): the topic of the consumer */
    const char *id;         /* in (APPEND): the publish id, id_len bytes (points into the
                             * request: see wsq_wreq_append) */
    uint8_t id_len;         /* in (APPEND): 0 for none */
    bool dup;               /* out (APPEND): the id was seen within the dedup window: nothing was
                             * stored, seq is the first publish's */
};

/* Allocates a request of op for topic[0..topic_len) with room for payload_len payload bytes
 * (req->data, to be filled by the caller) and the consumer name (copied when not NULL).
 * Every other field is zero. Returns NULL on allocation failure. Any thread. */
wsq_wreq_t *wsq_wreq_new(wsq_wop_t op, const char *topic, size_t topic_len, const char *consumer,
                         size_t consumer_len, size_t payload_len);

/* An APPEND of payload data[0..len) with flags (WSQ_MSG_BINARY), the headers block
 * headers[0..headers_len) (0: none; else WSQ_MSG_HEADERS is set and data holds the body, see
 * WSQ_MSG_HEADERS) and the publish id id[0..id_len) (0: none), with `extra` more bytes after the
 * body for the caller (at data + len). NULL on allocation failure, or when the body would pass
 * WSQ_MSG_MAX_LEN or the id WSQ_MSG_ID_MAX. Any thread. */
wsq_wreq_t *wsq_wreq_append(const char *topic, size_t topic_len, const void *data, size_t len,
                            uint32_t flags, const void *headers, size_t headers_len, const char *id,
                            size_t id_len, size_t extra);

/* A DEAD_LETTER of payload data[0..len) with flags and headers (as wsq_wreq_append) to
 * dead_topic, for consumer of topic src_topic_id; the caller fills req->state with the
 * consumer's state that acknowledges the message. NULL as wsq_wreq_append. Any thread. */
wsq_wreq_t *wsq_wreq_dead_letter(const char *dead_topic, size_t dead_topic_len,
                                 uint32_t src_topic_id, const char *consumer, size_t consumer_len,
                                 const void *data, size_t len, uint32_t flags, const void *headers,
                                 size_t headers_len);

/* Frees a request (and its state). *reqp is set to NULL. NULL or *reqp NULL is a no-op. */
void wsq_wreq_free(wsq_wreq_t **reqp);

/* Queues req for the writer. On success the store owns req until its done callback runs.
 * Errors (req stays the caller's, done is not called): WSQ_ERR_CLOSED (stopped or not started),
 * WSQ_ERR_INVAL (bad op or fields), WSQ_ERR_BAD_TOPIC. Any thread. */
wsq_err wsq_store_submit(wsq_store_t *store, wsq_wreq_t *req);

/* Queues a list linked through next (NULL-terminated) with one lock, in order. Either all are
 * queued or none (error as for wsq_store_submit, for the first bad request). Any thread. */
wsq_err wsq_store_submit_list(wsq_store_t *store, wsq_wreq_t *head);

/* Submits req and waits for its completion; req->done and req->arg are overwritten. Returns
 * req->err (or the submit error); the caller keeps req either way. Not on the writer thread. */
wsq_err wsq_store_call(wsq_store_t *store, wsq_wreq_t *req);

/* Requests waiting for the writer (not yet in a transaction) and their payload bytes. Any thread;
 * the values are a snapshot. */
void wsq_store_queue_depth(wsq_store_t *store, uint64_t *msgs, uint64_t *bytes);

/* Makes the writer re-resolve every topic's retention policy (after a config reload). */
void wsq_store_retention_changed(wsq_store_t *store);

/* ---------------------------------------------------------------------------------------------
 * Reads
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    uint32_t id;
    uint64_t epoch;       /* random, chosen at creation */
    uint64_t first_seq;   /* first retained seq; == next_seq when empty */
    uint64_t next_seq;    /* seq of the next append; last seq = next_seq - 1 */
    uint64_t count;       /* retained messages */
    uint64_t bytes;       /* retained payload bytes */
    int64_t created_ms;   /* broker time of creation */
    int64_t first_ts_ms;  /* timestamp of the first retained message; 0 when empty */
    uint64_t purged_upto; /* highest seq removed by an explicit purge; seqs below first_seq and
                           * above it were removed by retention */
    char name[WSQ_TOPIC_MAX + 1];
} wsq_topic_info_t;

/* Looks a topic up by name. WSQ_ERR_NOTFOUND, WSQ_ERR_BAD_TOPIC, WSQ_ERR_IO. */
wsq_err wsq_store_topic_lookup(wsq_store_t *store, const char *name, size_t len,
                               wsq_topic_info_t *out);

/* Looks a topic up by id. WSQ_ERR_NOTFOUND, WSQ_ERR_IO. */
wsq_err wsq_store_topic_get(wsq_store_t *store, uint32_t id, wsq_topic_info_t *out);

/* Lists up to max topics in name order, starting after the name `after` (NULL: from the first).
 * *n gets the number filled. Page through with the last name returned; each page is its own read
 * transaction, so output between pages never pins the store. */
wsq_err wsq_store_topic_list(wsq_store_t *store, const char *after, unsigned max,
                             wsq_topic_info_t *out, unsigned *n);

/* One message, valid only during the read callback. */
typedef struct {
    uint64_t seq;
    int64_t ts_ms;
    uint32_t flags; /* WSQ_MSG_* */
    size_t len;
    const void *data;    /* checked against the message's checksum before the callback sees it */
    const void *headers; /* WSQ_MSG_HEADERS: the headers block, headers_len bytes; else NULL */
    size_t headers_len;
} wsq_msg_view_t;

/* Read callback: return 0 to continue, nonzero to stop after this message. */
typedef int (*wsq_read_fn)(void *arg, const wsq_msg_view_t *msg);

typedef struct {
    uint64_t epoch;       /* the topic's epoch */
    uint64_t first_seq;   /* first retained seq at the time of the read */
    uint64_t next_seq;    /* next seq at the time of the read */
    uint64_t last_seq;    /* seq of the last message passed to the callback; 0 when none */
    uint32_t count;       /* messages passed to the callback */
    uint64_t bytes;       /* their payload bytes */
    bool gap;             /* from < first_seq: [from, first_seq) no longer exists */
    uint64_t purged_upto; /* see wsq_topic_info_t: tells a purge gap from a retention gap */
    uint64_t corrupt_seq; /* the read stopped before this message: its payload does not match
                           * its checksum (0: none). It is never passed to the callback. */
} wsq_read_info_t;

/* Reads messages of topic_id with seq >= from, in seq order, at most max_count messages and about
 * max_bytes payload bytes (at least one message is read when one exists, whatever its size),
 * passing each to fn inside one short read transaction. info (may be NULL) is always filled on
 * success, also when nothing was read. Each message's checksum is verified before fn sees it;
 * the first that fails stops the read and is named in info->corrupt_seq (still WSQ_OK: the
 * caller skips it and reads on from corrupt_seq + 1). With fn NULL nothing is verified.
 * Errors: WSQ_ERR_NOTFOUND (no such topic), WSQ_ERR_CORRUPT, WSQ_ERR_IO. */
wsq_err wsq_store_read(wsq_store_t *store, uint32_t topic_id, uint64_t from, uint32_t max_count,
                       uint64_t max_bytes, wsq_read_fn fn, void *arg, wsq_read_info_t *info);

/* Finds the first retained seq whose timestamp is >= ts_ms (binary search over the topic). *seq
 * gets next_seq when no such message exists. WSQ_ERR_NOTFOUND (no such topic), WSQ_ERR_IO. */
wsq_err wsq_store_seq_at_time(wsq_store_t *store, uint32_t topic_id, int64_t ts_ms, uint64_t *seq);

/* Reads a consumer's state into *out (initialised by the caller; the caller frees it with
 * wsq_cstate_fini). WSQ_ERR_NOTFOUND, WSQ_ERR_CORRUPT, WSQ_ERR_IO. */
wsq_err wsq_store_consumer_get(wsq_store_t *store, uint32_t topic_id, const char *name, size_t len,
                               wsq_cstate_t *out);

typedef struct {
    uint32_t topic_id;
    char name[WSQ_CONSUMER_NAME_MAX + 1];
    uint64_t ack_floor;
    uint64_t delivered_upto;
    uint64_t pending;       /* delivered, not acked */
    uint64_t lag;           /* retained messages not acked */
    uint32_t n_acked;       /* individual acks above the floor */
    uint32_t max_delivered; /* highest delivery count among unacked messages */
    int64_t created_ms;
    int64_t last_seen_ms;
    bool shared; /* a shared consumer (WSQ_CSTATE_SHARED) */
} wsq_consumer_info_t;

/* Lists up to max consumers, ordered by (topic id, name), of one topic (topic_id != 0) or of all.
 * Starts after (after_topic, after_name) when after_name is not NULL. Each call is one read
 * transaction. */
wsq_err wsq_store_consumer_list(wsq_store_t *store, uint32_t topic_id, uint32_t after_topic,
                                const char *after_name, unsigned max, wsq_consumer_info_t *out,
                                unsigned *n);

typedef struct {
    uint32_t format;        /* on-disk format version */
    uint64_t map_size;      /* current map size, bytes */
    uint64_t map_size_max;  /* configured maximum (this process's option) */
    uint64_t map_used;      /* bytes in use up to the highest page (last_pgno + 1) */
    uint32_t page_size;     /* bytes */
    uint64_t pages_used;    /* last_pgno + 1 */
    uint64_t pages_free;    /* pages on the free list (reusable inside the file) */
    uint32_t readers_used;  /* reader slots in use */
    uint32_t readers_max;   /* reader slots */
    uint64_t file_bytes;    /* size of the data file on disk */
    uint64_t topics;        /* topics */
    uint64_t messages;      /* retained messages, all topics */
    uint64_t message_bytes; /* retained payload bytes, all topics */
    uint64_t consumers;     /* consumers, all topics */
    uint64_t last_txn;      /* LMDB transaction id of the last commit */
} wsq_store_stats_t;

/* LMDB only. Map use without walking anything (cheap enough for every /metrics scrape): bytes up to
 * the highest page in use, the current map size and the configured maximum. Any thread. */
void wsq_store_map_usage(wsq_store_t *store, uint64_t *used, uint64_t *size, uint64_t *max);

/* Storage statistics. Walks the free list, so it costs more than a read; meant for admin use.
 * Every backend provides it; the fields from map_size to file_bytes, and last_txn, are LMDB's. */
wsq_err wsq_store_stats(wsq_store_t *store, wsq_store_stats_t *out);

/* One invariant violation found by wsq_store_check (LMDB only). */
typedef void (*wsq_check_fn)(void *arg, const char *topic, const char *what);

/* LMDB only. Verifies every invariant: per topic, messages are exactly the contiguous seqs
 * [first_seq, next_seq) with count/bytes matching, CRCs match, keys are well formed; every
 * consumer decodes, holds its invariants and points inside its topic (ack_floor < next_seq); every
 * consumer and message belongs to an existing topic. Reports each violation to fn and counts them
 * in *violations. Works in bounded read transactions. WSQ_ERR_IO on read failure. */
wsq_err wsq_store_check(wsq_store_t *store, wsq_check_fn fn, void *arg, uint64_t *violations);

/* LMDB only. Writes a compacted copy of the store into the empty or missing directory dest.
 * WSQ_ERR_EXISTS when dest holds a data file, WSQ_ERR_IO, WSQ_ERR_PERM. */
wsq_err wsq_store_compact(wsq_store_t *store, const char *dest);

/* LMDB only. Process id holding the data-dir lock of path (a running wsqd or an offline wsqctl
 * mutation), or 0 when nobody holds it. Does not open the store. */
long wsq_store_lock_holder(const char *path);

#endif
