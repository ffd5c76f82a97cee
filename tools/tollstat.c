/* tollstat.c: show a segment, read-only: broker, clients, keys, limits. */
#include <sys/types.h>
#include <err.h>
#include <errno.h>
#include <inttypes.h>
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
#include "lease.h"
#include "seg.h"
#include "srvcap.h"
#include "window.h"

#define NS_PER_MS	UINT64_C(1000000)
#define NS_PER_S	UINT64_C(1000000000)
#define STALE_NS	NS_PER_S	/* heartbeat older: the broker hangs */
#define BUS_RETRIES	3		/* state object cut under us: retry */

/*
 * The collector fills a struct snap, the printers only read it: a second
 * printer (JSON) needs nothing else.  Numbers are exact here; only the
 * table printer rounds them.
 */

enum broker_st {
	BROKER_LIVE,
	BROKER_NONE,		/* pid 0: none attached, or it exited */
	BROKER_DEAD,		/* that pid is gone: it was killed */
	BROKER_OTHER,		/* that pid is another process now */
};

/* A limit: its spec from the config copy, its state at snap.now_ns. */
struct st_limit {
	uint16_t	id;
	uint16_t	key;		/* owning key id */
	int		ok;		/* its cells checked: state is real */
	struct limit_spec spec;
	uint64_t	available;	/* units that fit now */
	uint64_t	in_flight;	/* LIM_CONC: leases held; else 0 */
	uint64_t	granted;	/* units; leases for LIM_CONC */
	uint64_t	denied;		/* refusals */
	uint64_t	conf_count;	/* the config file's; count if learned */
	uint32_t	eff;		/* adaptive: leases allowed now */
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
	uint16_t	id;
	uint16_t	parent;		/* key id or SEG_NONE */
	unsigned	first;
	unsigned	nlimits;
	uint64_t	granted;	/* tickets */
	uint64_t	denied;		/* tickets refused */
	uint64_t	paused_ns;	/* pause left at now_ns; 0: none */
	uint64_t	status[ST_COUNT]; /* responses by class, paused ns */
};

struct snap {
	const char	*segment;
	uint64_t	now_ns;		/* when the state was read */
	/* the broker */
	int		broker;		/* enum broker_st */
	int32_t		broker_pid;
	uint64_t	uptime_ns;	/* 0 unless BROKER_LIVE */
	uint64_t	heartbeat_age_ns;
	uint64_t	repairs;	/* state garbage it fixed */
	/* the config copy */
	uint64_t	gen;		/* config generation */
	/* the clients: live slots, and every slot's counters plus retired */
	uint32_t	clients;
	uint32_t	max_clients;
	uint64_t	acquired;	/* tickets */
	uint64_t	denied;
	uint64_t	released;
	uint64_t	waits;		/* tg_acquire calls that slept */
	struct st_key	*keys;		/* [max_keys], in name order */
	unsigned	nkeys;
	struct st_limit	*limits;	/* [max_limits], grouped by key */
	unsigned	nlimits;
};

