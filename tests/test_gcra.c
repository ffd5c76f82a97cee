/* test_gcra.c: GCRA rate limits on a virtual clock, one behaviour a test. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "gcra.h"
#include "helpers.h"

#define SEC	UINT64_C(1000000000)
#define MIN	(60 * SEC)
#define DAY	(86400 * SEC)

/* Costs round up: rounding down would let a limit run slightly fast. */
static void
test_gcra_cost_rounds_up(void **state)
{
	(void)state;
	/* 60 s / 7 = 8571428571.43 ns */
	assert_int_equal(gcra_cost_ns(1, MIN, 7), UINT64_C(8571428572));
	assert_int_equal(gcra_cost_ns(3, 10, 4), 8);		/* 7.5 */
	/* Exact quotients are not rounded. */
	assert_int_equal(gcra_cost_ns(7, MIN, 7), MIN);
	assert_int_equal(gcra_cost_ns(1, 165 * SEC, 1), 165 * SEC);
	assert_int_equal(gcra_cost_ns(0, MIN, 7), 0);
}

/*
 * Token limits: 10^12 tokens a day.  n * period_ns is 8.64e25 for a day's
 * worth, far past 64 bits; the 128-bit product must give it exactly.
 */
static void
test_gcra_cost_does_not_overflow_for_big_token_counts(void **state)
{
	const uint64_t n = UINT64_C(1000000000000);

	(void)state;
	assert_int_equal(gcra_cost_ns(n, DAY, n), DAY);
	assert_int_equal(gcra_cost_ns(n / 2, DAY, n), DAY / 2);
	assert_int_equal(gcra_cost_ns(1, DAY, n), 87);		/* 86.4 ns */
	assert_int_equal(gcra_cost_ns(UINT64_C(123456789), DAY, n),
	    UINT64_C(10666666570));		/* 10666666569.6 ns */
	/* Too big for 64 bits: saturates rather than wrapping small. */
	assert_int_equal(gcra_cost_ns(UINT64_MAX, DAY, n), UINT64_MAX);
	/* count 0 can never be met. */
	assert_int_equal(gcra_cost_ns(1, DAY, 0), UINT64_MAX);
}

/*
 * tau holds burst units taken at once and burst units taken one by one
 * (each rounded up), and no more: not one more unit one by one, and less
 * than burst ns of slack over the exact cost of burst units.
 */
static void
test_gcra_tau_slack_fits_burst_and_no_more(void **state)
{
	static const struct {
		uint64_t burst, period_ns, count;
	} r[] = {
		{ 7, MIN, 7 },			/* 7/min: 0.43 ns short each */
		{ 4, 165 * SEC, 1 },		/* exact: no slack needed */
		{ 3, MIN, 7 },
		{ 1, SEC, 3 },
		{ 100000, MIN, 1000000 },	/* 60 us a token, burst 6 s */
		{ 1000000, DAY, UINT64_C(1000000000000) },	/* 86.4 ns */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
		uint64_t tau = gcra_tau_ns(r[i].burst, r[i].period_ns,
		    r[i].count);
		uint64_t all = gcra_cost_ns(r[i].burst, r[i].period_ns,
		    r[i].count);
		uint64_t one = gcra_cost_ns(1, r[i].period_ns, r[i].count);

		print_message("burst %llu, %llu per %llu ns: tau %llu\n",
		    (unsigned long long)r[i].burst,
		    (unsigned long long)r[i].count,
		    (unsigned long long)r[i].period_ns,
		    (unsigned long long)tau);
		assert_true(tau >= all);
		assert_true(tau >= r[i].burst * one);
		assert_true(tau < (r[i].burst + 1) * one);
		assert_true(tau - all < r[i].burst);
	}
	assert_int_equal(gcra_tau_ns(0, MIN, 7), 0);
}

/*
 * DESIGN 2's worked example: a bucket of 4, one back every 165 s.  Four
 * pass at t0; the fifth is held exactly 165 s, not a nanosecond less (the
 * server would still see an empty bucket) and not more.
 */
