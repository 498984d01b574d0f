/* Fuzz target: the raw-mode path and query parser. Input: path, '\n', query. */
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
    free(buf);
    return 0;
}
