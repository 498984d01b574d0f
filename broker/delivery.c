/*
 * The delivery thread ("the consumer thread", CT): delivery for every subscription.
 *
 * It owns:
 *   - each subscription's position, credit, in-flight set and redelivery queue;
 *   - the in-memory copy of every attached durable consumer (the authoritative state while
 *     attached; persisted with CONSUMER_PUT at most every FLUSH_MS and on detach);
 *   - a cache of the topics that have subscriptions (heads updated from the writer's commits).
 *
 * Each loop: take commands from its mailbox -> apply them -> run timers (nack delays, ack_wait) ->
 * one delivery pass over the subscriptions that have both credit and work, each reading LMDB in one
 * short read transaction and framing what it read -> persist dirty consumers -> hand everything
 * produced to the service thread's mailbox in one push.
 *
 * Credit. A wsq.v1 durable subscription may have `window` messages delivered and unacknowledged.
 * Every other subscription (ephemeral, raw mode) may have `window` messages queued in the service
 * thread that are not yet written to the socket. Every subscription also stops at SUB_QUEUE_BYTES
 * queued bytes, so a session never holds more than its window in memory: LMDB is the buffer.
 *
 * Why one file of ~1,500 lines: everything here is private to one thread, and every command
 * touches several of its tables at once (a subscription, its topic's tail cache, its consumer's
 * in-memory state); split files would share all of them through one header and gain nothing.
 * The delivery thread's interface is delivery.h.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"
#include "delivery.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "wsq/clock.h"

#define SUB_QUEUE_BYTES (1u << 20) /* per subscription, queued in the service thread */
#define READ_MSGS 512u             /* messages per read transaction */
#define READ_BYTES (256u << 10)
#define FLUSH_MS 10 /* persist a dirty consumer at most this often */
#define TIMER_MS 100
#define SUB_BUCKETS 4096u

/* One message in a topic's tail cache. */
typedef struct {
    uint64_t seq;
    int64_t ts;
    uint32_t flags;
    uint32_t len;           /* of the payload */
    uint32_t hlen;          /* of the headers block, which comes first in payload's allocation */
    unsigned char *payload; /* a copy: committed messages never change */
    char *json;             /* its wsq.v1 msg frame for a first delivery, encoded once */
    uint32_t json_len;
} tc_ent_t;

/* Tail cache bounds: per topic, and across all topics. */
#define TC_SLOTS 512u /* power of two */
#define TC_TOPIC_BYTES (1u << 20)
#define TC_TOTAL_BYTES (64u << 20)

typedef struct ct_topic {
    uint32_t id;
    char name[WSQ_TOPIC_MAX + 1];
    size_t name_len;
    uint64_t epoch;
    uint64_t first_seq;
    uint64_t next_seq;
    uint64_t purged_upto;
    uint64_t notified_next; /* next_seq as of the last commit notice (reads may see further) */
    struct ct_sub *subs;    /* subscriptions on this topic (tnext) */
    const wsq_config_t *dead_cfg;  /* the config dead was resolved in */
    const wsq_dead_letter_t *dead; /* max_deliver and the dead-letter topic (retention rules) */
    struct ct_topic *hnext;
    /* The tail cache: when several subscriptions follow a topic, the first to reach a message
     * reads it from LMDB and the others take it from here - one read and one JSON encoding
     * per message instead of one per subscriber. Seqs [tc_first, tc_next), contiguous. */
    tc_ent_t *tc;
    uint64_t tc_first, tc_next;
    size_t tc_bytes;
} ct_topic_t;

typedef struct {
    uint64_t seq;
    int64_t t_ms;      /* delivered at (in-flight) / due at (redo) */
    uint64_t from_sub; /* redo after ack_wait: the member it expired at (shared: another first) */
} seqt_t;

/* Sorted by seq: v[0..n). Acks come mostly in order, so taking the first entry only moves v
 * forward inside the allocation (base, cap entries); no entry is moved. */
typedef struct {
    seqt_t *v, *base;
    uint32_t n, cap;
} seqvec_t;

/* Where deliveries come from: a subscription's own, or, for a shared consumer, one for all its
 * members. Every unacknowledged seq is in exactly one place: in flight at one member (its infl),
 * in redo, in the resume scan's range not yet scanned, or at/after next_seq. */
typedef struct {
    uint64_t next_seq;  /* next never-delivered seq to read */
    uint64_t scan_next; /* resume: redeliver unacked seqs in [scan_next, scan_end] */
    uint64_t scan_end;
    seqvec_t redo; /* nacked / ack_wait-expired / released seqs, by seq, with due time */
} cursor_t;

typedef struct ct_consumer {
    uint32_t topic_id;
    char name[WSQ_CONSUMER_NAME_MAX + 1];
    size_t name_len;
    wsq_cstate_t cs;
    bool shared;            /* cs.flags & WSQ_CSTATE_SHARED: members compete for messages */
    struct ct_sub *members; /* attached subscriptions (mnext); exclusive: at most one */
    cursor_t cur;           /* shared: the members' one cursor (exclusive: each sub has its own) */
    uint64_t vclock;        /* shared: the virtual time of the last member served */
    bool dirty;             /* cs changed since the last PUT */
    bool parked;            /* no member: kept until no older CONSUMER_OPEN is pending */
    struct ct_sub *ghosts;  /* taken-over subscriptions whose sessions still ack (gnext) */
    int64_t parked_ms;
    uint64_t parked_seq; /* ct->open_seq when it was parked */
    int64_t flushed_ms;
    /* seqs whose dead letter is in flight: the writer acknowledges each in the transaction that
     * stores its copy, so every PUT of cs until then acknowledges them too (a PUT behind the
     * DEAD_LETTER must not take the ack back), and none is delivered again meanwhile */
    uint64_t *dead;
    uint32_t ndead, capdead;
    struct ct_consumer *hnext;
} ct_consumer_t;

/* HTTP pull. A consumer fetched over HTTP has one more member, its pull member (sid 0, no
 * session), which holds the leases (its in-flight set, expired after ack_wait like any) and the
 * fetches waiting for messages, served one at a time in arrival order. */
typedef struct pull_wait {
    struct pull_wait *next;
    uint64_t sid; /* the HTTP request's session */
    uint32_t max;
    int64_t deadline_ms;
} pull_wait_t;

typedef struct {
    pull_wait_t *head, **tail;
    wsq_buf_t body;      /* the head fetch's messages so far, comma-separated */
    wsq_buf_t gaps;      /* and the gaps it met, comma-separated */
    uint32_t n;          /* messages in body */
    int64_t idle_since;  /* no fetch waiting and no lease since (0: busy) */
    struct ct_sub *next; /* ct->pulls */
} pull_t;

#define PULL_BYTES (4u << 20) /* one fetch's answer stops growing past this */
#define PULL_LEASES 65536u    /* leases of one consumer at most */

/* A subscription's life: OPENING (its topic and consumer are being opened by the writer) ->
 * LIVE (delivering) -> DEAD (ended by a gap, a takeover or a deleted consumer; freed by
 * sub_end). Changed only by sub_state(), which asserts every move. */
typedef enum { SUB_OPENING = 1, SUB_LIVE, SUB_DEAD } sub_state_t;

typedef struct ct_sub {
    uint64_t id;
    uint64_t sid;
    sub_state_t state;
    ct_sub_params_t *p;
    ct_topic_t *topic;
    ct_consumer_t *cons; /* NULL: ephemeral */
    uint32_t window;
    cursor_t own;    /* ephemeral and exclusive subscriptions' cursor */
    cursor_t *cur;   /* &own, or the shared consumer's */
    seqvec_t infl;   /* durable wsq.v1: delivered in this session, unacked, by seq */
    int64_t min_ts;  /* skip messages stamped before this (from: a time ahead of the log) */
    uint32_t queued; /* messages handed to the ST, not yet written */
    /* durable: the seqs of those messages, in the order they were handed over (a ring). A
     * delivery counts once its frame is written; if the session ends first, it is taken back
     * (wsq_cstate_undeliver), so that a message the client never saw is not a redelivery. */
    uint64_t *unw;
    uint32_t unw_head, unw_len, unw_cap;
    uint64_t queued_bytes;
    bool on_ready;
    bool unsub_pending; /* unsubscribed while opening: it opens (subscribed), then ends */
    char *unsub_reply;  /* the unsub's answer, sent when the subscription ends (sub_end) */
    size_t unsub_reply_len;
    struct ct_sub *tnext; /* topic list */
    struct ct_sub *rnext; /* ready list */
    struct ct_sub *hnext; /* id hash */
    struct ct_sub *snext; /* same-session list */
    struct ct_sub *mnext; /* its consumer's members */
    uint64_t vtime;       /* shared: virtual time, for sharing out work (deliver_shared) */
    pull_t *pull;         /* the HTTP pull member (sid 0), else NULL */
    struct ct_wild *wild; /* a topic of this pattern subscription (a "kid"), else NULL */
    struct ct_sub *knext; /* the pattern's kids with the same name hash */
    int64_t idle_since;   /* ephemeral kid: caught up and quiet since (0: busy) */
    uint64_t open_seq;    /* OPENING: ct->open_seq when its CONSUMER_OPEN was submitted */
    struct ct_sub *gnext; /* a taken-over subscription: its consumer's ghosts */
    char *kid_name;       /* kid: its topic's name (owned), kid_len bytes */
    size_t kid_len;
    bool kid_earliest; /* kid: a new consumer starts at the topic's first message */
} ct_sub_t;

/* A subscription to a topic pattern is one subscription per readable topic it matches: its
 * kids, ordinary subscriptions (durable ones with a consumer of the pattern's name on their
 * topic: one position per topic) whose frames go out under the pattern's id. Kids come into
 * being when the pattern is subscribed (durable: every matching topic; ephemeral: those with
 * messages to deliver from where it starts) and when a matching topic is created or, for an
 * ephemeral pattern from "latest", first gets a message. Which topics match is decided once
 * per topic (match), never per message. */
#define KID_BUCKETS 256u
typedef struct ct_wild {
    uint64_t id; /* the ST's sub id: items of every kid carry it */
    uint64_t sid;
    ct_sub_params_t *p; /* p->topic is the pattern; the kids share it */
    bool resumed;       /* durable: its consumers existed: new topics' start at their first */
    uint32_t *match;    /* ids of the readable topics it matches (open addressing, 0 = free) */
    uint32_t nmatch, capmatch;
    ct_sub_t *kids[KID_BUCKETS]; /* by topic name (knext) */
    uint32_t nkids;
    uint64_t queued_bytes; /* all kids' bytes queued in the ST: one bound for the pattern */
    struct ct_wild *next;  /* ct->wilds */
} ct_wild_t;

struct wsq_consumers {
    wsq_server_t *srv;
    wsq_store_t *store;
    pthread_t thread;
    bool started;        /* the thread runs (joined by wsq__ct_stop) */
    wsq_mailbox_t inbox; /* commands from the service thread and the writer */

    /* CT only */
    ct_sub_t *subs[SUB_BUCKETS];           /* by sub id */
    ct_sub_t *by_sid[SUB_BUCKETS];         /* by session id (snext chains) */
    ct_topic_t *topics[SUB_BUCKETS];       /* by topic id */
    ct_consumer_t *consumers[SUB_BUCKETS]; /* by (topic id, name) */
    ct_sub_t *ready;
    ct_sub_t **ready_tail;
    st_item_t *out_head, **out_tail; /* produced this loop, pushed at its end */
    wsq_buf_t scratch;
    size_t tc_bytes; /* tail cache bytes, all topics */
    int64_t now_ms;
    int64_t next_timer_ms;
    int64_t next_expiry_ms; /* next consumer_ttl sweep */
    ct_sub_t *pulls;        /* pull members (pull->next) */
    ct_wild_t *wilds;       /* pattern subscriptions (next) */
    uint64_t open_seq;      /* counts CONSUMER_OPENs submitted and consumers parked, in order */
    uint64_t next_kid_id;   /* kids' sub ids: (1 << 62) | n */
    uint64_t next_pull_id;  /* pull members' sub ids: (1 << 63) | n, apart from the ST's */
};

/* ------------------------------------------------------------------------------------------- */

ct_cmd_t *wsq__ct_cmd(ct_kind_t kind, uint64_t sid, uint64_t sub_id)
{
    ct_cmd_t *c = calloc(1, sizeof(*c));
    if (c) {
        c->kind = kind;
        c->sid = sid;
        c->sub_id = sub_id;
    }
    return c;
}

void wsq__ct_params_free(ct_sub_params_t *p)
{
    if (p)
        free(p->rights);
    free(p);
}

void wsq__ct_cmd_free(ct_cmd_t *c)
{
    wsq__ct_params_free(c->sub);
    free(c->topic);
    wsq_wreq_free(&c->req);
    free(c->topics);
    free(c->reply);
    free(c->seqs);
    free(c);
}

void wsq__ct_push(wsq_consumers_t *ct, ct_cmd_t *cmd)
{
    if (cmd)
        wsq_mailbox_push(&ct->inbox, &cmd->mail);
}

static void drop_cmd(wsq_mail_t *m)
{
    wsq__ct_cmd_free((ct_cmd_t *)m);
}

/* ------------------------------------------------------------------------------------------- */
/* small containers */

/* All 32 bits of a 64-bit mix (murmur3's finalizer step). */
static uint32_t mix64(uint64_t v)
{
    v ^= v >> 33;
    v *= 0xff51afd7ed558ccdull;
    v ^= v >> 33;
    return (uint32_t)v;
}

static uint32_t hash64(uint64_t v)
{
    return mix64(v) & (SUB_BUCKETS - 1);
}

static uint32_t hash_cons(uint32_t topic_id, const char *name, size_t len)
{
    uint64_t h = 1469598103934665603ull ^ topic_id;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)name[i];
        h *= 1099511628211ull;
    }
    return hash64(h);
}

