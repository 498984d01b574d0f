/*
 * The HTTP front-end (service thread only): fe_http.c serves the public endpoints and the
 * request/answer cycle; admin.c the /admin/ operations. One session per request; its
 * front-end state (fe_data) is a wsq_http_t, which the session owns (freed with it, by the
 * front-end's free). A new request on a kept-alive connection frees the last one's session.
 */
#ifndef WSQ_HTTP_H
#define WSQ_HTTP_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "core.h"
#include "wsq/route.h"

/* Appends a string literal (its length computed, never counted by hand). */
#define WSQ_BUF_LIT(b, lit) wsq_buf_append((b), (lit), sizeof(lit) - 1)

/* What a request's body and confirm are for. */
typedef enum {
    H_PUBLISH = 0,
    H_PURGE,
    H_DELETE_CONSUMER,
    H_IMPORT,
    H_FETCH, /* pull.c: the delivery thread answers (ST_ANSWER) */
    H_ACK,
    H_NACK,
} wsq_http_op_t;

/* Where one request stands. The requests of a connection are served one at a time: the gate
 * (http_gate.c) hands lws one request, and the next only after wsq__gate_next(), which follows
 * lws_http_transaction_completed(), which follows the whole answer. An answer known at once (most
 * of them) is written inside the lws callback that produced it; one that waits for a commit is
 * written from WRITEABLE. */
typedef enum {
    HP_PENDING,  /* the answer waits for the body */
    HP_WORKING,  /* handed to the writer: the answer comes with the commit */
    HP_ANSWER,   /* status and body ready: written now, or at the next WRITEABLE */
    HP_FLUSHING, /* written, partly still in lws: the transaction ends once it is out */
    HP_SENT,     /* out; the connection goes on to the next request, or closes */
} wsq_http_phase_t;

typedef struct wsq_http {
    wsq_http_op_t op;       /* what the body/confirm is for */
    wsq_http_phase_t phase; /* changed only by wsq__http_phase() */
    bool complete;          /* the whole request (headers and body) is in */
    bool close_after;       /* answer with Connection: close, then close */
    bool preflight;         /* a CORS preflight: the answer says what the origin may do */
    char allow[1200];       /* preflight: the headers the origin may send */
    bool head_only;         /* HEAD: the answer's headers, without its body */
    wsq_browser_t browser;  /* Origin, and whether answers carry CORS headers */
    uint64_t expect;        /* H_IMPORT: appends submitted */
    uint64_t done;          /* H_IMPORT: appends completed */
    wsq_err first_err;      /* H_IMPORT: first refusal */
    char topic[WSQ_TOPIC_MAX + 1];
    size_t topic_len;
    bool text;         /* POST Content-Type says text */
    bool resp_text;    /* the response is Prometheus text, not JSON */
    bool publish_body; /* POST /topics/<t>: the body is the message */
    wsq_buf_t body;    /* request body (POST) */
    wsq_buf_t hdrs;    /* POST /topics/<t>: the message's headers (Wsq-Header-*), as a block */
    char id[WSQ_MSG_ID_MAX + 1]; /* POST /topics/<t>: Idempotency-Key, id_len bytes */
    size_t id_len;
    wsq_buf_t resp;  /* response body */
    unsigned status; /* response status, set with HP_ANSWER */
    bool too_large;
    uint64_t body_cap;      /* largest body this request may have */
    wsq_pull_query_t *pull; /* H_FETCH, H_ACK, H_NACK: the query (owned) */
} wsq_http_t;

static inline wsq_http_t *wsq__http(wsq_session_t *s)
{
    return s->fe_data;
}

/* lws callback of the http protocol (protocols[0]): requests, and the loop's own events. */
int wsq__http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len);

/* Refuses an upgrade with status and a JSON error body, written at once; the connection closes
 * after it. */
void wsq__http_refuse(struct lws *wsi, unsigned status, wsq_err code, const char *msg);

/* The one place a request changes phase: phases only move forward. */
void wsq__http_phase(wsq_http_t *h, wsq_http_phase_t to);
/* The answer is ready (status, and the body in h->resp). */
void wsq__http_reply(wsq_session_t *s, unsigned status);
/* An error answer: status from code, JSON body with msg (NULL: code's own text). */
void wsq__http_error(wsq_session_t *s, wsq_err code, const char *msg);
/* Query parameter name into buf: *out is its value, or NULL when absent. false: the value does
 * not fit buf, and the request has been answered 400 (never read as absent). */
bool wsq__http_qarg(wsq_session_t *s, struct lws *wsi, const char *name, char *buf, size_t len,
                    const char **out);
/* Digits only, no overflow. */
bool wsq__parse_u64(const char *s, uint64_t *out);

/* pull.c: POST /fetch, /ack, /nack: the query and rights (answered when refused). */
void wsq__pull_request(wsq_session_t *s, struct lws *wsi, wsq_route_kind_t kind);
/* pull.c: the body is in: the delivery thread takes the request over. */
void wsq__pull_body(wsq_session_t *s);
/* pull.c: the delivery thread's answer (front-end hook `answer`). */
void wsq__pull_answer(wsq_session_t *s, wsq_err err, char *body, size_t len);
/* pull.c: the request's session ends: a waiting fetch is called off; frees h->pull. */
void wsq__pull_end(wsq_session_t *s);

/* admin.c: GET/POST /admin/<op>. */
void wsq__admin_request(wsq_session_t *s, struct lws *wsi, const char *op, bool post);
/* admin.c: the whole body of an admin request is in (import). */
void wsq__admin_body(wsq_session_t *s);
/* admin.c: a writer request of an admin operation completed (h->op is not H_PUBLISH). */
void wsq__admin_confirm(wsq_session_t *s, wsq_wreq_t *req);

#endif
