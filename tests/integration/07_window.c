/*
 * 07_window: flow control by window (docs/PROTOCOL.md "sub" window, "ack").
 *
 * limits: default_window 8, max_window 50.
 * - a durable consumer with window 5 and 20 messages waiting gets exactly 5; acking one frees
 *   one slot; a cumulative ack frees as many as it acknowledges;
 * - a cumulative ack above the last delivered seq never acknowledges undelivered messages;
 * - a resumed consumer with a smaller window gets only that many redeliveries;
 * - without a window the subscription gets limits.default_window; above limits.max_window the
 *   sub is refused with limit_exceeded (exactly at it is accepted);
 * - an ephemeral subscription with window 1 still gets every message (the window counts
 *   unwritten messages, not unacknowledged ones).
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"

#define T_MS (5000 * wsqt_slow())
#define TOPIC "w07.flow"

static void expect(wsqt_conn_t *c, uint64_t seq, uint32_t deliveries)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "m%llu", (unsigned long long)seq);
    wsqt_frame_t *fr = wsqt_expect_msg(c, TOPIC, seq, buf, strlen(buf), false, deliveries, T_MS);
    wsqt_frame_free(&fr);
}

static void expect_range(wsqt_conn_t *c, uint64_t from, uint64_t to, uint32_t deliveries)
{
    for (uint64_t s = from; s <= to; s++)
        expect(c, s, deliveries);
}

int main(int argc, char **argv)
{
    wsqt_init(argc, argv, "07_window", 60);
    wsqt_conf_t conf = {.limits = "  default_window: 8\n  max_window: 50\n"};
    wsqt_server_t *srv = wsqt_server_start(&conf);
    int port = wsqt_server_port(srv);
    wsqt_conn_t *p = wsqt_open_v1(port);
    char buf[32];
    for (uint64_t s = 1; s <= 20; s++) {
        snprintf(buf, sizeof(buf), "m%llu", (unsigned long long)s);
        EQ_U64(wsqt_pub_text(p, TOPIC, buf), s);
    }

    wsqt_log("window 5: exactly 5 until acks free slots");
    wsqt_conn_t *c = wsqt_open_v1(port);
    wsqt_sub_opts_t so = {.consumer = "wc", .from = WSQ_FROM_EARLIEST, .window = 5};
    wsqt_frame_t *fr = wsqt_sub(c, TOPIC, &so);
    wsqt_frame_free(&fr);
    expect_range(c, 1, 5, 1);
    wsqt_expect_silence(c, 500);
    wsqt_ack(c, TOPIC, 3);
    expect(c, 6, 1);
    wsqt_expect_silence(c, 300);
    wsqt_ack_upto(c, TOPIC, 5); /* acknowledges 1, 2, 4, 5: four slots */
    expect_range(c, 7, 10, 1);
    wsqt_expect_silence(c, 300);

    wsqt_log("ack upto 20 acknowledges only what was delivered (6..10)");
    wsqt_ack_upto(c, TOPIC, 20);
    expect_range(c, 11, 15, 1);
    wsqt_expect_silence(c, 300);
    wsqt_ack_upto(c, TOPIC, 15);
    expect_range(c, 16, 20, 1);
    wsqt_expect_silence(c, 300);

    wsqt_log("resume with window 3: 3 redeliveries, then one per ack");
    wsqt_free(&c);
    c = wsqt_open_v1(port);
    so.window = 3;
    fr = wsqt_sub(c, TOPIC, &so);
    EQ_INT(wsqt_jbool(fr->j, "resumed"), 1);
    EQ_INT(wsqt_jint(fr->j, "start_seq"), 16);
    wsqt_frame_free(&fr);
    expect_range(c, 16, 18, 2);
    wsqt_expect_silence(c, 300);
    wsqt_ack(c, TOPIC, 17);
    expect(c, 19, 2);
    wsqt_expect_silence(c, 300);
    wsqt_ack_upto(c, TOPIC, 19);
    expect(c, 20, 2);
    wsqt_ack(c, TOPIC, 20);
    snprintf(buf, sizeof(buf), "m21");
    EQ_U64(wsqt_pub_text(p, TOPIC, buf), 21);
    expect(c, 21, 1);
    wsqt_free(&c);

    wsqt_log("default window and max_window");
    c = wsqt_open_v1(port);
    fr = wsqt_sub(c, TOPIC, &(wsqt_sub_opts_t){.from = WSQ_FROM_LATEST});
    EQ_INT(wsqt_jint(fr->j, "window"), 8);
    wsqt_frame_free(&fr);
    fr = wsqt_sub_reply(c, "w07.other", &(wsqt_sub_opts_t){.consumer = "big", .window = 51});
    CHECKF(strcmp(fr->f.op, "err") == 0 && strcmp(fr->f.code, "limit_exceeded") == 0,
           "window 51 above max_window 50: expected err limit_exceeded, got %s", fr->text);
    wsqt_frame_free(&fr);
    fr = wsqt_sub(c, "w07.other", &(wsqt_sub_opts_t){.consumer = "big", .window = 50});
    wsqt_frame_free(&fr);
    /* the refused sub created nothing: the consumer "big" was new at the accepted sub */
    fr = wsqt_sub_reply(c, "w07.third", &(wsqt_sub_opts_t){.window = 1000000});
    CHECKF(strcmp(fr->f.op, "err") == 0 && strcmp(fr->f.code, "limit_exceeded") == 0,
           "window 1000000: expected err limit_exceeded, got %s", fr->text);
    wsqt_frame_free(&fr);
    wsqt_free(&c);

    wsqt_log("ephemeral window 1: the flow continues without acks");
    c = wsqt_open_v1(port);
    fr = wsqt_sub(c, TOPIC, &(wsqt_sub_opts_t){.from = WSQ_FROM_EARLIEST, .window = 1});
    wsqt_frame_free(&fr);
    expect_range(c, 1, 21, 1);
    wsqt_expect_silence(c, 200);
    EQ_U64(wsqt_pub_text(p, TOPIC, "m22"), 22);
    expect(c, 22, 1);

    wsqt_free(&c);
    wsqt_free(&p);
    EQ_INT(wsqt_server_stop(srv, 10000 * wsqt_slow()), 0);
    wsqt_pass();
}
