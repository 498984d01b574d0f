/*
 * Configuration parser: defaults, every section, every error class with its file:line:col and
 * key, the unit parsers, retention resolution, loopback detection and the shipped files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wsq/config.h"
#include "wsq/jwt.h"

#include <openssl/evp.h>
#include <openssl/pem.h>

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)
#define TiB ((uint64_t)1 << 40)

/* A sha256 that is not the hash of anything we know, in both cases. */
#define HASH_A "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define HASH_B "60303AE22B998861BCE3B28F33EEC1BE758A213C86C93C076DBE9F558C11C752"
#define SECRET_32 "0123456789abcdef0123456789abcdef"

/* ---- helpers ---------------------------------------------------------------------------- */

static wsq_config_t *parse_ok(const char *yaml)
{
    char err[512] = "";
    wsq_config_t *cfg = NULL;
    wsq_err rc = wsq_config_parse(yaml, strlen(yaml), "t.yaml", &cfg, err, sizeof(err));
    if (rc != WSQ_OK)
        fail_msg("unexpected error %d: %s", rc, err);
    assert_non_null(cfg);
    return cfg;
}

/* Parses yaml, expects `code`, an error starting with `prefix` and containing `needle`. */
static void expect_err(const char *yaml, wsq_err code, const char *prefix, const char *needle)
{
    char err[1024] = "";
    wsq_config_t *cfg = (wsq_config_t *)(uintptr_t)1;
    wsq_err rc = wsq_config_parse(yaml, strlen(yaml), "t.yaml", &cfg, err, sizeof(err));
    if (rc != code)
        fail_msg("expected error %d, got %d (%s) for:\n%s", code, rc, err, yaml);
    assert_null(cfg);
    if (strncmp(err, prefix, strlen(prefix)) != 0)
        fail_msg("expected prefix '%s', got '%s'", prefix, err);
    if (needle != NULL && strstr(err, needle) == NULL)
        fail_msg("expected '%s' in '%s'", needle, err);
}

static void expect_bad(const char *yaml, const char *prefix, const char *needle)
{
    expect_err(yaml, WSQ_ERR_BAD_CONFIG, prefix, needle);
}

/* Parses yaml, expects WSQ_ERR_BAD_CONFIG with exactly the message `want`. */
static void expect_bad_exact(const char *yaml, const char *want)
{
    char err[1024] = "";
    wsq_config_t *cfg = (wsq_config_t *)(uintptr_t)1;
    wsq_err rc = wsq_config_parse(yaml, strlen(yaml), "t.yaml", &cfg, err, sizeof(err));
    if (rc != WSQ_ERR_BAD_CONFIG)
        fail_msg("expected error %d, got %d (%s) for:\n%s", WSQ_ERR_BAD_CONFIG, rc, err, yaml);
    assert_null(cfg);
    assert_string_equal(err, want);
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Repository root, from WSQ_SOURCE_DIR or from this file's (absolute) path. */
static void source_path(char *buf, size_t len, const char *rel)
{
    const char *env = getenv("WSQ_SOURCE_DIR");
    if (env != NULL) {
        snprintf(buf, len, "%s/%s", env, rel);
        return;
    }
    const char *f = __FILE__;
    const char *t = strstr(f, "tests/unit/test_config.c");
    assert_non_null(t);
    snprintf(buf, len, "%.*s%s", (int)(t - f), f, rel);
}

static void make_tmpdir(char *buf, size_t len)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, len, "%s/wsq-test-config-XXXXXX", tmp != NULL ? tmp : "/tmp");
    assert_non_null(mkdtemp(buf));
}

static bool has(const wsq_strlist_t *l, size_t i, const char *s)
{
    return i < l->n && strcmp(l->items[i], s) == 0;
}

/* ---- defaults ----------------------------------------------------------------------------- */

static void check_builtin_defaults(const wsq_config_t *cfg)
{
    assert_int_equal(cfg->n_listeners, 1);
    assert_string_equal(cfg->listeners[0].address, "127.0.0.1");
    assert_int_equal(cfg->listeners[0].port, 8080);
    assert_null(cfg->listeners[0].tls_cert);
    assert_null(cfg->listeners[0].tls_key);
    assert_null(cfg->listeners[0].tls_ca);
    assert_false(cfg->listeners[0].tls_require_client_cert);

    assert_string_equal(cfg->storage.path, "./data");
    assert_int_equal(cfg->storage.sync, WSQ_SYNC_FULL);
    assert_int_equal(cfg->storage.map_size_initial, 64 * MiB);
    assert_int_equal(cfg->storage.map_size_max, 64 * GiB);
    assert_int_equal(cfg->storage.max_readers, 1024);
    assert_int_equal(cfg->storage.batch_max_messages, 4096);
    assert_int_equal(cfg->storage.batch_max_bytes, 8 * MiB);
    assert_int_equal(cfg->storage.trim_chunk, 10000);

    assert_int_equal(cfg->retention.defaults.max_messages, 0);
    assert_int_equal(cfg->retention.defaults.max_bytes, 0);
    assert_int_equal(cfg->retention.defaults.max_age_ms, 0);
    assert_int_equal(cfg->retention.defaults.discard, WSQ_DISCARD_OLD);
    assert_int_equal(cfg->retention.n_rules, 0);

    assert_int_equal(cfg->limits.max_message_size, MiB);
    assert_int_equal(cfg->limits.max_connections, 10000);
    assert_int_equal(cfg->limits.max_connections_per_ip, 0);
    assert_int_equal(cfg->limits.max_subscriptions, 100);
    assert_int_equal(cfg->limits.default_window, 256);
    assert_int_equal(cfg->limits.max_window, 10000);
    assert_int_equal(cfg->limits.max_inflight_publishes, 1024);
    assert_int_equal(cfg->limits.max_publish_rate, 0);
    assert_int_equal(cfg->limits.writer_queue_high, 64 * MiB);
    assert_int_equal(cfg->limits.ping_interval_ms, 30000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 75000);
    assert_int_equal(cfg->limits.ack_wait_ms, 30000);
    assert_int_equal(cfg->retention.dead.max_deliver, 0);
    assert_string_equal(cfg->retention.dead.topic, "{topic}.dlq");
    assert_int_equal(cfg->limits.consumer_ttl_ms, 0);
    assert_int_equal(cfg->limits.shutdown_timeout_ms, 5000);
    assert_int_equal(cfg->limits.max_http_body, MiB);
    assert_int_equal(cfg->limits.max_header_size, 16 * KiB);

    assert_int_equal(cfg->auth.n_tokens, 0);
    assert_null(cfg->auth.jwt_secret);
    assert_int_equal(cfg->auth.jwt_secret_len, 0);
    assert_null(cfg->auth.jwt_issuer);
    assert_null(cfg->auth.jwt_audience);
    assert_int_equal(cfg->auth.allowed_origins.n, 0);

    assert_int_equal(cfg->metrics.auth, WSQ_METRICS_AUTH_TOKEN);

    assert_int_equal(cfg->log.level, WSQ_LOG_INFO);
    assert_false(cfg->log.json);
}

static void test_config_empty_is_defaults(void **state)
{
    (void)state;
    /* empty text, comments only, an empty document and a null document all mean "defaults" */
    static const char *const texts[] = {"",      "\n\n", "# nothing here\n",
                                        "---\n", "~\n",  "---\n...\n"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        wsq_config_t *cfg = parse_ok(texts[i]);
        check_builtin_defaults(cfg);
        /* the built-in default grants anonymous clients nothing */
        assert_int_equal(cfg->auth.anonymous.publish.n, 0);
        assert_int_equal(cfg->auth.anonymous.subscribe.n, 0);
        assert_false(cfg->auth.anonymous.admin);
        assert_false(cfg->auth.anonymous.metrics);
        assert_string_equal(cfg->source, "t.yaml");
        wsq_config_free(&cfg);
        assert_null(cfg);
    }

    /* NULL text with length 0 is the empty text */
    wsq_config_t *cfg = NULL;
    char err[128];
    assert_int_equal(wsq_config_parse(NULL, 0, "t.yaml", &cfg, err, sizeof(err)), WSQ_OK);
    check_builtin_defaults(cfg);
    wsq_config_free(&cfg);
}

static void test_config_null_sections_are_empty(void **state)
{
    (void)state;
    wsq_config_t *cfg = parse_ok("storage:\nretention:\nlimits:\nauth:\n  anonymous:\n"
                                 "  tokens:\n  jwt:\nmetrics:\nlog: ~\n");
    check_builtin_defaults(cfg);
    assert_int_equal(cfg->auth.anonymous.publish.n, 0);
    wsq_config_free(&cfg);
}

static void test_config_embedded_default(void **state)
{
    (void)state;
    char err[512] = "";
    wsq_config_t *cfg = NULL;
    assert_int_equal(wsq_config_default(&cfg, err, sizeof(err)), WSQ_OK);
    assert_string_equal(err, "");
    assert_non_null(cfg);
    assert_string_equal(cfg->source, "<default>");
    check_builtin_defaults(cfg);

    /* the shipped file grants anonymous rights, and only on loopback */
    assert_int_equal(cfg->auth.anonymous.publish.n, 1);
    assert_true(has(&cfg->auth.anonymous.publish, 0, ">"));
    assert_int_equal(cfg->auth.anonymous.subscribe.n, 1);
    assert_true(has(&cfg->auth.anonymous.subscribe, 0, ">"));
    assert_true(cfg->auth.anonymous.admin);
    /* metrics stay readable out of the box through admin, not through a right of their own */
    assert_false(cfg->auth.anonymous.metrics);
    assert_true(wsq_config_loopback_only(cfg));
    wsq_config_free(&cfg);

    /* it carries the loud warning */
    const char *yaml = wsq_config_default_yaml();
    assert_non_null(strstr(yaml, "anonymous publish and subscribe are allowed only because the "
                                 "listener is"));
    assert_non_null(strstr(yaml, "loopback"));
}

/* The embedded text is conf/wsq.yaml as it is in the tree (the build is not stale). */
static void test_config_embedded_is_shipped_file(void **state)
{
    (void)state;
    char path[1024];
    source_path(path, sizeof(path), "conf/wsq.yaml");
    char *text = read_text(path);
    assert_string_equal(wsq_config_default_yaml(), text);
    free(text);
}

/* Every key the shipped file documents is one it can parse, and it adds nothing but the
 * anonymous grant to the built-in defaults: both must list the same defaults. */
