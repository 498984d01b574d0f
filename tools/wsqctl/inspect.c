/*
 * Inspect and backup commands: topics, stats, peek, consumers, check, export, compact.
 *
 * They open the store read-only (the broker's, or the local one: locate.c) and read it in pages,
 * each page one storage call with its own short read transaction; output is written only between
 * calls, so a slow terminal or pipe never pins LMDB pages while wsqd keeps writing. compact is the
 * exception: LMDB's compacting copy is one read transaction over the whole store, so it runs only
 * on a store that no wsqd runs on.
 */
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctl.h"
#include "wsq/topic.h"

#define PAGE 256              /* topics or consumers per read call */
#define READ_BYTES (4u << 20) /* payload bytes per read call */
#define PEEK_DEFAULT 10       /* peek --limit default */
#define PEEK_SHOW 200         /* payload bytes shown in a peek table without --full */

static json_t *ju64(uint64_t v)
{
    return json_integer((json_int_t)v);
}

static json_t *jhex(uint64_t v)
{
    char b[17];
    snprintf(b, sizeof(b), "%016llx", (unsigned long long)v);
    return json_string(b);
}

int wsq__ctl_topic_lookup(wsqctl_t *c, wsq_store_t *s, const char *name, wsq_topic_info_t *ti)
{
    if (!wsq_topic_valid(name, strlen(name)))
        return wsq__ctl_bad_topic(c, name);
    wsq_err err = wsq_store_topic_lookup(s, name, strlen(name), ti);
    if (err == WSQ_ERR_NOTFOUND)
        return wsq__ctl_fail(c, CTL_NOTFOUND, "not_found",
                             "topic '%s' does not exist in %s (wsqctl topics lists them)", name,
                             c->data_dir);
    if (err != WSQ_OK)
        return wsq__ctl_store_fail(c, err, "reading the topic");
    return CTL_OK;
}

static void u64s(char *b, size_t n, uint64_t v)
{
    snprintf(b, n, "%llu", (unsigned long long)v);
}

/* ------------------------------------------------------------------------------------------- */

int wsq__ctl_cmd_topics(wsqctl_t *c, int argc, char **argv)
{
    (void)argc, (void)argv;
    wsq_store_t *s;
    int rc = wsq__ctl_open_ro(c, &s);
    if (rc != CTL_OK)
        return rc;
    static const char *head[] = {"TOPIC", "FIRST", "LAST", "COUNT", "BYTES", "OLDEST"};
    static const bool right[] = {false, true, true, true, true, true};
    ctl_table_t t;
    wsq__ctl_table_init(&t, 6, head, right);
    json_t *arr = json_array();
    wsq_topic_info_t *page = malloc(PAGE * sizeof(*page));
    char after[WSQ_TOPIC_MAX + 1] = "";
    int64_t now = wsq_store_now_ms(s);
    if (page == NULL || arr == NULL) {
        rc = wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
        goto done;
    }
    for (;;) {
        unsigned n = 0;
        wsq_err err = wsq_store_topic_list(s, after[0] ? after : NULL, PAGE, page, &n);
        if (err != WSQ_OK) {
            rc = wsq__ctl_store_fail(c, err, "listing topics");
            goto done;
        }
        for (unsigned i = 0; i < n; i++) {
            const wsq_topic_info_t *ti = &page[i];
            uint64_t last = ti->next_seq - 1;
            int64_t age = ti->count ? now - ti->first_ts_ms : -1;
            json_t *o = json_object();
            json_object_set_new(o, "name", json_string(ti->name));
            json_object_set_new(o, "id", ju64(ti->id));
            json_object_set_new(o, "epoch", jhex(ti->epoch));
            json_object_set_new(o, "first_seq", ju64(ti->first_seq));
            json_object_set_new(o, "last_seq", ju64(last));
            json_object_set_new(o, "next_seq", ju64(ti->next_seq));
            json_object_set_new(o, "count", ju64(ti->count));
            json_object_set_new(o, "bytes", ju64(ti->bytes));
            json_object_set_new(o, "created_ms", json_integer(ti->created_ms));
            json_object_set_new(o, "oldest_ts_ms",
                                ti->count ? json_integer(ti->first_ts_ms) : json_null());
            json_object_set_new(o, "oldest_age_ms", age >= 0 ? json_integer(age) : json_null());
            json_object_set_new(o, "purged_upto", ju64(ti->purged_upto));
            json_array_append_new(arr, o);
            char first[24], lst[24], cnt[24], bytes[32], oldest[32];
            if (ti->count)
                u64s(first, sizeof(first), ti->first_seq);
            else
                snprintf(first, sizeof(first), "-");
            if (last)
                u64s(lst, sizeof(lst), last);
            else
                snprintf(lst, sizeof(lst), "-");
            u64s(cnt, sizeof(cnt), ti->count);
            wsq__ctl_size(ti->bytes, bytes, sizeof(bytes));
            if (age >= 0)
                wsq__ctl_age(age, oldest, sizeof(oldest));
            else
                snprintf(oldest, sizeof(oldest), "-");
            const char *row[] = {ti->name, first, lst, cnt, bytes, oldest};
            if (!wsq__ctl_table_add(&t, row)) {
                rc = wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
                goto done;
            }
        }
        if (n < PAGE)
            break;
        memcpy(after, page[n - 1].name, sizeof(after));
    }
    wsq_store_close(s);
    s = NULL;
    if (c->json)
        wsq__ctl_doc(c, json_pack("{s:o}", "topics", arr)), arr = NULL;
    else
        wsq__ctl_table_print(&t, stdout);
done:
    json_decref(arr);
    free(page);
    wsq__ctl_table_fini(&t);
    wsq_store_close(s);
    return rc;
}

