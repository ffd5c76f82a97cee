/* test_tollrun.c: tollrun against a real broker: tickets, exits, retries. */
#include <sys/stat.h>
#include <sys/wait.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <signal.h>
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
#include "tollgate.h"

/* A key per test: a pause or a spent limit stays with its key. */
static const char conf[] =
    "[one]\n"			/* serialising */
    "concurrency = 1\n"
    "[free]\n"			/* no concurrency: the control */
    "limit = 1000 requests/s\n"
    "[sig]\n"
    "concurrency = 1\n"
    "[retry]\n"
    "limit = 100 requests/s\n"
    "backoff = 200ms..1s\n"
    "[noretry]\n"
    "limit = 100 requests/s\n"
    "backoff = 200ms..1s\n"
    "[stale]\n"
    "limit = 100 requests/s\n"
    "[pause]\n"
    "limit = 100 requests/s\n"
    "backoff = 200ms..1s\n"
    "[cost]\n"
    "limit = 1000 tokens/day\n"
    "limit = 10 images/day\n"
    "[spent]\n"
    "limit = 1 requests/day\n"
    "[once]\n"			/* one ticket: none spent on a bad command */
    "limit = 1 requests/day\n"
    "[held]\n"
    "concurrency = 1\n"
    "[xargs]\n"
    "concurrency = 2\n";

#define MS		UINT64_C(1000000)
#define S		UINT64_C(1000000000)
#define ERR_MAX		4096

static char scratch[64];	/* our files: stamps, counters, headers */

static int
setup(void **state)
{
	char tmpl[] = "/tmp/tgtollrun.XXXXXX";

	if (mkdtemp(tmpl) == NULL)
		return -1;
	snprintf(scratch, sizeof(scratch), "%s", tmpl);
	return tb_group_setup(state, conf);
}

static int
teardown(void **state)
{
	char cmd[128];

	if (getenv("TG_KEEP") == NULL) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", scratch);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", scratch);
	}
	return tb_group_teardown(state);
}

/* scratch/name in buf. */
static const char *
file(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", scratch, name);
	return buf;
}

/* The whole of a small file, NUL-terminated; "" if it is missing. */
static char *
slurp(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	size_t n = 0;

	if (f != NULL) {
		n = fread(buf, 1, len - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	return buf;
}

/*
 * Start tollrun (with -s of tb, unless tb is NULL) on args, stdout to
 * scratch/out and stderr to err (scratch/err if NULL).  Returns its pid.
 */
static pid_t
start(const struct tbroker *tb, const char *err, const char *const *args)
{
	char bin[PATH_MAX], out[PATH_MAX], dflt[PATH_MAX];
	const char *argv[40];
	pid_t pid;
	int n = 0, fd;

	argv[n++] = tb_bin("tollrun", bin, sizeof(bin));
	if (tb != NULL) {
		argv[n++] = "-s";
		argv[n++] = tb->segment;
	}
	for (; *args != NULL; args++) {
		assert_true(n < 39);
		argv[n++] = *args;
	}
	argv[n] = NULL;
	file(out, sizeof(out), "out");
	if (err == NULL)
		err = file(dflt, sizeof(dflt), "err");
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if ((fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644)) >= 0)
			dup2(fd, 1);
		if ((fd = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644)) >= 0)
			dup2(fd, 2);
		/* execv's argv is not const for C's sake; it is not written. */
		execv(bin, (char *const *)(uintptr_t)argv);
		_exit(99);
	}
	return pid;
}

/*
 * Wait at most limit_ns for pid.  Returns its exit code, or minus the
 * signal that killed it: tollrun must exit, never die of a signal.  One
 * still running fails the test (a hang is a failure, not a stuck test).
 */