static void test_config_embedded_documents_every_key(void **state)
{
    (void)state;
    static const char *const keys[] = {"listeners:",
                                       "address:",
                                       "port:",
                                       "tls:",
                                       "cert:",
                                       "key:",
                                       "ca:",
                                       "require_client_cert:",
                                       "storage:",
                                       "path:",
                                       "sync:",
                                       "map_size_initial:",
                                       "map_size_max:",
                                       "max_readers:",
                                       "batch_max_messages:",
                                       "batch_max_bytes:",
                                       "trim_chunk:",
                                       "retention:",
                                       "default:",
                                       "max_messages:",
                                       "max_bytes:",
                                       "max_age:",
                                       "discard:",
                                       "dedup_window:",
                                       "max_deliver:",
                                       "dead_letter:",
                                       "topics:",
                                       "pattern:",
                                       "limits:",
                                       "max_message_size:",
                                       "max_connections:",
                                       "max_connections_per_ip:",
                                       "max_subscriptions:",
                                       "default_window:",
                                       "max_window:",
                                       "max_inflight_publishes:",
                                       "max_publish_rate:",
                                       "writer_queue_high:",
                                       "ping_interval:",
                                       "idle_timeout:",
                                       "ack_wait:",
                                       "consumer_ttl:",
                                       "shutdown_timeout:",
                                       "max_http_body:",
                                       "max_header_size:",
                                       "max_message_headers:",
                                       "max_message_headers_size:",
                                       "auth:",
                                       "anonymous:",
                                       "publish:",
                                       "subscribe:",
                                       "admin:",
                                       "metrics:",
                                       "tokens:",
                                       "name:",
                                       "sha256:",
                                       "jwt:",
                                       "secret:",
                                       "secret_file:",
                                       "issuer:",
                                       "audience:",
                                       "allowed_origins:",
                                       "log:",
                                       "level:",
                                       "format:"};
    const char *yaml = wsq_config_default_yaml();
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strstr(yaml, keys[i]) == NULL)
            fail_msg("conf/wsq.yaml does not document %s", keys[i]);
}

/* ---- happy paths, one per section ----------------------------------------------------------- */

static void test_config_listeners(void **state)
{
    (void)state;
    wsq_config_t *cfg = parse_ok("listeners:\n"
                                 "  - address: 0.0.0.0\n"
                                 "    port: 443\n"
                                 "    tls:\n"
                                 "      cert: /etc/wsq/cert.pem\n"
                                 "      key: /etc/wsq/key.pem\n"
                                 "      ca: /etc/wsq/ca.pem\n"
                                 "      require_client_cert: true\n"
                                 "  - address: \"::1\"\n"
                                 "    port: 0\n"
                                 "  - port: 9000\n"
                                 "  - address: localhost\n"
                                 "    port: 8081\n"
                                 "    tls: ~\n");
    assert_int_equal(cfg->n_listeners, 4);
    const wsq_listener_conf_t *l = cfg->listeners;
    assert_string_equal(l[0].address, "0.0.0.0");
    assert_int_equal(l[0].port, 443);
    assert_string_equal(l[0].tls_cert, "/etc/wsq/cert.pem");
    assert_string_equal(l[0].tls_key, "/etc/wsq/key.pem");
    assert_string_equal(l[0].tls_ca, "/etc/wsq/ca.pem");
    assert_true(l[0].tls_require_client_cert);
    assert_string_equal(l[1].address, "::1");
    assert_int_equal(l[1].port, 0);
    assert_null(l[1].tls_cert);
    assert_string_equal(l[2].address, "127.0.0.1"); /* default address */
    assert_int_equal(l[2].port, 9000);
    assert_string_equal(l[3].address, "localhost");
    assert_null(l[3].tls_cert);
    assert_false(wsq_config_loopback_only(cfg));
    wsq_config_free(&cfg);

    /* a listener without keys is the default one; the same port on two addresses is fine */
    cfg = parse_ok("listeners:\n  - {}\n  - {address: \"::1\", port: 8080}\n");
    assert_int_equal(cfg->n_listeners, 2);
    assert_string_equal(cfg->listeners[0].address, "127.0.0.1");
    assert_int_equal(cfg->listeners[0].port, 8080);
    wsq_config_free(&cfg);
}

static void test_config_storage(void **state)
{
    (void)state;
    wsq_config_t *cfg = parse_ok("storage:\n"
                                 "  path: /var/lib/wsq\n"
                                 "  sync: batch\n"
                                 "  map_size_initial: 1GiB\n"
                                 "  map_size_max: 2TiB\n"
                                 "  max_readers: 4096\n"
                                 "  batch_max_messages: 100\n"
                                 "  batch_max_bytes: 1MB\n"
                                 "  trim_chunk: 500\n");
    assert_string_equal(cfg->storage.path, "/var/lib/wsq");
    assert_int_equal(cfg->storage.sync, WSQ_SYNC_BATCH);
    assert_int_equal(cfg->storage.map_size_initial, GiB);
    assert_int_equal(cfg->storage.map_size_max, 2 * TiB);
    assert_int_equal(cfg->storage.max_readers, 4096);
    assert_int_equal(cfg->storage.batch_max_messages, 100);
    assert_int_equal(cfg->storage.batch_max_bytes, 1000000);
    assert_int_equal(cfg->storage.trim_chunk, 500);
    wsq_config_free(&cfg);

    cfg = parse_ok("storage: {sync: none}\n");
    assert_int_equal(cfg->storage.sync, WSQ_SYNC_NONE);
    wsq_config_free(&cfg);

    /* equal initial and max is allowed */
    cfg = parse_ok("storage: {map_size_initial: 1GiB, map_size_max: 1024MiB}\n");
    assert_int_equal(cfg->storage.map_size_max, GiB);
    wsq_config_free(&cfg);
}

static void test_config_retention(void **state)
{
    (void)state;
    /* topics come before default on purpose: rules inherit whatever the key order */
    wsq_config_t *cfg = parse_ok("retention:\n"
                                 "  topics:\n"
                                 "    - pattern: \"metrics.>\"\n"
                                 "      max_age: 1h\n"
                                 "    - pattern: orders.*\n"
                                 "      max_messages: 1000\n"
                                 "      discard: new\n"
                                 "    - pattern: \"logs/*/raw\"\n"
                                 "      max_bytes: 0\n"
                                 "      max_age: 0\n"
                                 "  default:\n"
                                 "    max_messages: 100000\n"
                                 "    max_bytes: 1GiB\n"
                                 "    max_age: 7d\n"
                                 "    discard: old\n");
    assert_int_equal(cfg->retention.defaults.max_messages, 100000);
    assert_int_equal(cfg->retention.defaults.max_bytes, GiB);
    assert_int_equal(cfg->retention.defaults.max_age_ms, 7 * 86400000LL);
    assert_int_equal(cfg->retention.defaults.discard, WSQ_DISCARD_OLD);
    assert_int_equal(cfg->retention.n_rules, 3);

    const wsq_retention_rule_t *r = cfg->retention.rules;
    assert_string_equal(r[0].pattern, "metrics.>");
    assert_int_equal(r[0].retention.max_age_ms, 3600000);
    assert_int_equal(r[0].retention.max_messages, 100000); /* inherited */
    assert_int_equal(r[0].retention.max_bytes, GiB);       /* inherited */
    assert_int_equal(r[0].retention.discard, WSQ_DISCARD_OLD);

    assert_string_equal(r[1].pattern, "orders.*");
    assert_int_equal(r[1].retention.max_messages, 1000);
    assert_int_equal(r[1].retention.discard, WSQ_DISCARD_NEW);
    assert_int_equal(r[1].retention.max_age_ms, 7 * 86400000LL);

    assert_string_equal(r[2].pattern, "logs/*/raw");
    assert_int_equal(r[2].retention.max_bytes, 0); /* explicitly unlimited */
    assert_int_equal(r[2].retention.max_age_ms, 0);
    assert_int_equal(r[2].retention.max_messages, 100000);
    wsq_config_free(&cfg);
}

static void test_config_limits(void **state)
{
    (void)state;
    wsq_config_t *cfg = parse_ok("limits:\n"
                                 "  max_message_size: 256MiB\n"
                                 "  max_connections: 0\n"
                                 "  max_connections_per_ip: 50\n"
                                 "  max_subscriptions: 10\n"
                                 "  default_window: 10\n"
                                 "  max_window: 10\n"
                                 "  max_inflight_publishes: 7\n"
                                 "  max_publish_rate: 100\n"
                                 "  writer_queue_high: 1KiB\n"
                                 "  ping_interval: 1s\n"
                                 "  idle_timeout: 1001\n"
                                 "  ack_wait: 0\n"
                                 "  consumer_ttl: 30d\n"
                                 "  shutdown_timeout: 250ms\n"
                                 "  max_http_body: 4MiB\n"
                                 "  max_header_size: 4KiB\n");
    assert_int_equal(cfg->limits.max_message_size, 256 * MiB);
    assert_int_equal(cfg->limits.max_connections, 0);
    assert_int_equal(cfg->limits.max_connections_per_ip, 50);
    assert_int_equal(cfg->limits.max_subscriptions, 10);
    assert_int_equal(cfg->limits.default_window, 10);
    assert_int_equal(cfg->limits.max_window, 10);
    assert_int_equal(cfg->limits.max_inflight_publishes, 7);
    assert_int_equal(cfg->limits.max_publish_rate, 100);
    assert_int_equal(cfg->limits.writer_queue_high, KiB);
    assert_int_equal(cfg->limits.ping_interval_ms, 1000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 1001);
    assert_int_equal(cfg->limits.ack_wait_ms, 0);
    assert_int_equal(cfg->limits.consumer_ttl_ms, 30 * 86400000LL);
    assert_int_equal(cfg->limits.shutdown_timeout_ms, 250);
    assert_int_equal(cfg->limits.max_http_body, 4 * MiB);
    assert_int_equal(cfg->limits.max_header_size, 4 * KiB);
    wsq_config_free(&cfg);

    /* max_http_body follows max_message_size unless it is set */
    cfg = parse_ok("limits: {max_message_size: 64KiB}\n");
    assert_int_equal(cfg->limits.max_http_body, 64 * KiB);
    wsq_config_free(&cfg);
    cfg = parse_ok("limits: {max_message_size: 64KiB, max_http_body: 1KiB}\n");
    assert_int_equal(cfg->limits.max_http_body, KiB);
    wsq_config_free(&cfg);
}

