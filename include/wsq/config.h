/*
 * wsq configuration: one YAML file (conf/wsq.yaml documents every key with its default).
 *
 * The parser is pure (bytes in -> config or error) and uses libyaml. Every error names the
 * file:line:column of the offending node and says what was expected, e.g.
 *   "conf/wsq.yaml:12:11: storage.sync: expected one of full, batch, none; got 'fast'"
 * Unknown keys, wrong types, out-of-range values and duplicate keys are errors.
 *
 * Units accepted in values:
 *   sizes:     an integer (bytes) or an integer with a suffix B, KiB, MiB, GiB, TiB (also
 * KB/MB/GB/TB as powers of 1000), e.g. "64MiB"; durations: an integer (milliseconds) or an integer
 * with a suffix ms, s, m, h, d, e.g. "30s"; 0 means "off" where a key says so.
 *
 * A wsq_config_t is immutable once loaded; a reload builds a new one. Any thread may read it.
 */
#ifndef WSQ_CONFIG_H
#define WSQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsq/err.h"
#include "wsq/store.h"

typedef struct {
    char **items; /* NUL-terminated strings, owned by the config */
    size_t n;
} wsq_strlist_t;

/* Rights of an identity: topic patterns (see wsq/topic.h) it may publish to and subscribe to,
 * and the two HTTP rights. */
typedef struct {
    wsq_strlist_t publish;
    wsq_strlist_t subscribe;
    bool admin;   /* may use the admin endpoint (wsqctl mutations); implies metrics */
    bool metrics; /* may read GET /metrics when metrics.auth is token */
} wsq_rights_t;

typedef struct {
    char *address;                /* "127.0.0.1", "::1", "0.0.0.0", "::" (default "127.0.0.1") */
    uint16_t port;                /* default 8080 */
    char *tls_cert;               /* PEM certificate chain; NULL = plain (ws://, http://) */
    char *tls_key;                /* PEM private key; required with tls_cert */
    char *tls_ca;                 /* CA bundle for client certificates; NULL = none */
    bool tls_require_client_cert; /* refuse clients without a certificate signed by tls_ca */
} wsq_listener_conf_t;

/* Dead letters of a topic (retention rules carry them): after max_deliver deliveries without an
 * ack (0: never) a message goes to the topic named by topic, where "{topic}" stands for the
 * topic's name (default "{topic}.dlq"). */
typedef struct {
    uint32_t max_deliver;
    char *topic;
} wsq_dead_letter_t;

typedef struct {
    char *pattern; /* topic pattern */
    wsq_retention_t retention;
    wsq_dead_letter_t dead;
} wsq_retention_rule_t;

typedef struct {
    char *name;               /* identity name (logs, metrics) */
    unsigned char sha256[32]; /* SHA-256 of the token; the token itself is never stored */
    wsq_rights_t rights;
} wsq_token_conf_t;

/* auth.jwt.roles: a role a provider's roles claim may name, and its rights; its patterns may
 * hold {claim} templates (wsq/topic.h), expanded per token. */
typedef struct {
    char *name;
    wsq_rights_t rights;
} wsq_role_conf_t;

typedef enum {
    WSQ_LOG_ERROR = 0,
    WSQ_LOG_WARN,
    WSQ_LOG_INFO,
    WSQ_LOG_DEBUG,
} wsq_log_level_t;

/* Who may read GET /metrics. The text names topics and consumers, so it is not public unless the
 * config says so. */
typedef enum {
    WSQ_METRICS_AUTH_TOKEN = 0, /* only an identity with the metrics or the admin right (default) */
    WSQ_METRICS_AUTH_PUBLIC,    /* anyone who can connect, without credentials */
} wsq_metrics_auth_t;

