/*
 * test_headers.c: the response-header parser against header blocks as the
 * providers send them, on a fixed clock: 2026-11-23T10:00:00Z.
 */
#include <errno.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "headers.h"

#define S	1000000000ull			/* ns per second */
#define NOW	(1795428000ull * S)		/* 2026-11-23T10:00:00Z */
#define UNK	HDR_UNKNOWN

static void
parse(const char *blk, struct hdr_result *r)
{
	assert_int_equal(hdr_parse(blk, strlen(blk), NOW, r), 0);
}

static void
check_unit(const struct hdr_result *r, int u, uint64_t limit,
    uint64_t remaining, uint64_t reset_ns)
{
	assert_true(r->unit[u].limit == limit);
	assert_true(r->unit[u].remaining == remaining);
	assert_true(r->unit[u].reset_ns == reset_ns);
}

/* OpenAI 200: all six fields, CRLF, as the API sends them. */
static void
test_openai_200(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("HTTP/2 200\r\n"
	    "date: Mon, 23 Nov 2026 10:00:00 GMT\r\n"
	    "content-type: application/json\r\n"
	    "openai-processing-ms: 412\r\n"
	    "x-ratelimit-limit-requests: 10000\r\n"
	    "x-ratelimit-limit-tokens: 30000000\r\n"
	    "x-ratelimit-remaining-requests: 9999\r\n"
	    "x-ratelimit-remaining-tokens: 29999000\r\n"
	    "x-ratelimit-reset-requests: 6ms\r\n"
	    "x-ratelimit-reset-tokens: 2ms\r\n"
	    "x-request-id: req_0123456789abcdef\r\n"
	    "\r\n", &r);
	assert_true(r.retry_after_ns == UNK);
	check_unit(&r, UNIT_REQUESTS, 10000, 9999, 6000000);
	check_unit(&r, UNIT_TOKENS, 30000000, 29999000, 2000000);
	check_unit(&r, UNIT_IMAGES, UNK, UNK, UNK);
	assert_int_equal(r.nheaders, 10);
	assert_int_equal(r.nbad, 0);
}

/* OpenAI 429, LF only (curl -D on some systems), with retry-after. */
static void
test_openai_429(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("HTTP/1.1 429 Too Many Requests\n"
	    "Content-Type: application/json\n"
	    "retry-after: 20\n"
	    "x-ratelimit-limit-requests: 500\n"
	    "x-ratelimit-remaining-requests: 0\n"
	    "x-ratelimit-reset-requests: 2m59.56s\n"
	    "x-ratelimit-limit-tokens: 200000\n"
	    "x-ratelimit-remaining-tokens: 0\n"
	    "x-ratelimit-reset-tokens: 1h2m3.5s\n"
	    "x-ratelimit-limit-images: 50\n"
	    "x-ratelimit-remaining-images: 49\n"
	    "x-ratelimit-reset-images: 1s\n"
	    "x-ratelimit-limit-widgets: 7\n"
	    "\n", &r);
	assert_true(r.retry_after_ns == 20 * S);
	check_unit(&r, UNIT_REQUESTS, 500, 0, 179560000000ull);
	check_unit(&r, UNIT_TOKENS, 200000, 0, 3723500000000ull);
	check_unit(&r, UNIT_IMAGES, 50, 49, S);
	assert_int_equal(r.nheaders, 12);
	assert_int_equal(r.nbad, 0);
}

