/*
 * Durable consumer state: a pure value type with its ack/nack/delivery rules and its on-disk
 * encoding. No I/O, no globals; every function is safe on any thread for a state that thread owns.
 *
 * The storage writer applies these rules inside its transactions and the broker's consumer thread
 * applies the same rules to its in-memory copy, so the two can never disagree about what an ack
 * means.
 *
 * Invariants (checked by wsq_cstate_check):
 *   - every seq <= ack_floor is acknowledged;
 *   - acked[] is strictly increasing, every entry > ack_floor + 1 (floor+1 would have been
 * absorbed);
 *   - pend[] is strictly increasing by seq, every entry > ack_floor and not in acked[];
 *   - a seq in (ack_floor, delivered_upto] that is in neither list was delivered exactly once.
 */
#ifndef WSQ_CSTATE_H
#define WSQ_CSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsq/err.h"

#define WSQ_CONSUMER_NAME_MAX 128

/* An unacknowledged message that needs more than the implicit "delivered once". */
typedef struct {
    uint64_t seq;   /* message seq, > ack_floor */
    uint32_t count; /* deliveries so far (>= 1) */
    uint32_t flags; /* reserved, 0 */
    int64_t due_ms; /* nack: do not redeliver before this broker time (ms); 0 = no delay */
} wsq_cstate_pend_t;

/* wsq_cstate_t.flags */
#define WSQ_CSTATE_SHARED 1u /* a shared consumer (competing members); fixed at creation */

typedef struct {
    uint64_t ack_floor;      /* every seq <= ack_floor is acknowledged */
    uint64_t delivered_upto; /* highest seq ever delivered (0 = none) */
    uint64_t topic_epoch;    /* epoch of the topic this consumer was created on */
    int64_t created_ms;      /* creation time, broker ms */
    int64_t last_seen_ms;    /* last subscribe/ack/unsubscribe, broker ms (for consumer_ttl) */
    uint32_t flags;          /* WSQ_CSTATE_* */
    uint32_t n_acked;        /* entries in acked */
    uint32_t cap_acked;      /* allocated entries, from acked - acked_off */
    uint32_t acked_off;      /* free entries before acked (the floor's advance only moves it) */
    uint64_t *acked;         /* seqs acknowledged individually above ack_floor + 1, sorted */
    uint32_t n_pend;         /* entries in pend */
    uint32_t cap_pend;       /* allocated entries in pend */
    wsq_cstate_pend_t *pend; /* redelivered or nacked messages above the floor, sorted by seq */
} wsq_cstate_t;

/* Sets every field to an empty state (no allocation). */
void wsq_cstate_init(wsq_cstate_t *cs);

/* Frees the arrays and re-initialises. Idempotent. */
void wsq_cstate_fini(wsq_cstate_t *cs);

/* Deep copy. dst must be initialised (its arrays are reused). WSQ_ERR_NOMEM leaves dst valid. */
wsq_err wsq_cstate_copy(wsq_cstate_t *dst, const wsq_cstate_t *src);

/* True when seq is acknowledged. */
bool wsq_cstate_is_acked(const wsq_cstate_t *cs, uint64_t seq);

/* Acknowledges one seq. *changed (may be NULL) says whether the state changed.
 * WSQ_ERR_NOMEM on allocation failure (state unchanged). */
wsq_err wsq_cstate_ack(wsq_cstate_t *cs, uint64_t seq, bool *changed);

/* Acknowledges every seq <= upto (cumulative). Never fails; *changed as above. */
void wsq_cstate_ack_upto(wsq_cstate_t *cs, uint64_t upto, bool *changed);

/* Records one delivery of seq and returns, in *count, the delivery count including this one.
 * A seq above delivered_upto is a first delivery and costs no entry. WSQ_ERR_NOMEM possible. */
wsq_err wsq_cstate_delivered(wsq_cstate_t *cs, uint64_t seq, uint32_t *count);

/* Takes back the last delivery of seq: it never reached the client (its session ended before
 * the message was written). A redelivery's count goes down by one; a first delivery, which
 * must be the highest delivered seq (take them back from the newest), lowers delivered_upto
 * to seq - 1. Does nothing for an acked seq or one never delivered. Never fails. */
void wsq_cstate_undeliver(wsq_cstate_t *cs, uint64_t seq);

/* Deliveries so far of seq: 0 when never delivered (seq > delivered_upto), else >= 1. */
uint32_t wsq_cstate_count(const wsq_cstate_t *cs, uint64_t seq);

/* Records a nack of seq: it may be redelivered from due_ms on. Ignored when seq is acked or was
 * never delivered. WSQ_ERR_NOMEM possible. */
wsq_err wsq_cstate_nack(wsq_cstate_t *cs, uint64_t seq, int64_t due_ms);

/* Redelivery due time of seq (0 when none). */
int64_t wsq_cstate_due(const wsq_cstate_t *cs, uint64_t seq);

/* Messages above the floor that are not acknowledged, given the topic's retained range
 * [first_seq, last_seq] (first_seq > last_seq when empty). */
uint64_t wsq_cstate_lag(const wsq_cstate_t *cs, uint64_t first_seq, uint64_t last_seq);

/* Number of delivered messages that are not acknowledged ("pending", in flight). */
uint64_t wsq_cstate_pending(const wsq_cstate_t *cs);

/* Checks the invariants above. WSQ_ERR_CORRUPT names nothing; the caller reports the consumer. */
wsq_err wsq_cstate_check(const wsq_cstate_t *cs);

/* Bytes wsq_cstate_encode writes for cs. */
size_t wsq_cstate_encoded_size(const wsq_cstate_t *cs);

/* Encodes into buf (at least wsq_cstate_encoded_size bytes). Little-endian, versioned. */
void wsq_cstate_encode(const wsq_cstate_t *cs, void *buf);

/* Decodes buf into cs (initialised; arrays reused). WSQ_ERR_CORRUPT when buf is malformed or its
 * invariants do not hold, WSQ_ERR_FORMAT_NEWER for a newer encoding, WSQ_ERR_NOMEM. On error cs is
 * left empty. */
wsq_err wsq_cstate_decode(wsq_cstate_t *cs, const void *buf, size_t len);

#endif
