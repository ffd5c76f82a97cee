/* test_window.c: rolling windows on a virtual clock, one behaviour a test. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "seg.h"
#include "helpers.h"
#include "window.h"

#define SEC	UINT64_C(1000000000)
#define EPOCHS	(WIN_EPOCH_MASK + 1)	/* 2^28: where epochs wrap */

/* A ring word as window.c writes it: epoch e (mod 2^28), count c. */
static uint64_t
slot_word(uint64_t e, uint64_t c)
{
	return (e & WIN_EPOCH_MASK) << WIN_COUNT_BITS | c;
}

/* Take one unit at a time at now until refused; how many went in. */
static uint64_t
fill(_Atomic uint64_t *ring, uint64_t now, uint64_t sub, uint64_t limit)
{
	uint64_t n = 0, retry;

	while (win_take(ring, now, sub, limit, 1, &retry) == 0 &&
	    n <= limit)
		n++;
	return n;
}

/*
 * 63 sub-windows cover the period, rounded up so they never fall short;
 * the 64th slot of the ring is the current, partial one.
 */
static void
test_win_sub_ns_is_period_over_63_rounded_up(void **state)
{
	static const uint64_t p[] = { 63 * SEC, 64 * SEC, SEC, 60 * SEC,
	    86400 * SEC, 63, 64, 126, UINT64_MAX };

	(void)state;
	assert_int_equal(win_sub_ns(63 * SEC), SEC);
	assert_int_equal(win_sub_ns(SEC), 15873016);	/* 15873015.9 */
	for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++) {
		uint64_t sub = win_sub_ns(p[i]);

		assert_true((unsigned __int128)sub * 63 >= p[i]);
		assert_true((unsigned __int128)(sub - 1) * 63 < p[i]);
	}
	/* Never 0: it divides now_ns. */
	assert_int_equal(win_sub_ns(0), 1);
	assert_int_equal(win_sub_ns(1), 1);
}

/* N units spread over part of the period go in; the next is refused. */
static void
test_win_admits_limit_then_refuses(void **state)
{
	const uint64_t sub = win_sub_ns(SEC), t0 = 1000 * SEC, lim = 10;
	_Atomic uint64_t ring[SEG_WIN_SLOTS] = { 0 };
	uint64_t retry = 0;

	(void)state;
	for (uint64_t i = 0; i < lim; i++)
		assert_int_equal(win_take(ring, t0 + i * SEC / 20, sub, lim, 1,
		    &retry), 0);
	assert_int_equal(win_sum(ring, t0 + SEC / 2, sub), lim);
	assert_int_equal(win_take(ring, t0 + SEC / 2, sub, lim, 1, &retry),
	    -EAGAIN);
	assert_true(retry > 0);
	/* Still within a period of the first: still refused. */
	assert_int_equal(win_take(ring, t0 + SEC - 1, sub, lim, 1, &retry),
	    -EAGAIN);
}

/* More than the limit at once can never fit: say so, touch nothing. */
static void
test_win_refuses_more_than_limit_at_once(void **state)
{
	const uint64_t sub = win_sub_ns(SEC), t0 = 1000 * SEC;
	_Atomic uint64_t ring[SEG_WIN_SLOTS] = { 0 };
	uint64_t retry = 0;

	(void)state;
	assert_int_equal(win_take(ring, t0, sub, 10, 11, &retry), -EAGAIN);
	assert_int_equal(retry, UINT64_MAX);
	assert_int_equal(win_sum(ring, t0, sub), 0);
	assert_int_equal(win_take(ring, t0, sub, 10, 10, &retry), 0);
}

/* Takes of n units count n: 4 + 4 go in, 4 more would pass 10, 2 fit. */
static void
test_win_counts_n_units_per_take(void **state)
{
	const uint64_t sub = win_sub_ns(SEC), t0 = 1000 * SEC, lim = 10;
	_Atomic uint64_t ring[SEG_WIN_SLOTS] = { 0 };
	uint64_t retry;

	(void)state;
	assert_int_equal(win_take(ring, t0, sub, lim, 4, &retry), 0);
	assert_int_equal(win_take(ring, t0 + 5 * sub, sub, lim, 4, &retry), 0);
	assert_int_equal(win_take(ring, t0 + 9 * sub, sub, lim, 4, &retry),
	    -EAGAIN);
	/* 4 must leave; the first 4 leave when t0's sub-window does. */
	assert_int_equal(retry, (t0 / sub + SEG_WIN_SLOTS) * sub -
	    (t0 + 9 * sub));
	assert_int_equal(win_take(ring, t0 + 9 * sub, sub, lim, 2, &retry), 0);
	assert_int_equal(win_sum(ring, t0 + 9 * sub, sub), lim);
}

