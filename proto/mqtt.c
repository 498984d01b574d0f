/* MQTT 3.1.1 / 5.0 codec foundations: see include/wsq/mqtt.h. */
#include "wsq/mqtt.h"

#include <string.h>

#include "wsq/proto.h"

/* ------------------------------------------------------------------------------------------- */
/* Framing */

/* Reads a Variable Byte Integer at p[0..len): its value and length; 0 when more bytes are
 * needed; -1 when malformed (a fifth byte, or more bytes than the value needs). */
static int varint(const uint8_t *p, size_t len, uint32_t *v)
{
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) {
        if ((size_t)i >= len)
            return 0;
        x |= (uint32_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            if (i > 0 && p[i] == 0)
                return -1; /* a trailing zero byte: not the fewest bytes */
            *v = x;
            return i + 1;
        }
    }
    return -1;
}

size_t wsq_mqtt_varint_put(uint32_t v, uint8_t *out)
{
    if (v > WSQ_MQTT_VARINT_MAX)
        return 0;
    size_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        out[n++] = (uint8_t)(b | (v ? 0x80 : 0));
    } while (v);
    return n;
}

wsq_mqtt_frame_rc wsq_mqtt_frame(const uint8_t *buf, size_t len, uint8_t version, size_t max_packet,
                                 wsq_mqtt_fixed_t *out)
{
    memset(out, 0, sizeof(*out));
    if (len < 2)
        return WSQ_MQTT_NEED_MORE;
    unsigned type = buf[0] >> 4, flags = buf[0] & 0x0f;
    if (type == 0 || (type == WSQ_MQTT_AUTH && version == 4))
        return WSQ_MQTT_BAD;
    /* the flags each type must carry (both versions, table 2.2 / 2-2) */
    unsigned want =
        type == WSQ_MQTT_PUBREL || type == WSQ_MQTT_SUBSCRIBE || type == WSQ_MQTT_UNSUBSCRIBE ? 0x2
                                                                                              : 0x0;
    if (type == WSQ_MQTT_PUBLISH ? ((flags >> 1) & 3) == 3 : flags != want)
        return WSQ_MQTT_BAD;
    uint32_t rl;
    int n = varint(buf + 1, len - 1, &rl);
    if (n < 0)
        return WSQ_MQTT_BAD;
    if (n == 0)
        return WSQ_MQTT_NEED_MORE;
    out->type = (wsq_mqtt_type_t)type;
    out->flags = (uint8_t)flags;
    out->hdr_len = 1 + (size_t)n;
    out->body_len = rl;
    if (max_packet && out->hdr_len + rl > max_packet)
        return WSQ_MQTT_TOO_LARGE;
    return len - out->hdr_len >= rl ? WSQ_MQTT_OK : WSQ_MQTT_NEED_MORE;
}

/* ------------------------------------------------------------------------------------------- */
/* Field readers */

void wsq_mqtt_rd_init(wsq_mqtt_rd_t *r, const uint8_t *p, size_t len)
{
    r->p = p;
    r->end = p + len;
    r->bad = false;
}

size_t wsq_mqtt_rd_left(const wsq_mqtt_rd_t *r)
{
    return r->bad ? 0 : (size_t)(r->end - r->p);
}

/* n bytes, or NULL (and bad) when fewer are left */
static const uint8_t *take(wsq_mqtt_rd_t *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}

