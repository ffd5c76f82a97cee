/*
 * test_tollstat.c: tollstat against a real broker: its table, clients, JSON
 * and Prometheus output, -k, and its errors.
 */
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "seg.h"
#include "tollgate.h"

static const char conf[] =
    "[images]\n"
    "limit = 5 images/min\n"
    "[api]\n"
    "limit = 100 requests/min\n"
    "concurrency = 2\n"
    "[api/chat]\n"
    "limit = 10000 tokens/day window\n"
    "[gen]\n"
    "limit = 100 requests/min\n"
    "concurrency = 8 adaptive\n"
    "[web]\n"
    "limit = 3 requests/min\n"
    "concurrency = 3\n"
    "[web/search]\n"
    "limit = 50 tokens/min window\n"
    "[web-b]\n"
    "limit = 10 requests/s\n"
    "[dup]\n"
    "limit = 5 requests/min\n"
    "limit = 5 requests/min\n";

#define OUT_MAX	65536

static int
setup(void **state)
{
	return tb_group_setup(state, conf);
}

/*
 * What a test holds, undone by its teardown even when an assertion ends
 * it early: tickets left held would skew the tests after it.
 */
static struct {
	tg_client	*c;		/* closed: its tickets released */
	pid_t		kid;		/* a child: killed and reaped */
	int		fd;		/* the child's pipe: closed */
	struct tbroker	*tb2;		/* a second broker: cleaned up */
} held = { NULL, 0, -1, NULL };

static tg_client *
client(const struct tbroker *tb)
{
	held.c = tb_client(tb);
	return held.c;
}

static void
client_close(void)
{
	tg_close(held.c);
	held.c = NULL;
}

static int
teardown(void **state)
{
	(void)state;
	if (held.fd >= 0)
		close(held.fd);
	if (held.kid > 0) {
		kill(held.kid, SIGKILL);
		tb_wait_child(held.kid);
	}
	client_close();
	if (held.tb2 != NULL) {
		tb_cleanup(held.tb2);
		free(held.tb2);
	}
	held.kid = 0;
	held.fd = -1;
	held.tb2 = NULL;
	return 0;
}

/*
 * Run `tollstat ARGS' through the shell (ARGS may redirect) and return its
 * exit status, with what it wrote to the pipe in out (NUL-terminated).
 */
static int
tollstat(const char *args, char *out, size_t len)
{
	char bin[PATH_MAX], cmd[PATH_MAX + 256];

	if (snprintf(cmd, sizeof(cmd), "%s %s", tb_bin("tollstat", bin,
	    sizeof(bin)), args) >= (int)sizeof(cmd))
		fail_msg("command too long: %s", args);
	return tb_run(cmd, out, len);
}

/*
 * Find the row whose first column is exactly label (a key name, or two
 * spaces and a spec) and split the cells after it into f: a limit's
 * AVAILABLE, NEXT, IN FLIGHT, GRANTED, DENIED; a key's GRANTED, DENIED.
 * Returns how many cells it found, 0 if there is no such row.
 */
static int
row(const char *out, const char *label, char f[5][32])
{
	size_t len = strlen(label), n;
	const char *end;
	char cells[256];

	for (const char *l = out; *l != '\0'; l = end + 1) {
		if ((end = strchr(l, '\n')) == NULL)
			end = l + strlen(l) - 1;
		if (strncmp(l, label, len) != 0 ||
		    strncmp(l + len, "  ", 2) != 0)
			continue;
		/* This line only: %s would skip the newline to the next. */
		n = (size_t)(end - (l + len));
		if (n >= sizeof(cells))
			n = sizeof(cells) - 1;
		memcpy(cells, l + len, n);
		cells[n] = '\0';
		return sscanf(cells, "%31s %31s %31s %31s %31s", f[0], f[1],
		    f[2], f[3], f[4]);
	}
	return 0;
}

/* Whether prog is on PATH. */
static int
have(const char *prog)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
	return system(cmd) == 0;
}

/* `tollstat -j -s SEGMENT EXTRA' into path; asserts it succeeded. */
static void
json_to(const char *segment, const char *extra, const char *path)
{
	char args[PATH_MAX + 256], out[256];

	snprintf(args, sizeof(args), "-j -s %s %s > %s", segment, extra, path);
	assert_int_equal(tollstat(args, out, sizeof(out)), 0);
}

/* What every JSON check starts with: the document, and lookups in it. */
static const char py_prelude[] =
    "import json, sys\n"
    "d = json.load(open(sys.argv[1]))\n"
    "a = sys.argv[2:]\n"
    "def eq(got, want, what):\n"
    "    assert got == want, '%s: %r, not %r' % (what, got, want)\n"
    "def key(n):\n"
    "    ks = [k for k in d['keys'] if k['name'] == n]\n"
    "    assert len(ks) == 1, (n, [k['name'] for k in d['keys']])\n"
    "    return ks[0]\n"
    "def lim(n, spec):\n"
    "    ls = [l for l in key(n)['limits'] if l['spec'] == spec]\n"
    "    assert len(ls) == 1, (n, spec, key(n)['limits'])\n"
    "    return ls[0]\n"
    "def client(pid):\n"
    "    cs = [c for c in d['clients']['list'] if c['pid'] == pid]\n"
    "    assert len(cs) == 1, (pid, d['clients'])\n"
    "    return cs[0]\n";

/*
 * Check the JSON in path: `python3 -m json.tool' must accept it as it is,
 * then python3 runs the prelude and body on it with pyargs as a[].
 * Returns the script's exit status; what it wrote is printed.
 */
static int
pycheck(const char *path, const char *body, const char *pyargs)
{
	char script[PATH_MAX], cmd[2 * PATH_MAX + 256], buf[4096];
	FILE *f;
	int st;

	snprintf(cmd, sizeof(cmd), "python3 -m json.tool %s >/dev/null", path);
	assert_int_equal(system(cmd), 0);
	snprintf(script, sizeof(script), "%s.py", path);
	assert_non_null(f = fopen(script, "w"));
	fputs(py_prelude, f);
	fputs(body, f);
	assert_int_equal(fclose(f), 0);
	snprintf(cmd, sizeof(cmd), "python3 %s %s %s 2>&1", script, path,
	    pyargs);
	st = tb_run(cmd, buf, sizeof(buf));
	if (buf[0] != '\0')
		print_message("%s", buf);
	return st;
}

/* Whether out has the whole line `line'. */
static int
has_line(const char *out, const char *line)
{
	size_t len = strlen(line);

	for (const char *l = out; (l = strstr(l, line)) != NULL; l++)
		if ((l == out || l[-1] == '\n') && l[len] == '\n')
			return 1;
	return 0;
}

/*
 * -c's row for pid: SLOT PID NAME STATE LEASES ACQUIRED ...; 0 if none.
 * name and st hold 32 bytes.
 */
static int
client_row(const char *out, int pid, char *name, char *st,
    unsigned *leases, unsigned long *acquired)
{
	const char *end;
	unsigned slot;
	int p;

	for (const char *l = out; *l != '\0'; l = end + 1) {
		if ((end = strchr(l, '\n')) == NULL)
			break;
		if (sscanf(l, "%u %d %31s %31s %u %lu", &slot, &p, name, st,
		    leases, acquired) == 6 && p == pid)
			return 1;
	}
	return 0;
}