static void test_config_auth(void **state)
{
    (void)state;
    wsq_config_t *cfg = parse_ok("auth:\n"
                                 "  anonymous:\n"
                                 "    subscribe: [\"public.>\"]\n"
                                 "  tokens:\n"
                                 "    - name: alice\n"
                                 "      sha256: " HASH_A "\n"
                                 "      publish: [\"chat.>\", \"presence.*\"]\n"
                                 "      subscribe: [\"chat.>\"]\n"
                                 "    - name: ops@example.com\n"
                                 "      sha256: " HASH_B "\n"
                                 "      admin: true\n"
                                 "  jwt:\n"
                                 "    secret: \"" SECRET_32 "\"\n"
                                 "    issuer: https://auth.example.com\n"
                                 "    audience: wsq\n"
                                 "  allowed_origins:\n"
                                 "    - https://app.example.com\n"
                                 "    - http://localhost:3000\n");
    assert_int_equal(cfg->auth.anonymous.publish.n, 0);
    assert_int_equal(cfg->auth.anonymous.subscribe.n, 1);
    assert_true(has(&cfg->auth.anonymous.subscribe, 0, "public.>"));
    assert_false(cfg->auth.anonymous.admin);

    assert_int_equal(cfg->auth.n_tokens, 2);
    const wsq_token_conf_t *t = cfg->auth.tokens;
    assert_string_equal(t[0].name, "alice");
    static const unsigned char a0[4] = {0x9f, 0x86, 0xd0, 0x81};
    assert_memory_equal(t[0].sha256, a0, 4);
    assert_int_equal(t[0].sha256[31], 0x08);
    assert_int_equal(t[0].rights.publish.n, 2);
    assert_true(has(&t[0].rights.publish, 0, "chat.>"));
    assert_true(has(&t[0].rights.publish, 1, "presence.*"));
    assert_int_equal(t[0].rights.subscribe.n, 1);
    assert_false(t[0].rights.admin);
    assert_string_equal(t[1].name, "ops@example.com");
    assert_int_equal(t[1].sha256[0], 0x60); /* uppercase hex */
    assert_int_equal(t[1].sha256[31], 0x52);
    assert_int_equal(t[1].rights.publish.n, 0);
    assert_true(t[1].rights.admin);

    assert_int_equal(cfg->auth.jwt_secret_len, 32);
    assert_string_equal(cfg->auth.jwt_secret, SECRET_32);
    assert_string_equal(cfg->auth.jwt_issuer, "https://auth.example.com");
    assert_string_equal(cfg->auth.jwt_audience, "wsq");
    assert_int_equal(cfg->auth.allowed_origins.n, 2);
    assert_true(has(&cfg->auth.allowed_origins, 1, "http://localhost:3000"));
    wsq_config_free(&cfg);
    /* "*": any origin; "null": sandboxed and file:// pages */
    cfg = parse_ok("auth:\n  allowed_origins: [\"*\", \"null\"]\n");
    assert_true(has(&cfg->auth.allowed_origins, 0, "*"));
    assert_true(has(&cfg->auth.allowed_origins, 1, "null"));
    wsq_config_free(&cfg);
}

static void test_config_metrics(void **state)
{
    (void)state;
    static const struct {
        const char *yaml;
        wsq_metrics_auth_t want;
    } cases[] = {
        {"metrics:\n  auth: public\n", WSQ_METRICS_AUTH_PUBLIC},
        {"metrics:\n  auth: token\n", WSQ_METRICS_AUTH_TOKEN},
        {"metrics: {auth: public}\n", WSQ_METRICS_AUTH_PUBLIC},
        {"metrics: {}\n", WSQ_METRICS_AUTH_TOKEN},
        {"metrics:\n", WSQ_METRICS_AUTH_TOKEN},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        wsq_config_t *cfg = parse_ok(cases[i].yaml);
        if (cfg->metrics.auth != cases[i].want)
            fail_msg("%s: expected metrics.auth %d, got %d", cases[i].yaml, cases[i].want,
                     cfg->metrics.auth);
        wsq_config_free(&cfg);
    }

    /* the metrics right, on anonymous and on tokens, apart from admin */
    wsq_config_t *cfg = parse_ok("auth:\n"
                                 "  anonymous:\n"
                                 "    metrics: true\n"
                                 "  tokens:\n"
                                 "    - name: prometheus\n"
                                 "      sha256: " HASH_A "\n"
                                 "      metrics: true\n"
                                 "    - name: ops\n"
                                 "      sha256: " HASH_B "\n"
                                 "      admin: true\n"
                                 "      metrics: false\n"
                                 "metrics:\n"
                                 "  auth: token\n");
    assert_int_equal(cfg->metrics.auth, WSQ_METRICS_AUTH_TOKEN);
    assert_true(cfg->auth.anonymous.metrics);
    assert_false(cfg->auth.anonymous.admin);
    assert_int_equal(cfg->auth.anonymous.publish.n, 0);
    assert_int_equal(cfg->auth.n_tokens, 2);
    assert_true(cfg->auth.tokens[0].rights.metrics);
    assert_false(cfg->auth.tokens[0].rights.admin);
    assert_int_equal(cfg->auth.tokens[0].rights.publish.n, 0);
    assert_int_equal(cfg->auth.tokens[0].rights.subscribe.n, 0);
    assert_false(cfg->auth.tokens[1].rights.metrics);
    assert_true(cfg->auth.tokens[1].rights.admin);
    wsq_config_free(&cfg);

    /* left out, the right is not granted */
    cfg =
        parse_ok("auth:\n  anonymous: {admin: true}\n  tokens: [{name: a, sha256: " HASH_A "}]\n");
    assert_false(cfg->auth.anonymous.metrics);
    assert_false(cfg->auth.tokens[0].rights.metrics);
    wsq_config_free(&cfg);
}

static void test_config_metrics_errors(void **state)
{
    (void)state;
    expect_bad_exact("metrics:\n  auth: open\n",
                     "t.yaml:2:9: metrics.auth: expected one of token, public; got 'open'");
    expect_bad_exact("metrics:\n  auth: TOKEN\n",
                     "t.yaml:2:9: metrics.auth: expected one of token, public; got 'TOKEN'");
    expect_bad_exact("metrics:\n  auth: [token]\n",
                     "t.yaml:2:9: metrics.auth: expected one of token, public; got a list");
    expect_bad_exact("metrics:\n  auth:\n",
                     "t.yaml:2:8: metrics.auth: expected one of token, public; got null");
    expect_bad_exact("metrics:\n  auth: token\n  scrape_interval: 15s\n",
                     "t.yaml:3:3: metrics.scrape_interval: unknown key; valid keys are: auth");
    expect_bad_exact("metrics:\n  uath: public\n",
                     "t.yaml:2:3: metrics.uath: unknown key (did you mean 'auth'?); valid keys "
                     "are: auth");
    expect_bad_exact("metrics:\n  auth: token\n  auth: public\n",
                     "t.yaml:3:3: metrics.auth: duplicate key (first set at line 2)");
    /* the likely slip: the mode without its key */
    expect_bad_exact("metrics: public\n", "t.yaml:1:10: metrics: expected a mapping; got 'public'");

    /* the right is a boolean, like admin */
    expect_bad_exact("auth:\n  anonymous:\n    metrics: yes\n",
                     "t.yaml:3:14: auth.anonymous.metrics: expected true or false; got 'yes'");
    expect_bad_exact("auth:\n  tokens:\n    - name: prometheus\n      sha256: " HASH_A
                     "\n      metrics: \"true\"\n",
                     "t.yaml:5:16: auth.tokens[0].metrics: expected true or false; got 'true' (a "
                     "quoted string)");
    expect_bad_exact("auth:\n  tokens:\n    - {name: p, sha256: " HASH_A ", metrics: [x]}\n",
                     "t.yaml:3:100: auth.tokens[0].metrics: expected true or false; got a list");
    expect_bad_exact("auth:\n  anonymous:\n    metric: true\n",
                     "t.yaml:3:5: auth.anonymous.metric: unknown key (did you mean 'metrics'?); "
                     "valid keys are: publish, subscribe, admin, metrics");
}

static void test_config_log(void **state)
{
    (void)state;
    static const struct {
        const char *level;
        wsq_log_level_t want;
    } cases[] = {{"error", WSQ_LOG_ERROR},
                 {"warn", WSQ_LOG_WARN},
                 {"info", WSQ_LOG_INFO},
                 {"debug", WSQ_LOG_DEBUG}};
    for (size_t i = 0; i < 4; i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "log:\n  level: %s\n  format: %s\n", cases[i].level,
                 i % 2 ? "json" : "text");
        wsq_config_t *cfg = parse_ok(yaml);
        assert_int_equal(cfg->log.level, cases[i].want);
        assert_int_equal(cfg->log.json, i % 2 == 1);
        wsq_config_free(&cfg);
    }
}

/* Anchors and aliases share one list between identities. */
static void test_config_anchors(void **state)
{
    (void)state;
    wsq_config_t *cfg = parse_ok("auth:\n"
                                 "  anonymous:\n"
                                 "    publish: &chat [\"chat.>\"]\n"
                                 "    subscribe: *chat\n");
    assert_true(has(&cfg->auth.anonymous.publish, 0, "chat.>"));
    assert_true(has(&cfg->auth.anonymous.subscribe, 0, "chat.>"));
    assert_ptr_not_equal(cfg->auth.anonymous.publish.items[0],
                         cfg->auth.anonymous.subscribe.items[0]);
    wsq_config_free(&cfg);
}

/* ---- errors --------------------------------------------------------------------------------- */

static void test_config_unknown_key(void **state)
{
    (void)state;
    expect_bad("storage:\n  path: x\n  syncc: full\n", "t.yaml:3:3: storage.syncc: ",
               "unknown key (did you mean 'sync'?); valid keys are: path, sync, map_size_initial, "
               "map_size_max, max_readers, batch_max_messages, batch_max_bytes, trim_chunk");
    expect_bad("listen:\n  - port: 1\n", "t.yaml:1:1: listen: ",
               "valid keys are: listeners, storage, retention, limits, auth, metrics, log");
    expect_bad("log:\n  colour: true\n",
               "t.yaml:2:3: log.colour: ", "unknown key; valid keys are: level, format");
    expect_bad("listeners:\n  - port: 1\n    host: x\n",
               "t.yaml:3:5: listeners[0].host: ", "valid keys are: address, port, tls");
    expect_bad("listeners:\n  - tls:\n      cert: a\n      key: b\n      chain: c\n",
               "t.yaml:5:7: listeners[0].tls.chain: ", "cert, key, ca, require_client_cert");
    expect_bad("retention:\n  topics:\n    - pattern: a\n      max_size: 1\n",
               "t.yaml:4:7: retention.topics[0].max_size: ",
               "max_messages, max_bytes, max_age, discard, dedup_window, max_deliver, "
               "dead_letter, pattern");
    /* pattern is a key of rules only */
    expect_bad("retention:\n  default:\n    pattern: a\n",
               "t.yaml:3:5: retention.default.pattern: ",
               "valid keys are: max_messages, max_bytes, max_age, discard, dedup_window, "
               "max_deliver, dead_letter");
    expect_bad("auth:\n  jwt:\n    secret: " SECRET_32 "\n    iss: x\n",
               "t.yaml:4:5: auth.jwt.iss: ", "did you mean 'issuer'");
    expect_bad("auth:\n  anonymous:\n    read: []\n",
               "t.yaml:3:5: auth.anonymous.read: ", "publish, subscribe, admin, metrics");
    expect_bad("limits:\n  max_msg_size: 1\n",
               "t.yaml:2:3: limits.max_msg_size: ", "valid keys are: max_message_size, ");
    /* non-string keys */
    expect_bad("storage:\n  ? [a]\n  : b\n", "t.yaml:2:5: storage: ", "keys must be plain strings");
    expect_bad("? {a: b}\n: c\n", "t.yaml:1:3: keys must be plain strings", NULL);
    /* merge keys are not supported: they are unknown keys */
    expect_bad("log:\n  <<: {level: info}\n", "t.yaml:2:3: log.<<: ", "unknown key");
}