/*
 * Under random load, whenever a take is refused, a take at now + retry
 * succeeds: the hint is never too short.  And it is the earliest: one ns
 * before, win_retry still says to wait.
 */
static void
test_win_retry_hint_is_enough_and_earliest(void **state)
{
	const uint64_t sub = win_sub_ns(SEC), lim = 20;
	_Atomic uint64_t ring[SEG_WIN_SLOTS] = { 0 };
	uint64_t seed = 1, now = 1000 * SEC, retry, n, refused = 0;

	(void)state;
	for (int i = 0; i < 20000; i++) {
		now += tb_rnd(&seed) % (SEC / lim);
		n = 1 + tb_rnd(&seed) % 3;
		if (win_take(ring, now, sub, lim, n, &retry) == 0)
			continue;
		refused++;
		assert_true(retry > 0 && retry <= SEG_WIN_SLOTS * sub);
		assert_int_equal(win_retry(ring, now, sub, lim, n), retry);
		assert_true(win_retry(ring, now + retry - 1, sub, lim, n) > 0);
		now += retry;
		assert_int_equal(win_take(ring, now, sub, lim, n, &retry), 0);
	}
	assert_true(refused > 1000);	/* the load did reach the limit */
}

struct adm {
	uint64_t	t;		/* admitted at, ns */
	uint64_t	n;		/* units */
};

/*
 * Random arrivals of 1..3 units over 300 periods, at times busy (about
 * three times what the limit allows) and at times idle.  Over the
 * admitted takes, every window [t - period, t] holds at most the limit.
 */
static void
test_win_never_more_than_limit_in_any_period(void **state)
{
	const uint64_t period = SEC, sub = win_sub_ns(period), lim = 20;
	const uint64_t t0 = 1000 * SEC, end = t0 + 300 * period;
	_Atomic uint64_t ring[SEG_WIN_SLOTS] = { 0 };
	uint64_t seed = 99, now = t0, retry, n, in = 0, max = 0;
	struct adm *a;
	size_t na = 0, lo = 0;

	(void)state;
	a = calloc(300 * lim + 1, sizeof(*a));
	assert_non_null(a);
	for (;;) {
		if (tb_rnd(&seed) % 200 == 0)
			now += tb_rnd(&seed) % (2 * period);	/* idle */
		else
			now += tb_rnd(&seed) % (period / lim);
		if (now > end)
			break;
		n = 1 + tb_rnd(&seed) % 3;
		if (win_take(ring, now, sub, lim, n, &retry) != 0)
			continue;
		assert_true(na < 300 * lim + 1);
		a[na++] = (struct adm){ now, n };
	}
	/* Windows ending at each admission: drop those before t - period. */
	for (size_t hi = 0; hi < na; hi++) {
		in += a[hi].n;
		while (a[lo].t < a[hi].t - period)
			in -= a[lo++].n;
		assert_true(in <= lim);
		if (in > max)
			max = in;
	}
	print_message("%zu takes admitted; most in one period: %llu\n", na,
	    (unsigned long long)max);
	assert_int_equal(max, lim);	/* and the load did reach it */
	free(a);
}

/*
 * Under saturating demand (1 unit a take, about eight times the limit)
 * the ring under-admits by at most one sub-window: whenever a take is
 * refused at t in sub-window e, the sub-windows e - 63 .. e (at most a
 * period and one sub-window) did admit the full limit.  Over the whole
 * run, the mean per period is at least lim * (1 - 1/63) - lim / 63.
 *
 * Not per single period: admissions that bunch in one sub-window (say a
 * burst at the start) come back in bunches every 64 sub-windows, and a
 * period of 63 can fall between two of them.  That is the same bound,
 * counted in time rather than in units.
 */
static void
test_win_under_admits_by_at_most_one_sub_window(void **state)
{
	const uint64_t period = SEC, sub = win_sub_ns(period), lim = 20;
	const uint64_t t0 = 1000 * SEC + 12345, np = 100;
	const uint64_t end = t0 + np * period;
	_Atomic uint64_t ring[SEG_WIN_SLOTS] = { 0 };
	uint64_t seed = 5, now = t0, retry, e, total = 0, *a;
	size_t na = 0, lo = 0;

	(void)state;
	a = calloc(np * lim * 2, sizeof(*a));
	assert_non_null(a);
	for (;;) {
		now += tb_rnd(&seed) % (period / lim / 4);
		if (now >= end)
			break;
		if (win_take(ring, now, sub, lim, 1, &retry) == 0) {
			assert_true(na < np * lim * 2);
			a[na++] = now;
			continue;
		}
		/* Admitted since sub-window e - 63 began: the full limit. */
		e = now / sub;
		while (lo < na && a[lo] < (e - (SEG_WIN_SLOTS - 1)) * sub)
			lo++;
		assert_int_equal(na - lo, lim);
	}
	total = na;
	print_message("%llu admitted in %llu periods of %llu\n",
	    (unsigned long long)total, (unsigned long long)np,
	    (unsigned long long)lim);
	/* total >= np * (lim * (1 - 1/63) - lim / 63), times 63 */
	assert_true(total * 63 >= np * lim * 61);
	free(a);
}

