/*
 * 03_confirm_after_commit: an ok carries the seq only after the commit (docs/PROTOCOL.md "pub":
 * "wsqd answers ok after the message is committed (fsync'd with sync: full)").
 *
 * Each round pipelines publishes with refs (text and binary, 0..3000 bytes), and SIGKILLs wsqd
 * the moment the last awaited ok arrives (in some rounds in the middle of the stream, with
 * publishes still in flight). After the restart every confirmed seq must be readable with its
 * exact payload and type, through a wsq.v1 subscribe from earliest and through HTTP history.
 * The same holds for an HTTP POST answered {"seq":N}. Confirms come in publish order and seqs
 * are gap-free.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define T_MS (10000 * wsqt_slow())
#define TOPIC "c03.log"
#define ROUNDS 4
#define PER_ROUND 250

typedef struct {
    unsigned char *data;
    size_t len;
    bool binary;
    bool confirmed;
} rec_t;

static rec_t recs[ROUNDS * PER_ROUND + 1]; /* by seq */
static uint64_t n_confirmed_max;           /* highest confirmed seq */

/* Reads the topic from earliest over wsq.v1 and checks every message against what was sent
 * (messages beyond the confirmed ones may exist: they were committed, their ok was lost). Returns
 * the last seq in the topic. */
static uint64_t verify_ws(int port, uint64_t known)
{
    wsqt_conn_t *c = wsqt_open_v1(port);
    wsqt_frame_t *fr =
        wsqt_sub(c, TOPIC, &(wsqt_sub_opts_t){.from = WSQ_FROM_EARLIEST, .window = 1000});
    uint64_t last = (uint64_t)wsqt_jint(fr->j, "next_seq") - 1;
    EQ_INT(wsqt_jint(fr->j, "first_seq"), 1);
    EQ_INT(wsqt_jint(fr->j, "start_seq"), 1);
    EQ_INT(wsqt_jbool(fr->j, "resumed"), 0);
    wsqt_frame_free(&fr);
    CHECKF(last >= n_confirmed_max,
           "after the restart the topic ends at seq %llu, but seq %llu was confirmed",
           (unsigned long long)last, (unsigned long long)n_confirmed_max);
    CHECKF(last <= known, "the topic holds seq %llu, more than the %llu messages ever sent",
           (unsigned long long)last, (unsigned long long)known);
    for (uint64_t s = 1; s <= last; s++) {
        CHECKF(recs[s].data != NULL, "seq %llu exists but nothing was sent for it",
               (unsigned long long)s);
        fr = wsqt_expect_msg(c, TOPIC, s, recs[s].data, recs[s].len, recs[s].binary, 1, T_MS);
        wsqt_frame_free(&fr);
    }
    wsqt_expect_silence(c, 100);
    wsqt_free(&c);
    return last;
}

/* Checks HTTP history from seq `from` (at most 1000 messages). */
static void verify_http(int port, uint64_t from, uint64_t last)
{
    char path[128];
    snprintf(path, sizeof(path), "/topics/%s/messages?from=%llu&limit=1000", TOPIC,
             (unsigned long long)from);
    wsqt_http_resp_t r;
    wsqt_http(port, "GET", path, NULL, NULL, 0, &r);
    EQ_INT(r.status, 200);
    json_error_t jerr;
    json_t *j = json_loads(r.body, 0, &jerr);
    CHECKF(j != NULL, "history is not JSON: %.200s", r.body);
    EQ_STR(wsqt_jstr(j, "topic"), TOPIC);
    EQ_INT(wsqt_jint(j, "next_seq"), last + 1);
    EQ_INT(wsqt_jint(j, "first_seq"), 1);
    CHECKF(json_object_get(j, "gap") == NULL, "history reports a gap: %.300s", r.body);
    const json_t *msgs = json_object_get(j, "messages");
    CHECK(json_is_array(msgs));
    uint64_t want = last - from + 1 > 1000 ? 1000 : last - from + 1;
    /* the answer may stop early at about 4 MiB of payload, but never skips */
    CHECKF(json_array_size(msgs) >= 1 && json_array_size(msgs) <= want,
           "history from %llu: %zu messages, expected up to %llu", (unsigned long long)from,
           json_array_size(msgs), (unsigned long long)want);
    size_t i;
    const json_t *m;
    json_array_foreach(msgs, i, m)
    {
        uint64_t seq = from + i;
        char *text = json_dumps(m, JSON_COMPACT);
        wsqt_msg_t fake = {.binary = false, .len = strlen(text), .data = (unsigned char *)text};
        wsqt_frame_t *fr = wsqt_frame_parse(&fake);
        CHECKF(strcmp(fr->f.op, "msg") == 0 && fr->f.seq == seq && strcmp(fr->f.topic, TOPIC) == 0,
               "history entry %zu is not msg seq %llu: %.200s", i, (unsigned long long)seq, text);
        CHECKF(fr->f.binary == recs[seq].binary && fr->f.data_len == recs[seq].len &&
                   memcmp(fr->f.data, recs[seq].data, recs[seq].len) == 0,
               "history seq %llu: payload or type differs: %.200s", (unsigned long long)seq, text);
        wsqt_frame_free(&fr);
        free(text);
    }
    json_decref(j);
    wsqt_http_free(&r);
}

