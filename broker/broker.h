/* broker.h: private; the broker's state and the duties of its files. */
#ifndef TG_BROKER_H
#define TG_BROKER_H

#include <sys/signalfd.h>
#include <linux/time_types.h>
#include <liburing.h>
#include <signal.h>
#include <stdint.h>

#include "config.h"
#include "seg.h"

#define TICK_NS		50000000ull	/* 50 ms */

/* io_uring user_data: event << 56 | registration generation << 24 | slot. */
enum ev {
	EV_TICK = 1,
	EV_SIGNAL = 2,
	EV_PIDFD = 3,
	EV_CANCEL = 4,		/* a poll removal: nothing to do */
};
#define UD(ev, gen, slot)	((uint64_t)(ev) << 56 | \
	    (uint64_t)((gen) & 0xffffffu) << 24 | ((slot) & 0xffffffu))
#define UD_EV(u)		((unsigned)((u) >> 56))
#define UD_GEN(u)		((uint32_t)((u) >> 24) & 0xffffffu)
#define UD_SLOT(u)		((uint32_t)(u) & 0xffffffu)

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
	uint32_t	ncells;
	/* feedback.c */
	uint64_t	srv_seen;		/* server limit last logged */
	uint32_t	eff;			/* adaptive: leases allowed now */
	uint8_t		aimd_on;		/* last_* below are set */
	uint64_t	acc;			/* successes toward eff + 1 */
	uint64_t	last_ok;
	uint64_t	last_limited;
};

/*
 * A client slot as the broker tracks it.  The pidfd is only a hint that
 * says at once when a client of our PID namespace exits; whether it is
 * alive is always its lock's to say (clients.c).
 */
struct cl_track {
	int		pidfd;		/* -1: none */
	uint32_t	gen;		/* tracking generation, in user_data */
	uint32_t	token;		/* the registration the pidfd is for */
	uint32_t	claim_tok;	/* CLAIMING without its lock: that claim */
	uint64_t	claim_seen_ns;	/* and since when */
};

/* A run of pool words, freed once no reader can use it any more. */
struct cell_hold {
	uint32_t	first;
	uint32_t	n;
	uint16_t	quarantine;
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
	struct cell_hold *holds;
	unsigned	nholds;
	uint16_t	next_key;	/* next-fit: ids are reused late */
	uint16_t	next_lim;

	/* Clients. */
	struct cl_track	*cl;		/* [max_clients] */

	/* The loop. */
	struct io_uring	ring;
	int		sigfd;
	struct signalfd_siginfo si;	/* the kernel writes it after arming */
	struct __kernel_timespec tick_ts;
	volatile sig_atomic_t stopping;
	uint64_t	watchdog_ns;
	uint64_t	last_watchdog_ns;
};

/* segment.c */
int	segment_open(struct broker *b);
int	segment_publish(struct broker *b, const struct config *cfg,
	    char *err, size_t errlen);
void	segment_close(struct broker *b);
void	segment_tick(struct broker *b, uint64_t now);
void	segment_republish(struct broker *b);

/* feedback.c */
void	feedback_tick(struct broker *b, uint64_t now);

/* guard.c */
void	guard_install(struct broker *b);
void	guard_check(struct broker *b, uint64_t now);
void	guard_count(struct broker *b, const char *what, unsigned long n);

/* clients.c */
void	clients_init(struct broker *b);
void	clients_scan(struct broker *b, uint64_t now);
void	clients_exited(struct broker *b, uint32_t slot, uint32_t gen,
	    uint64_t now);
void	clients_close(struct broker *b);

/* loop.c */
int	loop_init(struct broker *b);
int	loop_run(struct broker *b);
void	loop_fini(struct broker *b);
int	loop_arm_pidfd(struct broker *b, uint32_t slot);
void	loop_disarm_pidfd(struct broker *b, uint32_t slot);

/* main.c */
void	broker_reload(struct broker *b);

/* notify.c */
int	notify_send(const char *msg);
uint64_t notify_watchdog_ns(void);

#endif /* TG_BROKER_H */
