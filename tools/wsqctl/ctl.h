/*
 * wsqctl internals, shared by the tools/wsqctl/ sources only.
 *
 * Every command is a function `int wsq__ctl_cmd_<name>(wsqctl_t *c, int argc, char **argv)` that
 * returns an exit code (CTL_*). Errors are recorded with wsq__ctl_fail(), which keeps the first
 * message; main() prints it (stderr, and a JSON error document on stdout with --json).
 *
 * Where a command works (locate.c, docs/wsqctl.md): one rule for every command. wsqctl asks the
 * broker at the URL (--url, else -c's first listener, else $WSQ_URL, else the default) who it is.
 * When a wsqd answers, wsqctl uses it: changes go through its admin API, reads open its store
 * read-only (on this machine). When none answers, the local store is used (--data, else -c's
 * storage.path, else ./data). dlq reads through the broker's HTTP history when one answers (so
 * it also works for a broker on another machine). pub, sub and redrive always talk to the
 * broker.
 *
 * Output rules:
 *   - Inspect commands read the store through the storage API, one short read transaction per
 *     call, and only write output after the call returned: no read transaction is ever held
 *     across a write to stdout.
 *   - --json output of a command is one JSON document, built in c->doc and printed once at the
 *     end (export and sub stream JSON Lines instead; see docs/wsqctl.md).
 *
 * Single-threaded, except the store's writer thread in offline mutations (import's completion
 * callback); lws runs on the main thread.
 */
#ifndef WSQCTL_CTL_H
#define WSQCTL_CTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "wsq/config.h"
#include "wsq/err.h"
#include "wsq/proto.h"
#include "wsq/store.h"

/* Exit codes (documented in --help and docs/wsqctl.md). */
enum {
    CTL_OK = 0,          /* success */
    CTL_ERR = 1,         /* any other error */
    CTL_USAGE = 2,       /* bad command line */
    CTL_NOTFOUND = 3,    /* topic or consumer does not exist */
    CTL_VIOLATIONS = 4,  /* check found invariant violations */
    CTL_UNREACHABLE = 5, /* the broker could not be reached */
};

/* A broker address, parsed from --url or derived from the config's first listener. */
typedef struct {
    bool tls;        /* https / wss */
    char host[256];  /* without brackets */
    unsigned port;   /* 1..65535 */
    char base[300];  /* "http(s)://host:port" (IPv6 in brackets), no trailing slash */
    const char *why; /* where it came from: "--url", "-c", "$WSQ_URL" or "the default" */
} ctl_url_t;

/* The broker URL when neither --url, -c nor $WSQ_URL names one: the shipped listener. */
#define CTL_DEFAULT_URL "http://127.0.0.1:8080"

typedef struct {
    /* global options */
    const char *data_opt;    /* --data */
    const char *config_path; /* -c */
    const char *url_opt;     /* --url */
    const char *token;       /* --token, else $WSQ_TOKEN; NULL: anonymous */
    bool json;               /* --json */
    bool verbose;            /* --verbose */
    bool insecure;           /* --insecure: no TLS certificate verification */

    /* command options (each command says which it accepts) */
    const char *from;       /* peek: seq; sub: position */
    const char *limit;      /* peek */
    bool base64;            /* peek, sub: binary payloads as base64 (default hex) */
    bool full;              /* peek: no truncation of payloads in tables */
    bool all;               /* purge --all */
    const char *before;     /* purge --before SEQ */
    const char *older_than; /* purge --older-than DUR */
    const char *consumer;   /* sub --consumer */
    bool ack;               /* sub --ack */
    const char *count;      /* sub --count */
    const char *window;     /* sub --window */
    bool binary;            /* pub --binary */
    const char *timeout;    /* pub, sub --timeout DUR */
    const char *to;         /* redrive --to TOPIC */
    const char *max;        /* redrive --max N */

    /* resolved state */
    wsq_config_t *cfg;       /* loaded -c config, or NULL */
    char *data_dir;          /* store directory (malloc'd), NULL until located */
    bool data_explicit;      /* data_dir came from --data, -c or the broker, not the default */
    ctl_url_t url;           /* the broker to ask (always set once main() parsed the options) */
    bool url_explicit;       /* the URL came from --url or -c (a named broker must answer) */
    const char *cmd;         /* command name, for messages */
    const char *need_broker; /* why the command needs a broker, added to "broker unreachable"
                              * messages (NULL: nothing to add) */
    json_t *doc;             /* the --json document of the command (owned) */
    int fail_code;           /* exit code of the first failure, 0 when none */
    char fail_name[32];      /* stable error code of it ("not_found") */
    char fail_msg[1024];     /* human message of it */
} wsqctl_t;

