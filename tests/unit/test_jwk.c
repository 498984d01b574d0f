/* JWT key sets and the asymmetric algorithms (common/jwk.c): keys made by OpenSSL in the test,
 * tokens signed here with OpenSSL's EVP API, keys handed to wsq as PEM and as a JWK Set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "wsq/err.h"
#include "wsq/jwt.h"
#include "wsq/proto.h"

#define NOW ((int64_t)1700000000)
#define CLAIMS "{\"sub\":\"alice\",\"exp\":4102444800,\"wsq\":{\"sub\":[\"chat.>\"]}}"
#define ALL_ALGS ((1u << WSQ_JWT_ALG_COUNT) - 1)

/* ------------------------------------------------------------------------------------------- */
/* helpers                                                                                     */

static void b64u_to(const void *p, size_t n, char *out)
{
    out[wsq_base64url_encode(p, n, out)] = '\0';
}

static EVP_PKEY *keygen(const char *alg)
{
    EVP_PKEY *pk = NULL;
    if (strncmp(alg, "RS", 2) == 0 || strncmp(alg, "PS", 2) == 0)
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    else if (strcmp(alg, "ES256") == 0)
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    else if (strcmp(alg, "ES384") == 0)
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    else if (strcmp(alg, "EdDSA") == 0)
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(pk);
    return pk;
}

static const EVP_MD *alg_md(const char *alg)
{
    if (strcmp(alg, "EdDSA") == 0)
        return NULL;
    const char *bits = alg + 2;
    return strcmp(bits, "256") == 0   ? EVP_sha256()
           : strcmp(bits, "384") == 0 ? EVP_sha384()
                                      : EVP_sha512();
}

/* A token with header {"alg":alg[,"kid":kid]} over claims, signed with pk as alg says (or with
 * the HMAC secret when pk is NULL). The caller frees it. */
static char *mint(const char *alg, const char *kid, EVP_PKEY *pk, const unsigned char *secret,
                  size_t secret_len, const char *claims)
{
    char hdr[256];
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\"%s%s%s}", alg, kid ? ",\"kid\":\"" : "",
             kid ? kid : "", kid ? "\"" : "");
    size_t cap = 4 * (strlen(hdr) + strlen(claims)) + 2048;
    char *t = malloc(cap);
    assert_non_null(t);
    b64u_to(hdr, strlen(hdr), t);
    strcat(t, ".");
    b64u_to(claims, strlen(claims), t + strlen(t));
    size_t signed_len = strlen(t);
    unsigned char sig[1024];
    size_t sig_len = sizeof(sig);
    if (pk == NULL) {
        unsigned int ml = 0;
        assert_non_null(
            HMAC(alg_md(alg), secret, (int)secret_len, (unsigned char *)t, signed_len, sig, &ml));
        sig_len = ml;
    } else {
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pc = NULL;
        assert_int_equal(EVP_DigestSignInit(m, &pc, alg_md(alg), NULL, pk), 1);
        if (alg[0] == 'P') {
            assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING), 1);
            assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST), 1);
        }
        assert_int_equal(EVP_DigestSign(m, sig, &sig_len, (unsigned char *)t, signed_len), 1);
        EVP_MD_CTX_free(m);
        if (alg[0] == 'E' && alg[1] == 'S') { /* DER to JOSE's r || s */
            size_t coord = strcmp(alg, "ES256") == 0 ? 32 : 48;
            const unsigned char *q = sig;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)sig_len);
            assert_non_null(es);
            unsigned char raw[96];
            assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, (int)coord), (int)coord);
            assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + coord, (int)coord),
                             (int)coord);
            ECDSA_SIG_free(es);
            memcpy(sig, raw, 2 * coord);
            sig_len = 2 * coord;
        }
    }
    strcat(t, ".");
    b64u_to(sig, sig_len, t + strlen(t));
    return t;
}

/* The public key as PEM text (malloc'd, NUL-terminated). */
static char *pem_of(EVP_PKEY *pk)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(b, pk), 1);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *o = malloc((size_t)n + 1);
    memcpy(o, p, (size_t)n);
    o[n] = '\0';
    BIO_free(b);
    return o;
}

static void bn_b64(EVP_PKEY *pk, const char *name, char *out)
{
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(pk, name, &bn), 1);
    unsigned char b[1024];
    int n = BN_bn2bin(bn, b);
    BN_free(bn);
    b64u_to(b, (size_t)n, out);
}

