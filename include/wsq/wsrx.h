/*
 * WebSocket client-frame scanner (RFC 6455 5.2): checks the frame headers of the bytes a client
 * sends after the upgrade, without touching payloads. The gate (broker/http_gate.c) runs it,
 * because lws 4.1 accepts unmasked client frames, which RFC 6455 5.1 forbids: the server must
 * close the connection (1002).
 *
 * Pure: no I/O, no globals, no allocation. One wsq_wsrx_t per connection; one thread at a time.
 * Library wsqproto (proto/wsrx.c).
 */
#ifndef WSQ_WSRX_H
#define WSQ_WSRX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    bool unmasked; /* result: a client frame without a mask; scanning has stopped */
    uint8_t part;  /* private: which part of a frame the next byte belongs to */
    uint8_t left;  /* private: bytes left in the current header part */
    uint64_t len;  /* private: payload length being read */
    uint64_t skip; /* private: payload bytes still to skip */
} wsq_wsrx_t;

/* Starts scanning a connection's client bytes (no allocation; nothing to free). */
void wsq_wsrx_init(wsq_wsrx_t *w);

/* Scans p[0..len) of the client's byte stream. Returns how many bytes are acceptable: len, or,
 * once a frame turns out to be unmasked, the offset of its second header byte (the one with the
 * mask bit); unmasked is then set and every later call returns 0. */
size_t wsq_wsrx_scan(wsq_wsrx_t *w, const uint8_t *p, size_t len);

#endif