/* Tickets on three keys, one lease held: tollstat shows each of them. */
static void
test_table(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = client(tb);
	uint32_t ki = tb_key(c, "images"), ka = tb_key(c, "api");
	uint32_t kc = tb_key(c, "api/chat");
	tg_cost five = { 0, 0, 5 }, one = { 0, 0, 1 }, words = { 0, 300, 0 };
	tg_ticket t[4];
	uint64_t retry;
	char *out = malloc(OUT_MAX), args[128], f[5][32], line[64], *end;
	double next;
	long avail;

	assert_non_null(out);
	memset(t, 0, sizeof(t));
	/* The bucket of 5 images: all of it, then a refusal. */
	assert_int_equal(tg_try_acquire(c, ki, &five, &t[0], &retry), 0);
	assert_int_equal(tg_try_acquire(c, ki, &one, &t[1], &retry), -EAGAIN);
	/* A child's ticket takes a lease of api's concurrency too. */
	assert_int_equal(tg_try_acquire(c, kc, &words, &t[1], &retry), 0);
	tg_release(c, &t[1]);
	/* Three on api, two released: one lease stays in flight. */
	for (int i = 1; i < 4; i++) {
		assert_int_equal(tg_try_acquire(c, ka, NULL, &t[i], &retry),
		    0);
		if (i < 3)
			tg_release(c, &t[i]);
	}

	snprintf(args, sizeof(args), "-s %s", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	print_message("%s", out);

	assert_non_null(strstr(out, tb->segment));
	snprintf(line, sizeof(line), "pid %d, up ", (int)tb->pid);
	assert_non_null(strstr(out, line));
	assert_non_null(strstr(out, "clients    1 of "));

	/*
	 * Key rows: tickets granted, denied.  The refused try is a poll,
	 * no denial (it was one, and healthy polling raised alerts).
	 */
	assert_int_equal(row(out, "images", f), 2);
	assert_string_equal(f[0], "1");
	assert_string_equal(f[1], "0");
	assert_non_null(strstr(out, " denied, "));
	assert_non_null(strstr(out, " polled\n"));
	assert_int_equal(row(out, "api", f), 2);
	assert_string_equal(f[0], "3");
	assert_string_equal(f[1], "0");
	assert_int_equal(row(out, "api/chat", f), 2);
	assert_string_equal(f[0], "1");

	/* Limit rows: available, next, in flight, granted, denied. */
	assert_int_equal(row(out, "  5 images/min", f), 5);
	assert_string_equal(f[0], "0");
	/* The bucket is empty: the next image in a little under 12 s. */
	next = strtod(f[1], &end);
	assert_string_equal(end, "s");
	assert_true(next > 5 && next <= 12);
	assert_string_equal(f[2], "-");
	assert_string_equal(f[3], "5");
	assert_string_equal(f[4], "1");
	assert_int_equal(row(out, "  100 requests/min", f), 5);
	/* 3 of 100 taken; one comes back every 0.6 s. */
	avail = strtol(f[0], NULL, 10);
	assert_in_range(avail, 97, 100);
	assert_string_equal(f[1], "now");
	assert_string_equal(f[2], "-");
	assert_string_equal(f[3], "3");
	assert_string_equal(f[4], "0");
	assert_int_equal(row(out, "  concurrency 2", f), 5);
	assert_string_equal(f[0], "1");
	assert_string_equal(f[1], "now");
	assert_string_equal(f[2], "1");
	assert_string_equal(f[3], "4");
	assert_string_equal(f[4], "0");
	assert_int_equal(row(out, "  10000 tokens/day window", f), 5);
	assert_string_equal(f[0], "9700");
	assert_string_equal(f[1], "now");
	assert_string_equal(f[2], "-");
	assert_string_equal(f[3], "300");

	tg_release(c, &t[3]);
	client_close();
	free(out);
}

/*
 * What responses did shows: the key's pause and status classes, the
 * server's remaining and limit beside a limit, adaptive concurrency's
 * effective size beside the configured one.
 */
static void
test_feedback_notes(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = client(tb);
	uint32_t k = tb_key(c, "gen");
	/* A window's figures (GitHub's): a cap, shown as such. */
	static const char ok[] = "HTTP/2 200\r\n"
	    "x-ratelimit-limit: 90\r\n"
	    "x-ratelimit-remaining: 2\r\n"
	    "x-ratelimit-reset: 30\r\n\r\n";
	char *out = malloc(OUT_MAX), args[128], f[5][32];
	tg_ticket t[2];
	int tries;

	assert_non_null(out);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t[0], NULL), 0);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t[1], NULL), 0);
	assert_int_equal(tg_observe(c, &t[0], 429, NULL, 0), TG_RETRY);
	assert_int_equal(tg_observe(c, &t[1], 200, ok, sizeof(ok) - 1), TG_OK);
	tg_release(c, &t[0]);
	snprintf(args, sizeof(args), "-s %s", tb->segment);
	/* The broker halves the concurrency on its next tick. */
	for (tries = 0; tries < 40; tries++) {
		assert_int_equal(tollstat(args, out, OUT_MAX), 0);
		if (strstr(out, "adaptive: 4 of 8") != NULL)
			break;
		tb_sleep_ns(25000000);
	}
	print_message("%s", out);
	assert_true(tries < 40);
	assert_non_null(strstr(out, "ok 1; limited 1"));
	assert_non_null(strstr(out, "paused "));
	assert_non_null(strstr(out, "server: 2 left for "));
	assert_non_null(strstr(out, "server says 90"));
	/* Available: the effective 4 less the one still in flight. */
	assert_int_equal(row(out, "  concurrency 8 adaptive", f), 5);
	assert_string_equal(f[0], "3");
	assert_string_equal(f[2], "1");
	tg_release(c, &t[1]);
	client_close();
	free(out);
}

static void
test_missing_segment(void **state)
{
	char out[1024];

	(void)state;
	/* Only stderr goes to the pipe. */
	assert_int_equal(tollstat("-s tgtest-no-such-seg 2>&1 >/dev/null",
	    out, sizeof(out)), 1);
	assert_non_null(strstr(out, "tgtest-no-such-seg"));
	assert_non_null(strstr(out, "no such segment"));
	assert_int_equal(tollstat("-s bad/name 2>&1 >/dev/null", out,
	    sizeof(out)), 1);
	assert_non_null(strstr(out, "bad/name"));
}

/*
 * A segment not ours to read names the group to join: the broker's
 * `group' (a number here: no name needed).  As uid 65534: root only.
 */
static void
test_permission_names_group(void **state)
{
	struct tbroker *tb2 = calloc(1, sizeof(*tb2));
	char bin[PATH_MAX], errf[PATH_MAX], out[2048];
	pid_t pid;
	int fd, st, r;
	FILE *f;

	(void)TB_NEED(state);
	assert_non_null(tb2);
	held.tb2 = tb2;
	if (geteuid() != 0) {
		print_message("skipped: needs root, to run tollstat as uid "
		    "65534\n");
		skip();
	}
	if ((r = tb_start(tb2, "group = 65533\n[k]\nlimit = 1 requests/s\n"))
	    == -ENOSYS)
		skip();
	assert_int_equal(r, 0);
	tb_bin("tollstat", bin, sizeof(bin));
	snprintf(errf, sizeof(errf), "%s/perm.err", tb2->dir);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		if ((fd = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0666)) < 0 ||
		    dup2(fd, 2) < 0 || setgroups(0, NULL) < 0 ||
		    setresgid(65534, 65534, 65534) < 0 ||
		    setresuid(65534, 65534, 65534) < 0)
			_exit(100);
		execl(bin, "tollstat", "-s", tb2->segment, (char *)NULL);
		_exit(101);
	}
	st = tb_wait_child(pid);
	if (st == 100) {
		print_message("skipped: cannot become uid 65534\n");
		skip();
	}
	assert_non_null(f = fopen(errf, "r"));
	tb_slurp(f, out, sizeof(out));
	fclose(f);
	if (st != 1 || strstr(out, "is root:65533, mode 0660; join group "
	    "65533 (`sudo usermod -aG 65533 nobody', then log in again)") ==
	    NULL)
		fail_msg("tollstat as uid 65534 exited %d: %s", st, out);
}

