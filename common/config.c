/*
 * Configuration: YAML text -> wsq_config_t, with libyaml's document API.
 *
 * Shape: every section is one function that first checks its mapping against the keys it knows
 * (map_keys: unknown keys, duplicate keys and non-string keys are errors there) and then reads each
 * present key with a typed getter. Defaults are set before parsing, so a key that is absent keeps
 * its default and the order of keys in the file never matters. Cross-key rules (idle_timeout >
 * ping_interval, ...) run after their section and point at the key the user most likely got wrong.
 *
 * Every error goes through cfg_fail(), which writes "source:line:col: dotted.key: message" with
 * the 1-based position of the offending node. Secrets (token hashes, JWT secrets) are never
 * echoed into messages, because config errors end up in logs.
 *
 * The parser is pure except for auth.jwt.secret_file, which is read while parsing so that a bad
 * secret fails the load (and `wsqd --check-config`) rather than the first JWT. A relative
 * secret_file is resolved against the directory part of the `source` name, which is the config's
 * path when wsq_config_load() is the caller (and the working directory for "<default>").
 *
 * Why one file of ~1,800 lines: each section is short, and all of them use the same node
 * getters, cfg_fail() and the defaults; splitting them would put those in a header for no
 * reader's benefit.
 */
#include "wsq/config.h"
#include "wsq/jwt.h"
#include "wsq/topic.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)
#define TiB ((uint64_t)1 << 40)

#define SEC ((int64_t)1000)
#define MINUTE (60 * SEC)
#define HOUR (60 * MINUTE)
#define DAY (24 * HOUR)

#define CONFIG_FILE_MAX (16 * MiB) /* a config is a few KiB; anything this large is a mistake */
#define SECRET_FILE_MAX (64 * KiB)
#define KEY_FILE_MAX (1024 * KiB) /* a PEM or JWKS file */
#define JWT_SECRET_MIN 32         /* HS256: RFC 7518 asks for a key at least as long as the hash */
#define TOKEN_NAME_MAX 63         /* fits the 64-byte identity name of broker/broker.h */
#define PATH_LEN 192              /* dotted key paths in messages; longer ones are truncated */
#define SHOW_MAX 48               /* echoed values are cut after this many bytes */
#define MAP_KEYS_MAX 24

/* SHA-256 of the empty string: what `printf %s $TOKEN | sha256sum` prints when TOKEN is unset. */
static const char empty_sha256[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/* ---------------------------------------------------------------------------------------------
 * Numbers with units. Shared by the config getters and the public wsq_parse_* functions.
 */

typedef enum {
    NUM_OK = 0,
    NUM_SYNTAX,   /* not digits[suffix] */
    NUM_NEGATIVE, /* starts with '-' */
    NUM_FRACTION, /* has a '.' after the digits */
    NUM_OVERFLOW, /* does not fit */
} num_status;

typedef struct {
    const char *suffix;
    uint64_t mult;
} unit_t;

static const unit_t size_units[] = {
    {"", 1},
    {"B", 1},
    {"KiB", KiB},
    {"MiB", MiB},
    {"GiB", GiB},
    {"TiB", TiB},
    {"KB", 1000},
    {"MB", 1000 * 1000},
    {"GB", 1000 * 1000 * 1000},
    {"TB", (uint64_t)1000 * 1000 * 1000 * 1000},
};

static const unit_t duration_units[] = {
    {"", 1}, {"ms", 1}, {"s", SEC}, {"m", MINUTE}, {"h", HOUR}, {"d", DAY},
};

/* Decimal digits, no sign, no leading zero (YAML 1.1 reads 010 as octal: refuse the ambiguity). */
static num_status parse_digits(const char **sp, uint64_t *out)
{
    const char *s = *sp;
    uint64_t v = 0;
    if (*s == '-')
        return NUM_NEGATIVE;
    if (*s < '0' || *s > '9')
        return NUM_SYNTAX;
    if (s[0] == '0' && s[1] >= '0' && s[1] <= '9')
        return NUM_SYNTAX;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return NUM_OVERFLOW;
        v = v * 10 + d;
    }
    *sp = s;
    *out = v;
    return NUM_OK;
}

static num_status parse_unit(const char *s, const unit_t *units, size_t n, uint64_t max,
                             uint64_t *out)
{
    uint64_t v;
    if (s == NULL)
        return NUM_SYNTAX;
    num_status st = parse_digits(&s, &v);
    if (st == NUM_OVERFLOW) {
        /* "99999999999999999999xyz" is a syntax error first */
        while (*s >= '0' && *s <= '9')
            s++;
        for (size_t i = 0; i < n; i++)
            if (strcmp(s, units[i].suffix) == 0)
                return NUM_OVERFLOW;
        return *s == '.' ? NUM_FRACTION : NUM_SYNTAX;
    }
    if (st != NUM_OK)
        return st;
    if (*s == '.')
        return NUM_FRACTION;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, units[i].suffix) == 0) {
            if (v > max / units[i].mult)
                return NUM_OVERFLOW;
            *out = v * units[i].mult;
            return NUM_OK;
        }
    }
    return NUM_SYNTAX;
}

static num_status parse_size_st(const char *s, uint64_t *out)
{
    return parse_unit(s, size_units, ARRAY_LEN(size_units), UINT64_MAX, out);
}

static num_status parse_duration_st(const char *s, int64_t *out)
{
    uint64_t v;
    num_status st = parse_unit(s, duration_units, ARRAY_LEN(duration_units), INT64_MAX, &v);
    if (st == NUM_OK)
        *out = (int64_t)v;
    return st;
}

wsq_err wsq_parse_size(const char *s, uint64_t *out)
{
    uint64_t v;
    if (out == NULL || parse_size_st(s, &v) != NUM_OK)
        return WSQ_ERR_INVAL;
    *out = v;
    return WSQ_OK;
}

wsq_err wsq_parse_duration_ms(const char *s, int64_t *out)
{
    int64_t v;
    if (out == NULL || parse_duration_st(s, &v) != NUM_OK)
        return WSQ_ERR_INVAL;
    *out = v;
    return WSQ_OK;
}

/* Formats a size with the largest binary unit that divides it exactly ("64MiB", "1500B"). */
static const char *fmt_size(uint64_t v, char *buf, size_t len)
{
    static const unit_t u[] = {{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}};
    for (size_t i = 0; i < ARRAY_LEN(u); i++) {
        if (v != 0 && v % u[i].mult == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(v / u[i].mult), u[i].suffix);
            return buf;
        }
    }
    snprintf(buf, len, v == 0 ? "0" : "%lluB", (unsigned long long)v);
    return buf;
}

static const char *fmt_duration(int64_t v, char *buf, size_t len)
{
    static const struct {
        const char *suffix;
        int64_t mult;
    } u[] = {{"d", DAY}, {"h", HOUR}, {"m", MINUTE}, {"s", SEC}};
    for (size_t i = 0; i < ARRAY_LEN(u); i++) {
        if (v != 0 && v % u[i].mult == 0) {
            snprintf(buf, len, "%lld%s", (long long)(v / u[i].mult), u[i].suffix);
            return buf;
        }
    }
    snprintf(buf, len, v == 0 ? "0" : "%lldms", (long long)v);
    return buf;
}

typedef enum {
    RANGE_INT,
    RANGE_SIZE,
    RANGE_DURATION,
} range_kind;

/* "lo..hi", or "" when the range is everything the type holds. */
static const char *fmt_range(range_kind kind, uint64_t min, uint64_t max, char *buf, size_t len)
{
    char lo[32], hi[32];
    switch (kind) {
    case RANGE_INT:
        if (min == 0 && max == UINT64_MAX)
            return "";
        snprintf(lo, sizeof(lo), "%llu", (unsigned long long)min);
        snprintf(hi, sizeof(hi), "%llu", (unsigned long long)max);
        break;
    case RANGE_SIZE:
        if (min == 0 && max == UINT64_MAX)
            return "";
        fmt_size(min, lo, sizeof(lo));
        fmt_size(max, hi, sizeof(hi));
        break;
    case RANGE_DURATION:
        if (min == 0 && max == INT64_MAX)
            return "";
        fmt_duration((int64_t)min, lo, sizeof(lo));
        fmt_duration((int64_t)max, hi, sizeof(hi));
        break;
    }
    snprintf(buf, len, "%s..%s", lo, hi);
    return buf;
}

/* ---------------------------------------------------------------------------------------------
 * Parser context and error reporting.
 */

typedef struct {
    yaml_document_t *doc;
    const char *source;  /* names the text in messages */
    const char *basedir; /* resolves relative auth.jwt.secret_file; "." when source has no dir */
    char *err;
    size_t errlen;
} cfg_ctx_t;