static void bn_b64_pad(EVP_PKEY *pk, const char *name, int len, char *out)
{
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(pk, name, &bn), 1);
    unsigned char b[64];
    assert_int_equal(BN_bn2binpad(bn, b, len), len);
    BN_free(bn);
    b64u_to(b, (size_t)len, out);
}

/* One JWK (an object's text) for the public key of pk. */
static void jwk_of(EVP_PKEY *pk, const char *kid, char *out, size_t cap)
{
    char a[1500], b[1500];
    switch (EVP_PKEY_get_base_id(pk)) {
    case EVP_PKEY_RSA:
        bn_b64(pk, OSSL_PKEY_PARAM_RSA_N, a);
        bn_b64(pk, OSSL_PKEY_PARAM_RSA_E, b);
        snprintf(out, cap,
                 "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"n\":\"%s\",\"e\":\"%s\"}", kid,
                 a, b);
        break;
    case EVP_PKEY_EC: {
        int coord = EVP_PKEY_get_bits(pk) == 256 ? 32 : 48;
        bn_b64_pad(pk, OSSL_PKEY_PARAM_EC_PUB_X, coord, a);
        bn_b64_pad(pk, OSSL_PKEY_PARAM_EC_PUB_Y, coord, b);
        snprintf(out, cap,
                 "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"}", kid,
                 coord == 32 ? "P-256" : "P-384", a, b);
        break;
    }
    default: {
        unsigned char raw[32];
        size_t n = sizeof(raw);
        assert_int_equal(EVP_PKEY_get_raw_public_key(pk, raw, &n), 1);
        b64u_to(raw, n, a);
        snprintf(out, cap, "{\"kty\":\"OKP\",\"kid\":\"%s\",\"crv\":\"Ed25519\",\"x\":\"%s\"}", kid,
                 a);
    }
    }
}

static const char *verify(const char *token, const wsq_jwt_keys_t *ks, unsigned algs)
{
    wsq_jwt_claims_t c;
    const char *why = NULL;
    wsq_err rc =
        wsq_jwt_verify_keys(token, strlen(token), ks, algs, NULL, NULL, NOW, 30, NULL, &c, &why);
    if (rc == WSQ_OK)
        assert_string_equal(c.sub, "alice");
    wsq_jwt_claims_fini(&c);
    return why;
}

static wsq_jwt_keys_t *keys_jwks(const char *jwks)
{
    wsq_jwt_keys_t *ks;
    char err[256] = "";
    assert_int_equal(wsq_jwt_keys_new(&ks), WSQ_OK);
    if (wsq_jwt_keys_add_jwks(ks, jwks, strlen(jwks), err, sizeof(err)) != WSQ_OK)
        fail_msg("jwks refused: %s", err);
    return ks;
}

/* ------------------------------------------------------------------------------------------- */
/* tests                                                                                       */

/* Every asymmetric algorithm: a key as PEM and as a JWK verifies its tokens; another key of the
 * same type, a flipped signature byte and an algorithm outside the set do not. */
static void test_jwk_each_algorithm(void **state)
{
    (void)state;
    static const char *const algs[] = {"RS256", "RS384", "RS512", "PS256", "PS384",
                                       "PS512", "ES256", "ES384", "EdDSA"};
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        const char *alg = algs[i];
        unsigned bit = wsq_jwt_alg(alg);
        assert_int_not_equal(bit, 0);
        assert_string_equal(wsq_jwt_alg_name(bit), alg);
        EVP_PKEY *pk = keygen(alg), *other = keygen(alg);
        char *tok = mint(alg, NULL, pk, NULL, 0, CLAIMS);

        wsq_jwt_keys_t *ks;
        char err[256] = "";
        char *pem = pem_of(pk);
        assert_int_equal(wsq_jwt_keys_new(&ks), WSQ_OK);
        assert_int_equal(wsq_jwt_keys_add_pem(ks, NULL, pem, strlen(pem), err, sizeof(err)),
                         WSQ_OK);
        assert_string_equal(verify(tok, ks, bit), "ok");
        assert_string_equal(verify(tok, ks, ALL_ALGS & ~bit), "bad_alg");
        /* a flipped bit in the signature (its last character's: still strict base64url) */
        char *bad = strdup(tok);
        char *last = bad + strlen(bad) - 2;
        *last = *last == 'A' ? 'B' : 'A';
        assert_string_equal(verify(bad, ks, bit), "bad_signature");
        free(bad);
        wsq_jwt_keys_free(ks);
        free(pem);

        char jwk[4096], jwks[4200];
        jwk_of(pk, "k1", jwk, sizeof(jwk));
        snprintf(jwks, sizeof(jwks), "{\"keys\":[%s]}", jwk);
        ks = keys_jwks(jwks);
        assert_int_equal(wsq_jwt_keys_count(ks), 1);
        assert_string_equal(verify(tok, ks, bit), "ok");
        wsq_jwt_keys_free(ks);

        jwk_of(other, "k2", jwk, sizeof(jwk));
        snprintf(jwks, sizeof(jwks), "{\"keys\":[%s]}", jwk);
        ks = keys_jwks(jwks);
        assert_string_equal(verify(tok, ks, bit), "bad_signature");
        wsq_jwt_keys_free(ks);

        free(tok);
        EVP_PKEY_free(pk);
        EVP_PKEY_free(other);
    }
}