/* ------------------------------------------------------------------------------------------- */

/* Bytes of the regular files in dir: apparent size and disk usage. */
static void dir_size(const char *dir, uint64_t *bytes, uint64_t *disk)
{
    *bytes = *disk = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[PATH_MAX];
        struct stat st;
        if (snprintf(p, sizeof(p), "%s/%s", dir, e->d_name) >= (int)sizeof(p))
            continue;
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            *bytes += (uint64_t)st.st_size;
            *disk += (uint64_t)st.st_blocks * 512u;
        }
    }
    closedir(d);
}

int wsq__ctl_cmd_stats(wsqctl_t *c, int argc, char **argv)
{
    (void)argc, (void)argv;
    wsq_store_t *s;
    int rc = wsq__ctl_open_ro(c, &s);
    if (rc != CTL_OK)
        return rc;
    wsq_store_stats_t st;
    wsq_err err = wsq_store_stats(s, &st);
    wsq_store_close(s);
    if (err != WSQ_OK)
        return wsq__ctl_store_fail(c, err, "reading statistics");
    uint64_t dbytes, ddisk;
    dir_size(c->data_dir, &dbytes, &ddisk);
    char real[PATH_MAX];
    const char *abs = realpath(c->data_dir, real) ? real : c->data_dir;
    char who[64];
    long pid = wsq__ctl_lock_holder(c->data_dir, who, sizeof(who));
    bool max_known = c->cfg != NULL;

    if (c->json) {
        json_t *lock = json_object();
        json_object_set_new(lock, "held", json_boolean(pid != 0));
        json_object_set_new(lock, "pid", pid > 0 ? json_integer(pid) : json_null());
        json_object_set_new(lock, "process", pid != 0 ? json_string(who) : json_null());
        json_t *o = json_object();
        json_object_set_new(o, "data_dir", json_string(abs));
        json_object_set_new(o, "format", ju64(st.format));
        json_object_set_new(o, "backend", json_string(wsq_store_backend_version()));
        json_object_set_new(o, "map_size", ju64(st.map_size));
        json_object_set_new(o, "map_size_max",
                            max_known ? ju64(c->cfg->storage.map_size_max) : json_null());
        json_object_set_new(o, "map_used", ju64(st.map_used));
        json_object_set_new(o, "page_size", ju64(st.page_size));
        json_object_set_new(o, "pages_used", ju64(st.pages_used));
        json_object_set_new(o, "pages_free", ju64(st.pages_free));
        json_object_set_new(o, "readers_used", ju64(st.readers_used));
        json_object_set_new(o, "readers_max", ju64(st.readers_max));
        json_object_set_new(o, "data_file_bytes", ju64(st.file_bytes));
        json_object_set_new(o, "data_dir_bytes", ju64(dbytes));
        json_object_set_new(o, "data_dir_disk_bytes", ju64(ddisk));
        json_object_set_new(o, "topics", ju64(st.topics));
        json_object_set_new(o, "messages", ju64(st.messages));
        json_object_set_new(o, "message_bytes", ju64(st.message_bytes));
        json_object_set_new(o, "consumers", ju64(st.consumers));
        json_object_set_new(o, "last_txn", ju64(st.last_txn));
        json_object_set_new(o, "lock", lock);
        wsq__ctl_doc(c, o);
        return CTL_OK;
    }
    char a[64], b[64], m[64], line[PATH_MAX + 64];
    static const char *head[] = {"STAT", "VALUE"};
    static const bool right[] = {false, false};
    ctl_table_t t;
    wsq__ctl_table_init(&t, 2, head, right);
#define ROW(k, ...)                                                                                \
    do {                                                                                           \
        snprintf(line, sizeof(line), __VA_ARGS__);                                                 \
        const char *r_[] = {k, line};                                                              \
        wsq__ctl_table_add(&t, r_);                                                                \
    } while (0)
    ROW("data dir", "%s", abs);
    ROW("format", "%u (this wsqctl writes %d)", st.format, WSQ_FORMAT_VERSION);
    ROW("backend", "%s", wsq_store_backend_version());
    if (max_known)
        ROW("map", "%s used of %s mapped (max %s)", wsq__ctl_size(st.map_used, a, sizeof(a)),
            wsq__ctl_size(st.map_size, b, sizeof(b)),
            wsq__ctl_size(c->cfg->storage.map_size_max, m, sizeof(m)));
    else
        ROW("map", "%s used of %s mapped (max: pass -c CONFIG)",
            wsq__ctl_size(st.map_used, a, sizeof(a)), wsq__ctl_size(st.map_size, b, sizeof(b)));
    ROW("pages", "%llu used, %llu free, %u B each", (unsigned long long)st.pages_used,
        (unsigned long long)st.pages_free, st.page_size);
    ROW("readers", "%u of %u slots", st.readers_used, st.readers_max);
    ROW("data file", "%s", wsq__ctl_size(st.file_bytes, a, sizeof(a)));
    ROW("data dir size", "%s (%s on disk)", wsq__ctl_size(dbytes, a, sizeof(a)),
        wsq__ctl_size(ddisk, b, sizeof(b)));
    ROW("topics", "%llu", (unsigned long long)st.topics);
    ROW("messages", "%llu (%s)", (unsigned long long)st.messages,
        wsq__ctl_size(st.message_bytes, a, sizeof(a)));
    ROW("consumers", "%llu", (unsigned long long)st.consumers);
    ROW("last txn", "%llu", (unsigned long long)st.last_txn);
    if (pid > 0)
        ROW("lock", "held by pid %ld (%s)", pid, who);
    else if (pid < 0)
        ROW("lock", "held by an unknown process");
    else
        ROW("lock", "free (no wsqd runs on this store)");
#undef ROW
    wsq__ctl_table_print(&t, stdout);
    wsq__ctl_table_fini(&t);
    return CTL_OK;
}

