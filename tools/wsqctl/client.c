/*
 * pub, sub and redrive's loop: a wsq.v1 client on the libwebsockets client API. One context, one
 * connection, the default poll loop, everything on the main thread (lws_cancel_service from the
 * signal handler is the one exception lws allows). Each mode has its own frame handler.
 */
#include <libwebsockets.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "wsq/topic.h"

#define MSG_MAX (256u << 20)              /* largest payload wsqctl publishes or accepts */
#define FRAME_MAX (2u * MSG_MAX + 65536u) /* largest wsq.v1 frame accepted (PROTOCOL.md) */
#define PUB_TIMEOUT_MS 30000
#define REDRIVE_STALL_MS 30000 /* redrive: no frame from the broker for this long is an error */
/* redrive: with nothing in flight and no message for this long, the rest of the dead-letter
 * topic was acknowledged before (see redrive_done) */
#define REDRIVE_QUIET_MS 2000

/* A queued outgoing text frame, with LWS_PRE bytes of headroom before the payload. */
typedef struct ofr {
    struct ofr *next;
    size_t len;
    unsigned char data[];
} ofr_t;

typedef enum { CL_PUB, CL_SUB, CL_REDRIVE } cl_mode_t;

/* A redrive publish waiting for its ok (confirms come back in publish order). */
typedef struct rpub {
    struct rpub *next;
    uint64_t seq;    /* the dead letter's seq */
    char topic[256]; /* where it was published */
} rpub_t;

/* redrive's position in the dead-letter topic. Dead letters arrive in seq order (a resumed
 * consumer gets its unacknowledged messages first, in order), so one seq says what was seen. */
typedef struct {
    ctl_redrive_t *io; /* the command's parameters and results */
    bool subscribed;   /* the subscribed reply came */
    uint64_t epoch;    /* the topic's epoch: part of each publish id */
    uint64_t end;      /* its next seq at subscribe time: redrive stops before it */
    uint64_t last;     /* every seq up to here is handled, acknowledged before, or gone */
    bool past_end;     /* a seq >= end arrived: every earlier one was delivered before it */
    bool quiet;        /* REDRIVE_QUIET_MS passed with nothing in flight and no message */
    uint64_t taken;    /* dead letters taken in this run (for --max) */
    rpub_t *inflight, **inflight_tail; /* publishes waiting for their ok, oldest first */
    bool finishing;                    /* the final ping was sent: close at its pong */
    lws_sorted_usec_list_t quiet_sul;  /* fires REDRIVE_QUIET_MS after the last frame */
} redrive_t;

typedef struct {
    wsqctl_t *c;
    cl_mode_t mode;
    struct lws_context *ctx;
    struct lws *wsi;
    ofr_t *q, **qt;             /* frames to send, in order */
    wsq_buf_t rx;               /* the frame being reassembled */
    bool established;           /* the upgrade succeeded */
    bool want_close;            /* close (1000) at the next WRITEABLE */
    bool done;                  /* the connection is gone: leave the loop */
    bool peer_closed;           /* the broker sent a close frame */
    int close_code;             /* its code */
    char close_reason[128];     /* and reason */
    int rc;                     /* exit code once done */
    lws_sorted_usec_list_t sul; /* the --timeout (redrive: REDRIVE_STALL_MS after each frame) */
    int64_t timeout_ms;         /* 0: none */
    /* pub */
    const char *topic;
    unsigned char *payload;
    size_t plen;
    /* sub */
    uint64_t want; /* --count (0: unlimited) */
    uint64_t got;  /* messages printed */
    bool draining; /* --count reached: waiting for the pong that follows the last ack */
    /* redrive */
    redrive_t rd;
} client_t;

/* The signal handler's way to the loop: the only process-wide state, as signals require. */
static struct lws_context *volatile g_ctx;
static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig)
{
    (void)sig;
    g_interrupted = 1;
    if (g_ctx)
        lws_cancel_service(g_ctx);
}

static int queue_frame(client_t *cl, const wsq_buf_t *b)
{
    ofr_t *f = malloc(sizeof(*f) + LWS_PRE + b->len);
    if (f == NULL)
        return wsq__ctl_fail(cl->c, CTL_ERR, "nomem", "out of memory");
    f->next = NULL;
    f->len = b->len;
    memcpy(f->data + LWS_PRE, b->data, b->len);
    *cl->qt = f;
    cl->qt = &f->next;
    if (cl->wsi)
        lws_callback_on_writable(cl->wsi);
    return CTL_OK;
}

static int queue_encoded(client_t *cl, const wsq_frame_t *fr)
{
    wsq_buf_t b;
    wsq_buf_init(&b);
    wsq_err e = wsq_proto_encode_client(fr, &b);
    int rc = e == WSQ_OK ? queue_frame(cl, &b)
                         : wsq__ctl_fail(cl->c, CTL_ERR, wsq_errname(e),
                                         "cannot encode the frame: %s", wsq_strerror(e));
    wsq_buf_fini(&b);
    return rc;
}

