/*
 * JSON Web Tokens (RFC 7519, RFC 7515 JWS compact serialization): the credentials wsqd accepts
 * besides static tokens. wsq_jwt_verify checks HS256 under one secret; wsq_jwt_verify_keys any
 * algorithm of a configured list under a key set (HMAC, RSA, EC, Ed25519: see below).
 *
 * Pure functions: bytes in, claims or a refusal out. No I/O, no globals of our own, no logging;
 * any thread may call any function concurrently (libcrypto and jansson are thread-safe for these
 * uses). HMAC-SHA256 comes from OpenSSL's libcrypto, the signature comparison is constant-time
 * (CRYPTO_memcmp), and JSON is parsed by jansson with duplicate keys refused.
 *
 * Accepted tokens, and nothing else:
 *   - exactly three non-empty parts separated by '.', at most WSQ_JWT_TOKEN_MAX bytes in all;
 *   - each part strict base64url (RFC 7515 section 2): alphabet [A-Za-z0-9_-], no padding, no
 *     whitespace, and the unused low bits of the last character zero (one encoding per value);
 *   - a header that is a JSON object with "alg" exactly "HS256" (wsq_jwt_verify_keys: one of its
 *     allowed algorithms, and an optional string "kid"); "typ", if present, is "JWT"
 *     (case-insensitive, RFC 7515 section 4.1.9); "crit" and "cty" are refused, since wsq
 *     understands no extension and no nested token; other members (e.g. "kid") are ignored;
 *   - a signature of exactly 32 bytes equal to HMAC-SHA256(secret, "<header>.<payload>"), the
 *     parts as they appear in the token (never re-encoded);
 *   - claims (the payload) forming a JSON object, read only after the signature checks out:
 *       "sub"  required: the identity name, 1..WSQ_JWT_SUB_MAX bytes of printable UTF-8 (no
 *              control character; wsq_jwt_verify_keys: the opts' identity claim instead);
 *       "exp"  optional NumericDate: refused when now_s >= exp + leeway_s;
 *       "nbf"  optional NumericDate: refused when now_s < nbf - leeway_s;
 *       "iss"  optional string; required and equal to `issuer` when one is expected;
 *       "aud"  optional string or array of strings; required and containing `audience` when
 *              one is expected. With no expected audience any "aud" is accepted;
 *       "wsq"  optional rights object {"pub":[patterns], "sub":[patterns], "admin":bool}, each
 *              member optional, no other member allowed (a misspelt right must not silently
 *              grant nothing or, worse, be ignored by an older wsqd). Patterns are wsq/topic.h
 *              patterns, at most WSQ_JWT_PATTERNS_MAX per list. Without "wsq" the identity has
 *              no rights at all.
 *     NumericDates are non-negative JSON numbers; a fraction is rounded towards refusal (exp
 *     down, nbf up). Other claims ("iat", "jti", ...) are ignored.
 *
 * Refusal reasons. Every refusal names one stable reason code, meant for the metric label of
 * "auth failures by reason" and for logs (log the reason, never the token: a token is a
 * credential). The list is closed, so a metric can create every label up front; codes are never
 * renamed once released, new ones go at the end.
 */
#ifndef WSQ_JWT_H
#define WSQ_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsq/config.h"
#include "wsq/err.h"
#include "wsq/proto.h"

#define WSQ_JWT_TOKEN_MAX 8192   /* bytes of a whole token; larger is "malformed" */
#define WSQ_JWT_SUB_MAX 255      /* bytes of the identity claim ("sub" by default) */
#define WSQ_JWT_ROLES_MAX 256    /* entries of the roles claim */
#define WSQ_JWT_PATTERNS_MAX 64  /* patterns in each of "pub" and "sub" */
#define WSQ_JWT_SECRET_MAX 65536 /* bytes of an HS256 secret (keeps the HMAC key length an int) */

/* X("code", "meaning"): the reasons wsq_jwt_verify hands back (as static strings; compare them
 * with strcmp). The checks run in this order, and the first that fails names the reason:
 *   1. length, three non-empty parts, strict base64url of each part      malformed
 *   2. the header is a JSON object                                        malformed
 *   3. "alg"; then "typ", "crit", "cty"                                   bad_alg, bad_header
 *   4. the signature (only now is the secret used)                        bad_signature
 *   5. the claims are a JSON object (only authenticated bytes are parsed) malformed
 *   6. types and values of every claim used, and the "wsq" rights         bad_claims
 *   7. "exp", then "nbf", then "iss", then "aud"                          expired, not_yet_valid,
 *                                                                         bad_issuer, bad_audience
 */
