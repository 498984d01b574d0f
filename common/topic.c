#include "wsq/topic.h"

#include <string.h>

#include "wsq/cstate.h"

static bool is_sep(char c)
{
    return c == '.' || c == '/';
}

/* Byte classes of topic names and patterns: one table lookup a byte (this runs several times
 * for every message published). */
enum { C_BAD = 0, C_NAME, C_SEP, C_WILD };
static const unsigned char cls[256] = {
    ['a'] = C_NAME, ['b'] = C_NAME, ['c'] = C_NAME, ['d'] = C_NAME, ['e'] = C_NAME, ['f'] = C_NAME,
    ['g'] = C_NAME, ['h'] = C_NAME, ['i'] = C_NAME, ['j'] = C_NAME, ['k'] = C_NAME, ['l'] = C_NAME,
    ['m'] = C_NAME, ['n'] = C_NAME, ['o'] = C_NAME, ['p'] = C_NAME, ['q'] = C_NAME, ['r'] = C_NAME,
    ['s'] = C_NAME, ['t'] = C_NAME, ['u'] = C_NAME, ['v'] = C_NAME, ['w'] = C_NAME, ['x'] = C_NAME,
    ['y'] = C_NAME, ['z'] = C_NAME, ['A'] = C_NAME, ['B'] = C_NAME, ['C'] = C_NAME, ['D'] = C_NAME,
    ['E'] = C_NAME, ['F'] = C_NAME, ['G'] = C_NAME, ['H'] = C_NAME, ['I'] = C_NAME, ['J'] = C_NAME,
    ['K'] = C_NAME, ['L'] = C_NAME, ['M'] = C_NAME, ['N'] = C_NAME, ['O'] = C_NAME, ['P'] = C_NAME,
    ['Q'] = C_NAME, ['R'] = C_NAME, ['S'] = C_NAME, ['T'] = C_NAME, ['U'] = C_NAME, ['V'] = C_NAME,
    ['W'] = C_NAME, ['X'] = C_NAME, ['Y'] = C_NAME, ['Z'] = C_NAME, ['0'] = C_NAME, ['1'] = C_NAME,
    ['2'] = C_NAME, ['3'] = C_NAME, ['4'] = C_NAME, ['5'] = C_NAME, ['6'] = C_NAME, ['7'] = C_NAME,
    ['8'] = C_NAME, ['9'] = C_NAME, ['-'] = C_NAME, ['_'] = C_NAME, ['.'] = C_SEP,  ['/'] = C_SEP,
    ['*'] = C_WILD, ['>'] = C_WILD,
};

/* Validates segments; when wild is true a whole segment may be '*' and the last may be '>'.
 * One tight loop over each segment's name bytes (the common case), then its separator. */
static bool valid(const char *str, size_t len, bool wild)
{
    if (len == 0 || len > WSQ_TOPIC_MAX)
        return false;
    const unsigned char *s = (const unsigned char *)str, *end = s + len;
    for (;;) {
        const unsigned char *seg = s;
        while (s < end && cls[*s] == C_NAME)
            s++;
        if (s == seg) { /* empty, or a wildcard segment */
            if (s == end || cls[*s] != C_WILD || !wild)
                return false;
            /* '*' or '>' alone in its segment; '>' only as the last */
            s++;
            if (s == end)
                return true;
            if (cls[*s] != C_SEP || s[-1] == '>')
                return false;
        } else if (s == end) {
            return true;
        } else if (cls[*s] != C_SEP) {
            return false; /* a bad byte, or a wildcard inside a name */
        }
        s++; /* the separator: a segment must follow */
        if (s == end)
            return false;
    }
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

bool wsq_consumer_valid(const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > WSQ_CONSUMER_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = cls[(unsigned char)name[i]];
        if (c != C_NAME && name[i] != '.')
            return false;
    }
    return true;
}

static bool template_name_char(char ch)
{
    return cls[(unsigned char)ch] == C_NAME || ch == '.';
}

bool wsq_topic_template_expand(const char *tmpl, const char *const *names, const char *const *vals,
                               size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = tmpl; *p;) {
        if (*p == '}')
            return false;
        if (*p != '{') {
            if (o + 1 >= cap)
                return false;
            out[o++] = *p++;
            continue;
        }
        const char *name = ++p;
        while (*p && template_name_char(*p))
            p++;
        size_t nl = (size_t)(p - name);
        if (*p != '}' || nl == 0 || nl > WSQ_TEMPLATE_NAME_MAX)
            return false;
        p++;
        const char *val = NULL;
        for (size_t i = 0; i < n; i++) {
            if (strlen(names[i]) == nl && memcmp(names[i], name, nl) == 0) {
                val = vals ? vals[i] : "x";
                break;
            }
        }
        if (val == NULL || *val == '\0')
            return false;
        for (const char *v = val; *v; v++) /* one segment: no separator, no wildcard */
            if (cls[(unsigned char)*v] != C_NAME)
                return false;
        size_t vl = strlen(val);
        if (o + vl >= cap)
            return false;
        memcpy(out + o, val, vl);
        o += vl;
    }
    out[o] = '\0';
    return wsq_topic_pattern_valid(out, o);
}