/* win_undo gives back what a take added: the units fit again. */
static void
test_win_undo_takes_back(void **state)
{
	const uint64_t sub = win_sub_ns(SEC), t0 = 1000 * SEC, lim = 10;
	_Atomic uint64_t ring[SEG_WIN_SLOTS] = { 0 };
	uint64_t retry;

	(void)state;
	assert_int_equal(win_take(ring, t0, sub, lim, 7, &retry), 0);
	assert_int_equal(win_take(ring, t0 + sub, sub, lim, 3, &retry), 0);
	assert_int_equal(win_take(ring, t0 + 2 * sub, sub, lim, 3, &retry),
	    -EAGAIN);
	win_undo(ring, t0 + sub, sub, 3);
	assert_int_equal(win_sum(ring, t0 + 2 * sub, sub), 7);
	assert_int_equal(win_take(ring, t0 + 2 * sub, sub, lim, 3, &retry), 0);
}

/*
 * A slot scribbled on (by a buggy or dying client: the state object is
 * untrusted) with a count below what an undo takes back is left alone,
 * not underflowed into its epoch bits.
 */
static void
test_win_undo_ignores_scribbled_small_count(void **state)
{
	const uint64_t sub = win_sub_ns(SEC), t0 = 1000 * SEC;
	const uint64_t e = t0 / sub, garbage = slot_word(e, 2);
	_Atomic uint64_t ring[SEG_WIN_SLOTS] = { 0 };

	(void)state;
	atomic_store(&ring[e % SEG_WIN_SLOTS], garbage);
	win_undo(ring, t0, sub, 5);
	assert_int_equal(atomic_load(&ring[e % SEG_WIN_SLOTS]), garbage);
	atomic_store(&ring[e % SEG_WIN_SLOTS], slot_word(e, 0));
	win_undo(ring, t0, sub, 1);
	assert_int_equal(atomic_load(&ring[e % SEG_WIN_SLOTS]),
	    slot_word(e, 0));
}

/*
 * An undo that comes after its sub-window's slot was reused by a later
 * one leaves the later count alone: the undone units expired anyway.
 */
static void
test_win_undo_after_slot_reuse_does_nothing(void **state)
{
	const uint64_t sub = win_sub_ns(SEC), t0 = 1000 * SEC, lim = 10;
	const uint64_t t1 = t0 + SEG_WIN_SLOTS * sub;
	_Atomic uint64_t ring[SEG_WIN_SLOTS] = { 0 };
	uint64_t retry, w;

	(void)state;
	assert_int_equal(win_take(ring, t0, sub, lim, 3, &retry), 0);
	assert_int_equal(win_take(ring, t1, sub, lim, 4, &retry), 0);
	w = atomic_load(&ring[(t0 / sub) % SEG_WIN_SLOTS]);
	assert_int_equal(w, slot_word(t1 / sub, 4));
	win_undo(ring, t0, sub, 3);
	assert_int_equal(atomic_load(&ring[(t0 / sub) % SEG_WIN_SLOTS]), w);
	assert_int_equal(win_sum(ring, t1, sub), 4);
}

/*
 * The epoch in a ring word has 28 bits and wraps every 2^28 sub-windows
 * (49 days for a 1 s window).  Units taken just before a wrap still count
 * just after it, and expire a full ring later, not at the wrap.
 */
static void
test_win_counts_across_epoch_wrap(void **state)
{
	const uint64_t sub = win_sub_ns(SEC), lim = 10;
	const uint64_t e0 = 5 * EPOCHS - 3;	/* 3 before the 5th wrap */
	const uint64_t ta = e0 * sub + sub / 2, tb = (e0 + 5) * sub;
	const uint64_t tc = (e0 + 6) * sub, tx = (e0 + SEG_WIN_SLOTS) * sub;
	_Atomic uint64_t ring[SEG_WIN_SLOTS] = { 0 };
	uint64_t retry;

	(void)state;
	assert_int_equal(win_take(ring, ta, sub, lim, 5, &retry), 0);
	assert_int_equal(win_take(ring, tb, sub, lim, 5, &retry), 0);
	assert_int_equal(win_sum(ring, tc, sub), 10);
	assert_int_equal(win_take(ring, tc, sub, lim, 1, &retry), -EAGAIN);
	assert_int_equal(retry, tx - tc);
	assert_int_equal(win_take(ring, tx - 1, sub, lim, 1, &retry), -EAGAIN);
	assert_int_equal(fill(ring, tx, sub, lim), 5);
}

