/*
 * The NATS driver: the NATS client protocol (INFO/CONNECT, PUB, SUB, MSG/HMSG, PING/PONG) in
 * WebSocket binary frames, with JetStream, for nats-server's websocket listener.
 *
 * Every connection sends CONNECT {"verbose":false,"pedantic":false,"headers":true,
 * "no_responders":true} and subscribes to its own inbox (_WQB.<run>.<conn>.*, sid 1). The stream
 * (file storage, one per run: WSQB_<topic>, subjects <topic> and <topic>.>) is created by every
 * connection that needs it with $JS.API.STREAM.CREATE (idempotent for an identical config), with
 * a reply subject in the inbox. wsq.v1 flavour (the default):
 *   - publishers PUB with a reply subject <inbox>.<id>; the JetStream PubAck {"stream":..,"seq":N}
 *     on it is the confirm;
 *   - drain consumers are durable push consumers ($JS.API.CONSUMER.DURABLE.CREATE, deliver_policy
 *     all, ack_policy all, max_ack_pending = --window, deliver_subject = a per-connection
 *     subject); deliveries are MSGs on the deliver subject whose reply subject ($JS.ACK....)
 *     carries the stream sequence; the cumulative ack is "+ACK" published to the reply subject of
 *     the last delivery (AckAll). With --resume the consumer is created before the preload and
 *     nothing subscribes to its deliver subject until the drain starts;
 *   - fanout/latency subscribers are ephemeral push consumers (deliver_policy new, ack_policy
 *     none), so deliveries come out of the stream like wsq's.
 * Raw flavour: publishers PUB without a reply (the stream still stores, nothing is confirmed);
 * subscribers are core NATS subscriptions on the subject (delivered when the server routes the
 * message, whether or not JetStream stored it).
 *
 * Hot path: a PUB is a per-connection template ("PUB <subject> <inbox>." + id digits +
 * " <size>\r\n<payload>\r\n") copied and stamped; server data is parsed in place (a protocol
 * message split across WebSocket messages is carried over in a per-connection buffer); PubAcks
 * are read by looking for "seq": in the short JSON. No JSON library, no allocation per message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

enum nstate {
    N_STREAM,   /* waiting for the stream-create reply */
    N_CONSUMER, /* waiting for the consumer-create reply */
    N_PONG,     /* waiting for the PONG that follows SUB */
    N_UP,
};

typedef struct {
    uint8_t *head; /* "PUB <subject> <inbox>." (or "PUB <subject> ") */
    size_t head_len;
    uint8_t *tail; /* " <size>\r\n<payload>\r\n" */
    size_t tail_len, pay_off;
    uint8_t *in; /* a partial protocol message from the previous WebSocket message */
    size_t in_len, in_cap;
    char inbox[128]; /* _WQB.<run>.<conn> */
    size_t inbox_len;
    char deliver[128]; /* deliver subject of this connection's consumer */
    char stream[160];
    char ackreply[256]; /* reply subject of the last delivery (for AckAll) */
    size_t ackreply_len;
    uint8_t st;
    bool js;               /* wsq.v1 flavour: JetStream acks and consumers */
    bool consumer_created; /* drain: the durable consumer exists */
    bool subscribed;       /* drain: the deliver subject is subscribed */
} nats_t;

static void sanitize(char *d, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 1 < cap; s++) {
        char ch = *s;
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
        d[n++] = ok ? ch : '_';
    }
    d[n] = 0;
}

static bool send_raw(conn_t *c, const char *s, size_t n)
{
    uint8_t *p = ws_frame_begin(c, 2, n);
    if (p == NULL)
        return false;
    memcpy(p, s, n);
    ws_frame_end(c, p, n);
    return true;
}

