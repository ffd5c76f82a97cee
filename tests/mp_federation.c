/*
 * mp_federation.c: brokers on "several hosts" share global keys through
 * Redis (issue 14): a real redis-server on a Unix socket in a temp dir,
 * several real tollgated brokers (one segment and host_id each), real
 * worker processes.  The fleet's grants are stamped on CLOCK_MONOTONIC,
 * which every process here shares, and checked afterwards: the bound in
 * every sliding window, utilisation, shares, pauses, outages.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <errno.h>
#include <limits.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "helpers.h"
#include "seg.h"
#include "tollgate.h"

#define MS	1000000ull
#define NS	1000000000ull
#define HOSTS	3
#define WORKERS	4			/* per host */
#define STAMPS	4096			/* grants one worker records */

/* The documented bound (broker/fed.c) for 600/min burst 10, 3 hosts. */
#define RATE_PER_S	10
#define BURST		10
#define BOUND_E		10		/* min(k N S, r L) = min(18, 10) */

struct redis {
	pid_t	pid;
	char	dir[64];
	char	sock[PATH_MAX];
};

/* What a worker stamped: grant times, CLOCK_MONOTONIC ns. */
struct stamps {
	_Atomic uint64_t n;
	uint64_t	t[STAMPS];
};

struct fleet {
	struct redis	 r;
	struct tbroker	 tb[HOSTS];
	int		 nb;
	struct stamps	*st;		/* [HOSTS * WORKERS], shared */
	pid_t		 w[HOSTS * WORKERS];
	int		 nw;
};

static const char *skip_why;
static struct fleet *running;		/* for the teardown of a failure */
static int tearing;			/* in that teardown */

static int
redis_ping(const struct redis *r)
{
	struct timeval tv = { 0, 200000 };
	redisContext *c = redisConnectUnixWithTimeout(r->sock, tv);
	redisReply *rep;
	int ok = 0;

	if (c == NULL)
		return 0;
	if (c->err == 0 && (rep = redisCommand(c, "PING")) != NULL) {
		ok = rep->type == REDIS_REPLY_STATUS;
		freeReplyObject(rep);
	}
	redisFree(c);
	return ok;
}

/* Start (or restart, same dir and socket) redis-server; 0 or -errno. */
static int
redis_run(struct redis *r)
{
	char log[PATH_MAX];
	uint64_t deadline;

	snprintf(log, sizeof(log), "%s/redis.log", r->dir);
	if ((r->pid = fork()) < 0)
		return -errno;
	if (r->pid == 0) {
		execlp("redis-server", "redis-server", "--port", "0",
		    "--unixsocket", r->sock, "--unixsocketperm", "700",
		    "--save", "", "--appendonly", "no", "--dir", r->dir,
		    "--logfile", log, (char *)NULL);
		_exit(127);
	}
	deadline = tb_now_ns() + 10 * NS;
	while (tb_now_ns() < deadline) {
		if (redis_ping(r))
			return 0;
		if (waitpid(r->pid, NULL, WNOHANG) == r->pid) {
			r->pid = 0;
			return -ECHILD;
		}
		tb_sleep_ns(10 * MS);
	}
	return -ETIMEDOUT;
}

static int
redis_start(struct redis *r)
{
	char tmpl[] = "/tmp/tgfed.XXXXXX";

	memset(r, 0, sizeof(*r));
	if (mkdtemp(tmpl) == NULL)
		return -errno;
	snprintf(r->dir, sizeof(r->dir), "%s", tmpl);
	snprintf(r->sock, sizeof(r->sock), "%s/redis.sock", r->dir);
	return redis_run(r);
}

static void
redis_kill(struct redis *r)
{
	if (r->pid <= 0)
		return;
	kill(r->pid, SIGKILL);
	waitpid(r->pid, NULL, 0);
	r->pid = 0;
	unlink(r->sock);
}

static void
redis_cleanup(struct redis *r)
{
	char cmd[PATH_MAX + 16];

	redis_kill(r);
	if (r->dir[0] != '\0') {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", r->dir);
		(void)system(cmd);
	}
}

