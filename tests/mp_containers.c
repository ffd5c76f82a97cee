/*
 * mp_containers.c: workers in other PID and time namespaces, as containers
 * run them, sharing /dev/shm with the broker: `unshare' makes the
 * namespaces, and this program, run again inside them with --worker, is
 * the worker.  A live worker's lease is never freed; a dead one's is
 * freed within 500 ms, wherever it ran, also by a broker that restarted;
 * a worker whose monotonic clock is a day ahead charges the host's time.
 */
#include <sys/stat.h>
#include <sys/wait.h>
#include <errno.h>
#include <fcntl.h>
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

#define FREED_NS	500000000ull	/* a dead worker's lease: 500 ms */

static char self[PATH_MAX];	/* this program, for --worker */
static const char *why_skip;	/* NULL: unshare works here */

static const char conf[] =
    "[one]\n"
    "concurrency = 1\n"
    "[rate]\n"
    "limit = 1 requests/s burst 1\n"
    "[win]\n"
    "limit = 2 requests/h window\n";

/*
 * The worker, inside the namespaces.  hold: take the one lease of `one',
 * say "held" and sleep until killed.  try: say whether a ticket of `one'
 * is granted now.  take: take 1 of `rate' and 2 of `win' and say so.
 */
static int
worker(const char *segment, const char *what)
{
	tg_client *c;
	tg_ticket t;
	uint32_t k;
	int r;

	setvbuf(stdout, NULL, _IONBF, 0);
	if ((r = tg_open(segment, &c)) < 0) {
		printf("open %d\n", r);
		return 1;
	}
	if (strcmp(what, "hold") == 0) {
		if ((r = tg_key(c, "one", &k)) == 0)
			r = tg_acquire(c, k, NULL, 5000000000ll, &t);
		printf("held %d pid %d\n", r, (int)getpid());
		for (;;)
			pause();
	}
	if (strcmp(what, "try") == 0) {
		if ((r = tg_key(c, "one", &k)) == 0)
			r = tg_try_acquire(c, k, NULL, &t, NULL);
		printf("try %d\n", r);
		return 0;
	}
	if ((r = tg_key(c, "rate", &k)) == 0)
		r = tg_try_acquire(c, k, NULL, &t, NULL);
	printf("rate %d", r);
	if ((r = tg_key(c, "win", &k)) == 0 &&
	    (r = tg_try_acquire(c, k, NULL, &t, NULL)) == 0)
		r = tg_try_acquire(c, k, NULL, &t, NULL);
	printf(" win %d\n", r);
	tg_close(c);
	return 0;
}

struct wk {
	pid_t	pid;		/* unshare's: its SIGKILL kills the worker */
	FILE	*out;
};

/* Workers still running: a failed test leaves them to the next one. */
static pid_t running[8];

static void
running_add(pid_t pid)
{
	for (unsigned i = 0; i < 8; i++)
		if (running[i] == 0) {
			running[i] = pid;
			return;
		}
}

static void
running_del(pid_t pid)
{
	for (unsigned i = 0; i < 8; i++)
		if (running[i] == pid)
			running[i] = 0;
}

/* Kill what a failed test left running, so the next starts clean. */
static int
reap_workers(void **state)
{
	(void)state;
	for (unsigned i = 0; i < 8; i++)
		if (running[i] > 0) {
			kill(running[i], SIGKILL);
			waitpid(running[i], NULL, 0);
			running[i] = 0;
		}
	/* Their leases: the broker frees them within a tick or two. */
	tb_sleep_ns(200000000ull);
	return 0;
}

/*
 * Run the worker `what' under argv (unshare and its options), reading its
 * first line into line.  Returns 0, or -1 if it said nothing.
 */
