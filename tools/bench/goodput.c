/*
 * goodput.c: issue 13's measure of a limiter, what a fleet gets done.
 * GP_WORKERS forked workers share a fixed batch of jobs, one request
 * each, against a strict local provider (provider.c), through each
 * limiter in turn: none (full-jitter exponential retry), a GCRA per
 * process at rate/N, a GCRA shared in Redis, and tollgate; the last
 * three with a config that matches the provider and one twice too
 * generous.  Each cell has a provider of its own, fresh and full.
 */
#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "goodput.h"

static const char *const st_name[] = { "none", "local", "redis", "tg" };
static const char *const st_label[] = {
	"no limiter, full-jitter retry",
	"GCRA per process, rate/8",
	"GCRA shared in Redis",
	"tollgate",
};

/*
 * The providers.  Limits are time-scaled (a minute's limit over 2 s) so
 * a batch takes a few seconds.  tollgate's configs scale its backoff the
 * same way (100ms..2s for 1s..60s); a config twice too generous doubles
 * every figure, as a user guessing wrong would, and learns.
 */
static const struct gp_model models[] = {
	{ "retry-after", "bucket of 4, 1 per 0.2 s, 300 ms lockout, "
	    "retry-after only", GP_RETRY_AFTER, 5, S, 4, 0, 0, 0, 300 * MS,
	    50 * MS, 30, 14, {
	    "limit = 5 requests/s burst 4 cooldown 300ms\nlearn = yes\n"
	    "backoff = 100ms..2s\n",
	    "limit = 10 requests/s burst 8 cooldown 300ms\nlearn = yes\n"
	    "backoff = 100ms..2s\n" } },
	{ "openai", "20 per 2 s bucket, 4 in flight, x-ratelimit-* headers",
	    GP_OPENAI, 20, 2 * S, 20, 0, 0, 4, 0, 200 * MS, 60, 36, {
	    "limit = 20 requests/2s\nconcurrency = 4\nlearn = yes\n"
	    "backoff = 100ms..2s\n",
	    "limit = 40 requests/2s\nconcurrency = 8 adaptive\nlearn = yes\n"
	    "backoff = 100ms..2s\n" } },
	{ "anthropic", "20 per 2 s bucket, anthropic-ratelimit-* headers",
	    GP_ANTHROPIC, 20, 2 * S, 20, 0, 0, 0, 0, 100 * MS, 60, 36, {
	    "limit = 20 requests/2s\nlearn = yes\nbackoff = 100ms..2s\n",
	    "limit = 40 requests/2s\nlearn = yes\nbackoff = 100ms..2s\n" } },
	{ "window", "20 per fixed 2 s window, retry-after only",
	    GP_RETRY_AFTER, 0, 0, 0, 20, 2 * S, 0, 0, 100 * MS, 50, 30, {
	    "limit = 20 requests/2s window\nlearn = yes\n"
	    "backoff = 100ms..2s\n",
	    "limit = 40 requests/2s window\nlearn = yes\n"
	    "backoff = 100ms..2s\n" } },
};
#define NMODELS	(sizeof(models) / sizeof(models[0]))

struct gp_shm *gp_shm;
const char *gp_segment;
static struct broker gp_broker;
static struct goodput gp;

long
gp_futex(_Atomic uint32_t *w, int op, uint32_t val)
{
	return syscall(SYS_futex, w, op, val, NULL, NULL, 0);
}

unsigned
gp_jobs(const struct gp_model *m)
{
	if (opt.gp_jobs != 0)
		return opt.gp_jobs;
	return opt.gp_quick ? m->quick_jobs : m->jobs;
}

/*
 * The theoretical minimum makespan: each job as early as the provider's
 * limits (from a full bucket at t0) and the workers allow, one request
 * each, none refused, the service time and nothing else.
 */
