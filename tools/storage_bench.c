/*
 * wsq-storage-bench: throughput and latency of the storage writer (group commit), against the raw
 * LMDB ceiling on the same disk.
 *
 *   wsq-storage-bench [--dir DIR] [--producers N] [--inflight W] [--size BYTES] [--seconds S]
 *                     [--sync full|batch|none] [--json] [--baseline-only] [--no-baseline]
 *
 * Writer run: N producer threads each keep up to W appends in flight on one topic. A producer
 * refills its window in runs (one wsq_store_submit_list per run, so one queue lock per run) once
 * an eighth of it is free. Completions run on the writer thread: they record the submit->confirm
 * latency in a histogram owned by that thread and decrement the producer's in-flight count; they
 * wake the producer only when it sleeps and its window reached the refill mark, never per message.
 * on_commit records the batch size and the commit (+ sync) time of every commit.
 *
 * Ceiling run: plain MDB_APPEND puts of the same payload size, 8-byte big-endian keys,
 * transactions of 1000, default sync (full), in a separate environment in a sibling directory.
 *
 * Both runs warm up for 0.5 s, then measure for S seconds of CLOCK_MONOTONIC wall time; only the
 * completions (commits) inside the measured window count.
 */
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "wsq/store.h"

#define WARMUP_NS 500000000ll
#define TOPIC "bench"
#define RAW_TXN 1000u

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* --- log-bucketed histogram: 16 sub-buckets per power of two (<= 6.25 % error), no allocation
 * per sample ------------------------------------------------------------------------------- */

#define H_SUB_BITS 4
#define H_SUB (1u << H_SUB_BITS)
#define H_BUCKETS (64u * H_SUB)

typedef struct {
    uint64_t n;
    uint64_t max;
    uint64_t b[H_BUCKETS];
} hist_t;

static unsigned h_index(uint64_t v)
{
    if (v < H_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= H_SUB_BITS */
    unsigned sub = (unsigned)(v >> (e - H_SUB_BITS)) & (H_SUB - 1);
    return (e - H_SUB_BITS + 1) * H_SUB + sub;
}

/* Smallest value of bucket i, and the width of the bucket. */
static uint64_t h_low(unsigned i, uint64_t *width)
{
    if (i < H_SUB) {
        *width = 1;
        return i;
    }
    unsigned e = i / H_SUB + H_SUB_BITS - 1, sub = i % H_SUB;
    *width = 1ull << (e - H_SUB_BITS);
    return (1ull << e) + (uint64_t)sub * *width;
}

static void h_add(hist_t *h, uint64_t v)
{
    h->b[h_index(v)]++;
    h->n++;
    if (v > h->max)
        h->max = v;
}

/* The q-quantile, as the midpoint of its bucket (never above the maximum seen). */
static double h_quantile(const hist_t *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->n);
    if (rank >= h->n)
        rank = h->n - 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        seen += h->b[i];
        if (seen > rank) {
            uint64_t w, lo = h_low(i, &w);
            double mid = (double)lo + (double)(w - 1) / 2.0;
            return mid > (double)h->max ? (double)h->max : mid;
        }
    }
    return (double)h->max;
}

/* --- options --------------------------------------------------------------------------------- */

typedef struct {
    const char *dir;
    unsigned producers;
    unsigned inflight;
    size_t size;
    double seconds;
    wsq_sync_t sync;
    bool json;
    bool baseline_only;
    bool no_baseline;
} opts_t;

static const char *sync_name(wsq_sync_t s)
{
    return s == WSQ_SYNC_FULL ? "full" : s == WSQ_SYNC_BATCH ? "batch" : "none";
}

static void usage(FILE *f)
{
    fprintf(f, "usage: wsq-storage-bench [--dir DIR] [--producers N] [--inflight W] "
               "[--size BYTES] [--seconds S]\n"
               "                         [--sync full|batch|none] [--json] [--baseline-only] "
               "[--no-baseline]\n"
               "  --dir DIR        data directory of the store (default: a temporary directory "
               "under /tmp,\n"
               "                   removed at the end); the raw LMDB ceiling runs in a sibling "
               "temporary directory\n"
               "  --producers N    producer threads (default 16)\n"
               "  --inflight W     appends each producer keeps in flight (default 256)\n"
               "  --size BYTES     payload size (default 128)\n"
               "  --seconds S      measured time of each run, after 0.5 s of warm-up (default 5)\n"
               "  --sync MODE      storage.sync of the writer run (default full)\n"
               "  --json           print one JSON object instead of a table\n"
               "  --baseline-only  only measure the raw LMDB ceiling\n"
               "  --no-baseline    skip the raw LMDB ceiling\n");
}

