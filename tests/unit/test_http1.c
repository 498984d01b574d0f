/* The HTTP/1.1 request framer (include/wsq/http1.h, broker/proto_http1.c) and the WebSocket
 * client-frame scanner (include/wsq/wsrx.h, broker/proto_wsrx.c): exact states, statuses, error
 * codes and byte counts, for every rule, at every split of the input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wsq/http1.h"
#include "wsq/wsrx.h"

#define MAX_HEAD 8192u
#define CLEN0_LEN (sizeof(WSQ_H1_CLEN0) - 1)

/* ------------------------------------------------------------------------------------------- */
/* Helpers                                                                                     */

static const uint8_t *u8(const char *s)
{
    return (const uint8_t *)s;
}

static const char *state_name(wsq_h1_state_t s)
{
    static const char *const names[] = {"HEAD", "BODY", "DONE", "UPGRADE", "ERROR"};
    return (unsigned)s < 5 ? names[s] : "?";
}

/* Feeds p[0..len) as the gate does: while the framer asks for the injected line, it is
 * "handed" (wsq_h1_injected) and feeding goes on from the same byte. Returns the input bytes
 * taken; *injects (may be NULL) counts the injections. */
static size_t feed_all(wsq_h1_t *f, const char *p, size_t len, unsigned *injects)
{
    size_t used = 0;
    for (;;) {
        size_t n = wsq_h1_feed(f, u8(p) + used, len - used);
        if (n > len - used)
            fail_msg("feed took %zu of %zu bytes", n, len - used);
        used += n;
        if (!f->inject)
            return used;
        assert_int_equal(f->state, WSQ_H1_HEAD);
        assert_true(used < len);
        assert_int_equal(p[used], '\r'); /* stopped before the empty line's CR */
        /* while inject is set, nothing is taken */
        assert_int_equal(wsq_h1_feed(f, u8(p) + used, len - used), 0);
        wsq_h1_injected(f);
        assert_int_equal(f->inject, 0);
        if (injects)
            (*injects)++;
    }
}

/* One whole request, accepted: the framer takes all of it and ends in state. */
static void frame_ok(const char *what, const char *req, wsq_h1_state_t state, uint64_t body_left)
{
    wsq_h1_t f;
    wsq_h1_init(&f, MAX_HEAD);
    size_t len = strlen(req);
    size_t used = feed_all(&f, req, len, NULL);
    if (f.state != state || used != len)
        fail_msg("%s: state %s, took %zu of %zu (want %s, all): %s", what, state_name(f.state),
                 used, len, state_name(state), f.state == WSQ_H1_ERROR ? f.reason : "");
    assert_int_equal(f.body_left, body_left);
}

/* A malformed request: ok is the part the framer takes, bad (badlen bytes, or strlen) starts
 * with the byte it refuses. Checks status, code, the bytes taken and that nothing more is. */
typedef struct {
    const char *what;
    const char *ok;
    const char *bad;
    size_t badlen; /* 0: strlen(bad) */
    unsigned status;
    wsq_err code;
} bad_row_t;

static void check_bad_max(const bad_row_t *r, uint32_t max_head)
{
    size_t oklen = strlen(r->ok), badlen = r->badlen ? r->badlen : strlen(r->bad);
    char *req = malloc(oklen + badlen + 1);
    assert_non_null(req);
    memcpy(req, r->ok, oklen);
    memcpy(req + oklen, r->bad, badlen);
    wsq_h1_t f;
    wsq_h1_init(&f, max_head);
    size_t used = feed_all(&f, req, oklen + badlen, NULL);
    if (f.state != WSQ_H1_ERROR || f.status != r->status || f.code != r->code || used != oklen)
        fail_msg("%s: state %s status %u code %s took %zu (want ERROR %u %s took %zu) reason %s",
                 r->what, state_name(f.state), f.status, wsq_errname(f.code), used, r->status,
                 wsq_errname(r->code), oklen, f.reason ? f.reason : "(null)");
    assert_non_null(f.reason);
    assert_true(f.reason[0] != '\0');
    assert_int_equal(f.inject, 0);
    /* in ERROR nothing more is taken, and wsq_h1_next() does not leave it */
    assert_int_equal(wsq_h1_feed(&f, u8(req) + used, oklen + badlen - used), 0);
    assert_int_equal(wsq_h1_feed(&f, u8("GET / HTTP/1.1\r\n"), 16), 0);
    wsq_h1_next(&f);
    assert_int_equal(f.state, WSQ_H1_ERROR);
    assert_int_equal(wsq_h1_feed(&f, u8("G"), 1), 0);
    free(req);
}

static void check_bad_rows(const bad_row_t *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        check_bad_max(&rows[i], MAX_HEAD);
}

#define ROWS(a) (a), sizeof(a) / sizeof((a)[0])
#define BAD400 400, WSQ_ERR_BAD_REQUEST

/* ------------------------------------------------------------------------------------------- */
/* Accepted requests                                                                           */

static void test_http1_get_done(void **state)
{
    (void)state;
    wsq_h1_t f;
    wsq_h1_init(&f, MAX_HEAD);
    assert_int_equal(f.state, WSQ_H1_HEAD);
    assert_int_equal(f.max_head, MAX_HEAD);
    const char *req = "GET /topics/a/messages?from=1&limit=2 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n"
                      "Accept: */*\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n";
    assert_int_equal(wsq_h1_feed(&f, u8(req), strlen(req)), strlen(req));
    assert_int_equal(f.state, WSQ_H1_DONE);
    assert_int_equal(f.body_left, 0);
    assert_int_equal(f.inject, 0);
    /* DONE takes nothing until wsq_h1_next() */
    assert_int_equal(wsq_h1_feed(&f, u8(req), strlen(req)), 0);
    assert_int_equal(f.state, WSQ_H1_DONE);
}

static void test_http1_every_method(void **state)
{
    (void)state;
    static const char *const methods[] = {"GET", "HEAD", "DELETE", "OPTIONS"};
    char req[128];
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        snprintf(req, sizeof(req), "%s /x HTTP/1.1\r\nHost: h\r\n\r\n", methods[i]);
        frame_ok(methods[i], req, WSQ_H1_DONE, 0);
    }
    /* the body methods, with a Content-Length: their body follows */
    static const char *const body_methods[] = {"POST", "PUT", "PATCH"};
    for (size_t i = 0; i < sizeof(body_methods) / sizeof(body_methods[0]); i++) {
        snprintf(req, sizeof(req), "%s /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n",
                 body_methods[i]);
        frame_ok(body_methods[i], req, WSQ_H1_BODY, 3);
    }
}

static void test_http1_body_then_done(void **state)
{
    (void)state;
    wsq_h1_t f;
    wsq_h1_init(&f, MAX_HEAD);
    const char *head = "POST /topics/t HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n";
    size_t hl = strlen(head);
    assert_int_equal(wsq_h1_feed(&f, u8(head), hl), hl);
    assert_int_equal(f.state, WSQ_H1_BODY);
    assert_int_equal(f.body_left, 10);
    assert_int_equal(wsq_h1_feed(&f, u8("0123"), 4), 4);
    assert_int_equal(f.state, WSQ_H1_BODY);
    assert_int_equal(f.body_left, 6);
    /* any bytes are body bytes, even ones that look like a request */
    assert_int_equal(wsq_h1_feed(&f, u8("\r\n\r\n\0"), 5), 5);
    assert_int_equal(f.body_left, 1);
    /* the last body byte, and nothing of what follows */
    assert_int_equal(wsq_h1_feed(&f, u8("9GET"), 4), 1);
    assert_int_equal(f.state, WSQ_H1_DONE);
    assert_int_equal(f.body_left, 0);
    wsq_h1_next(&f);
    assert_int_equal(f.state, WSQ_H1_HEAD);
    assert_int_equal(f.max_head, MAX_HEAD);
    assert_int_equal(f.head_len, 0);
}

static void test_http1_next_only_after_done(void **state)
{
    (void)state;
    wsq_h1_t f;
    wsq_h1_init(&f, MAX_HEAD);
    const char *part = "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n";
    assert_int_equal(wsq_h1_feed(&f, u8(part), 10), 10);
    wsq_h1_next(&f); /* HEAD: no effect */
    assert_int_equal(f.state, WSQ_H1_HEAD);
    assert_int_equal(wsq_h1_feed(&f, u8(part) + 10, strlen(part) - 10), strlen(part) - 10);
    assert_int_equal(f.state, WSQ_H1_BODY);
    wsq_h1_next(&f); /* BODY: no effect */
    assert_int_equal(f.state, WSQ_H1_BODY);
    assert_int_equal(f.body_left, 2);
    assert_int_equal(wsq_h1_feed(&f, u8("ab"), 2), 2);
    assert_int_equal(f.state, WSQ_H1_DONE);
    wsq_h1_injected(&f); /* not asked for: no effect */
    assert_int_equal(f.state, WSQ_H1_DONE);
    wsq_h1_next(&f);
    assert_int_equal(f.state, WSQ_H1_HEAD);
}

