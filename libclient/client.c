/* client.c: libtollgate, the client API of include/tollgate.h. */
#include <errno.h>
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
#include "config.h"
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
 * Undo what take() did on lim[0..n) of ch; bit i of capped says lim[i]'s
 * server cap counted the units too.
 */
static void
untake(const tg_client *c, const struct chain *ch, unsigned n,
    const tg_cost *cost, uint64_t now, const struct tk *tk, uint32_t capped)
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
				gcra_refund(&ls[v->id].tat_ns, gcra_cost_ns(
				    units, v->period_ns, v->count));
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
	uint64_t units = unit_cost(cost, v->unit), tat, next, w, capw = 0;

	if (v->kind == LIM_CONC || units == 0)
		return 0;
	w = atomic_load_explicit(&ls->srv_cap, memory_order_relaxed);
	if (cap_live(w, now) && cap_left(w) < units)
		capw = cap_until_ns(w) - now;
	switch (v->kind) {
	case LIM_RATE:
		tat = atomic_load_explicit(&ls->tat_ns, memory_order_relaxed);
		next = (tat > now ? tat : now) + gcra_cost_ns(units,
		    v->period_ns, v->count);
		w = next - now > v->tau_ns ? next - now - v->tau_ns : 0;
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

/*
 * Take cost from every limit of ch at now, all or nothing, reserving rate
 * slots up to max_wait_ns ahead.  Returns 0 with *wait_ns the wait for the
 * latest reserved slot, or -EAGAIN with *wait_ns the time until it could
 * fit (0: it waits on a release of concurrency limit *blocked), -E2BIG,
 * or TAKE_STALE.
 */
static int
take(tg_client *c, const struct chain *ch, const tg_cost *cost, uint64_t now,
    uint64_t max_wait_ns, struct tk *tk, uint64_t *wait_ns, int *blocked)
{
	struct seg_kstate *ks = seg_kstates(&c->m);
	struct seg_lstate *ls = seg_lstates(&c->m);
	_Atomic uint64_t *cells = seg_cells(&c->m);
	uint64_t units, w, wait = 0, until;
	uint32_t capped = 0;
	unsigned i;
	int r = 0;

	*blocked = -1;
	for (i = 0; i < ch->nlim; i++) {
		const struct lview *v = &ch->lim[i];

		units = unit_cost(cost, v->unit);
		if ((v->kind == LIM_RATE && units > v->burst) ||
		    (v->kind == LIM_WINDOW && (units > v->count ||
		    units > WIN_COUNT_MAX)) ||
		    (v->kind == LIM_CONC && (v->ncells == 0 ||
		    v->count == 0)))
			return -E2BIG;
	}
	/* A paused key (the server said so) refuses until the pause ends. */
	for (i = 0; i < ch->nkey; i++) {
		until = atomic_load_explicit(&ks[ch->keys[i]].paused_until_ns,
		    memory_order_relaxed);
		if (until > now && until - now > wait)
			wait = until - now;
	}
	if (wait > 0) {
		*wait_ns = wait;
		return -EAGAIN;
	}
	tk->nlease = 0;
	tk->slot = c->slot;
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
			r = gcra_reserve(&ls[v->id].tat_ns, now,
			    units == 1 && v->unit_ns ? v->unit_ns :
			    gcra_cost_ns(units, v->period_ns, v->count),
			    v->tau_ns, max_wait_ns, &w);
			break;
		case LIM_WINDOW:
			if (units == 0)
				continue;
			r = win_take(&cells[v->cells], now, v->tau_ns,
			    v->count, units, &w);
			break;
		case LIM_CONC:
			if (tk->gen == 0) {
				/* Relaxed: the slot's own threads share it. */
				do
					tk->gen = atomic_fetch_add_explicit(
					    &c->me->lease_gen, 1,
					    memory_order_relaxed) + 1;
				while (tk->gen == 0);
			}
			r = lease_take(&ls[v->id], &cells[v->cells], v->ncells,
			    conc_allowed(c, v), LEASE_VAL(c->slot, tk->gen),
			    c->slot, &tk->lease[tk->nlease].cell);
			if (r == 0)
				tk->lease[tk->nlease++].lim = v->id;
			else if (r == -ESTALE)
				r = TAKE_STALE;
			else
				*blocked = v->id;
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
		untake(c, ch, ch->nlim, cost, now, tk, capped);
		return TAKE_STALE;
	}
	if (r >= 0) {
		*wait_ns = wait;
		return 0;
	}
	if (r == TAKE_STALE) {
		untake(c, ch, i, cost, now, tk, capped);
		return TAKE_STALE;
	}
	/* Refused by lim[i]: undo the others, then say when to come back. */
	atomic_fetch_add_explicit(&ls[ch->lim[i].id].denied, 1,
	    memory_order_relaxed);
	untake(c, ch, i, cost, now, tk, capped);
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

static void
denied(tg_client *c, const struct chain *ch)
{
	atomic_fetch_add_explicit(&seg_kstates(&c->m)[ch->key].denied, 1,
	    memory_order_relaxed);
	slot_count(&c->me->denied, 1);
}

/*
 * take() for the common shape, straight through: one rate limit whose
 * unit cost is known (a cached chain), one unit, no pause, no server
 * cap, and room now.  Returns 0 with the unit taken, or -1 having taken
 * nothing: take() then decides, refusal and wait included.
 */
static int
take_one_rate(tg_client *c, const struct chain *ch, uint64_t now,
    struct tk *tk)
{
	const struct lview *v = &ch->lim[0];
	struct seg_kstate *ks = seg_kstates(&c->m);
	struct seg_lstate *ls = &seg_lstates(&c->m)[v->id];
	uint64_t wait;

	for (unsigned i = 0; i < ch->nkey; i++)
		if (atomic_load_explicit(&ks[ch->keys[i]].paused_until_ns,
		    memory_order_relaxed) > now)
			return -1;
	if (atomic_load_explicit(&ls->srv_cap, memory_order_relaxed) != 0)
		return -1;
	/* The one GCRA, no wait allowed; a refusal is take()'s to explain. */
	if (gcra_reserve(&ls->tat_ns, now, v->unit_ns, v->tau_ns, 0,
	    &wait) < 0)
		return -1;
	tk->nlease = 0;
	tk->slot = c->slot;
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
			r = take(c, ch, cost, now, 0, tk, &wait, &blocked);
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
		denied(c, ch);
		if (retry_in_ns != NULL)
			*retry_in_ns = wait;
	}
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
	uint32_t seen = 0;
	int r, blocked, prepared = -1, slept = 0;

	if (c == NULL || t == NULL)
		return -EINVAL;
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
		left = deadline - now;
		r = take(c, ch, cost, now, left, tk, &wait, &blocked);
		if (r == TAKE_STALE) {
			/* A reload moved a limit: again, once it flipped. */
			r = -EAGAIN;
			wait = STALE_PAUSE_NS;
		}
		if (r == 0) {
			granted(c, ch, cost, now, tk);
			chain_put(c, ch);
			if (wait > 0) {
				/* A reserved slot: ours, in arrival order. */
				sleep_until(now + wait);
				slept = 1;
			}
			break;
		}
		if (r != -EAGAIN) {
			chain_put(c, ch);
			return r;
		}
		if (wait > 0) {
			prepared = -1;
			if (wait > left) {
				/* It cannot come in time: say so now. */
				denied(c, ch);
				chain_put(c, ch);
				return -ETIMEDOUT;
			}
			sleep_until(now + wait);
			slept = 1;
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
			slept = 1;
		}
		now = now_ns();
		if (now >= deadline)
			denied(c, ch);
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
	if (tk->slot == c->slot && tk->nlease > 0) {
		/* CAS: of two racing releases of one ticket, one puts. */
		if (!atomic_compare_exchange_strong_explicit(&tk->state,
		    &(uint32_t){ TK_LIVE }, TK_SPENT, memory_order_relaxed,
		    memory_order_relaxed))
			return;
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

/* Claim a free client slot for this process; 0 or -ENOSPC. */
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
		if (atomic_load_explicit(&st->stripe_owner[s],
		    memory_order_relaxed) == 0 &&
		    atomic_compare_exchange_strong_explicit(
		    &st->stripe_owner[s], &expect, c->slot + 1,
		    memory_order_acquire, memory_order_relaxed)) {
			c->stripe = s;
			break;
		}
	}
	c->kgrants = seg_grants(&c->m, c->stripe);
	c->lgrants = c->kgrants + c->m.hdr->max_keys;
}