static void test_config_wrong_type(void **state)
{
    (void)state;
    /* a list where a scalar is expected */
    expect_bad("storage:\n  path: [a, b]\n",
               "t.yaml:2:9: storage.path: ", "expected a string; got a list");
    expect_bad("listeners:\n  - port: [1]\n",
               "t.yaml:2:11: listeners[0].port: ", "expected an integer in 0..65535; got a list");
    /* "abc" for an integer */
    expect_bad("limits:\n  max_window: abc\n",
               "t.yaml:2:15: limits.max_window: ", "expected an integer in 1..1000000");
    /* negative for unsigned */
    expect_bad("limits:\n  max_connections: -1\n",
               "t.yaml:2:20: limits.max_connections: ", "expected a non-negative integer");
    /* fractions, hex, leading zeros and quoted numbers are not integers */
    expect_bad("limits:\n  max_window: 1.5\n", "t.yaml:2:15: limits.max_window: ", "got '1.5'");
    expect_bad("limits:\n  max_window: 0x10\n", "t.yaml:2:15: limits.max_window: ", "got '0x10'");
    expect_bad("listeners:\n  - port: 080\n", "t.yaml:2:11: listeners[0].port: ", "leading zero");
    expect_bad("listeners:\n  - port: \"8080\"\n",
               "t.yaml:2:11: listeners[0].port: ", "remove the quotes");
    /* null where a value is needed */
    expect_bad("storage:\n  path:\n", "t.yaml:2:8: storage.path: ", "expected a string; got null");
    expect_bad("storage:\n  path: \"\"\n", "t.yaml:2:9: storage.path: ", "must not be empty");
    /* booleans are true and false only */
    expect_bad("auth:\n  anonymous:\n    admin: yes\n",
               "t.yaml:3:12: auth.anonymous.admin: ", "expected true or false; got 'yes'");
    expect_bad("auth:\n  anonymous:\n    admin: \"true\"\n",
               "t.yaml:3:12: auth.anonymous.admin: ", "quoted");
    expect_bad("auth:\n  anonymous:\n    admin: 1\n",
               "t.yaml:3:12: auth.anonymous.admin: ", "expected true or false");
    /* a scalar where a list is expected */
    expect_bad("auth:\n  anonymous:\n    publish: \"chat.>\"\n",
               "t.yaml:3:14: auth.anonymous.publish: ", "expected a list of topic patterns");
    expect_bad("auth:\n  allowed_origins:\n    - [x]\n",
               "t.yaml:3:7: auth.allowed_origins[0]: ", "expected a string; got a list");
    /* a scalar where a mapping is expected */
    expect_bad("storage: ./data\n", "t.yaml:1:10: storage: ", "expected a mapping; got './data'");
    expect_bad("listeners: 127.0.0.1\n",
               "t.yaml:1:12: listeners: ", "expected a list of listeners");
    expect_bad("listeners:\n  - 127.0.0.1:8080\n",
               "t.yaml:2:5: listeners[0]: ", "expected a mapping");
    expect_bad("retention:\n  topics: {pattern: a}\n",
               "t.yaml:2:11: retention.topics: ", "expected a list of rules");
    expect_bad("auth:\n  tokens:\n    - alice\n",
               "t.yaml:3:7: auth.tokens[0]: ", "expected a mapping");
    expect_bad("listeners:\n  - tls: true\n",
               "t.yaml:2:10: listeners[0].tls: ", "expected a mapping; got 'true'");
}

static void test_config_duplicate_key(void **state)
{
    (void)state;
    expect_bad("storage:\n  path: a\n  sync: full\n  path: b\n",
               "t.yaml:4:3: storage.path: ", "duplicate key (first set at line 2)");
    expect_bad("log: {}\nstorage: {}\nlog: {}\n", "t.yaml:3:1: log: ", "duplicate key");
    expect_bad("listeners:\n  - port: 1\n    port: 2\n",
               "t.yaml:3:5: listeners[0].port: ", "duplicate key");
}

static void test_config_out_of_range(void **state)
{
    (void)state;
    expect_bad("listeners:\n  - port: 65536\n",
               "t.yaml:2:11: listeners[0].port: ", "out of range: allowed 0..65535; got '65536'");
    expect_bad("listeners:\n  - port: 99999999999999999999999\n",
               "t.yaml:2:11: listeners[0].port: ", "out of range: allowed 0..65535");
    expect_bad("limits:\n  max_message_size: 257MiB\n", "t.yaml:2:21: limits.max_message_size: ",
               "out of range: allowed 1B..256MiB; got '257MiB'");
    expect_bad("limits:\n  max_message_size: 0\n",
               "t.yaml:2:21: limits.max_message_size: ", "allowed 1B..256MiB");
    expect_bad("limits:\n  max_header_size: 1KiB\n",
               "t.yaml:2:20: limits.max_header_size: ", "allowed 4KiB..63KiB");
    expect_bad("limits:\n  ping_interval: 500ms\n",
               "t.yaml:2:18: limits.ping_interval: ", "allowed 1s..1d");
    expect_bad("limits:\n  default_window: 0\n",
               "t.yaml:2:19: limits.default_window: ", "allowed 1..1000000");
    expect_bad("storage:\n  max_readers: 0\n",
               "t.yaml:2:16: storage.max_readers: ", "allowed 1..65536");
    expect_bad("storage:\n  map_size_initial: 1KiB\n",
               "t.yaml:2:21: storage.map_size_initial: ", "allowed 1MiB..64TiB");
    /* cross-key ranges point at the key that is set */
    expect_bad("storage:\n  map_size_initial: 1GiB\n  map_size_max: 512MiB\n",
               "t.yaml:3:17: storage.map_size_max: ",
               "map_size_max (512MiB) must be >= map_size_initial (1GiB)");
    expect_bad("storage:\n  map_size_initial: 128GiB\n",
               "t.yaml:2:21: storage.map_size_initial: ", "must be >= map_size_initial (128GiB)");
    expect_bad("limits:\n  default_window: 20000\n", "t.yaml:2:19: limits.default_window: ",
               "default_window (20000) must be <= max_window (10000)");
    expect_bad("limits:\n  max_window: 100\n", "t.yaml:2:15: limits.max_window: ",
               "default_window (256) must be <= max_window (100)");
}

static void test_config_bad_enum(void **state)
{
    (void)state;
    /* the exact example of config.h */
    expect_bad("storage:\n  path: ./data\n  sync: fast\n",
               "t.yaml:3:9: storage.sync: ", "expected one of full, batch, none; got 'fast'");
    char err[256];
    wsq_config_t *cfg = NULL;
    const char *yaml = "# conf\n\n\n\n\n\n\n\n\nstorage:\n  path: ./data\n  sync: fast\n";
    assert_int_equal(wsq_config_parse(yaml, strlen(yaml), "conf/wsq.yaml", &cfg, err, sizeof(err)),
                     WSQ_ERR_BAD_CONFIG);
    assert_string_equal(err, "conf/wsq.yaml:12:9: storage.sync: expected one of full, batch, none; "
                             "got 'fast'");

    expect_bad("storage:\n  sync: FULL\n", "t.yaml:2:9: storage.sync: ", "got 'FULL'");
    expect_bad("log:\n  level: verbose\n", "t.yaml:2:10: log.level: ",
               "expected one of error, warn, info, debug; got 'verbose'");
    expect_bad("log:\n  format: xml\n",
               "t.yaml:2:11: log.format: ", "expected one of text, json; got 'xml'");
    expect_bad(
        "retention:\n  default:\n    discard: oldest\n",
        "t.yaml:3:14: retention.default.discard: ", "expected one of old, new; got 'oldest'");
    expect_bad("storage:\n  sync: [full]\n", "t.yaml:2:9: storage.sync: ", "got a list");
}

static void test_config_bad_size_and_duration(void **state)
{
    (void)state;
    expect_bad("limits:\n  max_message_size: 1.5MiB\n",
               "t.yaml:2:21: limits.max_message_size: ", "whole numbers only");
    expect_bad("limits:\n  max_message_size: 10XB\n",
               "t.yaml:2:21: limits.max_message_size: ", "expected a size in 1B..256MiB");
    expect_bad("limits:\n  max_message_size: 1mib\n",
               "t.yaml:2:21: limits.max_message_size: ", "got '1mib'");
    expect_bad("limits:\n  max_message_size: 1 MiB\n",
               "t.yaml:2:21: limits.max_message_size: ", "expected a size");
    expect_bad("limits:\n  max_message_size: -1\n",
               "t.yaml:2:21: limits.max_message_size: ", "must not be negative");
    expect_bad("retention:\n  default:\n    max_bytes: 99999999999TiB\n",
               "t.yaml:3:16: retention.default.max_bytes: ", "out of range");
    expect_bad("limits:\n  ack_wait: 30x\n",
               "t.yaml:2:13: limits.ack_wait: ", "expected a duration in 0..7d");
    expect_bad("limits:\n  ack_wait: 1.5s\n",
               "t.yaml:2:13: limits.ack_wait: ", "whole numbers only");
    expect_bad("limits:\n  ack_wait: -5s\n",
               "t.yaml:2:13: limits.ack_wait: ", "must not be negative");
    expect_bad("limits:\n  ack_wait: 8d\n",
               "t.yaml:2:13: limits.ack_wait: ", "out of range: allowed 0..7d; got '8d'");
    expect_bad("retention:\n  default:\n    max_age: 9999999999999999d\n",
               "t.yaml:3:14: retention.default.max_age: ", "out of range");
    expect_bad("limits:\n  ack_wait: {}\n", "t.yaml:2:13: limits.ack_wait: ", "got a mapping");
}

static void test_config_tls_needs_cert_and_key(void **state)
{
    (void)state;
    expect_bad("listeners:\n  - tls:\n      cert: c.pem\n",
               "t.yaml:3:13: listeners[0].tls.cert: ", "cert is set but key is missing");
    expect_bad("listeners:\n  - tls:\n      key: k.pem\n",
               "t.yaml:3:12: listeners[0].tls.key: ", "key is set but cert is missing");
    expect_bad("listeners:\n  - tls: {}\n",
               "t.yaml:2:10: listeners[0].tls: ", "TLS needs cert and key");
    expect_bad(
        "listeners:\n  - tls:\n      cert: c\n      key: k\n      require_client_cert: true\n",
        "t.yaml:5:28: listeners[0].tls.require_client_cert: ", "needs ca");
}

