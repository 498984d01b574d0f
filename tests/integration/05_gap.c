/*
 * 05_gap: no silent gaps (docs/PROTOCOL.md "gap", raw mode 4010, HTTP history "gap").
 *
 * Topics gap.> keep at most 5 messages (retention max_messages: 5, discard: old).
 * - a durable consumer that fell behind gets {"op":"gap","from":3,"to":15,"reason":"retention"}
 *   on resume BEFORE the first message after the range, then 16..20; the range counts as
 *   acknowledged (no second gap);
 * - an ephemeral subscription from {"seq":1} gets the gap; from earliest does not;
 * - a live consumer whose window was full while retention trimmed gets the gap when it acks;
 * - HTTP history from=1 reports the gap;
 * - raw mode: a consumer that needed removed messages is closed with 4010 "gap 3-15 retention"
 *   and resumes after the gap on its next connection; an ephemeral from=1 is closed likewise.
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"

#define T_MS (5000 * wsqt_slow())

static void publish(wsqt_conn_t *p, const char *topic, uint64_t from, uint64_t to)
{
    char buf[64];
    for (uint64_t s = from; s <= to; s++) {
        snprintf(buf, sizeof(buf), "%s-%llu", topic, (unsigned long long)s);
        EQ_U64(wsqt_pub_text(p, topic, buf), s);
    }
}

static void expect(wsqt_conn_t *c, const char *topic, uint64_t seq, uint32_t deliveries)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "%s-%llu", topic, (unsigned long long)seq);
    wsqt_frame_t *fr = wsqt_expect_msg(c, topic, seq, buf, strlen(buf), false, deliveries, T_MS);
    wsqt_frame_free(&fr);
}

static void expect_raw(wsqt_conn_t *c, const char *topic, uint64_t seq)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "%s-%llu", topic, (unsigned long long)seq);
    wsqt_msg_t *m = wsqt_recv(c, T_MS);
    CHECKF(m != NULL, "raw %s: expected seq %llu, got nothing (close %d \"%s\")", topic,
           (unsigned long long)seq, wsqt_close_code(c), wsqt_close_reason(c));
    CHECKF(!m->binary && strcmp((const char *)m->data, buf) == 0,
           "raw %s: expected \"%s\", got \"%s\"", topic, buf, (const char *)m->data);
    wsqt_msg_free(&m);
}

/* A raw connection that must be closed with 4010 and this reason, receiving nothing first. */
static void expect_raw_gap_close(int port, const char *path, const char *reason)
{
    wsqt_conn_t *r = wsqt_open(port, path, NULL);
    CHECKF(wsqt_wait_closed(r, T_MS), "%s: not closed within %d ms", path, T_MS);
    wsqt_msg_t *m = wsqt_recv(r, 0);
    CHECKF(m == NULL, "%s: got a message before the gap close: \"%s\"", path,
           m ? (const char *)m->data : "");
    CHECKF(wsqt_close_code(r) == 4010 && strcmp(wsqt_close_reason(r), reason) == 0,
           "%s: expected close 4010 \"%s\", got %d \"%s\"", path, reason, wsqt_close_code(r),
           wsqt_close_reason(r));
    wsqt_free(&r);
}

