/*
 * mp_fork.c: a client across fork().  A child that inherits a client gets
 * a registration of its own on first use; what it inherited of the
 * parent's (its slot, its leases, its tickets) it cannot free; a child
 * killed with a lease gives it back at once; a parent killed while a child
 * that never used tollgate lives gives its leases back too.
 */
#include <sys/wait.h>
#include <errno.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "seg.h"
#include "tollgate.h"

#define FREED_NS	500000000ull

static const char conf[] =
    "[one]\n"
    "concurrency = 1\n"
    "[rate]\n"
    "limit = 2 requests/min burst 2\n"
    "[fast]\n"
    "limit = 1000000000 requests/s\n";

static int
setup(void **state)
{
	return tb_group_setup(state, conf);
}

/*
 * Whether a fresh process (a child that opens a client of its own) is
 * granted the lease of `one' now: 1 granted, 0 refused.
 */
static int
outsider_gets(const struct tbroker *tb)
{
	pid_t pid;

	if ((pid = fork()) == 0) {
		tg_client *c;
		tg_ticket t;
		uint32_t k;
		int r;

		if (tg_open(tb->segment, &c) < 0 || tg_key(c, "one", &k) < 0)
			_exit(3);
		r = tg_try_acquire(c, k, NULL, &t, NULL);
		tg_close(c);
		_exit(r == 0 ? 1 : r == -EAGAIN ? 0 : 4);
	}
	return tb_wait_child(pid);
}

/* Time until a fresh process is granted the lease, polling; ns. */
static uint64_t
time_to_free(const struct tbroker *tb, uint64_t t0)
{
	while (outsider_gets(tb) != 1 && tb_now_ns() - t0 < 3000000000ull)
		tb_sleep_ns(2000000);
	return tb_now_ns() - t0;
}

/* Live client slots of the segment. */
static unsigned
live_slots(const struct tbroker *tb)
{
	struct seg_map m;
	unsigned n = 0;

	assert_int_equal(seg_attach(tb->segment, 0, &m), 0);
	for (uint32_t i = 0; i < m.hdr->max_clients; i++)
		n += CLIENT_STATE(atomic_load(&seg_clients(&m)[i].owner)) ==
		    CLIENT_LIVE;
	seg_detach(&m);
	return n;
}

/*
 * The parent holds the only lease.  The child releases the inherited
 * ticket, settles it (refused: not its own) and closes the inherited
 * client: none of it frees the parent's lease or slot.
 */
static void
test_child_cannot_free_parents(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "one");
	tg_cost actual = { 0, 0, 0 };
	tg_ticket t;
	pid_t pid;

	assert_int_equal(tg_try_acquire(c, k, NULL, &t, NULL), 0);
	assert_int_equal(live_slots(tb), 1);
	if ((pid = fork()) == 0) {
		tg_release(c, &t);
		tg_release(c, &t);
		if (tg_settle(c, &t, &actual) != -EPERM)
			_exit(2);
		tg_close(c);
		_exit(0);
	}
	assert_int_equal(tb_wait_child(pid), 0);
	/* Longer than a tick: the broker had its chance to err too. */
	tb_sleep_ns(200000000ull);
	assert_int_equal(outsider_gets(tb), 0);
	assert_int_equal(live_slots(tb), 1);
	/* The parent's own release still works. */
	tg_release(c, &t);
	assert_int_equal(outsider_gets(tb), 1);
	tg_close(c);
}

/*
 * A child uses the inherited client: it gets a slot of its own (two live
 * slots while both run), takes the only lease, and is SIGKILLed: the lease
 * is free within 500 ms although the parent lives on.
 */
