/* collect.c: a snapshot of a segment, read without writing a byte. */
#include <err.h>
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "access.h"
#include "clock.h"
#include "gcra.h"
#include "srvcap.h"
#include "stat.h"
#include "window.h"

const char *const broker_names[] = {
	[BROKER_LIVE] = "live", [BROKER_NONE] = "none",
	[BROKER_DEAD] = "dead", [BROKER_OTHER] = "other",
};

const char *const ctl_names[] = {
	[SEG_CTL_PAUSE] = "pause", [SEG_CTL_RESUME] = "resume",
	[SEG_CTL_RESET] = "reset", [SEG_CTL_DRAIN] = "drain",
	[SEG_CTL_UNDRAIN] = "undrain", [SEG_CTL_DENIED] = "denied",
	[SEG_CTL_BAD] = "malformed", [SEG_CTL_FAILED] = "failed",
};

const char *const client_names[] = {
	[CL_FREE] = "free", [CL_CLAIMING] = "claiming", [CL_LIVE] = "live",
	[CL_GONE] = "gone", [CL_BAD] = "invalid",
};

/*
 * The SIGBUS guard.  Any client may ftruncate the state object (it opens
 * it read-write); reading past the new end then raises SIGBUS.  The broker
 * restores the size within a tick, so the collector jumps back, waits and
 * reads again.  A fault anywhere else is a real crash.
 */
static sigjmp_buf bus_env;
static volatile sig_atomic_t bus_armed;
static const unsigned char *bus_lo, *bus_hi;

static void
on_sigbus(int sig, siginfo_t *si, void *uc)
{
	const unsigned char *a = si->si_addr;

	(void)uc;
	if (bus_armed && a >= bus_lo && a < bus_hi) {
		bus_armed = 0;
		siglongjmp(bus_env, 1);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static void
bus_install(const struct seg_map *m)
{
	struct sigaction sa;

	bus_lo = m->state;
	bus_hi = m->state + m->state_size;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, NULL) < 0)
		err(1, "sigaction SIGBUS");
}

/* Key names as a tree: "a" < "a/b" < "a-b", since '/' sorts first. */
static int
key_cmp(const void *pa, const void *pb)
{
	const unsigned char *a = (const unsigned char *)
	    ((const struct st_key *)pa)->name;
	const unsigned char *b = (const unsigned char *)
	    ((const struct st_key *)pb)->name;
	unsigned ca, cb;

	for (;; a++, b++) {
		ca = *a == '/' ? 1 : *a;
		cb = *b == '/' ? 1 : *b;
		if (ca != cb || ca == 0)
			return (int)ca - (int)cb;
	}
}

/*
 * Copy the keys and their own limits out of the live config copy, under
 * its sequence lock: nothing copied is used until seg_read_ok says the
 * copy was not torn.  Every id read in between is checked before use, as a
 * torn read can hold anything.  Returns 0, -ENOMEM, or -EBADMSG if an
 * untorn copy is malformed (a broker bug).
 */