static uint32_t seqvec_lb(const seqvec_t *v, uint64_t seq)
{
    uint32_t lo = 0, hi = v->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v->v[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool seqvec_put(seqvec_t *v, uint64_t seq, int64_t t)
{
    uint32_t i = seqvec_lb(v, seq);
    if (i < v->n && v->v[i].seq == seq) {
        v->v[i].t_ms = t;
        return true;
    }
    if (i == 0 && v->v > v->base) { /* room before the first entry */
        v->v--;
        v->v[0] = (seqt_t){seq, t, 0};
        v->n++;
        return true;
    }
    if ((v->base ? (uint32_t)(v->v - v->base) : 0) + v->n == v->cap) {
        if (v->v > v->base && v->n < v->cap / 2) {
            memmove(v->base, v->v, v->n * sizeof(*v->v)); /* slide back to the start */
        } else {
            uint32_t nc = v->cap ? v->cap * 2 : 16;
            seqt_t *p = malloc(nc * sizeof(*p));
            if (p == NULL)
                return false;
            if (v->n)
                memcpy(p, v->v, v->n * sizeof(*p));
            free(v->base);
            v->base = p;
            v->cap = nc;
        }
        v->v = v->base;
    }
    memmove(&v->v[i + 1], &v->v[i], (v->n - i) * sizeof(*v->v));
    v->v[i] = (seqt_t){seq, t, 0};
    v->n++;
    return true;
}

static void seqvec_free(seqvec_t *v)
{
    free(v->base);
    *v = (seqvec_t){0};
}

static bool seqvec_has(const seqvec_t *v, uint64_t seq)
{
    uint32_t i = seqvec_lb(v, seq);
    return i < v->n && v->v[i].seq == seq;
}

/* Drops the first k entries. */
static void seqvec_drop_front(seqvec_t *v, uint32_t k)
{
    v->n -= k;
    v->v = v->n ? v->v + k : v->base;
}

static bool seqvec_del(seqvec_t *v, uint64_t seq)
{
    uint32_t i = seqvec_lb(v, seq);
    if (i >= v->n || v->v[i].seq != seq)
        return false;
    if (i < v->n / 2) { /* the shorter side moves: here the entries before it, up by one */
        memmove(&v->v[1], &v->v[0], i * sizeof(*v->v));
        seqvec_drop_front(v, 1);
    } else {
        memmove(&v->v[i], &v->v[i + 1], (v->n - i - 1) * sizeof(*v->v));
        v->n--;
    }
    return true;
}

/* Removes every entry <= upto; returns how many. */
static uint32_t seqvec_del_upto(seqvec_t *v, uint64_t upto)
{
    uint32_t i = seqvec_lb(v, upto + 1);
    seqvec_drop_front(v, i);
    return i;
}

/* ------------------------------------------------------------------------------------------- */
/* topics, consumers, subscriptions */

static void tc_evict_first(wsq_consumers_t *ct, ct_topic_t *t)
{
    tc_ent_t *e = &t->tc[t->tc_first & (TC_SLOTS - 1)];
    size_t b = e->hlen + e->len + e->json_len;
    t->tc_bytes -= b;
    ct->tc_bytes -= b;
    free(e->payload);
    free(e->json);
    memset(e, 0, sizeof(*e));
    t->tc_first++;
}

/* Forgets cached messages below seq (trimmed or purged: they must come from LMDB, as gaps). */
static void tc_drop_below(wsq_consumers_t *ct, ct_topic_t *t, uint64_t seq)
{
    while (t->tc && t->tc_first < t->tc_next && t->tc_first < seq)
        tc_evict_first(ct, t);
    if (t->tc_first >= t->tc_next)
        t->tc_first = t->tc_next = 0;
}

static void tc_free(wsq_consumers_t *ct, ct_topic_t *t)
{
    tc_drop_below(ct, t, UINT64_MAX);
    free(t->tc);
    t->tc = NULL;
}

static tc_ent_t *tc_get(ct_topic_t *t, uint64_t seq)
{
    if (t->tc == NULL || seq < t->tc_first || seq >= t->tc_next)
        return NULL;
    return &t->tc[seq & (TC_SLOTS - 1)];
}

/* Appends a message read from LMDB at the cache's tail (only contiguous seqs are kept). */
/* Do two of t's subscriptions each read every message? The members of one shared consumer
 * count once: each message goes to one of them, so a cache of what one read helps no other. */
static bool tc_useful(const ct_topic_t *t)
{
    unsigned readers = 0;
    for (const struct ct_sub *s = t->subs; s && readers < 2; s = s->tnext)
        if (s->cons == NULL || !s->cons->shared || s->cons->members == s)
            readers++;
    return readers >= 2;
}

static void tc_put(wsq_consumers_t *ct, ct_topic_t *t, const wsq_msg_view_t *m)
{
    if (t->subs == NULL || t->subs->tnext == NULL || !tc_useful(t))
        return; /* one reader: nobody would share it */
    size_t size = m->headers_len + m->len;
    if (size > TC_TOPIC_BYTES / 8 || m->seq < t->first_seq)
        return;
    if (t->tc_first < t->tc_next && m->seq != t->tc_next)
        return;
    if (t->tc == NULL && (t->tc = calloc(TC_SLOTS, sizeof(*t->tc))) == NULL)
        return;
    if (t->tc_first >= t->tc_next)
        t->tc_first = t->tc_next = m->seq;
    while (t->tc_first < t->tc_next &&
           (t->tc_next - t->tc_first >= TC_SLOTS || t->tc_bytes + size > TC_TOPIC_BYTES))
        tc_evict_first(ct, t);
    if (ct->tc_bytes + size > TC_TOTAL_BYTES)
        return;
    unsigned char *copy = malloc(size ? size : 1);
    if (copy == NULL)
        return;
    if (m->headers_len)
        memcpy(copy, m->headers, m->headers_len);
    if (m->len)
        memcpy(copy + m->headers_len, m->data, m->len);
    if (t->tc_first >= t->tc_next)
        t->tc_first = t->tc_next = m->seq;
    tc_ent_t *e = &t->tc[m->seq & (TC_SLOTS - 1)];
    *e = (tc_ent_t){.seq = m->seq,
                    .ts = m->ts_ms,
                    .flags = m->flags,
                    .len = (uint32_t)m->len,
                    .hlen = (uint32_t)m->headers_len,
                    .payload = copy};
    t->tc_next = m->seq + 1;
    t->tc_bytes += size;
    ct->tc_bytes += size;
}

static ct_topic_t *topic_find(wsq_consumers_t *ct, uint32_t id)
{
    for (ct_topic_t *t = ct->topics[hash64(id)]; t; t = t->hnext)
        if (t->id == id)
            return t;
    return NULL;
}

/* Finds or loads the topic, refreshing its head from the store. */
static ct_topic_t *topic_get(wsq_consumers_t *ct, uint32_t id)
{
    ct_topic_t *t = topic_find(ct, id);
    wsq_topic_info_t ti;
    if (wsq_store_topic_get(ct->store, id, &ti) != WSQ_OK)
        return t;
    if (t == NULL) {
        t = calloc(1, sizeof(*t));
        if (t == NULL)
            return NULL;
        t->id = id;
        uint32_t b = hash64(id);
        t->hnext = ct->topics[b];
        ct->topics[b] = t;
    }
    t->name_len = strlen(ti.name);
    memcpy(t->name, ti.name, t->name_len + 1);
    t->epoch = ti.epoch;
    /* heads only move forward; a commit notice may have arrived first */
    if (ti.first_seq > t->first_seq)
        t->first_seq = ti.first_seq;
    if (ti.next_seq > t->next_seq)
        t->next_seq = ti.next_seq;
    if (ti.purged_upto > t->purged_upto)
        t->purged_upto = ti.purged_upto;
    return t;
}

static void topic_release(wsq_consumers_t *ct, ct_topic_t *t)
{
    if (t == NULL || t->subs)
        return;
    for (ct_topic_t **pp = &ct->topics[hash64(t->id)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == t) {
            *pp = t->hnext;
            tc_free(ct, t);
            free(t);
            return;
        }
    }
}

static ct_consumer_t *cons_find(wsq_consumers_t *ct, uint32_t topic_id, const char *name,
                                size_t len)
{
    for (ct_consumer_t *c = ct->consumers[hash_cons(topic_id, name, len)]; c; c = c->hnext)
        if (c->topic_id == topic_id && c->name_len == len && memcmp(c->name, name, len) == 0)
            return c;
    return NULL;
}

/* Forgets the in-memory copy of c; its members (if any) lose it first. */
static void cons_forget(wsq_consumers_t *ct, ct_consumer_t *c)
{
    for (struct ct_sub *m = c->members; m; m = m->mnext) {
        m->cons = NULL;
        m->cur = &m->own;
    }
    c->members = NULL;
    for (struct ct_sub *g = c->ghosts; g; g = g->gnext)
        g->cons = NULL;
    c->ghosts = NULL;
    for (ct_consumer_t **pp = &ct->consumers[hash_cons(c->topic_id, c->name, c->name_len)]; *pp;
         pp = &(*pp)->hnext) {
        if (*pp == c) {
            *pp = c->hnext;
            break;
        }
    }
    wsq_cstate_fini(&c->cs);
    seqvec_free(&c->cur.redo);
    free(c->dead);
    free(c);
}

/* Submits the consumer's state to the writer (CONSUMER_PUT). */
static void cons_flush(wsq_consumers_t *ct, ct_consumer_t *c)
{
    if (!c->dirty)
        return;
    wsq_wreq_t *r = wsq_wreq_new(WSQ_WOP_CONSUMER_PUT, NULL, 0, c->name, c->name_len, 0);
    if (r == NULL)
        return; /* stays dirty; retried on the next flush */
    r->topic_id = c->topic_id;
    wsq_err err = wsq_cstate_copy(&r->state, &c->cs);
    for (uint32_t i = 0; i < c->ndead && err == WSQ_OK; i++)
        err = wsq_cstate_ack(&r->state, c->dead[i], NULL);
    if (err != WSQ_OK || wsq_store_submit(ct->store, r) != WSQ_OK) {
        wsq_wreq_free(&r);
        return;
    }
    c->dirty = false;
    c->flushed_ms = ct->now_ms;
}

static ct_sub_t *sub_find(wsq_consumers_t *ct, uint64_t id)
{
    for (ct_sub_t *s = ct->subs[hash64(id)]; s; s = s->hnext)
        if (s->id == id)
            return s;
    return NULL;
}

static void out_push(wsq_consumers_t *ct, st_item_t *it)
{
    it->mail.next = NULL;
    *ct->out_tail = it;
    ct->out_tail = (st_item_t **)&it->mail.next;
}

/* Queues one control frame (JSON text in ct->scratch) for the session of s. */
static void send_control(wsq_consumers_t *ct, uint64_t sid, uint64_t sub_id, st_kind_t kind)
{
    st_item_t *it = wsq__st_item(kind, sid, sub_id);
    if (it == NULL)
        return;
    wsq_out_t **tail = &it->chunks;
    if (wsq__out_frame(&tail, 1, ct->scratch.data, ct->scratch.len, 0, 0, 0) != WSQ_OK) {
        wsq__st_item_free(it);
        return;
    }
    out_push(ct, it);
}

static void send_close(wsq_consumers_t *ct, uint64_t sid, uint16_t code, const char *reason)
{
    st_item_t *it = wsq__st_item(ST_SUB_CLOSE, sid, 0);
    if (it == NULL)
        return;
    it->close_code = code;
    snprintf(it->reason, sizeof(it->reason), "%s", reason);
    out_push(ct, it);
}

static void sub_fail(wsq_consumers_t *ct, uint64_t sid, uint64_t sub_id, const char *ref, bool raw,
                     wsq_err err, const char *msg)
{
    if (raw) {
        send_close(ct, sid,
                   err == WSQ_ERR_STORAGE_FULL ? WSQ_CLOSE_STORAGE
                   : err == WSQ_ERR_CONFLICT   ? WSQ_CLOSE_CONFLICT
                                               : WSQ_CLOSE_INTERNAL,
                   msg);
        return;
    }
    ct->scratch.len = 0;
    wsq_proto_enc_err(&ct->scratch, ref, err, msg);
    send_control(ct, sid, sub_id, ST_SUB_FAILED);
}

/* ------------------------------------------------------------------------------------------- */
/* HTTP pull: answers */

/* Hands the answer to an HTTP request to the service thread: with WSQ_OK, body[0..len) is the
 * JSON answer; else it is the error's text. */
static void pull_reply(wsq_consumers_t *ct, uint64_t sid, wsq_err err, const char *body, size_t len)
{
    st_item_t *it = wsq__st_item(ST_ANSWER, sid, 0);
    if (it == NULL)
        return;
    it->err = err;
    it->body = malloc(len + 1);
    if (it->body == NULL) {
        wsq__st_item_free(it);
        return;
    }
    memcpy(it->body, body, len);
    it->body[len] = '\0';
    it->body_len = len;
    out_push(ct, it);
}

static pull_wait_t *pull_pop(pull_t *pl)
{
    pull_wait_t *w = pl->head;
    if (w) {
        pl->head = w->next;
        if (pl->head == NULL)
            pl->tail = &pl->head;
    }
    return w;
}

/* Every fetch waiting at pl gets the error. */
static void pull_fail(wsq_consumers_t *ct, pull_t *pl, wsq_err err, const char *msg)
{
    for (pull_wait_t *w; (w = pull_pop(pl)) != NULL; free(w))
        pull_reply(ct, w->sid, err, msg, strlen(msg));
    pl->body.len = pl->gaps.len = 0;
    pl->n = 0;
}

/* The head fetch gets what it has, maybe nothing: {"messages":[...][,"gaps":[...]]}. */
static void pull_answer_head(wsq_consumers_t *ct, pull_t *pl)
{
    pull_wait_t *w = pull_pop(pl);
    if (w == NULL)
        return;
    wsq_buf_t *b = &ct->scratch;
    b->len = 0;
    wsq_buf_append(b, "{\"messages\":[", 13);
    wsq_buf_append(b, pl->body.data, pl->body.len);
    wsq_buf_append(b, "]", 1);
    if (pl->gaps.len) {
        wsq_buf_append(b, ",\"gaps\":[", 9);
        wsq_buf_append(b, pl->gaps.data, pl->gaps.len);
        wsq_buf_append(b, "]", 1);
    }
    wsq_buf_append(b, "}", 1);
    pull_reply(ct, w->sid, WSQ_OK, (const char *)b->data, b->len);
    atomic_fetch_add_explicit(&ct->srv->metrics.delivered, pl->n, memory_order_relaxed);
    pl->body.len = pl->gaps.len = 0;
    pl->n = 0;
    free(w);
}

static void ready_add(wsq_consumers_t *ct, ct_sub_t *s)
{
    if (s->on_ready || s->state != SUB_LIVE)
        return;
    s->on_ready = true;
    s->rnext = NULL;
    *ct->ready_tail = s;
    ct->ready_tail = &s->rnext;
}

/* The ST's id of the subscription s delivers for: its own, or its pattern's. */
static uint64_t item_id(const ct_sub_t *s)
{
    return s->wild ? s->wild->id : s->id;
}

static bool durable_wsq(const ct_sub_t *s)
{
    return s->cons != NULL && !s->p->raw;
}

static bool has_credit(const ct_sub_t *s)
{
    if (s->pull) /* a fetch waits, its answer has room, and the consumer may lease more */
        return s->pull->head && s->pull->n < s->pull->head->max && s->pull->body.len < PULL_BYTES &&
               s->infl.n < PULL_LEASES;
    if (s->queued_bytes >= SUB_QUEUE_BYTES || (s->wild && s->wild->queued_bytes >= SUB_QUEUE_BYTES))
        return false;
    if (durable_wsq(s))
        return s->infl.n < s->window;
    return s->queued < s->window;
}

static uint32_t credit(const ct_sub_t *s)
{
    if (s->pull) {
        if (!has_credit(s))
            return 0;
        uint32_t want = s->pull->head->max - s->pull->n, room = PULL_LEASES - s->infl.n;
        return want < room ? want : room;
    }
    uint32_t used = durable_wsq(s) ? s->infl.n : s->queued;
    return used >= s->window ? 0 : s->window - used;
}

static bool has_work(wsq_consumers_t *ct, const ct_sub_t *s)
{
    if (s->state != SUB_LIVE || s->topic == NULL)
        return false;
    if (s->cur->redo.n && s->cur->redo.v[0].t_ms <= ct->now_ms)
        return true;
    for (uint32_t i = 0; i < s->cur->redo.n; i++)
        if (s->cur->redo.v[i].t_ms <= ct->now_ms)
            return true;
    if (s->cur->scan_next <= s->cur->scan_end)
        return true;
    return s->cur->next_seq < s->topic->next_seq;
}

static void sub_unlink(wsq_consumers_t *ct, ct_sub_t *s)
{
    for (ct_sub_t **pp = &ct->subs[hash64(s->id)]; *pp; pp = &(*pp)->hnext)
        if (*pp == s) {
            *pp = s->hnext;
            break;
        }
    for (ct_sub_t **pp = &ct->by_sid[hash64(s->sid)]; s->wild == NULL && *pp; pp = &(*pp)->snext)
        if (*pp == s) {
            *pp = s->snext;
            break;
        }
    if (s->topic) {
        for (ct_sub_t **pp = &s->topic->subs; *pp; pp = &(*pp)->tnext)
            if (*pp == s) {
                *pp = s->tnext;
                break;
            }
    }
    if (s->on_ready) {
        ct_sub_t **pp = &ct->ready;
        while (*pp && *pp != s)
            pp = &(*pp)->rnext;
        if (*pp) {
            *pp = s->rnext;
            if (ct->ready_tail == &s->rnext)
                ct->ready_tail = pp;
        }
        s->on_ready = false;
    }
}

/* Ends a subscription: detaches (and persists) its consumer and frees it. */
/* Remembers that seq was handed to the service thread for s (durable subscriptions). false: no
 * memory. */
static bool unw_push(ct_sub_t *s, uint64_t seq)
{
    if (s->unw_len == s->unw_cap) {
        uint32_t cap = s->unw_cap ? 2 * s->unw_cap : 64;
        uint64_t *v = malloc(cap * sizeof(*v));
        if (v == NULL)
            return false;
        for (uint32_t i = 0; i < s->unw_len; i++)
            v[i] = s->unw[(s->unw_head + i) % s->unw_cap];
        free(s->unw);
        s->unw = v;
        s->unw_cap = cap;
        s->unw_head = 0;
    }
    s->unw[(s->unw_head + s->unw_len) % s->unw_cap] = seq;
    s->unw_len++;
    return true;
}

/* n messages of s were written to the socket: their deliveries stand. */
static void unw_written(ct_sub_t *s, uint32_t n)
{
    if (n > s->unw_len)
        n = s->unw_len;
    if (s->unw_cap)
        s->unw_head = (s->unw_head + n) % s->unw_cap;
    s->unw_len -= n;
}

/* The session of s ended with messages still unwritten: their deliveries never happened. */
static void unw_take_back(ct_sub_t *s)
{
    ct_consumer_t *c = s->cons;
    for (uint32_t i = s->unw_len; c && i-- > 0;) {
        wsq_cstate_undeliver(&c->cs, s->unw[(s->unw_head + i) % s->unw_cap]);
        c->dirty = true;
    }
    s->unw_len = 0;
}

static void sub_state(ct_sub_t *s, sub_state_t to)
{
    /* forward only (OPENING -> DEAD skips LIVE); a dead subscription may be ended again (a raw
     * one dead of a gap, then taken over before its session is gone) */
    assert(to > s->state || (to == SUB_DEAD && s->state == SUB_DEAD));
    s->state = to;
}

/* A frame for the session as a whole (sub_id 0: delivered even after the subscription's end). */
static void send_reply(wsq_consumers_t *ct, uint64_t sid, const char *frame, size_t len)
{
    if (frame == NULL)
        return;
    ct->scratch.len = 0;
    if (wsq_buf_append(&ct->scratch, frame, len) == WSQ_OK)
        send_control(ct, sid, 0, ST_DELIVER);
}

static bool dead_pending(const ct_consumer_t *c, uint64_t seq);

/* Takes s out of its consumer's members; false when it was not one. */
static bool member_remove(ct_consumer_t *c, ct_sub_t *s)
{
    for (ct_sub_t **pp = &c->members; *pp; pp = &(*pp)->mnext)
        if (*pp == s) {
            *pp = s->mnext;
            s->mnext = NULL;
            return true;
        }
    return false;
}

/* Every live member of c that can take work now goes on the ready list. */
static void members_ready(wsq_consumers_t *ct, ct_consumer_t *c)
{
    for (ct_sub_t *m = c->members; m; m = m->mnext)
        if (has_credit(m) && has_work(ct, m))
            ready_add(ct, m);
}

/* A member of a shared consumer leaves: what it held goes back to the consumer at once, due now,
 * for the other members (its next delivery counts one more). What was handed over but never
 * written is taken back first, as for an exclusive consumer. */
static void member_release(wsq_consumers_t *ct, ct_sub_t *s)
{
    ct_consumer_t *c = s->cons;
    for (uint32_t i = 0; i < s->unw_len; i++) {
        uint64_t seq = s->unw[(s->unw_head + i) % s->unw_cap];
        if (!wsq_cstate_is_acked(&c->cs, seq) && !dead_pending(c, seq))
            seqvec_put(&c->cur.redo, seq, ct->now_ms);
    }
    unw_take_back(s);
    for (uint32_t i = 0; i < s->infl.n; i++)
        seqvec_put(&c->cur.redo, s->infl.v[i].seq, ct->now_ms);
    seqvec_drop_front(&s->infl, s->infl.n);
    members_ready(ct, c);
}

static void sub_end(wsq_consumers_t *ct, ct_sub_t *s);

static uint32_t name_bucket(const char *name, size_t len)
{
    return hash_cons(0, name, len) % KID_BUCKETS;
}

/* The kid of pattern w on topic name[0..len), or NULL. */
static ct_sub_t *kid_find(const ct_wild_t *w, const char *name, size_t len)
{
    for (ct_sub_t *k = w->kids[name_bucket(name, len)]; k; k = k->knext)
        if (k->kid_len == len && memcmp(k->kid_name, name, len) == 0)
            return k;
    return NULL;
}

static void kid_unlink(wsq_consumers_t *ct, ct_sub_t *s)
{
    ct_wild_t *w = s->wild;
    for (ct_sub_t **pp = &w->kids[name_bucket(s->kid_name, s->kid_len)]; *pp; pp = &(*pp)->knext)
        if (*pp == s) {
            *pp = s->knext;
            w->nkids--;
            atomic_fetch_sub_explicit(&ct->srv->metrics.pattern_topics, 1, memory_order_relaxed);
            break;
        }
    w->queued_bytes -= s->queued_bytes < w->queued_bytes ? s->queued_bytes : w->queued_bytes;
    free(s->kid_name);
}

/* Ends s once it has been idle for ms (idle: now; *since: since when, 0 while busy). true: s
 * ended. */
static bool end_when_idle(wsq_consumers_t *ct, ct_sub_t *s, bool idle, int64_t *since, int64_t ms)
{
    if (!idle) {
        *since = 0;
        return false;
    }
    if (*since == 0)
        *since = ct->now_ms;
    if (ct->now_ms - *since < ms)
        return false;
    sub_state(s, SUB_DEAD);
    sub_end(ct, s);
    return true;
}

#define PULL_IDLE_MS 10000 /* a pull member without fetch or lease leaves after this */

/* Fetches whose wait ran out with nothing to lease get an empty answer; a pull member idle for
 * PULL_IDLE_MS (no fetch waiting, no lease) leaves its consumer. false: s ended. */
static bool pull_poll(wsq_consumers_t *ct, ct_sub_t *s)
{
    pull_t *pl = s->pull;
    for (pull_wait_t **pp = &pl->head; *pp;) {
        pull_wait_t *w = *pp;
        if (w->deadline_ms > ct->now_ms || (w == pl->head && has_work(ct, s))) {
            pp = &w->next; /* (the head with work waiting is answered by its delivery) */
            continue;
        }
        if (w == pl->head) {
            pull_answer_head(ct, pl);
            pp = &pl->head;
            continue;
        }
        *pp = w->next;
        if (pl->tail == &w->next)
            pl->tail = pp;
        pull_reply(ct, w->sid, WSQ_OK, "{\"messages\":[]}", 15);
        free(w);
    }
    return !end_when_idle(ct, s, pl->head == NULL && s->infl.n == 0 && s->state == SUB_LIVE,
                          &pl->idle_since, PULL_IDLE_MS);
}

/* s is refused or ends with an error: its client hears why (an err frame, a close in raw mode,
 * the error answer of every fetch waiting at a pull member). */
static void sub_refuse(wsq_consumers_t *ct, ct_sub_t *s, wsq_err err, const char *msg)
{
    if (s->wild) { /* one topic of a pattern: an err frame names it; the pattern goes on */
        char m[400];
        snprintf(m, sizeof(m), "%s%s%s", s->topic ? s->topic->name : "", s->topic ? ": " : "", msg);
        ct->scratch.len = 0;
        wsq_proto_enc_err(&ct->scratch, "", err, m);
        send_control(ct, s->sid, item_id(s), ST_DELIVER);
    } else if (s->pull)
        pull_fail(ct, s->pull, err, msg);
    else
        sub_fail(ct, s->sid, s->id, s->p->ref, s->p->raw, err, msg);
}

static void pull_free(wsq_consumers_t *ct, ct_sub_t *s)
{
    pull_t *pl = s->pull;
    pull_fail(ct, pl, WSQ_ERR_CLOSED, "the consumer's HTTP pull ended; fetch again");
    for (ct_sub_t **pp = &ct->pulls; *pp; pp = &(*pp)->pull->next)
        if (*pp == s) {
            *pp = pl->next;
            break;
        }
    wsq_buf_fini(&pl->body);
    wsq_buf_fini(&pl->gaps);
    free(pl);
    s->pull = NULL;
}

static void sub_end(wsq_consumers_t *ct, ct_sub_t *s)
{
    sub_unlink(ct, s);
    send_reply(ct, s->sid, s->unsub_reply, s->unsub_reply_len); /* after all it sent */
    free(s->unsub_reply);
    if (s->cons) {
        ct_consumer_t *c = s->cons;
        for (ct_sub_t **pp = &c->ghosts; *pp; pp = &(*pp)->gnext)
            if (*pp == s) { /* a taken-over subscription's session is gone */
                *pp = s->gnext;
                s->cons = NULL;
                break;
            }
    }
    if (s->cons) {
        ct_consumer_t *c = s->cons;
        if (member_remove(c, s)) {
            if (c->shared)
                member_release(ct, s);
            else
                unw_take_back(s);
        }
        if (c->members == NULL) {
            c->cs.last_seen_ms = ct->now_ms;
            c->dirty = true;
            cons_flush(ct, c);
            /* The writer applies requests in order, so a CONSUMER_OPEN submitted from now on
             * sees this state; one submitted before it (a new session's sub racing this end)
             * read the state before it. So the in-memory copy stays, parked, until no open
             * older than this moment is pending (timers: cons_unpark_old); such an open
             * resumes from it, not from what the writer read. */
            c->parked = true;
            c->parked_ms = ct->now_ms;
            c->parked_seq = ++ct->open_seq;
        }
    }
    if (s->pull)
        pull_free(ct, s);
    if (s->wild)
        kid_unlink(ct, s);
    ct_topic_t *t = s->topic;
    seqvec_free(&s->own.redo);
    seqvec_free(&s->infl);
    free(s->unw);
    if (s->wild == NULL) /* (a pattern's topics share its parameters) */
        wsq__ct_params_free(s->p);
    free(s);
    topic_release(ct, t);
}

/* ------------------------------------------------------------------------------------------- */
/* subscribe */

static void opened_done(wsq_wreq_t *req, void *arg)
{
    wsq_consumers_t *ct = arg;
    ct_cmd_t *c = wsq__ct_cmd(CT_OPENED, req->user[0], req->user[1]);
    if (c == NULL) {
        wsq_wreq_free(&req);
        return;
    }
    c->req = req;
    wsq__ct_push(ct, c);
}

/* A subscription of session sid with parameters p (taken), linked into the tables, OPENING.
 * A pattern's kid (kid) stays out of the session's list: its pattern ends it, and a session
 * with 100,000 of them in one list would make each end a walk of the list. NULL when out of
 * memory (p is not taken then). */
static ct_sub_t *sub_alloc(wsq_consumers_t *ct, uint64_t sid, uint64_t sub_id, ct_sub_params_t *p,
                           bool kid)
{
    ct_sub_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->id = sub_id;
    s->sid = sid;
    sub_state(s, SUB_OPENING);
    s->p = p;
    s->window = p->window;
    s->cur = &s->own;
    uint32_t b = hash64(s->id);
    s->hnext = ct->subs[b];
    ct->subs[b] = s;
    if (!kid) {
        b = hash64(s->sid);
        s->snext = ct->by_sid[b];
        ct->by_sid[b] = s;
    }
    return s;
}

/* The writer opens s's topic (topic[0..len), created if missing) and, for a durable one, its
 * consumer, created with its ack floor at `floor` when new; on_opened follows. false: refused
 * (its client was told; s ended). */
static bool sub_open(wsq_consumers_t *ct, ct_sub_t *s, const char *topic, size_t len,
                     uint64_t floor)
{
    const ct_sub_params_t *p = s->p;
    bool durable = p->consumer_len > 0;
    wsq_wreq_t *r = wsq_wreq_new(durable ? WSQ_WOP_CONSUMER_OPEN : WSQ_WOP_TOPIC_ENSURE, topic, len,
                                 durable ? p->consumer : NULL, p->consumer_len, 0);
    wsq_err err = WSQ_ERR_NOMEM;
    if (r != NULL) {
        s->open_seq = ++ct->open_seq;
        r->seq = floor;
        if (p->shared)
            r->flags = WSQ_CSTATE_SHARED; /* (for a new consumer; an existing one keeps its mode) */
        r->user[0] = s->sid;
        r->user[1] = s->id;
        r->done = opened_done;
        r->arg = ct;
        err = wsq_store_submit(ct->store, r);
    }
    if (err != WSQ_OK) {
        wsq_wreq_free(&r);
        sub_refuse(ct, s, err, wsq_strerror(err));
        sub_end(ct, s);
        return false;
    }
    return true;
}

/* A new subscription of session sid (0 for a pull member, pull set) opens: its topic and
 * consumer are opened by the writer (on_opened follows). Takes p. NULL when refused (its client
 * was told). */
static ct_sub_t *sub_new(wsq_consumers_t *ct, uint64_t sid, uint64_t sub_id, ct_sub_params_t *p,
                         pull_t *pull)
{
    ct_sub_t *s = sub_alloc(ct, sid, sub_id, p, false);
    if (s == NULL) {
        if (pull)
            pull_fail(ct, pull, WSQ_ERR_NOMEM, "out of memory");
        else
            sub_fail(ct, sid, sub_id, p->ref, p->raw, WSQ_ERR_NOMEM, "out of memory");
        wsq__ct_params_free(p);
        return NULL;
    }
    if (pull) {
        s->pull = pull;
        pull->next = ct->pulls;
        ct->pulls = s;
    }
    /* Where a NEW consumer starts; an existing one resumes whatever is asked. Earliest and
     * time are refined once the topic is known. */
    uint64_t floor;
    switch (p->from) {
    case WSQ_FROM_SEQ:
        floor = p->from_seq ? p->from_seq - 1 : 0;
        break;
    case WSQ_FROM_EARLIEST:
    case WSQ_FROM_TIME:
        floor = 0;
        break;
    default:
        floor = p->latest_seq ? p->latest_seq - 1 : 0;
    }
    return sub_open(ct, s, p->topic, p->topic_len, floor) ? s : NULL;
}

static void on_sub(wsq_consumers_t *ct, ct_cmd_t *cmd)
{
    ct_sub_params_t *p = cmd->sub;
    cmd->sub = NULL;
    (void)sub_new(ct, cmd->sid, cmd->sub_id, p, NULL);
}

static void on_opened(wsq_consumers_t *ct, ct_cmd_t *cmd)
{
    wsq_wreq_t *r = cmd->req;
    ct_sub_t *s = sub_find(ct, cmd->sub_id);
    if (s == NULL || s->state != SUB_OPENING)
        return; /* unsubscribed or disconnected meanwhile */
    ct_sub_params_t *p = s->p;
    if (r->err != WSQ_OK) {
        sub_refuse(ct, s, r->err, wsq_strerror(r->err));
        sub_end(ct, s);
        return;
    }
    ct_topic_t *t = topic_get(ct, r->topic_id);
    if (t == NULL || t->epoch != r->topic_epoch) {
        sub_refuse(ct, s, WSQ_ERR_NOTFOUND, "topic was deleted while subscribing");
        sub_end(ct, s);
        return;
    }
    s->topic = t;
    s->tnext = t->subs;
    t->subs = s;

    bool reset = p->has_epoch && p->epoch != t->epoch && s->wild == NULL;
    /* (a pattern's new topic starts at its first message) */
    wsq_from_t from = s->kid_earliest ? WSQ_FROM_EARLIEST : p->from;
    uint64_t start;
    bool resumed = false;
    if (p->consumer_len) {
        ct_consumer_t *c = cons_find(ct, t->id, p->consumer, p->consumer_len);
        bool shared = c ? c->shared : (r->state.flags & WSQ_CSTATE_SHARED) != 0;
        if (shared != p->shared) {
            char msg[224];
            if (p->pull)
                snprintf(msg, sizeof(msg),
                         shared ? "consumer %s is shared: fetch with shared=true"
                                : "consumer %s is exclusive: fetch without shared=true",
                         p->consumer);
            else
                snprintf(msg, sizeof(msg),
                         shared ? "consumer %s is shared: subscribe with \"shared\": true"
                                : "consumer %s is exclusive: subscribe without \"shared\"",
                         p->consumer);
            sub_refuse(ct, s, WSQ_ERR_CONFLICT, msg);
            sub_end(ct, s);
            return;
        }
        if (c && !c->shared && c->members && p->pull) {
            char msg[320];
            snprintf(msg, sizeof(msg),
                     "consumer %s is exclusive and a WebSocket session holds it; share it "
                     "(shared=true) to serve it over WebSocket and HTTP at once",
                     p->consumer);
            sub_refuse(ct, s, WSQ_ERR_CONFLICT, msg);
            sub_end(ct, s);
            return;
        }
        if (c && !c->shared && c->members) {
            /* Takeover: the newest session wins; the old one is told why it lost (a pull
             * member's waiting fetches too; its leases are the new session's to redeliver). */
            ct_sub_t *old = c->members;
            c->members = NULL;
            if (old->pull)
                pull_fail(ct, old->pull, WSQ_ERR_TAKEN_OVER,
                          "a WebSocket session took the consumer over");
            send_close(ct, old->sid, WSQ_CLOSE_TAKEN_OVER, "consumer taken over by a new session");
            sub_state(old, SUB_DEAD);
            if (old->pull || old->wild) {
                old->cons = NULL;
                sub_end(ct, old);
            } else {
                /* its session may have acked before it learns of the takeover (acks that
                 * crossed it, or a close of its own): until the session is gone, they still
                 * count. It delivers nothing more: off its topic and the ready list. */
                ct_topic_t *ot = old->topic;
                for (ct_sub_t **pp = ot ? &ot->subs : NULL; pp && *pp; pp = &(*pp)->tnext)
                    if (*pp == old) {
                        *pp = old->tnext;
                        break;
                    }
                old->topic = NULL;
                topic_release(ct, ot);
                old->gnext = c->ghosts;
                c->ghosts = old;
            }
            c = cons_find(ct, t->id, p->consumer, p->consumer_len);
        }
        if (c == NULL) {
            c = calloc(1, sizeof(*c));
            if (c == NULL) {
                sub_refuse(ct, s, WSQ_ERR_NOMEM, "out of memory");
                sub_end(ct, s);
                return;
            }
            c->topic_id = t->id;
            c->name_len = p->consumer_len;
            memcpy(c->name, p->consumer, p->consumer_len);
            wsq_cstate_init(&c->cs);
            if (wsq_cstate_copy(&c->cs, &r->state) != WSQ_OK) {
                free(c);
                sub_refuse(ct, s, WSQ_ERR_NOMEM, "out of memory");
                sub_end(ct, s);
                return;
            }
            c->shared = (c->cs.flags & WSQ_CSTATE_SHARED) != 0;
            uint32_t b = hash_cons(c->topic_id, c->name, c->name_len);
            c->hnext = ct->consumers[b];
            ct->consumers[b] = c;
        }
        c->parked = false; /* (newer than what the writer read, when this open raced its end) */
        bool first = c->members == NULL;
        s->mnext = c->members;
        c->members = s;
        s->vtime = c->vclock; /* a newcomer starts level with the others, not ahead */
        s->cons = c;
        resumed = !r->created;
        if (r->created) {
            uint64_t floor = c->cs.ack_floor;
            if (from == WSQ_FROM_EARLIEST)
                floor = t->first_seq - 1;
            else if (from == WSQ_FROM_TIME) {
                uint64_t seq = t->next_seq;
                if (wsq_store_seq_at_time(ct->store, t->id, p->from_time, &seq) == WSQ_OK)
                    floor = seq - 1;
            }
            if (floor != c->cs.ack_floor) {
                wsq_cstate_ack_upto(&c->cs, floor, NULL);
                c->dirty = true;
            }
        }
        if (c->shared)
            s->cur = &c->cur; /* one cursor for all members */
        if (first) {
            /* resume: the unacked messages an earlier session had, then new ones */
            s->cur->scan_next = c->cs.ack_floor + 1;
            s->cur->scan_end = c->cs.delivered_upto;
            s->cur->next_seq = c->cs.delivered_upto + 1;
            seqvec_drop_front(&s->cur->redo, s->cur->redo.n);
            /* nacked messages keep their delay across reconnects */
            for (uint32_t i = 0; i < c->cs.n_pend; i++)
                if (c->cs.pend[i].due_ms > ct->now_ms)
                    seqvec_put(&s->cur->redo, c->cs.pend[i].seq, c->cs.pend[i].due_ms);
        }
        start = s->cur->scan_next <= s->cur->scan_end ? s->cur->scan_next : s->cur->next_seq;
    } else {
        switch (reset ? WSQ_FROM_EARLIEST : p->from) {
        case WSQ_FROM_EARLIEST:
            start = t->first_seq;
            break;
        case WSQ_FROM_SEQ:
            start = p->from_seq ? p->from_seq : 1;
            break;
        case WSQ_FROM_TIME:
            start = t->next_seq;
            wsq_store_seq_at_time(ct->store, t->id, p->from_time, &start);
            break;
        default:
            start = p->latest_seq && p->latest_seq <= t->next_seq ? p->latest_seq : t->next_seq;
            if (p->latest_seq && t->first_seq > start)
                start = t->first_seq; /* trimmed meanwhile: not a gap, nothing was wanted */
        }
        s->cur->next_seq = start;
        s->cur->scan_next = 1;
        s->cur->scan_end = 0;
    }
    if (from == WSQ_FROM_TIME && (p->consumer_len == 0 || r->created))
        s->min_ts = p->from_time;
    sub_state(s, SUB_LIVE);

    if (!p->raw && !p->pull && s->wild == NULL) {
        if (reset) {
            ct->scratch.len = 0;
            wsq_proto_enc_reset(&ct->scratch, t->name, t->name_len, t->epoch, t->first_seq,
                                t->next_seq);
            send_control(ct, s->sid, s->unsub_pending ? 0 : s->id, ST_DELIVER);
        }
        wsq_subscribed_t sd = {.topic = t->name,
                               .topic_len = t->name_len,
                               .consumer = p->consumer_len ? p->consumer : NULL,
                               .epoch = t->epoch,
                               .first_seq = t->first_seq,
                               .next_seq = t->next_seq,
                               .start_seq = start,
                               .window = s->window,
                               .resumed = resumed,
                               .shared = p->shared};
        ct->scratch.len = 0;
        wsq_proto_enc_subscribed(&ct->scratch, p->ref, &sd);
        /* (unsubscribed meanwhile: the session no longer knows the id, so the frame goes to
         * the session as a whole, and the unsub's answer follows it) */
        send_control(ct, s->sid, s->unsub_pending ? 0 : s->id, ST_DELIVER);
    }
    if (s->unsub_pending) {
        sub_state(s, SUB_DEAD);
        sub_end(ct, s);
        return;
    }
    wsq_debug_log("subscribe", "sid=%llu sub=%llu topic=%s consumer=%s start=%llu resumed=%d",
                  (unsigned long long)s->sid, (unsigned long long)s->id, t->name,
                  p->consumer_len ? p->consumer : "-", (unsigned long long)start, resumed);
    ready_add(ct, s);
    if (s->pull && !has_work(ct, s))
        (void)pull_poll(ct, s); /* wait=0 with nothing to lease: answered at once */
}

/* ------------------------------------------------------------------------------------------- */
/* acks */

/* Acknowledges seq for consumer c, sent by member s (NULL: over HTTP). A late ack (from a
 * member the message has since left, or over HTTP) is done all the same, and the member holding
 * it now gets its slot back. True when seq was not acknowledged before. */
static bool ack_seq(wsq_consumers_t *ct, ct_consumer_t *c, ct_sub_t *s, uint64_t seq)
{
    if (seq == 0 || seq > c->cs.delivered_upto)
        return false;
    bool changed;
    if (wsq_cstate_ack(&c->cs, seq, &changed) != WSQ_OK)
        return false;
    ct_sub_t *holder = s && seqvec_del(&s->infl, seq) ? s : NULL;
    for (ct_sub_t *m = c->members; holder == NULL && m; m = m->mnext)
        if (m != s && seqvec_del(&m->infl, seq))
            holder = m;
    if (holder)
        atomic_fetch_add_explicit(&ct->srv->metrics.acked, 1, memory_order_relaxed);
    if (holder && holder != s && has_credit(holder) && has_work(ct, holder))
        ready_add(ct, holder);
    if (c->shared) {
        seqvec_del(&c->cur.redo, seq); /* the members' one cursor */
    } else {
        if (s)
            seqvec_del(&s->cur->redo, seq);
        for (ct_sub_t *m = c->members; m; m = m->mnext)
            seqvec_del(&m->cur->redo, seq);
    }
    c->dirty |= changed;
    return changed;
}

static ct_sub_t *cmd_sub(wsq_consumers_t *ct, const ct_cmd_t *cmd);

static void on_ack(wsq_consumers_t *ct, ct_cmd_t *cmd)
{
    ct_sub_t *s = cmd_sub(ct, cmd);
    if (s == NULL || s->cons == NULL || (s->state != SUB_LIVE && s->topic != NULL))
        return; /* ephemeral: acks are accepted and mean nothing (a taken-over one's count) */
    ct_consumer_t *c = s->cons;
    uint64_t upto = cmd->seq;
    if (cmd->kind == CT_ACK_UPTO) {
        if (upto > c->cs.delivered_upto)
            upto = c->cs.delivered_upto; /* never skip what was not delivered */
        bool changed;
        wsq_cstate_ack_upto(&c->cs, upto, &changed);
        uint32_t n = seqvec_del_upto(&s->infl, upto);
        seqvec_del_upto(&s->cur->redo, upto);
        atomic_fetch_add_explicit(&ct->srv->metrics.acked, n, memory_order_relaxed);
        c->dirty |= changed;
    } else {
        (void)ack_seq(ct, c, s, upto);
        for (uint32_t i = 0; i < cmd->n_seqs; i++) /* (the acks that joined it) */
            (void)ack_seq(ct, c, s, cmd->seqs[i]);
    }
    if (s->cur->scan_next <= c->cs.ack_floor)
        s->cur->scan_next = c->cs.ack_floor + 1;
    if (has_credit(s) && has_work(ct, s))
        ready_add(ct, s);
}

static void dead_letter(wsq_consumers_t *ct, ct_sub_t *s, const wsq_msg_view_t *m, uint32_t count,
                        const char *reason);

typedef struct {
    wsq_consumers_t *ct;
    ct_sub_t *s;
} term_t;

static int term_one(void *arg, const wsq_msg_view_t *m)
{
    term_t *tm = arg;
    dead_letter(tm->ct, tm->s, m, wsq_cstate_count(&tm->s->cons->cs, m->seq), "term");
    return 1;
}

/* Member s hands seq back: delivered again from delay_ms on, or, with term, given up to the
 * dead-letter topic. On a shared consumer (and over HTTP) only the member holding it may. True
 * when it took effect. */
static bool nack_seq(wsq_consumers_t *ct, ct_sub_t *s, uint64_t seq, int64_t delay_ms, bool term)
{
    ct_consumer_t *c = s->cons;
    if (seq == 0 || seq > c->cs.delivered_upto || wsq_cstate_is_acked(&c->cs, seq) ||
        dead_pending(c, seq))
        return false;
    if ((c->shared || s->pull) && !seqvec_has(&s->infl, seq))
        return false; /* it left this member (ack_wait): the member holding it now decides */
    if (term) {       /* given up: read it once more, for its copy */
        term_t tm = {ct, s};
        wsq_read_info_t info;
        if (wsq_store_read(ct->store, s->topic->id, seq, 1, UINT64_MAX, term_one, &tm, &info) !=
                WSQ_OK ||
            info.last_seq != seq)
            return false; /* (gone meanwhile: the consumer gets its gap as for any removed one) */
        atomic_fetch_add_explicit(&ct->srv->metrics.nacked, 1, memory_order_relaxed);
        if (has_credit(s) && has_work(ct, s))
            ready_add(ct, s);
        return true;
    }
    int64_t due = ct->now_ms + delay_ms;
    if (wsq_cstate_nack(&c->cs, seq, delay_ms ? due : 0) != WSQ_OK)
        return false;
    c->dirty = true;
    seqvec_del(&s->infl, seq); /* a nacked message no longer holds a window slot */
    seqvec_put(&s->cur->redo, seq, due);
    atomic_fetch_add_explicit(&ct->srv->metrics.nacked, 1, memory_order_relaxed);
    if (c->shared)
        members_ready(ct, c);
    else if (has_credit(s) && has_work(ct, s))
        ready_add(ct, s);
    return true;
}

static void on_nack(wsq_consumers_t *ct, ct_cmd_t *cmd)
{
    ct_sub_t *s = cmd_sub(ct, cmd);
    if (s != NULL && s->state == SUB_LIVE && s->cons != NULL)
        (void)nack_seq(ct, s, cmd->seq, cmd->delay_ms, cmd->term);
}

static void on_written(wsq_consumers_t *ct, ct_cmd_t *cmd)
{
    ct_sub_t *s = sub_find(ct, cmd->sub_id);
    if (s == NULL)
        return;
    s->queued = s->queued > cmd->count ? s->queued - cmd->count : 0;
    uint64_t freed = s->queued_bytes > cmd->bytes ? cmd->bytes : s->queued_bytes;
    s->queued_bytes -= freed;
    if (s->wild)
        s->wild->queued_bytes -= freed;
    atomic_fetch_add_explicit(&ct->srv->metrics.delivered, cmd->count, memory_order_relaxed);
    if (s->p->raw && s->cons && cmd->count && s->state != SUB_OPENING) {
        /* raw mode: a message counts as acknowledged once written to the socket. Also when the
         * subscription is already dead of a gap or a corrupt message (the only ends that keep
         * its consumer): the messages before it were queued ahead of the close and are written
         * now, so the consumer resumes after them, not with them again. A shared consumer's
         * member acknowledges exactly the seqs it wrote (the others are other members'). */
        bool changed = false;
        if (s->cons->shared) {
            for (uint32_t i = 0; i < cmd->count && i < s->unw_len; i++) {
                bool ch = false;
                (void)wsq_cstate_ack(&s->cons->cs, s->unw[(s->unw_head + i) % s->unw_cap], &ch);
                changed |= ch;
            }
        } else {
            wsq_cstate_ack_upto(&s->cons->cs, cmd->seq, &changed);
        }
        s->cons->dirty |= changed;
        atomic_fetch_add_explicit(&ct->srv->metrics.acked, cmd->count, memory_order_relaxed);
    }
    unw_written(s, cmd->count);
    if (has_credit(s) && has_work(ct, s))
        ready_add(ct, s);
}

static void wild_free(wsq_consumers_t *ct, ct_wild_t *w);

static void on_session_gone(wsq_consumers_t *ct, uint64_t sid)
{
    for (ct_sub_t *s = ct->pulls; s; s = s->pull->next) { /* a fetch whose client left */
        pull_t *pl = s->pull;
        for (pull_wait_t **pp = &pl->head; *pp;) {
            pull_wait_t *w = *pp;
            if (w->sid != sid) {
                pp = &w->next;
                continue;
            }
            *pp = w->next;
            if (pl->tail == &w->next)
                pl->tail = pp;
            free(w);
        }
    }
    for (ct_wild_t *w = ct->wilds, *nx; w; w = nx) {
        nx = w->next;
        if (w->sid == sid)
            wild_free(ct, w); /* (ends its kids) */
    }
    ct_sub_t **pp = &ct->by_sid[hash64(sid)];
    while (*pp) {
        ct_sub_t *s = *pp;
        if (s->sid == sid)
            sub_end(ct, s); /* unlinks *pp */
        else
            pp = &s->snext;
    }
}

static void wild_commit(wsq_consumers_t *ct, const wsq_commit_topic_t *ti);

static void on_commit(wsq_consumers_t *ct, ct_cmd_t *cmd)
{
    for (uint32_t i = 0; i < cmd->n_topics; i++) {
        const wsq_commit_topic_t *ti = &cmd->topics[i];
        if (ct->wilds && (ti->created || ti->appended))
            wild_commit(ct, ti);
        ct_topic_t *t = topic_find(ct, ti->id);
        if (t == NULL)
            continue;
        if (ti->deleted) {
            /* The topic is gone: every subscription on it ends with an explanation. */
            while (t->subs) {
                ct_sub_t *s = t->subs;
                if (s->pull)
                    pull_fail(ct, s->pull, WSQ_ERR_NOTFOUND, "topic was deleted");
                else if (s->wild)
                    sub_refuse(ct, s, WSQ_ERR_NOTFOUND, "topic was deleted");
                else /* (no ref: this answers no request) */
                    sub_fail(ct, s->sid, s->id, "", s->p->raw, WSQ_ERR_NOTFOUND,
                             "topic was deleted");
                if (s->cons)
                    cons_forget(ct, s->cons); /* (every member lets go of it) */
                sub_end(ct, s);
            }
            continue;
        }
        if (ti->next_seq > t->next_seq)
            t->next_seq = ti->next_seq;
        if (ti->next_seq > t->notified_next)
            t->notified_next = ti->next_seq;
        if (ti->first_seq > t->first_seq)
            t->first_seq = ti->first_seq;
        tc_drop_below(ct, t, t->first_seq);
        if (ti->trimmed) {
            wsq_topic_info_t info;
            if (wsq_store_topic_get(ct->store, t->id, &info) == WSQ_OK &&
                info.purged_upto > t->purged_upto)
                t->purged_upto = info.purged_upto;
        }
        for (ct_sub_t *s = t->subs; s; s = s->tnext)
            if (has_credit(s) && has_work(ct, s))
                ready_add(ct, s);
    }
}

/* ------------------------------------------------------------------------------------------- */
/* delivery */

typedef struct {
    wsq_consumers_t *ct;
    ct_sub_t *s;
    wsq_outlist_t *out;
    uint32_t budget;     /* messages still allowed */
    uint64_t bytes;      /* framed bytes produced */
    uint32_t sent;       /* messages produced */
    bool redeliver;      /* scan/redo read: skip acked, count deliveries */
    uint64_t only_seq;   /* redo: deliver exactly this seq (0: any) */
    uint64_t last;       /* last seq visited */
    uint64_t expect;     /* next seq the read should see; a jump is a gap */
    uint64_t stop_after; /* do not go beyond this seq (the resume scan's end) */
    bool fill_cache;     /* messages read from LMDB for new deliveries go into the tail cache */
    bool ended;          /* the subscription ended (raw-mode gap) */
    wsq_err err;
    const wsq_read_info_t *info; /* the running read's snapshot of the topic (NULL: cache) */
} rd_t;

/* Tells s that from..to will not come: wsq.v1 gets a gap frame in out; raw mode gets what out
 * holds, then the close 4010 "gap FROM-TO REASON", and the subscription ends (returns false). */
static bool gap_out(wsq_consumers_t *ct, ct_sub_t *s, uint64_t from, uint64_t to,
                    wsq_gap_reason_t why, wsq_outlist_t *out)
{
    if (s->pull) { /* the fetch's answer names it */
        char g[128];
        int n = snprintf(g, sizeof(g), "%s{\"from\":%llu,\"to\":%llu,\"reason\":\"%s\"}",
                         s->pull->gaps.len ? "," : "", (unsigned long long)from,
                         (unsigned long long)to, wsq_gap_reason_name(why));
        (void)wsq_buf_append(&s->pull->gaps, g, (size_t)n);
        return true;
    }
    if (s->p->raw) {
        char reason[64];
        snprintf(reason, sizeof(reason), "gap %llu-%llu %s", (unsigned long long)from,
                 (unsigned long long)to, wsq_gap_reason_name(why));
        /* what was read before the gap goes out first */
        st_item_t *it = wsq__st_item(ST_DELIVER, s->sid, item_id(s));
        if (it) {
            it->chunks = wsq__outlist_take(out);
            out_push(ct, it);
        }
        send_close(ct, s->sid, WSQ_CLOSE_GAP, reason);
        sub_state(s, SUB_DEAD);
        return false;
    }
    ct->scratch.len = 0;
    wsq_proto_enc_gap(&ct->scratch, s->topic->name, s->topic->name_len, from, to, why);
    wsq__outlist_frame(out, 1, ct->scratch.data, ct->scratch.len, s->id, 0, false);
    return true;
}

/* Raises the cached heads of t to what a read saw. The read's snapshot can be newer than the last
 * commit notice: a purge committed meanwhile must name its gap as a purge. */
static void topic_seen(ct_topic_t *t, const wsq_read_info_t *info)
{
    if (info->first_seq > t->first_seq)
        t->first_seq = info->first_seq;
    if (info->next_seq > t->next_seq)
        t->next_seq = info->next_seq;
    if (info->purged_upto > t->purged_upto)
        t->purged_upto = info->purged_upto;
}

static bool gap(wsq_consumers_t *ct, ct_sub_t *s, uint64_t from, uint64_t to, wsq_outlist_t *out);

/* ------------------------------------------------------------------------------------------- */
/* dead letters */

/* The topic's dead-letter settings (retention rules), looked up again after a reload. */
static const wsq_dead_letter_t *topic_dead(wsq_consumers_t *ct, ct_topic_t *t)
{
    const wsq_config_t *cfg = ct->srv->cfg;
    if (t->dead_cfg != cfg) {
        t->dead = wsq_config_dead_letter(cfg, t->name, t->name_len);
        t->dead_cfg = cfg; /* (configs stay alive until exit: see server.c reload) */
    }
    return t->dead;
}

#define DEAD_RETRY_MS 5000 /* a dead letter the writer refused is tried again after this */

static bool dead_pending(const ct_consumer_t *c, uint64_t seq)
{
    for (uint32_t i = 0; i < c->ndead; i++)
        if (c->dead[i] == seq)
            return true;
    return false;
}

static void dead_done(wsq_wreq_t *req, void *arg)
{
    wsq_consumers_t *ct = arg;
    ct_cmd_t *c = wsq__ct_cmd(CT_DEAD, req->user[0], req->user[1]);
    if (c == NULL) {
        wsq_wreq_free(&req);
        return;
    }
    c->req = req;
    wsq__ct_push(ct, c);
}

/* Message m of s's consumer was delivered `count` times without an ack (reason max_deliver), or
 * the client gave it up (nack with term, reason term): its copy goes to the
 * topic's dead-letter topic (<topic>.dlq) with headers that say where it came from, and the
 * consumer's acknowledgement goes with it, in one transaction (WSQ_WOP_DEAD_LETTER). Until the
 * writer is done, the seq is neither delivered nor left out of a PUT's acknowledgements. */
static void dead_letter(wsq_consumers_t *ct, ct_sub_t *s, const wsq_msg_view_t *m, uint32_t count,
                        const char *reason)
{
    ct_consumer_t *c = s->cons;
    ct_topic_t *t = s->topic;
    char dname[WSQ_TOPIC_MAX + 1];
    bool named =
        wsq_config_dead_topic(topic_dead(ct, t), t->name, t->name_len, dname, sizeof(dname));
    wsq_buf_t hb;
    wsq_buf_init(&hb);
    size_t off = 0;
    wsq_header_t h;
    while (wsq_headers_next(m->headers, m->headers_len, &off, &h)) /* the message's own first */
        if (h.key_len < 9 || memcmp(h.key, "wsq-dead-", 9) != 0)
            (void)wsq_headers_add(&hb, h.key, h.key_len, h.value, h.value_len);
    char num[2][24];
    snprintf(num[0], sizeof(num[0]), "%llu", (unsigned long long)m->seq);
    snprintf(num[1], sizeof(num[1]), "%u", count);
    wsq_err err = WSQ_OK;
    const char *kv[][2] = {{"wsq-dead-topic", t->name},
                           {"wsq-dead-seq", num[0]},
                           {"wsq-dead-consumer", c->name},
                           {"wsq-dead-deliveries", num[1]},
                           {"wsq-dead-reason", reason}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]) && err == WSQ_OK; i++)
        err = wsq_headers_add(&hb, kv[i][0], strlen(kv[i][0]), kv[i][1], strlen(kv[i][1]));
    wsq_wreq_t *r = NULL;
    if (err == WSQ_OK && named)
        r = wsq_wreq_dead_letter(dname, strlen(dname), t->id, c->name, c->name_len, m->data, m->len,
                                 m->flags & WSQ_MSG_BINARY, hb.data, hb.len);
    wsq_buf_fini(&hb);
    if (r)
        err = wsq_cstate_copy(&r->state, &c->cs);
    for (uint32_t i = 0; r && i < c->ndead && err == WSQ_OK; i++)
        err = wsq_cstate_ack(&r->state, c->dead[i], NULL);
    if (r && err == WSQ_OK)
        err = wsq_cstate_ack(&r->state, m->seq, NULL);
    if (r && err == WSQ_OK && c->ndead == c->capdead) {
        uint32_t cap = c->capdead ? c->capdead * 2 : 4;
        uint64_t *d = realloc(c->dead, cap * sizeof(*d));
        if (d == NULL)
            err = WSQ_ERR_NOMEM;
        else
            c->dead = d, c->capdead = cap;
    }
    if (r && err == WSQ_OK) {
        r->user[0] = s->sid;
        r->user[1] = s->id;
        r->purge_seq = m->seq; /* (unused by the op: carries the seq back to on_dead) */
        r->done = dead_done;
        r->arg = ct;
        err = wsq_store_submit(ct->store, r);
    }
    if (r == NULL || err != WSQ_OK) {
        wsq_wreq_free(&r);
        wsq_err_log("dead_letter",
                    "topic=%s consumer=%s seq=%llu msg=\"could not queue its dead letter (%s); "
                    "tried again in %d ms\"",
                    t->name, c->name, (unsigned long long)m->seq,
                    !named ? "the dead-letter topic name is too long" : wsq_strerror(err),
                    DEAD_RETRY_MS);
        seqvec_del(&s->infl, m->seq);
        seqvec_put(&s->cur->redo, m->seq, ct->now_ms + DEAD_RETRY_MS);
        return;
    }
    c->dead[c->ndead++] = m->seq;
    seqvec_del(&s->infl, m->seq);
    seqvec_del(&s->cur->redo, m->seq);
}

