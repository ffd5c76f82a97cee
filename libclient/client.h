/* client.h: private; what client.c (tickets) and feedback.c share. */
#ifndef TG_CLIENT_H
#define TG_CLIENT_H

#include <sys/single_threaded.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "tollgate.h"

#include "seg.h"

/*
 * A page of its own, mapped with MADV_WIPEONFORK: it reads as zeros in a
 * child of fork(), however the child was made (fork, clone, a raw system
 * call), so one plain load on the hot path tells a child from the process
 * that registered the client.
 */
struct fork_guard {
	_Atomic uint32_t	token;	/* the registration's; 0 in a child */
};

struct tg_client {
	struct seg_map		m;
	struct seg_client	*me;
	uint32_t		slot;
	uint32_t		token;	/* of our registration: CLIENT_TOKEN */
	int			pid;
	int			lock_fd; /* holds the slot's liveness lock */
	struct fork_guard	*guard;
	char			*segment; /* its name, to reopen after fork */
	pthread_mutex_t		reg_mu;	/* one re-registration after fork */
	struct tg_client	*next;	/* the process's open clients */
	_Atomic uint64_t	rnd;	/* splitmix64 state: backoff jitter */
	_Atomic uint64_t	*kgrants; /* its stripe: key counters */
	_Atomic uint64_t	*lgrants; /* and the limits' (seg.h) */
	uint32_t		stripe;	/* 0: shared; else its own */
	/* chain_get's cache: the chain of key cache_h, read from cache_cfg at
	   sequence cache_seq; used while the process has one thread */
	struct chain		*cache;
	const void		*cache_cfg;
	uint32_t		cache_h;
	uint32_t		cache_seq;
	volatile int		cache_busy;	/* between get and put */
};

/*
 * What a ticket holds, in tg_ticket.priv.  TK_LIVE from a grant to its
 * release, TK_SPENT after (tg_observe and tg_settle still work on it);
 * anything else is an empty ticket.
 */
#define TK_LIVE		0x544b5431u	/* "1TKT" */
#define TK_SPENT	0x544b5430u	/* "0TKT" */
#define TK_LEASES	9

struct tk {
	_Atomic uint32_t	state;
	uint16_t		key;		/* key id */
	uint16_t		kgen;		/* and its generation: the handle */
	uint16_t		slot;		/* the client slot that took it */
	uint8_t			nlease;
	uint8_t			nresv;		/* rate slots kept (resv) */
	uint32_t		gen;		/* lease generation */
	uint32_t		token;		/* and the slot's registration */
	uint32_t		cfg_gen;	/* config it was taken under (low bits) */
	uint64_t		now_ns;		/* when it was taken */
	uint64_t		cost[UNIT_COUNT]; /* what it charged, per unit */
	/*
	 * Leases from the front; from the back, in pairs, the rate slots a
	 * tg_reserve took ahead (TK_RESV_*), which a release before the
	 * ticket's time gives back.  nlease + 2 * nresv <= TK_LEASES.
	 */
	union {
		struct {
			uint16_t	lim;
			uint16_t	pad;
			uint32_t	cell;
		} lease[TK_LEASES];
		uint64_t	resv[TK_LEASES];
	};
};

/*
 * Reserved rate slot j of a ticket: the TAT its reservation left, and the
 * limit's id (high 16 bits) with the slot's cost in ns (low 48 bits: 78
 * hours; a costlier slot is not kept, and spent if unused).
 */
#define TK_RESV_TAT(j)		(TK_LEASES - 1 - 2 * (j))
#define TK_RESV_LIM(j)		(TK_LEASES - 2 - 2 * (j))
/*
 * After a reservation's nresv pairs, where room is left, the time it was
 * made (0: none kept), for tg_ready: a pause set after it.
 */
#define TK_RESV_SINCE(n)	(TK_LEASES - 1 - 2 * (n))
#define TK_RESV_COST_MAX	((UINT64_C(1) << 48) - 1)

static_assert(sizeof(struct tk) <= sizeof(tg_ticket), "ticket too small");
static_assert(offsetof(struct tk, now_ns) == 24, "tk changed");
static_assert(SEG_CLIENTS_MAX <= UINT16_MAX, "a slot fits tk.slot");
static_assert(TK_LEASES >= SEG_DEPTH_MAX, "a lease per level");

static inline int
tk_filled(struct tk *tk)
{
	uint32_t s = atomic_load_explicit(&tk->state, memory_order_acquire);

	return s == TK_LIVE || s == TK_SPENT;
}

static inline uint32_t
tk_handle(const struct tk *tk)
{
	return tk->key | (uint32_t)tk->kgen << 16;
}