static void
test_gcra_provider_example_holds_fifth_for_165s(void **state)
{
	const uint64_t c = gcra_cost_ns(1, 165 * SEC, 1);
	const uint64_t tau = gcra_tau_ns(4, 165 * SEC, 1);
	const uint64_t t0 = 7 * 165 * SEC;
	_Atomic uint64_t tat = 0;
	uint64_t retry = 0, unused;

	(void)state;
	for (int i = 0; i < 4; i++)
		assert_int_equal(gcra_take(&tat, t0, c, tau, &retry), 0);
	assert_int_equal(gcra_take(&tat, t0, c, tau, &retry), -EAGAIN);
	assert_int_equal(retry, 165 * SEC);
	assert_int_equal(gcra_take(&tat, t0 + retry - 1, c, tau, &unused),
	    -EAGAIN);
	assert_int_equal(gcra_take(&tat, t0 + retry, c, tau, &unused), 0);
}

/*
 * 7/min: one unit costs 8571428572 ns, 7 of them 4 ns more than a minute.
 * Without tau's slack the seventh would be refused.  With it, exactly 7.
 */
static void
test_gcra_seven_per_minute_one_by_one_admits_seven(void **state)
{
	const uint64_t c = gcra_cost_ns(1, MIN, 7);
	const uint64_t tau = gcra_tau_ns(7, MIN, 7);
	const uint64_t t0 = 1000 * SEC;
	_Atomic uint64_t tat = 0;
	uint64_t retry;
	int n = 0;

	(void)state;
	while (gcra_take(&tat, t0, c, tau, &retry) == 0)
		n++;
	assert_int_equal(n, 7);
}

/*
 * The same from full for fine-grained units, whose one-unit cost (60 us)
 * is below the burst in ns: the bucket must not admit more than its
 * capacity just because the slack is larger than a unit.
 */
static void
test_gcra_fine_units_one_by_one_admit_exactly_burst(void **state)
{
	const uint64_t burst = 100000, count = 1000000;
	const uint64_t c = gcra_cost_ns(1, MIN, count);
	const uint64_t tau = gcra_tau_ns(burst, MIN, count);
	const uint64_t t0 = 1000 * SEC;
	_Atomic uint64_t tat = 0;
	uint64_t retry, n = 0;

	(void)state;
	while (gcra_take(&tat, t0, c, tau, &retry) == 0 && n <= 2 * burst)
		n++;
	assert_int_equal(n, burst);
}

/*
 * Takes of 1..maxn units at random times, demand about ten times supply,
 * for 100 periods.  After every admission, the units admitted so far are
 * at most burst + count * elapsed / period; at the end they are at least
 * 99% of it.  Returns nothing: it asserts.
 */
static void
run_long(uint64_t period_ns, uint64_t count, uint64_t burst, uint64_t maxn,
    uint64_t seed)
{
	const uint64_t tau = gcra_tau_ns(burst, period_ns, count);
	const uint64_t t0 = 12345 * SEC, end = t0 + 100 * period_ns;
	/* Mean gap a tenth of the time one unit (of mean size) takes. */
	const uint64_t gap = period_ns / count * (maxn + 1) / 2 / 10 * 2;
	_Atomic uint64_t tat = 0;
	uint64_t now = t0, units = 0, retry, n;
	unsigned __int128 lhs, rhs;

	for (;;) {
		now += tb_rnd(&seed) % (gap + 1);
		if (now > end)
			break;
		n = 1 + tb_rnd(&seed) % maxn;
		if (gcra_take(&tat, now, gcra_cost_ns(n, period_ns, count),
		    tau, &retry) != 0)
			continue;
		units += n;
		/* units <= burst + count * (now - t0) / period, no division */
		lhs = (unsigned __int128)units * period_ns;
		rhs = (unsigned __int128)burst * period_ns +
		    (unsigned __int128)count * (now - t0);
		assert_true(lhs <= rhs);
	}
	/* units >= 0.99 * (burst + count * 100) */
	assert_true(units * 100 >= 99 * (burst + count * 100));
	print_message("%llu units admitted of %llu allowed\n",
	    (unsigned long long)units,
	    (unsigned long long)(burst + count * 100));
}