static void errf(cfg_ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void errf(cfg_ctx_t *c, const char *fmt, ...)
{
    if (c->errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
}

/* Writes "source:line:col: parent.key: message". key may be NULL; parent may be "". */
static wsq_err cfg_fail(cfg_ctx_t *c, const yaml_node_t *n, const char *parent, const char *key,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static wsq_err cfg_fail(cfg_ctx_t *c, const yaml_node_t *n, const char *parent, const char *key,
                        const char *fmt, ...)
{
    if (c->errlen == 0)
        return WSQ_ERR_BAD_CONFIG;
    const char *dot = key != NULL && parent[0] != '\0' ? "." : "";
    /* no key path at all (a bad key at the top level): "source:line:col: message" */
    const char *sep = key != NULL || parent[0] != '\0' ? ": " : "";
    int k = snprintf(c->err, c->errlen, "%s:%zu:%zu: %s%s%s%s", c->source,
                     (size_t)n->start_mark.line + 1, (size_t)n->start_mark.column + 1, parent, dot,
                     key != NULL ? key : "", sep);
    if (k >= 0 && (size_t)k < c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return WSQ_ERR_BAD_CONFIG;
}

static wsq_err cfg_nomem(cfg_ctx_t *c)
{
    errf(c, "%s: out of memory", c->source);
    return WSQ_ERR_NOMEM;
}

static void path_key(char *dst, const char *parent, const char *key)
{
    int n = snprintf(dst, PATH_LEN, "%s%s%s", parent, parent[0] != '\0' ? "." : "", key);
    if (n < 0 || n >= PATH_LEN)
        memcpy(dst + PATH_LEN - 4, "...", 4); /* absurdly deep keys: keep the start */
}

static void path_idx(char *dst, const char *parent, size_t i)
{
    int n = snprintf(dst, PATH_LEN, "%s[%zu]", parent, i);
    if (n < 0 || n >= PATH_LEN)
        memcpy(dst + PATH_LEN - 4, "...", 4);
}

static yaml_node_t *node_at(cfg_ctx_t *c, int index)
{
    return yaml_document_get_node(c->doc, index);
}

static const char *sval(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static size_t slen(const yaml_node_t *n)
{
    return n->data.scalar.length;
}

static bool is_plain(const yaml_node_t *n)
{
    return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* YAML 1.2 core schema nulls: an empty plain value, ~, null, Null, NULL. */
static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || !is_plain(n))
        return false;
    const char *s = sval(n);
    return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

/* Copies at most SHOW_MAX bytes of s, escaping anything that is not printable ASCII. */
static void quote(const char *s, size_t len, char *buf, size_t buflen)
{
    size_t o = 0;
    if (buflen < 8)
        return;
    buf[o++] = '\'';
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (i == SHOW_MAX || o + 8 >= buflen) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
            buf[o++] = (char)ch;
        } else {
            o += (size_t)snprintf(buf + o, buflen - o, "\\x%02x", ch);
        }
    }
    buf[o++] = '\'';
    buf[o] = '\0';
}

/* What the user wrote, for "got ..." in messages. */
static const char *show(const yaml_node_t *n, char *buf, size_t len)
{
    switch (n->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_SCALAR_NODE:
        if (is_null(n))
            return "null";
        quote(sval(n), slen(n), buf, len);
        return buf;
    default:
        return "nothing";
    }
}

/* Levenshtein distance for "did you mean". Both strings are short keys. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[MAP_KEYS_MAX * 2 + 1];
    if (la > 40 || lb > 2 * MAP_KEYS_MAX)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* ---------------------------------------------------------------------------------------------
 * Mappings: the one place where keys are checked.
 */

/*
 * Checks that `map` (at `path`) is a mapping whose keys are distinct strings from keys[], and
 * stores each key's value node in vals[] (NULL when absent). A null value stands for an empty
 * mapping ("storage:" with every key commented out).
 */
static wsq_err map_keys(cfg_ctx_t *c, yaml_node_t *map, const char *path, const char *const *keys,
                        size_t nkeys, yaml_node_t **vals)
{
    yaml_node_t *key_nodes[MAP_KEYS_MAX] = {0};
    char buf[PATH_LEN], shown[SHOW_MAX * 4 + 8];

    assert(nkeys <= MAP_KEYS_MAX);

    for (size_t i = 0; i < nkeys; i++)
        vals[i] = NULL;
    if (map == NULL || is_null(map))
        return WSQ_OK;
    if (map->type != YAML_MAPPING_NODE)
        return cfg_fail(c, map, path, NULL, "expected a mapping; got %s",
                        show(map, shown, sizeof(shown)));

    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(c, p->key);
        yaml_node_t *v = node_at(c, p->value);
        if (k == NULL || v == NULL)
            return cfg_fail(c, map, path, NULL, "malformed mapping");
        if (k->type != YAML_SCALAR_NODE)
            return cfg_fail(c, k, path, NULL, "keys must be plain strings; got %s",
                            show(k, shown, sizeof(shown)));
        size_t i;
        for (i = 0; i < nkeys; i++)
            if (slen(k) == strlen(keys[i]) && memcmp(sval(k), keys[i], slen(k)) == 0)
                break;
        if (i == nkeys) {
            char valid[512] = "";
            const char *guess = NULL;
            size_t best = 3; /* suggest only close matches */
            for (size_t j = 0; j < nkeys; j++) {
                size_t d = edit_distance(sval(k), keys[j]);
                /* an abbreviation ("iss" for "issuer") is as good as one typo */
                if (slen(k) >= 3 && strncmp(keys[j], sval(k), slen(k)) == 0 && d > 1)
                    d = 1;
                if (d < best) {
                    best = d;
                    guess = keys[j];
                }
                size_t used = strlen(valid);
                snprintf(valid + used, sizeof(valid) - used, "%s%s", j ? ", " : "", keys[j]);
            }
            /* the key itself goes into the path, made safe to print */
            quote(sval(k), slen(k), shown, sizeof(shown));
            shown[strlen(shown) - 1] = '\0';
            path_key(buf, path, shown + 1);
            if (guess != NULL)
                return cfg_fail(c, k, buf, NULL,
                                "unknown key (did you mean '%s'?); valid keys are: %s", guess,
                                valid);
            return cfg_fail(c, k, buf, NULL, "unknown key; valid keys are: %s", valid);
        }
        if (key_nodes[i] != NULL) {
            path_key(buf, path, keys[i]);
            return cfg_fail(c, k, buf, NULL, "duplicate key (first set at line %zu)",
                            (size_t)key_nodes[i]->start_mark.line + 1);
        }
        key_nodes[i] = k;
        vals[i] = v;
    }
    return WSQ_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Typed getters. Each takes the value node, the path of its mapping and its key.
 */

static wsq_err get_str(cfg_ctx_t *c, yaml_node_t *n, const char *parent, const char *key,
                       char **out)
{
    char shown[SHOW_MAX * 4 + 8];
    if (n->type != YAML_SCALAR_NODE || is_null(n))
        return cfg_fail(c, n, parent, key, "expected a string; got %s",
                        show(n, shown, sizeof(shown)));
    if (slen(n) == 0)
        return cfg_fail(c, n, parent, key, "must not be empty");
    if (memchr(sval(n), '\0', slen(n)) != NULL)
        return cfg_fail(c, n, parent, key, "must not contain a NUL byte");
    char *s = strndup(sval(n), slen(n));
    if (s == NULL)
        return cfg_nomem(c);
    free(*out);
    *out = s;
    return WSQ_OK;
}

static wsq_err get_bool(cfg_ctx_t *c, yaml_node_t *n, const char *parent, const char *key,
                        bool *out)
{
    char shown[SHOW_MAX * 4 + 8];
    if (n->type == YAML_SCALAR_NODE && is_plain(n)) {
        if (strcmp(sval(n), "true") == 0) {
            *out = true;
            return WSQ_OK;
        }
        if (strcmp(sval(n), "false") == 0) {
            *out = false;
            return WSQ_OK;
        }
    }
    return cfg_fail(c, n, parent, key, "expected true or false; got %s%s",
                    show(n, shown, sizeof(shown)),
                    n->type == YAML_SCALAR_NODE && !is_plain(n) ? " (a quoted string)" : "");
}

static wsq_err get_uint(cfg_ctx_t *c, yaml_node_t *n, const char *parent, const char *key,
                        uint64_t min, uint64_t max, uint64_t *out)
{
    char shown[SHOW_MAX * 4 + 8], range[80];
    const char *r = fmt_range(RANGE_INT, min, max, range, sizeof(range));
    const char *in = r[0] != '\0' ? " in " : "";
    const char *got = show(n, shown, sizeof(shown));
    uint64_t v = 0;
    num_status st = NUM_SYNTAX;

    if (n->type == YAML_SCALAR_NODE && !is_null(n) && !is_plain(n))
        return cfg_fail(c, n, parent, key,
                        "expected an integer%s%s; got the string %s (remove the quotes)", in, r,
                        got);
    if (n->type == YAML_SCALAR_NODE && !is_null(n)) {
        const char *s = sval(n);
        st = parse_digits(&s, &v);
        if (st == NUM_OK && *s != '\0')
            st = NUM_SYNTAX;
    }
    if (st == NUM_OVERFLOW || (st == NUM_OK && (v < min || v > max)))
        return r[0] != '\0'
                   ? cfg_fail(c, n, parent, key, "out of range: allowed %s; got %s", r, got)
                   : cfg_fail(c, n, parent, key, "out of range: too large; got %s", got);
    if (st == NUM_NEGATIVE)
        return cfg_fail(c, n, parent, key, "expected a non-negative integer%s%s; got %s", in, r,
                        got);
    if (st != NUM_OK)
        return cfg_fail(
            c, n, parent, key, "expected an integer%s%s%s; got %s", in, r,
            n->type == YAML_SCALAR_NODE && !is_null(n) ? " (decimal digits, no leading zero)" : "",
            got);
    *out = v;
    return WSQ_OK;
}

static wsq_err get_u32(cfg_ctx_t *c, yaml_node_t *n, const char *parent, const char *key,
                       uint32_t min, uint32_t max, uint32_t *out)
{
    uint64_t v;
    wsq_err rc = get_uint(c, n, parent, key, min, max, &v);
    if (rc == WSQ_OK)
        *out = (uint32_t)v;
    return rc;
}

static const char *num_hint(num_status st)
{
    switch (st) {
    case NUM_NEGATIVE:
        return " (must not be negative)";
    case NUM_FRACTION:
        return " (whole numbers only: use a smaller unit)";
    default:
        return "";
    }
}

static wsq_err get_size(cfg_ctx_t *c, yaml_node_t *n, const char *parent, const char *key,
                        uint64_t min, uint64_t max, uint64_t *out)
{
    char shown[SHOW_MAX * 4 + 8], range[80];
    const char *r = fmt_range(RANGE_SIZE, min, max, range, sizeof(range));
    const char *got = show(n, shown, sizeof(shown));
    uint64_t v = 0;
    num_status st = NUM_SYNTAX;

    if (n->type == YAML_SCALAR_NODE && !is_null(n))
        st = parse_size_st(sval(n), &v);
    if (st == NUM_OVERFLOW || (st == NUM_OK && (v < min || v > max)))
        return r[0] != '\0'
                   ? cfg_fail(c, n, parent, key, "out of range: allowed %s; got %s", r, got)
                   : cfg_fail(c, n, parent, key, "out of range: too large; got %s", got);
    if (st != NUM_OK)
        return cfg_fail(c, n, parent, key,
                        "expected a size%s%s: bytes, or an integer with a suffix B, KiB, MiB, "
                        "GiB, TiB, KB, MB, GB, TB (e.g. 64MiB); got %s%s",
                        r[0] != '\0' ? " in " : "", r, got, num_hint(st));
    *out = v;
    return WSQ_OK;
}

static wsq_err get_size32(cfg_ctx_t *c, yaml_node_t *n, const char *parent, const char *key,
                          uint32_t min, uint32_t max, uint32_t *out)
{
    uint64_t v;
    wsq_err rc = get_size(c, n, parent, key, min, max, &v);
    if (rc == WSQ_OK)
        *out = (uint32_t)v;
    return rc;
}

static wsq_err get_duration(cfg_ctx_t *c, yaml_node_t *n, const char *parent, const char *key,
                            int64_t min, int64_t max, int64_t *out)
{
    char shown[SHOW_MAX * 4 + 8], range[80];
    const char *r = fmt_range(RANGE_DURATION, (uint64_t)min, (uint64_t)max, range, sizeof(range));
    const char *got = show(n, shown, sizeof(shown));
    int64_t v = 0;
    num_status st = NUM_SYNTAX;

    if (n->type == YAML_SCALAR_NODE && !is_null(n))
        st = parse_duration_st(sval(n), &v);
    if (st == NUM_OVERFLOW || (st == NUM_OK && (v < min || v > max)))
        return r[0] != '\0'
                   ? cfg_fail(c, n, parent, key, "out of range: allowed %s; got %s", r, got)
                   : cfg_fail(c, n, parent, key, "out of range: too large; got %s", got);
    if (st != NUM_OK)
        return cfg_fail(c, n, parent, key,
                        "expected a duration%s%s: milliseconds, or an integer with a suffix ms, "
                        "s, m, h, d (e.g. 30s); got %s%s",
                        r[0] != '\0' ? " in " : "", r, got, num_hint(st));
    *out = v;
    return WSQ_OK;
}

static wsq_err get_enum(cfg_ctx_t *c, yaml_node_t *n, const char *parent, const char *key,
                        const char *const *names, size_t count, int *out)
{
    char shown[SHOW_MAX * 4 + 8], list[128] = "";
    *out = 0; /* written on every path: the callers' -O3 builds cannot see that they read it only
               * on success */
    if (n->type == YAML_SCALAR_NODE && !is_null(n)) {
        for (size_t i = 0; i < count; i++) {
            if (strcmp(sval(n), names[i]) == 0) {
                *out = (int)i;
                return WSQ_OK;
            }
        }
    }
    for (size_t i = 0; i < count; i++) {
        size_t used = strlen(list);
        snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", names[i]);
    }
    return cfg_fail(c, n, parent, key, "expected one of %s; got %s", list,
                    show(n, shown, sizeof(shown)));
}

static void strlist_free(wsq_strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

typedef enum {
    ITEM_STRING,
    ITEM_PATTERN,
    ITEM_ORIGIN,
    ITEM_TEMPLATE, /* a pattern that may hold {claim} placeholders */
} item_kind;

#define TEMPLATE_NAMES_MAX 8 /* placeholders in one pattern */

/* Adds the placeholder names of template t to acc (once each); false when t has more than
 * TEMPLATE_NAMES_MAX or a malformed one (the shape check then fails anyway). */
static bool template_names(const char *t, wsq_strlist_t *acc, bool *nomem)
{
    size_t found = 0;
    for (const char *p = strchr(t, '{'); p != NULL; p = strchr(p + 1, '{')) {
        const char *e = strchr(p, '}');
        if (e == NULL || ++found > TEMPLATE_NAMES_MAX)
            return false;
        size_t n = (size_t)(e - p - 1);
        bool have = false;
        for (size_t i = 0; i < acc->n && !have; i++)
            have = strlen(acc->items[i]) == n && memcmp(acc->items[i], p + 1, n) == 0;
        if (have)
            continue;
        char **items = realloc(acc->items, (acc->n + 1) * sizeof(*items));
        if (items == NULL || (items[acc->n] = strndup(p + 1, n)) == NULL) {
            if (items != NULL)
                acc->items = items;
            *nomem = true;
            return false;
        }
        acc->items = items;
        acc->n++;
    }
    return true;
}

/* A template's shape: every placeholder well formed, and a valid pattern with values in. */
static bool template_ok(const char *t, bool *nomem)
{
    wsq_strlist_t names = {0};
    char out[WSQ_TOPIC_MAX + 1];
    bool ok = template_names(t, &names, nomem) &&
              wsq_topic_template_expand(t, (const char *const *)names.items, NULL, names.n, out,
                                        sizeof(out));
    strlist_free(&names);
    return ok;
}

/* A browser sends Origin as scheme://host[:port], lowercase, without a path or trailing slash;
 * anything else can never match, so it is refused here instead of silently locking users out. */
static const char *origin_problem(const char *s)
{
    const char *host;
    if (strcmp(s, "*") == 0 || strcmp(s, "null") == 0)
        return NULL; /* any origin; the origin of sandboxed and file:// pages */
    if (strncmp(s, "https://", 8) == 0)
        host = s + 8;
    else if (strncmp(s, "http://", 7) == 0)
        host = s + 7;
    else
        return "expected scheme://host[:port] with scheme http or https";
    if (*host == '\0')
        return "the host is missing";
    for (const char *p = host; *p; p++) {
        if (*p == '/')
            return "an origin has no path and no trailing slash";
        if (*p >= 'A' && *p <= 'Z')
            return "browsers send origins in lowercase";
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return "an origin has no spaces or non-ASCII characters (use punycode)";
    }
    return NULL;
}

static wsq_err get_list(cfg_ctx_t *c, yaml_node_t *n, const char *parent, const char *key,
                        item_kind kind, wsq_strlist_t *out)
{
    char path[PATH_LEN], ipath[PATH_LEN], shown[SHOW_MAX * 4 + 8];
    wsq_err rc;

    strlist_free(out);
    if (is_null(n))
        return WSQ_OK;
    if (n->type != YAML_SEQUENCE_NODE)
        return cfg_fail(c, n, parent, key, "expected a list%s; got %s",
                        kind == ITEM_PATTERN ? " of topic patterns, e.g. [\"chat.>\"]" : "",
                        show(n, shown, sizeof(shown)));
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count == 0)
        return WSQ_OK;
    out->items = calloc(count, sizeof(*out->items));
    if (out->items == NULL)
        return cfg_nomem(c);
    out->n = count;
    path_key(path, parent, key);
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = node_at(c, n->data.sequence.items.start[i]);
        path_idx(ipath, path, i);
        rc = get_str(c, item, ipath, NULL, &out->items[i]);
        if (rc != WSQ_OK)
            return rc;
        const char *s = out->items[i];
        bool nomem = false;
        if (kind == ITEM_TEMPLATE && !template_ok(s, &nomem))
            return nomem ? cfg_nomem(c)
                         : cfg_fail(c, item, ipath, NULL,
                                    "invalid topic pattern %s: segments of [A-Za-z0-9_-] or "
                                    "{claim} placeholders (a claim name of [A-Za-z0-9_.-], at "
                                    "most %d of them), separated by '.' or '/'; '*' or '>' as "
                                    "whole segments",
                                    show(item, shown, sizeof(shown)), TEMPLATE_NAMES_MAX);
        if (kind == ITEM_PATTERN && !wsq_topic_pattern_valid(s, strlen(s)))
            return cfg_fail(c, item, ipath, NULL,
                            "invalid topic pattern %s: segments of [A-Za-z0-9_-] separated by '.' "
                            "or '/', '*' for one whole segment, '>' for the last ones",
                            show(item, shown, sizeof(shown)));
        if (kind == ITEM_ORIGIN) {
            const char *why = origin_problem(s);
            if (why != NULL)
                return cfg_fail(c, item, ipath, NULL, "invalid origin %s: %s",
                                show(item, shown, sizeof(shown)), why);
        }
    }
    return WSQ_OK;
}

static bool is_ip_or_localhost(const char *s)
{
    unsigned char addr[16];
    return inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1 ||
           strcasecmp(s, "localhost") == 0;
}

static bool is_loopback(const char *s)
{
    unsigned char a[16];
    static const unsigned char v6_loop[16] = {[15] = 1};
    static const unsigned char v4_mapped[12] = {[10] = 0xff, [11] = 0xff};
    if (s == NULL)
        return false;
    if (strcasecmp(s, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, s, a) == 1)
        return a[0] == 127;
    if (inet_pton(AF_INET6, s, a) == 1)
        return memcmp(a, v6_loop, 16) == 0 || (memcmp(a, v4_mapped, 12) == 0 && a[12] == 127);
    return false;
}

/* ---------------------------------------------------------------------------------------------
 * Sections.
 */

static wsq_err parse_tls(cfg_ctx_t *c, yaml_node_t *n, const char *path, wsq_listener_conf_t *l)
{
    enum { T_CERT, T_KEY, T_CA, T_REQUIRE, T_N };
    static const char *const keys[] = {"cert", "key", "ca", "require_client_cert"};
    yaml_node_t *v[T_N];
    wsq_err rc = map_keys(c, n, path, keys, T_N, v);
    if (rc != WSQ_OK || is_null(n))
        return rc;
    /* a tls section means "serve TLS", so both halves of the key pair are required */
    if (v[T_CERT] == NULL && v[T_KEY] == NULL)
        return cfg_fail(c, n, path, NULL, "TLS needs cert and key; both are missing");
    if (v[T_CERT] == NULL)
        return cfg_fail(c, v[T_KEY], path, "key", "key is set but cert is missing; TLS needs both");
    if (v[T_KEY] == NULL)
        return cfg_fail(c, v[T_CERT], path, "cert",
                        "cert is set but key is missing; TLS needs both");
    if ((rc = get_str(c, v[T_CERT], path, "cert", &l->tls_cert)) != WSQ_OK ||
        (rc = get_str(c, v[T_KEY], path, "key", &l->tls_key)) != WSQ_OK)
        return rc;
    if (v[T_CA] && (rc = get_str(c, v[T_CA], path, "ca", &l->tls_ca)) != WSQ_OK)
        return rc;
    if (v[T_REQUIRE] && (rc = get_bool(c, v[T_REQUIRE], path, "require_client_cert",
                                       &l->tls_require_client_cert)) != WSQ_OK)
        return rc;
    if (l->tls_require_client_cert && l->tls_ca == NULL)
        return cfg_fail(c, v[T_REQUIRE], path, "require_client_cert",
                        "needs ca (the CA bundle that signs client certificates)");
    return WSQ_OK;
}

static wsq_err parse_listener(cfg_ctx_t *c, yaml_node_t *n, const char *path,
                              wsq_listener_conf_t *l)
{
    enum { L_ADDRESS, L_PORT, L_TLS, L_N };
    static const char *const keys[] = {"address", "port", "tls"};
    yaml_node_t *v[L_N];
    char shown[SHOW_MAX * 4 + 8];
    uint32_t port = 8080;
    wsq_err rc;

    if (n->type != YAML_MAPPING_NODE)
        return cfg_fail(c, n, path, NULL, "expected a mapping with address, port and tls; got %s",
                        show(n, shown, sizeof(shown)));
    if ((rc = map_keys(c, n, path, keys, L_N, v)) != WSQ_OK)
        return rc;
    l->address = strdup("127.0.0.1");
    if (l->address == NULL)
        return cfg_nomem(c);
    if (v[L_ADDRESS]) {
        if ((rc = get_str(c, v[L_ADDRESS], path, "address", &l->address)) != WSQ_OK)
            return rc;
        if (!is_ip_or_localhost(l->address))
            return cfg_fail(c, v[L_ADDRESS], path, "address",
                            "expected an IPv4 or IPv6 address (0.0.0.0 or :: for every interface) "
                            "or localhost; got %s",
                            show(v[L_ADDRESS], shown, sizeof(shown)));
    }
    if (v[L_PORT] && (rc = get_u32(c, v[L_PORT], path, "port", 0, 65535, &port)) != WSQ_OK)
        return rc;
    l->port = (uint16_t)port;
    if (v[L_TLS]) {
        char tpath[PATH_LEN];
        path_key(tpath, path, "tls");
        if ((rc = parse_tls(c, v[L_TLS], tpath, l)) != WSQ_OK)
            return rc;
    }
    return WSQ_OK;
}

static wsq_err parse_listeners(cfg_ctx_t *c, yaml_node_t *n, wsq_config_t *cfg)
{
    char shown[SHOW_MAX * 4 + 8], path[PATH_LEN];
    wsq_err rc;

    if (n->type != YAML_SEQUENCE_NODE && !is_null(n))
        return cfg_fail(c, n, "listeners", NULL, "expected a list of listeners; got %s",
                        show(n, shown, sizeof(shown)));
    size_t count =
        is_null(n) ? 0 : (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count == 0)
        return cfg_fail(c, n, "listeners", NULL,
                        "at least one listener is required (leave the key out for the default "
                        "127.0.0.1:8080)");
    cfg->listeners = calloc(count, sizeof(*cfg->listeners));
    if (cfg->listeners == NULL)
        return cfg_nomem(c);
    cfg->n_listeners = count;
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = node_at(c, n->data.sequence.items.start[i]);
        path_idx(path, "listeners", i);
        if ((rc = parse_listener(c, item, path, &cfg->listeners[i])) != WSQ_OK)
            return rc;
        for (size_t j = 0; j < i; j++) {
            const wsq_listener_conf_t *a = &cfg->listeners[j], *b = &cfg->listeners[i];
            if (b->port != 0 && a->port == b->port && strcmp(a->address, b->address) == 0)
                return cfg_fail(c, item, path, NULL, "%s port %u is already used by listeners[%zu]",
                                b->address, (unsigned)b->port, j);
        }
    }
    return WSQ_OK;
}

static wsq_err parse_storage(cfg_ctx_t *c, yaml_node_t *n, wsq_config_t *cfg)
{
    enum { S_PATH, S_SYNC, S_MAP_INIT, S_MAP_MAX, S_READERS, S_BMSG, S_BBYTES, S_TRIM, S_N };
    static const char *const keys[] = {"path",
                                       "sync",
                                       "map_size_initial",
                                       "map_size_max",
                                       "max_readers",
                                       "batch_max_messages",
                                       "batch_max_bytes",
                                       "trim_chunk"};
    static const char *const syncs[] = {"full", "batch", "none"};
    const char *p = "storage";
    yaml_node_t *v[S_N];
    wsq_err rc;
    int e;

    if ((rc = map_keys(c, n, p, keys, S_N, v)) != WSQ_OK)
        return rc;
    if (v[S_PATH] && (rc = get_str(c, v[S_PATH], p, "path", &cfg->storage.path)) != WSQ_OK)
        return rc;
    if (v[S_SYNC]) {
        if ((rc = get_enum(c, v[S_SYNC], p, "sync", syncs, 3, &e)) != WSQ_OK)
            return rc;
        cfg->storage.sync = e == 0 ? WSQ_SYNC_FULL : e == 1 ? WSQ_SYNC_BATCH : WSQ_SYNC_NONE;
    }
    if (v[S_MAP_INIT] && (rc = get_size(c, v[S_MAP_INIT], p, "map_size_initial", MiB, 64 * TiB,
                                        &cfg->storage.map_size_initial)) != WSQ_OK)
        return rc;
    if (v[S_MAP_MAX] && (rc = get_size(c, v[S_MAP_MAX], p, "map_size_max", MiB, 64 * TiB,
                                       &cfg->storage.map_size_max)) != WSQ_OK)
        return rc;
    if (v[S_READERS] && (rc = get_u32(c, v[S_READERS], p, "max_readers", 1, 65536,
                                      &cfg->storage.max_readers)) != WSQ_OK)
        return rc;
    if (v[S_BMSG] && (rc = get_u32(c, v[S_BMSG], p, "batch_max_messages", 1, 1000000,
                                   &cfg->storage.batch_max_messages)) != WSQ_OK)
        return rc;
    if (v[S_BBYTES] && (rc = get_size(c, v[S_BBYTES], p, "batch_max_bytes", KiB, GiB,
                                      &cfg->storage.batch_max_bytes)) != WSQ_OK)
        return rc;
    if (v[S_TRIM] && (rc = get_u32(c, v[S_TRIM], p, "trim_chunk", 1, 1000000,
                                   &cfg->storage.trim_chunk)) != WSQ_OK)
        return rc;
    if (cfg->storage.map_size_max < cfg->storage.map_size_initial) {
        char a[32], b[32];
        fmt_size(cfg->storage.map_size_initial, a, sizeof(a));
        fmt_size(cfg->storage.map_size_max, b, sizeof(b));
        int at = v[S_MAP_MAX] ? S_MAP_MAX : S_MAP_INIT;
        return cfg_fail(c, v[at], p, keys[at], "map_size_max (%s) must be >= map_size_initial (%s)",
                        b, a);
    }
    return WSQ_OK;
}

/* retention.default (rule == false) or one retention.topics entry, inheriting from *r. */
/* Expands a dead-letter template for topic[0..len): "{topic}" replaced (every time). */
static bool expand_dead(const char *tmpl, const char *topic, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = tmpl; *p; p++) {
        if (strncmp(p, "{topic}", 7) == 0) {
            if (cap - o <= len)
                return false;
            memcpy(out + o, topic, len);
            o += len;
            p += 6;
        } else {
            if (cap - o <= 1)
                return false;
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return wsq_topic_valid(out, o);
}

static wsq_err parse_retention_policy(cfg_ctx_t *c, yaml_node_t *n, const char *path, bool rule,
                                      wsq_retention_t *r, wsq_dead_letter_t *dl, char **pattern)
{
    enum { R_MSGS, R_BYTES, R_AGE, R_DISCARD, R_DEDUP, R_MAXDEL, R_DEAD, R_PATTERN, R_N };
    static const char *const keys[] = {"max_messages", "max_bytes",   "max_age",     "discard",
                                       "dedup_window", "max_deliver", "dead_letter", "pattern"};
    static const char *const discards[] = {"old", "new"};
    char shown[SHOW_MAX * 4 + 8];
    yaml_node_t *v[R_N];
    wsq_err rc;
    int e;

    if (rule && n->type != YAML_MAPPING_NODE)
        return cfg_fail(c, n, path, NULL, "expected a mapping with pattern and limits; got %s",
                        show(n, shown, sizeof(shown)));
    /* "pattern" is only a key of rules: the defaults see the keys before it */
    if ((rc = map_keys(c, n, path, keys, rule ? R_N : R_PATTERN, v)) != WSQ_OK)
        return rc;
    if (rule) {
        if (v[R_PATTERN] == NULL)
            return cfg_fail(c, n, path, NULL, "missing required key 'pattern'");
        if ((rc = get_str(c, v[R_PATTERN], path, "pattern", pattern)) != WSQ_OK)
            return rc;
        if (!wsq_topic_pattern_valid(*pattern, strlen(*pattern)))
            return cfg_fail(c, v[R_PATTERN], path, "pattern",
                            "invalid topic pattern %s: segments of [A-Za-z0-9_-] separated by "
                            "'.' or '/', '*' for one whole segment, '>' for the last ones",
                            show(v[R_PATTERN], shown, sizeof(shown)));
    }
    if (v[R_MSGS] && (rc = get_uint(c, v[R_MSGS], path, "max_messages", 0, UINT64_MAX,
                                    &r->max_messages)) != WSQ_OK)
        return rc;
    if (v[R_BYTES] &&
        (rc = get_size(c, v[R_BYTES], path, "max_bytes", 0, UINT64_MAX, &r->max_bytes)) != WSQ_OK)
        return rc;
    if (v[R_AGE] &&
        (rc = get_duration(c, v[R_AGE], path, "max_age", 0, INT64_MAX, &r->max_age_ms)) != WSQ_OK)
        return rc;
    if (v[R_DEDUP] && (rc = get_duration(c, v[R_DEDUP], path, "dedup_window", 0, 7 * DAY,
                                         &r->dedup_window_ms)) != WSQ_OK)
        return rc;
    if (v[R_MAXDEL] && (rc = get_u32(c, v[R_MAXDEL], path, "max_deliver", 0, UINT32_MAX,
                                     &dl->max_deliver)) != WSQ_OK)
        return rc;
    if (v[R_DEAD]) {
        char *t = NULL, probe[WSQ_TOPIC_MAX + 1];
        if ((rc = get_str(c, v[R_DEAD], path, "dead_letter", &t)) != WSQ_OK)
            return rc;
        free(dl->topic);
        dl->topic = t;
        if (!expand_dead(t, "t", 1, probe, sizeof(probe)))
            return cfg_fail(c, v[R_DEAD], path, "dead_letter",
                            "invalid dead-letter topic %s: a topic name where {topic} stands for "
                            "the topic's own, e.g. \"{topic}.dlq\" or \"dlq.{topic}\"",
                            show(v[R_DEAD], shown, sizeof(shown)));
    }
    if (v[R_DISCARD]) {
        if ((rc = get_enum(c, v[R_DISCARD], path, "discard", discards, 2, &e)) != WSQ_OK)
            return rc;
        r->discard = e == 0 ? WSQ_DISCARD_OLD : WSQ_DISCARD_NEW;
    }
    return WSQ_OK;
}

static wsq_err parse_retention(cfg_ctx_t *c, yaml_node_t *n, wsq_config_t *cfg)
{
    enum { R_DEFAULT, R_TOPICS, R_N };
    static const char *const keys[] = {"default", "topics"};
    char shown[SHOW_MAX * 4 + 8], path[PATH_LEN];
    yaml_node_t *v[R_N];
    wsq_err rc;

    if ((rc = map_keys(c, n, "retention", keys, R_N, v)) != WSQ_OK)
        return rc;
    /* defaults first, whatever the key order: rules inherit from them */
    if (v[R_DEFAULT] && (rc = parse_retention_policy(c, v[R_DEFAULT], "retention.default", false,
                                                     &cfg->retention.defaults, &cfg->retention.dead,
                                                     NULL)) != WSQ_OK)
        return rc;
    yaml_node_t *t = v[R_TOPICS];
    if (t == NULL || is_null(t))
        return WSQ_OK;
    if (t->type != YAML_SEQUENCE_NODE)
        return cfg_fail(c, t, "retention.topics", NULL,
                        "expected a list of rules ({pattern: ..., max_age: ...}); got %s",
                        show(t, shown, sizeof(shown)));
    size_t count = (size_t)(t->data.sequence.items.top - t->data.sequence.items.start);
    if (count == 0)
        return WSQ_OK;
    cfg->retention.rules = calloc(count, sizeof(*cfg->retention.rules));
    if (cfg->retention.rules == NULL)
        return cfg_nomem(c);
    cfg->retention.n_rules = count;
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = node_at(c, t->data.sequence.items.start[i]);
        wsq_retention_rule_t *r = &cfg->retention.rules[i];
        path_idx(path, "retention.topics", i);
        r->retention = cfg->retention.defaults;
        r->dead.max_deliver = cfg->retention.dead.max_deliver;
        if ((r->dead.topic = strdup(cfg->retention.dead.topic)) == NULL)
            return cfg_nomem(c);
        if ((rc = parse_retention_policy(c, item, path, true, &r->retention, &r->dead,
                                         &r->pattern)) != WSQ_OK)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->retention.rules[j].pattern, r->pattern) == 0)
                return cfg_fail(c, item, path, NULL,
                                "pattern '%s' is already used by retention.topics[%zu]; the first "
                                "match wins, so this rule would never apply",
                                r->pattern, j);
    }
    return WSQ_OK;
}

