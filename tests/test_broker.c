/*
 * test_broker.c: the broker's reclaim policy, driven directly.  The test
 * is the broker here: it makes a real segment with the broker's own code
 * (libtgbroker.a: config, segment, clients), real clients open it, and
 * the test calls clients_scan and clients_reclaim itself, with times of
 * its choosing, so a grace period is tested in virtual time and a race
 * is set up step by step, with no broker process and no sleep.
 */
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../broker/broker.h"
#include "../broker/clients.h"
#include "clock.h"
#include "helpers.h"
#include "../broker/own.h"
#include "seg.h"
#include "tollgate.h"

#define S_NS	1000000000ull

struct fixture {
	struct broker	b;
	struct seglock	lk;
	struct clients	*cs;
	char		segment[64];
};

static const char body[] =
    "[one]\n"
    "concurrency = 1\n";

static void
quiet(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "config: %s\n", msg);
}

static int
setup(void **state)
{
	static int seq;
	struct fixture *f = calloc(1, sizeof(*f));
	char conf[512], err[256];
	pid_t other;

	if (f == NULL)
		return -1;
	snprintf(f->segment, sizeof(f->segment), "tgbroker-%d-%d",
	    (int)getpid(), seq++);
	snprintf(conf, sizeof(conf), "[broker]\nsegment = %s\n"
	    "max_clients = 8\n\n%s", f->segment, body);
	if (config_load_mem("test", conf, strlen(conf), &f->b.cfg, quiet,
	    NULL) != 0)
		return -1;
	if (seglock_take(&f->lk, f->segment, &other) < 0 ||
	    segment_open(&f->b) < 0 ||
	    segment_publish(&f->b, &f->b.cfg, err, sizeof(err)) < 0 ||
	    (f->cs = clients_new(&f->b.m, NULL)) == NULL)
		return -1;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	char conf[256], st[256];

	clients_free(f->cs);
	segment_close(&f->b);
	seglock_drop(&f->lk, 1);
	if (seg_names(f->segment, conf, st, sizeof(conf)) == 0) {
		shm_unlink(conf);
		shm_unlink(st);
	}
	config_free(&f->b.cfg);
	free(f);
	return 0;
}

/* A free slot that is not `not'; the test's own client may have any. */
static uint32_t
free_slot(struct fixture *f, int not)
{
	struct seg_client *cl = seg_clients(&f->b.m);

	for (uint32_t i = 0; i < f->b.m.hdr->max_clients; i++)
		if ((int)i != not && atomic_load(&cl[i].owner) == 0)
			return i;
	fail_msg("no free slot");
	return 0;
}

/* The slot of the only live client; -1 if none. */
static int
live_slot(struct fixture *f, uint64_t *owner)
{
	struct seg_client *cl = seg_clients(&f->b.m);

	for (uint32_t i = 0; i < f->b.m.hdr->max_clients; i++) {
		*owner = atomic_load(&cl[i].owner);
		if (CLIENT_STATE(*owner) == CLIENT_LIVE)
			return (int)i;
	}
	return -1;
}


/* Whether a second client gets the one lease of `one' now. */
static int
lease_free(struct fixture *f)
{
	tg_client *c;
	tg_ticket t;
	uint32_t k;
	int r;

	assert_int_equal(tg_open(f->segment, &c), 0);
	assert_int_equal(tg_key(c, "one", &k), 0);
	r = tg_try_acquire(c, k, NULL, &t, NULL);
	tg_release(c, &t);
	tg_close(c);
	return r == 0;
}

/*
 * Issue 12, bug 5: the broker read a slot's owner word, and before it
 * acted the client closed and a newcomer claimed the slot.  Reclaim with
 * the stale word must leave the newcomer alone: its lease, its counters,
 * its stripe.  (The old reclaim freed all three, then noticed.)
 */
