/*
 * mp_resize.c: a reload that resizes a concurrency limit never drops a
 * lease from the books and never admits more than the limit in force,
 * with real processes holding the leases on a real broker.
 */
#include <sys/mman.h>
#include <sys/prctl.h>
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
#include <unistd.h>

#include "helpers.h"
#include "seg.h"
#include "tollgate.h"

#define MS	1000000ull

/* A config of one key, "api", with `concurrency = n'. */
static const char *
conc_conf(char *buf, size_t len, unsigned n)
{
	snprintf(buf, len, "[api]\nconcurrency = %u\n[other]\n"
	    "limit = 100 requests/s\n", n);
	return buf;
}

/*
 * Each test's broker and children, which the teardown stops and reaps
 * however the test ended: a failed assertion leaves the test at once.
 */
static struct tbroker the_tb;
static int started;
static pid_t kids[64];

static struct tbroker *
start(unsigned n)
{
	char conf[128];
	int r;

	r = tb_start(&the_tb, conc_conf(conf, sizeof(conf), n));
	started = 1;
	if (r == -ENOSYS)
		skip();
	assert_int_equal(r, 0);
	return &the_tb;
}

/* fork(), the child dying with us; the parent keeps its pid for teardown. */
static pid_t
spawn(void)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		return 0;
	}
	for (unsigned i = 0; i < sizeof(kids) / sizeof(kids[0]); i++)
		if (kids[i] == 0) {
			kids[i] = pid;
			break;
		}
	return pid;
}

static int
reaped(pid_t pid)
{
	int st = tb_wait_child(pid);

	for (unsigned i = 0; i < sizeof(kids) / sizeof(kids[0]); i++)
		if (kids[i] == pid)
			kids[i] = 0;
	return st;
}

static int
teardown(void **state)
{
	(void)state;
	for (unsigned i = 0; i < sizeof(kids) / sizeof(kids[0]); i++)
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			(void)tb_wait_child(kids[i]);
			kids[i] = 0;
		}
	if (started)
		tb_cleanup(&the_tb);
	started = 0;
	return 0;
}

static void
reload(struct tbroker *tb, unsigned n)
{
	char conf[128];

	assert_int_equal(tb_reload(tb, conc_conf(conf, sizeof(conf), n)), 0);
}

/* A process that holds one ticket of "api" until told to release it. */
struct holder {
	pid_t	pid;
	int	cmd;		/* write a byte: release and exit */
	int	ack;		/* a byte after the take, one after release */
};

/* Start a holder; returns 1 if it got its ticket, 0 if refused. */
static int
hold(const struct tbroker *tb, struct holder *h)
{
	int cmd[2], ack[2];
	char got;

	assert_int_equal(pipe(cmd), 0);
	assert_int_equal(pipe(ack), 0);
	if ((h->pid = spawn()) == 0) {
		tg_client *c = tb_client(tb);
		uint64_t retry;
		tg_ticket t;
		char x = 'n';
		int r;

		close(cmd[1]);
		close(ack[0]);
		r = tg_try_acquire(c, tb_key(c, "api"), NULL, &t, &retry);
		if (r == 0)
			x = 'y';
		if (write(ack[1], &x, 1) != 1 || read(cmd[0], &x, 1) != 1)
			_exit(2);
		if (r == 0)
			tg_release(c, &t);
		if (write(ack[1], "r", 1) != 1)
			_exit(3);
		/* Exit without tg_close: only the release may free it. */
		_exit(0);
	}
	close(cmd[0]);
	close(ack[1]);
	h->cmd = cmd[1];
	h->ack = ack[0];
	assert_int_equal(read(h->ack, &got, 1), 1);
	return got == 'y';
}

static void
unhold(struct holder *h)
{
	char x;

	assert_int_equal(write(h->cmd, "r", 1), 1);
	assert_int_equal(read(h->ack, &x, 1), 1);
	assert_int_equal(reaped(h->pid), 0);
	close(h->cmd);
	close(h->ack);
}