static int
reap(pid_t pid, uint64_t limit_ns)
{
	uint64_t end = tb_now_ns() + limit_ns;
	pid_t r;
	int st;

	while ((r = waitpid(pid, &st, WNOHANG)) == 0) {
		if (tb_now_ns() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			fail_msg("tollrun still running after %llu ms",
			    (unsigned long long)(limit_ns / MS));
		}
		tb_sleep_ns(2 * MS);
	}
	assert_int_equal(r, pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

/*
 * Run tollrun on the NULL-terminated arguments, at most 20 s; its status
 * as reap gives it, with its stderr in err.
 */
static int
tollrun(const struct tbroker *tb, char *err, size_t len, ...)
{
	char path[PATH_MAX];
	const char *args[36];
	va_list ap;
	int n = 0, st;

	va_start(ap, len);
	while ((args[n] = va_arg(ap, const char *)) != NULL)
		assert_true(++n < 35);
	va_end(ap);
	st = reap(start(tb, NULL, args), 20 * S);
	slurp(file(path, sizeof(path), "err"), err, len);
	return st;
}

#define TOLLRUN(tb, err, ...) \
	tollrun((tb), (err), sizeof(err), __VA_ARGS__, (const char *)NULL)

/* A line a command appended: who, what, when (CLOCK_REALTIME ns). */
struct stamp {
	char		who[8];
	char		what[8];
	unsigned long long ns;
};

/* Read up to max stamps from path; how many there were. */
static int
stamps(const char *path, struct stamp *s, int max)
{
	FILE *f = fopen(path, "r");
	int n = 0;

	if (f == NULL)
		return 0;
	while (n < max && fscanf(f, "%7s %7s %llu", s[n].who, s[n].what,
	    &s[n].ns) == 3)
		n++;
	fclose(f);
	return n;
}

/* Write start and end stamps 0.3 s apart: $1 who, $2 the file. */
static const char interval[] =
    "echo \"$1 start $(date +%s%N)\" >> \"$2\"; sleep 0.3; "
    "echo \"$1 end $(date +%s%N)\" >> \"$2\"";

/*
 * Two tollruns at once on key, each running `interval'; whether the two
 * intervals overlapped (1) or came one after the other (0).
 */
static int
two_at_once(const struct tbroker *tb, const char *key)
{
	char path[PATH_MAX], e1[PATH_MAX], e2[PATH_MAX];
	struct stamp s[5];
	pid_t a, b;

	file(path, sizeof(path), "intervals");
	unlink(path);
	a = start(tb, file(e1, sizeof(e1), "err.a"), (const char *[]){ "-k",
	    key, "--", "sh", "-c", interval, "sh", "A", path, NULL });
	b = start(tb, file(e2, sizeof(e2), "err.b"), (const char *[]){ "-k",
	    key, "--", "sh", "-c", interval, "sh", "B", path, NULL });
	assert_int_equal(reap(a, 10 * S), 0);
	assert_int_equal(reap(b, 10 * S), 0);
	assert_int_equal(stamps(path, s, 5), 4);
	for (int i = 0; i < 4; i++)
		print_message("%s %s %llu\n", s[i].who, s[i].what, s[i].ns);
	assert_string_equal(s[0].what, "start");
	/* One after the other: start, end of one, then of the other. */
	if (strcmp(s[0].who, s[1].who) == 0) {
		assert_string_equal(s[1].what, "end");
		assert_string_not_equal(s[2].who, s[0].who);
		assert_string_equal(s[2].what, "start");
		assert_string_equal(s[3].who, s[2].who);
		assert_string_equal(s[3].what, "end");
		assert_true(s[2].ns >= s[1].ns);
		return 0;
	}
	/* Both started before either ended. */
	assert_string_equal(s[1].what, "start");
	assert_true(s[1].ns < s[2].ns);
	return 1;
}

/* concurrency = 1: the second command starts after the first ended. */
static void
test_serialises(void **state)
{
	struct tbroker *tb = TB_NEED(state);

	assert_int_equal(two_at_once(tb, "one"), 0);
	/* The control: without the lease, the same two overlap. */
	assert_int_equal(two_at_once(tb, "free"), 1);
}

/* The command's status, as a shell gives it. */
static void
test_exit_codes(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	char err[ERR_MAX], path[PATH_MAX], out[256];
	FILE *f;

	assert_int_equal(TOLLRUN(tb, err, "-k", "free", "--", "true"), 0);
	assert_int_equal(TOLLRUN(tb, err, "-k", "free", "--", "sh", "-c",
	    "exit 7"), 7);
	assert_int_equal(TOLLRUN(tb, err, "-k", "free", "--", "false"), 1);
	assert_int_equal(TOLLRUN(tb, err, "-k", "free", "--", "sh", "-c",
	    "exit 255"), 255);
	/* Killed by a signal: 128+N, tollrun itself exiting. */
	assert_int_equal(TOLLRUN(tb, err, "-k", "free", "--", "sh", "-c",
	    "kill -TERM $$"), 143);
	assert_int_equal(TOLLRUN(tb, err, "-k", "free", "--", "sh", "-c",
	    "kill -KILL $$"), 137);
	assert_int_equal(TOLLRUN(tb, err, "-k", "free", "--",
	    "tgtest-no-such-command", "x"), 127);
	assert_non_null(strstr(err, "tgtest-no-such-command"));
	/* Found, not executable. */
	file(path, sizeof(path), "noexec");
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("#!/bin/sh\nexit 0\n", f);
	fclose(f);
	chmod(path, 0644);
	assert_int_equal(TOLLRUN(tb, err, "-k", "free", "--", path), 126);
	assert_non_null(strstr(err, "noexec"));
	/*
	 * Neither spends a ticket: "once" has one a day, still there for
	 * `true' after them.  Nor does an unknown key wait for the command.
	 */
	assert_int_equal(TOLLRUN(tb, err, "-k", "once", "-t", "0", "--",
	    "tgtest-no-such-command"), 127);
	assert_int_equal(TOLLRUN(tb, err, "-k", "once", "-t", "0", "--",
	    path), 126);
	assert_int_equal(TOLLRUN(tb, err, "-k", "once", "-t", "0", "--",
	    "/"), 126);
	assert_int_equal(TOLLRUN(tb, err, "-k", "once", "-t", "0", "--",
	    "true"), 0);
	assert_int_equal(TOLLRUN(tb, err, "-k", "once", "-t", "0", "--",
	    "true"), 75);
	/* Without `--' too: COMMAND's own options are not tollrun's. */
	assert_int_equal(TOLLRUN(tb, err, "-k", "free", "sh", "-c", "exit 3",
	    "-k"), 3);
	/* stdin, stdout and stderr are the command's. */
	assert_int_equal(TOLLRUN(tb, err, "-k", "free", "--", "sh", "-c",
	    "echo to-out; echo to-err >&2"), 0);
	assert_string_equal(slurp(file(path, sizeof(path), "out"), out,
	    sizeof(out)), "to-out\n");
	assert_string_equal(err, "to-err\n");
}

/*
 * SIGTERM to tollrun while the command runs: the command gets it, tollrun
 * exits 143 (not killed itself) and has released the lease it held.
 */
static void
test_signal_forwarded(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "sig");
	char mark[PATH_MAX];
	uint64_t t0, retry = 1;
	tg_ticket t;
	pid_t pid;

	file(mark, sizeof(mark), "sig.up");
	unlink(mark);
	pid = start(tb, NULL, (const char *[]){ "-k", "sig", "--", "sh", "-c",
	    "echo up > \"$1\"; exec sleep 10", "sh", mark, NULL });
	for (t0 = tb_now_ns(); access(mark, F_OK) != 0; tb_sleep_ns(2 * MS))
		assert_true(tb_now_ns() - t0 < 5 * S);
	/* While it runs, tollrun holds the only lease. */
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), -EAGAIN);
	assert_int_equal(retry, 0);
	t0 = tb_now_ns();
	assert_int_equal(kill(pid, SIGTERM), 0);
	assert_int_equal(reap(pid, 5 * S), 143);
	assert_true(tb_now_ns() - t0 < 5 * S);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
	tg_release(c, &t);
	tg_close(c);
}

