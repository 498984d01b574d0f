/*
 * MQTT 3.1.1 and 5.0 wire codec (OASIS mqtt-v3.1.1 and mqtt-v5.0), the foundations: framing of
 * the byte stream into control packets, the field readers every packet decoder uses, and MQTT
 * 5.0 properties. Pure: bytes in, views or errors out; no allocation, no I/O; any thread.
 *
 * Views point into the caller's buffer and live as long as it does. Every function reads only
 * within the lengths it is given, whatever the bytes are (fuzzed: tests/fuzz/fuzz_mqtt.c).
 */
#ifndef WSQ_MQTT_H
#define WSQ_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Control packet types (the fixed header's high nibble). */
typedef enum {
    WSQ_MQTT_CONNECT = 1,
    WSQ_MQTT_CONNACK,
    WSQ_MQTT_PUBLISH,
    WSQ_MQTT_PUBACK,
    WSQ_MQTT_PUBREC,
    WSQ_MQTT_PUBREL,
    WSQ_MQTT_PUBCOMP,
    WSQ_MQTT_SUBSCRIBE,
    WSQ_MQTT_SUBACK,
    WSQ_MQTT_UNSUBSCRIBE,
    WSQ_MQTT_UNSUBACK,
    WSQ_MQTT_PINGREQ,
    WSQ_MQTT_PINGRESP,
    WSQ_MQTT_DISCONNECT,
    WSQ_MQTT_AUTH, /* 5.0 only */
} wsq_mqtt_type_t;

#define WSQ_MQTT_VARINT_MAX 268435455u /* the largest Remaining Length (4 bytes) */

/* MQTT 5.0 reason codes the codec itself reports. */
#define WSQ_MQTT_RC_MALFORMED 0x81
#define WSQ_MQTT_RC_PROTOCOL_ERROR 0x82
#define WSQ_MQTT_RC_PACKET_TOO_LARGE 0x95

/* ------------------------------------------------------------------------------------------- */
/* Framing */

typedef enum {
    WSQ_MQTT_NEED_MORE = 0, /* not a whole packet yet: read more bytes */
    WSQ_MQTT_OK,            /* one packet: buf[0..hdr_len) its fixed header, then body_len */
    WSQ_MQTT_BAD,           /* malformed: a Remaining Length of 5 bytes or not in the fewest
                             * bytes, reserved flags that are not the spec's, PUBLISH QoS 3,
                             * type 0 (or AUTH with version 4); close the connection */
    WSQ_MQTT_TOO_LARGE,     /* its size (header included) exceeds max_packet */
} wsq_mqtt_frame_rc;

typedef struct {
    wsq_mqtt_type_t type;
    uint8_t flags;   /* the low nibble (PUBLISH: DUP, QoS, RETAIN) */
    size_t hdr_len;  /* fixed header bytes: 2..5 */
    size_t body_len; /* Remaining Length */
} wsq_mqtt_fixed_t;

/* The first packet of buf[0..len) for protocol version (4 = 3.1.1, 5 = 5.0; 0 before CONNECT:
 * either). max_packet: 0 for no limit besides the protocol's. On WSQ_MQTT_TOO_LARGE *out holds
 * the header (to skip or to name the size). */
wsq_mqtt_frame_rc wsq_mqtt_frame(const uint8_t *buf, size_t len, uint8_t version, size_t max_packet,
                                 wsq_mqtt_fixed_t *out);

/* Writes a Variable Byte Integer (v <= WSQ_MQTT_VARINT_MAX) into out (4 bytes of room);
 * returns its length, 0 when v is too large. */
size_t wsq_mqtt_varint_put(uint32_t v, uint8_t *out);

/* ------------------------------------------------------------------------------------------- */
/* Field readers: a cursor over one packet's body. A failed read sets bad and reads nothing
 * more: decoders read everything, then check bad once. */

typedef struct {
    const uint8_t *p, *end;
    bool bad;
} wsq_mqtt_rd_t;

typedef struct {
    const uint8_t *p;
    size_t len;
} wsq_mqtt_view_t;

void wsq_mqtt_rd_init(wsq_mqtt_rd_t *r, const uint8_t *p, size_t len);
uint8_t wsq_mqtt_rd_u8(wsq_mqtt_rd_t *r);
uint16_t wsq_mqtt_rd_u16(wsq_mqtt_rd_t *r);
uint32_t wsq_mqtt_rd_u32(wsq_mqtt_rd_t *r);
/* A Variable Byte Integer in the fewest bytes (at most 4). */
uint32_t wsq_mqtt_rd_varint(wsq_mqtt_rd_t *r);
/* A UTF-8 Encoded String: a 2-byte length, then well-formed UTF-8 without U+0000 (MQTT-1.5.4-1,
 * -2); a string that breaks the rules is malformed. */
