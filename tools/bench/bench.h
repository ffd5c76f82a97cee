/* bench.h: private to tollbench; what its files share. */
#ifndef TG_BENCH_H
#define TG_BENCH_H

#include <sys/types.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define BENCH_PROCS_MAX		64	/* processes in a run */
#define BENCH_NPROCS_MAX	8	/* entries of --procs */
#define BENCH_RUNS_MAX		15
#define BENCH_LAT_MAX		100000	/* samples of a latency */
#define NA			UINT64_MAX /* a figure that is not one */

/* What the command line asked for. */
struct opts {
	uint64_t	duration_ns;	/* one timed run */
	unsigned	runs;		/* the table shows their median */
	unsigned	procs[BENCH_NPROCS_MAX];
	unsigned	nprocs;
	unsigned	handoffs;	/* wake-up samples */
	unsigned	kills;		/* reclaim samples */
	int		json;
	int		verbose;	/* progress on stderr */
	int		pin;		/* process i on CPU i % ncpu */
	const char	*only;		/* name prefixes, commas */
	unsigned	gp_jobs;	/* goodput's batch; 0: each model's */
	int		gp_quick;	/* goodput's short batches */
	char		build[PATH_MAX]; /* tollgated's directory */
};

extern struct opts opt;

/* What one process of a timed run reports; loops fill the first three. */
struct loop_out {
	uint64_t	ops;
	uint64_t	retries;	/* failed CAS; NA: not counted */
	uint64_t	refused;	/* operations that did not grant */
};

/*
 * A timed row.  The parent prepares `arg' before forking; each forked
 * process runs setup (its own client, connection...), waits at the
 * barrier, runs loop until *stop turns nonzero, then teardown.  loop
 * checks *stop once per operation (a relaxed load of a line nobody
 * writes until the end) so the operation is inlined in a tight loop.
 */
struct row {
	const char	*name;		/* "tg-one": --only, JSON */
	const char	*label;		/* what the table says */
	void		*arg;
	int		(*setup)(void *arg, void **ctx); /* 0, -errno */
	void		(*loop)(void *ctx, const _Atomic uint32_t *stop,
			    struct loop_out *out);
	void		(*teardown)(void *ctx);
	const char	*skipped;	/* why not measured, or NULL */
	/* per entry of opt.procs, per run */
	struct run_result {
		uint64_t	ops;
		uint64_t	proc_ns;	/* sum of process times */
		uint64_t	cpu_ns;		/* and of CPU times */
		uint64_t	span_ns;	/* first start, last stop */
		uint64_t	retries;	/* NA: not counted */
		uint64_t	refused;
		double		fair;		/* slowest / fastest */
		int		done;
	} res[BENCH_NPROCS_MAX][BENCH_RUNS_MAX];
};

/* A row's figure at one process count: the median run's. */
struct figure {
	int		ok;
	double		ns_per_op;
	double		mops;
	double		cpu_ns_per_op;	/* CPU time, not elapsed */
	double		retries_per_op;	/* < 0: not counted */
	double		fair;
	uint64_t	ops;		/* of the median run */
	uint64_t	refused;
};

/* A latency figure, in ns. */
struct latency {
	const char	*name;
	const char	*label;
	const char	*skipped;
	uint64_t	*samples;	/* sorted once measured */
	unsigned	n;
	uint64_t	p50_ns, p99_ns, max_ns, min_ns;
};

/* The memory of a broker with many keys. */
struct memory {
	const char	*skipped;
	unsigned	keys, limits_per_key, max_clients;
	uint64_t	conf_bytes, state_bytes;	/* st_size */
	uint64_t	conf_alloc, state_alloc;	/* st_blocks * 512 */
	uint64_t	rss_kb, pss_kb, rss_shmem_kb;	/* NA if unknown */
};

/* Everything the report prints. */
struct results {
	struct row	**rows;
	unsigned	nrows;
	struct latency	*lat[2];	/* wake-up, reclaim */
	struct memory	*mem;
	int		casstat;	/* library CAS retries are counted */
	char		cpu[128];
	long		ncpu;
	char		kernel[256];
	double		load_before[3], load_after[3];
	/*
	 * CPU seconds over the whole run: every process of the machine
	 * (/proc/stat), the bench's own (itself and everything it started
	 * and reaped), and what the hypervisor stole.
	 */
	double		cpu_all_s, cpu_ours_s, cpu_steal_s, wall_s;
	/* what the bench created, all gone when the report is written */
	char		segments[4][64];
	unsigned	nsegments;
	char		tmpdir[PATH_MAX];
	pid_t		pids[8];
	unsigned	npids;
	const char	*failed;	/* what did not run, or NULL */
	struct goodput	*gp;		/* the goodput section, or NULL */
};

/* CLOCK_MONOTONIC in ns, inline as the library's own now_ns(). */
static inline uint64_t
clock_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* harness.c */
int	harness_init(void);
int	harness_run(struct row *r, unsigned procs_idx, unsigned run);
void	row_figure(const struct row *r, unsigned procs_idx,
	    struct figure *f);
uint64_t now_ns_bench(void);
void	sleep_ns(uint64_t ns);
int	bench_match(const char *name);
int	cmp_u64(const void *a, const void *b);
void	lat_finish(struct latency *l);
int	wait_child(pid_t pid, uint64_t timeout_ns);
void	*shared_alloc(size_t size);

/* cleanup.c: what the bench started, undone at exit, even on SIGINT. */
typedef void cleanup_fn(void *arg);
int	cleanup_push(cleanup_fn *fn, void *arg);
void	cleanup_pop(cleanup_fn *fn, void *arg, int run);
void	cleanup_run(void);
void	signals_install(void);
extern volatile sig_atomic_t bench_signal;
int	tmpdir_path(char *buf, size_t len, const char *name);
const char *tmpdir_get(void);
int	rm_tree(const char *path);
void	stop_child(pid_t *pid, int sig, uint64_t timeout_ns);
void	bench_warnx(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2)));
void	progress(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2)));

