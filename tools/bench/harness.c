/*
 * harness.c: one timed run of a row: fork N processes, release them
 * together through a barrier in shared memory, let each run its loop for
 * a fixed duration, collect what each did; and the median of runs.
 */
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* Shared with the forked processes of a run; one line per writer. */
struct shm {
	alignas(64) _Atomic uint32_t go;	/* futex: the barrier */
	alignas(64) _Atomic uint32_t stop;	/* read by every loop */
	alignas(64) _Atomic uint32_t ready; /* processes at the barrier */
	struct wslot {
		alignas(64) uint64_t ops;
		uint64_t	retries;
		uint64_t	refused;
		uint64_t	t0_ns, t1_ns;
		uint64_t	cpu_ns;	/* CPU time of the loop */
		int32_t		status;	/* 0, or setup's -errno */
	} w[BENCH_PROCS_MAX];
};

static struct shm *shm;

uint64_t
now_ns_bench(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Sleep ns, cut short by a signal the bench was sent. */
void
sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u),
	    (long)(ns % 1000000000u) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !bench_signal)
		;
}

int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

void *
shared_alloc(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED |
	    MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

int
harness_init(void)
{
	if ((shm = shared_alloc(sizeof(*shm))) == NULL)
		return -errno;
	return 0;
}

/*
 * Whether name is to be measured: --only is a comma list of prefixes
 * ("tg", "floor-gcra,alt-mutex").
 */
int
bench_match(const char *name)
{
	const char *p = opt.only, *e;
	size_t len;

	if (p == NULL || *p == '\0')
		return 1;
	for (; *p; p = *e ? e + 1 : e) {
		e = strchrnul(p, ',');
		len = (size_t)(e - p);
		if (len > 0 && strncmp(name, p, len) == 0)
			return 1;
	}
	return 0;
}

/*
 * Wait for pid up to timeout_ns; SIGKILL it after that.  Returns its
 * exit status, 128 + signal, or -1.
 */
int
wait_child(pid_t pid, uint64_t timeout_ns)
{
	uint64_t end = now_ns_bench() + timeout_ns;
	pid_t r;
	int st;

	for (;;) {
		r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) :
			    128 + WTERMSIG(st);
		if (r < 0 && errno != EINTR)
			return -1;
		if (now_ns_bench() > end) {
			kill(pid, SIGKILL);
			if (waitpid(pid, &st, 0) == pid)
				return 128 + SIGKILL;
			return -1;
		}
		sleep_ns(1000000);
	}
}

/* This process's CPU time, ns. */
static uint64_t
cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long
futex(_Atomic uint32_t *w, int op, uint32_t val)
{
	return syscall(SYS_futex, w, op, val, NULL, NULL, 0);
}

/*
 * Pin the i-th process of a run to the i-th CPU we may use, round robin:
 * two processes on a 2-CPU machine then always contend from two CPUs
 * (unpinned, the scheduler sometimes stacks them on one, and the figure
 * at 2 processes flips between two regimes from run to run).
 */
static void
pin(unsigned i)
{
	cpu_set_t allowed, one;
	unsigned n = 0;

	if (!opt.pin || sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
		return;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &allowed))
			n++;
	if (n == 0)
		return;
	i %= n;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &allowed) && i-- == 0) {
			CPU_ZERO(&one);
			CPU_SET(cpu, &one);
			(void)sched_setaffinity(0, sizeof(one), &one);
			return;
		}
}

/* One process of a run; never returns. */
static void __attribute__((noreturn))
worker(struct row *r, unsigned i, pid_t parent)
{
	struct wslot *ws = &shm->w[i];
	struct loop_out out = { 0, NA, 0 };
	void *ctx = NULL;
	uint64_t c0;
	int e;

	/* The parent's death (SIGKILL) must not leave loops spinning. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	signal(SIGINT, SIG_IGN);	/* the parent ends us by `stop' */
	pin(i);
	if ((e = r->setup(r->arg, &ctx)) < 0) {
		ws->status = e;
		atomic_fetch_add(&shm->ready, 1);
		_exit(2);
	}
	atomic_fetch_add(&shm->ready, 1);
	while (atomic_load(&shm->go) == 0)
		futex(&shm->go, FUTEX_WAIT, 0);
	c0 = cpu_ns();
	ws->t0_ns = now_ns_bench();
	r->loop(ctx, &shm->stop, &out);
	ws->t1_ns = now_ns_bench();
	ws->cpu_ns = cpu_ns() - c0;
	ws->ops = out.ops;
	ws->retries = out.retries;
	ws->refused = out.refused;
	if (r->teardown != NULL)
		r->teardown(ctx);
	_exit(0);
}

/*
 * Run row r at opt.procs[pi] processes once, as run number `run'.
 * Returns 0, or -errno (a process failed to set up or died, or a signal
 * came).
 */