/* ------------------------------------------------------------------------------------------- */

typedef struct {
    uint64_t seq;
    int64_t ts;
    uint32_t flags;
    size_t len;          /* payload length */
    unsigned char *data; /* the first kept bytes of the payload (table) */
    size_t kept;         /* bytes in data */
    json_t *json;        /* the message as --json shows it (--json), else NULL */
} peek_msg_t;

typedef struct {
    peek_msg_t *msgs;
    size_t n, cap;
    size_t keep; /* payload bytes to copy per message (SIZE_MAX: all) */
    bool json;   /* build each message's JSON (--json) instead of copying its payload */
    bool nomem;
} peek_t;

json_t *wsq__ctl_msg_json(uint64_t seq, int64_t ts, uint32_t flags, const void *data, size_t len,
                          const void *headers, size_t headers_len)
{
    json_t *o = json_object(), *d = NULL, *h = NULL;
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "seq", ju64(seq));
    json_object_set_new(o, "ts", json_integer(ts));
    json_object_set_new(o, "size", ju64(len));
    if (!(flags & WSQ_MSG_BINARY))
        d = json_stringn(len ? (const char *)data : "", len);
    if (d == NULL) { /* binary (or text that is not UTF-8): base64 */
        char *b64 = malloc(wsq_base64_enc_len(len) + 1);
        if (b64) {
            wsq_base64_encode(data, len, b64);
            d = json_stringn(b64, wsq_base64_enc_len(len));
            free(b64);
        }
        if (d == NULL || json_object_set_new(o, "data", d) != 0 ||
            json_object_set_new(o, "enc", json_string("base64")) != 0)
            goto fail;
    } else if (json_object_set_new(o, "data", d) != 0) {
        goto fail;
    }
    if (headers_len) {
        wsq_buf_t b;
        wsq_buf_init(&b);
        if (wsq_headers_json(&b, headers, headers_len) == WSQ_OK)
            h = json_loadb((const char *)b.data, b.len, JSON_ALLOW_NUL, NULL);
        wsq_buf_fini(&b);
        if (h == NULL || json_object_set_new(o, "headers", h) != 0)
            goto fail;
    }
    return o;
fail:
    json_decref(o);
    return NULL;
}

static int peek_one(void *arg, const wsq_msg_view_t *m)
{
    peek_t *p = arg;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        peek_msg_t *nm = realloc(p->msgs, cap * sizeof(*nm));
        if (nm == NULL) {
            p->nomem = true;
            return 1;
        }
        p->msgs = nm;
        p->cap = cap;
    }
    peek_msg_t *o = &p->msgs[p->n];
    memset(o, 0, sizeof(*o));
    o->seq = m->seq;
    o->ts = m->ts_ms;
    o->flags = m->flags;
    o->len = m->len;
    if (p->json) {
        o->json = wsq__ctl_msg_json(m->seq, m->ts_ms, m->flags, m->data, m->len, m->headers,
                                    m->headers_len);
        if (o->json == NULL) {
            p->nomem = true;
            return 1;
        }
        p->n++;
        return 0;
    }
    o->kept = m->len < p->keep ? m->len : p->keep;
    o->data = malloc(o->kept + 1);
    if (o->data == NULL) {
        p->nomem = true;
        return 1;
    }
    if (o->kept)
        memcpy(o->data, m->data, o->kept);
    p->n++;
    return 0;
}