static void
usage(FILE *f, int status)
{
	fprintf(f, "usage: tollstat [-h] [-s SEGMENT]\n"
	    "  -s SEGMENT  the segment to show (default \"tollgate\")\n"
	    "  -h          this help\n"
	    "Key rows count tickets; limit rows count the limit's units "
	    "(leases for\nconcurrency).  AVAILABLE is what would fit now.\n");
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
 * torn read can hold anything.  Returns 0, or -EBADMSG if an untorn copy
 * is malformed (a broker bug).
 */
static int
read_config(const struct seg_map *m, struct snap *s)
{
	const struct seg_header *h = m->hdr;
	const struct seg_key *k;
	const struct seg_limit *lims, *l;
	struct seg_cfg *c;
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
	/*
	 * Check the geometry once, on the untorn copy: a limit whose cells
	 * lie outside the pool shows "?" rather than reading elsewhere.
	 */
	for (unsigned i = 0; i < s->nlimits; i++) {
		struct st_limit *sl = &s->limits[i];

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
	uint64_t now, hb, since, start, paused, tat, sum, cap;
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
		uint64_t o = atomic_load_explicit(&cl[i].owner,
		    memory_order_relaxed);

		if (CLIENT_STATE(o) == CLIENT_LIVE)
			s->clients++;
		/* A free slot's counters stay until the slot is reused. */
		s->acquired += atomic_load_explicit(&cl[i].acquired,
		    memory_order_relaxed);
		s->denied += atomic_load_explicit(&cl[i].denied,
		    memory_order_relaxed);
		s->released += atomic_load_explicit(&cl[i].released,
		    memory_order_relaxed);
		s->waits += atomic_load_explicit(&cl[i].waits,
		    memory_order_relaxed);
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
		if (!sl->ok)
			continue;
		switch (sl->spec.kind) {
		case LIM_RATE:
			tat = atomic_load_explicit(&l->tat_ns,
			    memory_order_relaxed);
			sl->available = gcra_available(tat, now,
			    gcra_cost_ns(1, sl->spec.period_ns,
			    sl->spec.count), sl->tau_ns);
			break;
		case LIM_WINDOW:
			sum = win_sum(&cells[sl->cells], now, sl->tau_ns);
			sl->available = sum < sl->spec.count ?
			    sl->spec.count - sum : 0;
			break;
		case LIM_CONC:
			sl->in_flight = lease_count(&cells[sl->cells],
			    sl->ncells);
			/* What takes honour: eff while adaptive cut it. */
			sl->eff = (uint32_t)sl->spec.count;
			if (sl->spec.adaptive) {
				uint32_t e = atomic_load_explicit(&l->eff,
				    memory_order_relaxed);

				if (e >= 1 && e < sl->eff)
					sl->eff = e;
			}
			sl->available = sl->in_flight < sl->eff ?
			    sl->eff - sl->in_flight : 0;
			break;
		}
	}
	bus_armed = 0;
	return 0;
}

/*
 * Fill *s from the segment mapped in *m.  Returns 0, -EBADMSG (a config
 * copy that is malformed though not torn) or -EFAULT (the state object
 * stayed truncated).  The caller frees s->keys and s->limits.
 */
static int
collect(const struct seg_map *m, const char *segment, struct snap *s)
{
	struct timespec pause = { 0, 100 * (long)NS_PER_MS };
	int r;

	memset(s, 0, sizeof(*s));
	s->segment = segment;
	s->keys = calloc(m->hdr->max_keys, sizeof(*s->keys));
	s->limits = calloc(m->hdr->max_limits, sizeof(*s->limits));
	if (s->keys == NULL || s->limits == NULL)
		return -ENOMEM;
	if ((r = read_config(m, s)) < 0)
		return r;
	for (int i = 0; i < BUS_RETRIES; i++) {
		if ((r = read_state(m, s)) != -EFAULT)
			return r;
		/* The broker puts the size back on its next tick. */
		nanosleep(&pause, NULL);
	}
	return r;
}

/*
 * The table printer.  Counts below 100000 are exact; above, three
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
	char		name[128];	/* key name, or "  " and a spec */
	char		avail[16];
	char		inflight[16];
	char		granted[16];
	char		denied[16];
	char		note[160];	/* "paused 12s; ok 120; limited 3" */
};

#define NCOLS	5

static const char *const col_head[NCOLS] = {
	"KEY / LIMIT", "AVAILABLE", "IN FLIGHT", "GRANTED", "DENIED",
};

static void
row_cells(const struct row *r, const char *cell[NCOLS])
{
	cell[0] = r->name;
	cell[1] = r->avail;
	cell[2] = r->inflight;
	cell[3] = r->granted;
	cell[4] = r->denied;
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
	    "config", s->gen, s->nkeys, s->nkeys == 1 ? "" : "s", s->nlimits,
	    s->nlimits == 1 ? "" : "s");
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
		for (unsigned j = k->first; j < k->first + k->nlimits; j++) {
			const struct st_limit *l = &s->limits[j];

			r = &rows[nrows++];
			memcpy(r->name, "  ", 2);
			limit_format(&l->spec, r->name + 2,
			    sizeof(r->name) - 2);
			if (l->ok)
				fmt_count(r->avail, sizeof(r->avail),
				    l->available);
			else
				snprintf(r->avail, sizeof(r->avail), "?");
			if (l->spec.kind == LIM_CONC && l->ok)
				fmt_count(r->inflight, sizeof(r->inflight),
				    l->in_flight);
			else
				snprintf(r->inflight, sizeof(r->inflight),
				    l->spec.kind == LIM_CONC ? "?" : "-");
			fmt_count(r->granted, sizeof(r->granted), l->granted);
			fmt_count(r->denied, sizeof(r->denied), l->denied);
			limit_note(l, r->note, sizeof(r->note));
		}
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
	const char *segment = "tollgate";
	struct seg_map m;
	struct snap s;
	int ch, r;

	while ((ch = getopt(argc, argv, "hs:")) != -1) {
		switch (ch) {
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
	if (optind != argc)
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
	print_table(stdout, &s);
	free(s.keys);
	free(s.limits);
	seg_detach(&m);
	if (fflush(stdout) == EOF || ferror(stdout))
		err(1, "stdout");
	return 0;
}