static void
test_usage(void **state)
{
	char out[1024];

	(void)state;
	assert_int_equal(tollstat("-h", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "usage: tollstat"));
	assert_int_equal(tollstat("-q 2>&1 >/dev/null", out, sizeof(out)), 2);
	assert_non_null(strstr(out, "usage: tollstat"));
}

/*
 * -j against known state: two tickets on web and one on web/search, one
 * of them released, one refused.  Each figure is checked.
 */
static void
test_json(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	static const char body[] =
	    "me, broker = int(a[0]), int(a[1])\n"
	    "eq(d['schema'], 1, 'schema')\n"
	    "eq(d['segment'], a[2], 'segment')\n"
	    "eq(d['key_filter'], None, 'key_filter')\n"
	    "assert d['now_ns'] > 0\n"
	    "b = d['broker']\n"
	    "eq(b['state'], 'live', 'broker state')\n"
	    "eq(b['pid'], broker, 'broker pid')\n"
	    "eq(b['stale'], False, 'stale')\n"
	    "assert 0 < b['uptime_ns'] and b['heartbeat_age_ns'] < 10**9\n"
	    "eq(b['repairs'], 0, 'repairs')\n"
	    "eq(d['config']['keys'], 8, 'keys')\n"
	    "eq(d['config']['limits'], 12, 'limits')\n"
	    "assert d['config']['generation'] >= 1\n"
	    "eq(d['clients']['live'], 1, 'live clients')\n"
	    "assert d['clients']['slots'] >= 1\n"
	    "c = client(me)\n"
	    "eq((c['state'], c['comm'], c['leases']),\n"
	    "    ('live', 'test_tollstat', 2), 'me')\n"
	    "assert c['acquired'] >= 3 and c['polls'] >= 1, c\n"
	    "assert d['tickets']['acquired'] >= 3\n"
	    "eq([k['name'] for k in d['keys']], ['api', 'api/chat', 'dup',\n"
	    "    'gen', 'images', 'web', 'web/search', 'web-b'], 'order')\n"
	    "k = key('web')\n"
	    "eq((k['parent'], k['granted'], k['denied'], k['paused_ns']),\n"
	    "    (None, 2, 0, 0), 'web')\n"
	    "eq(k['status'], {'ok': 0, 'limited': 0, 'auth': 0,\n"
	    "    'client_error': 0, 'server_error': 0,\n"
	    "    'paused_total_ns': 0}, 'status')\n"
	    "r = lim('web', '3 requests/min')\n"
	    "eq((r['kind'], r['unit'], r['count'], r['configured_count'],\n"
	    "    r['period_ns'], r['burst'], r['cooldown_ns'],\n"
	    "    r['adaptive']),\n"
	    "    ('rate', 'requests', 3, 3, 60 * 10**9, 3, 0, False), 'rate')\n"
	    "eq((r['effective'], r['available'], r['in_flight'],\n"
	    "    r['holders'], r['server'], r['server_limit'], r['granted'],\n"
	    "    r['denied']), (None, 0, None, [], None, None, 3, 1), 'rate')\n"
	    "assert 0 < r['next_ns'] <= 20 * 10**9, r['next_ns']\n"
	    "l = lim('web', 'concurrency 3')\n"
	    "eq((l['kind'], l['count'], l['period_ns'], l['effective'],\n"
	    "    l['available'], l['next_ns'], l['in_flight'], l['holders'],\n"
	    "    l['granted']), ('concurrency', 3, 0, 3, 1, 0, 2, [me], 3),\n"
	    "    'concurrency')\n"
	    "s = key('web/search')\n"
	    "eq((s['parent'], s['granted']), ('web', 1), 'web/search')\n"
	    "w = lim('web/search', '50 tokens/min window')\n"
	    "eq((w['kind'], w['unit'], w['available'], w['next_ns'],\n"
	    "    w['in_flight'], w['granted']),\n"
	    "    ('window', 'tokens', 30, 0, None, 20), 'window')\n"
	    "eq([l['spec'] for l in key('dup')['limits']],\n"
	    "    ['5 requests/min'] * 2, 'dup')\n";
	tg_client *c = client(tb);
	uint32_t kw = tb_key(c, "web"), ks = tb_key(c, "web/search");
	tg_cost search = { 1, 20, 0 };
	char path[PATH_MAX], pyargs[256];
	tg_ticket t[4];
	uint64_t retry;

	if (!have("python3")) {
		client_close();
		print_message("python3 not found: the JSON checks skip\n");
		skip();
	}
	memset(t, 0, sizeof(t));
	assert_int_equal(tg_try_acquire(c, kw, NULL, &t[0], &retry), 0);
	assert_int_equal(tg_try_acquire(c, kw, NULL, &t[1], &retry), 0);
	assert_int_equal(tg_try_acquire(c, ks, &search, &t[2], &retry), 0);
	/* web's bucket of 3 requests is empty now. */
	assert_int_equal(tg_try_acquire(c, kw, NULL, &t[3], &retry), -EAGAIN);
	tg_release(c, &t[0]);

	snprintf(path, sizeof(path), "%s/stat.json", tb->dir);
	json_to(tb->segment, "", path);
	snprintf(pyargs, sizeof(pyargs), "%d %d %s", (int)getpid(),
	    (int)tb->pid, tb->segment);
	assert_int_equal(pycheck(path, body, pyargs), 0);
	tg_release(c, &t[1]);
	tg_release(c, &t[2]);
	client_close();
}

/* The name a child gives itself: JSON must carry every byte of it. */
static const char odd_name[] = "a\"b\\c\n\x01\xff";

/*
 * Two processes hold api's two leases: holders names both, the full
 * limit has no next_ns, and the child's odd process name survives JSON
 * escaping (and shows tamed in -c).
 */