/* The writer finished a dead letter: the consumer's memory catches up with the store, the
 * subscription hears `dead` (wsq.v1), or, refused, the message is tried again later. */
static void on_dead(wsq_consumers_t *ct, ct_cmd_t *cmd)
{
    wsq_wreq_t *r = cmd->req;
    uint64_t seq = r->purge_seq;
    ct_consumer_t *c = cons_find(ct, r->src_topic_id, r->consumer, r->consumer_len);
    if (c) {
        for (uint32_t i = 0; i < c->ndead; i++)
            if (c->dead[i] == seq) {
                c->dead[i] = c->dead[--c->ndead];
                break;
            }
    }
    ct_sub_t *s = sub_find(ct, cmd->sub_id);
    if (s && s->cons != c)
        s = NULL;
    if (r->err != WSQ_OK) {
        wsq_warn_log("dead_letter",
                     "topic_id=%u consumer=%s seq=%llu error=%s msg=\"the dead-letter topic %s "
                     "refused it; tried again in %d ms\"",
                     r->src_topic_id, r->consumer, (unsigned long long)seq, wsq_errname(r->err),
                     r->topic, DEAD_RETRY_MS);
        if (s && s->state == SUB_LIVE)
            seqvec_put(&s->cur->redo, seq, ct->now_ms + DEAD_RETRY_MS);
        return;
    }
    if (c)
        (void)wsq_cstate_ack(&c->cs, seq, NULL); /* the store has it already */
    atomic_fetch_add_explicit(&ct->srv->metrics.dead_lettered, 1, memory_order_relaxed);
    wsq_info_log("dead_letter", "consumer=%s seq=%llu dead_topic=%s dead_seq=%llu", r->consumer,
                 (unsigned long long)seq, r->topic, (unsigned long long)r->seq);
    if (s && s->state == SUB_LIVE && !s->p->raw && !s->pull) {
        ct->scratch.len = 0;
        if (wsq_proto_enc_dead(&ct->scratch, s->topic->name, s->topic->name_len, seq, r->topic,
                               r->topic_len, r->seq) == WSQ_OK)
            send_control(ct, s->sid, item_id(s), ST_DELIVER);
    }
    if (s)
        ready_add(ct, s); /* its window slot is free */
}

