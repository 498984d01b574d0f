#include "wsq/topic.h"

#include <string.h>

static bool is_sep(char c)
{
    return c == '.' || c == '/';
}

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Validates segments; when wild is true a whole segment may be '*' and the last may be '>'. */
static bool valid(const char *s, size_t len, bool wild)
{
    if (len == 0 || len > WSQ_TOPIC_MAX)
        return false;
    size_t seg_start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && !is_sep(s[i])) {
            if (!is_name_char(s[i]) && !(wild && (s[i] == '*' || s[i] == '>')))
                return false;
            continue;
        }
        size_t seg_len = i - seg_start;
        if (seg_len == 0)
            return false;
        for (size_t j = seg_start; j < i; j++) {
            if (s[j] == '*' || s[j] == '>') {
                /* a wildcard must be the whole segment; '>' only as the last one */
                if (seg_len != 1 || (s[j] == '>' && i != len))
                    return false;
            }
        }
        seg_start = i + 1;
    }
    return true;
}

bool wsq_topic_valid(const char *name, size_t len)
{
    return name != NULL && valid(name, len, false);
}

bool wsq_topic_pattern_valid(const char *pattern, size_t plen)
{
    return pattern != NULL && valid(pattern, plen, true);
}

bool wsq_topic_match(const char *pattern, const char *name, size_t len)
{
    if (pattern == NULL || name == NULL)
        return false;
    size_t plen = strlen(pattern);
    if (!wsq_topic_pattern_valid(pattern, plen) || !wsq_topic_valid(name, len))
        return false;

    size_t p = 0, n = 0;
    while (p < plen) {
        if (pattern[p] == '>')
            return n < len; /* one or more remaining segments */
        if (pattern[p] == '*') {
            if (n >= len)
                return false;
            while (n < len && !is_sep(name[n]))
                n++;
            p++;
            continue;
        }
        if (n >= len || pattern[p] != name[n])
            return false;
        p++;
        n++;
    }
    return n == len;
}
