/*
 * mp_faults.c: what crashes and scribbles leave behind.  A client killed
 * holding leases, a broker killed and restarted, reloads good and bad,
 * and garbage and ftruncate on the state object, all on a real broker.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "seg.h"
#include "tollgate.h"

#define MS	1000000ull

static const char conf[] =
    "[held]\n"
    "concurrency = 2\n"
    "[count]\n"
    "limit = 10 requests/min\n"
    "limit = 20 requests/h window\n"
    "[other]\n"
    "limit = 100 requests/min\n";

static const char conf_more[] =
    "[held]\n"
    "concurrency = 2\n"
    "[count]\n"
    "limit = 10 requests/min\n"
    "limit = 20 requests/h window\n"
    "[other]\n"
    "limit = 100 requests/min\n"
    "[added]\n"
    "limit = 1 requests/min\n";

static const char conf_resized[] =
    "[held]\n"
    "concurrency = 3\n"
    "[count]\n"
    "limit = 10 requests/min\n"
    "limit = 20 requests/h window\n"
    "[other]\n"
    "limit = 100 requests/min\n";

static int
setup(void **state)
{
	return tb_group_setup(state, conf);
}

/* How many tickets of key can be had right now (each released). */
static int
drain(tg_client *c, uint32_t k)
{
	uint64_t retry;
	tg_ticket t;
	int n = 0;

	while (tg_try_acquire(c, k, NULL, &t, &retry) == 0) {
		tg_release(c, &t);
		n++;
	}
	return n;
}

/* Whether some grant stripe names client pid's slot as its owner. */
static int
owns_stripe(const struct tbroker *tb, pid_t pid)
{
	struct seg_map m;
	struct seg_state *st;
	struct seg_client *cl;
	int found = 0;

	assert_int_equal(seg_attach(tb->segment, 0, &m), 0);
	st = (struct seg_state *)m.state;
	cl = seg_clients(&m);
	for (uint32_t s = 1; s < SEG_STRIPES; s++) {
		uint32_t v = atomic_load(&st->stripe_owner[s]);

		if (v != 0 && v <= m.hdr->max_clients &&
		    atomic_load(&cl[v - 1].owner) != 0 &&
		    atomic_load(&cl[v - 1].pid) == pid)
			found = 1;
	}
	seg_detach(&m);
	return found;
}

/*
 * A client SIGKILLed holding both leases: the broker frees them, and the
 * grant stripe it had.
 */
static void
test_killed_client_reclaimed(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "held");
	uint64_t retry, t0, dt;
	tg_ticket t;
	int p[2];
	char ok;
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	if ((pid = fork()) == 0) {
		tg_client *cc = tb_client(tb);
		uint32_t kk = tb_key(cc, "held");
		tg_ticket a, b;

		if (tg_try_acquire(cc, kk, NULL, &a, &retry) != 0 ||
		    tg_try_acquire(cc, kk, NULL, &b, &retry) != 0)
			_exit(2);
		if (write(p[1], "x", 1) != 1)
			_exit(3);
		pause();
		_exit(0);
	}
	close(p[1]);
	assert_int_equal(read(p[0], &ok, 1), 1);
	close(p[0]);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), -EAGAIN);
	assert_true(owns_stripe(tb, pid));
	/* Let a tick pass: the broker watches the child's pidfd by then. */
	tb_sleep_ns(150 * MS);
	t0 = tb_now_ns();
	kill(pid, SIGKILL);
	assert_int_equal(tb_wait_child(pid), 128 + SIGKILL);
	while (tg_try_acquire(c, k, NULL, &t, &retry) != 0) {
		assert_true(tb_now_ns() - t0 < 5000 * MS);
		tb_sleep_ns(50000);
	}
	dt = tb_now_ns() - t0;
	print_message("leases of a SIGKILLed client free after %.2f ms\n",
	    (double)dt / MS);
	/* Leases first, then the rest of the reclaim: give it a moment. */
	while (owns_stripe(tb, pid) && tb_now_ns() - t0 < 5000 * MS)
		tb_sleep_ns(MS);
	assert_false(owns_stripe(tb, pid));
	/* Both cells are free again: two tickets, then a refusal. */
	{
		tg_ticket t2, t3;

		assert_int_equal(tg_try_acquire(c, k, NULL, &t2, &retry), 0);
		assert_int_equal(tg_try_acquire(c, k, NULL, &t3, &retry),
		    -EAGAIN);
		tg_release(c, &t2);
	}
	tg_release(c, &t);
	tg_close(c);
}

