/*
 * clients.c: finding dead clients and reclaiming their slots.  A client is
 * alive while it holds its slot's liveness lock (seg.h): the broker tests
 * the locks of occupied slots every tick, which needs no pid, works for
 * clients in any PID namespace (even ones it cannot see) and, since the
 * locks are the clients', survives a broker restart.  For a client of our
 * own PID namespace, a pidfd polled by the loop says at once that it
 * exited, so its leases come back in microseconds, not at the next tick;
 * the pidfd is a hint (a pid reused, a client that lies about its pid
 * only costs a lock test), never a verdict.
 */
#include <sys/stat.h>
#include <sys/syscall.h>
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "clients.h"
#include "clock.h"
#include "lease.h"
#include "log.h"

/* A claim without its lock this long is a claimer that died. */
#define CLAIM_STUCK_NS	(2ull * 1000000000ull)

/*
 * A client slot as the broker tracks it.  The pidfd is only a hint that
 * says at once when a client of our PID namespace exits; whether it is
 * alive is always its lock's to say.
 */
struct cl_track {
	int		pidfd;		/* -1: none */
	uint32_t	gen;		/* watch generation, for the loop */
	uint32_t	token;		/* the registration the pidfd is for */
	uint32_t	claim_tok;	/* CLAIMING without its lock: that claim */
	uint64_t	claim_seen_ns;	/* and since when */
};

struct clients {
	const struct seg_map *m;
	struct loop	*loop;		/* NULL: no pidfds */
	uint64_t	own_pid_ns;	/* our PID namespace's inode; 0 unknown */
	uint32_t	n;		/* slots */
	struct cl_track	t[];
};

struct clients *
clients_new(const struct seg_map *m, struct loop *loop)
{
	struct clients *cs;
	struct stat st;
	uint32_t n = m->hdr->max_clients;

	if ((cs = calloc(1, sizeof(*cs) + n * sizeof(cs->t[0]))) == NULL)
		return NULL;
	cs->m = m;
	cs->loop = loop;
	cs->n = n;
	cs->own_pid_ns = stat("/proc/self/ns/pid", &st) == 0 ?
	    (uint64_t)st.st_ino : 0;
	for (uint32_t i = 0; i < n; i++)
		cs->t[i].pidfd = -1;
	return cs;
}

void
clients_free(struct clients *cs)
{
	if (cs == NULL)
		return;
	for (uint32_t i = 0; i < cs->n; i++)
		if (cs->t[i].pidfd >= 0)
			close(cs->t[i].pidfd);
	free(cs);
}

static void
untrack(struct clients *cs, uint32_t slot)
{
	struct cl_track *t = &cs->t[slot];

	if (t->pidfd >= 0) {
		loop_unwatch(cs->loop, slot, t->gen);
		close(t->pidfd);
	}
	t->pidfd = -1;
	t->token = 0;
	t->gen++;
}

/*
 * Watch the pidfd of a LIVE client of our PID namespace.  The pid is the
 * client's word: if it names another process (reused, or a lie), that
 * one's exit only makes us test the lock early.
 */
static void
track(struct clients *cs, uint32_t slot, uint32_t token)
{
	struct seg_client *c = &seg_clients(cs->m)[slot];
	struct cl_track *t = &cs->t[slot];
	int32_t pid;
	int fd;

	untrack(cs, slot);
	t->token = token;	/* tried: not again for this registration */
	/* Relaxed: written before LIVE, which the scan loaded with acquire. */
	pid = atomic_load_explicit(&c->pid, memory_order_relaxed);
	if (cs->loop == NULL || cs->own_pid_ns == 0 || pid <= 0 ||
	    atomic_load_explicit(&c->pid_ns, memory_order_relaxed) !=
	    cs->own_pid_ns)
		return;		/* another namespace: the tick's lock test */
	if ((fd = (int)syscall(SYS_pidfd_open, pid, 0)) < 0)
		return;		/* gone already: the lock test says so */
	t->pidfd = fd;
	if (loop_watch(cs->loop, fd, slot, t->gen) < 0) {
		close(fd);
		t->pidfd = -1;
		return;
	}
	log_debug("client pid %d in slot %u", pid, slot);
}

/*
 * Claimed first, by a CAS to RECLAIMING: a client that closed and a
 * newcomer that claimed the slot since the caller read the owner word
 * have another token, so the CAS fails and nothing of theirs is touched.
 */