static int
slot_claim(tg_client *c)
{
	struct seg_client *cl = seg_clients(&c->m);
	uint32_t n = c->m.hdr->max_clients, i;
	uint64_t st, expect;
	int r;

	if ((r = proc_starttime(c->pid, &st)) < 0)
		return r;
	for (uint32_t k = 0; k < n; k++) {
		i = ((uint32_t)c->pid + k) % n;
		expect = 0;
		if (atomic_load_explicit(&cl[i].owner, memory_order_relaxed))
			continue;
		/*
		 * Claim with our pid, then fill, then go live.  Dying in
		 * between leaves CLAIMING with a dead pid: the broker frees it.
		 */
		if (!atomic_compare_exchange_strong_explicit(&cl[i].owner,
		    &expect, CLIENT_OWNER(CLIENT_CLAIMING, c->pid),
		    memory_order_acq_rel, memory_order_relaxed))
			continue;
		atomic_store_explicit(&cl[i].start_time, st,
		    memory_order_relaxed);
		/* Release: the broker that sees LIVE sees the start time. */
		atomic_store_explicit(&cl[i].owner, CLIENT_OWNER(CLIENT_LIVE,
		    c->pid), memory_order_release);
		c->slot = i;
		c->me = &cl[i];
		stripe_claim(c);
		return 0;
	}
	return -ENOSPC;
}

