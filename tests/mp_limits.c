/*
 * mp_limits.c: the limits hold across real processes on a real broker:
 * forked workers hammer one segment and the totals are checked.
 */
#include <sys/mman.h>
#include <errno.h>
#include <signal.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "seg.h"
#include "tollgate.h"

#define NS	1000000000ull

static const char conf[] =
    "[rate]\n"
    "limit = 1000 requests/s burst 50\n"
    "[win]\n"
    "limit = 300 requests/2s window\n"
    "[conc]\n"
    "concurrency = 3\n"
    "[p]\n"
    "limit = 5 requests/min\n"
    "[p/c]\n"
    "limit = 10 tokens/min\n"
    "[paced]\n"
    "limit = 10 requests/s burst 1\n"
    "[two]\n"
    "limit = 3 requests/min\n"
    "limit = 100 tokens/min\n"
    "[long]\n"
    "limit = 2 requests/60day\n"
    "[one]\n"
    "concurrency = 1\n"
    "[pc]\n"
    "concurrency = 1\n"
    "[pc/slow]\n"
    "limit = 2 requests/s burst 1\n"
    "[pc/fast]\n"
    "[dead]\n"
    "concurrency = 1\n"
    "[pair]\n"
    "concurrency = 2\n"
    "[cc]\n"
    "concurrency = 1\n"
    "[cc/r]\n"
    "limit = 2 requests/s burst 1\n"
    "concurrency = 1\n"
    "[cc/other]\n";

/* What the workers share with the parent: a MAP_SHARED anonymous page. */
#define MAX_STAMPS	4096
struct shared {
	_Atomic int		go;
	_Atomic uint64_t	granted;
	_Atomic int		inflight;
	_Atomic int		max_inflight;
	_Atomic uint32_t	nstamps;
	uint64_t		stamps[MAX_STAMPS];
};

static int
setup(void **state)
{
	return tb_group_setup(state, conf);
}

static void
wait_go(struct shared *s)
{
	while (!atomic_load(&s->go))
		tb_sleep_ns(100000);
}

