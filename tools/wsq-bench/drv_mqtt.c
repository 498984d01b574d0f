/*
 * The MQTT driver: MQTT 3.1.1 over WebSocket (subprotocol "mqtt", binary frames), for Mosquitto.
 *
 * Every connection sends CONNECT with clean session 0 and its own client id, so every session is
 * persistent. wsq.v1 flavour (the default) is QoS 1 throughout:
 *   - publishers send PUBLISH QoS 1 with a packet id; the broker's PUBACK is the confirm;
 *   - subscribers SUBSCRIBE at QoS 1 and answer every PUBLISH with a PUBACK (the ack);
 *   - drain consumers are persistent sessions: at setup a side connection (same client id)
 *     connects, subscribes and disconnects; the preload is then queued by the broker for the
 *     offline session; when the drain starts the consumer connects with clean session 0 and
 *     receives the queued backlog.
 * Raw flavour (--mode raw / --sub-mode raw / --pub-mode raw) is QoS 0: no confirms, no acks.
 *
 * Hot path: a PUBLISH is a per-connection template (fixed header, topic, packet id, payload)
 * copied, stamped and given its packet id; received packets are parsed in place from the
 * WebSocket message (a packet split across messages is carried over in a small per-connection
 * buffer). PUBACKs of one WebSocket message go out as one frame. No allocation per message.
 *
 * MQTT has no sequence numbers: deliveries are reported with seq 0 and counted (drain) or
 * checked for order by the payload counter (fanout, latency).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "bench.h"

#define PID_SPACE 65535u /* packet ids 1..65535 */
#define KEEPALIVE 60     /* seconds; the bench sends no PINGREQ, runs are shorter than 1.5x this */

enum mstate { M_NONE, M_CONNECTING, M_SUBSCRIBING, M_UP };

typedef struct {
    uint8_t *tmpl; /* PUBLISH: fixed header, topic, [packet id], payload */
    size_t tmpl_len, pid_off, pay_off;
    uint8_t *in; /* a partial packet from the previous WebSocket message */
    size_t in_len, in_cap;
    uint16_t *pend; /* PUBACKs still to send */
    size_t pend_n, pend_cap;
    uint8_t st;
    bool qos1;   /* publishes / subscription at QoS 1 */
    bool resume; /* drain consumer: the session was primed, CONNECT happens at subscribe() */
    char cid[80];
} mqtt_t;

/* ------------------------------------------------------------------------------------------- */
/* Encoding                                                                                      */

static size_t varint(uint8_t *d, size_t v)
{
    size_t n = 0;
    do {
        uint8_t b = (uint8_t)(v & 0x7f);
        v >>= 7;
        d[n++] = (uint8_t)(b | (v ? 0x80 : 0));
    } while (v);
    return n;
}

/* CONNECT, clean session 0, no will, no credentials. Returns the length written to d. */
static size_t enc_connect(uint8_t *d, const char *cid)
{
    size_t cl = strlen(cid), rem = 10 + 2 + cl, n = 0;
    d[n++] = 0x10;
    n += varint(d + n, rem);
    static const uint8_t vh[] = {
        0, 4, 'M', 'Q', 'T', 'T', 4, 0x00, KEEPALIVE >> 8, KEEPALIVE & 255};
    memcpy(d + n, vh, sizeof(vh));
    n += sizeof(vh);
    d[n++] = (uint8_t)(cl >> 8);
    d[n++] = (uint8_t)cl;
    memcpy(d + n, cid, cl);
    return n + cl;
}

static size_t enc_subscribe(uint8_t *d, const char *topic, size_t tl, unsigned qos)
{
    size_t n = 0;
    d[n++] = 0x82;
    n += varint(d + n, 2 + 2 + tl + 1);
    d[n++] = 0;
    d[n++] = 1; /* packet id 1 */
    d[n++] = (uint8_t)(tl >> 8);
    d[n++] = (uint8_t)tl;
    memcpy(d + n, topic, tl);
    n += tl;
    d[n++] = (uint8_t)qos;
    return n;
}

static bool send_bin(conn_t *c, const uint8_t *p, size_t n)
{
    uint8_t *d = ws_frame_begin(c, 2, n);
    if (d == NULL)
        return false;
    memcpy(d, p, n);
    ws_frame_end(c, d, n);
    return true;
}

/* Packet id of publish id (ids from 1). */
static uint16_t pid_of(uint64_t id)
{
    return (uint16_t)((id - 1) % PID_SPACE + 1);
}

