/* HS256 JWT verification (broker/jwt.c): every refusal path with its exact error and reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "wsq/err.h"
#include "wsq/jwt.h"

#define SECRET "wsq-test-secret-0123456789abcdef"
#define SECRET_LEN (sizeof(SECRET) - 1)
#define NOW ((int64_t)1700000000)
#define HS256_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* Computed on the command line, independently of this code:
 *   b64u() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
 *   H=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64u)
 *   P=$(printf '%s' "$OPENSSL_CLAIMS" | b64u)
 *   S=$(printf '%s' "$H.$P" | openssl dgst -sha256 -hmac "$SECRET" -binary | b64u)
 *   echo "$H.$P.$S" */
#define OPENSSL_CLAIMS                                                                             \
    "{\"sub\":\"alice\",\"iss\":\"wsq-issuer\",\"aud\":\"wsqd\",\"exp\":4102444800,\"wsq\":{"      \
    "\"pub\":[\"chat.>\"],\"sub\":[\"chat.*\",\"news\"],\"admin\":true}}"
#define OPENSSL_TOKEN                                                                              \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."                                                        \
    "eyJzdWIiOiJhbGljZSIsImlzcyI6IndzcS1pc3N1ZXIiLCJhdWQiOiJ3c3FkIiwiZXhwIjo0MTAyNDQ0ODAwLCJ3c3Ei" \
    "OnsicHViIjpbImNoYXQuPiJdLCJzdWIiOlsiY2hhdC4qIiwibmV3cyJdLCJhZG1pbiI6dHJ1ZX19."                \
    "RmKV30rG_rzVI_v2Nhtpudpb5cvSZadoDu0XtIKV3sg"

/* ------------------------------------------------------------------------------------------- */
/* helpers                                                                                     */

static char *b64u(const char *s, size_t n)
{
    char *o = malloc(WSQ__B64URL_ENCODED_LEN(n) + 1);
    assert_non_null(o);
    o[wsq__b64url_encode((const unsigned char *)s, n, o)] = '\0';
    return o;
}

/* b64url(header).b64url(payload).b64url(HMAC-md(key, ...)); md NULL = the given raw signature
 * part instead. Any header: this is how the tests forge what wsq_jwt_sign never writes. */
static char *mint_raw(const char *header, const char *payload, size_t payload_len,
                      const unsigned char *key, size_t key_len, const EVP_MD *md)
{
    char *h = b64u(header, strlen(header));
    char *p = b64u(payload, payload_len);
    size_t hp = strlen(h) + 1 + strlen(p);
    char *t = malloc(hp + 1 + WSQ__B64URL_ENCODED_LEN(EVP_MAX_MD_SIZE) + 1);
    assert_non_null(t);
    strcpy(t, h);
    strcat(t, ".");
    strcat(t, p);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    assert_non_null(HMAC(md, key, (int)key_len, (unsigned char *)t, hp, mac, &maclen));
    t[hp] = '.';
    t[hp + 1 + wsq__b64url_encode(mac, maclen, t + hp + 1)] = '\0';
    free(h);
    free(p);
    return t;
}

static char *mint_hdr(const char *header, const char *payload)
{
    return mint_raw(header, payload, strlen(payload), (const unsigned char *)SECRET, SECRET_LEN,
                    EVP_sha256());
}

/* Signs payload with SECRET into *t (free it). The caller owns the slot that wsq_jwt_sign writes
 * through: a slot local to mint() would end when mint() is inlined, and GCC cannot tell that the
 * token does not point into it (-Wdangling-pointer at -O3). */
static void mint(const char *payload, char **t)
{
    *t = NULL;
    wsq_err rc =
        wsq_jwt_sign(payload, strlen(payload), (const unsigned char *)SECRET, SECRET_LEN, t);
    assert_int_equal(rc, WSQ_OK);
    assert_non_null(*t);
}

/* Verifies tok[0..len) and returns the reason ("ok" on success), after checking that the error
 * code agrees with it. */
static const char *reason_n(const char *tok, size_t len, const char *issuer, const char *audience,
                            int64_t now, int64_t leeway)
{
    wsq_jwt_claims_t c;
    const char *why = NULL;
    wsq_err rc = wsq_jwt_verify(tok, len, (const unsigned char *)SECRET, SECRET_LEN, issuer,
                                audience, now, leeway, &c, &why);
    assert_non_null(why);
    assert_int_equal(rc, strcmp(why, "ok") == 0 ? WSQ_OK : WSQ_ERR_UNAUTHORIZED);
    if (rc != WSQ_OK) { /* out is zeroed on failure */
        assert_int_equal(c.rights.publish.n, 0);
        assert_null(c.rights.publish.items);
        assert_int_equal(c.sub[0], '\0');
    }
    wsq_jwt_claims_fini(&c);
    return why;
}

static const char *token_reason(const char *tok)
{
    return reason_n(tok, strlen(tok), NULL, NULL, NOW, 0);
}

/* Signs payload with wsq_jwt_sign, verifies it with the given expectations, frees it. */
static const char *claims_reason_at(const char *payload, const char *issuer, const char *audience,
                                    int64_t now, int64_t leeway)
{
    static char why[32];
    char *t;
    mint(payload, &t);
    snprintf(why, sizeof(why), "%s", reason_n(t, strlen(t), issuer, audience, now, leeway));
    free(t);
    return why;
}

static const char *claims_reason(const char *payload)
{
    return claims_reason_at(payload, NULL, NULL, NOW, 0);
}

/* Forges with a custom header, verifies with defaults, frees. */
static const char *header_reason(const char *header, const char *payload)
{
    static char why[32];
    char *t = mint_hdr(header, payload);
    snprintf(why, sizeof(why), "%s", token_reason(t));
    free(t);
    return why;
}

/* ------------------------------------------------------------------------------------------- */
/* base64url                                                                                   */

static wsq_err decode(const char *s, unsigned char *out, size_t *n)
{
    return wsq__b64url_decode(s, strlen(s), out, n);
}

