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