static wsq_err parse_limits(cfg_ctx_t *c, yaml_node_t *n, wsq_config_t *cfg)
{
    enum {
        M_MSG_SIZE,
        M_CONNS,
        M_CONNS_IP,
        M_SUBS,
        M_DEF_WINDOW,
        M_MAX_WINDOW,
        M_INFLIGHT,
        M_RATE,
        M_WQ_HIGH,
        M_PING,
        M_IDLE,
        M_ACK_WAIT,
        M_MAX_DELIVER,
        M_CONSUMER_TTL,
        M_SHUTDOWN,
        M_HTTP_BODY,
        M_HEADER,
        M_MSG_HEADERS,
        M_MSG_HEADERS_SIZE,
        M_N
    };
    static const char *const keys[] = {"max_message_size",
                                       "max_connections",
                                       "max_connections_per_ip",
                                       "max_subscriptions",
                                       "default_window",
                                       "max_window",
                                       "max_inflight_publishes",
                                       "max_publish_rate",
                                       "writer_queue_high",
                                       "ping_interval",
                                       "idle_timeout",
                                       "ack_wait",
                                       "max_deliver",
                                       "consumer_ttl",
                                       "shutdown_timeout",
                                       "max_http_body",
                                       "max_header_size",
                                       "max_message_headers",
                                       "max_message_headers_size"};
    const char *p = "limits";
    yaml_node_t *v[M_N];
    char a[32], b[32];
    wsq_err rc;

    _Static_assert(ARRAY_LEN(keys) == M_N, "limits keys");
    if ((rc = map_keys(c, n, p, keys, M_N, v)) != WSQ_OK)
        return rc;

#define L_SIZE(i, lo, hi, field)                                                                   \
    if (v[i] && (rc = get_size(c, v[i], p, keys[i], lo, hi, &cfg->limits.field)) != WSQ_OK)        \
        return rc;
#define L_SIZE32(i, lo, hi, field)                                                                 \
    if (v[i] && (rc = get_size32(c, v[i], p, keys[i], lo, hi, &cfg->limits.field)) != WSQ_OK)      \
        return rc;
#define L_U32(i, lo, hi, field)                                                                    \
    if (v[i] && (rc = get_u32(c, v[i], p, keys[i], lo, hi, &cfg->limits.field)) != WSQ_OK)         \
        return rc;
#define L_DUR(i, lo, hi, field)                                                                    \
    if (v[i] && (rc = get_duration(c, v[i], p, keys[i], lo, hi, &cfg->limits.field)) != WSQ_OK)    \
        return rc;

    L_SIZE(M_MSG_SIZE, 1, 256 * MiB, max_message_size)
    L_U32(M_CONNS, 0, UINT32_MAX, max_connections)
    L_U32(M_CONNS_IP, 0, UINT32_MAX, max_connections_per_ip)
    L_U32(M_SUBS, 1, 1000000, max_subscriptions)
    L_U32(M_DEF_WINDOW, 1, 1000000, default_window)
    L_U32(M_MAX_WINDOW, 1, 1000000, max_window)
    L_U32(M_INFLIGHT, 1, 1000000, max_inflight_publishes)
    L_U32(M_RATE, 0, UINT32_MAX, max_publish_rate)
    L_SIZE(M_WQ_HIGH, KiB, TiB, writer_queue_high)
    L_DUR(M_PING, SEC, DAY, ping_interval_ms)
    L_DUR(M_IDLE, SEC, 7 * DAY, idle_timeout_ms)
    L_DUR(M_ACK_WAIT, 0, 7 * DAY, ack_wait_ms)
    if (v[M_MAX_DELIVER]) /* moved: dead letters are per topic (issue 13) */
        return cfg_fail(c, v[M_MAX_DELIVER], p, keys[M_MAX_DELIVER],
                        "moved: set max_deliver in retention.default or in a retention.topics "
                        "rule, beside dead_letter (the topic a message goes to after max_deliver "
                        "deliveries without an ack); see docs/OPERATIONS.md, Dead letters");
    L_DUR(M_CONSUMER_TTL, 0, 3650 * DAY, consumer_ttl_ms)
    L_DUR(M_SHUTDOWN, 0, HOUR, shutdown_timeout_ms)
    L_SIZE32(M_HTTP_BODY, 1, (uint32_t)GiB, max_http_body)
    L_SIZE32(M_HEADER, (uint32_t)(4 * KiB), (uint32_t)(63 * KiB), max_header_size)
    L_U32(M_MSG_HEADERS, 0, 1024, max_message_headers)
    L_SIZE32(M_MSG_HEADERS_SIZE, 0, (uint32_t)MiB, max_message_headers_size)
#undef L_SIZE
#undef L_SIZE32
#undef L_U32
#undef L_DUR

    if (v[M_HTTP_BODY] == NULL)
        cfg->limits.max_http_body = (uint32_t)cfg->limits.max_message_size; /* <= 256MiB */
    if (cfg->limits.default_window > cfg->limits.max_window) {
        int at = v[M_DEF_WINDOW] ? M_DEF_WINDOW : M_MAX_WINDOW;
        return cfg_fail(c, v[at], p, keys[at], "default_window (%u) must be <= max_window (%u)",
                        (unsigned)cfg->limits.default_window, (unsigned)cfg->limits.max_window);
    }
    if (cfg->limits.idle_timeout_ms <= cfg->limits.ping_interval_ms) {
        /* a peer must get at least one ping before it is declared idle */
        int at = v[M_IDLE] ? M_IDLE : M_PING;
        return cfg_fail(c, v[at], p, keys[at],
                        "idle_timeout (%s) must be greater than ping_interval (%s)",
                        fmt_duration(cfg->limits.idle_timeout_ms, a, sizeof(a)),
                        fmt_duration(cfg->limits.ping_interval_ms, b, sizeof(b)));
    }
    return WSQ_OK;
}

