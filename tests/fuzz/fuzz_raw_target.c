/* Fuzz target: the raw-mode path and query parser, and the HTTP pull query parser (the same
 * query). Input: path, '\n', query. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsq/proto.h"
#include "wsq/topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *query = strchr(buf, '\n');
    if (query)
        *query++ = '\0';
    wsq_raw_target_t t;
    char err[160];
    if (wsq_raw_parse_target(buf, query, &t, err, sizeof(err)) == WSQ_OK) {
        if (!wsq_topic_valid(t.topic, t.topic_len) || strlen(t.topic) != t.topic_len)
            abort(); /* accepted targets name valid topics */
        wsq_raw_target_clear(&t);
    }
    wsq_pull_query_t q;
    if (wsq_pull_parse_query(query, &q, err, sizeof(err)) == WSQ_OK) {
        if (!wsq_topic_valid(q.topic, q.topic_len) || strlen(q.topic) != q.topic_len ||
            !wsq_consumer_valid(q.consumer, q.consumer_len) || q.max < 1 || q.max > WSQ_PULL_MAX ||
            q.wait_ms < 0 || q.wait_ms > WSQ_PULL_WAIT_MAX)
            abort(); /* what is accepted is within its bounds */
    }
    free(buf);
    return 0;
}