/* A ping whose pong says that every frame sent before it was handled: acks included. */
static void queue_done_ping(client_t *cl)
{
    wsq_frame_t p;
    wsq_frame_init(&p);
    p.op = WSQ_OP_PING;
    snprintf(p.ref, sizeof(p.ref), "\"done\"");
    queue_encoded(cl, &p);
}

static void queue_ack(client_t *cl, const char *topic, uint64_t seq)
{
    wsq_frame_t a;
    wsq_frame_init(&a);
    a.op = WSQ_OP_ACK;
    a.topic_len = strlen(topic);
    memcpy(a.topic, topic, a.topic_len + 1);
    a.has_seq = true;
    a.seq = seq;
    queue_encoded(cl, &a);
}

static void close_soon(client_t *cl)
{
    cl->want_close = true;
    if (cl->wsi)
        lws_callback_on_writable(cl->wsi);
}

static void fail_close(client_t *cl, int rc)
{
    if (!cl->rc)
        cl->rc = rc;
    close_soon(cl);
}

static int err_frame(client_t *cl, const wsq_server_frame_t *f, const char *doing)
{
    wsqctl_t *c = cl->c;
    if (strcmp(f->code, "forbidden") == 0 || strcmp(f->code, "unauthorized") == 0)
        return wsq__ctl_fail(c, CTL_ERR, "permission_denied",
                             "permission denied %s: %s (%s); pass --token TOKEN or set WSQ_TOKEN",
                             doing, f->message, f->code);
    if (strcmp(f->code, "not_found") == 0)
        return wsq__ctl_fail(c, CTL_NOTFOUND, f->code, "%s: %s", doing, f->message);
    return wsq__ctl_fail(c, CTL_ERR, f->code[0] ? f->code : "error", "%s: the broker said %s: %s",
                         doing, f->code, f->message);
}

static void print_payload(client_t *cl, const wsq_server_frame_t *f)
{
    if (!f->binary) {
        fwrite(f->data, 1, f->data_len, stdout);
    } else if (cl->c->base64) {
        char *b = malloc(wsq_base64_enc_len(f->data_len) + 1);
        if (b) {
            wsq_base64_encode(f->data, f->data_len, b);
            fwrite(b, 1, wsq_base64_enc_len(f->data_len), stdout);
            free(b);
        }
    } else {
        static const char hx[] = "0123456789abcdef";
        for (size_t i = 0; i < f->data_len; i++) {
            putchar(hx[f->data[i] >> 4]);
            putchar(hx[f->data[i] & 15]);
        }
    }
    putchar('\n');
}

/* ---- redrive ---------------------------------------------------------------------------- */

static void redrive_on_quiet(lws_sorted_usec_list_t *sul);
static void on_timeout(lws_sorted_usec_list_t *sul);

/* (Re)starts the stall timeout and the quiet timer: something arrived. */
static void redrive_alive(client_t *cl)
{
    lws_sul_cancel(&cl->sul);
    lws_sul_schedule(cl->ctx, 0, &cl->sul, on_timeout, REDRIVE_STALL_MS * LWS_US_PER_MS);
    lws_sul_cancel(&cl->rd.quiet_sul);
    lws_sul_schedule(cl->ctx, 0, &cl->rd.quiet_sul, redrive_on_quiet,
                     REDRIVE_QUIET_MS * LWS_US_PER_MS);
}

/* Ends the run once nothing is in flight and one of these holds:
 *   - caught up: every seq below the next seq at subscribe time was handled, was acknowledged
 *     before (the subscription started past it) or is gone (a gap), or a later seq arrived;
 *   - --max dead letters were taken;
 *   - quiet: with nothing in flight, no message came for REDRIVE_QUIET_MS. A resumed consumer
 *     gets its unacknowledged messages at once and in order, so what did not come was
 *     acknowledged before (individually, above the ack floor: a previous run left a dead letter
 *     it could not redrive below them).
 * The acks sent so far are confirmed by a ping: its pong comes after them. */
static void redrive_done(client_t *cl)
{
    redrive_t *r = &cl->rd;
    if (!r->subscribed || r->finishing || r->inflight)
        return;
    r->io->max_reached = r->io->max && r->taken >= r->io->max;
    if (!(r->last + 1 >= r->end || r->past_end || r->io->max_reached || r->quiet))
        return;
    queue_done_ping(cl);
    r->finishing = true;
}

static void redrive_on_quiet(lws_sorted_usec_list_t *sul)
{
    client_t *cl = lws_container_of(sul, client_t, rd.quiet_sul);
    if (cl->rd.inflight) /* waiting for confirms: the stall timeout watches those */
        return;
    cl->rd.quiet = true;
    wsq__ctl_note(cl->c,
                  "nothing came for %d ms: %s seqs %llu to %llu were acknowledged before (above a "
                  "dead letter an earlier run could not redrive)",
                  REDRIVE_QUIET_MS, cl->rd.io->dlq, (unsigned long long)(cl->rd.last + 1),
                  (unsigned long long)(cl->rd.end - 1));
    redrive_done(cl);
}

