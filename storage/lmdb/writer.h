/*
 * The writer's internals, shared by the files of the writer thread only (writer.c, topics.c,
 * consumers.c, retention.c, jobs.c, space.c, dedup.c). read.c, check.c and env.c do not include it:
 * they know the writer only through wsq__writer_create and wsq__writer_destroy (internal.h).
 *
 * Threads: every field and every function here belongs to the writer thread, except the fields
 * marked "shared with submitters", which are taken under the writer's lock (or are atomic), and
 * the lifecycle calls of writer.c, whose thread rules store.h states.
 *
 * Dependencies point one way: writer.c calls the others; jobs.c calls retention.c and topics.c;
 * retention.c and consumers.c call topics.c; topics.c and space.c call none of them.
 */
#ifndef WSQ_STORAGE_LMDB_WRITER_H
#define WSQ_STORAGE_LMDB_WRITER_H

#include "internal.h"
#include "wreq.h"

#define CONS_BUCKETS 1024u

typedef struct wsq__wtopic {
    wsq__topic_rec_t rec;      /* current state (inside the running txn) */
    wsq__topic_rec_t saved;    /* state before the running txn; valid when txn_dirty */
    wsq_retention_t ret;       /* resolved retention policy */
    bool ret_valid;            /* ret resolved since the last retention change */
    bool txn_dirty;            /* modified by the running txn: record must be written */
    bool txn_created;          /* created by the running txn: forget it on abort */
    bool txn_deleted;          /* deleted by the running txn: forget it on commit */
    bool trim_queued;          /* on the writer's trim list */
    bool trimmed;              /* head trimmed in the running txn (for on_commit) */
    uint32_t appended;         /* messages appended by the running txn */
    struct wsq__wtopic *hnext; /* name hash chain */
    struct wsq__wtopic *dnext; /* dirty list */
    struct wsq__wtopic *tnext; /* trim list */
} wsq__wtopic_t;

struct wsq__wcons; /* a consumer of the running txn (consumers.c) */
struct wsq__job;   /* a purge or topic delete in progress (jobs.c) */

struct wsq__writer {
    wsq_store_t *store;
    pthread_t thread;
    bool started;

    /* --- shared with submitters, under lock --- */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    wsq_wreq_t *qhead, *qtail;
    bool stopping;
    bool waiting;
    _Atomic uint64_t qmsgs, qbytes;
    _Atomic bool retention_changed;

    /* --- writer thread only --- */
    wsq__wtopic_t **by_id; /* index by topic id (ids are never reused) */
    uint32_t cap_id;
    wsq__wtopic_t **buckets; /* name hash */
    uint32_t nbuckets;
    uint32_t ntopics;
    uint32_t next_topic_id;
    uint32_t saved_next_topic_id;
    wsq__wtopic_t *dirty;
    wsq__wtopic_t *trim;
    struct wsq__wcons *cbuckets[CONS_BUCKETS];
    struct wsq__wcons *clist;
    struct wsq__job *jobs;
    wsq_commit_topic_t *ctopics;
    uint32_t cap_ctopics;
    uint64_t txn_id;
    int64_t dedup_next_trim; /* the earliest expiry of a remembered publish id (dedup.c) */
    wsq_err fatal; /* WSQ_ERR_STORAGE_FAILED after an I/O error or MDB_PANIC: every later request
                    * fails with it (see process()) */
    char fatal_detail[160]; /* what the last failed transaction hit, for the log */
    int64_t next_reader_check;
    MDB_txn *txn;
    MDB_cursor *mcur;    /* messages cursor of the running txn */
    MDB_cursor *pcur;    /* parts cursor of the running txn */
    unsigned budget;     /* deletes left in the running txn */
    unsigned budget_max; /* deletes per txn; shrinks while the map is full */
    int64_t txn_now;     /* the clock, read once per transaction */
    wsq__wtopic_t *last; /* the topic resolved last (batches often repeat one topic) */
    bool map_full;       /* the last failed txn hit MDB_MAP_FULL (not ENOSPC) */
    bool ballast;        /* data.reserve holds disk space for deletions on a full disk */
    bool ballast_out;    /* it was given up: refuse appends until a commit frees pages */
    bool any_age;        /* some topic has a max_age policy */
};

/* --- topics.c: the topic cache ------------------------------------------------------------- */

/* FNV-1a of p[0..n), seeded; the hash of both caches. */
uint32_t wsq__hash_bytes(const void *p, size_t n, uint32_t seed);
/* The cached topic with id, or NULL. */
wsq__wtopic_t *wsq__wtopic_by_id(wsq__writer_t *w, uint32_t id);
/* Adds t (not yet cached) to both indexes. WSQ_ERR_NOMEM, and then t is not cached. */
wsq_err wsq__wtopic_insert(wsq__writer_t *w, wsq__wtopic_t *t);
/* Marks t as modified by the running txn, snapshotting it first. */
void wsq__wtopic_touch(wsq__writer_t *w, wsq__wtopic_t *t);
/* Resolves the topic of r (by id for consumer ops that carry one, else by name), creating it when
 * create is set. */
wsq_err wsq__wtopic_for(wsq__writer_t *w, wsq_wreq_t *r, bool create, wsq__wtopic_t **out);
/* Writes the records of the topics the running txn changed, and the next topic id. */
wsq_err wsq__wtopics_flush(wsq__writer_t *w);
/* After an abort: restores every topic the txn touched and forgets those it created. */
void wsq__wtopics_rollback(wsq__writer_t *w);
/* After a commit: fills w->ctopics with the changed topics (returns how many) and adds their
 * appends to *nappends; forgets the topics the txn deleted. */
uint32_t wsq__wtopics_settle(wsq__writer_t *w, uint32_t *nappends);

