/*
 * Base64 (RFC 4648), one strict codec for both alphabets:
 *   - standard (section 4, "+/"), padded with '=' to whole quanta: wsq.v1 binary payloads;
 *   - base64url (section 5, "-_"), unpadded as RFC 7515 section 2 requires: JWTs.
 * The decoder accepts exactly one encoding of every byte string: no character outside the
 * alphabet (whitespace, the other alphabet's two, '=' anywhere but the padding), no length that
 * cannot hold whole bytes, and no non-zero bits in the last character beyond the last byte. A
 * second encoding of the same bytes would let a JWT be altered without touching its signature.
 * Pure: no I/O, no globals except const tables, any thread.
 */
#include "wsq/proto.h"

static const char alpha_std[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char alpha_url[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Decoding: the value of a character in bits 0-5, and which alphabets hold it in bits 6-7; 0
 * for every character in neither. Decoding one quantum ANDs the four entries with the alphabet's
 * bit, so one test rejects a bad character anywhere in it. */
#define IN_STD 0x40u
#define IN_URL 0x80u
#define IN_BOTH (IN_STD | IN_URL)
static const unsigned char dec_tab[256] = {
    ['A'] = IN_BOTH | 0,  ['B'] = IN_BOTH | 1,  ['C'] = IN_BOTH | 2,  ['D'] = IN_BOTH | 3,
    ['E'] = IN_BOTH | 4,  ['F'] = IN_BOTH | 5,  ['G'] = IN_BOTH | 6,  ['H'] = IN_BOTH | 7,
    ['I'] = IN_BOTH | 8,  ['J'] = IN_BOTH | 9,  ['K'] = IN_BOTH | 10, ['L'] = IN_BOTH | 11,
    ['M'] = IN_BOTH | 12, ['N'] = IN_BOTH | 13, ['O'] = IN_BOTH | 14, ['P'] = IN_BOTH | 15,
    ['Q'] = IN_BOTH | 16, ['R'] = IN_BOTH | 17, ['S'] = IN_BOTH | 18, ['T'] = IN_BOTH | 19,
    ['U'] = IN_BOTH | 20, ['V'] = IN_BOTH | 21, ['W'] = IN_BOTH | 22, ['X'] = IN_BOTH | 23,
    ['Y'] = IN_BOTH | 24, ['Z'] = IN_BOTH | 25, ['a'] = IN_BOTH | 26, ['b'] = IN_BOTH | 27,
    ['c'] = IN_BOTH | 28, ['d'] = IN_BOTH | 29, ['e'] = IN_BOTH | 30, ['f'] = IN_BOTH | 31,
    ['g'] = IN_BOTH | 32, ['h'] = IN_BOTH | 33, ['i'] = IN_BOTH | 34, ['j'] = IN_BOTH | 35,
    ['k'] = IN_BOTH | 36, ['l'] = IN_BOTH | 37, ['m'] = IN_BOTH | 38, ['n'] = IN_BOTH | 39,
    ['o'] = IN_BOTH | 40, ['p'] = IN_BOTH | 41, ['q'] = IN_BOTH | 42, ['r'] = IN_BOTH | 43,
    ['s'] = IN_BOTH | 44, ['t'] = IN_BOTH | 45, ['u'] = IN_BOTH | 46, ['v'] = IN_BOTH | 47,
    ['w'] = IN_BOTH | 48, ['x'] = IN_BOTH | 49, ['y'] = IN_BOTH | 50, ['z'] = IN_BOTH | 51,
    ['0'] = IN_BOTH | 52, ['1'] = IN_BOTH | 53, ['2'] = IN_BOTH | 54, ['3'] = IN_BOTH | 55,
    ['4'] = IN_BOTH | 56, ['5'] = IN_BOTH | 57, ['6'] = IN_BOTH | 58, ['7'] = IN_BOTH | 59,
    ['8'] = IN_BOTH | 60, ['9'] = IN_BOTH | 61, ['+'] = IN_STD | 62,  ['/'] = IN_STD | 63,
    ['-'] = IN_URL | 62,  ['_'] = IN_URL | 63,
};

static size_t encode(const char alpha[64], bool pad, const void *in, size_t len, char *out)
{
    const unsigned char *s = in;
    char *o = out;
    size_t i = 0;
    for (; len - i >= 3; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        o[0] = alpha[v >> 18];
        o[1] = alpha[(v >> 12) & 63];
        o[2] = alpha[(v >> 6) & 63];
        o[3] = alpha[v & 63];
        o += 4;
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        o[0] = alpha[v >> 18];
        o[1] = alpha[(v >> 12) & 63];
        o += 2;
        if (pad) {
            o[0] = '=';
            o[1] = '=';
            o += 2;
        }
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        o[0] = alpha[v >> 18];
        o[1] = alpha[(v >> 12) & 63];
        o[2] = alpha[(v >> 6) & 63];
        o += 3;
        if (pad)
            *o++ = '=';
    }
    return (size_t)(o - out);
}

static wsq_err decode(unsigned in_alpha, bool pad, const char *in, size_t len, unsigned char *out,
                      size_t *outlen)
{
    const unsigned char *s = (const unsigned char *)in;
    if (pad) {
        /* whole quanta only; "=" or "==" may end the last one and nothing else */
        if (len % 4 != 0)
            return WSQ_ERR_INVAL;
        if (len > 0 && s[len - 1] == '=')
            len -= s[len - 2] == '=' ? 2 : 1;
    }
    /* 1 mod 4 characters carry 6 bits: not even one byte */
    if (len % 4 == 1)
        return WSQ_ERR_INVAL;
    size_t o = 0, i = 0;
    for (; len - i >= 4; i += 4) {
        unsigned a = dec_tab[s[i]], b = dec_tab[s[i + 1]];
        unsigned c = dec_tab[s[i + 2]], d = dec_tab[s[i + 3]];
        if ((a & b & c & d & in_alpha) == 0)
            return WSQ_ERR_INVAL;
        a &= 63, b &= 63, c &= 63, d &= 63;
        out[o++] = (unsigned char)(a << 2 | b >> 4);
        out[o++] = (unsigned char)((b & 0x0F) << 4 | c >> 2);
        out[o++] = (unsigned char)((c & 0x03) << 6 | d);
    }
    size_t rest = len - i; /* 0, 2 (one byte) or 3 (two bytes) */
    if (rest > 0) {
        unsigned a = dec_tab[s[i]], b = dec_tab[s[i + 1]];
        unsigned c = rest == 3 ? dec_tab[s[i + 2]] : in_alpha;
        if ((a & b & c & in_alpha) == 0)
            return WSQ_ERR_INVAL;
        a &= 63, b &= 63, c &= 63;
        /* the bits of the last character beyond the last byte must be zero */
        if (rest == 2 ? (b & 0x0F) != 0 : (c & 0x03) != 0)
            return WSQ_ERR_INVAL;
        out[o++] = (unsigned char)(a << 2 | b >> 4);
        if (rest == 3)
            out[o++] = (unsigned char)((b & 0x0F) << 4 | c >> 2);
    }
    *outlen = o;
    return WSQ_OK;
}

size_t wsq_base64_enc_len(size_t len)
{
    return (len / 3 + (len % 3 != 0)) * 4;
}

size_t wsq_base64_dec_len(const char *in, size_t len)
{
    if (len % 4 != 0 || len == 0)
        return 0;
    return len / 4 * 3 - (in[len - 1] == '=') - (in[len - 2] == '=');
}

size_t wsq_base64_encode(const void *in, size_t len, char *out)
{
    return encode(alpha_std, true, in, len, out);
}

wsq_err wsq_base64_decode(const char *in, size_t len, unsigned char *out, size_t *outlen)
{
    return decode(IN_STD, true, in, len, out, outlen);
}

size_t wsq_base64url_encode(const void *in, size_t len, char *out)
{
    return encode(alpha_url, false, in, len, out);
}

wsq_err wsq_base64url_decode(const char *in, size_t len, unsigned char *out, size_t *outlen)
{
    return decode(IN_URL, false, in, len, out, outlen);
}
