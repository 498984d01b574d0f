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
