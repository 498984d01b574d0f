/*
 * The one road between wsqd's threads: a multi-producer, single-consumer queue of intrusive
 * nodes. Any thread pushes; the owner takes everything at once, in order. The owner is woken
 * either by a callback (the service thread: lws_cancel_service) called only when it was idle, or
 * by waiting on the mailbox itself (the consumer thread).
 *
 * The lock is held only to link or unlink lists, never across a wake-up or the owner's work.
 */
#ifndef WSQ_MAILBOX_H
#define WSQ_MAILBOX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Embedded first in every item that travels through a mailbox. */
typedef struct wsq_mail {
    struct wsq_mail *next;
} wsq_mail_t;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    wsq_mail_t *head, **tail;
    bool wake_pending;  /* wake() was called and the owner has not taken since */
    bool waiting;       /* the owner sleeps in wsq_mailbox_wait() */
    atomic_bool closed; /* pushes are dropped (read without the lock: see wsq_mailbox_closed) */
    void (*wake)(void *arg); /* NULL: the owner waits with wsq_mailbox_wait() */
    void *wake_arg;
    void (*drop)(wsq_mail_t *m); /* frees an item nobody will take */
} wsq_mailbox_t;

/* Sets up an empty, open mailbox. wake (may be NULL) is called, outside the lock, by the push
 * that finds the owner idle; drop frees items pushed after close and left at fini. */
void wsq_mailbox_init(wsq_mailbox_t *mb, void (*wake)(void *arg), void *wake_arg,
                      void (*drop)(wsq_mail_t *m));

/* Drops whatever is left. No thread may push any more. */
void wsq_mailbox_fini(wsq_mailbox_t *mb);

/* Any thread. Appends the list that starts at first (linked through next, NULL-terminated) in
 * one step, so that a batch arrives together. Ownership passes, always: after close the items
 * are dropped. */
void wsq_mailbox_push(wsq_mailbox_t *mb, wsq_mail_t *first);

/* Owner. Takes everything queued, oldest first (NULL when empty), and re-arms the wake-up. */
wsq_mail_t *wsq_mailbox_take(wsq_mailbox_t *mb);

/* Owner. Sleeps until mail arrives, the mailbox closes, or deadline_ms (CLOCK_REALTIME,
 * milliseconds; <= 0: no deadline) passes. Returns without sleeping when mail is there. */
void wsq_mailbox_wait(wsq_mailbox_t *mb, int64_t deadline_ms);

/* Any thread. From now on pushes are dropped and no wake-up is sent; a waiting owner returns.
 * What is queued stays for the owner to take. Returns false if it was closed already. */
bool wsq_mailbox_close(wsq_mailbox_t *mb);

/* Any thread, and signal handlers: one atomic load, no lock. */
bool wsq_mailbox_closed(wsq_mailbox_t *mb);

#endif