static void test_http1_http10_without_host(void **state)
{
    (void)state;
    frame_ok("HTTP/1.0 GET, no Host", "GET /healthz HTTP/1.0\r\n\r\n", WSQ_H1_DONE, 0);
    frame_ok("HTTP/1.0 GET, Host", "GET /healthz HTTP/1.0\r\nHost: h\r\n\r\n", WSQ_H1_DONE, 0);
    frame_ok("HTTP/1.0 POST, no Host", "POST /t HTTP/1.0\r\nContent-Length: 2\r\n\r\n", WSQ_H1_BODY,
             2);
}

static void test_http1_host_any_case(void **state)
{
    (void)state;
    frame_ok("HOST", "GET / HTTP/1.1\r\nHOST: h\r\n\r\n", WSQ_H1_DONE, 0);
    frame_ok("hOsT", "GET / HTTP/1.1\r\nhOsT: h\r\n\r\n", WSQ_H1_DONE, 0);
    frame_ok("one byte, no space", "GET / HTTP/1.1\r\nHost:h\r\n\r\n", WSQ_H1_DONE, 0);
    frame_ok("blanks around", "GET / HTTP/1.1\r\nHost: \t h:80 \t\r\n\r\n", WSQ_H1_DONE, 0);
}

static void test_http1_content_length_forms(void **state)
{
    (void)state;
    frame_ok("plain", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n", WSQ_H1_BODY, 12);
    frame_ok("whitespace around", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: \t 12 \t\r\n\r\n",
             WSQ_H1_BODY, 12);
    frame_ok("no whitespace", "POST /t HTTP/1.1\r\nHost: h\r\ncontent-length:7\r\n\r\n",
             WSQ_H1_BODY, 7);
    frame_ok("leading zeros", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 0005\r\n\r\n",
             WSQ_H1_BODY, 5);
    frame_ok("zero", "POST /t HTTP/1.1\r\nHost: h\r\nCONTENT-LENGTH: 0\r\n\r\n", WSQ_H1_DONE, 0);
    frame_ok("on a GET", "GET /t HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n", WSQ_H1_BODY, 1);
    /* 2^53 is the largest accepted */
    frame_ok("2^53", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 9007199254740992\r\n\r\n",
             WSQ_H1_BODY, 9007199254740992ull);
    /* a value of 24 bytes, blanks included, is the longest */
    frame_ok("24 bytes",
             "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length:00000000000000000000012\r\n\r\n",
             WSQ_H1_BODY, 12);
    frame_ok("24 bytes with blanks",
             "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length:          12          \r\n\r\n",
             WSQ_H1_BODY, 12);
}

static void test_http1_target_forms(void **state)
{
    (void)state;
    frame_ok("root", "GET / HTTP/1.1\r\nHost: h\r\n\r\n", WSQ_H1_DONE, 0);
    frame_ok("every RFC 3986 char",
             "GET /azAZ09-._~!$&'()*+,;=:@/?q=/?:@!$'()*+,= HTTP/1.1\r\nHost: h\r\n\r\n",
             WSQ_H1_DONE, 0);
    frame_ok("escapes", "GET /a%20b%2F%0a%FF%7e?x=%01%10 HTTP/1.1\r\nHost: h\r\n\r\n", WSQ_H1_DONE,
             0);
    frame_ok("%00-like but not NUL", "GET /%300%100%0F HTTP/1.1\r\nHost: h\r\n\r\n", WSQ_H1_DONE,
             0);
    frame_ok("empty query", "GET /t? HTTP/1.1\r\nHost: h\r\n\r\n", WSQ_H1_DONE, 0);
}

static void test_http1_header_values(void **state)
{
    (void)state;
    frame_ok("obs-text and tabs",
             "GET / HTTP/1.1\r\nHost: h\r\nX: \x80\xff\t\xc3\xa9 \"q\"\r\n\r\n", WSQ_H1_DONE, 0);
    frame_ok("every tchar in a name",
             "GET / HTTP/1.1\r\nHost: h\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n", WSQ_H1_DONE, 0);
    /* a name longer than the framer's buffer is some other header, not a framing one */
    frame_ok("long name",
             "GET / HTTP/1.1\r\nHost: h\r\nContent-Length-And-Much-More-Than-24: x\r\n\r\n",
             WSQ_H1_DONE, 0);
    frame_ok("23-byte name", "GET / HTTP/1.1\r\nHost: h\r\nX-Twenty-Three-Chars-Ab: x\r\n\r\n",
             WSQ_H1_DONE, 0);
}

/* ------------------------------------------------------------------------------------------- */
/* Refused requests, one row per rule                                                          */

static void test_http1_line_ends_crlf_only(void **state)
{
    (void)state;
    static const bad_row_t rows[] = {
        {"bare LF ends the request line", "GET / HTTP/1.1", "\nHost: h\n\n", 0, BAD400},
        {"bare LF ends a header line", "GET / HTTP/1.1\r\nHost: h", "\nX: y\r\n\r\n", 0, BAD400},
        {"bare LF is the empty line", "GET / HTTP/1.1\r\nHost: h\r\n", "\n", 0, BAD400},
        {"bare LF first", "", "\n", 0, BAD400},
        {"bare CR ends the request line", "GET / HTTP/1.1\r", "Host: h\r\n\r\n", 0, BAD400},
        {"bare CR ends a header line", "GET / HTTP/1.1\r\nHost: h\r", "X: y\r\n\r\n", 0, BAD400},
        {"bare CR is the empty line", "GET / HTTP/1.1\r\nHost: h\r\n\r", "\r\n", 0, BAD400},
        {"CR CR LF", "GET / HTTP/1.1\r\nHost: h\r", "\r\n\r\n", 0, BAD400},
        {"bare CR in a value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r", "b\r\n\r\n", 0, BAD400},
        {"LF in a name", "GET / HTTP/1.1\r\nHost: h\r\nX-A", "\n: b\r\n\r\n", 0, BAD400},
        {"bare CR in a POST's empty line", "POST /t HTTP/1.1\r\nHost: h\r\n\r", "X", 0, BAD400},
    };
    check_bad_rows(ROWS(rows));
}

static void test_http1_request_line(void **state)
{
    (void)state;
    static const bad_row_t rows[] = {
        {"empty method", "", " / HTTP/1.1\r\n", 0, BAD400},
        {"lower-case method", "", "get / HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"digit in method", "GE", "1 / HTTP/1.1\r\n", 0, BAD400},
        {"tab after the method", "GET", "\t/ HTTP/1.1\r\n", 0, BAD400},
        {"two spaces after the method", "GET ", " / HTTP/1.1\r\n", 0, BAD400},
        {"absolute-form target", "GET ", "http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"asterisk-form target", "OPTIONS ", "* HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"authority-form target", "GET ", "h:80 HTTP/1.1\r\n", 0, BAD400},
        {"no target", "GET ", "HTTP/1.1\r\n", 0, BAD400},
        {"no version", "GET /", "\r\nHost: h\r\n\r\n", 0, BAD400},
        {"empty version", "GET / ", "\r\nHost: h\r\n\r\n", 0, BAD400},
        {"two spaces before the version", "GET / ", " HTTP/1.1\r\n", 0, BAD400},
        {"space after the version", "GET / HTTP/1.1", " \r\n", 0, BAD400},
        {"tab in the target", "GET /a", "\tb HTTP/1.1\r\n", 0, BAD400},
        {"three words in the target", "GET /a b", " HTTP/1.1\r\n", 0, BAD400},
        {"version too long", "GET / HTTP/1.1", "1\r\n", 0, BAD400},
        {"version with a control char", "GET / HTTP", "\x01/1.1\r\n", 0, BAD400},
        {"NUL in the method", "GE", "\0T / HTTP/1.1\r\n", 15, BAD400},
    };
    check_bad_rows(ROWS(rows));
    /* a version that is not HTTP's: refused at its CR, every byte before it read */
    static const bad_row_t at_cr[] = {
        {"not HTTP", "GET / FTP/1.1", "\r\nHost: h\r\n\r\n", 0, BAD400},
        {"lower-case http", "GET / http/1.1", "\r\nHost: h\r\n\r\n", 0, BAD400},
    };
    check_bad_rows(ROWS(at_cr));
}

static void test_http1_methods_not_implemented(void **state)
{
    (void)state;
    static const bad_row_t rows[] = {
        {"BREW", "BREW", " / HTTP/1.1\r\nHost: h\r\n\r\n", 0, 501, WSQ_ERR_BAD_REQUEST},
        {"TRACE", "TRACE", " / HTTP/1.1\r\nHost: h\r\n\r\n", 0, 501, WSQ_ERR_BAD_REQUEST},
        {"CONNECT", "CONNECT", " h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 0, 501, WSQ_ERR_BAD_REQUEST},
        {"PRI (HTTP/2 preface)", "PRI", " * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, 501,
         WSQ_ERR_BAD_REQUEST},
        {"GETS", "GETS", " / HTTP/1.1\r\n", 0, 501, WSQ_ERR_BAD_REQUEST},
        {"GE", "GE", " / HTTP/1.1\r\n", 0, 501, WSQ_ERR_BAD_REQUEST},
        /* a method longer than any implemented one is refused at its 8th letter */
        {"PROPFINDX", "PROPFIN", "DX / HTTP/1.1\r\n", 0, 501, WSQ_ERR_BAD_REQUEST},
        {"OPTIONSS", "OPTIONS", "S / HTTP/1.1\r\n", 0, 501, WSQ_ERR_BAD_REQUEST},
    };
    check_bad_rows(ROWS(rows));
}

static void test_http1_target_chars(void **state)
{
    (void)state;
    static const bad_row_t rows[] = {
        {"double quote", "GET /a", "\"b HTTP/1.1\r\n", 0, BAD400},
        {"less-than", "GET /a", "<b HTTP/1.1\r\n", 0, BAD400},
        {"greater-than", "GET /a", ">b HTTP/1.1\r\n", 0, BAD400},
        {"fragment", "GET /a", "#f HTTP/1.1\r\n", 0, BAD400},
        {"brace", "GET /a", "{b} HTTP/1.1\r\n", 0, BAD400},
        {"backslash", "GET /a", "\\b HTTP/1.1\r\n", 0, BAD400},
        {"caret", "GET /a", "^b HTTP/1.1\r\n", 0, BAD400},
        {"backtick", "GET /a", "`b HTTP/1.1\r\n", 0, BAD400},
        {"pipe", "GET /a", "|b HTTP/1.1\r\n", 0, BAD400},
        {"square bracket", "GET /a?x=", "[1] HTTP/1.1\r\n", 0, BAD400},
        {"UTF-8 byte", "GET /a", "\xc3\xa9 HTTP/1.1\r\n", 0, BAD400},
        {"DEL", "GET /a", "\x7f HTTP/1.1\r\n", 0, BAD400},
        {"control char", "GET /a", "\x01 HTTP/1.1\r\n", 0, BAD400},
        {"NUL byte", "GET /a", "\0 HTTP/1.1\r\n", 12, BAD400},
        {"CR in the target", "GET /a", "\r\n", 0, BAD400},
        {"bare LF after the target", "GET /a", "\n", 0, BAD400},
    };
    check_bad_rows(ROWS(rows));
}

static void test_http1_percent_escapes(void **state)
{
    (void)state;
    static const bad_row_t rows[] = {
        {"%00 in the path", "GET /a%0", "0b HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"%00 in the query", "GET /a?x=%0", "0 HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"%00 first", "GET /%0", "0 HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"non-hex first digit", "GET /a%", "g0 HTTP/1.1\r\n", 0, BAD400},
        {"non-hex second digit", "GET /a%2", "g HTTP/1.1\r\n", 0, BAD400},
        {"escape cut by a space", "GET /a%2", " HTTP/1.1\r\n", 0, BAD400},
        {"escape cut by the end of the target", "GET /a%", " HTTP/1.1\r\n", 0, BAD400},
        {"escape of an escape", "GET /a%", "%41 HTTP/1.1\r\n", 0, BAD400},
    };
    check_bad_rows(ROWS(rows));
}

/* lws rewrites "//", "/./" and "/../" in a path before wsq sees it: the framer refuses them,
 * escaped or not, in the path only. */
static void test_http1_path_segments(void **state)
{
    (void)state;
    static const bad_row_t rows[] = {
        {"//", "GET /", "/healthz HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"// inside", "GET /topics/a/", "/b HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"trailing //", "GET /a/", "/ HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"/./", "GET /a/.", "/b HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"/../", "GET /a/.", "./b HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"/..x", "GET /topics/.", ".x HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"/. at the end", "GET /a/.", " HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"/. before the query", "GET /a/.", "?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"/.. at the end", "GET /.", ". HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"escaped /", "GET /a/%2", "F HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"escaped //", "GET /a%2F%2", "f HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"escaped dots", "GET /a/%2e%2", "E/b HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"escaped dot, then /", "GET /a/%2e", "/b HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
        {"escaped dot at the end", "GET /a/%2e", " HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400},
    };
    check_bad_rows(ROWS(rows));
    frame_ok("dots inside segments", "GET /a.b/.c/c./a..b/x.. HTTP/1.1\r\nHost: h\r\n\r\n",
             WSQ_H1_DONE, 0);
    frame_ok("/ alone", "GET / HTTP/1.1\r\nHost: h\r\n\r\n", WSQ_H1_DONE, 0);
    frame_ok("/.x", "GET /.x HTTP/1.1\r\nHost: h\r\n\r\n", WSQ_H1_DONE, 0);
    frame_ok("the query is not a path", "GET /t?a=//./../&b=/.. HTTP/1.1\r\nHost: h\r\n\r\n",
             WSQ_H1_DONE, 0);
    frame_ok("escaped in the query", "GET /t?a=%2F%2F%2e%2e HTTP/1.1\r\nHost: h\r\n\r\n",
             WSQ_H1_DONE, 0);
}

/* "/p?a=0&a=1..." with n parameters, sep between them */
static void query_with(char *out, size_t outlen, unsigned n, char sep)
{
    size_t o = (size_t)snprintf(out, outlen, "GET /topics/t/messages?a=0");
    for (unsigned i = 1; i < n; i++)
        o += (size_t)snprintf(out + o, outlen - o, "%ca=%u", sep, i);
}

static void test_http1_query_params_limit(void **state)
{
    (void)state;
    static const char seps[] = {'&', ';'};
    char q[1024], req[1200];
    for (size_t s = 0; s < sizeof(seps); s++) {
        /* 24 parameters: accepted */
        query_with(q, sizeof(q), WSQ_H1_MAX_QUERY_PARAMS, seps[s]);
        snprintf(req, sizeof(req), "%s HTTP/1.1\r\nHost: h\r\n\r\n", q);
        frame_ok("24 query parameters", req, WSQ_H1_DONE, 0);
        /* 25: refused at the separator that starts the 25th */
        query_with(q, sizeof(q), WSQ_H1_MAX_QUERY_PARAMS + 1, seps[s]);
        char *last = strrchr(q, seps[s]);
        bad_row_t r = {"25 query parameters", NULL, NULL, 0, BAD400};
        snprintf(req, sizeof(req), "%s HTTP/1.1\r\nHost: h\r\n\r\n", last);
        *last = '\0';
        r.ok = q;
        r.bad = req;
        check_bad_max(&r, MAX_HEAD);
    }
    /* the two separators count together; empty parameters count; escaped ones do not */
    char mixed[256] = "GET /t?";
    for (int i = 0; i < WSQ_H1_MAX_QUERY_PARAMS - 1; i++)
        strcat(mixed, i % 2 ? "&" : ";");
    strcat(mixed, "%26%3B%26 HTTP/1.1\r\nHost: h\r\n\r\n");
    frame_ok("24 empty parameters and escaped separators", mixed, WSQ_H1_DONE, 0);
    bad_row_t r = {"25 empty parameters", NULL, "& HTTP/1.1\r\nHost: h\r\n\r\n", 0, BAD400};
    char ok[128] = "GET /t?";
    for (int i = 0; i < WSQ_H1_MAX_QUERY_PARAMS - 1; i++)
        strcat(ok, "&");
    r.ok = ok;
    check_bad_max(&r, MAX_HEAD);
    /* separators before the '?' are path characters */
    char path[256] = "GET /";
    for (int i = 0; i < 40; i++)
        strcat(path, "&;");
    strcat(path, "?a HTTP/1.1\r\nHost: h\r\n\r\n");
    frame_ok("separators in the path", path, WSQ_H1_DONE, 0);
}

static void test_http1_versions(void **state)
{
    (void)state;
    static const bad_row_t rows[] = {
        {"HTTP/2.0", "GET / HTTP/2.0", "\r\nHost: h\r\n\r\n", 0, 505, WSQ_ERR_BAD_REQUEST},
        {"HTTP/1.2", "GET / HTTP/1.2", "\r\nHost: h\r\n\r\n", 0, 505, WSQ_ERR_BAD_REQUEST},
        {"HTTP/0.9", "GET / HTTP/0.9", "\r\n\r\n", 0, 505, WSQ_ERR_BAD_REQUEST},
        {"HTTP/3.0", "POST /t HTTP/3.0", "\r\nHost: h\r\n\r\n", 0, 505, WSQ_ERR_BAD_REQUEST},
        {"HTTP/9.9", "GET / HTTP/9.9", "\r\n\r\n", 0, 505, WSQ_ERR_BAD_REQUEST},
    };
    check_bad_rows(ROWS(rows));
    frame_ok("HTTP/1.1", "GET / HTTP/1.1\r\nHost: h\r\n\r\n", WSQ_H1_DONE, 0);
    frame_ok("HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", WSQ_H1_DONE, 0);
}

static void test_http1_header_names(void **state)
{
    (void)state;
    static const bad_row_t rows[] = {
        {"space before the colon", "GET / HTTP/1.1\r\nHost", " : h\r\n\r\n", 0, BAD400},
        {"tab before the colon", "GET / HTTP/1.1\r\nHost", "\t: h\r\n\r\n", 0, BAD400},
        {"Content-Length before a space", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length",
         " : 5\r\n\r\nhello", 0, BAD400},
        {"space in a name", "GET / HTTP/1.1\r\nHost: h\r\nX", " Y: z\r\n\r\n", 0, BAD400},
        {"parenthesis in a name", "GET / HTTP/1.1\r\nHost: h\r\nX", "(y): z\r\n\r\n", 0, BAD400},
        {"slash in a name", "GET / HTTP/1.1\r\nHost: h\r\nX", "/y: z\r\n\r\n", 0, BAD400},
        {"UTF-8 in a name", "GET / HTTP/1.1\r\nHost: h\r\nX", "\xc3\xa9: z\r\n\r\n", 0, BAD400},
        {"empty name", "GET / HTTP/1.1\r\nHost: h\r\n", ": z\r\n\r\n", 0, BAD400},
        {"no colon", "GET / HTTP/1.1\r\nHost: h\r\nNoColon", "\r\n\r\n", 0, BAD400},
        {"NUL in a name", "GET / HTTP/1.1\r\nHost: h\r\nX", "\0: z\r\n\r\n", 8, BAD400},
        {"DEL in a name", "GET / HTTP/1.1\r\nHost: h\r\nX", "\x7f: z\r\n\r\n", 0, BAD400},
    };
    check_bad_rows(ROWS(rows));
}

static void test_http1_obs_fold(void **state)
{
    (void)state;
    static const bad_row_t rows[] = {
        {"space-folded line", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n", " b\r\n\r\n", 0, BAD400},
        {"tab-folded line", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n", "\tb\r\n\r\n", 0, BAD400},
        {"whitespace before the first header", "GET / HTTP/1.1\r\n", " Host: h\r\n\r\n", 0, BAD400},
        {"folded empty value", "GET / HTTP/1.1\r\nHost: h\r\nX:\r\n", " y\r\n\r\n", 0, BAD400},
    };
    check_bad_rows(ROWS(rows));
}

static void test_http1_value_control_chars(void **state)
{
    (void)state;
    static const bad_row_t rows[] = {
        {"NUL in a value", "GET / HTTP/1.1\r\nHost: h\r\nX: a", "\0b\r\n\r\n", 6, BAD400},
        {"0x01 in a value", "GET / HTTP/1.1\r\nHost: h\r\nX: a",
         "\x01"
         "b\r\n\r\n",
         0, BAD400},
        {"0x1f in a value", "GET / HTTP/1.1\r\nHost: h\r\nX: ", "\x1f\r\n\r\n", 0, BAD400},
        {"DEL in a value", "GET / HTTP/1.1\r\nHost: h\r\nX: a", "\x7f\r\n\r\n", 0, BAD400},
        {"ESC in the Host", "GET / HTTP/1.1\r\nHost: h", "\x1b\r\n\r\n", 0, BAD400},
        {"vertical tab", "GET / HTTP/1.1\r\nHost: h\r\nX: a", "\vb\r\n\r\n", 0, BAD400},
        {"form feed in Upgrade", "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: web", "\fsocket\r\n\r\n", 0,
         BAD400},
    };
    check_bad_rows(ROWS(rows));
}

static void test_http1_host_required_once(void **state)
{
    (void)state;
    static const bad_row_t rows[] = {
        {"HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX: y\r\n\r", "\n", 0, BAD400},
        {"HTTP/1.1 without any header", "GET / HTTP/1.1\r\n\r", "\n", 0, BAD400},
        {"HTTP/1.1 POST without Host", "POST /t HTTP/1.1\r\nContent-Length: 2\r\n\r", "\nab", 0,
         BAD400},
        {"duplicate Host", "GET / HTTP/1.1\r\nHost: a\r\nHost", ": a\r\n\r\n", 0, BAD400},
        {"duplicate Host, other case", "GET / HTTP/1.1\r\nhost: a\r\nHOST", ": b\r\n\r\n", 0,
         BAD400},
        {"duplicate Host in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost", ": b\r\n\r\n", 0,
         BAD400},
        {"Host-like name is not Host", "GET / HTTP/1.1\r\nHosts: a\r\n\r", "\n", 0, BAD400},
        /* an empty Host is refused at the LF that ends it */
        {"empty Host", "GET / HTTP/1.1\r\nHost:\r", "\n\r\n", 0, BAD400},
        {"blank Host", "GET / HTTP/1.1\r\nHost: \t \r", "\n\r\n", 0, BAD400},
        {"empty Host in HTTP/1.0", "GET / HTTP/1.0\r\nHost: \r", "\n\r\n", 0, BAD400},
    };
    check_bad_rows(ROWS(rows));
}

static void test_http1_content_length_rules(void **state)
{
    (void)state;
    static const bad_row_t rows[] = {
        {"duplicate, same value",
         "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
         "Content-Length",
         ": 1\r\n\r\nab", 0, BAD400},
        {"duplicate, other value",
         "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
         "content-length",
         ": 2\r\n\r\nab", 0, BAD400},
        {"letters", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 1", "a\r\n\r\n", 0, BAD400},
        {"negative", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: ", "-1\r\n\r\n", 0, BAD400},
        {"plus sign", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: ", "+1\r\n\r\n", 0, BAD400},
        {"hex", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 0", "x10\r\n\r\n", 0, BAD400},
        {"list", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 5", ", 5\r\n\r\n", 0, BAD400},
        {"two numbers", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 1 ", "2\r\n\r\n", 0,
         BAD400},
        {"decimal point", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 1", ".0\r\n\r\n", 0,
         BAD400},
        {"empty", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length:\r", "\n\r\n", 0, BAD400},
        {"only whitespace", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: \t \r", "\n\r\n", 0,
         BAD400},
        {"2^53 + 1", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 900719925474099", "3\r\n\r\n",
         0, 413, WSQ_ERR_TOO_LARGE},
        {"2^64", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 1844674407370955", "1616\r\n\r\n",
         0, 413, WSQ_ERR_TOO_LARGE},
        {"100 digits", "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 999999999999999",
         "999999999999999999999999999\r\n\r\n", 0, 413, WSQ_ERR_TOO_LARGE},
        /* a value of more than 24 bytes, blanks included, is refused at its 25th */
        {"25 bytes with zeros",
         "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length:000000000000000000000005", "5\r\n\r\n", 0,
         BAD400},
        {"25 bytes with blanks",
         "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length:                    1234", "5\r\n\r\n", 0,
         BAD400},
        {"25 bytes, trailing blank",
         "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 00000000000000000000005", " \r\n\r\n", 0,
         BAD400},
    };
    check_bad_rows(ROWS(rows));
}

static void test_http1_transfer_encoding_411(void **state)
{
    (void)state;
    static const bad_row_t rows[] = {
        {"chunked POST", "POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r",
         "\n5\r\nhello\r\n0\r\n\r\n", 0, 411, WSQ_ERR_BAD_REQUEST},
        {"identity", "POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r", "\n", 0,
         411, WSQ_ERR_BAD_REQUEST},
        {"empty value", "PUT /t HTTP/1.1\r\nHost: h\r\ntransfer-encoding:\r\n\r", "\n", 0, 411,
         WSQ_ERR_BAD_REQUEST},
        {"with Content-Length",
         "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r",
         "\nabc", 0, 411, WSQ_ERR_BAD_REQUEST},
        {"on a GET", "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r", "\n0\r\n\r\n",
         0, 411, WSQ_ERR_BAD_REQUEST},
        {"on HTTP/1.0", "POST /t HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r", "\n", 0, 411,
         WSQ_ERR_BAD_REQUEST},
        /* the Host rule is checked first */
        {"and no Host", "POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r", "\n", 0, BAD400},
    };
    check_bad_rows(ROWS(rows));
}

static void test_http1_upgrade_rules(void **state)
{
    (void)state;
    static const bad_row_t rows[] = {
        {"POST upgrade",
         "POST / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
         "Content-Length: 0\r\n\r",
         "\n", 0, BAD400},
        {"upgrade with a body",
         "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
         "Content-Length: 3\r\n\r",
         "\nabc", 0, BAD400},
        {"POST upgrade without Content-Length",
         "POST / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r", "\n", 0, BAD400},
    };
    check_bad_rows(ROWS(rows));
#define KEYV "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    const char *ws = "GET /topics/t HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\n" KEYV "\r\n";
    frame_ok("upgrade", ws, WSQ_H1_UPGRADE, 0);
    frame_ok("upgrade, any case",
             "GET / HTTP/1.1\r\nHost: h\r\nupgrade:  WebSocket\r\n" KEYV "\r\n", WSQ_H1_UPGRADE, 0);
    frame_ok("upgrade, Content-Length 0",
             "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nContent-Length: 0\r\n" KEYV "\r\n",
             WSQ_H1_UPGRADE, 0);
    frame_ok("upgrade on HTTP/1.0", "GET / HTTP/1.0\r\nUpgrade: websocket\r\n" KEYV "\r\n",
             WSQ_H1_UPGRADE, 0);
    frame_ok("websocket in another header",
             "GET / HTTP/1.1\r\nHost: h\r\nX-Upgrade: websocket\r\nConnection: websocket\r\n\r\n",
             WSQ_H1_DONE, 0);
    /* lws compares the whole Upgrade value with "websocket" and answers anything else with its
     * own HTML page (h2c: it tries HTTP/2 on clear text): refused here instead */
    static const bad_row_t others[] = {
        {"upgrade, in a list", "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: foo, websocket\r\n\r", "\n",
         0, BAD400},
        {"h2c", "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n\r", "\n", 0, BAD400},
        {"websock et", "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websock et\r\n\r", "\n", 0, BAD400},
        {"trailing blank", "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket \r\n" KEYV "\r", "\n",
         0, BAD400},
        {"no key",
         "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
         "Sec-WebSocket-Version: 13\r\n\r",
         "\n", 0, BAD400},
        {"empty key",
         "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nSec-WebSocket-Key: \r\n"
         "Sec-WebSocket-Version: 13\r\n\r",
         "\n", 0, BAD400},
        {"version 8",
         "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
         "Sec-WebSocket-Key: a\r\nSec-WebSocket-Version: 8\r\n\r",
         "\n", 0, BAD400},
        {"two Upgrades", "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nUpgrade: websocket\r",
         "\n\r\n", 0, BAD400},
    };
    check_bad_rows(ROWS(others));
}

/* ------------------------------------------------------------------------------------------- */
/* Limits                                                                                      */

/* A GET head of exactly len bytes (len >= 40), padded in one header value. */
static char *head_of_len(size_t len)
{
    const char *pre = "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ", *post = "\r\n\r\n";
    size_t fixed = strlen(pre) + strlen(post);
    assert_true(len >= fixed);
    char *s = malloc(len + 1);
    assert_non_null(s);
    strcpy(s, pre);
    memset(s + strlen(pre), 'p', len - fixed);
    strcpy(s + len - strlen(post), post);
    assert_int_equal(strlen(s), len);
    return s;
}

static void test_http1_max_head_boundary(void **state)
{
    (void)state;
    static const uint32_t limits[] = {64, 100, 4096, 65535};
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        uint32_t m = limits[i];
        /* exactly max_head bytes, final LF included: accepted */
        char *s = head_of_len(m);
        wsq_h1_t f;
        wsq_h1_init(&f, m);
        assert_int_equal(wsq_h1_feed(&f, u8(s), m), m);
        assert_int_equal(f.state, WSQ_H1_DONE);
        assert_true(f.head_len <= m);
        free(s);
        /* one byte more: refused at that byte, the last LF */
        s = head_of_len(m + 1);
        wsq_h1_init(&f, m);
        assert_int_equal(wsq_h1_feed(&f, u8(s), m + 1), m);
        assert_int_equal(f.state, WSQ_H1_ERROR);
        assert_int_equal(f.status, 431);
        assert_int_equal(f.code, WSQ_ERR_TOO_LARGE);
        assert_non_null(f.reason);
        assert_int_equal(wsq_h1_feed(&f, u8(s) + m, 1), 0);
        free(s);
    }
    /* a long request line alone */
    char line[300];
    memset(line, 'a', sizeof(line));
    memcpy(line, "GET /", 5);
    wsq_h1_t f;
    wsq_h1_init(&f, 200);
    assert_int_equal(wsq_h1_feed(&f, u8(line), sizeof(line)), 200);
    assert_int_equal(f.status, 431);
    /* the limit counts the head only: a body larger than it is fine */
    wsq_h1_init(&f, 64);
    const char *post = "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n";
    assert_int_equal(wsq_h1_feed(&f, u8(post), strlen(post)), strlen(post));
    assert_int_equal(f.state, WSQ_H1_BODY);
    char body[1000];
    memset(body, 'b', sizeof(body));
    assert_int_equal(wsq_h1_feed(&f, u8(body), sizeof(body)), sizeof(body));
    assert_int_equal(f.state, WSQ_H1_DONE);
    /* and each request of a connection has its own budget */
    wsq_h1_next(&f);
    assert_int_equal(wsq_h1_feed(&f, u8(post), strlen(post)), strlen(post));
    assert_int_equal(f.state, WSQ_H1_BODY);
    /* max_head 0: nothing at all */
    wsq_h1_init(&f, 0);
    assert_int_equal(wsq_h1_feed(&f, u8("GET"), 3), 0);
    assert_int_equal(f.status, 431);
}

/* A GET with n header lines in all (Host first). */
static char *head_with_headers(unsigned n, size_t *len)
{
    char *s = malloc(64 + (size_t)n * 16);
    assert_non_null(s);
    size_t o = (size_t)sprintf(s, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (unsigned i = 1; i < n; i++)
        o += (size_t)sprintf(s + o, "X-%u: %u\r\n", i, i);
    o += (size_t)sprintf(s + o, "\r\n");
    *len = o;
    return s;
}

static void test_http1_header_count_limit(void **state)
{
    (void)state;
    size_t len;
    char *s = head_with_headers(WSQ_H1_MAX_HEADERS, &len);
    wsq_h1_t f;
    wsq_h1_init(&f, MAX_HEAD);
    assert_int_equal(wsq_h1_feed(&f, u8(s), len), len);
    assert_int_equal(f.state, WSQ_H1_DONE);
    free(s);
    /* 65: refused at the LF that ends the 65th line */
    s = head_with_headers(WSQ_H1_MAX_HEADERS + 1, &len);
    wsq_h1_init(&f, MAX_HEAD);
    assert_int_equal(wsq_h1_feed(&f, u8(s), len), len - 3);
    assert_int_equal(s[len - 3], '\n');
    assert_int_equal(f.state, WSQ_H1_ERROR);
    assert_int_equal(f.status, 431);
    assert_int_equal(f.code, WSQ_ERR_TOO_LARGE);
    assert_non_null(f.reason);
    free(s);
    /* 3000 small ones: refused at the 65th as well */
    s = head_with_headers(3000, &len);
    size_t at = 0;
    for (unsigned lines = 0; lines < WSQ_H1_MAX_HEADERS + 2; at++)
        lines += s[at] == '\n'; /* the request line's LF, then 65 header lines */
    wsq_h1_init(&f, 1u << 20);
    assert_int_equal(wsq_h1_feed(&f, u8(s), len), at - 1);
    assert_int_equal(f.status, 431);
    free(s);
    /* the empty line is not a header line: 64 headers and a POST's injected line fit */
    s = head_with_headers(WSQ_H1_MAX_HEADERS, &len);
    memcpy(s, "PUT", 3);
    wsq_h1_init(&f, MAX_HEAD);
    unsigned injects = 0;
    assert_int_equal(feed_all(&f, s, len, &injects), len);
    assert_int_equal(injects, 1);
    assert_int_equal(f.state, WSQ_H1_DONE);
    free(s);
}

/* ------------------------------------------------------------------------------------------- */
/* The inject protocol                                                                         */

static void test_http1_inject_post_without_length(void **state)
{
    (void)state;
    static const char *const methods[] = {"POST", "PUT", "PATCH"};
    char req[128];
    for (size_t i = 0; i < 3; i++) {
        int len =
            snprintf(req, sizeof(req), "%s /topics/t HTTP/1.1\r\nHost: h\r\n\r\nGET", methods[i]);
        size_t cr = (size_t)len - 3 - 2; /* the empty line's CR */
        wsq_h1_t f;
        wsq_h1_init(&f, MAX_HEAD);
        assert_int_equal(wsq_h1_feed(&f, u8(req), (size_t)len), cr);
        assert_int_equal(req[cr], '\r');
        assert_int_equal(f.inject, 1);
        assert_int_equal(f.state, WSQ_H1_HEAD);
        /* until the line is handed over, nothing more is taken */
        assert_int_equal(wsq_h1_feed(&f, u8(req) + cr, (size_t)len - cr), 0);
        assert_int_equal(f.inject, 1);
        wsq_h1_injected(&f);
        assert_int_equal(f.inject, 0);
        /* CR and LF, not a byte of what follows */
        assert_int_equal(wsq_h1_feed(&f, u8(req) + cr, (size_t)len - cr), 2);
        assert_int_equal(f.state, WSQ_H1_DONE);
        assert_int_equal(f.body_left, 0);
        assert_int_equal(f.inject, 0);
    }
    /* the CR alone, then the LF alone */
    wsq_h1_t f;
    wsq_h1_init(&f, MAX_HEAD);
    const char *head = "POST /t HTTP/1.0\r\n";
    assert_int_equal(wsq_h1_feed(&f, u8(head), strlen(head)), strlen(head));
    assert_int_equal(f.inject, 0);
    assert_int_equal(wsq_h1_feed(&f, u8("\r"), 1), 0);
    assert_int_equal(f.inject, 1);
    wsq_h1_injected(&f);
    assert_int_equal(wsq_h1_feed(&f, u8("\r"), 1), 1);
    assert_int_equal(f.state, WSQ_H1_HEAD);
    assert_int_equal(wsq_h1_feed(&f, u8("\n"), 1), 1);
    assert_int_equal(f.state, WSQ_H1_DONE);
    /* a method without a body and a POST with a length: never */
    static const char *const no_inject[] = {
        "GET /t HTTP/1.1\r\nHost: h\r\n\r\n",
        "DELETE /t HTTP/1.1\r\nHost: h\r\n\r\n",
        "HEAD /t HTTP/1.1\r\nHost: h\r\n\r\n",
        "OPTIONS /t HTTP/1.1\r\nHost: h\r\n\r\n",
        "POST /t HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(no_inject) / sizeof(no_inject[0]); i++) {
        wsq_h1_init(&f, MAX_HEAD);
        assert_int_equal(wsq_h1_feed(&f, u8(no_inject[i]), strlen(no_inject[i])),
                         strlen(no_inject[i]));
        assert_int_equal(f.inject, 0);
        assert_int_equal(f.state, WSQ_H1_DONE);
    }
    /* nor a chunked POST: it is refused (411) at the empty line's LF */
    wsq_h1_init(&f, MAX_HEAD);
    const char *te = "POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(wsq_h1_feed(&f, u8(te), strlen(te)), strlen(te) - 1);
    assert_int_equal(f.inject, 0);
    assert_int_equal(f.status, 411);
}

static void test_http1_inject_then_next_request(void **state)
{
    (void)state;
    /* two POSTs without a length, pipelined: each gets its line, each stops at its end */
    const char *two = "POST /a HTTP/1.1\r\nHost: h\r\n\r\nPUT /b HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t first = strlen("POST /a HTTP/1.1\r\nHost: h\r\n\r\n");
    wsq_h1_t f;
    wsq_h1_init(&f, MAX_HEAD);
    unsigned injects = 0;
    assert_int_equal(feed_all(&f, two, strlen(two), &injects), first);
    assert_int_equal(injects, 1);
    assert_int_equal(f.state, WSQ_H1_DONE);
    wsq_h1_next(&f);
    assert_int_equal(feed_all(&f, two + first, strlen(two) - first, &injects), strlen(two) - first);
    assert_int_equal(injects, 2);
    assert_int_equal(f.state, WSQ_H1_DONE);
}

/* ------------------------------------------------------------------------------------------- */
/* Where a request ends                                                                        */

static void test_http1_pipelined_stop_at_end(void **state)
{
    (void)state;
    const char *r1 = "POST /topics/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    const char *r2 = "GET /topics/a/messages HTTP/1.1\r\nHost: h\r\n\r\n";
    const char *r3 = "POST /topics/b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz";
    char buf[512];
    snprintf(buf, sizeof(buf), "%s%s%s", r1, r2, r3);
    size_t l1 = strlen(r1), l2 = strlen(r2), l3 = strlen(r3), all = strlen(buf);
    wsq_h1_t f;
    wsq_h1_init(&f, MAX_HEAD);
    /* the first feed stops exactly after the first body */
    assert_int_equal(wsq_h1_feed(&f, u8(buf), all), l1);
    assert_int_equal(f.state, WSQ_H1_DONE);
    assert_int_equal(f.body_left, 0);
    /* and takes nothing more, however often it is offered */
    for (int i = 0; i < 3; i++)
        assert_int_equal(wsq_h1_feed(&f, u8(buf) + l1, all - l1), 0);
    assert_int_equal(f.state, WSQ_H1_DONE);
    wsq_h1_next(&f);
    assert_int_equal(wsq_h1_feed(&f, u8(buf) + l1, all - l1), l2);
    assert_int_equal(f.state, WSQ_H1_DONE);
    assert_int_equal(wsq_h1_feed(&f, u8(buf) + l1 + l2, all - l1 - l2), 0);
    wsq_h1_next(&f);
    assert_int_equal(wsq_h1_feed(&f, u8(buf) + l1 + l2, all - l1 - l2), l3);
    assert_int_equal(f.state, WSQ_H1_DONE);
    assert_int_equal(l1 + l2 + l3, all);
    /* a request after a malformed one is never read */
    snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\n\r\n%s", r2);
    wsq_h1_init(&f, MAX_HEAD);
    assert_int_equal(wsq_h1_feed(&f, u8(buf), strlen(buf)), strlen("GET / HTTP/1.1\r\n\r"));
    assert_int_equal(f.status, 400);
    wsq_h1_next(&f);
    assert_int_equal(wsq_h1_feed(&f, u8(r2), l2), 0);
}

static void test_http1_upgrade_stops_before_frames(void **state)
{
    (void)state;
    const char *head = "GET /topics/t HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n";
    /* a masked text frame "hi", then bytes that would be a request */
    static const char frames[] = "\x81\x82\x01\x02\x03\x04\x69\x6b"
                                 "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    char buf[512];
    size_t hl = strlen(head), fl = sizeof(frames) - 1;
    memcpy(buf, head, hl);
    memcpy(buf + hl, frames, fl);
    wsq_h1_t f;
    wsq_h1_init(&f, MAX_HEAD);
    assert_int_equal(wsq_h1_feed(&f, u8(buf), hl + fl), hl);
    assert_int_equal(f.state, WSQ_H1_UPGRADE);
    assert_int_equal(wsq_h1_feed(&f, u8(buf) + hl, fl), 0);
    wsq_h1_next(&f); /* UPGRADE is final */
    assert_int_equal(f.state, WSQ_H1_UPGRADE);
    assert_int_equal(wsq_h1_feed(&f, u8(buf) + hl, fl), 0);
    /* what follows is WebSocket: the scanner takes it */
    wsq_wsrx_t w;
    wsq_wsrx_init(&w);
    assert_int_equal(wsq_wsrx_scan(&w, u8(buf) + hl, 8), 8);
    assert_false(w.unmasked);
}

/* ------------------------------------------------------------------------------------------- */
/* Every split frames the same                                                                 */

#define TRACE_MAX 1024

/* What the framer said after each feed that took bytes, by the input offset it reached. */
typedef struct {
    bool set[TRACE_MAX + 1];
    wsq_h1_state_t state[TRACE_MAX + 1];
    uint64_t body_left[TRACE_MAX + 1];
} trace_t;

/* The outcome of reading a stream as the gate does. */
typedef struct {
    size_t used;          /* input bytes taken */
    unsigned requests;    /* requests framed to DONE */
    size_t ends[16];      /* the offset after each of them */
    unsigned injects;     /* injected lines */
    wsq_h1_state_t state; /* where reading stopped: HEAD/BODY (wants more), UPGRADE, ERROR */
    unsigned status;
} outcome_t;

/* Reads p[0..len), available in pieces ending at cuts[0..ncuts) and then len. ref: record
 * (record=true) or check against (record=false) a byte-at-a-time trace. */
static void read_pieces(const char *what, const char *p, size_t len, const size_t *cuts,
                        size_t ncuts, trace_t *ref, bool record, outcome_t *o)
{
    assert_true(len <= TRACE_MAX);
    memset(o, 0, sizeof(*o));
    wsq_h1_t f;
    wsq_h1_init(&f, MAX_HEAD);
    for (size_t c = 0; c <= ncuts; c++) {
        size_t avail = c < ncuts ? cuts[c] : len;
        for (;;) {
            if (o->used == avail)
                break;
            size_t n = wsq_h1_feed(&f, u8(p) + o->used, avail - o->used);
            assert_true(n <= avail - o->used);
            o->used += n;
            if (n > 0 && f.state != WSQ_H1_ERROR) { /* an error takes no byte: see outcome */
                if (record) {
                    ref->set[o->used] = true;
                    ref->state[o->used] = f.state;
                    ref->body_left[o->used] = f.body_left;
                } else if (!ref->set[o->used] || ref->state[o->used] != f.state ||
                           ref->body_left[o->used] != f.body_left) {
                    fail_msg("%s: cut at %zu: at offset %zu state %s body_left %llu, byte at a "
                             "time: %s %llu",
                             what, ncuts ? cuts[0] : 0, o->used, state_name(f.state),
                             (unsigned long long)f.body_left,
                             ref->set[o->used] ? state_name(ref->state[o->used]) : "never here",
                             (unsigned long long)ref->body_left[o->used]);
                }
            }
            if (f.inject) {
                wsq_h1_injected(&f);
                o->injects++;
                continue;
            }
            if (f.state == WSQ_H1_DONE) {
                assert_int_equal(f.body_left, 0);
                assert_true(o->requests < 16);
                o->ends[o->requests++] = o->used;
                wsq_h1_next(&f);
                continue;
            }
            if (f.state == WSQ_H1_UPGRADE || f.state == WSQ_H1_ERROR)
                goto out;
            assert_int_equal(o->used, avail); /* HEAD or BODY: the piece was all taken */
        }
    }
out:
    o->state = f.state;
    o->status = f.status;
}

static void assert_same_outcome(const char *what, size_t cut, const outcome_t *a,
                                const outcome_t *b)
{
    if (a->used != b->used || a->requests != b->requests || a->injects != b->injects ||
        a->state != b->state || a->status != b->status ||
        memcmp(a->ends, b->ends, sizeof(a->ends)) != 0)
        fail_msg("%s: cut at %zu: took %zu, %u requests, %u injects, %s %u; byte at a time: "
                 "%zu, %u, %u, %s %u",
                 what, cut, b->used, b->requests, b->injects, state_name(b->state), b->status,
                 a->used, a->requests, a->injects, state_name(a->state), a->status);
}

static void check_all_splits(const char *what, const char *p, size_t len, unsigned want_requests,
                             wsq_h1_state_t want_state)
{
    static trace_t ref;
    static size_t cuts[TRACE_MAX];
    memset(&ref, 0, sizeof(ref));
    for (size_t i = 1; i < len; i++)
        cuts[i - 1] = i;
    outcome_t one, o;
    read_pieces(what, p, len, cuts, len - 1, &ref, true, &one);
    if (one.requests != want_requests || one.state != want_state)
        fail_msg("%s: %u requests, state %s (want %u, %s)", what, one.requests,
                 state_name(one.state), want_requests, state_name(want_state));
    /* body_left counts down one byte at a time through each body */
    for (size_t i = 1; i < one.used; i++)
        if (ref.set[i] && ref.set[i + 1] && ref.state[i] == WSQ_H1_BODY &&
            ref.body_left[i + 1] != ref.body_left[i] - 1)
            fail_msg("%s: body_left %llu then %llu", what, (unsigned long long)ref.body_left[i],
                     (unsigned long long)ref.body_left[i + 1]);
    /* whole */
    read_pieces(what, p, len, NULL, 0, &ref, false, &o);
    assert_same_outcome(what, 0, &one, &o);
    /* every split in two */
    for (size_t c = 1; c < len; c++) {
        read_pieces(what, p, len, &c, 1, &ref, false, &o);
        assert_same_outcome(what, c, &one, &o);
    }
    /* and some in many, at random */
    uint32_t x = 2463534242u;
    for (int k = 0; k < 200; k++) {
        size_t n = 0;
        for (size_t i = 1; i < len; i++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            if (x % 7 == 0)
                cuts[n++] = i;
        }
        read_pieces(what, p, len, cuts, n, &ref, false, &o);
        assert_same_outcome(what, n ? cuts[0] : 0, &one, &o);
    }
}

static void test_http1_splits_frame_identically(void **state)
{
    (void)state;
    static const struct {
        const char *what, *bytes;
        unsigned requests;
        wsq_h1_state_t state;
    } streams[] = {
        {"GET",
         "GET /topics/a/messages?from=3&limit=10 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
         "User-Agent: t\r\nAccept: */*\r\n\r\n",
         1, WSQ_H1_HEAD},
        {"POST with a body",
         "POST /topics/a%2Eb HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n"
         "Content-Length:  11 \r\n\r\nhello\r\n\r\nxy",
         1, WSQ_H1_HEAD},
        {"POST without Content-Length",
         "POST /topics/t HTTP/1.1\r\nHost: h\r\nUser-Agent: curl\r\n\r\n", 1, WSQ_H1_HEAD},
        {"pipelined",
         "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
         "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"
         "PUT /b HTTP/1.0\r\n\r\n"
         "PATCH /c HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nZ"
         "DELETE /d HTTP/1.1\r\nHost: h\r\n\r\n",
         5, WSQ_H1_HEAD},
        {"a body still to come", "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc", 0,
         WSQ_H1_BODY},
        {"upgrade with frames behind",
         "GET /topics/t HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
         "Connection: Upgrade\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"
         "Sec-WebSocket-Version: 13\r\n\r\n\x81\x80\x01\x02\x03\x04",
         0, WSQ_H1_UPGRADE},
        {"keep-alive then upgrade",
         "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"
         "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n" KEYV "\r\nGET",
         1, WSQ_H1_UPGRADE},
        {"refused after a good one",
         "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         1, WSQ_H1_ERROR},
    };
    for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++)
        check_all_splits(streams[i].what, streams[i].bytes, strlen(streams[i].bytes),
                         streams[i].requests, streams[i].state);
}

/* ------------------------------------------------------------------------------------------- */
/* WebSocket client frames                                                                     */

/* Appends a client frame (masked unless mask is NULL) with an n-byte payload, its length in the
 * given encoding: 7 (n < 126), 16 (126) or 64 (127). Returns the bytes written. */
static size_t put_frame(uint8_t *out, uint8_t b0, size_t n, int enc, const uint8_t *mask)
{
    size_t o = 0;
    uint8_t m = mask ? 0x80 : 0;
    out[o++] = b0;
    if (enc == 7) {
        assert_true(n < 126);
        out[o++] = (uint8_t)(m | n);
    } else if (enc == 16) {
        assert_true(n <= 0xffff);
        out[o++] = m | 126;
        out[o++] = (uint8_t)(n >> 8);
        out[o++] = (uint8_t)n;
    } else {
        out[o++] = m | 127;
        for (int s = 56; s >= 0; s -= 8)
            out[o++] = (uint8_t)((uint64_t)n >> s);
    }
    if (mask) {
        memcpy(out + o, mask, 4);
        o += 4;
    }
    for (size_t i = 0; i < n; i++) /* payload bytes that look like headers, unmasked or not */
        out[o++] = (uint8_t)(i % 3 ? 0x81 : 0x05);
    return o;
}

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Scans buf[0..len) in the pieces cut at cuts: returns the bytes accepted (the offset at which
 * scanning stopped) and the final unmasked flag. */
static size_t scan_pieces(const uint8_t *buf, size_t len, const size_t *cuts, size_t ncuts,
                          bool *unmasked)
{
    wsq_wsrx_t w;
    wsq_wsrx_init(&w);
    size_t at = 0, ok = 0;
    bool stopped = false;
    for (size_t c = 0; c <= ncuts; c++) {
        size_t end = c < ncuts ? cuts[c] : len;
        size_t n = wsq_wsrx_scan(&w, buf + at, end - at);
        if (stopped) {
            assert_int_equal(n, 0);
        } else {
            assert_true(n <= end - at);
            ok += n;
            if (w.unmasked) {
                stopped = true;
            } else {
                assert_int_equal(n, end - at);
            }
        }
        at = end;
    }
    *unmasked = w.unmasked;
    return ok;
}

/* Every split in two (and byte at a time) accepts exactly want bytes, with unmasked as want_u. */
static void check_scan_splits(const char *what, const uint8_t *buf, size_t len, size_t want,
                              bool want_u)
{
    bool u;
    size_t got = scan_pieces(buf, len, NULL, 0, &u);
    if (got != want || u != want_u)
        fail_msg("%s: whole: %zu, unmasked %d (want %zu, %d)", what, got, u, want, want_u);
    for (size_t c = 0; c <= len; c++) {
        got = scan_pieces(buf, len, &c, 1, &u);
        if (got != want || u != want_u)
            fail_msg("%s: cut at %zu: %zu, unmasked %d (want %zu, %d)", what, c, got, u, want,
                     want_u);
    }
    size_t *cuts = malloc(len * sizeof(*cuts));
    assert_non_null(cuts);
    for (size_t i = 0; i + 1 < len; i++)
        cuts[i] = i + 1;
    got = scan_pieces(buf, len, cuts, len ? len - 1 : 0, &u);
    if (got != want || u != want_u)
        fail_msg("%s: byte at a time: %zu, unmasked %d (want %zu, %d)", what, got, u, want, want_u);
    free(cuts);
}

static void test_wsrx_every_length_encoding(void **state)
{
    (void)state;
    static const struct {
        size_t n;
        int enc;
    } frames[] = {{0, 7},  {1, 7},      {5, 7},      {125, 7}, {126, 16}, {300, 16}, {65535, 16},
                  {0, 16}, {65536, 64}, {70000, 64}, {3, 64},  {0, 64},   {125, 7}};
    size_t cap = 0;
    for (size_t i = 0; i < sizeof(frames) / sizeof(frames[0]); i++)
        cap += frames[i].n + 14;
    uint8_t *buf = malloc(cap + 16);
    assert_non_null(buf);
    /* each frame alone */
    for (size_t i = 0; i < sizeof(frames) / sizeof(frames[0]); i++) {
        size_t len = put_frame(buf, 0x82, frames[i].n, frames[i].enc, MASK);
        char what[64];
        snprintf(what, sizeof(what), "%zu bytes, %d-bit length", frames[i].n, frames[i].enc);
        check_scan_splits(what, buf, len, len, false);
    }
    /* all of them in one stream, then an unmasked frame: it is found exactly where it starts,
     * so the scanner kept every frame boundary */
    size_t len = 0;
    for (size_t i = 0; i < sizeof(frames) / sizeof(frames[0]); i++)
        len += put_frame(buf + len, i % 2 ? 0x81 : 0x02, frames[i].n, frames[i].enc, MASK);
    check_scan_splits("all encodings", buf, len, len, false);
    size_t bad = len;
    len += put_frame(buf + len, 0x81, 5, 7, NULL);
    check_scan_splits("all encodings, then unmasked", buf, len, bad + 1, true);
    free(buf);
}

static void test_wsrx_unmasked_after_valid(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t len = put_frame(buf, 0x81, 5, 7, MASK);
    len += put_frame(buf + len, 0x80, 2, 7, MASK); /* continuation */
    size_t at = len;
    len += put_frame(buf + len, 0x81, 5, 7, NULL); /* "\x81\x05" + payload */
    len += put_frame(buf + len, 0x81, 5, 7, MASK);
    wsq_wsrx_t w;
    wsq_wsrx_init(&w);
    /* the offset of its second header byte */
    assert_int_equal(wsq_wsrx_scan(&w, buf, len), at + 1);
    assert_true(w.unmasked);
    assert_int_equal(buf[at + 1], 0x05);
    /* every later call: 0, whatever it is given */
    assert_int_equal(wsq_wsrx_scan(&w, buf + at + 1, len - at - 1), 0);
    assert_int_equal(wsq_wsrx_scan(&w, buf, at), 0);
    uint8_t good[16];
    assert_int_equal(wsq_wsrx_scan(&w, good, put_frame(good, 0x81, 1, 7, MASK)), 0);
    assert_true(w.unmasked);
    check_scan_splits("unmasked after valid", buf, len, at + 1, true);
    /* the very first frame unmasked: one byte accepted */
    wsq_wsrx_init(&w);
    assert_int_equal(wsq_wsrx_scan(&w, u8("\x81\x05hello"), 7), 1);
    assert_true(w.unmasked);
    /* its second byte arriving alone: 0 accepted of that read */
    wsq_wsrx_init(&w);
    assert_int_equal(wsq_wsrx_scan(&w, u8("\x81"), 1), 1);
    assert_false(w.unmasked);
    assert_int_equal(wsq_wsrx_scan(&w, u8("\x05hello"), 6), 0);
    assert_true(w.unmasked);
    /* unmasked with a 16-bit length */
    len = put_frame(buf, 0x82, 4, 7, MASK);
    len += put_frame(buf + len, 0x82, 130, 16, NULL);
    check_scan_splits("unmasked, 16-bit length", buf, len, 11, true);
}

static void test_wsrx_zero_length_masked(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t len = put_frame(buf, 0x81, 0, 7, MASK);
    assert_int_equal(len, 6);
    wsq_wsrx_t w;
    wsq_wsrx_init(&w);
    assert_int_equal(wsq_wsrx_scan(&w, buf, len), 6);
    assert_false(w.unmasked);
    /* the next byte is the next frame's first: an unmasked frame right after is found */
    assert_int_equal(wsq_wsrx_scan(&w, u8("\x81\x00"), 2), 1);
    assert_true(w.unmasked);
    /* several empty frames in a row, then a text one */
    len = 0;
    for (int i = 0; i < 5; i++)
        len += put_frame(buf + len, 0x01, 0, 7, MASK);
    len += put_frame(buf + len, 0x81, 3, 7, MASK);
    check_scan_splits("empty frames", buf, len, len, false);
    len += put_frame(buf + len, 0x81, 0, 7, NULL);
    check_scan_splits("empty frames, then an empty unmasked one", buf, len, len - 1, true);
    /* an empty payload is not "no mask": a masked zero-length frame needs its mask key */
    wsq_wsrx_init(&w);
    assert_int_equal(wsq_wsrx_scan(&w, u8("\x81\x80\x00\x00\x00\x00\x81\x00"), 8), 7);
    assert_true(w.unmasked);
}

static void test_wsrx_control_frames(void **state)
{
    (void)state;
    uint8_t buf[512];
    size_t len = 0;
    len += put_frame(buf + len, 0x89, 0, 7, MASK);   /* ping */
    len += put_frame(buf + len, 0x89, 125, 7, MASK); /* ping, largest */
    len += put_frame(buf + len, 0x8a, 4, 7, MASK);   /* pong */
    len += put_frame(buf + len, 0x01, 10, 7, MASK);  /* a fragment ... */
    len += put_frame(buf + len, 0x89, 2, 7, MASK);   /* ... a ping between fragments ... */
    len += put_frame(buf + len, 0x80, 10, 7, MASK);  /* ... the last fragment */
    len += put_frame(buf + len, 0x88, 2, 7, MASK);   /* close */
    check_scan_splits("control frames", buf, len, len, false);
    /* an unmasked close or ping is just as unmasked */
    size_t at = len;
    size_t l2 = len + put_frame(buf + len, 0x88, 2, 7, NULL);
    check_scan_splits("unmasked close", buf, l2, at + 1, true);
    l2 = len + put_frame(buf + len, 0x89, 0, 7, NULL);
    check_scan_splits("unmasked ping", buf, l2, at + 1, true);
    l2 = len + put_frame(buf + len, 0x8a, 125, 7, NULL);
    check_scan_splits("unmasked pong", buf, l2, at + 1, true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http1_get_done),
        cmocka_unit_test(test_http1_every_method),
        cmocka_unit_test(test_http1_body_then_done),
        cmocka_unit_test(test_http1_next_only_after_done),
        cmocka_unit_test(test_http1_http10_without_host),
        cmocka_unit_test(test_http1_host_any_case),
        cmocka_unit_test(test_http1_content_length_forms),
        cmocka_unit_test(test_http1_target_forms),
        cmocka_unit_test(test_http1_header_values),
        cmocka_unit_test(test_http1_line_ends_crlf_only),
        cmocka_unit_test(test_http1_request_line),
        cmocka_unit_test(test_http1_methods_not_implemented),
        cmocka_unit_test(test_http1_target_chars),
        cmocka_unit_test(test_http1_percent_escapes),
        cmocka_unit_test(test_http1_path_segments),
        cmocka_unit_test(test_http1_query_params_limit),
        cmocka_unit_test(test_http1_versions),
        cmocka_unit_test(test_http1_header_names),
        cmocka_unit_test(test_http1_obs_fold),
        cmocka_unit_test(test_http1_value_control_chars),
        cmocka_unit_test(test_http1_host_required_once),
        cmocka_unit_test(test_http1_content_length_rules),
        cmocka_unit_test(test_http1_transfer_encoding_411),
        cmocka_unit_test(test_http1_upgrade_rules),
        cmocka_unit_test(test_http1_max_head_boundary),
        cmocka_unit_test(test_http1_header_count_limit),
        cmocka_unit_test(test_http1_inject_post_without_length),
        cmocka_unit_test(test_http1_inject_then_next_request),
        cmocka_unit_test(test_http1_pipelined_stop_at_end),
        cmocka_unit_test(test_http1_upgrade_stops_before_frames),
        cmocka_unit_test(test_http1_splits_frame_identically),
        cmocka_unit_test(test_wsrx_every_length_encoding),
        cmocka_unit_test(test_wsrx_unmasked_after_valid),
        cmocka_unit_test(test_wsrx_zero_length_masked),
        cmocka_unit_test(test_wsrx_control_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