/* broker.c: a real tollgated from the build directory. */
struct broker {
	pid_t	pid;
	char	segment[64];
	char	conf[PATH_MAX];
	char	log[PATH_MAX];
	char	pidfile[PATH_MAX];
};
int	broker_start(struct broker *b, const char *tag, const char *extra,
	    const char *body);
void	broker_stop(struct broker *b);
int	broker_tracks(const struct broker *b, pid_t pid);

/* casstat.c */
extern _Thread_local uint64_t tg_cas_retries;
int	casstat_linked(void);
uint64_t casstat_read(void);

/* The rows and measurements, each in its own file. */
void	floors_rows(struct results *res);
int	tollgate_rows(struct results *res, const struct broker *b);
extern const char tollgate_keys[];
int	mutex_rows(struct results *res);
int	socket_rows(struct results *res);
int	redis_rows(struct results *res);
void	redis_stop(void);
void	socket_stop(void);
int	latency_wakeup(struct latency *l, const struct broker *b);
int	latency_reclaim(struct latency *l, const struct broker *b);
int	memory_measure(struct memory *m);

/*
 * goodput: 8 worker processes run a fixed batch of jobs against a strict
 * local provider (provider.c) through each limiter (goodput.c); what the
 * fleet got done, and how close to the provider's own limits.
 */
#define GP_WORKERS	8
#define GP_EVENTS_MAX	16384	/* requests a provider logs per cell */

enum gp_style {			/* what a provider's responses say */
	GP_RETRY_AFTER,		/* a 429's retry-after, nothing else */
	GP_OPENAI,		/* x-ratelimit-*, a 429 without retry-after */
	GP_ANTHROPIC		/* anthropic-ratelimit-*, a 429's retry-after */
};

/* A provider: its limits (0: none) and what a tollgate key says of it. */
struct gp_model {
	const char	*name;		/* "openai": in cell names */
	const char	*label;
	enum gp_style	style;
	unsigned	rate_n;		/* bucket: rate_n a rate_ns, burst */
	uint64_t	rate_ns;
	unsigned	burst;
	unsigned	window_n;	/* fixed windows of window_ns */
	uint64_t	window_ns;
	unsigned	conc;		/* requests in flight */
	uint64_t	cooldown_ns;	/* lockout when the bucket runs dry */
	uint64_t	service_ns;	/* how long an accepted request takes */
	unsigned	jobs;		/* the batch; --quick: quick_jobs */
	unsigned	quick_jobs;
	const char	*conf[2];	/* tollgate: matching, twice too big */
};

/* A request as the provider saw it. */
struct gp_event {
	uint64_t	t_ns;		/* arrival, CLOCK_MONOTONIC */
	uint64_t	ready_ns;	/* a 429: until it would take one */
	uint16_t	worker;
	uint16_t	status;
};

/* The provider's log of a cell, in shared memory; it alone writes. */
struct gp_log {
	_Atomic uint32_t n;
	uint32_t	dropped;	/* beyond GP_EVENTS_MAX */
	uint64_t	origin_ns;	/* its start: where its windows begin */
	struct gp_event	ev[GP_EVENTS_MAX];
};

struct provider {
	pid_t	pid;
	int	port;			/* on 127.0.0.1 */
};

/* One cell: a provider, a limiter, a config. */
struct gp_cell {
	char		name[48];	/* gp-openai-tg-2x: --only, JSON */
	const struct gp_model *model;
	int		strategy;	/* enum in goodput.c */
	const char	*strategy_label;
	unsigned	factor;		/* 1: matching config, 2: too big */
	const char	*skipped;
	int		done;		/* measured */
	int		complete;	/* every job done within the bound */
	unsigned	jobs, requests, rejected, dropped;
	unsigned	jobs_min, jobs_max;	/* of one worker */
	double		makespan_s, min_s, silence_s, wait_s;
	double		fcfs_wait_s;	/* the longest, first come first
					   served, with the same sends */
	double		fair;		/* Jain's index of jobs per worker */
	int		herd;		/* -1: no 429 said when to come back */
};

struct goodput {
	struct gp_cell	*cells;
	unsigned	ncells;
};

/* provider.c */
int	provider_start(struct provider *p, const struct gp_model *m,
	    struct gp_log *log);
void	provider_stop(struct provider *p);

/* goodput.c, goodput_report.c */
int	goodput_run(struct results *res);
int	goodput_wanted(void);
int	gp_target(const struct gp_cell *c, double *util_min,
	    double *per100_max);
void	goodput_table(FILE *f, const struct results *res);
void	goodput_json(FILE *f, const struct results *res);

/* alt_redis.c: its server and script, for goodput's shared GCRA too. */
int	redis_ensure(void);
void	*redis_gcra_connect(void);
int64_t	redis_gcra_take(void *c, const char *key, uint64_t cost_us,
	    uint64_t tau_us);
void	redis_gcra_close(void *c);

/* report.c */
void	report_table(FILE *f, const struct results *res);
void	report_json(FILE *f, const struct results *res);

/* s as a JSON string, quoted and escaped; a number, or null if none. */
void	json_str(FILE *f, const char *s);
void	json_num(FILE *f, double v);
void	machine_info(struct results *res);
void	cpu_account(struct results *res, int end);

extern struct results R;	/* main.c */

/* Add a row to res (rows live for the whole run). */
struct row *row_add(struct results *res, const char *name, const char *label);

#endif /* TG_BENCH_H */