static void test_jwt_b64url_vectors(void **state)
{
    (void)state;
    /* RFC 4648 section 10, in the URL-safe alphabet without padding */
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const enc[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    unsigned char buf[16];
    char out[16];
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        size_t n = 99;
        assert_int_equal(decode(enc[i], buf, &n), WSQ_OK);
        assert_int_equal(n, strlen(plain[i]));
        assert_memory_equal(buf, plain[i], n);
        size_t m = wsq__b64url_encode((const unsigned char *)plain[i], strlen(plain[i]), out);
        assert_int_equal(m, strlen(enc[i]));
        assert_int_equal(m, WSQ__B64URL_ENCODED_LEN(strlen(plain[i])));
        assert_memory_equal(out, enc[i], m);
    }
    /* the two characters that differ from standard base64: 0xfb 0xff -> "-_8" */
    size_t n = 0;
    assert_int_equal(decode("-_8", buf, &n), WSQ_OK);
    assert_int_equal(n, 2);
    assert_int_equal(buf[0], 0xfb);
    assert_int_equal(buf[1], 0xff);
}

static void test_jwt_b64url_strict(void **state)
{
    (void)state;
    unsigned char buf[16];
    size_t n = 0;
    assert_int_equal(decode("Zg==", buf, &n), WSQ_ERR_INVAL);   /* padding */
    assert_int_equal(decode("Zm8=", buf, &n), WSQ_ERR_INVAL);   /* padding */
    assert_int_equal(decode("+_8", buf, &n), WSQ_ERR_INVAL);    /* standard alphabet */
    assert_int_equal(decode("-/8", buf, &n), WSQ_ERR_INVAL);    /* standard alphabet */
    assert_int_equal(decode("Zm9 v", buf, &n), WSQ_ERR_INVAL);  /* whitespace */
    assert_int_equal(decode("Zm9v\n", buf, &n), WSQ_ERR_INVAL); /* whitespace */
    assert_int_equal(decode("Z", buf, &n), WSQ_ERR_INVAL);      /* 1 mod 4 */
    assert_int_equal(decode("Zm9vY", buf, &n), WSQ_ERR_INVAL);  /* 1 mod 4 */
    assert_int_equal(decode("Zh", buf, &n), WSQ_ERR_INVAL);     /* low 4 bits set */
    assert_int_equal(decode("Zm9", buf, &n), WSQ_ERR_INVAL);    /* low 2 bits set */
    assert_int_equal(decode("Zm.v", buf, &n), WSQ_ERR_INVAL);
    assert_int_equal(wsq__b64url_decode("Zm\0v", 4, buf, &n), WSQ_ERR_INVAL);
    assert_int_equal(decode("Zm9\xc3\xa9", buf, &n), WSQ_ERR_INVAL);
}

static void test_jwt_b64url_roundtrip(void **state)
{
    (void)state;
    unsigned char in[64], back[64];
    char enc[WSQ__B64URL_ENCODED_LEN(64)];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (unsigned char)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof(in); n++) {
        size_t m = wsq__b64url_encode(in, n, enc), k = 0;
        assert_int_equal(m, WSQ__B64URL_ENCODED_LEN(n));
        assert_true(WSQ__B64URL_DECODED_MAX(m) >= n);
        assert_int_equal(wsq__b64url_decode(enc, m, back, &k), WSQ_OK);
        assert_int_equal(k, n);
        assert_memory_equal(back, in, n);
    }
}

/* ------------------------------------------------------------------------------------------- */
/* valid tokens                                                                                */

static void test_jwt_valid_with_rights(void **state)
{
    (void)state;
    char *t;
    mint("{\"sub\":\"svc.billing@prod+1\",\"exp\":1700003600,\"nbf\":1699999000,"
         "\"iat\":1699999000,\"jti\":\"x\",\"wsq\":{\"pub\":[\"orders.>\",\"audit\"],"
         "\"sub\":[\"orders.*\"],\"admin\":false}}",
         &t);
    wsq_jwt_claims_t c;
    const char *why = NULL;
    assert_int_equal(wsq_jwt_verify(t, strlen(t), (const unsigned char *)SECRET, SECRET_LEN, NULL,
                                    NULL, NOW, 0, &c, &why),
                     WSQ_OK);
    assert_string_equal(why, "ok");
    assert_string_equal(c.sub, "svc.billing@prod+1");
    assert_int_equal(c.exp, 1700003600);
    assert_int_equal(c.nbf, 1699999000);
    assert_int_equal(c.rights.publish.n, 2);
    assert_string_equal(c.rights.publish.items[0], "orders.>");
    assert_string_equal(c.rights.publish.items[1], "audit");
    assert_int_equal(c.rights.subscribe.n, 1);
    assert_string_equal(c.rights.subscribe.items[0], "orders.*");
    assert_false(c.rights.admin);
    wsq_jwt_claims_fini(&c);
    assert_null(c.rights.publish.items);
    wsq_jwt_claims_fini(&c); /* idempotent */
    wsq_jwt_claims_fini(NULL);
    free(t);
}

/* "metrics" is a boolean right of its own: granting it grants nothing else, and admin does not
 * set it (the HTTP side lets admin read /metrics). */
static void test_jwt_metrics_right(void **state)
{
    (void)state;
    char *t;
    mint("{\"sub\":\"prometheus\",\"wsq\":{\"metrics\":true}}", &t);
    wsq_jwt_claims_t c;
    const char *why = NULL;
    assert_int_equal(wsq_jwt_verify(t, strlen(t), (const unsigned char *)SECRET, SECRET_LEN, NULL,
                                    NULL, NOW, 0, &c, &why),
                     WSQ_OK);
    assert_string_equal(why, "ok");
    assert_string_equal(c.sub, "prometheus");
    assert_true(c.rights.metrics);
    assert_false(c.rights.admin);
    assert_int_equal(c.rights.publish.n, 0);
    assert_int_equal(c.rights.subscribe.n, 0);
    wsq_jwt_claims_fini(&c);
    free(t);

    mint("{\"sub\":\"ops\",\"wsq\":{\"sub\":[\">\"],\"admin\":true,\"metrics\":false}}", &t);
    assert_int_equal(wsq_jwt_verify(t, strlen(t), (const unsigned char *)SECRET, SECRET_LEN, NULL,
                                    NULL, NOW, 0, &c, &why),
                     WSQ_OK);
    assert_false(c.rights.metrics);
    assert_true(c.rights.admin);
    assert_int_equal(c.rights.subscribe.n, 1);
    wsq_jwt_claims_fini(&c);
    free(t);

    /* the OpenSSL vector grants admin only */
    assert_int_equal(wsq_jwt_verify(OPENSSL_TOKEN, strlen(OPENSSL_TOKEN),
                                    (const unsigned char *)SECRET, SECRET_LEN, "wsq-issuer", "wsqd",
                                    NOW, 0, &c, &why),
                     WSQ_OK);
    assert_true(c.rights.admin);
    assert_false(c.rights.metrics);
    wsq_jwt_claims_fini(&c);

    /* a boolean, exactly once, spelt exactly */
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"wsq\":{\"metrics\":1}}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"wsq\":{\"metrics\":\"true\"}}"),
                        "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"wsq\":{\"metrics\":null}}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"wsq\":{\"metric\":true}}"), "bad_claims");
    assert_string_equal(
        claims_reason("{\"sub\":\"a\",\"wsq\":{\"metrics\":false,\"metrics\":true}}"), "malformed");
}

