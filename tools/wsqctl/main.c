/* wsqctl: inspect, repair, back up and talk to a wsq store and broker. */
#include <getopt.h>
#include <libwebsockets.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "ctl.h"

/* Command options: a command accepts only the options in its mask. */
enum {
    O_FROM = 1u << 0,
    O_LIMIT = 1u << 1,
    O_BASE64 = 1u << 2,
    O_FULL = 1u << 3,
    O_ALL = 1u << 4,
    O_BEFORE = 1u << 5,
    O_OLDER = 1u << 6,
    O_CONSUMER = 1u << 7,
    O_ACK = 1u << 8,
    O_COUNT = 1u << 9,
    O_WINDOW = 1u << 10,
    O_BINARY = 1u << 11,
    O_TIMEOUT = 1u << 12,
    O_TO = 1u << 13,
    O_MAX = 1u << 14,
};

typedef struct {
    const char *group; /* the --help heading this command starts, or NULL */
    const char *name;
    int (*fn)(wsqctl_t *c, int argc, char **argv);
    unsigned opts;
    int min_args, max_args; /* positional arguments after the command; -1: no maximum */
    const char *usage;
    const char *summary;
} command_t;

static const command_t commands[] = {
    {"Inspect (read-only, short read transactions; safe while wsqd runs):", "topics",
     wsq__ctl_cmd_topics, 0, 0, 0, "topics",
     "name, first and last seq, count, bytes, age of the oldest message"},
    {NULL, "stats", wsq__ctl_cmd_stats, 0, 0, 0, "stats",
     "map used/max, pages, readers, format version, data-dir size"},
    {NULL, "peek", wsq__ctl_cmd_peek, O_FROM | O_LIMIT | O_BASE64 | O_FULL, 1, 1,
     "peek TOPIC [--from SEQ] [--limit K] [--base64] [--full]",
     "messages of TOPIC: seq, time, size, payload (default: the first 10)"},
    {NULL, "consumers", wsq__ctl_cmd_consumers, 0, 0, 1, "consumers [TOPIC]",
     "ack floor, pending, lag, delivery counts, last seen"},
    {NULL, "check", wsq__ctl_cmd_check, 0, 0, 0, "check",
     "verify the store's invariants; exit 4 and list every violation"},
    {NULL, "dlq", wsq__ctl_cmd_dlq, O_FROM | O_LIMIT, 1, 1, "dlq TOPIC [--from SEQ] [--limit N]",
     "dead letters of TOPIC: origin, consumer, deliveries, reason, redriven"},
    {"Mutate (through the broker; without one, on the local store, holding its\n"
     "lock so that no wsqd can start meanwhile):",
     "purge", wsq__ctl_cmd_purge, O_ALL | O_BEFORE | O_OLDER, 1, 1,
     "purge TOPIC (--all | --before SEQ | --older-than DUR)",
     "remove messages from the head of TOPIC (the next seq never changes)"},
    {NULL, "delete-consumer", wsq__ctl_cmd_delete_consumer, 0, 2, 2, "delete-consumer TOPIC NAME",
     "delete a durable consumer (its live session is closed with 4014)"},
    {"Backup (compact only while no wsqd runs on the store):", "export", wsq__ctl_cmd_export, 0, 0,
     -1, "export [TOPIC...]", "write messages as JSON Lines to stdout (all topics by default)"},
    {NULL, "import", wsq__ctl_cmd_import, 0, 1, 1, "import FILE|-",
     "append the messages of a JSON Lines file (they get new seqs)"},
    {NULL, "compact", wsq__ctl_cmd_compact, 0, 1, 1, "compact DEST",
     "write a compacted copy of the store into the new directory DEST"},
    {"Client (wsq.v1 to the broker; needs one):", "pub", wsq__ctl_cmd_pub, O_BINARY | O_TIMEOUT, 1,
     2, "pub TOPIC [MESSAGE|-] [--binary] [--timeout DUR]",
     "publish one message (- or none: stdin) and print its seq once committed"},
    {NULL, "sub", wsq__ctl_cmd_sub,
     O_CONSUMER | O_FROM | O_ACK | O_COUNT | O_WINDOW | O_BASE64 | O_TIMEOUT, 1, 1,
     "sub TOPIC [--consumer NAME] [--from POS] [--ack] [--count N] [--window N] [--base64] "
     "[--timeout DUR]",
     "print messages as they arrive, one per line"},
    {NULL, "redrive", wsq__ctl_cmd_redrive, O_TO | O_MAX, 1, 1,
     "redrive DLQ_TOPIC [--to TOPIC] [--max N]",
     "publish dead letters back to their topic (or TOPIC), acknowledging each"},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *f)
{
    fprintf(f, "usage: wsqctl [OPTIONS] COMMAND [ARGS]\n"
               "\n"
               "Broker or local store, one rule for every command: wsqctl asks the broker at\n"
               "the URL (--url, else the first listener of -c, else $WSQ_URL, else\n"
               "http://127.0.0.1:8080) who it is. When a wsqd answers, wsqctl uses it:\n"
               "mutations go through its admin API, and reads open its store read-only (which\n"
               "must be on this machine). When none answers, wsqctl uses the local store\n"
               "(--data, else storage.path of -c, else ./data). -v says which was used.\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (commands[i].group)
            fprintf(f, "\n%s\n", commands[i].group);
        fprintf(f, "  %s\n      %s\n", commands[i].usage, commands[i].summary);
    }
    fprintf(f, "\n"
               "Options:\n"
               "  -d, --data DIR      the local store (default: storage.path of -c, else ./data);\n"
               "                      a broker named by --url or -c must serve this directory\n"
               "  -c, --config FILE   a wsqd config: the broker is its first listener, the local\n"
               "                      store its storage.path\n"
               "      --url URL       the broker, http://HOST:PORT (also https, ws, wss); with\n"
               "                      no --data or -c, it must answer\n"
               "      --token TOKEN   bearer token for the broker (default: $WSQ_TOKEN)\n"
               "      --insecure      do not verify the broker's TLS certificate\n"
               "      --json          machine output: one JSON document per command (export,\n"
               "                      sub and dlq: one per line)\n"
               "  -v, --verbose       say what wsqctl does (first: the broker or store it uses)\n"
               "  -h, --help          this help (wsqctl COMMAND --help: that command)\n"
               "  -V, --version       print versions\n"
               "\n"
               "Command options:\n"
               "      --from POS      peek, dlq: first seq; sub: earliest, latest, resume, SEQ\n"
               "                      or time:UNIX_MS\n"
               "      --limit K       peek: at most K messages (default 10); dlq: at most K\n"
               "                      dead letters (default 100)\n"
               "      --base64        peek, sub: binary payloads as base64 (default hex)\n"
               "      --full          peek: do not shorten long payloads in the table\n"
               "      --all | --before SEQ | --older-than DUR\n"
               "                      purge: everything, seqs below SEQ, or messages older than\n"
               "                      DUR (e.g. 90s, 15m, 2h, 7d)\n"
               "      --consumer NAME sub: durable consumer (default: ephemeral)\n"
               "      --ack           sub: acknowledge each message after printing it\n"
               "      --count N       sub: exit after N messages\n"
               "      --window N      sub: messages in flight\n"
               "      --binary        pub: publish a binary message\n"
               "      --timeout DUR   pub: wait this long for the confirm (default 30s);\n"
               "                      sub: stop after DUR\n"
               "      --to TOPIC      redrive: publish every dead letter to TOPIC (default: the\n"
               "                      topic its wsq-dead-topic header names)\n"
               "      --max N         redrive: at most N dead letters\n"
               "\n"
               "Exit status:\n"
               "  0  success\n"
               "  1  error (no store, store from a newer wsq, permission denied, the store is\n"
               "     locked and no broker serves it, the broker refused, the broker's store is\n"
               "     on another machine, ...)\n"
               "  2  usage error\n"
               "  3  topic or consumer not found\n"
               "  4  check found violations; peek or export met corrupt messages (they\n"
               "     are named on stderr and left out; the rest was written)\n"
               "  5  broker unreachable (pub, sub, redrive; a broker named by --url or -c\n"
               "     that the command needs)\n"
               "\n"
               "Environment: WSQ_TOKEN (default for --token), WSQ_URL (the broker when\n"
               "neither --url nor -c names one).\n"
               "Documentation: docs/wsqctl.md.\n");
}

