/* lease.c: concurrency limits as lease cells owned by client slots. */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "casstat.h"
#include "config.h"
#include "futex.h"
#include "lease.h"
#include "seg.h"

int
lease_take(_Atomic uint64_t *cells, uint32_t ncells, uint64_t val,
    uint32_t hint, uint32_t *cell)
{
	uint64_t free_val;
	uint32_t i;

	for (uint32_t k = 0; k < ncells; k++) {
		i = (hint + k) % ncells;
		/* Relaxed peek: skip held cells without owning their line. */
		if (atomic_load_explicit(&cells[i], memory_order_relaxed) != 0)
			continue;
		free_val = 0;
		/*
		 * seq_cst: pairs with lease_wait_prepare's store of `waiting'
		 * (a Dekker pair with lease_put's free and its load of it).
		 */
		if (TG_CAS_COUNT(atomic_compare_exchange_strong_explicit(
		    &cells[i], &free_val, val, memory_order_seq_cst,
		    memory_order_relaxed))) {
			*cell = i;
			return 0;
		}
	}
	return -EAGAIN;
}

int
lease_put(_Atomic uint64_t *cells, uint32_t ncells, uint32_t cell,
    uint64_t val)
{
	uint64_t expect = val;

	if (val == 0)
		return 0;
	/* seq_cst: the free must be visible before lease_wake reads waiting. */
	if (cell < ncells && atomic_compare_exchange_strong_explicit(
	    &cells[cell], &expect, 0, memory_order_seq_cst,
	    memory_order_relaxed))
		return 1;
	/* The broker may have moved it (a reload resized the limit). */
	for (uint32_t i = 0; i < ncells; i++) {
		expect = val;
		if (atomic_load_explicit(&cells[i], memory_order_relaxed) ==
		    val && atomic_compare_exchange_strong_explicit(&cells[i],
		    &expect, 0, memory_order_seq_cst, memory_order_relaxed))
			return 1;
	}
	return 0;
}

uint32_t
lease_count(_Atomic uint64_t *cells, uint32_t ncells)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < ncells; i++)
		if (atomic_load_explicit(&cells[i], memory_order_relaxed))
			n++;
	return n;
}

/*
 * The sleep protocol.  A sleeper reads `wake', sets `waiting', then tries
 * the cells once more and sleeps on `wake' only if that fails.  A releaser
 * frees its cell, then swaps `waiting' to 0 and, if it was set, bumps
 * `wake' and wakes everyone.  All seq_cst, and a fence between the
 * sleeper's store and its retry's relaxed peeks: either the sleeper's
 * retry sees the freed cell, or the releaser sees `waiting' set after the
 * sleeper read `wake', and the bump makes the futex wait return at once.  A
 * sleeper that dies leaves `waiting' set: the next release pays one
 * futex call and clears it.  Everyone is woken, since a woken sleeper
 * that loses the race simply sleeps again: simpler than handing the wake
 * on, and a concurrency limit has few sleepers.
 */
uint32_t
lease_wait_prepare(struct seg_lstate *ls)
{
	uint32_t seen;

	seen = atomic_load_explicit(&ls->wake, memory_order_seq_cst);
	atomic_store_explicit(&ls->waiting, 1, memory_order_seq_cst);
	/*
	 * seq_cst fence: the Dekker pair above needs it.  The retry reads
	 * the cells with relaxed peeks (lease_take skips a cell that reads
	 * held, without its CAS), and a seq_cst store does not order a
	 * later relaxed load: the load may be satisfied from before the
	 * store is visible (store buffering; ARM64's STLR then LDR allows
	 * it, x86's XCHG for the store does not).  Meanwhile the releaser
	 * frees its cell with a seq_cst CAS and then loads `waiting'
	 * seq_cst: both of its accesses are in the single order S, in
	 * program order, so that side needs no fence.  Without this one,
	 * the retry could see the cell still held and the releaser see
	 * `waiting' still 0: nobody wakes the sleeper.  With it, either
	 * the fence precedes the releaser's CAS in S, and its load of
	 * `waiting' (later in S) sees our 1, or the CAS precedes the fence,
	 * and every load after the fence sees the freed cell.
	 */
	atomic_thread_fence(memory_order_seq_cst);
	return seen;
}

int
lease_wait(struct seg_lstate *ls, uint32_t seen, const struct timespec *abs)
{
	atomic_fetch_add_explicit(&ls->waits, 1, memory_order_relaxed);
	return futex_wait(&ls->wake, seen, abs);
}

void
lease_wake(struct seg_lstate *ls)
{
	/* Load first: no write to the line when nobody sleeps. */
	if (atomic_load_explicit(&ls->waiting, memory_order_seq_cst) == 0)
		return;
	if (atomic_exchange_explicit(&ls->waiting, 0,
	    memory_order_seq_cst) == 0)
		return;
	atomic_fetch_add_explicit(&ls->wake, 1, memory_order_seq_cst);
	(void)futex_wake(&ls->wake, INT_MAX);
}

uint32_t
lease_drop_slot(const struct seg_map *m, uint32_t slot)
{
	const struct seg_limit *lims;
	struct seg_cfg *cfg;
	_Atomic uint64_t *cells = seg_cells(m);
	uint32_t seq, max = m->hdr->max_cells, freed = 0, n;
	uint64_t v;

	/*
	 * Without retrying the seqlock: a torn read can only name wrong
	 * cells, and a cell is freed only if it holds this slot.
	 */
	cfg = seg_read_begin(m, &seq);
	lims = seg_limits(m, cfg);
	for (uint32_t id = 0; id < m->hdr->max_limits; id++) {
		uint32_t first = lims[id].cells, nc = lims[id].ncells;

		if (lims[id].kind != LIM_CONC || (uint64_t)first + nc > max)
			continue;
		n = 0;
		for (uint32_t i = first; i < first + nc; i++) {
			v = atomic_load_explicit(&cells[i],
			    memory_order_relaxed);
			/*
			 * A CAS from exactly v, since its owner may free it
			 * too; seq_cst as lease_put's, before lease_wake.
			 */
			if (v != 0 && LEASE_SLOT(v) == slot &&
			    atomic_compare_exchange_strong_explicit(&cells[i],
			    &v, 0, memory_order_seq_cst, memory_order_relaxed))
				n++;
		}
		if (n) {
			lease_wake(&seg_lstates(m)[id]);
			freed += n;
		}
	}
	return freed;
}
