/*
 * test_node.c: the Node.js package's suite (libclient/node/test, run with
 * `node --test'): the binding on a real broker, the real openai and
 * @anthropic-ai/sdk packages in 4 processes against a local server, and
 * the README's program as printed.  The packages come from the lockfile
 * through `npm ci', run again only when the lockfile changed.  Skips,
 * saying why, without node and npm (`make deps' installs them) or with a
 * node older than 18.
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

#define OUT_MAX		(1 << 20)
#define PKG		"libclient/node"
#define INFO		"\xe2\x84\xb9 "	/* U+2139, as node --test prints */

/* Print the lines of out that start with one of the prefixes. */
static void
print_lines(const char *out, const char *const *prefixes)
{
	for (const char *l = out, *e; *l != '\0'; l = *e ? e + 1 : e) {
		e = strchrnul(l, '\n');
		for (const char *const *p = prefixes; *p != NULL; p++) {
			if (strncmp(l, *p, strlen(*p)) == 0) {
				print_message("%.*s\n", (int)(e - l), l);
				break;
			}
		}
	}
}

/* All of a failed command's output: print_message would cut it short. */
static void
print_output(const char *cmd, int r, const char *out)
{
	printf("%s\nexit %d:\n", cmd, r);
	fputs(out, stdout);
	fflush(stdout);
}

static void
test_node_suite(void **state)
{
	/* The spec reporter's lines: figures, passes, failures, skips. */
	static const char *const figures[] = { INFO, "\xe2\x9c\x94 ",
	    "  \xe2\x9c\x94 ", "\xe2\x9c\x96 ", "\xef\xb9\xa3 ", NULL };
	const char *b = getenv("TG_BUILD");
	char build[PATH_MAX], cmd[PATH_MAX + 1024], ver[64];
	char *out;
	int r;

	(void)state;
#ifdef TB_UNDER_SAN
	/* A sanitized libtollgate.so cannot be loaded into node. */
	print_message("skipped: the library is built with a sanitizer\n");
	skip();
#endif
	if (tb_run("command -v node && command -v npm", ver,
	    sizeof(ver)) != 0) {
		print_message("skipped: node or npm is not installed "
		    "(make deps installs them)\n");
		skip();
	}
	if (tb_run("node -p 'process.versions.node.split(\".\")[0]'", ver,
	    sizeof(ver)) != 0 || atoi(ver) < 18) {
		print_message("skipped: node %.*s is older than 18\n",
		    (int)strcspn(ver, "\n"), ver);
		skip();
	}
	if (realpath(b != NULL && *b != '\0' ? b : "build", build) == NULL)
		fail_msg("no build directory %s", b);
	assert_non_null(out = malloc(OUT_MAX));

	/* The lockfile's packages, unless they are in already. */
	snprintf(cmd, sizeof(cmd), "cd " PKG " && { cmp -s package-lock.json "
	    "node_modules/.tollgate-lock || { npm ci --ignore-scripts "
	    "--prefer-offline --no-audit --no-fund --loglevel=error && "
	    "cp package-lock.json node_modules/.tollgate-lock; }; } 2>&1");
	r = tb_run(cmd, out, OUT_MAX);
	if (r != 0)
		print_output(cmd, r, out);
	assert_int_equal(r, 0);

	/* timeout(1) for a suite that hangs; each test has its own limits. */
	snprintf(cmd, sizeof(cmd), "cd " PKG " && TG_BUILD='%s' timeout -k 10 "
	    "600 node --test --test-reporter=spec test/binding.test.js "
	    "test/fetch.test.js test/sdk.test.js test/readme.test.js 2>&1",
	    build);
	r = tb_run(cmd, out, OUT_MAX);
	if (r != 0)
		print_output(cmd, r, out);
	else
		print_lines(out, figures);
	assert_int_equal(r, 0);
	if (strstr(out, INFO "skipped 0") == NULL) {
		free(out);
		print_message("skipped: tollgated cannot use io_uring here\n");
		skip();
	}
	free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_node_suite),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
