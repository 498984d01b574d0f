/*
 * Integration test harness: a real wsqd on a free loopback port with a temporary data dir, and
 * synchronous WebSocket clients over the libwebsockets CLIENT API.
 *
 * Threading: everything here runs on the test's one thread. The process has one lws client
 * context (created by wsqt_init), driven by the wait functions below (lws_service in a loop with a
 * short timer, so that every wait has a deadline). All lws calls happen on that thread.
 *
 * Failure: the CHECK macros print file:line, the failed condition and the tail of the wsqd log,
 * then exit(1). An atexit handler kills any wsqd still running (SIGKILL) and removes its
 * temporary directory, so a failing test never leaves a broker behind. wsqd also gets
 * PR_SET_PDEATHSIG, so it dies with the test even when ctest kills the test on timeout.
 *
 * Environment:
 *   WSQD          the wsqd binary when argv[1] is not given
 *   WSQT_SEED     the random seed (printed at start) to repeat a run
 *   WSQT_SLOW     multiplier for timeouts and the watchdog (CMake sets 3 for sanitizer builds)
 *   WSQT_KEEP     keep the temporary directories (config, wsqd.log, data) for inspection
 *   WSQT_TRACE    log every lws client callback
 *   WSQT_LWS_LOG  lws log level bitmask for the client side (default LLL_ERR)
 */
#ifndef WSQT_HARNESS_H
#define WSQT_HARNESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "wsq/proto.h"

/* ------------------------------------------------------------------------------------------- */
/* setup and assertions                                                                         */

/* Initialises the test process: finds the wsqd binary (argv[1], else the WSQD environment
 * variable), raises RLIMIT_NOFILE to its hard limit, creates the lws client context, seeds the
 * random generator (WSQT_SEED overrides; the seed is printed) and arms a watchdog that fails the
 * test after watchdog_s seconds. name is used in temporary paths and messages. */
void wsqt_init(int argc, char **argv, const char *name, unsigned watchdog_s);

/* Ends the test: closes every client, stops servers still running (SIGKILL), destroys the lws
 * context, removes temporary directories, prints "PASS name" and exits 0. */
void wsqt_pass(void) __attribute__((noreturn));

/* Prints the failure (printf-style message), the tail of the wsqd log, and exits 1. */
void wsqt_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

/* Records a failure that leaves the test able to go on (e.g. a wrong error code): it is printed
 * now, the test continues, and wsqt_pass() then exits 1 instead of 0. */
void wsqt_soft_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define SOFT_CHECKF(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond))                                                                               \
            wsqt_soft_fail(__FILE__, __LINE__, __VA_ARGS__);                                       \
    } while (0)

/* Progress line on stderr, prefixed with the elapsed time. */
void wsqt_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            wsqt_fail(__FILE__, __LINE__, "CHECK(%s) failed", #cond);                              \
    } while (0)
#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            wsqt_fail(__FILE__, __LINE__, __VA_ARGS__);                                            \
    } while (0)
#define EQ_INT(a, b)                                                                               \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            wsqt_fail(__FILE__, __LINE__, "%s == %s failed: %lld != %lld", #a, #b, a_, b_);        \
    } while (0)
#define EQ_U64(a, b)                                                                               \
    do {                                                                                           \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);             \
        if (a_ != b_)                                                                              \
            wsqt_fail(__FILE__, __LINE__, "%s == %s failed: %llu != %llu", #a, #b, a_, b_);        \
    } while (0)
#define EQ_STR(a, b)                                                                               \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                       \
            wsqt_fail(__FILE__, __LINE__, "%s == %s failed: \"%s\" != \"%s\"", #a, #b,             \
                      a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                     \
    } while (0)

