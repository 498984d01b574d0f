/*
 * 08_takeover: a second session with the same consumer takes it over (docs/PROTOCOL.md "sub":
 * "the old connection is closed with 4009 consumer taken over by a new session, and its
 * unacknowledged messages are delivered to the new one").
 *
 * Session A receives 1..6 and acks up to 2; session B subscribes with the same consumer: A is
 * closed with 4009 and the exact reason, B gets resumed:true, start_seq 3 and 3..6 with
 * deliveries 2, then new messages; A gets nothing more. C takes over from B likewise. A raw-mode
 * durable consumer is taken over by a wsq.v1 session the same way.
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"

#define T_MS (5000 * wsqt_slow())
#define TOPIC "t08.work"
#define REASON "consumer taken over by a new session"

static void expect(wsqt_conn_t *c, const char *topic, uint64_t seq, uint32_t deliveries)
{
    char buf[48];
    snprintf(buf, sizeof(buf), "%s-%llu", topic, (unsigned long long)seq);
    wsqt_frame_t *fr = wsqt_expect_msg(c, topic, seq, buf, strlen(buf), false, deliveries, T_MS);
    wsqt_frame_free(&fr);
}

static void publish(wsqt_conn_t *p, const char *topic, uint64_t from, uint64_t to)
{
    char buf[48];
    for (uint64_t s = from; s <= to; s++) {
        snprintf(buf, sizeof(buf), "%s-%llu", topic, (unsigned long long)s);
        EQ_U64(wsqt_pub_text(p, topic, buf), s);
    }
}

static void expect_taken_over(wsqt_conn_t *old, const char *who)
{
    CHECKF(wsqt_wait_closed(old, T_MS), "%s was not closed after the takeover", who);
    CHECKF(wsqt_close_code(old) == 4009 && strcmp(wsqt_close_reason(old), REASON) == 0,
           "%s: expected close 4009 \"" REASON "\", got %d \"%s\"", who, wsqt_close_code(old),
           wsqt_close_reason(old));
    wsqt_msg_t *m = wsqt_recv(old, 0);
    CHECKF(m == NULL, "%s got something after its last message: %.200s", who,
           m ? (const char *)m->data : "");
}

int main(int argc, char **argv)
{
    wsqt_init(argc, argv, "08_takeover", 60);
    wsqt_server_t *srv = wsqt_server_start(NULL);
    int port = wsqt_server_port(srv);
    wsqt_conn_t *p = wsqt_open_v1(port);
    publish(p, TOPIC, 1, 6);

    wsqt_log("session A: 1..6, ack upto 2");
    wsqt_conn_t *a = wsqt_open_v1(port);
    wsqt_sub_opts_t so = {.consumer = "tk", .from = WSQ_FROM_EARLIEST, .window = 10};
    wsqt_frame_t *fr = wsqt_sub(a, TOPIC, &so);
    wsqt_frame_free(&fr);
    fr = wsqt_sub(a, "t08.side", &(wsqt_sub_opts_t){.from = WSQ_FROM_LATEST});
    wsqt_frame_free(&fr);
    for (uint64_t s = 1; s <= 6; s++)
        expect(a, TOPIC, s, 1);
    wsqt_ack_upto(a, TOPIC, 2);
    wsqt_v1_ping(a, T_MS);

    wsqt_log("session B takes over: A closed with 4009, B gets 3..6 again");
    wsqt_conn_t *b = wsqt_open_v1(port);
    fr = wsqt_sub(b, TOPIC, &so);
    EQ_INT(wsqt_jbool(fr->j, "resumed"), 1);
    EQ_INT(wsqt_jint(fr->j, "start_seq"), 3);
    wsqt_frame_free(&fr);
    expect_taken_over(a, "session A");
    for (uint64_t s = 3; s <= 6; s++)
        expect(b, TOPIC, s, 2);
    publish(p, TOPIC, 7, 7);
    expect(b, TOPIC, 7, 1);
    wsqt_expect_silence(b, 200);
    CHECKF(wsqt_pending(a) == 0, "session A received something after it was taken over");
    wsqt_free(&a);

    wsqt_log("session C takes over from B");
    wsqt_ack(b, TOPIC, 4);
    wsqt_v1_ping(b, T_MS);
    wsqt_conn_t *c = wsqt_open_v1(port);
    fr = wsqt_sub(c, TOPIC, &so);
    EQ_INT(wsqt_jbool(fr->j, "resumed"), 1);
    EQ_INT(wsqt_jint(fr->j, "start_seq"), 3);
    wsqt_frame_free(&fr);
    expect_taken_over(b, "session B");
    expect(c, TOPIC, 3, 3);
    expect(c, TOPIC, 5, 3);
    expect(c, TOPIC, 6, 3);
    expect(c, TOPIC, 7, 2);
    wsqt_expect_silence(c, 200);
    wsqt_free(&b);

    wsqt_log("a raw durable consumer taken over by a wsq.v1 session");
    publish(p, "t08.raw", 1, 3);
    wsqt_conn_t *r = wsqt_open(port, "/topics/t08.raw?consumer=rk&from=earliest", NULL);
    for (int i = 1; i <= 3; i++) {
        wsqt_msg_t *m = wsqt_recv(r, T_MS);
        CHECKF(m != NULL, "raw consumer: message %d missing", i);
        wsqt_msg_free(&m);
    }
    wsqt_conn_t *d = wsqt_open_v1(port);
    fr = wsqt_sub(d, "t08.raw", &(wsqt_sub_opts_t){.consumer = "rk", .window = 10});
    EQ_INT(wsqt_jbool(fr->j, "resumed"), 1);
    EQ_INT(wsqt_jint(fr->j, "start_seq"), 4);
    wsqt_frame_free(&fr);
    expect_taken_over(r, "raw session");
    wsqt_expect_silence(d, 200); /* raw mode acknowledged 1..3 when it wrote them */
    publish(p, "t08.raw", 4, 4);
    expect(d, "t08.raw", 4, 1);
    wsqt_free(&r);

    wsqt_free(&c);
    wsqt_free(&d);
    wsqt_free(&p);
    EQ_INT(wsqt_server_stop(srv, 10000 * wsqt_slow()), 0);
    wsqt_pass();
}