/* PUB subject reply len\r\nbody\r\n, one frame. */
static bool send_pub(conn_t *c, const char *subj, const char *reply, const char *body, size_t bl)
{
    char b[2048];
    int n = snprintf(b, sizeof(b), "PUB %s %s %zu\r\n", subj, reply, bl);
    if (n < 0 || (size_t)n + bl + 2 > sizeof(b))
        return false;
    memcpy(b + n, body, bl);
    memcpy(b + n + bl, "\r\n", 2);
    return send_raw(c, b, (size_t)n + bl + 2);
}

static int nats_upgrade(conn_t *c, char *path, size_t cap, const char **subprotocol)
{
    int n = snprintf(path, cap, "%s", g.o.base_path[0] ? g.o.base_path : "/");
    if (n < 0 || (size_t)n >= cap)
        return -1;
    *subprotocol = NULL;
    nats_t *s = c->dp;
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return -1;
        c->dp = s;
    }
    s->js = c->flavor == FL_V1;
    c->confirms = s->js && (c->role == R_PUB || c->role == R_RATE);
    n = snprintf(s->inbox, sizeof(s->inbox), "_WQB.%s.%u", g.run_id, c->idx);
    s->inbox_len = (size_t)n;
    char t[128];
    sanitize(t, sizeof(t), g.o.topic);
    snprintf(s->stream, sizeof(s->stream), "WSQB_%s", t);
    snprintf(s->deliver, sizeof(s->deliver), "_WQD.%s.%u", g.run_id, c->idx);
    return 0;
}

static bool create_stream(conn_t *c, nats_t *s)
{
    char subj[256], body[1024];
    snprintf(subj, sizeof(subj), "$JS.API.STREAM.CREATE.%s", s->stream);
    int n = snprintf(body, sizeof(body),
                     "{\"name\":\"%s\",\"subjects\":[\"%s\",\"%s.>\"],\"retention\":\"limits\","
                     "\"storage\":\"file\",\"num_replicas\":1,\"discard\":\"old\"}",
                     s->stream, g.o.topic, g.o.topic);
    char reply[160];
    snprintf(reply, sizeof(reply), "%s.s", s->inbox);
    s->st = N_STREAM;
    return n > 0 && (size_t)n < sizeof(body) && send_pub(c, subj, reply, body, (size_t)n);
}

/* Durable (drain) or ephemeral (fanout/latency) push consumer delivering to s->deliver. */
static bool create_consumer(conn_t *c, nats_t *s, bool durable)
{
    char subj[256], body[1024], reply[160];
    int n;
    if (durable) {
        snprintf(subj, sizeof(subj), "$JS.API.CONSUMER.DURABLE.CREATE.%s.%s", s->stream,
                 c->consumer);
        n = snprintf(body, sizeof(body),
                     "{\"stream_name\":\"%s\",\"config\":{\"durable_name\":\"%s\","
                     "\"deliver_subject\":\"%s\",\"deliver_policy\":\"all\",\"ack_policy\":\"all\","
                     "\"ack_wait\":30000000000,\"max_ack_pending\":%d,\"replay_policy\":"
                     "\"instant\"}}",
                     s->stream, c->consumer, s->deliver, g.o.window);
    } else {
        snprintf(subj, sizeof(subj), "$JS.API.CONSUMER.CREATE.%s", s->stream);
        n = snprintf(body, sizeof(body),
                     "{\"stream_name\":\"%s\",\"config\":{\"deliver_subject\":\"%s\","
                     "\"deliver_policy\":\"new\",\"ack_policy\":\"none\",\"replay_policy\":"
                     "\"instant\"}}",
                     s->stream, s->deliver);
    }
    snprintf(reply, sizeof(reply), "%s.c", s->inbox);
    s->st = N_CONSUMER;
    return n > 0 && (size_t)n < sizeof(body) && send_pub(c, subj, reply, body, (size_t)n);
}

