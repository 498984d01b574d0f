/*
 * 09_bad_input: isolation (docs/PROTOCOL.md "err", "Error codes", "Close codes").
 *
 * limits.max_message_size is 64 KiB, so a wsq.v1 frame may be 2 x 64 KiB + 64 KiB = 196608
 * bytes. Bad input gets the exact error code, echoing the ref when one could be read, and the
 * connection goes on; WebSocket-level violations close only the offending connection (1009 above
 * the frame cap, 1007 for invalid UTF-8 in a text frame). Throughout, ANOTHER client publishes
 * with confirms, and every one of its publishes is confirmed, in order, and readable afterwards.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define T_MS (5000 * wsqt_slow())
#define MAX_MSG 65536
#define FRAME_CAP (2 * MAX_MSG + 65536)
#define G_TOPIC "b09.good"
#define G_MAX 50000 /* a cap, in case the bad phase is slow */

/* ------------------------------------------------------------------------------------------- */
/* the well-behaved background publisher */

static wsqt_pipe_t G;
static bool g_stop; /* the bad phase is over: publish no more */

static void g_idle(void *arg)
{
    (void)arg;
    wsqt_pipe_poll(&G);
    CHECKF(G.nerr == 0, "the background publisher got an err: %s", G.sent[G.nreplied - 1].err);
    CHECKF(wsqt_state(G.c) == WSQT_OPEN, "the background publisher was disconnected: %d \"%s\"",
           wsqt_close_code(G.c), wsqt_close_reason(G.c));
    /* keep the window full: a steady stream of publishes while the bad clients misbehave */
    while (!g_stop && G.nsent < G_MAX && wsqt_pipe_inflight(&G) < G.window) {
        char buf[128];
        bool bin = G.nsent % 5 == 0;
        size_t len = wsqt_payload(buf, 20 + wsqt_rand(100), "good", G.nsent, bin);
        CHECK(wsqt_pipe_send(&G, buf, len, bin));
    }
}

/* ------------------------------------------------------------------------------------------- */

static void send_text(wsqt_conn_t *c, const char *s)
{
    wsqt_send(c, s, strlen(s), false);
}

/* Sends a frame and expects an err with code and ref (JSON text, or NULL for none). */
static void bad(wsqt_conn_t *c, const char *frame, const char *code, const char *ref)
{
    send_text(c, frame);
    wsqt_expect_err_soft(c, code, ref, T_MS);
}

/* Expects an err whose code is one of two. */
static void bad2(wsqt_conn_t *c, const char *frame, const char *code1, const char *code2)
{
    send_text(c, frame);
    wsqt_frame_t *fr = wsqt_next_frame(c, T_MS);
    SOFT_CHECKF(strcmp(fr->f.op, "err") == 0 &&
                    (strcmp(fr->f.code, code1) == 0 || strcmp(fr->f.code, code2) == 0),
                "frame %.80s: expected err %s or %s, got %s", frame, code1, code2, fr->text);
    wsqt_frame_free(&fr);
}

/* A pub frame whose data member is n bytes of 'a' (text), or n bytes base64-encoded. */
static char *pub_frame(size_t n, bool binary, const char *ref, size_t *outlen)
{
    wsq_frame_t f;
    wsq_frame_init(&f);
    f.op = WSQ_OP_PUB;
    strcpy(f.topic, "b09.big");
    f.topic_len = strlen(f.topic);
    snprintf(f.ref, sizeof(f.ref), "%s", ref);
    f.data = malloc(n + 1);
    CHECK(f.data != NULL);
    memset(f.data, binary ? 0xA5 : 'a', n);
    f.data_len = n;
    f.binary = binary;
    wsq_buf_t b;
    wsq_buf_init(&b);
    CHECK(wsq_proto_encode_client(&f, &b) == WSQ_OK);
    free(f.data);
    *outlen = b.len;
    return (char *)b.data; /* the caller frees */
}

/* A connection that must be closed by wsqd with this code after sending something. */
static void expect_closed(wsqt_conn_t *c, int code, const char *what)
{
    CHECKF(wsqt_wait_closed(c, T_MS), "%s: the connection was not closed", what);
    CHECKF(wsqt_close_code(c) == code, "%s: expected close %d, got %d \"%s\"", what, code,
           wsqt_close_code(c), wsqt_close_reason(c));
    CHECKF(wsqt_close_reason(c)[0] != '\0', "%s: close %d without a reason", what, code);
}

