/*
 * JWT verification keys: key sets from secrets, PEM text and JWK Sets, and the signature check
 * of every algorithm wsq accepts (RFC 7518 section 3, RFC 8037), with OpenSSL 3's EVP API.
 */
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwk.h"
#include "wsq/proto.h"

#define RSA_MIN_BITS 2048
#define JWK_FIELD_MAX 1024 /* decoded bytes of one key parameter (RSA n of 8192 bits) */

/* ------------------------------------------------------------------------------------------- */
/* Algorithms */

static const char *const alg_names[WSQ_JWT_ALG_COUNT] = {
#define WSQ_JWT_ALG_NAME(id, name) name,
    WSQ_JWT_ALG_LIST(WSQ_JWT_ALG_NAME)
#undef WSQ_JWT_ALG_NAME
};

unsigned wsq_jwt_alg(const char *name)
{
    for (unsigned i = 0; name != NULL && i < WSQ_JWT_ALG_COUNT; i++)
        if (strcmp(name, alg_names[i]) == 0)
            return 1u << i;
    return 0;
}

const char *wsq_jwt_alg_name(unsigned bit)
{
    for (unsigned i = 0; i < WSQ_JWT_ALG_COUNT; i++)
        if (bit == 1u << i)
            return alg_names[i];
    return NULL;
}

/* The key type and digest of an algorithm bit. */
static kty_t alg_kty(unsigned alg, const EVP_MD **md)
{
    *md = NULL;
    switch (alg) {
    case WSQ_JWT_ALG(HS256):
        *md = EVP_sha256();
        return KTY_OCT;
    case WSQ_JWT_ALG(HS384):
        *md = EVP_sha384();
        return KTY_OCT;
    case WSQ_JWT_ALG(HS512):
        *md = EVP_sha512();
        return KTY_OCT;
    case WSQ_JWT_ALG(RS256):
    case WSQ_JWT_ALG(PS256):
        *md = EVP_sha256();
        return KTY_RSA;
    case WSQ_JWT_ALG(RS384):
    case WSQ_JWT_ALG(PS384):
        *md = EVP_sha384();
        return KTY_RSA;
    case WSQ_JWT_ALG(RS512):
    case WSQ_JWT_ALG(PS512):
        *md = EVP_sha512();
        return KTY_RSA;
    case WSQ_JWT_ALG(ES256):
        *md = EVP_sha256();
        return KTY_EC256;
    case WSQ_JWT_ALG(ES384):
        *md = EVP_sha384();
        return KTY_EC384;
    case WSQ_JWT_ALG(EDDSA):
        return KTY_ED25519;
    default:
        return 0;
    }
}

/* ------------------------------------------------------------------------------------------- */
/* Key sets */

static void key_fini(jwk_t *k)
{
    EVP_PKEY_free(k->pk);
    if (k->secret) {
        OPENSSL_cleanse(k->secret, k->secret_len);
        free(k->secret);
    }
    memset(k, 0, sizeof(*k));
}

wsq_err wsq_jwt_keys_new(wsq_jwt_keys_t **out)
{
    *out = calloc(1, sizeof(**out));
    return *out ? WSQ_OK : WSQ_ERR_NOMEM;
}

void wsq_jwt_keys_free(wsq_jwt_keys_t *ks)
{
    if (ks == NULL || ks->borrowed)
        return;
    for (size_t i = 0; i < ks->n; i++)
        key_fini(&ks->v[i]);
    free(ks->v);
    free(ks);
}

size_t wsq_jwt_keys_count(const wsq_jwt_keys_t *ks)
{
    return ks ? ks->n : 0;
}

bool wsq_jwt_keys_serve(const wsq_jwt_keys_t *ks, unsigned alg)
{
    const EVP_MD *md;
    kty_t t = alg_kty(alg, &md);
    for (size_t i = 0; ks != NULL && t != 0 && i < ks->n; i++)
        if (ks->v[i].kty == t)
            return true;
    return false;
}

