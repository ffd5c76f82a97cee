/* window.c: rolling-window limits on a ring of sub-window counters. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

#include "casstat.h"
#include "seg.h"
#include "window.h"

#define SLOT_EPOCH(w)	((w) >> WIN_COUNT_BITS)
#define SLOT_COUNT(w)	((w) & WIN_COUNT_MAX)
#define SLOT(e, c)	(((e) & WIN_EPOCH_MASK) << WIN_COUNT_BITS | (c))

uint64_t
win_sub_ns(uint64_t period_ns)
{
	uint64_t sub = period_ns / (SEG_WIN_SLOTS - 1);

	if (sub * (SEG_WIN_SLOTS - 1) < period_ns)
		sub++;
	return sub ? sub : 1;
}

/*
 * The units of ring word w while the current sub-window is e: counted if
 * its epoch is within the last SLOTS sub-windows, or at most
 * WIN_AHEAD_MAX ahead of e (written by a process that read the clock a
 * moment after us: counting it is the safe side); anything else expired.
 * One test, e - epoch + AHEAD below SLOTS + AHEAD, as epochs wrap at 2^28
 * sub-windows.  A word's index is its epoch modulo SLOTS, so a counted
 * word is the one sub-window its index holds; a scribbled word at the
 * wrong index counts too, which can only refuse more.
 */
static inline uint64_t
slot_units(uint64_t w, uint64_t e)
{
	return ((e - SLOT_EPOCH(w) + WIN_AHEAD_MAX) & WIN_EPOCH_MASK) <
	    SEG_WIN_SLOTS + WIN_AHEAD_MAX ? SLOT_COUNT(w) : 0;
}

/* The units in the ring at sub-window e; every take sums all 64 words. */
static uint64_t
ring_sum(_Atomic uint64_t *ring, uint64_t e)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < SEG_WIN_SLOTS; i++)
		/* Relaxed: each word is read once; see win_take on why it holds. */
		sum += slot_units(atomic_load_explicit(&ring[i],
		    memory_order_relaxed), e);
	return sum;
}

uint64_t
win_sum(_Atomic uint64_t *ring, uint64_t now_ns, uint64_t sub_ns)
{
	return ring_sum(ring, now_ns / sub_ns);
}

/* How long from now_ns until `excess' units have left the ring. */
static uint64_t
expiry_wait(_Atomic uint64_t *ring, uint64_t now_ns, uint64_t sub_ns,
    uint64_t excess)
{
	uint64_t e = now_ns / sub_ns, freed = 0, w;

	for (uint64_t k = SEG_WIN_SLOTS - 1; ; k--) {
		w = atomic_load_explicit(&ring[(e - k) % SEG_WIN_SLOTS],
		    memory_order_relaxed);
		freed += slot_units(w, e);
		/* Sub-window e - k leaves the ring when e - k + SLOTS begins. */
		if (freed >= excess || k == 0)
			return (e - k + SEG_WIN_SLOTS) * sub_ns - now_ns;
	}
}

uint64_t
win_retry(_Atomic uint64_t *ring, uint64_t now_ns, uint64_t sub_ns,
    uint64_t limit, uint64_t n)
{
	uint64_t sum = ring_sum(ring, now_ns / sub_ns);

	if (sum + n <= limit)
		return 0;
	return expiry_wait(ring, now_ns, sub_ns, sum + n - limit);
}