/* Payload for a table cell: text with control characters escaped, binary as hex or base64. */
static char *show_payload(const peek_msg_t *m, bool base64, bool truncated)
{
    wsq_buf_t b;
    wsq_buf_init(&b);
    bool binary = (m->flags & WSQ_MSG_BINARY) != 0;
    size_t n = m->kept;
    if (!binary && !wsq_utf8_valid(m->data, n)) {
        /* a cut in the middle of a sequence: drop the partial tail */
        while (n > 0 && !wsq_utf8_valid(m->data, n))
            n--;
    }
    if (binary && base64) {
        size_t el = wsq_base64_enc_len(n);
        if (wsq_buf_reserve(&b, el + 1) == WSQ_OK) {
            wsq_base64_encode(m->data, n, (char *)b.data);
            b.len = el;
        }
    } else if (binary) {
        static const char hx[] = "0123456789abcdef";
        for (size_t i = 0; i < n; i++) {
            char h[2] = {hx[m->data[i] >> 4], hx[m->data[i] & 15]};
            wsq_buf_append(&b, h, 2);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = m->data[i];
            char e[8];
            if (ch == '\n')
                wsq_buf_append(&b, "\\n", 2);
            else if (ch == '\t')
                wsq_buf_append(&b, "\\t", 2);
            else if (ch == '\r')
                wsq_buf_append(&b, "\\r", 2);
            else if (ch == '\\')
                wsq_buf_append(&b, "\\\\", 2);
            else if (ch < 0x20 || ch == 0x7f) {
                snprintf(e, sizeof(e), "\\x%02x", ch);
                wsq_buf_append(&b, e, 4);
            } else
                wsq_buf_append(&b, &ch, 1);
        }
    }
    if (truncated && m->len > n) {
        char e[64];
        int k = snprintf(e, sizeof(e), "... (+%zu bytes)", m->len - n);
        wsq_buf_append(&b, e, (size_t)k);
    }
    wsq_buf_append(&b, "", 1);
    return (char *)b.data;
}

int wsq__ctl_cmd_peek(wsqctl_t *c, int argc, char **argv)
{
    (void)argc;
    const char *topic = argv[0];
    uint64_t from = 0, limit = PEEK_DEFAULT;
    int rc = wsq__ctl_list_args(c, topic, &from, &limit);
    if (rc != CTL_OK)
        return rc;
    wsq_store_t *s;
    rc = wsq__ctl_open_ro(c, &s);
    if (rc != CTL_OK)
        return rc;
    wsq_topic_info_t ti;
    if ((rc = wsq__ctl_topic_lookup(c, s, topic, &ti)) != CTL_OK) {
        wsq_store_close(s);
        return rc;
    }
    if (from == 0)
        from = ti.first_seq;
    peek_t p = {NULL, 0, 0, c->full ? SIZE_MAX : PEEK_SHOW, c->json, false};
    wsq_read_info_t first_info, info;
    memset(&first_info, 0, sizeof(first_info));
    bool first = true;
    uint64_t at = from, corrupt = 0;
    while (p.n < limit) {
        uint64_t want = limit - p.n;
        wsq_err err = wsq_store_read(s, ti.id, at, want > 1000 ? 1000 : (uint32_t)want, READ_BYTES,
                                     peek_one, &p, &info);
        if (err != WSQ_OK || p.nomem) {
            rc = p.nomem ? wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory")
                         : wsq__ctl_store_fail(c, err, "reading messages");
            goto done;
        }
        if (first)
            first_info = info, first = false;
        if (info.corrupt_seq) { /* never shown as data: named, skipped */
            fprintf(stderr,
                    "wsqctl: %s seq %llu does not match its checksum (corrupt); skipped. Run "
                    "wsqctl check\n",
                    ti.name, (unsigned long long)info.corrupt_seq);
            corrupt++;
            at = info.corrupt_seq + 1;
            continue;
        }
        if (info.count == 0)
            break;
        at = info.last_seq + 1;
    }
    wsq_store_close(s);
    s = NULL;
    bool gap = first_info.gap;
    uint64_t gap_to = first_info.first_seq - 1;
    const char *reason = first_info.purged_upto >= from ? "purge" : "retention";
    if (c->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < p.n; i++) {
            json_array_append_new(arr, p.msgs[i].json);
            p.msgs[i].json = NULL;
        }
        json_t *doc = json_object();
        json_object_set_new(doc, "topic", json_string(ti.name));
        json_object_set_new(doc, "epoch", jhex(first_info.epoch));
        json_object_set_new(doc, "first_seq", ju64(first_info.first_seq));
        json_object_set_new(doc, "next_seq", ju64(first_info.next_seq));
        json_object_set_new(doc, "messages", arr);
        if (gap)
            json_object_set_new(doc, "gap",
                                json_pack("{s:o,s:o,s:s}", "from", ju64(from), "to", ju64(gap_to),
                                          "reason", reason));
        wsq__ctl_doc(c, doc);
        rc = corrupt ? CTL_VIOLATIONS : rc;
        goto done;
    }
    if (gap)
        fprintf(stderr, "wsqctl: seqs %llu-%llu of %s no longer exist (%s); showing from %llu\n",
                (unsigned long long)from, (unsigned long long)gap_to, ti.name, reason,
                (unsigned long long)first_info.first_seq);
    static const char *head[] = {"SEQ", "TIME", "SIZE", "TYPE", "PAYLOAD"};
    static const bool right[] = {true, false, true, false, false};
    ctl_table_t t;
    wsq__ctl_table_init(&t, 5, head, right);
    for (size_t i = 0; i < p.n; i++) {
        peek_msg_t *m = &p.msgs[i];
        char seq[24], tm[40], size[32];
        u64s(seq, sizeof(seq), m->seq);
        wsq__ctl_time(m->ts, tm, sizeof(tm));
        u64s(size, sizeof(size), m->len);
        char *pl = show_payload(m, c->base64, !c->full);
        const char *row[] = {seq, tm, size, (m->flags & WSQ_MSG_BINARY) ? "binary" : "text",
                             pl ? pl : "?"};
        wsq__ctl_table_add(&t, row);
        free(pl);
    }
    wsq__ctl_table_print(&t, stdout);
    wsq__ctl_table_fini(&t);
    if (corrupt)
        rc = CTL_VIOLATIONS;