int
harness_run(struct row *r, unsigned pi, unsigned run)
{
	struct run_result *rr = &r->res[pi][run];
	unsigned n = opt.procs[pi], i, started = 0;
	pid_t pids[BENCH_PROCS_MAX], parent = getpid();
	uint64_t end, t0 = UINT64_MAX, t1 = 0, rate, lo = UINT64_MAX, hi = 0;
	int ret = 0, st;

	memset(rr, 0, sizeof(*rr));
	memset(shm, 0, sizeof(*shm));
	for (i = 0; i < n; i++) {
		if ((pids[i] = fork()) < 0) {
			ret = -errno;
			break;
		}
		if (pids[i] == 0)
			worker(r, i, parent);
		started++;
	}
	/* Everyone set up, or a timeout, a death, a signal. */
	end = now_ns_bench() + 20000000000ull;
	while (ret == 0 && atomic_load(&shm->ready) < started) {
		if (bench_signal || now_ns_bench() > end)
			ret = bench_signal ? -EINTR : -ETIMEDOUT;
		for (i = 0; i < started && ret == 0; i++)
			if (waitpid(pids[i], &st, WNOHANG) == pids[i]) {
				pids[i] = 0;
				ret = -ECHILD;
			}
		if (ret == 0)
			sleep_ns(200000);
	}
	for (i = 0; i < started && ret == 0; i++)
		if (shm->w[i].status < 0)
			ret = shm->w[i].status;
	if (ret == 0) {
		atomic_store(&shm->go, 1);
		futex(&shm->go, FUTEX_WAKE, INT_MAX);
		sleep_ns(opt.duration_ns);
		if (bench_signal)
			ret = -EINTR;
	}
	atomic_store(&shm->stop, 1);
	if (ret < 0)
		atomic_store(&shm->go, 1), futex(&shm->go, FUTEX_WAKE,
		    INT_MAX);
	for (i = 0; i < started; i++) {
		if (pids[i] == 0)
			continue;
		st = wait_child(pids[i], ret < 0 ? 2000000000ull :
		    30000000000ull);
		if (st != 0 && ret == 0)
			ret = shm->w[i].status < 0 ? shm->w[i].status : -ECHILD;
	}
	if (ret < 0)
		return ret;
	for (i = 0; i < n; i++) {
		struct wslot *ws = &shm->w[i];
		uint64_t el = ws->t1_ns - ws->t0_ns;

		rr->ops += ws->ops;
		rr->proc_ns += el;
		rr->cpu_ns += ws->cpu_ns;
		rr->refused += ws->refused;
		if (ws->retries == NA || rr->retries == NA)
			rr->retries = NA;
		else
			rr->retries += ws->retries;
		if (ws->t0_ns < t0)
			t0 = ws->t0_ns;
		if (ws->t1_ns > t1)
			t1 = ws->t1_ns;
		/* ops per second, in integers: ops * 1e9 / el */
		rate = el ? (uint64_t)((double)ws->ops * 1e9 / (double)el) : 0;
		if (rate < lo)
			lo = rate;
		if (rate > hi)
			hi = rate;
	}
	if (rr->ops == 0)
		return -ENODATA;
	rr->span_ns = t1 - t0;
	rr->fair = hi ? (double)lo / (double)hi : 0;
	rr->done = 1;
	return 0;
}

/* The run with the median ns/op of those done, as the table shows it. */
void
row_figure(const struct row *r, unsigned pi, struct figure *f)
{
	const struct run_result *rr = r->res[pi], *pick;
	double v[BENCH_RUNS_MAX], med;
	unsigned n = 0, i, j;

	memset(f, 0, sizeof(*f));
	for (i = 0; i < opt.runs; i++)
		if (rr[i].done)
			v[n++] = (double)rr[i].proc_ns / (double)rr[i].ops;
	if (n == 0)
		return;
	/* Sort a copy; the median of an even count is the lower one. */
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && v[j - 1] > v[j]; j--) {
			double t = v[j];

			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	med = v[(n - 1) / 2];
	for (pick = NULL, i = 0; i < opt.runs && pick == NULL; i++)
		if (rr[i].done && (double)rr[i].proc_ns / (double)rr[i].ops ==
		    med)
			pick = &rr[i];
	f->ok = 1;
	f->ns_per_op = med;
	f->mops = (double)pick->ops * 1e3 / (double)pick->span_ns;
	f->cpu_ns_per_op = (double)pick->cpu_ns / (double)pick->ops;
	f->retries_per_op = pick->retries == NA ? -1 :
	    (double)pick->retries / (double)pick->ops;
	f->fair = pick->fair;
	f->ops = pick->ops;
	f->refused = pick->refused;
}

/* Sort the samples and take the percentiles (nearest rank). */
void
lat_finish(struct latency *l)
{
	if (l->n == 0)
		return;
	qsort(l->samples, l->n, sizeof(*l->samples), cmp_u64);
	l->min_ns = l->samples[0];
	l->p50_ns = l->samples[(l->n * 50 + 99) / 100 - 1];
	l->p99_ns = l->samples[(l->n * 99 + 99) / 100 - 1];
	l->max_ns = l->samples[l->n - 1];
}