/* Milliseconds on the monotonic clock. */
int64_t wsqt_now_ms(void);
/* Unix time in milliseconds. */
int64_t wsqt_unix_ms(void);
/* Uniform random in [0, n). */
uint32_t wsqt_rand(uint32_t n);
/* Fills buf with pseudo-random bytes. */
void wsqt_fill_random(void *buf, size_t len);
/* Multiplier for generous timeouts (WSQT_SLOW, e.g. 3 under ASan; default 1). */
int wsqt_slow(void);

/* ------------------------------------------------------------------------------------------- */
/* wsqd                                                                                         */

/* Per-test configuration: each member is YAML text placed under its section, indented by the
 * caller as a mapping body (two spaces), e.g. limits = "  ack_wait: 1s\n". NULL = nothing. */
typedef struct {
    const char *storage;   /* extra keys under storage: (path is set by the harness) */
    const char *limits;    /* keys under limits: */
    const char *retention; /* keys under retention: */
    const char *auth;      /* keys under auth:; NULL = anonymous publish/subscribe ">" */
} wsqt_conf_t;

typedef struct wsqt_server wsqt_server_t;

/* Creates a temporary directory, writes the config and starts wsqd; returns once the log says
 * "ready" (fails the test after a timeout, printing the log). */
wsqt_server_t *wsqt_server_start(const wsqt_conf_t *conf);
/* Starts wsqd again on the same data dir and config (after a stop or kill). The port changes. */
void wsqt_server_restart(wsqt_server_t *s);
/* SIGTERM and wait at most timeout_ms for the exit. Returns the exit status (0..255), or
 * 1000 + signal number if it died of a signal; fails the test if it does not exit in time. */
int wsqt_server_stop(wsqt_server_t *s, int timeout_ms);
/* Sends SIGTERM without waiting. */
void wsqt_server_term(wsqt_server_t *s);
/* Waits for an exit started by wsqt_server_term; returns like wsqt_server_stop, or -1 when it
 * has not exited within timeout_ms (the process is left running). */
int wsqt_server_wait_exit(wsqt_server_t *s, int timeout_ms);
/* SIGKILL and reap. */
void wsqt_server_kill(wsqt_server_t *s);
/* Stops (if running) and removes the temporary directory. */
void wsqt_server_free(wsqt_server_t **s);
int wsqt_server_port(const wsqt_server_t *s);
pid_t wsqt_server_pid(const wsqt_server_t *s);
const char *wsqt_server_dir(const wsqt_server_t *s);
/* True when the log (of every run so far) contains needle. */
bool wsqt_server_log_contains(const wsqt_server_t *s, const char *needle);
/* Prints the last n lines of the log on stderr. */
void wsqt_server_dump_log(const wsqt_server_t *s, int n);

/* ------------------------------------------------------------------------------------------- */
/* WebSocket client                                                                             */

typedef enum {
    WSQT_CONNECTING = 0,
    WSQT_OPEN,
    WSQT_FAILED, /* the connection or the upgrade failed: see http_status and error */
    WSQT_CLOSED,
} wsqt_state_t;

/* One received WebSocket message (fragments reassembled). data is NUL-terminated. */
typedef struct wsqt_msg {
    struct wsqt_msg *next;
    bool binary;
    size_t len;
    unsigned char *data;
} wsqt_msg_t;

typedef struct wsqt_conn wsqt_conn_t;

/* Connection options. */
typedef struct {
    const char *subprotocol; /* NULL: none (raw mode); else a list such as "wsq.v1" */
    const char *headers;     /* extra request headers, each "Name: value\r\n"; NULL = none */
} wsqt_connect_opts_t;

/* Starts a connection to ws://127.0.0.1:port<path> and returns at once. */
wsqt_conn_t *wsqt_connect_async(int port, const char *path, const wsqt_connect_opts_t *o);
/* Connects and waits (at most 10 s) until the connection is open or has failed. Always returns
 * a handle: check wsqt_state(). */
