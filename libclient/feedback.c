/*
 * feedback.c: tg_observe and tg_settle, what a response teaches the fleet
 * (DESIGN 3).  Everything lands in the segment before they return, with no
 * system call: the clocks come from the vDSO, the jitter from a counter.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

#include "tollgate.h"

#include "client.h"
#include "clock.h"
#include "gcra.h"
#include "headers.h"
#include "seg.h"
#include "srvcap.h"
#include "window.h"

/* splitmix64 over a per-client counter: shared by threads, lock-free. */
static uint64_t
rnd(tg_client *c)
{
	uint64_t z = atomic_fetch_add_explicit(&c->rnd,
	    UINT64_C(0x9e3779b97f4a7c15), memory_order_relaxed) +
	    UINT64_C(0x9e3779b97f4a7c15);

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* The pause clamp of ch's key: its max_pause, never 0. */
static uint64_t
clamp_pause(const struct chain *ch, uint64_t ns)
{
	uint64_t max = ch->max_pause_ns ? ch->max_pause_ns : SEG_MAX_PAUSE_NS;

	return ns < max ? ns : max;
}

/* Pause key id until `until': seg_pause_key, shared with tollctl. */
static void
pause_key(tg_client *c, uint16_t id, uint64_t now, uint64_t until)
{
	(void)seg_pause_key(&seg_kstates(&c->m)[id], now, until);
}

/*
 * A hint-less 429 or 5xx: the shared backoff.  Only a request sent after
 * the last pause began can start a new round; the first of those to get
 * here grows the step (doubling from MIN up to MAX) and pauses the key
 * for a time drawn evenly from [MIN, step], so that hosts and fleets
 * sharing the server do not come back in step.  Every other response of
 * the round finds the round begun and adds nothing: N workers hitting one
 * wall make one pause, not N.
 */
static void
backoff(tg_client *c, const struct chain *ch, const struct tk *tk,
    uint64_t now)
{
	struct seg_kstate *ks = &seg_kstates(&c->m)[ch->key];
	uint64_t set, step, lo = ch->backoff_min_ns, hi = ch->backoff_max_ns;

	set = atomic_load_explicit(&ks->pause_set_ns, memory_order_relaxed);
	do {
		if (tk->now_ns < set)
			return;		/* sent before this round began */
	} while (!atomic_compare_exchange_weak_explicit(&ks->pause_set_ns,
	    &set, now, memory_order_relaxed, memory_order_relaxed));
	if (lo == 0)
		lo = SEG_BACKOFF_MIN_NS;
	if (hi < lo)
		hi = lo;
	step = atomic_load_explicit(&ks->backoff_ns, memory_order_relaxed);
	step = step < lo ? lo : step > hi / 2 ? hi : step * 2;
	atomic_store_explicit(&ks->backoff_ns, step, memory_order_relaxed);
	pause_key(c, ch->key, now, now + clamp_pause(ch,
	    lo + rnd(c) % (step - lo + 1)));
}

/* A success: a request sent after the last pause resets the backoff. */
static void
backoff_reset(tg_client *c, const struct chain *ch, const struct tk *tk)
{
	struct seg_kstate *ks = &seg_kstates(&c->m)[ch->key];

	/* Load first: successes are the common case, and mostly no-ops. */
	if (atomic_load_explicit(&ks->backoff_ns, memory_order_relaxed) != 0 &&
	    tk->now_ns >= atomic_load_explicit(&ks->pause_set_ns,
	    memory_order_relaxed))
		atomic_store_explicit(&ks->backoff_ns, 0, memory_order_relaxed);
}

/*
 * The limits a server's figures for `unit' describe: those of that unit
 * on the nearest key of the chain (the ticket's own, else its closest
 * ancestor) that has any, rate or window.  A parent shared by several
 * models is not tightened by what one model's response says while that
 * model has limits of its own.  Returns the index of the first in ch, or
 * -1; the others follow it with the same key.
 */
static int
nearest(const struct chain *ch, unsigned unit)
{
	for (unsigned i = 0; i < ch->nlim; i++)
		if (ch->lim[i].unit == unit && (ch->lim[i].kind == LIM_RATE ||
		    ch->lim[i].kind == LIM_WINDOW))
			return (int)i;
	return -1;
}

static int
same_level(const struct lview *a, const struct lview *b)
{
	return b->key == a->key && b->unit == a->unit &&
	    (b->kind == LIM_RATE || b->kind == LIM_WINDOW);
}

/* What one unit of rate limit v costs, as take() charges it. */
static uint64_t
unit_ns(const struct lview *v)
{
	return gcra_cost_ns(1, v->period_ns, v->count);
}

/*
 * The size L of the server's bucket for unit u, to reckon its refill
 * with: what it said, else the count of our nearest limit of that unit
 * (the config's belief of it); 0 if neither.
 */
static uint64_t
srv_size(const struct chain *ch, unsigned u, const struct hdr_unit *hu)
{
	int at;

	if (hu->limit != HDR_UNKNOWN && hu->limit != 0)
		return hu->limit;
	return (at = nearest(ch, u)) >= 0 ? ch->lim[at].count : 0;
}

/*
 * How long until unit u, of which the server said 0 are left, has one
 * again: a window's reset; a refilling bucket's time to refill one unit
 * (headers.h), not its time until full.
 */
static uint64_t
zero_wait(const struct chain *ch, unsigned u, const struct hdr_unit *hu)
{
	uint64_t size;

	if (!hdr_refills(hu) || (size = srv_size(ch, u, hu)) == 0)
		return hu->reset_ns;
	return srv_refill_ns(size, 0, hu->reset_ns);
}

/*
 * Whether the server's figures hu for rate limit v are of a bucket of
 * another size that the broker adopts (the key learns, and v is the
 * limit it posts the server's limit on: the shortest period's, below).
 */
static int
theirs(const struct chain *ch, const struct lview *v,
    const struct hdr_unit *hu)
{
	if (!(ch->flags & SEG_KEY_LEARN) || hu->limit == HDR_UNKNOWN ||
	    hu->limit == 0 || hu->limit == v->count ||
	    hu->remaining > hu->limit || hu->limit > WIN_COUNT_MAX)
		return 0;
	for (unsigned i = 0; i < ch->nlim; i++)
		if (same_level(v, &ch->lim[i]) &&
		    ch->lim[i].period_ns < v->period_ns)
			return 0;
	return 1;
}

/*
 * What the server said of each unit, by the semantics of the fields it
 * came in (headers.h).  A window's `remaining R until reset T' caps the
 * limits of that unit: at most R more until T.  A refilling bucket's R
 * tightens them to the server's bucket: the TAT of a rate limit moves to
 * where it holds at most R units (with none, the next after the server's
 * refill of one); a window limit is capped to R until that refill.  A
 * `limit' other than the configured count is posted for the broker, on
 * the one with the shortest period (a server reports its tightest:
 * requests per minute, not per day).
 */
static void
server_counts(tg_client *c, const struct chain *ch, const struct hdr_result *hr,
    uint64_t now)
{
	struct seg_lstate *ls = seg_lstates(&c->m);
	const struct hdr_unit *hu;
	const struct lview *first, *best;
	uint64_t refill = 0, tat, reset;
	int at, bucket;

	for (unsigned u = 0; u < UNIT_COUNT; u++) {
		hu = &hr->unit[u];
		if ((at = nearest(ch, u)) < 0)
			continue;
		first = best = &ch->lim[at];
		bucket = hdr_refills(hu) && hu->remaining != HDR_UNKNOWN;
		if (bucket)
			/* No reset (Azure): R alone, the refill unknown. */
			refill = clamp_pause(ch, srv_refill_ns(srv_size(ch, u,
			    hu), hu->remaining, hu->reset_ns == HDR_UNKNOWN ?
			    0 : hu->reset_ns));
		for (unsigned i = (unsigned)at; i < ch->nlim; i++) {
			const struct lview *v = &ch->lim[i];

			if (!same_level(first, v))
				continue;
			if (v->period_ns < best->period_ns)
				best = v;
			if (hu->remaining == HDR_UNKNOWN)
				continue;
			if (!bucket) {
				if (hu->reset_ns != HDR_UNKNOWN)
					cap_post(&ls[v->id].srv_cap, now,
					    hu->remaining, clamp_pause(ch,
					    hu->reset_ns));
			} else if (v->kind == LIM_RATE && theirs(ch, v, hu)) {
				/*
				 * The server's bucket is not ours, and the
				 * broker is taking its count (learned): its
				 * L - R short of full is that many of its
				 * units of our period behind, which our TAT
				 * keeps as time through the change; R of our
				 * units would be other counts after it (16 of
				 * 20 left, put in a bucket of 40 taken to 20:
				 * 8).  Until the change, at most R until the
				 * server refills one.
				 */
				gcra_raise(&ls[v->id].tat_ns, now +
				    gcra_cost_ns(hu->limit - hu->remaining,
				    v->period_ns, hu->limit));
				if (refill != 0)
					cap_post(&ls[v->id].srv_cap, now,
					    hu->remaining, refill);
			} else if (v->kind == LIM_RATE) {
				if ((tat = srv_bucket_tat(now, v->tau_ns,
				    unit_ns(v), hu->remaining, refill)) != 0)
					gcra_raise(&ls[v->id].tat_ns, tat);
			} else if ((reset = refill) != 0)
				cap_post(&ls[v->id].srv_cap, now,
				    hu->remaining, reset);
		}
		if (hu->limit != HDR_UNKNOWN && hu->limit != 0 &&
		    hu->limit != best->count && atomic_load_explicit(
		    &ls[best->id].srv_limit, memory_order_relaxed) != hu->limit)
			atomic_store_explicit(&ls[best->id].srv_limit, hu->limit,
			    memory_order_relaxed);
	}
}

/*
 * A 429 says the server's bucket is empty: leave ours empty when the
 * pause ends (until_ns), so that the waiters of the pause go one by one
 * at the rate and not all at its end.  Rate limits of the units in mask
 * (bit per unit) on the nearest key that has them; their TAT moves to
 * where one unit fits at until_ns and the next one a unit's cost later.
 */
static void
empty_at(tg_client *c, const struct chain *ch, unsigned mask,
    uint64_t until_ns)
{
	struct seg_lstate *ls = seg_lstates(&c->m);
	uint64_t one, tat;
	int at;

	for (unsigned u = 0; u < UNIT_COUNT; u++) {
		if (!(mask & 1u << u) || (at = nearest(ch, u)) < 0)
			continue;
		for (unsigned i = (unsigned)at; i < ch->nlim; i++) {
			const struct lview *v = &ch->lim[i];

			if (!same_level(&ch->lim[at], v) ||
			    v->kind != LIM_RATE)
				continue;
			one = unit_ns(v);
			if (v->tau_ns < one || v->tau_ns - one > UINT64_MAX -
			    until_ns)
				continue;
			tat = until_ns + (v->tau_ns - one);
			gcra_raise(&ls[v->id].tat_ns, tat);
		}
	}
}

/*
 * Post a response's outcome on limit id for the broker: a success, or a
 * 429 (a probe's when probe) of a request sent after the last cut; one
 * sent before it is part of that cut.  Relaxed: counters the broker
 * reads each tick, guarding no other data.
 */
static void
post(tg_client *c, uint16_t id, const struct tk *tk, int cls, int probe)
{
	struct seg_lstate *ls = &seg_lstates(&c->m)[id];

	if (cls == ST_OK)
		atomic_fetch_add_explicit(&ls->fb_ok, 1, memory_order_relaxed);
	else if (cls == ST_LIMITED && tk->now_ns >= atomic_load_explicit(
	    &ls->cut_ns, memory_order_relaxed))
		atomic_fetch_add_explicit(probe ? &ls->fb_probe :
		    &ls->fb_limited, 1, memory_order_relaxed);
}

/*
 * Post the outcome for the broker: on adaptive concurrency limits for
 * their AIMD; where the key learns, on the rate and window limits of each
 * unit the server gave no figures of (the nearest level's), for the count
 * learned from 429s.  A probe's 429 counts on the concurrency limits
 * alone.
 */
static void
feedback_post(tg_client *c, const struct chain *ch, const struct tk *tk,
    const struct hdr_result *hr, int cls, int probe)
{
	const struct hdr_unit *hu;
	int at;

	for (unsigned i = 0; i < ch->nlim; i++)
		if (ch->lim[i].kind == LIM_CONC &&
		    (ch->lim[i].flags & LIMIT_F_ADAPTIVE))
			post(c, ch->lim[i].id, tk, cls, probe);
	if (!(ch->flags & SEG_KEY_LEARN) || probe)
		return;
	for (unsigned u = 0; u < UNIT_COUNT; u++) {
		hu = &hr->unit[u];
		if (hu->limit != HDR_UNKNOWN || hu->remaining != HDR_UNKNOWN ||
		    (at = nearest(ch, u)) < 0)
			continue;
		/* same_level: rate and window limits, both learn. */
		for (unsigned i = (unsigned)at; i < ch->nlim; i++)
			if (same_level(&ch->lim[at], &ch->lim[i]))
				post(c, ch->lim[i].id, tk, cls, 0);
	}
}

/*
 * Whether a 429 is a concurrency limit's refusal of a probe: an adaptive
 * concurrency limit of the chain has just grown past a level that ran
 * without 429s (the broker's probe_from), and the server names no unit
 * it is out of.  Then the probe failed, not the rate: the limit goes
 * back to that level at once (here) and the broker holds it there a
 * while, and the key is not paused, nor its buckets emptied.
 */
static int
probe_refused(tg_client *c, const struct chain *ch, unsigned zero_units)
{
	struct seg_lstate *ls = seg_lstates(&c->m);
	uint32_t from, eff;

	if (zero_units != 0)
		return 0;
	for (unsigned i = 0; i < ch->nlim; i++) {
		const struct lview *v = &ch->lim[i];

		if (v->kind != LIM_CONC || !(v->flags & LIMIT_F_ADAPTIVE))
			continue;
		/* Relaxed: the broker's values of the moment, any will do. */
		from = atomic_load_explicit(&ls[v->id].probe_from,
		    memory_order_relaxed);
		eff = atomic_load_explicit(&ls[v->id].eff,
		    memory_order_relaxed);
		if (from == 0 || eff <= from)
			continue;
		/*
		 * Back to the level that ran clean at once, not at the
		 * broker's tick: until then the prober would take the lease
		 * it probed with again and meet the same wall.  The broker
		 * does the same on fb_probe and holds it there.
		 */
		(void)atomic_compare_exchange_strong_explicit(&ls[v->id].eff,
		    &eff, from, memory_order_relaxed, memory_order_relaxed);
		return 1;
	}
	return 0;
}

/*
 * The units of which the server said some are left (remaining above 0).
 * A 429 that names such units and none at 0 is not their bucket's: the
 * server refused for another reason, most likely requests in flight.
 */
static unsigned
left_units(const struct hdr_result *hr)
{
	unsigned m = 0;

	for (unsigned u = 0; u < UNIT_COUNT; u++)
		if (hr->unit[u].remaining != HDR_UNKNOWN &&
		    hr->unit[u].remaining > 0)
			m |= 1u << u;
	return m;
}

/*
 * A concurrency 429 (the server counts units left and names no wait):
 * halve the chain's adaptive concurrency limits at once, here, rather
 * than at the broker's next tick, so that the workers the refusal sends
 * back wait for a lease instead of meeting the same wall again until
 * then (against a provider that counts nothing refused, 20 429s in a
 * millisecond; against one that counts them, an empty bucket).  One cut
 * per round: a request sent before the last cut was part of it.  The
 * broker adopts a lower eff as its own (broker/feedback.c, aimd), and
 * post() leaves this 429 out of fb_limited (sent before the cut), so it
 * is not halved twice.  Returns 0 if no limit could go lower (all at 1):
 * then the server is full for another reason, and the caller backs off.
 */
static int
conc_cut(tg_client *c, const struct chain *ch, const struct tk *tk,
    uint64_t now)
{
	struct seg_lstate *ls = seg_lstates(&c->m);
	uint32_t n, eff, seen;
	uint64_t cut;
	int any = 0;

	for (unsigned i = 0; i < ch->nlim; i++) {
		const struct lview *v = &ch->lim[i];

		if (v->kind != LIM_CONC || !(v->flags & LIMIT_F_ADAPTIVE))
			continue;
		n = v->count < v->ncells ? (uint32_t)v->count : v->ncells;
		/* Relaxed, all: eff and cut_ns guard no other data. */
		cut = atomic_load_explicit(&ls[v->id].cut_ns,
		    memory_order_relaxed);
		if (tk->now_ns < cut) {
			any = 1;	/* this round's cut is made */
			continue;
		}
		seen = atomic_load_explicit(&ls[v->id].eff,
		    memory_order_relaxed);
		do {
			eff = seen == 0 || seen > n ? n : seen;
			if (eff <= 1)
				break;
		} while (!atomic_compare_exchange_weak_explicit(
		    &ls[v->id].eff, &seen, eff / 2, memory_order_relaxed,
		    memory_order_relaxed));
		if (eff <= 1)
			continue;
		any = 1;
		while (cut < now && !atomic_compare_exchange_weak_explicit(
		    &ls[v->id].cut_ns, &cut, now, memory_order_relaxed,
		    memory_order_relaxed))
			;
	}
	return any;
}

/* The limit of ch with the longest cooldown, or -1. */
static int
cooldown_limit(const struct chain *ch)
{
	int best = -1;

	for (unsigned i = 0; i < ch->nlim; i++)
		if (ch->lim[i].cooldown_ns > 0 && (best < 0 ||
		    ch->lim[i].cooldown_ns > ch->lim[best].cooldown_ns))
			best = (int)i;
	return best;
}

static void	settle_to(tg_client *, struct tk *, const struct chain *,
		    const uint64_t[UNIT_COUNT], uint64_t);

int
tg_observe(tg_client *c, tg_ticket *t, int http_status, const char *headers,
    size_t len)
{
	struct tk *tk = (struct tk *)t;
	struct hdr_result hr;
	struct chain ch;
	uint64_t now, hint, zw, until, zero_reset = HDR_UNKNOWN;
	uint64_t act[UNIT_COUNT];
	unsigned zero_units = 0, left;
	int evidence, cls, advice, r, cd, probe = 0, conc = 0;

	if (c == NULL || t == NULL || http_status < 200 || http_status > 599 ||
	    (headers == NULL && len > 0) || !tk_filled(tk))
		return -EINVAL;
	now = now_ns();
	if ((r = chain_read(c, tk_handle(tk), &ch)) < 0)
		return r;
	(void)hdr_parse(headers != NULL ? headers : "", len, wall_ns(), &hr);

	/*
	 * Rate-limit evidence: a retry hint, or a count of 0 left.  With no
	 * hint, the longest wait of a unit with 0 left says how long: a
	 * window's reset, a refilling bucket's refill of one unit.
	 */
	evidence = hr.retry_after_ns != HDR_UNKNOWN;
	for (unsigned u = 0; u < UNIT_COUNT; u++) {
		if (hr.unit[u].remaining != 0)
			continue;
		evidence = 1;
		zero_units |= 1u << u;
		if (hr.unit[u].reset_ns == HDR_UNKNOWN)
			continue;
		zw = zero_wait(&ch, u, &hr.unit[u]);
		if (zero_reset == HDR_UNKNOWN || zw > zero_reset)
			zero_reset = zw;
	}
	/*
	 * A hint of 0 is evidence but says nothing of how long: a date at
	 * or before our clock (ours runs ahead of the server's), a reset
	 * already past, a literal 0.  Pausing for it would pause nothing
	 * and send the next request straight into the same wall, so it
	 * counts as no hint: the cooldown or the backoff decide below.
	 */
	hint = HDR_UNKNOWN;
	if (hr.retry_after_ns != HDR_UNKNOWN && hr.retry_after_ns > 0)
		hint = hr.retry_after_ns;
	else if (zero_reset != HDR_UNKNOWN && zero_reset > 0)
		hint = zero_reset;

	if (http_status < 400) {
		cls = ST_OK;
		advice = TG_OK;
	} else if (http_status == 429 || (evidence && (http_status == 403 ||
	    http_status == 503))) {
		cls = ST_LIMITED;
		advice = TG_RETRY;
	} else if (http_status >= 500) {
		cls = ST_SERVER;
		advice = TG_RETRY;
	} else if (http_status == 401 || http_status == 403) {
		cls = ST_AUTH;
		advice = TG_GIVE_UP;
	} else {
		cls = ST_CLIENT;
		advice = TG_GIVE_UP;
	}

	/*
	 * A provider that does not count a request it refused (rejected =
	 * free) gets its charge back, as a settle to nothing would, before
	 * the pause below empties the bucket at its end.  Once: the ticket
	 * then says it cost nothing.  Not a ticket inherited across fork.
	 */
	if (cls == ST_LIMITED && (ch.flags & SEG_KEY_REFUND_REJECTED) &&
	    tk_ours(c, tk))
		settle_to(c, tk, &ch, (const uint64_t[UNIT_COUNT]){ 0 }, now);

	left = zero_units == 0 ? left_units(&hr) : 0;
	if (cls == ST_LIMITED && probe_refused(c, &ch, zero_units))
		probe = 1;	/* the rate is fine: no pause */
	else if (cls == ST_LIMITED && left != 0 && hint == HDR_UNKNOWN &&
	    conc_cut(c, &ch, tk, now))
		/*
		 * The server says every unit it counts has some left and
		 * names no wait: the refusal is the concurrency limit's
		 * (issue 13 section 3), now halved; the rate limits are
		 * not paused, nor (below) emptied.
		 */
		conc = 1;
	else if (cls == ST_LIMITED || cls == ST_SERVER) {
		if (hint != HDR_UNKNOWN)
			/* The server said how long: that, for the whole key. */
			pause_key(c, ch.key, now, now + clamp_pause(&ch, hint));
		else if (cls == ST_LIMITED && (cd = cooldown_limit(&ch)) >= 0)
			/* A lockout we know the length of. */
			pause_key(c, ch.key, now, now + clamp_pause(&ch,
			    ch.lim[cd].cooldown_ns));
		else
			backoff(c, &ch, tk, now);
	} else if (cls == ST_OK)
		backoff_reset(c, &ch, tk);

	if ((conc || probe) && left != 0 && tk_ours(c, tk)) {
		/*
		 * Nor charged for this request, in the units the server
		 * counts: it says how many it has left, and server_counts
		 * below holds our buckets to that, which is all a refused
		 * request may have cost.  Charged, 8 refusals at the start
		 * leave a bucket of 20 paced at its rate while the server's
		 * is half full.  Once: the ticket then says it cost nothing.
		 */
		for (unsigned u = 0; u < UNIT_COUNT; u++)
			act[u] = left & 1u << u ? 0 : tk->cost[u];
		settle_to(c, tk, &ch, act, now);
	}
	server_counts(c, &ch, &hr, now);
	if (cls == ST_LIMITED && !probe && !conc) {
		/*
		 * At the end of the pause in force, whoever set it: the
		 * units the server said are out, else all but those it said
		 * have some left (a 429 that is not their bucket's).
		 * Not for a request sent before a pause that is over: its
		 * round emptied the bucket already, and the restart is under
		 * way.  Relaxed: as pause_key, the pause guards no other data.
		 */
		until = atomic_load_explicit(&seg_kstates(&c->m)[ch.key].
		    paused_until_ns, memory_order_relaxed);
		if (until > now || tk->now_ns >= atomic_load_explicit(
		    &seg_kstates(&c->m)[ch.key].pause_set_ns,
		    memory_order_relaxed))
			empty_at(c, &ch, zero_units != 0 ? zero_units :
			    ((1u << UNIT_COUNT) - 1) & ~left,
			    until > now ? until : now);
	}
	feedback_post(c, &ch, tk, &hr, cls, probe);
	atomic_fetch_add_explicit(&seg_kstates(&c->m)[ch.key].status[cls], 1,
	    memory_order_relaxed);
	return advice;
}

/*
 * Settle the ticket tk of chain ch to what it used, act[unit], at now:
 * tg_settle's work, and a 429's refund where the provider does not count
 * refused requests (rejected = free).
 */
static void
settle_to(tg_client *c, struct tk *tk, const struct chain *ch,
    const uint64_t act_units[UNIT_COUNT], uint64_t now)
{
	struct seg_lstate *ls = seg_lstates(&c->m);
	_Atomic uint64_t *cells = seg_cells(&c->m);
	uint64_t est, act, ce, ca;
	int same;

	/*
	 * A reload since the take may have moved or replaced the limits
	 * the ticket charged: then nothing is refunded (a refund to a limit
	 * that never charged would loosen it), but what was used more than
	 * estimated is still charged.
	 */
	same = (uint32_t)ch->cfg_gen == tk->cfg_gen;
	for (unsigned i = 0; i < ch->nlim; i++) {
		const struct lview *v = &ch->lim[i];

		if (v->kind != LIM_RATE && v->kind != LIM_WINDOW)
			continue;
		est = tk->cost[v->unit];
		act = act_units[v->unit];
		if (act == est || (act < est && !same))
			continue;
		if (v->kind == LIM_RATE) {
			ce = gcra_cost_ns(est, v->period_ns, v->count);
			ca = gcra_cost_ns(act, v->period_ns, v->count);
			/* Debt of at most a bucket and a period: see gcra.h. */
			if (ca > ce)
				gcra_charge(&ls[v->id].tat_ns, now, ca - ce,
				    v->tau_ns > UINT64_MAX - v->period_ns ?
				    UINT64_MAX : v->tau_ns + v->period_ns);
			else
				/* Only what of ce has not drained: gcra.c. */
				gcra_refund(&ls[v->id].tat_ns, ce, ce - ca,
				    tk->now_ns, now);
		} else if (act > est)
			win_charge(&cells[v->cells], now, v->tau_ns,
			    act - est < v->count ? act - est : v->count);
		else
			win_undo(&cells[v->cells], tk->now_ns, v->tau_ns,
			    est - act);
		if (act > est) {
			cap_charge(&ls[v->id].srv_cap, now, act - est);
			grant_count(c, &c->lgrants[v->id], act - est);
		}
	}
	for (unsigned u = 0; u < UNIT_COUNT; u++)
		tk->cost[u] = act_units[u];
}

int
tg_settle(tg_client *c, tg_ticket *t, const tg_cost *actual)
{
	struct tk *tk = (struct tk *)t;
	struct chain ch;
	uint64_t now, act[UNIT_COUNT];
	int r;

	if (c == NULL || t == NULL || actual == NULL || !tk_filled(tk))
		return -EINVAL;
	/* Inherited across fork: the parent settles its own tickets. */
	if (!tk_ours(c, tk))
		return -EPERM;
	now = now_ns();
	if ((r = chain_read(c, tk_handle(tk), &ch)) < 0)
		return r;
	act[UNIT_REQUESTS] = actual->requests;
	act[UNIT_TOKENS] = actual->tokens;
	act[UNIT_IMAGES] = actual->images;
	settle_to(c, tk, &ch, act, now);
	return 0;
}
