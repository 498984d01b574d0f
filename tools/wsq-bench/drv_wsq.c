/*
 * The wsq driver: wsq.v1 (JSON control frames, confirms, acks) and raw mode (one frame = one
 * message, the topic in the URL).
 *
 * Hot path: a pub frame is a per-connection template ({"op":"pub","topic":T,"data":"<payload>",
 * "ref":) copied, stamped, and finished with the ref digits and '}'; server frames are read by a
 * small scanner that walks the top-level members once and keeps only op, ref, seq, data and the
 * handful of other members the bench needs. No JSON library, no allocation.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "scan.h"

typedef struct {
    uint8_t *tmpl; /* {"op":"pub","topic":"T","data":"<payload>","ref": */
    size_t tmpl_len;
    size_t pay_off; /* where the payload starts in tmpl */
} wsq_priv_t;

static int append(char *dst, size_t cap, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (*len + n + 1 > cap)
        return -1;
    memcpy(dst + *len, s, n + 1);
    *len += n;
    return 0;
}

/* Appends s percent-encoded (RFC 3986: everything but unreserved characters and '/'). */
static int append_enc(char *dst, size_t cap, size_t *len, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool plain = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                     (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~' ||
                     ch == '/';
        if (*len + (plain ? 1 : 3) + 1 > cap)
            return -1;
        if (plain) {
            dst[(*len)++] = (char)ch;
        } else {
            dst[(*len)++] = '%';
            dst[(*len)++] = hex[ch >> 4];
            dst[(*len)++] = hex[ch & 15];
        }
    }
    dst[*len] = 0;
    return 0;
}

static int wsq_upgrade(conn_t *c, char *path, size_t cap, const char **subprotocol)
{
    size_t len = 0;
    path[0] = 0;
    if (append(path, cap, &len, g.o.base_path) < 0)
        return -1;
    if (c->flavor == FL_V1) {
        *subprotocol = "wsq.v1";
        c->confirms = c->role == R_PUB || c->role == R_RATE;
        if (len == 0 && append(path, cap, &len, "/") < 0)
            return -1;
    } else {
        *subprotocol = NULL;
        c->confirms = false;
        if (append(path, cap, &len, "/topics/") < 0 || append_enc(path, cap, &len, c->topic) < 0)
            return -1;
        if (c->role == R_IDLE) {
            char n[24];
            snprintf(n, sizeof(n), ".%u", c->ridx);
            if (append(path, cap, &len, n) < 0 || append(path, cap, &len, "?from=latest") < 0)
                return -1;
        } else if (c->role == R_SUB && c->consumer[0]) {
            if (append(path, cap, &len, "?consumer=") < 0 ||
                append_enc(path, cap, &len, c->consumer) < 0 ||
                append(path, cap, &len, g.o.resume ? "&from=resume" : "&from=earliest") < 0)
                return -1;
        } else if (c->role == R_SUB) {
            if (append(path, cap, &len, "?from=latest") < 0)
                return -1;
        }
    }
    return 0;
}

static bool send_text(conn_t *c, const char *s, size_t n)
{
    uint8_t *p = ws_frame_begin(c, 1, n);
    if (p == NULL)
        return false;
    memcpy(p, s, n);
    ws_frame_end(c, p, n);
    return true;
}

static bool wsq_subscribe(conn_t *c, bool resume)
{
    if (c->flavor != FL_V1)
        return true; /* raw: the upgrade subscribed */
    char b[512];
    const char *from = "latest";
    if (g.o.scenario == SC_DRAIN)
        from = resume ? "resume" : "earliest";
    int n;
    if (c->consumer[0])
        n = snprintf(b, sizeof(b),
                     "{\"op\":\"sub\",\"topic\":\"%s\",\"consumer\":\"%s\",%s\"from\":\"%s\","
                     "\"window\":%d,\"ref\":\"s\"}",
                     c->topic, c->consumer, c->shared ? "\"shared\":true," : "", from, g.o.window);
    else
        n = snprintf(
            b, sizeof(b),
            "{\"op\":\"sub\",\"topic\":\"%s\",\"from\":\"%s\",\"window\":%d,\"ref\":\"s\"}",
            c->topic, from, g.o.window);
    if (n < 0 || (size_t)n >= sizeof(b))
        return false;
    return send_text(c, b, (size_t)n);
}

static bool wsq_unsubscribe(conn_t *c)
{
    if (c->flavor != FL_V1)
        return false;
    char b[320];
    int n = snprintf(b, sizeof(b), "{\"op\":\"unsub\",\"topic\":\"%s\",\"ref\":\"u\"}", c->topic);
    return n > 0 && (size_t)n < sizeof(b) && send_text(c, b, (size_t)n);
}

/* {"op":"ack","topic":"T<mid>N}: mid is ","upto": or ","seq": */
static bool ack_frame(conn_t *c, const char *mid, size_t mid_len, uint64_t v)
{
    static const char a[] = "{\"op\":\"ack\",\"topic\":\"";
    char digits[20];
    size_t dl = u64_dec(digits, v);
    size_t n = sizeof(a) - 1 + c->topic_len + mid_len + dl + 1;
    uint8_t *p = ws_frame_begin(c, 1, n), *q = p;
    if (p == NULL)
        return false;
    memcpy(q, a, sizeof(a) - 1);
    q += sizeof(a) - 1;
    memcpy(q, c->topic, c->topic_len);
    q += c->topic_len;
    memcpy(q, mid, mid_len);
    q += mid_len;
    memcpy(q, digits, dl);
    q += dl;
    *q = '}';
    ws_frame_end(c, p, n);
    return true;
}

static bool wsq_ack(conn_t *c, uint64_t upto)
{
    static const char m[] = "\",\"upto\":";
    return ack_frame(c, m, sizeof(m) - 1, upto);
}