int
tg_open(const char *segment, tg_client **out)
{
	tg_client *c;
	int r;

	if (out == NULL)
		return -EINVAL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return -ENOMEM;
	if ((r = seg_attach(segment ? segment : "tollgate", 1, &c->m)) < 0)
		goto out_free;
	c->pid = getpid();
	atomic_init(&c->rnd, now_ns() ^ (uint64_t)c->pid << 32);
	c->cache = malloc(sizeof(*c->cache));	/* none: chain_get reads */
	if ((r = slot_claim(c)) < 0)
		goto out_detach;
	*out = c;
	return 0;

out_detach:
	seg_detach(&c->m);
out_free:
	free(c->cache);
	free(c);
	return r;
}

/* Free every lease this client's slot holds, in every concurrency limit. */
static void
leases_drop(tg_client *c)
{
	const struct seg_limit *lims;
	struct seg_cfg *cfg;
	_Atomic uint64_t *cells = seg_cells(&c->m);
	uint32_t seq, max = c->m.hdr->max_cells;
	uint64_t v;
	int freed;

	/*
	 * Without retrying the seqlock: a torn read can only name wrong
	 * cells, and a cell is freed only if it holds our own slot.
	 */
	cfg = seg_read_begin(&c->m, &seq);
	lims = seg_limits(&c->m, cfg);
	for (uint32_t id = 0; id < c->m.hdr->max_limits; id++) {
		if (lims[id].kind != LIM_CONC)
			continue;
		freed = 0;
		/* Its cells, and those a reload just moved it from. */
		for (int w = 0; w < 2; w++) {
			uint32_t first = w ? lims[id].was_cells :
			    lims[id].cells;
			uint32_t n = w ? lims[id].was_ncells : lims[id].ncells;

			if ((uint64_t)first + n > max)
				continue;
			for (uint32_t i = first; i < first + n; i++) {
				v = atomic_load_explicit(&cells[i],
				    memory_order_relaxed);
				if (v != 0 && v != LEASE_SEALED &&
				    LEASE_SLOT(v) == c->slot &&
				    atomic_compare_exchange_strong_explicit(
				    &cells[i], &v, 0, memory_order_seq_cst,
				    memory_order_relaxed))
					freed = 1;
			}
		}
		if (freed)
			lease_wake(&seg_lstates(&c->m)[id]);
	}
}

void
tg_close(tg_client *c)
{
	if (c == NULL)
		return;
	leases_drop(c);
	if (c->stripe != 0) {
		uint32_t mine = c->slot + 1;

		/* Release: our counts are in before another owner's. */
		atomic_compare_exchange_strong_explicit(&((struct seg_state *)
		    c->m.state)->stripe_owner[c->stripe], &mine, 0,
		    memory_order_release, memory_order_relaxed);
	}
	/* Release: the slot's counters are final before it is free. */
	atomic_store_explicit(&c->me->owner, 0, memory_order_release);
	seg_detach(&c->m);
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
		return "no such segment or key";
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
		return "permission denied on the segment";
	case -EINVAL:
		return "invalid argument";
	case -ENOSPC:
		return "every client slot of the segment is taken";
	case -ENOMEM:
		return "out of memory";
	case -EBADMSG:
		return "the segment is malformed";
	}
	return err < 0 ? strerror(-err) : "unknown result";
}