static wsq_err parse_rights_kind(cfg_ctx_t *c, yaml_node_t **pub, yaml_node_t **sub,
                                 yaml_node_t **admin, yaml_node_t **metrics, const char *path,
                                 item_kind kind, wsq_rights_t *r)
{
    wsq_err rc;
    if (*pub && (rc = get_list(c, *pub, path, "publish", kind, &r->publish)) != WSQ_OK)
        return rc;
    if (*sub && (rc = get_list(c, *sub, path, "subscribe", kind, &r->subscribe)) != WSQ_OK)
        return rc;
    if (*admin && (rc = get_bool(c, *admin, path, "admin", &r->admin)) != WSQ_OK)
        return rc;
    if (*metrics && (rc = get_bool(c, *metrics, path, "metrics", &r->metrics)) != WSQ_OK)
        return rc;
    return WSQ_OK;
}

static wsq_err parse_rights(cfg_ctx_t *c, yaml_node_t **pub, yaml_node_t **sub, yaml_node_t **admin,
                            yaml_node_t **metrics, const char *path, wsq_rights_t *r)
{
    return parse_rights_kind(c, pub, sub, admin, metrics, path, ITEM_PATTERN, r);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static bool valid_token_name(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > TOKEN_NAME_MAX)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("._@+-", *s) != NULL))
            return false;
    return true;
}

