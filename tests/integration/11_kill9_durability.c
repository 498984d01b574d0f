/*
 * 11_kill9_durability: with storage.sync full, kill -9 at any moment loses no confirmed message
 * (DESIGN.md guarantee 1; docs/PROTOCOL.md "pub": ok after commit; "sub": a resumed consumer
 * first gets its unacknowledged messages, then new ones, in seq order).
 *
 * Twelve rounds. In each, three wsq.v1 publishers (20 unconfirmed publishes in flight each, text
 * and binary payloads of 0..600 bytes, all unique) publish to one topic while a durable consumer
 * reads and acks; wsqd is SIGKILLed at a random moment. After every restart:
 * - the topic's last seq (next_seq - 1 of the resumed subscription) is at least the highest seq
 *   ever confirmed, and at least the highest seq ever delivered;
 * - the resumed consumer's messages are gap-free in seq order (a seq is either a repeat of one
 *   seen before, with the same payload, or exactly the next one);
 * - every payload is exactly the one that was published, and a confirmed seq carries the payload
 *   whose publish was confirmed with it.
 * At the end the consumer has seen every confirmed seq.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define T_MS (10000 * wsqt_slow())
#define TOPIC "k11.log"
#define ROUNDS 12
#define NPUB 3
#define MAXSEQ 400000

/* Which publish a seq belongs to: round, publisher, index (all + 1; 0 = unknown). */
typedef struct {
    uint16_t round, pub;
    uint32_t idx;
} ident_t;

static wsqt_pipe_t pipes[ROUNDS][NPUB];
static size_t processed[ROUNDS][NPUB]; /* replies already looked at */
static ident_t *conf;                  /* by seq: the confirmed publish */
static ident_t *seen;                  /* by seq: the delivered publish */
static uint64_t max_conf, highest_seen, acked_upto;
static size_t n_conf, n_delivered, n_dups;
static int round_now;
static wsqt_conn_t *consumer;
static bool publishing;

static bool same(ident_t a, ident_t b)
{
    return a.round == b.round && a.pub == b.pub && a.idx == b.idx;
}

/* Finds the publish a payload came from, by its "k<pub>r<round>-<idx>-" prefix, and checks that
 * every byte matches. */
static ident_t identify(const unsigned char *data, size_t len, bool binary, uint64_t seq)
{
    char head[48];
    size_t n = len < sizeof(head) - 1 ? len : sizeof(head) - 1;
    memcpy(head, data, n);
    head[n] = '\0';
    int p, r;
    unsigned long i;
    CHECKF(sscanf(head, "k%dr%d-%lu-", &p, &r, &i) == 3 && p >= 0 && p < NPUB && r >= 0 &&
               r <= round_now && i < pipes[r][p].nsent,
           "seq %llu: payload was never published: \"%.40s\"", (unsigned long long)seq, head);
    const wsqt_sent_t *s = &pipes[r][p].sent[i];
    CHECKF(s->len == len && s->binary == binary && memcmp(s->data, data, len) == 0,
           "seq %llu: payload of publish k%dr%d-%lu is corrupted (%zu bytes, expected %zu; %s, "
           "expected %s)",
           (unsigned long long)seq, p, r, i, len, s->len, binary ? "binary" : "text",
           s->binary ? "binary" : "text");
    return (ident_t){(uint16_t)(r + 1), (uint16_t)(p + 1), (uint32_t)(i + 1)};
}