/* Room for more keys (all of one call are added, or none). */
static wsq_err keys_reserve(wsq_jwt_keys_t *ks, size_t more)
{
    if (ks->n + more <= ks->cap)
        return WSQ_OK;
    size_t cap = ks->cap ? ks->cap : 4;
    while (cap < ks->n + more)
        cap *= 2;
    jwk_t *v = realloc(ks->v, cap * sizeof(*v));
    if (v == NULL)
        return WSQ_ERR_NOMEM;
    ks->v = v;
    ks->cap = cap;
    return WSQ_OK;
}

static bool set_kid(jwk_t *k, const char *kid)
{
    size_t n = kid ? strlen(kid) : 0;
    if (n > WSQ_JWT_KID_MAX)
        return false;
    memcpy(k->kid, kid ? kid : "", n);
    k->kid[n] = '\0';
    return true;
}

wsq_err wsq_jwt_keys_add_secret(wsq_jwt_keys_t *ks, const char *kid, const unsigned char *secret,
                                size_t len)
{
    if (ks == NULL || secret == NULL || len == 0 || len > WSQ_JWT_SECRET_MAX)
        return WSQ_ERR_INVAL;
    jwk_t k = {.kty = KTY_OCT};
    if (!set_kid(&k, kid))
        return WSQ_ERR_INVAL;
    if (keys_reserve(ks, 1) != WSQ_OK || (k.secret = malloc(len)) == NULL)
        return WSQ_ERR_NOMEM;
    memcpy(k.secret, secret, len);
    k.secret_len = len;
    ks->v[ks->n++] = k;
    return WSQ_OK;
}

static wsq_err errf(char *err, size_t cap, const char *fmt, ...)
{
    if (err && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return WSQ_ERR_BAD_REQUEST;
}

/* The key type of a public key, or 0 (unsupported: another type, curve, or RSA too short). */
static kty_t pkey_kty(EVP_PKEY *pk, const char **why)
{
    *why = "an unsupported key type (RSA, EC P-256/P-384 and Ed25519 are)";
    switch (EVP_PKEY_get_base_id(pk)) {
    case EVP_PKEY_RSA:
        if (EVP_PKEY_get_bits(pk) < RSA_MIN_BITS) {
            *why = "an RSA key shorter than 2048 bits";
            return 0;
        }
        return KTY_RSA;
    case EVP_PKEY_EC: {
        char group[32] = "";
        if (!EVP_PKEY_get_group_name(pk, group, sizeof(group), NULL))
            return 0;
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
            return KTY_EC256;
        if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
            return KTY_EC384;
        *why = "an EC key on a curve other than P-256 and P-384";
        return 0;
    }
    case EVP_PKEY_ED25519:
        return KTY_ED25519;
    default:
        return 0;
    }
}

wsq_err wsq_jwt_keys_add_pem(wsq_jwt_keys_t *ks, const char *kid, const void *pem, size_t len,
                             char *err, size_t cap)
{
    if (ks == NULL || pem == NULL || len > INT32_MAX)
        return WSQ_ERR_INVAL;
    jwk_t tmp = {0};
    if (!set_kid(&tmp, kid))
        return errf(err, cap, "kid longer than %d bytes", WSQ_JWT_KID_MAX);
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL)
        return WSQ_ERR_NOMEM;
    size_t first = ks->n;
    wsq_err rc = WSQ_OK;
    for (int nblock = 1;; nblock++) {
        char *name = NULL, *header = NULL;
        unsigned char *data = NULL;
        long dlen = 0;
        ERR_clear_error();
        if (!PEM_read_bio(bio, &name, &header, &data, &dlen)) {
            ERR_clear_error(); /* the end of the text (or garbage after the last block) */
            break;
        }
        EVP_PKEY *pk = NULL;
        const unsigned char *q = data;
        if (strcmp(name, "PUBLIC KEY") == 0) {
            pk = d2i_PUBKEY(NULL, &q, dlen);
        } else if (strcmp(name, "CERTIFICATE") == 0) {
            X509 *x = d2i_X509(NULL, &q, dlen);
            pk = x ? X509_get_pubkey(x) : NULL;
            X509_free(x);
        } else {
            rc = errf(err, cap, "PEM block %d is a \"%s\", not a PUBLIC KEY or CERTIFICATE", nblock,
                      name);
        }
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
        if (rc != WSQ_OK)
            break;
        const char *why;
        kty_t t = pk ? pkey_kty(pk, &why) : 0;
        if (pk == NULL)
            rc = errf(err, cap, "PEM block %d does not decode", nblock);
        else if (t == 0)
            rc = errf(err, cap, "PEM block %d holds %s", nblock, why);
        else if (keys_reserve(ks, 1) != WSQ_OK)
            rc = WSQ_ERR_NOMEM;
        if (rc != WSQ_OK) {
            EVP_PKEY_free(pk);
            break;
        }
        jwk_t k = {.kty = t, .pk = pk};
        memcpy(k.kid, tmp.kid, sizeof(k.kid));
        ks->v[ks->n++] = k;
    }
    BIO_free(bio);
    if (rc == WSQ_OK && ks->n == first)
        rc = errf(err, cap, "no PEM block (\"-----BEGIN PUBLIC KEY-----\") found");
    if (rc != WSQ_OK)
        while (ks->n > first)
            key_fini(&ks->v[--ks->n]);
    return rc;
}

