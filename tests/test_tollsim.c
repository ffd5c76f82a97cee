/* test_tollsim.c: tollsim, the real binary, on the worked example and more. */
#include <sys/wait.h>
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

#define OUT_MAX		65536
#define WORKED		"-l '1 requests/165s burst 4 cooldown 120s'"

/* What the last run wrote: stdout and stderr apart. */
static char out[OUT_MAX], errout[OUT_MAX];

/*
 * Run `tollsim ARGS' through the shell with input (NULL: none) on its
 * standard input.  Returns its exit status; out and errout hold what it
 * wrote.
 */
static int
sim(const char *input, const char *args)
{
	char bin[PATH_MAX], in[] = "/tmp/tollsim-in.XXXXXX";
	char er[] = "/tmp/tollsim-err.XXXXXX", cmd[PATH_MAX + 512];
	FILE *p, *f;
	int fd, st;

	assert_true((fd = mkstemp(in)) >= 0);
	if (input != NULL)
		assert_int_equal(write(fd, input, strlen(input)),
		    (ssize_t)strlen(input));
	close(fd);
	assert_true((fd = mkstemp(er)) >= 0);
	close(fd);
	snprintf(cmd, sizeof(cmd), "%s %s <%s 2>%s", tb_bin("tollsim", bin,
	    sizeof(bin)), args, in, er);
	assert_non_null(p = popen(cmd, "r"));
	tb_slurp(p, out, sizeof(out));
	st = pclose(p);
	assert_non_null(f = fopen(er, "r"));
	tb_slurp(f, errout, sizeof(errout));
	fclose(f);
	unlink(in);
	unlink(er);
	assert_true(st != -1 && WIFEXITED(st));
	return WEXITSTATUS(st);
}

/* sim() that must succeed, quietly: stderr is shown if it does not. */
static void
sim_ok(const char *input, const char *args)
{
	int r = sim(input, args);

	if (r != 0 || errout[0] != '\0') {
		print_message("tollsim %s: exit %d\n%s", args, r, errout);
		fail();
	}
}

/*
 * The table row of request label ("5"), its cells after the number joined
 * by single spaces, in buf; NULL if there is no such row.  Rows are the
 * lines that start with a space.
 */
static const char *
row(const char *label, char *buf, size_t len)
{
	size_t ll = strlen(label), n = 0;
	const char *l, *s, *end;

	for (l = out; *l != '\0'; l = *end ? end + 1 : end) {
		end = strchrnul(l, '\n');
		if (*l != ' ')
			continue;
		for (s = l; *s == ' '; s++)
			;
		if (strncmp(s, label, ll) != 0 || s[ll] != ' ')
			continue;
		for (s += ll; s < end && *s == ' '; s++)
			;
		for (; s < end && n + 1 < len; s++)
			if (*s != ' ' || (n > 0 && buf[n - 1] != ' '))
				buf[n++] = *s;
		while (n > 0 && buf[n - 1] == ' ')
			n--;
		buf[n] = '\0';
		return buf;
	}
	return NULL;
}

/* Request label's row must read exactly want (cells, single spaces). */
static void
expect_row(const char *label, const char *want)
{
	char buf[512];

	if (row(label, buf, sizeof(buf)) == NULL) {
		print_message("no row %s in:\n%s", label, out);
		fail();
	}
	if (strcmp(buf, want) != 0)
		print_message("row %s: `%s', want `%s'\n", label, buf, want);
	assert_string_equal(buf, want);
}

/* Some line of the output must be exactly want. */
static void
expect_line(const char *want)
{
	size_t len = strlen(want);

	for (const char *l = out; *l != '\0'; l = strchrnul(l, '\n'),
	    l += *l != '\0')
		if (strncmp(l, want, len) == 0 &&
		    (l[len] == '\n' || l[len] == '\0'))
			return;
	print_message("no line `%s' in:\n%s", want, out);
	fail();
}