static void test_config_bad_listener(void **state)
{
    (void)state;
    expect_bad("listeners:\n  - address: example.com\n",
               "t.yaml:2:14: listeners[0].address: ", "expected an IPv4 or IPv6 address");
    expect_bad("listeners:\n  - address: 127.0.0.1:8080\n",
               "t.yaml:2:14: listeners[0].address: ", "got '127.0.0.1:8080'");
    expect_bad("listeners: []\n", "t.yaml:1:12: listeners: ", "at least one listener is required");
    expect_bad("listeners:\n", "t.yaml:1:11: listeners: ", "at least one listener");
    expect_bad("listeners:\n  - port: 80\n  - {address: 127.0.0.1, port: 80}\n",
               "t.yaml:3:5: listeners[1]: ", "127.0.0.1 port 80 is already used by listeners[0]");
}

static void test_config_idle_timeout_above_ping(void **state)
{
    (void)state;
    expect_bad("limits:\n  ping_interval: 30s\n  idle_timeout: 30s\n",
               "t.yaml:3:17: limits.idle_timeout: ",
               "idle_timeout (30s) must be greater than ping_interval (30s)");
    expect_bad("limits:\n  idle_timeout: 10s\n",
               "t.yaml:2:17: limits.idle_timeout: ", "must be greater than ping_interval (30s)");
    /* only ping_interval is set: it is the one that is wrong */
    expect_bad("limits:\n  ping_interval: 2m\n", "t.yaml:2:18: limits.ping_interval: ",
               "idle_timeout (75s) must be greater than ping_interval (2m)");
}

static void test_config_plaintext_token(void **state)
{
    (void)state;
    const char *yaml = "auth:\n  tokens:\n    - name: alice\n      token: hunter2-secret\n";
    expect_bad(yaml, "t.yaml:4:7: auth.tokens[0].token: ", "printf %s TOKEN | sha256sum");
    /* the token itself never reaches the message */
    char err[512];
    wsq_config_t *cfg = NULL;
    assert_int_equal(wsq_config_parse(yaml, strlen(yaml), "t.yaml", &cfg, err, sizeof(err)),
                     WSQ_ERR_BAD_CONFIG);
    assert_null(strstr(err, "hunter2"));
}

static void test_config_bad_sha256(void **state)
{
    (void)state;
    expect_bad("auth:\n  tokens:\n    - name: a\n      sha256: abc\n",
               "t.yaml:4:15: auth.tokens[0].sha256: ", "got 3 characters");
    expect_bad("auth:\n  tokens:\n    - name: a\n      sha256: "
               "zz86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n",
               "t.yaml:4:15: auth.tokens[0].sha256: ", "not all hex digits");
    /* pasted sha256sum output */
    expect_bad("auth:\n  tokens:\n    - name: a\n      sha256: \"" HASH_A "  -\"\n",
               "t.yaml:4:15: auth.tokens[0].sha256: ", "copy only the 64 hex digits");
    /* the hash of nothing: TOKEN was unset */
    expect_bad("auth:\n  tokens:\n    - name: a\n      sha256: "
               "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\n",
               "t.yaml:4:15: auth.tokens[0].sha256: ", "SHA-256 of the empty string");
    expect_bad("auth:\n  tokens:\n    - name: a\n      sha256: [1]\n",
               "t.yaml:4:15: auth.tokens[0].sha256: ", "64 hex digits");
    expect_bad("auth:\n  tokens:\n    - name: a\n",
               "t.yaml:3:7: auth.tokens[0]: ", "missing required key 'sha256'");
    expect_bad("auth:\n  tokens:\n    - {name: a, sha256: " HASH_A "}\n"
               "    - {name: b, sha256: " HASH_A "}\n",
               "t.yaml:4:7: auth.tokens[1].sha256: ", "same token hash as auth.tokens[0]");

    /* a bad hash is never echoed: it may be the token pasted in the wrong place */
    const char *yaml = "auth:\n  tokens:\n    - name: a\n      sha256: my-secret-token\n";
    char err[512];
    wsq_config_t *cfg = NULL;
    assert_int_equal(wsq_config_parse(yaml, strlen(yaml), "t.yaml", &cfg, err, sizeof(err)),
                     WSQ_ERR_BAD_CONFIG);
    assert_null(strstr(err, "my-secret-token"));
}

static void test_config_bad_token_name(void **state)
{
    (void)state;
    expect_bad("auth:\n  tokens:\n    - sha256: " HASH_A "\n",
               "t.yaml:3:7: auth.tokens[0]: ", "missing required key 'name'");
    expect_bad("auth:\n  tokens:\n    - name: a b\n      sha256: " HASH_A "\n",
               "t.yaml:3:13: auth.tokens[0].name: ", "[A-Za-z0-9._@+-]");
    expect_bad("auth:\n  tokens:\n    - {name: a, sha256: " HASH_A "}\n"
               "    - {name: a, sha256: " HASH_B "}\n",
               "t.yaml:4:7: auth.tokens[1].name: ", "duplicate token name 'a'");
    /* names fit the broker's 64-byte identity buffer: 63 bytes pass, 64 fail */
    char yaml[256], name[80];
    memset(name, 'n', 64);
    name[64] = '\0';
    snprintf(yaml, sizeof(yaml), "auth:\n  tokens:\n    - {name: %s, sha256: " HASH_A "}\n", name);
    expect_bad(yaml, "t.yaml:3:14: auth.tokens[0].name: ", "expected 1..63 characters");
    name[63] = '\0';
    snprintf(yaml, sizeof(yaml), "auth:\n  tokens:\n    - {name: %s, sha256: " HASH_A "}\n", name);
    wsq_config_t *cfg = parse_ok(yaml);
    assert_int_equal(strlen(cfg->auth.tokens[0].name), 63);
    wsq_config_free(&cfg);
}

static void test_config_bad_pattern(void **state)
{
    (void)state;
    expect_bad("auth:\n  anonymous:\n    publish: [\"chat.>\", \"chat..x\"]\n",
               "t.yaml:3:25: auth.anonymous.publish[1]: ", "invalid topic pattern 'chat..x'");
    expect_bad("auth:\n  anonymous:\n    subscribe:\n      - \"a.>.b\"\n",
               "t.yaml:4:9: auth.anonymous.subscribe[0]: ", "invalid topic pattern");
    expect_bad("auth:\n  tokens:\n    - name: a\n      sha256: " HASH_A
               "\n      subscribe: [\"ch*t\"]\n",
               "t.yaml:5:19: auth.tokens[0].subscribe[0]: ", "invalid topic pattern 'ch*t'");
    expect_bad("retention:\n  topics:\n    - pattern: \"metrics.#\"\n",
               "t.yaml:3:16: retention.topics[0].pattern: ", "invalid topic pattern 'metrics.#'");
    expect_bad("retention:\n  topics:\n    - max_age: 1h\n",
               "t.yaml:3:7: retention.topics[0]: ", "missing required key 'pattern'");
    expect_bad("retention:\n  topics:\n    - pattern: a.>\n    - pattern: b\n    - pattern: a.>\n",
               "t.yaml:5:7: retention.topics[2]: ", "already used by retention.topics[0]");
}

static void test_config_bad_origin(void **state)
{
    (void)state;
    expect_bad("auth:\n  allowed_origins: [\"https://app.example.com/\"]\n",
               "t.yaml:2:21: auth.allowed_origins[0]: ", "no trailing slash");
    expect_bad("auth:\n  allowed_origins: [app.example.com]\n",
               "t.yaml:2:21: auth.allowed_origins[0]: ", "scheme://host");
    expect_bad("auth:\n  allowed_origins: [\"https://App.example.com\"]\n",
               "t.yaml:2:21: auth.allowed_origins[0]: ", "lowercase");
}

static void test_config_jwt_secret(void **state)
{
    (void)state;
    expect_bad("auth:\n  jwt:\n    secret: short-secret\n",
               "t.yaml:3:13: auth.jwt.secret: ", "too short: 12 bytes; at least 32");
    char err[512];
    wsq_config_t *cfg = NULL;
    const char *yaml = "auth:\n  jwt:\n    secret: short-secret\n";
    assert_int_equal(wsq_config_parse(yaml, strlen(yaml), "t.yaml", &cfg, err, sizeof(err)),
                     WSQ_ERR_BAD_CONFIG);
    assert_null(strstr(err, "short-secret")); /* never echoed */

    expect_bad("auth:\n  jwt:\n    issuer: x\n",
               "t.yaml:3:5: auth.jwt: ", "set secret or secret_file");
    expect_bad("auth:\n  jwt:\n    secret: " SECRET_32 "\n    secret_file: f\n",
               "t.yaml:4:18: auth.jwt.secret_file: ", "not both");
    expect_bad("auth:\n  jwt:\n    secret: [a]\n",
               "t.yaml:3:13: auth.jwt.secret: ", "expected a string of at least 32 bytes");
    /* 31 bytes fail, 32 pass */
    expect_bad("auth:\n  jwt:\n    secret: \"0123456789abcdef0123456789abcde\"\n",
               "t.yaml:3:13: auth.jwt.secret: ", "31 bytes");
    cfg = parse_ok("auth:\n  jwt: {secret: \"" SECRET_32 "\"}\n");
    assert_int_equal(cfg->auth.jwt_secret_len, 32);
    assert_null(cfg->auth.jwt_issuer);
    wsq_config_free(&cfg);
}

