/*
 * test_quickstart.c: the README's program, built by the Makefile against a
 * staged `make install' through pkg-config, takes a ticket from a real
 * broker through the installed shared library.
 */
#include <errno.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

static void
test_readme_program_takes_a_ticket(void **state)
{
	struct tbroker tb;
	char bin[256], lib[256], cmd[PATH_MAX + 1024], out[256];
	int r;

	(void)state;
	r = tb_start(&tb, "[chatgpt-web]\n"
	    "limit = 1 requests/165s burst 4 cooldown 120s\n"
	    "concurrency = 1\n");
	if (r == -ENOSYS) {
		tb_cleanup(&tb);
		skip();
	}
	assert_int_equal(r, 0);
	tb_bin("stage/usr/lib", lib, sizeof(lib));
	snprintf(cmd, sizeof(cmd), "LD_LIBRARY_PATH=%s %s %s 2>&1", lib,
	    tb_bin("quickstart", bin, sizeof(bin)), tb.segment);
	assert_int_equal(tb_run(cmd, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "ticket taken"));
	assert_non_null(strstr(out, "response observed: ok"));
	/* And it resolved the installed libtollgate.so.0, not a static copy. */
	snprintf(cmd, sizeof(cmd), "LD_LIBRARY_PATH=%s ldd %s", lib, bin);
	/*
	 * Its status is not ldd's verdict: under ASan the staged .so names
	 * sanitizer symbols only executables bring, and ldd exits 1.
	 */
	(void)tb_run(cmd, out, sizeof(out));
	assert_non_null(strstr(out, "libtollgate.so.0"));
	assert_non_null(strstr(out, "stage/usr/lib"));
	assert_int_equal(tb_stop(&tb), 0);
	tb_cleanup(&tb);
}

/*
 * The README's config is one tollgated accepts, as printed but for the
 * machine-specific lines: its group, which may not exist here, and its
 * pidfile, in a directory only root may write.
 */
static void
test_readme_config_parses(void **state)
{
	char bin[256], cmd[PATH_MAX + 1024], out[512];
	int r;

	(void)state;
	snprintf(cmd, sizeof(cmd), "awk '/^```ini$/{p=1;next} /^```$/{p=0} p' "
	    "README.md | sed 's/^group = .*//; s|^pidfile = .*|pidfile = "
	    "/tmp/tg-readme.pid|' > /tmp/tg-readme-%d.conf && %s -n -c "
	    "/tmp/tg-readme-%d.conf 2>&1; rm -f /tmp/tg-readme-%d.conf",
	    (int)getpid(), tb_bin("tollgated", bin, sizeof(bin)),
	    (int)getpid(), (int)getpid());
	r = tb_run(cmd, out, sizeof(out));
	print_message("%s", out);
	assert_int_equal(r, 0);
	assert_non_null(strstr(out, "configuration OK"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_readme_program_takes_a_ticket),
		cmocka_unit_test(test_readme_config_parses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
