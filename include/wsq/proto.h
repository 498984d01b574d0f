/*
 * wsq wire codecs (library wsqproto, proto/): pure functions, bytes in -> frame or error, and
 * frame -> bytes. Linked by wsqd, wsqctl and wsq-bench, so both sides of wsq.v1 share one
 * implementation. docs/PROTOCOL.md is the normative description; this header is its code.
 *
 * wsq.v1 frames are WebSocket text frames holding one JSON object with an "op" member.
 * Client -> server: pub, sub, unsub, ack, nack, ping, auth.
 * Server -> client: ok, err, subscribed, msg, gap, reset, pong.
 * Binary payloads travel base64-encoded with "enc":"base64"; text payloads as JSON strings.
 *
 * Threads: no function here does I/O or keeps state between calls (there are no globals but
 * const tables), so every function may be called from any thread. An object passed in
 * (wsq_buf_t, wsq_frame_t, ...) must be used by one thread at a time.
 *
 * Memory: a function that allocates says who frees what. Encoders append to a wsq_buf_t and, on
 * any error, leave it at its length before the call, so a buffer never holds half a frame.
 * Decoders overwrite their output struct: clear a previous result first, or it leaks.
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

/* data[0..len) is the content, cap the allocation; data is NULL until the first append. Owned
 * by the buffer (malloc'd): freed by wsq_buf_fini. Any append may move data, so a pointer into it
 * is valid only until the next append, reserve or fini. */
typedef struct {
    unsigned char *data;
    size_t len;
    size_t cap;
} wsq_buf_t;

/* Initialises an empty buffer (no allocation). */
void wsq_buf_init(wsq_buf_t *b);
/* Frees data and leaves b empty and initialised (it may be used again). */
void wsq_buf_fini(wsq_buf_t *b);
/* Makes room for n more bytes after len (the capacity grows by doubling). WSQ_ERR_NOMEM when
 * len + n overflows or the allocation fails; b is then unchanged. */
wsq_err wsq_buf_reserve(wsq_buf_t *b, size_t n);
/* Appends p[0..n). p may be NULL when n is 0 (nothing happens). WSQ_ERR_NOMEM as
 * wsq_buf_reserve, with b unchanged. */
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

/* A decoded client frame. Which members are meaningful depends on op; the others are zero. */
typedef struct {
    wsq_op_t op;
    size_t topic_len; /* of topic (below) */
    /* pub */
    unsigned char *data; /* decoded payload, data_len bytes and a NUL (owned by the frame) */
    size_t data_len;
    bool binary;            /* "enc":"base64" */
    unsigned char *headers; /* "headers" as a block (see "Message headers"), headers_len bytes,
                             * owned by the frame; NULL when absent */
    size_t headers_len;
    uint32_t n_headers;  /* how many */
    size_t header_bytes; /* their keys and values, summed (limits.max_header_bytes) */
    char *id;            /* "id": the publish id (1 to 128 bytes, NUL-terminated; owned by the
                          * frame), NULL for none */
    size_t id_len;
    /* sub */
    size_t consumer_len; /* of consumer (below) */
    wsq_from_t from;
    uint64_t from_seq; /* WSQ_FROM_SEQ */
    int64_t from_time; /* WSQ_FROM_TIME, Unix ms */
    uint32_t window;   /* 0 = not given */
    bool has_epoch;
    bool shared;    /* sub: "shared": true (a shared consumer; needs "consumer") */
    bool pattern;   /* sub, unsub: topic is a pattern (a '*' or '>' segment), not a name */
    uint64_t epoch; /* "epoch" the client knows, 16 hex digits */
    /* ack / nack */
    bool has_seq;
    uint64_t seq; /* "seq" */
    bool has_upto;
    uint64_t upto;    /* "upto" (ack only): cumulative */
    int64_t delay_ms; /* "delay" (nack), >= 0 */
    bool term;        /* "term": true (nack): give the message up now (dead letter) */
    /* auth */
    char *token; /* "token", NUL-terminated (owned by the frame) */
    /* The strings last: wsq_frame_init clears what precedes them and only their first byte, so
     * a frame costs no 500-byte memset per message (bytes after a string's NUL are undefined). */
    char ref[WSQ_REF_MAX + 1]; /* the "ref" member's JSON text, echoed verbatim; "" when absent */
    char topic[256];           /* "topic" (pub, sub, unsub, ack, nack); validated name */
    char consumer[129];        /* sub: "" = ephemeral */
} wsq_frame_t;