/* Anthropic 429: RFC 3339 resets; input/output tokens fold into tokens. */
static void
test_anthropic_429(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("HTTP/1.1 429 Too Many Requests\r\n"
	    "content-type: application/json\r\n"
	    "retry-after: 30\r\n"
	    "anthropic-ratelimit-requests-limit: 50\r\n"
	    "anthropic-ratelimit-requests-remaining: 0\r\n"
	    "anthropic-ratelimit-requests-reset: 2026-11-23T10:00:30Z\r\n"
	    "anthropic-ratelimit-tokens-limit: 40000\r\n"
	    "anthropic-ratelimit-tokens-remaining: 39000\r\n"
	    "anthropic-ratelimit-tokens-reset: 2026-11-23T12:00:05+02:00\r\n"
	    "anthropic-ratelimit-input-tokens-limit: 20000\r\n"
	    "anthropic-ratelimit-input-tokens-remaining: 19500\r\n"
	    "anthropic-ratelimit-input-tokens-reset: "
	    "2026-11-23T10:00:10.5Z\r\n"
	    "anthropic-ratelimit-output-tokens-limit: 8000\r\n"
	    "anthropic-ratelimit-output-tokens-remaining: 7000\r\n"
	    "anthropic-ratelimit-output-tokens-reset: "
	    "2026-11-23T09:00:01-01:00\r\n"
	    "request-id: req_01\r\n"
	    "\r\n", &r);
	assert_true(r.retry_after_ns == 30 * S);
	check_unit(&r, UNIT_REQUESTS, 50, 0, 30 * S);
	check_unit(&r, UNIT_TOKENS, 8000, 7000, 10500000000ull);
	assert_int_equal(r.nheaders, 15);
	assert_int_equal(r.nbad, 0);
}

/* RFC 3339 edge cases: past, fractions rounded up, bad dates. */
static void
test_rfc3339(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("anthropic-ratelimit-requests-reset: 2026-11-23T09:59:59Z\n",
	    &r);
	assert_true(r.unit[UNIT_REQUESTS].reset_ns == 0);
	parse("anthropic-ratelimit-requests-reset: "
	    "2026-11-23T10:00:00.0000000001Z\n", &r);
	assert_true(r.unit[UNIT_REQUESTS].reset_ns == 1);
	parse("anthropic-ratelimit-requests-reset: 2027-02-29T00:00:00Z\n"
	    "anthropic-ratelimit-tokens-reset: 2026-11-23T10:00:00\n"
	    "anthropic-ratelimit-tokens-reset: 2026-11-23 10:00:00+25:00\n",
	    &r);
	assert_true(r.unit[UNIT_REQUESTS].reset_ns == UNK);
	assert_true(r.unit[UNIT_TOKENS].reset_ns == UNK);
	assert_int_equal(r.nbad, 3);
	/* Leap day, and a year 9999 reset saturates. */
	parse("anthropic-ratelimit-requests-reset: 2028-02-29T10:00:00Z\n"
	    "anthropic-ratelimit-tokens-reset: 9999-12-31T23:59:59Z\n", &r);
	assert_true(r.unit[UNIT_REQUESTS].reset_ns == (365 + 98) * 86400 * S);
	assert_true(r.unit[UNIT_TOKENS].reset_ns < UNK);
	assert_true(r.unit[UNIT_TOKENS].reset_ns > 0);
}

/* GitHub answers a rate limit with 403 and an epoch-seconds reset. */
static void
test_github_403(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("HTTP/2 403\r\n"
	    "content-type: application/json; charset=utf-8\r\n"
	    "x-github-media-type: github.v3; format=json\r\n"
	    "x-ratelimit-limit: 60\r\n"
	    "x-ratelimit-remaining: 0\r\n"
	    "x-ratelimit-reset: 1795428120\r\n"
	    "x-ratelimit-used: 60\r\n"
	    "x-ratelimit-resource: core\r\n"
	    "\r\n", &r);
	assert_true(r.retry_after_ns == UNK);
	check_unit(&r, UNIT_REQUESTS, 60, 0, 120 * S);
	assert_int_equal(r.nheaders, 7);
	assert_int_equal(r.nbad, 0);
}

/* x-ratelimit-reset by magnitude: epoch ms, epoch s (past: 0), delta. */
static void
test_reset_magnitude(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("x-ratelimit-reset: 1795428002500\n", &r);
	assert_true(r.unit[UNIT_REQUESTS].reset_ns == 2500000000ull);
	parse("x-ratelimit-reset: 1795427000\n", &r);
	assert_true(r.unit[UNIT_REQUESTS].reset_ns == 0);
	parse("x-ratelimit-reset: 45\n", &r);
	assert_true(r.unit[UNIT_REQUESTS].reset_ns == 45 * S);
}

