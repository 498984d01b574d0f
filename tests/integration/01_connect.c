/*
 * 01_connect: subprotocol negotiation and upgrade refusals (docs/PROTOCOL.md "Raw mode",
 * "Upgrade refusals", "wsq.v1", "ping").
 *
 * - "wsq.v1" is chosen when the client asks for it, on "/" and on any other path, also when it
 *   is not the first name offered;
 * - with no subprotocol, /topics/<topic> is raw mode and the answer names no subprotocol;
 * - refused upgrades get a real HTTP/1.1 status with a JSON error body and Connection: close:
 *   404 (no subprotocol, not /topics/<topic>), 400 (bad topic, unknown or bad query parameter),
 *   401 (invalid credentials), 403 (neither right on the topic);
 * - {"op":"ping"} is answered by {"op":"pong"} echoing the ref; WebSocket pings get pongs.
 */
#include <string.h>

#include "harness.h"

#define T_MS (5000 * wsqt_slow())

static const char *upgrade_headers = "Upgrade: websocket\r\n"
                                     "Connection: Upgrade\r\n"
                                     "Sec-WebSocket-Version: 13\r\n"
                                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/* An upgrade that must be refused: through the lws client (status from the failed handshake)
 * and through a plain socket (status line, Connection: close, JSON body with the code). */
static void expect_refused(int port, const char *path, const char *headers, int status,
                           const char *code)
{
    wsqt_connect_opts_t o = {.subprotocol = NULL, .headers = headers};
    wsqt_conn_t *c = wsqt_connect(port, path, &o);
    CHECKF(wsqt_state(c) == WSQT_FAILED, "upgrade to %s was accepted; expected HTTP %d", path,
           status);
    CHECKF(wsqt_http_status(c) == status, "upgrade to %s: lws client saw HTTP %d (%s), expected %d",
           path, wsqt_http_status(c), wsqt_error(c), status);
    wsqt_free(&c);

    char hdrs[1024];
    snprintf(hdrs, sizeof(hdrs), "%s%s", upgrade_headers, headers ? headers : "");
    wsqt_http_resp_t r;
    wsqt_http(port, "GET", path, hdrs, NULL, 0, &r);
    char want[64];
    snprintf(want, sizeof(want), "HTTP/1.1 %d ", status);
    CHECKF(strncmp(r.status_line, want, strlen(want)) == 0,
           "upgrade to %s: status line \"%s\", expected \"%s...\"", path, r.status_line, want);
    CHECKF(strstr(r.headers, "\r\nconnection: close") != NULL,
           "upgrade refusal to %s without Connection: close:\n%s", path, r.headers);
    json_error_t jerr;
    json_t *j = json_loads(r.body, 0, &jerr);
    CHECKF(j != NULL, "upgrade refusal to %s: body is not JSON: %s", path, r.body);
    static const char *const top[] = {"error", NULL};
    wsqt_jkeys(j, top);
    const json_t *e = json_object_get(j, "error");
    static const char *const inner[] = {"code", "message", NULL};
    wsqt_jkeys(e, inner);
    EQ_STR(wsqt_jstr(e, "code"), code);
    CHECK(strlen(wsqt_jstr(e, "message")) > 0);
    json_decref(j);
    wsqt_http_free(&r);
}

static void expect_pong(wsqt_conn_t *c, const char *ping, const char *ref)
{
    wsqt_send(c, ping, strlen(ping), false);
    wsqt_frame_t *fr = wsqt_next_frame(c, T_MS);
    EQ_STR(fr->f.op, "pong");
    if (ref) {
        static const char *const keys[] = {"op", "ref", NULL};
        wsqt_jkeys(fr->j, keys);
        EQ_STR(fr->f.ref, ref);
    } else {
        static const char *const keys[] = {"op", NULL};
        wsqt_jkeys(fr->j, keys);
    }
    wsqt_frame_free(&fr);
}

static bool pong_count_at_least(void *arg)
{
    void **a = arg;
    return wsqt_pongs(a[0]) >= *(unsigned *)a[1];
}

static void ws_ping(wsqt_conn_t *c)
{
    unsigned want = wsqt_pongs(c) + 1;
    void *arg[2] = {c, &want};
    wsqt_ping(c);
    CHECKF(wsqt_wait(T_MS, pong_count_at_least, arg), "no WebSocket pong within %d ms", T_MS);
}

