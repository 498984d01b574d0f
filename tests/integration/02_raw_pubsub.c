/*
 * 02_raw_pubsub: raw mode (docs/PROTOCOL.md "Raw mode").
 *
 * - every frame a raw client sends is one message, text as text and binary as binary, fragmented
 *   messages reassembled; every message is delivered as one frame of its original type,
 *   byte-exact (all 256 byte values), in publish order, also to wsq.v1 subscribers;
 * - from=latest (the default) skips what was there before; from=earliest, from=<seq> and
 *   from=time:<unix-ms> start where they say;
 * - a durable raw consumer (?consumer=) resumes after the last message written to it, across
 *   clean closes, a dropped TCP connection and a wsqd restart; an existing consumer ignores from.
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"

#define T_MS (5000 * wsqt_slow())

static void expect_raw(wsqt_conn_t *c, const void *data, size_t len, bool binary, const char *what)
{
    wsqt_msg_t *m = wsqt_recv(c, T_MS);
    CHECKF(m != NULL, "%s: nothing received within %d ms (close %d \"%s\")", what, T_MS,
           wsqt_close_code(c), wsqt_close_reason(c));
    CHECKF(m->binary == binary, "%s: got a %s frame, expected %s", what,
           m->binary ? "binary" : "text", binary ? "binary" : "text");
    size_t i = 0;
    while (i < len && i < m->len && m->data[i] == ((const unsigned char *)data)[i])
        i++;
    CHECKF(m->len == len && i == len,
           "%s: payload differs: got %zu bytes, expected %zu, first difference at %zu: \"%.80s\"",
           what, m->len, len, i, m->binary ? "(binary)" : (const char *)m->data);
    wsqt_msg_free(&m);
}

static void expect_raw_text(wsqt_conn_t *c, const char *text, const char *what)
{
    expect_raw(c, text, strlen(text), false, what);
}

/* Publishes "sync-K" (confirmed) until the raw subscriber s receives one; then checks that it
 * receives the remaining syncs in order. Returns the seq of the last sync. */
static uint64_t sync_raw(wsqt_conn_t *pub, wsqt_conn_t *s, const char *topic)
{
    char buf[32];
    uint64_t seqs[200];
    int n = 0, first = -1;
    while (first < 0) {
        CHECKF(n < 200, "raw subscriber on %s never received a sync message", topic);
        snprintf(buf, sizeof(buf), "sync-%d", n);
        seqs[n++] = wsqt_pub_text(pub, topic, buf);
        wsqt_msg_t *m = wsqt_recv(s, 50);
        if (m) {
            CHECKF(!m->binary && sscanf((const char *)m->data, "sync-%d", &first) == 1,
                   "first message on %s is not a sync: \"%.60s\"", topic, (const char *)m->data);
            CHECKF(first >= 0 && first < n, "bad sync number %d", first);
            wsqt_msg_free(&m);
        }
    }
    for (int k = first + 1; k < n; k++) {
        snprintf(buf, sizeof(buf), "sync-%d", k);
        expect_raw_text(s, buf, "sync sequence");
    }
    return seqs[n - 1];
}

