/*
 * The gate (http_gate.c): frames the HTTP requests of every client connection before lws reads
 * them, and checks WebSocket client frames. Service thread only.
 */
#ifndef WSQ_GATE_H
#define WSQ_GATE_H

#include <stdbool.h>
#include <stdint.h>

#include "wsq/err.h"

struct lws;

/* Before the lws context exists: WSQ_ERR_NOMEM, WSQ_ERR_INTERNAL (recv/SSL_read not found). */
wsq_err wsq__gate_init(void);
/* After the lws context is gone. */
void wsq__gate_fini(void);
/* A new client connection; false: out of memory. max_head: limits.max_header_size. */
bool wsq__gate_open(struct lws *wsi, uint32_t max_head);
void wsq__gate_close(struct lws *wsi);
/* The current request's transaction is complete: the gate lets the next one in. */
void wsq__gate_next(struct lws *wsi);
/* The client sent more before this request was answered: the answer closes the connection. */
bool wsq__gate_pipelined(struct lws *wsi);
/* HTTP request headers named so carry a message's headers (POST /topics/<t>). */
#define WSQ_HEADER_PREFIX "wsq-header-"

/* The names of the current request's Wsq-Header-<name> lines, lower case, without the prefix:
 * *count NUL-terminated strings one after the other at *names (valid until the next request).
 * false when one of them was longer than WSQ_HEADER_KEY_MAX (255) bytes. */
bool wsq__gate_header_names(struct lws *wsi, const char **names, unsigned *count);
/* A WebSocket client sent an unmasked frame: the session must close with 1002. */
bool wsq__gate_ws_violation(struct lws *wsi);

#endif
