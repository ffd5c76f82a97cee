/* client.c: libtollgate, the client API of include/tollgate.h. */
#include <sys/mman.h>
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tollgate.h"

#include "casstat.h"
#include "client.h"
#include "clock.h"
#include "futex.h"
#include "gcra.h"
#include "lease.h"
#include "seg.h"
#include "srvcap.h"
#include "window.h"

static const tg_cost one_request = { 1, 0, 0 };

/*
 * Copy the chain of key handle h out of the live config.  Returns 0,
 * -ESTALE (removed by a reload) or -EINVAL (never a handle).  Everything
 * read under the seqlock is range-checked before use, since a read that
 * overlaps a reload may be torn until seg_read_ok says otherwise.
 */
int
chain_read(const tg_client *c, uint32_t h, struct chain *ch)
{
	const struct seg_header *hdr = c->m.hdr;
	const struct seg_key *k;
	const struct seg_limit *lims, *l;
	struct seg_cfg *cfg;
	uint32_t seq, id = h & 0xffff;
	unsigned nconc;
	int r;

	if (id >= hdr->max_keys || (h >> 16) == 0)
		return -EINVAL;
	do {
		r = 0;
		nconc = 0;
		cfg = seg_read_begin(&c->m, &seq);
		k = &seg_keys(cfg)[id];
		lims = seg_limits(&c->m, cfg);
		ch->cfg_gen = cfg->gen;
		ch->key = (uint16_t)id;
		ch->kgen = (uint16_t)(h >> 16);
		ch->nlim = k->nchain;
		ch->nkey = k->depth;
		ch->flags = k->flags;
		ch->max_pause_ns = k->max_pause_ns;
		ch->backoff_min_ns = k->backoff_min_ns;
		ch->backoff_max_ns = k->backoff_max_ns;
		if (k->name[0] == '\0' || k->gen != (h >> 16)) {
			r = -ESTALE;
			continue;
		}
		if (ch->nlim > SEG_CHAIN_MAX || ch->nkey > SEG_DEPTH_MAX) {
			r = -EBADMSG;
			continue;
		}
		for (unsigned i = 0; i < ch->nkey; i++)
			ch->keys[i] = k->kchain[i] < hdr->max_keys ?
			    k->kchain[i] : (uint16_t)id;
		for (unsigned i = 0; i < ch->nlim && r == 0; i++) {
			struct lview *v = &ch->lim[i];

			if ((v->id = k->chain[i]) >= hdr->max_limits) {
				r = -EBADMSG;
				break;
			}
			l = &lims[v->id];
			v->kind = l->kind;
			v->unit = l->unit;
			v->flags = l->flags;
			v->key = l->key;
			v->cooldown_ns = l->cooldown_ns;
			v->cells = l->cells;
			v->ncells = l->ncells;
			v->count = l->count;
			v->period_ns = l->period_ns;
			v->burst = l->burst;
			v->tau_ns = l->tau_ns;
			v->unit_ns = 0;
			if ((uint64_t)v->cells + v->ncells > hdr->max_cells ||
			    (v->kind == LIM_WINDOW &&
			    (v->ncells != SEG_WIN_SLOTS || v->tau_ns == 0)))
				r = -EBADMSG;
			/* A ticket holds at most TK_LEASES leases. */
			if (v->kind == LIM_CONC && ++nconc > TK_LEASES)
				r = -EBADMSG;
		}
	} while (!seg_read_ok(cfg, seq));
	/* -EBADMSG from a read that was not torn: the broker is broken. */
	return r;
}

int
chain_get(tg_client *c, uint32_t h, struct chain *buf,
    const struct chain **out)
{
	struct seg_cfg *cfg;
	uint32_t seq;
	int r;

	*out = buf;
	/* In use by the call a signal handler interrupted: not for us. */
	if (!__libc_single_threaded || c->cache == NULL || c->cache_busy)
		return chain_read(c, h, buf);
	c->cache_busy = 1;
	atomic_signal_fence(memory_order_seq_cst);
	/* Acquire, both: as seg_read_begin. */
	cfg = seg_cfg(&c->m, atomic_load_explicit(&c->m.hdr->config_idx,
	    memory_order_acquire));
	seq = atomic_load_explicit(&cfg->seq, memory_order_acquire);
	*out = c->cache;
	if (c->cache_h == h && c->cache_cfg == cfg && c->cache_seq == seq &&
	    (seq & 1) == 0)
		return 0;
	/*
	 * Stamped with what was live before the read: a reload in between
	 * leaves a chain newer than its stamp, which the next call reads
	 * again, never one older.
	 */
	c->cache_h = 0;
	if ((r = chain_read(c, h, c->cache)) < 0) {
		chain_put(c, c->cache);
		return r;
	}
	/* Divide once per cached chain, not once per ticket. */
	for (unsigned i = 0; i < c->cache->nlim; i++)
		if (c->cache->lim[i].kind == LIM_RATE)
			c->cache->lim[i].unit_ns = gcra_cost_ns(1,
			    c->cache->lim[i].period_ns,
			    c->cache->lim[i].count);
	c->cache_h = h;
	c->cache_cfg = cfg;
	c->cache_seq = seq;
	return 0;
}

void
chain_put(tg_client *c, const struct chain *ch)
{
	if (ch == c->cache) {
		atomic_signal_fence(memory_order_seq_cst);
		c->cache_busy = 0;
	}
}

/*
 * Undo what take() did on lim[0..n) of ch at now; rcost[i] is what it
 * charged a rate limit lim[i], bit i of capped says lim[i]'s server cap
 * counted the units too.
 */
static void
untake(const tg_client *c, const struct chain *ch, unsigned n,
    const tg_cost *cost, const uint64_t *rcost, uint64_t now,
    const struct tk *tk, uint32_t capped)
{
	struct seg_lstate *ls = seg_lstates(&c->m);
	_Atomic uint64_t *cells = seg_cells(&c->m);
	unsigned nl = 0;

	for (unsigned i = 0; i < n; i++) {
		const struct lview *v = &ch->lim[i];
		uint64_t units = unit_cost(cost, v->unit);

		switch (v->kind) {
		case LIM_RATE:
			if (units)
				gcra_refund(&ls[v->id].tat_ns, rcost[i],
				    rcost[i], now, now);
			break;
		case LIM_WINDOW:
			if (units)
				win_undo(&cells[v->cells], now, v->tau_ns,
				    units);
			break;
		case LIM_CONC:
			lease_put(&cells[v->cells], v->ncells,
			    tk->lease[nl].cell, LEASE_VAL(tk->slot, tk->gen));
			lease_wake(&ls[v->id]);
			nl++;
			break;
		}
		if (capped & (1u << i))
			cap_untake(&ls[v->id].srv_cap, now, units);
	}
}

/* How long until limit v of a refused take could fit cost (0: a release). */
static uint64_t
peek(const tg_client *c, const struct lview *v, const tg_cost *cost,
    uint64_t now)
{
	struct seg_lstate *ls = &seg_lstates(&c->m)[v->id];
	uint64_t units = unit_cost(cost, v->unit), next, w, capw = 0;

	if (v->kind == LIM_CONC || units == 0)
		return 0;
	w = atomic_load_explicit(&ls->srv_cap, memory_order_relaxed);
	if (cap_live(w, now) && cap_left(w) < units)
		capw = cap_until_ns(w) - now;
	switch (v->kind) {
	case LIM_RATE:
		w = gcra_wait_ns(atomic_load_explicit(&ls->tat_ns,
		    memory_order_relaxed), now, gcra_cost_ns(units,
		    v->period_ns, v->count), v->tau_ns, &next);
		break;
	case LIM_WINDOW:
		w = win_retry(&seg_cells(&c->m)[v->cells], now, v->tau_ns,
		    v->count, units);
		break;
	default:
		w = 0;
	}
	return w > capw ? w : capw;
}

