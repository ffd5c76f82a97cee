/* test_tollstat.c: tollstat's table against a real broker, and its errors. */
#include <sys/wait.h>
#include <errno.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "tollgate.h"

static const char conf[] =
    "[images]\n"
    "limit = 5 images/min\n"
    "[api]\n"
    "limit = 100 requests/min\n"
    "concurrency = 2\n"
    "[api/chat]\n"
    "limit = 10000 tokens/day window\n"
    "[gen]\n"
    "limit = 100 requests/min\n"
    "concurrency = 8 adaptive\n";

#define OUT_MAX	65536

static int
setup(void **state)
{
	return tb_group_setup(state, conf);
}

/*
 * Run `tollstat ARGS' through the shell (ARGS may redirect) and return its
 * exit status, with what it wrote to the pipe in out (NUL-terminated).
 */
static int
tollstat(const char *args, char *out, size_t len)
{
	char bin[PATH_MAX], cmd[PATH_MAX + 256];
	size_t n = 0, got;
	FILE *p;
	int st;

	snprintf(cmd, sizeof(cmd), "%s %s", tb_bin("tollstat", bin,
	    sizeof(bin)), args);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (n + 1 < len && (got = fread(out + n, 1, len - 1 - n, p)) > 0)
		n += got;
	out[n] = '\0';
	st = pclose(p);
	assert_true(st != -1 && WIFEXITED(st));
	return WEXITSTATUS(st);
}

/*
 * Find the row whose first column is exactly label (a key name, or two
 * spaces and a spec) and split the cells after it into f.  Returns how
 * many cells it found, 0 if there is no such row.
 */
static int
row(const char *out, const char *label, char f[4][32])
{
	size_t len = strlen(label), n;
	const char *end;
	char cells[256];

	for (const char *l = out; *l != '\0'; l = end + 1) {
		if ((end = strchr(l, '\n')) == NULL)
			end = l + strlen(l) - 1;
		if (strncmp(l, label, len) != 0 ||
		    strncmp(l + len, "  ", 2) != 0)
			continue;
		/* This line only: %s would skip the newline to the next. */
		n = (size_t)(end - (l + len));
		if (n >= sizeof(cells))
			n = sizeof(cells) - 1;
		memcpy(cells, l + len, n);
		cells[n] = '\0';
		return sscanf(cells, "%31s %31s %31s %31s", f[0], f[1], f[2],
		    f[3]);
	}
	return 0;
}

