/*
 * Topic names, topic patterns and durable consumer names. Pure functions, no allocation, any
 * thread.
 *
 * A topic name is 1-255 bytes from [A-Za-z0-9._/-]; '.' and '/' separate segments and no
 * segment is empty (so no leading, trailing or doubled separator).
 *
 * A pattern is a topic name in which a whole segment may be a wildcard:
 *   '*'  matches exactly one segment;
 *   '>'  (last segment only) matches one or more remaining segments.
 * "chat.*" matches "chat.room1" but not "chat.room1.typing"; "chat.>" matches both; ">" matches
 * every topic. Separators must match literally ("a.b" and "a/b" are different topics).
 *
 * A durable consumer name is 1-WSQ_CONSUMER_NAME_MAX (128, wsq/cstate.h) bytes from
 * [A-Za-z0-9._-].
 */
#ifndef WSQ_TOPIC_H
#define WSQ_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

#define WSQ_TOPIC_MAX 255

/* True when name[0..len) is a valid topic name. */
bool wsq_topic_valid(const char *name, size_t len);

/* True when pattern[0..plen) is a valid pattern (a valid name, or one with wildcard segments). */
bool wsq_topic_pattern_valid(const char *pattern, size_t plen);

/* True when the NUL-terminated pattern matches name[0..len). Invalid patterns match nothing. */
bool wsq_topic_match(const char *pattern, const char *name, size_t len);

/*
 * Rights templates: a pattern whose segments may hold "{claim}" placeholders, e.g.
 * "user.{sub}.>". A claim name is 1..WSQ_TEMPLATE_NAME_MAX bytes of [A-Za-z0-9_.-].
 *
 * wsq_topic_template_expand writes tmpl into out (cap bytes) with each placeholder replaced by
 * the value of its name: vals[i] for names[i] (n of them). It returns false, and the template
 * matches nothing, when a name is not among names, its value is NULL, or the value is not one
 * valid topic segment (1+ bytes of [A-Za-z0-9_-]: never '.', '/', '*' or '>', so a value cannot
 * reach into another user's topics), or when the result is not a valid pattern or does not fit.
 * With vals NULL, every known name reads as "x" (a check of the template's shape).
 */
#define WSQ_TEMPLATE_NAME_MAX 64
bool wsq_topic_template_expand(const char *tmpl, const char *const *names, const char *const *vals,
                               size_t n, char *out, size_t cap);

/* True when name[0..len) is a valid durable consumer name. name may be NULL (false). */
bool wsq_consumer_valid(const char *name, size_t len);

#endif
