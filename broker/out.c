/* Outbound framing: messages become pre-framed WebSocket bytes in chunks that the service thread
 * writes whole, many frames per socket write. Pure; any thread. */
#include <stdlib.h>
#include <string.h>

#include "out.h"
#include "wsq/proto.h"

void wsq__outlist_init(wsq_outlist_t *l)
{
    memset(l, 0, sizeof(*l));
    l->tail = &l->head;
}

static wsq_out_t *chunk_new(size_t cap, uint64_t sub_id)
{
    wsq_out_t *c = malloc(sizeof(*c) + cap);
    if (c == NULL)
        return NULL;
    c->next = NULL;
    c->sub_id = sub_id;
    c->count = 0;
    c->last_seq = 0;
    c->len = 0;
    c->cap = cap;
    return c;
}

static void close_cur(wsq_outlist_t *l)
{
    if (l->cur) {
        *l->tail = l->cur;
        l->tail = &l->cur->next;
        l->cur = NULL;
        l->cap = 0;
    }
}

wsq_err wsq__outlist_frame(wsq_outlist_t *l, unsigned opcode, const void *payload, size_t len,
                           uint64_t sub_id, uint64_t seq, bool counts)
{
    const unsigned char *p = payload;
    size_t off = 0;
    bool first = true;
    do {
        size_t n = len - off > WSQ_FRAG_MAX ? WSQ_FRAG_MAX : len - off;
        bool fin = off + n == len;
        size_t need = WSQ_WS_HDR_MAX + n;
        /* Chunks never mix subscriptions, so credit goes back to the right one. */
        if (l->cur && (l->cur->sub_id != sub_id || l->cur->len + need > l->cap))
            close_cur(l);
        if (l->cur == NULL) {
            /* A lone control frame gets a small chunk; a batch grows into full-size ones. */
            size_t cap = l->bytes == 0     ? 1024
                         : l->bytes < 8192 ? 8192
                                           : WSQ_FRAG_MAX + WSQ_WS_HDR_MAX;
            if (cap < need)
                cap = need;
            l->cur = chunk_new(cap, sub_id);
            if (l->cur == NULL)
                return WSQ_ERR_NOMEM;
            l->cap = cap;
        }
        wsq_out_t *c = l->cur;
        size_t hl = wsq_ws_frame_header(
            c->data + c->len, (first ? opcode : WSQ_WS_OP_CONT) | (fin ? 0 : WSQ_WS_MORE), n);
        c->len += hl;
        if (n)
            memcpy(c->data + c->len, p + off, n);
        c->len += n;
        /* exactly what the chunk holds: credit comes back as written bytes, and any
         * difference would leak window until the subscription stalls */
        l->bytes += hl + n;
        if (fin && counts) {
            c->count++;
            c->last_seq = seq;
        }
        off += n;
        first = false;
    } while (off < len);
    return WSQ_OK;
}

wsq_out_t *wsq__outlist_take(wsq_outlist_t *l)
{
    close_cur(l);
    wsq_out_t *h = l->head;
    wsq__outlist_init(l);
    return h;
}

void wsq__out_free_list(wsq_out_t **head)
{
    for (wsq_out_t *c = *head, *nx; c; c = nx) {
        nx = c->next;
        free(c);
    }
    *head = NULL;
}

wsq_err wsq__out_frame(wsq_out_t ***tail, unsigned opcode, const void *payload, size_t len,
                       uint64_t sub_id, uint32_t count, uint64_t last_seq)
{
    wsq_outlist_t l;
    wsq__outlist_init(&l);
    wsq_err err = wsq__outlist_frame(&l, opcode, payload, len, sub_id, last_seq, count > 0);
    wsq_out_t *h = wsq__outlist_take(&l);
    if (err != WSQ_OK) {
        wsq__out_free_list(&h);
        return err;
    }
    **tail = h;
    while (**tail)
        *tail = &(**tail)->next;
    return WSQ_OK;
}