/* 4 processes on one rate limit: never above burst + rate x time. */
static void
test_rate_four_processes(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	struct shared *s = tb_shared(sizeof(*s));
	const uint64_t run = 2 * NS;
	uint64_t t0, t1, cap, got;
	pid_t pid[4];

	for (int i = 0; i < 4; i++)
		if ((pid[i] = fork()) == 0) {
			tg_client *c = tb_client(tb);
			uint32_t k = tb_key(c, "rate");
			uint64_t n = 0, retry, end;
			tg_ticket t;

			wait_go(s);
			end = tb_now_ns() + run;
			while (tb_now_ns() < end)
				if (tg_try_acquire(c, k, NULL, &t, &retry) == 0) {
					n++;
					tg_release(c, &t);
				}
			atomic_fetch_add(&s->granted, n);
			tg_close(c);
			_exit(0);
		}
	tb_sleep_ns(200000000);	/* let all four reach the start line */
	t0 = tb_now_ns();
	atomic_store(&s->go, 1);
	for (int i = 0; i < 4; i++)
		assert_int_equal(tb_wait_child(pid[i]), 0);
	t1 = tb_now_ns();
	got = atomic_load(&s->granted);
	/* Workers ran within [t0, t1]: at most burst + rate x (t1 - t0). */
	cap = 50 + 1000 * (t1 - t0) / NS + 1;
	print_message("rate: %llu granted in %.3f s, bound %llu, floor %llu\n",
	    (unsigned long long)got, (double)(t1 - t0) / NS,
	    (unsigned long long)cap,
	    (unsigned long long)(50 + 1000 * run / NS));
	assert_true(got <= cap);
	/* And at least 99 % of what the run itself allowed. */
	assert_true(got * 100 >= 99 * (50 + 1000 * run / NS));
	munmap(s, sizeof(*s));
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* A window limit never admits more than N in any window. */
static void
test_window_never_exceeds(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	struct shared *s = tb_shared(sizeof(*s));
	const uint64_t win = 2 * NS, run = 5 * NS;
	/*
	 * Stamps are read just before each call, so a stamp can be earlier
	 * than the limit's own clock read by a preemption: allow 50 ms.
	 */
	const uint64_t slack = 50000000;
	uint32_t n, worst = 0;
	pid_t pid[4];

	for (int i = 0; i < 4; i++)
		if ((pid[i] = fork()) == 0) {
			tg_client *c = tb_client(tb);
			uint32_t k = tb_key(c, "win");
			uint64_t retry, end, t;
			tg_ticket tk;

			wait_go(s);
			end = tb_now_ns() + run;
			while ((t = tb_now_ns()) < end)
				if (tg_try_acquire(c, k, NULL, &tk, &retry) ==
				    0) {
					uint32_t at = atomic_fetch_add(
					    &s->nstamps, 1);

					if (at < MAX_STAMPS)
						s->stamps[at] = t;
					tg_release(c, &tk);
				} else
					tb_sleep_ns(100000);
			tg_close(c);
			_exit(0);
		}
	atomic_store(&s->go, 1);
	for (int i = 0; i < 4; i++)
		assert_int_equal(tb_wait_child(pid[i]), 0);
	n = atomic_load(&s->nstamps);
	assert_true(n < MAX_STAMPS);
	qsort(s->stamps, n, sizeof(s->stamps[0]), cmp_u64);
	for (uint32_t i = 0, j = 0; i < n; i++) {
		while (j < n && s->stamps[j] < s->stamps[i] + win - slack)
			j++;
		if (j - i > worst)
			worst = j - i;
	}
	print_message("window: %u granted in %.1f s, busiest window %u of "
	    "300\n", n, (double)run / NS, worst);
	assert_true(worst <= 300);
	/* Over 5 s of demand, at least two full windows' worth. */
	assert_true(n >= 600);
	munmap(s, sizeof(*s));
}

/* 8 processes on concurrency = 3 never hold more than 3. */
static void
test_concurrency_eight_on_three(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	struct shared *s = tb_shared(sizeof(*s));
	pid_t pid[8];

	for (int i = 0; i < 8; i++)
		if ((pid[i] = fork()) == 0) {
			tg_client *c = tb_client(tb);
			uint32_t k = tb_key(c, "conc");
			uint64_t end;
			tg_ticket t;
			int in, max;

			wait_go(s);
			end = tb_now_ns() + NS;
			while (tb_now_ns() < end) {
				if (tg_acquire(c, k, NULL, NS, &t) != 0)
					_exit(2);
				in = atomic_fetch_add(&s->inflight, 1) + 1;
				max = atomic_load(&s->max_inflight);
				while (in > max && !atomic_compare_exchange_weak(
				    &s->max_inflight, &max, in))
					;
				atomic_fetch_add(&s->granted, 1);
				tb_sleep_ns(200000);
				atomic_fetch_sub(&s->inflight, 1);
				tg_release(c, &t);
			}
			tg_close(c);
			_exit(0);
		}
	atomic_store(&s->go, 1);
	for (int i = 0; i < 8; i++)
		assert_int_equal(tb_wait_child(pid[i]), 0);
	print_message("concurrency: %llu tickets, at most %d in flight\n",
	    (unsigned long long)atomic_load(&s->granted),
	    atomic_load(&s->max_inflight));
	assert_int_equal(atomic_load(&s->max_inflight), 3);
	assert_true(atomic_load(&s->granted) > 100);
	munmap(s, sizeof(*s));
}

/*
 * Blocking acquires on a rate limit reserve future slots: four processes
 * asking three times each at once all get through, one slot (100 ms)
 * apart, with no refusal and no retry loop.
 */
static void
test_acquire_paces_in_slots(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	struct shared *s = tb_shared(sizeof(*s));
	const uint64_t slot = NS / 10;
	uint64_t t_go;
	uint32_t n;
	pid_t pid[4];

	for (int i = 0; i < 4; i++)
		if ((pid[i] = fork()) == 0) {
			tg_client *c = tb_client(tb);
			uint32_t k = tb_key(c, "paced");
			tg_ticket t;

			wait_go(s);
			for (int j = 0; j < 3; j++) {
				if (tg_acquire(c, k, NULL, 5 * NS, &t) != 0)
					_exit(2);
				s->stamps[atomic_fetch_add(&s->nstamps, 1)] =
				    tb_now_ns();
				tg_release(c, &t);
			}
			tg_close(c);
			_exit(0);
		}
	t_go = tb_now_ns();
	atomic_store(&s->go, 1);
	for (int i = 0; i < 4; i++)
		assert_int_equal(tb_wait_child(pid[i]), 0);
	n = atomic_load(&s->nstamps);
	assert_int_equal(n, 12);
	qsort(s->stamps, n, sizeof(s->stamps[0]), cmp_u64);
	/*
	 * Every reservation was made after t_go and they are a slot apart,
	 * and a wake-up may come late but never early: the i-th grant in
	 * time is at least i slots after t_go.  (Gaps between neighbours
	 * prove nothing: a late wake shortens the gap after it.)  Nor is
	 * the run much longer than its 11 slots.
	 */
	for (uint32_t i = 0; i < n; i++)
		assert_true(s->stamps[i] >= t_go + i * slot);
	assert_true(s->stamps[n - 1] < t_go + 11 * slot + NS);
	print_message("paced: 12 grants over %.3f s (11 slots of 0.1 s)\n",
	    (double)(s->stamps[n - 1] - s->stamps[0]) / NS);
	munmap(s, sizeof(*s));
}

/* A child key is refused once its parent's limit is spent. */
static void
test_child_refused_when_parent_spent(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t p = tb_key(c, "p"), pc = tb_key(c, "p/c");
	tg_cost req_tok = { 1, 1, 0 }, tok_only = { 0, 10, 0 };
	uint64_t retry = 0;
	tg_ticket t;

	for (int i = 0; i < 5; i++) {
		assert_int_equal(tg_try_acquire(c, p, NULL, &t, &retry), 0);
		tg_release(c, &t);
	}
	assert_int_equal(tg_try_acquire(c, pc, &req_tok, &t, &retry), -EAGAIN);
	assert_true(retry > 0);
	/* The refusal took nothing from the child: all 10 tokens remain. */
	assert_int_equal(tg_try_acquire(c, pc, &tok_only, &t, &retry), 0);
	tg_release(c, &t);
	tg_close(c);
}

/* A refusal on one limit leaves the ticket's other limits untouched. */
static void
test_refusal_leaves_others_untouched(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "two");
	tg_cost big = { 1, 60, 0 }, rest = { 1, 40, 0 }, one = { 1, 0, 0 };
	uint64_t retry;
	tg_ticket t;

	assert_int_equal(tg_try_acquire(c, k, &big, &t, &retry), 0);
	tg_release(c, &t);
	/* 40 tokens left: refused by tokens, must not spend a request. */
	assert_int_equal(tg_try_acquire(c, k, &big, &t, &retry), -EAGAIN);
	assert_int_equal(tg_try_acquire(c, k, &rest, &t, &retry), 0);
	tg_release(c, &t);
	/* Third request of three: there only if the refusal gave it back. */
	assert_int_equal(tg_try_acquire(c, k, &one, &t, &retry), 0);
	tg_release(c, &t);
	assert_int_equal(tg_try_acquire(c, k, &one, &t, &retry), -EAGAIN);
	tg_close(c);
}