static double
min_makespan(const struct gp_model *m, unsigned jobs, uint64_t t0,
    uint64_t origin)
{
	unsigned c = m->conc && m->conc < GP_WORKERS ? m->conc : GP_WORKERS;
	double *start, t = 0, tokens = m->burst, last = 0, ws, r;
	double per = m->rate_n ? (double)m->rate_ns / m->rate_n : 0;
	unsigned count = 0;

	if (jobs == 0 || (start = calloc(jobs, sizeof(*start))) == NULL)
		return NAN;
	/* Time from t0; the window that holds t0 began at ws. */
	ws = m->window_n ? -(double)((t0 - origin) % m->window_ns) : 0;
	for (unsigned i = 0; i < jobs; i++) {
		if (i >= c && start[i - c] + (double)m->service_ns > t)
			t = start[i - c] + (double)m->service_ns;
		for (;;) {
			if (m->rate_n) {
				tokens += (t - last) / per;
				if (tokens > m->burst)
					tokens = m->burst;
				last = t;
				if (tokens < 1) {
					t += (1 - tokens) * per;
					continue;
				}
			}
			if (m->window_n) {
				while (t >= ws + (double)m->window_ns) {
					ws += (double)m->window_ns;
					count = 0;
				}
				if (count >= m->window_n) {
					t = ws + (double)m->window_ns;
					continue;
				}
			}
			break;
		}
		start[i] = t;
		tokens -= 1;
		count++;
	}
	r = (start[jobs - 1] + (double)m->service_ns) / 1e9;
	free(start);
	return r;
}

static int
cmp_event_t(const void *a, const void *b)
{
	uint64_t x = ((const struct gp_event *)a)->t_ns;
	uint64_t y = ((const struct gp_event *)b)->t_ns;

	return x < y ? -1 : x > y;
}

/* The index of the first event at or after t. */
static uint32_t
first_at(const struct gp_event *ev, uint32_t n, uint64_t t)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (ev[mid].t_ns < t)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * The longest wait first-come-first-served would give with the same
 * sends: the k-th job taken leaves with the k-th accepted request.
 */
static double
fcfs_wait(unsigned jobs)
{
	uint64_t *take, *sent, w = 0;
	unsigned n = 0;

	if ((take = calloc(jobs + 1, sizeof(*take))) == NULL ||
	    (sent = calloc(jobs + 1, sizeof(*sent))) == NULL) {
		free(take);
		return NAN;
	}
	for (unsigned j = 0; j < jobs; j++)
		if (gp_shm->job[j].sent_ns != 0) {
			take[n] = gp_shm->job[j].taken_ns;
			sent[n++] = gp_shm->job[j].sent_ns;
		}
	qsort(take, n, sizeof(*take), cmp_u64);
	qsort(sent, n, sizeof(*sent), cmp_u64);
	for (unsigned k = 0; k < n; k++)
		if (sent[k] > take[k] && sent[k] - take[k] > w)
			w = sent[k] - take[k];
	free(take);
	free(sent);
	return (double)w / 1e9;
}

/* The figures of a cell from the provider's log and the workers'. */
static void
figures(struct gp_cell *c, uint64_t t0)
{
	const struct gp_log *log = &gp_shm->log;
	uint32_t n = atomic_load_explicit(&log->n, memory_order_acquire);
	uint64_t prev = t0, gap = 0, end = t0, wait = 0;
	unsigned lo = UINT_MAX, hi = 0;
	double sum = 0, sq = 0;
	struct gp_event *ev;

	c->requests = n + log->dropped;
	c->dropped = log->dropped;
	c->rejected = 0;
	c->herd = -1;
	c->jobs = 0;
	/* One process logs them in order; sort anyway, it is cheap. */
	if ((ev = malloc((n ? n : 1) * sizeof(*ev))) == NULL)
		return;
	memcpy(ev, log->ev, n * sizeof(*ev));
	qsort(ev, n, sizeof(*ev), cmp_event_t);
	/* What the provider saw, one line a request, for a closer look. */
	if (getenv("TOLLBENCH_GP_TRACE") != NULL)
		for (uint32_t i = 0; i < n; i++)
			fprintf(stderr, "%s %9.3f ms w%u %u ready %.1f ms\n",
			    c->name, (double)(ev[i].t_ns - t0) / 1e6,
			    ev[i].worker, ev[i].status,
			    (double)ev[i].ready_ns / 1e6);
	for (uint32_t i = 0; i < n; i++) {
		if (ev[i].status != 200) {
			c->rejected++;
			continue;
		}
		if (ev[i].t_ns > prev && ev[i].t_ns - prev > gap)
			gap = ev[i].t_ns - prev;
		prev = ev[i].t_ns;
	}
	/* A herd: requests in the first 100 ms after a 429's "come back". */
	for (uint32_t i = 0; i < n; i++) {
		uint64_t from;
		int k;

		if (ev[i].status == 200 || ev[i].ready_ns == 0)
			continue;
		from = ev[i].t_ns + ev[i].ready_ns;
		k = (int)(first_at(ev, n, from + HERD_NS) - first_at(ev, n,
		    from));
		if (k > c->herd)
			c->herd = k;
	}
	free(ev);
	for (unsigned i = 0; i < GP_WORKERS; i++) {
		const struct gp_wout *w = &gp_shm->w[i];

		c->jobs += w->jobs;
		if (w->last_done_ns > end)
			end = w->last_done_ns;
		if (w->max_wait_ns > wait)
			wait = w->max_wait_ns;
		if (w->jobs < lo)
			lo = w->jobs;
		if (w->jobs > hi)
			hi = w->jobs;
		sum += w->jobs;
		sq += (double)w->jobs * w->jobs;
	}
	c->silence_s = (double)gap / 1e9;
	c->makespan_s = (double)(end - t0) / 1e9;
	c->wait_s = (double)wait / 1e9;
	c->fcfs_wait_s = fcfs_wait(gp_jobs(c->model));
	/* Jain's index: 1 when each did as many, 1/n when one did all. */
	c->fair = sq > 0 ? sum * sum / (GP_WORKERS * sq) : 0;
	c->jobs_min = lo;
	c->jobs_max = hi;
	c->complete = c->jobs == gp_jobs(c->model);
}