static void test_jwt_valid_without_rights(void **state)
{
    (void)state;
    char *t;
    mint("{\"sub\":\"bob\"}", &t);
    wsq_jwt_claims_t c;
    assert_int_equal(wsq_jwt_verify(t, strlen(t), (const unsigned char *)SECRET, SECRET_LEN, NULL,
                                    NULL, NOW, 0, &c, NULL),
                     WSQ_OK);
    assert_string_equal(c.sub, "bob");
    assert_int_equal(c.exp, 0);
    assert_int_equal(c.nbf, 0);
    assert_int_equal(c.rights.publish.n, 0);
    assert_int_equal(c.rights.subscribe.n, 0);
    assert_false(c.rights.admin);
    assert_false(c.rights.metrics);
    wsq_jwt_claims_fini(&c);
    free(t);
    assert_string_equal(claims_reason("{\"sub\":\"bob\",\"wsq\":{}}"), "ok");
    assert_string_equal(claims_reason("{\"sub\":\"bob\",\"wsq\":{\"pub\":[],\"sub\":[]}}"), "ok");
}

/* The token computed by the openssl command line (see OPENSSL_TOKEN) verifies, and
 * wsq_jwt_sign reproduces it byte for byte. */
static void test_jwt_openssl_vector(void **state)
{
    (void)state;
    wsq_jwt_claims_t c;
    const char *why = NULL;
    assert_int_equal(wsq_jwt_verify(OPENSSL_TOKEN, strlen(OPENSSL_TOKEN),
                                    (const unsigned char *)SECRET, SECRET_LEN, "wsq-issuer", "wsqd",
                                    NOW, 0, &c, &why),
                     WSQ_OK);
    assert_string_equal(why, "ok");
    assert_string_equal(c.sub, "alice");
    assert_int_equal(c.exp, 4102444800);
    assert_int_equal(c.rights.publish.n, 1);
    assert_string_equal(c.rights.publish.items[0], "chat.>");
    assert_int_equal(c.rights.subscribe.n, 2);
    assert_string_equal(c.rights.subscribe.items[0], "chat.*");
    assert_string_equal(c.rights.subscribe.items[1], "news");
    assert_true(c.rights.admin);
    wsq_jwt_claims_fini(&c);

    char *t;
    mint(OPENSSL_CLAIMS, &t);
    assert_string_equal(t, OPENSSL_TOKEN);
    free(t);
}

/* RFC 7515 appendix A.1: its HS256 example (a header with CR LF inside, a binary key) has a
 * valid signature; it has no "sub", so wsq refuses it for its claims, not its signature. */
static void test_jwt_rfc7515_a1(void **state)
{
    (void)state;
    static const char key_b64[] =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    static const char tok[] = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
                              "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt"
                              "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
                              "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    unsigned char key[64];
    size_t key_len = 0;
    assert_int_equal(decode(key_b64, key, &key_len), WSQ_OK);
    assert_int_equal(key_len, 64);
    /* openssl dgst -sha256 -mac HMAC -macopt hexkey:0323354b2b0f... agrees */
    assert_int_equal(key[0], 0x03);
    assert_int_equal(key[63], 0xa3);

    wsq_jwt_claims_t c;
    const char *why = NULL;
    assert_int_equal(
        wsq_jwt_verify(tok, strlen(tok), key, key_len, NULL, NULL, 1300819379, 0, &c, &why),
        WSQ_ERR_UNAUTHORIZED);
    assert_string_equal(why, "bad_claims");
    wsq_jwt_claims_fini(&c);

    /* the same token under another key */
    key[0] ^= 1;
    assert_int_equal(
        wsq_jwt_verify(tok, strlen(tok), key, key_len, NULL, NULL, 1300819379, 0, &c, &why),
        WSQ_ERR_UNAUTHORIZED);
    assert_string_equal(why, "bad_signature");
    wsq_jwt_claims_fini(&c);
}

/* ------------------------------------------------------------------------------------------- */
/* tampering                                                                                   */

static void test_jwt_tampered_payload(void **state)
{
    (void)state;
    char *t;
    mint("{\"sub\":\"mallory\",\"wsq\":{\"admin\":false}}", &t);
    char *dot1 = strchr(t, '.'), *dot2 = strchr(dot1 + 1, '.');
    /* swap in other claims, keeping header and signature */
    const char *admin = "{\"sub\":\"mallory\",\"wsq\":{\"admin\":true}}";
    char *p = b64u(admin, strlen(admin));
    size_t need = strlen(t) + strlen(p) + 1;
    char *forged = malloc(need);
    assert_non_null(forged);
    snprintf(forged, need, "%.*s.%s%s", (int)(dot1 - t), t, p, dot2);
    assert_string_equal(token_reason(forged), "bad_signature");
    /* one character changed in the middle of the payload */
    dot1[5] = dot1[5] == 'A' ? 'B' : 'A';
    assert_string_equal(token_reason(t), "bad_signature");
    free(forged);
    free(p);
    free(t);
}

