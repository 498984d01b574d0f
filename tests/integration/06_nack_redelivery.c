/*
 * 06_nack_redelivery: nack and ack_wait (docs/PROTOCOL.md "nack", "ack").
 *
 * limits.ack_wait is 1s.
 * - nack with a delay: the message comes again no earlier than the delay, with deliveries + 1;
 * - nack without a delay: it comes again at once;
 * - an unacknowledged message is delivered again after ack_wait (deliveries 2, then 3); an ack
 *   stops that;
 * - the nack delay survives a reconnect;
 * - nack on an ephemeral subscription and a delay above 24 h are bad_request.
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"

#define T_MS (5000 * wsqt_slow())
#define TOPIC "n06.jobs"

static char payload[16][32];

static void publish(wsqt_conn_t *p, uint64_t seq)
{
    snprintf(payload[seq], sizeof(payload[seq]), "job-%llu", (unsigned long long)seq);
    EQ_U64(wsqt_pub_text(p, TOPIC, payload[seq]), seq);
}

/* Waits for msg seq with these deliveries; returns the arrival time (ms, monotonic). */
static int64_t expect_at(wsqt_conn_t *c, uint64_t seq, uint32_t deliveries, int timeout_ms)
{
    wsqt_frame_t *fr = wsqt_expect_msg(c, TOPIC, seq, payload[seq], strlen(payload[seq]), false,
                                       deliveries, timeout_ms);
    wsqt_frame_free(&fr);
    return wsqt_now_ms();
}

int main(int argc, char **argv)
{
    wsqt_init(argc, argv, "06_nack_redelivery", 60);
    wsqt_conf_t conf = {.limits = "  ack_wait: 1s\n"};
    wsqt_server_t *srv = wsqt_server_start(&conf);
    int port = wsqt_server_port(srv);
    wsqt_conn_t *p = wsqt_open_v1(port);
    wsqt_conn_t *c = wsqt_open_v1(port);
    wsqt_sub_opts_t so = {.consumer = "worker", .from = WSQ_FROM_EARLIEST, .window = 10};
    wsqt_frame_t *fr = wsqt_sub(c, TOPIC, &so);
    wsqt_frame_free(&fr);

    wsqt_log("nack with delay 1500 ms");
    publish(p, 1);
    expect_at(c, 1, 1, T_MS);
    int64_t t0 = wsqt_now_ms();
    wsqt_nack(c, TOPIC, 1, 1500);
    int64_t t = expect_at(c, 1, 2, T_MS);
    CHECKF(t - t0 >= 1500, "nack delay 1500 ms: redelivered after only %lld ms",
           (long long)(t - t0));
    CHECKF(t - t0 <= 1500 + 2500 * wsqt_slow(), "nack delay 1500 ms: redelivered after %lld ms",
           (long long)(t - t0));
    wsqt_ack(c, TOPIC, 1);

    wsqt_log("nack without delay: again at once");
    publish(p, 2);
    expect_at(c, 2, 1, T_MS);
    t0 = wsqt_now_ms();
    wsqt_nack(c, TOPIC, 2, 0);
    t = expect_at(c, 2, 2, T_MS);
    CHECKF(t - t0 < 700 * wsqt_slow(),
           "nack without delay: redelivered after %lld ms (ack_wait is 1000 ms)",
           (long long)(t - t0));
    wsqt_nack(c, TOPIC, 2, 0);
    expect_at(c, 2, 3, T_MS);
    wsqt_ack(c, TOPIC, 2);
    wsqt_expect_silence(c, 1300); /* acked: neither 1 nor 2 comes back after ack_wait */

    wsqt_log("ack_wait 1s redelivers an unacknowledged message");
    publish(p, 3);
    int64_t t1 = expect_at(c, 3, 1, T_MS);
    t = expect_at(c, 3, 2, T_MS);
    CHECKF(t - t1 >= 900 && t - t1 <= 1000 + 2500 * wsqt_slow(),
           "ack_wait 1s: second delivery %lld ms after the first", (long long)(t - t1));
    int64_t t2 = expect_at(c, 3, 3, T_MS);
    CHECKF(t2 - t >= 900, "ack_wait 1s: third delivery %lld ms after the second",
           (long long)(t2 - t));
    wsqt_ack(c, TOPIC, 3);
    wsqt_expect_silence(c, 1500);

    wsqt_log("the nack delay survives a reconnect");
    publish(p, 4);
    expect_at(c, 4, 1, T_MS);
    t0 = wsqt_now_ms();
    wsqt_nack(c, TOPIC, 4, 2500);
    wsqt_v1_ping(c, T_MS);
    wsqt_close(c, 1000, "", T_MS);
    wsqt_free(&c);
    c = wsqt_open_v1(port);
    fr = wsqt_sub(c, TOPIC, &so);
    EQ_INT(wsqt_jbool(fr->j, "resumed"), 1);
    wsqt_frame_free(&fr);
    t = expect_at(c, 4, 2, T_MS);
    CHECKF(t - t0 >= 2500, "nack delay 2500 ms across a reconnect: redelivered after %lld ms",
           (long long)(t - t0));
    wsqt_ack(c, TOPIC, 4);
    wsqt_expect_silence(c, 300);

    wsqt_log("errors: nack on an ephemeral subscription, delay above 24 h");
    wsqt_conn_t *e = wsqt_open_v1(port);
    fr = wsqt_sub(e, TOPIC, &(wsqt_sub_opts_t){.from = WSQ_FROM_SEQ, .from_seq = 4});
    wsqt_frame_free(&fr);
    expect_at(e, 4, 1, T_MS);
    const char *nack = "{\"op\":\"nack\",\"topic\":\"" TOPIC "\",\"seq\":4,\"ref\":77}";
    wsqt_send(e, nack, strlen(nack), false);
    wsqt_expect_err(e, "bad_request", "77", T_MS);
    nack = "{\"op\":\"nack\",\"topic\":\"" TOPIC "\",\"seq\":4,\"delay\":86400001,\"ref\":78}";
    wsqt_send(c, nack, strlen(nack), false);
    wsqt_expect_err(c, "bad_request", "78", T_MS);
    /* an ack on an ephemeral subscription is accepted and ignored */
    wsqt_ack(e, TOPIC, 4);
    wsqt_v1_ping(e, T_MS);
    wsqt_expect_silence(e, 200);

    wsqt_free(&e);
    wsqt_free(&c);
    wsqt_free(&p);
    EQ_INT(wsqt_server_stop(srv, 10000 * wsqt_slow()), 0);
    wsqt_pass();
}
