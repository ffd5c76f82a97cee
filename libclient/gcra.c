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

void
gcra_refund(_Atomic uint64_t *tatp, uint64_t cost_ns)
{
	uint64_t tat, prev;

	/*
	 * Moving the TAT back by cost_ns returns exactly what a take moved it
	 * forward.  A TAT in the past already means a full bucket, so the
	 * refund can never give more than tau: it cannot loosen the limit.
	 */
	tat = atomic_load_explicit(tatp, memory_order_relaxed);
	do {
		prev = tat > cost_ns ? tat - cost_ns : 0;
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

uint64_t
gcra_available(uint64_t tat_ns, uint64_t now_ns, uint64_t cost1_ns,
    uint64_t tau_ns)
{
	uint64_t used = tat_ns > now_ns ? tat_ns - now_ns : 0;

	if (used >= tau_ns || cost1_ns == 0)
		return 0;
	return (tau_ns - used) / cost1_ns;
}
