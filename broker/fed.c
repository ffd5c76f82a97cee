/*
 * fed.c: federation.  Brokers on several hosts share the rate and window
 * limits of `scope = global' keys through one Redis: each leases slices
 * of a limit's budget (Redis debits them when it grants them, and they
 * end after FED_LIFE_NS) and hands them to its workers through the
 * limit's cap word, which the hot path already counts down; a pause that
 * workers set on a global key goes to every broker.
 *
 * Why a thread of its own, not the io_uring loop.  hiredis' sync API is
 * the simple one, and even its async API connects (and resolves a name)
 * synchronously; a Redis that hangs would then stall client reclaim,
 * the heartbeat and reloads, which the loop must never do.  The thread
 * does blocking I/O with timeouts and touches only atomic words of the
 * segment that workers already share (a limit's srv_cap and tat_ns, a
 * key's paused_until_ns); the loop hands it the config in force under a
 * mutex (fed_configure), and it never calls back into the loop.
 *
 * How a slice reaches the workers.  Each global rate or window limit's
 * seg_lstate.srv_cap word, the "server's remaining" cap (srvcap.h), is
 * owned by this thread: it holds the units of the slices held, until a
 * time the thread renews on every pass (FED_PASS_NS).  A take counts
 * the cap down with a CAS and is refused when it is empty, as it would
 * be by a server's remaining count, so the hot path is the one it was:
 * a few atomics, no system call.  The thread reads back how much was
 * spent (what it wrote less what is left), spends the oldest slices
 * first, drops what a slice did not spend by its end, and adds new
 * grants.  A response's own remaining count, merged into the word by
 * tg_observe (lowest count within one budget), only ever lowers it.
 *
 * A cap that is not renewed ends (a stalled or dead broker): the take
 * then falls back to the local limit.  So that this cannot burst, the
 * thread also keeps a rate limit's local GCRA bucket drained to what
 * the slices hold (gcra_raise of its TAT): a lapse admits no more than
 * the rate refills meanwhile.  An empty cap of a rate limit is renewed
 * for FED_EMPTY_HOLD_NS only, because its end is the wait a refused
 * worker is told (tg_acquire sleeps it): short, so waiters come back
 * soon after a slice arrives.  A window's local ring cannot be drained
 * that way, so its cap, empty or not, is renewed for FED_HOLD_NS: its
 * waiters may come back up to that late, which a limit counted over
 * minutes or days can afford.  A pass later than a cap's end is a
 * lapse, counted and logged when the broker stops; what the workers
 * took meanwhile (the segment's grant counters less what the cap saw)
 * is a debt, paid from the next slices, so lapses do not add up.
 *
 * The bound.  A unit is debited in Redis when granted and spent within
 * a slice's life L after.  In any interval of length P the fleet spends
 * what Redis debited in an interval of P + L, and at most the slices
 * outstanding at its start more than what it debited within it, so
 * beyond a rate limit's own (count + burst per period) it admits at most
 *
 *	E = min(k * N * S, r * L)
 *
 * for N brokers holding k = FED_SLICES slices of at most S = fed_smax()
 * units each, r = count / period.  Defaults, 600 requests/min burst 10
 * shared by 3 brokers: L = 1 s, S = ceil(r L / 4) = 3, k = 2, so
 * E = min(18, 10) = 10 requests a minute, 1.7 % (the goal: 5 %).
 * A window limit is exact (fed_lua.h): E = 0.
 */
#include <sys/socket.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "fed.h"
#include "fed_lua.h"
#include "gcra.h"
#include "limit.h"
#include "log.h"
#include "srvcap.h"

#define FED_PASS_NS	 UINT64_C(5000000)	/* a pass at least every 5 ms */
#define FED_HOLD_NS	 UINT64_C(1000000000)	/* a cap with units: 1 s */
#define FED_EMPTY_HOLD_NS UINT64_C(50000000)	/* an empty one: 50 ms */
#define FED_IO_TIMEOUT_MS 250			/* each Redis call */
#define FED_BACKOFF_MIN_NS UINT64_C(50000000)	/* reconnect: 50 ms.. */
#define FED_BACKOFF_MAX_NS UINT64_C(2000000000)	/* ..doubling to 2 s */
#define FED_DEF_IDLE_NS	 UINT64_C(10000000000)	/* a definition unused */
#define FED_DEMAND_NS	 FED_LIFE_NS		/* demand seen: lease on */
#define FED_DEF_MAX	 (SEG_CHAIN_MAX * 4 * 21)
#define FED_RING	 80			/* window grants remembered */

enum { SCRIPT_LEASE, SCRIPT_PAUSE, SCRIPT_RESTORE, SCRIPTS };

/* A slice held: units not spent yet, and when it ends (CLOCK_MONOTONIC). */
struct fed_slice {
	uint64_t	left;
	uint64_t	end_ns;
};

/* A rate or window limit of a global key. */
struct fed_lim {
	uint16_t	id;		/* limit id in the segment */
	uint8_t		kind;		/* LIM_RATE, LIM_WINDOW */
	uint64_t	count;		/* as the config file says */
	uint64_t	period_ns;
	uint64_t	burst;
	uint64_t	tau_ns;		/* rate: the local bucket in force */
	uint64_t	unit_ns;	/* rate: one unit's cost there */
	uint64_t	smax;		/* units in one slice at most */
	struct fed_slice sl[FED_SLICES];	/* oldest first */
	unsigned	nsl;
	uint64_t	wrote;		/* units in the cap as last written */
	uint64_t	denied_seen;	/* seg_lstate.denied at the last pass */
	uint64_t	demand_until_ns; /* spent or refused lately: lease */
	uint64_t	next_ask_ns;	/* Redis said none before then */
	uint64_t	spent_since;	/* units spent since the last grant */
	double		rate;		/* units spent a second, averaged */
	uint64_t	rate_ns;	/* when rate was last brought up */
	double		credit;		/* `safe' outage: units earned */
	uint64_t	credit_ns;	/* when credit was last earned */
	uint64_t	ask;		/* units asked in the lease in flight */
	int		zeroed;		/* `open' outage: cap cleared */
	int		written;	/* its cap is ours: a lapse counts */
	/*
	 * Debt: units the workers took while the cap had lapsed (what the
	 * segment's grant counters say they took, less what the cap saw),
	 * paid from the next slices.
	 */
	uint64_t	grants0;	/* grant counter when counting began */
	uint64_t	cap_spent;	/* units the cap saw taken, in all */
	uint64_t	paid;		/* units of debt paid, in all */
	int		counting;	/* grants0 is set */
	/*
	 * A window: what Redis granted this host, by the sub-window it
	 * counted it in (the lease's `at'), for as long as that counts,
	 * to put back if Redis loses the window (born changes).
	 */
	long long	born;		/* as the last lease said; 0 unknown */
	struct {
		long long	at;
		uint64_t	n;
	}		ring[FED_RING];
	unsigned	nring;
	int		restore;	/* put the ring back, next round */
	int		check;		/* lease with ask 0: learn born */
	uint64_t	checked_ns;	/* last lease of this window */
};