static void test_jwt_tampered_header(void **state)
{
    (void)state;
    char *t;
    mint("{\"sub\":\"mallory\"}", &t);
    const char *hdr = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"1\"}";
    char *h = b64u(hdr, strlen(hdr));
    size_t need = strlen(t) + strlen(h) + 1;
    char *forged = malloc(need);
    assert_non_null(forged);
    snprintf(forged, need, "%s%s", h, strchr(t, '.'));
    assert_string_equal(token_reason(forged), "bad_signature");
    /* an accepted header of its own is fine when signed */
    free(h);
    free(forged);
    free(t);
    assert_string_equal(
        header_reason("{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"1\"}", "{\"sub\":\"mallory\"}"),
        "ok");
}

static void test_jwt_tampered_signature(void **state)
{
    (void)state;
    char *t;
    mint("{\"sub\":\"mallory\"}", &t);
    char *sig = strrchr(t, '.') + 1;
    assert_int_equal(strlen(sig), 43);
    assert_string_equal(token_reason(t), "ok");

    /* a different 32-byte signature */
    char was = sig[10];
    sig[10] = was == 'A' ? 'B' : 'A';
    assert_string_equal(token_reason(t), "bad_signature");
    sig[10] = was;
    assert_string_equal(token_reason(t), "ok");

    /* 43 characters leave 2 unused bits; setting them must not yield the same signature */
    char last = sig[42];
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t v = (size_t)(strchr(alpha, last) - alpha);
    assert_int_equal(v & 3, 0);
    sig[42] = alpha[v | 1];
    assert_string_equal(token_reason(t), "malformed");
    sig[42] = last;

    /* truncated: 40 characters = 30 bytes */
    assert_string_equal(reason_n(t, strlen(t) - 3, NULL, NULL, NOW, 0), "bad_signature");

    /* the right signature under another secret */
    wsq_jwt_claims_t c;
    const char *why = NULL;
    assert_int_equal(wsq_jwt_verify(t, strlen(t), (const unsigned char *)"other", 5, NULL, NULL,
                                    NOW, 0, &c, &why),
                     WSQ_ERR_UNAUTHORIZED);
    assert_string_equal(why, "bad_signature");
    free(t);
}

/* ------------------------------------------------------------------------------------------- */
/* header                                                                                      */

static void test_jwt_alg_refused(void **state)
{
    (void)state;
    const char *claims = "{\"sub\":\"mallory\",\"wsq\":{\"admin\":true}}";
    /* "none" with an HMAC signature anyway, and with an empty one (no third part: malformed) */
    assert_string_equal(header_reason("{\"alg\":\"none\",\"typ\":\"JWT\"}", claims), "bad_alg");
    char *h = b64u("{\"alg\":\"none\"}", 14), *p = b64u(claims, strlen(claims));
    char none[256];
    snprintf(none, sizeof(none), "%s.%s.", h, p);
    assert_string_equal(token_reason(none), "malformed");
    free(h);
    free(p);

    /* HS384 properly signed with HMAC-SHA384 */
    char *t = mint_raw("{\"alg\":\"HS384\",\"typ\":\"JWT\"}", claims, strlen(claims),
                       (const unsigned char *)SECRET, SECRET_LEN, EVP_sha384());
    assert_string_equal(token_reason(t), "bad_alg");
    free(t);

    assert_string_equal(header_reason("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", claims), "bad_alg");
    assert_string_equal(header_reason("{\"typ\":\"JWT\"}", claims), "bad_alg");
    assert_string_equal(header_reason("{\"alg\":\"hs256\"}", claims), "bad_alg");
    assert_string_equal(header_reason("{\"alg\":\"HS256 \"}", claims), "bad_alg");
    assert_string_equal(header_reason("{\"alg\":null}", claims), "bad_alg");
    assert_string_equal(header_reason("{\"alg\":256}", claims), "bad_alg");
    assert_string_equal(header_reason("{\"alg\":[\"HS256\"]}", claims), "bad_alg");
    /* an embedded NUL is refused by the JSON parser itself */
    assert_string_equal(header_reason("{\"alg\":\"HS256\\u0000\"}", claims), "malformed");
    /* the minimal header is enough */
    assert_string_equal(header_reason("{\"alg\":\"HS256\"}", claims), "ok");
}

static void test_jwt_header_members(void **state)
{
    (void)state;
    const char *claims = "{\"sub\":\"a\"}";
    assert_string_equal(header_reason("{\"alg\":\"HS256\",\"typ\":\"jwt\"}", claims), "ok");
    assert_string_equal(header_reason("{\"alg\":\"HS256\",\"typ\":\"JWS\"}", claims), "bad_header");
    assert_string_equal(header_reason("{\"alg\":\"HS256\",\"typ\":1}", claims), "bad_header");
    assert_string_equal(
        header_reason("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", claims),
        "bad_header");
    assert_string_equal(header_reason("{\"alg\":\"HS256\",\"crit\":[]}", claims), "bad_header");
    assert_string_equal(header_reason("{\"alg\":\"HS256\",\"cty\":\"JWT\"}", claims), "bad_header");
    /* not an object, not JSON, trailing bytes */
    assert_string_equal(header_reason("[\"HS256\"]", claims), "malformed");
    assert_string_equal(header_reason("\"HS256\"", claims), "malformed");
    assert_string_equal(header_reason("{\"alg\":\"HS256\"", claims), "malformed");
    assert_string_equal(header_reason("{\"alg\":\"HS256\"}x", claims), "malformed");
    assert_string_equal(header_reason("{\"alg\":\"HS256\"}{}", claims), "malformed");
}

static void test_jwt_duplicate_keys(void **state)
{
    (void)state;
    assert_string_equal(header_reason("{\"alg\":\"HS256\",\"alg\":\"none\"}", "{\"sub\":\"a\"}"),
                        "malformed");
    assert_string_equal(header_reason("{\"alg\":\"none\",\"alg\":\"HS256\"}", "{\"sub\":\"a\"}"),
                        "malformed");
    assert_string_equal(claims_reason("{\"sub\":\"alice\",\"sub\":\"root\"}"), "malformed");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":1,\"exp\":4102444800}"), "malformed");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"wsq\":{\"admin\":false,\"admin\":true}}"),
                        "malformed");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"wsq\":{\"pub\":[],\"pub\":[\">\"]}}"),
                        "malformed");
}

