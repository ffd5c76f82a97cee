/*
 * test_goodput.c: a short run of tollbench's goodput section (issue 13):
 * 8 workers through tollgate against its strict local provider, checked
 * for behaviour, never for speed, with bounds a loaded machine keeps:
 * no herd after a pause, no stall from OpenAI's headers, no worker
 * starved, every job done.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "helpers.h"

static const char *
python(void)
{
	const char *p = getenv("TG_PYTHON");

	return p != NULL && *p != '\0' ? p : "python3";
}

static char dir[64];

static int
rm_dir(void **state)
{
	char cmd[PATH_MAX + 16];

	(void)state;
	if (dir[0] == '\0' || getenv("TG_KEEP") != NULL)
		return 0;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		print_message("cannot remove %s\n", dir);
	dir[0] = '\0';
	return 0;
}

static void
show(const char *path)
{
	static char buf[65536];
	FILE *f;

	if ((f = fopen(path, "r")) == NULL)
		return;
	tb_slurp(f, buf, sizeof(buf));
	fclose(f);
	if (buf[0] != '\0')
		print_message("--- %s\n%s", path, buf);
}

/*
 * The cells, from the JSON.  retry-after-tg-2x: a config twice the
 * provider's bucket empties it at once, so 429s with a retry-after come
 * at the start, and the pause's end is where a herd would be (8 workers
 * wait; a herd sends them all within 100 ms; paced at the rate, 1 or 2
 * go, 3 is slack; before issue 13's fixes 4 or 5 went).  openai-tg-1x:
 * the bucket runs at remaining 0 most of the batch, each response saying
 * "full again in up to 2 s"; read as "nothing until then" it stalls the
 * fleet for most of that, where the rate wants a request every 100 ms:
 * the longest silence must stay under 700 ms.  Both: every job done, no
 * worker starved: each does a job, and none waits more than 2 s beyond
 * what first come first served gives with the same sends.  And against
 * openai a fair share: its 4 in flight once went again and again to the
 * worker that released and asked at once (1 job for one worker, 8 for
 * another, waits 2 s beyond first come first served); now a release
 * hands the lease to the sleeper it woke, and a waiter for a rate slot
 * holds no lease (2 or more jobs each of 36, 0.4 s beyond).
 */
static const char checks[] =
    "import json, sys\n"
    "d = json.load(open(sys.argv[1]))\n"
    "assert d['failed'] is None, d['failed']\n"
    "cells = {c['name']: c for c in d['goodput']['cells']}\n"
    "assert sorted(cells) == ['gp-openai-tg-1x', "
    "'gp-retry-after-tg-2x'], sorted(cells)\n"
    "for n, c in cells.items():\n"
    "    assert 'skipped' not in c, c\n"
    "    assert c['measured'] and c['complete'], c\n"
    "    assert c['requests'] >= c['jobs_done'] > 0, c\n"
    "    assert c['worker_jobs_min'] >= 1, ('starved', c)\n"
    "    assert c['longest_wait_s'] <= c['fcfs_wait_s'] + 2, ('starved', c)\n"
    "    assert 0 < c['utilisation'] <= 1.05, c\n"
    "    assert c['target'] is not None, c\n"
    "c = cells['gp-retry-after-tg-2x']\n"
    "assert c['rejected'] >= 1 and c['herd'] is not None, ('no pause', c)\n"
    "assert c['herd'] <= 3, ('herd after the pause', c)\n"
    "c = cells['gp-openai-tg-1x']\n"
    "assert c['longest_silence_s'] < 0.7, ('stall', c)\n"
    "assert c['worker_jobs_min'] >= 2, ('uneven', c)\n"
    "assert c['longest_wait_s'] <= c['fcfs_wait_s'] + 1, ('unfair', c)\n";

static void
test_goodput(void **state)
{
	char bin[PATH_MAX], cmd[3 * PATH_MAX], out[4096];
	char path[PATH_MAX], err[PATH_MAX], py[PATH_MAX];
	FILE *f;
	int st;

	(void)state;
	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", python());
	if (system(cmd) != 0) {
		print_message("%s not found: the goodput checks skip\n",
		    python());
		skip();
	}
	snprintf(dir, sizeof(dir), "/tmp/tggoodput-test.XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/goodput.json", dir);
	snprintf(err, sizeof(err), "%s/goodput.err", dir);
	snprintf(py, sizeof(py), "%s/check.py", dir);
	snprintf(cmd, sizeof(cmd), "TMPDIR=%s %s --json --quick --only "
	    "gp-retry-after-tg-2x,gp-openai-tg-1x >%s 2>%s", dir,
	    tb_bin("tollbench", bin, sizeof(bin)), path, err);
	st = tb_run(cmd, out, sizeof(out));
	if (st != 0) {
		show(err);
		show(path);
	}
	assert_int_equal(st, 0);
	assert_non_null(f = fopen(py, "w"));
	fputs(checks, f);
	assert_int_equal(fclose(f), 0);
	snprintf(cmd, sizeof(cmd), "%s %s %s 2>&1", python(), py, path);
	st = tb_run(cmd, out, sizeof(out));
	if (st != 0) {
		print_message("%s", out);
		show(path);
		show(err);
	}
	assert_int_equal(st, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_goodput, rm_dir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
