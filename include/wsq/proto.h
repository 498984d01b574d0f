/*
 * wsq wire codecs: pure functions, bytes in -> frame or error, and frame -> bytes. No I/O, no
 * globals, any thread. Linked by wsqd, wsqctl and wsq-bench, so both sides of wsq.v1 share one
 * implementation. docs/PROTOCOL.md is the normative description; this header is its code.
 *
 * wsq.v1 frames are WebSocket text frames holding one JSON object with an "op" member.
 * Client -> server: pub, sub, unsub, ack, nack, ping, auth.
 * Server -> client: ok, err, subscribed, msg, gap, reset, pong.
 * Binary payloads travel base64-encoded with "enc":"base64"; text payloads as JSON strings.
 */
#ifndef WSQ_PROTO_H
#define WSQ_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsq/err.h"

#define WSQ_SUBPROTOCOL "wsq.v1"
#define WSQ_REF_MAX 128 /* bytes of the JSON text of a "ref" value */
#define WSQ_TOKEN_MAX 8192

/* ------------------------------------------------------------------------------------------- */
/* Growable output buffer                                                                      */

typedef struct {
    unsigned char *data;
    size_t len;
    size_t cap;
} wsq_buf_t;

void wsq_buf_init(wsq_buf_t *b);
void wsq_buf_fini(wsq_buf_t *b);
/* Makes room for n more bytes. WSQ_ERR_NOMEM. */
wsq_err wsq_buf_reserve(wsq_buf_t *b, size_t n);
wsq_err wsq_buf_append(wsq_buf_t *b, const void *p, size_t n);

/* ------------------------------------------------------------------------------------------- */
/* Client frames (decoded by the broker, encoded by clients)                                   */

typedef enum {
    WSQ_OP_PUB = 1,
    WSQ_OP_SUB,
    WSQ_OP_UNSUB,
    WSQ_OP_ACK,
    WSQ_OP_NACK,
    WSQ_OP_PING,
    WSQ_OP_AUTH,
} wsq_op_t;

/* Where a subscription starts ("from"). */
typedef enum {
    WSQ_FROM_DEFAULT = 0, /* not given: RESUME for a named consumer, LATEST for an ephemeral one */
    WSQ_FROM_RESUME,      /* "resume": where the consumer left off (new consumer: latest) */
    WSQ_FROM_EARLIEST,    /* "earliest": the first retained message */
    WSQ_FROM_LATEST,      /* "latest": only messages published from now on */
    WSQ_FROM_SEQ,         /* {"seq": N}: from seq N */
    WSQ_FROM_TIME,        /* {"time": MS}: from the first message with ts >= MS (Unix ms) */
} wsq_from_t;

typedef struct {
    wsq_op_t op;
    char ref[WSQ_REF_MAX + 1]; /* the "ref" member's JSON text, echoed verbatim; "" when absent */
    char topic[256];           /* "topic" (pub, sub, unsub, ack, nack); validated name */
    size_t topic_len;
    /* pub */
    unsigned char *data; /* decoded payload (owned by the frame; malloc'd) */
    size_t data_len;
    bool binary; /* "enc":"base64" */
    /* sub */
    char consumer[129]; /* "" = ephemeral */
    size_t consumer_len;
    wsq_from_t from;
    uint64_t from_seq; /* WSQ_FROM_SEQ */
    int64_t from_time; /* WSQ_FROM_TIME, Unix ms */
    uint32_t window;   /* 0 = not given */
    bool has_epoch;
    uint64_t epoch; /* "epoch" the client knows, 16 hex digits */
    /* ack / nack */
    bool has_seq;
    uint64_t seq; /* "seq" */
    bool has_upto;
    uint64_t upto;    /* "upto" (ack only): cumulative */
    int64_t delay_ms; /* "delay" (nack), >= 0 */
    /* auth */
    char *token; /* "token" (owned by the frame; malloc'd) */
} wsq_frame_t;

/* Details of a decode error, for the err frame. */
typedef struct {
    wsq_err code;      /* bad_json, unknown_op, bad_type, bad_request, bad_topic, too_large ... */
    char message[160]; /* human text naming the field, e.g. "\"seq\" must be a positive integer" */
    char ref[WSQ_REF_MAX + 1]; /* the ref, when it could be read before the error */
} wsq_proto_error_t;

/* Initialises a frame (no allocation). */
void wsq_frame_init(wsq_frame_t *f);
/* Frees what the frame owns and re-initialises it. */
void wsq_frame_clear(wsq_frame_t *f);

/* Decodes one wsq.v1 client frame. max_payload caps the decoded pub payload (WSQ_ERR_TOO_LARGE).
 * On error fills *perr (which may not be NULL) and leaves f cleared. Unknown members are ignored
 * (forward compatibility); wrong types, bad values and missing required members are errors. */
wsq_err wsq_proto_decode(const void *json, size_t len, size_t max_payload, wsq_frame_t *f,
                         wsq_proto_error_t *perr);

/* Encodes a client frame (for wsqctl and wsq-bench). Appends to out. */
wsq_err wsq_proto_encode_client(const wsq_frame_t *f, wsq_buf_t *out);

/* ------------------------------------------------------------------------------------------- */
/* Server frames (encoded by the broker, decoded by clients)                                   */

/* Each encoder appends one complete JSON object to out. ref is JSON text or NULL/"". */
wsq_err wsq_proto_enc_ok(wsq_buf_t *out, const char *ref, const char *topic, size_t topic_len,
                         uint64_t seq, bool has_seq);
