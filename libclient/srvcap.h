/* srvcap.h: private; what the server said is left, as a cap on a limit. */
#ifndef TG_SRVCAP_H
#define TG_SRVCAP_H

#include <stdatomic.h>
#include <stdint.h>

/*
 * A response that says `remaining R, reset in T' for a unit means at most
 * R more units until T, whatever the local model would allow.  That is a
 * cap on the limit, kept in one word so that takes can count it down with
 * a CAS alongside the limit's own state:
 *
 *	until (40 bits, CLOCK_MONOTONIC in units of 2^20 ns, rounded up)
 *	left  (24 bits, units still allowed; saturates, so a huge R caps a
 *	       little below what the server said, never above)
 *
 * 0 is no cap; a cap whose until has passed is none either.  40 bits of
 * ~1.05 ms last 36 years of uptime.
 */
#define CAP_LEFT_BITS	24
#define CAP_LEFT_MAX	((UINT64_C(1) << CAP_LEFT_BITS) - 1)
#define CAP_Q_SHIFT	20

/*
 * An observation resetting this much later than the cap in place
 * describes the next budget (the server's window rolled over): it
 * replaces the cap.  Closer than that, both describe one budget, seen at
 * different moments by responses that may arrive out of order: the lower
 * count wins, and the cap still ends when it was to.
 */
#define CAP_SAME_BUDGET_NS	UINT64_C(1000000000)

static inline uint64_t
cap_until_ns(uint64_t w)
{
	return (w >> CAP_LEFT_BITS) << CAP_Q_SHIFT;
}

static inline uint64_t
cap_left(uint64_t w)
{
	return w & CAP_LEFT_MAX;
}

/* Whether cap word w limits anything at now_ns. */
static inline int
cap_live(uint64_t w, uint64_t now_ns)
{
	return w != 0 && cap_until_ns(w) > now_ns;
}

/* A cap word for `left' units until until_ns (> 0), rounding until up. */
uint64_t cap_make(uint64_t left, uint64_t until_ns);

/*
 * Count n units against the cap at now_ns.  Returns 1 if a live cap took
 * them (so an undo must give them back), 0 if there was no live cap, or
 * -EAGAIN with *retry_in_ns the time until the cap ends.
 */
int	cap_take(_Atomic uint64_t *cap, uint64_t now_ns, uint64_t n,
	    uint64_t *retry_in_ns);

/* Give back n units cap_take took, unless the cap was replaced since. */
void	cap_untake(_Atomic uint64_t *cap, uint64_t now_ns, uint64_t n);

/* Count n more units used (an under-estimate settled), down to 0. */
void	cap_charge(_Atomic uint64_t *cap, uint64_t now_ns, uint64_t n);

/*
 * Record `remaining' units until reset_ns from now_ns, merged with the
 * cap in place by the rule of CAP_SAME_BUDGET_NS.
 */
void	cap_post(_Atomic uint64_t *cap, uint64_t now_ns, uint64_t remaining,
	    uint64_t reset_ns);

/*
 * A refilling bucket's figures (headers.h, HDR_MODEL_BUCKET): limit L,
 * remaining R, full again in T.  It is L - R units short of full and
 * refills them over T: one unit every T / (L - R).  Returns that, rounded
 * up; 0 when it is full (R >= L) or T is 0.
 */
uint64_t srv_refill_ns(uint64_t limit, uint64_t remaining, uint64_t reset_ns);

/*
 * The server's bucket as the earliest TAT the local GCRA may have at
 * now_ns (tau_ns its bucket, unit_ns one unit's cost): no more than R
 * units left now, and with none left, the next unit no sooner than the
 * server refills one (refill_ns, srv_refill_ns).  Moving a TAT only ever
 * forward to it tightens the local limit to the server's, never loosens
 * it beyond the config.  0: no bound (R fills the local bucket).
 */
uint64_t srv_bucket_tat(uint64_t now_ns, uint64_t tau_ns, uint64_t unit_ns,
	    uint64_t remaining, uint64_t refill_ns);

#endif /* TG_SRVCAP_H */