struct fed_key {
	char		name[SEG_NAME_MAX];
	uint16_t	id;
	uint64_t	max_pause_ns;
	struct fed_lim	lim[SEG_CHAIN_MAX];
	unsigned	nlim;
	/* its limits for Redis: "kind:count:period_us:burst;" each */
	char		def[FED_DEF_MAX];
	uint64_t	known_pause_ns;	/* latest pause we set or sent */
	uint64_t	unsent_pause_ns; /* seen while Redis was down */
	unsigned	hosts;		/* active, as the last lease said */
	int		disagree;
	uint64_t	last_lease_ns;
	int		want;		/* a lease is in flight for it */
	uint64_t	sent_ns;	/* when it was sent */
};

struct fed_table {
	struct fed_key	*keys;
	unsigned	nkeys;
};

struct fed {
	pthread_t	th;
	pthread_mutex_t	mu;
	struct fed_table *next;		/* under mu: from fed_configure */
	_Atomic int	stop;
	const struct seg_map *m;	/* the broker's, mapped for its life */
	struct redis_url url;
	char		where[CFG_REDIS_HOST_MAX + 32];	/* for messages */
	char		host[CFG_HOST_ID_MAX + 1];
	char		name[CFG_HOST_ID_MAX + 1];	/* federation */
	char		chan[CFG_HOST_ID_MAX + 16];
	int		outage;		/* enum fed_outage */
	/* the thread's alone from here */
	struct fed_table *tab;
	redisContext	*cmd;		/* scripts */
	redisContext	*sub;		/* SUBSCRIBE */
	char		sha[SCRIPTS][41];
	int		up;
	int		ever_up;
	uint64_t	retry_ns;	/* reconnect not before */
	uint64_t	backoff_ns;
	unsigned	hosts_last;	/* most hosts any key last saw */
	uint64_t	lapses;		/* caps found ended: the thread late */
};

/*
 * Units in one slice of a limit at most: a rate's quarter of what it
 * refills in a slice's life (so that hungry hosts take turns and the
 * bound stays small), a window's 1/32 of its count.  At least 1.
 */
static uint64_t
fed_smax(const struct fed_lim *l)
{
	unsigned __int128 q = (unsigned __int128)4 * l->period_ns, s;

	if (l->kind == LIM_WINDOW)
		return l->count / 32 > 0 ? l->count / 32 : 1;
	if (l->period_ns == 0)
		return 1;
	s = ((unsigned __int128)l->count * FED_LIFE_NS + q - 1) / q;
	if (s < 1)
		return 1;
	return s > CAP_LEFT_MAX / 2 ? CAP_LEFT_MAX / 2 : (uint64_t)s;
}

static const char *
outage_name(int mode)
{
	return mode == FED_OUTAGE_CLOSED ? "closed" :
	    mode == FED_OUTAGE_OPEN ? "open" : "safe";
}

/* The config's global keys, with their ids in the segment; NULL: none. */
static struct fed_table *
table_build(const struct broker *b)
{
	const struct seg_header *h = b->m.hdr;
	struct fed_table *t;
	struct fed_key *k;

	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	if (b->cfg.nkeys > 0 && (t->keys = calloc(b->cfg.nkeys,
	    sizeof(*t->keys))) == NULL) {
		free(t);
		return NULL;
	}
	for (unsigned i = 0; i < b->cfg.nkeys; i++) {
		const struct key_spec *ks = &b->cfg.keys[i];
		uint32_t id;
		size_t o = 0;

		if (!ks->global)
			continue;
		for (id = 0; id < h->max_keys; id++)
			if (strcmp(b->keys[id].name, ks->name) == 0)
				break;
		if (id == h->max_keys)
			continue;	/* not published: cannot be */
		k = &t->keys[t->nkeys++];
		memcpy(k->name, ks->name, sizeof(k->name));
		k->id = (uint16_t)id;
		k->max_pause_ns = b->keys[id].max_pause_ns ?
		    b->keys[id].max_pause_ns : CFG_MAX_PAUSE_NS;
		for (uint32_t lid = 0; lid < h->max_limits; lid++) {
			const struct lim_slot *ls = &b->lims[lid];
			struct fed_lim *l;

			if (!ls->used || ls->key != id)
				continue;
			if (ls->conf.kind == LIM_CONC) {
				log_warnx("federation: [%s]: concurrency is "
				    "this host's alone (global concurrency "
				    "is not leased yet)", k->name);
				continue;
			}
			l = &k->lim[k->nlim++];
			l->id = (uint16_t)lid;
			l->kind = ls->conf.kind;
			l->count = ls->conf.count;
			l->period_ns = ls->conf.period_ns;
			l->burst = ls->conf.burst;
			if (ls->spec.kind == LIM_RATE) {
				l->tau_ns = gcra_tau_margin_ns(ls->spec.burst,
				    ls->spec.period_ns, ls->spec.count,
				    limit_margin_ns(&ls->spec));
				l->unit_ns = gcra_cost_ns(1, ls->spec.period_ns,
				    ls->spec.count);
			}
			l->smax = fed_smax(l);
			o += (size_t)snprintf(k->def + o, sizeof(k->def) - o,
			    "%u:%" PRIu64 ":%" PRIu64 ":%" PRIu64 ";",
			    l->kind, l->count, l->period_ns / 1000,
			    l->kind == LIM_RATE ? l->burst : 0);
		}
	}
	return t;
}

