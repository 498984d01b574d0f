/*
 * Harness: process setup, assertions, the wsqd child process and plain HTTP.
 * The WebSocket client and the wsq.v1 helpers are in client.c.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define MAX_SERVERS 8

struct wsqt_server {
    char dir[128];  /* temporary directory (removed at the end) */
    char conf[160]; /* dir/wsqd.yaml */
    char log[160];  /* dir/wsqd.log: every run appends */
    char data[160]; /* dir/data: storage.path */
    pid_t pid;      /* 0 when not running */
    int port;
    int runs;
};

/* The test process's state: one test per process. */
static struct {
    const char *name;
    const char *wsqd;
    int64_t t0;
    uint64_t rng;
    wsqt_server_t *servers[MAX_SERVERS];
    bool exiting;
    int soft_failures;
} T;

/* ------------------------------------------------------------------------------------------- */
/* time, randomness */

int64_t wsqt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t wsqt_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rng_next(void)
{
    /* xorshift64*: reproducible from the printed seed */
    T.rng ^= T.rng >> 12;
    T.rng ^= T.rng << 25;
    T.rng ^= T.rng >> 27;
    return T.rng * 0x2545F4914F6CDD1Dull;
}

uint32_t wsqt_rand(uint32_t n)
{
    return n ? (uint32_t)(rng_next() % n) : 0;
}

void wsqt_fill_random(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len >= 8) {
        uint64_t v = rng_next();
        memcpy(p, &v, 8);
        p += 8;
        len -= 8;
    }
    if (len) {
        uint64_t v = rng_next();
        memcpy(p, &v, len);
    }
}

int wsqt_slow(void)
{
    const char *s = getenv("WSQT_SLOW");
    int v = s ? atoi(s) : 1;
    return v >= 1 ? v : 1;
}

/* ------------------------------------------------------------------------------------------- */
/* messages and failure */

void wsqt_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%s %6.3fs] ", T.name ? T.name : "?", (wsqt_now_ms() - T.t0) / 1000.0);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void wsqt_server_dump_log(const wsqt_server_t *s, int n)
{
    FILE *f = fopen(s->log, "r");
    if (f == NULL)
        return;
    /* keep the last n lines in a ring */
    char **ring = calloc((size_t)n, sizeof(char *));
    int count = 0;
    char *line = NULL;
    size_t cap = 0;
    while (ring && getline(&line, &cap, f) >= 0) {
        free(ring[count % n]);
        ring[count % n] = strdup(line);
        count++;
    }
    free(line);
    fclose(f);
    if (ring == NULL)
        return;
    fprintf(stderr, "---- wsqd log %s (last %d of %d lines) ----\n", s->log, count < n ? count : n,
            count);
    for (int i = count < n ? 0 : count - n; i < count; i++) {
        fputs(ring[i % n], stderr);
        free(ring[i % n]);
    }
    fprintf(stderr, "---- end of wsqd log ----\n");
    free(ring);
}

void wsqt_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\nFAIL %s at %s:%d (after %.3fs): ", T.name ? T.name : "?", file, line,
            (wsqt_now_ms() - T.t0) / 1000.0);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fprintf(stderr, "client connections (newest first):\n");
    wsqt__client_dump();
    for (int i = 0; i < MAX_SERVERS; i++)
        if (T.servers[i])
            wsqt_server_dump_log(T.servers[i], 120);
    fflush(stderr);
    exit(1);
}

