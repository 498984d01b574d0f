/* Rights checks. Identities come from the config (anonymous, tokens) or from JWTs. */
#include "broker.h"

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

/* ------------------------------------------------------------------------------------------- */
/* credentials */

#include <libwebsockets.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

#include "session.h"

wsq_err wsq__auth_token(wsq_server_t *srv, const char *token, size_t len, wsq_identity_t *id)
{
    const wsq_config_t *cfg = srv->cfg;
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (len == 0 || !EVP_Digest(token, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return WSQ_ERR_UNAUTHORIZED;
    for (size_t i = 0; i < cfg->auth.n_tokens; i++) {
        const wsq_token_conf_t *t = &cfg->auth.tokens[i];
        if (CRYPTO_memcmp(t->sha256, md, 32) == 0) {
            memset(id, 0, sizeof(*id));
            snprintf(id->name, sizeof(id->name), "%s", t->name);
            id->rights = &t->rights;
            return WSQ_OK;
        }
    }
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
            snprintf(err, errlen, "Authorization must be \"Bearer <token>\"");
            return WSQ_ERR_UNAUTHORIZED;
        }
        t = tok + 7;
    } else {
        t = lws_get_urlarg_by_name(wsi, "token=", tok, sizeof(tok));
    }
    if (t == NULL) {
        memset(id, 0, sizeof(*id));
        snprintf(id->name, sizeof(id->name), "anonymous");
        id->rights = &srv->cfg->auth.anonymous;
        id->anonymous = true;
        return WSQ_OK;
    }
    if (wsq__auth_token(srv, t, strlen(t), id) != WSQ_OK) {
        snprintf(err, errlen, "invalid token");
        return WSQ_ERR_UNAUTHORIZED;
    }
    return WSQ_OK;
}
