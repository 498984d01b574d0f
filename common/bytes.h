/* Fixed-width integer encoding helpers (internal). */
#ifndef WSQ_BYTES_H
#define WSQ_BYTES_H

#include <stdint.h>

static inline void wsq__put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static inline void wsq__put_le64(unsigned char *p, uint64_t v)
{
    wsq__put_le32(p, (uint32_t)v);
    wsq__put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t wsq__get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t wsq__get_le64(const unsigned char *p)
{
    return (uint64_t)wsq__get_le32(p) | (uint64_t)wsq__get_le32(p + 4) << 32;
}

static inline void wsq__put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static inline void wsq__put_be64(unsigned char *p, uint64_t v)
{
    wsq__put_be32(p, (uint32_t)(v >> 32));
    wsq__put_be32(p + 4, (uint32_t)v);
}

static inline uint32_t wsq__get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline uint64_t wsq__get_be64(const unsigned char *p)
{
    return (uint64_t)wsq__get_be32(p) << 32 | (uint64_t)wsq__get_be32(p + 4);
}

#endif
