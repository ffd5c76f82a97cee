/* srvcap.c: the server's `remaining until reset' as a cap word on a limit. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

#include "casstat.h"
#include "srvcap.h"

#define CAP_Q_MAX	((UINT64_C(1) << (64 - CAP_LEFT_BITS)) - 1)

uint64_t
cap_make(uint64_t left, uint64_t until_ns)
{
	uint64_t q = until_ns >> CAP_Q_SHIFT;

	/* Round up: a cap ends no earlier than the server said. */
	if (until_ns & ((UINT64_C(1) << CAP_Q_SHIFT) - 1))
		q++;
	if (q == 0)
		q = 1;
	if (q > CAP_Q_MAX)
		q = CAP_Q_MAX;
	if (left > CAP_LEFT_MAX)
		left = CAP_LEFT_MAX;
	return q << CAP_LEFT_BITS | left;
}

/*
 * Relaxed throughout: the cap word publishes no other memory, and each
 * CAS alone orders the updates of this one word, as for the GCRA's TAT.
 */
int
cap_take(_Atomic uint64_t *cap, uint64_t now_ns, uint64_t n,
    uint64_t *retry_in_ns)
{
	uint64_t w = atomic_load_explicit(cap, memory_order_relaxed);

	do {
		if (!cap_live(w, now_ns))
			return 0;
		if (cap_left(w) < n) {
			*retry_in_ns = cap_until_ns(w) - now_ns;
			return -EAGAIN;
		}
	} while (!TG_CAS_COUNT(atomic_compare_exchange_weak_explicit(cap, &w,
	    w - n, memory_order_relaxed, memory_order_relaxed)));
	return 1;
}

void
cap_untake(_Atomic uint64_t *cap, uint64_t now_ns, uint64_t n)
{
	uint64_t w = atomic_load_explicit(cap, memory_order_relaxed), left;

	do {
		/*
		 * A cap that ended took nothing that matters any more; one
		 * replaced by a newer observation counts from server truth.
		 * Both would be told apart only by their until, which the
		 * check below cannot do for a replacement with the same until:
		 * then the give-back errs by n toward the server's count.
		 */
		if (!cap_live(w, now_ns))
			return;
		left = cap_left(w) + n;
		if (left > CAP_LEFT_MAX)
			left = CAP_LEFT_MAX;
	} while (!TG_CAS_COUNT(atomic_compare_exchange_weak_explicit(cap, &w,
	    (w & ~CAP_LEFT_MAX) | left, memory_order_relaxed,
	    memory_order_relaxed)));
}

void
cap_charge(_Atomic uint64_t *cap, uint64_t now_ns, uint64_t n)
{
	uint64_t w = atomic_load_explicit(cap, memory_order_relaxed), left;

	do {
		if (!cap_live(w, now_ns))
			return;
		left = cap_left(w) > n ? cap_left(w) - n : 0;
	} while (!TG_CAS_COUNT(atomic_compare_exchange_weak_explicit(cap, &w,
	    (w & ~CAP_LEFT_MAX) | left, memory_order_relaxed,
	    memory_order_relaxed)));
}

void
cap_post(_Atomic uint64_t *cap, uint64_t now_ns, uint64_t remaining,
    uint64_t reset_ns)
{
	uint64_t w, fresh, next, left;

	if (reset_ns == 0 || reset_ns > UINT64_MAX - now_ns)
		return;
	fresh = cap_make(remaining, now_ns + reset_ns);
	w = atomic_load_explicit(cap, memory_order_relaxed);
	do {
		next = fresh;
		if (cap_live(w, now_ns) && cap_until_ns(fresh) <=
		    cap_until_ns(w) + CAP_SAME_BUDGET_NS) {
			/*
			 * One budget: the lowest count, until the cap in
			 * place ends.  Not the later reset: a server whose
			 * bucket refills all the time (OpenAI, Anthropic)
			 * pushes its reset out with every request, and a
			 * cap extended each time would only ever shrink.
			 */
			left = cap_left(w) < cap_left(fresh) ? cap_left(w) :
			    cap_left(fresh);
			next = (w & ~CAP_LEFT_MAX) | left;
			if (next == w)
				return;	/* nothing new: no write */
		}
	} while (!TG_CAS_COUNT(atomic_compare_exchange_weak_explicit(cap, &w,
	    next, memory_order_relaxed, memory_order_relaxed)));
}

uint64_t
srv_refill_ns(uint64_t limit, uint64_t remaining, uint64_t reset_ns)
{
	uint64_t short_by;

	if (limit == 0 || remaining >= limit || reset_ns == 0)
		return 0;
	short_by = limit - remaining;
	return reset_ns / short_by + (reset_ns % short_by != 0);
}

uint64_t
srv_bucket_tat(uint64_t now_ns, uint64_t tau_ns, uint64_t unit_ns,
    uint64_t remaining, uint64_t refill_ns)
{
	unsigned __int128 room = (unsigned __int128)remaining * unit_ns;
	uint64_t ahead;

	if (room >= tau_ns)
		return 0;	/* R units fill all the bucket holds */
	ahead = tau_ns - (uint64_t)room;
	/*
	 * Empty: the next unit is the server's to refill, one every
	 * refill_ns, where ours would give one every unit_ns.  With units
	 * left the GCRA refills at the config's rate from there: a
	 * bucket cannot hold R now and slower after, and the next response
	 * says where the server stands again.
	 */
	if (remaining == 0 && refill_ns > unit_ns)
		ahead = refill_ns - unit_ns > UINT64_MAX - ahead ? UINT64_MAX :
		    ahead + (refill_ns - unit_ns);
	return ahead > UINT64_MAX - now_ns ? UINT64_MAX : now_ns + ahead;
}
