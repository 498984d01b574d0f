/*
 * Space: growing the map, the reserve above its maximum, the ballast file that keeps disk space
 * for deletions, and shedding the requests that need space when none is left. Writer thread only;
 * map changes take store->maplock exclusively (see internal.h).
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "writer.h"

#define MAX_GROW_STEP (4ull << 30)

static bool is_growth(const wsq_wreq_t *r)
{
    return wsq_wop_appends(r->op) || r->op == WSQ_WOP_TOPIC_ENSURE ||
           r->op == WSQ_WOP_CONSUMER_OPEN;
}

static bool set_map(wsq__writer_t *w, uint64_t want)
{
    wsq_store_t *s = w->store;
    pthread_rwlock_wrlock(&s->maplock);
    int rc = mdb_env_set_mapsize(s->env, want); /* never below what is in use */
    if (rc == 0) {
        MDB_envinfo ei;
        mdb_env_info(s->env, &ei);
        atomic_store(&s->map_size, (uint64_t)ei.me_mapsize);
    }
    pthread_rwlock_unlock(&s->maplock);
    return rc == 0;
}

static bool grow_map(wsq__writer_t *w)
{
    wsq_store_t *s = w->store;
    uint64_t cur = atomic_load(&s->map_size);
    if (cur >= s->opts.map_size_max)
        return false;
    uint64_t step = cur < MAX_GROW_STEP ? cur : MAX_GROW_STEP;
    uint64_t want = cur + step > s->opts.map_size_max ? s->opts.map_size_max : cur + step;
    return set_map(w, want);
}

/* Deletes need copy-on-write pages too, so a store filled to map_size_max could never purge its
 * way out. Transactions that only free space may borrow this much above the maximum. */
static uint64_t map_reserve(const wsq_store_t *s)
{
    uint64_t r = s->opts.map_size_max / 64;
    if (r < (1u << 20))
        r = 1u << 20;
    if (r > (64u << 20))
        r = 64u << 20;
    return r;
}

/* A full map can borrow map_reserve() bytes above its maximum for deletions; a full DISK cannot
 * grow the file at all, and LMDB's deletes need fresh pages (copy on write) as soon as the
 * file's free pages are used up. So the writer keeps that much disk in a ballast file,
 * data.reserve, gives it up when a deletion hits ENOSPC, and takes it back once there is room
 * for it twice over. */
static void ballast_path(const wsq__writer_t *w, char *buf, size_t n)
{
    snprintf(buf, n, "%s/data.reserve", w->store->path);
}

void wsq__space_ballast_take(wsq__writer_t *w)
{
    char path[4096];
    ballast_path(w, path, sizeof(path));
    uint64_t want = map_reserve(w->store);
    struct stat st;
    if (stat(path, &st) == 0 && (uint64_t)st.st_blocks * 512 >= want) {
        w->ballast = true; /* kept from the last run */
        return;
    }
    struct statvfs sv;
    if (statvfs(w->store->path, &sv) != 0 || (uint64_t)sv.f_bavail * sv.f_frsize < 2 * want)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    int rc = posix_fallocate(fd, 0, (off_t)want);
    close(fd);
    if (rc != 0)
        unlink(path);
    else
        w->ballast = true;
}

static bool ballast_release(wsq__writer_t *w)
{
    if (!w->ballast)
        return false;
    char path[4096];
    ballast_path(w, path, sizeof(path));
    w->ballast = false;
    w->ballast_out = true; /* the space is for deletions and acks, never for new messages */
    return unlink(path) == 0;
}

bool wsq__space_disk_nearly_full(const wsq__writer_t *w)
{
    struct statvfs sv;
    return statvfs(w->store->path, &sv) == 0 &&
           (uint64_t)sv.f_bavail * sv.f_frsize < w->store->opts.batch_max_bytes + (4u << 20);
}

/* Commits a tiny transaction. LMDB reuses pages freed by transaction T only from T+2 on, so after
 * a purge a full store needs one more commit before the freed pages can take new messages. */
static bool tick(wsq__writer_t *w)
{
    MDB_txn *txn;
    if (mdb_txn_begin(w->store->env, NULL, 0, &txn) != 0)
        return false;
    unsigned char b[8];
    wsq__put_le64(b, w->txn_id);
    MDB_val k = {4, "tick"}, v = {8, b};
    if (mdb_put(txn, w->store->dbi_meta, &k, &v, 0) != 0) {
        mdb_txn_abort(txn);
        return false;
    }
    return mdb_txn_commit(txn) == 0;
}

bool wsq__space_recover(wsq__writer_t *w, wsq_wreq_t *batch, wsq__full_t *full)
{
    if (w->map_full && grow_map(w))
        return true;
    if (w->map_full && !full->ticked) {
        full->ticked = true;
        if (tick(w))
            return true;
    }
    /* At the maximum (or the disk is full): refuse what needs space, keep what frees it
     * (purges, deletes, acks) and try again; then try smaller delete chunks. Appends go
     * first: opening a consumer on an existing topic takes a few bytes, and readers
     * must go on subscribing while publishes are refused. */
    bool shed = false;
    for (int pass = 0; pass < 2 && !shed; pass++) {
        for (wsq_wreq_t *r = batch; r; r = r->next) {
            if (r->err == WSQ_OK && (pass == 0 ? wsq_wop_appends(r->op) : is_growth(r))) {
                r->err = WSQ_ERR_STORAGE_FULL;
                full->refused++;
                shed = true;
            }
        }
    }
    if (shed)
        return true;
    if (w->map_full && !full->reserve) {
        full->reserve = set_map(w, w->store->opts.map_size_max + map_reserve(w->store));
        if (full->reserve)
            return true;
    }
    if (!w->map_full && ballast_release(w))
        return true;
    if (w->budget_max > 16) {
        w->budget_max /= 8;
        return true;
    }
    return false;
}

void wsq__space_settle(wsq__writer_t *w, const wsq__full_t *full, wsq_err err)
{
    if (full->reserve) /* give the reserve back, keeping what the deletions used */
        set_map(w, w->store->opts.map_size_max);
    if (err == WSQ_OK && w->budget_max < w->store->opts.trim_chunk) {
        w->budget_max *= 2; /* space came back: grow the delete chunk again */
        if (w->budget_max > w->store->opts.trim_chunk)
            w->budget_max = w->store->opts.trim_chunk;
    }
}