wsq_err wsq_proto_enc_err(wsq_buf_t *out, const char *ref, wsq_err code, const char *message);
wsq_err wsq_proto_enc_pong(wsq_buf_t *out, const char *ref);

typedef struct {
    const char *topic;
    size_t topic_len;
    const char *consumer; /* NULL or "" for ephemeral */
    uint64_t epoch;
    uint64_t first_seq;
    uint64_t next_seq;
    uint64_t start_seq; /* first seq this subscription will deliver (before redeliveries) */
    uint32_t window;
    bool resumed; /* an existing consumer was resumed */
} wsq_subscribed_t;
wsq_err wsq_proto_enc_subscribed(wsq_buf_t *out, const char *ref, const wsq_subscribed_t *s);

/* {"op":"msg","topic":T,"seq":N,"ts":MS,"data":...[,"enc":"base64"][,"deliveries":D]}
 * deliveries is written only when > 1. Text payloads must be valid UTF-8 (stored text is). */
wsq_err wsq_proto_enc_msg(wsq_buf_t *out, const char *topic, size_t topic_len, uint64_t seq,
                          int64_t ts_ms, const void *data, size_t len, bool binary,
                          uint32_t deliveries);

/* Gap reasons */
typedef enum { WSQ_GAP_RETENTION = 1, WSQ_GAP_PURGE } wsq_gap_reason_t;
const char *wsq_gap_reason_name(wsq_gap_reason_t r); /* "retention" | "purge" */

/* {"op":"gap","topic":T,"from":A,"to":B,"reason":R}: seqs A..B (inclusive) no longer exist. */
wsq_err wsq_proto_enc_gap(wsq_buf_t *out, const char *topic, size_t topic_len, uint64_t from,
                          uint64_t to, wsq_gap_reason_t reason);

/* {"op":"reset","topic":T,"epoch":"<16 hex>","first_seq":F,"next_seq":N}: the topic the client
 * knew (by its epoch) no longer exists; positions start over in the new epoch. */
wsq_err wsq_proto_enc_reset(wsq_buf_t *out, const char *topic, size_t topic_len, uint64_t epoch,
                            uint64_t first_seq, uint64_t next_seq);

/* A decoded server frame (clients: wsqctl, wsq-bench, tests). */
typedef struct {
    char op[16];
    char ref[WSQ_REF_MAX + 1];
    char topic[256];
    uint64_t seq, ts, from, to, first_seq, next_seq, epoch;
    uint32_t deliveries;
    bool binary;
    unsigned char *data; /* msg payload, malloc'd, owned */
    size_t data_len;
    char code[32];
    char message[256];
    char reason[32];
} wsq_server_frame_t;
void wsq_server_frame_clear(wsq_server_frame_t *f);
wsq_err wsq_proto_decode_server(const void *json, size_t len, wsq_server_frame_t *f);

/* ------------------------------------------------------------------------------------------- */
/* Raw mode: ws://HOST:PORT/topics/<topic>?consumer=<name>&from=<spec>&token=<t>               */

typedef struct {
    char topic[256];
    size_t topic_len;
    char consumer[129]; /* "" = none */
    size_t consumer_len;
    wsq_from_t from; /* earliest|latest|resume, a seq number, or time:<ms> */
    uint64_t from_seq;
    int64_t from_time;
    char *token; /* owned (malloc'd) or NULL */
} wsq_raw_target_t;

void wsq_raw_target_clear(wsq_raw_target_t *t);

/* Parses the request path ("/topics/chat.room1", percent-decoded by this function) and the query
 * string (without '?', may be NULL). Unknown query parameters are errors. WSQ_ERR_NOTFOUND when
 * the path is not under /topics/, WSQ_ERR_BAD_TOPIC, WSQ_ERR_BAD_REQUEST (message in errbuf). */
wsq_err wsq_raw_parse_target(const char *path, const char *query, wsq_raw_target_t *t, char *errbuf,
                             size_t errlen);

/* ------------------------------------------------------------------------------------------- */
/* Helpers                                                                                      */

/* True when buf[0..len) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool wsq_utf8_valid(const void *buf, size_t len);

/* The value of the hex digit c (either case), or -1. */
int wsq_hexval(int c);

/* Streaming UTF-8 validation across fragment boundaries: state starts at 0. Returns false as soon
 * as the input cannot be valid; *state != 0 after the last chunk means a truncated sequence. */
bool wsq_utf8_feed(uint32_t *state, const void *buf, size_t len);

/* Base64 (RFC 4648, with padding). enc writes 4*ceil(len/3) bytes (no NUL). dec returns
 * WSQ_ERR_INVAL on bad input and writes at most 3*len/4 bytes. */
size_t wsq_base64_enc_len(size_t len);
void wsq_base64_encode(const void *in, size_t len, char *out);
wsq_err wsq_base64_decode(const char *in, size_t len, unsigned char *out, size_t *outlen);

/* Server-to-client WebSocket frame header (FIN set, no mask) for a payload of len bytes.
 * opcode: 1 text, 2 binary, 8 close, 9 ping, 10 pong. Writes 2, 4 or 10 bytes into hdr and
 * returns the count. */
#define WSQ_WS_HDR_MAX 10
size_t wsq_ws_frame_header(unsigned char *hdr, unsigned opcode, uint64_t len);

/* JSON string body escaping (without quotes) into out. */
wsq_err wsq_json_escape(wsq_buf_t *out, const char *s, size_t len);

#endif
