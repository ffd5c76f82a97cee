/* tollstat.c: show a segment, read-only: broker, clients, keys, limits. */
#include <sys/types.h>
#include <assert.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "gcra.h"
#include "seg.h"
#include "srvcap.h"
#include "window.h"

#define NS_PER_MS	UINT64_C(1000000)
#define NS_PER_S	UINT64_C(1000000000)
#define STALE_NS	NS_PER_S	/* heartbeat older: the broker hangs */
#define BUS_RETRIES	3		/* state object cut under us: retry */
#define NEXT_RELEASE	UINT64_MAX	/* next_ns: when a lease comes back */
#define SPEC_MAX	112		/* a limit in the config's syntax */
#define COMM_MAX	16		/* /proc/PID/comm with its newline */

/*
 * The collector fills a struct snap, the printers (table, clients, JSON,
 * Prometheus) only read it.  Numbers are exact here; only the table
 * printers round them.
 */

enum broker_st {
	BROKER_LIVE,
	BROKER_NONE,		/* pid 0: none attached, or it exited */
	BROKER_DEAD,		/* that pid is gone: it was killed */
	BROKER_OTHER,		/* that pid is another process now */
};

static const char *const broker_names[] = {
	[BROKER_LIVE] = "live", [BROKER_NONE] = "none",
	[BROKER_DEAD] = "dead", [BROKER_OTHER] = "other",
};

/* A limit: its spec from the config copy, its state at snap.now_ns. */
struct st_limit {
	uint16_t	id;
	uint16_t	key;		/* owning key id */
	int		ok;		/* its cells checked: state is real */
	struct limit_spec spec;
	char		spec_str[SPEC_MAX]; /* spec, by limit_format */
	uint64_t	available;	/* units that fit now */
	uint64_t	next_ns;	/* until one unit fits; NEXT_RELEASE */
	uint64_t	in_flight;	/* LIM_CONC: leases held; else 0 */
	uint64_t	granted;	/* units; leases for LIM_CONC */
	uint64_t	denied;		/* refusals */
	uint64_t	conf_count;	/* the config file's; count if learned */
	uint32_t	eff;		/* LIM_CONC: leases allowed now */
	uint64_t	srv_left;	/* server's remaining; UINT64_MAX none */
	uint64_t	srv_reset_ns;	/* until then */
	uint64_t	srv_limit;	/* server's limit unlike ours; 0 none */
	/* where its state lives, as the config copy says */
	uint64_t	tau_ns;		/* rate: GCRA limit; window: sub */
	uint32_t	cells;
	uint32_t	ncells;
};

/* A key and its own limits, snap.limits[first .. first + nlimits). */
struct st_key {
	char		name[SEG_NAME_MAX];
	char		parent_name[SEG_NAME_MAX]; /* "" at the top */
	uint16_t	id;
	uint16_t	parent;		/* key id or SEG_NONE */
	unsigned	first;
	unsigned	nlimits;
	uint64_t	granted;	/* tickets */
	uint64_t	denied;		/* tickets refused */
	uint64_t	paused_ns;	/* pause left at now_ns; 0: none */
	uint64_t	status[ST_COUNT]; /* responses by class, paused ns */
};

enum client_st {
	CL_FREE,
	CL_CLAIMING,		/* registering */
	CL_LIVE,
	CL_GONE,		/* its process exited: the broker reclaims it */
	CL_BAD,			/* an owner word no client writes */
};

static const char *const client_names[] = {
	[CL_FREE] = "free", [CL_CLAIMING] = "claiming", [CL_LIVE] = "live",
	[CL_GONE] = "gone", [CL_BAD] = "invalid",
};

/* A client slot, free or not. */
struct st_client {
	uint64_t	owner;		/* state << 32 | pid, as read */
	uint64_t	start;		/* its /proc/PID/stat starttime */
	int32_t		pid;
	int		state;		/* enum client_st */
	char		comm[COMM_MAX + 1]; /* process name; "?" unknown */
	uint64_t	acquired;	/* tickets */
	uint64_t	denied;
	uint64_t	released;
	uint64_t	waits;
};

struct snap {
	const char	*segment;
	const char	*filter;	/* -k KEY, or NULL */
	uint64_t	now_ns;		/* when the state was read */
	/* the broker */
	int		broker;		/* enum broker_st */
	int32_t		broker_pid;
	uint64_t	uptime_ns;	/* 0 unless BROKER_LIVE */
	uint64_t	heartbeat_age_ns;
	uint64_t	repairs;	/* state garbage it fixed */
	/* the config copy */
	uint64_t	gen;		/* config generation */
	unsigned	cfg_nkeys;	/* in the config, whatever -k shows */
	unsigned	cfg_nlimits;
	/* the clients: live slots, and every slot's counters plus retired */
	uint32_t	clients;
	uint32_t	max_clients;
	uint64_t	acquired;	/* tickets */
	uint64_t	denied;
	uint64_t	released;
	uint64_t	waits;		/* tg_acquire calls that slept */
	struct st_client *cl;		/* [max_clients], by slot */
	uint64_t	*cellv;		/* [max_cells]: lease cells as read */
	uint32_t	max_cells;
	struct st_key	*keys;		/* [max_keys], in name order */
	unsigned	nkeys;		/* shown: all, or -k's subtree */
	struct st_limit	*limits;	/* [max_limits], grouped by key */
	unsigned	nlimits;
};