int main(int argc, char **argv)
{
    wsqt_init(argc, argv, "02_raw_pubsub", 60);
    wsqt_server_t *srv = wsqt_server_start(NULL);
    int port = wsqt_server_port(srv);
    wsqt_conn_t *p = wsqt_open_v1(port);

    /* ---------------------------------------------------------------------------------------- */
    wsqt_log("live raw pub/sub: types, bytes, fragments, order");
    EQ_U64(wsqt_pub_text(p, "r02.live", "old message"), 1);
    wsqt_conn_t *s = wsqt_open(port, "/topics/r02.live", NULL);
    uint64_t last_sync = sync_raw(p, s, "r02.live");
    wsqt_conn_t *v = wsqt_open_v1(port);
    wsqt_frame_t *fr = wsqt_sub(
        v, "r02.live", &(wsqt_sub_opts_t){.from = WSQ_FROM_SEQ, .from_seq = last_sync + 1});
    EQ_INT(wsqt_jint(fr->j, "next_seq"), last_sync + 1);
    EQ_INT(wsqt_jint(fr->j, "start_seq"), last_sync + 1);
    wsqt_frame_free(&fr);

    wsqt_conn_t *rp = wsqt_open(port, "/topics/r02.live", NULL);
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    const char *utf8 = "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9d\x84\x9e";
    unsigned char frag_bin[1000];
    wsqt_fill_random(frag_bin, sizeof(frag_bin));
    const char *frag_text = "a text message sent in three fragments";

    typedef struct {
        const void *data;
        size_t len;
        bool binary;
        size_t nfrag;
    } sent_t;
    sent_t sent[110];
    size_t ns = 0;
    sent[ns++] = (sent_t){"hello", 5, false, 1};
    sent[ns++] = (sent_t){all, 256, true, 1};
    sent[ns++] = (sent_t){utf8, strlen(utf8), false, 1};
    sent[ns++] = (sent_t){"", 0, false, 1};
    sent[ns++] = (sent_t){"", 0, true, 1};
    sent[ns++] = (sent_t){frag_text, strlen(frag_text), false, 3};
    sent[ns++] = (sent_t){frag_bin, sizeof(frag_bin), true, 50};
    /* a UTF-8 sequence split across fragments is still valid text */
    sent[ns++] = (sent_t){utf8, strlen(utf8), false, 7};
    static char numbered[100][16];
    for (int i = 0; i < 100; i++) {
        snprintf(numbered[i], sizeof(numbered[i]), "n-%03d", i);
        sent[ns++] = (sent_t){numbered[i], strlen(numbered[i]), i % 3 == 0, 1};
    }
    for (size_t i = 0; i < ns; i++)
        wsqt_send_frags(rp, sent[i].data, sent[i].len, sent[i].binary, sent[i].nfrag);
    for (size_t i = 0; i < ns; i++) {
        char what[64];
        snprintf(what, sizeof(what), "raw subscriber, message %zu", i);
        expect_raw(s, sent[i].data, sent[i].len, sent[i].binary, what);
        fr = wsqt_expect_msg(v, "r02.live", last_sync + 1 + i, sent[i].data, sent[i].len,
                             sent[i].binary, 1, T_MS);
        wsqt_frame_free(&fr);
    }
    wsqt_expect_silence(s, 200);

    /* ---------------------------------------------------------------------------------------- */
    wsqt_log("from=earliest, from=<seq>, from=time:<ms>, from=latest");
    char buf[64];
    for (int i = 1; i <= 5; i++) {
        snprintf(buf, sizeof(buf), "hist-%d", i);
        EQ_U64(wsqt_pub(p, "r02.hist", buf, strlen(buf), i % 2 == 0), (uint64_t)i);
    }
    wsqt_sleep(30);
    int64_t t_mid = wsqt_unix_ms();
    wsqt_sleep(30);
    for (int i = 6; i <= 10; i++) {
        snprintf(buf, sizeof(buf), "hist-%d", i);
        EQ_U64(wsqt_pub(p, "r02.hist", buf, strlen(buf), i % 2 == 0), (uint64_t)i);
    }
    wsqt_conn_t *e = wsqt_open(port, "/topics/r02.hist?from=earliest", NULL);
    snprintf(buf, sizeof(buf), "/topics/r02.hist?from=4");
    wsqt_conn_t *q = wsqt_open(port, buf, NULL);
    snprintf(buf, sizeof(buf), "/topics/r02.hist?from=time:%lld", (long long)t_mid);
    wsqt_conn_t *t = wsqt_open(port, buf, NULL);
    wsqt_conn_t *l = wsqt_open(port, "/topics/r02.hist?from=latest", NULL);
    for (int i = 1; i <= 10; i++) {
        snprintf(buf, sizeof(buf), "hist-%d", i);
        expect_raw(e, buf, strlen(buf), i % 2 == 0, "from=earliest");
        if (i >= 4)
            expect_raw(q, buf, strlen(buf), i % 2 == 0, "from=4");
        if (i >= 6)
            expect_raw(t, buf, strlen(buf), i % 2 == 0, "from=time:");
    }
    wsqt_expect_silence(e, 200);
    wsqt_expect_silence(q, 1);
    wsqt_expect_silence(t, 1);
    wsqt_expect_silence(l, 1);
    /* l is live from now on (the other three prove its subscription is active by now) */
    EQ_U64(wsqt_pub_text(p, "r02.hist", "hist-11"), 11);
    expect_raw_text(l, "hist-11", "from=latest");
    expect_raw_text(e, "hist-11", "from=earliest, live");
    wsqt_free(&e);
    wsqt_free(&q);
    wsqt_free(&t);
    wsqt_free(&l);

    /* ---------------------------------------------------------------------------------------- */
    wsqt_log("durable raw consumer resumes after the last written message");
    for (int i = 1; i <= 5; i++) {
        snprintf(buf, sizeof(buf), "dur-%d", i);
        EQ_U64(wsqt_pub_text(p, "r02.dur", buf), (uint64_t)i);
    }
    wsqt_conn_t *d = wsqt_open(port, "/topics/r02.dur?consumer=rc&from=earliest", NULL);
    for (int i = 1; i <= 5; i++) {
        snprintf(buf, sizeof(buf), "dur-%d", i);
        expect_raw_text(d, buf, "durable, first connection");
    }
    wsqt_close(d, 1000, "", T_MS);
    wsqt_free(&d);
    for (int i = 6; i <= 8; i++) {
        snprintf(buf, sizeof(buf), "dur-%d", i);
        EQ_U64(wsqt_pub_text(p, "r02.dur", buf), (uint64_t)i);
    }
    d = wsqt_open(port, "/topics/r02.dur?consumer=rc", NULL);
    for (int i = 6; i <= 8; i++) {
        snprintf(buf, sizeof(buf), "dur-%d", i);
        expect_raw_text(d, buf, "durable, resumed after a clean close");
    }
    wsqt_expect_silence(d, 300);
    wsqt_close(d, 1000, "", T_MS);
    wsqt_free(&d);

    /* an existing consumer ignores from */
    d = wsqt_open(port, "/topics/r02.dur?consumer=rc&from=earliest", NULL);
    wsqt_expect_silence(d, 300);
    EQ_U64(wsqt_pub_text(p, "r02.dur", "dur-9"), 9);
    expect_raw_text(d, "dur-9", "durable, existing consumer with from=earliest");
    wsqt_drop(d);
    wsqt_free(&d);
    EQ_U64(wsqt_pub_text(p, "r02.dur", "dur-10"), 10);
    d = wsqt_open(port, "/topics/r02.dur?consumer=rc", NULL);
    expect_raw_text(d, "dur-10", "durable, resumed after a dropped TCP connection");
    wsqt_expect_silence(d, 300);
    EQ_U64(wsqt_pub_text(p, "r02.dur", "dur-11"), 11);
    expect_raw_text(d, "dur-11", "durable, live");
    wsqt_close(d, 1000, "", T_MS);
    wsqt_free(&d);
    EQ_U64(wsqt_pub_text(p, "r02.dur", "dur-12"), 12);

    wsqt_log("... and across a wsqd restart");
    wsqt_free(&p);
    wsqt_free(&s);
    wsqt_free(&v);
    wsqt_free(&rp);
    EQ_INT(wsqt_server_stop(srv, 10000 * wsqt_slow()), 0);
    wsqt_server_restart(srv);
    port = wsqt_server_port(srv);
    d = wsqt_open(port, "/topics/r02.dur?consumer=rc", NULL);
    expect_raw_text(d, "dur-12", "durable, resumed after a restart");
    wsqt_expect_silence(d, 300);
    /* a second consumer on the same topic has its own position */
    wsqt_conn_t *d2 = wsqt_open(port, "/topics/r02.dur?consumer=other&from=11", NULL);
    expect_raw_text(d2, "dur-11", "second consumer from=11");
    expect_raw_text(d2, "dur-12", "second consumer from=11");
    wsqt_free(&d);
    wsqt_free(&d2);

    /* ---------------------------------------------------------------------------------------- */
    /* Last, because it races inside wsqd: "latest" means messages published from now on, and
     * for a raw client "now" can only be the moment its upgrade completed. */
    wsqt_log("from=latest covers everything published after the upgrade completed");
    p = wsqt_open_v1(port);
    for (int round = 0; round < 5; round++) {
        wsqt_conn_t *lt = wsqt_open(port, "/topics/r02.latest", NULL);
        snprintf(buf, sizeof(buf), "after-open-%d", round);
        uint64_t seq = wsqt_pub_text(p, "r02.latest", buf);
        wsqt_msg_t *m = wsqt_recv(lt, 1500 * wsqt_slow());
        SOFT_CHECKF(
            m != NULL && strcmp((const char *)m->data, buf) == 0,
            "round %d: a raw from=latest subscriber whose upgrade had completed did not get "
            "seq %llu \"%s\", published (and confirmed) after that: got %s",
            round, (unsigned long long)seq, buf, m ? (const char *)m->data : "nothing");
        wsqt_msg_free(&m);
        wsqt_free(&lt);
    }
    for (int round = 0; round < 5; round++) {
        /* the raw publisher has both rights: it receives what it publishes after it connected */
        wsqt_conn_t *own = wsqt_open(port, "/topics/r02.own", NULL);
        snprintf(buf, sizeof(buf), "own-%d", round);
        wsqt_send(own, buf, strlen(buf), false);
        wsqt_msg_t *m = wsqt_recv(own, 1500 * wsqt_slow());
        SOFT_CHECKF(
            m != NULL && strcmp((const char *)m->data, buf) == 0,
            "round %d: a raw connection (from=latest) did not receive \"%s\" that it published "
            "itself after its upgrade: got %s",
            round, buf, m ? (const char *)m->data : "nothing");
        wsqt_msg_free(&m);
        wsqt_free(&own);
    }
    wsqt_free(&p);
    EQ_INT(wsqt_server_stop(srv, 10000 * wsqt_slow()), 0);
    wsqt_pass();
}