static void
test_reclaim_with_a_stale_owner_touches_nothing(void **state)
{
	struct fixture *f = *state;
	struct seg_state *st = (struct seg_state *)f->b.m.state;
	struct seg_client *cl = seg_clients(&f->b.m);
	tg_client *c;
	tg_ticket t;
	uint64_t now, stale;
	uint32_t k, stripes = 0;
	int slot;

	assert_int_equal(tg_open(f->segment, &c), 0);
	assert_int_equal(tg_key(c, "one", &k), 0);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, NULL), 0);
	assert_true((slot = live_slot(f, &now)) >= 0);
	/* The registration before this one of the same slot. */
	stale = CLIENT_OWNER(CLIENT_LIVE, CLIENT_TOKEN(now) - 1);
	for (uint32_t s = 1; s < SEG_STRIPES; s++)
		stripes += atomic_load(&st->stripe_owner[s]) ==
		    (uint32_t)slot + 1;
	assert_int_equal(stripes, 1);

	assert_int_equal(clients_reclaim(f->cs, (uint32_t)slot, stale,
	    "test"), 0);
	assert_int_equal(atomic_load(&cl[slot].owner), now);
	assert_int_equal(atomic_load(&cl[slot].acquired), 1);
	assert_false(lease_free(f));
	stripes = 0;
	for (uint32_t s = 1; s < SEG_STRIPES; s++)
		stripes += atomic_load(&st->stripe_owner[s]) ==
		    (uint32_t)slot + 1;
	assert_int_equal(stripes, 1);
	/* A scan leaves a live client alone too. */
	clients_scan(f->cs, now_ns());
	assert_false(lease_free(f));
	tg_release(c, &t);
	tg_close(c);
}

/* A client that died holding a lease is reclaimed by the next scan. */
static void
test_dead_client_reclaimed_by_one_scan(void **state)
{
	struct fixture *f = *state;
	pid_t pid;

	if ((pid = fork()) == 0) {
		tg_client *c;
		tg_ticket t;
		uint32_t k;

		if (tg_open(f->segment, &c) < 0 || tg_key(c, "one", &k) < 0 ||
		    tg_try_acquire(c, k, NULL, &t, NULL) < 0)
			_exit(1);
		_exit(0);	/* dies holding it: no tg_close */
	}
	assert_int_equal(tb_wait_child(pid), 0);
	assert_false(lease_free(f));
	clients_scan(f->cs, now_ns());
	assert_true(lease_free(f));
}

/*
 * A claim without its lock: a claimer between its CAS and its lock, or
 * one that died there.  It keeps the slot for 2 s of the broker's time,
 * then loses it: tested in virtual time.
 */
static void
test_abandoned_claim_after_grace(void **state)
{
	struct fixture *f = *state;
	struct seg_client *cl = seg_clients(&f->b.m);
	uint64_t t0 = 1000 * S_NS, o = CLIENT_OWNER(CLIENT_CLAIMING, 77);

	atomic_store(&cl[5].owner, o);
	clients_scan(f->cs, t0);
	clients_scan(f->cs, t0 + S_NS);
	clients_scan(f->cs, t0 + 2 * S_NS);
	assert_int_equal(atomic_load(&cl[5].owner), o);
	clients_scan(f->cs, t0 + 2 * S_NS + S_NS / 10);
	assert_int_equal(atomic_load(&cl[5].owner), 0);
}

/*
 * A LIVE slot nobody holds the lock of is gone; a RECLAIMING one is the
 * work of a broker that died half way: both are finished by one scan,
 * and their leases freed.
 */
static void
test_unlocked_and_half_reclaimed(void **state)
{
	struct fixture *f = *state;
	struct seg_client *cl = seg_clients(&f->b.m);
	tg_client *c;
	tg_ticket t;
	uint64_t o;
	uint32_t k, fake;
	int slot;

	for (int pass = 0; pass < 2; pass++) {
		assert_int_equal(tg_open(f->segment, &c), 0);
		assert_int_equal(tg_key(c, "one", &k), 0);
		assert_int_equal(tg_try_acquire(c, k, NULL, &t, NULL), 0);
		assert_true((slot = live_slot(f, &o)) >= 0);
		/* Move its lease to a made-up registration of another slot. */
		fake = free_slot(f, slot);
		atomic_store(&cl[fake].owner, pass == 0 ?
		    CLIENT_OWNER(CLIENT_LIVE, 9) :
		    CLIENT_OWNER(CLIENT_RECLAIMING, 9));
		for (uint32_t i = 0; i < f->b.m.hdr->max_cells; i++) {
			_Atomic uint64_t *cell = &seg_cells(&f->b.m)[i];

			if (atomic_load(cell) != 0 &&
			    LEASE_SLOT(atomic_load(cell)) == (uint32_t)slot)
				atomic_store(cell, LEASE_VAL(fake, 1));
		}
		tg_close(c);
		assert_false(lease_free(f));
		clients_scan(f->cs, now_ns());
		assert_int_equal(atomic_load(&cl[fake].owner), 0);
		assert_true(lease_free(f));
	}
}

/*
 * The guard frees a lease whose slot is free (an orphan) and must wake
 * whoever sleeps on the limit, as a release would: before, the sleeper
 * slept on until its timeout.
 */