static bool parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v == 0 || v > max)
        return false;
    *out = v;
    return true;
}

static int parse_opts(int argc, char **argv, opts_t *o)
{
    *o = (opts_t){.producers = 16, .inflight = 256, .size = 128, .seconds = 5};
    static const struct option lo[] = {
        {"dir", required_argument, NULL, 'd'},
        {"producers", required_argument, NULL, 'p'},
        {"inflight", required_argument, NULL, 'w'},
        {"size", required_argument, NULL, 's'},
        {"seconds", required_argument, NULL, 't'},
        {"sync", required_argument, NULL, 'y'},
        {"json", no_argument, NULL, 'j'},
        {"baseline-only", no_argument, NULL, 'B'},
        {"no-baseline", no_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, li = 0;
    unsigned long long v;
    while ((c = getopt_long(argc, argv, "", lo, &li)) != -1) {
        switch (c) {
        case 'd':
            o->dir = optarg;
            break;
        case 'p':
            if (!parse_uint(optarg, 100000, &v))
                goto bad;
            o->producers = (unsigned)v;
            break;
        case 'w':
            if (!parse_uint(optarg, 1000000, &v))
                goto bad;
            o->inflight = (unsigned)v;
            break;
        case 's':
            if (!parse_uint(optarg, 1u << 20, &v))
                goto bad;
            o->size = (size_t)v;
            break;
        case 't': {
            char *end;
            o->seconds = strtod(optarg, &end);
            if (end == optarg || *end || !(o->seconds > 0) || o->seconds > 3600)
                goto bad;
            break;
        }
        case 'y':
            if (strcmp(optarg, "full") == 0)
                o->sync = WSQ_SYNC_FULL;
            else if (strcmp(optarg, "batch") == 0)
                o->sync = WSQ_SYNC_BATCH;
            else if (strcmp(optarg, "none") == 0)
                o->sync = WSQ_SYNC_NONE;
            else
                goto bad;
            break;
        case 'j':
            o->json = true;
            break;
        case 'B':
            o->baseline_only = true;
            break;
        case 'N':
            o->no_baseline = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || (o->baseline_only && o->no_baseline)) {
        usage(stderr);
        return 2;
    }
    return 0;
bad:
    fprintf(stderr, "wsq-storage-bench: bad value for --%s: %s\n", lo[li].name, optarg);
    usage(stderr);
    return 2;
}

/* --- the writer run -------------------------------------------------------------------------- */

typedef struct bench bench_t;

typedef struct {
    bench_t *b;
    pthread_t thread;
    pthread_mutex_t m;
    pthread_cond_t c;
    atomic_uint inflight;
    atomic_bool waiting; /* asleep (or about to be) until inflight <= refill mark */
    unsigned refill;     /* refill when inflight <= refill */
    uint64_t submitted;
    int err;
} producer_t;

struct bench {
    wsq_store_t *store;
    const opts_t *o;
    const unsigned char *payload;
    atomic_bool stop;
    atomic_bool measuring; /* completions and commits count only while set */
    /* writer thread only */
    hist_t lat;    /* submit -> confirm, ns */
    hist_t commit; /* commit + sync, ns */
    hist_t cycle;  /* from one on_commit to the next: commit + everything else of a round, ns */
    int64_t last_commit_end;
    uint64_t confirmed;
    uint64_t commits;
    uint64_t commit_appends;
    uint64_t failed;
    int first_err;
};

static void append_done(wsq_wreq_t *r, void *arg)
{
    producer_t *p = arg;
    bench_t *b = p->b;
    if (r->err != WSQ_OK) {
        if (b->failed++ == 0)
            b->first_err = r->err;
    } else if (atomic_load_explicit(&b->measuring, memory_order_relaxed)) {
        int64_t lat = now_ns() - (int64_t)r->user[0];
        h_add(&b->lat, lat > 0 ? (uint64_t)lat : 0);
        b->confirmed++;
    }
    wsq_wreq_free(&r);
    unsigned left = atomic_fetch_sub(&p->inflight, 1) - 1;
    /* Both sides use seq_cst: the producer sets waiting then re-reads inflight; we decrement then
     * read waiting, so at least one of us sees the other. */
    if (left <= p->refill && atomic_load(&p->waiting)) {
        /* Taking the mutex orders us after the producer's check-then-wait. Signal after the
         * unlock, so the woken producer does not block again on a mutex we still hold. */
        pthread_mutex_lock(&p->m);
        bool wake = atomic_exchange(&p->waiting, false);
        pthread_mutex_unlock(&p->m);
        if (wake)
            pthread_cond_signal(&p->c);
    }
}

static void on_commit(void *arg, const wsq_commit_info_t *info)
{
    bench_t *b = arg;
    if (info->err != WSQ_OK || !atomic_load_explicit(&b->measuring, memory_order_relaxed))
        return; /* failed batches are counted by their completions */
    int64_t t = now_ns();
    if (b->last_commit_end && t > b->last_commit_end)
        h_add(&b->cycle, (uint64_t)(t - b->last_commit_end));
    b->last_commit_end = t;
    b->commits++;
    b->commit_appends += info->n_appends;
    h_add(&b->commit, info->commit_ns > 0 ? (uint64_t)info->commit_ns : 0);
}

static void *producer_main(void *arg)
{
    producer_t *p = arg;
    bench_t *b = p->b;
    unsigned w = b->o->inflight;
    size_t size = b->o->size;
    while (!atomic_load_explicit(&b->stop, memory_order_relaxed)) {
        unsigned inflight = atomic_load(&p->inflight);
        if (inflight > p->refill) {
            pthread_mutex_lock(&p->m);
            atomic_store(&p->waiting, true);
            while (atomic_load(&p->waiting) && atomic_load(&p->inflight) > p->refill &&
                   !atomic_load(&b->stop))
                pthread_cond_wait(&p->c, &p->m);
            atomic_store(&p->waiting, false);
            pthread_mutex_unlock(&p->m);
            continue;
        }
        unsigned run = w - inflight;
        wsq_wreq_t *head = NULL, **tail = &head;
        int64_t t = now_ns(); /* one timestamp per run: they are submitted together */
        for (unsigned k = 0; k < run; k++) {
            wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_APPEND, TOPIC, sizeof(TOPIC) - 1, NULL, 0, size);
            if (r == NULL) {
                p->err = WSQ_ERR_NOMEM;
                goto out;
            }
            memcpy(r->data, b->payload, size);
            r->flags = WSQ_MSG_BINARY;
            r->user[0] = (uint64_t)t;
            r->done = append_done;
            r->arg = p;
            *tail = r;
            tail = &r->next;
        }
        atomic_fetch_add(&p->inflight, run);
        wsq_err err = wsq_store_submit_list(b->store, head);
        if (err != WSQ_OK) {
            atomic_fetch_sub(&p->inflight, run);
            for (wsq_wreq_t *r = head, *nx; r; r = nx) {
                nx = r->next;
                wsq_wreq_free(&r);
            }
            p->err = err;
            goto out;
        }
        p->submitted += run;
    }
out:
    return NULL;
}

typedef struct {
    double seconds;
    uint64_t confirmed;
    double rate;
    double p50, p99, p999, max; /* confirm latency, ns */
    uint64_t commits;
    double batch_avg;
    double c50, c99; /* commit latency, ns */
    double cy50;     /* commit-to-commit cycle, ns */
    uint64_t failed;
} writer_result_t;

static void sleep_until(int64_t t)
{
    for (;;) {
        int64_t left = t - now_ns();
        if (left <= 0)
            return;
        struct timespec ts = {left / 1000000000ll, left % 1000000000ll};
        nanosleep(&ts, NULL);
    }
}

static int run_writer(const opts_t *o, const char *dir, const unsigned char *payload,
                      writer_result_t *res)
{
    bench_t *b = calloc(1, sizeof(*b));
    producer_t *ps = calloc(o->producers, sizeof(*ps));
    if (b == NULL || ps == NULL) {
        fprintf(stderr, "wsq-storage-bench: out of memory\n");
        return 1;
    }
    b->o = o;
    b->payload = payload;
    wsq_store_opts_t so;
    wsq_store_opts_init(&so);
    so.path = dir;
    so.flags = WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE;
    so.sync = o->sync;
    so.map_size_initial = 1ull << 30; /* map growth is not what this measures */
    so.on_commit = on_commit;
    so.commit_arg = b;
    wsq_err err = wsq_store_open(&so, &b->store, NULL);
    if (err == WSQ_OK && (err = wsq_store_start(b->store)) != WSQ_OK)
        wsq_store_close(b->store);
    if (err != WSQ_OK) {
        fprintf(stderr, "wsq-storage-bench: open %s: %s\n", dir, wsq_strerror(err));
        free(ps);
        free(b);
        return 1;
    }
    unsigned refill = o->inflight - (o->inflight / 8 ? o->inflight / 8 : 1);
    unsigned started = 0;
    for (unsigned i = 0; i < o->producers; i++) {
        ps[i].b = b;
        ps[i].refill = refill;
        pthread_mutex_init(&ps[i].m, NULL);
        pthread_cond_init(&ps[i].c, NULL);
        if (pthread_create(&ps[i].thread, NULL, producer_main, &ps[i]) != 0) {
            fprintf(stderr, "wsq-storage-bench: cannot start producer %u\n", i);
            atomic_store(&b->stop, true);
            break;
        }
        started++;
    }
    int64_t t0 = now_ns();
    sleep_until(t0 + WARMUP_NS);
    int64_t m0 = now_ns();
    atomic_store(&b->measuring, true);
    sleep_until(m0 + (int64_t)(o->seconds * 1e9));
    atomic_store(&b->measuring, false);
    int64_t m1 = now_ns();
    atomic_store(&b->stop, true);
    for (unsigned i = 0; i < started; i++) {
        pthread_mutex_lock(&ps[i].m);
        atomic_store(&ps[i].waiting, false);
        pthread_cond_signal(&ps[i].c);
        pthread_mutex_unlock(&ps[i].m);
        pthread_join(ps[i].thread, NULL);
    }
    wsq_store_stop(b->store); /* completes everything still in flight */
    wsq_store_close(b->store);

    int rc = started == o->producers ? 0 : 1;
    for (unsigned i = 0; i < started; i++) {
        if (ps[i].err) {
            fprintf(stderr, "wsq-storage-bench: producer %u: %s\n", i,
                    wsq_strerror((wsq_err)ps[i].err));
            rc = 1;
        }
        pthread_mutex_destroy(&ps[i].m);
        pthread_cond_destroy(&ps[i].c);
    }
    if (b->failed) {
        fprintf(stderr, "wsq-storage-bench: %llu appends failed, first: %s\n",
                (unsigned long long)b->failed, wsq_strerror((wsq_err)b->first_err));
        rc = 1;
    }
    res->seconds = (double)(m1 - m0) / 1e9;
    res->confirmed = b->confirmed;
    res->rate = (double)b->confirmed / res->seconds;
    res->p50 = h_quantile(&b->lat, 0.50);
    res->p99 = h_quantile(&b->lat, 0.99);
    res->p999 = h_quantile(&b->lat, 0.999);
    res->max = (double)b->lat.max;
    res->commits = b->commits;
    res->batch_avg = b->commits ? (double)b->commit_appends / (double)b->commits : 0;
    res->c50 = h_quantile(&b->commit, 0.50);
    res->c99 = h_quantile(&b->commit, 0.99);
    res->cy50 = h_quantile(&b->cycle, 0.50);
    res->failed = b->failed;
    free(ps);
    free(b);
    return rc;
}

/* --- the raw LMDB ceiling -------------------------------------------------------------------- */

typedef struct {
    double seconds;
    uint64_t puts;
    double rate;
    double c50, c99; /* commit latency of a 1000-put transaction, ns */
} raw_result_t;

static int raw_fail(const char *what, int rc, MDB_env *env)
{
    fprintf(stderr, "wsq-storage-bench: raw LMDB %s: %s\n", what, mdb_strerror(rc));
    if (env)
        mdb_env_close(env);
    return 1;
}

static int run_raw(const opts_t *o, const char *dir, const unsigned char *payload,
                   raw_result_t *res)
{
    MDB_env *env = NULL;
    int rc = mdb_env_create(&env);
    if (rc)
        return raw_fail("env_create", rc, NULL);
    /* large enough for any run; without WRITEMAP this costs address space only */
    if ((rc = mdb_env_set_mapsize(env, 1ull << 38)) != 0 ||
        (rc = mdb_env_open(env, dir, 0, 0640)) != 0)
        return raw_fail("env_open", rc, env);
    MDB_dbi dbi;
    MDB_txn *txn;
    if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0 || (rc = mdb_dbi_open(txn, NULL, 0, &dbi)) ||
        (rc = mdb_txn_commit(txn)) != 0)
        return raw_fail("dbi_open", rc, env);
    hist_t *commit = calloc(1, sizeof(*commit));
    if (commit == NULL)
        return raw_fail("calloc", ENOMEM, env);
    uint64_t seq = 0, puts = 0;
    int64_t t0 = now_ns(), m0 = 0, end = t0 + WARMUP_NS + (int64_t)(o->seconds * 1e9);
    int64_t m1 = 0;
    bool measuring = false;
    for (;;) {
        int64_t t = now_ns();
        if (!measuring && t >= t0 + WARMUP_NS) {
            measuring = true;
            m0 = t;
        }
        if (t >= end) {
            m1 = t;
            break;
        }
        if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0)
            break;
        for (unsigned i = 0; i < RAW_TXN && rc == 0; i++) {
            unsigned char kb[8];
            seq++;
            for (int j = 0; j < 8; j++)
                kb[j] = (unsigned char)(seq >> (56 - 8 * j));
            MDB_val k = {8, kb}, v = {o->size, (void *)payload};
            rc = mdb_put(txn, dbi, &k, &v, MDB_APPEND);
        }
        if (rc != 0) {
            mdb_txn_abort(txn);
            break;
        }
        int64_t c0 = now_ns();
        rc = mdb_txn_commit(txn);
        int64_t c1 = now_ns();
        if (rc != 0)
            break;
        /* a transaction counts when it committed inside the measured window */
        if (measuring && c1 <= end) {
            puts += RAW_TXN;
            h_add(commit, (uint64_t)(c1 - c0));
        }
    }
    mdb_env_close(env);
    if (rc != 0) {
        free(commit);
        return raw_fail("put/commit", rc, NULL);
    }
    res->seconds = (double)(m1 - m0) / 1e9;
    res->puts = puts;
    res->rate = (double)puts / res->seconds;
    res->c50 = h_quantile(commit, 0.50);
    res->c99 = h_quantile(commit, 0.99);
    free(commit);
    return 0;
}