/* "kid" picks the key; an unknown kid is unknown_key (the cue to refetch a JWKS), a kid of
 * another key is bad_signature, and a key without a kid serves every token. */
static void test_jwk_kid_selection(void **state)
{
    (void)state;
    EVP_PKEY *a = keygen("ES256"), *b = keygen("ES256");
    char ja[1024], jb[1024], jwks[2200];
    jwk_of(a, "a", ja, sizeof(ja));
    jwk_of(b, "b", jb, sizeof(jb));
    snprintf(jwks, sizeof(jwks), "{\"keys\":[%s,%s]}", ja, jb);
    wsq_jwt_keys_t *ks = keys_jwks(jwks);
    unsigned es = WSQ_JWT_ALG(ES256);

    char *t = mint("ES256", "b", b, NULL, 0, CLAIMS);
    assert_string_equal(verify(t, ks, es), "ok");
    free(t);
    t = mint("ES256", NULL, b, NULL, 0, CLAIMS); /* no kid: every ES256 key is tried */
    assert_string_equal(verify(t, ks, es), "ok");
    free(t);
    t = mint("ES256", "c", b, NULL, 0, CLAIMS);
    assert_string_equal(verify(t, ks, es), "unknown_key");
    free(t);
    t = mint("ES256", "a", b, NULL, 0, CLAIMS);
    assert_string_equal(verify(t, ks, es), "bad_signature");
    free(t);
    /* a key without a kid (PEM) serves a token that names some kid */
    char *pem = pem_of(b);
    assert_int_equal(wsq_jwt_keys_add_pem(ks, NULL, pem, strlen(pem), NULL, 0), WSQ_OK);
    t = mint("ES256", "c", b, NULL, 0, CLAIMS);
    assert_string_equal(verify(t, ks, es), "ok");
    free(t);
    free(pem);
    /* a kid too long for the header */
    char longkid[200];
    memset(longkid, 'k', 129);
    longkid[129] = '\0';
    t = mint("ES256", longkid, b, NULL, 0, CLAIMS);
    assert_string_equal(verify(t, ks, es), "bad_header");
    free(t);
    wsq_jwt_keys_free(ks);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

/* No algorithm confusion: an HS256 token whose secret is the RSA public key's PEM text (what a
 * library that takes the algorithm from the token would accept) finds no HMAC key; a key of one
 * type never verifies another type's algorithm; "none" is never an algorithm. */
static void test_jwk_confusion(void **state)
{
    (void)state;
    EVP_PKEY *rsa = keygen("RS256"), *ec = keygen("ES256");
    char *pem = pem_of(rsa);
    wsq_jwt_keys_t *ks;
    assert_int_equal(wsq_jwt_keys_new(&ks), WSQ_OK);
    assert_int_equal(wsq_jwt_keys_add_pem(ks, NULL, pem, strlen(pem), NULL, 0), WSQ_OK);
    char *forged = mint("HS256", NULL, NULL, (unsigned char *)pem, strlen(pem), CLAIMS);
    assert_string_equal(verify(forged, ks, WSQ_JWT_ALG(RS256)), "bad_alg");
    assert_string_equal(verify(forged, ks, ALL_ALGS), "unknown_key");
    free(forged);
    /* ES256 token, RSA key only */
    char *t = mint("ES256", NULL, ec, NULL, 0, CLAIMS);
    assert_string_equal(verify(t, ks, ALL_ALGS), "unknown_key");
    free(t);
    /* an RS256 signature presented as PS256 */
    t = mint("RS256", NULL, rsa, NULL, 0, CLAIMS);
    char *dot = strchr(t, '.');
    char hdr[64];
    b64u_to("{\"alg\":\"PS256\"}", 15, hdr);
    char *swapped = malloc(strlen(t) + 64);
    sprintf(swapped, "%s%s", hdr, dot);
    assert_string_equal(verify(swapped, ks, ALL_ALGS), "bad_signature");
    free(swapped);
    free(t);
    assert_int_equal(wsq_jwt_alg("none"), 0);
    assert_int_equal(wsq_jwt_alg("rs256"), 0);
    assert_int_equal(wsq_jwt_alg(""), 0);
    wsq_jwt_keys_free(ks);
    free(pem);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
}

/* HS384/HS512 secrets from a JWK Set's "oct" keys, and the old one-secret API unchanged. */
static void test_jwk_hmac(void **state)
{
    (void)state;
    static const unsigned char sec[] = "0123456789abcdef0123456789abcdef0123456789abcdef";
    char k[128], jwks[256];
    b64u_to(sec, sizeof(sec) - 1, k);
    snprintf(jwks, sizeof(jwks), "{\"keys\":[{\"kty\":\"oct\",\"k\":\"%s\"}]}", k);
    wsq_jwt_keys_t *ks = keys_jwks(jwks);
    for (int i = 0; i < 3; i++) {
        const char *alg = i == 0 ? "HS256" : i == 1 ? "HS384" : "HS512";
        char *t = mint(alg, NULL, NULL, sec, sizeof(sec) - 1, CLAIMS);
        assert_string_equal(verify(t, ks, wsq_jwt_alg(alg)), "ok");
        wsq_jwt_claims_t c;
        const char *why;
        wsq_err rc =
            wsq_jwt_verify(t, strlen(t), sec, sizeof(sec) - 1, NULL, NULL, NOW, 30, &c, &why);
        assert_int_equal(rc, i == 0 ? WSQ_OK : WSQ_ERR_UNAUTHORIZED);
        assert_string_equal(why, i == 0 ? "ok" : "bad_alg");
        wsq_jwt_claims_fini(&c);
        free(t);
    }
    wsq_jwt_keys_free(ks);
}

static wsq_err add_jwks(const char *text, char *err, size_t cap, size_t *count)
{
    wsq_jwt_keys_t *ks;
    assert_int_equal(wsq_jwt_keys_new(&ks), WSQ_OK);
    wsq_err rc = wsq_jwt_keys_add_jwks(ks, text, strlen(text), err, cap);
    *count = wsq_jwt_keys_count(ks);
    wsq_jwt_keys_free(ks);
    return rc;
}

/* Malformed sets and keys are refused with a message naming the key; keys wsq does not verify
 * with are skipped; nothing is half-added. */
static void test_jwk_bad_sets(void **state)
{
    (void)state;
    EVP_PKEY *ec = keygen("ES256");
    char good[1024];
    jwk_of(ec, "g", good, sizeof(good));
    static const struct {
        const char *text;
        const char *msg; /* a part of the error message */
    } bad[] = {
        {"", "not JSON"},
        {"{\"keys\":{}}", "no \"keys\" array"},
        {"[]", "no \"keys\" array"},
        {"{\"keys\":[]}", "no key wsq can verify with"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\"}]}", "RSA key without"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", "RSA key shorter"},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AQAB\",\"y\":\"AQAB\"}]}",
         "P-256 key without"},
        {"{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AQAB\"}]}", "Ed25519 key"},
        {"{\"keys\":[{\"kty\":\"oct\",\"k\":\"\"}]}", "\"oct\" key without"},
        {"{\"keys\":[{\"kty\":7}]}", "is not an object"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"kid\":5}]}", "\"kid\""},
        {"{\"keys\":[{\"kty\":\"oct\",\"k\":\"AQAB\",\"kid\":\"x\",\"kid\":\"y\"}]}", "not JSON"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        size_t n;
        assert_int_equal(add_jwks(bad[i].text, err, sizeof(err), &n), WSQ_ERR_BAD_REQUEST);
        if (strstr(err, bad[i].msg) == NULL)
            fail_msg("%s: \"%s\" lacks \"%s\"", bad[i].text, err, bad[i].msg);
        assert_int_equal(n, 0);
    }
    /* a bad key after a good one: neither is added, the message names key 1 */
    char text[2048], err[256] = "";
    size_t n;
    snprintf(text, sizeof(text), "{\"keys\":[%s,{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"b\"}]}",
             good);
    assert_int_equal(add_jwks(text, err, sizeof(err), &n), WSQ_ERR_BAD_REQUEST);
    assert_non_null(strstr(err, "key 1 (kid \"b\")"));
    assert_int_equal(n, 0);
    /* skipped: an encryption key, an X25519 key, an unknown type, a P-521 key */
    snprintf(text, sizeof(text),
             "{\"keys\":[{\"kty\":\"RSA\",\"use\":\"enc\"},{\"kty\":\"OKP\",\"crv\":\"X25519\","
             "\"x\":\"AQAB\"},{\"kty\":\"XYZ\"},{\"kty\":\"EC\",\"crv\":\"P-521\"},%s]}",
             good);
    assert_int_equal(add_jwks(text, err, sizeof(err), &n), WSQ_OK);
    assert_int_equal(n, 1);
    EVP_PKEY_free(ec);
}

static void test_jwk_bad_pem(void **state)
{
    (void)state;
    EVP_PKEY *rsa = keygen("RS256");
    wsq_jwt_keys_t *ks;
    char err[256] = "";
    assert_int_equal(wsq_jwt_keys_new(&ks), WSQ_OK);
    assert_int_equal(wsq_jwt_keys_add_pem(ks, NULL, "hello", 5, err, sizeof(err)),
                     WSQ_ERR_BAD_REQUEST);
    assert_non_null(strstr(err, "no PEM block"));
    /* a private key is not taken as a verification key */
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b, rsa, NULL, NULL, 0, NULL, NULL), 1);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    assert_int_equal(wsq_jwt_keys_add_pem(ks, NULL, p, (size_t)n, err, sizeof(err)),
                     WSQ_ERR_BAD_REQUEST);
    assert_non_null(strstr(err, "PRIVATE KEY"));
    BIO_free(b);
    /* a short RSA key */
    EVP_PKEY *weak = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    char *pem = pem_of(weak);
    assert_int_equal(wsq_jwt_keys_add_pem(ks, "w", pem, strlen(pem), err, sizeof(err)),
                     WSQ_ERR_BAD_REQUEST);
    assert_non_null(strstr(err, "shorter than 2048"));
    free(pem);
    EVP_PKEY_free(weak);
    /* two keys in one text, both with the kid */
    EVP_PKEY *ec = keygen("ES384");
    char *p1 = pem_of(rsa), *p2 = pem_of(ec);
    char *both = malloc(strlen(p1) + strlen(p2) + 1);
    sprintf(both, "%s%s", p1, p2);
    assert_int_equal(wsq_jwt_keys_add_pem(ks, "two", both, strlen(both), err, sizeof(err)), WSQ_OK);
    assert_int_equal(wsq_jwt_keys_count(ks), 2);
    char *t = mint("ES384", "two", ec, NULL, 0, CLAIMS);
    assert_string_equal(verify(t, ks, WSQ_JWT_ALG(ES384)), "ok");
    free(t);
    free(both);
    free(p1);
    free(p2);
    EVP_PKEY_free(ec);
    wsq_jwt_keys_free(ks);
    EVP_PKEY_free(rsa);
}

