/* Fuzz target: the wsq.v1 client-frame decoder (fast path and full decoder must agree), the
 * client encoder round trip, and the server-frame decoder. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsq/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t maxp = size && data[0] & 1 ? 16 : 1 << 20;
    /* the same bytes as an /ack or /nack body */
    static wsq_pull_acks_t acks;
    char aerr[200];
    if (wsq_pull_parse_acks(data, size, size && data[0] & 2, &acks, aerr, sizeof(aerr)) == WSQ_OK) {
        if (acks.n < 1 || acks.n > WSQ_PULL_MAX || (acks.term && acks.delay_ms) ||
            acks.delay_ms < 0)
            abort();
        for (uint32_t i = 0; i < acks.n; i++)
            if (acks.seqs[i] == 0)
                abort();
    }
    wsq_frame_t a, b;
    wsq_proto_error_t ea, eb;
    wsq_err ra = wsq_proto_decode(data, size, maxp, &a, &ea);
    wsq_err rb = wsq__proto_decode_full(data, size, maxp, &b, &eb);
    if (ra != rb)
        abort(); /* the pub fast path disagrees with the full decoder */
    if (ra == WSQ_OK) {
        if (a.op != b.op || strcmp(a.ref, b.ref) != 0 || strcmp(a.topic, b.topic) != 0 ||
            a.data_len != b.data_len || a.binary != b.binary ||
            (a.data_len && memcmp(a.data, b.data, a.data_len) != 0) || a.id_len != b.id_len ||
            (a.id_len && strcmp(a.id, b.id) != 0) || a.headers_len != b.headers_len ||
            (a.headers_len && memcmp(a.headers, b.headers, a.headers_len) != 0) ||
            a.has_seq != b.has_seq || a.seq != b.seq || a.has_upto != b.has_upto ||
            a.upto != b.upto)
            abort();
        uint32_t nh;
        size_t hbytes;
        if (wsq_headers_check(a.headers, a.headers_len, &nh, &hbytes) != WSQ_OK ||
            nh != a.n_headers || hbytes != a.header_bytes)
            abort(); /* a decoded block is always well formed, and counted right */
        /* what decodes must encode, and decode again to the same frame */
        wsq_buf_t out;
        wsq_buf_init(&out);
        if (wsq_proto_encode_client(&a, &out) == WSQ_OK) {
            wsq_frame_t c;
            wsq_proto_error_t ec;
            if (wsq_proto_decode(out.data, out.len, maxp, &c, &ec) != WSQ_OK || c.op != a.op ||
                c.headers_len != a.headers_len ||
                (a.headers_len && memcmp(c.headers, a.headers, a.headers_len) != 0))
                abort();
            wsq_frame_clear(&c);
        }
        wsq_buf_fini(&out);
    } else if (ea.code != ra || memchr(ea.message, '\0', sizeof(ea.message)) == NULL) {
        abort();
    }
    wsq_frame_clear(&a);
    wsq_frame_clear(&b);

    wsq_server_frame_t s;
    memset(&s, 0, sizeof(s));
    wsq_proto_decode_server(data, size, &s);
    wsq_server_frame_clear(&s);
    return 0;
}