/* A shared consumer refuses "upto" (its members complete out of order): one ack per message. */
static bool wsq_ack_seq(conn_t *c, uint64_t seq)
{
    static const char m[] = "\",\"seq\":";
    return ack_frame(c, m, sizeof(m) - 1, seq);
}

static void wsq_on_open(conn_t *c)
{
    if (c->flavor == FL_V1 && (c->role == R_PUB || c->role == R_RATE)) {
        /* the pub template */
        static const char pre[] = "{\"op\":\"pub\",\"topic\":\"";
        static const char mid[] = "\",\"data\":\"";
        static const char post[] = "\",\"ref\":";
        size_t len =
            sizeof(pre) - 1 + c->topic_len + sizeof(mid) - 1 + (size_t)g.o.size + sizeof(post) - 1;
        wsq_priv_t *w = calloc(1, sizeof(*w));
        uint8_t *t = malloc(len);
        if (w == NULL || t == NULL) {
            free(w);
            free(t);
            ev_proto_error(c, "out of memory");
            return;
        }
        uint8_t *q = t;
        memcpy(q, pre, sizeof(pre) - 1);
        q += sizeof(pre) - 1;
        memcpy(q, c->topic, c->topic_len);
        q += c->topic_len;
        memcpy(q, mid, sizeof(mid) - 1);
        q += sizeof(mid) - 1;
        w->pay_off = (size_t)(q - t);
        payload_write(q, (size_t)g.o.size, 0, 0);
        q += g.o.size;
        memcpy(q, post, sizeof(post) - 1);
        w->tmpl = t;
        w->tmpl_len = len;
        c->dp = w;
    }
    if (c->role == R_SUB && c->flavor == FL_V1 && (!c->sub_pending || c->resume_unsub)) {
        if (!wsq_subscribe(c, false))
            ev_proto_error(c, "no room to subscribe");
        return; /* ready when "subscribed" arrives */
    }
    ev_ready(c, 0, 0);
}

static bool wsq_publish(conn_t *c, uint64_t id, uint64_t ts_ns, uint64_t ctr)
{
    size_t size = (size_t)g.o.size;
    if (c->flavor == FL_RAW) {
        uint8_t *p = ws_frame_begin(c, 1, size);
        if (p == NULL)
            return false;
        payload_write(p, size, ts_ns, ctr);
        ws_frame_end(c, p, size);
        return true;
    }
    wsq_priv_t *w = c->dp;
    char digits[20];
    size_t dl = u64_dec(digits, id);
    size_t n = w->tmpl_len + dl + 1;
    uint8_t *p = ws_frame_begin(c, 1, n);
    if (p == NULL)
        return false;
    memcpy(p, w->tmpl, w->tmpl_len);
    if (size >= PAYLOAD_STAMP)
        payload_write(p + w->pay_off, PAYLOAD_STAMP, ts_ns, ctr);
    memcpy(p + w->tmpl_len, digits, dl);
    p[n - 1] = '}';
    ws_frame_end(c, p, n);
    return true;
}

static void wsq_on_message(conn_t *c, unsigned opcode, const uint8_t *p, size_t len)
{
    if (c->flavor == FL_RAW) {
        ev_delivery(c, 0, p, len);
        return;
    }
    if (opcode != 1) {
        ev_proto_error(c, "binary frame on wsq.v1");
        return;
    }
    scan_t s;
    if (!scan_frame(p, len, &s)) {
        ev_proto_error(c, "unparsable frame: %.*s", (int)(len > 120 ? 120 : len), p);
        return;
    }
    switch (s.op) {
    case OP_MSG:
        if (s.data == NULL || !s.has_seq) {
            ev_proto_error(c, "msg without data or seq");
            return;
        }
        ev_delivery(c, s.seq, s.data, s.data_len);
        break;
    case OP_OK:
        if (s.ref_is_int)
            ev_confirm(c, s.ref_int, s.seq);
        else if (s.ref_len == 3 && memcmp(s.ref, "\"u\"", 3) == 0)
            ev_unsubscribed(c);
        break;
    case OP_SUBSCRIBED:
        ev_ready(c, s.start_seq, s.next_seq);
        break;
    case OP_ERR: {
        char m[256];
        int n = snprintf(m, sizeof(m), "%.*s: %.*s (ref %.*s)", (int)s.code_len, s.code,
                         (int)s.message_len, s.message, (int)s.ref_len, s.ref);
        ev_error(c, s.ref_is_int, s.ref_int, m, n > 0 ? (size_t)n : 0);
        break;
    }
    case OP_GAP:
        ev_gap(c, s.from, s.to);
        break;
    case OP_RESET:
        ev_error(c, false, 0, "reset", 5);
        break;
    case OP_PONG:
        break;
    default:
        ev_proto_error(c, "unknown op in: %.*s", (int)(len > 120 ? 120 : len), p);
        break;
    }
}

static void wsq_release(conn_t *c)
{
    wsq_priv_t *w = c->dp;
    if (w) {
        free(w->tmpl);
        free(w);
        c->dp = NULL;
    }
}

const driver_t drv_wsq = {
    .name = "wsq",
    .upgrade = wsq_upgrade,
    .on_open = wsq_on_open,
    .publish = wsq_publish,
    .on_message = wsq_on_message,
    .subscribe = wsq_subscribe,
    .unsubscribe = wsq_unsubscribe,
    .ack = wsq_ack,
    .ack_seq = wsq_ack_seq,
    .release = wsq_release,
};

const driver_t *driver_find(const char *name)
{
    if (strcmp(name, "wsq") == 0)
        return &drv_wsq;
    return NULL;
}
