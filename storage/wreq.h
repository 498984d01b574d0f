/*
 * Write requests, the part of the store API that no backend owns: wsq_wreq_t's allocation, the
 * checks every request passes before a backend queues it, its completion, and wsq_store_call
 * (built on wsq_store_submit). Shared by the storage/ sources only; nothing outside storage/
 * includes it.
 */
#ifndef WSQ_STORAGE_WREQ_H
#define WSQ_STORAGE_WREQ_H

#include "wsq/store.h"

/* Checks the fields of r for its op, as wsq_store_submit documents: WSQ_ERR_INVAL (bad op,
 * consumer name, consumer state, purge mode or payload pointer), WSQ_ERR_BAD_TOPIC,
 * WSQ_ERR_TOO_LARGE. Pure; any thread. */
wsq_err wsq__wreq_validate(const wsq_wreq_t *r);

/* Completes r: hands it to its done callback, or frees it when it has none. r must be unlinked
 * (r->next NULL) and r->err final; the caller gives up r. On the thread that completes requests
 * (the writer thread). */
void wsq__wreq_complete(wsq_wreq_t *r);

#endif
