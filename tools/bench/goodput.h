/*
 * goodput.h: private to goodput.c (cells, figures) and goodput_worker.c
 * (the workers): what a cell's processes share.
 */
#ifndef TG_GOODPUT_H
#define TG_GOODPUT_H

#include <sys/types.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>

#include "bench.h"

#define MS		1000000ull
#define S		1000000000ull
#define HERD_NS		(100 * MS)	/* "the first 100 ms after a pause" */
#define JOBS_MAX	10000		/* --jobs */

enum strategy { ST_NONE, ST_LOCAL, ST_REDIS, ST_TG };

/* What the cell's processes share. */
struct gp_shm {
	alignas(64) _Atomic uint32_t go;	/* futex: the barrier */
	alignas(64) _Atomic uint32_t next_job;
	alignas(64) _Atomic uint32_t ready;
	_Atomic uint32_t stop;		/* the parent gives up */
	uint64_t	t0_ns, deadline_ns;
	struct gp_wout {
		alignas(64) uint32_t jobs;
		uint32_t	requests;
		uint64_t	last_done_ns;
		uint64_t	max_wait_ns;
		int32_t		status;	/* setup's -errno */
	} w[GP_WORKERS];
	struct gp_job {
		uint64_t	taken_ns;	/* by a worker */
		uint64_t	sent_ns;	/* the request accepted */
	} job[JOBS_MAX];
	struct gp_log	log;
};

/* The cell's shared memory, mapped before the workers fork. */
extern struct gp_shm *gp_shm;
/* The segment of goodput's tollgated, for the workers' tg_open. */
extern const char *gp_segment;

long	gp_futex(_Atomic uint32_t *w, int op, uint32_t val);
unsigned gp_jobs(const struct gp_model *m);
void	gp_worker(const struct gp_cell *c, unsigned i, int port,
	    pid_t parent) __attribute__((noreturn));

#endif /* TG_GOODPUT_H */
