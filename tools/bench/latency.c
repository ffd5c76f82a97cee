/*
 * latency.c: how long a sleeper waits past the moment it could go on.
 *
 * Wake-up: two processes hand one lease (concurrency = 1) back and
 * forth.  The holder waits until the other sleeps in tg_acquire (the
 * limit's `waiting' flag is set and /proc says it sleeps), stamps the
 * time, calls tg_release; the sleeper stamps when tg_acquire returns.
 *
 * Reclaim: children hold every lease of a key (concurrency = 10); the
 * bench waits until the broker watches each one's pidfd (its -d log
 * says so), then for each: stamp, SIGKILL, and a tg_acquire that returns
 * once the broker has freed the dead child's lease and woken it.
 */
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tollgate.h"

#include "bench.h"
#include "client.h"
#include "seg.h"

#define RECLAIM_BATCH	10	/* the reclaim key's concurrency */
#define WAIT_NS		2000000000ll

/* The state line of the concurrency limit of key handle h. */
static struct seg_lstate *
conc_lstate(const tg_client *c, uint32_t h)
{
	struct chain ch;

	if (chain_read(c, h, &ch) < 0)
		return NULL;
	for (unsigned i = 0; i < ch.nlim; i++)
		if (ch.lim[i].kind == LIM_CONC)
			return &seg_lstates(&c->m)[ch.lim[i].id];
	return NULL;
}

/* The state letter of /proc/PID/stat ('S': sleeping), or 0. */
static char
proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* After the last ')': the name may hold anything. */
	if ((p = strrchr(buf, ')')) == NULL || p[1] != ' ')
		return 0;
	return p[2];
}

struct wake_shm {
	_Atomic int32_t		pid[2];
	_Atomic uint32_t	ready;
	_Atomic uint32_t	fail;
	_Atomic uint32_t	round;		/* handoffs completed */
	_Atomic uint64_t	stamp_ns; /* the holder's, before release */
	uint64_t		sample[];
};

/* One of the two processes; i == 0 holds first.  Never returns. */
static void __attribute__((noreturn))
wake_proc(struct wake_shm *w, unsigned i, unsigned n, const char *segment)
{
	struct seg_lstate *ls;
	tg_client *c = NULL;
	tg_ticket t;
	uint32_t key;
	uint64_t end, t1;
	unsigned k;
	int holding = 0;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	memset(&t, 0, sizeof(t));
	if (tg_open(segment, &c) < 0 || tg_key(c, "wake", &key) < 0 ||
	    (ls = conc_lstate(c, key)) == NULL)
		goto fail;
	atomic_store(&w->pid[i], getpid());
	if (i == 0) {
		if (tg_try_acquire(c, key, NULL, &t, NULL) != 0)
			goto fail;
		holding = 1;
	}
	atomic_fetch_add(&w->ready, 1);
	end = clock_ns() + 10000000000ull;
	while (atomic_load(&w->ready) < 2)
		if (atomic_load(&w->fail) || clock_ns() > end)
			goto fail;
		else
			sched_yield();
	for (k = 0; k < n && !atomic_load(&w->fail); k++) {
		if ((k & 1) == i) {
			pid_t other = atomic_load(&w->pid[1 - i]);

			/* The other sleeps in tg_acquire: announced, asleep. */
			end = clock_ns() + 2000000000ull;
			while (atomic_load(&ls->waiting) == 0 ||
			    proc_state(other) != 'S') {
				if (atomic_load(&w->fail) || clock_ns() > end)
					goto fail;
				sched_yield();
			}
			atomic_store(&w->stamp_ns, clock_ns());
			tg_release(c, &t);
			holding = 0;
			/* Not ours again before the woken one has it. */
			while (atomic_load(&w->round) <= k) {
				if (atomic_load(&w->fail) || clock_ns() > end)
					goto fail;
				sched_yield();
			}
		} else {
			if (tg_acquire(c, key, NULL, WAIT_NS, &t) != 0)
				goto fail;
			t1 = clock_ns();
			holding = 1;
			w->sample[k] = t1 - atomic_load(&w->stamp_ns);
			atomic_store(&w->round, k + 1);
		}
	}
	if (holding)
		tg_release(c, &t);
	tg_close(c);
	_exit(atomic_load(&w->fail) ? 1 : 0);
fail:
	atomic_store(&w->fail, 1);
	if (holding)
		tg_release(c, &t);
	tg_close(c);
	_exit(1);
}

