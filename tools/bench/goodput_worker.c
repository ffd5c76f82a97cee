/*
 * goodput_worker.c: a goodput worker: its limiter (none, a GCRA of its
 * own, the GCRA in Redis, tollgate), its keep-alive HTTP/1.1 connection
 * to the provider, and the loop that takes jobs from the shared batch
 * until none is left or the cell's bound has passed.
 */
#include <linux/futex.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tollgate.h"

#include "bench.h"
#include "goodput.h"

#define ATTEMPTS_MAX	64		/* requests for one job */
#define JITTER_BASE_NS	(50 * MS)	/* full jitter: 50 ms, doubling */
#define JITTER_CAP_NS	(2 * S)		/* up to 2 s */

/* What a worker limits with; filled in the worker, after fork. */
struct limiter {
	const struct gp_cell *cell;
	tg_client	*tg;
	uint32_t	key;
	tg_ticket	t;
	void		*redis;
	char		rkey[64];
	uint64_t	cost_ns;	/* GCRA: the interval of one unit */
	uint64_t	tau_ns;		/* and the bucket, in time */
	uint64_t	tat_ns;		/* the per-process GCRA's */
	uint64_t	seed;
};

/* xorshift64*: the jitter; each worker seeds its own. */
static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/*
 * The GCRA of the alternatives: the provider's rate, times the config's
 * factor, shared or per process (divided by the workers).  A window
 * provider gets the window's count as a rate with no burst: a bucket of
 * its count would let twice the window through in one.
 */
static void
gcra_params(const struct gp_cell *c, unsigned share, uint64_t *cost,
    uint64_t *tau)
{
	const struct gp_model *m = c->model;
	unsigned n = m->rate_n ? m->rate_n : m->window_n;
	uint64_t per = m->rate_n ? m->rate_ns : m->window_ns;
	unsigned burst = m->rate_n ? m->burst * c->factor : 1;

	*cost = per * share / ((uint64_t)n * c->factor);
	burst /= share;
	*tau = (burst ? burst : 1) * *cost;
}

/* Wait for the limiter's permission; 0, or -ETIMEDOUT past the bound. */
static int
limiter_wait(struct limiter *l)
{
	uint64_t now, next;
	int64_t r;
	int e;

	switch (l->cell->strategy) {
	case ST_LOCAL:
		now = clock_ns();
		next = (l->tat_ns > now ? l->tat_ns : now) + l->cost_ns;
		if (next - now > l->tau_ns)
			sleep_ns(next - now - l->tau_ns);
		l->tat_ns = next;
		return 0;
	case ST_REDIS:
		while ((now = clock_ns()) < gp_shm->deadline_ns) {
			r = redis_gcra_take(l->redis, l->rkey, l->cost_ns /
			    1000, l->tau_ns / 1000);
			if (r == 0)
				return 0;
			if (r < 0)
				return (int)r;
			sleep_ns((uint64_t)r * 1000);
		}
		return -ETIMEDOUT;
	case ST_TG:
		now = clock_ns();
		if (now >= gp_shm->deadline_ns)
			return -ETIMEDOUT;
		e = tg_acquire(l->tg, l->key, NULL,
		    (int64_t)(gp_shm->deadline_ns - now), &l->t);
		return e;
	default:
		return 0;
	}
}

/* The value of header name in the block, as seconds; < 0: absent. */
static double
header_seconds(const char *h, const char *name)
{
	char want[64];
	const char *p;

	snprintf(want, sizeof(want), "\r\n%s:", name);
	if ((p = strcasestr(h, want)) == NULL)
		return -1;
	return strtod(p + strlen(want), NULL);
}

/*
 * After a refusal, the alternatives do what client libraries do: wait
 * the retry-after the server gave, else a full-jitter exponential
 * backoff (uniform in [0, min(cap, base * 2^attempt))).
 */
static void
retry_wait(struct limiter *l, const char *h, unsigned attempt)
{
	double ra = header_seconds(h, "retry-after");
	uint64_t cap = JITTER_BASE_NS << (attempt < 10 ? attempt : 10);

	if (ra >= 0) {
		sleep_ns((uint64_t)(ra * 1e9));
		return;
	}
	if (cap > JITTER_CAP_NS)
		cap = JITTER_CAP_NS;
	sleep_ns(rnd(&l->seed) % cap);
}