/* A dead letter that is not redriven: named on stderr, listed in the summary, not acknowledged. */
static void redrive_fail_one(client_t *cl, uint64_t seq, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void redrive_fail_one(client_t *cl, uint64_t seq, const char *code, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "wsqctl: %s seq %llu: %s (not acknowledged)\n", cl->rd.io->dlq,
            (unsigned long long)seq, msg);
    json_array_append_new(cl->rd.io->failed, json_pack("{s:I,s:s,s:s}", "seq", (json_int_t)seq,
                                                       "code", code, "message", msg));
}

/* The publish id of a dead letter: the same for every run over the same message, so that the
 * destination's dedup window stores a message published again (a run interrupted between the
 * ok and the ack) only once. The topic's name is cut to fit WSQ's 128 bytes; the epoch, random
 * per topic, keeps the ids of two topics apart. */
static void redrive_id(const redrive_t *r, uint64_t seq, char *out, size_t cap)
{
    char tail[64];
    int tl = snprintf(tail, sizeof(tail), "/%016llx/%llu", (unsigned long long)r->epoch,
                      (unsigned long long)seq);
    size_t room = 128 - (sizeof("redrive/") - 1) - (size_t)tl;
    size_t n = strlen(r->io->dlq);
    snprintf(out, cap, "redrive/%.*s%s", (int)(n < room ? n : room), r->io->dlq, tail);
}

/* One dead letter: published to its topic with its own headers, acknowledged at the ok. */
static void redrive_msg(client_t *cl, const wsq_server_frame_t *f)
{
    redrive_t *r = &cl->rd;
    if (f->seq >= r->end) { /* published after the subscribe: the next run's */
        r->past_end = true;
        return;
    }
    if (f->seq <= r->last || (r->io->max && r->taken >= r->io->max))
        return; /* a redelivery of one taken in this run, or beyond --max */
    r->last = f->seq;
    r->taken++;
    const char *dest = r->io->to;
    size_t dest_len = dest ? strlen(dest) : 0;
    bool named = dest != NULL; /* --to, or a wsq-dead-topic header */
    wsq_buf_t hb;
    wsq_buf_init(&hb);
    size_t off = 0;
    wsq_header_t h;
    wsq_err e = WSQ_OK;
    while (e == WSQ_OK && f->headers && wsq_headers_next(f->headers, f->headers_len, &off, &h)) {
        bool dead = h.key_len >= sizeof(CTL_DEAD_PREFIX) - 1 &&
                    memcmp(h.key, CTL_DEAD_PREFIX, sizeof(CTL_DEAD_PREFIX) - 1) == 0;
        if (!dead)
            e = wsq_headers_add(&hb, h.key, h.key_len, h.value, h.value_len);
        else if (!r->io->to && h.key_len == sizeof(CTL_DEAD_PREFIX "topic") - 1 &&
                 memcmp(h.key, CTL_DEAD_PREFIX "topic", h.key_len) == 0)
            dest = h.value, dest_len = h.value_len, named = true;
    }
    if (e != WSQ_OK) {
        redrive_fail_one(cl, f->seq, wsq_errname(e), "its headers cannot be copied: %s",
                         wsq_strerror(e));
    } else if (!named) {
        redrive_fail_one(cl, f->seq, "no_dead_topic",
                         "no " CTL_DEAD_PREFIX "topic header says where it came from: pass --to "
                         "TOPIC to redrive it");
    } else if (!wsq_topic_valid(dest, dest_len)) { /* the header's whole value, never a cut */
        redrive_fail_one(cl, f->seq, "bad_topic",
                         "its " CTL_DEAD_PREFIX "topic '%.*s' is not a topic name: pass --to "
                         "TOPIC",
                         (int)(dest_len < 300 ? dest_len : 300), dest);
    } else if (dest_len == strlen(r->io->dlq) && memcmp(dest, r->io->dlq, dest_len) == 0) {
        redrive_fail_one(cl, f->seq, "bad_topic",
                         "its " CTL_DEAD_PREFIX "topic is the dead-letter topic itself: pass --to "
                         "TOPIC");
    } else {
        rpub_t *p = calloc(1, sizeof(*p));
        char id[WSQ_REF_MAX + 1];
        wsq_frame_t fr;
        wsq_frame_init(&fr);
        fr.op = WSQ_OP_PUB;
        snprintf(fr.ref, sizeof(fr.ref), "%llu", (unsigned long long)f->seq);
        fr.topic_len = dest_len;
        memcpy(fr.topic, dest, dest_len);
        fr.topic[dest_len] = '\0';
        fr.data = f->data ? f->data : (unsigned char *)"";
        fr.data_len = f->data_len;
        fr.binary = f->binary;
        fr.headers = hb.data;
        fr.headers_len = hb.len;
        redrive_id(r, f->seq, id, sizeof(id));
        fr.id = id;
        fr.id_len = strlen(id);
        /* fr only borrows: never wsq_frame_clear'd */
        if (p == NULL || queue_encoded(cl, &fr) != CTL_OK) {
            free(p);
            fail_close(cl, wsq__ctl_fail(cl->c, CTL_ERR, "nomem", "out of memory"));
        } else {
            p->seq = f->seq;
            memcpy(p->topic, fr.topic, fr.topic_len + 1);
            *r->inflight_tail = p;
            r->inflight_tail = &p->next;
        }
    }
    wsq_buf_fini(&hb);
}

