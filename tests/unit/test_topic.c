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

/* Rights templates: a value fills exactly one segment; anything that would reach another
 * user's topics ('.', '/', '*', '>', empty, absent) makes the template match nothing. */
static void test_topic_templates(void **state)
{
    (void)state;
    static const char *const names[] = {"sub", "tenant", "a.b"};
    char out[WSQ_TOPIC_MAX + 1];
    const char *vals[] = {"alice", "acme", "x1"};
    assert_true(wsq_topic_template_expand("user.{sub}.>", names, vals, 3, out, sizeof(out)));
    assert_string_equal(out, "user.alice.>");
    assert_true(
        wsq_topic_template_expand("t/{tenant}/u-{sub}/*", names, vals, 3, out, sizeof(out)));
    assert_string_equal(out, "t/acme/u-alice/*");
    assert_true(wsq_topic_template_expand("{a.b}", names, vals, 3, out, sizeof(out)));
    assert_string_equal(out, "x1");
    assert_true(wsq_topic_template_expand("plain.>", names, vals, 3, out, sizeof(out)));
    /* injection attempts through the value */
    static const char *const evil[] = {"a.b", "a/b", ">", "*", "", "bob.>", "a b", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
        const char *v[] = {evil[i], "acme", "x1"};
        if (wsq_topic_template_expand("user.{sub}.>", names, v, 3, out, sizeof(out)))
            fail_msg("value '%s' expanded to '%s'", evil[i], out);
    }
    const char *absent[] = {NULL, "acme", "x1"};
    assert_false(wsq_topic_template_expand("user.{sub}", names, absent, 3, out, sizeof(out)));
    /* malformed templates and unknown names */
    static const char *const bad[] = {"user.{nope}", "user.{sub", "user.sub}",   "user.{}",
                                      "{sub}..x",    "a.{sub}>",  "user.{s{ub}}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(wsq_topic_template_expand(bad[i], names, vals, 3, out, sizeof(out)));
    /* the shape check (no values) and a result that does not fit */
    assert_true(wsq_topic_template_expand("user.{sub}.>", names, NULL, 3, out, sizeof(out)));
    assert_string_equal(out, "user.x.>");
    assert_false(wsq_topic_template_expand("user.{sub}", names, vals, 3, out, 8));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic_valid_names), cmocka_unit_test(test_topic_invalid_names),
        cmocka_unit_test(test_topic_patterns),    cmocka_unit_test(test_topic_match),
        cmocka_unit_test(test_topic_templates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
