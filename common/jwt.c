/*
 * HS256 JWT verification and minting (see wsq/jwt.h for what is accepted and why).
 *
 * Untrusted bytes flow one way: size cap, split, strict base64url, header JSON, "alg", the HMAC,
 * and only then the claims JSON. Nothing the sender controls can choose the algorithm or the key,
 * and the claims parser only ever sees authenticated bytes.
 */
#include "wsq/jwt.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "wsq/proto.h"
#include "wsq/topic.h"

#include "jwk.h"

#define SIG_LEN 32 /* HMAC-SHA256 output */

/* The one header wsq_jwt_sign writes. */
static const char hs256_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

/* ------------------------------------------------------------------------------------------- */
/* Claims                                                                                      */

static void strlist_clear(wsq_strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

void wsq_jwt_claims_fini(wsq_jwt_claims_t *c)
{
    if (c == NULL)
        return;
    strlist_clear(&c->rights.publish);
    strlist_clear(&c->rights.subscribe);
    strlist_clear(&c->roles);
    strlist_clear(&c->values);
    memset(c, 0, sizeof(*c));
}

static bool string_is(const json_t *v, const char *s)
{
    size_t n = strlen(s);
    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), s, n) == 0;
}

/* An identity: 1..WSQ_JWT_SUB_MAX bytes of UTF-8 without control characters (logs quote it). */
static bool identity_ok(const char *s, size_t n)
{
    if (n == 0 || n > WSQ_JWT_SUB_MAX || !wsq_utf8_valid(s, n))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f)
            return false;
        /* C1 controls U+0080..U+009F: C2 80..C2 9F */
        if (ch == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] <= 0x9f)
            return false;
    }
    return true;
}

/* The claim a path names (see wsq_jwt_opts_t), or NULL. */
static const json_t *claim_at(const json_t *claims, const char *path)
{
    const json_t *v = json_object_get(claims, path);
    if (v != NULL)
        return v;
    v = claims;
    for (const char *p = path; v != NULL && *p;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        char key[256];
        if (n == 0 || n >= sizeof(key) || !json_is_object(v))
            return NULL;
        memcpy(key, p, n);
        key[n] = '\0';
        v = json_object_get(v, key);
        p += n + (dot != NULL);
    }
    return v == claims ? NULL : v;
}

static wsq_err strlist_add(wsq_strlist_t *l, const char *s, size_t n)
{
    char **items = realloc(l->items, (l->n + 1) * sizeof(*items));
    if (items == NULL)
        return WSQ_ERR_NOMEM;
    l->items = items;
    if (s == NULL) {
        l->items[l->n++] = NULL;
        return WSQ_OK;
    }
    char *c = malloc(n + 1);
    if (c == NULL)
        return WSQ_ERR_NOMEM;
    memcpy(c, s, n);
    c[n] = '\0';
    l->items[l->n++] = c;
    return WSQ_OK;
}

/* The roles claim: a string or an array (its strings; other entries are skipped). */
static wsq_err roles_of(const json_t *v, wsq_strlist_t *out)
{
    if (v == NULL)
        return WSQ_OK; /* no roles: no rights */
    if (json_is_string(v))
        return strlist_add(out, json_string_value(v), json_string_length(v));
    if (!json_is_array(v) || json_array_size(v) > WSQ_JWT_ROLES_MAX)
        return WSQ_ERR_INVAL;
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *r = json_array_get(v, i);
        wsq_err e = json_is_string(r)
                        ? strlist_add(out, json_string_value(r), json_string_length(r))
                        : WSQ_OK;
        if (e != WSQ_OK)
            return e;
    }
    return WSQ_OK;
}

/* A NumericDate (RFC 7519 section 2): a JSON number of seconds. Negative values are refused. A
 * fraction is rounded towards refusal: down for "exp", up for "nbf". Reals are limited to 2^53,
 * where a double still holds every integer. */
static bool numeric_date(const json_t *v, bool round_up, int64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0)
            return false;
        *out = (int64_t)i;
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d >= 0.0 && d <= 9007199254740992.0)) /* also false for NaN */
            return false;
        int64_t t = (int64_t)d;
        if (round_up && (double)t < d)
            t++;
        *out = t;
        return true;
    }
    return false;
}

/* Copies a JSON array of patterns into l (empty beforehand). Returns WSQ_OK, WSQ_ERR_INVAL when
 * it is not an array of at most WSQ_JWT_PATTERNS_MAX valid patterns, or WSQ_ERR_NOMEM (l then
 * holds what was copied; the caller frees it). */
