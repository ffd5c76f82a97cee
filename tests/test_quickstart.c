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
#include <stdlib.h>
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

/*
 * After `make install' (staged under build/stage, PREFIX=/usr), every
 * program runs from where it was installed, as a user would run it: the
 * broker checks the installed example config, tollstat and tollrun work
 * on a real broker, tollsim answers, and the Python package imports and
 * takes a ticket through the installed libtollgate.so.0, found by the
 * loader, not through the build tree.  Then `make uninstall' removes
 * every file install made.
 */
static void
test_staged_install_runs(void **state)
{
	char stage[256], abs[PATH_MAX], cmd[PATH_MAX * 3 + 1024];
	char *out = malloc(65536);
	const char *py = getenv("TG_PYTHON"), *b = getenv("TG_BUILD");
	struct tbroker tb;
	int r;

	(void)state;
	assert_non_null(out);
	r = tb_start(&tb, "[stagekey]\nlimit = 10 requests/s\n");
	if (r == -ENOSYS) {
		tb_cleanup(&tb);
		free(out);
		skip();
	}
	assert_int_equal(r, 0);
	tb_bin("stage/usr", stage, sizeof(stage));
	snprintf(cmd, sizeof(cmd), "%s/sbin/tollgated -n -c "
	    "%s/share/tollgate/tollgate.conf.example 2>&1", stage, stage);
	assert_int_equal(tb_run(cmd, out, 65536), 0);
	assert_non_null(strstr(out, "configuration OK"));
	snprintf(cmd, sizeof(cmd), "%s/bin/tollstat -j -s %s", stage,
	    tb.segment);
	assert_int_equal(tb_run(cmd, out, 65536), 0);
	assert_non_null(strstr(out, "\"stagekey\""));
	snprintf(cmd, sizeof(cmd), "%s/bin/tollrun -s %s -k stagekey true",
	    stage, tb.segment);
	assert_int_equal(tb_run(cmd, out, 65536), 0);
	snprintf(cmd, sizeof(cmd), "%s/bin/tollsim -h >/dev/null 2>&1", stage);
	assert_int_equal(tb_run(cmd, out, 65536), 0);
#ifdef TB_UNDER_SAN
	(void)abs;		/* the Python part needs the plain build */
	(void)py;
#else
	assert_non_null(realpath(stage, abs));
	snprintf(cmd, sizeof(cmd), "cd / && env -u TG_BUILD -u TOLLGATE_LIB "
	    "LD_LIBRARY_PATH=%s/lib PYTHONPATH=%s/lib/python3/dist-packages "
	    "%s -c 'import tollgate, tollgate._lib as l\n"
	    "print(l.path)\n"
	    "with tollgate.open(\"%s\") as tg:\n"
	    "    with tg.ticket(\"stagekey\"):\n"
	    "        print(\"ticket\")\n' 2>&1", abs, abs,
	    py ? py : "/usr/bin/python3", tb.segment);
	r = tb_run(cmd, out, 65536);
	print_message("%s", out);
	assert_int_equal(r, 0);
	assert_non_null(strstr(out, "libtollgate.so.0"));
	assert_null(strstr(out, "/build/libtollgate.so\n"));
	assert_non_null(strstr(out, "ticket"));
#endif
	assert_int_equal(tb_stop(&tb), 0);
	tb_cleanup(&tb);

	/* Installed afresh, then uninstalled: nothing is left. */
	tb_bin("stage-u", stage, sizeof(stage));
	snprintf(cmd, sizeof(cmd), "rm -rf %s && make --no-print-directory -s "
	    "install B=%s PREFIX=/usr DESTDIR=$(pwd)/%s >/dev/null && "
	    "make --no-print-directory -s uninstall B=%s PREFIX=/usr "
	    "DESTDIR=$(pwd)/%s >/dev/null && find %s ! -type d && "
	    "echo uninstalled; rm -rf %s", stage, b ? b : "build", stage,
	    b ? b : "build", stage, stage, stage);
	assert_int_equal(tb_run(cmd, out, 65536), 0);
	assert_string_equal(out, "uninstalled\n");
	free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_readme_program_takes_a_ticket),
		cmocka_unit_test(test_readme_config_parses),
		cmocka_unit_test(test_staged_install_runs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