static int deliver_one(void *arg, const wsq_msg_view_t *m)
{
    rd_t *rd = arg;
    ct_sub_t *s = rd->s;
    wsq_consumers_t *ct = rd->ct;
    if (m->seq > rd->stop_after)
        return 1; /* the resume scan ends here; newer messages are the new-message pass's */
    rd->last = m->seq;
    if (rd->only_seq && m->seq != rd->only_seq)
        return 1;
    if (rd->fill_cache)
        tc_put(ct, s->topic, m);
    if (!rd->only_seq && m->seq > rd->expect) {
        /* the read stepped over removed messages: say so before anything after them */
        if (rd->info)
            topic_seen(s->topic, rd->info);
        if (!gap(ct, s, rd->expect, m->seq - 1, rd->out)) {
            rd->ended = true;
            return 1;
        }
    }
    rd->expect = m->seq + 1;
    if (s->min_ts) {
        /* from: a time ahead of the log: skip what was stamped before it (ts never decreases) */
        if (m->ts_ms < s->min_ts) {
            if (s->cons) {
                bool changed;
                wsq_cstate_ack_upto(&s->cons->cs, m->seq, &changed);
                s->cons->dirty |= changed;
            }
            return 0;
        }
        s->min_ts = 0;
    }
    uint32_t count = 1;
    if (s->cons) {
        ct_consumer_t *c = s->cons;
        if (rd->redeliver) {
            if (wsq_cstate_is_acked(&c->cs, m->seq))
                return rd->only_seq ? 1 : 0;
            int64_t due = wsq_cstate_due(&c->cs, m->seq);
            if (due > ct->now_ms && !rd->only_seq) {
                seqvec_put(&s->cur->redo, m->seq, due); /* nacked with a delay: later */
                return 0;
            }
            if (!rd->only_seq)
                seqvec_del(&s->cur->redo, m->seq); /* (its delay ran out: the scan takes it) */
        }
        if (dead_pending(c, m->seq))
            return rd->only_seq ? 1 : 0; /* its dead letter is on its way */
        uint32_t max = topic_dead(ct, s->topic)->max_deliver;
        if (max && wsq_cstate_count(&c->cs, m->seq) >= max) {
            /* a poison message: delivered max_deliver times without an ack. It goes to the
             * dead-letter topic, acknowledged in the same transaction; never skipped. */
            dead_letter(ct, s, m, wsq_cstate_count(&c->cs, m->seq), "max_deliver");
            return rd->only_seq ? 1 : 0;
        }
        if (!s->pull && !unw_push(s, m->seq)) { /* (a lease is given when answered) */
            rd->err = WSQ_ERR_NOMEM;
            return 1;
        }
        if (wsq_cstate_delivered(&c->cs, m->seq, &count) != WSQ_OK) {
            if (!s->pull)
                s->unw_len--;
            rd->err = WSQ_ERR_NOMEM;
            return 1;
        }
        c->dirty = true;
        if (durable_wsq(s))
            seqvec_put(&s->infl, m->seq, ct->now_ms);
    }
    if (count > 1)
        atomic_fetch_add_explicit(&ct->srv->metrics.redelivered, 1, memory_order_relaxed);
    bool binary = (m->flags & WSQ_MSG_BINARY) != 0;
    if (s->pull) { /* a lease: into the waiting fetch's answer */
        pull_t *pl = s->pull;
        size_t before = pl->body.len;
        wsq_err err = pl->n ? wsq_buf_append(&pl->body, ",", 1) : WSQ_OK;
        if (err == WSQ_OK)
            err = wsq_proto_enc_leased(&pl->body, s->topic->name, s->topic->name_len, m->seq,
                                       m->ts_ms, m->data, m->len, binary, count, m->headers,
                                       m->headers_len);
        if (err != WSQ_OK) {
            pl->body.len = before;
            seqvec_del(&s->infl, m->seq);
            wsq_cstate_undeliver(&s->cons->cs, m->seq);
            rd->err = err;
            return 1;
        }
        pl->n++;
        rd->sent++;
        if (--rd->budget == 0 || !has_credit(s))
            return 1;
        return rd->only_seq ? 1 : 0;
    }
    size_t before = rd->out->bytes;
    wsq_err err;
    if (s->p->raw) {
        err = wsq__outlist_frame(rd->out, binary ? 2 : 1, m->data, m->len, s->id, m->seq, true);
    } else {
        tc_ent_t *e = count == 1 ? tc_get(s->topic, m->seq) : NULL;
        if (e && e->json == NULL) { /* the first subscriber to need it encodes it for all */
            ct->scratch.len = 0;
            if (wsq_proto_enc_msg(&ct->scratch, s->topic->name, s->topic->name_len, m->seq,
                                  m->ts_ms, m->data, m->len, binary, 1, m->headers,
                                  m->headers_len) == WSQ_OK &&
                (e->json = malloc(ct->scratch.len)) != NULL) {
                memcpy(e->json, ct->scratch.data, ct->scratch.len);
                e->json_len = (uint32_t)ct->scratch.len;
                s->topic->tc_bytes += e->json_len;
                ct->tc_bytes += e->json_len;
            }
        }
        if (e && e->json) {
            err = wsq__outlist_frame(rd->out, 1, e->json, e->json_len, s->id, m->seq, true);
        } else {
            ct->scratch.len = 0;
            err = wsq_proto_enc_msg(&ct->scratch, s->topic->name, s->topic->name_len, m->seq,
                                    m->ts_ms, m->data, m->len, binary, count, m->headers,
                                    m->headers_len);
            if (err == WSQ_OK)
                err = wsq__outlist_frame(rd->out, 1, ct->scratch.data, ct->scratch.len, s->id,
                                         m->seq, true);
        }
    }
    if (err != WSQ_OK) {
        if (s->cons) { /* not handed over: not delivered */
            s->unw_len--;
            wsq_cstate_undeliver(&s->cons->cs, m->seq);
        }
        rd->err = err;
        return 1;
    }
    rd->bytes += rd->out->bytes - before;
    rd->sent++;
    s->queued++;
    s->queued_bytes += rd->out->bytes - before;
    if (s->wild)
        s->wild->queued_bytes += rd->out->bytes - before;
    if (--rd->budget == 0 || rd->bytes >= READ_BYTES || !has_credit(s))
        return 1;
    return rd->only_seq ? 1 : 0;
}

