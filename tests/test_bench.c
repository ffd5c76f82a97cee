/*
 * test_bench.c: tollbench's smoke pass: every figure, briefly, checked
 * for sense (never for speed), and nothing it started left behind, after
 * a normal run as after a SIGINT.
 */
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
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

#define OUT_MAX		65536

/* The interpreter make test names (Debian's), else python3 on PATH. */
static const char *
python(void)
{
	const char *p = getenv("TG_PYTHON");

	return p != NULL && *p != '\0' ? p : "python3";
}

static int
have(const char *prog)
{
	char cmd[PATH_MAX + 64];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
	return system(cmd) == 0;
}

/* The test's own directory, removed by the teardown (kept: TG_KEEP). */
static char dir[64];

static void
mk_dir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/tgbench-test.XXXXXX");
	assert_non_null(mkdtemp(dir));
}

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

/* Print a file (what tollbench said on stderr), if it has anything. */
static void
show(const char *path)
{
	static char buf[OUT_MAX];
	FILE *f;

	if ((f = fopen(path, "r")) == NULL)
		return;
	tb_slurp(f, buf, sizeof(buf));
	fclose(f);
	if (buf[0] != '\0')
		print_message("--- %s\n%s", path, buf);
}

/*
 * What the JSON must say: every row measured at 1 and 2 processes with
 * operations and no refusal, every latency with sane percentiles, the
 * memory, seven targets; and nothing of what the run names left: no
 * segment, no temp directory, no process.  argv: json, redis installed.
 */
static const char checks[] =
    "import json, os, sys\n"
    "d = json.load(open(sys.argv[1]))\n"
    "redis = sys.argv[2] == '1'\n"
    "want = ['floor-cas', 'floor-clock', 'floor-gcra', 'tg-one',\n"
    "        'tg-five', 'tg-tree', 'tg-observe', 'alt-mutex',\n"
    "        'alt-socket', 'alt-redis']\n"
    "rows = {r['name']: r for r in d['rows']}\n"
    "assert sorted(rows) == sorted(want), sorted(rows)\n"
    "for n in want:\n"
    "    r = rows[n]\n"
    "    if n == 'alt-redis' and not redis:\n"
    "        assert 'redis-server' in r['skipped'], r\n"
    "        continue\n"
    "    assert 'skipped' not in r, (n, r.get('skipped'))\n"
    "    assert [x['procs'] for x in r['results']] == [1, 2], (n, r)\n"
    "    for x in r['results']:\n"
    "        assert x['measured'] and x['ops'] > 0, (n, x)\n"
    "        assert x['ns_per_op'] > 0 and x['mops'] > 0, (n, x)\n"
    "        assert 0 < x['fairness'] <= 1, (n, x)\n"
    "        assert x['refused'] == 0, (n, x)\n"
    "        if n in ('floor-cas', 'floor-gcra'):\n"
    "            assert x['cas_retries_per_op'] >= 0, (n, x)\n"
    "        if n.startswith('tg-') and d['settings']['casstat']:\n"
    "            assert x['cas_retries_per_op'] >= 0, (n, x)\n"
    "lat = {l['name']: l for l in d['latency']}\n"
    "assert sorted(lat) == ['lat-reclaim', 'lat-wakeup'], lat\n"
    "for n, l in lat.items():\n"
    "    assert 'skipped' not in l, l\n"
    "    assert l['samples'] == {'lat-wakeup': 40, 'lat-reclaim': 12}[n], l\n"
    "    assert 0 < l['min_ns'] <= l['p50_ns'] <= l['p99_ns'] <= \\\n"
    "        l['max_ns'] < 10 * 10**9, l\n"
    "m = d['memory']\n"
    "assert (m['keys'], m['limits_per_key'], m['max_clients']) == \\\n"
    "    (1000, 4, 1024), m\n"
    "assert m['conf_bytes'] > 0 and m['state_bytes'] > 0, m\n"
    "assert m['broker_rss_kb'] > 0, m\n"
    "assert len(d['targets']) == 7, d['targets']\n"
    "for t in d['targets']:\n"
    "    if t['name'] != 'redis' or redis:\n"
    "        assert t['met'] in (True, False), t\n"
    "        assert t['measured'] > 0, t\n"
    "assert d['failed'] is None, d['failed']\n"
    "assert d['goodput'] is None, d['goodput']\n"
    "c = d['cleanup']\n"
    "assert len(c['segments']) == 2, c\n"
    "for s in c['segments']:\n"
    "    for p in ('/dev/shm/' + s, '/dev/shm/' + s + '.conf'):\n"
    "        assert not os.path.exists(p), p + ' left'\n"
    "assert not os.path.exists(c['tmpdir']), c['tmpdir'] + ' left'\n"
    "assert len(c['pids']) == (3 if redis else 2), c\n"
    "for pid in c['pids']:\n"
    "    try:\n"
    "        os.kill(pid, 0)\n"
    "    except ProcessLookupError:\n"
    "        continue\n"
    "    cmd = open('/proc/%d/cmdline' % pid, 'rb').read()\n"
    "    assert b'tollgated' not in cmd and b'redis' not in cmd, cmd\n";

