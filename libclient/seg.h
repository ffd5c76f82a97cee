/* seg.h: private; the layout of the two shared-memory objects, shared by all. */
#ifndef TG_SEG_H
#define TG_SEG_H

#include <assert.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define TG_SEG_MAGIC	0x31474754u	/* "TGG1"; byte-swapped, it shows */
#define TG_SEG_VERSION	5u		/* bump on any change in this file */
#define SEG_LINE	64		/* cache line */

#define SEG_NONE	0xffffu		/* no key, no limit */
#define SEG_CHAIN_MAX	16		/* limits of a key and its ancestors */
#define SEG_DEPTH_MAX	8		/* levels of a key name ("a/b/c": 3) */
#define SEG_NAME_MAX	48		/* key name with its NUL */
#define SEG_IDS_MAX	0xfff0u		/* key and limit ids are 16 bits */
#define SEG_CELLS_MAX	(1u << 30)	/* words in the cell pool */
#define SEG_WIN_SLOTS	64		/* sub-windows in a window ring */
#define SEG_STRIPES	16		/* copies of the grant counters */
#define SEG_CLIENTS_MAX	65535u		/* client slots at most (max_clients) */

/* seg_limit.kind: how a limit counts. */
enum lim_kind {
	LIM_RATE = 1,		/* GCRA token bucket */
	LIM_WINDOW = 2,		/* at most count per rolling period */
	LIM_CONC = 3,		/* at most count tickets in flight */
};

enum lim_unit {
	UNIT_REQUESTS = 0,
	UNIT_TOKENS = 1,
	UNIT_IMAGES = 2,
	UNIT_COUNT = 3,
};

/*
 * What a key's feedback settings are when the config sets none: the
 * broker writes them into seg_key, and a reader that finds 0 there (a
 * torn or scribbled word) falls back to them too.
 */
#define SEG_BACKOFF_MIN_NS	UINT64_C(1000000000)	/* shared backoff */
#define SEG_BACKOFF_MAX_NS	UINT64_C(60000000000)
#define SEG_MAX_PAUSE_NS	UINT64_C(600000000000)	/* clamp on pauses */

/*
 * The config object, /dev/shm/<segment>.conf: written by the broker only,
 * mapped read-only by everyone else, so what it says can be trusted once a
 * reader has checked it was not torn (the sequence counters).
 *
 *	0	struct seg_header (384 bytes)
 *	384	config copy 0: struct seg_cfg, seg_key[max_keys],
 *		seg_limit[max_limits]
 *	...	config copy 1, the same
 */

/*
 * What tollctl asked the broker (broker/ctl.c), by kind: the actions,
 * then the requests refused.  The broker counts them in the header,
 * which only it writes, so the counts are its own, not a worker's.
 */
enum seg_ctl {
	SEG_CTL_PAUSE = 0,
	SEG_CTL_RESUME = 1,
	SEG_CTL_RESET = 2,
	SEG_CTL_DRAIN = 3,
	SEG_CTL_UNDRAIN = 4,
	SEG_CTL_NACT = 5,	/* actions above; refusals below */
	SEG_CTL_DENIED = 5,	/* the caller may not write the state object */
	SEG_CTL_BAD = 6,	/* a malformed request */
	SEG_CTL_FAILED = 7,	/* well formed, not done: no such key */
	SEG_CTL_COUNT = 8,
};

/*
 * 0 identity (never changes once magic is set), 64 config, 128 broker,
 * 192 tollctl's counts, 256 its last action.
 */