#define WSQ_JWT_REASON_LIST(X)                                                                     \
    X("malformed", "not three non-empty strict base64url parts, longer than WSQ_JWT_TOKEN_MAX, "   \
                   "or a header or claims part that is not a JSON object (duplicate keys "         \
                   "included)")                                                                    \
    X("bad_alg", "header \"alg\" is missing or is not exactly \"HS256\"")                          \
    X("bad_header", "header has \"crit\" or \"cty\", or a \"typ\" other than \"JWT\"")             \
    X("bad_signature", "signature is not HMAC-SHA256 of the token under the secret")               \
    X("bad_claims", "a claim has the wrong type or value: missing or invalid \"sub\", a "          \
                    "negative or non-numeric \"exp\"/\"nbf\", a non-string \"iss\", an \"aud\" "   \
                    "that is neither a string nor an array of strings, or a wrong \"wsq\" "        \
                    "object (unknown member, invalid pattern, more than WSQ_JWT_PATTERNS_MAX "     \
                    "patterns, non-boolean \"admin\")")                                            \
    X("expired", "\"exp\" has passed (beyond the leeway)")                                         \
    X("not_yet_valid", "\"nbf\" is still ahead (beyond the leeway)")                               \
    X("bad_issuer", "an issuer is expected and \"iss\" is missing or differs")                     \
    X("bad_audience", "an audience is expected and \"aud\" is missing or does not contain it")     \
    X("nomem", "out of memory while verifying (not the client's fault)")                           \
    X("internal", "libcrypto failed, or the caller passed invalid arguments")                      \
    X("unknown_key", "no configured key fits the token: none of its algorithm's key type, or "     \
                     "none with the \"kid\" its header names")

/* ------------------------------------------------------------------------------------------- */
/* Algorithms and key sets (RFC 7518, RFC 8037)                                                 */

#define WSQ_JWT_KID_MAX 128 /* bytes of a "kid" */

/* The algorithms wsqd can verify, as bits of an allowed set: a deployment lists the ones it
 * accepts, and a token whose "alg" is not in the list is refused (bad_alg) before any key is
 * looked at. "none" is never one of them. */
/* clang-format off */
#define WSQ_JWT_ALG_LIST(X)                                                                        \
    X(HS256, "HS256") X(HS384, "HS384") X(HS512, "HS512")                                          \
    X(RS256, "RS256") X(RS384, "RS384") X(RS512, "RS512")                                          \
    X(PS256, "PS256") X(PS384, "PS384") X(PS512, "PS512")                                          \
    X(ES256, "ES256") X(ES384, "ES384") X(EDDSA, "EdDSA")
/* clang-format on */
enum {
#define WSQ_JWT_ALG_ENUM(id, name) WSQ_JWT_ALG_BIT_##id,
    WSQ_JWT_ALG_LIST(WSQ_JWT_ALG_ENUM)
#undef WSQ_JWT_ALG_ENUM
        WSQ_JWT_ALG_COUNT
};
#define WSQ_JWT_ALG(id) (1u << WSQ_JWT_ALG_BIT_##id)

/* The bit of the algorithm named name (exactly as in a JWS header: "RS256", "EdDSA"), or 0. */
unsigned wsq_jwt_alg(const char *name);
/* The name of an algorithm bit, or NULL. */
const char *wsq_jwt_alg_name(unsigned bit);

/*
 * A set of verification keys: HMAC secrets, and RSA (2048 bits or more), EC P-256 / P-384 and
 * Ed25519 public keys, each with an optional "kid". Built once (at config load), then read-only:
 * any number of threads may verify with it at once. A key serves the algorithms of its type
 * only (an RSA key never checks an HS256 MAC: no algorithm confusion).
 */
typedef struct wsq_jwt_keys wsq_jwt_keys_t;

/* An empty set. WSQ_ERR_NOMEM. */
wsq_err wsq_jwt_keys_new(wsq_jwt_keys_t **out);
/* Frees the set and its keys. NULL is a no-op. */
void wsq_jwt_keys_free(wsq_jwt_keys_t *ks);
/* How many keys the set holds. */
size_t wsq_jwt_keys_count(const wsq_jwt_keys_t *ks);
/* True when some key of the set can verify algorithm alg (one WSQ_JWT_ALG bit). */
bool wsq_jwt_keys_serve(const wsq_jwt_keys_t *ks, unsigned alg);