/* Details of a decode error, for the err frame. */
typedef struct {
    wsq_err code;      /* bad_json, unknown_op, bad_type, bad_request, bad_topic, too_large ... */
    char message[160]; /* human text naming the field, e.g. "\"seq\" must be a positive integer" */
    char ref[WSQ_REF_MAX + 1]; /* the ref, when it could be read before the error */
} wsq_proto_error_t;

/* Initialises a frame (no allocation). */
void wsq_frame_init(wsq_frame_t *f);
/* Frees what the frame owns (data, token) and re-initialises it. Idempotent. */
void wsq_frame_clear(wsq_frame_t *f);

/*
 * Decodes one wsq.v1 client frame: the JSON text json[0..len) (not NUL-terminated; NULL reads
 * as empty). max_payload caps the decoded pub payload; the whole frame is refused unparsed above
 * 6 * max_payload + 64 KiB, so the parser's memory is bounded by the caller. Unknown members are
 * ignored (forward compatibility); wrong types, bad values and missing required members are
 * errors.
 *
 * f and *perr are overwritten (perr may not be NULL). On success f holds the frame, and
 * f->data and f->token are the caller's through f: free them with wsq_frame_clear.
 *
 * Errors (f is then cleared; perr->code repeats the code, perr->message names the member,
 * printable ASCII only, and perr->ref holds the ref when it was read before the error):
 *   WSQ_ERR_BAD_JSON     not JSON (invalid UTF-8 included);
 *   WSQ_ERR_BAD_REQUEST  not an object, a missing member, a value out of range or malformed;
 *   WSQ_ERR_BAD_TYPE     a member of the wrong JSON type;
 *   WSQ_ERR_UNKNOWN_OP   "op" names no client op;
 *   WSQ_ERR_BAD_TOPIC    "topic" is not a topic name (wsq/topic.h);
 *   WSQ_ERR_TOO_LARGE    the payload exceeds max_payload, or the frame its bound above;
 *   WSQ_ERR_NOMEM.
 */
wsq_err wsq_proto_decode(const void *json, size_t len, size_t max_payload, wsq_frame_t *f,
                         wsq_proto_error_t *perr);

/* Encodes the client frame f (for wsqctl and wsq-bench) and appends it to out. f is only read.
 * WSQ_ERR_INVAL when wsq_proto_decode would refuse the frame (an unknown op, a bad topic or
 * consumer name, a missing or out-of-range value), so a client learns about a bad frame before
 * the broker does; WSQ_ERR_BAD_UTF8 when a text payload or string is not valid UTF-8;
 * WSQ_ERR_NOMEM. On error out is unchanged. */
wsq_err wsq_proto_encode_client(const wsq_frame_t *f, wsq_buf_t *out);

/* ------------------------------------------------------------------------------------------- */
/* Server frames (encoded by the broker, decoded by clients)                                   */

/*
 * Each encoder appends one complete JSON object to out and returns WSQ_OK. On error out keeps its
 * length before the call: WSQ_ERR_NOMEM; WSQ_ERR_BAD_UTF8 when a string it writes (topic,
 * consumer, text payload) is not valid UTF-8; WSQ_ERR_INVAL for the bad arguments it names. ref
 * is the JSON text of the client's "ref", written verbatim (as wsq_frame_t.ref holds it), or NULL
 * or "" for none. topic[0..topic_len) is escaped, not validated as a name.
 */

/* {"op":"ok"[,"ref":R][,"topic":T][,"seq":N][,"dup":true]}: the topic when topic is not NULL
 * and topic_len > 0, the seq when has_seq, dup when dup (a publish id seen before). WSQ_ERR_INVAL
 * when topic_len > WSQ_TOPIC_MAX. */