/* The field guide's worked example, the whole output, exactly. */
static void
test_worked_example(void **state)
{
	static const char want[] =
	    "server: 6 requests; each request costs 1 request\n"
	    "L1: 1 requests/165s burst 4 cooldown 120s\n"
	    "  #     time  result  left  lockout  by  input\n"
	    "  1    0.000  ACCEPT     3        -  -   0\n"
	    "  2    0.000  ACCEPT     2        -  -   0\n"
	    "  3    0.000  ACCEPT     1        -  -   0\n"
	    "  4    0.000  ACCEPT     0        -  -   0\n"
	    "  5    0.000  BLOCK      0  120.000  L1  0\n"
	    "  6  165.000  ACCEPT     0        -  -   165\n"
	    "summary: 6 requests, 5 accepted, 1 blocked (1 refused by a "
	    "limit, 0 in a lockout); 1 lockout, 120.000 s in all\n"
	    "spacing: one request every 165.000 s avoids every block (L1); "
	    "a full bucket also lets the first 4 go at once\n"
	    "paced: tollgate would hold them instead, none blocked; the "
	    "last would go at 330.000 s (makespan 330.000 s; run without "
	    "--server)\n";

	(void)state;
	sim_ok(NULL, WORKED " --server 0 0 0 0 0 165");
	assert_string_equal(out, want);
	assert_string_equal(errout, "");
}

/* Paced, tollgate holds the fifth until one ticket is back at 165 s. */
static void
test_paced_worked(void **state)
{
	(void)state;
	sim_ok(NULL, WORKED " 0 0 0 0 0");
	expect_line("paced: 5 requests; each request costs 1 request");
	expect_line("  #  arrival       go     wait  left  input");
	expect_row("1", "0.000 0.000 0.000 3 0");
	expect_row("4", "0.000 0.000 0.000 0 0");
	expect_row("5", "0.000 165.000 165.000 0 0");
	expect_line("makespan: 165.000 s (first arrival at 0.000, last "
	    "request goes at 165.000)");
	expect_line("waits: 1 of 5 requests waits, 165.000 s in all, 165.000 "
	    "s at most");
}

/*
 * Counts with units agree with their number: "1 image", "1 request",
 * never "1 images", in each line that counts.
 */
static void
test_singular(void **state)
{
	(void)state;
	sim_ok(NULL, "-l '5 images/min' --images 1 --tokens 1 0");
	expect_line("paced: 1 request; each request costs 1 request, 1 token, "
	    "1 image");
	expect_line("waits: 0 of 1 request wait, 0.000 s in all, 0.000 s at "
	    "most");
	sim_ok(NULL, "--server -l '5 images/min' --images 2 0");
	expect_line("server: 1 request; each request costs 1 request, 2 "
	    "images");
	expect_line("summary: 1 request, 1 accepted, 0 blocked (0 refused by "
	    "a limit, 0 in a lockout); 0 lockouts, 0.000 s in all");
	assert_null(strstr(out, "1 images"));
	assert_null(strstr(out, "1 requests"));
}

/*
 * Blocks in a lockout do not extend it (the field guide's throttles set
 * it only on an empty bucket): 10 and 60 are locked out, 121 finds the
 * bucket empty again and starts a new one, in which 165 has a ticket but
 * is blocked all the same.
 */
static void
test_lockout_not_extended(void **state)
{
	(void)state;
	sim_ok(NULL, WORKED " --server 0 0 0 0 0 10 60 121 165 "
	    "242");
	expect_row("5", "0.000 BLOCK 0 120.000 L1 0");
	expect_row("6", "10.000 BLOCK 0 - lockout 10");
	expect_row("7", "60.000 BLOCK 0 - lockout 60");
	expect_row("8", "121.000 BLOCK 0 120.000 L1 121");
	expect_row("9", "165.000 BLOCK 1 - lockout 165");
	expect_row("10", "242.000 ACCEPT 0 - - 242");
	expect_line("summary: 10 requests, 5 accepted, 5 blocked (2 refused "
	    "by a limit, 3 in a lockout); 2 lockouts, 240.000 s in all");
}