/* The ok or err of the oldest publish in flight. */
static void redrive_confirm(client_t *cl, const wsq_server_frame_t *f, const unsigned char *text,
                            size_t len)
{
    redrive_t *r = &cl->rd;
    rpub_t *p = r->inflight;
    char ref[32];
    snprintf(ref, sizeof(ref), "%llu", p ? (unsigned long long)p->seq : 0ull);
    if (p == NULL || strcmp(f->ref, ref) != 0) {
        fail_close(cl, wsq__ctl_fail(cl->c, CTL_ERR, "bad_response",
                                     "the broker answered a publish wsqctl did not send "
                                     "(ref %s)",
                                     f->ref));
        return;
    }
    r->inflight = p->next;
    if (r->inflight == NULL)
        r->inflight_tail = &r->inflight;
    if (f->op[0] == 'e') {
        redrive_fail_one(cl, p->seq, f->code, "publishing to %s: the broker said %s: %s", p->topic,
                         f->code, f->message);
    } else {
        queue_ack(cl, r->io->dlq, p->seq);
        r->io->redriven++;
        json_t *j =
            json_loadb((const char *)text, len, 0, NULL); /* wsq_server_frame_t has no "dup" */
        if (json_is_true(json_object_get(j, "dup")))
            r->io->dup++;
        json_decref(j);
        size_t i;
        json_t *t;
        bool known = false;
        json_array_foreach(r->io->topics, i, t)
        {
            known = known || strcmp(json_string_value(t), p->topic) == 0;
        }
        if (!known)
            json_array_append_new(r->io->topics, json_string(p->topic));
    }
    free(p);
    redrive_done(cl);
}

static void redrive_subscribed(client_t *cl, const wsq_server_frame_t *f, const unsigned char *text,
                               size_t len)
{
    redrive_t *r = &cl->rd;
    json_t *j = json_loadb((const char *)text, len, 0, NULL), *st = json_object_get(j, "start_seq");
    uint64_t start = json_is_integer(st) ? (uint64_t)json_integer_value(st) : f->first_seq;
    json_decref(j);
    r->subscribed = true;
    r->io->subscribed = true;
    r->epoch = f->epoch;
    r->end = f->next_seq;
    r->last = start ? start - 1 : 0; /* below its first unacknowledged seq: all acknowledged */
    wsq__ctl_note(cl->c, "subscribed to %s as %s (seqs %llu to %llu to look at)", f->topic,
                  CTL_REDRIVE_CONSUMER, (unsigned long long)start,
                  (unsigned long long)(r->end - 1));
    redrive_done(cl);
}

static void redrive_frame(client_t *cl, const wsq_server_frame_t *f, const unsigned char *text,
                          size_t len)
{
    redrive_t *r = &cl->rd;
    redrive_alive(cl);
    if (r->finishing) {
        if (strcmp(f->op, "pong") == 0 && strcmp(f->ref, "\"done\"") == 0)
            close_soon(cl);
        return; /* what still arrives is the next run's */
    }
    if (strcmp(f->op, "msg") == 0) {
        redrive_msg(cl, f);
    } else if (strcmp(f->op, "ok") == 0 ||
               (strcmp(f->op, "err") == 0 && f->ref[0] && f->ref[0] != '"')) {
        redrive_confirm(cl, f, text, len);
        return;
    } else if (strcmp(f->op, "subscribed") == 0) {
        redrive_subscribed(cl, f, text, len);
        return;
    } else if (strcmp(f->op, "gap") == 0) { /* gone: counts as acknowledged */
        if (f->to > r->last)
            r->last = f->to;
    } else if (strcmp(f->op, "err") == 0) { /* the subscribe, or an ack */
        char doing[300];
        snprintf(doing, sizeof(doing), "redriving %s", r->io->dlq);
        fail_close(cl, err_frame(cl, f, doing));
        return;
    }
    redrive_done(cl);
}