static void
test_json_holders(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	static const char body[] =
	    "me, kid = int(a[0]), int(a[1])\n"
	    "k = client(kid)\n"
	    "eq(k['comm'], 'a\"b\\\\c\\n\\x01\\ufffd', 'comm')\n"
	    "eq((k['state'], k['leases']), ('live', 1), 'child')\n"
	    "eq(client(me)['leases'], 1, 'my leases')\n"
	    "l = lim('api', 'concurrency 2')\n"
	    "eq((l['in_flight'], l['available'], l['next_ns'], l['holders']),\n"
	    "    (2, 0, None, sorted([me, kid])), 'full')\n";
	char *out = malloc(OUT_MAX), path[PATH_MAX], args[128], pyargs[64];
	char f[5][32], name[32], st[32], ready;
	int up[2], down[2], ok;
	unsigned leases;
	unsigned long acq;
	tg_client *c;
	tg_ticket t;
	pid_t kid;

	if (!have("python3")) {
		free(out);
		print_message("python3 not found: the JSON checks skip\n");
		skip();
	}
	assert_non_null(out);
	assert_int_equal(pipe(up), 0);
	assert_int_equal(pipe(down), 0);
	if ((kid = fork()) == 0) {
		tg_client *kc = NULL;
		uint32_t k;

		close(up[0]);
		close(down[1]);
		if (prctl(PR_SET_NAME, odd_name) < 0)
			_exit(10);
		if (tg_open(tb->segment, &kc) < 0 ||
		    tg_key(kc, "api", &k) < 0)
			_exit(11);
		memset(&t, 0, sizeof(t));
		if (tg_try_acquire(kc, k, NULL, &t, NULL) < 0)
			_exit(12);
		if (write(up[1], "x", 1) != 1)
			_exit(13);
		/* Hold the lease until the parent closes its end. */
		while (read(down[0], &ready, 1) > 0)
			;
		tg_release(kc, &t);
		tg_close(kc);
		_exit(0);
	}
	assert_true(kid > 0);
	held.kid = kid;
	held.fd = down[1];
	close(up[1]);
	close(down[0]);
	ok = read(up[0], &ready, 1) == 1;
	close(up[0]);
	if (!ok)
		fail_msg("the child failed before taking its lease");
	c = client(tb);
	memset(&t, 0, sizeof(t));
	assert_int_equal(tg_try_acquire(c, tb_key(c, "api"), NULL, &t, NULL),
	    0);

	snprintf(path, sizeof(path), "%s/holders.json", tb->dir);
	json_to(tb->segment, "-k api", path);
	snprintf(pyargs, sizeof(pyargs), "%d %d", (int)getpid(), (int)kid);
	assert_int_equal(pycheck(path, body, pyargs), 0);

	/* The table: nothing fits until a release. */
	snprintf(args, sizeof(args), "-s %s", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_int_equal(row(out, "  concurrency 2", f), 5);
	assert_string_equal(f[0], "0");
	assert_string_equal(f[1], "release");
	assert_string_equal(f[2], "2");
	/* -c: control characters and stray bytes as '?', none raw. */
	snprintf(args, sizeof(args), "-c -s %s", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	print_message("%s", out);
	assert_true(client_row(out, kid, name, st, &leases, &acq));
	assert_string_equal(name, "a\"b\\c???");
	assert_string_equal(st, "live");
	assert_int_equal(leases, 1);
	assert_null(strchr(out, '\x01'));

	/* Its end closed, the child releases, closes and exits 0. */
	close(held.fd);
	held.fd = -1;
	held.kid = 0;
	assert_int_equal(tb_wait_child(kid), 0);
	tg_release(c, &t);
	client_close();
	free(out);
}

/* Families -p must have, with their types. */
static const char *const prom_families[][2] = {
	{ "tollgate_broker_up", "gauge" },
	{ "tollgate_broker_uptime_seconds", "gauge" },
	{ "tollgate_heartbeat_age_seconds", "gauge" },
	{ "tollgate_broker_repairs_total", "counter" },
	{ "tollgate_config_generation", "gauge" },
	{ "tollgate_clients", "gauge" },
	{ "tollgate_client_slots", "gauge" },
	{ "tollgate_ctl_requests_total", "counter" },
	{ "tollgate_tickets_acquired_total", "counter" },
	{ "tollgate_tickets_denied_total", "counter" },
	{ "tollgate_tickets_released_total", "counter" },
	{ "tollgate_acquire_waits_total", "counter" },
	{ "tollgate_acquire_polls_total", "counter" },
	{ "tollgate_key_granted_total", "counter" },
	{ "tollgate_key_denied_total", "counter" },
	{ "tollgate_key_responses_total", "counter" },
	{ "tollgate_key_pause_remaining_seconds", "gauge" },
	{ "tollgate_key_paused_seconds_total", "counter" },
	{ "tollgate_key_drained", "gauge" },
	{ "tollgate_limit_available", "gauge" },
	{ "tollgate_limit_next_seconds", "gauge" },
	{ "tollgate_limit_in_flight", "gauge" },
	{ "tollgate_limit_effective", "gauge" },
	{ "tollgate_limit_size", "gauge" },
	{ "tollgate_limit_granted_total", "counter" },
	{ "tollgate_limit_denied_total", "counter" },
	{ "tollgate_limit_server_remaining", "gauge" },
	{ "tollgate_limit_server_reset_seconds", "gauge" },
	{ "tollgate_limit_server_limit", "gauge" },
};

#define NFAMILIES	(sizeof(prom_families) / sizeof(prom_families[0]))

/*
 * The exposition's shape: each family's HELP, then its TYPE, once; a
 * counter's name ends in _total and only a counter's does; every sample
 * sits under its own family's TYPE, so no family is split.  Returns how
 * many families there are.
 */
static unsigned
prom_shape(const char *out)
{
	char seen[64][64], cur[64] = "", help[64] = "", type[16], name[64];
	const char *end;
	unsigned nseen = 0;
	size_t n;

	for (const char *l = out; *l != '\0'; l = end + 1) {
		assert_non_null(end = strchr(l, '\n'));
		if (strncmp(l, "# HELP ", 7) == 0) {
			assert_int_equal(sscanf(l + 7, "%63s", help), 1);
			for (unsigned i = 0; i < nseen; i++)
				assert_string_not_equal(seen[i], help);
			cur[0] = '\0';
		} else if (strncmp(l, "# TYPE ", 7) == 0) {
			assert_int_equal(sscanf(l + 7, "%63s %15s", cur, type),
			    2);
			assert_string_equal(cur, help);
			n = strlen(cur);
			assert_int_equal(strcmp(type, "counter") == 0,
			    n > 6 && strcmp(cur + n - 6, "_total") == 0);
			assert_true(nseen < 64);
			strcpy(seen[nseen++], cur);
			help[0] = '\0';
		} else {
			n = strcspn(l, "{ ");
			assert_true(n > 0 && n < sizeof(name));
			memcpy(name, l, n);
			name[n] = '\0';
			assert_string_equal(name, cur);
		}
	}
	return nseen;
}

/* -p: every family, its samples, and promtool's verdict if it is here. */
static void
test_prom(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	static const char *const lines[] = {
		"tollgate_broker_up 1",
		"tollgate_clients 1",
		"tollgate_key_granted_total{key=\"dup\"} 2",
		"tollgate_key_responses_total{key=\"dup\",class=\"limited\"} 0",
		"tollgate_key_pause_remaining_seconds{key=\"dup\"} 0",
		"tollgate_limit_available{key=\"dup\","
		    "limit=\"5 requests/min\"} 3",
		/* The second of two equal specs: still its own series. */
		"tollgate_limit_available{key=\"dup\","
		    "limit=\"5 requests/min (2)\"} 3",
		"tollgate_limit_granted_total{key=\"dup\","
		    "limit=\"5 requests/min (2)\"} 2",
		"tollgate_limit_next_seconds{key=\"dup\","
		    "limit=\"5 requests/min\"} 0",
		"tollgate_limit_in_flight{key=\"api\","
		    "limit=\"concurrency 2\"} 1",
		"tollgate_limit_available{key=\"api\","
		    "limit=\"concurrency 2\"} 1",
		"tollgate_limit_effective{key=\"api\","
		    "limit=\"concurrency 2\"} 2",
		"tollgate_limit_size{key=\"web/search\","
		    "limit=\"50 tokens/min window\"} 50",
	};
	tg_client *c = client(tb);
	uint32_t kd = tb_key(c, "dup");
	char *out = malloc(OUT_MAX), args[256], want[128];
	tg_ticket t[3];

	assert_non_null(out);
	memset(t, 0, sizeof(t));
	assert_int_equal(tg_try_acquire(c, kd, NULL, &t[0], NULL), 0);
	assert_int_equal(tg_try_acquire(c, kd, NULL, &t[1], NULL), 0);
	assert_int_equal(tg_try_acquire(c, tb_key(c, "api"), NULL, &t[2],
	    NULL), 0);

	snprintf(args, sizeof(args), "-p -s %s", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_int_equal(prom_shape(out), NFAMILIES);
	for (size_t i = 0; i < NFAMILIES; i++) {
		snprintf(want, sizeof(want), "# TYPE %s %s",
		    prom_families[i][0], prom_families[i][1]);
		if (!has_line(out, want))
			fail_msg("no `%s'", want);
	}
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		if (!has_line(out, lines[i]))
			fail_msg("no `%s'", lines[i]);
	/* Nothing in flight on a rate limit; no server figures on dup. */
	assert_null(strstr(out, "tollgate_limit_in_flight{key=\"dup\""));
	assert_null(strstr(out, "tollgate_limit_server_remaining{key=\"dup\""));

	if (have("promtool")) {
		snprintf(args, sizeof(args), "-p -s %s | "
		    "promtool check metrics 2>&1", tb->segment);
		if (tollstat(args, out, OUT_MAX) != 0)
			fail_msg("promtool check metrics: %s", out);
	} else {
		print_message("promtool not found (Debian: prometheus): "
		    "its check skips\n");
	}
	for (int i = 0; i < 3; i++)
		tg_release(c, &t[i]);
	client_close();
	free(out);
}

/* -c: the test process's slot, its name and the lease it holds. */
static void
test_clients(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = client(tb);
	char *out = malloc(OUT_MAX), args[128], name[32], st[32];
	unsigned leases;
	unsigned long acq;
	tg_ticket t;

	assert_non_null(out);
	memset(&t, 0, sizeof(t));
	assert_int_equal(tg_try_acquire(c, tb_key(c, "api"), NULL, &t, NULL),
	    0);
	snprintf(args, sizeof(args), "-c -s %s", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	print_message("%s", out);
	assert_non_null(strstr(out, "clients    1 of "));
	assert_non_null(strstr(out, "SLOT"));
	assert_true(client_row(out, (int)getpid(), name, st, &leases, &acq));
	assert_string_equal(name, "test_tollstat");
	assert_string_equal(st, "live");
	assert_int_equal(leases, 1);
	assert_true(acq >= 1);
	/* Clients only: no key rows. */
	assert_null(strstr(out, "KEY / LIMIT"));

	/* Released: no lease; closed: no slot. */
	tg_release(c, &t);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_true(client_row(out, (int)getpid(), name, st, &leases, &acq));
	assert_int_equal(leases, 0);
	client_close();
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_false(client_row(out, (int)getpid(), name, st, &leases, &acq));
	assert_non_null(strstr(out, "(no clients)"));
	free(out);
}

/* -k: the key and its subtree in the table, -c, JSON and -p. */
static void
test_filter(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	static const char body[] =
	    "me = int(a[0])\n"
	    "eq(d['key_filter'], a[1], 'key_filter')\n"
	    "eq([k['name'] for k in d['keys']], a[2].split(','), 'keys')\n"
	    "eq(d['config']['keys'], 8, 'config keys')\n"
	    "eq(client(me)['leases'], int(a[3]), 'leases')\n";
	tg_client *c = client(tb);
	char *out = malloc(OUT_MAX), args[256], path[PATH_MAX], pyargs[128];
	char f[5][32], name[32], st[32];
	unsigned leases;
	unsigned long acq;
	tg_ticket t;

	assert_non_null(out);
	memset(&t, 0, sizeof(t));
	assert_int_equal(tg_try_acquire(c, tb_key(c, "api"), NULL, &t, NULL),
	    0);

	/* "web" is web and web/search, not web-b. */
	snprintf(args, sizeof(args), "-k web -s %s", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_int_equal(row(out, "web", f), 2);
	assert_int_equal(row(out, "web/search", f), 2);
	assert_int_equal(row(out, "  50 tokens/min window", f), 5);
	assert_int_equal(row(out, "web-b", f), 0);
	assert_int_equal(row(out, "api", f), 0);
	assert_int_equal(row(out, "images", f), 0);
	/* The header still tells the whole config. */
	assert_non_null(strstr(out, ": 8 keys, 12 limits"));
	snprintf(args, sizeof(args), "-k web/search -s %s", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_int_equal(row(out, "web/search", f), 2);
	assert_int_equal(row(out, "web", f), 0);

	/* -c counts the leases of the keys shown. */
	snprintf(args, sizeof(args), "-c -k api -s %s", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_true(client_row(out, (int)getpid(), name, st, &leases, &acq));
	assert_int_equal(leases, 1);
	snprintf(args, sizeof(args), "-c -k images -s %s", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_true(client_row(out, (int)getpid(), name, st, &leases, &acq));
	assert_int_equal(leases, 0);

	/* -p: only web-b's key and limit samples, the broker's still. */
	snprintf(args, sizeof(args), "-p -k web-b -s %s", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_true(has_line(out, "tollgate_broker_up 1"));
	assert_true(has_line(out, "tollgate_key_granted_total{key=\"web-b\"} "
	    "0"));
	assert_true(has_line(out, "tollgate_limit_available{key=\"web-b\","
	    "limit=\"10 requests/s\"} 10"));
	assert_null(strstr(out, "key=\"web\""));
	assert_null(strstr(out, "key=\"api\""));
	assert_int_equal(prom_shape(out), NFAMILIES);

	if (have("python3")) {
		snprintf(path, sizeof(path), "%s/filter.json", tb->dir);
		json_to(tb->segment, "-k web", path);
		snprintf(pyargs, sizeof(pyargs), "%d web web,web/search 0",
		    (int)getpid());
		assert_int_equal(pycheck(path, body, pyargs), 0);
		json_to(tb->segment, "-k api", path);
		snprintf(pyargs, sizeof(pyargs), "%d api api,api/chat 1",
		    (int)getpid());
		assert_int_equal(pycheck(path, body, pyargs), 0);
	} else {
		print_message("python3 not found: the JSON checks skip\n");
	}
	tg_release(c, &t);
	client_close();
	free(out);
}

/* Bad options and keys: a usage error (2), or 1 naming the key. */
static void
test_option_errors(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	static const char *const usage_errs[] = {
		"-j -p", "-c -p", "-k", "-j extra",
	};
	static const char *const no_keys[] = {
		"nope", "ap", "api/", "web/search/x",
	};
	char out[1024], args[256];

	for (size_t i = 0; i < 4; i++) {
		snprintf(args, sizeof(args), "-s %s %s 2>&1 >/dev/null",
		    tb->segment, usage_errs[i]);
		assert_int_equal(tollstat(args, out, sizeof(out)), 2);
		assert_non_null(strstr(out, "usage: tollstat"));
	}
	for (size_t i = 0; i < 4; i++) {
		snprintf(args, sizeof(args), "-j -s %s -k %s 2>&1 >/dev/null",
		    tb->segment, no_keys[i]);
		assert_int_equal(tollstat(args, out, sizeof(out)), 1);
		snprintf(args, sizeof(args), "no key %s ", no_keys[i]);
		assert_non_null(strstr(out, args));
		/* Nothing on stdout: no half a document. */
		snprintf(args, sizeof(args), "-j -s %s -k %s 2>/dev/null",
		    tb->segment, no_keys[i]);
		assert_int_equal(tollstat(args, out, sizeof(out)), 1);
		assert_string_equal(out, "");
	}
}

/*
 * Rename key `from' to `to' in the live config copy of a segment that no
 * broker serves, so nothing rewrites it: a name no config allows, to see
 * that tollstat escapes what it prints.
 */
static void
rename_key(const char *segment, const char *from, const char *to)
{
	char conf_name[256], state_name[256];
	struct seg_map m = { 0 };
	struct seg_key *k;
	struct stat sb;
	void *p;
	int fd, done = 0;

	assert_int_equal(seg_names(segment, conf_name, state_name,
	    sizeof(conf_name)), 0);
	assert_true((fd = shm_open(conf_name, O_RDWR, 0)) >= 0);
	assert_int_equal(fstat(fd, &sb), 0);
	p = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE,
	    MAP_SHARED, fd, 0);
	close(fd);
	assert_true(p != MAP_FAILED);
	m.hdr = p;
	k = seg_keys(seg_cfg(&m, atomic_load(&m.hdr->config_idx)));
	for (uint32_t i = 0; i < m.hdr->max_keys; i++)
		if (strcmp(k[i].name, from) == 0) {
			snprintf(k[i].name, sizeof(k[i].name), "%s", to);
			done = 1;
		}
	munmap(p, (size_t)sb.st_size);
	assert_true(done);
}

/*
 * A segment whose broker stopped still shows, and says so, in every
 * format; and a key name full of what JSON and Prometheus must escape
 * comes out escaped.
 */
static void
test_no_broker(void **state)
{
	static const char body[] =
	    "assert d['broker']['state'] in ('none', 'dead'), d['broker']\n"
	    "eq((d['broker']['uptime_ns'], d['clients']['live']), (0, 0),\n"
	    "    'stopped')\n"
	    "eq(lim('i\"m\\\\a\\ng', '5 images/min')['available'], 5, 'odd')\n";
	static const char *const lines[] = {
		"tollgate_broker_up 0",
		"tollgate_key_granted_total{key=\"i\\\"m\\\\a\\ng\"} 0",
		("tollgate_limit_available{key=\"i\\\"m\\\\a\\ng\","
		    "limit=\"5 images/min\"} 5"),
	};
	struct tbroker *tb2 = calloc(1, sizeof(*tb2));
	char *out = malloc(OUT_MAX), args[256], path[PATH_MAX];
	int r;

	(void)TB_NEED(state);
	assert_non_null(tb2);
	assert_non_null(out);
	held.tb2 = tb2;
	r = tb_start(tb2, conf);
	if (r == -ENOSYS)
		skip();
	assert_int_equal(r, 0);
	assert_int_equal(tb_stop(tb2), 0);
	snprintf(args, sizeof(args), "-s %s", tb2->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_non_null(strstr(out, "no broker"));
	assert_non_null(strstr(out, "  5 images/min"));

	/* i " m \ a newline g */
	rename_key(tb2->segment, "images", "i\"m\\a\ng");
	snprintf(args, sizeof(args), "-p -s %s", tb2->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_int_equal(prom_shape(out), NFAMILIES);
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		if (!has_line(out, lines[i]))
			fail_msg("no `%s'", lines[i]);
	if (have("promtool")) {
		snprintf(args, sizeof(args), "-p -s %s | "
		    "promtool check metrics 2>&1", tb2->segment);
		if (tollstat(args, out, OUT_MAX) != 0)
			fail_msg("promtool check metrics: %s", out);
	}
	if (have("python3")) {
		snprintf(path, sizeof(path), "%s/stopped.json", tb2->dir);
		json_to(tb2->segment, "", path);
		assert_int_equal(pycheck(path, body, ""), 0);
	}
	free(out);
}

/*
 * A stopped broker (SIGSTOP) still has a live pid, but no heartbeat:
 * Prometheus says it is down, the table and JSON that it is stale.
 */
static void
test_hung_broker(void **state)
{
	struct tbroker *tb2 = calloc(1, sizeof(*tb2));
	char *out = malloc(OUT_MAX), args[256];
	int r;

	(void)TB_NEED(state);
	assert_non_null(tb2);
	assert_non_null(out);
	held.tb2 = tb2;
	r = tb_start(tb2, conf);
	if (r == -ENOSYS)
		skip();
	assert_int_equal(r, 0);
	snprintf(args, sizeof(args), "-p -s %s", tb2->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_true(has_line(out, "tollgate_broker_up 1"));
	assert_int_equal(kill(tb2->pid, SIGSTOP), 0);
	tb_sleep_ns(1300000000);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	kill(tb2->pid, SIGCONT);
	assert_true(has_line(out, "tollgate_broker_up 0"));
	snprintf(args, sizeof(args), "-s %s", tb2->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	/* it may have ticked since SIGCONT; its pid is there either way */
	snprintf(args, sizeof(args), "pid %d, up", (int)tb2->pid);
	assert_non_null(strstr(out, args));
	free(out);
}

/*
 * The frames of `tollstat -w' written to a pipe, split in place: each
 * starts at a "segment " line.  Returns how many (at most max).
 */
static int
frames(char *out, char **fr, int max)
{
	int n = 0;

	for (char *p = out; p != NULL && n < max; ) {
		fr[n++] = p;
		if ((p = strstr(p, "\n\nsegment ")) != NULL) {
			p[1] = '\0';
			p += 2;
		}
	}
	return n;
}

/* A -w row's ten cells: GRANTED/s, its 3 averages, DENIED/s, its 3... */
static int
wrow(const char *frame, const char *label, char f[10][32])
{
	size_t len = strlen(label);
	const char *end;

	for (const char *l = frame; *l != '\0'; l = end + 1) {
		if ((end = strchr(l, '\n')) == NULL)
			return 0;
		if (strncmp(l, label, len) == 0 && l[len] == ' ')
			return sscanf(l + len, "%31s %31s %31s %31s %31s %31s "
			    "%31s %31s %31s %31s", f[0], f[1], f[2], f[3],
			    f[4], f[5], f[6], f[7], f[8], f[9]);
	}
	return 0;
}

/*
 * -w: a child hammers web-b (10 requests/s) while tollstat redraws every
 * 0.4 s.  The first frame has no interval yet; later ones show granted and
 * denied per second, and each average is the mean of the intervals seen
 * so far (fewer than 10): frame 2's equals its rate, frame 3's the mean
 * of frames 2 and 3.
 */
static void
test_watch(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	char *out = malloc(OUT_MAX), *fr[8], args[256], f[4][10][32];
	pid_t kid;
	double r2, r3, avg;

	assert_non_null(out);
	assert_true((kid = fork()) >= 0);
	if (kid == 0) {
		tg_client *c;
		tg_ticket t;
		uint32_t k;
		uint64_t end = tb_now_ns() + 2500000000ull;

		if (tg_open(tb->segment, &c) < 0 ||
		    tg_key(c, "web-b", &k) < 0)
			_exit(1);
		while (tb_now_ns() < end) {
			if (tg_try_acquire(c, k, NULL, &t, NULL) == 0)
				tg_release(c, &t);
			tb_sleep_ns(10000000);
		}
		_exit(0);
	}
	held.kid = kid;
	tb_sleep_ns(200000000);
	snprintf(args, sizeof(args), "-s %s -k web-b -w 0.4 -n 4",
	    tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_int_equal(frames(out, fr, 8), 4);
	for (int i = 0; i < 4; i++) {
		assert_non_null(strstr(fr[i], "every 400ms"));
		/* -k: web-b alone; web is another key. */
		assert_null(strstr(fr[i], "\nweb "));
		/* a key has no AVAILABLE or NEXT; a note may follow */
		assert_true(wrow(fr[i], "web-b", f[i]) >= 8);
		assert_int_equal(wrow(fr[i], "  10 requests/s", f[i]), 10);
	}
	for (int c = 0; c < 8; c++)
		assert_string_equal(f[0][c], "-");
	for (int i = 1; i < 4; i++) {
		assert_true(strtod(f[i][0], NULL) > 0);	/* granted/s */
		assert_true(strtod(f[i][4], NULL) > 0);	/* denied/s */
	}
	for (int c = 1; c < 4; c++) {
		assert_string_equal(f[1][c], f[1][0]);
		assert_string_equal(f[1][4 + c], f[1][4]);
	}
	r2 = strtod(f[1][0], NULL);
	r3 = strtod(f[2][0], NULL);
	for (int c = 1; c < 4; c++) {
		avg = strtod(f[2][c], NULL);
		assert_true(avg > (r2 + r3) / 2 - 0.02 &&
		    avg < (r2 + r3) / 2 + 0.02);
	}
	assert_int_equal(tb_wait_child(kid), 0);
	held.kid = 0;
	free(out);
}

/*
 * -w outlives its broker: a frame says the broker is gone after SIGKILL,
 * a later one shows the restarted broker, a later one that the segment
 * is gone; tollstat goes on to the last frame and exits 0.
 */
static void
test_watch_broker_gone(void **state)
{
	struct tbroker *tb2 = calloc(1, sizeof(*tb2));
	char bin[PATH_MAX], path[PATH_MAX], up[64], *out = malloc(OUT_MAX);
	char *fr[16], *gone, *back, *none;
	pid_t kid;
	FILE *f;
	int r, n;

	(void)TB_NEED(state);
	assert_non_null(tb2);
	assert_non_null(out);
	held.tb2 = tb2;
	r = tb_start(tb2, conf);
	if (r == -ENOSYS)
		skip();
	assert_int_equal(r, 0);
	/* Not in tb2->dir, which tb_cleanup removes. */
	snprintf(path, sizeof(path), "/tmp/tgwatch-%d.out", (int)getpid());
	tb_bin("tollstat", bin, sizeof(bin));
	assert_true((kid = fork()) >= 0);
	if (kid == 0) {
		if (freopen(path, "w", stdout) == NULL)
			_exit(126);
		execl(bin, "tollstat", "-s", tb2->segment, "-w", "0.3", "-n",
		    "12", (char *)NULL);
		_exit(127);
	}
	held.kid = kid;
	tb_sleep_ns(900000000);
	tb_kill(tb2);
	tb_sleep_ns(900000000);
	assert_int_equal(tb_restart(tb2), 0);
	snprintf(up, sizeof(up), "broker     pid %d, up", (int)tb2->pid);
	tb_sleep_ns(900000000);
	tb_cleanup(tb2);	/* stops it and unlinks the segment */
	assert_int_equal(tb_wait_child(kid), 0);
	held.kid = 0;
	assert_non_null(f = fopen(path, "r"));
	tb_slurp(f, out, OUT_MAX);
	fclose(f);
	unlink(path);
	assert_non_null(gone = strstr(out, "is gone)"));
	assert_non_null(back = strstr(gone, up));
	assert_non_null(none = strstr(back, "no such segment"));
	assert_non_null(strstr(none, "(frame 12;"));
	/* 12 frames: the ones with a segment to show, then messages */
	n = frames(out, fr, 16);
	assert_true(n >= 3 && n <= 12);
	free(out);
}

/*
 * Grants are counted in stripes, one per client while there are enough,
 * then a shared one; tollstat shows their sum.  18 processes at once (so
 * 15 stripes of their own and 3 clients sharing) take 2 tickets each on
 * a broker of their own: the key and its limit show exactly 36.
 */
static void
test_grants_striped(void **state)
{
	struct tbroker *tb = calloc(1, sizeof(*tb));
	char *out = malloc(OUT_MAX), args[256], f[5][32], b;
	int go[2], ready[2], n = 0, r;
	pid_t kids[18];

	(void)TB_NEED(state);
	assert_non_null(tb);
	assert_non_null(out);
	/* A broker of its own: a budget no earlier test has spent. */
	held.tb2 = tb;
	r = tb_start(tb, "[api]\nlimit = 1000 requests/min\n");
	if (r == -ENOSYS)
		skip();
	assert_int_equal(r, 0);
	snprintf(args, sizeof(args), "-s %s -k api", tb->segment);
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(ready), 0);
	for (int i = 0; i < 18; i++) {
		assert_true((kids[i] = fork()) >= 0);
		if (kids[i] == 0) {
			tg_client *c;
			tg_ticket t;
			uint32_t k;
			char why = 'x';

			close(go[1]);
			close(ready[0]);
			if (tg_open(tb->segment, &c) < 0)
				why = 'o';
			else if (tg_key(c, "api", &k) < 0)
				why = 'k';
			for (int j = 0; j < 2 && why == 'x'; j++) {
				if (tg_try_acquire(c, k, NULL, &t, NULL) != 0)
					why = 'a';
				else
					tg_release(c, &t);
			}
			/*
			 * Say how it went, then hold the client (and its
			 * stripe) until all did: a child that just exited
			 * would leave the parent waiting for its byte.
			 */
			if (write(ready[1], &why, 1) != 1 ||
			    read(go[0], &b, 1) != 0)
				_exit(3);
			_exit(why == 'x' ? 0 : 1); /* no tg_close: reclaimed */
		}
	}
	close(go[0]);
	close(ready[1]);
	while (n < 18 && read(ready[0], &b, 1) == 1) {
		if (b != 'x')
			print_message("a child failed: %c\n", b);
		n++;
	}
	assert_int_equal(n, 18);
	/* All 18 live: the sums count owned and shared stripes alike. */
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	close(go[1]);
	close(ready[0]);
	for (int i = 0; i < 18; i++)
		assert_int_equal(tb_wait_child(kids[i]), 0);
	assert_int_equal(row(out, "api", f), 2);
	assert_string_equal(f[0], "36");
	assert_int_equal(row(out, "  1000 requests/min", f), 5);
	assert_string_equal(f[3], "36");
	free(out);
}

/* n tickets on key k, each released; asserts that every one came. */
static void
take_n(tg_client *c, uint32_t k, unsigned long n)
{
	unsigned long got = 0;
	tg_ticket t;

	for (unsigned long i = 0; i < n; i++)
		if (tg_try_acquire(c, k, NULL, &t, NULL) == 0) {
			got++;
			tg_release(c, &t);
		}
	assert_int_equal(got, n);
}

/*
 * Counts past 100000, as the table humanizes them and -j and -p give them
 * exactly: 99999 tickets of this process, then 1001 of a child (a stripe
 * of its own, summed with ours), 101000 in all on a broker of its own.
 * Reported: 99,000 shown after 101,000 tickets.
 */
static void
test_grants_past_100k(void **state)
{
	struct tbroker *tb = calloc(1, sizeof(*tb));
	static const char body[] =
	    "n = int(a[0])\n"
	    "eq(d['tickets']['acquired'], n, 'tickets acquired')\n"
	    "eq(d['tickets']['released'], n, 'tickets released')\n"
	    "eq(key('big')['granted'], n, 'key granted')\n"
	    "eq(lim('big', '1000000000 requests/s')['granted'], n,\n"
	    "    'limit granted')\n";
	static const char *const prom[] = {
		"tollgate_tickets_acquired_total 101000",
		"tollgate_key_granted_total{key=\"big\"} 101000",
		/* One line, in two literals (parentheses: for clang). */
		("tollgate_limit_granted_total{key=\"big\","
		    "limit=\"1000000000 requests/s\"} 101000"),
	};
	char *out = malloc(OUT_MAX), args[PATH_MAX + 64], f[5][32];
	char path[PATH_MAX];
	tg_client *c;
	uint32_t k;
	pid_t kid;
	int r;

	(void)TB_NEED(state);
	assert_non_null(tb);
	assert_non_null(out);
	held.tb2 = tb;
	r = tb_start(tb, "[big]\nlimit = 1000000000 requests/s\n");
	if (r == -ENOSYS)
		skip();
	assert_int_equal(r, 0);
	c = client(tb);
	k = tb_key(c, "big");
	take_n(c, k, 99999);
	snprintf(args, sizeof(args), "-s %s", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_int_equal(row(out, "big", f), 2);
	assert_string_equal(f[0], "99999");
	assert_non_null(strstr(out, "tickets    99999 acquired, 0 denied, "
	    "99999 released"));

	assert_true((kid = fork()) >= 0);
	if (kid == 0) {
		tg_client *kc = tb_client(tb);

		take_n(kc, tb_key(kc, "big"), 1001);
		tg_close(kc);
		_exit(0);
	}
	assert_int_equal(tb_wait_child(kid), 0);

	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	print_message("%s", out);
	assert_int_equal(row(out, "big", f), 2);
	assert_string_equal(f[0], "101k");
	assert_string_equal(f[1], "0");
	assert_int_equal(row(out, "  1000000000 requests/s", f), 5);
	assert_string_equal(f[3], "101k");
	assert_non_null(strstr(out, "tickets    101k acquired, 0 denied, "
	    "101k released"));

	snprintf(args, sizeof(args), "-p -s %s", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	for (size_t i = 0; i < sizeof(prom) / sizeof(prom[0]); i++)
		if (!has_line(out, prom[i]))
			fail_msg("no `%s'", prom[i]);

	if (have("python3")) {
		snprintf(path, sizeof(path), "%s/big.json", tb->dir);
		json_to(tb->segment, "", path);
		assert_int_equal(pycheck(path, body, "101000"), 0);
	} else
		print_message("python3 not found: the JSON check skips\n");
	client_close();
	free(out);
}

/*
 * -w fits 100 columns: a long key and a long limit go on lines of their
 * own with their numbers under them, and a paused key's note under its
 * row.  (The frame was 119 columns wide with the quick start's config.)
 */
static void
test_watch_width(void **state)
{
	static const char wide[] =
	    "[a-provider-with-a-long-name]\n"
	    "[a-provider-with-a-long-name/and-a-longer-model]\n"
	    "limit = 30000 tokens/min burst 5000 cooldown 120s\n"
	    "limit = 1 requests/165s burst 4 cooldown 120s\n"
	    "concurrency = 4 adaptive\n";
	static const char hdrs[] = "retry-after: 3600\r\n";
	struct tbroker *tb2 = calloc(1, sizeof(*tb2));
	char *out = malloc(OUT_MAX), args[256], f[10][32];
	const char *l, *e, *name;
	tg_client *c;
	tg_ticket t;
	uint32_t k;
	int r, lines = 0;

	(void)TB_NEED(state);
	assert_non_null(tb2);
	assert_non_null(out);
	held.tb2 = tb2;
	if ((r = tb_start(tb2, wide)) == -ENOSYS)
		skip();
	assert_int_equal(r, 0);
	name = "a-provider-with-a-long-name/and-a-longer-model";
	c = client(tb2);
	k = tb_key(c, name);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, NULL), 0);
	assert_int_equal(tg_observe(c, &t, 429, hdrs, sizeof(hdrs) - 1),
	    TG_RETRY);
	tg_release(c, &t);
	snprintf(args, sizeof(args), "-s %s -w 0.1 -n 2", tb2->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	for (l = out; *l != '\0'; l = e + (*e != '\0')) {
		e = strchrnul(l, '\n');
		if (e - l > 100)
			fail_msg("a line of %d columns:\n%.*s", (int)(e - l),
			    (int)(e - l), l);
		lines++;
	}
	assert_true(lines > 20);
	/* The names, alone on their lines, and their ten cells under them. */
	/* The second frame's. */
	assert_non_null(l = strstr(out, "frame 2"));
	assert_non_null(l = strstr(l, name));
	if (l[strlen(name)] != '\n')
		fail_msg("not alone on its line:\n%s", out);
	assert_int_equal(sscanf(l + strlen(name), " %31s %31s %31s %31s %31s "
	    "%31s %31s %31s", f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]),
	    8);
	assert_non_null(strstr(out, "\n  30000 tokens/min burst 5000 "
	    "cooldown 120s "));
	assert_non_null(strstr(out, "\n    paused"));
	client_close();
	free(out);
}

/*
 * Denied counts tickets given up, not polls: 30 refused tries and a
 * wait that ends in a ticket leave it 0 (the tries count as polls, the
 * wait as a wait); a tg_acquire that runs out of time counts 1.  It
 * counted 30 + the wait's refusals: an alert on it fired on health.
 */
static void
test_denied_is_given_up(void **state)
{
	struct tbroker *tb2 = calloc(1, sizeof(*tb2));
	char *out = malloc(OUT_MAX), args[128], f[5][32];
	tg_client *c;
	tg_ticket t;
	uint64_t retry;
	uint32_t k;
	int r;

	(void)TB_NEED(state);
	assert_non_null(tb2);
	assert_non_null(out);
	held.tb2 = tb2;
	/* One ticket, one back every 200 ms. */
	if ((r = tb_start(tb2, "[k]\nlimit = 5 requests/s burst 1\n")) ==
	    -ENOSYS)
		skip();
	assert_int_equal(r, 0);
	c = client(tb2);
	k = tb_key(c, "k");
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
	tg_release(c, &t);
	for (int i = 0; i < 30; i++)
		assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry),
		    -EAGAIN);
	/* A wait that ends in a ticket. */
	assert_int_equal(tg_acquire(c, k, NULL, 10 * 1000000000ll, &t), 0);
	tg_release(c, &t);
	snprintf(args, sizeof(args), "-s %s", tb2->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	print_message("%s", out);
	assert_non_null(strstr(out, "tickets    2 acquired, 0 denied, 2 "
	    "released, 1 waited, 30 polled\n"));
	assert_int_equal(row(out, "k", f), 2);
	assert_string_equal(f[1], "0");
	/* Given up: out of time (the wait above emptied the bucket). */
	assert_int_equal(tg_acquire(c, k, NULL, 0, &t), -ETIMEDOUT);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_non_null(strstr(out, "tickets    2 acquired, 1 denied, 2 "
	    "released, 1 waited, 30 polled\n"));
	assert_int_equal(row(out, "k", f), 2);
	assert_string_equal(f[1], "1");
	snprintf(args, sizeof(args), "-p -s %s", tb2->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_true(has_line(out, "tollgate_tickets_denied_total 1"));
	assert_true(has_line(out, "tollgate_acquire_polls_total 30"));
	client_close();
	free(out);
}

/* -w's interval and -n: typos are usage errors, not a 0 s redraw loop. */
static void
test_watch_errors(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	static const char *const bad[] = {
		"-w 0", "-w 0.05", "-w abc", "-w 1.", "-w .5", "-w 3601",
		"-w 1.0000000001", "-w 1 -j", "-w -p", "-w -c", "-n 3",
		"-w -n 0", "-w -n x", "-w 1 2", "-w 5x", "-w 2h", "-w 50ms",
		"-w 1m30", "-w 5M",
	};
	char *out = malloc(OUT_MAX), args[256];

	assert_non_null(out);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(args, sizeof(args), "-s %s %s 2>&1 >/dev/null",
		    tb->segment, bad[i]);
		if (tollstat(args, out, OUT_MAX) != 2)
			fail_msg("tollstat %s: not a usage error", bad[i]);
		assert_non_null(strstr(out, "tollstat"));
	}
	/* The smallest and a fractional interval are fine. */
	snprintf(args, sizeof(args), "-s %s -w 0.1 -n 2", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_non_null(strstr(out, "every 100ms, frame 2"));
	/* Durations as everywhere: ms, s, m... */
	snprintf(args, sizeof(args), "-s %s -w 250ms -n 2", tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 0);
	assert_non_null(strstr(out, "every 250ms, frame 2"));
	snprintf(args, sizeof(args), "-s %s -w 5x 2>&1 >/dev/null",
	    tb->segment);
	assert_int_equal(tollstat(args, out, OUT_MAX), 2);
	assert_non_null(strstr(out, "-w 5x: unknown unit"));
	free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_table, teardown),
		cmocka_unit_test_teardown(test_feedback_notes, teardown),
		cmocka_unit_test_teardown(test_missing_segment, teardown),
		cmocka_unit_test_teardown(test_permission_names_group,
		    teardown),
		cmocka_unit_test_teardown(test_usage, teardown),
		cmocka_unit_test_teardown(test_json, teardown),
		cmocka_unit_test_teardown(test_json_holders, teardown),
		cmocka_unit_test_teardown(test_prom, teardown),
		cmocka_unit_test_teardown(test_clients, teardown),
		cmocka_unit_test_teardown(test_filter, teardown),
		cmocka_unit_test_teardown(test_option_errors, teardown),
		cmocka_unit_test_teardown(test_no_broker, teardown),
		cmocka_unit_test_teardown(test_hung_broker, teardown),
		cmocka_unit_test_teardown(test_watch, teardown),
		cmocka_unit_test_teardown(test_watch_broker_gone, teardown),
		cmocka_unit_test_teardown(test_watch_errors, teardown),
		cmocka_unit_test_teardown(test_watch_width, teardown),
		cmocka_unit_test_teardown(test_denied_is_given_up, teardown),
		cmocka_unit_test_teardown(test_grants_striped, teardown),
		cmocka_unit_test_teardown(test_grants_past_100k, teardown),
	};

	return cmocka_run_group_tests(tests, setup, tb_group_teardown);
}