/*
 * A release that wakes a sleeper hands it the lease: the worker that
 * released and asks again at once leaves it to the sleeper (lease.h).
 * Before, it took its lease back before the sleeper was even scheduled,
 * round after round: B starved through all of A's 100 rounds.
 */
static void
test_release_hands_lease_to_sleeper(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	struct shared *s = tb_shared(sizeof(*s));
	pid_t a, b;

	if ((a = fork()) == 0) {
		tg_client *c = tb_client(tb);
		uint32_t k = tb_key(c, "one");
		tg_ticket t;
		uint64_t rounds = 0;

		if (tg_acquire(c, k, NULL, 5 * NS, &t) != 0)
			_exit(2);
		atomic_store(&s->go, 1);
		/* Hold 2 ms, release, ask again at once: 100 rounds. */
		while (rounds < 100 && atomic_load(&s->nstamps) == 0) {
			tb_sleep_ns(2000000);
			tg_release(c, &t);
			if (tg_acquire(c, k, NULL, 5 * NS, &t) != 0)
				_exit(3);
			if (atomic_load(&s->inflight))
				rounds++;	/* B sleeps on it */
		}
		atomic_store(&s->granted, rounds);
		tg_release(c, &t);
		tg_close(c);
		_exit(0);
	}
	if ((b = fork()) == 0) {
		tg_client *c = tb_client(tb);
		uint32_t k = tb_key(c, "one");
		tg_ticket t;

		wait_go(s);
		atomic_store(&s->inflight, 1);
		if (tg_acquire(c, k, NULL, 5 * NS, &t) != 0)
			_exit(2);
		atomic_store(&s->nstamps, 1);
		tg_release(c, &t);
		tg_close(c);
		_exit(0);
	}
	assert_int_equal(tb_wait_child(a), 0);
	assert_int_equal(tb_wait_child(b), 0);
	print_message("handoff: A went again %llu times before B\n",
	    (unsigned long long)atomic_load(&s->granted));
	/*
	 * 1: A's next ask waits for B.  Only a B scheduled more than 10 ms
	 * after its wake-up lets A go again (18 to 100 times before).
	 */
	assert_true(atomic_load(&s->granted) <= 3);
	munmap(s, sizeof(*s));
}

