/*
 * wsq-bench: a load generator for WebSocket message brokers.
 *
 * One process, many WebSocket connections, one epoll loop per thread. The WebSocket client is
 * hand-rolled (RFC 6455): an HTTP upgrade, masked client frames with a fixed key per connection,
 * big buffered reads, many frames per send(), no allocation per message. What a system speaks on
 * top of WebSocket is a driver (driver_t below): the wsq driver speaks wsq.v1 and raw mode; MQTT
 * and NATS drivers plug into the same vtable.
 *
 * Threads: the main thread parses options, drives the phases (setup, preload, warmup, measure,
 * stop, close) through one atomic, prints progress and the report. Each worker thread owns a
 * slice of the connections, its epoll set, its counters and its histograms; the main thread only
 * reads the counters (relaxed atomics, one writer each).
 */
#ifndef WSQB_BENCH_H
#define WSQB_BENCH_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "hist.h"

/* ------------------------------------------------------------------------------------------- */
/* Scenarios, phases, roles                                                                     */

enum scenario { SC_PUBLISH, SC_DRAIN, SC_FANOUT, SC_LATENCY, SC_IDLE };

enum phase {
    PH_SETUP,   /* connecting, upgrading, subscribing */
    PH_PRELOAD, /* drain: preload publishers publish their quota */
    PH_WARMUP,  /* load runs, not measured */
    PH_MEASURE, /* load runs, measured (drain: consumers subscribe and drain) */
    PH_STOP,    /* no new publishes; outstanding confirms and deliveries come in */
    PH_CLOSE,   /* close handshakes */
    PH_EXIT,
};

enum role {
    R_PUB,  /* publishes as fast as its window (or, without confirms, the socket) allows */
    R_RATE, /* publishes at a fixed rate (token bucket on a timerfd) */
    R_SUB,  /* subscribes and counts deliveries */
    R_IDLE, /* opens and stays silent */
};

/* What a connection speaks, for drivers with more than one flavour (wsq: wsq.v1 or raw mode). */
enum flavor { FL_V1, FL_RAW };

enum cstate { CS_NEW, CS_CONNECTING, CS_UPGRADING, CS_OPEN, CS_CLOSING, CS_DONE };

/* ------------------------------------------------------------------------------------------- */
/* Options                                                                                      */

typedef struct {
    enum scenario scenario;
    const char *driver;
    const char *url;
    char host[256]; /* Host header: host[:port] */
    char base_path[256];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *token;
    const char *pub_token; /* publishers only (e.g. a publish-only identity for raw mode) */
    const char *topic;     /* base topic name */
    char topic_buf[256];
    int topics;        /* publish: spread the publishers over this many topics */
    int conns;         /* publish: publisher connections; idle: connections */
    int window;        /* publish: unconfirmed per connection; drain/fanout: subscription window */
    int size;          /* payload bytes */
    double seconds;    /* measured duration (drain: timeout; idle: hold time) */
    double warmup;     /* seconds */
    enum flavor mode;  /* publish, idle */
    bool verify;       /* publish: open subscriber connections and count deliveries */
    long long preload; /* drain */
    int preload_conns;
    int preload_window;
    int consumers; /* drain */
    int ack_every;
    bool resume; /* drain: create the consumers before the preload, resume them after */
    bool shared; /* drain: the consumers are the members of ONE shared consumer (a work queue) */
    double rate; /* fanout, latency: publishes per second */
    int subs;    /* fanout, latency */
    enum flavor sub_mode, pub_mode;
    bool sub_mode_set;
    int burst; /* token bucket depth (messages) */
    int threads;
    int connect_concurrency;
    double timeout; /* setup and stop waits, seconds */
    int broker_pid;
    bool json, quiet;
    bool has_rate;
} opts_t;

/* ------------------------------------------------------------------------------------------- */
/* Per-thread counters: one writer (the owning thread), read by the main thread.               */

typedef _Atomic uint64_t ctr_t;