static void on_msg(wsqt_frame_t *fr)
{
    uint64_t seq = fr->f.seq;
    CHECKF(seq >= 1 && seq < MAXSEQ, "seq %llu out of range", (unsigned long long)seq);
    ident_t id = identify(fr->f.data, fr->f.data_len, fr->f.binary, seq);
    if (seq <= highest_seen) {
        CHECKF(same(seen[seq], id), "seq %llu delivered again with a different payload",
               (unsigned long long)seq);
        n_dups++;
        return;
    }
    CHECKF(seq == highest_seen + 1,
           "gap: seq %llu delivered after %llu (the log is gap-free and has no retention)",
           (unsigned long long)seq, (unsigned long long)highest_seen);
    CHECKF(conf[seq].round == 0 || same(conf[seq], id),
           "seq %llu was confirmed for publish k%dr%d-%u but carries another payload",
           (unsigned long long)seq, conf[seq].pub - 1, conf[seq].round - 1, conf[seq].idx - 1);
    seen[seq] = id;
    highest_seen = seq;
    n_delivered++;
}

static void consume(void)
{
    if (consumer == NULL)
        return;
    wsqt_msg_t *m;
    while (wsqt_pending(consumer) > 0 && (m = wsqt_recv(consumer, 0)) != NULL) {
        wsqt_frame_t *fr = wsqt_frame_parse(m);
        wsqt_msg_free(&m);
        CHECKF(strcmp(fr->f.op, "msg") == 0 && strcmp(fr->f.topic, TOPIC) == 0,
               "consumer got an unexpected frame: %s", fr->text);
        on_msg(fr);
        wsqt_frame_free(&fr);
    }
    if (highest_seen >= acked_upto + 50 && wsqt_state(consumer) == WSQT_OPEN) {
        wsqt_ack_upto(consumer, TOPIC, highest_seen);
        acked_upto = highest_seen;
    }
}

static void on_confirms(int r)
{
    for (int p = 0; p < NPUB; p++) {
        wsqt_pipe_t *pp = &pipes[r][p];
        if (pp->c == NULL)
            continue;
        wsqt_pipe_poll(pp);
        for (; processed[r][p] < pp->nreplied; processed[r][p]++) {
            const wsqt_sent_t *s = &pp->sent[processed[r][p]];
            CHECKF(s->seq != 0, "publisher %d: publish refused: %s", p, s->err);
            CHECKF(s->seq < MAXSEQ, "seq too large");
            ident_t id = {(uint16_t)(r + 1), (uint16_t)(p + 1), (uint32_t)(processed[r][p] + 1)};
            CHECKF(conf[s->seq].round == 0, "seq %llu confirmed twice", (unsigned long long)s->seq);
            CHECKF(s->seq > highest_seen || same(seen[s->seq], id),
                   "seq %llu confirmed for k%dr%d-%zu, but delivered with another payload",
                   (unsigned long long)s->seq, p, r, processed[r][p]);
            conf[s->seq] = id;
            n_conf++;
            if (s->seq > max_conf)
                max_conf = s->seq;
        }
    }
}

static void busy(void *arg)
{
    (void)arg;
    consume();
    on_confirms(round_now);
    if (!publishing)
        return;
    char buf[700];
    for (int p = 0; p < NPUB; p++) {
        wsqt_pipe_t *pp = &pipes[round_now][p];
        if (pp->c == NULL)
            continue;
        char tag[16];
        snprintf(tag, sizeof(tag), "k%dr%d", p, round_now);
        while (wsqt_state(pp->c) == WSQT_OPEN && wsqt_pipe_inflight(pp) < pp->window) {
            bool bin = wsqt_rand(2);
            size_t len = wsqt_payload(buf, wsqt_rand(600), tag, pp->nsent, bin);
            wsqt_pipe_send(pp, buf, len, bin);
        }
    }
}