struct seg_header {
	_Atomic uint32_t	magic;		/* stored last, release */
	uint32_t		version;
	uint64_t		size;		/* bytes in this object */
	uint64_t		state_size;	/* bytes in the state object */
	uint64_t		off_config[2];	/* offsets, never pointers */
	uint64_t		config_size;	/* bytes in one config copy */
	uint32_t		max_clients;
	uint32_t		max_keys;
	uint32_t		max_limits;
	uint32_t		max_cells;	/* 64-bit words in the cell pool */
	/* offsets in the state object */
	alignas(SEG_LINE) uint64_t off_clients;
	uint64_t		off_keys;
	uint64_t		off_limits;
	uint64_t		off_cells;
	_Atomic uint32_t	config_idx;	/* live copy, 0 or 1; release */
	uint32_t		pad1;
	uint64_t		created_ns;	/* CLOCK_MONOTONIC at creation */
	uint64_t		off_grants;
	uint64_t		pad2;
	/* the broker that owns it now; rewritten when a new one attaches */
	alignas(SEG_LINE) _Atomic uint64_t heartbeat_ns; /* each tick */
	_Atomic int32_t		broker_pid;
	uint32_t		pad3;
	_Atomic uint64_t	broker_start;	/* /proc/PID/stat starttime */
	_Atomic uint64_t	broker_since_ns; /* when it attached */
	_Atomic uint64_t	repairs;	/* state garbage it fixed */
	_Atomic uint64_t	fed_state;	/* SEG_FED_*; 0: no federation */
	_Atomic uint64_t	fed_lapses;	/* caps its thread let end */
	uint64_t		pad4[1];
	/* requests of tollctl, by enum seg_ctl; relaxed counters */
	alignas(SEG_LINE) _Atomic uint64_t ctl_count[SEG_CTL_COUNT];
	/*
	 * The last action done, for people: written by the broker between
	 * two increments of ctl_seq (odd while it writes), read as a config
	 * copy is (seg_read_begin): retried while ctl_seq moved.
	 */
	alignas(SEG_LINE) _Atomic uint32_t ctl_seq;
	uint32_t		ctl_uid;	/* who: the socket's peer */
	int32_t			ctl_pid;	/* 0: in another PID namespace */
	uint8_t			ctl_action;	/* enum seg_ctl, < SEG_CTL_NACT */
	uint8_t			pad5[3];
	uint64_t		ctl_ns;		/* when, CLOCK_MONOTONIC */
	uint64_t		ctl_arg_ns;	/* pause: for how long */
	char			ctl_key[SEG_NAME_MAX]; /* the key it named */
	uint64_t		pad6[6];
};

/*
 * seg_header.fed_state, written by the broker's federation thread
 * (broker/fed.c), read by tollstat: 0 without federation.
 */
#define SEG_FED_ON		0x01	/* a `redis' is configured */
#define SEG_FED_UP		0x02	/* connected to it now */
#define SEG_FED_OUTAGE(s)	((unsigned)((s) >> 8) & 0xff) /* fed_outage */

/*
 * seg_lstate.fed_info of a global limit: when it last leased, in units of
 * 2^20 ns of CLOCK_MONOTONIC (40 bits, as a cap's end), the hosts Redis
 * saw leasing it (16 bits), and flags.  0: not a global limit.
 */
#define FED_INFO(lease_ns, hosts, flags) \
	((uint64_t)((lease_ns) >> 20) << 24 | \
	(uint64_t)((hosts) & 0xffff) << 8 | (uint64_t)((flags) & 0xff))
#define FED_INFO_LEASE_NS(v)	(((v) >> 24) << 20)
#define FED_INFO_HOSTS(v)	((unsigned)((v) >> 8) & 0xffff)
#define FED_INFO_GLOBAL		0x01
#define FED_INFO_DISAGREE	0x02	/* Redis holds other limits for it */

/*
 * A config copy.  The broker writes the inactive copy between two
 * increments of seq (odd while it writes), then flips config_idx with
 * release ordering.  A reader loads config_idx and seq with acquire,
 * reads, and retries if seq moved: two reloads during one slow read then
 * cannot hand it a torn copy.
 */
struct seg_cfg {
	_Atomic uint32_t	seq;
	uint32_t		nkeys;		/* keys in use */
	uint64_t		gen;		/* publish count */
	uint32_t		nlimits;	/* limits in use */
	uint32_t		pad0;
	uint64_t		pad1[5];
};

#define SEG_KEY_LEARN		0x01	/* adopt limits the server reports */
#define SEG_KEY_REFUND_REJECTED	0x02	/* `rejected = free': a 429 refunds */