/* A provider's own claims: the identity from another claim, roles at a path or under a
 * namespaced name, template values; with roles, "wsq" is not read. */
static void test_jwk_provider_claims(void **state)
{
    (void)state;
    static const unsigned char sec[] = "0123456789abcdef0123456789abcdef";
    wsq_jwt_keys_t *ks;
    assert_int_equal(wsq_jwt_keys_new(&ks), WSQ_OK);
    assert_int_equal(wsq_jwt_keys_add_secret(ks, NULL, sec, sizeof(sec) - 1), WSQ_OK);
    static char *vals[] = {"tenant", "sub"};
    static const wsq_strlist_t value_claims = {vals, 2};
    const wsq_jwt_opts_t kc = {"email", "realm_access.roles", &value_claims};
    const wsq_jwt_opts_t a0 = {NULL, "https://wsq.example.com/roles", NULL};
    struct {
        const wsq_jwt_opts_t *opts;
        const char *claims, *reason, *sub, *roles; /* roles: comma-joined */
    } cases[] = {
        {&kc,
         "{\"sub\":\"u1\",\"email\":\"jane@example.com\",\"tenant\":\"acme\","
         "\"realm_access\":{\"roles\":[\"reader\",7,\"writer\"]},\"wsq\":{\"admin\":true}}",
         "ok", "jane@example.com", "reader,writer"},
        {&kc, "{\"email\":\"j\",\"realm_access\":{\"roles\":\"one\"}}", "ok", "j", "one"},
        {&kc, "{\"email\":\"j\"}", "ok", "j", ""},
        {&kc, "{\"sub\":\"j\"}", "bad_claims", NULL, NULL},
        {&kc, "{\"email\":\"j\",\"realm_access\":{\"roles\":{}}}", "bad_claims", NULL, NULL},
        {&a0, "{\"sub\":\"auth0|64f1c0\",\"https://wsq.example.com/roles\":[\"admin\"]}", "ok",
         "auth0|64f1c0", "admin"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *t = mint("HS256", NULL, NULL, sec, sizeof(sec) - 1, cases[i].claims);
        wsq_jwt_claims_t c;
        const char *why = NULL;
        wsq_jwt_verify_keys(t, strlen(t), ks, WSQ_JWT_ALG(HS256), NULL, NULL, NOW, 30,
                            cases[i].opts, &c, &why);
        if (strcmp(why, cases[i].reason) != 0)
            fail_msg("case %zu: %s", i, why);
        if (cases[i].sub != NULL) {
            assert_string_equal(c.sub, cases[i].sub);
            char joined[256] = "";
            for (size_t k = 0; k < c.roles.n; k++)
                snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined), "%s%s",
                         k ? "," : "", c.roles.items[k]);
            assert_string_equal(joined, cases[i].roles);
            assert_false(c.rights.admin); /* "wsq" is not read */
        }
        if (i == 0) {
            assert_int_equal(c.values.n, 2);
            assert_string_equal(c.values.items[0], "acme");
            assert_string_equal(c.values.items[1], "u1");
        }
        wsq_jwt_claims_fini(&c);
        free(t);
    }
    wsq_jwt_keys_free(ks);
}