/*
 * The fake curl: appends a stamp to $3 and counts its runs in $2; on run
 * 1 it saves, into the headers file $1, a redirect then a 429 with
 * `retry-after: $4' and exits 22 (curl -f's status); on later runs a
 * 100 Continue then a 200, or nothing at all if $5 is "none".
 */
static const char fake_curl[] =
    "n=$(( $(cat \"$2\" 2>/dev/null || echo 0) + 1 )); echo $n > \"$2\"; "
    "echo \"run$n start $(date +%s%N)\" >> \"$3\"; "
    "if [ $n -eq 1 ]; then "
    "printf 'HTTP/1.1 302 Found\\r\\nlocation: /b\\r\\n\\r\\n"
    "HTTP/1.1 429 Too Many Requests\\r\\nretry-after: %s\\r\\n\\r\\n' "
    "\"$4\" > \"$1\"; exit 22; fi; "
    "[ \"$5\" = none ] && exit 0; "
    "printf 'HTTP/1.1 100 Continue\\r\\n\\r\\nHTTP/2 200\\r\\n"
    "content-type: image/png\\r\\n\\r\\n' > \"$1\"";

/* Run the fake curl under tollrun -k key with extra options; its status. */
static int
fake_run(const struct tbroker *tb, const char *key, const char *retry,
    const char *after, const char *later, char *err, size_t len,
    struct stamp *s, int *nruns)
{
	char h[PATH_MAX], cnt[PATH_MAX], st[PATH_MAX], n[16];
	int r;