/* --- directories ----------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* --- output ---------------------------------------------------------------------------------- */

static void fmt_ns(char *buf, size_t cap, double ns)
{
    if (ns < 1e3)
        snprintf(buf, cap, "%.0f ns", ns);
    else if (ns < 1e6)
        snprintf(buf, cap, "%.1f us", ns / 1e3);
    else if (ns < 1e9)
        snprintf(buf, cap, "%.2f ms", ns / 1e6);
    else
        snprintf(buf, cap, "%.2f s", ns / 1e9);
}

static void print_human(const opts_t *o, const char *dir, const writer_result_t *wr,
                        const raw_result_t *rr)
{
    char a[32], b[32], c[32], d[32];
    printf("wsq-storage-bench: %u producers x %u in flight, %zu B payloads, sync %s, %.1f s "
           "measured after %.1f s warm-up\n",
           o->producers, o->inflight, o->size, sync_name(o->sync), o->seconds, WARMUP_NS / 1e9);
    printf("data dir: %s\n\n", dir);
    if (wr) {
        fmt_ns(a, sizeof(a), wr->p50);
        fmt_ns(b, sizeof(b), wr->p99);
        fmt_ns(c, sizeof(c), wr->p999);
        fmt_ns(d, sizeof(d), wr->max);
        printf("  writer  confirmed appends/s  %12.0f   (%llu in %.2f s)\n", wr->rate,
               (unsigned long long)wr->confirmed, wr->seconds);
        printf("          confirm latency      p50 %s   p99 %s   p999 %s   max %s\n", a, b, c, d);
        double little = wr->rate > 0 ? (double)o->producers * o->inflight / wr->rate * 1e9 : 0;
        fmt_ns(a, sizeof(a), little);
        printf("          in flight / rate     %s   (Little's law: mean latency at a full "
               "window)\n",
               a);
        fmt_ns(a, sizeof(a), wr->c50);
        fmt_ns(b, sizeof(b), wr->c99);
        printf("          batch per commit     %12.1f   (%llu commits)\n", wr->batch_avg,
               (unsigned long long)wr->commits);
        fmt_ns(c, sizeof(c), wr->cy50);
        printf("          commit latency       p50 %s   p99 %s   (commit-to-commit cycle p50 %s)\n",
               a, b, c);
    }
    if (rr) {
        fmt_ns(a, sizeof(a), rr->c50);
        fmt_ns(b, sizeof(b), rr->c99);
        printf("  ceiling raw LMDB puts/s      %12.0f   (MDB_APPEND, %u per txn, default sync; "
               "commit p50 %s p99 %s)\n",
               rr->rate, RAW_TXN, a, b);
    }
    if (wr && rr && rr->rate > 0)
        printf("  ratio   writer / ceiling     %12.3f\n", wr->rate / rr->rate);
}