static void test_config_jwt_secret_file(void **state)
{
    (void)state;
    char dir[512], conf[600], secret[600], err[1024];
    wsq_config_t *cfg = NULL;
    make_tmpdir(dir, sizeof(dir));
    snprintf(conf, sizeof(conf), "%s/wsq.yaml", dir);
    snprintf(secret, sizeof(secret), "%s/jwt.secret", dir);

    /* relative to the config file's directory; the trailing newline is not part of the secret */
    static const char yaml[] = "auth:\n  jwt:\n    secret_file: jwt.secret\n";
    write_file(conf, yaml, strlen(yaml));
    write_file(secret, SECRET_32 "\n", 33);
    assert_int_equal(wsq_config_load(conf, &cfg, err, sizeof(err)), WSQ_OK);
    assert_int_equal(cfg->auth.jwt_secret_len, 32);
    assert_memory_equal(cfg->auth.jwt_secret, SECRET_32, 33); /* NUL-terminated too */
    assert_string_equal(cfg->source, conf);
    wsq_config_free(&cfg);

    /* an absolute path works from anywhere; binary secrets keep their bytes */
    char abs_yaml[800];
    snprintf(abs_yaml, sizeof(abs_yaml), "auth:\n  jwt:\n    secret_file: %s\n", secret);
    static const char bin[40] = {1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0, 9, 0, 10, 0,
                                 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0, 9, 0, 10, 0};
    write_file(secret, bin, sizeof(bin));
    assert_int_equal(
        wsq_config_parse(abs_yaml, strlen(abs_yaml), "elsewhere/x.yaml", &cfg, err, sizeof(err)),
        WSQ_OK);
    assert_int_equal(cfg->auth.jwt_secret_len, 40);
    assert_memory_equal(cfg->auth.jwt_secret, bin, 40);
    wsq_config_free(&cfg);

    /* too short */
    write_file(secret, "tiny\n", 5);
    assert_int_equal(wsq_config_load(conf, &cfg, err, sizeof(err)), WSQ_ERR_BAD_CONFIG);
    assert_null(cfg);
    char prefix[700];
    snprintf(prefix, sizeof(prefix), "%s:3:18: auth.jwt.secret_file: ", conf);
    assert_true(strncmp(err, prefix, strlen(prefix)) == 0);
    assert_non_null(strstr(err, "holds 4 bytes; the secret needs at least 32"));
    assert_null(strstr(err, "tiny"));

    /* missing */
    assert_int_equal(unlink(secret), 0);
    assert_int_equal(wsq_config_load(conf, &cfg, err, sizeof(err)), WSQ_ERR_BAD_CONFIG);
    assert_null(cfg);
    assert_true(strncmp(err, prefix, strlen(prefix)) == 0);
    assert_non_null(strstr(err, "cannot read"));
    assert_non_null(strstr(err, secret));
    assert_non_null(strstr(err, "No such file or directory"));

    /* a directory */
    assert_int_equal(mkdir(secret, 0700), 0);
    assert_int_equal(wsq_config_load(conf, &cfg, err, sizeof(err)), WSQ_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "cannot read"));
    assert_int_equal(rmdir(secret), 0);

    assert_int_equal(unlink(conf), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* auth.jwt with public keys: the algorithms are listed explicitly, each has a key of its type,
 * "none" is never one, and key files that hold no usable key are errors at their line. */
static void test_config_jwt_keys(void **state)
{
    (void)state;
    char dir[512], conf[600], pem[600], jwks[600], err[1024], yaml[1600];
    wsq_config_t *cfg = NULL;
    make_tmpdir(dir, sizeof(dir));
    snprintf(conf, sizeof(conf), "%s/wsq.yaml", dir);
    snprintf(pem, sizeof(pem), "%s/idp.pem", dir);
    snprintf(jwks, sizeof(jwks), "%s/idp.jwks", dir);
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(pk);
    FILE *f = fopen(pem, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PUBKEY(f, pk), 1);
    fclose(f);
    EVP_PKEY_free(pk);

    static const struct {
        const char *jwt; /* the auth.jwt section's lines */
        const char *where, *needle;
    } bad[] = {
        {"    public_key_file: idp.pem\n", ":3:5: auth.jwt: ", "algorithms: [RS256]"},
        {"    public_key_file: idp.pem\n    algorithms: [RS256]\n",
         ":4:18: auth.jwt.algorithms: ", "no configured key can verify RS256 (its key type: RSA)"},
        {"    public_key_file: idp.pem\n    algorithms: [ES256, HS256]\n",
         ":4:25: auth.jwt.algorithms: ", "HS256 (its key type: a secret)"},
        {"    public_key_file: idp.pem\n    algorithms: [none]\n",
         ":4:18: auth.jwt.algorithms: ", "never allowed"},
        {"    public_key_file: idp.pem\n    algorithms: [HS999]\n",
         ":4:18: auth.jwt.algorithms: ", "unknown algorithm 'HS999' (one of HS256"},
        {"    public_key_file: idp.pem\n    algorithms: []\n",
         ":4:17: auth.jwt.algorithms: ", "expected a list"},
        {"    public_key_file: missing.pem\n    algorithms: [ES256]\n",
         ":3:22: auth.jwt.public_key_file: ", "cannot read"},
        {"    jwks_file: idp.pem\n    algorithms: [ES256]\n",
         ":3:16: auth.jwt.jwks_file: ", "not JSON"},
        {"    public_key_file: wsq.yaml\n    algorithms: [ES256]\n",
         ":3:22: auth.jwt.public_key_file: ", "no PEM block"},
        {"    jwks_url: http://idp.example.com/jwks\n    algorithms: [ES256]\n",
         ":3:15: auth.jwt.jwks_url: ", "expected an https:// URL"},
        {"    jwks_url: https://idp.example.com/jwks\n    jwks_refresh: 1s\n"
         "    algorithms: [ES256]\n",
         ":4:19: auth.jwt.jwks_refresh: ", "out of range"},
        {"    public_key_file: idp.pem\n    jwks_ca_file: idp.pem\n    algorithms: [ES256]\n",
         ":4:19: auth.jwt.jwks_ca_file: ", "needs jwks_url"},
        {"    jwks_url: https://idp.example.com/jwks\n",
         ":3:5: auth.jwt: ", "need the list of accepted algorithms"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(yaml, sizeof(yaml), "auth:\n  jwt:\n%s", bad[i].jwt);
        write_file(conf, yaml, strlen(yaml));
        assert_int_equal(wsq_config_load(conf, &cfg, err, sizeof(err)), WSQ_ERR_BAD_CONFIG);
        assert_null(cfg);
        char prefix[800];
        snprintf(prefix, sizeof(prefix), "%s%s", conf, bad[i].where);
        if (strncmp(err, prefix, strlen(prefix)) != 0 || strstr(err, bad[i].needle) == NULL)
            fail_msg("case %zu: got '%s', want '%s' ... '%s'", i, err, prefix, bad[i].needle);
    }

    /* a PEM key and a JWK Set together, with their algorithms */
    static const char set[] = "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"h\",\"k\":"
                              "\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY\"},"
                              "{\"kty\":\"RSA\",\"use\":\"enc\"}]}";
    write_file(jwks, set, strlen(set));
    snprintf(yaml, sizeof(yaml),
             "auth:\n  jwt:\n    public_key_file: idp.pem\n    jwks_file: %s\n"
             "    algorithms: [ES256, HS384]\n",
             jwks);
    write_file(conf, yaml, strlen(yaml));
    assert_int_equal(wsq_config_load(conf, &cfg, err, sizeof(err)), WSQ_OK);
    assert_int_equal(cfg->auth.jwt_algs, WSQ_JWT_ALG(ES256) | WSQ_JWT_ALG(HS384));
    assert_int_equal(wsq_jwt_keys_count(cfg->auth.jwt_keys), 2);
    assert_null(cfg->auth.jwt_secret);
    wsq_config_free(&cfg);

    /* a JWKS URL alone: no keys until fetched, any asymmetric algorithm may be listed */
    snprintf(yaml, sizeof(yaml),
             "auth:\n  jwt:\n    jwks_url: https://idp.example.com/jwks\n"
             "    jwks_ca_file: idp.pem\n    algorithms: [RS256, EdDSA]\n");
    write_file(conf, yaml, strlen(yaml));
    assert_int_equal(wsq_config_load(conf, &cfg, err, sizeof(err)), WSQ_OK);
    assert_string_equal(cfg->auth.jwt_jwks_url, "https://idp.example.com/jwks");
    assert_string_equal(cfg->auth.jwt_jwks_ca_file, pem);
    assert_int_equal(cfg->auth.jwt_jwks_refresh_ms, 600000);
    assert_int_equal(wsq_jwt_keys_count(cfg->auth.jwt_keys), 0);
    wsq_config_free(&cfg);

    /* a secret alone: HS256, as before; no auth.jwt: no keys */
    cfg = parse_ok("auth:\n  jwt:\n    secret: " SECRET_32 "\n");
    assert_int_equal(cfg->auth.jwt_algs, WSQ_JWT_ALG(HS256));
    assert_int_equal(wsq_jwt_keys_count(cfg->auth.jwt_keys), 1);
    wsq_config_free(&cfg);
    cfg = parse_ok("auth:\n  tokens: []\n");
    assert_null(cfg->auth.jwt_keys);
    wsq_config_free(&cfg);

    assert_int_equal(unlink(conf), 0);
    assert_int_equal(unlink(pem), 0);
    assert_int_equal(unlink(jwks), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* auth.jwt.roles: rights per provider role, with {claim} templates; the claims the templates
 * use are collected once. */
static void test_config_jwt_roles(void **state)
{
    (void)state;
    wsq_config_t *cfg = parse_ok("auth:\n  jwt:\n    secret: " SECRET_32 "\n"
                                 "    identity_claim: email\n"
                                 "    roles_claim: realm_access.roles\n"
                                 "    roles:\n"
                                 "      user: {subscribe: [\"user.{sub}.>\"], publish: "
                                 "[\"inbox.{sub}\", \"t.{tenant}.{sub}\"]}\n"
                                 "      ops: {subscribe: [\">\"], admin: true}\n");
    assert_string_equal(cfg->auth.jwt_identity_claim, "email");
    assert_string_equal(cfg->auth.jwt_roles_claim, "realm_access.roles");
    assert_int_equal(cfg->auth.n_jwt_roles, 2);
    assert_string_equal(cfg->auth.jwt_roles[0].name, "user");
    assert_string_equal(cfg->auth.jwt_roles[0].rights.publish.items[1], "t.{tenant}.{sub}");
    assert_true(cfg->auth.jwt_roles[1].rights.admin);
    assert_int_equal(cfg->auth.jwt_template_claims.n, 2);
    assert_string_equal(cfg->auth.jwt_template_claims.items[0], "sub");
    assert_string_equal(cfg->auth.jwt_template_claims.items[1], "tenant");
    wsq_config_free(&cfg);

    expect_bad("auth:\n  jwt:\n    secret: " SECRET_32 "\n    roles_claim: roles\n",
               "t.yaml:3:5: auth.jwt: ", "roles_claim and roles go together");
    expect_bad("auth:\n  jwt:\n    secret: " SECRET_32 "\n    roles_claim: r\n    roles:\n"
               "      u: {subscribe: [\"user.{sub\"]}\n",
               "t.yaml:6:23: auth.jwt.roles.u.subscribe[0]: ", "{claim} placeholders");
    expect_bad("auth:\n  jwt:\n    secret: " SECRET_32 "\n    roles_claim: r\n    roles:\n"
               "      u: {subscribe: [\"a.{sub}x{sub}{sub}{sub}{sub}{sub}{sub}{sub}{sub}\"]}\n",
               "t.yaml:6:23: auth.jwt.roles.u.subscribe[0]: ", "at most 8");
    expect_bad("auth:\n  jwt:\n    secret: " SECRET_32 "\n    roles_claim: r\n    roles:\n"
               "      u: {read: [a]}\n",
               "t.yaml:6:11: auth.jwt.roles.u.read: ", "unknown key");
    expect_bad("auth:\n  jwt:\n    secret: " SECRET_32 "\n    roles_claim: r\n    roles: [a]\n",
               "t.yaml:5:12: auth.jwt.roles: ", "expected a mapping of role names");
}

static void test_config_yaml_syntax_error(void **state)
{
    (void)state;
    expect_bad("storage:\n  path: [a\n", "t.yaml:3:1: YAML syntax error: ", NULL);
    expect_bad("storage:\n  path: a\n   sync: full\n",
               "t.yaml:3:8: YAML syntax error: ", "mapping values are not allowed");
    expect_bad("log: *nowhere\n", "t.yaml:1:6: YAML syntax error: ", "undefined alias");
    /* invalid UTF-8 */
    expect_bad("log:\n  level: \xff\n", "t.yaml:2:10: YAML error: ", NULL);
}

static void test_config_top_level(void **state)
{
    (void)state;
    expect_bad("- a\n- b\n", "t.yaml:1:1: expected a mapping of sections", "got a list");
    expect_bad("hello\n", "t.yaml:1:1: expected a mapping of sections", "got 'hello'");
    expect_bad("log: {}\n---\nlog: {}\n", "t.yaml:2:1: expected one YAML document", NULL);
}

/* ---- the number parsers -----------------------------------------------------------------------
 */

static void test_config_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t want;
    } ok[] = {
        {"0", 0},
        {"1", 1},
        {"1B", 1},
        {"1KiB", 1024},
        {"64MiB", 64 * MiB},
        {"3GiB", 3 * GiB},
        {"2TiB", 2 * TiB},
        {"1KB", 1000},
        {"5MB", 5000000},
        {"2GB", 2000000000},
        {"1TB", 1000000000000ULL},
        {"18446744073709551615", UINT64_MAX},
        {"16777215TiB", 16777215 * TiB},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t v = 12345;
        if (wsq_parse_size(ok[i].s, &v) != WSQ_OK)
            fail_msg("'%s' should parse", ok[i].s);
        assert_int_equal(v, ok[i].want);
    }
    static const char *const bad[] = {
        "",
        "B",
        "-1",
        "+1",
        "1.5MiB",
        "1 MiB",
        "1mib",
        "1K",
        "1M",
        "1k",
        "0x10",
        "01",
        "1MiB ",
        " 1",
        "1e6",
        "1iB",
        "1KiBB",
        "MiB",
        "18446744073709551616",
        "16777216TiB",
        "99999999999999999999999MiB",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 777;
        if (wsq_parse_size(bad[i], &v) != WSQ_ERR_INVAL)
            fail_msg("'%s' should be refused", bad[i]);
        assert_int_equal(v, 777); /* untouched on error */
    }
    uint64_t v;
    assert_int_equal(wsq_parse_size(NULL, &v), WSQ_ERR_INVAL);
    assert_int_equal(wsq_parse_size("1", NULL), WSQ_ERR_INVAL);
}

static void test_config_parse_duration(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t want;
    } ok[] = {
        {"0", 0},
        {"0s", 0},
        {"250", 250},
        {"250ms", 250},
        {"30s", 30000},
        {"5m", 300000},
        {"2h", 7200000},
        {"7d", 604800000},
        {"9223372036854775807", INT64_MAX},
        {"9223372036854775807ms", INT64_MAX},
        {"106751991167d", 106751991167LL * 86400000LL},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = 12345;
        if (wsq_parse_duration_ms(ok[i].s, &v) != WSQ_OK)
            fail_msg("'%s' should parse", ok[i].s);
        assert_int_equal(v, ok[i].want);
    }
    static const char *const bad[] = {
        "",
        "s",
        "-1",
        "-1s",
        "1.5s",
        "1 s",
        "1S",
        "1sec",
        "1min",
        "1w",
        "1y",
        "1hh",
        "01s",
        "+1s",
        "1h30m",
        "9223372036854775808",
        "106751991168d",
        "99999999999999999999s",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = 777;
        if (wsq_parse_duration_ms(bad[i], &v) != WSQ_ERR_INVAL)
            fail_msg("'%s' should be refused", bad[i]);
        assert_int_equal(v, 777);
    }
    int64_t v;
    assert_int_equal(wsq_parse_duration_ms(NULL, &v), WSQ_ERR_INVAL);
    assert_int_equal(wsq_parse_duration_ms("1s", NULL), WSQ_ERR_INVAL);
}

/* ---- lookups ----------------------------------------------------------------------------------
 */

/* Dead letters are per topic, beside retention; limits.max_deliver says where it went. */
static void test_config_dead_letters(void **state)
{
    (void)state;
    wsq_config_t *cfg = parse_ok("retention:\n"
                                 "  default: {max_deliver: 5}\n"
                                 "  topics:\n"
                                 "    - {pattern: \"orders.>\", dead_letter: \"dlq.{topic}\"}\n"
                                 "    - {pattern: \"jobs.*\", max_deliver: 0}\n");
    const wsq_dead_letter_t *dl = wsq_config_dead_letter(cfg, "orders.eu", 9);
    assert_int_equal(dl->max_deliver, 5); /* inherited */
    char name[WSQ_TOPIC_MAX + 1];
    assert_true(wsq_config_dead_topic(dl, "orders.eu", 9, name, sizeof(name)));
    assert_string_equal(name, "dlq.orders.eu");
    dl = wsq_config_dead_letter(cfg, "jobs.a", 6);
    assert_int_equal(dl->max_deliver, 0);
    assert_true(wsq_config_dead_topic(dl, "jobs.a", 6, name, sizeof(name)));
    assert_string_equal(name, "jobs.a.dlq");
    char longest[WSQ_TOPIC_MAX + 1];
    memset(longest, 'a', WSQ_TOPIC_MAX);
    longest[WSQ_TOPIC_MAX] = '\0';
    assert_false(wsq_config_dead_topic(dl, longest, WSQ_TOPIC_MAX, name, sizeof(name)));
    wsq_config_free(&cfg);
    expect_bad("limits:\n  max_deliver: 5\n", "t.yaml:2:16: limits.max_deliver: ",
               "moved: set max_deliver in retention.default or in a retention.topics rule");
    expect_bad("retention:\n  default:\n    dead_letter: \"a..{topic}\"\n",
               "t.yaml:3:18: retention.default.dead_letter: ", "invalid dead-letter topic");
}

static void test_config_retention_resolution(void **state)
{
    (void)state;
    wsq_config_t *cfg = parse_ok("retention:\n"
                                 "  default: {max_messages: 10, discard: new}\n"
                                 "  topics:\n"
                                 "    - {pattern: \"metrics.cpu\", max_messages: 1}\n"
                                 "    - {pattern: \"metrics.>\", max_age: 1h}\n"
                                 "    - {pattern: \"*.audit\", max_messages: 0, discard: old}\n"
                                 "    - {pattern: \"once.*\", dedup_window: 1h}\n");
    wsq_retention_t r;
#define RESOLVE(t) wsq_config_retention(cfg, t, strlen(t), &r)

    RESOLVE("metrics.cpu"); /* first match wins over the broader rule after it */
    assert_int_equal(r.max_messages, 1);
    assert_int_equal(r.max_age_ms, 0);
    assert_int_equal(r.discard, WSQ_DISCARD_NEW);
    assert_int_equal(r.dedup_window_ms, 120000); /* the default's default: 2m */

    RESOLVE("once.orders");
    assert_int_equal(r.dedup_window_ms, 3600000);
    assert_int_equal(r.max_messages, 10);

    RESOLVE("metrics.mem.host1");
    assert_int_equal(r.max_messages, 10); /* inherited */
    assert_int_equal(r.max_age_ms, 3600000);

    RESOLVE("billing.audit");
    assert_int_equal(r.max_messages, 0);
    assert_int_equal(r.discard, WSQ_DISCARD_OLD);

    RESOLVE("metrics"); /* "metrics.>" needs at least one more segment */
    assert_int_equal(r.max_messages, 10);
    assert_int_equal(r.max_age_ms, 0);

    RESOLVE("a.b.audit"); /* '*' is exactly one segment */
    assert_int_equal(r.max_messages, 10);

    RESOLVE("metrics/cpu"); /* separators match literally */
    assert_int_equal(r.max_messages, 10);
    assert_int_equal(r.max_age_ms, 0);

    /* the length is honoured: "metrics.cpu" is a prefix of the buffer */
    wsq_config_retention(cfg, "metrics.cpuXYZ", 11, &r);
    assert_int_equal(r.max_messages, 1);
#undef RESOLVE
    wsq_config_free(&cfg);

    /* no rules: the defaults */
    cfg = parse_ok("");
    memset(&r, 0xff, sizeof(r));
    wsq_config_retention(cfg, "x", 1, &r);
    assert_int_equal(r.max_messages, 0);
    assert_int_equal(r.max_bytes, 0);
    assert_int_equal(r.max_age_ms, 0);
    assert_int_equal(r.discard, WSQ_DISCARD_OLD);
    wsq_config_free(&cfg);
}

static void test_config_loopback_only(void **state)
{
    (void)state;
    static const struct {
        const char *addr;
        bool loopback;
    } cases[] = {
        {"127.0.0.1", true},
        {"127.1.2.3", true},
        {"127.255.255.255", true},
        {"::1", true},
        {"localhost", true},
        {"LocalHost", true},
        {"::ffff:127.0.0.1", true},
        {"0.0.0.0", false},
        {"::", false},
        {"10.0.0.1", false},
        {"128.0.0.1", false},
        {"::2", false},
        {"fe80::1", false},
        {"::ffff:10.0.0.1", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "listeners:\n  - address: \"%s\"\n", cases[i].addr);
        wsq_config_t *cfg = parse_ok(yaml);
        if (wsq_config_loopback_only(cfg) != cases[i].loopback)
            fail_msg("%s: expected loopback=%d", cases[i].addr, cases[i].loopback);
        wsq_config_free(&cfg);
    }
    /* every listener must be loopback */
    wsq_config_t *cfg = parse_ok("listeners:\n  - address: 127.0.0.1\n  - address: \"::\"\n");
    assert_false(wsq_config_loopback_only(cfg));
    wsq_config_free(&cfg);
    cfg = parse_ok("listeners:\n  - {address: 127.0.0.1}\n  - {address: \"::1\"}\n");
    assert_true(wsq_config_loopback_only(cfg));
    wsq_config_free(&cfg);
    assert_false(wsq_config_loopback_only(NULL));
}

/* ---- files --------------------------------------------------------------------------------------
 */

static void test_config_production_example(void **state)
{
    (void)state;
    char src[1024], dir[512], conf[600], secret[600], err[1024];
    wsq_config_t *cfg = NULL;

    /* as shipped, next to no jwt.secret: the error names the resolved path */
    source_path(src, sizeof(src), "conf/examples/production.yaml");
    assert_int_equal(wsq_config_load(src, &cfg, err, sizeof(err)), WSQ_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "auth.jwt.secret_file: cannot read '"));
    assert_non_null(strstr(err, "conf/examples/jwt.secret"));

    /* installed the way its comments say: a secret file next to it */
    make_tmpdir(dir, sizeof(dir));
    snprintf(conf, sizeof(conf), "%s/wsq.yaml", dir);
    snprintf(secret, sizeof(secret), "%s/jwt.secret", dir);
    char *text = read_text(src);
    write_file(conf, text, strlen(text));
    free(text);
    static const char key[] = "5c0e1a7f3b9d2e4c6a8b0d1f3e5a7c9b1d3f5e7a9c0b2d4f6e8a0c2b4d6f8e0a\n";
    write_file(secret, key, strlen(key));

    assert_int_equal(wsq_config_load(conf, &cfg, err, sizeof(err)), WSQ_OK);
    assert_int_equal(cfg->n_listeners, 1);
    assert_string_equal(cfg->listeners[0].address, "0.0.0.0");
    assert_int_equal(cfg->listeners[0].port, 443);
    assert_non_null(cfg->listeners[0].tls_cert);
    assert_non_null(cfg->listeners[0].tls_key);
    assert_false(wsq_config_loopback_only(cfg));

    assert_int_equal(cfg->auth.anonymous.publish.n, 0);
    assert_int_equal(cfg->auth.anonymous.subscribe.n, 0);
    assert_false(cfg->auth.anonymous.admin);
    assert_int_equal(cfg->auth.n_tokens, 2);
    assert_true(cfg->auth.tokens[0].rights.publish.n > 0);
    assert_true(cfg->auth.tokens[1].rights.admin);
    assert_false(cfg->auth.anonymous.metrics);
    assert_int_equal(cfg->metrics.auth, WSQ_METRICS_AUTH_TOKEN);
    assert_int_equal(cfg->auth.jwt_secret_len, strlen(key) - 1);
    assert_non_null(cfg->auth.jwt_issuer);
    assert_non_null(cfg->auth.jwt_audience);
    assert_true(cfg->auth.allowed_origins.n >= 1);

    assert_true(cfg->retention.n_rules >= 1);
    assert_true(cfg->retention.defaults.max_age_ms > 0);
    assert_true(cfg->log.json);
    wsq_config_free(&cfg);

    /* its commented-out Prometheus token is valid once uncommented: a third token with only the
     * metrics right */
    text = read_text(src);
    char *at = strstr(text, "    # - name: prometheus\n");
    assert_non_null(at);
    for (int line = 0; line < 3; line++) {
        assert_memory_equal(at, "    # ", 6);
        memmove(at + 4, at + 6, strlen(at + 6) + 1);
        at = strchr(at, '\n');
        assert_non_null(at);
        at++;
    }
    write_file(conf, text, strlen(text));
    free(text);
    assert_int_equal(wsq_config_load(conf, &cfg, err, sizeof(err)), WSQ_OK);
    assert_int_equal(cfg->auth.n_tokens, 3);
    assert_string_equal(cfg->auth.tokens[2].name, "prometheus");
    assert_true(cfg->auth.tokens[2].rights.metrics);
    assert_false(cfg->auth.tokens[2].rights.admin);
    assert_int_equal(cfg->auth.tokens[2].rights.publish.n, 0);
    assert_int_equal(cfg->auth.tokens[2].rights.subscribe.n, 0);
    wsq_config_free(&cfg);

    assert_int_equal(unlink(secret), 0);
    assert_int_equal(unlink(conf), 0);
    assert_int_equal(rmdir(dir), 0);
}