/* Without a cooldown a block is a refusal and nothing more. */
static void
test_no_cooldown(void **state)
{
	(void)state;
	sim_ok(NULL, "-l '1 requests/165s burst 4' --server "
	    "0 0 0 0 0 10 165");
	expect_row("5", "0.000 BLOCK 0 - L1 0");
	expect_row("6", "10.000 BLOCK 0 - L1 10");
	expect_row("7", "165.000 ACCEPT 0 - - 165");
	expect_line("summary: 7 requests, 5 accepted, 2 blocked (2 refused "
	    "by a limit, 0 in a lockout); 0 lockouts, 0.000 s in all");
}

/* Pasted HH:MM:SS on standard input, comments and blanks skipped. */
static void
test_clock_stdin(void **state)
{
	(void)state;
	sim_ok("# my log\n10:15:00\n  10:15:05\r\n\n10:15:07.5\n"
	    "10:16:00\n10:18:00\n10:19:10\n", WORKED " --server");
	expect_line("server: 6 requests; each request costs 1 request");
	expect_row("1", "0.000 ACCEPT 3 - - 10:15:00");
	expect_row("2", "5.000 ACCEPT 2 - - 10:15:05");
	expect_row("3", "7.500 ACCEPT 1 - - 10:15:07.5");
	expect_row("4", "60.000 ACCEPT 0 - - 10:16:00");
	/* 180 s: the ticket taken at 0 has come back at 165. */
	expect_row("5", "180.000 ACCEPT 0 - - 10:18:00");
	expect_row("6", "250.000 BLOCK 0 120.000 L1 10:19:10");
}

/* ISO 8601 with Z, offsets, a fraction, a space for the T. */
static void
test_iso(void **state)
{
	(void)state;
	sim_ok(NULL, WORKED " 2026-11-23T10:15:30Z "
	    "2026-11-23T12:15:31.250+02:00 '2026-11-23 10:16:00Z' "
	    "2026-11-23T11:16:30+0100 2026-11-23T10:17:00z");
	expect_row("1", "0.000 0.000 0.000 3 2026-11-23T10:15:30Z");
	expect_row("2", "1.250 1.250 0.000 2 2026-11-23T12:15:31.250+02:00");
	expect_row("3", "30.000 30.000 0.000 1 2026-11-23 10:16:00Z");
	expect_row("4", "60.000 60.000 0.000 0 2026-11-23T11:16:30+0100");
	expect_row("5", "90.000 165.000 75.000 0 2026-11-23T10:17:00z");
	expect_line("makespan: 165.000 s (first arrival at 0.000, last "
	    "request goes at 165.000)");
}

/* Offsets that cross midnight and a month end, on standard input. */
static void
test_iso_offsets_stdin(void **state)
{
	(void)state;
	sim_ok("2026-11-30T23:59:30-01:00\n"
	    "2026-12-01T00:59:45Z\n2026-12-01T02:00:00.5+01:00\n",
	    WORKED " --server");
	expect_row("1", "0.000 ACCEPT 3 - - 2026-11-30T23:59:30-01:00");
	expect_row("2", "15.000 ACCEPT 2 - - 2026-12-01T00:59:45Z");
	expect_row("3", "30.500 ACCEPT 1 - - 2026-12-01T02:00:00.5+01:00");
}

/* --every/--count generate the times; there is no input column. */
static void
test_every(void **state)
{
	char buf[512];

	(void)state;
	sim_ok(NULL, "-l '1 requests/20s burst 2' --every 5s "
	    "--count 4");
	expect_line("  #  arrival      go    wait  left");
	expect_row("1", "0.000 0.000 0.000 1");
	expect_row("2", "5.000 5.000 0.000 0");
	expect_row("3", "10.000 20.000 10.000 0");
	expect_row("4", "15.000 40.000 25.000 0");
	assert_null(row("5", buf, sizeof(buf)));

	/* At the spacing it prints, a server never blocks. */
	sim_ok(NULL, WORKED " --server --every 165s --count 30");
	expect_line("summary: 30 requests, 30 accepted, 0 blocked (0 refused "
	    "by a limit, 0 in a lockout); 0 lockouts, 0.000 s in all");
}

