/*
 * fed.h: private; federation: brokers on several hosts share the limits
 * of `scope = global' keys through one Redis (fed.c).  A thread of the
 * broker leases slices of each global limit's budget and feeds them to
 * the local limits; the workers' hot path does not change.
 */
#ifndef TG_FED_H
#define TG_FED_H

#include <stdint.h>

#include "broker.h"

/*
 * The defaults the over-admission bound is reckoned from (README, the
 * federation section; tollgate.conf(5)).  A slice of a rate limit lives
 * FED_LIFE_NS, holds at most FED_SMAX(count, period) units, and a broker
 * holds at most FED_SLICES of each limit at once.
 */
#define FED_LIFE_NS	UINT64_C(1000000000)	/* a slice's life: 1 s */
#define FED_SLICES	2			/* held at once, per limit */

struct fed;

/*
 * Start the federation thread for b's config, if it names a Redis (else
 * return NULL with *err 0).  Call after loop_init has blocked the
 * signals, so that the thread inherits the mask and never takes one.
 * NULL with *err a -errno on failure.
 */
struct fed *fed_start(struct broker *b, int *err);

/*
 * Take the config in force again (after a reload published it): which
 * keys are global, their ids and limits.  From the loop's thread; the
 * fed thread picks it up on its next pass.  NULL-safe.
 */
void	fed_configure(struct fed *f, struct broker *b);

/* Stop and join the thread, free everything.  NULL-safe. */
void	fed_stop(struct fed *f);

#endif /* TG_FED_H */
