/*
 * What jwt.c and jwk.c share privately: the key set's layout and the signature check. The API
 * is include/wsq/jwt.h.
 */
#ifndef WSQ_COMMON_JWK_H
#define WSQ_COMMON_JWK_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>

#include "wsq/jwt.h"

/* Key types; an algorithm needs one (RS and PS: RSA; ES256: EC P-256; ...). */
typedef enum { KTY_OCT = 1, KTY_RSA, KTY_EC256, KTY_EC384, KTY_ED25519 } kty_t;

typedef struct {
    char kid[WSQ_JWT_KID_MAX + 1]; /* "" when the key has none */
    kty_t kty;
    EVP_PKEY *pk;          /* public key (not KTY_OCT) */
    unsigned char *secret; /* KTY_OCT */
    size_t secret_len;
} jwk_t;

struct wsq_jwt_keys {
    jwk_t *v;
    size_t n, cap;
    bool borrowed; /* v is not ours (wsq_jwt_verify's one HS256 secret) */
};

/* The check of a token's signature: sig[0..sig_len) over data[0..len) under the key of the
 * algorithm alg (one WSQ_JWT_ALG_* bit): every key of the algorithm's type is tried whose kid
 * is the token's kid, or which has none, or all of them when the token has no kid. Returns "ok",
 * "bad_signature", "unknown_key" (no key of the type, or none with that kid), "nomem" or
 * "internal". */
const char *wsq__jwt_sig_check(const struct wsq_jwt_keys *ks, unsigned alg, const char *kid,
                               const unsigned char *data, size_t len, const unsigned char *sig,
                               size_t sig_len);

#endif
