/*
 * Who a client is and what it may do (auth.c), and the checks a browser's request must pass.
 * Service thread only, except wsq__allowed (pure).
 */
#ifndef WSQ_AUTH_H
#define WSQ_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "wsq/config.h"

struct lws;
typedef struct wsq_server wsq_server_t;

typedef enum { WSQ_ID_ANON = 0, WSQ_ID_TOKEN, WSQ_ID_JWT } wsq_id_kind_t;

/* Who a connection is. Rights of ANON and TOKEN identities point into the config in force (a
 * reload re-resolves them by name); a JWT identity owns the rights from its claims. */
typedef struct {
    char name[256]; /* "anonymous", a token's name or a JWT's identity claim (printable UTF-8:
                     * logs quote it with wsq__log_q) */
    wsq_id_kind_t kind;
    const wsq_rights_t *rights; /* never NULL once resolved */
    wsq_rights_t *owned;        /* JWT: rights from the claims, freed with the identity */
    int64_t expires_ms;         /* JWT exp in ms; 0 = never */
    unsigned char digest[32];   /* TOKEN: SHA-256 of the token presented */
    bool anonymous;
} wsq_identity_t;

/* Frees what an identity owns (JWT rights). */
void wsq__identity_fini(wsq_identity_t *id);
/* Moves src into dst (dst's old content is freed). */
void wsq__identity_move(wsq_identity_t *dst, wsq_identity_t *src);
/* Re-resolves rights after a reload; false when the credentials were withdrawn. */
bool wsq__identity_refresh(wsq_server_t *srv, wsq_identity_t *id);

typedef enum { WSQ_RIGHT_PUBLISH, WSQ_RIGHT_SUBSCRIBE } wsq_right_t;
/* Does id hold right on topic? Pure. */
bool wsq__allowed(const wsq_identity_t *id, wsq_right_t right, const char *topic, size_t len);

/* Identity of an upgrade or HTTP request: Authorization: Bearer, ?token=, or anonymous.
 * WSQ_ERR_UNAUTHORIZED with a reason in err. */
wsq_err wsq__upgrade_identity(wsq_server_t *srv, struct lws *wsi, wsq_identity_t *id, char *err,
                              size_t errlen);
/* A static token or a JWT. WSQ_ERR_UNAUTHORIZED. */
wsq_err wsq__auth_token(wsq_server_t *srv, const char *token, size_t len, wsq_identity_t *id);
/* A JWT (HS256, auth.jwt): on failure *why says which check failed. */
wsq_err wsq__auth_jwt(wsq_server_t *srv, const char *token, size_t len, wsq_identity_t *id,
                      wsq_authf_t *why);

/* What the browser checks found out about a request. */
typedef struct {
    bool browser;     /* it carries an Origin: a browser sent it */
    bool listed;      /* its Origin is in auth.allowed_origins: answers carry CORS headers */
    char origin[320]; /* the Origin header ("" without one) */
} wsq_browser_t;

/* Browser checks of an HTTP request or WebSocket upgrade:
 *   - on a loopback listener, Host must name it (localhost, 127.x.y.z or [::1], its port):
 *     DNS rebinding;
 *   - an Origin must be in auth.allowed_origins ("*" allows any), or be the request's own
 *     origin (scheme of the listener, the Host's name and port).
 * WSQ_OK, or an error with the HTTP status to answer (400 malformed or too long, 403 refused)
 * and a message in err. */
wsq_err wsq__browser_check(wsq_server_t *srv, struct lws *wsi, wsq_browser_t *b, unsigned *status,
                           char *err, size_t errlen);

#endif
