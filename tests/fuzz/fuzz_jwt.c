/*
 * libFuzzer target for the HS256 JWT verifier (common/jwt.c) and its base64url (proto/base64.c).
 *
 * The first byte selects the mode and the expectations; the rest is the input:
 *   mode % 4 == 0   the bytes are a token, verified with a fixed secret (reaches everything up to
 *                   the signature: splitting, base64url, header JSON, alg/typ/crit);
 *   mode % 4 == 1   the same, and the bytes also go through the base64url decoder alone, which
 *                   must be canonical: whatever it accepts re-encodes to the same characters;
 *   mode % 4 == 2   the bytes are claims JSON, signed with the fixed secret by wsq_jwt_sign and
 *                   verified, so the claims parser is reached; the signature must check out;
 *   mode % 4 == 3   the bytes are "<header JSON>\0<claims JSON>", encoded and signed here, so
 *                   header and claims parsing both run behind a valid signature.
 *   with bit 2 set, mode % 4 picks instead: 0 the bytes are a JWK Set for wsq_jwt_keys_add_jwks,
 *                   1 PEM text for wsq_jwt_keys_add_pem (all or nothing is added, an error has a
 *                   message), 2 a token verified with wsq_jwt_verify_keys against a set of an
 *                   HMAC secret, an EC P-256 and an Ed25519 key with every algorithm allowed.
 *   bit 4 expects an issuer, bit 5 an audience, bit 6 gives 60 s of leeway, bit 7 moves "now".
 *
 * Every result is checked for consistency: the return code agrees with the reason, the reason is
 * one of WSQ_JWT_REASON_LIST, and accepted claims hold a valid "sub" and valid patterns.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude common/jwt.c common/topic.c
 *        proto/base64.c tests/fuzz/fuzz_jwt.c $(pkg-config --cflags --libs jansson libcrypto)
 * Run:   ./fuzz_jwt -max_total_time=600 tests/fuzz/corpus/jwt
 */
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsq/jwt.h"
#include "wsq/topic.h"

#define SECRET "wsq-fuzz-secret"
#define SECRET_LEN (sizeof(SECRET) - 1)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* abort() rather than assert(): the check must stay in every build */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static bool known_reason(const char *why)
{
#define CODE(code, meaning) code,
    static const char *const codes[] = {WSQ_JWT_REASON_LIST(CODE)};
#undef CODE
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strcmp(why, codes[i]) == 0)
            return true;
    return false;
}

static void check_list(const wsq_strlist_t *l)
{
    REQUIRE(l->n <= WSQ_JWT_PATTERNS_MAX);
    REQUIRE((l->n == 0) == (l->items == NULL));
    for (size_t i = 0; i < l->n; i++)
        REQUIRE(wsq_topic_pattern_valid(l->items[i], strlen(l->items[i])));
}

/* Verifies and checks the outcome; returns the reason. */
static const char *verify(const char *tok, size_t len, uint8_t mode)
{
    wsq_jwt_claims_t c;
    const char *why = NULL;
    int64_t now = (mode & 0x80) ? 4102444800 : 1700000000;
    wsq_err rc = wsq_jwt_verify(
        tok, len, (const unsigned char *)SECRET, SECRET_LEN, (mode & 0x10) ? "fuzz-iss" : NULL,
        (mode & 0x20) ? "fuzz-aud" : NULL, now, (mode & 0x40) ? 60 : 0, &c, &why);
    REQUIRE(why != NULL && (strcmp(why, "ok") == 0 || known_reason(why)));
    if (rc == WSQ_OK) {
        REQUIRE(strcmp(why, "ok") == 0);
        size_t n = strlen(c.sub);
        REQUIRE(n >= 1 && n <= WSQ_JWT_SUB_MAX);
        REQUIRE(c.exp == 0 || c.exp > now - ((mode & 0x40) ? 60 : 0));
        check_list(&c.rights.publish);
        check_list(&c.rights.subscribe);
    } else {
        REQUIRE(rc == WSQ_ERR_UNAUTHORIZED || rc == WSQ_ERR_NOMEM);
        REQUIRE(strcmp(why, "ok") != 0);
        REQUIRE(c.sub[0] == '\0' && c.rights.publish.items == NULL &&
                c.rights.subscribe.items == NULL);
    }
    wsq_jwt_claims_fini(&c);
    return why;
}

static void b64url_canonical(const uint8_t *data, size_t size)
{
    unsigned char *dec = malloc(WSQ__B64URL_DECODED_MAX(size));
    size_t n = 0;
    REQUIRE(dec != NULL);
    if (wsq__b64url_decode((const char *)data, size, dec, &n) == WSQ_OK) {
        REQUIRE(n <= WSQ__B64URL_DECODED_MAX(size));
        char *enc = malloc(WSQ__B64URL_ENCODED_LEN(n) + 1);
        REQUIRE(enc != NULL);
        size_t m = wsq__b64url_encode(dec, n, enc);
        REQUIRE(m == size && memcmp(enc, data, size) == 0);
        free(enc);
    }
    free(dec);
}