/* The hash is compared, never shown: a user may have pasted the token itself by mistake. */
static wsq_err get_sha256(cfg_ctx_t *c, yaml_node_t *n, const char *path, unsigned char *out)
{
    static const char how[] = "the SHA-256 of the token as 64 hex digits, from: printf %s TOKEN | "
                              "sha256sum";
    size_t len = n->type == YAML_SCALAR_NODE ? slen(n) : 0;
    if (n->type != YAML_SCALAR_NODE || is_null(n))
        return cfg_fail(c, n, path, "sha256", "expected %s", how);
    const char *s = sval(n);
    size_t hex = 0;
    while (hex < len && hexval(s[hex]) >= 0)
        hex++;
    if (len != 64 || hex != 64) {
        if (hex == 64)
            return cfg_fail(c, n, path, "sha256",
                            "expected %s; copy only the 64 hex digits (sha256sum also prints "
                            "\"  -\")",
                            how);
        return cfg_fail(c, n, path, "sha256", "expected %s; got %zu characters%s", how, len,
                        hex == len ? "" : ", not all hex digits");
    }
    if (strncasecmp(s, empty_sha256, 64) == 0)
        return cfg_fail(c, n, path, "sha256",
                        "this is the SHA-256 of the empty string: was TOKEN empty when you ran "
                        "sha256sum?");
    for (size_t i = 0; i < 32; i++)
        out[i] = (unsigned char)(hexval(s[2 * i]) << 4 | hexval(s[2 * i + 1]));
    return WSQ_OK;
}

static wsq_err parse_token(cfg_ctx_t *c, yaml_node_t *n, const char *path, wsq_token_conf_t *t)
{
    enum { K_NAME, K_SHA, K_PUB, K_SUB, K_ADMIN, K_METRICS, K_N };
    static const char *const keys[] = {"name",      "sha256", "publish",
                                       "subscribe", "admin",  "metrics"};
    char shown[SHOW_MAX * 4 + 8];
    yaml_node_t *v[K_N];
    wsq_err rc;

    if (n->type != YAML_MAPPING_NODE)
        return cfg_fail(c, n, path, NULL,
                        "expected a mapping with name, sha256, publish, subscribe, admin and "
                        "metrics; got %s",
                        show(n, shown, sizeof(shown)));
    /* a plaintext token gets its own message, before the generic unknown-key one */
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(c, p->key);
        if (k != NULL && k->type == YAML_SCALAR_NODE && strcmp(sval(k), "token") == 0)
            return cfg_fail(c, k, path, "token",
                            "plaintext tokens are not accepted; store the token's SHA-256 as "
                            "sha256 instead (printf %%s TOKEN | sha256sum)");
    }
    if ((rc = map_keys(c, n, path, keys, K_N, v)) != WSQ_OK)
        return rc;
    if (v[K_NAME] == NULL)
        return cfg_fail(c, n, path, NULL, "missing required key 'name'");
    if (v[K_SHA] == NULL)
        return cfg_fail(c, n, path, NULL,
                        "missing required key 'sha256' (printf %%s TOKEN | sha256sum)");
    if ((rc = get_str(c, v[K_NAME], path, "name", &t->name)) != WSQ_OK)
        return rc;
    if (!valid_token_name(t->name))
        return cfg_fail(c, v[K_NAME], path, "name",
                        "expected 1..%d characters of [A-Za-z0-9._@+-]; got %s", TOKEN_NAME_MAX,
                        show(v[K_NAME], shown, sizeof(shown)));
    if ((rc = get_sha256(c, v[K_SHA], path, t->sha256)) != WSQ_OK)
        return rc;
    return parse_rights(c, &v[K_PUB], &v[K_SUB], &v[K_ADMIN], &v[K_METRICS], path, &t->rights);
}

static wsq_err parse_tokens(cfg_ctx_t *c, yaml_node_t *n, wsq_config_t *cfg)
{
    char shown[SHOW_MAX * 4 + 8], path[PATH_LEN];
    wsq_err rc;

    if (is_null(n))
        return WSQ_OK;
    if (n->type != YAML_SEQUENCE_NODE)
        return cfg_fail(c, n, "auth.tokens", NULL,
                        "expected a list of tokens ({name: ..., sha256: ...}); got %s",
                        show(n, shown, sizeof(shown)));
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count == 0)
        return WSQ_OK;
    cfg->auth.tokens = calloc(count, sizeof(*cfg->auth.tokens));
    if (cfg->auth.tokens == NULL)
        return cfg_nomem(c);
    cfg->auth.n_tokens = count;
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = node_at(c, n->data.sequence.items.start[i]);
        wsq_token_conf_t *t = &cfg->auth.tokens[i];
        path_idx(path, "auth.tokens", i);
        if ((rc = parse_token(c, item, path, t)) != WSQ_OK)
            return rc;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->auth.tokens[j].name, t->name) == 0)
                return cfg_fail(c, item, path, "name",
                                "duplicate token name '%s' (see "
                                "auth.tokens[%zu])",
                                t->name, j);
            if (memcmp(cfg->auth.tokens[j].sha256, t->sha256, 32) == 0)
                return cfg_fail(c, item, path, "sha256",
                                "same token hash as auth.tokens[%zu]; every token must be unique",
                                j);
        }
    }
    return WSQ_OK;
}

