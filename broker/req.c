/* Request headers and query parameters (service thread). See req.h. */
#include <string.h>

#include "req.h"

/* Larger than any header value lws can hold (max_http_header_data is 65535). */
#define SCRATCH (64 * 1024 + 1)

wsq_err wsq__req_header(struct lws *wsi, enum lws_token_indexes h, char *buf, size_t len)
{
    int total = lws_hdr_total_length(wsi, h);
    buf[0] = '\0';
    if (total <= 0)
        return WSQ_ERR_NOTFOUND;
    if ((size_t)total >= len)
        return WSQ_ERR_TOO_LARGE;
    return lws_hdr_copy(wsi, buf, (int)len, h) >= 0 ? WSQ_OK : WSQ_ERR_TOO_LARGE;
}

wsq_err wsq__req_query(struct lws *wsi, const char *name, char *buf, size_t len)
{
    static char frag[SCRATCH]; /* service thread only */
    size_t nl = strlen(name);
    buf[0] = '\0';
    for (int i = 0;; i++) {
        int n = lws_hdr_copy_fragment(wsi, frag, (int)sizeof(frag), WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            return WSQ_ERR_NOTFOUND; /* no more parameters: none can be too long for frag */
        if ((size_t)n < nl + 1 || memcmp(frag, name, nl) != 0 || frag[nl] != '=')
            continue;
        size_t vl = (size_t)n - nl - 1;
        if (vl >= len)
            return WSQ_ERR_TOO_LARGE;
        memcpy(buf, frag + nl + 1, vl + 1);
        return WSQ_OK;
    }
}

size_t wsq__req_encode(const char *s, size_t n, char *out, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' || s[i] == '&') {
            if (o + 4 > len)
                return (size_t)-1;
            out[o++] = '%';
            out[o++] = '2';
            out[o++] = s[i] == '%' ? '5' : '6';
        } else {
            if (o + 2 > len)
                return (size_t)-1;
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return o;
}

wsq_err wsq__req_query_all(struct lws *wsi, char *buf, size_t len)
{
    static char frag[SCRATCH]; /* service thread only */
    size_t ql = 0;
    buf[0] = '\0';
    for (int i = 0;; i++) {
        int n = lws_hdr_copy_fragment(wsi, frag, (int)sizeof(frag), WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            return WSQ_OK;
        if (ql + 2 > len)
            return WSQ_ERR_TOO_LARGE;
        if (ql)
            buf[ql++] = '&';
        size_t e = wsq__req_encode(frag, (size_t)n, buf + ql, len - ql);
        if (e == (size_t)-1)
            return WSQ_ERR_TOO_LARGE;
        ql += e;
    }
}