void wsqt_soft_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\nFAIL (continuing) %s at %s:%d (after %.3fs): ", T.name ? T.name : "?", file,
            line, (wsqt_now_ms() - T.t0) / 1000.0);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    T.soft_failures++;
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "\nFAIL: watchdog expired (the test took too long)\n";
    ssize_t w = write(2, msg, sizeof(msg) - 1);
    (void)w;
    for (int i = 0; i < MAX_SERVERS; i++)
        if (T.servers[i] && T.servers[i]->pid > 0)
            kill(T.servers[i]->pid, SIGKILL);
    _exit(3);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_tree(const char *dir)
{
    if (dir[0])
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void cleanup(void)
{
    T.exiting = true;
    wsqt__client_fini();
    for (int i = 0; i < MAX_SERVERS; i++)
        if (T.servers[i])
            wsqt_server_free(&T.servers[i]);
}

void wsqt_init(int argc, char **argv, const char *name, unsigned watchdog_s)
{
    T.name = name;
    T.t0 = wsqt_now_ms();
    setvbuf(stderr, NULL, _IOLBF, 0);
    T.wsqd = argc > 1 ? argv[1] : getenv("WSQD");
    if (T.wsqd == NULL || access(T.wsqd, X_OK) != 0) {
        fprintf(stderr, "usage: %s PATH-TO-WSQD (or set WSQD)\n", argv[0]);
        exit(2);
    }
    const char *seed = getenv("WSQT_SEED");
    T.rng = seed ? strtoull(seed, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (T.rng == 0)
        T.rng = 1;
    wsqt_log("seed %llu (set WSQT_SEED to repeat), wsqd %s", (unsigned long long)T.rng, T.wsqd);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    alarm(watchdog_s * (unsigned)wsqt_slow());
    atexit(cleanup);
    wsqt__client_init();
}

void wsqt_pass(void)
{
    alarm(0);
    if (T.soft_failures)
        wsqt_fail(__FILE__, __LINE__, "%d check(s) failed above (the test went on after them)",
                  T.soft_failures);
    wsqt__client_fini();
    for (int i = 0; i < MAX_SERVERS; i++)
        if (T.servers[i])
            wsqt_server_free(&T.servers[i]);
    wsqt_log("PASS");
    exit(0);
}

/* ------------------------------------------------------------------------------------------- */
/* wsqd */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECKF(f != NULL, "cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    CHECK(fclose(f) == 0);
}

static void append(char *buf, size_t cap, const char *s)
{
    size_t n = strlen(buf);
    CHECKF(n + strlen(s) < cap, "config text too long");
    memcpy(buf + n, s, strlen(s) + 1);
}

/* Reads the log from offset; returns a malloc'd NUL-terminated copy. */
static char *read_log(const wsqt_server_t *s, long offset)
{
    FILE *f = fopen(s->log, "r");
    if (f == NULL)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long end = ftell(f);
    if (offset > end)
        offset = end;
    fseek(f, offset, SEEK_SET);
    char *buf = malloc((size_t)(end - offset) + 1);
    size_t n = buf ? fread(buf, 1, (size_t)(end - offset), f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

static long log_size(const wsqt_server_t *s)
{
    struct stat st;
    return stat(s->log, &st) == 0 ? (long)st.st_size : 0;
}

static void spawn(wsqt_server_t *s)
{
    long offset = log_size(s);
    int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    CHECKF(fd >= 0, "cannot open %s: %s", s->log, strerror(errno));
    pid_t parent = getpid();
    pid_t pid = fork();
    CHECKF(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(fd, 1);
        dup2(fd, 2);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGALRM, SIG_DFL);
        execl(T.wsqd, T.wsqd, "-c", s->conf, (char *)NULL);
        dprintf(2, "exec %s: %s\n", T.wsqd, strerror(errno));
        _exit(127);
    }
    close(fd);
    s->pid = pid;
    s->port = 0;
    s->runs++;
    /* wait for "listening ... port=N" then "ready" */
    int64_t deadline = wsqt_now_ms() + 15000 * wsqt_slow();
    for (;;) {
        char *text = read_log(s, offset);
        const char *l = strstr(text, " listening address=");
        if (l && s->port == 0) {
            const char *p = strstr(l, " port=");
            const char *eol = strchr(l, '\n');
            if (p && eol && p < eol)
                s->port = atoi(p + 6);
        }
        bool ready = s->port > 0 && strstr(text, " ready ") != NULL;
        free(text);
        if (ready)
            break;
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            s->pid = 0;
            wsqt_fail(__FILE__, __LINE__, "wsqd exited during startup (status 0x%x)", status);
        }
        if (wsqt_now_ms() > deadline)
            wsqt_fail(__FILE__, __LINE__, "wsqd did not log 'ready' within 15 s");
        usleep(5000);
    }
    wsqt_log("wsqd pid %ld listening on 127.0.0.1:%d (run %d, dir %s)", (long)s->pid, s->port,
             s->runs, s->dir);
}

wsqt_server_t *wsqt_server_start(const wsqt_conf_t *conf)
{
    wsqt_conf_t none = {0};
    if (conf == NULL)
        conf = &none;
    wsqt_server_t *s = calloc(1, sizeof(*s));
    CHECK(s != NULL);
    int slot = -1;
    for (int i = 0; i < MAX_SERVERS && slot < 0; i++)
        if (T.servers[i] == NULL)
            slot = i;
    CHECKF(slot >= 0, "too many servers");
    T.servers[slot] = s;
    snprintf(s->dir, sizeof(s->dir), "/tmp/wsqt-%s-XXXXXX", T.name);
    CHECKF(mkdtemp(s->dir) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(s->conf, sizeof(s->conf), "%s/wsqd.yaml", s->dir);
    snprintf(s->log, sizeof(s->log), "%s/wsqd.log", s->dir);
    snprintf(s->data, sizeof(s->data), "%s/data", s->dir);

    static char y[16384];
    y[0] = '\0';
    append(y, sizeof(y),
           "# written by the wsq integration test harness\n"
           "listeners:\n  - address: 127.0.0.1\n    port: 0\n"
           "storage:\n  path: ");
    append(y, sizeof(y), s->data);
    append(y, sizeof(y), "\n");
    if (conf->storage)
        append(y, sizeof(y), conf->storage);
    if (conf->retention) {
        append(y, sizeof(y), "retention:\n");
        append(y, sizeof(y), conf->retention);
    }
    if (conf->limits) {
        append(y, sizeof(y), "limits:\n");
        append(y, sizeof(y), conf->limits);
    }
    append(y, sizeof(y), "auth:\n");
    append(y, sizeof(y),
           conf->auth ? conf->auth
                      : "  anonymous:\n    publish: [\">\"]\n"
                        "    subscribe: [\">\"]\n    admin: false\n");
    append(y, sizeof(y), "log:\n  level: debug\n  format: text\n");
    write_file(s->conf, y);
    spawn(s);
    return s;
}

void wsqt_server_restart(wsqt_server_t *s)
{
    CHECKF(s->pid == 0, "wsqd pid %ld is still running", (long)s->pid);
    spawn(s);
}

static int decode_status(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 1000 + WTERMSIG(status);
    return 2000;
}

void wsqt_server_term(wsqt_server_t *s)
{
    CHECKF(s->pid > 0, "wsqd is not running");
    kill(s->pid, SIGTERM);
}

int wsqt_server_wait_exit(wsqt_server_t *s, int timeout_ms)
{
    CHECKF(s->pid > 0, "wsqd is not running");
    int64_t deadline = wsqt_now_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid) {
            s->pid = 0;
            return decode_status(status);
        }
        if (wsqt_now_ms() >= deadline)
            return -1;
        usleep(2000);
    }
}

int wsqt_server_stop(wsqt_server_t *s, int timeout_ms)
{
    wsqt_server_term(s);
    int rc = wsqt_server_wait_exit(s, timeout_ms);
    if (rc < 0)
        wsqt_fail(__FILE__, __LINE__, "wsqd pid %ld did not exit within %d ms of SIGTERM",
                  (long)s->pid, timeout_ms);
    return rc;
}

void wsqt_server_kill(wsqt_server_t *s)
{
    CHECKF(s->pid > 0, "wsqd is not running");
    kill(s->pid, SIGKILL);
    int status;
    waitpid(s->pid, &status, 0);
    s->pid = 0;
}

void wsqt_server_free(wsqt_server_t **ps)
{
    wsqt_server_t *s = *ps;
    if (s == NULL)
        return;
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        int status;
        waitpid(s->pid, &status, 0);
        s->pid = 0;
    }
    if (getenv("WSQT_KEEP") == NULL)
        rm_tree(s->dir);
    for (int i = 0; i < MAX_SERVERS; i++)
        if (T.servers[i] == s)
            T.servers[i] = NULL;
    free(s);
    *ps = NULL;
}

