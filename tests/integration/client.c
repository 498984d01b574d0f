/*
 * Synchronous WebSocket client over the libwebsockets client API, and the wsq.v1 helpers.
 *
 * One lws context per test process, default poll loop, serviced only from the wait functions on
 * the test's thread. Outbound frames are queued per connection and written from
 * LWS_CALLBACK_CLIENT_WRITEABLE (several per callback while the pipe is not choked); inbound
 * fragments are reassembled into whole messages and queued until the test takes them.
 */
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "harness.h"
#include "internal.h"

#define CLIENT_PROTOCOL "wsqt-client"

/* One outbound frame; the payload starts at buf + LWS_PRE (lws masks it in place). */
typedef struct txf {
    struct txf *next;
    size_t len;
    int flags; /* enum lws_write_protocol */
    unsigned char buf[];
} txf_t;

struct wsqt_conn {
    struct wsqt_conn *next, *prev; /* every live handle, for cleanup */
    struct lws *wsi;               /* NULL once lws is done with the connection */
    wsqt_state_t state;
    int http_status;
    char error[160];
    char protocol[64];
    char *headers; /* extra request headers, sent in APPEND_HANDSHAKE_HEADER */
    /* close */
    int close_code; /* from the server; 1006 = no close frame */
    char close_reason[128];
    bool close_requested;
    int req_code;
    char req_reason[124];
    unsigned pongs;
    /* outbound queue */
    txf_t *tx_head, **tx_tail;
    size_t tx_bytes;
    /* inbound reassembly and queue */
    wsq_buf_t rx;
    bool rx_binary;
    wsqt_msg_t *q_head, **q_tail;
    size_t q_len;
};

static struct {
    struct lws_context *ctx;
    wsqt_conn_t *conns;
    lws_sorted_usec_list_t sul;
    bool trace; /* WSQT_TRACE: log lws callbacks */
    void (*idle)(void *);
    void *idle_arg;
    unsigned ref_counter;
} C;

/* ------------------------------------------------------------------------------------------- */
/* lws callback */

static void push_msg(wsqt_conn_t *c)
{
    wsqt_msg_t *m = calloc(1, sizeof(*m));
    CHECK(m != NULL);
    m->binary = c->rx_binary;
    m->len = c->rx.len;
    m->data = malloc(c->rx.len + 1);
    CHECK(m->data != NULL);
    if (c->rx.len)
        memcpy(m->data, c->rx.data, c->rx.len);
    m->data[m->len] = '\0';
    *c->q_tail = m;
    c->q_tail = &m->next;
    c->q_len++;
    c->rx.len = 0;
    if (c->rx.cap > 1024 * 1024) {
        wsq_buf_fini(&c->rx);
        wsq_buf_init(&c->rx);
    }
}

static int on_writeable(wsqt_conn_t *c, struct lws *wsi)
{
    int writes = 0;
    while (c->tx_head && writes < 64) {
        if (writes > 0 && lws_send_pipe_choked(wsi))
            break;
        txf_t *f = c->tx_head;
        int n = lws_write(wsi, f->buf + LWS_PRE, f->len, (enum lws_write_protocol)f->flags);
        if (n < 0) {
            snprintf(c->error, sizeof(c->error), "lws_write failed");
            return -1;
        }
        c->tx_head = f->next;
        if (c->tx_head == NULL)
            c->tx_tail = &c->tx_head;
        c->tx_bytes -= f->len;
        free(f);
        writes++;
    }
    if (c->tx_head) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (c->close_requested) {
        lws_close_reason(wsi, (enum lws_close_status)c->req_code, (unsigned char *)c->req_reason,
                         strlen(c->req_reason));
        return -1;
    }
    return 0;
}

