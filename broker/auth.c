/* Identities, credentials and rights (service thread). */
#include <arpa/inet.h>
#include <ctype.h>
#include <libwebsockets.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "log.h"
#include "req.h"
#include "server.h"
#include "wsq/clock.h"
#include "wsq/jwt.h"

#include "jwks.h"

/* Clock skew tolerated on exp and nbf. */
#define JWT_LEEWAY_S 30

static const char *const authf_names[WSQ_AUTHF_COUNT] = {
    [WSQ_AUTHF_BAD_HEADER] = "bad_authorization_header",
    [WSQ_AUTHF_UNKNOWN_TOKEN] = "unknown_token",
    [WSQ_AUTHF_MALFORMED] = "malformed",
    [WSQ_AUTHF_BAD_ALG] = "bad_alg",
    [WSQ_AUTHF_BAD_SIGNATURE] = "bad_signature",
    [WSQ_AUTHF_EXPIRED] = "expired",
    [WSQ_AUTHF_NOT_YET_VALID] = "not_yet_valid",
    [WSQ_AUTHF_BAD_ISSUER] = "bad_issuer",
    [WSQ_AUTHF_BAD_AUDIENCE] = "bad_audience",
    [WSQ_AUTHF_BAD_CLAIMS] = "bad_claims",
    [WSQ_AUTHF_ORIGIN] = "origin",
    [WSQ_AUTHF_HOST] = "host",
    [WSQ_AUTHF_REVOKED] = "revoked",
    [WSQ_AUTHF_UNKNOWN_KEY] = "unknown_key",
};

const char *wsq__authf_name(wsq_authf_t r)
{
    return r < WSQ_AUTHF_COUNT ? authf_names[r] : "other";
}

static void fail(wsq_server_t *srv, wsq_authf_t why)
{
    atomic_fetch_add_explicit(&srv->metrics.auth_failures[why], 1, memory_order_relaxed);
}