/*
 * A tg_acquire that waits for a rate slot holds no lease meanwhile: B
 * sleeps 500 ms for pc/slow's next slot, and pc/fast, which shares pc's
 * one lease, is free all that time (before, B held the lease through
 * its sleep, and kept the waiters of a release out).  When B's slot
 * comes it takes the lease, waiting for it if need be.
 */
static void
test_rate_waiter_holds_no_lease(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	struct shared *s = tb_shared(sizeof(*s));
	tg_client *c = tb_client(tb);
	uint32_t slow = tb_key(c, "pc/slow"), fast = tb_key(c, "pc/fast");
	tg_ticket t;
	pid_t b;

	/* The burst of 1: B's slot is then 500 ms ahead. */
	assert_int_equal(tg_try_acquire(c, slow, NULL, &t, NULL), 0);
	tg_release(c, &t);
	if ((b = fork()) == 0) {
		tg_client *cb = tb_client(tb);
		uint32_t k = tb_key(cb, "pc/slow");
		tg_ticket tb_t;

		atomic_store(&s->go, 1);
		if (tg_acquire(cb, k, NULL, 5 * NS, &tb_t) != 0)
			_exit(2);
		/* Its lease: pc/fast is refused while B holds it. */
		atomic_store(&s->granted, 1);
		/* Until the parent is done (or gave up: a failed check). */
		for (int i = 0; i < 10000 && atomic_load(&s->inflight) == 0;
		    i++)
			tb_sleep_ns(1000000);
		tg_release(cb, &tb_t);
		tg_close(cb);
		_exit(0);
	}
	wait_go(s);
	tb_sleep_ns(150000000);
	assert_int_equal(atomic_load(&s->granted), 0);
	/* B sleeps for its slot: the lease is free. */
	assert_int_equal(tg_try_acquire(c, fast, NULL, &t, NULL), 0);
	tb_sleep_ns(500000000);
	/* B's slot has come; we hold the lease, so B waits for it. */
	assert_int_equal(atomic_load(&s->granted), 0);
	tg_release(c, &t);
	for (int i = 0; i < 10000 && atomic_load(&s->granted) == 0; i++)
		tb_sleep_ns(1000000);
	assert_int_equal(atomic_load(&s->granted), 1);
	assert_int_equal(tg_try_acquire(c, fast, NULL, &t, NULL), -EAGAIN);
	atomic_store(&s->inflight, 1);
	assert_int_equal(tb_wait_child(b), 0);
	tg_close(c);
	munmap(s, sizeof(*s));
}

/*
 * A limit of a long period runs its TAT far ahead, honestly: 2 requests
 * per 60 days taken leave it 60 days ahead, and the refused third is told
 * 30 days.  The broker's scrub of TATs no take could leave must not take
 * that for garbage (it did past 30 days: the third went 200 ms later,
 * "repaired 1 x rate limit TAT"), and still repairs a TAT beyond the
 * limit's own bound.
 */