static void test_config_load_errors(void **state)
{
    (void)state;
    char err[512];
    wsq_config_t *cfg = (wsq_config_t *)(uintptr_t)1;
    assert_int_equal(wsq_config_load("/nonexistent/wsq.yaml", &cfg, err, sizeof(err)),
                     WSQ_ERR_BAD_CONFIG);
    assert_null(cfg);
    assert_string_equal(err,
                        "/nonexistent/wsq.yaml: cannot read config: No such file or directory");

    /* errors in a loaded file carry its path */
    char dir[512], conf[600];
    make_tmpdir(dir, sizeof(dir));
    snprintf(conf, sizeof(conf), "%s/bad.yaml", dir);
    static const char yaml[] = "log:\n  level: loud\n";
    write_file(conf, yaml, strlen(yaml));
    assert_int_equal(wsq_config_load(conf, &cfg, err, sizeof(err)), WSQ_ERR_BAD_CONFIG);
    char prefix[700];
    snprintf(prefix, sizeof(prefix), "%s:2:10: log.level: ", conf);
    assert_true(strncmp(err, prefix, strlen(prefix)) == 0);
    assert_int_equal(unlink(conf), 0);
    assert_int_equal(rmdir(dir), 0);

    assert_int_equal(wsq_config_load(NULL, &cfg, err, sizeof(err)), WSQ_ERR_INVAL);
}