/* ------------------------------------------------------------------------------------------- */
/* JWK Sets */

/* Decodes the base64url string member name of key (1..max bytes) into out. */
static bool b64_member(const json_t *key, const char *name, unsigned char *out, size_t max,
                       size_t *outlen)
{
    const json_t *v = json_object_get(key, name);
    if (!json_is_string(v))
        return false;
    size_t n = json_string_length(v);
    if (n == 0 || WSQ_BASE64URL_DEC_MAX(n) > max)
        return false;
    return wsq_base64url_decode(json_string_value(v), n, out, outlen) == WSQ_OK && *outlen > 0;
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pk = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1 &&
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pk = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pk;
}

static EVP_PKEY *jwk_rsa(const json_t *key)
{
    unsigned char n[JWK_FIELD_MAX], e[16];
    size_t nl, el;
    if (!b64_member(key, "n", n, sizeof(n), &nl) || !b64_member(key, "e", e, sizeof(e), &el))
        return NULL;
    BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pk = NULL;
    if (bn && be && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
        pk = pkey_fromdata("RSA", bld);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    return pk;
}

static EVP_PKEY *jwk_ec(const json_t *key, size_t coord, const char *group)
{
    unsigned char pub[1 + 2 * 48], x[64], y[64];
    size_t xl, yl;
    /* RFC 7518 asks for the full length; some libraries (PyJWT 2.6) drop leading zero bytes,
     * which leaves the same number: pad them back */
    if (!b64_member(key, "x", x, sizeof(x), &xl) || !b64_member(key, "y", y, sizeof(y), &yl) ||
        xl > coord || yl > coord)
        return NULL;
    memset(pub, 0, sizeof(pub));
    pub[0] = 0x04; /* uncompressed point */
    memcpy(pub + 1 + coord - xl, x, xl);
    memcpy(pub + 1 + 2 * coord - yl, y, yl);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pk = NULL;
    if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 1 + 2 * coord))
        pk = pkey_fromdata("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    return pk;
}

/* One member of "keys": added to ks (true), skipped (true, *skipped set), or refused (false,
 * *why says how). */