/* ------------------------------------------------------------------------------------------- */
/* The persistent session of a drain consumer, primed on a blocking side connection             */

static int send_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* One masked binary frame (fixed mask; the payload is short). */
static int send_frame(int fd, unsigned op, const uint8_t *p, size_t n)
{
    uint8_t b[1024];
    static const uint8_t mask[4] = {0x5a, 0xa5, 0x3c, 0xc3};
    if (n > sizeof(b) - 14)
        return -1;
    size_t h = 0;
    b[h++] = (uint8_t)(0x80 | op);
    if (n < 126) {
        b[h++] = (uint8_t)(0x80 | n);
    } else {
        b[h++] = 0x80 | 126;
        b[h++] = (uint8_t)(n >> 8);
        b[h++] = (uint8_t)n;
    }
    memcpy(b + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        b[h + i] = p[i] ^ mask[i & 3];
    return send_all(fd, b, h + n);
}

/* Connects as cid with clean session 0, subscribes to topic at QoS 1 and disconnects, so that the
 * broker queues what is published to topic until cid comes back. */
static int prime_session(const char *cid, const char *topic, char *err, size_t errcap)
{
    int fd = socket(g.o.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errcap, "socket: %s", strerror(errno));
        return -1;
    }
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    uint8_t buf[8192], mq[4096];
    size_t have = 0, mql = 0;
    int rc = -1;
    if (connect(fd, (const struct sockaddr *)&g.o.addr, g.o.addrlen) < 0) {
        snprintf(err, errcap, "connect: %s", strerror(errno));
        goto out;
    }
    int n = snprintf((char *)buf, sizeof(buf),
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: mqtt\r\n\r\n",
                     g.o.base_path[0] ? g.o.base_path : "/mqtt", g.o.host);
    if (n < 0 || (size_t)n >= sizeof(buf) || send_all(fd, buf, (size_t)n) < 0) {
        snprintf(err, errcap, "sending the upgrade failed");
        goto out;
    }
    uint8_t *eoh = NULL;
    while (eoh == NULL) {
        ssize_t k = recv(fd, buf + have, sizeof(buf) - have, 0);
        if (k <= 0) {
            snprintf(err, errcap, "upgrade: %s", k == 0 ? "EOF" : strerror(errno));
            goto out;
        }
        have += (size_t)k;
        eoh = memmem(buf, have, "\r\n\r\n", 4);
        if (eoh == NULL && have == sizeof(buf)) {
            snprintf(err, errcap, "upgrade response too long");
            goto out;
        }
    }
    if (have < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0) {
        snprintf(err, errcap, "upgrade refused: %.40s", (const char *)buf);
        goto out;
    }
    size_t off = (size_t)(eoh - buf) + 4;
    memmove(buf, buf + off, have - off);
    have -= off;
    uint8_t pk[600];
    size_t tl = strlen(topic);
    if (tl > 256) {
        snprintf(err, errcap, "topic too long");
        goto out;
    }
    size_t pl = enc_connect(pk, cid);
    pl += enc_subscribe(pk + pl, topic, tl, 1);
    if (send_frame(fd, 2, pk, pl) < 0) {
        snprintf(err, errcap, "send: %s", strerror(errno));
        goto out;
    }
    bool connacked = false, subacked = false;
    while (!subacked) {
        /* whole frames in buf -> MQTT bytes in mq */
        for (;;) {
            if (have < 2)
                break;
            size_t len = buf[1] & 0x7f, hl = 2;
            if (len == 126) {
                if (have < 4)
                    break;
                len = (size_t)buf[2] << 8 | buf[3];
                hl = 4;
            } else if (len == 127) {
                snprintf(err, errcap, "unexpected large frame");
                goto out;
            }
            if (have < hl + len)
                break;
            unsigned op = buf[0] & 0x0f;
            if (op == 8) {
                snprintf(err, errcap, "closed by the broker");
                goto out;
            }
            if ((op == 0 || op == 1 || op == 2) && mql + len <= sizeof(mq)) {
                memcpy(mq + mql, buf + hl, len);
                mql += len;
            }
            memmove(buf, buf + hl + len, have - hl - len);
            have -= hl + len;
        }
        /* MQTT packets in mq */
        size_t p = 0;
        while (mql - p >= 2) {
            size_t rem = 0, vl = 0;
            unsigned shift = 0;
            bool ok = false;
            while (1 + vl < mql - p && vl < 4) {
                uint8_t b = mq[p + 1 + vl++];
                rem |= (size_t)(b & 0x7f) << shift;
                shift += 7;
                if (!(b & 0x80)) {
                    ok = true;
                    break;
                }
            }
            if (!ok || mql - p < 1 + vl + rem)
                break;
            const uint8_t *body = mq + p + 1 + vl;
            if (mq[p] == 0x20) {
                if (rem < 2 || body[1] != 0) {
                    snprintf(err, errcap, "CONNACK refused (%u)", rem >= 2 ? body[1] : 255);
                    goto out;
                }
                connacked = true;
            } else if (mq[p] == 0x90) {
                if (rem < 3 || body[2] == 0x80) {
                    snprintf(err, errcap, "SUBACK refused");
                    goto out;
                }
                subacked = connacked;
            }
            p += 1 + vl + rem;
        }
        memmove(mq, mq + p, mql - p);
        mql -= p;
        if (subacked)
            break;
        ssize_t k = recv(fd, buf + have, sizeof(buf) - have, 0);
        if (k <= 0) {
            snprintf(err, errcap, "waiting for SUBACK: %s", k == 0 ? "EOF" : strerror(errno));
            goto out;
        }
        have += (size_t)k;
    }
    static const uint8_t disc[2] = {0xe0, 0x00};
    static const uint8_t bye[2] = {0x03, 0xe8};
    if (send_frame(fd, 2, disc, 2) < 0 || send_frame(fd, 8, bye, 2) < 0) {
        snprintf(err, errcap, "sending DISCONNECT failed");
        goto out;
    }
    /* wait for the broker to close, so that the session is offline before the preload */
    while (recv(fd, buf, sizeof(buf), 0) > 0)
        ;
    rc = 0;
out:
    close(fd);
    return rc;
}

