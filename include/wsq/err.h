/*
 * wsq error codes: one enum, one list.
 *
 * Every wsq function that can fail returns a wsq_err. WSQ_OK is 0; every error is negative.
 * The stable code string (wsq_errname) is what the wire protocols put in their "code" fields and
 * what --json output prints, so a name never changes once released. Add new codes at the end.
 */
#ifndef WSQ_ERR_H
#define WSQ_ERR_H

/* X(ENUM, value, "stable_code", "human message") */
#define WSQ_ERR_LIST(X)                                                                            \
    X(WSQ_OK, 0, "ok", "success")                                                                  \
    X(WSQ_ERR_NOMEM, -1, "nomem", "out of memory")                                                 \
    X(WSQ_ERR_INVAL, -2, "invalid", "invalid argument")                                            \
    X(WSQ_ERR_IO, -3, "io_error", "I/O error")                                                     \
    X(WSQ_ERR_NOTFOUND, -4, "not_found", "not found")                                              \
    X(WSQ_ERR_EXISTS, -5, "exists", "already exists")                                              \
    X(WSQ_ERR_STORAGE_FULL, -6, "storage_full",                                                    \
      "storage is full: the map reached storage.map_size_max or the disk is full")                 \
    X(WSQ_ERR_TOPIC_FULL, -7, "topic_full",                                                        \
      "topic reached its retention limit and its policy is discard: new")                          \
    X(WSQ_ERR_FORMAT_NEWER, -8, "format_newer",                                                    \
      "store was written by a newer wsq; upgrade wsq to open it")                                  \
    X(WSQ_ERR_CORRUPT, -9, "corrupt", "store is corrupt or is not a wsq store")                    \
    X(WSQ_ERR_BAD_TOPIC, -10, "bad_topic",                                                         \
      "bad topic name: 1-255 bytes of [A-Za-z0-9._/-], no empty segment")                          \
    X(WSQ_ERR_TOO_LARGE, -11, "too_large", "message is larger than limits.max_message_size")       \
    X(WSQ_ERR_BUSY, -12, "busy", "data directory is locked by another process")                    \
    X(WSQ_ERR_CLOSED, -13, "closed", "shutting down")                                              \
    X(WSQ_ERR_PANIC, -14, "storage_panic", "storage failed fatally; restart wsqd")                 \
    X(WSQ_ERR_NOSTORE, -15, "no_store", "no wsq store at this path")                               \
    X(WSQ_ERR_PERM, -16, "permission_denied", "permission denied")                                 \
    X(WSQ_ERR_BAD_JSON, -17, "bad_json", "frame is not valid JSON")                                \
    X(WSQ_ERR_BAD_REQUEST, -18, "bad_request", "bad request")                                      \
    X(WSQ_ERR_UNKNOWN_OP, -19, "unknown_op", "unknown op")                                         \
    X(WSQ_ERR_BAD_TYPE, -20, "bad_type", "field has the wrong type")                               \
    X(WSQ_ERR_UNAUTHORIZED, -21, "unauthorized", "missing or invalid credentials")                 \
    X(WSQ_ERR_FORBIDDEN, -22, "forbidden", "not allowed for this identity")                        \
    X(WSQ_ERR_NOT_SUBSCRIBED, -23, "not_subscribed", "no subscription on this topic")              \
    X(WSQ_ERR_ALREADY_SUBSCRIBED, -24, "already_subscribed",                                       \
      "this connection already has a subscription on this topic")                                  \
    X(WSQ_ERR_LIMIT, -25, "limit_exceeded", "a configured limit was exceeded")                     \
    X(WSQ_ERR_RATE_LIMITED, -26, "rate_limited", "publish rate limit exceeded")                    \
    X(WSQ_ERR_BAD_UTF8, -27, "bad_utf8", "text is not valid UTF-8")                                \
    X(WSQ_ERR_TAKEN_OVER, -28, "taken_over", "another session took over this consumer")            \
    X(WSQ_ERR_UNAVAILABLE, -29, "unavailable", "broker unreachable")                               \
    X(WSQ_ERR_BAD_CONFIG, -30, "bad_config", "invalid configuration")                              \
    X(WSQ_ERR_STALE_EPOCH, -31, "stale_epoch", "topic was recreated; the epoch changed")           \
    X(WSQ_ERR_BAD_SEQ, -32, "bad_seq", "seq is outside the topic")                                 \
    X(WSQ_ERR_INTERNAL, -33, "internal", "internal error")                                         \
    X(WSQ_ERR_STORAGE_FAILED, -34, "storage_failed",                                               \
      "storage failed: a write or fsync reported an I/O error; nothing after it was confirmed, "   \
      "and wsqd restarts to re-read what is on disk")                                              \
    X(WSQ_ERR_CONFLICT, -35, "conflict",                                                           \
      "the consumer exists in the other mode (shared or exclusive)")

typedef enum {
#define WSQ__ERR_ENUM(e, v, name, msg) e = v,
    WSQ_ERR_LIST(WSQ__ERR_ENUM)
#undef WSQ__ERR_ENUM
} wsq_err;

/* Human message for err. Never NULL; static storage. Any thread. */
const char *wsq_strerror(wsq_err err);

/* Stable machine code for err ("storage_full"). Never NULL; static storage. Any thread. */
const char *wsq_errname(wsq_err err);

/* Parses a stable code back to its enum. Returns WSQ_ERR_INVAL for unknown names. Any thread. */
wsq_err wsq_err_from_name(const char *name, wsq_err *out);

#endif
