/*
 * 13_many_connections: 1000 concurrent subscribers (DESIGN.md: limits.max_connections defaults to
 * 10000; wsqd raises its own descriptor limit).
 *
 * 500 raw-mode connections (from=<seq>) and 500 wsq.v1 connections (sub, confirmed by
 * "subscribed") on one topic; one publisher publishes; every connection receives the message,
 * exactly; wsqd stays responsive: a wsq.v1 ping round trip, a WebSocket ping and GET /healthz
 * answer promptly; a second message reaches everyone too; all close cleanly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "harness.h"

#define T_MS (20000 * wsqt_slow())
#define N 1000
#define TOPIC "m13.fanout"

static wsqt_conn_t *conns[N];

static bool all_closed(void *arg)
{
    (void)arg;
    for (int i = 0; i < N; i++)
        if (wsqt_state(conns[i]) != WSQT_CLOSED)
            return false;
    return true;
}

static bool all_have_messages(void *arg)
{
    size_t want = *(size_t *)arg;
    for (int i = 0; i < N; i++)
        if (wsqt_pending(conns[i]) < want)
            return false;
    return true;
}

static bool pong_arrived(void *arg)
{
    void **a = arg;
    return wsqt_pongs(a[0]) >= *(unsigned *)a[1];
}

/* Every connection must have exactly one message: text, seq `seq`. */
static void check_delivery(uint64_t seq, const char *text)
{
    size_t one = 1;
    if (!wsqt_wait(T_MS, all_have_messages, &one)) {
        int missing = 0;
        for (int i = 0; i < N; i++)
            missing += wsqt_pending(conns[i]) == 0;
        wsqt_fail(__FILE__, __LINE__, "%d of %d connections did not receive seq %llu within %d ms",
                  missing, N, (unsigned long long)seq, T_MS);
    }
    wsqt_sleep(200); /* nothing more may come */
    for (int i = 0; i < N; i++) {
        CHECKF(wsqt_pending(conns[i]) == 1, "connection %d received %zu messages, expected 1", i,
               wsqt_pending(conns[i]));
        wsqt_msg_t *m = wsqt_recv(conns[i], 0);
        if (i % 2 == 0) {
            CHECKF(!m->binary && strcmp((const char *)m->data, text) == 0,
                   "raw connection %d got \"%.60s\"", i, (const char *)m->data);
        } else {
            wsqt_frame_t *fr = wsqt_frame_parse(m);
            CHECKF(strcmp(fr->f.op, "msg") == 0 && fr->f.seq == seq &&
                       strcmp((const char *)fr->f.data, text) == 0,
                   "wsq.v1 connection %d got %s", i, fr->text);
            wsqt_frame_free(&fr);
        }
        wsqt_msg_free(&m);
    }
}

static void check_responsive(wsqt_conn_t *p, int port)
{
    int64_t t0 = wsqt_now_ms();
    wsqt_v1_ping(p, T_MS);
    int64_t rtt = wsqt_now_ms() - t0;
    CHECKF(rtt < 1000 * wsqt_slow(), "wsq.v1 ping round trip took %lld ms with %d connections",
           (long long)rtt, N);
    unsigned want = wsqt_pongs(p) + 1;
    void *arg[2] = {p, &want};
    t0 = wsqt_now_ms();
    wsqt_ping(p);
    CHECKF(wsqt_wait(T_MS, pong_arrived, arg), "no WebSocket pong");
    int64_t wrtt = wsqt_now_ms() - t0;
    CHECKF(wrtt < 1000 * wsqt_slow(), "WebSocket ping round trip took %lld ms", (long long)wrtt);
    wsqt_http_resp_t r;
    t0 = wsqt_now_ms();
    wsqt_http(port, "GET", "/healthz", NULL, NULL, 0, &r);
    int64_t hrtt = wsqt_now_ms() - t0;
    EQ_INT(r.status, 200);
    json_t *j = json_loads(r.body, 0, NULL);
    CHECKF(j != NULL, "/healthz body is not JSON: %s", r.body);
    EQ_STR(wsqt_jstr(j, "status"), "ok");
    json_decref(j);
    wsqt_http_free(&r);
    CHECKF(hrtt < 1000 * wsqt_slow(), "GET /healthz took %lld ms", (long long)hrtt);
    wsqt_log("responsive: wsq.v1 ping %lld ms, WebSocket ping %lld ms, /healthz %lld ms",
             (long long)rtt, (long long)wrtt, (long long)hrtt);
}