static void test_config_small_errbuf(void **state)
{
    (void)state;
    const char *yaml = "storage:\n  sync: fast\n";
    wsq_config_t *cfg = NULL;
    char err[8];
    memset(err, 'x', sizeof(err));
    assert_int_equal(wsq_config_parse(yaml, strlen(yaml), "t.yaml", &cfg, err, sizeof(err)),
                     WSQ_ERR_BAD_CONFIG);
    assert_int_equal(err[7], '\0');
    assert_string_equal(err, "t.yaml:");
    /* no buffer at all */
    assert_int_equal(wsq_config_parse(yaml, strlen(yaml), "t.yaml", &cfg, NULL, 0),
                     WSQ_ERR_BAD_CONFIG);
    assert_null(cfg);
    /* success clears the buffer */
    char ok[16] = "stale";
    assert_int_equal(wsq_config_parse("", 0, "t.yaml", &cfg, ok, sizeof(ok)), WSQ_OK);
    assert_string_equal(ok, "");
    wsq_config_free(&cfg);
    /* invalid arguments */
    assert_int_equal(wsq_config_parse(NULL, 3, "t.yaml", &cfg, ok, sizeof(ok)), WSQ_ERR_INVAL);
    assert_int_equal(wsq_config_parse("", 0, "t.yaml", NULL, ok, sizeof(ok)), WSQ_ERR_INVAL);
}

static void test_config_free_null(void **state)
{
    (void)state;
    wsq_config_t *cfg = NULL;
    wsq_config_free(&cfg);
    wsq_config_free(NULL);
    assert_null(cfg);
}

/* Hostile values are shown escaped and truncated, never raw. */
static void test_config_error_text_is_safe(void **state)
{
    (void)state;
    char err[512];
    wsq_config_t *cfg = NULL;
    const char *yaml = "log:\n  level: \"a\\x1b[31mred\\nline\"\n";
    assert_int_equal(wsq_config_parse(yaml, strlen(yaml), "t.yaml", &cfg, err, sizeof(err)),
                     WSQ_ERR_BAD_CONFIG);
    assert_null(strchr(err, '\x1b'));
    assert_null(strchr(err, '\n'));
    assert_non_null(strstr(err, "\\x1b"));

    char big[600] = "log:\n  level: ";
    memset(big + strlen(big), 'z', 400);
    big[sizeof(big) - 2] = '\n';
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(wsq_config_parse(big, strlen(big), "t.yaml", &cfg, err, sizeof(err)),
                     WSQ_ERR_BAD_CONFIG);
    assert_non_null(strstr(err, "...'"));
    assert_true(strlen(err) < 200);
}

/* Deep nesting is refused at the first level too deep, before libyaml composes the document
 * (quadratic in the depth: 100k levels took 14 s). */
static void test_config_depth_capped(void **state)
{
    (void)state;
    static const int depths[] = {64, 65, 100000};
    for (size_t k = 0; k < sizeof(depths) / sizeof(depths[0]); k++) {
        int depth = depths[k];
        size_t n = 3 + 2 * (size_t)depth + 2;
        char *y = malloc(n);
        assert_non_null(y);
        memcpy(y, "a: ", 3);
        memset(y + 3, '[', (size_t)depth - 1);
        memset(y + 3 + depth - 1, ']', (size_t)depth - 1);
        y[3 + 2 * (depth - 1)] = '\n';
        y[3 + 2 * (depth - 1) + 1] = '\0';
        /* "a:" is the first mapping level, the brackets the others */
        wsq_config_t *cfg = NULL;
        char err[512];
        assert_int_equal(wsq_config_parse(y, strlen(y), "t.yaml", &cfg, err, sizeof(err)),
                         WSQ_ERR_BAD_CONFIG);
        if (depth == 64)
            assert_non_null(strstr(err, "unknown key")); /* parsed whole: depth 64 is fine */
        else
            assert_string_equal(err, "t.yaml:1:67: nested deeper than 64 levels");
        free(y);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_empty_is_defaults),
        cmocka_unit_test(test_config_null_sections_are_empty),
        cmocka_unit_test(test_config_embedded_default),
        cmocka_unit_test(test_config_embedded_is_shipped_file),
        cmocka_unit_test(test_config_embedded_documents_every_key),
        cmocka_unit_test(test_config_listeners),
        cmocka_unit_test(test_config_storage),
        cmocka_unit_test(test_config_retention),
        cmocka_unit_test(test_config_limits),
        cmocka_unit_test(test_config_auth),
        cmocka_unit_test(test_config_metrics),
        cmocka_unit_test(test_config_metrics_errors),
        cmocka_unit_test(test_config_log),
        cmocka_unit_test(test_config_anchors),
        cmocka_unit_test(test_config_unknown_key),
        cmocka_unit_test(test_config_wrong_type),
        cmocka_unit_test(test_config_duplicate_key),
        cmocka_unit_test(test_config_out_of_range),
        cmocka_unit_test(test_config_bad_enum),
        cmocka_unit_test(test_config_bad_size_and_duration),
        cmocka_unit_test(test_config_tls_needs_cert_and_key),
        cmocka_unit_test(test_config_bad_listener),
        cmocka_unit_test(test_config_idle_timeout_above_ping),
        cmocka_unit_test(test_config_plaintext_token),
        cmocka_unit_test(test_config_bad_sha256),
        cmocka_unit_test(test_config_bad_token_name),
        cmocka_unit_test(test_config_bad_pattern),
        cmocka_unit_test(test_config_bad_origin),
        cmocka_unit_test(test_config_jwt_secret),
        cmocka_unit_test(test_config_jwt_secret_file),
        cmocka_unit_test(test_config_jwt_keys),
        cmocka_unit_test(test_config_jwt_roles),
        cmocka_unit_test(test_config_yaml_syntax_error),
        cmocka_unit_test(test_config_depth_capped),
        cmocka_unit_test(test_config_top_level),
        cmocka_unit_test(test_config_parse_size),
        cmocka_unit_test(test_config_parse_duration),
        cmocka_unit_test(test_config_dead_letters),
        cmocka_unit_test(test_config_retention_resolution),
        cmocka_unit_test(test_config_loopback_only),
        cmocka_unit_test(test_config_production_example),
        cmocka_unit_test(test_config_load_errors),
        cmocka_unit_test(test_config_small_errbuf),
        cmocka_unit_test(test_config_free_null),
        cmocka_unit_test(test_config_error_text_is_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