static void free_list(wsq_strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static wsq_err list_add(wsq_strlist_t *l, const char *s)
{
    char **items = realloc(l->items, (l->n + 1) * sizeof(*items));
    if (items == NULL)
        return WSQ_ERR_NOMEM;
    l->items = items;
    if ((l->items[l->n] = strdup(s)) == NULL)
        return WSQ_ERR_NOMEM;
    l->n++;
    return WSQ_OK;
}

/* The rights of the configured roles a token's roles claim names (auth.jwt.roles), their
 * templates filled with the token's claims; a template whose value is absent or not one topic
 * segment is left out. Roles the config does not know grant nothing. */
static wsq_err roles_rights(const wsq_config_t *cfg, const wsq_jwt_claims_t *c, wsq_rights_t *r)
{
    const wsq_strlist_t *names = &cfg->auth.jwt_template_claims;
    char out[WSQ_TOPIC_MAX + 1];
    for (size_t i = 0; i < c->roles.n; i++) {
        for (size_t k = 0; k < cfg->auth.n_jwt_roles; k++) {
            const wsq_role_conf_t *role = &cfg->auth.jwt_roles[k];
            if (strcmp(role->name, c->roles.items[i]) != 0)
                continue;
            r->admin |= role->rights.admin;
            r->metrics |= role->rights.metrics;
            const wsq_strlist_t *from[] = {&role->rights.publish, &role->rights.subscribe};
            wsq_strlist_t *to[] = {&r->publish, &r->subscribe};
            for (int l = 0; l < 2; l++)
                for (size_t j = 0; j < from[l]->n; j++)
                    if (wsq_topic_template_expand(
                            from[l]->items[j], (const char *const *)names->items,
                            (const char *const *)c->values.items, names->n, out, sizeof(out)) &&
                        list_add(to[l], out) != WSQ_OK)
                        return WSQ_ERR_NOMEM;
        }
    }
    return WSQ_OK;
}

void wsq__identity_fini(wsq_identity_t *id)
{
    if (id->owned) {
        free_list(&id->owned->publish);
        free_list(&id->owned->subscribe);
        free(id->owned);
    }
    memset(id, 0, sizeof(*id));
}

void wsq__identity_move(wsq_identity_t *dst, wsq_identity_t *src)
{
    if (dst == src)
        return;
    wsq__identity_fini(dst);
    *dst = *src;
    memset(src, 0, sizeof(*src));
}

static bool any_match(const wsq_strlist_t *l, const char *topic, size_t len)
{
    for (size_t i = 0; i < l->n; i++)
        if (wsq_topic_match(l->items[i], topic, len))
            return true;
    return false;
}

bool wsq__allowed(const wsq_identity_t *id, wsq_right_t right, const char *topic, size_t len)
{
    if (id == NULL || id->rights == NULL)
        return false;
    return any_match(right == WSQ_RIGHT_PUBLISH ? &id->rights->publish : &id->rights->subscribe,
                     topic, len);
}

static void anonymous(wsq_server_t *srv, wsq_identity_t *id)
{
    memset(id, 0, sizeof(*id));
    snprintf(id->name, sizeof(id->name), "anonymous");
    id->kind = WSQ_ID_ANON;
    id->rights = &srv->cfg->auth.anonymous;
    id->anonymous = true;
}

/* A static token: compared as SHA-256 digests, in constant time. */
static bool static_token(const wsq_config_t *cfg, const char *token, size_t len, wsq_identity_t *id)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!EVP_Digest(token, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return false;
    bool found = false;
    for (size_t i = 0; i < cfg->auth.n_tokens; i++) {
        const wsq_token_conf_t *t = &cfg->auth.tokens[i];
        if (CRYPTO_memcmp(t->sha256, md, 32) == 0 && !found) {
            memset(id, 0, sizeof(*id));
            snprintf(id->name, sizeof(id->name), "%s", t->name);
            id->kind = WSQ_ID_TOKEN;
            id->rights = &t->rights;
            memcpy(id->digest, md, 32);
            found = true; /* keep looping: the time taken does not say which token matched */
        }
    }
    return found;
}

wsq_err wsq__auth_token(wsq_server_t *srv, const char *token, size_t len, wsq_identity_t *id)
{
    const wsq_config_t *cfg = srv->cfg;
    if (len == 0 || len > WSQ_TOKEN_MAX) {
        fail(srv, WSQ_AUTHF_UNKNOWN_TOKEN);
        return WSQ_ERR_UNAUTHORIZED;
    }
    if (static_token(cfg, token, len, id))
        return WSQ_OK;
    wsq_authf_t why = WSQ_AUTHF_UNKNOWN_TOKEN;
    /* only something shaped like a JWT (three dot-separated parts) is judged as one; anything
     * else stays an unknown token in the metrics */
    const char *d1 = memchr(token, '.', len);
    bool jwt_shape = d1 && memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) != NULL;
    if (cfg->auth.jwt_keys && jwt_shape && wsq__auth_jwt(srv, token, len, id, &why) == WSQ_OK)
        return WSQ_OK;
    fail(srv, why);
    return WSQ_ERR_UNAUTHORIZED;
}