static wsq_err patterns(const json_t *arr, wsq_strlist_t *l)
{
    /* filled twice only if the parser let a duplicate member through: refuse, never leak */
    if (!json_is_array(arr) || l->items != NULL)
        return WSQ_ERR_INVAL;
    size_t n = json_array_size(arr);
    if (n > WSQ_JWT_PATTERNS_MAX)
        return WSQ_ERR_INVAL;
    /* validate everything before allocating anything */
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(arr, i);
        if (!json_is_string(v) ||
            !wsq_topic_pattern_valid(json_string_value(v), json_string_length(v)))
            return WSQ_ERR_INVAL;
    }
    if (n == 0)
        return WSQ_OK;
    l->items = calloc(n, sizeof(*l->items));
    if (l->items == NULL)
        return WSQ_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(arr, i);
        size_t len = json_string_length(v); /* <= WSQ_TOPIC_MAX: validated above */
        char *s = malloc(len + 1);
        if (s == NULL)
            return WSQ_ERR_NOMEM;
        memcpy(s, json_string_value(v), len);
        s[len] = '\0';
        l->items[l->n++] = s;
    }
    return WSQ_OK;
}

/* Reads the "wsq" rights object into r. WSQ_OK, WSQ_ERR_INVAL (bad_claims) or WSQ_ERR_NOMEM. */
static wsq_err rights(const json_t *obj, wsq_rights_t *r)
{
    const char *key;
    json_t *v;
    wsq_err rc;

    if (!json_is_object(obj))
        return WSQ_ERR_INVAL;
    /* duplicate members were refused by the parser, so each list is filled at most once */
    json_object_foreach((json_t *)obj, key, v)
    {
        if (strcmp(key, "pub") == 0) {
            if ((rc = patterns(v, &r->publish)) != WSQ_OK)
                return rc;
        } else if (strcmp(key, "sub") == 0) {
            if ((rc = patterns(v, &r->subscribe)) != WSQ_OK)
                return rc;
        } else if (strcmp(key, "admin") == 0) {
            if (!json_is_boolean(v))
                return WSQ_ERR_INVAL;
            r->admin = json_is_true(v);
        } else if (strcmp(key, "metrics") == 0) {
            if (!json_is_boolean(v))
                return WSQ_ERR_INVAL;
            r->metrics = json_is_true(v);
        } else {
            return WSQ_ERR_INVAL;
        }
    }
    return WSQ_OK;
}

/* True when "aud" (string or array of strings, already type-checked) names audience. */
static bool audience_in(const json_t *aud, const char *audience)
{
    if (json_is_string(aud))
        return string_is(aud, audience);
    for (size_t i = 0; i < json_array_size(aud); i++)
        if (string_is(json_array_get(aud, i), audience))
            return true;
    return false;
}

static bool audience_type_ok(const json_t *aud)
{
    if (json_is_string(aud))
        return true;
    if (!json_is_array(aud))
        return false;
    for (size_t i = 0; i < json_array_size(aud); i++)
        if (!json_is_string(json_array_get(aud, i)))
            return false;
    return true;
}

/* Parses decoded JSON that must be an object. NULL with *rc set on failure. */
static json_t *parse_object(const unsigned char *p, size_t n, wsq_err *rc)
{
    json_error_t jerr;
    /* Duplicate keys are refused: two "sub" or two "alg" members would be read differently by
     * different parsers, which is how tokens get smuggled past one of them. */
    json_t *j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        *rc = json_error_code(&jerr) == json_error_out_of_memory ? WSQ_ERR_NOMEM
                                                                 : WSQ_ERR_UNAUTHORIZED;
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *rc = WSQ_ERR_UNAUTHORIZED;
        return NULL;
    }
    return j;
}

/* ------------------------------------------------------------------------------------------- */
/* Verify and sign                                                                             */

wsq_err wsq_jwt_verify(const char *token, size_t len, const unsigned char *secret,
                       size_t secret_len, const char *issuer, const char *audience, int64_t now_s,
                       int64_t leeway_s, wsq_jwt_claims_t *out, const char **reason)
{
    /* one HS256 secret, borrowed for the call: no allocation */
    jwk_t key = {.kty = KTY_OCT, .secret = (unsigned char *)secret, .secret_len = secret_len};
    struct wsq_jwt_keys ks = {.v = &key, .n = 1, .cap = 1, .borrowed = true};
    if (secret == NULL || secret_len == 0 || secret_len > WSQ_JWT_SECRET_MAX) {
        if (out != NULL)
            memset(out, 0, sizeof(*out));
        if (reason != NULL)
            *reason = "internal";
        return WSQ_ERR_INVAL;
    }
    return wsq_jwt_verify_keys(token, len, &ks, WSQ_JWT_ALG(HS256), issuer, audience, now_s,
                               leeway_s, NULL, out, reason);
}

