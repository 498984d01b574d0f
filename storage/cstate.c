#include "wsq/cstate.h"

#include <stdlib.h>
#include <string.h>

#include "bytes.h"

/* Encoding, all little-endian:
 *   u32 version (1) | u32 n_acked | u32 n_pend | u32 flags (WSQ_CSTATE_*; 0 before shared)
 *   u64 ack_floor | u64 delivered_upto | u64 topic_epoch | i64 created_ms | i64 last_seen_ms
 *   u64 acked[n_acked]
 *   { u64 seq | u32 count | u32 flags | i64 due_ms } pend[n_pend]
 */
#define CSTATE_VERSION 1u
#define CSTATE_HDR 56u
#define CSTATE_PEND 24u

void wsq_cstate_init(wsq_cstate_t *cs)
{
    memset(cs, 0, sizeof(*cs));
}

/* The allocation acked points into. */
static uint64_t *acked_mem(const wsq_cstate_t *cs)
{
    return cs->acked ? cs->acked - cs->acked_off : NULL;
}

/* Moves the entries of acked back to the start of the allocation. */
static void acked_rebase(wsq_cstate_t *cs)
{
    if (cs->acked_off == 0)
        return;
    uint64_t *m = acked_mem(cs);
    memmove(m, cs->acked, cs->n_acked * sizeof(uint64_t));
    cs->acked = m;
    cs->acked_off = 0;
}

void wsq_cstate_fini(wsq_cstate_t *cs)
{
    free(acked_mem(cs));
    free(cs->pend);
    wsq_cstate_init(cs);
}

static wsq_err grow(void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return WSQ_OK;
    uint32_t ncap = *cap ? *cap : 8;
    while (ncap < need) {
        if (ncap > UINT32_MAX / 2)
            return WSQ_ERR_NOMEM;
        ncap *= 2;
    }
    void *p = realloc(*arr, (size_t)ncap * elem);
    if (p == NULL)
        return WSQ_ERR_NOMEM;
    *arr = p;
    *cap = ncap;
    return WSQ_OK;
}

wsq_err wsq_cstate_copy(wsq_cstate_t *dst, const wsq_cstate_t *src)
{
    acked_rebase(dst);
    if (grow((void **)&dst->acked, &dst->cap_acked, src->n_acked, sizeof(uint64_t)) != WSQ_OK ||
        grow((void **)&dst->pend, &dst->cap_pend, src->n_pend, sizeof(wsq_cstate_pend_t)) != WSQ_OK)
        return WSQ_ERR_NOMEM;
    uint64_t *acked = dst->acked;
    wsq_cstate_pend_t *pend = dst->pend;
    uint32_t ca = dst->cap_acked, cp = dst->cap_pend;
    *dst = *src;
    dst->acked_off = 0;
    dst->acked = acked;
    dst->pend = pend;
    dst->cap_acked = ca;
    dst->cap_pend = cp;
    if (src->n_acked)
        memcpy(dst->acked, src->acked, src->n_acked * sizeof(uint64_t));
    if (src->n_pend)
        memcpy(dst->pend, src->pend, src->n_pend * sizeof(wsq_cstate_pend_t));
    return WSQ_OK;
}