/* One complete frame from the broker. */
static void on_frame(client_t *cl, const unsigned char *text, size_t len)
{
    wsqctl_t *c = cl->c;
    wsq_server_frame_t f;
    wsq_err e = wsq_proto_decode_server(text, len, &f);
    if (e == WSQ_ERR_UNKNOWN_OP) { /* an op of a newer wsq.v1 (or one this wsqctl reads not) */
        wsq__ctl_note(c, "ignored a frame wsqctl does not know: %.120s", (const char *)text);
        return;
    }
    if (e != WSQ_OK) {
        wsq__ctl_fail(c, CTL_ERR, "bad_response",
                      "the broker sent a frame wsqctl cannot read "
                      "(%s): %.120s",
                      wsq_errname(e), (const char *)text);
        fail_close(cl, CTL_ERR);
        return;
    }
    if (cl->mode == CL_REDRIVE) {
        redrive_frame(cl, &f, text, len);
        wsq_server_frame_clear(&f);
        return;
    }
    if (cl->mode == CL_PUB) {
        if (strcmp(f.op, "ok") == 0 && strcmp(f.ref, "1") == 0) {
            if (c->json)
                wsq__ctl_doc(c,
                             json_pack("{s:s,s:I}", "topic", cl->topic, "seq", (json_int_t)f.seq));
            else
                printf("%llu\n", (unsigned long long)f.seq);
            close_soon(cl);
        } else if (strcmp(f.op, "err") == 0) {
            char doing[300];
            snprintf(doing, sizeof(doing), "publishing to %s", cl->topic);
            fail_close(cl, err_frame(cl, &f, doing));
        }
        wsq_server_frame_clear(&f);
        return;
    }
    if (cl->draining && strcmp(f.op, "pong") != 0) {
        /* --count reached: what still arrives is neither printed nor acknowledged */
    } else if (strcmp(f.op, "msg") == 0 || strcmp(f.op, "gap") == 0 || strcmp(f.op, "reset") == 0) {
        if (c->json) {
            fwrite(text, 1, len, stdout);
            putchar('\n');
        } else if (f.op[0] == 'm') {
            print_payload(cl, &f);
        } else if (f.op[0] == 'g') {
            fprintf(stderr, "wsqctl: gap in %s: seqs %llu-%llu no longer exist (%s)\n", f.topic,
                    (unsigned long long)f.from, (unsigned long long)f.to, f.reason);
        } else {
            fprintf(stderr, "wsqctl: reset: %s was deleted and created again (epoch %016llx)\n",
                    f.topic, (unsigned long long)f.epoch);
        }
        fflush(stdout);
        if (f.op[0] == 'm') {
            cl->got++;
            if (c->ack && c->consumer) {
                /* acknowledged only once printed: at-least-once towards stdout */
                queue_ack(cl, cl->topic, f.seq);
            }
            if (cl->want && cl->got >= cl->want && !cl->draining) {
                /* the pong comes after every ack sent before the ping: then close */
                queue_done_ping(cl);
                cl->draining = true;
            }
        }
    } else if (strcmp(f.op, "subscribed") == 0) {
        wsq__ctl_note(c, "subscribed to %s (first seq %llu, next seq %llu)", f.topic,
                      (unsigned long long)f.first_seq, (unsigned long long)f.next_seq);
    } else if (strcmp(f.op, "pong") == 0 && strcmp(f.ref, "\"done\"") == 0) {
        close_soon(cl);
    } else if (strcmp(f.op, "err") == 0) {
        char doing[300];
        snprintf(doing, sizeof(doing), "subscribing to %s", cl->topic);
        fail_close(cl, err_frame(cl, &f, doing));
    }
    wsq_server_frame_clear(&f);
}

