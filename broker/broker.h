/*
 * broker.h: private; the segment as the broker knows it (struct broker:
 * the config in force, the mapped objects, its own copy of keys, limits
 * and cells, which it never reads back from the segment), and the duties
 * that work on it.  The loop (loop.h) and the client slots (clients.h)
 * keep state of their own; main.c wires them together.
 */
#ifndef TG_BROKER_H
#define TG_BROKER_H

#include <stdint.h>

#include "config.h"
#include "seg.h"

#define TICK_NS		50000000ull	/* 50 ms */

/* What the broker knows of a key id; the segment's copy is never trusted. */
struct key_slot {
	char		name[SEG_NAME_MAX];	/* "" while free */
	uint16_t	gen;			/* last handle generation */
	uint16_t	parent;			/* key id or SEG_NONE */
	uint16_t	quarantine;		/* ticks until it is free */
	uint8_t		learn;			/* `learn = yes' */
	uint8_t		refund_rejected;	/* `rejected = free' */
	uint64_t	max_pause_ns;
	uint64_t	backoff_min_ns;
	uint64_t	backoff_max_ns;
};

struct lim_slot {
	struct limit_spec spec;			/* in force */
	struct limit_spec conf;			/* as the config file says */
	uint16_t	key;
	uint16_t	used;
	uint16_t	quarantine;		/* ticks until it is free */
	uint32_t	cells;
	uint32_t	ncells;			/* concurrency: >= spec.count */
	uint32_t	was_cells;		/* concurrency grown into new */
	uint32_t	was_ncells;		/* cells: the old, while held */
	uint8_t		rewake;			/* wake sleepers next tick */
	/* feedback.c */
	uint64_t	srv_seen;		/* server limit last logged */
	uint32_t	eff;			/* adaptive: leases allowed now */
	uint8_t		aimd_on;		/* last_* below are set */
	uint64_t	acc;			/* successes toward eff + 1 */
	uint64_t	last_ok;
	uint64_t	last_limited;
};

/*
 * A run of pool words, freed once no reader can use it any more.  When it
 * is the old cells of a concurrency limit that a reload grew into new
 * ones (lim is its id, else SEG_NONE), the broker also reconciles them
 * with the copies it made in the new cells every tick until then
 * (segment.c): carried[i] is what old cell i's copy holds (0: none), at
 * at[i] of the new cells to[0..nto).
 */
struct cell_hold {
	uint32_t	first;
	uint32_t	n;
	uint16_t	quarantine;
	uint16_t	lim;
	uint32_t	to;
	uint32_t	nto;
	uint64_t	*carried;
	uint32_t	*at;
};

struct broker {
	const char	*config_path;
	struct config	cfg;
	int		reset;		/* --reset: recreate another layout */

	/* The segment: both objects mapped read-write by the broker. */
	struct seg_map	m;
	struct key_slot	*keys;		/* [max_keys] */
	struct lim_slot	*lims;		/* [max_limits] */
	uint8_t		*cell_used;	/* [max_cells]: 1 if allocated */
	struct cell_hold *holds;	/* [max_limits]: [0..nholds) held */
	unsigned	nholds;
	uint32_t	*lim_first;	/* [max_keys + 1]: limits by key, */
	uint16_t	*lim_ids;	/* [max_limits]: see lims_by_key */
	uint16_t	next_key;	/* next-fit: ids are reused late */
	uint16_t	next_lim;
};

/* segment.c */
struct seg_plan {
	uint32_t	max_keys;
	uint32_t	max_limits;
	uint32_t	max_cells;
};
int	segment_plan(const struct config *cfg, struct seg_plan *p, char *err,
	    size_t errlen);
int	segment_open(struct broker *b);
void	segment_discard(struct broker *b);
int	segment_publish(struct broker *b, const struct config *cfg,
	    char *err, size_t errlen);
void	segment_close(struct broker *b);
void	segment_tick(struct broker *b, uint64_t now);
void	segment_republish(struct broker *b);

/* feedback.c */
void	feedback_tick(struct broker *b, uint64_t now);
/*
 * Whether limit l runs AIMD: a concurrency limit declared adaptive, or
 * any of a key that learns (its 429s teach concurrency as they teach
 * rates; never above the config either way).
 */
static inline int
lim_adaptive(const struct broker *b, const struct lim_slot *l)
{
	return l->spec.kind == LIM_CONC && (l->spec.adaptive ||
	    b->keys[l->key].learn);
}

/* guard.c */
void	guard_install(struct broker *b);
void	guard_check(struct broker *b, uint64_t now);
/* Count and log n pieces of garbage found in the state object. */
void	guard_count(const struct seg_map *m, const char *what,
	    unsigned long n);

/*
 * reload.c: read the config file again and publish it; a bad one changes
 * nothing.  Tells a supervisor (RELOADING=1, READY=1).
 */
void	reload_run(struct broker *b);

/* notify.c */
int	notify_send(const char *msg);
uint64_t notify_watchdog_ns(void);

#endif /* TG_BROKER_H */