/* Two limits: the tighter one decides, and says so. */
static void
test_two_limits(void **state)
{
	(void)state;
	sim_ok(NULL, "-l '10 requests/min' -l '1 requests/20s "
	    "burst 2' --every 5s --count 4");
	expect_line("L1: 10 requests/min");
	expect_line("L2: 1 requests/20s burst 2");
	expect_line("  #  arrival      go    wait  left:L1  left:L2");
	expect_row("3", "10.000 20.000 10.000 9 0");
	expect_row("4", "15.000 40.000 25.000 9 0");
	expect_line("spacing: one request every 20.000 s avoids every block "
	    "(L2); a full bucket also lets the first 2 go at once");

	sim_ok(NULL, "-l '10 requests/min' -l '1 requests/20s "
	    "burst 2' --server 0 1 2");
	expect_row("3", "2.000 BLOCK 8 0 - L2 2");
}

/* Tokens per request: a tokens limit counts them, and may decide. */
static void
test_tokens(void **state)
{
	(void)state;
	sim_ok(NULL, "-l '30000 tokens/min' -l '5 requests/min' "
	    "--tokens 8000 --server 0 0 0 0");
	expect_line("server: 4 requests; each request costs 1 request, 8000 "
	    "tokens");
	expect_row("3", "0.000 ACCEPT 6000 2 - - 0");
	expect_row("4", "0.000 BLOCK 6000 2 - L1 0");
	expect_line("spacing: one request every 16.000 s avoids every block "
	    "(L1); a full bucket also lets the first 3 go at once");

	/* Without --tokens the tokens limit is not charged. */
	sim_ok(NULL, "-l '30000 tokens/min' 0 1");
	expect_line("L1: 30000 tokens/min  (not charged: a request costs no "
	    "tokens; see --tokens)");
	expect_row("2", "1.000 1.000 0.000 - 1");

	/* --images the same way: 2 of a bucket of 5, refilled 1 per 12 s. */
	sim_ok(NULL, "-l '5 images/min' --images 2 --server "
	    "0 0 0 24");
	expect_row("2", "0.000 ACCEPT 1 - - 0");
	expect_row("3", "0.000 BLOCK 1 - L1 0");
	expect_row("4", "24.000 ACCEPT 1 - - 24");
	expect_line("spacing: one request every 24.000 s avoids every block "
	    "(L1); a full bucket also lets the first 2 go at once");
}

/*
 * A window: its sub-windows start at 0, so a request at 0 leaves the
 * window 64 sub-windows (60.952... s) later.
 */
static void
test_window(void **state)
{
	(void)state;
	sim_ok(NULL, "-l '2 requests/60s window' --server "
	    "0 1 2 61 62 63");
	expect_line("L1: 2 requests/min window");
	expect_row("1", "0.000 ACCEPT 1 - - 0");
	expect_row("2", "1.000 ACCEPT 0 - - 1");
	expect_row("3", "2.000 BLOCK 0 - L1 2");
	expect_row("4", "61.000 ACCEPT 0 - - 61");
	expect_row("5", "62.000 ACCEPT 0 - - 62");
	expect_row("6", "63.000 BLOCK 0 - L1 63");
	expect_line("spacing: one request every 30.477 s avoids every block "
	    "(L1)");

	sim_ok(NULL, "-l '2 requests/60s window' 0 1 2 3");
	expect_row("3", "2.000 60.953 58.953 0 2");
	expect_row("4", "3.000 61.905 58.905 0 3");

	/* The spacing it prints is the tightest that never blocks. */
	sim_ok(NULL, "-l '2 requests/60s window' --server "
	    "--every 30.477s --count 20");
	expect_line("summary: 20 requests, 20 accepted, 0 blocked (0 refused "
	    "by a limit, 0 in a lockout); 0 lockouts, 0.000 s in all");
	sim_ok(NULL, "-l '2 requests/60s window' --server "
	    "--every 30.476s --count 20");
	expect_line("summary: 20 requests, 19 accepted, 1 blocked (1 refused "
	    "by a limit, 0 in a lockout); 0 lockouts, 0.000 s in all");
}