wsq_mqtt_view_t wsq_mqtt_rd_str(wsq_mqtt_rd_t *r);
/* Binary Data: a 2-byte length, then any bytes. */
wsq_mqtt_view_t wsq_mqtt_rd_bin(wsq_mqtt_rd_t *r);
/* Bytes left. */
size_t wsq_mqtt_rd_left(const wsq_mqtt_rd_t *r);

/* ------------------------------------------------------------------------------------------- */
/* MQTT 5.0 properties */

/* One property: its identifier and value (the member its type uses). */
typedef struct {
    uint32_t id;
    uint32_t num;         /* byte, two-byte, four-byte integer and varint properties */
    wsq_mqtt_view_t str;  /* UTF-8 string and binary properties; a user property's name */
    wsq_mqtt_view_t str2; /* a user property's value */
} wsq_mqtt_prop_t;

/* Reads a property block (its varint length, then the properties) from r for a packet of type
 * (WILL_PROPS for the will properties of CONNECT). Calls each(arg, prop) for every property in
 * order; each returns 0 to go on, or a reason code to stop with it. Returns 0, or a reason
 * code: WSQ_MQTT_RC_MALFORMED for a bad length, type or value, WSQ_MQTT_RC_PROTOCOL_ERROR for an
 * identifier not allowed in this packet or given twice (User Property may repeat, and so may
 * Subscription Identifier in PUBLISH). */
#define WSQ_MQTT_WILL_PROPS 16
int wsq_mqtt_props(wsq_mqtt_rd_t *r, unsigned type,
                   int (*each)(void *arg, const wsq_mqtt_prop_t *prop), void *arg);

/* ------------------------------------------------------------------------------------------- */
/* CONNECT (3.1.1 section 3.1, 5.0 section 3.1) */

#define WSQ_MQTT_RC_UNSUPPORTED_VERSION 0x84 /* 3.1.1: CONNACK return code 1 */
#define WSQ_MQTT_RC_BAD_AUTH_METHOD 0x8C

typedef struct {
    uint8_t version; /* 4 (3.1.1) or 5 */
    bool clean;      /* Clean Session (4) / Clean Start (5) */
    uint16_t keep_alive;
    wsq_mqtt_view_t client_id;
    bool will;
    uint8_t will_qos;
    bool will_retain;
    wsq_mqtt_view_t will_topic, will_payload;
    bool has_username, has_password;
    wsq_mqtt_view_t username, password;
    /* 5.0 properties (defaults when absent) */
    uint32_t session_expiry;  /* 0 */
    uint16_t receive_maximum; /* 65535 */
    uint32_t max_packet_size; /* 0: no limit */
    uint16_t topic_alias_max; /* 0 */
    bool request_response;    /* Request Response Information, default false */
    bool request_problem;     /* Request Problem Information, default true */
    uint32_t n_user_props;    /* User Properties (CONNECT) */
    /* will properties (5.0) */
    uint32_t will_delay; /* 0 */
    bool will_utf8;      /* Payload Format Indicator 1 */
    bool has_will_expiry;
    uint32_t will_expiry;
    wsq_mqtt_view_t will_content_type, will_response_topic, will_correlation;
} wsq_mqtt_connect_t;

/* Decodes a CONNECT body. Returns 0, or: WSQ_MQTT_RC_UNSUPPORTED_VERSION (a protocol name other
 * than "MQTT" or a level other than 4 and 5: answer CONNACK return code 1 / reason 0x84, with
 * the version the client asked for in out->version), WSQ_MQTT_RC_MALFORMED (a reserved flag, a
 * will QoS of 3, will flags without a will, 3.1.1's password without a user name, a bad field,
 * bytes left over), WSQ_MQTT_RC_PROTOCOL_ERROR (a property twice or out of place, a Receive
 * Maximum or Maximum Packet Size of 0, a request flag other than 0 or 1), or
 * WSQ_MQTT_RC_BAD_AUTH_METHOD (5.0 enhanced authentication, which wsq does not offer). */
int wsq_mqtt_decode_connect(const uint8_t *body, size_t len, wsq_mqtt_connect_t *out);

/* CONNACK: version 4 takes a return code (0..5), 5 a reason code and, when it is 0, these
 * properties. Writes the whole packet into out (cap bytes); returns its length, 0 when it does
 * not fit. */
typedef struct {
    wsq_mqtt_view_t assigned_client_id; /* empty: none */
    uint32_t session_expiry;            /* sent when the server changed it */
    bool send_session_expiry;
    uint16_t receive_maximum;                            /* 0: not sent (65535) */
    uint32_t max_packet_size;                            /* 0: not sent */
    uint16_t topic_alias_max;                            /* 0: not sent */
    uint16_t server_keep_alive;                          /* 0: not sent */
    bool no_retain, no_wildcards, no_sub_ids, no_shared; /* the "available" flags, sent as 0 */
    uint8_t max_qos;                                     /* 2: not sent */
} wsq_mqtt_connack_t;

size_t wsq_mqtt_encode_connack(uint8_t version, bool session_present, uint8_t code,
                               const wsq_mqtt_connack_t *ack, uint8_t *out, size_t cap);

#endif