done:
    for (size_t i = 0; i < p.n; i++) {
        free(p.msgs[i].data);
        json_decref(p.msgs[i].json);
    }
    free(p.msgs);
    wsq_store_close(s);
    return rc;
}

/* ------------------------------------------------------------------------------------------- */

int wsq__ctl_cmd_consumers(wsqctl_t *c, int argc, char **argv)
{
    const char *topic = argc > 0 ? argv[0] : NULL;
    if (topic && !wsq_topic_valid(topic, strlen(topic)))
        return wsq__ctl_bad_topic(c, topic);
    wsq_store_t *s;
    int rc = wsq__ctl_open_ro(c, &s);
    if (rc != CTL_OK)
        return rc;
    wsq_topic_info_t ti = {0};
    if (topic && (rc = wsq__ctl_topic_lookup(c, s, topic, &ti)) != CTL_OK) {
        wsq_store_close(s);
        return rc;
    }
    static const char *head[] = {"TOPIC",   "CONSUMER", "MODE", "ACK-FLOOR", "DELIVERED",
                                 "PENDING", "LAG",      "GAP",  "MAX-DELIV", "LAST-SEEN"};
    static const bool right[] = {false, false, false, true, true, true, true, true, true, true};
    ctl_table_t t;
    wsq__ctl_table_init(&t, 10, head, right);
    json_t *arr = json_array();
    wsq_consumer_info_t *page = malloc(PAGE * sizeof(*page));
    uint32_t after_topic = 0, name_id = 0;
    char after[WSQ_CONSUMER_NAME_MAX + 1] = "";
    char tname[WSQ_TOPIC_MAX + 1] = "";
    wsq_topic_info_t cur; /* the topic of the consumers being listed */
    bool have_topic = false;
    int64_t now = wsq_store_now_ms(s);
    if (page == NULL || arr == NULL) {
        rc = wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
        goto done;
    }
    for (;;) {
        unsigned n = 0;
        wsq_err err =
            wsq_store_consumer_list(s, ti.id, after_topic, after[0] ? after : NULL, PAGE, page, &n);
        if (err != WSQ_OK) {
            rc = wsq__ctl_store_fail(c, err, "listing consumers");
            goto done;
        }
        for (unsigned i = 0; i < n; i++) {
            const wsq_consumer_info_t *ci = &page[i];
            if (ci->topic_id != name_id) { /* the list is ordered by topic id */
                have_topic = wsq_store_topic_get(s, ci->topic_id, &cur) == WSQ_OK;
                if (have_topic)
                    memcpy(tname, cur.name, sizeof(tname));
                else
                    snprintf(tname, sizeof(tname), "#%u", ci->topic_id);
                name_id = ci->topic_id;
            }
            /* Unacknowledged messages below the topic's first seq were removed (purge or
             * retention): they are neither pending nor lag, and the consumer is told so with a
             * gap [ack floor + 1, first seq - 1] when it resumes (which acknowledges them). */
            bool gap = have_topic && ci->ack_floor + 1 < cur.first_seq;
            uint64_t gap_from = ci->ack_floor + 1, gap_to = gap ? cur.first_seq - 1 : 0;
            const char *reason = gap && cur.purged_upto >= gap_from ? "purge" : "retention";
            json_t *o = json_object();
            json_object_set_new(o, "topic", json_string(tname));
            json_object_set_new(o, "topic_id", ju64(ci->topic_id));
            json_object_set_new(o, "name", json_string(ci->name));
            json_object_set_new(o, "shared", json_boolean(ci->shared));
            json_object_set_new(o, "ack_floor", ju64(ci->ack_floor));
            json_object_set_new(o, "delivered_upto", ju64(ci->delivered_upto));
            json_object_set_new(o, "pending", ju64(ci->pending));
            json_object_set_new(o, "lag", ju64(ci->lag));
            json_object_set_new(o, "gap",
                                gap ? json_pack("{s:o,s:o,s:s}", "from", ju64(gap_from), "to",
                                                ju64(gap_to), "reason", reason)
                                    : json_null());
            json_object_set_new(o, "acked_above_floor", ju64(ci->n_acked));
            json_object_set_new(o, "max_deliveries", ju64(ci->max_delivered));
            json_object_set_new(o, "created_ms", json_integer(ci->created_ms));
            json_object_set_new(o, "last_seen_ms", json_integer(ci->last_seen_ms));
            json_object_set_new(o, "last_seen_age_ms", json_integer(now - ci->last_seen_ms));
            json_array_append_new(arr, o);
            char fl[24], dl[24], pe[24], lag[24], gp[48], md[24], seen[32];
            if (gap)
                snprintf(gp, sizeof(gp), "%llu-%llu", (unsigned long long)gap_from,
                         (unsigned long long)gap_to);
            else
                snprintf(gp, sizeof(gp), "-");
            u64s(fl, sizeof(fl), ci->ack_floor);
            u64s(dl, sizeof(dl), ci->delivered_upto);
            u64s(pe, sizeof(pe), ci->pending);
            u64s(lag, sizeof(lag), ci->lag);
            u64s(md, sizeof(md), ci->max_delivered);
            wsq__ctl_age(now - ci->last_seen_ms, seen, sizeof(seen));
            const char *row[] = {
                tname, ci->name, ci->shared ? "shared" : "exclusive", fl, dl, pe, lag, gp,
                md,    seen};
            wsq__ctl_table_add(&t, row);
        }
        if (n < PAGE)
            break;
        after_topic = page[n - 1].topic_id;
        memcpy(after, page[n - 1].name, sizeof(after));
    }
    wsq_store_close(s);
    s = NULL;
    if (c->json)
        wsq__ctl_doc(c, json_pack("{s:o}", "consumers", arr)), arr = NULL;
    else
        wsq__ctl_table_print(&t, stdout);
done:
    json_decref(arr);
    free(page);
    wsq__ctl_table_fini(&t);
    wsq_store_close(s);
    return rc;
}