int
clients_reclaim(struct clients *cs, uint32_t slot, uint64_t owner,
    const char *why)
{
	struct seg_client *c = &seg_clients(cs->m)[slot];
	struct seg_state *s = (struct seg_state *)cs->m->state;
	uint64_t t0 = now_ns(), mine;
	uint32_t freed, tok = CLIENT_TOKEN(owner);

	mine = CLIENT_OWNER(CLIENT_RECLAIMING, tok);
	/*
	 * Acquire: the dead client's last writes to its counters and cells
	 * are seen below.  A RECLAIMING owner is one a broker that died
	 * mid-way left: finish its work.
	 */
	if (owner != mine && !atomic_compare_exchange_strong_explicit(
	    &c->owner, &owner, mine, memory_order_acquire,
	    memory_order_relaxed))
		return 0;
	freed = lease_drop_slot(cs->m, slot);
	/*
	 * Relaxed throughout: nobody else writes a RECLAIMING slot, and the
	 * release CAS that frees it orders all of this before a newcomer.
	 */
	atomic_fetch_add_explicit(&s->retired_acquired, atomic_exchange_explicit(
	    &c->acquired, 0, memory_order_relaxed), memory_order_relaxed);
	atomic_fetch_add_explicit(&s->retired_denied, atomic_exchange_explicit(
	    &c->denied, 0, memory_order_relaxed), memory_order_relaxed);
	atomic_fetch_add_explicit(&s->retired_released,
	    atomic_exchange_explicit(&c->released, 0, memory_order_relaxed),
	    memory_order_relaxed);
	atomic_fetch_add_explicit(&s->retired_waits, atomic_exchange_explicit(
	    &c->waits, 0, memory_order_relaxed), memory_order_relaxed);
	atomic_fetch_add_explicit(&s->retired_polls, atomic_exchange_explicit(
	    &c->polls, 0, memory_order_relaxed), memory_order_relaxed);
	atomic_store_explicit(&c->wait_ns, 0, memory_order_relaxed);
	/* Its grant stripe, if it had one, is free for the next client. */
	seg_stripe_free(cs->m, slot);
	/* Release: pairs with slot_claim's acquire CAS of a newcomer. */
	atomic_store_explicit(&c->owner, 0, memory_order_release);
	cs->t[slot].claim_seen_ns = 0;
	untrack(cs, slot);
	log_info("reclaimed client pid %d (slot %u, %s): %u lease%s freed in "
	    "%llu us", (int)atomic_load_explicit(&c->pid,
	    memory_order_relaxed), slot, why, freed, freed == 1 ? "" : "s",
	    (unsigned long long)((now_ns() - t0) / 1000));
	return 1;
}

/*
 * Reclaim slot if its client is gone.  A LIVE slot whose lock nobody
 * holds is gone: the client took the lock before it went LIVE, and lets
 * go of it only after it freed the slot.  A CLAIMING slot may be a
 * claimer between its CAS and its lock: it gets CLAIM_STUCK_NS.
 */
static void
check_slot(struct clients *cs, uint32_t i, uint64_t now)
{
	struct cl_track *t = &cs->t[i];
	/* Acquire: pairs with the client's release CAS to LIVE. */
	uint64_t o = atomic_load_explicit(&seg_clients(cs->m)[i].owner,
	    memory_order_acquire);
	int held;

	if (o == 0) {
		t->claim_seen_ns = 0;
		if (t->pidfd >= 0)
			untrack(cs, i);		/* closed by tg_close */
		return;
	}
	switch (CLIENT_STATE(o)) {
	case CLIENT_LIVE:
	case CLIENT_CLAIMING:
		if ((held = seg_slot_locked(cs->m->state_fd, i)) < 0) {
			log_warnx("slot %u: lock test: %s", i, strerror(-held));
			return;
		}
		if (held && CLIENT_STATE(o) == CLIENT_LIVE) {
			t->claim_seen_ns = 0;
			if (t->token != CLIENT_TOKEN(o))
				track(cs, i, CLIENT_TOKEN(o));
			return;
		}
		if (held)
			return;		/* about to go LIVE */
		if (CLIENT_STATE(o) == CLIENT_LIVE) {
			(void)clients_reclaim(cs, i, o, "exited");
			return;
		}
		if (t->claim_seen_ns == 0 || t->claim_tok != CLIENT_TOKEN(o)) {
			t->claim_seen_ns = now ? now : 1;
			t->claim_tok = CLIENT_TOKEN(o);
		} else if (now - t->claim_seen_ns > CLAIM_STUCK_NS)
			(void)clients_reclaim(cs, i, o, "claim abandoned");
		break;
	case CLIENT_RECLAIMING:
		(void)clients_reclaim(cs, i, o, "left half reclaimed");
		break;
	default:
		guard_count(cs->m, "client slot in an unknown state", 1);
		(void)clients_reclaim(cs, i, o, "bad state");
		break;
	}
}

/* Every tick: reclaim every slot whose client is gone. */
void
clients_scan(struct clients *cs, uint64_t now)
{
	for (uint32_t i = 0; i < cs->n; i++)
		check_slot(cs, i, now);
}

/* A watched pidfd became readable: that process exited; look now. */
void
clients_exited(struct clients *cs, uint32_t slot, uint32_t gen, uint64_t now)
{
	struct cl_track *t;

	if (slot >= cs->n)
		return;
	t = &cs->t[slot];
	if ((t->gen & 0xffffffu) != gen || t->pidfd < 0)
		return;			/* an old registration of the slot */
	check_slot(cs, slot, now);
	/* Still held: the pid was not the client's; the ticks watch it. */
	if (t->pidfd >= 0 && (t->gen & 0xffffffu) == gen) {
		close(t->pidfd);
		t->pidfd = -1;
	}
}