/*
 * Leases a concurrency limit allows now: its count (its cells may be
 * more, lease.h), fewer while adaptive cut it.
 */
static uint32_t
conc_allowed(const tg_client *c, const struct lview *v)
{
	uint32_t n, eff;

	n = v->count < v->ncells ? (uint32_t)v->count : v->ncells;
	if (!(v->flags & LIMIT_F_ADAPTIVE))
		return n;
	/* Relaxed: the broker's value of the moment; any one is fine. */
	eff = atomic_load_explicit(&seg_lstates(&c->m)[v->id].eff,
	    memory_order_relaxed);
	return eff == 0 || eff > n ? n : eff;
}

/*
 * take() and a reload: the config moved under the take (a lease found
 * its cells retired, or the config changed before the take ended).
 * Nothing is taken; read the config again.  Not a caller's error code.
 */
#define TAKE_STALE	(-EINPROGRESS)
#define STALE_PAUSE_NS	100000ull	/* for the broker to flip: 0.1 ms */

/*
 * Whether the live config is still the one ch was read from, after a
 * take that claimed leases.  It makes a take exact across a reload that
 * resizes a concurrency limit: if this load of the index comes before
 * the broker's flip in the seq_cst total order, so did our claims (they
 * precede it), and every taker that reads the new config counts them
 * (lease.c); if it comes after, we give the leases back and take again
 * under the new config.  Without it, a taker that read the old count
 * just before a shrink could claim after the flip and be admitted
 * against the old, larger count.
 */
static int
config_still(const tg_client *c, const struct chain *ch)
{
	struct seg_cfg *cfg;
	uint32_t seq;
	uint64_t gen;

	/* seq_cst: after our claims in S; pairs with the flip (segment.c). */
	cfg = seg_cfg(&c->m, atomic_load_explicit(&c->m.hdr->config_idx,
	    memory_order_seq_cst));
	/* Acquire: as seg_read_begin; a copy being written has moved on. */
	seq = atomic_load_explicit(&cfg->seq, memory_order_acquire);
	gen = cfg->gen;
	return (seq & 1) == 0 && seg_read_ok(cfg, seq) && gen == ch->cfg_gen;
}

/* Whether cost charges a window limit of ch. */
static int
chain_has_window(const struct chain *ch, const tg_cost *cost)
{
	for (unsigned i = 0; i < ch->nlim; i++)
		if (ch->lim[i].kind == LIM_WINDOW &&
		    unit_cost(cost, ch->lim[i].unit) > 0)
			return 1;
	return 0;
}

/*
 * After a pause that ended at end_ns, a concurrency limit of a chain
 * that no requests rate paces comes back gradually: one lease at the
 * end, one more every backoff minimum / N (N the limit), so that the
 * waiters of the pause leave one by one and not N at once into the
 * server that just refused.  A chain with a requests rate needs none:
 * the bucket a 429 left empty paces them (feedback.c).  Returns the
 * leases the ramp allows at at_ns, UINT32_MAX when it is over, and the
 * time of its next step in *next_ns.
 */
static uint32_t
conc_ramp(const struct chain *ch, const struct lview *v, uint64_t end_ns,
    uint64_t at_ns, uint64_t *next_ns)
{
	uint64_t step, k;

	if (end_ns == 0 || v->ncells <= 1)
		return UINT32_MAX;
	for (unsigned i = 0; i < ch->nlim; i++)
		if (ch->lim[i].kind == LIM_RATE &&
		    ch->lim[i].unit == UNIT_REQUESTS)
			return UINT32_MAX;
	step = (ch->backoff_min_ns != 0 ? ch->backoff_min_ns :
	    SEG_BACKOFF_MIN_NS) / v->ncells;
	if (step == 0 || at_ns < end_ns)
		k = 0;
	else if ((k = (at_ns - end_ns) / step) >= v->ncells - 1)
		return UINT32_MAX;
	*next_ns = end_ns + (k + 1) * step;
	return (uint32_t)k + 1;
}

/* A rate slot take() reserved: the TAT it left (0: none) and its cost. */
struct rslot {
	uint64_t	tat_ns;
	uint64_t	cost_ns;
};

/*
 * How a take stands to a handoff (lease.h): a tg_acquire that has not
 * slept leaves the lease to those a release just woke (HANDOFF_YIELD);
 * one that waited ends the handoff when it takes (HANDOFF_END); a take
 * that does not wait, tg_try_acquire's or tg_reserve's, takes what is
 * free and leaves the handoff on (HANDOFF_KEEP): a poll that ended it
 * let newcomers take a second freed lease before the woken.
 */
enum { HANDOFF_END, HANDOFF_YIELD, HANDOFF_KEEP };

/*
 * Take a lease of concurrency limit v of ch for tk at now, for a request
 * that goes at from (a pause that ended at end ramps it: conc_ramp);
 * yield: HANDOFF_*.
 * Returns 0 with the lease in tk; -EAGAIN with *w the ramp's next step,
 * or *blocked = v's id when it waits on a release; TAKE_STALE.
 */
static int
conc_take(tg_client *c, const struct chain *ch, const struct lview *v,
    uint64_t end, uint64_t from, uint64_t now, int yield, struct tk *tk,
    uint64_t *w, int *blocked)
{
	struct seg_lstate *ls = &seg_lstates(&c->m)[v->id];
	uint64_t next = 0;
	uint32_t allowed, ramp;
	int r;

	/* A release just woke sleepers: theirs first (lease.h). */
	if (yield == HANDOFF_YIELD && lease_yield(ls, now, &next)) {
		*blocked = v->id;
		return -EAGAIN;
	}

	if (tk->gen == 0) {
		/* Relaxed: the slot's own threads share it. */
		do
			tk->gen = atomic_fetch_add_explicit(&c->me->lease_gen,
			    1, memory_order_relaxed) + 1;
		while (tk->gen == 0);
	}
	allowed = conc_allowed(c, v);
	ramp = conc_ramp(ch, v, end, from, &next);
	r = lease_take(ls, &seg_cells(&c->m)[v->cells],
	    v->ncells, ramp < allowed ? ramp : allowed,
	    LEASE_VAL(c->slot, tk->gen), c->slot, &tk->lease[tk->nlease].cell);
	if (r == 0) {
		tk->lease[tk->nlease++].lim = v->id;
		if (yield == HANDOFF_END)
			lease_handed(ls);
	} else if (r == -ESTALE)
		r = TAKE_STALE;
	else if (ramp < allowed)
		/* The ramp's next step, not a release. */
		*w = next > now ? next - now : 1;
	else
		*blocked = v->id;
	return r;
}

/*
 * Take cost from every limit of ch at now, all or nothing, reserving rate
 * slots up to max_wait_ns ahead; yield: as conc_take.  Returns 0 with *wait_ns the wait for the
 * latest reserved slot (and, if rs is not NULL, rs[i] the slot of lim[i]),
 * or -EAGAIN with *wait_ns the time until it could fit (0: it waits on a
 * release of concurrency limit *blocked), -E2BIG, -ESHUTDOWN (a key of
 * the chain is drained), or TAKE_STALE.
 */
