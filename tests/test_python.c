/*
 * test_python.c: the Python binding's unittest suite (tests/python), run
 * with $TG_PYTHON (default /usr/bin/python3, Debian's, which sees
 * python3-httpx) on this build's libtollgate.so, tollgated and tollstat.
 */
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

/* Sanitizer builds skip (TB_UNDER_SAN): the C tests cover the library. */

#define OUT_MAX		(1 << 20)

static void
test_python_suite(void **state)
{
	const char *py = getenv("TG_PYTHON"), *b = getenv("TG_BUILD");
	char cmd[PATH_MAX + 512];
	char *out;
	int r;

	(void)state;
#ifdef TB_UNDER_SAN
	skip();
#endif
	if (py == NULL || *py == '\0')
		py = "/usr/bin/python3";
	if (b == NULL || *b == '\0')
		b = "build";
	/*
	 * -v: each test's name and the figures the tests print.  A test
	 * that hangs fails on its own watchdog (tests/python/tgbroker.py);
	 * timeout(1) is for one that hangs anywhere else.  No __pycache__
	 * left in the source tree.
	 */
	snprintf(cmd, sizeof(cmd), "TG_BUILD='%s' PYTHONPATH=libclient/python "
	    "PYTHONDONTWRITEBYTECODE=1 timeout -k 10 900 '%s' -m unittest "
	    "discover -v -s tests/python 2>&1", b, py);
	assert_non_null(out = malloc(OUT_MAX));
	r = tb_run(cmd, out, OUT_MAX);
	if (r != 0) {
		size_t n = strlen(out);
		const char *tail = n > 3500 ? out + n - 3500 : out;

		/*
		 * The end, where unittest puts each failure's traceback and
		 * the summary; cmocka's messages are cut at a few kB.
		 */
		print_message("%s\nexit %d:\n...%s\n", cmd, r, tail);
	} else {
		/* The figures (lines the tests indent) and the summary. */
		for (char *l = out, *e; *l != '\0'; l = *e ? e + 1 : e) {
			e = strchrnul(l, '\n');
			if (strncmp(l, "  ", 2) == 0 || strncmp(l, "Ran ", 4) == 0)
				print_message("%.*s\n", (int)(e - l), l);
		}
	}
	free(out);
	assert_int_equal(r, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_python_suite),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