/* Reports the removed range [from, to] once: a gap frame for wsq.v1, a close for raw mode.
 * Returns false when the subscription ended. */
static bool gap(wsq_consumers_t *ct, ct_sub_t *s, uint64_t from, uint64_t to, wsq_outlist_t *out)
{
    ct_topic_t *t = s->topic;
    wsq_gap_reason_t why = t->purged_upto >= from ? WSQ_GAP_PURGE : WSQ_GAP_RETENTION;
    atomic_fetch_add_explicit(&ct->srv->metrics.gaps, 1, memory_order_relaxed);
    if (s->cons) {
        bool changed;
        wsq_cstate_ack_upto(&s->cons->cs, to, &changed);
        if (s->cons->cs.delivered_upto < to)
            s->cons->cs.delivered_upto = to;
        s->cons->dirty = true;
        seqvec_del_upto(&s->infl, to);
        seqvec_del_upto(&s->cur->redo, to);
        for (ct_sub_t *m = s->cons->members; m; m = m->mnext) /* shared: every member's */
            seqvec_del_upto(&m->infl, to);
    }
    return gap_out(ct, s, from, to, why, out);
}

/* A stored message that fails its checksum (the read stopped before it): never delivered as
 * data. wsq.v1 gets a gap naming that one seq with reason "corrupt", raw mode the gap close;
 * a durable consumer counts it acknowledged, and only it (the messages around it keep their
 * state). Returns false when the subscription ended. */