/* Reads a whole file of at most `max` bytes into a NUL-terminated heap buffer. Sets errno. */
static int read_all(const char *path, size_t max, char **out, size_t *outlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (buf == NULL)
        goto fail;
    for (;;) {
        if (len + 1 >= cap) {
            if (cap > max + 1) {
                errno = EFBIG;
                goto fail;
            }
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL)
                goto fail;
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    if (len > max) {
        errno = EFBIG;
        goto fail;
    }
    close(fd);
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;

fail:;
    int saved = errno;
    if (buf != NULL) {
        explicit_bzero(buf, len);
        free(buf);
    }
    close(fd);
    errno = saved;
    return -1;
}

/* Reads the file a setting names (file; relative to the config's directory) into *buf (*len
 * bytes, malloc'd, NUL-terminated); *full gets its path (malloc'd, also on a read error, for
 * the caller's messages). An error names the setting path.key at n. */
static wsq_err read_conf_file(cfg_ctx_t *c, yaml_node_t *n, const char *path, const char *key,
                              const char *file, size_t max, char **full, char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    if (file[0] == '/') {
        *full = strdup(file);
    } else {
        size_t l = strlen(c->basedir) + 1 + strlen(file) + 1;
        if ((*full = malloc(l)) != NULL)
            snprintf(*full, l, "%s/%s", c->basedir, file);
    }
    if (*full == NULL)
        return cfg_nomem(c);
    if (read_all(*full, max, buf, len) == 0)
        return WSQ_OK;
    if (errno == ENOMEM)
        return cfg_nomem(c);
    if (errno == EFBIG)
        return cfg_fail(c, n, path, key, "'%s' is larger than %lluKiB", *full,
                        (unsigned long long)(max / KiB));
    return cfg_fail(c, n, path, key, "cannot read '%s': %s", *full, strerror(errno));
}

static wsq_err read_secret_file(cfg_ctx_t *c, yaml_node_t *n, const char *path, const char *file,
                                wsq_config_t *cfg)
{
    char *full = NULL, *buf = NULL;
    size_t len = 0;
    wsq_err rc =
        read_conf_file(c, n, path, "secret_file", file, SECRET_FILE_MAX, &full, &buf, &len);
    if (rc != WSQ_OK)
        goto fail;
    /* `openssl rand -hex 32 > file` and editors add a newline that is not part of the secret */
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        buf[--len] = '\0';
    if (len < JWT_SECRET_MIN) {
        rc = cfg_fail(c, n, path, "secret_file",
                      "'%s' holds %zu bytes; the secret needs at least %d (openssl rand -hex 32 "
                      "> FILE)",
                      full, len, JWT_SECRET_MIN);
        goto fail;
    }
    free(full);
    cfg->auth.jwt_secret = buf;
    cfg->auth.jwt_secret_len = len;
    return WSQ_OK;

fail:
    if (buf != NULL) {
        explicit_bzero(buf, len);
        free(buf);
    }
    free(full);
    return rc;
}

/* auth.jwt.public_key_file / jwks_file: read (relative to the config's directory) and added to
 * the key set; a file that holds no usable key is an error at its line. */
static wsq_err read_key_file(cfg_ctx_t *c, yaml_node_t *n, const char *path, const char *key,
                             bool jwks, wsq_config_t *cfg)
{
    char *file = NULL, *full = NULL, *buf = NULL;
    size_t len = 0;
    wsq_err rc = get_str(c, n, path, key, &file);
    if (rc != WSQ_OK)
        return rc;
    rc = read_conf_file(c, n, path, key, file, KEY_FILE_MAX, &full, &buf, &len);
    free(file);
    if (rc != WSQ_OK) {
        free(full);
        return rc;
    }
    char err[256] = "";
    rc = jwks ? wsq_jwt_keys_add_jwks(cfg->auth.jwt_keys, buf, len, err, sizeof(err))
              : wsq_jwt_keys_add_pem(cfg->auth.jwt_keys, NULL, buf, len, err, sizeof(err));
    free(buf);
    if (rc == WSQ_ERR_NOMEM)
        rc = cfg_nomem(c);
    else if (rc != WSQ_OK)
        rc = cfg_fail(c, n, path, key, "'%s': %s", full, err);
    free(full);
    return rc;
}

/* auth.jwt.roles: {role: {publish, subscribe, admin, metrics}}, patterns with templates. */
static wsq_err parse_roles(cfg_ctx_t *c, yaml_node_t *n, const char *parent, wsq_config_t *cfg)
{
    enum { R_PUB, R_SUB, R_ADMIN, R_METRICS, R_N };
    static const char *const rkeys[] = {"publish", "subscribe", "admin", "metrics"};
    char path[PATH_LEN], rpath[PATH_LEN], shown[SHOW_MAX * 4 + 8];
    wsq_err rc;
    path_key(path, parent, "roles");
    if (n->type != YAML_MAPPING_NODE)
        return cfg_fail(c, n, parent, "roles",
                        "expected a mapping of role names to rights ({publish, subscribe, "
                        "admin, metrics}); got %s",
                        show(n, shown, sizeof(shown)));
    size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (count == 0)
        return WSQ_OK;
    if ((cfg->auth.jwt_roles = calloc(count, sizeof(*cfg->auth.jwt_roles))) == NULL)
        return cfg_nomem(c);
    for (size_t i = 0; i < count; i++) {
        yaml_node_pair_t *pr = &n->data.mapping.pairs.start[i];
        yaml_node_t *k = node_at(c, pr->key), *v = node_at(c, pr->value);
        wsq_role_conf_t *role = &cfg->auth.jwt_roles[cfg->auth.n_jwt_roles];
        if ((rc = get_str(c, k, path, NULL, &role->name)) != WSQ_OK)
            return rc;
        cfg->auth.n_jwt_roles++;
        path_key(rpath, path, role->name);
        yaml_node_t *r[R_N];
        if ((rc = map_keys(c, v, rpath, rkeys, R_N, r)) != WSQ_OK)
            return rc;
        if ((rc = parse_rights_kind(c, &r[R_PUB], &r[R_SUB], &r[R_ADMIN], &r[R_METRICS], rpath,
                                    ITEM_TEMPLATE, &role->rights)) != WSQ_OK)
            return rc;
        const wsq_strlist_t *lists[] = {&role->rights.publish, &role->rights.subscribe};
        for (int l = 0; l < 2; l++) {
            for (size_t j = 0; j < lists[l]->n; j++) {
                bool nomem = false;
                if (!template_names(lists[l]->items[j], &cfg->auth.jwt_template_claims, &nomem) &&
                    nomem)
                    return cfg_nomem(c);
            }
        }
    }
    return WSQ_OK;
}

/* auth.jwt.algorithms: a list of JWS algorithm names, each served by a configured key. */
static wsq_err parse_algorithms(cfg_ctx_t *c, yaml_node_t *n, const char *path, wsq_config_t *cfg)
{
    static const char names[] = "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, "
                                "ES256, ES384, EdDSA";
    if (n->type != YAML_SEQUENCE_NODE || n->data.sequence.items.start == n->data.sequence.items.top)
        return cfg_fail(c, n, path, "algorithms", "expected a list of algorithms (%s)", names);
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        yaml_node_t *a = yaml_document_get_node(c->doc, *it);
        if (a == NULL || a->type != YAML_SCALAR_NODE)
            return cfg_fail(c, a ? a : n, path, "algorithms", "expected an algorithm name (%s)",
                            names);
        char name[16];
        snprintf(name, sizeof(name), "%.*s", (int)(slen(a) < 15 ? slen(a) : 15), sval(a));
        unsigned bit = slen(a) < 15 ? wsq_jwt_alg(name) : 0;
        if (bit == 0 && strcasecmp(name, "none") == 0)
            return cfg_fail(c, a, path, "algorithms",
                            "\"none\" accepts unsigned tokens: it is never allowed");
        if (bit == 0)
            return cfg_fail(c, a, path, "algorithms", "unknown algorithm '%s' (one of %s)", name,
                            names);
        /* (keys from jwks_url come later: any asymmetric algorithm may be served by them) */
        if (!wsq_jwt_keys_serve(cfg->auth.jwt_keys, bit) &&
            !(cfg->auth.jwt_jwks_url != NULL && bit > WSQ_JWT_ALG(HS512)))
            return cfg_fail(c, a, path, "algorithms",
                            "no configured key can verify %s (its key type: %s)", name,
                            bit <= WSQ_JWT_ALG(HS512)   ? "a secret"
                            : bit <= WSQ_JWT_ALG(PS512) ? "RSA"
                            : bit == WSQ_JWT_ALG(ES256) ? "EC P-256"
                            : bit == WSQ_JWT_ALG(ES384) ? "EC P-384"
                                                        : "Ed25519");
        cfg->auth.jwt_algs |= bit;
    }
    return WSQ_OK;
}