/* Together 429: per-second request limit and x-tokenlimit-*. */
static void
test_together_429(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("HTTP/2 429\r\n"
	    "content-type: application/json\r\n"
	    "retry-after: 2\r\n"
	    "x-ratelimit-limit: 10\r\n"
	    "x-ratelimit-remaining: 0\r\n"
	    "x-ratelimit-reset: 1\r\n"
	    "x-tokenlimit-limit: 200000\r\n"
	    "x-tokenlimit-remaining: 0\r\n"
	    "\r\n", &r);
	assert_true(r.retry_after_ns == 2 * S);
	check_unit(&r, UNIT_REQUESTS, 10, 0, S);
	check_unit(&r, UNIT_TOKENS, 200000, 0, UNK);
	assert_int_equal(r.nheaders, 7);
}

/* IETF draft 03..06: three fields; the limit may be a list. */
static void
test_ietf_fields(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("HTTP/1.1 200 OK\r\n"
	    "RateLimit-Limit: 100\r\n"
	    "RateLimit-Remaining: 50\r\n"
	    "RateLimit-Reset: 30\r\n"
	    "\r\n", &r);
	check_unit(&r, UNIT_REQUESTS, 100, 50, 30 * S);
	parse("RateLimit-Limit: 10, 10;w=1, 50;w=60\r\n"
	    "RateLimit-Remaining: 9\r\n"
	    "RateLimit-Reset: 1\r\n", &r);
	check_unit(&r, UNIT_REQUESTS, 10, 9, S);
	assert_int_equal(r.nbad, 0);
	parse("RateLimit-Limit: 10 apples\r\n"
	    "RateLimit-Remaining: -9\r\n"
	    "RateLimit-Reset: 1 fortnight\r\n", &r);
	check_unit(&r, UNIT_REQUESTS, UNK, UNK, UNK);
	assert_int_equal(r.nbad, 3);
}

/* IETF structured fields: the lowest r wins, with its t. */
static void
test_ietf_structured(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("HTTP/1.1 200 OK\r\n"
	    "RateLimit: \"default\";r=50;t=30, \"daily\";r=5;t=3000\r\n"
	    "RateLimit-Policy: \"default\";q=100;w=10, "
	    "\"daily\";q=1000;w=86400\r\n"
	    "\r\n", &r);
	check_unit(&r, UNIT_REQUESTS, 100, 5, 3000 * S);
	assert_int_equal(r.nbad, 0);
	parse("RateLimit: default;r=50;t=30\r\n"
	    "RateLimit-Policy: default;q=100;w=10;pk=:cHsdsRa894==:\r\n",
	    &r);
	check_unit(&r, UNIT_REQUESTS, 100, 50, 30 * S);
	assert_int_equal(r.nbad, 0);
	/* Draft 07: a dictionary, and a policy of bare quotas. */
	parse("RateLimit: limit=100, remaining=50, reset=5\r\n"
	    "RateLimit-Policy: 100;w=60, 1000;w=3600;comment=\"hour\"\r\n",
	    &r);
	check_unit(&r, UNIT_REQUESTS, 100, 50, 5 * S);
	assert_int_equal(r.nbad, 0);
	parse("RateLimit: \"default\";r=-1;t=30\r\n"
	    "RateLimit-Policy: \"x;q=100\r\n", &r);
	check_unit(&r, UNIT_REQUESTS, UNK, UNK, UNK);
	assert_int_equal(r.nbad, 2);
}

/* Azure OpenAI: retry-after-ms with retry-after; the longer wins. */
static void
test_azure_retry_ms(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("HTTP/1.1 429 Too Many Requests\r\n"
	    "Content-Length: 312\r\n"
	    "retry-after-ms: 1500.5\r\n"
	    "x-ratelimit-remaining-requests: 0\r\n"
	    "x-ratelimit-remaining-tokens: 117\r\n"
	    "apim-request-id: 4a6e-44f9\r\n"
	    "\r\n", &r);
	assert_true(r.retry_after_ns == 1500500000ull);
	check_unit(&r, UNIT_REQUESTS, UNK, 0, UNK);
	check_unit(&r, UNIT_TOKENS, UNK, 117, UNK);
	parse("retry-after-ms: 1500\r\nretry-after: 2\r\n"
	    "x-ratelimit-retry-after: 1\r\n", &r);
	assert_true(r.retry_after_ns == 2 * S);
}