wsq_err wsq_proto_enc_ok(wsq_buf_t *out, const char *ref, const char *topic, size_t topic_len,
                         uint64_t seq, bool has_seq, bool dup);
/* {"op":"err"[,"ref":R],"code":C,"message":M}: C is wsq_errname(code); M is message (NUL-
 * terminated), or wsq_strerror(code) when message is NULL or not valid UTF-8. Only
 * WSQ_ERR_NOMEM. */
wsq_err wsq_proto_enc_err(wsq_buf_t *out, const char *ref, wsq_err code, const char *message);
/* {"op":"pong"[,"ref":R]}. Only WSQ_ERR_NOMEM. */
wsq_err wsq_proto_enc_pong(wsq_buf_t *out, const char *ref);

/* What a subscribed frame says; the strings are only read during the call. */
typedef struct {
    const char *topic;
    size_t topic_len;
    const char *consumer; /* NUL-terminated; NULL or "" for ephemeral */
    uint64_t epoch;
    uint64_t first_seq;
    uint64_t next_seq;
    uint64_t start_seq; /* first seq this subscription will deliver (before redeliveries) */
    uint32_t window;
    bool resumed;    /* an existing consumer was resumed */
    bool shared;     /* a shared consumer: "shared": true is added */
    bool pattern;    /* topic is a pattern: "pattern":true and "topics" instead of positions */
    uint32_t topics; /* pattern: the topics it matched when subscribing */
} wsq_subscribed_t;
/* {"op":"subscribed"[,"ref":R],"topic":T[,"consumer":C],"epoch":"<16 hex>","first_seq":F,
 * "next_seq":N,"start_seq":S,"window":W,"resumed":B[,"shared":true]}; for a pattern
 * {"op":"subscribed"[,"ref":R],"topic":P[,"consumer":C],"pattern":true,"topics":N,"window":W,
 * "resumed":B[,"shared":true]}. WSQ_ERR_INVAL when s->topic
 * is NULL or its length is 0 or above WSQ_TOPIC_MAX (255). */
wsq_err wsq_proto_enc_subscribed(wsq_buf_t *out, const char *ref, const wsq_subscribed_t *s);

/* {"op":"msg","topic":T,"seq":N,"ts":MS,"data":...[,"enc":"base64"][,"headers":{...}]
 * [,"deliveries":D]}
 * data[0..len) is the payload: base64-encoded when binary, else a JSON string, which must be
 * valid UTF-8 (stored text is). headers[0..headers_len) is a block (see "Message headers"),
 * written as an object in its order when not empty. deliveries is written only when > 1. The
 * broker's delivery hot path: one reservation covers the frame unless the text needs escapes.
 * WSQ_ERR_INVAL for a topic as in wsq_proto_enc_subscribed, data or headers NULL with a length
 * > 0, or binary with len above SIZE_MAX / 2. */
wsq_err wsq_proto_enc_msg(wsq_buf_t *out, const char *topic, size_t topic_len, uint64_t seq,
                          int64_t ts_ms, const void *data, size_t len, bool binary,
                          uint32_t deliveries, const void *headers, size_t headers_len);

/* The same object with "deliveries" always written: a message leased by POST /fetch. */
wsq_err wsq_proto_enc_leased(wsq_buf_t *out, const char *topic, size_t topic_len, uint64_t seq,
                             int64_t ts_ms, const void *data, size_t len, bool binary,
                             uint32_t deliveries, const void *headers, size_t headers_len);

/* Gap reasons */
typedef enum { WSQ_GAP_RETENTION = 1, WSQ_GAP_PURGE, WSQ_GAP_CORRUPT } wsq_gap_reason_t;
/* "retention", "purge" or "corrupt" (static storage); "unknown" for any other value. */
const char *wsq_gap_reason_name(wsq_gap_reason_t r);

/* {"op":"gap","topic":T,"from":A,"to":B,"reason":R}: seqs A..B (inclusive) no longer exist.
 * WSQ_ERR_INVAL for a topic as in wsq_proto_enc_subscribed or a reason not in the enum. */