/* Adds an HMAC secret (1..WSQ_JWT_SECRET_MAX bytes, copied) with kid ("" or NULL: none).
 * WSQ_ERR_INVAL, WSQ_ERR_NOMEM. */
wsq_err wsq_jwt_keys_add_secret(wsq_jwt_keys_t *ks, const char *kid, const unsigned char *secret,
                                size_t len);

/* Adds every public key of the PEM text pem[0..len): "PUBLIC KEY" blocks and certificates (their
 * subject's key), each with kid (or none). WSQ_ERR_BAD_REQUEST with a message in err (cap bytes)
 * when the text holds no key, a key of an unsupported type or size, or a bad block;
 * WSQ_ERR_NOMEM. Nothing is added on error. */
wsq_err wsq_jwt_keys_add_pem(wsq_jwt_keys_t *ks, const char *kid, const void *pem, size_t len,
                             char *err, size_t cap);

/* Adds the keys of a JWK Set (RFC 7517 section 5): {"keys":[...]}. Keys of kty "RSA" (n, e),
 * "EC" (crv P-256 or P-384, x, y), "OKP" (crv Ed25519, x) and "oct" (k) are taken; keys whose
 * "use" is not "sig", and keys of other types or curves, are skipped (a provider's set may hold
 * encryption keys). WSQ_ERR_BAD_REQUEST with a message in err when the text is not such a set,
 * a key that would be taken is malformed (its index and kid are named), or no key is taken;
 * WSQ_ERR_NOMEM. Nothing is added on error. */
wsq_err wsq_jwt_keys_add_jwks(wsq_jwt_keys_t *ks, const void *json, size_t len, char *err,
                              size_t cap);

/* Verified claims. Owned by the caller; release with wsq_jwt_claims_fini. */
typedef struct {
    char sub[WSQ_JWT_SUB_MAX + 1]; /* the identity ("sub" or opts->identity_claim),
                                    * NUL-terminated, printable UTF-8 */
    int64_t exp;                   /* "exp" in seconds since the epoch; 0 when absent */
    int64_t nbf;                   /* "nbf" in seconds since the epoch; 0 when absent */
    wsq_rights_t rights;           /* from "wsq": publish <- "pub", subscribe <- "sub", admin;
                                    * every item a valid pattern, items and strings malloc'd
                                    * (empty when opts->roles_claim is set) */
    wsq_strlist_t roles;  /* opts->roles_claim: its strings (a string, or an array's strings) */
    wsq_strlist_t values; /* opts->value_claims: the string value of each, in order (NULL for a
                           * claim that is absent or not a string) */
} wsq_jwt_claims_t;

/* What a deployment reads from a provider's claims (wsq_jwt_verify_keys). A claim "path" names a
 * top-level claim, or, when the claims have no member of that exact name, a path of members
 * separated by '.' ("realm_access.roles"); a namespaced claim such as
 * "https://example.com/roles" is found under its own name first. */
typedef struct {
    const char *identity_claim;        /* the identity; NULL: "sub" */
    const char *roles_claim;           /* role names; NULL: rights from the "wsq" claim */
    const wsq_strlist_t *value_claims; /* claims whose string values to hand back; may be NULL */
} wsq_jwt_opts_t;

/*
 * Verifies token[0..len) as an HS256 JWT and extracts its claims (see the top of this file for
 * exactly what is accepted).
 *
 *   token, len    the compact token, not NUL-terminated (no "Bearer " prefix, no whitespace).
 *                 Untrusted: any bytes are handled; nothing is read beyond len.
 *   secret        the HS256 key, 1..WSQ_JWT_SECRET_MAX bytes.
 *   issuer        expected "iss" (NUL-terminated), or NULL to accept any or none.
 *   audience      expected "aud" entry (NUL-terminated), or NULL to accept any or none.
 *   now_s         the current time in seconds since the epoch (passed in: no clock is read).
 *   leeway_s      clock skew tolerated on "exp" and "nbf", >= 0.
 *   out           receives the claims. Zeroed on every return, filled only on WSQ_OK; so
 *                 wsq_jwt_claims_fini(out) is always safe after the call, and needed after WSQ_OK.
 *   reason        if not NULL, receives a reason code from WSQ_JWT_REASON_LIST on failure and
 *                 "ok" on success: never NULL, static storage.
 *
 * Returns
 *   WSQ_OK                 the token is authentic, current and well-formed; *out owns its rights.
 *   WSQ_ERR_UNAUTHORIZED   refused; *reason says why (any reason but "nomem" and "internal").
 *   WSQ_ERR_NOMEM          an allocation failed (reason "nomem"); the token may be fine.
 *                          jansson 2.14 reports some of its own allocation failures as syntax
 *                          errors, so under memory exhaustion a good token may instead be
 *                          refused as "malformed": always a refusal, never an acceptance.
 *   WSQ_ERR_INVAL          token, secret or out is NULL, secret_len is 0 or above
 *                          WSQ_JWT_SECRET_MAX, or leeway_s < 0 (reason "internal").
 *   WSQ_ERR_INTERNAL       libcrypto failed to compute the HMAC (reason "internal").
 *
 * Any thread; reentrant. Uses about 8 KiB of stack (the decoded parts). Allocates only
 * transiently (jansson), except the rights handed back in *out.
 */
