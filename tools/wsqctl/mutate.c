/*
 * Mutations: purge, delete-consumer, import.
 *
 * Where they go is the one rule of locate.c: through the admin API of a broker that answers and
 * serves the store (wsqd stays the only writer of its store), else on the local store, whose
 * data-dir lock wsqctl holds meanwhile (a wsqd cannot start on it until wsqctl is done). A local
 * store that is locked by another process is refused, naming the holder.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctl.h"
#include "wsq/topic.h"

#define IMPORT_LINES 1000               /* lines per import request or offline batch */
#define IMPORT_BYTES (8u << 20)         /* body bytes per import request or offline batch */
#define IMPORT_MAX_PAYLOAD (256u << 20) /* payload cap when no config says better */

static const char *via_name(ctl_via_t v)
{
    return v == CTL_VIA_BROKER ? "broker" : "store";
}

static bool consumer_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > WSQ_CONSUMER_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* Explains a not_found: the topic or the consumer. Reads the store when it is here: the local
 * one, or the broker's when its lock is held by the broker's pid (it may be on another machine). */
static int not_found(wsqctl_t *c, ctl_target_t *t, const char *topic, const char *consumer)
{
    bool topic_exists = true;
    wsq_store_t *s = t->store;
    bool opened = false;
    if (s == NULL)
        opened = (s = wsq__ctl_broker_store(c, t)) != NULL;
    if (s) {
        wsq_topic_info_t ti;
        topic_exists = wsq_store_topic_lookup(s, topic, strlen(topic), &ti) != WSQ_ERR_NOTFOUND;
    }
    if (opened)
        wsq_store_close(s);
    if (!topic_exists || consumer == NULL)
        return wsq__ctl_fail(c, CTL_NOTFOUND, "not_found",
                             "topic '%s' does not exist (wsqctl topics lists them)", topic);
    return wsq__ctl_fail(c, CTL_NOTFOUND, "not_found",
                         "consumer '%s' does not exist on topic '%s' (wsqctl consumers %s lists "
                         "them)",
                         consumer, topic, topic);
}

/* ------------------------------------------------------------------------------------------- */

