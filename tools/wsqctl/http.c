/* HTTP to the broker's admin endpoint, with libcurl (blocking, one request at a time). */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* Largest response body accepted: admin answers are small JSON objects. */
#define RESP_MAX (1u << 20)

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

int wsq__ctl_http(wsqctl_t *c, const char *method, const char *path, const void *body, size_t len,
                  ctl_http_resp_t *r)
{
    memset(r, 0, sizeof(*r));
    wsq_buf_init(&r->body);
    if (!c->has_url)
        return wsq__ctl_fail(c, CTL_ERR, "invalid", "no broker URL: pass --url or -c CONFIG");
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", c->url.base, path);
    CURL *h = curl_easy_init();
    if (h == NULL)
        return wsq__ctl_fail(c, CTL_ERR, "nomem", "cannot initialise libcurl");
    struct curl_slist *hdrs = NULL;
    char *auth = NULL;
    if (c->token) {
        size_t n = strlen(c->token) + 32;
        auth = malloc(n);
        if (auth == NULL) {
            curl_easy_cleanup(h);
            return wsq__ctl_fail(c, CTL_ERR, "nomem", "out of memory");
        }
        snprintf(auth, n, "Authorization: Bearer %s", c->token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    /* lws does not answer "100 Continue": without this curl waits a second before big bodies */
    hdrs = curl_slist_append(hdrs, "Expect:");
    if (body)
        hdrs = curl_slist_append(hdrs, "Content-Type: application/x-ndjson");
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
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
        /* No body and no Content-Length at all: wsqd 0.1.0 publishes the body of an admin
         * purge/delete-consumer request that has one (even "Content-Length: 0") into the topic
         * as a binary message. */
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "POST");
    }
    CURLcode cc = curl_easy_perform(h);
    int rc = CTL_OK;
    if (cc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    } else {
        const char *why = errbuf[0] ? errbuf : curl_easy_strerror(cc);
        bool unreachable = cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
                           cc == CURLE_OPERATION_TIMEDOUT || cc == CURLE_GOT_NOTHING ||
                           cc == CURLE_RECV_ERROR || cc == CURLE_SEND_ERROR ||
                           cc == CURLE_SSL_CONNECT_ERROR;
        if (cc == CURLE_PEER_FAILED_VERIFICATION)
            rc = wsq__ctl_fail(c, CTL_ERR, "tls",
                               "the broker at %s: %s (--insecure skips the "
                               "check)",
                               c->url.base, why);
        else if (unreachable)
            rc = wsq__ctl_fail(c, CTL_UNREACHABLE, wsq_errname(WSQ_ERR_UNAVAILABLE),
                               "broker unreachable at %s (from %s): %s", c->url.base,
                               c->url.why ? c->url.why : "--url", why);
        else
            rc = wsq__ctl_fail(c, CTL_ERR, "io_error", "HTTP %s %s failed: %s", method, url, why);
    }
    curl_slist_free_all(hdrs);
    free(auth);
    curl_easy_cleanup(h);
    return rc;
}

void wsq__ctl_http_resp_fini(ctl_http_resp_t *r)
{
    wsq_buf_fini(&r->body);
}

int wsq__ctl_http_fail(wsqctl_t *c, const ctl_http_resp_t *r, const char *doing)
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
    if (!code[0])
        return wsq__ctl_fail(c, CTL_ERR, "bad_response",
                             "%s: unexpected HTTP %ld from %s (is it a wsqd?)", doing, r->status,
                             c->url.base);
    if (strcmp(code, "not_found") == 0)
        return wsq__ctl_fail(c, CTL_NOTFOUND, code, "%s: %s", doing, msg);
    if (strcmp(code, "unauthorized") == 0)
        return wsq__ctl_fail(c, CTL_ERR, "permission_denied",
                             "permission denied: the broker at %s needs credentials with admin "
                             "rights (%s%s%s); pass --token TOKEN or set WSQ_TOKEN",
                             c->url.base, code, msg[0] ? ": " : "", msg);
    if (strcmp(code, "forbidden") == 0)
        return wsq__ctl_fail(c, CTL_ERR, "permission_denied",
                             "permission denied: the broker at %s refused this identity (%s%s%s); "
                             "mutations need a token with admin: true, and import also needs the "
                             "publish right on every topic it writes",
                             c->url.base, code, msg[0] ? ": " : "", msg);
    return wsq__ctl_fail(c, CTL_ERR, code, "%s: the broker answered %ld %s%s%s", doing, r->status,
                         code, msg[0] ? ": " : "", msg);
}

int wsq__ctl_whoami(wsqctl_t *c, ctl_whoami_t *w)
{
    memset(w, 0, sizeof(*w));
    ctl_http_resp_t r;
    int rc = wsq__ctl_http(c, "GET", "/admin/whoami", NULL, 0, &r);
    if (rc != CTL_OK) {
        wsq__ctl_http_resp_fini(&r);
        return rc;
    }
    if (r.status != 200) {
        rc = wsq__ctl_http_fail(c, &r, "asking the broker who it is (/admin/whoami)");
        wsq__ctl_http_resp_fini(&r);
        return rc;
    }
    json_t *j = json_loadb((const char *)r.body.data, r.body.len, 0, NULL);
    const char *data = j ? json_string_value(json_object_get(j, "data")) : NULL;
    if (data == NULL) {
        json_decref(j);
        wsq__ctl_http_resp_fini(&r);
        return wsq__ctl_fail(c, CTL_ERR, "bad_response",
                             "the server at %s is not a wsqd (no data dir in /admin/whoami)",
                             c->url.base);
    }
    const char *s;
    snprintf(w->data, sizeof(w->data), "%s", data);
    if ((s = json_string_value(json_object_get(j, "identity"))))
        snprintf(w->identity, sizeof(w->identity), "%s", s);
    if ((s = json_string_value(json_object_get(j, "version"))))
        snprintf(w->version, sizeof(w->version), "%s", s);
    w->admin = json_is_true(json_object_get(j, "admin"));
    w->pid = (long)json_integer_value(json_object_get(j, "pid"));
    w->format = (long)json_integer_value(json_object_get(j, "format"));
    json_decref(j);
    wsq__ctl_http_resp_fini(&r);
    wsq__ctl_note(c, "broker %s: wsqd %s, pid %ld, identity %s (admin: %s), data %s", c->url.base,
                  w->version, w->pid, w->identity, w->admin ? "yes" : "no", w->data);
    return CTL_OK;
}