static bool corrupt(wsq_consumers_t *ct, ct_sub_t *s, uint64_t seq, wsq_outlist_t *out)
{
    ct_topic_t *t = s->topic;
    atomic_fetch_add_explicit(&ct->srv->metrics.corrupt, 1, memory_order_relaxed);
    wsq_err_log("corrupt",
                "topic=%s seq=%llu sid=%llu msg=\"the stored message does not match its "
                "checksum; it is skipped (gap reason corrupt). Run wsqctl check\"",
                t->name, (unsigned long long)seq, (unsigned long long)s->sid);
    seqvec_del(&s->infl, seq);
    seqvec_del(&s->cur->redo, seq);
    if (s->cons) {
        wsq_cstate_t *cs = &s->cons->cs;
        uint32_t count;
        if (seq > cs->delivered_upto) /* a first delivery that never was: record, then ack */
            (void)wsq_cstate_delivered(cs, seq, &count);
        (void)wsq_cstate_ack(cs, seq, NULL);
        s->cons->dirty = true;
    }
    return gap_out(ct, s, seq, seq, WSQ_GAP_CORRUPT, out);
}

/* Shared consumers: the part of the work waiting now that s may take in one pass, in proportion
 * to its free window among the members' (cr: its credit; budget: the pass's cap). A member that
 * still has credit after its pass goes round again, so work is never left waiting for it. */
static uint32_t fair_share(const ct_sub_t *s, uint32_t cr, uint32_t budget)
{
    const cursor_t *cur = s->cur;
    uint64_t total = 0;
    for (const ct_sub_t *m = s->cons->members; m; m = m->mnext)
        if (m->state == SUB_LIVE)
            total += credit(m);
    uint64_t work = cur->redo.n;
    if (cur->scan_next <= cur->scan_end)
        work += cur->scan_end - cur->scan_next + 1;
    if (s->topic->next_seq > cur->next_seq)
        work += s->topic->next_seq - cur->next_seq;
    if (total <= cr || work >= total)
        return budget; /* the only free member, or work for every free slot */
    uint64_t share = (work * cr + total - 1) / total;
    return share == 0 ? 1 : share < budget ? (uint32_t)share : budget;
}

/* Shared consumers: another live member of s's consumer has a free slot. */
static bool other_member_free(const ct_sub_t *s)
{
    for (const ct_sub_t *m = s->cons->members; m; m = m->mnext)
        if (m != s && m->state == SUB_LIVE && has_credit(m))
            return true;
    return false;
}

/* One delivery pass for s: redeliveries first (nack/ack_wait due, then the resume scan), then new
 * messages, within credit and the per-pass budget. */
static uint32_t deliver_sub(wsq_consumers_t *ct, ct_sub_t *s, uint32_t cap)
{
    wsq_outlist_t out;
    wsq__outlist_init(&out);
    rd_t rd = {.ct = ct, .s = s, .out = &out, .budget = cap, .stop_after = UINT64_MAX};
    uint32_t cr = credit(s);
    if (cr < rd.budget)
        rd.budget = cr;
    ct_topic_t *t = s->topic;
    bool live = true;
    bool shared = s->cons && s->cons->shared;

    /* 1. due redeliveries, by seq */
    for (uint32_t i = 0; i < s->cur->redo.n && rd.budget && live && has_credit(s);) {
        if (s->cur->redo.v[i].t_ms > ct->now_ms ||
            (shared && s->cur->redo.v[i].from_sub == s->id && other_member_free(s))) {
            i++; /* not due yet, or it just expired here and another member can take it */
            continue;
        }
        uint64_t seq = s->cur->redo.v[i].seq;
        seqvec_del(&s->cur->redo, seq);
        if (seq < t->first_seq) {
            live = gap(ct, s, seq, t->first_seq - 1, &out);
            continue;
        }
        rd.redeliver = true;
        rd.only_seq = seq;
        wsq_read_info_t info;
        wsq_err rerr =
            wsq_store_read(ct->store, t->id, seq, 1, READ_BYTES, deliver_one, &rd, &info);
        if (rerr != WSQ_OK || rd.err != WSQ_OK) {
            seqvec_put(&s->cur->redo, seq, ct->now_ms); /* not delivered: still owed */
            break;
        }
        topic_seen(t, &info);
        if (info.first_seq > seq) /* removed since the cached heads were last raised */
            live = gap(ct, s, seq, info.first_seq - 1, &out);
        else if (info.corrupt_seq == seq)
            live = corrupt(ct, s, seq, &out);
    }
    /* 2. the resume scan: unacked messages delivered to an earlier session */
    while (live && rd.budget && s->cur->scan_next <= s->cur->scan_end && has_credit(s) &&
           rd.err == WSQ_OK) {
        rd.redeliver = true;
        rd.only_seq = 0;
        rd.last = 0;
        rd.expect = s->cur->scan_next;
        rd.stop_after = s->cur->scan_end;
        uint64_t span = s->cur->scan_end - s->cur->scan_next + 1;
        wsq_read_info_t info;
        rd.info = &info;
        wsq_err rerr = wsq_store_read(ct->store, t->id, s->cur->scan_next,
                                      span < READ_MSGS ? (uint32_t)span : READ_MSGS, READ_BYTES,
                                      deliver_one, &rd, &info);
        rd.stop_after = UINT64_MAX;
        rd.info = NULL;
        if (rerr != WSQ_OK)
            break;
        topic_seen(t, &info);
        if (rd.ended) {
            live = false;
            break;
        }
        if (info.corrupt_seq && info.corrupt_seq <= s->cur->scan_end &&
            (rd.last ? rd.last + 1 : s->cur->scan_next) >= info.corrupt_seq) {
            /* the read stopped before it: what it passed is handled; an acked one needs no
             * word, an unacked one its gap */
            uint64_t c = info.corrupt_seq;
            if (s->cons == NULL || !wsq_cstate_is_acked(&s->cons->cs, c))
                live = corrupt(ct, s, c, &out);
            s->cur->scan_next = c + 1;
            continue;
        }
        if (rd.last == 0) {
            if (info.gap && info.first_seq > s->cur->scan_next) {
                /* removal is always a contiguous head range: report all of it at once, also
                 * the part beyond the scan, and continue after it */
                live = gap(ct, s, s->cur->scan_next, info.first_seq - 1, &out);
                if (s->cur->next_seq < info.first_seq)
                    s->cur->next_seq = info.first_seq;
            }
            s->cur->scan_next = s->cur->scan_end + 1; /* nothing left */
            break;
        }
        s->cur->scan_next = rd.last + 1;
        if (rd.last >= s->cur->scan_end)
            break;
    }
    if (s->cur->scan_next > s->cur->scan_end && s->cur->next_seq <= s->cur->scan_end)
        s->cur->next_seq = s->cur->scan_end + 1;
    /* 3. new messages: from the tail cache while it has them, else from LMDB */
    while (live && rd.budget && s->cur->next_seq < t->next_seq && has_credit(s) &&
           rd.err == WSQ_OK) {
        rd.redeliver = false;
        rd.only_seq = 0;
        rd.last = 0;
        rd.expect = s->cur->next_seq;
        tc_ent_t *e = s->cur->next_seq >= t->first_seq ? tc_get(t, s->cur->next_seq) : NULL;
        if (e) {
            wsq_msg_view_t v = {.seq = e->seq,
                                .ts_ms = e->ts,
                                .flags = e->flags,
                                .len = e->len,
                                .data = e->payload + e->hlen,
                                .headers = e->hlen ? e->payload : NULL,
                                .headers_len = e->hlen};
            int stop = deliver_one(&rd, &v);
            if (rd.ended) {
                live = false;
                break;
            }
            s->cur->next_seq = e->seq + 1;
            if (stop)
                break;
            continue;
        }
        rd.fill_cache = true;
        wsq_read_info_t info;
        rd.info = &info;
        wsq_err err = wsq_store_read(ct->store, t->id, s->cur->next_seq, rd.budget, READ_BYTES,
                                     deliver_one, &rd, &info);
        rd.fill_cache = false;
        rd.info = NULL;
        if (err != WSQ_OK)
            break;
        topic_seen(t, &info);
        if (rd.ended) {
            live = false;
            break;
        }
        if (rd.last == 0 && info.gap && info.first_seq > s->cur->next_seq) {
            /* everything asked for is gone */
            live = gap(ct, s, s->cur->next_seq, info.first_seq - 1, &out);
            s->cur->next_seq = info.first_seq;
            continue;
        }
        if (rd.last)
            s->cur->next_seq = rd.last + 1;
        if (info.corrupt_seq && info.corrupt_seq == s->cur->next_seq) {
            live = corrupt(ct, s, s->cur->next_seq, &out); /* the read stopped before it */
            s->cur->next_seq++;
            continue;
        }
        if (rd.last == 0 || rd.bytes >= READ_BYTES)
            break;
    }
    if (out.bytes || out.head || out.cur) {
        st_item_t *it = wsq__st_item(ST_DELIVER, s->sid, item_id(s));
        if (it) {
            it->chunks = wsq__outlist_take(&out);
            out_push(ct, it);
        } else {
            wsq_out_t *h = wsq__outlist_take(&out);
            wsq__out_free_list(&h);
        }
    }
    if (!live) {
        if (s->cons) {
            s->cons->dirty = true;
            cons_flush(ct, s->cons);
        }
    }
    if (s->pull && (s->pull->n || s->pull->gaps.len))
        pull_answer_head(ct, s->pull); /* what there is now: a fetch waits for the first only */
    return rd.sent;
}

#define VT_SCALE (1u << 20) /* a member's virtual time advances VT_SCALE / window per message */

/* A shared consumer's members compete for one cursor: each round gives the member with the
 * least virtual time (and a free slot) its share of the work waiting (fair_share), and advances
 * its virtual time in inverse proportion to its window. Over time each member gets work in
 * proportion to its window; a trickle goes round the members instead of to whichever comes
 * first; a burst fills every free slot. */
/* Is more work waiting for shared consumer c than its members have free slots? */
static bool shared_backlog(const ct_consumer_t *c)
{
    uint64_t total = 0;
    for (const ct_sub_t *m = c->members; m; m = m->mnext)
        if (m->state == SUB_LIVE)
            total += credit(m);
    const cursor_t *cur = &c->cur;
    uint64_t work = cur->redo.n;
    if (cur->scan_next <= cur->scan_end)
        work += cur->scan_end - cur->scan_next + 1;
    const ct_topic_t *t = c->members ? c->members->topic : NULL;
    if (t && t->next_seq > cur->next_seq)
        work += t->next_seq - cur->next_seq;
    return work > total;
}

/* May member m take work now? With a backlog, a member takes it in batches of an eighth of its
 * window at least: acks come back one by one, and a read and a hand-over per freed slot would
 * cost more than the messages. Without one, any free slot takes what comes. */
static bool member_eligible(const ct_sub_t *m, bool backlog)
{
    return m->state == SUB_LIVE && has_credit(m) &&
           (!backlog || m->pull || credit(m) >= (m->window + 7) / 8);
}

static void deliver_shared(wsq_consumers_t *ct, ct_consumer_t *c)
{
    for (int round = 0; round < 64; round++) {
        bool backlog = shared_backlog(c);
        ct_sub_t *best = NULL;
        for (ct_sub_t *m = c->members; m; m = m->mnext)
            if (member_eligible(m, backlog) && (best == NULL || m->vtime < best->vtime))
                best = m;
        if (best == NULL || !has_work(ct, best))
            return;
        uint32_t cap = best->mnext || c->members != best ? fair_share(best, credit(best), READ_MSGS)
                                                         : READ_MSGS;
        uint32_t sent = deliver_sub(ct, best, cap);
        if (sent == 0 && best->state == SUB_LIVE) {
            /* nothing went out (all of it skipped or owed elsewhere): give the others a turn,
             * and try again on the next pass */
            best->vtime += VT_SCALE;
            return;
        }
        uint32_t w = best->window > VT_SCALE ? VT_SCALE : best->window;
        best->vtime += (uint64_t)sent * (VT_SCALE / w);
        c->vclock = best->vtime;
    }
}

