/* gcra.c: rate limits as GCRA on one 64-bit word, the theoretical arrival time. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

#include "casstat.h"
#include "gcra.h"

uint64_t
gcra_cost_ns(uint64_t n, uint64_t period_ns, uint64_t count)
{
	unsigned __int128 x;
	uint64_t np;

	if (count == 0)
		return UINT64_MAX;
	/* Every take divides: 64 bits when they do (a 128-bit one is a call). */
	if (!__builtin_mul_overflow(n, period_ns, &np) && np <= UINT64_MAX -
	    (count - 1))
		return (np + count - 1) / count;
	/* 128 bits: n * period overflows 64 for big token counts. */
	x = ((unsigned __int128)n * period_ns + count - 1) / count;
	return x > UINT64_MAX ? UINT64_MAX : (uint64_t)x;
}

uint64_t
gcra_tau_ns(uint64_t burst, uint64_t period_ns, uint64_t count)
{
	uint64_t one = gcra_cost_ns(1, period_ns, count);

	/*
	 * burst units taken one at a time cost burst * ceil(period / count),
	 * up to burst - 1 ns more than ceil(burst * period / count): without
	 * that slack the last unit of a full bucket would be refused.  Add
	 * exactly it, not burst - 1 ns: where a unit costs less than burst
	 * ns, a fixed burst - 1 would hold extra units beyond the burst.
	 * burst * one >= ceil(burst * period / count), so it alone is tau.
	 * The slack is once per bucket, not per period: the long-run rate
	 * stays at most count per period.
	 */
	if (burst != 0 && one > UINT64_MAX / burst)
		return UINT64_MAX;
	return burst * one;
}

uint64_t
gcra_tau_margin_ns(uint64_t burst, uint64_t period_ns, uint64_t count,
    uint64_t margin_ns)
{
	uint64_t tau = gcra_tau_ns(burst, period_ns, count);
	uint64_t one = gcra_cost_ns(1, period_ns, count);

	if (tau <= one)
		return tau;
	return tau - one > margin_ns ? tau - margin_ns : one;
}

int
gcra_take(_Atomic uint64_t *tatp, uint64_t now_ns, uint64_t cost_ns,
    uint64_t tau_ns, uint64_t *retry_in_ns)
{
	uint64_t wait;
	int r;

	r = gcra_reserve(tatp, now_ns, cost_ns, tau_ns, 0, &wait);
	if (r < 0)
		*retry_in_ns = wait;
	return r;
}

int
gcra_unreserve(_Atomic uint64_t *tatp, uint64_t tat_ns, uint64_t cost_ns)
{
	uint64_t tat = tat_ns;

	if (cost_ns > tat_ns)
		return 0;	/* no take leaves that: not a reservation */
	/*
	 * Strong, not weak: one try decides, and a spurious failure would
	 * spend a slot that was free to give back; nothing retries it, so
	 * it is no TG_CAS_COUNT.  Relaxed: as gcra_reserve, the CAS alone
	 * orders the word.
	 */
	return atomic_compare_exchange_strong_explicit(tatp, &tat,
	    tat_ns - cost_ns, memory_order_relaxed, memory_order_relaxed);
}

void
gcra_refund(_Atomic uint64_t *tatp, uint64_t cost_ns, uint64_t refund_ns,
    uint64_t then_ns, uint64_t now_ns)
{
	gcra_refund_above(tatp, cost_ns, refund_ns, then_ns, now_ns, 0);
}

void
gcra_refund_above(_Atomic uint64_t *tatp, uint64_t cost_ns,
    uint64_t refund_ns, uint64_t then_ns, uint64_t now_ns, uint64_t floor_ns)
{
	uint64_t tat, prev, end, left;

	/*
	 * A refund must leave the TAT where a take of cost_ns - refund_ns
	 * at then_ns would have left it, and no further back.  The take
	 * pushed the TAT to at least then_ns + cost_ns; while the smaller
	 * charge would still reach now_ns, the TAT never fell behind the
	 * clock since, every take after it stacked on it, and moving the
	 * TAT back by the difference is exact.  Once the clock has drained
	 * part of the charge, a later take may have found the bucket full
	 * and stacked on now instead: refunding the drained part then gives
	 * that bucket a second burst (7/min: A takes 7, the bucket refills,
	 * B takes 7, A refunds 7, B takes 7 more at the same instant).  So
	 * only what of the charge is still ahead of now_ns comes back,
	 * reckoned from then_ns: the TAT before the take is unknown, and
	 * then_ns is never later than it, so this errs towards less.
	 */
	end = cost_ns > UINT64_MAX - then_ns ? UINT64_MAX : then_ns + cost_ns;
	left = end > now_ns ? end - now_ns : 0;
	if (refund_ns > left)
		refund_ns = left;
	if (refund_ns == 0)
		return;
	tat = atomic_load_explicit(tatp, memory_order_relaxed);
	do {
		/* A TAT at or past the floor keeps what stacked on it. */
		if (floor_ns != 0 && tat >= floor_ns)
			return;
		prev = tat > refund_ns ? tat - refund_ns : 0;
		/* Relaxed: as gcra_reserve, the CAS alone orders the word. */
	} while (!TG_CAS_COUNT(atomic_compare_exchange_weak_explicit(tatp, &tat,
	    prev, memory_order_relaxed, memory_order_relaxed)));
}

void
gcra_charge(_Atomic uint64_t *tatp, uint64_t now_ns, uint64_t cost_ns,
    uint64_t max_ahead_ns)
{
	uint64_t tat, next, cap;

	cap = max_ahead_ns > UINT64_MAX - now_ns ? UINT64_MAX :
	    now_ns + max_ahead_ns;
	tat = atomic_load_explicit(tatp, memory_order_relaxed);
	do {
		next = tat > now_ns ? tat : now_ns;
		next = cost_ns > cap - (next < cap ? next : cap) ? cap :
		    next + cost_ns;
		if (next <= tat)
			return;		/* already that far in debt */
	} while (!TG_CAS_COUNT(atomic_compare_exchange_weak_explicit(tatp, &tat,
	    next, memory_order_relaxed, memory_order_relaxed)));
}

void
gcra_raise(_Atomic uint64_t *tatp, uint64_t tat_ns)
{
	uint64_t tat = atomic_load_explicit(tatp, memory_order_relaxed);

	do {
		if (tat >= tat_ns)
			return;
		/* Relaxed: as gcra_reserve, the CAS alone orders the word. */
	} while (!TG_CAS_COUNT(atomic_compare_exchange_weak_explicit(tatp, &tat,
	    tat_ns, memory_order_relaxed, memory_order_relaxed)));
}

uint64_t
gcra_available(uint64_t tat_ns, uint64_t now_ns, uint64_t cost1_ns,
    uint64_t tau_ns)
{
	uint64_t used = tat_ns > now_ns ? tat_ns - now_ns : 0;

	if (used >= tau_ns || cost1_ns == 0)
		return 0;
	return (tau_ns - used) / cost1_ns;
}
