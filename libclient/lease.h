/* lease.h: private; concurrency limits as lease cells owned by client slots. */
#ifndef TG_LEASE_H
#define TG_LEASE_H

#include <stdatomic.h>
#include <stdint.h>

#include "seg.h"

/*
 * Claim a free cell of cells[0..ncells) for val (LEASE_VAL of the taker's
 * slot and a fresh generation), starting the search at hint so that
 * takers spread over the cells.  Returns 0 with *cell set, or -EAGAIN.
 */
int	lease_take(_Atomic uint64_t *cells, uint32_t ncells, uint64_t val,
	    uint32_t hint, uint32_t *cell);

/*
 * Free the cell holding exactly val: cells[cell] if it does, else any
 * cell of the limit that does.  Returns 1 if freed, 0 if no cell held it
 * (released already, or reclaimed).  A CAS from exactly val, so a late or
 * doubled release never frees a lease taken since (ABA: the generation).
 */
int	lease_put(_Atomic uint64_t *cells, uint32_t ncells, uint32_t cell,
	    uint64_t val);

/* Cells held now. */
uint32_t lease_count(_Atomic uint64_t *cells, uint32_t ncells);

/*
 * After freeing a lease: wake whoever sleeps on the limit.  Makes a
 * system call only when someone announced they sleep.
 */
void	lease_wake(struct seg_lstate *ls);

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
