/* Errors, human formats, tables, the broker's address and the data-dir lock. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "wsq/topic.h"

int wsq__ctl_fail(wsqctl_t *c, int exit, const char *name, const char *fmt, ...)
{
    if (c->fail_code)
        return exit; /* the first failure is the one reported */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->fail_msg, sizeof(c->fail_msg), fmt, ap);
    va_end(ap);
    snprintf(c->fail_name, sizeof(c->fail_name), "%s", name);
    c->fail_code = exit;
    return exit;
}

int wsq__ctl_store_fail(wsqctl_t *c, wsq_err err, const char *doing)
{
    const char *dir = c->data_dir ? c->data_dir : "?";
    switch (err) {
    case WSQ_ERR_NOSTORE:
        return wsq__ctl_fail(c, CTL_ERR, wsq_errname(err),
                             "no wsq store at %s (no data.mdb there)%s: pass --data DIR or "
                             "-c CONFIG to point at the store",
                             dir, c->data_explicit ? "" : ", the default");
    case WSQ_ERR_FORMAT_NEWER:
        return wsq__ctl_fail(c, CTL_ERR, wsq_errname(err),
                             "the store at %s was written by a newer wsq (on-disk format above "
                             "%d): use a wsqctl of that version",
                             dir, WSQ_FORMAT_VERSION);
    case WSQ_ERR_CORRUPT:
        return wsq__ctl_fail(c, CTL_ERR, wsq_errname(err),
                             "%s at %s: the store is corrupt or is not a wsq store (an LMDB file "
                             "without wsq's tables or format stamp)",
                             doing, dir);
    case WSQ_ERR_PERM:
        return wsq__ctl_fail(c, CTL_ERR, wsq_errname(err),
                             "permission denied %s at %s: run wsqctl as the user that owns the "
                             "store (wsqctl needs read and write access to its lock.mdb even "
                             "to read)",
                             doing, dir);
    case WSQ_ERR_STORAGE_FULL:
        return wsq__ctl_fail(c, CTL_ERR, wsq_errname(err),
                             "%s at %s: storage is full (the map reached its maximum or the disk "
                             "is full)",
                             doing, dir);
    default:
        return wsq__ctl_fail(c, CTL_ERR, wsq_errname(err), "%s at %s: %s", doing, dir,
                             wsq_strerror(err));
    }
}