int wsq__ctl_cmd_purge(wsqctl_t *c, int argc, char **argv)
{
    (void)argc;
    const char *topic = argv[0];
    if (!wsq_topic_valid(topic, strlen(topic)))
        return wsq__ctl_bad_topic(c, topic);
    int modes = (c->all ? 1 : 0) + (c->before ? 1 : 0) + (c->older_than ? 1 : 0);
    if (modes != 1)
        return wsq__ctl_fail(c, CTL_USAGE, "usage",
                             "purge needs exactly one of --all, --before SEQ, --older-than DUR "
                             "(usage: wsqctl purge TOPIC (--all | --before SEQ | --older-than "
                             "DUR))");
    uint64_t before = 0;
    int64_t older_ms = 0;
    if (c->before && (!wsq__ctl_parse_u64(c->before, &before) || before == 0))
        return wsq__ctl_fail(c, CTL_USAGE, "usage", "--before must be a seq (1 or more), not '%s'",
                             c->before);
    if (c->older_than &&
        (wsq_parse_duration_ms(c->older_than, &older_ms) != WSQ_OK || older_ms < 0))
        return wsq__ctl_fail(c, CTL_USAGE, "usage",
                             "--older-than must be a duration such as 500ms, 90s, 15m, 2h, 7d, "
                             "not '%s'",
                             c->older_than);
    ctl_target_t t;
    int rc = wsq__ctl_target(c, CTL_NEED_WRITE, false, &t);
    if (rc != CTL_OK) {
        wsq__ctl_target_fini(&t);
        return rc;
    }
    uint64_t removed = 0, first = 0, next = 0;
    if (t.via == CTL_VIA_BROKER) {
        char path[512];
        if (c->all)
            snprintf(path, sizeof(path), "/admin/purge?topic=%s&all=true", topic);
        else if (c->before)
            snprintf(path, sizeof(path), "/admin/purge?topic=%s&before=%llu", topic,
                     (unsigned long long)before);
        else
            snprintf(path, sizeof(path), "/admin/purge?topic=%s&older_than=%s", topic,
                     c->older_than);
        ctl_http_resp_t r;
        rc = wsq__ctl_http(c, "POST", path, NULL, 0, &r);
        if (rc == CTL_OK && r.status != 200) {
            char doing[300];
            snprintf(doing, sizeof(doing), "purging %s", topic);
            rc = wsq__ctl_http_fail(c, &r, doing);
            if (rc == CTL_NOTFOUND) {
                c->fail_code = 0;
                rc = not_found(c, &t, topic, NULL);
            }
        } else if (rc == CTL_OK) {
            json_t *j = json_loadb((const char *)r.body.data, r.body.len, 0, NULL);
            removed = (uint64_t)json_integer_value(json_object_get(j, "removed"));
            first = (uint64_t)json_integer_value(json_object_get(j, "first_seq"));
            next = (uint64_t)json_integer_value(json_object_get(j, "next_seq"));
            if (j == NULL || next == 0)
                rc = wsq__ctl_fail(c, CTL_ERR, "bad_response",
                                   "purging %s: the broker's answer is not understood: %.200s",
                                   topic, r.body.data ? (const char *)r.body.data : "");
            json_decref(j);
        }
        wsq__ctl_http_resp_fini(&r);
    } else {
        wsq_wreq_t *req = wsq_wreq_new(WSQ_WOP_PURGE, topic, strlen(topic), NULL, 0, 0);
        if (req == NULL) {
            wsq__ctl_target_fini(&t);
            return wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
        }
        req->purge_mode = c->all ? WSQ_PURGE_ALL : c->before ? WSQ_PURGE_BEFORE : WSQ_PURGE_OLDER;
        req->purge_seq = before;
        req->purge_ts_ms = wsq_store_now_ms(t.store) - older_ms;
        wsq_err err = wsq_store_call(t.store, req);
        removed = req->removed;
        wsq_wreq_free(&req);
        wsq_topic_info_t ti = {0};
        if (err == WSQ_OK)
            err = wsq_store_topic_lookup(t.store, topic, strlen(topic), &ti);
        if (err == WSQ_ERR_NOTFOUND)
            rc = not_found(c, &t, topic, NULL);
        else if (err != WSQ_OK)
            rc = wsq__ctl_store_fail(c, err, "purging");
        first = ti.first_seq;
        next = ti.next_seq;
    }
    wsq__ctl_target_fini(&t);
    if (rc != CTL_OK)
        return rc;
    if (c->json)
        wsq__ctl_doc(c, json_pack("{s:s,s:I,s:I,s:I,s:s}", "topic", topic, "removed",
                                  (json_int_t)removed, "first_seq", (json_int_t)first, "next_seq",
                                  (json_int_t)next, "via", via_name(t.via)));
    else
        printf("purged %llu message%s from %s via %s (first seq now %llu, next seq %llu)\n",
               (unsigned long long)removed, removed == 1 ? "" : "s", topic,
               t.via == CTL_VIA_BROKER ? "the broker" : "the store", (unsigned long long)first,
               (unsigned long long)next);
    return CTL_OK;
}

/* ------------------------------------------------------------------------------------------- */