static void
test_long_period_survives_the_scrub(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "long"), id;
	const uint64_t day = 86400 * NS;
	struct seg_cfg *cfg;
	struct seg_map m;
	uint64_t retry = 0;
	uint32_t seq;
	tg_ticket t;

	for (int i = 0; i < 2; i++) {
		assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
		tg_release(c, &t);
	}
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), -EAGAIN);
	assert_true(retry > 30 * day - 60 * NS && retry <= 30 * day);
	/* Four broker ticks. */
	tb_sleep_ns(200000000);
	retry = 0;
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), -EAGAIN);
	assert_true(retry > 30 * day - 60 * NS && retry <= 30 * day);
	assert_int_equal(tb_log_count(tb, "rate limit TAT"), 0);

	/* Beyond its bound (a bucket and a period ahead and more): garbage. */
	assert_int_equal(seg_attach(tb->segment, 1, &m), 0);
	do {
		cfg = seg_read_begin(&m, &seq);
		id = seg_keys(cfg)[k & 0xffff].chain[0];
	} while (!seg_read_ok(cfg, seq));
	atomic_store(&seg_lstates(&m)[id].tat_ns, tb_now_ns() + 3650 * day);
	for (int i = 0; i < 100 && tb_log_count(tb, "rate limit TAT") == 0;
	    i++)
		tb_sleep_ns(10000000);
	assert_int_equal(tb_log_count(tb, "rate limit TAT"), 1);
	assert_int_equal(tg_try_acquire(c, k, NULL, &t, &retry), 0);
	tg_release(c, &t);
	seg_detach(&m);
	tg_close(c);
}

/* The id of key k's limit at chain position pos, read from the segment. */
static uint32_t
limit_id(struct tbroker *tb, uint32_t k, unsigned pos, struct seg_map *m)
{
	struct seg_cfg *cfg;
	uint32_t seq, id;

	assert_int_equal(seg_attach(tb->segment, 0, m), 0);
	do {
		cfg = seg_read_begin(m, &seq);
		id = seg_keys(cfg)[k & 0xffff].chain[pos];
	} while (!seg_read_ok(cfg, seq));
	return id;
}

/* Wait (10 s at most) until someone announced a sleep on limit id. */
static void
wait_sleeper(struct seg_map *m, uint32_t id)
{
	for (int i = 0; i < 10000 &&
	    atomic_load(&seg_lstates(m)[id].waiting) == 0; i++)
		tb_sleep_ns(1000000);
	assert_int_not_equal(atomic_load(&seg_lstates(m)[id].waiting), 0);
}

/*
 * A handoff to a sleeper that died before the release woke it: the
 * newcomer leaves the lease to it only until the handoff ends (10 ms),
 * then takes it, and does not wait for a release that never comes.
 * Kills a newcomer that sleeps to its own deadline past the handoff's
 * end (the wrong min() of the two).
 */
static void
test_handoff_to_the_dead_ends(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "dead"), id;
	struct seg_map m;
	tg_ticket t;
	pid_t s;

	id = limit_id(tb, k, 0, &m);
	assert_int_equal(tg_acquire(c, k, NULL, 5 * NS, &t), 0);
	if ((s = fork()) == 0) {
		tg_client *cs = tb_client(tb);
		tg_ticket ts;

		/* Sleeps on our lease until killed. */
		(void)tg_acquire(cs, tb_key(cs, "dead"), NULL, 60 * NS, &ts);
		_exit(2);
	}
	wait_sleeper(&m, id);
	kill(s, SIGKILL);
	assert_int_equal(tb_wait_child(s), 128 + SIGKILL);
	/* The release hands the lease to the dead: a handoff opens. */
	tg_release(c, &t);
	assert_int_not_equal(atomic_load(&seg_lstates(&m)[id].handoff_ns), 0);
	/* No release will come: we get it once the handoff is over. */
	assert_int_equal(tg_acquire(c, k, NULL, 3 * NS, &t), 0);
	tg_release(c, &t);
	seg_detach(&m);
	tg_close(c);
}

/*
 * The sleeper a release woke took its lease: the handoff is over, and a
 * newcomer takes the other free lease at once (tg_acquire with no time
 * to wait).  Kills a handoff that no take ends: newcomers left a free
 * lease to nobody for up to 10 ms after each wake.
 */