/* Broker SIGKILLed and restarted: every counter and lease is kept. */
static void
test_broker_restart_keeps_counters(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "count"), h = tb_key(c, "held");
	uint64_t retry;
	tg_ticket t, lease;

	for (int i = 0; i < 7; i++) {
		assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
		tg_release(c, &t);
	}
	assert_int_equal(tg_try_acquire(c, h, NULL, &lease, &retry), 0);
	tb_kill(tb);
	/* No broker: rate limits keep working, state is shared memory. */
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
	tg_release(c, &t);
	assert_int_equal(tb_restart(tb), 0);
	assert_int_equal(drain(c, k), 2);
	/* The lease of a live client survived; the old handle still works. */
	assert_int_equal(tg_try_acquire(c, h, NULL, &t, &retry), 0);
	assert_int_equal(tg_try_acquire(c, h, NULL, &t, &retry), -EAGAIN);
	tg_release(c, &lease);
	assert_int_equal(tg_try_acquire(c, h, NULL, &lease, &retry), 0);
	tg_release(c, &lease);
	tg_release(c, &t);
	assert_true(tb_log_count(tb, "attached to segment") >= 1);
	tg_close(c);
}

/* A reload keeps counters of unchanged limits; a bad one changes nothing. */
static void
test_reload_good_and_bad(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "other"), a;
	uint64_t retry, gen;
	tg_ticket t;

	for (int i = 0; i < 60; i++) {
		assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
		tg_release(c, &t);
	}
	assert_int_equal(tb_reload(tb, conf_more), 0);
	assert_int_equal(tg_key(c, "added", &a), 0);
	/* 100 per minute, 60 spent: about 40 left, not a fresh 100. */
	{
		int left = drain(c, k);

		assert_true(left >= 40 && left <= 41);
	}
	gen = tb_config_gen(tb);
	assert_int_equal(tb_reload(tb, "[broken\nlimit = 5 bananas/min\n"),
	    -EINVAL);
	assert_int_equal(tb_config_gen(tb), gen);
	assert_true(tb_alive(tb));
	assert_int_equal(tg_key(c, "added", &a), 0);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), -EAGAIN);
	tg_close(c);
}

/*
 * A reload that resizes a concurrency limit carries the leases in flight
 * over: 2 held of a new 3 leaves one, and the old tickets still release.
 */
static void
test_reload_resize_keeps_leases(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "held");
	tg_ticket a, b, x, y;
	uint64_t retry;

	assert_int_equal(tg_try_acquire(c, k, NULL, &a, &retry), 0);
	assert_int_equal(tg_try_acquire(c, k, NULL, &b, &retry), 0);
	assert_int_equal(tb_reload(tb, conf_resized), 0);
	assert_int_equal(tg_try_acquire(c, k, NULL, &x, &retry), 0);
	assert_int_equal(tg_try_acquire(c, k, NULL, &y, &retry), -EAGAIN);
	/* A ticket taken before the reload frees its moved lease. */
	tg_release(c, &a);
	assert_int_equal(tg_try_acquire(c, k, NULL, &y, &retry), 0);
	assert_int_equal(tg_try_acquire(c, k, NULL, &a, &retry), -EAGAIN);
	tg_release(c, &b);
	tg_release(c, &x);
	tg_release(c, &y);
	/* And back down to 2, with nothing held: two, then a refusal. */
	assert_int_equal(tb_reload(tb, conf), 0);
	assert_int_equal(tg_try_acquire(c, k, NULL, &a, &retry), 0);
	assert_int_equal(tg_try_acquire(c, k, NULL, &b, &retry), 0);
	assert_int_equal(tg_try_acquire(c, k, NULL, &x, &retry), -EAGAIN);
	tg_release(c, &a);
	tg_release(c, &b);
	tg_close(c);
}

