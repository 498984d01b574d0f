/*
 * What the sources of proto/ share privately; nothing else includes this header. The library's
 * API is include/wsq/proto.h (and http1.h, wsrx.h, route.h). Pure: no I/O, no globals.
 */
#ifndef WSQ_PROTO_INTERNAL_H
#define WSQ_PROTO_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Replaces every byte of the NUL-terminated s outside printable ASCII with '?'. Error messages
 * may quote client input (an op name, a jansson "near '...'") and end up in err frames and logs:
 * this keeps them valid UTF-8 even after a truncation split a multi-byte sequence. */
void wsq__sanitize_ascii(char *s);

/* Eight bytes at a time (SWAR): the high and low bit of every byte. */
#define HI_BITS 0x8080808080808080ULL
#define LO_BITS 0x0101010101010101ULL

static inline uint64_t wsq__load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/*
 * The high bit of every byte of v that is < 0x20, '"', '\\' or >= 0x80 (a byte a JSON string
 * cannot hold as is, or a non-ASCII one); 0 when there is none. A subtraction's borrow can flag a
 * byte above a flagged one, never one below it: the lowest flagged byte is exact, and "any" is.
 */
static inline uint64_t wsq__special_bits(uint64_t v)
{
    uint64_t ctl = v - LO_BITS * 0x20;
    uint64_t quote = (v ^ (LO_BITS * '"')) - LO_BITS;
    uint64_t bslash = (v ^ (LO_BITS * '\\')) - LO_BITS;
    return (ctl | quote | bslash | v) & HI_BITS;
}

/* The number of leading bytes of s[0..n) before the first special byte (as above), skipped
 * eight at a time: n when there is none. A lower bound on big-endian machines, where only the
 * words with no special byte are skipped (the caller looks at the remaining bytes one by one). */
static inline size_t wsq__plain_run(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (n - i >= 8) {
        uint64_t m = wsq__special_bits(wsq__load64(s + i));
        if (m != 0) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            i += (size_t)__builtin_ctzll(m) >> 3; /* loads are little-endian: the lowest byte */
#endif
            return i;
        }
        i += 8;
    }
    return i;
}

#endif