typedef struct {
    ctr_t sent;      /* publishes written to the send buffer */
    ctr_t confirmed; /* publishes confirmed */
    ctr_t delivered; /* messages received by subscribers */
    ctr_t echoed;    /* raw mode: messages a publisher connection received back */
    ctr_t acks;      /* ack frames sent */
    ctr_t bytes_in, bytes_out;
    ctr_t ready;      /* connections set up (upgraded and, if needed, subscribed) */
    ctr_t failed;     /* connections that never got ready */
    ctr_t closed;     /* connections finished */
    ctr_t inflight;   /* unconfirmed publishes now */
    ctr_t drained;    /* drain: consumers that received their whole backlog */
    ctr_t pending;    /* stop phase: subscribers behind the last publish, publishers waiting */
    ctr_t pending_ok; /* the thread has computed pending for the current stop phase */
    ctr_t err_frames; /* err frames from the broker */
    ctr_t unexpected_closes;
    ctr_t proto_errors; /* malformed frames, bad handshakes, unexpected confirms */
    ctr_t order_errors; /* deliveries out of order or missing within a subscription */
    ctr_t dups;         /* deliveries of a seq already seen (redeliveries) */
    ctr_t gaps;         /* gap events */
    ctr_t rate_missed;  /* token bucket overflow: sends the publisher could not make */
} stats_t;

#define ST_ADD(t, f, n)                                                                            \
    atomic_store_explicit(&(t)->st.f,                                                              \
                          atomic_load_explicit(&(t)->st.f, memory_order_relaxed) + (n),            \
                          memory_order_relaxed)
#define ST_GET(t, f) atomic_load_explicit(&(t)->st.f, memory_order_relaxed)

/* ------------------------------------------------------------------------------------------- */
/* Connections                                                                                   */

struct thr;
struct driver;

typedef struct conn {
    struct thr *t;
    const struct driver *drv;
    void *dp; /* driver-private state */
    int fd;
    uint32_t idx;  /* global index */
    uint32_t ridx; /* index within its role: topic number, consumer number */
    uint8_t role, flavor;
    _Atomic uint8_t state; /* written by the conn's loop thread; main polls it to stop waiting */
    bool ready, counted, close_sent, confirms, durable, check_order, want_out, sub_pending;
    bool resume_unsub; /* drain --resume: the setup subscription is followed by unsub */
    bool drained;
    bool shared;     /* a member of a shared consumer: acks each seq, its seqs have holes */
    uint32_t evmask; /* events registered with epoll */
    unsigned char mask[4];
    uint64_t mask64;
    const char *topic;
    size_t topic_len;
    char consumer[64]; /* durable consumer name, "" = ephemeral */
    uint64_t t_connect, t_close;

    /* output: frames waiting for send() */
    uint8_t *wbuf;
    size_t wlen, woff, wcap;
    /* input: the unparsed tail of the last read (a partial frame) */
    uint8_t *rb;
    size_t rlen, rcap;
    /* fragmented message reassembly */
    uint8_t *frag;
    size_t flen, fcap;
    uint8_t fop;
    bool infrag;
    char key[32];         /* Sec-WebSocket-Key */
    const char *subproto; /* the subprotocol the driver asked for (NULL: none); checked */

    /* publisher */
    uint64_t next_id; /* id of the next publish (wsq: ref), from 1 */
    uint64_t conf_id; /* ids below this are settled (confirmed or failed) */
    uint64_t quota;   /* publishes left (UINT64_MAX = unlimited) */
    uint64_t *ring;   /* send time per unsettled id, indexed id & ringmask; 0 = settled */
    uint64_t ringmask;
    uint32_t window;
    uint64_t pub_ctr; /* payload counter */
    uint64_t last_seq_confirmed;

    /* subscriber */
    uint64_t start_seq, end_seq; /* backlog [start, end) announced at subscribe (drain) */
    uint64_t last_seq, acked;
    uint64_t first_ctr, last_ctr;
    uint64_t received;
    bool have_seq, have_ctr;
    uint64_t first_ns, last_ns, sub_sent_ns;
    /* shared member: every seq delivered, in arrival order (main.c checks them across the
     * members after the run); seqs[0, nacked) have been acked */
    uint64_t *seqs;
    size_t nseqs, seqcap, nacked;
} conn_t;

/* ------------------------------------------------------------------------------------------- */
/* Threads                                                                                      */

typedef struct thr {
    int id;
    pthread_t th;
    int ep;
    int tfd; /* rate timer, -1 if this thread has no rate publisher */
    conn_t **conns;
    size_t nconns, next_connect;
    int connecting, connect_limit;
    uint8_t *rbuf;
    size_t rcap;
    int phase;    /* the phase this thread has acted on */
    uint64_t now; /* CLOCK_MONOTONIC ns at the last wakeup */
    conn_t *rate_conn;
    uint64_t rate_t0, rate_n;
    char first_err[256];
    hist_t clat; /* publish -> confirm */
    hist_t dlat; /* publish -> deliver */
    _Alignas(64) stats_t st;
} thr_t;

/* ------------------------------------------------------------------------------------------- */
/* Drivers                                                                                       */