/* Garbage over the whole state object, then a truncation to nothing. */
static void
test_garbage_and_truncate(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	char name[128];
	struct stat st;
	unsigned char *p;
	tg_client *c;
	uint64_t retry;
	tg_ticket t;
	size_t size;
	int fd;

	snprintf(name, sizeof(name), "/%s", tb->segment);
	assert_true((fd = shm_open(name, O_RDWR, 0)) >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	size = (size_t)st.st_size;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(p != MAP_FAILED);
	srandom(42);
	for (size_t i = 0; i < size; i++)
		p[i] = (unsigned char)random();
	munmap(p, size);
	tb_sleep_ns(300 * MS);
	assert_true(tb_alive(tb));
	assert_true(tb_log_count(tb, "repaired") > 0);
	assert_true(tb_log_count(tb, "grant stripe owner") > 0);

	assert_int_equal(ftruncate(fd, 0), 0);
	tb_sleep_ns(300 * MS);
	assert_true(tb_alive(tb));
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal((size_t)st.st_size, size);
	assert_true(tb_log_count(tb, "truncated") > 0);
	close(fd);
	/* And the segment still serves a new client. */
	c = tb_client(tb);
	assert_int_equal(tg_try_acquire(c, tb_key(c, "other"), NULL, &t,
	    &retry), 0);
	tg_release(c, &t);
	tg_close(c);
}

/*
 * Run a second tollgated on the broker's segment with the given pidfile;
 * return its combined output and exit status in out.
 */
static void
second_broker(const struct tbroker *tb, const char *pidfile, char *out,
    size_t len)
{
	char bin[256], cmd[PATH_MAX + 512], path[PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "%s/second.conf", tb->dir);
	assert_non_null(f = fopen(path, "w"));
	fprintf(f, "[broker]\nsegment = %s\npidfile = %s\n[x]\n"
	    "limit = 1 requests/s\n", tb->segment, pidfile);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "%s -c %s 2>&1; echo rc=$?",
	    tb_bin("tollgated", bin, sizeof(bin)), path);
	(void)tb_run(cmd, out, len);	/* the status is echoed as rc= */
}

/* A second broker on the same segment refuses, naming the first. */
static void
test_second_broker_refused(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	char out[1024], want[64], pidfile[PATH_MAX];

	snprintf(want, sizeof(want), "pid %d", (int)tb->pid);
	/* The same pidfile: libbsd's pidfile lock says who has it. */
	snprintf(pidfile, sizeof(pidfile), "%s/tollgated.pid", tb->dir);
	second_broker(tb, pidfile, out, sizeof(out));
	assert_non_null(strstr(out, want));
	assert_non_null(strstr(out, "rc=1"));
	/* Another pidfile: the lock on the segment itself still refuses. */
	snprintf(pidfile, sizeof(pidfile), "%s/other.pid", tb->dir);
	second_broker(tb, pidfile, out, sizeof(out));
	assert_non_null(strstr(out, want));
	assert_non_null(strstr(out, "rc=1"));
	assert_true(tb_alive(tb));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_killed_client_reclaimed),
		cmocka_unit_test(test_broker_restart_keeps_counters),
		cmocka_unit_test(test_reload_good_and_bad),
		cmocka_unit_test(test_reload_resize_keeps_leases),
		cmocka_unit_test(test_garbage_and_truncate),
		cmocka_unit_test(test_second_broker_refused),
	};

	return cmocka_run_group_tests(tests, setup, tb_group_teardown);
}