wsq_err wsq_proto_enc_gap(wsq_buf_t *out, const char *topic, size_t topic_len, uint64_t from,
                          uint64_t to, wsq_gap_reason_t reason);

/* {"op":"dead","topic":T,"seq":N,"dead_topic":D,"dead_seq":M}: message N of T was given up
 * (delivered max_deliver times without an ack) and is now message M of D. WSQ_ERR_INVAL for a
 * topic as in wsq_proto_enc_subscribed (either). */
wsq_err wsq_proto_enc_dead(wsq_buf_t *out, const char *topic, size_t topic_len, uint64_t seq,
                           const char *dead_topic, size_t dead_topic_len, uint64_t dead_seq);

/* {"op":"reset","topic":T,"epoch":"<16 hex>","first_seq":F,"next_seq":N}: the topic the client
 * knew (by its epoch) no longer exists; positions start over in the new epoch. WSQ_ERR_INVAL for
 * a topic as in wsq_proto_enc_subscribed. */
wsq_err wsq_proto_enc_reset(wsq_buf_t *out, const char *topic, size_t topic_len, uint64_t epoch,
                            uint64_t first_seq, uint64_t next_seq);

/* A decoded server frame (clients: wsqctl, wsq-bench, tests). Members the op does not carry are
 * zero. Strings are NUL-terminated. */
typedef struct {
    char op[16]; /* "ok", "err", "pong", "subscribed", "msg", "gap", "dead" or "reset" */
    char ref[WSQ_REF_MAX + 1]; /* the ref's JSON text, "" when absent */
    char topic[256];           /* a valid topic name, "" when absent */
    uint64_t seq, ts, from, to, first_seq, next_seq, epoch;
    uint32_t deliveries; /* msg: 1 when absent */
    bool binary;         /* msg: "enc":"base64" (data is decoded) */
    unsigned char *data; /* msg payload, data_len bytes and a NUL (owned by the frame) */
    size_t data_len;
    unsigned char *headers; /* msg "headers" as a block (owned; NULL when absent or empty) */
    size_t headers_len;
    char code[32];        /* err: the code */
    char message[256];    /* err: the message, cut at a character boundary, up to a NUL */
    char reason[32];      /* gap: the reason */
    uint64_t start_seq;   /* subscribed */
    bool shared;          /* subscribed: "shared": true */
    bool pattern;         /* subscribed: "pattern": true (topic is a pattern; no positions) */
    uint64_t topics;      /* subscribed: a pattern's matched topics */
    bool dup;             /* ok: "dup": true (an id seen within the dedup window) */
    char dead_topic[256]; /* dead: where the message went (dead_seq); seq is the original's */
    uint64_t dead_seq;
} wsq_server_frame_t;
/* Frees what f owns (data, headers) and zeroes it. Idempotent. */
void wsq_server_frame_clear(wsq_server_frame_t *f);
/* Decodes one server frame from json[0..len) (NULL reads as empty) into f, which is overwritten.
 * On success f->data is the caller's through f (wsq_server_frame_clear). Errors, with f left
 * cleared: WSQ_ERR_BAD_JSON (not JSON), WSQ_ERR_BAD_REQUEST (not an object, a required member
 * missing, a value out of range or too long), WSQ_ERR_BAD_TYPE, WSQ_ERR_BAD_TOPIC,
 * WSQ_ERR_UNKNOWN_OP, WSQ_ERR_NOMEM. Unknown members are ignored. */
wsq_err wsq_proto_decode_server(const void *json, size_t len, wsq_server_frame_t *f);

/* ------------------------------------------------------------------------------------------- */
/* Raw mode: ws://HOST:PORT/topics/<topic>?consumer=<name>&shared=true&from=<spec>&token=<t>   */

typedef struct {
    char topic[256]; /* a valid topic name, NUL-terminated */
    size_t topic_len;
    char consumer[129]; /* "" = none */
    size_t consumer_len;
    wsq_from_t from; /* earliest|latest|resume, a seq number, or time:<ms> */
    uint64_t from_seq;
    int64_t from_time;
    bool shared; /* shared=true: join the shared consumer `consumer` */
    char *token; /* NUL-terminated, owned by the target, or NULL */
} wsq_raw_target_t;