/* An EC coordinate with its leading zero bytes dropped (PyJWT 2.6 writes them so) is the same
 * number: taken, and the key verifies. */
static void test_jwk_short_coordinate(void **state)
{
    (void)state;
    for (int tries = 0; tries < 5000; tries++) {
        EVP_PKEY *pk = keygen("ES256");
        BIGNUM *x = NULL;
        assert_int_equal(EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_X, &x), 1);
        int nb = BN_num_bytes(x);
        BN_free(x);
        if (nb == 32) {
            EVP_PKEY_free(pk);
            continue;
        }
        char xs[64], ys[64], jwks[512];
        bn_b64(pk, OSSL_PKEY_PARAM_EC_PUB_X, xs); /* minimal bytes */
        bn_b64_pad(pk, OSSL_PKEY_PARAM_EC_PUB_Y, 32, ys);
        snprintf(jwks, sizeof(jwks),
                 "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}]}", xs,
                 ys);
        wsq_jwt_keys_t *ks = keys_jwks(jwks);
        char *t = mint("ES256", NULL, pk, NULL, 0, CLAIMS);
        assert_string_equal(verify(t, ks, WSQ_JWT_ALG(ES256)), "ok");
        free(t);
        wsq_jwt_keys_free(ks);
        EVP_PKEY_free(pk);
        return;
    }
    fail_msg("no key with a short x in 5000 tries");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jwk_each_algorithm),  cmocka_unit_test(test_jwk_kid_selection),
        cmocka_unit_test(test_jwk_confusion),       cmocka_unit_test(test_jwk_hmac),
        cmocka_unit_test(test_jwk_bad_sets),        cmocka_unit_test(test_jwk_bad_pem),
        cmocka_unit_test(test_jwk_provider_claims), cmocka_unit_test(test_jwk_short_coordinate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
