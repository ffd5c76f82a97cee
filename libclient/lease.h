/* lease.h: private; concurrency limits as lease cells owned by client slots. */
#ifndef TG_LEASE_H
#define TG_LEASE_H

#include <stdatomic.h>
#include <stdint.h>

#include "seg.h"

/*
 * Take a lease of a concurrency limit that allows `allowed' in flight,
 * in cells[0..ncells): claim a free cell for val (LEASE_VAL of the
 * taker's slot and a fresh generation), searching from hint so that
 * takers spread, then count the held cells and give the cell back if
 * that makes more than allowed.  ncells may exceed allowed: a reload
 * that shrinks a limit only lowers its count, one that grows it may
 * move it to more cells than it allows (segment.c), and adaptive
 * concurrency allows fewer while cut.  Returns 0 with *cell set;
 * -EAGAIN if allowed are in flight (rarely, only a racing taker's claim
 * made it look so); -ESTALE if it met a retired cell (LEASE_SEALED): a
 * reload moved the limit, read the config again.  A claim given back
 * wakes ls's sleepers, who may have counted it.  The count makes it
 * exact: see lease.c; with allowed == ncells a claim alone is.
 */
int	lease_take(struct seg_lstate *ls, _Atomic uint64_t *cells,
	    uint32_t ncells, uint32_t allowed, uint64_t val, uint32_t hint,
	    uint32_t *cell);

/*
 * Free the cell holding exactly val: cells[cell] if it does, else any
 * cell of the limit that does.  Returns 1 if freed, 0 if no cell held it
 * (released already, or reclaimed).  A CAS from exactly val, so a late or
 * doubled release never frees a lease taken since (ABA: the generation).
 */
int	lease_put(_Atomic uint64_t *cells, uint32_t ncells, uint32_t cell,
	    uint64_t val);

/* Cells held now (retired ones too: they are not free). */
uint32_t lease_count(_Atomic uint64_t *cells, uint32_t ncells);

/*
 * After freeing a lease: wake whoever sleeps on the limit.  Makes a
 * system call only when someone announced they sleep, and then hands the
 * freed lease to them: until one of them takes a lease (lease_handed), at
 * most LEASE_HANDOFF_NS, lease_yield() tells a tg_acquire that has not
 * slept to leave it to those woken (tg_try_acquire and tg_reserve, which
 * do not wait, take what is free).  Without it, a worker that releases and
 * asks again at once takes its lease back before the sleeper the release
 * woke is even scheduled, again and again.  A hint for fairness, never
 * for the count: a taker may miss it (it reads it after the cell is
 * free) and take the lease, and it ends by itself, so a sleeper that died
 * or left costs a newcomer at most that long, once.  Long enough for a
 * woken process to be scheduled on a loaded machine; the sleeper that
 * takes the lease ends it at once.
 */
#define LEASE_HANDOFF_NS	10000000ull	/* 10 ms */
void	lease_wake(struct seg_lstate *ls);

/* Whether a taker that has not slept should leave the limit's leases to
 * those a release just woke (lease_wake); the handoff's end in *until. */
int	lease_yield(struct seg_lstate *ls, uint64_t now, uint64_t *until);

/* A sleeper took a lease: the handoff, if any, is over. */
void	lease_handed(struct seg_lstate *ls);

/*
 * Before trying to take a lease that may fail and then sleeping: announce
 * the sleep and return the futex value to sleep on.  See lease.c.
 */
uint32_t lease_wait_prepare(struct seg_lstate *ls);

/* Sleep until a release after lease_wait_prepare, or abs; 0 or -errno. */
int	lease_wait(struct seg_lstate *ls, uint32_t seen,
	    const struct timespec *abs);

/*
 * Free every lease cell that holds slot, in every concurrency limit of the
 * live config, and wake sleepers: a client closing, or the broker
 * reclaiming a dead one.  Returns how many it freed.
 */
uint32_t lease_drop_slot(const struct seg_map *m, uint32_t slot);

#endif /* TG_LEASE_H */