/* --- consumers.c: consumer requests and their cache for one txn ------------------------------ */

/* Applies a consumer request (CONSUMER_*) to the cache of the running txn. */
wsq_err wsq__wcons_op(wsq__writer_t *w, wsq_wreq_t *r);
/* Would the CONSUMER_PUT r succeed (the consumer exists, the state fits its topic)? Changes
 * nothing. */
wsq_err wsq__wcons_check_put(wsq__writer_t *w, wsq_wreq_t *r);
/* Writes (or deletes) every consumer the running txn changed. */
wsq_err wsq__wcons_flush(wsq__writer_t *w);
/* Empties the cache (after a commit or an abort). */
void wsq__wcons_clear(wsq__writer_t *w);

/* --- retention.c: limits and head trims ---------------------------------------------------- */

typedef enum { TRIM_UPTO, TRIM_OLDER, TRIM_RETENTION } wsq__trim_mode_t;

/* t's retention policy, resolved through the store's callback when it is not yet. */
const wsq_retention_t *wsq__retention_policy(wsq__writer_t *w, wsq__wtopic_t *t);
/* Whether t holds more than its (resolved) policy allows at now. */
bool wsq__retention_over(const wsq__wtopic_t *t, int64_t now);
/* Puts t on the trim list (once). */
void wsq__retention_enqueue(wsq__writer_t *w, wsq__wtopic_t *t);
/* Removes messages from the head of t while the mode's condition holds and budget lasts.
 * Returns WSQ_OK with *done set when the condition no longer holds (or the topic is empty). */
wsq_err wsq__trim_head(wsq__writer_t *w, wsq__wtopic_t *t, wsq__trim_mode_t mode, uint64_t upto,
                       int64_t older, uint64_t *removed, bool *done);
/* Trims the topics on the trim list within the running txn's budget. */
wsq_err wsq__retention_run(wsq__writer_t *w);
/* Between batches: re-resolves the policies after wsq_store_retention_changed and queues every
 * topic over its limits (age limits expire without any write). */
void wsq__retention_scan(wsq__writer_t *w);
/* Empties the trim list (after an unrecoverable error). */
void wsq__retention_forget(wsq__writer_t *w);

/* --- jobs.c: purges and topic deletes over many txns ----------------------------------------- */

/* Starts the job of a PURGE or TOPIC_DELETE request within the running txn. */
wsq_err wsq__job_start(wsq__writer_t *w, wsq_wreq_t *r);
/* Advances every job within the running txn's budget. */
wsq_err wsq__jobs_run(wsq__writer_t *w);
/* After an abort: forgets the jobs the txn started and rewinds the others. */
void wsq__jobs_rollback(wsq__writer_t *w);
/* After a commit: makes the txn's progress of every job permanent. */
void wsq__jobs_settle(wsq__writer_t *w);
/* For a request of the committed batch: false when r's job is still running (r completes with its
 * job, later); else true, after freeing r's finished job if it had one: r completes now. */
bool wsq__jobs_release(wsq__writer_t *w, wsq_wreq_t *r);
/* Completes the requests of the jobs (of earlier batches) that finished; returns how many. */
uint32_t wsq__jobs_complete_done(wsq__writer_t *w);
/* Fails every job with err, completing its request. */
void wsq__jobs_fail(wsq__writer_t *w, wsq_err err);
/* Schedules the removal of what topic id left behind (a job that needs no request). */
wsq_err wsq__jobs_resume_delete(wsq__writer_t *w, uint32_t id);
/* Finds messages or consumers whose topic no longer exists (a topic delete interrupted by a
 * crash) and schedules their removal. */
wsq_err wsq__jobs_sweep_orphans(wsq__writer_t *w);
/* Frees every job and its request without completing them (the writer is being destroyed). */
void wsq__jobs_free(wsq__writer_t *w);

/* --- space.c: map growth, the reserve, the ballast, shedding -------------------------------- */

/* One batch's attempts to commit on a full store. Zero before the first attempt. */
typedef struct {
    bool reserve;     /* the map borrows the reserve above its maximum */
    bool ticked;      /* a tick transaction was tried */
    uint32_t refused; /* requests refused with WSQ_ERR_STORAGE_FULL */
} wsq__full_t;

/* After the batch's transaction failed with WSQ_ERR_STORAGE_FULL: takes the next step that may
 * let it commit (grow the map, tick, shed requests that need space, borrow the reserve, give up
 * the ballast, shrink the delete chunk). true: try the transaction again; false: nothing left. */
bool wsq__space_recover(wsq__writer_t *w, wsq_wreq_t *batch, wsq__full_t *full);
/* After the batch's last attempt (err): gives the reserve back and, after a commit, grows the
 * delete chunk again. */
void wsq__space_settle(wsq__writer_t *w, const wsq__full_t *full, wsq_err err);
/* Whether the disk has less room than one batch needs (tells ENOSPC from EIO at commit). */
bool wsq__space_disk_nearly_full(const wsq__writer_t *w);
/* Makes sure the ballast file holds its space, when the disk has room for it. */
void wsq__space_ballast_take(wsq__writer_t *w);

/* dedup.c: publish ids. find: is r's id remembered for t (then r->seq, r->dup are set)?
 * note: remember r's id after its append. trim: forget expired ids, a bounded chunk. */
wsq_err wsq__dedup_find(wsq__writer_t *w, wsq__wtopic_t *t, wsq_wreq_t *r, bool *dup);
wsq_err wsq__dedup_note(wsq__writer_t *w, wsq__wtopic_t *t, const wsq_wreq_t *r);
wsq_err wsq__dedup_trim(wsq__writer_t *w);

#endif
