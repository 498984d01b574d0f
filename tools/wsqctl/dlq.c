/*
 * dlq: the dead letters of a topic (docs/wsqctl.md, "dlq").
 *
 * Which topic: the dead-letter topic of TOPIC is the one its retention rule names (-c, else the
 * built-in default, "{topic}.dlq"), and dlq lists the messages there whose wsq-dead-topic is
 * TOPIC (one dead-letter topic may serve several topics). When that topic does not exist and
 * TOPIC's own first message carries wsq-dead-topic, TOPIC is a dead-letter topic itself and is
 * listed whole.
 *
 * Where (locate.c, CTL_NEED_HISTORY): when a broker answers, the messages come from its HTTP
 * history, which also works for a broker on another machine. Whether a dead letter was redriven
 * (acknowledged by the consumer wsq-redrive) is consumer state, which the broker's HTTP API does
 * not serve: it is read from the broker's store when that is on this machine, and is unknown
 * otherwise. Without a broker everything comes from the local store.
 *
 * Both sources give pages of messages in one shape, {"seq","ts","size","data"[,"enc"]
 * [,"headers"]}; each page is one HTTP request or one short read transaction, and the output is
 * written after the last one.
 */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "wsq/topic.h"

#define DLQ_DEFAULT 100       /* --limit default */
#define PAGE_MSGS 1000u       /* messages per page (HTTP history's maximum) */
#define READ_BYTES (4u << 20) /* payload bytes per store read */
#define HDR_PREFIX_LEN (sizeof(CTL_DEAD_PREFIX) - 1)

typedef struct {
    json_t *msgs;         /* the page's messages, in seq order */
    uint64_t first_seq;   /* the topic's first retained seq */
    uint64_t next_seq;    /* and its next seq */
    uint64_t corrupt_seq; /* the page stopped before this message: it fails its checksum (0: no) */
} page_t;

typedef struct {
    json_t *arr;
    bool nomem;
} collect_t;

static int collect_one(void *arg, const wsq_msg_view_t *m)
{
    collect_t *k = arg;
    json_t *o =
        wsq__ctl_msg_json(m->seq, m->ts_ms, m->flags, m->data, m->len, m->headers, m->headers_len);
    if (o == NULL || json_array_append_new(k->arr, o) != 0) {
        k->nomem = true;
        return 1;
    }
    return 0;
}

/* A page from the store. CTL_NOTFOUND, unrecorded, when the topic does not exist. */
static int store_page(wsqctl_t *c, wsq_store_t *s, const char *topic, uint64_t from, unsigned max,
                      page_t *pg)
{
    wsq_topic_info_t ti;
    wsq_err err = wsq_store_topic_lookup(s, topic, strlen(topic), &ti);
    if (err == WSQ_ERR_NOTFOUND)
        return CTL_NOTFOUND;
    if (err != WSQ_OK)
        return wsq__ctl_store_fail(c, err, "reading the topic");
    collect_t k = {pg->msgs, false};
    wsq_read_info_t info;
    err = wsq_store_read(s, ti.id, from, max, READ_BYTES, collect_one, &k, &info);
    if (err == WSQ_ERR_NOTFOUND) /* deleted since the lookup */
        return CTL_NOTFOUND;
    if (err != WSQ_OK)
        return wsq__ctl_store_fail(c, err, "reading messages");
    if (k.nomem)
        return wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
    pg->first_seq = info.first_seq;
    pg->next_seq = info.next_seq;
    pg->corrupt_seq = info.corrupt_seq;
    return CTL_OK;
}