/* ------------------------------------------------------------------------------------------- */
/* Driver                                                                                        */

static int mqtt_upgrade(conn_t *c, char *path, size_t cap, const char **subprotocol)
{
    int n = snprintf(path, cap, "%s", g.o.base_path[0] ? g.o.base_path : "/mqtt");
    if (n < 0 || (size_t)n >= cap)
        return -1;
    *subprotocol = "mqtt";
    mqtt_t *m = c->dp;
    if (m == NULL) {
        m = calloc(1, sizeof(*m));
        if (m == NULL)
            return -1;
        c->dp = m;
    }
    m->qos1 = c->flavor == FL_V1;
    c->confirms = m->qos1 && (c->role == R_PUB || c->role == R_RATE);
    if (c->consumer[0])
        snprintf(m->cid, sizeof(m->cid), "%s", c->consumer);
    else
        snprintf(m->cid, sizeof(m->cid), "wsqb-%s-p%u", g.run_id, c->idx);
    return 0;
}

static bool send_connect(conn_t *c)
{
    mqtt_t *m = c->dp;
    uint8_t b[160];
    if (!send_bin(c, b, enc_connect(b, m->cid)))
        return false;
    m->st = M_CONNECTING;
    return true;
}

static void mqtt_on_open(conn_t *c)
{
    mqtt_t *m = c->dp;
    if (c->role == R_PUB || c->role == R_RATE) {
        size_t tl = c->topic_len, size = (size_t)g.o.size;
        size_t rem = 2 + tl + (m->qos1 ? 2 : 0) + size;
        uint8_t hdr[8];
        size_t hl = 1 + varint(hdr + 1, rem);
        hdr[0] = m->qos1 ? 0x32 : 0x30;
        m->tmpl_len = hl + rem;
        m->tmpl = malloc(m->tmpl_len);
        if (m->tmpl == NULL) {
            ev_proto_error(c, "out of memory");
            return;
        }
        uint8_t *q = m->tmpl;
        memcpy(q, hdr, hl);
        q += hl;
        *q++ = (uint8_t)(tl >> 8);
        *q++ = (uint8_t)tl;
        memcpy(q, c->topic, tl);
        q += tl;
        m->pid_off = (size_t)(q - m->tmpl);
        if (m->qos1)
            q += 2;
        m->pay_off = (size_t)(q - m->tmpl);
        payload_write(q, size, 0, 0);
    }
    if (c->role == R_SUB && c->sub_pending) {
        /* drain consumer: a persistent session that is offline while the preload is queued */
        char err[200];
        if (prime_session(m->cid, c->topic, err, sizeof(err)) < 0) {
            ev_proto_error(c, "priming the session %s: %s", m->cid, err);
            return;
        }
        m->resume = true;
        ev_ready(c, 0, 0);
        return;
    }
    if (!send_connect(c)) {
        ev_proto_error(c, "no room for CONNECT");
        return;
    }
    if (c->role == R_SUB) {
        uint8_t b[300];
        if (c->topic_len > 256 ||
            !send_bin(c, b, enc_subscribe(b, c->topic, c->topic_len, m->qos1 ? 1 : 0)))
            ev_proto_error(c, "no room for SUBSCRIBE");
        m->st = M_SUBSCRIBING; /* ready at SUBACK */
    }
}

