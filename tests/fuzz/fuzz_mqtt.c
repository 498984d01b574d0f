/*
 * libFuzzer target for the MQTT codec foundations (proto/mqtt.c): the first byte picks the
 * protocol version (bit 0: 4 or 5) and the packet type the properties are read for (bits 1-5);
 * the rest is a byte stream, framed packet by packet as a connection would be, and each
 * packet's body read as a property block. Checks: framing never claims more bytes than it has,
 * a framed packet's header is 2..5 bytes, varints round-trip, and the readers stay in bounds.
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
        wsq_mqtt_rd_t r;
        wsq_mqtt_rd_init(&r, data + off + f.hdr_len, f.body_len);
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