/* Retry-After in seconds, fractional and rounded up to a whole ns. */
static void
test_retry_after_seconds(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("Retry-After: 1.5\n", &r);
	assert_true(r.retry_after_ns == 1500000000ull);
	parse("Retry-After: 0.0000000001\n", &r);
	assert_true(r.retry_after_ns == 1);
	parse("Retry-After: 0\n", &r);
	assert_true(r.retry_after_ns == 0);
	parse("Retry-After: 99999999999\n", &r);
	assert_true(r.retry_after_ns == UNK - 1);
}

/* Retry-After as an HTTP-date, all three forms, future and past. */
static void
test_retry_after_dates(void **state)
{
	static const char *const future[] = {
		"Retry-After: Mon, 23 Nov 2026 10:01:00 GMT\n",
		"Retry-After: Monday, 23-Nov-26 10:01:00 GMT\n",
		"Retry-After: Mon Nov 23 10:01:00 2026\n",
	};
	static const char *const past[] = {
		"Retry-After: Sun, 06 Nov 1994 08:49:37 GMT\n",
		"Retry-After: Sunday, 06-Nov-94 08:49:37 GMT\n",
		"Retry-After: Sun Nov  6 08:49:37 1994\n",
	};
	struct hdr_result r;
	size_t i;

	(void)state;
	for (i = 0; i < 3; i++) {
		parse(future[i], &r);
		assert_true(r.retry_after_ns == 60 * S);
		assert_int_equal(r.nbad, 0);
		parse(past[i], &r);
		assert_true(r.retry_after_ns == 0);
		assert_int_equal(r.nbad, 0);
	}
	parse("Retry-After: Tue Dec  1 10:00:00 2026\n", &r);
	assert_true(r.retry_after_ns == 8 * 86400 * S);
	parse("Retry-After: Mon, 31 Nov 2026 10:01:00 GMT\n"
	    "Retry-After: Mon, 23 Nov 2026 10:01:00 UTC\n"
	    "Retry-After: soon\n", &r);
	assert_true(r.retry_after_ns == UNK);
	assert_int_equal(r.nbad, 3);
}

/* Go durations as OpenAI and Groq print them. */
static void
test_go_durations(void **state)
{
	static const struct {
		const char	*v;
		uint64_t	ns;
	} tab[] = {
		{ "0", 0 },
		{ "0s", 0 },
		{ "1s", S },
		{ "6m0s", 360 * S },
		{ "2m59.56s", 179560000000ull },
		{ "20ms", 20000000 },
		{ "1h2m3.5s", 3723500000000ull },
		{ "500us", 500000 },
		{ "500\xc2\xb5s", 500000 },
		{ "500\xce\xbcs", 500000 },
		{ "7ns", 7 },
		{ "1.5ns", 2 },
		{ "0.5ms", 500000 },
		{ "99999999999999h", UNK - 1 },
		{ "", UNK },
		{ "-1s", UNK },
		{ "1", UNK },
		{ "1x", UNK },
		{ "s", UNK },
		{ "1.s", UNK },
		{ "99999999999999999999s", UNK },
	};
	char blk[128];
	struct hdr_result r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		strcpy(blk, "x-ratelimit-reset-tokens: ");
		strcat(blk, tab[i].v);
		strcat(blk, "\r\n");
		parse(blk, &r);
		if (r.unit[UNIT_TOKENS].reset_ns != tab[i].ns)
			fail_msg("%s: %llu", tab[i].v,
			    (unsigned long long)r.unit[UNIT_TOKENS].reset_ns);
		assert_int_equal(r.nbad, tab[i].ns == UNK);
	}
}

/* The end of the buffer ends the last line: no newline is needed. */
static void
test_last_line_without_newline(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("HTTP/1.1 429 Too Many Requests\r\n"
	    "x-ratelimit-remaining-requests: 3\r\n"
	    "x-ratelimit-reset-requests: 2m", &r);
	check_unit(&r, UNIT_REQUESTS, UNK, 3, 120 * S);
	assert_int_equal(r.nheaders, 2);
	parse("retry-after: 12", &r);
	assert_true(r.retry_after_ns == 12 * S);
	assert_int_equal(r.nheaders, 1);
}