static uint64_t jseq(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

/* A page from the broker's history, its messages brought to the store's shape. CTL_NOTFOUND,
 * unrecorded, when the topic does not exist. */
static int http_page(wsqctl_t *c, const char *topic, uint64_t from, unsigned max, page_t *pg)
{
    char path[WSQ_TOPIC_MAX + 96], doing[WSQ_TOPIC_MAX + 64];
    /* topic names are URL-safe as they are: [A-Za-z0-9._/-] */
    snprintf(path, sizeof(path), "/topics/%s/messages?from=%llu&limit=%u", topic,
             (unsigned long long)from, max);
    snprintf(doing, sizeof(doing), "reading the history of %s", topic);
    ctl_http_resp_t r;
    int rc = wsq__ctl_http(c, "GET", path, NULL, 0, &r);
    json_t *j = NULL;
    if (rc != CTL_OK)
        goto done;
    if (r.status != 200) {
        char name[64], msg[1024];
        rc = wsq__ctl_http_fail_msg(c, &r, doing, name, sizeof(name), msg, sizeof(msg));
        if (rc != CTL_NOTFOUND) /* not found here can only be the topic */
            wsq__ctl_fail(c, rc, name, "%s", msg);
        goto done;
    }
    j = json_loadb((const char *)r.body.data, r.body.len, 0, NULL);
    json_t *msgs = json_object_get(j, "messages"), *m;
    if (!json_is_array(msgs)) {
        rc = wsq__ctl_fail(c, CTL_ERR, "bad_response", "%s: the broker's answer has no messages",
                           doing);
        goto done;
    }
    pg->first_seq = jseq(j, "first_seq");
    pg->next_seq = jseq(j, "next_seq");
    json_t *gap = json_object_get(j, "gap");
    const char *reason = json_string_value(json_object_get(gap, "reason"));
    if (json_array_size(msgs) == 0 && reason && strcmp(reason, "corrupt") == 0)
        pg->corrupt_seq = jseq(gap, "from");
    size_t i;
    json_array_foreach(msgs, i, m)
    {
        const char *data = json_string_value(json_object_get(m, "data"));
        size_t dlen = json_string_length(json_object_get(m, "data"));
        json_t *enc = json_object_get(m, "enc"), *h = json_object_get(m, "headers");
        bool b64 = json_is_string(enc) && strcmp(json_string_value(enc), "base64") == 0;
        json_t *o = json_object();
        if (data == NULL || jseq(m, "seq") == 0 || o == NULL) {
            json_decref(o);
            rc = wsq__ctl_fail(c, CTL_ERR, "bad_response",
                               "%s: the broker sent a message wsqctl cannot read", doing);
            goto done;
        }
        json_object_set(o, "seq", json_object_get(m, "seq"));
        json_object_set(o, "ts", json_object_get(m, "ts"));
        json_object_set_new(
            o, "size", json_integer((json_int_t)(b64 ? wsq_base64_dec_len(data, dlen) : dlen)));
        json_object_set(o, "data", json_object_get(m, "data"));
        if (b64)
            json_object_set_new(o, "enc", json_string("base64"));
        if (json_is_object(h))
            json_object_set(o, "headers", h);
        if (json_array_append_new(pg->msgs, o) != 0) {
            rc = wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
            goto done;
        }
    }
done:
    json_decref(j);
    wsq__ctl_http_resp_fini(&r);
    return rc;
}

static int read_page(wsqctl_t *c, const ctl_target_t *t, const char *topic, uint64_t from,
                     unsigned max, page_t *pg)
{
    json_decref(pg->msgs);
    memset(pg, 0, sizeof(*pg));
    if ((pg->msgs = json_array()) == NULL)
        return wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
    if (t->via == CTL_VIA_BROKER)
        return http_page(c, topic, from, max, pg);
    return store_page(c, t->store, topic, from, max, pg);
}

static const char *header(const json_t *msg, const char *key)
{
    return json_string_value(json_object_get(json_object_get(msg, "headers"), key));
}

/* A header's decimal value as JSON: null when absent or not a number. */
static json_t *header_u64(const json_t *msg, const char *key)
{
    uint64_t v;
    const char *s = header(msg, key);
    return s && wsq__ctl_parse_u64(s, &v) && v <= INT64_MAX ? json_integer((json_int_t)v)
                                                            : json_null();
}

/* Which seqs of the dead-letter topic the consumer wsq-redrive acknowledged. */
typedef struct {
    bool known; /* the store was read: redriven is true or false, else unknown */
    bool exists;
    wsq_cstate_t cs;
} redriven_t;

static int redriven_load(wsqctl_t *c, wsq_store_t *s, const char *dlq, redriven_t *rd)
{
    memset(rd, 0, sizeof(*rd));
    wsq_cstate_init(&rd->cs);
    if (s == NULL)
        return CTL_OK;
    wsq_topic_info_t ti;
    wsq_err err = wsq_store_topic_lookup(s, dlq, strlen(dlq), &ti);
    if (err == WSQ_OK)
        err = wsq_store_consumer_get(s, ti.id, CTL_REDRIVE_CONSUMER, strlen(CTL_REDRIVE_CONSUMER),
                                     &rd->cs);
    if (err == WSQ_ERR_NOTFOUND)
        err = WSQ_OK;
    else if (err == WSQ_OK)
        rd->exists = true;
    if (err != WSQ_OK)
        return wsq__ctl_store_fail(c, err, "reading the consumer " CTL_REDRIVE_CONSUMER);
    rd->known = true;
    return CTL_OK;
}

/* One dead letter as dlq --json prints it (and the table shows it). */
static json_t *dead_line(const char *dlq, const json_t *m, const redriven_t *rd)
{
    uint64_t seq = jseq(m, "seq");
    json_t *o = json_object(), *own = json_object();
    if (o == NULL || own == NULL) {
        json_decref(o);
        json_decref(own);
        return NULL;
    }
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(m, "headers"), key, v)
    {
        if (strncmp(key, CTL_DEAD_PREFIX, HDR_PREFIX_LEN) != 0)
            json_object_set(own, key, v);
    }
    const char *topic = header(m, CTL_DEAD_PREFIX "topic");
    const char *consumer = header(m, CTL_DEAD_PREFIX "consumer");
    const char *reason = header(m, CTL_DEAD_PREFIX "reason");
    json_object_set_new(o, "dlq", json_string(dlq));
    json_object_set_new(o, "seq", json_integer((json_int_t)seq));
    json_object_set(o, "ts", json_object_get(m, "ts"));
    json_object_set_new(o, "topic", topic ? json_string(topic) : json_null());
    json_object_set_new(o, "topic_seq", header_u64(m, CTL_DEAD_PREFIX "seq"));
    json_object_set_new(o, "consumer", consumer ? json_string(consumer) : json_null());
    json_object_set_new(o, "deliveries", header_u64(m, CTL_DEAD_PREFIX "deliveries"));
    json_object_set_new(o, "reason", reason ? json_string(reason) : json_null());
    json_object_set(o, "size", json_object_get(m, "size"));
    json_object_set_new(o, "redriven",
                        !rd->known ? json_null()
                                   : json_boolean(rd->exists && wsq_cstate_is_acked(&rd->cs, seq)));
    json_object_set(o, "data", json_object_get(m, "data"));
    if (json_object_get(m, "enc"))
        json_object_set(o, "enc", json_object_get(m, "enc"));
    if (json_object_size(own))
        json_object_set(o, "headers", own);
    json_decref(own);
    return o;
}

