/* The cross-thread mailbox: see mailbox.h. */
#include <errno.h>
#include <stddef.h>
#include <time.h>

#include "mailbox.h"

void wsq_mailbox_init(wsq_mailbox_t *mb, void (*wake)(void *arg), void *wake_arg,
                      void (*drop)(wsq_mail_t *m))
{
    pthread_mutex_init(&mb->lock, NULL);
    pthread_cond_init(&mb->cond, NULL);
    mb->head = NULL;
    mb->tail = &mb->head;
    mb->wake_pending = false;
    mb->waiting = false;
    mb->closed = false;
    mb->wake = wake;
    mb->wake_arg = wake_arg;
    mb->drop = drop;
}

static void drop_list(wsq_mailbox_t *mb, wsq_mail_t *m)
{
    for (wsq_mail_t *nx; m; m = nx) {
        nx = m->next;
        mb->drop(m);
    }
}

void wsq_mailbox_fini(wsq_mailbox_t *mb)
{
    drop_list(mb, mb->head);
    mb->head = NULL;
    mb->tail = &mb->head;
    pthread_cond_destroy(&mb->cond);
    pthread_mutex_destroy(&mb->lock);
}

void wsq_mailbox_push(wsq_mailbox_t *mb, wsq_mail_t *first)
{
    if (first == NULL)
        return;
    wsq_mail_t *last = first;
    while (last->next)
        last = last->next;
    pthread_mutex_lock(&mb->lock);
    if (mb->closed) {
        pthread_mutex_unlock(&mb->lock);
        drop_list(mb, first);
        return;
    }
    *mb->tail = first;
    mb->tail = &last->next;
    bool signal = mb->waiting;
    mb->waiting = false;
    bool wake = mb->wake && !mb->wake_pending;
    mb->wake_pending = mb->wake_pending || wake;
    pthread_mutex_unlock(&mb->lock);
    if (signal)
        pthread_cond_signal(&mb->cond);
    if (wake)
        mb->wake(mb->wake_arg);
}

wsq_mail_t *wsq_mailbox_take(wsq_mailbox_t *mb)
{
    pthread_mutex_lock(&mb->lock);
    wsq_mail_t *m = mb->head;
    mb->head = NULL;
    mb->tail = &mb->head;
    mb->wake_pending = false;
    pthread_mutex_unlock(&mb->lock);
    return m;
}

void wsq_mailbox_wait(wsq_mailbox_t *mb, int64_t deadline_ms)
{
    struct timespec ts = {.tv_sec = deadline_ms / 1000, .tv_nsec = (deadline_ms % 1000) * 1000000};
    pthread_mutex_lock(&mb->lock);
    while (mb->head == NULL && !mb->closed) {
        mb->waiting = true;
        int rc = deadline_ms > 0 ? pthread_cond_timedwait(&mb->cond, &mb->lock, &ts)
                                 : pthread_cond_wait(&mb->cond, &mb->lock);
        mb->waiting = false;
        if (rc == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&mb->lock);
}

bool wsq_mailbox_close(wsq_mailbox_t *mb)
{
    pthread_mutex_lock(&mb->lock);
    bool was = mb->closed;
    mb->closed = true;
    pthread_mutex_unlock(&mb->lock);
    pthread_cond_broadcast(&mb->cond);
    return !was;
}

bool wsq_mailbox_closed(wsq_mailbox_t *mb)
{
    return atomic_load(&mb->closed);
}