/*
 * A ring fresh from the broker is all zeros: epoch 0.  A clock whose
 * sub-window count is in the second half of the epoch space (for a 1 s
 * window: CLOCK_MONOTONIC between 24.7 and 49.3 days, mod 49.3) must
 * limit like any other: exactly lim, then refused.
 */
static void
test_win_fresh_ring_limits_at_any_clock(void **state)
{
	const uint64_t sub = win_sub_ns(SEC), lim = 10;
	const uint64_t now = (EPOCHS / 2 + 1000) * sub + 7;
	_Atomic uint64_t ring[SEG_WIN_SLOTS] = { 0 };

	(void)state;
	assert_int_equal(fill(ring, now, sub, lim), lim);
	assert_int_equal(win_sum(ring, now, sub), lim);
}

/*
 * A ring left idle for more than 2^27 sub-windows (for a 1 s window,
 * 25 days) holds words whose epochs, modulo 2^28, look slightly ahead:
 * taking again must still count and limit.
 */
static void
test_win_limits_after_long_idle(void **state)
{
	const uint64_t sub = win_sub_ns(SEC), lim = 100;
	const uint64_t t0 = 1000 * sub;
	const uint64_t t1 = t0 + (EPOCHS / 2 + 500) * sub;
	_Atomic uint64_t ring[SEG_WIN_SLOTS] = { 0 };
	uint64_t retry;

	(void)state;
	/* A unit in each of 64 sub-windows: every word has its own epoch. */
	for (uint64_t i = 0; i < SEG_WIN_SLOTS; i++)
		assert_int_equal(win_take(ring, t0 + i * sub, sub, lim, 1,
		    &retry), 0);
	assert_int_equal(fill(ring, t1, sub, lim), lim);
	assert_int_equal(win_sum(ring, t1, sub), lim);
}

struct stress {
	_Atomic uint64_t	*ring;
	pthread_barrier_t	*start;
	uint64_t		now_ns, sub_ns, limit;
	uint64_t		taken;		/* units this thread got */
};

static void *
stress_run(void *arg)
{
	struct stress *s = arg;
	uint64_t retry;

	pthread_barrier_wait(s->start);
	for (;;) {
		if (win_take(s->ring, s->now_ns, s->sub_ns, s->limit, 1,
		    &retry) == 0) {
			s->taken++;
			continue;
		}
		/*
		 * Two takes racing at the edge may both undo (the window errs
		 * to refusing), so a refusal alone does not mean full.  Stop
		 * once the sum says full: our own add is undone by now, so any
		 * excess it shows is the other thread's, which checks again.
		 */
		if (win_sum(s->ring, s->now_ns, s->sub_ns) >= s->limit)
			return NULL;
	}
}

/* Two threads race at a fixed virtual now: exactly lim go in, never more. */
static void
test_win_two_threads_admit_exactly_limit(void **state)
{
	const uint64_t lim = 100000, sub = win_sub_ns(SEC), now = 1000 * SEC;
	_Atomic uint64_t ring[SEG_WIN_SLOTS] = { 0 };
	pthread_barrier_t start;
	struct stress s[2];
	pthread_t th[2];

	(void)state;
	assert_int_equal(pthread_barrier_init(&start, NULL, 2), 0);
	for (int i = 0; i < 2; i++) {
		s[i] = (struct stress){ ring, &start, now, sub, lim, 0 };
		assert_int_equal(pthread_create(&th[i], NULL, stress_run,
		    &s[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	pthread_barrier_destroy(&start);
	print_message("thread 0 took %llu, thread 1 took %llu\n",
	    (unsigned long long)s[0].taken, (unsigned long long)s[1].taken);
	assert_int_equal(s[0].taken + s[1].taken, lim);
	assert_int_equal(win_sum(ring, now, sub), lim);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_win_sub_ns_is_period_over_63_rounded_up),
		cmocka_unit_test(test_win_admits_limit_then_refuses),
		cmocka_unit_test(test_win_refuses_more_than_limit_at_once),
		cmocka_unit_test(test_win_counts_n_units_per_take),
		cmocka_unit_test(test_win_retry_hint_is_enough_and_earliest),
		cmocka_unit_test(test_win_never_more_than_limit_in_any_period),
		cmocka_unit_test(
		    test_win_under_admits_by_at_most_one_sub_window),
		cmocka_unit_test(test_win_undo_takes_back),
		cmocka_unit_test(test_win_undo_ignores_scribbled_small_count),
		cmocka_unit_test(test_win_undo_after_slot_reuse_does_nothing),
		cmocka_unit_test(test_win_counts_across_epoch_wrap),
		cmocka_unit_test(test_win_fresh_ring_limits_at_any_clock),
		cmocka_unit_test(test_win_limits_after_long_idle),
		cmocka_unit_test(test_win_two_threads_admit_exactly_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