static void mark_gone(wsqt_conn_t *c, struct lws *wsi, wsqt_state_t st)
{
    if (c->state == WSQT_CONNECTING || c->state == WSQT_OPEN)
        c->state = st;
    if (c->state == WSQT_CLOSED && c->close_code == 0 && !c->close_requested)
        c->close_code = 1006;
    if (c->wsi == wsi)
        c->wsi = NULL;
    lws_set_opaque_user_data(wsi, NULL);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    (void)user;
    wsqt_conn_t *c = wsi ? lws_get_opaque_user_data(wsi) : NULL;
    if (C.trace && reason != LWS_CALLBACK_CLIENT_RECEIVE &&
        reason != LWS_CALLBACK_CLIENT_WRITEABLE && reason != LWS_CALLBACK_GET_THREAD_ID &&
        reason != LWS_CALLBACK_EVENT_WAIT_CANCELLED)
        wsqt_log("lws callback %d wsi %p conn %p (conn->wsi %p) fd %d", (int)reason, (void *)wsi,
                 (void *)c, c ? (void *)c->wsi : NULL, wsi ? lws_get_socket_fd(wsi) : -1);
    if (c == NULL)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        if (c->headers) {
            char **p = (char **)in;
            size_t n = strlen(c->headers);
            if (n + 1 > len)
                return -1;
            memcpy(*p, c->headers, n);
            *p += n;
        }
        return 0;
    case LWS_CALLBACK_CLIENT_FILTER_PRE_ESTABLISH: {
        int n = lws_hdr_copy(wsi, c->protocol, sizeof(c->protocol), WSI_TOKEN_PROTOCOL);
        if (n <= 0)
            c->protocol[0] = '\0';
        return 0;
    }
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        snprintf(c->error, sizeof(c->error), "%.*s", in ? (int)len : 0, in ? (const char *)in : "");
        c->http_status = (int)lws_http_client_http_response(wsi);
        if (c->http_status == 0 && strstr(c->error, "unauthorized"))
            c->http_status = 401;
        mark_gone(c, wsi, WSQT_FAILED);
        return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        c->wsi = wsi;
        c->state = WSQT_OPEN;
        if (c->tx_head || c->close_requested)
            lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (lws_is_first_fragment(wsi)) {
            c->rx.len = 0;
            c->rx_binary = lws_frame_is_binary(wsi) != 0;
        }
        if (len && wsq_buf_append(&c->rx, in, len) != WSQ_OK)
            wsqt_fail(__FILE__, __LINE__, "out of memory reassembling a message");
        if (lws_is_final_fragment(wsi))
            push_msg(c);
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE_PONG:
        c->pongs++;
        return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE: {
        const unsigned char *p = in;
        if (len >= 2) {
            c->close_code = p[0] << 8 | p[1];
            snprintf(c->close_reason, sizeof(c->close_reason), "%.*s", (int)(len - 2),
                     (const char *)p + 2);
        } else {
            c->close_code = 1005; /* close frame without a status */
        }
        return 0;
    }
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return on_writeable(c, wsi);
    case LWS_CALLBACK_CLIENT_CLOSED:
        mark_gone(c, wsi, WSQT_CLOSED);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        mark_gone(c, wsi, c->state == WSQT_OPEN ? WSQT_CLOSED : WSQT_FAILED);
        return 0;
    default:
        return 0;
    }
}

static struct lws_protocols protocols[] = {
    {CLIENT_PROTOCOL, callback, 0, 65536, 0, NULL, 65536},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ------------------------------------------------------------------------------------------- */
/* context and service */

void wsqt__client_init(void)
{
    const char *lv = getenv("WSQT_LWS_LOG");
    lws_set_log_level(lv ? atoi(lv) : LLL_ERR, NULL);
    C.trace = getenv("WSQT_TRACE") != NULL;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.gid = -1;
    info.uid = -1;
    info.pt_serv_buf_size = 64 * 1024;
    info.timeout_secs = 20;
    C.ctx = lws_create_context(&info);
    CHECKF(C.ctx != NULL, "lws_create_context failed");
}

static void conn_release(wsqt_conn_t *c)
{
    if (c->wsi) {
        lws_set_opaque_user_data(c->wsi, NULL);
        c->wsi = NULL;
    }
    for (txf_t *f = c->tx_head, *nx; f; f = nx) {
        nx = f->next;
        free(f);
    }
    for (wsqt_msg_t *m = c->q_head, *nx; m; m = nx) {
        nx = m->next;
        free(m->data);
        free(m);
    }
    wsq_buf_fini(&c->rx);
    free(c->headers);
    if (c->prev)
        c->prev->next = c->next;
    else
        C.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

void wsqt__client_dump(void)
{
    int n = 0;
    for (wsqt_conn_t *c = C.conns; c; c = c->next) {
        if (++n > 20)
            break;
        char local[64] = "-", peer[64] = "-";
        int fd = c->wsi ? lws_get_socket_fd(c->wsi) : -1;
        if (fd >= 0) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof(ss);
            if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET)
                snprintf(local, sizeof(local), "%d", ntohs(((struct sockaddr_in *)&ss)->sin_port));
            sl = sizeof(ss);
            if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET)
                snprintf(peer, sizeof(peer), "%d", ntohs(((struct sockaddr_in *)&ss)->sin_port));
        }
        fprintf(stderr,
                "  client %p: state %d, wsi %p, fd %d, local port %s, peer port %s, protocol "
                "\"%s\", close %d \"%s\", %zu queued in, %zu bytes queued out, error \"%s\"\n",
                (void *)c, (int)c->state, (void *)c->wsi, fd, local, peer, c->protocol,
                c->close_code, c->close_reason, c->q_len, c->tx_bytes, c->error);
    }
}

void wsqt__client_fini(void)
{
    if (C.ctx == NULL)
        return;
    while (C.conns)
        conn_release(C.conns);
    lws_context_destroy(C.ctx);
    C.ctx = NULL;
}

static void sul_noop(lws_sorted_usec_list_t *sul)
{
    (void)sul;
}

