/*
 * wsq-preload: fills a wsq data directory offline, through the storage API wsqd itself uses (the
 * writer thread, group commits), so that a restart can be timed with a big store (issue 6, T6).
 * wsqd must not be running on the directory (the store takes the data-dir lock).
 *
 * Usage: wsq-preload --dir DIR [--messages N] [--size S] [--topics K] [--topic NAME]
 *                    [--sync full|batch|none]
 * N messages (10,000,000) of S bytes (128) of printable text, round-robin over K topics (1) named
 * NAME (bench.t6) or NAME.0 .. NAME.K-1. --sync (none) only changes how the preload commits; the
 * store is the same. Prints the count, the time and the rate.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wsq/store.h"

#define RUN 4096            /* requests per submit_list */
#define INFLIGHT (1u << 18) /* most requests queued or uncommitted */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static atomic_uint inflight;
static atomic_ullong failed;
static atomic_int first_err;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void done(wsq_wreq_t *r, void *arg)
{
    (void)arg;
    if (r->err != WSQ_OK && atomic_fetch_add(&failed, 1) == 0)
        atomic_store(&first_err, r->err);
    wsq_wreq_free(&r);
    if (atomic_fetch_sub(&inflight, 1) == INFLIGHT / 2 + 1) {
        pthread_mutex_lock(&mu);
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: wsq-preload --dir DIR [--messages N] [--size S] [--topics K] "
                    "[--topic NAME] [--sync full|batch|none]\n");
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *base = "bench.t6";
    unsigned long long n = 10000000ull;
    size_t size = 128;
    unsigned topics = 1;
    wsq_sync_t sync = WSQ_SYNC_NONE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            usage();
            return 2;
        }
        i++;
        if (strcmp(a, "--dir") == 0)
            dir = v;
        else if (strcmp(a, "--messages") == 0)
            n = strtoull(v, NULL, 10);
        else if (strcmp(a, "--size") == 0)
            size = (size_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--topics") == 0)
            topics = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--topic") == 0)
            base = v;
        else if (strcmp(a, "--sync") == 0)
            sync = strcmp(v, "full") == 0    ? WSQ_SYNC_FULL
                   : strcmp(v, "batch") == 0 ? WSQ_SYNC_BATCH
                                             : WSQ_SYNC_NONE;
        else {
            usage();
            return 2;
        }
    }
    if (dir == NULL || topics == 0 || topics > 1000000) {
        usage();
        return 2;
    }
    char **names = calloc(topics, sizeof(char *));
    unsigned char *payload = malloc(size ? size : 1);
    if (names == NULL || payload == NULL)
        return 1;
    for (unsigned t = 0; t < topics; t++) {
        char b[300];
        if (topics == 1)
            snprintf(b, sizeof(b), "%s", base);
        else
            snprintf(b, sizeof(b), "%s.%u", base, t);
        names[t] = strdup(b);
    }
    for (size_t i = 0; i < size; i++)
        payload[i] = (unsigned char)('a' + i % 26);

    wsq_store_opts_t so;
    wsq_store_opts_init(&so);
    so.path = dir;
    so.flags = WSQ_STORE_CREATE | WSQ_STORE_EXCLUSIVE;
    so.sync = sync;
    so.map_size_initial = 1ull << 30;
    wsq_store_t *st;
    wsq_err err = wsq_store_open(&so, &st, NULL);
    if (err == WSQ_OK && (err = wsq_store_start(st)) != WSQ_OK)
        wsq_store_close(st);
    if (err != WSQ_OK) {
        fprintf(stderr, "wsq-preload: open %s: %s\n", dir, wsq_strerror(err));
        return 1;
    }
    double t0 = now_s();
    unsigned long long sent = 0;
    unsigned t = 0;
    while (sent < n && atomic_load(&failed) == 0) {
        if (atomic_load(&inflight) > INFLIGHT / 2) {
            pthread_mutex_lock(&mu);
            while (atomic_load(&inflight) > INFLIGHT / 2)
                pthread_cond_wait(&cv, &mu);
            pthread_mutex_unlock(&mu);
        }
        unsigned run = n - sent < RUN ? (unsigned)(n - sent) : RUN;
        wsq_wreq_t *head = NULL, **tail = &head;
        for (unsigned k = 0; k < run; k++) {
            const char *nm = names[t];
            t = t + 1 == topics ? 0 : t + 1;
            wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_APPEND, nm, strlen(nm), NULL, 0, size);
            if (r == NULL) {
                fprintf(stderr, "wsq-preload: out of memory\n");
                return 1;
            }
            memcpy(r->data, payload, size);
            r->done = done;
            *tail = r;
            tail = &r->next;
        }
        atomic_fetch_add(&inflight, run);
        err = wsq_store_submit_list(st, head);
        if (err != WSQ_OK) {
            fprintf(stderr, "wsq-preload: submit: %s\n", wsq_strerror(err));
            return 1;
        }
        sent += run;
    }
    wsq_store_stop(st); /* completes everything in flight */
    wsq_store_close(st);
    double dt = now_s() - t0;
    if (atomic_load(&failed)) {
        fprintf(stderr, "wsq-preload: %llu appends failed: %s\n",
                (unsigned long long)atomic_load(&failed), wsq_strerror((wsq_err)first_err));
        return 1;
    }
    printf("preloaded %llu messages of %zu B on %u topic%s in %.1f s (%.0f msgs/s)\n", sent, size,
           topics, topics > 1 ? "s" : "", dt, (double)sent / dt);
    return 0;
}
