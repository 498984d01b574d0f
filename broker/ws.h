/*
 * The WebSocket transport (ws.c, service thread only): the upgrade check, and for an
 * established connection its inbound reassembly (size cap, UTF-8), the writes of its queue, the
 * close handshake and liveness pings. Complete messages go to the session's front-end
 * (fe_raw.c, fe_wsq.c), chosen by the subprotocol the client asked for.
 */
#ifndef WSQ_WS_H
#define WSQ_WS_H

#include <libwebsockets.h>
#include <stddef.h>
#include <stdint.h>

#include "wsq/err.h"
#include "wsq/proto.h"

typedef struct wsq_server wsq_server_t;

/* lws callback of both WebSocket protocols (wsq.v1 and the raw default). */
int wsq__ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len);

/* Liveness: pings sessions idle for limits.ping_interval, drops those silent for
 * limits.idle_timeout. Visits a slice of the sessions per call (every tick), so the whole
 * table is covered every ping_interval / 4 at O(n) cost. */
void wsq__sessions_ping(wsq_server_t *srv, int64_t now_ns, int64_t tick_ns);

/* fe_raw.c: the raw-mode target of an upgrade request (its path and query). WSQ_ERR_NOTFOUND
 * when the path is not /topics/<topic>; err says what is wrong. */
wsq_err wsq__raw_target(struct lws *wsi, wsq_raw_target_t *t, char *err, size_t errlen);

#endif