/* Kill what still runs of the cell's workers, and reap them. */
static void
reap(pid_t *pids, unsigned n, int sig)
{
	for (unsigned i = 0; i < n; i++)
		if (pids[i] > 0) {
			kill(pids[i], sig);
			wait_child(pids[i], 2000000000ull);
			pids[i] = 0;
		}
}

/* Run one cell; 0, or -errno. */
static int
cell_run(struct gp_cell *c)
{
	const struct gp_model *m = c->model;
	pid_t pids[GP_WORKERS], parent = getpid();
	struct provider p;
	unsigned started = 0, running, i;
	uint64_t t0, end;
	int ret = 0, st;

	memset(gp_shm, 0, offsetof(struct gp_shm, log));
	if (gp_jobs(m) > JOBS_MAX)
		return -E2BIG;
	if ((ret = provider_start(&p, m, &gp_shm->log)) < 0)
		return ret;
	for (i = 0; i < GP_WORKERS; i++) {
		if ((pids[i] = fork()) < 0) {
			ret = -errno;
			break;
		}
		if (pids[i] == 0)
			gp_worker(c, i, p.port, parent);
		started++;
	}
	end = clock_ns() + 20 * S;
	while (ret == 0 && atomic_load(&gp_shm->ready) < started) {
		if (bench_signal || clock_ns() > end)
			ret = bench_signal ? -EINTR : -ETIMEDOUT;
		sleep_ns(200000);
	}
	for (i = 0; i < started && ret == 0; i++)
		if (gp_shm->w[i].status < 0)
			ret = gp_shm->w[i].status;
	if (ret < 0) {
		atomic_store(&gp_shm->stop, 1);
		atomic_store(&gp_shm->go, 1);
		gp_futex(&gp_shm->go, FUTEX_WAKE, INT_MAX);
		reap(pids, started, SIGKILL);
		provider_stop(&p);
		return ret;
	}
	t0 = clock_ns();
	c->min_s = min_makespan(m, gp_jobs(m), t0, gp_shm->log.origin_ns);
	/* Bounded: 8 times the minimum and 10 s more, then it gives up. */
	gp_shm->t0_ns = t0;
	gp_shm->deadline_ns = t0 + (uint64_t)(8 * c->min_s * 1e9) + 10 * S;
	atomic_store(&gp_shm->go, 1);
	gp_futex(&gp_shm->go, FUTEX_WAKE, INT_MAX);
	end = gp_shm->deadline_ns + 5 * S;
	for (running = started; running > 0;) {
		if (bench_signal || clock_ns() > end) {
			atomic_store(&gp_shm->stop, 1);
			break;
		}
		for (i = 0; i < started; i++)
			if (pids[i] > 0 && waitpid(pids[i], &st, WNOHANG) ==
			    pids[i]) {
				pids[i] = 0;
				running--;
			}
		if (running > 0)
			sleep_ns(2 * MS);
	}
	reap(pids, started, SIGKILL);
	provider_stop(&p);
	if (bench_signal)
		return -EINTR;
	figures(c, t0);
	c->done = 1;
	for (i = 0; i < GP_WORKERS; i++)
		if (gp_shm->w[i].status < 0) {
			bench_warnx("%s: worker %u: %s", c->name, i,
			    strerror(-gp_shm->w[i].status));
			return gp_shm->w[i].status;
		}
	return 0;
}

static void
cell_name(char *buf, size_t len, const struct gp_model *m, enum strategy s,
    unsigned factor)
{
	if (s == ST_NONE)
		snprintf(buf, len, "gp-%s-none", m->name);
	else
		snprintf(buf, len, "gp-%s-%s-%ux", m->name, st_name[s],
		    factor);
}

