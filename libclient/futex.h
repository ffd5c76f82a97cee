/* futex.h: private; futexes on shared memory (never FUTEX_PRIVATE_FLAG). */
#ifndef TG_FUTEX_H
#define TG_FUTEX_H

#include <linux/futex.h>
#include <sys/syscall.h>
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

/*
 * Sleep while *word == val, until woken or until the CLOCK_MONOTONIC
 * instant abs (NULL: no deadline).  Returns 0 when woken or when *word had
 * already changed, -ETIMEDOUT, or -EINTR.  FUTEX_WAIT_BITSET takes an
 * absolute time, so a wait cut short by a signal resumes to the same end.
 */
static inline int
futex_wait(_Atomic uint32_t *word, uint32_t val, const struct timespec *abs)
{
	if (syscall(SYS_futex, word, FUTEX_WAIT_BITSET, val, abs, NULL,
	    FUTEX_BITSET_MATCH_ANY) == 0)
		return 0;
	return errno == EAGAIN ? 0 : -errno;
}

/* Wake up to n sleepers on word; returns how many woke, or -errno. */
static inline int
futex_wake(_Atomic uint32_t *word, int n)
{
	long r = syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);

	return r < 0 ? -errno : (int)r;
}

#endif /* TG_FUTEX_H */
