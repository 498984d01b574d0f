/* Identities, credentials and rights (service thread). */
#include <libwebsockets.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "session.h"
#include "wsq/clock.h"
#include "wsq/jwt.h"

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
    [WSQ_AUTHF_REVOKED] = "revoked",
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
    if (cfg->auth.jwt_secret && jwt_shape && wsq__auth_jwt(srv, token, len, id, &why) == WSQ_OK)
        return WSQ_OK;
    fail(srv, why);
    return WSQ_ERR_UNAUTHORIZED;
}

wsq_err wsq__upgrade_identity(wsq_server_t *srv, struct lws *wsi, wsq_identity_t *id, char *err,
                              size_t errlen)
{
    char tok[WSQ_TOKEN_MAX + 16];
    int n = lws_hdr_copy(wsi, tok, sizeof(tok), WSI_TOKEN_HTTP_AUTHORIZATION);
    const char *t = NULL;
    if (n > 0) {
        if (strncasecmp(tok, "Bearer ", 7) != 0) {
            fail(srv, WSQ_AUTHF_BAD_HEADER);
            snprintf(err, errlen, "Authorization must be \"Bearer <token>\"");
            return WSQ_ERR_UNAUTHORIZED;
        }
        t = tok + 7;
    } else if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION) > 0) {
        fail(srv, WSQ_AUTHF_BAD_HEADER);
        snprintf(err, errlen, "Authorization header too long (limits.max_header_size)");
        return WSQ_ERR_UNAUTHORIZED;
    } else {
        t = lws_get_urlarg_by_name(wsi, "token=", tok, sizeof(tok));
    }
    if (t == NULL) {
        anonymous(srv, id);
        return WSQ_OK;
    }
    if (wsq__auth_token(srv, t, strlen(t), id) != WSQ_OK) {
        snprintf(err, errlen, "invalid token");
        return WSQ_ERR_UNAUTHORIZED;
    }
    return WSQ_OK;
}

bool wsq__origin_allowed(wsq_server_t *srv, struct lws *wsi)
{
    const wsq_strlist_t *allowed = &srv->cfg->auth.allowed_origins;
    if (allowed->n == 0)
        return true;
    char origin[256];
    if (lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) <= 0)
        return true; /* not a browser: Origin protects browsers' users, nothing else */
    for (size_t i = 0; i < allowed->n; i++)
        if (strcasecmp(origin, allowed->items[i]) == 0)
            return true;
    fail(srv, WSQ_AUTHF_ORIGIN);
    return false;
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
        {"bad_audience", WSQ_AUTHF_BAD_AUDIENCE},
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
    wsq_err err = wsq_jwt_verify(token, len, (const unsigned char *)cfg->auth.jwt_secret,
                                 cfg->auth.jwt_secret_len, cfg->auth.jwt_issuer,
                                 cfg->auth.jwt_audience, now_ms / 1000, JWT_LEEWAY_S, &c, &reason);
    if (err != WSQ_OK) {
        *why = jwt_reason(reason);
        wsq_jwt_claims_fini(&c);
        return WSQ_ERR_UNAUTHORIZED;
    }
    wsq_rights_t *r = malloc(sizeof(*r));
    if (r == NULL) {
        wsq_jwt_claims_fini(&c);
        *why = WSQ_AUTHF_MALFORMED;
        return WSQ_ERR_UNAUTHORIZED;
    }
    *r = c.rights; /* ownership of the lists moves to the identity */
    memset(id, 0, sizeof(*id));
    snprintf(id->name, sizeof(id->name), "%s", c.sub);
    id->kind = WSQ_ID_JWT;
    id->owned = r;
    id->rights = r;
    id->expires_ms =
        c.exp ? (c.exp + JWT_LEEWAY_S) * 1000 : 0; /* the leeway it was accepted with */
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
        if (cfg->auth.jwt_secret == NULL) {
            fail(srv, WSQ_AUTHF_REVOKED);
            return false; /* JWTs are no longer accepted at all */
        }
        return true; /* its claims stand until it expires */
    }
    return false;
}
