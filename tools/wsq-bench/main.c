/*
 * wsq-bench: options, the scenarios' connection plans, the phase driver, progress, and the
 * report (human summary or one JSON object). See usage() and docs/bench/broker.md.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "scan.h"
#include "wsq/proto.h"

global_t g;

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static const char *const scenario_names[] = {"publish", "drain", "fanout", "latency", "idle"};

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: wsq-bench SCENARIO [options]\n"
        "\n"
        "Scenarios (all against a running broker, --url):\n"
        "  publish   N connections publish with a window of unconfirmed messages; confirmed\n"
        "            msgs/s and publish->confirm latency (--mode raw: no confirms; sent msgs/s,\n"
        "            and with --verify the delivered msgs/s and publish->deliver latency)\n"
        "  drain     preload K messages, then C durable consumers drain them from earliest,\n"
        "            acking cumulatively; drained msgs/s, count and order checked (--shared:\n"
        "            C members of one work queue; each message delivered once, to one member)\n"
        "  fanout    one publisher at a fixed rate, M subscribers on its topic; deliveries/s\n"
        "            and publish->deliver latency\n"
        "  latency   fixed rate, one publisher, one subscriber; publish->deliver latency\n"
        "  idle      N idle connections held for --seconds; broker RSS and CPU (--broker-pid)\n"
        "  selftest  check the bench's encoder and scanner against the wsq codec, then exit\n"
        "\n"
        "Options (defaults depend on the scenario; shown for publish unless noted):\n"
        "  --url URL             broker, ws://HOST:PORT[/PATH] (ws://127.0.0.1:8080)\n"
        "  --driver NAME         system under test: wsq, mqtt (Mosquitto: MQTT 3.1.1, QoS 1,\n"
        "                        persistent sessions; raw = QoS 0), nats (JetStream: PubAck\n"
        "                        confirms, durable/ephemeral push consumers; raw = core NATS)\n"
        "  --token TOKEN         sent as Authorization: Bearer TOKEN\n"
        "  --pub-token TOKEN     the same for publishers only (raw mode: a publish-only\n"
        "                        identity, so publishers do not receive their topic)\n"
        "  --topic NAME          topic (default: a fresh bench.<scenario>.<pid>-<time>)\n"
        "  --topics K            publish: spread the connections over K topics (1)\n"
        "  --conns N             publish: publishers (16); idle: connections (10000)\n"
        "  --window W            publish: unconfirmed per connection (256); drain, fanout:\n"
        "                        subscription window (1000, 256)\n"
        "  --size S              payload bytes (128; >= 32 carries a send timestamp)\n"
        "  --seconds D           measured seconds (5; fanout/latency 10; idle 30;\n"
        "                        drain: the most the drain may take, 120)\n"
        "  --warmup D            seconds of load before measuring (1; fanout/latency 2)\n"
        "  --mode wsq|raw        publish, idle: wsq.v1 or raw mode (wsq)\n"
        "  --verify              publish: also subscribe to each topic, count deliveries\n"
        "  --preload K           drain: messages to publish first (1000000; 0: drain --topic)\n"
        "  --preload-conns N     drain: preload publishers (4)\n"
        "  --preload-window W    drain: their window (1000)\n"
        "  --consumers C         drain: durable consumers (1)\n"
        "  --ack-every N         drain: cumulative ack after N messages (window/4)\n"
        "  --resume              drain: create the consumers before the preload, so the\n"
        "                        drain resumes existing consumers (wsq.v1 only)\n"
        "  --shared              drain, wsq driver, wsq.v1: the C consumers are members of ONE\n"
        "                        shared consumer and ack every message by seq (a shared\n"
        "                        consumer refuses cumulative acks, so --ack-every > 1 is an\n"
        "                        error); checks that across the members each preloaded message\n"
        "                        came exactly once and each member's seqs increase; reports\n"
        "                        the per-member counts (with --resume: the consumer exists\n"
        "                        before the preload, and C fresh members join its backlog)\n"
        "  --rate R              fanout, latency: publishes per second (1000; latency 10000)\n"
        "  --burst B             token bucket depth in messages (rate/10, at least 1)\n"
        "  --subs M              fanout, latency: subscribers (1000; latency 1)\n"
        "  --sub-mode wsq|raw    fanout, latency, drain: subscriber protocol (wsq)\n"
        "  --pub-mode wsq|raw    fanout, latency: publisher protocol (wsq)\n"
        "  --threads N           event-loop threads (1)\n"
        "  --connect-concurrency N  connection attempts in flight (256)\n"
        "  --timeout D           most seconds for setup, preload stalls and the stop phase (30)\n"
        "  --broker-pid PID      sample the broker's CPU (and RSS) from /proc\n"
        "  --json                print one JSON object instead of the summary\n"
        "  --quiet               no progress line on stderr\n"
        "\n"
        "Exit status: 0 clean run, 1 errors were counted (see the report), 2 usage,\n"
        "3 setup failure.\n");
}

/* ------------------------------------------------------------------------------------------- */
/* Options                                                                                      */

static int parse_url(opts_t *o)
{
    const char *u = o->url;
    if (strncmp(u, "ws://", 5) != 0) {
        fprintf(stderr, "wsq-bench: --url must be ws://HOST:PORT[/PATH] (wss is not supported)\n");
        return -1;
    }
    u += 5;
    const char *slash = strchr(u, '/');
    size_t hl = slash ? (size_t)(slash - u) : strlen(u);
    if (hl == 0 || hl >= sizeof(o->host)) {
        fprintf(stderr, "wsq-bench: bad --url host\n");
        return -1;
    }
    memcpy(o->host, u, hl);
    o->host[hl] = 0;
    snprintf(o->base_path, sizeof(o->base_path), "%s", slash && strcmp(slash, "/") ? slash : "");
    char host[256], port[16] = "80";
    const char *hs = o->host, *he;
    if (*hs == '[') { /* [v6]:port */
        he = strchr(hs, ']');
        if (he == NULL)
            return -1;
        hs++;
        if (he[1] == ':')
            snprintf(port, sizeof(port), "%s", he + 2);
    } else {
        he = strrchr(hs, ':');
        if (he)
            snprintf(port, sizeof(port), "%s", he + 1);
        else
            he = hs + strlen(hs);
    }
    snprintf(host, sizeof(host), "%.*s", (int)(he - hs), hs);
    struct addrinfo hints = {0}, *res;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "wsq-bench: %s: %s\n", o->host, gai_strerror(rc));
        return -1;
    }
    memcpy(&o->addr, res->ai_addr, res->ai_addrlen);
    o->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int parse_flavor(const char *s, enum flavor *f)
{
    if (strcmp(s, "wsq") == 0 || strcmp(s, "wsq.v1") == 0 || strcmp(s, "v1") == 0)
        *f = FL_V1;
    else if (strcmp(s, "raw") == 0)
        *f = FL_RAW;
    else
        return -1;
    return 0;
}

static bool num(const char *s, double lo, double hi, double *v)
{
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !(x >= lo && x <= hi))
        return false;
    *v = x;
    return true;
}

enum {
    O_URL = 256,
    O_DRIVER,
    O_TOKEN,
    O_TOPIC,
    O_TOPICS,
    O_CONNS,
    O_WINDOW,
    O_SIZE,
    O_SECONDS,
    O_WARMUP,
    O_MODE,
    O_VERIFY,
    O_PRELOAD,
    O_PRELOAD_CONNS,
    O_PRELOAD_WINDOW,
    O_CONSUMERS,
    O_ACK_EVERY,
    O_RESUME,
    O_RATE,
    O_BURST,
    O_SUBS,
    O_SUB_MODE,
    O_PUB_MODE,
    O_THREADS,
    O_CC,
    O_TIMEOUT,
    O_PID,
    O_JSON,
    O_QUIET,
    O_HELP,
    O_PUB_TOKEN,
    O_SHARED
};

