/*
 * mp_keys.c: configs at the segment's limits.  Many keys load and reload
 * on a real broker; what no segment can hold is refused by `tollgated
 * -n' as by the broker, naming the limit, and a broker that refuses it
 * leaves nothing behind.
 */
#include <sys/stat.h>
#include <errno.h>
#include <limits.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "seg.h"
#include "tollgate.h"

#define NKEYS	30000

/* The test's broker: the teardown stops it however the test ended. */
static struct tbroker the_tb;

static int
teardown(void **state)
{
	(void)state;
	if (the_tb.dir[0] != '\0')
		tb_cleanup(&the_tb);
	memset(&the_tb, 0, sizeof(the_tb));
	return 0;
}

/*
 * NKEYS keys, one in ten at the top and the others its children, each
 * with a rate limit of `rate' per second; the last key, "last", with a
 * concurrency limit too.  Returns a malloc'ed string.
 */
static char *
many_keys(unsigned rate)
{
	size_t len = (size_t)NKEYS * 40 + 256, at = 0;
	char *s = malloc(len);

	assert_non_null(s);
	for (unsigned i = 0; i < NKEYS - 1; i++) {
		if (i % 10 == 0)
			at += (size_t)snprintf(s + at, len - at, "[k%u]\n", i);
		else
			at += (size_t)snprintf(s + at, len - at, "[k%u/%u]\n",
			    i - i % 10, i % 10);
		at += (size_t)snprintf(s + at, len - at, "limit = %u "
		    "requests/s\n", rate);
	}
	snprintf(s + at, len - at, "[last]\nlimit = %u requests/s\n"
	    "concurrency = 2\n", rate);
	return s;
}

/*
 * 30,000 keys: the broker starts on them and reloads a change to every
 * one of them, and a client takes a ticket on the last key each time.
 * No timing is asserted; tb_start and tb_reload wait up to 10 s.
 */
static void
test_many_keys_load_and_reload(void **state)
{
	struct tbroker *tb = &the_tb;
	char *conf = many_keys(5);
	tg_client *c;
	uint64_t t0, t1, t2, retry;
	tg_ticket t;
	uint32_t k;
	int r;

	(void)state;
	t0 = tb_now_ns();
	if ((r = tb_start(tb, conf)) == -ENOSYS) {
		free(conf);
		skip();
	}
	assert_int_equal(r, 0);
	t1 = tb_now_ns();
	c = tb_client(tb);
	k = tb_key(c, "last");
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
	tg_release(c, &t);
	free(conf);
	conf = many_keys(6);
	t2 = tb_now_ns();
	assert_int_equal(tb_reload(tb, conf), 0);
	print_message("%u keys: started in %.3f s, reloaded in %.3f s\n",
	    NKEYS, (double)(t1 - t0) / 1e9, (double)(tb_now_ns() - t2) / 1e9);
	/* The same handle: the key kept its id and its limits their state. */
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
	tg_release(c, &t);
	assert_int_equal(tb_key(c, "k29990/8"), tb_key(c, "k29990/8"));
	tg_close(c);
	assert_true(tb_alive(tb));
	free(conf);
}

/* Write a config of `body' under [broker] for segment seg to path. */
static void
write_conf(const char *path, const char *seg, const char *broker,
    const char *body)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fprintf(f, "[broker]\nsegment = %s\npidfile = %s.pid\n%s\n%s", seg,
	    path, broker, body);
	assert_int_equal(fclose(f), 0);
}

/* Run tollgated with args on path; its status, and its output in out. */
static int
broker_run(const char *args, const char *path, char *out, size_t len)
{
	char bin[PATH_MAX], cmd[3 * PATH_MAX];

	snprintf(cmd, sizeof(cmd), "%s %s -c %s 2>&1 </dev/null",
	    tb_bin("tollgated", bin, sizeof(bin)), args, path);
	return tb_run(cmd, out, len);
}

static int
shm_exists(const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	return stat(path, &st) == 0;
}

/*
 * What no segment can hold: `tollgated -n' refuses it, naming the limit,
 * and the broker refuses it the same way, creating nothing, so that a
 * good config starts on the same segment name right after.
 */
static void
test_check_refuses_what_no_segment_holds(void **state)
{
	static const struct {
		const char *broker;	/* [broker] settings */
		unsigned nkeys;		/* keys of their own, no limits */
		const char *body;	/* or these */
		const char *want[2];	/* in the message */
	} cases[] = {
		{ "", SEG_IDS_MAX + 1, NULL, { "65521 keys", "65520" } },
		{ "max_clients = 65530", 0, "[a]\nconcurrency = 1\n",
		    { "max_clients 65530", "65520" } },
		{ "", 0, "[a]\nconcurrency = 1000000000\n",
		    { "cells", "1000000000" } },
	};
	char dir[] = "/tmp/tgkeys.XXXXXX", *path = the_tb.conf;
	char *seg = the_tb.segment, *body, out[8192];
	int r;

	(void)state;
	/* The teardown's to clean up: the objects and the directory. */
	assert_non_null(mkdtemp(dir));
	snprintf(the_tb.dir, sizeof(the_tb.dir), "%s", dir);
	snprintf(the_tb.conf, sizeof(the_tb.conf), "%s/tollgate.conf", dir);
	snprintf(the_tb.log, sizeof(the_tb.log), "%s/tollgated.log", dir);
	snprintf(the_tb.segment, sizeof(the_tb.segment), "tgtest-%d-keys",
	    (int)getpid());
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = (size_t)cases[i].nkeys * 12 + 64, at = 0;
		char conf[80];

		assert_non_null(body = malloc(len));
		body[0] = '\0';
		for (unsigned k = 0; k < cases[i].nkeys; k++)
			at += (size_t)snprintf(body + at, len - at, "[k%u]\n",
			    k);
		if (cases[i].body != NULL)
			snprintf(body, len, "%s", cases[i].body);
		write_conf(path, seg, cases[i].broker, body);
		free(body);
		assert_int_equal(broker_run("-n", path, out, sizeof(out)), 1);
		print_message("-n: %s", out);
		for (int w = 0; w < 2; w++)
			assert_non_null(strstr(out, cases[i].want[w]));
		assert_null(strstr(out, "configuration OK"));
		/* The broker says the same, and leaves no object behind. */
		assert_int_equal(broker_run("-d", path, out, sizeof(out)), 1);
		for (int w = 0; w < 2; w++)
			assert_non_null(strstr(out, cases[i].want[w]));
		snprintf(conf, sizeof(conf), "%s.conf", seg);
		assert_false(shm_exists(seg));
		assert_false(shm_exists(conf));
	}
	/* A good config starts on that very segment. */
	write_conf(path, seg, "", "[a]\nconcurrency = 1\n");
	assert_int_equal(broker_run("-n", path, out, sizeof(out)), 0);
	assert_string_equal(out, "configuration OK\n");
	r = tb_restart(&the_tb);
	if (r == -ENOSYS)
		skip();
	assert_int_equal(r, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_many_keys_load_and_reload,
		    teardown),
		cmocka_unit_test_teardown(
		    test_check_refuses_what_no_segment_holds, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
