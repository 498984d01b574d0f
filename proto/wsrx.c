/* WebSocket client-frame scanner: see include/wsq/wsrx.h. */
#include <string.h>

#include "wsq/wsrx.h"

enum { W_B0 = 0, W_B1, W_EXT, W_MASK, W_PAYLOAD };

void wsq_wsrx_init(wsq_wsrx_t *w)
{
    memset(w, 0, sizeof(*w));
}

/* The header is complete: the payload follows (or the next frame, for an empty one). */
static void header_done(wsq_wsrx_t *w)
{
    w->skip = w->len;
    w->part = w->skip ? W_PAYLOAD : W_B0;
}

size_t wsq_wsrx_scan(wsq_wsrx_t *w, const uint8_t *p, size_t len)
{
    if (w->unmasked)
        return 0;
    size_t i = 0;
    while (i < len) {
        if (w->part == W_B0 && len - i >= 14) {
            /* a whole header is here (at most 14 bytes): read it at once, skip the payload */
            const uint8_t *h = p + i;
            if (!(h[1] & 0x80)) {
                w->unmasked = true;
                return i + 1;
            }
            uint64_t n = h[1] & 0x7f;
            size_t hl = 6;
            if (n == 126) {
                n = (uint64_t)h[2] << 8 | h[3];
                hl = 8;
            } else if (n == 127) {
                n = 0;
                for (int k = 2; k < 10; k++)
                    n = n << 8 | h[k];
                hl = 14;
            }
            i += hl;
            size_t skip = len - i < n ? len - i : (size_t)n;
            i += skip;
            w->skip = n - skip;
            w->part = w->skip ? W_PAYLOAD : W_B0;
            continue;
        }
        switch (w->part) {
        case W_B0:
            w->part = W_B1;
            i++;
            break;
        case W_B1:
            if (!(p[i] & 0x80)) {
                w->unmasked = true;
                return i;
            }
            w->len = p[i] & 0x7f;
            if (w->len == 126 || w->len == 127) {
                w->left = w->len == 126 ? 2 : 8;
                w->len = 0;
                w->part = W_EXT;
            } else {
                w->left = 4;
                w->part = W_MASK;
            }
            i++;
            break;
        case W_EXT:
            w->len = w->len << 8 | p[i++];
            if (--w->left == 0) {
                w->left = 4;
                w->part = W_MASK;
            }
            break;
        case W_MASK:
            i++;
            if (--w->left == 0)
                header_done(w);
            break;
        default: { /* W_PAYLOAD */
            size_t n = len - i < w->skip ? len - i : (size_t)w->skip;
            w->skip -= n;
            i += n;
            if (w->skip == 0)
                w->part = W_B0;
            break;
        }
        }
    }
    return i;
}
