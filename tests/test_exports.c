/*
 * test_exports.c: the libraries a user links export tg_* and nothing
 * else.  An internal name (chain_get, seg_attach, lease_take) exported by
 * libtollgate.a would clash with a program's own function of that name,
 * or be called by one as if it were an interface.  Read with nm(1).
 */
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"

/*
 * Run nm with args on build/lib, and count the defined global symbols it
 * lists, and those among them not named tg_*, printing the first few.
 */
static void
exports(const char *args, const char *lib, unsigned *all, unsigned *bad)
{
	char path[PATH_MAX], cmd[PATH_MAX + 128], line[512], name[256];
	char type;
	FILE *p;

	*all = *bad = 0;
	tb_bin(lib, path, sizeof(path));
	snprintf(cmd, sizeof(cmd), "nm %s '%s'", args, path);
	assert_non_null(p = popen(cmd, "r"));
	while (fgets(line, sizeof(line), p) != NULL) {
		/* "ADDRESS TYPE NAME"; "file.o:" and blank lines in .a */
		if (sscanf(line, "%*s %c %255s", &type, name) != 2)
			continue;
		/*
		 * Defined and global: an upper-case type, but U (undefined)
		 * and A, which in a shared library are the version nodes of
		 * libtollgate.map (TOLLGATE_0), not code or data.
		 */
		if (type < 'A' || type > 'Z' || type == 'U' || type == 'A')
			continue;
		(*all)++;
		if (strncmp(name, "tg_", 3) != 0 && (*bad)++ < 5)
			print_message("%s exports %s\n", lib, name);
	}
	assert_int_equal(pclose(p), 0);
}

static void
test_static_library(void **state)
{
	unsigned all, bad;

	(void)state;
	exports("-g --defined-only", "libtollgate.a", &all, &bad);
	print_message("libtollgate.a: %u global symbols\n", all);
	assert_true(all >= 9);		/* tg_open ... tg_strerror */
	assert_int_equal(bad, 0);
}

static void
test_shared_library(void **state)
{
	unsigned all, bad;

	(void)state;
	exports("-D --defined-only", "libtollgate.so", &all, &bad);
	print_message("libtollgate.so: %u global symbols\n", all);
	assert_true(all >= 9);
	assert_int_equal(bad, 0);
}

/* The check can fail: the internal archive does export internals. */
static void
test_control_internals_seen(void **state)
{
	unsigned all, bad;

	(void)state;
	exports("-g --defined-only", "libtgcore.a", &all, &bad);
	assert_true(bad > 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_static_library),
		cmocka_unit_test(test_shared_library),
		cmocka_unit_test(test_control_internals_seen),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
