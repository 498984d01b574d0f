/* Checksums of stored messages: see crc.h. */
#include <isa-l/crc.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "crc.h"

/* ISA-L folds long buffers with carry-less multiplication, several streams at once, which wins
 * from about 350 bytes on; below that its setup costs more than the work. Short buffers take the
 * CPU's CRC-32C instruction directly, 8 bytes a step, where the CPU has it (SSE 4.2, checked
 * once). Measured here: a 128-byte payload and its 12-byte seal 54 ns all in ISA-L, 23 ns so;
 * 256 bytes 47 ns against 36; 512 bytes 51 ns against 84. */
#define SHORT_MAX 320

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) static uint32_t crc_short(uint32_t reg, const unsigned char *p,
                                                            size_t len)
{
    uint64_t r = reg;
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        r = __builtin_ia32_crc32di(r, v);
    }
    uint32_t r32 = (uint32_t)r;
    for (; len > 0; p++, len--)
        r32 = __builtin_ia32_crc32qi(r32, *p);
    return r32;
}

static _Atomic int have_sse42 = -1; /* -1: not asked yet (threads may ask at once: atomic) */

static bool short_ok(void)
{
    int have = atomic_load_explicit(&have_sse42, memory_order_relaxed);
    if (have < 0) { /* (two threads may both ask the CPU: the same answer) */
        have = __builtin_cpu_supports("sse4.2") ? 1 : 0;
        atomic_store_explicit(&have_sse42, have, memory_order_relaxed);
    }
    return have;
}
#else
static uint32_t crc_short(uint32_t reg, const unsigned char *p, size_t len)
{
    return crc32_iscsi((unsigned char *)p, (int)len, reg);
}

static bool short_ok(void)
{
    return true;
}
#endif

uint32_t wsq__crc32c(uint32_t crc, const void *data, size_t len)
{
    /* both work on the raw register (no pre- or post-inversion) */
    uint32_t reg = ~crc;
    const unsigned char *p = data;
    if (len <= SHORT_MAX && short_ok())
        return ~crc_short(reg, p, len);
    while (len > 0) { /* ISA-L takes an int length */
        int n = len > (size_t)INT_MAX ? INT_MAX : (int)len;
        reg = crc32_iscsi((unsigned char *)p, n, reg);
        p += n;
        len -= (size_t)n;
    }
    return ~reg;
}

uint32_t wsq__msg_crc_seal(uint32_t payload_crc, int64_t ts_ms, uint32_t user_flags)
{
    unsigned char tail[12];
    for (int i = 0; i < 8; i++)
        tail[i] = (unsigned char)((uint64_t)ts_ms >> (8 * i));
    for (int i = 0; i < 4; i++)
        tail[8 + i] = (unsigned char)(user_flags >> (8 * i));
    return wsq__crc32c(payload_crc, tail, sizeof(tail));
}