/* A ragged rate (7/min), one unit a take: costs round, the rate holds. */
static void
test_gcra_long_run_rate_holds_one_unit_takes(void **state)
{
	(void)state;
	run_long(MIN, 7, 3, 1, 42);
}

/*
 * Takes of 1..4 units on a rate whose cost is exact (10 ms a unit): the
 * bound holds whatever the sizes.  (With a ragged rate and mixed sizes
 * rounding can let a few extra units through: see gcra_tau_ns.)
 */
static void
test_gcra_long_run_rate_holds_mixed_sizes(void **state)
{
	(void)state;
	run_long(MIN, 6000, 10, 4, 7);
}

/*
 * Reservations within max_wait are granted with waits one cost apart, in
 * the order made (that is the queue); the first beyond max_wait is
 * refused with the wait it would have needed.
 */
static void
test_gcra_reserve_grants_in_order_until_max_wait(void **state)
{
	const uint64_t c = gcra_cost_ns(1, SEC, 1);
	const uint64_t tau = gcra_tau_ns(1, SEC, 1);
	const uint64_t t0 = 100 * SEC, max_wait = 5 * SEC / 2;
	_Atomic uint64_t tat = 0;
	uint64_t wait;

	(void)state;
	for (uint64_t i = 0; i < 3; i++) {
		assert_int_equal(gcra_reserve(&tat, t0, c, tau, max_wait,
		    &wait), 0);
		assert_int_equal(wait, i * SEC);
	}
	assert_int_equal(gcra_reserve(&tat, t0, c, tau, max_wait, &wait),
	    -EAGAIN);
	assert_int_equal(wait, 3 * SEC);
}

/* A refused reservation moves nothing: later ones see the same queue. */
static void
test_gcra_reserve_refused_leaves_tat(void **state)
{
	const uint64_t c = gcra_cost_ns(1, SEC, 1);
	const uint64_t tau = gcra_tau_ns(1, SEC, 1);
	const uint64_t t0 = 100 * SEC;
	_Atomic uint64_t tat = 0;
	uint64_t wait, before;

	(void)state;
	assert_int_equal(gcra_reserve(&tat, t0, c, tau, 0, &wait), 0);
	before = atomic_load(&tat);
	assert_int_equal(gcra_reserve(&tat, t0, c, tau, SEC / 2, &wait),
	    -EAGAIN);
	assert_int_equal(atomic_load(&tat), before);
	assert_int_equal(gcra_reserve(&tat, t0, c, tau, SEC, &wait), 0);
	assert_int_equal(wait, SEC);
}

/*
 * An unused reservation goes back only while it is the last: one that
 * others stacked on would hand its slot to the next taker, whose slot a
 * stacked one already has (burst 1: two requests in one second).
 */
static void
test_gcra_unreserve_only_the_last(void **state)
{
	const uint64_t c = gcra_cost_ns(1, SEC, 1);
	const uint64_t tau = gcra_tau_ns(1, SEC, 1);
	const uint64_t t0 = 100 * SEC;
	_Atomic uint64_t tat = 0;
	uint64_t wait, a = 0, b = 0, d = 0;

	(void)state;
	assert_int_equal(gcra_reserve(&tat, t0, c, tau, 0, &wait), 0);
	assert_int_equal(gcra_reserve_at(&tat, t0, c, tau, 5 * SEC, &wait,
	    &a), 0);
	assert_int_equal(gcra_reserve_at(&tat, t0, c, tau, 5 * SEC, &wait,
	    &b), 0);
	assert_int_equal(wait, 2 * SEC);
	/* a has b stacked on it: spent, the TAT stays. */
	assert_int_equal(gcra_unreserve(&tat, a, c), 0);
	assert_int_equal(atomic_load(&tat), b);
	/* b is the last: back, then a is the last: back too. */
	assert_int_equal(gcra_unreserve(&tat, b, c), 1);
	assert_int_equal(gcra_unreserve(&tat, b, c), 0);	/* once */
	assert_int_equal(gcra_unreserve(&tat, a, c), 1);
	assert_int_equal(gcra_reserve_at(&tat, t0, c, tau, 5 * SEC, &wait,
	    &d), 0);
	assert_int_equal(wait, SEC);
	assert_int_equal(d, a);
}