/* --shared is a drain of one wsq shared consumer, acked message by message. */
static int shared_usage(opts_t *o)
{
    const char *why = NULL;
    if (o->scenario != SC_DRAIN)
        why = "--shared applies to drain only";
    else if (strcmp(o->driver, "wsq") != 0)
        why = "--shared is implemented for --driver wsq only";
    else if (o->sub_mode != FL_V1)
        why = "--shared needs --sub-mode wsq (members ack each message by seq)";
    else if (o->ack_every > 1)
        why = "--shared acks every message by seq (a shared consumer refuses cumulative acks): "
              "drop --ack-every";
    if (why) {
        fprintf(stderr, "wsq-bench: %s\n", why);
        return -1;
    }
    o->ack_every = 1;
    return 0;
}

static int parse_opts(int argc, char **argv, opts_t *o, bool *selftest)
{
    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
            usage(stdout);
            exit(0);
        }
        usage(stderr);
        return -1;
    }
    int sc = -1;
    for (int i = 0; i < 5; i++)
        if (strcmp(argv[1], scenario_names[i]) == 0)
            sc = i;
    *selftest = strcmp(argv[1], "selftest") == 0;
    if (sc < 0 && !*selftest) {
        fprintf(stderr, "wsq-bench: unknown scenario \"%s\"\n", argv[1]);
        return -1;
    }
    if (*selftest)
        sc = SC_PUBLISH;
    memset(o, 0, sizeof(*o));
    o->scenario = (enum scenario)sc;
    o->driver = "wsq";
    o->url = "ws://127.0.0.1:8080";
    o->topics = 1;
    o->size = 128;
    o->threads = 1;
    o->connect_concurrency = 256;
    o->timeout = 30;
    o->preload_conns = 4;
    o->preload_window = 1000;
    o->consumers = 1;
    o->mode = o->sub_mode = o->pub_mode = FL_V1;
    switch (o->scenario) {
    case SC_PUBLISH:
        o->conns = 16, o->window = 256, o->seconds = 5, o->warmup = 1;
        break;
    case SC_DRAIN:
        o->preload = 1000000, o->window = 1000, o->seconds = 120;
        break;
    case SC_FANOUT:
        o->rate = 1000, o->subs = 1000, o->window = 256, o->seconds = 10, o->warmup = 2;
        break;
    case SC_LATENCY:
        o->rate = 10000, o->subs = 1, o->window = 256, o->seconds = 10, o->warmup = 2;
        break;
    case SC_IDLE:
        o->conns = 10000, o->seconds = 30;
        break;
    }
    static const struct option lo[] = {
        {"url", 1, 0, O_URL},
        {"driver", 1, 0, O_DRIVER},
        {"token", 1, 0, O_TOKEN},
        {"topic", 1, 0, O_TOPIC},
        {"topics", 1, 0, O_TOPICS},
        {"conns", 1, 0, O_CONNS},
        {"window", 1, 0, O_WINDOW},
        {"size", 1, 0, O_SIZE},
        {"seconds", 1, 0, O_SECONDS},
        {"warmup", 1, 0, O_WARMUP},
        {"mode", 1, 0, O_MODE},
        {"verify", 0, 0, O_VERIFY},
        {"preload", 1, 0, O_PRELOAD},
        {"preload-conns", 1, 0, O_PRELOAD_CONNS},
        {"preload-window", 1, 0, O_PRELOAD_WINDOW},
        {"consumers", 1, 0, O_CONSUMERS},
        {"ack-every", 1, 0, O_ACK_EVERY},
        {"resume", 0, 0, O_RESUME},
        {"rate", 1, 0, O_RATE},
        {"burst", 1, 0, O_BURST},
        {"subs", 1, 0, O_SUBS},
        {"sub-mode", 1, 0, O_SUB_MODE},
        {"pub-mode", 1, 0, O_PUB_MODE},
        {"threads", 1, 0, O_THREADS},
        {"connect-concurrency", 1, 0, O_CC},
        {"timeout", 1, 0, O_TIMEOUT},
        {"broker-pid", 1, 0, O_PID},
        {"json", 0, 0, O_JSON},
        {"quiet", 0, 0, O_QUIET},
        {"help", 0, 0, O_HELP},
        {"pub-token", 1, 0, O_PUB_TOKEN},
        {"shared", 0, 0, O_SHARED},
        {0, 0, 0, 0},
    };
    optind = 2;
    int ch;
    double v = 0;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        bool ok = true;
        switch (ch) {
        case O_URL:
            o->url = optarg;
            break;
        case O_DRIVER:
            o->driver = optarg;
            break;
        case O_TOKEN:
            o->token = optarg;
            break;
        case O_PUB_TOKEN:
            o->pub_token = optarg;
            break;
        case O_TOPIC:
            o->topic = optarg;
            break;
        case O_TOPICS:
            ok = num(optarg, 1, 100000, &v), o->topics = (int)v;
            break;
        case O_CONNS:
            ok = num(optarg, 1, 1000000, &v), o->conns = (int)v;
            break;
        case O_WINDOW:
            ok = num(optarg, 1, 1000000, &v), o->window = (int)v;
            break;
        case O_SIZE:
            ok = num(optarg, 0, 256 << 20, &v), o->size = (int)v;
            break;
        case O_SECONDS:
            ok = num(optarg, 0.1, 1e6, &o->seconds);
            break;
        case O_WARMUP:
            ok = num(optarg, 0, 1e6, &o->warmup);
            break;
        case O_MODE:
            ok = parse_flavor(optarg, &o->mode) == 0;
            break;
        case O_VERIFY:
            o->verify = true;
            break;
        case O_PRELOAD:
            ok = num(optarg, 0, 1e12, &v), o->preload = (long long)v;
            break;
        case O_PRELOAD_CONNS:
            ok = num(optarg, 1, 10000, &v), o->preload_conns = (int)v;
            break;
        case O_PRELOAD_WINDOW:
            ok = num(optarg, 1, 1000000, &v), o->preload_window = (int)v;
            break;
        case O_CONSUMERS:
            ok = num(optarg, 1, 100000, &v), o->consumers = (int)v;
            break;
        case O_ACK_EVERY:
            ok = num(optarg, 1, 1000000, &v), o->ack_every = (int)v;
            break;
        case O_RESUME:
            o->resume = true;
            break;
        case O_SHARED:
            o->shared = true;
            break;
        case O_RATE:
            ok = num(optarg, 0.001, 1e8, &o->rate);
            break;
        case O_BURST:
            ok = num(optarg, 1, 1e7, &v), o->burst = (int)v;
            break;
        case O_SUBS:
            ok = num(optarg, 1, 1000000, &v), o->subs = (int)v;
            break;
        case O_SUB_MODE:
            ok = parse_flavor(optarg, &o->sub_mode) == 0;
            o->sub_mode_set = true;
            break;
        case O_PUB_MODE:
            ok = parse_flavor(optarg, &o->pub_mode) == 0;
            break;
        case O_THREADS:
            ok = num(optarg, 1, 256, &v), o->threads = (int)v;
            break;
        case O_CC:
            ok = num(optarg, 1, 100000, &v), o->connect_concurrency = (int)v;
            break;
        case O_TIMEOUT:
            ok = num(optarg, 0.1, 1e6, &o->timeout);
            break;
        case O_PID:
            ok = num(optarg, 1, 1 << 30, &v), o->broker_pid = (int)v;
            break;
        case O_JSON:
            o->json = true;
            break;
        case O_QUIET:
            o->quiet = true;
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
        if (!ok) {
            fprintf(stderr, "wsq-bench: bad value for --%s: %s\n", lo[ch - O_URL].name, optarg);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "wsq-bench: unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    if (o->shared && shared_usage(o) < 0)
        return -1;
    if (o->ack_every == 0)
        o->ack_every = o->window / 4 > 0 ? o->window / 4 : 1;
    if (o->burst == 0)
        o->burst = o->rate / 10 >= 1 ? (int)(o->rate / 10) : 1;
    if (o->scenario == SC_DRAIN && o->ack_every > o->window) {
        fprintf(stderr, "wsq-bench: --ack-every must be at most --window (or the drain stalls)\n");
        return -1;
    }
    if (o->scenario == SC_DRAIN && o->resume && o->sub_mode == FL_RAW) {
        fprintf(stderr, "wsq-bench: --resume needs --sub-mode wsq\n");
        return -1;
    }
    if (o->scenario == SC_DRAIN && o->preload == 0 && o->topic == NULL) {
        fprintf(stderr, "wsq-bench: drain with --preload 0 needs --topic\n");
        return -1;
    }
    if (o->scenario == SC_DRAIN && o->preload == 0 && o->sub_mode == FL_RAW) {
        fprintf(stderr, "wsq-bench: a raw drain needs --preload (raw mode does not announce the "
                        "backlog's size)\n");
        return -1;
    }
    if ((o->scenario == SC_FANOUT || o->scenario == SC_LATENCY) && o->size < PAYLOAD_STAMP) {
        fprintf(stderr, "wsq-bench: %s needs --size >= %d (the payload carries the send time)\n",
                scenario_names[o->scenario], PAYLOAD_STAMP);
        return -1;
    }
    if (o->scenario == SC_PUBLISH && o->mode == FL_RAW && o->size == 0) {
        fprintf(stderr, "wsq-bench: raw mode needs --size >= 1\n");
        return -1;
    }
    if (o->topic == NULL) {
        snprintf(o->topic_buf, sizeof(o->topic_buf), "bench.%s.%d-%ld", scenario_names[o->scenario],
                 (int)getpid(), (long)time(NULL));
        o->topic = o->topic_buf;
    }
    if (strlen(o->topic) > 200) {
        fprintf(stderr, "wsq-bench: --topic is too long\n");
        return -1;
    }
    if (parse_url(o) < 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* Plans: which connections each scenario opens                                                  */

static char **topic_names;

static conn_t *add_conn(size_t *n, int role, enum flavor fl, const char *topic)
{
    conn_t *c = &g.conns[(*n)++];
    c->idx = (uint32_t)(*n - 1);
    c->role = (uint8_t)role;
    c->flavor = (uint8_t)fl;
    c->topic = topic;
    c->topic_len = strlen(topic);
    c->window = 1;
    return c;
}

static int plan(void)
{
    opts_t *o = &g.o;
    size_t max = 0, n = 0;
    switch (o->scenario) {
    case SC_PUBLISH:
        max = (size_t)o->conns + (o->verify ? (size_t)o->topics : 0);
        break;
    case SC_DRAIN:
        max = (size_t)(o->preload ? o->preload_conns : 0) + (size_t)o->consumers;
        break;
    case SC_FANOUT:
    case SC_LATENCY:
        max = 1 + (size_t)o->subs;
        break;
    case SC_IDLE:
        max = (size_t)o->conns;
        break;
    }
    g.conns = calloc(max, sizeof(conn_t));
    topic_names = calloc((size_t)o->topics, sizeof(char *));
    if (g.conns == NULL || topic_names == NULL)
        return -1;
    for (int i = 0; i < o->topics; i++) {
        char b[300];
        if (o->topics == 1)
            snprintf(b, sizeof(b), "%s", o->topic);
        else
            snprintf(b, sizeof(b), "%s.%d", o->topic, i);
        topic_names[i] = strdup(b);
    }
    switch (o->scenario) {
    case SC_PUBLISH:
        for (int i = 0; i < o->conns; i++) {
            conn_t *c = add_conn(&n, R_PUB, o->mode, topic_names[i % o->topics]);
            c->window = (uint32_t)o->window;
            c->ridx = (uint32_t)i;
        }
        if (o->verify)
            for (int i = 0; i < o->topics; i++)
                add_conn(&n, R_SUB, o->sub_mode_set ? o->sub_mode : o->mode, topic_names[i]);
        break;
    case SC_DRAIN:
        if (o->preload)
            for (int i = 0; i < o->preload_conns; i++) {
                conn_t *c = add_conn(&n, R_PUB, FL_V1, o->topic);
                c->window = (uint32_t)o->preload_window;
                uint64_t q = (uint64_t)o->preload / (uint64_t)o->preload_conns +
                             ((uint64_t)i < (uint64_t)o->preload % (uint64_t)o->preload_conns);
                c->quota = q ? q : UINT64_MAX; /* 0 would mean unlimited: see below */
                if (q == 0)
                    c->role = R_IDLE;
            }
        atomic_store(&g.shared_lo, UINT64_MAX);
        for (int i = 0; i < o->consumers; i++) {
            conn_t *c = add_conn(&n, R_SUB, o->sub_mode, o->topic);
            c->ridx = (uint32_t)i;
            if (o->shared)
                snprintf(c->consumer, sizeof(c->consumer), "wsqb-%s-shared", g.run_id);
            else
                snprintf(c->consumer, sizeof(c->consumer), "wsqb-%s-%d", g.run_id, i);
            c->shared = o->shared;
            c->durable = true;
            c->check_order = true;
            c->sub_pending = true;
            c->resume_unsub = o->resume;
        }
        break;
    case SC_FANOUT:
    case SC_LATENCY:
        add_conn(&n, R_RATE, o->pub_mode, o->topic);
        for (int i = 0; i < o->subs; i++) {
            conn_t *c = add_conn(&n, R_SUB, o->sub_mode, o->topic);
            c->ridx = (uint32_t)i;
            c->check_order = true;
        }
        break;
    case SC_IDLE:
        for (int i = 0; i < o->conns; i++) {
            conn_t *c = add_conn(&n, R_IDLE, o->mode, o->topic);
            c->ridx = (uint32_t)i;
        }
        break;
    }
    g.nconns = n;
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* Counters, /proc, rusage                                                                       */

static uint64_t sum_ctr(size_t off)
{
    uint64_t s = 0;
    for (int i = 0; i < g.nthr; i++)
        s += atomic_load_explicit((ctr_t *)((char *)&g.thr[i].st + off), memory_order_relaxed);
    return s;
}
#define SUM(f) sum_ctr(offsetof(stats_t, f))

typedef struct {
    uint64_t t;
    uint64_t sent, confirmed, delivered, echoed, acks, bytes_in, bytes_out;
    double cpu_user, cpu_sys; /* bench */
    long long broker_ticks;   /* -1: unknown */
    long long broker_rss_kb;
    unsigned long long m_total, m_idle; /* /proc/stat: all CPUs, jiffies */
} snap_t;

/* The whole machine's CPU time, to tell how busy the cores were with other work. */
static void machine_ticks(unsigned long long *total, unsigned long long *idle)
{
    *total = *idle = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return;
    unsigned long long v[10] = {0};
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
               &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) >= 8) {
        for (int i = 0; i < 8; i++) /* guest time is already in user */
            *total += v[i];
        *idle = v[3] + v[4];
    }
    fclose(f);
}

static long long broker_ticks(void)
{
    if (g.o.broker_pid <= 0)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", g.o.broker_pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    /* fields after the comm: 3 state ... 14 utime 15 stime */
    unsigned long long ut = 0, st = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

/* A "Name: N kB" line of /proc/PID/status, or -1. */
static long long broker_status_kb(const char *name)
{
    if (g.o.broker_pid <= 0)
        return -1;
    char path[64], line[256], fmt[64];
    snprintf(path, sizeof(path), "/proc/%d/status", g.o.broker_pid);
    snprintf(fmt, sizeof(fmt), "%s: %%lld", name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long long kb = -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, fmt, &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* VmRSS counts the LMDB map's resident file pages too; RssAnon is the broker's own memory. */
static long long broker_rss_kb(void)
{
    return broker_status_kb("VmRSS");
}

static void take(snap_t *s)
{
    s->t = now_ns();
    s->sent = SUM(sent);
    s->confirmed = SUM(confirmed);
    s->delivered = SUM(delivered);
    s->echoed = SUM(echoed);
    s->acks = SUM(acks);
    s->bytes_in = SUM(bytes_in);
    s->bytes_out = SUM(bytes_out);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    s->cpu_user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    s->cpu_sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    s->broker_ticks = broker_ticks();
    s->broker_rss_kb = broker_rss_kb();
    machine_ticks(&s->m_total, &s->m_idle);
}

static uint64_t errors_now(void)
{
    return SUM(err_frames) + SUM(unexpected_closes) + SUM(proto_errors) + SUM(failed) +
           SUM(order_errors) + SUM(gaps);
}

/* A shared consumer's backlog, once every member has announced its start: hi - lo. */
static uint64_t shared_backlog(void)
{
    uint64_t lo = atomic_load(&g.shared_lo), hi = atomic_load(&g.shared_hi);
    return hi > lo ? hi - lo : 0;
}

/* ------------------------------------------------------------------------------------------- */
/* Phases and progress                                                                            */

static const char *const phase_names[] = {"setup", "preload", "warmup", "measure",
                                          "stop",  "close",   "exit"};
static uint64_t t_start;
static snap_t prog_last;

static void set_phase(int ph)
{
    atomic_store_explicit(&g.phase, ph, memory_order_release);
}

static void progress(bool force)
{
    snap_t s;
    uint64_t now = now_ns();
    if (!force && now - prog_last.t < 1000000000ull)
        return;
    take(&s);
    if (!g.o.quiet) {
        double dt = (double)(s.t - prog_last.t) / 1e9;
        int ph = atomic_load(&g.phase);
        fprintf(stderr, "[%6.1fs] %-7s", (double)(s.t - t_start) / 1e9, phase_names[ph]);
        if (ph == PH_SETUP || g.o.scenario == SC_IDLE)
            fprintf(stderr, "  ready %llu/%zu", (unsigned long long)SUM(ready), g.nconns);
        if (s.sent > prog_last.sent || SUM(inflight))
            fprintf(stderr, "  sent %.0f/s", (double)(s.sent - prog_last.sent) / dt);
        if (s.confirmed > prog_last.confirmed || SUM(inflight))
            fprintf(stderr, "  confirmed %.0f/s  inflight %llu",
                    (double)(s.confirmed - prog_last.confirmed) / dt,
                    (unsigned long long)SUM(inflight));
        if (s.delivered > prog_last.delivered)
            fprintf(stderr, "  delivered %.0f/s", (double)(s.delivered - prog_last.delivered) / dt);
        if (s.echoed > prog_last.echoed)
            fprintf(stderr, "  echoed %.0f/s", (double)(s.echoed - prog_last.echoed) / dt);
        if (g.o.scenario == SC_DRAIN && ph >= PH_MEASURE && g.o.shared)
            fprintf(stderr, "  drained %llu/%llu msgs", (unsigned long long)SUM(delivered),
                    (unsigned long long)shared_backlog());
        else if (g.o.scenario == SC_DRAIN && ph >= PH_MEASURE)
            fprintf(stderr, "  drained %llu/%d", (unsigned long long)SUM(drained), g.o.consumers);
        if (s.broker_ticks >= 0 && prog_last.broker_ticks >= 0)
            fprintf(stderr, "  broker cpu %.0f%%",
                    100.0 * (double)(s.broker_ticks - prog_last.broker_ticks) /
                        (double)sysconf(_SC_CLK_TCK) / dt);
        if (s.broker_rss_kb >= 0)
            fprintf(stderr, "  rss %.1f MB", (double)s.broker_rss_kb / 1024);
        if (s.m_total > prog_last.m_total)
            fprintf(stderr, "  machine %.0f%%",
                    100.0 * (double)sysconf(_SC_NPROCESSORS_ONLN) *
                        (double)((s.m_total - prog_last.m_total) - (s.m_idle - prog_last.m_idle)) /
                        (double)(s.m_total - prog_last.m_total));
        uint64_t e = errors_now();
        if (e)
            fprintf(stderr, "  errors %llu", (unsigned long long)e);
        fputc('\n', stderr);
    }
    prog_last = s;
}

/* Waits up to secs (0: no limit) for done(); progress once a second. */
static bool wait_for(bool (*done)(void), double secs)
{
    /* without done() it is a plain sleep of secs (0 included); with done(), secs 0 = no limit */
    uint64_t until = secs > 0 || done == NULL ? now_ns() + (uint64_t)(secs * 1e9) : UINT64_MAX;
    while (!interrupted) {
        if (done && done())
            return true;
        if (now_ns() >= until)
            return done == NULL;
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
        progress(false);
    }
    return false;
}

static bool all_set_up(void)
{
    size_t deferred = 0;
    for (size_t i = 0; i < g.nconns; i++)
        if (g.conns[i].sub_pending && g.conns[i].flavor == FL_RAW)
            deferred++;
    return SUM(ready) + SUM(failed) >= g.nconns - deferred;
}

static bool preload_done(void)
{
    return SUM(confirmed) + SUM(err_frames) >= (uint64_t)g.o.preload && SUM(inflight) == 0;
}

static bool drain_done(void)
{
    /* done, or a connection was lost (the drain cannot complete then) */
    if (SUM(closed) > 0)
        return true;
    if (g.o.shared) /* the total over the members; main() checks each came once */
        return atomic_load(&g.shared_subscribed) >= g.o.consumers &&
               SUM(delivered) >= shared_backlog();
    return SUM(drained) >= (uint64_t)g.o.consumers;
}

static bool stop_done(void)
{
    for (int i = 0; i < g.nthr; i++)
        if (!ST_GET(&g.thr[i], pending_ok) || ST_GET(&g.thr[i], pending))
            return false;
    return true;
}

static bool all_closed(void)
{
    for (size_t i = 0; i < g.nconns; i++) {
        uint8_t st = atomic_load_explicit(&g.conns[i].state, memory_order_relaxed);
        if (st != CS_DONE && st != CS_NEW)
            return false;
    }
    return true;
}

/* Drain progress does not stall for longer than the timeout. */
static uint64_t stall_last, stall_t;
static bool preload_done_or_stalled(void)
{
    if (preload_done())
        return true;
    uint64_t c = SUM(confirmed) + SUM(err_frames), now = now_ns();
    if (c != stall_last) {
        stall_last = c;
        stall_t = now;
    }
    return now - stall_t > (uint64_t)(g.o.timeout * 1e9);
}

/* ------------------------------------------------------------------------------------------- */
/* Self-test: the bench's frames decode with the broker's codec; its scanner reads what the     */
/* broker's encoders write.                                                                       */

static int selftest_fail(const char *what)
{
    fprintf(stderr, "wsq-bench: selftest failed: %s\n", what);
    return -1;
}

/* The next frame from c's send buffer, unmasked into out. */
static size_t take_frame(conn_t *c, uint8_t *out, size_t cap)
{
    uint8_t *h = c->wbuf;
    size_t n = h[1] & 0x7f, hl = 2;
    if (n == 126) {
        n = (size_t)h[2] << 8 | h[3];
        hl = 4;
    } else if (n == 127) {
        n = 0;
        for (int i = 0; i < 8; i++)
            n = n << 8 | h[2 + i];
        hl = 10;
    }
    if (!(h[1] & 0x80) || n > cap)
        return (size_t)-1;
    const uint8_t *m = h + hl;
    for (size_t i = 0; i < n; i++)
        out[i] = h[hl + 4 + i] ^ m[i & 3];
    memmove(c->wbuf, c->wbuf + hl + 4 + n, c->wlen - (hl + 4 + n));
    c->wlen -= hl + 4 + n;
    return n;
}

static int selftest(void)
{
    static thr_t t;
    static conn_t c;
    static uint8_t wbuf[1 << 20], buf[1 << 20];
    opts_t save = g.o;
    g.o.size = 300;
    g.o.window = 77;
    g.o.scenario = SC_PUBLISH;
    memset(&t, 0, sizeof(t));
    memset(&c, 0, sizeof(c));
    c.t = &t;
    c.drv = &drv_wsq;
    c.state = CS_OPEN;
    c.role = R_PUB;
    c.flavor = FL_V1;
    c.topic = "self.test";
    c.topic_len = 9;
    c.wbuf = wbuf;
    c.wcap = sizeof(wbuf);
    c.mask[0] = 0x12, c.mask[1] = 0x34, c.mask[2] = 0x56, c.mask[3] = 0x78;
    memcpy(&c.mask64, c.mask, 4);
    memcpy((uint8_t *)&c.mask64 + 4, c.mask, 4);
    char path[256];
    const char *sp = NULL;
    if (drv_wsq.upgrade(&c, path, sizeof(path), &sp) < 0 || sp == NULL || !c.confirms)
        return selftest_fail("upgrade");
    drv_wsq.on_open(&c);
    if (!c.ready)
        return selftest_fail("on_open");
    int rc = 0;
    wsq_frame_t f;
    wsq_proto_error_t pe;
    wsq_frame_init(&f);
    /* pub */
    if (!drv_wsq.publish(&c, 1234567, 0x0123456789abcdefull, 42))
        return selftest_fail("publish");
    size_t n = take_frame(&c, buf, sizeof(buf));
    if (n == (size_t)-1 || wsq_proto_decode(buf, n, 1 << 20, &f, &pe) != WSQ_OK) {
        rc = selftest_fail(n == (size_t)-1 ? "pub framing" : pe.message);
    } else {
        uint64_t ts, ctr;
        if (f.op != WSQ_OP_PUB || strcmp(f.topic, "self.test") != 0 || f.data_len != 300 ||
            strcmp(f.ref, "1234567") != 0 || f.binary ||
            !payload_read(f.data, f.data_len, &ts, &ctr) || ts != 0x0123456789abcdefull ||
            ctr != 42)
            rc = selftest_fail("pub fields");
    }
    wsq_frame_clear(&f);
    /* ack */
    if (!drv_wsq.ack(&c, 987654321))
        return selftest_fail("ack");
    n = take_frame(&c, buf, sizeof(buf));
    if (n == (size_t)-1 || wsq_proto_decode(buf, n, 1 << 20, &f, &pe) != WSQ_OK ||
        f.op != WSQ_OP_ACK || !f.has_upto || f.upto != 987654321 || f.has_seq)
        rc = selftest_fail("ack fields");
    wsq_frame_clear(&f);
    /* ack of one seq (shared consumers) */
    if (!drv_wsq.ack_seq(&c, 1234567890123))
        return selftest_fail("ack seq");
    n = take_frame(&c, buf, sizeof(buf));
    if (n == (size_t)-1 || wsq_proto_decode(buf, n, 1 << 20, &f, &pe) != WSQ_OK ||
        f.op != WSQ_OP_ACK || !f.has_seq || f.seq != 1234567890123 || f.has_upto ||
        strcmp(f.topic, "self.test") != 0)
        rc = selftest_fail("ack seq fields");
    wsq_frame_clear(&f);
    /* sub, durable */
    snprintf(c.consumer, sizeof(c.consumer), "wsqb-x-1");
    g.o.scenario = SC_DRAIN;
    if (!drv_wsq.subscribe(&c, false))
        return selftest_fail("sub");
    n = take_frame(&c, buf, sizeof(buf));
    if (n == (size_t)-1 || wsq_proto_decode(buf, n, 1 << 20, &f, &pe) != WSQ_OK ||
        f.op != WSQ_OP_SUB || strcmp(f.consumer, "wsqb-x-1") != 0 || f.window != 77 ||
        f.from != WSQ_FROM_EARLIEST || f.shared)
        rc = selftest_fail("sub fields");
    wsq_frame_clear(&f);
    /* sub, a shared consumer's member */
    c.shared = true;
    if (!drv_wsq.subscribe(&c, true))
        return selftest_fail("shared sub");
    n = take_frame(&c, buf, sizeof(buf));
    if (n == (size_t)-1 || wsq_proto_decode(buf, n, 1 << 20, &f, &pe) != WSQ_OK ||
        f.op != WSQ_OP_SUB || strcmp(f.consumer, "wsqb-x-1") != 0 || !f.shared ||
        f.from != WSQ_FROM_RESUME)
        rc = selftest_fail("shared sub fields");
    wsq_frame_clear(&f);
    /* server frames through the scanner */
    wsq_buf_t b;
    wsq_buf_init(&b);
    uint8_t pay[300];
    payload_write(pay, sizeof(pay), 77, 88);
    scan_t s;
    uint64_t ts, ctr;
    if (wsq_proto_enc_msg(&b, "self.test", 9, 5000000000ull, 1795648380240, pay, sizeof(pay), false,
                          3, NULL, 0) != WSQ_OK ||
        !scan_frame(b.data, b.len, &s) || s.op != OP_MSG || !s.has_seq || s.seq != 5000000000ull ||
        s.ts != 1795648380240ull || s.data_len != sizeof(pay) ||
        !payload_read(s.data, s.data_len, &ts, &ctr) || ts != 77 || ctr != 88)
        rc = selftest_fail("msg scan");
    b.len = 0;
    if (wsq_proto_enc_ok(&b, "99", "self.test", 9, 12, true, false) != WSQ_OK ||
        !scan_frame(b.data, b.len, &s) || s.op != OP_OK || !s.ref_is_int || s.ref_int != 99 ||
        s.seq != 12)
        rc = selftest_fail("ok scan");
    b.len = 0;
    if (wsq_proto_enc_err(&b, "7", WSQ_ERR_FORBIDDEN, "no \"way\"") != WSQ_OK ||
        !scan_frame(b.data, b.len, &s) || s.op != OP_ERR || !s.ref_is_int || s.ref_int != 7 ||
        s.code == NULL || s.message == NULL)
        rc = selftest_fail("err scan");
    b.len = 0;
    wsq_subscribed_t sub = {.topic = "self.test",
                            .topic_len = 9,
                            .consumer = "c",
                            .epoch = 1,
                            .first_seq = 1,
                            .next_seq = 1000001,
                            .start_seq = 3,
                            .window = 10};
    if (wsq_proto_enc_subscribed(&b, "\"s\"", &sub) != WSQ_OK || !scan_frame(b.data, b.len, &s) ||
        s.op != OP_SUBSCRIBED || s.start_seq != 3 || s.next_seq != 1000001)
        rc = selftest_fail("subscribed scan");
    wsq_buf_fini(&b);
    drv_wsq.release(&c);
    g.o = save;
    return rc;
}

/* ------------------------------------------------------------------------------------------- */
/* Report                                                                                         */

typedef struct {
    double secs; /* measured window */
    snap_t a, b;
    hist_t clat, dlat;
    uint64_t err_frames, unexpected_closes, proto_errors, failed, order_errors, dups, gaps,
        rate_missed, missing;
    char first_err[256];
    /* drain */
    uint64_t expected, received, drained;
    double drain_secs, first_msg_ms, cons_min, cons_max;
    double preload_secs, preload_rate;
    /* idle */
    long long rss_before, rss_ready, rss_max, rss_end;
    long long anon_before, anon_max;
    double setup_secs;
    bool incomplete;
} result_t;

static double lat_ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static void json_lat(FILE *f, const char *name, const hist_t *h)
{
    fprintf(f,
            ",\"%s\":{\"count\":%llu,\"min_ms\":%.4f,\"mean_ms\":%.4f,\"p50_ms\":%.4f,"
            "\"p90_ms\":%.4f,\"p99_ms\":%.4f,\"p999_ms\":%.4f,\"max_ms\":%.4f}",
            name, (unsigned long long)h->count, h->count ? lat_ms(h->min) : 0, hist_mean(h) / 1e6,
            lat_ms(hist_quantile(h, .5)), lat_ms(hist_quantile(h, .9)),
            lat_ms(hist_quantile(h, .99)), lat_ms(hist_quantile(h, .999)), lat_ms(h->max));
}

static void human_lat(const char *name, const hist_t *h)
{
    if (h->count == 0)
        return;
    printf("  %-18s p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  "
           "(%llu samples)\n",
           name, lat_ms(hist_quantile(h, .5)), lat_ms(hist_quantile(h, .9)),
           lat_ms(hist_quantile(h, .99)), lat_ms(hist_quantile(h, .999)), lat_ms(h->max),
           (unsigned long long)h->count);
}

static const char *fl_name(enum flavor f)
{
    return f == FL_RAW ? "raw" : "wsq.v1";
}

static uint64_t total_errors(const result_t *r)
{
    /* a duplicate is an error where nothing may be redelivered: a shared drain, no one killed */
    return r->err_frames + r->unexpected_closes + r->proto_errors + r->failed + r->order_errors +
           r->gaps + r->missing + (g.o.shared ? r->dups : 0) + (r->incomplete ? 1 : 0);
}

static void first_err(result_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void first_err(result_t *r, const char *fmt, ...)
{
    if (r->first_err[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->first_err, sizeof(r->first_err), fmt, ap);
    va_end(ap);
}

/* drain --shared: every seq of the backlog [lo, hi) reached exactly one member, once. Counts
 * duplicates, missing seqs, and seqs outside the backlog (protocol errors). */
static void shared_check(result_t *r)
{
    uint64_t lo = atomic_load(&g.shared_lo), n = shared_backlog();
    r->expected = n;
    uint8_t *seen = calloc(n / 8 + 1, 1);
    if (seen == NULL) {
        r->proto_errors++;
        first_err(r, "no memory to check %llu seqs", (unsigned long long)n);
        return;
    }
    uint64_t distinct = 0;
    for (size_t i = 0; i < g.nconns; i++) {
        const conn_t *c = &g.conns[i];
        for (size_t k = 0; c->shared && k < c->nseqs; k++) {
            uint64_t s = c->seqs[k], b = s - lo;
            if (s < lo || b >= n) {
                r->proto_errors++;
                first_err(r, "member %u got seq %llu, outside the backlog %llu-%llu", c->ridx,
                          (unsigned long long)s, (unsigned long long)lo,
                          (unsigned long long)(lo + n - 1));
            } else if (seen[b / 8] & 1u << (b % 8)) {
                r->dups++;
                first_err(r, "seq %llu delivered twice (member %u)", (unsigned long long)s,
                          c->ridx);
            } else {
                seen[b / 8] |= (uint8_t)(1u << (b % 8));
                distinct++;
            }
        }
    }
    free(seen);
    r->missing = n - distinct;
    if (r->missing)
        first_err(r, "%llu of %llu seqs reached no member", (unsigned long long)r->missing,
                  (unsigned long long)n);
    r->drained = r->missing == 0 ? (uint64_t)g.o.consumers : 0;
}

/* drain --shared: how many messages each member received, in member order. */
static void print_members(FILE *f, const char *pre, const char *sep, const char *post)
{
    fputs(pre, f);
    const char *s = "";
    for (size_t i = 0; i < g.nconns; i++)
        if (g.conns[i].shared) {
            fprintf(f, "%s%llu", s, (unsigned long long)g.conns[i].received);
            s = sep;
        }
    fputs(post, f);
}

static void report(result_t *r)
{
    opts_t *o = &g.o;
    double secs = r->secs > 0 ? r->secs : 1e-9;
    double sent = (double)(r->b.sent - r->a.sent) / secs;
    double conf = (double)(r->b.confirmed - r->a.confirmed) / secs;
    double deliv = (double)(r->b.delivered - r->a.delivered) / secs;
    double bu = (r->b.cpu_user - r->a.cpu_user), bs = (r->b.cpu_sys - r->a.cpu_sys);
    double tck = (double)sysconf(_SC_CLK_TCK);
    double broker_cpu = r->a.broker_ticks >= 0 && r->b.broker_ticks >= 0
                            ? 100.0 * (double)(r->b.broker_ticks - r->a.broker_ticks) / tck / secs
                            : -1;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned long long mt = r->b.m_total - r->a.m_total, mi = r->b.m_idle - r->a.m_idle;
    double machine = mt ? 100.0 * (double)ncpu * (double)(mt - mi) / (double)mt : -1;
    double others =
        machine >= 0 ? machine - 100.0 * (bu + bs) / secs - (broker_cpu > 0 ? broker_cpu : 0) : -1;
    if (others < 0 && machine >= 0)
        others = 0;
    double primary = 0;
    const char *pname = "msgs_per_s";
    switch (o->scenario) {
    case SC_PUBLISH:
        primary = o->mode == FL_RAW ? sent : conf;
        pname = o->mode == FL_RAW ? "sent_per_s" : "confirmed_per_s";
        break;
    case SC_DRAIN:
        primary = r->drain_secs > 0 ? (double)r->received / r->drain_secs : 0;
        pname = "drained_per_s";
        break;
    case SC_FANOUT:
    case SC_LATENCY:
        primary = deliv;
        pname = "delivered_per_s";
        break;
    case SC_IDLE:
        pname = "connections";
        primary = (double)SUM(ready);
        break;
    }
    uint64_t errs = total_errors(r);
    if (o->json) {
        FILE *f = stdout;
        fprintf(f, "{\"scenario\":\"%s\",\"driver\":\"%s\",\"url\":\"%s\",\"topic\":\"%s\"",
                scenario_names[o->scenario], o->driver, o->url, o->topic);
        fprintf(f,
                ",\"params\":{\"conns\":%d,\"window\":%d,\"size\":%d,\"seconds\":%g,"
                "\"warmup\":%g,\"mode\":\"%s\",\"topics\":%d,\"verify\":%s,\"preload\":%lld,"
                "\"preload_conns\":%d,\"preload_window\":%d,\"consumers\":%d,\"ack_every\":%d,"
                "\"resume\":%s,\"shared\":%s,\"rate\":%g,\"burst\":%d,\"subs\":%d,"
                "\"sub_mode\":\"%s\",\"pub_mode\":\"%s\",\"threads\":%d}",
                o->conns, o->window, o->size, o->seconds, o->warmup, fl_name(o->mode), o->topics,
                o->verify ? "true" : "false", o->preload, o->preload_conns, o->preload_window,
                o->consumers, o->ack_every, o->resume ? "true" : "false",
                o->shared ? "true" : "false", o->rate, o->burst, o->subs, fl_name(o->sub_mode),
                fl_name(o->pub_mode), o->threads);
        fprintf(f,
                ",\"result\":{\"%s\":%.1f,\"duration_s\":%.3f,\"sent\":%llu,\"confirmed\":%llu,"
                "\"delivered\":%llu,\"sent_per_s\":%.1f,\"confirmed_per_s\":%.1f,"
                "\"delivered_per_s\":%.1f,\"echoed\":%llu,\"acks\":%llu,\"bytes_in\":%llu,"
                "\"bytes_out\":%llu",
                pname, primary, r->secs, (unsigned long long)(r->b.sent - r->a.sent),
                (unsigned long long)(r->b.confirmed - r->a.confirmed),
                (unsigned long long)(r->b.delivered - r->a.delivered), sent, conf, deliv,
                (unsigned long long)(r->b.echoed - r->a.echoed),
                (unsigned long long)(r->b.acks - r->a.acks),
                (unsigned long long)(r->b.bytes_in - r->a.bytes_in),
                (unsigned long long)(r->b.bytes_out - r->a.bytes_out));
        if (o->scenario == SC_FANOUT || o->scenario == SC_LATENCY)
            fprintf(f, ",\"published_per_s\":%.1f,\"rate_missed\":%llu,\"missing\":%llu", sent,
                    (unsigned long long)r->rate_missed, (unsigned long long)r->missing);
        if (o->scenario == SC_DRAIN)
            fprintf(f,
                    ",\"preload_s\":%.3f,\"preload_per_s\":%.1f,\"expected\":%llu,"
                    "\"received\":%llu,\"drained_consumers\":%llu,\"drain_s\":%.3f,"
                    "\"first_msg_ms\":%.3f,\"consumer_min_per_s\":%.1f,"
                    "\"consumer_max_per_s\":%.1f",
                    r->preload_secs, r->preload_rate, (unsigned long long)r->expected,
                    (unsigned long long)r->received, (unsigned long long)r->drained, r->drain_secs,
                    r->first_msg_ms, r->cons_min, r->cons_max);
        if (o->shared)
            print_members(f, ",\"members\":[", ",", "]");
        if (o->scenario == SC_IDLE)
            fprintf(f,
                    ",\"setup_s\":%.3f,\"broker_rss_before_kb\":%lld,\"broker_rss_ready_kb\":%lld,"
                    "\"broker_rss_max_kb\":%lld,\"broker_rss_end_kb\":%lld,"
                    "\"broker_anon_before_kb\":%lld,\"broker_anon_max_kb\":%lld",
                    r->setup_secs, r->rss_before, r->rss_ready, r->rss_max, r->rss_end,
                    r->anon_before, r->anon_max);
        json_lat(f, "confirm_latency", &r->clat);
        json_lat(f, "deliver_latency", &r->dlat);
        fprintf(f, "}");
        fprintf(f,
                ",\"cpu\":{\"bench_user_s\":%.3f,\"bench_sys_s\":%.3f,\"bench_pct\":%.1f,"
                "\"broker_pct\":%.1f,\"machine_pct\":%.1f,\"others_pct\":%.1f,\"cores\":%ld}",
                bu, bs, 100.0 * (bu + bs) / secs, broker_cpu, machine, others, ncpu);
        fprintf(f,
                ",\"errors\":{\"total\":%llu,\"err_frames\":%llu,\"unexpected_closes\":%llu,"
                "\"protocol\":%llu,\"connect_failures\":%llu,\"order\":%llu,\"duplicates\":%llu,"
                "\"gaps\":%llu,\"missing\":%llu,\"incomplete\":%s,\"first\":\"",
                (unsigned long long)errs, (unsigned long long)r->err_frames,
                (unsigned long long)r->unexpected_closes, (unsigned long long)r->proto_errors,
                (unsigned long long)r->failed, (unsigned long long)r->order_errors,
                (unsigned long long)r->dups, (unsigned long long)r->gaps,
                (unsigned long long)r->missing, r->incomplete ? "true" : "false");
        for (const char *p = r->first_err; *p; p++) {
            if (*p == '"' || *p == '\\')
                fprintf(f, "\\%c", *p);
            else if ((unsigned char)*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
        fprintf(f, "\"}}\n");
        return;
    }
    printf("wsq-bench %s  driver %s  %s  topic %s  %d thread%s\n", scenario_names[o->scenario],
           o->driver, o->url, o->topic, o->threads, o->threads > 1 ? "s" : "");
    switch (o->scenario) {
    case SC_PUBLISH:
        printf("  %s, %d conns x window %d, %d B, %d topic%s, %.1f s measured after %.1f s "
               "warmup\n",
               fl_name(o->mode), o->conns, o->window, o->size, o->topics, o->topics > 1 ? "s" : "",
               r->secs, o->warmup);
        if (o->mode == FL_RAW)
            printf("  sent        %12.0f msgs/s\n", sent);
        else
            printf("  confirmed   %12.0f msgs/s   (sent %.0f/s)\n", conf, sent);
        if (o->verify)
            printf("  delivered   %12.0f msgs/s   (to %d subscriber%s)\n", deliv, o->topics,
                   o->topics > 1 ? "s" : "");
        if (r->b.echoed > r->a.echoed)
            printf("  echoed      %12.0f msgs/s   (raw publishers also receive their topic)\n",
                   (double)(r->b.echoed - r->a.echoed) / secs);
        human_lat("publish->confirm", &r->clat);
        human_lat("publish->deliver", &r->dlat);
        break;
    case SC_DRAIN:
        printf("  preload %lld msgs (%d conns x window %d, %d B) in %.2f s = %.0f msgs/s\n",
               o->preload, o->preload_conns, o->preload_window, o->size, r->preload_secs,
               r->preload_rate);
        if (o->shared)
            printf("  %d %s member%s of one shared consumer, window %d each, acking each "
                   "message%s\n",
                   o->consumers, fl_name(o->sub_mode), o->consumers > 1 ? "s" : "", o->window,
                   o->resume ? ", resumed" : "");
        else
            printf("  %d %s consumer%s, window %d, ack every %d%s\n", o->consumers,
                   fl_name(o->sub_mode), o->consumers > 1 ? "s" : "", o->window, o->ack_every,
                   o->resume ? ", resumed" : "");
        printf("  drained     %12.0f msgs/s   (%llu of %llu in %.3f s; first message after "
               "%.1f ms)\n",
               primary, (unsigned long long)r->received, (unsigned long long)r->expected,
               r->drain_secs, r->first_msg_ms);
        if (o->consumers > 1)
            printf("  per %s %.0f .. %.0f msgs/s\n", o->shared ? "member" : "consumer", r->cons_min,
                   r->cons_max);
        if (o->shared)
            print_members(stdout, "  members     ", " ", " msgs\n");
        break;
    case SC_FANOUT:
    case SC_LATENCY:
        printf("  publisher %s at %.0f msgs/s (burst %d), %d %s subscriber%s, %d B, %.1f s "
               "measured after %.1f s warmup\n",
               fl_name(o->pub_mode), o->rate, o->burst, o->subs, fl_name(o->sub_mode),
               o->subs > 1 ? "s" : "", o->size, r->secs, o->warmup);
        printf("  published   %12.0f msgs/s", sent);
        if (o->pub_mode == FL_V1)
            printf("   (confirmed %.0f/s)", conf);
        printf("\n  delivered   %12.0f msgs/s\n", deliv);
        human_lat("publish->deliver", &r->dlat);
        human_lat("publish->confirm", &r->clat);
        if (r->rate_missed)
            printf("  the publisher fell behind: %llu sends skipped\n",
                   (unsigned long long)r->rate_missed);
        break;
    case SC_IDLE:
        printf("  %s, %llu of %d connections open in %.2f s, held %.1f s\n", fl_name(o->mode),
               (unsigned long long)SUM(ready), o->conns, r->setup_secs, r->secs);
        if (r->rss_before >= 0)
            printf("  broker RSS  before %.1f MB, all open %.1f MB, max %.1f MB, end %.1f MB "
                   "(%.1f KB per connection)\n",
                   (double)r->rss_before / 1024, (double)r->rss_ready / 1024,
                   (double)r->rss_max / 1024, (double)r->rss_end / 1024,
                   o->conns ? (double)(r->rss_max - r->rss_before) / o->conns : 0);
        if (r->anon_before >= 0)
            printf("  broker anon before %.1f MB, max %.1f MB (RssAnon: without LMDB file pages)\n",
                   (double)r->anon_before / 1024, (double)r->anon_max / 1024);
        break;
    }
    printf("  cpu         bench %.0f%% (user %.2f s, sys %.2f s)", 100.0 * (bu + bs) / secs, bu,
           bs);
    if (broker_cpu >= 0)
        printf("   broker %.1f%%", broker_cpu);
    if (machine >= 0)
        printf("   machine %.0f%% of %ld00%% (other processes %.0f%%)", machine, ncpu, others);
    printf("   (100%% = one core)\n");
    if (errs == 0 && r->dups == 0) {
        printf("  errors      none\n");
    } else {
        printf("  errors      %llu: err frames %llu, unexpected closes %llu, protocol %llu, "
               "connect failures %llu, order %llu, gaps %llu, missing %llu%s; duplicates %llu\n",
               (unsigned long long)errs, (unsigned long long)r->err_frames,
               (unsigned long long)r->unexpected_closes, (unsigned long long)r->proto_errors,
               (unsigned long long)r->failed, (unsigned long long)r->order_errors,
               (unsigned long long)r->gaps, (unsigned long long)r->missing,
               r->incomplete ? ", INCOMPLETE" : "", (unsigned long long)r->dups);
        if (r->first_err[0])
            printf("  first error %s\n", r->first_err);
    }
}

/* ------------------------------------------------------------------------------------------- */

static void raise_nofile(size_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)need + 64;
    if (rl.rlim_max < want) {
        struct rlimit r2 = {want, want};
        if (setrlimit(RLIMIT_NOFILE, &r2) == 0)
            return;
    }
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want)
        fprintf(stderr, "wsq-bench: warning: RLIMIT_NOFILE is %llu, %llu connections need more\n",
                (unsigned long long)rl.rlim_cur, (unsigned long long)need);
}

int main(int argc, char **argv)
{
    bool st = false;
    if (parse_opts(argc, argv, &g.o, &st) < 0)
        return 2;
    g.drv = driver_find(g.o.driver);
    if (g.drv == NULL && strcmp(g.o.driver, "mqtt") == 0)
        g.drv = &drv_mqtt;
    if (g.drv == NULL && strcmp(g.o.driver, "nats") == 0)
        g.drv = &drv_nats;
    if (g.drv == NULL) {
        fprintf(stderr, "wsq-bench: driver \"%s\" is not implemented (have: wsq, mqtt, nats)\n",
                g.o.driver);
        return 2;
    }
    payload_init();
    if (selftest() < 0)
        return 3;
    if (st) {
        printf("selftest ok\n");
        return 0;
    }
    snprintf(g.run_id, sizeof(g.run_id), "%d-%ld", (int)getpid(), (long)time(NULL));
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    signal(SIGPIPE, SIG_IGN);
    if (plan() < 0) {
        fprintf(stderr, "wsq-bench: out of memory\n");
        return 3;
    }
    raise_nofile(g.nconns);
    g.nthr = g.o.threads;
    g.thr = aligned_alloc(64, sizeof(thr_t) * (size_t)g.nthr);
    if (g.thr == NULL)
        return 3;
    memset(g.thr, 0, sizeof(thr_t) * (size_t)g.nthr);
    result_t r;
    memset(&r, 0, sizeof(r));
    r.rss_before = broker_rss_kb();
    r.anon_before = r.anon_max = broker_status_kb("RssAnon");
    t_start = now_ns();
    take(&prog_last);
    if (loop_start() < 0) {
        fprintf(stderr, "wsq-bench: setup failed: %s\n", strerror(errno));
        return 3;
    }
    opts_t *o = &g.o;
    /* setup */
    bool ok = wait_for(all_set_up, o->timeout + (double)g.nconns / 2000.0);
    r.setup_secs = (double)(now_ns() - t_start) / 1e9;
    r.rss_ready = r.rss_max = broker_rss_kb();
    progress(true);
    if (!ok || SUM(ready) == 0) {
        fprintf(stderr, "wsq-bench: setup %s: %llu of %zu connections ready\n",
                interrupted ? "interrupted"
                : ok        ? "failed"
                            : "timed out",
                (unsigned long long)SUM(ready), g.nconns);
        r.incomplete = true;
        take(&r.a);
        r.b = r.a;
    }
    if (!r.incomplete && o->scenario == SC_DRAIN) {
        if (o->preload) {
            uint64_t t0 = now_ns();
            set_phase(PH_PRELOAD);
            stall_t = t0;
            wait_for(preload_done_or_stalled, 0);
            r.preload_secs = (double)(now_ns() - t0) / 1e9;
            r.preload_rate = (double)SUM(confirmed) / r.preload_secs;
            if (!preload_done()) {
                fprintf(stderr, "wsq-bench: preload stalled at %llu confirmed\n",
                        (unsigned long long)SUM(confirmed));
                r.incomplete = true;
            }
        }
        if (!r.incomplete) {
            take(&r.a);
            set_phase(PH_MEASURE);
            if (!wait_for(drain_done, o->seconds))
                r.incomplete = true;
            take(&r.b);
        }
    } else if (!r.incomplete && o->scenario == SC_IDLE) {
        set_phase(PH_WARMUP);
        take(&r.a);
        set_phase(PH_MEASURE);
        uint64_t until = now_ns() + (uint64_t)(o->seconds * 1e9);
        while (!interrupted && now_ns() < until) {
            struct timespec ts = {0, 100000000};
            nanosleep(&ts, NULL);
            long long rss = broker_rss_kb(), anon = broker_status_kb("RssAnon");
            if (rss > r.rss_max)
                r.rss_max = rss;
            if (anon > r.anon_max)
                r.anon_max = anon;
            progress(false);
        }
        take(&r.b);
        r.rss_end = r.b.broker_rss_kb;
    } else if (!r.incomplete) {
        set_phase(PH_WARMUP);
        wait_for(NULL, o->warmup);
        take(&r.a);
        set_phase(PH_MEASURE);
        wait_for(NULL, o->seconds);
        take(&r.b);
    }
    r.secs = (double)(r.b.t - r.a.t) / 1e9;
    set_phase(PH_STOP);
    if (!r.incomplete && !interrupted)
        wait_for(stop_done, o->timeout);
    progress(true);
    set_phase(PH_CLOSE);
    wait_for(all_closed, 3);
    set_phase(PH_EXIT);
    loop_join();

    /* totals */
    hist_init(&r.clat);
    hist_init(&r.dlat);
    for (int i = 0; i < g.nthr; i++) {
        thr_t *t = &g.thr[i];
        hist_merge(&r.clat, &t->clat);
        hist_merge(&r.dlat, &t->dlat);
        if (r.first_err[0] == 0 && t->first_err[0])
            snprintf(r.first_err, sizeof(r.first_err), "%s", t->first_err);
    }
    r.err_frames = SUM(err_frames);
    r.unexpected_closes = SUM(unexpected_closes);
    r.proto_errors = SUM(proto_errors);
    r.failed = SUM(failed);
    r.order_errors = SUM(order_errors);
    r.dups = SUM(dups);
    r.gaps = SUM(gaps);
    r.rate_missed = SUM(rate_missed);
    uint64_t fin = atomic_load(&g.final_ctr);
    uint64_t first = UINT64_MAX, last = 0;
    r.cons_min = INFINITY;
    for (size_t i = 0; i < g.nconns; i++) {
        conn_t *c = &g.conns[i];
        if (c->role != R_SUB)
            continue;
        if ((o->scenario == SC_FANOUT || o->scenario == SC_LATENCY) && c->have_ctr &&
            fin >= c->first_ctr) {
            uint64_t want = fin - c->first_ctr + 1;
            if (c->received < want)
                r.missing += want - c->received;
        }
        if (o->scenario == SC_DRAIN) {
            r.received += c->received;
            if (!o->shared) { /* (a shared consumer's backlog is the members' together) */
                uint64_t exp = c->end_seq > c->start_seq ? c->end_seq - c->start_seq
                                                         : (c->end_seq ? 0 : (uint64_t)o->preload);
                r.expected += exp;
                r.drained += c->drained;
                if (c->received != exp && !r.incomplete) {
                    r.incomplete = true;
                    first_err(&r, "consumer %s received %llu of %llu", c->consumer,
                              (unsigned long long)c->received, (unsigned long long)exp);
                }
            }
            if (c->first_ns) {
                if (c->first_ns < first)
                    first = c->first_ns;
                if (c->last_ns > last)
                    last = c->last_ns;
                double d = (double)(c->last_ns - c->first_ns) / 1e9;
                double rate = d > 0 ? (double)c->received / d : 0;
                if (rate < r.cons_min)
                    r.cons_min = rate;
                if (rate > r.cons_max)
                    r.cons_max = rate;
                double fm = (double)(c->first_ns - c->sub_sent_ns) / 1e6;
                if (fm > r.first_msg_ms)
                    r.first_msg_ms = fm;
            }
        }
    }
    if (o->shared)
        shared_check(&r);
    if (o->scenario == SC_DRAIN && last > first)
        r.drain_secs = (double)(last - first) / 1e9;
    if (!isfinite(r.cons_min))
        r.cons_min = 0;
    report(&r);
    for (size_t i = 0; i < g.nconns; i++)
        if (g.conns[i].dp)
            g.drv->release(&g.conns[i]);
    return total_errors(&r) ? 1 : 0;
}