/* ------------------------------------------------------------------------------------------- */
/* time                                                                                        */

static void test_jwt_exp(void **state)
{
    (void)state;
    /* valid while now < exp + leeway */
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":1699999999}"), "expired");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":1700000000}"), "expired");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":1700000001}"), "ok");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":0}"), "expired");
    assert_string_equal(claims_reason_at("{\"sub\":\"a\",\"exp\":1699999970}", NULL, NULL, NOW, 30),
                        "expired");
    assert_string_equal(claims_reason_at("{\"sub\":\"a\",\"exp\":1699999971}", NULL, NULL, NOW, 30),
                        "ok");
    /* a fraction rounds down */
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":1700000000.9}"), "expired");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":1700000001.0}"), "ok");
    /* types and ranges */
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":-1}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":\"4102444800\"}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":null}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":true}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":1e300}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":-0.5}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":9223372036854775807}"), "ok");
    /* beyond long long: the JSON parser refuses it */
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"exp\":9223372036854775808}"), "malformed");
}

static void test_jwt_nbf(void **state)
{
    (void)state;
    /* valid once now >= nbf - leeway */
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"nbf\":1700000000}"), "ok");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"nbf\":1700000001}"), "not_yet_valid");
    assert_string_equal(claims_reason_at("{\"sub\":\"a\",\"nbf\":1700000030}", NULL, NULL, NOW, 30),
                        "ok");
    assert_string_equal(claims_reason_at("{\"sub\":\"a\",\"nbf\":1700000031}", NULL, NULL, NOW, 30),
                        "not_yet_valid");
    /* a fraction rounds up */
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"nbf\":1699999999.5}"), "ok");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"nbf\":1700000000.1}"), "not_yet_valid");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"nbf\":\"0\"}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"nbf\":-5}"), "bad_claims");
    /* exp is checked before nbf */
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"nbf\":1800000000,\"exp\":1600000000}"),
                        "expired");
}

/* No overflow whatever the clock and leeway say (UBSan watches). */
static void test_jwt_time_extremes(void **state)
{
    (void)state;
    const char *big = "{\"sub\":\"a\",\"exp\":9223372036854775807,\"nbf\":9223372036854775807}";
    assert_string_equal(claims_reason_at(big, NULL, NULL, INT64_MAX, 0), "expired");
    assert_string_equal(claims_reason_at(big, NULL, NULL, INT64_MAX, INT64_MAX), "ok");
    assert_string_equal(claims_reason_at(big, NULL, NULL, INT64_MIN, INT64_MAX), "not_yet_valid");
    assert_string_equal(claims_reason_at(big, NULL, NULL, INT64_MIN, 0), "not_yet_valid");
    const char *zero = "{\"sub\":\"a\",\"exp\":0,\"nbf\":0}";
    assert_string_equal(claims_reason_at(zero, NULL, NULL, INT64_MIN, INT64_MAX), "not_yet_valid");
    assert_string_equal(claims_reason_at(zero, NULL, NULL, INT64_MAX, INT64_MAX), "expired");
    assert_string_equal(claims_reason_at(zero, NULL, NULL, -1, 0), "not_yet_valid");
    assert_string_equal(claims_reason_at(zero, NULL, NULL, -1, 1), "ok");
    assert_string_equal(claims_reason_at("{\"sub\":\"a\",\"exp\":0}", NULL, NULL, INT64_MIN, 0),
                        "ok");
}

/* ------------------------------------------------------------------------------------------- */
/* issuer, audience                                                                            */

static void test_jwt_issuer(void **state)
{
    (void)state;
    const char *iss = "{\"sub\":\"a\",\"iss\":\"https://auth.example\"}";
    assert_string_equal(claims_reason_at(iss, "https://auth.example", NULL, NOW, 0), "ok");
    assert_string_equal(claims_reason_at(iss, NULL, NULL, NOW, 0), "ok");
    assert_string_equal(claims_reason_at(iss, "https://auth.example/", NULL, NOW, 0), "bad_issuer");
    assert_string_equal(claims_reason_at(iss, "https://auth.exampl", NULL, NOW, 0), "bad_issuer");
    assert_string_equal(claims_reason_at(iss, "HTTPS://AUTH.EXAMPLE", NULL, NOW, 0), "bad_issuer");
    assert_string_equal(claims_reason_at("{\"sub\":\"a\"}", "https://auth.example", NULL, NOW, 0),
                        "bad_issuer");
    assert_string_equal(claims_reason_at("{\"sub\":\"a\",\"iss\":1}", NULL, NULL, NOW, 0),
                        "bad_claims");
    assert_string_equal(claims_reason_at("{\"sub\":\"a\",\"iss\":[\"https://auth.example\"]}",
                                         "https://auth.example", NULL, NOW, 0),
                        "bad_claims");
}

static void test_jwt_audience(void **state)
{
    (void)state;
    assert_string_equal(claims_reason_at("{\"sub\":\"a\",\"aud\":\"wsqd\"}", NULL, "wsqd", NOW, 0),
                        "ok");
    assert_string_equal(claims_reason_at("{\"sub\":\"a\",\"aud\":\"other\"}", NULL, "wsqd", NOW, 0),
                        "bad_audience");
    assert_string_equal(
        claims_reason_at("{\"sub\":\"a\",\"aud\":[\"x\",\"wsqd\"]}", NULL, "wsqd", NOW, 0), "ok");
    assert_string_equal(
        claims_reason_at("{\"sub\":\"a\",\"aud\":[\"x\",\"wsqd2\"]}", NULL, "wsqd", NOW, 0),
        "bad_audience");
    assert_string_equal(claims_reason_at("{\"sub\":\"a\",\"aud\":[]}", NULL, "wsqd", NOW, 0),
                        "bad_audience");
    assert_string_equal(claims_reason_at("{\"sub\":\"a\"}", NULL, "wsqd", NOW, 0), "bad_audience");
    /* any audience when none is expected, but still of the right type */
    assert_string_equal(claims_reason_at("{\"sub\":\"a\",\"aud\":[\"x\"]}", NULL, NULL, NOW, 0),
                        "ok");
    assert_string_equal(claims_reason_at("{\"sub\":\"a\",\"aud\":1}", NULL, NULL, NOW, 0),
                        "bad_claims");
    assert_string_equal(
        claims_reason_at("{\"sub\":\"a\",\"aud\":[\"wsqd\",1]}", NULL, "wsqd", NOW, 0),
        "bad_claims");
    assert_string_equal(
        claims_reason_at("{\"sub\":\"a\",\"aud\":{\"wsqd\":true}}", NULL, "wsqd", NOW, 0),
        "bad_claims");
    /* issuer before audience */
    assert_string_equal(claims_reason_at("{\"sub\":\"a\"}", "i", "wsqd", NOW, 0), "bad_issuer");
}

