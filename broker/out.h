/*
 * Outbound chunks (out.c): pre-framed WebSocket bytes for one session. A chunk holds whole
 * frames and is at most WSQ_FRAG_MAX + header bytes, so it always fits in one write. Pure; any
 * thread: the consumer thread frames deliveries, the service thread its own frames, and a list
 * of chunks travels between them whole (ownership passes with it).
 */
#ifndef WSQ_OUT_H
#define WSQ_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsq/err.h"

/* Largest WebSocket frame payload wsqd writes; bigger messages are sent as fragments. */
#define WSQ_FRAG_MAX (64u * 1024u)
/* Bytes written per WRITEABLE callback (whole frames only). */
#define WSQ_WRITE_MAX (128u * 1024u)

typedef struct wsq_out {
    struct wsq_out *next;
    uint64_t sub_id;   /* subscription whose messages this chunk carries (0: none) */
    uint32_t count;    /* messages completed by this chunk (the last fragment counts) */
    uint64_t last_seq; /* seq of the last message completed by this chunk */
    size_t len;
    size_t cap; /* bytes data can hold */
    unsigned char data[];
} wsq_out_t;

/* Frames payload (opcode 1 text, 2 binary, 9 ping) into a list of chunks, fragmenting above
 * WSQ_FRAG_MAX. Appends to *tail. count/last_seq go on the chunk that ends the message.
 * WSQ_ERR_NOMEM (nothing appended). */
wsq_err wsq__out_frame(wsq_out_t ***tail, unsigned opcode, const void *payload, size_t len,
                       uint64_t sub_id, uint32_t count, uint64_t last_seq);

/* A chunk list builder that packs many small frames into one chunk (up to WSQ_FRAG_MAX). */
typedef struct {
    wsq_out_t *head;
    wsq_out_t **tail;
    wsq_out_t *cur; /* open chunk being filled */
    size_t cap;     /* capacity of cur */
    size_t bytes;   /* total bytes */
} wsq_outlist_t;
void wsq__outlist_init(wsq_outlist_t *l);
/* Appends one message frame (fragmenting when large) for sub_id with seq; counts: the frame is
 * a message (it counts for credit and for "written"). WSQ_ERR_NOMEM. */
wsq_err wsq__outlist_frame(wsq_outlist_t *l, unsigned opcode, const void *payload, size_t len,
                           uint64_t sub_id, uint64_t seq, bool counts);
/* Detaches the list (head; the caller owns it) and resets the builder. */
wsq_out_t *wsq__outlist_take(wsq_outlist_t *l);
/* Frees a list and clears *head. */
void wsq__out_free_list(wsq_out_t **head);

#endif