int
win_take(_Atomic uint64_t *ring, uint64_t now_ns, uint64_t sub_ns,
    uint64_t limit, uint64_t n, uint64_t *retry_in_ns)
{
	uint64_t e = now_ns / sub_ns, w, next, sum;
	_Atomic uint64_t *slot = &ring[e % SEG_WIN_SLOTS];

	if (n > limit || n > WIN_COUNT_MAX) {
		*retry_in_ns = UINT64_MAX;
		return -EAGAIN;
	}
	/*
	 * Add first, then check the sum and undo on excess (no sum before
	 * the add: it would double the cost of every grant to spare a
	 * refusal its add and undo).  seq_cst on the
	 * add and on the loads of the sum: of any set of takes that were all
	 * admitted, the last to add read a sum that included every other's
	 * add, so it saw them all and the admitted total is never above
	 * limit.  Racing takes at the edge may both undo: the window errs on
	 * the side of refusing.
	 */
	w = atomic_load_explicit(slot, memory_order_relaxed);
	do {
		/*
		 * A word a lap or so ahead of e means our clock read went
		 * stale while we were descheduled: reusing it would wipe
		 * newer counts, so refuse and let the caller retry with a
		 * fresh clock.  (0 is a fresh word; an old word lands here
		 * only after an idle of 2^28 sub-windows less a few, and
		 * costs one refusal.)  Otherwise add only to sub-window e,
		 * the one ring_sum below counts in this slot, and reuse
		 * anything else as expired: epochs wrap, so an old word
		 * cannot be told from a later one by distance alone.
		 */
		if (w != 0 && ((SLOT_EPOCH(w) - e) & WIN_EPOCH_MASK) - 1 <
		    2 * SEG_WIN_SLOTS) {
			*retry_in_ns = 1;
			return -EAGAIN;
		}
		if (SLOT_EPOCH(w) == (e & WIN_EPOCH_MASK)) {
			if (SLOT_COUNT(w) + n > WIN_COUNT_MAX) {
				sum = ring_sum(ring, e);
				goto refuse;
			}
			next = w + n;
		} else
			next = SLOT(e, n);
	} while (!TG_CAS_COUNT(atomic_compare_exchange_weak_explicit(slot, &w,
	    next, memory_order_seq_cst, memory_order_relaxed)));
	atomic_thread_fence(memory_order_seq_cst);
	sum = ring_sum(ring, e);
	if (sum <= limit)
		return 0;
	win_undo(ring, now_ns, sub_ns, n);
	sum -= n;
refuse:
	*retry_in_ns = expiry_wait(ring, now_ns, sub_ns,
	    sum + n > limit ? sum + n - limit : 1);
	return -EAGAIN;
}

void
win_undo(_Atomic uint64_t *ring, uint64_t then_ns, uint64_t sub_ns,
    uint64_t n)
{
	uint64_t e = then_ns / sub_ns, w;
	_Atomic uint64_t *slot = &ring[e % SEG_WIN_SLOTS];

	w = atomic_load_explicit(slot, memory_order_relaxed);
	do {
		/* Gone to a later sub-window: those units expired anyway. */
		if (SLOT_EPOCH(w) != (e & WIN_EPOCH_MASK))
			return;
		if (SLOT_COUNT(w) < n)	/* scribbled on: don't borrow */
			return;
	} while (!TG_CAS_COUNT(atomic_compare_exchange_weak_explicit(slot, &w,
	    w - n, memory_order_seq_cst, memory_order_relaxed)));
}

void
win_charge(_Atomic uint64_t *ring, uint64_t now_ns, uint64_t sub_ns,
    uint64_t n)
{
	uint64_t e = now_ns / sub_ns, w, next, ahead;
	_Atomic uint64_t *slot = &ring[e % SEG_WIN_SLOTS];

	w = atomic_load_explicit(slot, memory_order_relaxed);
	do {
		ahead = (SLOT_EPOCH(w) - e) & WIN_EPOCH_MASK;
		/*
		 * Units used are counted, never refused: in sub-window e, or
		 * in a slightly later one a fresher clock opened (counted by
		 * ring_sum all the same); an expired word is reused.
		 */
		if (w != 0 && ahead <= WIN_AHEAD_MAX)
			next = SLOT_COUNT(w) + n > WIN_COUNT_MAX ?
			    (w | WIN_COUNT_MAX) : w + n;
		else
			next = SLOT(e, n > WIN_COUNT_MAX ? WIN_COUNT_MAX : n);
	} while (!TG_CAS_COUNT(atomic_compare_exchange_weak_explicit(slot, &w,
	    next, memory_order_seq_cst, memory_order_relaxed)));
}