/*
 * Another process tries one ticket of "api" (and gives it straight
 * back): 1 granted, 0 refused.
 */
static int
other_gets_one(const struct tbroker *tb)
{
	pid_t pid;
	int st;

	if ((pid = spawn()) == 0) {
		tg_client *c = tb_client(tb);
		uint64_t retry;
		tg_ticket t;
		int r = tg_try_acquire(c, tb_key(c, "api"), NULL, &t, &retry);

		if (r == 0)
			tg_release(c, &t);
		tg_close(c);
		_exit(r == 0 ? 0 : r == -EAGAIN ? 1 : 2);
	}
	st = reaped(pid);
	assert_true(st == 0 || st == 1);
	return st == 0;
}

/* The concurrency limit of key in the live config: its cells. */
struct conc_at {
	uint32_t	id, cells, ncells;
	uint64_t	count;
};

static struct conc_at
conc_of(const struct seg_map *m, const char *key)
{
	struct conc_at at = { SEG_NONE, 0, 0, 0 };
	const struct seg_key *k;
	const struct seg_limit *l;
	struct seg_cfg *c;
	uint32_t seq;

	do {
		c = seg_read_begin(m, &seq);
		k = seg_keys(c);
		l = seg_limits(m, c);
		for (uint32_t i = 0; i < m->hdr->max_keys; i++) {
			if (k[i].gen == 0 || strcmp(k[i].name, key) != 0)
				continue;
			for (unsigned j = 0; j < k[i].nown &&
			    j < SEG_CHAIN_MAX; j++) {
				uint16_t id = k[i].chain[j];

				if (id < m->hdr->max_limits &&
				    l[id].kind == 3 /* LIM_CONC */) {
					at.id = id;
					at.cells = l[id].cells;
					at.ncells = l[id].ncells;
					at.count = l[id].count;
				}
			}
		}
	} while (!seg_read_ok(c, seq));
	assert_true(at.id != SEG_NONE);
	assert_true((uint64_t)at.cells + at.ncells <= m->hdr->max_cells);
	return at;
}

/* Leases of "api" on the books: its held cells in the live config. */
static unsigned
booked(const struct tbroker *tb)
{
	struct seg_map m;
	struct conc_at at;
	unsigned n = 0;

	assert_int_equal(seg_attach(tb->segment, 0, &m), 0);
	at = conc_of(&m, "api");
	for (uint32_t i = 0; i < at.ncells; i++)
		n += atomic_load(&seg_cells(&m)[at.cells + i]) != 0;
	seg_detach(&m);
	return n;
}

/* What tollstat -j says is in flight on "api"; -1 without python3. */
static int
tollstat_in_flight(const struct tbroker *tb)
{
	char bin[PATH_MAX], cmd[2 * PATH_MAX], out[256];

	if (system("command -v python3 >/dev/null 2>&1") != 0)
		return -1;
	snprintf(cmd, sizeof(cmd), "%s -j -s %s -k api | python3 -c "
	    "'import json, sys\n"
	    "d = json.load(sys.stdin)\n"
	    "print([l[\"in_flight\"] for k in d[\"keys\"] if k[\"name\"] == "
	    "\"api\" for l in k[\"limits\"] if l[\"in_flight\"] is not None]"
	    "[0])'", tb_bin("tollstat", bin, sizeof(bin)), tb->segment);
	assert_int_equal(tb_run(cmd, out, sizeof(out)), 0);
	return atoi(out);
}

/*
 * The reproduction: two processes hold both leases of
 * `concurrency = 2'; a reload to 1 and back to 2 while they hold them.
 * Both stay on the books, so a third process is refused until one of
 * them releases.
 */