int main(int argc, char **argv)
{
    wsqt_init(argc, argv, "01_connect", 60);
    wsqt_conf_t conf = {
        .auth = "  anonymous:\n"
                "    publish: [\"c01.>\", \"c01/>\"]\n"
                "    subscribe: [\"c01.>\", \"c01/>\", \"sub.only.>\"]\n"
                "    admin: false\n"
                "  tokens: []\n",
    };
    wsqt_server_t *srv = wsqt_server_start(&conf);
    int port = wsqt_server_port(srv);

    wsqt_log("wsq.v1 is chosen when asked for");
    wsqt_conn_t *v1 = wsqt_open(port, "/", "wsq.v1");
    EQ_STR(wsqt_protocol(v1), "wsq.v1");
    wsqt_conn_t *v1b = wsqt_open(port, "/some/other/path?x=1", "wsq.v1");
    EQ_STR(wsqt_protocol(v1b), "wsq.v1");
    wsqt_conn_t *v1c = wsqt_open(port, "/", "x-unknown.v9, wsq.v1");
    EQ_STR(wsqt_protocol(v1c), "wsq.v1");
    /* a wsq.v1 connection on a /topics/ path is still wsq.v1, not raw mode */
    wsqt_conn_t *v1d = wsqt_open(port, "/topics/c01.x", "wsq.v1");
    EQ_STR(wsqt_protocol(v1d), "wsq.v1");
    wsqt_v1_ping(v1d, T_MS);

    wsqt_log("raw mode when no subprotocol is asked for");
    wsqt_conn_t *raw = wsqt_open(port, "/topics/c01.raw", NULL);
    EQ_STR(wsqt_protocol(raw), "");
    wsqt_conn_t *raw2 = wsqt_open(port, "/topics/c01/raw/slashes?from=earliest", NULL);
    EQ_STR(wsqt_protocol(raw2), "");
    /* subscribe-only rights are enough to connect */
    wsqt_conn_t *raw3 = wsqt_open(port, "/topics/sub.only.t", NULL);
    EQ_STR(wsqt_protocol(raw3), "");

    wsqt_log("upgrade refusals");
    expect_refused(port, "/nope", NULL, 404, "not_found");
    expect_refused(port, "/", NULL, 404, "not_found");
    expect_refused(port, "/topicsx/c01.a", NULL, 404, "not_found");
    expect_refused(port, "/topics/c01..bad", NULL, 400, "bad_topic");
    expect_refused(port, "/topics/c01.bad%20topic", NULL, 400, "bad_topic");
    expect_refused(port, "/topics/.c01", NULL, 400, "bad_topic");
    expect_refused(port, "/topics/c01.a?bogus=1", NULL, 400, "bad_request");
    expect_refused(port, "/topics/c01.a?from=yesterday", NULL, 400, "bad_request");
    expect_refused(port, "/topics/c01.a?consumer=bad%20name", NULL, 400, "bad_request");
    expect_refused(port, "/topics/c01.a", "Authorization: Bearer not-a-valid-token\r\n", 401,
                   "unauthorized");
    expect_refused(port, "/topics/other.topic", NULL, 403, "forbidden");

    wsqt_log("wsq.v1 ping/pong");
    expect_pong(v1, "{\"op\":\"ping\",\"ref\":9}", "9");
    expect_pong(v1, "{\"op\":\"ping\",\"ref\":\"abc\"}", "\"abc\"");
    expect_pong(v1, "{\"op\":\"ping\"}", NULL);
    expect_pong(v1b, "{\"ref\":-4,\"op\":\"ping\",\"future\":{\"x\":[1,2]}}", "-4");
    wsqt_v1_ping(v1c, T_MS);

    wsqt_log("WebSocket ping/pong");
    ws_ping(v1);
    ws_ping(raw);
    ws_ping(raw3);

    wsqt_log("the connections are still usable after all that");
    uint64_t seq = wsqt_pub_text(v1, "c01.raw", "hello");
    EQ_U64(seq, 1);
    wsqt_msg_t *m = wsqt_recv(raw, T_MS);
    CHECKF(m != NULL, "raw subscriber got nothing");
    CHECK(!m->binary);
    EQ_STR((const char *)m->data, "hello");
    wsqt_msg_free(&m);
    /* raw publish: allowed on c01.>, received by the wsq.v1 subscriber */
    wsqt_frame_t *fr =
        wsqt_sub(v1b, "c01.raw", &(wsqt_sub_opts_t){.from = WSQ_FROM_SEQ, .from_seq = 2});
    EQ_INT(wsqt_jint(fr->j, "next_seq"), 2);
    wsqt_frame_free(&fr);
    wsqt_send(raw, "from raw", 8, false);
    fr = wsqt_expect_msg(v1b, "c01.raw", 2, "from raw", 8, false, 1, T_MS);
    wsqt_frame_free(&fr);

    wsqt_log("clean closes");
    wsqt_conn_t *all[] = {v1, v1b, v1c, v1d, raw, raw2, raw3};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        wsqt_close(all[i], 1000, "bye", T_MS);
        CHECK(wsqt_state(all[i]) == WSQT_CLOSED);
        wsqt_free(&all[i]);
    }
    EQ_INT(wsqt_server_stop(srv, 10000 * wsqt_slow()), 0);
    wsqt_pass();
}