/* A key, indexed by its stable id.  name[0] == 0: unused. */
struct seg_key {
	char			name[SEG_NAME_MAX];
	uint16_t		gen;		/* handle = id | gen << 16; != 0 */
	uint16_t		parent;		/* key id or SEG_NONE */
	uint8_t			nchain;		/* entries in chain[] */
	uint8_t			nown;		/* its own limits, chain[0..] */
	uint8_t			depth;		/* entries in kchain[] */
	uint8_t			flags;		/* SEG_KEY_* */
	uint16_t		chain[SEG_CHAIN_MAX];	/* limit ids, own first */
	uint16_t		kchain[SEG_DEPTH_MAX];	/* key ids, itself first */
	uint64_t		max_pause_ns;	/* clamp on any pause */
	uint64_t		backoff_min_ns;	/* shared backoff: first step */
	uint64_t		backoff_max_ns;	/* and the largest */
};

#define LIMIT_F_ADAPTIVE	0x01

/* A limit, indexed by its stable id.  kind == 0: unused. */
struct seg_limit {
	uint8_t			kind;		/* enum lim_kind */
	uint8_t			unit;		/* enum lim_unit */
	uint8_t			flags;
	uint8_t			pad0;
	uint16_t		key;		/* owning key id */
	uint16_t		pad1;
	uint64_t		count;		/* N per period, window, in flight */
	uint64_t		period_ns;
	uint64_t		burst;		/* rate: capacity in units */
	uint64_t		cooldown_ns;
	union {
		uint64_t	tau_ns;	/* rate: GCRA limit; window: sub */
		/*
		 * Concurrency, for QUARANTINE_TICKS after a reload grew it
		 * into new cells: the cells it had.  A lease taken there by
		 * a client that read the config before the flip may not be
		 * carried over yet; its release looks there too.  0, 0
		 * otherwise.
		 */
		struct {
			uint32_t was_cells;
			uint32_t was_ncells;
		};
	};
	uint32_t		cells;		/* first pool word: ring or leases */
	uint32_t		ncells;		/* window: SEG_WIN_SLOTS; conc: at
						   least count (lease.h) */
	uint64_t		conf_count;	/* count in the config file; count
						   differs once a server's is learned */
};

/*
 * The state object, /dev/shm/<segment>: mode from the config, written by
 * every client.  Nothing in it is trusted by the broker.
 *
 *	0		struct seg_state (64 bytes)
 *	off_clients	struct seg_client[max_clients]
 *	off_keys	struct seg_kstate[max_keys]
 *	off_limits	struct seg_lstate[max_limits]
 *	off_cells	_Atomic uint64_t[max_cells]: window rings, lease cells
 *	off_grants	_Atomic uint64_t[SEG_STRIPES][seg_grant_stride]: what
 *			was granted, per key (tickets) and limit (units)
 *
 * Grants are counted in SEG_STRIPES copies, a client in a copy of its own
 * while there is one free (seg_state.stripe_owner), else in the shared
 * stripe 0, and read as the sum.  One shared word per key
 * and limit would be written by every grant of every process: the line
 * would move between cores on each ticket, the cost the TAT's CAS pays
 * already.  A stripe is whole lines, so two slots in different stripes
 * never share one.
 */
struct seg_state {
	_Atomic uint32_t	magic;		/* TG_SEG_MAGIC, stored last */
	uint32_t		version;
	uint64_t		size;
	/* counters of client slots the broker reclaimed, kept after reuse */
	_Atomic uint64_t	retired_acquired;
	_Atomic uint64_t	retired_denied;
	_Atomic uint64_t	retired_released;
	_Atomic uint64_t	retired_waits;
	_Atomic uint64_t	retired_polls;	/* was pad: 0 in older segments */
	uint64_t		pad[1];
	/*
	 * Grant stripes 1.. each belong to one client slot at a time
	 * (slot + 1 here; 0 free), which alone writes them and so needs no
	 * locked instruction while single-threaded.  Stripe 0 is shared by
	 * the clients that found none free.
	 */
	alignas(SEG_LINE) _Atomic uint32_t stripe_owner[SEG_STRIPES];
};