static int
read_config(const struct seg_map *m, struct snap *s)
{
	const struct seg_header *h = m->hdr;
	const struct seg_key *k;
	const struct seg_limit *lims, *l;
	struct seg_cfg *c;
	unsigned *byid;
	uint32_t seq;
	int r;

	do {
		r = 0;
		s->nkeys = s->nlimits = 0;
		c = seg_read_begin(m, &seq);
		s->gen = c->gen;
		k = seg_keys(c);
		lims = seg_limits(m, c);
		for (uint32_t id = 0; id < h->max_keys && r == 0; id++) {
			struct st_key *sk;
			unsigned nown = k[id].nown;

			if (k[id].name[0] == '\0')
				continue;
			if (nown > SEG_CHAIN_MAX) {
				r = -EBADMSG;
				break;
			}
			sk = &s->keys[s->nkeys++];
			memcpy(sk->name, k[id].name, SEG_NAME_MAX - 1);
			sk->name[SEG_NAME_MAX - 1] = '\0';
			sk->id = (uint16_t)id;
			sk->parent = k[id].parent;
			sk->first = s->nlimits;
			sk->nlimits = 0;
			/* Its own limits come first in its chain. */
			for (unsigned i = 0; i < nown; i++) {
				uint16_t lid = k[id].chain[i];
				struct st_limit *sl;

				if (lid >= h->max_limits ||
				    s->nlimits >= h->max_limits) {
					r = -EBADMSG;
					break;
				}
				l = &lims[lid];
				sl = &s->limits[s->nlimits++];
				memset(sl, 0, sizeof(*sl));
				sl->id = lid;
				sl->key = l->key;
				sl->spec.kind = l->kind;
				sl->spec.unit = l->unit;
				sl->spec.adaptive =
				    (l->flags & LIMIT_F_ADAPTIVE) != 0;
				sl->spec.count = l->count;
				sl->spec.period_ns = l->period_ns;
				sl->spec.burst = l->burst;
				sl->spec.cooldown_ns = l->cooldown_ns;
				sl->conf_count = l->conf_count ?
				    l->conf_count : l->count;
				sl->tau_ns = l->tau_ns;
				sl->cells = l->cells;
				sl->ncells = l->ncells;
				sk->nlimits++;
			}
		}
	} while (!seg_read_ok(c, seq));
	if (r < 0)
		return r;
	s->cfg_nkeys = s->nkeys;
	s->cfg_nlimits = s->nlimits;
	/*
	 * Check the geometry once, on the untorn copy: a limit whose cells
	 * lie outside the pool shows "?" rather than reading elsewhere.
	 */
	for (unsigned i = 0; i < s->nlimits; i++) {
		struct st_limit *sl = &s->limits[i];

		limit_format(&sl->spec, sl->spec_str, sizeof(sl->spec_str));
		switch (sl->spec.kind) {
		case LIM_RATE:
			sl->ok = 1;
			break;
		case LIM_WINDOW:
			sl->ok = sl->tau_ns != 0 &&
			    sl->ncells == SEG_WIN_SLOTS &&
			    (uint64_t)sl->cells + sl->ncells <= h->max_cells;
			break;
		case LIM_CONC:
			sl->ok = (uint64_t)sl->cells + sl->ncells <=
			    h->max_cells;
			break;
		}
	}
	/* Parents by name now: -k may leave a key's parent out. */
	if ((byid = malloc(h->max_keys * sizeof(*byid))) == NULL)
		return -ENOMEM;
	memset(byid, 0xff, h->max_keys * sizeof(*byid));
	for (unsigned i = 0; i < s->nkeys; i++)
		byid[s->keys[i].id] = i;
	for (unsigned i = 0; i < s->nkeys; i++) {
		struct st_key *sk = &s->keys[i];

		if (sk->parent < h->max_keys && byid[sk->parent] != UINT_MAX)
			memcpy(sk->parent_name, s->keys[byid[sk->parent]].name,
			    SEG_NAME_MAX);
	}
	free(byid);
	qsort(s->keys, s->nkeys, sizeof(s->keys[0]), key_cmp);
	return 0;
}

/*
 * tollctl's counts and last action from the header (the config object,
 * which only the broker writes).  The last action is read as a config
 * copy is: retried while its sequence counter moves or is odd.
 */
