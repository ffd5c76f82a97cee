/* clients.h: private; finding dead clients and reclaiming their slots. */
#ifndef TG_CLIENTS_H
#define TG_CLIENTS_H

#include <stdint.h>

#include "loop.h"
#include "seg.h"

struct clients;

/*
 * Track the client slots of the segment m, watching pidfds on loop (NULL:
 * none; the ticks alone find dead clients).  NULL if out of memory.
 */
struct clients *clients_new(const struct seg_map *m, struct loop *loop);
void	clients_free(struct clients *cs);

/* Every tick: reclaim every slot whose client is gone (now: host ns). */
void	clients_scan(struct clients *cs, uint64_t now);

/* A pidfd watched under (slot, gen) is readable: its process exited. */
void	clients_exited(struct clients *cs, uint32_t slot, uint32_t gen,
	    uint64_t now);

/*
 * Take slot away from the registration `owner' (an owner word as the
 * caller read it) and free what it held: its leases, grant stripe and
 * counters, then the slot.  Claimed first by a CAS to RECLAIMING, so a
 * slot that moved on since it was read (closed, claimed anew) is left
 * alone.  Returns 1 if it reclaimed, 0 if the slot had moved on.
 */
int	clients_reclaim(struct clients *cs, uint32_t slot, uint64_t owner,
	    const char *why);

#endif /* TG_CLIENTS_H */