static void
table_free(struct fed_table *t)
{
	if (t == NULL)
		return;
	free(t->keys);
	free(t);
}

/* Say in the segment whether l is global (tollstat reads it). */
static void
lim_mark(struct fed *f, const struct fed_lim *l, int global)
{
	struct seg_lstate *ls = &seg_lstates(f->m)[l->id];

	/* Relaxed, as every fed_* word: figures for tollstat alone. */
	atomic_store_explicit(&ls->fed_info, global ? FED_INFO(0, 0,
	    FED_INFO_GLOBAL) : 0, memory_order_relaxed);
	if (!global)
		atomic_store_explicit(&ls->fed_held, 0, memory_order_relaxed);
}

/* The broker's federation state, SEG_FED_*, for tollstat. */
static void
state_mark(struct fed *f)
{
	atomic_store_explicit(&f->m->hdr->fed_state, SEG_FED_ON |
	    (f->up ? SEG_FED_UP : 0) | (uint64_t)f->outage << 8,
	    memory_order_relaxed);
}

/*
 * A new table replaces the thread's: what a key and limit that stay the
 * same held (slices, the cap's count, pauses known) carries over.
 */
static void
table_take(struct fed *f)
{
	struct fed_table *t;

	pthread_mutex_lock(&f->mu);
	t = f->next;
	f->next = NULL;
	pthread_mutex_unlock(&f->mu);
	if (t == NULL)
		return;
	for (unsigned i = 0; f->tab != NULL && i < t->nkeys; i++) {
		struct fed_key *nk = &t->keys[i];

		for (unsigned j = 0; j < f->tab->nkeys; j++) {
			struct fed_key *ok = &f->tab->keys[j];

			if (strcmp(ok->name, nk->name) != 0 ||
			    ok->id != nk->id)
				continue;
			nk->known_pause_ns = ok->known_pause_ns;
			nk->hosts = ok->hosts;
			for (unsigned a = 0; a < nk->nlim; a++)
				for (unsigned c = 0; c < ok->nlim; c++) {
					struct fed_lim *nl = &nk->lim[a];
					const struct fed_lim *ol = &ok->lim[c];

					if (ol->id != nl->id ||
					    ol->kind != nl->kind)
						continue;
					memcpy(nl->sl, ol->sl, sizeof(nl->sl));
					nl->nsl = ol->nsl;
					nl->wrote = ol->wrote;
					nl->denied_seen = ol->denied_seen;
					nl->demand_until_ns =
					    ol->demand_until_ns;
					nl->born = ol->born;
					nl->grants0 = ol->grants0;
					nl->cap_spent = ol->cap_spent;
					nl->paid = ol->paid;
					nl->counting = ol->counting;
					memcpy(nl->ring, ol->ring,
					    sizeof(nl->ring));
					nl->nring = ol->nring;
				}
		}
	}
	/* tollstat: the old table's limits are no longer, the new are. */
	for (unsigned i = 0; f->tab != NULL && i < f->tab->nkeys; i++)
		for (unsigned j = 0; j < f->tab->keys[i].nlim; j++)
			lim_mark(f, &f->tab->keys[i].lim[j], 0);
	for (unsigned i = 0; i < t->nkeys; i++)
		for (unsigned j = 0; j < t->keys[i].nlim; j++)
			lim_mark(f, &t->keys[i].lim[j], 1);
	table_free(f->tab);
	f->tab = t;
}

/*
 * Pause key k until until_ns (ours), as tg_observe would: the latest
 * pause wins (a CAS max), clamped to the key's max_pause.
 */
static void
pause_apply(struct fed *f, struct fed_key *k, uint64_t until_ns,
    uint64_t now)
{
	struct seg_kstate *ks = &seg_kstates(f->m)[k->id];
	uint64_t cur;

	if (until_ns <= now)
		return;
	if (until_ns - now > k->max_pause_ns)
		until_ns = now + k->max_pause_ns;
	if (until_ns > k->known_pause_ns)
		k->known_pause_ns = until_ns;
	cur = atomic_load_explicit(&ks->paused_until_ns, memory_order_relaxed);
	do {
		if (cur >= until_ns)
			return;
		/* Relaxed: as feedback.c, the pause guards no other data. */
	} while (!atomic_compare_exchange_weak_explicit(&ks->paused_until_ns,
	    &cur, until_ns, memory_order_relaxed, memory_order_relaxed));
	/* A waiter's reserved slot predates it: paused_since in client.c. */
	atomic_store_explicit(&ks->pause_set_ns, now, memory_order_relaxed);
	log_debug("federation: [%s] paused for %" PRIu64 " ms", k->name,
	    (until_ns - now) / 1000000);
}

/* The units held in l's slices. */
static uint64_t
slices_left(const struct fed_lim *l)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < l->nsl; i++)
		n += l->sl[i].left;
	return n;
}

/* Spend n units of l's slices, oldest first. */
static void
slices_spend(struct fed_lim *l, uint64_t n)
{
	for (unsigned i = 0; i < l->nsl && n > 0; i++) {
		uint64_t t = n < l->sl[i].left ? n : l->sl[i].left;

		l->sl[i].left -= t;
		n -= t;
	}
}

/* Drop the slices that ended or are spent. */
static void
slices_expire(struct fed_lim *l, uint64_t now)
{
	unsigned o = 0;

	for (unsigned i = 0; i < l->nsl; i++)
		if (l->sl[i].end_ns > now && l->sl[i].left > 0)
			l->sl[o++] = l->sl[i];
	l->nsl = o;
}

/*
 * Average what l spends over about a slice life: a slice of what it
 * spends in half a life is used before it ends, where one of smax units
 * could end half unspent on a host that spends little, and be lost.
 */
static void
rate_note(struct fed_lim *l, uint64_t spent, uint64_t now)
{
	double dt;

	if (l->rate_ns == 0 || now <= l->rate_ns) {
		l->rate_ns = now;
		return;
	}
	dt = (double)(now - l->rate_ns) / 1e9;
	l->rate_ns = now;
	/* An exponential average with a time constant of one life. */
	l->rate += ((double)spent / dt - l->rate) *
	    (dt < 1.0 ? dt / ((double)FED_LIFE_NS / 1e9) : 1.0);
	if (l->rate < 0)
		l->rate = 0;
}