static void nats_on_open(conn_t *c)
{
    nats_t *s = c->dp;
    static const char con[] = "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,"
                              "\"no_responders\":true,\"protocol\":1,\"lang\":\"c\","
                              "\"version\":\"wsq-bench\"}\r\n";
    if (!send_raw(c, con, sizeof(con) - 1)) {
        ev_proto_error(c, "no room for CONNECT");
        return;
    }
    if (c->role == R_PUB || c->role == R_RATE) {
        /* the template: "PUB <subject> <inbox>." + id + " <size>\r\n<payload>\r\n" with
         * confirms, "PUB <subject> <size>\r\n<payload>\r\n" without */
        char h[512], tl[32];
        int hn = s->js ? snprintf(h, sizeof(h), "PUB %s %s.", c->topic, s->inbox)
                       : snprintf(h, sizeof(h), "PUB %s ", c->topic);
        int tn = snprintf(tl, sizeof(tl), s->js ? " %d\r\n" : "%d\r\n", g.o.size);
        size_t size = (size_t)g.o.size;
        if (hn < 0 || (size_t)hn >= sizeof(h) || tn < 0) {
            ev_proto_error(c, "subject too long");
            return;
        }
        s->head_len = (size_t)hn;
        s->tail_len = (size_t)tn + size + 2;
        s->head = malloc(s->head_len);
        s->tail = malloc(s->tail_len);
        if (s->head == NULL || s->tail == NULL) {
            ev_proto_error(c, "out of memory");
            return;
        }
        memcpy(s->head, h, s->head_len);
        memcpy(s->tail, tl, (size_t)tn);
        s->pay_off = (size_t)tn;
        payload_write(s->tail + tn, size, 0, 0);
        memcpy(s->tail + tn + size, "\r\n", 2);
    }
    char b[512];
    int n;
    if (c->role == R_IDLE || (c->role == R_SUB && !s->js)) {
        if (c->role == R_SUB)
            n = snprintf(b, sizeof(b), "SUB %s 2\r\nPING\r\n", c->topic);
        else
            n = snprintf(b, sizeof(b), "PING\r\n");
        s->st = N_PONG;
        if (n < 0 || (size_t)n >= sizeof(b) || !send_raw(c, b, (size_t)n))
            ev_proto_error(c, "no room for SUB");
        return;
    }
    n = snprintf(b, sizeof(b), "SUB %s.* 1\r\n", s->inbox);
    if (n < 0 || (size_t)n >= sizeof(b) || !send_raw(c, b, (size_t)n) || !create_stream(c, s))
        ev_proto_error(c, "no room for the stream setup");
}

/* The stream (or consumer) exists: the next setup step. */
static void setup_step(conn_t *c, nats_t *s)
{
    if (s->st == N_STREAM) {
        if (c->role == R_SUB && c->sub_pending) { /* drain consumer */
            if (c->resume_unsub) {
                if (!create_consumer(c, s, true))
                    ev_proto_error(c, "no room to create the consumer");
                s->consumer_created = true;
                return;
            }
            s->st = N_UP;
            ev_ready(c, 0, 0);
            return;
        }
        if (c->role == R_SUB) { /* fanout/latency: an ephemeral push consumer */
            char b[256];
            int n = snprintf(b, sizeof(b), "SUB %s 2\r\n", s->deliver);
            if (n < 0 || (size_t)n >= sizeof(b) || !send_raw(c, b, (size_t)n) ||
                !create_consumer(c, s, false))
                ev_proto_error(c, "no room to create the consumer");
            return;
        }
    }
    s->st = N_UP;
    ev_ready(c, 0, 0);
}

