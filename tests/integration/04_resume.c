/*
 * 04_resume: a durable consumer resumes (docs/PROTOCOL.md "sub", "msg", "ack").
 *
 * A consumer receives seqs 1..10, acknowledges 2 and 5 individually and everything up to 3 with
 * upto, and disconnects. Meanwhile 11..13 are published. The resumed subscription says
 * "resumed":true and start_seq 4, then delivers the unacknowledged 4, 6, 7, 8, 9, 10 (each with
 * "deliveries":2) before the new 11, 12, 13 (no deliveries member), in seq order; `from` is
 * ignored for an existing consumer. The same again across a graceful wsqd restart, and after a
 * dropped TCP connection. A second consumer on the same topic keeps its own position.
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"

#define T_MS (5000 * wsqt_slow())
#define TOPIC "r04.orders"

static char payload[64][32];

static void expect(wsqt_conn_t *c, uint64_t seq, uint32_t deliveries)
{
    wsqt_frame_t *fr = wsqt_expect_msg(c, TOPIC, seq, payload[seq], strlen(payload[seq]),
                                       seq % 4 == 0, deliveries, T_MS);
    wsqt_frame_free(&fr);
}

static void check_subscribed(wsqt_frame_t *fr, bool resumed, uint64_t start, uint64_t next)
{
    static const char *const keys[] = {"op",     "ref",       "topic",    "consumer",
                                       "epoch",  "first_seq", "next_seq", "start_seq",
                                       "window", "resumed",   NULL};
    wsqt_jkeys(fr->j, keys);
    EQ_INT(wsqt_jbool(fr->j, "resumed"), resumed);
    EQ_INT(wsqt_jint(fr->j, "first_seq"), 1);
    EQ_INT(wsqt_jint(fr->j, "next_seq"), next);
    EQ_INT(wsqt_jint(fr->j, "start_seq"), start);
}

static void publish(wsqt_conn_t *p, uint64_t from, uint64_t to)
{
    for (uint64_t s = from; s <= to; s++) {
        snprintf(payload[s], sizeof(payload[s]), "order-%llu", (unsigned long long)s);
        EQ_U64(wsqt_pub(p, TOPIC, payload[s], strlen(payload[s]), s % 4 == 0), s);
    }
}

int main(int argc, char **argv)
{
    wsqt_init(argc, argv, "04_resume", 60);
    wsqt_server_t *srv = wsqt_server_start(NULL);
    int port = wsqt_server_port(srv);
    wsqt_conn_t *p = wsqt_open_v1(port);
    publish(p, 1, 10);

    wsqt_log("first session: receive 1..10, ack 2, 5 and upto 3");
    wsqt_conn_t *c = wsqt_open_v1(port);
    wsqt_sub_opts_t so = {.consumer = "alice", .from = WSQ_FROM_EARLIEST, .window = 100};
    wsqt_frame_t *fr = wsqt_sub(c, TOPIC, &so);
    check_subscribed(fr, false, 1, 11);
    const char *epoch = wsqt_jstr(fr->j, "epoch");
    char epoch1[17];
    snprintf(epoch1, sizeof(epoch1), "%s", epoch);
    wsqt_frame_free(&fr);
    for (uint64_t s = 1; s <= 10; s++)
        expect(c, s, 1);
    wsqt_expect_silence(c, 200);
    wsqt_ack(c, TOPIC, 2);
    wsqt_ack(c, TOPIC, 5);
    wsqt_ack_upto(c, TOPIC, 3);
    wsqt_v1_ping(c, T_MS); /* the acks were read before the close */
    wsqt_close(c, 1000, "", T_MS);
    wsqt_free(&c);
    publish(p, 11, 13);

    wsqt_log("resume: unacked 4,6..10 with deliveries 2, then 11..13");
    c = wsqt_open_v1(port);
    so.from = WSQ_FROM_EARLIEST; /* ignored: the consumer exists */
    fr = wsqt_sub(c, TOPIC, &so);
    check_subscribed(fr, true, 4, 14);
    EQ_STR(wsqt_jstr(fr->j, "epoch"), epoch1);
    wsqt_frame_free(&fr);
    const uint64_t unacked[] = {4, 6, 7, 8, 9, 10};
    for (size_t i = 0; i < 6; i++)
        expect(c, unacked[i], 2);
    for (uint64_t s = 11; s <= 13; s++)
        expect(c, s, 1);
    wsqt_expect_silence(c, 200);

    wsqt_log("ack 4 and 6..11 upto, leave 12, 13; restart wsqd gracefully");
    wsqt_ack(c, TOPIC, 4);
    wsqt_ack_upto(c, TOPIC, 11);
    wsqt_v1_ping(c, T_MS);
    wsqt_free(&c);
    wsqt_free(&p);
    EQ_INT(wsqt_server_stop(srv, 10000 * wsqt_slow()), 0);
    wsqt_server_restart(srv);
    port = wsqt_server_port(srv);
    p = wsqt_open_v1(port);
    publish(p, 14, 15);
    c = wsqt_open_v1(port);
    so.from = WSQ_FROM_LATEST; /* ignored as well */
    fr = wsqt_sub(c, TOPIC, &so);
    check_subscribed(fr, true, 12, 16);
    EQ_STR(wsqt_jstr(fr->j, "epoch"), epoch1);
    wsqt_frame_free(&fr);
    expect(c, 12, 2);
    expect(c, 13, 2);
    expect(c, 14, 1);
    expect(c, 15, 1);
    wsqt_expect_silence(c, 200);

    wsqt_log("dropped TCP connection: unacked redelivered with deliveries 3 and 2");
    wsqt_ack_upto(c, TOPIC, 12);
    wsqt_v1_ping(c, T_MS);
    wsqt_drop(c);
    wsqt_free(&c);
    publish(p, 16, 16);
    c = wsqt_open_v1(port);
    so.from = WSQ_FROM_RESUME;
    fr = wsqt_sub(c, TOPIC, &so);
    check_subscribed(fr, true, 13, 17);
    wsqt_frame_free(&fr);
    expect(c, 13, 3);
    expect(c, 14, 2);
    expect(c, 15, 2);
    expect(c, 16, 1);
    wsqt_expect_silence(c, 200);

    wsqt_log("live delivery continues; a second consumer has its own position");
    publish(p, 17, 17);
    expect(c, 17, 1);
    wsqt_conn_t *c2 = wsqt_open_v1(port);
    fr = wsqt_sub(c2, TOPIC,
                  &(wsqt_sub_opts_t){.consumer = "bob", .from = WSQ_FROM_SEQ, .from_seq = 15});
    check_subscribed(fr, false, 15, 18);
    wsqt_frame_free(&fr);
    expect(c2, 15, 1);
    expect(c2, 16, 1);
    expect(c2, 17, 1);
    /* a new consumer with from "resume" starts at latest */
    wsqt_conn_t *c3 = wsqt_open_v1(port);
    fr = wsqt_sub(c3, TOPIC, &(wsqt_sub_opts_t){.consumer = "carol", .from = WSQ_FROM_RESUME});
    check_subscribed(fr, false, 18, 18);
    wsqt_frame_free(&fr);
    wsqt_expect_silence(c3, 200);
    publish(p, 18, 18);
    expect(c, 18, 1);
    expect(c2, 18, 1);
    expect(c3, 18, 1);

    wsqt_log("unsub keeps the position; a re-sub on the same connection resumes");
    wsqt_ack_upto(c, TOPIC, 17);
    const char *r = wsqt_new_ref();
    char ref[24];
    snprintf(ref, sizeof(ref), "%s", r);
    char unsub[128];
    snprintf(unsub, sizeof(unsub), "{\"op\":\"unsub\",\"topic\":\"%s\",\"ref\":%s}", TOPIC, ref);
    wsqt_send(c, unsub, strlen(unsub), false);
    fr = wsqt_wait_op(c, "ok", ref, T_MS);
    static const char *const okkeys[] = {"op", "ref", "topic", NULL};
    wsqt_jkeys(fr->j, okkeys);
    EQ_STR(wsqt_jstr(fr->j, "topic"), TOPIC);
    wsqt_frame_free(&fr);
    publish(p, 19, 19);
    wsqt_expect_silence(c, 200);
    fr = wsqt_sub(c, TOPIC, &so);
    check_subscribed(fr, true, 18, 20);
    wsqt_frame_free(&fr);
    expect(c, 18, 2);
    expect(c, 19, 1);
    wsqt_expect_silence(c, 200);

    wsqt_free(&c);
    wsqt_free(&c2);
    wsqt_free(&c3);
    wsqt_free(&p);
    EQ_INT(wsqt_server_stop(srv, 10000 * wsqt_slow()), 0);
    wsqt_pass();
}
