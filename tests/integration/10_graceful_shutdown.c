/*
 * 10_graceful_shutdown: SIGTERM while clients publish and subscribe (docs/PROTOCOL.md "Close
 * codes" 1001: "wsqd is stopping: every confirmed publish is durable, queued frames were sent
 * first"; wsqd(8): SIGTERM shuts down gracefully, exit status 0).
 *
 * Three wsq.v1 publishers (confirms, 32 in flight each), a raw publisher, a raw subscriber and a
 * wsq.v1 subscriber are busy when wsqd gets SIGTERM. Every client must see close 1001
 * "server shutdown"; wsqd must exit 0 within limits.shutdown_timeout (3s here); after a restart
 * every confirmed message is there with its exact payload, and what the raw publisher sent is
 * stored as an intact prefix of what it sent, in order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define T_MS (5000 * wsqt_slow())
#define NPUB 3
#define SHUTDOWN_MS 3000

static wsqt_pipe_t pipes[NPUB];
static const char *topics[NPUB] = {"g10.a", "g10.b", "g10.c"};
static wsqt_conn_t *rawpub;
static size_t raw_sent;
static bool stop_publishing;

static void busy(void *arg)
{
    (void)arg;
    char buf[512];
    for (int i = 0; i < NPUB; i++) {
        wsqt_pipe_poll(&pipes[i]);
        while (!stop_publishing && wsqt_state(pipes[i].c) == WSQT_OPEN &&
               wsqt_pipe_inflight(&pipes[i]) < pipes[i].window) {
            bool bin = pipes[i].nsent % 3 == 0;
            size_t len = wsqt_payload(buf, wsqt_rand(400), topics[i], pipes[i].nsent, bin);
            wsqt_pipe_send(&pipes[i], buf, len, bin);
        }
    }
    if (!stop_publishing && wsqt_state(rawpub) == WSQT_OPEN && wsqt_tx_pending(rawpub) < 4096) {
        size_t len = (size_t)snprintf(buf, sizeof(buf), "raw-%zu", raw_sent++);
        wsqt_send(rawpub, buf, len, false);
    }
}

static void expect_1001(wsqt_conn_t *c, const char *who)
{
    CHECKF(wsqt_state(c) == WSQT_CLOSED, "%s: still open after wsqd exited", who);
    SOFT_CHECKF(wsqt_close_code(c) == 1001 && strcmp(wsqt_close_reason(c), "server shutdown") == 0,
                "%s: expected close 1001 \"server shutdown\", got %d \"%s\"", who,
                wsqt_close_code(c), wsqt_close_reason(c));
}

int main(int argc, char **argv)
{
    wsqt_init(argc, argv, "10_graceful_shutdown", 90);
    wsqt_conf_t conf = {.limits = "  shutdown_timeout: 3s\n"};
    wsqt_server_t *srv = wsqt_server_start(&conf);
    int port = wsqt_server_port(srv);

    for (int i = 0; i < NPUB; i++)
        wsqt_pipe_init(&pipes[i], wsqt_open_v1(port), topics[i], 32);
    rawpub = wsqt_open(port, "/topics/g10.raw", NULL);
    wsqt_conn_t *rawsub = wsqt_open(port, "/topics/g10.a?from=earliest", NULL);
    wsqt_conn_t *v1sub = wsqt_open_v1(port);
    wsqt_frame_t *fr =
        wsqt_sub(v1sub, "g10.b", &(wsqt_sub_opts_t){.from = WSQ_FROM_EARLIEST, .window = 100});
    wsqt_frame_free(&fr);
    wsqt_conn_t *idle = wsqt_open_v1(port);

    wsqt_set_idle(busy, NULL);
    wsqt_sleep(700);
    for (int i = 0; i < NPUB; i++)
        CHECKF(pipes[i].nok > 0, "publisher %d had no confirm before the shutdown", i);

    wsqt_log("SIGTERM with %zu/%zu/%zu confirmed and %zu raw messages sent", pipes[0].nok,
             pipes[1].nok, pipes[2].nok, raw_sent);
    int64_t t0 = wsqt_now_ms();
    wsqt_server_term(srv);
    int rc = -1;
    while ((rc = wsqt_server_wait_exit(srv, 0)) < 0 &&
           wsqt_now_ms() - t0 < SHUTDOWN_MS + 5000 * wsqt_slow())
        wsqt_sleep(2);
    int64_t took = wsqt_now_ms() - t0;
    CHECKF(rc >= 0, "wsqd did not exit within %lld ms of SIGTERM", (long long)took);
    stop_publishing = true;
    EQ_INT(rc, 0);
    CHECKF(took <= SHUTDOWN_MS + 1000 * wsqt_slow(),
           "wsqd took %lld ms to exit; limits.shutdown_timeout is %d ms", (long long)took,
           SHUTDOWN_MS);
    wsqt_log("wsqd exited 0 after %lld ms", (long long)took);
    wsqt_sleep(100); /* let lws report the closes */
    wsqt_set_idle(NULL, NULL);
    for (int i = 0; i < NPUB; i++) {
        wsqt_pipe_poll(&pipes[i]);
        char who[32];
        snprintf(who, sizeof(who), "publisher %d", i);
        expect_1001(pipes[i].c, who);
        for (size_t k = 0; k < pipes[i].nreplied; k++)
            CHECKF(pipes[i].sent[k].seq || strcmp(pipes[i].sent[k].err, "closed") == 0,
                   "publisher %d: publish %zu refused with %s", i, k, pipes[i].sent[k].err);
    }
    expect_1001(rawpub, "raw publisher");
    expect_1001(rawsub, "raw subscriber");
    expect_1001(v1sub, "wsq.v1 subscriber");
    expect_1001(idle, "idle wsq.v1 connection");

    wsqt_log("restart: every confirmed message is there");
    wsqt_server_restart(srv);
    port = wsqt_server_port(srv);
    wsqt_conn_t *c = wsqt_open_v1(port);
    for (int i = 0; i < NPUB; i++) {
        fr = wsqt_sub(c, topics[i], &(wsqt_sub_opts_t){.from = WSQ_FROM_EARLIEST, .window = 1000});
        uint64_t last = (uint64_t)wsqt_jint(fr->j, "next_seq") - 1;
        wsqt_frame_free(&fr);
        CHECKF(last >= pipes[i].last_seq && last <= pipes[i].nsent,
               "%s ends at seq %llu; confirmed up to %llu, %zu sent", topics[i],
               (unsigned long long)last, (unsigned long long)pipes[i].last_seq, pipes[i].nsent);
        for (uint64_t s = 1; s <= last; s++) {
            const wsqt_sent_t *e = &pipes[i].sent[s - 1];
            if (e->seq)
                EQ_U64(e->seq, s);
            fr = wsqt_expect_msg(c, topics[i], s, e->data, e->len, e->binary, 1, T_MS);
            wsqt_frame_free(&fr);
        }
    }
    fr = wsqt_sub(c, "g10.raw", &(wsqt_sub_opts_t){.from = WSQ_FROM_EARLIEST, .window = 1000});
    uint64_t nraw = (uint64_t)wsqt_jint(fr->j, "next_seq") - 1;
    wsqt_frame_free(&fr);
    CHECKF(nraw >= 1 && nraw <= raw_sent, "g10.raw holds %llu messages; %zu were sent",
           (unsigned long long)nraw, raw_sent);
    for (uint64_t s = 1; s <= nraw; s++) {
        char buf[32];
        snprintf(buf, sizeof(buf), "raw-%llu", (unsigned long long)(s - 1));
        fr = wsqt_expect_msg(c, "g10.raw", s, buf, strlen(buf), false, 1, T_MS);
        wsqt_frame_free(&fr);
    }
    wsqt_log("all confirmed messages back; raw: %llu of %zu stored", (unsigned long long)nraw,
             raw_sent);
    wsqt_free(&c);
    EQ_INT(wsqt_server_stop(srv, 10000 * wsqt_slow()), 0);
    for (int i = 0; i < NPUB; i++) {
        wsqt_free(&pipes[i].c);
        wsqt_pipe_fini(&pipes[i]);
    }
    wsqt_free(&rawpub);
    wsqt_free(&rawsub);
    wsqt_free(&v1sub);
    wsqt_free(&idle);
    wsqt_pass();
}