/*
 * Pay what the workers took past the cap (a lapse) from the slices held.
 * The grant counters count a take after its cap did, so they never run
 * ahead of the cap: what they show beyond it was taken without it.
 */
static void
debt_pay(struct fed *f, struct fed_lim *l)
{
	uint64_t g = seg_grant_sum(f->m, (uint64_t)f->m->hdr->max_keys +
	    l->id), owed, held;

	if (!l->counting) {
		l->grants0 = g - l->cap_spent;
		l->counting = 1;
	}
	if (g - l->grants0 <= l->cap_spent + l->paid)
		return;
	owed = g - l->grants0 - l->cap_spent - l->paid;
	held = slices_left(l);
	if (owed > held)
		owed = held;
	slices_spend(l, owed);
	l->paid += owed;
}

/*
 * Bring l's cap word up to date: count what the workers spent, drop
 * what ended, write what is held until a renewed end.  A CAS from the
 * word read, so a take in between is counted on the next round, never
 * lost; the slices are changed only by what was read.
 */
static void
cap_sync(struct fed *f, struct fed_lim *l, uint64_t now)
{
	struct seg_lstate *ls = &seg_lstates(f->m)[l->id];
	uint64_t cur, live, spent, total, next, d;

	if (!f->up && f->ever_up && f->outage == FED_OUTAGE_OPEN) {
		/* Once: from then on a server's own caps are left alone. */
		if (!l->zeroed)
			atomic_store_explicit(&ls->srv_cap, 0,
			    memory_order_relaxed);
		l->zeroed = 1;
		l->written = 0;
		l->counting = 0;	/* no debt for what `open' allowed */
		l->nsl = 0;
		l->wrote = 0;
		atomic_store_explicit(&ls->fed_held, 0, memory_order_relaxed);
		return;
	}
	l->zeroed = 0;
	/* Relaxed: the cap word publishes no other memory (srvcap.c). */
	cur = atomic_load_explicit(&ls->srv_cap, memory_order_relaxed);
	if (l->written && !cap_live(cur, now))
		f->lapses++;
	l->written = 1;
	for (;;) {
		live = cap_live(cur, now) ? cap_left(cur) : 0;
		spent = l->wrote > live ? l->wrote - live : 0;
		if (spent > 0) {
			slices_spend(l, spent);
			l->spent_since += spent;
			l->demand_until_ns = now + FED_DEMAND_NS;
		}
		l->cap_spent += spent;
		rate_note(l, spent, now);
		l->wrote = slices_left(l);
		slices_expire(l, now);
		debt_pay(f, l);
		total = slices_left(l);
		next = cap_make(total, now + (total > 0 ||
		    l->kind != LIM_RATE ? FED_HOLD_NS : FED_EMPTY_HOLD_NS));
		if (atomic_compare_exchange_weak_explicit(&ls->srv_cap, &cur,
		    next, memory_order_relaxed, memory_order_relaxed))
			break;
	}
	l->wrote = total;
	/* Relaxed: a figure for tollstat, which needs no order with it. */
	atomic_store_explicit(&ls->fed_held, total, memory_order_relaxed);
	/*
	 * The local bucket holds no more than the slices: a lapse of the
	 * cap (this thread late) then admits only what the rate refills.
	 */
	if (l->kind == LIM_RATE && l->unit_ns > 0) {
		d = total < l->tau_ns / l->unit_ns ? total * l->unit_ns :
		    l->tau_ns;
		gcra_raise(&ls->tat_ns, now + l->tau_ns - d);
	}
}

/*
 * Whether l should ask Redis for a slice now, and how many units.  A
 * window with no demand still leases for nothing (l->check) once a
 * slice life, to learn if Redis lost it while this host holds grants
 * in it.
 */
static uint64_t
want_units(struct fed_lim *l, uint64_t now)
{
	uint64_t ask = now >= l->next_ask_ns && l->nsl < FED_SLICES &&
	    now < l->demand_until_ns && slices_left(l) <= l->smax / 2 ?
	    l->smax : 0;
	uint64_t half = (uint64_t)(l->rate * (double)FED_LIFE_NS / 2e9 + 0.999);

	if (ask > 0 && half < ask)
		ask = half > 0 ? half : 1;

	l->check = ask == 0 && l->kind == LIM_WINDOW && l->nring > 0 &&
	    now - l->checked_ns >= FED_LIFE_NS;
	return ask;
}

/* Refusals by l since the last pass mean demand, as spends do. */
static void
demand_look(struct fed *f, struct fed_lim *l, uint64_t now)
{
	uint64_t d = atomic_load_explicit(&seg_lstates(f->m)[l->id].denied,
	    memory_order_relaxed);

	if (d != l->denied_seen)
		l->demand_until_ns = now + FED_DEMAND_NS;
	l->denied_seen = d;
}

static void
down(struct fed *f, const char *why)
{
	if (f->up)
		log_warnx("federation: Redis at %s lost (%s); global keys "
		    "are `%s' until it is back", f->where, why,
		    outage_name(f->outage));
	if (f->cmd != NULL)
		redisFree(f->cmd);
	if (f->sub != NULL)
		redisFree(f->sub);
	f->cmd = f->sub = NULL;
	f->up = 0;
	state_mark(f);
	f->backoff_ns = f->backoff_ns == 0 ? FED_BACKOFF_MIN_NS :
	    f->backoff_ns * 2 > FED_BACKOFF_MAX_NS ? FED_BACKOFF_MAX_NS :
	    f->backoff_ns * 2;
	f->retry_ns = now_ns() + f->backoff_ns;
	if (f->tab != NULL)
		for (unsigned i = 0; i < f->tab->nkeys; i++)
			for (unsigned j = 0; j < f->tab->keys[i].nlim; j++) {
				f->tab->keys[i].lim[j].credit = 0;
				f->tab->keys[i].lim[j].credit_ns = 0;
			}
}

/*
 * Whether reply r is a Redis error whose code (its first word, as Redis
 * sends it: "NOSCRIPT No matching script...") is code.
 */