static bool nats_publish(conn_t *c, uint64_t id, uint64_t ts_ns, uint64_t ctr)
{
    nats_t *s = c->dp;
    char digits[20];
    size_t dl = s->js ? u64_dec(digits, id) : 0;
    size_t n = s->head_len + dl + s->tail_len;
    uint8_t *p = ws_frame_begin(c, 2, n);
    if (p == NULL)
        return false;
    memcpy(p, s->head, s->head_len);
    memcpy(p + s->head_len, digits, dl);
    uint8_t *t = p + s->head_len + dl;
    memcpy(t, s->tail, s->tail_len);
    if ((size_t)g.o.size >= PAYLOAD_STAMP)
        payload_write(t + s->pay_off, PAYLOAD_STAMP, ts_ns, ctr);
    ws_frame_end(c, p, n);
    return true;
}

static uint64_t dec(const char *p, size_t n, bool *ok)
{
    uint64_t v = 0;
    *ok = n > 0 && n <= 19;
    for (size_t i = 0; i < n && *ok; i++) {
        if (p[i] < '0' || p[i] > '9')
            *ok = false;
        else
            v = v * 10 + (uint64_t)(p[i] - '0');
    }
    return v;
}

/* The stream sequence in a $JS.ACK reply subject: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.
 * <cseq>.<ts>.<pending> (v1), or with <domain>.<account hash> before the stream (v2). 0: none. */
static uint64_t ack_sseq(const char *r, size_t n)
{
    if (n < 8 || memcmp(r, "$JS.ACK.", 8) != 0)
        return 0;
    const char *tok[16];
    size_t tl[16], k = 0;
    const char *p = r, *e = r + n;
    while (p < e && k < 16) {
        const char *d = memchr(p, '.', (size_t)(e - p));
        if (d == NULL)
            d = e;
        tok[k] = p;
        tl[k++] = (size_t)(d - p);
        p = d + 1;
    }
    size_t i = k == 9 ? 5 : k >= 11 ? 7 : 0;
    bool ok;
    uint64_t v = i ? dec(tok[i], tl[i], &ok) : 0;
    return i && ok ? v : 0;
}

/* A MSG (or HMSG: hdr bytes of headers before the payload). */
static void on_msg(conn_t *c, nats_t *s, const char *subj, size_t sl, uint64_t sid,
                   const char *reply, size_t rl, const uint8_t *hdr, size_t hl, const uint8_t *pay,
                   size_t pl)
{
    if (sid == 2) { /* a delivery */
        uint64_t seq = 0;
        if (rl > 0) {
            seq = ack_sseq(reply, rl);
            if (c->durable && rl < sizeof(s->ackreply)) {
                memcpy(s->ackreply, reply, rl);
                s->ackreply_len = rl;
            }
        }
        if (hl > 0 && pl == 0) /* a status message (heartbeat, flow control) */
            return;
        ev_delivery(c, seq, pay, pl);
        return;
    }
    if (sid != 1 || sl <= s->inbox_len + 1) {
        ev_proto_error(c, "MSG on an unknown subscription %llu", (unsigned long long)sid);
        return;
    }
    const char *last = subj + s->inbox_len + 1;
    size_t ll = sl - s->inbox_len - 1;
    /* no responders (503) and other status replies */
    bool status = hl >= 12 && memcmp(hdr, "NATS/1.0", 8) == 0;
    bool err = status || memmem(pay, pl, "\"error\"", 7) != NULL;
    if (ll == 1 && (last[0] == 's' || last[0] == 'c')) { /* stream / consumer create reply */
        /* Connections create the run's stream concurrently; nats-server 2.9 may answer the
         * loser "subjects overlap" (10065) or "name already in use" (10058): it exists. */
        if (err && !status && last[0] == 's' &&
            (memmem(pay, pl, "\"err_code\":10065", 16) ||
             memmem(pay, pl, "\"err_code\":10058", 16)))
            err = false;
        if (err) {
            char m[240];
            int n =
                snprintf(m, sizeof(m), "%s create: %.*s", last[0] == 's' ? "stream" : "consumer",
                         (int)(status ? (hl > 60 ? 60 : hl) : (pl > 200 ? 200 : pl)),
                         status ? (const char *)hdr : (const char *)pay);
            ev_error(c, false, 0, m, n > 0 ? (size_t)n : 0);
            return;
        }
        if (s->st == N_STREAM && last[0] == 's')
            setup_step(c, s);
        else if (s->st == N_CONSUMER && last[0] == 'c') {
            s->st = N_UP;
            ev_ready(c, 0, 0);
        }
        return;
    }
    bool ok;
    uint64_t id = dec(last, ll, &ok);
    if (!ok) {
        ev_proto_error(c, "reply on an unknown inbox subject %.*s", (int)sl, subj);
        return;
    }
    if (err) {
        char m[240];
        int n = snprintf(m, sizeof(m), "publish %llu: %.*s", (unsigned long long)id,
                         (int)(status ? (hl > 60 ? 60 : hl) : (pl > 200 ? 200 : pl)),
                         status ? (const char *)hdr : (const char *)pay);
        ev_error(c, true, id, m, n > 0 ? (size_t)n : 0);
        return;
    }
    uint64_t seq = 0;
    const uint8_t *q = memmem(pay, pl, "\"seq\":", 6);
    if (q) {
        q += 6;
        const uint8_t *e = pay + pl;
        while (q < e && *q >= '0' && *q <= '9')
            seq = seq * 10 + (uint64_t)(*q++ - '0');
    }
    ev_confirm(c, id, seq);
}