static int
take(tg_client *c, const struct chain *ch, const tg_cost *cost, uint64_t now,
    uint64_t max_wait_ns, int yield, struct tk *tk, uint64_t *wait_ns,
    int *blocked, struct rslot *rs)
{
	struct seg_kstate *ks = seg_kstates(&c->m);
	struct seg_lstate *ls = seg_lstates(&c->m);
	_Atomic uint64_t *cells = seg_cells(&c->m);
	uint64_t units, w, wait = 0, until, from, end = 0, tat;
	uint64_t rcost[SEG_CHAIN_MAX];
	uint32_t capped = 0;
	unsigned i;
	int r = 0;

	*blocked = -1;
	for (i = 0; i < ch->nlim; i++) {
		const struct lview *v = &ch->lim[i];

		units = unit_cost(cost, v->unit);
		/* A rate limit's cost in ns, once: the take and its undo. */
		rcost[i] = v->kind != LIM_RATE || units == 0 ? 0 :
		    units == 1 && v->unit_ns ? v->unit_ns :
		    gcra_cost_ns(units, v->period_ns, v->count);
		/*
		 * A cost within the burst may still never fit: its ns may
		 * overflow the bucket's (tau saturated) or the clock's 64
		 * bits.  -E2BIG, not -EAGAIN with a wait of 2^64 ns.
		 */
		if ((v->kind == LIM_RATE && (units > v->burst ||
		    gcra_never_fits(now, rcost[i], v->tau_ns))) ||
		    (v->kind == LIM_WINDOW && (units > v->count ||
		    units > WIN_COUNT_MAX)) ||
		    (v->kind == LIM_CONC && (v->ncells == 0 ||
		    v->count == 0)))
			return -E2BIG;
	}
	/*
	 * A drained key (tollctl drain) refuses; a paused one (the server
	 * said so) refuses until the pause ends.  Relaxed, both: a flag and
	 * a time that guard no other data, on the line every take reads.
	 */
	for (i = 0; i < ch->nkey; i++) {
		if (atomic_load_explicit(&ks[ch->keys[i]].drained,
		    memory_order_relaxed) != 0)
			return -ESHUTDOWN;
		until = atomic_load_explicit(&ks[ch->keys[i]].paused_until_ns,
		    memory_order_relaxed);
		if (until > now && until - now > wait)
			wait = until - now;
		if (until > end)
			end = until;	/* the last pause's end, even past */
	}
	/*
	 * A waiter (tg_acquire) reserves its rate slots from the pause's
	 * end, in the order waiters come, as it does outside a pause: a
	 * 429 left the bucket empty then (feedback.c), so they leave one by
	 * one at the rate, first come first served, not all at the end.
	 * Not with a window in the chain: it counts a take when it is
	 * made, and one made now for later would expire too soon.
	 */
	if (wait > 0 && (wait > max_wait_ns || chain_has_window(ch, cost))) {
		*wait_ns = wait;
		return -EAGAIN;
	}
	from = now + wait;
	tk->nlease = 0;
	tk->nresv = 0;
	tk->slot = (uint16_t)c->slot;
	tk->token = c->token;
	tk->gen = 0;
	for (i = 0; i < ch->nlim; i++) {
		const struct lview *v = &ch->lim[i];

		units = unit_cost(cost, v->unit);
		w = 0;
		if (v->kind != LIM_CONC && units > 0) {
			/* What the server said is left comes first. */
			if ((r = cap_take(&ls[v->id].srv_cap, now, units,
			    &w)) < 0)
				break;
			if (r > 0)
				capped |= 1u << i;
		}
		switch (v->kind) {
		case LIM_RATE:
			if (units == 0)
				continue;
			r = gcra_reserve_at(&ls[v->id].tat_ns, from, rcost[i],
			    v->tau_ns, max_wait_ns - (from - now), &w, &tat);
			w += from - now;
			if (r == 0 && rs != NULL) {
				rs[i].tat_ns = tat;
				rs[i].cost_ns = rcost[i];
			}
			break;
		case LIM_WINDOW:
			if (units == 0)
				continue;
			r = win_take(&cells[v->cells], now, v->tau_ns,
			    v->count, units, &w);
			break;
		case LIM_CONC:
			r = conc_take(c, ch, v, end, from, now, yield, tk,
			    &w, blocked);
			break;
		default:
			continue;
		}
		if (r < 0) {
			if (capped & (1u << i))
				cap_untake(&ls[v->id].srv_cap, now, units);
			break;
		}
		if (w > wait)
			wait = w;
	}
	if (r >= 0 && tk->nlease > 0 && !config_still(c, ch)) {
		untake(c, ch, ch->nlim, cost, rcost, now, tk, capped);
		return TAKE_STALE;
	}
	if (r >= 0) {
		*wait_ns = wait;
		return 0;
	}
	if (r == TAKE_STALE) {
		untake(c, ch, i, cost, rcost, now, tk, capped);
		return TAKE_STALE;
	}
	/* Refused by lim[i]: undo the others, then say when to come back. */
	atomic_fetch_add_explicit(&ls[ch->lim[i].id].denied, 1,
	    memory_order_relaxed);
	untake(c, ch, i, cost, rcost, now, tk, capped);
	for (unsigned j = i + 1; j < ch->nlim; j++) {
		uint64_t pw = peek(c, &ch->lim[j], cost, now);

		if (pw > w)
			w = pw;
	}
	*wait_ns = w;
	return -EAGAIN;
}

/* Fill the ticket and count the grant; take() filled the leases. */
static void
granted(tg_client *c, const struct chain *ch, const tg_cost *cost,
    uint64_t now, struct tk *tk)
{
	for (unsigned i = 0; i < ch->nlim; i++) {
		uint64_t units = ch->lim[i].kind == LIM_CONC ? 1 :
		    unit_cost(cost, ch->lim[i].unit);

		if (units)
			grant_count(c, &c->lgrants[ch->lim[i].id], units);
	}
	grant_count(c, &c->kgrants[ch->key], 1);
	slot_count(&c->me->acquired, 1);
	tk->key = ch->key;
	tk->kgen = ch->kgen;
	tk->now_ns = now;
	tk->cfg_gen = (uint32_t)ch->cfg_gen;
	tk->cost[UNIT_REQUESTS] = cost->requests;
	tk->cost[UNIT_TOKENS] = cost->tokens;
	tk->cost[UNIT_IMAGES] = cost->images;
	/* Release: a thread that sees TK_LIVE sees the fields above. */
	atomic_store_explicit(&tk->state, TK_LIVE, memory_order_release);
}

/*
 * A ticket given up: the caller's time ran out (-ETIMEDOUT).  Counted
 * for the key and the client; a "not now" (-EAGAIN) is a poll instead.
 */
static void
denied(tg_client *c, uint16_t key)
{
	atomic_fetch_add_explicit(&seg_kstates(&c->m)[key].denied, 1,
	    memory_order_relaxed);
	slot_count(&c->me->denied, 1);
}

/*
 * A "not now" (-EAGAIN) of tg_try_acquire or tg_reserve: a poll.  The
 * caller may come back and get the ticket, so it is no refusal: counted
 * apart, or a worker that polls would show a denial per try.
 */
static void
polled(tg_client *c)
{
	slot_count(&c->me->polls, 1);
}

/*
 * take() for the common shape, straight through: one rate limit whose
 * unit cost is known (a cached chain), one unit, no pause, no server
 * cap, and room now.  Returns 0 with the unit taken, or -EAGAIN having
 * taken nothing: take() then decides, refusal and wait included.
 */
static int
take_one_rate(tg_client *c, const struct chain *ch, uint64_t now,
    struct tk *tk)
{
	const struct lview *v = &ch->lim[0];
	struct seg_kstate *ks = seg_kstates(&c->m);
	struct seg_lstate *ls = &seg_lstates(&c->m)[v->id];
	uint64_t wait;

	/* The drain flag shares the pause's line: one more load, no miss. */
	for (unsigned i = 0; i < ch->nkey; i++)
		if (atomic_load_explicit(&ks[ch->keys[i]].paused_until_ns,
		    memory_order_relaxed) > now ||
		    atomic_load_explicit(&ks[ch->keys[i]].drained,
		    memory_order_relaxed) != 0)
			return -EAGAIN;
	if (atomic_load_explicit(&ls->srv_cap, memory_order_relaxed) != 0)
		return -EAGAIN;
	/* The one GCRA, no wait allowed; a refusal is take()'s to explain. */
	if (gcra_reserve(&ls->tat_ns, now, v->unit_ns, v->tau_ns, 0,
	    &wait) < 0)
		return -EAGAIN;
	tk->nlease = 0;
	tk->nresv = 0;
	tk->slot = (uint16_t)c->slot;
	tk->token = c->token;
	tk->gen = 0;
	return 0;
}