int
latency_wakeup(struct latency *l, const struct broker *b)
{
	struct wake_shm *w;
	size_t sz;
	pid_t pid[2];
	int st[2] = { -1, -1 }, ret = 0;

	l->n = 0;
	if (opt.handoffs == 0 || opt.handoffs > BENCH_LAT_MAX)
		return -EINVAL;
	sz = sizeof(*w) + opt.handoffs * sizeof(uint64_t);
	if ((w = shared_alloc(sz)) == NULL ||
	    (l->samples = calloc(opt.handoffs, sizeof(uint64_t))) == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < 2; i++) {
		if ((pid[i] = fork()) < 0) {
			atomic_store(&w->fail, 1);
			if (i == 1)
				wait_child(pid[0], 5000000000ull);
			return -errno;
		}
		if (pid[i] == 0)
			wake_proc(w, i, opt.handoffs, b->segment);
	}
	/* Each handoff takes well under 2 s, or its process gives up. */
	for (unsigned i = 0; i < 2; i++)
		st[i] = wait_child(pid[i], (uint64_t)opt.handoffs *
		    2000000000ull + 10000000000ull);
	if (st[0] != 0 || st[1] != 0 || atomic_load(&w->fail))
		ret = -ECHILD;
	else {
		memcpy(l->samples, w->sample, opt.handoffs * sizeof(uint64_t));
		l->n = opt.handoffs;
		lat_finish(l);
	}
	munmap(w, sz);
	return ret;
}

/* A child that holds one lease of `reclaim' until it is killed. */
static void __attribute__((noreturn))
holder(int wfd, const char *segment)
{
	tg_client *c;
	tg_ticket t;
	uint32_t key;
	char ok = 'f';

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	memset(&t, 0, sizeof(t));
	if (tg_open(segment, &c) == 0 && tg_key(c, "reclaim", &key) == 0 &&
	    tg_try_acquire(c, key, NULL, &t, NULL) == 0)
		ok = 'k';
	if (write(wfd, &ok, 1) != 1 || ok != 'k')
		_exit(1);
	for (;;)
		pause();
}

/* One batch of nb kills, samples into s; 0 or -errno. */
static int
reclaim_batch(const struct broker *b, tg_client *c, uint32_t key,
    unsigned nb, uint64_t *s)
{
	pid_t kids[RECLAIM_BATCH];
	tg_ticket t[RECLAIM_BATCH];
	unsigned i, started = 0, got = 0, seen;
	uint64_t t0, deadline;
	int p[2], ret = 0;
	char buf[RECLAIM_BATCH];
	ssize_t n;

	memset(t, 0, sizeof(t));
	if (pipe(p) < 0)
		return -errno;
	for (i = 0; i < nb; i++) {
		if ((kids[i] = fork()) < 0) {
			ret = -errno;
			break;
		}
		if (kids[i] == 0) {
			close(p[0]);
			holder(p[1], b->segment);
		}
		started++;
	}
	close(p[1]);
	/* Each says it holds its lease (or failed: EOF or 'f'). */
	while (got < started && (n = read(p[0], buf + got, started - got)) !=
	    0) {
		if (n < 0 && errno == EINTR && !bench_signal)
			continue;
		if (n < 0)
			break;
		got += (unsigned)n;
	}
	close(p[0]);
	for (i = 0; i < got; i++)
		if (buf[i] != 'k')
			ret = -EPROTO;
	if (got < started && ret == 0)
		ret = -ECHILD;
	/* Killed before the broker watches it, it is found on a tick. */
	deadline = now_ns_bench() + 5000000000ull;
	do {
		for (seen = 0, i = 0; i < started; i++)
			seen += broker_tracks(b, kids[i]);
		if (seen < started)
			sleep_ns(2000000);
	} while (ret == 0 && seen < started && now_ns_bench() < deadline &&
	    !bench_signal);
	if (ret == 0 && seen < started)
		ret = bench_signal ? -EINTR : -ETIMEDOUT;
	for (i = 0; i < started; i++) {
		if (ret == 0) {
			t0 = clock_ns();
			kill(kids[i], SIGKILL);
			if (tg_acquire(c, key, NULL, WAIT_NS, &t[i]) != 0)
				ret = -ETIMEDOUT;
			else
				s[i] = clock_ns() - t0;
		} else
			kill(kids[i], SIGKILL);
		wait_child(kids[i], 5000000000ull);
	}
	for (i = 0; i < started; i++)
		tg_release(c, &t[i]);
	return ret;
}

int
latency_reclaim(struct latency *l, const struct broker *b)
{
	tg_client *c;
	uint32_t key;
	unsigned done, nb;
	int r;

	l->n = 0;
	if (opt.kills == 0 || opt.kills > BENCH_LAT_MAX)
		return -EINVAL;
	if ((l->samples = calloc(opt.kills, sizeof(uint64_t))) == NULL)
		return -ENOMEM;
	if ((r = tg_open(b->segment, &c)) < 0)
		return r;
	if ((r = tg_key(c, "reclaim", &key)) < 0) {
		tg_close(c);
		return r;
	}
	for (done = 0; done < opt.kills && r == 0; done += nb) {
		nb = opt.kills - done < RECLAIM_BATCH ? opt.kills - done :
		    RECLAIM_BATCH;
		r = reclaim_batch(b, c, key, nb, l->samples + done);
	}
	tg_close(c);
	if (r < 0)
		return r;
	l->n = opt.kills;
	lat_finish(l);
	return 0;
}