/* ---- errors and output (util.c) ---- */

/* Records a failure (the first one wins) and returns exit. name is a stable code (wsq_errname
 * or one of wsqctl's: "usage", "violations"). */
int wsq__ctl_fail(wsqctl_t *c, int exit, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Maps a storage error on the store at c->data_dir to a specific, actionable failure. */
int wsq__ctl_store_fail(wsqctl_t *c, wsq_err err, const char *doing);

/* --verbose note on stderr. */
void wsq__ctl_note(wsqctl_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sets c->doc (takes the reference). */
void wsq__ctl_doc(wsqctl_t *c, json_t *doc);

/* Human formats into buf (returned). */
const char *wsq__ctl_age(int64_t ms, char *buf, size_t len);      /* "3m12s" */
const char *wsq__ctl_size(uint64_t bytes, char *buf, size_t len); /* "1.5 MiB" */
const char *wsq__ctl_time(int64_t ms, char *buf, size_t len);     /* ISO 8601 UTC, ms */

/* Parses a decimal u64 (no sign, no junk). */
bool wsq__ctl_parse_u64(const char *s, uint64_t *out);

/* peek's and dlq's arguments: checks TOPIC's name and parses --from and --limit (1..1000000) into
 * *from and *limit, which keep their defaults when the option is absent. Records a usage failure
 * and returns CTL_USAGE when one is bad. */
int wsq__ctl_list_args(wsqctl_t *c, const char *topic, uint64_t *from, uint64_t *limit);

/* Records the usage failure for a name that is not a topic name and returns CTL_USAGE. */
int wsq__ctl_bad_topic(wsqctl_t *c, const char *name);

/* A text table printed with aligned columns. */
typedef struct {
    unsigned ncols;
    const char **head;
    const bool *right; /* right-align column i (numbers) */
    char **cells;      /* rows * ncols strings, malloc'd */
    size_t rows, cap;
} ctl_table_t;

void wsq__ctl_table_init(ctl_table_t *t, unsigned ncols, const char **head, const bool *right);
/* Adds one row of ncols cells (copied). false on out of memory. */
bool wsq__ctl_table_add(ctl_table_t *t, const char **cells);
void wsq__ctl_table_print(const ctl_table_t *t, FILE *f);
void wsq__ctl_table_fini(ctl_table_t *t);

/* ---- the broker's address and the data-dir lock (util.c) ---- */

/* Parses a broker URL (http, https, ws, wss). */
bool wsq__ctl_parse_url(const char *s, ctl_url_t *u, char *err, size_t errlen);

/* Pid holding the data-dir lock and a description of the process ("wsqd", "wsqctl", ...). */
long wsq__ctl_lock_holder(const char *dir, char *what, size_t len);

/* True when a and b name the same directory (by realpath; by string when either is missing). */
bool wsq__ctl_same_dir(const char *a, const char *b);

/* ---- HTTP (http.c) ---- */

typedef struct {
    long status;    /* HTTP status, 0 when the request did not complete */
    wsq_buf_t body; /* response body */
} ctl_http_resp_t;

void wsq__ctl_http_global(bool init);
/* One request to c->url. On a transport failure records CTL_UNREACHABLE and returns it. */
int wsq__ctl_http(wsqctl_t *c, const char *method, const char *path, const void *body, size_t len,
                  ctl_http_resp_t *r);
void wsq__ctl_http_resp_fini(ctl_http_resp_t *r);
/* Records the failure of an HTTP error answer ({"error":{code,message}}) and returns its exit
 * code: not_found -> 3, unauthorized/forbidden -> 1 (permission denied), others 1. */
int wsq__ctl_http_fail(wsqctl_t *c, const ctl_http_resp_t *r, const char *doing);

typedef struct {
    char identity[128];
    bool admin;
    long pid;
    char version[64];
    long format;
    char data[4096];
} ctl_whoami_t;

/* What answers at c->url (locate.c decides what that means for a command). */
typedef enum {
    CTL_PROBE_NONE,      /* nothing answers: refused, unresolvable, timed out */
    CTL_PROBE_WSQD,      /* a wsqd answered /admin/whoami; the ctl_whoami_t is filled */
    CTL_PROBE_REFUSED,   /* a wsqd refused wsqctl's identity (401/403) */
    CTL_PROBE_UNTRUSTED, /* a TLS server whose certificate wsqctl does not trust (--insecure) */
    CTL_PROBE_OTHER,     /* something answered that is not a wsqd */
} ctl_probe_t;

/* GET /admin/whoami with a short timeout (connect 1.5 s, answer 5 s). Records no failure. *why
 * gets a sentence for every outcome but WSQD: curl's reason for NONE and OTHER, the full
 * permission or TLS message (as wsqctl would report it) for REFUSED and UNTRUSTED. */
void wsq__ctl_probe(wsqctl_t *c, ctl_whoami_t *w, ctl_probe_t *out, char *why, size_t len);

/* The failure message of an HTTP error answer, as wsq__ctl_http_fail records it, without
 * recording it: returns the exit code and fills name (>= 32 bytes) and msg. */
int wsq__ctl_http_fail_msg(wsqctl_t *c, const ctl_http_resp_t *r, const char *doing, char *name,
                           size_t namelen, char *msg, size_t msglen);

/* ---- the one rule: broker or local store (locate.c) ---- */

/* What a command does with the store. */
typedef enum {
    CTL_NEED_READ,    /* reads the store files (topics, stats, peek, consumers, check, export) */
    CTL_NEED_WRITE,   /* changes the store (purge, delete-consumer, import) */
    CTL_NEED_OFFLINE, /* compact: reads the whole store in one transaction; no wsqd may run */
    CTL_NEED_HISTORY, /* dlq: reads the broker's HTTP history when one answers, and its store
                         too when it is on this machine (t->store, else NULL, never an error);
                         else the local store read-only */
} ctl_need_t;

typedef enum { CTL_VIA_BROKER, CTL_VIA_STORE } ctl_via_t;

typedef struct {
    ctl_via_t via;      /* the broker answered and serves the store, or the local store */
    ctl_whoami_t who;   /* VIA_BROKER: the broker's /admin/whoami */
    wsq_store_t *store; /* the opened store: read-only for READ and OFFLINE; for WRITE via the
                           store, opened exclusively (the data-dir lock) with its writer started */
} ctl_target_t;

/* Applies the rule for a command that needs `need`, sets c->data_dir, says on -v which path was
 * taken, and opens the store when the command works on it (create: WRITE may create a new store).
 * On success the caller owns t->store (wsq__ctl_target_fini). On failure the failure is
 * recorded and nothing is held. */
int wsq__ctl_target(wsqctl_t *c, ctl_need_t need, bool create, ctl_target_t *t);

/* The broker's store (t->via is CTL_VIA_BROKER), opened read-only, when it is on this machine:
 * its data-dir lock is held by the broker's pid. NULL otherwise, and when it cannot be opened;
 * records nothing. The caller closes it. */
wsq_store_t *wsq__ctl_broker_store(wsqctl_t *c, const ctl_target_t *t);

/* Stops and closes t->store (when any). Idempotent. */
void wsq__ctl_target_fini(ctl_target_t *t);

/* Read commands: the rule, then the store opened read-only (the caller closes it). */
int wsq__ctl_open_ro(wsqctl_t *c, wsq_store_t **out);

/* ---- messages (inspect.c) ---- */

/* Looks a topic up in the store; an invalid name is CTL_USAGE and an unknown topic CTL_NOTFOUND
 * with an actionable message (both recorded). */
int wsq__ctl_topic_lookup(wsqctl_t *c, wsq_store_t *s, const char *name, wsq_topic_info_t *ti);

/* A message as peek --json shows it (and HTTP history, without "op" and "topic"):
 * {"seq","ts","size","data"[,"enc":"base64"][,"headers"]}. Text that is not valid UTF-8 goes as
 * base64 too. headers is a block (wsq/proto.h) or NULL. NULL when out of memory. */
json_t *wsq__ctl_msg_json(uint64_t seq, int64_t ts, uint32_t flags, const void *data, size_t len,
                          const void *headers, size_t headers_len);

/* ---- dead letters (dlq.c, client.c) ---- */

/* The durable consumer redrive reads a dead-letter topic with: a dead letter it acknowledged
 * was redriven. */
#define CTL_REDRIVE_CONSUMER "wsq-redrive"
/* The headers the broker adds to a dead letter all begin with this. */
#define CTL_DEAD_PREFIX "wsq-dead-"

/* redrive's loop over wsq.v1 (client.c): the consumer wsq-redrive reads the dead-letter topic
 * from its first unacknowledged message up to the topic's next seq at subscribe time; each dead
 * letter is published with its own headers (not the wsq-dead-* ones) and a publish id made of
 * the topic, its epoch and the seq, then acknowledged once the broker confirmed the publish. */
typedef struct {
    /* in */
    const char *dlq; /* the dead-letter topic */
    const char *to;  /* --to, or NULL: each dead letter's wsq-dead-topic */
    uint64_t max;    /* --max, 0: no limit */
    /* out (the caller creates the arrays and frees them) */
    bool subscribed;   /* the subscription was made: the counts below mean something */
    uint64_t redriven; /* published (confirmed) and acknowledged */
    uint64_t dup;      /* of which the destination had already stored (its publish id was seen) */
    bool max_reached;  /* stopped at --max */
    json_t *topics;    /* the topics published to, in first-use order */
    json_t *failed;    /* [{"seq","code","message"}]: not redriven, not acknowledged */
} ctl_redrive_t;

/* Connects, runs the loop and returns an exit code; a failure of the connection or the
 * subscription is recorded, a dead letter that was not redriven only listed in io->failed. */
int wsq__ctl_redrive_run(wsqctl_t *c, ctl_redrive_t *io);

/* ---- commands ---- */

int wsq__ctl_cmd_topics(wsqctl_t *c, int argc, char **argv);
int wsq__ctl_cmd_stats(wsqctl_t *c, int argc, char **argv);
int wsq__ctl_cmd_peek(wsqctl_t *c, int argc, char **argv);
int wsq__ctl_cmd_consumers(wsqctl_t *c, int argc, char **argv);
int wsq__ctl_cmd_check(wsqctl_t *c, int argc, char **argv);
int wsq__ctl_cmd_export(wsqctl_t *c, int argc, char **argv);
int wsq__ctl_cmd_compact(wsqctl_t *c, int argc, char **argv);
int wsq__ctl_cmd_purge(wsqctl_t *c, int argc, char **argv);
int wsq__ctl_cmd_delete_consumer(wsqctl_t *c, int argc, char **argv);
int wsq__ctl_cmd_import(wsqctl_t *c, int argc, char **argv);
int wsq__ctl_cmd_pub(wsqctl_t *c, int argc, char **argv);
int wsq__ctl_cmd_sub(wsqctl_t *c, int argc, char **argv);
int wsq__ctl_cmd_dlq(wsqctl_t *c, int argc, char **argv);
int wsq__ctl_cmd_redrive(wsqctl_t *c, int argc, char **argv);

#endif