int
tg_try_acquire(tg_client *c, uint32_t key, const tg_cost *cost, tg_ticket *t,
    uint64_t *retry_in_ns)
{
	struct tk *tk = (struct tk *)t;
	const struct chain *ch;
	struct chain buf;
	uint64_t now, wait = 0;
	int r, blocked, tries = 0;

	if (c == NULL || t == NULL)
		return -EINVAL;
	if (!client_ours(c) && (r = client_refork(c)) < 0)
		return r;
	if (cost == NULL)
		cost = &one_request;
	/*
	 * The clock first: read between the TAT's load and its CAS, its
	 * ~25 ns would widen the window in which another process's CAS
	 * makes ours fail.
	 */
	now = now_ns();
	for (;;) {
		if ((r = chain_get(c, key, &buf, &ch)) < 0)
			return r;
		if (ch->nlim == 1 && ch->lim[0].kind == LIM_RATE &&
		    ch->lim[0].unit_ns != 0 && ch->lim[0].burst >= 1 &&
		    unit_cost(cost, ch->lim[0].unit) == 1 &&
		    take_one_rate(c, ch, now, tk) == 0)
			r = 0;
		else
			r = take(c, ch, cost, now, 0, HANDOFF_KEEP, tk, &wait,
			    &blocked, NULL);
		if (r != TAKE_STALE)
			break;
		/* A reload moved a limit: the new config, or come back. */
		if (++tries == 3) {
			r = -EAGAIN;
			wait = STALE_PAUSE_NS;
			break;
		}
		chain_put(c, ch);
	}
	if (r == 0)
		granted(c, ch, cost, now, tk);
	else if (r == -EAGAIN) {
		polled(c);
		if (retry_in_ns != NULL)
			*retry_in_ns = wait;
	} else if (r == -ESHUTDOWN)
		denied(c, ch->key);
	chain_put(c, ch);
	return r;
}

/* Sleep until the CLOCK_MONOTONIC instant until_ns, through signals. */
static void
sleep_until(uint64_t until_ns)
{
	struct timespec ts = ns_to_timespec(until_ns);

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
	    EINTR)
		;
}

/*
 * Whether one of the keys was paused after `since': a pause a waiter's
 * reserved slot did not know of, over or not (the slot was reckoned at
 * the pace before it).  Relaxed: as take(), the pause guards no other
 * data.
 */
static int
paused_since(tg_client *c, const uint16_t *keys, uint32_t nkey,
    uint64_t since)
{
	struct seg_kstate *ks = seg_kstates(&c->m);

	for (uint32_t i = 0; i < nkey; i++)
		if (atomic_load_explicit(&ks[keys[i]].pause_set_ns,
		    memory_order_relaxed) > since)
			return 1;
	return 0;
}

/*
 * A ticket that goes back unsent: a pause came after its slot was
 * reckoned (tg_acquire after its sleep, tg_ready's -ECANCELED), or it
 * timed out waiting for its leases.  Give back what it charged its rate
 * limits, as a settle to nothing would, but not to a bucket that a 429
 * emptied at the pause's end (feedback.c, empty_at): its stacked charges
 * space out the restart (gcra.h, gcra_refund_above).  Without it each
 * went through its charge twice: 4 Node.js processes behind one 429 lost
 * 8 estimates of 505 tokens to requests never sent.  Windows and the
 * server's counts keep their take, as a release before a reservation's
 * time leaves them.  The ticket then charges nothing, for a settle.
 */
static void
requeue_refund(tg_client *c, struct tk *tk)
{
	struct seg_kstate *ks = seg_kstates(&c->m);
	struct seg_lstate *ls = seg_lstates(&c->m);
	struct chain ch;
	uint64_t now, until = 0, u, ce, one, floor;

	if (chain_read(c, tk_handle(tk), &ch) < 0 ||
	    (uint32_t)ch.cfg_gen != tk->cfg_gen)
		return;		/* a refund to limits it never charged */
	now = now_ns();
	for (unsigned i = 0; i < ch.nkey; i++) {
		u = atomic_load_explicit(&ks[ch.keys[i]].paused_until_ns,
		    memory_order_relaxed);
		if (u > until)
			until = u;
	}
	for (unsigned i = 0; i < ch.nlim; i++) {
		const struct lview *v = &ch.lim[i];

		if (v->kind != LIM_RATE || tk->cost[v->unit] == 0)
			continue;
		ce = gcra_cost_ns(tk->cost[v->unit], v->period_ns, v->count);
		one = gcra_cost_ns(1, v->period_ns, v->count);
		floor = until == 0 || v->tau_ns < one ||
		    v->tau_ns - one > UINT64_MAX - until ? 0 :
		    until + (v->tau_ns - one);
		gcra_refund_above(&ls[v->id].tat_ns, ce, ce, tk->now_ns, now,
		    floor);
	}
	memset(tk->cost, 0, sizeof(tk->cost));
}

static void leases_put(tg_client *, const struct tk *);

/* Give back the leases tk holds, waking their sleepers; tk keeps none. */
static void
leases_drop(tg_client *c, struct tk *tk)
{
	leases_put(c, tk);
	tk->nlease = 0;
}

/*
 * The second half of a tg_acquire whose rate slot was ahead: its slot has
 * come (the ticket holds its other charges, granted at since), now its
 * leases, waiting on releases until deadline.  Returns 0 with them in tk;
 * -ETIMEDOUT; TAKE_STALE if the config changed or a key was paused since
 * (the slot was reckoned before it): the caller releases and starts over.
 */
static int
acquire_leases(tg_client *c, uint32_t key, struct tk *tk, uint64_t since,
    uint64_t deadline)
{
	struct seg_kstate *ks = seg_kstates(&c->m);
	struct seg_lstate *ls = seg_lstates(&c->m);
	const struct chain *ch;
	struct chain buf;
	struct timespec abs;
	uint64_t now, end, until, w;
	uint32_t seen = 0;
	int r, blocked, prepared = -1;

	for (;;) {
		if ((r = chain_get(c, key, &buf, &ch)) < 0)
			return r;
		if ((uint32_t)ch->cfg_gen != tk->cfg_gen ||
		    paused_since(c, ch->keys, ch->nkey, since)) {
			chain_put(c, ch);
			return TAKE_STALE;
		}
		now = now_ns();
		end = 0;
		for (unsigned i = 0; i < ch->nkey; i++) {
			until = atomic_load_explicit(
			    &ks[ch->keys[i]].paused_until_ns,
			    memory_order_relaxed);
			if (until > end)
				end = until;
		}
		r = 0;
		w = 0;
		blocked = -1;
		tk->nlease = 0;
		for (unsigned i = 0; i < ch->nlim && r == 0; i++)
			if (ch->lim[i].kind == LIM_CONC)
				r = conc_take(c, ch, &ch->lim[i], end, now,
				    now, HANDOFF_END, tk, &w, &blocked);
		if (r == 0 && config_still(c, ch)) {
			chain_put(c, ch);
			return 0;
		}
		leases_drop(c, tk);
		chain_put(c, ch);
		if (r == 0 || r == TAKE_STALE)
			return TAKE_STALE;
		if (w > 0) {
			/* The ramp's next step after a pause. */
			prepared = -1;
			sleep_until(now + w < deadline ? now + w : deadline);
		} else if (blocked >= 0 && prepared != blocked) {
			/* Announce the sleep, then try once more: lease.c. */
			seen = lease_wait_prepare(&ls[blocked]);
			prepared = blocked;
		} else if (blocked >= 0) {
			if (deadline != UINT64_MAX)
				abs = ns_to_timespec(deadline);
			(void)lease_wait(&ls[blocked], seen,
			    deadline == UINT64_MAX ? NULL : &abs);
			prepared = -1;
		}
		if (now_ns() >= deadline)
			return -ETIMEDOUT;
	}
}