static void
test_two_one_two_keeps_both(void **state)
{
	struct tbroker *tb = start(2);
	struct holder a, b, c;

	(void)state;
	assert_true(hold(tb, &a));
	assert_true(hold(tb, &b));
	reload(tb, 1);
	assert_false(other_gets_one(tb));
	reload(tb, 2);
	assert_false(other_gets_one(tb));
	assert_int_equal(booked(tb), 2);
	if (tollstat_in_flight(tb) >= 0)
		assert_int_equal(tollstat_in_flight(tb), 2);
	assert_false(hold(tb, &c));
	unhold(&c);
	unhold(&a);
	assert_int_equal(booked(tb), 1);
	assert_true(hold(tb, &c));
	assert_false(other_gets_one(tb));
	unhold(&b);
	unhold(&c);
	assert_int_equal(booked(tb), 0);
	assert_true(other_gets_one(tb));
}

/*
 * A shrink 3 -> 1 with 3 held keeps all three and grants nothing until
 * fewer than one is in flight.
 */
static void
test_shrink_three_to_one(void **state)
{
	struct tbroker *tb = start(3);
	struct holder h[3];

	(void)state;
	for (int i = 0; i < 3; i++)
		assert_true(hold(tb, &h[i]));
	assert_false(other_gets_one(tb));
	reload(tb, 1);
	assert_int_equal(booked(tb), 3);
	for (int i = 0; i < 3; i++) {
		assert_false(other_gets_one(tb));
		unhold(&h[i]);
		assert_int_equal(booked(tb), 2 - i);
	}
	assert_true(other_gets_one(tb));
	assert_true(hold(tb, &h[0]));
	assert_false(other_gets_one(tb));
	unhold(&h[0]);
}

/*
 * A grow that moves the leases to more cells (1 held of 2, reload to 3),
 * seen by a client that read the old config just before the flip: it
 * takes a free old cell afterwards, modelled by writing a lease value of
 * a live slot into it as lease_take would.  The late lease is not lost:
 * with it, at most 3 are in flight, not 4.
 */
static void
test_grow_late_take_counted(void **state)
{
	struct tbroker *tb = start(2);
	tg_client *c;
	struct seg_map m;
	struct conc_at old;
	_Atomic uint64_t *cells;
	uint64_t retry, late = 0;
	tg_ticket t[4];
	uint32_t k;
	int n = 0, late_taken = 0;

	(void)state;
	c = tb_client(tb);
	k = tb_key(c, "api");
	assert_int_equal(tg_try_acquire(c, k, NULL, &t[n++], &retry), 0);
	assert_int_equal(seg_attach(tb->segment, 1, &m), 0);
	cells = seg_cells(&m);
	old = conc_of(&m, "api");
	/* The lease of our own slot: the late one is of a live slot too. */
	for (uint32_t i = 0; i < old.ncells; i++)
		if (atomic_load(&cells[old.cells + i]) != 0)
			late = atomic_load(&cells[old.cells + i]) + 1000;
	assert_true(late != 0);
	reload(tb, 3);
	for (uint32_t i = 0; i < old.ncells && !late_taken; i++) {
		uint64_t z = 0;

		late_taken = atomic_compare_exchange_strong(
		    &cells[old.cells + i], &z, late);
	}
	print_message("late take in the old cells: %s\n", late_taken ?
	    "taken" : "refused (sealed)");
	/* Let the broker see it (a tick is 50 ms), then fill up. */
	tb_sleep_ns(150 * MS);
	while (n < 4 && tg_try_acquire(c, k, NULL, &t[n], &retry) == 0)
		n++;
	assert_true(n + late_taken <= 3);
	assert_int_equal(n, 3 - late_taken);
	/* The late holder releases as it read the config: the old cells. */
	if (late_taken) {
		for (uint32_t i = 0; i < old.ncells; i++) {
			uint64_t v = late;

			atomic_compare_exchange_strong(&cells[old.cells + i],
			    &v, 0);
		}
		tb_sleep_ns(150 * MS);
		assert_int_equal(tg_try_acquire(c, k, NULL, &t[n++], &retry),
		    0);
	}
	assert_int_equal(tg_try_acquire(c, k, NULL, &t[n], &retry), -EAGAIN);
	seg_detach(&m);
	while (n > 0)
		tg_release(c, &t[--n]);
	assert_int_equal(booked(tb), 0);
	tg_close(c);
}