/* ------------------------------------------------------------------------------------------- */
/* claims                                                                                      */

static void test_jwt_sub(void **state)
{
    (void)state;
    assert_string_equal(claims_reason("{\"wsq\":{\"admin\":true}}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"\"}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":null}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":42}"), "bad_claims");
    /* any printable UTF-8 up to 255 bytes: provider subjects such as "auth0|64f1c0" */
    assert_string_equal(claims_reason("{\"sub\":\"a b\"}"), "ok");
    assert_string_equal(claims_reason("{\"sub\":\"a/b\"}"), "ok");
    assert_string_equal(claims_reason("{\"sub\":\"auth0|64f1c0\"}"), "ok");
    assert_string_equal(claims_reason("{\"sub\":\"caf\\u00e9 \\\"q\\\"\"}"), "ok");
    assert_string_equal(claims_reason("{\"sub\":\"a\\nb\"}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\\u007fb\"}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\\u0085b\"}"), "bad_claims"); /* C1 */
    assert_string_equal(claims_reason("{\"sub\":\"a\\u0000b\"}"), "malformed");
    assert_string_equal(claims_reason("{\"sub\":\"A-z_0.9@x+y\"}"), "ok");
    char buf[512];
    snprintf(buf, sizeof(buf), "{\"sub\":\"%0255d\"}", 0);
    assert_string_equal(claims_reason(buf), "ok");
    snprintf(buf, sizeof(buf), "{\"sub\":\"%0256d\"}", 0);
    assert_string_equal(claims_reason(buf), "bad_claims");
}

static void test_jwt_bad_patterns(void **state)
{
    (void)state;
    static const char *const bad[] = {"\"\"",    "\"a..b\"",     "\"a.\"", "\"*x\"", "\"a.>.b\"",
                                      "\"a b\"", "\"a\\u0000\"", "1",      "null",   "[\"a\"]"};
    char buf[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *want = strstr(bad[i], "u0000") ? "malformed" : "bad_claims";
        snprintf(buf, sizeof(buf), "{\"sub\":\"a\",\"wsq\":{\"pub\":[\"ok\",%s]}}", bad[i]);
        assert_string_equal(claims_reason(buf), want);
        snprintf(buf, sizeof(buf), "{\"sub\":\"a\",\"wsq\":{\"sub\":[%s]}}", bad[i]);
        assert_string_equal(claims_reason(buf), want);
    }
    /* a 256-byte pattern is too long */
    char *p = malloc(512);
    assert_non_null(p);
    snprintf(p, 512, "{\"sub\":\"a\",\"wsq\":{\"pub\":[\"%0255d\"]}}", 0);
    assert_string_equal(claims_reason(p), "ok");
    snprintf(p, 512, "{\"sub\":\"a\",\"wsq\":{\"pub\":[\"%0256d\"]}}", 0);
    assert_string_equal(claims_reason(p), "bad_claims");
    free(p);
}

static void test_jwt_pattern_cap(void **state)
{
    (void)state;
    char buf[1024];
    for (int n = 63; n <= 65; n++) {
        size_t o = (size_t)snprintf(buf, sizeof(buf), "{\"sub\":\"a\",\"wsq\":{\"sub\":[");
        for (int i = 0; i < n; i++)
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s\"t%d\"", i ? "," : "", i);
        snprintf(buf + o, sizeof(buf) - o, "]}}");
        assert_string_equal(claims_reason(buf), n <= WSQ_JWT_PATTERNS_MAX ? "ok" : "bad_claims");
    }
}

static void test_jwt_wrong_types(void **state)
{
    (void)state;
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"wsq\":[]}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"wsq\":null}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"wsq\":\"admin\"}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"wsq\":{\"pub\":\"chat.>\"}}"),
                        "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"wsq\":{\"sub\":{}}}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"wsq\":{\"admin\":1}}"), "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"wsq\":{\"admin\":\"true\"}}"),
                        "bad_claims");
    assert_string_equal(claims_reason("{\"sub\":\"a\",\"wsq\":{\"publish\":[\"x\"]}}"),
                        "bad_claims");
    /* valid rights first, then a refused member: nothing leaks (LSan watches) */
    assert_string_equal(
        claims_reason("{\"sub\":\"a\",\"wsq\":{\"pub\":[\"x\",\"y\"],\"sub\":[\"z\"],\"x\":1}}"),
        "bad_claims");
    /* the claims themselves must be an object */
    assert_string_equal(claims_reason("[{\"sub\":\"a\"}]"), "malformed");
    assert_string_equal(claims_reason("\"a\""), "malformed");
    assert_string_equal(claims_reason("{\"sub\":\"a\"} "), "ok"); /* JSON whitespace is fine */
    assert_string_equal(claims_reason("{\"sub\":\"a\"},"), "malformed");
    assert_string_equal(claims_reason("not json"), "malformed");
    assert_string_equal(claims_reason("{\"sub\":\"a\"\xff}"), "malformed");
}

/* ------------------------------------------------------------------------------------------- */
/* structure                                                                                   */