/* One command to Redis; 0 if it answered without an error. */
static int
redis_cmd(const struct redis *r, const char *cmd)
{
	redisContext *c = redisConnectUnix(r->sock);
	redisReply *rep;
	int ok = -1;

	if (c == NULL)
		return -1;
	if (c->err == 0 && (rep = redisCommand(c, cmd)) != NULL) {
		ok = rep->type == REDIS_REPLY_ERROR ? -1 : 0;
		freeReplyObject(rep);
	}
	redisFree(c);
	return ok;
}

/* Whether redis-server can run here: skip() with a reason if not. */
static int
have_redis(void)
{
	if (system("command -v redis-server >/dev/null 2>&1") != 0) {
		skip_why = "redis-server is not installed (make deps)";
		return 0;
	}
	return 1;
}

/*
 * Start Redis and n brokers, each with `keys' under a [broker] part of
 * its own (host h<i>, outage mode `mode'), and wait until each has
 * connected.  Skips the test when the machine cannot.
 */
static void
fleet_start(struct fleet *f, int n, const char *mode, const char *keys)
{
	char body[PATH_MAX + 2048];
	uint64_t deadline;
	int r;

	memset(f, 0, sizeof(*f));
	running = f;
	if (!have_redis()) {
		print_message("skipped: %s\n", skip_why);
		skip();
	}
	assert_int_equal(redis_start(&f->r), 0);
	for (int i = 0; i < n; i++) {
		snprintf(body, sizeof(body), "redis = unix:%s\nhost_id = h%d\n"
		    "federation = t%d\nredis_outage = %s\n\n%s", f->r.sock, i,
		    (int)getpid(), mode, keys);
		r = tb_start(&f->tb[i], body);
		if (r == -ENOSYS) {
			redis_cleanup(&f->r);
			print_message("skipped: no io_uring for the broker\n");
			skip();
		}
		assert_int_equal(r, 0);
		f->nb++;
	}
	deadline = tb_now_ns() + 10 * NS;
	for (int i = 0; i < n; i++)
		while (tb_log_count(&f->tb[i], "federation: Redis at") < 1 ||
		    tb_log_count(&f->tb[i], "connected") < 1) {
			assert_true(tb_now_ns() < deadline);
			tb_sleep_ns(10 * MS);
		}
	f->st = tb_shared(sizeof(struct stamps) * HOSTS * WORKERS);
}

static void
fleet_stop(struct fleet *f)
{
	int st = 0, bad = 0;

	running = NULL;
	for (int i = 0; i < f->nw; i++)
		if (f->w[i] > 0) {
			kill(f->w[i], SIGKILL);
			waitpid(f->w[i], NULL, 0);
		}
	for (int i = 0; i < f->nb; i++) {
		char line[256];
		FILE *lf;

		/*
		 * Stopped first: it says how often its thread was late; and
		 * it stops cleanly (a sanitizer's report would not).
		 */
		if (f->tb[i].pid > 0 && (st = tb_stop(&f->tb[i])) != 0)
			print_message("  h%d: broker exit status %d\n", i, st);
		bad |= st != 0;
		st = 0;
		if ((lf = fopen(f->tb[i].log, "r")) != NULL) {
			while (fgets(line, sizeof(line), lf) != NULL)
				if (strstr(line, "cap lapses") != NULL)
					print_message("  h%d: %s", i, line);
			fclose(lf);
		}
		tb_cleanup(&f->tb[i]);
	}
	redis_cleanup(&f->r);
	if (f->st != NULL)
		munmap(f->st, sizeof(struct stamps) * HOSTS * WORKERS);
	/* Not after a failure: the test has failed already. */
	if (!tearing)
		assert_false(bad);
}

/* A failed assert leaves the test at once: stop what it started. */
static int
teardown(void **state)
{
	(void)state;
	tearing = 1;
	if (running != NULL)
		fleet_stop(running);
	tearing = 0;
	return 0;
}

