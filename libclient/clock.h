/* clock.h: private; tollgate's clocks: CLOCK_MONOTONIC ns, and the wall. */
#ifndef TG_CLOCK_H
#define TG_CLOCK_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/*
 * What this process's CLOCK_MONOTONIC reads ahead of the host's: the
 * offset of its time namespace (/proc/self/timens_offsets), 0 outside
 * one.  Set by clock_init; read by every now_ns.
 */
extern _Atomic int64_t clock_mono_off_ns __attribute__((visibility("hidden")));

/*
 * Read this process's time namespace offset, once per process (again
 * after a fork: an unshare(CLONE_NEWTIME) applies to children only).
 * Returns 0, or -errno when /proc cannot tell (the offset stays 0).
 */
int	clock_init(void) __attribute__((visibility("hidden")));

/*
 * CLOCK_MONOTONIC of the host, in ns: what every time in the segment is
 * counted in, whichever time namespace the reader runs in.  Through the
 * vDSO: no system call on any clock source the vDSO reads.
 */
static inline uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	/* Relaxed: set once by clock_init, before any time is shared. */
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec -
	    (uint64_t)atomic_load_explicit(&clock_mono_off_ns,
	    memory_order_relaxed);
}

/* CLOCK_REALTIME in ns, for dates in response headers; vDSO too. */
static inline uint64_t
wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec < 0 ? 0 :
	    (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline struct timespec
ns_to_timespec(uint64_t ns)
{
	struct timespec ts;

	ts.tv_sec = (time_t)(ns / 1000000000u);
	ts.tv_nsec = (long)(ns % 1000000000u);
	return ts;
}

#endif /* TG_CLOCK_H */