int main(int argc, char **argv)
{
    wsqt_init(argc, argv, "03_confirm_after_commit", 120);
    wsqt_server_t *srv = wsqt_server_start(NULL);
    uint64_t known = 0; /* seqs 1..known have a known payload (single publisher, gap-free) */
    static char buf[4096];

    for (int round = 0; round < ROUNDS; round++) {
        int port = wsqt_server_port(srv);
        wsqt_conn_t *c = wsqt_open_v1(port);
        wsqt_pipe_t p;
        wsqt_pipe_init(&p, c, TOPIC, 64);
        /* rounds 1 and 3 kill with publishes still in flight */
        size_t kill_after = round % 2 ? PER_ROUND / 2 + wsqt_rand(PER_ROUND / 4) : PER_ROUND;
        size_t next = 0;
        int64_t deadline = wsqt_now_ms() + 30000 * wsqt_slow();
        while (p.nok < kill_after) {
            while (next < PER_ROUND) {
                bool bin = wsqt_rand(2);
                size_t len = wsqt_payload(buf, wsqt_rand(3000), "c03", round * 1000 + next, bin);
                if (!wsqt_pipe_send(&p, buf, len, bin))
                    break;
                next++;
            }
            wsqt_sleep(1);
            wsqt_pipe_poll(&p);
            CHECKF(p.nerr == 0, "a publish was refused: %s", p.sent[p.nreplied - 1].err);
            CHECKF(wsqt_now_ms() < deadline, "round %d: only %zu of %zu confirms in 30 s", round,
                   p.nok, kill_after);
        }
        wsqt_server_kill(srv); /* at once: no grace for anything not yet committed */
        wsqt_log("round %d: killed wsqd after %zu confirms (%zu sent)", round, p.nok, p.nsent);
        for (size_t i = 0; i < p.nsent; i++) {
            uint64_t seq = known + 1 + i;
            CHECK(seq < sizeof(recs) / sizeof(recs[0]));
            recs[seq].data = p.sent[i].data;
            recs[seq].len = p.sent[i].len;
            recs[seq].binary = p.sent[i].binary;
            p.sent[i].data = NULL;
            if (p.sent[i].seq) {
                /* one publisher, gap-free seqs: the i-th publish of the round */
                EQ_U64(p.sent[i].seq, seq);
                recs[seq].confirmed = true;
                n_confirmed_max = seq;
            }
        }
        uint64_t sent_total = known + p.nsent;
        wsqt_pipe_fini(&p);
        wsqt_free(&c);

        wsqt_server_restart(srv);
        port = wsqt_server_port(srv);
        uint64_t last = verify_ws(port, sent_total);
        verify_http(port, known ? known : 1, last);
        wsqt_log("round %d: all %llu confirmed messages are back (topic ends at %llu)", round,
                 (unsigned long long)n_confirmed_max, (unsigned long long)last);
        /* publishes after `last` were lost uncommitted; the next round's seqs continue there */
        for (uint64_t s = last + 1; s <= sent_total; s++) {
            free(recs[s].data);
            recs[s].data = NULL;
        }
        known = last;
    }

    wsqt_log("HTTP POST: {\"seq\":N} after commit");
    int port = wsqt_server_port(srv);
    uint64_t http_seq[5];
    for (int i = 0; i < 5; i++) {
        snprintf(buf, sizeof(buf), "posted-%d", i);
        wsqt_http_resp_t r;
        wsqt_http(port, "POST", "/topics/c03.http", "Content-Type: text/plain\r\n", buf,
                  strlen(buf), &r);
        EQ_INT(r.status, 200);
        json_t *j = json_loads(r.body, 0, NULL);
        CHECKF(j != NULL, "POST answer is not JSON: %s", r.body);
        static const char *const keys[] = {"seq", "topic", NULL};
        wsqt_jkeys(j, keys);
        EQ_STR(wsqt_jstr(j, "topic"), "c03.http");
        http_seq[i] = (uint64_t)wsqt_jint(j, "seq");
        EQ_U64(http_seq[i], (uint64_t)i + 1);
        json_decref(j);
        wsqt_http_free(&r);
    }
    wsqt_server_kill(srv);
    wsqt_server_restart(srv);
    port = wsqt_server_port(srv);
    wsqt_conn_t *c = wsqt_open_v1(port);
    wsqt_frame_t *fr =
        wsqt_sub(c, "c03.http", &(wsqt_sub_opts_t){.from = WSQ_FROM_SEQ, .from_seq = 1});
    EQ_INT(wsqt_jint(fr->j, "next_seq"), 6);
    wsqt_frame_free(&fr);
    for (int i = 0; i < 5; i++) {
        snprintf(buf, sizeof(buf), "posted-%d", i);
        fr = wsqt_expect_msg(c, "c03.http", http_seq[i], buf, strlen(buf), false, 1, T_MS);
        wsqt_frame_free(&fr);
    }
    wsqt_free(&c);
    EQ_INT(wsqt_server_stop(srv, 10000 * wsqt_slow()), 0);
    for (size_t s = 0; s < sizeof(recs) / sizeof(recs[0]); s++)
        free(recs[s].data);
    wsqt_pass();
}