/*
 * A worker on host h until end_ns: take a ticket of `key', stamp it,
 * release it, and wait gap_ns (its offered rate); refused, try again
 * within 1 ms (backlogged demand).
 */
static void
worker_run(const char *segment, const char *key, uint64_t end_ns,
    uint64_t gap_ns, struct stamps *st)
{
	tg_cost cost = { .requests = 1 };
	tg_client *c;
	uint32_t k;

	if (tg_open(segment, &c) < 0 || tg_key(c, key, &k) < 0)
		_exit(2);
	while (tb_now_ns() < end_ns) {
		tg_ticket t;
		uint64_t retry = 0, n;

		if (tg_try_acquire(c, k, &cost, &t, &retry) == 0) {
			n = atomic_load(&st->n);
			if (n < STAMPS)
				st->t[n] = tb_now_ns();
			atomic_store(&st->n, n + 1);
			tg_release(c, &t);
			if (gap_ns > 0)
				tb_sleep_ns(gap_ns);
		} else
			tb_sleep_ns(retry < MS ? retry + 1 : MS);
	}
	tg_close(c);
	_exit(0);
}

/* WORKERS workers on host h, offering rate_milli / 1000 grants a second. */
static void
workers_start(struct fleet *f, int h, const char *key, uint64_t end_ns,
    uint64_t rate_milli)
{
	uint64_t gap = rate_milli == 0 ? 0 :
	    NS * 1000 * WORKERS / rate_milli;

	for (int i = 0; i < WORKERS; i++) {
		pid_t p = fork();

		assert_true(p >= 0);
		if (p == 0)
			worker_run(f->tb[h].segment, key, end_ns, gap,
			    &f->st[h * WORKERS + i]);
		f->w[f->nw++] = p;
	}
}

static void
workers_wait(struct fleet *f)
{
	for (int i = 0; i < f->nw; i++) {
		assert_int_equal(tb_wait_child(f->w[i]), 0);
		f->w[i] = 0;
	}
	f->nw = 0;
}

static int
cmp64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Every stamp of hosts [h0, h1), sorted, into a new array; *n of them. */
static uint64_t *
merged(const struct fleet *f, int h0, int h1, size_t *n)
{
	uint64_t *all;
	size_t k = 0;

	all = calloc((size_t)HOSTS * WORKERS * STAMPS, sizeof(*all));
	assert_non_null(all);
	for (int i = h0 * WORKERS; i < h1 * WORKERS; i++) {
		uint64_t c = atomic_load(&f->st[i].n);

		assert_true(c <= STAMPS);
		memcpy(all + k, f->st[i].t, c * sizeof(*all));
		k += c;
	}
	qsort(all, k, sizeof(*all), cmp64);
	*n = k;
	return all;
}

/* The most grants in any window of w_ns (each grant starting one). */
static size_t
max_in_window(const uint64_t *t, size_t n, uint64_t w_ns)
{
	size_t best = 0, j = 0;

	for (size_t i = 0; i < n; i++) {
		while (t[i] - t[j] >= w_ns)
			j++;
		if (i - j + 1 > best)
			best = i - j + 1;
	}
	return best;
}

static size_t
count_between(const uint64_t *t, size_t n, uint64_t a, uint64_t b)
{
	size_t c = 0;

	for (size_t i = 0; i < n; i++)
		c += t[i] >= a && t[i] < b;
	return c;
}

static const char rate_key[] =
    "[g]\nscope = global\nlimit = 600 requests/min burst 10\n";

/*
 * 3 brokers, 4 workers each, offering 3 times the limit split 70/20/10:
 * in every sliding window of W the fleet admits at most what the limit
 * allows in W (rate * W + burst) plus the bound E, and after warm-up at
 * least 95 % of the rate.
 */