static void on_timeout(lws_sorted_usec_list_t *sul)
{
    client_t *cl = lws_container_of(sul, client_t, sul);
    wsqctl_t *c = cl->c;
    if (cl->mode == CL_REDRIVE)
        fail_close(cl, wsq__ctl_fail(c, CTL_ERR, "timeout",
                                     "no answer from the broker at %s for %d s (redriven so far: "
                                     "%llu of %s)",
                                     c->url.base, REDRIVE_STALL_MS / 1000,
                                     (unsigned long long)cl->rd.io->redriven, cl->rd.io->dlq));
    else if (cl->mode == CL_PUB)
        fail_close(cl, wsq__ctl_fail(c, CTL_ERR, "timeout",
                                     "no confirm from the broker at %s within %s", c->url.base,
                                     c->timeout ? c->timeout : "30s"));
    else if (cl->want && cl->got < cl->want)
        fail_close(cl, wsq__ctl_fail(c, CTL_ERR, "timeout",
                                     "timeout after %s: received %llu of %llu messages", c->timeout,
                                     (unsigned long long)cl->got, (unsigned long long)cl->want));
    else
        close_soon(cl);
    if (!cl->established)
        cl->done = true;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    (void)user;
    client_t *cl = lws_context_user(lws_get_context(wsi));
    wsqctl_t *c = cl ? cl->c : NULL;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        if (c->token) {
            unsigned char **p = (unsigned char **)in, *end = (*p) + len;
            size_t n = strlen(c->token) + 8;
            char *v = malloc(n);
            if (v == NULL)
                return -1;
            snprintf(v, n, "Bearer %s", c->token);
            int bad = lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
                                                   (unsigned char *)v, (int)strlen(v), p, end);
            free(v);
            if (bad)
                return -1;
        }
        return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        cl->established = true;
        wsq__ctl_note(c, "connected to %s (wsq.v1)", c->url.base);
        if (cl->q)
            lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE: {
        if (cl->want_close) {
            lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
            return -1;
        }
        ofr_t *f = cl->q;
        if (f == NULL)
            return 0;
        cl->q = f->next;
        if (cl->q == NULL)
            cl->qt = &cl->q;
        int n = lws_write(wsi, f->data + LWS_PRE, f->len, LWS_WRITE_TEXT);
        free(f);
        if (n < 0) {
            wsq__ctl_fail(c, CTL_UNREACHABLE, "unavailable", "writing to the broker at %s failed",
                          c->url.base);
            return -1;
        }
        if (cl->q || cl->want_close)
            lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (cl->rx.len + len > FRAME_MAX) {
            fail_close(cl, wsq__ctl_fail(c, CTL_ERR, "too_large",
                                         "the broker sent a frame above %u bytes", FRAME_MAX));
            return 0;
        }
        if (wsq_buf_append(&cl->rx, in, len) != WSQ_OK) {
            fail_close(cl, wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory"));
            return 0;
        }
        if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0) {
            if (!cl->want_close)
                on_frame(cl, cl->rx.data, cl->rx.len);
            cl->rx.len = 0;
        }
        return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE: {
        const unsigned char *p = in;
        cl->peer_closed = true;
        if (len >= 2) {
            cl->close_code = p[0] << 8 | p[1];
            size_t rl =
                len - 2 < sizeof(cl->close_reason) - 1 ? len - 2 : sizeof(cl->close_reason) - 1;
            memcpy(cl->close_reason, p + 2, rl);
            cl->close_reason[rl] = '\0';
        }
        return 0;
    }
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        const char *why = in ? (const char *)in : "connection failed";
        cl->done = true;
        cl->wsi = NULL;
        if (strncmp(why, "HS: ws upgrade unauthorized", 27) == 0) {
            cl->rc = wsq__ctl_fail(c, CTL_ERR, "permission_denied",
                                   "permission denied: the broker at %s refused the connection "
                                   "(401 unauthorized); pass a valid --token or set WSQ_TOKEN",
                                   c->url.base);
        } else if (strncmp(why, "HS:", 3) == 0) {
            unsigned st = lws_http_client_http_response(wsi);
            if (st == 403)
                cl->rc = wsq__ctl_fail(c, CTL_ERR, "permission_denied",
                                       "permission denied: the broker at %s refused the "
                                       "connection (403 forbidden)",
                                       c->url.base);
            else if (st == 503)
                cl->rc = wsq__ctl_fail(c, CTL_UNREACHABLE, "closed",
                                       "the broker at %s is shutting down (503)", c->url.base);
            else
                cl->rc = wsq__ctl_fail(c, CTL_ERR, "bad_response",
                                       "the server at %s refused the WebSocket upgrade (%s, HTTP "
                                       "%u): is it a wsqd?",
                                       c->url.base, why, st);
        } else if (c->url.tls && (strstr(why, "SSL") || strstr(why, "ssl"))) {
            cl->rc = wsq__ctl_fail(c, CTL_ERR, "tls",
                                   "the TLS handshake with the broker at %s failed (%s): is its "
                                   "certificate trusted? (--insecure skips the check)",
                                   c->url.base, why);
        } else {
            cl->rc = wsq__ctl_fail(
                c, CTL_UNREACHABLE, "unavailable", "broker unreachable at %s (from %s): %s%s%s",
                c->url.base, c->url.why ? c->url.why : "--url", why, c->need_broker ? "; " : "",
                c->need_broker ? c->need_broker : "");
        }
        return 0;
    }
    case LWS_CALLBACK_CLIENT_CLOSED:
        cl->done = true;
        cl->wsi = NULL;
        if (cl->want_close)
            return 0; /* we closed: rc says how it went */
        if (cl->peer_closed) {
            if (c->json && cl->mode == CL_SUB) {
                json_t *j = json_pack("{s:s,s:i,s:s}", "op", "close", "code", cl->close_code,
                                      "reason", cl->close_reason);
                json_dumpf(j, stdout, JSON_COMPACT);
                putchar('\n');
                json_decref(j);
            }
            cl->rc = wsq__ctl_fail(c, CTL_ERR, "closed", "the broker closed the connection: %d %s",
                                   cl->close_code, cl->close_reason);
        } else {
            cl->rc = wsq__ctl_fail(c, CTL_UNREACHABLE, "unavailable",
                                   "the connection to the broker at %s was lost", c->url.base);
        }
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (cl && g_interrupted && !cl->want_close) {
            if (cl->wsi && cl->established)
                close_soon(cl);
            else
                cl->done = true;
        }
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols protocols[] = {
    {WSQ_SUBPROTOCOL, callback, 0, 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Connects, runs the loop until the connection is gone, and cleans up. The first frame (pub or
 * sub) is queued by the caller. */
static int run(client_t *cl)
{
    wsqctl_t *c = cl->c;
    /* pub and sub need a broker: there is no local store to fall back on */
    wsq__ctl_note(c, "using the broker at %s (from %s)", c->url.base, c->url.why);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.gid = (gid_t)-1;
    info.uid = (uid_t)-1;
    info.user = cl;
    if (c->url.tls)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    cl->ctx = lws_create_context(&info);
    if (cl->ctx == NULL)
        return wsq__ctl_fail(c, CTL_ERR, "internal", "cannot create the libwebsockets context");
    g_ctx = cl->ctx;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char host[300];
    bool v6 = strchr(c->url.host, ':') != NULL;
    snprintf(host, sizeof(host), "%s%s%s:%u", v6 ? "[" : "", c->url.host, v6 ? "]" : "",
             c->url.port);
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.context = cl->ctx;
    ci.address = c->url.host;
    ci.port = (int)c->url.port;
    ci.path = "/";
    ci.host = host;
    ci.protocol = WSQ_SUBPROTOCOL;
    ci.local_protocol_name = WSQ_SUBPROTOCOL;
    ci.pwsi = &cl->wsi;
    if (c->url.tls) {
        ci.ssl_connection = LCCSCF_USE_SSL;
        if (c->insecure)
            ci.ssl_connection |= LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK |
                                 LCCSCF_ALLOW_EXPIRED | LCCSCF_ALLOW_INSECURE;
    }
    if (cl->timeout_ms > 0)
        lws_sul_schedule(cl->ctx, 0, &cl->sul, on_timeout, cl->timeout_ms * LWS_US_PER_MS);
    if (lws_client_connect_via_info(&ci) == NULL && !cl->done) {
        cl->done = true;
        cl->rc = wsq__ctl_fail(c, CTL_UNREACHABLE, "unavailable", "broker unreachable at %s",
                               c->url.base);
    }
    while (!cl->done && lws_service(cl->ctx, 0) >= 0)
        ;
    lws_sul_cancel(&cl->sul);
    lws_sul_cancel(&cl->rd.quiet_sul);
    g_ctx = NULL;
    lws_context_destroy(cl->ctx);
    cl->ctx = NULL;
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    while (cl->q) {
        ofr_t *n = cl->q->next;
        free(cl->q);
        cl->q = n;
    }
    wsq_buf_fini(&cl->rx);
    if (g_interrupted && !cl->rc && !c->fail_code)
        wsq__ctl_note(c, "interrupted");
    return cl->rc ? cl->rc : c->fail_code;
}

static int parse_timeout(wsqctl_t *c, int64_t *ms, int64_t dflt)
{
    *ms = dflt;
    if (c->timeout && (wsq_parse_duration_ms(c->timeout, ms) != WSQ_OK || *ms <= 0))
        return wsq__ctl_fail(c, CTL_USAGE, "usage",
                             "--timeout must be a duration such as 500ms, 10s, 5m, not '%s'",
                             c->timeout);
    return CTL_OK;
}

int wsq__ctl_cmd_pub(wsqctl_t *c, int argc, char **argv)
{
    const char *topic = argv[0];
    if (!wsq_topic_valid(topic, strlen(topic)))
        return wsq__ctl_bad_topic(c, topic);
    client_t cl;
    memset(&cl, 0, sizeof(cl));
    cl.c = c;
    cl.qt = &cl.q;
    cl.topic = topic;
    wsq_buf_init(&cl.rx);
    int rc = parse_timeout(c, &cl.timeout_ms, PUB_TIMEOUT_MS);
    if (rc != CTL_OK)
        return rc;
    wsq_buf_t msg;
    wsq_buf_init(&msg);
    if (argc >= 2 && strcmp(argv[1], "-") != 0) {
        wsq_buf_append(&msg, argv[1], strlen(argv[1]));
    } else {
        unsigned char chunk[65536];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
            if (msg.len + n > MSG_MAX) {
                wsq_buf_fini(&msg);
                return wsq__ctl_fail(c, CTL_ERR, "too_large",
                                     "the message on stdin is larger than %u bytes", MSG_MAX);
            }
            if (wsq_buf_append(&msg, chunk, n) != WSQ_OK) {
                wsq_buf_fini(&msg);
                return wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
            }
        }
        if (ferror(stdin)) {
            wsq_buf_fini(&msg);
            return wsq__ctl_fail(c, CTL_ERR, "io_error", "reading stdin failed");
        }
    }
    if (!c->binary && !wsq_utf8_valid(msg.data, msg.len)) {
        wsq_buf_fini(&msg);
        return wsq__ctl_fail(c, CTL_ERR, "bad_utf8",
                             "the message is not valid UTF-8 text: pass --binary to publish it as "
                             "a binary message");
    }
    wsq_frame_t fr;
    wsq_frame_init(&fr);
    fr.op = WSQ_OP_PUB;
    snprintf(fr.ref, sizeof(fr.ref), "1");
    fr.topic_len = strlen(topic);
    memcpy(fr.topic, topic, fr.topic_len + 1);
    fr.data = msg.data ? msg.data : (unsigned char *)"";
    fr.data_len = msg.len;
    fr.binary = c->binary;
    rc = queue_encoded(&cl, &fr);
    fr.data = NULL; /* msg owns it */
    wsq_buf_fini(&msg);
    if (rc != CTL_OK)
        return rc;
    return run(&cl);
}

int wsq__ctl_cmd_sub(wsqctl_t *c, int argc, char **argv)
{
    (void)argc;
    const char *topic = argv[0];
    if (!wsq_topic_valid(topic, strlen(topic)))
        return wsq__ctl_bad_topic(c, topic);
    client_t cl;
    memset(&cl, 0, sizeof(cl));
    cl.c = c;
    cl.mode = CL_SUB;
    cl.qt = &cl.q;
    cl.topic = topic;
    wsq_buf_init(&cl.rx);
    int rc = parse_timeout(c, &cl.timeout_ms, 0);
    if (rc != CTL_OK)
        return rc;
    wsq_frame_t fr;
    wsq_frame_init(&fr);
    fr.op = WSQ_OP_SUB;
    snprintf(fr.ref, sizeof(fr.ref), "1");
    fr.topic_len = strlen(topic);
    memcpy(fr.topic, topic, fr.topic_len + 1);
    if (c->consumer) {
        size_t n = strlen(c->consumer);
        bool ok = n > 0 && n <= WSQ_CONSUMER_NAME_MAX;
        for (size_t i = 0; ok && i < n; i++) {
            char ch = c->consumer[i];
            ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '_' || ch == '-';
        }
        if (!ok)
            return wsq__ctl_fail(c, CTL_USAGE, "usage",
                                 "'%s' is not a consumer name: 1-128 bytes of [A-Za-z0-9._-]",
                                 c->consumer);
        memcpy(fr.consumer, c->consumer, n + 1);
        fr.consumer_len = n;
    }
    if (c->ack && !c->consumer)
        return wsq__ctl_fail(c, CTL_USAGE, "usage",
                             "--ack needs --consumer NAME (ephemeral subscriptions keep no "
                             "position)");
    if (c->from) {
        uint64_t v;
        if (strcmp(c->from, "earliest") == 0)
            fr.from = WSQ_FROM_EARLIEST;
        else if (strcmp(c->from, "latest") == 0)
            fr.from = WSQ_FROM_LATEST;
        else if (strcmp(c->from, "resume") == 0)
            fr.from = WSQ_FROM_RESUME;
        else if (wsq__ctl_parse_u64(c->from, &v) && v > 0)
            fr.from = WSQ_FROM_SEQ, fr.from_seq = v;
        else if (strncmp(c->from, "time:", 5) == 0 && wsq__ctl_parse_u64(c->from + 5, &v) &&
                 v <= INT64_MAX)
            fr.from = WSQ_FROM_TIME, fr.from_time = (int64_t)v;
        else
            return wsq__ctl_fail(c, CTL_USAGE, "usage",
                                 "--from must be earliest, latest, resume, a seq or time:UNIX_MS, "
                                 "not '%s'",
                                 c->from);
    }
    if (c->window) {
        uint64_t w;
        if (!wsq__ctl_parse_u64(c->window, &w) || w == 0 || w > 1000000)
            return wsq__ctl_fail(c, CTL_USAGE, "usage", "--window must be 1..1000000, not '%s'",
                                 c->window);
        fr.window = (uint32_t)w;
    }
    if (c->count && (!wsq__ctl_parse_u64(c->count, &cl.want) || cl.want == 0))
        return wsq__ctl_fail(c, CTL_USAGE, "usage", "--count must be 1 or more, not '%s'",
                             c->count);
    rc = queue_encoded(&cl, &fr);
    if (rc != CTL_OK)
        return rc;
    return run(&cl);
}

int wsq__ctl_redrive_run(wsqctl_t *c, ctl_redrive_t *io)
{
    client_t cl;
    memset(&cl, 0, sizeof(cl));
    cl.c = c;
    cl.mode = CL_REDRIVE;
    cl.qt = &cl.q;
    cl.topic = io->dlq;
    cl.timeout_ms = REDRIVE_STALL_MS;
    cl.rd.io = io;
    cl.rd.inflight_tail = &cl.rd.inflight;
    wsq_buf_init(&cl.rx);
    wsq_frame_t fr;
    wsq_frame_init(&fr);
    fr.op = WSQ_OP_SUB;
    snprintf(fr.ref, sizeof(fr.ref), "\"sub\"");
    fr.topic_len = strlen(io->dlq);
    memcpy(fr.topic, io->dlq, fr.topic_len + 1);
    fr.consumer_len = strlen(CTL_REDRIVE_CONSUMER);
    memcpy(fr.consumer, CTL_REDRIVE_CONSUMER, fr.consumer_len + 1);
    fr.from = WSQ_FROM_EARLIEST; /* a new consumer starts at the first dead letter */
    int rc = queue_encoded(&cl, &fr);
    if (rc == CTL_OK)
        rc = run(&cl);
    while (cl.rd.inflight) { /* the connection ended before their ok: not acknowledged */
        rpub_t *n = cl.rd.inflight->next;
        free(cl.rd.inflight);
        cl.rd.inflight = n;
    }
    return rc;
}
