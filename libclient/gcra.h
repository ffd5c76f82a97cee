/* gcra.h: private; rate limits as GCRA on one 64-bit word (the TAT). */
#ifndef TG_GCRA_H
#define TG_GCRA_H

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

#include "casstat.h"

/*
 * Nanoseconds of bucket that n units of a `count per period_ns' limit
 * use: ceil(n * period_ns / count), saturating at UINT64_MAX.
 */
uint64_t gcra_cost_ns(uint64_t n, uint64_t period_ns, uint64_t count);

/*
 * The GCRA limit (tau) of a bucket holding `burst' units: room for burst
 * units taken at once and for burst units taken one by one, whose costs
 * are each rounded up.
 */
uint64_t gcra_tau_ns(uint64_t burst, uint64_t period_ns, uint64_t count);

/*
 * The GCRA limit of a bucket of `burst' units that keeps margin_ns of it
 * unused (limit_margin_ns): tau less the margin, never less than one
 * unit's cost, so a full bucket always admits one.  The long-run rate is
 * the count's either way: a margin only makes the bucket smaller.
 */
uint64_t gcra_tau_margin_ns(uint64_t burst, uint64_t period_ns,
	    uint64_t count, uint64_t margin_ns);

/*
 * Take cost_ns from the bucket whose TAT is *tatp at now_ns.  Returns 0,
 * or -EAGAIN with *retry_in_ns set to when it would fit.
 */
int	gcra_take(_Atomic uint64_t *tatp, uint64_t now_ns, uint64_t cost_ns,
	    uint64_t tau_ns, uint64_t *retry_in_ns);

/* gcra_wait_ns: the cost never fits while the TAT stands (the sum wraps). */
#define GCRA_NEVER	UINT64_MAX

/*
 * The GCRA sum, the one place it is written: cost_ns taken at now_ns from
 * the bucket whose TAT is tat_ns moves the TAT to *next_ns, and fits
 * after the returned wait (0: now), when that TAT is no more than tau_ns
 * ahead.  GCRA_NEVER, *next_ns unset, when the TAT would not fit 64 bits:
 * a wrapped sum would read as a bucket far in the past, that is full.
 * The clock only grows, so a cost that never fits an empty bucket (tat_ns
 * 0) now never will: see gcra_never_fits.
 */
static inline uint64_t
gcra_wait_ns(uint64_t tat_ns, uint64_t now_ns, uint64_t cost_ns,
    uint64_t tau_ns, uint64_t *next_ns)
{
	uint64_t from = tat_ns > now_ns ? tat_ns : now_ns, ahead;

	if (cost_ns > UINT64_MAX - from)
		return GCRA_NEVER;
	*next_ns = from + cost_ns;
	ahead = *next_ns - now_ns;
	return ahead > tau_ns ? ahead - tau_ns : 0;
}

/*
 * Whether cost_ns can never be taken from a bucket of tau_ns, at now_ns
 * or later: more than the bucket holds, or past the end of the clock.
 * What take() refuses with -E2BIG, however long one would wait.
 */
static inline int
gcra_never_fits(uint64_t now_ns, uint64_t cost_ns, uint64_t tau_ns)
{
	uint64_t next;

	return gcra_wait_ns(0, now_ns, cost_ns, tau_ns, &next) != 0;
}

/*
 * Take cost_ns now or reserve it in the future, if its slot comes within
 * max_wait_ns: *wait_ns is then how long until the slot (0: now), and
 * *tat_ns the TAT the reservation left (what gcra_unreserve needs).
 * Returns 0, or -EAGAIN with *wait_ns set to the wait it would need
 * (GCRA_NEVER: not while the TAT stands).  Reservations are served in
 * the order they are made, with no queue.  Inline: every rate-limited
 * ticket runs it, a call was 2-3 ns of ~40.
 */