int main(int argc, char **argv)
{
    wsqt_init(argc, argv, "13_many_connections", 120);
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    CHECKF(rl.rlim_cur >= N + 200, "RLIMIT_NOFILE is %llu (hard %llu): too low for %d connections",
           (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, N);
    wsqt_server_t *srv = wsqt_server_start(NULL);
    int port = wsqt_server_port(srv);
    wsqt_conn_t *p = wsqt_open_v1(port);
    EQ_U64(wsqt_pub_text(p, TOPIC, "before"), 1);

    wsqt_log("opening %d connections", N);
    int64_t t0 = wsqt_now_ms();
    for (int base = 0; base < N; base += 100) {
        for (int i = base; i < base + 100; i++) {
            wsqt_connect_opts_t o = {.subprotocol = i % 2 ? WSQ_SUBPROTOCOL : NULL};
            conns[i] = wsqt_connect_async(port, i % 2 ? "/" : "/topics/" TOPIC "?from=2", &o);
        }
        for (int i = base; i < base + 100; i++) {
            CHECKF(wsqt_wait_connected(conns[i], T_MS), "connection %d: no answer", i);
            CHECKF(wsqt_state(conns[i]) == WSQT_OPEN, "connection %d failed: HTTP %d %s", i,
                   wsqt_http_status(conns[i]), wsqt_error(conns[i]));
        }
    }
    wsqt_log("%d connections open after %lld ms; subscribing the wsq.v1 half", N,
             (long long)(wsqt_now_ms() - t0));
    for (int i = 1; i < N; i += 2) {
        char sub[128];
        snprintf(sub, sizeof(sub), "{\"op\":\"sub\",\"topic\":\"%s\",\"ref\":%d}", TOPIC, i);
        wsqt_send(conns[i], sub, strlen(sub), false);
    }
    for (int i = 1; i < N; i += 2) {
        char ref[16];
        snprintf(ref, sizeof(ref), "%d", i);
        wsqt_frame_t *fr = wsqt_wait_op(conns[i], "subscribed", ref, T_MS);
        EQ_INT(wsqt_jint(fr->j, "next_seq"), 2);
        wsqt_frame_free(&fr);
    }
    wsqt_log("all subscribed after %lld ms", (long long)(wsqt_now_ms() - t0));
    check_responsive(p, port);

    wsqt_log("one publish reaches all %d", N);
    t0 = wsqt_now_ms();
    EQ_U64(wsqt_pub_text(p, TOPIC, "hello-13"), 2);
    check_delivery(2, "hello-13");
    wsqt_log("fan-out to %d took %lld ms (including 200 ms of waiting for extras)", N,
             (long long)(wsqt_now_ms() - t0));
    check_responsive(p, port);
    EQ_U64(wsqt_pub_text(p, TOPIC, "again-13"), 3);
    check_delivery(3, "again-13");

    wsqt_log("closing all");
    for (int i = 0; i < N; i++)
        wsqt_close(conns[i], 1000, "", 0);
    CHECKF(wsqt_wait(T_MS, all_closed, NULL), "not every connection closed cleanly");
    for (int i = 0; i < N; i++)
        wsqt_free(&conns[i]);
    check_responsive(p, port);
    wsqt_free(&p);
    EQ_INT(wsqt_server_stop(srv, 10000 * wsqt_slow()), 0);
    wsqt_pass();
}