static const char conf_body[] =
    "[broker]\n"
    "segment = tollsimtest\n"
    "\n"
    "[org]\n"
    "limit = 3 requests/min\n"
    "concurrency = 2\n"
    "\n"
    "[org/img]\n"
    "limit = 10 requests/min burst 5\n";

static char conf_path[] = "/tmp/tollsim-conf.XXXXXX";

/* Write conf_body to a temp file of conf_path's name. */
static int
conf_setup(void **state)
{
	int fd;

	(void)state;
	if ((fd = mkstemp(conf_path)) < 0)
		return -1;
	if (write(fd, conf_body, sizeof(conf_body) - 1) !=
	    (ssize_t)sizeof(conf_body) - 1) {
		close(fd);
		return -1;
	}
	return close(fd);
}

static int
conf_teardown(void **state)
{
	(void)state;
	return unlink(conf_path);
}

/* -c/-k: a child key is charged its parent's limits too. */
static void
test_config_key(void **state)
{
	char args[128];

	(void)state;
	snprintf(args, sizeof(args), "-c %s -k org/img --server 0 0 0 0",
	    conf_path);
	sim_ok(NULL, args);
	expect_line("L1: 10 requests/min burst 5  (key org/img, line 9)");
	expect_line("L2: 3 requests/min  (key org, line 5)");
	expect_line("note: concurrency 2 of key org (line 6) left out: "
	    "simulated requests take no time");
	expect_row("3", "0.000 ACCEPT 2 0 - - 0");
	expect_row("4", "0.000 BLOCK 2 0 - L2 0");
	expect_line("spacing: one request every 20.000 s avoids every block "
	    "(L2); a full bucket also lets the first 3 go at once");

	/* The parent alone: its own limit, not the child's. */
	snprintf(args, sizeof(args), "-c %s -k org 0 0 0 0", conf_path);
	sim_ok(NULL, args);
	expect_line("L1: 3 requests/min  (key org, line 5)");
	assert_null(strstr(out, "L2:"));
	expect_row("4", "0.000 20.000 20.000 0 0");

	snprintf(args, sizeof(args), "-c %s -k org/nope 0", conf_path);
	assert_int_equal(sim(NULL, args), 2);
	assert_string_equal(out, "");
	assert_non_null(strstr(errout, "no key `org/nope'"));
}

