/* Pipelined wsq.v1 publisher with confirm tracking. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static unsigned next_pipe_id = 1;

void wsqt_pipe_init(wsqt_pipe_t *p, wsqt_conn_t *c, const char *topic, uint32_t window)
{
    memset(p, 0, sizeof(*p));
    p->c = c;
    snprintf(p->topic, sizeof(p->topic), "%s", topic);
    p->window = window;
    p->id = next_pipe_id++;
}

void wsqt_pipe_fini(wsqt_pipe_t *p)
{
    for (size_t i = 0; i < p->nsent; i++)
        free(p->sent[i].data);
    free(p->sent);
    memset(p, 0, sizeof(*p));
}

size_t wsqt_pipe_inflight(const wsqt_pipe_t *p)
{
    return p->nsent - p->nreplied;
}

static void ref_of(const wsqt_pipe_t *p, size_t i, char *buf, size_t cap)
{
    snprintf(buf, cap, "%llu", (unsigned long long)p->id * 1000000000ull + i);
}

bool wsqt_pipe_send(wsqt_pipe_t *p, const void *data, size_t len, bool binary)
{
    if (wsqt_pipe_inflight(p) >= p->window)
        return false;
    if (p->nsent == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 256;
        p->sent = realloc(p->sent, p->cap * sizeof(*p->sent));
        CHECK(p->sent != NULL);
    }
    wsqt_sent_t *s = &p->sent[p->nsent];
    memset(s, 0, sizeof(*s));
    s->data = malloc(len + 1);
    CHECK(s->data != NULL);
    if (len)
        memcpy(s->data, data, len);
    s->data[len] = '\0';
    s->len = len;
    s->binary = binary;
    char ref[32];
    ref_of(p, p->nsent, ref, sizeof(ref));
    p->nsent++;
    wsqt_send_pub(p->c, p->topic, data, len, binary, ref);
    return true;
}

size_t wsqt_pipe_poll(wsqt_pipe_t *p)
{
    size_t n = 0;
    wsqt_msg_t *m;
    while (wsqt_pending(p->c) > 0 && (m = wsqt_recv(p->c, 0)) != NULL) {
        wsqt_frame_t *fr = wsqt_frame_parse(m);
        wsqt_msg_free(&m);
        bool ok = strcmp(fr->f.op, "ok") == 0;
        CHECKF(ok || strcmp(fr->f.op, "err") == 0, "publisher %u got an unexpected frame: %s",
               p->id, fr->text);
        char want[32];
        CHECKF(p->nreplied < p->nsent, "publisher %u: a reply with nothing in flight: %s", p->id,
               fr->text);
        ref_of(p, p->nreplied, want, sizeof(want));
        CHECKF(strcmp(fr->f.ref, want) == 0,
               "publisher %u: reply out of publish order: expected ref %s, got %s", p->id, want,
               fr->text);
        wsqt_sent_t *s = &p->sent[p->nreplied];
        s->replied = true;
        if (ok) {
            static const char *const keys[] = {"op", "ref", "topic", "seq", NULL};
            wsqt_jkeys(fr->j, keys);
            EQ_STR(fr->f.topic, p->topic);
            CHECKF(fr->f.seq > p->last_seq,
                   "publisher %u: confirm seq %llu is not above the previous %llu: %s", p->id,
                   (unsigned long long)fr->f.seq, (unsigned long long)p->last_seq, fr->text);
            s->seq = fr->f.seq;
            p->last_seq = fr->f.seq;
            p->nok++;
        } else {
            snprintf(s->err, sizeof(s->err), "%s", fr->f.code);
            p->nerr++;
        }
        p->nreplied++;
        n++;
        wsqt_frame_free(&fr);
    }
    return n;
}

static bool drained(void *arg)
{
    wsqt_pipe_t *p = arg;
    wsqt_pipe_poll(p);
    return p->nreplied == p->nsent || wsqt_state(p->c) != WSQT_OPEN;
}

void wsqt_pipe_drain(wsqt_pipe_t *p, int timeout_ms)
{
    CHECKF(wsqt_wait(timeout_ms, drained, p), "publisher %u: %zu replies missing after %d ms",
           p->id, p->nsent - p->nreplied, timeout_ms);
    CHECKF(p->nreplied == p->nsent,
           "publisher %u: connection ended with %zu replies missing "
           "(close %d \"%s\")",
           p->id, p->nsent - p->nreplied, wsqt_close_code(p->c), wsqt_close_reason(p->c));
}

size_t wsqt_payload(char *buf, size_t len, const char *tag, unsigned long n, bool binary)
{
    int k = snprintf(buf, len + 1, "%s-%lu-", tag, n);
    if ((size_t)k > len) {
        len = (size_t)k;
        snprintf(buf, len + 1, "%s-%lu-", tag, n);
    }
    if (binary) {
        wsqt_fill_random(buf + k, len - (size_t)k);
    } else {
        for (size_t i = (size_t)k; i < len; i++)
            buf[i] = (char)('a' + wsqt_rand(26));
    }
    buf[len] = '\0';
    return len;
}