static void
read_ctl(const struct seg_header *h, struct st_ctl *c, uint64_t now)
{
	uint32_t seq = 0;
	uint64_t when = 0;

	for (int i = 0; i < SEG_CTL_COUNT; i++)
		c->count[i] = atomic_load_explicit(&h->ctl_count[i],
		    memory_order_relaxed);
	for (int tries = 0; tries < 1000; tries++) {
		/* Acquire: pairs with the release store ending a write. */
		seq = atomic_load_explicit(&h->ctl_seq, memory_order_acquire);
		if (seq & 1)
			continue;
		c->uid = h->ctl_uid;
		c->pid = h->ctl_pid;
		c->action = h->ctl_action;
		c->arg_ns = h->ctl_arg_ns;
		when = h->ctl_ns;
		memcpy(c->key, h->ctl_key, sizeof(c->key));
		/* Orders the copy before the second load of seq. */
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&h->ctl_seq, memory_order_relaxed) ==
		    seq)
			break;
	}
	c->key[SEG_NAME_MAX - 1] = '\0';
	c->has_last = seq != 0 && (seq & 1) == 0 && c->action < SEG_CTL_NACT;
	c->ago_ns = now > when ? now - when : 0;
}

/* Whether the broker the header names is still running. */
static int
broker_check(int32_t pid, uint64_t start)
{
	uint64_t st;

	if (pid <= 0)
		return BROKER_NONE;
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return BROKER_DEAD;
	/* Pids are reused: the broker that attached had this start time. */
	if (proc_starttime(pid, &st) == 0 && st != start)
		return BROKER_OTHER;
	return BROKER_LIVE;
}

/* How long until one more unit of a limit fits, as its take would say. */
static uint64_t
next_ns(const struct st_limit *sl, _Atomic uint64_t *cells, uint64_t tat,
    uint64_t cost1, uint64_t now)
{
	uint64_t w, next;

	if (sl->available > 0)
		return 0;
	switch (sl->spec.kind) {
	case LIM_RATE:
		/*
		 * gcra_take's retry for one unit, without the take.  A TAT
		 * that would wrap (scribbled: the broker repairs it) is no
		 * release: the longest wait short of NEXT_RELEASE.
		 */
		w = gcra_wait_ns(tat, now, cost1, sl->tau_ns, &next);
		return w < NEXT_RELEASE ? w : NEXT_RELEASE - 1;
	case LIM_WINDOW:
		return win_retry(&cells[sl->cells], now, sl->tau_ns,
		    sl->spec.count, 1);
	}
	return NEXT_RELEASE;
}

/*
 * Read the header's broker fields, the clients and every limit's state at
 * now.  Relaxed loads but the pid's: these are statistics, each word is
 * read once, and none of them publishes other memory.  Runs under the
 * SIGBUS guard; returns 0, or -EFAULT if the state object was cut under us.
 */
