/* lease.c: concurrency limits as lease cells owned by client slots. */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "casstat.h"
#include "clock.h"
#include "futex.h"
#include "lease.h"
#include "seg.h"

/*
 * Why counting after the claim makes a take exact, for any allowed up to
 * ncells.  Claims, counts and frees of cells are all seq_cst, so they
 * fall in one total order S.  Take any leases in flight together, each
 * granted by a claim (a CAS 0 -> val) and then a count that found at
 * most allowed cells held.  The one whose claim came last in S counted
 * after every other claim, and before any of their frees (all were in
 * flight once its take returned), so its count saw all of them and its
 * own: there are at most allowed.  A claim given back may be counted
 * by other takers meanwhile, who then refuse though there was room:
 * spurious refusals under a race, never an excess.
 *
 * The count before the claim is not needed for that; it spares a full
 * limit the claim and its undo, so that a sleeper's own undo does not
 * keep waking it (see the sleep protocol below).
 *
 * With as many cells as allowed, the common case (no reload resized the
 * limit, adaptive did not cut it), the claim alone is exact: no more
 * than ncells can be held.  Such a take counts nothing, and costs what
 * it did before counting: a scan from hint to a free cell and its CAS.
 */
static uint32_t
held(_Atomic uint64_t *cells, uint32_t ncells, int *sealed)
{
	uint32_t n = 0;
	uint64_t v;

	for (uint32_t i = 0; i < ncells; i++) {
		/* seq_cst: in the total order the argument above needs. */
		v = atomic_load_explicit(&cells[i], memory_order_seq_cst);
		n += v != 0;
		*sealed |= v == LEASE_SEALED;
	}
	return n;
}

int
lease_take(struct seg_lstate *ls, _Atomic uint64_t *cells, uint32_t ncells,
    uint32_t allowed, uint64_t val, uint32_t hint, uint32_t *cell)
{
	uint64_t expect, v;
	uint32_t i = 0, k;
	int sealed = 0, count = allowed < ncells;

	if (count && (held(cells, ncells, &sealed) >= allowed || sealed))
		return sealed ? -ESTALE : -EAGAIN;
	for (k = 0; k < ncells; k++) {
		i = (hint + k) % ncells;
		/*
		 * A peek, to skip held cells without owning their line.
		 * seq_cst: a refusal for want of a free cell is a count too
		 * (the sleep protocol needs its loads after `waiting').
		 */
		v = atomic_load_explicit(&cells[i], memory_order_seq_cst);
		if (v == LEASE_SEALED)
			return -ESTALE;
		if (v != 0)
			continue;
		expect = 0;
		/*
		 * seq_cst: the claim the count below must follow in S; and
		 * it pairs with lease_wait_prepare's store of `waiting' (a
		 * Dekker pair with a free and lease_wake's load of it).
		 */
		if (TG_CAS_COUNT(atomic_compare_exchange_strong_explicit(
		    &cells[i], &expect, val, memory_order_seq_cst,
		    memory_order_relaxed)))
			break;
	}
	if (k == ncells)
		return -EAGAIN;
	if (!count || (held(cells, ncells, &sealed) <= allowed && !sealed)) {
		*cell = i;
		return 0;
	}
	/*
	 * Too many: give it back, from exactly val (seq_cst, as any free),
	 * and wake the limit: a sleeper may have counted our claim in the
	 * count that made it sleep, and no release would wake it for it.
	 */
	expect = val;
	(void)atomic_compare_exchange_strong_explicit(&cells[i], &expect, 0,
	    memory_order_seq_cst, memory_order_relaxed);
	lease_wake(ls);
	return sealed ? -ESTALE : -EAGAIN;
}

int
lease_put(_Atomic uint64_t *cells, uint32_t ncells, uint32_t cell,
    uint64_t val)
{
	uint64_t expect = val;

	if (val == 0 || val == LEASE_SEALED)	/* never a lease */
		return 0;
	/* seq_cst: the free must be visible before lease_wake reads waiting. */
	if (cell < ncells && atomic_compare_exchange_strong_explicit(
	    &cells[cell], &expect, 0, memory_order_seq_cst,
	    memory_order_relaxed))
		return 1;
	/* The broker may have moved it (a reload grew the limit). */
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
	int sealed = 0;

	return held(cells, ncells, &sealed);
}

/*
 * The sleep protocol.  A sleeper reads `wake', sets `waiting', then tries
 * the cells once more and sleeps on `wake' only if that fails.  Whoever
 * frees a cell (a release, a claim given back, the broker) then swaps
 * `waiting' to 0 and, if it was set, bumps `wake' and wakes everyone.
 * All seq_cst, and a fence between the sleeper's store and its retry's
 * loads: for each cell the sleeper's retry counted as held, either
 * it saw the cell after it was freed, or the freer sees `waiting' set
 * after the sleeper read `wake', and the bump makes the futex wait return
 * at once.  So the sleeper is woken by the first free of any cell that
 * made it refuse.  A sleeper that dies leaves `waiting' set: the next
 * release pays one futex call and clears it.  Everyone is woken, since a
 * woken sleeper that loses the race simply sleeps again: simpler than
 * handing the wake on, and a concurrency limit has few sleepers.
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
	/*
	 * Relaxed: a hint (lease.h); the free that matters was the CAS
	 * before, and the futex orders nothing a sleeper reads of it.
	 */
	atomic_store_explicit(&ls->handoff_ns, now_ns() + LEASE_HANDOFF_NS,
	    memory_order_relaxed);
	atomic_fetch_add_explicit(&ls->wake, 1, memory_order_seq_cst);
	(void)futex_wake(&ls->wake, INT_MAX);
}

int
lease_yield(struct seg_lstate *ls, uint64_t now, uint64_t *until)
{
	*until = atomic_load_explicit(&ls->handoff_ns, memory_order_relaxed);
	return *until > now;
}

void
lease_handed(struct seg_lstate *ls)
{
	/* Load first: the line is written only when a handoff is on. */
	if (atomic_load_explicit(&ls->handoff_ns, memory_order_relaxed) != 0)
		atomic_store_explicit(&ls->handoff_ns, 0,
		    memory_order_relaxed);
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
		if (lims[id].kind != LIM_CONC)
			continue;
		n = 0;
		/* Its cells, and those a reload just moved it from. */
		for (int w = 0; w < 2; w++) {
			uint32_t first = w ? lims[id].was_cells :
			    lims[id].cells;
			uint32_t nc = w ? lims[id].was_ncells : lims[id].ncells;

			if ((uint64_t)first + nc > max)
				continue;
			for (uint32_t i = first; i < first + nc; i++) {
				v = atomic_load_explicit(&cells[i],
				    memory_order_relaxed);
				/*
				 * A CAS from exactly v, since its owner may
				 * free it too; seq_cst as lease_put's, before
				 * lease_wake.
				 */
				if (v != 0 && v != LEASE_SEALED &&
				    LEASE_SLOT(v) == slot &&
				    atomic_compare_exchange_strong_explicit(
				    &cells[i], &v, 0, memory_order_seq_cst,
				    memory_order_relaxed))
					n++;
			}
		}
		if (n) {
			lease_wake(&seg_lstates(m)[id]);
			freed += n;
		}
	}
	return freed;
}