wsqt_conn_t *wsqt_connect(int port, const char *path, const wsqt_connect_opts_t *o);
/* Connects and fails the test unless the upgrade succeeds. */
wsqt_conn_t *wsqt_open(int port, const char *path, const char *subprotocol);
/* A wsq.v1 connection to "/". */
wsqt_conn_t *wsqt_open_v1(int port);

wsqt_state_t wsqt_state(const wsqt_conn_t *c);
/* HTTP status of a refused upgrade (0 if none was received). */
int wsqt_http_status(const wsqt_conn_t *c);
/* lws's error text for a failed connection ("" if none). */
const char *wsqt_error(const wsqt_conn_t *c);
/* The subprotocol the server chose ("" when it sent none). */
const char *wsqt_protocol(const wsqt_conn_t *c);
/* Close code received from the server (0 = none yet; 1006 = closed without a close frame) and
 * its reason. */
int wsqt_close_code(const wsqt_conn_t *c);
const char *wsqt_close_reason(const wsqt_conn_t *c);
/* Number of WebSocket PONGs received. */
unsigned wsqt_pongs(const wsqt_conn_t *c);
/* Bytes queued by this client and not yet handed to lws. */
size_t wsqt_tx_pending(const wsqt_conn_t *c);

/* Queues one complete message. */
void wsqt_send(wsqt_conn_t *c, const void *data, size_t len, bool binary);
/* Queues one message split into nfrag frames (first TEXT/BINARY with NO_FIN, then
 * CONTINUATION frames, the last with FIN). nfrag >= 1; empty fragments are allowed. */
void wsqt_send_frags(wsqt_conn_t *c, const void *data, size_t len, bool binary, size_t nfrag);
/* Queues a WebSocket PING. */
void wsqt_ping(wsqt_conn_t *c);
/* Queues a close frame with code and reason after everything queued; then waits (at most
 * timeout_ms) for the connection to end. */
void wsqt_close(wsqt_conn_t *c, int code, const char *reason, int timeout_ms);
/* Drops the TCP connection without a close frame. */
void wsqt_drop(wsqt_conn_t *c);
/* Closes (if open) and frees the handle and every queued message. */
void wsqt_free(wsqt_conn_t **c);

/* Number of received messages not yet taken. */
size_t wsqt_pending(const wsqt_conn_t *c);
/* Takes the next received message, waiting at most timeout_ms; NULL on timeout or when the
 * connection ended with nothing queued. Free with wsqt_msg_free. */
wsqt_msg_t *wsqt_recv(wsqt_conn_t *c, int timeout_ms);
void wsqt_msg_free(wsqt_msg_t **m);
/* Waits until the connection is closed (at most timeout_ms); true if it is. Received messages
 * stay queued. */
bool wsqt_wait_closed(wsqt_conn_t *c, int timeout_ms);
/* Waits until the connection is open or failed. */
bool wsqt_wait_connected(wsqt_conn_t *c, int timeout_ms);

/* Services lws for ms milliseconds. */
void wsqt_sleep(int ms);
/* Services lws until cond(arg) is true or timeout_ms passes; returns the last cond. */
typedef bool (*wsqt_cond_fn)(void *arg);
bool wsqt_wait(int timeout_ms, wsqt_cond_fn cond, void *arg);
/* A function called after every service iteration of every wait (NULL to remove): lets a test
 * keep a background client busy while it waits for something else. It must not take messages
 * from a connection that the test is waiting on. */
void wsqt_set_idle(void (*fn)(void *arg), void *arg);

/* ------------------------------------------------------------------------------------------- */
/* wsq.v1 helpers                                                                               */

/* A decoded server frame: the codec's view plus the whole JSON object for exact checks. */
typedef struct wsqt_frame {
    wsq_server_frame_t f;
    json_t *j;
    char *text;
} wsqt_frame_t;

void wsqt_frame_free(wsqt_frame_t **fr);
/* Decodes a message as a wsq.v1 server frame; fails the test unless it is a text frame holding
 * a JSON object that wsq_proto_decode_server accepts. */