static void test_jwt_malformed_base64url(void **state)
{
    (void)state;
    char *t;
    mint("{\"sub\":\"a\"}", &t); /* eyJ... .eyJzdWIiOiJhIn0.<43> */
    char buf[512];
    char *dot1 = strchr(t, '.'), *dot2 = strchr(dot1 + 1, '.');
    int h = (int)(dot1 - t), p = (int)(dot2 - dot1 - 1);
    assert_string_equal(token_reason(t), "ok");
    assert_int_equal(p % 4, 3); /* "eyJzdWIiOiJhIn0": one '=' of padding in standard base64 */

    /* padding, in each part */
    snprintf(buf, sizeof(buf), "%.*s.%.*s=%s", h, t, p, dot1 + 1, dot2);
    assert_string_equal(token_reason(buf), "malformed");
    snprintf(buf, sizeof(buf), "%s=", t);
    assert_string_equal(token_reason(buf), "malformed");
    snprintf(buf, sizeof(buf), "%.*s=%s", h, t, dot1);
    assert_string_equal(token_reason(buf), "malformed");

    /* the standard alphabet, and whitespace anywhere */
    static const char *const bad[] = {"+", "/", " ", "\t", "\n", "\r", "=", "\\", "\x80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (int where = 0; where < 3; where++) {
            const char *at = where == 0 ? t + 4 : where == 1 ? dot1 + 5 : dot2 + 5;
            snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - t), t, bad[i], at + 1);
            assert_string_equal(token_reason(buf), "malformed");
        }
    }
    snprintf(buf, sizeof(buf), " %s", t);
    assert_string_equal(token_reason(buf), "malformed");
    snprintf(buf, sizeof(buf), "%s\n", t);
    assert_string_equal(token_reason(buf), "malformed");

    /* part counts and empty parts */
    snprintf(buf, sizeof(buf), "%.*s", (int)(dot2 - t), t);
    assert_string_equal(token_reason(buf), "malformed"); /* two parts */
    snprintf(buf, sizeof(buf), "%.*s", h, t);
    assert_string_equal(token_reason(buf), "malformed"); /* one part */
    snprintf(buf, sizeof(buf), "%s.%s", t, dot2 + 1);
    assert_string_equal(token_reason(buf), "malformed"); /* four parts */
    snprintf(buf, sizeof(buf), "%s.", t);
    assert_string_equal(token_reason(buf), "malformed"); /* empty fourth part */
    snprintf(buf, sizeof(buf), "%.*s.", (int)(dot2 - t), t);
    assert_string_equal(token_reason(buf), "malformed"); /* empty signature */
    snprintf(buf, sizeof(buf), "%.*s.%s", h, t, dot2);
    assert_string_equal(token_reason(buf), "malformed"); /* empty payload */
    snprintf(buf, sizeof(buf), "%s", dot1);
    assert_string_equal(token_reason(buf), "malformed"); /* empty header */
    assert_string_equal(token_reason(".."), "malformed");
    assert_string_equal(token_reason("..."), "malformed");
    assert_string_equal(token_reason("."), "malformed");
    assert_string_equal(token_reason(""), "malformed");
    assert_string_equal(reason_n(t, 0, NULL, NULL, NOW, 0), "malformed");
    /* a NUL inside the given length */
    snprintf(buf, sizeof(buf), "%s", t);
    buf[3] = '\0';
    assert_string_equal(reason_n(buf, strlen(t), NULL, NULL, NOW, 0), "malformed");
    /* the length is honoured: the token followed by garbage that is not passed */
    snprintf(buf, sizeof(buf), "%s.garbage", t);
    assert_string_equal(reason_n(buf, strlen(t), NULL, NULL, NOW, 0), "ok");
    free(t);
}

static void test_jwt_oversized(void **state)
{
    (void)state;
    /* {"sub":"a","pad":"x..."}: 20 + n bytes of claims. Header and signature take 36 + 1 + 1 +
     * 43 characters, so 6083 bytes of claims (8111 characters) make exactly 8192. */
    const size_t claims_len = 6083;
    char *claims = malloc(claims_len + 2); /* room for one more byte below */
    assert_non_null(claims);
    memcpy(claims, "{\"sub\":\"a\",\"pad\":\"", 18);
    memset(claims + 18, 'x', claims_len - 20);
    memcpy(claims + claims_len - 2, "\"}", 3);
    assert_int_equal(strlen(claims), claims_len);

    char *t = NULL;
    assert_int_equal(
        wsq_jwt_sign(claims, claims_len, (const unsigned char *)SECRET, SECRET_LEN, &t), WSQ_OK);
    assert_int_equal(strlen(t), WSQ_JWT_TOKEN_MAX);
    assert_string_equal(token_reason(t), "ok");
    free(t);

    /* one byte more: wsq_jwt_sign refuses, and a forged one is malformed before any HMAC */
    memmove(claims + 1, claims, claims_len + 1);
    claims[0] = ' ';
    t = (char *)0x1;
    assert_int_equal(
        wsq_jwt_sign(claims, claims_len + 1, (const unsigned char *)SECRET, SECRET_LEN, &t),
        WSQ_ERR_TOO_LARGE);
    assert_ptr_equal(t, (char *)0x1);
    t = mint_hdr(HS256_HEADER, claims);
    assert_int_equal(strlen(t), WSQ_JWT_TOKEN_MAX + 1);
    assert_string_equal(token_reason(t), "malformed");
    free(t);
    free(claims);

    /* far larger: no read beyond the cap */
    size_t big = 1 << 20;
    char *huge = malloc(big);
    assert_non_null(huge);
    memset(huge, 'A', big);
    huge[100] = huge[200] = '.';
    assert_string_equal(reason_n(huge, big, NULL, NULL, NOW, 0), "malformed");
    free(huge);
}

/* ------------------------------------------------------------------------------------------- */
/* arguments and memory                                                                        */

