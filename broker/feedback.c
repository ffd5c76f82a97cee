/*
 * feedback.c: the broker's side of response feedback (DESIGN 3, 6).
 * Clients post what responses said into the state object; each tick the
 * broker turns it into config: the effective size of adaptive concurrency
 * limits (AIMD, with probes the server refused held off a while), limits
 * the server reports where a key learns them, and, where a key learns,
 * the rate (or window count) its 429s without server figures say it
 * really has.
 * Everything read from the state object is a claim, checked before use.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "gcra.h"
#include "lease.h"
#include "log.h"
#include "window.h"

/* A server limit outside this is a scribble, not a limit. */
#define LEARN_MAX	WIN_COUNT_MAX

/*
 * How long a level the server refused stays out of reach: an adaptive
 * concurrency limit does not probe past a refused probe for HOLD_NS; a
 * learned rate does not step up after a cut for RATE_HOLD_PERIODS of its
 * periods.  Short: a cut no lower than the server took is no guess to
 * hold on to, and a rate held under the server's for 30 s outlasts a
 * batch (a cut to 1/s of a server's 5/s did, before).  Then it climbs
 * back by a RATE_STEP_DIV-th of the config per period of successes.
 */
#define HOLD_NS			UINT64_C(30000000000)
#define RATE_HOLD_PERIODS	2
#define RATE_STEP_DIV		8
#define RATE_SAMPLES		64	/* grant counts kept per rate limit */

/*
 * What the broker keeps per limit id to learn from 429s: a ring of grant
 * counts (how fast the limit was really taken), the counters last read,
 * and the hold.  Its own, in this file: nothing here is shared with
 * clients.  A limit id that now holds another limit starts over.
 */
struct learn {
	uint8_t		on;
	uint8_t		kind;
	uint16_t	key;
	uint64_t	conf_count;
	uint64_t	period_ns;
	uint64_t	last_ok;
	uint64_t	last_limited;
	uint64_t	last_probe;
	uint64_t	changed_ns;	/* rate: last cut or step */
	uint64_t	ok_since;	/* rate: successes since then */
	uint64_t	hold_until_ns;
	uint32_t	hold_max;	/* conc: eff stays at or under it */
	uint32_t	nsamp;		/* samples in the ring */
	uint32_t	head;		/* next to write */
	uint8_t		fresh;		/* this tick: fresh 429s */
	uint64_t	achieved;	/* this tick: granted in a period */
	uint64_t	took;		/* this tick: successes, a period */
	uint64_t	samp_ns[RATE_SAMPLES];
	uint64_t	samp_n[RATE_SAMPLES];
	uint64_t	samp_ok[RATE_SAMPLES];	/* fb_ok then */
};

static struct learn *learns;
static uint32_t nlearns;

/* Limit id's learning state, fresh when the id holds another limit. */
static struct learn *
learn_of(struct broker *b, uint32_t id)
{
	const struct lim_slot *l = &b->lims[id];
	struct learn *r;

	if (learns == NULL || nlearns != b->m.hdr->max_limits) {
		free(learns);
		nlearns = 0;
		if ((learns = calloc(b->m.hdr->max_limits,
		    sizeof(*learns))) == NULL)
			return NULL;
		nlearns = b->m.hdr->max_limits;
	}
	r = &learns[id];
	if (!r->on || r->kind != l->spec.kind || r->key != l->key ||
	    r->conf_count != l->conf.count ||
	    r->period_ns != l->spec.period_ns) {
		memset(r, 0, sizeof(*r));
		r->on = 1;
		r->kind = l->spec.kind;
		r->key = l->key;
		r->conf_count = l->conf.count;
		r->period_ns = l->spec.period_ns;
	}
	return r;
}

/*
 * Adaptive concurrency: halve on a round of 429s (a tick with fresh ones:
 * clients leave out responses to requests sent before the last cut, so
 * one wall is one cut), else grow by one per run of successes as long as
 * the limit is now (additive increase, multiplicative decrease).  A level
 * it grew to is a probe (probe_from, the level it grew from): a 429 then,
 * which the library posts as the probe's (fb_probe) and pauses nothing
 * for, takes it back one level and holds it there HOLD_NS.
 */