static wsq_err parse_jwt(cfg_ctx_t *c, yaml_node_t *n, wsq_config_t *cfg)
{
    enum {
        J_SECRET,
        J_FILE,
        J_ISS,
        J_AUD,
        J_ALGS,
        J_PEM,
        J_JWKS,
        J_IDC,
        J_ROLESC,
        J_ROLES,
        J_URL,
        J_CA,
        J_REFRESH,
        J_N
    };
    static const char *const keys[] = {
        "secret",          "secret_file",  "issuer",         "audience",    "algorithms",
        "public_key_file", "jwks_file",    "identity_claim", "roles_claim", "roles",
        "jwks_url",        "jwks_ca_file", "jwks_refresh"};
    const char *p = "auth.jwt";
    yaml_node_t *v[J_N];
    wsq_err rc;

    if ((rc = map_keys(c, n, p, keys, J_N, v)) != WSQ_OK || is_null(n))
        return rc;
    if (v[J_SECRET] != NULL && v[J_FILE] != NULL)
        return cfg_fail(c, v[J_FILE], p, "secret_file",
                        "set either secret or secret_file, not both");
    if (v[J_SECRET] == NULL && v[J_FILE] == NULL && v[J_PEM] == NULL && v[J_JWKS] == NULL &&
        v[J_URL] == NULL)
        return cfg_fail(c, n, p, NULL,
                        "missing the keys: set secret or secret_file (HS256), public_key_file, "
                        "jwks_file or jwks_url");
    if (v[J_SECRET] != NULL) {
        yaml_node_t *s = v[J_SECRET];
        /* not echoed: it is a secret */
        if (s->type != YAML_SCALAR_NODE || is_null(s))
            return cfg_fail(c, s, p, "secret", "expected a string of at least %d bytes",
                            JWT_SECRET_MIN);
        if (memchr(sval(s), '\0', slen(s)) != NULL)
            return cfg_fail(c, s, p, "secret", "must not contain a NUL byte");
        if (slen(s) < JWT_SECRET_MIN)
            return cfg_fail(c, s, p, "secret",
                            "too short: %zu bytes; at least %d are required (openssl rand -hex 32)",
                            slen(s), JWT_SECRET_MIN);
        cfg->auth.jwt_secret = strndup(sval(s), slen(s));
        if (cfg->auth.jwt_secret == NULL)
            return cfg_nomem(c);
        cfg->auth.jwt_secret_len = slen(s);
    } else if (v[J_FILE] != NULL) {
        char *file = NULL;
        if ((rc = get_str(c, v[J_FILE], p, "secret_file", &file)) != WSQ_OK)
            return rc;
        rc = read_secret_file(c, v[J_FILE], p, file, cfg);
        free(file);
        if (rc != WSQ_OK)
            return rc;
    }
    if (wsq_jwt_keys_new(&cfg->auth.jwt_keys) != WSQ_OK)
        return cfg_nomem(c);
    if (cfg->auth.jwt_secret != NULL &&
        wsq_jwt_keys_add_secret(cfg->auth.jwt_keys, NULL,
                                (const unsigned char *)cfg->auth.jwt_secret,
                                cfg->auth.jwt_secret_len) != WSQ_OK)
        return cfg_nomem(c);
    if (v[J_PEM] && (rc = read_key_file(c, v[J_PEM], p, "public_key_file", false, cfg)) != WSQ_OK)
        return rc;
    if (v[J_JWKS] && (rc = read_key_file(c, v[J_JWKS], p, "jwks_file", true, cfg)) != WSQ_OK)
        return rc;
    if (v[J_URL] != NULL) {
        if ((rc = get_str(c, v[J_URL], p, "jwks_url", &cfg->auth.jwt_jwks_url)) != WSQ_OK)
            return rc;
        if (strncmp(cfg->auth.jwt_jwks_url, "https://", 8) != 0 ||
            strlen(cfg->auth.jwt_jwks_url) < 9)
            return cfg_fail(c, v[J_URL], p, "jwks_url",
                            "expected an https:// URL (keys fetched in clear could be forged)");
    }
    if (v[J_CA] != NULL) {
        char *file = NULL;
        if ((rc = get_str(c, v[J_CA], p, "jwks_ca_file", &file)) != WSQ_OK)
            return rc;
        /* libcurl reads it at every fetch: resolved and checked readable now */
        char *buf = NULL, *full = NULL;
        size_t len = 0;
        rc = read_conf_file(c, v[J_CA], p, "jwks_ca_file", file, KEY_FILE_MAX, &full, &buf, &len);
        free(file);
        free(buf);
        if (rc != WSQ_OK) {
            free(full);
            return rc;
        }
        cfg->auth.jwt_jwks_ca_file = full;
    }
    cfg->auth.jwt_jwks_refresh_ms = 10 * 60 * 1000;
    if (v[J_REFRESH] &&
        (rc = get_duration(c, v[J_REFRESH], p, "jwks_refresh", 10 * 1000, 7 * 24 * 3600 * 1000LL,
                           &cfg->auth.jwt_jwks_refresh_ms)) != WSQ_OK)
        return rc;
    if ((v[J_CA] != NULL || v[J_REFRESH] != NULL) && v[J_URL] == NULL)
        return cfg_fail(c, v[J_CA] ? v[J_CA] : v[J_REFRESH], p,
                        v[J_CA] ? "jwks_ca_file" : "jwks_refresh", "needs jwks_url");
    if (v[J_ALGS] != NULL) {
        if ((rc = parse_algorithms(c, v[J_ALGS], p, cfg)) != WSQ_OK)
            return rc;
    } else if (v[J_PEM] != NULL || v[J_JWKS] != NULL || v[J_URL] != NULL) {
        /* the algorithm is the deployment's choice, never the token's */
        return cfg_fail(c, n, p, NULL,
                        "public keys need the list of accepted algorithms: algorithms: [RS256] "
                        "(or ES256, EdDSA, ...)");
    } else {
        cfg->auth.jwt_algs = WSQ_JWT_ALG(HS256); /* a secret alone: HS256, as always */
    }
    if (v[J_ISS] && (rc = get_str(c, v[J_ISS], p, "issuer", &cfg->auth.jwt_issuer)) != WSQ_OK)
        return rc;
    if (v[J_AUD] && (rc = get_str(c, v[J_AUD], p, "audience", &cfg->auth.jwt_audience)) != WSQ_OK)
        return rc;
    if (v[J_IDC] &&
        (rc = get_str(c, v[J_IDC], p, "identity_claim", &cfg->auth.jwt_identity_claim)) != WSQ_OK)
        return rc;
    if ((v[J_ROLESC] != NULL) != (v[J_ROLES] != NULL))
        return cfg_fail(c, n, p, NULL,
                        "roles_claim and roles go together: the claim names the roles, roles "
                        "gives each its rights");
    if (v[J_ROLESC] &&
        (rc = get_str(c, v[J_ROLESC], p, "roles_claim", &cfg->auth.jwt_roles_claim)) != WSQ_OK)
        return rc;
    if (v[J_ROLES] && (rc = parse_roles(c, v[J_ROLES], p, cfg)) != WSQ_OK)
        return rc;
    return WSQ_OK;
}

static wsq_err parse_auth(cfg_ctx_t *c, yaml_node_t *n, wsq_config_t *cfg)
{
    enum { A_ANON, A_TOKENS, A_JWT, A_ORIGINS, A_N };
    static const char *const keys[] = {"anonymous", "tokens", "jwt", "allowed_origins"};
    enum { R_PUB, R_SUB, R_ADMIN, R_METRICS, R_N };
    static const char *const rkeys[] = {"publish", "subscribe", "admin", "metrics"};
    yaml_node_t *v[A_N], *r[R_N];
    wsq_err rc;

    if ((rc = map_keys(c, n, "auth", keys, A_N, v)) != WSQ_OK)
        return rc;
    if (v[A_ANON]) {
        if ((rc = map_keys(c, v[A_ANON], "auth.anonymous", rkeys, R_N, r)) != WSQ_OK)
            return rc;
        if ((rc = parse_rights(c, &r[R_PUB], &r[R_SUB], &r[R_ADMIN], &r[R_METRICS],
                               "auth.anonymous", &cfg->auth.anonymous)) != WSQ_OK)
            return rc;
    }
    if (v[A_TOKENS] && (rc = parse_tokens(c, v[A_TOKENS], cfg)) != WSQ_OK)
        return rc;
    if (v[A_JWT] && (rc = parse_jwt(c, v[A_JWT], cfg)) != WSQ_OK)
        return rc;
    if (v[A_ORIGINS] && (rc = get_list(c, v[A_ORIGINS], "auth", "allowed_origins", ITEM_ORIGIN,
                                       &cfg->auth.allowed_origins)) != WSQ_OK)
        return rc;
    return WSQ_OK;
}

static wsq_err parse_metrics(cfg_ctx_t *c, yaml_node_t *n, wsq_config_t *cfg)
{
    enum { X_AUTH, X_N };
    static const char *const keys[] = {"auth"};
    static const char *const modes[] = {"token", "public"};
    static const wsq_metrics_auth_t mode_vals[] = {WSQ_METRICS_AUTH_TOKEN, WSQ_METRICS_AUTH_PUBLIC};
    yaml_node_t *v[X_N];
    wsq_err rc;
    int e;

    if ((rc = map_keys(c, n, "metrics", keys, X_N, v)) != WSQ_OK)
        return rc;
    if (v[X_AUTH]) {
        if ((rc = get_enum(c, v[X_AUTH], "metrics", "auth", modes, 2, &e)) != WSQ_OK)
            return rc;
        cfg->metrics.auth = mode_vals[e];
    }
    return WSQ_OK;
}

static wsq_err parse_log(cfg_ctx_t *c, yaml_node_t *n, wsq_config_t *cfg)
{
    enum { G_LEVEL, G_FORMAT, G_N };
    static const char *const keys[] = {"level", "format"};
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    static const char *const formats[] = {"text", "json"};
    static const wsq_log_level_t level_vals[] = {WSQ_LOG_ERROR, WSQ_LOG_WARN, WSQ_LOG_INFO,
                                                 WSQ_LOG_DEBUG};
    yaml_node_t *v[G_N];
    wsq_err rc;
    int e;

    if ((rc = map_keys(c, n, "log", keys, G_N, v)) != WSQ_OK)
        return rc;
    if (v[G_LEVEL]) {
        if ((rc = get_enum(c, v[G_LEVEL], "log", "level", levels, 4, &e)) != WSQ_OK)
            return rc;
        cfg->log.level = level_vals[e];
    }
    if (v[G_FORMAT]) {
        if ((rc = get_enum(c, v[G_FORMAT], "log", "format", formats, 2, &e)) != WSQ_OK)
            return rc;
        cfg->log.json = e == 1;
    }
    return WSQ_OK;
}

/* Built-in defaults: what an empty file means. Keep in step with conf/wsq.yaml (a test checks). */
static wsq_err set_defaults(wsq_config_t *cfg)
{
    cfg->storage.path = strdup("./data");
    if (cfg->storage.path == NULL)
        return WSQ_ERR_NOMEM;
    cfg->storage.sync = WSQ_SYNC_FULL;
    cfg->storage.map_size_initial = 64 * MiB;
    cfg->storage.map_size_max = 64 * GiB;
    cfg->storage.max_readers = 1024;
    cfg->storage.batch_max_messages = 4096;
    cfg->storage.batch_max_bytes = 8 * MiB;
    cfg->storage.trim_chunk = 10000;

    cfg->retention.defaults.discard = WSQ_DISCARD_OLD;
    cfg->retention.defaults.dedup_window_ms = 2 * 60 * 1000;
    if ((cfg->retention.dead.topic = strdup("{topic}.dlq")) == NULL)
        return WSQ_ERR_NOMEM;

    cfg->limits.max_message_size = MiB;
    cfg->limits.max_connections = 10000;
    cfg->limits.max_connections_per_ip = 0;
    cfg->limits.max_subscriptions = 100;
    cfg->limits.max_message_headers = 64;
    cfg->limits.max_message_headers_size = 8 * KiB;
    cfg->limits.default_window = 256;
    cfg->limits.max_window = 10000;
    cfg->limits.max_inflight_publishes = 1024;
    cfg->limits.max_publish_rate = 0;
    cfg->limits.writer_queue_high = 64 * MiB;
    cfg->limits.ping_interval_ms = 30 * SEC;
    cfg->limits.idle_timeout_ms = 75 * SEC;
    cfg->limits.ack_wait_ms = 30 * SEC;
    cfg->limits.consumer_ttl_ms = 0;
    cfg->limits.shutdown_timeout_ms = 5 * SEC;
    cfg->limits.max_http_body = (uint32_t)MiB;
    cfg->limits.max_header_size = (uint32_t)(16 * KiB);

    /* secure by default: the text names topics and consumers */
    cfg->metrics.auth = WSQ_METRICS_AUTH_TOKEN;

    cfg->log.level = WSQ_LOG_INFO;
    cfg->log.json = false;
    return WSQ_OK;
}

static wsq_err parse_root(cfg_ctx_t *c, yaml_node_t *root, wsq_config_t *cfg)
{
    enum { T_LISTENERS, T_STORAGE, T_RETENTION, T_LIMITS, T_AUTH, T_METRICS, T_LOG, T_N };
    static const char *const keys[] = {"listeners", "storage", "retention", "limits",
                                       "auth",      "metrics", "log"};
    char shown[SHOW_MAX * 4 + 8];
    yaml_node_t *v[T_N];
    wsq_err rc;

    if (root != NULL && root->type != YAML_MAPPING_NODE && !is_null(root)) {
        errf(c,
             "%s:%zu:%zu: expected a mapping of sections (listeners, storage, retention, "
             "limits, auth, metrics, log) at the top level; got %s",
             c->source, (size_t)root->start_mark.line + 1, (size_t)root->start_mark.column + 1,
             show(root, shown, sizeof(shown)));
        return WSQ_ERR_BAD_CONFIG;
    }
    if ((rc = map_keys(c, root, "", keys, T_N, v)) != WSQ_OK)
        return rc;
    if (v[T_LISTENERS]) {
        if ((rc = parse_listeners(c, v[T_LISTENERS], cfg)) != WSQ_OK)
            return rc;
    } else {
        cfg->listeners = calloc(1, sizeof(*cfg->listeners));
        if (cfg->listeners == NULL)
            return cfg_nomem(c);
        cfg->n_listeners = 1;
        cfg->listeners[0].port = 8080;
        cfg->listeners[0].address = strdup("127.0.0.1");
        if (cfg->listeners[0].address == NULL)
            return cfg_nomem(c);
    }
    if ((rc = parse_storage(c, v[T_STORAGE], cfg)) != WSQ_OK ||
        (rc = parse_retention(c, v[T_RETENTION], cfg)) != WSQ_OK ||
        (rc = parse_limits(c, v[T_LIMITS], cfg)) != WSQ_OK ||
        (rc = parse_auth(c, v[T_AUTH], cfg)) != WSQ_OK ||
        (rc = parse_metrics(c, v[T_METRICS], cfg)) != WSQ_OK ||
        (rc = parse_log(c, v[T_LOG], cfg)) != WSQ_OK)
        return rc;
    return WSQ_OK;
}

