/*
 * stat.h: tollstat's snapshot of a segment and the parts that read it.
 * collect.c fills a struct snap, read-only; the printers (table.c,
 * json.c, prom.c, watch.c) only read the snap.  Numbers are exact here;
 * only the table printers round them.
 */
#ifndef TG_STAT_H
#define TG_STAT_H

#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "seg.h"

#define NS_PER_MS	UINT64_C(1000000)
#define NS_PER_S	UINT64_C(1000000000)
#define STALE_NS	NS_PER_S	/* heartbeat older: the broker hangs */
#define BUS_RETRIES	3		/* state object cut under us: retry */
#define NEXT_RELEASE	UINT64_MAX	/* next_ns: when a lease comes back */
#define SPEC_MAX	112		/* a limit in the config's syntax */
#define COMM_MAX	16		/* /proc/PID/comm with its newline */

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
	/* a global limit (federation); fed_global 0: host-scoped */
	int		fed_global;
	int		fed_disagree;	/* Redis holds other limits for it */
	unsigned	fed_hosts;	/* hosts leasing it (last lease) */
	uint64_t	fed_held;	/* units of this host's slices */
	uint64_t	fed_granted;	/* units Redis granted this host */
	uint64_t	fed_lease_age_ns; /* since its last lease; UINT64_MAX */
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
	int		drained;	/* tollctl drain: takes no tickets */
	uint64_t	status[ST_COUNT]; /* responses by class, paused ns */
};

/* What tollctl had the broker do: the header's counts and last action. */
struct st_ctl {
	uint64_t	count[SEG_CTL_COUNT];	/* by enum seg_ctl */
	int		has_last;	/* an action was done */
	unsigned	action;		/* enum seg_ctl, < SEG_CTL_NACT */
	uint32_t	uid;
	int32_t		pid;		/* 0: another PID namespace */
	uint64_t	ago_ns;		/* since it was done */
	uint64_t	arg_ns;		/* pause: its length */
	char		key[SEG_NAME_MAX];
};

extern const char *const ctl_names[];	/* by enum seg_ctl */

enum client_st {
	CL_FREE,
	CL_CLAIMING,		/* registering */
	CL_LIVE,
	CL_GONE,		/* its process exited: the broker reclaims it */
	CL_BAD,			/* an owner word no client writes */
};

/* A client slot, free or not. */
struct st_client {
	uint64_t	owner;		/* state << 32 | token, as read */
	uint64_t	pid_ns;		/* its PID namespace's inode */
	int32_t		pid;		/* in that namespace */
	int		own_ns;		/* that namespace is ours */
	int		state;		/* enum client_st */
	char		comm[COMM_MAX + 1]; /* process name; "?" unknown */
	uint64_t	acquired;	/* tickets */
	uint64_t	denied;		/* given up: -ETIMEDOUT */
	uint64_t	released;
	uint64_t	waits;
	uint64_t	polls;		/* "not now" (-EAGAIN) answers */
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
	struct st_ctl	ctl;
	uint64_t	fed_state;	/* SEG_FED_*: 0 no federation */
	uint64_t	fed_lapses;	/* caps its thread let end */
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
	uint64_t	polls;		/* -EAGAIN: not now, come back */
	struct st_client *cl;		/* [max_clients], by slot */
	uint64_t	*cellv;		/* [max_cells]: lease cells as read */
	uint32_t	max_cells;
	struct st_key	*keys;		/* [max_keys], in name order */
	unsigned	nkeys;		/* shown: all, or -k's subtree */
	struct st_limit	*limits;	/* [max_limits], grouped by key */
	unsigned	nlimits;
};

extern const char *const broker_names[];	/* by enum broker_st */
extern const char *const client_names[];	/* by enum client_st */

/*
 * Map segment read-only, fill *s and unmap; with key, keep only key and
 * the keys under it.  Returns 0, or -1 with why the segment cannot be
 * shown in why (a sentence for a person who typed its name).  The caller
 * frees with snap_free, also after a failure.
 */
int	snap_read(const char *segment, const char *key, struct snap *s,
	    char *why, size_t len);
void	snap_free(struct snap *s);

/* The distinct pids holding leases of l, ascending; returns how many. */
unsigned limit_holders(const struct snap *s, const struct st_limit *l,
	    int32_t *pids);
/* Leases each slot holds on the keys shown, [max_clients]; exits on ENOMEM. */
uint32_t *slot_leases(const struct snap *s);

/* "safe", "closed", "open": a fed_state's outage mode. */
const char *fed_outage_name(uint64_t fed_state);

/* fmt.c: cells a person reads. */
int	utf8_len(const unsigned char *p);
void	tame(char *s);
const char *kind_name(unsigned kind);
void	fmt_count(char *buf, size_t len, uint64_t v);
void	fmt_dur(char *buf, size_t len, uint64_t ns);

/* table.c */
void	print_header(FILE *f, const struct snap *s);
void	key_note(const struct st_key *k, char *note, size_t len);
void	limit_note(const struct st_limit *l, char *note, size_t len);
void	limit_cells(const struct st_limit *l, char *avail, char *next,
	    size_t len);
void	print_table(FILE *f, const struct snap *s);
void	print_clients(FILE *f, const struct snap *s);

void	print_json(FILE *f, const struct snap *s);
void	print_prom(FILE *f, const struct snap *s);

/*
 * watch.c: redraw every interval_ns, frames times (0: until a signal),
 * in place on a terminal, else one frame after another.  Returns the
 * exit status.
 */
int	watch(const char *segment, const char *key, uint64_t interval_ns,
	    unsigned long frames);

#endif /* TG_STAT_H */