static void print_json(const opts_t *o, const writer_result_t *wr, const raw_result_t *rr)
{
    printf("{\"producers\":%u,\"inflight\":%u,\"size\":%zu,\"sync\":\"%s\",\"seconds\":%g,"
           "\"warmup_seconds\":%g",
           o->producers, o->inflight, o->size, sync_name(o->sync), o->seconds, WARMUP_NS / 1e9);
    if (wr)
        printf(",\"writer\":{\"confirmed_per_s\":%.1f,\"confirmed\":%llu,\"measured_s\":%.4f,"
               "\"latency_us\":{\"p50\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f},"
               "\"littles_law_us\":%.1f,\"commits\":%llu,\"batch_avg\":%.2f,"
               "\"commit_us\":{\"p50\":%.1f,\"p99\":%.1f},\"cycle_us_p50\":%.1f}",
               wr->rate, (unsigned long long)wr->confirmed, wr->seconds, wr->p50 / 1e3,
               wr->p99 / 1e3, wr->p999 / 1e3, wr->max / 1e3,
               wr->rate > 0 ? (double)o->producers * o->inflight / wr->rate * 1e6 : 0,
               (unsigned long long)wr->commits, wr->batch_avg, wr->c50 / 1e3, wr->c99 / 1e3,
               wr->cy50 / 1e3);
    if (rr)
        printf(",\"ceiling\":{\"puts_per_s\":%.1f,\"puts\":%llu,\"measured_s\":%.4f,"
               "\"txn_size\":%u,\"commit_us\":{\"p50\":%.1f,\"p99\":%.1f}}",
               rr->rate, (unsigned long long)rr->puts, rr->seconds, RAW_TXN, rr->c50 / 1e3,
               rr->c99 / 1e3);
    if (wr && rr && rr->rate > 0)
        printf(",\"ratio\":%.4f", wr->rate / rr->rate);
    printf("}\n");
}