static inline int
gcra_reserve_at(_Atomic uint64_t *tatp, uint64_t now_ns, uint64_t cost_ns,
    uint64_t tau_ns, uint64_t max_wait_ns, uint64_t *wait_ns,
    uint64_t *tat_ns)
{
	uint64_t tat, next;

	tat = atomic_load_explicit(tatp, memory_order_relaxed);
	do {
		*wait_ns = gcra_wait_ns(tat, now_ns, cost_ns, tau_ns, &next);
		/* NEVER left next unset: refused whatever max_wait_ns. */
		if (*wait_ns > max_wait_ns || *wait_ns == GCRA_NEVER)
			return -EAGAIN;
		/*
		 * Relaxed: the TAT publishes no other memory, and the CAS alone
		 * orders updates of this one word.  On failure it reloads tat.
		 */
	} while (!TG_CAS_COUNT(atomic_compare_exchange_weak_explicit(tatp, &tat,
	    next, memory_order_relaxed, memory_order_relaxed)));
	*tat_ns = next;
	return 0;
}

/* gcra_reserve_at without the TAT it left. */
static inline int
gcra_reserve(_Atomic uint64_t *tatp, uint64_t now_ns, uint64_t cost_ns,
    uint64_t tau_ns, uint64_t max_wait_ns, uint64_t *wait_ns)
{
	uint64_t next;

	return gcra_reserve_at(tatp, now_ns, cost_ns, tau_ns, max_wait_ns,
	    wait_ns, &next);
}

/*
 * Give back a reservation of cost_ns that left the TAT at tat_ns, if it
 * is still the last one made: the TAT is still tat_ns, so nobody stacked
 * a slot on it, and moving it back by cost_ns leaves the bucket as if
 * the reservation had never been made (the TAT it started from, or the
 * clock or a pause's end that it stacked on, never less).  A reservation
 * others stacked on is not given back: their slots were reckoned from
 * its end, and the next taker would then land on one of them; its slot
 * stays an unused gap, which no server counts.  Returns 1 if it gave it
 * back, else 0.
 */
int	gcra_unreserve(_Atomic uint64_t *tatp, uint64_t tat_ns,
	    uint64_t cost_ns);

/*
 * Give back refund_ns of the cost_ns that a take at then_ns charged, at
 * now_ns (then_ns itself: undo a take).  At most what of that charge the
 * clock has not drained by now_ns comes back; see gcra.c.
 */
void	gcra_refund(_Atomic uint64_t *tatp, uint64_t cost_ns,
	    uint64_t refund_ns, uint64_t then_ns, uint64_t now_ns);

/*
 * gcra_refund, but only to a TAT short of floor_ns (0: none): a bucket a
 * 429 left empty at a pause's end (its TAT at floor_ns or past) keeps
 * what stacked on it, while one the 429 did not empty gets the refund.
 * Kept, the charges of the tickets that go back in line space out the
 * restart after the pause: against a server that takes half the rate the
 * config says, refunding them to the floor took 19 to 23 429s per 100
 * requests where keeping them takes 12 to 14.
 */
void	gcra_refund_above(_Atomic uint64_t *tatp, uint64_t cost_ns,
	    uint64_t refund_ns, uint64_t then_ns, uint64_t now_ns,
	    uint64_t floor_ns);

/*
 * Charge cost_ns that was used without a take (an estimate that fell
 * short, settled): the bucket goes into debt, and takes wait it out.  The
 * TAT moves at most to now_ns + max_ahead_ns, never back.
 */
void	gcra_charge(_Atomic uint64_t *tatp, uint64_t now_ns, uint64_t cost_ns,
	    uint64_t max_ahead_ns);

/*
 * Move the TAT forward to at least tat_ns, never back: the bucket holds
 * no more than it would at that TAT (a server's figures, the end of a
 * pause).  An atomic max; a TAT already past it is left alone.
 */
void	gcra_raise(_Atomic uint64_t *tatp, uint64_t tat_ns);

/* Units of cost1_ns each that would fit now (for tollstat). */
uint64_t gcra_available(uint64_t tat_ns, uint64_t now_ns, uint64_t cost1_ns,
	    uint64_t tau_ns);

#endif /* TG_GCRA_H */