int main(int argc, char **argv)
{
    wsqt_init(argc, argv, "09_bad_input", 90);
    wsqt_conf_t conf = {.limits = "  max_message_size: 64KiB\n"};
    wsqt_server_t *srv = wsqt_server_start(&conf);
    int port = wsqt_server_port(srv);

    wsqt_pipe_init(&G, wsqt_open_v1(port), G_TOPIC, 16);
    wsqt_set_idle(g_idle, NULL);
    wsqt_sleep(100);

    wsqt_log("malformed frames on wsq.v1: err with the exact code, connection stays");
    wsqt_conn_t *b = wsqt_open_v1(port);
    bad(b, "{\"op\":\"pub\",", "bad_json", NULL);
    bad(b, "not json at all", "bad_json", NULL);
    bad(b, "", "bad_json", NULL);
    bad2(b, "[1,2,3]", "bad_request", "bad_type");
    bad(b, "{\"op\":\"frobnicate\",\"ref\":1}", "unknown_op", "1");
    bad(b, "{\"ref\":2,\"topic\":\"b09.x\"}", "bad_request", "2");
    bad(b, "{\"op\":42,\"ref\":3}", "bad_type", "3");
    bad(b, "{\"op\":\"pub\",\"topic\":\"b09.x\",\"data\":5,\"ref\":4}", "bad_type", "4");
    bad(b, "{\"op\":\"sub\",\"topic\":\"b09.x\",\"window\":\"big\",\"ref\":5}", "bad_type", "5");
    bad(b, "{\"op\":\"ack\",\"topic\":\"b09.x\",\"seq\":\"1\",\"ref\":6}", "bad_type", "6");
    bad(b, "{\"op\":\"pub\",\"topic\":\"b09..bad\",\"data\":\"x\",\"ref\":7}", "bad_topic", "7");
    bad(b, "{\"op\":\"sub\",\"topic\":\"\",\"ref\":8}", "bad_topic", "8");
    bad(b, "{\"op\":\"pub\",\"topic\":\"b09.x y\",\"data\":\"x\",\"ref\":\"s9\"}", "bad_topic",
        "\"s9\"");
    bad(b, "{\"op\":\"pub\",\"data\":\"x\",\"ref\":10}", "bad_request", "10");
    bad(b, "{\"op\":\"pub\",\"topic\":\"b09.x\",\"data\":\"AAA\",\"enc\":\"base64\",\"ref\":11}",
        "bad_request", "11");
    bad(b, "{\"op\":\"ack\",\"topic\":\"b09.x\",\"seq\":1,\"upto\":2,\"ref\":12}", "bad_request",
        "12");
    bad(b, "{\"op\":\"sub\",\"topic\":\"b09.x\",\"from\":\"yesterday\",\"ref\":13}", "bad_request",
        "13");
    bad(b, "{\"op\":\"sub\",\"topic\":\"b09.x\",\"consumer\":\"bad name\",\"ref\":14}",
        "bad_request", "14");

    wsqt_log("state errors: not_subscribed, already_subscribed");
    bad(b, "{\"op\":\"ack\",\"topic\":\"b09.none\",\"seq\":1,\"ref\":20}", "not_subscribed", "20");
    bad(b, "{\"op\":\"nack\",\"topic\":\"b09.none\",\"seq\":1,\"ref\":21}", "not_subscribed", "21");
    bad(b, "{\"op\":\"unsub\",\"topic\":\"b09.none\",\"ref\":22}", "not_subscribed", "22");
    wsqt_frame_t *fr = wsqt_sub(b, "b09.sub", &(wsqt_sub_opts_t){.from = WSQ_FROM_LATEST});
    wsqt_frame_free(&fr);
    bad(b, "{\"op\":\"sub\",\"topic\":\"b09.sub\",\"ref\":23}", "already_subscribed", "23");

    wsqt_log("binary frame on wsq.v1: bad_request");
    wsqt_send(b, "\x00\x01\x02garbage\xff", 11, true);
    wsqt_expect_err_soft(b, "bad_request", NULL, T_MS);

    wsqt_log("payload size: exactly max_message_size is accepted, one byte more is too_large");
    size_t len;
    for (int bin = 0; bin <= 1; bin++) {
        char *f = pub_frame(MAX_MSG + 1, bin, "30", &len);
        wsqt_send(b, f, len, false);
        free(f);
        wsqt_expect_err_soft(b, "too_large", "30", T_MS);
        f = pub_frame(MAX_MSG, bin, "31", &len);
        wsqt_send(b, f, len, false);
        free(f);
        fr = wsqt_next_frame(b, T_MS);
        CHECKF(strcmp(fr->f.op, "ok") == 0 && strcmp(fr->f.ref, "31") == 0,
               "a %s payload of exactly max_message_size was refused: %s", bin ? "binary" : "text",
               fr->text);
        wsqt_frame_free(&fr);
    }
    /* a frame of exactly the wsq.v1 frame cap is read (and its payload refused) */
    char *f = pub_frame(FRAME_CAP, false, "32", &len);
    size_t over = len - FRAME_CAP;
    free(f);
    f = pub_frame(FRAME_CAP - over, false, "32", &len);
    EQ_U64(len, FRAME_CAP);
    wsqt_send(b, f, len, false);
    free(f);
    wsqt_expect_err_soft(b, "too_large", "32", T_MS);

    wsqt_log("a frame split into 10 fragments is reassembled");
    const char *frag = "{\"op\":\"pub\",\"topic\":\"b09.frag\",\"data\":\"fragmented\",\"ref\":33}";
    wsqt_send_frags(b, frag, strlen(frag), false, 10);
    fr = wsqt_next_frame(b, T_MS);
    CHECKF(strcmp(fr->f.op, "ok") == 0 && strcmp(fr->f.ref, "33") == 0 && fr->f.seq == 1,
           "fragmented pub: %s", fr->text);
    wsqt_frame_free(&fr);

    wsqt_log("the bad client still works");
    wsqt_v1_ping(b, T_MS);
    EQ_U64(wsqt_pub_text(b, "b09.x", "still fine"), 1);

    wsqt_log("close 1009 above the frame cap (wsq.v1)");
    wsqt_conn_t *b2 = wsqt_open_v1(port);
    f = pub_frame(FRAME_CAP - over + 1, false, "40", &len);
    EQ_U64(len, FRAME_CAP + 1);
    wsqt_send(b2, f, len, false);
    free(f);
    expect_closed(b2, 1009, "wsq.v1 frame of cap + 1 bytes");
    wsqt_free(&b2);
    b2 = wsqt_open_v1(port);
    f = pub_frame(FRAME_CAP, false, "41", &len);
    wsqt_send_frags(b2, f, len, false, 7); /* the cap applies to the reassembled message */
    free(f);
    expect_closed(b2, 1009, "fragmented wsq.v1 message above the cap");
    wsqt_free(&b2);

    wsqt_log("close 1007 for invalid UTF-8 in a text frame");
    wsqt_conn_t *b3 = wsqt_open_v1(port);
    send_text(b3, "{\"op\":\"ping\",\"x\":\"\xff\"}");
    expect_closed(b3, 1007, "wsq.v1 text frame with 0xff");
    wsqt_free(&b3);
    b3 = wsqt_open_v1(port);
    send_text(b3, "{\"op\":\"ping\",\"x\":\"\xed\xa0\x80\"}"); /* a UTF-16 surrogate */
    expect_closed(b3, 1007, "wsq.v1 text frame with an encoded surrogate");
    wsqt_free(&b3);
    b3 = wsqt_open_v1(port);
    const char *trunc = "{\"op\":\"ping\",\"x\":\"\xe2\x9c";
    wsqt_send_frags(b3, trunc, strlen(trunc), false, 3); /* ends inside a sequence */
    expect_closed(b3, 1007, "wsq.v1 text message ending inside a UTF-8 sequence");
    wsqt_free(&b3);

    wsqt_log("raw mode: 1007 and 1009 (cap = max_message_size exactly)");
    wsqt_conn_t *r = wsqt_open(port, "/topics/b09.raw", NULL);
    send_text(r, "abc\xc3\x28");
    expect_closed(r, 1007, "raw text frame with invalid UTF-8");
    wsqt_free(&r);
    char *big = malloc(MAX_MSG + 1);
    CHECK(big != NULL);
    memset(big, 'z', MAX_MSG + 1);
    r = wsqt_open(port, "/topics/b09.raw", NULL);
    wsqt_send(r, big, MAX_MSG + 1, true);
    expect_closed(r, 1009, "raw binary message of max_message_size + 1");
    wsqt_free(&r);
    r = wsqt_open(port, "/topics/b09.raw", NULL);
    wsqt_send_frags(r, big, MAX_MSG + 1, false, 5);
    expect_closed(r, 1009, "fragmented raw text message of max_message_size + 1");
    wsqt_free(&r);
    r = wsqt_open(port, "/topics/b09.raw?from=earliest", NULL);
    wsqt_send(r, big, MAX_MSG, true);
    wsqt_msg_t *m = wsqt_recv(r, T_MS);
    CHECKF(m != NULL && m->binary && m->len == MAX_MSG && memcmp(m->data, big, MAX_MSG) == 0,
           "raw message of exactly max_message_size did not come back intact");
    wsqt_msg_free(&m);
    free(big);
    wsqt_free(&r);

    wsqt_log("the background publisher was never harmed");
    g_stop = true;
    wsqt_set_idle(NULL, NULL);
    wsqt_pipe_drain(&G, 20000 * wsqt_slow());
    EQ_U64(G.nok, G.nsent);
    EQ_U64(G.nerr, 0);
    EQ_U64(G.last_seq, G.nsent); /* the only publisher on its topic: seqs 1..n */
    wsqt_log("%zu confirms, all in order", G.nok);
    wsqt_conn_t *v = wsqt_open_v1(port);
    fr = wsqt_sub(v, G_TOPIC, &(wsqt_sub_opts_t){.from = WSQ_FROM_EARLIEST, .window = 1000});
    EQ_INT(wsqt_jint(fr->j, "next_seq"), G.nsent + 1);
    wsqt_frame_free(&fr);
    for (size_t i = 0; i < G.nsent; i++) {
        fr = wsqt_expect_msg(v, G_TOPIC, i + 1, G.sent[i].data, G.sent[i].len, G.sent[i].binary, 1,
                             T_MS);
        wsqt_frame_free(&fr);
    }
    wsqt_free(&v);
    wsqt_free(&b);
    wsqt_free(&G.c);
    wsqt_pipe_fini(&G);
    EQ_INT(wsqt_server_stop(srv, 10000 * wsqt_slow()), 0);
    wsqt_pass();
}