int main(int argc, char **argv)
{
    wsqt_init(argc, argv, "05_gap", 60);
    wsqt_conf_t conf = {.retention = "  topics:\n"
                                     "    - pattern: \"gap.>\"\n"
                                     "      max_messages: 5\n"};
    wsqt_server_t *srv = wsqt_server_start(&conf);
    int port = wsqt_server_port(srv);
    wsqt_conn_t *p = wsqt_open_v1(port);

    wsqt_log("durable consumer falls behind, resumes: gap first");
    publish(p, "gap.a", 1, 2);
    wsqt_conn_t *c = wsqt_open_v1(port);
    wsqt_sub_opts_t so = {.consumer = "g1", .from = WSQ_FROM_EARLIEST, .window = 10};
    wsqt_frame_t *fr = wsqt_sub(c, "gap.a", &so);
    wsqt_frame_free(&fr);
    expect(c, "gap.a", 1, 1);
    expect(c, "gap.a", 2, 1);
    wsqt_ack_upto(c, "gap.a", 2);
    wsqt_v1_ping(c, T_MS);
    wsqt_free(&c);
    publish(p, "gap.a", 3, 20);
    c = wsqt_open_v1(port);
    fr = wsqt_sub(c, "gap.a", &so);
    EQ_INT(wsqt_jbool(fr->j, "resumed"), 1);
    EQ_INT(wsqt_jint(fr->j, "first_seq"), 16);
    EQ_INT(wsqt_jint(fr->j, "next_seq"), 21);
    json_int_t start = wsqt_jint(fr->j, "start_seq");
    CHECKF(start == 3 || start == 16,
           "resumed start_seq %lld: expected 3 (first unacked) or 16 "
           "(first delivered)",
           (long long)start);
    wsqt_frame_free(&fr);
    wsqt_expect_gap(c, "gap.a", 3, 15, "retention", T_MS);
    for (uint64_t s = 16; s <= 20; s++)
        expect(c, "gap.a", s, 1);
    wsqt_expect_silence(c, 200);
    wsqt_ack_upto(c, "gap.a", 20);
    wsqt_v1_ping(c, T_MS);
    wsqt_free(&c);

    wsqt_log("the gap counts as acknowledged: no second gap");
    c = wsqt_open_v1(port);
    fr = wsqt_sub(c, "gap.a", &so);
    EQ_INT(wsqt_jbool(fr->j, "resumed"), 1);
    EQ_INT(wsqt_jint(fr->j, "start_seq"), 21);
    wsqt_frame_free(&fr);
    wsqt_expect_silence(c, 300);
    publish(p, "gap.a", 21, 21);
    expect(c, "gap.a", 21, 1);
    wsqt_free(&c);

    wsqt_log("ephemeral from {\"seq\":1}: gap; from earliest / seq 19: none");
    c = wsqt_open_v1(port);
    fr = wsqt_sub(c, "gap.a", &(wsqt_sub_opts_t){.from = WSQ_FROM_SEQ, .from_seq = 1});
    EQ_INT(wsqt_jint(fr->j, "first_seq"), 17);
    wsqt_frame_free(&fr);
    wsqt_expect_gap(c, "gap.a", 1, 16, "retention", T_MS);
    for (uint64_t s = 17; s <= 21; s++)
        expect(c, "gap.a", s, 1);
    wsqt_expect_silence(c, 200);
    wsqt_free(&c);
    c = wsqt_open_v1(port);
    fr = wsqt_sub(c, "gap.a", &(wsqt_sub_opts_t){.from = WSQ_FROM_EARLIEST});
    EQ_INT(wsqt_jint(fr->j, "start_seq"), 17);
    wsqt_frame_free(&fr);
    for (uint64_t s = 17; s <= 21; s++)
        expect(c, "gap.a", s, 1);
    wsqt_expect_silence(c, 200);
    wsqt_free(&c);
    c = wsqt_open_v1(port);
    fr = wsqt_sub(c, "gap.a", &(wsqt_sub_opts_t){.from = WSQ_FROM_SEQ, .from_seq = 19});
    wsqt_frame_free(&fr);
    for (uint64_t s = 19; s <= 21; s++)
        expect(c, "gap.a", s, 1);
    wsqt_expect_silence(c, 200);
    wsqt_free(&c);

    wsqt_log("HTTP history from=1 reports the gap");
    wsqt_http_resp_t r;
    wsqt_http(port, "GET", "/topics/gap.a/messages?from=1", NULL, NULL, 0, &r);
    EQ_INT(r.status, 200);
    json_t *j = json_loads(r.body, 0, NULL);
    CHECKF(j != NULL, "history is not JSON: %s", r.body);
    EQ_INT(wsqt_jint(j, "first_seq"), 17);
    EQ_INT(wsqt_jint(j, "next_seq"), 22);
    const json_t *gap = json_object_get(j, "gap");
    CHECKF(json_is_object(gap), "history from=1 has no gap member: %s", r.body);
    EQ_INT(wsqt_jint(gap, "from"), 1);
    EQ_INT(wsqt_jint(gap, "to"), 16);
    EQ_STR(wsqt_jstr(gap, "reason"), "retention");
    EQ_INT(json_array_size(json_object_get(j, "messages")), 5);
    EQ_INT(wsqt_jint(json_array_get(json_object_get(j, "messages"), 0), "seq"), 17);
    json_decref(j);
    wsqt_http_free(&r);

    wsqt_log("live: window full while retention trims; the gap comes with the ack");
    c = wsqt_open_v1(port);
    fr = wsqt_sub(c, "gap.b",
                  &(wsqt_sub_opts_t){.consumer = "g2", .from = WSQ_FROM_LATEST, .window = 2});
    EQ_INT(wsqt_jint(fr->j, "next_seq"), 1);
    wsqt_frame_free(&fr);
    publish(p, "gap.b", 1, 2);
    expect(c, "gap.b", 1, 1);
    expect(c, "gap.b", 2, 1);
    publish(p, "gap.b", 3, 12); /* keeps 8..12 */
    wsqt_expect_silence(c, 300);
    wsqt_ack_upto(c, "gap.b", 2);
    wsqt_expect_gap(c, "gap.b", 3, 7, "retention", T_MS);
    expect(c, "gap.b", 8, 1);
    expect(c, "gap.b", 9, 1);
    wsqt_expect_silence(c, 300);
    wsqt_ack_upto(c, "gap.b", 9);
    expect(c, "gap.b", 10, 1);
    expect(c, "gap.b", 11, 1);
    wsqt_ack(c, "gap.b", 10);
    expect(c, "gap.b", 12, 1);
    wsqt_expect_silence(c, 200);
    wsqt_free(&c);

    wsqt_log("raw mode: 4010 \"gap 3-15 retention\", then resume after the gap");
    publish(p, "gap.c", 1, 2);
    wsqt_conn_t *rc = wsqt_open(port, "/topics/gap.c?consumer=r1&from=earliest", NULL);
    expect_raw(rc, "gap.c", 1);
    expect_raw(rc, "gap.c", 2);
    wsqt_close(rc, 1000, "", T_MS);
    wsqt_free(&rc);
    publish(p, "gap.c", 3, 20);
    expect_raw_gap_close(port, "/topics/gap.c?consumer=r1", "gap 3-15 retention");
    rc = wsqt_open(port, "/topics/gap.c?consumer=r1", NULL);
    for (uint64_t s = 16; s <= 20; s++)
        expect_raw(rc, "gap.c", s);
    wsqt_expect_silence(rc, 200);
    EQ_INT(wsqt_state(rc), WSQT_OPEN);
    wsqt_free(&rc);
    expect_raw_gap_close(port, "/topics/gap.c?from=1", "gap 1-15 retention");
    rc = wsqt_open(port, "/topics/gap.c?from=earliest", NULL);
    for (uint64_t s = 16; s <= 20; s++)
        expect_raw(rc, "gap.c", s);
    wsqt_free(&rc);

    wsqt_free(&p);
    EQ_INT(wsqt_server_stop(srv, 10000 * wsqt_slow()), 0);
    wsqt_pass();
}