	file(h, sizeof(h), "h");
	file(cnt, sizeof(cnt), "count");
	file(st, sizeof(st), "stamps");
	unlink(cnt);
	unlink(st);
	r = tollrun(tb, err, len, "-k", key, "--headers", h, "--retry", retry,
	    "--", "sh", "-c", fake_curl, "sh", h, cnt, st, after, later,
	    (const char *)NULL);
	*nruns = stamps(st, s, 5);
	assert_int_equal(atoi(slurp(cnt, n, sizeof(n))), *nruns);
	return r;
}

/*
 * --retry 2: a 429 with retry-after 1 (behind a redirect), then a 200
 * (behind a 100 Continue): two runs, the second after the pause, exit 0.
 */
static void
test_retry_after_429(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	char err[ERR_MAX];
	struct stamp s[5];
	int n;

	assert_int_equal(fake_run(tb, "retry", "2", "1", "ok", err,
	    sizeof(err), s, &n), 0);
	print_message("%s", err);
	assert_int_equal(n, 2);
	assert_non_null(strstr(err, "tollrun: 429, retry 1 of 2\n"));
	assert_null(strstr(err, "retry 2 of 2"));
	/* The pause: a second from the 429, which came after run 1. */
	assert_true(s[1].ns - s[0].ns >= 950 * MS);
	assert_true(s[1].ns - s[0].ns < 5 * S);
}

/*
 * Without --retry: one run, its status passed through, and the 429 pauses
 * the key for every client: the test's own try is refused.
 */
static void
test_429_pauses_key(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "pause");
	char err[ERR_MAX];
	struct stamp s[5];
	uint64_t retry = 0;
	tg_ticket t;
	int n;

	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
	tg_release(c, &t);
	assert_int_equal(fake_run(tb, "pause", "0", "30", "ok", err,
	    sizeof(err), s, &n), 22);
	assert_int_equal(n, 1);
	assert_null(strstr(err, "retry"));
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), -EAGAIN);
	/* The server's 30 s, not the backoff (at most 1 s here). */
	assert_true(retry > 25 * S && retry <= 30 * S);
	tg_close(c);
}

/* The same with `--retry' left out altogether: one run, status 22. */
static void
test_no_retry_option(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	char err[ERR_MAX], h[PATH_MAX], cnt[PATH_MAX], st[PATH_MAX], n[16];

	file(h, sizeof(h), "h");
	file(cnt, sizeof(cnt), "count");
	file(st, sizeof(st), "stamps");
	unlink(cnt);
	assert_int_equal(TOLLRUN(tb, err, "-k", "noretry", "--headers", h,
	    "--", "sh", "-c", fake_curl, "sh", h, cnt, st, "1", "ok"), 22);
	assert_string_equal(slurp(cnt, n, sizeof(n)), "1\n");
	assert_null(strstr(err, "retry"));
}

/*
 * The headers file is emptied before each run: run 2 writes none, so
 * tollrun must not read run 1's 429 again (that would make 4 runs).
 */