/*
 * Sleep until the CLOCK_MONOTONIC instant until_ns, or until tollctl
 * acting on key (or an ancestor) bumps its ctl_wake from seen: a resume
 * or a drain must not find tg_acquire asleep for the rest of a pause.
 * Returns 1 if woken so, 0 at until_ns.  One system call, as the plain
 * sleep it replaces; a futex the kernel refuses (a seccomp filter) falls
 * back to that sleep.
 */
static int
ctl_sleep(tg_client *c, uint16_t key, uint32_t seen, uint64_t until_ns)
{
	_Atomic uint32_t *w = &seg_kstates(&c->m)[key].ctl_wake;
	struct timespec ts = ns_to_timespec(until_ns);
	int r;

	for (;;) {
		/* Acquire: pairs with the broker's release bump (ctl.c). */
		if (atomic_load_explicit(w, memory_order_acquire) != seen)
			return 1;
		if ((r = futex_wait(w, seen, &ts)) == -ETIMEDOUT)
			return 0;
		if (r < 0 && r != -EINTR) {
			sleep_until(until_ns);
			return 0;
		}
	}
}

int
tg_acquire(tg_client *c, uint32_t key, const tg_cost *cost,
    int64_t timeout_ns, tg_ticket *t)
{
	struct tk *tk = (struct tk *)t;
	struct seg_lstate *ls;
	struct timespec abs;
	const struct chain *ch;
	struct chain buf;
	uint64_t start, now, deadline, left, wait;
	uint16_t keys[SEG_DEPTH_MAX], kid;
	uint32_t seen = 0, nkey, cseen;
	uint64_t until, handoff;
	int r, blocked, prepared = -1, slept = 0, lazy, woken = 0;

	if (c == NULL || t == NULL)
		return -EINVAL;
	if (!client_ours(c) && (r = client_refork(c)) < 0)
		return r;
	if (cost == NULL)
		cost = &one_request;
	ls = seg_lstates(&c->m);
	start = now = now_ns();
	deadline = timeout_ns < 0 || (uint64_t)timeout_ns > UINT64_MAX - now ?
	    UINT64_MAX : now + (uint64_t)timeout_ns;
	for (;;) {
		/* Re-read each round: a reload may change the chain. */
		if ((r = chain_get(c, key, &buf, &ch)) < 0)
			return r;
		/*
		 * Before the take, acquire: a tollctl action that the take
		 * does not see yet has not bumped it yet either, and then
		 * ends the sleep below (ctl_sleep).
		 */
		cseen = atomic_load_explicit(&seg_kstates(&c->m)[ch->key].
		    ctl_wake, memory_order_acquire);
		left = deadline - now;
		r = take(c, ch, cost, now, left,
		    woken ? HANDOFF_END : HANDOFF_YIELD, tk, &wait, &blocked,
		    NULL);
		if (r == TAKE_STALE) {
			/* A reload moved a limit: again, once it flipped. */
			r = -EAGAIN;
			wait = STALE_PAUSE_NS;
		}
		if (r == 0) {
			/*
			 * A slot ahead: its leases are taken when it comes,
			 * not held idle through the sleep.  Held, they kept
			 * the waiters on a release out: a worker that
			 * released and asked again at once took its lease
			 * back before the sleeper the release woke could,
			 * and the same few workers went again and again
			 * (longest wait 3.2 s where first come first served
			 * gives 0.6 s).  Now the rate's slots, reserved in
			 * arrival order, decide who goes first.
			 */
			lazy = wait > 0 && tk->nlease > 0;
			if (lazy)
				leases_drop(c, tk);
			/*
			 * Stamped with when it may go, not when it was
			 * reserved: a response to it belongs to the rounds
			 * and cuts of that time (feedback.c).
			 */
			granted(c, ch, cost, now + wait, tk);
			nkey = ch->nkey;
			kid = ch->key;
			memcpy(keys, ch->keys, nkey * sizeof(keys[0]));
			chain_put(c, ch);
			if (wait == 0)
				break;
			/* A reserved slot: ours, in arrival order. */
			r = ctl_sleep(c, kid, cseen, now + wait);
			slept = 1;
			if (r == 0 && !paused_since(c, keys, nkey, now)) {
				if (!lazy)
					break;
				r = acquire_leases(c, key, tk, now, deadline);
				if (r == 0)
					break;
				requeue_refund(c, tk);
				tg_release(c, t);
				if (r == TAKE_STALE && now_ns() >= deadline)
					r = -ETIMEDOUT;
				if (r == -ETIMEDOUT)
					denied(c, tk->key);	/* given up */
				if (r != TAKE_STALE)
					return r;
				now = now_ns();
				continue;
			}
			/*
			 * A 429 paused the key while we slept: the server
			 * refused a slot like ours, and one reckoned at the
			 * pace before would go into the same wall (3 or 4
			 * more 429s a round, each a lockout, before).  Or
			 * tollctl acted on the key (a resume moved the
			 * pause and the line).  In line again, from the
			 * pause's end, its charge given back but where the
			 * 429 emptied the bucket.
			 */
			requeue_refund(c, tk);
			tg_release(c, t);
			now = now_ns();
			if (now >= deadline) {
				denied(c, tk->key);	/* given up */
				return -ETIMEDOUT;
			}
			continue;
		}
		if (r != -EAGAIN) {
			if (r == -ESHUTDOWN)
				denied(c, ch->key);
			chain_put(c, ch);
			return r;
		}
		if (wait > 0) {
			prepared = -1;
			if (wait > left) {
				/* It cannot come in time: say so now. */
				denied(c, ch->key);
				chain_put(c, ch);
				return -ETIMEDOUT;
			}
			(void)ctl_sleep(c, ch->key, cseen, now + wait);
			slept = 1;
		} else if (blocked >= 0 && prepared != blocked) {
			/* Announce the sleep, then try once more: lease.c. */
			seen = lease_wait_prepare(&ls[blocked]);
			prepared = blocked;
		} else if (blocked >= 0) {
			/*
			 * Until a release, or the end of a handoff we left to
			 * others (lease.h): then no longer a newcomer.  At
			 * most LEASE_HANDOFF_NS for a newcomer whatever it
			 * reads now: the woken may have ended the handoff
			 * since we yielded, leaving another lease free that
			 * no release will announce.
			 */
			until = deadline;
			if (!woken) {
				if (!lease_yield(&ls[blocked], now, &handoff))
					handoff = now + LEASE_HANDOFF_NS;
				if (handoff < until)
					until = handoff;
			}
			if (until != UINT64_MAX)
				abs = ns_to_timespec(until);
			(void)lease_wait(&ls[blocked], seen,
			    until == UINT64_MAX ? NULL : &abs);
			prepared = -1;
			slept = 1;
			woken = 1;
		}
		now = now_ns();
		if (now >= deadline)
			denied(c, ch->key);
		chain_put(c, ch);
		if (now >= deadline)
			return -ETIMEDOUT;
	}
	if (slept) {
		atomic_fetch_add_explicit(&c->me->waits, 1,
		    memory_order_relaxed);
		atomic_fetch_add_explicit(&c->me->wait_ns, now_ns() - start,
		    memory_order_relaxed);
	}
	return 0;
}

/*
 * Keep in tk the rate slots rs of a reservation that waits, for a release
 * before its time to give back: as many as the words the leases left
 * hold, in the order of the chain (the rest are spent if unused).
 */