wsqt_frame_t *wsqt_frame_parse(const wsqt_msg_t *m);

/* Next frame (any op) within timeout_ms; NULL on timeout or close. */
wsqt_frame_t *wsqt_try_frame(wsqt_conn_t *c, int timeout_ms);
/* Next frame; fails the test on timeout or close. */
wsqt_frame_t *wsqt_next_frame(wsqt_conn_t *c, int timeout_ms);
/* First queued-or-arriving frame with this op (and, if ref is not NULL, this ref JSON text),
 * taken out of the queue; frames before it stay queued in order. Fails on timeout. */
wsqt_frame_t *wsqt_wait_op(wsqt_conn_t *c, const char *op, const char *ref, int timeout_ms);

/* A fresh integer ref as JSON text (static buffer rotated over 8 calls). */
const char *wsqt_new_ref(void);

/* Queues a pub frame built by wsq_proto_encode_client. ref: JSON text or NULL. */
void wsqt_send_pub(wsqt_conn_t *c, const char *topic, const void *data, size_t len, bool binary,
                   const char *ref);
/* Publishes with a fresh ref and returns the ok or err reply. */
wsqt_frame_t *wsqt_pub_reply(wsqt_conn_t *c, const char *topic, const void *data, size_t len,
                             bool binary);
/* Publishes and fails unless the reply is exactly {"op":"ok","ref":R,"topic":T,"seq":N}; returns
 * N. */
uint64_t wsqt_pub(wsqt_conn_t *c, const char *topic, const void *data, size_t len, bool binary);
/* wsqt_pub of a NUL-terminated text. */
uint64_t wsqt_pub_text(wsqt_conn_t *c, const char *topic, const char *text);

/* Subscribe options. */
typedef struct {
    const char *consumer; /* NULL = ephemeral */
    wsq_from_t from;      /* WSQ_FROM_DEFAULT = member left out */
    uint64_t from_seq;    /* WSQ_FROM_SEQ */
    int64_t from_time;    /* WSQ_FROM_TIME */
    uint32_t window;      /* 0 = left out */
} wsqt_sub_opts_t;

/* Sends a sub with a fresh ref; returns the subscribed or err reply. */
wsqt_frame_t *wsqt_sub_reply(wsqt_conn_t *c, const char *topic, const wsqt_sub_opts_t *o);
/* Subscribes and fails unless the reply is "subscribed" for this topic (and consumer). */
wsqt_frame_t *wsqt_sub(wsqt_conn_t *c, const char *topic, const wsqt_sub_opts_t *o);

void wsqt_ack(wsqt_conn_t *c, const char *topic, uint64_t seq);
void wsqt_ack_upto(wsqt_conn_t *c, const char *topic, uint64_t upto);
void wsqt_nack(wsqt_conn_t *c, const char *topic, uint64_t seq, int64_t delay_ms);
/* wsq.v1 ping with a fresh ref; fails unless the exact pong arrives within timeout_ms. Other
 * frames stay queued. */
void wsqt_v1_ping(wsqt_conn_t *c, int timeout_ms);

/* Fails unless the next frame is a msg on topic with this seq, payload, type and deliveries
 * (1 = the member must be absent). Returns the frame (for ts etc.); free it. */
wsqt_frame_t *wsqt_expect_msg(wsqt_conn_t *c, const char *topic, uint64_t seq, const void *data,
                              size_t len, bool binary, uint32_t deliveries, int timeout_ms);
/* Fails unless the next frame is {"op":"gap","topic":T,"from":A,"to":B,"reason":R}. */
void wsqt_expect_gap(wsqt_conn_t *c, const char *topic, uint64_t from, uint64_t to,
                     const char *reason, int timeout_ms);
