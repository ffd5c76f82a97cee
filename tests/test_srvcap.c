/*
 * test_srvcap.c: the server's `remaining until reset' cap word, and the
 * debt a settle charges to rate and window limits.
 */
#include <errno.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "gcra.h"
#include "seg.h"
#include "srvcap.h"
#include "window.h"

#define MS	UINT64_C(1000000)
#define S	UINT64_C(1000000000)
#define T0	(UINT64_C(86400) * S)	/* a day of uptime */

static void
test_make_rounds_up_and_saturates(void **state)
{
	uint64_t w;

	(void)state;
	w = cap_make(5, T0 + 1);
	assert_int_equal(cap_left(w), 5);
	/* Never ends before the server said. */
	assert_true(cap_until_ns(w) >= T0 + 1);
	assert_true(cap_until_ns(w) < T0 + 1 + (UINT64_C(1) << CAP_Q_SHIFT));
	/* An exact quantum stays exact. */
	w = cap_make(1, UINT64_C(7) << CAP_Q_SHIFT);
	assert_int_equal(cap_until_ns(w), UINT64_C(7) << CAP_Q_SHIFT);
	/* A huge count caps a little below the server, never above. */
	w = cap_make(UINT64_C(30000000000), T0);
	assert_int_equal(cap_left(w), CAP_LEFT_MAX);
	/* 0 left is a live cap, not "no cap". */
	w = cap_make(0, T0 + S);
	assert_true(w != 0);
	assert_true(cap_live(w, T0));
	assert_false(cap_live(w, T0 + 2 * S));
	assert_false(cap_live(0, 0));
}

static void
test_take_counts_down_then_refuses(void **state)
{
	_Atomic uint64_t cap = 0;
	uint64_t retry = 0;

	(void)state;
	/* No cap: nothing to count, nothing to undo. */
	assert_int_equal(cap_take(&cap, T0, 1000, &retry), 0);
	cap_post(&cap, T0, 2, 3 * S);
	assert_int_equal(cap_take(&cap, T0, 1, &retry), 1);
	assert_int_equal(cap_take(&cap, T0 + MS, 1, &retry), 1);
	assert_int_equal(cap_take(&cap, T0 + 2 * MS, 1, &retry), -EAGAIN);
	/* Told to come back when the cap ends. */
	assert_true(retry >= 3 * S - 2 * MS && retry <= 3 * S);
	/* An undo gives one back. */
	cap_untake(&cap, T0 + 3 * MS, 1);
	assert_int_equal(cap_take(&cap, T0 + 4 * MS, 1, &retry), 1);
	/* A cost larger than what is left is refused whole. */
	cap_untake(&cap, T0 + 5 * MS, 1);
	assert_int_equal(cap_take(&cap, T0 + 6 * MS, 2, &retry), -EAGAIN);
	assert_int_equal(cap_take(&cap, T0 + 6 * MS, 1, &retry), 1);
	/* After the reset the cap is gone: the local model rules. */
	assert_int_equal(cap_take(&cap, T0 + 4 * S, 50, &retry), 0);
	/* An undo after the end adds nothing back. */
	cap_untake(&cap, T0 + 4 * S, 1);
	assert_false(cap_live(atomic_load(&cap), T0 + 4 * S));
}

static void
test_charge_never_goes_below_zero(void **state)
{
	_Atomic uint64_t cap = 0;
	uint64_t retry;

	(void)state;
	cap_post(&cap, T0, 10, S);
	cap_charge(&cap, T0, 4);
	assert_int_equal(cap_left(atomic_load(&cap)), 6);
	cap_charge(&cap, T0, 100);
	assert_int_equal(cap_left(atomic_load(&cap)), 0);
	assert_int_equal(cap_take(&cap, T0, 1, &retry), -EAGAIN);
	/* Undo saturates at the top of the field, not into until's bits. */
	cap = cap_make(CAP_LEFT_MAX - 1, T0 + S);
	cap_untake(&cap, T0, 10);
	assert_int_equal(cap_left(atomic_load(&cap)), CAP_LEFT_MAX);
	assert_true(cap_until_ns(atomic_load(&cap)) >= T0 + S);
}

/*
 * One budget seen twice (resets close together): the lower count wins
 * and the cap ends when it was to.  A reset well after the cap in place
 * is the server's next budget: it replaces the cap.
 */
static void
test_post_merges_one_budget_replaces_next(void **state)
{
	_Atomic uint64_t cap = 0;
	uint64_t first;

	(void)state;
	cap_post(&cap, T0, 5, 10 * S);
	first = cap_until_ns(atomic_load(&cap));
	/* A late response from before: more left, same reset: ignored. */
	cap_post(&cap, T0 + MS, 8, 10 * S);
	assert_int_equal(cap_left(atomic_load(&cap)), 5);
	/* A fresher one with fewer left: taken, the end kept. */
	cap_post(&cap, T0 + 2 * MS, 3, 10 * S + 500 * MS);
	assert_int_equal(cap_left(atomic_load(&cap)), 3);
	assert_int_equal(cap_until_ns(atomic_load(&cap)), first);
	/* The next window: a reset 60 s on replaces it, count and all. */
	cap_post(&cap, T0 + 3 * MS, 100, 70 * S);
	assert_int_equal(cap_left(atomic_load(&cap)), 100);
	assert_true(cap_until_ns(atomic_load(&cap)) >= T0 + 70 * S);
	/* Once a cap ended, any observation starts a new one. */
	cap_post(&cap, T0 + 80 * S, 7, S);
	assert_int_equal(cap_left(atomic_load(&cap)), 7);
	/* A reset of 0 or one that overflows the clock posts nothing. */
	cap_post(&cap, T0 + 80 * S, 1, 0);
	cap_post(&cap, T0 + 80 * S, 1, UINT64_MAX);
	assert_int_equal(cap_left(atomic_load(&cap)), 7);
}