/* ------------------------------------------------------------------------------------------- */

static void on_violation(void *arg, const char *topic, const char *what)
{
    json_array_append_new((json_t *)arg,
                          json_pack("{s:s,s:s}", "topic", topic ? topic : "", "problem", what));
}

int wsq__ctl_cmd_check(wsqctl_t *c, int argc, char **argv)
{
    (void)argc, (void)argv;
    wsq_store_t *s;
    int rc = wsq__ctl_open_ro(c, &s);
    if (rc != CTL_OK)
        return rc;
    json_t *viol = json_array();
    uint64_t n = 0;
    wsq_store_stats_t st;
    wsq_err err = wsq_store_stats(s, &st);
    if (err == WSQ_OK)
        err = wsq_store_check(s, on_violation, viol, &n);
    wsq_store_close(s);
    if (err != WSQ_OK) {
        json_decref(viol);
        return wsq__ctl_store_fail(c, err, "checking the store");
    }
    if (c->json) {
        json_t *o = json_object();
        json_object_set_new(o, "ok", json_boolean(n == 0));
        json_object_set_new(o, "violations", json_incref(viol));
        json_object_set_new(o, "count", ju64(n));
        json_object_set_new(o, "topics", ju64(st.topics));
        json_object_set_new(o, "messages", ju64(st.messages));
        json_object_set_new(o, "consumers", ju64(st.consumers));
        wsq__ctl_doc(c, o);
    } else {
        size_t i;
        json_t *v;
        json_array_foreach(viol, i, v)
        {
            printf("%s: %s\n", json_string_value(json_object_get(v, "topic")),
                   json_string_value(json_object_get(v, "problem")));
        }
        if (n == 0)
            printf("ok: %llu topics, %llu messages, %llu consumers checked; no violations\n",
                   (unsigned long long)st.topics, (unsigned long long)st.messages,
                   (unsigned long long)st.consumers);
    }
    json_decref(viol);
    if (n)
        return wsq__ctl_fail(c, CTL_VIOLATIONS, "violations",
                             "check found %llu violation%s in the store at %s",
                             (unsigned long long)n, n == 1 ? "" : "s", c->data_dir);
    return CTL_OK;
}

/* ------------------------------------------------------------------------------------------- */