static int
err_code(const redisReply *r, const char *code)
{
	size_t n = strlen(code);

	return r != NULL && r->type == REDIS_REPLY_ERROR && r->len >= n &&
	    strncmp(r->str, code, n) == 0 && (r->str[n] == ' ' ||
	    r->str[n] == '\0');
}

/* AUTH and SELECT as the URL says; 0 or -1 (why in *why). */
static int
login(struct fed *f, redisContext *c, int select, const char **why)
{
	redisReply *r;

	if (f->url.has_password) {
		if (f->url.user[0] != '\0')
			r = redisCommand(c, "AUTH %s %s", f->url.user,
			    f->url.password);
		else
			r = redisCommand(c, "AUTH %s", f->url.password);
		if (r == NULL || r->type == REDIS_REPLY_ERROR) {
			*why = r == NULL ? c->errstr : "AUTH refused";
			freeReplyObject(r);
			return -1;
		}
		freeReplyObject(r);
	}
	if (select && f->url.db != 0) {
		r = redisCommand(c, "SELECT %d", f->url.db);
		if (r == NULL || r->type == REDIS_REPLY_ERROR) {
			*why = r == NULL ? c->errstr : "SELECT refused";
			freeReplyObject(r);
			return -1;
		}
		freeReplyObject(r);
	}
	return 0;
}

static redisContext *
dial(struct fed *f)
{
	struct timeval tv = { 0, FED_IO_TIMEOUT_MS * 1000 };
	redisContext *c;

	if (f->url.path[0] != '\0')
		c = redisConnectUnixWithTimeout(f->url.path, tv);
	else
		c = redisConnectWithTimeout(f->url.host, f->url.port, tv);
	if (c != NULL && c->err == 0)
		(void)redisSetTimeout(c, tv);
	return c;
}

/* SCRIPT LOAD both scripts; 0 or -1. */
static int
scripts_load(struct fed *f, const char **why)
{
	static const char *const src[SCRIPTS] = { FED_LUA_LEASE,
	    FED_LUA_PAUSE, FED_LUA_RESTORE };
	redisReply *r;

	for (int i = 0; i < SCRIPTS; i++) {
		r = redisCommand(f->cmd, "SCRIPT LOAD %s", src[i]);
		if (r == NULL || r->type != REDIS_REPLY_STRING ||
		    r->len != 40) {
			*why = r == NULL ? f->cmd->errstr :
			    r->type == REDIS_REPLY_ERROR ? r->str :
			    "SCRIPT LOAD: unexpected reply";
			freeReplyObject(r);
			return -1;
		}
		memcpy(f->sha[i], r->str, 40);
		f->sha[i][40] = '\0';
		freeReplyObject(r);
	}
	return 0;
}

static void
connect_all(struct fed *f)
{
	const char *why = NULL;
	redisReply *r;

	f->cmd = dial(f);
	f->sub = dial(f);
	if (f->cmd == NULL || f->sub == NULL) {
		why = "out of memory";
		goto fail;
	}
	if (f->cmd->err || f->sub->err) {
		why = f->cmd->err ? f->cmd->errstr : f->sub->errstr;
		goto fail;
	}
	if (login(f, f->cmd, 1, &why) < 0 || login(f, f->sub, 0, &why) < 0 ||
	    scripts_load(f, &why) < 0)
		goto fail;
	r = redisCommand(f->sub, "SUBSCRIBE %s", f->chan);
	if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
		why = r == NULL ? f->sub->errstr : "SUBSCRIBE refused";
		freeReplyObject(r);
		goto fail;
	}
	freeReplyObject(r);
	f->up = 1;
	f->ever_up = 1;
	f->backoff_ns = 0;
	state_mark(f);
	log_info("federation: Redis at %s connected: host %s, federation %s",
	    f->where, f->host, f->name);
	return;
fail:
	if (f->retry_ns == 0 || f->backoff_ns >= FED_BACKOFF_MAX_NS)
		log_warnx("federation: Redis at %s: %s", f->where,
		    why != NULL ? why : "cannot connect");
	down(f, why != NULL ? why : "cannot connect");
}

/*
 * Run a script: EVALSHA, and on NOSCRIPT (Redis restarted, or SCRIPT
 * FLUSH) load the scripts again and run it once more.  argv[1] is
 * filled with the sha.  NULL when the connection failed (it is down).
 */
static redisReply *
run(struct fed *f, int script, int argc, const char **argv, size_t *argl)
{
	const char *why;
	redisReply *r;

	for (int tries = 0; tries < 2; tries++) {
		argv[1] = f->sha[script];
		argl[1] = 40;
		r = redisCommandArgv(f->cmd, argc, argv, argl);
		if (r == NULL) {
			down(f, f->cmd->errstr);
			return NULL;
		}
		if (!err_code(r, "NOSCRIPT"))
			return r;
		freeReplyObject(r);
		log_info("federation: scripts gone from Redis; loading them "
		    "again");
		if (scripts_load(f, &why) < 0) {
			down(f, why);
			return NULL;
		}
	}
	return NULL;
}

/* Tell Redis and every broker that k is paused for left_ns. */
static void
pause_send(struct fed *f, struct fed_key *k, uint64_t left_ns)
{
	char key[SEG_NAME_MAX + 80], left[24], msg[SEG_NAME_MAX + 80];
	const char *argv[7];
	size_t argl[7];
	redisReply *r;

	snprintf(key, sizeof(key), "{%s:%s}:d", f->name, k->name);
	snprintf(left, sizeof(left), "%" PRIu64, left_ns / 1000);
	snprintf(msg, sizeof(msg), "%s %s", f->host, k->name);
	argv[0] = "EVALSHA";
	argv[1] = f->sha[SCRIPT_PAUSE];	/* run() sets it again */
	argv[2] = "1";
	argv[3] = key;
	argv[4] = left;
	argv[5] = f->chan;
	argv[6] = msg;
	for (int i = 0; i < 7; i++)
		argl[i] = strlen(argv[i]);
	if ((r = run(f, SCRIPT_PAUSE, 7, argv, argl)) == NULL)
		return;
	if (r->type == REDIS_REPLY_ERROR)
		log_warnx("federation: [%s]: pause: %s", k->name, r->str);
	freeReplyObject(r);
}