/* Frees what t owns (token) and resets it. Idempotent. */
void wsq_raw_target_clear(wsq_raw_target_t *t);

/*
 * Parses a raw-mode request: path ("/topics/chat.room1", percent-decoded by this function) and
 * query (the query string without '?', may be NULL; still percent-encoded). Parameters are
 * consumer, shared (true|false; true needs consumer), from and token, each at most once; unknown
 * ones are errors.
 *
 * t is overwritten (clear a previous target first). On success t->token is the caller's through
 * t (wsq_raw_target_clear). On error t is left cleared and errbuf[0..errlen) (errbuf may be NULL)
 * holds a printable-ASCII message:
 *   WSQ_ERR_NOTFOUND     the path is not under /topics/;
 *   WSQ_ERR_BAD_TOPIC    the decoded path is not a topic name;
 *   WSQ_ERR_BAD_REQUEST  bad percent-encoding, an unknown or repeated parameter, a bad value;
 *   WSQ_ERR_NOMEM.
 */
wsq_err wsq_raw_parse_target(const char *path, const char *query, wsq_raw_target_t *t, char *errbuf,
                             size_t errlen);

/* ------------------------------------------------------------------------------------------- */
/* Message headers                                                                              */

/*
 * A message's headers travel between layers, and are stored, as one block: for each header in
 * order, its key length (1 byte), the key, its value length (2 bytes, little-endian), the value.
 * Keys are 1 to WSQ_HEADER_KEY_MAX bytes of UTF-8 without control characters, unique within a
 * message; values are UTF-8 (JSON strings), up to 65,535 bytes. The size of the headers is
 * counted as the sum of key and value lengths (limits.max_header_bytes).
 */
#define WSQ_HEADER_KEY_MAX 255
#define WSQ_HEADER_VALUE_MAX 65535

typedef struct {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} wsq_header_t;

/* Appends one header to the block in b. WSQ_ERR_INVAL for a key or value out of bounds (length,
 * UTF-8, control characters in the key); WSQ_ERR_NOMEM. b is unchanged on error. Uniqueness is
 * the caller's (a JSON object has unique members; wsq_headers_check tells). */
wsq_err wsq_headers_add(wsq_buf_t *b, const char *key, size_t key_len, const char *value,
                        size_t value_len);

/* Iterates a block that wsq_headers_check accepted: *off starts at 0; false at the end. */
bool wsq_headers_next(const void *block, size_t len, size_t *off, wsq_header_t *h);

/* Appends the block as a JSON object, {"key":"value",...} in its order. WSQ_ERR_NOMEM,
 * WSQ_ERR_BAD_UTF8 (a block wsq_headers_check refuses); out keeps its length on error. */
wsq_err wsq_headers_json(wsq_buf_t *out, const void *block, size_t len);

/* Checks a whole block: well formed, keys and values as above, no key twice. Fills count and
 * bytes (key and value lengths summed) when not NULL. WSQ_ERR_CORRUPT when malformed. */
wsq_err wsq_headers_check(const void *block, size_t len, uint32_t *count, size_t *bytes);

/* ------------------------------------------------------------------------------------------- */
/* UTF-8 (RFC 3629)                                                                             */

/* True when buf[0..len) is valid UTF-8 (shortest form, no surrogates, <= U+10FFFF). */
bool wsq_utf8_valid(const void *buf, size_t len);

/* Streaming validation across fragment boundaries: *state starts at 0 and is carried from one
 * chunk to the next (0 or a value this function wrote). Returns false as soon as the input cannot
 * be valid (the state then stays invalid: every later call returns false too); *state != 0 after
 * the last chunk means a truncated sequence. */
bool wsq_utf8_feed(uint32_t *state, const void *buf, size_t len);

/* ------------------------------------------------------------------------------------------- */
/* Base64 (RFC 4648): one strict codec, two alphabets                                           */

