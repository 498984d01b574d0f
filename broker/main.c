/* wsqd: the durable WebSocket message broker. */
#include <getopt.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "log.h"
#include "server.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: wsqd [-c FILE] [--check-config FILE] [--print-default] [--version] "
               "[--help]\n"
               "\n"
               "  -c, --config FILE        run with this config (default: the embedded\n"
               "                           conf/wsq.yaml: 127.0.0.1:8080, data in ./data)\n"
               "      --check-config FILE  validate FILE and exit 0 (valid) or 1 (invalid)\n"
               "      --print-default      print the embedded default config and exit\n"
               "  -V, --version            print versions and exit\n"
               "  -h, --help               this help\n"
               "\n"
               "Signals: SIGTERM/SIGINT shut down gracefully (clients get close 1001).\n"
               "Exit status: 0 clean shutdown, 1 configuration or startup error, 2 usage.\n");
}

static void version(void)
{
    printf("wsqd %s\n", WSQ_VERSION);
    printf("on-disk format %d\n", WSQ_FORMAT_VERSION);
    printf("libwebsockets %s\n", lws_get_library_version());
    printf("%s\n", wsq_store_backend_version());
    printf("libyaml %s\n", yaml_get_version_string());
}

int main(int argc, char **argv)
{
    const char *config = NULL, *check = NULL;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},  {"check-config", required_argument, NULL, 'k'},
        {"print-default", no_argument, NULL, 'p'}, {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'k':
            check = optarg;
            break;
        case 'p':
            fputs(wsq_config_default_yaml(), stdout);
            return 0;
        case 'V':
            version();
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "wsqd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    char err[512];
    wsq_config_t *cfg = NULL;
    if (check) {
        if (wsq_config_load(check, &cfg, err, sizeof(err)) != WSQ_OK) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        printf("%s: OK\n", check);
        wsq_config_free(&cfg);
        return 0;
    }
    wsq_err e = config ? wsq_config_load(config, &cfg, err, sizeof(err))
                       : wsq_config_default(&cfg, err, sizeof(err));
    if (e != WSQ_OK) {
        fprintf(stderr, "wsqd: %s\n", err);
        return 1;
    }
    wsq__log_init(cfg->log.level, cfg->log.json);
    /* every connection is a descriptor: take all the kernel allows this process */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    wsq_info_log("start", "version=%s config=%s pid=%ld", WSQ_VERSION, cfg->source, (long)getpid());
    return wsq__server_run(cfg, config); /* the server owns cfg from here */
}
