/*
 * alt_mutex.c: the nginx way, a bucket in shared memory under a
 * process-shared lock: here a robust PTHREAD_PROCESS_SHARED mutex (a
 * holder that dies hands the next locker EOWNERDEAD, not a hang).  The
 * bucket is the same GCRA as the floor's, so the lock is the difference.
 */
#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdint.h>

#include "bench.h"

#define MUTEX_COST_NS	UINT64_C(1)
#define MUTEX_TAU_NS	UINT64_C(1000000000)

struct locked_bucket {
	alignas(64) pthread_mutex_t mu;
	uint64_t	tat_ns;		/* under mu */
};

static int
mutex_setup(void *arg, void **ctx)
{
	*ctx = arg;
	return 0;
}

static int
lock(struct locked_bucket *b)
{
	int e = pthread_mutex_lock(&b->mu);

	/* A holder died: its update is whole or not made; carry on. */
	if (e == EOWNERDEAD)
		e = pthread_mutex_consistent(&b->mu);
	return e;
}

static void
mutex_loop(void *ctx, const _Atomic uint32_t *stop, struct loop_out *out)
{
	struct locked_bucket *b = ctx;
	uint64_t n = 0, refused = 0, now, next;

	while (!atomic_load_explicit(stop, memory_order_relaxed)) {
		now = clock_ns();
		if (lock(b) != 0) {
			refused++;
			n++;
			continue;
		}
		next = (b->tat_ns > now ? b->tat_ns : now) + MUTEX_COST_NS;
		if (next - now > MUTEX_TAU_NS)
			refused++;
		else
			b->tat_ns = next;
		pthread_mutex_unlock(&b->mu);
		n++;
	}
	out->ops = n;
	out->refused = refused;
}

int
mutex_rows(struct results *res)
{
	struct locked_bucket *b;
	pthread_mutexattr_t at;
	struct row *r;
	int e;

	if ((r = row_add(res, "alt-mutex", "alt: GCRA under a robust pshared "
	    "pthread mutex")) == NULL)
		return 0;
	if ((b = shared_alloc(sizeof(*b))) == NULL) {
		r->skipped = "mmap failed";
		return -errno;
	}
	if ((e = pthread_mutexattr_init(&at)) != 0 ||
	    (e = pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED))
	    != 0 ||
	    (e = pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST)) != 0 ||
	    (e = pthread_mutex_init(&b->mu, &at)) != 0) {
		r->skipped = "pthread_mutex_init failed";
		return -e;
	}
	pthread_mutexattr_destroy(&at);
	r->arg = b;
	r->setup = mutex_setup;
	r->loop = mutex_loop;
	return 0;
}