static int
wk_start(struct wk *w, const char *const *ns, const char *segment,
    const char *what, char *line, size_t len)
{
	const char *argv[24];
	unsigned n = 0;
	int p[2];

	assert_int_equal(pipe(p), 0);
	if ((w->pid = fork()) == 0) {
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		while (ns[n] != NULL && n < 16) {
			argv[n] = ns[n];
			n++;
		}
		argv[n++] = self;
		argv[n++] = "--worker";
		argv[n++] = segment;
		argv[n++] = what;
		argv[n] = NULL;
		execvp(argv[0], (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	close(p[1]);
	running_add(w->pid);
	assert_non_null(w->out = fdopen(p[0], "r"));
	if (fgets(line, (int)len, w->out) == NULL)
		return -1;
	return 0;
}

/* SIGKILL and reap a worker. */
static void
wk_kill(struct wk *w)
{
	kill(w->pid, SIGKILL);
	waitpid(w->pid, NULL, 0);
	running_del(w->pid);
	fclose(w->out);
}

/* Reap a worker that ends by itself; its exit status. */
static int
wk_wait(struct wk *w)
{
	int st;

	fclose(w->out);
	assert_int_equal(waitpid(w->pid, &st, 0), w->pid);
	running_del(w->pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* How long until the host's client gets the lease of `one'; ns. */
static uint64_t
time_to_free(tg_client *c, uint32_t k, uint64_t t0)
{
	tg_ticket t;

	assert_int_equal(tg_acquire(c, k, NULL, 3000000000ll, &t), 0);
	tg_release(c, &t);
	return tb_now_ns() - t0;
}

/* The host's view after a while: the live worker keeps its lease. */
static void
assert_still_held(tg_client *c, uint32_t k)
{
	tg_ticket t;
	uint64_t retry = 1;

	/* Ten ticks: long enough for any broker to judge it. */
	tb_sleep_ns(500000000ull);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), -EAGAIN);
	assert_int_equal(retry, 0);		/* waits on a release */
}

static const char *const pidns_proc[] = { "unshare", "--pid", "--fork",
    "--kill-child", "--mount-proc", NULL };
static const char *const pidns[] = { "unshare", "--pid", "--fork",
    "--kill-child", NULL };

/*
 * A worker under `unshare --pid --fork --mount-proc' is pid 1 in its
 * namespace.  The broker must not take it for its own pid 1; a second
 * such worker (pid 1 too) is refused; SIGKILL frees the lease.
 */
static void
test_pid_namespace(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "one");
	struct wk a, b;
	char line[128];
	uint64_t t0, ns;

	if (why_skip != NULL) {
		print_message("skipped: %s\n", why_skip);
		tg_close(c);
		skip();
	}
	assert_int_equal(wk_start(&a, pidns_proc, tb->segment, "hold", line,
	    sizeof(line)), 0);
	assert_string_equal(line, "held 0 pid 1\n");
	assert_still_held(c, k);
	assert_int_equal(wk_start(&b, pidns_proc, tb->segment, "try", line,
	    sizeof(line)), 0);
	assert_string_equal(line, "try -11\n");	/* -EAGAIN */
	assert_int_equal(wk_wait(&b), 0);
	t0 = tb_now_ns();
	wk_kill(&a);
	ns = time_to_free(c, k, t0);
	print_message("pid 1 of a namespace killed: lease free after %.1f "
	    "ms\n", ns / 1e6);
	assert_true(ns < FREED_NS);
	tg_close(c);
}

/*
 * Without --mount-proc the worker sees the host's /proc but its own pid
 * is 1 in its namespace: its slot must not follow the host's pid 1.
 */
static void
test_pid_namespace_host_proc(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "one");
	struct wk a;
	char line[128];
	uint64_t t0, ns;

	if (why_skip != NULL) {
		print_message("skipped: %s\n", why_skip);
		tg_close(c);
		skip();
	}
	assert_int_equal(wk_start(&a, pidns, tb->segment, "hold", line,
	    sizeof(line)), 0);
	assert_string_equal(line, "held 0 pid 1\n");
	assert_still_held(c, k);
	t0 = tb_now_ns();
	wk_kill(&a);
	ns = time_to_free(c, k, t0);
	print_message("lease free after %.1f ms\n", ns / 1e6);
	assert_true(ns < FREED_NS);
	tg_close(c);
}

/*
 * Sibling containers: the broker in a PID namespace of its own, the
 * worker in another; neither sees the other's pids.  Then the broker is
 * killed and restarted (in a new namespace) while the worker holds its
 * lease: the new broker keeps it, and frees it when the worker dies.
 */
static void
test_sibling_namespaces_and_restart(void **state)
{
	struct tbroker tb;
	tg_client *c;
	uint32_t k;
	struct wk a;
	char line[128];
	uint64_t t0, ns;
	int r;

	(void)state;
	if (why_skip != NULL) {
		print_message("skipped: %s\n", why_skip);
		skip();
	}
	r = tb_start_wrapped(&tb, conf, pidns_proc);
	if (r == -ENOSYS) {
		tb_cleanup(&tb);
		print_message("skipped: no io_uring for the broker here\n");
		skip();
	}
	assert_int_equal(r, 0);
	c = tb_client(&tb);
	k = tb_key(c, "one");
	assert_int_equal(wk_start(&a, pidns_proc, tb.segment, "hold", line,
	    sizeof(line)), 0);
	assert_string_equal(line, "held 0 pid 1\n");
	assert_still_held(c, k);

	tb_kill(&tb);
	assert_int_equal(tb_restart(&tb), 0);
	assert_still_held(c, k);

	t0 = tb_now_ns();
	wk_kill(&a);
	ns = time_to_free(c, k, t0);
	print_message("sibling namespace, restarted broker: lease free after "
	    "%.1f ms\n", ns / 1e6);
	assert_true(ns < FREED_NS);
	tg_close(c);
	tb_kill(&tb);
	tb_cleanup(&tb);
}

/*
 * A worker whose CLOCK_MONOTONIC is a day ahead (unshare --time
 * --monotonic 86400) takes the one ticket of a 1/s bucket and fills a
 * 2/hour window.  The host must see both in its own time: the bucket is
 * back within a second, not a day; the window is full for it too.
 */
static void
test_time_namespace(void **state)
{
	static const char *const timens[] = { "unshare", "--time",
	    "--monotonic", "86400", "--fork", NULL };
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t rate = tb_key(c, "rate"), win = tb_key(c, "win");
	uint64_t retry = 0;
	struct wk a;
	char line[128];
	tg_ticket t;

	if (why_skip != NULL || access("/proc/self/timens_offsets", F_OK) < 0) {
		print_message("skipped: %s\n", why_skip ? why_skip :
		    "this kernel has no time namespaces");
		tg_close(c);
		skip();
	}
	if (wk_start(&a, timens, tb->segment, "take", line,
	    sizeof(line)) < 0) {
		wk_wait(&a);
		print_message("skipped: unshare --time failed here\n");
		tg_close(c);
		skip();
	}
	assert_int_equal(wk_wait(&a), 0);
	assert_string_equal(line, "rate 0 win 0\n");
	assert_int_equal(tg_try_acquire(c, rate, NULL, &t, &retry), -EAGAIN);
	print_message("after a worker a day ahead: retry in %.3f s\n",
	    retry / 1e9);
	assert_true(retry > 0 && retry <= 1000000000ull);
	assert_int_equal(tg_acquire(c, rate, NULL, 1500000000ll, &t), 0);
	assert_int_equal(tg_try_acquire(c, win, NULL, &t, &retry), -EAGAIN);
	assert_true(retry > 0);
	tg_close(c);
}

static int
setup(void **state)
{
	return tb_group_setup(state, conf);
}

int
main(int argc, char *argv[])
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_pid_namespace, reap_workers),
		cmocka_unit_test_teardown(test_pid_namespace_host_proc,
		    reap_workers),
		cmocka_unit_test_teardown(test_sibling_namespaces_and_restart,
		    reap_workers),
		cmocka_unit_test_teardown(test_time_namespace, reap_workers),
	};
	char out[256];
	ssize_t n;

	if (argc == 4 && strcmp(argv[1], "--worker") == 0)
		return worker(argv[2], argv[3]);
	if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) < 0)
		return 1;
	self[n] = '\0';
	/* Namespaces need privilege (or user namespaces): ask once. */
	if (tb_run("unshare --pid --fork --mount-proc true 2>&1", out,
	    sizeof(out)) != 0)
		why_skip = "unshare --pid cannot run here (not root, or no "
		    "user namespaces)";
	/* A child that deadlocks must fail the run, not hang it. */
	alarm(300);
	return cmocka_run_group_tests(tests, setup, tb_group_teardown);
}