/*
 * Standard alphabet ("+/"), padded with '=' to whole 4-character quanta: wsq.v1 payloads.
 *
 * wsq_base64_enc_len: the characters the encoding of len bytes takes, 4 * ceil(len / 3) (the
 *   caller keeps len below SIZE_MAX / 4 * 3).
 * wsq_base64_dec_len: the bytes in[0..len) decodes to, from its length and trailing '=' only
 *   (the characters are not checked): len / 4 * 3 less the padding; 0 when len is not a multiple
 *   of 4. Lets a caller cap or size a payload before decoding it.
 * wsq_base64_encode: writes wsq_base64_enc_len(len) characters to out (no NUL) and returns that
 *   count. Never fails.
 * wsq_base64_decode: decodes in[0..len) into out, which has room for len / 4 * 3 bytes, and sets
 *   *outlen. WSQ_ERR_INVAL (*outlen untouched, out maybe partly written) for a length that is
 *   not a multiple of 4, a character outside the alphabet (whitespace, '-', '_', NUL included),
 *   '=' other than one or two at the very end, or non-zero bits after the last byte: every byte
 *   string has exactly one accepted encoding. len 0 decodes to nothing.
 */
size_t wsq_base64_enc_len(size_t len);
size_t wsq_base64_dec_len(const char *in, size_t len);
size_t wsq_base64_encode(const void *in, size_t len, char *out);
wsq_err wsq_base64_decode(const char *in, size_t len, unsigned char *out, size_t *outlen);

/*
 * base64url ("-_"), unpadded as RFC 7515 section 2 requires: JWTs (wsq/jwt.h).
 *
 * WSQ_BASE64URL_ENC_LEN(n): the characters the encoding of n bytes takes (exact; a constant
 *   expression for a constant n).
 * WSQ_BASE64URL_DEC_MAX(n): room for decoding n characters (an upper bound).
 * wsq_base64url_encode: writes WSQ_BASE64URL_ENC_LEN(len) characters to out (no NUL) and returns
 *   that count. Never fails.
 * wsq_base64url_decode: decodes in[0..len) into out, which has room for
 *   WSQ_BASE64URL_DEC_MAX(len) bytes, and sets *outlen. WSQ_ERR_INVAL (as above) for a
 *   length of 1 mod 4, any character outside the alphabet ('=', '+', '/', '.', whitespace and NUL
 *   included), or non-zero bits after the last byte. len 0 decodes to nothing.
 */
#define WSQ_BASE64URL_ENC_LEN(n) ((n) / 3 * 4 + ((n) % 3 == 0 ? 0 : (n) % 3 + 1))
#define WSQ_BASE64URL_DEC_MAX(n) ((n) / 4 * 3 + 2)
size_t wsq_base64url_encode(const void *in, size_t len, char *out);
wsq_err wsq_base64url_decode(const char *in, size_t len, unsigned char *out, size_t *outlen);

/* ------------------------------------------------------------------------------------------- */
/* WebSocket frame header (RFC 6455 5.2)                                                        */

#define WSQ_WS_OP_CONT 0x0 /* continuation of a fragmented message */
#define WSQ_WS_OP_TEXT 0x1
#define WSQ_WS_OP_BINARY 0x2
#define WSQ_WS_OP_CLOSE 0x8
#define WSQ_WS_OP_PING 0x9
#define WSQ_WS_OP_PONG 0xA
/* Or'd into the opcode: more fragments of this message follow (FIN clear). */
#define WSQ_WS_MORE 0x100
#define WSQ_WS_HDR_MAX 10 /* the longest header a server writes */

/* The one encoder of a server-to-client frame header (no mask) for a payload of len bytes: FIN
 * set unless opcode carries WSQ_WS_MORE, and opcode & 0x0F as the opcode. Writes 2, 4 or 10 bytes
 * into hdr (room for WSQ_WS_HDR_MAX) and returns the count. Never fails; the caller keeps control
 * frames (close, ping, pong) at 125 bytes of payload or less, as RFC 6455 5.5 requires. */
size_t wsq_ws_frame_header(unsigned char *hdr, unsigned opcode, uint64_t len);