static bool mqtt_publish(conn_t *c, uint64_t id, uint64_t ts_ns, uint64_t ctr)
{
    mqtt_t *m = c->dp;
    if (m->qos1 && id - c->conf_id >= PID_SPACE - 1)
        return false; /* every packet id is in flight */
    uint8_t *p = ws_frame_begin(c, 2, m->tmpl_len);
    if (p == NULL)
        return false;
    memcpy(p, m->tmpl, m->tmpl_len);
    if (m->qos1) {
        uint16_t pid = pid_of(id);
        p[m->pid_off] = (uint8_t)(pid >> 8);
        p[m->pid_off + 1] = (uint8_t)pid;
    }
    if ((size_t)g.o.size >= PAYLOAD_STAMP)
        payload_write(p + m->pay_off, PAYLOAD_STAMP, ts_ns, ctr);
    ws_frame_end(c, p, m->tmpl_len);
    return true;
}

/* Writes the pending PUBACKs as one frame; what does not fit stays pending. */
static void flush_pubacks(conn_t *c, mqtt_t *m)
{
    if (m->pend_n == 0)
        return;
    size_t n = m->pend_n * 4;
    uint8_t *p = ws_frame_begin(c, 2, n);
    if (p == NULL)
        return;
    for (size_t i = 0; i < m->pend_n; i++) {
        p[4 * i] = 0x40;
        p[4 * i + 1] = 2;
        p[4 * i + 2] = (uint8_t)(m->pend[i] >> 8);
        p[4 * i + 3] = (uint8_t)m->pend[i];
    }
    ws_frame_end(c, p, n);
    ST_ADD(c->t, acks, m->pend_n);
    m->pend_n = 0;
}

static void queue_puback(conn_t *c, mqtt_t *m, uint16_t pid)
{
    if (m->pend_n == m->pend_cap) {
        size_t nc = m->pend_cap ? m->pend_cap * 2 : 1024;
        uint16_t *np = realloc(m->pend, nc * sizeof(*np));
        if (np == NULL) {
            ev_proto_error(c, "out of memory for PUBACKs");
            return;
        }
        m->pend = np;
        m->pend_cap = nc;
    }
    m->pend[m->pend_n++] = pid;
}

/* One whole packet: type byte, body (remaining length bytes). */
static void on_packet(conn_t *c, mqtt_t *m, uint8_t type, const uint8_t *b, size_t n)
{
    switch (type >> 4) {
    case 3: { /* PUBLISH */
        unsigned qos = (type >> 1) & 3;
        if (n < 2) {
            ev_proto_error(c, "short PUBLISH");
            return;
        }
        size_t tl = (size_t)b[0] << 8 | b[1], off = 2 + tl + (qos ? 2 : 0);
        if (off > n) {
            ev_proto_error(c, "bad PUBLISH");
            return;
        }
        ev_delivery(c, 0, b + off, n - off);
        if (qos == 1)
            queue_puback(c, m, (uint16_t)(b[2 + tl] << 8 | b[3 + tl]));
        else if (qos == 2)
            ev_proto_error(c, "QoS 2 delivery");
        return;
    }
    case 4: { /* PUBACK */
        if (n < 2 || !c->confirms) {
            ev_proto_error(c, "unexpected PUBACK");
            return;
        }
        uint16_t pid = (uint16_t)(b[0] << 8 | b[1]);
        uint64_t id = c->conf_id + (uint64_t)((pid + PID_SPACE - pid_of(c->conf_id)) % PID_SPACE);
        ev_confirm(c, id, 0);
        return;
    }
    case 2: /* CONNACK */
        if (n < 2 || b[1] != 0) {
            char e[64];
            int k = snprintf(e, sizeof(e), "CONNACK return code %u", n >= 2 ? b[1] : 255u);
            ev_error(c, false, 0, e, (size_t)k);
            return;
        }
        if (m->resume && !(b[0] & 1)) {
            static const char e[] = "CONNACK: session not present (the backlog is lost)";
            ev_error(c, false, 0, e, sizeof(e) - 1);
        }
        if (m->st == M_CONNECTING) {
            m->st = M_UP;
            ev_ready(c, 0, 0);
        }
        return;
    case 9: /* SUBACK */
        if (n < 3 || b[2] == 0x80) {
            static const char e[] = "SUBACK: subscription refused";
            ev_error(c, false, 0, e, sizeof(e) - 1);
            return;
        }
        if (m->st == M_SUBSCRIBING) {
            m->st = M_UP;
            ev_ready(c, 0, 0);
        }
        return;
    case 11: /* UNSUBACK */
    case 13: /* PINGRESP */
        return;
    default:
        ev_proto_error(c, "unexpected MQTT packet type %u", type >> 4);
    }
}