static void
aimd(struct broker *b, uint32_t id, uint64_t now)
{
	struct lim_slot *l = &b->lims[id];
	struct seg_lstate *ls = &seg_lstates(&b->m)[id];
	struct learn *lr = learn_of(b, id);
	uint64_t ok, limited, probe, dok;
	uint32_t n = (uint32_t)l->spec.count, was, grew_from = 0, now_eff;
	int held = 0;

	if (lr == NULL)
		return;
	/* Relaxed, all: counters of the moment, checked below. */
	ok = atomic_load_explicit(&ls->fb_ok, memory_order_relaxed);
	limited = atomic_load_explicit(&ls->fb_limited, memory_order_relaxed);
	probe = atomic_load_explicit(&ls->fb_probe, memory_order_relaxed);
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
		lr->last_probe = probe;
		l->aimd_on = 1;
		atomic_store_explicit(&ls->eff, l->eff, memory_order_relaxed);
		atomic_store_explicit(&ls->probe_from, 0, memory_order_relaxed);
		return;
	}
	was = l->eff;
	if (l->eff == 0 || l->eff > n)
		l->eff = n;
	dok = ok - l->last_ok;
	/*
	 * Relaxed: a client that met a concurrency 429 halves eff itself
	 * (libclient/feedback.c, conc_cut), at once rather than here: a
	 * lower eff than ours is that cut, taken as ours.  A scribble can
	 * only lower it, as posting 429s could; successes raise it again.
	 */
	now_eff = atomic_load_explicit(&ls->eff, memory_order_relaxed);
	if (probe != lr->last_probe && l->eff > 1) {
		/* The rate limits were never paused: see the library. */
		l->eff--;
		if (now_eff >= 1 && now_eff < l->eff)
			l->eff = now_eff;	/* a client cut further */
		l->acc = 0;
		held = 1;
		lr->hold_max = l->eff;
		lr->hold_until_ns = now + HOLD_NS;
		atomic_store_explicit(&ls->cut_ns, now, memory_order_relaxed);
	} else if (now_eff >= 1 && now_eff < l->eff) {
		l->eff = now_eff;
		l->acc = 0;
	} else if (limited != l->last_limited) {
		l->eff = l->eff > 1 ? l->eff / 2 : 1;
		l->acc = 0;
		atomic_store_explicit(&ls->cut_ns, now, memory_order_relaxed);
	} else if (l->eff < n) {
		/* A scribbled counter can only make it grow to n at once. */
		l->acc = dok > n * (uint64_t)n ? n * (uint64_t)n : l->acc + dok;
		while (l->eff < n && l->acc >= l->eff &&
		    (now >= lr->hold_until_ns || l->eff < lr->hold_max)) {
			l->acc -= l->eff;
			grew_from = l->eff++;
		}
	}
	if (l->eff == n)
		l->acc = 0;
	l->last_ok = ok;
	l->last_limited = limited;
	lr->last_probe = probe;
	/* Relaxed: a value of the moment; clients read any one. */
	if (grew_from != 0)
		atomic_store_explicit(&ls->probe_from, grew_from,
		    memory_order_relaxed);
	else if (l->eff < was)
		atomic_store_explicit(&ls->probe_from, 0,
		    memory_order_relaxed);
	/* Rewritten each tick: a scribble up lasts one tick at most. */
	if (atomic_load_explicit(&ls->eff, memory_order_relaxed) != l->eff)
		atomic_store_explicit(&ls->eff, l->eff, memory_order_relaxed);
	if (l->eff != was) {
		log_info("[%s] concurrency %" PRIu32 " of %" PRIu32 " (%s)",
		    b->keys[l->key].name, l->eff, n,
		    l->eff > was ? "successes: one more" : held ?
		    "a probe refused: held a while" : "429s: halved");
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

/*
 * Record the grant count of rate limit id and its successes (fb_ok),
 * spaced so the ring spans at least its period, and set lr->achieved:
 * the units granted in the last period (in the history there is, when
 * that is shorter: an undercount, which errs towards the lower rate),
 * and lr->took: the successes in the same span, what the server took.
 */
static void
sample(struct broker *b, uint32_t id, struct learn *lr, uint64_t now)
{
	uint64_t sum, ok, gap, old_n = 0, old_ok = 0;
	uint32_t last, i, at;

	sum = seg_grant_sum(&b->m, (uint64_t)b->m.hdr->max_keys + id);
	/* Relaxed: a counter of the moment; a scribble is checked below. */
	ok = atomic_load_explicit(&seg_lstates(&b->m)[id].fb_ok,
	    memory_order_relaxed);
	gap = lr->period_ns / (RATE_SAMPLES - 1);
	last = (lr->head + RATE_SAMPLES - 1) % RATE_SAMPLES;
	if (lr->nsamp == 0 || now - lr->samp_ns[last] >= gap) {
		lr->samp_ns[lr->head] = now;
		lr->samp_n[lr->head] = sum;
		lr->samp_ok[lr->head] = ok;
		lr->head = (lr->head + 1) % RATE_SAMPLES;
		if (lr->nsamp < RATE_SAMPLES)
			lr->nsamp++;
	}
	/* The oldest sample within the period, else the oldest there is. */
	for (i = lr->nsamp; i > 0; i--) {
		at = (lr->head + RATE_SAMPLES - i) % RATE_SAMPLES;
		old_n = lr->samp_n[at];
		old_ok = lr->samp_ok[at];
		if (now - lr->samp_ns[at] <= lr->period_ns)
			break;
	}
	/* Counters only grow; one that fell was scribbled on. */
	lr->achieved = sum > old_n ? sum - old_n : 0;
	lr->took = ok > old_ok ? ok - old_ok : 0;
}

/* Put a learned count in force: the burst follows it if it is the count's. */
static void
set_count(struct lim_slot *l, uint64_t count)
{
	l->spec.count = count;
	if (l->conf.burst == l->conf.count)
		l->spec.burst = count;
	else
		l->spec.burst = l->conf.burst < count ? l->conf.burst : count;
}

/*
 * A rate limit of a key that learns, after sample(): read what clients
 * posted (successes, and fresh 429s of units the server gave no figures
 * of) and step up if it is due: one step, max(1, config / 8), per
 * period of successes without a 429, never past the config, and not
 * within the hold after a cut (additive increase).  Returns 1 if the
 * count changed.  The cut is rate_cut's, for the limits the 429s name.
 */
static int
rate_step(struct broker *b, uint32_t id, struct learn *lr, uint64_t now)
{
	struct lim_slot *l = &b->lims[id];
	struct seg_lstate *ls = &seg_lstates(&b->m)[id];
	uint64_t ok, limited, step;

	/* Relaxed: counters of the moment; a scribble steps once at most. */
	ok = atomic_load_explicit(&ls->fb_ok, memory_order_relaxed);
	limited = atomic_load_explicit(&ls->fb_limited, memory_order_relaxed);
	if (lr->changed_ns == 0) {
		lr->last_ok = ok;
		lr->last_limited = limited;
		lr->changed_ns = now;
	}
	lr->fresh = limited != lr->last_limited;
	/* A scribbled counter can only make it step once. */
	lr->ok_since += ok - lr->last_ok > 1 ? 1 : ok - lr->last_ok;
	lr->last_ok = ok;
	lr->last_limited = limited;
	if (lr->fresh || l->spec.count >= l->conf.count ||
	    now < lr->hold_until_ns || lr->ok_since == 0 ||
	    now - lr->changed_ns < l->spec.period_ns)
		return 0;
	step = l->conf.count / RATE_STEP_DIV > 1 ?
	    l->conf.count / RATE_STEP_DIV : 1;
	set_count(l, l->conf.count - l->spec.count > step ?
	    l->spec.count + step : l->conf.count);
	lr->changed_ns = now;
	lr->ok_since = 0;
	log_info("[%s] learned rate %" PRIu64 " %s (config %" PRIu64 "): "
	    "a period of successes, one step up", b->keys[l->key].name,
	    l->spec.count, unit_name(l->spec.unit), l->conf.count);
	return 1;
}

/*
 * A cut of rate limit id while its key is paused (the 429s that taught it
 * paused it): the bucket is empty at the pause's end at the new count,
 * not at the old one (a TAT is time, and the old one's bucket in time is
 * another), and waiters that reserved slots at the old pace since the
 * pause began take their places in line again (pause_set_ns: client.c,
 * tg_acquire), their charges dropped with the TAT they stacked on.
 * Relaxed, all: as the clients', the words guard no other data.
 */
static void
requeue(struct broker *b, uint32_t id, uint64_t now)
{
	const struct lim_slot *l = &b->lims[id];
	struct seg_kstate *ks = &seg_kstates(&b->m)[l->key];
	_Atomic uint64_t *tatp = &seg_lstates(&b->m)[id].tat_ns;
	uint64_t until, one, tau, set;

	until = atomic_load_explicit(&ks->paused_until_ns,
	    memory_order_relaxed);
	if (until <= now || until - now > l->spec.period_ns)
		return;		/* over, or not this cut's */
	one = gcra_cost_ns(1, l->spec.period_ns, l->spec.count);
	tau = gcra_tau_margin_ns(l->spec.burst, l->spec.period_ns,
	    l->spec.count, limit_margin_ns(&l->spec));
	if (tau < one)
		return;
	atomic_store_explicit(tatp, until + (tau - one), memory_order_relaxed);
	set = atomic_load_explicit(&ks->pause_set_ns, memory_order_relaxed);
	while (set < now && !atomic_compare_exchange_weak_explicit(
	    &ks->pause_set_ns, &set, now, memory_order_relaxed,
	    memory_order_relaxed))
		;
}

/*
 * 429s without server figures while the key's rate limit had room: the
 * config is above the server's real limit.  The cut falls on the limit of
 * the key most used in the last period (units granted over its count):
 * the one the server most likely enforces.  Its count drops to what the
 * server really took in the last period (its successes, not our grants:
 * those count the refused too, and cut by an eighth at a time, a round of
 * 429s and a lockout each), by an eighth at least, by half at most
 * (multiplicative decrease), never under 1; then it holds a while.  At
 * most half: the last period may hold a pause of our own, or begin before
 * the broker saw the limit, and undercount the real rate.
 */
static int
rate_cut(struct broker *b, uint32_t id, struct learn *lr, uint64_t now)
{
	struct lim_slot *l = &b->lims[id];
	uint64_t to, least, was = l->spec.count;
	unsigned __int128 theirs, ours;

	/* Another fresh limit of the key more used than this one takes it. */
	for (uint32_t x = 0; x < nlearns; x++) {
		const struct learn *o = &learns[x];

		if (x == id || !b->lims[x].used || !o->on || !o->fresh ||
		    (o->kind != LIM_RATE && o->kind != LIM_WINDOW) ||
		    b->lims[x].key != l->key)
			continue;
		theirs = (unsigned __int128)o->achieved * l->spec.count;
		ours = (unsigned __int128)lr->achieved * b->lims[x].spec.count;
		if (theirs > ours || (theirs == ours && x < id))
			return 0;
	}
	least = was / 8 > 1 ? was / 8 : 1;
	to = was > least ? was - least : 1;
	if (lr->took < to)
		to = lr->took > was / 2 ? lr->took : was / 2;
	if (to < 1)
		to = 1;
	set_count(l, to);
	if (l->spec.kind == LIM_RATE)
		requeue(b, id, now);
	lr->changed_ns = now;
	lr->ok_since = 0;
	lr->hold_until_ns = now + l->spec.period_ns * RATE_HOLD_PERIODS;
	/* Relaxed: a time clients compare their tickets with. */
	atomic_store_explicit(&seg_lstates(&b->m)[id].cut_ns, now,
	    memory_order_relaxed);
	log_info("[%s] learned rate %" PRIu64 " %s (config %" PRIu64 "): "
	    "429s with %" PRIu64 " taken of %" PRIu64 " granted in the last "
	    "period", b->keys[l->key].name, l->spec.count,
	    unit_name(l->spec.unit), l->conf.count, lr->took, lr->achieved);
	return to != was;
}

void
feedback_tick(struct broker *b, uint64_t now)
{
	const struct seg_header *h = b->m.hdr;
	struct learn *lr;
	int republish = 0;

	for (uint32_t id = 0; id < h->max_limits; id++) {
		struct lim_slot *l = &b->lims[id];

		if (!l->used)
			continue;
		switch (l->spec.kind) {
		case LIM_CONC:
			if (lim_adaptive(b, l))
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
			/* A window learns as a rate, per window period. */
			if (!b->keys[l->key].learn ||
			    (lr = learn_of(b, id)) == NULL)
				break;
			sample(b, id, lr, now);
			republish |= rate_step(b, id, lr, now);
			break;
		}
	}
	/* Cuts second: each needs the fresh 429s of its key's others. */
	for (uint32_t id = 0; id < nlearns && id < h->max_limits; id++) {
		lr = &learns[id];
		if (b->lims[id].used && lr->on && lr->fresh &&
		    (lr->kind == LIM_RATE || lr->kind == LIM_WINDOW) &&
		    b->keys[b->lims[id].key].learn)
			republish |= rate_cut(b, id, lr, now);
	}
	for (uint32_t id = 0; id < nlearns; id++)
		learns[id].fresh = 0;
	if (republish)
		segment_republish(b);
}
