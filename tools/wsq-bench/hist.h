/*
 * Log-bucketed latency histogram (HDR-like): values below 128 are exact, above that every power
 * of two is split into 64 sub-buckets, so a reported percentile is within 1/128 (0.8 %) of the
 * true value. Fixed size, no allocation per sample; one per thread, merged at the end.
 */
#ifndef WSQB_HIST_H
#define WSQB_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS) /* 64 sub-buckets per power of two */
#define HIST_LINEAR (2u * HIST_SUB)    /* values 0..127 are exact */
#define HIST_BUCKETS (HIST_LINEAR + (64u - (HIST_SUB_BITS + 1)) * HIST_SUB)

typedef struct {
    uint64_t count;
    uint64_t min, max;
    double sum;
    uint64_t b[HIST_BUCKETS];
} hist_t;

void hist_init(hist_t *h);
static inline unsigned hist_index(uint64_t v)
{
    if (v < HIST_LINEAR)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v); /* >= 7 */
    unsigned shift = msb - HIST_SUB_BITS;
    return HIST_LINEAR + (msb - (HIST_SUB_BITS + 1)) * HIST_SUB +
           (unsigned)((v >> shift) - HIST_SUB);
}
static inline void hist_add(hist_t *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->count++;
    h->sum += (double)v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}
void hist_merge(hist_t *dst, const hist_t *src);
/* The value at quantile q (0..1): the midpoint of the bucket holding rank ceil(q*count), clamped
 * to [min, max]. 0 when empty. */
uint64_t hist_quantile(const hist_t *h, double q);
double hist_mean(const hist_t *h);

#endif