/* Splits a control line's arguments at spaces; returns the count. */
static int split(const char *p, size_t n, const char **a, size_t *al, int max)
{
    int k = 0;
    size_t i = 0;
    while (i < n && k < max) {
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
            i++;
        if (i >= n)
            break;
        size_t j = i;
        while (j < n && p[j] != ' ' && p[j] != '\t')
            j++;
        a[k] = p + i;
        al[k++] = j - i;
        i = j;
    }
    return k;
}

/* Parses whole protocol messages in p; returns the bytes consumed. */
static size_t parse(conn_t *c, nats_t *s, const uint8_t *p, size_t len)
{
    size_t off = 0;
    while (off < len && c->state != CS_DONE) {
        const uint8_t *nl = memchr(p + off, '\n', len - off);
        if (nl == NULL)
            break;
        const char *l = (const char *)p + off;
        size_t ll = (size_t)((const uint8_t *)nl - (p + off)); /* without \n */
        size_t lend = ll + 1;
        if (ll > 0 && l[ll - 1] == '\r')
            ll--;
        if (ll >= 4 && (memcmp(l, "MSG ", 4) == 0 || memcmp(l, "HMSG", 4) == 0)) {
            bool h = l[0] == 'H';
            const char *a[6];
            size_t al[6];
            int k = split(l + (h ? 5 : 4), ll - (h ? 5 : 4), a, al, 6);
            int need = h ? 4 : 3;
            if (k != need && k != need + 1) {
                ev_proto_error(c, "bad %s line", h ? "HMSG" : "MSG");
                return len;
            }
            bool ok1, ok2 = true, ok3;
            uint64_t sid = dec(a[1], al[1], &ok1);
            uint64_t hlen = h ? dec(a[k - 2], al[k - 2], &ok2) : 0;
            uint64_t tot = dec(a[k - 1], al[k - 1], &ok3);
            if (!ok1 || !ok2 || !ok3 || hlen > tot) {
                ev_proto_error(c, "bad %s line", h ? "HMSG" : "MSG");
                return len;
            }
            if (len - off - lend < tot + 2)
                break; /* the payload is not all here */
            const uint8_t *body = p + off + lend;
            bool has_reply = k == need + 1;
            on_msg(c, s, a[0], al[0], sid, has_reply ? a[2] : NULL, has_reply ? al[2] : 0, body,
                   (size_t)hlen, body + hlen, (size_t)(tot - hlen));
            off += lend + (size_t)tot + 2;
            continue;
        }
        if (ll == 4 && memcmp(l, "PING", 4) == 0) {
            send_raw(c, "PONG\r\n", 6);
        } else if (ll == 4 && memcmp(l, "PONG", 4) == 0) {
            if (s->st == N_PONG) {
                s->st = N_UP;
                ev_ready(c, 0, 0);
            }
        } else if (ll >= 4 && memcmp(l, "-ERR", 4) == 0) {
            ev_error(c, false, 0, l, ll);
        } else if (!(ll >= 3 && memcmp(l, "+OK", 3) == 0) &&
                   !(ll >= 4 && memcmp(l, "INFO", 4) == 0)) {
            ev_proto_error(c, "unexpected: %.*s", (int)(ll > 80 ? 80 : ll), l);
        }
        off += lend;
    }
    return off;
}