/*
 * A pause the workers set on k that we did not (a 429 here): send it.
 * Pauses we set from Redis are known_pause_ns already.
 */
static void
pause_look(struct fed *f, struct fed_key *k, uint64_t now)
{
	uint64_t cur = atomic_load_explicit(
	    &seg_kstates(f->m)[k->id].paused_until_ns, memory_order_relaxed);

	if (cur > now && cur > k->known_pause_ns + 1000000) {
		k->known_pause_ns = cur;
		if (f->up)
			pause_send(f, k, cur - now);
		else
			k->unsent_pause_ns = cur;
	}
	if (f->up && k->unsent_pause_ns > now) {
		pause_send(f, k, k->unsent_pause_ns - now);
		k->unsent_pause_ns = 0;
	}
}

/*
 * A lease's reply about window l: remember a grant by its sub-window,
 * forget what has left the window, and see whether Redis lost it.
 */
static void
window_reply(struct fed_lim *l, long long now_us, long long g, long long at,
    long long born, uint64_t now)
{
	long long idx = (long long)floor((double)now_us /
	    ((double)(l->period_ns / 1000) / 64));
	unsigned o = 0;

	l->checked_ns = now;
	for (unsigned i = 0; i < l->nring; i++)
		if (l->ring[i].at > idx - 64)
			l->ring[o++] = l->ring[i];
	l->nring = o;
	if (born != 0 && l->born != 0 && born != l->born && l->nring > 0)
		l->restore = 1;
	if (born != 0)
		l->born = born;
	if (g <= 0 || at <= 0)
		return;
	for (unsigned i = 0; i < l->nring; i++)
		if (l->ring[i].at == at) {
			l->ring[i].n += (uint64_t)g;
			return;
		}
	if (l->nring == FED_RING) {
		/* The oldest goes: a window of more sub-windows than this. */
		memmove(&l->ring[0], &l->ring[1], (FED_RING - 1) *
		    sizeof(l->ring[0]));
		l->nring--;
	}
	l->ring[l->nring].at = at;
	l->ring[l->nring].n = (uint64_t)g;
	l->nring++;
}

/* Put back what Redis lost of window l of k (RESTORE, fed_lua.h). */
static void
window_restore(struct fed *f, struct fed_key *k, unsigned j)
{
	struct fed_lim *l = &k->lim[j];
	char key[SEG_NAME_MAX + 80], nums[2 + 2 * FED_RING][24];
	const char *argv[3 + 2 + 2 * FED_RING];
	size_t argl[sizeof(argv) / sizeof(argv[0])];
	redisReply *r;
	int argc = 0;

	l->restore = 0;
	snprintf(key, sizeof(key), "{%s:%s}:l%u", f->name, k->name, j);
	argv[argc++] = "EVALSHA";
	argv[argc++] = f->sha[SCRIPT_RESTORE];
	argv[argc++] = "1";
	argv[argc++] = key;
	snprintf(nums[0], sizeof(nums[0]), "%lld", l->born);
	snprintf(nums[1], sizeof(nums[1]), "%" PRIu64, l->period_ns / 1000);
	argv[argc++] = nums[0];
	argv[argc++] = nums[1];
	for (unsigned i = 0; i < l->nring; i++) {
		snprintf(nums[2 + 2 * i], 24, "%lld", l->ring[i].at);
		snprintf(nums[3 + 2 * i], 24, "%" PRIu64, l->ring[i].n);
		argv[argc++] = nums[2 + 2 * i];
		argv[argc++] = nums[3 + 2 * i];
	}
	for (int a = 0; a < argc; a++)
		argl[a] = strlen(argv[a]);
	if ((r = run(f, SCRIPT_RESTORE, argc, argv, argl)) == NULL)
		return;
	if (r->type == REDIS_REPLY_INTEGER && r->integer >= 0)
		log_warnx("federation: [%s]: Redis lost its window; put back "
		    "the %lld units this host was granted in it", k->name,
		    r->integer);
	else if (r->type == REDIS_REPLY_ERROR)
		log_warnx("federation: [%s]: restore: %s", k->name, r->str);
	freeReplyObject(r);
}