/* Tickets on three keys, one lease held: tollstat shows each of them. */
static void
test_table(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t ki = tb_key(c, "images"), ka = tb_key(c, "api");
	uint32_t kc = tb_key(c, "api/chat");
	tg_cost five = { 0, 0, 5 }, one = { 0, 0, 1 }, words = { 0, 300, 0 };
	tg_ticket t[4];
	uint64_t retry;
	char *out = malloc(OUT_MAX), args[128], f[4][32], line[64];
	long avail;

	assert_non_null(out);
	memset(t, 0, sizeof(t));
	/* The bucket of 5 images: all of it, then a refusal. */
	assert_int_equal(tg_try_acquire(c, ki, &five, &t[0], &retry), 0);
	assert_int_equal(tg_try_acquire(c, ki, &one, &t[1], &retry), -EAGAIN);
	/* A child's ticket takes a lease of api's concurrency too. */
	assert_int_equal(tg_try_acquire(c, kc, &words, &t[1], &retry), 0);
	tg_release(c, &t[1]);
	/* Three on api, two released: one lease stays in flight. */
	for (int i = 1; i < 4; i++) {
		assert_int_equal(tg_try_acquire(c, ka, NULL, &t[i], &retry),
		    0);
		if (i < 3)
			tg_release(c, &t[i]);
	}

	snprintf(args, sizeof(args), "-s %s", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	print_message("%s", out);

	assert_non_null(strstr(out, tb->segment));
	snprintf(line, sizeof(line), "pid %d, up ", (int)tb->pid);
	assert_non_null(strstr(out, line));
	assert_non_null(strstr(out, "clients    1 of "));

	/* Key rows: tickets granted, denied. */
	assert_int_equal(row(out, "images", f), 2);
	assert_string_equal(f[0], "1");
	assert_string_equal(f[1], "1");
	assert_int_equal(row(out, "api", f), 2);
	assert_string_equal(f[0], "3");
	assert_string_equal(f[1], "0");
	assert_int_equal(row(out, "api/chat", f), 2);
	assert_string_equal(f[0], "1");

	/* Limit rows: available, in flight, granted, denied. */
	assert_int_equal(row(out, "  5 images/min", f), 4);
	assert_string_equal(f[0], "0");
	assert_string_equal(f[1], "-");
	assert_string_equal(f[2], "5");
	assert_string_equal(f[3], "1");
	assert_int_equal(row(out, "  100 requests/min", f), 4);
	/* 3 of 100 taken; one comes back every 0.6 s. */
	avail = strtol(f[0], NULL, 10);
	assert_in_range(avail, 97, 100);
	assert_string_equal(f[1], "-");
	assert_string_equal(f[2], "3");
	assert_string_equal(f[3], "0");
	assert_int_equal(row(out, "  concurrency 2", f), 4);
	assert_string_equal(f[0], "1");
	assert_string_equal(f[1], "1");
	assert_string_equal(f[2], "4");
	assert_string_equal(f[3], "0");
	assert_int_equal(row(out, "  10000 tokens/day window", f), 4);
	assert_string_equal(f[0], "9700");
	assert_string_equal(f[1], "-");
	assert_string_equal(f[2], "300");

	tg_release(c, &t[3]);
	tg_close(c);
	free(out);
}

/*
 * What responses did shows: the key's pause and status classes, the
 * server's remaining and limit beside a limit, adaptive concurrency's
 * effective size beside the configured one.
 */
static void
test_feedback_notes(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "gen");
	static const char ok[] = "HTTP/2 200\r\n"
	    "x-ratelimit-limit-requests: 90\r\n"
	    "x-ratelimit-remaining-requests: 2\r\n"
	    "x-ratelimit-reset-requests: 30s\r\n\r\n";
	char *out = malloc(OUT_MAX), args[128], f[4][32];
	tg_ticket t[2];
	int tries;

	assert_non_null(out);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t[0], NULL), 0);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t[1], NULL), 0);
	assert_int_equal(tg_observe(c, &t[0], 429, NULL, 0), TG_RETRY);
	assert_int_equal(tg_observe(c, &t[1], 200, ok, sizeof(ok) - 1), TG_OK);
	tg_release(c, &t[0]);
	snprintf(args, sizeof(args), "-s %s", tb->segment);
	/* The broker halves the concurrency on its next tick. */
	for (tries = 0; tries < 40; tries++) {
		assert_int_equal(tollstat(args, out, OUT_MAX), 0);
		if (strstr(out, "adaptive: 4 of 8") != NULL)
			break;
		tb_sleep_ns(25000000);
	}
	print_message("%s", out);
	assert_true(tries < 40);
	assert_non_null(strstr(out, "ok 1; limited 1"));
	assert_non_null(strstr(out, "paused "));
	assert_non_null(strstr(out, "server: 2 left for "));
	assert_non_null(strstr(out, "server says 90"));
	/* Available: the effective 4 less the one still in flight. */
	assert_int_equal(row(out, "  concurrency 8 adaptive", f), 4);
	assert_string_equal(f[0], "3");
	assert_string_equal(f[1], "1");
	tg_release(c, &t[1]);
	tg_close(c);
	free(out);
}

static void
test_missing_segment(void **state)
{
	char out[1024];

	(void)state;
	/* Only stderr goes to the pipe. */
	assert_int_equal(tollstat("-s tgtest-no-such-seg 2>&1 >/dev/null",
	    out, sizeof(out)), 1);
	assert_non_null(strstr(out, "tgtest-no-such-seg"));
	assert_non_null(strstr(out, "no such segment"));
	assert_int_equal(tollstat("-s bad/name 2>&1 >/dev/null", out,
	    sizeof(out)), 1);
	assert_non_null(strstr(out, "bad/name"));
}

static void
test_usage(void **state)
{
	char out[1024];

	(void)state;
	assert_int_equal(tollstat("-h", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "usage: tollstat"));
	assert_int_equal(tollstat("-q 2>&1 >/dev/null", out, sizeof(out)), 2);
	assert_non_null(strstr(out, "usage: tollstat"));
}

/* A segment whose broker stopped still shows, and says so. */
static void
test_no_broker(void **state)
{
	struct tbroker tb2;
	char *out, args[128];
	int r;

	(void)TB_NEED(state);
	r = tb_start(&tb2, conf);
	if (r == -ENOSYS) {
		tb_cleanup(&tb2);
		skip();
	}
	assert_int_equal(r, 0);
	assert_int_equal(tb_stop(&tb2), 0);
	out = malloc(OUT_MAX);
	assert_non_null(out);
	snprintf(args, sizeof(args), "-s %s", tb2.segment);
	r = tollstat(args, out, OUT_MAX);
	tb_cleanup(&tb2);
	assert_int_equal(r, 0);
	assert_non_null(strstr(out, "no broker"));
	assert_non_null(strstr(out, "  5 images/min"));
	free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_feedback_notes),
		cmocka_unit_test(test_missing_segment),
		cmocka_unit_test(test_usage),
		cmocka_unit_test(test_no_broker),
	};

	return cmocka_run_group_tests(tests, setup, tb_group_teardown);
}
