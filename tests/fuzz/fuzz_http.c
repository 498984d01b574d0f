/* Fuzz target: what wsqd parses of HTTP requests itself - the route of a path and the admin
 * import body (JSON Lines). First byte: method bits (GET, POST); then path, '\n', body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsq/route.h"
#include "wsq/topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static wsq_err count_msg(void *arg, const wsq_frame_t *f)
{
    if (f->op != WSQ_OP_PUB || !wsq_topic_valid(f->topic, f->topic_len))
        abort();
    (*(int *)arg)++;
    return WSQ_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    bool get = data[0] & 1, post = data[0] & 2;
    char *buf = malloc(size);
    if (buf == NULL)
        return 0;
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';
    char *nl = memchr(buf, '\n', size - 1);
    const char *body = "";
    size_t blen = 0;
    if (nl) {
        *nl = '\0';
        body = nl + 1;
        blen = size - 1 - (size_t)(body - buf);
    }
    wsq_route_t r;
    wsq_http_route(buf, get, post, &r);
    if ((r.kind == WSQ_ROUTE_PUBLISH || r.kind == WSQ_ROUTE_HISTORY) &&
        !wsq_topic_valid(r.topic, r.topic_len))
        abort();
    int n = 0;
    char msg[400];
    uint64_t lines = 0;
    wsq_import_parse(body, blen, 1 << 16, count_msg, &n, msg, sizeof(msg), &lines);
    if ((uint64_t)n != lines)
        abort();
    free(buf);
    return 0;
}
