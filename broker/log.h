/* Structured logging (log.c): one line per event, text or JSON; any thread. */
#ifndef WSQ_LOG_H
#define WSQ_LOG_H

#include <stdbool.h>

#include "wsq/config.h"

/* Sets the level and format; the service thread, at start and on reload. */
void wsq__log_init(wsq_log_level_t level, bool json);
/* One event: fmt gives space-separated key=value pairs (values with spaces quoted). */
void wsq__log(wsq_log_level_t level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A value for a log field that may hold anything printable (an identity from a JWT): s as is
 * when it is a plain word (printable ASCII without space, '"', '\\' or '='), else "s" with '"'
 * and '\\' escaped and control bytes as \xNN (cut at a character boundary if long); written
 * into buf (cap bytes). Returns buf. */
const char *wsq__log_q(char *buf, size_t cap, const char *s);
#define WSQ_LOG_Q_MAX 600 /* room for a quoted identity (255 bytes) */

#define wsq_err_log(ev, ...) wsq__log(WSQ_LOG_ERROR, ev, __VA_ARGS__)
#define wsq_warn_log(ev, ...) wsq__log(WSQ_LOG_WARN, ev, __VA_ARGS__)
#define wsq_info_log(ev, ...) wsq__log(WSQ_LOG_INFO, ev, __VA_ARGS__)
#define wsq_debug_log(ev, ...) wsq__log(WSQ_LOG_DEBUG, ev, __VA_ARGS__)

/* sd_notify (notify.c): "READY=1", "RELOADING=1", "STOPPING=1" to $NOTIFY_SOCKET; any thread. */
void wsq__notify(const char *state);

#endif