/* libyaml reader errors carry a byte offset, not a mark. */
static void offset_to_mark(const char *yaml, size_t len, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (yaml[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static wsq_err syntax_error(cfg_ctx_t *c, yaml_parser_t *parser, const char *yaml, size_t len)
{
    size_t line, col;
    if (parser->error == YAML_MEMORY_ERROR)
        return cfg_nomem(c);
    if (parser->error == YAML_READER_ERROR) {
        offset_to_mark(yaml, len, parser->problem_offset, &line, &col);
        errf(c, "%s:%zu:%zu: YAML error: %s", c->source, line, col,
             parser->problem ? parser->problem : "cannot read the text");
        return WSQ_ERR_BAD_CONFIG;
    }
    line = parser->problem_mark.line + 1;
    col = parser->problem_mark.column + 1;
    if (parser->context != NULL)
        errf(c, "%s:%zu:%zu: YAML syntax error: %s (%s at line %zu, column %zu)", c->source, line,
             col, parser->problem ? parser->problem : "error", parser->context,
             (size_t)parser->context_mark.line + 1, (size_t)parser->context_mark.column + 1);
    else
        errf(c, "%s:%zu:%zu: YAML syntax error: %s", c->source, line, col,
             parser->problem ? parser->problem : "error");
    return WSQ_ERR_BAD_CONFIG;
}

/* ---------------------------------------------------------------------------------------------
 * Public API.
 */

void wsq_config_free(wsq_config_t **cfgp)
{
    if (cfgp == NULL || *cfgp == NULL)
        return;
    wsq_config_t *cfg = *cfgp;
    free(cfg->source);
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        free(cfg->listeners[i].address);
        free(cfg->listeners[i].tls_cert);
        free(cfg->listeners[i].tls_key);
        free(cfg->listeners[i].tls_ca);
    }
    free(cfg->listeners);
    free(cfg->storage.path);
    for (size_t i = 0; i < cfg->retention.n_rules; i++) {
        free(cfg->retention.rules[i].pattern);
        free(cfg->retention.rules[i].dead.topic);
    }
    free(cfg->retention.dead.topic);
    free(cfg->retention.rules);
    strlist_free(&cfg->auth.anonymous.publish);
    strlist_free(&cfg->auth.anonymous.subscribe);
    for (size_t i = 0; i < cfg->auth.n_tokens; i++) {
        wsq_token_conf_t *t = &cfg->auth.tokens[i];
        free(t->name);
        strlist_free(&t->rights.publish);
        strlist_free(&t->rights.subscribe);
    }
    if (cfg->auth.tokens != NULL) {
        explicit_bzero(cfg->auth.tokens, cfg->auth.n_tokens * sizeof(*cfg->auth.tokens));
        free(cfg->auth.tokens);
    }
    if (cfg->auth.jwt_secret != NULL) {
        explicit_bzero(cfg->auth.jwt_secret, cfg->auth.jwt_secret_len);
        free(cfg->auth.jwt_secret);
    }
    wsq_jwt_keys_free(cfg->auth.jwt_keys);
    free(cfg->auth.jwt_jwks_url);
    free(cfg->auth.jwt_jwks_ca_file);
    free(cfg->auth.jwt_identity_claim);
    free(cfg->auth.jwt_roles_claim);
    for (size_t i = 0; i < cfg->auth.n_jwt_roles; i++) {
        free(cfg->auth.jwt_roles[i].name);
        strlist_free(&cfg->auth.jwt_roles[i].rights.publish);
        strlist_free(&cfg->auth.jwt_roles[i].rights.subscribe);
    }
    free(cfg->auth.jwt_roles);
    strlist_free(&cfg->auth.jwt_template_claims);
    free(cfg->auth.jwt_issuer);
    free(cfg->auth.jwt_audience);
    strlist_free(&cfg->auth.allowed_origins);
    free(cfg);
    *cfgp = NULL;
}

/* Deepest nesting a config may have. Real configs nest 4 levels; libyaml composes a document in
 * time quadratic in its depth (100k levels took 14 s), so depth is checked first, on events,
 * stopping at the first level too deep. */
#define CONFIG_MAX_DEPTH 64

/* WSQ_OK, or WSQ_ERR_BAD_CONFIG naming file:line:column of the first collection too deep. A
 * syntax error is left for yaml_parser_load to report. */
static wsq_err check_depth(cfg_ctx_t *c, const char *yaml, size_t len)
{
    yaml_parser_t p;
    yaml_event_t ev;
    int depth = 0;
    wsq_err rc = WSQ_OK;
    if (!yaml_parser_initialize(&p))
        return cfg_nomem(c);
    yaml_parser_set_input_string(&p, (const unsigned char *)yaml, len);
    for (bool done = false; !done && rc == WSQ_OK;) {
        if (!yaml_parser_parse(&p, &ev))
            break;
        switch (ev.type) {
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (++depth > CONFIG_MAX_DEPTH) {
                errf(c, "%s:%zu:%zu: nested deeper than %d levels", c->source,
                     (size_t)ev.start_mark.line + 1, (size_t)ev.start_mark.column + 1,
                     CONFIG_MAX_DEPTH);
                rc = WSQ_ERR_BAD_CONFIG;
            }
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    return rc;
}

wsq_err wsq_config_parse(const char *yaml, size_t len, const char *source, wsq_config_t **out,
                         char *errbuf, size_t errlen)
{
    cfg_ctx_t c = {.source = source ? source : "<config>", .err = errbuf, .errlen = errlen};
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    bool have_doc = false;
    wsq_config_t *cfg = NULL;
    char *basedir = NULL;
    wsq_err rc;

    if (errbuf != NULL && errlen > 0)
        errbuf[0] = '\0';
    else
        c.errlen = 0;
    if (out == NULL || (yaml == NULL && len > 0)) {
        errf(&c, "%s: invalid arguments", c.source);
        return WSQ_ERR_INVAL;
    }
    *out = NULL;
    if (yaml == NULL)
        yaml = "";

    if ((rc = check_depth(&c, yaml, len)) != WSQ_OK)
        return rc;
    if (!yaml_parser_initialize(&parser))
        return cfg_nomem(&c);
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);

    const char *slash = strrchr(c.source, '/');
    basedir = slash == NULL       ? strdup(".")
              : slash == c.source ? strdup("/")
                                  : strndup(c.source, (size_t)(slash - c.source));
    cfg = calloc(1, sizeof(*cfg));
    if (basedir == NULL || cfg == NULL || (cfg->source = strdup(c.source)) == NULL ||
        set_defaults(cfg) != WSQ_OK) {
        rc = cfg_nomem(&c);
        goto fail;
    }
    c.basedir = basedir;

    if (!yaml_parser_load(&parser, &doc)) {
        rc = syntax_error(&c, &parser, yaml, len);
        goto fail;
    }
    have_doc = true;
    c.doc = &doc;
    /* a second document would be silently ignored: refuse it */
    if (yaml_document_get_root_node(&doc) != NULL) {
        if (!yaml_parser_load(&parser, &extra)) {
            rc = syntax_error(&c, &parser, yaml, len);
            goto fail;
        }
        yaml_node_t *r2 = yaml_document_get_root_node(&extra);
        if (r2 != NULL) {
            errf(&c, "%s:%zu:%zu: expected one YAML document; found a second one", c.source,
                 (size_t)extra.start_mark.line + 1, (size_t)extra.start_mark.column + 1);
            yaml_document_delete(&extra);
            rc = WSQ_ERR_BAD_CONFIG;
            goto fail;
        }
        yaml_document_delete(&extra);
    }

    if ((rc = parse_root(&c, yaml_document_get_root_node(&doc), cfg)) != WSQ_OK)
        goto fail;

    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    free(basedir);
    *out = cfg;
    return WSQ_OK;

fail:
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    free(basedir);
    wsq_config_free(&cfg);
    return rc;
}

wsq_err wsq_config_load(const char *path, wsq_config_t **out, char *errbuf, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;

    if (errbuf != NULL && errlen > 0)
        errbuf[0] = '\0';
    if (path == NULL || out == NULL) {
        if (errbuf != NULL && errlen > 0)
            snprintf(errbuf, errlen, "config: invalid arguments");
        return WSQ_ERR_INVAL;
    }
    *out = NULL;
    if (read_all(path, CONFIG_FILE_MAX, &text, &len) != 0) {
        int e = errno;
        if (e == ENOMEM) {
            if (errbuf != NULL && errlen > 0)
                snprintf(errbuf, errlen, "%s: out of memory", path);
            return WSQ_ERR_NOMEM;
        }
        if (errbuf != NULL && errlen > 0) {
            if (e == EFBIG)
                snprintf(errbuf, errlen, "%s: config file is larger than %lluMiB", path,
                         (unsigned long long)(CONFIG_FILE_MAX / MiB));
            else
                snprintf(errbuf, errlen, "%s: cannot read config: %s", path, strerror(e));
        }
        return WSQ_ERR_BAD_CONFIG;
    }
    wsq_err rc = wsq_config_parse(text, len, path, out, errbuf, errlen);
    free(text);
    return rc;
}

wsq_err wsq_config_default(wsq_config_t **out, char *errbuf, size_t errlen)
{
    const char *yaml = wsq_config_default_yaml();
    return wsq_config_parse(yaml, strlen(yaml), "<default>", out, errbuf, errlen);
}

const wsq_dead_letter_t *wsq_config_dead_letter(const wsq_config_t *cfg, const char *topic,
                                                size_t len)
{
    for (size_t i = 0; i < cfg->retention.n_rules; i++)
        if (wsq_topic_match(cfg->retention.rules[i].pattern, topic, len))
            return &cfg->retention.rules[i].dead;
    return &cfg->retention.dead;
}

bool wsq_config_dead_topic(const wsq_dead_letter_t *dl, const char *topic, size_t len, char *out,
                           size_t cap)
{
    return dl->topic != NULL && expand_dead(dl->topic, topic, len, out, cap);
}

void wsq_config_retention(const wsq_config_t *cfg, const char *topic, size_t len,
                          wsq_retention_t *out)
{
    if (cfg == NULL) {
        memset(out, 0, sizeof(*out));
        return;
    }
    for (size_t i = 0; i < cfg->retention.n_rules; i++) {
        if (wsq_topic_match(cfg->retention.rules[i].pattern, topic, len)) {
            *out = cfg->retention.rules[i].retention;
            return;
        }
    }
    *out = cfg->retention.defaults;
}

bool wsq_config_loopback_only(const wsq_config_t *cfg)
{
    if (cfg == NULL || cfg->n_listeners == 0)
        return false;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (!is_loopback(cfg->listeners[i].address))
            return false;
    return true;
}