/*
 * seg_client.owner: 0 free, else state << 32 | token.  The token is the
 * slot's claim count (seg_client.claims) when it was claimed: never 0, and
 * unlike a pid the same in every PID namespace and never reused by the
 * next owner of the slot, so a CAS from an owner word acts on exactly one
 * registration (ABA-free until 2^32 claims of one slot).
 */
#define CLIENT_CLAIMING	1u	/* claimed; lock and LIVE not yet */
#define CLIENT_LIVE	2u	/* its slot lock is held: see SEG_LOCK_BASE */
#define CLIENT_RECLAIMING 3u	/* the broker frees it; then 0 */
#define CLIENT_OWNER(st, tok)	((uint64_t)(st) << 32 | (uint32_t)(tok))
#define CLIENT_STATE(o)		((uint32_t)((o) >> 32))
#define CLIENT_TOKEN(o)		((uint32_t)(o))

/*
 * Liveness.  A client holds an open file description lock (F_OFD_SETLK,
 * write) on byte SEG_LOCK_BASE + slot of the state object from before it
 * goes LIVE until it closes or dies; the kernel drops it when the last
 * descriptor of that open file goes, whatever killed the process.  The
 * broker and tollstat test the byte with F_OFD_GETLK.  A lock names no
 * pid, so this holds for clients in any PID namespace, even ones the
 * broker cannot see, and across a broker restart; the byte lies far
 * beyond the object's end, where a lock touches no data.
 */
#define SEG_LOCK_BASE	(UINT64_C(1) << 40)

/*
 * A client slot; line 0 registration, line 1 counters only it writes.
 * pid and pid_ns are what the client says of itself, for people: the
 * broker never acts on them.
 */
struct seg_client {
	_Atomic uint64_t	owner;
	_Atomic uint64_t	pid_ns;		/* inode of its /proc/self/ns/pid */
	_Atomic uint32_t	lease_gen;	/* next lease generation */
	_Atomic int32_t		pid;		/* as it sees itself */
	_Atomic uint32_t	claims;		/* claims so far: the next token */
	uint32_t		pad2;
	uint64_t		pad0[4];
	alignas(SEG_LINE) _Atomic uint64_t acquired; /* tickets */
	_Atomic uint64_t	denied;		/* given up: -ETIMEDOUT */
	_Atomic uint64_t	released;
	_Atomic uint64_t	waits;		/* tg_acquire calls that slept */
	_Atomic uint64_t	wait_ns;	/* time they slept */
	/*
	 * Polls: -EAGAIN of tg_try_acquire and tg_reserve, "not now", which
	 * a caller that comes back turns into a wait, not a refusal.  Was
	 * pad, so 0 from a library before it; no layout change.
	 */
	_Atomic uint64_t	polls;
	uint64_t		pad1[2];
};

/* seg_kstate.status[]: responses tg_observe saw, by class. */
enum status_class {
	ST_OK = 0,		/* 2xx, 3xx */
	ST_LIMITED = 1,		/* 429, or 403/503 with rate-limit evidence */
	ST_AUTH = 2,		/* 401, 403 without evidence */
	ST_CLIENT = 3,		/* other 4xx */
	ST_SERVER = 4,		/* 5xx without evidence */
	ST_PAUSED_NS = 5,	/* not a class: total time paused, ns */
	ST_COUNT = 6,
};

/*
 * Per key: line 0 read by every acquire and written only when a response
 * pauses the key; line 1 its counters.
 */
struct seg_kstate {
	_Atomic uint64_t	paused_until_ns; /* 0: not paused */
	_Atomic uint64_t	backoff_ns;	/* step of the shared backoff */
	_Atomic uint64_t	pause_set_ns;	/* when the last pause began */
	/*
	 * tollctl drain: 1 refuses new tickets of the key and the keys under
	 * it (-ESHUTDOWN).  The broker's word: it puts back a scribble.
	 */
	_Atomic uint32_t	drained;
	/*
	 * Futex: the broker bumps it after a tollctl resume, reset, drain
	 * or undrain of the key or an ancestor, so that tg_acquire sleeping
	 * out a pause or a slot looks again at once.
	 */
	_Atomic uint32_t	ctl_wake;
	uint64_t		pad0[4];
	alignas(SEG_LINE) _Atomic uint64_t denied; /* tickets given up */
	_Atomic uint64_t	status[ST_COUNT];
	uint64_t		pad1;		/* grants: off_grants */
};