static void
test_bound_and_utilisation(void **state)
{
	const uint64_t dur = 22 * NS, warm = 2 * NS, w = 6 * NS;
	uint64_t t0, *t, most, after;
	static struct fleet f;	/* outlives a failed assert */
	size_t n;

	(void)state;
	fleet_start(&f, HOSTS, "safe", rate_key);
	t0 = tb_now_ns();
	workers_start(&f, 0, "g", t0 + dur, 21000);	/* 70 % of 30/s */
	workers_start(&f, 1, "g", t0 + dur, 6000);	/* 20 % */
	workers_start(&f, 2, "g", t0 + dur, 3000);	/* 10 % */
	workers_wait(&f);
	t = merged(&f, 0, HOSTS, &n);
	most = max_in_window(t, n, w);
	after = count_between(t, n, t0 + warm, t0 + dur);
	print_message("fleet: %zu grants in %llu s; most in any %llu s: %llu "
	    "(allowed %d + %d + E %d); after warm-up %llu of %llu (%.1f %%)"
	    "\n", n, (unsigned long long)(dur / NS),
	    (unsigned long long)(w / NS), (unsigned long long)most,
	    (int)(RATE_PER_S * (w / NS)), BURST, BOUND_E,
	    (unsigned long long)after,
	    (unsigned long long)(RATE_PER_S * (dur - warm) / NS),
	    100.0 * (double)after / (double)(RATE_PER_S * (dur - warm) / NS));
	for (int h = 0; h < HOSTS; h++) {
		size_t hn;
		uint64_t *ht = merged(&f, h, h + 1, &hn);

		print_message("  host h%d: %zu grants\n", h, hn);
		free(ht);
	}
	assert_true(most <= RATE_PER_S * (w / NS) + BURST + BOUND_E);
	assert_true(n <= RATE_PER_S * (dur / NS) + BURST + BOUND_E);
	assert_true(after * 100 >= 95 * RATE_PER_S * (dur - warm) / NS);
	free(t);
	fleet_stop(&f);
}

/* Equal demand, every host backlogged: equal shares within 10 %. */
static void
test_equal_shares(void **state)
{
	const uint64_t dur = 22 * NS, warm = 2 * NS;
	uint64_t t0, got[HOSTS], sum = 0;
	static struct fleet f;	/* outlives a failed assert */

	(void)state;
	fleet_start(&f, HOSTS, "safe", rate_key);
	t0 = tb_now_ns();
	for (int h = 0; h < HOSTS; h++)
		workers_start(&f, h, "g", t0 + dur, 0);
	workers_wait(&f);
	for (int h = 0; h < HOSTS; h++) {
		size_t n;
		uint64_t *t = merged(&f, h, h + 1, &n);

		got[h] = count_between(t, n, t0 + warm, t0 + dur);
		sum += got[h];
		free(t);
	}
	print_message("shares after warm-up: %llu %llu %llu\n",
	    (unsigned long long)got[0], (unsigned long long)got[1],
	    (unsigned long long)got[2]);
	/* And together no more than the limit allows, with the bound. */
	assert_true(sum <= RATE_PER_S * (dur - warm) / NS + BURST + BOUND_E);
	for (int h = 0; h < HOSTS; h++) {
		assert_true(got[h] * HOSTS * 10 >= sum * 9);
		assert_true(got[h] * HOSTS * 10 <= sum * 11);
	}
	fleet_stop(&f);
}

/*
 * A 429 with retry-after: 2 seen on host h0 pauses the key on h1 and h2:
 * their workers are refused with about 2 s to wait, soon after.
 */
