/* Write requests: allocation, validation and completion, the same for every backend. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "wreq.h"

wsq_wreq_t *wsq_wreq_new(wsq_wop_t op, const char *topic, size_t topic_len, const char *consumer,
                         size_t consumer_len, size_t payload_len)
{
    if (topic_len > WSQ_TOPIC_MAX || consumer_len > WSQ_CONSUMER_NAME_MAX ||
        payload_len > SIZE_MAX - sizeof(wsq_wreq_t) - 512)
        return NULL;
    size_t sz = sizeof(wsq_wreq_t) + topic_len + 1 + consumer_len + 1 + payload_len;
    wsq_wreq_t *r = malloc(sz);
    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof(*r));
    char *p = (char *)(r + 1);
    r->op = op;
    r->topic = p;
    r->topic_len = (uint16_t)topic_len;
    if (topic_len)
        memcpy(p, topic, topic_len);
    p[topic_len] = '\0';
    p += topic_len + 1;
    r->consumer = p;
    r->consumer_len = (uint16_t)consumer_len;
    if (consumer_len)
        memcpy(p, consumer, consumer_len);
    p[consumer_len] = '\0';
    p += consumer_len + 1;
    r->data = (unsigned char *)p;
    r->len = payload_len;
    wsq_cstate_init(&r->state);
    return r;
}

/* An APPEND or a DEAD_LETTER: the body (headers' length, the block, the payload), the caller's
 * extra bytes, then the id. */
static wsq_wreq_t *body_req(wsq_wop_t op, const char *topic, size_t topic_len, const char *consumer,
                            size_t consumer_len, const void *data, size_t len, uint32_t flags,
                            const void *headers, size_t headers_len, const char *id, size_t id_len,
                            size_t extra)
{
    size_t body = headers_len ? 4 + headers_len + len : len;
    if (len > WSQ_MSG_MAX_LEN ||
        (headers_len && (len > WSQ_MSG_MAX_LEN - 4 || headers_len > WSQ_MSG_MAX_LEN - 4 - len)) ||
        extra > SIZE_MAX / 2 || id_len > WSQ_MSG_ID_MAX)
        return NULL;
    wsq_wreq_t *r =
        wsq_wreq_new(op, topic, topic_len, consumer, consumer_len, body + extra + id_len);
    if (r == NULL)
        return NULL;
    unsigned char *p = r->data;
    if (headers_len) {
        for (int i = 0; i < 4; i++)
            *p++ = (unsigned char)(headers_len >> (8 * i));
        memcpy(p, headers, headers_len);
        p += headers_len;
    }
    if (len)
        memcpy(p, data, len);
    r->len = body;
    r->flags = (flags & ~WSQ_MSG_HEADERS) | (headers_len ? WSQ_MSG_HEADERS : 0);
    if (id_len) {
        char *dst = (char *)r->data + body + extra;
        memcpy(dst, id, id_len);
        r->id = dst;
        r->id_len = (uint8_t)id_len;
    }
    return r;
}

wsq_wreq_t *wsq_wreq_append(const char *topic, size_t topic_len, const void *data, size_t len,
                            uint32_t flags, const void *headers, size_t headers_len, const char *id,
                            size_t id_len, size_t extra)
{
    return body_req(WSQ_WOP_APPEND, topic, topic_len, NULL, 0, data, len, flags, headers,
                    headers_len, id, id_len, extra);
}

wsq_wreq_t *wsq_wreq_dead_letter(const char *dead_topic, size_t dead_topic_len,
                                 uint32_t src_topic_id, const char *consumer, size_t consumer_len,
                                 const void *data, size_t len, uint32_t flags, const void *headers,
                                 size_t headers_len)
{
    wsq_wreq_t *r = body_req(WSQ_WOP_DEAD_LETTER, dead_topic, dead_topic_len, consumer,
                             consumer_len, data, len, flags, headers, headers_len, NULL, 0, 0);
    if (r)
        r->src_topic_id = src_topic_id;
    return r;
}

void wsq_wreq_free(wsq_wreq_t **reqp)
{
    if (reqp == NULL || *reqp == NULL)
        return;
    wsq_cstate_fini(&(*reqp)->state);
    free(*reqp);
    *reqp = NULL;
}

static bool is_consumer_op(wsq_wop_t op)
{
    return (op >= WSQ_WOP_CONSUMER_OPEN && op <= WSQ_WOP_CONSUMER_DELETE) ||
           op == WSQ_WOP_CONSUMER_PUT;
}

wsq_err wsq__wreq_validate(const wsq_wreq_t *r)
{
    if (r->op < WSQ_WOP_APPEND || r->op > WSQ_WOP_DEAD_LETTER)
        return WSQ_ERR_INVAL;
    if (r->op == WSQ_WOP_DEAD_LETTER &&
        (r->src_topic_id == 0 || !wsq_consumer_valid(r->consumer, r->consumer_len) ||
         wsq_cstate_check(&r->state) != WSQ_OK))
        return WSQ_ERR_INVAL;
    if (r->op == WSQ_WOP_BARRIER)
        return WSQ_OK;
    bool by_id_ok = is_consumer_op(r->op) && r->op != WSQ_WOP_CONSUMER_OPEN;
    if (!(by_id_ok && r->topic_id != 0) && !wsq_topic_valid(r->topic, r->topic_len))
        return WSQ_ERR_BAD_TOPIC;
    if (is_consumer_op(r->op) && !wsq_consumer_valid(r->consumer, r->consumer_len))
        return WSQ_ERR_INVAL;
    if (r->op == WSQ_WOP_CONSUMER_PUT && wsq_cstate_check(&r->state) != WSQ_OK)
        return WSQ_ERR_INVAL;
    if (r->op == WSQ_WOP_PURGE &&
        (r->purge_mode < WSQ_PURGE_ALL || r->purge_mode > WSQ_PURGE_OLDER))
        return WSQ_ERR_INVAL;
    if (wsq_wop_appends(r->op) && r->len > 0 && r->data == NULL)
        return WSQ_ERR_INVAL;
    if (wsq_wop_appends(r->op) && r->len > WSQ_MSG_MAX_LEN)
        return WSQ_ERR_TOO_LARGE; /* a parted message records its length in 32 bits */
    return WSQ_OK;
}

typedef struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
} waiter_t;

static void call_done(wsq_wreq_t *req, void *arg)
{
    (void)req;
    waiter_t *wt = arg;
    pthread_mutex_lock(&wt->m);
    wt->done = true;
    pthread_cond_signal(&wt->c);
    pthread_mutex_unlock(&wt->m);
}

wsq_err wsq_store_call(wsq_store_t *store, wsq_wreq_t *req)
{
    waiter_t wt = {.done = false};
    pthread_mutex_init(&wt.m, NULL);
    pthread_cond_init(&wt.c, NULL);
    req->done = call_done;
    req->arg = &wt;
    wsq_err err = wsq_store_submit(store, req);
    if (err == WSQ_OK) {
        pthread_mutex_lock(&wt.m);
        while (!wt.done)
            pthread_cond_wait(&wt.c, &wt.m);
        pthread_mutex_unlock(&wt.m);
        err = req->err;
    }
    pthread_cond_destroy(&wt.c);
    pthread_mutex_destroy(&wt.m);
    return err;
}

void wsq__wreq_complete(wsq_wreq_t *r)
{
    if (r->done)
        r->done(r, r->arg);
    else
        wsq_wreq_free(&r);
}