/* A JSON value as a table cell: "-" for null. */
static const char *cell(const json_t *v, char *buf, size_t len)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v))
        snprintf(buf, len, "%lld", (long long)json_integer_value(v));
    else
        snprintf(buf, len, "-");
    return buf;
}

static void print_table(const json_t *lines)
{
    static const char *head[] = {"SEQ",        "TIME",   "TOPIC", "TOPIC-SEQ", "CONSUMER",
                                 "DELIVERIES", "REASON", "SIZE",  "REDRIVEN"};
    static const bool right[] = {true, false, false, true, false, true, false, true, false};
    ctl_table_t t;
    wsq__ctl_table_init(&t, 9, head, right);
    size_t i;
    json_t *o;
    json_array_foreach(lines, i, o)
    {
        char seq[24], tm[40], tseq[24], deliv[24], size[24], b1[8], b2[8], b3[8];
        json_t *r = json_object_get(o, "redriven");
        wsq__ctl_time(json_integer_value(json_object_get(o, "ts")), tm, sizeof(tm));
        const char *row[] = {cell(json_object_get(o, "seq"), seq, sizeof(seq)),
                             tm,
                             cell(json_object_get(o, "topic"), b1, sizeof(b1)),
                             cell(json_object_get(o, "topic_seq"), tseq, sizeof(tseq)),
                             cell(json_object_get(o, "consumer"), b2, sizeof(b2)),
                             cell(json_object_get(o, "deliveries"), deliv, sizeof(deliv)),
                             cell(json_object_get(o, "reason"), b3, sizeof(b3)),
                             cell(json_object_get(o, "size"), size, sizeof(size)),
                             json_is_null(r)   ? "?"
                             : json_is_true(r) ? "yes"
                                               : "no"};
        wsq__ctl_table_add(&t, row);
    }
    wsq__ctl_table_print(&t, stdout);
    wsq__ctl_table_fini(&t);
}