static void
test_handoff_ends_when_taken(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	struct shared *sh = tb_shared(sizeof(*sh));
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "pair"), id;
	struct seg_map m;
	tg_ticket a, b;
	pid_t s;

	id = limit_id(tb, k, 0, &m);
	assert_int_equal(tg_acquire(c, k, NULL, 5 * NS, &a), 0);
	assert_int_equal(tg_acquire(c, k, NULL, 5 * NS, &b), 0);
	if ((s = fork()) == 0) {
		tg_client *cs = tb_client(tb);
		tg_ticket ts;

		if (tg_acquire(cs, tb_key(cs, "pair"), NULL, 10 * NS,
		    &ts) != 0)
			_exit(2);
		atomic_store(&sh->granted, 1);
		for (int i = 0; i < 10000 && atomic_load(&sh->inflight) == 0;
		    i++)
			tb_sleep_ns(1000000);
		tg_release(cs, &ts);
		tg_close(cs);
		_exit(0);
	}
	wait_sleeper(&m, id);
	tg_release(c, &a);		/* wakes s, which takes it */
	for (int i = 0; i < 10000 && atomic_load(&sh->granted) == 0; i++)
		tb_sleep_ns(1000000);
	assert_int_equal(atomic_load(&sh->granted), 1);
	assert_int_equal(atomic_load(&seg_lstates(&m)[id].handoff_ns), 0);
	tg_release(c, &b);		/* nobody sleeps: no handoff */
	assert_int_equal(tg_acquire(c, k, NULL, 0, &b), 0);
	tg_release(c, &b);
	atomic_store(&sh->inflight, 1);
	assert_int_equal(tb_wait_child(s), 0);
	seg_detach(&m);
	munmap(sh, sizeof(*sh));
	tg_close(c);
}

/*
 * A tg_acquire whose slot came takes its leases then; one that takes
 * its own key's lease and runs out of time waiting for its parent's
 * gives the first back: cc/r's lease is free afterwards.  Kills an
 * -ETIMEDOUT of that second half that keeps what it took (cc/r's one
 * lease then stays taken until the client closes).
 */
static void
test_late_lease_timeout_keeps_nothing(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	struct shared *sh = tb_shared(sizeof(*sh));
	tg_client *c = tb_client(tb);
	uint32_t r = tb_key(c, "cc/r"), other = tb_key(c, "cc/other");
	struct seg_map m;
	uint64_t denied;
	tg_ticket t, o;
	pid_t b;

	(void)limit_id(tb, r, 0, &m);
	denied = atomic_load(&seg_kstates(&m)[r & 0xffff].denied);
	/* The burst of 1: B's slot is then 500 ms ahead. */
	assert_int_equal(tg_try_acquire(c, r, NULL, &t, NULL), 0);
	tg_release(c, &t);
	if ((b = fork()) == 0) {
		tg_client *cb = tb_client(tb);
		tg_ticket tb_t;
		int rc;

		atomic_store(&sh->go, 1);
		/* cc is taken while B sleeps for its slot, and kept. */
		rc = tg_acquire(cb, tb_key(cb, "cc/r"), NULL, 1500000000,
		    &tb_t);
		atomic_store(&sh->granted, rc == -ETIMEDOUT ? 1 : 2);
		/* Alive (a lease it kept would stay taken) until we are done. */
		for (int i = 0; i < 10000 && atomic_load(&sh->inflight) == 0;
		    i++)
			tb_sleep_ns(1000000);
		tg_close(cb);
		_exit(0);
	}
	wait_go(sh);
	tb_sleep_ns(100000000);
	assert_int_equal(tg_try_acquire(c, other, NULL, &o, NULL), 0);
	for (int i = 0; i < 10000 && atomic_load(&sh->granted) == 0; i++)
		tb_sleep_ns(1000000);
	/* B ran out of time in its second half, a ticket given up... */
	assert_int_equal(atomic_load(&sh->granted), 1);
	assert_int_equal(atomic_load(&seg_kstates(&m)[r & 0xffff].denied),
	    denied + 1);
	tg_release(c, &o);
	/* ...and gave back cc/r's lease: ours, B still alive. */
	assert_int_equal(tg_acquire(c, r, NULL, 2 * NS, &t), 0);
	tg_release(c, &t);
	atomic_store(&sh->inflight, 1);
	assert_int_equal(tb_wait_child(b), 0);
	seg_detach(&m);
	munmap(sh, sizeof(*sh));
	tg_close(c);
}

/*
 * A pause that comes while a tg_acquire whose slot came waits for its
 * lease: when the lease is released it does not go into the pause; it
 * goes back in line, after the pause's end.  Kills a second half that
 * checks for a pause only before it first tries (a 429 on cc, the
 * parent, while B waited on cc's lease: B went at once).
 */