wsq_err wsq_jwt_verify_keys(const char *token, size_t len, const wsq_jwt_keys_t *ks, unsigned algs,
                            const char *issuer, const char *audience, int64_t now_s,
                            int64_t leeway_s, const wsq_jwt_opts_t *opts, wsq_jwt_claims_t *out,
                            const char **reason)
{
    static const wsq_jwt_opts_t no_opts = {0};
    if (opts == NULL)
        opts = &no_opts;
    /* Every decoded part fits: the three parts hold at most len - 2 characters, which decode to
     * at most 3/4 as many bytes. */
    unsigned char buf[WSQ_JWT_TOKEN_MAX];
    wsq_jwt_claims_t c;
    json_t *hdr = NULL, *claims = NULL;
    const char *why = "internal";
    wsq_err rc = WSQ_ERR_INVAL;

    memset(&c, 0, sizeof(c));
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (token == NULL || ks == NULL || algs == 0 || out == NULL || leeway_s < 0)
        goto fail;

    /* 1. three non-empty strict base64url parts */
    rc = WSQ_ERR_UNAUTHORIZED;
    why = "malformed";
    if (len == 0 || len > WSQ_JWT_TOKEN_MAX)
        goto fail;
    const char *end = token + len;
    const char *dot1 = memchr(token, '.', len);
    if (dot1 == NULL)
        goto fail;
    const char *dot2 = memchr(dot1 + 1, '.', (size_t)(end - (dot1 + 1)));
    if (dot2 == NULL) /* a third '.' is caught by the base64url decoder */
        goto fail;
    size_t h_n = (size_t)(dot1 - token), p_n = (size_t)(dot2 - dot1 - 1);
    size_t s_n = (size_t)(end - dot2 - 1);
    if (h_n == 0 || p_n == 0 || s_n == 0)
        goto fail;
    unsigned char *h = buf, *p, *s;
    size_t h_len, p_len, s_len;
    if (wsq_base64url_decode(token, h_n, h, &h_len) != WSQ_OK)
        goto fail;
    p = h + h_len;
    if (wsq_base64url_decode(dot1 + 1, p_n, p, &p_len) != WSQ_OK)
        goto fail;
    s = p + p_len;
    if (wsq_base64url_decode(dot2 + 1, s_n, s, &s_len) != WSQ_OK)
        goto fail;

    /* 2, 3. the header: the algorithm is ours to choose, never the token's */
    if ((hdr = parse_object(h, h_len, &rc)) == NULL)
        goto fail;
    why = "bad_alg";
    const json_t *alg_v = json_object_get(hdr, "alg");
    unsigned alg =
        json_is_string(alg_v) && strlen(json_string_value(alg_v)) == json_string_length(alg_v)
            ? wsq_jwt_alg(json_string_value(alg_v))
            : 0;
    if ((alg & algs) == 0)
        goto fail;
    why = "bad_header";
    const json_t *typ = json_object_get(hdr, "typ");
    if (typ != NULL && !(json_is_string(typ) && json_string_length(typ) == 3 &&
                         strcasecmp(json_string_value(typ), "JWT") == 0))
        goto fail;
    /* "crit" lists extensions we must understand and do not (e.g. unencoded payloads, RFC
     * 7797); "cty" announces a nested token, which wsq never issues. */
    if (json_object_get(hdr, "crit") != NULL || json_object_get(hdr, "cty") != NULL)
        goto fail;
    const json_t *kid_v = json_object_get(hdr, "kid");
    const char *kid = NULL;
    if (kid_v != NULL) {
        if (!json_is_string(kid_v) || json_string_length(kid_v) > WSQ_JWT_KID_MAX ||
            strlen(json_string_value(kid_v)) != json_string_length(kid_v))
            goto fail;
        kid = json_string_value(kid_v);
    }

    /* 4. the signature, over the parts exactly as sent, under a key of the algorithm's type */
    why = wsq__jwt_sig_check(ks, alg, kid, (const unsigned char *)token, (size_t)(dot2 - token), s,
                             s_len);
    if (strcmp(why, "ok") != 0) {
        rc = strcmp(why, "nomem") == 0      ? WSQ_ERR_NOMEM
             : strcmp(why, "internal") == 0 ? WSQ_ERR_INTERNAL
                                            : WSQ_ERR_UNAUTHORIZED;
        goto fail;
    }

    /* 5. the claims: authenticated from here on, but still checked as if they were not */
    why = "malformed";
    if ((claims = parse_object(p, p_len, &rc)) == NULL)
        goto fail;

    /* 6. types and values */
    why = "bad_claims";
    const json_t *sub = claim_at(claims, opts->identity_claim ? opts->identity_claim : "sub");
    if (!json_is_string(sub) || !identity_ok(json_string_value(sub), json_string_length(sub)))
        goto fail;
    memcpy(c.sub, json_string_value(sub), json_string_length(sub));
    c.sub[json_string_length(sub)] = '\0';
    if (opts->roles_claim != NULL) {
        wsq_err r = roles_of(claim_at(claims, opts->roles_claim), &c.roles);
        if (r != WSQ_OK) {
            if (r == WSQ_ERR_NOMEM)
                rc = WSQ_ERR_NOMEM;
            goto fail;
        }
    }
    for (size_t i = 0; opts->value_claims != NULL && i < opts->value_claims->n; i++) {
        const json_t *v = claim_at(claims, opts->value_claims->items[i]);
        if (strlist_add(&c.values, json_is_string(v) ? json_string_value(v) : NULL,
                        json_is_string(v) ? json_string_length(v) : 0) != WSQ_OK) {
            rc = WSQ_ERR_NOMEM;
            goto fail;
        }
    }

    const json_t *exp = json_object_get(claims, "exp");
    const json_t *nbf = json_object_get(claims, "nbf");
    const json_t *iss = json_object_get(claims, "iss");
    const json_t *aud = json_object_get(claims, "aud");
    /* with roles, the deployment maps them to rights: a "wsq" claim is not read */
    const json_t *wsq = opts->roles_claim ? NULL : json_object_get(claims, "wsq");
    if (exp != NULL && !numeric_date(exp, false, &c.exp))
        goto fail;
    if (nbf != NULL && !numeric_date(nbf, true, &c.nbf))
        goto fail;
    if (iss != NULL && !json_is_string(iss))
        goto fail;
    if (aud != NULL && !audience_type_ok(aud))
        goto fail;
    if (wsq != NULL) {
        wsq_err r = rights(wsq, &c.rights);
        if (r != WSQ_OK) {
            if (r == WSQ_ERR_NOMEM) {
                rc = WSQ_ERR_NOMEM;
                why = "nomem";
            }
            goto fail;
        }
    }

    /* 7. time, then who it is for. Both time values are >= 0 and leeway_s >= 0, so each
     * difference below is taken only when non-negative and fits in uint64_t whatever now_s is. */
    why = "expired";
    if (exp != NULL && c.exp <= now_s && (uint64_t)now_s - (uint64_t)c.exp >= (uint64_t)leeway_s)
        goto fail;
    why = "not_yet_valid";
    if (nbf != NULL && c.nbf > now_s && (uint64_t)c.nbf - (uint64_t)now_s > (uint64_t)leeway_s)
        goto fail;
    why = "bad_issuer";
    if (issuer != NULL && (iss == NULL || !string_is(iss, issuer)))
        goto fail;
    why = "bad_audience";
    if (audience != NULL && (aud == NULL || !audience_in(aud, audience)))
        goto fail;

    json_decref(hdr);
    json_decref(claims);
    *out = c;
    if (reason != NULL)
        *reason = "ok";
    return WSQ_OK;

fail:
    if (rc == WSQ_ERR_NOMEM)
        why = "nomem";
    json_decref(hdr);
    json_decref(claims);
    wsq_jwt_claims_fini(&c);
    if (reason != NULL)
        *reason = why;
    return rc;
}