/* The dead-letter topic TOPIC's rule names (-c, else the built-in default); false when none. */
static int dead_topic_of(wsqctl_t *c, const char *topic, char *out, size_t cap, bool *have)
{
    wsq_config_t *own = NULL;
    const wsq_config_t *cfg = c->cfg;
    char err[256];
    if (cfg == NULL) {
        if (wsq_config_default(&own, err, sizeof(err)) != WSQ_OK)
            return wsq__ctl_fail(c, CTL_ERR, "internal", "the built-in config: %s", err);
        cfg = own;
    }
    *have = wsq_config_dead_topic(wsq_config_dead_letter(cfg, topic, strlen(topic)), topic,
                                  strlen(topic), out, cap);
    wsq_config_free(&own);
    return CTL_OK;
}

int wsq__ctl_cmd_dlq(wsqctl_t *c, int argc, char **argv)
{
    (void)argc;
    const char *topic = argv[0];
    uint64_t from = 1, limit = DLQ_DEFAULT;
    int rc = wsq__ctl_list_args(c, topic, &from, &limit);
    if (rc != CTL_OK)
        return rc;
    char dlq[WSQ_TOPIC_MAX + 1], where[4200];
    bool have_dlq = false;
    rc = dead_topic_of(c, topic, dlq, sizeof(dlq), &have_dlq);
    if (rc != CTL_OK)
        return rc;
    ctl_target_t t;
    if ((rc = wsq__ctl_target(c, CTL_NEED_HISTORY, false, &t)) != CTL_OK) {
        wsq__ctl_target_fini(&t);
        return rc;
    }
    if (t.via == CTL_VIA_BROKER)
        snprintf(where, sizeof(where), "on the broker at %s", c->url.base);
    else
        snprintf(where, sizeof(where), "in %s", c->data_dir);
    page_t pg = {0};
    json_t *lines = json_array();
    redriven_t rd;
    wsq_cstate_init(&rd.cs);
    const char *list = dlq, *filter = topic; /* list `list`, its dead letters of `filter` */
    uint64_t corrupt = 0, more = 0;
    if (lines == NULL) {
        rc = wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
        goto done;
    }
    if (have_dlq && strcmp(dlq, topic) == 0)
        filter = NULL;
    rc = have_dlq ? read_page(c, &t, dlq, from, 1, &pg) : CTL_NOTFOUND;
    if (rc == CTL_NOTFOUND) { /* no dead-letter topic: is TOPIC one itself? */
        rc = read_page(c, &t, topic, 1, 1, &pg);
        if (rc == CTL_NOTFOUND) {
            rc = wsq__ctl_fail(c, CTL_NOTFOUND, "not_found",
                               "topic '%s' does not exist %s (wsqctl topics lists them)", topic,
                               where);
            goto done;
        }
        if (rc != CTL_OK)
            goto done;
        json_t *first = json_array_get(pg.msgs, 0);
        if (first == NULL || header(first, CTL_DEAD_PREFIX "topic") == NULL) {
            if (have_dlq)
                fprintf(stderr, "wsqctl: %s has no dead letters (%s does not exist %s)\n", topic,
                        dlq, where);
            else
                fprintf(stderr,
                        "wsqctl: %s has no dead letters (the dead-letter topic its rule names "
                        "would be longer than 255 bytes)\n",
                        topic);
            goto done;
        }
        list = topic, filter = NULL;
        wsq__ctl_note(c, "%s is a dead-letter topic: listing it whole", topic);
    } else if (rc != CTL_OK) {
        goto done;
    }
    /* The listing ends at the next seq the topic had when it began: a live topic ends too. */
    uint64_t at = from, end = 0;
    bool first = true;
    while (more == 0) {
        size_t room = limit + 1 - json_array_size(lines);
        unsigned want = filter || room > PAGE_MSGS ? PAGE_MSGS : (unsigned)room;
        if ((rc = read_page(c, &t, list, at, want, &pg)) == CTL_NOTFOUND) {
            wsq__ctl_note(c, "%s was deleted while wsqctl read it", list);
            rc = CTL_OK;
            break;
        }
        if (rc != CTL_OK)
            goto done;
        if (first) {
            end = pg.next_seq;
            if (c->from && from < pg.first_seq && from < end)
                fprintf(stderr, "wsqctl: seqs %llu-%llu of %s no longer exist; showing from %llu\n",
                        (unsigned long long)from, (unsigned long long)(pg.first_seq - 1), list,
                        (unsigned long long)pg.first_seq);
            first = false;
        }
        size_t i;
        json_t *m;
        json_array_foreach(pg.msgs, i, m)
        {
            uint64_t seq = jseq(m, "seq");
            at = seq + 1;
            if (seq >= end) {
                at = end;
                break;
            }
            const char *orig = header(m, CTL_DEAD_PREFIX "topic");
            if (filter && (orig == NULL || strcmp(orig, filter) != 0))
                continue;
            if (json_array_size(lines) == limit) {
                more = seq;
                break;
            }
            if (json_array_append(lines, m) != 0) {
                rc = wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
                goto done;
            }
        }
        if (more)
            break;
        if (pg.corrupt_seq && pg.corrupt_seq < end) { /* never shown as data: named, skipped */
            fprintf(stderr,
                    "wsqctl: %s seq %llu does not match its checksum (corrupt); skipped. Run "
                    "wsqctl check\n",
                    list, (unsigned long long)pg.corrupt_seq);
            corrupt++;
            at = pg.corrupt_seq + 1;
            continue;
        }
        if (json_array_size(pg.msgs) == 0 || at >= end)
            break;
    }
    if ((rc = redriven_load(c, t.store, list, &rd)) != CTL_OK)
        goto done;
    wsq__ctl_target_fini(&t); /* the reads are done: output may block from here on */
    if (!rd.known)
        wsq__ctl_note(c, "whether each was redriven is unknown (REDRIVEN ?): the broker's store "
                         "is not on this machine, and its HTTP API serves no consumer state");
    for (size_t i = 0; i < json_array_size(lines); i++) {
        json_t *o = dead_line(list, json_array_get(lines, i), &rd);
        if (o == NULL || json_array_set_new(lines, i, o) != 0) {
            rc = wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
            goto done;
        }
    }
    if (json_array_size(lines) == 0) {
        if (filter)
            fprintf(stderr, "wsqctl: %s has no dead letters%s in %s\n", topic,
                    c->from ? " from that seq on" : "", list);
        else
            fprintf(stderr, "wsqctl: %s holds no messages%s\n", list,
                    c->from ? " from that seq on" : "");
    } else if (c->json) {
        size_t i;
        json_t *o;
        json_array_foreach(lines, i, o)
        {
            json_dumpf(o, stdout, JSON_COMPACT);
            fputc('\n', stdout);
        }
    } else {
        print_table(lines);
    }
    if (more)
        fprintf(stderr, "wsqctl: more dead letters follow: wsqctl dlq %s --from %llu\n", topic,
                (unsigned long long)more);
    if (corrupt)
        rc = CTL_VIOLATIONS;
done:
    wsq_cstate_fini(&rd.cs);
    json_decref(pg.msgs);
    json_decref(lines);
    wsq__ctl_target_fini(&t);
    return rc;
}

