/* HTTP to the broker's admin endpoint, with libcurl (blocking, one request at a time). */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* Largest response body accepted. Admin answers are small JSON objects; a history page (dlq) holds
 * about 4 MiB of payload, which base64 or JSON escapes of control characters make up to 6 times
 * longer. */
#define RESP_MAX (32u << 20)

void wsq__ctl_http_global(bool init)
{
    if (init)
        curl_global_init(CURL_GLOBAL_DEFAULT);
    else
        curl_global_cleanup();
}

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    wsq_buf_t *b = arg;
    size_t len = size * n;
    if (b->len + len > RESP_MAX || wsq_buf_append(b, p, len) != WSQ_OK)
        return 0; /* aborts the transfer */
    return len;
}

/* Probe timeouts: a broker on loopback answers whoami in milliseconds; a host that drops packets
 * must not make every command wait. */
#define PROBE_CONNECT_MS 1500L
#define PROBE_TOTAL_MS 5000L

/* How a request ended at the transport level. */
typedef enum {
    XFER_OK,          /* an HTTP answer arrived (any status) */
    XFER_UNREACHABLE, /* no connection, or it broke before an answer */
    XFER_TLS,         /* the server's certificate is not trusted */
    XFER_OTHER,       /* anything else (why says what) */
} xfer_t;