static void
test_orphan_freed_wakes_sleeper(void **state)
{
	struct fixture *f = *state;
	struct seg_lstate *ls = seg_lstates(&f->b.m);
	_Atomic uint64_t *cells = seg_cells(&f->b.m);
	tg_client *c;
	tg_ticket t;
	uint32_t k, id = SEG_NONE, cell = 0;
	pid_t pid;

	assert_int_equal(tg_open(f->segment, &c), 0);
	assert_int_equal(tg_key(c, "one", &k), 0);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, NULL), 0);
	for (uint32_t i = 0; i < f->b.m.hdr->max_limits && id == SEG_NONE;
	    i++)
		if (f->b.lims[i].used && f->b.lims[i].spec.kind == LIM_CONC)
			id = i;
	assert_int_not_equal(id, SEG_NONE);
	for (uint32_t i = 0; i < f->b.lims[id].ncells; i++)
		if (atomic_load(&cells[f->b.lims[id].cells + i]) != 0)
			cell = f->b.lims[id].cells + i;
	atomic_store(&ls[id].waiting, 0);
	if ((pid = fork()) == 0) {
		tg_client *c2;
		tg_ticket t2;

		if (tg_open(f->segment, &c2) < 0)
			_exit(2);
		_exit(tg_acquire(c2, k, NULL, 20 * S_NS, &t2) == 0 ? 0 : 1);
	}
	/* Until it announced its sleep: no fixed wait. */
	while (atomic_load(&ls[id].waiting) == 0)
		sched_yield();
	/* Now the lease names a slot neither of us holds: an orphan. */
	atomic_store(&cells[cell], LEASE_VAL(free_slot(f, -1), 1));
	guard_check(&f->b, now_ns());
	assert_int_equal(tb_wait_child(pid), 0);
	tg_close(c);
}

/*
 * A client that died without tg_close, and no broker to reclaim it yet:
 * tollstat says it is gone (its lock is free), not live.
 */
static void
test_stat_shows_gone(void **state)
{
	struct fixture *f = *state;
	char *out = malloc(1 << 20), cmd[512];
	pid_t pid;

	if ((pid = fork()) == 0) {
		tg_client *c;

		_exit(tg_open(f->segment, &c) < 0 ? 1 : 0);
	}
	assert_int_equal(tb_wait_child(pid), 0);
	snprintf(cmd, sizeof(cmd), "%s/tollstat -j -s %s",
	    getenv("TG_BUILD") ? getenv("TG_BUILD") : "build", f->segment);
	assert_int_equal(tb_run(cmd, out, 1 << 20), 0);
	if (strstr(out, "\"gone\"") == NULL)
		fail_msg("no gone client in %s", out);
	free(out);
}

/* The observer: what it watches and what it saw. */
static struct fixture *of;
static _Atomic int o_done;
static _Atomic unsigned o_bad_lock, o_bad_free, o_seen_live;
static uint32_t o_cell;

static void *
observer(void *arg)
{
	struct seg_client *cl = seg_clients(&of->b.m);
	_Atomic uint64_t *cells = seg_cells(&of->b.m);
	int fd = of->b.m.state_fd;

	(void)arg;
	while (!atomic_load(&o_done))
		for (uint32_t i = 0; i < 8; i++) {
			uint64_t o1 = atomic_load(&cl[i].owner), o2, v, o3;

			if (CLIENT_STATE(o1) == CLIENT_LIVE) {
				atomic_fetch_add(&o_seen_live, 1);
				if (seg_slot_locked(fd, i) == 0 &&
				    atomic_load(&cl[i].owner) == o1)
					atomic_fetch_add(&o_bad_lock, 1);
			}
			/*
			 * A lease of slot i, then slot i free, then the same
			 * lease still there: the slot was freed before its
			 * leases (a new lease of a reopened slot i would have
			 * another generation).
			 */
			v = atomic_load(&cells[o_cell]);
			if (v == 0 || v == LEASE_SEALED || LEASE_SLOT(v) != i)
				continue;
			o2 = atomic_load(&cl[i].owner);
			if (o2 != 0)
				continue;
			o3 = atomic_load(&cells[o_cell]);
			if (o3 == v && atomic_load(&cl[i].owner) == 0)
				atomic_fetch_add(&o_bad_free, 1);
		}
	return NULL;
}

/*
 * The orders tg_open and tg_close keep, watched from a thread while the
 * main one opens, takes a lease and closes 3,000 times: a LIVE slot is
 * never seen without its lock (the lock comes before LIVE, and goes after
 * the slot is free), and a free slot never still holds a lease (the
 * leases go before the slot).  Either seen, and a broker would reclaim a
 * live client or leave a lease no one owns.
 */