/* One service iteration that returns within max_ms. */
static void service_once(int max_ms)
{
    if (max_ms < 1)
        max_ms = 1;
    if (max_ms > 50)
        max_ms = 50;
    lws_sul_schedule(C.ctx, 0, &C.sul, sul_noop, (lws_usec_t)max_ms * 1000);
    lws_service(C.ctx, 0);
    if (C.idle)
        C.idle(C.idle_arg);
}

bool wsqt_wait(int timeout_ms, wsqt_cond_fn cond, void *arg)
{
    int64_t deadline = wsqt_now_ms() + timeout_ms;
    for (;;) {
        if (cond && cond(arg))
            return true;
        int64_t left = deadline - wsqt_now_ms();
        if (left <= 0)
            return cond ? cond(arg) : false;
        service_once((int)left);
    }
}

void wsqt_sleep(int ms)
{
    wsqt_wait(ms, NULL, NULL);
}

void wsqt_set_idle(void (*fn)(void *arg), void *arg)
{
    C.idle = fn;
    C.idle_arg = arg;
}

/* ------------------------------------------------------------------------------------------- */
/* connections */

wsqt_conn_t *wsqt_connect_async(int port, const char *path, const wsqt_connect_opts_t *o)
{
    wsqt_conn_t *c = calloc(1, sizeof(*c));
    CHECK(c != NULL);
    c->tx_tail = &c->tx_head;
    c->q_tail = &c->q_head;
    wsq_buf_init(&c->rx);
    if (o && o->headers)
        c->headers = strdup(o->headers);
    c->next = C.conns;
    if (C.conns)
        C.conns->prev = c;
    C.conns = c;

    struct lws_client_connect_info i;
    memset(&i, 0, sizeof(i));
    i.context = C.ctx;
    i.address = "127.0.0.1";
    i.port = port;
    i.path = path;
    i.host = "127.0.0.1";
    i.protocol = o ? o->subprotocol : NULL;
    i.local_protocol_name = CLIENT_PROTOCOL;
    i.ietf_version_or_minus_one = -1;
    i.opaque_user_data = c;
    struct lws *w = lws_client_connect_via_info(&i);
    if (C.trace)
        wsqt_log("connect %s port %d: conn %p wsi %p", path, port, (void *)c, (void *)w);
    if (w == NULL) {
        if (c->state == WSQT_CONNECTING) {
            c->state = WSQT_FAILED;
            snprintf(c->error, sizeof(c->error), "lws_client_connect_via_info failed");
        }
    } else if (c->state == WSQT_CONNECTING) {
        c->wsi = w;
    }
    return c;
}

static bool connected(void *arg)
{
    const wsqt_conn_t *c = arg;
    return c->state != WSQT_CONNECTING;
}

bool wsqt_wait_connected(wsqt_conn_t *c, int timeout_ms)
{
    return wsqt_wait(timeout_ms, connected, c);
}

wsqt_conn_t *wsqt_connect(int port, const char *path, const wsqt_connect_opts_t *o)
{
    wsqt_conn_t *c = wsqt_connect_async(port, path, o);
    CHECKF(wsqt_wait_connected(c, 10000 * wsqt_slow()), "connect to %s: no answer in 10 s", path);
    return c;
}

wsqt_conn_t *wsqt_open(int port, const char *path, const char *subprotocol)
{
    wsqt_connect_opts_t o = {.subprotocol = subprotocol};
    wsqt_conn_t *c = wsqt_connect(port, path, &o);
    CHECKF(c->state == WSQT_OPEN, "upgrade to ws://127.0.0.1:%d%s (%s) failed: HTTP %d, %s", port,
           path, subprotocol ? subprotocol : "no subprotocol", c->http_status, c->error);
    return c;
}

wsqt_conn_t *wsqt_open_v1(int port)
{
    wsqt_conn_t *c = wsqt_open(port, "/", WSQ_SUBPROTOCOL);
    EQ_STR(wsqt_protocol(c), WSQ_SUBPROTOCOL);
    return c;
}

wsqt_state_t wsqt_state(const wsqt_conn_t *c)
{
    return c->state;
}

int wsqt_http_status(const wsqt_conn_t *c)
{
    return c->http_status;
}

const char *wsqt_error(const wsqt_conn_t *c)
{
    return c->error;
}

const char *wsqt_protocol(const wsqt_conn_t *c)
{
    return c->protocol;
}

int wsqt_close_code(const wsqt_conn_t *c)
{
    return c->close_code;
}

const char *wsqt_close_reason(const wsqt_conn_t *c)
{
    return c->close_reason;
}

unsigned wsqt_pongs(const wsqt_conn_t *c)
{
    return c->pongs;
}

size_t wsqt_tx_pending(const wsqt_conn_t *c)
{
    return c->tx_bytes;
}