typedef struct {
    wsq_buf_t out;
    const char *topic;
    size_t topic_len;
    uint64_t end;      /* export seqs below this (the topic's next seq when its export began) */
    uint64_t n;        /* messages written */
    uint64_t not_utf8; /* text messages that were not valid UTF-8 (exported as base64) */
    uint64_t corrupt;  /* messages that failed their checksum (left out) */
    bool nomem;
} export_t;

static int export_one(void *arg, const wsq_msg_view_t *m)
{
    export_t *x = arg;
    if (m->seq >= x->end)
        return 1;
    wsq_buf_t *b = &x->out;
    char head[96];
    int k = snprintf(head, sizeof(head), "{\"topic\":\"");
    wsq_err e = wsq_buf_append(b, head, (size_t)k);
    if (e == WSQ_OK)
        e = wsq_buf_append(b, x->topic, x->topic_len); /* topic names need no escaping */
    k = snprintf(head, sizeof(head), "\",\"seq\":%llu,\"ts\":%lld,\"data\":\"",
                 (unsigned long long)m->seq, (long long)m->ts_ms);
    if (e == WSQ_OK)
        e = wsq_buf_append(b, head, (size_t)k);
    bool b64 = (m->flags & WSQ_MSG_BINARY) != 0;
    if (e == WSQ_OK && !b64) {
        size_t mark = b->len;
        e = wsq_json_escape(b, m->data, m->len);
        if (e == WSQ_ERR_BAD_UTF8) {
            b->len = mark;
            b64 = true;
            x->not_utf8++;
            e = WSQ_OK;
        }
    }
    if (e == WSQ_OK && b64) {
        size_t el = wsq_base64_enc_len(m->len);
        e = wsq_buf_reserve(b, el);
        if (e == WSQ_OK) {
            wsq_base64_encode(m->data, m->len, (char *)b->data + b->len);
            b->len += el;
        }
    }
    if (e == WSQ_OK)
        e = b64 ? wsq_buf_append(b, "\",\"enc\":\"base64\"", 16) : wsq_buf_append(b, "\"", 1);
    if (e == WSQ_OK && m->headers_len) {
        e = wsq_buf_append(b, ",\"headers\":", 11);
        if (e == WSQ_OK)
            e = wsq_headers_json(b, m->headers, m->headers_len);
    }
    if (e == WSQ_OK)
        e = wsq_buf_append(b, "}\n", 2);
    if (e != WSQ_OK) {
        x->nomem = true;
        return 1;
    }
    x->n++;
    return 0;
}

/* Writes one topic's messages [first_seq, next_seq at the start) as JSON Lines. */
static int export_topic(wsqctl_t *c, wsq_store_t *s, const wsq_topic_info_t *ti, export_t *x)
{
    x->topic = ti->name;
    x->topic_len = strlen(ti->name);
    x->end = ti->next_seq;
    uint64_t at = ti->first_seq;
    while (at < x->end) {
        wsq_read_info_t info;
        x->out.len = 0;
        wsq_err err = wsq_store_read(s, ti->id, at, 1000, READ_BYTES, export_one, x, &info);
        if (err == WSQ_ERR_NOTFOUND) {
            wsq__ctl_note(c, "export: topic %s was deleted meanwhile", ti->name);
            return CTL_OK;
        }
        if (err != WSQ_OK)
            return wsq__ctl_store_fail(c, err, "reading messages");
        if (x->nomem)
            return wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
        if (info.gap)
            wsq__ctl_note(c, "export: %s seqs %llu-%llu were removed while exporting", ti->name,
                          (unsigned long long)at, (unsigned long long)(info.first_seq - 1));
        /* the read transaction has ended: now the output may block */
        if (x->out.len && fwrite(x->out.data, 1, x->out.len, stdout) != x->out.len)
            return wsq__ctl_fail(c, CTL_ERR, "io_error", "writing the export failed");
        if (info.corrupt_seq && info.corrupt_seq < x->end) {
            /* never exported as data: a backup must not carry bytes wsq cannot vouch for */
            fprintf(stderr,
                    "wsqctl: export: %s seq %llu does not match its checksum (corrupt); left "
                    "out. Run wsqctl check\n",
                    ti->name, (unsigned long long)info.corrupt_seq);
            x->corrupt++;
            at = info.corrupt_seq + 1;
            continue;
        }
        if (info.count == 0)
            break;
        at = info.last_seq + 1;
    }
    return CTL_OK;
}

