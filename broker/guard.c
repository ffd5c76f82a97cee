/* guard.c: surviving what clients do to the state object (garbage, ftruncate). */
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "gcra.h"
#include "lease.h"
#include "log.h"
#include "srvcap.h"
#include "window.h"

/* What the SIGBUS handler needs, set once before the loop. */
static unsigned char *g_state;
static size_t	g_size;
static int	g_fd = -1;
static volatile sig_atomic_t g_sigbus;

/*
 * A client truncated the state object and we touched a page past its
 * end.  Put the size back (ftruncate is async-signal-safe) and back every
 * page (fallocate, one system call), then return: the faulting access
 * runs again on a zero page.  Without the fallocate, a full /dev/shm has
 * no page to give: the access would fault again, forever, at full CPU,
 * and SIGTERM, which waits in the signalfd, would never be read.  So if
 * either fails, or the fault is anywhere else (a real crash), die of it
 * with the default action.
 */
static void
on_sigbus(int sig, siginfo_t *si, void *uc)
{
	static const char full[] = "tollgated: fatal: the state object "
	    "cannot be backed again after a client cut it (is /dev/shm "
	    "full?)\n";
	unsigned char *a = si->si_addr;

	(void)uc;
	if (g_fd >= 0 && a >= g_state && a < g_state + g_size) {
		if (ftruncate(g_fd, (off_t)g_size) == 0 &&
		    fallocate(g_fd, 0, 0, (off_t)g_size) == 0) {
			g_sigbus++;
			return;
		}
		(void)!write(STDERR_FILENO, full, sizeof(full) - 1);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

void
guard_install(struct broker *b)
{
	struct sigaction sa;

	g_state = b->m.state;
	g_size = b->m.state_size;
	g_fd = b->m.state_fd;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, NULL) < 0)
		fatal("sigaction SIGBUS");
}

void
guard_count(const struct seg_map *m, const char *what, unsigned long n)
{
	if (n == 0)
		return;
	/* Relaxed: a count for people; it orders nothing. */
	atomic_fetch_add_explicit(&m->hdr->repairs, n, memory_order_relaxed);
	log_warnx("repaired %lu x %s in the state object", n, what);
}

/*
 * tg_acquire reserves a rate limit's slots up to its timeout ahead, so a
 * queue of waiters runs the TAT as far ahead as they are willing to
 * wait.  Nothing bounds that but a timeout; a month of queue is more
 * than any honest fleet waits.
 */
#define TAT_QUEUE_MAX_NS	(30ull * 86400 * 1000000000ull)
/* Clocks of two processes read a moment apart differ by less. */
#define CLOCK_SLACK_NS		1000000000ull

/* A key's clamp on pauses (tg_observe clamps every wait to it). */
static uint64_t
key_max_pause(const struct broker *b, uint32_t id)
{
	uint64_t m = id < b->m.hdr->max_keys ? b->keys[id].max_pause_ns : 0;

	return (m ? m : CFG_MAX_PAUSE_NS) + CLOCK_SLACK_NS;
}

/*
 * How far ahead of now a rate limit's TAT can honestly be.  A take leaves
 * it at most tau ahead, plus its wait when tg_acquire reserved a slot
 * (TAT_QUEUE_MAX_NS of it); a settle's debt at most tau + period
 * (gcra_charge's cap in tg_settle).  Both bound the TAT from now, so
 * they do not add up: tau, the larger of the two, and clock slack.  Not
 * one bound for every limit: 2 requests/60day is honestly 60 days ahead
 * after two takes, and a fixed 30 days erased it.  Saturates.
 */
static uint64_t
tat_ahead_max(const struct limit_spec *spec)
{
	uint64_t tau_ns = gcra_tau_ns(spec->burst, spec->period_ns,
	    spec->count);
	uint64_t more = spec->period_ns > TAT_QUEUE_MAX_NS ? spec->period_ns :
	    TAT_QUEUE_MAX_NS;

	more = more > UINT64_MAX - CLOCK_SLACK_NS ? UINT64_MAX :
	    more + CLOCK_SLACK_NS;
	return tau_ns > UINT64_MAX - more ? UINT64_MAX : tau_ns + more;
}

/*
 * Check what clients wrote against what it can be, fix what it cannot
 * be, and count it.  Runs every tick; reads only what the broker's own
 * tables say is there.
 */
