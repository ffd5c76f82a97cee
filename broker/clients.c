/* clients.c: finding registered clients, watching their pidfds, reclaiming. */
#include <sys/syscall.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "clock.h"
#include "lease.h"
#include "log.h"

#define CLAIM_STUCK_NS	(10ull * 1000000000ull)

static uint64_t
boottime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
clients_init(struct broker *b)
{
	for (uint32_t i = 0; i < b->m.hdr->max_clients; i++)
		b->cl[i].pidfd = -1;
}

static void
untrack(struct broker *b, uint32_t slot)
{
	struct cl_track *t = &b->cl[slot];

	if (t->pidfd >= 0) {
		loop_disarm_pidfd(b, slot);
		close(t->pidfd);
	}
	t->pidfd = -1;
	t->pid = 0;
	t->gen++;
}

/*
 * Free every lease cell that holds slot, in every concurrency limit the
 * broker knows (its own table, never the segment's word), and wake
 * sleepers.  Returns how many it freed.
 */
uint32_t
leases_free_slot(struct broker *b, uint32_t slot)
{
	_Atomic uint64_t *cells = seg_cells(&b->m);
	uint32_t freed = 0;

	for (uint32_t id = 0; id < b->m.hdr->max_limits; id++) {
		const struct lim_slot *l = &b->lims[id];
		uint32_t n = 0;

		if (!l->used || l->spec.kind != LIM_CONC)
			continue;
		for (uint32_t i = l->cells; i < l->cells + l->ncells; i++) {
			uint64_t v = atomic_load(&cells[i]);

			/* A CAS from exactly v: the owner may free it too. */
			if (v != 0 && LEASE_SLOT(v) == slot &&
			    atomic_compare_exchange_strong(&cells[i], &v, 0))
				n++;
		}
		if (n) {
			lease_wake(&seg_lstates(&b->m)[id]);
			freed += n;
		}
	}
	return freed;
}

/*
 * The client in slot is gone (dead, or its pid reused): free its leases,
 * keep its counters in the retired totals, and free the slot, but only if
 * it still holds `owner' (a CAS, so a live newcomer is never evicted).
 */
void
clients_reclaim(struct broker *b, uint32_t slot, uint64_t owner)
{
	struct seg_client *c = &seg_clients(&b->m)[slot];
	struct seg_state *s = (struct seg_state *)b->m.state;
	uint64_t t0 = now_ns();
	uint32_t freed;

	freed = leases_free_slot(b, slot);
	atomic_fetch_add(&s->retired_acquired, atomic_exchange(&c->acquired,
	    0));
	atomic_fetch_add(&s->retired_denied, atomic_exchange(&c->denied, 0));
	atomic_fetch_add(&s->retired_released, atomic_exchange(&c->released,
	    0));
	atomic_fetch_add(&s->retired_waits, atomic_exchange(&c->waits, 0));
	atomic_store(&c->wait_ns, 0);
	/* Its grant stripe, if it had one, is free for the next client. */
	for (uint32_t i = 1; i < SEG_STRIPES; i++)
		atomic_compare_exchange_strong(&s->stripe_owner[i],
		    &(uint32_t){ slot + 1 }, 0);
	untrack(b, slot);
	if (!atomic_compare_exchange_strong(&c->owner, &owner, 0))
		log_debug("slot %u changed owner while reclaimed", slot);
	log_info("reclaimed client pid %d (slot %u): %u lease%s freed in "
	    "%llu us", CLIENT_PID(owner), slot, freed, freed == 1 ? "" : "s",
	    (unsigned long long)((now_ns() - t0) / 1000));
}

/* Start watching a live client: its pidfd, checked against pid reuse. */
static void
track(struct broker *b, uint32_t slot, uint64_t owner)
{
	struct seg_client *c = &seg_clients(&b->m)[slot];
	struct cl_track *t = &b->cl[slot];
	int32_t pid = CLIENT_PID(owner);
	uint64_t st, claimed;
	int fd;

	untrack(b, slot);
	if (pid <= 0) {
		guard_count(b, "client slot with a bad pid", 1);
		clients_reclaim(b, slot, owner);
		return;
	}
	fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0) {
		if (errno == ESRCH)
			clients_reclaim(b, slot, owner);
		else
			log_warn("pidfd_open %d", pid);
		return;
	}
	/*
	 * The pidfd now pins this process; its start time tells whether it
	 * is the one that registered, or a newcomer that got a dead
	 * client's pid before we looked.
	 */
	claimed = atomic_load_explicit(&c->start_time, memory_order_relaxed);
	if (proc_starttime(pid, &st) < 0 || st != claimed) {
		close(fd);
		clients_reclaim(b, slot, owner);
		return;
	}
	t->pidfd = fd;
	t->pid = pid;
	if (loop_arm_pidfd(b, slot) < 0)
		log_warnx("cannot watch pid %d: it is checked every tick",
		    pid);
	log_debug("client pid %d in slot %u", pid, slot);
}

/* Every tick: register new slots, forget freed ones, clear dead claims. */
void
clients_scan(struct broker *b)
{
	struct seg_client *cl = seg_clients(&b->m);
	uint64_t st;

	for (uint32_t i = 0; i < b->m.hdr->max_clients; i++) {
		struct cl_track *t = &b->cl[i];
		/* Acquire: pairs with the client's release store of LIVE. */
		uint64_t o = atomic_load_explicit(&cl[i].owner,
		    memory_order_acquire);
		int32_t pid = CLIENT_PID(o);

		if (o == 0) {
			if (t->pidfd >= 0 || t->pid)
				untrack(b, i);	/* closed by tg_close */
			t->claim_seen_ns = 0;
			continue;
		}
		switch (CLIENT_STATE(o)) {
		case CLIENT_LIVE:
			t->claim_seen_ns = 0;
			if (t->pidfd >= 0 && t->pid == pid)
				continue;
			track(b, i, o);
			break;
		case CLIENT_CLAIMING:
			if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH)) {
				clients_reclaim(b, i, o);
				break;
			}
			if (t->claim_seen_ns == 0)
				t->claim_seen_ns = boottime_ns();
			/*
			 * Stuck claiming: if that pid started after we first
			 * saw the claim, it is not the claimer (pid reuse).
			 */
			else if (boottime_ns() - t->claim_seen_ns >
			    CLAIM_STUCK_NS && proc_starttime(pid, &st) == 0 &&
			    st * (1000000000ull / (uint64_t)sysconf(_SC_CLK_TCK))
			    > t->claim_seen_ns)
				clients_reclaim(b, i, o);
			break;
		default:
			guard_count(b, "client slot in an unknown state", 1);
			clients_reclaim(b, i, o);
			break;
		}
	}
}

/* A watched pidfd became readable: that process exited. */
void
clients_exited(struct broker *b, uint32_t slot, uint32_t gen)
{
	struct cl_track *t;
	uint64_t o;

	if (slot >= b->m.hdr->max_clients)
		return;
	t = &b->cl[slot];
	if ((t->gen & 0xffffffu) != gen || t->pidfd < 0)
		return;			/* an old registration of the slot */
	o = atomic_load(&seg_clients(&b->m)[slot].owner);
	if (CLIENT_PID(o) != t->pid) {
		untrack(b, slot);	/* the slot moved on already */
		return;
	}
	clients_reclaim(b, slot, o);
}

void
clients_close(struct broker *b)
{
	if (b->cl == NULL)
		return;
	for (uint32_t i = 0; i < b->m.hdr->max_clients; i++)
		if (b->cl[i].pidfd >= 0)
			close(b->cl[i].pidfd);
}