static void
cell_add(const struct gp_model *m, enum strategy s, unsigned factor)
{
	struct gp_cell *c = &gp.cells[gp.ncells];

	memset(c, 0, sizeof(*c));
	cell_name(c->name, sizeof(c->name), m, s, factor);
	if (!bench_match(c->name))
		return;
	c->model = m;
	c->strategy = s;
	c->strategy_label = st_label[s];
	c->factor = factor;
	c->herd = -1;
	gp.ncells++;
}

/* Every cell --only selects, in the order the table shows them. */
static int
cells_make(void)
{
	gp.ncells = 0;
	if ((gp.cells = calloc(NMODELS * 7, sizeof(*gp.cells))) == NULL)
		return -ENOMEM;
	for (unsigned k = 0; k < NMODELS; k++) {
		const struct gp_model *m = &models[k];

		cell_add(m, ST_NONE, 1);
		for (unsigned f = 1; f <= 2; f++) {
			cell_add(m, ST_LOCAL, f);
			cell_add(m, ST_REDIS, f);
			cell_add(m, ST_TG, f);
		}
	}
	return 0;
}

/* Whether --only selects any goodput cell. */
int
goodput_wanted(void)
{
	char name[48];

	for (unsigned k = 0; k < NMODELS; k++)
		for (unsigned s = ST_NONE; s <= ST_TG; s++)
			for (unsigned f = 1; f <= 2; f++) {
				cell_name(name, sizeof(name), &models[k], s,
				    f);
				if (bench_match(name))
					return 1;
			}
	return 0;
}

/* The tollgate keys: one per model and config. */
static char *
gp_keys(void)
{
	size_t len = 1;
	char *body, *p;

	for (unsigned k = 0; k < NMODELS; k++)
		len += 2 * 64 + strlen(models[k].conf[0]) +
		    strlen(models[k].conf[1]);
	if ((body = calloc(1, len)) == NULL)
		return NULL;
	p = body;
	for (unsigned k = 0; k < NMODELS; k++)
		for (unsigned f = 0; f < 2; f++)
			p += sprintf(p, "[gp-%s-%ux]\n%s\n", models[k].name,
			    f + 1, models[k].conf[f]);
	return body;
}

/* The goodput section: every selected cell, one after the other. */
int
goodput_run(struct results *res)
{
	int need_tg = 0, need_redis = 0, broker_up = 0, e, ret = 0;
	const char *tg_skip = NULL, *redis_skip = NULL;
	char *keys;

	if (cells_make() < 0)
		return -ENOMEM;
	res->gp = &gp;
	if (gp.ncells == 0)
		return 0;
	if ((gp_shm = shared_alloc(sizeof(*gp_shm))) == NULL)
		return -errno;
	for (unsigned i = 0; i < gp.ncells; i++) {
		need_tg |= gp.cells[i].strategy == ST_TG;
		need_redis |= gp.cells[i].strategy == ST_REDIS;
	}
	if (need_tg) {
		if ((keys = gp_keys()) == NULL)
			return -ENOMEM;
		progress("goodput: starting tollgated");
		if ((e = broker_start(&gp_broker, "gp", NULL, keys)) < 0) {
			tg_skip = "tollgated did not start";
			ret = e;
		} else {
			broker_up = 1;
			gp_segment = gp_broker.segment;
		}
		free(keys);
	}
	if (need_redis && (e = redis_ensure()) < 0) {
		redis_skip = e == -ENOENT ? "redis-server not found "
		    "(apt-get install redis-server)" :
		    "redis-server did not start";
		if (e != -ENOENT)
			ret = e;
	}
	for (unsigned i = 0; i < gp.ncells && !bench_signal; i++) {
		struct gp_cell *c = &gp.cells[i];

		if (c->strategy == ST_TG && tg_skip != NULL)
			c->skipped = tg_skip;
		if (c->strategy == ST_REDIS && redis_skip != NULL)
			c->skipped = redis_skip;
		if (c->skipped != NULL)
			continue;
		progress("goodput: %s, %u jobs", c->name, gp_jobs(c->model));
		if ((e = cell_run(c)) < 0) {
			if (!c->done)
				c->skipped = "failed to run";
			if (e != -EINTR && ret == 0)
				ret = e;
		}
	}
	if (broker_up)
		broker_stop(&gp_broker);
	return bench_signal ? -EINTR : ret;
}
