/*
 * lws-baseline: the smallest libwebsockets server that does the WebSocket part of a broker's
 * work, as the ceiling wsqd is compared with on the same machine. It is built like wsqd: one
 * service thread, the libev event library, an IPv4 listener.
 *
 *   --mode sink   counts the messages it receives and writes nothing back
 *   --mode echo   sends every message back to its sender, pre-framed into a per-connection
 *                 buffer and written with one lws_write per WRITEABLE (many frames per write, as
 *                 wsqd writes); reading pauses while more than 1 MiB waits to be written
 *
 * Any request path and any (or no) subprotocol is accepted, so that `wsq-bench publish --mode
 * raw` measures it: in sink mode its "sent" rate is what the server absorbed (TCP back-pressure),
 * in echo mode its "echoed" rate is the round trip.
 *
 * Usage: lws-baseline [--port N] [--mode sink|echo]
 * Prints "listening port=N" once listening; on SIGINT/SIGTERM prints
 * "messages_in=N messages_out=N bytes_in=N" and exits.
 */
#include <libwebsockets.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OUT_HIGH (1u << 20) /* pause reading above this much unsent echo */

typedef struct {
    unsigned char *buf; /* LWS_PRE headroom, then pre-framed echo frames */
    size_t len, cap;
    unsigned char *msg; /* a message that arrived in several pieces */
    size_t mlen, mcap;
    bool paused;
} pss_t;

static bool echo;
static volatile uint64_t msgs_in, msgs_out, bytes_in;

static size_t put_u64(char *d, uint64_t v)
{
    char t[20];
    size_t n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        d[i] = t[n - 1 - i];
    return n;
}

static void on_signal(int sig)
{
    (void)sig;
    char b[160];
    size_t n = 0;
    memcpy(b + n, "messages_in=", 12), n += 12;
    n += put_u64(b + n, msgs_in);
    memcpy(b + n, " messages_out=", 14), n += 14;
    n += put_u64(b + n, msgs_out);
    memcpy(b + n, " bytes_in=", 10), n += 10;
    n += put_u64(b + n, bytes_in);
    b[n++] = '\n';
    if (write(1, b, n) < 0)
        _exit(1);
    _exit(0);
}

static bool reserve(unsigned char **b, size_t *cap, size_t need, size_t head)
{
    if (need <= *cap)
        return true;
    size_t nc = *cap ? *cap : 65536;
    while (nc < need)
        nc *= 2;
    unsigned char *nb = realloc(*b, head + nc);
    if (nb == NULL)
        return false;
    *b = nb;
    *cap = nc;
    return true;
}

/* Appends one unmasked server frame with payload p to the echo buffer. */
static bool frame(pss_t *s, bool binary, const void *p, size_t n)
{
    if (!reserve(&s->buf, &s->cap, s->len + n + 10, LWS_PRE))
        return false;
    unsigned char *h = s->buf + LWS_PRE + s->len;
    size_t hl = 2;
    h[0] = (unsigned char)(0x80 | (binary ? 2 : 1));
    if (n < 126) {
        h[1] = (unsigned char)n;
    } else if (n <= 0xffff) {
        h[1] = 126;
        h[2] = (unsigned char)(n >> 8);
        h[3] = (unsigned char)n;
        hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    memcpy(h + hl, p, n);
    s->len += hl + n;
    return true;
}

static int cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    pss_t *s = user;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        memset(s, 0, sizeof(*s));
        return 0;
    case LWS_CALLBACK_RECEIVE: {
        bytes_in += len;
        bool last = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
        if (!echo) {
            if (last)
                msgs_in++;
            return 0;
        }
        if (last && s->mlen == 0) { /* the whole message in one piece: frame it directly */
            msgs_in++;
            if (!frame(s, lws_frame_is_binary(wsi), in, len))
                return -1;
        } else {
            if (!reserve(&s->msg, &s->mcap, s->mlen + len, 0))
                return -1;
            memcpy(s->msg + s->mlen, in, len);
            s->mlen += len;
            if (!last)
                return 0;
            msgs_in++;
            if (!frame(s, lws_frame_is_binary(wsi), s->msg, s->mlen))
                return -1;
            s->mlen = 0;
        }
        msgs_out++;
        if (s->len > OUT_HIGH && !s->paused) {
            s->paused = true;
            lws_rx_flow_control(wsi, 0);
        }
        lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (s->len > 0) {
            /* lws keeps what the socket does not take and calls WRITEABLE again once it is out */
            if (lws_write(wsi, s->buf + LWS_PRE, s->len, LWS_WRITE_RAW) < (int)s->len)
                return -1;
            s->len = 0;
        }
        if (s->paused) {
            s->paused = false;
            lws_rx_flow_control(wsi, 1);
        }
        return 0;
    case LWS_CALLBACK_CLOSED:
        free(s->buf);
        free(s->msg);
        memset(s, 0, sizeof(*s));
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols protocols[] = {
    {"baseline", cb, sizeof(pss_t), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

int main(int argc, char **argv)
{
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc) {
            const char *m = argv[++i];
            if (strcmp(m, "echo") == 0)
                echo = true;
            else if (strcmp(m, "sink") != 0)
                goto usage;
        } else {
        usage:
            fprintf(stderr, "usage: lws-baseline [--port N] [--mode sink|echo]\n");
            return 2;
        }
    }
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_LIBEV;
    info.count_threads = 1;
    info.pt_serv_buf_size = 64 * 1024;
    struct lws_context *ctx = lws_create_context(&info);
    if (ctx == NULL) {
        fprintf(stderr, "lws-baseline: cannot create the context (libwebsockets-evlib-ev?)\n");
        return 1;
    }
    struct lws_context_creation_info vi;
    memset(&vi, 0, sizeof(vi));
    vi.vhost_name = "default";
    vi.port = port;
    vi.iface = "127.0.0.1";
    vi.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    vi.protocols = protocols;
    struct lws_vhost *vh = lws_create_vhost(ctx, &vi);
    if (vh == NULL) {
        fprintf(stderr, "lws-baseline: cannot listen on 127.0.0.1:%d\n", port);
        return 1;
    }
    lws_protocol_init(ctx);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    printf("listening port=%d mode=%s\n", lws_get_vhost_listen_port(vh), echo ? "echo" : "sink");
    fflush(stdout);
    while (lws_service(ctx, 0) >= 0)
        ;
    lws_context_destroy(ctx);
    return 0;
}