typedef struct {
    char *source; /* file name the config came from ("<default>" for the embedded one) */

    wsq_listener_conf_t *listeners; /* at least one */
    size_t n_listeners;

    struct {
        char *path;                  /* default "./data" */
        wsq_sync_t sync;             /* default full */
        uint64_t map_size_initial;   /* default 64MiB */
        uint64_t map_size_max;       /* default 64GiB */
        uint32_t max_readers;        /* default 1024 */
        uint32_t batch_max_messages; /* default 4096 */
        uint64_t batch_max_bytes;    /* default 8MiB */
        uint32_t trim_chunk;         /* default 10000 */
    } storage;

    struct {
        wsq_retention_t defaults;    /* retention.default; all 0 (unlimited), discard old */
        wsq_dead_letter_t dead;      /* retention.default's max_deliver and dead_letter */
        wsq_retention_rule_t *rules; /* retention.topics, first match wins */
        size_t n_rules;
    } retention;

    struct {
        uint64_t max_message_size;         /* default 1MiB; range 1B..256MiB */
        uint32_t max_connections;          /* default 10000; 0 = unlimited */
        uint32_t max_connections_per_ip;   /* default 0 = unlimited */
        uint32_t max_subscriptions;        /* per connection, default 100 */
        uint32_t default_window;           /* default 256 */
        uint32_t max_window;               /* default 10000 */
        uint32_t max_inflight_publishes;   /* unconfirmed publishes per connection, default 1024 */
        uint32_t max_publish_rate;         /* publishes/s per connection, default 0 = unlimited */
        uint64_t writer_queue_high;        /* bytes queued for the writer before publishers pause,
                                            * default 64MiB (resume at half) */
        int64_t ping_interval_ms;          /* default 30s */
        int64_t idle_timeout_ms;           /* hang up after this without pong, default 75s;
                                            * must be > ping_interval */
        int64_t ack_wait_ms;               /* redeliver unacked wsq.v1 messages after, default 30s;
                                            * 0 = only on reconnect */
        int64_t consumer_ttl_ms;           /* delete consumers idle this long, default 0 = never */
        int64_t shutdown_timeout_ms;       /* default 5s */
        uint32_t max_http_body;            /* HTTP request bodies, default = max_message_size */
        uint32_t max_header_size;          /* HTTP headers (JWTs), default 16KiB */
        uint32_t max_message_headers;      /* headers of one message, default 64; 0 = none */
        uint32_t max_message_headers_size; /* their keys and values summed, default 8KiB */
    } limits;

    struct {
        wsq_rights_t anonymous; /* rights without credentials (default none: see conf) */
        wsq_token_conf_t *tokens;
        size_t n_tokens;
        char *jwt_secret; /* HMAC secret (from auth.jwt.secret or secret_file), or NULL */
        size_t jwt_secret_len;
        /* every verification key (the secret, public_key_file, jwks_file) and the accepted
         * algorithms (WSQ_JWT_ALG bits, auth.jwt.algorithms); NULL / 0: no JWT is accepted */
        struct wsq_jwt_keys *jwt_keys;
        unsigned jwt_algs;
        char *jwt_identity_claim;   /* NULL: "sub" */
        char *jwt_roles_claim;      /* NULL: rights from the "wsq" claim */
        wsq_role_conf_t *jwt_roles; /* auth.jwt.roles */
        size_t n_jwt_roles;
        wsq_strlist_t jwt_template_claims; /* every {claim} the roles' patterns use */
        char *jwt_jwks_url;                /* https:// JWK Set, fetched and refreshed, or NULL */
        char *jwt_jwks_ca_file;            /* CA bundle for it (NULL: the system's) */
        int64_t jwt_jwks_refresh_ms;       /* default 10 min */
        char *jwt_issuer;                  /* required "iss" when set */
        char *jwt_audience;                /* required "aud" when set */
        /* browser Origin values allowed ("*": any); empty = only the listener's own origin */
        wsq_strlist_t allowed_origins;
    } auth;

    struct {
        wsq_metrics_auth_t auth; /* default token */
    } metrics;

    struct {
        wsq_log_level_t level; /* default info */
        bool json;             /* format: json (default text) */
    } log;
} wsq_config_t;

/* Parses YAML text. `source` names it in messages. On error returns WSQ_ERR_BAD_CONFIG (or
 * WSQ_ERR_NOMEM) and writes "source:line:col: message" into errbuf (always NUL-terminated when
 * errlen > 0). On success *out owns a new config. */
wsq_err wsq_config_parse(const char *yaml, size_t len, const char *source, wsq_config_t **out,
                         char *errbuf, size_t errlen);

/* Reads and parses a file. A missing or unreadable file is WSQ_ERR_BAD_CONFIG with the path and
 * strerror in errbuf. */
wsq_err wsq_config_load(const char *path, wsq_config_t **out, char *errbuf, size_t errlen);

/* The embedded default: conf/wsq.yaml as shipped, compiled into the binary. */
wsq_err wsq_config_default(wsq_config_t **out, char *errbuf, size_t errlen);

/* The embedded default's YAML text. Static storage. */
const char *wsq_config_default_yaml(void);

/* Frees a config; *cfgp becomes NULL. NULL is a no-op. */
void wsq_config_free(wsq_config_t **cfgp);

/* A topic's dead-letter settings, as wsq_config_retention resolves rules (points into cfg). */
const wsq_dead_letter_t *wsq_config_dead_letter(const wsq_config_t *cfg, const char *topic,
                                                size_t len);
/* The dead-letter topic of topic[0..len) under dl into out[0..cap): "{topic}" replaced. False
 * when the result is not a valid topic name (too long). */
bool wsq_config_dead_topic(const wsq_dead_letter_t *dl, const char *topic, size_t len, char *out,
                           size_t cap);

/* Resolves a topic's retention: the first rule whose pattern matches, else the defaults. */
void wsq_config_retention(const wsq_config_t *cfg, const char *topic, size_t len,
                          wsq_retention_t *out);

/* True when every listener binds a loopback address (127.0.0.0/8, ::1, localhost). */
bool wsq_config_loopback_only(const wsq_config_t *cfg);

/* Parses a size ("64MiB") or a duration ("30s") the way the config does. WSQ_ERR_INVAL. */
wsq_err wsq_parse_size(const char *s, uint64_t *out);
wsq_err wsq_parse_duration_ms(const char *s, int64_t *out);

#endif