int wsq__ctl_cmd_export(wsqctl_t *c, int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (!wsq_topic_valid(argv[i], strlen(argv[i])))
            return wsq__ctl_bad_topic(c, argv[i]);
    wsq_store_t *s;
    int rc = wsq__ctl_open_ro(c, &s);
    if (rc != CTL_OK)
        return rc;
    export_t x;
    memset(&x, 0, sizeof(x));
    wsq_buf_init(&x.out);
    wsq_topic_info_t *page = malloc(PAGE * sizeof(*page));
    uint64_t topics = 0;
    if (page == NULL) {
        rc = wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
        goto done;
    }
    if (argc > 0) {
        /* every named topic must exist before the first line is written */
        for (int i = 0; i < argc; i++)
            if ((rc = wsq__ctl_topic_lookup(c, s, argv[i], &page[0])) != CTL_OK)
                goto done;
        for (int i = 0; i < argc && rc == CTL_OK; i++) {
            if ((rc = wsq__ctl_topic_lookup(c, s, argv[i], &page[0])) == CTL_OK) {
                rc = export_topic(c, s, &page[0], &x);
                topics++;
            }
        }
    } else {
        char after[WSQ_TOPIC_MAX + 1] = "";
        for (;;) {
            unsigned n = 0;
            wsq_err err = wsq_store_topic_list(s, after[0] ? after : NULL, PAGE, page, &n);
            if (err != WSQ_OK) {
                rc = wsq__ctl_store_fail(c, err, "listing topics");
                goto done;
            }
            for (unsigned i = 0; i < n; i++) {
                if ((rc = export_topic(c, s, &page[i], &x)) != CTL_OK)
                    goto done;
                topics++;
            }
            if (n < PAGE)
                break;
            memcpy(after, page[n - 1].name, sizeof(after));
        }
    }
    if (rc == CTL_OK) {
        if (x.not_utf8)
            fprintf(stderr,
                    "wsqctl: warning: %llu text messages were not valid UTF-8; they were "
                    "exported base64-encoded and will import as binary\n",
                    (unsigned long long)x.not_utf8);
        wsq__ctl_note(c, "exported %llu messages from %llu topics", (unsigned long long)x.n,
                      (unsigned long long)topics);
        if (x.corrupt) {
            fprintf(stderr,
                    "wsqctl: export: %llu corrupt messages were left out; the rest is "
                    "complete\n",
                    (unsigned long long)x.corrupt);
            rc = CTL_VIOLATIONS;
        }
    }
done:
    free(page);
    wsq_buf_fini(&x.out);
    wsq_store_close(s);
    return rc;
}

/* ------------------------------------------------------------------------------------------- */

int wsq__ctl_cmd_compact(wsqctl_t *c, int argc, char **argv)
{
    (void)argc;
    const char *dest = argv[0];
    ctl_target_t tg;
    int rc = wsq__ctl_target(c, CTL_NEED_OFFLINE, false, &tg);
    if (rc != CTL_OK) {
        wsq__ctl_target_fini(&tg);
        return rc;
    }
    wsq_store_t *s = tg.store;
    char src_real[PATH_MAX], dst_real[PATH_MAX];
    if (realpath(c->data_dir, src_real) && realpath(dest, dst_real) &&
        strcmp(src_real, dst_real) == 0) {
        wsq_store_close(s);
        return wsq__ctl_fail(c, CTL_USAGE, "usage",
                             "DEST must be another directory than the "
                             "store itself");
    }
    wsq_err err = wsq_store_compact(s, dest);
    wsq_store_close(s);
    if (err == WSQ_ERR_EXISTS)
        return wsq__ctl_fail(c, CTL_ERR, "exists",
                             "%s already holds a store (data.mdb): compact writes a new copy, "
                             "give an empty or missing directory",
                             dest);
    if (err == WSQ_ERR_PERM)
        return wsq__ctl_fail(c, CTL_ERR, "permission_denied",
                             "permission denied writing the copy into %s", dest);
    if (err == WSQ_ERR_NOSTORE) /* ENOENT: DEST is created, its parents are not */
        return wsq__ctl_fail(c, CTL_ERR, "io_error",
                             "cannot create %s: its parent directory does not exist (compact "
                             "creates DEST, not its parents)",
                             dest);
    if (err != WSQ_OK)
        return wsq__ctl_fail(c, CTL_ERR, wsq_errname(err), "compacting %s into %s: %s", c->data_dir,
                             dest, wsq_strerror(err));
    char p[PATH_MAX];
    struct stat a, b;
    uint64_t src_bytes = 0, dst_bytes = 0;
    snprintf(p, sizeof(p), "%s/data.mdb", c->data_dir);
    if (stat(p, &a) == 0)
        src_bytes = (uint64_t)a.st_size;
    snprintf(p, sizeof(p), "%s/data.mdb", dest);
    if (stat(p, &b) == 0)
        dst_bytes = (uint64_t)b.st_size;
    if (c->json) {
        wsq__ctl_doc(c, json_pack("{s:s,s:s,s:o,s:o}", "source", c->data_dir, "dest", dest,
                                  "source_bytes", ju64(src_bytes), "dest_bytes", ju64(dst_bytes)));
    } else {
        char x[32], y[32];
        printf("compacted %s (%s) into %s (%s)\n", c->data_dir,
               wsq__ctl_size(src_bytes, x, sizeof(x)), dest,
               wsq__ctl_size(dst_bytes, y, sizeof(y)));
    }
    return CTL_OK;
}