/* Lease slices for every key that wants some: one pipeline, a reply each. */
static void
lease_round(struct fed *f, uint64_t now)
{
	struct fed_table *t = f->tab;
	unsigned sent = 0;

	for (unsigned i = 0; i < t->nkeys && f->up; i++) {
		struct fed_key *k = &t->keys[i];
		char keys[2 + SEG_CHAIN_MAX][SEG_NAME_MAX + 80];
		char nums[5 * SEG_CHAIN_MAX][24], life[24], idle[24];
		const char *argv[4 + 2 + SEG_CHAIN_MAX + 4 + 5 * SEG_CHAIN_MAX];
		size_t argl[sizeof(argv) / sizeof(argv[0])];
		int argc = 0, any = 0;

		k->want = 0;
		for (unsigned j = 0; j < k->nlim; j++) {
			k->lim[j].ask = want_units(&k->lim[j], now);
			any |= k->lim[j].ask > 0 || k->lim[j].check;
		}
		if (!any)
			continue;
		argv[argc++] = "EVALSHA";
		argv[argc++] = f->sha[SCRIPT_LEASE];
		snprintf(nums[0], sizeof(nums[0]), "%u", k->nlim + 2);
		argv[argc++] = nums[0];
		snprintf(keys[0], sizeof(keys[0]), "{%s:%s}:d", f->name,
		    k->name);
		snprintf(keys[1], sizeof(keys[1]), "{%s:%s}:h", f->name,
		    k->name);
		for (unsigned j = 0; j < k->nlim; j++)
			snprintf(keys[2 + j], sizeof(keys[0]), "{%s:%s}:l%u",
			    f->name, k->name, j);
		for (unsigned j = 0; j < k->nlim + 2; j++)
			argv[argc++] = keys[j];
		argv[argc++] = f->host;
		argv[argc++] = k->def;
		snprintf(life, sizeof(life), "%" PRIu64, FED_LIFE_NS / 1000);
		snprintf(idle, sizeof(idle), "%" PRIu64,
		    FED_DEF_IDLE_NS / 1000);
		argv[argc++] = life;
		argv[argc++] = idle;
		for (unsigned j = 0; j < k->nlim; j++) {
			const struct fed_lim *l = &k->lim[j];
			char *n = nums[1 + 5 * j];

			snprintf(n, 24, "%u", l->kind);
			snprintf(n + 24, 24, "%" PRIu64, l->count);
			snprintf(n + 48, 24, "%" PRIu64, l->period_ns / 1000);
			snprintf(n + 72, 24, "%" PRIu64, l->burst);
			snprintf(n + 96, 24, "%" PRIu64, l->ask);
			for (int a = 0; a < 5; a++)
				argv[argc++] = n + 24 * a;
		}
		for (int a = 0; a < argc; a++)
			argl[a] = strlen(argv[a]);
		if (redisAppendCommandArgv(f->cmd, argc, argv, argl) !=
		    REDIS_OK) {
			down(f, "out of memory");
			return;
		}
		k->want = 1;
		k->sent_ns = now;
		sent++;
	}
	for (unsigned i = 0; i < t->nkeys && sent > 0 && f->up; i++) {
		struct fed_key *k = &t->keys[i];
		redisReply *r = NULL;
		void *rv;
		uint64_t at;

		if (!k->want)
			continue;
		sent--;
		if (redisGetReply(f->cmd, &rv) != REDIS_OK) {
			down(f, f->cmd->errstr);
			return;
		}
		r = rv;
		if (err_code(r, "NOSCRIPT")) {
			/* Loaded again; the next pass asks again. */
			const char *why;

			freeReplyObject(r);
			log_info("federation: scripts gone from Redis; "
			    "loading them again");
			if (scripts_load(f, &why) < 0) {
				down(f, why);
				return;
			}
			continue;
		}
		if (r->type != REDIS_REPLY_ARRAY ||
		    r->elements != 4 + 4 * (size_t)k->nlim) {
			log_warnx("federation: [%s]: lease: %s", k->name,
			    r->type == REDIS_REPLY_ERROR ? r->str :
			    "unexpected reply");
			freeReplyObject(r);
			continue;
		}
		at = now_ns();
		k->last_lease_ns = at;
		if (r->element[1]->integer > 0)
			pause_apply(f, k, at + (uint64_t)r->element[1]->integer
			    * 1000, at);
		if (r->element[2]->integer != k->disagree) {
			k->disagree = (int)r->element[2]->integer;
			if (k->disagree)
				log_warnx("federation: [%s]: another broker "
				    "defined its limits first, differently; "
				    "leasing under theirs", k->name);
		}
		k->hosts = r->element[3]->integer > 0 ?
		    (unsigned)r->element[3]->integer : 1;
		if (k->hosts > f->hosts_last)
			f->hosts_last = k->hosts;
		for (unsigned j = 0; j < k->nlim; j++) {
			struct fed_lim *l = &k->lim[j];
			long long g = r->element[4 + 4 * j]->integer;
			long long eta = r->element[5 + 4 * j]->integer;
			long long wat = r->element[6 + 4 * j]->integer;
			long long born = r->element[7 + 4 * j]->integer;

			if (l->kind == LIM_WINDOW)
				window_reply(l, r->element[0]->integer, g, wat,
				    born, at);
			if (l->ask == 0)
				continue;
			log_debug("federation: [%s] limit %u: asked %" PRIu64
			    ", granted %lld", k->name, j, l->ask, g);
			atomic_store_explicit(
			    &seg_lstates(f->m)[l->id].fed_info,
			    FED_INFO(at, k->hosts, FED_INFO_GLOBAL |
			    (k->disagree ? FED_INFO_DISAGREE : 0)),
			    memory_order_relaxed);
			if (g > 0)
				atomic_fetch_add_explicit(&seg_lstates(f->m)[
				    l->id].fed_granted, (uint64_t)g,
				    memory_order_relaxed);
			if (g > 0 && l->nsl < FED_SLICES) {
				/* Its life from before we asked: never longer
				 * than Redis reckons it. */
				l->sl[l->nsl].left = (uint64_t)g;
				l->sl[l->nsl].end_ns = k->sent_ns +
				    FED_LIFE_NS;
				l->nsl++;
				l->spent_since = 0;
				l->next_ask_ns = 0;
			} else if (g <= 0)
				l->next_ask_ns = at + (eta > 0 ?
				    (uint64_t)eta * 1000 : 1000000);
			cap_sync(f, l, at);
		}
		freeReplyObject(r);
	}
	for (unsigned i = 0; i < t->nkeys && f->up; i++)
		for (unsigned j = 0; j < t->keys[i].nlim && f->up; j++)
			if (t->keys[i].lim[j].restore)
				window_restore(f, &t->keys[i], j);
}

/*
 * Redis is down.  `safe': each limit earns units at its fair share, the
 * rate divided by the hosts last seen, while there is demand; a window
 * earns none (only Redis can keep it exact), so it runs out as under
 * `closed'.  `closed': nothing new.  `open': cap_sync cleared the caps.
 */
static void
outage_grants(struct fed *f, uint64_t now)
{
	unsigned hosts = f->hosts_last > 0 ? f->hosts_last : 1;

	if (f->outage != FED_OUTAGE_SAFE || !f->ever_up)
		return;
	for (unsigned i = 0; i < f->tab->nkeys; i++)
		for (unsigned j = 0; j < f->tab->keys[i].nlim; j++) {
			struct fed_lim *l = &f->tab->keys[i].lim[j];
			uint64_t g;

			if (l->kind != LIM_RATE)
				continue;
			if (l->credit_ns != 0 && now > l->credit_ns)
				l->credit += (double)(now - l->credit_ns) *
				    (double)l->count / (double)l->period_ns /
				    hosts;
			l->credit_ns = now;
			if (l->credit > (double)l->smax)
				l->credit = (double)l->smax;
			if (l->nsl >= FED_SLICES || l->credit < 1 ||
			    now >= l->demand_until_ns)
				continue;
			g = (uint64_t)l->credit;
			l->credit -= (double)g;
			l->sl[l->nsl].left = g;
			l->sl[l->nsl].end_ns = now + FED_LIFE_NS;
			l->nsl++;
		}
}