static void nats_on_message(conn_t *c, unsigned opcode, const uint8_t *p, size_t len)
{
    (void)opcode;
    nats_t *s = c->dp;
    if (s->in_len == 0) {
        size_t k = parse(c, s, p, len);
        p += k;
        len -= k;
        if (len == 0)
            return;
    }
    if (s->in_len + len > s->in_cap) {
        size_t nc = s->in_cap ? s->in_cap : 4096;
        while (nc < s->in_len + len)
            nc *= 2;
        uint8_t *nb = realloc(s->in, nc);
        if (nb == NULL) {
            ev_proto_error(c, "out of memory");
            return;
        }
        s->in = nb;
        s->in_cap = nc;
    }
    memcpy(s->in + s->in_len, p, len);
    s->in_len += len;
    if (s->in_len > len) {
        size_t k = parse(c, s, s->in, s->in_len);
        memmove(s->in, s->in + k, s->in_len - k);
        s->in_len -= k;
    }
}

static bool nats_subscribe(conn_t *c, bool resume)
{
    (void)resume;
    nats_t *s = c->dp;
    if (!c->durable)
        return true; /* fanout/latency: subscribed at setup */
    char b[256];
    int n = snprintf(b, sizeof(b), "SUB %s 2\r\n", s->deliver);
    if (n < 0 || (size_t)n >= sizeof(b) || !send_raw(c, b, (size_t)n))
        return false;
    s->subscribed = true;
    if (!s->consumer_created) {
        s->consumer_created = true;
        return create_consumer(c, s, true);
    }
    return true;
}

static bool nats_unsubscribe(conn_t *c)
{
    /* drain --resume: the durable consumer exists and nothing listens on its deliver subject */
    ev_unsubscribed(c);
    return true;
}

static bool nats_ack(conn_t *c, uint64_t upto)
{
    (void)upto; /* AckAll: acking the last delivery acks everything before it */
    nats_t *s = c->dp;
    if (s->ackreply_len == 0)
        return true;
    /* PUB <reply> 4\r\n+ACK\r\n */
    static const char tail[] = " 4\r\n+ACK\r\n";
    size_t n = 4 + s->ackreply_len + sizeof(tail) - 1;
    uint8_t *p = ws_frame_begin(c, 2, n);
    if (p == NULL)
        return false;
    memcpy(p, "PUB ", 4);
    memcpy(p + 4, s->ackreply, s->ackreply_len);
    memcpy(p + 4 + s->ackreply_len, tail, sizeof(tail) - 1);
    ws_frame_end(c, p, n);
    return true;
}

static void nats_release(conn_t *c)
{
    nats_t *s = c->dp;
    if (s) {
        free(s->head);
        free(s->tail);
        free(s->in);
        free(s);
        c->dp = NULL;
    }
}

const driver_t drv_nats = {
    .name = "nats",
    .upgrade = nats_upgrade,
    .on_open = nats_on_open,
    .publish = nats_publish,
    .on_message = nats_on_message,
    .subscribe = nats_subscribe,
    .unsubscribe = nats_unsubscribe,
    .ack = nats_ack,
    .release = nats_release,
};
