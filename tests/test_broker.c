/*
 * test_broker.c: the broker's reclaim policy, driven directly.  The test
 * is the broker here: it makes a real segment with the broker's own code
 * (libtgbroker.a: config, segment, clients), real clients open it, and
 * the test calls clients_scan and clients_reclaim itself, with times of
 * its choosing, so a grace period is tested in virtual time and a race
 * is set up step by step, with no broker process and no sleep.
 */
#include <sys/mman.h>
#include <sys/wait.h>
#include <errno.h>
#include <sched.h>
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