/*
 * A driver maps the bench's operations onto one system's protocol over WebSocket. Everything the
 * driver writes goes through ws_frame_begin/ws_frame_end (masked frames into the connection's
 * send buffer); everything it parses arrives as whole WebSocket messages in on_message, and it
 * reports what it found with the ev_* calls. Callbacks run on the connection's thread.
 */
typedef struct driver {
    const char *name;
    /* The request target (path and query) and subprotocol (NULL = none) of the upgrade.
     * Also sets c->confirms (publishes get confirms) and prepares c->dp. 0 or -1. */
    int (*upgrade)(conn_t *c, char *path, size_t cap, const char **subprotocol);
    /* The WebSocket is open. Queue the protocol's connect/subscribe frames; call ev_ready when
     * the connection is usable (now, or later from on_message). */
    void (*on_open)(conn_t *c);
    /* Queue one publish with this id, payload per payload_write(ts, ctr). false: no room. */
    bool (*publish)(conn_t *c, uint64_t id, uint64_t ts_ns, uint64_t ctr);
    /* One complete message from the server (opcode 1 text, 2 binary). */
    void (*on_message)(conn_t *c, unsigned opcode, const uint8_t *p, size_t len);
    /* Subscribe now (drain consumers subscribe when the drain starts). resume: continue the
     * durable consumer where it stopped. */
    bool (*subscribe)(conn_t *c, bool resume);
    bool (*unsubscribe)(conn_t *c);
    /* Cumulative acknowledgement of everything up to seq (durable subscriptions). */
    bool (*ack)(conn_t *c, uint64_t upto);
    /* Acknowledgement of one message (a shared consumer's member). NULL: not supported. */
    bool (*ack_seq)(conn_t *c, uint64_t seq);
    void (*release)(conn_t *c);
} driver_t;

const driver_t *driver_find(const char *name);
extern const driver_t drv_wsq;
extern const driver_t drv_mqtt; /* MQTT 3.1.1 over WebSocket (drv_mqtt.c) */
extern const driver_t drv_nats; /* NATS + JetStream over WebSocket (drv_nats.c) */

/* Framing for drivers: room for a frame of len payload bytes with this opcode. Returns where
 * the payload goes, or NULL when the send buffer has no room even after a send() attempt. The
 * driver writes exactly len bytes there, then calls ws_frame_end, which masks them. */
uint8_t *ws_frame_begin(conn_t *c, unsigned opcode, size_t len);
void ws_frame_end(conn_t *c, uint8_t *payload, size_t len);

/* Events from drivers. */
void ev_ready(conn_t *c, uint64_t start_seq, uint64_t end_seq);
void ev_unsubscribed(conn_t *c);
void ev_confirm(conn_t *c, uint64_t id, uint64_t seq);
/* seq 0: the protocol carries none. The payload is what the publisher's payload_write made. */
void ev_delivery(conn_t *c, uint64_t seq, const uint8_t *payload, size_t len);
void ev_gap(conn_t *c, uint64_t from, uint64_t to);
/* An error reported by the broker; has_id: it names the publish with this id. */
void ev_error(conn_t *c, bool has_id, uint64_t id, const char *what, size_t what_len);
void ev_proto_error(conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Payloads: [16 hex: send time, CLOCK_MONOTONIC ns][16 hex: counter][filler] (printable ASCII,
 * no JSON escapes needed). Payloads shorter than 32 bytes carry no stamp. */
#define PAYLOAD_STAMP 32
void payload_init(void);
void payload_write(uint8_t *dst, size_t size, uint64_t ts_ns, uint64_t ctr);
bool payload_read(const uint8_t *p, size_t len, uint64_t *ts_ns, uint64_t *ctr);

/* ------------------------------------------------------------------------------------------- */
/* Globals and helpers                                                                           */

typedef struct {
    opts_t o;
    const driver_t *drv;
    _Atomic int phase;
    thr_t *thr;
    int nthr;
    size_t nconns;
    conn_t *conns;
    _Atomic uint64_t final_ctr; /* fanout/latency: the last payload counter published */
    _Atomic int final_known;
    /* drain --shared: the backlog [lo, hi) the members' "subscribed" replies announce (the
     * lowest start_seq, the highest next_seq), and how many members have replied */
    _Atomic uint64_t shared_lo, shared_hi;
    _Atomic int shared_subscribed;
    char run_id[32];
} global_t;

extern global_t g;

uint64_t now_ns(void);
int loop_start(void);
void loop_join(void);
size_t u64_dec(char *dst, uint64_t v); /* decimal digits, returns count (no NUL) */

#endif
