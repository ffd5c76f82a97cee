/*
 * floors.c: what no shared limiter can beat, measured the same way: a
 * bare CAS loop on one shared word, clock_gettime(CLOCK_MONOTONIC), and a
 * GCRA written by hand on one shared word that reads the clock first (a
 * single-word CAS GCRA that never denies: the floor tg_try_acquire on
 * one rate limit is judged against).
 */
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "bench.h"

/* The bucket of the GCRA floor: 1e9 requests/s, a burst of 1e9. */
#define FLOOR_COST_NS	UINT64_C(1)
#define FLOOR_TAU_NS	UINT64_C(1000000000)

/* Each word alone on its line; the page is shared by fork. */
struct words {
	alignas(64) _Atomic uint64_t cas;
	alignas(64) _Atomic uint64_t tat;
};

static int
word_setup(void *arg, void **ctx)
{
	*ctx = arg;
	return 0;
}

/* Add one to the word with a CAS, retrying on failure. */
static void
cas_loop(void *ctx, const _Atomic uint32_t *stop, struct loop_out *out)
{
	_Atomic uint64_t *w = &((struct words *)ctx)->cas;
	uint64_t n = 0, retries = 0, v;

	while (!atomic_load_explicit(stop, memory_order_relaxed)) {
		v = atomic_load_explicit(w, memory_order_relaxed);
		while (!atomic_compare_exchange_weak_explicit(w, &v, v + 1,
		    memory_order_relaxed, memory_order_relaxed))
			retries++;
		n++;
	}
	out->ops = n;
	out->retries = retries;
}

/* Where the clock loop's results go, so the calls are not dropped. */
static volatile uint64_t clock_sink;

static void
clock_loop(void *ctx, const _Atomic uint32_t *stop, struct loop_out *out)
{
	struct timespec ts;
	uint64_t n = 0, sum = 0;

	(void)ctx;
	while (!atomic_load_explicit(stop, memory_order_relaxed)) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		sum += (uint64_t)ts.tv_nsec;
		n++;
	}
	out->ops = n;
	clock_sink = sum;
}

/*
 * The GCRA floor: clock first, then one CAS on the TAT, as gcra_reserve
 * does with max_wait 0, and nothing else.
 */
static void
gcra_loop(void *ctx, const _Atomic uint32_t *stop, struct loop_out *out)
{
	_Atomic uint64_t *tatp = &((struct words *)ctx)->tat;
	uint64_t n = 0, retries = 0, refused = 0, now, tat, next;

	while (!atomic_load_explicit(stop, memory_order_relaxed)) {
		now = clock_ns();
		tat = atomic_load_explicit(tatp, memory_order_relaxed);
		for (;;) {
			next = (tat > now ? tat : now) + FLOOR_COST_NS;
			if (next - now > FLOOR_TAU_NS) {
				refused++;
				break;
			}
			if (atomic_compare_exchange_weak_explicit(tatp, &tat,
			    next, memory_order_relaxed, memory_order_relaxed))
				break;
			retries++;
		}
		n++;
	}
	out->ops = n;
	out->retries = retries;
	out->refused = refused;
}

void
floors_rows(struct results *res)
{
	struct words *w = shared_alloc(sizeof(*w));
	struct row *r;

	if (w == NULL) {
		res->failed = "floors: mmap";
		return;
	}
	if ((r = row_add(res, "floor-cas", "floor: bare CAS on one shared "
	    "word")) != NULL) {
		r->arg = w;
		r->setup = word_setup;
		r->loop = cas_loop;
	}
	if ((r = row_add(res, "floor-clock", "floor: clock_gettime"
	    "(CLOCK_MONOTONIC)")) != NULL) {
		r->setup = word_setup;
		r->loop = clock_loop;
	}
	if ((r = row_add(res, "floor-gcra", "floor: hand-written GCRA, one "
	    "word, clock first")) != NULL) {
		r->arg = w;
		r->setup = word_setup;
		r->loop = gcra_loop;
	}
}