/* A refund after a take leaves the bucket as it was (client's untake). */
static void
test_gcra_refund_undoes_take_exactly(void **state)
{
	const uint64_t c = gcra_cost_ns(1, MIN, 7);
	const uint64_t tau = gcra_tau_ns(7, MIN, 7);
	const uint64_t t0 = 1000 * SEC;
	_Atomic uint64_t tat = 0;
	uint64_t retry, before;

	(void)state;
	assert_int_equal(gcra_take(&tat, t0, 2 * c, tau, &retry), 0);
	before = atomic_load(&tat);
	assert_int_equal(gcra_take(&tat, t0 + SEC, 3 * c, tau, &retry), 0);
	gcra_refund(&tat, 3 * c, 3 * c, t0 + SEC, t0 + SEC);
	assert_int_equal(atomic_load(&tat), before);
	assert_int_equal(gcra_available(atomic_load(&tat), t0 + SEC, c, tau),
	    5);
}

/*
 * A refund into a bucket that is already full gives nothing extra: a
 * doubled refund, or a late one (tg_settle after the bucket refilled),
 * must not let more than burst through at once.  7/min burst 7: A takes
 * 7, the bucket refills, B takes 7, A's refund of all 7 comes: B must
 * not take 7 more at that instant.
 */
static void
test_gcra_refund_on_full_bucket_gives_nothing_extra(void **state)
{
	const uint64_t c = gcra_cost_ns(1, MIN, 7);
	const uint64_t tau = gcra_tau_ns(7, MIN, 7);
	const uint64_t t0 = 1000 * SEC, t1 = t0 + 10 * MIN;
	_Atomic uint64_t tat = 0;
	uint64_t retry;
	int n = 0;

	(void)state;
	/* Take one and refund it twice at once: a full bucket, no more. */
	assert_int_equal(gcra_take(&tat, t0, c, tau, &retry), 0);
	gcra_refund(&tat, c, c, t0, t0);
	gcra_refund(&tat, c, c, t0, t0);
	while (gcra_take(&tat, t0, c, tau, &retry) == 0)
		n++;
	assert_int_equal(n, 7);
	/* B empties the refilled bucket; A's late refund is all drained. */
	for (n = 0; gcra_take(&tat, t1, c, tau, &retry) == 0; n++)
		;
	assert_int_equal(n, 7);
	gcra_refund(&tat, 7 * c, 7 * c, t0, t1);
	assert_int_equal(gcra_available(atomic_load(&tat), t1, c, tau), 0);
	assert_int_equal(gcra_take(&tat, t1, c, tau, &retry), -EAGAIN);
}

/*
 * A refund of a charge the clock has partly drained gives back what is
 * still ahead of now, exactly as if the take had charged less: A takes 7
 * at t0; 2 units later B takes 2; A refunds its 7 then.  Had A taken
 * nothing, B's 2 would leave 5 free: so must the refund.
 */
static void
test_gcra_refund_partly_drained_gives_the_rest(void **state)
{
	const uint64_t c = gcra_cost_ns(1, MIN, 7);
	const uint64_t tau = gcra_tau_ns(7, MIN, 7);
	const uint64_t t0 = 1000 * SEC, t1 = t0 + 2 * c;
	_Atomic uint64_t tat = 0;
	uint64_t retry;

	(void)state;
	assert_int_equal(gcra_take(&tat, t0, 7 * c, tau, &retry), 0);
	assert_int_equal(gcra_take(&tat, t1, 2 * c, tau, &retry), 0);
	assert_int_equal(gcra_available(atomic_load(&tat), t1, c, tau), 0);
	gcra_refund(&tat, 7 * c, 7 * c, t0, t1);
	assert_int_equal(atomic_load(&tat), t1 + 2 * c);
	assert_int_equal(gcra_available(atomic_load(&tat), t1, c, tau), 5);
	/* Part of a refund, as tg_settle of a smaller actual: 7 -> 3. */
	atomic_store(&tat, 0);
	assert_int_equal(gcra_take(&tat, t0, 7 * c, tau, &retry), 0);
	gcra_refund(&tat, 7 * c, 4 * c, t0, t0 + c);
	assert_int_equal(atomic_load(&tat), t0 + 3 * c);
}