static void version(void)
{
    printf("wsqctl %s\n", WSQ_VERSION);
    printf("on-disk format %d\n", WSQ_FORMAT_VERSION);
    printf("libwebsockets %s\n", lws_get_library_version());
    printf("%s\n", wsq_store_backend_version());
    printf("libyaml %s\n", yaml_get_version_string());
}

static const command_t *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static int usage_fail(wsqctl_t *c, const command_t *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int usage_fail(wsqctl_t *c, const command_t *cmd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (cmd)
        return wsq__ctl_fail(c, CTL_USAGE, "usage", "%s (usage: wsqctl %s)", msg, cmd->usage);
    return wsq__ctl_fail(c, CTL_USAGE, "usage", "%s (see wsqctl --help)", msg);
}

static void print_failure(wsqctl_t *c)
{
    fprintf(stderr, "wsqctl: %s\n", c->fail_msg);
    if (c->json) {
        json_t *e = json_pack("{s:{s:s,s:s,s:i}}", "error", "code", c->fail_name, "message",
                              c->fail_msg, "exit", c->fail_code);
        if (e) {
            json_dumpf(e, stdout, JSON_COMPACT);
            fputc('\n', stdout);
            json_decref(e);
        }
    }
}

int main(int argc, char **argv)
{
    enum {
        OPT_URL = 256,
        OPT_TOKEN,
        OPT_JSON,
        OPT_INSECURE,
        OPT_FROM,
        OPT_LIMIT,
        OPT_BASE64,
        OPT_FULL,
        OPT_ALL,
        OPT_BEFORE,
        OPT_OLDER,
        OPT_CONSUMER,
        OPT_ACK,
        OPT_COUNT,
        OPT_WINDOW,
        OPT_BINARY,
        OPT_TIMEOUT,
        OPT_TO,
        OPT_MAX,
    };
    static const struct option longopts[] = {
        {"data", required_argument, NULL, 'd'},
        {"config", required_argument, NULL, 'c'},
        {"url", required_argument, NULL, OPT_URL},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"json", no_argument, NULL, OPT_JSON},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"from", required_argument, NULL, OPT_FROM},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"base64", no_argument, NULL, OPT_BASE64},
        {"full", no_argument, NULL, OPT_FULL},
        {"all", no_argument, NULL, OPT_ALL},
        {"before", required_argument, NULL, OPT_BEFORE},
        {"older-than", required_argument, NULL, OPT_OLDER},
        {"consumer", required_argument, NULL, OPT_CONSUMER},
        {"ack", no_argument, NULL, OPT_ACK},
        {"count", required_argument, NULL, OPT_COUNT},
        {"window", required_argument, NULL, OPT_WINDOW},
        {"binary", no_argument, NULL, OPT_BINARY},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"to", required_argument, NULL, OPT_TO},
        {"max", required_argument, NULL, OPT_MAX},
        {NULL, 0, NULL, 0},
    };
    wsqctl_t ctl;
    memset(&ctl, 0, sizeof(ctl));
    wsqctl_t *c = &ctl;
    unsigned given = 0; /* command options seen */
    bool help = false;
    const char *bad_opt = NULL;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":d:c:vhV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            c->data_opt = optarg;
            break;
        case 'c':
            c->config_path = optarg;
            break;
        case OPT_URL:
            c->url_opt = optarg;
            break;
        case OPT_TOKEN:
            c->token = optarg;
            break;
        case OPT_JSON:
            c->json = true;
            break;
        case OPT_INSECURE:
            c->insecure = true;
            break;
        case 'v':
            c->verbose = true;
            break;
        case 'h':
            help = true;
            break;
        case 'V':
            version();
            return CTL_OK;
        case OPT_FROM:
            c->from = optarg, given |= O_FROM;
            break;
        case OPT_LIMIT:
            c->limit = optarg, given |= O_LIMIT;
            break;
        case OPT_BASE64:
            c->base64 = true, given |= O_BASE64;
            break;
        case OPT_FULL:
            c->full = true, given |= O_FULL;
            break;
        case OPT_ALL:
            c->all = true, given |= O_ALL;
            break;
        case OPT_BEFORE:
            c->before = optarg, given |= O_BEFORE;
            break;
        case OPT_OLDER:
            c->older_than = optarg, given |= O_OLDER;
            break;
        case OPT_CONSUMER:
            c->consumer = optarg, given |= O_CONSUMER;
            break;
        case OPT_ACK:
            c->ack = true, given |= O_ACK;
            break;
        case OPT_COUNT:
            c->count = optarg, given |= O_COUNT;
            break;
        case OPT_WINDOW:
            c->window = optarg, given |= O_WINDOW;
            break;
        case OPT_BINARY:
            c->binary = true, given |= O_BINARY;
            break;
        case OPT_TIMEOUT:
            c->timeout = optarg, given |= O_TIMEOUT;
            break;
        case OPT_TO:
            c->to = optarg, given |= O_TO;
            break;
        case OPT_MAX:
            c->max = optarg, given |= O_MAX;
            break;
        case ':':
            if (!bad_opt)
                bad_opt = argv[optind - 1];
            if (!c->fail_code) {
                char m[200];
                snprintf(m, sizeof(m), "option '%s' needs a value", argv[optind - 1]);
                wsq__ctl_fail(c, CTL_USAGE, "usage", "%s (see wsqctl --help)", m);
            }
            break;
        default:
            if (!c->fail_code) {
                const char *o = argv[optind - 1];
                if (optopt && optopt < 256)
                    wsq__ctl_fail(c, CTL_USAGE, "usage", "unknown option '-%c' (see wsqctl --help)",
                                  optopt);
                else
                    wsq__ctl_fail(c, CTL_USAGE, "usage", "unknown option '%s' (see wsqctl --help)",
                                  o);
            }
            break;
        }
    }
    const command_t *cmd = optind < argc ? find_command(argv[optind]) : NULL;
    if (help && !c->fail_code) {
        if (cmd)
            printf("usage: wsqctl [OPTIONS] %s\n  %s\n\nSee wsqctl --help for the options and "
                   "exit codes.\n",
                   cmd->usage, cmd->summary);
        else
            usage(stdout);
        return CTL_OK;
    }
    int rc = c->fail_code;
    if (!rc && optind >= argc)
        rc = usage_fail(c, NULL, "no command given");
    if (!rc && cmd == NULL)
        rc = usage_fail(c, NULL, "unknown command '%s'", argv[optind]);
    if (!rc) {
        c->cmd = cmd->name;
        unsigned extra = given & ~cmd->opts;
        int nargs = argc - optind - 1;
        if (extra) {
            static const char *names[] = {"--from",    "--limit",  "--base64",     "--full",
                                          "--all",     "--before", "--older-than", "--consumer",
                                          "--ack",     "--count",  "--window",     "--binary",
                                          "--timeout", "--to",     "--max"};
            unsigned bit = 0;
            while (!(extra & (1u << bit)))
                bit++;
            rc = usage_fail(c, cmd, "%s does not take %s", cmd->name, names[bit]);
        } else if (nargs < cmd->min_args) {
            rc = usage_fail(c, cmd, "%s needs more arguments", cmd->name);
        } else if (cmd->max_args >= 0 && nargs > cmd->max_args) {
            rc = usage_fail(c, cmd, "unexpected argument '%s'", argv[optind + 1 + cmd->max_args]);
        }
    }
    if (!rc) {
        if (c->token == NULL) {
            const char *env = getenv("WSQ_TOKEN");
            if (env && *env)
                c->token = env;
        }
        char err[512];
        if (c->config_path && wsq_config_load(c->config_path, &c->cfg, err, sizeof(err)) != WSQ_OK)
            rc = wsq__ctl_fail(c, CTL_ERR, "bad_config", "%s", err);
    }
    /* The broker to ask: --url, else -c's first listener, else $WSQ_URL, else the default. */
    char cfg_url[300] = "";
    if (!rc && !c->url_opt && c->cfg && c->cfg->listeners[0].port != 0) {
        const wsq_listener_conf_t *l = &c->cfg->listeners[0];
        const char *a = l->address;
        if (strcmp(a, "0.0.0.0") == 0)
            a = "127.0.0.1";
        else if (strcmp(a, "::") == 0)
            a = "::1";
        bool v6 = strchr(a, ':') != NULL;
        snprintf(cfg_url, sizeof(cfg_url), "%s://%s%s%s:%u", l->tls_cert ? "https" : "http",
                 v6 ? "[" : "", a, v6 ? "]" : "", (unsigned)l->port);
    }
    if (!rc) {
        const char *env = getenv("WSQ_URL");
        const char *u = CTL_DEFAULT_URL, *why = "the default";
        if (c->url_opt)
            u = c->url_opt, why = "--url";
        else if (cfg_url[0])
            u = cfg_url, why = "-c";
        else if (env && *env)
            u = env, why = "$WSQ_URL";
        char err[256];
        if (!wsq__ctl_parse_url(u, &c->url, err, sizeof(err)))
            rc = wsq__ctl_fail(c, CTL_USAGE, "usage", "%s%s%s: %s", u == env ? "WSQ_URL=" : why,
                               u == env ? "" : " ", u, err);
        c->url.why = why;
        c->url_explicit = c->url_opt || cfg_url[0];
    }
    if (!rc) {
        wsq__ctl_http_global(true);
        lws_set_log_level(c->verbose ? LLL_ERR : 0, NULL);
        rc = cmd->fn(c, argc - optind - 1, argv + optind + 1);
        wsq__ctl_http_global(false);
    }
    fflush(stdout);
    /* a command returned a code without a message: a bug, unless it is peek's or export's 4
     * (messages left out for failing their checksum, each already named on stderr; the output
     * holds everything else, and an export stays a file import takes) */
    if (rc != CTL_OK && rc != CTL_VIOLATIONS && c->fail_code == 0)
        wsq__ctl_fail(c, rc, "internal", "%s failed", c->cmd ? c->cmd : "wsqctl");
    if (c->fail_code && c->json && c->doc) {
        /* A command that failed after doing work keeps its document: check's report (the
         * violations are in it), redrive's summary (with the error added). */
        fprintf(stderr, "wsqctl: %s\n", c->fail_msg);
        if (c->fail_code != CTL_VIOLATIONS)
            json_object_set_new(c->doc, "error",
                                json_pack("{s:s,s:s,s:i}", "code", c->fail_name, "message",
                                          c->fail_msg, "exit", c->fail_code));
        json_dumpf(c->doc, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        rc = c->fail_code;
    } else if (c->fail_code) {
        print_failure(c);
        rc = c->fail_code;
    } else if (c->json && c->doc) {
        json_dumpf(c->doc, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    }
    if (fflush(stdout) != 0 && rc == CTL_OK) {
        fprintf(stderr, "wsqctl: writing the output failed\n");
        rc = CTL_ERR;
    }
    json_decref(c->doc);
    wsq_config_free(&c->cfg);
    free(c->data_dir);
    return rc;
}