static void
usage(FILE *f, int status)
{
	fprintf(f, "usage: tollstat [-chjp] [-k KEY] [-s SEGMENT]\n"
	    "  -s SEGMENT  the segment to show (default \"tollgate\")\n"
	    "  -k KEY      only KEY and the keys under it (KEY/...)\n"
	    "  -c          the client slots instead of the keys; LEASES "
	    "counts\n"
	    "              leases of the keys shown\n"
	    "  -j          JSON, schema 1 (it always lists the clients)\n"
	    "  -p          Prometheus text format 0.0.4\n"
	    "  -h          this help\n"
	    "Key rows count tickets; limit rows count the limit's units "
	    "(leases for\nconcurrency).  AVAILABLE is what would fit now; "
	    "NEXT, how long until\none more unit fits (\"release\": when a "
	    "lease is given back).\n");
	exit(status);
}

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
	uint64_t used, need;

	if (sl->available > 0)
		return 0;
	switch (sl->spec.kind) {
	case LIM_RATE:
		/* gcra_take's retry for one unit, without the take. */
		used = tat > now ? tat - now : 0;
		need = used > UINT64_MAX - cost1 ? UINT64_MAX : used + cost1;
		return need > sl->tau_ns ? need - sl->tau_ns : 0;
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
	uint64_t now, hb, since, start, paused, tat, sum, cap, cost1, v;
	int32_t pid;

	if (sigsetjmp(bus_env, 1) != 0)
		return -EFAULT;
	bus_armed = 1;
	/*
	 * Acquire: pairs with the broker's (seq_cst) store of its pid, made
	 * after its start time and since: those are then its own.
	 */
	pid = atomic_load_explicit(&h->broker_pid, memory_order_acquire);
	start = atomic_load_explicit(&h->broker_start, memory_order_relaxed);
	since = atomic_load_explicit(&h->broker_since_ns,
	    memory_order_relaxed);
	hb = atomic_load_explicit(&h->heartbeat_ns, memory_order_relaxed);
	s->repairs = atomic_load_explicit(&h->repairs, memory_order_relaxed);
	/* After the heartbeat's load: an age is never negative. */
	s->now_ns = now = now_ns();
	s->broker_pid = pid;
	s->broker = broker_check(pid, start);
	s->uptime_ns = s->broker == BROKER_LIVE && now > since ?
	    now - since : 0;
	s->heartbeat_age_ns = now > hb ? now - hb : 0;

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
	for (uint32_t i = 0; i < h->max_clients; i++) {
		struct st_client *sc = &s->cl[i];

		sc->owner = atomic_load_explicit(&cl[i].owner,
		    memory_order_relaxed);
		sc->start = atomic_load_explicit(&cl[i].start_time,
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
		s->acquired += sc->acquired;
		s->denied += sc->denied;
		s->released += sc->released;
		s->waits += sc->waits;
	}

	for (unsigned i = 0; i < s->nkeys; i++) {
		struct st_key *sk = &s->keys[i];
		struct seg_kstate *k = &ks[sk->id];

		sk->granted = atomic_load_explicit(&k->granted,
		    memory_order_relaxed);
		sk->denied = atomic_load_explicit(&k->denied,
		    memory_order_relaxed);
		paused = atomic_load_explicit(&k->paused_until_ns,
		    memory_order_relaxed);
		sk->paused_ns = paused > now ? paused - now : 0;
		for (int c = 0; c < ST_COUNT; c++)
			sk->status[c] = atomic_load_explicit(&k->status[c],
			    memory_order_relaxed);
	}

	for (unsigned i = 0; i < s->nlimits; i++) {
		struct st_limit *sl = &s->limits[i];
		struct seg_lstate *l = &ls[sl->id];

		sl->granted = atomic_load_explicit(&l->granted,
		    memory_order_relaxed);
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

/*
 * What each client slot's owner word means now: its process may have
 * exited (or its pid been reused) since, until the broker reclaims it.
 */
static void
client_check(struct st_client *c)
{
	uint32_t st = CLIENT_STATE(c->owner);
	uint64_t start;

	c->pid = CLIENT_PID(c->owner);
	snprintf(c->comm, sizeof(c->comm), "?");
	if (c->owner == 0) {
		c->state = CL_FREE;
		return;
	}
	if ((st != CLIENT_CLAIMING && st != CLIENT_LIVE) || c->pid <= 0) {
		c->state = CL_BAD;
		return;
	}
	c->state = st == CLIENT_LIVE ? CL_LIVE : CL_CLAIMING;
	if (kill(c->pid, 0) < 0 && errno == ESRCH)
		c->state = CL_GONE;
	else if (st == CLIENT_LIVE && proc_starttime(c->pid, &start) == 0 &&
	    start != c->start)
		c->state = CL_GONE;
	if (c->state != CL_GONE)
		read_comm(c->pid, c->comm, sizeof(c->comm));
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
	for (uint32_t i = 0; i < s->max_clients; i++)
		client_check(&s->cl[i]);
	return 0;
}

static void
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
static unsigned
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
static uint32_t *
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

/* Bytes of the valid UTF-8 sequence at p, 0 if there is none. */
static int
utf8_len(const unsigned char *p)
{
	int n;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4;
	else
		return 0;
	for (int i = 1; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	/* Overlong, surrogate, past U+10FFFF. */
	if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0) ||
	    (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))
		return 0;
	return n;
}

/*
 * A process name for the terminal: it is the process's to choose, so
 * control characters and bytes that are not UTF-8 become '?' and cannot
 * rewrite the screen.
 */
static void
tame(char *s)
{
	unsigned char *p = (unsigned char *)s;
	int n;

	while (*p != '\0') {
		if (*p < 0x20 || *p == 0x7f || (n = utf8_len(p)) == 0) {
			*p++ = '?';
			continue;
		}
		while (n-- > 0 && *p != '\0')
			p++;
	}
}

static const char *
kind_name(unsigned kind)
{
	switch (kind) {
	case LIM_RATE:
		return "rate";
	case LIM_WINDOW:
		return "window";
	case LIM_CONC:
		return "concurrency";
	}
	return "?";
}

/*
 * The table printers.  Counts below 100000 are exact; above, three
 * significant digits and an SI suffix ("1.23M").
 */
static void
fmt_count(char *buf, size_t len, uint64_t v)
{
	static const char sfx[] = "kMGTPE";
	double x = (double)v;
	int i = -1;

	if (v < 100000) {
		snprintf(buf, len, "%" PRIu64, v);
		return;
	}
	while (x >= 999.5 && i < 5) {
		x /= 1000;
		i++;
	}
	snprintf(buf, len, x < 9.995 ? "%.2f%c" : x < 99.95 ? "%.1f%c" :
	    "%.0f%c", x, sfx[i]);
}

/* A duration the way a human reads it: "12ms", "4.2s", "3m07s", "2d04h". */
static void
fmt_dur(char *buf, size_t len, uint64_t ns)
{
	uint64_t s = ns / NS_PER_S;

	if (ns < NS_PER_MS)
		snprintf(buf, len, "%" PRIu64 "us", ns / 1000);
	else if (ns < NS_PER_S)
		snprintf(buf, len, "%" PRIu64 "ms", ns / NS_PER_MS);
	else if (s < 60)
		snprintf(buf, len, "%" PRIu64 ".%" PRIu64 "s", s,
		    ns % NS_PER_S / (NS_PER_S / 10));
	else if (s < 3600)
		snprintf(buf, len, "%" PRIu64 "m%02" PRIu64 "s", s / 60,
		    s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%" PRIu64 "h%02" PRIu64 "m", s / 3600,
		    s % 3600 / 60);
	else
		snprintf(buf, len, "%" PRIu64 "d%02" PRIu64 "h", s / 86400,
		    s % 86400 / 3600);
}

/* One line of the table, every cell already a string. */
struct row {
	char		name[SPEC_MAX + 2]; /* key name, or "  " and a spec */
	char		avail[16];
	char		next[16];
	char		inflight[16];
	char		granted[16];
	char		denied[16];
	char		note[160];	/* "paused 12s; ok 120; limited 3" */
};

#define NCOLS	6

static const char *const col_head[NCOLS] = {
	"KEY / LIMIT", "AVAILABLE", "NEXT", "IN FLIGHT", "GRANTED", "DENIED",
};

static void
row_cells(const struct row *r, const char *cell[NCOLS])
{
	cell[0] = r->name;
	cell[1] = r->avail;
	cell[2] = r->next;
	cell[3] = r->inflight;
	cell[4] = r->granted;
	cell[5] = r->denied;
}

static void
print_header(FILE *f, const struct snap *s)
{
	char a[32], b[32], c[32], d[32];

	fprintf(f, "%-10s %s\n", "segment", s->segment);
	switch (s->broker) {
	case BROKER_LIVE:
		fmt_dur(a, sizeof(a), s->uptime_ns);
		fprintf(f, "%-10s pid %d, up %s\n", "broker",
		    (int)s->broker_pid, a);
		break;
	case BROKER_NONE:
		fprintf(f, "%-10s no broker\n", "broker");
		break;
	case BROKER_DEAD:
		fprintf(f, "%-10s no broker (pid %d is gone)\n", "broker",
		    (int)s->broker_pid);
		break;
	case BROKER_OTHER:
		fprintf(f, "%-10s no broker (pid %d is another process now)\n",
		    "broker", (int)s->broker_pid);
		break;
	}
	fmt_dur(a, sizeof(a), s->heartbeat_age_ns);
	fprintf(f, "%-10s %s ago%s\n", "heartbeat", a,
	    s->heartbeat_age_ns > STALE_NS ? " (stale)" : "");
	fprintf(f, "%-10s %" PRIu32 " of %" PRIu32 " slots\n", "clients",
	    s->clients, s->max_clients);
	fprintf(f, "%-10s generation %" PRIu64 ": %u key%s, %u limit%s\n",
	    "config", s->gen, s->cfg_nkeys, s->cfg_nkeys == 1 ? "" : "s",
	    s->cfg_nlimits, s->cfg_nlimits == 1 ? "" : "s");
	fmt_count(a, sizeof(a), s->repairs);
	fprintf(f, "%-10s %s\n", "repairs", a);
	fmt_count(a, sizeof(a), s->acquired);
	fmt_count(b, sizeof(b), s->denied);
	fmt_count(c, sizeof(c), s->released);
	fmt_count(d, sizeof(d), s->waits);
	fprintf(f, "%-10s %s acquired, %s denied, %s released, %s waited\n",
	    "tickets", a, b, c, d);
}

/* Append to a note, "; "-separated. */
static void
note_add(char *note, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
note_add(char *note, size_t len, const char *fmt, ...)
{
	size_t n = strlen(note);
	va_list ap;

	if (n > 0 && n + 2 < len) {
		memcpy(note + n, "; ", 3);
		n += 2;
	}
	if (n + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(note + n, len - n, fmt, ap);
	va_end(ap);
}

/* A key's pause and the responses its tickets saw, by class. */
static void
key_note(const struct st_key *k, char *note, size_t len)
{
	static const char *const cls[ST_PAUSED_NS] = {
		[ST_OK] = "ok", [ST_LIMITED] = "limited", [ST_AUTH] = "auth",
		[ST_CLIENT] = "4xx", [ST_SERVER] = "5xx",
	};
	char a[32], dur[32];

	note[0] = '\0';
	if (k->paused_ns > 0) {
		fmt_dur(dur, sizeof(dur), k->paused_ns);
		note_add(note, len, "paused %s", dur);
	}
	for (int c = 0; c < ST_PAUSED_NS; c++)
		if (k->status[c] > 0) {
			fmt_count(a, sizeof(a), k->status[c]);
			note_add(note, len, "%s %s", cls[c], a);
		}
	if (k->status[ST_PAUSED_NS] > 0) {
		fmt_dur(dur, sizeof(dur), k->status[ST_PAUSED_NS]);
		note_add(note, len, "paused %s in all", dur);
	}
}

/* What responses changed on a limit: server figures, learned, adaptive. */
static void
limit_note(const struct st_limit *l, char *note, size_t len)
{
	char a[32], dur[32];

	note[0] = '\0';
	if (l->spec.kind == LIM_CONC && l->spec.adaptive)
		note_add(note, len, "adaptive: %" PRIu32 " of %" PRIu64,
		    l->eff, l->spec.count);
	if (l->srv_left != UINT64_MAX) {
		fmt_count(a, sizeof(a), l->srv_left);
		fmt_dur(dur, sizeof(dur), l->srv_reset_ns);
		note_add(note, len, "server: %s left for %s", a, dur);
	}
	if (l->conf_count != l->spec.count)
		note_add(note, len, "learned (config %" PRIu64 ")",
		    l->conf_count);
	if (l->srv_limit != 0)
		note_add(note, len, "server says %" PRIu64, l->srv_limit);
}

/* A limit's row: the state cells "?" where its cells failed the check. */
static void
limit_row(const struct st_limit *l, struct row *r)
{
	memcpy(r->name, "  ", 2);
	snprintf(r->name + 2, sizeof(r->name) - 2, "%s", l->spec_str);
	if (!l->ok) {
		snprintf(r->avail, sizeof(r->avail), "?");
		snprintf(r->next, sizeof(r->next), "?");
	} else {
		fmt_count(r->avail, sizeof(r->avail), l->available);
		if (l->next_ns == 0)
			snprintf(r->next, sizeof(r->next), "now");
		else if (l->next_ns == NEXT_RELEASE)
			snprintf(r->next, sizeof(r->next), "release");
		else
			fmt_dur(r->next, sizeof(r->next), l->next_ns);
	}
	if (l->spec.kind == LIM_CONC && l->ok)
		fmt_count(r->inflight, sizeof(r->inflight), l->in_flight);
	else
		snprintf(r->inflight, sizeof(r->inflight),
		    l->spec.kind == LIM_CONC ? "?" : "-");
	fmt_count(r->granted, sizeof(r->granted), l->granted);
	fmt_count(r->denied, sizeof(r->denied), l->denied);
	limit_note(l, r->note, sizeof(r->note));
}

static void
print_table(FILE *f, const struct snap *s)
{
	struct row *rows;
	const char *cell[NCOLS];
	size_t w[NCOLS], n;
	unsigned nrows = 0;

	print_header(f, s);
	fputc('\n', f);
	if (s->nkeys == 0) {
		fprintf(f, "(no keys)\n");
		return;
	}
	if ((rows = calloc(s->nkeys + s->nlimits, sizeof(*rows))) == NULL)
		err(1, NULL);
	for (unsigned i = 0; i < s->nkeys; i++) {
		const struct st_key *k = &s->keys[i];
		struct row *r = &rows[nrows++];

		snprintf(r->name, sizeof(r->name), "%s", k->name);
		fmt_count(r->granted, sizeof(r->granted), k->granted);
		fmt_count(r->denied, sizeof(r->denied), k->denied);
		key_note(k, r->note, sizeof(r->note));
		for (unsigned j = k->first; j < k->first + k->nlimits; j++)
			limit_row(&s->limits[j], &rows[nrows++]);
	}
	for (int c = 0; c < NCOLS; c++)
		w[c] = strlen(col_head[c]);
	for (unsigned i = 0; i < nrows; i++) {
		row_cells(&rows[i], cell);
		for (int c = 0; c < NCOLS; c++)
			if ((n = strlen(cell[c])) > w[c])
				w[c] = n;
	}
	fprintf(f, "%-*s", (int)w[0], col_head[0]);
	for (int c = 1; c < NCOLS; c++)
		fprintf(f, "  %*s", (int)w[c], col_head[c]);
	fputc('\n', f);
	for (unsigned i = 0; i < nrows; i++) {
		row_cells(&rows[i], cell);
		fprintf(f, "%-*s", (int)w[0], cell[0]);
		for (int c = 1; c < NCOLS; c++)
			fprintf(f, "  %*s", (int)w[c], cell[c]);
		if (rows[i].note[0])
			fprintf(f, "  %s", rows[i].note);
		fputc('\n', f);
	}
	free(rows);
}

/* -c: the slots in use, one a line. */
static void
print_clients(FILE *f, const struct snap *s)
{
	char name[COMM_MAX + 1], a[16], d[16], r[16];
	uint32_t *held = slot_leases(s);
	int any = 0;

	print_header(f, s);
	fputc('\n', f);
	for (uint32_t i = 0; i < s->max_clients; i++) {
		const struct st_client *c = &s->cl[i];

		if (c->state == CL_FREE)
			continue;
		if (!any)
			fprintf(f, "%4s  %7s  %-16s  %-8s  %6s  %8s  %8s  "
			    "%8s\n", "SLOT", "PID", "NAME", "STATE", "LEASES",
			    "ACQUIRED", "DENIED", "RELEASED");
		any = 1;
		snprintf(name, sizeof(name), "%s", c->comm);
		tame(name);
		fmt_count(a, sizeof(a), c->acquired);
		fmt_count(d, sizeof(d), c->denied);
		fmt_count(r, sizeof(r), c->released);
		fprintf(f, "%4" PRIu32 "  %7d  %-16s  %-8s  %6" PRIu32
		    "  %8s  %8s  %8s\n", i, (int)c->pid, name,
		    client_names[c->state], held[i], a, d, r);
	}
	if (!any)
		fprintf(f, "(no clients)\n");
	free(held);
}

/*
 * -j: JSON.  The schema, version 1 ("schema": 1).  A field is added
 * without a new version; one removed, renamed or whose meaning changes
 * gets a new version.  Integers are exact unsigned 64-bit unless said
 * (beware of doubles past 2^53); times are ns: durations, or
 * CLOCK_MONOTONIC for now_ns.  "u64" below is such an integer.
 *
 * {
 *   "schema":      1,
 *   "segment":     string, the segment's name,
 *   "now_ns":      u64, CLOCK_MONOTONIC when the state was read,
 *   "key_filter":  string (-k KEY) or null,
 *   "broker": {
 *     "state":     "live" | "none" (none attached) | "dead" (its pid
 *                  is gone) | "other" (its pid is another process now),
 *     "pid":       int, the last broker's pid (0: none ever),
 *     "uptime_ns": u64, 0 unless live,
 *     "heartbeat_age_ns": u64, since its last tick,
 *     "stale":     bool, heartbeat_age_ns over 1 s: it hangs,
 *     "repairs":   u64, count of state garbage it fixed
 *   },
 *   "config": {
 *     "generation": u64, publish count of the config copy,
 *     "keys":      u64, keys in the config (whatever key_filter shows),
 *     "limits":    u64, limits in the config
 *   },
 *   "clients": {
 *     "live":      u64, slots of running clients,
 *     "slots":     u64, slots in the segment,
 *     "list": [    every slot in use (-c or not), by slot:
 *       { "slot": u64, "pid": int,
 *         "comm":  string, /proc/PID/comm, "?" if unreadable,
 *         "state": "claiming" | "live" | "gone" (exited; the broker
 *                  reclaims it) | "invalid" (garbage owner word),
 *         "leases": u64, leases held on the concurrency limits of the
 *                  keys listed,
 *         "acquired", "denied", "released", "waits": u64, tickets }
 *     ]
 *   },
 *   "tickets": { "acquired", "denied", "released", "waits": u64:
 *                every slot's, plus slots reclaimed since },
 *   "keys": [      in name order, a parent before its children
 *     { "name":    string,
 *       "parent":  string, or null at the top,
 *       "granted", "denied": u64, tickets,
 *       "paused_ns": u64, pause left; 0 none,
 *       "status": { "ok", "limited", "auth", "client_error",
 *                   "server_error": u64, responses by class,
 *                   "paused_total_ns": u64, all the pauses },
 *       "limits": [ its own limits (ancestors' are under the ancestor)
 *         { "spec":  string, in the config's syntax,
 *           "kind":  "rate" | "window" | "concurrency",
 *           "unit":  "requests" | "tokens" | "images",
 *           "count": u64, in force: per period, per window, in flight
 *                    (the server's once learned),
 *           "configured_count": u64, the config file's,
 *           "period_ns": u64, 0 for concurrency,
 *           "burst": u64, rate: bucket size in units; else 0,
 *           "cooldown_ns": u64, 0 none,
 *           "adaptive": bool,
 *           "effective": u64, concurrency: leases allowed now (below
 *                    count while adaptive cut it); else null,
 *           "available": u64, units that fit now; null if the limit's
 *                    cells failed the check (shown "?" in the table),
 *           "next_ns": u64, until one more unit fits (0: now); null
 *                    for a full concurrency limit (when a lease is
 *                    released) and if unchecked.  available and
 *                    next_ns are the limit's own; "server" may cap it,
 *           "in_flight": u64, concurrency: leases held; else null,
 *           "holders": [int], concurrency: distinct pids holding its
 *                    leases, ascending (0: a slot no client owns);
 *                    else [],
 *           "server": { "remaining": u64, "reset_ns": u64 } while a
 *                    server's remaining caps it; else null,
 *           "server_limit": u64, a limit the server reported unlike
 *                    count; else null,
 *           "granted": u64, units (leases for concurrency),
 *           "denied":  u64, refusals }
 *       ]
 *     }
 *   ]
 * }
 */
#define JSON_SCHEMA	1
#define JW_DEPTH	8

/* A JSON writer: members, commas and indentation by nesting. */
struct jw {
	FILE		*f;
	int		depth;
	int		more[JW_DEPTH];	/* the open container has members */
};

/* s as a JSON string; a byte that is not UTF-8 becomes U+FFFD. */
static void
jw_quote(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	int n;

	fputc('"', f);
	while (*p != '\0') {
		if (*p == '"' || *p == '\\') {
			fputc('\\', f);
			fputc(*p++, f);
		} else if (*p == '\n') {
			fputs("\\n", f);
			p++;
		} else if (*p == '\t') {
			fputs("\\t", f);
			p++;
		} else if (*p < 0x20) {
			fprintf(f, "\\u%04x", *p++);
		} else if ((n = utf8_len(p)) == 0) {
			fputs("\\ufffd", f);
			p++;
		} else {
			fwrite(p, 1, (size_t)n, f);
			p += n;
		}
	}
	fputc('"', f);
}

/* Start a member (named, in an object) or an element (name NULL). */
static void
jw_member(struct jw *w, const char *name)
{
	if (w->depth > 0) {
		if (w->more[w->depth])
			fputc(',', w->f);
		fprintf(w->f, "\n%*s", 2 * w->depth, "");
		w->more[w->depth] = 1;
	}
	if (name != NULL) {
		jw_quote(w->f, name);
		fputs(": ", w->f);
	}
}

static void
jw_open(struct jw *w, const char *name, int c)
{
	assert(w->depth + 1 < JW_DEPTH);
	jw_member(w, name);
	fputc(c, w->f);
	w->more[++w->depth] = 0;
}

static void
jw_close(struct jw *w, int c)
{
	if (w->more[w->depth--])
		fprintf(w->f, "\n%*s", 2 * w->depth, "");
	fputc(c, w->f);
}

static void
jw_u64(struct jw *w, const char *name, uint64_t v)
{
	jw_member(w, name);
	fprintf(w->f, "%" PRIu64, v);
}

static void
jw_int(struct jw *w, const char *name, int64_t v)
{
	jw_member(w, name);
	fprintf(w->f, "%" PRId64, v);
}

static void
jw_str(struct jw *w, const char *name, const char *s)
{
	jw_member(w, name);
	if (s != NULL)
		jw_quote(w->f, s);
	else
		fputs("null", w->f);
}

static void
jw_bool(struct jw *w, const char *name, int v)
{
	jw_member(w, name);
	fputs(v ? "true" : "false", w->f);
}

/* v, or null unless has. */
static void
jw_opt(struct jw *w, const char *name, int has, uint64_t v)
{
	if (has)
		jw_u64(w, name, v);
	else
		jw_str(w, name, NULL);
}

static void
json_limit(struct jw *w, const struct snap *s, const struct st_limit *l,
    int32_t *pids)
{
	int conc = l->spec.kind == LIM_CONC;
	unsigned n;

	jw_open(w, NULL, '{');
	jw_str(w, "spec", l->spec_str);
	jw_str(w, "kind", kind_name(l->spec.kind));
	jw_str(w, "unit", unit_name(l->spec.unit));
	jw_u64(w, "count", l->spec.count);
	jw_u64(w, "configured_count", l->conf_count);
	jw_u64(w, "period_ns", l->spec.period_ns);
	jw_u64(w, "burst", l->spec.burst);
	jw_u64(w, "cooldown_ns", l->spec.cooldown_ns);
	jw_bool(w, "adaptive", l->spec.adaptive);
	jw_opt(w, "effective", conc, l->eff);
	jw_opt(w, "available", l->ok, l->available);
	jw_opt(w, "next_ns", l->ok && l->next_ns != NEXT_RELEASE, l->next_ns);
	jw_opt(w, "in_flight", conc && l->ok, l->in_flight);
	jw_open(w, "holders", '[');
	n = limit_holders(s, l, pids);
	for (unsigned i = 0; i < n; i++)
		jw_int(w, NULL, pids[i]);
	jw_close(w, ']');
	if (l->srv_left != UINT64_MAX) {
		jw_open(w, "server", '{');
		jw_u64(w, "remaining", l->srv_left);
		jw_u64(w, "reset_ns", l->srv_reset_ns);
		jw_close(w, '}');
	} else {
		jw_str(w, "server", NULL);
	}
	jw_opt(w, "server_limit", l->srv_limit != 0, l->srv_limit);
	jw_u64(w, "granted", l->granted);
	jw_u64(w, "denied", l->denied);
	jw_close(w, '}');
}

static void
json_key(struct jw *w, const struct snap *s, const struct st_key *k,
    int32_t *pids)
{
	jw_open(w, NULL, '{');
	jw_str(w, "name", k->name);
	jw_str(w, "parent", k->parent_name[0] ? k->parent_name : NULL);
	jw_u64(w, "granted", k->granted);
	jw_u64(w, "denied", k->denied);
	jw_u64(w, "paused_ns", k->paused_ns);
	jw_open(w, "status", '{');
	jw_u64(w, "ok", k->status[ST_OK]);
	jw_u64(w, "limited", k->status[ST_LIMITED]);
	jw_u64(w, "auth", k->status[ST_AUTH]);
	jw_u64(w, "client_error", k->status[ST_CLIENT]);
	jw_u64(w, "server_error", k->status[ST_SERVER]);
	jw_u64(w, "paused_total_ns", k->status[ST_PAUSED_NS]);
	jw_close(w, '}');
	jw_open(w, "limits", '[');
	for (unsigned j = k->first; j < k->first + k->nlimits; j++)
		json_limit(w, s, &s->limits[j], pids);
	jw_close(w, ']');
	jw_close(w, '}');
}

static void
print_json(FILE *f, const struct snap *s)
{
	struct jw w = { .f = f };
	uint32_t *held = slot_leases(s);
	int32_t *pids;

	if ((pids = calloc(s->max_cells + 1, sizeof(*pids))) == NULL)
		err(1, NULL);
	jw_open(&w, NULL, '{');
	jw_u64(&w, "schema", JSON_SCHEMA);
	jw_str(&w, "segment", s->segment);
	jw_u64(&w, "now_ns", s->now_ns);
	jw_str(&w, "key_filter", s->filter);

	jw_open(&w, "broker", '{');
	jw_str(&w, "state", broker_names[s->broker]);
	jw_int(&w, "pid", s->broker_pid);
	jw_u64(&w, "uptime_ns", s->uptime_ns);
	jw_u64(&w, "heartbeat_age_ns", s->heartbeat_age_ns);
	jw_bool(&w, "stale", s->heartbeat_age_ns > STALE_NS);
	jw_u64(&w, "repairs", s->repairs);
	jw_close(&w, '}');

	jw_open(&w, "config", '{');
	jw_u64(&w, "generation", s->gen);
	jw_u64(&w, "keys", s->cfg_nkeys);
	jw_u64(&w, "limits", s->cfg_nlimits);
	jw_close(&w, '}');

	jw_open(&w, "clients", '{');
	jw_u64(&w, "live", s->clients);
	jw_u64(&w, "slots", s->max_clients);
	jw_open(&w, "list", '[');
	for (uint32_t i = 0; i < s->max_clients; i++) {
		const struct st_client *c = &s->cl[i];

		if (c->state == CL_FREE)
			continue;
		jw_open(&w, NULL, '{');
		jw_u64(&w, "slot", i);
		jw_int(&w, "pid", c->pid);
		jw_str(&w, "comm", c->comm);
		jw_str(&w, "state", client_names[c->state]);
		jw_u64(&w, "leases", held[i]);
		jw_u64(&w, "acquired", c->acquired);
		jw_u64(&w, "denied", c->denied);
		jw_u64(&w, "released", c->released);
		jw_u64(&w, "waits", c->waits);
		jw_close(&w, '}');
	}
	jw_close(&w, ']');
	jw_close(&w, '}');

	jw_open(&w, "tickets", '{');
	jw_u64(&w, "acquired", s->acquired);
	jw_u64(&w, "denied", s->denied);
	jw_u64(&w, "released", s->released);
	jw_u64(&w, "waits", s->waits);
	jw_close(&w, '}');

	jw_open(&w, "keys", '[');
	for (unsigned i = 0; i < s->nkeys; i++)
		json_key(&w, s, &s->keys[i], pids);
	jw_close(&w, ']');
	jw_close(&w, '}');
	fputc('\n', f);
	free(pids);
	free(held);
}

/*
 * -p: Prometheus text exposition format 0.0.4.  Every family has its
 * HELP and TYPE, then all its samples; counters end in _total; seconds
 * are exact, from ns.  Labels: key (its name), limit (its spec in the
 * config's syntax; a second identical spec on one key gets " (2)", so no
 * two series collide), class.  A family whose samples do not apply
 * (in_flight of a rate limit, a server figure never reported) has none.
 */
struct pmetric {
	const char	*name;
	const char	*type;
	const char	*help;		/* no backslash or newline */
	int		secs;		/* the value is ns, shown as seconds */
};

enum {
	KM_GRANTED, KM_DENIED, KM_RESPONSES, KM_PAUSE, KM_PAUSED, KM_COUNT
};

static const struct pmetric key_metrics[KM_COUNT] = {
	[KM_GRANTED] = { "tollgate_key_granted_total", "counter",
	    "Tickets granted on the key.", 0 },
	[KM_DENIED] = { "tollgate_key_denied_total", "counter",
	    "Tickets refused on the key.", 0 },
	[KM_RESPONSES] = { "tollgate_key_responses_total", "counter",
	    "Responses tg_observe saw on the key, by class.", 0 },
	[KM_PAUSE] = { "tollgate_key_pause_remaining_seconds", "gauge",
	    "Time left in the key's pause; 0 when not paused.", 1 },
	[KM_PAUSED] = { "tollgate_key_paused_seconds_total", "counter",
	    "Time the key spent paused, all pauses.", 1 },
};

enum {
	LM_AVAILABLE, LM_NEXT, LM_IN_FLIGHT, LM_EFFECTIVE, LM_LIMIT,
	LM_GRANTED, LM_DENIED, LM_SRV_REMAINING, LM_SRV_RESET, LM_SRV_LIMIT,
	LM_COUNT
};

static const struct pmetric limit_metrics[LM_COUNT] = {
	[LM_AVAILABLE] = { "tollgate_limit_available", "gauge",
	    "Units of the limit that would fit now (leases for "
	    "concurrency).", 0 },
	[LM_NEXT] = { "tollgate_limit_next_seconds", "gauge",
	    "Time until one more unit fits; absent while a full concurrency "
	    "limit waits for a release.", 1 },
	[LM_IN_FLIGHT] = { "tollgate_limit_in_flight", "gauge",
	    "Leases held on a concurrency limit.", 0 },
	[LM_EFFECTIVE] = { "tollgate_limit_effective", "gauge",
	    "Leases a concurrency limit allows now (adaptive may cut it).",
	    0 },
	[LM_LIMIT] = { "tollgate_limit_size", "gauge",
	    "The limit in force: units per period or window, leases in "
	    "flight.", 0 },
	[LM_GRANTED] = { "tollgate_limit_granted_total", "counter",
	    "Units granted on the limit (leases for concurrency).", 0 },
	[LM_DENIED] = { "tollgate_limit_denied_total", "counter",
	    "Refusals by the limit.", 0 },
	[LM_SRV_REMAINING] = { "tollgate_limit_server_remaining", "gauge",
	    "Units the server said remain, while that caps the limit.", 0 },
	[LM_SRV_RESET] = { "tollgate_limit_server_reset_seconds", "gauge",
	    "Time until the server's remaining resets.", 1 },
	[LM_SRV_LIMIT] = { "tollgate_limit_server_limit", "gauge",
	    "A limit the server reported unlike the configured one.", 0 },
};

static const char *const class_names[ST_PAUSED_NS] = {
	[ST_OK] = "ok", [ST_LIMITED] = "limited", [ST_AUTH] = "auth",
	[ST_CLIENT] = "client_error", [ST_SERVER] = "server_error",
};

/* A label value: backslash, double quote and newline escaped. */
static void
prom_esc(FILE *f, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\' || *s == '"')
			fputc('\\', f);
		if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void
prom_head(FILE *f, const struct pmetric *m)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
	    m->type);
}

/* A sample's name and labels (key, limit, class: each NULL if none). */
static void
prom_sample(FILE *f, const struct pmetric *m, const char *key,
    const char *limit, const char *cls, uint64_t v)
{
	const char *lab[3][2] = {
		{ "key", key }, { "limit", limit }, { "class", cls },
	};
	char frac[16];
	int n = 0;

	fputs(m->name, f);
	for (int i = 0; i < 3; i++) {
		if (lab[i][1] == NULL)
			continue;
		fprintf(f, "%s%s=\"", n++ ? "," : "{", lab[i][0]);
		prom_esc(f, lab[i][1]);
		fputc('"', f);
	}
	if (n > 0)
		fputc('}', f);
	if (!m->secs) {
		fprintf(f, " %" PRIu64 "\n", v);
		return;
	}
	/* Exact seconds, trailing zeros off: "12", "0.5", "0.000125". */
	n = snprintf(frac, sizeof(frac), "%09" PRIu64, v % NS_PER_S);
	while (n > 0 && frac[n - 1] == '0')
		frac[--n] = '\0';
	fprintf(f, " %" PRIu64 "%s%s\n", v / NS_PER_S, n > 0 ? "." : "",
	    frac);
}

/* One family of one sample without labels. */
static void
prom_one(FILE *f, const char *name, const char *type, const char *help,
    int secs, uint64_t v)
{
	const struct pmetric m = { name, type, help, secs };

	prom_head(f, &m);
	prom_sample(f, &m, NULL, NULL, NULL, v);
}

/* Limit metric i of l into *v; 0 if it has no sample. */
static int
limit_value(const struct st_limit *l, int i, uint64_t *v)
{
	int conc = l->spec.kind == LIM_CONC;

	switch (i) {
	case LM_AVAILABLE:
		*v = l->available;
		return l->ok;
	case LM_NEXT:
		*v = l->next_ns;
		return l->ok && l->next_ns != NEXT_RELEASE;
	case LM_IN_FLIGHT:
		*v = l->in_flight;
		return conc && l->ok;
	case LM_EFFECTIVE:
		*v = l->eff;
		return conc;
	case LM_LIMIT:
		*v = l->spec.count;
		return 1;
	case LM_GRANTED:
		*v = l->granted;
		return 1;
	case LM_DENIED:
		*v = l->denied;
		return 1;
	case LM_SRV_REMAINING:
		*v = l->srv_left;
		return l->srv_left != UINT64_MAX;
	case LM_SRV_RESET:
		*v = l->srv_reset_ns;
		return l->srv_left != UINT64_MAX;
	case LM_SRV_LIMIT:
		*v = l->srv_limit;
		return l->srv_limit != 0;
	}
	return 0;
}

/* The limit label of s->limits[j], owned by k: unique within k. */
static const char *
limit_label(const struct snap *s, const struct st_key *k, unsigned j,
    char *buf, size_t len)
{
	unsigned same = 0;

	for (unsigned i = k->first; i < j; i++)
		same += strcmp(s->limits[i].spec_str,
		    s->limits[j].spec_str) == 0;
	if (same == 0)
		return s->limits[j].spec_str;
	snprintf(buf, len, "%s (%u)", s->limits[j].spec_str, same + 1);
	return buf;
}

static void
print_prom(FILE *f, const struct snap *s)
{
	char buf[SPEC_MAX + 16];
	uint64_t v;

	prom_one(f, "tollgate_broker_up", "gauge",
	    "1 if the segment's broker is running.", 0,
	    s->broker == BROKER_LIVE);
	prom_one(f, "tollgate_broker_uptime_seconds", "gauge",
	    "Time since the broker attached; 0 without one.", 1,
	    s->uptime_ns);
	prom_one(f, "tollgate_heartbeat_age_seconds", "gauge",
	    "Time since the broker's last tick; over 1 s it hangs.", 1,
	    s->heartbeat_age_ns);
	prom_one(f, "tollgate_broker_repairs_total", "counter",
	    "State garbage the broker fixed.", 0, s->repairs);
	prom_one(f, "tollgate_config_generation", "gauge",
	    "Publish count of the config copy.", 0, s->gen);
	prom_one(f, "tollgate_clients", "gauge",
	    "Client slots of running clients.", 0, s->clients);
	prom_one(f, "tollgate_client_slots", "gauge",
	    "Client slots in the segment.", 0, s->max_clients);
	prom_one(f, "tollgate_tickets_acquired_total", "counter",
	    "Tickets acquired, all clients.", 0, s->acquired);
	prom_one(f, "tollgate_tickets_denied_total", "counter",
	    "Tickets refused, all clients.", 0, s->denied);
	prom_one(f, "tollgate_tickets_released_total", "counter",
	    "Tickets released, all clients.", 0, s->released);
	prom_one(f, "tollgate_acquire_waits_total", "counter",
	    "tg_acquire calls that slept, all clients.", 0, s->waits);

	for (int m = 0; m < KM_COUNT; m++) {
		prom_head(f, &key_metrics[m]);
		for (unsigned i = 0; i < s->nkeys; i++) {
			const struct st_key *k = &s->keys[i];

			switch (m) {
			case KM_GRANTED:
				v = k->granted;
				break;
			case KM_DENIED:
				v = k->denied;
				break;
			case KM_RESPONSES:
				for (int c = 0; c < ST_PAUSED_NS; c++)
					prom_sample(f, &key_metrics[m],
					    k->name, NULL, class_names[c],
					    k->status[c]);
				continue;
			case KM_PAUSE:
				v = k->paused_ns;
				break;
			default:
				v = k->status[ST_PAUSED_NS];
				break;
			}
			prom_sample(f, &key_metrics[m], k->name, NULL, NULL,
			    v);
		}
	}

	for (int m = 0; m < LM_COUNT; m++) {
		prom_head(f, &limit_metrics[m]);
		for (unsigned i = 0; i < s->nkeys; i++) {
			const struct st_key *k = &s->keys[i];

			for (unsigned j = k->first; j < k->first + k->nlimits;
			    j++)
				if (limit_value(&s->limits[j], m, &v))
					prom_sample(f, &limit_metrics[m],
					    k->name, limit_label(s, k, j, buf,
					    sizeof(buf)), NULL, v);
		}
	}
}

/* Why seg_attach failed, for a person who typed the segment's name. */
static const char *
attach_error(int r)
{
	switch (r) {
	case -ENOENT:
		return "no such segment (is tollgated running?)";
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
main(int argc, char *argv[])
{
	const char *segment = "tollgate", *key = NULL;
	struct seg_map m;
	struct snap s;
	int ch, r, clients = 0, json = 0, prom = 0;

	while ((ch = getopt(argc, argv, "chjk:ps:")) != -1) {
		switch (ch) {
		case 'c':
			clients = 1;
			break;
		case 'j':
			json = 1;
			break;
		case 'k':
			key = optarg;
			break;
		case 'p':
			prom = 1;
			break;
		case 's':
			segment = optarg;
			break;
		case 'h':
			usage(stdout, 0);
			break;
		default:
			usage(stderr, 2);
		}
	}
	/* JSON lists the clients anyway; Prometheus has no place for them. */
	if (optind != argc || (json && prom) || (clients && prom))
		usage(stderr, 2);

	/* Read-only, both objects: a stray write here faults, by design. */
	if ((r = seg_attach(segment, 0, &m)) < 0)
		errx(1, "segment %s: %s", segment, attach_error(r));
	bus_install(&m);
	if ((r = collect(&m, segment, &s)) < 0) {
		if (r == -EFAULT)
			errx(1, "segment %s: its state object was truncated "
			    "and not restored (is tollgated running?)",
			    segment);
		if (r == -EBADMSG)
			errx(1, "segment %s: malformed config copy "
			    "(generation %" PRIu64 ")", segment, s.gen);
		errx(1, "segment %s: %s", segment, strerror(-r));
	}
	seg_detach(&m);
	if (key != NULL && filter_keys(&s, key) < 0)
		errx(1, "segment %s: no key %s (generation %" PRIu64 ")",
		    segment, key, s.gen);
	if (json)
		print_json(stdout, &s);
	else if (prom)
		print_prom(stdout, &s);
	else if (clients)
		print_clients(stdout, &s);
	else
		print_table(stdout, &s);
	snap_free(&s);
	if (fflush(stdout) == EOF || ferror(stdout))
		err(1, "stdout");
	return 0;
}