/* Connects the consumer and checks the topic against everything confirmed or delivered. */
static void resume_consumer(int port)
{
    wsqt_conn_t *c = wsqt_open_v1(port);
    wsqt_frame_t *fr = wsqt_sub(
        c, TOPIC, &(wsqt_sub_opts_t){.consumer = "k11c", .from = WSQ_FROM_EARLIEST, .window = 500});
    uint64_t last = (uint64_t)wsqt_jint(fr->j, "next_seq") - 1;
    if (last > 0)
        EQ_INT(wsqt_jint(fr->j, "first_seq"), 1);
    wsqt_frame_free(&fr);
    CHECKF(last >= max_conf,
           "DATA LOSS: after kill -9 the topic ends at seq %llu, but seq %llu "
           "was confirmed",
           (unsigned long long)last, (unsigned long long)max_conf);
    CHECKF(last >= highest_seen,
           "DATA LOSS: after kill -9 the topic ends at seq %llu, but seq %llu "
           "was delivered before the kill",
           (unsigned long long)last, (unsigned long long)highest_seen);
    acked_upto = 0;
    consumer = c; /* only now: the idle hook takes its frames from here on */
}

static bool first_confirm(void *arg)
{
    (void)arg;
    return max_conf > 0;
}

static bool caught_up(void *arg)
{
    consume();
    return highest_seen >= *(uint64_t *)arg;
}

int main(int argc, char **argv)
{
    wsqt_init(argc, argv, "11_kill9_durability", 240);
    conf = calloc(MAXSEQ, sizeof(*conf));
    seen = calloc(MAXSEQ, sizeof(*seen));
    CHECK(conf && seen);
    wsqt_server_t *srv = wsqt_server_start(NULL);
    wsqt_set_idle(busy, NULL);

    for (round_now = 0; round_now < ROUNDS; round_now++) {
        int port = wsqt_server_port(srv);
        resume_consumer(port);
        for (int p = 0; p < NPUB; p++)
            wsqt_pipe_init(&pipes[round_now][p], wsqt_open_v1(port), TOPIC, 20);
        publishing = true;
        if (round_now == 0) /* the store must have been written at least once */
            CHECKF(wsqt_wait(T_MS, first_confirm, NULL), "no publish was confirmed in %d ms", T_MS);
        int ms = 100 + (int)wsqt_rand(500);
        wsqt_sleep(ms);
        wsqt_server_kill(srv);
        publishing = false;
        size_t sent = 0, ok = 0;
        for (int p = 0; p < NPUB; p++) {
            sent += pipes[round_now][p].nsent;
            ok += pipes[round_now][p].nok;
        }
        wsqt_log("round %d: SIGKILL after %d ms: %zu sent, %zu confirmed; max confirmed seq %llu, "
                 "consumer at %llu",
                 round_now, ms, sent, ok, (unsigned long long)max_conf,
                 (unsigned long long)highest_seen);
        wsqt_sleep(50); /* lws notices the dead connections */
        on_confirms(round_now);
        consume();
        for (int p = 0; p < NPUB; p++)
            wsqt_free(&pipes[round_now][p].c);
        wsqt_free(&consumer);
        wsqt_server_restart(srv);
    }
    round_now = ROUNDS - 1;

    wsqt_log("final resume: the consumer must catch up to every confirmed seq");
    resume_consumer(wsqt_server_port(srv));
    uint64_t target = max_conf;
    CHECKF(wsqt_wait(T_MS, caught_up, &target),
           "the resumed consumer stopped at seq %llu; confirmed up to %llu",
           (unsigned long long)highest_seen, (unsigned long long)max_conf);
    size_t missing = 0;
    for (uint64_t s = 1; s <= max_conf; s++)
        if (conf[s].round && !same(conf[s], seen[s]))
            missing++;
    EQ_U64(missing, 0);
    wsqt_log("%zu confirmed, %zu delivered, %zu redeliveries, topic at seq %llu", n_conf,
             n_delivered, n_dups, (unsigned long long)highest_seen);
    wsqt_set_idle(NULL, NULL);
    wsqt_free(&consumer);
    EQ_INT(wsqt_server_stop(srv, 10000 * wsqt_slow()), 0);
    for (int r = 0; r < ROUNDS; r++)
        for (int p = 0; p < NPUB; p++)
            wsqt_pipe_fini(&pipes[r][p]);
    free(conf);
    free(seen);
    wsqt_pass();
}