/* ------------------------------------------------------------------------------------------- */
/* JSON strings                                                                                 */

/* Appends s[0..len) to out as the body of a JSON string (without the quotes): '"', '\\' and
 * control characters escaped, everything else, UTF-8 included, copied. WSQ_ERR_BAD_UTF8 when s
 * is not valid UTF-8; WSQ_ERR_NOMEM. On error out keeps its length before the call. */
wsq_err wsq_json_escape(wsq_buf_t *out, const char *s, size_t len);

/* The value of the hex digit c (either case), or -1 for anything else. */
int wsq_hexval(int c);

/* ------------------------------------------------------------------------------------------- */
/* Internal, exposed for the differential unit test and fuzz target of the pub fast path.       */

/* wsq_proto_decode without its fast path for pub frames: the jansson decoder alone, which
 * decides every error. Same contract as wsq_proto_decode, which must agree with it on every
 * input. */
wsq_err wsq__proto_decode_full(const void *json, size_t len, size_t max_payload, wsq_frame_t *f,
                               wsq_proto_error_t *perr);

/* ------------------------------------------------------------------------------------------- */
/* HTTP pull: POST /fetch?topic=T&consumer=C[&shared=true][&from=F][&max=N][&wait=DUR],       */
/* POST /ack?topic=T&consumer=C and POST /nack?topic=T&consumer=C with {"seqs":[...],...}       */

#define WSQ_PULL_MAX 1000u      /* messages one fetch may lease, and seqs one ack/nack names */
#define WSQ_PULL_WAIT_MAX 60000 /* longest wait of a fetch, ms */

typedef struct {
    char topic[256]; /* a valid topic name, NUL-terminated */
    size_t topic_len;
    char consumer[129]; /* a valid consumer name, NUL-terminated */
    size_t consumer_len;
    bool shared;     /* shared=true */
    wsq_from_t from; /* from= (for a new consumer), as in raw mode; WSQ_FROM_DEFAULT if absent */
    uint64_t from_seq;
    int64_t from_time;
    uint32_t max;    /* max=, 1..WSQ_PULL_MAX (default 1) */
    int64_t wait_ms; /* wait=: milliseconds ("250", "250ms", "5s", "1m"), 0..WSQ_PULL_WAIT_MAX */
} wsq_pull_query_t;

/*
 * Parses the query of a pull request (the query string without '?', percent-encoded; may be
 * NULL). topic and consumer are required; shared, from, max and wait as above (max and wait
 * only mean something to /fetch). Parameters it does not know (token, ...) are ignored and of a
 * repeated one the first counts, as everywhere in HTTP. On error q is cleared and errbuf
 * (may be NULL) holds a printable-ASCII message: WSQ_ERR_BAD_TOPIC for a bad topic,
 * WSQ_ERR_BAD_REQUEST for anything else.
 */
wsq_err wsq_pull_parse_query(const char *query, wsq_pull_query_t *q, char *errbuf, size_t errlen);

typedef struct {
    uint64_t seqs[WSQ_PULL_MAX]; /* in the order given, each >= 1 */
    uint32_t n;                  /* 1..WSQ_PULL_MAX */
    int64_t delay_ms;            /* nack: "delay", 0..24 h (default 0) */
    bool term;                   /* nack: "term": true (no "delay" with it) */
} wsq_pull_acks_t;

/*
 * Parses the body of /ack ({"seqs":[N,...]}) or, with nack, of /nack ({"seqs":[...],
 * "delay":MS} or {"seqs":[...],"term":true}). Members it does not know are ignored. Errors as
 * wsq.v1 frames have them: WSQ_ERR_BAD_JSON (message with line and column), WSQ_ERR_BAD_TYPE,
 * WSQ_ERR_BAD_REQUEST (no seqs, an empty list or more than WSQ_PULL_MAX, a seq of 0, delay or
 * term on /ack, term with delay); the message goes to errbuf.
 */
wsq_err wsq_pull_parse_acks(const void *body, size_t len, bool nack, wsq_pull_acks_t *a,
                            char *errbuf, size_t errlen);

#endif
