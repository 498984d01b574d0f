/* Harness internals shared by harness.c and client.c. */
#ifndef WSQT_INTERNAL_H
#define WSQT_INTERNAL_H

/* Creates the process's lws client context. */
void wsqt__client_init(void);
/* Prints the client connections (at most 20) on stderr, for failure reports. */
void wsqt__client_dump(void);
/* Frees every connection and destroys the context (idempotent). */
void wsqt__client_fini(void);

#endif