/*
 * Per limit.  Line 0: what every acquire of it touches.  Rate limits use
 * tat_ns; concurrency limits wake and waiting for the futex, and eff and
 * probe_from when adaptive (a client that meets a concurrency 429 halves
 * eff at once: libclient/feedback.c, conc_cut).  Line 1: feedback posted for the broker: on
 * an adaptive concurrency limit for its AIMD, on a rate limit of a key
 * that learns for the rate learned from 429s without server figures
 * (broker/feedback.c); on a global limit, what the federation holds.
 */
struct seg_lstate {
	_Atomic uint64_t	tat_ns;		/* GCRA theoretical arrival */
	_Atomic uint64_t	denied;		/* refusals; grants: off_grants */
	_Atomic uint32_t	wake;		/* futex word: bumped on release */
	_Atomic uint32_t	waiting;	/* someone sleeps on wake */
	_Atomic uint64_t	waits;		/* sleeps */
	_Atomic uint64_t	srv_cap;	/* the server's remaining: srvcap.h */
	_Atomic uint32_t	eff;		/* adaptive: leases allowed; 0 all */
	_Atomic uint32_t	probe_from;	/* adaptive: eff grew from it */
	_Atomic uint64_t	handoff_ns;	/* a release woke sleepers: lease.h */
	uint64_t		pad1;
	/* line 1, written by tg_observe, read by the broker's tick */
	alignas(SEG_LINE) _Atomic uint64_t srv_limit; /* server's limit; 0 */
	_Atomic uint64_t	fb_ok;		/* successes */
	_Atomic uint64_t	fb_limited;	/* fresh 429s */
	_Atomic uint64_t	cut_ns;		/* eff or a rate last fell */
	_Atomic uint64_t	fb_probe;	/* adaptive: 429s of a probe */
	/* a global limit (broker/fed.c), for tollstat */
	_Atomic uint64_t	fed_held;	/* units of the slices held */
	_Atomic uint64_t	fed_granted;	/* units Redis granted us */
	_Atomic uint64_t	fed_info;	/* FED_INFO(); 0: host-scoped */
};

/* A lease cell: 0 free, else (client slot + 1) << 32 | generation. */
#define LEASE_VAL(slot, gen)	((uint64_t)((slot) + 1) << 32 | (uint32_t)(gen))
#define LEASE_SLOT(v)		((uint32_t)((v) >> 32) - 1)
/*
 * A cell the broker retired: the limit moved to other cells (a reload
 * grew it).  Never a lease (its slot would be 0xfffffffe); a taker that
 * meets one reads the config again (lease.h).
 */
#define LEASE_SEALED		UINT64_MAX

static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2,
    "atomics shared between processes must be lock-free");
static_assert(sizeof(struct seg_header) == 384, "seg_header changed");
static_assert(offsetof(struct seg_header, off_clients) == 64, "line 1");
static_assert(offsetof(struct seg_header, heartbeat_ns) == 128, "line 2");
static_assert(offsetof(struct seg_header, ctl_count) == 192, "line 3");
static_assert(offsetof(struct seg_header, ctl_seq) == 256, "line 4");
static_assert(offsetof(struct seg_header, ctl_key) == 288, "ctl_key");
static_assert(sizeof(struct seg_cfg) == 64, "seg_cfg changed");
static_assert(sizeof(struct seg_key) == 128, "seg_key changed");
static_assert(sizeof(struct seg_limit) == 64, "seg_limit changed");
static_assert(offsetof(struct seg_limit, was_cells) ==
    offsetof(struct seg_limit, tau_ns) && offsetof(struct seg_limit, cells) ==
    offsetof(struct seg_limit, tau_ns) + 8, "was_* overlay tau_ns");