wsq_err wsq_jwt_verify(const char *token, size_t len, const unsigned char *secret,
                       size_t secret_len, const char *issuer, const char *audience, int64_t now_s,
                       int64_t leeway_s, wsq_jwt_claims_t *out, const char **reason);

/*
 * The same checks as wsq_jwt_verify, for a token signed with any algorithm of the set algs
 * (WSQ_JWT_ALG bits) under a key of ks: the header's "alg" must be in algs (else bad_alg), its
 * optional "kid" a string of at most WSQ_JWT_KID_MAX bytes (else bad_header); the key is the one
 * with that kid, or, without a kid, any key of the algorithm's type (unknown_key when there is
 * none). opts (may be NULL) names the identity claim, a roles claim (then "wsq" is not read: the
 * caller maps the roles to rights) and claims whose values to return (for topic templates); an
 * identity or roles claim of the wrong type is bad_claims. ES256/ES384 signatures are JOSE's r || s
 * (64 / 96 bytes), EdDSA is Ed25519, PS* use a salt as long as the hash (RFC 7518 section 3.5).
 * WSQ_ERR_INVAL as wsq_jwt_verify, and when ks is NULL or algs is 0.
 */
wsq_err wsq_jwt_verify_keys(const char *token, size_t len, const wsq_jwt_keys_t *ks, unsigned algs,
                            const char *issuer, const char *audience, int64_t now_s,
                            int64_t leeway_s, const wsq_jwt_opts_t *opts, wsq_jwt_claims_t *out,
                            const char **reason);

/* Frees the rights lists of c and zeroes it. Idempotent; c == NULL is a no-op. Any thread. */
void wsq_jwt_claims_fini(wsq_jwt_claims_t *c);

/*
 * Mints a token: header {"alg":"HS256","typ":"JWT"}, claims_json[0..len) as the payload, signed
 * with HMAC-SHA256(secret). For tests and tools (wsqctl may mint tokens).
 *
 * The claims bytes are signed verbatim and not validated, so that tests can mint authentic
 * tokens with malformed claims; a tool should check its result with wsq_jwt_verify.
 *
 *   token_out   receives a malloc'd NUL-terminated token on WSQ_OK (the caller frees it);
 *               untouched on error.
 *
 * Returns WSQ_OK; WSQ_ERR_INVAL (claims_json NULL with len > 0, secret or token_out NULL,
 * secret_len 0 or above WSQ_JWT_SECRET_MAX); WSQ_ERR_TOO_LARGE when the token would exceed
 * WSQ_JWT_TOKEN_MAX (wsq_jwt_verify would refuse it); WSQ_ERR_NOMEM; WSQ_ERR_INTERNAL when
 * libcrypto fails. Any thread; reentrant.
 */
wsq_err wsq_jwt_sign(const char *claims_json, size_t len, const unsigned char *secret,
                     size_t secret_len, char **token_out);

/* ------------------------------------------------------------------------------------------- */
/* The names the unit tests and the fuzz target use for base64url. The codec is proto's: strict
 * base64url as described above is wsq_base64url_encode/decode (wsq/proto.h); wsqjwt links
 * wsqproto for it. */

#define WSQ__B64URL_DECODED_MAX(n) WSQ_BASE64URL_DEC_MAX(n)
#define WSQ__B64URL_ENCODED_LEN(n) WSQ_BASE64URL_ENC_LEN(n)
#define wsq__b64url_decode wsq_base64url_decode
#define wsq__b64url_encode wsq_base64url_encode

#endif
