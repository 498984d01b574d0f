/*
 * Request headers and query parameters of the request lws is handling on wsi (service thread;
 * in LWS_CALLBACK_HTTP, HTTP_CONFIRM_UPGRADE and ESTABLISHED, while lws still has the headers).
 *
 * A value longer than the caller's buffer is WSQ_ERR_TOO_LARGE, never "absent": lws's own
 * lws_hdr_copy() and lws_get_urlarg_by_name() answer "none" to a value that does not fit, which
 * let a long Origin pass as no Origin and a long ?token= as no token.
 */
#ifndef WSQ_REQ_H
#define WSQ_REQ_H

#include <libwebsockets.h>

#include "wsq/err.h"

/* The header h into buf (NUL-terminated; several occurrences joined as lws joins them).
 * WSQ_OK, WSQ_ERR_NOTFOUND (buf is ""), WSQ_ERR_TOO_LARGE (len too small; buf is ""). */
wsq_err wsq__req_header(struct lws *wsi, enum lws_token_indexes h, char *buf, size_t len);

/* The value of the first query parameter called name (percent-decoded by lws), as
 * wsq__req_header. "name" alone, without '=', is not a match. */
wsq_err wsq__req_query(struct lws *wsi, const char *name, char *buf, size_t len);

/* Every query parameter joined with '&', as a query string again: lws has decoded each one, so
 * '%' and '&' in them are encoded back (wsq__req_encode), and a decoder such as
 * wsq_raw_parse_target() reads exactly what the client sent. WSQ_OK ("" when there is none), or
 * WSQ_ERR_TOO_LARGE. */
wsq_err wsq__req_query_all(struct lws *wsi, char *buf, size_t len);

/* s[0..n) into out (len bytes, NUL-terminated) with '%' and '&' percent-encoded. Returns the
 * length, or (size_t)-1 when out is too small. */
size_t wsq__req_encode(const char *s, size_t n, char *out, size_t len);

#endif
