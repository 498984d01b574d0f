/*
 * 12_large_message: messages at limits.max_message_size (16 MiB here) (docs/PROTOCOL.md: "In
 * raw mode the frame is the payload, capped exactly"; "the decoded payload of a pub is capped at
 * exactly limits.max_message_size (too_large)"; "Messages larger than 64 KiB arrive fragmented").
 *
 * - raw mode: a binary message of exactly 16777216 bytes is accepted and delivered intact; so is
 *   a text message of exactly 16777216 bytes of multi-byte UTF-8 sent in 64 fragments that split
 *   characters; 16777217 bytes close the connection with 1009 and store nothing;
 * - wsq.v1: a base64 payload of exactly 16777216 bytes is confirmed and delivered intact (also to
 *   a raw subscriber, as one binary message); one byte more is err too_large.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define T_MS (30000 * wsqt_slow())
#define LIMIT 16777216u

static void expect_raw_big(wsqt_conn_t *c, const unsigned char *data, size_t len, bool binary,
                           const char *what)
{
    wsqt_msg_t *m = wsqt_recv(c, T_MS);
    CHECKF(m != NULL, "%s: nothing received (close %d \"%s\")", what, wsqt_close_code(c),
           wsqt_close_reason(c));
    size_t i = 0;
    while (i < len && i < m->len && m->data[i] == data[i])
        i++;
    CHECKF(m->binary == binary && m->len == len && i == len,
           "%s: got a %s message of %zu bytes, expected %s of %zu; first difference at %zu", what,
           m->binary ? "binary" : "text", m->len, binary ? "binary" : "text", len, i);
    wsqt_msg_free(&m);
}

int main(int argc, char **argv)
{
    wsqt_init(argc, argv, "12_large_message", 120);
    wsqt_conf_t conf = {.limits = "  max_message_size: 16MiB\n"};
    wsqt_server_t *srv = wsqt_server_start(&conf);
    int port = wsqt_server_port(srv);

    unsigned char *big = malloc(LIMIT + 1);
    CHECK(big != NULL);
    wsqt_fill_random(big, LIMIT + 1);

    wsqt_log("raw: exactly 16 MiB binary, delivered intact");
    wsqt_conn_t *s = wsqt_open(port, "/topics/big.raw?from=earliest", NULL);
    wsqt_conn_t *p = wsqt_open(port, "/topics/big.raw", NULL);
    wsqt_send(p, big, LIMIT, true);
    expect_raw_big(s, big, LIMIT, true, "raw subscriber, 16 MiB binary");

    wsqt_log("raw: exactly 16 MiB of UTF-8 text in 64 fragments that split characters");
    unsigned char *text = malloc(LIMIT);
    CHECK(text != NULL);
    size_t n = 0;
    while (n + 3 <= LIMIT) {
        memcpy(text + n, "\xe2\x82\xac", 3); /* U+20AC: 3 bytes, so fragments split it */
        n += 3;
    }
    while (n < LIMIT)
        text[n++] = 'x';
    wsqt_send_frags(p, text, LIMIT, false, 64);
    expect_raw_big(s, text, LIMIT, false, "raw subscriber, 16 MiB text");
    EQ_INT(wsqt_state(p), WSQT_OPEN);

    wsqt_log("raw: 16 MiB + 1 byte closes with 1009");
    wsqt_conn_t *p2 = wsqt_open(port, "/topics/big.raw", NULL);
    wsqt_send(p2, big, LIMIT + 1, true);
    CHECKF(wsqt_wait_closed(p2, T_MS), "a raw message of limit + 1 bytes did not close the "
                                       "connection");
    CHECKF(wsqt_close_code(p2) == 1009, "raw limit + 1: expected close 1009, got %d \"%s\"",
           wsqt_close_code(p2), wsqt_close_reason(p2));
    wsqt_free(&p2);
    wsqt_expect_silence(s, 500);
    wsqt_free(&p);

    wsqt_log("wsq.v1: a base64 payload of exactly 16 MiB is confirmed and delivered intact");
    wsqt_conn_t *v = wsqt_open_v1(port);
    wsqt_frame_t *fr =
        wsqt_sub(v, "big.v1", &(wsqt_sub_opts_t){.from = WSQ_FROM_EARLIEST, .window = 4});
    wsqt_frame_free(&fr);
    wsqt_conn_t *rs = wsqt_open(port, "/topics/big.v1?from=earliest", NULL);
    wsqt_conn_t *q = wsqt_open_v1(port);
    fr = wsqt_pub_reply(q, "big.v1", big, LIMIT, true);
    CHECKF(strcmp(fr->f.op, "ok") == 0 && fr->f.seq == 1,
           "a 16 MiB binary pub was not confirmed as seq 1: %s", fr->text);
    wsqt_frame_free(&fr);
    fr = wsqt_expect_msg(v, "big.v1", 1, big, LIMIT, true, 1, T_MS);
    wsqt_frame_free(&fr);
    expect_raw_big(rs, big, LIMIT, true, "raw subscriber of a wsq.v1 16 MiB publish");

    wsqt_log("wsq.v1: 16 MiB + 1 byte is err too_large");
    fr = wsqt_pub_reply(q, "big.v1", big, LIMIT + 1, true);
    CHECKF(strcmp(fr->f.op, "err") == 0 && strcmp(fr->f.code, "too_large") == 0,
           "a pub of limit + 1 bytes: expected err too_large, got %s", fr->text);
    wsqt_frame_free(&fr);
    EQ_INT(wsqt_state(q), WSQT_OPEN);
    /* and a small one still works on the same connection */
    EQ_U64(wsqt_pub_text(q, "big.v1", "small"), 2);
    fr = wsqt_expect_msg(v, "big.v1", 2, "small", 5, false, 1, T_MS);
    wsqt_frame_free(&fr);

    free(big);
    free(text);
    wsqt_free(&s);
    wsqt_free(&rs);
    wsqt_free(&v);
    wsqt_free(&q);
    EQ_INT(wsqt_server_stop(srv, 15000 * wsqt_slow()), 0);
    wsqt_pass();
}