static void
resv_keep(struct tk *tk, const struct chain *ch, const struct rslot *rs)
{
	unsigned n = 0;

	for (unsigned i = 0; i < ch->nlim; i++) {
		if (rs[i].tat_ns == 0 || rs[i].cost_ns > TK_RESV_COST_MAX)
			continue;
		if (tk->nlease + 2 * (n + 1) > TK_LEASES)
			break;
		tk->resv[TK_RESV_TAT(n)] = rs[i].tat_ns;
		tk->resv[TK_RESV_LIM(n)] = (uint64_t)ch->lim[i].id << 48 |
		    rs[i].cost_ns;
		n++;
	}
	tk->nresv = (uint8_t)n;
}

int
tg_reserve(tg_client *c, uint32_t key, const tg_cost *cost,
    int64_t timeout_ns, tg_ticket *t, uint64_t *valid_in_ns)
{
	struct tk *tk = (struct tk *)t;
	struct rslot rs[SEG_CHAIN_MAX];
	const struct chain *ch;
	struct chain buf;
	uint64_t now, left, wait = 0;
	int r, blocked, tries = 0;

	if (c == NULL || t == NULL || valid_in_ns == NULL)
		return -EINVAL;
	if (!client_ours(c) && (r = client_refork(c)) < 0)
		return r;
	if (cost == NULL)
		cost = &one_request;
	now = now_ns();
	/* As tg_acquire's first round: how far ahead a slot may be. */
	left = timeout_ns < 0 || (uint64_t)timeout_ns > UINT64_MAX - now ?
	    UINT64_MAX - now : (uint64_t)timeout_ns;
	for (;;) {
		if ((r = chain_get(c, key, &buf, &ch)) < 0)
			return r;
		/* Again each round: an undone take may have filled some. */
		memset(rs, 0, sizeof(rs));
		r = take(c, ch, cost, now, left, HANDOFF_KEEP, tk, &wait,
		    &blocked, rs);
		if (r != TAKE_STALE)
			break;
		/* A reload moved a limit: the new config, or come back. */
		if (++tries == 3) {
			r = -EAGAIN;
			wait = STALE_PAUSE_NS;
			break;
		}
		chain_put(c, ch);
	}
	if (r == 0) {
		/* Valid from the latest slot; only a wait has slots to keep. */
		if (wait > 0)
			resv_keep(tk, ch, rs);
		if (tk->nlease + 2 * tk->nresv + 1 <= TK_LEASES)
			tk->resv[TK_RESV_SINCE(tk->nresv)] = wait > 0 ? now : 0;
		granted(c, ch, cost, now + wait, tk);
		if (wait > 0) {
			/*
			 * A wait, as tg_acquire counts one, though the
			 * caller does the sleeping.  Relaxed: counters for
			 * tollstat, which order nothing.
			 */
			atomic_fetch_add_explicit(&c->me->waits, 1,
			    memory_order_relaxed);
			atomic_fetch_add_explicit(&c->me->wait_ns, wait,
			    memory_order_relaxed);
		}
		*valid_in_ns = wait;
	} else if (r == -EAGAIN) {
		/*
		 * A slot too far (tg_acquire's -ETIMEDOUT), or a limit that
		 * cannot be reserved ahead: a lease (wait 0), a window, a
		 * server's cap, a concurrency limit's return after a pause.
		 */
		if (wait > left) {
			denied(c, ch->key);
			r = -ETIMEDOUT;
		} else
			polled(c);
		*valid_in_ns = wait;
	} else if (r == -ESHUTDOWN)
		denied(c, ch->key);
	chain_put(c, ch);
	return r;
}

int
tg_ready(tg_client *c, tg_ticket *t, uint64_t *retry_in_ns)
{
	const struct tk *tk = (const struct tk *)t;
	struct seg_kstate *ks;
	struct chain ch;
	uint64_t now, until, since = 0, left = 0;
	int paused = 0;

	if (c == NULL || t == NULL || retry_in_ns == NULL ||
	    atomic_load_explicit(&tk->state, memory_order_acquire) != TK_LIVE)
		return -EINVAL;
	*retry_in_ns = 0;
	now = now_ns();
	if (now < tk->now_ns) {
		*retry_in_ns = tk->now_ns - now;
		return -EAGAIN;
	}
	if (chain_read(c, tk_handle(tk), &ch) < 0)
		return 0;	/* its key is gone: nothing to wait for */
	if (tk->nlease + 2 * tk->nresv + 1 <= TK_LEASES)
		since = tk->resv[TK_RESV_SINCE(tk->nresv)];
	ks = seg_kstates(&c->m);
	for (unsigned i = 0; i < ch.nkey; i++) {
		until = atomic_load_explicit(&ks[ch.keys[i]].paused_until_ns,
		    memory_order_relaxed);
		if (until > now) {
			paused = 1;
			if (until - now > left)
				left = until - now;
		}
	}
	/*
	 * A pause on now, or one set since the reservation (when the
	 * ticket had room to keep its time; else a pause on now is all
	 * that tells): the slot was reckoned at the pace before the
	 * server said no, as tg_acquire's after its sleep.
	 */
	if (paused || (since != 0 && paused_since(c, ch.keys, ch.nkey,
	    since))) {
		requeue_refund(c, (struct tk *)t);
		*retry_in_ns = left;
		return -ECANCELED;
	}
	return 0;
}

/*
 * Give back the rate slots a reservation kept in tk, released before its
 * time: the request was never made.  Only under the config it was taken
 * in, where the ids still name those limits, and each only while it is
 * the last slot of its limit (gcra_unreserve).
 */
static void
resv_return(tg_client *c, const struct tk *tk)
{
	struct seg_lstate *ls = seg_lstates(&c->m);
	struct chain ch;
	uint64_t w;
	unsigned id;

	if (now_ns() >= tk->now_ns || chain_read(c, tk_handle(tk), &ch) < 0 ||
	    (uint32_t)ch.cfg_gen != tk->cfg_gen)
		return;
	for (unsigned j = 0; j < tk->nresv && 2 * (j + 1) <= TK_LEASES; j++) {
		w = tk->resv[TK_RESV_LIM(j)];
		if ((id = (unsigned)(w >> 48)) < c->m.hdr->max_limits)
			(void)gcra_unreserve(&ls[id].tat_ns,
			    tk->resv[TK_RESV_TAT(j)], w & TK_RESV_COST_MAX);
	}
}

/*
 * Free the leases of tk, reading where they live from the live config:
 * in its cells, else in those a reload just moved it from (seg.h).
 */
static void
leases_put(tg_client *c, const struct tk *tk)
{
	const struct seg_limit *l;
	struct seg_cfg *cfg;
	uint32_t seq, cells[TK_LEASES][2], ncells[TK_LEASES][2];
	unsigned n = tk->nlease < TK_LEASES ? tk->nlease : TK_LEASES;
	uint64_t val = LEASE_VAL(tk->slot, tk->gen);
	int freed;

	do {
		cfg = seg_read_begin(&c->m, &seq);
		for (unsigned i = 0; i < n; i++) {
			cells[i][0] = ncells[i][0] = 0;
			cells[i][1] = ncells[i][1] = 0;
			if (tk->lease[i].lim >= c->m.hdr->max_limits)
				continue;
			l = &seg_limits(&c->m, cfg)[tk->lease[i].lim];
			if (l->kind != LIM_CONC)
				continue;
			cells[i][0] = l->cells;
			ncells[i][0] = l->ncells;
			cells[i][1] = l->was_cells;
			ncells[i][1] = l->was_ncells;
		}
	} while (!seg_read_ok(cfg, seq));
	for (unsigned i = 0; i < n; i++) {
		freed = 0;
		for (int w = 0; w < 2 && !freed; w++)
			if (ncells[i][w] != 0 && (uint64_t)cells[i][w] +
			    ncells[i][w] <= c->m.hdr->max_cells)
				freed = lease_put(&seg_cells(&c->m)[
				    cells[i][w]], ncells[i][w],
				    tk->lease[i].cell, val);
		if (freed)
			lease_wake(&seg_lstates(&c->m)[tk->lease[i].lim]);
	}
}

