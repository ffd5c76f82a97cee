/*
 * feedback.c: the broker's side of response feedback (DESIGN 3, 6).
 * Clients post what responses said into the state object; each tick the
 * broker turns it into config: the effective size of adaptive concurrency
 * limits (AIMD), and limits the server reports where a key learns them.
 * Everything read from the state object is a claim, checked before use.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>

#include "broker.h"
#include "lease.h"
#include "log.h"
#include "window.h"

/* A server limit outside this is a scribble, not a limit. */
#define LEARN_MAX	WIN_COUNT_MAX

/*
 * Adaptive concurrency: halve on a round of 429s (a tick with fresh ones:
 * clients leave out responses to requests sent before the last cut, so
 * one wall is one cut), else grow by one per run of successes as long as
 * the limit is now (additive increase, multiplicative decrease).
 */
static void
aimd(struct broker *b, uint32_t id, uint64_t now)
{
	struct lim_slot *l = &b->lims[id];
	struct seg_lstate *ls = &seg_lstates(&b->m)[id];
	uint64_t ok, limited, dok;
	uint32_t n = (uint32_t)l->spec.count, was;

	ok = atomic_load_explicit(&ls->fb_ok, memory_order_relaxed);
	limited = atomic_load_explicit(&ls->fb_limited, memory_order_relaxed);
	if (!l->aimd_on) {
		/*
		 * First sight of a limit the broker did not create (it
		 * restarted, or a reload made the limit adaptive): carry on
		 * where it stood.  A limit it created starts from zeroed
		 * counters instead (segment_publish), so that what clients
		 * posted before the first tick counts.
		 */
		was = atomic_load_explicit(&ls->eff, memory_order_relaxed);
		l->eff = was >= 1 && was <= n ? was : n;
		l->acc = 0;
		l->last_ok = ok;
		l->last_limited = limited;
		l->aimd_on = 1;
		atomic_store_explicit(&ls->eff, l->eff, memory_order_relaxed);
		return;
	}
	was = l->eff;
	if (l->eff == 0 || l->eff > n)
		l->eff = n;
	dok = ok - l->last_ok;
	if (limited != l->last_limited) {
		l->eff = l->eff > 1 ? l->eff / 2 : 1;
		l->acc = 0;
		atomic_store_explicit(&ls->cut_ns, now, memory_order_relaxed);
	} else if (l->eff < n) {
		/* A scribbled counter can only make it grow to n at once. */
		l->acc = dok > n * (uint64_t)n ? n * (uint64_t)n : l->acc + dok;
		while (l->eff < n && l->acc >= l->eff) {
			l->acc -= l->eff;
			l->eff++;
		}
	}
	if (l->eff == n)
		l->acc = 0;
	l->last_ok = ok;
	l->last_limited = limited;
	/* Rewritten each tick: a client's scribble lasts one tick at most. */
	if (atomic_load_explicit(&ls->eff, memory_order_relaxed) != l->eff)
		atomic_store_explicit(&ls->eff, l->eff, memory_order_relaxed);
	if (l->eff != was) {
		log_info("[%s] concurrency %" PRIu32 " of %" PRIu32 " (%s)",
		    b->keys[l->key].name, l->eff, n,
		    l->eff < was ? "429s: halved" : "successes: one more");
		/* Sleepers may fit now; a smaller limit wakes no one. */
		if (l->eff > was)
			lease_wake(ls);
	}
}

/*
 * A limit the server reports (x-ratelimit-limit-*) that differs from
 * ours: log it once per value; where the key learns, adopt it.  The
 * limit keeps its id and state: a TAT is time, a window counts units,
 * and both read the new count from the config copy the next take reads.
 */
static int
learned(struct broker *b, uint32_t id)
{
	struct lim_slot *l = &b->lims[id];
	struct seg_lstate *ls = &seg_lstates(&b->m)[id];
	char spec[96];
	uint64_t v;

	v = atomic_load_explicit(&ls->srv_limit, memory_order_relaxed);
	if (v == 0 || v == l->srv_seen)
		return 0;
	l->srv_seen = v;
	limit_format(&l->spec, spec, sizeof(spec));
	if (v > LEARN_MAX) {
		guard_count(&b->m, "server limit out of range", 1);
		return 0;
	}
	if (v == l->spec.count)
		return 0;
	if (!b->keys[l->key].learn) {
		log_info("[%s] limit `%s': the server says %" PRIu64 " (set "
		    "learn = yes to adopt it)", b->keys[l->key].name, spec, v);
		return 0;
	}
	log_info("[%s] limit `%s': adopting the server's %" PRIu64 " (config "
	    "says %" PRIu64 ")", b->keys[l->key].name, spec, v,
	    l->conf.count);
	/* A burst left to its default follows the count. */
	if (l->spec.burst == l->spec.count)
		l->spec.burst = v;
	l->spec.count = v;
	return 1;
}

void
feedback_tick(struct broker *b, uint64_t now)
{
	const struct seg_header *h = b->m.hdr;
	int republish = 0;

	for (uint32_t id = 0; id < h->max_limits; id++) {
		struct lim_slot *l = &b->lims[id];

		if (!l->used)
			continue;
		switch (l->spec.kind) {
		case LIM_CONC:
			if (l->spec.adaptive)
				aimd(b, id, now);
			else {
				l->aimd_on = 0;
				if (atomic_load_explicit(&seg_lstates(
				    &b->m)[id].eff, memory_order_relaxed))
					atomic_store_explicit(&seg_lstates(
					    &b->m)[id].eff, 0,
					    memory_order_relaxed);
			}
			break;
		case LIM_RATE:
		case LIM_WINDOW:
			republish |= learned(b, id);
			break;
		}
	}
	if (republish)
		segment_republish(b);
}