wsq_err wsq_jwt_sign(const char *claims_json, size_t len, const unsigned char *secret,
                     size_t secret_len, char **token_out)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;

    if ((claims_json == NULL && len > 0) || secret == NULL || secret_len == 0 ||
        secret_len > WSQ_JWT_SECRET_MAX || token_out == NULL)
        return WSQ_ERR_INVAL;
    if (len > WSQ_JWT_TOKEN_MAX) /* checked first so that the sizes below cannot overflow */
        return WSQ_ERR_TOO_LARGE;
    size_t h_n = WSQ_BASE64URL_ENC_LEN(sizeof(hs256_header) - 1);
    size_t p_n = WSQ_BASE64URL_ENC_LEN(len);
    size_t total = h_n + 1 + p_n + 1 + WSQ_BASE64URL_ENC_LEN(SIG_LEN);
    if (total > WSQ_JWT_TOKEN_MAX)
        return WSQ_ERR_TOO_LARGE;

    char *t = malloc(total + 1);
    if (t == NULL)
        return WSQ_ERR_NOMEM;
    size_t o = wsq_base64url_encode(hs256_header, sizeof(hs256_header) - 1, t);
    t[o++] = '.';
    o += wsq_base64url_encode(claims_json, len, t + o);
    if (HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)t, o, mac, &maclen) ==
            NULL ||
        maclen != SIG_LEN) {
        free(t);
        return WSQ_ERR_INTERNAL;
    }
    t[o++] = '.';
    o += wsq_base64url_encode(mac, SIG_LEN, t + o);
    t[o] = '\0';
    *token_out = t;
    return WSQ_OK;
}