wsq_err wsq__upgrade_identity(wsq_server_t *srv, struct lws *wsi, wsq_identity_t *id, char *err,
                              size_t errlen)
{
    char tok[WSQ_TOKEN_MAX + 16];
    const char *t = tok;
    wsq_err e = wsq__req_header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, tok, sizeof(tok));
    if (e == WSQ_OK) {
        if (strncasecmp(tok, "Bearer ", 7) != 0) {
            fail(srv, WSQ_AUTHF_BAD_HEADER);
            snprintf(err, errlen, "Authorization must be \"Bearer <token>\"");
            return WSQ_ERR_UNAUTHORIZED;
        }
        t = tok + 7;
    } else if (e == WSQ_ERR_TOO_LARGE) {
        fail(srv, WSQ_AUTHF_BAD_HEADER);
        snprintf(err, errlen, "Authorization header too long (a token has at most %d bytes)",
                 WSQ_TOKEN_MAX);
        return WSQ_ERR_UNAUTHORIZED;
    } else if ((e = wsq__req_query(wsi, "token", tok, sizeof(tok))) == WSQ_ERR_TOO_LARGE) {
        fail(srv, WSQ_AUTHF_BAD_HEADER);
        snprintf(err, errlen, "token parameter too long (at most %d bytes)", WSQ_TOKEN_MAX);
        return WSQ_ERR_UNAUTHORIZED;
    } else if (e != WSQ_OK) {
        anonymous(srv, id);
        return WSQ_OK;
    }
    if (wsq__auth_token(srv, t, strlen(t), id) != WSQ_OK) {
        snprintf(err, errlen, "invalid token");
        return WSQ_ERR_UNAUTHORIZED;
    }
    return WSQ_OK;
}

/* ---- browsers -------------------------------------------------------------------------- */

/* host[:port] (a Host header, or an origin's authority): the host lowercased into host (IPv6
 * literals keep their brackets), the port or 0. false: malformed. */
static bool split_authority(const char *s, char *host, size_t hostlen, unsigned *port)
{
    const char *end = s + strlen(s), *colon = NULL;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL)
            return false;
        colon = rb[1] == ':' ? rb + 1 : NULL;
        if (rb[1] && !colon)
            return false;
    } else {
        colon = strrchr(s, ':');
    }
    const char *hend = colon ? colon : end;
    if (hend == s || (size_t)(hend - s) >= hostlen)
        return false;
    for (size_t i = 0; s + i < hend; i++)
        host[i] = (char)tolower((unsigned char)s[i]);
    host[hend - s] = '\0';
    *port = 0;
    if (colon) {
        char *e;
        unsigned long p = strtoul(colon + 1, &e, 10);
        if (colon[1] == '\0' || *e || p == 0 || p > 65535)
            return false;
        *port = (unsigned)p;
    }
    return true;
}

/* The listener a request came in on: its config entry and its port. */
static const wsq_listener_conf_t *listener_of(wsq_server_t *srv, struct lws *wsi, unsigned *port)
{
    struct lws_vhost *vh = lws_get_vhost(wsi);
    const char *name = vh ? lws_get_vhost_name(vh) : NULL;
    unsigned long i;
    if (name == NULL || strncmp(name, "listener", 8) != 0 ||
        (i = strtoul(name + 8, NULL, 10)) >= srv->cfg->n_listeners)
        return NULL;
    *port = (unsigned)lws_get_vhost_listen_port(vh);
    return &srv->cfg->listeners[i];
}