/*
 * The one GCRA sum: the wait and the new TAT, and GCRA_NEVER where the
 * TAT would not fit 64 bits (a wrapped sum reads as a full bucket).
 */
static void
test_gcra_wait_never_wraps(void **state)
{
	const uint64_t c = gcra_cost_ns(1, SEC, 1);
	const uint64_t tau = gcra_tau_ns(2, SEC, 1);
	const uint64_t t0 = 100 * SEC;
	_Atomic uint64_t tat;
	uint64_t next = 0, wait;

	(void)state;
	assert_int_equal(gcra_wait_ns(0, t0, c, tau, &next), 0);
	assert_int_equal(next, t0 + c);
	assert_int_equal(gcra_wait_ns(t0 + 2 * SEC, t0, c, tau, &next), SEC);
	assert_int_equal(next, t0 + 3 * SEC);
	assert_int_equal(gcra_wait_ns(UINT64_MAX - c + 1, t0, c, tau, &next),
	    GCRA_NEVER);
	assert_int_equal(gcra_wait_ns(0, UINT64_MAX - 10, 11, UINT64_MAX,
	    &next), GCRA_NEVER);
	/* Refused by gcra_reserve however long it may wait; TAT kept. */
	atomic_init(&tat, UINT64_MAX - c + 1);
	assert_int_equal(gcra_reserve(&tat, t0, c, tau, UINT64_MAX, &wait),
	    -EAGAIN);
	assert_int_equal(wait, GCRA_NEVER);
	assert_int_equal(atomic_load(&tat), UINT64_MAX - c + 1);
	/* Never fits: more than tau, or past the end of the clock. */
	assert_false(gcra_never_fits(t0, tau, tau));
	assert_true(gcra_never_fits(t0, tau + 1, tau));
	assert_false(gcra_never_fits(t0, UINT64_MAX - t0, UINT64_MAX));
	assert_true(gcra_never_fits(t0, UINT64_MAX - t0 + 1, UINT64_MAX));
	assert_true(gcra_never_fits(t0, gcra_cost_ns(UINT64_MAX, SEC, 1),
	    gcra_tau_ns(UINT64_MAX, SEC, 1)));
}

/* gcra_available counts whole units: full, after takes, after refill. */
static void
test_gcra_available_counts_whole_units(void **state)
{
	const uint64_t c = gcra_cost_ns(1, MIN, 7);
	const uint64_t tau = gcra_tau_ns(7, MIN, 7);
	const uint64_t t0 = 1000 * SEC;
	_Atomic uint64_t tat = 0;
	uint64_t retry;

	(void)state;
	assert_int_equal(gcra_available(0, t0, c, tau), 7);
	for (int i = 0; i < 3; i++)
		assert_int_equal(gcra_take(&tat, t0, c, tau, &retry), 0);
	assert_int_equal(gcra_available(atomic_load(&tat), t0, c, tau), 4);
	/* One cost later exactly one more has come back, not before. */
	assert_int_equal(gcra_available(atomic_load(&tat), t0 + c - 1, c,
	    tau), 4);
	assert_int_equal(gcra_available(atomic_load(&tat), t0 + c, c, tau),
	    5);
	/* A TAT beyond tau (a reservation queue): nothing. */
	assert_int_equal(gcra_available(t0 + 2 * tau, t0, c, tau), 0);
	assert_int_equal(gcra_available(0, t0, 0, tau), 0);
}

struct stress {
	_Atomic uint64_t	*tat;
	pthread_barrier_t	*start;
	uint64_t		now_ns, cost_ns, tau_ns;
	uint64_t		taken;		/* units this thread got */
};

static void *
stress_run(void *arg)
{
	struct stress *s = arg;
	uint64_t retry;

	pthread_barrier_wait(s->start);
	/* At a fixed now an empty bucket stays empty: stop at the first no. */
	while (gcra_take(s->tat, s->now_ns, s->cost_ns, s->tau_ns,
	    &retry) == 0)
		s->taken++;
	return NULL;
}