static void queue_frame(wsqt_conn_t *c, const void *data, size_t len, int flags)
{
    txf_t *f = malloc(sizeof(*f) + LWS_PRE + len + 1);
    CHECKF(f != NULL, "out of memory queueing %zu bytes", len);
    f->next = NULL;
    f->len = len;
    f->flags = flags;
    if (len)
        memcpy(f->buf + LWS_PRE, data, len);
    *c->tx_tail = f;
    c->tx_tail = &f->next;
    c->tx_bytes += len;
    if (c->wsi && c->state == WSQT_OPEN)
        lws_callback_on_writable(c->wsi);
}

void wsqt_send(wsqt_conn_t *c, const void *data, size_t len, bool binary)
{
    queue_frame(c, data, len, binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
}

void wsqt_send_frags(wsqt_conn_t *c, const void *data, size_t len, bool binary, size_t nfrag)
{
    CHECK(nfrag >= 1);
    const unsigned char *p = data;
    size_t off = 0;
    for (size_t i = 0; i < nfrag; i++) {
        size_t end = len * (i + 1) / nfrag;
        int flags = i == 0 ? (binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) : LWS_WRITE_CONTINUATION;
        if (i + 1 < nfrag)
            flags |= LWS_WRITE_NO_FIN;
        queue_frame(c, p + off, end - off, flags);
        off = end;
    }
}

void wsqt_ping(wsqt_conn_t *c)
{
    queue_frame(c, NULL, 0, LWS_WRITE_PING);
}

static bool closed(void *arg)
{
    const wsqt_conn_t *c = arg;
    return c->state == WSQT_CLOSED || c->state == WSQT_FAILED;
}

bool wsqt_wait_closed(wsqt_conn_t *c, int timeout_ms)
{
    return wsqt_wait(timeout_ms, closed, c);
}

void wsqt_close(wsqt_conn_t *c, int code, const char *reason, int timeout_ms)
{
    if (c->state != WSQT_OPEN || c->wsi == NULL)
        return;
    c->close_requested = true;
    c->req_code = code;
    snprintf(c->req_reason, sizeof(c->req_reason), "%s", reason ? reason : "");
    lws_callback_on_writable(c->wsi);
    wsqt_wait_closed(c, timeout_ms);
}

void wsqt_drop(wsqt_conn_t *c)
{
    if (c->wsi == NULL)
        return;
    /* a TCP shutdown: lws sees the end of the stream; no close frame is sent */
    shutdown(lws_get_socket_fd(c->wsi), SHUT_RDWR);
    CHECKF(wsqt_wait_closed(c, 5000), "dropped connection did not end");
}

void wsqt_free(wsqt_conn_t **pc)
{
    wsqt_conn_t *c = *pc;
    if (c == NULL)
        return;
    if (c->state == WSQT_OPEN && c->wsi)
        wsqt_close(c, 1000, "", 3000);
    if (c->wsi) {
        struct lws *w = c->wsi;
        lws_set_opaque_user_data(w, NULL);
        c->wsi = NULL;
        lws_set_timeout(w, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
    conn_release(c);
    *pc = NULL;
}

/* ------------------------------------------------------------------------------------------- */
/* receiving */

size_t wsqt_pending(const wsqt_conn_t *c)
{
    return c->q_len;
}

static bool has_msg_or_closed(void *arg)
{
    const wsqt_conn_t *c = arg;
    return c->q_head != NULL || c->state == WSQT_CLOSED || c->state == WSQT_FAILED;
}

static wsqt_msg_t *take(wsqt_conn_t *c, wsqt_msg_t **pp)
{
    wsqt_msg_t *m = *pp;
    *pp = m->next;
    if (c->q_tail == &m->next)
        c->q_tail = pp;
    m->next = NULL;
    c->q_len--;
    return m;
}

wsqt_msg_t *wsqt_recv(wsqt_conn_t *c, int timeout_ms)
{
    wsqt_wait(timeout_ms, has_msg_or_closed, c);
    return c->q_head ? take(c, &c->q_head) : NULL;
}

void wsqt_msg_free(wsqt_msg_t **pm)
{
    if (*pm) {
        free((*pm)->data);
        free(*pm);
        *pm = NULL;
    }
}

/* ------------------------------------------------------------------------------------------- */
/* wsq.v1 frames */

void wsqt_frame_free(wsqt_frame_t **pfr)
{
    wsqt_frame_t *fr = *pfr;
    if (fr == NULL)
        return;
    wsq_server_frame_clear(&fr->f);
    json_decref(fr->j);
    free(fr->text);
    free(fr);
    *pfr = NULL;
}

static wsqt_frame_t *frame_try_parse(const wsqt_msg_t *m, char *why, size_t whylen)
{
    if (m->binary) {
        snprintf(why, whylen, "a binary frame of %zu bytes on wsq.v1", m->len);
        return NULL;
    }
    wsqt_frame_t *fr = calloc(1, sizeof(*fr));
    CHECK(fr != NULL);
    json_error_t jerr;
    fr->j = json_loadb((const char *)m->data, m->len, JSON_REJECT_DUPLICATES, &jerr);
    if (fr->j == NULL || !json_is_object(fr->j)) {
        snprintf(why, whylen, "not a JSON object (%s): %.200s", jerr.text, m->data);
        wsqt_frame_free(&fr);
        return NULL;
    }
    wsq_err e = wsq_proto_decode_server(m->data, m->len, &fr->f);
    if (e != WSQ_OK) {
        snprintf(why, whylen, "wsq_proto_decode_server: %s: %.200s", wsq_errname(e), m->data);
        wsqt_frame_free(&fr);
        return NULL;
    }
    fr->text = strndup((const char *)m->data, m->len > 4096 ? 4096 : m->len);
    return fr;
}

wsqt_frame_t *wsqt_frame_parse(const wsqt_msg_t *m)
{
    char why[400];
    wsqt_frame_t *fr = frame_try_parse(m, why, sizeof(why));
    CHECKF(fr != NULL, "bad server frame: %s", why);
    return fr;
}

wsqt_frame_t *wsqt_try_frame(wsqt_conn_t *c, int timeout_ms)
{
    wsqt_msg_t *m = wsqt_recv(c, timeout_ms);
    if (m == NULL)
        return NULL;
    wsqt_frame_t *fr = wsqt_frame_parse(m);
    wsqt_msg_free(&m);
    return fr;
}

wsqt_frame_t *wsqt_next_frame(wsqt_conn_t *c, int timeout_ms)
{
    wsqt_frame_t *fr = wsqt_try_frame(c, timeout_ms);
    CHECKF(fr != NULL, "no frame within %d ms (connection %s, close %d \"%s\")", timeout_ms,
           c->state == WSQT_OPEN ? "open" : "ended", c->close_code, c->close_reason);
    return fr;
}

wsqt_frame_t *wsqt_wait_op(wsqt_conn_t *c, const char *op, const char *ref, int timeout_ms)
{
    int64_t deadline = wsqt_now_ms() + timeout_ms;
    wsqt_msg_t **scan = &c->q_head; /* messages before *scan were checked already */
    for (;;) {
        while (*scan) {
            wsqt_frame_t *fr = wsqt_frame_parse(*scan);
            if (strcmp(fr->f.op, op) == 0 && (ref == NULL || strcmp(fr->f.ref, ref) == 0)) {
                wsqt_msg_t *m = take(c, scan);
                wsqt_msg_free(&m);
                return fr;
            }
            wsqt_frame_free(&fr);
            scan = &(*scan)->next;
        }
        CHECKF(c->state == WSQT_OPEN,
               "waiting for \"%s\" ref %s: connection ended (close %d \"%s\")", op, ref ? ref : "-",
               c->close_code, c->close_reason);
        int64_t left = deadline - wsqt_now_ms();
        CHECKF(left > 0, "no \"%s\" frame with ref %s within %d ms (%zu other frames queued)", op,
               ref ? ref : "-", timeout_ms, c->q_len);
        service_once((int)left);
    }
}

const char *wsqt_new_ref(void)
{
    static char refs[8][24];
    char *r = refs[C.ref_counter % 8];
    snprintf(r, sizeof(refs[0]), "%u", ++C.ref_counter);
    return r;
}

static void send_frame(wsqt_conn_t *c, const wsq_frame_t *f)
{
    wsq_buf_t b;
    wsq_buf_init(&b);
    wsq_err e = wsq_proto_encode_client(f, &b);
    CHECKF(e == WSQ_OK, "wsq_proto_encode_client: %s", wsq_errname(e));
    wsqt_send(c, b.data, b.len, false);
    wsq_buf_fini(&b);
}

static void set_topic(wsq_frame_t *f, const char *topic)
{
    size_t n = strlen(topic);
    CHECK(n < sizeof(f->topic));
    memcpy(f->topic, topic, n + 1);
    f->topic_len = n;
}

static void set_ref(wsq_frame_t *f, const char *ref)
{
    if (ref)
        snprintf(f->ref, sizeof(f->ref), "%s", ref);
}

void wsqt_send_pub(wsqt_conn_t *c, const char *topic, const void *data, size_t len, bool binary,
                   const char *ref)
{
    wsq_frame_t f;
    wsq_frame_init(&f);
    f.op = WSQ_OP_PUB;
    set_topic(&f, topic);
    set_ref(&f, ref);
    f.data = (unsigned char *)data; /* borrowed: not cleared below */
    f.data_len = len;
    f.binary = binary;
    send_frame(c, &f);
}

wsqt_frame_t *wsqt_pub_reply(wsqt_conn_t *c, const char *topic, const void *data, size_t len,
                             bool binary)
{
    const char *ref = wsqt_new_ref();
    char r[24];
    snprintf(r, sizeof(r), "%s", ref);
    wsqt_send_pub(c, topic, data, len, binary, r);
    int64_t deadline = wsqt_now_ms() + 20000 * wsqt_slow();
    wsqt_msg_t **scan = &c->q_head;
    for (;;) {
        while (*scan) {
            wsqt_frame_t *fr = wsqt_frame_parse(*scan);
            if ((strcmp(fr->f.op, "ok") == 0 || strcmp(fr->f.op, "err") == 0) &&
                strcmp(fr->f.ref, r) == 0) {
                wsqt_msg_t *m = take(c, scan);
                wsqt_msg_free(&m);
                return fr;
            }
            wsqt_frame_free(&fr);
            scan = &(*scan)->next;
        }
        CHECKF(c->state == WSQT_OPEN, "pub ref %s: connection ended (close %d \"%s\")", r,
               c->close_code, c->close_reason);
        int64_t left = deadline - wsqt_now_ms();
        CHECKF(left > 0, "pub ref %s to %s: no ok/err within 20 s", r, topic);
        service_once((int)left);
    }
}

/* Checks an ok frame for a publish. */
static uint64_t check_ok(const wsqt_frame_t *fr, const char *topic)
{
    CHECKF(strcmp(fr->f.op, "ok") == 0, "publish to %s refused: %s", topic, fr->text);
    static const char *const keys[] = {"op", "ref", "topic", "seq", NULL};
    wsqt_jkeys(fr->j, keys);
    EQ_STR(wsqt_jstr(fr->j, "topic"), topic);
    json_int_t seq = wsqt_jint(fr->j, "seq");
    CHECKF(seq >= 1, "ok with seq %lld", (long long)seq);
    return (uint64_t)seq;
}

uint64_t wsqt_pub(wsqt_conn_t *c, const char *topic, const void *data, size_t len, bool binary)
{
    wsqt_frame_t *fr = wsqt_pub_reply(c, topic, data, len, binary);
    uint64_t seq = check_ok(fr, topic);
    wsqt_frame_free(&fr);
    return seq;
}

uint64_t wsqt_pub_text(wsqt_conn_t *c, const char *topic, const char *text)
{
    return wsqt_pub(c, topic, text, strlen(text), false);
}

wsqt_frame_t *wsqt_sub_reply(wsqt_conn_t *c, const char *topic, const wsqt_sub_opts_t *o)
{
    wsqt_sub_opts_t none = {0};
    if (o == NULL)
        o = &none;
    wsq_frame_t f;
    wsq_frame_init(&f);
    f.op = WSQ_OP_SUB;
    set_topic(&f, topic);
    char r[24];
    snprintf(r, sizeof(r), "%s", wsqt_new_ref());
    set_ref(&f, r);
    if (o->consumer) {
        f.consumer_len = strlen(o->consumer);
        CHECK(f.consumer_len < sizeof(f.consumer));
        memcpy(f.consumer, o->consumer, f.consumer_len + 1);
    }
    f.from = o->from;
    f.from_seq = o->from_seq;
    f.from_time = o->from_time;
    f.window = o->window;
    send_frame(c, &f);
    int64_t deadline = wsqt_now_ms() + 10000 * wsqt_slow();
    wsqt_msg_t **scan = &c->q_head;
    for (;;) {
        while (*scan) {
            wsqt_frame_t *fr = wsqt_frame_parse(*scan);
            if ((strcmp(fr->f.op, "subscribed") == 0 || strcmp(fr->f.op, "err") == 0) &&
                strcmp(fr->f.ref, r) == 0) {
                wsqt_msg_t *m = take(c, scan);
                wsqt_msg_free(&m);
                return fr;
            }
            wsqt_frame_free(&fr);
            scan = &(*scan)->next;
        }
        CHECKF(c->state == WSQT_OPEN, "sub %s: connection ended (close %d \"%s\")", topic,
               c->close_code, c->close_reason);
        int64_t left = deadline - wsqt_now_ms();
        CHECKF(left > 0, "sub %s ref %s: no subscribed/err within 10 s", topic, r);
        service_once((int)left);
    }
}

wsqt_frame_t *wsqt_sub(wsqt_conn_t *c, const char *topic, const wsqt_sub_opts_t *o)
{
    wsqt_frame_t *fr = wsqt_sub_reply(c, topic, o);
    CHECKF(strcmp(fr->f.op, "subscribed") == 0, "sub %s refused: %s", topic, fr->text);
    EQ_STR(wsqt_jstr(fr->j, "topic"), topic);
    const json_t *cons = json_object_get(fr->j, "consumer");
    if (o && o->consumer) {
        CHECKF(json_is_string(cons) && strcmp(json_string_value(cons), o->consumer) == 0,
               "subscribed names the wrong consumer: %s", fr->text);
    } else {
        CHECKF(cons == NULL || json_is_null(cons) ||
                   (json_is_string(cons) && json_string_length(cons) == 0),
               "ephemeral subscribed names a consumer: %s", fr->text);
    }
    const char *epoch = wsqt_jstr(fr->j, "epoch");
    CHECKF(strlen(epoch) == 16 && strspn(epoch, "0123456789abcdef") == 16,
           "epoch is not 16 lowercase hex digits: %s", fr->text);
    CHECK(wsqt_jint(fr->j, "first_seq") >= 1);
    CHECK(wsqt_jint(fr->j, "next_seq") >= wsqt_jint(fr->j, "first_seq"));
    CHECK(wsqt_jint(fr->j, "start_seq") >= 1);
    CHECK(wsqt_jint(fr->j, "window") >= 1);
    if (o && o->window)
        EQ_INT(wsqt_jint(fr->j, "window"), o->window);
    (void)wsqt_jbool(fr->j, "resumed");
    return fr;
}

void wsqt_ack(wsqt_conn_t *c, const char *topic, uint64_t seq)
{
    wsq_frame_t f;
    wsq_frame_init(&f);
    f.op = WSQ_OP_ACK;
    set_topic(&f, topic);
    f.has_seq = true;
    f.seq = seq;
    send_frame(c, &f);
}

void wsqt_ack_upto(wsqt_conn_t *c, const char *topic, uint64_t upto)
{
    wsq_frame_t f;
    wsq_frame_init(&f);
    f.op = WSQ_OP_ACK;
    set_topic(&f, topic);
    f.has_upto = true;
    f.upto = upto;
    send_frame(c, &f);
}

void wsqt_nack(wsqt_conn_t *c, const char *topic, uint64_t seq, int64_t delay_ms)
{
    wsq_frame_t f;
    wsq_frame_init(&f);
    f.op = WSQ_OP_NACK;
    set_topic(&f, topic);
    f.has_seq = true;
    f.seq = seq;
    f.delay_ms = delay_ms;
    send_frame(c, &f);
}

void wsqt_v1_ping(wsqt_conn_t *c, int timeout_ms)
{
    wsq_frame_t f;
    wsq_frame_init(&f);
    f.op = WSQ_OP_PING;
    char r[24];
    snprintf(r, sizeof(r), "%s", wsqt_new_ref());
    set_ref(&f, r);
    send_frame(c, &f);
    wsqt_frame_t *fr = wsqt_wait_op(c, "pong", r, timeout_ms);
    static const char *const keys[] = {"op", "ref", NULL};
    wsqt_jkeys(fr->j, keys);
    wsqt_frame_free(&fr);
}

static size_t first_diff(const unsigned char *a, const unsigned char *b, size_t n)
{
    size_t i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

wsqt_frame_t *wsqt_expect_msg(wsqt_conn_t *c, const char *topic, uint64_t seq, const void *data,
                              size_t len, bool binary, uint32_t deliveries, int timeout_ms)
{
    wsqt_frame_t *fr = wsqt_try_frame(c, timeout_ms);
    CHECKF(fr != NULL, "expected msg %s seq %llu: nothing within %d ms (close %d \"%s\")", topic,
           (unsigned long long)seq, timeout_ms, c->close_code, c->close_reason);
    CHECKF(strcmp(fr->f.op, "msg") == 0, "expected msg %s seq %llu, got: %s", topic,
           (unsigned long long)seq, fr->text);
    CHECKF(strcmp(fr->f.topic, topic) == 0 && fr->f.seq == seq,
           "expected msg %s seq %llu, got: %.300s", topic, (unsigned long long)seq, fr->text);
    CHECKF(wsqt_jint(fr->j, "ts") > 1600000000000LL, "msg ts is not Unix ms: %.300s", fr->text);
    const json_t *enc = json_object_get(fr->j, "enc");
    if (binary)
        CHECKF(json_is_string(enc) && strcmp(json_string_value(enc), "base64") == 0,
               "binary msg seq %llu without \"enc\":\"base64\": %.300s", (unsigned long long)seq,
               fr->text);
    else
        CHECKF(enc == NULL, "text msg seq %llu has an enc member: %.300s", (unsigned long long)seq,
               fr->text);
    const json_t *dl = json_object_get(fr->j, "deliveries");
    if (deliveries <= 1)
        CHECKF(dl == NULL,
               "msg seq %llu: \"deliveries\" must be absent on a first delivery: %.300s",
               (unsigned long long)seq, fr->text);
    else
        CHECKF(json_is_integer(dl) && json_integer_value(dl) == (json_int_t)deliveries,
               "msg seq %llu: expected \"deliveries\":%u: %.300s", (unsigned long long)seq,
               deliveries, fr->text);
    static const char *const keys_all[] = {"op", "topic", "seq", "ts", "data", "enc", "deliveries"};
    const char *k;
    json_t *v;
    json_object_foreach(fr->j, k, v)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof(keys_all) / sizeof(keys_all[0]); i++)
            known = known || strcmp(k, keys_all[i]) == 0;
        CHECKF(known, "msg has an unexpected member \"%s\": %.300s", k, fr->text);
    }
    CHECKF(fr->f.data_len == len && (len == 0 || memcmp(fr->f.data, data, len) == 0),
           "msg %s seq %llu: payload differs (got %zu bytes, expected %zu, first difference at "
           "%zu): %.200s",
           topic, (unsigned long long)seq, fr->f.data_len, len,
           first_diff(fr->f.data, data, fr->f.data_len < len ? fr->f.data_len : len), fr->text);
    return fr;
}

void wsqt_expect_gap(wsqt_conn_t *c, const char *topic, uint64_t from, uint64_t to,
                     const char *reason, int timeout_ms)
{
    wsqt_frame_t *fr = wsqt_try_frame(c, timeout_ms);
    CHECKF(fr != NULL, "expected gap %llu-%llu on %s: nothing within %d ms",
           (unsigned long long)from, (unsigned long long)to, topic, timeout_ms);
    CHECKF(strcmp(fr->f.op, "gap") == 0, "expected gap %llu-%llu on %s, got: %.300s",
           (unsigned long long)from, (unsigned long long)to, topic, fr->text);
    static const char *const keys[] = {"op", "topic", "from", "to", "reason", NULL};
    wsqt_jkeys(fr->j, keys);
    CHECKF(
        strcmp(fr->f.topic, topic) == 0 && fr->f.from == from && fr->f.to == to &&
            strcmp(fr->f.reason, reason) == 0,
        "expected {\"op\":\"gap\",\"topic\":\"%s\",\"from\":%llu,\"to\":%llu,\"reason\":\"%s\"}, "
        "got: %s",
        topic, (unsigned long long)from, (unsigned long long)to, reason, fr->text);
    wsqt_frame_free(&fr);
}

static void expect_err(wsqt_conn_t *c, const char *code, const char *ref, int timeout_ms, bool soft)
{
    wsqt_frame_t *fr = wsqt_try_frame(c, timeout_ms);
    CHECKF(fr != NULL, "expected err %s: nothing within %d ms (close %d \"%s\")", code, timeout_ms,
           c->close_code, c->close_reason);
    bool ok = strcmp(fr->f.op, "err") == 0 && strcmp(fr->f.code, code) == 0 &&
              strcmp(fr->f.ref, ref ? ref : "") == 0 && fr->f.message[0] != '\0' &&
              json_object_size(fr->j) == (ref ? 4u : 3u);
    if (!ok && soft)
        wsqt_soft_fail(__FILE__, __LINE__,
                       "expected {\"op\":\"err\",%s%s%s\"code\":\"%s\","
                       "\"message\":...}, got: %s",
                       ref ? "\"ref\":" : "", ref ? ref : "", ref ? "," : "", code, fr->text);
    else
        CHECKF(ok, "expected {\"op\":\"err\",%s%s%s\"code\":\"%s\",\"message\":...}, got: %s",
               ref ? "\"ref\":" : "", ref ? ref : "", ref ? "," : "", code, fr->text);
    wsqt_frame_free(&fr);
}

void wsqt_expect_err(wsqt_conn_t *c, const char *code, const char *ref, int timeout_ms)
{
    expect_err(c, code, ref, timeout_ms, false);
}

void wsqt_expect_err_soft(wsqt_conn_t *c, const char *code, const char *ref, int timeout_ms)
{
    expect_err(c, code, ref, timeout_ms, true);
}

void wsqt_expect_silence(wsqt_conn_t *c, int ms)
{
    wsqt_msg_t *m = wsqt_recv(c, ms);
    CHECKF(m == NULL, "expected nothing for %d ms, got: %.300s", ms,
           m->binary ? "(binary)" : (const char *)m->data);
}

/* ------------------------------------------------------------------------------------------- */
/* JSON accessors */

json_int_t wsqt_jint(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);
    CHECKF(json_is_integer(v), "member \"%s\" missing or not an integer", name);
    return json_integer_value(v);
}

const char *wsqt_jstr(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);
    CHECKF(json_is_string(v), "member \"%s\" missing or not a string", name);
    return json_string_value(v);
}

bool wsqt_jbool(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);
    CHECKF(json_is_boolean(v), "member \"%s\" missing or not a boolean", name);
    return json_is_true(v);
}

void wsqt_jkeys(const json_t *obj, const char *const *names)
{
    size_t n = 0;
    for (; names[n]; n++) {
        char *dump = json_dumps(obj, JSON_COMPACT);
        bool ok = json_object_get(obj, names[n]) != NULL;
        if (!ok)
            wsqt_fail(__FILE__, __LINE__, "member \"%s\" missing in %.300s", names[n], dump);
        free(dump);
    }
    if (json_object_size(obj) != n) {
        char *dump = json_dumps(obj, JSON_COMPACT);
        wsqt_fail(__FILE__, __LINE__, "expected exactly %zu members, got %zu: %.300s", n,
                  json_object_size(obj), dump);
    }
}