static void
test_pause_everywhere(void **state)
{
	static const char hdr[] = "retry-after: 2\r\n";
	tg_cost cost = { .requests = 1 };
	uint64_t t0, seen[HOSTS] = { 0 }, deadline, retry;
	struct seg_map m[HOSTS];
	static struct fleet f;	/* outlives a failed assert */
	tg_client *c;
	tg_ticket t;
	uint32_t k;
	int r;

	(void)state;
	fleet_start(&f, HOSTS, "safe", rate_key);
	for (int h = 1; h < HOSTS; h++)
		assert_int_equal(seg_attach(f.tb[h].segment, 0, &m[h]), 0);
	assert_int_equal(tg_open(f.tb[0].segment, &c), 0);
	assert_int_equal(tg_key(c, "g", &k), 0);
	/* A ticket on h0 (its first slice may take a lease). */
	deadline = tb_now_ns() + 5 * NS;
	while ((r = tg_try_acquire(c, k, &cost, &t, &retry)) != 0) {
		assert_true(tb_now_ns() < deadline);
		tb_sleep_ns(MS);
	}
	t0 = tb_now_ns();
	assert_true(tg_observe(c, &t, 429, hdr, sizeof(hdr) - 1) >= 0);
	tg_release(c, &t);
	/* Each other host's key shows the pause: when. */
	deadline = t0 + 5 * NS;
	while (tb_now_ns() < deadline && (seen[1] == 0 || seen[2] == 0)) {
		for (int h = 1; h < HOSTS; h++) {
			struct seg_kstate *ks = &seg_kstates(&m[h])[k & 0xffff];
			uint64_t u = atomic_load(&ks->paused_until_ns);

			if (seen[h] == 0 && u > tb_now_ns() + NS)
				seen[h] = tb_now_ns();
		}
		tb_sleep_ns(100000);
	}
	print_message("pause reached h1 after %.1f ms, h2 after %.1f ms\n",
	    (double)(seen[1] - t0) / 1e6, (double)(seen[2] - t0) / 1e6);
	assert_true(seen[1] != 0 && seen[2] != 0);
	/* Generous: the machine is shared; the figure above is the news. */
	assert_true(seen[1] - t0 < NS && seen[2] - t0 < NS);
	/* A worker on h2 is refused, told to wait most of the 2 s. */
	{
		tg_client *c2;
		uint32_t k2;

		assert_int_equal(tg_open(f.tb[2].segment, &c2), 0);
		assert_int_equal(tg_key(c2, "g", &k2), 0);
		assert_int_equal(tg_try_acquire(c2, k2, &cost, &t, &retry),
		    -EAGAIN);
		assert_true(retry > NS && retry <= 2 * NS + 100 * MS);
		/* Still refused at 1.5 s, and served again after 2.5 s. */
		tb_sleep_ns(t0 + 1500 * MS > tb_now_ns() ?
		    t0 + 1500 * MS - tb_now_ns() : 0);
		assert_int_equal(tg_try_acquire(c2, k2, &cost, &t, &retry),
		    -EAGAIN);
		deadline = t0 + 6 * NS;
		if (tb_now_ns() < t0 + 2100 * MS)
			tb_sleep_ns(t0 + 2100 * MS - tb_now_ns());
		while ((r = tg_try_acquire(c2, k2, &cost, &t, &retry)) != 0) {
			assert_true(tb_now_ns() < deadline);
			tb_sleep_ns(MS);
		}
		assert_true(tb_now_ns() >= t0 + 2 * NS);
		tg_release(c2, &t);
		tg_close(c2);
	}
	tg_close(c);
	for (int h = 1; h < HOSTS; h++)
		seg_detach(&m[h]);
	fleet_stop(&f);
}

/* A window limit across hosts never exceeds its count in any window. */
static void
test_window_exact(void **state)
{
	const uint64_t dur = 10 * NS, w = 4 * NS;
	uint64_t t0, *t, most;
	static struct fleet f;	/* outlives a failed assert */
	size_t n;

	(void)state;
	fleet_start(&f, HOSTS, "safe",
	    "[w]\nscope = global\nlimit = 30 requests/4s window\n");
	t0 = tb_now_ns();
	for (int h = 0; h < HOSTS; h++)
		workers_start(&f, h, "w", t0 + dur, 0);
	workers_wait(&f);
	t = merged(&f, 0, HOSTS, &n);
	most = max_in_window(t, n, w);
	print_message("window: %zu grants in %llu s, most in any 4 s: %llu "
	    "(count 30)\n", n, (unsigned long long)(dur / NS),
	    (unsigned long long)most);
	assert_true(most <= 30);
	/* And it was used: more than one window's worth went through. */
	assert_true(n > 30);
	free(t);
	fleet_stop(&f);
}

