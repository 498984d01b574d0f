/*
 * libFuzzer target for the MQTT codec foundations (proto/mqtt.c): the first byte picks the
 * protocol version (bit 0: 4 or 5) and the packet type the properties are read for (bits 1-5);
 * the rest is a byte stream, framed packet by packet as a connection would be, and each
 * packet's body read as a property block (and a CONNECT's as a CONNECT). Checks: framing never
 * claims more bytes than it has, a framed packet's header is 2..5 bytes, varints round-trip, and
 * the readers stay in bounds.
 *
 * Run: tools/fuzz.sh mqtt 600
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsq/mqtt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

static int each(void *arg, const wsq_mqtt_prop_t *p)
{
    size_t *n = arg;
    (*n)++;
    REQUIRE(p->id > 0 && p->id < 0x2b);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t version = (data[0] & 1) ? 5 : 4;
    unsigned type = (data[0] >> 1) & 0x1f;
    data++;
    size--;
    size_t off = 0;
    for (int packets = 0; packets < 64 && off < size; packets++) {
        wsq_mqtt_fixed_t f;
        wsq_mqtt_frame_rc rc = wsq_mqtt_frame(data + off, size - off, version, 4096, &f);
        if (rc != WSQ_MQTT_OK)
            break;
        REQUIRE(f.hdr_len >= 2 && f.hdr_len <= 5 && f.hdr_len + f.body_len <= size - off);
        uint8_t enc[4];
        size_t n = wsq_mqtt_varint_put((uint32_t)f.body_len, enc);
        REQUIRE(n == f.hdr_len - 1 && memcmp(enc, data + off + 1, n) == 0);
        const uint8_t *body = data + off + f.hdr_len;
        if (f.type == WSQ_MQTT_CONNECT) {
            wsq_mqtt_connect_t c;
            int crc = wsq_mqtt_decode_connect(body, f.body_len, &c);
            if (crc == 0) {
                REQUIRE(c.version == 4 || c.version == 5);
                REQUIRE(c.will_qos <= 2 && (c.will || (!c.will_qos && !c.will_retain)));
                const wsq_mqtt_view_t *v[] = {&c.client_id, &c.will_topic, &c.will_payload,
                                              &c.username, &c.password};
                for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
                    REQUIRE(v[i]->len == 0 ||
                            (v[i]->p >= body && v[i]->p + v[i]->len <= body + f.body_len));
            } else {
                REQUIRE(crc == WSQ_MQTT_RC_MALFORMED || crc == WSQ_MQTT_RC_PROTOCOL_ERROR ||
                        crc == WSQ_MQTT_RC_UNSUPPORTED_VERSION ||
                        crc == WSQ_MQTT_RC_BAD_AUTH_METHOD);
            }
        }
        wsq_mqtt_rd_t r;
        wsq_mqtt_rd_init(&r, body, f.body_len);
        size_t count = 0;
        int prc = wsq_mqtt_props(&r, type ? type : f.type, each, &count);
        REQUIRE(prc == 0 || prc == WSQ_MQTT_RC_MALFORMED || prc == WSQ_MQTT_RC_PROTOCOL_ERROR);
        REQUIRE(wsq_mqtt_rd_left(&r) <= f.body_len);
        wsq_mqtt_view_t s = wsq_mqtt_rd_str(&r);
        REQUIRE(r.bad || s.len <= f.body_len);
        off += f.hdr_len + f.body_len;
    }
    return 0;
}