static void
test_stale_headers(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	char err[ERR_MAX], h[PATH_MAX];
	struct stamp s[5];
	FILE *f;
	int n;

	/* A 429 from a run long ago, too. */
	f = fopen(file(h, sizeof(h), "h"), "w");
	assert_non_null(f);
	fputs("HTTP/2 429\r\nretry-after: 0\r\n\r\n", f);
	fclose(f);
	assert_int_equal(fake_run(tb, "stale", "3", "0", "none", err,
	    sizeof(err), s, &n), 0);
	print_message("%s", err);
	assert_int_equal(n, 2);
	assert_non_null(strstr(err, "retry 1 of 3"));
	assert_null(strstr(err, "retry 2 of 3"));
	assert_non_null(strstr(err, "no response headers"));
}

/* Headers that are not: warned, not observed, the status still the run's. */
static void
test_bad_headers(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	char err[ERR_MAX], h[PATH_MAX];

	file(h, sizeof(h), "h");
	assert_int_equal(TOLLRUN(tb, err, "-k", "free", "--headers", h,
	    "--retry", "3", "--", "sh", "-c",
	    "head -c 70000 /dev/zero > \"$1\"; printf 'HTTP/2 429\\r\\n\\r\\n' "
	    ">> \"$1\"; exit 4", "sh", h), 4);
	assert_non_null(strstr(err, "over 64 KiB"));
	assert_null(strstr(err, "retry"));
	assert_int_equal(TOLLRUN(tb, err, "-k", "free", "--headers", h,
	    "--", "sh", "-c", "echo garbage > \"$1\"; exit 5", "sh", h), 5);
	assert_non_null(strstr(err, "no HTTP status line"));
	assert_int_equal(TOLLRUN(tb, err, "-k", "free", "--headers", h,
	    "--", "sh", "-c", "printf 'HTTP/1.1 100 Continue\\r\\n\\r\\n' > "
	    "\"$1\"", "sh", h), 0);
	assert_non_null(strstr(err, "not a final one"));
	assert_int_equal(TOLLRUN(tb, err, "-k", "free", "--headers", h,
	    "--", "true"), 0);
	assert_non_null(strstr(err, "no response headers"));
}

/* --tokens and --images make the ticket's cost. */
static void
test_cost(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "cost");
	tg_cost over_t = { 0, 701, 0 }, over_i = { 0, 0, 7 };
	tg_cost rest = { 0, 700, 6 };
	char err[ERR_MAX];
	tg_ticket t;
	uint64_t retry;

	assert_int_equal(TOLLRUN(tb, err, "-k", "cost", "--tokens", "300",
	    "--images", "4", "--", "true"), 0);
	assert_int_equal(tg_try_acquire(c, k, &over_t, &t, &retry), -EAGAIN);
	assert_int_equal(tg_try_acquire(c, k, &over_i, &t, &retry), -EAGAIN);
	assert_int_equal(tg_try_acquire(c, k, &rest, &t, &retry), 0);
	tg_release(c, &t);
	/* A cost that never fits. */
	assert_int_equal(TOLLRUN(tb, err, "-k", "cost", "--tokens", "2000",
	    "--", "true"), 65);
	assert_non_null(strstr(err, "never fits"));
	tg_close(c);
}

/* -t: 75 when no ticket comes in time, at once if it cannot come. */
static void
test_timeout(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t ks = tb_key(c, "spent"), kh = tb_key(c, "held");
	char err[ERR_MAX];
	tg_ticket ts, th;
	uint64_t t0, took;

	assert_int_equal(tg_try_acquire(c, ks, NULL, &ts, NULL), 0);
	t0 = tb_now_ns();
	assert_int_equal(TOLLRUN(tb, err, "-k", "spent", "-t", "100ms", "--",
	    "true"), 75);
	took = tb_now_ns() - t0;
	assert_true(took < 2 * S);
	assert_non_null(strstr(err, "no ticket within 100ms"));
	/* A lease nobody gives back: tollrun waits the 300 ms, then 75. */
	assert_int_equal(tg_try_acquire(c, kh, NULL, &th, NULL), 0);
	t0 = tb_now_ns();
	assert_int_equal(TOLLRUN(tb, err, "--timeout", "0.3s", "-k", "held",
	    "--", "true"), 75);
	took = tb_now_ns() - t0;
	assert_true(took >= 290 * MS && took < 3 * S);
	/* Given back, the same goes through. */
	tg_release(c, &th);
	assert_int_equal(TOLLRUN(tb, err, "-t", "5m", "-k", "held", "--",
	    "true"), 0);
	tg_release(c, &ts);
	tg_close(c);
}