/*
 * A release by a client that read the config before a grow's flip lands
 * in the old cells after the broker carried the lease over: the carried
 * copy is freed too, so the capacity comes back.
 */
static void
test_grow_late_release_frees(void **state)
{
	struct tbroker *tb = start(2);
	tg_client *c;
	struct seg_map m;
	struct conc_at old;
	_Atomic uint64_t *cells;
	uint64_t retry, v = 0;
	tg_ticket t[4], held;
	uint32_t k;
	int n = 0;

	(void)state;
	c = tb_client(tb);
	k = tb_key(c, "api");
	assert_int_equal(tg_try_acquire(c, k, NULL, &held, &retry), 0);
	assert_int_equal(seg_attach(tb->segment, 1, &m), 0);
	cells = seg_cells(&m);
	old = conc_of(&m, "api");
	for (uint32_t i = 0; i < old.ncells; i++)
		if (atomic_load(&cells[old.cells + i]) != 0)
			v = atomic_load(&cells[old.cells + i]);
	reload(tb, 3);
	/* The release, as a client that read the old config makes it. */
	for (uint32_t i = 0; i < old.ncells; i++) {
		uint64_t e = v;

		atomic_compare_exchange_strong(&cells[old.cells + i], &e, 0);
	}
	tb_sleep_ns(150 * MS);
	while (n < 4 && tg_try_acquire(c, k, NULL, &t[n], &retry) == 0)
		n++;
	assert_int_equal(n, 3);
	seg_detach(&m);
	while (n > 0)
		tg_release(c, &t[--n]);
	/* Released already: this one finds nothing to free, and no harm. */
	tg_release(c, &held);
	assert_int_equal(booked(tb), 0);
	tg_close(c);
}

/*
 * What the stress workers and the parent share.  epoch is odd while the
 * parent reloads; lim[epoch / 2] is the size in force during an even
 * epoch.  A grant whose whole take and count of holders fell within one
 * even epoch was made against that size, so holders <= it: leases kept
 * from a larger size block grants rather than add to them.
 */
#define STRESS_WORKERS	6
#define STRESS_RELOADS	60
struct stress {
	_Atomic uint32_t	epoch;
	_Atomic int		stop;
	_Atomic int		holders;
	_Atomic int		bad;		/* holders over the size */
	_Atomic int		worst;		/* holders over the largest */
	_Atomic uint64_t	granted;
	_Atomic uint64_t	checked;
	unsigned		lim[STRESS_RELOADS + 1];
	_Atomic int		released[STRESS_WORKERS];
};

static void
stress_worker(const struct tbroker *tb, struct stress *s, int me,
    unsigned largest)
{
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "api"), e1, e2;
	uint64_t seed = (uint64_t)me * 7919 + 1, retry;
	tg_ticket t;
	int h, r;

	while (!atomic_load(&s->stop)) {
		e1 = atomic_load(&s->epoch);
		if (tb_rnd(&seed) % 4 == 0)
			r = tg_try_acquire(c, k, NULL, &t, &retry);
		else
			r = tg_acquire(c, k, NULL, 20 * MS, &t);
		if (r != 0) {
			if (r != -EAGAIN && r != -ETIMEDOUT)
				_exit(2);
			tb_sleep_ns(200000);	/* two CPUs: let others run */
			continue;
		}
		h = atomic_fetch_add(&s->holders, 1) + 1;
		e2 = atomic_load(&s->epoch);
		atomic_fetch_add(&s->granted, 1);
		if ((unsigned)h > largest)
			atomic_fetch_add(&s->worst, 1);
		if (e1 == e2 && (e1 & 1) == 0) {
			atomic_fetch_add(&s->checked, 1);
			if ((unsigned)h > s->lim[e1 / 2])
				atomic_fetch_add(&s->bad, 1);
		}
		tb_sleep_ns(MS + tb_rnd(&seed) % (5 * MS));
		atomic_fetch_sub(&s->holders, 1);
		tg_release(c, &t);
	}
	/* Everything released; tg_close only after the parent looked. */
	atomic_store(&s->released[me], 1);
	while (atomic_load(&s->stop) != 2)
		tb_sleep_ns(MS);
	tg_close(c);
	_exit(0);
}