/* An under-estimate settled: a debt of at most what the caller bounds. */
/*
 * A refilling bucket (issue 13, 1): 20 of a bucket, 0 left, full in 6 s
 * is one back every 300 ms; the local GCRA (here 20/6s too) then holds
 * none and fits the next unit in 300 ms, not in 6 s.  R left holds R.
 */
static void
test_bucket_model(void **state)
{
	const uint64_t now = 1000 * S, unit = 300 * MS, tau = 6 * S;
	uint64_t tat, next;
	_Atomic uint64_t w = 0;

	(void)state;
	assert_int_equal(srv_refill_ns(20, 0, 6 * S), 300 * MS);
	assert_int_equal(srv_refill_ns(20, 15, 6 * S), 1200 * MS);
	assert_int_equal(srv_refill_ns(20, 20, 6 * S), 0);
	assert_int_equal(srv_refill_ns(20, 25, 6 * S), 0);
	assert_int_equal(srv_refill_ns(0, 0, 6 * S), 0);
	assert_int_equal(srv_refill_ns(3, 0, 10), 4);	/* rounded up */
	tat = srv_bucket_tat(now, tau, unit, 0, 300 * MS);
	assert_int_equal(tat, now + tau);
	assert_int_equal(gcra_wait_ns(tat, now, unit, tau, &next), unit);
	/* A server slower than the config: its refill decides. */
	tat = srv_bucket_tat(now, tau, unit, 0, 2 * S);
	assert_int_equal(gcra_wait_ns(tat, now, unit, tau, &next), 2 * S);
	/* R = 5 left: five fit, the sixth waits a unit. */
	tat = srv_bucket_tat(now, tau, unit, 5, 1200 * MS);
	assert_int_equal(gcra_available(tat, now, unit, tau), 5);
	/* R fills the bucket: no bound. */
	assert_int_equal(srv_bucket_tat(now, tau, unit, 20, 0), 0);
	/* gcra_raise only moves forward. */
	gcra_raise(&w, 50);
	gcra_raise(&w, 40);
	assert_int_equal(atomic_load(&w), 50);
}

static void
test_gcra_charge_is_bounded_debt(void **state)
{
	uint64_t cost1 = gcra_cost_ns(1, 60 * S, 60), tau = 10 * cost1;
	_Atomic uint64_t tat = 0;
	uint64_t retry;

	(void)state;
	/* A full bucket of 10 charged 4: 6 left. */
	gcra_charge(&tat, T0, 4 * cost1, tau + 60 * S);
	assert_int_equal(gcra_available(atomic_load(&tat), T0, cost1, tau), 6);
	/* A charge far beyond: debt stops at now + the bound. */
	gcra_charge(&tat, T0, UINT64_MAX, tau + 60 * S);
	assert_int_equal(atomic_load(&tat), T0 + tau + 60 * S);
	assert_int_equal(gcra_take(&tat, T0, cost1, tau, &retry), -EAGAIN);
	assert_int_equal(retry, 60 * S + cost1);
	/* Never moves a TAT back. */
	gcra_charge(&tat, T0, cost1, 0);
	assert_int_equal(atomic_load(&tat), T0 + tau + 60 * S);
}

static void
test_win_charge_counts_past_the_limit(void **state)
{
	_Atomic uint64_t ring[SEG_WIN_SLOTS] = { 0 };
	uint64_t sub = win_sub_ns(60 * S), retry;

	(void)state;
	assert_int_equal(win_take(ring, T0, sub, 100, 90, &retry), 0);
	win_charge(ring, T0 + MS, sub, 30);
	assert_int_equal(win_sum(ring, T0 + MS, sub), 120);
	/* Over the limit: refused until enough expires. */
	assert_int_equal(win_take(ring, T0 + 2 * MS, sub, 100, 1, &retry),
	    -EAGAIN);
	assert_true(retry > 0);
	/* Later sub-windows count the charge where it landed. */
	win_charge(ring, T0 + 10 * S, sub, 5);
	assert_int_equal(win_sum(ring, T0 + 10 * S, sub), 125);
	/* A window later, all of it expired. */
	assert_int_equal(win_sum(ring, T0 + 80 * S, sub), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_make_rounds_up_and_saturates),
		cmocka_unit_test(test_take_counts_down_then_refuses),
		cmocka_unit_test(test_charge_never_goes_below_zero),
		cmocka_unit_test(test_post_merges_one_budget_replaces_next),
		cmocka_unit_test(test_bucket_model),
		cmocka_unit_test(test_gcra_charge_is_bounded_debt),
		cmocka_unit_test(test_win_charge_counts_past_the_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