static void
scrub(struct broker *b, uint64_t now)
{
	const struct seg_header *h = b->m.hdr;
	struct seg_state *s = (struct seg_state *)b->m.state;
	struct seg_client *cl = seg_clients(&b->m);
	struct seg_kstate *ks = seg_kstates(&b->m);
	struct seg_lstate *ls = seg_lstates(&b->m);
	_Atomic uint64_t *cells = seg_cells(&b->m);
	unsigned long bad_leases = 0, bad_tats = 0, bad_rings = 0;
	unsigned long bad_pauses = 0, bad_caps = 0, bad_backoffs = 0;
	unsigned long bad_stripes = 0;

	/*
	 * Relaxed, here and below unless said: the guard repairs words no
	 * client trusts for anything but their own value, and each repair is
	 * a CAS from exactly the value judged bad, so a client's write in
	 * between wins.
	 */
	if (atomic_load_explicit(&s->magic, memory_order_relaxed) !=
	    TG_SEG_MAGIC || s->version != TG_SEG_VERSION ||
	    s->size != h->state_size) {
		s->version = TG_SEG_VERSION;
		s->size = h->state_size;
		atomic_store_explicit(&s->magic, TG_SEG_MAGIC,
		    memory_order_relaxed);
		guard_count(&b->m, "state header", 1);
	}
	for (uint32_t id = 0; id < h->max_limits; id++) {
		const struct lim_slot *l = &b->lims[id];
		uint64_t cap;

		if (!l->used)
			continue;
		/* A server cap ends within the key's max_pause. */
		cap = atomic_load_explicit(&ls[id].srv_cap,
		    memory_order_relaxed);
		if (cap_live(cap, now) && cap_until_ns(cap) - now >
		    key_max_pause(b, l->key) &&
		    atomic_compare_exchange_strong_explicit(&ls[id].srv_cap,
		    &cap, 0, memory_order_relaxed, memory_order_relaxed))
			bad_caps++;
		switch (l->spec.kind) {
		case LIM_RATE: {
			uint64_t tat = atomic_load_explicit(&ls[id].tat_ns,
			    memory_order_relaxed);

			if (tat > now && tat - now > tat_ahead_max(&l->spec) &&
			    atomic_compare_exchange_strong_explicit(
			    &ls[id].tat_ns, &tat, now, memory_order_relaxed,
			    memory_order_relaxed))
				bad_tats++;
			break;
		}
		case LIM_WINDOW: {
			uint64_t sub = win_sub_ns(l->spec.period_ns);
			uint64_t e = now / sub, w, ahead;

			for (uint32_t i = 0; i < l->ncells; i++) {
				w = atomic_load_explicit(&cells[l->cells + i],
				    memory_order_relaxed);
				ahead = ((w >> WIN_COUNT_BITS) - e) &
				    WIN_EPOCH_MASK;
				/* Further ahead than a racing clock can be. */
				if (w != 0 && ahead > WIN_AHEAD_MAX &&
				    ahead < WIN_EPOCH_MASK / 2 &&
				    atomic_compare_exchange_strong_explicit(
				    &cells[l->cells + i], &w, 0,
				    memory_order_relaxed, memory_order_relaxed))
					bad_rings++;
			}
			break;
		}
		case LIM_CONC: {
			unsigned long orphans = bad_leases;

			for (uint32_t i = 0; i < l->ncells; i++) {
				/*
				 * Acquire: pairs with the release half of the
				 * taker's seq_cst CAS of the cell, made after
				 * its slot went LIVE: the owner read below is
				 * then that registration's, or later.
				 */
				uint64_t v = atomic_load_explicit(
				    &cells[l->cells + i], memory_order_acquire);
				uint32_t slot = LEASE_SLOT(v);

				if (v == 0)
					continue;
				/*
				 * Cell first, then its owner: a slot that is
				 * free after its cell said it held a lease has
				 * let go of it (tg_close, reclaim), so the
				 * lease is an orphan; v names only that slot,
				 * so nobody else can have taken it since.
				 */
				if (v == LEASE_SEALED)
					continue;	/* not a lease */
				if (slot >= h->max_clients ||
				    atomic_load_explicit(&cl[slot].owner,
				    memory_order_relaxed) == 0) {
					/* seq_cst: a free, before the wake. */
					if (atomic_compare_exchange_strong_explicit(
					    &cells[l->cells + i], &v, 0,
					    memory_order_seq_cst,
					    memory_order_relaxed))
						bad_leases++;
				}
			}
			/* Sleepers wait for a release: this was one. */
			if (bad_leases != orphans)
				lease_wake(&ls[id]);
			break;
		}
		}
	}
	for (uint32_t id = 0; id < h->max_keys; id++) {
		uint64_t p = atomic_load_explicit(&ks[id].paused_until_ns,
		    memory_order_relaxed), v, max;

		if (p > now && p - now > key_max_pause(b, id) &&
		    atomic_compare_exchange_strong_explicit(
		    &ks[id].paused_until_ns, &p, 0, memory_order_relaxed,
		    memory_order_relaxed))
			bad_pauses++;
		/* A round begun in the future would stop every backoff. */
		v = atomic_load_explicit(&ks[id].pause_set_ns,
		    memory_order_relaxed);
		if (v > now + CLOCK_SLACK_NS &&
		    atomic_compare_exchange_strong_explicit(
		    &ks[id].pause_set_ns, &v, now, memory_order_relaxed,
		    memory_order_relaxed))
			bad_backoffs++;
		max = b->keys[id].backoff_max_ns ? b->keys[id].backoff_max_ns :
		    CFG_BACKOFF_MAX_NS;
		v = atomic_load_explicit(&ks[id].backoff_ns,
		    memory_order_relaxed);
		if (v > max && atomic_compare_exchange_strong_explicit(
		    &ks[id].backoff_ns, &v, max, memory_order_relaxed,
		    memory_order_relaxed))
			bad_backoffs++;
	}
	/*
	 * A grant stripe whose owner slot is free (or no slot) is let go
	 * of, as orphaned leases are: owner, then slot.  A slot freed and
	 * claimed again, stripe and all, between the two reads could lose
	 * its stripe; it then counts with plain stores in a stripe another
	 * may claim: grant statistics, not limits, would be off.
	 */
	for (uint32_t i = 1; i < SEG_STRIPES; i++) {
		/*
		 * Acquire: pairs with the claimer's acq_rel CAS of the
		 * stripe, made after its slot went LIVE, as for leases.
		 */
		uint32_t v = atomic_load_explicit(&s->stripe_owner[i],
		    memory_order_acquire);

		if (v != 0 && (v > h->max_clients ||
		    atomic_load_explicit(&cl[v - 1].owner,
		    memory_order_relaxed) == 0) &&
		    atomic_compare_exchange_strong_explicit(
		    &s->stripe_owner[i], &v, 0, memory_order_relaxed,
		    memory_order_relaxed))
			bad_stripes++;
	}
	if (atomic_load_explicit(&s->stripe_owner[0], memory_order_relaxed) !=
	    0) {
		/* Never owned. */
		atomic_store_explicit(&s->stripe_owner[0], 0,
		    memory_order_relaxed);
		bad_stripes++;
	}
	guard_count(&b->m, "grant stripe owner", bad_stripes);
	guard_count(&b->m, "rate limit TAT", bad_tats);
	guard_count(&b->m, "window ring slot", bad_rings);
	guard_count(&b->m, "orphaned lease", bad_leases);
	guard_count(&b->m, "key pause", bad_pauses);
	guard_count(&b->m, "server remaining cap", bad_caps);
	guard_count(&b->m, "key backoff", bad_backoffs);
}

/* Every tick: the size of the state object, then its contents. */
void
guard_check(struct broker *b, uint64_t now)
{
	struct stat st;

	if (fstat(b->m.state_fd, &st) == 0 &&
	    (size_t)st.st_size != b->m.state_size) {
		if (ftruncate(b->m.state_fd, (off_t)b->m.state_size) < 0)
			log_warn("restoring the state object's size");
		else
			guard_count(&b->m, "truncated state object (size "
			    "restored; what was cut off is zero)", 1);
		/* Pages now, while none is touched: see on_sigbus. */
		if (fallocate(b->m.state_fd, 0, 0, (off_t)b->m.state_size) < 0)
			log_warn("backing the restored state object");
	}
	if (g_sigbus) {
		guard_count(&b->m, "access past a truncated end (SIGBUS)",
		    (unsigned long)g_sigbus);
		g_sigbus = 0;
	}
	scrub(b, now);
}
