/* HTTP/1.1 request framing: see include/wsq/http1.h. Byte at a time, so that a head split
 * anywhere across reads frames the same as one read. */
#include <stdbool.h>
#include <string.h>

#include "wsq/http1.h"
#include "wsq/proto.h"

/* Where the next byte goes. */
enum {
    P_METHOD = 0,
    P_TARGET,
    P_VERSION,
    P_REQ_LF,
    P_LINE, /* first byte of a header line, or the CR of the empty line */
    P_NAME,
    P_VALUE,
    P_VALUE_LF,
    P_END_LF,
};

/* The methods lws serves; anything else is 501. Bodies: see head_done(). */
enum { M_GET = 1, M_HEAD, M_POST, M_PUT, M_DELETE, M_OPTIONS, M_PATCH };

/* The headers that frame a request. */
enum {
    H_OTHER = 0,
    H_CONTENT_LENGTH,
    H_TRANSFER_ENCODING,
    H_UPGRADE,
    H_HOST,
    H_WS_KEY,
    H_WS_VERSION,
};

/* flags */
#define F_CLEN 0x01       /* Content-Length seen */
#define F_TE 0x02         /* Transfer-Encoding seen */
#define F_WEBSOCKET 0x04  /* Upgrade names websocket */
#define F_HOST 0x08       /* Host seen */
#define F_QUERY 0x10      /* the target is in its query part */
#define F_HTTP10 0x20     /* HTTP/1.0 */
#define F_CLEN_DIGIT 0x40 /* the Content-Length value has a digit */
#define F_CLEN_END 0x80   /* the Content-Length value ended (trailing whitespace) */
#define F_UPGRADE 0x100   /* an Upgrade header */
#define F_WS_KEY 0x200    /* a non-empty Sec-WebSocket-Key */
#define F_WS_V13 0x400    /* Sec-WebSocket-Version: 13 */

/* vstate: a value matched exactly (after leading blanks), or not at all */
#define V_NOMATCH 0xff

#define CLEN_MAX (1ull << 53)

static size_t fail(wsq_h1_t *f, unsigned status, wsq_err code, const char *reason)
{
    f->state = WSQ_H1_ERROR;
    f->status = status;
    f->code = code;
    f->reason = reason;
    return 0;
}

static size_t bad(wsq_h1_t *f, const char *reason)
{
    return fail(f, 400, WSQ_ERR_BAD_REQUEST, reason);
}

void wsq_h1_init(wsq_h1_t *f, uint32_t max_head)
{
    memset(f, 0, sizeof(*f));
    f->max_head = max_head;
    f->state = WSQ_H1_HEAD;
}

void wsq_h1_injected(wsq_h1_t *f)
{
    if (!f->inject)
        return;
    f->inject = 0; /* the line is wsqd's, not the client's: it counts against no limit */
}

void wsq_h1_next(wsq_h1_t *f)
{
    if (f->state == WSQ_H1_DONE)
        wsq_h1_init(f, f->max_head);
}

/* RFC 9110 tchar */
static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* RFC 3986 characters of a path and query, '%' excepted */
static int is_target_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("-._~!$&'()*+,;=:@/?", c) != NULL;
}

static int method_of(const char *m)
{
    static const char *const names[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
    for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++)
        if (strcmp(m, names[i]) == 0)
            return i + 1;
    return 0;
}

static int header_of(const char *name)
{
    if (strcmp(name, "content-length") == 0)
        return H_CONTENT_LENGTH;
    if (strcmp(name, "transfer-encoding") == 0)
        return H_TRANSFER_ENCODING;
    if (strcmp(name, "upgrade") == 0)
        return H_UPGRADE;
    if (strcmp(name, "host") == 0)
        return H_HOST;
    if (strcmp(name, "sec-websocket-key") == 0)
        return H_WS_KEY;
    if (strcmp(name, "sec-websocket-version") == 0)
        return H_WS_VERSION;
    return H_OTHER;
}