/* localhost, an IPv4 literal in 127.0.0.0/8, or ::1 (bracketed in a Host) */
static bool loopback_host(const char *h)
{
    struct in_addr a4;
    if (strcmp(h, "localhost") == 0 || strcmp(h, "[::1]") == 0 || strcmp(h, "::1") == 0)
        return true;
    return inet_pton(AF_INET, h, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

wsq_err wsq__browser_check(wsq_server_t *srv, struct lws *wsi, wsq_browser_t *b, unsigned *status,
                           char *err, size_t errlen)
{
    memset(b, 0, sizeof(*b));
    char hosthdr[300], host[272];
    unsigned lport = 0, hport = 0;
    const wsq_listener_conf_t *l = listener_of(srv, wsi, &lport);
    bool tls = l && l->tls_cert;
    unsigned dport = tls ? 443 : 80;
    wsq_err e = wsq__req_header(wsi, WSI_TOKEN_HOST, hosthdr, sizeof(hosthdr));
    bool have_host = e == WSQ_OK && split_authority(hosthdr, host, sizeof(host), &hport);
    if (e == WSQ_ERR_TOO_LARGE || (e == WSQ_OK && !have_host)) {
        *status = 400;
        snprintf(err, errlen, "malformed Host header");
        return WSQ_ERR_BAD_REQUEST;
    }
    /* DNS rebinding: a page from evil.example whose name later resolves to 127.0.0.1 talks to a
     * loopback listener as evil.example, same-origin for the browser. The Host header tells. A
     * Host without a port passes (libwebsockets' own client sends one): only the name matters
     * against rebinding. */
    if (l && loopback_host(l->address) && have_host &&
        (!loopback_host(host) || (hport && hport != lport))) {
        fail(srv, WSQ_AUTHF_HOST);
        *status = 403;
        snprintf(err, errlen,
                 "Host %.200s does not name this loopback listener (localhost, 127.0.0.1 or "
                 "[::1], port %u): refused against DNS rebinding",
                 hosthdr, lport);
        return WSQ_ERR_FORBIDDEN;
    }

    e = wsq__req_header(wsi, WSI_TOKEN_ORIGIN, b->origin, sizeof(b->origin));
    if (e == WSQ_ERR_NOTFOUND)
        return WSQ_OK; /* not a browser: Origin protects browsers' users, nothing else */
    if (e != WSQ_OK) {
        *status = 400;
        snprintf(err, errlen, "Origin header too long");
        return WSQ_ERR_BAD_REQUEST;
    }
    b->browser = true;
    const wsq_strlist_t *allowed = &srv->cfg->auth.allowed_origins;
    for (size_t i = 0; i < allowed->n; i++)
        if (strcmp(allowed->items[i], "*") == 0 || strcasecmp(b->origin, allowed->items[i]) == 0) {
            b->listed = true;
            return WSQ_OK;
        }
    /* same origin: the page was served by this listener under the name the request uses */
    const char *scheme = tls ? "https://" : "http://";
    char ohost[272];
    unsigned oport;
    size_t sl = strlen(scheme);
    if (have_host && strncasecmp(b->origin, scheme, sl) == 0 &&
        split_authority(b->origin + sl, ohost, sizeof(ohost), &oport) && strcmp(ohost, host) == 0 &&
        (oport ? oport : dport) == (hport ? hport : dport))
        return WSQ_OK;
    fail(srv, WSQ_AUTHF_ORIGIN);
    *status = 403;
    snprintf(err, errlen, "origin %.200s not allowed (auth.allowed_origins)", b->origin);
    return WSQ_ERR_FORBIDDEN;
}

static wsq_authf_t jwt_reason(const char *r)
{
    static const struct {
        const char *name;
        wsq_authf_t why;
    } map[] = {
        {"malformed", WSQ_AUTHF_MALFORMED},         {"bad_alg", WSQ_AUTHF_BAD_ALG},
        {"bad_header", WSQ_AUTHF_MALFORMED},        {"bad_signature", WSQ_AUTHF_BAD_SIGNATURE},
        {"bad_claims", WSQ_AUTHF_BAD_CLAIMS},       {"expired", WSQ_AUTHF_EXPIRED},
        {"not_yet_valid", WSQ_AUTHF_NOT_YET_VALID}, {"bad_issuer", WSQ_AUTHF_BAD_ISSUER},
        {"bad_audience", WSQ_AUTHF_BAD_AUDIENCE},   {"unknown_key", WSQ_AUTHF_UNKNOWN_KEY},
    };
    for (size_t i = 0; r && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(r, map[i].name) == 0)
            return map[i].why;
    return WSQ_AUTHF_MALFORMED;
}

wsq_err wsq__auth_jwt(wsq_server_t *srv, const char *token, size_t len, wsq_identity_t *id,
                      wsq_authf_t *why)
{
    const wsq_config_t *cfg = srv->cfg;
    wsq_jwt_claims_t c;
    const char *reason = NULL;
    int64_t now_ms = wsq_now_ms();
    const wsq_jwt_opts_t opts = {cfg->auth.jwt_identity_claim, cfg->auth.jwt_roles_claim,
                                 &cfg->auth.jwt_template_claims};
    wsq_err err = wsq_jwt_verify_keys(token, len, cfg->auth.jwt_keys, cfg->auth.jwt_algs,
                                      cfg->auth.jwt_issuer, cfg->auth.jwt_audience, now_ms / 1000,
                                      JWT_LEEWAY_S, &opts, &c, &reason);
    if (err != WSQ_OK && srv->jwks != NULL && strcmp(reason, "unknown_key") == 0) {
        /* the configured keys do not have it: the provider's fetched set may */
        const wsq_jwt_keys_t *fetched = wsq__jwks_keys(srv->jwks);
        if (fetched != NULL) {
            wsq_jwt_claims_fini(&c);
            err = wsq_jwt_verify_keys(token, len, fetched, cfg->auth.jwt_algs, cfg->auth.jwt_issuer,
                                      cfg->auth.jwt_audience, now_ms / 1000, JWT_LEEWAY_S, &opts,
                                      &c, &reason);
        }
        if (err != WSQ_OK && strcmp(reason, "unknown_key") == 0)
            wsq__jwks_kick(srv->jwks); /* rotated at the provider? fetch soon */
    }
    if (err != WSQ_OK) {
        *why = jwt_reason(reason);
        wsq_jwt_claims_fini(&c);
        return WSQ_ERR_UNAUTHORIZED;
    }
    wsq_rights_t *r = calloc(1, sizeof(*r));
    if (r == NULL || (cfg->auth.jwt_roles_claim && roles_rights(cfg, &c, r) != WSQ_OK)) {
        if (r != NULL) {
            free_list(&r->publish);
            free_list(&r->subscribe);
            free(r);
        }
        wsq_jwt_claims_fini(&c);
        *why = WSQ_AUTHF_MALFORMED;
        return WSQ_ERR_UNAUTHORIZED;
    }
    if (cfg->auth.jwt_roles_claim == NULL) {
        *r = c.rights; /* ownership of the lists moves to the identity */
        memset(&c.rights, 0, sizeof(c.rights));
    }
    memset(id, 0, sizeof(*id));
    snprintf(id->name, sizeof(id->name), "%s", c.sub);
    id->kind = WSQ_ID_JWT;
    id->owned = r;
    id->rights = r;
    id->expires_ms =
        c.exp ? (c.exp + JWT_LEEWAY_S) * 1000 : 0; /* the leeway it was accepted with */
    wsq_jwt_claims_fini(&c); /* the roles and values (the rights moved to the identity) */
    return WSQ_OK;
}

/* Re-resolves an identity against the config now in force. False: its credentials are gone. */
bool wsq__identity_refresh(wsq_server_t *srv, wsq_identity_t *id)
{
    const wsq_config_t *cfg = srv->cfg;
    switch (id->kind) {
    case WSQ_ID_ANON:
        id->rights = &cfg->auth.anonymous;
        return true;
    case WSQ_ID_TOKEN:
        /* the same name AND the same secret: rotating a token's hash revokes the old one */
        for (size_t i = 0; i < cfg->auth.n_tokens; i++) {
            if (strcmp(cfg->auth.tokens[i].name, id->name) == 0 &&
                CRYPTO_memcmp(cfg->auth.tokens[i].sha256, id->digest, 32) == 0) {
                id->rights = &cfg->auth.tokens[i].rights;
                return true;
            }
        }
        fail(srv, WSQ_AUTHF_REVOKED);
        return false;
    case WSQ_ID_JWT:
        if (cfg->auth.jwt_keys == NULL) {
            fail(srv, WSQ_AUTHF_REVOKED);
            return false; /* JWTs are no longer accepted at all */
        }
        return true; /* its claims stand until it expires */
    }
    return false;
}