static void
test_child_killed_lease_freed(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "one");
	uint64_t t0, ns;
	int p[2];
	char ok;
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	if ((pid = fork()) == 0) {
		tg_ticket t;

		close(p[0]);
		ok = tg_try_acquire(c, k, NULL, &t, NULL) == 0 ? 'k' : 'f';
		if (write(p[1], &ok, 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(p[1]);
	assert_int_equal(read(p[0], &ok, 1), 1);
	close(p[0]);
	assert_int_equal(ok, 'k');
	assert_int_equal(live_slots(tb), 2);
	assert_int_equal(outsider_gets(tb), 0);
	t0 = tb_now_ns();
	kill(pid, SIGKILL);
	assert_int_equal(tb_wait_child(pid), 128 + SIGKILL);
	ns = time_to_free(tb, t0);
	print_message("child killed: its lease free after %.1f ms\n",
	    ns / 1e6);
	assert_true(ns < FREED_NS);
	assert_int_equal(live_slots(tb), 1);
	tg_close(c);
}

/*
 * A worker holds the lease and forks a child that never uses tollgate
 * (it only sleeps, as a helper process would).  The worker is killed:
 * its lease must come back while the child lives on.
 */
static void
test_parent_killed_child_lives(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	uint64_t t0, ns;
	int p[2];
	pid_t worker, kid = 0;

	assert_int_equal(pipe(p), 0);
	if ((worker = fork()) == 0) {
		tg_client *c = tb_client(tb);
		tg_ticket t;
		pid_t k2;

		close(p[0]);
		if (tg_try_acquire(c, tb_key(c, "one"), NULL, &t, NULL) != 0)
			_exit(1);
		if ((k2 = fork()) == 0) {
			for (;;)
				pause();
		}
		if (write(p[1], &k2, sizeof(k2)) != sizeof(k2))
			_exit(1);
		for (;;)
			pause();
	}
	close(p[1]);
	assert_int_equal(read(p[0], &kid, sizeof(kid)), sizeof(kid));
	close(p[0]);
	assert_int_equal(outsider_gets(tb), 0);
	t0 = tb_now_ns();
	kill(worker, SIGKILL);
	assert_int_equal(tb_wait_child(worker), 128 + SIGKILL);
	ns = time_to_free(tb, t0);
	print_message("worker killed, its child alive: lease free after %.1f "
	    "ms\n", ns / 1e6);
	assert_int_equal(kill(kid, 0), 0);	/* still there */
	kill(kid, SIGKILL);
	assert_true(ns < FREED_NS);
}

/*
 * Rate tickets across fork: a ticket the child inherited settles nothing
 * (a refund there would be a second one), while the child's own tickets
 * count against the same bucket as the parent's.
 */
static void
test_child_rate_tickets(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "rate");
	tg_cost actual = { 0, 0, 0 };
	tg_ticket t;
	pid_t pid;

	assert_int_equal(tg_try_acquire(c, k, NULL, &t, NULL), 0);
	if ((pid = fork()) == 0) {
		tg_ticket u;

		/* The refund of an inherited ticket is refused ... */
		if (tg_settle(c, &t, &actual) != -EPERM)
			_exit(2);
		/* ... its own ticket is the bucket's last ... */
		if (tg_try_acquire(c, k, NULL, &u, NULL) != 0)
			_exit(3);
		/* ... and its own refund works. */
		if (tg_settle(c, &u, &actual) != 0)
			_exit(4);
		_exit(0);
	}
	assert_int_equal(tb_wait_child(pid), 0);
	/* One back from the child's refund, none from the inherited one. */
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, NULL), 0);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, NULL), -EAGAIN);
	tg_close(c);
}

/* Grants of key handle k over every stripe, as tollstat sums them. */
static uint64_t
grants(const struct tbroker *tb, uint32_t k)
{
	struct seg_map m;
	uint64_t n;

	assert_int_equal(seg_attach(tb->segment, 0, &m), 0);
	n = seg_grant_sum(&m, k & 0xffff);
	seg_detach(&m);
	return n;
}

/*
 * Parent and child take tickets at once through the client the child
 * inherited: every grant is counted.  Sharing the parent's grant stripe,
 * both would write it with plain stores (it is the one process's own) and
 * lose counts: tollstat showed 99,000 after 101,000 tickets.
 */
static void
test_fork_counts_every_grant(void **state)
{
	enum { N = 200000 };
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "fast");
	uint64_t before = grants(tb, k);
	tg_ticket t;
	unsigned got = 0, kid_got;
	int p[2];
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	if ((pid = fork()) == 0) {
		close(p[0]);
		for (unsigned i = 0; i < N; i++)
			got += tg_try_acquire(c, k, NULL, &t, NULL) == 0;
		_exit(write(p[1], &got, sizeof(got)) == sizeof(got) ? 0 : 1);
	}
	close(p[1]);
	for (unsigned i = 0; i < N; i++)
		got += tg_try_acquire(c, k, NULL, &t, NULL) == 0;
	assert_int_equal(read(p[0], &kid_got, sizeof(kid_got)),
	    sizeof(kid_got));
	close(p[0]);
	assert_int_equal(tb_wait_child(pid), 0);
	print_message("%u + %u tickets, %llu counted\n", got, kid_got,
	    (unsigned long long)(grants(tb, k) - before));
	assert_int_equal(grants(tb, k) - before, (uint64_t)got + kid_got);
	tg_close(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_child_cannot_free_parents),
		cmocka_unit_test(test_child_killed_lease_freed),
		cmocka_unit_test(test_parent_killed_child_lives),
		cmocka_unit_test(test_child_rate_tickets),
		cmocka_unit_test(test_fork_counts_every_grant),
	};

	/* A child that deadlocks must fail the run, not hang it. */
	alarm(300);
	return cmocka_run_group_tests(tests, setup, tb_group_teardown);
}
