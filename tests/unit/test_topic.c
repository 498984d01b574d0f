#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "wsq/err.h"
#include "wsq/topic.h"

static bool valid(const char *s)
{
    return wsq_topic_valid(s, strlen(s));
}

static bool match(const char *p, const char *n)
{
    return wsq_topic_match(p, n, strlen(n));
}

static void test_topic_valid_names(void **state)
{
    (void)state;
    assert_true(valid("a"));
    assert_true(valid("chat.room1"));
    assert_true(valid("chat/room-1/typing_x"));
    assert_true(valid("A.b/C-_9"));
    char max[256];
    memset(max, 'x', 255);
    max[255] = '\0';
    assert_true(valid(max));
}

static void test_topic_invalid_names(void **state)
{
    (void)state;
    assert_false(valid(""));
    assert_false(valid(".a"));
    assert_false(valid("a."));
    assert_false(valid("a..b"));
    assert_false(valid("a/.b"));
    assert_false(valid("a b"));
    assert_false(valid("a*"));
    assert_false(valid("*"));
    assert_false(valid(">"));
    assert_false(valid("caf\xc3\xa9"));
    assert_false(wsq_topic_valid("a\0b", 3));
    assert_false(wsq_topic_valid(NULL, 0));
    char big[257];
    memset(big, 'x', 256);
    big[256] = '\0';
    assert_false(valid(big));
}

static void test_topic_patterns(void **state)
{
    (void)state;
    assert_true(wsq_topic_pattern_valid("chat.*", 6));
    assert_true(wsq_topic_pattern_valid(">", 1));
    assert_true(wsq_topic_pattern_valid("a.*.c.>", 7));
    assert_false(wsq_topic_pattern_valid("a.>.c", 5));
    assert_false(wsq_topic_pattern_valid("a*", 2));
    assert_false(wsq_topic_pattern_valid("a.b>", 4));
}

static void test_topic_match(void **state)
{
    (void)state;
    assert_true(match("chat.room1", "chat.room1"));
    assert_false(match("chat.room1", "chat.room10"));
    assert_true(match("chat.*", "chat.room1"));
    assert_false(match("chat.*", "chat.room1.typing"));
    assert_false(match("chat.*", "chat"));
    assert_true(match("chat.>", "chat.room1"));
    assert_true(match("chat.>", "chat.room1.typing"));
    assert_false(match("chat.>", "chat"));
    assert_true(match(">", "anything.at/all"));
    assert_true(match("*.x", "a.x"));
    assert_false(match("*.x", "a.b.x"));
    assert_true(match("a/*/c", "a/b/c"));
    assert_false(match("a/*/c", "a.b.c")); /* separators match literally */
    assert_false(match("a.>.c", "a.b.c")); /* invalid pattern matches nothing */
    assert_false(match("chat.*", "bad..name"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic_valid_names),
        cmocka_unit_test(test_topic_invalid_names),
        cmocka_unit_test(test_topic_patterns),
        cmocka_unit_test(test_topic_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