int wsqt_server_port(const wsqt_server_t *s)
{
    return s->port;
}

pid_t wsqt_server_pid(const wsqt_server_t *s)
{
    return s->pid;
}

const char *wsqt_server_dir(const wsqt_server_t *s)
{
    return s->dir;
}

bool wsqt_server_log_contains(const wsqt_server_t *s, const char *needle)
{
    char *text = read_log(s, 0);
    bool r = text && strstr(text, needle) != NULL;
    free(text);
    return r;
}

/* ------------------------------------------------------------------------------------------- */
/* plain HTTP */

void wsqt_http(int port, const char *method, const char *path, const char *extra_headers,
               const void *body, size_t body_len, wsqt_http_resp_t *r)
{
    memset(r, 0, sizeof(*r));
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct timeval tv = {10 * wsqt_slow(), 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECKF(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "HTTP connect to port %d: %s",
           port, strerror(errno));
    char head[8192], clen[64] = "";
    bool own_conn = extra_headers && strstr(extra_headers, "Connection:") != NULL;
    if (body_len > 0 || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0)
        snprintf(clen, sizeof(clen), "Content-Length: %zu\r\n", body_len);
    int n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s%s%s\r\n",
                     method, path, port, own_conn ? "" : "Connection: close\r\n",
                     extra_headers ? extra_headers : "", clen);
    CHECK(n > 0 && (size_t)n < sizeof(head));
    const char *parts[2] = {head, body};
    size_t lens[2] = {(size_t)n, body_len};
    for (int i = 0; i < 2; i++) {
        size_t off = 0;
        while (off < lens[i]) {
            ssize_t w = send(fd, parts[i] + off, lens[i] - off, MSG_NOSIGNAL);
            CHECKF(w > 0, "HTTP send: %s", strerror(errno));
            off += (size_t)w;
        }
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    CHECK(buf != NULL);
    size_t hlen = 0; /* length of the header block without its blank line; 0 = not yet */
    long content_length = -1;
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            CHECK(buf != NULL);
        }
        ssize_t got = recv(fd, buf + len, cap - len, 0);
        CHECKF(got >= 0, "HTTP recv %s %s: %s", method, path, strerror(errno));
        if (got == 0)
            break;
        len += (size_t)got;
        buf[len] = '\0';
        char *hend;
        if (hlen == 0 && (hend = strstr(buf, "\r\n\r\n")) != NULL) {
            hlen = (size_t)(hend - buf);
            size_t sl = strcspn(buf, "\r");
            if (sl >= sizeof(r->status_line))
                sl = sizeof(r->status_line) - 1;
            memcpy(r->status_line, buf, sl);
            r->status_line[sl] = '\0';
            for (char *p = buf; p < hend; p++)
                if (*p >= 'A' && *p <= 'Z')
                    *p = (char)(*p - 'A' + 'a');
            const char *cl = strstr(buf, "\r\ncontent-length:");
            if (cl && cl < hend)
                content_length = atol(cl + 17);
        }
        if (hlen && content_length >= 0 && len >= hlen + 4 + (size_t)content_length)
            break;
    }
    close(fd);
    buf[len] = '\0';
    CHECKF(hlen != 0, "HTTP %s %s: no complete response (%zu bytes)", method, path, len);
    CHECKF(strncmp(buf, "http/1.", 7) == 0, "HTTP %s %s: bad status line: %.40s", method, path,
           buf);
    r->status = atoi(buf + 9);
    size_t boff = hlen + 4;
    if (hlen >= sizeof(r->headers))
        hlen = sizeof(r->headers) - 1;
    memcpy(r->headers, buf, hlen);
    r->headers[hlen] = '\0';
    r->body_len = len - boff;
    r->body = malloc(r->body_len + 1);
    CHECK(r->body != NULL);
    memcpy(r->body, buf + boff, r->body_len);
    r->body[r->body_len] = '\0';
    free(buf);
}

void wsqt_http_free(wsqt_http_resp_t *r)
{
    free(r->body);
    r->body = NULL;
}