static void test_jwt_invalid_arguments(void **state)
{
    (void)state;
    char *t;
    mint("{\"sub\":\"a\"}", &t);
    size_t n = strlen(t);
    const unsigned char *k = (const unsigned char *)SECRET;
    wsq_jwt_claims_t c;
    const char *why = NULL;
    assert_int_equal(wsq_jwt_verify(NULL, 0, k, SECRET_LEN, NULL, NULL, NOW, 0, &c, &why),
                     WSQ_ERR_INVAL);
    assert_string_equal(why, "internal");
    assert_int_equal(wsq_jwt_verify(t, n, NULL, 0, NULL, NULL, NOW, 0, &c, &why), WSQ_ERR_INVAL);
    assert_int_equal(wsq_jwt_verify(t, n, k, 0, NULL, NULL, NOW, 0, &c, &why), WSQ_ERR_INVAL);
    assert_int_equal(wsq_jwt_verify(t, n, k, WSQ_JWT_SECRET_MAX + 1, NULL, NULL, NOW, 0, &c, &why),
                     WSQ_ERR_INVAL);
    assert_int_equal(wsq_jwt_verify(t, n, k, SECRET_LEN, NULL, NULL, NOW, -1, &c, &why),
                     WSQ_ERR_INVAL);
    assert_int_equal(wsq_jwt_verify(t, n, k, SECRET_LEN, NULL, NULL, NOW, 0, NULL, &why),
                     WSQ_ERR_INVAL);
    assert_int_equal(wsq_jwt_verify(t, n, k, SECRET_LEN, NULL, NULL, NOW, 0, &c, NULL), WSQ_OK);
    wsq_jwt_claims_fini(&c);

    char *out = NULL;
    assert_int_equal(wsq_jwt_sign(NULL, 1, k, SECRET_LEN, &out), WSQ_ERR_INVAL);
    assert_int_equal(wsq_jwt_sign("{}", 2, NULL, SECRET_LEN, &out), WSQ_ERR_INVAL);
    assert_int_equal(wsq_jwt_sign("{}", 2, k, 0, &out), WSQ_ERR_INVAL);
    assert_int_equal(wsq_jwt_sign("{}", 2, k, SECRET_LEN, NULL), WSQ_ERR_INVAL);
    assert_null(out);
    /* empty claims sign (verbatim), and verify refuses the empty part */
    assert_int_equal(wsq_jwt_sign(NULL, 0, k, SECRET_LEN, &out), WSQ_OK);
    assert_string_equal(token_reason(out), "malformed");
    free(out);
    free(t);
}

/* The reason list is closed: every reason verify returns is in WSQ_JWT_REASON_LIST. */
static void test_jwt_reason_list(void **state)
{
    (void)state;
#define CODE(code, meaning) code,
    static const char *const codes[] = {WSQ_JWT_REASON_LIST(CODE)};
#undef CODE
    static const char *const seen[] = {"malformed",    "bad_alg", "bad_header",    "bad_signature",
                                       "bad_claims",   "expired", "not_yet_valid", "bad_issuer",
                                       "bad_audience", "nomem",   "internal",      "unknown_key"};
    assert_int_equal(sizeof(codes) / sizeof(codes[0]), sizeof(seen) / sizeof(seen[0]));
    for (size_t i = 0; i < sizeof(seen) / sizeof(seen[0]); i++)
        assert_string_equal(codes[i], seen[i]);
}

/* jansson's allocator fails at every point in turn. Nothing leaks, nothing crashes, and no
 * failure lets a token through: the result is WSQ_ERR_NOMEM ("nomem") when jansson reports the
 * failure as such, and a "malformed" refusal when it reports it as a syntax error (jansson 2.14
 * does both), until enough memory gives the full, correct claims. */
static int alloc_budget = -1; /* < 0: unlimited */

static void *budget_malloc(size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}

static void test_jwt_nomem(void **state)
{
    (void)state;
    char *t;
    mint(OPENSSL_CLAIMS, &t);
    json_set_alloc_funcs(budget_malloc, free);
    int failures = 0;
    for (int budget = 0;; budget++) {
        wsq_jwt_claims_t c;
        const char *why = NULL;
        alloc_budget = budget;
        wsq_err rc = wsq_jwt_verify(t, strlen(t), (const unsigned char *)SECRET, SECRET_LEN,
                                    "wsq-issuer", "wsqd", NOW, 0, &c, &why);
        if (rc == WSQ_OK) {
            assert_string_equal(why, "ok");
            assert_string_equal(c.sub, "alice");
            assert_int_equal(c.rights.publish.n, 1);
            assert_int_equal(c.rights.subscribe.n, 2);
            assert_true(c.rights.admin);
            wsq_jwt_claims_fini(&c);
            break;
        }
        if (rc == WSQ_ERR_NOMEM) {
            assert_string_equal(why, "nomem");
        } else {
            assert_int_equal(rc, WSQ_ERR_UNAUTHORIZED);
            assert_string_equal(why, "malformed");
        }
        wsq_jwt_claims_fini(&c);
        failures++;
        assert_true(budget < 1000);
    }
    alloc_budget = -1;
    json_set_alloc_funcs(malloc, free);
    assert_true(failures > 0);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jwt_b64url_vectors),
        cmocka_unit_test(test_jwt_b64url_strict),
        cmocka_unit_test(test_jwt_b64url_roundtrip),
        cmocka_unit_test(test_jwt_valid_with_rights),
        cmocka_unit_test(test_jwt_metrics_right),
        cmocka_unit_test(test_jwt_valid_without_rights),
        cmocka_unit_test(test_jwt_openssl_vector),
        cmocka_unit_test(test_jwt_rfc7515_a1),
        cmocka_unit_test(test_jwt_tampered_payload),
        cmocka_unit_test(test_jwt_tampered_header),
        cmocka_unit_test(test_jwt_tampered_signature),
        cmocka_unit_test(test_jwt_alg_refused),
        cmocka_unit_test(test_jwt_header_members),
        cmocka_unit_test(test_jwt_duplicate_keys),
        cmocka_unit_test(test_jwt_exp),
        cmocka_unit_test(test_jwt_nbf),
        cmocka_unit_test(test_jwt_time_extremes),
        cmocka_unit_test(test_jwt_issuer),
        cmocka_unit_test(test_jwt_audience),
        cmocka_unit_test(test_jwt_sub),
        cmocka_unit_test(test_jwt_bad_patterns),
        cmocka_unit_test(test_jwt_pattern_cap),
        cmocka_unit_test(test_jwt_wrong_types),
        cmocka_unit_test(test_jwt_malformed_base64url),
        cmocka_unit_test(test_jwt_oversized),
        cmocka_unit_test(test_jwt_invalid_arguments),
        cmocka_unit_test(test_jwt_reason_list),
        cmocka_unit_test(test_jwt_nomem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