/* "<header>\0<claims>" -> b64url(header).b64url(claims).HMAC, signed with the fixed secret. */
static void header_and_claims(const uint8_t *data, size_t size, uint8_t mode)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t h_len = nul ? (size_t)(nul - data) : size;
    const uint8_t *claims = nul ? nul + 1 : data + size;
    size_t c_len = nul ? size - h_len - 1 : 0;
    size_t cap = WSQ__B64URL_ENCODED_LEN(h_len) + 1 + WSQ__B64URL_ENCODED_LEN(c_len) + 1 +
                 WSQ__B64URL_ENCODED_LEN(32);
    char *tok = malloc(cap);
    REQUIRE(tok != NULL);
    size_t o = wsq__b64url_encode(data, h_len, tok);
    tok[o++] = '.';
    o += wsq__b64url_encode(claims, c_len, tok + o);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    REQUIRE(HMAC(EVP_sha256(), SECRET, (int)SECRET_LEN, (unsigned char *)tok, o, mac, &maclen) !=
                NULL &&
            maclen == 32);
    tok[o++] = '.';
    o += wsq__b64url_encode(mac, maclen, tok + o);
    REQUIRE(o == cap);
    const char *why = verify(tok, o, mode);
    /* authentic: a refusal is never about the signature */
    REQUIRE(strcmp(why, "bad_signature") != 0);
    free(tok);
}

/* A key set parser: all keys or none, and a message on every refusal. */
static void keys_parse(const uint8_t *data, size_t size, bool pem)
{
    wsq_jwt_keys_t *ks;
    REQUIRE(wsq_jwt_keys_new(&ks) == WSQ_OK);
    char err[256] = "";
    wsq_err rc = pem ? wsq_jwt_keys_add_pem(ks, "k", data, size, err, sizeof(err))
                     : wsq_jwt_keys_add_jwks(ks, data, size, err, sizeof(err));
    if (rc == WSQ_OK)
        REQUIRE(wsq_jwt_keys_count(ks) >= 1);
    else
        REQUIRE(wsq_jwt_keys_count(ks) == 0 &&
                (rc == WSQ_ERR_NOMEM || (rc == WSQ_ERR_BAD_REQUEST && err[0] != '\0')));
    wsq_jwt_keys_free(ks);
}

/* Every algorithm, three key types: the header's alg and kid paths and each verifier. */
static void verify_keyset(const uint8_t *data, size_t size)
{
    static wsq_jwt_keys_t *ks;
    if (ks == NULL) {
        REQUIRE(wsq_jwt_keys_new(&ks) == WSQ_OK);
        REQUIRE(wsq_jwt_keys_add_secret(ks, "h", (const unsigned char *)SECRET, SECRET_LEN) ==
                WSQ_OK);
        const char *types[] = {"EC", "ED25519"};
        for (int i = 0; i < 2; i++) {
            EVP_PKEY *pk = i == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, types[i], "P-256")
                                  : EVP_PKEY_Q_keygen(NULL, NULL, types[i]);
            REQUIRE(pk != NULL);
            BIO *b = BIO_new(BIO_s_mem());
            REQUIRE(b && PEM_write_bio_PUBKEY(b, pk) == 1);
            char *p;
            long n = BIO_get_mem_data(b, &p);
            REQUIRE(wsq_jwt_keys_add_pem(ks, i == 0 ? "e" : NULL, p, (size_t)n, NULL, 0) == WSQ_OK);
            BIO_free(b);
            EVP_PKEY_free(pk);
        }
    }
    wsq_jwt_claims_t c;
    const char *why = NULL;
    /* odd lengths: a provider's claims (identity "uid", roles at a path, a template value) */
    static char *vals[] = {"tenant", "a.b"};
    static const wsq_strlist_t value_claims = {vals, 2};
    static const wsq_jwt_opts_t opts = {"uid", "realm_access.roles", &value_claims};
    wsq_err rc = wsq_jwt_verify_keys((const char *)data, size, ks, (1u << WSQ_JWT_ALG_COUNT) - 1,
                                     NULL, NULL, 1700000000, 0, size % 2 ? &opts : NULL, &c, &why);
    if (rc == WSQ_OK && size % 2)
        REQUIRE(c.values.n == 2 && c.rights.publish.n == 0 && c.rights.subscribe.n == 0);
    REQUIRE(why != NULL && (strcmp(why, "ok") == 0 || known_reason(why)));
    REQUIRE((rc == WSQ_OK) == (strcmp(why, "ok") == 0));
    REQUIRE(rc == WSQ_OK || rc == WSQ_ERR_UNAUTHORIZED || rc == WSQ_ERR_NOMEM);
    wsq_jwt_claims_fini(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;

    if (mode & 4) {
        if (mode % 4 == 0)
            keys_parse(data, size, false);
        else if (mode % 4 == 1)
            keys_parse(data, size, true);
        else
            verify_keyset(data, size);
        return 0;
    }

    switch (mode % 4) {
    case 0:
        verify((const char *)data, size, mode);
        break;
    case 1:
        b64url_canonical(data, size);
        verify((const char *)data, size, mode);
        break;
    case 2: {
        char *tok = NULL;
        wsq_err rc =
            wsq_jwt_sign((const char *)data, size, (const unsigned char *)SECRET, SECRET_LEN, &tok);
        if (rc == WSQ_ERR_TOO_LARGE)
            break;
        REQUIRE(rc == WSQ_OK);
        const char *why = verify(tok, strlen(tok), mode);
        /* our own header and signature are always accepted */
        REQUIRE(strcmp(why, "bad_signature") != 0 && strcmp(why, "bad_alg") != 0 &&
                strcmp(why, "bad_header") != 0);
        free(tok);
        break;
    }
    case 3:
        header_and_claims(data, size, mode);
        break;
    }
    return 0;
}