/* Pauses other brokers published; our own come back too and are known. */
static void
sub_read(struct fed *f, uint64_t now)
{
	void *rv;

	if (redisBufferRead(f->sub) != REDIS_OK) {
		down(f, f->sub->errstr);
		return;
	}
	for (;;) {
		char host[CFG_HOST_ID_MAX + 1], name[SEG_NAME_MAX];
		unsigned long long left;
		redisReply *r;

		if (redisGetReplyFromReader(f->sub, &rv) != REDIS_OK) {
			down(f, f->sub->errstr);
			return;
		}
		if ((r = rv) == NULL)
			return;
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
		    r->element[2]->type == REDIS_REPLY_STRING &&
		    sscanf(r->element[2]->str, "%63s %47s %llu", host, name,
		    &left) == 3 && strcmp(host, f->host) != 0 &&
		    f->tab != NULL)
			for (unsigned i = 0; i < f->tab->nkeys; i++)
				if (strcmp(f->tab->keys[i].name, name) == 0)
					pause_apply(f, &f->tab->keys[i], now +
					    left * 1000, now);
		freeReplyObject(r);
	}
}

/* One pass: pauses out, slices in, caps written. */
static void
pass(struct fed *f)
{
	uint64_t now = now_ns();

	if (f->tab == NULL)
		return;
	atomic_store_explicit(&f->m->hdr->fed_lapses, f->lapses,
	    memory_order_relaxed);
	for (unsigned i = 0; i < f->tab->nkeys; i++) {
		struct fed_key *k = &f->tab->keys[i];

		pause_look(f, k, now);
		for (unsigned j = 0; j < k->nlim; j++) {
			demand_look(f, &k->lim[j], now);
			cap_sync(f, &k->lim[j], now);
		}
	}
	if (f->up)
		lease_round(f, now);
	else {
		outage_grants(f, now);
		for (unsigned i = 0; i < f->tab->nkeys; i++)
			for (unsigned j = 0; j < f->tab->keys[i].nlim; j++)
				cap_sync(f, &f->tab->keys[i].lim[j], now);
	}
}

static void *
fed_main(void *arg)
{
	struct fed *f = arg;
	struct pollfd pfd;
	uint64_t now;

	while (!atomic_load_explicit(&f->stop, memory_order_acquire)) {
		table_take(f);
		now = now_ns();
		if (!f->up && now >= f->retry_ns)
			connect_all(f);
		pass(f);
		if (f->up) {
			pfd.fd = f->sub->fd;
			pfd.events = POLLIN;
			if (poll(&pfd, 1, (int)(FED_PASS_NS / 1000000)) > 0)
				sub_read(f, now_ns());
		} else {
			struct timespec ts = { 0, (long)FED_PASS_NS };

			nanosleep(&ts, NULL);
		}
	}
	if (f->cmd != NULL)
		redisFree(f->cmd);
	if (f->sub != NULL)
		redisFree(f->sub);
	if (f->lapses > 0)
		log_warnx("federation: %" PRIu64 " cap lapses (passes later "
		    "than a cap's end)", f->lapses);
	return NULL;
}

struct fed *
fed_start(struct broker *b, int *err)
{
	struct fed *f;
	int r;

	*err = 0;
	/* What a federated broker before us left for tollstat goes. */
	atomic_store_explicit(&b->m.hdr->fed_state, 0, memory_order_relaxed);
	atomic_store_explicit(&b->m.hdr->fed_lapses, 0, memory_order_relaxed);
	for (uint32_t i = 0; i < b->m.hdr->max_limits; i++) {
		struct seg_lstate *ls = &seg_lstates(&b->m)[i];

		atomic_store_explicit(&ls->fed_info, 0, memory_order_relaxed);
		atomic_store_explicit(&ls->fed_held, 0, memory_order_relaxed);
		atomic_store_explicit(&ls->fed_granted, 0,
		    memory_order_relaxed);
	}
	if (b->cfg.redis.url[0] == '\0')
		return NULL;
	if ((f = calloc(1, sizeof(*f))) == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	f->m = &b->m;
	f->url = b->cfg.redis;
	f->outage = b->cfg.redis_outage;
	if (f->url.path[0] != '\0')
		snprintf(f->where, sizeof(f->where), "%s", f->url.path);
	else
		snprintf(f->where, sizeof(f->where), "%s:%d/%d", f->url.host,
		    f->url.port, f->url.db);
	if (b->cfg.host_id[0] != '\0')
		memcpy(f->host, b->cfg.host_id, sizeof(f->host));
	else if (gethostname(f->host, sizeof(f->host)) < 0 ||
	    f->host[0] == '\0')
		strcpy(f->host, "localhost");
	f->host[sizeof(f->host) - 1] = '\0';
	/* A hostname with a blank would split the pause message. */
	for (char *c = f->host; *c; c++)
		if (*c == ' ' || *c == '\t')
			*c = '_';
	memcpy(f->name, b->cfg.federation, sizeof(f->name));
	snprintf(f->chan, sizeof(f->chan), "%s:pause", f->name);
	pthread_mutex_init(&f->mu, NULL);
	state_mark(f);
	f->next = table_build(b);
	if ((r = pthread_create(&f->th, NULL, fed_main, f)) != 0) {
		table_free(f->next);
		pthread_mutex_destroy(&f->mu);
		free(f);
		*err = -r;
		return NULL;
	}
	log_info("federation: host %s, federation %s, Redis at %s, outage "
	    "mode %s", f->host, f->name, f->where, outage_name(f->outage));
	return f;
}

void
fed_configure(struct fed *f, struct broker *b)
{
	struct fed_table *t, *old;

	if (f == NULL)
		return;
	if ((t = table_build(b)) == NULL) {
		log_warnx("federation: out of memory; the old keys stay");
		return;
	}
	pthread_mutex_lock(&f->mu);
	old = f->next;
	f->next = t;
	pthread_mutex_unlock(&f->mu);
	table_free(old);
}

void
fed_stop(struct fed *f)
{
	if (f == NULL)
		return;
	atomic_store_explicit(&f->stop, 1, memory_order_release);
	pthread_join(f->th, NULL);
	table_free(f->next);
	table_free(f->tab);
	pthread_mutex_destroy(&f->mu);
	free(f);
}