static bool jwk_one(wsq_jwt_keys_t *ks, const json_t *key, bool *skipped, const char **why,
                    wsq_err *rc)
{
    *skipped = false;
    *why = "is not an object with a string \"kty\"";
    const json_t *kty = json_object_get(key, "kty");
    if (!json_is_object(key) || !json_is_string(kty))
        return false;
    const json_t *use = json_object_get(key, "use"), *kid = json_object_get(key, "kid");
    const char *crv = json_string_value(json_object_get(key, "crv"));
    const char *t = json_string_value(kty);
    jwk_t k = {0};
    *why = "has a \"kid\" that is not a string of at most 128 bytes";
    if (kid != NULL && (!json_is_string(kid) || !set_kid(&k, json_string_value(kid))))
        return false;
    if (use != NULL && !(json_is_string(use) && strcmp(json_string_value(use), "sig") == 0)) {
        *skipped = true; /* an encryption key */
        return true;
    }
    if (strcmp(t, "RSA") == 0) {
        *why = "is an RSA key without a valid \"n\" and \"e\"";
        if ((k.pk = jwk_rsa(key)) == NULL)
            return false;
    } else if (strcmp(t, "EC") == 0 && crv && strcmp(crv, "P-256") == 0) {
        *why = "is a P-256 key without a valid \"x\" and \"y\" (32 bytes each)";
        if ((k.pk = jwk_ec(key, 32, "P-256")) == NULL)
            return false;
    } else if (strcmp(t, "EC") == 0 && crv && strcmp(crv, "P-384") == 0) {
        *why = "is a P-384 key without a valid \"x\" and \"y\" (48 bytes each)";
        if ((k.pk = jwk_ec(key, 48, "P-384")) == NULL)
            return false;
    } else if (strcmp(t, "OKP") == 0 && crv && strcmp(crv, "Ed25519") == 0) {
        unsigned char x[64];
        size_t xl;
        *why = "is an Ed25519 key without a valid 32-byte \"x\"";
        if (!b64_member(key, "x", x, sizeof(x), &xl) || xl != 32 ||
            (k.pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, 32)) == NULL)
            return false;
    } else if (strcmp(t, "oct") == 0) {
        unsigned char *sec = malloc(WSQ_JWT_SECRET_MAX);
        size_t sl;
        *why = "is an \"oct\" key without a valid \"k\"";
        if (sec == NULL) {
            *rc = WSQ_ERR_NOMEM;
            return false;
        }
        if (!b64_member(key, "k", sec, WSQ_JWT_SECRET_MAX, &sl)) {
            free(sec);
            return false;
        }
        k.secret = sec;
        k.secret_len = sl;
    } else {
        *skipped = true; /* a type or curve wsq does not verify with */
        return true;
    }
    const char *w2 = NULL;
    k.kty = k.pk ? pkey_kty(k.pk, &w2) : KTY_OCT;
    if (k.kty == 0) {
        *why = w2;
        key_fini(&k);
        return false;
    }
    if (keys_reserve(ks, 1) != WSQ_OK) {
        key_fini(&k);
        *rc = WSQ_ERR_NOMEM;
        return false;
    }
    ks->v[ks->n++] = k;
    return true;
}