void wsq__ctl_note(wsqctl_t *c, const char *fmt, ...)
{
    if (!c->verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("wsqctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void wsq__ctl_doc(wsqctl_t *c, json_t *doc)
{
    json_decref(c->doc);
    c->doc = doc;
}

/* ---- formats ---- */

const char *wsq__ctl_age(int64_t ms, char *buf, size_t len)
{
    if (ms < 0)
        ms = 0;
    int64_t s = ms / 1000;
    if (s < 60)
        snprintf(buf, len, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(buf, len, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
    else if (s < 86400)
        snprintf(buf, len, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
    else
        snprintf(buf, len, "%lldd%02lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
    return buf;
}

const char *wsq__ctl_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    if (bytes < 1024) {
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
        return buf;
    }
    double v = (double)bytes;
    unsigned u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    snprintf(buf, len, "%.1f %s", v, units[u]);
    return buf;
}

const char *wsq__ctl_time(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms < 0 || gmtime_r(&t, &tm) == NULL) {
        snprintf(buf, len, "-");
        return buf;
    }
    char d[32];
    strftime(d, sizeof(d), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03dZ", d, (int)(ms % 1000));
    return buf;
}

bool wsq__ctl_parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

int wsq__ctl_list_args(wsqctl_t *c, const char *topic, uint64_t *from, uint64_t *limit)
{
    if (!wsq_topic_valid(topic, strlen(topic)))
        return wsq__ctl_bad_topic(c, topic);
    if (c->from && (!wsq__ctl_parse_u64(c->from, from) || *from == 0))
        return wsq__ctl_fail(c, CTL_USAGE, "usage", "--from must be a seq (1 or more), not '%s'",
                             c->from);
    if (c->limit && (!wsq__ctl_parse_u64(c->limit, limit) || *limit == 0 || *limit > 1000000))
        return wsq__ctl_fail(c, CTL_USAGE, "usage", "--limit must be 1..1000000, not '%s'",
                             c->limit);
    return CTL_OK;
}

int wsq__ctl_bad_topic(wsqctl_t *c, const char *name)
{
    return wsq__ctl_fail(c, CTL_USAGE, "bad_topic",
                         "'%s' is not a topic name: 1-255 bytes of [A-Za-z0-9._/-], segments "
                         "separated by '.' or '/', none empty",
                         name);
}

/* ---- tables ---- */

void wsq__ctl_table_init(ctl_table_t *t, unsigned ncols, const char **head, const bool *right)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    t->head = head;
    t->right = right;
}

bool wsq__ctl_table_add(ctl_table_t *t, const char **cells)
{
    if (t->rows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        char **n = realloc(t->cells, cap * t->ncols * sizeof(char *));
        if (n == NULL)
            return false;
        t->cells = n;
        t->cap = cap;
    }
    char **row = t->cells + t->rows * t->ncols;
    for (unsigned i = 0; i < t->ncols; i++) {
        row[i] = strdup(cells[i] ? cells[i] : "");
        if (row[i] == NULL) {
            while (i > 0)
                free(row[--i]);
            return false;
        }
    }
    t->rows++;
    return true;
}

/* Display width of UTF-8 text: code points (wide characters are rare in these columns). */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

void wsq__ctl_table_print(const ctl_table_t *t, FILE *f)
{
    size_t wd[16] = {0};
    for (unsigned i = 0; i < t->ncols && i < 16; i++) {
        wd[i] = width(t->head[i]);
        for (size_t r = 0; r < t->rows; r++) {
            size_t w = width(t->cells[r * t->ncols + i]);
            if (w > wd[i])
                wd[i] = w;
        }
    }
    for (size_t r = 0; r <= t->rows; r++) {
        for (unsigned i = 0; i < t->ncols; i++) {
            const char *s = r == 0 ? t->head[i] : t->cells[(r - 1) * t->ncols + i];
            size_t pad = wd[i] - width(s);
            bool last = i + 1 == t->ncols;
            if (t->right[i])
                fprintf(f, "%*s%s", (int)pad, "", s);
            else
                fprintf(f, "%s%*s", s, last ? 0 : (int)pad, "");
            if (!last)
                fputs("  ", f);
        }
        fputc('\n', f);
    }
}

void wsq__ctl_table_fini(ctl_table_t *t)
{
    for (size_t i = 0; i < t->rows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

/* ---- the broker's address ---- */

bool wsq__ctl_parse_url(const char *s, ctl_url_t *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    const char *p = s;
    bool tls = false;
    if (strncmp(p, "http://", 7) == 0 || strncmp(p, "https://", 8) == 0 ||
        strncmp(p, "ws://", 5) == 0 || strncmp(p, "wss://", 6) == 0) {
        tls = p[4] == 's' || p[2] == 's';
        p = strstr(p, "://") + 3;
    } else if (strstr(p, "://") != NULL) {
        snprintf(err, errlen, "the scheme must be http, https, ws or wss");
        return false;
    }
    const char *host = p, *host_end;
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(host, ']');
        if (host_end == NULL) {
            snprintf(err, errlen, "unterminated [IPv6 address]");
            return false;
        }
        p = host_end + 1;
    } else {
        while (*p && *p != ':' && *p != '/')
            p++;
        host_end = p;
    }
    size_t hl = (size_t)(host_end - host);
    if (hl == 0 || hl >= sizeof(u->host)) {
        snprintf(err, errlen, "no host");
        return false;
    }
    memcpy(u->host, host, hl);
    u->host[hl] = '\0';
    unsigned long port = tls ? 443 : 80;
    if (*p == ':') {
        char *end;
        errno = 0;
        port = strtoul(p + 1, &end, 10);
        if (end == p + 1 || errno || port == 0 || port > 65535) {
            snprintf(err, errlen, "bad port");
            return false;
        }
        p = end;
    }
    if (*p != '\0' && strcmp(p, "/") != 0) {
        snprintf(err, errlen, "give only scheme://host:port (no path)");
        return false;
    }
    u->tls = tls;
    u->port = (unsigned)port;
    bool v6 = strchr(u->host, ':') != NULL;
    snprintf(u->base, sizeof(u->base), "%s://%s%s%s:%u", tls ? "https" : "http", v6 ? "[" : "",
             u->host, v6 ? "]" : "", u->port);
    return true;
}

/* ---- the data-dir lock and directories ---- */

long wsq__ctl_lock_holder(const char *dir, char *what, size_t len)
{
    long pid = wsq_store_lock_holder(dir);
    if (what && len) {
        snprintf(what, len, "unknown process");
        if (pid > 0) {
            char path[64];
            snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
            FILE *f = fopen(path, "r");
            if (f) {
                if (fgets(what, (int)len, f))
                    what[strcspn(what, "\n")] = '\0';
                fclose(f);
            }
        }
    }
    return pid;
}

bool wsq__ctl_same_dir(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];
    if (realpath(a, ra) == NULL || realpath(b, rb) == NULL)
        return strcmp(a, b) == 0;
    return strcmp(ra, rb) == 0;
}