static_assert(sizeof(struct seg_state) == 128, "seg_state changed");
static_assert(sizeof(struct seg_client) == 128, "seg_client changed");
static_assert(offsetof(struct seg_client, acquired) == 64, "own line");
static_assert(sizeof(struct seg_kstate) == 128, "seg_kstate changed");
static_assert(sizeof(struct seg_lstate) == 128, "seg_lstate changed");
static_assert(offsetof(struct seg_lstate, srv_limit) == 64, "line 1");
static_assert(offsetof(struct seg_lstate, handoff_ns) == 48, "line 0");
static_assert(offsetof(struct seg_kstate, denied) == 64, "line 1");
static_assert(offsetof(struct seg_kstate, drained) == 24 &&
    offsetof(struct seg_kstate, ctl_wake) == 28, "line 0: read by takes");

/* A mapping of both objects, as the library, tools and broker hold it. */
struct seg_map {
	struct seg_header	*hdr;		/* the config object */
	size_t			hdr_size;
	unsigned char		*state;		/* the state object */
	size_t			state_size;
	int			hdr_fd;		/* -1 once closed */
	int			state_fd;
};

static inline struct seg_cfg *
seg_cfg(const struct seg_map *m, unsigned idx)
{
	return (struct seg_cfg *)((unsigned char *)m->hdr +
	    m->hdr->off_config[idx & 1]);
}

static inline struct seg_key *
seg_keys(struct seg_cfg *c)
{
	return (struct seg_key *)(c + 1);
}

static inline struct seg_limit *
seg_limits(const struct seg_map *m, struct seg_cfg *c)
{
	return (struct seg_limit *)(seg_keys(c) + m->hdr->max_keys);
}

static inline struct seg_client *
seg_clients(const struct seg_map *m)
{
	return (struct seg_client *)(m->state + m->hdr->off_clients);
}

static inline struct seg_kstate *
seg_kstates(const struct seg_map *m)
{
	return (struct seg_kstate *)(m->state + m->hdr->off_keys);
}

static inline struct seg_lstate *
seg_lstates(const struct seg_map *m)
{
	return (struct seg_lstate *)(m->state + m->hdr->off_limits);
}

static inline _Atomic uint64_t *
seg_cells(const struct seg_map *m)
{
	return (_Atomic uint64_t *)(m->state + m->hdr->off_cells);
}

/* Words in one stripe of grant counters: keys, then limits; whole lines. */
static inline uint64_t
seg_grant_stride(uint32_t max_keys, uint32_t max_limits)
{
	return ((uint64_t)max_keys + max_limits + 7) & ~(uint64_t)7;
}

/*
 * Grant counter stripe s (< SEG_STRIPES): key id k counts at [k], limit
 * id l at [max_keys + l].
 */
static inline _Atomic uint64_t *
seg_grants(const struct seg_map *m, uint32_t s)
{
	return (_Atomic uint64_t *)(m->state + m->hdr->off_grants) +
	    s * seg_grant_stride(m->hdr->max_keys, m->hdr->max_limits);
}

/* Grants of counter idx ([k] or [max_keys + l]) over every stripe. */
static inline uint64_t
seg_grant_sum(const struct seg_map *m, uint64_t idx)
{
	uint64_t sum = 0;

	for (uint32_t s = 0; s < SEG_STRIPES; s++)
		sum += atomic_load_explicit(&seg_grants(m, s)[idx],
		    memory_order_relaxed);
	return sum;
}

/* Zero counter idx in every stripe: the broker, for a fresh id. */
static inline void
seg_grant_zero(const struct seg_map *m, uint64_t idx)
{
	for (uint32_t s = 0; s < SEG_STRIPES; s++)
		atomic_store_explicit(&seg_grants(m, s)[idx], 0,
		    memory_order_relaxed);
}

/*
 * Give back the grant stripe that client slot owns, if any: the client
 * closing, or the broker reclaiming a dead one.  A CAS from exactly slot
 * + 1, so a stripe another slot has claimed since is left alone.
 * Release: the slot's counts in it are in before the next owner's.
 */
static inline void
seg_stripe_free(const struct seg_map *m, uint32_t slot)
{
	struct seg_state *st = (struct seg_state *)m->state;

	for (uint32_t i = 1; i < SEG_STRIPES; i++) {
		uint32_t mine = slot + 1;

		(void)atomic_compare_exchange_strong_explicit(
		    &st->stripe_owner[i], &mine, 0, memory_order_release,
		    memory_order_relaxed);
	}
}