/* ------------------------------------------------------------------------------------------- */

/* The summary's "to ...": --to, else the topics published to. */
static void redrive_dests(const ctl_redrive_t *io, char *out, size_t cap)
{
    size_t n = json_array_size(io->topics);
    out[0] = '\0';
    if (io->to)
        snprintf(out, cap, " to %s", io->to);
    else if (n > 3)
        snprintf(out, cap, " to %zu topics", n);
    else
        for (size_t i = 0; i < n; i++) {
            size_t l = strlen(out);
            snprintf(out + l, cap - l, "%s%s", i ? ", " : " to ",
                     json_string_value(json_array_get(io->topics, i)));
        }
}

int wsq__ctl_cmd_redrive(wsqctl_t *c, int argc, char **argv)
{
    (void)argc;
    ctl_redrive_t io;
    memset(&io, 0, sizeof(io));
    io.dlq = argv[0];
    io.to = c->to;
    if (!wsq_topic_valid(io.dlq, strlen(io.dlq)))
        return wsq__ctl_bad_topic(c, io.dlq);
    if (io.to && !wsq_topic_valid(io.to, strlen(io.to)))
        return wsq__ctl_bad_topic(c, io.to);
    if (io.to && strcmp(io.to, io.dlq) == 0)
        return wsq__ctl_fail(c, CTL_USAGE, "usage",
                             "--to must name another topic than the dead-letter topic %s", io.dlq);
    if (c->max && (!wsq__ctl_parse_u64(c->max, &io.max) || io.max == 0))
        return wsq__ctl_fail(c, CTL_USAGE, "usage", "--max must be 1 or more, not '%s'", c->max);
    c->need_broker = "redrive needs a running broker: it publishes and acknowledges through "
                     "wsq.v1, never by writing the store (start wsqd, or pass --url or -c)";
    /* The topic must exist: a subscribe would create the consumer on a topic of that name. */
    page_t pg = {0};
    int rc = read_page(c, &(ctl_target_t){.via = CTL_VIA_BROKER}, io.dlq, 1, 1, &pg);
    json_decref(pg.msgs);
    if (rc == CTL_NOTFOUND)
        return wsq__ctl_fail(c, CTL_NOTFOUND, "not_found",
                             "topic '%s' does not exist on the broker at %s (wsqctl topics lists "
                             "them)",
                             io.dlq, c->url.base);
    if (rc != CTL_OK)
        return rc;
    io.topics = json_array();
    io.failed = json_array();
    if (io.topics == NULL || io.failed == NULL) {
        rc = wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
        goto done;
    }
    rc = wsq__ctl_redrive_run(c, &io);
    if (!io.subscribed)
        goto done;
    size_t nfailed = json_array_size(io.failed);
    char dests[1024], seqs[256] = "";
    redrive_dests(&io, dests, sizeof(dests));
    for (size_t i = 0; i < nfailed && i < 10; i++) {
        size_t l = strlen(seqs);
        snprintf(
            seqs + l, sizeof(seqs) - l, "%s%lld", i ? ", " : "",
            (long long)json_integer_value(json_object_get(json_array_get(io.failed, i), "seq")));
    }
    if (nfailed > 10) {
        size_t l = strlen(seqs);
        snprintf(seqs + l, sizeof(seqs) - l, ", ...");
    }
    if (c->json) {
        wsq__ctl_doc(c, json_pack("{s:s,s:o,s:I,s:I,s:O,s:O,s:b}", "dlq", io.dlq, "to",
                                  io.to ? json_string(io.to) : json_null(), "redriven",
                                  (json_int_t)io.redriven, "dup", (json_int_t)io.dup, "topics",
                                  io.topics, "failed", io.failed, "max_reached", io.max_reached));
    } else {
        char dup[64] = "";
        if (io.dup)
            snprintf(dup, sizeof(dup), " (%llu already published before: dup)",
                     (unsigned long long)io.dup);
        char failed[48] = "";
        if (nfailed)
            snprintf(failed, sizeof(failed), "; %zu not redriven", nfailed);
        printf("redriven %llu of %s%s%s%s%s\n", (unsigned long long)io.redriven, io.dlq, dests, dup,
               io.max_reached ? "; stopped at --max" : "", failed);
    }
    if (rc == CTL_OK && nfailed)
        rc = wsq__ctl_fail(c, CTL_ERR, "not_redriven",
                           "%zu dead letter%s of %s %s not redriven (seq %s): %s stay%s in %s, "
                           "unacknowledged; the reasons are above",
                           nfailed, nfailed == 1 ? "" : "s", io.dlq, nfailed == 1 ? "was" : "were",
                           seqs, nfailed == 1 ? "it" : "they", nfailed == 1 ? "s" : "", io.dlq);
done:
    json_decref(io.topics);
    json_decref(io.failed);
    return rc;
}
