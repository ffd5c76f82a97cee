/* window.h: private; rolling-window limits on a ring of sub-window counters. */
#ifndef TG_WINDOW_H
#define TG_WINDOW_H

#include <stdatomic.h>
#include <stdint.h>

/*
 * A window limit admits at most `limit' units in any `period'.  The ring
 * has SEG_WIN_SLOTS words, each (epoch << WIN_COUNT_BITS | count) for one
 * sub-window of sub_ns = ceil(period / (SEG_WIN_SLOTS - 1)): the whole ring
 * spans at least period plus the current sub-window, so a sum over the
 * ring is never short of the units in the last period.  It can count up
 * to one sub-window too many: the limit under-admits by at most that.
 */
#define WIN_COUNT_BITS	36
#define WIN_COUNT_MAX	((UINT64_C(1) << WIN_COUNT_BITS) - 1)
#define WIN_EPOCH_MASK	((UINT64_C(1) << (64 - WIN_COUNT_BITS)) - 1)
/* Sub-windows a word may be ahead of a reader's clock and still count. */
#define WIN_AHEAD_MAX	4

uint64_t win_sub_ns(uint64_t period_ns);

/*
 * Add n units at now_ns if the ring then holds at most limit.  Returns 0,
 * or -EAGAIN with *retry_in_ns set to when enough will have expired.
 */
int	win_take(_Atomic uint64_t *ring, uint64_t now_ns, uint64_t sub_ns,
	    uint64_t limit, uint64_t n, uint64_t *retry_in_ns);

/* How long until n units would fit (0: now); for refusals elsewhere. */
uint64_t win_retry(_Atomic uint64_t *ring, uint64_t now_ns, uint64_t sub_ns,
	    uint64_t limit, uint64_t n);

/* Take back n units that win_take added at then_ns. */
void	win_undo(_Atomic uint64_t *ring, uint64_t then_ns, uint64_t sub_ns,
	    uint64_t n);

/*
 * Count n units used at now_ns whatever the ring holds (an estimate that
 * fell short, settled): the window may go over limit, and then refuses
 * until enough has expired.
 */
void	win_charge(_Atomic uint64_t *ring, uint64_t now_ns, uint64_t sub_ns,
	    uint64_t n);

/* Units counted in the window ending at now_ns. */
uint64_t win_sum(_Atomic uint64_t *ring, uint64_t now_ns, uint64_t sub_ns);

#endif /* TG_WINDOW_H */
