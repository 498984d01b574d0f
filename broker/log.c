/* Structured logging: one line per event, text or JSON, thread-safe.
 *
 * Messages are written as space-separated key=value pairs (values with spaces quoted, "...").
 * In JSON mode each pair becomes a member; anything else goes into "msg". This is the one
 * process-wide state wsqd keeps: every thread logs, and the format is fixed at start. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "log.h"

static struct {
    _Atomic int level;
    _Atomic bool json;
    pthread_mutex_t lock;
} logger = {WSQ_LOG_INFO, false, PTHREAD_MUTEX_INITIALIZER};

static const char *level_name[] = {"error", "warn", "info", "debug"};

void wsq__log_init(wsq_log_level_t level, bool json)
{
    logger.level = (int)level;
    logger.json = json;
}

static void json_str(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

const char *wsq__log_q(char *buf, size_t cap, const char *s)
{
    size_t o = 0;
    if (cap < 3) {
        if (cap)
            buf[0] = '\0';
        return buf;
    }
    /* a plain word (printable ASCII without space, '"', '\\' or '=') stays bare, as logfmt does */
    bool plain = *s != '\0' && strlen(s) < cap;
    for (const char *p = s; plain && *p; p++)
        plain = *p > 0x20 && *p < 0x7f && *p != '"' && *p != '\\' && *p != '=';
    if (plain) {
        memcpy(buf, s, strlen(s) + 1);
        return buf;
    }
    buf[o++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[5];
        size_t n = 1;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            n = 2;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", c);
            n = 4;
        } else {
            esc[0] = (char)c;
        }
        /* room for this, the closing quote and the NUL; a cut never splits a UTF-8 sequence */
        if (o + n + 2 > cap) {
            while (o > 1 && ((unsigned char)buf[o - 1] & 0xc0) == 0x80)
                o--;
            if (o > 1 && (unsigned char)buf[o - 1] >= 0xc0)
                o--;
            break;
        }
        memcpy(buf + o, esc, n);
        o += n;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* Writes "k=v k2=\"v 2\" text" as JSON members. */
static void json_pairs(FILE *f, const char *s)
{
    const char *msg = NULL;
    size_t msg_len = 0;
    while (*s) {
        while (*s == ' ')
            s++;
        if (!*s)
            break;
        const char *k = s;
        while (*s && *s != '=' && *s != ' ')
            s++;
        if (*s != '=' || s == k) {
            /* not a pair: the rest is free text */
            msg = k;
            msg_len = strlen(k);
            break;
        }
        size_t klen = (size_t)(s - k);
        s++;
        const char *v = s;
        size_t vlen;
        char unq[1024];
        if (*s == '"') {
            /* a quoted value (wsq__log_q): its escapes undone, so JSON shows the bytes */
            s++;
            vlen = 0;
            while (*s && *s != '"') {
                char ch = *s++;
                if (ch == '\\' && *s == 'x' && s[1] && s[2]) {
                    char hex[3] = {s[1], s[2], 0};
                    ch = (char)strtol(hex, NULL, 16);
                    s += 3;
                } else if (ch == '\\' && *s) {
                    ch = *s++;
                }
                if (vlen < sizeof(unq))
                    unq[vlen++] = ch;
            }
            v = unq;
            if (*s)
                s++;
        } else {
            while (*s && *s != ' ')
                s++;
            vlen = (size_t)(s - v);
        }
        fputc(',', f);
        json_str(f, k, klen);
        fputc(':', f);
        json_str(f, v, vlen);
    }
    if (msg) {
        fputs(",\"msg\":", f);
        json_str(f, msg, msg_len);
    }
}

void wsq__log(wsq_log_level_t level, const char *event, const char *fmt, ...)
{
    if ((int)level > logger.level)
        return;
    char body[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[64];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));

    pthread_mutex_lock(&logger.lock);
    if (logger.json) {
        fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":", ts, level_name[level]);
        json_str(stderr, event, strlen(event));
        json_pairs(stderr, body);
        fputs("}\n", stderr);
    } else {
        fprintf(stderr, "%s %-5s %s %s\n", ts, level_name[level], event, body);
    }
    fflush(stderr);
    pthread_mutex_unlock(&logger.lock);
}