/*
 * The segment to use when none is named: $TOLLGATE_SEGMENT if set and not
 * empty (ignored in a set-uid program: secure_getenv), else "tollgate".
 * The library's tg_open(NULL), tollstat, tollrun and the Python binding.
 */
const char *seg_default(void);

/* Names of the two objects for a segment name; 0 or -ENAMETOOLONG. */
int	seg_names(const char *segment, char *conf, char *state, size_t len);

/*
 * Map an existing segment.  writable: map the state object read-write (the
 * library) or read-only (tollstat).  Checks magic, version and sizes.
 * Returns 0, -ENOENT, -EACCES, -EPROTO (another layout), -EBADMSG (sizes
 * that do not add up), or another -errno of open/mmap.
 */
int	seg_attach(const char *segment, int writable, struct seg_map *m);

/* Unmap and close what seg_attach mapped; safe on a zeroed map. */
void	seg_detach(struct seg_map *m);

/*
 * Check a header's geometry against the sizes actually mapped: every
 * region inside its object, counts within bounds.  Returns 0 or -EBADMSG.
 */
/*
 * Pause key ks until `until' (an atomic max: a shorter pause never cuts a
 * longer one), count the time it added, and start a new round
 * (pause_set_ns = now): responses to requests sent before it do not grow
 * the backoff again, and waiters with slots reckoned before it go back in
 * line (tg_acquire, tg_ready).  Returns the pause in force before; a
 * value >= until means it stays and nothing changed.  For a 429
 * (feedback.c) and for tollctl (broker/ctl.c).  Relaxed: takes read the
 * pause alone; it guards no other data.
 */
uint64_t seg_pause_key(struct seg_kstate *ks, uint64_t now, uint64_t until);

int	seg_check(const struct seg_header *h, size_t hdr_size,
	    size_t state_size);

/* Bytes of one config copy and of the state object for these counts. */
uint64_t seg_config_bytes(uint32_t max_keys, uint32_t max_limits);
uint64_t seg_state_bytes(uint32_t max_clients, uint32_t max_keys,
	    uint32_t max_limits, uint32_t max_cells, uint64_t offs[5]);

/*
 * Begin and end a read of the live config copy (a sequence lock):
 *	do { c = seg_read_begin(m, &seq); ...copy what you need...
 *	} while (!seg_read_ok(c, seq));
 * What was read between the two may be torn until seg_read_ok says it
 * was not: check every index read there before using it.
 */
static inline struct seg_cfg *
seg_read_begin(const struct seg_map *m, uint32_t *seq)
{
	struct seg_cfg *c;
	uint32_t s;

	for (;;) {
		/* Acquire: pairs with the broker's release store of the index. */
		c = seg_cfg(m, atomic_load_explicit(&m->hdr->config_idx,
		    memory_order_acquire));
		/* Acquire: pairs with the release increment ending a write. */
		s = atomic_load_explicit(&c->seq, memory_order_acquire);
		if ((s & 1) == 0)
			break;
	}
	*seq = s;
	return c;
}

static inline int
seg_read_ok(const struct seg_cfg *c, uint32_t seq)
{
	/* Orders the reads of the copy before the second load of seq. */
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&c->seq, memory_order_relaxed) == seq;
}

/* The start time of process pid (field 22 of /proc/PID/stat); 0 or -errno. */
int	proc_starttime(int pid, uint64_t *out);

/*
 * Take the liveness lock of slot on fd, an open file of the state object
 * (writable).  Returns 0, -EAGAIN if another open file holds it, or -errno.
 */
int	seg_slot_lock(int fd, uint32_t slot);

/* Let go of it (a claim that lost its slot); 0 or -errno. */
int	seg_slot_unlock(int fd, uint32_t slot);

/* Whether slot's liveness lock is held: 1, 0, or -errno (fd may be read-only). */
int	seg_slot_locked(int fd, uint32_t slot);

#endif /* TG_SEG_H */