/* Parses whole packets in p; returns the bytes consumed. */
static size_t parse(conn_t *c, mqtt_t *m, const uint8_t *p, size_t len)
{
    size_t off = 0;
    while (len - off >= 2 && c->state != CS_DONE) {
        size_t rem = 0, vl = 0;
        unsigned shift = 0;
        bool ok = false;
        while (1 + vl < len - off && vl < 4) {
            uint8_t b = p[off + 1 + vl++];
            rem |= (size_t)(b & 0x7f) << shift;
            shift += 7;
            if (!(b & 0x80)) {
                ok = true;
                break;
            }
        }
        if (!ok) {
            if (vl == 4) {
                ev_proto_error(c, "bad remaining length");
                return len;
            }
            break;
        }
        if (len - off < 1 + vl + rem)
            break;
        on_packet(c, m, p[off], p + off + 1 + vl, rem);
        off += 1 + vl + rem;
    }
    return off;
}

static void mqtt_on_message(conn_t *c, unsigned opcode, const uint8_t *p, size_t len)
{
    (void)opcode;
    mqtt_t *m = c->dp;
    if (m->in_len == 0) {
        size_t k = parse(c, m, p, len);
        p += k;
        len -= k;
        if (len == 0)
            goto acks;
    }
    /* carry the partial packet (and, when one is already carried, everything) over */
    if (m->in_len + len > m->in_cap) {
        size_t nc = m->in_cap ? m->in_cap : 4096;
        while (nc < m->in_len + len)
            nc *= 2;
        uint8_t *nb = realloc(m->in, nc);
        if (nb == NULL) {
            ev_proto_error(c, "out of memory");
            return;
        }
        m->in = nb;
        m->in_cap = nc;
    }
    memcpy(m->in + m->in_len, p, len);
    m->in_len += len;
    if (m->in_len > len) { /* there was a carried part: parse the joined bytes */
        size_t k = parse(c, m, m->in, m->in_len);
        memmove(m->in, m->in + k, m->in_len - k);
        m->in_len -= k;
    }
acks:
    flush_pubacks(c, m);
}

static bool mqtt_subscribe(conn_t *c, bool resume)
{
    (void)resume;
    mqtt_t *m = c->dp;
    if (!m->resume)
        return true; /* subscribed at setup */
    /* the primed persistent session: reconnect with clean session 0, the backlog follows */
    return send_connect(c);
}

static bool mqtt_unsubscribe(conn_t *c)
{
    /* drain --resume: the session is already offline (primed at setup) */
    ev_unsubscribed(c);
    return true;
}

static bool mqtt_ack(conn_t *c, uint64_t upto)
{
    (void)c;
    (void)upto;
    return true; /* MQTT acks each message (PUBACK), sent as deliveries arrive */
}

static void mqtt_release(conn_t *c)
{
    mqtt_t *m = c->dp;
    if (m) {
        free(m->tmpl);
        free(m->in);
        free(m->pend);
        free(m);
        c->dp = NULL;
    }
}

const driver_t drv_mqtt = {
    .name = "mqtt",
    .upgrade = mqtt_upgrade,
    .on_open = mqtt_on_open,
    .publish = mqtt_publish,
    .on_message = mqtt_on_message,
    .subscribe = mqtt_subscribe,
    .unsubscribe = mqtt_unsubscribe,
    .ack = mqtt_ack,
    .release = mqtt_release,
};