/*
 * Two threads race on one TAT at a fixed virtual now: the CAS must give
 * out exactly burst units between them, none lost and none doubled.
 */
static void
test_gcra_two_threads_take_exactly_burst(void **state)
{
	const uint64_t burst = 200000;
	_Atomic uint64_t tat = 0;
	pthread_barrier_t start;
	struct stress s[2];
	pthread_t th[2];

	(void)state;
	assert_int_equal(pthread_barrier_init(&start, NULL, 2), 0);
	for (int i = 0; i < 2; i++) {
		s[i] = (struct stress){ &tat, &start, 1000 * SEC,
		    gcra_cost_ns(1, MIN, 7), gcra_tau_ns(burst, MIN, 7), 0 };
		assert_int_equal(pthread_create(&th[i], NULL, stress_run,
		    &s[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	pthread_barrier_destroy(&start);
	print_message("thread 0 took %llu, thread 1 took %llu\n",
	    (unsigned long long)s[0].taken, (unsigned long long)s[1].taken);
	assert_int_equal(s[0].taken + s[1].taken, burst);
}

/*
 * gcra_refund_above: a TAT at or past the floor (a bucket a 429 emptied
 * at a pause's end) keeps what stacked on it; one under it (a bucket the
 * 429 did not empty) gets the whole refund.
 */
static void
test_gcra_refund_above_keeps_an_emptied_bucket_empty(void **state)
{
	const uint64_t c = gcra_cost_ns(1, MIN, 6);
	const uint64_t tau = gcra_tau_ns(6, MIN, 6);
	const uint64_t t0 = 1000 * SEC, floor = t0 + 5 * SEC + tau - c;
	_Atomic uint64_t tat;

	(void)state;
	/* Emptied at t0 + 5 s, a take of 3 stacked on it: it stays. */
	atomic_store(&tat, floor + c);
	gcra_refund_above(&tat, 3 * c, 3 * c, floor - tau + c, t0, floor);
	assert_int_equal(atomic_load(&tat), floor + c);

	/* Not emptied: a take of 3 at t0 from a full bucket, all back. */
	atomic_store(&tat, t0 + 3 * c);
	gcra_refund_above(&tat, 3 * c, 3 * c, t0, t0, floor);
	assert_int_equal(atomic_load(&tat), t0);
	/* At the floor already: nothing moves. */
	atomic_store(&tat, floor);
	gcra_refund_above(&tat, 3 * c, 3 * c, t0, t0, floor);
	assert_int_equal(atomic_load(&tat), floor);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gcra_cost_rounds_up),
		cmocka_unit_test(
		    test_gcra_cost_does_not_overflow_for_big_token_counts),
		cmocka_unit_test(test_gcra_tau_slack_fits_burst_and_no_more),
		cmocka_unit_test(
		    test_gcra_provider_example_holds_fifth_for_165s),
		cmocka_unit_test(
		    test_gcra_seven_per_minute_one_by_one_admits_seven),
		cmocka_unit_test(
		    test_gcra_fine_units_one_by_one_admit_exactly_burst),
		cmocka_unit_test(test_gcra_long_run_rate_holds_one_unit_takes),
		cmocka_unit_test(test_gcra_long_run_rate_holds_mixed_sizes),
		cmocka_unit_test(
		    test_gcra_reserve_grants_in_order_until_max_wait),
		cmocka_unit_test(test_gcra_reserve_refused_leaves_tat),
		cmocka_unit_test(test_gcra_unreserve_only_the_last),
		cmocka_unit_test(test_gcra_refund_undoes_take_exactly),
		cmocka_unit_test(
		    test_gcra_refund_partly_drained_gives_the_rest),
		cmocka_unit_test(test_gcra_wait_never_wraps),
		cmocka_unit_test(
		    test_gcra_refund_on_full_bucket_gives_nothing_extra),
		cmocka_unit_test(test_gcra_available_counts_whole_units),
		cmocka_unit_test(
		    test_gcra_refund_above_keeps_an_emptied_bucket_empty),
		cmocka_unit_test(test_gcra_two_threads_take_exactly_burst),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