int wsq__ctl_cmd_delete_consumer(wsqctl_t *c, int argc, char **argv)
{
    (void)argc;
    const char *topic = argv[0], *name = argv[1];
    if (!wsq_topic_valid(topic, strlen(topic)))
        return wsq__ctl_bad_topic(c, topic);
    if (!consumer_valid(name))
        return wsq__ctl_fail(c, CTL_USAGE, "usage",
                             "'%s' is not a consumer name: 1-128 bytes of [A-Za-z0-9._-]", name);
    ctl_target_t t;
    int rc = wsq__ctl_target(c, CTL_NEED_WRITE, false, &t);
    if (rc != CTL_OK) {
        wsq__ctl_target_fini(&t);
        return rc;
    }
    if (t.via == CTL_VIA_BROKER) {
        char path[512];
        snprintf(path, sizeof(path), "/admin/delete-consumer?topic=%s&consumer=%s", topic, name);
        ctl_http_resp_t r;
        rc = wsq__ctl_http(c, "POST", path, NULL, 0, &r);
        if (rc == CTL_OK && r.status != 200) {
            char doing[400];
            snprintf(doing, sizeof(doing), "deleting consumer %s of %s", name, topic);
            rc = wsq__ctl_http_fail(c, &r, doing);
            if (rc == CTL_NOTFOUND) {
                c->fail_code = 0;
                rc = not_found(c, &t, topic, name);
            }
        }
        wsq__ctl_http_resp_fini(&r);
    } else {
        wsq_wreq_t *req =
            wsq_wreq_new(WSQ_WOP_CONSUMER_DELETE, topic, strlen(topic), name, strlen(name), 0);
        if (req == NULL) {
            wsq__ctl_target_fini(&t);
            return wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
        }
        wsq_err err = wsq_store_call(t.store, req);
        wsq_wreq_free(&req);
        if (err == WSQ_ERR_NOTFOUND)
            rc = not_found(c, &t, topic, name);
        else if (err != WSQ_OK)
            rc = wsq__ctl_store_fail(c, err, "deleting the consumer");
    }
    wsq__ctl_target_fini(&t);
    if (rc != CTL_OK)
        return rc;
    if (c->json)
        wsq__ctl_doc(c, json_pack("{s:s,s:s,s:b,s:s}", "topic", topic, "consumer", name, "deleted",
                                  1, "via", via_name(t.via)));
    else
        printf("deleted consumer %s of %s via %s\n", name, topic,
               t.via == CTL_VIA_BROKER
                   ? "the broker (its live session, if any, was closed with 4014)"
                   : "the store");
    return CTL_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* import */

/* Decodes one JSON Lines line the way wsqd's /admin/import does: the line is a wsq.v1 pub frame
 * without "op". Returns WSQ_ERR_NOTFOUND for a blank line. */
static wsq_err decode_line(const char *p, size_t n, size_t max_payload, wsq_frame_t *f, char *msg,
                           size_t msglen)
{
    while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    while (n > 0 && (*p == ' ' || *p == '\t'))
        p++, n--;
    if (n == 0)
        return WSQ_ERR_NOTFOUND;
    if (*p != '{') {
        snprintf(msg, msglen, "a line must be one JSON object {\"topic\":..,\"data\":..}");
        return WSQ_ERR_BAD_JSON;
    }
    wsq_buf_t b;
    wsq_buf_init(&b);
    wsq_err e = wsq_buf_append(&b, "{\"op\":\"pub\",", 12);
    if (e == WSQ_OK)
        e = wsq_buf_append(&b, p + 1, n - 1);
    if (e != WSQ_OK) {
        wsq_buf_fini(&b);
        snprintf(msg, msglen, "out of memory");
        return e;
    }
    wsq_proto_error_t pe;
    e = wsq_proto_decode(b.data, b.len, max_payload, f, &pe);
    wsq_buf_fini(&b);
    if (e != WSQ_OK)
        snprintf(msg, msglen, "%s", pe.message);
    return e;
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t pending;  /* submitted, not completed */
    uint64_t ok;       /* committed */
    wsq_err first_err; /* first failed request */
} imp_wait_t;

static void imp_done(wsq_wreq_t *r, void *arg)
{
    imp_wait_t *w = arg;
    pthread_mutex_lock(&w->mu);
    if (r->err == WSQ_OK)
        w->ok++;
    else if (w->first_err == WSQ_OK)
        w->first_err = r->err;
    if (--w->pending == 0)
        pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    wsq_wreq_free(&r);
}

typedef struct {
    wsqctl_t *c;
    ctl_target_t *t;
    const char *src;   /* file name for messages */
    uint64_t imported; /* messages stored so far */
    uint64_t body_max; /* largest request body (broker) */
    /* the current chunk */
    wsq_buf_t body;   /* broker: the lines */
    size_t *offs;     /* broker: start offset of each line in body, plus the end */
    uint64_t *lineno; /* broker: input line number of each line */
    size_t nlines, cap;
    wsq_wreq_t *head, **tail; /* store: the requests */
    uint64_t nreq, reqbytes;
    imp_wait_t wait;
} importer_t;

/* Sends lines [a, b) of the chunk; splits it when the broker finds the body too large. */
static int send_lines(importer_t *im, size_t a, size_t b)
{
    wsqctl_t *c = im->c;
    ctl_http_resp_t r;
    size_t off = im->offs[a], len = im->offs[b] - off;
    int rc = wsq__ctl_http(c, "POST", "/admin/import", im->body.data + off, len, &r);
    if (rc != CTL_OK) {
        wsq__ctl_http_resp_fini(&r);
        return rc;
    }
    if (r.status == 413 && b - a > 1) {
        /* the whole body was refused: nothing of it is stored, so halves can be sent */
        wsq__ctl_http_resp_fini(&r);
        wsq__ctl_note(c,
                      "the broker refused a body of %zu bytes (%zu lines) as too large: "
                      "sending it in halves",
                      len, b - a);
        size_t mid = a + (b - a) / 2;
        if (im->body_max > 1024)
            im->body_max /= 2;
        rc = send_lines(im, a, mid);
        return rc == CTL_OK ? send_lines(im, mid, b) : rc;
    }
    if (r.status != 200) {
        char doing[600];
        snprintf(doing, sizeof(doing),
                 "importing %s lines %llu-%llu (%llu messages before them were imported)", im->src,
                 (unsigned long long)im->lineno[a], (unsigned long long)im->lineno[b - 1],
                 (unsigned long long)im->imported);
        rc = wsq__ctl_http_fail(c, &r, doing);
        wsq__ctl_http_resp_fini(&r);
        return rc == CTL_NOTFOUND ? CTL_ERR : rc;
    }
    json_t *j = json_loadb((const char *)r.body.data, r.body.len, 0, NULL);
    json_int_t n = json_integer_value(json_object_get(j, "imported"));
    json_decref(j);
    wsq__ctl_http_resp_fini(&r);
    if ((size_t)n != b - a)
        return wsq__ctl_fail(c, CTL_ERR, "bad_response",
                             "importing %s: the broker imported %lld of %zu lines", im->src,
                             (long long)n, b - a);
    im->imported += (uint64_t)n;
    return CTL_OK;
}

static int flush_chunk(importer_t *im)
{
    int rc = CTL_OK;
    if (im->t->via == CTL_VIA_BROKER) {
        if (im->nlines)
            rc = send_lines(im, 0, im->nlines);
        im->nlines = 0;
        im->body.len = 0;
        return rc;
    }
    if (im->head == NULL)
        return CTL_OK;
    imp_wait_t *w = &im->wait;
    pthread_mutex_lock(&w->mu);
    w->pending = im->nreq;
    w->ok = 0;
    pthread_mutex_unlock(&w->mu);
    wsq_err err = wsq_store_submit_list(im->t->store, im->head);
    if (err != WSQ_OK) {
        for (wsq_wreq_t *r = im->head, *nx; r; r = nx) {
            nx = r->next;
            wsq_wreq_free(&r);
        }
    } else {
        pthread_mutex_lock(&w->mu);
        while (w->pending > 0)
            pthread_cond_wait(&w->cv, &w->mu);
        im->imported += w->ok;
        err = w->first_err;
        pthread_mutex_unlock(&w->mu);
    }
    im->head = NULL;
    im->tail = &im->head;
    im->nreq = im->reqbytes = 0;
    if (err != WSQ_OK) {
        char doing[300];
        snprintf(doing, sizeof(doing), "importing %s (stopped after %llu messages were imported)",
                 im->src, (unsigned long long)im->imported);
        rc = wsq__ctl_store_fail(im->c, err, doing);
    }
    return rc;
}

/* Adds one valid line (already decoded into f) to the current chunk. */
static int add_line(importer_t *im, const char *line, size_t n, uint64_t lineno, wsq_frame_t *f)
{
    if (im->t->via == CTL_VIA_BROKER) {
        bool nl = n > 0 && line[n - 1] == '\n';
        if (im->nlines > 0 && (im->nlines >= IMPORT_LINES || im->body.len + n + 1 > im->body_max)) {
            int rc = flush_chunk(im);
            if (rc != CTL_OK)
                return rc;
        }
        if (im->nlines + 2 > im->cap) {
            size_t cap = im->cap ? im->cap * 2 : 1024;
            size_t *o = realloc(im->offs, cap * sizeof(*o));
            if (o)
                im->offs = o;
            uint64_t *l = realloc(im->lineno, cap * sizeof(*l));
            if (l)
                im->lineno = l;
            if (!o || !l)
                return wsq__ctl_fail(im->c, CTL_ERR, "nomem", "out of memory");
            im->cap = cap;
        }
        im->offs[im->nlines] = im->body.len;
        im->lineno[im->nlines] = lineno;
        if (wsq_buf_append(&im->body, line, n) != WSQ_OK ||
            (!nl && wsq_buf_append(&im->body, "\n", 1) != WSQ_OK))
            return wsq__ctl_fail(im->c, CTL_ERR, "nomem", "out of memory");
        im->nlines++;
        im->offs[im->nlines] = im->body.len;
        return CTL_OK;
    }
    if (im->nreq >= IMPORT_LINES || im->reqbytes + f->data_len > IMPORT_BYTES) {
        int rc = flush_chunk(im);
        if (rc != CTL_OK)
            return rc;
    }
    wsq_wreq_t *r =
        wsq_wreq_append(f->topic, f->topic_len, f->data, f->data_len,
                        f->binary ? WSQ_MSG_BINARY : 0, f->headers, f->headers_len, NULL, 0, 0);
    if (r == NULL)
        return wsq__ctl_fail(im->c, CTL_ERR, "nomem", "out of memory");
    r->done = imp_done;
    r->arg = &im->wait;
    *im->tail = r;
    im->tail = &r->next;
    im->nreq++;
    im->reqbytes += r->len;
    return CTL_OK;
}

int wsq__ctl_cmd_import(wsqctl_t *c, int argc, char **argv)
{
    (void)argc;
    const char *src = argv[0];
    bool from_stdin = strcmp(src, "-") == 0;
    FILE *in = from_stdin ? stdin : fopen(src, "r");
    if (in == NULL)
        return wsq__ctl_fail(c, CTL_ERR, errno == EACCES ? "permission_denied" : "io_error",
                             "cannot open %s: %s", src, strerror(errno));
    const char *name = from_stdin ? "stdin" : src;
    ctl_target_t t;
    importer_t im;
    memset(&im, 0, sizeof(im));
    im.c = c;
    im.t = &t;
    im.src = name;
    im.tail = &im.head;
    wsq_buf_init(&im.body);
    pthread_mutex_init(&im.wait.mu, NULL);
    pthread_cond_init(&im.wait.cv, NULL);
    FILE *spool = NULL;
    char *line = NULL;
    size_t lcap = 0;
    wsq_frame_t f;
    wsq_frame_init(&f);

    /* The lock first: offline, a wsqd cannot start while the input is read. */
    int rc = wsq__ctl_target(c, CTL_NEED_WRITE, true, &t);
    if (rc != CTL_OK)
        goto done;
    size_t max_payload = c->cfg ? (size_t)c->cfg->limits.max_message_size : IMPORT_MAX_PAYLOAD;
    im.body_max = IMPORT_BYTES;
    if (c->cfg && 64u * c->cfg->limits.max_message_size < im.body_max)
        im.body_max = 64u * c->cfg->limits.max_message_size;

    /* Pass 1: validate every line, so that a bad line refuses the whole import. A pipe is
     * spooled to a temporary file for pass 2. */
    struct stat st;
    bool seekable = fstat(fileno(in), &st) == 0 && S_ISREG(st.st_mode);
    if (!seekable && (spool = tmpfile()) == NULL) {
        rc = wsq__ctl_fail(c, CTL_ERR, "io_error", "cannot create a temporary file: %s",
                           strerror(errno));
        goto done;
    }
    uint64_t lineno = 0, messages = 0;
    ssize_t n;
    while ((n = getline(&line, &lcap, in)) > 0) {
        lineno++;
        if (spool && fwrite(line, 1, (size_t)n, spool) != (size_t)n) {
            rc = wsq__ctl_fail(c, CTL_ERR, "io_error", "writing the temporary file failed");
            goto done;
        }
        char msg[256];
        wsq_err e = decode_line(line, (size_t)n, max_payload, &f, msg, sizeof(msg));
        wsq_frame_clear(&f);
        if (e == WSQ_ERR_NOTFOUND)
            continue;
        if (e != WSQ_OK) {
            rc = wsq__ctl_fail(c, CTL_ERR, wsq_errname(e), "%s line %llu: %s; nothing was imported",
                               name, (unsigned long long)lineno, msg);
            goto done;
        }
        messages++;
    }
    if (ferror(in)) {
        rc = wsq__ctl_fail(c, CTL_ERR, "io_error", "reading %s failed", name);
        goto done;
    }
    wsq__ctl_note(c, "%s: %llu lines, %llu messages, all valid", name, (unsigned long long)lineno,
                  (unsigned long long)messages);

    /* Pass 2: store them, in chunks. */
    FILE *again = spool ? spool : in;
    if (fseek(again, 0, SEEK_SET) != 0) {
        rc = wsq__ctl_fail(c, CTL_ERR, "io_error", "cannot rewind %s", name);
        goto done;
    }
    lineno = 0;
    while (rc == CTL_OK && (n = getline(&line, &lcap, again)) > 0) {
        lineno++;
        char msg[256];
        wsq_err e = decode_line(line, (size_t)n, max_payload, &f, msg, sizeof(msg));
        if (e == WSQ_OK)
            rc = add_line(&im, line, (size_t)n, lineno, &f);
        else if (e != WSQ_ERR_NOTFOUND) /* the input changed between the passes */
            rc = wsq__ctl_fail(c, CTL_ERR, wsq_errname(e),
                               "%s line %llu: %s (%llu messages "
                               "before it were imported)",
                               name, (unsigned long long)lineno, msg,
                               (unsigned long long)im.imported);
        wsq_frame_clear(&f);
    }
    if (rc == CTL_OK)
        rc = flush_chunk(&im);
    if (rc != CTL_OK)
        goto done;
    if (c->json)
        wsq__ctl_doc(
            c, json_pack("{s:I,s:s}", "imported", (json_int_t)im.imported, "via", via_name(t.via)));
    else
        printf("imported %llu message%s from %s via %s (new seqs)\n",
               (unsigned long long)im.imported, im.imported == 1 ? "" : "s", name,
               t.via == CTL_VIA_BROKER ? "the broker" : "the store");
done:
    for (wsq_wreq_t *r = im.head, *nx; r; r = nx) {
        nx = r->next;
        wsq_wreq_free(&r);
    }
    wsq__ctl_target_fini(&t);
    wsq_frame_clear(&f);
    free(line);
    free(im.offs);
    free(im.lineno);
    wsq_buf_fini(&im.body);
    pthread_cond_destroy(&im.wait.cv);
    pthread_mutex_destroy(&im.wait.mu);
    if (spool)
        fclose(spool);
    if (!from_stdin)
        fclose(in);
    return rc;
}