static void deliver(wsq_consumers_t *ct, ct_sub_t *s)
{
    if (s->cons && s->cons->shared)
        deliver_shared(ct, s->cons);
    else
        deliver_sub(ct, s, READ_MSGS);
}

/* ------------------------------------------------------------------------------------------- */
/* timers */

#define KID_IDLE_MS 2000

/* An ephemeral pattern's kid with nothing queued that has delivered everything its topic's
 * commit notices announced ends after KID_IDLE_MS quiet: the topic's next commit makes a new one
 * that starts exactly where this one stopped (the first seq that commit appended), so what a
 * pattern holds is bounded by the topics active lately, not by all it matches. true: ended. */
static bool kid_reap(wsq_consumers_t *ct, ct_sub_t *s)
{
    const ct_topic_t *t = s->topic;
    if (s->wild == NULL || s->cons != NULL)
        return false;
    bool idle = t != NULL && s->queued == 0 && s->cur->next_seq == t->notified_next &&
                t->next_seq == t->notified_next;
    return end_when_idle(ct, s, idle, &s->idle_since, KID_IDLE_MS);
}

#define PARKED_MS 1000 /* a parked consumer stays at least this long */

/* Forgets parked consumers that no pending CONSUMER_OPEN was submitted before (min_open: the
 * oldest pending open's sequence), once their state is written. */
static void cons_unpark_old(wsq_consumers_t *ct, uint64_t min_open)
{
    for (uint32_t b = 0; b < SUB_BUCKETS; b++)
        for (ct_consumer_t *c = ct->consumers[b], *nx; c; c = nx) {
            nx = c->hnext;
            if (c->parked && !c->dirty && c->members == NULL && c->parked_seq < min_open &&
                ct->now_ms - c->parked_ms >= PARKED_MS)
                cons_forget(ct, c);
        }
}

static void timers(wsq_consumers_t *ct)
{
    int64_t ack_wait = ct->srv->cfg->limits.ack_wait_ms;
    uint64_t min_open = UINT64_MAX;
    for (uint32_t b = 0; b < SUB_BUCKETS; b++) {
        for (ct_sub_t *s = ct->subs[b], *nx; s; s = nx) {
            nx = s->hnext;
            if (s->state == SUB_OPENING && s->open_seq && s->open_seq < min_open)
                min_open = s->open_seq;
            if (s->state != SUB_LIVE || kid_reap(ct, s))
                continue;
            if (ack_wait > 0 && durable_wsq(s)) {
                /* unacked for too long: redeliver (the slot stays taken until then) */
                for (uint32_t i = 0; i < s->infl.n;) {
                    if (s->infl.v[i].t_ms + ack_wait <= ct->now_ms) {
                        uint64_t seq = s->infl.v[i].seq;
                        seqvec_del(&s->infl, seq);
                        seqvec_put(&s->cur->redo, seq, ct->now_ms);
                        s->cur->redo.v[seqvec_lb(&s->cur->redo, seq)].from_sub = s->id;
                    } else {
                        i++;
                    }
                }
            }
            if (has_credit(s) && has_work(ct, s))
                ready_add(ct, s);
        }
    }
    for (ct_sub_t *s = ct->pulls, *nx; s; s = nx) {
        nx = s->pull->next;
        if (s->state == SUB_LIVE)
            (void)pull_poll(ct, s);
    }
    cons_unpark_old(ct, min_open);
}

/* An operator deleted a consumer (the writer deletes it; this drops the in-memory copy, which
 * must never be written back, and ends the session attached to it). */
static void on_consumer_delete(wsq_consumers_t *ct, ct_cmd_t *cmd)
{
    ct_sub_params_t *p = cmd->sub;
    wsq_topic_info_t ti;
    if (p == NULL || wsq_store_topic_lookup(ct->store, p->topic, p->topic_len, &ti) != WSQ_OK)
        return;
    ct_consumer_t *c = cons_find(ct, ti.id, p->consumer, p->consumer_len);
    if (c == NULL)
        return;
    ct_sub_t *members = c->members;
    c->dirty = false;
    cons_forget(ct, c); /* (every member lets go of it first) */
    while (members) {
        ct_sub_t *s = members;
        members = s->mnext;
        if (s->pull)
            pull_fail(ct, s->pull, WSQ_ERR_NOTFOUND, "consumer deleted");
        send_close(ct, s->sid, WSQ_CLOSE_CONSUMER_GONE, "consumer deleted");
        sub_state(s, SUB_DEAD);
        sub_end(ct, s);
    }
}

/* limits.consumer_ttl: deletes consumers nobody attached to for that long. Pages through the
 * consumer table in short read transactions; attached consumers are never expired. */
static void expire_consumers(wsq_consumers_t *ct)
{
    int64_t ttl = ct->srv->cfg->limits.consumer_ttl_ms;
    if (ttl <= 0)
        return;
    wsq_consumer_info_t page[256];
    uint32_t after_topic = 0;
    char after[WSQ_CONSUMER_NAME_MAX + 1];
    bool first = true;
    for (;;) {
        unsigned n = 0;
        if (wsq_store_consumer_list(ct->store, 0, after_topic, first ? NULL : after, 256, page,
                                    &n) != WSQ_OK)
            return;
        for (unsigned i = 0; i < n; i++) {
            wsq_consumer_info_t *ci = &page[i];
            if (ci->last_seen_ms >= ct->now_ms - ttl)
                continue;
            ct_consumer_t *c = cons_find(ct, ci->topic_id, ci->name, strlen(ci->name));
            if (c && c->members)
                continue; /* attached: alive */
            wsq_wreq_t *r =
                wsq_wreq_new(WSQ_WOP_CONSUMER_DELETE, NULL, 0, ci->name, strlen(ci->name), 0);
            if (r == NULL)
                return;
            r->topic_id = ci->topic_id;
            if (wsq_store_submit(ct->store, r) != WSQ_OK) {
                wsq_wreq_free(&r);
                return;
            }
            if (c)
                cons_forget(ct, c);
            wsq_info_log("consumer_expired", "topic_id=%u consumer=%s idle_ms=%lld", ci->topic_id,
                         ci->name, (long long)(ct->now_ms - ci->last_seen_ms));
        }
        if (n < 256)
            return;
        after_topic = page[n - 1].topic_id;
        memcpy(after, page[n - 1].name, sizeof(after));
        after[sizeof(after) - 1] = '\0';
        first = false;
    }
}

/* ------------------------------------------------------------------------------------------- */
/* topic patterns */

static bool idset_has(const ct_wild_t *w, uint32_t id)
{
    if (w->capmatch == 0)
        return false;
    for (uint32_t i = mix64(id) % w->capmatch;; i = (i + 1) % w->capmatch) {
        if (w->match[i] == id)
            return true;
        if (w->match[i] == 0)
            return false;
    }
}

static bool idset_add(ct_wild_t *w, uint32_t id)
{
    if (id == 0 || idset_has(w, id))
        return true;
    if (2 * (w->nmatch + 1) > w->capmatch) { /* at most half full */
        uint32_t cap = w->capmatch ? 2 * w->capmatch : 64;
        uint32_t *m = calloc(cap, sizeof(*m));
        if (m == NULL)
            return false;
        for (uint32_t i = 0; i < w->capmatch; i++) {
            if (w->match[i] == 0)
                continue;
            uint32_t j = mix64(w->match[i]) % cap;
            while (m[j])
                j = (j + 1) % cap;
            m[j] = w->match[i];
        }
        free(w->match);
        w->match = m;
        w->capmatch = cap;
    }
    uint32_t j = mix64(id) % w->capmatch;
    while (w->match[j])
        j = (j + 1) % w->capmatch;
    w->match[j] = id;
    w->nmatch++;
    return true;
}

/* Does w's pattern match topic name[0..len) and may its identity read it? */
static bool wild_wants(const ct_wild_t *w, const char *name, size_t len)
{
    if (!wsq_topic_match(w->p->topic, name, len))
        return false;
    for (size_t off = 0; off < w->p->rights_len; off += strlen(w->p->rights + off) + 1)
        if (wsq_topic_match(w->p->rights + off, name, len))
            return true;
    return false;
}

static ct_wild_t *wild_find(wsq_consumers_t *ct, uint64_t id)
{
    for (ct_wild_t *w = ct->wilds; w; w = w->next)
        if (w->id == id)
            return w;
    return NULL;
}

/* A kid of w on topic `ti`. Durable: its consumer is opened by the writer (a new one at the
 * pattern's from, or at the topic's first message with earliest). Ephemeral: live at once,
 * delivering from seq start. false when it could not be (out of memory: logged). */
static bool kid_new(wsq_consumers_t *ct, ct_wild_t *w, const wsq_topic_info_t *ti, bool earliest,
                    uint64_t start)
{
    size_t len = strlen(ti->name);
    ct_sub_t *s = sub_alloc(ct, w->sid, (1ull << 62) | ++ct->next_kid_id, w->p, true);
    if (s != NULL) {
        s->wild = w; /* (from here on sub_end leaves the pattern's parameters alone) */
        if ((s->kid_name = malloc(len + 1)) == NULL) {
            sub_state(s, SUB_DEAD);
            sub_end(ct, s);
            s = NULL;
        }
    }
    if (s == NULL) {
        wsq_err_log("pattern",
                    "sid=%llu pattern=%s topic=%s msg=\"out of memory: the topic is left out\"",
                    (unsigned long long)w->sid, w->p->topic, ti->name);
        return false;
    }
    memcpy(s->kid_name, ti->name, len + 1);
    s->kid_len = len;
    s->kid_earliest = earliest;
    uint32_t b = name_bucket(ti->name, len);
    s->knext = w->kids[b];
    w->kids[b] = s;
    w->nkids++;
    atomic_fetch_add_explicit(&ct->srv->metrics.pattern_topics, 1, memory_order_relaxed);
    if (w->p->consumer_len) { /* the floor of a new consumer, as sub_new's */
        const ct_sub_params_t *p = w->p;
        uint64_t floor = ti->next_seq - 1;
        if (earliest || p->from == WSQ_FROM_EARLIEST || p->from == WSQ_FROM_TIME)
            floor = 0;
        else if (p->from == WSQ_FROM_SEQ && p->from_seq)
            floor = p->from_seq - 1;
        return sub_open(ct, s, ti->name, len, floor);
    }
    ct_topic_t *t = topic_get(ct, ti->id);
    if (t == NULL) {
        sub_state(s, SUB_DEAD);
        sub_end(ct, s);
        return false;
    }
    s->topic = t;
    s->tnext = t->subs;
    t->subs = s;
    s->cur->next_seq = start < t->first_seq ? t->first_seq : start;
    s->cur->scan_next = 1;
    s->cur->scan_end = 0;
    sub_state(s, SUB_LIVE);
    ready_add(ct, s);
    return true;
}

/* Where an ephemeral pattern starts on an existing topic (0: nothing there for it yet). */
static uint64_t wild_start(wsq_consumers_t *ct, const ct_wild_t *w, const wsq_topic_info_t *ti)
{
    const ct_sub_params_t *p = w->p;
    if (ti->first_seq >= ti->next_seq)
        return 0; /* empty: its first message comes with a commit */
    uint64_t start;
    switch (p->from) {
    case WSQ_FROM_EARLIEST:
        return ti->first_seq;
    case WSQ_FROM_SEQ:
        return p->from_seq < ti->next_seq ? p->from_seq : 0;
    case WSQ_FROM_TIME:
        start = ti->next_seq;
        wsq_store_seq_at_time(ct->store, ti->id, p->from_time, &start);
        return start < ti->next_seq ? start : 0;
    default:
        return 0; /* latest: from the next commit on */
    }
}

/* Finds the readable topics w matches (one pass over the topic table, in pages). Durable: does
 * a consumer of its name exist on one of them (resumed)? Then makes the kids that have
 * something to deliver now. Returns the topics matched. */
static uint32_t wild_scan(wsq_consumers_t *ct, ct_wild_t *w)
{
    enum { PAGE = 256 };
    wsq_topic_info_t *page = malloc(PAGE * sizeof(*page));
    char after[WSQ_TOPIC_MAX + 1] = "";
    uint32_t n = 0;
    bool durable = w->p->consumer_len > 0;
    for (bool more = page != NULL; more;) {
        unsigned got = 0;
        if (wsq_store_topic_list(ct->store, after[0] ? after : NULL, PAGE, page, &got) != WSQ_OK)
            break;
        for (unsigned i = 0; i < got; i++) {
            wsq_topic_info_t *ti = &page[i];
            if (!wild_wants(w, ti->name, strlen(ti->name)) || !idset_add(w, ti->id))
                continue;
            n++;
            if (durable && !w->resumed) {
                wsq_cstate_t cs;
                wsq_cstate_init(&cs);
                w->resumed = wsq_store_consumer_get(ct->store, ti->id, w->p->consumer,
                                                    w->p->consumer_len, &cs) == WSQ_OK;
                wsq_cstate_fini(&cs);
            }
        }
        more = got == PAGE;
        if (got)
            snprintf(after, sizeof(after), "%s", page[got - 1].name);
    }
    /* second pass over what matched: the kids */
    after[0] = '\0';
    for (bool more = page != NULL; more;) {
        unsigned got = 0;
        if (wsq_store_topic_list(ct->store, after[0] ? after : NULL, PAGE, page, &got) != WSQ_OK)
            break;
        for (unsigned i = 0; i < got; i++) {
            wsq_topic_info_t *ti = &page[i];
            if (!idset_has(w, ti->id) || kid_find(w, ti->name, strlen(ti->name)))
                continue;
            if (durable) /* resumed: what it did not know yet is all new to it */
                (void)kid_new(ct, w, ti, w->resumed, 0);
            else if (wild_start(ct, w, ti))
                (void)kid_new(ct, w, ti, false, wild_start(ct, w, ti));
        }
        more = got == PAGE;
        if (got)
            snprintf(after, sizeof(after), "%s", page[got - 1].name);
    }
    free(page);
    return n;
}

/* sub of a pattern: it is registered, answered (subscribed, with the topics it matched), and
 * its kids start. */
static void on_sub_pattern(wsq_consumers_t *ct, ct_cmd_t *cmd)
{
    ct_wild_t *w = calloc(1, sizeof(*w));
    ct_sub_params_t *p = cmd->sub;
    if (w == NULL) {
        sub_fail(ct, cmd->sid, cmd->sub_id, p->ref, false, WSQ_ERR_NOMEM, "out of memory");
        return;
    }
    cmd->sub = NULL;
    w->id = cmd->sub_id;
    w->sid = cmd->sid;
    w->p = p;
    w->next = ct->wilds;
    ct->wilds = w;
    int64_t t0 = wsq_now_ms();
    uint32_t n = wild_scan(ct, w); /* (kids deliver in the loop's pass: after the answer) */
    wsq_subscribed_t sd = {.topic = p->topic,
                           .topic_len = p->topic_len,
                           .consumer = p->consumer_len ? p->consumer : NULL,
                           .window = p->window,
                           .resumed = w->resumed,
                           .shared = p->shared,
                           .pattern = true,
                           .topics = n};
    ct->scratch.len = 0;
    wsq_proto_enc_subscribed(&ct->scratch, p->ref, &sd);
    send_control(ct, w->sid, w->id, ST_DELIVER);
    wsq_info_log("subscribe", "sid=%llu pattern=%s consumer=%s topics=%u kids=%u scan_ms=%lld",
                 (unsigned long long)w->sid, p->topic, p->consumer_len ? p->consumer : "-", n,
                 w->nkids, (long long)(wsq_now_ms() - t0));
}

