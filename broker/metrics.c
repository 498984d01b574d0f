/*
 * Counters and histograms: plain atomic counters that every thread bumps, the commit
 * histograms the writer fills, and the Prometheus text of GET /metrics (service thread).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "jwks.h"
#include "metrics.h"
#include "server.h"

void wsq__metrics_commit(wsq_metrics_t *m, const wsq_commit_info_t *info)
{
    static const uint32_t batch_le[WSQ_BATCH_BUCKETS] = {1,   2,   5,   10,   20,   50,
                                                         100, 200, 500, 1000, 2000, 5000};
    static const int64_t lat_le_us[WSQ_LATENCY_BUCKETS] = {
        100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000};
    unsigned b = 0;
    while (b < WSQ_BATCH_BUCKETS && info->n_requests > batch_le[b])
        b++;
    atomic_fetch_add_explicit(&m->batch_hist[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->batch_sum, info->n_requests, memory_order_relaxed);
    b = 0;
    while (b < WSQ_LATENCY_BUCKETS && info->commit_ns / 1000 > lat_le_us[b])
        b++;
    atomic_fetch_add_explicit(&m->latency_hist[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_ns, (uint64_t)info->commit_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->commits, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->commit_ns_total, (uint64_t)info->commit_ns, memory_order_relaxed);
}

static void metric(wsq_buf_t *b, const char *name, const char *type, const char *help, uint64_t v)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name,
                     type, name, (unsigned long long)v);
    wsq_buf_append(b, buf, (size_t)n);
}

static void line(wsq_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void line(wsq_buf_t *b, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        wsq_buf_append(b, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* Per-topic and per-consumer series are capped: label cardinality must not grow without
 * bound with the number of topics and consumers. */
#define METRICS_TOPICS_MAX 1000u
#define METRICS_CONSUMERS_MAX 1000u