static void
test_bench_json(void **state)
{
	char bin[PATH_MAX], cmd[3 * PATH_MAX], out[1024];
	char path[PATH_MAX], err[PATH_MAX], py[PATH_MAX];
	FILE *f;
	int st;

	(void)state;
	if (!have(python())) {
		print_message("%s not found: the JSON checks skip\n",
		    python());
		skip();
	}
	mk_dir();
	snprintf(path, sizeof(path), "%s/bench.json", dir);
	snprintf(err, sizeof(err), "%s/bench.err", dir);
	snprintf(py, sizeof(py), "%s/check.py", dir);
	/* Not goodput: its batches take seconds; test_goodput runs them. */
	snprintf(cmd, sizeof(cmd), "TMPDIR=%s %s --json --duration 10 "
	    "--runs 1 --procs 1,2 --handoffs 40 --kills 12 "
	    "--only floor,tg,alt,lat,memory >%s 2>%s", dir,
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
	snprintf(cmd, sizeof(cmd), "%s %s %s %d 2>&1", python(), py, path,
	    have("redis-server"));
	st = tb_run(cmd, out, sizeof(out));
	if (st != 0) {
		print_message("%s", out);
		show(path);
		show(err);
	}
	assert_int_equal(st, 0);
}

/* The text table: its sections and every target line, --only obeyed. */
static void
test_bench_table(void **state)
{
	static char out[OUT_MAX];
	char bin[PATH_MAX], cmd[PATH_MAX + 128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "%s --quick --only floor,tg-one,alt-mutex "
	    "2>&1", tb_bin("tollbench", bin, sizeof(bin)));
	assert_int_equal(tb_run(cmd, out, sizeof(out)), 0);
	if (strstr(out, "1 rate limit vs the GCRA floor, 1 proc") == NULL ||
	    strstr(out, "1 rate limit vs the mutex, 2 procs") == NULL)
		fail_msg("no targets in:\n%s", out);
	assert_non_null(strstr(out, "machine: "));
	assert_non_null(strstr(out, "floor: hand-written GCRA"));
	assert_non_null(strstr(out, "tollgate: try_acquire+release"));
	/* Not selected: not run. */
	assert_null(strstr(out, "alt: GCRA in a Redis"));
	assert_null(strstr(out, "tollgate: tg_observe"));
}

/* Whether some process's command line holds s. */
static int
process_with(const char *s)
{
	static char buf[8192];
	char path[300];
	struct dirent *e;
	ssize_t n;
	DIR *d;
	int fd, found = 0;

	assert_non_null(d = opendir("/proc"));
	while (!found && (e = readdir(d)) != NULL) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
		if ((fd = open(path, O_RDONLY)) < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] == '\0')
				buf[i] = ' ';
		buf[n] = '\0';
		found = strstr(buf, s) != NULL;
	}
	closedir(d);
	return found;
}

/*
 * A SIGINT in the middle of the timed rows, with the broker and
 * redis-server up: tollbench stops them, unlinks the segment, removes
 * its directory, and dies of the signal.
 */
static void
test_bench_sigint(void **state)
{
	char bin[PATH_MAX], seg[64], tmp[PATH_MAX];
	struct dirent *e;
	pid_t pid;
	DIR *d;
	int st, left = 0;

	(void)state;
	mk_dir();
	tb_bin("tollbench", bin, sizeof(bin));
	if ((pid = fork()) == 0) {
		int fd = open("/dev/null", O_WRONLY);

		dup2(fd, 1);
		setenv("TMPDIR", dir, 1);
		execl(bin, "tollbench", "--duration", "100", "--runs", "3",
		    (char *)NULL);
		_exit(127);
	}
	assert_true(pid > 0);
	/* Past the start of the broker, the socket broker and redis. */
	snprintf(seg, sizeof(seg), "tgbench-%d-main", (int)pid);
	snprintf(tmp, sizeof(tmp), "/dev/shm/%s", seg);
	for (int i = 0; i < 1000 && access(tmp, F_OK) < 0; i++)
		tb_sleep_ns(10000000);
	tb_sleep_ns(1500000000);
	kill(pid, SIGINT);
	st = tb_wait_child(pid);
	assert_int_equal(st, 128 + SIGINT);
	snprintf(seg, sizeof(seg), "tgbench-%d-", (int)pid);
	assert_non_null(d = opendir("/dev/shm"));
	while ((e = readdir(d)) != NULL)
		if (strncmp(e->d_name, seg, strlen(seg)) == 0) {
			print_message("left: /dev/shm/%s\n", e->d_name);
			left++;
		}
	closedir(d);
	assert_non_null(d = opendir(dir));
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.') {
			print_message("left: %s/%s\n", dir, e->d_name);
			left++;
		}
	closedir(d);
	if (process_with(seg) || process_with(dir)) {
		print_message("a process it started still runs\n");
		left++;
	}
	assert_int_equal(left, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_bench_json, rm_dir),
		cmocka_unit_test(test_bench_table),
		cmocka_unit_test_teardown(test_bench_sigint, rm_dir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