void
tg_release(tg_client *c, tg_ticket *t)
{
	struct tk *tk = (struct tk *)t;

	if (c == NULL || t == NULL)
		return;
	/*
	 * SPENT, not empty: tg_observe and tg_settle may still come after.
	 * Acquire: pairs with granted()'s release, for the fields below.
	 */
	if (atomic_load_explicit(&tk->state, memory_order_acquire) != TK_LIVE)
		return;
	/*
	 * Inherited across fork: the parent's leases, which only the parent
	 * gives back.  Our copy of the ticket is spent; theirs is not.
	 */
	if (!tk_ours(c, tk)) {
		atomic_store_explicit(&tk->state, TK_SPENT,
		    memory_order_relaxed);
		return;
	}
	if (tk->nlease > 0 || tk->nresv > 0) {
		/* CAS: of two racing releases of one ticket, one puts. */
		if (!atomic_compare_exchange_strong_explicit(&tk->state,
		    &(uint32_t){ TK_LIVE }, TK_SPENT, memory_order_relaxed,
		    memory_order_relaxed))
			return;
		if (tk->nresv > 0)
			resv_return(c, tk);
		if (tk->nlease > 0)
			leases_put(c, tk);
	} else {
		/*
		 * Nothing to give back: a store, not a locked CAS, on the
		 * path every rate-limited ticket takes.  Two racing releases
		 * (a caller's bug) would count it released twice, no more.
		 */
		atomic_store_explicit(&tk->state, TK_SPENT,
		    memory_order_relaxed);
	}
	slot_count(&c->me->released, 1);
}

int
tg_key(tg_client *c, const char *name, uint32_t *key)
{
	const struct seg_key *k;
	struct seg_cfg *cfg;
	uint32_t seq, found;

	if (c == NULL || name == NULL || key == NULL)
		return -EINVAL;
	if (strlen(name) >= SEG_NAME_MAX)
		return -ENOENT;
	do {
		found = 0;
		cfg = seg_read_begin(&c->m, &seq);
		k = seg_keys(cfg);
		for (uint32_t i = 0; i < c->m.hdr->max_keys; i++)
			if (k[i].gen != 0 && strncmp(k[i].name, name,
			    SEG_NAME_MAX) == 0) {
				found = i | (uint32_t)k[i].gen << 16;
				break;
			}
	} while (!seg_read_ok(cfg, seq));
	if (found == 0)
		return -ENOENT;
	*key = found;
	return 0;
}

/* A grant stripe of our own if one is free, else the shared stripe 0. */
static void
stripe_claim(tg_client *c)
{
	struct seg_state *st = (struct seg_state *)c->m.state;
	uint32_t s, expect;

	c->stripe = 0;
	for (uint32_t k = 0; k < SEG_STRIPES - 1; k++) {
		/* Start where the slot says: fewer CAS on a busy array. */
		s = 1 + (c->slot + k) % (SEG_STRIPES - 1);
		expect = 0;
		/*
		 * acq_rel: acquire the last owner's counts; release our LIVE
		 * slot to the broker's guard, which reads the stripe's owner,
		 * then the slot.
		 */
		if (atomic_load_explicit(&st->stripe_owner[s],
		    memory_order_relaxed) == 0 &&
		    atomic_compare_exchange_strong_explicit(
		    &st->stripe_owner[s], &expect, c->slot + 1,
		    memory_order_acq_rel, memory_order_relaxed)) {
			c->stripe = s;
			break;
		}
	}
	c->kgrants = seg_grants(&c->m, c->stripe);
	c->lgrants = c->kgrants + c->m.hdr->max_keys;
}