/* Fails unless the next frame is an err with this code and ref (NULL = no ref member). */
void wsqt_expect_err(wsqt_conn_t *c, const char *code, const char *ref, int timeout_ms);
/* The same, but a wrong code, ref or member set is a soft failure (the test goes on). */
void wsqt_expect_err_soft(wsqt_conn_t *c, const char *code, const char *ref, int timeout_ms);
/* Fails if any frame or message arrives within ms. */
void wsqt_expect_silence(wsqt_conn_t *c, int ms);

/* JSON member accessors that fail the test when the member is missing or mistyped. */
json_int_t wsqt_jint(const json_t *obj, const char *name);
const char *wsqt_jstr(const json_t *obj, const char *name);
bool wsqt_jbool(const json_t *obj, const char *name);
/* Fails unless obj has exactly these member names (NULL-terminated list). */
void wsqt_jkeys(const json_t *obj, const char *const *names);

/* ------------------------------------------------------------------------------------------- */
/* plain HTTP (blocking socket)                                                                 */

typedef struct {
    int status;
    char status_line[128]; /* as received, e.g. "HTTP/1.1 404 Not Found" */
    char headers[4096];    /* raw header block, lowercase names as sent */
    char *body;            /* NUL-terminated, malloc'd */
    size_t body_len;
} wsqt_http_resp_t;

/* Sends one HTTP/1.1 request (Connection: close) and reads the answer. extra_headers: lines
 * each ending in "\r\n" or NULL. Fails the test on socket errors or a timeout. */
void wsqt_http(int port, const char *method, const char *path, const char *extra_headers,
               const void *body, size_t body_len, wsqt_http_resp_t *r);
void wsqt_http_free(wsqt_http_resp_t *r);

#endif

/* ------------------------------------------------------------------------------------------- */
/* pipelined wsq.v1 publisher with confirms                                                    */

/* One publish and what became of it. */
typedef struct {
    unsigned char *data; /* malloc'd copy, NUL-terminated */
    size_t len;
    bool binary;
    uint64_t seq; /* from the ok; 0 = no ok (yet) */
    char err[32]; /* the err code when refused; "" otherwise */
    bool replied; /* an ok or err arrived */
} wsqt_sent_t;

/* Keeps up to window publishes in flight on one connection and checks every reply: an ok or err
 * with the matching ref, in publish order (docs/PROTOCOL.md: confirms come back in publish order
 * per connection), an ok naming the topic and a seq above the previous one. */
typedef struct {
    wsqt_conn_t *c;
    char topic[256];
    uint32_t window;
    unsigned id;       /* refs are id * 1e9 + index */
    wsqt_sent_t *sent; /* every publish, in order */
    size_t nsent, cap;
    size_t nreplied;   /* sent[0..nreplied) have their reply */
    uint64_t last_seq; /* highest seq confirmed so far on this pipe */
    size_t nok, nerr;
} wsqt_pipe_t;

void wsqt_pipe_init(wsqt_pipe_t *p, wsqt_conn_t *c, const char *topic, uint32_t window);
/* Frees the records (not the connection). */
void wsqt_pipe_fini(wsqt_pipe_t *p);
/* Replies outstanding. */
size_t wsqt_pipe_inflight(const wsqt_pipe_t *p);
/* Queues one publish if fewer than window are in flight; false when the window is full. */
bool wsqt_pipe_send(wsqt_pipe_t *p, const void *data, size_t len, bool binary);
/* Takes every queued reply on the connection and checks it; returns the number taken. Fails the
 * test on a reply out of order, an unknown ref, or a frame that is not ok/err. */
size_t wsqt_pipe_poll(wsqt_pipe_t *p);
/* Services until every publish has its reply (fails after timeout_ms). */
void wsqt_pipe_drain(wsqt_pipe_t *p, int timeout_ms);
/* Builds a unique payload: "<tag>-<n>-" followed by filler up to len bytes (random bytes when
 * binary, letters otherwise). buf must hold len + 1 bytes; returns len, which is raised to fit
 * the prefix when it is shorter. */
size_t wsqt_payload(char *buf, size_t len, const char *tag, unsigned long n, bool binary);