/* curl -D -L: a redirect's block, then the 429's; folds are skipped. */
static void
test_several_blocks(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("HTTP/1.1 301 Moved Permanently\r\n"
	    "Location: https://api.example.com/v1/x\r\n"
	    "x-ratelimit-remaining: 40\r\n"
	    "\r\n"
	    "HTTP/1.1 100 Continue\r\n"
	    "\r\n"
	    "HTTP/1.1 429 Too Many Requests\r\n"
	    "x-ratelimit-remaining: 0\r\n"
	    "X-Folded: a\r\n"
	    " retry-after: 99\r\n"
	    "Retry-After: 7\r\n"
	    "\r\n", &r);
	check_unit(&r, UNIT_REQUESTS, UNK, 0, UNK);
	assert_true(r.retry_after_ns == 7 * S);
	assert_int_equal(r.nheaders, 5);
}

/* Names are case-insensitive; whitespace around values is trimmed. */
static void
test_mixed_case(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("X-RateLimit-Limit-Requests:\t 60 \t\r\n"
	    "X-RATELIMIT-REMAINING-REQUESTS:59\r\n"
	    "x-RateLimit-Reset-Requests : 1s\r\n"
	    "RETRY-AFTER: 3\r\n", &r);
	check_unit(&r, UNIT_REQUESTS, 60, 59, S);
	assert_true(r.retry_after_ns == 3 * S);
	assert_int_equal(r.nheaders, 4);
}

/* Repeats and two sources: lowest counts, longest waits. */
static void
test_repeated_most_restrictive(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("x-ratelimit-limit-requests: 100\n"
	    "x-ratelimit-limit-requests: 80\n"
	    "x-ratelimit-limit-requests: 90\n"
	    "x-ratelimit-remaining-requests: 5\n"
	    "ratelimit-remaining: 7\n"
	    "x-ratelimit-remaining: 3\n"
	    "x-ratelimit-reset-requests: 1s\n"
	    "x-ratelimit-reset-requests: 0s\n"
	    "ratelimit-reset: 4\n"
	    "retry-after: 2\n"
	    "retry-after: 1\n"
	    "retry-after-ms: 2500\n", &r);
	check_unit(&r, UNIT_REQUESTS, 80, 3, 4 * S);
	assert_true(r.retry_after_ns == 2500000000ull);
	assert_int_equal(r.nbad, 0);
}

/* Negative, garbage, overflowing and overlong values stay unknown. */
static void
test_bad_values(void **state)
{
	char blk[600];
	struct hdr_result r;

	(void)state;
	parse("x-ratelimit-limit-requests: -1\n"
	    "x-ratelimit-remaining-requests: ten\n"
	    "x-ratelimit-limit-tokens: 18446744073709551616\n"
	    "x-ratelimit-remaining-tokens: 18446744073709551615\n"
	    "x-ratelimit-limit-images: 5x\n"
	    "x-ratelimit-remaining-images:\n"
	    "retry-after: -5\n"
	    "x-ratelimit-reset: 1e9\n"
	    "not a header line\n"
	    "x-unrelated: -1\n", &r);
	check_unit(&r, UNIT_REQUESTS, UNK, UNK, UNK);
	check_unit(&r, UNIT_TOKENS, UNK, UNK, UNK);
	check_unit(&r, UNIT_IMAGES, UNK, UNK, UNK);
	assert_true(r.retry_after_ns == UNK);
	assert_int_equal(r.nbad, 8);
	assert_int_equal(r.nheaders, 9);

	/* 257 bytes is over the bound even when it would parse. */
	strcpy(blk, "x-ratelimit-remaining-requests: ");
	memset(blk + strlen(blk), '0', 256);
	strcpy(blk + strlen("x-ratelimit-remaining-requests: ") + 256, "1\n");
	parse(blk, &r);
	assert_true(r.unit[UNIT_REQUESTS].remaining == UNK);
	assert_int_equal(r.nbad, 1);
}