/* The inode of this process's PID namespace, for tollstat; 0 unknown. */
static uint64_t
pid_ns_ino(void)
{
	struct stat st;

	return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/*
 * Claim a free client slot for this process: CLAIMING under a fresh
 * token, then the slot's liveness lock (seg.h), then LIVE.  The lock is
 * held before LIVE is, so a broker that sees LIVE and no lock knows the
 * process is gone.  Returns 0, -ENOSPC, or -errno of the lock.
 */
static int
slot_claim(tg_client *c)
{
	struct seg_client *cl = seg_clients(&c->m);
	uint32_t n = c->m.hdr->max_clients, i, tok;
	uint64_t expect, ns = pid_ns_ino();
	int r;

	for (uint32_t k = 0; k < n; k++) {
		i = ((uint32_t)c->pid + k) % n;
		if (atomic_load_explicit(&cl[i].owner, memory_order_relaxed))
			continue;
		/* Relaxed: the CAS below is what makes the token ours. */
		do
			tok = atomic_fetch_add_explicit(&cl[i].claims, 1,
			    memory_order_relaxed) + 1;
		while (tok == 0);
		expect = 0;
		/*
		 * Acquire: what the slot's last owner and the broker's
		 * reclaim wrote (its counters, zeroed) is seen before ours.
		 */
		if (!atomic_compare_exchange_strong_explicit(&cl[i].owner,
		    &expect, CLIENT_OWNER(CLIENT_CLAIMING, tok),
		    memory_order_acq_rel, memory_order_relaxed))
			continue;
		/*
		 * Dying between the CAS and the lock leaves CLAIMING with no
		 * lock: the broker frees it after a grace period.  A lock we
		 * cannot take belongs to a process that still holds an old
		 * registration of the slot open (a bug, or a file we did not
		 * close): leave the slot alone.
		 */
		if ((r = seg_slot_lock(c->lock_fd, i)) < 0) {
			expect = CLIENT_OWNER(CLIENT_CLAIMING, tok);
			atomic_compare_exchange_strong_explicit(&cl[i].owner,
			    &expect, 0, memory_order_release,
			    memory_order_relaxed);
			if (r == -EAGAIN)
				continue;
			return r;
		}
		atomic_store_explicit(&cl[i].pid, c->pid,
		    memory_order_relaxed);
		atomic_store_explicit(&cl[i].pid_ns, ns, memory_order_relaxed);
		/*
		 * Release: whoever sees LIVE sees pid and pid_ns.  A CAS, not
		 * a store: a broker that judged us dead while we were slow
		 * may have freed the slot; then claim another.
		 */
		expect = CLIENT_OWNER(CLIENT_CLAIMING, tok);
		if (!atomic_compare_exchange_strong_explicit(&cl[i].owner,
		    &expect, CLIENT_OWNER(CLIENT_LIVE, tok),
		    memory_order_release, memory_order_relaxed)) {
			seg_slot_unlock(c->lock_fd, i);
			continue;
		}
		c->slot = i;
		c->token = tok;
		c->me = &cl[i];
		stripe_claim(c);
		return 0;
	}
	return -ENOSPC;
}

/*
 * Fork.  A child inherits the client's memory and descriptors, and with
 * them the open file that holds the parent's liveness lock: the parent's
 * slot would look alive while the child lives.  So the child closes its
 * copy at once (pthread_atfork), and on its first use of the client
 * registers a slot of its own.  Tickets it inherited stay the parent's:
 * released or settled in the child they do nothing.  The clients of the
 * process are listed for the handler.
 *
 * The lock is taken on an open file of its own, lock_fd, never mapped: a
 * mapping holds a reference to the open file it was made from, which the
 * child inherits with the mapping and cannot drop without losing it, and
 * an OFD lock lasts as long as any reference to its open file.
 */
static pthread_mutex_t clients_mu = PTHREAD_MUTEX_INITIALIZER;
static tg_client *clients;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
atfork_prepare(void)
{
	pthread_mutex_lock(&clients_mu);
}

static void
atfork_parent(void)
{
	pthread_mutex_unlock(&clients_mu);
}

/* In the child, which has one thread: no lock is held by anyone else. */
static void
atfork_child(void)
{
	for (tg_client *c = clients; c != NULL; c = c->next) {
		if (c->lock_fd >= 0)
			close(c->lock_fd);
		c->lock_fd = -1;
		pthread_mutex_init(&c->reg_mu, NULL);
	}
	pthread_mutex_init(&clients_mu, NULL);
}

static void
atfork_install(void)
{
	(void)pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static void
clients_add(tg_client *c)
{
	pthread_mutex_lock(&clients_mu);
	c->next = clients;
	clients = c;
	pthread_mutex_unlock(&clients_mu);
}

static void
clients_remove(tg_client *c)
{
	pthread_mutex_lock(&clients_mu);
	for (tg_client **p = &clients; *p != NULL; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			break;
		}
	pthread_mutex_unlock(&clients_mu);
}

/* Whether two descriptors are of one file (the same shm object). */
static int
same_file(int a, int b)
{
	struct stat sa, sb;

	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 &&
	    sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/*
 * The state object opened anew for our lock: shm_open gives a new open
 * file, whose lock is ours alone.  It must be the very object we map: a
 * broker --reset in between made another.
 */
static int
lock_open(tg_client *c)
{
	char conf[256], state[256];
	struct stat st;
	int fd, r;

	if ((r = seg_names(c->segment, conf, state, sizeof(conf))) < 0)
		return r;
	if ((fd = shm_open(state, O_RDWR | O_CLOEXEC, 0)) < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || (size_t)st.st_size != c->m.state_size ||
	    (c->m.state_fd >= 0 && !same_file(fd, c->m.state_fd))) {
		close(fd);
		return -ESTALE;
	}
	c->lock_fd = fd;
	return 0;
}

/* The time namespace check of tg_open; 0 or -EXDEV. */
static int
clock_check(const tg_client *c, int known)
{
	uint64_t hb, now = now_ns();

	/* Relaxed: one reading of a clock; nothing else hangs on it. */
	hb = atomic_load_explicit(&c->m.hdr->heartbeat_ns,
	    memory_order_relaxed);
	/*
	 * The broker's heartbeat is the host's clock a tick ago: ahead of
	 * ours, our clock runs behind the host's.  Without the offset from
	 * /proc, a clock ahead looks like a broker long gone: refuse what
	 * cannot be told apart.
	 */
	if (hb > now + 1000000000u)
		return -EXDEV;
	if (!known && hb != 0 && now - hb > 10000000000u)
		return -EXDEV;
	return 0;
}

int
client_refork(tg_client *c)
{
	int r = 0;

	pthread_mutex_lock(&c->reg_mu);
	/* Relaxed: under reg_mu, which the thread that did it released. */
	if (atomic_load_explicit(&c->guard->token, memory_order_relaxed) != 0)
		goto out;	/* another thread of the child did it */
	/* Not closed by the handler: a child made without fork(). */
	if (c->lock_fd >= 0)
		close(c->lock_fd);
	c->lock_fd = -1;
	c->pid = getpid();
	atomic_store_explicit(&c->rnd, now_ns() ^ (uint64_t)c->pid << 32,
	    memory_order_relaxed);
	if ((r = clock_check(c, clock_init() == 0)) < 0 ||
	    (r = lock_open(c)) < 0 || (r = slot_claim(c)) < 0)
		goto out;
	/* Release: threads that see the token see the registration. */
	atomic_store_explicit(&c->guard->token, c->token,
	    memory_order_release);
out:
	pthread_mutex_unlock(&c->reg_mu);
	return r;
}

int
tg_open(const char *segment, tg_client **out)
{
	tg_client *c;
	void *g;
	int r, known;

	if (out == NULL)
		return -EINVAL;
	if ((r = pthread_once(&atfork_once, atfork_install)) != 0)
		return -r;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return -ENOMEM;
	c->lock_fd = -1;
	if (segment == NULL)
		segment = seg_default();
	c->segment = strdup(segment);
	c->cache = malloc(sizeof(*c->cache));	/* none: chain_get reads */
	g = mmap(NULL, sizeof(*c->guard), PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (c->segment == NULL || g == MAP_FAILED) {
		r = -ENOMEM;
		goto out_free;
	}
	c->guard = g;
	if (madvise(g, sizeof(*c->guard), MADV_WIPEONFORK) < 0) {
		r = -errno;
		goto out_unmap;
	}
	pthread_mutex_init(&c->reg_mu, NULL);
	known = clock_init() == 0;
	if ((r = seg_attach(segment, 1, &c->m)) < 0)
		goto out_unmap;
	if ((r = clock_check(c, known)) < 0)
		goto out_detach;
	c->pid = getpid();
	atomic_init(&c->rnd, now_ns() ^ (uint64_t)c->pid << 32);
	if ((r = lock_open(c)) < 0)
		goto out_detach;
	if ((r = slot_claim(c)) < 0)
		goto out_close;
	/* Relaxed: c is not shared yet; tg_open's return publishes it. */
	atomic_store_explicit(&c->guard->token, c->token,
	    memory_order_relaxed);
	clients_add(c);
	*out = c;
	return 0;

out_close:
	close(c->lock_fd);
out_detach:
	seg_detach(&c->m);
out_unmap:
	munmap(c->guard, sizeof(*c->guard));
out_free:
	free(c->segment);
	free(c->cache);
	free(c);
	return r;
}

void
tg_close(tg_client *c)
{
	uint64_t mine;

	if (c == NULL)
		return;
	clients_remove(c);
	/*
	 * In a child that never used it, the slot and its leases are the
	 * parent's: leave them, and only let go of our copies.
	 */
	if (client_ours(c)) {
		(void)lease_drop_slot(&c->m, c->slot);
		seg_stripe_free(&c->m, c->slot);
		c->stripe = 0;
		/*
		 * Release: the slot's counters are final before it is free.
		 * A CAS: a broker that reclaimed the slot may have handed it
		 * on.  Free first, unlock after (closing lock_fd): a LIVE
		 * slot is never seen without its lock.
		 */
		mine = CLIENT_OWNER(CLIENT_LIVE, c->token);
		atomic_compare_exchange_strong_explicit(&c->me->owner, &mine,
		    0, memory_order_release, memory_order_relaxed);
	}
	if (c->lock_fd >= 0)
		close(c->lock_fd);
	seg_detach(&c->m);
	munmap(c->guard, sizeof(*c->guard));
	pthread_mutex_destroy(&c->reg_mu);
	free(c->segment);
	free(c->cache);
	free(c);
}

const char *
tg_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
	case -ENOENT:
		/* One code for both: tg_open's is the segment, tg_key's a key. */
		return "no such segment (from tg_open: no broker made it, or "
		    "another name) or key (from tg_key: not in the broker's "
		    "config)";
	case -EAGAIN:
		return "not now: the limit is spent, retry later";
	case -E2BIG:
		return "the cost exceeds a limit's capacity: it never fits";
	case -ETIMEDOUT:
		return "timed out waiting for a ticket";
	case -ESTALE:
		return "the key was removed by a reload";
	case -EPROTO:
		return "the segment has another layout version";
	case -EACCES:
		return "permission denied on the segment: its state object is "
		    "for the group the broker's config names (`group ='); join "
		    "it, or see `ls -l /dev/shm'";
	case -EINVAL:
		return "invalid argument";
	case -ENOSPC:
		return "every client slot of the segment is taken";
	case -ENOMEM:
		return "out of memory";
	case -EBADMSG:
		return "the segment is malformed";
	case -EPERM:
		return "the ticket is another process's (inherited across fork)";
	case -EXDEV:
		return "this process's clock is not the segment's (a time "
		    "namespace whose offset cannot be read)";
	case -ESHUTDOWN:
		return "the key is drained (tollctl drain): no new tickets "
		    "until it is undrained";
	}
	return err < 0 ? strerror(-err) : "unknown result";
}