static void
test_late_lease_waiter_sees_a_pause(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	struct shared *sh = tb_shared(sizeof(*sh));
	tg_client *c = tb_client(tb);
	uint32_t r = tb_key(c, "cc/r"), cc = tb_key(c, "cc"), id;
	static const char ra[] = "retry-after: 1\r\n";
	struct seg_map m;
	uint64_t paused_at;
	tg_ticket t, o;
	pid_t b;

	id = limit_id(tb, cc, 0, &m);
	/* The burst of 1: B's slot is then 500 ms ahead. */
	assert_int_equal(tg_acquire(c, r, NULL, 3 * NS, &t), 0);
	tg_release(c, &t);
	if ((b = fork()) == 0) {
		tg_client *cb = tb_client(tb);
		tg_ticket tb_t;

		atomic_store(&sh->go, 1);
		if (tg_acquire(cb, tb_key(cb, "cc/r"), NULL, 10 * NS,
		    &tb_t) != 0)
			_exit(2);
		sh->stamps[0] = tb_now_ns();
		tg_release(cb, &tb_t);
		tg_close(cb);
		_exit(0);
	}
	wait_go(sh);
	tb_sleep_ns(100000000);
	/* cc's lease, while B sleeps for its slot: B then waits for it. */
	assert_int_equal(tg_try_acquire(c, cc, NULL, &o, NULL), 0);
	wait_sleeper(&m, id);
	/* A 429 on cc pauses cc/r too; then the lease is free. */
	assert_int_equal(tg_observe(c, &o, 429, ra, sizeof(ra) - 1),
	    TG_RETRY);
	paused_at = tb_now_ns();
	tg_release(c, &o);
	assert_int_equal(tb_wait_child(b), 0);
	print_message("late lease: went %.3f s after the 429 (pause 1 s)\n",
	    (double)(sh->stamps[0] - paused_at) / 1e9);
	assert_true(sh->stamps[0] >= paused_at + 900000000);
	seg_detach(&m);
	munmap(sh, sizeof(*sh));
	tg_close(c);
}

/*
 * A poll (tg_try_acquire) or a reservation takes a free lease during a
 * handoff, as lease.h says, and leaves the handoff to the sleepers it is
 * for: a newcomer tg_acquire still leaves them the other free lease.
 * The handoff here is one the test opens, 10 s long, for sleepers slow
 * to come.  Before, the poll's take ended it (it took the path of a
 * woken sleeper's), and the newcomer took the second lease.
 */
static void
test_poll_leaves_the_handoff(void **state)
{
	struct tbroker *tb = TB_NEED(state);
	tg_client *c = tb_client(tb);
	uint32_t k = tb_key(c, "pair"), id;
	_Atomic uint64_t *h;
	struct seg_map m, w;
	uint64_t until, in;
	tg_ticket a, b;

	id = limit_id(tb, k, 0, &m);
	assert_int_equal(seg_attach(tb->segment, 1, &w), 0);
	h = &seg_lstates(&w)[id].handoff_ns;
	until = tb_now_ns() + 10 * NS;
	atomic_store(h, until);
	assert_int_equal(tg_try_acquire(c, k, NULL, &a, NULL), 0);
	assert_int_equal(atomic_load(h), until);
	assert_int_equal(tg_acquire(c, k, NULL, 0, &b), -ETIMEDOUT);
	assert_int_equal(tg_reserve(c, k, NULL, 0, &b, &in), 0);
	assert_int_equal(in, 0);
	assert_int_equal(atomic_load(h), until);
	tg_release(c, &b);
	tg_release(c, &a);
	atomic_store(h, 0);
	seg_detach(&w);
	seg_detach(&m);
	tg_close(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rate_four_processes),
		cmocka_unit_test(test_window_never_exceeds),
		cmocka_unit_test(test_concurrency_eight_on_three),
		cmocka_unit_test(test_acquire_paces_in_slots),
		cmocka_unit_test(test_child_refused_when_parent_spent),
		cmocka_unit_test(test_refusal_leaves_others_untouched),
		cmocka_unit_test(test_long_period_survives_the_scrub),
		cmocka_unit_test(test_release_hands_lease_to_sleeper),
		cmocka_unit_test(test_rate_waiter_holds_no_lease),
		cmocka_unit_test(test_handoff_to_the_dead_ends),
		cmocka_unit_test(test_handoff_ends_when_taken),
		cmocka_unit_test(test_late_lease_timeout_keeps_nothing),
		cmocka_unit_test(test_late_lease_waiter_sees_a_pause),
		cmocka_unit_test(test_poll_leaves_the_handoff),
	};

	return cmocka_run_group_tests(tests, setup, tb_group_teardown);
}