/* Index of the first element >= seq. */
static uint32_t acked_lb(const wsq_cstate_t *cs, uint64_t seq)
{
    uint32_t lo = 0, hi = cs->n_acked;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cs->acked[mid] < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static uint32_t pend_lb(const wsq_cstate_t *cs, uint64_t seq)
{
    uint32_t lo = 0, hi = cs->n_pend;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cs->pend[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static wsq_cstate_pend_t *pend_find(const wsq_cstate_t *cs, uint64_t seq)
{
    uint32_t i = pend_lb(cs, seq);
    return (i < cs->n_pend && cs->pend[i].seq == seq) ? &cs->pend[i] : NULL;
}

static void pend_remove(wsq_cstate_t *cs, uint64_t seq)
{
    uint32_t i = pend_lb(cs, seq);
    if (i < cs->n_pend && cs->pend[i].seq == seq) {
        memmove(&cs->pend[i], &cs->pend[i + 1], (cs->n_pend - i - 1) * sizeof(cs->pend[0]));
        cs->n_pend--;
    }
}

/* Drops everything at or below the floor and absorbs individually acked seqs that now continue
 * it, restoring the invariants after the floor moved. */
static void normalize(wsq_cstate_t *cs)
{
    uint32_t i = acked_lb(cs, cs->ack_floor + 1);
    while (i < cs->n_acked && cs->acked[i] == cs->ack_floor + 1) {
        cs->ack_floor++;
        i++;
    }
    if (i > 0) { /* the first i entries go: acked starts after them */
        cs->n_acked -= i;
        cs->acked += i;
        cs->acked_off += i;
        if (cs->n_acked == 0)
            acked_rebase(cs);
    }
    uint32_t p = pend_lb(cs, cs->ack_floor + 1);
    if (p > 0) {
        memmove(cs->pend, cs->pend + p, (cs->n_pend - p) * sizeof(cs->pend[0]));
        cs->n_pend -= p;
    }
    if (cs->delivered_upto < cs->ack_floor)
        cs->delivered_upto = cs->ack_floor;
}

bool wsq_cstate_is_acked(const wsq_cstate_t *cs, uint64_t seq)
{
    if (seq <= cs->ack_floor)
        return true;
    uint32_t i = acked_lb(cs, seq);
    return i < cs->n_acked && cs->acked[i] == seq;
}

wsq_err wsq_cstate_ack(wsq_cstate_t *cs, uint64_t seq, bool *changed)
{
    if (changed)
        *changed = false;
    if (seq == 0 || wsq_cstate_is_acked(cs, seq))
        return WSQ_OK;
    if (seq == cs->ack_floor + 1) {
        cs->ack_floor = seq;
    } else {
        uint32_t i = acked_lb(cs, seq);
        if (i < cs->n_acked / 2 && cs->acked_off > 0) {
            /* the shorter side moves: the entries before i, down into the free room */
            cs->acked--;
            cs->acked_off--;
            memmove(cs->acked, cs->acked + 1, i * sizeof(uint64_t));
        } else {
            if (cs->acked_off + cs->n_acked == cs->cap_acked) {
                acked_rebase(cs);
                if (grow((void **)&cs->acked, &cs->cap_acked, cs->n_acked + 1, sizeof(uint64_t)) !=
                    WSQ_OK)
                    return WSQ_ERR_NOMEM;
            }
            memmove(&cs->acked[i + 1], &cs->acked[i], (cs->n_acked - i) * sizeof(uint64_t));
        }
        cs->acked[i] = seq;
        cs->n_acked++;
        pend_remove(cs, seq);
    }
    normalize(cs);
    if (changed)
        *changed = true;
    return WSQ_OK;
}

void wsq_cstate_ack_upto(wsq_cstate_t *cs, uint64_t upto, bool *changed)
{
    if (changed)
        *changed = false;
    if (upto <= cs->ack_floor)
        return;
    cs->ack_floor = upto;
    normalize(cs);
    if (changed)
        *changed = true;
}

void wsq_cstate_undeliver(wsq_cstate_t *cs, uint64_t seq)
{
    if (seq == 0 || seq > cs->delivered_upto || wsq_cstate_is_acked(cs, seq))
        return;
    wsq_cstate_pend_t *p = pend_find(cs, seq);
    if (p && p->count > 1) {
        p->count--;
        return;
    }
    if (seq == cs->delivered_upto) {
        cs->delivered_upto = seq - 1;
        if (p && p->due_ms == 0)
            pend_remove(cs, seq);
    }
}

uint32_t wsq_cstate_count(const wsq_cstate_t *cs, uint64_t seq)
{
    if (seq > cs->delivered_upto || seq == 0)
        return 0;
    const wsq_cstate_pend_t *p = pend_find(cs, seq);
    return p ? p->count : 1;
}

static wsq_err pend_get(wsq_cstate_t *cs, uint64_t seq, wsq_cstate_pend_t **out)
{
    uint32_t i = pend_lb(cs, seq);
    if (i < cs->n_pend && cs->pend[i].seq == seq) {
        *out = &cs->pend[i];
        return WSQ_OK;
    }
    if (grow((void **)&cs->pend, &cs->cap_pend, cs->n_pend + 1, sizeof(cs->pend[0])) != WSQ_OK)
        return WSQ_ERR_NOMEM;
    memmove(&cs->pend[i + 1], &cs->pend[i], (cs->n_pend - i) * sizeof(cs->pend[0]));
    cs->n_pend++;
    cs->pend[i] = (wsq_cstate_pend_t){.seq = seq, .count = 1};
    *out = &cs->pend[i];
    return WSQ_OK;
}

wsq_err wsq_cstate_delivered(wsq_cstate_t *cs, uint64_t seq, uint32_t *count)
{
    if (seq == 0 || wsq_cstate_is_acked(cs, seq)) {
        *count = wsq_cstate_count(cs, seq);
        return WSQ_OK;
    }
    if (seq > cs->delivered_upto) {
        /* First delivery: everything between the old high-water mark and seq was skipped by the
         * deliverer (e.g. purged), so it keeps the implicit count of a single delivery. */
        cs->delivered_upto = seq;
        *count = 1;
        wsq_cstate_pend_t *p = pend_find(cs, seq);
        if (p)
            p->due_ms = 0;
        return WSQ_OK;
    }
    wsq_cstate_pend_t *p;
    if (pend_get(cs, seq, &p) != WSQ_OK)
        return WSQ_ERR_NOMEM;
    if (p->count < UINT32_MAX)
        p->count++;
    p->due_ms = 0;
    *count = p->count;
    return WSQ_OK;
}

wsq_err wsq_cstate_nack(wsq_cstate_t *cs, uint64_t seq, int64_t due_ms)
{
    if (seq == 0 || seq > cs->delivered_upto || wsq_cstate_is_acked(cs, seq))
        return WSQ_OK;
    wsq_cstate_pend_t *p;
    if (pend_get(cs, seq, &p) != WSQ_OK)
        return WSQ_ERR_NOMEM;
    p->due_ms = due_ms;
    return WSQ_OK;
}

int64_t wsq_cstate_due(const wsq_cstate_t *cs, uint64_t seq)
{
    const wsq_cstate_pend_t *p = pend_find(cs, seq);
    return p ? p->due_ms : 0;
}

uint64_t wsq_cstate_lag(const wsq_cstate_t *cs, uint64_t first_seq, uint64_t last_seq)
{
    if (first_seq > last_seq)
        return 0;
    uint64_t lo = cs->ack_floor + 1 > first_seq ? cs->ack_floor + 1 : first_seq;
    if (lo > last_seq)
        return 0;
    uint64_t n = last_seq - lo + 1;
    for (uint32_t i = acked_lb(cs, lo); i < cs->n_acked && cs->acked[i] <= last_seq; i++)
        n--;
    return n;
}

uint64_t wsq_cstate_pending(const wsq_cstate_t *cs)
{
    if (cs->delivered_upto <= cs->ack_floor)
        return 0;
    uint64_t n = cs->delivered_upto - cs->ack_floor;
    for (uint32_t i = 0; i < cs->n_acked && cs->acked[i] <= cs->delivered_upto; i++)
        n--;
    return n;
}

wsq_err wsq_cstate_check(const wsq_cstate_t *cs)
{
    if (cs->delivered_upto < cs->ack_floor)
        return WSQ_ERR_CORRUPT;
    for (uint32_t i = 0; i < cs->n_acked; i++) {
        if (cs->acked[i] <= cs->ack_floor + 1)
            return WSQ_ERR_CORRUPT;
        if (i > 0 && cs->acked[i] <= cs->acked[i - 1])
            return WSQ_ERR_CORRUPT;
    }
    for (uint32_t i = 0; i < cs->n_pend; i++) {
        if (cs->pend[i].seq <= cs->ack_floor || cs->pend[i].count == 0)
            return WSQ_ERR_CORRUPT;
        if (i > 0 && cs->pend[i].seq <= cs->pend[i - 1].seq)
            return WSQ_ERR_CORRUPT;
        uint32_t j = acked_lb(cs, cs->pend[i].seq);
        if (j < cs->n_acked && cs->acked[j] == cs->pend[i].seq)
            return WSQ_ERR_CORRUPT;
    }
    return WSQ_OK;
}

size_t wsq_cstate_encoded_size(const wsq_cstate_t *cs)
{
    return CSTATE_HDR + (size_t)cs->n_acked * 8 + (size_t)cs->n_pend * CSTATE_PEND;
}

void wsq_cstate_encode(const wsq_cstate_t *cs, void *buf)
{
    unsigned char *p = buf;
    wsq__put_le32(p, CSTATE_VERSION);
    wsq__put_le32(p + 4, cs->n_acked);
    wsq__put_le32(p + 8, cs->n_pend);
    wsq__put_le32(p + 12, cs->flags);
    wsq__put_le64(p + 16, cs->ack_floor);
    wsq__put_le64(p + 24, cs->delivered_upto);
    wsq__put_le64(p + 32, cs->topic_epoch);
    wsq__put_le64(p + 40, (uint64_t)cs->created_ms);
    wsq__put_le64(p + 48, (uint64_t)cs->last_seen_ms);
    p += CSTATE_HDR;
    for (uint32_t i = 0; i < cs->n_acked; i++, p += 8)
        wsq__put_le64(p, cs->acked[i]);
    for (uint32_t i = 0; i < cs->n_pend; i++, p += CSTATE_PEND) {
        wsq__put_le64(p, cs->pend[i].seq);
        wsq__put_le32(p + 8, cs->pend[i].count);
        wsq__put_le32(p + 12, cs->pend[i].flags);
        wsq__put_le64(p + 16, (uint64_t)cs->pend[i].due_ms);
    }
}

wsq_err wsq_cstate_decode(wsq_cstate_t *cs, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    wsq_err err = WSQ_ERR_CORRUPT;
    cs->n_acked = cs->n_pend = 0;
    acked_rebase(cs);
    if (len < CSTATE_HDR)
        goto fail;
    uint32_t version = wsq__get_le32(p);
    if (version > CSTATE_VERSION) {
        err = WSQ_ERR_FORMAT_NEWER;
        goto fail;
    }
    if (version != CSTATE_VERSION)
        goto fail;
    uint32_t na = wsq__get_le32(p + 4), np = wsq__get_le32(p + 8);
    if ((uint64_t)CSTATE_HDR + (uint64_t)na * 8 + (uint64_t)np * CSTATE_PEND != len)
        goto fail;
    if (grow((void **)&cs->acked, &cs->cap_acked, na, sizeof(uint64_t)) != WSQ_OK ||
        grow((void **)&cs->pend, &cs->cap_pend, np, sizeof(cs->pend[0])) != WSQ_OK) {
        err = WSQ_ERR_NOMEM;
        goto fail;
    }
    cs->flags = wsq__get_le32(p + 12);
    if (cs->flags & ~WSQ_CSTATE_SHARED)
        goto fail; /* a flag this version does not know changes what the state means */
    cs->ack_floor = wsq__get_le64(p + 16);
    cs->delivered_upto = wsq__get_le64(p + 24);
    cs->topic_epoch = wsq__get_le64(p + 32);
    cs->created_ms = (int64_t)wsq__get_le64(p + 40);
    cs->last_seen_ms = (int64_t)wsq__get_le64(p + 48);
    p += CSTATE_HDR;
    for (uint32_t i = 0; i < na; i++, p += 8)
        cs->acked[i] = wsq__get_le64(p);
    for (uint32_t i = 0; i < np; i++, p += CSTATE_PEND) {
        cs->pend[i].seq = wsq__get_le64(p);
        cs->pend[i].count = wsq__get_le32(p + 8);
        cs->pend[i].flags = wsq__get_le32(p + 12);
        cs->pend[i].due_ms = (int64_t)wsq__get_le64(p + 16);
    }
    cs->n_acked = na;
    cs->n_pend = np;
    if (wsq_cstate_check(cs) != WSQ_OK)
        goto fail;
    return WSQ_OK;
fail : {
    uint64_t *a = cs->acked;
    wsq_cstate_pend_t *pp = cs->pend;
    uint32_t ca = cs->cap_acked, cp = cs->cap_pend;
    wsq_cstate_init(cs);
    cs->acked = a;
    cs->pend = pp;
    cs->cap_acked = ca;
    cs->cap_pend = cp;
}
    return err;
}