/*
 * No such key (67) is not no such segment (69), and each says which:
 * they were one status and one "no such segment or key".
 */
static void
test_unavailable(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	char err[ERR_MAX];

	assert_int_equal(TOLLRUN(tb, err, "-k", "nosuch", "--", "true"), 67);
	assert_non_null(strstr(err, "has no key \"nosuch\" (no [nosuch] in "
	    "its broker's config)"));
	assert_null(strstr(err, "no such segment"));
	assert_int_equal(TOLLRUN(NULL, err, "-s", "tgtest-no-such-seg", "-k",
	    "one", "--", "true"), 69);
	assert_non_null(strstr(err, "tgtest-no-such-seg"));
	assert_non_null(strstr(err, "no such segment: no broker made it"));
	/* The command never ran. */
	assert_int_equal(TOLLRUN(tb, err, "-k", "nosuch", "--", "sh", "-c",
	    "echo ran >&2"), 67);
	assert_null(strstr(err, "ran"));
}

/*
 * A segment not ours to open: 77, naming its owner, group and mode and
 * what to do (here: the config names no group).  As uid 65534, so root
 * only.
 */
static void
test_permission(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	char bin[PATH_MAX], errf[PATH_MAX], err[ERR_MAX];
	pid_t pid;
	int fd, st;

	if (geteuid() != 0) {
		print_message("skipped: needs root, to run tollrun as uid "
		    "65534\n");
		skip();
	}
	tb_bin("tollrun", bin, sizeof(bin));
	file(errf, sizeof(errf), "perm.err");
	unlink(errf);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		if ((fd = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0666)) < 0 ||
		    dup2(fd, 2) < 0 || setgroups(0, NULL) < 0 ||
		    setresgid(65534, 65534, 65534) < 0 ||
		    setresuid(65534, 65534, 65534) < 0)
			_exit(100);
		execl(bin, "tollrun", "-s", tb->segment, "-k", "one", "--",
		    "true", (char *)NULL);
		_exit(101);
	}
	st = tb_wait_child(pid);
	slurp(errf, err, sizeof(err));
	if (st == 100) {
		print_message("skipped: cannot become uid 65534\n");
		skip();
	}
	if (st != 77)
		fail_msg("tollrun as uid 65534 exited %d, not 77: %s", st, err);
	assert_non_null(strstr(err, "permission denied: /dev/shm/"));
	assert_non_null(strstr(err, "is root:root, mode 0660"));
	assert_non_null(strstr(err, "`group = GROUP'"));
}

/*
 * No broker keeps the segment (it stopped; the segment stays): tickets
 * still work, and tollrun says so once, not once per run of --retry.
 */
static void
test_no_broker_warns_once(void **state)
{
	struct tbroker tb2;
	char err[ERR_MAX], hdr[PATH_MAX], cmd[PATH_MAX + 64];
	const char *p;
	int r, n = 0;

	(void)TB_NEED(state);
	memset(&tb2, 0, sizeof(tb2));
	if ((r = tb_start(&tb2, "[k]\nlimit = 100 requests/s\n"
	    "backoff = 1ms..2ms\n")) == -ENOSYS)
		skip();
	assert_int_equal(r, 0);
	assert_int_equal(TOLLRUN(&tb2, err, "-k", "k", "--", "true"), 0);
	assert_null(strstr(err, "broker"));
	assert_int_equal(tb_stop(&tb2), 0);
	/* Each run answers 503: retried twice, three runs in all. */
	file(hdr, sizeof(hdr), "nb.h");
	snprintf(cmd, sizeof(cmd), "printf 'HTTP/1.1 503 x\\r\\n\\r\\n' > %s",
	    hdr);
	r = TOLLRUN(&tb2, err, "-k", "k", "--headers", hdr, "--retry", "2",
	    "--", "sh", "-c", cmd);
	tb_cleanup(&tb2);
	assert_int_equal(r, 0);
	for (p = err; (p = strstr(p, "no broker runs it")) != NULL; p++)
		n++;
	if (n != 1)
		fail_msg("%d warnings, not 1:\n%s", n, err);
	assert_non_null(strstr(err, "tickets still work"));
	assert_non_null(strstr(err, "retry 2 of 2"));
}