static void wild_free(wsq_consumers_t *ct, ct_wild_t *w)
{
    for (uint32_t b = 0; b < KID_BUCKETS; b++)
        while (w->kids[b])
            sub_end(ct, w->kids[b]); /* (unlinks it) */
    for (ct_wild_t **pp = &ct->wilds; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    free(w->match);
    wsq__ct_params_free(w->p);
    free(w);
}

/* Topics created, and topics with new messages, in a commit: a pattern that matches a new topic
 * takes it (a durable one opens its consumer there at once, from the first message); an
 * ephemeral one gets a kid on a matching topic when it first has something new. */
static void wild_commit(wsq_consumers_t *ct, const wsq_commit_topic_t *ti)
{
    wsq_topic_info_t info;
    bool have = false;
    if (ti->created && !ti->deleted) {
        if (wsq_store_topic_get(ct->store, ti->id, &info) != WSQ_OK)
            return;
        have = true;
        for (ct_wild_t *w = ct->wilds; w; w = w->next)
            if (wild_wants(w, info.name, strlen(info.name)) && idset_add(w, ti->id) &&
                w->p->consumer_len && !kid_find(w, info.name, strlen(info.name)))
                (void)kid_new(ct, w, &info, true, 0);
    }
    if (ti->appended == 0 || ti->deleted)
        return;
    for (ct_wild_t *w = ct->wilds; w; w = w->next) {
        if (w->p->consumer_len || !idset_has(w, ti->id))
            continue;
        if (!have && wsq_store_topic_get(ct->store, ti->id, &info) != WSQ_OK)
            return;
        have = true;
        if (!kid_find(w, info.name, strlen(info.name)))
            (void)kid_new(ct, w, &info, false, ti->next_seq - ti->appended);
    }
}

/* A reload changed the identity's rights: topics it may no longer read are left out (their kids
 * end), topics it may now read are taken (from now on). */
static void on_reauth(wsq_consumers_t *ct, ct_cmd_t *cmd)
{
    ct_wild_t *w = wild_find(ct, cmd->sub_id);
    if (w == NULL || cmd->sub == NULL)
        return;
    free(w->p->rights);
    w->p->rights = cmd->sub->rights;
    w->p->rights_len = cmd->sub->rights_len;
    cmd->sub->rights = NULL;
    for (uint32_t b = 0; b < KID_BUCKETS; b++)
        for (ct_sub_t *k = w->kids[b], *nx; k; k = nx) {
            nx = k->knext;
            if (!wild_wants(w, k->kid_name, k->kid_len))
                sub_end(ct, k);
        }
    free(w->match);
    w->match = NULL;
    w->nmatch = w->capmatch = 0;
    wsq_from_t from = w->p->from;
    w->p->from = WSQ_FROM_LATEST; /* newly readable topics: from now on */
    (void)wild_scan(ct, w);
    w->p->from = from;
}

/* The kid an ack or nack of a pattern subscription is for (cmd->topic), or the subscription. */
static ct_sub_t *cmd_sub(wsq_consumers_t *ct, const ct_cmd_t *cmd)
{
    if (cmd->topic == NULL)
        return sub_find(ct, cmd->sub_id);
    ct_wild_t *w = wild_find(ct, cmd->sub_id);
    return w ? kid_find(w, cmd->topic, strlen(cmd->topic)) : NULL;
}

/* ------------------------------------------------------------------------------------------- */
/* HTTP pull: fetch, ack, nack */

static ct_sub_t *pull_find(wsq_consumers_t *ct, const ct_sub_params_t *p)
{
    for (ct_sub_t *s = ct->pulls; s; s = s->pull->next)
        if (s->state != SUB_DEAD && s->p->topic_len == p->topic_len &&
            memcmp(s->p->topic, p->topic, p->topic_len) == 0 &&
            s->p->consumer_len == p->consumer_len &&
            memcmp(s->p->consumer, p->consumer, p->consumer_len) == 0)
            return s;
    return NULL;
}

/* POST /fetch: the consumer's pull member (opened first when there is none) leases up to
 * cmd->count messages to session cmd->sid, waiting up to cmd->delay_ms for the first. */
static void on_fetch(wsq_consumers_t *ct, ct_cmd_t *cmd)
{
    ct_sub_params_t *p = cmd->sub;
    pull_wait_t *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        pull_reply(ct, cmd->sid, WSQ_ERR_NOMEM, "out of memory", 13);
        return;
    }
    w->sid = cmd->sid;
    w->max = cmd->count;
    w->deadline_ms = ct->now_ms + cmd->delay_ms;
    ct_sub_t *s = pull_find(ct, p);
    if (s != NULL) {
        bool shared = s->cons ? s->cons->shared : s->p->shared;
        if (shared != p->shared) {
            char msg[224];
            snprintf(msg, sizeof(msg),
                     shared ? "consumer %s is shared: fetch with shared=true"
                            : "consumer %s is exclusive: fetch without shared=true",
                     p->consumer);
            pull_reply(ct, cmd->sid, WSQ_ERR_CONFLICT, msg, strlen(msg));
            free(w);
            return;
        }
        *s->pull->tail = w;
        s->pull->tail = &w->next;
        if (s->state == SUB_LIVE) {
            if (has_credit(s) && has_work(ct, s))
                ready_add(ct, s);
            else
                (void)pull_poll(ct, s);
        }
        return;
    }
    pull_t *pl = calloc(1, sizeof(*pl));
    if (pl == NULL) {
        free(w);
        pull_reply(ct, cmd->sid, WSQ_ERR_NOMEM, "out of memory", 13);
        return;
    }
    wsq_buf_init(&pl->body);
    wsq_buf_init(&pl->gaps);
    pl->head = w;
    pl->tail = &w->next;
    p->pull = true;
    cmd->sub = NULL;
    s = sub_new(ct, 0, (1ull << 63) | ++ct->next_pull_id, p, pl);
    if (s == NULL) { /* refused: the fetch was answered */
        wsq_buf_fini(&pl->body);
        wsq_buf_fini(&pl->gaps);
        free(pl);
    }
}

/* POST /ack and /nack: seqs of a consumer, from any worker. An ack counts whoever holds the
 * message; a nack only for a message leased over HTTP (the pull member's). A consumer not in
 * memory (nobody attached: after a restart, say) takes its acks in the store; its leases are
 * gone with the broker that gave them, so a nack has nothing to hand back. */
static void on_pull_ack(wsq_consumers_t *ct, ct_cmd_t *cmd)
{
    ct_sub_params_t *p = cmd->sub;
    bool nack = cmd->kind == CT_PULL_NACK;
    wsq_topic_info_t ti;
    wsq_err err = wsq_store_topic_lookup(ct->store, p->topic, p->topic_len, &ti);
    if (err != WSQ_OK) {
        const char *m = err == WSQ_ERR_NOTFOUND ? "no such topic" : wsq_strerror(err);
        pull_reply(ct, cmd->sid, err, m, strlen(m));
        return;
    }
    ct_consumer_t *c = cons_find(ct, ti.id, p->consumer, p->consumer_len);
    uint32_t n = 0;
    if (c == NULL) {
        wsq_cstate_t cs;
        wsq_cstate_init(&cs);
        err = wsq_store_consumer_get(ct->store, ti.id, p->consumer, p->consumer_len, &cs);
        for (uint32_t i = 0; err == WSQ_OK && !nack && i < cmd->n_seqs; i++) {
            uint64_t seq = cmd->seqs[i];
            if (seq == 0 || seq > cs.delivered_upto || wsq_cstate_is_acked(&cs, seq))
                continue;
            wsq_wreq_t *r =
                wsq_wreq_new(WSQ_WOP_CONSUMER_ACK, NULL, 0, p->consumer, p->consumer_len, 0);
            if (r == NULL)
                break;
            r->topic_id = ti.id;
            r->seq = seq;
            if (wsq_store_submit(ct->store, r) != WSQ_OK) {
                wsq_wreq_free(&r);
                break;
            }
            (void)wsq_cstate_ack(&cs, seq, NULL); /* (a seq named twice counts once) */
            n++;
        }
        wsq_cstate_fini(&cs);
        if (err != WSQ_OK) {
            const char *m = err == WSQ_ERR_NOTFOUND ? "no such consumer" : wsq_strerror(err);
            pull_reply(ct, cmd->sid, err, m, strlen(m));
            return;
        }
    } else if (!nack) {
        for (uint32_t i = 0; i < cmd->n_seqs; i++)
            n += ack_seq(ct, c, NULL, cmd->seqs[i]);
        for (ct_sub_t *m = c->members; m; m = m->mnext)
            if (m->cur->scan_next <= c->cs.ack_floor)
                m->cur->scan_next = c->cs.ack_floor + 1;
    } else {
        ct_sub_t *pm = c->members;
        while (pm && pm->pull == NULL)
            pm = pm->mnext;
        for (uint32_t i = 0; pm && i < cmd->n_seqs; i++)
            n += nack_seq(ct, pm, cmd->seqs[i], cmd->delay_ms, cmd->term);
    }
    char body[64];
    int len = snprintf(body, sizeof(body), "{\"%s\":%u}", nack ? "nacked" : "acked", n);
    pull_reply(ct, cmd->sid, WSQ_OK, body, (size_t)len);
}

/* ------------------------------------------------------------------------------------------- */
/* the loop */

static void process(wsq_consumers_t *ct, ct_cmd_t *cmd)
{
    ct_wild_t *w;
    switch (cmd->kind) {
    case CT_SUB:
        if (cmd->sub && cmd->sub->pattern)
            on_sub_pattern(ct, cmd);
        else
            on_sub(ct, cmd);
        break;
    case CT_REAUTH:
        on_reauth(ct, cmd);
        break;
    case CT_OPENED:
        on_opened(ct, cmd);
        break;
    case CT_UNSUB: {
        ct_sub_t *s = sub_find(ct, cmd->sub_id);
        if (s && s->state == SUB_OPENING) { /* answered once the open completes */
            s->unsub_pending = true;
            s->unsub_reply = cmd->reply;
            s->unsub_reply_len = cmd->reply_len;
            cmd->reply = NULL;
            break;
        }
        if (s)
            sub_end(ct, s);
        else if ((w = wild_find(ct, cmd->sub_id)) != NULL)
            wild_free(ct, w);
        send_reply(ct, cmd->sid, cmd->reply, cmd->reply_len);
        break;
    }
    case CT_ACK:
    case CT_ACK_UPTO:
        on_ack(ct, cmd);
        break;
    case CT_NACK:
        on_nack(ct, cmd);
        break;
    case CT_WRITTEN:
        on_written(ct, cmd);
        break;
    case CT_SESSION_GONE:
        on_session_gone(ct, cmd->sid);
        break;
    case CT_COMMIT:
        on_commit(ct, cmd);
        break;
    case CT_CONSUMER_DELETE:
        on_consumer_delete(ct, cmd);
        break;
    case CT_DEAD:
        on_dead(ct, cmd);
        break;
    case CT_FETCH:
        on_fetch(ct, cmd);
        break;
    case CT_PULL_ACK:
    case CT_PULL_NACK:
        on_pull_ack(ct, cmd);
        break;
    }
}

static void flush_consumers(wsq_consumers_t *ct, bool all)
{
    for (uint32_t b = 0; b < SUB_BUCKETS; b++)
        for (ct_consumer_t *c = ct->consumers[b]; c; c = c->hnext)
            if (c->dirty && (all || ct->now_ms - c->flushed_ms >= FLUSH_MS))
                cons_flush(ct, c);
}

static void push_out(wsq_consumers_t *ct)
{
    if (ct->out_head == NULL)
        return;
    st_item_t *h = ct->out_head;
    ct->out_head = NULL;
    ct->out_tail = &ct->out_head;
    wsq__st_push(ct->srv, h); /* one lock, one wake-up for the whole pass */
}

static void *ct_main(void *arg)
{
    wsq_consumers_t *ct = arg;
    ct->now_ms = wsq_now_ms();
    ct->next_timer_ms = ct->now_ms + TIMER_MS;
    for (;;) {
        /* with nothing ready, sleep until a command comes or the next timer is due */
        if (ct->ready == NULL && wsq_now_ms() < ct->next_timer_ms)
            wsq_mailbox_wait(&ct->inbox, ct->next_timer_ms);
        /* closed first: then the take holds every command pushed before the close */
        bool stopping = wsq_mailbox_closed(&ct->inbox);
        wsq_mail_t *cmds = wsq_mailbox_take(&ct->inbox);

        ct->now_ms = wsq_now_ms();
        for (wsq_mail_t *m = cmds, *nx; m; m = nx) {
            nx = m->next;
            process(ct, (ct_cmd_t *)m);
            wsq__ct_cmd_free((ct_cmd_t *)m);
        }
        if (stopping)
            break;
        if (ct->now_ms >= ct->next_timer_ms) {
            timers(ct);
            ct->next_timer_ms = ct->now_ms + TIMER_MS;
        }
        if (ct->now_ms >= ct->next_expiry_ms) {
            expire_consumers(ct);
            int64_t every = ct->srv->cfg->limits.consumer_ttl_ms / 10;
            ct->next_expiry_ms = ct->now_ms + (every < 1000 ? 1000 : every > 60000 ? 60000 : every);
        }
        /* one pass over what is ready now; subscriptions still ready go round again */
        ct_sub_t *ready = ct->ready;
        ct->ready = NULL;
        ct->ready_tail = &ct->ready;
        for (ct_sub_t *s = ready, *nx; s; s = nx) {
            nx = s->rnext;
            s->on_ready = false;
            s->rnext = NULL;
            if (s->state == SUB_LIVE && has_credit(s) && has_work(ct, s)) {
                deliver(ct, s);
                /* (a shared member waiting to fill a batch comes back with its acks) */
                if (s->state == SUB_LIVE && has_credit(s) && has_work(ct, s) &&
                    (s->cons == NULL || !s->cons->shared ||
                     member_eligible(s, shared_backlog(s->cons))))
                    ready_add(ct, s);
            }
        }
        flush_consumers(ct, false);
        push_out(ct);
    }
    /* Stopping: persist every consumer's last state before the writer stops. */
    flush_consumers(ct, true);
    push_out(ct);
    return NULL;
}

wsq_err wsq__ct_create(wsq_server_t *srv, wsq_consumers_t **out)
{
    wsq_consumers_t *ct = calloc(1, sizeof(*ct));
    if (ct == NULL)
        return WSQ_ERR_NOMEM;
    ct->srv = srv;
    ct->store = srv->store;
    wsq_mailbox_init(&ct->inbox, NULL, NULL, drop_cmd);
    ct->ready_tail = &ct->ready;
    ct->out_tail = &ct->out_head;
    wsq_buf_init(&ct->scratch);
    *out = ct;
    return WSQ_OK;
}

wsq_err wsq__ct_start(wsq_consumers_t *ct)
{
    ct->started = pthread_create(&ct->thread, NULL, ct_main, ct) == 0;
    return ct->started ? WSQ_OK : WSQ_ERR_NOMEM;
}

void wsq__ct_stop(wsq_consumers_t *ct)
{
    if (ct == NULL)
        return;
    /* from now on commands are dropped; the thread takes what came before, then ends */
    if (wsq_mailbox_close(&ct->inbox) && ct->started)
        pthread_join(ct->thread, NULL);
}

void wsq__ct_destroy(wsq_consumers_t **ctp)
{
    wsq_consumers_t *ct = *ctp;
    if (ct == NULL)
        return;
    wsq__ct_stop(ct);
    while (ct->wilds)
        wild_free(ct, ct->wilds);
    for (uint32_t b = 0; b < SUB_BUCKETS; b++) {
        while (ct->subs[b])
            sub_end(ct, ct->subs[b]);
    }
    for (uint32_t b = 0; b < SUB_BUCKETS; b++) {
        for (ct_consumer_t *c = ct->consumers[b], *nx; c; c = nx) {
            nx = c->hnext;
            wsq_cstate_fini(&c->cs);
            seqvec_free(&c->cur.redo);
            free(c->dead);
            free(c);
        }
        for (ct_topic_t *t = ct->topics[b], *nx; t; t = nx) {
            nx = t->hnext;
            tc_free(ct, t);
            free(t);
        }
    }
    for (st_item_t *it = ct->out_head, *nx; it; it = nx) {
        nx = (st_item_t *)it->mail.next;
        wsq__st_item_free(it);
    }
    wsq_buf_fini(&ct->scratch);
    wsq_mailbox_fini(&ct->inbox); /* drops commands that came after the thread's last take */
    free(ct);
    *ctp = NULL;
}