/*
 * Redis restarted without its data mid-window: the brokers put back what
 * they were granted in it, and no window of the fleet exceeds the count.
 */
static void
test_window_redis_lost(void **state)
{
	const uint64_t dur = 12 * NS, w = 6 * NS;
	uint64_t t0, *t, most, before;
	struct fleet f;
	size_t n;
	int put = 0;

	(void)state;
	fleet_start(&f, HOSTS, "safe",
	    "[w]\nscope = global\nlimit = 30 requests/6s window\n");
	t0 = tb_now_ns();
	for (int h = 0; h < HOSTS; h++)
		workers_start(&f, h, "w", t0 + dur, 0);
	tb_sleep_ns(4 * NS);
	redis_kill(&f.r);
	assert_int_equal(redis_run(&f.r), 0);
	workers_wait(&f);
	t = merged(&f, 0, HOSTS, &n);
	most = max_in_window(t, n, w);
	before = count_between(t, n, t0, t0 + 4 * NS);
	for (int h = 0; h < HOSTS; h++)
		put += tb_log_count(&f.tb[h], "Redis lost its window");
	print_message("window after a Redis that lost it: %zu grants, %llu "
	    "before the loss, most in any 6 s: %llu (count 30); %d brokers "
	    "put theirs back\n", n, (unsigned long long)before,
	    (unsigned long long)most, put);
	/* The window was full when Redis lost it: a fresh one would show. */
	assert_true(before >= 25);
	assert_true(put >= 1);
	assert_true(most <= 30);
	free(t);
	fleet_stop(&f);
}

/* A killed broker's budget goes back to the others within a few s. */
static void
test_killed_broker(void **state)
{
	const uint64_t dur = 10 * NS;
	uint64_t t0, *t, late;
	static struct fleet f;	/* outlives a failed assert */
	size_t n;

	(void)state;
	fleet_start(&f, HOSTS, "safe", rate_key);
	t0 = tb_now_ns();
	for (int h = 0; h < HOSTS; h++)
		workers_start(&f, h, "g", t0 + dur, 0);
	tb_sleep_ns(3 * NS);
	tb_kill(&f.tb[2]);
	workers_wait(&f);
	t = merged(&f, 0, 2, &n);
	/* h0 and h1 alone, from 2 s after the kill: the whole rate. */
	late = count_between(t, n, t0 + 5 * NS, t0 + dur);
	print_message("after the kill, h0 + h1: %llu of %d\n",
	    (unsigned long long)late, RATE_PER_S * 5);
	assert_true(late * 100 >= 90 * RATE_PER_S * 5);
	assert_true(late <= RATE_PER_S * 5 + BURST + BOUND_E);
	free(t);
	fleet_stop(&f);
}

/* Whether tollstat -j of tb's segment has text in it. */
static int
stat_says(const struct tbroker *tb, const char *text)
{
	char bin[PATH_MAX], cmd[PATH_MAX + 128], *out = malloc(1 << 20);
	int found;

	assert_non_null(out);
	snprintf(cmd, sizeof(cmd), "%s -j -s %s", tb_bin("tollstat", bin,
	    sizeof(bin)), tb->segment);
	assert_int_equal(tb_run(cmd, out, 1 << 20), 0);
	found = strstr(out, text) != NULL;
	if (!found)
		print_message("tollstat -j lacks %s\n", text);
	free(out);
	return found;
}

/*
 * Redis killed for 3 s under outage mode `mode', then back: what the
 * fleet admits meanwhile, from 1.2 s after the kill (the slices held
 * have ended) to the restart, into *out; and that it runs at the rate
 * again afterwards.
 */