/*
 * Workers take and release without pause while the broker is reloaded
 * 60 times between a small size and a growing large one (so that some
 * grows move the leases, some reuse the cells a shrink kept, and some
 * moves overlap).  Never more in flight than the size in force, and in
 * the end every cell is free.
 */
static void
test_stress_resize(void **state)
{
	struct tbroker *tb = start(1);
	struct stress *s = tb_shared(sizeof(*s));
	unsigned largest = 1;
	pid_t pid[STRESS_WORKERS];
	uint64_t seed = 42;

	(void)state;
	for (unsigned i = 1; i <= STRESS_RELOADS; i++)
		if (i % 2 == 0 && 1 + i / 2 > largest)
			largest = 1 + i / 2;
	largest = largest < 2 ? 2 : largest;
	s->lim[0] = 1;
	for (int i = 0; i < STRESS_WORKERS; i++)
		if ((pid[i] = spawn()) == 0)
			stress_worker(tb, s, i, largest);
	for (unsigned i = 1; i <= STRESS_RELOADS; i++) {
		/* 1, 2, 1, 3, 1, 4, ... and now and then 2 for a change. */
		unsigned n = i % 2 ? (tb_rnd(&seed) % 5 == 0 ? 2 : 1) :
		    1 + i / 2;

		tb_sleep_ns(10 * MS + tb_rnd(&seed) % (40 * MS));
		atomic_fetch_add(&s->epoch, 1);		/* odd: reloading */
		reload(tb, n);
		s->lim[i] = n;
		atomic_fetch_add(&s->epoch, 1);		/* even: n in force */
	}
	tb_sleep_ns(100 * MS);
	atomic_store(&s->stop, 1);
	for (int i = 0; i < STRESS_WORKERS; i++)
		while (!atomic_load(&s->released[i])) {
			assert_int_equal(waitpid(pid[i], NULL, WNOHANG), 0);
			tb_sleep_ns(MS);
		}
	/* Released, not closed: a lease left on the books is still there. */
	assert_int_equal(booked(tb), 0);
	/* And after the quarantine of the moved cells, too. */
	tb_sleep_ns(2500 * MS);
	assert_int_equal(booked(tb), 0);
	atomic_store(&s->stop, 2);
	for (int i = 0; i < STRESS_WORKERS; i++)
		assert_int_equal(reaped(pid[i]), 0);
	print_message("stress: %llu grants over %d reloads, %llu checked "
	    "against the size in force, %d over it, %d over %u\n",
	    (unsigned long long)atomic_load(&s->granted), STRESS_RELOADS,
	    (unsigned long long)atomic_load(&s->checked),
	    atomic_load(&s->bad), atomic_load(&s->worst), largest);
	assert_int_equal(atomic_load(&s->bad), 0);
	assert_int_equal(atomic_load(&s->worst), 0);
	assert_true(atomic_load(&s->granted) > 200);
	assert_true(atomic_load(&s->checked) > 100);
	/* The capacity is whole: exactly the last size, no more. */
	{
		unsigned last = s->lim[STRESS_RELOADS], got = 0;
		struct holder h[32];

		while (got < 32 && hold(tb, &h[got]))
			got++;
		print_message("after the last reload: %u of %u\n", got, last);
		assert_int_equal(got, last);
		for (unsigned i = 0; i <= got && i < 32; i++)
			unhold(&h[i]);
	}
	munmap(s, sizeof(*s));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_two_one_two_keeps_both,
		    teardown),
		cmocka_unit_test_teardown(test_shrink_three_to_one, teardown),
		cmocka_unit_test_teardown(test_grow_late_take_counted,
		    teardown),
		cmocka_unit_test_teardown(test_grow_late_release_frees,
		    teardown),
		cmocka_unit_test_teardown(test_stress_resize, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