static int
read_state(const struct seg_map *m, struct snap *s)
{
	const struct seg_header *h = m->hdr;
	const struct seg_state *st = (const struct seg_state *)m->state;
	struct seg_client *cl = seg_clients(m);
	struct seg_kstate *ks = seg_kstates(m);
	struct seg_lstate *ls = seg_lstates(m);
	_Atomic uint64_t *cells = seg_cells(m);
	uint64_t now, hb, since, start, paused, tat, sum, cap, cost1, v, fed;
	int32_t pid;

	if (sigsetjmp(bus_env, 1) != 0)
		return -EFAULT;
	bus_armed = 1;
	/*
	 * The broker's pid is a sequence (main.c, attach_as_owner): 0 while
	 * a new broker writes its start time and since, its pid after.
	 * Acquire: pairs with the release store of the pid, so start and
	 * since are that broker's; the second read of the pid, after an
	 * acquire fence that pairs with the broker's release fence after its
	 * 0, tells a new broker's fields read with an old broker's pid.
	 */
	for (int tries = 0; ; tries++) {
		pid = atomic_load_explicit(&h->broker_pid,
		    memory_order_acquire);
		start = atomic_load_explicit(&h->broker_start,
		    memory_order_relaxed);
		since = atomic_load_explicit(&h->broker_since_ns,
		    memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&h->broker_pid,
		    memory_order_relaxed) == pid || tries == 100)
			break;
	}
	hb = atomic_load_explicit(&h->heartbeat_ns, memory_order_relaxed);
	s->repairs = atomic_load_explicit(&h->repairs, memory_order_relaxed);
	s->fed_state = atomic_load_explicit(&h->fed_state,
	    memory_order_relaxed);
	s->fed_lapses = atomic_load_explicit(&h->fed_lapses,
	    memory_order_relaxed);
	/* After the heartbeat's load: an age is never negative. */
	s->now_ns = now = now_ns();
	s->broker_pid = pid;
	s->broker = broker_check(pid, start);
	s->uptime_ns = s->broker == BROKER_LIVE && now > since ?
	    now - since : 0;
	s->heartbeat_age_ns = now > hb ? now - hb : 0;
	read_ctl(h, &s->ctl, now);

	s->max_clients = h->max_clients;
	s->clients = 0;
	s->acquired = atomic_load_explicit(&st->retired_acquired,
	    memory_order_relaxed);
	s->denied = atomic_load_explicit(&st->retired_denied,
	    memory_order_relaxed);
	s->released = atomic_load_explicit(&st->retired_released,
	    memory_order_relaxed);
	s->waits = atomic_load_explicit(&st->retired_waits,
	    memory_order_relaxed);
	s->polls = atomic_load_explicit(&st->retired_polls,
	    memory_order_relaxed);
	for (uint32_t i = 0; i < h->max_clients; i++) {
		struct st_client *sc = &s->cl[i];

		sc->owner = atomic_load_explicit(&cl[i].owner,
		    memory_order_relaxed);
		sc->pid = atomic_load_explicit(&cl[i].pid,
		    memory_order_relaxed);
		sc->pid_ns = atomic_load_explicit(&cl[i].pid_ns,
		    memory_order_relaxed);
		if (CLIENT_STATE(sc->owner) == CLIENT_LIVE)
			s->clients++;
		/* A free slot's counters stay until the slot is reused. */
		sc->acquired = atomic_load_explicit(&cl[i].acquired,
		    memory_order_relaxed);
		sc->denied = atomic_load_explicit(&cl[i].denied,
		    memory_order_relaxed);
		sc->released = atomic_load_explicit(&cl[i].released,
		    memory_order_relaxed);
		sc->waits = atomic_load_explicit(&cl[i].waits,
		    memory_order_relaxed);
		sc->polls = atomic_load_explicit(&cl[i].polls,
		    memory_order_relaxed);
		s->acquired += sc->acquired;
		s->denied += sc->denied;
		s->released += sc->released;
		s->waits += sc->waits;
		s->polls += sc->polls;
	}

	for (unsigned i = 0; i < s->nkeys; i++) {
		struct st_key *sk = &s->keys[i];
		struct seg_kstate *k = &ks[sk->id];

		sk->granted = seg_grant_sum(m, sk->id);
		sk->denied = atomic_load_explicit(&k->denied,
		    memory_order_relaxed);
		paused = atomic_load_explicit(&k->paused_until_ns,
		    memory_order_relaxed);
		sk->paused_ns = paused > now ? paused - now : 0;
		sk->drained = atomic_load_explicit(&k->drained,
		    memory_order_relaxed) != 0;
		for (int c = 0; c < ST_COUNT; c++)
			sk->status[c] = atomic_load_explicit(&k->status[c],
			    memory_order_relaxed);
	}

	for (unsigned i = 0; i < s->nlimits; i++) {
		struct st_limit *sl = &s->limits[i];
		struct seg_lstate *l = &ls[sl->id];

		sl->granted = seg_grant_sum(m, (uint64_t)m->hdr->max_keys +
		    sl->id);
		sl->denied = atomic_load_explicit(&l->denied,
		    memory_order_relaxed);
		cap = atomic_load_explicit(&l->srv_cap, memory_order_relaxed);
		sl->srv_left = UINT64_MAX;
		if (sl->spec.kind != LIM_CONC && cap_live(cap, now)) {
			sl->srv_left = cap_left(cap);
			sl->srv_reset_ns = cap_until_ns(cap) - now;
		}
		sl->srv_limit = atomic_load_explicit(&l->srv_limit,
		    memory_order_relaxed);
		fed = atomic_load_explicit(&l->fed_info, memory_order_relaxed);
		sl->fed_global = (fed & FED_INFO_GLOBAL) != 0 &&
		    s->fed_state != 0;
		sl->fed_disagree = (fed & FED_INFO_DISAGREE) != 0;
		sl->fed_hosts = FED_INFO_HOSTS(fed);
		sl->fed_lease_age_ns = FED_INFO_LEASE_NS(fed) == 0 ?
		    UINT64_MAX : now > FED_INFO_LEASE_NS(fed) ?
		    now - FED_INFO_LEASE_NS(fed) : 0;
		sl->fed_held = atomic_load_explicit(&l->fed_held,
		    memory_order_relaxed);
		sl->fed_granted = atomic_load_explicit(&l->fed_granted,
		    memory_order_relaxed);
		if (sl->srv_limit == sl->spec.count)
			sl->srv_limit = 0;
		if (sl->spec.kind == LIM_CONC) {
			/* What takes honour: eff while adaptive cut it. */
			sl->eff = (uint32_t)sl->spec.count;
			if (sl->spec.adaptive) {
				uint32_t e = atomic_load_explicit(&l->eff,
				    memory_order_relaxed);

				if (e >= 1 && e < sl->eff)
					sl->eff = e;
			}
		}
		if (!sl->ok)
			continue;
		tat = cost1 = 0;
		switch (sl->spec.kind) {
		case LIM_RATE:
			tat = atomic_load_explicit(&l->tat_ns,
			    memory_order_relaxed);
			cost1 = gcra_cost_ns(1, sl->spec.period_ns,
			    sl->spec.count);
			sl->available = gcra_available(tat, now, cost1,
			    sl->tau_ns);
			break;
		case LIM_WINDOW:
			sum = win_sum(&cells[sl->cells], now, sl->tau_ns);
			sl->available = sum < sl->spec.count ?
			    sl->spec.count - sum : 0;
			break;
		case LIM_CONC:
			/*
			 * Each cell once, kept: in_flight and who holds
			 * what (holders, a client's leases) then agree.
			 */
			sl->in_flight = 0;
			for (uint32_t c = 0; c < sl->ncells; c++) {
				v = atomic_load_explicit(&cells[sl->cells + c],
				    memory_order_relaxed);
				s->cellv[sl->cells + c] = v;
				sl->in_flight += v != 0;
			}
			sl->available = sl->in_flight < sl->eff ?
			    sl->eff - sl->in_flight : 0;
			break;
		}
		sl->next_ns = next_ns(sl, cells, tat, cost1, now);
	}
	bus_armed = 0;
	return 0;
}