/* Usage errors: 2, saying what is wrong; -h: 0 and the usage. */
static void
test_usage(void **state)
{
	char err[ERR_MAX], path[PATH_MAX], out[ERR_MAX];

	(void)state;
	assert_int_equal(TOLLRUN(NULL, err, "-h"), 0);
	assert_non_null(strstr(slurp(file(path, sizeof(path), "out"), out,
	    sizeof(out)), "usage: tollrun"));
	assert_int_equal(TOLLRUN(NULL, err, "--bogus", "-k", "a", "--",
	    "true"), 2);
	assert_non_null(strstr(err, "usage: tollrun"));
	assert_int_equal(TOLLRUN(NULL, err, "--", "true"), 2);
	assert_non_null(strstr(err, "no key"));
	assert_int_equal(TOLLRUN(NULL, err, "-k", "a"), 2);
	assert_non_null(strstr(err, "no command"));
	assert_int_equal(TOLLRUN(NULL, err, "-k", "a", "-t", "5parsecs", "--",
	    "true"), 2);
	assert_non_null(strstr(err, "-t \"5parsecs\": unknown unit (want "
	    "ms, s, m or min, h, d or day)"));
	assert_int_equal(TOLLRUN(NULL, err, "-k", "a", "-t", "-5m", "--",
	    "true"), 2);
	assert_non_null(strstr(err, "-t \"-5m\": a duration is never "
	    "negative"));
	assert_int_equal(TOLLRUN(NULL, err, "-k", "a", "-t",
	    "99999999999999999999d", "--", "true"), 2);
	assert_non_null(strstr(err, "too long"));
	assert_int_equal(TOLLRUN(NULL, err, "-k", "a", "--retry", "x", "--",
	    "true"), 2);
	assert_non_null(strstr(err, "--retry"));
	assert_int_equal(TOLLRUN(NULL, err, "-k", "a", "--tokens", "-1", "--",
	    "true"), 2);
	assert_non_null(strstr(err, "--tokens"));
	assert_int_equal(TOLLRUN(NULL, err, "-k", "a", "--headers", scratch,
	    "--", "true"), 2);
	assert_non_null(strstr(err, "not a regular file"));
}

/* The README's pipeline: xargs -P, a headers file each, --retry. */
static void
test_xargs(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	char bin[PATH_MAX], cmd[3 * PATH_MAX], log[PATH_MAX], buf[256];
	int lines = 0;

	tb_bin("tollrun", bin, sizeof(bin));
	file(log, sizeof(log), "xargs.log");
	unlink(log);
	snprintf(cmd, sizeof(cmd), "seq 1 6 | xargs -P6 -I{} %s -s %s "
	    "-k xargs --headers %s/h{} --retry 3 -- sh -c "
	    "'printf \"HTTP/2 200\\r\\n\\r\\n\" > %s/h{}; echo {} >> %s'",
	    bin, tb->segment, scratch, scratch, log);
	assert_int_equal(system(cmd), 0);
	slurp(log, buf, sizeof(buf));
	for (char *p = buf; (p = strchr(p, '\n')) != NULL; p++)
		lines++;
	assert_int_equal(lines, 6);
}