/* The empty line: the head is complete; decide how the body is framed. */
static size_t head_done(wsq_h1_t *f)
{
    if (!(f->flags & F_HOST) && !(f->flags & F_HTTP10))
        return bad(f, "an HTTP/1.1 request needs a Host header");
    if (f->flags & F_TE)
        return fail(f, 411, WSQ_ERR_BAD_REQUEST,
                    "chunked request bodies are not accepted: send Content-Length");
    if (f->flags & F_UPGRADE) {
        /* lws answers other upgrades with its own HTML page, and tries h2c on clear text */
        if (!(f->flags & F_WEBSOCKET))
            return bad(f,
                       "wsqd speaks HTTP/1.1: the only Upgrade it accepts is websocket (no h2c)");
        if (f->method != M_GET || f->clen)
            return bad(f, "a WebSocket upgrade is a GET without a body");
        if (!(f->flags & F_WS_KEY) || !(f->flags & F_WS_V13))
            return bad(f, "a WebSocket upgrade needs Sec-WebSocket-Key and "
                          "Sec-WebSocket-Version: 13");
        f->state = WSQ_H1_UPGRADE;
        return 1;
    }
    f->body_left = f->clen;
    f->state = f->clen ? WSQ_H1_BODY : WSQ_H1_DONE;
    return 1;
}

/* The end of a header line: what the header said. */
static size_t header_done(wsq_h1_t *f)
{
    if (++f->nheaders > WSQ_H1_MAX_HEADERS)
        return fail(f, 431, WSQ_ERR_TOO_LARGE, "too many header lines (at most 64)");
    if (f->hname == H_CONTENT_LENGTH && !(f->flags & F_CLEN_DIGIT))
        return bad(f, "Content-Length must be a number");
    switch (f->hname) {
    case H_UPGRADE:
        if (f->flags & F_UPGRADE)
            return bad(f, "duplicate Upgrade");
        f->flags |= F_UPGRADE | (f->vstate == 9 ? F_WEBSOCKET : 0);
        break;
    case H_WS_VERSION:
        f->flags |= f->vstate == 2 ? F_WS_V13 : 0;
        break;
    case H_HOST:
        if (f->vstate == 0)
            return bad(f, "empty Host header");
        break;
    case H_WS_KEY:
        f->flags |= f->vstate ? F_WS_KEY : 0;
        break;
    default:
        break;
    }
    return 1;
}

/* vstate counts the bytes of want matched so far, any case; leading blanks are skipped, and
 * anything else (trailing blanks included) is V_NOMATCH for good. */
static size_t match(wsq_h1_t *f, unsigned char c, const char *want)
{
    unsigned char l = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
    if (f->vstate == V_NOMATCH || ((c == ' ' || c == '\t') && f->vstate == 0))
        return 1;
    f->vstate = f->vstate < strlen(want) && l == (unsigned char)want[f->vstate]
                    ? (uint8_t)(f->vstate + 1)
                    : V_NOMATCH;
    return 1;
}

/* One byte of a header value. */
static size_t value_byte(wsq_h1_t *f, unsigned char c)
{
    if ((c < 0x20 && c != '\t') || c == 0x7f)
        return bad(f, "control character in a header value");
    switch (f->hname) {
    case H_CONTENT_LENGTH:
        /* lws reads this value into 31 bytes and takes anything longer as no length at all:
         * both must agree on where the body ends */
        if (++f->sub > 24)
            return bad(f, "Content-Length value too long");
        if (c == ' ' || c == '\t') {
            if (f->flags & F_CLEN_DIGIT)
                f->flags |= F_CLEN_END;
            return 1;
        }
        if (c < '0' || c > '9' || (f->flags & F_CLEN_END))
            return bad(f, "Content-Length must be a number");
        f->clen = f->clen * 10 + (uint64_t)(c - '0');
        if (f->clen > CLEN_MAX)
            return fail(f, 413, WSQ_ERR_TOO_LARGE, "Content-Length is too large");
        f->flags |= F_CLEN_DIGIT;
        return 1;
    case H_HOST:
    case H_WS_KEY: /* vstate counts non-blank bytes */
        if (c != ' ' && c != '\t' && f->vstate < 254)
            f->vstate++;
        return 1;
    case H_UPGRADE: /* lws compares the whole value, any case */
        return match(f, c, "websocket");
    case H_WS_VERSION:
        return match(f, c, "13");
    default:
        return 1;
    }
}