/* One request to c->url; records nothing. why gets curl's message when the result is not OK. */
static xfer_t perform(wsqctl_t *c, const char *method, const char *path, const void *body,
                      size_t len, long connect_ms, long total_ms, ctl_http_resp_t *r, char *why,
                      size_t whylen)
{
    memset(r, 0, sizeof(*r));
    wsq_buf_init(&r->body);
    snprintf(why, whylen, "out of memory");
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", c->url.base, path);
    CURL *h = curl_easy_init();
    if (h == NULL)
        return XFER_OTHER;
    struct curl_slist *hdrs = NULL;
    char *auth = NULL;
    if (c->token) {
        size_t n = strlen(c->token) + 32;
        auth = malloc(n);
        if (auth == NULL) {
            curl_easy_cleanup(h);
            return XFER_OTHER;
        }
        snprintf(auth, n, "Authorization: Bearer %s", c->token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    /* lws does not answer "100 Continue": without this curl waits a second before big bodies */
    hdrs = curl_slist_append(hdrs, "Expect:");
    if (body)
        hdrs = curl_slist_append(hdrs, "Content-Type: application/x-ndjson");
    else if (strcmp(method, "POST") == 0)
        hdrs = curl_slist_append(hdrs, "Content-Type:"); /* no body, no type (curl's default) */
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    if (total_ms > 0)
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, total_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (c->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (strcmp(method, "POST") == 0 && body) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, (const char *)body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    } else if (strcmp(method, "POST") == 0) {
        /* purge and delete-consumer carry no body: an empty one with Content-Length: 0, because
         * wsqd answers 411 to a POST without Content-Length */
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }
    CURLcode cc = curl_easy_perform(h);
    xfer_t x = XFER_OK;
    if (cc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    } else if (cc == CURLE_WRITE_ERROR) { /* on_data refused the body */
        snprintf(why, whylen, "the answer is larger than %u bytes, or out of memory", RESP_MAX);
        x = XFER_OTHER;
    } else {
        snprintf(why, whylen, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
        if (cc == CURLE_PEER_FAILED_VERIFICATION)
            x = XFER_TLS;
        else if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
                 cc == CURLE_OPERATION_TIMEDOUT || cc == CURLE_GOT_NOTHING ||
                 cc == CURLE_RECV_ERROR || cc == CURLE_SEND_ERROR || cc == CURLE_SSL_CONNECT_ERROR)
            x = XFER_UNREACHABLE;
        else
            x = XFER_OTHER;
    }
    curl_slist_free_all(hdrs);
    free(auth);
    curl_easy_cleanup(h);
    return x;
}

int wsq__ctl_http(wsqctl_t *c, const char *method, const char *path, const void *body, size_t len,
                  ctl_http_resp_t *r)
{
    char why[CURL_ERROR_SIZE + 64];
    switch (perform(c, method, path, body, len, 5000L, 0L, r, why, sizeof(why))) {
    case XFER_OK:
        return CTL_OK;
    case XFER_TLS:
        return wsq__ctl_fail(c, CTL_ERR, "tls", "the broker at %s: %s (--insecure skips the check)",
                             c->url.base, why);
    case XFER_UNREACHABLE:
        return wsq__ctl_fail(c, CTL_UNREACHABLE, wsq_errname(WSQ_ERR_UNAVAILABLE),
                             "broker unreachable at %s (from %s): %s%s%s", c->url.base, c->url.why,
                             why, c->need_broker ? "; " : "", c->need_broker ? c->need_broker : "");
    default:
        return wsq__ctl_fail(c, CTL_ERR, "io_error", "HTTP %s %s%s failed: %s", method, c->url.base,
                             path, why);
    }
}

void wsq__ctl_http_resp_fini(ctl_http_resp_t *r)
{
    wsq_buf_fini(&r->body);
}

int wsq__ctl_http_fail_msg(wsqctl_t *c, const ctl_http_resp_t *r, const char *doing, char *name,
                           size_t namelen, char *out, size_t outlen)
{
    char code[64] = "", msg[512] = "";
    json_t *j = json_loadb((const char *)r->body.data, r->body.len, 0, NULL);
    json_t *e = j ? json_object_get(j, "error") : NULL;
    if (json_is_object(e)) {
        const char *s = json_string_value(json_object_get(e, "code"));
        const char *m = json_string_value(json_object_get(e, "message"));
        snprintf(code, sizeof(code), "%s", s ? s : "");
        snprintf(msg, sizeof(msg), "%s", m ? m : "");
    }
    json_decref(j);
    const char *sep = msg[0] ? ": " : "";
    if (!code[0]) {
        snprintf(name, namelen, "bad_response");
        snprintf(out, outlen, "%s: unexpected HTTP %ld from %s (is it a wsqd?)", doing, r->status,
                 c->url.base);
        return CTL_ERR;
    }
    if (strcmp(code, "not_found") == 0) {
        snprintf(name, namelen, "%s", code);
        snprintf(out, outlen, "%s: %s", doing, msg);
        return CTL_NOTFOUND;
    }
    if (strcmp(code, "unauthorized") == 0 || strcmp(code, "forbidden") == 0) {
        snprintf(name, namelen, "permission_denied");
        if (code[0] == 'u')
            snprintf(out, outlen,
                     "permission denied: the broker at %s needs credentials with admin rights "
                     "(%s%s%s); pass --token TOKEN or set WSQ_TOKEN",
                     c->url.base, code, sep, msg);
        else
            snprintf(out, outlen,
                     "permission denied: the broker at %s refused this identity (%s%s%s); "
                     "wsqctl needs a token with admin: true, and import also needs the publish "
                     "right on every topic it writes",
                     c->url.base, code, sep, msg);
        return CTL_ERR;
    }
    snprintf(name, namelen, "%s", code);
    snprintf(out, outlen, "%s: the broker answered %ld %s%s%s", doing, r->status, code, sep, msg);
    return CTL_ERR;
}

int wsq__ctl_http_fail(wsqctl_t *c, const ctl_http_resp_t *r, const char *doing)
{
    char name[64], msg[1024];
    int rc = wsq__ctl_http_fail_msg(c, r, doing, name, sizeof(name), msg, sizeof(msg));
    return wsq__ctl_fail(c, rc, name, "%s", msg);
}

void wsq__ctl_probe(wsqctl_t *c, ctl_whoami_t *w, ctl_probe_t *out, char *why, size_t len)
{
    memset(w, 0, sizeof(*w));
    why[0] = '\0';
    ctl_http_resp_t r;
    char err[CURL_ERROR_SIZE + 64];
    xfer_t x = perform(c, "GET", "/admin/whoami", NULL, 0, PROBE_CONNECT_MS, PROBE_TOTAL_MS, &r,
                       err, sizeof(err));
    if (x == XFER_TLS) {
        *out = CTL_PROBE_UNTRUSTED;
        snprintf(why, len, "the broker at %s: %s (--insecure skips the check)", c->url.base, err);
    } else if (x == XFER_UNREACHABLE) {
        *out = CTL_PROBE_NONE;
        snprintf(why, len, "%s", err);
    } else if (x != XFER_OK) {
        *out = CTL_PROBE_OTHER;
        snprintf(why, len, "%s", err);
    } else if (r.status == 401 || r.status == 403) {
        char name[64];
        *out = CTL_PROBE_REFUSED;
        if (wsq__ctl_http_fail_msg(c, &r, "asking the broker who it is", name, sizeof(name), why,
                                   len) == CTL_ERR &&
            strcmp(name, "bad_response") == 0)
            *out = CTL_PROBE_OTHER; /* no wsqd error body: not a wsqd */
    } else {
        json_t *j =
            r.status == 200 ? json_loadb((const char *)r.body.data, r.body.len, 0, NULL) : NULL;
        const char *data = j ? json_string_value(json_object_get(j, "data")) : NULL;
        json_t *pid = j ? json_object_get(j, "pid") : NULL;
        if (data == NULL || !json_is_integer(pid)) {
            *out = CTL_PROBE_OTHER;
            snprintf(why, len, "it answered HTTP %ld to GET /admin/whoami, not a wsqd's answer",
                     r.status);
        } else {
            *out = CTL_PROBE_WSQD;
            const char *s;
            snprintf(w->data, sizeof(w->data), "%s", data);
            if ((s = json_string_value(json_object_get(j, "identity"))))
                snprintf(w->identity, sizeof(w->identity), "%s", s);
            if ((s = json_string_value(json_object_get(j, "version"))))
                snprintf(w->version, sizeof(w->version), "%s", s);
            w->admin = json_is_true(json_object_get(j, "admin"));
            w->pid = (long)json_integer_value(pid);
            w->format = (long)json_integer_value(json_object_get(j, "format"));
        }
        json_decref(j);
    }
    wsq__ctl_http_resp_fini(&r);
}