uint8_t wsq_mqtt_rd_u8(wsq_mqtt_rd_t *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

uint16_t wsq_mqtt_rd_u16(wsq_mqtt_rd_t *r)
{
    const uint8_t *p = take(r, 2);
    return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}

uint32_t wsq_mqtt_rd_u32(wsq_mqtt_rd_t *r)
{
    const uint8_t *p = take(r, 4);
    return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}

uint32_t wsq_mqtt_rd_varint(wsq_mqtt_rd_t *r)
{
    uint32_t v = 0;
    int n = r->bad ? -1 : varint(r->p, (size_t)(r->end - r->p), &v);
    if (n <= 0) { /* (inside a packet, "more bytes" means a truncated field) */
        r->bad = true;
        return 0;
    }
    r->p += n;
    return v;
}

wsq_mqtt_view_t wsq_mqtt_rd_bin(wsq_mqtt_rd_t *r)
{
    wsq_mqtt_view_t v = {NULL, wsq_mqtt_rd_u16(r)};
    v.p = take(r, v.len);
    if (v.p == NULL)
        v.len = 0;
    return v;
}

wsq_mqtt_view_t wsq_mqtt_rd_str(wsq_mqtt_rd_t *r)
{
    wsq_mqtt_view_t v = wsq_mqtt_rd_bin(r);
    if (!r->bad && (memchr(v.p, 0, v.len) != NULL || !wsq_utf8_valid(v.p, v.len))) {
        r->bad = true; /* U+0000, or not UTF-8 (surrogates and overlongs included) */
        v.p = NULL;
        v.len = 0;
    }
    return v;
}

/* ------------------------------------------------------------------------------------------- */
/* Properties (MQTT 5.0 section 2.2.2.2) */

enum { P_BYTE = 1, P_U16, P_U32, P_VARINT, P_STR, P_BIN, P_PAIR };

#define T(t) (1u << (t))
#define WILL T(WSQ_MQTT_WILL_PROPS)
#define ACKS                                                                                       \
    (T(WSQ_MQTT_PUBACK) | T(WSQ_MQTT_PUBREC) | T(WSQ_MQTT_PUBREL) | T(WSQ_MQTT_PUBCOMP) |          \
     T(WSQ_MQTT_SUBACK) | T(WSQ_MQTT_UNSUBACK))

static const struct {
    uint8_t kind;
    uint32_t where; /* T(packet types) that may carry it */
} props[0x2b] = {
    [0x01] = {P_BYTE, T(WSQ_MQTT_PUBLISH) | WILL},                    /* Payload Format Indicator */
    [0x02] = {P_U32, T(WSQ_MQTT_PUBLISH) | WILL},                     /* Message Expiry Interval */
    [0x03] = {P_STR, T(WSQ_MQTT_PUBLISH) | WILL},                     /* Content Type */
    [0x08] = {P_STR, T(WSQ_MQTT_PUBLISH) | WILL},                     /* Response Topic */
    [0x09] = {P_BIN, T(WSQ_MQTT_PUBLISH) | WILL},                     /* Correlation Data */
    [0x0B] = {P_VARINT, T(WSQ_MQTT_PUBLISH) | T(WSQ_MQTT_SUBSCRIBE)}, /* Subscription Identifier */
    [0x11] = {P_U32, T(WSQ_MQTT_CONNECT) | T(WSQ_MQTT_CONNACK) | T(WSQ_MQTT_DISCONNECT)},
    [0x12] = {P_STR, T(WSQ_MQTT_CONNACK)}, /* Assigned Client Identifier */
    [0x13] = {P_U16, T(WSQ_MQTT_CONNACK)}, /* Server Keep Alive */
    [0x15] = {P_STR,
              T(WSQ_MQTT_CONNECT) | T(WSQ_MQTT_CONNACK) | T(WSQ_MQTT_AUTH)}, /* Auth Method */
    [0x16] = {P_BIN, T(WSQ_MQTT_CONNECT) | T(WSQ_MQTT_CONNACK) | T(WSQ_MQTT_AUTH)}, /* Auth Data */
    [0x17] = {P_BYTE, T(WSQ_MQTT_CONNECT)}, /* Request Problem Information */
    [0x18] = {P_U32, WILL},                 /* Will Delay Interval */
    [0x19] = {P_BYTE, T(WSQ_MQTT_CONNECT)}, /* Request Response Information */
    [0x1A] = {P_STR, T(WSQ_MQTT_CONNACK)},  /* Response Information */
    [0x1C] = {P_STR, T(WSQ_MQTT_CONNACK) | T(WSQ_MQTT_DISCONNECT)}, /* Server Reference */
    [0x1F] = {P_STR, T(WSQ_MQTT_CONNACK) | ACKS | T(WSQ_MQTT_DISCONNECT) | T(WSQ_MQTT_AUTH)},
    [0x21] = {P_U16, T(WSQ_MQTT_CONNECT) | T(WSQ_MQTT_CONNACK)}, /* Receive Maximum */
    [0x22] = {P_U16, T(WSQ_MQTT_CONNECT) | T(WSQ_MQTT_CONNACK)}, /* Topic Alias Maximum */
    [0x23] = {P_U16, T(WSQ_MQTT_PUBLISH)},                       /* Topic Alias */
    [0x24] = {P_BYTE, T(WSQ_MQTT_CONNACK)},                      /* Maximum QoS */
    [0x25] = {P_BYTE, T(WSQ_MQTT_CONNACK)},                      /* Retain Available */
    [0x26] = {P_PAIR, 0xffffffffu},                              /* User Property: any */
    [0x27] = {P_U32, T(WSQ_MQTT_CONNECT) | T(WSQ_MQTT_CONNACK)}, /* Maximum Packet Size */
    [0x28] = {P_BYTE, T(WSQ_MQTT_CONNACK)}, /* Wildcard Subscription Available */
    [0x29] = {P_BYTE, T(WSQ_MQTT_CONNACK)}, /* Subscription Identifier Available */
    [0x2A] = {P_BYTE, T(WSQ_MQTT_CONNACK)}, /* Shared Subscription Available */
};

int wsq_mqtt_props(wsq_mqtt_rd_t *r, unsigned type,
                   int (*each)(void *arg, const wsq_mqtt_prop_t *prop), void *arg)
{
    uint32_t len = wsq_mqtt_rd_varint(r);
    if (r->bad || wsq_mqtt_rd_left(r) < len) {
        r->bad = true;
        return WSQ_MQTT_RC_MALFORMED;
    }
    wsq_mqtt_rd_t pr;
    wsq_mqtt_rd_init(&pr, r->p, len);
    r->p += len;
    uint64_t seen = 0;
    while (wsq_mqtt_rd_left(&pr) > 0) {
        wsq_mqtt_prop_t p = {0};
        p.id = wsq_mqtt_rd_varint(&pr);
        if (pr.bad)
            return WSQ_MQTT_RC_MALFORMED;
        if (p.id >= sizeof(props) / sizeof(props[0]) || props[p.id].kind == 0)
            return WSQ_MQTT_RC_MALFORMED; /* no such property */
        if (type >= 32 || !(props[p.id].where & T(type)))
            return WSQ_MQTT_RC_PROTOCOL_ERROR;
        bool repeats = p.id == 0x26 || (p.id == 0x0B && type == WSQ_MQTT_PUBLISH);
        if (!repeats && (seen & (1ull << p.id)))
            return WSQ_MQTT_RC_PROTOCOL_ERROR;
        seen |= 1ull << p.id;
        switch (props[p.id].kind) {
        case P_BYTE:
            p.num = wsq_mqtt_rd_u8(&pr);
            break;
        case P_U16:
            p.num = wsq_mqtt_rd_u16(&pr);
            break;
        case P_U32:
            p.num = wsq_mqtt_rd_u32(&pr);
            break;
        case P_VARINT:
            p.num = wsq_mqtt_rd_varint(&pr);
            break;
        case P_STR:
            p.str = wsq_mqtt_rd_str(&pr);
            break;
        case P_BIN:
            p.str = wsq_mqtt_rd_bin(&pr);
            break;
        default: /* P_PAIR */
            p.str = wsq_mqtt_rd_str(&pr);
            p.str2 = wsq_mqtt_rd_str(&pr);
            break;
        }
        if (pr.bad)
            return WSQ_MQTT_RC_MALFORMED;
        int rc = each ? each(arg, &p) : 0;
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* CONNECT / CONNACK */

static int connect_prop(void *arg, const wsq_mqtt_prop_t *p)
{
    wsq_mqtt_connect_t *c = arg;
    switch (p->id) {
    case 0x11:
        c->session_expiry = p->num;
        break;
    case 0x21:
        if (p->num == 0)
            return WSQ_MQTT_RC_PROTOCOL_ERROR;
        c->receive_maximum = (uint16_t)p->num;
        break;
    case 0x27:
        if (p->num == 0)
            return WSQ_MQTT_RC_PROTOCOL_ERROR;
        c->max_packet_size = p->num;
        break;
    case 0x22:
        c->topic_alias_max = (uint16_t)p->num;
        break;
    case 0x19:
    case 0x17:
        if (p->num > 1)
            return WSQ_MQTT_RC_PROTOCOL_ERROR;
        if (p->id == 0x19)
            c->request_response = p->num == 1;
        else
            c->request_problem = p->num == 1;
        break;
    case 0x15:
    case 0x16:
        return WSQ_MQTT_RC_BAD_AUTH_METHOD; /* enhanced authentication is not offered */
    case 0x26:
        c->n_user_props++;
        break;
    default:
        break;
    }
    return 0;
}

static int will_prop(void *arg, const wsq_mqtt_prop_t *p)
{
    wsq_mqtt_connect_t *c = arg;
    switch (p->id) {
    case 0x18:
        c->will_delay = p->num;
        break;
    case 0x01:
        if (p->num > 1)
            return WSQ_MQTT_RC_PROTOCOL_ERROR;
        c->will_utf8 = p->num == 1;
        break;
    case 0x02:
        c->has_will_expiry = true;
        c->will_expiry = p->num;
        break;
    case 0x03:
        c->will_content_type = p->str;
        break;
    case 0x08:
        c->will_response_topic = p->str;
        break;
    case 0x09:
        c->will_correlation = p->str;
        break;
    default:
        break;
    }
    return 0;
}

int wsq_mqtt_decode_connect(const uint8_t *body, size_t len, wsq_mqtt_connect_t *out)
{
    memset(out, 0, sizeof(*out));
    out->receive_maximum = 65535;
    out->request_problem = true;
    wsq_mqtt_rd_t r;
    wsq_mqtt_rd_init(&r, body, len);
    wsq_mqtt_view_t name = wsq_mqtt_rd_str(&r);
    uint8_t level = wsq_mqtt_rd_u8(&r);
    if (r.bad)
        return WSQ_MQTT_RC_MALFORMED;
    out->version = level;
    if (name.len != 4 || memcmp(name.p, "MQTT", 4) != 0 || (level != 4 && level != 5))
        return WSQ_MQTT_RC_UNSUPPORTED_VERSION; /* "MQIsdp" (3.1) included */
    uint8_t flags = wsq_mqtt_rd_u8(&r);
    out->keep_alive = wsq_mqtt_rd_u16(&r);
    if (r.bad || (flags & 0x01))
        return WSQ_MQTT_RC_MALFORMED; /* the reserved flag must be 0 */
    out->clean = flags & 0x02;
    out->will = flags & 0x04;
    out->will_qos = (flags >> 3) & 3;
    out->will_retain = flags & 0x20;
    out->has_password = flags & 0x40;
    out->has_username = flags & 0x80;
    if (out->will_qos == 3 || (!out->will && (out->will_qos || out->will_retain)))
        return WSQ_MQTT_RC_MALFORMED;
    if (level == 4 && out->has_password && !out->has_username)
        return WSQ_MQTT_RC_MALFORMED; /* MQTT-3.1.2-22 */
    int rc;
    if (level == 5 && (rc = wsq_mqtt_props(&r, WSQ_MQTT_CONNECT, connect_prop, out)) != 0)
        return rc;
    out->client_id = wsq_mqtt_rd_str(&r);
    if (out->will) {
        if (level == 5 && (rc = wsq_mqtt_props(&r, WSQ_MQTT_WILL_PROPS, will_prop, out)) != 0)
            return rc;
        out->will_topic = wsq_mqtt_rd_str(&r);
        out->will_payload = wsq_mqtt_rd_bin(&r);
    }
    if (out->has_username)
        out->username = wsq_mqtt_rd_str(&r);
    if (out->has_password)
        out->password = wsq_mqtt_rd_bin(&r);
    if (r.bad || wsq_mqtt_rd_left(&r) != 0)
        return WSQ_MQTT_RC_MALFORMED;
    return 0;
}

/* A small writer with a sticky overflow. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} wr_t;

static void w_u8(wr_t *w, uint8_t v)
{
    if (w->n < w->cap)
        w->p[w->n] = v;
    w->n++;
}

static void w_u16(wr_t *w, uint16_t v)
{
    w_u8(w, (uint8_t)(v >> 8));
    w_u8(w, (uint8_t)v);
}

static void w_u32(wr_t *w, uint32_t v)
{
    w_u16(w, (uint16_t)(v >> 16));
    w_u16(w, (uint16_t)v);
}

size_t wsq_mqtt_encode_connack(uint8_t version, bool session_present, uint8_t code,
                               const wsq_mqtt_connack_t *ack, uint8_t *out, size_t cap)
{
    uint8_t pr[512];
    wr_t p = {pr, 0, sizeof(pr)};
    if (version == 5 && code == 0 && ack != NULL) {
        const wsq_mqtt_connack_t *c = ack;
        if (c->assigned_client_id.len) {
            w_u8(&p, 0x12);
            w_u16(&p, (uint16_t)c->assigned_client_id.len);
            for (size_t i = 0; i < c->assigned_client_id.len; i++)
                w_u8(&p, c->assigned_client_id.p[i]);
        }
        if (c->send_session_expiry) {
            w_u8(&p, 0x11);
            w_u32(&p, c->session_expiry);
        }
        if (c->receive_maximum) {
            w_u8(&p, 0x21);
            w_u16(&p, c->receive_maximum);
        }
        if (c->max_packet_size) {
            w_u8(&p, 0x27);
            w_u32(&p, c->max_packet_size);
        }
        if (c->topic_alias_max) {
            w_u8(&p, 0x22);
            w_u16(&p, c->topic_alias_max);
        }
        if (c->server_keep_alive) {
            w_u8(&p, 0x13);
            w_u16(&p, c->server_keep_alive);
        }
        if (c->max_qos < 2) {
            w_u8(&p, 0x24);
            w_u8(&p, c->max_qos);
        }
        const struct {
            bool off;
            uint8_t id;
        } avail[] = {{c->no_retain, 0x25},
                     {c->no_wildcards, 0x28},
                     {c->no_sub_ids, 0x29},
                     {c->no_shared, 0x2A}};
        for (size_t i = 0; i < sizeof(avail) / sizeof(avail[0]); i++) {
            if (avail[i].off) {
                w_u8(&p, avail[i].id);
                w_u8(&p, 0);
            }
        }
    }
    if (p.n > p.cap)
        return 0;
    uint8_t plen[4];
    size_t pl = version == 5 ? wsq_mqtt_varint_put((uint32_t)p.n, plen) : 0;
    uint32_t rl = (uint32_t)(2 + pl + p.n);
    wr_t w = {out, 0, cap};
    w_u8(&w, WSQ_MQTT_CONNACK << 4);
    uint8_t rlb[4];
    size_t rn = wsq_mqtt_varint_put(rl, rlb);
    for (size_t i = 0; i < rn; i++)
        w_u8(&w, rlb[i]);
    w_u8(&w, session_present && code == 0 ? 1 : 0); /* never present with a refusal */
    w_u8(&w, code);
    for (size_t i = 0; i < pl; i++)
        w_u8(&w, plen[i]);
    for (size_t i = 0; i < p.n; i++)
        w_u8(&w, pr[i]);
    return w.n <= cap ? w.n : 0;
}
