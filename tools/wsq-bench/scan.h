/*
 * A tiny scanner for wsq.v1 server frames: one pass over the top-level members of a JSON object,
 * keeping only what the bench needs. Values are not unescaped: data points into the frame (the
 * bench's payloads never need escapes). Not a validator; the broker's codec is tested elsewhere.
 */
#ifndef WSQB_SCAN_H
#define WSQB_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { OP_UNKNOWN, OP_OK, OP_MSG, OP_ERR, OP_SUBSCRIBED, OP_GAP, OP_RESET, OP_PONG };

typedef struct {
    int op;
    const char *ref; /* the ref's JSON text (with quotes if a string) */
    size_t ref_len;
    bool ref_is_int;
    uint64_t ref_int;
    bool has_seq;
    uint64_t seq, ts, start_seq, next_seq, from, to;
    const uint8_t *data; /* string contents, still escaped */
    size_t data_len;
    const char *code, *message;
    size_t code_len, message_len;
} scan_t;

bool scan_frame(const uint8_t *p, size_t len, scan_t *s);

#endif