static void
test_open_close_observed(void **state)
{
	struct fixture *f = *state;
	pthread_t th;
	tg_client *c;
	tg_ticket t;
	uint32_t k, id = SEG_NONE;
	int n = 3000;

	for (uint32_t i = 0; i < f->b.m.hdr->max_limits && id == SEG_NONE;
	    i++)
		if (f->b.lims[i].used && f->b.lims[i].spec.kind == LIM_CONC)
			id = i;
	assert_int_not_equal(id, SEG_NONE);
	o_cell = f->b.lims[id].cells;
	of = f;
	assert_int_equal(pthread_create(&th, NULL, observer, NULL), 0);
	for (int i = 0; i < n; i++) {
		assert_int_equal(tg_open(f->segment, &c), 0);
		assert_int_equal(tg_key(c, "one", &k), 0);
		assert_int_equal(tg_try_acquire(c, k, NULL, &t, NULL), 0);
		tg_close(c);
	}
	atomic_store(&o_done, 1);
	pthread_join(th, NULL);
	print_message("live seen %u, LIVE without lock %u, "
	    "free slot with its lease %u\n", atomic_load(&o_seen_live),
	    atomic_load(&o_bad_lock), atomic_load(&o_bad_free));
	assert_int_equal(atomic_load(&o_bad_lock), 0);
	assert_int_equal(atomic_load(&o_bad_free), 0);
}


/* The slot of the only LIVE client; -1 if none. */
static int
the_live_slot(struct fixture *f)
{
	uint64_t o;

	return live_slot(f, &o);
}

static pid_t
die_holding(struct fixture *f)
{
	pid_t pid;

	if ((pid = fork()) == 0) {
		tg_client *c;
		tg_ticket t;
		uint32_t k;

		if (tg_open(f->segment, &c) < 0 || tg_key(c, "one", &k) < 0 ||
		    tg_try_acquire(c, k, NULL, &t, NULL) < 0)
			_exit(1);
		_exit(0);
	}
	return pid;
}

/*
 * A dead holder reclaimed while a grow's move is under way: its lease in
 * the old cells and its copy in the new are both freed.
 */
static void
test_reclaim_during_grow_frees_old_cell(void **state)
{
	struct fixture *f = *state;
	struct config cfg;
	char conf[512], err[256];
	_Atomic uint64_t *cells = seg_cells(&f->b.m);
	int slot, left = 0;

	assert_int_equal(tb_wait_child(die_holding(f)), 0);
	assert_true((slot = the_live_slot(f)) >= 0);
	snprintf(conf, sizeof(conf), "[broker]\nsegment = %s\n"
	    "max_clients = 8\n\n[one]\nconcurrency = 2\n", f->segment);
	assert_int_equal(config_load_mem("test", conf, strlen(conf), &cfg,
	    quiet, NULL), 0);
	assert_int_equal(segment_publish(&f->b, &cfg, err, sizeof(err)), 0);
	memcpy(cfg.segment, f->b.cfg.segment, sizeof(cfg.segment));
	config_free(&f->b.cfg);
	f->b.cfg = cfg;
	clients_scan(f->cs, now_ns());
	assert_int_equal(atomic_load(&seg_clients(&f->b.m)[slot].owner), 0);
	for (uint32_t i = 0; i < f->b.m.hdr->max_cells; i++) {
		uint64_t v = atomic_load(&cells[i]);

		if (v != 0 && v != LEASE_SEALED &&
		    LEASE_SLOT(v) == (uint32_t)slot)
			left++;
	}
	assert_int_equal(left, 0);
}

/* The reclaim gives the dead client's grant stripe back itself. */
static void
test_reclaim_frees_stripe(void **state)
{
	struct fixture *f = *state;
	struct seg_state *st = (struct seg_state *)f->b.m.state;
	int slot, n = 0;

	assert_int_equal(tb_wait_child(die_holding(f)), 0);
	assert_true((slot = the_live_slot(f)) >= 0);
	for (uint32_t s = 1; s < SEG_STRIPES; s++)
		n += atomic_load(&st->stripe_owner[s]) == (uint32_t)slot + 1;
	assert_int_equal(n, 1);
	clients_scan(f->cs, now_ns());
	n = 0;
	for (uint32_t s = 1; s < SEG_STRIPES; s++)
		n += atomic_load(&st->stripe_owner[s]) == (uint32_t)slot + 1;
	assert_int_equal(n, 0);
}