/* Each bad input: exit 2, nothing on stdout, a message naming it. */
static void
test_errors(void **state)
{
	static const struct {
		const char	*input;
		const char	*args;
		const char	*msg;
	} cases[] = {
		{ NULL, "--bogus 0", "unrecognized option '--bogus'" },
		{ NULL, "0", "no limits: give -l SPEC" },
		{ NULL, "-l 'foo' 0", "-l `foo': count is not a decimal" },
		{ NULL, "-l '5 requests/fortnight' 0", "-l `5 requests/fortnight'"
		    ": unknown unit (want ms, s, m or min, h, d or day" },
		{ NULL, "-l '5 requests/-6s' 0", "a duration is never negative" },
		{ NULL, "-l '5 requests/0ms' 0", "zero period" },
		{ NULL, "-l '1 requests/s' --every 5x --count 2",
		    "--every `5x': unknown unit" },
		{ NULL, "-l 'concurrency 2' 0", "-l `concurrency 2': a "
		    "concurrency limit means nothing here" },
		{ NULL, "-c /nonexistent/x.conf -k a 0",
		    "/nonexistent/x.conf: No such file or directory" },
		{ NULL, "-c x.conf 0", "-c FILE and -k KEY go together" },
		{ NULL, "-c x.conf -k a -l '1 requests/s' 0", "not both" },
		{ NULL, WORKED " 0 zz", "argument 2: `zz': not a time" },
		{ NULL, WORKED " 10:00:00 09:59:59", "argument 2: `09:59:59' "
		    "is before the time before it (`10:00:00')" },
		{ NULL, WORKED " 5 3", "argument 2: `3' is before" },
		{ NULL, WORKED " 10:00:00 5", "argument 2: `5' is seconds but "
		    "the first time was HH:MM:SS" },
		{ NULL, WORKED " 24:00:00", "argument 1: `24:00:00': hour, "
		    "minute or second out of range" },
		{ NULL, WORKED " 2026-02-29T10:00:00Z", "`2026-02-29T10:00:00Z"
		    "': no such date" },
		{ NULL, WORKED " 2026-11-23T10:00:00+25:00",
		    "bad zone offset" },
		{ NULL, WORKED " 2026-11-23T10:00:00Zjunk",
		    "unexpected text after the time" },
		{ "10:00:00\n# fine\n\n10:00:0x\n", WORKED,
		    "line 4: `10:00:0x': not HH:MM:SS" },
		{ "2026-11-23T10:00:00Z\n2026-11-23T10:00:00+01:00\n", WORKED,
		    "line 2: `2026-11-23T10:00:00+01:00' is before" },
		{ "", WORKED, "no request times" },
		{ NULL, WORKED " --every 30s", "--every DURATION and --count N "
		    "go together" },
		{ NULL, WORKED " --every 30x --count 3", "--every `30x': unknown "
		    "unit" },
		{ NULL, WORKED " --every 30s --count 0", "--count `0'" },
		{ NULL, WORKED " --every 30s --count 3 5", "give TIMEs or "
		    "--every/--count, not both" },
		{ NULL, WORKED " --tokens -3 0", "--tokens `-3': not a whole "
		    "number" },
		{ NULL, "-l '10 tokens/s' --tokens 11 0", "a request costs 11 "
		    "tokens, more than limit 1 (10 tokens/s) ever admits" },
		/* Within the burst, but its ns do not fit 64 bits. */
		{ NULL, "-l '1000 tokens/day burst 18446744073709551615' "
		    "--tokens 1125899906842624 0", "a request costs "
		    "1125899906842624 tokens, more than limit 1 (1000 "
		    "tokens/day burst 18446744073709551615) ever admits" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (sim(cases[i].input, cases[i].args) != 2 || out[0] != '\0' ||
		    strstr(errout, cases[i].msg) == NULL) {
			print_message("case %zu: %s\nstdout: %s\nstderr: %s"
			    "want: %s\n", i, cases[i].args, out, errout,
			    cases[i].msg);
			fail();
		}
	}
}

/* -h: the help on stdout, exit 0. */
static void
test_help(void **state)
{
	(void)state;
	sim_ok(NULL, "-h");
	assert_non_null(strstr(out, "usage: tollsim"));
	assert_non_null(strstr(out, "Blocks in a lockout neither extend it"));
	assert_string_equal(errout, "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_worked_example),
		cmocka_unit_test(test_paced_worked),
		cmocka_unit_test(test_singular),
		cmocka_unit_test(test_lockout_not_extended),
		cmocka_unit_test(test_no_cooldown),
		cmocka_unit_test(test_clock_stdin),
		cmocka_unit_test(test_iso),
		cmocka_unit_test(test_iso_offsets_stdin),
		cmocka_unit_test(test_every),
		cmocka_unit_test(test_two_limits),
		cmocka_unit_test(test_tokens),
		cmocka_unit_test(test_window),
		cmocka_unit_test_setup_teardown(test_config_key, conf_setup,
		    conf_teardown),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_help),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