/* The name of process pid, "?" if it cannot be read. */
static void
read_comm(int32_t pid, char *buf, size_t len)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	n = -1;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
		n = read(fd, buf, len - 1);
		close(fd);
	}
	if (n <= 0) {
		snprintf(buf, len, "?");
		return;
	}
	buf[n] = '\0';
	/* The kernel adds a newline; the name itself may hold one. */
	if (buf[n - 1] == '\n')
		buf[n - 1] = '\0';
}

/* The inode of our own PID namespace; 0 unknown. */
static uint64_t
own_pid_ns(void)
{
	struct stat st;

	return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/*
 * What each client slot's owner word means now: its process may have
 * exited since, until the broker reclaims it.  Alive is what the broker
 * goes by, the slot's liveness lock (seg.h), asked on our read-only
 * descriptor; the pid is the client's own word, which names a process of
 * ours only when it runs in our PID namespace.
 */
static void
client_check(struct st_client *c, int fd, uint32_t slot, uint64_t ns)
{
	uint32_t st = CLIENT_STATE(c->owner);
	int held;

	snprintf(c->comm, sizeof(c->comm), "?");
	c->own_ns = ns != 0 && c->pid_ns == ns;
	if (c->owner == 0) {
		c->state = CL_FREE;
		return;
	}
	if (st != CLIENT_CLAIMING && st != CLIENT_LIVE &&
	    st != CLIENT_RECLAIMING) {
		c->state = CL_BAD;
		return;
	}
	c->state = st == CLIENT_LIVE ? CL_LIVE : CL_CLAIMING;
	held = seg_slot_locked(fd, slot);
	if (st == CLIENT_RECLAIMING || (held == 0 && st == CLIENT_LIVE))
		c->state = CL_GONE;
	if (c->state != CL_GONE && c->own_ns && c->pid > 0)
		read_comm(c->pid, c->comm, sizeof(c->comm));
	else if (c->state != CL_GONE && !c->own_ns)
		snprintf(c->comm, sizeof(c->comm), "(other pid ns)");
}

/*
 * Fill *s from the segment mapped in *m.  Returns 0, -ENOMEM, -EBADMSG (a
 * config copy that is malformed though not torn) or -EFAULT (the state
 * object stayed truncated).  The caller frees with snap_free.
 */
static int
collect(const struct seg_map *m, const char *segment, struct snap *s)
{
	const struct seg_header *h = m->hdr;
	struct timespec pause = { 0, 100 * (long)NS_PER_MS };
	uint64_t ns;
	int r;

	memset(s, 0, sizeof(*s));
	s->segment = segment;
	s->max_cells = h->max_cells;
	s->keys = calloc(h->max_keys, sizeof(*s->keys));
	s->limits = calloc(h->max_limits, sizeof(*s->limits));
	s->cl = calloc(h->max_clients, sizeof(*s->cl));
	s->cellv = calloc(h->max_cells, sizeof(*s->cellv));
	if (s->keys == NULL || s->limits == NULL || s->cl == NULL ||
	    s->cellv == NULL)
		return -ENOMEM;
	if ((r = read_config(m, s)) < 0)
		return r;
	for (int i = 0; i < BUS_RETRIES; i++) {
		if ((r = read_state(m, s)) != -EFAULT)
			break;
		/* The broker puts the size back on its next tick. */
		nanosleep(&pause, NULL);
	}
	if (r < 0)
		return r;
	/* Out of the guard: these read /proc, not the segment. */
	ns = own_pid_ns();
	for (uint32_t i = 0; i < s->max_clients; i++)
		client_check(&s->cl[i], m->state_fd, i, ns);
	return 0;
}

void
snap_free(struct snap *s)
{
	free(s->keys);
	free(s->limits);
	free(s->cl);
	free(s->cellv);
}

/*
 * Keep only key and the keys under it ("a" keeps "a" and "a/...", not
 * "ab"), in name order.  Returns 0, or -ENOENT (*s unchanged) if there is
 * no such key.
 */
static int
filter_keys(struct snap *s, const char *key)
{
	size_t len = strlen(key);
	unsigned i, n = 0;

	for (i = 0; i < s->nkeys && strcmp(s->keys[i].name, key) != 0; i++)
		;
	if (i == s->nkeys)
		return -ENOENT;
	for (i = 0; i < s->nkeys; i++) {
		const char *name = s->keys[i].name;

		if (strcmp(name, key) == 0 ||
		    (strncmp(name, key, len) == 0 && name[len] == '/'))
			s->keys[n++] = s->keys[i];
	}
	s->nkeys = n;
	s->filter = key;
	return 0;
}

/*
 * Helpers the printers share: who holds leases.  Only concurrency limits
 * whose cells were checked (ok) were read into cellv.
 */

/* The pid whose slot lease cell value v names; 0 if no client has it. */
static int32_t
lease_pid(const struct snap *s, uint64_t v)
{
	uint32_t slot = LEASE_SLOT(v);
	const struct st_client *c;

	if (slot >= s->max_clients)
		return 0;
	c = &s->cl[slot];
	return c->state == CL_FREE || c->state == CL_BAD ? 0 : c->pid;
}

static int
pid_cmp(const void *pa, const void *pb)
{
	int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;

	return (a > b) - (a < b);
}

/*
 * The distinct pids holding leases of l, ascending, into pids (room for
 * s->max_cells).  Returns how many.
 */
unsigned
limit_holders(const struct snap *s, const struct st_limit *l, int32_t *pids)
{
	unsigned n = 0, u = 0;

	if (l->spec.kind != LIM_CONC || !l->ok)
		return 0;
	for (uint32_t i = 0; i < l->ncells; i++)
		if (s->cellv[l->cells + i] != 0)
			pids[n++] = lease_pid(s, s->cellv[l->cells + i]);
	qsort(pids, n, sizeof(*pids), pid_cmp);
	for (unsigned i = 0; i < n; i++)
		if (u == 0 || pids[i] != pids[u - 1])
			pids[u++] = pids[i];
	return u;
}

/*
 * Leases each slot holds on the concurrency limits of the keys shown,
 * into held[max_clients].  Returns held, or exits on ENOMEM.
 */
uint32_t *
slot_leases(const struct snap *s)
{
	uint32_t *held, slot;

	if ((held = calloc(s->max_clients + 1, sizeof(*held))) == NULL)
		err(1, NULL);
	for (unsigned i = 0; i < s->nkeys; i++) {
		const struct st_key *k = &s->keys[i];

		for (unsigned j = k->first; j < k->first + k->nlimits; j++) {
			const struct st_limit *l = &s->limits[j];

			if (l->spec.kind != LIM_CONC || !l->ok)
				continue;
			for (uint32_t c = 0; c < l->ncells; c++) {
				if (s->cellv[l->cells + c] == 0)
					continue;
				slot = LEASE_SLOT(s->cellv[l->cells + c]);
				if (slot < s->max_clients)
					held[slot]++;
			}
		}
	}
	return held;
}

/* Why seg_attach failed, for a person who typed the segment's name. */
static const char *
attach_error(int r)
{
	switch (r) {
	case -ENOENT:
		return "no such segment: no broker made it (is tollgated "
		    "running? is the name right?)";
	case -EPROTO:
		return "another layout version (use the tollstat that came "
		    "with the running tollgated)";
	case -EACCES:
		return "permission denied (the state object is for the "
		    "workers' group)";
	case -EBADMSG:
		return "malformed segment (its sizes do not add up)";
	case -EINVAL:
		return "not a segment name (letters, digits, '.', '_', '-')";
	case -ENAMETOOLONG:
		return "segment name too long";
	}
	return strerror(-r);
}

int
snap_read(const char *segment, const char *key, struct snap *s, char *why,
    size_t len)
{
	struct seg_map m;
	char hint[384];
	int r;

	memset(s, 0, sizeof(*s));
	/* Read-only, both objects: a stray write here faults, by design. */
	if ((r = seg_attach(segment, 0, &m)) < 0) {
		if (r == -EACCES) {
			access_why(segment, hint, sizeof(hint));
			snprintf(why, len, "segment %s: %s", segment, hint);
		} else
			snprintf(why, len, "segment %s: %s", segment,
			    attach_error(r));
		return -1;
	}
	bus_install(&m);
	r = collect(&m, segment, s);
	seg_detach(&m);
	if (r == -EFAULT)
		snprintf(why, len, "segment %s: its state object was "
		    "truncated and not restored (is tollgated running?)",
		    segment);
	else if (r == -EBADMSG)
		snprintf(why, len, "segment %s: malformed config copy "
		    "(generation %" PRIu64 ")", segment, s->gen);
	else if (r < 0)
		snprintf(why, len, "segment %s: %s", segment, strerror(-r));
	else if (key != NULL && filter_keys(s, key) < 0) {
		snprintf(why, len, "segment %s: no key %s (generation %"
		    PRIu64 ")", segment, key, s->gen);
		r = -ENOENT;
	}
	return r < 0 ? -1 : 0;
}