static void
outage_run(const char *mode, uint64_t *out, uint64_t *after)
{
	const uint64_t dur = 11 * NS;
	uint64_t t0, tk, *t;
	static struct fleet f;	/* outlives a failed assert */
	size_t n;

	fleet_start(&f, HOSTS, mode, rate_key);
	t0 = tb_now_ns();
	for (int h = 0; h < HOSTS; h++)
		workers_start(&f, h, "g", t0 + dur, 0);
	tb_sleep_ns(3 * NS);
	assert_true(stat_says(&f.tb[0], "\"redis_connected\": true"));
	assert_true(stat_says(&f.tb[0], "\"hosts\": 3"));
	tk = tb_now_ns();
	redis_kill(&f.r);
	tb_sleep_ns(1500 * MS);
	/* tollstat says so, and what the broker does meanwhile. */
	assert_true(stat_says(&f.tb[1], "\"redis_connected\": false"));
	{
		char want[64];

		snprintf(want, sizeof(want), "\"outage\": \"%s\"", mode);
		assert_true(stat_says(&f.tb[1], want));
	}
	tb_sleep_ns(tk + 3 * NS > tb_now_ns() ? tk + 3 * NS - tb_now_ns() :
	    0);
	assert_int_equal(redis_run(&f.r), 0);
	workers_wait(&f);
	t = merged(&f, 0, HOSTS, &n);
	*out = count_between(t, n, tk + 1200 * MS, tk + 3 * NS);
	/* Back: reconnect backoff, then a second at the global rate. */
	*after = count_between(t, n, tk + 6 * NS, t0 + dur);
	print_message("outage `%s': %llu grants in the 1.8 s without "
	    "slices (rate alone: %d), %llu in the last %.1f s\n", mode,
	    (unsigned long long)*out, RATE_PER_S * 18 / 10,
	    (unsigned long long)*after,
	    (double)(t0 + dur - tk - 6 * NS) / 1e9);
	for (int h = 0; h < HOSTS; h++)
		assert_true(tb_log_count(&f.tb[h], "lost") >= 1);
	free(t);
	fleet_stop(&f);
}

static void
test_outage_closed(void **state)
{
	uint64_t during, after;

	(void)state;
	outage_run("closed", &during, &after);
	assert_int_equal(during, 0);
	assert_true(after >= RATE_PER_S * 2 * 8 / 10);
	assert_true(after <= RATE_PER_S * 2 + BURST + BOUND_E);
}

static void
test_outage_open(void **state)
{
	uint64_t during, after;

	(void)state;
	outage_run("open", &during, &after);
	/* Each host at its local limit: well past the global rate. */
	assert_true(during > RATE_PER_S * 18 / 10 * 2);
	assert_true(after >= RATE_PER_S * 2 * 8 / 10);
}

static void
test_outage_safe(void **state)
{
	uint64_t during, after;

	(void)state;
	outage_run("safe", &during, &after);
	/* Each host at a third: about the global rate, never far past. */
	assert_true(during >= RATE_PER_S * 18 / 10 * 7 / 10);
	assert_true(during <= RATE_PER_S * 18 / 10 + BURST + BOUND_E);
	assert_true(after >= RATE_PER_S * 2 * 8 / 10);
}

/*
 * The hot path on a global key makes no system call, with Redis there and
 * while it is gone: a worker under a filter that kills it on any call
 * spins on tickets (the vDSO's clock, no sleep) across an outage.
 */
