/*
 * test_env.c: what every program and the library take from the user's
 * environment and command line alike: TOLLGATE_SEGMENT names the segment
 * wherever none is given (tg_open(NULL), tollstat, tollrun, the Python
 * binding; -s or a named segment still wins), and every program answers
 * --help and --version.
 */
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

#define OUT_MAX	65536

static int
setup(void **state)
{
	return tb_group_setup(state, "[envkey]\nlimit = 100 requests/s\n");
}

static void
test_library(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c;
	uint32_t k;
	int r, unset;

	assert_int_equal(setenv("TOLLGATE_SEGMENT", tb->segment, 1), 0);
	assert_int_equal(tg_open(NULL, &c), 0);
	assert_int_equal(tg_key(c, "envkey", &k), 0);
	tg_close(c);
	/* A name given wins over the variable. */
	assert_int_equal(tg_open("tgtest-no-such-segment", &c), -ENOENT);
	/* Empty is unset: both open the default, with the same result. */
	assert_int_equal(setenv("TOLLGATE_SEGMENT", "", 1), 0);
	if ((r = tg_open(NULL, &c)) == 0)
		tg_close(c);
	unsetenv("TOLLGATE_SEGMENT");
	if ((unset = tg_open(NULL, &c)) == 0)
		tg_close(c);
	assert_int_equal(r, unset);
	assert_int_equal(r == 0 ? 0 : r, tg_open("tollgate", &c) == 0 ?
	    (tg_close(c), 0) : r);
}

/* tollstat and tollrun without -s read the variable; -s wins. */
static void
test_tools(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	char *out = malloc(OUT_MAX), cmd[PATH_MAX * 2 + 256];
	char stat[PATH_MAX], run[PATH_MAX];

	assert_non_null(out);
	tb_bin("tollstat", stat, sizeof(stat));
	tb_bin("tollrun", run, sizeof(run));
	snprintf(cmd, sizeof(cmd), "TOLLGATE_SEGMENT='%s' %s -j", tb->segment,
	    stat);
	assert_int_equal(tb_run(cmd, out, OUT_MAX), 0);
	assert_non_null(strstr(out, tb->segment));
	assert_non_null(strstr(out, "\"envkey\""));
	snprintf(cmd, sizeof(cmd), "TOLLGATE_SEGMENT='%s' %s -k envkey true",
	    tb->segment, run);
	assert_int_equal(tb_run(cmd, out, OUT_MAX), 0);
	/* -s wins: a segment that does not exist is not found. */
	snprintf(cmd, sizeof(cmd), "TOLLGATE_SEGMENT='%s' %s -s "
	    "tgtest-no-such-segment -k envkey true 2>&1", tb->segment, run);
	assert_int_not_equal(tb_run(cmd, out, OUT_MAX), 0);
	assert_non_null(strstr(out, "tgtest-no-such-segment"));
	snprintf(cmd, sizeof(cmd), "TOLLGATE_SEGMENT='%s' %s -s "
	    "tgtest-no-such-segment 2>&1", tb->segment, stat);
	(void)tb_run(cmd, out, OUT_MAX);
	assert_null(strstr(out, "envkey"));
	free(out);
}

/* tollgate.open() and tollgate.stat.read() without a segment. */
static void
test_python(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	const char *py = getenv("TG_PYTHON"), *b = getenv("TG_BUILD");
	char *out, cmd[PATH_MAX * 2 + 1024];
	int r;

#ifdef TB_UNDER_SAN
	skip();
#endif
	assert_non_null(out = malloc(OUT_MAX));
	snprintf(cmd, sizeof(cmd), "TOLLGATE_SEGMENT='%s' TG_BUILD='%s' "
	    "PYTHONPATH=libclient/python %s -c '"
	    "import tollgate, tollgate.stat\n"
	    "with tollgate.open() as tg:\n"
	    "    print(tg.segment)\n"
	    "    with tg.ticket(\"envkey\"):\n"
	    "        pass\n"
	    "d = tollgate.stat.read()\n"
	    "print(d[\"segment\"], [k[\"name\"] for k in d[\"keys\"]])\n"
	    "' 2>&1", tb->segment, b ? b : "build", py ? py : "/usr/bin/python3");
	r = tb_run(cmd, out, OUT_MAX);
	print_message("%s", out);
	assert_int_equal(r, 0);
	assert_non_null(strstr(out, tb->segment));
	assert_non_null(strstr(out, "envkey"));
	free(out);
}

/* --help: usage on stdout, exit 0; --version: the Makefile's VERSION. */
static void
test_help_and_version(void **state)
{
	static const char *const progs[] = {
		"tollgated", "tollstat", "tollrun", "tollsim",
	};
	char *out = malloc(OUT_MAX), bin[PATH_MAX], cmd[PATH_MAX + 64];
	char want[128];

	(void)state;
	assert_non_null(out);
	for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
		tb_bin(progs[i], bin, sizeof(bin));
		snprintf(cmd, sizeof(cmd), "%s --help 2>/dev/null", bin);
		assert_int_equal(tb_run(cmd, out, OUT_MAX), 0);
		if (strncmp(out, "usage: ", 7) != 0)
			fail_msg("%s --help: %s", progs[i], out);
		snprintf(cmd, sizeof(cmd), "%s --version 2>/dev/null", bin);
		assert_int_equal(tb_run(cmd, out, OUT_MAX), 0);
		snprintf(want, sizeof(want), "%s %s\n", progs[i], TG_VERSION);
		assert_string_equal(out, want);
	}
	free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_library),
		cmocka_unit_test(test_tools),
		cmocka_unit_test(test_python),
		cmocka_unit_test(test_help_and_version),
	};

	return cmocka_run_group_tests(tests, setup, tb_group_teardown);
}