/* A server that answers every POST 401 with a JSON error; port in argv[1]. */
static const char deny_server[] =
    "import http.server, os, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_POST(self):\n"
    "        self.rfile.read(int(self.headers.get('content-length') or 0))\n"
    "        b = b'{\"error\": {\"message\": \"Incorrect API key\"}}'\n"
    "        self.send_response(401)\n"
    "        self.send_header('content-type', 'application/json')\n"
    "        self.send_header('content-length', str(len(b)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(b)\n"
    "    def log_message(self, *a):\n"
    "        pass\n"
    "s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)\n"
    "with open(sys.argv[1] + '.new', 'w') as f:\n"
    "    f.write(str(s.server_address[1]))\n"
    "os.rename(sys.argv[1] + '.new', sys.argv[1])\n"
    "s.serve_forever()\n";

/*
 * The README's xargs pipeline, as printed but for the URL (a local server
 * that answers 401), the key, the files and two requests: a 401 shows in
 * the exit status (xargs's 123: a command failed), its body kept.  With
 * plain `curl -sS' it was 0, the error saved as the image.
 */
static void
test_readme_curl(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	const char *py = getenv("TG_PYTHON");
	char bin[PATH_MAX], portf[PATH_MAX], img[PATH_MAX], buf[256];
	char cmd[8192];
	int port = 0, st;
	pid_t srv;

	if (py == NULL)
		py = "/usr/bin/python3";
	if (access(py, X_OK) != 0 || system("command -v curl >/dev/null") !=
	    0) {
		print_message("skipped: needs %s and curl (make deps)\n", py);
		skip();
	}
	file(portf, sizeof(portf), "port");
	unlink(portf);
	assert_true((srv = fork()) >= 0);
	if (srv == 0) {
		execl(py, py, "-c", deny_server, portf, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 1000 && port == 0; i++) {
		port = atoi(slurp(portf, buf, sizeof(buf)));
		if (port == 0)
			tb_sleep_ns(10 * MS);
	}
	if (port == 0) {
		kill(srv, SIGKILL);
		tb_wait_child(srv);
		fail_msg("the test server never said its port");
	}
	tb_bin("tollrun", bin, sizeof(bin));
	/* The block of README.md that runs xargs, edited with sed. */
	snprintf(cmd, sizeof(cmd), "awk '/^```sh$/ { p = 1; b = \"\"; next }"
	    " /^```$/ { if (p && b ~ /xargs/) printf \"%%s\", b; p = 0; next }"
	    " p { b = b $0 \"\\n\" }' README.md | sed "
	    "-e 's|seq 1 10|seq 1 2|' "
	    "-e 's|tollrun -k openai/gpt-image-1|%s -s %s -k xargs|' "
	    "-e 's|/tmp/h{}|%s/rh{}|g' -e 's|/tmp/img{}|%s/img{}|' "
	    "-e 's|https://api.openai.com/v1/images/generations|"
	    "http://127.0.0.1:%d/|' > %s/readme.sh && "
	    "grep -q 127.0.0.1 %s/readme.sh && sh %s/readme.sh 2>/dev/null",
	    bin, tb->segment, scratch, scratch, port, scratch, scratch,
	    scratch);
	st = system(cmd);
	kill(srv, SIGTERM);
	tb_wait_child(srv);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) != 123)
		fail_msg("the README's pipeline exited %d on a 401, not 123 "
		    "(xargs: a command failed)", WEXITSTATUS(st));
	/* The error's body is kept, for the user to read. */
	file(img, sizeof(img), "img1.json");
	assert_non_null(strstr(slurp(img, buf, sizeof(buf)),
	    "Incorrect API key"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_serialises),
		cmocka_unit_test(test_exit_codes),
		cmocka_unit_test(test_signal_forwarded),
		cmocka_unit_test(test_retry_after_429),
		cmocka_unit_test(test_429_pauses_key),
		cmocka_unit_test(test_no_retry_option),
		cmocka_unit_test(test_stale_headers),
		cmocka_unit_test(test_bad_headers),
		cmocka_unit_test(test_cost),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_unavailable),
		cmocka_unit_test(test_permission),
		cmocka_unit_test(test_no_broker_warns_once),
		cmocka_unit_test(test_usage),
		cmocka_unit_test(test_xargs),
		cmocka_unit_test(test_readme_curl),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