int main(int argc, char **argv)
{
    opts_t o;
    int rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc;

    /* Directories: the store in --dir or in base/store; the ceiling in a sibling temp dir. */
    char base[4096] = "", store_dir[4096], raw_dir[4096];
    if (o.dir) {
        snprintf(store_dir, sizeof(store_dir), "%s", o.dir);
        size_t l = strlen(store_dir);
        while (l > 1 && store_dir[l - 1] == '/')
            store_dir[--l] = '\0';
        snprintf(raw_dir, sizeof(raw_dir), "%s.raw-XXXXXX", store_dir);
    } else {
        snprintf(base, sizeof(base), "/tmp/wsq-storage-bench-XXXXXX");
        if (mkdtemp(base) == NULL) {
            perror("wsq-storage-bench: mkdtemp");
            return 1;
        }
        snprintf(store_dir, sizeof(store_dir), "%s/store", base);
        snprintf(raw_dir, sizeof(raw_dir), "%s/raw-XXXXXX", base);
    }

    unsigned char *payload = malloc(o.size);
    if (payload == NULL) {
        fprintf(stderr, "wsq-storage-bench: out of memory\n");
        return 1;
    }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < o.size; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        payload[i] = (unsigned char)x;
    }

    writer_result_t wr;
    raw_result_t rr;
    bool have_w = false, have_r = false;
    if (!o.baseline_only) {
        rc = run_writer(&o, store_dir, payload, &wr);
        have_w = rc == 0;
    }
    if (rc == 0 && !o.no_baseline) {
        if (mkdtemp(raw_dir) == NULL) {
            perror("wsq-storage-bench: mkdtemp");
            rc = 1;
        } else {
            rc = run_raw(&o, raw_dir, payload, &rr);
            have_r = rc == 0;
            rm_rf(raw_dir);
        }
    }
    if (rc == 0) {
        if (o.json)
            print_json(&o, have_w ? &wr : NULL, have_r ? &rr : NULL);
        else
            print_human(&o, o.baseline_only ? raw_dir : store_dir, have_w ? &wr : NULL,
                        have_r ? &rr : NULL);
    }
    if (base[0])
        rm_rf(base);
    free(payload);
    return rc;
}