void wsq__metrics_render(wsq_server_t *srv, wsq_buf_t *b)
{
    static const char *const lim_names[WSQ_LIM_COUNT] = {
        "connections",  "connections_per_ip", "subscriptions",   "window",
        "message_size", "publish_rate",       "message_headers",
    };
    static const char *const batch_le[WSQ_BATCH_BUCKETS] = {
        "1", "2", "5", "10", "20", "50", "100", "200", "500", "1000", "2000", "5000"};
    static const char *const lat_le[WSQ_LATENCY_BUCKETS] = {"0.0001", "0.00025", "0.0005", "0.001",
                                                            "0.0025", "0.005",   "0.01",   "0.025",
                                                            "0.05",   "0.1",     "0.25",   "1"};
    wsq_metrics_t *m = &srv->metrics;
    uint64_t qm, qb;
    wsq_store_queue_depth(srv->store, &qm, &qb);
    metric(b, "wsq_connections", "gauge", "Open WebSocket connections.", m->connections);
    metric(b, "wsq_tcp_connections", "gauge", "Open TCP connections (WebSocket and HTTP).",
           srv->nconns);
    metric(b, "wsq_connections_total", "counter", "WebSocket connections accepted.",
           m->connections_total);
    metric(b, "wsq_published_total", "counter", "Messages confirmed durable.", m->published);
    metric(b, "wsq_publish_errors_total", "counter", "Publishes refused by storage.",
           m->publish_errors);
    metric(b, "wsq_delivered_total", "counter", "Messages written to subscribers' sockets.",
           m->delivered);
    metric(b, "wsq_redelivered_total", "counter", "Deliveries of a message seen before.",
           m->redelivered);
    metric(b, "wsq_acked_total", "counter", "Messages acknowledged.", m->acked);
    metric(b, "wsq_nacked_total", "counter", "Negative acknowledgements.", m->nacked);
    metric(b, "wsq_gaps_total", "counter", "Gap events (messages removed before delivery).",
           m->gaps);
    metric(b, "wsq_corrupt_messages_total", "counter",
           "Stored messages that failed their checksum when read (never delivered as data).",
           m->corrupt);
    metric(b, "wsq_commits_total", "counter", "Storage commits.", m->commits);
    metric(b, "wsq_publisher_pauses_total", "counter", "Publishers paused by backpressure.",
           m->paused);
    metric(b, "wsq_dead_lettered_total", "counter",
           "Messages moved to a dead-letter topic after max_deliver deliveries without "
           "an ack.",
           m->dead_lettered);
    metric(b, "wsq_pattern_topic_subscriptions", "gauge",
           "Topics topic patterns hold a subscription on now (each matching topic with work "
           "lately, or with a durable position).",
           m->pattern_topics);
    metric(b, "wsq_reloads_total", "counter", "Configuration reloads applied.", m->reloads);
    metric(b, "wsq_reload_failures_total", "counter", "Configuration reloads refused.",
           m->reload_failures);
    wsq_jwks_stats_t js;
    wsq__jwks_stats(srv->jwks, &js);
    if (js.configured) {
        line(b,
             "# HELP wsq_jwks_age_seconds Seconds since auth.jwt.jwks_url was last fetched "
             "well (-1: not yet).\n# TYPE wsq_jwks_age_seconds gauge\n"
             "wsq_jwks_age_seconds %lld\n",
             (long long)(js.age_ms < 0 ? -1 : js.age_ms / 1000));
        metric(b, "wsq_jwks_keys", "gauge", "Keys in the last good JWK Set fetched.", js.keys);
        line(b,
             "# HELP wsq_jwks_fetches_total Fetches of auth.jwt.jwks_url by result.\n"
             "# TYPE wsq_jwks_fetches_total counter\n"
             "wsq_jwks_fetches_total{result=\"ok\"} %llu\n"
             "wsq_jwks_fetches_total{result=\"failed\"} %llu\n",
             (unsigned long long)js.ok_total, (unsigned long long)js.failed_total);
    }
    metric(b, "wsq_writer_queue_messages", "gauge", "Requests waiting for the writer.", qm);
    metric(b, "wsq_writer_queue_bytes", "gauge", "Payload bytes waiting for the writer.", qb);
    uint64_t used, size, max;
    wsq_store_map_usage(srv->store, &used, &size, &max);
    metric(b, "wsq_map_used_bytes", "gauge", "LMDB map bytes up to the highest page in use.", used);
    metric(b, "wsq_map_size_bytes", "gauge", "LMDB map size now.", size);
    metric(b, "wsq_map_max_bytes", "gauge", "storage.map_size_max.", max);

    line(b, "# HELP wsq_limit_refusals_total Requests refused by a limit.\n"
            "# TYPE wsq_limit_refusals_total counter\n");
    for (int i = 0; i < WSQ_LIM_COUNT; i++)
        line(b, "wsq_limit_refusals_total{limit=\"%s\"} %llu\n", lim_names[i],
             (unsigned long long)m->limit_refusals[i]);
    line(b, "# HELP wsq_auth_failures_total Authentication failures by reason.\n"
            "# TYPE wsq_auth_failures_total counter\n");
    for (int i = 0; i < WSQ_AUTHF_COUNT; i++)
        line(b, "wsq_auth_failures_total{reason=\"%s\"} %llu\n", wsq__authf_name((wsq_authf_t)i),
             (unsigned long long)m->auth_failures[i]);

    uint64_t cum = 0;
    line(b, "# HELP wsq_commit_batch_size Requests per storage commit.\n"
            "# TYPE wsq_commit_batch_size histogram\n");
    for (int i = 0; i < WSQ_BATCH_BUCKETS; i++) {
        cum += m->batch_hist[i];
        line(b, "wsq_commit_batch_size_bucket{le=\"%s\"} %llu\n", batch_le[i],
             (unsigned long long)cum);
    }
    cum += m->batch_hist[WSQ_BATCH_BUCKETS];
    line(b, "wsq_commit_batch_size_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    line(b, "wsq_commit_batch_size_sum %llu\nwsq_commit_batch_size_count %llu\n",
         (unsigned long long)m->batch_sum, (unsigned long long)cum);
    cum = 0;
    line(b, "# HELP wsq_commit_seconds Storage commit duration, fsync included.\n"
            "# TYPE wsq_commit_seconds histogram\n");
    for (int i = 0; i < WSQ_LATENCY_BUCKETS; i++) {
        cum += m->latency_hist[i];
        line(b, "wsq_commit_seconds_bucket{le=\"%s\"} %llu\n", lat_le[i], (unsigned long long)cum);
    }
    cum += m->latency_hist[WSQ_LATENCY_BUCKETS];
    line(b, "wsq_commit_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    line(b, "wsq_commit_seconds_sum %.6f\nwsq_commit_seconds_count %llu\n",
         (double)m->latency_sum_ns / 1e9, (unsigned long long)cum);

    /* per topic (first METRICS_TOPICS_MAX by name) */
    line(b, "# HELP wsq_topic_messages Retained messages per topic.\n"
            "# TYPE wsq_topic_messages gauge\n");
    wsq_topic_info_t *ti = malloc(100 * sizeof(*ti));
    wsq_buf_t bytes, heads;
    wsq_buf_init(&bytes);
    wsq_buf_init(&heads);
    char after[WSQ_TOPIC_MAX + 1] = "";
    unsigned total = 0, n = 0;
    while (ti && total < METRICS_TOPICS_MAX &&
           wsq_store_topic_list(srv->store, after[0] ? after : NULL, 100, ti, &n) == WSQ_OK &&
           n > 0) {
        for (unsigned i = 0; i < n && total < METRICS_TOPICS_MAX; i++, total++) {
            line(b, "wsq_topic_messages{topic=\"%s\"} %llu\n", ti[i].name,
                 (unsigned long long)ti[i].count);
            line(&bytes, "wsq_topic_bytes{topic=\"%s\"} %llu\n", ti[i].name,
                 (unsigned long long)ti[i].bytes);
            line(&heads, "wsq_topic_last_seq{topic=\"%s\"} %llu\n", ti[i].name,
                 (unsigned long long)(ti[i].next_seq - 1));
        }
        snprintf(after, sizeof(after), "%s", ti[n - 1].name);
        if (n < 100)
            break;
    }
    free(ti);
    line(b, "# HELP wsq_topic_bytes Retained payload bytes per topic.\n"
            "# TYPE wsq_topic_bytes gauge\n");
    wsq_buf_append(b, bytes.data, bytes.len);
    line(b, "# HELP wsq_topic_last_seq Last seq per topic.\n# TYPE wsq_topic_last_seq gauge\n");
    wsq_buf_append(b, heads.data, heads.len);
    wsq_buf_fini(&bytes);
    wsq_buf_fini(&heads);

    /* per consumer lag (first METRICS_CONSUMERS_MAX) */
    line(b, "# HELP wsq_consumer_lag Retained messages a consumer has not acknowledged.\n"
            "# TYPE wsq_consumer_lag gauge\n");
    wsq_consumer_info_t *ci = malloc(100 * sizeof(*ci));
    uint32_t at = 0;
    char an[WSQ_CONSUMER_NAME_MAX + 1] = "";
    total = 0;
    while (ci && total < METRICS_CONSUMERS_MAX &&
           wsq_store_consumer_list(srv->store, 0, at, an[0] ? an : NULL, 100, ci, &n) == WSQ_OK &&
           n > 0) {
        for (unsigned i = 0; i < n && total < METRICS_CONSUMERS_MAX; i++, total++) {
            wsq_topic_info_t t;
            if (wsq_store_topic_get(srv->store, ci[i].topic_id, &t) != WSQ_OK)
                continue;
            line(b, "wsq_consumer_lag{topic=\"%s\",consumer=\"%s\"} %llu\n", t.name, ci[i].name,
                 (unsigned long long)ci[i].lag);
        }
        at = ci[n - 1].topic_id;
        memcpy(an, ci[n - 1].name, sizeof(an));
        if (n < 100)
            break;
    }
    free(ci);
}