/* A limit of a ticket's chain, copied out of the config under its seqlock. */
struct lview {
	uint16_t	id;
	uint8_t		kind;
	uint8_t		unit;
	uint8_t		flags;		/* LIMIT_F_* */
	uint8_t		pad;
	uint16_t	key;		/* the key that owns it */
	uint32_t	cells;
	uint32_t	ncells;
	uint64_t	count;
	uint64_t	period_ns;
	uint64_t	burst;
	uint64_t	tau_ns;
	uint64_t	cooldown_ns;
	uint64_t	unit_ns;	/* rate: what one unit costs; 0 unknown */
};

/* A key's chain: its limits and its keys, as one take needs them. */
struct chain {
	uint64_t	cfg_gen;
	uint16_t	key;
	uint16_t	kgen;
	uint8_t		nlim;
	uint8_t		nkey;
	uint8_t		flags;		/* SEG_KEY_* of the key */
	uint16_t	keys[SEG_DEPTH_MAX];
	uint64_t	max_pause_ns;
	uint64_t	backoff_min_ns;
	uint64_t	backoff_max_ns;
	struct lview	lim[SEG_CHAIN_MAX];
};

/*
 * Whether c is usable as it is: the process that registered it.  In a
 * child of fork() the guard page reads 0 and client_refork must run
 * first.  One load of a private line: no system call.
 */
static inline int
client_ours(const tg_client *c)
{
	/*
	 * Acquire: pairs with the release store that ends client_refork in
	 * another thread of the child, so slot, token and stripe are its.
	 * A plain load on x86.
	 */
	return __builtin_expect(atomic_load_explicit(&c->guard->token,
	    memory_order_acquire) != 0, 1);
}

/*
 * In a child of fork(): give it a registration of its own (a slot, its
 * liveness lock, a stripe), once.  Returns 0 or -errno of tg_open's.
 * Makes system calls, once per child.
 */
int	client_refork(tg_client *c);

/* Whether ticket tk was taken through c's registration (not inherited). */
static inline int
tk_ours(const tg_client *c, const struct tk *tk)
{
	return tk->slot == c->slot && tk->token == c->token &&
	    client_ours(c);
}

/* The member of cost that a limit of `unit' counts. */
static inline uint64_t
unit_cost(const tg_cost *cost, unsigned unit)
{
	switch (unit) {
	case UNIT_REQUESTS:
		return cost->requests;
	case UNIT_TOKENS:
		return cost->tokens;
	case UNIT_IMAGES:
		return cost->images;
	}
	return 0;
}

/*
 * Copy the chain of key handle h out of the live config.  Returns 0,
 * -ESTALE (removed by a reload), -EINVAL (never a handle) or -EBADMSG.
 */
int	chain_read(const tg_client *c, uint32_t h, struct chain *ch);

/*
 * The chain of key handle h, as chain_read gives it: in *out, which is
 * buf or the client's cache of the last chain read.  The cache serves
 * while the process has one thread and the live config copy is the very
 * one it was read from (same copy, same sequence number: a reload
 * changes either), so a ticket on the same key reads 3 words of the
 * config, not its chain.  chain_put ends the use of *out: until then a
 * signal handler's call on the client reads its own copy.
 */
int	chain_get(tg_client *c, uint32_t h, struct chain *buf,
	    const struct chain **out);
void	chain_put(tg_client *c, const struct chain *ch);

/*
 * Add n to a word only this process writes, while it has one thread: no
 * locked instruction, yet no lost count when a signal handler's ticket
 * lands in the middle.  On x86-64 one `add' to memory: a signal arrives
 * between instructions, never inside one.  Elsewhere a load and a store
 * could be split by a handler that adds too, so an atomic add.
 */
static inline void
own_add(_Atomic uint64_t *w, uint64_t n)
{
#if defined(__x86_64__)
	/* Not an atomic RMW for other CPUs: only this thread writes *w. */
	__asm__ volatile("addq %1, %0" : "+m" (*(uint64_t *)(uintptr_t)w)
	    : "er" (n));
#else
	atomic_fetch_add_explicit(w, n, memory_order_relaxed);
#endif
}

/*
 * Add n to a grant counter of this client's stripe: as slot_count on a
 * stripe of its own, an atomic add on the shared one.
 */
static inline void
grant_count(const struct tg_client *c, _Atomic uint64_t *w, uint64_t n)
{
	if (c->stripe != 0 && __libc_single_threaded)
		own_add(w, n);
	else
		atomic_fetch_add_explicit(w, n, memory_order_relaxed);
}

/*
 * Add n to a counter on this client's own slot line, which only this
 * process writes.  While the process has one thread (glibc's flag, a
 * plain load), own_add: no locked instruction is spent; with threads, an
 * atomic add.
 */
static inline void
slot_count(_Atomic uint64_t *w, uint64_t n)
{
	if (__libc_single_threaded)
		own_add(w, n);
	else
		atomic_fetch_add_explicit(w, n, memory_order_relaxed);
}

#endif /* TG_CLIENT_H */
