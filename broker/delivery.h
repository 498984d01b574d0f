/*
 * The delivery thread (delivery.c; "the consumer thread", CT): owns every subscription's
 * delivery state and the in-memory mirror of attached durable consumers; reads the store for
 * subscriptions that have credit and hands pre-framed batches to the service thread's mailbox.
 * Commands reach it through its own mailbox, from the service thread and the writer; a command
 * owns what it carries (sub, req, topics), and ownership passes with the push.
 */
#ifndef WSQ_DELIVERY_H
#define WSQ_DELIVERY_H

#include <stdbool.h>
#include <stdint.h>

#include "mailbox.h"
#include "wsq/cstate.h"
#include "wsq/proto.h"
#include "wsq/store.h"
#include "wsq/topic.h"

typedef struct wsq_server wsq_server_t;
typedef struct wsq_consumers wsq_consumers_t;

typedef enum {
    CT_SUB = 1,         /* new subscription (sub) */
    CT_UNSUB,           /* drop one subscription */
    CT_ACK,             /* wsq.v1 ack of seq */
    CT_ACK_UPTO,        /* wsq.v1 cumulative ack */
    CT_NACK,            /* wsq.v1 nack seq with delay */
    CT_WRITTEN,         /* ST wrote count messages (bytes) of sub, the last being seq */
    CT_SESSION_GONE,    /* every subscription of sid ends */
    CT_COMMIT,          /* WT committed: topic heads changed (topic list attached) */
    CT_OPENED,          /* WT finished a TOPIC_ENSURE/CONSUMER_OPEN for a subscription (req) */
    CT_CONSUMER_DELETE, /* admin: forget a consumer, closing its session (sub: names) */
    CT_DEAD,            /* WT finished a DEAD_LETTER of seq (req) */
    CT_FETCH,           /* HTTP POST /fetch of session sid: count messages, wait delay_ms (sub) */
    CT_PULL_ACK,        /* HTTP POST /ack of session sid: seqs of consumer (sub) */
    CT_PULL_NACK,       /* HTTP POST /nack: seqs, delay_ms or term */
    CT_REAUTH,          /* a reload changed rights: sub (a pattern subscription) gets sub->rights */
} ct_kind_t;

typedef struct {
    char topic[WSQ_TOPIC_MAX + 1];
    size_t topic_len;
    char consumer[WSQ_CONSUMER_NAME_MAX + 1];
    size_t consumer_len;
    char ref[WSQ_REF_MAX + 1];
    wsq_from_t from;
    uint64_t from_seq;
    int64_t from_time;
    uint64_t latest_seq; /* the topic's next seq when the client asked ("latest" = from here) */
    uint32_t window;
    bool has_epoch;
    uint64_t epoch;
    bool raw;     /* raw-mode subscription: acked when written, gaps close the connection */
    bool shared;  /* joins the shared consumer `consumer` (competing members) */
    bool pull;    /* HTTP pull: the consumer's member that leases messages to POST /fetch */
    bool pattern; /* topic is a pattern: one subscription per readable matching topic */
    char *rights; /* pattern: the identity's subscribe patterns, each NUL-terminated (owned) */
    size_t rights_len;
} ct_sub_params_t;

typedef struct ct_cmd {
    wsq_mail_t mail; /* first: commands travel through the CT's mailbox */
    ct_kind_t kind;
    uint64_t sid;
    uint64_t sub_id;
    uint64_t seq;
    uint64_t bytes;
    uint32_t count;
    int64_t delay_ms;
    bool term;                  /* CT_NACK: give the message up now (dead letter) */
    ct_sub_params_t *sub;       /* CT_SUB, CT_CONSUMER_DELETE (owned) */
    wsq_wreq_t *req;            /* CT_OPENED, CT_CONSUMER_DELETE (owned) */
    wsq_commit_topic_t *topics; /* CT_COMMIT (owned) */
    uint32_t n_topics;
    char *reply; /* CT_UNSUB: the frame answering the unsub (owned; NULL: none), sent once the
                  * subscription has ended, after everything sent for it */
    size_t reply_len;
    uint64_t *seqs; /* CT_PULL_ACK, CT_PULL_NACK; CT_ACK: more seqs after seq (owned) */
    uint32_t n_seqs;
    char *topic; /* CT_ACK, CT_NACK of a pattern subscription: the message's topic (owned) */
} ct_cmd_t;

wsq_err wsq__ct_create(wsq_server_t *srv, wsq_consumers_t **out);
wsq_err wsq__ct_start(wsq_consumers_t *ct);
/* Stops and joins the thread; subscriptions' unsaved consumer state is written first. */
void wsq__ct_stop(wsq_consumers_t *ct);
void wsq__ct_destroy(wsq_consumers_t **ct);
/* Queues a command, or a list linked through mail.next (any thread; ownership passes, always:
 * a stopped thread frees them). */
void wsq__ct_push(wsq_consumers_t *ct, ct_cmd_t *cmd);
/* A zeroed command; NULL when out of memory. */
ct_cmd_t *wsq__ct_cmd(ct_kind_t kind, uint64_t sid, uint64_t sub_id);
void wsq__ct_cmd_free(ct_cmd_t *cmd);
/* Frees subscription parameters and what they own. */
void wsq__ct_params_free(ct_sub_params_t *p);

#endif