/* The exact bytes given, in a buffer of that size: ASan sees any overrun. */
static void
test_no_read_past_len(void **state)
{
	static const char *const blks[] = {
		"x-ratelimit-remaining-requests: 12",
		"retry-after: Sun, 06 Nov 1994 08:49:37",
		"anthropic-ratelimit-tokens-reset: 2026-11-23T10:00:30",
		"RateLimit: \"default\";r=5;t=",
		"RateLimit: \"defa",
		"x-ratelimit-reset-tokens: 1m2",
		"HTTP/1.1 429",
		"retry-after: 2\r",
	};
	struct hdr_result r;
	size_t i, n, cut;
	char *b;

	(void)state;
	for (i = 0; i < sizeof(blks) / sizeof(blks[0]); i++) {
		n = strlen(blks[i]);
		for (cut = 0; cut <= n; cut++) {
			b = malloc(cut + 1);
			assert_non_null(b);
			memcpy(b, blks[i], cut);
			b[cut] = '\n';	/* a whole line, ending at len */
			assert_int_equal(hdr_parse(b, cut + 1, NOW, &r), 0);
			assert_int_equal(hdr_parse(b, cut, NOW, &r), 0);
			free(b);
		}
	}
}

/*
 * Issue 13, 1: each unit says how its provider means reset.  OpenAI's,
 * Azure's, Groq's and Anthropic's fields describe a bucket refilled all
 * the time (reset: until full); GitHub's, Together's and the IETF
 * drafts' a window (reset: all at once).  A unit mixing both is a window,
 * the stricter reading; a retry hint or a policy alone says nothing.
 */
static void
test_reset_models(void **state)
{
	struct hdr_result r;

	(void)state;
	parse("x-ratelimit-remaining-requests: 3\r\n"
	    "x-ratelimit-reset-tokens: 2s\r\n"
	    "anthropic-ratelimit-output-tokens-remaining: 9\r\n"
	    "x-ratelimit-remaining: 7\r\n", &r);
	assert_true(hdr_refills(&r.unit[UNIT_TOKENS]));
	/* x-ratelimit-remaining is GitHub's window, on requests too. */
	assert_false(hdr_refills(&r.unit[UNIT_REQUESTS]));
	assert_int_equal(r.unit[UNIT_REQUESTS].model, HDR_MODEL_WINDOW |
	    HDR_MODEL_BUCKET);
	assert_int_equal(r.unit[UNIT_IMAGES].model, 0);
	assert_false(hdr_refills(&r.unit[UNIT_IMAGES]));
	parse("anthropic-ratelimit-requests-remaining: 4\r\n"
	    "anthropic-ratelimit-requests-reset: 2026-11-23T10:00:30Z\r\n",
	    &r);
	assert_true(hdr_refills(&r.unit[UNIT_REQUESTS]));
	parse("RateLimit: \"default\";r=5;t=30\r\n"
	    "x-tokenlimit-remaining: 10\r\n", &r);
	assert_int_equal(r.unit[UNIT_REQUESTS].model, HDR_MODEL_WINDOW);
	assert_int_equal(r.unit[UNIT_TOKENS].model, HDR_MODEL_WINDOW);
	parse("retry-after: 3\r\nRateLimit-Policy: 100;w=60\r\n", &r);
	assert_int_equal(r.unit[UNIT_REQUESTS].model, 0);
}

static void
test_null_args(void **state)
{
	struct hdr_result r;

	(void)state;
	assert_int_equal(hdr_parse(NULL, 1, NOW, &r), -EINVAL);
	assert_int_equal(hdr_parse("x", 1, NOW, NULL), -EINVAL);
	assert_int_equal(hdr_parse(NULL, 0, NOW, &r), 0);
	assert_true(r.retry_after_ns == UNK);
	assert_int_equal(r.nheaders, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_openai_200),
		cmocka_unit_test(test_openai_429),
		cmocka_unit_test(test_anthropic_429),
		cmocka_unit_test(test_rfc3339),
		cmocka_unit_test(test_github_403),
		cmocka_unit_test(test_reset_magnitude),
		cmocka_unit_test(test_together_429),
		cmocka_unit_test(test_ietf_fields),
		cmocka_unit_test(test_ietf_structured),
		cmocka_unit_test(test_azure_retry_ms),
		cmocka_unit_test(test_retry_after_seconds),
		cmocka_unit_test(test_retry_after_dates),
		cmocka_unit_test(test_go_durations),
		cmocka_unit_test(test_last_line_without_newline),
		cmocka_unit_test(test_several_blocks),
		cmocka_unit_test(test_mixed_case),
		cmocka_unit_test(test_repeated_most_restrictive),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_no_read_past_len),
		cmocka_unit_test(test_reset_models),
		cmocka_unit_test(test_null_args),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