/* A new claim of the slot gets a grace period of its own. */
static void
test_new_claim_new_grace(void **state)
{
	struct fixture *f = *state;
	struct seg_client *cl = seg_clients(&f->b.m);
	uint64_t s = 1000000000ull, t0 = 1000 * s;
	uint64_t o1 = CLIENT_OWNER(CLIENT_CLAIMING, 77);
	uint64_t o2 = CLIENT_OWNER(CLIENT_CLAIMING, 78);

	atomic_store(&cl[5].owner, o1);
	clients_scan(f->cs, t0);
	atomic_store(&cl[5].owner, o2);
	clients_scan(f->cs, t0 + 3 * s / 2);
	clients_scan(f->cs, t0 + 5 * s / 2);
	assert_int_equal(atomic_load(&cl[5].owner), o2);
	clients_scan(f->cs, t0 + 4 * s);
	assert_int_equal(atomic_load(&cl[5].owner), 0);
}

/*
 * A slot whose lock another open file holds (a process that kept an old
 * registration's descriptor) is not claimed, and not left CLAIMING.
 */
static void
test_locked_slot_left_free(void **state)
{
	struct fixture *f = *state;
	struct seg_client *cl = seg_clients(&f->b.m);
	char conf[256], stn[256];
	uint32_t s0 = (uint32_t)getpid() % 8;
	tg_client *c;
	int fd;

	assert_int_equal(seg_names(f->segment, conf, stn, sizeof(conf)), 0);
	assert_true((fd = shm_open(stn, O_RDWR, 0)) >= 0);
	assert_int_equal(seg_slot_lock(fd, s0), 0);
	assert_int_equal(tg_open(f->segment, &c), 0);
	assert_int_equal(atomic_load(&cl[s0].owner), 0);
	tg_close(c);
	close(fd);
}


/*
 * A child made without fork() (a raw clone: no atfork handler) that uses
 * the inherited client closes the parent's lock descriptor on its first
 * ticket: the parent dies holding a lease and is reclaimed, though the
 * child lives on.
 */
static void
test_raw_clone_child_drops_parents_lock(void **state)
{
	struct fixture *f = *state;
	struct seg_client *cl = seg_clients(&f->b.m);
	int p[2], slot = -1;
	pid_t w, kid = 0;

	assert_int_equal(pipe(p), 0);
	if ((w = fork()) == 0) {
		tg_client *c;
		tg_ticket t, u;
		uint32_t k;
		long r;

		close(p[0]);
		if (tg_open(f->segment, &c) < 0 || tg_key(c, "one", &k) < 0 ||
		    tg_try_acquire(c, k, NULL, &t, NULL) < 0)
			_exit(1);
		if ((r = syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL,
		    NULL)) == 0) {
			pid_t me = (pid_t)syscall(SYS_getpid);

			close(1);
			close(2);

			(void)tg_try_acquire(c, k, NULL, &u, NULL);
			if (write(p[1], &me, sizeof(me)) != sizeof(me))
				_exit(1);
			for (;;)
				pause();
		}
		if (r < 0)
			_exit(2);
		/* Until the child registered too. */
		for (int i = 0; i < 500; i++) {
			int n = 0;

			for (uint32_t j = 0; j < 8; j++)
				n += CLIENT_STATE(atomic_load(&cl[j].owner)) ==
				    CLIENT_LIVE;
			if (n >= 2)
				break;
			usleep(10000);
		}
		_exit(0);		/* dies holding the lease */
	}
	close(p[1]);
	assert_int_equal(read(p[0], &kid, sizeof(kid)), sizeof(kid));
	close(p[0]);
	if (tb_wait_child(w) != 0) {
		kill(kid, SIGKILL);
		fail_msg("worker failed");
	}
	for (uint32_t j = 0; j < 8; j++)
		if (CLIENT_STATE(atomic_load(&cl[j].owner)) == CLIENT_LIVE &&
		    atomic_load(&cl[j].pid) == w)
			slot = (int)j;
	clients_scan(f->cs, now_ns());
	kill(kid, SIGKILL);
	assert_true(slot >= 0);
	assert_int_equal(atomic_load(&cl[slot].owner), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
		    test_reclaim_with_a_stale_owner_touches_nothing, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_dead_client_reclaimed_by_one_scan, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_abandoned_claim_after_grace, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_unlocked_and_half_reclaimed, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_orphan_freed_wakes_sleeper, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stat_shows_gone, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_open_close_observed,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_reclaim_during_grow_frees_old_cell, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reclaim_frees_stripe,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_claim_new_grace,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_locked_slot_left_free,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_raw_clone_child_drops_parents_lock, setup, teardown),
	};

	/* A child that deadlocks must fail the run, not hang it. */
	alarm(300);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