wsq_err wsq_jwt_keys_add_jwks(wsq_jwt_keys_t *ks, const void *json, size_t len, char *err,
                              size_t cap)
{
    if (ks == NULL || json == NULL)
        return WSQ_ERR_INVAL;
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return json_error_code(&jerr) == json_error_out_of_memory
                   ? WSQ_ERR_NOMEM
                   : errf(err, cap, "not JSON: line %d column %d: %s", jerr.line, jerr.column,
                          jerr.text);
    const json_t *keys = json_object_get(root, "keys");
    wsq_err rc = WSQ_OK;
    size_t first = ks->n;
    if (!json_is_array(keys)) {
        rc = errf(err, cap, "not a JWK Set: no \"keys\" array");
    } else {
        for (size_t i = 0; i < json_array_size(keys); i++) {
            const json_t *key = json_array_get(keys, i);
            bool skipped;
            const char *why;
            if (!jwk_one(ks, key, &skipped, &why, &rc)) {
                if (rc == WSQ_OK) {
                    const char *kid = json_string_value(json_object_get(key, "kid"));
                    rc = errf(err, cap, "key %zu%s%.64s%s %s", i, kid ? " (kid \"" : "",
                              kid ? kid : "", kid ? "\")" : "", why);
                }
                break;
            }
        }
        if (rc == WSQ_OK && ks->n == first)
            rc = errf(err, cap, "no key wsq can verify with (RSA, EC P-256/P-384, Ed25519, oct)");
    }
    if (rc != WSQ_OK)
        while (ks->n > first)
            key_fini(&ks->v[--ks->n]);
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------------------------------------------- */
/* Signatures */

/* JOSE's r || s (2 * coord bytes) as the DER an EVP verifier takes; its length, 0 on failure. */
static size_t ecdsa_der(const unsigned char *sig, size_t coord, unsigned char *der, size_t cap)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)coord, NULL), *s = BN_bin2bn(sig + coord, (int)coord, NULL);
    size_t n = 0;
    if (es && r && s && ECDSA_SIG_set0(es, r, s) == 1) {
        r = s = NULL; /* es owns them */
        int len = i2d_ECDSA_SIG(es, NULL);
        if (len > 0 && (size_t)len <= cap) {
            unsigned char *p = der;
            n = (size_t)i2d_ECDSA_SIG(es, &p);
        }
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return n;
}

/* "ok", "bad_signature", "nomem" or "internal" for one key. */
static const char *verify_one(const jwk_t *k, unsigned alg, const EVP_MD *md,
                              const unsigned char *data, size_t len, const unsigned char *sig,
                              size_t sig_len)
{
    if (k->kty == KTY_OCT) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int maclen = 0;
        if (HMAC(md, k->secret, (int)k->secret_len, data, len, mac, &maclen) == NULL)
            return "internal";
        return sig_len == maclen && CRYPTO_memcmp(mac, sig, maclen) == 0 ? "ok" : "bad_signature";
    }
    unsigned char der[160];
    if (k->kty == KTY_EC256 || k->kty == KTY_EC384) {
        size_t coord = k->kty == KTY_EC256 ? 32 : 48;
        if (sig_len != 2 * coord)
            return "bad_signature";
        if ((sig_len = ecdsa_der(sig, coord, der, sizeof(der))) == 0)
            return "bad_signature";
        sig = der;
    }
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    if (mctx == NULL)
        return "nomem";
    const char *r = "internal";
    if (EVP_DigestVerifyInit(mctx, &pctx, md, NULL, k->pk) == 1) {
        bool pss =
            alg == WSQ_JWT_ALG(PS256) || alg == WSQ_JWT_ALG(PS384) || alg == WSQ_JWT_ALG(PS512);
        if (pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))
            goto out;
        r = EVP_DigestVerify(mctx, sig, sig_len, data, len) == 1 ? "ok" : "bad_signature";
    }
out:
    ERR_clear_error(); /* a failed verification leaves errors on this thread's queue */
    EVP_MD_CTX_free(mctx);
    return r;
}

const char *wsq__jwt_sig_check(const struct wsq_jwt_keys *ks, unsigned alg, const char *kid,
                               const unsigned char *data, size_t len, const unsigned char *sig,
                               size_t sig_len)
{
    const EVP_MD *md;
    kty_t t = alg_kty(alg, &md);
    const char *r = "unknown_key";
    for (size_t i = 0; t != 0 && i < ks->n; i++) {
        const jwk_t *k = &ks->v[i];
        /* a key without a kid serves any token; a key with one, tokens naming it or none */
        if (k->kty != t || (kid != NULL && k->kid[0] != '\0' && strcmp(k->kid, kid) != 0))
            continue;
        r = verify_one(k, alg, md, data, len, sig, sig_len);
        if (strcmp(r, "bad_signature") != 0)
            return r; /* ok, or a failure of ours */
    }
    return r;
}