/* A decoded byte of the path (not the query). lws rewrites "//", "/./" and "/../" before any
 * code of wsq sees the path ("a//b" would reach the router as "a/b"): no valid topic or
 * endpoint has an empty or dot segment, so such a path is refused rather than rewritten. c is
 * 0 at the end of the path. buf[0..1] hold the two bytes before. */
static size_t path_byte(wsq_h1_t *f, unsigned char c)
{
    unsigned char p1 = (unsigned char)f->buf[1], p2 = (unsigned char)f->buf[0];
    if (c == '/' && p1 == '/')
        return bad(f, "empty segment (//) in the request path");
    if (p1 == '.' && p2 == '/' && (c == '/' || c == '.' || c == 0))
        return bad(f, "dot segment (/. or /..) in the request path");
    f->buf[0] = (char)p1;
    f->buf[1] = (char)c;
    return 1;
}

/* One byte of the head. Returns 1, or 0 with state WSQ_H1_ERROR. */
static size_t head_byte(wsq_h1_t *f, unsigned char c)
{
    if (++f->head_len > f->max_head)
        return fail(f, 431, WSQ_ERR_TOO_LARGE, "request head larger than limits.max_header_size");
    switch (f->part) {
    case P_METHOD:
        if (c == ' ') {
            f->buf[f->buflen] = '\0';
            if (f->buflen == 0)
                return bad(f, "malformed request line");
            f->method = (uint8_t)method_of(f->buf);
            if (f->method == 0)
                return fail(f, 501, WSQ_ERR_BAD_REQUEST, "method not implemented");
            f->part = P_TARGET;
            f->buflen = 0;
            return 1;
        }
        if (c < 'A' || c > 'Z')
            return bad(f, "malformed request line");
        if (f->buflen >= 7)
            return fail(f, 501, WSQ_ERR_BAD_REQUEST, "method not implemented");
        f->buf[f->buflen++] = (char)c;
        return 1;
    case P_TARGET:
        if (f->sub == 0 && c != '/')
            return bad(f, "the request target must be a path starting with /");
        if (f->pct) { /* inside %XX */
            if (wsq_hexval(c) < 0)
                return bad(f, "malformed percent-escape in the request target");
            if (f->pct == 1) {
                f->pct = (uint8_t)(2 + wsq_hexval(c)); /* 2..17: the first digit, plus 2 */
                return 1;
            }
            if (f->pct == 2 && wsq_hexval(c) == 0)
                return bad(f, "NUL (%00) in the request target");
            unsigned char d = (unsigned char)((f->pct - 2) << 4 | wsq_hexval(c));
            f->pct = 0;
            return (f->flags & F_QUERY) ? 1 : path_byte(f, d);
        }
        if (c == ' ') {
            if (f->sub == 0)
                return bad(f, "malformed request line");
            if (!(f->flags & F_QUERY) && path_byte(f, 0) == 0)
                return 0;
            f->part = P_VERSION;
            f->buflen = 0;
            return 1;
        }
        if (f->sub == 0)
            f->buf[0] = f->buf[1] = 0;
        f->sub = 1;
        if (c == '%') {
            f->pct = 1;
            return 1;
        }
        if (!is_target_char(c))
            return bad(f, "character not allowed in the request target");
        if (c == '?' && !(f->flags & F_QUERY)) {
            if (path_byte(f, 0) == 0)
                return 0;
            f->flags |= F_QUERY;
            f->nparams = 1;
        } else if (!(f->flags & F_QUERY)) {
            return path_byte(f, c);
        } else if ((f->flags & F_QUERY) && (c == '&' || c == ';') &&
                   ++f->nparams > WSQ_H1_MAX_QUERY_PARAMS) {
            return bad(f, "too many query parameters (at most 24)");
        }
        return 1;
    case P_VERSION:
        if (c == '\r') {
            f->buf[f->buflen] = '\0';
            if (strcmp(f->buf, "HTTP/1.1") == 0)
                ;
            else if (strcmp(f->buf, "HTTP/1.0") == 0)
                f->flags |= F_HTTP10;
            else if (strncmp(f->buf, "HTTP/", 5) == 0 && f->buflen == 8 && f->buf[5] >= '0' &&
                     f->buf[5] <= '9' && f->buf[6] == '.' && f->buf[7] >= '0' && f->buf[7] <= '9')
                return fail(f, 505, WSQ_ERR_BAD_REQUEST, "HTTP version not supported");
            else
                return bad(f, "malformed request line");
            f->part = P_REQ_LF;
            return 1;
        }
        if (f->buflen >= 8 || c <= ' ' || c >= 0x7f)
            return bad(f, "malformed request line");
        f->buf[f->buflen++] = (char)c;
        return 1;
    case P_REQ_LF:
    case P_VALUE_LF:
        if (c != '\n')
            return bad(f, "bare CR in the request head");
        if (f->part == P_VALUE_LF && header_done(f) == 0)
            return 0;
        f->part = P_LINE;
        return 1;
    case P_LINE:
        if (c == '\r') {
            bool body_method = f->method == M_POST || f->method == M_PUT || f->method == M_PATCH;
            if (body_method && !(f->flags & (F_CLEN | F_TE))) { /* see inject in http1.h */
                f->flags |= F_CLEN | F_CLEN_DIGIT;
                f->inject = 1;
                f->head_len--; /* this byte comes again, after the injected line */
                return 0;
            }
            f->part = P_END_LF;
            return 1;
        }
        if (c == ' ' || c == '\t')
            return bad(f, "obsolete line folding in the request head");
        if (!is_tchar(c))
            return bad(f, c == '\n' ? "bare LF in the request head" : "malformed header line");
        f->part = P_NAME; /* c is the first byte of the name */
        f->sub = 0;
        f->buflen = 0;
        f->hname = H_OTHER;
        f->vstate = 0;
        /* fall through */
    case P_NAME:
        if (c == ':') {
            f->buf[f->buflen < sizeof(f->buf) ? f->buflen : 0] = '\0';
            f->hname = (uint8_t)(f->buflen < sizeof(f->buf) ? header_of(f->buf) : H_OTHER);
            if (f->hname == H_CONTENT_LENGTH) {
                if (f->flags & F_CLEN)
                    return bad(f, "duplicate Content-Length");
                f->flags |= F_CLEN;
            } else if (f->hname == H_TRANSFER_ENCODING) {
                f->flags |= F_TE;
            } else if (f->hname == H_HOST) {
                if (f->flags & F_HOST)
                    return bad(f, "duplicate Host");
                f->flags |= F_HOST;
            }
            f->part = P_VALUE;
            return 1;
        }
        if (!is_tchar(c))
            return bad(f, "malformed header line");
        if (f->buflen < sizeof(f->buf) - 1)
            f->buf[f->buflen++] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        else
            f->buflen = sizeof(f->buf); /* longer than any name we look for */
        return 1;
    case P_VALUE:
        if (c == '\r') {
            f->part = P_VALUE_LF;
            return 1;
        }
        return value_byte(f, c);
    case P_END_LF:
        if (c != '\n')
            return bad(f, "bare CR in the request head");
        return head_done(f);
    default:
        return bad(f, "malformed request head");
    }
}

size_t wsq_h1_feed(wsq_h1_t *f, const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (f->state == WSQ_H1_BODY) {
            size_t n = len - i < f->body_left ? len - i : (size_t)f->body_left;
            f->body_left -= n;
            i += n;
            if (f->body_left == 0)
                f->state = WSQ_H1_DONE;
            continue;
        }
        if (f->state != WSQ_H1_HEAD || f->inject)
            break;
        if (head_byte(f, p[i]) == 0)
            break; /* an error, or inject: the caller acts and feeds this byte again */
        i++;
    }
    return i;
}