static void
test_outage_no_syscall(void **state)
{
	const uint64_t dur = 5 * NS;
	tg_cost cost = { .requests = 1 };
	struct stamps *st;
	uint64_t t0, tk, before, during;
	static struct fleet f;	/* outlives a failed assert */
	pid_t p;
	int r;

	(void)state;
#if defined(__SANITIZE_THREAD__)
	print_message("skipped: ThreadSanitizer makes system calls of its "
	    "own\n");
	skip();
#endif
	fleet_start(&f, 1, "safe", rate_key);
	st = &f.st[0];
	t0 = tb_now_ns();
	if ((p = fork()) == 0) {
		tg_client *c;
		tg_ticket t;
		uint32_t k;
		uint64_t retry, n;

		/* Registration makes system calls: before the filter. */
		if (tg_open(f.tb[0].segment, &c) < 0 || tg_key(c, "g", &k) < 0)
			_exit(2);
		(void)tg_try_acquire(c, k, &cost, &t, &retry);
		tg_release(c, &t);
		if ((r = tb_deny_syscalls(1)) != 0)
			_exit(r == -ENOSYS ? 77 : 3);
		while (tb_now_ns() < t0 + dur) {
			if (tg_try_acquire(c, k, &cost, &t, &retry) != 0) {
				struct timespec ms = { 0, 1000000 };

				(void)clock_nanosleep(CLOCK_MONOTONIC, 0, &ms,
				    NULL);
				continue;
			}
			n = atomic_load(&st->n);
			if (n < STAMPS)
				st->t[n] = tb_now_ns();
			atomic_store(&st->n, n + 1);
			tg_release(c, &t);
		}
		/* exit_group is not allowed by the filter: plain exit. */
		syscall(SYS_exit, 0);
	}
	assert_true(p > 0);
	f.w[f.nw++] = p;
	tb_sleep_ns(1500 * MS);
	tk = tb_now_ns();
	redis_kill(&f.r);
	tb_sleep_ns(2 * NS);
	assert_int_equal(redis_run(&f.r), 0);
	r = tb_wait_child(p);
	f.nw = 0;
	if (r == 77) {
		fleet_stop(&f);
		print_message("skipped: no seccomp filter for this arch\n");
		skip();
	}
	/* 128 + SIGSYS: a system call on the hot path. */
	assert_int_equal(r, 0);
	{
		size_t n;
		uint64_t *t = merged(&f, 0, 1, &n);

		before = count_between(t, n, t0, tk);
		during = count_between(t, n, tk + 200 * MS, tk + 2 * NS);
		free(t);
	}
	print_message("under seccomp: %llu tickets before the outage, %llu "
	    "during it\n", (unsigned long long)before,
	    (unsigned long long)during);
	assert_true(before > 0 && during > 0);
	fleet_stop(&f);
}

/* SCRIPT FLUSH mid-run: the scripts are loaded again, no long gap. */
static void
test_script_flush(void **state)
{
	const uint64_t dur = 6 * NS;
	uint64_t t0, *t, gap = 0;
	static struct fleet f;	/* outlives a failed assert */
	size_t n;

	(void)state;
	fleet_start(&f, HOSTS, "safe", rate_key);
	t0 = tb_now_ns();
	for (int h = 0; h < HOSTS; h++)
		workers_start(&f, h, "g", t0 + dur, 0);
	tb_sleep_ns(2 * NS);
	assert_int_equal(redis_cmd(&f.r, "SCRIPT FLUSH"), 0);
	workers_wait(&f);
	t = merged(&f, 0, HOSTS, &n);
	for (size_t i = 1; i < n; i++)
		if (t[i] > t0 + NS && t[i] - t[i - 1] > gap)
			gap = t[i] - t[i - 1];
	print_message("longest gap between grants: %.1f ms\n",
	    (double)gap / 1e6);
	assert_true(gap < NS);
	{
		int reloads = 0;

		for (int h = 0; h < HOSTS; h++)
			reloads += tb_log_count(&f.tb[h], "loading them again");
		assert_true(reloads >= 1);
	}
	free(t);
	fleet_stop(&f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_bound_and_utilisation, teardown),
		cmocka_unit_test_teardown(test_equal_shares, teardown),
		cmocka_unit_test_teardown(test_pause_everywhere, teardown),
		cmocka_unit_test_teardown(test_window_exact, teardown),
		cmocka_unit_test_teardown(test_window_redis_lost, teardown),
		cmocka_unit_test_teardown(test_killed_broker, teardown),
		cmocka_unit_test_teardown(test_outage_closed, teardown),
		cmocka_unit_test_teardown(test_outage_open, teardown),
		cmocka_unit_test_teardown(test_outage_safe, teardown),
		cmocka_unit_test_teardown(test_script_flush, teardown),
		cmocka_unit_test_teardown(test_outage_no_syscall, teardown),
	};

	/* TG_FED_ONLY=test_name: one of them (cmocka's filter). */
	if (getenv("TG_FED_ONLY") != NULL)
		cmocka_set_test_filter(getenv("TG_FED_ONLY"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
