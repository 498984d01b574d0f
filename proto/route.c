/* HTTP routing and the import body parser (pure). */
#include "wsq/route.h"

#include <stdio.h>
#include <string.h>

#include "wsq/topic.h"

static bool set_topic(wsq_route_t *r, const char *t, size_t n, wsq_route_kind_t kind)
{
    if (!wsq_topic_valid(t, n)) {
        r->kind = WSQ_ROUTE_BAD_TOPIC;
        return false;
    }
    memcpy(r->topic, t, n);
    r->topic[n] = '\0';
    r->topic_len = n;
    r->kind = kind;
    return true;
}

void wsq_http_route(const char *path, bool get, bool post, wsq_route_t *r)
{
    memset(r, 0, sizeof(*r));
    if (path == NULL)
        return;
    if (strcmp(path, "/healthz") == 0 || strcmp(path, "/metrics") == 0) {
        r->kind = !get             ? WSQ_ROUTE_BAD_METHOD
                  : path[1] == 'h' ? WSQ_ROUTE_HEALTH
                                   : WSQ_ROUTE_METRICS;
        return;
    }
    if (strcmp(path, "/fetch") == 0 || strcmp(path, "/ack") == 0 || strcmp(path, "/nack") == 0) {
        r->kind = !post            ? WSQ_ROUTE_BAD_METHOD
                  : path[1] == 'f' ? WSQ_ROUTE_FETCH
                  : path[1] == 'a' ? WSQ_ROUTE_ACK
                                   : WSQ_ROUTE_NACK;
        return;
    }
    if (strncmp(path, "/admin/", 7) == 0) {
        r->kind = WSQ_ROUTE_ADMIN;
        r->admin_op = path + 7;
        return;
    }
    if (strncmp(path, "/topics/", 8) != 0)
        return;
    const char *t = path + 8;
    size_t n = strlen(t);
    static const char suffix[] = "/messages";
    size_t sl = sizeof(suffix) - 1;
    bool history = n > sl && memcmp(t + n - sl, suffix, sl) == 0;
    if (get) {
        if (!history) {
            r->kind = WSQ_ROUTE_BAD_METHOD; /* GET /topics/<t>: use POST to publish */
            return;
        }
        set_topic(r, t, n - sl, WSQ_ROUTE_HISTORY);
        return;
    }
    if (!post) {
        r->kind = WSQ_ROUTE_BAD_METHOD;
        return;
    }
    set_topic(r, t, n, WSQ_ROUTE_PUBLISH);
}

wsq_err wsq_import_parse(const char *body, size_t len, size_t max_payload, wsq_import_fn fn,
                         void *arg, char *msg, size_t msglen, uint64_t *lines)
{
    const char *p = body, *end = body + len;
    uint64_t n = 0, line = 0;
    wsq_err err = WSQ_OK;
    if (lines)
        *lines = 0;
    if (msglen)
        msg[0] = '\0';
    while (p < end && err == WSQ_OK) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        line++;
        const char *q = p;
        while (q < le && (*q == ' ' || *q == '\t' || *q == '\r'))
            q++;
        if (q < le) {
            /* each line is a pub frame without "op": decode it as one */
            wsq_buf_t b;
            wsq_buf_init(&b);
            wsq_frame_t f;
            wsq_proto_error_t pe;
            wsq_frame_init(&f);
            if (*q != '{') {
                err = WSQ_ERR_BAD_JSON;
                snprintf(msg, msglen, "line %llu: not a JSON object", (unsigned long long)line);
            } else if (wsq_buf_append(&b, "{\"op\":\"pub\",", 12) != WSQ_OK ||
                       wsq_buf_append(&b, q + 1, (size_t)(le - q - 1)) != WSQ_OK) {
                err = WSQ_ERR_NOMEM;
                snprintf(msg, msglen, "out of memory");
            } else if ((err = wsq_proto_decode(b.data, b.len, max_payload, &f, &pe)) != WSQ_OK) {
                snprintf(msg, msglen, "line %llu: %s", (unsigned long long)line, pe.message);
            } else if ((err = fn(arg, &f)) != WSQ_OK) {
                /* the callback may have said why; either way the line number comes first */
                char why[300];
                snprintf(why, sizeof(why), "%s", msglen && msg[0] ? msg : wsq_strerror(err));
                snprintf(msg, msglen, "line %llu: %s", (unsigned long long)line, why);
            } else {
                n++;
            }
            wsq_frame_clear(&f);
            wsq_buf_fini(&b);
        }
        p = le + 1;
    }
    if (lines)
        *lines = n;
    return err;
}