static int
write_all(int fd, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		if ((w = write(fd, p, n)) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/*
 * One request on the worker's connection: its status, and its header
 * block (the status line and every header, ended by the blank line) in
 * h, NUL-terminated, of *hlen bytes.  -errno if the exchange failed.
 */
static int
http_call(int fd, unsigned worker, char *h, size_t hsize, size_t *hlen)
{
	char req[160], *end, *cl;
	size_t len = 0, body = 0, want;
	ssize_t n;
	int e, status;

	snprintf(req, sizeof(req), "POST /v1/jobs HTTP/1.1\r\n"
	    "host: 127.0.0.1\r\nx-worker: %u\r\ncontent-length: 0\r\n\r\n",
	    worker);
	if ((e = write_all(fd, req, strlen(req))) < 0)
		return e;
	for (;;) {
		if (len == hsize - 1)
			return -EMSGSIZE;
		if ((n = read(fd, h + len, hsize - 1 - len)) <= 0)
			return n == 0 ? -ECONNRESET : -errno;
		len += (size_t)n;
		h[len] = '\0';
		if ((end = strstr(h, "\r\n\r\n")) != NULL)
			break;
	}
	*hlen = (size_t)(end + 4 - h);
	if (sscanf(h, "HTTP/1.1 %d", &status) != 1)
		return -EPROTO;
	if ((cl = strcasestr(h, "\r\ncontent-length:")) != NULL && cl < end)
		body = strtoul(cl + 17, NULL, 10);
	/* Read the rest of the body; the next response starts afresh. */
	want = *hlen + body;
	while (len < want && len < hsize - 1) {
		if ((n = read(fd, h + len, hsize - 1 - len)) <= 0)
			return n == 0 ? -ECONNRESET : -errno;
		len += (size_t)n;
	}
	h[*hlen] = '\0';
	return status;
}

static int
connect_provider(int port)
{
	struct sockaddr_in a;
	struct timeval tv = { 10, 0 };	/* a read never waits longer */
	int fd, one = 1;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

static int
limiter_setup(struct limiter *l, const struct gp_cell *c, unsigned i)
{
	char key[64];
	int e;

	memset(l, 0, sizeof(*l));
	l->cell = c;
	l->seed = (clock_ns() ^ ((uint64_t)getpid() << 32)) | 1;
	switch (c->strategy) {
	case ST_LOCAL:
		gcra_params(c, GP_WORKERS, &l->cost_ns, &l->tau_ns);
		break;
	case ST_REDIS:
		gcra_params(c, 1, &l->cost_ns, &l->tau_ns);
		snprintf(l->rkey, sizeof(l->rkey), "tollbench:%s", c->name);
		if ((l->redis = redis_gcra_connect()) == NULL)
			return -ECONNREFUSED;
		break;
	case ST_TG:
		snprintf(key, sizeof(key), "gp-%s-%ux", c->model->name,
		    c->factor);
		if ((e = tg_open(gp_segment, &l->tg)) < 0)
			return e;
		if ((e = tg_key(l->tg, key, &l->key)) < 0)
			return e;
		break;
	}
	(void)i;
	return 0;
}

/*
 * One job to its 200: wait for the limiter, send, read, tell tollgate,
 * and on a refusal go again.  1 done, 0 not (the bound), -errno.
 */
static int
run_job(struct limiter *l, int fd, unsigned i, uint32_t j)
{
	uint64_t taken = gp_shm->job[j].taken_ns;
	struct gp_wout *w = &gp_shm->w[i];
	char h[4096];
	size_t hlen = 0;
	uint64_t sent;
	int e, st, advice;

	for (unsigned attempt = 0; attempt < ATTEMPTS_MAX; attempt++) {
		if (atomic_load_explicit(&gp_shm->stop, memory_order_relaxed) ||
		    clock_ns() >= gp_shm->deadline_ns)
			return 0;
		if ((e = limiter_wait(l)) == -ETIMEDOUT)
			return 0;
		if (e < 0)
			return e;
		sent = clock_ns();
		st = http_call(fd, i, h, sizeof(h), &hlen);
		w->requests++;
		advice = TG_OK;
		if (l->cell->strategy == ST_TG) {
			if (st > 0)
				advice = tg_observe(l->tg, &l->t, st, h, hlen);
			tg_release(l->tg, &l->t);
		}
		if (st < 0)
			return st;
		if (st == 200) {
			gp_shm->job[j].sent_ns = sent;
			if (sent - taken > w->max_wait_ns)
				w->max_wait_ns = sent - taken;
			return 1;
		}
		if (l->cell->strategy == ST_TG) {
			/* TG_RETRY: the pause is in place; tg_acquire waits. */
			if (advice != TG_RETRY)
				return -EPROTO;
		} else
			retry_wait(l, h, attempt);
	}
	return 0;
}

void
gp_worker(const struct gp_cell *c, unsigned i, int port, pid_t parent)
{
	struct gp_wout *w = &gp_shm->w[i];
	struct limiter l;
	unsigned total = gp_jobs(c->model);
	uint32_t j;
	int fd, e;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	signal(SIGINT, SIG_IGN);	/* the parent ends us */
	if ((fd = connect_provider(port)) < 0 || (e = limiter_setup(&l, c,
	    i)) < 0) {
		w->status = fd < 0 ? fd : e;
		atomic_fetch_add(&gp_shm->ready, 1);
		_exit(2);
	}
	atomic_fetch_add(&gp_shm->ready, 1);
	while (atomic_load(&gp_shm->go) == 0)
		gp_futex(&gp_shm->go, FUTEX_WAIT, 0);
	while ((j = atomic_fetch_add(&gp_shm->next_job, 1)) < total) {
		gp_shm->job[j].taken_ns = clock_ns();
		if ((e = run_job(&l, fd, i, j)) <= 0) {
			w->status = e;
			break;
		}
		w->jobs++;
		w->last_done_ns = clock_ns();
	}
	if (l.tg != NULL)
		tg_close(l.tg);
	redis_gcra_close(l.redis);
	close(fd);
	_exit(w->status < 0 ? 3 : 0);
}
