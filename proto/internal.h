/*
 * What the sources of proto/ share privately; nothing else includes this header. The library's
 * API is include/wsq/proto.h (and http1.h, wsrx.h, route.h). Pure: no I/O, no globals.
 */
#ifndef WSQ_PROTO_INTERNAL_H
#define WSQ_PROTO_INTERNAL_H

/* Replaces every byte of the NUL-terminated s outside printable ASCII with '?'. Error messages
 * may quote client input (an op name, a jansson "near '...'") and end up in err frames and logs:
 * this keeps them valid UTF-8 even after a truncation split a multi-byte sequence. */
void wsq__sanitize_ascii(char *s);

#endif
